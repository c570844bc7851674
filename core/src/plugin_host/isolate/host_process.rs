//! The plugin host process: `receptor plugin-host --socket-fd N --log-level L PATH`.
//!
//! It loads one plugin with the node's loader, says what the plugin claims, then answers
//! the node's requests one at a time on its main thread (vtable calls return promptly by
//! contract; one that does not is the node's to detect). Progress reports are forwarded
//! by tasks of a one-thread runtime, log lines by a tracing layer. It exits when the
//! node closes its end of the socket.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use receptor_plugin_sdk::abi;
use tokio::sync::watch;
use tracing_subscriber::layer::SubscriberExt;

use super::wire::{self, Event, ReplyBody, Request, WireClaim};
use crate::plugin_host::{ClaimType, LoadOptions, PluginHost};
use crate::work::worktype::{
    ReattachRequest, StartRequest, UnitState, WorkHandle, WorkProgress, WorkType,
};

/// Runs the plugin host sub-command (arguments after `plugin-host`); the node starts
/// it, nobody else needs to.
pub fn run_plugin_host(args: &[OsString]) -> ExitCode {
    let Some((fd, level, path)) = parse_args(args) else {
        eprintln!("Usage: receptor plugin-host --socket-fd N --log-level L PATH (started by the node for isolated plugins)");
        return ExitCode::FAILURE;
    };
    super::IN_PLUGIN_HOST.store(true, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: F_GETFD on a descriptor number only reads its flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        eprintln!("plugin-host: descriptor {fd} is not open");
        return ExitCode::FAILURE;
    }
    // Not inherited by the processes plugins start.
    // SAFETY: F_SETFD only changes the descriptor's close-on-exec flag.
    unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    // SAFETY: the descriptor is open (F_GETFD succeeded) and handed to this process.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let sock = Arc::new(sock);
    let subscriber = tracing_subscriber::registry().with(LogForward {
        sock: Arc::clone(&sock),
        max_level: level,
    });
    let _ = tracing::subscriber::set_global_default(subscriber);
    let host = match PluginHost::load(&LoadOptions {
        paths: vec![path.clone()],
        ..LoadOptions::default()
    }) {
        Ok(host) => host,
        Err(e) => {
            let _ = wire::send(
                &sock,
                &Event::LoadFailed {
                    message: e.to_string(),
                },
                &[],
            );
            return ExitCode::FAILURE;
        }
    };
    let Some(info) = host.plugins().first().cloned() else {
        let _ = wire::send(
            &sock,
            &Event::LoadFailed {
                message: format!("{}: no plugin in it", path.display()),
            },
            &[],
        );
        return ExitCode::FAILURE;
    };
    let claims = host
        .section_kinds()
        .filter_map(|kind| {
            let (t, _) = host.claims(kind)?;
            let desc = host.section_desc(kind)?;
            Some(WireClaim::new(kind, t == ClaimType::Backend, desc))
        })
        .collect();
    let hello = Event::Hello {
        name: info.name.clone(),
        version: info.version.clone(),
        abi: info.abi,
        claims,
        pid: std::process::id(),
    };
    if wire::send(&sock, &hello, &[]).is_err() {
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("plugin-host")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("plugin host: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut state = HostState {
        host,
        sock,
        runtime: runtime.handle().clone(),
        work_types: HashMap::new(),
        units: HashMap::new(),
    };
    loop {
        match wire::recv(&state.sock) {
            Ok(Some((bytes, fds))) => state.handle(&bytes, fds),
            // The node closed its end (it stopped, or wants this host gone).
            Ok(None) => break,
            Err(e) => {
                tracing::error!("plugin host: reading from the node: {e}");
                break;
            }
        }
    }
    // Units still running are abandoned as they are (the node may re-attach them in a
    // new host); nothing is torn down that could block the exit.
    std::process::exit(0);
}

fn parse_args(args: &[OsString]) -> Option<(RawFd, u32, PathBuf)> {
    let mut fd = None;
    let mut level = abi::LOG_INFO;
    let mut path = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--socket-fd") => fd = it.next()?.to_str()?.parse().ok(),
            Some("--log-level") => level = it.next()?.to_str()?.parse().ok()?,
            _ => path = Some(PathBuf::from(arg)),
        }
    }
    Some((fd?, level, path?))
}

struct HostState {
    host: PluginHost,
    sock: Arc<OwnedFd>,
    runtime: tokio::runtime::Handle,
    work_types: HashMap<u64, Arc<dyn WorkType>>,
    units: HashMap<u64, Box<dyn WorkHandle>>,
}

