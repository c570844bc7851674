//! DATA messages (type 0): the datagrams carried between `(node, service)` addresses.
//!
//! Layout (36-byte header, integers big-endian, then the payload to the end):
//!
//! ```text
//! 0 type=0 | 1 HopsToLive | 2..4 reserved | 4..12 HH64(FromNode) | 12..20 HH64(ToNode)
//! 20..28 FromService (NUL padded) | 28..36 ToService (NUL padded) | 36.. payload
//! ```
//!
//! Unreachable notices are DATA messages from service `unreach` to service `unreach`
//! whose payload is the JSON [`UnreachableMessage`].

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::MessageError;
use crate::go::json as gojson;

/// Length of the DATA header.
pub const DATA_HEADER_LEN: usize = 36;

/// Hops-to-live given to every message a node originates (29 on the wire once the
/// originating node has decremented it).
pub const MAX_FORWARDING_HOPS: u8 = 30;

/// Longest service name.
pub const MAX_SERVICE_LEN: usize = 8;

/// Reserved service answering pings.
pub const PING_SERVICE: &str = "ping";

/// Reserved service receiving unreachable notices.
pub const UNREACH_SERVICE: &str = "unreach";

/// Problem reported when no local listener has the destination service.
pub const PROBLEM_SERVICE_UNKNOWN: &str = "service unknown";
/// Problem reported when HopsToLive ran out before the destination.
pub const PROBLEM_EXPIRED: &str = "message expired";
/// Problem reported when a firewall rule rejected the message.
pub const PROBLEM_REJECTED: &str = "blocked by firewall";

/// A service name: at most 8 bytes, carried NUL-padded.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ServiceName {
    bytes: [u8; MAX_SERVICE_LEN],
    len: u8,
}

/// A service name longer than 8 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service name too long")]
pub struct ServiceNameTooLong;

impl ServiceName {
    /// The name `s` (at most 8 bytes).
    pub fn new(s: &str) -> Result<ServiceName, ServiceNameTooLong> {
        Self::from_bytes(s.as_bytes())
    }

    /// The name made of raw bytes (at most 8).
    pub fn from_bytes(b: &[u8]) -> Result<ServiceName, ServiceNameTooLong> {
        if b.len() > MAX_SERVICE_LEN {
            return Err(ServiceNameTooLong);
        }
        let mut bytes = [0u8; MAX_SERVICE_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Ok(ServiceName {
            bytes,
            len: b.len() as u8,
        })
    }

    /// Decodes a NUL-padded field: only trailing NULs are stripped.
    pub fn from_padded(field: [u8; MAX_SERVICE_LEN]) -> ServiceName {
        let len = field.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        ServiceName {
            bytes: field,
            len: len as u8,
        }
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The NUL-padded wire form.
    pub fn padded(&self) -> [u8; MAX_SERVICE_LEN] {
        let mut out = [0u8; MAX_SERVICE_LEN];
        out[..usize::from(self.len)].copy_from_slice(self.as_bytes());
        out
    }

    /// The name as text (invalid UTF-8 replaced, as Go would print it).
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }

    /// Whether this is the name `s`.
    pub fn is(&self, s: &str) -> bool {
        self.as_bytes() == s.as_bytes()
    }
}

impl fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The fixed header of a DATA message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// Remaining hops; decremented by every node a message leaves.
    pub hops_to_live: u8,
    /// HH64 of the sending node.
    pub from_node: u64,
    /// HH64 of the destination node.
    pub to_node: u64,
    /// Sending service.
    pub from_service: ServiceName,
    /// Destination service.
    pub to_service: ServiceName,
}

impl DataHeader {
    /// Decodes the header of a complete DATA message (type byte included); the
    /// payload is `&msg[DATA_HEADER_LEN..]`.
    pub fn decode(msg: &[u8]) -> Result<DataHeader, MessageError> {
        let Some(h) = msg.get(..DATA_HEADER_LEN) else {
            return Err(MessageError::DataTooShort(msg.len()));
        };
        if h[0] != 0 {
            return Err(MessageError::UnknownType(h[0]));
        }
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[o..o + 8]);
            b
        };
        Ok(DataHeader {
            hops_to_live: h[1],
            from_node: u64::from_be_bytes(u64_at(4)),
            to_node: u64::from_be_bytes(u64_at(12)),
            from_service: ServiceName::from_padded(u64_at(20)),
            to_service: ServiceName::from_padded(u64_at(28)),
        })
    }

    /// Encodes the header (type byte included).
    pub fn encode(&self) -> [u8; DATA_HEADER_LEN] {
        let mut h = [0u8; DATA_HEADER_LEN];
        h[1] = self.hops_to_live;
        h[4..12].copy_from_slice(&self.from_node.to_be_bytes());
        h[12..20].copy_from_slice(&self.to_node.to_be_bytes());
        h[20..28].copy_from_slice(&self.from_service.padded());
        h[28..36].copy_from_slice(&self.to_service.padded());
        h
    }
}

/// Offset of the HopsToLive byte in a DATA message.
pub const HOPS_TO_LIVE_OFFSET: usize = 1;

