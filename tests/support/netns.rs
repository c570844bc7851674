//! Network namespaces made by a test (`ip netns add`), removed when dropped, and what
//! tests do in them: run commands (`ip netns exec`), join a thread to one (`setns`), link
//! two with a veth pair.
//!
//! They need root, `/dev/net/tun` for tun devices, and iproute2's `ip`; a machine
//! without them fails the test with what is missing (`scripts/test.sh` installs `ip` and
//! `ping` when it runs as root).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// Names made in this process, to keep parallel tests apart.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Fails with what is missing unless namespaces, tun devices and `ip` are usable here.
pub fn require_privilege() -> Result<()> {
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        bail!("this test makes network namespaces and tun devices: it must run as root");
    }
    if !Path::new("/dev/net/tun").exists() {
        bail!("this test needs /dev/net/tun (the tun driver)");
    }
    run(Command::new("ip").arg("-V"))
        .context("this test needs iproute2's `ip` (scripts/test.sh installs it as root)")?;
    Ok(())
}

/// A network namespace, deleted (with its interfaces) on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Makes a namespace named `<tag>-<pid>-<n>`, with its loopback up.
    pub fn new(tag: &str) -> Result<Netns> {
        let name = format!(
            "{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The wrapper that runs a program inside it (`ip netns exec <name>`).
    pub fn wrapper(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// Runs `ip -n <name> <args>`; fails with its stderr.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Runs a program inside the namespace and returns its output, whatever its status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .with_context(|| format!("running {program} in {}", self.name))
    }

    /// Runs `work` on a new thread that joined the namespace: sockets it opens live there.
    pub fn in_thread<T, F>(&self, work: F) -> std::thread::JoinHandle<Result<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = File::open(&path).with_context(|| format!("opening {path}"))?;
            // SAFETY: setns only reads the descriptor, which `file` keeps open; it moves
            // this thread (not the process) into the namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns {path}: {}", std::io::Error::last_os_error());
            }
            work()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Links `a` and `b` with a veth pair, `a_addr` and `b_addr` (CIDR) on its ends, both up.
pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> Result<()> {
    run(Command::new("ip").args([
        "link",
        "add",
        "veth0",
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        "veth0",
        "netns",
        b.name(),
    ]))?;
    for (ns, addr) in [(a, a_addr), (b, b_addr)] {
        ns.ip(&["addr", "add", addr, "dev", "veth0"])?;
        ns.ip(&["link", "set", "veth0", "up"])?;
    }
    Ok(())
}

/// Runs `cmd`; its stdout on success, else an error with its stderr.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
