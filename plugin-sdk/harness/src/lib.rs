//! # receptor-plugin-harness
//!
//! Drives a receptor work-type plugin, the built shared library, through the same C ABI
//! the node uses, with no node: units get folders in a temporary directory, a payload
//! file as stdin and a results file as stdout, and the harness checks what the contract
//! asks of a work type:
//!
//! * every unit reports exactly one final state (Succeeded, Failed or Canceled), last;
//! * the plugin releases each unit's progress context exactly once, and reports nothing
//!   after that;
//! * every descriptor the unit was given is closed once the unit has ended;
//! * a cancelled unit ends within a bound;
//! * after a restart (the work type destroyed and created again), re-attaching to a unit
//!   with its saved `ExtraData` either works or says it cannot, with a message;
//! * bad input (a section that is not a map, garbage `ExtraData`) is an error, never a
//!   panic.
//!
//! Use it from a plugin's tests (as a dev-dependency):
//!
//! ```no_run
//! use receptor_plugin_harness::Harness;
//!
//! let mut h = Harness::load("target/debug/libmy_plugin.so", r#"{"worktype": "mine"}"#)
//!     .expect("the plugin loads");
//! let unit = h.run_unit(b"payload").expect("the unit runs");
//! assert_eq!(unit.stdout, b"payload");
//! let checks = h.check_all();
//! assert!(checks.iter().all(|c| c.passed), "{checks:#?}");
//! ```
//!
//! or from the command line, which prints a pass/fail list:
//!
//! ```text
//! receptor-plugin-harness target/debug/libmy_plugin.so --section '{"worktype": "mine"}'
//! ```
//!
//! A library from which a work type was created is never unloaded (its threads may
//! still run), as in the node.

mod host;

use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use receptor_plugin_sdk::{abi, layout, UnitState};
use serde_json::Value;

pub use host::Report;

/// Why the harness cannot go on with a plugin.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The file is not a loadable library.
    #[error("{path}: cannot load: {message}")]
    Load {
        /// The file.
        path: PathBuf,
        /// The loader's reason.
        message: String,
    },
    /// The library does not export the ABI 1 entry point.
    #[error("{path}: no {symbol} symbol (not a receptor plugin of ABI major 1)")]
    NoEntry {
        /// The file.
        path: PathBuf,
        /// The symbol looked for.
        symbol: &'static str,
    },
    /// The descriptor breaks the ABI's rules.
    #[error("{path}: bad descriptor: {reason}")]
    Descriptor {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The plugin has no work-type section of that kind (or none at all).
    #[error("{path}: no work-type section{}; it claims: {claims}", .kind.as_ref().map(|k| format!(" {k}")).unwrap_or_default())]
    NoWorkType {
        /// The file.
        path: PathBuf,
        /// The kind asked for.
        kind: Option<String>,
        /// What it claims.
        claims: String,
    },
    /// The plugin claims several work-type sections: say which.
    #[error("{path}: several work-type sections ({kinds}): choose one with --kind")]
    SeveralWorkTypes {
        /// The file.
        path: PathBuf,
        /// The work-type kinds it claims.
        kinds: String,
    },
    /// The section given is not JSON.
    #[error("the section is not JSON: {0}")]
    Section(#[from] serde_json::Error),
    /// A call into the plugin failed.
    #[error("{call} failed{}: {message}", if *.panicked { " (the plugin panicked)" } else { "" })]
    Call {
        /// The vtable function.
        call: &'static str,
        /// The plugin's message.
        message: String,
        /// Whether the status was `STATUS_PANIC`.
        panicked: bool,
    },
    /// A file of the unit could not be made.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

/// One check of [`Harness::check_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether the plugin passed.
    pub passed: bool,
    /// What was seen.
    pub detail: String,
}

/// What happened to one unit.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The unit ID.
    pub unit_id: String,
    /// The unit's folder (`stdin`, `stdout` inside).
    pub dir: PathBuf,
    /// Every progress report, in order.
    pub reports: Vec<Report>,
    /// The final state, if one was reported.
    pub final_state: Option<UnitState>,
    /// The detail of the last report.
    pub detail: String,
    /// The last `ExtraData` reported (what the node saves in the unit's `status`).
    pub extra: Option<Value>,
    /// The results file's content.
    pub stdout: Vec<u8>,
    /// From start (or re-attach) to the end of the unit.
    pub elapsed: Duration,
    /// From the cancel call to the end, for a cancelled unit.
    pub cancel_latency: Option<Duration>,
    /// Breaches of the contract seen on this unit (empty: none).
    pub problems: Vec<String>,
}