/// Payload of an unreachable notice: describes the message that could not be delivered.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct UnreachableMessage {
    /// Sender of the undeliverable message.
    #[serde(rename = "FromNode")]
    pub from_node: String,
    /// Destination node of the undeliverable message.
    #[serde(rename = "ToNode")]
    pub to_node: String,
    /// Sending service of the undeliverable message.
    #[serde(rename = "FromService")]
    pub from_service: String,
    /// Destination service of the undeliverable message.
    #[serde(rename = "ToService")]
    pub to_service: String,
    /// What went wrong (`service unknown`, `message expired`, `blocked by firewall`).
    #[serde(rename = "Problem")]
    pub problem: String,
}

impl UnreachableMessage {
    /// JSON as Go encodes it.
    pub fn to_json(&self) -> Vec<u8> {
        // Only strings: serialization cannot fail.
        gojson::to_vec(self).unwrap_or_default()
    }

    /// Decodes the JSON payload (Go rules: case-insensitive keys, unknown keys ignored).
    pub fn from_json(b: &[u8]) -> Result<UnreachableMessage, MessageError> {
        serde_json::from_slice(b).map_err(|e| MessageError::Json(e.to_string()))
    }
}

impl<'de> Deserialize<'de> for UnreachableMessage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UnreachableMessage;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an unreachable message object")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(UnreachableMessage::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                const FIELDS: &[&str] =
                    &["FromNode", "ToNode", "FromService", "ToService", "Problem"];
                let mut m = UnreachableMessage::default();
                while let Some(f) = map.next_key_seed(gojson::FieldSeed(FIELDS))? {
                    let slot = match f {
                        Some(0) => &mut m.from_node,
                        Some(1) => &mut m.to_node,
                        Some(2) => &mut m.from_service,
                        Some(3) => &mut m.to_service,
                        Some(4) => &mut m.problem,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    if let Some(v) = map.next_value::<Option<String>>()? {
                        *slot = v;
                    }
                }
                Ok(m)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::node_hash;
    use proptest::prelude::*;

    #[test]
    fn decodes_live_ping_header() {
        let hex = "001d0000aaed127a25b69a12fc9393bd9ab34eba3373704c4f476f5970696e6700000000";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let h = DataHeader::decode(&bytes).unwrap();
        assert_eq!(h.hops_to_live, 29);
        assert_eq!(h.from_node, node_hash("probe"));
        assert_eq!(h.to_node, node_hash("gonode"));
        assert!(h.from_service.is("3spLOGoY"));
        assert!(h.to_service.is("ping"));
        assert_eq!(h.encode().to_vec(), bytes);
    }

    #[test]
    fn only_trailing_nuls_are_stripped() {
        let s = ServiceName::from_padded(*b"a\0b\0\0\0\0\0");
        assert_eq!(s.as_bytes(), b"a\0b");
        assert_eq!(ServiceName::from_padded([0; 8]).as_bytes(), b"");
        assert!(ServiceName::new("123456789").is_err());
    }

    #[test]
    fn short_data_is_rejected() {
        assert_eq!(
            DataHeader::decode(&[0; 35]),
            Err(MessageError::DataTooShort(35))
        );
    }

    #[test]
    fn unreachable_json_matches_go() {
        let m = UnreachableMessage {
            from_node: "probe".into(),
            to_node: "gonode".into(),
            from_service: "HULpnUbc".into(),
            to_service: "nosuchsv".into(),
            problem: PROBLEM_SERVICE_UNKNOWN.into(),
        };
        let want = r#"{"FromNode":"probe","ToNode":"gonode","FromService":"HULpnUbc","ToService":"nosuchsv","Problem":"service unknown"}"#;
        assert_eq!(String::from_utf8(m.to_json()).unwrap(), want);
        assert_eq!(UnreachableMessage::from_json(want.as_bytes()).unwrap(), m);
        let loose = br#"{"fromnode":"probe","TONODE":"gonode","x":[1,{}],"FromService":null,"problem":"p"}"#;
        let got = UnreachableMessage::from_json(loose).unwrap();
        assert_eq!(got.to_node, "gonode");
        assert_eq!(got.from_service, "");
        assert_eq!(got.problem, "p");
        assert!(UnreachableMessage::from_json(b"[1]").is_err());
    }

    fn service() -> impl Strategy<Value = ServiceName> {
        prop::collection::vec(any::<u8>(), 0..=8).prop_map(|mut v| {
            while v.last() == Some(&0) {
                v.pop();
            }
            ServiceName::from_bytes(&v).unwrap()
        })
    }

    proptest! {
        #[test]
        fn header_round_trip(htl in any::<u8>(), f in any::<u64>(), t in any::<u64>(), fs in service(), ts in service()) {
            let h = DataHeader { hops_to_live: htl, from_node: f, to_node: t, from_service: fs, to_service: ts };
            prop_assert_eq!(DataHeader::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = DataHeader::decode(&b);
            let _ = UnreachableMessage::from_json(&b);
        }
    }
}
