//! The `udp` receptor plugin: the `udp-listener` and `udp-peer` backends.
//!
//! Receptor nodes can connect over UDP with one mesh message per datagram, no header
//! and no length prefix (at most 65507 bytes, UDP's limit). There is no reliability,
//! ordering or end of session on the wire: the core's idle timeout ends silent sessions.
//!
//! * `udp-peer` (`address`, `redial`) hands the core a connected UDP socket per session
//!   and redials after the core reports the session closed, with receptor's backoff
//!   (5 s, times 1.5 after every wait, at most 20 s, back to 5 s after a successful dial).
//! * `udp-listener` (`bindaddr`, `port`) keeps one session per remote `ip:port`; each is
//!   handed to the core as one end of a `SOCK_SEQPACKET` socket pair fed by a pump
//!   thread (see [`listener`]).
//!
//! Both hand over `DATAGRAM` framing; the `cost`, `nodecost`, `allowedpeers` and `tls`
//! keys are the core's and ignored here. Each instance runs on threads of its own;
//! nothing here touches the host's runtime.

mod dialer;
pub mod listener;

use receptor_plugin_sdk::describe::backend_keys as core;
use receptor_plugin_sdk::{export_plugin, Field, FieldType, Plugin, SectionDesc};

/// Describes the plugin to the host, with its sections' fields (for `--help`, the
/// command line, the version-2 form and the node's checks).
pub fn plugin() -> Plugin {
    Plugin::new("udp", env!("CARGO_PKG_VERSION"))
        .backend("udp-listener", listener::start)
        .describe(
            SectionDesc::new("Accept backend connections on a UDP port")
                .fields([
                    core::bindaddr(),
                    Field::new("port", FieldType::Int, "UDP port to listen on").required(),
                    core::cost(),
                    core::nodecost(),
                    core::allowedpeers(),
                ])
                .bare_field("port")
                .v2_key("udp-listeners"),
        )
        .backend("udp-peer", dialer::start)
        .describe(
            SectionDesc::new("Connect to a peer's UDP listener")
                .fields([
                    Field::new("address", FieldType::String, "host:port to connect to").required(),
                    core::redial(),
                    core::cost(),
                    core::allowedpeers(),
                ])
                .bare_field("address")
                .v2_key("udp-peers"),
        )
}

export_plugin!(plugin);
