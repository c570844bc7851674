//! The C ABI, version 1: every type and constant that crosses the plugin boundary.
//!
//! `include/receptor_plugin.h` declares exactly the same layout for C plugins (a test
//! compiles it and compares every size and offset with this module).
//!
//! # Rules of the contract
//!
//! * **Entry point.** A plugin exports one symbol per ABI major it speaks; for major 1
//!   that is [`ENTRY_SYMBOL_V1`] with the signature [`EntryFnV1`]. The host calls it once
//!   per load, right after loading, with a [`HostApi`] that stays valid for the life of
//!   the process, and gets back a [`PluginDescriptor`] that must stay valid while the
//!   library is loaded. A null return means the plugin refused to initialise.
//! * **Unloading.** A plugin from which a backend or work type was created is never
//!   unloaded. One found on the default search path that claims no section of the
//!   configuration is unloaded right after its entry point returned, and loaded again
//!   (entry point called again) if a later configuration needs it: the entry point must
//!   not start threads or register anything that outlives the library.
//! * **Growth.** Every struct begins with `struct_size` (its size as known to whoever
//!   filled it in) and only ever grows at the end within a major version. A reader uses a
//!   field only if `struct_size` covers it; a writer of an out-struct (such as
//!   [`WorkTypeInfo`]) writes only the fields covered by the `struct_size` the host set.
//!   The minimum size of each struct is its 1.0 size; [`crate::layout`] holds the
//!   frozen size of each struct at each minor and the routines that read and write
//!   structs of a peer of another minor.
//! * **Strings** are borrowed [`Str`] (`{ptr, len}`, UTF-8, not NUL-terminated), valid
//!   only for the duration of the call that passes them, unless documented otherwise.
//!   Whoever keeps one copies it.
//! * **Memory.** Whoever allocates frees: plugin handles (backend instances, work types,
//!   units) are freed by the plugin when the host calls `stop`, `destroy` or `free_unit`;
//!   host contexts (backend host, progress) are freed by the host when the plugin calls
//!   their `release` exactly once.
//! * **Errors** are reported by calling the [`ErrorSink`] passed to the call (the host
//!   copies the message) and returning a non-zero [`Status`].
//! * **Panics and exceptions never cross the boundary.** A Rust plugin catches them at
//!   every exported function (the safe layer of this crate does) and returns
//!   [`STATUS_PANIC`]; host callbacks do the same on their side.
//! * **Threads.** A plugin never runs on, and never blocks, the host's async runtime: it
//!   owns its threads (or its own runtime). Host callbacks are thread-safe and may be
//!   called from any plugin thread. Vtable functions return promptly.
//! * **File descriptors** handed across (connections, unit stdin/stdout) change owner:
//!   the receiver closes them, even when it refuses them or the call fails.

use std::ffi::{c_int, c_void};

/// The ABI major version this crate speaks. A host refuses plugins of another major.
pub const ABI_MAJOR: u32 = 1;
/// The ABI minor version this crate speaks (additions at the end of structs only).
///
/// * 1.0: the initial version.
/// * 1.1: [`BackendHost::connection_tls`].
/// * 1.2: self-describing sections ([`SectionClaim::flags`], [`SectionClaim::help`],
///   [`SectionClaim::fields`] of [`FieldDesc`], [`SectionClaim::bare_field`],
///   [`SectionClaim::v2_key`]) and typed configuration accessors in [`HostApi`]
///   (`config_string` ... `config_list_item`).
///
/// The frozen size of every struct at every minor is in [`crate::layout`].
pub const ABI_MINOR: u32 = 2;
/// Name of the entry symbol for ABI major 1 (without the trailing NUL).
pub const ENTRY_SYMBOL_V1: &str = "receptor_plugin_entry_v1";

