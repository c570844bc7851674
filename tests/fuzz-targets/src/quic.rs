//! The datagram path under QUIC: mesh datagrams and unreachable notices from the outside
//! reach a stream listener through the adapter that turns them into QUIC packets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use receptor_core::mesh::{Incoming, MeshError};
use receptor_core::streams::{
    listen_with, DatagramNetwork, DatagramSocket, InsecureKeyType, ListenOptions, StreamConfig,
};
use receptor_proto::svcad::ServiceAdvertisement;
use tokio::sync::mpsc;

/// Senders the script can impersonate: `(node, service)`.
const PEERS: &[(&str, &str)] = &[("alice", "q1"), ("bob", "q2"), ("alice", "q3")];
/// Largest QUIC datagram anything may send (QUIC's own limit).
const MAX_DATAGRAM: usize = 65527;
/// Scheduler turns given to the adapter and quinn after each injected item.
const TURNS: usize = 8;
/// Records of one script.
const MAX_RECORDS: usize = 64;

/// A one-socket network whose socket receives what the script injects and counts what
/// the listener sends.
struct ScriptNet {
    inbox: Mutex<Option<mpsc::Receiver<Incoming>>>,
    sent: Arc<AtomicUsize>,
}

struct ScriptSocket {
    service: String,
    inbox: mpsc::Receiver<Incoming>,
    sent: Arc<AtomicUsize>,
}

impl DatagramNetwork for ScriptNet {
    type Socket = ScriptSocket;

    fn node_id(&self) -> &str {
        "fuzz"
    }

    async fn open(
        &self,
        service: Option<&str>,
        _advertise: Option<ServiceAdvertisement>,
    ) -> Result<ScriptSocket, MeshError> {
        let inbox = self
            .inbox
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| MeshError::ServiceInUse(service.unwrap_or_default().to_owned()))?;
        Ok(ScriptSocket {
            service: service.unwrap_or("fuzzeph").to_owned(),
            inbox,
            sent: self.sent.clone(),
        })
    }
}

impl DatagramSocket for ScriptSocket {
    fn service(&self) -> &str {
        &self.service
    }

    async fn send_to(&self, _node: &str, _service: &str, data: &[u8]) -> Result<(), MeshError> {
        assert!(
            !data.is_empty() && data.len() <= MAX_DATAGRAM,
            "listener sent a datagram of {} bytes",
            data.len()
        );
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn recv(&mut self) -> Result<Incoming, MeshError> {
        self.inbox.recv().await.ok_or(MeshError::Shutdown)
    }
}

/// A stream listener (ConnType 1) receives a script of records `op ‖ len (u16 LE) ‖
/// bytes`: op % 4 = 0 or 1 is a datagram from one of three known peers, 2 an unreachable
/// notice about one of them (`service unknown` if op & 16), 3 a datagram from a new peer.
pub fn quic_datagrams(data: &[u8]) {
    replies_to(data);
}

/// Runs [`quic_datagrams`] and counts the datagrams the listener sent back.
#[doc(hidden)]
pub fn replies_to(data: &[u8]) -> usize {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 0;
    };
    rt.block_on(run(data))
}

async fn run(mut data: &[u8]) -> usize {
    let (tx, rx) = mpsc::channel(256);
    let net = ScriptNet {
        inbox: Mutex::new(Some(rx)),
        sent: Arc::new(AtomicUsize::new(0)),
    };
    let opts = ListenOptions {
        config: StreamConfig {
            insecure_key: InsecureKeyType::EcdsaP256,
            ..StreamConfig::default()
        },
        ..ListenOptions::default()
    };
    let listener = listen_with(&net, "fuzzsvc", opts)
        .await
        .expect("a listener opens on the script network");
    let mut fresh = 0u32;
    for _ in 0..MAX_RECORDS {
        let Some((&op, rest)) = data.split_first() else {
            break;
        };
        let Some((len, rest)) = rest.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
        let (body, rest) = rest.split_at(len);
        data = rest;
        let (node, service) = PEERS[usize::from(op >> 2) % PEERS.len()];
        let item = match op % 4 {
            0 | 1 => Incoming::Data {
                from_node: node.to_owned(),
                from_service: service.to_owned(),
                data: Bytes::copy_from_slice(body),
            },
            2 => Incoming::Unreachable {
                reported_by: "relay".to_owned(),
                to_node: node.to_owned(),
                to_service: service.to_owned(),
                problem: if op & 16 != 0 {
                    "service unknown"
                } else {
                    "message expired"
                }
                .to_owned(),
            },
            _ => {
                fresh += 1;
                Incoming::Data {
                    from_node: format!("new{fresh}"),
                    from_service: "q".to_owned(),
                    data: Bytes::copy_from_slice(body),
                }
            }
        };
        if tx.send(item).await.is_err() {
            break;
        }
        for _ in 0..TURNS {
            tokio::task::yield_now().await;
        }
    }
    drop(tx);
    for _ in 0..TURNS {
        tokio::task::yield_now().await;
    }
    drop(listener);
    net.sent.load(Ordering::Relaxed)
}
