//! The `websocket` receptor plugin: the `ws-listener` and `ws-peer` backends.
//!
//! Receptor nodes can connect over WebSocket (RFC 6455 over HTTP/1.1, optionally TLS),
//! which passes through HTTP proxies and load balancers. Each mesh message travels as
//! one binary websocket message, with no length prefix.
//!
//! * `ws-listener` (`bindaddr`, `port`, `path` default `/`, `tls`) serves the upgrade
//!   on one path; see [`listener`] for the checks it makes (Go receptor's, i.e.
//!   gorilla/websocket's).
//! * `ws-peer` (`address` `ws://host:port/path` or `wss://...`, `extraheader`
//!   `Name:value`, `redial`, `tls`) dials and redials with receptor's backoff, through
//!   the HTTP proxy the environment names, if any ([`proxy`]).
//!
//! The core wants descriptors, not websockets: each session is handed over as one end
//! of a `SOCK_SEQPACKET` socket pair with `DATAGRAM` framing, and the plugin pumps
//! messages between the pair and the websocket ([`session`]). The pumping runs on the
//! plugin's own runtime ([`runtime`]), never the host's. TLS for `wss` is done here, from
//! the `tlsconfig` object the core adds to the section ([`tls`]); the peer's leaf
//! certificate goes to the core with the session (`connection_tls`), which holds the
//! peer to the node ID the certificate names, as for TLS-TCP. The `cost`,
//! `nodecost` and `allowedpeers` keys are the core's and ignored.

mod dialer;
pub mod listener;
mod pair;
pub mod proxy;
pub mod runtime;
pub mod session;
pub mod tls;

use receptor_plugin_sdk::describe::backend_keys as core;
use receptor_plugin_sdk::{export_plugin, Field, FieldType, Plugin, SectionDesc};

/// Describes the plugin to the host, with its sections' fields (for `--help`, the
/// command line, the version-2 form and the node's checks). Both sections run their own
/// TLS (under HTTP), which the description declares.
pub fn plugin() -> Plugin {
    Plugin::new("websocket", env!("CARGO_PKG_VERSION"))
        .backend("ws-listener", listener::start)
        .describe(
            SectionDesc::new("Accept backend connections over websockets (HTTP server)")
                .fields([
                    core::bindaddr(),
                    Field::new("port", FieldType::Int, "TCP port of the HTTP server").required(),
                    Field::new(
                        "path",
                        FieldType::String,
                        "URI path of the websocket endpoint",
                    )
                    .default("/"),
                    core::tls_server(),
                    core::cost(),
                    core::nodecost(),
                    core::allowedpeers(),
                ])
                .bare_field("port")
                .v2_key("ws-listeners")
                .own_tls(),
        )
        .backend("ws-peer", dialer::start)
        .describe(
            SectionDesc::new("Connect to a peer's websocket listener")
                .fields([
                    Field::new("address", FieldType::String, "URL to connect to").required(),
                    core::redial(),
                    Field::new(
                        "extraheader",
                        FieldType::String,
                        "Extra HTTP header (Name:value) sent when connecting",
                    ),
                    core::tls_client(),
                    core::cost(),
                    core::allowedpeers(),
                ])
                .bare_field("address")
                .v2_key("ws-peers")
                .own_tls(),
        )
}

export_plugin!(plugin);
