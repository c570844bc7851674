//! TLS tests: real handshakes over 127.0.0.1 sockets between rustls configurations
//! built from receptor sections, with certificates made by our certificate commands.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, ProtocolVersion, ServerConfig, ServerConnection, StreamOwned,
};
use serde_json::{json, Value};

use super::*;
use crate::certs;

/// Certificates shared by the tests of one process.
struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

impl Fixture {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn issue(dir: &Path, ca: &str, name: &str, dns: &[&str], ips: &[&str], nodes: &[&str]) {
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    ok(certs::cert_makereq(&json!({
        "commonname": name, "bits": 2048, "dnsname": dns, "ipaddress": ips, "nodeid": nodes,
        "outreq": p(&format!("{name}.csr")), "outkey": p(&format!("{name}.key")),
    })));
    ok(certs::cert_signreq(&json!({
        "req": p(&format!("{name}.csr")), "cacert": p(&format!("{ca}.crt")), "cakey": p(&format!("{ca}.key")),
        "outcert": p(&format!("{name}.crt")), "verify": true,
    })));
}

/// ca1 signs `server` (localhost, 127.0.0.1, node `server`), `client` (node `client`)
/// and `noname` (localhost, 127.0.0.1, no node ID); ca2 signs `stranger`.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = ok(tempfile::tempdir());
        let d = dir.path().to_path_buf();
        for ca in ["ca1", "ca2"] {
            ok(certs::cert_init(&json!({
                "commonname": ca, "bits": 2048,
                "outcert": d.join(format!("{ca}.crt")), "outkey": d.join(format!("{ca}.key")),
            })));
        }
        issue(
            &d,
            "ca1",
            "server",
            &["localhost"],
            &["127.0.0.1"],
            &["server"],
        );
        issue(&d, "ca1", "client", &[], &[], &["client"]);
        issue(&d, "ca1", "noname", &["localhost"], &["127.0.0.1"], &[]);
        issue(
            &d,
            "ca2",
            "stranger",
            &["localhost"],
            &["127.0.0.1"],
            &["client", "server"],
        );
        Fixture { _dir: dir, dir: d }
    })
}

fn server_section(extra: Value) -> Value {
    let f = fixture();
    let mut v = json!({"name": "srv", "cert": f.path("server.crt"), "key": f.path("server.key")});
    merge(&mut v, extra);
    v
}

fn client_section(extra: Value) -> Value {
    let f = fixture();
    let mut v = json!({"name": "cli", "cert": f.path("client.crt"), "key": f.path("client.key"), "rootcas": f.path("ca1.crt")});
    merge(&mut v, extra);
    v
}

fn merge(v: &mut Value, extra: Value) {
    if let (Value::Object(a), Value::Object(b)) = (v, extra) {
        for (k, val) in b {
            a.insert(k, val);
        }
    }
}

fn server(node: &str, extra: Value) -> ServerTls {
    ok(ServerTls::from_section(node, &server_section(extra)))
}

fn client(node: &str, extra: Value) -> ClientTls {
    ok(ClientTls::from_section(node, &client_section(extra)))
}

/// What one side of a handshake saw.
#[derive(Debug)]
struct Side {
    error: Option<String>,
    version: Option<ProtocolVersion>,
    suite: Option<String>,
    alpn: Option<Vec<u8>>,
    peer: Option<Vec<CertificateDer<'static>>>,
}

impl Side {
    fn ok(&self) -> bool {
        self.error.is_none()
    }
}

fn side_of<C: std::ops::Deref<Target = rustls::ConnectionCommon<D>>, D>(
    conn: &C,
    error: Option<String>,
) -> Side {
    Side {
        error,
        version: conn.protocol_version(),
        suite: conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite())),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        peer: conn
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect()),
    }
}

