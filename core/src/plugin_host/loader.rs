//! Finding plugin files, loading them and validating their descriptors.

use std::ffi::OsStr;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use receptor_plugin_sdk::layout;
use receptor_plugin_sdk::{abi, describe};

use super::{
    backend::BackendFns, ffi, worktype::WorkTypeFns, ClaimEntry, ClaimFns, PluginError, PluginInfo,
    SendPtr,
};

/// The environment variable listing extra plugin files or folders (`:`-separated).
pub const PLUGIN_PATH_ENV: &str = "RECEPTOR_PLUGIN_PATH";
/// The system folder searched by default.
pub const SYSTEM_PLUGIN_DIR: &str = "/usr/lib/receptor/plugins";
/// Plugins in the executable's folder must be named `libreceptor_*` (the folder also
/// holds unrelated files, e.g. in a cargo target folder); the unknown-section error
/// lists the shared libraries passed over there.
const EXE_DIR_PREFIX: &str = "libreceptor_";
/// More claims than this in one descriptor means the descriptor is garbage.
const MAX_CLAIMS: usize = 4096;

/// Where a plugin path came from, which decides which files in a folder are plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Named in the config: every shared library in a folder is a plugin.
    Config,
    /// Named in `RECEPTOR_PLUGIN_PATH`: every shared library in a folder is a plugin.
    Env,
    /// The executable's folder: only `libreceptor_*` shared libraries.
    ExeDir,
    /// The system folder: every shared library is a plugin.
    System,
}

impl Origin {
    /// Where such a path comes from, for error messages.
    pub(super) fn describe(self) -> &'static str {
        match self {
            Origin::Config => "configuration",
            Origin::Env => PLUGIN_PATH_ENV,
            Origin::ExeDir => "the executable's folder, libreceptor_* files only",
            Origin::System => "system folder",
        }
    }
}

/// The default search path, in priority order: `RECEPTOR_PLUGIN_PATH`, the folder of
/// the running executable, `/usr/lib/receptor/plugins`.
pub fn default_search_path() -> Vec<PathBuf> {
    default_search_locations()
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

pub(super) fn default_search_locations() -> Vec<(PathBuf, Origin)> {
    let mut locations = Vec::new();
    if let Some(var) = std::env::var_os(PLUGIN_PATH_ENV) {
        locations.extend(
            std::env::split_paths(&var)
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| (p, Origin::Env)),
        );
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        locations.push((dir, Origin::ExeDir));
    }
    locations.push((PathBuf::from(SYSTEM_PLUGIN_DIR), Origin::System));
    locations
}

fn is_shared_library(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.ends_with(".so") || name.contains(".so.") || name.ends_with(".dylib")
}

/// What a plugin path holds: the plugin files to load and the shared libraries passed
/// over (with why).
#[derive(Debug, Default)]
pub(super) struct Listing {
    /// The files to load, sorted.
    pub(super) files: Vec<PathBuf>,
    /// Shared libraries that are not loaded, each with the reason.
    pub(super) skipped: Vec<(PathBuf, String)>,
}

