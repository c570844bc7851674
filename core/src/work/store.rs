//! The unit store: the one owner of the node's table of work units and of their folders.
//!
//! Every unit lives in `<datadir>/<node id>/<unit id>/` (folders 0700, files 0600):
//! `status` (see [`super::status`]), `stdin` (the payload) and `stdout` (the results).
//! The table in memory is loaded from those folders when the store opens, so units
//! survive a restart: units that were running are handed back to their work type
//! ([`WorkType::reattach`]) or marked failed, never left "Running" with nobody behind them.
//!
//! Each unit publishes its status in a `watch` channel. Only the store changes it, through
//! [`Unit::update`], which writes the status file (atomically) and then publishes the new
//! value; a per-unit mutex keeps those writes in order. While a work type runs a unit, a
//! monitor task turns its [`WorkProgress`] reports into status updates, and when the unit
//! ends it fsyncs `stdout` first, so a unit reported finished has its results on disk and
//! `StdoutSize` equal to the file's size.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::inotify::FileWatcher;
use super::status::{self, UnitStatus};
use super::unitid;
use super::worktype::{
    ReattachRequest, StartRequest, UnitState, WorkHandle, WorkProgress, WorkType, WorkTypeError,
};

/// Name of the payload file inside a unit folder.
pub const STDIN_FILE: &str = "stdin";
/// Name of the results file inside a unit folder.
pub const STDOUT_FILE: &str = "stdout";

/// How long `cancel` waits for a work type to confirm that a unit stopped.
pub const CANCEL_GRACE: Duration = Duration::from_secs(15);

/// Errors of the unit store; the texts are what control clients see after `ERROR: `.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    /// No work type of that name is configured.
    #[error("unknown work type {0}")]
    UnknownWorkType(String),
    /// No unit of that id.
    #[error("unknown work unit {0}")]
    UnknownUnit(String),
    /// A caller-supplied unit id that is taken.
    #[error("workunit ID {0} is already in use, cannot use the same workunit ID more than once")]
    DuplicateId(String),
    /// A caller-supplied unit id that cannot name a folder.
    #[error(transparent)]
    InvalidId(#[from] unitid::InvalidUnitId),
    /// Runtime `params` for a work type that does not allow them.
    #[error("extra params provided but not allowed")]
    ParamsNotAllowed,
    /// The work type refused to start the unit.
    #[error("{0}")]
    Start(String),
    /// The work type could not cancel the unit.
    #[error("{0}")]
    Cancel(String),
    /// A release that did not happen.
    #[error("cannot release work unit {id}: {reason}")]
    Release {
        /// The unit.
        id: String,
        /// Why.
        reason: String,
    },
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> WorkError {
    let context = context.into();
    move |source| WorkError::Io { context, source }
}

/// A work type as the node advertises it (`WorkCommands` of the control service ad).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkTypeInfo {
    /// Work type name.
    pub name: String,
    /// Whether submissions must be signed (`verifysignature`).
    pub secure: bool,
}

/// One unit of work.
pub struct Unit {
    id: String,
    dir: PathBuf,
    work_type: Option<Arc<dyn WorkType>>,
    status: watch::Sender<UnitStatus>,
    writer: tokio::sync::Mutex<()>,
    handle: Mutex<Option<Arc<dyn WorkHandle>>>,
    released: CancellationToken,
    watcher: Arc<FileWatcher>,
}

