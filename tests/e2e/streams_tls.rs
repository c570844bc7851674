//! Scenario: services with user TLS between a Go node (`go`) and a Rust node (`rust`),
//! certificates from one CA made by the reference receptor's `--cert-*` commands (each
//! names its node as ReceptorName and 127.0.0.1 as IP address).
//!
//! Each node has a `tls-server` `srv` (client certificates required) and a `tls-client`
//! `cli`, a second control service `ctls` with `tls: srv` on the mesh (ConnType 2) and
//! `tcptls: srv` on a TCP port, a `tcp-client` `tproxy` with `tlsserver: srv` and a
//! `tcp-server` towards the other node's `tproxy` with `tlsclient: cli`.
//!
//! * both nodes list both `ctls` advertisements with ConnType 2;
//! * `connect <other> ctls cli` works both ways; without `cli` it is refused;
//! * `receptorctl --socket tls://...` with a client certificate reaches the TLS control
//!   listener; without one it is refused;
//! * each node's `tcp-server` reaches the other node's `tcp-client` over ConnType 2.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use receptor_tests::binaries::reference_receptor;
use receptor_tests::receptorctl::run;
use receptor_tests::Implementation::{self, Go, Rust};
use receptor_tests::{binaries, free_port, NodeConfig, NodeProcess};
use serde_json::{json, Value};

