//! The node's figures: counters kept where things happen, gathered on demand.
//!
//! Counters are relaxed atomics owned by the structure they describe (a backend
//! session's [`LinkCounters`], the data path's [`DataCounters`], a work type's
//! [`UnitCounters`], a plugin's [`CallCounters`]); the data path only ever adds to them,
//! never takes a lock. A scrape asks each owner for a snapshot ([`Snapshot`]) and renders
//! it as Prometheus text ([`Snapshot::prometheus`]) or JSON (the control service's
//! `metrics` command, in [`crate::control::metrics`]).
//!
//! Served over HTTP by [`http`] when the configuration has a `metrics` item.

pub mod http;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (open connections, open streams).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one away (never below zero).
    pub fn dec(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Adds one until the returned guard is dropped.
    pub fn hold(&'static self) -> GaugeHold {
        self.inc();
        GaugeHold(self)
    }
}

/// One unit of a [`Gauge`], given back when dropped.
#[derive(Debug)]
pub struct GaugeHold(&'static Gauge);

impl Drop for GaugeHold {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Traffic of one backend session.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Bytes of messages received.
    pub bytes_in: Counter,
    /// Messages received.
    pub messages_in: Counter,
    /// Bytes of messages sent.
    pub bytes_out: Counter,
    /// Messages sent.
    pub messages_out: Counter,
}

/// What happened to DATA messages this node handled.
#[derive(Debug, Default)]
pub struct DataCounters {
    /// Delivered to a local service.
    pub delivered: Counter,
    /// Passed on to the next hop.
    pub forwarded: Counter,
    /// Dropped: no route to the destination (or the next hop went away).
    pub dropped_unreachable: Counter,
    /// Dropped or rejected by a firewall rule.
    pub dropped_firewall: Counter,
    /// Dropped: HopsToLive ran out.
    pub dropped_hop_limit: Counter,
}

/// Units of one work type.
#[derive(Debug, Default)]
pub struct UnitCounters {
    /// Units started.
    pub started: Counter,
    /// Units that ended failed.
    pub failed: Counter,
}

/// Calls into one plugin.
#[derive(Debug, Default)]
pub struct CallCounters {
    /// Calls made.
    pub calls: Counter,
    /// Calls that reported an error (or panicked).
    pub failures: Counter,
}

/// Counters of the node as a whole (not owned by one session, unit or plugin).
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Control-service connections open now (unix socket, TCP and mesh).
    pub control_connections: Gauge,
    /// Control-service connections accepted since start.
    pub control_connections_total: Counter,
    /// QUIC streams open now (both directions).
    pub streams_open: Gauge,
    /// QUIC connections this node dialed (handshakes completed) since start.
    pub stream_connections_dialed: Counter,
    /// QUIC connections this node accepted (handshakes completed) since start.
    pub stream_connections_accepted: Counter,
    /// Bytes of unit results written to disk.
    pub result_bytes_written: Counter,
    /// Bytes of unit results streamed to clients (`work results`, remote units).
    pub result_bytes_streamed: Counter,
}

/// The process's [`NodeCounters`] (one node per process).
pub fn node() -> &'static NodeCounters {
    static NODE: NodeCounters = NodeCounters {
        control_connections: Gauge(AtomicU64::new(0)),
        control_connections_total: Counter(AtomicU64::new(0)),
        streams_open: Gauge(AtomicU64::new(0)),
        stream_connections_dialed: Counter(AtomicU64::new(0)),
        stream_connections_accepted: Counter(AtomicU64::new(0)),
        result_bytes_written: Counter(AtomicU64::new(0)),
        result_bytes_streamed: Counter(AtomicU64::new(0)),
    };
    &NODE
}

/// Counters kept per name (work type, plugin). The map is locked only to find or add a
/// name, when a unit starts or ends or a plugin is called, never to count.
struct Named<T>(Mutex<BTreeMap<String, Arc<T>>>);

