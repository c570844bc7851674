//! Every example configuration (the user guide's, the spec's, `examples/`) parses to the
//! expected model, the list form, the map form and the command line agree, and the
//! reference Go receptor accepts the example files too.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use receptor_core::config::{
    self, Config, ControlServiceConfig, Invocation, LogFormat, LogLevel, Section, TcpClientConfig,
    TcpServerConfig, TlsClientConfig, TlsServerConfig, UdpClientConfig, UdpServerConfig,
    UnixSocketClientConfig, UnixSocketServerConfig, WorkSigningConfig, WorkVerificationConfig,
};
use receptor_core::plugin_host::{ClaimType, LoadOptions, PluginHost};
use serde_json::json;

/// The section kinds of the built-in plugins of this build (tcp, udp, websocket, echo,
/// command), with the descriptions the plugins give of them.
fn builtin_kinds() -> Vec<config::PluginKind> {
    static KINDS: std::sync::OnceLock<Vec<config::PluginKind>> = std::sync::OnceLock::new();
    KINDS
        .get_or_init(|| {
            let dir = receptor_tests::binaries::plugin_dir().expect("the built-in plugins");
            let paths = ["tcp", "udp", "websocket", "echo", "command"]
                .map(|p| dir.join(format!("libreceptor_{p}.so")))
                .to_vec();
            let host = PluginHost::load(&LoadOptions {
                paths,
                ..LoadOptions::default()
            })
            .expect("load the built-in plugins");
            host.section_kinds()
                .filter_map(|kind| {
                    let (claim_type, plugin) = host.claims(kind)?;
                    Some(config::PluginKind {
                        kind: kind.to_owned(),
                        backend: claim_type == ClaimType::Backend,
                        plugin: plugin.name.clone(),
                        desc: host.section_desc(kind).cloned().unwrap_or_default(),
                    })
                })
                .collect()
        })
        .clone()
}

