//! Loading plugins through the C ABI and keeping the registry of what they provide.
//!
//! Backends (how nodes connect) and work types (what units run) come from plugins:
//! shared libraries speaking the ABI of `receptor-plugin-sdk`. The host
//!
//! * finds them: the paths given in the config (files or folders) plus a default search
//!   path ([`default_search_path`]): `RECEPTOR_PLUGIN_PATH`, the folder of the running
//!   executable (so `cargo build` output works with no config; there only
//!   `libreceptor_*` files are plugins) and `/usr/lib/receptor/plugins`;
//! * loads each, checks its ABI major (a wrong major is refused naming the file and both
//!   versions) and logs its path, name, version and ABI in one line. A plugin that was used is never
//!   unloaded; one found on the default search path that the configuration does not need
//!   is unloaded again ([`PluginHost::unload_unused`]) and stays known: it is loaded back
//!   the first time one of its sections is used (e.g. after `reload`);
//! * keeps a registry of which plugin claims which config section kind (two plugins
//!   claiming one kind is an error; a section nobody claims is an error listing what is
//!   available, the paths searched and the libraries skipped);
//! * adapts the C vtables to the daemon's Rust world: a backend instance delivers
//!   connected descriptors on a bounded channel ([`BackendInstance`]); a work type is an
//!   `Arc<dyn WorkType>` whose progress callbacks feed the unit's `watch` channel.
//!
//! Plugin code runs on the plugin's own threads. Host callbacks never panic across the
//! boundary and never block a thread of the host's async runtime.

mod backend;
mod checks;
mod config_access;
mod ffi;
pub mod isolate;
mod loader;
mod worktype;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use libloading::os::unix::Library;

use receptor_plugin_sdk::abi;
pub use receptor_plugin_sdk::describe::{Field, FieldType, SectionDesc};

pub use backend::{BackendConnection, BackendHandle, BackendInstance};
pub use isolate::{run_plugin_host, IsolationError};
pub use loader::default_search_path;
pub use receptor_plugin_sdk::SessionToken;

use crate::work::worktype::WorkType;

