//! Exporting a plugin: the [`Plugin`] builder, the `extern "C"` glue that implements
//! the ABI on top of the safe traits, and [`export_plugin!`](crate::export_plugin).
//!
//! Every exported function catches panics: a panic becomes [`abi::STATUS_PANIC`] with
//! the panic message in the error sink (or a log line for calls that return nothing).

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::backend::{Backend, ConnectionSink, SessionToken};
use crate::config::Section;
use crate::work::{Progress, ReattachRequest, StartRequest, WorkHandle, WorkType};
use crate::{abi, log, PluginError};

type BackendStart =
    dyn Fn(&Section, ConnectionSink) -> Result<Box<dyn Backend>, PluginError> + Send + Sync;
type WorkTypeCreate = dyn Fn(&Section) -> Result<Box<dyn WorkType>, PluginError> + Send + Sync;

enum Handler {
    Backend(Box<BackendStart>),
    WorkType(Box<WorkTypeCreate>),
}

struct ClaimDef {
    kind: String,
    handler: Handler,
}

/// What a plugin provides: its name and version and the config section kinds it claims.
pub struct Plugin {
    name: String,
    version: String,
    claims: Vec<ClaimDef>,
}

impl Plugin {
    /// A plugin with this name and version (usually `env!("CARGO_PKG_VERSION")`).
    pub fn new(name: &str, version: &str) -> Plugin {
        Plugin {
            name: name.to_owned(),
            version: version.to_owned(),
            claims: Vec::new(),
        }
    }

    /// Claims the backend section kind `kind`; `start` validates a section and starts an
    /// instance that delivers its connections to the sink.
    pub fn backend<F>(mut self, kind: &str, start: F) -> Plugin
    where
        F: Fn(&Section, ConnectionSink) -> Result<Box<dyn Backend>, PluginError>
            + Send
            + Sync
            + 'static,
    {
        self.claims.push(ClaimDef {
            kind: kind.to_ascii_lowercase(),
            handler: Handler::Backend(Box::new(start)),
        });
        self
    }

    /// Claims the work-type section kind `kind`; `create` validates a section and builds
    /// the work type it describes.
    pub fn work_type<F>(mut self, kind: &str, create: F) -> Plugin
    where
        F: Fn(&Section) -> Result<Box<dyn WorkType>, PluginError> + Send + Sync + 'static,
    {
        self.claims.push(ClaimDef {
            kind: kind.to_ascii_lowercase(),
            handler: Handler::WorkType(Box::new(create)),
        });
        self
    }
}

/// Exports a plugin: defines `receptor_plugin_entry_v1`, which builds the plugin with
/// the given function (`fn() -> Plugin`) the first time the host calls it.
///
/// ```ignore
/// fn plugin() -> receptor_plugin_sdk::Plugin {
///     receptor_plugin_sdk::Plugin::new("hello", env!("CARGO_PKG_VERSION"))
///         .work_type("hello-worktype", |section| Ok(Box::new(Hello::new(section)?)))
/// }
/// receptor_plugin_sdk::export_plugin!(plugin);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($make:path) => {
        /// The plugin's entry point for ABI major 1.
        ///
        /// # Safety
        /// Called by the receptor host with a valid `HostApi`.
        #[no_mangle]
        pub unsafe extern "C" fn receptor_plugin_entry_v1(
            host: *const $crate::abi::HostApi,
        ) -> *const $crate::abi::PluginDescriptor {
            // SAFETY: forwarded from the host's call.
            unsafe { $crate::export::entry(host, $make) }
        }
    };
}

/// The descriptor built on the first entry call (its address; it is leaked on purpose: it
/// lives as long as the library stays loaded).
static DESCRIPTOR: OnceLock<usize> = OnceLock::new();

/// Implements the entry point: remembers the host's log callback, builds the plugin
/// once and returns its descriptor (null if building it panicked).
///
/// # Safety
/// `host` must be null or point to a valid [`abi::HostApi`].
#[doc(hidden)]
pub unsafe fn entry(
    host: *const abi::HostApi,
    make: fn() -> Plugin,
) -> *const abi::PluginDescriptor {
    let result = catch_unwind(|| {
        if !host.is_null() {
            // SAFETY: the host passes a valid HostApi that outlives the process.
            log::install(unsafe { &*host });
        }
        *DESCRIPTOR.get_or_init(|| build_descriptor(make()) as usize)
    });
    match result {
        Ok(addr) => addr as *const abi::PluginDescriptor,
        Err(payload) => {
            log::error(&format!(
                "plugin initialisation panicked: {}",
                panic_message(&*payload)
            ));
            std::ptr::null()
        }
    }
}

