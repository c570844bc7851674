//! Scenario: receptorctl 1.6.9's own test suite, the `tests/` folder of its source
//! distribution (three-node meshes driven through the `receptorctl` CLI and Python API),
//! run against real nodes: once with the Go reference (which validates the adaptation) and
//! once with ours.
//!
//! `tests/receptorctl_suite/run.py` copies the pristine suite, applies the adaptation
//! (`tests/receptorctl_suite/README.md` lists each change and why) and runs pytest. Each
//! test file is its own test here, so the files run in parallel and each stays well inside
//! nextest's time limit. Tests that need features still missing from our receptor are
//! strict expected failures, listed in one place (`EXPECTED_FAILURES` in
//! `tests/receptorctl_suite/receptorctl_suite_adapt.py`).
//!
//! A test here fails if pytest fails, if any suite test failed or errored (an expected
//! failure that passes counts as failed), or if no suite test ran.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use receptor_tests::binaries::{python, repo_root};
use receptor_tests::free_port;
use receptor_tests::Implementation::{self, Go, Rust};
use serde_json::Value;

/// The ports the suite hard-codes; each gets a port of ours (`RECEPTORCTL_SUITE_PORTS`).
const SUITE_PORTS: [u16; 6] = [11111, 11112, 11113, 11121, 12111, 12121];
/// What run.py gives pytest (it then stops every process below it and exits).
const PYTEST_TIMEOUT: Duration = Duration::from_secs(95);
/// How long run.py itself may take, cleanup included (nextest kills a test after 120 s).
const RUN_DEADLINE: Duration = Duration::from_secs(110);
/// After SIGTERM, how long run.py gets to clean up before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// receptorctl 1.6.9's pristine `tests/` folder: `RECEPTORCTL_TESTS_DIR` (set by
/// scripts/test.sh), else where scripts/setup-venv unpacks it.
fn suite_tests_dir() -> Result<PathBuf> {
    let dir = match std::env::var_os("RECEPTORCTL_TESTS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = match std::env::var_os("RECEPTORCTL_SDIST_CACHE") {
                Some(cache) => PathBuf::from(cache),
                None => PathBuf::from(
                    std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?,
                )
                .join(".cache/receptorctl-sdist"),
            };
            cache.join("receptorctl-1.6.9/tests")
        }
    };
    ensure!(
        dir.join("conftest.py").is_file(),
        "receptorctl's test suite is not at {} (run scripts/test.sh, which prepares it)",
        dir.display()
    );
    Ok(dir)
}

/// Waits for `child` until `deadline`; then asks it to stop (SIGTERM: run.py stops its
/// pytest and nodes) and kills it if it does not.
fn wait_with_deadline(child: &mut Child, deadline: Instant) -> Result<Option<ExitStatus>> {
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) touches no memory of ours; `pid` is our own child, not yet reaped,
        // so the id cannot have been reused.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let grace = Instant::now() + TERM_GRACE;
    while Instant::now() < grace {
        if child.try_wait()?.is_some() {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(None)
}

/// The last `lines` lines of a file, for failure messages.
fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs one file of the suite (`test_cli.py`, ...) against `subject`'s nodes and checks
/// the outcome of every test in it.
fn run_suite_file(subject: Implementation, file: &str) -> Result<()> {
    let tests_dir = suite_tests_dir()?;
    let receptor = subject.binary()?;
    let runner = repo_root().join("tests/receptorctl_suite/run.py");
    let ports: BTreeMap<String, u16> = SUITE_PORTS
        .iter()
        .map(|p| Ok((p.to_string(), free_port()?)))
        .collect::<Result<_>>()?;
    let scratch = tempfile::Builder::new()
        .prefix("receptorctl-suite-")
        .tempdir()?;
    let summary = scratch.path().join("summary.json");
    let output = scratch.path().join("output.txt");

    let mut cmd = Command::new(python()?);
    cmd.arg(&runner)
        .arg("--receptor")
        .arg(&receptor)
        .args(["--impl", subject.label()])
        .arg("--tests-dir")
        .arg(&tests_dir)
        .arg("--summary")
        .arg(&summary)
        .args(["--timeout", &PYTEST_TIMEOUT.as_secs().to_string()])
        .args(["--", &format!("tests/{file}")])
        .env("RECEPTORCTL_SUITE_PORTS", serde_json::to_string(&ports)?)
        .stdin(Stdio::null());
    // stdout and stderr share one open file, so their lines interleave in order.
    let out_file = File::create(&output)?;
    cmd.stdout(out_file.try_clone()?).stderr(out_file);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", runner.display()))?;
    let status = wait_with_deadline(&mut child, Instant::now() + RUN_DEADLINE)?;
    let report = || format!("--- run.py output (end) ---\n{}", tail(&output, 80));
    let Some(status) = status else {
        bail!(
            "{file} did not finish within {RUN_DEADLINE:?}\n{}",
            report()
        );
    };

    let summary: Value = serde_json::from_str(
        &fs::read_to_string(&summary)
            .with_context(|| format!("no summary from run.py ({status})\n{}", report()))?,
    )
    .context("summary is not JSON")?;
    let outcomes = summary["outcomes"]
        .as_object()
        .ok_or_else(|| anyhow!("summary without outcomes: {summary}"))?;
    let with = |wanted: &[&str]| -> Vec<&str> {
        outcomes
            .iter()
            .filter(|(_, o)| wanted.contains(&o.as_str().unwrap_or("")))
            .map(|(name, _)| name.as_str())
            .collect()
    };
    let bad = with(&["failed", "error"]);
    ensure!(
        bad.is_empty(),
        "{} of {file} against {} failed: {bad:#?}\n{}",
        bad.len(),
        subject.label(),
        report()
    );
    let ran = with(&["passed", "xfailed"]);
    ensure!(
        !ran.is_empty(),
        "no test of {file} ran: {outcomes:?}\n{}",
        report()
    );
    ensure!(
        status.success(),
        "run.py exited with {status} though no test failed\n{}",
        report()
    );
    if subject == Go {
        let xfailed = with(&["xfailed"]);
        ensure!(
            xfailed.is_empty(),
            "expected failures against Go: {xfailed:?}"
        );
    }
    Ok(())
}

/// Against the Go reference: every test passes, which shows the adaptation is sound.
mod go {
    use super::*;

    #[test]
    fn test_cli() -> Result<()> {
        run_suite_file(Go, "test_cli.py")
    }

    #[test]
    fn test_connection() -> Result<()> {
        run_suite_file(Go, "test_connection.py")
    }

    #[test]
    fn test_mesh() -> Result<()> {
        run_suite_file(Go, "test_mesh.py")
    }

    #[test]
    fn test_workunit() -> Result<()> {
        run_suite_file(Go, "test_workunit.py")
    }
}

/// Against our receptor.
mod rust_nodes {
    use super::*;

    #[test]
    fn test_cli() -> Result<()> {
        run_suite_file(Rust, "test_cli.py")
    }

    #[test]
    fn test_connection() -> Result<()> {
        run_suite_file(Rust, "test_connection.py")
    }

    #[test]
    fn test_mesh() -> Result<()> {
        run_suite_file(Rust, "test_mesh.py")
    }

    #[test]
    fn test_workunit() -> Result<()> {
        run_suite_file(Rust, "test_workunit.py")
    }
}
