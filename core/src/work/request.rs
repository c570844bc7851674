//! Parsing the `work` control command, in its string form (`work submit bar cat`) and its
//! JSON form (`{"command":"work","subcommand":"submit",...}`), with Go receptor 1.6.9's
//! error texts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::control::command::Args;

/// Submit keys that are not work parameters.
const RESERVED_SUBMIT_KEYS: &[&str] = &[
    "command",
    "subcommand",
    "node",
    "worktype",
    "tlsclient",
    "ttl",
    "signwork",
    "signature",
    "workUnitID",
];

/// A parsed `work submit`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubmitRequest {
    /// Target node (`localhost` or this node's id for local work).
    pub node: String,
    /// Work type name.
    pub work_type: String,
    /// Work parameters: `params` (runtime command-line parameters) and any other key.
    pub params: BTreeMap<String, String>,
    /// `tlsclient`: TLS client config for the connection to a remote node.
    pub tls_client: String,
    /// `ttl`: how long a remote unit may wait to be started (Go duration text).
    pub ttl: String,
    /// `signwork`: sign the remote submission.
    pub sign_work: bool,
    /// `signature`: a JWT supplied by the client.
    pub signature: String,
    /// `workUnitID`: the id the client wants for the unit.
    pub unit_id: Option<String>,
}

impl SubmitRequest {
    /// The runtime `params`, empty if none.
    pub fn runtime_params(&self) -> &str {
        self.params.get("params").map(String::as_str).unwrap_or("")
    }
}

/// A parsed `work` command.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkRequest {
    /// `work submit`.
    Submit(SubmitRequest),
    /// `work list [id]`.
    List {
        /// Only this unit.
        unit_id: Option<String>,
    },
    /// `work status <id>`.
    Status {
        /// The unit.
        unit_id: String,
    },
    /// `work results <id> [startpos]`.
    Results {
        /// The unit.
        unit_id: String,
        /// Byte offset to start from.
        startpos: i64,
        /// JWT supplied by the client.
        signature: String,
    },
    /// `work cancel <id>`.
    Cancel {
        /// The unit.
        unit_id: String,
        /// JWT supplied by the client.
        signature: String,
    },
    /// `work release <id>` / `work force-release <id>`.
    Release {
        /// The unit.
        unit_id: String,
        /// JWT supplied by the client.
        signature: String,
        /// `force-release`.
        force: bool,
    },
    /// An unknown or missing sub-command (`bad command`, reported when run).
    Bad,
}

/// Parses the arguments of a `work` command.
pub fn parse(args: &Args) -> Result<WorkRequest, String> {
    match args {
        Args::Text(text) => parse_text(text),
        Args::Json(map) => parse_json(map),
    }
}

fn parse_text(text: &str) -> Result<WorkRequest, String> {
    let tokens: Vec<&str> = text.split(' ').collect();
    let sub = tokens.first().map(|s| s.to_lowercase()).unwrap_or_default();
    let unit_arg = |sub: &str| -> Result<String, String> {
        match tokens.len() {
            0 | 1 => Err(format!("work {sub} requires a unit ID")),
            2 => Ok(tokens[1].to_owned()),
            _ => Err(format!(
                "work {sub} does not take parameters after the unit ID"
            )),
        }
    };
    Ok(match sub.as_str() {
        "submit" => {
            if tokens.len() < 3 {
                return Err("work submit requires a target node and work type".to_owned());
            }
            let mut params = BTreeMap::new();
            if tokens.len() > 3 {
                params.insert("params".to_owned(), tokens[3..].join(" "));
            }
            WorkRequest::Submit(SubmitRequest {
                node: tokens[1].to_owned(),
                work_type: tokens[2].to_owned(),
                params,
                ..SubmitRequest::default()
            })
        }
        "list" => WorkRequest::List {
            unit_id: tokens.get(1).map(|s| (*s).to_owned()),
        },
        "status" => WorkRequest::Status {
            unit_id: unit_arg("status")?,
        },
        "cancel" => WorkRequest::Cancel {
            unit_id: unit_arg("cancel")?,
            signature: String::new(),
        },
        "release" | "force-release" => WorkRequest::Release {
            unit_id: unit_arg(&sub)?,
            signature: String::new(),
            force: sub == "force-release",
        },
        "results" => {
            let (unit_id, startpos) = match tokens.len() {
                0 | 1 => return Err("work results requires a unit ID".to_owned()),
                2 => (tokens[1], 0),
                3 => (
                    tokens[1],
                    parse_go_int(tokens[2])
                        .map_err(|e| format!("error converting start position to integer: {e}"))?,
                ),
                _ => {
                    return Err(
                        "work results only takes a unit ID and optional start position".to_owned(),
                    )
                }
            };
            WorkRequest::Results {
                unit_id: unit_id.to_owned(),
                startpos,
                signature: String::new(),
            }
        }
        _ => WorkRequest::Bad,
    })
}

