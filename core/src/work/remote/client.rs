//! The client side of the control protocol, as remote work speaks it to another node.
//!
//! Every exchange opens its own control session (stream) to the remote control service,
//! as Go does (the status poll keeps one session for its repeated queries); between our
//! nodes the streams share a QUIC connection (see [`super::dialer`]). The requests
//! are byte-for-byte what Go receptor 1.6.9 sends (spec: spy capture): JSON objects
//! with sorted keys for `submit`, `results`, `cancel` and `release`, the string form
//! for `work status`.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};

use super::dialer::{ControlDialer, ControlStream, DialError};

/// Longest reply line accepted from a remote control service.
const MAX_LINE: usize = 1024 * 1024;

/// Buffer for sending a payload.
const PAYLOAD_BUFFER: usize = 256 * 1024;

/// Why a connection to a remote control service could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The dial failed.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The service did not greet as the node we wanted (or not in time).
    #[error("{0}")]
    Greeting(String),
}

impl ConnectError {
    /// Whether this is a TLS failure.
    pub fn is_tls(&self) -> bool {
        matches!(self, ConnectError::Dial(DialError::Tls(_)))
    }
}

/// A session with a remote node's control service.
pub struct ControlClient {
    reader: BufReader<ReadHalf<ControlStream>>,
    writer: WriteHalf<ControlStream>,
    node: String,
    /// Set while the greeting of a session on a kept connection has not been read.
    unverified: Option<Unverified>,
}

/// A session on a kept connection whose greeting is read with the first reply, so that
/// the first request goes out without waiting a round trip for it. Until then what is
/// written is remembered: if the greeting does not come (the connection had died, e.g.
/// the node restarted and answered with a stateless reset), the session is opened again
/// on a new connection and the requests are sent again there.
struct Unverified {
    dialer: Arc<dyn ControlDialer>,
    tls_client: String,
    greeting_timeout: Duration,
    /// Bytes written so far (at most [`MAX_REPLAY`]).
    sent: Vec<u8>,
    /// Whether the writing side was shut down.
    shut: bool,
}

/// Requests kept for a replay; writing more first waits for the greeting.
const MAX_REPLAY: usize = 64 * 1024;

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient")
            .field("node", &self.node)
            .field("greeted", &self.unverified.is_none())
            .finish_non_exhaustive()
    }
}

/// `EOF` as Go prints `io.EOF`.
fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "EOF")
}

/// Go's wording of an I/O error (`EOF` for end of stream).
pub fn io_text(e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        "EOF".to_owned()
    } else {
        e.to_string()
    }
}

impl ControlClient {
    /// Opens a session with `node`'s control service. On a new connection its greeting
    /// is read now: it must arrive within `greeting_timeout` and name the node. On a
    /// connection kept from earlier sessions (our nodes only) the greeting is read with
    /// the first reply instead (see [`Unverified`]).
    pub async fn connect(
        dialer: &Arc<dyn ControlDialer>,
        node: &str,
        tls_client: &str,
        greeting_timeout: Duration,
    ) -> Result<ControlClient, ConnectError> {
        let dialed = dialer.dial(node, tls_client, false).await?;
        let mut client = Self::new(dialed.stream, node);
        if dialed.reused {
            client.unverified = Some(Unverified {
                dialer: dialer.clone(),
                tls_client: tls_client.to_owned(),
                greeting_timeout,
                sent: Vec::new(),
                shut: false,
            });
        } else {
            client.greet(greeting_timeout).await?;
        }
        Ok(client)
    }

    fn new(stream: ControlStream, node: &str) -> ControlClient {
        let (reader, writer) = tokio::io::split(stream);
        ControlClient {
            reader: BufReader::new(reader),
            writer,
            node: node.to_owned(),
            unverified: None,
        }
    }