/// Runs a handshake plus one request/answer over a real 127.0.0.1 TCP connection.
fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    server_name: &str,
) -> (Side, Side) {
    let listener = ok(TcpListener::bind("127.0.0.1:0"));
    let addr = ok(listener.local_addr());
    let srv = std::thread::spawn(move || {
        let (sock, _) = ok(listener.accept());
        ok(sock.set_read_timeout(Some(Duration::from_secs(10))));
        let mut tls = StreamOwned::new(ok(ServerConnection::new(server)), sock);
        let mut buf = [0u8; 4];
        let error = tls
            .read_exact(&mut buf)
            .and_then(|_| {
                if &buf == b"ping" {
                    Ok(())
                } else {
                    Err(std::io::Error::other("bad request"))
                }
            })
            .and_then(|_| tls.write_all(b"pong"))
            .and_then(|_| tls.flush())
            .err()
            .map(|e| e.to_string());
        let side = side_of(&tls.conn, error);
        tls.conn.send_close_notify();
        let _ = tls.flush();
        side
    });
    let sock = ok(TcpStream::connect(addr));
    ok(sock.set_read_timeout(Some(Duration::from_secs(10))));
    let name = ok(ServerName::try_from(server_name.to_string()));
    let mut tls = StreamOwned::new(ok(ClientConnection::new(client, name)), sock);
    let mut buf = [0u8; 4];
    let error = tls
        .write_all(b"ping")
        .and_then(|_| tls.flush())
        .and_then(|_| tls.read_exact(&mut buf))
        .and_then(|_| {
            if &buf == b"pong" {
                Ok(())
            } else {
                Err(std::io::Error::other("bad answer"))
            }
        })
        .err()
        .map(|e| e.to_string());
    let client_side = side_of(&tls.conn, error);
    drop(tls);
    let server_side = srv
        .join()
        .unwrap_or_else(|_| panic!("server thread panicked"));
    (server_side, client_side)
}

fn sha256_hex(der: &[u8], colons: bool) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let parts: Vec<String> = d.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    parts.join(if colons { ":" } else { "" })
}

fn leaf_der(path: &str) -> Vec<u8> {
    let bytes = ok(std::fs::read(path));
    ok(CertificateDer::pem_slice_iter(&bytes)
        .next()
        .unwrap_or_else(|| panic!("no cert in {path}")))
    .to_vec()
}

/// A plain rustls client trusting ca1, without a client certificate.
fn anonymous_client(versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    ok(roots.add(CertificateDer::from(leaf_der(&fixture().path("ca1.crt")))));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ok(ClientConfig::builder_with_provider(provider).with_protocol_versions(versions))
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[test]
fn mutual_auth_succeeds_and_peer_node_can_be_checked() {
    let f = fixture();
    let srv = server(
        "server",
        json!({"requireclientcert": "true", "clientcas": f.path("ca1.crt")}),
    );
    let cli = client("client", json!({}));
    let (s, c) = handshake(srv.backend_config(), cli.backend_config(), "127.0.0.1");
    assert!(s.ok() && c.ok(), "{s:?} {c:?}");
    assert_eq!(s.version, Some(ProtocolVersion::TLSv1_3));
    assert_eq!(c.alpn, None);
    let peer = s.peer.unwrap_or_default();
    assert_eq!(ok(receptor_names(&peer[0])), vec!["client"]);
    // beyond 1.6.9: the mesh compares the announced node ID after the first ROUTE
    assert!(srv.check_peer_node(Some(&peer), "client").is_ok());
    let e = srv
        .check_peer_node(Some(&peer), "mallory")
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("x509: certificate is valid for Receptor node ID client, not mallory")
    );
    assert!(srv.check_peer_node(None, "mallory").is_ok());
    let server_peer = c.peer.unwrap_or_default();
    assert!(cli.check_peer_node(Some(&server_peer), "server").is_ok());
    assert!(cli.check_peer_node(Some(&server_peer), "client").is_err());
    // skipreceptornamescheck turns the comparison off
    let lax = server(
        "server",
        json!({"requireclientcert": true, "clientcas": f.path("ca1.crt"), "skipreceptornamescheck": "yes"}),
    );
    assert!(lax.check_peer_node(Some(&peer), "mallory").is_ok());
    // DNS name instead of IP also verifies
    let (s, c) = handshake(srv.backend_config(), cli.backend_config(), "localhost");
    assert!(s.ok() && c.ok(), "{s:?} {c:?}");
}

