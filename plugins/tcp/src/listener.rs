//! `tcp-listener`: accepts connections forever.

use std::io;
use std::net::{TcpListener, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use receptor_plugin_sdk::{
    log, Backend, ConnectionSink, Framing, PluginError, Section, SessionToken, CORE_BACKEND_KEYS,
};

use crate::stop::Stop;

/// A running listener.
struct Listener {
    stop: Arc<Stop>,
}

impl Backend for Listener {
    fn session_closed(&self, _token: SessionToken) {}

    fn stop(&self) {
        self.stop.stop();
    }
}

/// Validates a `tcp-listener` section, binds, and accepts on a thread of its own.
pub fn start(section: &Section, sink: ConnectionSink) -> Result<Box<dyn Backend>, PluginError> {
    section.reject_unknown_keys(&["bindaddr", "port"], CORE_BACKEND_KEYS)?;
    let bindaddr = section
        .string("bindaddr")?
        .unwrap_or_else(|| "0.0.0.0".to_owned());
    let port = section
        .port("port")?
        .ok_or_else(|| PluginError::new("tcp-listener: missing required key \"port\""))?;
    let addrs: Vec<_> = (bindaddr.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| PluginError::new(format!("tcp-listener: bad bindaddr {bindaddr:?}: {e}")))?
        .collect();
    let listener = TcpListener::bind(&addrs[..]).map_err(|e| {
        PluginError::new(format!(
            "tcp-listener: cannot listen on {bindaddr}:{port}: {e}"
        ))
    })?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    log::info(&format!("listening on {local}"));
    let stop = Arc::new(Stop::new()?);
    let thread_stop = Arc::clone(&stop);
    std::thread::Builder::new()
        .name(format!("tcp-listener {local}"))
        .spawn(move || accept_loop(&listener, &sink, &thread_stop))?;
    Ok(Box::new(Listener { stop }))
}

fn accept_loop(listener: &TcpListener, sink: &ConnectionSink, stop: &Stop) {
    loop {
        if stop.poll_readable(listener) {
            return;
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    log::warn(&format!("cannot set TCP_NODELAY for {peer}: {e}"));
                }
                let fd = OwnedFd::from(stream);
                if sink
                    .connection(fd, Framing::Len16Le, &peer.to_string(), true)
                    .is_none()
                    && stop.is_stopped()
                {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                // Out of descriptors or similar: do not spin, try again shortly.
                log::warn(&format!("accept failed: {e}"));
                if stop.sleep(Duration::from_millis(100)) {
                    return;
                }
            }
        }
    }
}