/// Runs the reference receptor with one certificate command.
fn cert_command(dir: &Path, args: &[String]) -> Result<()> {
    let out = Command::new(reference_receptor()?)
        .args(args)
        .current_dir(dir)
        .output()
        .context("running the reference receptor's certificate commands")?;
    ensure!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A CA and a certificate for each node in `dir`.
pub(crate) fn make_certs(dir: &Path, nodes: &[&str]) -> Result<()> {
    cert_command(
        dir,
        &[
            "--cert-init".into(),
            "commonname=Test CA".into(),
            "bits=2048".into(),
            "outcert=ca.crt".into(),
            "outkey=ca.key".into(),
        ],
    )?;
    for node in nodes {
        cert_command(
            dir,
            &[
                "--cert-makereq".into(),
                "bits=2048".into(),
                format!("commonname={node}"),
                format!("nodeid={node}"),
                "ipaddress=127.0.0.1".into(),
                format!("outreq={node}.csr"),
                format!("outkey={node}.key"),
            ],
        )?;
        cert_command(
            dir,
            &[
                "--cert-signreq".into(),
                format!("req={node}.csr"),
                "cacert=ca.crt".into(),
                "cakey=ca.key".into(),
                format!("outcert={node}.crt"),
                "verify=yes".into(),
            ],
        )?;
    }
    Ok(())
}

struct Setup {
    nodes: Vec<NodeProcess>,
    certs: PathBuf,
    /// TLS control listener of each node.
    control_ports: Vec<u16>,
    /// Local port of each node's `tcp-server` (towards the other node).
    proxy_ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

/// A TCP server that answers `tls:` and then echoes what it reads as it reads it (a
/// Go `tcp-client` turns the client's half-close into a full close of this connection, so
/// answers must not wait for the end of the request).
fn echo_target() -> Result<std::net::SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    thread::spawn(move || {
        while let Ok((mut s, _)) = l.accept() {
            thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                if s.write_all(b"tls:").is_err() {
                    return;
                }
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

fn setup() -> Result<Setup> {
    let dir = tempfile::Builder::new().prefix("receptor-tls-").tempdir()?;
    let certs = dir.path().to_path_buf();
    let names = ["go", "rust"];
    make_certs(&certs, &names)?;
    let target = echo_target()?;
    let link = free_port()?;
    let control_ports = vec![free_port()?, free_port()?];
    let proxy_ports = vec![free_port()?, free_port()?];
    let impls: [Implementation; 2] = [Go, Rust];
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let other = names[1 - i];
        let mut config = NodeConfig::new(name)
            .mutual_tls(&certs, name)
            .entry(
                "control-service",
                json!({"service": "ctls", "tls": "srv",
                       "tcplisten": format!("127.0.0.1:{}", control_ports[i]), "tcptls": "srv"}),
            )
            .entry(
                "tcp-client",
                json!({"service": "tproxy", "address": target.to_string(), "tlsserver": "srv"}),
            )
            .entry(
                "tcp-server",
                json!({"port": proxy_ports[i], "bindaddr": "127.0.0.1", "remotenode": other,
                       "remoteservice": "tproxy", "tlsclient": "cli"}),
            );
        config = if i == 0 {
            config.tcp_listener(link)
        } else {
            config.tcp_peer(link)
        };
        nodes.push(NodeProcess::start(impls[i], config)?);
    }
    for (i, node) in nodes.iter().enumerate() {
        let other = names[1 - i];
        node.wait_for_routes(&[(other, other)])?;
        node.wait_for_status("both ctls and tproxy advertisements", |s| {
            ["go", "rust"]
                .iter()
                .all(|n| ad(s, n, "ctls").is_some() && ad(s, n, "tproxy").is_some())
        })?;
    }
    Ok(Setup {
        nodes,
        certs,
        control_ports,
        proxy_ports,
        _dir: dir,
    })
}

fn ad<'a>(status: &'a Value, node: &str, service: &str) -> Option<&'a Value> {
    status["Advertisements"]
        .as_array()?
        .iter()
        .find(|ad| ad["NodeID"] == node && ad["Service"] == service)
}

#[test]
fn tls_services_between_go_and_rust() -> Result<()> {
    let s = setup()?;
    let names = ["go", "rust"];
    for node in &s.nodes {
        let status = node.status()?;
        for owner in names {
            let a = ad(&status, owner, "ctls").context("ctls ad")?;
            ensure!(a["ConnType"] == 2, "{}: {owner}'s ctls ad {a}", node.id());
            let p = ad(&status, owner, "tproxy").context("tproxy ad")?;
            ensure!(
                p["ConnType"] == 2 && p["Tags"]["type"] == "TCP Proxy",
                "{}: {owner}'s tproxy ad {p}",
                node.id()
            );
        }
    }

    // connect with the tls-client, both ways; without it the secure service refuses.
    for (i, node) in s.nodes.iter().enumerate() {
        let other = names[1 - i];
        let mut ctl = node.control()?;
        let reply = ctl.command(&format!("connect {other} ctls cli"))?;
        ensure!(
            reply == "Connecting",
            "{}: connect {other} ctls cli: {reply}",
            node.id()
        );
        ensure!(ctl.read_line()? == format!("Receptor Control, node {other}"));
        let status = ctl.command_json(r#"{"command":"status","requested_fields":["NodeID"]}"#)?;
        ensure!(status["NodeID"] == other, "status through TLS: {status}");
        ctl.shutdown_write()?;
        ensure!(ctl.read_to_end()?.is_empty());

        let reply = node.control()?.command(&format!("connect {other} ctls"))?;
        ensure!(
            reply.starts_with("ERROR: "),
            "{}: connect {other} ctls without TLS: {reply}",
            node.id()
        );
    }

    // receptorctl over TLS to each node's TLS control listener.
    let ca = s.certs.join("ca.crt").display().to_string();
    for (i, node) in s.nodes.iter().enumerate() {
        let socket = format!("tls://127.0.0.1:{}", s.control_ports[i]);
        let name = names[i];
        let file = |ext: &str| s.certs.join(format!("{name}.{ext}")).display().to_string();
        let mut cmd = Command::new(binaries::receptorctl()?);
        cmd.args(["--socket", &socket, "--rootcas", &ca]).args([
            "--cert",
            &file("crt"),
            "--key",
            &file("key"),
            "status",
        ]);
        let out = run(cmd)?.ok()?;
        ensure!(
            out.stdout.contains(&format!("Node ID: {}", node.id())),
            "receptorctl status over TLS: {}",
            out.describe()
        );
        let mut cmd = Command::new(binaries::receptorctl()?);
        cmd.args(["--socket", &socket, "--rootcas", &ca, "status"]);
        let out = run(cmd)?;
        ensure!(
            !out.success(),
            "{}: TLS control without a client certificate: {}",
            node.id(),
            out.describe()
        );
    }

    // TCP proxies over ConnType 2, both ways.
    for (i, port) in s.proxy_ports.iter().enumerate() {
        let mut c = TcpStream::connect(("127.0.0.1", *port))?;
        c.set_read_timeout(Some(Duration::from_secs(30)))?;
        let msg = format!("via {}", names[i]).repeat(10_000);
        c.write_all(msg.as_bytes())?;
        let mut back = vec![0u8; msg.len() + 4];
        c.read_exact(&mut back)
            .with_context(|| format!("{}'s tcp-server: reading the echo", names[i]))?;
        if back != format!("tls:{msg}").as_bytes() {
            bail!("{}'s tcp-server: the echo differs", names[i]);
        }
        c.shutdown(Shutdown::Write)?;
        let mut rest = Vec::new();
        c.read_to_end(&mut rest)?;
        ensure!(rest.is_empty(), "{} bytes after the echo", rest.len());
    }
    Ok(())
}