/// Errors of loading plugins and of using what they provide.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// A configured plugin path does not exist or cannot be read.
    #[error("plugin path {path}: {reason}")]
    Path {
        /// The path as configured.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The dynamic loader refused the file, or the file is not a plugin.
    #[error("cannot load plugin {path}: {reason}")]
    Load {
        /// The plugin file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The plugin says it must run isolated (it may abort, e.g. a Rust plugin built with
    /// `panic = "abort"`) and was asked to load into the node's own process.
    #[error(
        "plugin {path} is built to run isolated (a panic or abort in it would end the whole \
         node): load it with `isolation: process`, as in \
         `plugins: [{{path: {path}, isolation: process}}]`"
    )]
    RequiresIsolation {
        /// The plugin file.
        path: PathBuf,
    },
    /// An isolated plugin's host process failed.
    #[error(transparent)]
    Isolation(#[from] isolate::IsolationError),
    /// The plugin was built for another ABI major.
    #[error(
        "plugin {path} was built for plugin ABI {plugin_major}.{plugin_minor}, \
         this receptor supports ABI {host_major}.{host_minor}"
    )]
    AbiMismatch {
        /// The plugin file.
        path: PathBuf,
        /// The plugin's ABI major.
        plugin_major: u32,
        /// The plugin's ABI minor (0 if unknown).
        plugin_minor: u32,
        /// The host's ABI major.
        host_major: u32,
        /// The host's ABI minor.
        host_minor: u32,
    },
    /// The plugin's descriptor breaks the ABI's rules.
    #[error("plugin {path}: bad descriptor: {reason}")]
    BadDescriptor {
        /// The plugin file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Two plugins claim the same config section kind.
    #[error("config section {kind:?} is claimed by two plugins: {first} and {second}")]
    DuplicateClaim {
        /// The section kind.
        kind: String,
        /// The plugin that claimed it first.
        first: String,
        /// The plugin that claimed it again.
        second: String,
    },
    /// Two plugin files have the same plugin name.
    #[error("plugin {name} is loaded twice: from {first} and from {second}")]
    DuplicatePlugin {
        /// The plugin name.
        name: String,
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
    },
    /// No loaded plugin claims a config section kind.
    #[error("unknown config section {kind:?}: no loaded plugin handles it (sections plugins handle: {available}; plugins loaded: {plugins}; searched: {searched}; skipped: {skipped})")]
    Unclaimed {
        /// The section kind.
        kind: String,
        /// The section kinds that are claimed, comma-separated.
        available: String,
        /// The plugins loaded (`name version (path)`), comma-separated.
        plugins: String,
        /// The plugin paths searched, in order, each with where it came from.
        searched: String,
        /// The shared libraries found there but not loaded, each with the reason.
        skipped: String,
    },
    /// A kind of Go receptor 1.6.9's own list that this build does not run, and no
    /// loaded plugin claims.
    #[error("config section {kind:?} ({what}, a kind of Go receptor 1.6.9) is not provided by this build of receptor: {hint}")]
    NotProvided {
        /// The section kind.
        kind: String,
        /// What the kind configures in Go receptor.
        what: &'static str,
        /// What the user can do about it.
        hint: &'static str,
    },
    /// The section kind is claimed, but as the other kind of thing.
    #[error("config section {kind:?} configures a {actual}, not a {expected}")]
    WrongClaimType {
        /// The section kind.
        kind: String,
        /// What the caller wanted.
        expected: &'static str,
        /// What the plugin provides.
        actual: &'static str,
    },
    /// A section does not match the description its plugin gave of it.
    #[error("{message}")]
    Invalid {
        /// What is wrong, naming the section kind and the key.
        message: String,
    },
    /// A plugin call failed (a configuration error, a failure, or a panic).
    #[error("plugin {plugin}: {message}")]
    Call {
        /// The plugin name.
        plugin: String,
        /// The plugin's message.
        message: String,
    },
}

/// Kinds of Go receptor 1.6.9's own list that this build does not run: what each
/// configures and what the user can do, for an error that is not mistaken for a typo.
fn not_provided(kind: &str) -> Option<(&'static str, &'static str)> {
    match kind.to_ascii_lowercase().as_str() {
        "work-kubernetes" => Some((
            "a work type that runs units as Kubernetes pods",
            "a work-type plugin can provide it: load one that claims \"work-kubernetes\" (plugins: key, RECEPTOR_PLUGIN_PATH or /usr/lib/receptor/plugins), or remove the section",
        )),
        "work-python" => Some((
            "a work type of Python plugins, deprecated: Go receptor 1.6.9 refuses it too",
            "remove the section (a work-command can run the Python code)",
        )),
        _ => None,
    }
}

/// Where to look for plugins.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Plugin files or folders named in the config; each must exist.
    pub paths: Vec<PathBuf>,
    /// Also load from [`default_search_path`] (missing folders there are skipped).
    pub default_search: bool,
    /// Plugin files or folders named in the config with `isolation: process`: each
    /// plugin runs in a plugin host process of its own ([`isolate`]).
    pub isolated: Vec<PathBuf>,
    /// The bound on a call into a plugin host ([`isolate::DEFAULT_CALL_TIMEOUT`] if
    /// unset).
    pub call_timeout: Option<std::time::Duration>,
}

/// A loaded plugin, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its ABI version (major, minor).
    pub abi: (u32, u32),
}

/// What a config section kind configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimType {
    /// A backend (`tcp-listener`, `tcp-peer`, ...).
    Backend,
    /// A work type (`echo-worktype`, `work-command`, ...).
    WorkType,
}

impl ClaimType {
    fn noun(self) -> &'static str {
        match self {
            ClaimType::Backend => "backend",
            ClaimType::WorkType => "work type",
        }
    }
}

/// A raw pointer the ABI declares thread-safe (plugin contexts and handles).
#[derive(Debug, Clone, Copy)]
struct SendPtr(*mut std::ffi::c_void);

