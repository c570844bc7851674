//! # receptor-plugin-sdk
//!
//! Everything needed to write a receptor plugin, and the contract the host loads it by.
//! This page is the plugin author's manual: what a plugin is, how to write one in Rust or
//! in C, how to test it without a node, how to ship it, and what the versions promise.
//!
//! ## What a plugin is
//!
//! Receptor's backends (how nodes connect: TCP, UDP, websockets) and work types (what a
//! unit of work runs: echo, commands, third-party types) are plugins: shared libraries
//! loaded at start-up. Rust's own ABI is not stable between compiler versions, so the
//! boundary is a C ABI, [`abi`], versioned by a major number in the entry symbol's name
//! (`receptor_plugin_entry_v1`) and a minor number for additions. The same contract is
//! available to C as `include/receptor_plugin.h`.
//!
//! A plugin claims configuration *sections* (`- acme-worktype: {...}` in the YAML,
//! `--acme-worktype key=value` on the command line); each is a backend or a work type.
//! The plugin sets things up; the core moves the bytes. A backend hands the core
//! connected file descriptors and the core does framing, TLS, keepalives and costs. A
//! work type gets the unit's payload and results files as descriptors, reports state
//! changes through a thread-safe callback, can be cancelled, and is asked to re-attach
//! to its running units after a node restart (or to say it cannot).
//!
//! ## Write a work type in Rust
//!
//! Start from the skeleton: copy `plugin-sdk/templates/rust/` out of receptor's tree,
//! rename the package and point its two `path =` dependencies at this crate and at the
//! harness (`plugin-sdk/harness`). It is a `cdylib` crate with a minimal work type and a
//! test that runs it through the harness; `cargo test` passes as it is.
//!
//! The safe layer wraps the ABI in plain traits: implement [`WorkType`]/[`WorkHandle`]
//! (or [`Backend`]), say what the plugin provides with [`Plugin`] and export it with
//! [`export_plugin!`]. The traits are synchronous on purpose: a plugin never runs on the
//! host's async runtime (a `cdylib` has its own copy of any runtime and its
//! thread-locals), so it owns its threads, or its own runtime, and calls back from them.
//! Every exported function catches panics (they become errors naming the plugin); a
//! plugin built with `panic = "abort"` is refused at build time unless exported with
//! `export_plugin!(plugin, panic_abort_allowed)`, which marks it as needing isolation
//! (see below).
//!
//! ```ignore
//! use receptor_plugin_sdk::{Plugin, Section, WorkType, WorkTypeInfo, WorkHandle, StartRequest,
//!     Progress, PluginError, UnitState};
//!
//! struct Hello(WorkTypeInfo);
//! struct Done;
//! impl WorkHandle for Done { fn cancel(&self) -> Result<(), PluginError> { Ok(()) } }
//! impl WorkType for Hello {
//!     fn info(&self) -> WorkTypeInfo { self.0.clone() }
//!     fn start(&self, mut req: StartRequest, p: Progress) -> Result<Box<dyn WorkHandle>, PluginError> {
//!         use std::io::Write;
//!         req.stdout.write_all(b"hello\n")?;
//!         p.report(UnitState::Succeeded, "done", None);
//!         Ok(Box::new(Done))
//!     }
//! }
//! fn plugin() -> Plugin {
//!     Plugin::new("hello", env!("CARGO_PKG_VERSION")).work_type("hello-worktype", |s: &Section| {
//!         Ok(Box::new(Hello(WorkTypeInfo::from_section(s, Some("hello"))?)) as Box<dyn WorkType>)
//!     })
//! }
//! receptor_plugin_sdk::export_plugin!(plugin);
//! ```
//!
//! The rules a work type keeps (the harness checks each): report exactly one final state
//! (Succeeded, Failed or Canceled) per unit, last; close the unit's descriptors when it
//! ends (dropping the [`StartRequest`]'s files does it); end a cancelled unit promptly;
//! after a restart, re-attach from the `ExtraData` you reported (the node saves it in the
//! unit's `status` file) or return an error saying why not; return errors, never panic.
//!
//! ## Write a work type in C
//!
//! Start from `plugin-sdk/templates/c/`: `plugin.c` fills a static descriptor (one
//! [`abi::SectionClaim`] with its vtable and field descriptions), reads its section with
//! the host's typed accessors (`config_string`, `config_int`, `config_bool`,
//! `config_duration_ms`, `config_list_len`, `config_list_item` of [`abi::HostApi`]; an
//! absent key is [`abi::STATUS_ABSENT`], a wrong type an error naming the key) and marks
//! the entry point with `RECEPTOR_PLUGIN_EXPORT`, which keeps it visible under
//! `-fvisibility=hidden` (and gives it C linkage in C++). `make` builds it against the
//! header, `make check` runs the harness on it. The descriptors and the progress
//! reference passed to `start`/`reattach` are the plugin's in every case, also when the
//! call fails: close them and call `release` exactly once.
//!
//! ## Test it with the harness
//!
//! `receptor-plugin-harness` (the crate in `plugin-sdk/harness`) loads the built library
//! through this ABI, with no node: units get folders in a temporary directory, a payload
//! file and a results file, and it checks the rules above. From Rust tests, as a
//! dev-dependency: `Harness::load(path, r#"{"worktype": "mine"}"#)`, then `run_unit`,
//! `cancel_unit`, `restart_and_reattach` or `check_all`. From a shell:
//! `receptor-plugin-harness libmine.so --section '{"worktype": "mine"}'` prints a
//! pass/fail list and exits non-zero if a check fails.
//!
//! ## Describe your sections
//!
//! [`Plugin::describe`] attaches a [`SectionDesc`] to the section just claimed (in C, the
//! claim's `help`, `fields`, `bare_field`, `v2_key` and `flags`): one line of help, typed
//! [`Field`]s (string, integer, boolean, duration, list, number or any; required;
//! default; help), the field a bare command-line value sets (`--acme-worktype hi`), the
//! key of its list in the version-2 map form (`acme-worktypes:`) and capabilities such as
//! running its own TLS ([`abi::CLAIM_FLAG_OWN_TLS`]). The node then checks the section
//! before the plugin sees it (unknown keys with a "did you mean", required fields, types,
//! each reported with the section's place in the configuration), lists it in `--help`,
//! and configures it from the command line and both YAML forms. The built-in plugins
//! (`tcp-listener`, `ws-peer`, `work-command`, ...) describe their sections the same way:
//! the node's own table holds only the core's sections. [`describe::backend_keys`] and
//! [`describe::work_type_keys`] describe the keys every backend or work type has.
//! `receptor plugin inspect FILE` prints what a file provides, or why it cannot be
//! loaded.
//!
//! ## Logging
//!
//! A Rust plugin logs with the [`log`] functions ([`log::info`], [`log::warn`], ...); a
//! C plugin calls the `log` callback of the host API it got at entry. Messages go to the
//! node's log tagged with the plugin's name; errors of a call go through the call's
//! [`abi::ErrorSink`] and the node reports them with the section, the work type and the
//! unit.
//!
//! ## Ship it
//!
//! Users put the file in one of the places the node looks: a path (file or folder) in
//! the configuration's `plugins:` list; a folder named by the `RECEPTOR_PLUGIN_PATH`
//! environment variable (`:`-separated); the folder of the `receptor` executable (only
//! files named `libreceptor_*.so` there); or `/usr/lib/receptor/plugins`. Any shared
//! library in a configured folder is loaded; each plugin loaded gets one log line (name,
//! version, ABI, path). A section that no loaded plugin claims is an error listing what
//! is available. Ship a release build, and say which ABI minor it needs (see below).
//!
//! ## Versioning promise
//!
//! The entry symbol's name carries the ABI major; the host refuses another major, naming
//! the file and both versions. Within major 1, structs only grow at their end and the
//! size of every struct at every minor is frozen in [`layout`]; every struct from the
//! other side is read with [`layout::read_prefix`], which fills what an older peer did
//! not have with defaults. Golden tests pin every offset and size per minor, and the
//! tests load plugins built against the 1.0, 1.1 and 1.2 headers.
//!
//! This crate, version 0.1, speaks ABI 1.2 (its [`abi::ABI_MINOR`]); a plugin built with
//! it declares 1.2. The minors so far:
//!
//! | ABI | added |
//! |---|---|
//! | 1.0 | the contract: descriptor, backends, work types, error sink, log |
//! | 1.1 | `connection_tls`, for backends that run their own TLS |
//! | 1.2 | section descriptions, capability flags, typed configuration accessors |
//!
//! * A host of minor *n* loads plugins of every minor up to *n* and treats them as their
//!   own host did (a section of a 1.0 or 1.1 plugin is undescribed: the plugin checks it).
//! * A plugin of a newer minor than the host still loads, with a warning naming both
//!   versions; it sees only what that host has (check `struct_size` before using a field
//!   of a later minor: the safe layer does, and the C template refuses to create a work
//!   type without the 1.2 accessors).
//! * A new major gets a new entry symbol; a plugin may export both during a transition.
//!
//! ## Isolation
//!
//! By default a plugin runs inside the node's process: fast, and right for trusted
//! plugins, but a crash (a segfault in C code, an abort) takes the node down. The
//! configuration can instead run a plugin in a supervised host process of its own —
//! `plugins: [{path: libmine.so, isolation: process}]` — with the same library and the
//! same ABI: calls and callbacks cross a unix socket, descriptors are passed with
//! `SCM_RIGHTS` so the data plane stays zero-copy, and a crash or hang of the plugin
//! costs its own units, not the node's links or other units. Nothing changes in the
//! plugin's code.

pub mod abi;
pub mod backend;
pub mod backend_support;
pub mod config;
pub mod describe;
mod error;
pub mod export;
pub mod layout;
pub mod log;
pub mod shlex;
pub mod spawn;
pub mod spawner;
pub mod work;

pub use backend::{Backend, ConnectionSink, Framing, SessionToken};
pub use config::Section;
pub use describe::{Field, FieldType, SectionDesc};
pub use error::PluginError;
pub use export::Plugin;
pub use work::{
    Progress, ReattachRequest, StartRequest, Unit, UnitState, WorkHandle, WorkState, WorkType,
    WorkTypeInfo,
};

/// Keys the core handles for every backend section; plugins accept and ignore them.
pub const CORE_BACKEND_KEYS: &[&str] = &["cost", "nodecost", "allowedpeers", "tls"];
