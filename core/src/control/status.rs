//! The `status` command: the node's view of the mesh.
//!
//! The reply is Go receptor 1.6.9's: a JSON object with the keys `Advertisements`,
//! `Connections`, `KnownConnectionCosts`, `NodeID`, `RoutingTable`, `SystemCPUCount`,
//! `SystemMemoryMiB` and `Version` (sorted, as Go sorts map keys), where advertisements
//! and connections keep Go's struct field order. `Version` is `1.6.9` because
//! `receptorctl` warns when its own version differs. The JSON form may restrict the
//! reply with `"requested_fields":[...]` (unknown names are ignored).

use std::collections::BTreeMap;

use async_trait::async_trait;
use receptor_proto::svcad::ServiceAdvertisement;
use serde::Serialize;
use serde_json::Value;

use super::command::{Args, ControlCommand, ControlConn, Reply};
use crate::mesh::{Mesh, MeshStatus};

/// The version `status` reports: the Go receptor release this node is compatible with
/// ([`crate::config::COMPATIBLE_VERSION`]), not this project's own version, because
/// clients read it as receptor's version (`receptorctl` warns when it differs from its
/// own, and controllers compare it with the receptor releases they know).
pub const VERSION: &str = crate::config::COMPATIBLE_VERSION;

/// Host facts reported by `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SystemInfo {
    /// CPUs this process may run on (Go's `runtime.NumCPU()`).
    pub cpu_count: usize,
    /// Total physical memory in MiB.
    pub memory_mib: u64,
}

impl SystemInfo {
    /// Reads the current values from the kernel.
    pub fn current() -> SystemInfo {
        SystemInfo {
            cpu_count: cpu_count(),
            memory_mib: memory_mib(),
        }
    }
}

/// CPUs in this process's affinity mask, as Go counts them.
fn cpu_count() -> usize {
    // SAFETY: `cpu_set_t` is plain data for which all-zero is a valid (empty) set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc == 0 {
        // SAFETY: `set` was filled in by the kernel.
        let count = unsafe { libc::CPU_COUNT(&set) };
        if let Ok(count) = usize::try_from(count) {
            if count > 0 {
                return count;
            }
        }
    }
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Total RAM in MiB (`sysinfo`'s `totalram * mem_unit`, as Go's memory package reads it).
fn memory_mib() -> u64 {
    // SAFETY: `sysinfo` is plain data for which all-zero is valid.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, writable `struct sysinfo`.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return 0;
    }
    // `c_ulong` is 32 bits wide on some targets.
    #[allow(clippy::useless_conversion)]
    let total = u64::from(info.totalram);
    total.saturating_mul(u64::from(info.mem_unit)) / (1024 * 1024)
}

/// One direct neighbour, in Go's field order.
#[derive(Serialize)]
struct Connection<'a> {
    #[serde(rename = "NodeID")]
    node_id: &'a str,
    #[serde(rename = "Cost")]
    cost: f64,
}

/// The reply object; fields are declared in Go's (sorted) key order and left out when
/// not requested.
#[derive(Serialize)]
struct StatusReply<'a> {
    #[serde(rename = "Advertisements", skip_serializing_if = "Option::is_none")]
    advertisements: Option<&'a [ServiceAdvertisement]>,
    #[serde(rename = "Connections", skip_serializing_if = "Option::is_none")]
    connections: Option<Vec<Connection<'a>>>,
    #[serde(
        rename = "KnownConnectionCosts",
        skip_serializing_if = "Option::is_none"
    )]
    known_connection_costs: Option<&'a BTreeMap<String, BTreeMap<String, f64>>>,
    #[serde(rename = "NodeID", skip_serializing_if = "Option::is_none")]
    node_id: Option<&'a str>,
    #[serde(rename = "RoutingTable", skip_serializing_if = "Option::is_none")]
    routing_table: Option<&'a BTreeMap<String, String>>,
    #[serde(rename = "SystemCPUCount", skip_serializing_if = "Option::is_none")]
    system_cpu_count: Option<usize>,
    #[serde(rename = "SystemMemoryMiB", skip_serializing_if = "Option::is_none")]
    system_memory_mib: Option<u64>,
    #[serde(rename = "Version", skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
}