#[test]
fn wrong_ca_is_refused_both_ways() {
    let f = fixture();
    let srv = server(
        "server",
        json!({"requireclientcert": true, "clientcas": f.path("ca1.crt")}),
    );
    // client certificate from another CA
    let stranger = ok(ClientTls::from_section(
        "client",
        &json!({"name": "x", "cert": f.path("stranger.crt"), "key": f.path("stranger.key"), "rootcas": f.path("ca1.crt")}),
    ));
    let (s, c) = handshake(srv.backend_config(), stranger.backend_config(), "127.0.0.1");
    assert!(!s.ok() && !c.ok(), "{s:?} {c:?}");
    assert!(s.error.unwrap_or_default().contains("UnknownIssuer"));
    // server certificate from a CA the client does not trust
    let cli = client("client", json!({"rootcas": f.path("ca2.crt")}));
    let plain = server("server", json!({}));
    let (s, c) = handshake(plain.backend_config(), cli.backend_config(), "127.0.0.1");
    assert!(!c.ok() && !s.ok(), "{s:?} {c:?}");
    assert!(c.error.unwrap_or_default().contains("UnknownIssuer"));
}

#[test]
fn client_certificate_is_mandatory_with_clientcas_only() {
    // Go 1.6.9 sets VerifyClientCertIfGiven but its verify callback then fails with
    // "peer certificate missing": a client without certificate never gets in.
    let f = fixture();
    let srv = server("server", json!({"clientcas": f.path("ca1.crt")}));
    assert!(srv.requests_client_cert());
    let (s, c) = handshake(
        srv.backend_config(),
        anonymous_client(&[&rustls::version::TLS13]),
        "127.0.0.1",
    );
    assert!(!s.ok() && !c.ok(), "{s:?} {c:?}");
    // with neither option, no client certificate is requested
    let open = server("server", json!({"pinnedclientcert": ["00".repeat(32)]}));
    assert!(!open.requests_client_cert());
    let (s, c) = handshake(
        open.backend_config(),
        anonymous_client(&[&rustls::version::TLS13]),
        "127.0.0.1",
    );
    assert!(s.ok() && c.ok(), "{s:?} {c:?}");
    assert!(s.peer.is_none());
}

#[test]
fn pinned_fingerprints() {
    let f = fixture();
    let server_leaf = leaf_der(&f.path("server.crt"));
    let client_leaf = leaf_der(&f.path("client.crt"));
    let srv = server("server", json!({}));
    // matching SHA-256 pin, with colons, among others
    let cli = client(
        "client",
        json!({"pinnedservercert": ["11".repeat(32), sha256_hex(&server_leaf, true)]}),
    );
    let (s, c) = handshake(srv.backend_config(), cli.backend_config(), "127.0.0.1");
    assert!(s.ok() && c.ok(), "{s:?} {c:?}");
    // matching SHA-512 pin
    let d = ring::digest::digest(&ring::digest::SHA512, &server_leaf);
    let hex512: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let cli = client("client", json!({"pinnedservercert": hex512}));
    let (s, c) = handshake(srv.backend_config(), cli.backend_config(), "127.0.0.1");
    assert!(s.ok() && c.ok(), "{s:?} {c:?}");
    // mismatch is refused
    let cli = client(
        "client",
        json!({"pinnedservercert": [sha256_hex(&client_leaf, false)]}),
    );
    let (_, c) = handshake(srv.backend_config(), cli.backend_config(), "127.0.0.1");
    assert!(c
        .error
        .unwrap_or_default()
        .contains("does not match any pinned fingerprint"));
    // server side pins on client certificates
    let with_client_pin = |pin: String| {
        let pinned = server(
            "server",
            json!({"clientcas": f.path("ca1.crt"), "pinnedclientcert": pin}),
        );
        handshake(
            pinned.backend_config(),
            client("client", json!({})).backend_config(),
            "127.0.0.1",
        )
    };
    let (s, _) = with_client_pin(sha256_hex(&server_leaf, true));
    assert!(s
        .error
        .unwrap_or_default()
        .contains("does not match any pinned fingerprint"));
    let (s, c) = with_client_pin(sha256_hex(&client_leaf, true));
    assert!(s.ok() && c.ok(), "{s:?} {c:?}");
    // malformed pins are configuration errors, worded as Go words them
    let e = ClientTls::from_section(
        "client",
        &client_section(json!({"pinnedservercert": "abcd"})),
    )
    .err();
    assert_eq!(
        e.map(|e| e.to_string()).as_deref(),
        Some(
            "error decoding fingerprints: fingerprints must be 32 or 64 bytes for sha256 or sha512"
        )
    );
    let e =
        ServerTls::from_section("server", &server_section(json!({"pinnedclientcert": "zz"}))).err();
    assert_eq!(
        e.map(|e| e.to_string()).as_deref(),
        Some("error decoding fingerprints: error decoding fingerprint")
    );
}

