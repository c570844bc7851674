//! Running one command unit: start, progress, end, cancel and re-attach after a restart.
//!
//! What a unit reports, as Go receptor's command runner does:
//! * `Running: PID <command pid>` with `ExtraData` `{"Pid":<runner pid>,"Params":"<params>"}`
//!   once the command runs (the runner is the supervisor of [`crate::spawn`]);
//! * `exit status N` (Succeeded for 0, Failed otherwise), `signal: killed` and the like
//!   (Failed), with `ExtraData` null, when it ends;
//! * `Canceled` when cancelled: the whole process group is killed with SIGKILL;
//! * start-up problems as a Failed unit with Go's texts
//!   (`exec: "x": executable file not found in $PATH`, `fork/exec /x: no such file or
//!   directory`, `EOF found when expecting closing quote`).
//!
//! Supervisors are forked by the host's spawner process ([`receptor_plugin_sdk::spawner`])
//! when it has one, otherwise by the node itself ([`spawn::start`]); `RECEPTOR_COMMAND_SPAWN=fork`
//! in the node's environment forces the latter (for comparisons). Each running unit has one
//! thread that waits for its supervisor (so the plugin never needs the host's async
//! runtime); it reports the end through the [`Reporter`].

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use receptor_plugin_sdk::spawner::{pidfd_open, SpawnReply, Spawner, SpawnerError};
use receptor_plugin_sdk::UnitState;
use serde_json::{json, Value};

use crate::config::CommandConfig;
use crate::shlex;
use crate::spawn::{self, SpawnError};

/// One progress report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// State.
    pub state: UnitState,
    /// Detail text.
    pub detail: String,
    /// `ExtraData` (`None` = null).
    pub extra: Option<Value>,
}

impl Report {
    fn new(state: UnitState, detail: impl Into<String>, extra: Option<Value>) -> Report {
        Report {
            state,
            detail: detail.into(),
            extra,
        }
    }
}

/// Where a unit's progress goes (called from any thread; the latest report wins).
pub type Reporter = Arc<dyn Fn(Report) + Send + Sync>;

/// A configured `work-command` type.
#[derive(Debug, Clone)]
pub struct CommandWork {
    cfg: CommandConfig,
    /// Where the last `$PATH` search found the command (a bare name only), so that the
    /// next unit checks one file instead of searching every folder of `$PATH` again.
    found: Arc<Mutex<Option<PathBuf>>>,
    launcher: Arc<Launcher>,
}

/// Who forks the supervisors.
#[derive(Debug)]
struct Launcher {
    /// The host's spawner, while it is usable.
    spawner: Option<Spawner>,
    /// Set once the host binary turned out not to be a spawner: fork from here on.
    no_spawner: AtomicBool,
}

/// The spawner shared by every `work-command` type of this process.
fn shared_launcher() -> Arc<Launcher> {
    static LAUNCHER: OnceLock<Arc<Launcher>> = OnceLock::new();
    LAUNCHER
        .get_or_init(|| {
            let fork = std::env::var_os("RECEPTOR_COMMAND_SPAWN").is_some_and(|v| v == "fork");
            let spawner = if fork {
                None
            } else {
                Spawner::for_current_exe().ok()
            };
            Arc::new(Launcher {
                spawner,
                no_spawner: AtomicBool::new(false),
            })
        })
        .clone()
}

/// A supervisor on its way.
enum Launch {
    /// Forked by this process.
    Forked(spawn::Starting),
    /// Asked of the spawner; its pid comes with the reply.
    Requested {
        reply: Receiver<SpawnReply>,
        pipes: spawn::StartPipes,
        program: PathBuf,
    },
}

