//! Writes the seed corpora of the fuzz targets into `fuzz/corpus/<target>/`.
//!
//! Seeds are real inputs: messages two routing state machines exchange while they
//! connect and advertise services, a QUIC Initial a stream dialer sends, tokens the
//! work signer makes, the configuration files of `examples/` and the tests, status files
//! as the store writes them. Run `cargo run -p receptor-fuzz-targets --example make_seeds`
//! from the repository root; existing files of the same name are replaced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use receptor_core::mesh::{Incoming, MeshError};
use receptor_core::streams::{
    dial_with, DatagramNetwork, DatagramSocket, DialOptions, InsecureKeyType, StreamConfig,
};
use receptor_core::work::signing::WorkSigner;
use receptor_proto::data::{DataHeader, ServiceName, UnreachableMessage};
use receptor_proto::frame::encode_frame;
use receptor_proto::hash::node_hash;
use receptor_proto::message::REJECT_MESSAGE;
use receptor_proto::node::{NodeConfig, NodeState, SessionConfig};
use receptor_proto::svcad::{ServiceAdvertisement, SvcadMessage, WorkCommand};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Corpus {
    dir: PathBuf,
}

impl Corpus {
    fn new(target: &str) -> Result<Corpus> {
        let dir = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        Ok(Corpus { dir })
    }

    fn put(&self, name: &str, bytes: impl AsRef<[u8]>) -> Result<()> {
        std::fs::write(self.dir.join(name), bytes)?;
        Ok(())
    }
}

