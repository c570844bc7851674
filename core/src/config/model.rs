//! The typed configuration the daemon runs from.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// A node's whole configuration: the core-owned settings, typed and validated, plus the
/// sections that plugins claim (backends, work types, and anything a third-party plugin
/// may understand).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// `node`: identity and data folder.
    pub node: NodeConfig,
    /// `log-level` (Info when absent, Error when present without a level, as in Go).
    pub log_level: LogLevel,
    /// `log-format`: text (the default) or JSON lines (receptor-rs extension).
    pub log_format: LogFormat,
    /// `trace`: packet tracing.
    pub trace: bool,
    /// `local-only`: run without backends.
    pub local_only: bool,
    /// `control-service` items.
    pub control_services: Vec<ControlServiceConfig>,
    /// `plugins`: plugin files or folders (receptor-rs extension). Relative paths from a
    /// file are resolved against the file's folder.
    pub plugins: Vec<PathBuf>,
    /// `plugins` entries `{path: P, isolation: process}`: plugins each run in a plugin
    /// host process. Relative paths as for `plugins`.
    pub isolated_plugins: Vec<PathBuf>,
    /// `plugins` `calltimeout`: the bound on a call into a plugin host.
    pub plugin_call_timeout: Option<std::time::Duration>,
    /// `tls-server` items.
    pub tls_servers: Vec<TlsServerConfig>,
    /// `tls-client` items.
    pub tls_clients: Vec<TlsClientConfig>,
    /// `work-signing`.
    pub work_signing: Option<WorkSigningConfig>,
    /// `work-verification`.
    pub work_verification: Option<WorkVerificationConfig>,
    /// `tcp-server` proxies.
    pub tcp_servers: Vec<TcpServerConfig>,
    /// `tcp-client` proxies.
    pub tcp_clients: Vec<TcpClientConfig>,
    /// `udp-server` proxies.
    pub udp_servers: Vec<UdpServerConfig>,
    /// `udp-client` proxies.
    pub udp_clients: Vec<UdpClientConfig>,
    /// `unix-socket-server` proxies.
    pub unix_socket_servers: Vec<UnixSocketServerConfig>,
    /// `unix-socket-client` proxies.
    pub unix_socket_clients: Vec<UnixSocketClientConfig>,
    /// `command-service` items.
    pub command_services: Vec<CommandServiceConfig>,
    /// `ip-router` items.
    pub ip_routers: Vec<IpRouterConfig>,
    /// `metrics`: the Prometheus endpoint (receptor-rs extension; off when absent).
    pub metrics: Option<MetricsConfig>,
    /// `mesh-page`: the read-only web page of the mesh (receptor-rs extension; off when
    /// absent).
    pub mesh_page: Option<MeshPageConfig>,
    /// `control-limits`: bounds on control clients and `work submit` payloads
    /// (receptor-rs extension; [`crate::control::ControlLimits::default`] when absent).
    pub control_limits: crate::control::ControlLimits,
    /// `mesh-limits`: bounds on what peers can make the node hold (receptor-rs
    /// extension; the defaults when absent).
    pub mesh_limits: MeshLimitsConfig,
    /// Everything plugins provide (backends, work types, unknown kinds), in order.
    pub sections: Vec<Section>,
}

/// `metrics`: where the node serves its figures as Prometheus text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetricsConfig {
    /// `host:port` of the HTTP listener.
    pub address: String,
    /// Name of the `tls-server` that makes it HTTPS.
    pub tls: Option<String>,
}

/// `mesh-limits`: bounds on the mesh state and work peers can cause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeshLimitsConfig {
    /// Limits of the routing state machine (`maxnodes`, `maxnodeconnections`,
    /// `maxlinks`, `maxnodeidlength`, `routeupdatespersecond`, `coalescedbytes`,
    /// `routeinterval`, `nodeexpiry`).
    #[serde(serialize_with = "serialize_routing_limits")]
    pub routing: receptor_proto::limits::MeshLimits,
    /// `maxpendingsessions`: connections one backend may have that have not yet
    /// completed the mesh handshake (or TLS); more are closed at once.
    pub max_pending_sessions: usize,
}