impl Outcome {
    /// Whether the unit kept the contract.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What re-attaching after a restart gave.
#[derive(Debug, Clone)]
pub enum Reattach {
    /// The work type followed the unit to its end.
    Resumed(Outcome),
    /// The work type said it cannot (the node would mark the unit failed with this).
    Refused {
        /// The message.
        message: String,
        /// Whether it was a panic rather than an error.
        panicked: bool,
    },
}

/// The validated functions of a work-type vtable.
#[derive(Clone, Copy)]
struct WorkTypeFns {
    create: unsafe extern "C" fn(
        *mut c_void,
        abi::Str,
        *const abi::ErrorSink,
        *mut abi::WorkTypeInfo,
        *mut *mut c_void,
    ) -> abi::Status,
    start: unsafe extern "C" fn(
        *mut c_void,
        *const abi::StartRequest,
        *const abi::Progress,
        *const abi::ErrorSink,
        *mut *mut c_void,
    ) -> abi::Status,
    reattach: unsafe extern "C" fn(
        *mut c_void,
        *const abi::ReattachRequest,
        *const abi::Progress,
        *const abi::ErrorSink,
        *mut *mut c_void,
    ) -> abi::Status,
    cancel: unsafe extern "C" fn(*mut c_void, *const abi::ErrorSink) -> abi::Status,
    free_unit: unsafe extern "C" fn(*mut c_void),
    destroy: unsafe extern "C" fn(*mut c_void),
}

/// A unit started and not yet ended.
struct Running {
    id: String,
    dir: PathBuf,
    progress: &'static host::ProgressCtx,
    handle: *mut c_void,
    started: Instant,
}

/// A loaded work-type plugin with one configured work type.
pub struct Harness {
    path: PathBuf,
    plugin_name: String,
    plugin_version: String,
    abi: (u32, u32),
    kind: String,
    claim_ctx: *mut c_void,
    fns: WorkTypeFns,
    section: String,
    work_type: *mut c_void,
    work_type_name: String,
    log: &'static host::LogBook,
    root: tempfile::TempDir,
    units: u32,
    unit_limit: Duration,
    cancel_limit: Duration,
    fd_limit: Duration,
}

/// How long a unit may take by default.
const UNIT_LIMIT: Duration = Duration::from_secs(30);
/// How long a cancelled unit may take to end by default.
const CANCEL_LIMIT: Duration = Duration::from_secs(5);
/// How long descriptors may stay open after a unit ended (the plugin's thread may close
/// them just after its final report).
const FD_LIMIT: Duration = Duration::from_secs(5);
/// The payload of the units [`Harness::check_all`] runs.
const CHECK_PAYLOAD: &[u8] = b"receptor-plugin-harness payload\n";

/// The ABI's error slot and sink for one call.
fn status_error(call: &'static str, status: abi::Status, slot: &host::ErrorSlot) -> HarnessError {
    let message = slot.take().unwrap_or_else(|| match status {
        abi::STATUS_PANIC => "the plugin panicked".to_owned(),
        s => format!("no message (status {s})"),
    });
    HarnessError::Call {
        call,
        message,
        panicked: status == abi::STATUS_PANIC,
    }
}

impl Harness {
    /// Loads the plugin at `path` and creates a work type from `section_json` (the
    /// section's settings as JSON, e.g. `{"worktype": "mine"}`) with the plugin's only
    /// work-type section kind.
    pub fn load(path: impl AsRef<Path>, section_json: &str) -> Result<Harness, HarnessError> {
        Harness::load_kind(path, None, section_json)
    }

