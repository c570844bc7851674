//! Session, dispatcher and transport tests: real sessions over in-memory duplex
//! streams, unix sockets and TCP, with test commands registered in the table.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::command::{Args, ControlCommand, ControlConn, PeerKind, Reply};
use super::reload::{ReloadCommand, ReloadFailure, ReloadFn, ERRORCODE_NOT_RELOADABLE};
use super::session::MAX_LINE;
use super::{CommandRegistry, ControlService, ListenAddr};

const DEADLINE: Duration = Duration::from_secs(10);

/// `echo`: replies with its arguments as JSON.
struct Echo;

#[async_trait]
impl ControlCommand for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    async fn run(&self, args: Args, _conn: &mut ControlConn) -> Result<Reply, String> {
        Ok(Reply::Json(match args {
            Args::Text(text) => json!({"text": text}),
            Args::Json(map) => json!({"json": Value::Object(map)}),
        }))
    }
}

/// `take <n>`: reads exactly n raw bytes from the connection and replies with them.
struct Take;

#[async_trait]
impl ControlCommand for Take {
    fn name(&self) -> &'static str {
        "take"
    }

    async fn run(&self, args: Args, conn: &mut ControlConn) -> Result<Reply, String> {
        let Args::Text(n) = args else {
            return Err("text only".to_owned());
        };
        let n: usize = n.parse().map_err(|_| "bad count".to_owned())?;
        let mut buf = vec![0; n];
        conn.reader
            .read_exact(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Reply::Json(json!({"got": String::from_utf8_lossy(&buf)})))
    }
}

/// `fail`: an error whose message spans lines.
struct Fail;

#[async_trait]
impl ControlCommand for Fail {
    fn name(&self) -> &'static str {
        "fail"
    }

    async fn run(&self, _args: Args, _conn: &mut ControlConn) -> Result<Reply, String> {
        Err("first\nsecond".to_owned())
    }
}

/// `bye`: writes its own line and closes the session.
struct Bye;

#[async_trait]
impl ControlCommand for Bye {
    fn name(&self) -> &'static str {
        "bye"
    }

    async fn run(&self, _args: Args, conn: &mut ControlConn) -> Result<Reply, String> {
        conn.writer
            .write_all(b"bye\n")
            .await
            .map_err(|e| e.to_string())?;
        Ok(Reply::Close)
    }
}

/// `raw`: a pre-encoded reply, and `peer`: the transport kind.
struct Raw;