impl std::fmt::Debug for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unit")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl Unit {
    fn new(
        id: String,
        dir: PathBuf,
        work_type: Option<Arc<dyn WorkType>>,
        status: UnitStatus,
        watcher: Arc<FileWatcher>,
    ) -> Unit {
        Unit {
            id,
            dir,
            work_type,
            status: watch::Sender::new(status),
            writer: tokio::sync::Mutex::new(()),
            handle: Mutex::new(None),
            released: CancellationToken::new(),
            watcher,
        }
    }

    /// The store's file watcher (for following the results file).
    pub fn watcher(&self) -> &FileWatcher {
        &self.watcher
    }

    /// The unit id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The unit folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the payload file.
    pub fn stdin_path(&self) -> PathBuf {
        self.dir.join(STDIN_FILE)
    }

    /// Path of the results file.
    pub fn stdout_path(&self) -> PathBuf {
        self.dir.join(STDOUT_FILE)
    }

    /// The unit's work type, `None` if that type is not configured on this node.
    pub fn work_type(&self) -> Option<&Arc<dyn WorkType>> {
        self.work_type.as_ref()
    }

    /// The current status. For a unit that is not finished, `StdoutSize` is the size the
    /// results file has right now.
    pub fn status(&self) -> UnitStatus {
        let mut status = self.status.borrow().clone();
        if !status.is_final() {
            if let Ok(meta) = fs::metadata(self.stdout_path()) {
                status.stdout_size = i64::try_from(meta.len()).unwrap_or(i64::MAX);
            }
        }
        status
    }

    /// A receiver that sees every status change (the latest value wins).
    pub fn subscribe(&self) -> watch::Receiver<UnitStatus> {
        self.status.subscribe()
    }

    /// Whether the unit has been released (its folder is gone or going).
    pub fn is_released(&self) -> bool {
        self.released.is_cancelled()
    }

    /// Completes when the unit is released.
    pub async fn released(&self) {
        self.released.cancelled().await
    }

    /// `ExtraData` as replies show it, if not as stored: Go shows `"Unknown WorkType"`
    /// for units whose work type is not configured here; a work type may hide parts of
    /// its data ([`WorkType::shown_extra`], e.g. the secrets of remote units).
    pub fn extra_override(&self) -> Option<Value> {
        match &self.work_type {
            Some(wt) => wt.shown_extra(self.status.borrow().extra.as_ref()),
            None => Some(Value::String("Unknown WorkType".to_owned())),
        }
    }

    fn lock_handle(&self) -> MutexGuard<'_, Option<Arc<dyn WorkHandle>>> {
        // A poisoned lock only means a panic elsewhere while holding it; the value (an
        // Option of a handle) is still consistent.
        self.handle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn running_handle(&self) -> Option<Arc<dyn WorkHandle>> {
        self.lock_handle().clone()
    }

    /// Changes the status: applies `change` to the current value, writes the status file
    /// and publishes the result. Nothing happens once the unit is released. A failed file
    /// write is returned, but the new status is published anyway (the node keeps serving
    /// it from memory).
    pub async fn update(&self, change: impl FnOnce(&mut UnitStatus)) -> io::Result<()> {
        self.write(change, false).await
    }

    /// [`Unit::update`] with the status file on disk when it returns, as it is for final
    /// states: for a passing state that a power loss must not undo (a payload accepted).
    pub async fn update_durable(&self, change: impl FnOnce(&mut UnitStatus)) -> io::Result<()> {
        self.write(change, true).await
    }

    async fn write(&self, change: impl FnOnce(&mut UnitStatus), durable: bool) -> io::Result<()> {
        let _guard = self.writer.lock().await;
        if self.is_released() {
            return Ok(());
        }
        let mut next = self.status.borrow().clone();
        change(&mut next);
        let dir = self.dir.clone();
        let to_write = next.clone();
        let durable = durable || next.is_final();
        let written = tokio::task::spawn_blocking(move || {
            status::write_status_file(&dir, &to_write, durable)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        self.status.send_replace(next);
        written
    }

    /// Changes the status in memory only (for passing details a restart does not need).
    fn publish(&self, change: impl FnOnce(&mut UnitStatus)) {
        if !self.is_released() {
            self.status.send_modify(change);
        }
    }

    /// Makes a unit's end durable: fsyncs `stdout`, then writes the final status (with
    /// `StdoutSize` the size of the flushed file) durably and publishes it, all in one
    /// blocking call. Returns the results size, or `None` if the unit was released or had
    /// already ended. A results file that cannot be flushed is logged and its current
    /// size recorded.
    async fn record_end(&self, end: WorkProgress) -> io::Result<Option<i64>> {
        let _guard = self.writer.lock().await;
        if self.is_released() || self.status.borrow().is_final() {
            return Ok(None);
        }
        let mut next = self.status.borrow().clone();
        next.set(end.state, end.detail);
        next.extra = end.extra;
        let fallback = next.clone();
        let (dir, stdout, id) = (self.dir.clone(), self.stdout_path(), self.id.clone());
        let written = tokio::task::spawn_blocking(move || {
            let size = match flush_file(&stdout) {
                Ok(size) => size,
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => {
                    tracing::warn!(unit = %id, "cannot flush results: {e}");
                    stdout_size(&stdout)
                }
            };
            next.stdout_size = size;
            let written = status::write_status_file(&dir, &next, true);
            (next, written)
        })
        .await;
        match written {
            Ok((next, written)) => {
                let size = next.stdout_size;
                self.status.send_replace(next);
                written.map(|()| Some(size))
            }
            Err(e) => {
                // The blocking call panicked: publish the end anyway, so nobody waits for
                // a unit that is over.
                let mut next = fallback;
                next.stdout_size = stdout_size(&self.stdout_path());
                self.status.send_replace(next);
                Err(io::Error::other(e.to_string()))
            }
        }
    }

    async fn update_logged(&self, change: impl FnOnce(&mut UnitStatus)) {
        if let Err(e) = self.update(change).await {
            tracing::warn!(unit = %self.id, "cannot write status file: {e}");
        }
    }
}

/// The node's work units.
pub struct Workceptor {
    node_id: String,
    node_dir: PathBuf,
    work_types: Vec<Arc<dyn WorkType>>,
    /// Work types of the node itself (`remote`): not advertised, and their units are
    /// recovered by their owner, not by the store.
    internal_types: Vec<Arc<dyn WorkType>>,
    units: Mutex<HashMap<String, Arc<Unit>>>,
    watcher: Arc<FileWatcher>,
    /// Cancelled when the store is dropped (node shutdown): monitors stop recording;
    /// the units' processes keep running and are picked up by the next start.
    shutdown: CancellationToken,
}

impl Drop for Workceptor {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl std::fmt::Debug for Workceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workceptor")
            .field("node_id", &self.node_id)
            .field("node_dir", &self.node_dir)
            .finish_non_exhaustive()
    }
}