/// Name of the optional marker a plugin exports (any data symbol, e.g. a `uint32_t`) to
/// say that it must run isolated in a plugin host process (a Rust plugin built with
/// `panic = "abort"`, or a C plugin that may abort): a host loading plugins into its own
/// process refuses it, naming the `isolation: process` form of the `plugins:` entry.
/// [`crate::export_plugin!`] exports it for `panic_abort_allowed` plugins built with
/// `panic = "abort"`; C plugins use `RECEPTOR_PLUGIN_REQUIRES_ISOLATION`.
pub const REQUIRES_ISOLATION_SYMBOL: &str = "receptor_plugin_requires_isolation";

/// Signature of [`ENTRY_SYMBOL_V1`].
pub type EntryFnV1 = unsafe extern "C" fn(host: *const HostApi) -> *const PluginDescriptor;

/// Result code of a fallible ABI call.
pub type Status = i32;
/// The call succeeded.
pub const STATUS_OK: Status = 0;
/// The call failed; the error sink received the reason.
pub const STATUS_ERROR: Status = 1;
/// The plugin panicked (or threw); the error sink received what is known.
pub const STATUS_PANIC: Status = 2;
/// Since 1.2, from the configuration accessors: the key is not in the section (not an
/// error; the error sink is not called).
pub const STATUS_ABSENT: Status = 3;

/// [`BackendHost::connection`] framing: a byte stream, each message preceded by its
/// length as a little-endian u16 (receptor's TCP framing).
pub const FRAMING_LEN16LE: u32 = 1;
/// [`BackendHost::connection`] framing: a message-preserving socket (UDP,
/// `SOCK_SEQPACKET`), one message per datagram.
pub const FRAMING_DATAGRAM: u32 = 2;

/// [`SectionClaim::claim_type`]: the section configures a backend.
pub const CLAIM_BACKEND: u32 = 1;
/// [`SectionClaim::claim_type`]: the section configures a work type.
pub const CLAIM_WORK_TYPE: u32 = 2;

/// [`SectionClaim::flags`] (since 1.2): the backend runs TLS itself (below its own
/// protocol, as websockets do): the core passes the named `tls-server` / `tls-client`
/// settings inlined in the section's `tls` key instead of running TLS on the connection.
pub const CLAIM_FLAG_OWN_TLS: u32 = 1;

/// [`FieldDesc::field_type`]: a string.
pub const FIELD_STRING: u32 = 1;
/// [`FieldDesc::field_type`]: an integer.
pub const FIELD_INT: u32 = 2;
/// [`FieldDesc::field_type`]: a boolean (`true`, `false`; YAML 1.1 forms accepted).
pub const FIELD_BOOL: u32 = 3;
/// [`FieldDesc::field_type`]: a duration (Go's form, e.g. `1m30s`, or seconds).
pub const FIELD_DURATION: u32 = 4;
/// [`FieldDesc::field_type`]: a list of strings (a YAML list, or comma-separated on the
/// command line).
pub const FIELD_LIST: u32 = 5;
/// [`FieldDesc::field_type`]: a number.
pub const FIELD_FLOAT: u32 = 6;
/// [`FieldDesc::field_type`]: any value (a map, ...), passed on as JSON unchecked.
pub const FIELD_ANY: u32 = 7;

/// [`FieldDesc::flags`]: the field must be given.
pub const FIELD_REQUIRED: u32 = 1;

/// [`WorkTypeInfo::flags`]: submissions must carry a valid signature (`verifysignature`).
pub const WORK_TYPE_VERIFY_SIGNATURE: u32 = 1;
/// [`WorkTypeInfo::flags`]: clients may pass runtime `params` (`allowruntimeparams`).
pub const WORK_TYPE_ALLOW_RUNTIME_PARAMS: u32 = 2;

/// Unit state Pending (the numbers are the ones in receptor's `status` files).
pub const STATE_PENDING: u32 = 0;
/// Unit state Running.
pub const STATE_RUNNING: u32 = 1;
/// Unit state Succeeded.
pub const STATE_SUCCEEDED: u32 = 2;
/// Unit state Failed.
pub const STATE_FAILED: u32 = 3;
/// Unit state Canceled.
pub const STATE_CANCELED: u32 = 4;

