//! The node's side of an isolated plugin: starting its host process, calling into it
//! with a bound, noticing its end, restarting it with back-off and re-attaching units.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use receptor_plugin_sdk::abi;
use tokio::sync::watch;

use super::wire::{self, Event, ReplyBody, Request, WireClaim};
use super::{signal_name, IsolationError, DOWN_WAIT};
use crate::plugin_host::PluginInfo;
use crate::work::worktype::{
    ReattachRequest, StartRequest, UnitState, WorkHandle, WorkProgress, WorkType, WorkTypeError,
};

/// First restart delay after a crash.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A host that lived this long resets the back-off.
const STABLE: Duration = Duration::from_secs(60);
/// Most units one isolated plugin runs at a time (each holds a map entry).
const MAX_UNITS: usize = 65_536;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent: a panic cannot corrupt it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One running plugin host process and the calls waiting for its answers.
struct Conn {
    sock: OwnedFd,
    child: Mutex<Child>,
    pid: u32,
    started: Instant,
    pending: Mutex<HashMap<u64, SyncSender<Result<ReplyBody, IsolationError>>>>,
    /// Set when the node kills the host (a hang): the reason logged instead of SIGKILL.
    kill_reason: Mutex<Option<String>>,
    /// Set once the host ended: how (`SIGSEGV`, ...).
    ended: Mutex<Option<String>>,
}

impl Conn {
    fn kill(&self, reason: String) {
        lock(&self.kill_reason).get_or_insert(reason);
        let _ = lock(&self.child).kill();
    }
}

/// Where the host of a plugin is.
enum HostState {
    /// Running and answering.
    Up(Arc<Conn>),
    /// Ended; a restart is scheduled.
    Down {
        /// How the last host ended (`SIGSEGV`, ...).
        reason: String,
    },
    /// The plugin is no longer used (the node stops).
    Stopped,
}

/// A unit the node runs in the host, as the node follows it.
struct UnitSlot {
    unit_id: String,
    unit_dir: PathBuf,
    work_type: u64,
    progress: watch::Sender<WorkProgress>,
    /// The start call has returned: the unit is the host's (re-attached after a crash).
    started: Mutex<bool>,
}

impl UnitSlot {
    fn fail(&self, detail: String) {
        let extra = self.progress.borrow().extra.clone();
        self.progress.send_replace(WorkProgress {
            state: UnitState::Failed,
            detail,
            extra,
        });
    }
}

/// A work type created in the host (replayed into every new host).
struct WorkTypeRecord {
    kind: String,
    config: serde_json::Value,
}

/// Supervises the host process of one isolated plugin.
pub(in crate::plugin_host) struct Supervisor {
    me: Weak<Supervisor>,
    name: String,
    path: PathBuf,
    call_timeout: Duration,
    state: Mutex<HostState>,
    changed: Condvar,
    work_types: Mutex<BTreeMap<u64, WorkTypeRecord>>,
    units: Mutex<HashMap<u64, Arc<UnitSlot>>>,
    next_id: AtomicU64,
    /// Restarts since the last stable period (the back-off exponent).
    attempt: Mutex<u32>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.name)
            .field("path", &self.path)
            .finish()
    }
}

/// What a new host said about its plugin.
struct Hello {
    info: PluginInfo,
    claims: Vec<WireClaim>,
}