    /// As [`Harness::load`], with the section kind named (for a plugin claiming several
    /// work-type kinds).
    pub fn load_kind(
        path: impl AsRef<Path>,
        kind: Option<&str>,
        section_json: &str,
    ) -> Result<Harness, HarnessError> {
        let path = path.as_ref().to_path_buf();
        let section: Value = serde_json::from_str(section_json)?;
        let section = serde_json::to_string(&lower_case_keys(section))?;
        // SAFETY: loading a library runs its initialisers: that is what the user asked
        // for by naming the file.
        let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| HarnessError::Load {
            path: path.clone(),
            message: e.to_string(),
        })?;
        // Never unloaded: a work type's threads may outlive any handle.
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        let symbol = format!("{}\0", abi::ENTRY_SYMBOL_V1);
        // SAFETY: the symbol has the ABI's entry signature (the ABI's contract).
        let entry: libloading::Symbol<'static, abi::EntryFnV1> =
            unsafe { lib.get(symbol.as_bytes()) }.map_err(|_| HarnessError::NoEntry {
                path: path.clone(),
                symbol: abi::ENTRY_SYMBOL_V1,
            })?;
        let (api, log) = host::host_api();
        let bad = |reason: String| HarnessError::Descriptor {
            path: path.clone(),
            reason,
        };
        // SAFETY: the entry point with a host API valid for the life of the process.
        let desc_ptr = unsafe { entry(api) };
        if desc_ptr.is_null() {
            return Err(bad(
                "the entry point returned null (refused to initialise)".into()
            ));
        }
        // SAFETY: the plugin's descriptor, valid while the library is loaded.
        let desc = unsafe { layout::read_prefix(desc_ptr) }.map_err(|e| bad(e.to_string()))?;
        if desc.abi_major != abi::ABI_MAJOR {
            return Err(bad(format!(
                "built for ABI {}.{}, the harness speaks {}.{}",
                desc.abi_major,
                desc.abi_minor,
                abi::ABI_MAJOR,
                abi::ABI_MINOR
            )));
        }
        // SAFETY: a string of the descriptor, valid while the library is loaded.
        let plugin_name = unsafe { desc.name.to_string_lossy() };
        // SAFETY: likewise.
        let plugin_version = unsafe { desc.version.to_string_lossy() };
        if desc.claim_count > 0 && desc.claims.is_null() {
            return Err(bad("claims is null".into()));
        }
        let mut all = Vec::new();
        let mut work_types = Vec::new();
        for i in 0..desc.claim_count {
            // SAFETY: `claim_count` pointers at `claims` (the ABI's contract).
            let claim_ptr = unsafe { *desc.claims.wrapping_add(i) };
            // SAFETY: a claim of at least its struct_size bytes.
            let claim =
                unsafe { layout::read_prefix(claim_ptr) }.map_err(|e| bad(e.to_string()))?;
            // SAFETY: borrowed from the descriptor.
            let name = unsafe { claim.section_kind.to_string_lossy() };
            all.push(name.clone());
            if claim.claim_type == abi::CLAIM_WORK_TYPE {
                work_types.push((name, claim));
            }
        }
        let claims = if all.is_empty() {
            "nothing".to_owned()
        } else {
            all.join(", ")
        };
        let chosen = match kind {
            Some(kind) => work_types
                .into_iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(kind))
                .ok_or_else(|| HarnessError::NoWorkType {
                    path: path.clone(),
                    kind: Some(kind.to_owned()),
                    claims: claims.clone(),
                })?,
            None if work_types.len() > 1 => {
                return Err(HarnessError::SeveralWorkTypes {
                    path: path.clone(),
                    kinds: work_types
                        .iter()
                        .map(|(k, _)| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
            None => work_types
                .into_iter()
                .next()
                .ok_or_else(|| HarnessError::NoWorkType {
                    path: path.clone(),
                    kind: None,
                    claims: claims.clone(),
                })?,
        };
        let (kind, claim) = chosen;
        // SAFETY: a vtable of at least its struct_size bytes (the ABI's contract).
        let vt = unsafe { layout::read_prefix(claim.work_type) }.map_err(|e| bad(e.to_string()))?;
        let fns = match (
            vt.create,
            vt.start,
            vt.reattach,
            vt.cancel,
            vt.free_unit,
            vt.destroy,
        ) {
            (
                Some(create),
                Some(start),
                Some(reattach),
                Some(cancel),
                Some(free_unit),
                Some(destroy),
            ) => WorkTypeFns {
                create,
                start,
                reattach,
                cancel,
                free_unit,
                destroy,
            },
            _ => return Err(bad(format!("{kind}: a work-type function is null"))),
        };
        let root = tempfile::Builder::new()
            .prefix("receptor-plugin-harness")
            .tempdir()
            .map_err(|source| HarnessError::Io {
                what: "creating the units' folder".to_owned(),
                source,
            })?;
        let mut harness = Harness {
            path,
            plugin_name,
            plugin_version,
            abi: (desc.abi_major, desc.abi_minor),
            kind,
            claim_ctx: claim.claim_ctx,
            fns,
            section,
            work_type: std::ptr::null_mut(),
            work_type_name: String::new(),
            log,
            root,
            units: 0,
            unit_limit: UNIT_LIMIT,
            cancel_limit: CANCEL_LIMIT,
            fd_limit: FD_LIMIT,
        };
        harness.create()?;
        Ok(harness)
    }

    /// Sets how long a unit may run before the harness gives up on it (default 30 s).
    pub fn with_unit_limit(mut self, limit: Duration) -> Harness {
        self.unit_limit = limit;
        self
    }

    /// Sets how soon a cancelled unit must end (default 5 s).
    pub fn with_cancel_limit(mut self, limit: Duration) -> Harness {
        self.cancel_limit = limit;
        self
    }

    /// Sets how long a unit's descriptors may stay open after its final report
    /// (default 5 s).
    pub fn with_fd_limit(mut self, limit: Duration) -> Harness {
        self.fd_limit = limit;
        self
    }

    /// The plugin's name, version and ABI version, and the file.
    pub fn describe(&self) -> String {
        format!(
            "plugin {} {} (ABI {}.{}) from {}, section {}, work type {}",
            self.plugin_name,
            self.plugin_version,
            self.abi.0,
            self.abi.1,
            self.path.display(),
            self.kind,
            self.work_type_name
        )
    }

    /// The section kind driven.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The work type's name (what clients submit to).
    pub fn work_type_name(&self) -> &str {
        &self.work_type_name
    }

    /// What the plugin logged so far (`level: message`).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lines()
    }

    /// Calls `create` with the section.
    fn create(&mut self) -> Result<(), HarnessError> {
        let (work_type, name) = self.create_with(&self.section.clone())?;
        self.work_type = work_type;
        self.work_type_name = name;
        Ok(())
    }

    fn create_with(&self, section: &str) -> Result<(*mut c_void, String), HarnessError> {
        let slot = host::ErrorSlot::new();
        let sink = slot.sink();
        let mut info = abi::WorkTypeInfo {
            struct_size: std::mem::size_of::<abi::WorkTypeInfo>(),
            name: abi::Str::EMPTY,
            flags: 0,
            reserved: 0,
        };
        let mut out: *mut c_void = std::ptr::null_mut();
        // SAFETY: the plugin's create with its claim context, a section borrowed for the
        // call, a sink and out-pointers valid for the call.
        let status = unsafe {
            (self.fns.create)(
                self.claim_ctx,
                abi::Str::new(section),
                &sink,
                &mut info,
                &mut out,
            )
        };
        if status != abi::STATUS_OK {
            return Err(status_error("create", status, &slot));
        }
        // SAFETY: the name is the plugin's, valid while the work type lives.
        let name = unsafe { info.name.to_string_lossy() };
        Ok((out, name))
    }

    /// Destroys the current work type (a node stopping).
    fn destroy(&mut self) {
        if !self.work_type.is_null() {
            // SAFETY: a work type of this vtable whose unit handles are all freed.
            unsafe { (self.fns.destroy)(self.work_type) };
            self.work_type = std::ptr::null_mut();
        }
    }

    /// A fresh unit ID and folder with `payload` as its `stdin`.
    fn new_unit(&mut self, payload: &[u8]) -> Result<(String, PathBuf), HarnessError> {
        self.units += 1;
        let id = format!("harness{:04}", self.units);
        let dir = self.root.path().join(&id);
        let io = |what: &str| {
            let what = format!("{what} in {}", dir.display());
            move |source| HarnessError::Io { what, source }
        };
        std::fs::create_dir(&dir).map_err(io("creating the unit folder"))?;
        std::fs::write(dir.join("stdin"), payload).map_err(io("writing stdin"))?;
        Ok((id, dir))
    }

    /// Starts a unit with `payload` (and runtime `params`, empty for none).
    fn start(&mut self, payload: &[u8], params: &str) -> Result<Running, HarnessError> {
        let (id, dir) = self.new_unit(payload)?;
        let io = |what: &'static str| {
            let what = format!("opening {what} of {id}");
            move |source| HarnessError::Io { what, source }
        };
        let stdin = File::open(dir.join("stdin")).map_err(io("stdin"))?;
        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stdout"))
            .map_err(io("stdout"))?;
        let progress = host::ProgressCtx::new();
        let progress_abi = progress.abi();
        let dir_bytes = dir.as_os_str().as_bytes();
        let request = abi::StartRequest {
            struct_size: std::mem::size_of::<abi::StartRequest>(),
            unit_id: abi::Str::new(&id),
            unit_dir: abi::Str::from_bytes(dir_bytes),
            stdin_fd: stdin.into_raw_fd(),
            stdout_fd: stdout.into_raw_fd(),
            params: abi::Str::new(params),
            extra_params_json: abi::Str::new("{}"),
        };
        let slot = host::ErrorSlot::new();
        let sink = slot.sink();
        let mut handle: *mut c_void = std::ptr::null_mut();
        let started = Instant::now();
        // SAFETY: a live work type of this vtable; the request, progress and sink are
        // valid for the call; the descriptors and the progress reference go to the plugin.
        let status = unsafe {
            (self.fns.start)(self.work_type, &request, &progress_abi, &sink, &mut handle)
        };
        if status != abi::STATUS_OK {
            return Err(status_error("start", status, &slot));
        }
        Ok(Running {
            id,
            dir,
            progress,
            handle,
            started,
        })
    }