/// What a claim's `claim_ctx` points to.
struct ClaimCtx {
    kind: String,
    handler: Handler,
}

static BACKEND_VTABLE: abi::BackendVtable = abi::BackendVtable {
    struct_size: std::mem::size_of::<abi::BackendVtable>(),
    start: Some(backend_start),
    session_closed: Some(backend_session_closed),
    stop: Some(backend_stop),
};

static WORK_TYPE_VTABLE: abi::WorkTypeVtable = abi::WorkTypeVtable {
    struct_size: std::mem::size_of::<abi::WorkTypeVtable>(),
    create: Some(work_type_create),
    start: Some(work_type_start),
    reattach: Some(work_type_reattach),
    cancel: Some(unit_cancel),
    free_unit: Some(unit_free),
    destroy: Some(work_type_destroy),
};

fn build_descriptor(plugin: Plugin) -> *const abi::PluginDescriptor {
    let name: &'static str = Box::leak(plugin.name.into_boxed_str());
    let version: &'static str = Box::leak(plugin.version.into_boxed_str());
    let claims: Vec<*const abi::SectionClaim> = plugin
        .claims
        .into_iter()
        .map(|def| {
            let ctx: &'static ClaimCtx = Box::leak(Box::new(ClaimCtx {
                kind: def.kind,
                handler: def.handler,
            }));
            let (claim_type, backend, work_type) = match ctx.handler {
                Handler::Backend(_) => (
                    abi::CLAIM_BACKEND,
                    &BACKEND_VTABLE as *const _,
                    std::ptr::null(),
                ),
                Handler::WorkType(_) => (
                    abi::CLAIM_WORK_TYPE,
                    std::ptr::null(),
                    &WORK_TYPE_VTABLE as *const _,
                ),
            };
            let claim = Box::new(abi::SectionClaim {
                struct_size: std::mem::size_of::<abi::SectionClaim>(),
                section_kind: abi::Str::new(&ctx.kind),
                claim_type,
                reserved: 0,
                claim_ctx: ctx as *const ClaimCtx as *mut c_void,
                backend,
                work_type,
            });
            Box::into_raw(claim) as *const abi::SectionClaim
        })
        .collect();
    let claims: &'static [*const abi::SectionClaim] = Box::leak(claims.into_boxed_slice());
    Box::into_raw(Box::new(abi::PluginDescriptor {
        struct_size: std::mem::size_of::<abi::PluginDescriptor>(),
        abi_major: abi::ABI_MAJOR,
        abi_minor: abi::ABI_MINOR,
        name: abi::Str::new(name),
        version: abi::Str::new(version),
        claims: claims.as_ptr(),
        claim_count: claims.len(),
    }))
}

/// The text of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// Copies `message` into the host's error sink.
///
/// # Safety
/// `err` must be null or a valid sink for the current call.
unsafe fn report_error(err: *const abi::ErrorSink, message: &str) {
    if err.is_null() {
        return;
    }
    // SAFETY: the host passes a valid sink for the duration of the call.
    let sink = unsafe { &*err };
    if let Some(set) = sink.set {
        // SAFETY: the message is borrowed for the call; the host copies it.
        unsafe { set(sink.ctx, abi::Str::new(message)) };
    }
}

/// Runs `f`, turning its error or panic into a status code and an error message.
///
/// # Safety
/// `err` must be null or a valid sink for the current call.
unsafe fn guarded(
    err: *const abi::ErrorSink,
    f: impl FnOnce() -> Result<(), PluginError>,
) -> abi::Status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => abi::STATUS_OK,
        Ok(Err(e)) => {
            // SAFETY: forwarded from the caller.
            unsafe { report_error(err, e.message()) };
            abi::STATUS_ERROR
        }
        Err(payload) => {
            let msg = format!("plugin panicked: {}", panic_message(&*payload));
            // SAFETY: forwarded from the caller.
            unsafe { report_error(err, &msg) };
            abi::STATUS_PANIC
        }
    }
}

