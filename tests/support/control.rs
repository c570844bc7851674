//! A raw client for receptor's control protocol: the node greets with
//! `Receptor Control, node <id>`, then each command is one line and most replies are one line
//! (JSON, or `ERROR: ...`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// How long a single read may block before the client gives up. Ping and traceroute wait up
/// to 10 s on the node, so this stays above that.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// The greeting's prefix; the node id follows.
pub const GREETING_PREFIX: &str = "Receptor Control, node ";

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> std::io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    fn shutdown(&self, how: Shutdown) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        }
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(timeout),
            Stream::Tcp(s) => s.set_read_timeout(timeout),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// One control connection, after the greeting was read.
pub struct ControlClient {
    reader: BufReader<Stream>,
    writer: Stream,
    node_id: String,
}

impl ControlClient {
    /// Connects to a unix control socket and reads the greeting.
    pub fn connect(socket: &Path) -> Result<ControlClient> {
        let stream = UnixStream::connect(socket)
            .with_context(|| format!("connecting to {}", socket.display()))?;
        Self::handshake(Stream::Unix(stream))
    }

    /// Connects to a TCP control listener (`tcplisten`) and reads the greeting.
    pub fn connect_tcp(addr: &str) -> Result<ControlClient> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        Self::handshake(Stream::Tcp(stream))
    }

    fn handshake(stream: Stream) -> Result<ControlClient> {
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        let writer = stream.try_clone()?;
        let mut client = ControlClient {
            reader: BufReader::new(stream),
            writer,
            node_id: String::new(),
        };
        let greeting = client.read_line().context("reading the greeting")?;
        let Some(id) = greeting.strip_prefix(GREETING_PREFIX) else {
            bail!("unexpected greeting {greeting:?}");
        };
        client.node_id = id.to_string();
        Ok(client)
    }

    /// The node id from the greeting.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Sends raw bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer
            .write_all(bytes)
            .context("writing to the control socket")?;
        self.writer.flush()?;
        Ok(())
    }

    /// Sends `line` followed by `\n`.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        self.send_raw(format!("{line}\n").as_bytes())
    }

    /// Reads one line, without its `\n`. End of stream before a newline is an error.
    pub fn read_line(&mut self) -> Result<String> {
        let mut buf = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut buf)
            .context("reading from the control socket")?;
        if n == 0 || buf.last() != Some(&b'\n') {
            bail!(
                "connection closed before a full line (got {:?})",
                String::from_utf8_lossy(&buf)
            );
        }
        buf.pop();
        String::from_utf8(buf).context("reply is not UTF-8")
    }

    /// Sends a command line and returns the one-line reply as it is (`ERROR: ...` included).
    pub fn command(&mut self, line: &str) -> Result<String> {
        self.send_line(line)?;
        self.read_line()
    }

    /// Sends a command line and parses the reply as JSON; an `ERROR: ...` reply is an error.
    pub fn command_json(&mut self, line: &str) -> Result<Value> {
        let reply = self.command(line)?;
        if reply.starts_with("ERROR") {
            bail!("{line:?} failed: {reply}");
        }
        serde_json::from_str(&reply)
            .with_context(|| format!("reply to {line:?} is not JSON: {reply:?}"))
    }

    /// Half-closes the connection (no more commands; replies can still be read).
    pub fn shutdown_write(&mut self) -> Result<()> {
        self.writer
            .shutdown(Shutdown::Write)
            .context("half-closing the control connection")
    }

    /// Reads everything until the node closes the connection.
    pub fn read_to_end(&mut self) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.reader
            .read_to_end(&mut buf)
            .context("reading to end of stream")?;
        Ok(buf)
    }
}