impl Supervisor {
    /// Starts the host of the plugin at `path` and reads what the plugin claims.
    pub(in crate::plugin_host) fn start(
        path: &Path,
        call_timeout: Duration,
    ) -> Result<(Arc<Supervisor>, PluginInfo, Vec<WireClaim>), IsolationError> {
        let label = path.display().to_string();
        let (conn, hello) = spawn_host(path, &label, call_timeout)?;
        let sup = Arc::new_cyclic(|me| Supervisor {
            me: me.clone(),
            name: hello.info.name.clone(),
            path: path.to_path_buf(),
            call_timeout,
            state: Mutex::new(HostState::Up(Arc::clone(&conn))),
            changed: Condvar::new(),
            work_types: Mutex::new(BTreeMap::new()),
            units: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            attempt: Mutex::new(0),
        });
        tracing::info!(
            plugin = %sup.name,
            path = %path.display(),
            pid = conn.pid,
            "started plugin host (isolation: process)"
        );
        sup.read_events(conn);
        Ok((sup, hello.info, hello.claims))
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Builds the work type of a config section in the host.
    pub(in crate::plugin_host) fn work_type(
        &self,
        kind: &str,
        config: &serde_json::Value,
    ) -> Result<Arc<dyn WorkType>, IsolationError> {
        let id = self.next_id();
        let body = self.call(
            "create",
            |rid| Request::Create {
                id: rid,
                work_type: id,
                kind: kind.to_owned(),
                config: config.clone(),
            },
            Vec::new(),
        )?;
        let ReplyBody::Created {
            name,
            verify_signature,
            allow_runtime_params,
        } = body
        else {
            return Err(self.protocol("create answered without a work type"));
        };
        lock(&self.work_types).insert(
            id,
            WorkTypeRecord {
                kind: kind.to_owned(),
                config: config.clone(),
            },
        );
        let sup = self.me.upgrade().ok_or_else(|| IsolationError::Stopped {
            plugin: self.name.clone(),
        })?;
        Ok(Arc::new(IsolatedWorkType {
            sup,
            id,
            name,
            verify_signature,
            allow_runtime_params,
        }))
    }

    fn protocol(&self, reason: &str) -> IsolationError {
        IsolationError::Protocol {
            plugin: self.name.clone(),
            reason: reason.to_owned(),
        }
    }

    /// The running host, waiting up to [`DOWN_WAIT`] for one being restarted.
    fn conn(&self) -> Result<Arc<Conn>, IsolationError> {
        let deadline = Instant::now() + DOWN_WAIT;
        let mut state = lock(&self.state);
        loop {
            match &*state {
                HostState::Up(conn) => return Ok(Arc::clone(conn)),
                HostState::Stopped => {
                    return Err(IsolationError::Stopped {
                        plugin: self.name.clone(),
                    })
                }
                HostState::Down { reason } => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(IsolationError::Down {
                            plugin: self.name.clone(),
                            reason: reason.clone(),
                        });
                    }
                    state = self
                        .changed
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
            }
        }
    }

    /// Calls the running host (waiting briefly for one being restarted).
    fn call(
        &self,
        what: &'static str,
        request: impl FnOnce(u64) -> Request,
        fds: Vec<OwnedFd>,
    ) -> Result<ReplyBody, IsolationError> {
        let conn = self.conn()?;
        self.call_on(&conn, what, request, fds)
    }

    /// Sends a request to `conn` and waits for its answer, at most the call timeout;
    /// a host that does not answer in time is killed (and then restarted).
    fn call_on(
        &self,
        conn: &Conn,
        what: &'static str,
        request: impl FnOnce(u64) -> Request,
        fds: Vec<OwnedFd>,
    ) -> Result<ReplyBody, IsolationError> {
        let id = self.next_id();
        let (tx, rx) = sync_channel(1);
        lock(&conn.pending).insert(id, tx);
        // The host ends by setting `ended`, then failing what is pending: one of the
        // two sees this call.
        if let Some(reason) = lock(&conn.ended).clone() {
            lock(&conn.pending).remove(&id);
            return Err(IsolationError::Crashed {
                plugin: self.name.clone(),
                reason,
            });
        }
        let raw: Vec<_> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let sent = wire::send(&conn.sock, &request(id), &raw);
        // The host has its own copies now (or never will).
        drop(fds);
        if let Err(e) = sent {
            lock(&conn.pending).remove(&id);
            if e.kind() == std::io::ErrorKind::WouldBlock {
                conn.kill(format!(
                    "hung (its socket stayed full for {:?}), killed",
                    self.call_timeout
                ));
                return Err(IsolationError::Hung {
                    plugin: self.name.clone(),
                    call: what,
                    timeout: self.call_timeout,
                });
            }
            return Err(self.ended_error(&format!("sending {what}: {e}")));
        }
        match rx.recv_timeout(self.call_timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => {
                lock(&conn.pending).remove(&id);
                conn.kill(format!(
                    "hung (no answer to {what} within {:?}), killed",
                    self.call_timeout
                ));
                Err(IsolationError::Hung {
                    plugin: self.name.clone(),
                    call: what,
                    timeout: self.call_timeout,
                })
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.ended_error("the host ended")),
        }
    }