    /// Runs one unit with `payload` to its end and returns what happened.
    pub fn run_unit(&mut self, payload: &[u8]) -> Result<Outcome, HarnessError> {
        self.run_unit_with_params(payload, "")
    }

    /// As [`Harness::run_unit`], with runtime `params` (as `work submit` passes them).
    pub fn run_unit_with_params(
        &mut self,
        payload: &[u8],
        params: &str,
    ) -> Result<Outcome, HarnessError> {
        let running = self.start(payload, params)?;
        Ok(self.finish(running, None))
    }

    /// Starts a unit with `payload`, cancels it as soon as it reported anything (or at
    /// once if `at_once`), and returns what happened; the outcome has a problem if it did
    /// not end within the cancel limit.
    pub fn cancel_unit(&mut self, payload: &[u8], at_once: bool) -> Result<Outcome, HarnessError> {
        let running = self.start(payload, "")?;
        if !at_once {
            drop(
                running
                    .progress
                    .wait_until(self.unit_limit, |log| !log.reports.is_empty()),
            );
        }
        let slot = host::ErrorSlot::new();
        let sink = slot.sink();
        let asked = Instant::now();
        // SAFETY: a live unit handle of this vtable; the sink is valid for the call.
        let status = unsafe { (self.fns.cancel)(running.handle, &sink) };
        let mut outcome = self.finish(running, Some(asked));
        if status == abi::STATUS_PANIC {
            outcome
                .problems
                .push("cancel panicked instead of returning an error".to_owned());
        }
        Ok(outcome)
    }

