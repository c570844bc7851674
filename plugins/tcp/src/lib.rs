//! The `tcp` receptor plugin: the `tcp-listener` and `tcp-peer` backends.
//!
//! Receptor nodes connect over TCP with each message preceded by its length as a
//! little-endian u16. This plugin only opens the connections: the listener accepts
//! forever, the dialer keeps at most one session and redials with receptor's backoff
//! (5 s, times 1.5 after every wait, at most 20 s, back to 5 s after a successful dial).
//! Every connection gets `TCP_NODELAY` and is handed to the core, which does the
//! framing, TLS, keepalives and costs (the `cost`, `nodecost`, `allowedpeers` and `tls`
//! keys are the core's and ignored here).
//!
//! Each instance runs on its own thread; nothing here touches the host's runtime.

mod dialer;
mod listener;

use receptor_plugin_sdk::{export_plugin, Plugin};

/// Describes the plugin to the host.
pub fn plugin() -> Plugin {
    Plugin::new("tcp", env!("CARGO_PKG_VERSION"))
        .backend("tcp-listener", listener::start)
        .backend("tcp-peer", dialer::start)
}

export_plugin!(plugin);
