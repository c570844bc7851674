//! Scenario: `ip-router` between two nodes, each in a network namespace the test makes,
//! linked by a veth pair (198.19.255.0/30) that carries the mesh link (TCP).
//!
//! Node `a` (the listener) has `localnet` 198.18.0.0/30 (tun address 198.18.0.1) and
//! advertises 2001:db8:a::/64; node `b` has 198.18.0.4/30 (198.18.0.5) and 2001:db8:b::/64;
//! each namespace's loopback holds the `::1` of its IPv6 network.
//!
//! * Rust–Rust: each node installs kernel routes to the other's networks; `ping` (IPv4
//!   and IPv6) and a TCP transfer go from namespace to namespace through the tun devices;
//!   when `b` stops, `a` removes its routes, and installs them again when `b` comes back.
//! * Rust–Go 1.6.9 (the Go node as `b`): ping and TCP transfers both ways over IPv4 (Go
//!   gives IPv6 routes an IPv4 gateway, which the kernel refuses).
//! * Without `CAP_NET_ADMIN`, both implementations refuse to start, saying the tun device
//!   could not be opened.
//!
//! These tests need root, `/dev/net/tun`, `ip` and `ping`; without them they fail.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use receptor_tests::netns::{require_privilege, veth, Netns};
use receptor_tests::wait::wait_until;
use receptor_tests::Implementation::{self, Go, Rust};
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::json;

/// Go 1.6.9 re-reads advertisements every 10 s and sends its own up to 60 s apart.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(45);
/// Bytes of each TCP transfer.
const TRANSFER: usize = 2 << 20;
const A_LINK: &str = "198.19.255.1";
const B_LINK: &str = "198.19.255.2";
const A_TUN: &str = "198.18.0.1";
const B_TUN: &str = "198.18.0.5";
const A_NET: &str = "198.18.0.0/30";
const B_NET: &str = "198.18.0.4/30";

struct Pair {
    a: NodeProcess,
    b: NodeProcess,
    a_ns: Netns,
    b_ns: Netns,
    b_config: NodeConfig,
}

fn router(name: &str, localnet: &str, routes: &str) -> serde_json::Value {
    json!({"networkname": "ipnet", "interface": format!("rt{name}"), "localnet": localnet,
           "routes": routes})
}

/// Two namespaces, the veth link, and `a` (Rust) with `b` (`b_impl`) started at once so
/// that each one's first advertisements reach the other.
fn pair(b_impl: Implementation) -> Result<Pair> {
    require_privilege()?;
    let a_ns = Netns::new("rcpt-a")?;
    let b_ns = Netns::new("rcpt-b")?;
    veth(
        &a_ns,
        &format!("{A_LINK}/30"),
        &b_ns,
        &format!("{B_LINK}/30"),
    )?;
    a_ns.ip(&["-6", "addr", "add", "2001:db8:a::1/128", "dev", "lo"])?;
    b_ns.ip(&["-6", "addr", "add", "2001:db8:b::1/128", "dev", "lo"])?;
    let port = free_port()?;
    let a_config = NodeConfig::new("a")
        .entry("tcp-listener", json!({"port": port, "bindaddr": A_LINK}))
        .entry("ip-router", router("a", A_NET, "2001:db8:a::/64"));
    let b_config = NodeConfig::new("b")
        .entry("tcp-peer", json!({"address": format!("{A_LINK}:{port}")}))
        .entry("ip-router", router("b", B_NET, "2001:db8:b::/64"));
    let a = NodeProcess::start_wrapped(Rust, a_config, &a_ns.wrapper())?;
    let b = NodeProcess::start_wrapped(b_impl, b_config.clone(), &b_ns.wrapper())?;
    a.wait_for_routes(&[("b", "b")])?;
    Ok(Pair {
        a,
        b,
        a_ns,
        b_ns,
        b_config,
    })
}

/// Whether `ns` has a kernel route to `net`.
fn has_route(ns: &Netns, family: &str, net: &str) -> Result<bool> {
    let table = ns.ip(&[family, "route", "show"])?;
    Ok(table
        .lines()
        .any(|l| l.split_whitespace().next() == Some(net)))
}

fn wait_route(ns: &Netns, family: &str, net: &str, present: bool) -> Result<()> {
    let what = format!(
        "{} route to {net} in {}",
        if present { "a" } else { "no" },
        ns.name()
    );
    wait_until(ROUTE_TIMEOUT, &what, || {
        Ok((has_route(ns, family, net)? == present).then_some(()))
    })
    .with_context(|| {
        format!(
            "routes: {}",
            ns.ip(&[family, "route", "show"]).unwrap_or_default()
        )
    })
}

