//! The `websocket` plugin loaded by the real plugin host: sessions both ways, large and
//! fragmented messages, pings, refusals that leave other sessions alone, wss with a
//! private CA, redial, and the bytes the reference Go receptor 1.6.9 exchanges with it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use receptor_core::mesh::Framing;
use receptor_core::plugin_host::{BackendConnection, BackendInstance, PluginHost};
use receptor_tests::plugin_host::{
    assert_route_from, free_tcp_port, is_route_from, next_conn, recv_msg, send_msg, socket_type,
    wait_tcp, GoNode, WAIT,
};
use serde_json::{json, Value};

fn ws_host() -> PluginHost {
    receptor_tests::plugin_host::host(&[receptor_tests::plugin_host::cdylib(
        "receptor-plugin-websocket",
        "receptor_websocket",
    )])
}

fn start(host: &PluginHost, kind: &str, config: Value) -> BackendInstance {
    host.start_backend(kind, &config)
        .unwrap_or_else(|e| panic!("start {kind}: {e}"))
}

/// Sends `msg` one way and checks it arrives whole.
fn carries(from: &BackendConnection, to: &BackendConnection, msg: &[u8]) {
    send_msg(&from.fd, msg);
    let got = recv_msg(&to.fd, WAIT).expect("the message in time");
    assert_eq!(got.len(), msg.len());
    assert!(got == msg, "message changed on the way");
}

/// A listener and a dialer of this plugin, and their two ends of the session.
async fn ws_pair(
    host: &PluginHost,
    path: &str,
) -> (
    BackendInstance,
    BackendInstance,
    BackendConnection,
    BackendConnection,
) {
    let port = free_tcp_port();
    let mut lis = start(
        host,
        "ws-listener",
        json!({"bindaddr": "127.0.0.1", "port": port.to_string(), "path": path, "cost": 2}),
    );
    let mut dial = start(
        host,
        "ws-peer",
        json!({"address": format!("ws://127.0.0.1:{port}{path}"), "redial": "true"}),
    );
    let out = next_conn(&mut dial, WAIT).await;
    let inc = next_conn(&mut lis, WAIT).await;
    (lis, dial, out, inc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_and_peer_carry_binary_messages_both_ways() {
    let host = ws_host();
    let (mut lis, _dial, out, inc) = ws_pair(&host, "/netceptor").await;
    assert_eq!((out.framing, out.inbound), (Framing::Datagram, false));
    assert_eq!((inc.framing, inc.inbound), (Framing::Datagram, true));
    assert_eq!(socket_type(&out.fd), libc::SOCK_SEQPACKET);
    assert_eq!(socket_type(&inc.fd), libc::SOCK_SEQPACKET);
    assert!(out.peer.starts_with("ws://127.0.0.1:"), "{}", out.peer);
    assert!(inc.peer.starts_with("127.0.0.1:"), "{}", inc.peer);

    carries(&out, &inc, b"\x01{\"hello\":1}");
    carries(&inc, &out, b"\x01{\"back\":2}");
    let big: Vec<u8> = (0..60000u32).map(|i| (i % 251) as u8).collect();
    carries(&out, &inc, &big);
    carries(&inc, &out, &big);
    let max = vec![0x5au8; 65535];
    carries(&out, &inc, &max);
    carries(&inc, &out, &max);

    // A burst keeps order and boundaries.
    for i in 0..200u32 {
        send_msg(
            &out.fd,
            &vec![(i % 256) as u8; 1 + (i as usize * 37) % 3000],
        );
    }
    for i in 0..200u32 {
        let got = recv_msg(&inc.fd, WAIT).expect("burst message");
        assert_eq!(got, vec![(i % 256) as u8; 1 + (i as usize * 37) % 3000]);
    }

    // The node ending one side ends the other.
    drop(out);
    assert_eq!(recv_msg(&inc.fd, WAIT), Some(Vec::new()), "end of session");
    assert!(lis.connections.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_redials_after_the_session_closed() {
    let host = ws_host();
    let (mut lis, mut dial, out, inc) = ws_pair(&host, "/").await;
    let token = out.token;
    drop(inc);
    assert_eq!(recv_msg(&out.fd, WAIT), Some(Vec::new()), "end of session");
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), dial.connections.recv())
            .await
            .is_err(),
        "the dialer must wait for session_closed"
    );
    let closed_at = Instant::now();
    dial.handle.session_closed(token);
    let again = next_conn(&mut dial, Duration::from_secs(15)).await;
    let waited = closed_at.elapsed();
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_secs(10),
        "redial after {waited:?}, receptor waits 5 s"
    );
    let inc2 = next_conn(&mut lis, WAIT).await;
    carries(&again, &inc2, b"again");
}

/// A hand-written websocket client, to send what the plugin's own dialer never would.
struct RawClient {
    s: TcpStream,
}

