//! # receptor-plugin-sdk
//!
//! Everything needed to write a receptor plugin, and the contract the host loads it by.
//!
//! Receptor's backends (how nodes connect: TCP, UDP, websockets) and work types (what a
//! unit of work runs: echo, commands, third-party types) are plugins: shared libraries
//! loaded at start-up. Rust's own ABI is not stable between compiler versions, so the
//! boundary is a C ABI, [`abi`], versioned by a major number in the entry symbol's name
//! and in the descriptor (the host refuses another major) and a minor number for
//! additions (structs only grow at the end and carry their size). The same contract is
//! available to C as `include/receptor_plugin.h`.
//!
//! The plugin sets things up; the core moves the bytes. A backend hands the core
//! connected file descriptors and the core does framing, TLS, keepalives and costs. A
//! work type gets the unit's payload and results files as descriptors and reports state
//! changes through a thread-safe callback.
//!
//! **Versioning promise.** The entry symbol's name carries the ABI major; the host refuses
//! another major. Within a major, structs only grow at their end and the size of every
//! struct at every minor is frozen in [`layout`]; every struct from the other side is
//! read with [`layout::read_prefix`], which fills what an older peer did not have with
//! defaults. A plugin built against an older minor keeps working with newer hosts; a
//! plugin of a newer minor works with an older host, without what that host lacks.
//!
//! **Describing sections** (ABI 1.2). [`Plugin::describe`] attaches a [`SectionDesc`]
//! (help, typed fields, the bare command-line value, the version-2 key, capabilities
//! such as running its own TLS) to the section just claimed: the node then checks the
//! section against it, lists it in `--help` and configures it from the command line and
//! both YAML forms.
//!
//! The safe layer wraps the ABI in plain traits: implement [`Backend`] or
//! [`WorkType`]/[`WorkHandle`], describe the plugin with [`Plugin`] and export it with
//! [`export_plugin!`]. The traits are synchronous on purpose: a plugin never runs on the
//! host's async runtime (a `cdylib` has its own copy of any runtime and its thread-locals),
//! so it owns its threads, or its own runtime, and calls back from them.
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