impl HostState {
    fn handle(&mut self, bytes: &[u8], fds: Vec<OwnedFd>) {
        let request: Request = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("plugin host: bad request from the node ignored: {e}");
                return;
            }
        };
        let (id, result) = match request {
            Request::Create {
                id,
                work_type,
                kind,
                config,
            } => (id, self.create(work_type, &kind, &config)),
            Request::Start {
                id,
                work_type,
                unit,
                unit_id,
                unit_dir,
                params,
                extra_params,
            } => {
                let result = self.start(work_type, unit, fds, |stdin, stdout| StartRequest {
                    unit_id,
                    unit_dir: PathBuf::from(unit_dir),
                    stdin,
                    stdout,
                    params,
                    extra_params,
                });
                (id, result)
            }
            Request::Reattach {
                id,
                work_type,
                unit,
                unit_id,
                unit_dir,
                extra,
            } => {
                let request = ReattachRequest {
                    unit_id,
                    unit_dir: PathBuf::from(unit_dir),
                    extra,
                };
                (id, self.reattach(work_type, unit, request))
            }
            Request::Cancel { id, unit } => {
                let result = match self.units.get(&unit) {
                    Some(handle) => handle
                        .cancel()
                        .map(|()| ReplyBody::Done)
                        .map_err(|e| e.to_string()),
                    None => Err(format!("no unit {unit} in this plugin host")),
                };
                (id, result)
            }
            Request::FreeUnit { unit } => {
                self.units.remove(&unit);
                return;
            }
            Request::Destroy { work_type } => {
                self.work_types.remove(&work_type);
                return;
            }
        };
        if let Err(e) = wire::send(&self.sock, &Event::Reply { id, result }, &[]) {
            tracing::error!("plugin host: replying to the node: {e}");
        }
    }

    fn create(
        &mut self,
        id: u64,
        kind: &str,
        config: &serde_json::Value,
    ) -> Result<ReplyBody, String> {
        let wt = self
            .host
            .work_type(kind, config)
            .map_err(|e| e.to_string())?;
        let body = ReplyBody::Created {
            name: wt.name().to_owned(),
            verify_signature: wt.verify_signature(),
            allow_runtime_params: wt.allow_runtime_params(),
        };
        self.work_types.insert(id, wt);
        Ok(body)
    }

    fn start(
        &mut self,
        work_type: u64,
        unit: u64,
        fds: Vec<OwnedFd>,
        request: impl FnOnce(File, File) -> StartRequest,
    ) -> Result<ReplyBody, String> {
        let mut fds = fds.into_iter();
        let (Some(stdin), Some(stdout), None) = (fds.next(), fds.next(), fds.next()) else {
            return Err("a start request needs exactly two descriptors".to_owned());
        };
        let wt = self.work_type(work_type)?;
        let (tx, rx) = progress_channel();
        let handle = wt
            .start(request(File::from(stdin), File::from(stdout)), tx)
            .map_err(|e| e.to_string())?;
        self.follow(unit, handle, rx);
        Ok(ReplyBody::Done)
    }

    fn reattach(
        &mut self,
        work_type: u64,
        unit: u64,
        request: ReattachRequest,
    ) -> Result<ReplyBody, String> {
        let wt = self.work_type(work_type)?;
        let (tx, rx) = progress_channel();
        let handle = wt.reattach(request, tx).map_err(|e| e.to_string())?;
        self.follow(unit, handle, rx);
        Ok(ReplyBody::Done)
    }

    fn work_type(&self, id: u64) -> Result<Arc<dyn WorkType>, String> {
        self.work_types
            .get(&id)
            .cloned()
            .ok_or_else(|| format!("no work type {id} in this plugin host"))
    }

    fn follow(
        &mut self,
        unit: u64,
        handle: Box<dyn WorkHandle>,
        rx: watch::Receiver<WorkProgress>,
    ) {
        self.units.insert(unit, handle);
        self.runtime
            .spawn(forward_progress(Arc::clone(&self.sock), unit, rx));
    }
}

fn progress_channel() -> (watch::Sender<WorkProgress>, watch::Receiver<WorkProgress>) {
    watch::channel(WorkProgress {
        state: UnitState::Pending,
        detail: String::new(),
        extra: None,
    })
}

/// Sends every change of a unit's progress to the node until a final state.
async fn forward_progress(sock: Arc<OwnedFd>, unit: u64, mut rx: watch::Receiver<WorkProgress>) {
    while rx.changed().await.is_ok() {
        let p = rx.borrow_and_update().clone();
        let state = match p.state {
            UnitState::Pending => abi::STATE_PENDING,
            UnitState::Running => abi::STATE_RUNNING,
            UnitState::Succeeded => abi::STATE_SUCCEEDED,
            UnitState::Failed => abi::STATE_FAILED,
            UnitState::Canceled => abi::STATE_CANCELED,
        };
        let mut event = Event::Progress {
            unit,
            state,
            detail: p.detail,
            extra: p.extra,
        };
        if let Err(e) = wire::send(&sock, &event, &[]) {
            // Too large: the state and a shortened detail still go through.
            if let Event::Progress { detail, extra, .. } = &mut event {
                let cut = detail.char_indices().nth(4096).map(|(i, _)| i);
                if let Some(cut) = cut {
                    detail.truncate(cut);
                }
                *extra = None;
            }
            tracing::warn!("unit progress not sent whole ({e}): extra data dropped");
            let _ = wire::send(&sock, &event, &[]);
        }
        if state >= abi::STATE_SUCCEEDED {
            break;
        }
    }
}

/// Sends the host's log events (the plugin's lines among them) to the node.
struct LogForward {
    sock: Arc<OwnedFd>,
    max_level: u32,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogForward {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => abi::LOG_ERROR,
            tracing::Level::WARN => abi::LOG_WARN,
            tracing::Level::INFO => abi::LOG_INFO,
            tracing::Level::DEBUG => abi::LOG_DEBUG,
            tracing::Level::TRACE => abi::LOG_TRACE,
        };
        // The plugin's own lines, and the host's warnings and errors (the node logs the
        // rest of what the host does itself).
        let plugin_line = event.metadata().target() == "receptor::plugin";
        if level > self.max_level || (!plugin_line && level > abi::LOG_WARN) {
            return;
        }
        let mut text = MessageText::default();
        event.record(&mut text);
        let mut message = text.message;
        message.push_str(&text.fields);
        let _ = wire::send(&self.sock, &Event::Log { level, message }, &[]);
    }
}

#[derive(Default)]
struct MessageText {
    message: String,
    fields: String,
}

impl tracing::field::Visit for MessageText {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            // The node names the plugin itself.
            "plugin" => {}
            name => self.fields.push_str(&format!(" {name}={value:?}")),
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "plugin" => {}
            name => self.fields.push_str(&format!(" {name}={value}")),
        }
    }
}