#[test]
fn insecureskipverify_disables_every_check() {
    let f = fixture();
    let srv = server("server", json!({}));
    let cli = client(
        "client",
        json!({"rootcas": f.path("ca2.crt"), "insecureskipverify": "true", "pinnedservercert": ["00".repeat(32)]}),
    );
    assert!(cli.insecure());
    let (s, c) = handshake(srv.backend_config(), cli.backend_config(), "wrong.example");
    assert!(s.ok() && c.ok(), "{s:?} {c:?}");
    let quic = ok(cli.quic_config("nobody"));
    let (s, c) = handshake(
        ok(srv.quic_config_for_peer("client")),
        quic,
        "wrong.example",
    );
    assert!(s.ok() && c.ok(), "{s:?} {c:?}");
}

#[test]
fn hostname_is_checked_on_backends() {
    let srv = server("server", json!({}));
    let cli = client("client", json!({}));
    let (_, c) = handshake(srv.backend_config(), cli.backend_config(), "otherhost");
    let e = c.error.unwrap_or_default();
    assert!(
        e.contains("certificate not valid for name \"otherhost\""),
        "{e}"
    );
    let (_, c) = handshake(srv.backend_config(), cli.backend_config(), "127.0.0.2");
    assert!(!c.ok());
}

#[test]
fn mintls13_behaviour() {
    let tls12 = [&rustls::version::TLS12];
    // default (mintls13 true): a TLS 1.2-only client is refused
    let strict = server("server", json!({}));
    let (s, c) = handshake(
        strict.backend_config(),
        anonymous_client(&tls12),
        "127.0.0.1",
    );
    assert!(!s.ok() && !c.ok());
    assert!(
        s.error.unwrap_or_default().contains("ProtocolVersion")
            || c.error.unwrap_or_default().contains("ProtocolVersion")
    );
    // mintls13=false: TLS 1.2 with one of Go's suites
    let relaxed = server("server", json!({"mintls13": "false"}));
    let (s, c) = handshake(
        relaxed.backend_config(),
        anonymous_client(&tls12),
        "127.0.0.1",
    );
    assert!(s.ok() && c.ok(), "{s:?} {c:?}");
    assert_eq!(c.version, Some(ProtocolVersion::TLSv1_2));
    assert_eq!(
        c.suite.as_deref(),
        Some("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384")
    );
    // and TLS 1.3 is still preferred when both sides can
    let (s, c) = handshake(
        relaxed.backend_config(),
        client("client", json!({"mintls13": false})).backend_config(),
        "127.0.0.1",
    );
    assert!(s.ok() && c.ok(), "{s:?} {c:?}");
    assert_eq!(c.version, Some(ProtocolVersion::TLSv1_3));
    // a mintls13 client refuses a TLS 1.2-only server
    let only12 = {
        let id = ok(CertifiedKey::from_der(
            vec![CertificateDer::from(leaf_der(
                &fixture().path("server.crt"),
            ))],
            ok(rustls::pki_types::PrivateKeyDer::from_pem_file(
                fixture().path("server.key"),
            )),
            &rustls::crypto::ring::default_provider(),
        ));
        Arc::new(
            ok(ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&tls12))
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(FixedCert(Arc::new(id)))),
        )
    };
    let (_, c) = handshake(
        only12,
        client("client", json!({})).backend_config(),
        "127.0.0.1",
    );
    assert!(!c.ok());
}

