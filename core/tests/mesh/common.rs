//! Helpers shared by the mesh tests.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use receptor_core::mesh::{Mesh, MeshError, MeshOptions, SessionParams};
use tokio::task::JoinHandle;

/// Starts a node.
pub fn start(id: &str) -> Mesh {
    Mesh::start(MeshOptions {
        node_id: id.to_owned(),
        max_idle: Duration::from_secs(21),
    })
}

/// Session parameters with a cost.
pub fn cost(c: f64) -> SessionParams {
    SessionParams {
        cost: c,
        ..SessionParams::default()
    }
}

/// A session task.
pub type Session = JoinHandle<Result<(), MeshError>>;

/// Runs a session of `mesh` on `fd` in the background.
pub fn spawn_session(
    mesh: &Mesh,
    fd: OwnedFd,
    framing: receptor_core::mesh::Framing,
    params: SessionParams,
) -> Session {
    let mesh = mesh.clone();
    tokio::spawn(async move { mesh.run_session(fd, framing, params).await })
}

/// Links two nodes with a unix stream socketpair (u16-LE framing).
pub fn link(a: &Mesh, b: &Mesh, c: f64) -> (Session, Session) {
    let (x, y) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let f = receptor_core::mesh::Framing::Len16Le;
    (
        spawn_session(a, OwnedFd::from(x), f, cost(c)),
        spawn_session(b, OwnedFd::from(y), f, cost(c)),
    )
}

/// Links two nodes over TCP on 127.0.0.1 (an ephemeral port).
pub async fn tcp_link(a: &Mesh, b: &Mesh, c: f64) -> (Session, Session) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (client, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    let client = client.expect("connect").into_std().expect("std");
    let server = accepted.expect("accept").0.into_std().expect("std");
    let f = receptor_core::mesh::Framing::Len16Le;
    (
        spawn_session(a, OwnedFd::from(client), f, cost(c)),
        spawn_session(b, OwnedFd::from(server), f, cost(c)),
    )
}

/// A connected pair of sockets of type `ty` (e.g. `SOCK_SEQPACKET`).
pub fn socketpair(ty: libc::c_int) -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) };
    assert_eq!(rc, 0, "socketpair: {}", std::io::Error::last_os_error());
    use std::os::fd::FromRawFd;
    // SAFETY: socketpair succeeded, so the descriptor is open and owned by us.
    let first = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: likewise.
    let second = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    (first, second)
}

/// Polls `check` every 25 ms until it returns true; fails after `secs` seconds.
pub async fn wait_until<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until `mesh` routes to every node of `dests`.
pub async fn wait_routes(mesh: &Mesh, dests: &[&str]) {
    let what = format!("{} to route to {dests:?}", mesh.node_id());
    wait_until(&what, 15, || async {
        let st = mesh.status().await;
        dests.iter().all(|d| st.routing_table.contains_key(*d))
    })
    .await;
}
