//! `connect <node> <service> [<tls-client>]`: turns the control connection into a
//! transparent byte stream to a service on another node (or this one).
//!
//! Forms (Go receptor 1.6.9): the string form is split on single spaces into two or
//! three tokens (a third empty token, from a trailing space, means no TLS); the JSON
//! form has `node`, `service` and an optional `tls`. The named `tls-client` must know
//! the target: its certificate has to carry the target node's ID.
//!
//! On success the node writes `Connecting\n`, then relays bytes both ways (see
//! [`crate::streams::bridge`]): end of stream from the client half-closes the mesh
//! stream and the remote service's end of stream half-closes the client's connection;
//! the session ends when both directions are done. Dial failures are `ERROR:` lines with
//! Go's wording (`no route to node`, `service name too long`, and `context canceled`
//! when the target node does not know the service).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::command::{Args, ControlCommand, ControlConn, Reply};
use crate::mesh::{Mesh, MeshError};
use crate::streams::bridge::{bridge, End};
use crate::streams::{dial_options, dial_with, StreamError};
use crate::tls::TlsRegistry;

/// Longest service name the mesh carries.
const MAX_SERVICE_LEN: usize = receptor_proto::data::MAX_SERVICE_LEN;

/// What to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTarget {
    /// Target node (`localhost` = this node).
    pub node: String,
    /// Target service.
    pub service: String,
    /// Name of a `tls-client` configuration; empty = the built-in insecure TLS.
    pub tls: String,
}

impl ConnectTarget {
    /// Parses the command's parameters; `Err` is Go's error message.
    pub fn parse(args: &Args) -> Result<ConnectTarget, String> {
        match args {
            Args::Text(params) => {
                let tokens: Vec<&str> = params.split(' ').collect();
                if tokens.len() < 2 {
                    return Err("no connect target".to_owned());
                }
                if tokens.len() > 3 {
                    return Err("too many parameters".to_owned());
                }
                Ok(ConnectTarget {
                    node: tokens[0].to_owned(),
                    service: tokens[1].to_owned(),
                    tls: tokens.get(2).copied().unwrap_or_default().to_owned(),
                })
            }
            Args::Json(map) => {
                let node = match map.get("node") {
                    None => return Err("no connect target node".to_owned()),
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => return Err("connect target node must be string".to_owned()),
                };
                let service = match map.get("service") {
                    None => return Err("no connect target service".to_owned()),
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => return Err("connect target service must be string".to_owned()),
                };
                let tls = match map.get("tls") {
                    None => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => return Err("connect tls name must be string".to_owned()),
                };
                Ok(ConnectTarget { node, service, tls })
            }
        }
    }
}

/// A dial error as Go receptor words it.
pub fn dial_error_text(e: &StreamError) -> String {
    match e {
        StreamError::ServiceUnknown { .. } => "context canceled".to_owned(),
        StreamError::NoRoute(_) | StreamError::Mesh(MeshError::NoRoute) => {
            "no route to node".to_owned()
        }
        StreamError::Timeout => "timeout: handshake did not complete in time".to_owned(),
        other => other.to_string(),
    }
}

/// The `connect` command.
pub struct ConnectCommand {
    mesh: Mesh,
    tls: Arc<TlsRegistry>,
}

impl ConnectCommand {
    /// A `connect` command dialing through `mesh`, with the node's TLS configurations.
    pub fn new(mesh: Mesh, tls: Arc<TlsRegistry>) -> Self {
        ConnectCommand { mesh, tls }
    }
}