fn parse_json(map: &serde_json::Map<String, Value>) -> Result<WorkRequest, String> {
    let sub = match map.get("subcommand") {
        None => return Err("field subcommand missing".to_owned()),
        Some(Value::String(s)) => s.to_lowercase(),
        Some(_) => return Err("field subcommand must be a string".to_owned()),
    };
    let string_field = |name: &str| -> Result<String, String> {
        match map.get(name) {
            None => Err(format!("field {name} missing")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("field {name} must be a string")),
        }
    };
    let signature = || match map.get("signature") {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    Ok(match sub.as_str() {
        "submit" => WorkRequest::Submit(parse_json_submit(map)?),
        "list" => WorkRequest::List {
            unit_id: match map.get("unitid") {
                Some(Value::String(s)) => Some(s.clone()),
                _ => None,
            },
        },
        "status" => WorkRequest::Status {
            unit_id: string_field("unitid")?,
        },
        "cancel" => WorkRequest::Cancel {
            unit_id: string_field("unitid")?,
            signature: signature(),
        },
        "release" | "force-release" => WorkRequest::Release {
            unit_id: string_field("unitid")?,
            signature: signature(),
            force: sub == "force-release",
        },
        "results" => {
            let unit_id = string_field("unitid")?;
            let startpos = match map.get("startpos") {
                None => return Err("field startpos missing".to_owned()),
                Some(value) => json_int(value)?,
            };
            WorkRequest::Results {
                unit_id,
                startpos,
                signature: signature(),
            }
        }
        _ => WorkRequest::Bad,
    })
}

fn parse_json_submit(map: &serde_json::Map<String, Value>) -> Result<SubmitRequest, String> {
    let mut strings = BTreeMap::new();
    for (key, value) in map {
        match value {
            Value::String(s) => {
                strings.insert(key.clone(), s.clone());
            }
            _ => {
                return Err(format!(
                    "submit parameters must all be strings and {key} is not"
                ))
            }
        }
    }
    let node = strings
        .get("node")
        .cloned()
        .ok_or_else(|| "field node missing".to_owned())?;
    let work_type = strings
        .get("worktype")
        .cloned()
        .ok_or_else(|| "field worktype missing".to_owned())?;
    let take = |key: &str| strings.get(key).cloned().unwrap_or_default();
    let params = strings
        .iter()
        .filter(|(k, _)| !RESERVED_SUBMIT_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(SubmitRequest {
        node,
        work_type,
        params,
        tls_client: take("tlsclient"),
        ttl: take("ttl"),
        sign_work: take("signwork") == "true",
        signature: take("signature"),
        unit_id: strings.get("workUnitID").cloned(),
    })
}

/// Go's `strconv.ParseInt(s, 10, 64)`, with its error text.
pub fn parse_go_int(s: &str) -> Result<i64, String> {
    let well_formed = {
        let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    if !well_formed {
        return Err(format!("strconv.ParseInt: parsing {s:?}: invalid syntax"));
    }
    s.parse::<i64>()
        .map_err(|_| format!("strconv.ParseInt: parsing {s:?}: value out of range"))
}

/// A JSON `startpos`: an integer, a float (truncated) or a numeric string.
fn json_int(value: &Value) -> Result<i64, String> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.is_finite() && f.abs() < 9.2e18 {
                    // Go converts with int64(f): truncation toward zero.
                    Ok(f.trunc() as i64)
                } else {
                    Err(format!(
                        "field startpos value {} is out of range",
                        go_percent_s(value)
                    ))
                }
            }
        }
        Value::String(s) => parse_go_int(s),
        other => Err(format!(
            "field startpos value {} is not convertible to an int",
            go_percent_s(other)
        )),
    }
}

/// How Go's `fmt` prints a decoded JSON value with `%s`.
fn go_percent_s(value: &Value) -> String {
    match value {
        Value::Null => "%!s(<nil>)".to_owned(),
        Value::Bool(b) => format!("%!s(bool={b})"),
        Value::Number(n) => format!(
            "%!s(float64={})",
            receptor_proto::gojson::format_float(n.as_f64().unwrap_or(0.0))
        ),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(go_percent_s).collect();
            format!("[{}]", inner.join(" "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}:{}", go_percent_s(v)))
                .collect();
            format!("map[{}]", inner.join(" "))
        }
    }
}