    /// The error for a call whose host ended: the crash reason once it is known.
    fn ended_error(&self, fallback: &str) -> IsolationError {
        match &*lock(&self.state) {
            HostState::Down { reason } => IsolationError::Crashed {
                plugin: self.name.clone(),
                reason: reason.clone(),
            },
            HostState::Stopped => IsolationError::Stopped {
                plugin: self.name.clone(),
            },
            HostState::Up(_) => self.protocol(fallback),
        }
    }

    /// Sends a request that has no answer; lost if the host is down.
    fn notify(&self, request: Request) {
        if let HostState::Up(conn) = &*lock(&self.state) {
            let _ = wire::send(&conn.sock, &request, &[]);
        }
    }

    /// Follows the host's events on a thread of its own until it ends.
    fn read_events(&self, conn: Arc<Conn>) {
        let me = self.me.clone();
        let name = self.name.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("plugin-host {}", self.name))
            .spawn(move || {
                loop {
                    let (bytes, _fds) = match wire::recv(&conn.sock) {
                        Ok(Some(msg)) => msg,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(plugin = %name, "reading from the plugin host: {e}");
                            conn.kill(format!("sent a bad message ({e}), killed"));
                            break;
                        }
                    };
                    let Some(sup) = me.upgrade() else { break };
                    match serde_json::from_slice::<Event>(&bytes) {
                        Ok(event) => sup.on_event(&conn, event),
                        Err(e) => {
                            tracing::warn!(plugin = %name, "bad message from the plugin host: {e}");
                            conn.kill(format!("sent a bad message ({e}), killed"));
                        }
                    }
                }
                let status = lock(&conn.child).wait();
                if let Some(sup) = me.upgrade() {
                    sup.host_ended(&conn, status);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(plugin = %self.name, "cannot follow the plugin host: {e}");
        }
    }

    fn on_event(&self, conn: &Conn, event: Event) {
        match event {
            Event::Reply { id, result } => {
                if let Some(tx) = lock(&conn.pending).remove(&id) {
                    let _ = tx.try_send(result.map_err(IsolationError::Call));
                }
            }
            Event::Progress {
                unit,
                state,
                detail,
                extra,
            } => {
                let state = match state {
                    abi::STATE_PENDING => UnitState::Pending,
                    abi::STATE_RUNNING => UnitState::Running,
                    abi::STATE_SUCCEEDED => UnitState::Succeeded,
                    abi::STATE_FAILED => UnitState::Failed,
                    abi::STATE_CANCELED => UnitState::Canceled,
                    other => {
                        tracing::warn!(plugin = %self.name, "progress with unknown state {other} ignored");
                        return;
                    }
                };
                let finished = !matches!(state, UnitState::Pending | UnitState::Running);
                let mut units = lock(&self.units);
                let slot = if finished {
                    units.remove(&unit)
                } else {
                    units.get(&unit).cloned()
                };
                drop(units);
                if let Some(slot) = slot {
                    slot.progress.send_replace(WorkProgress {
                        state,
                        detail,
                        extra,
                    });
                }
            }
            Event::Log { level, message } => log_line(&self.name, level, &message),
            Event::Hello { .. } | Event::LoadFailed { .. } => {
                tracing::warn!(plugin = %self.name, "unexpected greeting from the plugin host ignored");
            }
        }
    }