/// The plugin files a configured path names: the file itself, or the shared
/// libraries in a folder (sorted, not recursive). In the executable's folder only
/// `libreceptor_*` libraries are plugins; the others are listed as skipped.
pub(super) fn plugin_files(path: &Path, origin: Origin) -> Result<Listing, PluginError> {
    let err = |reason: String| PluginError::Path {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.is_file() {
        return Ok(Listing {
            files: vec![path.to_path_buf()],
            skipped: Vec::new(),
        });
    }
    let mut listing = Listing::default();
    for entry in std::fs::read_dir(path).map_err(|e| err(e.to_string()))? {
        let entry = entry.map_err(|e| err(e.to_string()))?;
        let name = entry.file_name();
        if !is_shared_library(&name) || !entry.path().is_file() {
            continue;
        }
        if origin == Origin::ExeDir && !name.to_string_lossy().starts_with(EXE_DIR_PREFIX) {
            listing.skipped.push((
                entry.path(),
                format!("not named {EXE_DIR_PREFIX}* in the executable's folder"),
            ));
        } else {
            listing.files.push(entry.path());
        }
    }
    listing.files.sort();
    listing.skipped.sort();
    Ok(listing)
}

/// A plugin that passed every check.
pub(super) struct LoadedPlugin {
    pub(super) info: PluginInfo,
    pub(super) claims: Vec<(String, ClaimEntry)>,
    /// The library: dropping it unloads the plugin (only while nothing of it is in use).
    pub(super) lib: Library,
}

/// Loads one plugin file, calls its entry point and validates what it returns.
pub(super) fn load_plugin(path: &Path) -> Result<LoadedPlugin, PluginError> {
    load_plugin_as(path, abi::ABI_MINOR)
}

/// [`load_plugin`], presenting the plugin the [`abi::HostApi`] of a host of ABI
/// 1.`host_minor` (the compatibility tests check plugins against older hosts this way).
pub(super) fn load_plugin_as(path: &Path, host_minor: u32) -> Result<LoadedPlugin, PluginError> {
    let load_err = |reason: String| PluginError::Load {
        path: path.to_path_buf(),
        reason,
    };
    // SAFETY: loading a library runs its initialisers. Only files the operator put on
    // the configured or default plugin path are loaded.
    let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| load_err(e.to_string()))?;
    if !super::isolate::in_plugin_host_process() {
        let marker = format!("{}\0", abi::REQUIRES_ISOLATION_SYMBOL);
        // SAFETY: the symbol is only looked up, never read or called.
        if unsafe { lib.get::<*const ()>(marker.as_bytes()) }.is_ok() {
            std::mem::forget(lib);
            return Err(PluginError::RequiresIsolation {
                path: path.to_path_buf(),
            });
        }
    }
    let symbol = format!("{}\0", abi::ENTRY_SYMBOL_V1);
    // SAFETY: the symbol, if present, has the ABI v1 entry signature by contract.
    let entry = match unsafe { lib.get::<abi::EntryFnV1>(symbol.as_bytes()) } {
        Ok(entry) => *entry,
        Err(_) => {
            let err = missing_entry(path, &lib);
            // Kept loaded, as every library that failed: its initialisers ran.
            std::mem::forget(lib);
            return Err(err);
        }
    };
    let (api, log_ctx) = ffi::host_api(path, host_minor);
    // SAFETY: calling the plugin's entry point with a HostApi that is never freed.
    let desc = unsafe { entry(api) };
    if desc.is_null() {
        std::mem::forget(lib);
        return Err(load_err(
            "its entry point refused to initialise (returned null)".to_owned(),
        ));
    }
    // SAFETY: the descriptor is valid while the library is loaded; every field read
    // below is checked against its struct_size first.
    let (info, claims) = match unsafe { read_descriptor(path, desc) } {
        Ok(read) => read,
        Err(e) => {
            std::mem::forget(lib);
            return Err(e);
        }
    };
    let _ = log_ctx.name.set(info.name.clone());
    Ok(LoadedPlugin { info, claims, lib })
}

/// The error for a library without the v1 entry symbol: an ABI mismatch if it exports
/// the entry of another major, else "not a plugin".
fn missing_entry(path: &Path, lib: &Library) -> PluginError {
    for major in (2..=16).chain(std::iter::once(0)) {
        let symbol = format!("receptor_plugin_entry_v{major}\0");
        // SAFETY: the symbol is only looked up, never called.
        if unsafe { lib.get::<*const ()>(symbol.as_bytes()) }.is_ok() {
            return PluginError::AbiMismatch {
                path: path.to_path_buf(),
                plugin_major: major,
                plugin_minor: 0,
                host_major: abi::ABI_MAJOR,
                host_minor: abi::ABI_MINOR,
            };
        }
    }
    PluginError::Load {
        path: path.to_path_buf(),
        reason: format!("not a receptor plugin (no symbol {})", abi::ENTRY_SYMBOL_V1),
    }
}