/// Log level: error.
pub const LOG_ERROR: u32 = 1;
/// Log level: warning.
pub const LOG_WARN: u32 = 2;
/// Log level: information.
pub const LOG_INFO: u32 = 3;
/// Log level: debugging detail.
pub const LOG_DEBUG: u32 = 4;
/// Log level: tracing detail.
pub const LOG_TRACE: u32 = 5;

/// A borrowed UTF-8 string: `len` bytes at `ptr` (no NUL terminator). `len == 0` is the
/// empty string whatever `ptr` is.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Str {
    /// First byte (may be null when `len` is 0).
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

impl Str {
    /// The empty string.
    pub const EMPTY: Str = Str {
        ptr: std::ptr::null(),
        len: 0,
    };

    /// Borrows `s`; the result is valid as long as `s` is.
    pub const fn new(s: &str) -> Str {
        Str {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// Borrows raw bytes (for paths, which need not be UTF-8).
    pub const fn from_bytes(b: &[u8]) -> Str {
        Str {
            ptr: b.as_ptr(),
            len: b.len(),
        }
    }

    /// The bytes.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that stay valid and unmodified for `'a`.
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            return &[];
        }
        // SAFETY: the caller guarantees `len` readable bytes at `ptr` for 'a.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The string, with invalid UTF-8 replaced.
    ///
    /// # Safety
    /// As for [`Str::as_bytes`].
    pub unsafe fn to_string_lossy(self) -> String {
        // SAFETY: forwarded to the caller.
        String::from_utf8_lossy(unsafe { self.as_bytes() }).into_owned()
    }
}

/// Callbacks the host gives a plugin at entry; valid at least as long as the plugin's
/// library is loaded (the host never frees them).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HostApi {
    /// Size of this struct as filled in by the host.
    pub struct_size: usize,
    /// ABI major of the host.
    pub abi_major: u32,
    /// ABI minor of the host.
    pub abi_minor: u32,
    /// Host context for `log`.
    pub ctx: *mut c_void,
    /// Logs a message from the plugin at a `LOG_*` level. Thread-safe.
    pub log: Option<unsafe extern "C" fn(ctx: *mut c_void, level: u32, message: Str)>,
    /// Since 1.2: reads string field `key` of `config_json` (the section as passed to
    /// `create` / `start`). Copies at most `cap` bytes to `buf` and stores the full
    /// length in `*out_len` (larger than `cap`: call again with a larger buffer).
    /// Returns [`STATUS_ABSENT`] if the key is not there, [`STATUS_ERROR`] (with the
    /// key and the expected type in the sink) if it is not a string. Thread-safe, as are
    /// the other accessors; keys are matched without regard to case.
    pub config_string: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            config_json: Str,
            key: Str,
            buf: *mut u8,
            cap: usize,
            out_len: *mut usize,
            err: *const ErrorSink,
        ) -> Status,
    >,
    /// Since 1.2: reads integer field `key` (a number, or a string holding one).
    pub config_int: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            config_json: Str,
            key: Str,
            out: *mut i64,
            err: *const ErrorSink,
        ) -> Status,
    >,
    /// Since 1.2: reads boolean field `key` into `*out` (1 or 0); `yes`/`no`, `on`/`off`
    /// and `true`/`false` in any case are booleans.
    pub config_bool: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            config_json: Str,
            key: Str,
            out: *mut u32,
            err: *const ErrorSink,
        ) -> Status,
    >,
    /// Since 1.2: reads duration field `key` in milliseconds (Go's form such as `1m30s`
    /// or `250ms`; a bare number is seconds).
    pub config_duration_ms: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            config_json: Str,
            key: Str,
            out: *mut u64,
            err: *const ErrorSink,
        ) -> Status,
    >,
    /// Since 1.2: the number of items of list field `key` (a list of strings, or one
    /// string of comma-separated items).
    pub config_list_len: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            config_json: Str,
            key: Str,
            out: *mut usize,
            err: *const ErrorSink,
        ) -> Status,
    >,
    /// Since 1.2: item `index` of list field `key`, copied as by `config_string`.
    pub config_list_item: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            config_json: Str,
            key: Str,
            index: usize,
            buf: *mut u8,
            cap: usize,
            out_len: *mut usize,
            err: *const ErrorSink,
        ) -> Status,
    >,
}

