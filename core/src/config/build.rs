//! From raw items to the typed [`Config`]: Go's conversion rules, required keys,
//! singletons, exclusive commands, defaults and the core's own validation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use receptor_proto::go::duration::parse_go_duration;

use super::coerce;
use super::error::ConfigError;
use super::item::RawItem;
use super::model::*;
use super::schema::{self, KindSpec, Owner};
use super::value::Value;

/// What a list of items asks for.
#[derive(Debug)]
pub(crate) enum Outcome {
    Run(Box<Config>),
    Version,
    CertInit(Section),
    CertMakeReq(Section),
    CertSignReq(Section),
}

/// Go's default `maxConnectionIdleTime` (2 × 10 s + 1 s), also the minimum.
const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(21);
/// Default lifetime of a work signature.
const DEFAULT_TOKEN_EXPIRATION: Duration = Duration::from_secs(300);
/// Netceptor's limit on service names.
const MAX_SERVICE_NAME: usize = 8;

/// Builds the outcome of a whole invocation (command line and files, in order).
pub(crate) fn build(items: Vec<RawItem>) -> Result<Outcome, ConfigError> {
    if let Some(item) = items
        .iter()
        .find(|i| schema::kind(&i.kind).is_some_and(|k| k.exclusive))
    {
        if items.len() > 1 {
            return Err(ConfigError::Exclusive {
                kind: item.kind.clone(),
                origin: item.origin.clone(),
            });
        }
        return exclusive_outcome(item);
    }
    build_config(&items).map(|c| Outcome::Run(Box::new(c)))
}

fn exclusive_outcome(item: &RawItem) -> Result<Outcome, ConfigError> {
    let spec = spec_of(item)?;
    let fields = coerce_item(spec, item)?;
    let section = || Section {
        kind: item.kind.clone(),
        value: serde_json::Value::Object(fields.with_defaults()),
        origin: item.origin.clone(),
    };
    Ok(match spec.name {
        "cert-init" => Outcome::CertInit(section()),
        "cert-makereq" => Outcome::CertMakeReq(section()),
        "cert-signreq" => Outcome::CertSignReq(section()),
        _ => Outcome::Version,
    })
}

fn spec_of(item: &RawItem) -> Result<&'static KindSpec, ConfigError> {
    schema::kind(&item.kind).ok_or_else(|| ConfigError::Format {
        origin: item.origin.clone(),
        message: format!("unknown config kind {}", item.kind),
    })
}