#[test]
fn quic_conn_type_2_receptor_name_rules() {
    let f = fixture();
    let srv = server(
        "server",
        json!({"requireclientcert": true, "clientcas": f.path("ca1.crt"), "pinnedclientcert": ["00".repeat(32)]}),
    );
    let cli = client("client", json!({}));
    // client: target node must be a ReceptorName of the server; no DNS check (any
    // ServerName); server: client node must be a ReceptorName; pins are not checked.
    let (s, c) = handshake(
        ok(srv.quic_config_for_peer("client")),
        ok(cli.quic_config("server")),
        "not-checked",
    );
    assert!(s.ok() && c.ok(), "{s:?} {c:?}");
    assert_eq!(c.alpn.as_deref(), Some(NETCEPTOR_ALPN));
    assert_eq!(s.version, Some(ProtocolVersion::TLSv1_3));
    let (_, c) = handshake(
        ok(srv.quic_config_for_peer("client")),
        ok(cli.quic_config("other")),
        "x",
    );
    assert_eq!(
        c.error.as_deref().map(
            |e| e.contains("x509: certificate is valid for Receptor node ID server, not other")
        ),
        Some(true),
        "{c:?}"
    );
    let (s, _) = handshake(
        ok(srv.quic_config_for_peer("mallory")),
        ok(cli.quic_config("server")),
        "x",
    );
    assert!(s
        .error
        .unwrap_or_default()
        .contains("valid for Receptor node ID client, not mallory"));
    // the backend config of the same server still checks pins (and no name)
    let (s, _) = handshake(srv.backend_config(), cli.backend_config(), "127.0.0.1");
    assert!(s.error.unwrap_or_default().contains("pinned fingerprint"));
    // clientcas only: backend-style check (chain and pins, no name) on QUIC too
    let if_given = server("server", json!({"clientcas": f.path("ca1.crt")}));
    let (s, c) = handshake(
        ok(if_given.quic_config_for_peer("anyone")),
        ok(cli.quic_config("server")),
        "x",
    );
    assert!(s.ok() && c.ok(), "{s:?} {c:?}");
    let if_given = server(
        "server",
        json!({"clientcas": f.path("ca1.crt"), "pinnedclientcert": "00".repeat(64)}),
    );
    let (s, _) = handshake(
        ok(if_given.quic_config_for_peer("client")),
        ok(cli.quic_config("server")),
        "x",
    );
    assert!(s.error.unwrap_or_default().contains("pinned fingerprint"));
    // a certificate without ReceptorNames fails the client-side name check
    let noname = ok(ServerTls::from_section(
        "server",
        &json!({"name": "n", "cert": f.path("noname.crt"), "key": f.path("noname.key"), "skipreceptornamescheck": true}),
    ));
    let (_, c) = handshake(
        ok(noname.quic_config_for_peer("client")),
        ok(cli.quic_config("server")),
        "x",
    );
    assert!(c
        .error
        .unwrap_or_default()
        .contains("not valid for any Receptor node IDs, but wanted to match server"));
}

#[test]
fn startup_check_of_own_receptor_name() {
    let f = fixture();
    let e = ServerTls::from_section("gonode", &server_section(json!({})))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e,
        Some(format!(
            "nodeID=gonode not found in certificate name(s); names found=[server]; cfg section=srv; server cert={}",
            f.path("server.crt")
        ))
    );
    let e = ClientTls::from_section("server", &client_section(json!({})))
        .err()
        .map(|e| e.to_string());
    assert!(e
        .unwrap_or_default()
        .starts_with("nodeID=server not found in certificate name(s); names found=[client]"));
    assert!(ServerTls::from_section(
        "gonode",
        &server_section(json!({"skipreceptornamescheck": "true"}))
    )
    .is_ok());
    let noname = json!({"name": "n", "cert": f.path("noname.crt"), "key": f.path("noname.key")});
    let e = ServerTls::from_section("server", &noname)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("names found=[];"), "{e}");
}

