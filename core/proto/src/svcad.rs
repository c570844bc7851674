//! Service advertisements (SVCAD messages).
//!
//! Nodes flood an advertisement for each advertised local service every 60 s (and
//! 5 s after a new one appears), and a `Cancel` when it closes. Receivers keep an ad
//! only if its `Time` is strictly after the stored one and forward the original
//! bytes unchanged.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::MessageError;
use crate::go::json as gojson;
use crate::go::time::GoTime;
use crate::msgtype::MessageType;

/// A work type offered by a node, carried in its control service advertisement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkCommand {
    /// Work type name.
    #[serde(rename = "WorkType")]
    pub work_type: String,
    /// Whether submissions must be signed.
    #[serde(rename = "Secure")]
    pub secure: bool,
}

/// One service advertisement, in the field order Go uses on the wire and in `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceAdvertisement {
    /// Node offering the service.
    #[serde(rename = "NodeID")]
    pub node_id: String,
    /// Service name (at most 8 bytes).
    #[serde(rename = "Service")]
    pub service: String,
    /// RFC 3339 time the ad was generated, exactly as received (Go format).
    #[serde(rename = "Time")]
    pub time: String,
    /// 0 datagram, 1 stream, 2 stream with user TLS.
    #[serde(rename = "ConnType")]
    pub conn_type: u8,
    /// Free-form tags, or null.
    #[serde(rename = "Tags")]
    pub tags: Option<BTreeMap<String, String>>,
    /// Work types (control service ads only), or null.
    #[serde(rename = "WorkCommands")]
    pub work_commands: Option<Vec<WorkCommand>>,
}

impl ServiceAdvertisement {
    /// The `type` tag value that marks the control service, whose ad carries the
    /// node's work commands.
    pub const CONTROL_SERVICE_TYPE: &'static str = "Control Service";

    /// Whether this ad is for a control service (`Tags.type == "Control Service"`).
    pub fn is_control_service(&self) -> bool {
        self.tags
            .as_ref()
            .and_then(|t| t.get("type"))
            .is_some_and(|t| t == Self::CONTROL_SERVICE_TYPE)
    }
}

/// A SVCAD message body: an advertisement plus its `Cancel` flag (Go's
/// `serviceAdvertisementFull`).
#[derive(Debug, Clone, PartialEq)]
pub struct SvcadMessage {
    /// The advertisement (its `time` is the received string, verbatim).
    pub ad: ServiceAdvertisement,
    /// The parsed `time`, for "strictly newer" comparisons.
    pub time: GoTime,
    /// `true` withdraws `(node_id, service)`.
    pub cancel: bool,
}

/// Field order of Go's `serviceAdvertisementFull`.
#[derive(Serialize)]
struct SvcadWire<'a> {
    #[serde(rename = "NodeID")]
    node_id: &'a str,
    #[serde(rename = "Service")]
    service: &'a str,
    #[serde(rename = "Time")]
    time: &'a str,
    #[serde(rename = "ConnType")]
    conn_type: u8,
    #[serde(rename = "Tags")]
    tags: &'a Option<BTreeMap<String, String>>,
    #[serde(rename = "WorkCommands")]
    work_commands: &'a Option<Vec<WorkCommand>>,
    #[serde(rename = "Cancel")]
    cancel: bool,
}

impl SvcadMessage {
    /// The complete SVCAD message (type byte + JSON), byte-identical to Go's.
    pub fn encode(ad: &ServiceAdvertisement, cancel: bool) -> Vec<u8> {
        let wire = SvcadWire {
            node_id: &ad.node_id,
            service: &ad.service,
            time: &ad.time,
            conn_type: ad.conn_type,
            tags: &ad.tags,
            work_commands: &ad.work_commands,
            cancel,
        };
        let mut out = vec![MessageType::ServiceAdvertisement as u8];
        // Strings, integers and booleans only: serialization cannot fail.
        out.extend_from_slice(&gojson::to_vec(&wire).unwrap_or_default());
        out
    }

    /// Decodes a JSON body with Go's rules (case-insensitive keys, unknown keys
    /// ignored, missing = zero; a `Time` that is not RFC 3339 is an error).
    pub fn decode(body: &[u8]) -> Result<SvcadMessage, MessageError> {
        let raw: RawSvcad =
            serde_json::from_slice(body).map_err(|e| MessageError::Json(e.to_string()))?;
        let (time, time_str) = match raw.time {
            None => (GoTime::ZERO, GoTime::ZERO.to_string()),
            Some(s) => match GoTime::parse(&s) {
                Ok(t) => (t, s),
                Err(e) => {
                    return Err(MessageError::Field {
                        field: "Time",
                        reason: e.to_string(),
                    })
                }
            },
        };
        Ok(SvcadMessage {
            ad: ServiceAdvertisement {
                node_id: raw.node_id,
                service: raw.service,
                time: time_str,
                conn_type: raw.conn_type,
                tags: raw.tags,
                work_commands: raw.work_commands,
            },
            time,
            cancel: raw.cancel,
        })
    }
}

/// Decoded fields before `Time` is validated.
#[derive(Default)]
struct RawSvcad {
    node_id: String,
    service: String,
    time: Option<String>,
    conn_type: u8,
    tags: Option<BTreeMap<String, String>>,
    work_commands: Option<Vec<WorkCommand>>,
    cancel: bool,
}

const SVCAD_FIELDS: &[&str] = &[
    "NodeID",
    "Service",
    "Time",
    "ConnType",
    "Tags",
    "WorkCommands",
    "Cancel",
];