// SAFETY: the ABI requires plugin handles and contexts to be usable from any thread.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// The validated functions of a claim.
#[derive(Clone, Copy)]
enum ClaimFns {
    Backend(backend::BackendFns),
    WorkType(worktype::WorkTypeFns),
}

impl ClaimFns {
    fn claim_type(&self) -> ClaimType {
        match self {
            ClaimFns::Backend(_) => ClaimType::Backend,
            ClaimFns::WorkType(_) => ClaimType::WorkType,
        }
    }
}

/// One claimed section kind.
#[derive(Clone)]
struct Claim {
    /// Index into `PluginHost::plugins`.
    plugin: usize,
    claim_type: ClaimType,
    /// What the plugin says about the section (ABI 1.2; empty for older plugins).
    desc: Arc<SectionDesc>,
}

/// A claim as read from a plugin's descriptor.
#[derive(Clone)]
struct ClaimEntry {
    ctx: SendPtr,
    fns: ClaimFns,
    desc: SectionDesc,
}

/// A loaded plugin library and the functions of its claims.
struct Live {
    /// Never dropped for a plugin that was used (its code and data stay in use); only
    /// [`PluginHost::unload_unused`] drops it.
    lib: ManuallyDrop<Library>,
    claims: BTreeMap<String, ClaimEntry>,
    /// A backend or work type was created from it: it can no longer be unloaded.
    used: bool,
}

/// A known plugin: loaded, or unloaded until one of its sections is needed.
struct Entry {
    /// Named in the configuration (never unloaded) rather than found on the default path.
    explicit: bool,
    live: Mutex<Option<Live>>,
    /// Set for a plugin that runs in a plugin host process (`live` is then always empty).
    isolated: Option<Arc<isolate::Supervisor>>,
}