/// Runs `f` for a call that returns nothing; a panic is logged.
fn guarded_void(what: &str, f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        log::error(&format!(
            "plugin panicked in {what}: {}",
            panic_message(&*payload)
        ));
    }
}

/// Checks that a host-filled struct carries every field of ABI 1.0.
fn check_size(what: &str, size: usize, needed: usize) -> Result<(), PluginError> {
    if size < needed {
        return Err(PluginError::new(format!(
            "host passed a {what} of {size} bytes, at least {needed} expected"
        )));
    }
    Ok(())
}

/// Copies the fields of a host's `BackendHost` that its `struct_size` covers; the
/// others (added by a later minor than the host's) are left empty.
///
/// # Safety
/// `host` must point to a `BackendHost` of at least its `struct_size` bytes, and of at
/// least the `struct_size` and `ctx` fields.
unsafe fn read_backend_host(host: *const abi::BackendHost) -> abi::BackendHost {
    let mut out = abi::BackendHost {
        struct_size: 0,
        ctx: std::ptr::null_mut(),
        connection: None,
        release: None,
        connection_tls: None,
    };
    // SAFETY: every BackendHost starts with struct_size.
    let size = unsafe { std::ptr::addr_of!((*host).struct_size).read() };
    let n = size.min(std::mem::size_of::<abi::BackendHost>());
    // SAFETY: the host's struct has `size` readable bytes; `out` has room for `n`, and
    // the bytes are of the same layout (all-zero bytes, kept where the host's struct
    // ends, are a valid null pointer and `None`).
    unsafe {
        std::ptr::copy_nonoverlapping(
            host.cast::<u8>(),
            std::ptr::addr_of_mut!(out).cast::<u8>(),
            n,
        );
    }
    out.struct_size = size;
    out
}

unsafe extern "C" fn backend_start(
    claim_ctx: *mut c_void,
    config_json: abi::Str,
    host: *const abi::BackendHost,
    err: *const abi::ErrorSink,
    out_instance: *mut *mut c_void,
) -> abi::Status {
    // SAFETY: `err` is the sink of this call.
    unsafe {
        guarded(err, || {
            if host.is_null() || claim_ctx.is_null() || out_instance.is_null() {
                return Err(PluginError::new("null argument to backend start"));
            }
            // SAFETY: the host passes a valid BackendHost for the call; we copy it and take
            // over its context reference first, so every path below releases it.
            let host = read_backend_host(host);
            let sink = ConnectionSink::from_abi(host);
            check_size(
                "backend host",
                host.struct_size,
                abi::BACKEND_HOST_V1_0_SIZE,
            )?;
            // SAFETY: claim_ctx is the leaked ClaimCtx this plugin put in the claim.
            let claim = &*(claim_ctx as *const ClaimCtx);
            let Handler::Backend(start) = &claim.handler else {
                return Err(PluginError::new(format!("{} is not a backend", claim.kind)));
            };
            let section = Section::parse(&claim.kind, config_json.as_bytes())?;
            let backend: Box<dyn Backend> = start(&section, sink)?;
            *out_instance = Box::into_raw(Box::new(backend)) as *mut c_void;
            Ok(())
        })
    }
}

unsafe extern "C" fn backend_session_closed(instance: *mut c_void, token: u64) {
    if instance.is_null() {
        return;
    }
    // SAFETY: instance is a Box<Box<dyn Backend>> from backend_start, not yet stopped.
    let backend = unsafe { &*(instance as *const Box<dyn Backend>) };
    guarded_void("session_closed", || {
        backend.session_closed(SessionToken(token))
    });
}

unsafe extern "C" fn backend_stop(instance: *mut c_void) {
    if instance.is_null() {
        return;
    }
    // SAFETY: instance is a Box<Box<dyn Backend>> from backend_start; the host stops it
    // once and never uses it afterwards.
    let backend = unsafe { Box::from_raw(instance as *mut Box<dyn Backend>) };
    guarded_void("stop", move || {
        backend.stop();
        drop(backend);
    });
}

/// What a work-type handle points to.
struct WorkTypeBox {
    work_type: Box<dyn WorkType>,
    /// Keeps the name that `WorkTypeInfo::name` borrows alive.
    _name: String,
}

