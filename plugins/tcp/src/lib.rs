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

use receptor_plugin_sdk::describe::backend_keys as core;
use receptor_plugin_sdk::{export_plugin, Field, FieldType, Plugin, SectionDesc};

/// Describes the plugin to the host, with its sections' fields (for `--help`, the
/// command line, the version-2 form and the node's checks).
pub fn plugin() -> Plugin {
    Plugin::new("tcp", env!("CARGO_PKG_VERSION"))
        .backend("tcp-listener", listener::start)
        .describe(
            SectionDesc::new("Accept backend connections on a TCP port")
                .fields([
                    core::bindaddr(),
                    Field::new("port", FieldType::Int, "TCP port to listen on").required(),
                    core::tls_server(),
                    core::cost(),
                    core::nodecost(),
                    core::allowedpeers(),
                ])
                .bare_field("port")
                .v2_key("tcp-listeners"),
        )
        .backend("tcp-peer", dialer::start)
        .describe(
            SectionDesc::new("Connect to a peer's TCP listener")
                .fields([
                    Field::new("address", FieldType::String, "host:port to connect to").required(),
                    core::redial(),
                    core::tls_client(),
                    core::cost(),
                    core::allowedpeers(),
                ])
                .bare_field("address")
                .v2_key("tcp-peers"),
        )
}

export_plugin!(plugin);
