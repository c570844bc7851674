//! `ping` and `traceroute`.
//!
//! `ping <node>` sends one mesh ping with the full hop budget (30) and reports
//! `{"From","Success":true,"Time","TimeStr"}`, or `{"Error","Success":false}` without
//! `From`/`Time` on failure. `traceroute <node>` pings with hops-to-live 0, 1, 2, ...:
//! each probe that expires on the way (`message expired`) names an intermediate hop;
//! the walk ends at the first answer from the target or the first other error, which
//! is reported in that hop's `Error` key. Hops are keyed by their decimal index.
//! `Time` is in nanoseconds and `TimeStr` is Go's duration text.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::command::{Args, ControlCommand, ControlConn, Reply};
use crate::mesh::{Mesh, PingReply};
use receptor_proto::go::duration::{duration_nanos, go_duration};

/// Most hops a message may be forwarded (Go's `MaxForwardingHops`).
pub const MAX_FORWARDING_HOPS: u8 = 30;

/// The error text of a probe that ran out of hops before reaching its target.
const EXPIRED: &str = "message expired";

/// The target of a `ping`/`traceroute` command named `command`.
fn target(command: &str, args: &Args) -> Result<String, String> {
    match args {
        Args::Text(params) if params.is_empty() => Err(format!("no {command} target")),
        Args::Text(params) => Ok(params.clone()),
        Args::Json(map) => match map.get("target") {
            None => Err(format!("no {command} target")),
            Some(Value::String(target)) => Ok(target.clone()),
            Some(_) => Err(format!("{command} target must be string")),
        },
    }
}

/// The reply to a single ping.
pub fn ping_reply(reply: &PingReply) -> Value {
    match &reply.error {
        None => {
            let nanos = duration_nanos(reply.rtt);
            json!({"From": reply.from, "Success": true, "Time": nanos, "TimeStr": go_duration(nanos)})
        }
        Some(error) => json!({"Error": error, "Success": false}),
    }
}

/// One traceroute hop.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    /// The node that answered or reported.
    pub from: String,
    /// Round-trip time of the probe.
    pub rtt: Duration,
    /// A real error (an expired probe is not one).
    pub error: Option<String>,
}

/// Walks towards the target: `probe(h)` pings with hops-to-live `h`, for `h` from 0 up
/// to [`MAX_FORWARDING_HOPS`], until a probe is answered or fails for real.
pub async fn traceroute<F, Fut>(mut probe: F) -> Vec<Hop>
where
    F: FnMut(u8) -> Fut,
    Fut: Future<Output = PingReply>,
{
    let mut hops = Vec::new();
    for hops_to_live in 0..=MAX_FORWARDING_HOPS {
        let reply = probe(hops_to_live).await;
        let answered = reply.error.is_none();
        let error = reply.error.filter(|e| e != EXPIRED);
        let stop = answered || error.is_some();
        hops.push(Hop {
            from: reply.from,
            rtt: reply.rtt,
            error,
        });
        if stop {
            break;
        }
    }
    hops
}

/// The reply to a traceroute: hop index → `{From, Time, TimeStr[, Error]}`.
pub fn traceroute_reply(hops: &[Hop]) -> Value {
    let mut out = Map::new();
    for (index, hop) in hops.iter().enumerate() {
        let nanos = duration_nanos(hop.rtt);
        let mut entry = json!({"From": hop.from, "Time": nanos, "TimeStr": go_duration(nanos)});
        if let (Some(error), Value::Object(map)) = (&hop.error, &mut entry) {
            map.insert("Error".to_owned(), Value::from(error.as_str()));
        }
        out.insert(index.to_string(), entry);
    }
    Value::Object(out)
}

/// `ping`, backed by the mesh.
pub struct PingCommand {
    mesh: Mesh,
}

impl PingCommand {
    /// A `ping` command sending through `mesh`.
    pub fn new(mesh: Mesh) -> Self {
        PingCommand { mesh }
    }
}

#[async_trait]
impl ControlCommand for PingCommand {
    fn name(&self) -> &'static str {
        "ping"
    }

    async fn run(&self, args: Args, _conn: &mut ControlConn) -> Result<Reply, String> {
        let target = target("ping", &args)?;
        let reply = self.mesh.ping(&target, MAX_FORWARDING_HOPS).await;
        Ok(Reply::Json(ping_reply(&reply)))
    }
}

/// `traceroute`, backed by the mesh.
pub struct TracerouteCommand {
    mesh: Mesh,
}

