//! The core's own configuration kinds, with their fields.
//!
//! Each kind is one `--flag` on the command line and one `- kind:` item in a YAML list.
//! Kinds owned by the core (node, control services, TLS, signing, proxies, certificate
//! commands, `plugins`) are validated and typed here. Backends and work types
//! (`tcp-listener`, `ws-peer`, `work-command`, ...) belong to the plugins that claim
//! them, which describe their fields themselves (see [`super::describe_sections`] and
//! [`super::PluginKind`]). The table keeps only the kinds of Go receptor 1.6.9 that no
//! plugin of this build provides (`work-kubernetes`, `work-python`, the internal
//! `command-runner`), so that `--help` lists them and the node can say they are not
//! provided.

use super::coerce::FieldType;

/// Who validates a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Typed and validated by this module.
    Core,
    /// Passed to plugins as a [`super::Section`].
    Plugin,
}

/// Help-output groups, in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Group {
    General,
    Resources,
    Backends,
    Services,
    Workers,
    Certificates,
}

impl Group {
    pub(crate) const ALL: [Group; 6] = [
        Group::General,
        Group::Resources,
        Group::Backends,
        Group::Services,
        Group::Workers,
        Group::Certificates,
    ];

    pub(crate) fn heading(self) -> &'static str {
        match self {
            Group::General => "",
            Group::Resources => "Commands that define resources other commands refer to:",
            Group::Backends => {
                "Commands that configure back-ends, which connect Receptor nodes together:"
            }
            Group::Services => "Commands that configure services running over the Receptor mesh:",
            Group::Workers => "Commands that configure workers, which process units of work:",
            Group::Certificates => {
                "Commands that create certificates and run a certificate authority:"
            }
        }
    }
}

/// One field of a kind.
#[derive(Debug)]
pub(crate) struct FieldSpec {
    /// Lower-case key.
    pub(crate) name: &'static str,
    pub(crate) ty: FieldType,
    pub(crate) required: bool,
    /// Receives a value given without `key=` (`--tcp-peer host:port`, `- log-level: debug`).
    pub(crate) bare: bool,
    /// Default shown in `--help`.
    pub(crate) default: Option<&'static str>,
    pub(crate) description: &'static str,
}

/// One configuration kind.
#[derive(Debug)]
pub(crate) struct KindSpec {
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    pub(crate) owner: Owner,
    pub(crate) group: Group,
    /// At most one item of this kind.
    pub(crate) singleton: bool,
    /// Must be the only item (`--version`, certificate commands).
    pub(crate) exclusive: bool,
    /// Not listed in `--help`.
    pub(crate) hidden: bool,
    pub(crate) fields: &'static [FieldSpec],
}

impl KindSpec {
    pub(crate) fn field(&self, name: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub(crate) fn bare_field(&self) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.bare)
    }
}

/// Looks a kind up by its canonical (lower-case) name.
pub(crate) fn kind(name: &str) -> Option<&'static KindSpec> {
    KINDS.iter().find(|k| k.name == name)
}

/// Kinds whose changes `reload` applies (everything else needs a restart).
pub(crate) const RELOADABLE: [&str; 7] = [
    "tcp-peer",
    "tcp-listener",
    "ws-peer",
    "ws-listener",
    "udp-peer",
    "udp-listener",
    "local-only",
];

const fn f(name: &'static str, ty: FieldType, description: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        required: false,
        bare: false,
        default: None,
        description,
    }
}

const fn req(name: &'static str, ty: FieldType, description: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        required: true,
        bare: false,
        default: None,
        description,
    }
}

const fn def(
    name: &'static str,
    ty: FieldType,
    default: &'static str,
    description: &'static str,
) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        required: false,
        bare: false,
        default: Some(default),
        description,
    }
}

const fn bare(mut spec: FieldSpec) -> FieldSpec {
    spec.bare = true;
    spec
}

const fn kind_spec(
    name: &'static str,
    description: &'static str,
    owner: Owner,
    group: Group,
    fields: &'static [FieldSpec],
) -> KindSpec {
    KindSpec {
        name,
        description,
        owner,
        group,
        singleton: false,
        exclusive: false,
        hidden: false,
        fields,
    }
}

const fn singleton(mut spec: KindSpec) -> KindSpec {
    spec.singleton = true;
    spec
}

const fn exclusive(mut spec: KindSpec) -> KindSpec {
    spec.exclusive = true;
    spec
}