/// Builds a [`Config`] from items that contain no exclusive command.
pub(crate) fn build_config(items: &[RawItem]) -> Result<Config, ConfigError> {
    let mut singletons: BTreeMap<&str, &str> = BTreeMap::new();
    let mut node = None;
    let mut config = Config::with_node_id("");
    for item in items {
        let spec = schema::kind(&item.kind).filter(|k| k.owner == Owner::Core);
        let Some(spec) = spec else {
            config.sections.push(plugin_section(item)?);
            continue;
        };
        if spec.singleton {
            if let Some(first) = singletons.insert(spec.name, &item.origin) {
                return Err(ConfigError::Duplicate {
                    kind: spec.name.to_owned(),
                    first: first.to_owned(),
                    second: item.origin.clone(),
                });
            }
        }
        let fields = coerce_item(spec, item)?;
        match spec.name {
            "node" => node = Some(node_config(&fields)?),
            "local-only" => config.local_only = true,
            "trace" => config.trace = true,
            "log-level" => config.log_level = log_level(&fields)?,
            "log-format" => config.log_format = log_format(&fields)?,
            "metrics" => {
                config.metrics = Some(MetricsConfig {
                    address: fields.non_empty("address")?,
                    tls: fields.opt_str("tls").filter(|t| !t.is_empty()),
                })
            }
            "mesh-page" => {
                config.mesh_page = Some(MeshPageConfig {
                    address: fields
                        .opt_str("address")
                        .filter(|a| !a.is_empty())
                        .unwrap_or_else(|| MESH_PAGE_DEFAULT_ADDRESS.to_owned()),
                    tls: fields.opt_str("tls").filter(|t| !t.is_empty()),
                })
            }
            "control-limits" => config.control_limits = control_limits(&fields)?,
            "mesh-limits" => config.mesh_limits = mesh_limits(&fields)?,
            "control-service" => config.control_services.push(control_service(&fields)?),
            "plugins" => {
                config
                    .plugins
                    .extend(fields.str_list("path").into_iter().map(PathBuf::from));
                config
                    .isolated_plugins
                    .extend(fields.str_list("isolated").into_iter().map(PathBuf::from));
                if let Some(timeout) = fields.duration("calltimeout", "calltimeout")? {
                    config.plugin_call_timeout = Some(timeout);
                }
            }
            "tls-server" => config.tls_servers.push(tls_server(&fields)?),
            "tls-client" => config.tls_clients.push(tls_client(&fields)?),
            "work-signing" => config.work_signing = Some(work_signing(&fields)?),
            "work-verification" => config.work_verification = Some(work_verification(&fields)?),
            "tcp-server" => config.tcp_servers.push(TcpServerConfig {
                port: fields.port("port")?,
                bind_addr: fields.str("bindaddr"),
                remote_node: fields.str("remotenode"),
                remote_service: fields.str("remoteservice"),
                tls_server: fields.opt_str("tlsserver"),
                tls_client: fields.opt_str("tlsclient"),
            }),
            "tcp-client" => config.tcp_clients.push(TcpClientConfig {
                service: fields.service_name("service")?,
                address: fields.str("address"),
                tls_server: fields.opt_str("tlsserver"),
                tls_client: fields.opt_str("tlsclient"),
            }),
            "udp-server" => config.udp_servers.push(UdpServerConfig {
                port: fields.port("port")?,
                bind_addr: fields.str("bindaddr"),
                remote_node: fields.str("remotenode"),
                remote_service: fields.str("remoteservice"),
            }),
            "udp-client" => config.udp_clients.push(UdpClientConfig {
                service: fields.service_name("service")?,
                address: fields.str("address"),
            }),
            "unix-socket-server" => config.unix_socket_servers.push(UnixSocketServerConfig {
                filename: PathBuf::from(fields.non_empty("filename")?),
                permissions: go_file_mode(fields.int("permissions")),
                remote_node: fields.str("remotenode"),
                remote_service: fields.str("remoteservice"),
                tls: fields.opt_str("tls"),
            }),
            "unix-socket-client" => config.unix_socket_clients.push(UnixSocketClientConfig {
                service: fields.service_name("service")?,
                filename: PathBuf::from(fields.non_empty("filename")?),
                tls: fields.opt_str("tls"),
            }),
            "command-service" => config.command_services.push(CommandServiceConfig {
                service: fields.service_name("service")?,
                argv: command_words(&fields)?,
                command: fields.str("command"),
                tls: fields.opt_str("tls"),
            }),
            "ip-router" => config.ip_routers.push(ip_router(&fields)?),
            _ => config.sections.push(Section {
                kind: item.kind.clone(),
                value: serde_json::Value::Object(fields.with_defaults()),
                origin: item.origin.clone(),
            }),
        }
    }
    config.node = match node {
        Some(node) => node,
        None => {
            let implicit = RawItem {
                kind: "node".to_owned(),
                entries: Vec::new(),
                origin: "default node".to_owned(),
                from_command_line: false,
            };
            let spec = spec_of(&implicit)?;
            node_config(&coerce_item(spec, &implicit)?)?
        }
    };
    check_tls_references(&config, items)?;
    Ok(config)
}

/// The JSON value of a plugin's item, as written: keys are lower-cased, a bare value is
/// kept under `""` and a key repeated on the command line becomes a list of its values.
/// Once the plugins are loaded, [`super::describe_sections`] applies the plugin's
/// description (the bare value's field, Go's list rules, last value wins). Kinds of the
/// core's table that plugins would claim (`work-kubernetes`) get their table's bare
/// key and list rules here.
pub(crate) fn plugin_section(item: &RawItem) -> Result<Section, ConfigError> {
    let spec = schema::kind(&item.kind);
    let mut object = serde_json::Map::new();
    for entry in &item.entries {
        let key = match &entry.key {
            Some(key) => key.to_lowercase(),
            None => match spec {
                Some(spec) => match spec.bare_field() {
                    Some(field) => field.name.to_owned(),
                    None => return Err(no_bare_value(item, spec)),
                },
                None => String::new(),
            },
        };
        let list_field = spec
            .and_then(|s| s.field(&key))
            .filter(|f| f.ty == coerce::FieldType::StrList);
        if let Some(field) = list_field {
            // Go's []string rules: a list, a JSON list in a string, or one more string.
            let existing = object.remove(&key);
            let value = coerce::coerce(field.ty, &entry.value, existing).map_err(|message| {
                ConfigError::BadValue {
                    origin: item.origin.clone(),
                    kind: item.kind.clone(),
                    key: key.clone(),
                    message,
                }
            })?;
            object.insert(key, value);
            continue;
        }
        let value = entry.value.to_json();
        match object.get_mut(&key) {
            // Kinds unknown here: a key repeated on the command line becomes a list.
            Some(existing) if item.from_command_line && spec.is_none() => match existing {
                serde_json::Value::Array(list) => list.push(value),
                other => {
                    let first = other.take();
                    *other = serde_json::Value::Array(vec![first, value]);
                }
            },
            _ => {
                object.insert(key, value);
            }
        }
    }
    Ok(Section {
        kind: item.kind.clone(),
        value: serde_json::Value::Object(object),
        origin: item.origin.clone(),
    })
}

