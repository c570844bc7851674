//! Remote work over the real mesh: QUIC streams to `(node, "control")` between Rust
//! [`Mesh`] nodes, and with the reference Go receptor 1.6.9 in both directions (a Rust
//! node submitting to a Go node, and a Go node submitting to a Rust node).

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::gonode::GoNode;
use super::mesh_dialer::MeshDialer;
use super::tests::{
    cancel, fast_options, go_bar, pattern, release, results, signed_work_runs_on_go_bar, status,
    submit, submit_started, test_types, wait_state, Client, NodeSetup, PRIVATE_KEY, PUBLIC_KEY,
    WAIT,
};
use super::*;
use crate::control::{CommandRegistry, ControlListener, ControlService, PeerKind};
use crate::mesh::{Framing, Mesh, MeshOptions, SessionParams};
use crate::streams::{listen_with, ListenOptions};
use crate::tls::TlsRegistry;
use crate::work::control::WorkCommand;
use crate::work::signing::{SignatureVerifier, WorkSigner};

fn params() -> SessionParams {
    SessionParams {
        cost: 1.0,
        ..SessionParams::default()
    }
}

/// A Rust node with a mesh: unit store, remote work over the mesh, control service on a
/// unix socket and on the mesh service `control`.
struct MeshNode {
    mesh: Mesh,
    remote: Arc<RemoteWork>,
    socket: PathBuf,
    dir: PathBuf,
    id: String,
    _unix: ControlListener,
}

impl MeshNode {
    async fn start(base: &Path, id: &str, setup: NodeSetup) -> Result<MeshNode> {
        let dir = base.join(id);
        std::fs::create_dir_all(&dir)?;
        let mesh = Mesh::start(MeshOptions {
            node_id: id.to_owned(),
            max_idle: Duration::from_secs(21),
        });
        let store = Workceptor::open_with(
            id,
            &dir.join("data"),
            test_types(),
            vec![RemoteWorkType::shared()],
        )
        .await?;
        let signer = if setup.signer {
            Some(Arc::new(WorkSigner::from_pem(
                PRIVATE_KEY,
                Duration::from_secs(600),
            )?))
        } else {
            None
        };
        let dialer = Arc::new(MeshDialer::new(mesh.clone(), Arc::new(TlsRegistry::new())));
        let remote = RemoteWork::new(store.clone(), dialer, signer, setup.options);
        remote.recover().await;
        let mut command = WorkCommand::new(store.clone()).with_remote(remote.clone());
        if setup.verifier {
            command = command.with_verifier(Arc::new(SignatureVerifier::from_pem(PUBLIC_KEY, id)?));
        }
        let registry = CommandRegistry::new();
        registry.register(Arc::new(command))?;
        let control = ControlService::for_mesh(&mesh, registry, None)?;
        let tags = BTreeMap::from([("type".to_owned(), "Control Service".to_owned())]);
        let mut listener = listen_with(
            &mesh,
            "control",
            ListenOptions {
                advertise: true,
                tags: Some(tags),
                ..ListenOptions::default()
            },
        )
        .await?;
        let served = control.clone();
        tokio::spawn(async move {
            while let Ok((stream, node)) = listener.accept().await {
                let control = served.clone();
                tokio::spawn(async move {
                    control.serve_stream(stream, PeerKind::Mesh { node }).await;
                });
            }
        });
        let socket = dir.join("ctl.sock");
        let unix = control.serve_unix(&socket, 0o600).await?;
        Ok(MeshNode {
            mesh,
            remote,
            socket,
            dir,
            id: id.to_owned(),
            _unix: unix,
        })
    }

    fn unit_dir(&self, unit: &str) -> PathBuf {
        self.dir.join("data").join(&self.id).join(unit)
    }

    /// Runs a backend session over an established connection.
    fn session(&self, fd: OwnedFd) {
        let mesh = self.mesh.clone();
        tokio::spawn(async move {
            let _ = mesh.run_session(fd, Framing::Len16Le, params()).await;
        });
    }