unsafe extern "C" fn work_type_create(
    claim_ctx: *mut c_void,
    config_json: abi::Str,
    err: *const abi::ErrorSink,
    out_info: *mut abi::WorkTypeInfo,
    out_work_type: *mut *mut c_void,
) -> abi::Status {
    // SAFETY: `err` is the sink of this call.
    unsafe {
        guarded(err, || {
            if claim_ctx.is_null() || out_info.is_null() || out_work_type.is_null() {
                return Err(PluginError::new("null argument to work type create"));
            }
            check_size(
                "work type info",
                (*out_info).struct_size,
                std::mem::size_of::<abi::WorkTypeInfo>(),
            )?;
            // SAFETY: claim_ctx is the leaked ClaimCtx this plugin put in the claim.
            let claim = &*(claim_ctx as *const ClaimCtx);
            let Handler::WorkType(create) = &claim.handler else {
                return Err(PluginError::new(format!(
                    "{} is not a work type",
                    claim.kind
                )));
            };
            let section = Section::parse(&claim.kind, config_json.as_bytes())?;
            let work_type = create(&section)?;
            let info = work_type.info();
            let boxed = Box::new(WorkTypeBox {
                work_type,
                _name: info.name.clone(),
            });
            (*out_info).name = abi::Str::new(&boxed._name);
            (*out_info).flags = info.flags();
            (*out_info).reserved = 0;
            *out_work_type = Box::into_raw(boxed) as *mut c_void;
            Ok(())
        })
    }
}

/// Builds the safe start request, taking ownership of the descriptors first.
///
/// # Safety
/// `r` must be the host's valid request for the current call.
unsafe fn start_request(r: &abi::StartRequest) -> Result<StartRequest, PluginError> {
    let owned = |fd: i32| {
        // SAFETY: the ABI moves ownership of both descriptors to the plugin.
        (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) })
    };
    let (stdin, stdout) = (owned(r.stdin_fd), owned(r.stdout_fd));
    check_size(
        "start request",
        r.struct_size,
        std::mem::size_of::<abi::StartRequest>(),
    )?;
    let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
        return Err(PluginError::new(
            "start request without stdin or stdout descriptor",
        ));
    };
    // SAFETY: the strings are borrowed for the call and copied here.
    let (unit_id, unit_dir, params, extra) = unsafe {
        (
            r.unit_id.to_string_lossy(),
            PathBuf::from(std::ffi::OsStr::from_bytes(r.unit_dir.as_bytes())),
            r.params.to_string_lossy(),
            r.extra_params_json.as_bytes(),
        )
    };
    let extra_params: BTreeMap<String, String> = if extra.is_empty() {
        BTreeMap::new()
    } else {
        serde_json::from_slice(extra)
            .map_err(|e| PluginError::new(format!("bad extra params from host: {e}")))?
    };
    Ok(StartRequest {
        unit_id,
        unit_dir,
        stdin,
        stdout,
        params,
        extra_params,
    })
}

/// Takes over the progress reference, checks the arguments and runs `f` with the
/// work type; stores the resulting unit in `out_unit`.
///
/// # Safety
/// All pointers are the host's valid arguments for the current call.
unsafe fn run_unit_call(
    work_type: *mut c_void,
    progress: *const abi::Progress,
    out_unit: *mut *mut c_void,
    f: impl FnOnce(&dyn WorkType, Progress) -> Result<Box<dyn WorkHandle>, PluginError>,
) -> Result<(), PluginError> {
    if progress.is_null() {
        return Err(PluginError::new("null progress argument"));
    }
    // SAFETY: valid for the call; copied, and its reference taken over at once.
    let progress_abi = unsafe { *progress };
    // SAFETY: this is the plugin's reference to the progress context.
    let progress = unsafe { Progress::from_abi(progress_abi) };
    check_size(
        "progress",
        progress_abi.struct_size,
        std::mem::size_of::<abi::Progress>(),
    )?;
    if work_type.is_null() || out_unit.is_null() {
        return Err(PluginError::new("null argument to unit call"));
    }
    // SAFETY: work_type is a WorkTypeBox from work_type_create, not destroyed yet.
    let wt = unsafe { &*(work_type as *const WorkTypeBox) };
    let unit = f(&*wt.work_type, progress)?;
    // SAFETY: out_unit is valid for writing during the call.
    unsafe { *out_unit = Box::into_raw(Box::new(unit)) as *mut c_void };
    Ok(())
}