    /// The host ended: log why, fail what waited on it, schedule a restart.
    fn host_ended(&self, conn: &Arc<Conn>, status: std::io::Result<std::process::ExitStatus>) {
        let (short, long) = match (lock(&conn.kill_reason).clone(), &status) {
            (Some(reason), _) => ("hung".to_owned(), reason),
            (None, Ok(st)) => match (st.signal(), st.code()) {
                (Some(sig), _) => (
                    signal_name(sig),
                    format!("killed by signal {}", signal_name(sig)),
                ),
                (None, Some(code)) => (
                    format!("exit status {code}"),
                    format!("exited with status {code}"),
                ),
                (None, None) => ("ended".to_owned(), "ended".to_owned()),
            },
            (None, Err(e)) => ("ended".to_owned(), format!("ended ({e})")),
        };
        *lock(&conn.ended) = Some(short.clone());
        let pending: Vec<_> = lock(&conn.pending).drain().collect();
        for (_, tx) in pending {
            let _ = tx.try_send(Err(IsolationError::Crashed {
                plugin: self.name.clone(),
                reason: short.clone(),
            }));
        }
        let was_up = {
            let mut state = lock(&self.state);
            match &*state {
                HostState::Up(current) if Arc::ptr_eq(current, conn) => {
                    *state = HostState::Down {
                        reason: short.clone(),
                    };
                    true
                }
                HostState::Stopped => return,
                // A host still being brought up by `restart`, which sees it ended.
                _ => false,
            }
        };
        tracing::error!(
            plugin = %self.name,
            pid = conn.pid,
            "plugin {} ({}) crashed: {long}",
            self.name,
            self.path.display()
        );
        if !was_up {
            return;
        }
        // Units whose start was in flight are failed by their start call.
        lock(&self.units).retain(|_, slot| *lock(&slot.started));
        self.schedule_restart(conn.started.elapsed() >= STABLE, short);
    }

    /// Starts a new host after the back-off delay (reset first if the last host was
    /// stable).
    fn schedule_restart(&self, stable: bool, reason: String) {
        let delay = {
            let mut attempt = lock(&self.attempt);
            if stable {
                *attempt = 0;
            }
            let delay = BACKOFF_MIN
                .saturating_mul(1u32 << (*attempt).min(16))
                .min(BACKOFF_MAX);
            *attempt = attempt.saturating_add(1);
            delay
        };
        self.restart_after(delay, reason);
    }

