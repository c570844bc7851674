//! The unit store driven by the real `command` plugin (its cdylib loaded through the
//! plugin host) running real processes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::control::WorkCommand;
use super::store::Workceptor;
use super::worktype::{UnitState, WorkType};
use crate::control::command::{
    Args, BoxRead, BoxWrite, ControlCommand, ControlConn, PeerKind, Reply,
};
use crate::plugin_host::{LoadOptions, PluginHost};

const WAIT: Duration = Duration::from_secs(20);

/// The `command` plugin library of this build.
fn command_plugin() -> PathBuf {
    receptor_tests::binaries::plugin_lib("receptor_command").expect("command plugin library")
}

fn command_types() -> Result<Vec<Arc<dyn WorkType>>> {
    let host = PluginHost::load(&LoadOptions {
        paths: vec![command_plugin()],
        default_search: false,
        ..LoadOptions::default()
    })?;
    let sections = [
        json!({"worktype": "cat", "command": "cat"}),
        json!({"worktype": "echoparams", "command": "echo", "params": "base", "allowruntimeparams": true}),
        json!({"worktype": "ticker", "command": "bash",
               "params": "-c \"for i in 1 2 3 4 5; do echo tick $i; sleep 0.1; done\""}),
        json!({"worktype": "sleeper", "command": "sleep", "params": "300"}),
        json!({"worktype": "forker", "command": "bash",
               "params": "-c \"sleep 300 & sleep 301 & (sleep 302; echo never) & wait\""}),
        json!({"worktype": "fail", "command": "bash", "params": "-c \"echo oops; echo err >&2; exit 3\""}),
    ];
    sections
        .iter()
        .map(|s| Ok(host.work_type("work-command", s)?))
        .collect()
}

fn conn() -> (ControlConn, tokio::io::DuplexStream) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (r, w) = tokio::io::split(server);
    let reader: BoxRead = Box::pin(r);
    let writer: BoxWrite = Box::pin(w);
    (
        ControlConn {
            reader: BufReader::new(reader),
            writer,
            peer: PeerKind::Unix,
            limits: crate::control::ControlLimits::default(),
        },
        client,
    )
}

async fn run(
    cmd: &Arc<WorkCommand>,
    line: &str,
    payload: &[u8],
) -> Result<(Result<Reply, String>, String)> {
    let (mut c, mut client) = conn();
    let cmd = cmd.clone();
    let line = line.to_owned();
    let task = tokio::spawn(async move {
        let reply = cmd.run(Args::Text(line), &mut c).await;
        (reply, c)
    });
    client.write_all(payload).await?;
    client.shutdown().await?;
    let (reply, c) = tokio::time::timeout(WAIT, task).await??;
    drop(c);
    let mut out = String::new();
    client.read_to_string(&mut out).await?;
    Ok((reply, out))
}

async fn submit(cmd: &Arc<WorkCommand>, line: &str, payload: &[u8]) -> Result<String> {
    let (reply, out) = run(cmd, line, payload).await?;
    let Ok(Reply::Json(v)) = reply else {
        bail!("submit failed: {reply:?} {out}");
    };
    v["unitid"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no unit id in {v}"))
}

async fn status(cmd: &Arc<WorkCommand>, id: &str) -> Result<Value> {
    let (_, out) = run(cmd, &format!("status {id}"), b"").await?;
    Ok(serde_json::from_str(out.trim_end())?)
}

async fn wait_state(store: &Workceptor, id: &str, state: UnitState) -> Result<()> {
    let mut rx = store.get(id)?.subscribe();
    tokio::time::timeout(WAIT, rx.wait_for(|s| s.state == state.code())).await??;
    Ok(())
}

fn live_group_members(pgid: i64) -> Vec<i64> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i64>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() != Some(&"Z") && fields.get(2).and_then(|p| p.parse().ok()) == Some(pgid)
        {
            found.push(pid);
        }
    }
    found
}