unsafe extern "C" fn work_type_start(
    work_type: *mut c_void,
    request: *const abi::StartRequest,
    progress: *const abi::Progress,
    err: *const abi::ErrorSink,
    out_unit: *mut *mut c_void,
) -> abi::Status {
    // SAFETY: the arguments are the host's for this call.
    unsafe {
        guarded(err, || {
            let request = if request.is_null() {
                Err(PluginError::new("null start request"))
            } else {
                start_request(&*request)
            };
            run_unit_call(work_type, progress, out_unit, |wt, progress| {
                wt.start(request?, progress)
            })
        })
    }
}

unsafe extern "C" fn work_type_reattach(
    work_type: *mut c_void,
    request: *const abi::ReattachRequest,
    progress: *const abi::Progress,
    err: *const abi::ErrorSink,
    out_unit: *mut *mut c_void,
) -> abi::Status {
    // SAFETY: the arguments are the host's for this call.
    unsafe {
        guarded(err, || {
            run_unit_call(work_type, progress, out_unit, |wt, progress| {
                if request.is_null() {
                    return Err(PluginError::new("null reattach request"));
                }
                // SAFETY: valid for the call.
                let r = &*request;
                check_size(
                    "reattach request",
                    r.struct_size,
                    std::mem::size_of::<abi::ReattachRequest>(),
                )?;
                let extra = r.extra_json.as_bytes();
                let extra =
                    if extra.is_empty() {
                        None
                    } else {
                        Some(serde_json::from_slice(extra).map_err(|e| {
                            PluginError::new(format!("bad extra data from host: {e}"))
                        })?)
                    };
                let request = ReattachRequest {
                    unit_id: r.unit_id.to_string_lossy(),
                    unit_dir: PathBuf::from(std::ffi::OsStr::from_bytes(r.unit_dir.as_bytes())),
                    extra,
                };
                wt.reattach(request, progress)
            })
        })
    }
}

unsafe extern "C" fn unit_cancel(unit: *mut c_void, err: *const abi::ErrorSink) -> abi::Status {
    // SAFETY: the arguments are the host's for this call.
    unsafe {
        guarded(err, || {
            if unit.is_null() {
                return Err(PluginError::new("null unit"));
            }
            // SAFETY: unit is a Box<Box<dyn WorkHandle>> from start/reattach, not freed yet.
            let unit = &*(unit as *const Box<dyn WorkHandle>);
            unit.cancel()
        })
    }
}

unsafe extern "C" fn unit_free(unit: *mut c_void) {
    if unit.is_null() {
        return;
    }
    // SAFETY: unit is a Box<Box<dyn WorkHandle>> from start/reattach, freed once.
    let unit = unsafe { Box::from_raw(unit as *mut Box<dyn WorkHandle>) };
    guarded_void("free_unit", move || drop(unit));
}

unsafe extern "C" fn work_type_destroy(work_type: *mut c_void) {
    if work_type.is_null() {
        return;
    }
    // SAFETY: work_type is a WorkTypeBox from work_type_create, destroyed once.
    let wt = unsafe { Box::from_raw(work_type as *mut WorkTypeBox) };
    guarded_void("destroy", move || drop(wt));
}

#[cfg(test)]
mod tests {
    use std::ffi::c_void;

    use super::*;

    unsafe extern "C" fn connection_tls(
        _: *mut c_void,
        _: std::ffi::c_int,
        _: u32,
        _: abi::Str,
        _: u32,
        _: *const u8,
        _: usize,
    ) -> u64 {
        0
    }

    #[test]
    fn a_host_struct_is_read_only_as_far_as_its_size_covers() {
        let full = abi::BackendHost {
            struct_size: std::mem::size_of::<abi::BackendHost>(),
            ctx: 8 as *mut c_void,
            connection: None,
            release: None,
            connection_tls: Some(connection_tls),
        };
        // SAFETY: a valid struct of its full size.
        let read = unsafe { read_backend_host(&full) };
        assert!(read.connection_tls.is_some() && read.ctx == full.ctx);
        let v1_0 = abi::BackendHost {
            struct_size: abi::BACKEND_HOST_V1_0_SIZE,
            ..full
        };
        // SAFETY: as above (only a prefix is read).
        let read = unsafe { read_backend_host(&v1_0) };
        assert!(read.connection_tls.is_none() && read.ctx == full.ctx);
        assert_eq!(read.struct_size, abi::BACKEND_HOST_V1_0_SIZE);
    }
}
