//! Work types from plugins, adapted to [`crate::work::worktype::WorkType`].
//!
//! Each unit gets a progress context, an `Arc<ProgressCtx>` holding the unit's
//! `watch::Sender`; the plugin holds one reference until it calls `release`. Reports
//! replace the watched value, so they never block and the final state is never lost.

use std::ffi::c_void;
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use receptor_plugin_sdk::abi;
use tokio::sync::watch;

use super::{ffi::ErrorSlot, PluginError, SendPtr};
use crate::work::worktype::{
    ReattachRequest, StartRequest, UnitState, WorkHandle, WorkProgress, WorkType, WorkTypeError,
};

type UnitCall<R> = unsafe extern "C" fn(
    *mut c_void,
    *const R,
    *const abi::Progress,
    *const abi::ErrorSink,
    *mut *mut c_void,
) -> abi::Status;

/// The validated functions of a work-type vtable.
#[derive(Clone, Copy)]
pub(super) struct WorkTypeFns {
    create: unsafe extern "C" fn(
        *mut c_void,
        abi::Str,
        *const abi::ErrorSink,
        *mut abi::WorkTypeInfo,
        *mut *mut c_void,
    ) -> abi::Status,
    start: UnitCall<abi::StartRequest>,
    reattach: UnitCall<abi::ReattachRequest>,
    cancel: unsafe extern "C" fn(*mut c_void, *const abi::ErrorSink) -> abi::Status,
    free_unit: unsafe extern "C" fn(*mut c_void),
    destroy: unsafe extern "C" fn(*mut c_void),
}

impl WorkTypeFns {
    /// Checks a plugin's vtable.
    ///
    /// # Safety
    /// `vt` must point to a vtable of at least its `struct_size` bytes.
    pub(super) unsafe fn from_vtable(
        vt: *const abi::WorkTypeVtable,
    ) -> Result<WorkTypeFns, String> {
        // SAFETY: a vtable of struct_size bytes (contract); only whole minors are read.
        let vt =
            unsafe { receptor_plugin_sdk::layout::read_prefix(vt) }.map_err(|e| e.to_string())?;
        match (
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
            ) => Ok(WorkTypeFns {
                create,
                start,
                reattach,
                cancel,
                free_unit,
                destroy,
            }),
            _ => Err("work type vtable has a null function".to_owned()),
        }
    }
}

/// A plugin's work type handle; destroyed when the work type and all its units are gone.
struct Instance {
    handle: SendPtr,
    fns: WorkTypeFns,
    /// Who this is, for every log line and error about it.
    names: Arc<Names>,
}

/// The names that identify a work type in logs: its plugin, its config section kind and
/// the work type's name.
#[derive(Debug)]
pub(super) struct Names {
    pub(super) plugin: String,
    pub(super) section: String,
    pub(super) work_type: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: every unit holds an Arc<Instance>, so no unit handle is left.
        unsafe { (self.fns.destroy)(self.handle.0) };
    }
}

/// A work type provided by a plugin.
pub(super) struct PluginWorkType {
    instance: Arc<Instance>,
    name: String,
    verify_signature: bool,
    allow_runtime_params: bool,
}