async fn wait_group_size(pgid: i64, at_least: usize) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while live_group_members(pgid).len() < at_least {
        if Instant::now() > deadline {
            bail!("group {pgid} never grew: {:?}", live_group_members(pgid));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn wait_group_gone(pgid: i64) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while !live_group_members(pgid).is_empty() {
        if Instant::now() > deadline {
            bail!("left in group {pgid}: {:?}", live_group_members(pgid));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn command_units_end_to_end() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Workceptor::open("foo", dir.path(), command_types()?).await?;
    let cmd = Arc::new(WorkCommand::new(store.clone()));

    let id = submit(&cmd, "submit localhost cat", b"hello\nworld\n").await?;
    wait_state(&store, &id, UnitState::Succeeded).await?;
    let (_, out) = run(&cmd, &format!("status {id}"), b"").await?;
    assert_eq!(
        out,
        "{\"Detail\":\"exit status 0\",\"ExtraData\":null,\"State\":2,\"StateName\":\"Succeeded\",\"StdoutSize\":12,\"WorkType\":\"cat\"}\n"
    );
    let (_, out) = run(&cmd, &format!("results {id}"), b"").await?;
    assert_eq!(
        out,
        format!("Streaming results for work unit {id}\nhello\nworld\n")
    );

    let id = submit(&cmd, "submit localhost echoparams hello   world", b"").await?;
    wait_state(&store, &id, UnitState::Succeeded).await?;
    assert_eq!(
        fs::read_to_string(dir.path().join("foo").join(&id).join("stdout"))?,
        "base hello world\n"
    );

    let id = submit(&cmd, "submit localhost fail", b"").await?;
    wait_state(&store, &id, UnitState::Failed).await?;
    let s = status(&cmd, &id).await?;
    assert_eq!(
        (s["Detail"].clone(), s["StdoutSize"].clone()),
        (json!("exit status 3"), json!(9))
    );
    let (_, out) = run(&cmd, &format!("results {id}"), b"").await?;
    assert_eq!(
        out,
        format!("Streaming results for work unit {id}\noops\nerr\n")
    );
    Ok(())
}

#[tokio::test]
async fn results_follow_a_real_command() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Workceptor::open("foo", dir.path(), command_types()?).await?;
    let cmd = Arc::new(WorkCommand::new(store.clone()));
    let id = submit(&cmd, "submit localhost ticker", b"").await?;
    let (mut c, client) = conn();
    let task = {
        let cmd = cmd.clone();
        let line = format!("results {id}");
        tokio::spawn(async move {
            let reply = cmd.run(Args::Text(line), &mut c).await;
            (reply, c)
        })
    };
    let mut client = BufReader::new(client);
    let mut lines = Vec::new();
    let mut saw_running_output = false;
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, client.read_line(&mut line)).await??;
        if line.starts_with("tick ") && store.get(&id)?.status().state == UnitState::Running.code()
        {
            saw_running_output = true;
        }
        lines.push(line);
        if lines.len() == 6 || n == 0 {
            break;
        }
    }
    assert!(saw_running_output, "no output streamed while the unit ran");
    let (reply, c) = tokio::time::timeout(WAIT, task).await??;
    assert!(matches!(reply, Ok(Reply::Done)));
    drop(c);
    let expected: Vec<String> = std::iter::once(format!("Streaming results for work unit {id}\n"))
        .chain((1..=5).map(|i| format!("tick {i}\n")))
        .collect();
    assert_eq!(lines, expected);
    let s = status(&cmd, &id).await?;
    assert_eq!(
        (s["StateName"].clone(), s["StdoutSize"].clone()),
        (json!("Succeeded"), json!(35))
    );
    Ok(())
}

#[tokio::test]
async fn cancel_and_release_leave_no_process_behind() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Workceptor::open("foo", dir.path(), command_types()?).await?;
    let cmd = Arc::new(WorkCommand::new(store.clone()));

    let id = submit(&cmd, "submit localhost forker", b"").await?;
    wait_state(&store, &id, UnitState::Running).await?;
    let s = status(&cmd, &id).await?;
    let pgid = s["ExtraData"]["Pid"]
        .as_i64()
        .ok_or_else(|| anyhow!("no pid in {s}"))?;
    wait_group_size(pgid, 5).await?;
    let (reply, _) = run(&cmd, &format!("cancel {id}"), b"").await?;
    assert!(matches!(reply, Ok(Reply::Json(v)) if v == json!({"cancelled": id})));
    let s = status(&cmd, &id).await?;
    assert_eq!(
        s,
        json!({"Detail":"Canceled","ExtraData":null,"State":4,"StateName":"Canceled","StdoutSize":0,"WorkType":"forker"})
    );
    wait_group_gone(pgid).await?;
    // Results of a cancelled unit end.
    let (reply, out) = run(&cmd, &format!("results {id}"), b"").await?;
    assert!(matches!(reply, Ok(Reply::Done)));
    assert_eq!(out, format!("Streaming results for work unit {id}\n"));

    // Release of a running unit stops it and removes it.
    let id = submit(&cmd, "submit localhost forker", b"").await?;
    wait_state(&store, &id, UnitState::Running).await?;
    let pgid = status(&cmd, &id).await?["ExtraData"]["Pid"]
        .as_i64()
        .ok_or_else(|| anyhow!("no pid"))?;
    wait_group_size(pgid, 5).await?;
    let (reply, _) = run(&cmd, &format!("release {id}"), b"").await?;
    assert!(matches!(reply, Ok(Reply::Json(v)) if v == json!({"released": id})));
    wait_group_gone(pgid).await?;
    assert!(!dir.path().join("foo").join(&id).exists());
    Ok(())
}

#[tokio::test]
async fn running_commands_survive_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node_dir = dir.path().join("foo");
    let store = Workceptor::open("foo", dir.path(), command_types()?).await?;
    let cmd = Arc::new(WorkCommand::new(store.clone()));
    let id = submit(&cmd, "submit localhost sleeper", b"").await?;
    wait_state(&store, &id, UnitState::Running).await?;
    let before = status(&cmd, &id).await?;
    let pgid = before["ExtraData"]["Pid"]
        .as_i64()
        .ok_or_else(|| anyhow!("no pid"))?;
    drop(cmd);
    drop(store);

    let store = Workceptor::open("foo", dir.path(), command_types()?).await?;
    let cmd = Arc::new(WorkCommand::new(store.clone()));
    let after = status(&cmd, &id).await?;
    assert_eq!(after, before);
    let (reply, _) = run(&cmd, &format!("cancel {id}"), b"").await?;
    assert!(reply.is_ok());
    assert_eq!(status(&cmd, &id).await?["StateName"], "Canceled");
    wait_group_gone(pgid).await?;
    let on_disk = fs::read_to_string(node_dir.join(&id).join("status"))?;
    assert!(
        on_disk.starts_with("{\"State\":4,\"Detail\":\"Canceled\""),
        "{on_disk}"
    );
    assert!(Path::new(&node_dir).join(&id).join("stdout").exists());
    Ok(())
}