/// Default of [`MeshLimitsConfig::max_pending_sessions`].
pub const DEFAULT_MAX_PENDING_SESSIONS: usize = 256;

impl Default for MeshLimitsConfig {
    fn default() -> Self {
        MeshLimitsConfig {
            routing: receptor_proto::limits::MeshLimits::default(),
            max_pending_sessions: DEFAULT_MAX_PENDING_SESSIONS,
        }
    }
}

/// The routing limits as their `Debug` text (only compared, by `reload`).
fn serialize_routing_limits<S: serde::Serializer>(
    limits: &receptor_proto::limits::MeshLimits,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{limits:?}"))
}

/// Where `mesh-page` listens when the item gives no `address`: loopback only.
pub const MESH_PAGE_DEFAULT_ADDRESS: &str = "127.0.0.1:8089";

/// `mesh-page`: where the node serves a web page drawing the mesh and its units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeshPageConfig {
    /// `host:port` of the HTTP listener ([`MESH_PAGE_DEFAULT_ADDRESS`] when not given).
    pub address: String,
    /// Name of the `tls-server` that makes it HTTPS.
    pub tls: Option<String>,
}

impl Config {
    /// A configuration with nothing but the node `id` (not validated) and Go's defaults:
    /// what `receptor --node id=<id>` gives.
    pub fn with_node_id(id: &str) -> Config {
        Config {
            node: NodeConfig {
                id: id.to_owned(),
                datadir: PathBuf::from("/tmp/receptor"),
                firewall_rules: Vec::new(),
                max_idle_connection_timeout: None,
                kube_settings: BTreeMap::new(),
            },
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
            trace: false,
            local_only: false,
            control_services: Vec::new(),
            plugins: Vec::new(),
            isolated_plugins: Vec::new(),
            plugin_call_timeout: None,
            tls_servers: Vec::new(),
            tls_clients: Vec::new(),
            work_signing: None,
            work_verification: None,
            tcp_servers: Vec::new(),
            tcp_clients: Vec::new(),
            udp_servers: Vec::new(),
            udp_clients: Vec::new(),
            unix_socket_servers: Vec::new(),
            unix_socket_clients: Vec::new(),
            command_services: Vec::new(),
            ip_routers: Vec::new(),
            metrics: None,
            mesh_page: None,
            control_limits: crate::control::ControlLimits::default(),
            mesh_limits: MeshLimitsConfig::default(),
            sections: Vec::new(),
        }
    }

    /// The `tls-server` named `name`.
    pub fn tls_server(&self, name: &str) -> Option<&TlsServerConfig> {
        self.tls_servers.iter().find(|t| t.name == name)
    }

    /// The `tls-client` named `name`.
    pub fn tls_client(&self, name: &str) -> Option<&TlsClientConfig> {
        self.tls_clients.iter().find(|t| t.name == name)
    }

    /// The sections of one kind, in order.
    pub fn sections_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Section> + 'a {
        self.sections.iter().filter(move |s| s.kind == kind)
    }
}

/// A configuration item handed to plugins.
///
/// Equality compares `kind` and `value` only: the same setting read from a YAML list,
/// the map form or the command line is the same section.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// Canonical singular kind, e.g. `tcp-listener`, `work-command`, `my-worktype`.
    pub kind: String,
    /// A JSON object; top-level keys are lower-cased. Values from YAML keep their YAML
    /// type; values from the command line are strings. As read, a key repeated on the
    /// command line is a list of its values and a bare value (`--tcp-peer host:port`)
    /// is under `""`; [`super::describe_sections`] then applies the plugin's
    /// description: the bare value goes to its field (`address`), list fields
    /// (`allowedpeers`) become lists of strings by Go's rules (`a`, `["a","b"]` and
    /// repeated keys all work), and a repeated scalar keeps its last value.
    pub value: serde_json::Value,
    /// Where it was written, e.g. `foo.yml item 3 (line 7)` or `command line --tcp-listener`.
    pub origin: String,
}