    /// Waits for the end of a unit, checks it, frees its handle.
    fn finish(&mut self, running: Running, cancel_asked: Option<Instant>) -> Outcome {
        let limit = if cancel_asked.is_some() {
            self.cancel_limit
        } else {
            self.unit_limit
        };
        let ended = |log: &host::ProgressLog| {
            log.releases > 0 && log.reports.iter().any(|r| is_final(r.state))
        };
        let mut problems = Vec::new();
        let (reports, ended_ok, releases, after_release, bad_extra) = {
            let log = running.progress.wait_until(limit, ended);
            (
                log.reports.clone(),
                ended(&log),
                log.releases,
                log.after_release,
                log.bad_extra.clone(),
            )
        };
        let elapsed = running.started.elapsed();
        let cancel_latency = cancel_asked.map(|t| t.elapsed());
        let finals = reports.iter().filter(|r| is_final(r.state)).count();
        if !ended_ok {
            problems.push(match (finals, releases) {
                (0, _) => format!("no final state within {limit:?}"),
                (_, 0) => format!("the progress context was not released within {limit:?}"),
                _ => format!("did not end within {limit:?}"),
            });
        }
        if finals > 1 {
            let states: Vec<String> = reports
                .iter()
                .filter(|r| is_final(r.state))
                .map(|r| format!("{} ({})", state_name(r.state), r.detail))
                .collect();
            problems.push(format!(
                "{finals} final states reported: {}",
                states.join(", ")
            ));
        }
        if let Some(last_final) = reports.iter().rposition(|r| is_final(r.state)) {
            if last_final + 1 < reports.len() {
                problems.push(format!(
                    "reported {} after its final state",
                    state_name(reports[reports.len() - 1].state)
                ));
            }
        }
        if let Some(bad) = reports
            .iter()
            .find(|r| UnitState::from_abi(r.state).is_none())
        {
            problems.push(format!("reported an unknown state code {}", bad.state));
        }
        if releases > 1 {
            problems.push(format!("released its progress context {releases} times"));
        }
        if after_release > 0 {
            problems.push(format!(
                "{after_release} report(s) after releasing progress"
            ));
        }
        for extra in bad_extra {
            problems.push(format!("ExtraData is not JSON: {extra:?}"));
        }
        if ended_ok {
            if let Some(open) = fds_left_open(&running.dir, self.fd_limit) {
                problems.push(format!(
                    "descriptors still open after the unit ended: {open}"
                ));
            }
        }
        // A late cancel must be harmless (no panic); then the handle goes.
        let slot = host::ErrorSlot::new();
        let sink = slot.sink();
        // SAFETY: a unit handle of this vtable not yet freed; the sink lives for the call.
        let status = unsafe { (self.fns.cancel)(running.handle, &sink) };
        if status == abi::STATUS_PANIC {
            problems.push("cancel after the end panicked".to_owned());
        }
        // SAFETY: freed once; no call uses it afterwards.
        unsafe { (self.fns.free_unit)(running.handle) };
        let last = reports.last();
        Outcome {
            unit_id: running.id,
            stdout: std::fs::read(running.dir.join("stdout")).unwrap_or_default(),
            dir: running.dir,
            final_state: reports
                .iter()
                .rev()
                .find(|r| is_final(r.state))
                .and_then(|r| UnitState::from_abi(r.state)),
            detail: last.map(|r| r.detail.clone()).unwrap_or_default(),
            extra: reports.iter().rev().find_map(|r| r.extra.clone()),
            reports,
            elapsed,
            cancel_latency,
            problems,
        }
    }

