//! The harness itself, checked against the reference receptor: ports, node start-up, the raw
//! control client, and clean-up of a node's whole process group on drop.

use std::collections::HashSet;
use std::fs::{self, OpenOptions, TryLockError};
use std::net::{Ipv4Addr, TcpListener};

use anyhow::{ensure, Context, Result};
use receptor_tests::ports::{block_lock_path, PORT_RANGE};
use receptor_tests::wait::{wait_until, CONVERGE_TIMEOUT};
use receptor_tests::{free_port, Implementation, NodeConfig, NodeProcess};

#[test]
fn ports_are_distinct_in_range_and_bindable() -> Result<()> {
    let ports = (0..40).map(|_| free_port()).collect::<Result<Vec<u16>>>()?;
    let distinct: HashSet<u16> = ports.iter().copied().collect();
    ensure!(
        distinct.len() == ports.len(),
        "duplicate ports in {ports:?}"
    );
    for port in ports {
        ensure!(
            PORT_RANGE.contains(&port),
            "port {port} outside {PORT_RANGE:?}"
        );
        TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .with_context(|| format!("binding {port}"))?;
    }
    Ok(())
}

#[test]
fn a_claimed_port_block_is_locked_against_other_processes() -> Result<()> {
    let port = free_port()?;
    // flock conflicts between open file descriptions, so a second open of the lock file
    // stands for another test process trying to claim the same block.
    let other = OpenOptions::new()
        .write(true)
        .open(block_lock_path(port)?)?;
    match other.try_lock() {
        Err(TryLockError::WouldBlock) => Ok(()),
        Ok(()) => anyhow::bail!("the block of port {port} could be claimed twice"),
        Err(TryLockError::Error(e)) => Err(e.into()),
    }
}

#[test]
fn node_greets_with_its_id_and_answers_commands() -> Result<()> {
    // Go receptor refuses to run without a backend.
    let node = NodeProcess::start(
        Implementation::Go,
        NodeConfig::new("solo").tcp_listener(free_port()?),
    )?;
    let mut ctl = node.control()?;
    ensure!(ctl.node_id() == "solo", "greeting named {}", ctl.node_id());
    let status = ctl.command_json("status")?;
    ensure!(
        status["NodeID"] == "solo" && status["Version"] == "1.6.9",
        "status: {status}"
    );
    // Several commands on one connection, including an error line.
    ensure!(ctl.command("nosuch")? == "ERROR: Unknown command, nosuch");
    let ping = ctl.command_json("ping localhost")?;
    ensure!(
        ping["Success"] == true && ping["From"] == "solo",
        "ping: {ping}"
    );
    Ok(())
}

#[test]
fn start_fails_with_the_log_when_the_node_cannot_start() -> Result<()> {
    let config = NodeConfig::new("broken").entry("no-such-config-item", serde_json::json!({}));
    let Err(error) = NodeProcess::start(Implementation::Go, config) else {
        anyhow::bail!("a node with an invalid config started");
    };
    let message = format!("{error:#}");
    ensure!(
        message.contains("did not start") && message.contains("no-such-config-item"),
        "{message}"
    );
    Ok(())
}

/// True while `pid` names a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn killing_a_node_kills_its_work_processes_too() -> Result<()> {
    let mut node = NodeProcess::start(
        Implementation::Go,
        NodeConfig::new("worker")
            .tcp_listener(free_port()?)
            .work_command("sleeper", "sleep", Some("300")),
    )?;
    let node_pid = node.pid().context("node has no pid")?;
    // Go registers work types after its control socket greets: wait for the ad.
    node.wait_for_status("sleeper advertised", |s| {
        s.to_string().contains("\"sleeper\"")
    })?;
    let mut ctl = node.control()?;
    let created = ctl.command("work submit localhost sleeper")?;
    ensure!(
        created.starts_with("Work unit created with ID"),
        "{created}"
    );
    ctl.shutdown_write()?;
    let submitted: serde_json::Value = serde_json::from_str(&ctl.read_line()?)?;
    let unit = submitted["unitid"]
        .as_str()
        .context("no unitid")?
        .to_string();
    // Go runs `sleep` under a runner process in a session of its own, out of the node's
    // process group: the runner's pid is ExtraData.Pid, the command's is in Detail.
    let (runner_pid, command_pid) = wait_until(CONVERGE_TIMEOUT, "the unit's processes", || {
        let status = node.command_json(&format!("work status {unit}"))?;
        let runner = status["ExtraData"]["Pid"].as_u64().filter(|pid| *pid > 0);
        let command = status["Detail"]
            .as_str()
            .and_then(|d| d.strip_prefix("Running: PID "))
            .and_then(|pid| pid.parse::<u64>().ok());
        Ok(runner.zip(command))
    })?;
    let work = [u32::try_from(runner_pid)?, u32::try_from(command_pid)?];
    ensure!(
        alive(node_pid) && work.iter().all(|p| alive(*p)),
        "node or work not running"
    );

    // Kill without removing the node's folder: the runner must not get away by noticing that
    // its unit folder disappeared.
    node.kill();
    ensure!(!alive(node_pid), "node process {node_pid} survived");
    wait_until(CONVERGE_TIMEOUT, "the work processes to die", || {
        Ok(work.iter().all(|p| !alive(*p)).then_some(()))
    })
}