fn record(op: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![op];
    out.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Two nodes, `fuzz` (as in the `mesh_node` target) and `peer`, connect; `peer` has a
/// neighbour `far` and advertises a service. Returns the `mesh_node` script of what
/// `fuzz` receives, and every distinct message either side sent.
fn mesh_exchange() -> (Vec<u8>, Vec<Vec<u8>>) {
    let start = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let config = |id: &str| NodeConfig {
        node_id: id.to_owned(),
        max_idle: Duration::from_secs(21),
    };
    let mut a = NodeState::new(config("fuzz"), start, wall, 7);
    let mut b = NodeState::new(config("peer"), start, wall, 8);
    let mut far = NodeState::new(config("far"), start, wall, 9);
    let sa = a.open_session(start, SessionConfig::default());
    let sb = b.open_session(start, SessionConfig::default());
    let sb_far = b.open_session(start, SessionConfig::default());
    let sfar = far.open_session(start, SessionConfig::default());
    b.add_local_service(
        start,
        "control",
        1,
        Some(BTreeMap::from([(
            "type".to_owned(),
            "Control Service".to_owned(),
        )])),
    );
    b.set_work_commands(
        start,
        vec![WorkCommand {
            work_type: "echo".to_owned(),
            secure: false,
        }],
    );
    far.add_local_service(start, "svc", 0, None);
    let mut script = Vec::new();
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut now = start;
    for step in 0..40u32 {
        if step > 0 {
            now += Duration::from_millis(500);
            script.extend_from_slice(&[2, 2]);
            a.handle_timeout(now);
            b.handle_timeout(now);
            far.handle_timeout(now);
        }
        if step == 30 {
            b.remove_local_service(now, "control");
        }
        for _ in 0..8 {
            let ta: Vec<_> = std::iter::from_fn(|| a.poll_transmit()).collect();
            let tb: Vec<_> = std::iter::from_fn(|| b.poll_transmit()).collect();
            let tf: Vec<_> = std::iter::from_fn(|| far.poll_transmit()).collect();
            if ta.is_empty() && tb.is_empty() && tf.is_empty() {
                break;
            }
            for t in ta.iter().chain(&tb).chain(&tf) {
                if !seen.iter().any(|m| m[..] == t.message[..]) {
                    seen.push(t.message.to_vec());
                }
            }
            for t in ta {
                if t.session == sa {
                    b.handle_message(now, sb, &t.message);
                }
            }
            for t in tb {
                if t.session == sb {
                    script.extend_from_slice(&record(0, &t.message)[..]);
                    a.handle_message(now, sa, &t.message);
                } else if t.session == sb_far {
                    far.handle_message(now, sfar, &t.message);
                }
            }
            for t in tf {
                if t.session == sfar {
                    b.handle_message(now, sb_far, &t.message);
                }
            }
            while a.poll_event().is_some() || b.poll_event().is_some() || far.poll_event().is_some()
            {
            }
        }
    }
    (script, seen)
}

fn data_message(to: &str, from_service: &str, to_service: &str, payload: &[u8]) -> Vec<u8> {
    let header = DataHeader {
        hops_to_live: 30,
        from_node: node_hash("peer"),
        to_node: node_hash(to),
        from_service: ServiceName::new(from_service).unwrap_or_default(),
        to_service: ServiceName::new(to_service).unwrap_or_default(),
    };
    let mut msg = header.encode().to_vec();
    msg.extend_from_slice(payload);
    msg
}

fn mesh_seeds() -> Result<()> {
    let (script, messages) = mesh_exchange();
    let unreachable = UnreachableMessage {
        from_node: "fuzz".to_owned(),
        to_node: "gone".to_owned(),
        from_service: "ping".to_owned(),
        to_service: "nothere".to_owned(),
        problem: "service unknown".to_owned(),
    }
    .to_json();
    let mut all = messages;
    all.push(data_message("fuzz", "ping", "ping", b"hello"));
    all.push(data_message("fuzz", "unreach", "ping", &unreachable));
    all.push(REJECT_MESSAGE.to_vec());
    all.push(
        br#"{"NodeID":"gonode","UpdateID":"ZVmusV57","UpdateEpoch":30125592113325676,"UpdateSequence":2,"Connections":{"probe":1},"ForwardingNode":"gonode","SuspectedDuplicate":0}"#
            .iter()
            .fold(vec![1u8], |mut v, b| {
                v.push(*b);
                v
            }),
    );
    all.push(SvcadMessage::encode(
        &ServiceAdvertisement {
            node_id: "gonode".to_owned(),
            service: "control".to_owned(),
            time: "2026-12-07T21:00:00.123456789Z".to_owned(),
            conn_type: 1,
            tags: Some(BTreeMap::from([(
                "type".to_owned(),
                "Control Service".to_owned(),
            )])),
            work_commands: Some(vec![WorkCommand {
                work_type: "cat".to_owned(),
                secure: true,
            }]),
        },
        false,
    ));

    let message = Corpus::new("message")?;
    for (i, m) in all.iter().enumerate() {
        message.put(&format!("msg-{i:02}"), m)?;
    }

    let frame = Corpus::new("frame")?;
    for (i, chunk) in [255u8, 1, 7, 64].into_iter().enumerate() {
        let mut stream = bytes::BytesMut::new();
        for m in all.iter().skip(i * 3).take(6) {
            encode_frame(m, &mut stream)?;
        }
        let mut seed = vec![chunk];
        seed.extend_from_slice(&stream);
        frame.put(&format!("stream-{i}"), seed)?;
    }
    frame.put("zero-length", [16u8, 3, 0, 3, 91, 93, 0, 0])?;
    frame.put("partial", [200u8, 10, 0, 1, 2])?;

    let node = Corpus::new("mesh_node")?;
    node.put("connect-and-advertise", &script)?;
    let mut closing = script.clone();
    closing.extend_from_slice(&[3, 2, 100, 4]);
    closing.extend_from_slice(&script);
    node.put("close-and-reconnect", &closing)?;
    let mut data = script.clone();
    data.extend_from_slice(&record(
        0,
        &data_message("fuzz", "ping", "ping", b"payload"),
    ));
    data.extend_from_slice(&record(1, &all[0]));
    node.put("data-and-second-session", &data)?;
    node.put("idle-timeout", [2u8, 200, 2, 200])?;
    Ok(())
}

fn control_seeds() -> Result<()> {
    let c = Corpus::new("control_line")?;
    let lines: &[&str] = &[
        "status",
        "Status",
        "ping bar",
        "traceroute bar",
        "reload",
        "connect bar control",
        "connect bar control tlsclient",
        "work list",
        "work list foo1234abc",
        "work status foo1234abc",
        "work submit bar echoint",
        "work submit localhost cat",
        "work submit bar cat --node bar",
        "work results foo1234abc 10",
        "work cancel foo1234abc",
        "work release foo1234abc",
        "work force-release foo1234abc",
        "work submit",
        r#"{"command":"status"}"#,
        r#"{"command":"status","requested_fields":["Version","NodeID"]}"#,
        r#"{"command":"ping","target":"bar"}"#,
        r#"{"command":"work","subcommand":"submit","node":"localhost","worktype":"cat","params":"-n","ttl":"1m30s","signwork":"true","tlsclient":"client","workUnitID":"abc","signature":"x.y.z"}"#,
        r#"{"command":"work","subcommand":"submit","node":"bar","worktype":"echo","secret_key":"s","extra":5}"#,
        r#"{"command":"work","subcommand":"results","unitid":"abc","startpos":17}"#,
        r#"{"command":"work","subcommand":"list","unitid":""}"#,
        r#"{"command":"work","subcommand":"cancel","unitid":"abc"}"#,
        r#"{"command":"connect","node":"bar","service":"control","tls":""}"#,
        r#"{"command":"work","subcommand":"submit","ttl":"-5h4m3.5s"}"#,
        r#"{"command":"work","subcommand":"submit","params":{"a":[1,2.5e300,null,true]}}"#,
        r#"{"command":"x","a":"\ud800\u00e9\n"}"#,
        r#"{"command":1}"#,
        r#"{"command":"status""#,
        "{",
        "15m",
        "9223372036854775808",
    ];
    for (i, line) in lines.iter().enumerate() {
        c.put(&format!("line-{i:02}"), line)?;
    }
    c.put("invalid-utf8", b"work submit bar \xff\xfe cat")?;
    Ok(())
}

fn config_seeds() -> Result<()> {
    let yaml = Corpus::new("config_yaml")?;
    let root = root();
    for dir in ["examples", "core/src/config/testdata"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
            .collect();
        files.sort();
        for f in files {
            let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("file");
            yaml.put(name, std::fs::read(&f)?)?;
        }
    }
    let more: &[(&str, &str)] = &[
        (
            "v2-map.yml",
            "version: 2\nnode:\n  id: foo\n  datadir: /tmp/foo\ntcp-listeners:\n  - port: 2222\n    cost: 1.5\n    nodecost: {bar: 2}\ncontrol-services:\n  - service: control\n    filename: /tmp/foo.sock\n    permissions: 0660\nwork-commands:\n  - worktype: cat\n    command: cat\n    params: -n\n    allowruntimeparams: yes\n",
        ),
        (
            "tls.yml",
            "- node: {id: foo, firewallrules: [{action: reject, fromnode: /b.*/}]}\n- tls-server: {name: srv, cert: /c.pem, key: /k.pem, clientcas: /ca.pem, requireclientcert: true}\n- tls-client: {name: cli, rootcas: /ca.pem, insecureskipverify: false, pinnedservercert: ['AB:CD']}\n- tcp-peer: {address: 'localhost:2222', tls: cli, redial: true}\n- work-signing: {privatekey: /p.pem, tokenexpiration: 1h}\n- work-verification: {publickey: /pub.pem}\n",
        ),
        (
            "anchors.yml",
            "- node: &n {id: foo}\n- log-level: {level: debug}\n- tcp-listener: {port: '2222'}\n- my-worktype: *n\n",
        ),
        ("empty.yml", ""),
        ("bad.yml", "- node: {id: [unclosed\n"),
    ];
    for (name, text) in more {
        yaml.put(name, text)?;
    }

    let cli = Corpus::new("config_cli")?;
    let lines: &[&[&str]] = &[
        &[
            "--node",
            "id=foo",
            "--tcp-listener",
            "port=2222",
            "--control-service",
            "service=control",
            "filename=/tmp/foo.sock",
        ],
        &["--version"],
        &["--help"],
        &["--bash-completion"],
        &["-c", "/nonexistent/receptor.yml"],
        &[
            "--cert-init",
            "commonname=Test CA",
            "bits=2048",
            "outcert=/tmp/ca.crt",
            "outkey=/tmp/ca.key",
        ],
        &[
            "--cert-makereq",
            "commonname=foo",
            "nodeid=foo",
            "dnsname=a",
            "dnsname=b",
            "outreq=/tmp/r",
        ],
        &[
            "--node",
            "id=foo",
            "firewallrules=[{\"action\":\"drop\"}]",
            "--log-level",
            "debug",
            "--work-command",
            "worktype=cat",
            "command=cat",
        ],
        &["--node", "id=foo", "--trace", "--local-only"],
        &[
            "--tcp-peer",
            "address=localhost:2222",
            "cost=2",
            "redial=false",
        ],
    ];
    for (i, words) in lines.iter().enumerate() {
        cli.put(&format!("args-{i:02}"), words.join("\0"))?;
    }
    Ok(())
}

fn status_seeds() -> Result<()> {
    let s = Corpus::new("unit_status")?;
    let files: &[&str] = &[
        r#"{"State":0,"Detail":"Waiting for Input Data","StdoutSize":0,"WorkType":"cat","ExtraData":null}"#,
        r#"{"State":2,"Detail":"exit status 0","StdoutSize":12,"WorkType":"cat","ExtraData":null}"#,
        r#"{"State":3,"Detail":"exit status 1","StdoutSize":0,"WorkType":"echo","ExtraData":{"x":[1,2.5,"y",null]}}"#,
        r#"{"State":7,"Detail":"","StdoutSize":-1,"WorkType":"","ExtraData":"Unknown WorkType"}"#,
        r#"{"State":1,"Detail":"Running","StdoutSize":5,"WorkType":"remote","ExtraData":{"RemoteNode":"bar","RemoteWorkType":"echo","RemoteParams":{"params":"-n","secret_token":"s"},"RemoteUnitID":"abc","RemoteStarted":true,"LocalCancelled":false,"LocalReleased":false,"SignWork":true,"TLSClient":"cli","Expiration":"2026-12-07T21:00:00.5Z"}}"#,
        r#"{"State":0,"Detail":"","StdoutSize":0,"WorkType":"remote","ExtraData":{"RemoteNode":"bar","RemoteWorkType":"echo","RemoteParams":{},"RemoteUnitID":"","RemoteStarted":false,"LocalCancelled":true,"LocalReleased":true,"SignWork":false,"TLSClient":"","Expiration":"0001-01-01T00:00:00Z"}}"#,
        r#"{"state":2,"detail":"lower case keys"}"#,
        r#"{"State":1e3,"Detail":"float"}"#,
        "",
    ];
    for (i, f) in files.iter().enumerate() {
        let mut bytes = f.as_bytes().to_vec();
        bytes.push(b'\n');
        s.put(&format!("status-{i:02}"), bytes)?;
    }
    Ok(())
}

fn signature_seeds() -> Result<()> {
    let s = Corpus::new("work_signature")?;
    let testdata = root().join("core/src/work/testdata");
    let at = UNIX_EPOCH + Duration::from_secs(receptor_fuzz_targets::SIGNATURE_CHECK_TIME);
    let signer = |file: &str, expiration: Duration| -> Result<WorkSigner> {
        Ok(WorkSigner::from_pem(
            &std::fs::read(testdata.join(file))?,
            expiration,
        )?)
    };
    let hour = Duration::from_secs(3600);
    let pkcs1 = signer("sign_private_pkcs1.pem", hour)?;
    s.put(
        "valid",
        pkcs1.sign_at("fuzz", at - Duration::from_secs(60))?,
    )?;
    s.put("other-audience", pkcs1.sign_at("bar", at)?)?;
    s.put("expired", pkcs1.sign_at("fuzz", at - 2 * hour)?)?;
    s.put("not-yet-valid", pkcs1.sign_at("fuzz", at + hour)?)?;
    let pkcs8 = signer("sign_private_pkcs8.pem", hour)?;
    s.put("valid-pkcs8", pkcs8.sign_at("fuzz", at)?)?;
    let other = signer("other_private.pem", hour)?;
    s.put("other-key", other.sign_at("fuzz", at)?)?;
    let valid = pkcs1.sign_at("fuzz", at)?;
    s.put("bearer", format!("Bearer {valid}"))?;
    let mut parts = valid.splitn(3, '.');
    let (_, claims, sig) = (parts.next(), parts.next(), parts.next());
    let claims = claims.unwrap_or_default();
    let sig = sig.unwrap_or_default();
    // {"alg":"none","typ":"JWT"}, {"alg":"HS256"}, {"alg":"ES256"}, {}
    for (name, header) in [
        ("alg-none", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"),
        ("alg-hs256", "eyJhbGciOiJIUzI1NiJ9"),
        ("alg-es256", "eyJhbGciOiJFUzI1NiJ9"),
        ("no-alg", "e30"),
    ] {
        s.put(name, format!("{header}.{claims}.{sig}"))?;
    }
    s.put("two-segments", format!("{claims}.{sig}"))?;
    s.put("empty", "")?;
    Ok(())
}

fn plugin_config_seeds() -> Result<()> {
    let p = Corpus::new("plugin_config")?;
    let sections: &[&str] = &[
        r#"{"port":2222,"bindaddr":"0.0.0.0","tls":"srv","cost":1.5,"nodecost":{"bar":2}}"#,
        r#"{"address":"localhost:2222","redial":"yes","cost":"2","allowedpeers":["a","b"]}"#,
        r#"{"worktype":"cat","command":"cat","params":"-n","allowruntimeparams":true,"verifysignature":"off"}"#,
        r#"{"Port":"65536","port":"-1"}"#,
        r#"{"workType":"sh","command":"bash","params":"-c \"echo 'hi there'\" a\\ b \"unclosed","verifysignature":"1"}"#,
        r#"{"worktype":"x","command":"","params":"'"}"#,
        r#"{"port":1e3,"cost":-0.0,"redial":1}"#,
        r#"{"address":"ws://localhost:8080/path","extraheader":"X: y","tlsconfig":{"name":"c","insecureskipverify":true}}"#,
        "null",
        "",
        "[1,2]",
        r#""string""#,
    ];
    for (i, s) in sections.iter().enumerate() {
        p.put(&format!("section-{i:02}"), s)?;
    }
    Ok(())
}

/// A network that records what its one socket sends and never delivers anything.
struct Capture {
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
}

struct CaptureSocket {
    service: String,
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl DatagramNetwork for Capture {
    type Socket = CaptureSocket;

    fn node_id(&self) -> &str {
        "alice"
    }

    async fn open(
        &self,
        service: Option<&str>,
        _advertise: Option<ServiceAdvertisement>,
    ) -> std::result::Result<CaptureSocket, MeshError> {
        Ok(CaptureSocket {
            service: service.unwrap_or("q1").to_owned(),
            sent: self.sent.clone(),
        })
    }
}

impl DatagramSocket for CaptureSocket {
    fn service(&self) -> &str {
        &self.service
    }

    async fn send_to(
        &self,
        _node: &str,
        _service: &str,
        data: &[u8],
    ) -> std::result::Result<(), MeshError> {
        if let Ok(mut sent) = self.sent.lock() {
            sent.push(data.to_vec());
        }
        Ok(())
    }

    async fn recv(&mut self) -> std::result::Result<Incoming, MeshError> {
        std::future::pending().await
    }
}

fn quic_seeds() -> Result<()> {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let net = Capture { sent: sent.clone() };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let opts = DialOptions {
            tls: None,
            config: StreamConfig {
                insecure_key: InsecureKeyType::EcdsaP256,
                handshake_timeout: Duration::from_millis(300),
                ..StreamConfig::default()
            },
        };
        let _ = dial_with(&net, "fuzz", "fuzzsvc", opts).await;
    });
    let initials = sent.lock().map(|s| s.clone()).unwrap_or_default();
    let first = initials.first().ok_or("the dialer sent nothing")?;
    let q = Corpus::new("quic_datagrams")?;
    q.put("initial", record(0, first))?;
    let mut twice = record(0, first);
    twice.extend_from_slice(&record(4, first));
    twice.extend_from_slice(&record(18, b""));
    twice.extend_from_slice(&record(3, first));
    q.put("initial-twice-then-gone", twice)?;
    let mut short = first.clone();
    short.truncate(100);
    q.put("short", record(1, &short))?;
    q.put("garbage", record(0, &[0x40, 1, 2, 3, 4, 5, 6, 7, 8]))?;
    q.put(
        "version-negotiation",
        record(0, &[0xc0, 0, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0]),
    )?;
    let mut big = first.clone();
    big.resize(20000, 0);
    q.put("oversized", record(0, &big))?;
    Ok(())
}

fn main() -> Result<()> {
    mesh_seeds()?;
    control_seeds()?;
    config_seeds()?;
    status_seeds()?;
    signature_seeds()?;
    plugin_config_seeds()?;
    quic_seeds()?;
    println!("seeds written under {}", Path::new("fuzz/corpus").display());
    Ok(())
}