    /// Waits until the mesh has a route to `node`.
    async fn route_to(&self, node: &str) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        while !self.mesh.status().await.routing_table.contains_key(node) {
            if Instant::now() > deadline {
                bail!("{} has no route to {node}", self.id);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for MeshNode {
    fn drop(&mut self) {
        self.remote.shutdown();
    }
}

/// Waits until the Go node has a route to `node` (Go drops data from unknown nodes).
async fn go_route_to(go: &GoNode, node: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = go.command("status").await?;
        if status.contains(&format!("\"{node}\":\"{node}\"")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("Go has no route to {node}: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a Go unit's local results file has `len` bytes (Go marks a remote unit
/// Succeeded from the remote status, before its copy of the results is complete).
async fn go_results(path: &Path, len: usize) -> Result<Vec<u8>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let data = std::fs::read(path).unwrap_or_default();
        if data.len() >= len {
            return Ok(data);
        }
        if Instant::now() > deadline {
            bail!("{} has {} bytes, not {len}", path.display(), data.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn go_status(go: &GoNode, id: &str) -> Result<Value> {
    let line = go.command(&format!("work status {id}")).await?;
    serde_json::from_str(&line).with_context(|| line.clone())
}

async fn go_wait_state(go: &GoNode, id: &str, state: i64) -> Result<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = go_status(go, id).await?;
        if s["State"] == state {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("Go unit {id} never reached state {state}: {s}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rust_to_rust_over_the_mesh() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let foo = MeshNode::start(dir.path(), "foo", NodeSetup::default()).await?;
    let bar = MeshNode::start(dir.path(), "bar", NodeSetup::default()).await?;
    let (x, y) = std::os::unix::net::UnixStream::pair()?;
    foo.session(OwnedFd::from(x));
    bar.session(OwnedFd::from(y));
    foo.route_to("bar").await?;
    bar.route_to("foo").await?;

    // Latency of a small unit: submit to Succeeded (Go: 2.5 s).
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let id = submit_started(&foo.socket, "work submit bar cat", b"ping\n").await?;
        wait_state(&foo.socket, &id, 2).await?;
        fastest = fastest.min(started.elapsed());
        assert_eq!(results(&foo.socket, &id).await?, b"ping\n");
    }
    eprintln!("Rust to Rust over the mesh, small unit: {fastest:?}");
    assert!(fastest < Duration::from_millis(500), "{fastest:?}");

    let payload: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i * 31 % 253) as u8)
        .collect();
    let started = Instant::now();
    let id = submit_started(&foo.socket, "work submit bar cat", &payload).await?;
    wait_state(&foo.socket, &id, 2).await?;
    eprintln!(
        "5 MiB payload and results over the mesh: {:?}",
        started.elapsed()
    );
    assert!(std::fs::read(foo.unit_dir(&id).join("stdout"))? == payload);
    assert!(std::fs::read(bar.unit_dir(&id).join("stdin"))? == payload);

    let size = 40 * 1024 * 1024;
    let started = Instant::now();
    let id = submit_started(
        &foo.socket,
        &format!("work submit bar gen {size} 40 0"),
        b"",
    )
    .await?;
    let done = wait_state(&foo.socket, &id, 2).await?;
    eprintln!("40 MiB of results over the mesh: {:?}", started.elapsed());
    assert_eq!(done["StdoutSize"], size);
    assert!(std::fs::read(foo.unit_dir(&id).join("stdout"))? == pattern(size));

    // Cancel and release travel over the mesh too.
    let id = submit_started(&foo.socket, "work submit bar sleeper", b"").await?;
    wait_state(&foo.socket, &id, 1).await?;
    cancel(&foo.socket, &id).await?;
    wait_state(&foo.socket, &id, 4).await?;
    assert_eq!(status(&bar.socket, &id).await?["State"], 4);
    release(&foo.socket, &id).await?;
    let reply = Client::unix(&bar.socket)
        .await?
        .ask(&format!("work status {id}"))
        .await?;
    assert_eq!(reply, format!("ERROR: unknown work unit {id}"));
    Ok(())
}

#[tokio::test]
async fn rust_to_go_over_the_mesh() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let Some(go) = go_bar(dir.path()).await? else {
        return Ok(());
    };
    let foo = MeshNode::start(
        dir.path(),
        "foo",
        NodeSetup {
            signer: true,
            ..NodeSetup::default()
        },
    )
    .await?;
    let tcp = std::net::TcpStream::connect(("127.0.0.1", go.listen_port))?;
    foo.session(OwnedFd::from(tcp));
    foo.route_to("bar").await?;
    go_route_to(&go, "foo").await?;

    let started = Instant::now();
    let id = submit_started(&foo.socket, "work submit bar cat", b"hello\nremote world\n").await?;
    let done = wait_state(&foo.socket, &id, 2).await?;
    eprintln!(
        "Rust to Go over the mesh, small unit: {:?}",
        started.elapsed()
    );
    assert_eq!(done["Detail"], "exit status 0");
    assert_eq!(results(&foo.socket, &id).await?, b"hello\nremote world\n");
    let remote = go_status(&go, &id).await?;
    assert_eq!(remote["WorkType"], "cat");

    let payload: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 241) as u8).collect();
    let id = submit_started(&foo.socket, "work submit bar cat", &payload).await?;
    wait_state(&foo.socket, &id, 2).await?;
    assert!(std::fs::read(foo.unit_dir(&id).join("stdout"))? == payload);

    let id = submit_started(
        &foo.socket,
        "work submit bar gen if=/dev/urandom bs=1M count=20 iflag=fullblock",
        b"",
    )
    .await?;
    let done = wait_state(&foo.socket, &id, 2).await?;
    assert_eq!(done["StdoutSize"], 20 << 20);
    let go_stdout = dir.path().join("go-bar/data/bar").join(&id).join("stdout");
    assert!(std::fs::read(foo.unit_dir(&id).join("stdout"))? == std::fs::read(go_stdout)?);

    // Signed by us, verified by Go over the mesh.
    signed_work_runs_on_go_bar(&foo.socket).await?;

    // Cancel: Go's results stream of the Canceled unit never ends; ours does.
    let id = submit_started(&foo.socket, "work submit bar sleeper", b"").await?;
    wait_state(&foo.socket, &id, 1).await?;
    cancel(&foo.socket, &id).await?;
    let s = wait_state(&foo.socket, &id, 4).await?;
    assert_eq!(s["Detail"], "Canceled");
    assert_eq!(go_status(&go, &id).await?["State"], 4);
    release(&foo.socket, &id).await?;
    assert_eq!(
        go.command(&format!("work status {id}")).await?,
        format!("ERROR: unknown work unit {id}")
    );
    Ok(())
}

#[tokio::test]
async fn go_to_rust_over_the_mesh() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bar = MeshNode::start(
        dir.path(),
        "bar",
        NodeSetup {
            verifier: true,
            options: fast_options(),
            ..NodeSetup::default()
        },
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let mesh = bar.mesh.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(tcp) = tcp.into_std() else { continue };
            let mesh = mesh.clone();
            tokio::spawn(async move {
                let _ = mesh
                    .run_session(OwnedFd::from(tcp), Framing::Len16Le, params())
                    .await;
            });
        }
    });
    let private = dir.path().join("private.pem");
    std::fs::write(&private, PRIVATE_KEY)?;
    let extra = format!(
        "- tcp-peer:\n    address: 127.0.0.1:{port}\n\
         - work-signing:\n    privatekey: {}\n    tokenexpiration: 10m\n",
        private.display()
    );
    let Some(go) = GoNode::start(dir.path(), "foo", &extra).await? else {
        return Ok(());
    };
    bar.route_to("foo").await?;
    go_route_to(&go, "bar").await?;

