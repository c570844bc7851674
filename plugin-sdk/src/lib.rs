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
mod error;
pub mod export;
pub mod log;
pub mod shlex;
pub mod work;

pub use backend::{Backend, ConnectionSink, Framing, SessionToken};
pub use config::Section;
pub use error::PluginError;
pub use export::Plugin;
pub use work::{
    Progress, ReattachRequest, StartRequest, Unit, UnitState, WorkHandle, WorkState, WorkType,
    WorkTypeInfo,
};

/// Keys the core handles for every backend section; plugins accept and ignore them.
pub const CORE_BACKEND_KEYS: &[&str] = &["cost", "nodecost", "allowedpeers", "tls"];
