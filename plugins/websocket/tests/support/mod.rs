//! Helpers shared by the plugin's tests: the built cdylib, ports, and the reference Go
//! receptor 1.6.9 run on 127.0.0.1.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use receptor_core::plugin_host::{BackendConnection, BackendInstance, LoadOptions, PluginHost};

/// The folder holding the test binary's sibling artifacts (`target/<profile>`).
pub fn artifact_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Builds `package`'s cdylib (a no-op when up to date) and returns `lib<name>.so`.
pub fn cdylib(package: &str, name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = artifact_dir();
    BUILT.get_or_init(|| {
        let target = dir.parent().expect("target folder");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet", "-p", package, "--target-dir"])
            .arg(target);
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(other) => {
                cmd.args(["--profile", other]);
            }
        }
        let status = cmd.status().expect("run cargo build for the plugin");
        assert!(status.success(), "building {package} failed");
    });
    let path = dir.join(format!("lib{name}.so"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Loads the given plugin files into a host.
pub fn host(paths: &[PathBuf]) -> PluginHost {
    PluginHost::load(&LoadOptions {
        paths: paths.to_vec(),
        default_search: false,
    })
    .expect("load plugins")
}

/// A UDP port the kernel just handed out on 127.0.0.1, free again.
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

/// A TCP port the kernel just handed out on 127.0.0.1, free again.
pub fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The next connection the instance hands over, within `within`.
pub async fn next_conn(instance: &mut BackendInstance, within: Duration) -> BackendConnection {
    tokio::time::timeout(within, instance.connections.recv())
        .await
        .expect("a connection in time")
        .expect("the connection stream is open")
}

/// The reference Go receptor 1.6.9: `RECEPTOR_REFERENCE_BIN`, else the cache that
/// `scripts/reference-receptor` fills (`RECEPTOR_REF_CACHE`, default
/// `~/.cache/receptor-reference`), else whatever that script prints.
pub fn reference_receptor() -> PathBuf {
    if let Some(bin) = std::env::var_os("RECEPTOR_REFERENCE_BIN") {
        return PathBuf::from(bin);
    }
    let cache = std::env::var_os("RECEPTOR_REF_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/receptor-reference"))
        })
        .unwrap_or_default();
    let bin = cache.join("root/usr/bin/receptor");
    if bin.is_file() {
        return bin;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/reference-receptor");
    let out = Command::new(&script).output().unwrap_or_else(|e| {
        panic!(
            "reference Go receptor not found and {} failed: {e}",
            script.display()
        )
    });
    assert!(
        out.status.success(),
        "reference Go receptor unavailable: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A Go receptor process, killed when dropped.
pub struct GoNode {
    child: Child,
    _dir: tempfile::TempDir,
}

impl GoNode {
    /// Starts `receptor --node id=<id> datadir=<tmp> <args>` with debug logs on stderr.
    pub fn start(id: &str, args: &[String]) -> GoNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Command::new(reference_receptor())
            .arg("--node")
            .arg(format!("id={id}"))
            .arg(format!("datadir={}", dir.path().display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the reference Go receptor");
        GoNode { child, _dir: dir }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for GoNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `msg` is a netceptor ROUTE message (type byte 1, then JSON) from node `id`.
pub fn is_route_from(msg: &[u8], id: &str) -> bool {
    let Some((&1, json)) = msg.split_first() else {
        return false;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return false;
    };
    v["NodeID"] == id && v["ForwardingNode"] == id
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_tcp(port: u16, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