impl<'de> Deserialize<'de> for RawSvcad {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSvcad;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a service advertisement object")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RawSvcad::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut r = RawSvcad::default();
                while let Some(f) = map.next_key_seed(gojson::FieldSeed(SVCAD_FIELDS))? {
                    match f {
                        Some(0) => set(&mut r.node_id, map.next_value()?),
                        Some(1) => set(&mut r.service, map.next_value()?),
                        Some(2) => {
                            if let Some(t) = map.next_value::<Option<String>>()? {
                                r.time = Some(t);
                            }
                        }
                        Some(3) => set(&mut r.conn_type, map.next_value()?),
                        Some(4) => {
                            let t: Option<BTreeMap<String, Option<String>>> = map.next_value()?;
                            r.tags = t.map(|t| {
                                t.into_iter()
                                    .map(|(k, v)| (k, v.unwrap_or_default()))
                                    .collect()
                            });
                        }
                        Some(5) => {
                            let w: Option<Vec<Option<GoWorkCommand>>> = map.next_value()?;
                            r.work_commands = w.map(|w| {
                                w.into_iter()
                                    .map(|c| c.map(|c| c.0).unwrap_or_default())
                                    .collect()
                            });
                        }
                        Some(6) => set(&mut r.cancel, map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(r)
            }
        }
        d.deserialize_any(V)
    }
}

/// A [`WorkCommand`] decoded with Go's rules.
struct GoWorkCommand(WorkCommand);

impl<'de> Deserialize<'de> for GoWorkCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GoWorkCommand;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a work command object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                const FIELDS: &[&str] = &["WorkType", "Secure"];
                let mut c = WorkCommand::default();
                while let Some(f) = map.next_key_seed(gojson::FieldSeed(FIELDS))? {
                    match f {
                        Some(0) => set(&mut c.work_type, map.next_value()?),
                        Some(1) => set(&mut c.secure, map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(GoWorkCommand(c))
            }
        }
        d.deserialize_map(V)
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

    const LIVE_GO: &str = r#"{"NodeID":"gonode","Service":"control","Time":"2026-11-25T16:47:01.425638621Z","ConnType":1,"Tags":{"type":"Control Service"},"WorkCommands":null,"Cancel":false}"#;

    #[test]
    fn live_ad_round_trips_byte_for_byte() {
        let m = SvcadMessage::decode(LIVE_GO.as_bytes()).unwrap();
        assert_eq!(m.ad.node_id, "gonode");
        assert_eq!(m.ad.conn_type, 1);
        assert!(m.ad.is_control_service());
        assert!(!m.cancel);
        let enc = SvcadMessage::encode(&m.ad, false);
        assert_eq!(&enc[1..], LIVE_GO.as_bytes());
    }

    #[test]
    fn work_commands_and_cancel() {
        let body = br#"{"nodeid":"n","service":"control","time":"2026-01-01T00:00:00+02:00","conntype":1,"tags":null,"workcommands":[{"worktype":"echo","secure":true},null],"cancel":true,"x":1}"#;
        let m = SvcadMessage::decode(body).unwrap();
        assert!(m.cancel);
        assert_eq!(m.ad.tags, None);
        let wc = m.ad.work_commands.clone().unwrap();
        assert_eq!(
            wc[0],
            WorkCommand {
                work_type: "echo".into(),
                secure: true
            }
        );
        assert_eq!(wc[1], WorkCommand::default());
        assert_eq!(m.time, GoTime::parse("2025-12-31T22:00:00Z").unwrap());
        let enc = String::from_utf8(SvcadMessage::encode(&m.ad, true)[1..].to_vec()).unwrap();
        assert!(enc.ends_with(r#""WorkCommands":[{"WorkType":"echo","Secure":true},{"WorkType":"","Secure":false}],"Cancel":true}"#), "{enc}");
    }

    #[test]
    fn bad_ads_are_errors() {
        for bad in [
            &br#"{"Time":"yesterday"}"#[..],
            br#"{"ConnType":256}"#,
            br#"{"Cancel":"yes"}"#,
            br#"{"Tags":{"a":1}}"#,
            br#"{"WorkCommands":{}}"#,
            b"[]",
        ] {
            assert!(
                SvcadMessage::decode(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let m = SvcadMessage::decode(b"{}").unwrap();
        assert_eq!(m.time, GoTime::ZERO);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = SvcadMessage::decode(&b);
        }

        #[test]
        fn round_trip(node in "\\PC{0,10}", svc in "[a-z]{0,8}", secs in 0i64..4_000_000_000, nanos in 0u32..1_000_000_000,
                      ct in 0u8..3, tags in prop::option::of(prop::collection::btree_map("\\PC{0,5}", "\\PC{0,5}", 0..3)), cancel in any::<bool>()) {
            let t = GoTime::parse(&format!("{}", GoTime::from_system_time(std::time::UNIX_EPOCH + std::time::Duration::new(secs as u64, nanos)))).unwrap();
            let ad = ServiceAdvertisement { node_id: node, service: svc, time: t.to_string(), conn_type: ct, tags, work_commands: None };
            let enc = SvcadMessage::encode(&ad, cancel);
            let m = SvcadMessage::decode(&enc[1..]).unwrap();
            prop_assert_eq!(m.ad, ad);
            prop_assert_eq!(m.time, t);
            prop_assert_eq!(m.cancel, cancel);
        }
    }
}
