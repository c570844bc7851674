//! One control session: greeting, then command lines until the client is done.
//!
//! The protocol (Go receptor 1.6.9's `RunControlSession`):
//!
//! * the server greets with `Receptor Control, node <id>\n`;
//! * the client sends lines; `\r` bytes are dropped wherever they are, empty lines are
//!   ignored, and a last line without `\n` before EOF is still executed;
//! * a line starting with `{` is a JSON object whose string `command` names the
//!   command (case-sensitive); any other line is `<command> <params>`, split at the
//!   first space, with the command word lower-cased and the params kept verbatim;
//! * every command gets exactly one reply line, `ERROR: <message>` or one compact
//!   JSON object, unless it streams its own output (`work submit`, `work results`,
//!   `connect`);
//! * the session ends at EOF on a command boundary, on a read or write error, or when
//!   a command closes it.
//!
//! Two Go bugs are not reproduced: a malformed JSON line gets one error line (Go sends
//! a second `ERROR: Unknown command, `), and lines are bounded in length and in time
//! ([`ControlLimits::max_line`], [`ControlLimits::line_timeout`]) so a client cannot make
//! the node buffer without limit or hold a half-sent command for ever.
//!
//! Lines are read through a `BufReader`, never past what the command may need: bytes
//! after a command line stay in the reader's buffer, where the command (a `work submit`
//! payload) or the next iteration finds them.

use std::io;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;

use super::command::{Args, BoxRead, BoxWrite, ControlConn, Reply};
use super::limits::ControlLimits;
use super::registry::CommandRegistry;
use receptor_proto::go::json_decode;

/// Longest command line accepted by default (bytes, `\r` excluded): see
/// [`ControlLimits::max_line`]. Longer lines are discarded up to their newline and
/// answered with one error line.
pub const MAX_LINE: usize = super::limits::DEFAULT_MAX_LINE;

/// Capacity of the line buffer kept between commands.
const KEPT_LINE_CAPACITY: usize = 64 * 1024;

/// How long the last error line of a session may take to reach a client that does not
/// read.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(5);

/// How reading a line ended.
#[derive(Debug, PartialEq, Eq)]
enum LineEnd {
    /// A `\n` was read.
    Newline,
    /// The peer closed its side; the line holds whatever came before.
    Eof,
    /// The line exceeded the maximum length and was discarded; `eof` if the stream ended.
    TooLong {
        /// The stream ended before the newline.
        eof: bool,
    },
    /// The line was begun but not finished within the line timeout.
    TimedOut,
    /// No line was begun within the idle timeout.
    Idle,
}

/// Reads one line into `line` (cleared first), dropping `\r` bytes and consuming the
/// `\n`, without consuming anything after it. The wait for the line's first byte is
/// bounded by `limits.idle_timeout` (if set), the rest of the line by
/// `limits.line_timeout` from that byte on.
async fn read_line(
    reader: &mut BufReader<BoxRead>,
    line: &mut Vec<u8>,
    limits: &ControlLimits,
) -> io::Result<LineEnd> {
    line.clear();
    if line.capacity() > KEPT_LINE_CAPACITY {
        // Don't hold a long line's buffer while the session idles.
        *line = Vec::new();
    }
    let mut too_long = false;
    // Set when the line's first byte is seen.
    let mut line_deadline: Option<Instant> = None;
    let idle_deadline = limits.idle_timeout.map(|t| Instant::now() + t);
    loop {
        let deadline = line_deadline.or(idle_deadline);
        let chunk = match deadline {
            Some(at) => match tokio::time::timeout_at(at, reader.fill_buf()).await {
                Ok(chunk) => chunk?,
                Err(_) if line_deadline.is_some() => return Ok(LineEnd::TimedOut),
                Err(_) => return Ok(LineEnd::Idle),
            },
            None => reader.fill_buf().await?,
        };
        if chunk.is_empty() {
            return Ok(if too_long {
                LineEnd::TooLong { eof: true }
            } else {
                LineEnd::Eof
            });
        }
        if line_deadline.is_none() {
            line_deadline = Some(Instant::now() + limits.line_timeout);
        }
        let newline = chunk.iter().position(|&b| b == b'\n');
        let body = &chunk[..newline.unwrap_or(chunk.len())];
        if !too_long {
            line.extend(body.iter().copied().filter(|&b| b != b'\r'));
            if line.len() > limits.max_line {
                too_long = true;
                line.clear();
                line.shrink_to(0);
            }
        }
        let used = body.len() + usize::from(newline.is_some());
        reader.consume(used);
        if newline.is_some() {
            return Ok(if too_long {
                LineEnd::TooLong { eof: false }
            } else {
                LineEnd::Newline
            });
        }
    }
}

/// A parsed command line.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// The command word (lower-cased in the string form).
    pub name: String,
    /// Its parameters.
    pub args: Args,
}