/// Builds the work type a config section describes.
pub(super) fn create(
    plugin: &str,
    section: &str,
    claim_ctx: SendPtr,
    fns: WorkTypeFns,
    config: &serde_json::Value,
) -> Result<PluginWorkType, PluginError> {
    let json = config.to_string();
    let slot = ErrorSlot::for_call(plugin);
    let sink = slot.sink();
    let mut info = abi::WorkTypeInfo {
        struct_size: std::mem::size_of::<abi::WorkTypeInfo>(),
        name: abi::Str::EMPTY,
        flags: 0,
        reserved: 0,
    };
    let mut handle: *mut c_void = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call.
    let status = unsafe {
        (fns.create)(
            claim_ctx.0,
            abi::Str::new(&json),
            &sink,
            &mut info,
            &mut handle,
        )
    };
    let call_err = |message: String| {
        tracing::error!(
            plugin,
            section,
            panicked = status == abi::STATUS_PANIC,
            "work type not created: {message}"
        );
        PluginError::Call {
            plugin: plugin.to_owned(),
            message: format!("{section}: {message}"),
        }
    };
    if status != abi::STATUS_OK {
        return Err(call_err(slot.message(status)));
    }
    if handle.is_null() {
        return Err(call_err("create returned no work type".to_owned()));
    }
    // SAFETY: the name is owned by the plugin while the work type lives; copied here.
    let name = unsafe { info.name.to_string_lossy() };
    let instance = Arc::new(Instance {
        handle: SendPtr(handle),
        fns,
        names: Arc::new(Names {
            plugin: plugin.to_owned(),
            section: section.to_owned(),
            work_type: name.clone(),
        }),
    });
    if name.is_empty() {
        return Err(call_err("the work type has no name".to_owned()));
    }
    Ok(PluginWorkType {
        instance,
        name,
        verify_signature: info.flags & abi::WORK_TYPE_VERIFY_SIGNATURE != 0,
        allow_runtime_params: info.flags & abi::WORK_TYPE_ALLOW_RUNTIME_PARAMS != 0,
    })
}

impl PluginWorkType {
    /// Calls start or reattach with a fresh progress context and wraps the unit.
    fn unit_call<R>(
        &self,
        call: UnitCall<R>,
        what: &'static str,
        request: &R,
        unit_id: &str,
        progress: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError> {
        let ctx = Arc::new(ProgressCtx {
            sender: progress,
            unit_id: unit_id.to_owned(),
            names: Arc::clone(&self.instance.names),
        });
        let progress = abi::Progress {
            struct_size: std::mem::size_of::<abi::Progress>(),
            ctx: Arc::into_raw(ctx) as *mut c_void,
            report: Some(progress_report),
            release: Some(progress_release),
        };
        let slot = ErrorSlot::for_call(&self.instance.names.plugin);
        let sink = slot.sink();
        let mut unit: *mut c_void = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; the plugin takes over the
        // progress reference (and releases it, also on failure).
        let status = unsafe { call(self.instance.handle.0, request, &progress, &sink, &mut unit) };
        if status != abi::STATUS_OK {
            let message = slot.message(status);
            self.instance
                .names
                .log_failure(unit_id, what, status, &message);
            return Err(WorkTypeError::Refused(message));
        }
        if unit.is_null() {
            let error = WorkTypeError::NoUnit;
            self.instance
                .names
                .log_failure(unit_id, what, abi::STATUS_ERROR, &error.to_string());
            return Err(error);
        }
        Ok(Box::new(PluginUnit {
            instance: Arc::clone(&self.instance),
            unit: SendPtr(unit),
            unit_id: unit_id.to_owned(),
        }))
    }
}

impl WorkType for PluginWorkType {
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
        let extra = serde_json::to_string(&request.extra_params)
            .map_err(|e| WorkTypeError::BadRequest(e.to_string()))?;
        let dir = request.unit_dir.as_os_str().as_bytes();
        let raw = abi::StartRequest {
            struct_size: std::mem::size_of::<abi::StartRequest>(),
            unit_id: abi::Str::new(&request.unit_id),
            unit_dir: abi::Str::from_bytes(dir),
            // Ownership of both descriptors moves to the plugin.
            stdin_fd: request.stdin.into_raw_fd(),
            stdout_fd: request.stdout.into_raw_fd(),
            params: abi::Str::new(&request.params),
            extra_params_json: abi::Str::new(&extra),
        };
        self.unit_call(
            self.instance.fns.start,
            "start",
            &raw,
            &request.unit_id,
            progress,
        )
    }