const fn hidden(mut spec: KindSpec) -> KindSpec {
    spec.hidden = true;
    spec
}

use FieldType::{AnyMap, Bool, FloatMap, Int, MapList, Str, StrList};
use Group::{Certificates, General, Resources, Services, Workers};
use Owner::{Core, Plugin};

const BINDADDR: FieldSpec = def("bindaddr", Str, "0.0.0.0", "Local address to bind to");
const PERMISSIONS: FieldSpec = def("permissions", Int, "0600", "Permissions of the socket file");
const CONFIG_NAME: FieldSpec = req("name", Str, "Name of this configuration");
const MINTLS13: FieldSpec = def(
    "mintls13",
    Bool,
    "true",
    "Require TLS 1.3 (otherwise 1.2 is the minimum)",
);
const TLS_SERVER: FieldSpec = f("tls", Str, "Name of a tls-server configuration");
const REMOTENODE: FieldSpec = req("remotenode", Str, "Node to forward to");
const REMOTESERVICE: FieldSpec = req("remoteservice", Str, "Service to forward to");
const LISTEN_SERVICE: FieldSpec = req("service", Str, "Mesh service name to listen on");
const WORKTYPE: FieldSpec = req("worktype", Str, "Name of the work type");
const ALLOWRUNTIMEPARAMS: FieldSpec = def(
    "allowruntimeparams",
    Bool,
    "false",
    "Let submitters add parameters",
);
const VERIFYSIGNATURE: FieldSpec = def(
    "verifysignature",
    Bool,
    "false",
    "Require signed work submissions",
);
const COMMONNAME: FieldSpec = req("commonname", Str, "Common name of the certificate");
const NOTBEFORE: FieldSpec = f("notbefore", Str, "Start of validity (RFC 3339)");
const NOTAFTER: FieldSpec = f("notafter", Str, "End of validity (RFC 3339)");

