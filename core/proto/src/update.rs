//! ROUTE messages (type 1): link-state routing updates.
//!
//! Go encodes the struct with its fields in declaration order and `Connections`
//! keys sorted:
//!
//! ```json
//! {"NodeID":"gonode","UpdateID":"ZVmusV57","UpdateEpoch":30125592113325676,"UpdateSequence":2,"Connections":{"probe":1},"ForwardingNode":"gonode","SuspectedDuplicate":0}
//! ```
//!
//! Epochs exceed 2^53, so they are read and written as `u64` and never pass through
//! `f64`. Decoding follows Go: keys case-insensitive, unknown keys ignored, missing
//! keys and `null` leave zero values, fractions or exponents in integers are errors.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::MessageError;
use crate::go::json as gojson;
use crate::msgtype::MessageType;

/// A routing update.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct RoutingUpdate {
    /// Originator of the update.
    #[serde(rename = "NodeID")]
    pub node_id: String,
    /// Random 8-character flood de-duplication key.
    #[serde(rename = "UpdateID")]
    pub update_id: String,
    /// Originator's epoch (`unix_seconds << 24` + 24 random bits).
    #[serde(rename = "UpdateEpoch")]
    pub update_epoch: u64,
    /// Originator's update counter.
    #[serde(rename = "UpdateSequence")]
    pub update_sequence: u64,
    /// Originator's established neighbours → link cost.
    #[serde(rename = "Connections")]
    pub connections: BTreeMap<String, f64>,
    /// The node that put this copy on the link.
    #[serde(rename = "ForwardingNode")]
    pub forwarding_node: String,
    /// 0, or the epoch of a suspected duplicate of `node_id`.
    #[serde(rename = "SuspectedDuplicate")]
    pub suspected_duplicate: u64,
}

impl RoutingUpdate {
    /// The JSON body, byte-identical to what Go sends.
    pub fn to_json(&self) -> Vec<u8> {
        // Strings, integers and finite floats only (costs come from JSON or config).
        gojson::to_vec(self).unwrap_or_default()
    }

    /// The complete ROUTE message (type byte + JSON).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + 24 * self.connections.len());
        out.push(MessageType::Route as u8);
        out.extend_from_slice(&self.to_json());
        out
    }

    /// Decodes a JSON body.
    pub fn decode(body: &[u8]) -> Result<RoutingUpdate, MessageError> {
        serde_json::from_slice(body).map_err(|e| MessageError::Json(e.to_string()))
    }
}

const FIELDS: &[&str] = &[
    "NodeID",
    "UpdateID",
    "UpdateEpoch",
    "UpdateSequence",
    "Connections",
    "ForwardingNode",
    "SuspectedDuplicate",
];

impl<'de> Deserialize<'de> for RoutingUpdate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RoutingUpdate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a routing update object")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RoutingUpdate::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut u = RoutingUpdate::default();
                while let Some(f) = map.next_key_seed(gojson::FieldSeed(FIELDS))? {
                    match f {
                        Some(0) => set(&mut u.node_id, map.next_value()?),
                        Some(1) => set(&mut u.update_id, map.next_value()?),
                        Some(2) => set(&mut u.update_epoch, map.next_value()?),
                        Some(3) => set(&mut u.update_sequence, map.next_value()?),
                        Some(4) => {
                            let c: Option<BTreeMap<String, Option<f64>>> = map.next_value()?;
                            u.connections = c
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.unwrap_or(0.0)))
                                .collect();
                        }
                        Some(5) => set(&mut u.forwarding_node, map.next_value()?),
                        Some(6) => set(&mut u.suspected_duplicate, map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(u)
            }
        }
        d.deserialize_any(V)
    }
}

