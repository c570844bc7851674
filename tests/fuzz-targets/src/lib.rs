//! The fuzz targets of receptor-rs: one function per decoder of outside input.
//!
//! Each function takes arbitrary bytes, feeds them to a decoder the way the node does,
//! and panics only if the decoder panics or breaks an invariant checked here (a frame
//! longer than its prefix allows, a re-encoded message that decodes differently, a
//! message the node itself sends that it could not decode). The libFuzzer binaries in
//! `fuzz/fuzz_targets/` call these functions, and so does the stable-Rust test
//! `tests/corpus.rs` (every committed seed plus random inputs), so CI exercises the same
//! code with or without a nightly toolchain.
//!
//! [`TARGETS`] lists them by the name of their fuzz binary and corpus folder.

mod quic;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::OnceLock;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::BytesMut;
use receptor_core::control::command::Args;
use receptor_core::work::signing::SignatureVerifier;
use receptor_core::work::UnitStatus;
use receptor_plugin_sdk::config::Section;
use receptor_proto::data::{DataHeader, UnreachableMessage};
use receptor_proto::frame::{FrameDecoder, FrameError, FRAME_HEADER_LEN, MAX_FRAME_LEN};
use receptor_proto::message::Message;
use receptor_proto::node::{NodeConfig, NodeState, NodeStatus, SessionConfig};
use receptor_proto::svcad::SvcadMessage;
use receptor_proto::update::RoutingUpdate;

pub use quic::{quic_datagrams, replies_to as quic_replies_to};

/// A fuzz target: a name (its binary and corpus folder) and the function it runs.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("frame", frame),
    ("message", message),
    ("mesh_node", mesh_node),
    ("control_line", control_line),
    ("config_yaml", config_yaml),
    ("config_cli", config_cli),
    ("unit_status", unit_status),
    ("work_signature", work_signature),
    ("plugin_config", plugin_config),
    ("quic_datagrams", quic_datagrams),
];

/// Byte-stream framing: the input, cut into chunks whose size the first byte picks, goes
/// through a [`FrameDecoder`] as a TCP backend feeds it.
pub fn frame(data: &[u8]) {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut decoder = FrameDecoder::default();
    let mut consumed = 0usize;
    for piece in stream.chunks(chunk) {
        decoder.push(piece);
        loop {
            match decoder.next_frame() {
                Ok(Some(f)) => {
                    assert!(!f.is_empty() && f.len() <= MAX_FRAME_LEN);
                    let start = consumed + FRAME_HEADER_LEN;
                    assert_eq!(&stream[start..start + f.len()], &f[..]);
                    let mut again = BytesMut::new();
                    receptor_proto::frame::encode_frame(&f, &mut again)
                        .expect("a received frame can be sent again");
                    assert_eq!(&stream[consumed..start + f.len()], &again[..]);
                    consumed = start + f.len();
                }
                Ok(None) => break,
                Err(FrameError::Empty) => return,
                Err(e) => panic!("decoder reported a send-side error: {e}"),
            }
        }
    }
    assert_eq!(consumed + decoder.buffered(), stream.len());
}

/// One mesh message: envelope, DATA header, ROUTE and SVCAD bodies and the unreachable
/// notice a DATA payload may carry. What decodes must survive re-encoding unchanged.
pub fn message(data: &[u8]) {
    let Ok(msg) = Message::decode(data) else {
        return;
    };
    match msg {
        Message::Data { header, payload } => {
            let mut again = header.encode().to_vec();
            again.extend_from_slice(payload);
            assert_eq!(DataHeader::decode(&again).ok(), Some(header));
            if let Ok(u) = UnreachableMessage::from_json(payload) {
                assert_eq!(UnreachableMessage::from_json(&u.to_json()).ok(), Some(u));
            }
        }
        Message::Route(update) => {
            let again = update.encode();
            assert_eq!(RoutingUpdate::decode(&again[1..]).ok(), Some(update));
        }
        Message::ServiceAdvertisement(svcad) => {
            let again = SvcadMessage::encode(&svcad.ad, svcad.cancel);
            assert_eq!(SvcadMessage::decode(&again[1..]).ok(), Some(svcad));
        }
        Message::Reject => {}
    }
}

/// The routing state machine of a node with two backend sessions, driven by a script:
/// each step is an opcode byte, then for a message a `u16` little-endian length and the
/// message. Opcodes: 0/1 deliver a message on session 0/1, 2 let time pass (next byte ×
/// 250 ms), 3 close session 0, 4 reopen it. Everything the node sends must decode.
pub fn mesh_node(data: &[u8]) {
    mesh_node_status(data);
}