/// A `ttl` read with Go's `time.ParseDuration` (the shared
/// [`receptor_proto::go::duration::parse_go_duration`]); `Err` is Go's error text
/// (`time: invalid duration "bogus"`). A negative TTL has already expired: zero.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let nanos = receptor_proto::go::duration::parse_go_duration(text).map_err(|e| e.to_string())?;
    Ok(Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(s: &str) -> Result<WorkRequest, String> {
        parse(&Args::Text(s.to_owned()))
    }

    fn json_args(v: Value) -> Result<WorkRequest, String> {
        match v {
            Value::Object(map) => parse(&Args::Json(map)),
            _ => Err("not an object".to_owned()),
        }
    }

    #[test]
    fn string_form() {
        let Ok(WorkRequest::Submit(s)) = text("submit localhost echoparams hello   world") else {
            panic!("not a submit");
        };
        assert_eq!(s.node, "localhost");
        assert_eq!(s.work_type, "echoparams");
        assert_eq!(s.runtime_params(), "hello   world");
        assert_eq!(
            text("submit localhost"),
            Err("work submit requires a target node and work type".to_owned())
        );
        assert_eq!(text(""), Ok(WorkRequest::Bad));
        assert_eq!(text("bogus"), Ok(WorkRequest::Bad));
        assert_eq!(
            text("status"),
            Err("work status requires a unit ID".to_owned())
        );
        assert_eq!(
            text("status a b"),
            Err("work status does not take parameters after the unit ID".to_owned())
        );
        assert_eq!(
            text("LIST x y"),
            Ok(WorkRequest::List {
                unit_id: Some("x".to_owned())
            })
        );
        assert_eq!(
            text("force-release u1"),
            Ok(WorkRequest::Release {
                unit_id: "u1".to_owned(),
                signature: String::new(),
                force: true
            })
        );
        assert_eq!(
            text("results u1 x"),
            Err("error converting start position to integer: strconv.ParseInt: parsing \"x\": invalid syntax".to_owned())
        );
        assert_eq!(
            text("results a b c"),
            Err("work results only takes a unit ID and optional start position".to_owned())
        );
        assert_eq!(
            text("results u1 6"),
            Ok(WorkRequest::Results {
                unit_id: "u1".to_owned(),
                startpos: 6,
                signature: String::new()
            })
        );
    }

    #[test]
    fn json_form() {
        assert_eq!(
            json_args(json!({"command":"work"})),
            Err("field subcommand missing".to_owned())
        );
        assert_eq!(
            json_args(json!({"command":"work","subcommand":"submit","node":"localhost"})),
            Err("field worktype missing".to_owned())
        );
        assert_eq!(
            json_args(json!({"command":"work","subcommand":"submit","worktype":"cat"})),
            Err("field node missing".to_owned())
        );
        assert_eq!(
            json_args(
                json!({"command":"work","subcommand":"submit","node":"localhost","worktype":"cat","x":1})
            ),
            Err("submit parameters must all be strings and x is not".to_owned())
        );
        let Ok(WorkRequest::Submit(s)) = json_args(json!({"command":"work","subcommand":"submit",
            "node":"bar","worktype":"cat","params":"a b","secret_x":"s","ttl":"1m","signwork":"yes",
            "workUnitID":"MyUnit01","tlsclient":"t"}))
        else {
            panic!("not a submit");
        };
        assert_eq!(s.runtime_params(), "a b");
        assert_eq!(s.params.len(), 2);
        assert_eq!(s.ttl, "1m");
        assert!(!s.sign_work);
        assert_eq!(s.unit_id.as_deref(), Some("MyUnit01"));
        assert_eq!(s.tls_client, "t");
        assert_eq!(
            json_args(json!({"command":"work","subcommand":"results","unitid":"u"})),
            Err("field startpos missing".to_owned())
        );
        for (pos, want) in [(json!(3), 3), (json!(3.9), 3), (json!("3"), 3)] {
            assert_eq!(
                json_args(
                    json!({"command":"work","subcommand":"results","unitid":"u","startpos":pos})
                ),
                Ok(WorkRequest::Results {
                    unit_id: "u".to_owned(),
                    startpos: want,
                    signature: String::new()
                })
            );
        }
        assert_eq!(
            json_args(
                json!({"command":"work","subcommand":"results","unitid":"u","startpos":"abc"})
            ),
            Err("strconv.ParseInt: parsing \"abc\": invalid syntax".to_owned())
        );
        assert_eq!(
            json_args(
                json!({"command":"work","subcommand":"results","unitid":"u","startpos":true})
            ),
            Err("field startpos value %!s(bool=true) is not convertible to an int".to_owned())
        );
        assert_eq!(
            json_args(json!({"command":"work","subcommand":"list","unitid":5})),
            Ok(WorkRequest::List { unit_id: None })
        );
        assert_eq!(
            json_args(json!({"command":"work","subcommand":"status"})),
            Err("field unitid missing".to_owned())
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_go_duration("1h20m30s"), Ok(Duration::from_secs(4830)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(
            parse_go_duration("bogus"),
            Err("time: invalid duration \"bogus\"".to_owned())
        );
        assert_eq!(
            parse_go_duration("5"),
            Err("time: missing unit in duration \"5\"".to_owned())
        );
        assert_eq!(
            parse_go_duration("5x"),
            Err("time: unknown unit \"x\" in duration \"5x\"".to_owned())
        );
    }

    #[test]
    fn go_ints() {
        assert_eq!(parse_go_int("+5"), Ok(5));
        assert_eq!(parse_go_int("-5"), Ok(-5));
        assert!(
            parse_go_int("99999999999999999999").is_err_and(|e| e.ends_with("value out of range"))
        );
        assert!(parse_go_int(" 5").is_err_and(|e| e.ends_with("invalid syntax")));
    }
}