    /// Reads the greeting.
    async fn greet(&mut self, greeting_timeout: Duration) -> Result<(), ConnectError> {
        let node = self.node.clone();
        let hello = match tokio::time::timeout(greeting_timeout, self.read_line_raw()).await {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(ConnectError::Greeting(io_text(&e))),
            Err(_) => {
                return Err(ConnectError::Greeting(
                    "context deadline exceeded".to_owned(),
                ))
            }
        };
        if !hello.contains(&node) {
            return Err(ConnectError::Greeting(format!(
                "while expecting node ID {node}, got message: {}",
                hello.trim_end_matches('\n')
            )));
        }
        Ok(())
    }

    /// Reads the greeting of a session on a kept connection; if it fails, opens the
    /// session again on a new connection and sends what was sent on the first.
    async fn verify(&mut self) -> io::Result<()> {
        let Some(pending) = self.unverified.take() else {
            return Ok(());
        };
        let Err(e) = self.greet(pending.greeting_timeout).await else {
            return Ok(());
        };
        tracing::debug!(node = %self.node, "kept control connection failed ({e}); dialing anew");
        let dialed = pending
            .dialer
            .dial(&self.node, &pending.tls_client, true)
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e.to_string()))?;
        let mut fresh = Self::new(dialed.stream, &self.node);
        fresh
            .greet(pending.greeting_timeout)
            .await
            .map_err(|e| io::Error::new(io::ErrorKind::NotConnected, e.to_string()))?;
        fresh.writer.write_all(&pending.sent).await?;
        if pending.shut {
            fresh.writer.shutdown().await?;
        }
        *self = fresh;
        Ok(())
    }

    /// Reads one line (with its newline); EOF before a full line is an error.
    pub async fn read_line(&mut self) -> io::Result<String> {
        self.verify().await?;
        self.read_line_raw().await
    }

    async fn read_line_raw(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                return Err(eof());
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&buf[..=i]);
                    self.reader.consume(i + 1);
                    return Ok(String::from_utf8_lossy(&line).into_owned());
                }
                None => {
                    let n = buf.len();
                    line.extend_from_slice(buf);
                    self.reader.consume(n);
                }
            }
            if line.len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "reply line too long",
                ));
            }
        }
    }

    /// Reads one line within `limit`.
    pub async fn read_line_within(&mut self, limit: Duration) -> io::Result<String> {
        tokio::time::timeout(limit, self.read_line())
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timeout")))
    }

    /// Writes `bytes` and flushes.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self
            .unverified
            .as_ref()
            .is_some_and(|p| p.sent.len() + bytes.len() > MAX_REPLAY)
        {
            self.verify().await?;
        }
        if let Some(pending) = &mut self.unverified {
            pending.sent.extend_from_slice(bytes);
        }
        self.writer.write_all(bytes).await?;
        self.writer.flush().await
    }

    /// Half-closes: the remote side reads end of stream.
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        if let Some(pending) = &mut self.unverified {
            pending.shut = true;
        }
        self.writer.shutdown().await
    }

    /// Sends the file at `path` (a unit's payload).
    pub async fn send_file(&mut self, path: &Path) -> io::Result<u64> {
        self.verify().await?;
        let file = tokio::fs::File::open(path).await?;
        let mut file = BufReader::with_capacity(PAYLOAD_BUFFER, file);
        let sent = tokio::io::copy_buf(&mut file, &mut self.writer).await?;
        self.writer.flush().await?;
        Ok(sent)
    }

    /// Reads raw bytes (a results stream after its header line).
    pub async fn read_bytes(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.verify().await?;
        self.reader.read(buf).await
    }

    /// The node this connection goes to.
    pub fn node(&self) -> &str {
        &self.node
    }
}

/// A request line: a JSON object with sorted keys and Go's escaping, plus `\n`.
fn json_line(fields: BTreeMap<&str, Value>) -> Vec<u8> {
    // A map of strings and numbers always serialises.
    let mut line = receptor_proto::gojson::to_vec(&fields).unwrap_or_default();
    line.push(b'\n');
    line
}

