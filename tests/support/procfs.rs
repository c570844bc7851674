//! What `/proc` says about a process (resident memory, open descriptors), and this
//! process's own limit of open files: the measures of the abuse tests.

use anyhow::{anyhow, ensure, Context, Result};

/// VmRSS of process `pid`, in bytes.
pub fn rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kb * 1024)
}

/// Descriptors process `pid` has open.
pub fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Raises this process's soft limit of open files to at least `want` (up to the hard
/// limit); fails if the hard limit is lower. Child processes inherit it.
pub fn ensure_fd_limit(want: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit");
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    ensure!(
        lim.rlim_max >= want,
        "the hard limit of open files ({}) is below the {want} this test needs",
        lim.rlim_max
    );
    lim.rlim_cur = want;
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit");
    }
    Ok(())
}