    /// Simulates a node restart around a unit: starts a unit with `payload`, waits for
    /// its first report (`while_running`) or its end, frees its handle and destroys the
    /// work type, creates the work type again from the same section, and re-attaches to
    /// the unit with the `ExtraData` it last reported.
    pub fn restart_and_reattach(
        &mut self,
        payload: &[u8],
        while_running: bool,
    ) -> Result<Reattach, HarnessError> {
        let running = self.start(payload, "")?;
        let (id, dir, extra) = if while_running {
            let extra = {
                let log = running
                    .progress
                    .wait_until(self.unit_limit, |log| !log.reports.is_empty());
                log.reports.iter().rev().find_map(|r| r.extra.clone())
            };
            // SAFETY: freed once; the unit itself goes on, as in a node that stopped.
            unsafe { (self.fns.free_unit)(running.handle) };
            (running.id, running.dir, extra)
        } else {
            let outcome = self.finish(running, None);
            (outcome.unit_id, outcome.dir, outcome.extra)
        };
        self.destroy();
        self.create()?;
        Ok(self.reattach(&id, &dir, extra.as_ref()))
    }

    /// Re-attaches the current work type to unit `id` in `dir` with `extra` as its saved
    /// `ExtraData`.
    pub fn reattach(&mut self, id: &str, dir: &Path, extra: Option<&Value>) -> Reattach {
        let extra_text = extra.map(Value::to_string).unwrap_or_default();
        let progress = host::ProgressCtx::new();
        let progress_abi = progress.abi();
        let request = abi::ReattachRequest {
            struct_size: std::mem::size_of::<abi::ReattachRequest>(),
            unit_id: abi::Str::new(id),
            unit_dir: abi::Str::from_bytes(dir.as_os_str().as_bytes()),
            extra_json: abi::Str::new(&extra_text),
        };
        let slot = host::ErrorSlot::new();
        let sink = slot.sink();
        let mut handle: *mut c_void = std::ptr::null_mut();
        let started = Instant::now();
        // SAFETY: a live work type; request, progress and sink are valid for the call; the
        // progress reference goes to the plugin.
        let status = unsafe {
            (self.fns.reattach)(self.work_type, &request, &progress_abi, &sink, &mut handle)
        };
        if status != abi::STATUS_OK {
            let message = slot.take().unwrap_or_default();
            return Reattach::Refused {
                message,
                panicked: status == abi::STATUS_PANIC,
            };
        }
        let running = Running {
            id: id.to_owned(),
            dir: dir.to_path_buf(),
            progress,
            handle,
            started,
        };
        Reattach::Resumed(self.finish(running, None))
    }