    fn reattach(
        &self,
        request: ReattachRequest,
        progress: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError> {
        let extra = request
            .extra
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_default();
        let raw = abi::ReattachRequest {
            struct_size: std::mem::size_of::<abi::ReattachRequest>(),
            unit_id: abi::Str::new(&request.unit_id),
            unit_dir: abi::Str::from_bytes(request.unit_dir.as_os_str().as_bytes()),
            extra_json: abi::Str::new(&extra),
        };
        self.unit_call(
            self.instance.fns.reattach,
            "reattach",
            &raw,
            &request.unit_id,
            progress,
        )
    }
}

/// A unit handle from a plugin.
struct PluginUnit {
    instance: Arc<Instance>,
    unit: SendPtr,
    unit_id: String,
}

impl WorkHandle for PluginUnit {
    fn cancel(&self) -> Result<(), WorkTypeError> {
        let slot = ErrorSlot::for_call(&self.instance.names.plugin);
        let sink = slot.sink();
        // SAFETY: the unit handle is alive until drop frees it.
        let status = unsafe { (self.instance.fns.cancel)(self.unit.0, &sink) };
        if status == abi::STATUS_OK {
            Ok(())
        } else {
            let message = slot.message(status);
            self.instance
                .names
                .log_failure(&self.unit_id, "cancel", status, &message);
            Err(WorkTypeError::Refused(message))
        }
    }
}

impl Drop for PluginUnit {
    fn drop(&mut self) {
        // SAFETY: freed exactly once, here.
        unsafe { (self.instance.fns.free_unit)(self.unit.0) };
    }
}

/// What a unit's `Progress.ctx` points to.
struct ProgressCtx {
    sender: watch::Sender<WorkProgress>,
    unit_id: String,
    names: Arc<Names>,
}

impl Names {
    /// Logs a failed or panicked call about one unit, naming everything involved.
    fn log_failure(&self, unit: &str, call: &str, status: abi::Status, message: &str) {
        if status == abi::STATUS_PANIC {
            tracing::error!(
                plugin = %self.plugin,
                section = %self.section,
                work_type = %self.work_type,
                unit,
                "{call} panicked: {message}"
            );
        } else {
            tracing::warn!(
                plugin = %self.plugin,
                section = %self.section,
                work_type = %self.work_type,
                unit,
                "{call} failed: {message}"
            );
        }
    }
}

unsafe extern "C" fn progress_release(ctx: *mut c_void) {
    if !ctx.is_null() {
        // SAFETY: the plugin gives back the reference created by Arc::into_raw.
        drop(unsafe { Arc::from_raw(ctx as *const ProgressCtx) });
    }
}

unsafe extern "C" fn progress_report(
    ctx: *mut c_void,
    state: u32,
    detail: abi::Str,
    extra_json: abi::Str,
) {
    if ctx.is_null() {
        return;
    }
    // SAFETY: the plugin holds a reference to ctx until release.
    let ctx = unsafe { &*(ctx as *const ProgressCtx) };
    // SAFETY: the string is borrowed for this call and copied here.
    let detail = unsafe { detail.to_string_lossy() };
    // SAFETY: borrowed for this call and parsed before it returns.
    let extra = unsafe { extra_json.as_bytes() };
    let _ = catch_unwind(AssertUnwindSafe(|| report(ctx, state, detail, extra)));
}

fn report(ctx: &ProgressCtx, state: u32, detail: String, extra: &[u8]) {
    let state = match state {
        abi::STATE_PENDING => UnitState::Pending,
        abi::STATE_RUNNING => UnitState::Running,
        abi::STATE_SUCCEEDED => UnitState::Succeeded,
        abi::STATE_FAILED => UnitState::Failed,
        abi::STATE_CANCELED => UnitState::Canceled,
        other => {
            let n = &ctx.names;
            tracing::warn!(plugin = %n.plugin, section = %n.section, work_type = %n.work_type, unit = %ctx.unit_id, "progress with unknown state {other} ignored");
            return;
        }
    };
    let extra = if extra.is_empty() {
        None
    } else {
        match serde_json::from_slice(extra) {
            Ok(v) => Some(v),
            Err(e) => {
                let n = &ctx.names;
                tracing::warn!(plugin = %n.plugin, section = %n.section, work_type = %n.work_type, unit = %ctx.unit_id, "progress with bad extra data ignored: {e}");
                return;
            }
        }
    };
    ctx.sender.send_replace(WorkProgress {
        state,
        detail,
        extra,
    });
}