impl Section {
    /// Whether the section was given on the command line (its origin says so).
    pub fn from_command_line(&self) -> bool {
        self.origin.starts_with("command line")
    }
}

impl PartialEq for Section {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.value == other.value
    }
}

/// `node`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeConfig {
    /// Node ID: `id`, or the host name when absent (as Go receptor does).
    pub id: String,
    /// `datadir` (default `/tmp/receptor`).
    pub datadir: PathBuf,
    /// `firewallrules`, unparsed (a list of maps; see the wire-protocol spec §9).
    pub firewall_rules: Vec<serde_json::Map<String, serde_json::Value>>,
    /// `maxidleconnectiontimeout` (at least 21 s); `None` = the default 21 s.
    pub max_idle_connection_timeout: Option<Duration>,
    /// The `receptorkube*` settings (accepted for compatibility, unused).
    pub kube_settings: BTreeMap<String, String>,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warning,
    /// The default.
    Info,
    /// Everything.
    Debug,
}

impl LogLevel {
    /// Go receptor's name (`--log-level` of a command runner uses it).
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warning => "warning",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// The form of the log output (`log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum LogFormat {
    /// One human-readable line per record (the default).
    #[default]
    Text,
    /// One JSON object per line: time, level, target, node, message, fields.
    Json,
}

/// `control-service`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlServiceConfig {
    /// Mesh service name (default `control`; empty = no mesh listener).
    pub service: String,
    /// Unix socket path.
    pub filename: Option<PathBuf>,
    /// chmod mode of the socket file (default 0600). `0660` in YAML is octal; the value
    /// is reduced to permission bits the way Go's `os.FileMode` conversion does.
    pub permissions: u32,
    /// `tls`: name of the `tls-server` of the mesh listener.
    pub tls: Option<String>,
    /// `tcplisten`: `port` (all interfaces) or `host:port`.
    pub tcp_listen: Option<String>,
    /// `tcptls`: name of the `tls-server` of the TCP listener.
    pub tcp_tls: Option<String>,
}

/// `tls-server`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsServerConfig {
    /// Name other items refer to.
    pub name: String,
    /// Certificate file.
    pub cert: PathBuf,
    /// Private key file.
    pub key: PathBuf,
    /// `requireclientcert`.
    pub require_client_cert: bool,
    /// `clientcas`: CA bundle for client certificates.
    pub client_cas: Option<PathBuf>,
    /// `pinnedclientcert`, decoded (32 or 64 bytes each).
    pub pinned_client_certs: Vec<Vec<u8>>,
    /// `skipreceptornamescheck`.
    pub skip_receptor_names_check: bool,
    /// `mintls13` (default true in 1.6.9).
    pub min_tls13: bool,
}

/// `tls-client`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsClientConfig {
    /// Name other items refer to.
    pub name: String,
    /// Client certificate file (absent: no client certificate).
    pub cert: Option<PathBuf>,
    /// Client private key file (present exactly when `cert` is).
    pub key: Option<PathBuf>,
    /// `rootcas`: CA bundle to trust instead of the system's.
    pub root_cas: Option<PathBuf>,
    /// `insecureskipverify`.
    pub insecure_skip_verify: bool,
    /// `pinnedservercert`, decoded (32 or 64 bytes each).
    pub pinned_server_certs: Vec<Vec<u8>>,
    /// `skipreceptornamescheck`.
    pub skip_receptor_names_check: bool,
    /// `mintls13` (default true in 1.6.9).
    pub min_tls13: bool,
}

/// `work-signing`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkSigningConfig {
    /// RSA private key (PEM).
    pub private_key: PathBuf,
    /// Lifetime of a signature (`tokenexpiration`; default 5 minutes, the value Go
    /// receptor intends: 1.6.9 crashes when it is missing).
    pub token_expiration: Duration,
}