/// Runs [`mesh_node`] and returns the node's status at the end of the script.
#[doc(hidden)]
pub fn mesh_node_status(data: &[u8]) -> NodeStatus {
    let start = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let mut node = NodeState::new(
        NodeConfig {
            node_id: "fuzz".to_owned(),
            max_idle: Duration::from_secs(21),
        },
        start,
        wall,
        7,
    );
    let mut now = start;
    let mut sessions = [
        node.open_session(now, SessionConfig::default()),
        node.open_session(
            now,
            SessionConfig {
                cost: 2.5,
                node_cost: BTreeMap::from([("peer".to_owned(), 4.0)]),
                allowed_peers: Some(vec!["peer".to_owned(), "other".to_owned()]),
            },
        ),
    ];
    let mut rest = data;
    let mut steps = 0;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        steps += 1;
        if steps > 256 {
            break;
        }
        match op % 5 {
            0 | 1 => {
                let Some((len, tail)) = rest.split_first_chunk::<2>() else {
                    break;
                };
                let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
                let (msg, tail) = tail.split_at(len);
                rest = tail;
                node.handle_message(now, sessions[usize::from(op % 5)], msg);
            }
            2 => {
                let Some((&ticks, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                now += Duration::from_millis(250) * u32::from(ticks);
                node.handle_timeout(now);
            }
            3 => node.session_closed(now, sessions[0]),
            _ => sessions[0] = node.open_session(now, SessionConfig::default()),
        }
        while let Some(t) = node.poll_transmit() {
            if let Err(e) = Message::decode(&t.message) {
                panic!(
                    "the node sent a message it cannot decode ({e}): {:?}",
                    t.message
                );
            }
        }
        while node.poll_event().is_some() {}
        let _ = node.status(now);
    }
    node.status(now)
}

/// One control-service command line (string or JSON form) and the parameters of the
/// commands that parse their own (`work`, incl. `submit` headers; `connect`; `status`).
pub fn control_line(data: &[u8]) {
    let Ok((name, args)) = receptor_core::fuzzing::parse_control_line(data) else {
        return;
    };
    let _ = receptor_core::work::request::parse(&args);
    let _ = receptor_core::control::connect::ConnectTarget::parse(&args);
    let _ = receptor_core::control::status::requested_fields(&args);
    if let Args::Text(text) = &args {
        let _ = receptor_core::work::request::parse_go_duration(text);
        let _ = receptor_core::work::request::parse_go_int(text);
    }
    drop(name);
}

/// A configuration file, either form (list or `version: 2` map).
pub fn config_yaml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = receptor_core::config::load_str(text, "fuzz.yml");
    }
}

/// A command line: NUL-separated words after the program name.
pub fn config_cli(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let args = std::iter::once(OsString::from("receptor"))
        .chain(text.split('\0').take(64).map(OsString::from));
    let _ = receptor_core::config::parse_args(args);
}

/// A unit's `status` file, with the remote-unit `ExtraData` inside it; what loads must
/// save and load back (numbers of `ExtraData` as Go writes them), and render as a `work status` reply.
pub fn unit_status(data: &[u8]) {
    let Ok(status) = UnitStatus::from_file_bytes(data) else {
        return;
    };
    let saved = status.to_file_bytes();
    let again = UnitStatus::from_file_bytes(&saved).expect("a saved status file loads");
    // Numbers in `ExtraData` are written as Go writes a float64 (`1e3` and `1000.0` both
    // become `1000`), so the value read back may differ in representation only: the saved
    // bytes must be a fixed point, and the typed fields must come back unchanged.
    assert_eq!(again.to_file_bytes(), saved);
    assert_eq!(
        (
            again.state,
            &again.detail,
            again.stdout_size,
            &again.work_type
        ),
        (
            status.state,
            &status.detail,
            status.stdout_size,
            &status.work_type
        )
    );
    let _ = receptor_proto::gojson::to_vec(&status.reply(None));
    let extra = status.extra.as_ref();
    if let Ok(remote) = receptor_core::work::remote::RemoteExtraData::from_value(extra) {
        let value = remote.to_value();
        let back = receptor_core::work::remote::RemoteExtraData::from_value(Some(&value));
        assert_eq!(back.as_ref(), Ok(&remote));
    }
    let _ = receptor_core::work::remote::redacted_extra(extra);
}

/// The public key of `core/src/work/testdata/sign_public.pem`.
const SIGN_PUBLIC_PEM: &[u8] = include_bytes!("../../../core/src/work/testdata/sign_public.pem");

/// When signature seeds are checked (inside the lifetime of the corpus tokens).
pub const SIGNATURE_CHECK_TIME: u64 = 1_795_000_000;

/// A work-signing token (JWT) as a node with `work-verification` checks it.
pub fn work_signature(data: &[u8]) {
    static VERIFIER: OnceLock<SignatureVerifier> = OnceLock::new();
    let verifier = VERIFIER.get_or_init(|| {
        SignatureVerifier::from_pem(SIGN_PUBLIC_PEM, "fuzz").expect("test key loads")
    });
    let token = String::from_utf8_lossy(data);
    let now = UNIX_EPOCH + Duration::from_secs(SIGNATURE_CHECK_TIME);
    let _ = verifier.verify_at(&token, now);
}

/// A plugin's configuration section as the host hands it over (JSON), read through every
/// accessor of the SDK, as a work type's common keys and as a `work-command` section
/// (whose `params` are split like a shell would).
pub fn plugin_config(data: &[u8]) {
    let Ok(section) = Section::parse("fuzz-section", data) else {
        return;
    };
    let keys: Vec<String> = section.keys().map(str::to_owned).collect();
    for key in keys.iter().map(String::as_str).chain(["absent"]) {
        let _ = section.get(key);
        let _ = section.string(key);
        let _ = section.required_string(key);
        let _ = section.bool(key);
        let _ = section.i64(key);
        let _ = section.int_in(key, -5, 5);
        let _ = section.port(key);
        let _ = section.f64(key);
    }
    let _ = section.reject_unknown_keys(&["port", "address"], &["cost", "tls"]);
    let _ = receptor_plugin_sdk::WorkTypeInfo::from_section(&section, Some("fuzz"));
    if let Ok(command) = receptor_command::config::CommandConfig::from_section(&section) {
        let _ = receptor_command::shlex::split(&command.params);
    }
}