/// What a plugin is and what it provides. Returned by the entry point; must stay valid
/// (with everything it points to) while the library is loaded.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PluginDescriptor {
    /// Size of this struct as built by the plugin.
    pub struct_size: usize,
    /// ABI major the plugin was built for.
    pub abi_major: u32,
    /// ABI minor the plugin was built for.
    pub abi_minor: u32,
    /// Plugin name (e.g. `tcp`).
    pub name: Str,
    /// Plugin version (e.g. `0.1.0`).
    pub version: Str,
    /// `claim_count` pointers to the config section kinds the plugin claims.
    pub claims: *const *const SectionClaim,
    /// Number of entries in `claims`.
    pub claim_count: usize,
}

/// One config section kind a plugin claims (e.g. `tcp-listener`) and what handles it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SectionClaim {
    /// Size of this struct as built by the plugin.
    pub struct_size: usize,
    /// The section kind, as written in the config (lower case).
    pub section_kind: Str,
    /// [`CLAIM_BACKEND`] or [`CLAIM_WORK_TYPE`].
    pub claim_type: u32,
    /// `CLAIM_FLAG_*` capability bits (since 1.2; before, this field was reserved and
    /// 0, which means no capability).
    pub flags: u32,
    /// Opaque plugin context passed back to `start` / `create`.
    pub claim_ctx: *mut c_void,
    /// The backend functions (set for [`CLAIM_BACKEND`], else null).
    pub backend: *const BackendVtable,
    /// The work-type functions (set for [`CLAIM_WORK_TYPE`], else null).
    pub work_type: *const WorkTypeVtable,
    /// Since 1.2: one line of help for the section (`--help`). Empty: none.
    pub help: Str,
    /// Since 1.2: `field_count` descriptions of the section's fields; with none, the
    /// section is not described and takes any keys (as before 1.2).
    pub fields: *const FieldDesc,
    /// Since 1.2: number of entries at `fields`.
    pub field_count: usize,
    /// Since 1.2: the field a bare command-line value sets (`--kind value`), empty if
    /// none.
    pub bare_field: Str,
    /// Since 1.2: the key of the section's map in the version-2 form (e.g.
    /// `tcp-listeners`), empty if the section has none there.
    pub v2_key: Str,
}

/// Since 1.2: one field of a section, as `--help`, the command line, the version-2 form
/// and the type checks see it. Valid for as long as its [`SectionClaim`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FieldDesc {
    /// Size of this struct as built by the plugin.
    pub struct_size: usize,
    /// The key, lower case.
    pub name: Str,
    /// `FIELD_*` type.
    pub field_type: u32,
    /// `FIELD_REQUIRED` and other `FIELD_*` flag bits.
    pub flags: u32,
    /// The default, as shown in `--help` (empty: none).
    pub default_value: Str,
    /// One line of help.
    pub help: Str,
}

/// Where a plugin reports why a call failed. Borrowed for the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ErrorSink {
    /// Size of this struct as filled in by the host.
    pub struct_size: usize,
    /// Host context for `set`.
    pub ctx: *mut c_void,
    /// Records the error message (copied by the host; the last call wins).
    pub set: Option<unsafe extern "C" fn(ctx: *mut c_void, message: Str)>,
}

