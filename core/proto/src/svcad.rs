//! Service advertisements (SVCAD messages).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A work type offered by a node, carried in its control service advertisement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
