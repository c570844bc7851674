//! `tcp-listener`: accepts connections forever.

use std::io;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use receptor_plugin_sdk::backend_support::listen::ListenAddress;
use receptor_plugin_sdk::backend_support::Signal;
use receptor_plugin_sdk::{
    log, Backend, ConnectionSink, Framing, PluginError, Section, SessionToken, CORE_BACKEND_KEYS,
};

/// A running listener.
struct Listener {
    stop: Arc<Signal>,
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
    let listener = ListenAddress::from_section("tcp-listener", section)?
        .bind(|addrs| TcpListener::bind(addrs))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    log::info(&format!("listening on {local}"));
    let stop = Arc::new(Signal::new()?);
    let thread_stop = Arc::clone(&stop);
    std::thread::Builder::new()
        .name(format!("tcp-listener {local}"))
        .spawn(move || {
            accept_loop(&listener, &sink, &thread_stop);
            // The socket closes before the host hears that the instance let go
            // (dropping the sink), so a replacement can bind the address at once.
            drop(listener);
            drop(sink);
        })?;
    Ok(Box::new(Listener { stop }))
}

fn accept_loop(listener: &TcpListener, sink: &ConnectionSink, stop: &Signal) {
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