/// The host side of one running backend instance.
///
/// The struct itself is borrowed for the `start` call (copy it); `ctx` stays valid until
/// the plugin calls `release(ctx)`, which it does exactly once, when it will make no more
/// calls (at the latest after `stop`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BackendHost {
    /// Size of this struct as filled in by the host.
    pub struct_size: usize,
    /// Host context for the callbacks below.
    pub ctx: *mut c_void,
    /// Hands the host a connected descriptor (ownership moves to the host in every case)
    /// with its framing (`FRAMING_*`), a peer description for logs and whether it was
    /// accepted (`inbound` = 1) or dialed (0). Returns the session token (never 0), or 0
    /// if the host refused the connection (it is shutting down or stopped this backend).
    /// May block while the host has no room for new connections; thread-safe.
    pub connection: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            fd: c_int,
            framing: u32,
            peer: Str,
            inbound: u32,
        ) -> u64,
    >,
    /// Gives up the plugin's reference to `ctx`.
    pub release: Option<unsafe extern "C" fn(ctx: *mut c_void)>,
    /// Since 1.1 (read it only if `struct_size` covers it, else use `connection`): as
    /// `connection`, for a connection on which the plugin ran TLS itself, with the DER
    /// of the leaf certificate the peer presented (`peer_cert_len` bytes at
    /// `peer_cert`, borrowed for the call; length 0 when the peer presented none). The
    /// host then holds the peer to the certificate: the node ID the peer announces
    /// must be one of its ReceptorNames, unless the backend's TLS configuration sets
    /// `skipreceptornamescheck`.
    pub connection_tls: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            fd: c_int,
            framing: u32,
            peer: Str,
            inbound: u32,
            peer_cert: *const u8,
            peer_cert_len: usize,
        ) -> u64,
    >,
}

/// Size of a [`BackendHost`] of ABI 1.0 (the fields up to `release`): the least a host
/// passes. Fields beyond it exist only if the host's `struct_size` covers them.
pub const BACKEND_HOST_V1_0_SIZE: usize = crate::field_end!(BackendHost, release);
/// Size of a [`BackendHost`] of ABI 1.1 (with `connection_tls`).
pub const BACKEND_HOST_V1_1_SIZE: usize = crate::field_end!(BackendHost, connection_tls);
/// Size of a [`HostApi`] of ABI 1.0 and 1.1 (up to `log`).
pub const HOST_API_V1_0_SIZE: usize = crate::field_end!(HostApi, log);
/// Size of a [`HostApi`] of ABI 1.2 (with the configuration accessors).
pub const HOST_API_V1_2_SIZE: usize = crate::field_end!(HostApi, config_list_item);
/// Size of a [`SectionClaim`] of ABI 1.0 and 1.1 (up to `work_type`).
pub const SECTION_CLAIM_V1_0_SIZE: usize = crate::field_end!(SectionClaim, work_type);
/// Size of a [`SectionClaim`] of ABI 1.2 (with the section's description).
pub const SECTION_CLAIM_V1_2_SIZE: usize = crate::field_end!(SectionClaim, v2_key);

/// Functions of a backend section kind.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BackendVtable {
    /// Size of this struct as built by the plugin.
    pub struct_size: usize,
    /// Validates `config_json` (the section as a JSON object, keys lower case), starts
    /// listening or dialing on the plugin's own threads and stores the instance in
    /// `*out_instance`. The plugin owns the reference to `host.ctx` in every case, so
    /// it releases it also when `start` fails.
    pub start: Option<
        unsafe extern "C" fn(
            claim_ctx: *mut c_void,
            config_json: Str,
            host: *const BackendHost,
            err: *const ErrorSink,
            out_instance: *mut *mut c_void,
        ) -> Status,
    >,
    /// The session of the connection with this token ended (a dialer may redial).
    pub session_closed: Option<unsafe extern "C" fn(instance: *mut c_void, token: u64)>,
    /// Stops the instance and frees it; no call uses `instance` afterwards.
    pub stop: Option<unsafe extern "C" fn(instance: *mut c_void)>,
}

/// Properties of a configured work type, written by `create`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WorkTypeInfo {
    /// Size of this struct as allocated by the host (write only fields it covers).
    pub struct_size: usize,
    /// The name clients use in `work submit` (owned by the plugin, valid while the work
    /// type lives; the host copies it).
    pub name: Str,
    /// `WORK_TYPE_*` bits.
    pub flags: u32,
    /// Reserved, 0.
    pub reserved: u32,
}