/// Renders the `status` reply (without newline). `fields = None` means every field.
pub fn render_status(
    node_id: &str,
    system: &SystemInfo,
    mesh: &MeshStatus,
    fields: Option<&[String]>,
) -> Result<String, String> {
    let want = |name: &str| fields.is_none_or(|fields| fields.iter().any(|f| f == name));
    let reply = StatusReply {
        advertisements: want("Advertisements").then_some(mesh.advertisements.as_slice()),
        connections: want("Connections").then(|| {
            mesh.connections
                .iter()
                .map(|c| Connection {
                    node_id: &c.node_id,
                    cost: c.cost,
                })
                .collect()
        }),
        known_connection_costs: want("KnownConnectionCosts")
            .then_some(&mesh.known_connection_costs),
        node_id: want("NodeID").then_some(node_id),
        routing_table: want("RoutingTable").then_some(&mesh.routing_table),
        system_cpu_count: want("SystemCPUCount").then_some(system.cpu_count),
        system_memory_mib: want("SystemMemoryMiB").then_some(system.memory_mib),
        version: want("Version").then_some(VERSION),
    };
    receptor_proto::gojson::to_string(&reply)
        .map_err(|e| format!("could not convert response to JSON: {e}"))
}

/// The fields a `status` command asks for (`None` = all), or the error to reply with.
pub fn requested_fields(args: &Args) -> Result<Option<Vec<String>>, String> {
    match args {
        Args::Text(params) if params.is_empty() => Ok(None),
        Args::Text(_) => Err("status command does not take parameters".to_owned()),
        Args::Json(map) => match map.get("requested_fields") {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err("each element of requested_fields must be a string".to_owned()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err("requested_fields must be a list of strings".to_owned()),
        },
    }
}

/// `status`, backed by the mesh.
pub struct StatusCommand {
    mesh: Mesh,
}

impl StatusCommand {
    /// A `status` command reporting `mesh`.
    pub fn new(mesh: Mesh) -> Self {
        StatusCommand { mesh }
    }
}

#[async_trait]
impl ControlCommand for StatusCommand {
    fn name(&self) -> &'static str {
        "status"
    }

    async fn run(&self, args: Args, _conn: &mut ControlConn) -> Result<Reply, String> {
        let fields = requested_fields(&args)?;
        let status = self.mesh.status().await;
        let system = SystemInfo::current();
        render_status(self.mesh.node_id(), &system, &status, fields.as_deref()).map(Reply::Encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::ConnectionInfo;
    use receptor_proto::svcad::WorkCommand;
    use serde_json::json;

    fn work_commands() -> Vec<WorkCommand> {
        let plain = ["echoint", "cat", "echoparams", "sleeper", "fail", "upper"];
        let mut cmds: Vec<WorkCommand> = plain
            .iter()
            .map(|t| WorkCommand {
                work_type: (*t).to_owned(),
                secure: false,
            })
            .collect();
        cmds.push(WorkCommand {
            work_type: "signedcat".to_owned(),
            secure: true,
        });
        cmds
    }

    fn control_ad(node: &str, time: &str) -> ServiceAdvertisement {
        ServiceAdvertisement {
            node_id: node.to_owned(),
            service: "control".to_owned(),
            time: time.to_owned(),
            conn_type: 1,
            tags: Some(BTreeMap::from([(
                "type".to_owned(),
                "Control Service".to_owned(),
            )])),
            work_commands: Some(work_commands()),
        }
    }

    /// The mesh state of node `foo` in the spec's verified transcript (section 11.01).
    fn foo_status() -> MeshStatus {
        MeshStatus {
            connections: vec![ConnectionInfo {
                node_id: "bar".to_owned(),
                cost: 1.0,
            }],
            routing_table: BTreeMap::from([("bar".to_owned(), "bar".to_owned())]),
            known_connection_costs: BTreeMap::from([
                ("bar".to_owned(), BTreeMap::from([("foo".to_owned(), 1.0)])),
                ("foo".to_owned(), BTreeMap::from([("bar".to_owned(), 1.0)])),
            ]),
            advertisements: vec![
                control_ad("foo", "2026-11-25T16:59:01.648575443Z"),
                control_ad("bar", "2026-11-25T16:58:59.544068802Z"),
            ],
        }
    }

    const SYSTEM: SystemInfo = SystemInfo {
        cpu_count: 2,
        memory_mib: 24105,
    };

    #[test]
    fn full_status_matches_go_byte_for_byte() {
        let want = r#"{"Advertisements":[{"NodeID":"foo","Service":"control","Time":"2026-11-25T16:59:01.648575443Z","ConnType":1,"Tags":{"type":"Control Service"},"WorkCommands":[{"WorkType":"echoint","Secure":false},{"WorkType":"cat","Secure":false},{"WorkType":"echoparams","Secure":false},{"WorkType":"sleeper","Secure":false},{"WorkType":"fail","Secure":false},{"WorkType":"upper","Secure":false},{"WorkType":"signedcat","Secure":true}]},{"NodeID":"bar","Service":"control","Time":"2026-11-25T16:58:59.544068802Z","ConnType":1,"Tags":{"type":"Control Service"},"WorkCommands":[{"WorkType":"echoint","Secure":false},{"WorkType":"cat","Secure":false},{"WorkType":"echoparams","Secure":false},{"WorkType":"sleeper","Secure":false},{"WorkType":"fail","Secure":false},{"WorkType":"upper","Secure":false},{"WorkType":"signedcat","Secure":true}]}],"Connections":[{"NodeID":"bar","Cost":1}],"KnownConnectionCosts":{"bar":{"foo":1},"foo":{"bar":1}},"NodeID":"foo","RoutingTable":{"bar":"bar"},"SystemCPUCount":2,"SystemMemoryMiB":24105,"Version":"1.6.9"}"#;
        assert_eq!(
            render_status("foo", &SYSTEM, &foo_status(), None).as_deref(),
            Ok(want)
        );
    }

    #[test]
    fn requested_fields_restrict_and_ignore_unknown_names() {
        let fields = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let render = |f: &[&str]| render_status("foo", &SYSTEM, &foo_status(), Some(&fields(f)));
        assert_eq!(
            render(&["Version", "NodeID", "Bogus"]).as_deref(),
            Ok(r#"{"NodeID":"foo","Version":"1.6.9"}"#)
        );
        assert_eq!(
            render(&["NodeID", "SystemCPUCount", "SystemMemoryMiB"]).as_deref(),
            Ok(r#"{"NodeID":"foo","SystemCPUCount":2,"SystemMemoryMiB":24105}"#)
        );
        assert_eq!(render(&[]).as_deref(), Ok("{}"));
    }

    #[test]
    fn empty_mesh_gives_empty_collections_and_null_tags() {
        let status = MeshStatus {
            advertisements: vec![ServiceAdvertisement {
                node_id: "n1".to_owned(),
                service: "tcpsvc".to_owned(),
                time: "2026-01-01T00:00:00Z".to_owned(),
                conn_type: 0,
                tags: None,
                work_commands: None,
            }],
            known_connection_costs: BTreeMap::from([("n1".to_owned(), BTreeMap::new())]),
            ..MeshStatus::default()
        };
        let fields: Vec<String> = [
            "Advertisements",
            "Connections",
            "KnownConnectionCosts",
            "RoutingTable",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(
            render_status("n1", &SYSTEM, &status, Some(&fields)).as_deref(),
            Ok(
                r#"{"Advertisements":[{"NodeID":"n1","Service":"tcpsvc","Time":"2026-01-01T00:00:00Z","ConnType":0,"Tags":null,"WorkCommands":null}],"Connections":[],"KnownConnectionCosts":{"n1":{}},"RoutingTable":{}}"#
            )
        );
    }

    #[test]
    fn requested_fields_validation() {
        let json = |v: Value| match v {
            Value::Object(map) => Args::Json(map),
            _ => Args::Text(String::new()),
        };
        assert_eq!(requested_fields(&Args::Text(String::new())), Ok(None));
        assert_eq!(
            requested_fields(&Args::Text("x".into())),
            Err("status command does not take parameters".to_owned())
        );
        assert_eq!(
            requested_fields(&json(json!({"command": "status"}))),
            Ok(None)
        );
        assert_eq!(
            requested_fields(&json(
                json!({"command": "status", "requested_fields": ["A", "B"]})
            )),
            Ok(Some(vec!["A".to_owned(), "B".to_owned()]))
        );
        assert_eq!(
            requested_fields(&json(
                json!({"command": "status", "requested_fields": ["A", 1]})
            )),
            Err("each element of requested_fields must be a string".to_owned())
        );
        for bad in [json!("Version"), json!(null), json!({"a": 1}), json!(3)] {
            assert_eq!(
                requested_fields(&json(json!({"command": "status", "requested_fields": bad}))),
                Err("requested_fields must be a list of strings".to_owned())
            );
        }
    }

    #[test]
    fn system_info_is_plausible() {
        let info = SystemInfo::current();
        assert!(info.cpu_count >= 1);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        assert_eq!(info.memory_mib, kib / 1024);
    }
}
