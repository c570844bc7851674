//! One receptor node running as a child process of the test.
//!
//! Each node gets its own temp folder holding its config (`receptor.yaml`), data folder
//! (`data/`), control socket (`control.sock`) and log (`node.log`: the process's stdout and
//! stderr). The process runs in its own process group; dropping the [`NodeProcess`] kills it, that
//! group and all its descendants (work units too) by process id, never by name. When the test is
//! panicking, the folder is kept and the end of the log is printed, so a failed test shows
//! what each node said.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use tempfile::TempDir;

use crate::binaries::Implementation;
use crate::config::NodeConfig;
use crate::control::ControlClient;
use crate::receptorctl::{self, CtlOutput};
use crate::wait::{wait_until, CONVERGE_TIMEOUT};

/// How long a node gets from spawn to answering on its control socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`NodeProcess::wait_for_ping`] keeps trying.
pub const PING_WAIT_TIMEOUT: Duration = Duration::from_secs(45);

/// Log lines shown when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// A running (or stopped) receptor node owned by a test.
pub struct NodeProcess {
    implementation: Implementation,
    config: NodeConfig,
    dir: Option<TempDir>,
    dir_path: PathBuf,
    child: Option<Child>,
    /// Command the node's binary runs under, e.g. `ip netns exec NS` (empty: none).
    wrapper: Vec<String>,
}

impl NodeProcess {
    /// Writes the node's config, starts it and waits until its control socket greets with
    /// the node's id. Fails (with the node's log) if the process exits or does not answer
    /// within [`START_TIMEOUT`].
    pub fn start(implementation: Implementation, config: NodeConfig) -> Result<NodeProcess> {
        NodeProcess::start_with(implementation, config, true, &[])
    }

    /// Like [`NodeProcess::start`], with the binary run under `wrapper` (a command that ends by
    /// executing its arguments in place, e.g. `["ip", "netns", "exec", "ns1"]`), also on
    /// [`NodeProcess::restart`].
    pub fn start_wrapped(
        implementation: Implementation,
        config: NodeConfig,
        wrapper: &[&str],
    ) -> Result<NodeProcess> {
        NodeProcess::start_with(implementation, config, true, wrapper)
    }

    /// Starts a node from configuration text written by `render(datadir, socket)` instead
    /// of one generated from a [`NodeConfig`] (e.g. an example file with its port and
    /// paths replaced), then waits for the greeting like [`NodeProcess::start`]. `id` is the node
    /// id the text configures; the greeting must name it.
    pub fn start_from_text(
        implementation: Implementation,
        id: &str,
        render: impl FnOnce(&Path, &Path) -> Result<String>,
    ) -> Result<NodeProcess> {
        let mut node = NodeProcess::prepare(implementation, NodeConfig::new(id), &[])?;
        let text = render(&node.datadir(), &node.socket())?;
        node.write_raw_config(&text)?;
        node.spawn()?;
        Ok(node)
    }

    /// Prepares the node folder and spawns the process; waits for the greeting if `ready`.
    fn start_with(
        implementation: Implementation,
        config: NodeConfig,
        ready: bool,
        wrapper: &[&str],
    ) -> Result<NodeProcess> {
        let mut node = NodeProcess::prepare(implementation, config, wrapper)?;
        node.write_config()?;
        if ready {
            node.spawn()?;
        } else {
            node.launch()?;
        }
        Ok(node)
    }

