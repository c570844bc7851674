//! Scenario: the Debian package and its systemd unit.
//!
//! `scripts/build-deb --prebuilt <this build> --fast` packages the binary and plugins the
//! suite already built (the debug build: a release build takes minutes on CI's two cores),
//! `dpkg-deb -x` unpacks it into a temp root, and then:
//! - the package holds the binary, the five built-in plugins, the conffile, the unit, the
//!   man page and the bash, zsh and fish completions;
//! - `systemd-analyze verify` accepts the unit (pointed at the unpacked binary, with the
//!   unpacked man page on `MANPATH`) and prints nothing;
//! - the packaged binary runs the packaged configuration (its socket and data folder moved
//!   into the temp folder) with only the packaged plugins, under a `$NOTIFY_SOCKET` the
//!   test listens on: `READY=1` comes once the control socket answers, SIGHUP and the
//!   control service's `reload` each give `RELOADING=1` with `MONOTONIC_USEC` and then
//!   `READY=1`, and SIGTERM gives `STOPPING=1` and a clean exit.

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use receptor_tests::binaries::{self, repo_root};
use receptor_tests::wait::wait_until;
use receptor_tests::ControlClient;

/// How long the node gets to send each notification.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// Paths every package must contain.
const PACKAGED: &[&str] = &[
    "usr/bin/receptor",
    "usr/lib/receptor/plugins/libreceptor_tcp.so",
    "usr/lib/receptor/plugins/libreceptor_udp.so",
    "usr/lib/receptor/plugins/libreceptor_websocket.so",
    "usr/lib/receptor/plugins/libreceptor_echo.so",
    "usr/lib/receptor/plugins/libreceptor_command.so",
    "etc/receptor/receptor.conf",
    "usr/lib/systemd/system/receptor.service",
    "usr/share/man/man1/receptor.1.gz",
    "usr/share/bash-completion/completions/receptor",
    "usr/share/zsh/vendor-completions/_receptor",
    "usr/share/fish/vendor_completions.d/receptor.fish",
];

/// Runs `cmd` to completion; fails with its output unless it exits 0.
fn run_ok(cmd: &mut Command) -> Result<(String, String)> {
    let what = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    Ok((stdout, stderr))
}

/// Builds the package from this build and unpacks it under `dir/root`.
fn build_and_unpack(dir: &Path) -> Result<PathBuf> {
    let receptor = binaries::rust_receptor()?;
    let built = receptor
        .parent()
        .context("the receptor binary has no folder")?;
    let (stdout, _) = run_ok(
        Command::new(repo_root().join("scripts/build-deb"))
            .arg("--prebuilt")
            .arg(built)
            .arg("--out")
            .arg(dir)
            .arg("--fast"),
    )?;
    let deb = PathBuf::from(stdout.trim());
    ensure!(deb.is_file(), "build-deb printed {stdout:?}, not a package");
    let (fields, _) = run_ok(Command::new("dpkg-deb").arg("--field").arg(&deb))?;
    for want in [
        "Package: receptor-rs",
        "Provides: receptor",
        "Conflicts: receptor",
    ] {
        ensure!(fields.contains(want), "control lacks {want:?}:\n{fields}");
    }
    let root = dir.join("root");
    run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    for path in PACKAGED {
        ensure!(root.join(path).is_file(), "package lacks /{path}");
    }
    Ok(root)
}

/// A node process killed (with SIGKILL, by pid) if the test ends before it exits.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: libc::c_int) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id())?;
        // SAFETY: kill(2) touches no memory of ours; `pid` is our own unreaped child.
        let rc = unsafe { libc::kill(pid, sig) };
        ensure!(rc == 0, "kill({pid}, {sig}) failed");
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        eprintln!("--- packaged node log ---\n{}\n--- end ---", self.log());
    }
}