/// Validates a descriptor and copies what the host needs out of it.
///
/// # Safety
/// `desc` must point to a descriptor at least as large as its leading `struct_size`,
/// `abi_major` and `abi_minor` fields, valid while the library is loaded (what is kept is
/// copied out).
unsafe fn read_descriptor(
    path: &Path,
    desc: *const abi::PluginDescriptor,
) -> Result<(PluginInfo, Vec<(String, ClaimEntry)>), PluginError> {
    let bad = |reason: String| PluginError::BadDescriptor {
        path: path.to_path_buf(),
        reason,
    };
    // Read the header fields one by one: a descriptor of another major may be shorter.
    let field = |offset: usize| desc.cast::<u8>().wrapping_add(offset);
    // SAFETY: every descriptor starts with struct_size, abi_major, abi_minor.
    let size = unsafe {
        field(offset_of!(abi::PluginDescriptor, struct_size))
            .cast::<usize>()
            .read()
    };
    if size < offset_of!(abi::PluginDescriptor, abi_minor) + size_of::<u32>() {
        return Err(bad(format!("descriptor of {size} bytes is too small")));
    }
    // SAFETY: covered by struct_size, checked above.
    let major = unsafe {
        field(offset_of!(abi::PluginDescriptor, abi_major))
            .cast::<u32>()
            .read()
    };
    // SAFETY: likewise.
    let minor = unsafe {
        field(offset_of!(abi::PluginDescriptor, abi_minor))
            .cast::<u32>()
            .read()
    };
    if major != abi::ABI_MAJOR {
        return Err(PluginError::AbiMismatch {
            path: path.to_path_buf(),
            plugin_major: major,
            plugin_minor: minor,
            host_major: abi::ABI_MAJOR,
            host_minor: abi::ABI_MINOR,
        });
    }
    if minor > abi::ABI_MINOR {
        tracing::warn!(
            target: "receptor::plugin",
            plugin = %path.display(),
            "built for plugin ABI {major}.{minor}, newer than this receptor's ABI {}.{}: \
             what the newer minor adds is ignored",
            abi::ABI_MAJOR,
            abi::ABI_MINOR
        );
    }
    // SAFETY: the descriptor has struct_size readable bytes (contract); read_prefix
    // reads only the whole minors they cover.
    let d = unsafe { layout::read_prefix(desc) }.map_err(|e| bad(e.to_string()))?;
    // SAFETY: descriptor strings are valid while the library is loaded; they are copied.
    let name = unsafe { d.name.to_string_lossy() };
    // SAFETY: likewise.
    let version = unsafe { d.version.to_string_lossy() };
    if name.is_empty() {
        return Err(bad("the plugin has no name".to_owned()));
    }
    if d.claim_count > MAX_CLAIMS || (d.claim_count > 0 && d.claims.is_null()) {
        return Err(bad(format!("bad claim list ({} claims)", d.claim_count)));
    }
    let mut claims: Vec<(String, ClaimEntry)> = Vec::with_capacity(d.claim_count);
    for i in 0..d.claim_count {
        // SAFETY: the array has claim_count entries by contract.
        let claim = unsafe { *d.claims.wrapping_add(i) };
        // SAFETY: entries are null or valid claims (checked and read in read_claim).
        let (kind, entry) =
            unsafe { read_claim(claim) }.map_err(|r| bad(format!("claim {i}: {r}")))?;
        if claims.iter().any(|(k, _)| *k == kind) {
            return Err(bad(format!("section {kind:?} is claimed twice")));
        }
        claims.push((kind, entry));
    }
    Ok((
        PluginInfo {
            path: path.to_path_buf(),
            name,
            version,
            abi: (major, minor),
        },
        claims,
    ))
}