impl<T: Default> Named<T> {
    const fn new() -> Self {
        Named(Mutex::new(BTreeMap::new()))
    }

    fn get(&self, name: &str) -> Arc<T> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(name) {
            Some(c) => c.clone(),
            None => {
                let c = Arc::new(T::default());
                map.insert(name.to_owned(), c.clone());
                c
            }
        }
    }

    fn all(&self) -> Vec<(String, Arc<T>)> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

static WORK_TYPES: Named<UnitCounters> = Named::new();
static PLUGINS: Named<CallCounters> = Named::new();

/// The counters of work type `name`.
pub fn work_type(name: &str) -> Arc<UnitCounters> {
    WORK_TYPES.get(name)
}

/// The counters of plugin `name`.
pub fn plugin(name: &str) -> Arc<CallCounters> {
    PLUGINS.get(name)
}

/// One link in a snapshot.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkSnapshot {
    /// The peer's node ID.
    pub peer: String,
    /// The agreed cost.
    pub cost: f64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Messages sent.
    pub messages_out: u64,
}

/// How often a peer's link came up and went down.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Transitions {
    /// Times a session with the peer was established.
    pub up: u64,
    /// Times an established session with the peer ended.
    pub down: u64,
}

/// The mesh part of a snapshot.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MeshSnapshot {
    /// Established links.
    pub links: Vec<LinkSnapshot>,
    /// Up/down transitions per peer (peers seen since start).
    pub transitions: BTreeMap<String, Transitions>,
    /// Nodes in the link-state database (this one included).
    pub known_nodes: u64,
    /// Destinations in the routing table.
    pub routes: u64,
    /// Routing updates (ROUTE messages) sent.
    pub routing_updates_sent: u64,
    /// Routing updates received.
    pub routing_updates_received: u64,
    /// Routing updates dropped because a peer's control queue was full.
    pub routing_updates_dropped: u64,
    /// DATA messages delivered to local services.
    pub datagrams_delivered: u64,
    /// DATA messages forwarded.
    pub datagrams_forwarded: u64,
    /// DATA messages dropped, by reason (`unreachable`, `firewall`, `hop_limit`).
    pub datagrams_dropped: BTreeMap<String, u64>,
}

impl DataCounters {
    /// The drops by reason, as [`MeshSnapshot::datagrams_dropped`] shows them.
    pub fn dropped(&self) -> BTreeMap<String, u64> {
        BTreeMap::from([
            ("unreachable".to_owned(), self.dropped_unreachable.get()),
            ("firewall".to_owned(), self.dropped_firewall.get()),
            ("hop_limit".to_owned(), self.dropped_hop_limit.get()),
        ])
    }
}

/// Units of one work type in a snapshot.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct WorkTypeSnapshot {
    /// Units started since the node started.
    pub started: u64,
    /// Units failed since the node started.
    pub failed: u64,
    /// Units on disk now, by state name (`Pending`, `Running`, `Succeeded`, ...).
    pub units: BTreeMap<String, u64>,
}

/// Calls into one plugin in a snapshot.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct PluginSnapshot {
    /// Calls made.
    pub calls: u64,
    /// Calls that failed.
    pub failures: u64,
}

/// Every figure of a node at one moment.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Snapshot {
    /// This node's ID.
    pub node: String,
    /// The mesh.
    pub mesh: MeshSnapshot,
    /// Control-service connections open now.
    pub control_connections: u64,
    /// Control-service connections accepted since start.
    pub control_connections_total: u64,
    /// QUIC streams open now.
    pub streams_open: u64,
    /// QUIC connections dialed since start (several streams share one between our nodes).
    pub stream_connections_dialed: u64,
    /// QUIC connections accepted since start.
    pub stream_connections_accepted: u64,
    /// Units per work type (local work types, plus `remote` for units run elsewhere).
    pub work_types: BTreeMap<String, WorkTypeSnapshot>,
    /// Bytes of unit results written to disk.
    pub result_bytes_written: u64,
    /// Bytes of unit results streamed to clients.
    pub result_bytes_streamed: u64,
    /// Calls per plugin name.
    pub plugins: BTreeMap<String, PluginSnapshot>,
}

