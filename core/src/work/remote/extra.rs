//! `RemoteExtraData`: what a remote unit keeps in its status file's `ExtraData`, with Go
//! receptor 1.6.9's field names (the store's [`GoExtraData`](crate::work::status::GoExtraData)
//! writes them in Go's declaration order).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Go's zero `time.Time` as JSON.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// The `ExtraData` of a remote unit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RemoteExtraData {
    /// The node the work runs on.
    #[serde(rename = "RemoteNode")]
    pub remote_node: String,
    /// The work type on that node.
    #[serde(rename = "RemoteWorkType")]
    pub remote_work_type: String,
    /// The work parameters, forwarded with the submission (`secret_*` ones included;
    /// replies hide those).
    #[serde(rename = "RemoteParams", default)]
    pub remote_params: BTreeMap<String, String>,
    /// The unit's id on the remote node (the local id: it is forwarded as `workUnitID`).
    #[serde(rename = "RemoteUnitID")]
    pub remote_unit_id: String,
    /// Whether the remote node accepted the unit.
    #[serde(rename = "RemoteStarted")]
    pub remote_started: bool,
    /// Whether the unit was cancelled here (the cancel may still be on its way).
    #[serde(rename = "LocalCancelled")]
    pub local_cancelled: bool,
    /// Whether the unit was released here (the release may still be on its way).
    #[serde(rename = "LocalReleased")]
    pub local_released: bool,
    /// Whether requests about the unit are signed (`signwork`).
    #[serde(rename = "SignWork")]
    pub sign_work: bool,
    /// The `tls-client` configuration for the connections to the remote node.
    #[serde(rename = "TLSClient")]
    pub tls_client: String,
    /// When the unit expires if it has not started by then (`ttl`); `None` = never.
    #[serde(
        rename = "Expiration",
        serialize_with = "serialize_time",
        deserialize_with = "deserialize_time"
    )]
    pub expiration: Option<SystemTime>,
}

impl RemoteExtraData {
    /// The data as a status file's `ExtraData` value.
    pub fn to_value(&self) -> Value {
        // A struct of strings, booleans and a string map always serialises.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Reads the data back from `ExtraData`.
    pub fn from_value(value: Option<&Value>) -> Result<RemoteExtraData, ExtraDataError> {
        match value {
            Some(v @ Value::Object(_)) => serde_json::from_value(v.clone())
                .map_err(|e| ExtraDataError::Invalid(e.to_string())),
            _ => Err(ExtraDataError::Missing),
        }
    }
}

/// Why a remote unit's `ExtraData` cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtraDataError {
    /// There is none, or it is not an object.
    #[error("remote ExtraData missing")]
    Missing,
    /// It does not have the layout of remote work (the decoder's message).
    #[error("remote ExtraData: {0}")]
    Invalid(String),
}

/// `ExtraData` of a remote unit as replies show it: without the `secret_*` parameters
/// (`None` when there are none, so the stored value can be shown as it is).
pub fn redacted_extra(extra: Option<&Value>) -> Option<Value> {
    let params = extra?.get("RemoteParams")?.as_object()?;
    if !params.keys().any(|k| is_secret(k)) {
        return None;
    }
    let mut shown = extra?.clone();
    if let Some(Value::Object(params)) = shown.get_mut("RemoteParams") {
        params.retain(|k, _| !is_secret(k));
    }
    Some(shown)
}

/// Whether a parameter is a secret (`secret_` prefix, any case).
pub fn is_secret(key: &str) -> bool {
    key.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("secret_"))
}

fn serialize_time<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        None => s.serialize_str(ZERO_TIME),
        Some(t) => s.serialize_str(&rfc3339_nano(*t)),
    }
}

fn deserialize_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
    let text = String::deserialize(d)?;
    if text == ZERO_TIME {
        return Ok(None);
    }
    let parsed = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| serde::de::Error::custom(format!("Expiration {text:?}: {e}")))?;
    if parsed.year() <= 1 {
        return Ok(None);
    }
    let nanos = parsed.unix_timestamp_nanos();
    Ok(Some(if nanos >= 0 {
        UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    } else {
        UNIX_EPOCH
    }))
}

