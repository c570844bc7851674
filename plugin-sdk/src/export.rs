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
use crate::describe::SectionDesc;
use crate::work::{Progress, ReattachRequest, StartRequest, WorkHandle, WorkType};
use crate::{abi, layout, log, PluginError};

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
    desc: SectionDesc,
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
            desc: SectionDesc::default(),
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
            desc: SectionDesc::default(),
        });
        self
    }

    /// Describes the section kind claimed last (fields, help, command-line and
    /// version-2 forms, capabilities); see [`SectionDesc`].
    pub fn describe(mut self, desc: SectionDesc) -> Plugin {
        if let Some(last) = self.claims.last_mut() {
            last.desc = desc;
        }
        self
    }
}

/// Leaks a string for the life of the library (descriptors are never freed).
fn leak_str(s: &str) -> abi::Str {
    let s: &'static str = Box::leak(s.to_owned().into_boxed_str());
    abi::Str::new(s)
}

/// Leaks the ABI form of a section's field descriptions.
fn leak_fields(desc: &SectionDesc) -> (*const abi::FieldDesc, usize) {
    if desc.fields.is_empty() {
        return (std::ptr::null(), 0);
    }
    let fields: Vec<abi::FieldDesc> = desc
        .fields
        .iter()
        .map(|f| abi::FieldDesc {
            struct_size: std::mem::size_of::<abi::FieldDesc>(),
            name: leak_str(&f.name),
            field_type: f.field_type.to_abi(),
            flags: if f.required { abi::FIELD_REQUIRED } else { 0 },
            default_value: f
                .default
                .as_deref()
                .map(leak_str)
                .unwrap_or(abi::Str::EMPTY),
            help: leak_str(&f.help),
        })
        .collect();
    let fields: &'static [abi::FieldDesc] = Box::leak(fields.into_boxed_slice());
    (fields.as_ptr(), fields.len())
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
///
/// A plugin built with `panic = "abort"` cannot have its panics caught at the boundary:
/// one panic would take the whole node down. The macro refuses to build such a plugin;
/// `export_plugin!(plugin, panic_abort_allowed)` builds it anyway, for a plugin that is
/// meant to run isolated in a process of its own: built with `panic = "abort"`, it then
/// also exports [`abi::REQUIRES_ISOLATION_SYMBOL`], so that a node refuses to load it
/// into its own process and asks for `isolation: process` in its `plugins:` entry.
#[macro_export]
macro_rules! export_plugin {
    ($make:path, panic_abort_allowed) => {
        /// Marks a plugin whose panics abort: it runs only in a plugin host process.
        #[cfg(panic = "abort")]
        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static receptor_plugin_requires_isolation: u32 = 1;
        $crate::__export_entry!($make);
    };
    ($make:path) => {
        #[cfg(panic = "abort")]
        compile_error!(
            "this plugin is built with panic = \"abort\": a panic in it would abort the \
             whole receptor node. Build it with panic = \"unwind\", or, for a plugin \
             meant to run isolated, export it with \
             `export_plugin!(plugin, panic_abort_allowed)`."
        );
        $crate::__export_entry!($make);
    };
}

/// The entry point definition behind [`export_plugin!`](crate::export_plugin).
#[doc(hidden)]
#[macro_export]
macro_rules! __export_entry {
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
        // SAFETY: the host passes a valid HostApi (of any minor) that outlives the
        // process; read_prefix reads only what its struct_size covers.
        if let Ok(api) = unsafe { layout::read_prefix(host) } {
            log::install(&api);
            if api.abi_major == abi::ABI_MAJOR && api.abi_minor < abi::ABI_MINOR {
                log::debug(&format!(
                    "host speaks plugin ABI {}.{}, this plugin {}.{}: features of the newer minor are off",
                    api.abi_major,
                    api.abi_minor,
                    abi::ABI_MAJOR,
                    abi::ABI_MINOR
                ));
            }
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
            let (fields, field_count) = leak_fields(&def.desc);
            let flags = def.desc.flags();
            let help = leak_str(&def.desc.help);
            let bare_field = def
                .desc
                .bare_field
                .as_deref()
                .map(leak_str)
                .unwrap_or(abi::Str::EMPTY);
            let v2_key = def
                .desc
                .v2_key
                .as_deref()
                .map(leak_str)
                .unwrap_or(abi::Str::EMPTY);
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
                flags,
                claim_ctx: ctx as *const ClaimCtx as *mut c_void,
                backend,
                work_type,
                help,
                fields,
                field_count,
                bare_field,
                v2_key,
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
    // SAFETY: the host passes a valid sink (or null) for the duration of the call.
    let Ok(sink) = (unsafe { layout::read_prefix(err) }) else {
        return;
    };
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

unsafe extern "C" fn backend_start(
    claim_ctx: *mut c_void,
    config_json: abi::Str,
    host: *const abi::BackendHost,
    err: *const abi::ErrorSink,
    out_instance: *mut *mut c_void,
) -> abi::Status {
    let body = || {
        // SAFETY: the host passes a valid BackendHost (of any minor) for the call; it
        // is copied and its context reference taken over first, so every path below
        // releases it.
        let host =
            unsafe { layout::read_prefix(host) }.map_err(|e| PluginError::new(e.to_string()))?;
        // SAFETY: this is the plugin's reference to the host context.
        let sink = unsafe { ConnectionSink::from_abi(host) };
        if claim_ctx.is_null() || out_instance.is_null() {
            return Err(PluginError::new("null argument to backend start"));
        }
        // SAFETY: claim_ctx is the leaked ClaimCtx this plugin put in the claim.
        let claim = unsafe { &*(claim_ctx as *const ClaimCtx) };
        let Handler::Backend(start) = &claim.handler else {
            return Err(PluginError::new(format!("{} is not a backend", claim.kind)));
        };
        // SAFETY: the configuration is borrowed for the call.
        let config = unsafe { config_json.as_bytes() };
        let section = Section::parse(&claim.kind, config)?;
        let backend: Box<dyn Backend> = start(&section, sink)?;
        // SAFETY: out_instance is valid for writing during the call (checked non-null).
        unsafe { *out_instance = Box::into_raw(Box::new(backend)) as *mut c_void };
        Ok(())
    };
    // SAFETY: `err` is the sink of this call.
    unsafe { guarded(err, body) }
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
    let body = || {
        if claim_ctx.is_null() || out_info.is_null() || out_work_type.is_null() {
            return Err(PluginError::new("null argument to work type create"));
        }
        // SAFETY: the host's out-struct has at least its struct_size bytes.
        let info_size = unsafe { layout::read_prefix(out_info) }
            .map_err(|e| PluginError::new(e.to_string()))?
            .struct_size;
        // SAFETY: claim_ctx is the leaked ClaimCtx this plugin put in the claim.
        let claim = unsafe { &*(claim_ctx as *const ClaimCtx) };
        let Handler::WorkType(create) = &claim.handler else {
            return Err(PluginError::new(format!(
                "{} is not a work type",
                claim.kind
            )));
        };
        // SAFETY: the configuration is borrowed for the call.
        let config = unsafe { config_json.as_bytes() };
        let section = Section::parse(&claim.kind, config)?;
        let work_type = create(&section)?;
        let info = work_type.info();
        let boxed = Box::new(WorkTypeBox {
            work_type,
            _name: info.name.clone(),
        });
        let written = abi::WorkTypeInfo {
            struct_size: info_size,
            name: abi::Str::new(&boxed._name),
            flags: info.flags(),
            reserved: 0,
        };
        // SAFETY: as above; only the fields its struct_size covers are written.
        unsafe { layout::write_prefix(out_info, &written) }
            .map_err(|e| PluginError::new(e.to_string()))?;
        // SAFETY: out_work_type is valid for writing during the call (checked non-null).
        unsafe { *out_work_type = Box::into_raw(boxed) as *mut c_void };
        Ok(())
    };
    // SAFETY: `err` is the sink of this call.
    unsafe { guarded(err, body) }
}

/// Builds the safe start request, taking ownership of the descriptors first.
///
/// # Safety
/// `r` must be the host's valid request for the current call.
unsafe fn start_request(r: *const abi::StartRequest) -> Result<StartRequest, PluginError> {
    // SAFETY: the host's request, of any minor, valid for the call.
    let r = unsafe { layout::read_prefix(r) }.map_err(|e| PluginError::new(e.to_string()))?;
    let owned = |fd: i32| {
        // SAFETY: the ABI moves ownership of both descriptors to the plugin.
        (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) })
    };
    let (stdin, stdout) = (owned(r.stdin_fd), owned(r.stdout_fd));
    let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
        return Err(PluginError::new(
            "start request without stdin or stdout descriptor",
        ));
    };
    // SAFETY: the string is borrowed for the call and copied here.
    let unit_id = unsafe { r.unit_id.to_string_lossy() };
    // SAFETY: likewise.
    let unit_dir = PathBuf::from(std::ffi::OsStr::from_bytes(unsafe {
        r.unit_dir.as_bytes()
    }));
    // SAFETY: likewise.
    let params = unsafe { r.params.to_string_lossy() };
    // SAFETY: borrowed for the call; parsed below.
    let extra = unsafe { r.extra_params_json.as_bytes() };
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
    // SAFETY: valid for the call (any minor); copied, and its reference taken over at
    // once.
    let progress_abi =
        unsafe { layout::read_prefix(progress) }.map_err(|e| PluginError::new(e.to_string()))?;
    // SAFETY: this is the plugin's reference to the progress context.
    let progress = unsafe { Progress::from_abi(progress_abi) };
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
    let body = || {
        // SAFETY: the request is the host's for this call.
        let request = unsafe { start_request(request) };
        // SAFETY: the arguments are the host's for this call.
        unsafe {
            run_unit_call(work_type, progress, out_unit, |wt, progress| {
                wt.start(request?, progress)
            })
        }
    };
    // SAFETY: `err` is the sink of this call.
    unsafe { guarded(err, body) }
}