/// The next notification datagram, as its `KEY=VALUE` lines.
fn next_notification(socket: &UnixDatagram, daemon: &Daemon) -> Result<Vec<String>> {
    let deadline = Instant::now() + NOTIFY_TIMEOUT;
    let mut buf = vec![0u8; 4096];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => {
                return Ok(String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_owned)
                    .collect())
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if Instant::now() >= deadline {
                    bail!(
                        "no notification within {NOTIFY_TIMEOUT:?}; log:\n{}",
                        daemon.log()
                    );
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Expects `RELOADING=1` with a plausible `MONOTONIC_USEC`, then `READY=1`.
fn expect_reload_cycle(socket: &UnixDatagram, daemon: &Daemon) -> Result<()> {
    let reloading = next_notification(socket, daemon)?;
    ensure!(
        reloading.iter().any(|l| l == "RELOADING=1"),
        "expected RELOADING=1, got {reloading:?}"
    );
    let usec = reloading
        .iter()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .context("RELOADING=1 without MONOTONIC_USEC")?;
    ensure!(
        usec.parse::<u64>().is_ok_and(|u| u > 0),
        "bad MONOTONIC_USEC {usec:?}"
    );
    let ready = next_notification(socket, daemon)?;
    ensure!(
        ready.iter().any(|l| l == "READY=1"),
        "expected READY=1 after a reload, got {ready:?}"
    );
    Ok(())
}

#[test]
fn debian_package_runs_under_a_notify_socket() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("receptor-package-")
        .tempdir()?;
    let root = build_and_unpack(dir.path())?;
    let receptor = root.join("usr/bin/receptor");

    let (version, _) = run_ok(Command::new(&receptor).arg("--version"))?;
    ensure!(
        version.trim().starts_with("receptor-rs ")
            && version.trim().ends_with("(compatible with receptor 1.6.9)"),
        "--version printed {version:?}"
    );
    let (help, _) = run_ok(
        Command::new("bash")
            .arg("-n")
            .arg(root.join("usr/share/bash-completion/completions/receptor")),
    )?;
    ensure!(help.is_empty(), "bash -n printed {help:?}");

    // The unit, as installed, except that it names the unpacked binary.
    let unit = fs::read_to_string(root.join("usr/lib/systemd/system/receptor.service"))?;
    ensure!(unit.contains("Type=notify"), "unit is not Type=notify");
    let verify_dir = dir.path().join("verify");
    fs::create_dir_all(&verify_dir)?;
    let unit_copy = verify_dir.join("receptor.service");
    fs::write(
        &unit_copy,
        unit.replace("/usr/bin/receptor", &receptor.display().to_string()),
    )?;
    let (out, err) = run_ok(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit_copy)
            .env("MANPATH", root.join("usr/share/man")),
    )?;
    ensure!(
        out.trim().is_empty() && err.trim().is_empty(),
        "systemd-analyze verify complained:\n{out}{err}"
    );

    // The packaged configuration, with its socket and data folder in the temp folder.
    let socket = dir.path().join("receptor.sock");
    let datadir = dir.path().join("data");
    let conf = fs::read_to_string(root.join("etc/receptor/receptor.conf"))?;
    ensure!(
        conf.contains("/run/receptor/receptor.sock") && conf.contains("/var/lib/receptor"),
        "packaged configuration changed: update this test"
    );
    let conf = conf
        .replace("/run/receptor/receptor.sock", &socket.display().to_string())
        .replace("/var/lib/receptor", &datadir.display().to_string())
        .replace("version: 2\nnode:\n", "version: 2\nnode:\n  id: packaged\n");
    let conf_path = dir.path().join("receptor.conf");
    fs::write(&conf_path, conf)?;

    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path)?;
    notify.set_read_timeout(Some(Duration::from_millis(200)))?;
    let log = dir.path().join("node.log");
    let log_file = fs::File::create(&log)?;
    let child = Command::new(&receptor)
        .arg("--config")
        .arg(&conf_path)
        .env("NOTIFY_SOCKET", &notify_path)
        .env(
            "RECEPTOR_PLUGIN_PATH",
            root.join("usr/lib/receptor/plugins"),
        )
        .env_remove("RECEPTOR_LOG")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .context("starting the packaged receptor")?;
    let mut daemon = Daemon { child, log };

    let ready = next_notification(&notify, &daemon)?;
    ensure!(
        ready.iter().any(|l| l == "READY=1"),
        "first notification is not READY=1: {ready:?}"
    );
    // Ready means ready: the control socket answers at once, with this node's greeting.
    let client = ControlClient::connect(&socket).context("control socket after READY=1")?;
    ensure!(
        client.node_id() == "packaged",
        "greeting {:?}",
        client.node_id()
    );
    drop(client);
    let log_now = daemon.log();
    ensure!(
        log_now.contains("/usr/lib/receptor/plugins/libreceptor_command.so"),
        "the packaged plugins were not loaded:\n{log_now}"
    );

    daemon.signal(libc::SIGHUP)?;
    expect_reload_cycle(&notify, &daemon)?;
    let reply = ControlClient::connect(&socket)?.command_json("reload")?;
    ensure!(reply["Success"] == true, "reload replied {reply}");
    expect_reload_cycle(&notify, &daemon)?;

    daemon.signal(libc::SIGTERM)?;
    let stopping = next_notification(&notify, &daemon)?;
    ensure!(
        stopping.iter().any(|l| l == "STOPPING=1"),
        "expected STOPPING=1, got {stopping:?}"
    );
    let status = wait_until(NOTIFY_TIMEOUT, "the node to exit", || {
        Ok(daemon.child.try_wait()?)
    })?;
    ensure!(status.success(), "node exited with {status}");
    Ok(())
}
