//! A node's configuration file, in receptor's YAML list form (the form both implementations
//! read with `--config`): a list of single-key maps such as `- tcp-listener: {port: 20001}`.
//!
//! [`NodeConfig`] holds the entries a test chooses; the `node` entry (id, data folder) and the
//! `control-service` entry (unix socket in the node's folder) are added by
//! [`crate::NodeProcess::start`], which knows the node's folder.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Map, Value};

/// The configuration entries of one node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    id: String,
    log_level: String,
    node_settings: Map<String, Value>,
    entries: Vec<(String, Value)>,
}

impl NodeConfig {
    /// A node named `id` with no backends; log level `info`.
    pub fn new(id: &str) -> Self {
        NodeConfig {
            id: id.to_string(),
            log_level: "info".to_string(),
            node_settings: Map::new(),
            entries: Vec::new(),
        }
    }

    /// The node id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sets the `log-level` entry (`error`, `warning`, `info`, `debug`).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_string();
        self
    }

    /// Adds a key of the `node` entry besides `id` and `datadir`, e.g.
    /// `node_setting("firewallrules", json!([{"action": "drop"}]))`.
    pub fn node_setting(mut self, key: &str, value: Value) -> Self {
        self.node_settings.insert(key.to_string(), value);
        self
    }

    /// A TCP listener on 127.0.0.1:`port` with the default cost.
    pub fn tcp_listener(self, port: u16) -> Self {
        self.entry(
            "tcp-listener",
            json!({"port": port, "bindaddr": "127.0.0.1"}),
        )
    }

    /// A TCP listener on 127.0.0.1:`port` whose connections cost `cost`.
    pub fn tcp_listener_cost(self, port: u16, cost: f64) -> Self {
        self.entry(
            "tcp-listener",
            json!({"port": port, "bindaddr": "127.0.0.1", "cost": cost}),
        )
    }

    /// A TCP peer dialing 127.0.0.1:`port` with the default cost.
    pub fn tcp_peer(self, port: u16) -> Self {
        self.entry("tcp-peer", json!({"address": format!("127.0.0.1:{port}")}))
    }

    /// A TCP peer dialing 127.0.0.1:`port` whose connection costs `cost` (must match the
    /// listener's cost for that peer, or the nodes refuse the link).
    pub fn tcp_peer_cost(self, port: u16, cost: f64) -> Self {
        self.entry(
            "tcp-peer",
            json!({"address": format!("127.0.0.1:{port}"), "cost": cost}),
        )
    }

    /// A `work-command` work type running `command` (with `params`, if any).
    pub fn work_command(self, worktype: &str, command: &str, params: Option<&str>) -> Self {
        let mut body = json!({"worktype": worktype, "command": command});
        if let (Some(params), Some(map)) = (params, body.as_object_mut()) {
            map.insert("params".to_string(), json!(params));
        }
        self.entry("work-command", body)
    }

    /// Mutual TLS with the certificates of node `name` in `certs` (`<name>.crt`,
    /// `<name>.key`, `ca.crt`): a `tls-server` named `srv` that requires client
    /// certificates signed by the CA, and a `tls-client` named `cli` that presents the
    /// node's certificate and trusts the CA.
    pub fn mutual_tls(self, certs: &Path, name: &str) -> Self {
        let file = |ext: &str| certs.join(format!("{name}.{ext}")).display().to_string();
        let ca = certs.join("ca.crt").display().to_string();
        self.entry(
            "tls-server",
            json!({"name": "srv", "cert": file("crt"), "key": file("key"),
                   "requireclientcert": true, "clientcas": ca}),
        )
        .entry(
            "tls-client",
            json!({"name": "cli", "cert": file("crt"), "key": file("key"), "rootcas": ca}),
        )
    }

    /// Any other entry, e.g. `entry("udp-listener", json!({"port": 20003}))`.
    pub fn entry(mut self, key: &str, value: Value) -> Self {
        self.entries.push((key.to_string(), value));
        self
    }

    /// The YAML text, with the `node` and `control-service` entries for the given data
    /// folder and control socket first.
    pub fn to_yaml(&self, datadir: &Path, socket: &Path) -> String {
        let mut node = self.node_settings.clone();
        node.insert("id".to_string(), json!(self.id));
        node.insert("datadir".to_string(), json!(datadir.display().to_string()));
        let mut all = vec![
            ("node".to_string(), Value::Object(node)),
            ("log-level".to_string(), json!(self.log_level)),
            (
                "control-service".to_string(),
                json!({"service": "control", "filename": socket.display().to_string()}),
            ),
        ];
        all.extend(self.entries.iter().cloned());
        let mut out = String::new();
        for (key, value) in &all {
            write_entry(&mut out, key, value);
        }
        out
    }
}

/// Writes `- key: value` with a map value in block style, one level deep; nested values are
/// written as JSON, which is YAML flow syntax.
fn write_entry(out: &mut String, key: &str, value: &Value) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let _ = writeln!(out, "- {key}:");
            write_block_map(out, map, 4);
        }
        other => {
            let _ = writeln!(out, "- {key}: {other}");
        }
    }
}

fn write_block_map(out: &mut String, map: &Map<String, Value>, indent: usize) {
    // Sorted, so the text does not depend on serde_json's map flavour.
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for (key, value) in keys.into_iter().filter_map(|k| map.get(k).map(|v| (k, v))) {
        let _ = writeln!(out, "{:indent$}{key}: {value}", "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_has_node_control_and_entries() {
        let yaml = NodeConfig::new("foo")
            .tcp_listener_cost(20001, 2.5)
            .tcp_peer(20002)
            .to_yaml(Path::new("/tmp/d"), Path::new("/tmp/d/ctl.sock"));
        assert_eq!(
            yaml,
            "- node:\n    datadir: \"/tmp/d\"\n    id: \"foo\"\n\
             - log-level: \"info\"\n\
             - control-service:\n    filename: \"/tmp/d/ctl.sock\"\n    service: \"control\"\n\
             - tcp-listener:\n    bindaddr: \"127.0.0.1\"\n    cost: 2.5\n    port: 20001\n\
             - tcp-peer:\n    address: \"127.0.0.1:20002\"\n"
        );
    }
}
