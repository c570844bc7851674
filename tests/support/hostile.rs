//! A hostile mesh peer: it speaks the real wire protocol (TCP backend framing, ROUTE
//! and DATA messages built with `receptor-proto`'s encoders) to a node's `tcp-listener`,
//! and abuses it: floods of routing updates (invented nodes, absurd costs, huge
//! connection lists, rapid sequence numbers), maximum-size frames as fast as the socket
//! takes them, and connections that never complete the handshake.
//!
//! Everything it receives is read and thrown away on a thread of its own, so the node
//! under test never blocks on us (unless a test wants it to).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use receptor_proto::data::{DataHeader, ServiceName};
use receptor_proto::frame::{frame_header, MAX_FRAME_LEN};
use receptor_proto::hash::node_hash;
use receptor_proto::update::RoutingUpdate;

/// What kind of lie an invented routing update tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lie {
    /// A plausible node attached to the hostile peer with cost 1.
    Plain,
    /// Costs of 1e308, 0 and -1 to real and invented nodes.
    AbsurdCosts,
    /// As many connections as fit in a maximum-size frame.
    HugeConnections,
}

/// A TCP session to a node's `tcp-listener` that completed the mesh handshake as node
/// `name`, and the tools to abuse it.
pub struct HostilePeer {
    name: String,
    target: String,
    epoch: u64,
    sequence: u64,
    next_id: u64,
    stream: TcpStream,
    /// Bytes framed and written so far.
    pub bytes_sent: u64,
    reader: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

/// Drains `stream` until it ends or `stop` is set.
fn drain(mut stream: TcpStream, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return,
            }
        }
    })
}