/// How the host reports a unit's progress. The struct is borrowed for the call (copy
/// it); `ctx` stays valid until the plugin calls `release(ctx)`, exactly once, whether
/// or not the call that passed it succeeded.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Size of this struct as filled in by the host.
    pub struct_size: usize,
    /// Host context for the callbacks below.
    pub ctx: *mut c_void,
    /// Replaces the unit's state (`STATE_*`), detail and extra data (a JSON value, or
    /// empty for null). Thread-safe, never blocks; the latest report wins.
    pub report:
        Option<unsafe extern "C" fn(ctx: *mut c_void, state: u32, detail: Str, extra_json: Str)>,
    /// Gives up the plugin's reference to `ctx`.
    pub release: Option<unsafe extern "C" fn(ctx: *mut c_void)>,
}

/// Everything a work type needs to start one unit. Borrowed for the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct StartRequest {
    /// Size of this struct as filled in by the host.
    pub struct_size: usize,
    /// The unit ID.
    pub unit_id: Str,
    /// The unit's folder (path bytes).
    pub unit_dir: Str,
    /// The payload, open for reading from the start; owned by the plugin from now on.
    pub stdin_fd: c_int,
    /// The results file, open for appending; owned by the plugin from now on.
    pub stdout_fd: c_int,
    /// Runtime command-line parameters (`params`), empty if none.
    pub params: Str,
    /// Every other submit parameter as a JSON object of strings.
    pub extra_params_json: Str,
}

/// Everything a work type needs to pick up a unit that was running when the node
/// stopped. Borrowed for the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ReattachRequest {
    /// Size of this struct as filled in by the host.
    pub struct_size: usize,
    /// The unit ID.
    pub unit_id: Str,
    /// The unit's folder (path bytes).
    pub unit_dir: Str,
    /// The unit's `ExtraData` as last saved (JSON), empty for null.
    pub extra_json: Str,
}

/// Functions of a work-type section kind.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WorkTypeVtable {
    /// Size of this struct as built by the plugin.
    pub struct_size: usize,
    /// Validates `config_json` (the section, keys lower case), fills `*out_info` and
    /// stores the work type in `*out_work_type`.
    pub create: Option<
        unsafe extern "C" fn(
            claim_ctx: *mut c_void,
            config_json: Str,
            err: *const ErrorSink,
            out_info: *mut WorkTypeInfo,
            out_work_type: *mut *mut c_void,
        ) -> Status,
    >,
    /// Starts a unit and stores its handle in `*out_unit`. The descriptors and the
    /// progress reference belong to the plugin in every case.
    pub start: Option<
        unsafe extern "C" fn(
            work_type: *mut c_void,
            request: *const StartRequest,
            progress: *const Progress,
            err: *const ErrorSink,
            out_unit: *mut *mut c_void,
        ) -> Status,
    >,
    /// Re-attaches to a unit that was running when the node stopped; an error means it
    /// cannot (the host then marks the unit failed with the message). The progress
    /// reference belongs to the plugin in every case.
    pub reattach: Option<
        unsafe extern "C" fn(
            work_type: *mut c_void,
            request: *const ReattachRequest,
            progress: *const Progress,
            err: *const ErrorSink,
            out_unit: *mut *mut c_void,
        ) -> Status,
    >,
    /// Asks a unit to stop; it then reports Canceled (or a final state reached first).
    pub cancel: Option<unsafe extern "C" fn(unit: *mut c_void, err: *const ErrorSink) -> Status>,
    /// Frees a unit handle (the unit itself may still be finishing and reporting).
    pub free_unit: Option<unsafe extern "C" fn(unit: *mut c_void)>,
    /// Frees a work type; called only after every unit handle of it was freed.
    pub destroy: Option<unsafe extern "C" fn(work_type: *mut c_void)>,
}

/// Whether a struct whose `struct_size` is `size` contains the field that ends at
/// `offset + field_size`.
pub const fn covers(size: usize, offset: usize, field_size: usize) -> bool {
    size >= offset + field_size
}
