//! Test helper: the reference Go receptor 1.6.9 as a peer (a process on 127.0.0.1 with
//! its configuration in a temporary folder; killed when dropped).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

/// Path of the reference Go receptor 1.6.9 (`RECEPTOR_REFERENCE` or the cache that
/// `tools/reference-receptor` fills), if present.
pub fn reference_binary() -> Option<PathBuf> {
    let path = std::env::var_os("RECEPTOR_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.cache/receptor-reference/root/usr/bin/receptor"));
    path.is_file().then_some(path)
}

/// A free TCP port on 127.0.0.1, chosen by the OS and never handed out twice in this
/// process (tests run in parallel threads and release the port before a node binds it).
pub fn free_port() -> Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..100 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    bail!("no free port")
}

/// A running Go node.
pub struct GoNode {
    child: tokio::process::Child,
    /// Its node ID.
    pub id: String,
    /// Its control socket.
    pub socket: PathBuf,
    /// Its control service TCP port.
    pub control_port: u16,
    /// Its TCP backend listener port.
    pub listen_port: u16,
    /// Its log file.
    pub log: PathBuf,
}

impl Drop for GoNode {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl GoNode {
    /// Starts Go node `id` in `dir` with a TCP listener, a control service (unix socket
    /// and TCP) and the extra config items `extra` (YAML list lines). `None` when the
    /// reference binary is not installed.
    pub async fn start(dir: &Path, id: &str, extra: &str) -> Result<Option<GoNode>> {
        GoNode::start_with(dir, id, "control", extra).await
    }

    /// [`GoNode::start`] with the mesh service name of the control service
    /// (`""`: no mesh control service, so that a `tcp-client` can take the name).
    pub async fn start_with(
        dir: &Path,
        id: &str,
        mesh_service: &str,
        extra: &str,
    ) -> Result<Option<GoNode>> {
        let Some(bin) = reference_binary() else {
            eprintln!("reference receptor not found (set RECEPTOR_REFERENCE); Go interop skipped");
            return Ok(None);
        };
        let node_dir = dir.join(format!("go-{id}"));
        std::fs::create_dir_all(&node_dir)?;
        let socket = node_dir.join("ctl.sock");
        let control_port = free_port()?;
        let listen_port = free_port()?;
        let config = format!(
            "---\n- node:\n    id: {id}\n    datadir: {data}\n- log-level: debug\n\
             - tcp-listener:\n    bindaddr: 127.0.0.1\n    port: {listen_port}\n\
             - control-service:\n    service: \"{mesh_service}\"\n    filename: {sock}\n    tcplisten: 127.0.0.1:{control_port}\n{extra}",
            data = node_dir.join("data").display(),
            sock = socket.display(),
        );
        let config_path = node_dir.join("receptor.yaml");
        std::fs::write(&config_path, config)?;
        let log = node_dir.join("log.txt");
        let log_file = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(bin)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .context("starting the reference receptor")?;
        let node = GoNode {
            child,
            id: id.to_owned(),
            socket,
            control_port,
            listen_port,
            log,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        // Work types are registered after the control service listens: wait for the
        // end of the start-up.
        while !std::fs::read_to_string(&node.log)
            .unwrap_or_default()
            .contains("Initialization complete")
            || TcpStream::connect(("127.0.0.1", control_port))
                .await
                .is_err()
        {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "Go node {id} did not start: {}",
                    std::fs::read_to_string(&node.log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Some(node))
    }

    /// Sends `line` on a fresh unix-socket session and returns the reply line.
    pub async fn command(&self, line: &str) -> Result<String> {
        let stream = UnixStream::connect(&self.socket).await?;
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        let mut greeting = String::new();
        r.read_line(&mut greeting).await?;
        w.write_all(format!("{line}\n").as_bytes()).await?;
        let mut reply = String::new();
        r.read_line(&mut reply).await?;
        Ok(reply.trim_end().to_owned())
    }
}