#[test]
fn bad_files_give_clear_errors() {
    let f = fixture();
    let dir = ok(tempfile::tempdir());
    let garbage = dir
        .path()
        .join("garbage.pem")
        .to_string_lossy()
        .into_owned();
    ok(std::fs::write(&garbage, "this is not PEM\n"));
    let broken = dir.path().join("broken.pem").to_string_lossy().into_owned();
    ok(std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    ));
    let junk_der = dir.path().join("junk.pem").to_string_lossy().into_owned();
    ok(std::fs::write(
        &junk_der,
        "-----BEGIN CERTIFICATE-----\nAAECAw==\n-----END CERTIFICATE-----\n",
    ));
    let missing = dir
        .path()
        .join("missing.pem")
        .to_string_lossy()
        .into_owned();

    let err = |v: Value| {
        ServerTls::from_section("server", &server_section(v))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert_eq!(
        err(json!({"cert": garbage})),
        format!("{garbage}: no PEM \"CERTIFICATE\" block found")
    );
    assert!(err(json!({"cert": broken})).starts_with(&format!("{broken}: malformed PEM")));
    assert!(err(json!({"cert": junk_der}))
        .starts_with(&format!("{junk_der}: certificate #1 is malformed")));
    assert!(err(json!({"cert": missing})).starts_with(&format!("open {missing}: ")));
    assert_eq!(
        err(json!({"key": garbage})),
        format!("{garbage}: no PEM private key block found")
    );
    assert_eq!(
        err(json!({"key": f.path("client.key")})),
        format!(
            "tls: private key in {} does not match the certificate in {}",
            f.path("client.key"),
            f.path("server.crt")
        )
    );
    assert_eq!(
        err(json!({"clientcas": garbage})),
        format!("{garbage}: no PEM \"CERTIFICATE\" block found")
    );
    assert_eq!(
        err(json!({"cert": ""})),
        "error in tls-server srv: required parameter missing: cert"
    );
    assert_eq!(
        err(json!({"mintls13": "maybe"})),
        "error in tls-server srv: invalid value for mintls13: \"maybe\" is not a boolean"
    );
    let e = ClientTls::from_section("client", &json!({"name": "c"}))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("error in tls-client c: required parameter missing: cert")
    );
    let e = ClientTls::from_section("client", &client_section(json!({"rootcas": garbage})))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e,
        Some(format!("{garbage}: no PEM \"CERTIFICATE\" block found"))
    );
}

#[test]
fn registry_lookups() {
    let f = fixture();
    let reg = ok(TlsRegistry::from_sections(
        "server",
        &[server_section(json!({"clientcas": f.path("ca1.crt")}))],
        &[client_section(
            json!({"name": "c1", "skipreceptornamescheck": true}),
        )],
    ));
    assert_eq!(ok(reg.server("srv")).name(), "srv");
    assert_eq!(ok(reg.client("c1")).name(), "c1");
    assert_eq!(
        reg.server("nope").err().map(|e| e.to_string()).as_deref(),
        Some("unknown TLS config nope")
    );
    assert_eq!(
        reg.client("srv").err().map(|e| e.to_string()).as_deref(),
        Some("unknown TLS config srv")
    );
    assert_eq!(reg.server_names().collect::<Vec<_>>(), vec!["srv"]);
    assert_eq!(reg.client_names().collect::<Vec<_>>(), vec!["c1"]);
    // a failing section stops building, with the section's error
    let e = TlsRegistry::from_sections("server", &[json!({"cert": "x"})], &[])
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("error in tls-server : required parameter missing: name")
    );
}

/// Interoperability with the Go receptor 1.6.9 binary's TLS backends (no Rust
/// daemon needed: our side is a bare rustls endpoint that reads Go's first frame).
mod go_interop {
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    use super::*;