/// Validates one claim.
///
/// # Safety
/// `claim` must be null or point to a claim of at least its `struct_size` bytes whose
/// vtables are valid while the library is loaded (its claims are used only then).
unsafe fn read_claim(claim: *const abi::SectionClaim) -> Result<(String, ClaimEntry), String> {
    // SAFETY: null or a claim of struct_size readable bytes (contract).
    let c = unsafe { layout::read_prefix(claim) }.map_err(|e| e.to_string())?;
    // SAFETY: claim strings are valid while the library is loaded; they are copied.
    let kind = unsafe { c.section_kind.to_string_lossy() }.to_ascii_lowercase();
    if kind.is_empty() {
        return Err("empty section kind".to_owned());
    }
    let fns = match c.claim_type {
        abi::CLAIM_BACKEND if !c.backend.is_null() => {
            // SAFETY: non-null vtable, valid while the library is loaded; from_vtable checks
            // its size.
            ClaimFns::Backend(
                unsafe { BackendFns::from_vtable(c.backend) }
                    .map_err(|r| format!("{kind}: {r}"))?,
            )
        }
        abi::CLAIM_WORK_TYPE if !c.work_type.is_null() => {
            // SAFETY: non-null vtable, valid while the library is loaded; from_vtable checks
            // its size.
            ClaimFns::WorkType(
                unsafe { WorkTypeFns::from_vtable(c.work_type) }
                    .map_err(|r| format!("{kind}: {r}"))?,
            )
        }
        t => return Err(format!("{kind}: claim type {t} without its vtable")),
    };
    // SAFETY: the description (1.2; zero, i.e. absent, from older plugins) is valid
    // while the library is loaded; it is copied.
    let desc = unsafe { read_description(&c) }.map_err(|r| format!("{kind}: {r}"))?;
    Ok((
        kind,
        ClaimEntry {
            ctx: SendPtr(c.claim_ctx),
            fns,
            desc,
        },
    ))
}

/// More fields than this in one section means the description is garbage.
const MAX_FIELDS: usize = 1024;

/// Copies a claim's self-description (ABI 1.2).
///
/// # Safety
/// The claim's strings and field array are valid (or empty / null).
unsafe fn read_description(c: &abi::SectionClaim) -> Result<describe::SectionDesc, String> {
    if c.field_count > MAX_FIELDS || (c.field_count > 0 && c.fields.is_null()) {
        return Err(format!("bad field list ({} fields)", c.field_count));
    }
    let text = |s: abi::Str| {
        // SAFETY: descriptor strings are valid while the library is loaded; they are copied.
        let s = unsafe { s.to_string_lossy() };
        (!s.is_empty()).then_some(s)
    };
    let mut fields = Vec::with_capacity(c.field_count);
    for i in 0..c.field_count {
        // SAFETY: the array has field_count entries; read_prefix checks each size.
        let f = unsafe { layout::read_prefix(c.fields.wrapping_add(i)) }
            .map_err(|e| format!("field {i}: {e}"))?;
        let Some(name) = text(f.name) else {
            return Err(format!("field {i} has no name"));
        };
        fields.push(describe::Field {
            name: name.to_ascii_lowercase(),
            field_type: describe::FieldType::from_abi(f.field_type),
            required: f.flags & abi::FIELD_REQUIRED != 0,
            default: text(f.default_value),
            help: text(f.help).unwrap_or_default(),
        });
    }
    Ok(describe::SectionDesc {
        help: text(c.help).unwrap_or_default(),
        fields,
        bare_field: text(c.bare_field).map(|s| s.to_ascii_lowercase()),
        v2_key: text(c.v2_key).map(|s| s.to_ascii_lowercase()),
        own_tls: c.flags & abi::CLAIM_FLAG_OWN_TLS != 0,
    })
}