impl Snapshot {
    /// Fills in the process-wide counters: [`NodeCounters`], units started and failed
    /// per work type, calls per plugin.
    pub fn with_node_counters(mut self) -> Snapshot {
        for (name, c) in WORK_TYPES.all() {
            let w = self.work_types.entry(name).or_default();
            w.started = c.started.get();
            w.failed = c.failed.get();
        }
        for (name, c) in PLUGINS.all() {
            self.plugins.insert(
                name,
                PluginSnapshot {
                    calls: c.calls.get(),
                    failures: c.failures.get(),
                },
            );
        }
        let n = node();
        self.control_connections = n.control_connections.get();
        self.control_connections_total = n.control_connections_total.get();
        self.streams_open = n.streams_open.get();
        self.stream_connections_dialed = n.stream_connections_dialed.get();
        self.stream_connections_accepted = n.stream_connections_accepted.get();
        self.result_bytes_written = n.result_bytes_written.get();
        self.result_bytes_streamed = n.result_bytes_streamed.get();
        self
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn prometheus(&self) -> String {
        let mut out = Prom::default();
        let m = &self.mesh;
        out.family(
            "receptor_link_bytes_total",
            "counter",
            "Bytes on a backend link, by peer and direction.",
        );
        for l in &m.links {
            out.sample(
                "receptor_link_bytes_total",
                &[("peer", &l.peer), ("direction", "in")],
                l.bytes_in,
            );
            out.sample(
                "receptor_link_bytes_total",
                &[("peer", &l.peer), ("direction", "out")],
                l.bytes_out,
            );
        }
        out.family(
            "receptor_link_messages_total",
            "counter",
            "Messages on a backend link, by peer and direction.",
        );
        for l in &m.links {
            out.sample(
                "receptor_link_messages_total",
                &[("peer", &l.peer), ("direction", "in")],
                l.messages_in,
            );
            out.sample(
                "receptor_link_messages_total",
                &[("peer", &l.peer), ("direction", "out")],
                l.messages_out,
            );
        }
        out.family(
            "receptor_link_cost",
            "gauge",
            "Cost of an established link.",
        );
        for l in &m.links {
            out.sample_f("receptor_link_cost", &[("peer", &l.peer)], l.cost);
        }
        out.family(
            "receptor_link_transitions_total",
            "counter",
            "Times a link to a peer came up or went down.",
        );
        for (peer, t) in &m.transitions {
            out.sample(
                "receptor_link_transitions_total",
                &[("peer", peer), ("to", "up")],
                t.up,
            );
            out.sample(
                "receptor_link_transitions_total",
                &[("peer", peer), ("to", "down")],
                t.down,
            );
        }
        out.gauge(
            "receptor_known_nodes",
            "Nodes in the link-state database.",
            m.known_nodes,
        );
        out.gauge(
            "receptor_routes",
            "Destinations in the routing table.",
            m.routes,
        );
        out.family(
            "receptor_routing_updates_total",
            "counter",
            "Routing updates, by what happened to them.",
        );
        out.sample(
            "receptor_routing_updates_total",
            &[("event", "sent")],
            m.routing_updates_sent,
        );
        out.sample(
            "receptor_routing_updates_total",
            &[("event", "received")],
            m.routing_updates_received,
        );
        out.sample(
            "receptor_routing_updates_total",
            &[("event", "dropped")],
            m.routing_updates_dropped,
        );
        out.counter(
            "receptor_datagrams_delivered_total",
            "DATA messages delivered to local services.",
            m.datagrams_delivered,
        );
        out.counter(
            "receptor_datagrams_forwarded_total",
            "DATA messages forwarded to the next hop.",
            m.datagrams_forwarded,
        );
        out.family(
            "receptor_datagrams_dropped_total",
            "counter",
            "DATA messages dropped, by reason.",
        );
        for (reason, n) in &m.datagrams_dropped {
            out.sample(
                "receptor_datagrams_dropped_total",
                &[("reason", reason)],
                *n,
            );
        }
        out.gauge(
            "receptor_streams_open",
            "QUIC streams open.",
            self.streams_open,
        );
        out.family(
            "receptor_stream_connections_total",
            "counter",
            "QUIC connections whose handshake completed, by side.",
        );
        out.sample(
            "receptor_stream_connections_total",
            &[("side", "dialed")],
            self.stream_connections_dialed,
        );
        out.sample(
            "receptor_stream_connections_total",
            &[("side", "accepted")],
            self.stream_connections_accepted,
        );
        out.gauge(
            "receptor_control_connections",
            "Control-service connections open.",
            self.control_connections,
        );
        out.counter(
            "receptor_control_connections_total",
            "Control-service connections accepted.",
            self.control_connections_total,
        );
        out.family(
            "receptor_units",
            "gauge",
            "Work units on disk, by work type and state.",
        );
        for (wt, w) in &self.work_types {
            for (state, n) in &w.units {
                out.sample("receptor_units", &[("worktype", wt), ("state", state)], *n);
            }
        }
        out.family(
            "receptor_unit_starts_total",
            "counter",
            "Work units started, by work type.",
        );
        for (wt, w) in &self.work_types {
            out.sample("receptor_unit_starts_total", &[("worktype", wt)], w.started);
        }
        out.family(
            "receptor_unit_failures_total",
            "counter",
            "Work units failed, by work type.",
        );
        for (wt, w) in &self.work_types {
            out.sample(
                "receptor_unit_failures_total",
                &[("worktype", wt)],
                w.failed,
            );
        }
        out.counter(
            "receptor_result_bytes_written_total",
            "Bytes of unit results written to disk.",
            self.result_bytes_written,
        );
        out.counter(
            "receptor_result_bytes_streamed_total",
            "Bytes of unit results streamed to clients.",
            self.result_bytes_streamed,
        );
        out.family(
            "receptor_plugin_calls_total",
            "counter",
            "Calls into a plugin.",
        );
        for (p, c) in &self.plugins {
            out.sample("receptor_plugin_calls_total", &[("plugin", p)], c.calls);
        }
        out.family(
            "receptor_plugin_failures_total",
            "counter",
            "Plugin calls that failed.",
        );
        for (p, c) in &self.plugins {
            out.sample(
                "receptor_plugin_failures_total",
                &[("plugin", p)],
                c.failures,
            );
        }
        out.0
    }
}

/// A Prometheus text writer.
#[derive(Default)]
struct Prom(String);

impl Prom {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn labels(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.labels(name, labels);
        let _ = writeln!(self.0, " {value}");
    }

    fn sample_f(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.labels(name, labels);
        let _ = writeln!(self.0, " {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_families_and_escaped_labels() {
        let mut snap = Snapshot {
            node: "foo".into(),
            ..Snapshot::default()
        };
        snap.mesh.links.push(LinkSnapshot {
            peer: "b\"a\\r".into(),
            cost: 1.5,
            bytes_in: 10,
            messages_in: 1,
            bytes_out: 20,
            messages_out: 2,
        });
        let text = snap.prometheus();
        assert!(text.contains("# TYPE receptor_link_bytes_total counter\n"));
        assert!(
            text.contains("receptor_link_bytes_total{peer=\"b\\\"a\\\\r\",direction=\"out\"} 20\n")
        );
        assert!(text.contains("receptor_link_cost{peer=\"b\\\"a\\\\r\"} 1.5\n"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn gauges_never_go_below_zero() {
        let g = Gauge::default();
        g.dec();
        g.inc();
        g.inc();
        g.dec();
        assert_eq!(g.get(), 1);
    }
}