    fn go_receptor() -> Option<PathBuf> {
        let path = std::env::var_os("RECEPTOR_GO_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from("/root/.cache/receptor-reference/root/usr/bin/receptor")
            });
        if path.exists() {
            Some(path)
        } else {
            eprintln!("skipping Go interop test: {} not found", path.display());
            None
        }
    }

    /// A Go node killed on drop.
    struct GoNode(Child);

    impl Drop for GoNode {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn start_go(bin: &Path, dir: &Path, yaml: &str) -> GoNode {
        let cfg = dir.join("go.yml");
        ok(std::fs::write(&cfg, yaml));
        let child = Command::new(bin)
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting Go receptor: {e}"));
        GoNode(child)
    }

    fn free_port() -> u16 {
        let l = ok(TcpListener::bind("127.0.0.1:0"));
        ok(l.local_addr()).port()
    }

    fn connect_with_deadline(port: u16) -> TcpStream {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => return s,
                Err(e) if Instant::now() > deadline => {
                    panic!("Go node did not listen on {port}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// A TLS client session with `config` to the Go listener on `port`, sending `name`.
    fn tls_to_go(
        port: u16,
        config: Arc<ClientConfig>,
        name: &str,
    ) -> StreamOwned<ClientConnection, TcpStream> {
        let sock = connect_with_deadline(port);
        ok(sock.set_read_timeout(Some(Duration::from_secs(10))));
        let name = ok(ServerName::try_from(name.to_owned()));
        StreamOwned::new(ok(ClientConnection::new(config, name)), sock)
    }

    /// The certificates the peer presented, leaf first.
    fn peer_chain(conn: &rustls::CommonState) -> Vec<CertificateDer<'static>> {
        conn.peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| c.clone().into_owned())
            .collect()
    }

    /// Reads one backend frame (u16 LE length, then the message) and returns it.
    fn read_frame(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
        let mut len = [0u8; 2];
        r.read_exact(&mut len)?;
        let mut msg = vec![0u8; u16::from_le_bytes(len) as usize];
        r.read_exact(&mut msg)?;
        Ok(msg)
    }

    fn is_route_from(msg: &[u8], node: &str) -> bool {
        msg.first() == Some(&1)
            && String::from_utf8_lossy(&msg[1..]).contains(&format!("\"NodeID\":\"{node}\""))
    }

    /// A certificate for the Go node, issued by our ca1.
    fn go_identity(d: &Path) -> (String, String) {
        let f = fixture();
        let p = |n: &str| d.join(n).to_string_lossy().into_owned();
        ok(certs::cert_makereq(&json!({
            "commonname": "gonode", "bits": 2048, "dnsname": "localhost", "ipaddress": "127.0.0.1",
            "nodeid": "gonode", "outreq": p("gonode.csr"), "outkey": p("gonode.key"),
        })));
        ok(certs::cert_signreq(&json!({
            "req": p("gonode.csr"), "cacert": f.path("ca1.crt"), "cakey": f.path("ca1.key"),
            "outcert": p("gonode.crt"), "verify": true,
        })));
        (p("gonode.crt"), p("gonode.key"))
    }

    #[test]
    fn rust_client_against_go_tls_listener() {
        let Some(bin) = go_receptor() else { return };
        let f = fixture();
        let dir = ok(tempfile::tempdir());
        let (cert, key) = go_identity(dir.path());
        let port = free_port();
        let _go = start_go(
            &bin,
            dir.path(),
            &format!(
                "- node:\n    id: gonode\n    datadir: {d}/data\n- tls-server:\n    name: srv\n    cert: {cert}\n    key: {key}\n    \
                 requireclientcert: true\n    clientcas: {ca}\n- tcp-listener:\n    bindaddr: 127.0.0.1\n    port: {port}\n    tls: srv\n",
                d = dir.path().display(),
                ca = f.path("ca1.crt"),
            ),
        );
        let cli = client("client", json!({}));
        let go_leaf = leaf_der(&cert);

        // accepted: mutual auth, then Go's first ROUTE arrives over TLS
        let mut tls = tls_to_go(port, cli.backend_config(), "127.0.0.1");
        let msg = ok(read_frame(&mut tls));
        assert!(
            is_route_from(&msg, "gonode"),
            "{}",
            String::from_utf8_lossy(&msg)
        );
        assert_eq!(tls.conn.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        let peer = peer_chain(&tls.conn);
        assert!(cli.check_peer_node(Some(&peer), "gonode").is_ok());
        drop(tls);

        // refused by us: the pin names another certificate
        let pinned = client(
            "client",
            json!({"pinnedservercert": sha256_hex(&leaf_der(&f.path("server.crt")), true)}),
        );
        let mut tls = tls_to_go(port, pinned.backend_config(), "127.0.0.1");
        let e = read_frame(&mut tls)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("pinned fingerprint"), "{e}");

        // the right pin (SHA-512 of Go's certificate) is accepted
        let d = ring::digest::digest(&ring::digest::SHA512, &go_leaf);
        let pin: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let pinned = client(
            "client",
            json!({"pinnedservercert": pin, "mintls13": false}),
        );
        let mut tls = tls_to_go(port, pinned.backend_config(), "localhost");
        assert!(is_route_from(&ok(read_frame(&mut tls)), "gonode"));
        drop(tls);

        // refused by Go: our client certificate comes from a CA it does not trust
        let stranger = ok(ClientTls::from_section(
            "client",
            &json!({"name": "x", "cert": f.path("stranger.crt"), "key": f.path("stranger.key"), "rootcas": f.path("ca1.crt")}),
        ));
        let mut tls = tls_to_go(port, stranger.backend_config(), "127.0.0.1");
        assert!(read_frame(&mut tls).is_err());
    }

    #[test]
    fn go_client_against_rust_tls_server() {
        let Some(bin) = go_receptor() else { return };
        let f = fixture();
        let dir = ok(tempfile::tempdir());
        let (cert, key) = go_identity(dir.path());
        for min_tls13 in [true, false] {
            let srv = server(
                "server",
                json!({"requireclientcert": true, "clientcas": f.path("ca1.crt"), "mintls13": min_tls13}),
            );
            let listener = ok(TcpListener::bind("127.0.0.1:0"));
            let port = ok(listener.local_addr()).port();
            let _go = start_go(
                &bin,
                dir.path(),
                &format!(
                    "- node:\n    id: gonode\n    datadir: {d}/data\n- tls-client:\n    name: cli\n    cert: {cert}\n    key: {key}\n    \
                     rootcas: {ca}\n    mintls13: {min_tls13}\n- tcp-peer:\n    address: 127.0.0.1:{port}\n    tls: cli\n",
                    d = dir.path().display(),
                    ca = f.path("ca1.crt"),
                ),
            );
            let (sock, _) = ok(listener.accept());
            ok(sock.set_read_timeout(Some(Duration::from_secs(10))));
            let mut tls = StreamOwned::new(ok(ServerConnection::new(srv.backend_config())), sock);
            let msg = ok(read_frame(&mut tls));
            assert!(
                is_route_from(&msg, "gonode"),
                "{}",
                String::from_utf8_lossy(&msg)
            );
            assert_eq!(tls.conn.protocol_version(), Some(ProtocolVersion::TLSv1_3));
            let peer = peer_chain(&tls.conn);
            assert_eq!(ok(receptor_names(&peer[0])), vec!["gonode"]);
            assert!(srv.check_peer_node(Some(&peer), "gonode").is_ok());
            assert!(srv.check_peer_node(Some(&peer), "impostor").is_err());
        }
    }
}

/// The insecure (ConnType 1) server configuration with the default key type.
fn insecure_server() -> ServerConfig {
    let rt = ok(tokio::runtime::Builder::new_current_thread().build());
    ok(rt.block_on(insecure_server_config(InsecureKeyType::default())))
}

#[test]
fn conn_type_1_insecure_streams() {
    let server_cfg = Arc::new(insecure_server());
    let (s, c) = handshake(
        server_cfg.clone(),
        Arc::new(ok(insecure_client_config())),
        "my-node-id",
    );
    assert!(s.ok() && c.ok(), "{s:?} {c:?}");
    assert_eq!(c.alpn.as_deref(), Some(NETCEPTOR_ALPN));
    assert_eq!(c.version, Some(ProtocolVersion::TLSv1_3));
    let leaf = c.peer.unwrap_or_default().remove(0);
    let (_, cert) = ok(x509_parser::prelude::X509Certificate::from_der(&leaf));
    assert_eq!(
        cert.subject().to_string(),
        format!("CN={INSECURE_COMMON_NAME}")
    );
    assert_eq!(
        cert.issuer().to_string(),
        format!("CN={INSECURE_COMMON_NAME}")
    );
    assert_eq!(cert.raw_serial(), &[1]);
    assert!(cert.extensions().is_empty());
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime, 24 * 3600 + 60);
    // a plain client refuses a service with a user certificate (ConnType 2)
    let user = server("server", json!({}));
    let (_, c) = handshake(
        ok(user.quic_config_for_peer("x")),
        Arc::new(ok(insecure_client_config())),
        "my-node-id",
    );
    assert!(c
        .error
        .unwrap_or_default()
        .contains("insecure connection to secure service"));
}

#[test]
fn quic_configs_are_accepted_by_quinn() {
    use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
    let f = fixture();
    for min_tls13 in [true, false] {
        let srv = server(
            "server",
            json!({"requireclientcert": true, "clientcas": f.path("ca1.crt"), "mintls13": min_tls13}),
        );
        let cli = client("client", json!({"mintls13": min_tls13}));
        assert!(QuicServerConfig::try_from(ok(srv.quic_config_for_peer("client"))).is_ok());
        assert!(QuicClientConfig::try_from(ok(cli.quic_config("server"))).is_ok());
    }
    assert!(QuicServerConfig::try_from(insecure_server()).is_ok());
    assert!(QuicClientConfig::try_from(ok(insecure_client_config())).is_ok());
}