impl Workceptor {
    /// Opens the store of `node_id` under `datadir` (creating `<datadir>/<node_id>`), loads
    /// every unit found there and re-attaches or fails the ones that were running.
    pub async fn open(
        node_id: &str,
        datadir: &Path,
        work_types: Vec<Arc<dyn WorkType>>,
    ) -> Result<Arc<Workceptor>, WorkError> {
        Workceptor::open_with(node_id, datadir, work_types, Vec::new()).await
    }

    /// [`Workceptor::open`] with internal work types too (the `remote` type): units can
    /// be created with them, they are not listed by [`Workceptor::work_types`], and
    /// their units are loaded as they are on disk, for their owner to pick up.
    pub async fn open_with(
        node_id: &str,
        datadir: &Path,
        work_types: Vec<Arc<dyn WorkType>>,
        internal_types: Vec<Arc<dyn WorkType>>,
    ) -> Result<Arc<Workceptor>, WorkError> {
        let node_dir = datadir.join(node_id);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&node_dir)
            .map_err(io_error(format!("cannot create {}", node_dir.display())))?;
        let watcher =
            FileWatcher::new().map_err(io_error("cannot watch results files (inotify)"))?;
        let store = Arc::new(Workceptor {
            node_id: node_id.to_owned(),
            node_dir,
            work_types,
            internal_types,
            units: Mutex::new(HashMap::new()),
            watcher: Arc::new(watcher),
            shutdown: CancellationToken::new(),
        });
        store.load_all().await?;
        Ok(store)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// `<datadir>/<node id>`.
    pub fn node_dir(&self) -> &Path {
        &self.node_dir
    }