/// Parses one non-empty command line; `Err` is the message for the `ERROR:` reply.
pub(crate) fn parse_line(line: &[u8]) -> Result<Parsed, String> {
    if line.first() == Some(&b'{') {
        return parse_json(line);
    }
    let text = json_decode::go_lossy(line);
    let (word, params) = text.split_once(' ').unwrap_or((&text, ""));
    Ok(Parsed {
        name: word.to_lowercase(),
        args: Args::Text(params.to_owned()),
    })
}

fn parse_json(line: &[u8]) -> Result<Parsed, String> {
    let map = json_decode::parse_object(line).map_err(|e| e.to_string())?;
    let name = match map.get("command") {
        None => return Err("JSON did not contain a command".to_owned()),
        Some(Value::String(name)) => name.clone(),
        Some(_) => return Err("command must be a string".to_owned()),
    };
    Ok(Parsed {
        name,
        args: Args::Json(map),
    })
}

/// Whether the session goes on after a command.
enum Next {
    Continue,
    End,
}

/// Runs a session to its end on `conn`, greeting with `greeting` (a full line).
pub(crate) async fn run(greeting: &[u8], registry: &CommandRegistry, mut conn: ControlConn) {
    tracing::debug!(peer = ?conn.peer, "client connected to control service");
    let counters = crate::metrics::node();
    counters.control_connections_total.inc();
    let _open = counters.control_connections.hold();
    if write_raw(&mut conn.writer, greeting).await.is_ok() {
        command_loop(registry, &mut conn).await;
    }
    let _ = conn.writer.shutdown().await;
    tracing::debug!(peer = ?conn.peer, "client disconnected from control service");
}

async fn command_loop(registry: &CommandRegistry, conn: &mut ControlConn) {
    let limits = conn.limits;
    let mut line = Vec::new();
    loop {
        let eof = match read_line(&mut conn.reader, &mut line, &limits).await {
            Ok(LineEnd::Newline) => false,
            Ok(LineEnd::Eof) => true,
            Ok(LineEnd::TooLong { eof }) => {
                let msg = format!("command line longer than {} bytes", limits.max_line);
                if write_error(&mut conn.writer, &msg).await.is_err() || eof {
                    return;
                }
                continue;
            }
            Ok(LineEnd::TimedOut) => {
                let msg = format!(
                    "command line not complete within {:?} (control-limits linetimeout), closing",
                    limits.line_timeout
                );
                tracing::debug!(peer = ?conn.peer, "{msg}");
                farewell(&mut conn.writer, &msg).await;
                return;
            }
            Ok(LineEnd::Idle) => {
                let msg = format!(
                    "no command within {:?} (control-limits idletimeout), closing",
                    limits.idle_timeout.unwrap_or_default()
                );
                tracing::debug!(peer = ?conn.peer, "{msg}");
                farewell(&mut conn.writer, &msg).await;
                return;
            }
            Err(e) => {
                tracing::debug!(peer = ?conn.peer, "control session read error: {e}");
                return;
            }
        };
        if !line.is_empty() {
            match execute(registry, &line, conn).await {
                Ok(Next::Continue) => {}
                Ok(Next::End) => return,
                Err(e) => {
                    tracing::debug!(peer = ?conn.peer, "control session write error: {e}");
                    return;
                }
            }
        }
        if eof {
            return;
        }
    }
}

/// Parses, looks up and runs one command line, then writes its reply.
async fn execute(
    registry: &CommandRegistry,
    line: &[u8],
    conn: &mut ControlConn,
) -> io::Result<Next> {
    let parsed = match parse_line(line) {
        Ok(parsed) => parsed,
        Err(msg) => {
            write_error(&mut conn.writer, &msg).await?;
            return Ok(Next::Continue);
        }
    };
    let Some(command) = registry.get(&parsed.name) else {
        let msg = format!("Unknown command, {}", parsed.name);
        write_error(&mut conn.writer, &msg).await?;
        return Ok(Next::Continue);
    };
    match command.run(parsed.args, conn).await {
        Err(msg) => write_error(&mut conn.writer, &msg).await?,
        Ok(Reply::Json(value)) => match receptor_proto::gojson::to_vec(&value) {
            Ok(bytes) => write_line(&mut conn.writer, bytes).await?,
            Err(e) => {
                let msg = format!("could not convert response to JSON: {e}");
                write_error(&mut conn.writer, &msg).await?;
            }
        },
        Ok(Reply::Encoded(text)) => write_line(&mut conn.writer, text.into_bytes()).await?,
        Ok(Reply::Done) => {}
        Ok(Reply::Close) => return Ok(Next::End),
    }
    Ok(Next::Continue)
}

