//! # receptor-core
//!
//! The receptor daemon as a library: a node of an overlay mesh that runs units of
//! work on remote machines.
//!
//! * [`mesh`] drives the sans-IO protocol of `receptor-proto` over real backend
//!   connections: link-state routing, service advertisements and datagrams between
//!   `(node, service)` addresses.
//! * [`control`] is the control service (unix socket, TCP, and the mesh service
//!   `control`) that `receptorctl` talks to.
//! * [`work`] keeps units of work on disk and runs them through work-type plugins.
//! * [`plugin_host`] loads backend and work-type plugins through the C ABI of
//!   `receptor-plugin-sdk`.
//! * [`services`] runs the control service on the mesh and the TCP, unix-socket and
//!   UDP proxies of the configuration.
//! * [`config`] reads receptor's YAML files and command-line flags.
//! * [`logging`] writes the log as text or as JSON lines.

pub mod config;
pub mod control;
pub mod daemon;
#[doc(hidden)]
pub mod fuzzing;
pub mod logging;
pub mod mesh;
pub mod mesh_page;
pub mod metrics;
pub mod plugin_host;
pub mod services;
pub mod streams;
pub mod work;

/// TLS settings and node-ID certificates (the `receptor-tls` crate, shared with backend
/// plugins that run their own TLS).
pub use receptor_tls as tls;
/// The `--cert-init`, `--cert-makereq` and `--cert-signreq` commands.
pub use receptor_tls::certs;