fn utc(t: SystemTime) -> time::OffsetDateTime {
    let nanos = t
        .duration_since(UNIX_EPOCH)
        .map(|d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Go's `time.RFC3339Nano` in UTC: `2026-11-25T17:01:42.486019059Z`, trailing zeros of
/// the fraction dropped (and the fraction with them when it is zero).
pub fn rfc3339_nano(t: SystemTime) -> String {
    let t = utc(t);
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond();
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Go's `Format("Mon Jan 2 15:04:05")` in UTC, as the detail of expired units shows it.
pub fn expiry_stamp(t: SystemTime) -> String {
    let t = utc(t);
    let weekday = match t.weekday() {
        time::Weekday::Monday => "Mon",
        time::Weekday::Tuesday => "Tue",
        time::Weekday::Wednesday => "Wed",
        time::Weekday::Thursday => "Thu",
        time::Weekday::Friday => "Fri",
        time::Weekday::Saturday => "Sat",
        time::Weekday::Sunday => "Sun",
    };
    let month = match t.month() {
        time::Month::January => "Jan",
        time::Month::February => "Feb",
        time::Month::March => "Mar",
        time::Month::April => "Apr",
        time::Month::May => "May",
        time::Month::June => "Jun",
        time::Month::July => "Jul",
        time::Month::August => "Aug",
        time::Month::September => "Sep",
        time::Month::October => "Oct",
        time::Month::November => "Nov",
        time::Month::December => "Dec",
    };
    format!(
        "{weekday} {month} {} {:02}:{:02}:{:02}",
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn go_layout_and_round_trip() -> Result<(), Box<dyn std::error::Error>> {
        let mut extra = RemoteExtraData {
            remote_node: "bar".to_owned(),
            remote_work_type: "upper".to_owned(),
            remote_unit_id: "foo1MglDbZY".to_owned(),
            remote_started: true,
            ..RemoteExtraData::default()
        };
        let status = crate::work::status::GoExtraData(Some(&extra.to_value()));
        assert_eq!(
            receptor_proto::gojson::to_string(&status).map_err(|e| e.to_string())?,
            r#"{"RemoteNode":"bar","RemoteWorkType":"upper","RemoteParams":{},"RemoteUnitID":"foo1MglDbZY","RemoteStarted":true,"LocalCancelled":false,"LocalReleased":false,"SignWork":false,"TLSClient":"","Expiration":"0001-01-01T00:00:00Z"}"#
        );
        extra.expiration = Some(UNIX_EPOCH + Duration::new(1_795_626_102, 486_019_000));
        let value = extra.to_value();
        assert_eq!(value["Expiration"], json!("2026-11-25T17:01:42.486019Z"));
        assert_eq!(RemoteExtraData::from_value(Some(&value))?, extra);
        // Go's own values, with a local offset.
        let go = json!({"RemoteNode":"ghost","RemoteWorkType":"cat","RemoteParams":{},"RemoteUnitID":"",
            "RemoteStarted":false,"LocalCancelled":false,"LocalReleased":false,"SignWork":false,
            "TLSClient":"","Expiration":"2026-11-25T18:01:42.486019059+01:00"});
        let parsed = RemoteExtraData::from_value(Some(&go))?;
        assert_eq!(
            parsed.expiration.map(rfc3339_nano).as_deref(),
            Some("2026-11-25T17:01:42.486019059Z")
        );
        assert!(RemoteExtraData::from_value(None).is_err());
        assert!(RemoteExtraData::from_value(Some(&json!({"RemoteNode": 5}))).is_err());
        Ok(())
    }

    #[test]
    fn expiry_detail_format() {
        let t = UNIX_EPOCH + Duration::new(1_795_626_102, 486_019_059);
        assert_eq!(expiry_stamp(t), "Wed Nov 25 17:01:42");
        let t = UNIX_EPOCH + Duration::from_secs(1_767_323_045);
        assert_eq!(expiry_stamp(t), "Fri Jan 2 03:04:05");
        assert_eq!(rfc3339_nano(t), "2026-01-02T03:04:05Z");
    }

    #[test]
    fn secrets_are_hidden() {
        let stored = json!({"RemoteNode":"bar","RemoteParams":{"Secret_Key":"x","params":"p"}});
        assert_eq!(
            redacted_extra(Some(&stored)),
            Some(json!({"RemoteNode":"bar","RemoteParams":{"params":"p"}}))
        );
        assert_eq!(
            redacted_extra(Some(&json!({"RemoteParams":{"a":"b"}}))),
            None
        );
        assert_eq!(redacted_extra(None), None);
        assert!(is_secret("SECRET_x") && !is_secret("secret") && !is_secret("mysecret_x"));
    }
}
