//! Running the real `receptorctl` 1.6.9 CLI, or a python snippet that imports receptorctl,
//! as a child process with a timeout, capturing stdout, stderr and the exit code.

use std::fs::{self, File};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::binaries;

/// How long one receptorctl or python run may take before it is killed.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Python for scripts that drive `receptorctl` in a pseudo-terminal (prepend it to the
/// script): `end_with_ctrl_d(pid, fd, out)` types Ctrl-D, waits at most 20 s for the
/// process to exit (then kills it and fails) while collecting its output after `out`,
/// and returns `(exit code, output)`.
pub const PTY_END_WITH_CTRL_D: &str = r#"
import os, select, time
def end_with_ctrl_d(pid, fd, out):
    os.write(fd, b"\x04")
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), out
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            raise SystemExit("receptorctl did not exit after Ctrl-D; output %r" % out)
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                out += os.read(fd, 4096)
            except OSError:
                pass
"#;

/// What a finished client process printed and how it exited.
#[derive(Clone, Debug)]
pub struct CtlOutput {
    /// The command line, for messages.
    pub command: String,
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl CtlOutput {
    /// True when the process exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Returns `self` if the exit status was 0, else an error showing the output.
    pub fn ok(self) -> Result<CtlOutput> {
        if self.success() {
            Ok(self)
        } else {
            bail!("{} failed: {}", self.command, self.describe())
        }
    }

    /// Exit code, stdout and stderr in one string for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `receptorctl --socket <socket> <args...>`.
pub fn run_receptorctl(socket: &Path, args: &[&str]) -> Result<CtlOutput> {
    let mut cmd = Command::new(binaries::receptorctl()?);
    cmd.arg("--socket").arg(socket).args(args);
    run(cmd)
}

/// Runs `python -c <script> <args...>` with the python that has receptorctl installed.
pub fn run_python(script: &str, args: &[&str]) -> Result<CtlOutput> {
    let mut cmd = Command::new(binaries::python()?);
    cmd.arg("-c").arg(script).args(args);
    run(cmd)
}

/// Runs `cmd` (stdin closed) in its own process group; kills it and its descendants after
/// [`RUN_TIMEOUT`].
pub fn run(mut cmd: Command) -> Result<CtlOutput> {
    let command = format!("{cmd:?}");
    let dir = tempfile::Builder::new()
        .prefix("receptor-client-")
        .tempdir()?;
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {command}"))?;
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            crate::node::kill_tree(child.id());
            let _ = child.wait();
            bail!(
                "{command} did not finish within {RUN_TIMEOUT:?}; stdout so far: {}",
                fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(CtlOutput {
        command,
        code: status.code(),
        stdout: String::from_utf8_lossy(&fs::read(&out_path)?).into_owned(),
        stderr: String::from_utf8_lossy(&fs::read(&err_path)?).into_owned(),
    })
}