impl Launcher {
    fn launch(
        &self,
        program: &Path,
        argv: &[String],
        unit_dir: &Path,
        stdin: &File,
        stdout: &File,
    ) -> Result<Launch, String> {
        if let Some(spawner) = self
            .spawner
            .as_ref()
            .filter(|_| !self.no_spawner.load(Ordering::Relaxed))
        {
            let pipes = spawn::StartPipes::new().map_err(|e| e.to_string())?;
            let fds: [&dyn AsRawFd; 4] = [stdin, stdout, &pipes.pid_write, &pipes.err_write];
            match spawner.request(program, argv, unit_dir, fds) {
                Ok(reply) => {
                    return Ok(Launch::Requested {
                        reply,
                        pipes,
                        program: program.to_owned(),
                    })
                }
                Err(SpawnerError::NotASpawner(_)) => {
                    self.no_spawner.store(true, Ordering::Relaxed);
                }
                // Too long for one message: this unit is forked from here.
                Err(SpawnerError::TooLong(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        spawn::start(program, argv, unit_dir, stdin, stdout)
            .map(Launch::Forked)
            .map_err(|e| e.to_string())
    }
}

/// What the waiter and `cancel` share about a running supervisor.
#[derive(Debug, Default)]
struct Phase {
    /// The command runs (its process group exists).
    started: bool,
    finished: bool,
    cancelled: bool,
}

#[derive(Debug)]
struct Shared {
    /// The supervisor's pid, its process group id (0 until the spawner has replied).
    pgid: AtomicI32,
    /// Set when the supervisor is not our child (forked by the spawner, or re-attached).
    pidfd: OnceLock<OwnedFd>,
    phase: Mutex<Phase>,
}

impl Shared {
    fn new(pgid: libc::pid_t, pidfd: Option<OwnedFd>, phase: Phase) -> Shared {
        let cell = OnceLock::new();
        if let Some(fd) = pidfd {
            let _ = cell.set(fd);
        }
        Shared {
            pgid: AtomicI32::new(pgid),
            pidfd: cell,
            phase: Mutex::new(phase),
        }
    }

    fn pgid(&self) -> libc::pid_t {
        self.pgid.load(Ordering::Acquire)
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A unit started (or re-attached) by [`CommandWork`].
#[derive(Debug, Clone)]
pub struct RunningCommand {
    shared: Option<Arc<Shared>>,
}

impl RunningCommand {
    fn finished() -> RunningCommand {
        RunningCommand { shared: None }
    }

    /// The supervisor's pid (also the process group id), if a process was started.
    pub fn supervisor_pid(&self) -> Option<libc::pid_t> {
        self.shared
            .as_ref()
            .map(|s| s.pgid())
            .filter(|pid| *pid > 0)
    }

    /// Kills the unit's whole process group; the unit then reports `Canceled`. A unit
    /// that already ended is left alone.
    pub fn cancel(&self) -> Result<(), String> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let mut phase = shared.phase();
        if phase.finished {
            return Ok(());
        }
        if let Some(pidfd) = shared.pidfd.get() {
            // Not our child: make sure the group leader still exists before using its
            // pid as a group id.
            if pidfd_exited(pidfd) {
                return Ok(());
            }
        }
        phase.cancelled = true;
        if !phase.started {
            // The waiter kills the group as soon as the command runs.
            return Ok(());
        }
        kill_group(shared.pgid())
    }
}

/// Kills a process group with SIGKILL; a group that is already gone is fine.
fn kill_group(pgid: libc::pid_t) -> Result<(), String> {
    // SAFETY: kill has no memory preconditions; a negative pid names the group.
    let r = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if r != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(format!("cannot kill process group {pgid}: {err}"));
        }
    }
    Ok(())
}

impl CommandWork {
    /// A work type for `cfg`.
    pub fn new(cfg: CommandConfig) -> CommandWork {
        CommandWork {
            cfg,
            found: Arc::new(Mutex::new(None)),
            launcher: shared_launcher(),
        }
    }

    /// The program to run: [`resolve_program`], except that a bare name found in `$PATH`
    /// before is used again while that file is still an executable regular file (the
    /// node's `$PATH` does not change while it runs).
    fn program(&self) -> Result<PathBuf, String> {
        if self.cfg.command.contains('/') {
            return resolve_program(&self.cfg.command);
        }
        let mut found = self
            .found
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(path) = found.as_ref().filter(|p| is_executable_file(p)) {
            return Ok(path.clone());
        }
        let path = resolve_program(&self.cfg.command)?;
        *found = Some(path.clone());
        Ok(path)
    }

    /// The configuration.
    pub fn config(&self) -> &CommandConfig {
        &self.cfg
    }

    /// The parameters a unit runs with: the configured ones, then the runtime ones.
    pub fn final_params(&self, runtime_params: &str) -> String {
        match (self.cfg.params.is_empty(), runtime_params.is_empty()) {
            (_, true) => self.cfg.params.clone(),
            (true, false) => runtime_params.to_owned(),
            (false, false) => format!("{} {}", self.cfg.params, runtime_params),
        }
    }

    /// Starts a unit. Problems with the command itself are reported as a Failed unit (as
    /// Go does); `Err` is for problems of the node (the unit folder is unusable).
    pub fn start(
        &self,
        unit_dir: &Path,
        stdin: File,
        stdout: File,
        runtime_params: &str,
        report: Reporter,
    ) -> Result<RunningCommand, String> {
        let params = self.final_params(runtime_params);
        let words = match shlex::split(&params) {
            Ok(words) => words,
            Err(e) => {
                report(Report::new(UnitState::Failed, e, None));
                return Ok(RunningCommand::finished());
            }
        };
        let program = match self.program() {
            Ok(program) => program,
            Err(detail) => {
                report(Report::new(UnitState::Failed, detail, None));
                return Ok(RunningCommand::finished());
            }
        };
        let unit_dir = fs::canonicalize(unit_dir)
            .map_err(|e| format!("cannot resolve {}: {e}", unit_dir.display()))?;
        let mut argv = Vec::with_capacity(words.len() + 1);
        argv.push(self.cfg.command.clone());
        argv.extend(words);
        // Only the request (or the fork) happens here: the waiter learns when the command
        // runs (or why it did not start) and reports it, so the caller is not held up by
        // the exec.
        let launch = self
            .launcher
            .launch(&program, &argv, &unit_dir, &stdin, &stdout)?;
        drop(stdin);
        drop(stdout);
        let supervisor = match &launch {
            Launch::Forked(starting) => starting.supervisor,
            // Known when the spawner replies.
            Launch::Requested { .. } => 0,
        };
        let shared = Arc::new(Shared::new(supervisor, None, Phase::default()));
        let waiter = shared.clone();
        let spawned = spawn_waiter(move || match launch {
            Launch::Forked(starting) => {
                if let Some(report) = wait_started(&waiter, starting, params, &report) {
                    wait_for_child(&waiter, &unit_dir, report);
                }
            }
            Launch::Requested {
                reply,
                pipes,
                program,
            } => {
                let started = reply
                    .recv()
                    .unwrap_or_else(|_| Err(io::Error::other("the command spawner went away")));
                match started {
                    Ok((pid, pidfd)) => {
                        let _ = waiter.pidfd.set(pidfd);
                        waiter.pgid.store(pid, Ordering::Release);
                        let starting = pipes.started_elsewhere(pid, &program);
                        if let Some(report) = wait_started(&waiter, starting, params, &report) {
                            wait_for_pidfd(&waiter, &unit_dir, report);
                        }
                    }
                    Err(e) => {
                        let cancelled = {
                            let mut phase = waiter.phase();
                            phase.finished = true;
                            phase.cancelled
                        };
                        report(if cancelled {
                            Report::new(UnitState::Canceled, "Canceled", None)
                        } else {
                            Report::new(
                                UnitState::Failed,
                                format!("Error starting worker: {e}"),
                                None,
                            )
                        });
                    }
                }
            }
        });
        if let Err(e) = spawned {
            // Nobody would wait for the supervisor: stop it (the command may not run yet).
            let supervisor = shared.pgid();
            if supervisor > 0 {
                // SAFETY: kill has no memory preconditions; the supervisor is our unreaped
                // child, so its pid is not reused.
                unsafe { libc::kill(supervisor, libc::SIGKILL) };
                let _ = kill_group(supervisor);
                let _ = spawn::wait_child(supervisor);
            }
            return Err(format!("cannot start waiter thread: {e}"));
        }
        Ok(RunningCommand {
            shared: Some(shared),
        })
    }

    /// Picks up a unit that was running when the node stopped, from its `ExtraData`.
    /// Works if the unit's runner still runs (it is this unit's: its working folder is
    /// the unit folder) or has recorded how the command ended; `Err` otherwise.
    pub fn reattach(
        &self,
        unit_dir: &Path,
        extra: Option<&Value>,
        report: Reporter,
    ) -> Result<RunningCommand, String> {
        let pid = extra
            .and_then(|e| e.get("Pid"))
            .and_then(Value::as_i64)
            .and_then(|p| libc::pid_t::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or("no command runner process was recorded for this unit")?;
        let unit_dir = fs::canonicalize(unit_dir)
            .map_err(|e| format!("cannot resolve {}: {e}", unit_dir.display()))?;
        if let Some(status) = spawn::read_wait_status(&unit_dir) {
            report(ended(status));
            return Ok(RunningCommand::finished());
        }
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(_) => {
                // It may have finished between the two checks.
                if let Some(status) = spawn::read_wait_status(&unit_dir) {
                    report(ended(status));
                    return Ok(RunningCommand::finished());
                }
                return Err(format!("command runner process {pid} is gone"));
            }
        };
        let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok();
        if cwd.as_deref() != Some(unit_dir.as_path()) {
            return Err(format!(
                "process {pid} is not the command runner of this unit"
            ));
        }
        let shared = Arc::new(Shared::new(
            pid,
            Some(pidfd),
            Phase {
                started: true,
                ..Phase::default()
            },
        ));
        let waiter = shared.clone();
        spawn_waiter(move || wait_for_pidfd(&waiter, &unit_dir, &report))
            .map_err(|e| format!("cannot start waiter thread: {e}"))?;
        Ok(RunningCommand {
            shared: Some(shared),
        })
    }
}

fn spawn_waiter(f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name("command-wait".to_owned())
        .stack_size(128 * 1024)
        .spawn(f)
        .map(|_| ())
}

/// The report for a command that ended with wait status `status`.
fn ended(status: i32) -> Report {
    let (success, detail) = spawn::describe_wait_status(status);
    let state = if success {
        UnitState::Succeeded
    } else {
        UnitState::Failed
    };
    Report::new(state, detail, None)
}

/// The final report once the supervisor is gone.
fn final_report(cancelled: bool, unit_dir: &Path) -> Report {
    if cancelled {
        return Report::new(UnitState::Canceled, "Canceled", None);
    }
    match spawn::read_wait_status(unit_dir) {
        Some(status) => ended(status),
        None => Report::new(UnitState::Failed, "Killed", None),
    }
}

/// Waits until the command of a freshly forked supervisor runs and reports it; returns
/// the reporter to go on with, or `None` if the unit already ended (the command did not
/// start, and that was reported).
fn wait_started<'a>(
    shared: &Shared,
    starting: spawn::Starting,
    params: String,
    report: &'a Reporter,
) -> Option<&'a Reporter> {
    match starting.wait_started() {
        Ok(spawned) => {
            let cancelled = {
                let mut phase = shared.phase();
                phase.started = true;
                phase.cancelled
            };
            if cancelled {
                let _ = kill_group(shared.pgid());
            } else {
                report(Report::new(
                    UnitState::Running,
                    format!("Running: PID {}", spawned.command),
                    Some(json!({"Pid": spawned.supervisor, "Params": params})),
                ));
            }
            Some(report)
        }
        Err(e) => {
            let cancelled = {
                let mut phase = shared.phase();
                phase.finished = true;
                phase.cancelled
            };
            let end = match e {
                _ if cancelled => Report::new(UnitState::Canceled, "Canceled", None),
                e @ SpawnError::Exec { .. } => Report::new(UnitState::Failed, e.to_string(), None),
                e => Report::new(
                    UnitState::Failed,
                    format!("Error starting worker: {e}"),
                    None,
                ),
            };
            report(end);
            None
        }
    }
}

/// Waits for a supervisor that is our child. It is left a zombie until the phase is
/// marked finished, so `cancel` never signals a recycled process group id.
fn wait_for_child(shared: &Shared, unit_dir: &Path, report: &Reporter) {
    loop {
        // SAFETY: siginfo_t is plain old data; all zeroes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid out-pointer; WNOWAIT leaves the child unreaped.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                shared.pgid() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    let cancelled = {
        let mut phase = shared.phase();
        phase.finished = true;
        phase.cancelled
    };
    let _ = spawn::wait_child(shared.pgid());
    report(final_report(cancelled, unit_dir));
}

/// Waits for a supervisor that is not our child (after a restart).
fn wait_for_pidfd(shared: &Shared, unit_dir: &Path, report: &Reporter) {
    if let Some(pidfd) = shared.pidfd.get() {
        loop {
            let mut pfd = libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, -1) };
            if r > 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
        }
    }
    let cancelled = {
        let mut phase = shared.phase();
        phase.finished = true;
        phase.cancelled
    };
    report(final_report(cancelled, unit_dir));
}

fn pidfd_exited(pidfd: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    unsafe { libc::poll(&mut pfd, 1, 0) > 0 }
}

/// Go's `exec.LookPath`: a name with a `/` is used as it is; others are searched in the
/// absolute folders of `$PATH` for an executable regular file.
pub fn resolve_program(command: &str) -> Result<PathBuf, String> {
    if command.contains('/') {
        return Ok(PathBuf::from(command));
    }
    let not_found = || format!("exec: {command:?}: executable file not found in $PATH");
    let path = std::env::var_os("PATH").ok_or_else(not_found)?;
    for dir in std::env::split_paths(&path) {
        if !dir.is_absolute() {
            continue;
        }
        let candidate = dir.join(command);
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(not_found())
}

/// Whether `path` is a regular file with an execute bit (what `exec.LookPath` accepts).
fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}