    /// Runs every check with a small payload and returns the list, in order.
    pub fn check_all(&mut self) -> Vec<Check> {
        let mut checks = Vec::new();
        let mut check = |name: &str, passed: bool, detail: String| {
            checks.push(Check {
                name: name.to_owned(),
                passed,
                detail,
            })
        };
        match self.run_unit(CHECK_PAYLOAD) {
            Ok(unit) => {
                let finals: Vec<&Report> =
                    unit.reports.iter().filter(|r| is_final(r.state)).collect();
                check(
                    "a unit reports exactly one final state, last",
                    finals.len() == 1 && unit.reports.last().is_some_and(|r| is_final(r.state)),
                    summary(&unit),
                );
                let fd_problems: Vec<&String> = unit
                    .problems
                    .iter()
                    .filter(|p| p.starts_with("descriptors"))
                    .collect();
                check(
                    "every descriptor of the unit is closed after it ended",
                    unit.final_state.is_some() && fd_problems.is_empty(),
                    if fd_problems.is_empty() {
                        "stdin and stdout closed".to_owned()
                    } else {
                        join(&fd_problems)
                    },
                );
                check(
                    "the unit keeps the rest of the contract",
                    unit.ok(),
                    if unit.ok() {
                        "progress released once, nothing after it".to_owned()
                    } else {
                        unit.problems.join("; ")
                    },
                );
            }
            Err(e) => check("a unit runs", false, e.to_string()),
        }
        match self.cancel_unit(CHECK_PAYLOAD, true) {
            Ok(unit) => check(
                &format!("a cancelled unit ends within {:?}", self.cancel_limit),
                unit.ok(),
                if unit.ok() {
                    format!(
                        "{} after {:?}",
                        summary(&unit),
                        unit.cancel_latency.unwrap_or_default()
                    )
                } else {
                    unit.problems.join("; ")
                },
            ),
            Err(e) => check("a unit can be cancelled", false, e.to_string()),
        }
        match self.restart_and_reattach(CHECK_PAYLOAD, false) {
            Ok(Reattach::Resumed(unit)) => check(
                "re-attach after a restart works or says it cannot",
                unit.ok(),
                if unit.ok() {
                    format!("resumed: {}", summary(&unit))
                } else {
                    unit.problems.join("; ")
                },
            ),
            Ok(Reattach::Refused { message, panicked }) => check(
                "re-attach after a restart works or says it cannot",
                !panicked && !message.trim().is_empty(),
                if panicked {
                    format!("panicked: {message}")
                } else if message.trim().is_empty() {
                    "refused without a message".to_owned()
                } else {
                    format!("refused: {message}")
                },
            ),
            Err(e) => check(
                "re-attach after a restart works or says it cannot",
                false,
                e.to_string(),
            ),
        }
        let mut panics = Vec::new();
        let mut seen = Vec::new();
        for bad in ["[]", "\"not a map\"", "{\"worktype\": {\"nested\": [1]}}"] {
            match self.create_with(bad) {
                Ok((wt, _)) => {
                    seen.push(format!("create {bad}: accepted"));
                    // SAFETY: a work type just created, without units.
                    unsafe { (self.fns.destroy)(wt) };
                }
                Err(HarnessError::Call {
                    panicked: true,
                    message,
                    ..
                }) => panics.push(format!("create {bad}: panicked: {message}")),
                Err(e) => seen.push(format!("create {bad}: {e}")),
            }
        }
        let garbage = serde_json::json!({"receptor-plugin-harness": ["not", "your", "data"]});
        let missing = self.root.path().join("no-such-unit");
        match self.reattach("no-such-unit", &missing, Some(&garbage)) {
            Reattach::Refused {
                panicked: true,
                message,
            } => panics.push(format!(
                "re-attach with garbage ExtraData panicked: {message}"
            )),
            Reattach::Refused { message, .. } => {
                seen.push(format!("re-attach with garbage ExtraData: {message}"))
            }
            Reattach::Resumed(unit) => {
                if unit.ok() {
                    seen.push(format!(
                        "re-attach with garbage ExtraData: {}",
                        summary(&unit)
                    ))
                } else {
                    panics.push(format!(
                        "re-attach with garbage ExtraData: {}",
                        unit.problems.join("; ")
                    ))
                }
            }
        }
        check(
            "bad input is an error, not a panic",
            panics.is_empty(),
            if panics.is_empty() {
                seen.join("; ")
            } else {
                panics.join("; ")
            },
        );
        checks
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.destroy();
    }
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `Succeeded (exit status 0)`, or what is missing.
fn summary(unit: &Outcome) -> String {
    match unit.final_state {
        Some(state) => format!("{state:?} ({})", unit.detail),
        None => format!("no final state; {}", unit.problems.join("; ")),
    }
}

fn is_final(state: u32) -> bool {
    matches!(
        state,
        abi::STATE_SUCCEEDED | abi::STATE_FAILED | abi::STATE_CANCELED
    )
}

fn state_name(state: u32) -> String {
    match UnitState::from_abi(state) {
        Some(s) => format!("{s:?}"),
        None => format!("state {state}"),
    }
}

/// Lower-cases the keys of a section, as the node does before a plugin sees it.
fn lower_case_keys(section: Value) -> Value {
    match section {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        ),
        other => other,
    }
}

/// The descriptors of this process that still refer to the unit's `stdin` or `stdout`
/// once `limit` has passed (polling `/proc/self/fd`), or `None` when all are closed.
fn fds_left_open(dir: &Path, limit: Duration) -> Option<String> {
    let files = [dir.join("stdin"), dir.join("stdout")];
    let deadline = Instant::now() + limit;
    loop {
        let open = open_fds_to(&files);
        if open.is_empty() {
            return None;
        }
        if Instant::now() >= deadline {
            return Some(open.join(", "));
        }
        std::thread::yield_now();
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

fn open_fds_to(files: &[PathBuf]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut open = Vec::new();
    for entry in entries.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            if files.contains(&target) {
                open.push(format!(
                    "fd {} -> {}",
                    entry.file_name().to_string_lossy(),
                    target.display()
                ));
            }
        }
    }
    open
}