/// Every kind, in the order `--help` lists them.
pub(crate) static KINDS: &[KindSpec] = &[
    singleton(kind_spec(
        "node",
        "Node configuration of this instance",
        Core,
        General,
        &[
            bare(f("id", Str, "Node ID (default: the local host name)")),
            def(
                "datadir",
                Str,
                "/tmp/receptor",
                "Directory for the node's data (work units)",
            ),
            f(
                "firewallrules",
                MapList,
                "Firewall rules (see the documentation)",
            ),
            f(
                "maxidleconnectiontimeout",
                Str,
                "How long a backend connection may stay silent before it is dropped (at least 21s)",
            ),
            f("receptorkubesupportreconnect", Str, ""),
            f("receptorkubeclientsetqps", Str, ""),
            f("receptorkubeclientsetburst", Str, ""),
            f("receptorkubeclientsetratelimiter", Str, ""),
        ],
    )),
    singleton(kind_spec(
        "local-only",
        "Run a self-contained node without backends",
        Core,
        General,
        &[f("local", Bool, "")],
    )),
    exclusive(kind_spec(
        "version",
        "Print the Receptor version",
        Core,
        General,
        &[],
    )),
    singleton(kind_spec(
        "log-level",
        "Verbosity of the log output",
        Core,
        General,
        &[bare(def(
            "level",
            Str,
            "error",
            "Error, Warning, Info or Debug",
        ))],
    )),
    singleton(kind_spec(
        "log-format",
        "Form of the log output (receptor-rs extension)",
        Core,
        General,
        &[bare(def(
            "format",
            Str,
            "text",
            "text, or json for one JSON object per line",
        ))],
    )),
    singleton(kind_spec(
        "metrics",
        "Serve the node's metrics as Prometheus text over HTTP (receptor-rs extension)",
        Core,
        General,
        &[
            bare(req("address", Str, "host:port to listen on")),
            f("tls", Str, "Name of the tls-server that makes it HTTPS"),
        ],
    )),
    singleton(kind_spec(
        "mesh-page",
        "Serve a read-only web page drawing the mesh and the node's units (receptor-rs extension)",
        Core,
        General,
        &[
            f(
                "address",
                Str,
                "host:port to listen on (default 127.0.0.1:8089)",
            ),
            f("tls", Str, "Name of the tls-server that makes it HTTPS"),
        ],
    )),
    singleton(kind_spec(
        "mesh-limits",
        "Bounds on what mesh peers can make the node hold and do (receptor-rs extension)",
        Core,
        General,
        &[
            def(
                "maxnodes",
                Int,
                "10000",
                "Most nodes in the routing table; updates from more are ignored",
            ),
            def(
                "maxnodeconnections",
                Int,
                "1000",
                "Most connections one routing update may list",
            ),
            def(
                "maxlinks",
                Int,
                "100000",
                "Most links (advertised connections of every node) held",
            ),
            def(
                "maxnodeidlength",
                Int,
                "256",
                "Longest node ID accepted in a routing update, in bytes",
            ),
            def(
                "routeupdatespersecond",
                Int,
                "1000",
                "Routing updates processed per second per connection; more are coalesced",
            ),
            def(
                "coalescedbytes",
                Int,
                "1048576",
                "Bytes of coalesced routing updates one connection may have waiting",
            ),
            def(
                "routeinterval",
                Str,
                "2ms",
                "Shortest time between route computations while changes keep coming",
            ),
            def(
                "nodeexpiry",
                Str,
                "1h",
                "Unreachable nodes not heard from for this long are forgotten (0: never)",
            ),
            def(
                "maxpendingsessions",
                Int,
                "256",
                "Connections per backend that have not completed the handshake; more are closed",
            ),
        ],
    )),
    singleton(kind_spec(
        "control-limits",
        "Bound what control clients may hold on the node (receptor-rs extension)",
        Core,
        General,
        &[
            def(
                "maxconnections",
                Int,
                "1024",
                "Control connections served at once over the unix socket and TCP listeners",
            ),
            def(
                "maxlinelength",
                Int,
                "1048576",
                "Longest command line, in bytes",
            ),
            def(
                "linetimeout",
                Str,
                "1m",
                "Time from the first byte of a command line to its end",
            ),
            f(
                "idletimeout",
                Str,
                "Time a connection may wait between commands (default: no limit)",
            ),
            def(
                "maxpayload",
                Int,
                "0",
                "Largest work submit payload in bytes (0: no limit)",
            ),
            def(
                "payloadidletimeout",
                Str,
                "10m",
                "Longest pause within a work submit payload",
            ),
        ],
    )),
    singleton(kind_spec(
        "trace",
        "Log every packet (tracing)",
        Core,
        General,
        &[],
    )),
    kind_spec(
        "control-service",
        "Run a control service (receptorctl talks to it)",
        Core,
        General,
        &[
            def("service", Str, "control", "Mesh service name to listen on"),
            f("filename", Str, "Path of a unix socket to listen on"),
            PERMISSIONS,
            f(
                "tls",
                Str,
                "Name of the tls-server used on the mesh listener",
            ),
            f("tcplisten", Str, "TCP port or host:port to listen on"),
            f(
                "tcptls",
                Str,
                "Name of the tls-server used on the TCP listener",
            ),
        ],
    ),
    kind_spec(
        "plugins",
        "Plugin files or folders to load (receptor-rs extension)",
        Core,
        General,
        &[
            bare(f(
                "path",
                StrList,
                "Path of a plugin library or of a folder of plugins",
            )),
            f(
                "isolated",
                StrList,
                "Path of a work-type plugin to run in a plugin host process (YAML: {path: P, isolation: process})",
            ),
            f(
                "calltimeout",
                Str,
                "Bound on a call into an isolated plugin before its host is killed (default 10s)",
            ),
        ],
    ),
    kind_spec(
        "tls-server",
        "Define a named TLS server configuration",
        Core,
        Resources,
        &[
            CONFIG_NAME,
            req("cert", Str, "Server certificate file"),
            req("key", Str, "Server private key file"),
            def(
                "requireclientcert",
                Bool,
                "false",
                "Require a client certificate",
            ),
            f(
                "clientcas",
                Str,
                "CA bundle that client certificates are verified against",
            ),
            f(
                "pinnedclientcert",
                StrList,
                "Fingerprint (SHA-256 or SHA-512) a client certificate must have",
            ),
            def(
                "skipreceptornamescheck",
                Bool,
                "false",
                "Do not check the node ID in the certificate at startup",
            ),
            MINTLS13,
        ],
    ),
    kind_spec(
        "tls-client",
        "Define a named TLS client configuration",
        Core,
        Resources,
        &[
            CONFIG_NAME,
            req("cert", Str, "Client certificate file"),
            req("key", Str, "Client private key file"),
            f("rootcas", Str, "CA bundle to trust instead of the system's"),
            def(
                "insecureskipverify",
                Bool,
                "false",
                "Accept any server certificate",
            ),
            f(
                "pinnedservercert",
                StrList,
                "Fingerprint (SHA-256 or SHA-512) the server certificate must have",
            ),
            f(
                "skipreceptornamescheck",
                Bool,
                "Do not check the node ID in the certificate at startup",
            ),
            MINTLS13,
        ],
    ),
    kind_spec(
        "command-service",
        "Serve an interactive command as a mesh service",
        Core,
        Services,
        &[
            req("service", Str, "Mesh service name"),
            req("command", Str, "Command run for each connection"),
            TLS_SERVER,
        ],
    ),
    kind_spec(
        "ip-router",
        "Route IP traffic through a tun interface",
        Core,
        Services,
        &[
            req("networkname", Str, "Name of the network and of its service"),
            f("interface", Str, "Name of the local tun interface"),
            req("localnet", Str, "Local /30 CIDR address"),
            f("routes", Str, "Comma-separated CIDR subnets to advertise"),
        ],
    ),
    kind_spec(
        "tcp-server",
        "Accept TCP connections and forward them over the mesh",
        Core,
        Services,
        &[
            req("port", Int, "Local TCP port"),
            BINDADDR,
            REMOTENODE,
            REMOTESERVICE,
            f(
                "tlsserver",
                Str,
                "Name of a tls-server for the TCP listener",
            ),
            f(
                "tlsclient",
                Str,
                "Name of a tls-client for the mesh connection",
            ),
        ],
    ),
    kind_spec(
        "tcp-client",
        "Listen on a mesh service and forward connections over TCP",
        Core,
        Services,
        &[
            LISTEN_SERVICE,
            req("address", Str, "host:port to connect to"),
            f(
                "tlsserver",
                Str,
                "Name of a tls-server for the mesh service",
            ),
            f(
                "tlsclient",
                Str,
                "Name of a tls-client for the TCP connection",
            ),
        ],
    ),
    kind_spec(
        "udp-server",
        "Accept UDP datagrams and forward them over the mesh",
        Core,
        Services,
        &[
            req("port", Int, "Local UDP port"),
            BINDADDR,
            REMOTENODE,
            REMOTESERVICE,
        ],
    ),
    kind_spec(
        "udp-client",
        "Listen on a mesh service and forward datagrams over UDP",
        Core,
        Services,
        &[LISTEN_SERVICE, req("address", Str, "host:port to send to")],
    ),
    kind_spec(
        "unix-socket-server",
        "Accept unix socket connections and forward them over the mesh",
        Core,
        Services,
        &[
            req("filename", Str, "Socket path (replaced if it exists)"),
            PERMISSIONS,
            REMOTENODE,
            REMOTESERVICE,
            f("tls", Str, "Name of a tls-client for the mesh connection"),
        ],
    ),
    kind_spec(
        "unix-socket-client",
        "Listen on a mesh service and forward connections to a unix socket",
        Core,
        Services,
        &[
            LISTEN_SERVICE,
            req("filename", Str, "Path of an existing socket"),
            f("tls", Str, "Name of a tls-server for the mesh service"),
        ],
    ),
    singleton(kind_spec(
        "work-signing",
        "Private key that signs work submitted to other nodes",
        Core,
        Workers,
        &[
            bare(f("privatekey", Str, "PEM file of the RSA private key")),
            f(
                "tokenexpiration",
                Str,
                "Lifetime of a signature, e.g. 3h or 3h30m (default: 5m)",
            ),
        ],
    )),
    singleton(kind_spec(
        "work-verification",
        "Public key that verifies signed work submissions",
        Core,
        Workers,
        &[bare(f("publickey", Str, "PEM file of the RSA public key"))],
    )),
    kind_spec(
        "work-kubernetes",
        "Work type that runs pods on Kubernetes",
        Plugin,
        Workers,
        &[
            WORKTYPE,
            f("namespace", Str, "Namespace of the pods"),
            f("image", Str, "Container image of the worker pod"),
            f("command", Str, "Command run in the container"),
            f("params", Str, "Parameters passed to the entrypoint"),
            def(
                "authmethod",
                Str,
                "incluster",
                "kubeconfig, incluster or runtime",
            ),
            f("kubeconfig", Str, "Kubeconfig file (authmethod=kubeconfig)"),
            f("pod", Str, "Pod definition file (JSON or YAML)"),
            def(
                "allowruntimeauth",
                Bool,
                "false",
                "Let submitters pass API parameters",
            ),
            def(
                "allowruntimecommand",
                Bool,
                "false",
                "Let submitters choose image and command",
            ),
            ALLOWRUNTIMEPARAMS,
            def(
                "allowruntimepod",
                Bool,
                "false",
                "Let submitters pass a pod definition",
            ),
            def(
                "deletepodonrestart",
                Bool,
                "true",
                "Delete pending pods on restart",
            ),
            def("streammethod", Str, "logger", "logger or tcp"),
            VERIFYSIGNATURE,
        ],
    ),
    kind_spec(
        "work-python",
        "Work type implemented by a Python plugin (deprecated, refused by receptor 1.6.9)",
        Plugin,
        Workers,
        &[
            WORKTYPE,
            req("plugin", Str, "Python module of the plugin"),
            req("function", Str, "Exported function to call"),
            f("config", AnyMap, "Plugin-specific configuration"),
        ],
    ),
    hidden(kind_spec(
        "command-runner",
        "Run one command of a work unit (internal)",
        Plugin,
        Workers,
        &[
            req("command", Str, "Command to run"),
            req("params", Str, "Parameters"),
            req("unitdir", Str, "Folder of the work unit"),
        ],
    )),
    exclusive(kind_spec(
        "cert-init",
        "Create a certificate authority",
        Core,
        Certificates,
        &[
            COMMONNAME,
            req("bits", Int, "Length of the RSA key in bits"),
            NOTBEFORE,
            NOTAFTER,
            req("outcert", Str, "File the CA certificate is written to"),
            req("outkey", Str, "File the CA private key is written to"),
        ],
    )),
    exclusive(kind_spec(
        "cert-makereq",
        "Create a certificate signing request",
        Core,
        Certificates,
        &[
            COMMONNAME,
            f("bits", Int, "Length of the RSA key in bits"),
            f("dnsname", StrList, "DNS name to add to the certificate"),
            f("ipaddress", StrList, "IP address to add to the certificate"),
            f(
                "nodeid",
                StrList,
                "Receptor node ID to add to the certificate",
            ),
            req("outreq", Str, "File the request is written to"),
            f("inkey", Str, "Existing private key to use"),
            f("outkey", Str, "File a new private key is written to"),
        ],
    )),
    exclusive(kind_spec(
        "cert-signreq",
        "Sign a certificate request",
        Core,
        Certificates,
        &[
            req("req", Str, "Certificate request file"),
            req("cacert", Str, "CA certificate file"),
            req("cakey", Str, "CA private key file"),
            NOTBEFORE,
            NOTAFTER,
            req("outcert", Str, "File the signed certificate is written to"),
            def(
                "verify",
                Bool,
                "false",
                "Sign without asking for confirmation",
            ),
        ],
    )),
];