impl RawClient {
    fn connect(port: u16) -> RawClient {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        RawClient { s }
    }

    /// Sends an upgrade request for `path` with `extra` header lines; returns the head of
    /// the response.
    fn upgrade(port: u16, path: &str, extra: &str) -> (RawClient, String) {
        let mut c = RawClient::connect(port);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        );
        c.s.write_all(req.as_bytes()).expect("write request");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match c.s.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        (c, String::from_utf8_lossy(&head).into_owned())
    }

    /// Writes one masked frame.
    fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&f).expect("write frame");
    }

    /// Reads one (unmasked) frame: opcode and payload; `None` at the end of the stream.
    fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut h = [0u8; 2];
        self.s.read_exact(&mut h).ok()?;
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                self.s.read_exact(&mut l).ok()?;
                u64::from(u16::from_be_bytes(l))
            }
            127 => {
                let mut l = [0u8; 8];
                self.s.read_exact(&mut l).ok()?;
                u64::from_be_bytes(l)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).expect("frame length")];
        self.s.read_exact(&mut payload).ok()?;
        Some((h[0] & 0x0f, payload))
    }

    /// Whether the server closes the connection (after any close frame) in time.
    fn closed_by_server(&mut self) -> bool {
        let mut buf = [0u8; 512];
        let deadline = Instant::now() + WAIT;
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
            if Instant::now() > deadline {
                return false;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_text_frames_are_refused_and_other_sessions_go_on() {
    let host = ws_host();
    let (mut lis, _dial, out, inc) = ws_pair(&host, "/mesh").await;
    let port: u16 = inc_port(&out);

    // Not HTTP at all.
    let mut c = RawClient::connect(port);
    c.s.write_all(b"\x16\x03\x01garbage\r\n\r\n").unwrap();
    assert!(c.closed_by_server(), "garbage must close the connection");

    // HTTP, but not an upgrade.
    let mut c = RawClient::connect(port);
    c.s.write_all(b"GET /mesh HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(c.closed_by_server(), "a plain GET must not be served");

    // Wrong path: 404; foreign origin: 403 (gorilla's default check).
    let (_c, head) = RawClient::upgrade(port, "/other", "");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (_c, head) = RawClient::upgrade(port, "/mesh", "Origin: http://evil.example\r\n");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");

    // A real session that sends a text frame: upgraded, handed over, then closed (1003).
    let origin = format!("Origin: http://127.0.0.1:{port}\r\n");
    let (mut c, head) = RawClient::upgrade(port, "/mesh", &origin);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let texting = next_conn(&mut lis, WAIT).await;
    c.frame(true, 0x1, b"text is not receptor's");
    let (op, payload) = c.read_frame().expect("a close frame");
    assert_eq!(op, 0x8);
    assert_eq!(&payload[..2], &1003u16.to_be_bytes());
    assert!(c.closed_by_server());
    assert_eq!(
        recv_msg(&texting.fd, WAIT),
        Some(Vec::new()),
        "session ended"
    );

    // Pings are answered, fragmented messages arrive whole, empty ones are dropped.
    let (mut c, head) = RawClient::upgrade(port, "/mesh", "");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let raw = next_conn(&mut lis, WAIT).await;
    c.frame(true, 0x9, b"are you there");
    assert_eq!(c.read_frame(), Some((0xa, b"are you there".to_vec())));
    c.frame(true, 0x2, b"");
    c.frame(false, 0x2, b"first half, ");
    c.frame(true, 0x9, b"ping between fragments");
    c.frame(true, 0x0, b"second half");
    assert_eq!(
        recv_msg(&raw.fd, WAIT).as_deref(),
        Some(&b"first half, second half"[..])
    );
    assert_eq!(
        c.read_frame(),
        Some((0xa, b"ping between fragments".to_vec()))
    );
    send_msg(&raw.fd, b"to the raw client");
    assert_eq!(c.read_frame(), Some((0x2, b"to the raw client".to_vec())));
    // Over the size limit: closed with 1009.
    c.frame(true, 0x2, &vec![1u8; 65536]);
    let (op, payload) = c.read_frame().expect("a close frame");
    assert_eq!((op, &payload[..2]), (0x8, &1009u16.to_be_bytes()[..]));
    assert_eq!(recv_msg(&raw.fd, WAIT), Some(Vec::new()), "session ended");

    // The first session never noticed.
    carries(&out, &inc, b"still here");
    carries(&inc, &out, b"still here too");
}

/// The listener's port, read from the dialer's peer URL.
fn inc_port(out: &BackendConnection) -> u16 {
    out.peer
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("port in the peer URL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_sends_the_upgrade_request_gorilla_sends() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let host = ws_host();
    let _dial = start(
        &host,
        "ws-peer",
        json!({"address": format!("ws://127.0.0.1:{port}/netceptor"), "extraheader": "X-Receptor-Test: some:value"}),
    );
    let (mut s, _) = server.accept().unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1);
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /netceptor http/1.1\r\n"), "{head}");
    for line in [
        format!("host: 127.0.0.1:{port}\r\n"),
        format!("origin: http://127.0.0.1:{port}\r\n"),
        "x-receptor-test: some:value\r\n".to_owned(),
        "upgrade: websocket\r\n".to_owned(),
        "sec-websocket-version: 13\r\n".to_owned(),
    ] {
        assert!(head.contains(&line), "{line:?} missing in {head}");
    }
    assert!(!head.contains("sec-websocket-protocol"), "{head}");
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
}

#[test]
fn config_errors_name_the_key() {
    let host = ws_host();
    let cases = [
        // Checked by the node against the plugin's description of the section.
        (
            "ws-listener",
            json!({"bindaddr": "127.0.0.1"}),
            "ws-listener: port (integer) is required",
        ),
        (
            "ws-listener",
            json!({"port": 1, "path": "mesh"}),
            "must start with \"/\"",
        ),
        ("ws-listener", json!({"port": 1, "tls": "srv"}), "\"srv\""),
        ("ws-peer", json!({"address": "127.0.0.1:80"}), "bad address"),
        ("ws-peer", json!({"address": "http://h:1/"}), "ws or wss"),
        (
            "ws-peer",
            json!({"address": "ws://h:1/", "extraheader": "novalue"}),
            "key:value",
        ),
        (
            "ws-peer",
            json!({"address": "ws://h:1/", "colour": 1}),
            "ws-peer: unknown key \"colour\"",
        ),
        (
            "ws-peer",
            json!({"address": "wss://h:1/", "tls": "cli"}),
            "\"cli\"",
        ),
    ];
    for (kind, config, needle) in cases {
        let err = host.start_backend(kind, &config).unwrap_err().to_string();
        // The plugin's own errors name it; the node's checks name the section.
        let named = err.contains("plugin websocket") || err.starts_with(&format!("{kind}: "));
        assert!(named && err.contains(needle), "{kind} {config}: {err}");
    }
}

/// A private CA with a server certificate (localhost, 127.0.0.1) and a client
/// certificate, as PEM files.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    server_der: Vec<u8>,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let dir = tempfile::tempdir().expect("test PKI");
    let write = |name: &str, text: String| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("test PKI");
        p
    };
    let new_ca = |cn: &str| {
        let key = KeyPair::generate().expect("test PKI");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("test PKI");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        (params.self_signed(&key).expect("test PKI"), key)
    };
    let (ca, ca_key) = new_ca("receptor test CA");
    let (other, _) = new_ca("someone else's CA");
    let leaf = |names: Vec<String>, eku| {
        let key = KeyPair::generate().expect("test PKI");
        let mut params = CertificateParams::new(names).expect("test PKI");
        params.extended_key_usages = vec![eku];
        (params.signed_by(&key, &ca, &ca_key).expect("test PKI"), key)
    };
    let (server, server_key) = leaf(
        vec!["localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let (client, client_key) = leaf(vec!["client".into()], ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca: write("ca.pem", ca.pem()),
        other_ca: write("other-ca.pem", other.pem()),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        server_der: server.der().to_vec(),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
        _dir: dir,
    }
}

/// The SHA-256 fingerprint, in hex with colons as receptor's docs write them.
fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_a_private_ca_client_certificates_and_pins() {
    let pki = pki();
    let host = ws_host();
    let port = free_tcp_port();
    let mut lis = start(
        &host,
        "ws-listener",
        json!({"bindaddr": "127.0.0.1", "port": port, "tls": "srv", "tlsconfig": {
            "name": "srv", "cert": path(&pki.server_cert), "key": path(&pki.server_key),
            "requireclientcert": true, "clientcas": path(&pki.ca)}}),
    );
    let client_tls = |extra: Value| {
        let mut cfg = json!({"name": "cli", "cert": path(&pki.client_cert),
            "key": path(&pki.client_key), "rootcas": path(&pki.ca)});
        if let (Some(cfg), Value::Object(extra)) = (cfg.as_object_mut(), extra) {
            cfg.extend(extra);
        }
        cfg
    };
    let mut dial = start(
        &host,
        "ws-peer",
        json!({"address": format!("wss://127.0.0.1:{port}/"), "tls": "cli",
               "tlsconfig": client_tls(json!({"pinnedservercert": [sha256_hex(&pki.server_der)]}))}),
    );
    let out = next_conn(&mut dial, WAIT).await;
    let inc = next_conn(&mut lis, WAIT).await;
    carries(&out, &inc, b"over tls");
    let big = vec![7u8; 60000];
    carries(&inc, &out, &big);

    // Refused: a server certificate from another CA, a wrong pin, no client certificate.
    let refused = [
        client_tls(json!({"rootcas": path(&pki.other_ca)})),
        client_tls(json!({"pinnedservercert": ["00".repeat(32)]})),
        json!({"rootcas": path(&pki.ca)}),
    ];
    for tlsconfig in refused {
        let mut bad = start(
            &host,
            "ws-peer",
            json!({"address": format!("wss://localhost:{port}/"), "tlsconfig": tlsconfig}),
        );
        assert!(
            tokio::time::timeout(Duration::from_secs(3), bad.connections.recv())
                .await
                .is_err(),
            "a dial with {tlsconfig} must fail"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(100), lis.connections.recv())
                .await
                .is_err(),
            "the listener must not hand over a session for {tlsconfig}"
        );
        bad.handle.stop();
    }
    // The session is unharmed.
    carries(&out, &inc, b"still over tls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_ws_listener_sends_its_route_to_our_peer() {
    let port = free_tcp_port();
    let _go = GoNode::start(
        "go",
        &[
            "--ws-listener".into(),
            format!("port={port}"),
            "bindaddr=127.0.0.1".into(),
            "path=/netceptor".into(),
        ],
    );
    wait_tcp(port, WAIT);
    let host = ws_host();
    let mut dial = start(
        &host,
        "ws-peer",
        json!({"address": format!("ws://127.0.0.1:{port}/netceptor")}),
    );
    let out = next_conn(&mut dial, WAIT).await;
    let first = recv_msg(&out.fd, WAIT).expect("Go's first message");
    assert_route_from(&first, "go");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_ws_peer_sends_its_route_to_our_listener() {
    let port = free_tcp_port();
    let host = ws_host();
    let mut lis = start(
        &host,
        "ws-listener",
        json!({"bindaddr": "127.0.0.1", "port": port, "path": "/netceptor"}),
    );
    let mut go = GoNode::start(
        "gopeer",
        &[
            "--ws-peer".into(),
            format!("address=ws://127.0.0.1:{port}/netceptor"),
        ],
    );
    let inc = next_conn(&mut lis, Duration::from_secs(20)).await;
    let first = recv_msg(&inc.fd, WAIT).expect("Go's first message");
    assert_route_from(&first, "gopeer");
    let again = recv_msg(&inc.fd, Duration::from_secs(5)).expect("Go's next ROUTE");
    assert!(is_route_from(&again, "gopeer"));
    assert!(go.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_interoperates_with_go_both_ways() {
    let pki = pki();
    let host = ws_host();

    // Our wss peer to Go's wss listener (Go requires our client certificate).
    let go_port = free_tcp_port();
    let _go_server = GoNode::start(
        "gotls",
        &[
            "--tls-server".into(),
            "name=srv".into(),
            format!("cert={}", path(&pki.server_cert)),
            format!("key={}", path(&pki.server_key)),
            format!("clientcas={}", path(&pki.ca)),
            "requireclientcert=true".into(),
            "skipreceptornamescheck=true".into(),
            "--ws-listener".into(),
            format!("port={go_port}"),
            "bindaddr=127.0.0.1".into(),
            "tls=srv".into(),
        ],
    );
    wait_tcp(go_port, WAIT);
    let mut dial = start(
        &host,
        "ws-peer",
        json!({"address": format!("wss://127.0.0.1:{go_port}/"), "tls": "cli", "tlsconfig": {
            "cert": path(&pki.client_cert), "key": path(&pki.client_key),
            "rootcas": path(&pki.ca)}}),
    );
    let out = next_conn(&mut dial, WAIT).await;
    let first = recv_msg(&out.fd, WAIT).expect("Go's first message over wss");
    assert_route_from(&first, "gotls");

    // Go's wss peer to our wss listener.
    let port = free_tcp_port();
    let mut lis = start(
        &host,
        "ws-listener",
        json!({"bindaddr": "127.0.0.1", "port": port, "tls": "srv", "tlsconfig": {
            "cert": path(&pki.server_cert), "key": path(&pki.server_key),
            "requireclientcert": true, "clientcas": path(&pki.ca)}}),
    );
    let _go_client = GoNode::start(
        "gotlspeer",
        &[
            "--tls-client".into(),
            "name=cli".into(),
            format!("cert={}", path(&pki.client_cert)),
            format!("key={}", path(&pki.client_key)),
            format!("rootcas={}", path(&pki.ca)),
            "skipreceptornamescheck=true".into(),
            "--ws-peer".into(),
            format!("address=wss://127.0.0.1:{port}/"),
            "tls=cli".into(),
        ],
    );
    let inc = next_conn(&mut lis, Duration::from_secs(20)).await;
    let first = recv_msg(&inc.fd, WAIT).expect("Go's first message over wss");
    assert_route_from(&first, "gotlspeer");
}