    fn restart_after(&self, delay: Duration, reason: String) {
        let me = self.me.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("plugin-host {} restart", self.name))
            .spawn(move || {
                std::thread::sleep(delay);
                if let Some(sup) = me.upgrade() {
                    sup.restart(&reason);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(plugin = %self.name, "cannot restart the plugin host: {e}");
        }
    }

    /// Starts a new host, recreates the work types and re-attaches the units.
    fn restart(&self, reason: &str) {
        if !matches!(&*lock(&self.state), HostState::Down { .. }) {
            return;
        }
        let conn =
            match spawn_host(&self.path, &self.name, self.call_timeout).and_then(|(conn, hello)| {
                if hello.info.name == self.name {
                    Ok(conn)
                } else {
                    Err(self.protocol(&format!(
                        "the file now holds plugin {}, not {}",
                        hello.info.name, self.name
                    )))
                }
            }) {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::error!(plugin = %self.name, "plugin host not restarted: {e}");
                    let units: Vec<_> = lock(&self.units).drain().collect();
                    for (_, slot) in units {
                        slot.fail(format!(
                            "plugin host for {} crashed ({reason}) and could not be restarted: {e}",
                            self.name
                        ));
                    }
                    self.schedule_restart(false, reason.to_owned());
                    return;
                }
            };
        tracing::info!(plugin = %self.name, pid = conn.pid, "plugin host restarted");
        self.read_events(Arc::clone(&conn));
        let records: Vec<(u64, String, serde_json::Value)> = lock(&self.work_types)
            .iter()
            .map(|(id, r)| (*id, r.kind.clone(), r.config.clone()))
            .collect();
        for (id, kind, config) in records {
            let created = self.call_on(
                &conn,
                "create",
                |rid| Request::Create {
                    id: rid,
                    work_type: id,
                    kind: kind.clone(),
                    config,
                },
                Vec::new(),
            );
            if let Err(e) = created {
                tracing::error!(plugin = %self.name, section = %kind, "work type not recreated in the new plugin host: {e}");
            }
        }
        // Units whose start is still in flight belong to that call, not to this restart.
        let units: Vec<(u64, Arc<UnitSlot>)> = lock(&self.units)
            .iter()
            .filter(|(_, slot)| *lock(&slot.started))
            .map(|(id, slot)| (*id, Arc::clone(slot)))
            .collect();
        for (unit, slot) in units {
            let extra = slot.progress.borrow().extra.clone();
            let reattached = self.call_on(
                &conn,
                "reattach",
                |rid| Request::Reattach {
                    id: rid,
                    work_type: slot.work_type,
                    unit,
                    unit_id: slot.unit_id.clone(),
                    unit_dir: slot.unit_dir.display().to_string(),
                    extra,
                },
                Vec::new(),
            );
            match reattached {
                Ok(_) => {
                    tracing::info!(plugin = %self.name, unit = %slot.unit_id, "unit re-attached in the new plugin host")
                }
                Err(e) => {
                    tracing::warn!(plugin = %self.name, unit = %slot.unit_id, "unit not re-attached: {e}");
                    lock(&self.units).remove(&unit);
                    slot.fail(format!(
                        "plugin host for {} crashed ({reason}); not re-attached: {e}",
                        self.name
                    ));
                }
            }
        }
        let mut state = lock(&self.state);
        let ended = lock(&conn.ended).clone();
        match (&*state, ended) {
            (HostState::Down { .. }, Some(again)) => {
                *state = HostState::Down {
                    reason: again.clone(),
                };
                drop(state);
                self.schedule_restart(false, again);
                return;
            }
            (HostState::Down { .. }, None) => *state = HostState::Up(conn),
            _ => conn.kill("no longer needed".to_owned()),
        }
        self.changed.notify_all();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let state = std::mem::replace(
            &mut *self
                .state
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            HostState::Stopped,
        );
        if let HostState::Up(conn) = state {
            // Closing our end lets the host exit; killing it makes sure it does.
            let _ = lock(&conn.child).kill();
        }
    }
}