#[async_trait]
impl ControlCommand for Raw {
    fn name(&self) -> &'static str {
        "raw"
    }

    async fn run(&self, _args: Args, conn: &mut ControlConn) -> Result<Reply, String> {
        let peer = match &conn.peer {
            PeerKind::Unix => "unix".to_owned(),
            PeerKind::Tcp => "tcp".to_owned(),
            PeerKind::Mesh { node } => format!("mesh:{node}"),
        };
        Ok(Reply::Encoded(format!(r#"{{"z":1,"a":"{peer}"}}"#)))
    }
}

fn service_with(extra: Vec<Arc<dyn ControlCommand>>) -> ControlService {
    let registry = CommandRegistry::new();
    let commands: Vec<Arc<dyn ControlCommand>> = vec![
        Arc::new(Echo),
        Arc::new(Take),
        Arc::new(Fail),
        Arc::new(Bye),
        Arc::new(Raw),
    ];
    for command in commands.into_iter().chain(extra) {
        assert!(registry.register(command).is_ok());
    }
    ControlService::new("foo", registry)
}

fn service() -> ControlService {
    service_with(Vec::new())
}

/// The client end of a session.
struct Client<S> {
    reader: BufReader<tokio::io::ReadHalf<S>>,
    writer: tokio::io::WriteHalf<S>,
}

impl<S: AsyncRead + AsyncWrite> Client<S> {
    fn new(io: S) -> Self {
        let (read, write) = tokio::io::split(io);
        Client {
            reader: BufReader::new(read),
            writer: write,
        }
    }

    /// A client on `io` whose first line is the node's greeting.
    async fn greeted(io: S) -> Self {
        let mut client = Self::new(io);
        client.expect(&["Receptor Control, node foo"]).await;
        client
    }

    /// Next line without its `\n`; `None` at EOF.
    async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(DEADLINE, self.reader.read_line(&mut line))
            .await
            .expect("reply within the deadline")
            .expect("read");
        if n == 0 {
            return None;
        }
        assert!(line.ends_with('\n'), "unterminated line {line:?}");
        line.pop();
        Some(line)
    }

    /// Asserts that the next lines are `expected`, in order.
    async fn expect(&mut self, expected: &[&str]) {
        for (i, want) in expected.iter().enumerate() {
            assert_eq!(self.line().await.as_deref(), Some(*want), "line {i}");
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    async fn eof(&mut self) {
        self.writer.shutdown().await.expect("shutdown");
    }
}

/// Starts a session on an in-memory stream; returns the client after the greeting.
async fn session(service: &ControlService) -> Client<tokio::io::DuplexStream> {
    let (client, server) = tokio::io::duplex(1 << 16);
    let service = service.clone();
    tokio::spawn(async move { service.serve_stream(server, PeerKind::Tcp).await });
    Client::greeted(client).await
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let mut c = session(&service()).await;
    c.send(b"echo a b\n{\"command\":\"echo\",\"x\":\"<&>\"}\nnosuch\nECHO  two\n")
        .await;
    c.expect(&[
        r#"{"text":"a b"}"#,
        r#"{"json":{"command":"echo","x":"\u003c\u0026\u003e"}}"#,
        "ERROR: Unknown command, nosuch",
        r#"{"text":" two"}"#,
    ])
    .await;
    c.eof().await;
    assert_eq!(c.line().await, None);
}

#[tokio::test]
async fn carriage_returns_and_empty_lines() {
    let mut c = session(&service()).await;
    c.send(b"\n\r\n\r\rec\rho x\r\n\n").await;
    c.send(b"echo y\n").await;
    c.expect(&[r#"{"text":"x"}"#, r#"{"text":"y"}"#]).await;
}

#[tokio::test]
async fn partial_last_line_runs_at_eof() {
    let mut c = session(&service()).await;
    c.send(b"echo one\n{\"command\":\"echo\"}").await;
    c.eof().await;
    c.expect(&[r#"{"text":"one"}"#, r#"{"json":{"command":"echo"}}"#])
        .await;
    assert_eq!(c.line().await, None);
}

#[tokio::test]
async fn eof_right_after_greeting_ends_the_session() {
    let mut c = session(&service()).await;
    c.eof().await;
    assert_eq!(c.line().await, None);
}

#[tokio::test]
async fn malformed_json_gets_exactly_one_error_line() {
    let mut c = session(&service()).await;
    c.send(
        b"{\"command\":\n{\"x\":1}\n{\"command\":5}\n{\"command\":\"echo\"} trailing\necho after\n",
    )
    .await;
    c.expect(&[
        "ERROR: unexpected end of JSON input",
        "ERROR: JSON did not contain a command",
        "ERROR: command must be a string",
        "ERROR: invalid character 't' after top-level value",
        r#"{"text":"after"}"#,
    ])
    .await;
}

#[tokio::test]
async fn unknown_commands() {
    let mut c = session(&service()).await;
    c.send(b" echo\n{\"command\":\"ECHO\"}\n{\"command\":\"\"}\nst\xffatus\n")
        .await;
    c.expect(&[
        "ERROR: Unknown command, ",
        "ERROR: Unknown command, ECHO",
        "ERROR: Unknown command, ",
        "ERROR: Unknown command, st\u{fffd}atus",
    ])
    .await;
}

#[tokio::test]
async fn error_replies_stay_on_one_line() {
    let mut c = session(&service()).await;
    c.send(b"fail\n{\"command\":\"a\\nb\"}\necho ok\n").await;
    c.expect(&[
        "ERROR: first second",
        "ERROR: Unknown command, a b",
        r#"{"text":"ok"}"#,
    ])
    .await;
}

#[tokio::test]
async fn bytes_after_the_command_line_reach_the_command() {
    let mut c = session(&service()).await;
    // Command, payload and the next command in one write.
    c.send(b"take 7\nab\ncd\nXecho after\n").await;
    c.expect(&[r#"{"got":"ab\ncd\nX"}"#, r#"{"text":"after"}"#])
        .await;
    // Payload arriving after the command line, in pieces.
    c.send(b"take 4\n").await;
    c.send(b"12").await;
    c.send(b"34echo z\n").await;
    c.expect(&[r#"{"got":"1234"}"#, r#"{"text":"z"}"#]).await;
}

#[tokio::test]
async fn close_reply_ends_the_session() {
    let mut c = session(&service()).await;
    c.send(b"bye\necho never\n").await;
    c.expect(&["bye"]).await;
    assert_eq!(c.line().await, None);
}

#[tokio::test]
async fn encoded_replies_are_written_verbatim() {
    let mut c = session(&service()).await;
    c.send(b"raw\n").await;
    c.expect(&[r#"{"z":1,"a":"tcp"}"#]).await;
}

#[tokio::test]
async fn overlong_line_is_refused_and_the_session_goes_on() {
    let c = session(&service()).await;
    let Client {
        mut reader,
        mut writer,
    } = c;
    let write = async {
        let long = vec![b'x'; MAX_LINE + 1];
        writer.write_all(&long).await.expect("write");
        writer.write_all(b"\necho ok\n").await.expect("write");
    };
    let mut first = String::new();
    let (_, read) = tokio::join!(write, reader.read_line(&mut first));
    assert!(read.is_ok());
    assert_eq!(
        first,
        format!("ERROR: command line longer than {MAX_LINE} bytes\n")
    );
    let mut second = String::new();
    assert!(reader.read_line(&mut second).await.is_ok());
    assert_eq!(second, "{\"text\":\"ok\"}\n");
}

#[tokio::test]
async fn commands_registered_later_are_served() {
    let service = service();
    let mut c = session(&service).await;
    c.send(b"reload\n").await;
    c.expect(&["ERROR: Unknown command, reload"]).await;
    assert!(service
        .registry()
        .register(Arc::new(ReloadCommand::new(None)))
        .is_ok());
    c.send(b"reload\n").await;
    c.expect(&[r#"{"Error":"no configuration file was provided, reload function not set ERRORCODE 4","Success":false}"#]).await;
    assert!(service.registry().register(Arc::new(Echo)).is_err());
}

#[tokio::test]
async fn reload_runs_the_callback_and_reports_its_outcome() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let reload: ReloadFn = Arc::new(move || {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            if n == 0 {
                Ok(())
            } else {
                Err(ReloadFailure::new(
                    ERRORCODE_NOT_RELOADABLE,
                    "a non-reloadable config action 'work-command' was modified or added. Must restart receptor for these changes to take effect",
                ))
            }
        })
    });
    let service = service_with(vec![Arc::new(ReloadCommand::new(Some(reload)))]);
    let mut c = session(&service).await;
    c.send(b"reload ignored args\n{\"command\":\"reload\"}\n")
        .await;
    c.expect(&[r#"{"Success":true}"#, r#"{"Error":"a non-reloadable config action 'work-command' was modified or added. Must restart receptor for these changes to take effect ERRORCODE 3","Success":false}"#]).await;
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0)
}

#[tokio::test]
async fn unix_socket_session_with_permissions_and_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ctl.sock");
    let service = service();
    let listener = service.serve_unix(&path, 0o660).await.expect("listen");
    assert_eq!(listener.local_addr(), &ListenAddr::Unix(path.clone()));
    assert_eq!(mode(&path), 0o660);
    let lock = dir.path().join("ctl.sock.lock");
    assert_eq!(mode(&lock), 0o600);
    assert_eq!(std::fs::metadata(&lock).map(|m| m.len()).ok(), Some(0));

    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let mut c = Client::greeted(stream).await;
    c.send(b"raw\n").await;
    c.expect(&[r#"{"z":1,"a":"unix"}"#]).await;
    c.eof().await;
    assert_eq!(c.line().await, None);

    // A second node on the same path is refused and leaves the first one alone.
    let err = service
        .serve_unix(&path, 0o600)
        .await
        .expect_err("second listener must fail");
    assert_eq!(
        err.to_string(),
        "error opening Unix socket: could not acquire lock on socket file: fslock is already locked"
    );
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let _c = Client::greeted(stream).await;

    // Closing removes the socket, keeps the lock file and frees the path.
    listener.close().await;
    assert!(!path.exists());
    assert!(lock.exists());
    let again = service.serve_unix(&path, 0o600).await.expect("relisten");
    assert_eq!(mode(&path), 0o600);
    drop(again);
}

#[tokio::test]
async fn stale_unix_socket_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stale.sock");
    // A socket file left behind by a process that is gone.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists());
    assert!(std::os::unix::net::UnixStream::connect(&path).is_err());

    let listener = service().serve_unix(&path, 0o600).await.expect("listen");
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let _c = Client::greeted(stream).await;
    drop(listener);
}

#[tokio::test]
async fn unix_socket_errors_name_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("missing").join("ctl.sock");
    let err = service()
        .serve_unix(&path, 0o600)
        .await
        .expect_err("no such directory");
    assert_eq!(
        err.to_string(),
        "error opening Unix socket: could not acquire lock on socket file: no such file or directory"
    );
}

#[tokio::test]
async fn tcp_listener_serves_sessions() {
    assert_eq!(super::listener::tcp_listen_addr("2222"), "0.0.0.0:2222");
    assert_eq!(
        super::listener::tcp_listen_addr("127.0.0.1:2222"),
        "127.0.0.1:2222"
    );
    let service = service();
    let listener = service.serve_tcp("127.0.0.1:0").await.expect("listen");
    let ListenAddr::Tcp(addr) = listener.local_addr().clone() else {
        panic!("not tcp")
    };
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut c = Client::greeted(stream).await;
    c.send(b"raw\necho x").await;
    c.eof().await;
    c.expect(&[r#"{"z":1,"a":"tcp"}"#, r#"{"text":"x"}"#]).await;
    assert_eq!(c.line().await, None);

    // The port is taken while the listener runs.
    let err = service
        .serve_tcp(&addr.to_string())
        .await
        .expect_err("port in use");
    assert!(
        err.to_string().starts_with(&format!(
            "error listening on TCP socket: listen tcp {addr}: bind: address"
        )),
        "{err}"
    );
    listener.close().await;
}

/// A self-signed certificate for `localhost`: the server's rustls configuration and a
/// client configuration that trusts it.
fn tls_pair() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

#[tokio::test]
async fn tls_listener_serves_sessions_and_survives_bad_handshakes() {
    let (server_tls, client_tls) = tls_pair();
    let service = service();
    let listener = service
        .serve_tcp_tls("127.0.0.1:0", server_tls)
        .await
        .expect("listen");
    let ListenAddr::Tcp(addr) = listener.local_addr().clone() else {
        panic!("not tcp")
    };

    // A plaintext client gets no greeting: the connection ends in the failed handshake.
    let plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut plain = Client::new(plain);
    plain.send(b"status\n").await;
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, plain.reader.read_to_end(&mut rest))
        .await
        .expect("closed within the deadline")
        .ok();
    assert!(
        !String::from_utf8_lossy(&rest).contains("Receptor Control"),
        "plaintext client was served: {rest:?}"
    );

    // The listener keeps serving TLS clients.
    let connector = tokio_rustls::TlsConnector::from(client_tls);
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let stream = tokio::time::timeout(DEADLINE, connector.connect(name, tcp))
            .await
            .expect("handshake within the deadline")
            .expect("handshake");
        let mut c = Client::greeted(stream).await;
        c.send(b"raw\necho x\n").await;
        c.expect(&[r#"{"z":1,"a":"tcp"}"#, r#"{"text":"x"}"#]).await;
    }
    listener.close().await;
}