/// The `work submit` line: every remote parameter, then the fixed keys.
pub fn submit_line(
    params: &BTreeMap<String, String>,
    node: &str,
    work_type: &str,
    tls_client: &str,
    unit_id: &str,
    signature: Option<&str>,
) -> Vec<u8> {
    let mut fields: BTreeMap<&str, Value> = params
        .iter()
        .map(|(k, v)| (k.as_str(), Value::String(v.clone())))
        .collect();
    fields.insert("command", "work".into());
    fields.insert("subcommand", "submit".into());
    fields.insert("node", node.into());
    fields.insert("worktype", work_type.into());
    fields.insert("tlsclient", tls_client.into());
    fields.insert("workUnitID", unit_id.into());
    if let Some(signature) = signature {
        fields.insert("signature", signature.into());
    }
    json_line(fields)
}

/// The `work results` line.
pub fn results_line(unit_id: &str, startpos: u64, signature: Option<&str>) -> Vec<u8> {
    let mut fields: BTreeMap<&str, Value> = BTreeMap::new();
    fields.insert("command", "work".into());
    fields.insert("subcommand", "results".into());
    fields.insert("unitid", unit_id.into());
    fields.insert("startpos", startpos.into());
    if let Some(signature) = signature {
        fields.insert("signature", signature.into());
    }
    json_line(fields)
}

/// The `work cancel` / `work release` line.
pub fn unit_line(subcommand: &str, unit_id: &str, signature: Option<&str>) -> Vec<u8> {
    let mut fields: BTreeMap<&str, Value> = BTreeMap::new();
    fields.insert("command", "work".into());
    fields.insert("subcommand", subcommand.into());
    fields.insert("unitid", unit_id.into());
    if let Some(signature) = signature {
        fields.insert("signature", signature.into());
    }
    json_line(fields)
}

/// The `work status` line.
pub fn status_line(unit_id: &str) -> Vec<u8> {
    format!("work status {unit_id}\n").into_bytes()
}

/// The unit id in a `Work unit created with ID <id>. Send stdin data and EOF.` line:
/// `expected` if the line names it, else what Go's `with ID ([a-zA-Z0-9]+)\.` finds.
pub fn created_unit_id(line: &str, expected: &str) -> Option<String> {
    let rest = &line[line.find("with ID ")? + "with ID ".len()..];
    if rest
        .strip_prefix(expected)
        .is_some_and(|r| r.starts_with('.'))
    {
        return Some(expected.to_owned());
    }
    let id: String = rest
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    (!id.is_empty() && rest[id.len()..].starts_with('.')).then_some(id)
}

/// A remote unit's status, from a `work status` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteStatus {
    /// State number.
    pub state: i64,
    /// Detail text.
    pub detail: String,
    /// Size of the remote results.
    pub stdout_size: i64,
}

/// What a `work status` reply says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusReply {
    /// The unit's status.
    Status(RemoteStatus),
    /// `ERROR: unknown work unit ...`: the remote unit does not exist.
    Gone,
    /// Another error, or a reply that is not a status.
    Error(String),
}