fn no_bare_value(item: &RawItem, spec: &KindSpec) -> ConfigError {
    let known: Vec<&str> = spec.fields.iter().map(|f| f.name).collect();
    ConfigError::Format {
        origin: item.origin.clone(),
        message: format!(
            "{} does not take a bare value; write key=value (keys: {})",
            item.kind,
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ),
    }
}

/// The coerced fields of one core item.
pub(crate) struct Fields {
    spec: &'static KindSpec,
    origin: String,
    values: serde_json::Map<String, serde_json::Value>,
}

/// Applies Go's conversion rules to every entry of `item` and checks required keys.
pub(crate) fn coerce_item(spec: &'static KindSpec, item: &RawItem) -> Result<Fields, ConfigError> {
    let mut values = serde_json::Map::new();
    for entry in &item.entries {
        let field = match &entry.key {
            Some(key) => {
                let lower = key.to_lowercase();
                spec.field(&lower).ok_or_else(|| ConfigError::UnknownKey {
                    origin: item.origin.clone(),
                    kind: spec.name.to_owned(),
                    key: key.clone(),
                    known: known_keys(spec),
                })?
            }
            None => spec.bare_field().ok_or_else(|| no_bare_value(item, spec))?,
        };
        let existing = values.remove(field.name);
        let value = coerce::coerce(field.ty, &entry.value, existing).map_err(|message| {
            ConfigError::BadValue {
                origin: item.origin.clone(),
                kind: spec.name.to_owned(),
                key: field.name.to_owned(),
                message,
            }
        })?;
        values.insert(field.name.to_owned(), value);
    }
    let missing: Vec<String> = spec
        .fields
        .iter()
        .filter(|f| f.required && !values.contains_key(f.name))
        .map(|f| f.name.to_owned())
        .collect();
    if !missing.is_empty() {
        return Err(ConfigError::MissingKey {
            origin: item.origin.clone(),
            kind: spec.name.to_owned(),
            keys: missing,
        });
    }
    Ok(Fields {
        spec,
        origin: item.origin.clone(),
        values,
    })
}