impl TracerouteCommand {
    /// A `traceroute` command probing through `mesh`.
    pub fn new(mesh: Mesh) -> Self {
        TracerouteCommand { mesh }
    }
}

#[async_trait]
impl ControlCommand for TracerouteCommand {
    fn name(&self) -> &'static str {
        "traceroute"
    }

    async fn run(&self, args: Args, _conn: &mut ControlConn) -> Result<Reply, String> {
        let target = target("traceroute", &args)?;
        let mesh = &self.mesh;
        let target = target.as_str();
        let hops = traceroute(|hops_to_live| mesh.ping(target, hops_to_live)).await;
        Ok(Reply::Json(traceroute_reply(&hops)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gojson(v: &Value) -> String {
        receptor_proto::gojson::to_string(v).unwrap_or_default()
    }

    fn reply(from: &str, nanos: u64, error: Option<&str>) -> PingReply {
        PingReply {
            from: from.to_owned(),
            rtt: Duration::from_nanos(nanos),
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn ping_replies_match_go() {
        assert_eq!(
            gojson(&ping_reply(&reply("bar", 261_951, None))),
            r#"{"From":"bar","Success":true,"Time":261951,"TimeStr":"261.951µs"}"#
        );
        assert_eq!(
            gojson(&ping_reply(&reply("foo", 5, Some("no route to node")))),
            r#"{"Error":"no route to node","Success":false}"#
        );
    }

    #[test]
    fn targets() {
        let json = |v: Value| match v {
            Value::Object(map) => Args::Json(map),
            _ => Args::Text(String::new()),
        };
        assert_eq!(
            target("ping", &Args::Text("  bar".into())),
            Ok("  bar".to_owned())
        );
        assert_eq!(
            target("ping", &Args::Text(String::new())),
            Err("no ping target".to_owned())
        );
        assert_eq!(
            target("traceroute", &json(json!({"command": "traceroute"}))),
            Err("no traceroute target".to_owned())
        );
        assert_eq!(
            target("ping", &json(json!({"command": "ping", "target": 1}))),
            Err("ping target must be string".to_owned())
        );
        assert_eq!(
            target(
                "traceroute",
                &json(json!({"command": "traceroute", "target": "bar"}))
            ),
            Ok("bar".to_owned())
        );
    }

    /// Runs a traceroute against scripted probe results, checking the hop budgets asked.
    async fn scripted(script: Vec<PingReply>) -> (Vec<u8>, Value) {
        let mut asked = Vec::new();
        let mut script = script.into_iter();
        let hops = traceroute(|h| {
            asked.push(h);
            let next = script.next().unwrap_or_else(|| reply("", 0, Some(EXPIRED)));
            async move { next }
        })
        .await;
        (asked, traceroute_reply(&hops))
    }

    #[tokio::test]
    async fn traceroute_walks_until_answer() {
        let (asked, out) = scripted(vec![
            reply("foo", 222_392, Some(EXPIRED)),
            reply("bar", 404_022, None),
        ])
        .await;
        assert_eq!(asked, vec![0, 1]);
        assert_eq!(
            gojson(&out),
            r#"{"0":{"From":"foo","Time":222392,"TimeStr":"222.392µs"},"1":{"From":"bar","Time":404022,"TimeStr":"404.022µs"}}"#
        );
    }

    #[tokio::test]
    async fn traceroute_stops_at_first_real_error() {
        let (asked, out) = scripted(vec![
            reply("foo", 151_556, Some(EXPIRED)),
            reply("foo", 1_722, Some("no route to node")),
        ])
        .await;
        assert_eq!(asked, vec![0, 1]);
        assert_eq!(
            gojson(&out),
            r#"{"0":{"From":"foo","Time":151556,"TimeStr":"151.556µs"},"1":{"Error":"no route to node","From":"foo","Time":1722,"TimeStr":"1.722µs"}}"#
        );
    }

    #[tokio::test]
    async fn traceroute_gives_up_after_the_hop_budget() {
        let (asked, out) = scripted(Vec::new()).await;
        assert_eq!(asked, (0..=30).collect::<Vec<u8>>());
        let Value::Object(map) = out else {
            panic!("not an object")
        };
        assert_eq!(map.len(), 31);
        // Keys sort as Go sorts map keys: bytewise.
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        assert_eq!(&keys[..4], ["0", "1", "10", "11"]);
    }
}