/// `work-verification`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkVerificationConfig {
    /// RSA public key (PEM).
    pub public_key: PathBuf,
}

/// `tcp-server`: accept TCP and forward over the mesh.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TcpServerConfig {
    /// Local port.
    pub port: u16,
    /// Local address (default `0.0.0.0`).
    pub bind_addr: String,
    /// Node to forward to.
    pub remote_node: String,
    /// Service to forward to.
    pub remote_service: String,
    /// `tlsserver` for the TCP listener.
    pub tls_server: Option<String>,
    /// `tlsclient` for the mesh connection.
    pub tls_client: Option<String>,
}

/// `tcp-client`: listen on a mesh service and forward to a TCP address.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TcpClientConfig {
    /// Mesh service to listen on.
    pub service: String,
    /// `host:port` to connect to.
    pub address: String,
    /// `tlsserver` for the mesh service.
    pub tls_server: Option<String>,
    /// `tlsclient` for the TCP connection.
    pub tls_client: Option<String>,
}

/// `udp-server`: accept UDP and forward over the mesh.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UdpServerConfig {
    /// Local port.
    pub port: u16,
    /// Local address (default `0.0.0.0`).
    pub bind_addr: String,
    /// Node to forward to.
    pub remote_node: String,
    /// Service to forward to.
    pub remote_service: String,
}

/// `udp-client`: listen on a mesh service and forward to a UDP address.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UdpClientConfig {
    /// Mesh service to listen on.
    pub service: String,
    /// `host:port` to send to.
    pub address: String,
}

/// `unix-socket-server`: accept on a unix socket and forward over the mesh.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnixSocketServerConfig {
    /// Socket path (replaced if it exists).
    pub filename: PathBuf,
    /// chmod mode of the socket (default 0600).
    pub permissions: u32,
    /// Node to forward to.
    pub remote_node: String,
    /// Service to forward to.
    pub remote_service: String,
    /// `tls`: a `tls-client` for the mesh connection.
    pub tls: Option<String>,
}

/// `unix-socket-client`: listen on a mesh service and forward to a unix socket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnixSocketClientConfig {
    /// Mesh service to listen on.
    pub service: String,
    /// Existing socket to connect to.
    pub filename: PathBuf,
    /// `tls`: a `tls-server` for the mesh service.
    pub tls: Option<String>,
}

/// `command-service`: run a command for each connection to a mesh service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommandServiceConfig {
    /// Mesh service to listen on.
    pub service: String,
    /// The command line as configured.
    pub command: String,
    /// Its words (split as Go's `shlex` splits them; no shell): program and arguments.
    pub argv: Vec<String>,
    /// `tls`: a `tls-server` for the mesh service.
    pub tls: Option<String>,
}

/// An IP network in CIDR form, its address masked to the prefix (Go's `net.IPNet` as
/// `net.ParseCIDR` returns it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Cidr {
    /// The network address (host bits zero).
    pub addr: std::net::IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` or `x::y/n` and masks the address, as Go's `net.ParseCIDR`.
    pub fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = text.split_once('/')?;
        let addr: std::net::IpAddr = addr.parse().ok()?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let prefix: u8 = prefix.parse().ok()?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return None;
        }
        Some(Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` is in the network.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

/// `ip` with every bit after the first `prefix` cleared.
fn mask(ip: std::net::IpAddr, prefix: u8) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// `ip-router`: IP packets between this node's tun interface and other nodes' over the
/// mesh.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IpRouterConfig {
    /// `networkname`: the mesh (datagram) service, and the network it routes.
    pub network_name: String,
    /// `interface`: the tun device's name (the kernel chooses when absent).
    pub interface: Option<String>,
    /// `localnet`: an IPv4 /30; the tun device gets its first host address, with the
    /// second as point-to-point peer.
    pub local_net: Cidr,
    /// `routes`: further networks reachable through this node, advertised.
    pub routes: Vec<Cidr>,
}