/// The configuration as the node sees it once the plugins are loaded: their sections
/// completed from the plugins' descriptions.
fn described(mut config: Config) -> Config {
    let kinds = builtin_kinds();
    config::describe_sections(&mut config, |kind| {
        kinds.iter().find(|k| k.kind == kind).map(|k| &k.desc)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    config
}

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/config/testdata")
        .join(name)
}

fn load(path: &Path) -> Config {
    match config::load_file(path) {
        Ok(config) => described(config),
        Err(e) => panic!("{} should parse: {e}", path.display()),
    }
}

fn run(args: &[&str]) -> (Config, Option<PathBuf>) {
    let argv = std::iter::once("receptor")
        .chain(args.iter().copied())
        .map(OsString::from);
    match config::parse_args(argv) {
        Ok(Invocation::Run {
            config,
            config_file,
        }) => (described(config), config_file),
        Ok(other) => panic!("{args:?}: expected a node to run, got {other:?}"),
        Err(e) => panic!("{args:?} should parse: {e}"),
    }
}

fn empty(id: &str) -> Config {
    Config::with_node_id(id)
}

fn control(filename: Option<&str>) -> ControlServiceConfig {
    ControlServiceConfig {
        service: "control".to_owned(),
        filename: filename.map(PathBuf::from),
        permissions: 0o600,
        tls: None,
        tcp_listen: None,
        tcp_tls: None,
    }
}

fn section(kind: &str, value: serde_json::Value) -> Section {
    Section {
        kind: kind.to_owned(),
        value,
        origin: String::new(),
    }
}

fn expected_foo() -> Config {
    let mut c = empty("foo");
    c.log_level = LogLevel::Debug;
    c.control_services.push(control(Some("/tmp/foo.sock")));
    c.sections
        .push(section("tcp-listener", json!({"port": 2222})));
    c
}

fn expected_bar() -> Config {
    let mut c = empty("bar");
    c.log_level = LogLevel::Debug;
    c.control_services.push(control(Some("/tmp/bar.sock")));
    c.sections
        .push(section("tcp-peer", json!({"address": "localhost:2222"})));
    c.sections.push(section(
        "work-command",
        json!({"worktype": "echoint", "command": "bash", "params": ECHOINT_PARAMS}),
    ));
    c.sections.push(section(
        "work-command",
        json!({"worktype": "echopayload", "command": "bash", "params": ECHOPAYLOAD_PARAMS}),
    ));
    c.sections.push(section(
        "work-command",
        json!({"worktype": "listcontents", "command": "ls", "allowruntimeparams": true}),
    ));
    c
}

/// The `params` of the Workceptor guide's `echoint` and `echopayload` work types.
const ECHOINT_PARAMS: &str = r#"-c "for i in {1..5}; do echo $i; done""#;
const ECHOPAYLOAD_PARAMS: &str = r#"-c "while read -r line; do echo ${line^^}; done""#;

/// Command-line values of plugin sections are strings: compare with scalars as text.
fn as_strings(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Number(n) => json!(n.to_string()),
        serde_json::Value::Bool(b) => json!(b.to_string()),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(as_strings).collect())
        }
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), as_strings(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn with_string_sections(mut config: Config) -> Config {
    for s in &mut config.sections {
        s.value = as_strings(&s.value);
    }
    config
}

#[test]
fn user_guide_foo_in_the_version_2_form() {
    let config = load(&repo_file("examples/foo.yml"));
    assert_eq!(config, expected_foo());
    assert_eq!(
        config.sections[0].origin,
        format!(
            "{} key tcp-listeners item 1 (line 12)",
            repo_file("examples/foo.yml").display()
        )
    );
}

#[test]
fn user_guide_bar_in_the_version_2_form() {
    assert_eq!(load(&repo_file("examples/bar.yml")), expected_bar());
}

#[test]
fn list_form_and_map_form_give_the_same_model() {
    assert_eq!(
        load(&testdata("foo_v1.yml")),
        load(&repo_file("examples/foo.yml"))
    );
    assert_eq!(
        load(&testdata("bar_v1.yml")),
        load(&repo_file("examples/bar.yml"))
    );
}

#[test]
fn config_flag_reads_either_form_and_accepts_config_v2() {
    let foo = repo_file("examples/foo.yml");
    let foo = foo.to_str().unwrap_or_default();
    let (plain, file) = run(&["--config", foo]);
    assert_eq!(plain, expected_foo());
    assert_eq!(file.as_deref(), Some(Path::new(foo)));
    let (v2, _) = run(&["--config-v2", "--config", foo]);
    assert_eq!(v2, expected_foo());
    let (short, _) = run(&["-c", testdata("foo_v1.yml").to_str().unwrap_or_default()]);
    assert_eq!(short, expected_foo());
}

#[test]
fn command_line_equivalents_of_the_examples() {
    let (foo, file) = run(&[
        "--node",
        "id=foo",
        "--log-level",
        "level=debug",
        "--tcp-listener",
        "port=2222",
        "--control-service",
        "service=control",
        "filename=/tmp/foo.sock",
    ]);
    assert_eq!(file, None);
    assert_eq!(foo.sections[0].value, json!({"port": "2222"}));
    assert_eq!(
        with_string_sections(foo),
        with_string_sections(expected_foo())
    );

    // Bare values, one-dash and upper-case flags, as Go's cmdline accepts them.
    let (bar, _) = run(&[
        "-NODE",
        "bar",
        "--Log-Level",
        "debug",
        "--tcp-peer",
        "localhost:2222",
        "--control-service",
        "filename=/tmp/bar.sock",
        "--work-command",
        "worktype=echoint",
        "command=bash",
        &format!("params={ECHOINT_PARAMS}"),
        "--work-command",
        "worktype=echopayload",
        "command=bash",
        &format!("params={ECHOPAYLOAD_PARAMS}"),
        "--work-command",
        "worktype=listcontents",
        "command=ls",
        "allowruntimeparams=true",
    ]);
    assert_eq!(
        with_string_sections(bar),
        with_string_sections(expected_bar())
    );
}

#[test]
fn command_line_and_file_items_combine_in_order() {
    let foo = testdata("foo_v1.yml");
    let (config, file) = run(&[
        "--tcp-peer",
        "address=bar:2222",
        "--config",
        foo.to_str().unwrap_or_default(),
        "--udp-listener",
        "4444",
    ]);
    assert_eq!(file.as_deref(), Some(foo.as_path()));
    let kinds: Vec<(&str, &str)> = config
        .sections
        .iter()
        .map(|s| (s.kind.as_str(), s.origin.as_str()))
        .collect();
    let file_origin = format!("{} item 3 (line 6)", foo.display());
    assert_eq!(
        kinds,
        vec![
            ("tcp-peer", "command line --tcp-peer"),
            ("tcp-listener", file_origin.as_str()),
            ("udp-listener", "command line --udp-listener"),
        ]
    );
    assert_eq!(config.sections[2].value, json!({"port": "4444"}));
}

#[test]
fn plugin_sections_keep_values_and_accumulate_repeated_keys() {
    let (config, _) = run(&[
        "--node",
        "id=n",
        "--tcp-listener",
        "port=2222",
        "AllowedPeers=a",
        "allowedpeers=b",
        "nodecost={\"a\":2}",
        "port=3333",
        "--my-worktype",
        "Depth=3",
        "free text",
        "depth=4",
        "--udp-peer",
        "allowedpeers=[\"x\",\"y\"]",
        "host:1",
    ]);
    // Go's kinds: a repeated scalar keeps its last value, list fields accumulate.
    assert_eq!(
        config.sections[0].value,
        json!({"port": "3333", "allowedpeers": ["a", "b"], "nodecost": "{\"a\":2}"})
    );
    // Kinds unknown here: a repeated key becomes a list, a bare value goes under "".
    assert_eq!(config.sections[1].kind, "my-worktype");
    assert_eq!(
        config.sections[1].value,
        json!({"depth": ["3", "4"], "": "free text"})
    );
    assert_eq!(
        config.sections[2].value,
        json!({"allowedpeers": ["x", "y"], "address": "host:1"})
    );

    let yaml = "- node: {id: n}\n\
                - tcp-listener: {Port: 2222, cost: 1.5, allowedpeers: [a, b], nodecost: {Bar: 2}}\n\
                - my-worktype:\n    Nested: {Keep: Case}\n\
                - tcp-peer: {address: h:1, allowedpeers: a, redial: no}\n";
    let config = described(config::load_str(yaml, "inline.yml").unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(
        config.sections[0].value,
        json!({"port": 2222, "cost": 1.5, "allowedpeers": ["a", "b"], "nodecost": {"Bar": 2}})
    );
    assert_eq!(
        config.sections[1].value,
        json!({"nested": {"Keep": "Case"}})
    );
    assert_eq!(config.sections[1].origin, "inline.yml item 3 (line 3)");
    assert_eq!(
        config.sections[2].value,
        json!({"address": "h:1", "allowedpeers": ["a"], "redial": false})
    );
}

#[test]
fn only_the_first_yaml_document_counts() {
    // yaml.v2's Unmarshal reads the first document of a stream, and so do we.
    let config = config::load_str(
        "---\n- node: {id: a}\n---\n- node: {id: b}\n- local-only\n",
        "multi.yml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.node.id, "a");
    assert!(!config.local_only);
    // Comments only, or an empty document: nothing configured.
    for text in ["# nothing\n", "---\n", ""] {
        let config = config::load_str(text, "empty.yml").unwrap_or_else(|e| panic!("{e}"));
        assert!(config.sections.is_empty() && config.control_services.is_empty());
    }
}

#[test]
fn map_form_keys_for_plugins_are_singularised() {
    let yaml = "version: 2\nnode: {id: n}\nmy-worktypes:\n  - {a: 1}\n  - {a: 2}\nmy-thing: {b: yes}\nlocal-only: true\ntrace: false\nplugins: [a.so, b]\n";
    let config = config::load_str(yaml, "v2.yml").unwrap_or_else(|e| panic!("{e}"));
    let kinds: Vec<&str> = config.sections.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, vec!["my-worktype", "my-worktype", "my-thing"]);
    assert_eq!(config.sections[2].value, json!({"b": true}));
    assert!(config.local_only);
    assert!(!config.trace);
    assert_eq!(
        config.plugins,
        vec![PathBuf::from("a.so"), PathBuf::from("b")]
    );
}

#[test]
fn spec_verification_config() {
    let config = load(&testdata("spec_foo.yml"));
    assert_eq!(config.node.id, "foo");
    assert_eq!(config.node.datadir, PathBuf::from("/tmp/spec-run/data"));
    assert_eq!(config.log_level, LogLevel::Debug);
    assert_eq!(
        config.control_services,
        vec![ControlServiceConfig {
            service: "control".to_owned(),
            filename: Some(PathBuf::from("/tmp/spec-run/foo.sock")),
            permissions: 0o660,
            tls: None,
            tcp_listen: Some("127.0.0.1:22011".to_owned()),
            tcp_tls: None,
        }]
    );
    assert_eq!(
        config.work_signing,
        Some(WorkSigningConfig {
            private_key: PathBuf::from("/tmp/spec-run/keys/signworkprivate.pem"),
            token_expiration: Duration::from_secs(30 * 60),
        })
    );
    assert_eq!(
        config.work_verification,
        Some(WorkVerificationConfig {
            public_key: PathBuf::from("/tmp/spec-run/keys/signworkpublic.pem")
        })
    );
    let work: Vec<&Section> = config.sections_of("work-command").collect();
    assert_eq!(work.len(), 7);
    assert_eq!(
        work[0].value,
        json!({"worktype": "echoint", "command": "bash", "params": "-c \"for i in {1..5}; do echo $i; sleep 1; done\""})
    );
    assert_eq!(
        work[2].value,
        json!({"worktype": "echoparams", "command": "echo", "params": "base", "allowruntimeparams": true})
    );
    assert_eq!(work[3].value["params"], json!("300"));
    assert_eq!(
        work[6].value,
        json!({"worktype": "signedcat", "command": "cat", "verifysignature": true})
    );
    assert_eq!(
        config.sections[0],
        section(
            "tcp-listener",
            json!({"port": 22001, "bindaddr": "127.0.0.1"})
        )
    );
}

#[test]
fn every_core_kind_typed() {
    let path = testdata("everything.yml");
    let config = load(&path);
    let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut expected = empty("hop-1.example_X@a:b");
    expected.node.datadir = PathBuf::from("/var/lib/receptor");
    expected.node.max_idle_connection_timeout = Some(Duration::from_secs(90));
    expected.node.firewall_rules = vec![
        json!({"action": "reject", "fromnode": "/bad.*/"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        json!({"action": "accept"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    ];
    expected.log_level = LogLevel::Warning;
    expected.trace = true;
    expected.local_only = true;
    expected.plugins = vec![
        folder.join("plugins/extra.so"),
        PathBuf::from("/opt/receptor/plugins"),
    ];
    expected.control_services = vec![ControlServiceConfig {
        service: "ctl".to_owned(),
        filename: Some(PathBuf::from("ctl.sock")),
        permissions: 0o640,
        tls: Some("srv".to_owned()),
        tcp_listen: Some("8080".to_owned()),
        tcp_tls: Some("srv".to_owned()),
    }];
    let mut pin = (0u8..16).map(|b| b * 0x11).collect::<Vec<u8>>();
    pin.extend((0u8..16).map(|b| b * 0x11));
    expected.tls_servers = vec![TlsServerConfig {
        name: "srv".to_owned(),
        cert: PathBuf::from("/etc/receptor/srv.crt"),
        key: PathBuf::from("/etc/receptor/srv.key"),
        require_client_cert: true,
        client_cas: Some(PathBuf::from("/etc/receptor/ca.crt")),
        pinned_client_certs: vec![pin],
        skip_receptor_names_check: false,
        min_tls13: true,
    }];
    expected.tls_clients = vec![
        TlsClientConfig {
            name: "cli".to_owned(),
            cert: Some(PathBuf::from("/etc/receptor/cli.crt")),
            key: Some(PathBuf::from("/etc/receptor/cli.key")),
            root_cas: None,
            insecure_skip_verify: true,
            pinned_server_certs: Vec::new(),
            skip_receptor_names_check: false,
            min_tls13: false,
        },
        TlsClientConfig {
            name: "anon".to_owned(),
            cert: None,
            key: None,
            root_cas: None,
            insecure_skip_verify: false,
            pinned_server_certs: Vec::new(),
            skip_receptor_names_check: false,
            min_tls13: true,
        },
    ];
    expected.work_signing = Some(WorkSigningConfig {
        private_key: PathBuf::from("/etc/receptor/sign.pem"),
        token_expiration: Duration::from_secs(300),
    });
    expected.work_verification = Some(WorkVerificationConfig {
        public_key: PathBuf::from("/etc/receptor/verify.pem"),
    });
    expected.tcp_servers = vec![TcpServerConfig {
        port: 8443,
        bind_addr: "0.0.0.0".to_owned(),
        remote_node: "bar".to_owned(),
        remote_service: "web".to_owned(),
        tls_server: Some("srv".to_owned()),
        tls_client: Some("cli".to_owned()),
    }];
    expected.tcp_clients = vec![TcpClientConfig {
        service: "web".to_owned(),
        address: "127.0.0.1:80".to_owned(),
        tls_server: None,
        tls_client: None,
    }];
    expected.udp_servers = vec![UdpServerConfig {
        port: 5353,
        bind_addr: "127.0.0.1".to_owned(),
        remote_node: "bar".to_owned(),
        remote_service: "dns".to_owned(),
    }];
    expected.udp_clients = vec![UdpClientConfig {
        service: "dns".to_owned(),
        address: "127.0.0.1:53".to_owned(),
    }];
    expected.unix_socket_servers = vec![UnixSocketServerConfig {
        filename: PathBuf::from("/tmp/fwd.sock"),
        permissions: 0o660,
        remote_node: "bar".to_owned(),
        remote_service: "ctl".to_owned(),
        tls: Some("cli".to_owned()),
    }];
    expected.unix_socket_clients = vec![UnixSocketClientConfig {
        service: "sock".to_owned(),
        filename: PathBuf::from("/run/app.sock"),
        tls: Some("srv".to_owned()),
    }];
    assert_eq!(config, expected);
}

#[test]
fn go_value_conversions() {
    let cases: &[(&str, u32)] = &[
        ("0660", 0o660),
        ("\"0660\"", 0o660),
        ("0o660", 0o660),
        ("432", 0o660),
        ("432.9", 0o660),
        ("\"0x1B0\"", 0o660),
        // A decimal 660 is 0o1224; chmod keeps the permission bits only, as Go does.
        ("660", 0o224),
    ];
    for (text, mode) in cases {
        let yaml = format!(
            "- node: {{id: n}}\n- control-service: {{filename: s.sock, permissions: {text}}}\n"
        );
        let config = config::load_str(&yaml, "perm.yml").unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            config.control_services[0].permissions, *mode,
            "permissions: {text}"
        );
    }
    let (cli, _) = run(&[
        "--node",
        "id=n",
        "--control-service",
        "filename=s.sock",
        "permissions=0660",
    ]);
    assert_eq!(cli.control_services[0].permissions, 0o660);

    // Numbers in string fields become their text (Go's %d and %f).
    let config = config::load_str(
        "- node: {id: 12345}\n- control-service: {service: 1.5}\n",
        "s.yml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.node.id, "12345");
    assert_eq!(config.control_services[0].service, "1.500000");

    // yes/no/on/off booleans in YAML; Go's string spellings on the command line.
    for (yaml_value, expected) in [
        ("yes", true),
        ("off", false),
        ("\"Y\"", true),
        ("\"0\"", false),
        ("True", true),
    ] {
        let yaml = format!("- node: {{id: n}}\n- tls-client: {{name: c, cert: a, key: b, insecureskipverify: {yaml_value}}}\n");
        let config =
            config::load_str(&yaml, "b.yml").unwrap_or_else(|e| panic!("{yaml_value}: {e}"));
        assert_eq!(
            config.tls_clients[0].insecure_skip_verify, expected,
            "{yaml_value}"
        );
    }
    let (cli, _) = run(&[
        "--node",
        "id=n",
        "--tls-client",
        "name=c",
        "cert=a",
        "key=b",
        "insecureskipverify=YES",
        "mintls13=f",
    ]);
    assert!(cli.tls_clients[0].insecure_skip_verify);
    assert!(!cli.tls_clients[0].min_tls13);

    // Keys are case-insensitive; the last of two spellings wins.
    let config =
        config::load_str("- node: {ID: a, id: b}\n", "k.yml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.node.id, "b");
}

#[test]
fn defaults_follow_go() {
    let (config, _) = run(&["--log-level", "--local-only", "--control-service"]);
    // No node item: the node ID is the host name, as in Go receptor.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    assert_eq!(config.node.id, host.trim());
    assert_eq!(config.node.datadir, PathBuf::from("/tmp/receptor"));
    // A log-level item without a level means "error"; no item means "info".
    assert_eq!(config.log_level, LogLevel::Error);
    assert_eq!(run(&["--local-only"]).0.log_level, LogLevel::Info);
    assert_eq!(config.control_services, vec![control(None)]);
    assert!(config.local_only);
}

#[test]
fn version_help_and_certificate_commands() {
    let parse = |args: &[&str]| {
        config::parse_args_with(
            std::iter::once("receptor")
                .chain(args.iter().copied())
                .map(OsString::from),
            builtin_kinds,
        )
    };
    assert!(matches!(parse(&["--version"]), Ok(Invocation::Version)));
    assert_eq!(config::COMPATIBLE_VERSION, "1.6.9");
    assert_eq!(
        config::version_line(),
        format!(
            "receptor-rs {} (compatible with receptor 1.6.9)",
            env!("CARGO_PKG_VERSION")
        )
    );
    for args in [&[][..], &["--help"][..], &["--node", "id=x", "-h"][..]] {
        match parse(args) {
            Ok(Invocation::Help(text)) => {
                assert!(
                    text.starts_with("Usage: receptor [--<action> [<param>=<value> ...] ...]"),
                    "{text}"
                );
                assert!(text.contains("   --tcp-listener: "), "{text}");
                assert!(text.contains("      permissions=<int>: "), "{text}");
            }
            other => panic!("{args:?}: expected help, got {other:?}"),
        }
    }
    match parse(&["--bash-completion"]) {
        Ok(Invocation::Print(script)) => assert!(
            script.contains("complete -F _receptor receptor"),
            "{script}"
        ),
        other => panic!("expected a completion script, got {other:?}"),
    }
    match parse(&[
        "--cert-init",
        "commonname=Receptor CA",
        "bits=2048",
        "outcert=ca.crt",
        "outkey=ca.key",
    ]) {
        Ok(Invocation::CertInit(s)) => assert_eq!(
            s.value,
            json!({"commonname": "Receptor CA", "bits": 2048, "outcert": "ca.crt", "outkey": "ca.key"})
        ),
        other => panic!("expected cert-init, got {other:?}"),
    }
    match parse(&[
        "--cert-makereq",
        "bits=2048",
        "commonname=foo",
        "dnsname=localhost",
        "ipaddress=127.0.0.1",
        "nodeid=foo",
        "nodeid=foo2",
        "outreq=foo.csr",
        "outkey=foo.key",
    ]) {
        Ok(Invocation::CertMakeReq(s)) => assert_eq!(
            s.value,
            json!({"bits": 2048, "commonname": "foo", "dnsname": ["localhost"], "ipaddress": ["127.0.0.1"],
                   "nodeid": ["foo", "foo2"], "outreq": "foo.csr", "outkey": "foo.key"})
        ),
        other => panic!("expected cert-makereq, got {other:?}"),
    }
    match parse(&[
        "--cert-signreq",
        "req=foo.csr",
        "cacert=ca.crt",
        "cakey=ca.key",
        "outcert=foo.crt",
        "verify=yes",
    ]) {
        Ok(Invocation::CertSignReq(s)) => assert_eq!(
            s.value,
            json!({"req": "foo.csr", "cacert": "ca.crt", "cakey": "ca.key", "outcert": "foo.crt", "verify": true})
        ),
        other => panic!("expected cert-signreq, got {other:?}"),
    }
}

#[test]
fn node_example_is_a_working_single_node() {
    let config = load(&repo_file("examples/node.yml"));
    assert_eq!(config.node.id, "node1");
    assert_eq!(config.node.datadir, PathBuf::from("/tmp/receptor-node1"));
    assert_eq!(
        config.control_services,
        vec![control(Some("/tmp/receptor-node1.sock"))]
    );
    assert_eq!(
        config.sections,
        vec![section("tcp-listener", json!({"port": 2223}))]
    );
}

/// Path of the reference Go receptor 1.6.9 (`RECEPTOR_REFERENCE` or the cache that
/// `tools/reference-receptor` fills), if present.
fn reference_binary() -> Option<PathBuf> {
    let path = std::env::var_os("RECEPTOR_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.cache/receptor-reference/root/usr/bin/receptor"));
    path.is_file().then_some(path)
}

/// Starts the reference receptor on `args` and waits (with a deadline) until it says
/// "Initialization complete" or exits. Returns its output and whether it came up.
fn reference_outcome(binary: &Path, dir: &Path, args: &[&str]) -> (bool, String) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let out_path = dir.join("reference.log");
    let Ok(log) = std::fs::File::create(&out_path) else {
        return (false, "cannot create log".to_owned());
    };
    let Ok(log_err) = log.try_clone() else {
        return (false, "cannot clone log".to_owned());
    };
    let Ok(mut child) = Command::new(binary)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .spawn()
    else {
        return (false, "cannot start the reference binary".to_owned());
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut output = String::new();
    let up = loop {
        output.clear();
        if let Ok(mut f) = std::fs::File::open(&out_path) {
            let _ = f.read_to_string(&mut output);
        }
        if output.contains("Initialization complete") {
            break true;
        }
        if matches!(child.try_wait(), Ok(Some(_))) || std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    (up, output)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[test]
fn reference_receptor_accepts_the_example_files() {
    let Some(binary) = reference_binary() else {
        eprintln!("reference receptor not found (set RECEPTOR_REFERENCE); comparison skipped");
        return;
    };
    let examples = [
        ("examples/foo.yml", true),
        ("examples/bar.yml", true),
        ("examples/node.yml", false),
        ("core/src/config/testdata/foo_v1.yml", false),
        ("core/src/config/testdata/bar_v1.yml", false),
    ];
    for (example, map_form) in examples {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("temp dir")
        };
        let Ok(text) = std::fs::read_to_string(repo_file(example)) else {
            panic!("read {example}")
        };
        // Same file, but on a free port and with the socket and data inside the temp dir.
        let port = free_port().to_string();
        let socket = dir.path().join("ctl.sock").display().to_string();
        let text = text
            .replace("2222", &port)
            .replace("2223", &port)
            .replace("/tmp/foo.sock", &socket)
            .replace("/tmp/bar.sock", &socket)
            .replace("/tmp/receptor-node1.sock", &socket)
            .replace(
                "/tmp/receptor-node1",
                &dir.path().join("data").display().to_string(),
            );
        let file = dir.path().join("config.yml");
        if std::fs::write(&file, &text).is_err() {
            panic!("write config");
        }
        let ours = config::load_file(&file);
        assert!(ours.is_ok(), "{example}: {ours:?}");
        let file_arg = file.display().to_string();
        let mut args = vec!["--config", file_arg.as_str()];
        if map_form {
            args.insert(0, "--config-v2");
        }
        let (up, output) = reference_outcome(&binary, dir.path(), &args);
        assert!(up, "reference receptor refused {example}:\n{output}");
    }
}

#[test]
fn reference_receptor_and_we_refuse_the_same_bad_files() {
    let Some(binary) = reference_binary() else {
        eprintln!("reference receptor not found (set RECEPTOR_REFERENCE); comparison skipped");
        return;
    };
    let bad = [
        "- node: {id: foo, bogus: 1}\n- local-only\n",
        "- node: {id: foo}\n- node: {id: bar}\n- local-only\n",
        "- node: {id: \"a b\"}\n- local-only\n",
        "- node: {id: localhost}\n- local-only\n",
        "- node: {id: foo}\n- local-only\n- control-service: {permissions: true}\n",
        "- node: {id: foo}\n- local-only\n- control-service: /tmp/x.sock\n",
        "- node: {id: foo}\n- local-only\n- control-service: {service: \"\"}\n",
        "- node: {id: foo}\n- local-only\n- control-service: {tls: nosuch}\n",
        "- node: {id: foo}\n- local-only\n- tls-server: {name: a}\n",
        "- node: {id: foo, maxidleconnectiontimeout: 5s}\n- local-only\n",
        "- node: {id: foo}\n  local-only: {}\n",
        "- 5\n",
        "- node: {id: foo\n",
    ];
    for text in bad {
        let Ok(dir) = tempfile::tempdir() else {
            panic!("temp dir")
        };
        let file = dir.path().join("bad.yml");
        if std::fs::write(&file, text).is_err() {
            panic!("write config");
        }
        assert!(config::load_file(&file).is_err(), "we accepted:\n{text}");
        let file_arg = file.display().to_string();
        let (up, output) = reference_outcome(&binary, dir.path(), &["--config", file_arg.as_str()]);
        assert!(!up, "the reference accepted:\n{text}\n{output}");
    }
}

#[test]
fn log_format_from_flags_and_both_file_forms() {
    let (flags, _) = run(&["--node", "id=a", "--log-format", "json"]);
    assert_eq!(flags.log_format, LogFormat::Json);
    let (default, _) = run(&["--node", "id=a"]);
    assert_eq!(default.log_format, LogFormat::Text);
    for text in [
        "- node: {id: a}\n- log-format: json\n",
        "version: 2\nnode: {id: a}\nlog-format:\n  format: JSON\n",
    ] {
        let config = config::load_str(text, "test.yml");
        assert!(
            matches!(&config, Ok(c) if c.log_format == LogFormat::Json),
            "{text}: {config:?}"
        );
    }
    let bad = config::load_str("- node: {id: a}\n- log-format: xml\n", "test.yml");
    assert!(
        matches!(&bad, Err(e) if e.to_string().contains("xml is not a log format")),
        "{bad:?}"
    );
}

#[test]
fn man_page_and_completions_come_from_the_kinds_table() {
    let parse = |args: &[&str]| {
        config::parse_args_with(
            std::iter::once("receptor")
                .chain(args.iter().copied())
                .map(OsString::from),
            builtin_kinds,
        )
    };
    let text = |args: &[&str]| match parse(args) {
        Ok(Invocation::Help(text) | Invocation::Print(text)) => text,
        other => panic!("{args:?}: {other:?}"),
    };
    let man = text(&["--man"]);
    assert!(man.contains(".TH receptor 1"), "{man}");
    let help = text(&["--help"]);
    for kind in ["tcp-listener", "work-command", "log-format", "cert-init"] {
        assert!(help.contains(&format!("--{kind}:")), "help lacks {kind}");
        assert!(
            man.contains(&format!("\\fB\\-\\-{}\\fR", kind.replace('-', "\\-"))),
            "man page lacks {kind}"
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let script = text(&["--completion", shell]);
        assert!(
            script.contains("tcp-listener") && script.contains("log-format"),
            "{shell}: {script}"
        );
    }
    assert!(
        matches!(parse(&["--completion", "ksh"]), Err(e) if e.to_string().contains("bash, zsh or fish"))
    );
}