    /// The configured work types, in configuration order.
    pub fn work_types(&self) -> Vec<WorkTypeInfo> {
        self.work_types
            .iter()
            .map(|w| WorkTypeInfo {
                name: w.name().to_owned(),
                secure: w.verify_signature(),
            })
            .collect()
    }

    /// The work type called `name`.
    pub fn work_type(&self, name: &str) -> Option<Arc<dyn WorkType>> {
        self.internal_types
            .iter()
            .chain(self.work_types.iter())
            .find(|w| w.name() == name)
            .cloned()
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Arc<Unit>>> {
        // The map stays consistent even if a holder panicked: every change is one call.
        self.units
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The unit `id`.
    pub fn get(&self, id: &str) -> Result<Arc<Unit>, WorkError> {
        self.table()
            .get(id)
            .cloned()
            .ok_or_else(|| WorkError::UnknownUnit(id.to_owned()))
    }

    /// Every unit with its current status, sorted by id.
    pub fn list(&self) -> Vec<Arc<Unit>> {
        let mut units: Vec<Arc<Unit>> = self.table().values().cloned().collect();
        units.sort_by(|a, b| a.id.cmp(&b.id));
        units
    }

    /// Creates a unit of `work_type` (with the caller's id, or a fresh one): its folder, a
    /// `status` of `Pending / Waiting for Input Data` and an empty `stdin` file. The caller
    /// then fills `stdin` and calls [`Workceptor::start`] (or [`Workceptor::fail`]).
    pub async fn create(
        &self,
        work_type: &str,
        requested_id: Option<&str>,
    ) -> Result<Arc<Unit>, WorkError> {
        let wt = self
            .work_type(work_type)
            .ok_or_else(|| WorkError::UnknownWorkType(work_type.to_owned()))?;
        if let Some(id) = requested_id {
            unitid::validate(id)?;
        }
        let (id, dir) = loop {
            let id = match requested_id {
                Some(id) => id.to_owned(),
                None => unitid::generate(&self.node_id),
            };
            let taken = self.table().contains_key(&id);
            let dir = self.node_dir.join(&id);
            if !taken {
                match DirBuilder::new().mode(0o700).create(&dir) {
                    Ok(()) => break (id, dir),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_error(format!("cannot create {}", dir.display()))(e)),
                }
            }
            if requested_id.is_some() {
                return Err(WorkError::DuplicateId(id));
            }
        };
        let status = UnitStatus::new(UnitState::Pending, "Waiting for Input Data", work_type);
        let prepared = {
            let dir = dir.clone();
            let status = status.clone();
            tokio::task::spawn_blocking(move || -> io::Result<()> {
                status::create_private_file(&dir.join(STDIN_FILE))?;
                status::write_status_file(&dir, &status, false)
            })
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
        };
        if let Err(e) = prepared {
            let _ = fs::remove_dir_all(&dir);
            return Err(io_error(format!("cannot create unit in {}", dir.display()))(e));
        }
        let unit = Arc::new(Unit::new(
            id.clone(),
            dir,
            Some(wt),
            status,
            self.watcher.clone(),
        ));
        self.table().insert(id, unit.clone());
        Ok(unit)
    }

    /// Starts a unit whose payload is in place. `params` are the runtime `params`,
    /// `extra_params` every other submit parameter.
    pub async fn start(
        &self,
        unit: &Arc<Unit>,
        params: String,
        extra_params: BTreeMap<String, String>,
    ) -> Result<(), WorkError> {
        self.start_with_payload(unit, None, params, extra_params)
            .await
    }

    /// [`Workceptor::start`] that first writes `payload` (if any) to the unit's empty
    /// `stdin` file, in the same blocking call that starts the work type: a small
    /// payload held in memory costs no extra hand-off to a blocking thread.
    pub async fn start_with_payload(
        &self,
        unit: &Arc<Unit>,
        payload: Option<Vec<u8>>,
        params: String,
        extra_params: BTreeMap<String, String>,
    ) -> Result<(), WorkError> {
        let Some(wt) = unit.work_type.clone() else {
            return Err(WorkError::UnknownWorkType(unit.status().work_type));
        };
        // A passing detail: published, not written (the file still says Pending, which
        // is all a restart needs to know).
        unit.publish(|s| s.set(UnitState::Pending, "Starting Worker"));
        let (tx, rx) = watch::channel(WorkProgress {
            state: UnitState::Pending,
            detail: "Starting Worker".to_owned(),
            extra: None,
        });
        let (unit_id, unit_dir) = (unit.id.clone(), unit.dir.clone());
        let counters = crate::metrics::work_type(wt.name());
        let started = tokio::task::spawn_blocking(move || {
            if let Some(payload) = payload {
                write_payload(&unit_dir, &payload).map_err(StartFailure::Payload)?;
            }
            let (stdin, stdout) = open_unit_files(&unit_dir).map_err(StartFailure::Files)?;
            let request = StartRequest {
                unit_id,
                unit_dir,
                stdin,
                stdout,
                params,
                extra_params,
            };
            wt.start(request, tx).map_err(StartFailure::WorkType)
        })
        .await
        .unwrap_or_else(|e| {
            Err(StartFailure::WorkType(WorkTypeError::Panicked(
                e.to_string(),
            )))
        });
        match started {
            Ok(handle) => {
                counters.started.inc();
                *unit.lock_handle() = Some(Arc::from(handle));
                tokio::spawn(monitor(unit.clone(), rx, self.shutdown.clone()));
                Ok(())
            }
            Err(StartFailure::Payload(e)) => {
                let msg = e.to_string();
                self.fail(unit, format!("Error reading input data: {msg}"))
                    .await;
                Err(WorkError::Start(msg))
            }
            Err(StartFailure::Files(e)) => {
                let msg = e.to_string();
                self.fail(unit, format!("Error starting worker: {msg}"))
                    .await;
                Err(WorkError::Start(msg))
            }
            Err(StartFailure::WorkType(e)) => {
                let msg = e.to_string();
                self.fail(unit, format!("Error starting worker: {msg}"))
                    .await;
                Err(WorkError::Start(msg))
            }
        }
    }

    /// Marks a unit failed with `detail` (for errors before its work type runs it).
    pub async fn fail(&self, unit: &Unit, detail: String) {
        crate::metrics::work_type(&unit.status().work_type)
            .failed
            .inc();
        unit.update_logged(|s| s.set(UnitState::Failed, detail))
            .await;
    }

    /// Cancels a unit. A unit that is not running (finished, or still waiting for its
    /// payload) is left as it is, as in Go receptor.
    pub async fn cancel(&self, id: &str) -> Result<(), WorkError> {
        let unit = self.get(id)?;
        cancel_unit(&unit).await
    }

    /// Releases a unit: cancels it if it runs, removes its folder and forgets it. A plain
    /// release is refused if the unit cannot be stopped or its folder cannot be removed;
    /// `force` goes ahead regardless.
    pub async fn release(&self, id: &str, force: bool) -> Result<(), WorkError> {
        let unit = self.get(id)?;
        if let Err(e) = cancel_unit(&unit).await {
            if !force {
                return Err(WorkError::Release {
                    id: id.to_owned(),
                    reason: format!("it is still running and cannot be cancelled: {e}"),
                });
            }
        }
        let guard = unit.writer.lock().await;
        let dir = unit.dir.clone();
        let removed = tokio::task::spawn_blocking(move || remove_unit_dir(&dir))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
        if let Err(e) = removed {
            if !force {
                return Err(WorkError::Release {
                    id: id.to_owned(),
                    reason: format!("cannot remove {}: {e}", unit.dir.display()),
                });
            }
        }
        unit.released.cancel();
        drop(guard);
        unit.lock_handle().take();
        let mut table = self.table();
        if table.get(id).is_some_and(|u| Arc::ptr_eq(u, &unit)) {
            table.remove(id);
        }
        Ok(())
    }

    async fn load_all(self: &Arc<Self>) -> Result<(), WorkError> {
        let node_dir = self.node_dir.clone();
        let entries = tokio::task::spawn_blocking(move || -> io::Result<Vec<(String, PathBuf)>> {
            let mut found = Vec::new();
            for entry in fs::read_dir(&node_dir)? {
                let entry = entry?;
                if !entry.file_type()?.is_dir() {
                    continue;
                }
                if let Some(name) = entry.file_name().to_str() {
                    found.push((name.to_owned(), entry.path()));
                }
            }
            Ok(found)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
        .map_err(io_error(format!("cannot read {}", self.node_dir.display())))?;
        for (id, dir) in entries {
            let unit = self.load_unit(id.clone(), dir).await;
            self.table().insert(id, unit);
        }
        Ok(())
    }

    /// Loads one unit folder found at start-up and brings it to a state somebody owns.
    async fn load_unit(&self, id: String, dir: PathBuf) -> Arc<Unit> {
        let _ = fs::remove_file(dir.join(status::STATUS_TEMP_FILE));
        let loaded = status::read_status_file(&dir);
        let status = match &loaded {
            Ok(s) => s.clone(),
            Err(e) => UnitStatus::new(UnitState::Failed, format!("Failed to restart: {e}"), ""),
        };
        let wt = self.work_type(&status.work_type);
        let unit = Arc::new(Unit::new(
            id.clone(),
            dir.clone(),
            wt.clone(),
            status.clone(),
            self.watcher.clone(),
        ));
        if loaded.is_err() {
            unit.update_logged(|_| {}).await;
            return unit;
        }
        let Some(wt) = wt else {
            return unit;
        };
        if self.internal_types.iter().any(|t| Arc::ptr_eq(t, &wt)) {
            return unit;
        }
        match status.unit_state() {
            Some(UnitState::Pending) => {
                unit.update_logged(|s| s.set(UnitState::Failed, "Pending at restart"))
                    .await;
            }
            Some(UnitState::Running) => {
                let (tx, rx) = watch::channel(WorkProgress {
                    state: UnitState::Running,
                    detail: status.detail.clone(),
                    extra: status.extra.clone(),
                });
                let request = ReattachRequest {
                    unit_id: id,
                    unit_dir: dir,
                    extra: status.extra.clone(),
                };
                let reattached = tokio::task::spawn_blocking(move || wt.reattach(request, tx))
                    .await
                    .unwrap_or_else(|e| Err(WorkTypeError::Panicked(e.to_string())));
                match reattached {
                    Ok(handle) => {
                        *unit.lock_handle() = Some(Arc::from(handle));
                        tokio::spawn(monitor(unit.clone(), rx, self.shutdown.clone()));
                    }
                    Err(reason) => {
                        unit.update_logged(|s| {
                            s.set(UnitState::Failed, format!("Failed to restart: {reason}"))
                        })
                        .await;
                    }
                }
            }
            _ => {}
        }
        unit
    }
}

/// Why [`Workceptor::start_with_payload`] did not start a unit.
enum StartFailure {
    /// Writing the payload to `stdin` failed.
    Payload(io::Error),
    /// Opening `stdin` or `stdout` failed.
    Files(io::Error),
    /// The work type refused.
    WorkType(WorkTypeError),
}

fn write_payload(dir: &Path, payload: &[u8]) -> io::Result<()> {
    use std::io::Write;
    OpenOptions::new()
        .write(true)
        .open(dir.join(STDIN_FILE))?
        .write_all(payload)
}

fn open_unit_files(dir: &Path) -> io::Result<(File, File)> {
    let stdin = File::open(dir.join(STDIN_FILE))?;
    let stdout = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(dir.join(STDOUT_FILE))?;
    Ok((stdin, stdout))
}

fn remove_unit_dir(dir: &Path) -> io::Result<()> {
    let mut last = Ok(());
    for _ in 0..3 {
        last = match fs::remove_dir_all(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
        if last.is_ok() {
            if let Some(parent) = dir.parent() {
                let _ = status::sync_dir(parent);
            }
            return Ok(());
        }
    }
    last
}

async fn cancel_unit(unit: &Arc<Unit>) -> Result<(), WorkError> {
    let Some(handle) = unit.running_handle() else {
        return Ok(());
    };
    let mut rx = unit.subscribe();
    let cancelled = tokio::task::spawn_blocking(move || handle.cancel())
        .await
        .unwrap_or_else(|e| Err(WorkTypeError::Panicked(e.to_string())));
    cancelled.map_err(|e| WorkError::Cancel(e.to_string()))?;
    let ended = tokio::time::timeout(CANCEL_GRACE, rx.wait_for(UnitStatus::is_final))
        .await
        .is_ok_and(|r| r.is_ok());
    if !ended {
        tracing::warn!(unit = %unit.id, "work type did not confirm the cancel; marking it canceled");
        unit.lock_handle().take();
        unit.update_logged(|s| {
            if !s.is_final() {
                s.set(UnitState::Canceled, "Canceled");
            }
        })
        .await;
    }
    Ok(())
}

/// Follows a running unit's progress reports until it ends, and records them.
async fn monitor(
    unit: Arc<Unit>,
    mut progress: watch::Receiver<WorkProgress>,
    shutdown: CancellationToken,
) {
    loop {
        let changed = tokio::select! {
            changed = progress.changed() => changed,
            () = unit.released.cancelled() => return,
            () = shutdown.cancelled() => return,
        };
        let latest = progress.borrow_and_update().clone();
        if latest.state.is_final() {
            finish(&unit, latest).await;
            return;
        }
        if changed.is_err() {
            finish(
                &unit,
                WorkProgress {
                    state: UnitState::Failed,
                    detail: "work type stopped without reporting an end state".to_owned(),
                    extra: latest.extra,
                },
            )
            .await;
            return;
        }
        let size = stdout_size(&unit.stdout_path());
        unit.update_logged(|s| {
            if !s.is_final() {
                s.set(latest.state, latest.detail);
                s.extra = latest.extra;
                s.stdout_size = size;
            }
        })
        .await;
    }
}

/// Records a unit's end: results flushed to disk first, then the final status with the
/// size of the flushed file, both in one blocking call under the unit's writer lock.
async fn finish(unit: &Arc<Unit>, end: WorkProgress) {
    unit.lock_handle().take();
    let failed = end.state == UnitState::Failed;
    let work_type = unit.status.borrow().work_type.clone();
    match unit.record_end(end).await {
        Ok(Some(size)) => crate::metrics::node()
            .result_bytes_written
            .add(u64::try_from(size).unwrap_or(0)),
        Ok(None) => {}
        Err(e) => tracing::warn!(unit = %unit.id, "cannot write status file: {e}"),
    }
    if failed {
        crate::metrics::work_type(&work_type).failed.inc();
    }
}

/// Fsyncs a file and returns its size.
fn flush_file(path: &Path) -> io::Result<i64> {
    let file = File::open(path)?;
    file.sync_all()?;
    Ok(i64::try_from(file.metadata()?.len()).unwrap_or(i64::MAX))
}

fn stdout_size(path: &Path) -> i64 {
    fs::metadata(path)
        .map(|m| i64::try_from(m.len()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