/// `--help` type label of a field.
pub(crate) fn type_label(ty: FieldType) -> &'static str {
    match ty {
        Str => "string",
        Int => "int",
        Bool => "bool",
        StrList => "[]string (may be repeated)",
        MapList => "JSON list of JSON dict of JSON data to JSON data",
        FloatMap => "JSON dict of string to float64",
        AnyMap => "JSON dict with string keys",
    }
}

/// The singular kind of a key of the `version: 2` map form of a core kind
/// (`control-services` → `control-service`). Plugins' keys (`tcp-listeners`) lose their
/// final `s`, and the plugin host maps a key a plugin declares to its kind.
pub(crate) fn v2_kind(key: &str) -> Option<&'static str> {
    Some(match key {
        "node" => "node",
        "trace" => "trace",
        "log-level" => "log-level",
        "log-format" => "log-format",
        "metrics" => "metrics",
        "mesh-page" => "mesh-page",
        "control-limits" => "control-limits",
        "mesh-limits" => "mesh-limits",
        "local-only" => "local-only",
        "plugins" => "plugins",
        "control-services" => "control-service",
        "tls-clients" => "tls-client",
        "tls-servers" => "tls-server",
        "work-kubernetes" => "work-kubernetes",
        "work-signing" => "work-signing",
        "work-verification" => "work-verification",
        "iprouters" | "ip-routers" => "ip-router",
        "tcp-clients" => "tcp-client",
        "tcp-servers" => "tcp-server",
        "udp-clients" => "udp-client",
        "udp-servers" => "udp-server",
        "unix-socket-clients" => "unix-socket-client",
        "unix-socket-servers" => "unix-socket-server",
        "cert-init" => "cert-init",
        "cert-makereqs" => "cert-makereq",
        "cert-signreqs" => "cert-signreq",
        _ => return None,
    })
}