    /// Creates the node folder and its data folder; writes nothing else.
    fn prepare(
        implementation: Implementation,
        config: NodeConfig,
        wrapper: &[&str],
    ) -> Result<NodeProcess> {
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "receptor-{}-{}-",
                implementation.label(),
                config.id()
            ))
            .tempdir()
            .context("creating the node folder")?;
        let dir_path = dir.path().to_path_buf();
        let node = NodeProcess {
            implementation,
            config,
            dir: Some(dir),
            dir_path,
            child: None,
            wrapper: wrapper.iter().map(|w| (*w).to_owned()).collect(),
        };
        fs::create_dir_all(node.datadir())?;
        Ok(node)
    }

    /// Starts a node whose config must make it refuse to run, waits for the process to exit
    /// and returns its log. Fails if it exits successfully or is still running after
    /// [`START_TIMEOUT`]. A node may open its control socket before it finds the fault, so
    /// answering on the socket is no proof of a successful start; only the exit is awaited.
    pub fn run_expecting_failure(
        implementation: Implementation,
        config: NodeConfig,
    ) -> Result<String> {
        NodeProcess::run_expecting_failure_wrapped(implementation, config, &[])
    }

    /// [`NodeProcess::run_expecting_failure`] with the binary run under `wrapper` (see
    /// [`NodeProcess::start_wrapped`]).
    pub fn run_expecting_failure_wrapped(
        implementation: Implementation,
        config: NodeConfig,
        wrapper: &[&str],
    ) -> Result<String> {
        let mut node = NodeProcess::start_with(implementation, config, false, wrapper)?;
        let child = node.child.as_mut().ok_or_else(|| anyhow!("not started"))?;
        let status = wait_until(START_TIMEOUT, "the node to exit", || Ok(child.try_wait()?))
            .map_err(|e| anyhow!("node {} kept running: {e:#}", implementation.label()))?;
        node.child = None;
        if status.success() {
            return Err(anyhow!(
                "node {} exited successfully\n--- node log ---\n{}",
                implementation.label(),
                node.log()
            ));
        }
        Ok(node.log())
    }

    /// The node id.
    pub fn id(&self) -> &str {
        self.config.id()
    }

    /// Which receptor program runs this node.
    pub fn implementation(&self) -> Implementation {
        self.implementation
    }

    /// The configuration the node was (last) started or reloaded with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The node's folder.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// The node's data folder (`datadir` in its config).
    pub fn datadir(&self) -> PathBuf {
        self.dir_path.join("data")
    }

    /// The unix control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir_path.join("control.sock")
    }

    /// The config file passed with `--config`.
    pub fn config_path(&self) -> PathBuf {
        self.dir_path.join("receptor.yaml")
    }

    /// The file receiving the process's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir_path.join("node.log")
    }

    /// Everything the node has logged so far.
    pub fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The process id, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True if the process has been started and has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Opens a new control connection (greeting already read).
    pub fn control(&self) -> Result<ControlClient> {
        ControlClient::connect(&self.socket())
    }

    /// Runs one command on a new control connection and parses the JSON reply.
    pub fn command_json(&self, line: &str) -> Result<Value> {
        self.control()?.command_json(line)
    }

    /// The node's `status` reply.
    pub fn status(&self) -> Result<Value> {
        self.command_json("status")
    }

    /// Polls `status` until `accept` returns true; the timeout error shows the last status.
    pub fn wait_for_status(&self, what: &str, accept: impl Fn(&Value) -> bool) -> Result<Value> {
        let mut last = None;
        let result = wait_until(CONVERGE_TIMEOUT, what, || {
            let status = self.status()?;
            if accept(&status) {
                return Ok(Some(status));
            }
            last = Some(status);
            Ok(None)
        });
        result.map_err(|e| match last {
            Some(status) => anyhow!("node {}: {e:#}\nlast status: {status}", self.id()),
            None => anyhow!("node {}: {e:#}", self.id()),
        })
    }

    /// Waits until the node's `RoutingTable` is exactly `routes` (destination, next hop).
    pub fn wait_for_routes(&self, routes: &[(&str, &str)]) -> Result<Value> {
        let expected: BTreeMap<String, Value> = routes
            .iter()
            .map(|(dest, via)| (dest.to_string(), Value::from(*via)))
            .collect();
        let expected = Value::Object(expected.into_iter().collect());
        self.wait_for_status(&format!("routing table {expected}"), |status| {
            status.get("RoutingTable") == Some(&expected)
        })
    }

    /// Polls `ping <target>` until it succeeds (a routing table can still show a link that
    /// is gone, e.g. just after `reload` restarted the backends); returns the ping reply.
    pub fn wait_for_ping(&self, target: &str) -> Result<Value> {
        let mut last = None;
        let result = wait_until(
            CONVERGE_TIMEOUT,
            &format!("a ping reply from {target}"),
            || {
                let reply = self.command_json(&format!("ping {target}"))?;
                if reply.get("Success") == Some(&Value::Bool(true)) {
                    return Ok(Some(reply));
                }
                last = Some(reply);
                Ok(None)
            },
        );
        result.map_err(|e| match last {
            Some(reply) => anyhow!(
                "node {}: {e:#}
last reply: {reply}",
                self.id()
            ),
            None => anyhow!("node {}: {e:#}", self.id()),
        })
    }

    /// Runs `receptorctl --socket <this node's socket> <args...>`.
    pub fn receptorctl(&self, args: &[&str]) -> Result<CtlOutput> {
        receptorctl::run_receptorctl(&self.socket(), args)
    }

    /// Replaces the config file (for `reload` tests); the running process is not told.
    pub fn set_config(&mut self, config: NodeConfig) -> Result<()> {
        self.config = config;
        self.write_config()
    }

    /// Writes `text` as the config file verbatim (e.g. a broken config for `reload`).
    pub fn write_raw_config(&self, text: &str) -> Result<()> {
        fs::write(self.config_path(), text).context("writing the config file")
    }

    /// Kills the node, its process group and every process it started (work units included),
    /// and reaps it. The node's folder stays until the [`NodeProcess`] is dropped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_tree(child.id());
            let _ = child.wait();
        }
    }

    /// Kills only the node's own process with SIGKILL, as `kill -9 <pid>` does, and reaps it:
    /// the processes it started (work units) live on, as after a real crash. Dropping the
    /// [`NodeProcess`] no longer reaches them. [`NodeProcess::restart`] starts the node again.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` sends SIGKILL.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the node and starts it again with the same folder and config.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    fn write_config(&self) -> Result<()> {
        let yaml = self.config.to_yaml(&self.datadir(), &self.socket());
        fs::write(self.config_path(), yaml).context("writing the config file")
    }

    fn spawn(&mut self) -> Result<()> {
        self.launch()?;
        self.wait_ready().map_err(|e| {
            anyhow!(
                "node {} ({}) did not start: {e:#}\n--- node log (tail) ---\n{}",
                self.id(),
                self.implementation.label(),
                self.log_tail()
            )
        })
    }

    /// Spawns the process with its log as stdout and stderr, in a process group of its own.
    fn launch(&mut self) -> Result<()> {
        let binary = self.implementation.binary()?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening the node log")?;
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        let child = command
            .arg("--config")
            .arg(self.config_path())
            .current_dir(&self.dir_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| {
                format!("starting {} (wrapper {:?})", binary.display(), self.wrapper)
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits for the greeting; stops early if the process exits.
    fn wait_ready(&mut self) -> Result<()> {
        let socket = self.socket();
        let id = self.config.id().to_string();
        let child = self.child.as_mut().ok_or_else(|| anyhow!("not started"))?;
        let outcome = wait_until(START_TIMEOUT, "the control socket greeting", || {
            if let Some(status) = child.try_wait()? {
                return Ok(Some(Err(anyhow!("process exited with {status}"))));
            }
            let client = ControlClient::connect(&socket)?;
            if client.node_id() == id {
                Ok(Some(Ok(())))
            } else {
                Ok(Some(Err(anyhow!(
                    "greeting names node {:?}, not {id:?}",
                    client.node_id()
                ))))
            }
        })?;
        outcome
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for NodeProcess {
    /// Kills the node, then prints the end of its log: test runners show a test's output only
    /// when it fails, which is when the log matters. A panicking test also keeps the folder.
    fn drop(&mut self) {
        self.kill();
        let kept = if std::thread::panicking() {
            self.dir.take().map(TempDir::keep)
        } else {
            None
        };
        eprintln!(
            "--- node {} ({}){} - log tail ---\n{}\n--- end of node {} ---",
            self.id(),
            self.implementation.label(),
            kept.map(|dir| format!(", folder kept at {}", dir.display()))
                .unwrap_or_default(),
            self.log_tail(),
            self.id()
        );
    }
}

/// Kills `pid` (a child this harness spawned in its own process group and has not reaped
/// yet), its process group, and every process descended from it.
///
/// The group alone is not enough: Go receptor starts each work unit's runner in a new session
/// (so that work survives a node restart), and such runners would outlive the test. The tree
/// is first frozen with SIGSTOP, top down and repeatedly until no new descendant shows up, so
/// nothing can fork or exit while it is being collected; then everything gets SIGKILL.
pub(crate) fn kill_tree(pid: u32) {
    signal(pid, libc::SIGSTOP);
    let mut stopped: Vec<u32> = Vec::new();
    for _ in 0..MAX_SWEEPS {
        let new: Vec<u32> = descendants(pid)
            .into_iter()
            .filter(|p| !stopped.contains(p))
            .collect();
        if new.is_empty() {
            break;
        }
        for p in new {
            signal(p, libc::SIGSTOP);
            stopped.push(p);
        }
    }
    if let Ok(pgid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) touches no memory of ours. The negative id names the process group
        // created for our own, not yet reaped child, so it cannot have been reused.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    for p in stopped {
        signal(p, libc::SIGKILL);
    }
}

/// Rounds of the descendant sweep in [`kill_tree`] (a work tree is a few levels deep).
const MAX_SWEEPS: usize = 16;

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) touches no memory of ours. `pid` is our unreaped child or one of its
    // descendants found just now and stopped since, which cannot exit or be replaced.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Every process descended from `root`, parents before their children, read from /proc.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = parent_of(pid) {
                children.push((ppid, pid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for &(ppid, pid) in &children {
            if ppid == parent && !out.contains(&pid) {
                out.push(pid);
                frontier.push(pid);
            }
        }
    }
    out
}

/// The parent pid of `pid`: the second field after the parenthesised command name in
/// /proc/<pid>/stat.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split(' ').nth(1)?.parse().ok()
}