unsafe extern "C" fn work_type_reattach(
    work_type: *mut c_void,
    request: *const abi::ReattachRequest,
    progress: *const abi::Progress,
    err: *const abi::ErrorSink,
    out_unit: *mut *mut c_void,
) -> abi::Status {
    let reattach = |wt: &dyn WorkType, progress| {
        // SAFETY: valid for the call (any minor).
        let r =
            unsafe { layout::read_prefix(request) }.map_err(|e| PluginError::new(e.to_string()))?;
        // SAFETY: borrowed for the call; parsed here.
        let extra = unsafe { r.extra_json.as_bytes() };
        let extra = if extra.is_empty() {
            None
        } else {
            Some(
                serde_json::from_slice(extra)
                    .map_err(|e| PluginError::new(format!("bad extra data from host: {e}")))?,
            )
        };
        // SAFETY: the string is borrowed for the call and copied here.
        let unit_id = unsafe { r.unit_id.to_string_lossy() };
        // SAFETY: likewise.
        let unit_dir = unsafe { r.unit_dir.as_bytes() };
        let request = ReattachRequest {
            unit_id,
            unit_dir: PathBuf::from(std::ffi::OsStr::from_bytes(unit_dir)),
            extra,
        };
        wt.reattach(request, progress)
    };
    // SAFETY: the arguments are the host's for this call.
    let body = || unsafe { run_unit_call(work_type, progress, out_unit, reattach) };
    // SAFETY: `err` is the sink of this call.
    unsafe { guarded(err, body) }
}

unsafe extern "C" fn unit_cancel(unit: *mut c_void, err: *const abi::ErrorSink) -> abi::Status {
    let body = || {
        if unit.is_null() {
            return Err(PluginError::new("null unit"));
        }
        // SAFETY: unit is a Box<Box<dyn WorkHandle>> from start/reattach, not freed yet.
        let unit = unsafe { &*(unit as *const Box<dyn WorkHandle>) };
        unit.cancel()
    };
    // SAFETY: `err` is the sink of this call.
    unsafe { guarded(err, body) }
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
        let read = unsafe { layout::read_prefix(&full) }.unwrap();
        assert!(read.connection_tls.is_some() && read.ctx == full.ctx);
        let v1_0 = abi::BackendHost {
            struct_size: abi::BACKEND_HOST_V1_0_SIZE,
            ..full
        };
        // SAFETY: as above (only a prefix is read).
        let read = unsafe { layout::read_prefix(&v1_0) }.unwrap();
        assert!(read.connection_tls.is_none() && read.ctx == full.ctx);
        assert_eq!(read.struct_size, abi::BACKEND_HOST_V1_0_SIZE);
    }
}