/// Go leaves a field unchanged when the JSON value is `null`.
fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIVE: &str = r#"{"NodeID":"gonode","UpdateID":"ZVmusV57","UpdateEpoch":30125592113325676,"UpdateSequence":2,"Connections":{"probe":1},"ForwardingNode":"gonode","SuspectedDuplicate":0}"#;

    #[test]
    fn live_update_round_trips_byte_for_byte() {
        let u = RoutingUpdate::decode(LIVE.as_bytes()).unwrap();
        assert_eq!(u.update_epoch, 30125592113325676);
        assert_eq!(u.connections.get("probe"), Some(&1.0));
        assert_eq!(String::from_utf8(u.to_json()).unwrap(), LIVE);
        let empty = r#"{"NodeID":"probe","UpdateID":"IGFz6J9Z","UpdateEpoch":30125592135630026,"UpdateSequence":1,"Connections":{},"ForwardingNode":"probe","SuspectedDuplicate":0}"#;
        let u = RoutingUpdate::decode(empty.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(u.to_json()).unwrap(), empty);
        assert_eq!(u.encode().len(), 157, "frame_len of the live transcript");
    }

    #[test]
    fn costs_use_go_float_format() {
        let mut u = RoutingUpdate::default();
        u.connections.insert("b".into(), 2.5);
        u.connections.insert("a".into(), 0.1);
        u.connections.insert("c".into(), 100.0);
        let s = String::from_utf8(u.to_json()).unwrap();
        assert!(
            s.contains(r#""Connections":{"a":0.1,"b":2.5,"c":100}"#),
            "{s}"
        );
    }

    #[test]
    fn decoding_follows_go_rules() {
        let u = RoutingUpdate::decode(
            br#"{"nodeid":"x","UPDATEEPOCH":18446744073709551615,"Extra":{"a":[1,2]},"connections":{"y":null,"z":3},"ForwardingNode":null}"#,
        )
        .unwrap();
        assert_eq!(u.node_id, "x");
        assert_eq!(u.update_epoch, u64::MAX);
        assert_eq!(u.connections.get("y"), Some(&0.0));
        assert_eq!(u.connections.get("z"), Some(&3.0));
        assert_eq!(u.forwarding_node, "");
        assert_eq!(u.update_sequence, 0);
        assert_eq!(
            RoutingUpdate::decode(b"null").unwrap(),
            RoutingUpdate::default()
        );
        assert_eq!(
            RoutingUpdate::decode(b"{}").unwrap(),
            RoutingUpdate::default()
        );
        for bad in [
            &br#"{"UpdateEpoch":1.5}"#[..],
            br#"{"UpdateEpoch":1e3}"#,
            br#"{"UpdateEpoch":-1}"#,
            br#"{"UpdateEpoch":18446744073709551616}"#,
            br#"{"NodeID":5}"#,
            br#"{"Connections":[]}"#,
            br#"{"Connections":{"a":"1"}}"#,
            br#"[]"#,
            br#"{"NodeID":"a"} x"#,
            br#"{"NodeID":"a""#,
            b"",
        ] {
            assert!(
                RoutingUpdate::decode(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn update() -> impl Strategy<Value = RoutingUpdate> {
        (
            "\\PC{0,12}",
            "[0-9a-zA-Z]{8}",
            any::<u64>(),
            any::<u64>(),
            prop::collection::btree_map("\\PC{0,10}", 0.001f64..1e9, 0..6),
            "\\PC{0,12}",
            any::<u64>(),
        )
            .prop_map(|(n, i, e, s, c, f, d)| RoutingUpdate {
                node_id: n,
                update_id: i,
                update_epoch: e,
                update_sequence: s,
                connections: c,
                forwarding_node: f,
                suspected_duplicate: d,
            })
    }

    proptest! {
        #[test]
        fn round_trip(u in update()) {
            let enc = u.encode();
            prop_assert_eq!(enc[0], 1);
            prop_assert_eq!(RoutingUpdate::decode(&enc[1..]), Ok(u));
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = RoutingUpdate::decode(&b);
        }
    }
}
