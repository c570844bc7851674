//! Test harness for end-to-end and interop tests: it runs real `receptor` processes (this
//! project's, or the reference Go receptor 1.6.9) on 127.0.0.1 and talks to them the way
//! users do, through the control socket and the real `receptorctl` 1.6.9.
//!
//! Where the pieces come from (all prepared and exported by `scripts/test.sh`):
//! - `RECEPTOR_BIN`: our `receptor` (default: `receptor` next to the test binary's folder);
//! - `RECEPTOR_REFERENCE_BIN`: the Go reference (default: what `scripts/reference-receptor`
//!   prints);
//! - `RECEPTORCTL`, `PYTHON`: receptorctl and python of the repository's `.venv`
//!   (default: `.venv/bin/...`).
//!
//! A missing prerequisite is an error, never a skipped test.
//!
//! Building blocks:
//! - [`procfs`]: a process's resident memory and descriptors, the open-files limit;
//! - [`ports`]: TCP/UDP ports that cannot collide across parallel test processes;
//! - [`config`]: a node's YAML configuration (receptor's list form);
//! - [`node`]: one running node: start, wait for its control socket, status, kill on drop;
//! - [`control`]: a raw control-protocol client (line in, line or JSON out);
//! - [`hostile`]: a hostile mesh peer speaking the wire protocol (routing-update floods,
//!   maximum-size frames, connections that never complete the handshake);
//! - [`receptorctl`]: runs the `receptorctl` CLI or a python snippet with a timeout;
//! - [`netns`]: network namespaces a test makes (root only), for tun devices;
//! - [`topology`]: meshes made of several nodes (a line, ...);
//! - [`wait`]: polling a condition with a deadline (tests never sleep to synchronise);
//! - `plugin_host` (feature `plugin-host`): backend plugins loaded by the core's plugin
//!   host, their descriptors, and the reference Go receptor as their peer.

pub mod binaries;
pub mod config;
pub mod control;
pub mod hostile;
pub mod netns;
pub mod node;
#[cfg(feature = "plugin-host")]
pub mod plugin_host;
pub mod ports;
pub mod procfs;
pub mod receptorctl;
pub mod topology;
pub mod wait;

pub use binaries::Implementation;
pub use config::NodeConfig;
pub use control::ControlClient;
pub use node::NodeProcess;
pub use ports::free_port;
pub use receptorctl::CtlOutput;