impl HostilePeer {
    /// Connects to 127.0.0.1:`port` as node `name` and establishes a session with the
    /// node `target` listening there (cost 1): a first ROUTE names us, a second lists
    /// `target` so that it keeps the session.
    pub fn connect(port: u16, name: &str, target: &str) -> Result<HostilePeer> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("hostile peer {name} connecting to port {port}"))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(30)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let reader = drain(stream.try_clone()?, stop.clone());
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut peer = HostilePeer {
            name: name.to_owned(),
            target: target.to_owned(),
            epoch: unix << 24,
            sequence: 0,
            next_id: 0,
            stream,
            bytes_sent: 0,
            reader: Some((stop, reader)),
        };
        peer.send_own_update(&[])?;
        let target = peer.target.clone();
        peer.send_own_update(&[(target.as_str(), 1.0)])?;
        Ok(peer)
    }

    /// This peer's node ID.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A handle on the connection: shutting it down ends a flood blocked on a node
    /// that stopped reading (its writes then fail).
    pub fn kill_switch(&self) -> Result<TcpStream> {
        Ok(self.stream.try_clone()?)
    }

    /// Sends `message`; a failure after `deadline` (the kill switch was used) ends the
    /// flood quietly: `Ok(false)`.
    fn send_until(&mut self, message: &[u8], deadline: Instant) -> Result<bool> {
        match self.send_message(message) {
            Ok(()) => Ok(true),
            Err(_) if Instant::now() >= deadline => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn update_id(&mut self) -> String {
        self.next_id += 1;
        format!("h{:07}", self.next_id % 10_000_000)
    }

    /// Sends our own routing update listing `connections` (keep the target in it, or
    /// the node drops the session).
    pub fn send_own_update(&mut self, connections: &[(&str, f64)]) -> Result<()> {
        self.sequence += 1;
        let update = RoutingUpdate {
            node_id: self.name.clone(),
            update_id: self.update_id(),
            update_epoch: self.epoch,
            update_sequence: self.sequence,
            connections: connections
                .iter()
                .map(|(n, c)| ((*n).to_owned(), *c))
                .collect(),
            forwarding_node: self.name.clone(),
            suspected_duplicate: 0,
        };
        self.send_message(&update.encode())
    }

    /// Sends one message in a frame.
    pub fn send_message(&mut self, message: &[u8]) -> Result<()> {
        let header = frame_header(message.len())?;
        let mut frame = Vec::with_capacity(header.len() + message.len());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(message);
        self.stream
            .write_all(&frame)
            .context("hostile peer writing")?;
        self.bytes_sent += frame.len() as u64;
        Ok(())
    }

    /// The routing update of invented node `index` telling `lie`, as if forwarded by us.
    pub fn invented_update(&mut self, index: u64, lie: Lie) -> RoutingUpdate {
        let node_id = format!("ghost{index}");
        let mut connections = BTreeMap::new();
        match lie {
            Lie::Plain => {
                connections.insert(self.name.clone(), 1.0);
            }
            Lie::AbsurdCosts => {
                connections.insert(self.name.clone(), 1e308);
                connections.insert(self.target.clone(), 0.0);
                connections.insert(format!("ghost{}", index + 1), -1.0);
            }
            Lie::HugeConnections => {
                // About 17 bytes per entry: 3,600 of them nearly fill a frame.
                for i in 0..3_600u64 {
                    connections.insert(format!("g{index}x{i}"), 1.0);
                }
            }
        }
        RoutingUpdate {
            node_id,
            update_id: self.update_id(),
            update_epoch: 1,
            update_sequence: 1,
            connections,
            forwarding_node: self.name.clone(),
            suspected_duplicate: 0,
        }
    }

    /// Floods `count` routing updates of invented nodes (`ghost<first>`, ...) telling
    /// `lie`; stops early at `deadline`. Returns how many were sent.
    pub fn flood_invented(
        &mut self,
        first: u64,
        count: u64,
        lie: Lie,
        deadline: Instant,
    ) -> Result<u64> {
        for i in 0..count {
            if Instant::now() >= deadline {
                return Ok(i);
            }
            let update = self.invented_update(first + i, lie).encode();
            if !self.send_until(&update, deadline)? {
                return Ok(i);
            }
        }
        Ok(count)
    }

    /// Floods `count` updates of one invented node with rapidly increasing sequence
    /// numbers (each a new UpdateID, each a change of its links).
    pub fn flood_sequences(&mut self, node: &str, count: u64, deadline: Instant) -> Result<u64> {
        for seq in 1..=count {
            if Instant::now() >= deadline {
                return Ok(seq - 1);
            }
            let mut connections = BTreeMap::new();
            connections.insert(self.name.clone(), (seq % 7 + 1) as f64);
            let update = RoutingUpdate {
                node_id: node.to_owned(),
                update_id: self.update_id(),
                update_epoch: 1,
                update_sequence: seq,
                connections,
                forwarding_node: self.name.clone(),
                suspected_duplicate: 0,
            };
            if !self.send_until(&update.encode(), deadline)? {
                return Ok(seq - 1);
            }
        }
        Ok(count)
    }

    /// Sends maximum-size frames as fast as the socket takes them until `deadline`:
    /// DATA to `to_node`'s service `to_service` and, every `route_every`-th frame, a
    /// ROUTE frame of the same size that is not valid JSON. Returns the frames sent.
    pub fn flood_max_frames(
        &mut self,
        to_node: &str,
        to_service: &str,
        route_every: u64,
        deadline: Instant,
    ) -> Result<u64> {
        let header = DataHeader {
            hops_to_live: 30,
            from_node: node_hash(&self.name),
            to_node: node_hash(to_node),
            from_service: ServiceName::new("flood")
                .map_err(|_| anyhow::anyhow!("service name too long"))?,
            to_service: ServiceName::new(to_service)
                .map_err(|_| anyhow::anyhow!("service name {to_service:?} too long"))?,
        };
        let mut data = vec![0x5a; MAX_FRAME_LEN];
        data[..header.encode().len()].copy_from_slice(&header.encode());
        let mut junk_route = vec![b'{'; MAX_FRAME_LEN];
        junk_route[0] = 1;
        let mut sent = 0;
        while Instant::now() < deadline {
            let frame = if route_every > 0 && sent % route_every == route_every - 1 {
                &junk_route
            } else {
                &data
            };
            if !self.send_until(frame, deadline)? {
                break;
            }
            sent += 1;
        }
        Ok(sent)
    }

    /// Closes the session.
    pub fn close(mut self) {
        self.stop_reader();
    }

    fn stop_reader(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some((stop, handle)) = self.reader.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = handle.join();
        }
    }
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        self.stop_reader();
    }
}

/// Opens `count` TCP connections to 127.0.0.1:`port` that never complete the mesh
/// handshake: every third sends the first byte of a frame header, every third a
/// complete frame that is not a message, the rest nothing. They stay open until
/// dropped. Connections the node closes at once (its bound on pending sessions) are
/// still returned.
pub fn half_open_sessions(port: u16, count: usize) -> Result<Vec<TcpStream>> {
    let mut held = Vec::with_capacity(count);
    for i in 0..count {
        let mut s = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("half-open connection {i}"))?;
        let first: &[u8] = match i % 3 {
            0 => &[],
            1 => &[0x40],
            _ => &[3, 0, 9, 9, 9],
        };
        // The node may already have closed it: that is its right.
        let _ = s.write_all(first);
        held.push(s);
    }
    Ok(held)
}
