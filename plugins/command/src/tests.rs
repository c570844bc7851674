//! Tests with real processes and files.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

use crate::config::CommandConfig;
use receptor_plugin_sdk::UnitState as State;

use crate::runner::{CommandWork, Report as Progress, Reporter, RunningCommand};

const WAIT: Duration = Duration::from_secs(20);

/// Collects reports and lets the test wait for them.
#[derive(Default)]
struct Reports {
    list: Mutex<Vec<Progress>>,
    changed: Condvar,
}

impl Reports {
    fn reporter(self: &Arc<Self>) -> Reporter {
        let me = self.clone();
        Arc::new(move |p: Progress| {
            me.list
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(p);
            me.changed.notify_all();
        })
    }

    fn wait_for(&self, what: impl Fn(&Progress) -> bool) -> Result<Progress> {
        let deadline = Instant::now() + WAIT;
        let mut list = self
            .list
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if let Some(p) = list.iter().find(|p| what(p)) {
                return Ok(p.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("timed out; reports so far: {:?}", *list);
            }
            list = self
                .changed
                .wait_timeout(list, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    fn wait_final(&self) -> Result<Progress> {
        self.wait_for(|p| matches!(p.state, State::Succeeded | State::Failed | State::Canceled))
    }
}

struct UnitDir {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl UnitDir {
    fn new(stdin: &[u8]) -> Result<UnitDir> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("unit");
        fs::create_dir(&dir)?;
        fs::write(dir.join("stdin"), stdin)?;
        Ok(UnitDir { _tmp: tmp, dir })
    }

    fn files(&self) -> Result<(File, File)> {
        let stdin = File::open(self.dir.join("stdin"))?;
        let stdout = OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.dir.join("stdout"))?;
        Ok((stdin, stdout))
    }

    fn stdout(&self) -> Result<String> {
        Ok(fs::read_to_string(self.dir.join("stdout"))?)
    }
}

fn work(command: &str, params: &str, runtime: bool) -> CommandWork {
    CommandWork::new(CommandConfig {
        work_type: "t".into(),
        command: command.into(),
        params: params.into(),
        allow_runtime_params: runtime,
        verify_signature: false,
    })
}

fn run(w: &CommandWork, unit: &UnitDir, runtime: &str) -> Result<(Arc<Reports>, RunningCommand)> {
    let reports = Arc::new(Reports::default());
    let (stdin, stdout) = unit.files()?;
    let running = w
        .start(&unit.dir, stdin, stdout, runtime, reports.reporter())
        .map_err(|e| anyhow!(e))?;
    Ok((reports, running))
}

#[test]
fn runs_a_command_with_stdin_and_merged_stderr() -> Result<()> {
    let unit = UnitDir::new(b"hello\nworld\n")?;
    let w = work("bash", "-c \"cat; echo err >&2; exit 3\"", false);
    let (reports, running) = run(&w, &unit, "")?;
    let started = reports.wait_for(|p| p.state == State::Running)?;
    assert!(started.detail.starts_with("Running: PID "), "{started:?}");
    let extra = started.extra.clone().unwrap_or(Value::Null);
    assert_eq!(
        extra.get("Pid").and_then(Value::as_i64),
        running.supervisor_pid().map(i64::from)
    );
    assert_eq!(extra["Params"], "-c \"cat; echo err >&2; exit 3\"");
    let end = reports.wait_final()?;
    assert_eq!(
        end,
        Progress {
            state: State::Failed,
            detail: "exit status 3".into(),
            extra: None
        }
    );
    assert_eq!(unit.stdout()?, "hello\nworld\nerr\n");
    Ok(())
}

#[test]
fn runtime_params_are_appended_and_split() -> Result<()> {
    let unit = UnitDir::new(b"")?;
    let w = work("echo", "base", true);
    let (reports, _running) = run(&w, &unit, "a \"b c\"   d")?;
    let end = reports.wait_final()?;
    assert_eq!(
        (end.state, end.detail.as_str()),
        (State::Succeeded, "exit status 0")
    );
    assert_eq!(unit.stdout()?, "base a b c d\n");
    assert_eq!(w.final_params(""), "base");
    assert_eq!(work("echo", "", true).final_params("x"), "x");
    Ok(())
}

#[test]
fn start_problems_are_failed_units_with_go_texts() -> Result<()> {
    let cases = [
        (
            work("nosuchcmdxyz", "", false),
            "exec: \"nosuchcmdxyz\": executable file not found in $PATH",
        ),
        (
            work("/nonexistent/cmd", "", false),
            "fork/exec /nonexistent/cmd: no such file or directory",
        ),
        (
            work("echo", "a 'b c", false),
            "EOF found when expecting closing quote",
        ),
        (
            work("echo", "tr\\", false),
            "EOF found after escape character",
        ),
    ];
    for (w, want) in cases {
        let unit = UnitDir::new(b"")?;
        let (reports, _running) = run(&w, &unit, "")?;
        let end = reports.wait_final()?;
        assert_eq!((end.state, end.detail.as_str()), (State::Failed, want));
    }
    Ok(())
}

#[test]
fn killed_command_reports_the_signal() -> Result<()> {
    let unit = UnitDir::new(b"")?;
    let w = work("bash", "-c \"kill -TERM $$\"", false);
    let (reports, _running) = run(&w, &unit, "")?;
    let end = reports.wait_final()?;
    assert_eq!(
        (end.state, end.detail.as_str()),
        (State::Failed, "signal: terminated")
    );
    Ok(())
}

/// Processes (not zombies) whose process group is `pgid`.
fn live_group_members(pgid: i32) -> Result<Vec<i32>> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (Some(state), Some(pgrp)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        if *state != "Z" && pgrp.parse::<i32>().ok() == Some(pgid) {
            found.push(pid);
        }
    }
    Ok(found)
}

fn wait_group_gone(pgid: i32) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = live_group_members(pgid)?;
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("processes left in group {pgid}: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn cancel_kills_the_whole_process_group() -> Result<()> {
    let unit = UnitDir::new(b"")?;
    let w = work(
        "bash",
        "-c \"sleep 300 & sleep 301 & (sleep 302; echo never) & echo started; wait\"",
        false,
    );
    let (reports, running) = run(&w, &unit, "")?;
    reports.wait_for(|p| p.state == State::Running)?;
    let pgid = running.supervisor_pid().ok_or_else(|| anyhow!("no pid"))?;
    // Wait until the grandchildren exist (bash prints once it forked them).
    let deadline = Instant::now() + WAIT;
    while live_group_members(pgid)?.len() < 5 {
        if Instant::now() > deadline {
            bail!("group never grew: {:?}", live_group_members(pgid)?);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    running.cancel().map_err(|e| anyhow!(e))?;
    let end = reports.wait_final()?;
    assert_eq!(
        (end.state, end.detail.as_str()),
        (State::Canceled, "Canceled")
    );
    wait_group_gone(pgid)?;
    // A second cancel is harmless.
    running.cancel().map_err(|e| anyhow!(e))?;
    Ok(())
}

#[test]
fn reattach_follows_a_runner_by_pid() -> Result<()> {
    let unit = UnitDir::new(b"")?;
    let w = work("sleep", "300", false);
    let (reports, running) = run(&w, &unit, "")?;
    let started = reports.wait_for(|p| p.state == State::Running)?;
    let extra = started.extra.clone();

    // As after a restart: a new instance picks the unit up from its ExtraData.
    let again = Arc::new(Reports::default());
    let reattached = w
        .reattach(&unit.dir, extra.as_ref(), again.reporter())
        .map_err(|e| anyhow!(e))?;
    assert_eq!(reattached.supervisor_pid(), running.supervisor_pid());
    reattached.cancel().map_err(|e| anyhow!(e))?;
    let end = again.wait_final()?;
    assert_eq!(end.state, State::Canceled);
    let pgid = running.supervisor_pid().ok_or_else(|| anyhow!("no pid"))?;
    wait_group_gone(pgid)?;

    // A unit whose runner finished while nobody watched reports how it ended.
    let unit2 = UnitDir::new(b"")?;
    let w2 = work("bash", "-c \"exit 4\"", false);
    let (reports2, _r2) = run(&w2, &unit2, "")?;
    let started2 = reports2.wait_for(|p| p.state == State::Running)?;
    reports2.wait_final()?;
    let later = Arc::new(Reports::default());
    w2.reattach(&unit2.dir, started2.extra.as_ref(), later.reporter())
        .map_err(|e| anyhow!(e))?;
    let end = later.wait_final()?;
    assert_eq!(
        (end.state, end.detail.as_str()),
        (State::Failed, "exit status 4")
    );
    Ok(())
}

#[test]
fn reattach_refuses_processes_that_are_not_the_units() -> Result<()> {
    let unit = UnitDir::new(b"")?;
    let w = work("sleep", "300", false);
    let reports = Arc::new(Reports::default());
    // Our own process is alive but is not a runner of this unit.
    let me = serde_json::json!({"Pid": std::process::id(), "Params": ""});
    let err = w.reattach(&unit.dir, Some(&me), reports.reporter());
    assert!(
        matches!(&err, Err(e) if e.contains("is not the command runner")),
        "{err:?}"
    );
    let none = w.reattach(&unit.dir, None, reports.reporter());
    assert!(none.is_err());
    let gone = serde_json::json!({"Pid": i32::MAX - 1, "Params": ""});
    let err = w.reattach(&unit.dir, Some(&gone), reports.reporter());
    assert!(matches!(&err, Err(e) if e.contains("is gone")), "{err:?}");
    Ok(())
}

#[test]
fn the_node_does_not_leak_descriptors_into_the_command() -> Result<()> {
    let unit = UnitDir::new(b"")?;
    // Hold an extra descriptor without CLOEXEC open in this process.
    let extra = File::open("/dev/null")?;
    let raw = std::os::fd::AsRawFd::as_raw_fd(&extra);
    // SAFETY: fcntl on a descriptor we own.
    let dup = unsafe { libc::fcntl(raw, libc::F_DUPFD, 0) };
    assert!(dup >= 0);
    let w = work("ls", "/proc/self/fd", false);
    let (reports, _r) = run(&w, &unit, "")?;
    reports.wait_final()?;
    // SAFETY: closing the descriptor created above.
    unsafe { libc::close(dup) };
    let fds: Vec<String> = unit.stdout()?.lines().map(str::to_owned).collect();
    // 0, 1, 2 and the one ls opens to read the folder: nothing of the node's.
    assert_eq!(fds, ["0", "1", "2", "3"], "node descriptor {dup} leaked?");
    Ok(())
}

#[test]
fn unit_dir_must_exist() {
    let w = work("echo", "", false);
    let reports = Arc::new(Reports::default());
    let result = (|| -> Result<RunningCommand> {
        let unit = UnitDir::new(b"")?;
        let (stdin, stdout) = unit.files()?;
        w.start(
            Path::new("/nonexistent/unit"),
            stdin,
            stdout,
            "",
            reports.reporter(),
        )
        .map_err(|e| anyhow!(e))
    })();
    assert!(result.is_err());
}

#[test]
fn cancel_right_after_start_kills_the_command_once_it_runs() -> Result<()> {
    // The start returns right after the fork: a cancel can come before the command runs.
    let unit = UnitDir::new(b"")?;
    let w = work("sleep", "300", false);
    let (reports, running) = run(&w, &unit, "")?;
    running.cancel().map_err(|e| anyhow!(e))?;
    let pgid = running.supervisor_pid().ok_or_else(|| anyhow!("no pid"))?;
    let end = reports.wait_final()?;
    assert_eq!(
        (end.state, end.detail.as_str()),
        (State::Canceled, "Canceled")
    );
    wait_group_gone(pgid)?;
    Ok(())
}