#[async_trait]
impl ControlCommand for ConnectCommand {
    fn name(&self) -> &'static str {
        "connect"
    }

    async fn run(&self, args: Args, conn: &mut ControlConn) -> Result<Reply, String> {
        let target = ConnectTarget::parse(&args)?;
        let tls = (!target.tls.is_empty()).then_some(target.tls.as_str());
        let opts =
            dial_options(&self.mesh, tls, &self.tls, &target.node).map_err(|e| e.to_string())?;
        if target.service.len() > MAX_SERVICE_LEN {
            return Err(MeshError::ServiceNameTooLong.to_string());
        }
        let stream = dial_with(&self.mesh, &target.node, &target.service, opts)
            .await
            .map_err(|e| dial_error_text(&e))?;
        let (mut mr, mut mw) = stream.into_split();
        if conn.writer.write_all(b"Connecting\n").await.is_err()
            || conn.writer.flush().await.is_err()
        {
            return Ok(Reply::Close);
        }
        let outcome = bridge(
            End {
                name: "control connection",
                read: &mut conn.reader,
                write: &mut conn.writer,
            },
            End {
                name: "connected service",
                read: &mut mr,
                write: &mut mw,
            },
        )
        .await;
        match outcome {
            Ok(t) => tracing::debug!(
                node = %target.node,
                service = %target.service,
                "connect done ({} bytes out, {} bytes in)",
                t.forward,
                t.backward
            ),
            Err(e) => {
                tracing::info!(node = %target.node, service = %target.service, "connect ended: {e}");
                mw.abort(&e.to_string());
            }
        }
        Ok(Reply::Close)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(s: &str) -> Result<ConnectTarget, String> {
        ConnectTarget::parse(&Args::Text(s.to_owned()))
    }

    fn json(v: Value) -> Result<ConnectTarget, String> {
        match v {
            Value::Object(map) => ConnectTarget::parse(&Args::Json(map)),
            _ => Err("not an object".to_owned()),
        }
    }

    fn target(node: &str, service: &str, tls: &str) -> Result<ConnectTarget, String> {
        Ok(ConnectTarget {
            node: node.to_owned(),
            service: service.to_owned(),
            tls: tls.to_owned(),
        })
    }

    #[test]
    fn string_form_splits_on_single_spaces() {
        assert_eq!(text("bar control"), target("bar", "control", ""));
        // receptorctl sends a trailing space when no TLS client is given.
        assert_eq!(text("bar control "), target("bar", "control", ""));
        assert_eq!(text("bar control tc"), target("bar", "control", "tc"));
        assert_eq!(text("bar  control"), target("bar", "", "control"));
        assert_eq!(text(""), Err("no connect target".to_owned()));
        assert_eq!(text("bar"), Err("no connect target".to_owned()));
        assert_eq!(text("a b c d"), Err("too many parameters".to_owned()));
    }

    #[test]
    fn json_form_checks_types() {
        assert_eq!(
            json(json!({"command":"connect","node":"bar","service":"control"})),
            target("bar", "control", "")
        );
        assert_eq!(
            json(json!({"command":"connect","node":"bar","service":"control","tls":"t"})),
            target("bar", "control", "t")
        );
        let err = |v| json(v).err().unwrap_or_default();
        assert_eq!(err(json!({"command":"connect"})), "no connect target node");
        assert_eq!(
            err(json!({"command":"connect","node":1})),
            "connect target node must be string"
        );
        assert_eq!(
            err(json!({"command":"connect","node":"bar"})),
            "no connect target service"
        );
        assert_eq!(
            err(json!({"command":"connect","node":"bar","service":null})),
            "connect target service must be string"
        );
        assert_eq!(
            err(json!({"command":"connect","node":"bar","service":"control","tls":5})),
            "connect tls name must be string"
        );
    }

    #[test]
    fn dial_errors_use_go_wording() {
        let unknown = StreamError::ServiceUnknown {
            node: "bar".into(),
            service: "nosvc".into(),
        };
        assert_eq!(dial_error_text(&unknown), "context canceled");
        assert_eq!(
            dial_error_text(&StreamError::NoRoute("x".into())),
            "no route to node"
        );
        assert_eq!(
            dial_error_text(&StreamError::Mesh(MeshError::NoRoute)),
            "no route to node"
        );
    }
}