/// Pings `target` from `ns` (three echo requests; at least one answered).
fn ping(ns: &Netns, target: &str) -> Result<()> {
    let out = ns.exec("ping", &["-c", "3", "-i", "0.2", "-W", "3", target])?;
    ensure!(
        out.status.success(),
        "ping {target} from {}: {}{}",
        ns.name(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Sends [`TRANSFER`] bytes over TCP from `from` to a listener on `to_addr` in `to`; the
/// listener answers with the byte count and a checksum of what it read.
fn transfer(from: &Netns, to: &Netns, to_addr: &str) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    let bind = format!("{to_addr}:0");
    let server = to.in_thread(move || {
        let listener = TcpListener::bind(&bind).with_context(|| format!("binding {bind}"))?;
        tx.send(listener.local_addr()?)?;
        let (mut s, _) = listener.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut data = Vec::new();
        s.read_to_end(&mut data)?;
        s.write_all(format!("{} {}", data.len(), checksum(&data)).as_bytes())?;
        Ok(())
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow!("the listener in {} did not start", to.name()))?;
    let client = from.in_thread(move || {
        let payload: Vec<u8> = (0..TRANSFER).map(|i| (i * 7 % 251) as u8).collect();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(&payload)?;
        s.shutdown(Shutdown::Write)?;
        let mut reply = String::new();
        s.read_to_string(&mut reply)?;
        let expected = format!("{} {}", payload.len(), checksum(&payload));
        ensure!(
            reply == expected,
            "the listener read {reply:?}, sent {expected:?}"
        );
        Ok(())
    });
    client
        .join()
        .map_err(|_| anyhow!("client thread panicked"))?
        .with_context(|| format!("TCP from {} to {addr}", from.name()))?;
    server
        .join()
        .map_err(|_| anyhow!("server thread panicked"))?
        .with_context(|| format!("TCP listener {addr}"))
}

fn checksum(data: &[u8]) -> u64 {
    data.iter()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)))
}

#[test]
fn rust_to_rust_ping_tcp_and_routes_that_follow_the_mesh() -> Result<()> {
    let mut p = pair(Rust)?;
    wait_route(&p.a_ns, "-4", B_NET, true)?;
    wait_route(&p.a_ns, "-6", "2001:db8:b::/64", true)?;
    wait_route(&p.b_ns, "-4", A_NET, true)?;
    wait_route(&p.b_ns, "-6", "2001:db8:a::/64", true)?;
    ping(&p.a_ns, B_TUN)?;
    ping(&p.b_ns, A_TUN)?;
    ping(&p.a_ns, "2001:db8:b::1")?;
    transfer(&p.a_ns, &p.b_ns, B_TUN)?;
    transfer(&p.b_ns, &p.a_ns, "[2001:db8:a::1]")?;

    // b leaves: a removes b's routes; b comes back: a installs them again. (b learns a's
    // routes only from a's next periodic advertisement, up to a minute later, as in Go.)
    p.b.kill();
    wait_route(&p.a_ns, "-4", B_NET, false)?;
    wait_route(&p.a_ns, "-6", "2001:db8:b::/64", false)?;
    p.b = NodeProcess::start_wrapped(Rust, p.b_config.clone(), &p.b_ns.wrapper())?;
    wait_route(&p.a_ns, "-4", B_NET, true)?;
    wait_route(&p.a_ns, "-6", "2001:db8:b::/64", true)?;
    Ok(())
}

#[test]
fn rust_and_go_ping_and_tcp_both_ways() -> Result<()> {
    let p = pair(Go)?;
    wait_route(&p.a_ns, "-4", B_NET, true)?;
    // Go's own routes come from its 10-second watcher.
    wait_route(&p.b_ns, "-4", A_NET, true)?;
    let status = p.a.status()?;
    let ad = status["Advertisements"]
        .as_array()
        .and_then(|ads| {
            ads.iter()
                .find(|ad| ad["NodeID"] == "b" && ad["Service"] == "ipnet")
        })
        .context("the Go node's ipnet advertisement")?;
    ensure!(
        ad["ConnType"] == 0
            && ad["Tags"]
                == json!({"type": "IP Router", "network": "ipnet", "route_local": B_NET,
                          "route_0": "2001:db8:b::/64"}),
        "Go's advertisement {ad}"
    );
    ping(&p.a_ns, B_TUN)?;
    ping(&p.b_ns, A_TUN)?;
    transfer(&p.a_ns, &p.b_ns, B_TUN)?;
    transfer(&p.b_ns, &p.a_ns, A_TUN)?;
    Ok(())
}

#[test]
fn without_the_privilege_neither_node_starts() -> Result<()> {
    require_privilege()?;
    for implementation in [Rust, Go] {
        // A namespace of its own, in case the privilege were not dropped after all.
        let ns = Netns::new("rcpt-np")?;
        let wrapper = [
            "ip",
            "netns",
            "exec",
            ns.name(),
            "setpriv",
            "--bounding-set=-net_admin",
            "--inh-caps=-net_admin",
        ];
        let config = NodeConfig::new("np")
            .entry(
                "tcp-listener",
                json!({"port": free_port()?, "bindaddr": "127.0.0.1"}),
            )
            .entry("ip-router", router("np", A_NET, ""));
        let log = NodeProcess::run_expecting_failure_wrapped(implementation, config, &wrapper)?;
        ensure!(
            log.contains("error opening tun device"),
            "{}: {log}",
            implementation.label()
        );
    }
    Ok(())
}