/// Writes `ERROR: <msg>\n`. Line breaks inside `msg` become spaces so that the reply
/// stays one line and line-oriented clients stay in step.
pub(crate) async fn write_error(writer: &mut BoxWrite, msg: &str) -> io::Result<()> {
    let mut line = Vec::with_capacity(msg.len() + 8);
    line.extend_from_slice(b"ERROR: ");
    line.extend(msg.bytes().map(|b| if b == b'\n' { b' ' } else { b }));
    write_line(writer, line).await
}

/// Writes a last `ERROR: <msg>` line before the session ends, giving up after
/// [`FAREWELL_TIMEOUT`] on a client that does not read.
pub(crate) async fn farewell(writer: &mut BoxWrite, msg: &str) {
    let _ = tokio::time::timeout(FAREWELL_TIMEOUT, write_error(writer, msg)).await;
}

/// Appends `\n` and writes the line with one write call.
async fn write_line(writer: &mut BoxWrite, mut line: Vec<u8>) -> io::Result<()> {
    line.push(b'\n');
    write_raw(writer, &line).await
}

async fn write_raw(writer: &mut BoxWrite, bytes: &[u8]) -> io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: &str) -> (String, String) {
        match parse_line(line.as_bytes()) {
            Ok(Parsed {
                name,
                args: Args::Text(params),
            }) => (name, params),
            other => panic!("unexpected parse of {line:?}: {other:?}"),
        }
    }

    #[test]
    fn string_form_splits_at_first_space_and_lowercases() {
        assert_eq!(text("status"), ("status".into(), "".into()));
        assert_eq!(text("STATUS bogus"), ("status".into(), "bogus".into()));
        assert_eq!(text("ping   bar"), ("ping".into(), "  bar".into()));
        assert_eq!(
            text("connect bar control "),
            ("connect".into(), "bar control ".into())
        );
        assert_eq!(text(" status"), ("".into(), "status".into()));
        assert_eq!(text("Work Submit X"), ("work".into(), "Submit X".into()));
    }

    #[test]
    fn json_form_keeps_case_and_whole_map() {
        match parse_line(br#"{"command":"STATUS","x":[1]}"#) {
            Ok(Parsed {
                name,
                args: Args::Json(map),
            }) => {
                assert_eq!(name, "STATUS");
                assert_eq!(map.get("command"), Some(&Value::from("STATUS")));
                assert_eq!(map.len(), 2);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn json_errors_use_go_messages() {
        let err = |s: &[u8]| parse_line(s).err().unwrap_or_default();
        assert_eq!(err(br#"{"command":"#), "unexpected end of JSON input");
        assert_eq!(err(br#"{"x":1}"#), "JSON did not contain a command");
        assert_eq!(err(br#"{"command":5}"#), "command must be a string");
        assert_eq!(err(br#"{"command":null}"#), "command must be a string");
        assert_eq!(
            err(br#"{"command":"status"} trailing"#),
            "invalid character 't' after top-level value"
        );
    }

    #[test]
    fn json_with_invalid_utf8_is_accepted() {
        match parse_line(b"{\"command\":\"st\xffatus\"}") {
            Ok(parsed) => assert_eq!(parsed.name, "st\u{fffd}atus"),
            Err(e) => panic!("{e}"),
        }
    }

    async fn lines(input: &[u8], max: usize) -> Vec<(Vec<u8>, LineEnd)> {
        let reader: BoxRead = Box::pin(std::io::Cursor::new(input.to_vec()));
        let mut reader = BufReader::with_capacity(4, reader);
        let mut out = Vec::new();
        let mut line = Vec::new();
        loop {
            let limits = ControlLimits {
                max_line: max,
                ..ControlLimits::default()
            };
            let end = read_line(&mut reader, &mut line, &limits).await;
            let end = match end {
                Ok(end) => end,
                Err(e) => panic!("{e}"),
            };
            let done = !matches!(end, LineEnd::Newline | LineEnd::TooLong { eof: false });
            out.push((line.clone(), end));
            if done {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn line_reader_drops_cr_and_bounds_length() {
        let got = lines(b"st\ratus\r\n\nabcdefghij\nxy", 8).await;
        assert_eq!(
            got,
            vec![
                (b"status".to_vec(), LineEnd::Newline),
                (b"".to_vec(), LineEnd::Newline),
                (b"".to_vec(), LineEnd::TooLong { eof: false }),
                (b"xy".to_vec(), LineEnd::Eof),
            ]
        );
        let got = lines(b"0123456789", 8).await;
        assert_eq!(got, vec![(b"".to_vec(), LineEnd::TooLong { eof: true })]);
        // Exactly at the limit is fine, `\r` does not count.
        let got = lines(b"0123\r\r\r4567\n", 8).await;
        assert_eq!(got[0], (b"01234567".to_vec(), LineEnd::Newline));
    }
}