/// Parses a `work status` reply line.
pub fn parse_status(line: &str) -> StatusReply {
    let line = line.trim_end_matches(['\n', '\r']);
    if let Some(message) = line.strip_prefix("ERROR") {
        if message.contains("unknown work unit") {
            return StatusReply::Gone;
        }
        return StatusReply::Error(message.trim_start_matches([':', ' ']).to_owned());
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(line) else {
        return StatusReply::Error(format!("Error unmarshalling JSON: {line}"));
    };
    let number = |key: &str| map.get(key).and_then(Value::as_i64);
    let (Some(state), Some(Value::String(detail))) = (number("State"), map.get("Detail")) else {
        return StatusReply::Error(format!("not a status: {line}"));
    };
    StatusReply::Status(RemoteStatus {
        state,
        detail: detail.clone(),
        stdout_size: number("StdoutSize").unwrap_or(0).max(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_match_the_spy_capture() {
        let line = submit_line(&BTreeMap::new(), "spy", "upper", "", "fooOrpRQdfT", None);
        assert_eq!(
            String::from_utf8_lossy(&line),
            "{\"command\":\"work\",\"node\":\"spy\",\"subcommand\":\"submit\",\"tlsclient\":\"\",\"workUnitID\":\"fooOrpRQdfT\",\"worktype\":\"upper\"}\n"
        );
        let params = BTreeMap::from([("myparam".to_owned(), "v1".to_owned())]);
        let line = submit_line(
            &params,
            "spy",
            "signedcat",
            "",
            "fooAipGpOgh",
            Some("e.y.J"),
        );
        assert_eq!(
            String::from_utf8_lossy(&line),
            "{\"command\":\"work\",\"myparam\":\"v1\",\"node\":\"spy\",\"signature\":\"e.y.J\",\"subcommand\":\"submit\",\"tlsclient\":\"\",\"workUnitID\":\"fooAipGpOgh\",\"worktype\":\"signedcat\"}\n"
        );
        // Parameters cannot override the fixed keys.
        let params = BTreeMap::from([
            ("command".to_owned(), "x".to_owned()),
            ("a&b".to_owned(), "<".to_owned()),
        ]);
        let line = submit_line(&params, "n", "t", "tc", "u", None);
        assert_eq!(
            String::from_utf8_lossy(&line),
            "{\"a\\u0026b\":\"\\u003c\",\"command\":\"work\",\"node\":\"n\",\"subcommand\":\"submit\",\"tlsclient\":\"tc\",\"workUnitID\":\"u\",\"worktype\":\"t\"}\n"
        );
        assert_eq!(
            String::from_utf8_lossy(&results_line("fooOrpRQdfT", 0, None)),
            "{\"command\":\"work\",\"startpos\":0,\"subcommand\":\"results\",\"unitid\":\"fooOrpRQdfT\"}\n"
        );
        assert_eq!(
            String::from_utf8_lossy(&unit_line("cancel", "foofYJxjNzy", None)),
            "{\"command\":\"work\",\"subcommand\":\"cancel\",\"unitid\":\"foofYJxjNzy\"}\n"
        );
        assert_eq!(
            String::from_utf8_lossy(&unit_line("release", "u", Some("s"))),
            "{\"command\":\"work\",\"signature\":\"s\",\"subcommand\":\"release\",\"unitid\":\"u\"}\n"
        );
        assert_eq!(status_line("u1"), b"work status u1\n");
    }

    #[test]
    fn created_line() {
        let line = "Work unit created with ID fooOrpRQdfT. Send stdin data and EOF.\n";
        assert_eq!(
            created_unit_id(line, "fooOrpRQdfT").as_deref(),
            Some("fooOrpRQdfT")
        );
        assert_eq!(
            created_unit_id(line, "other").as_deref(),
            Some("fooOrpRQdfT")
        );
        let line = "Work unit created with ID my.unit-1. Send stdin data and EOF.\n";
        assert_eq!(
            created_unit_id(line, "my.unit-1").as_deref(),
            Some("my.unit-1")
        );
        assert_eq!(created_unit_id("ERROR: unknown work type x\n", "u"), None);
        assert_eq!(created_unit_id("with ID .", "u"), None);
    }

    #[test]
    fn status_replies() {
        assert_eq!(
            parse_status("{\"Detail\":\"Running: PID 7597\",\"ExtraData\":{\"Pid\":7589,\"Params\":\"300\"},\"State\":1,\"StateName\":\"Running\",\"StdoutSize\":12,\"WorkType\":\"sleeper\"}\n"),
            StatusReply::Status(RemoteStatus { state: 1, detail: "Running: PID 7597".to_owned(), stdout_size: 12 })
        );
        assert_eq!(
            parse_status("ERROR: unknown work unit foo1\n"),
            StatusReply::Gone
        );
        assert_eq!(
            parse_status("ERROR: boom\n"),
            StatusReply::Error("boom".to_owned())
        );
        assert!(matches!(
            parse_status("{\"State\":\"x\"}"),
            StatusReply::Error(_)
        ));
        assert!(matches!(parse_status("garbage"), StatusReply::Error(_)));
    }
}