    // Go submits to us; our unit has Go's id and the payload.
    let payload: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 239) as u8).collect();
    let (id, reply) = submit(&go.socket, "work submit bar cat", &payload).await?;
    assert_eq!(
        reply,
        format!(r#"{{"result":"Job Started","unitid":"{id}"}}"#)
    );
    assert!(id.starts_with("foo"), "{id}");
    let done = go_wait_state(&go, &id, 2).await?;
    assert_eq!(done["ExtraData"]["RemoteUnitID"], id.as_str());
    assert_eq!(done["StdoutSize"], payload.len());
    assert_eq!(status(&bar.socket, &id).await?["WorkType"], "cat");
    assert!(std::fs::read(bar.unit_dir(&id).join("stdin"))? == payload);
    let go_stdout = dir.path().join("go-foo/data/foo").join(&id).join("stdout");
    assert!(go_results(&go_stdout, payload.len()).await? == payload);

    // Tens of MB from us to Go.
    let size = 20 * 1024 * 1024;
    let (id, _) = submit(&go.socket, &format!("work submit bar gen {size} 20 0"), b"").await?;
    go_wait_state(&go, &id, 2).await?;
    let go_stdout = dir.path().join("go-foo/data/foo").join(&id).join("stdout");
    assert!(go_results(&go_stdout, size).await? == pattern(size));

    // Go signs, we verify (unsigned is refused).
    let (id, reply) = submit(
        &go.socket,
        r#"{"command":"work","subcommand":"submit","node":"bar","worktype":"signedcat","signwork":"true"}"#,
        b"signed by Go",
    )
    .await?;
    assert!(reply.contains("Job Started"), "{reply}");
    go_wait_state(&go, &id, 2).await?;
    assert_eq!(
        std::fs::read(bar.unit_dir(&id).join("stdout"))?,
        b"signed by Go"
    );
    let (_, reply) = submit(&go.socket, "work submit bar signedcat", b"").await?;
    assert_eq!(
        reply,
        "ERROR: could not parse response: ERROR: could not verify signature: signature is empty"
    );

    // Go cancels and releases on us.
    let (id, _) = submit(&go.socket, "work submit bar sleeper", b"").await?;
    wait_state(&bar.socket, &id, 1).await?;
    assert_eq!(
        go.command(&format!("work cancel {id}")).await?,
        format!(r#"{{"cancelled":"{id}"}}"#)
    );
    wait_state(&bar.socket, &id, 4).await?;
    go_wait_state(&go, &id, 4).await?;
    assert_eq!(
        go.command(&format!("work release {id}")).await?,
        format!(r#"{{"released":"{id}"}}"#)
    );
    let reply = Client::unix(&bar.socket)
        .await?
        .ask(&format!("work status {id}"))
        .await?;
    assert_eq!(reply, format!("ERROR: unknown work unit {id}"));
    Ok(())
}