fn known_keys(spec: &KindSpec) -> String {
    if spec.fields.is_empty() {
        "none".to_owned()
    } else {
        spec.fields
            .iter()
            .map(|f| f.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Fields {
    /// The value of `key`, or its default.
    fn get(&self, key: &str) -> Option<serde_json::Value> {
        if let Some(v) = self.values.get(key) {
            return Some(v.clone());
        }
        let field = self.spec.field(key)?;
        let default = field.default?;
        coerce::coerce(field.ty, &Value::Str(default.to_owned()), None).ok()
    }

    /// All values with defaults filled in.
    fn with_defaults(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for field in self.spec.fields {
            if let Some(v) = self.get(field.name) {
                out.insert(field.name.to_owned(), v);
            }
        }
        out
    }

    fn str(&self, key: &str) -> String {
        match self.get(key) {
            Some(serde_json::Value::String(s)) => s,
            _ => String::new(),
        }
    }

    /// A string where empty means "not set", as in Go.
    fn opt_str(&self, key: &str) -> Option<String> {
        Some(self.str(key)).filter(|s| !s.is_empty())
    }

    fn int(&self, key: &str) -> i64 {
        self.get(key).and_then(|v| v.as_i64()).unwrap_or(0)
    }

    fn bool(&self, key: &str) -> bool {
        self.get(key).and_then(|v| v.as_bool()).unwrap_or(false)
    }

    fn str_list(&self, key: &str) -> Vec<String> {
        match self.get(key) {
            Some(serde_json::Value::Array(items)) => items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn invalid(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.clone(),
            kind: self.spec.name.to_owned(),
            message: message.into(),
        }
    }

    fn bad(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::BadValue {
            origin: self.origin.clone(),
            kind: self.spec.name.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn non_empty(&self, key: &str) -> Result<String, ConfigError> {
        self.opt_str(key)
            .ok_or_else(|| self.bad(key, "must not be empty"))
    }

    fn port(&self, key: &str) -> Result<u16, ConfigError> {
        let port = self.int(key);
        u16::try_from(port)
            .map_err(|_| self.bad(key, format!("expected a port number (0-65535), got {port}")))
    }

    fn service_name(&self, key: &str) -> Result<String, ConfigError> {
        let name = self.non_empty(key)?;
        check_service_name(&name).map_err(|m| self.bad(key, m))?;
        Ok(name)
    }

    fn duration(&self, key: &str, what: &str) -> Result<Option<Duration>, ConfigError> {
        let Some(text) = self.opt_str(key) else {
            return Ok(None);
        };
        match parse_go_duration(&text).ok() {
            Some(nanos) if nanos >= 0 => Ok(Some(Duration::from_nanos(nanos.unsigned_abs()))),
            Some(_) => Err(self.bad(key, format!("{what} must not be negative, got {text:?}"))),
            None => Err(self.bad(
                key,
                format!("failed to parse {what} {text:?} -- valid examples include '1.5h', '30m', '30m10s'"),
            )),
        }
    }

    fn fingerprints(&self, key: &str) -> Result<Vec<Vec<u8>>, ConfigError> {
        self.str_list(key)
            .iter()
            .map(|text| decode_fingerprint(text).map_err(|m| self.bad(key, m)))
            .collect()
    }
}

fn check_service_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_SERVICE_NAME {
        Err(format!(
            "service name {name:?} is too long (at most {MAX_SERVICE_NAME} bytes)"
        ))
    } else {
        Ok(())
    }
}

/// A pinned certificate fingerprint: hex, colons allowed, SHA-256 or SHA-512 length.
fn decode_fingerprint(text: &str) -> Result<Vec<u8>, String> {
    let hex: Vec<u8> = text.bytes().filter(|&b| b != b':').collect();
    if !hex.len().is_multiple_of(2) {
        return Err(format!(
            "error decoding fingerprint {text:?}: odd number of hex digits"
        ));
    }
    let mut bytes = Vec::with_capacity(hex.len() / 2);
    for pair in hex.chunks(2) {
        let digit = |b: u8| char::from(b).to_digit(16);
        match (digit(pair[0]), pair.get(1).copied().and_then(digit)) {
            (Some(hi), Some(lo)) => bytes.push(u8::try_from(hi * 16 + lo).unwrap_or_default()),
            _ => {
                return Err(format!(
                    "error decoding fingerprint {text:?}: not hexadecimal"
                ))
            }
        }
    }
    if bytes.len() != 32 && bytes.len() != 64 {
        return Err(format!(
            "fingerprint {text:?} has {} bytes; fingerprints must be 32 or 64 bytes for sha256 or sha512",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Go converts the `int` permissions to `os.FileMode`, and chmod keeps the permission
/// bits plus setuid/setgid/sticky (which live in FileMode's high bits).
fn go_file_mode(value: i64) -> u32 {
    // Truncation to 32 bits is what Go's conversion does.
    let mode = value as u32;
    let mut bits = mode & 0o777;
    if mode & (1 << 23) != 0 {
        bits |= 0o4000;
    }
    if mode & (1 << 22) != 0 {
        bits |= 0o2000;
    }
    if mode & (1 << 20) != 0 {
        bits |= 0o1000;
    }
    bits
}

/// Characters Go receptor 1.6.9 allows in a node ID.
fn valid_node_id(id: &str) -> bool {
    id.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'@' | b':'))
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for writes of its length; gethostname NUL-terminates
    // the name when it fits, and the length we pass leaves room for the terminator.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..len].to_vec())
        .ok()
        .filter(|h| !h.is_empty())
}

fn node_config(fields: &Fields) -> Result<NodeConfig, ConfigError> {
    let mut id = fields.str("id");
    if id.is_empty() {
        let host = host_name()
            .ok_or_else(|| fields.invalid("no node ID specified and the host name is unknown"))?;
        let lower = host.to_lowercase();
        if lower == "localhost" || lower.starts_with("localhost.") {
            return Err(fields.invalid("no node ID specified and local host name is localhost"));
        }
        id = host;
    }
    if id.to_lowercase() == "localhost" {
        return Err(fields.invalid("node ID \"localhost\" is reserved"));
    }
    if !valid_node_id(&id) {
        return Err(fields.invalid(format!(
            "node id can only contain a-z, A-Z, 0-9 or special characters . - _ @ : but received: {id}"
        )));
    }
    let datadir = fields
        .opt_str("datadir")
        .unwrap_or_else(|| "/tmp/receptor".to_owned());
    let firewall_rules = match fields.get("firewallrules") {
        Some(serde_json::Value::Array(rules)) => rules
            .into_iter()
            .filter_map(|r| match r {
                serde_json::Value::Object(map) => Some(map),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let max_idle_connection_timeout =
        fields.duration("maxidleconnectiontimeout", "MaxIdleConnectionTimeout")?;
    if let Some(timeout) = max_idle_connection_timeout {
        if timeout < MIN_IDLE_TIMEOUT {
            return Err(fields.bad(
                "maxidleconnectiontimeout",
                format!("{timeout:?} is less than the default (and minimum) timeout {MIN_IDLE_TIMEOUT:?}"),
            ));
        }
    }
    let kube_settings = fields
        .spec
        .fields
        .iter()
        .filter(|f| f.name.starts_with("receptorkube"))
        .filter_map(|f| fields.opt_str(f.name).map(|v| (f.name.to_owned(), v)))
        .collect();
    Ok(NodeConfig {
        id,
        datadir: PathBuf::from(datadir),
        firewall_rules,
        max_idle_connection_timeout,
        kube_settings,
    })
}

fn mesh_limits(fields: &Fields) -> Result<MeshLimitsConfig, ConfigError> {
    let count = |key: &str| -> Result<usize, ConfigError> {
        let n = fields.int(key);
        match usize::try_from(n) {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(fields.bad(key, format!("expected a positive number, got {n}"))),
        }
    };
    let rate = count("routeupdatespersecond")?;
    let route_updates_per_second = u32::try_from(rate).map_err(|_| {
        fields.bad(
            "routeupdatespersecond",
            format!("{rate} is more than {}", u32::MAX),
        )
    })?;
    let route_interval = fields
        .duration("routeinterval", "route interval")?
        .unwrap_or_default();
    let node_expiry = fields
        .duration("nodeexpiry", "node expiry")?
        .filter(|d| !d.is_zero());
    Ok(MeshLimitsConfig {
        routing: receptor_proto::limits::MeshLimits {
            max_nodes: count("maxnodes")?,
            max_node_connections: count("maxnodeconnections")?,
            max_links: count("maxlinks")?,
            max_node_id_len: count("maxnodeidlength")?,
            route_updates_per_second,
            max_coalesced_bytes: count("coalescedbytes")?,
            route_interval,
            node_expiry,
        },
        max_pending_sessions: count("maxpendingsessions")?,
    })
}

fn log_level(fields: &Fields) -> Result<LogLevel, ConfigError> {
    let name = fields.str("level");
    match name.to_lowercase().as_str() {
        "error" => Ok(LogLevel::Error),
        "warning" => Ok(LogLevel::Warning),
        "info" => Ok(LogLevel::Info),
        "debug" => Ok(LogLevel::Debug),
        _ => Err(fields.bad(
            "level",
            format!(
                "{name} is not a valid log level name (expected Error, Warning, Info or Debug)"
            ),
        )),
    }
}

fn log_format(fields: &Fields) -> Result<LogFormat, ConfigError> {
    let name = fields.str("format");
    match name.to_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(fields.bad(
            "format",
            format!("{name} is not a log format (expected text or json)"),
        )),
    }
}

fn control_service(fields: &Fields) -> Result<ControlServiceConfig, ConfigError> {
    let service = fields.str("service");
    check_service_name(&service).map_err(|m| fields.bad("service", m))?;
    let config = ControlServiceConfig {
        service,
        filename: fields.opt_str("filename").map(PathBuf::from),
        permissions: go_file_mode(fields.int("permissions")),
        tls: fields.opt_str("tls"),
        tcp_listen: fields.opt_str("tcplisten"),
        tcp_tls: fields.opt_str("tcptls"),
    };
    if config.service.is_empty() && config.filename.is_none() && config.tcp_listen.is_none() {
        return Err(fields.invalid("no listeners specified (set service, filename or tcplisten)"));
    }
    Ok(config)
}

/// `control-limits`: counts must be positive, timeouts non-zero; `maxpayload` 0 means
/// no limit and an empty `idletimeout` none.
fn control_limits(fields: &Fields) -> Result<crate::control::ControlLimits, ConfigError> {
    let positive = |key: &str| -> Result<usize, ConfigError> {
        let n = fields.int(key);
        usize::try_from(n)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| fields.bad(key, format!("expected a positive number, got {n}")))
    };
    let timeout = |key: &str| -> Result<Option<Duration>, ConfigError> {
        match fields.duration(key, key)? {
            Some(d) if d.is_zero() => Err(fields.bad(key, "must not be zero")),
            other => Ok(other),
        }
    };
    let defaults = crate::control::ControlLimits::default();
    let max_payload = fields.int("maxpayload");
    let max_payload = match u64::try_from(max_payload) {
        Ok(0) => None,
        Ok(n) => Some(n),
        Err(_) => {
            return Err(fields.bad(
                "maxpayload",
                format!("must not be negative, got {max_payload}"),
            ))
        }
    };
    Ok(crate::control::ControlLimits {
        max_connections: positive("maxconnections")?,
        max_line: positive("maxlinelength")?,
        line_timeout: timeout("linetimeout")?.unwrap_or(defaults.line_timeout),
        idle_timeout: timeout("idletimeout")?,
        max_payload,
        payload_idle_timeout: timeout("payloadidletimeout")?
            .unwrap_or(defaults.payload_idle_timeout),
    })
}

fn tls_server(fields: &Fields) -> Result<TlsServerConfig, ConfigError> {
    Ok(TlsServerConfig {
        name: fields.non_empty("name")?,
        cert: PathBuf::from(fields.non_empty("cert")?),
        key: PathBuf::from(fields.non_empty("key")?),
        require_client_cert: fields.bool("requireclientcert"),
        client_cas: fields.opt_str("clientcas").map(PathBuf::from),
        pinned_client_certs: fields.fingerprints("pinnedclientcert")?,
        skip_receptor_names_check: fields.bool("skipreceptornamescheck"),
        min_tls13: fields.bool("mintls13"),
    })
}

fn tls_client(fields: &Fields) -> Result<TlsClientConfig, ConfigError> {
    let cert = fields.opt_str("cert").map(PathBuf::from);
    let key = fields.opt_str("key").map(PathBuf::from);
    if cert.is_some() != key.is_some() {
        return Err(fields.invalid("cert and key must both be supplied or neither"));
    }
    Ok(TlsClientConfig {
        name: fields.non_empty("name")?,
        cert,
        key,
        root_cas: fields.opt_str("rootcas").map(PathBuf::from),
        insecure_skip_verify: fields.bool("insecureskipverify"),
        pinned_server_certs: fields.fingerprints("pinnedservercert")?,
        skip_receptor_names_check: fields.bool("skipreceptornamescheck"),
        min_tls13: fields.bool("mintls13"),
    })
}

/// The words of a `command-service`'s `command`, split as Go's `shlex` splits them. Go
/// splits on each connection and logs the error there; a command that can never run is
/// refused here instead.
fn command_words(fields: &Fields) -> Result<Vec<String>, ConfigError> {
    let line = fields.non_empty("command")?;
    match receptor_plugin_sdk::shlex::split(&line) {
        Ok(words) if !words.is_empty() => Ok(words),
        Ok(_) => Err(fields.bad("command", "no program to run")),
        Err(e) => Err(fields.bad("command", e)),
    }
}

/// An `ip-router`, with Go 1.6.9's checks and messages.
fn ip_router(fields: &Fields) -> Result<IpRouterConfig, ConfigError> {
    let cidr = |key: &str, text: &str| {
        Cidr::parse(text.trim())
            .ok_or_else(|| fields.bad(key, format!("could not parse {text} as a CIDR address")))
    };
    let local = fields.non_empty("localnet")?;
    let local_net = cidr("localnet", &local)?;
    if local_net.prefix != 30 {
        return Err(fields.bad(
            "localnet",
            format!("local network {local} must be a /30 CIDR"),
        ));
    }
    if !local_net.addr.is_ipv4() {
        return Err(fields.bad("localnet", format!("local network {local} must be IPv4")));
    }
    let routes = match fields.opt_str("routes") {
        Some(list) => list
            .split(',')
            .map(|r| cidr("routes", r))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    Ok(IpRouterConfig {
        network_name: fields.service_name("networkname")?,
        interface: fields.opt_str("interface"),
        local_net,
        routes,
    })
}

fn work_signing(fields: &Fields) -> Result<WorkSigningConfig, ConfigError> {
    Ok(WorkSigningConfig {
        private_key: PathBuf::from(fields.non_empty("privatekey")?),
        token_expiration: fields
            .duration("tokenexpiration", "TokenExpiration")?
            .unwrap_or(DEFAULT_TOKEN_EXPIRATION),
    })
}

fn work_verification(fields: &Fields) -> Result<WorkVerificationConfig, ConfigError> {
    Ok(WorkVerificationConfig {
        public_key: PathBuf::from(fields.non_empty("publickey")?),
    })
}

/// Every TLS name a core item refers to must be defined (Go: `unknown TLS config <name>`).
fn check_tls_references(config: &Config, items: &[RawItem]) -> Result<(), ConfigError> {
    let origin_of = |kind: &str, index: usize| {
        items
            .iter()
            .filter(|i| i.kind == kind)
            .nth(index)
            .map_or_else(String::new, |i| i.origin.clone())
    };
    let mut refs: Vec<(&str, usize, &str, &str, bool)> = Vec::new();
    for (i, c) in config.control_services.iter().enumerate() {
        if let Some(n) = &c.tls {
            refs.push(("control-service", i, "tls", n, true));
        }
        if c.tcp_listen.is_some() {
            if let Some(n) = &c.tcp_tls {
                refs.push(("control-service", i, "tcptls", n, true));
            }
        }
    }
    if let Some(n) = config.metrics.as_ref().and_then(|m| m.tls.as_ref()) {
        refs.push(("metrics", 0, "tls", n, true));
    }
    if let Some(n) = config.mesh_page.as_ref().and_then(|m| m.tls.as_ref()) {
        refs.push(("mesh-page", 0, "tls", n, true));
    }
    for (i, p) in config.tcp_servers.iter().enumerate() {
        if let Some(n) = &p.tls_server {
            refs.push(("tcp-server", i, "tlsserver", n, true));
        }
        if let Some(n) = &p.tls_client {
            refs.push(("tcp-server", i, "tlsclient", n, false));
        }
    }
    for (i, p) in config.tcp_clients.iter().enumerate() {
        if let Some(n) = &p.tls_server {
            refs.push(("tcp-client", i, "tlsserver", n, true));
        }
        if let Some(n) = &p.tls_client {
            refs.push(("tcp-client", i, "tlsclient", n, false));
        }
    }
    for (i, p) in config.unix_socket_servers.iter().enumerate() {
        if let Some(n) = &p.tls {
            refs.push(("unix-socket-server", i, "tls", n, false));
        }
    }
    for (i, p) in config.unix_socket_clients.iter().enumerate() {
        if let Some(n) = &p.tls {
            refs.push(("unix-socket-client", i, "tls", n, true));
        }
    }
    for (i, p) in config.command_services.iter().enumerate() {
        if let Some(n) = &p.tls {
            refs.push(("command-service", i, "tls", n, true));
        }
    }
    for (kind, index, key, name, server) in refs {
        let found = if server {
            config.tls_server(name).is_some()
        } else {
            config.tls_client(name).is_some()
        };
        if !found {
            return Err(ConfigError::BadValue {
                origin: origin_of(kind, index),
                kind: kind.to_owned(),
                key: key.to_owned(),
                message: format!(
                    "unknown TLS config {name} (no {} with that name)",
                    if server { "tls-server" } else { "tls-client" }
                ),
            });
        }
    }
    let mut seen = std::collections::HashSet::new();
    for t in &config.tls_servers {
        if !seen.insert(("s", t.name.as_str())) {
            return Err(duplicate_tls("tls-server", &t.name, items));
        }
    }
    for t in &config.tls_clients {
        if !seen.insert(("c", t.name.as_str())) {
            return Err(duplicate_tls("tls-client", &t.name, items));
        }
    }
    Ok(())
}

fn duplicate_tls(kind: &str, name: &str, items: &[RawItem]) -> ConfigError {
    let origins: Vec<&str> = items
        .iter()
        .filter(|i| i.kind == kind)
        .filter(|i| {
            i.entries.iter().any(|e| {
                e.key
                    .as_deref()
                    .is_some_and(|k| k.eq_ignore_ascii_case("name"))
                    && coerce::to_str(&e.value).is_ok_and(|v| v == name)
            })
        })
        .map(|i| i.origin.as_str())
        .collect();
    ConfigError::Duplicate {
        kind: format!("{kind} named {name:?}"),
        first: origins.first().copied().unwrap_or_default().to_owned(),
        second: origins.get(1).copied().unwrap_or_default().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_modes_follow_go() {
        assert_eq!(go_file_mode(0o660), 0o660);
        assert_eq!(go_file_mode(660), 0o224);
        assert_eq!(go_file_mode(-1), 0o7777);
        assert_eq!(go_file_mode(99999), 0o237);
    }

    #[test]
    fn fingerprints() {
        let sha256 = "ab".repeat(32);
        assert_eq!(decode_fingerprint(&sha256).map(|b| b.len()), Ok(32));
        let colons = vec!["AB"; 64].join(":");
        assert_eq!(decode_fingerprint(&colons).map(|b| b.len()), Ok(64));
        assert!(decode_fingerprint("zz").is_err());
        assert!(decode_fingerprint("abc").is_err());
        assert!(decode_fingerprint("abcd").is_err());
        assert!(decode_fingerprint("é").is_err());
    }

    #[test]
    fn control_limits_have_defaults_and_are_checked() {
        use crate::control::ControlLimits;
        let load =
            |extra: &str| crate::config::load_str(&format!("- node:\n    id: x\n{extra}"), "t.yml");
        let absent = load("").expect("no control-limits");
        assert_eq!(absent.control_limits, ControlLimits::default());
        let empty = load("- control-limits:\n").expect("control-limits without fields");
        assert_eq!(empty.control_limits, ControlLimits::default());
        let set = load(
            "- control-limits:\n    maxconnections: 10\n    maxlinelength: 4096\n    \
             linetimeout: 5s\n    idletimeout: 1m\n    maxpayload: 1048576\n    \
             payloadidletimeout: 30s\n",
        )
        .expect("control-limits with every field");
        assert_eq!(
            set.control_limits,
            ControlLimits {
                max_connections: 10,
                max_line: 4096,
                line_timeout: Duration::from_secs(5),
                idle_timeout: Some(Duration::from_secs(60)),
                max_payload: Some(1 << 20),
                payload_idle_timeout: Duration::from_secs(30),
            }
        );
        for bad in [
            "maxconnections: 0",
            "maxlinelength: -1",
            "linetimeout: 0s",
            "linetimeout: soon",
            "maxpayload: -5",
            "payloadidletimeout: -1s",
        ] {
            let err = load(&format!("- control-limits:\n    {bad}\n"));
            let key = bad.split(':').next().unwrap_or_default();
            assert!(
                err.is_err_and(|e| e.to_string().contains(key)),
                "{bad} is refused, naming the field"
            );
        }
    }

    #[test]
    fn mesh_limits_default_and_parse() {
        let config = crate::config::load_str("- node:\n    id: x\n", "t.yml").expect("no limits");
        assert_eq!(config.mesh_limits, MeshLimitsConfig::default());
        let config = crate::config::load_str(
            "- node:\n    id: x\n- mesh-limits:\n    maxnodes: 20\n    routeinterval: 10ms\n    nodeexpiry: 0\n    maxpendingsessions: 3\n",
            "t.yml",
        )
        .expect("mesh-limits");
        let limits = config.mesh_limits;
        assert_eq!(limits.routing.max_nodes, 20);
        assert_eq!(limits.routing.max_links, 100_000);
        assert_eq!(limits.routing.route_interval, Duration::from_millis(10));
        assert_eq!(limits.routing.node_expiry, None);
        assert_eq!(limits.max_pending_sessions, 3);
        for bad in ["maxnodes: 0", "maxlinks: -5", "routeinterval: soon"] {
            let text = format!("- node:\n    id: x\n- mesh-limits:\n    {bad}\n");
            let err = crate::config::load_str(&text, "t.yml").expect_err(bad);
            let key = bad.split(':').next().unwrap_or_default();
            assert!(err.to_string().contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn mesh_page_defaults_to_loopback_and_checks_its_tls_server() {
        let config = crate::config::load_str("- node:\n    id: x\n- mesh-page:\n", "t.yml")
            .expect("mesh-page without fields");
        let page = config.mesh_page.expect("mesh-page parsed");
        assert_eq!(page.address, MESH_PAGE_DEFAULT_ADDRESS);
        assert_eq!(page.tls, None);
        let config = crate::config::load_str(
            "- node:\n    id: x\n- mesh-page:\n    address: 127.0.0.1:9000\n",
            "t.yml",
        )
        .expect("mesh-page with an address");
        assert_eq!(
            config.mesh_page.map(|p| p.address).as_deref(),
            Some("127.0.0.1:9000")
        );
        let missing = crate::config::load_str(
            "- node:\n    id: x\n- mesh-page:\n    tls: nosuch\n",
            "t.yml",
        );
        assert!(
            missing.is_err_and(|e| e.to_string().contains("nosuch")),
            "an unknown tls-server is refused"
        );
    }

    #[test]
    fn node_ids() {
        assert!(valid_node_id("a.b-c_d@e:f"));
        assert!(!valid_node_id("a/b"));
        assert!(!valid_node_id("nodé"));
    }
}