/// Starts `receptor plugin-host` for `path` and reads its greeting (at most
/// `call_timeout`).
fn spawn_host(
    path: &Path,
    label: &str,
    call_timeout: Duration,
) -> Result<(Arc<Conn>, Hello), IsolationError> {
    let spawn_err = |source| IsolationError::Spawn {
        path: path.to_path_buf(),
        source,
    };
    let exe = std::env::current_exe().map_err(spawn_err)?;
    let (ours, theirs) = wire::socketpair().map_err(spawn_err)?;
    let child_fd = theirs.as_raw_fd();
    let level = match tracing::level_filters::LevelFilter::current().into_level() {
        Some(tracing::Level::ERROR) => abi::LOG_ERROR,
        Some(tracing::Level::WARN) => abi::LOG_WARN,
        Some(tracing::Level::INFO) => abi::LOG_INFO,
        Some(tracing::Level::DEBUG) => abi::LOG_DEBUG,
        Some(tracing::Level::TRACE) => abi::LOG_TRACE,
        None => abi::LOG_ERROR,
    };
    let mut cmd = Command::new(exe);
    cmd.arg("plugin-host")
        .arg("--socket-fd")
        .arg(child_fd.to_string())
        .arg("--log-level")
        .arg(level.to_string())
        .arg(std::ffi::OsStr::from_bytes(path.as_os_str().as_bytes()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // Keeps the host's end of the socket open across exec (only in this child:
    // everywhere else it stays close-on-exec).
    let inherit = move || {
        // SAFETY: fcntl is async-signal-safe; F_GETFD only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(child_fd, libc::F_GETFD) };
        if flags < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: likewise; F_SETFD only changes its close-on-exec flag.
        if unsafe { libc::fcntl(child_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl,
    // which is async-signal-safe.
    unsafe {
        cmd.pre_exec(inherit);
    }
    let mut child = cmd.spawn().map_err(spawn_err)?;
    drop(theirs);
    let pid = child.id();
    let greeting = read_greeting(&ours, label, call_timeout);
    let hello = match greeting {
        Ok(hello) => hello,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    wire::set_send_timeout(&ours, call_timeout).map_err(spawn_err)?;
    Ok((
        Arc::new(Conn {
            sock: ours,
            child: Mutex::new(child),
            pid,
            started: Instant::now(),
            pending: Mutex::new(HashMap::new()),
            kill_reason: Mutex::new(None),
            ended: Mutex::new(None),
        }),
        hello,
    ))
}

/// Waits (at most `timeout`) for the host's greeting; log lines before it are logged.
fn read_greeting(sock: &OwnedFd, label: &str, timeout: Duration) -> Result<Hello, IsolationError> {
    let err = |reason: String| IsolationError::Protocol {
        plugin: label.to_owned(),
        reason,
    };
    let deadline = Instant::now() + timeout;
    loop {
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: pfd is one valid pollfd for the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready == 0 {
            return Err(err(format!("no greeting within {timeout:?}")));
        }
        let (bytes, _) = wire::recv(sock)
            .map_err(|e| err(format!("reading its greeting: {e}")))?
            .ok_or_else(|| err("ended before loading the plugin".to_owned()))?;
        match serde_json::from_slice::<Event>(&bytes) {
            Ok(Event::Hello {
                name,
                version,
                abi,
                claims,
                pid: _,
            }) => {
                return Ok(Hello {
                    info: PluginInfo {
                        path: PathBuf::from(label),
                        name,
                        version,
                        abi,
                    },
                    claims,
                })
            }
            Ok(Event::LoadFailed { message }) => return Err(err(message)),
            Ok(Event::Log { level, message }) => log_line(label, level, &message),
            Ok(_) => return Err(err("sent something else than its greeting".to_owned())),
            Err(e) => return Err(err(format!("bad greeting: {e}"))),
        }
    }
}

/// Logs a line the plugin host sent, under the plugin's name.
fn log_line(plugin: &str, level: u32, message: &str) {
    match level {
        abi::LOG_ERROR => tracing::error!(target: "receptor::plugin", %plugin, "{message}"),
        abi::LOG_WARN => tracing::warn!(target: "receptor::plugin", %plugin, "{message}"),
        abi::LOG_INFO => tracing::info!(target: "receptor::plugin", %plugin, "{message}"),
        abi::LOG_DEBUG => tracing::debug!(target: "receptor::plugin", %plugin, "{message}"),
        _ => tracing::trace!(target: "receptor::plugin", %plugin, "{message}"),
    }
}

/// A work type that runs in a plugin host.
struct IsolatedWorkType {
    sup: Arc<Supervisor>,
    id: u64,
    name: String,
    verify_signature: bool,
    allow_runtime_params: bool,
}

impl Drop for IsolatedWorkType {
    fn drop(&mut self) {
        lock(&self.sup.work_types).remove(&self.id);
        self.sup.notify(Request::Destroy { work_type: self.id });
    }
}

impl IsolatedWorkType {
    fn unit_call(
        &self,
        what: &'static str,
        unit_id: &str,
        unit_dir: &Path,
        progress: watch::Sender<WorkProgress>,
        request: impl FnOnce(u64, u64) -> Request,
        fds: Vec<OwnedFd>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError> {
        let sup = &self.sup;
        let unit = sup.next_id();
        let slot = Arc::new(UnitSlot {
            unit_id: unit_id.to_owned(),
            unit_dir: unit_dir.to_path_buf(),
            work_type: self.id,
            progress,
            started: Mutex::new(false),
        });
        // The host first (a new unit waits here while one is being restarted), then the
        // unit's slot: a crash from now on fails this call, not a later host's unit.
        let conn = sup
            .conn()
            .map_err(|e| WorkTypeError::Refused(e.to_string()))?;
        {
            let mut units = lock(&sup.units);
            if units.len() >= MAX_UNITS {
                return Err(WorkTypeError::Refused(format!(
                    "plugin {} runs {MAX_UNITS} units already",
                    sup.name
                )));
            }
            units.insert(unit, Arc::clone(&slot));
        }
        match sup.call_on(&conn, what, |rid| request(rid, unit), fds) {
            Ok(_) => {
                *lock(&slot.started) = true;
                Ok(Box::new(IsolatedUnit {
                    sup: Arc::clone(sup),
                    unit,
                }))
            }
            Err(e) => {
                lock(&sup.units).remove(&unit);
                tracing::warn!(plugin = %sup.name, work_type = %self.name, unit = unit_id, "{what} failed: {e}");
                Err(WorkTypeError::Refused(e.to_string()))
            }
        }
    }
}

impl WorkType for IsolatedWorkType {
    fn name(&self) -> &str {
        &self.name
    }

    fn verify_signature(&self) -> bool {
        self.verify_signature
    }

    fn allow_runtime_params(&self) -> bool {
        self.allow_runtime_params
    }

    fn start(
        &self,
        request: StartRequest,
        progress: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError> {
        let unit_dir = request
            .unit_dir
            .to_str()
            .ok_or_else(|| WorkTypeError::BadRequest("the unit folder is not UTF-8".to_owned()))?
            .to_owned();
        let fds = vec![OwnedFd::from(request.stdin), OwnedFd::from(request.stdout)];
        let (work_type, unit_id, params, extra_params) = (
            self.id,
            request.unit_id.clone(),
            request.params,
            request.extra_params,
        );
        self.unit_call(
            "start",
            &request.unit_id,
            &request.unit_dir,
            progress,
            |id, unit| Request::Start {
                id,
                work_type,
                unit,
                unit_id,
                unit_dir,
                params,
                extra_params,
            },
            fds,
        )
    }

    fn reattach(
        &self,
        request: ReattachRequest,
        progress: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError> {
        let unit_dir = request.unit_dir.display().to_string();
        let work_type = self.id;
        let (unit_id, extra) = (request.unit_id.clone(), request.extra);
        self.unit_call(
            "reattach",
            &request.unit_id,
            &request.unit_dir,
            progress,
            |id, unit| Request::Reattach {
                id,
                work_type,
                unit,
                unit_id,
                unit_dir,
                extra,
            },
            Vec::new(),
        )
    }
}

/// A unit running in a plugin host.
struct IsolatedUnit {
    sup: Arc<Supervisor>,
    unit: u64,
}

impl WorkHandle for IsolatedUnit {
    fn cancel(&self) -> Result<(), WorkTypeError> {
        let unit = self.unit;
        self.sup
            .call("cancel", |id| Request::Cancel { id, unit }, Vec::new())
            .map(|_| ())
            .map_err(|e| WorkTypeError::Refused(e.to_string()))
    }
}

impl Drop for IsolatedUnit {
    fn drop(&mut self) {
        lock(&self.sup.units).remove(&self.unit);
        self.sup.notify(Request::FreeUnit { unit: self.unit });
    }
}
