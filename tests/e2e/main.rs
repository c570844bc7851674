//! End-to-end tests: real `receptor` processes on 127.0.0.1, driven through their control
//! sockets, the real `receptorctl` 1.6.9 CLI and its Python `ReceptorControl` class.
//! One integration-test binary; each scenario is a module. Scenarios are written once and
//! run with either implementation at each position (`Implementation::Go` is the reference
//! receptor 1.6.9, `Implementation::Rust` is ours).
//!
//! Tests that start our own `receptor` live in a `rust_nodes` module inside their scenario,
//! e.g. `scripts/test.sh -E 'test(/rust_nodes/)'`.

mod abuse_control;
mod abuse_mesh;
mod abuse_work;
mod backends_common;
mod backends_udp;
mod backends_ws;
mod command_service;
mod connect_greeting;
mod firewall;
mod harness;
mod ip_router;
mod logs_json;
mod mesh_line;
mod mesh_page;
mod metrics;
mod package;
mod ping_traceroute;
mod plugins_isolated;
mod plugins_platform;
mod python_api;
mod quick_start;
mod receptorctl_cli;
mod receptorctl_suite;
mod reload;
mod remote_work;
mod routed_traffic;
mod streams_connect;
mod streams_failure;
mod streams_tcp;
mod streams_tls;
mod streams_traffic;
mod streams_udp;
mod streams_unix;
mod tls_mesh;
mod tls_pki;
mod tls_refusals;
mod topology_graph;
mod unprovided_kinds;
mod work_chaos;
mod work_spawner;
mod workceptor_guide;