impl Entry {
    fn live(&self) -> MutexGuard<'_, Option<Live>> {
        // The slot stays consistent even if a holder panicked: every change is one store.
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The known plugins and the registry of section kinds they claim.
pub struct PluginHost {
    plugins: Vec<PluginInfo>,
    /// Parallel to `plugins`.
    entries: Vec<Entry>,
    claims: BTreeMap<String, Claim>,
    /// The paths searched, as `path (origin[, why nothing came from it])`.
    searched: Vec<String>,
    /// Shared libraries found and not loaded, as `path: reason`.
    skipped: Vec<String>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("plugins", &self.plugins)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PluginHost {
    /// Loads the plugins named in `opts` (and the default search path if asked) and
    /// builds the registry. A plugin found again on the default search path under a
    /// name already loaded is skipped (earlier locations win: config paths, then
    /// `RECEPTOR_PLUGIN_PATH`, the executable's folder, the system folder).
    pub fn load(opts: &LoadOptions) -> Result<PluginHost, PluginError> {
        let mut host = PluginHost {
            plugins: Vec::new(),
            entries: Vec::new(),
            claims: BTreeMap::new(),
            searched: Vec::new(),
            skipped: Vec::new(),
        };
        let mut seen_files = Vec::new();
        for path in &opts.isolated {
            let listing = loader::plugin_files(path, loader::Origin::Config)?;
            host.searched.push(format!(
                "{} ({}, isolated)",
                path.display(),
                loader::Origin::Config.describe()
            ));
            host.note_skipped(&listing);
            for file in listing.files {
                let timeout = opts.call_timeout.unwrap_or(isolate::DEFAULT_CALL_TIMEOUT);
                host.load_isolated(&file, timeout, &mut seen_files)?;
            }
        }
        for path in &opts.paths {
            let listing = loader::plugin_files(path, loader::Origin::Config)?;
            host.searched.push(format!(
                "{} ({})",
                path.display(),
                loader::Origin::Config.describe()
            ));
            host.note_skipped(&listing);
            for file in listing.files {
                host.load_file(&file, true, &mut seen_files)?;
            }
        }
        if opts.default_search {
            for (dir, origin) in loader::default_search_locations() {
                let listing = match loader::plugin_files(&dir, origin) {
                    Ok(listing) => listing,
                    Err(e) => {
                        tracing::debug!("skipping plugin folder {}: {e}", dir.display());
                        host.searched.push(format!(
                            "{} ({}, not readable)",
                            dir.display(),
                            origin.describe()
                        ));
                        continue;
                    }
                };
                host.searched
                    .push(format!("{} ({})", dir.display(), origin.describe()));
                host.note_skipped(&listing);
                for file in listing.files {
                    host.load_file(&file, false, &mut seen_files)?;
                }
            }
        }
        Ok(host)
    }

    fn note_skipped(&mut self, listing: &loader::Listing) {
        self.skipped.extend(
            listing
                .skipped
                .iter()
                .map(|(path, why)| format!("{}: {why}", path.display())),
        );
    }

    /// Starts the plugin host of one isolated plugin and registers what it claims.
    fn load_isolated(
        &mut self,
        file: &Path,
        call_timeout: std::time::Duration,
        seen_files: &mut Vec<PathBuf>,
    ) -> Result<(), PluginError> {
        let canonical = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        if seen_files.contains(&canonical) {
            return Ok(());
        }
        seen_files.push(canonical);
        let (supervisor, info, claims) = isolate::Supervisor::start(file, call_timeout)?;
        if let Some(backend) = claims.iter().find(|c| c.backend) {
            return Err(IsolationError::BackendClaim {
                plugin: info.name,
                path: info.path,
                kind: backend.kind.clone(),
            }
            .into());
        }
        if let Some(prev) = self.plugins.iter().find(|p| p.name == info.name) {
            return Err(PluginError::DuplicatePlugin {
                name: info.name,
                first: prev.path.clone(),
                second: info.path,
            });
        }
        let index = self.plugins.len();
        for claim in &claims {
            if let Some(existing) = self.claims.get(&claim.kind) {
                return Err(PluginError::DuplicateClaim {
                    kind: claim.kind.clone(),
                    first: self.describe(existing.plugin),
                    second: format!("{} ({})", info.name, info.path.display()),
                });
            }
        }
        tracing::info!(
            path = %info.path.display(),
            plugin = %info.name,
            version = %info.version,
            abi = %format_args!("{}.{}", info.abi.0, info.abi.1),
            sections = %claims.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>().join(","),
            isolation = "process",
            "loaded plugin"
        );
        for claim in &claims {
            self.claims.insert(
                claim.kind.clone(),
                Claim {
                    plugin: index,
                    claim_type: ClaimType::WorkType,
                    desc: Arc::new(claim.desc()),
                },
            );
        }
        self.plugins.push(info);
        self.entries.push(Entry {
            explicit: true,
            live: Mutex::new(None),
            isolated: Some(supervisor),
        });
        Ok(())
    }

    fn load_file(
        &mut self,
        file: &Path,
        explicit: bool,
        seen_files: &mut Vec<PathBuf>,
    ) -> Result<(), PluginError> {
        let canonical = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        if seen_files.contains(&canonical) {
            return Ok(());
        }
        seen_files.push(canonical);
        let loaded = match loader::load_plugin(file) {
            Ok(loaded) => loaded,
            Err(PluginError::Load { path, reason }) if !explicit => {
                tracing::warn!("skipping {}: {reason}", path.display());
                self.skipped.push(format!("{}: {reason}", path.display()));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if let Some(prev) = self.plugins.iter().find(|p| p.name == loaded.info.name) {
            if explicit {
                return Err(PluginError::DuplicatePlugin {
                    name: loaded.info.name,
                    first: prev.path.clone(),
                    second: loaded.info.path,
                });
            }
            tracing::info!(
                "plugin {} from {} ignored: already loaded from {}",
                loaded.info.name,
                loaded.info.path.display(),
                prev.path.display()
            );
            self.skipped.push(format!(
                "{}: plugin {} already loaded from {}",
                loaded.info.path.display(),
                loaded.info.name,
                prev.path.display()
            ));
            return Ok(());
        }
        let index = self.plugins.len();
        for (kind, _) in &loaded.claims {
            if let Some(existing) = self.claims.get(kind) {
                return Err(PluginError::DuplicateClaim {
                    kind: kind.clone(),
                    first: self.describe(existing.plugin),
                    second: format!("{} ({})", loaded.info.name, loaded.info.path.display()),
                });
            }
        }
        tracing::info!(
            path = %loaded.info.path.display(),
            plugin = %loaded.info.name,
            version = %loaded.info.version,
            abi = %format_args!("{}.{}", loaded.info.abi.0, loaded.info.abi.1),
            sections = %loaded.claims.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(","),
            "loaded plugin"
        );
        let mut claims = BTreeMap::new();
        for (kind, entry) in loaded.claims {
            self.claims.insert(
                kind.clone(),
                Claim {
                    plugin: index,
                    claim_type: entry.fns.claim_type(),
                    desc: Arc::new(entry.desc.clone()),
                },
            );
            claims.insert(kind, entry);
        }
        self.plugins.push(loaded.info);
        self.entries.push(Entry {
            explicit,
            live: Mutex::new(Some(Live {
                lib: ManuallyDrop::new(loaded.lib),
                claims,
                used: false,
            })),
            isolated: None,
        });
        Ok(())
    }

    /// Unloads the plugins found on the default search path that claim none of the
    /// section kinds in `needed` and were not used yet: the node does not keep code it
    /// has no use for mapped. They stay known (listed, and their sections claimed) and
    /// are loaded again when one of their sections is used.
    pub fn unload_unused<'a>(&self, needed: impl IntoIterator<Item = &'a str>) {
        let needed: Vec<String> = needed.into_iter().map(|k| self.canonical(k)).collect();
        for (index, entry) in self.entries.iter().enumerate() {
            if entry.explicit {
                continue;
            }
            let mut live = entry.live();
            let unneeded = live
                .as_ref()
                .is_some_and(|l| !l.used && !l.claims.keys().any(|k| needed.contains(k)));
            if !unneeded {
                continue;
            }
            if let Some(mut l) = live.take() {
                l.claims.clear();
                // SAFETY: nothing created from this plugin exists (`used` is false) and
                // its claim pointers were just dropped, so no code or data of the
                // library is referenced any more.
                unsafe { ManuallyDrop::drop(&mut l.lib) };
                if let Some(p) = self.plugins.get(index) {
                    tracing::debug!("unloaded plugin {} (not needed)", p.name);
                }
            }
        }
    }

    /// The functions of `kind`'s claim, loading its plugin again if it was unloaded; the
    /// plugin is marked used (never unloaded from now on).
    fn use_claim(&self, plugin: usize, kind: &str) -> Result<(SendPtr, ClaimFns), PluginError> {
        let (Some(entry), Some(info)) = (self.entries.get(plugin), self.plugins.get(plugin)) else {
            return Err(self.unclaimed(kind));
        };
        let mut live = entry.live();
        if live.is_none() {
            let loaded = loader::load_plugin(&info.path)?;
            if loaded.info.name != info.name {
                std::mem::forget(loaded.lib);
                return Err(PluginError::Load {
                    path: info.path.clone(),
                    reason: format!(
                        "the file now holds plugin {}, not {}",
                        loaded.info.name, info.name
                    ),
                });
            }
            tracing::info!(
                "loaded plugin {} again from {}",
                info.name,
                info.path.display()
            );
            *live = Some(Live {
                lib: ManuallyDrop::new(loaded.lib),
                claims: loaded.claims.into_iter().collect(),
                used: false,
            });
        }
        let Some(l) = live.as_mut() else {
            return Err(self.unclaimed(kind));
        };
        let Some(&ClaimEntry { ctx, fns, .. }) = l.claims.get(kind) else {
            return Err(PluginError::Load {
                path: info.path.clone(),
                reason: format!("the plugin no longer claims section {kind:?}"),
            });
        };
        l.used = true;
        Ok((ctx, fns))
    }

    fn describe(&self, plugin: usize) -> String {
        self.plugins
            .get(plugin)
            .map(|p| format!("{} ({})", p.name, p.path.display()))
            .unwrap_or_default()
    }

    /// The plugins found, in load order (including those unloaded as not needed).
    pub fn plugins(&self) -> &[PluginInfo] {
        &self.plugins
    }

    /// Every claimed section kind, sorted.
    pub fn section_kinds(&self) -> impl Iterator<Item = &str> {
        self.claims.keys().map(String::as_str)
    }

    /// What `kind` configures and which plugin claims it, if any plugin does.
    pub fn claims(&self, kind: &str) -> Option<(ClaimType, &PluginInfo)> {
        let claim = self.claims.get(&self.canonical(kind))?;
        let plugin = self.plugins.get(claim.plugin)?;
        Some((claim.claim_type, plugin))
    }

    /// What the plugin claiming `kind` says about it (fields, help, capabilities);
    /// empty for a plugin built before ABI 1.2.
    pub fn section_desc(&self, kind: &str) -> Option<&SectionDesc> {
        self.claims.get(&self.canonical(kind)).map(|c| &*c.desc)
    }

    /// Whether the backend of `kind` runs TLS itself: its plugin declares
    /// [`abi::CLAIM_FLAG_OWN_TLS`] (ABI 1.2). A plugin built before 1.2 cannot say so;
    /// for it, as before, a `ws-*` section runs its own TLS.
    pub fn runs_own_tls(&self, kind: &str) -> bool {
        let kind = self.canonical(kind);
        let Some(claim) = self.claims.get(&kind) else {
            return false;
        };
        let before_1_2 = self
            .plugins
            .get(claim.plugin)
            .is_some_and(|p| p.abi.0 == 1 && p.abi.1 < 2);
        claim.desc.own_tls || (before_1_2 && kind.starts_with("ws-"))
    }

    /// Like [`PluginHost::claims`], but an unclaimed kind is an error that lists the
    /// section kinds available and the plugins loaded.
    pub fn require(&self, kind: &str) -> Result<ClaimType, PluginError> {
        self.claims(kind)
            .map(|(t, _)| t)
            .ok_or_else(|| self.unclaimed(kind))
    }

    fn unclaimed(&self, kind: &str) -> PluginError {
        if let Some((what, hint)) = not_provided(kind) {
            return PluginError::NotProvided {
                kind: kind.to_owned(),
                what,
                hint,
            };
        }
        let available = self.section_kinds().collect::<Vec<_>>().join(", ");
        let plugins = self
            .plugins
            .iter()
            .map(|p| format!("{} {} ({})", p.name, p.version, p.path.display()))
            .collect::<Vec<_>>()
            .join(", ");
        let list = |items: &[String]| {
            if items.is_empty() {
                "none".to_owned()
            } else {
                items.join(", ")
            }
        };
        PluginError::Unclaimed {
            searched: list(&self.searched),
            skipped: list(&self.skipped),
            kind: kind.to_owned(),
            available: if available.is_empty() {
                "none".to_owned()
            } else {
                available
            },
            plugins: if plugins.is_empty() {
                "none".to_owned()
            } else {
                plugins
            },
        }
    }

    /// The supervisor of the isolated plugin claiming `kind` (canonical), if it is one.
    fn isolated(&self, kind: &str) -> Option<&Arc<isolate::Supervisor>> {
        let claim = self.claims.get(kind)?;
        self.entries.get(claim.plugin)?.isolated.as_ref()
    }

    /// The functions of `kind`'s claim and its plugin, checked to be of `expected` type.
    fn claim(
        &self,
        kind: &str,
        expected: ClaimType,
    ) -> Result<(SendPtr, ClaimFns, &PluginInfo), PluginError> {
        let kind = self.canonical(kind);
        let claim = self
            .claims
            .get(&kind)
            .ok_or_else(|| self.unclaimed(&kind))?;
        let plugin = self
            .plugins
            .get(claim.plugin)
            .ok_or_else(|| self.unclaimed(&kind))?;
        if claim.claim_type != expected {
            return Err(PluginError::WrongClaimType {
                kind,
                expected: expected.noun(),
                actual: claim.claim_type.noun(),
            });
        }
        if self
            .entries
            .get(claim.plugin)
            .is_some_and(|e| e.isolated.is_some())
        {
            return Err(PluginError::WrongClaimType {
                kind,
                expected: expected.noun(),
                actual: "work type in a plugin host",
            });
        }
        let (ctx, fns) = self.use_claim(claim.plugin, &kind)?;
        if fns.claim_type() != expected {
            return Err(PluginError::WrongClaimType {
                kind,
                expected: expected.noun(),
                actual: fns.claim_type().noun(),
            });
        }
        Ok((ctx, fns, plugin))
    }

    /// The claimed kind a section kind names: itself, or the kind whose version-2 key
    /// it is (the map form's `acme-things:` holds `acme-thing` sections), lower case.
    fn canonical(&self, kind: &str) -> String {
        let kind = kind.to_ascii_lowercase();
        if self.claims.contains_key(&kind) {
            return kind;
        }
        self.claims
            .iter()
            .find(|(_, c)| c.desc.v2_key.as_deref() == Some(kind.as_str()))
            .map(|(k, _)| k.clone())
            .unwrap_or(kind)
    }

    /// A section as its plugin gets it: a bare command-line value (`--kind value`, kept
    /// under the empty key by the loader) moved to the field the plugin named for it.
    fn normalise(&self, kind: &str, config: &serde_json::Value) -> serde_json::Value {
        let mut config = config.clone();
        let bare = self
            .claims
            .get(kind)
            .and_then(|c| c.desc.bare_field.clone());
        if let (Some(field), serde_json::Value::Object(map)) = (bare, &mut config) {
            if let Some(value) = map.remove("") {
                map.insert(field, value);
            }
        }
        config
    }

    /// The `--help` entries of the sections plugins describe, for the kinds `listed`
    /// does not already cover: `--kind: help`, then one line per field.
    pub fn help_text(&self, listed: impl Fn(&str) -> bool) -> String {
        let mut out = String::new();
        for (kind, claim) in &self.claims {
            if listed(kind) {
                continue;
            }
            let plugin = self
                .plugins
                .get(claim.plugin)
                .map(|p| p.name.as_str())
                .unwrap_or_default();
            let help = if claim.desc.help.is_empty() {
                claim.claim_type.noun()
            } else {
                claim.desc.help.as_str()
            };
            out.push_str(&format!("   --{kind}: {help} (plugin {plugin})\n"));
            for field in &claim.desc.fields {
                out.push_str(&format!(
                    "      {}=<{}>",
                    field.name,
                    field.field_type.noun()
                ));
                if !field.help.is_empty() {
                    out.push_str(&format!(": {}", field.help));
                }
                let mut extras = Vec::new();
                if field.required {
                    extras.push("required".to_owned());
                }
                if let Some(default) = &field.default {
                    extras.push(format!("default: {default}"));
                }
                if claim.desc.bare_field.as_deref() == Some(field.name.as_str()) {
                    extras.push(format!("--{kind} <value> sets it"));
                }
                if !extras.is_empty() {
                    out.push_str(&format!(" ({})", extras.join(", ")));
                }
                out.push('\n');
            }
            if let Some(key) = &claim.desc.v2_key {
                out.push_str(&format!("      (version-2 form: under \"{key}:\")\n"));
            }
            out.push('\n');
        }
        out
    }

    /// What `receptor plugin inspect` prints about each loaded plugin: its ABI version,
    /// name, version and path, then every section it claims with its kind, capabilities
    /// and fields.
    pub fn inspect_text(&self) -> String {
        let mut out = String::new();
        for (index, p) in self.plugins.iter().enumerate() {
            out.push_str(&format!(
                "plugin {} {} (ABI {}.{}, host ABI {}.{})\n  file: {}\n",
                p.name,
                p.version,
                p.abi.0,
                p.abi.1,
                abi::ABI_MAJOR,
                abi::ABI_MINOR,
                p.path.display()
            ));
            for (kind, claim) in self.claims.iter().filter(|(_, c)| c.plugin == index) {
                let desc = &claim.desc;
                let mut flags = Vec::new();
                if desc.own_tls {
                    flags.push("runs its own TLS".to_owned());
                }
                if let Some(field) = &desc.bare_field {
                    flags.push(format!("bare value sets {field}"));
                }
                if let Some(key) = &desc.v2_key {
                    flags.push(format!("version-2 key {key}"));
                }
                out.push_str(&format!("  section {kind}: {}", claim.claim_type.noun()));
                if !desc.help.is_empty() {
                    out.push_str(&format!(", {}", desc.help));
                }
                if !flags.is_empty() {
                    out.push_str(&format!(" [{}]", flags.join("; ")));
                }
                out.push('\n');
                if desc.fields.is_empty() {
                    out.push_str("    (fields not described: checked by the plugin)\n");
                }
                for f in &desc.fields {
                    out.push_str(&format!("    {}: {}", f.name, f.field_type.noun()));
                    if f.required {
                        out.push_str(", required");
                    }
                    if let Some(d) = &f.default {
                        out.push_str(&format!(", default {d}"));
                    }
                    if !f.help.is_empty() {
                        out.push_str(&format!(" - {}", f.help));
                    }
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Checks a section against its plugin's description of it (ABI 1.2): unknown keys
    /// (with a suggestion), required fields, types. Sections of plugins that describe
    /// no fields are left to the plugin.
    pub fn check(
        &self,
        kind: &str,
        backend: bool,
        config: &serde_json::Value,
    ) -> Result<(), PluginError> {
        let kind = self.canonical(kind);
        let config = self.normalise(&kind, config);
        match self.claims.get(&kind) {
            Some(claim) => checks::check_section(&kind, &claim.desc, backend, &config)
                .map_err(|message| PluginError::Invalid { message }),
            None => Ok(()),
        }
    }

    /// Starts a backend instance for one config section (a JSON object with lower-case
    /// keys, core keys such as `cost` included: plugins ignore them). Connections arrive
    /// on the instance's bounded channel.
    pub fn start_backend(
        &self,
        kind: &str,
        config: &serde_json::Value,
    ) -> Result<BackendInstance, PluginError> {
        let kind = self.canonical(kind);
        self.check(&kind, true, config)?;
        let config = self.normalise(&kind, config);
        let (ctx, fns, plugin) = self.claim(&kind, ClaimType::Backend)?;
        let ClaimFns::Backend(fns) = fns else {
            return Err(self.unclaimed(&kind));
        };
        backend::start(&plugin.name, &kind, ctx, fns, &config)
    }

    /// Builds the work type one config section describes.
    pub fn work_type(
        &self,
        kind: &str,
        config: &serde_json::Value,
    ) -> Result<Arc<dyn WorkType>, PluginError> {
        let kind = self.canonical(kind);
        self.check(&kind, false, config)?;
        let config = self.normalise(&kind, config);
        if let Some(supervisor) = self.isolated(&kind) {
            return Ok(supervisor.work_type(&kind, &config)?);
        }
        let (ctx, fns, plugin) = self.claim(&kind, ClaimType::WorkType)?;
        let ClaimFns::WorkType(fns) = fns else {
            return Err(self.unclaimed(&kind));
        };
        let wt = worktype::create(&plugin.name, &kind, ctx, fns, &config)?;
        Ok(Arc::new(wt))
    }
}

/// The ABI version this host speaks.
pub const HOST_ABI: (u32, u32) = (abi::ABI_MAJOR, abi::ABI_MINOR);
