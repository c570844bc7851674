//! Bad configurations give one clear message: where (file, item, line), which kind and
//! key, and what was expected.

use std::ffi::OsString;
use std::path::PathBuf;

use receptor_core::config::{self, ConfigError, Invocation};

fn file_error(text: &str) -> String {
    match config::load_str(text, "bad.yml") {
        Ok(config) => panic!("accepted:\n{text}\n{config:?}"),
        Err(e) => e.to_string(),
    }
}

fn args_error(args: &[&str]) -> String {
    let argv = std::iter::once("receptor")
        .chain(args.iter().copied())
        .map(OsString::from);
    match config::parse_args(argv) {
        Ok(Invocation::Run { config, .. }) => panic!("accepted {args:?}: {config:?}"),
        Ok(other) => panic!("accepted {args:?}: {other:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_key_in_a_core_section() {
    assert_eq!(
        file_error("- node: {id: foo}\n- control-service:\n    servce: control\n"),
        "bad.yml item 2 (line 2): control-service: unknown key \"servce\" \
         (known keys: service, filename, permissions, tls, tcplisten, tcptls)"
    );
    assert_eq!(
        args_error(&["--node", "id=foo", "--log-level", "lvl=debug"]),
        "command line --log-level: log-level: unknown key \"lvl\" (known keys: level)"
    );
    assert_eq!(
        args_error(&["--node", "id=foo", "--trace", "x"]),
        "command line --trace: trace does not take a bare value; write key=value (keys: none)"
    );
}

#[test]
fn wrong_types() {
    assert_eq!(
        file_error("- control-service: {filename: a.sock, permissions: rw}\n"),
        "bad.yml item 1 (line 1): control-service: key \"permissions\": expected an integer, got \"rw\" (invalid syntax)"
    );
    assert_eq!(
        file_error("- control-service: {permissions: [1]}\n"),
        "bad.yml item 1 (line 1): control-service: key \"permissions\": expected an integer, got a list"
    );
    assert_eq!(
        file_error("- node: {id: [a]}\n"),
        "bad.yml item 1 (line 1): node: key \"id\": expected a string, got a list"
    );
    assert_eq!(
        file_error("- node: {id: foo}\n- tls-client: {name: c, cert: a, key: b, insecureskipverify: maybe}\n"),
        "bad.yml item 2 (line 2): tls-client: key \"insecureskipverify\": \
         expected a boolean (true/false, yes/no, 1/0), got \"maybe\""
    );
    assert_eq!(
        file_error("- node: {id: foo, firewallrules: {action: drop}}\n"),
        "bad.yml item 1 (line 1): node: key \"firewallrules\": expected a list of maps, got a map"
    );
    assert_eq!(
        args_error(&["--node", "id=foo", "firewallrules=[1]"]),
        "command line --node: node: key \"firewallrules\": expected a list of maps, but item 1 is a number"
    );
    assert_eq!(
        args_error(&["--tcp-server", "port=99999", "remotenode=a", "remoteservice=b"]),
        "command line --tcp-server: tcp-server: key \"port\": expected a port number (0-65535), got 99999"
    );
    assert_eq!(
        file_error("- log-level: [debug]\n"),
        "bad.yml item 1 (line 1): log-level: expected a map of settings (or a single string), got a list"
    );
}

#[test]
fn missing_required_keys() {
    assert_eq!(
        file_error("- tls-server: {name: a}\n"),
        "bad.yml item 1 (line 1): tls-server: missing required keys cert, key"
    );
    assert_eq!(
        args_error(&["--tcp-server", "port=1", "remotenode=x"]),
        "command line --tcp-server: tcp-server: missing required key remoteservice"
    );
}

#[test]
fn invalid_values() {
    assert_eq!(
        file_error("- node: {id: nodé}\n"),
        "bad.yml item 1 (line 1): node: node id can only contain a-z, A-Z, 0-9 or special characters . - _ @ : but received: nodé"
    );
    assert_eq!(
        file_error("- node: LocalHost\n"),
        "bad.yml item 1 (line 1): node: node ID \"localhost\" is reserved"
    );
    assert_eq!(
        file_error("- node: {id: a, maxidleconnectiontimeout: 20.9s}\n"),
        "bad.yml item 1 (line 1): node: key \"maxidleconnectiontimeout\": \
         20.9s is less than the default (and minimum) timeout 21s"
    );
    assert_eq!(
        file_error("- log-level: loud\n"),
        "bad.yml item 1 (line 1): log-level: key \"level\": loud is not a valid log level name \
         (expected Error, Warning, Info or Debug)"
    );
    assert_eq!(
        file_error("- control-service: {service: \"\"}\n"),
        "bad.yml item 1 (line 1): control-service: no listeners specified (set service, filename or tcplisten)"
    );
    assert_eq!(
        file_error("- control-service: {service: toolongname}\n"),
        "bad.yml item 1 (line 1): control-service: key \"service\": service name \"toolongname\" is too long (at most 8 bytes)"
    );
    assert_eq!(
        file_error("- node: {id: a}\n- control-service: {tcplisten: \"1\", tcptls: missing}\n"),
        "bad.yml item 2 (line 2): control-service: key \"tcptls\": unknown TLS config missing (no tls-server with that name)"
    );
    assert_eq!(
        file_error("- tls-client: {name: c, cert: a.crt, key: \"\"}\n"),
        "bad.yml item 1 (line 1): tls-client: cert and key must both be supplied or neither"
    );
    assert_eq!(
        file_error("- tls-server: {name: s, cert: a, key: b, pinnedclientcert: [abcd]}\n"),
        "bad.yml item 1 (line 1): tls-server: key \"pinnedclientcert\": fingerprint \"abcd\" has 2 bytes; \
         fingerprints must be 32 or 64 bytes for sha256 or sha512"
    );
    assert_eq!(
        file_error("- work-signing: {privatekey: k.pem, tokenexpiration: soon}\n"),
        "bad.yml item 1 (line 1): work-signing: key \"tokenexpiration\": failed to parse TokenExpiration \"soon\" \
         -- valid examples include '1.5h', '30m', '30m10s'"
    );
    assert_eq!(
        file_error(
            "- tls-server: {name: s, cert: a, key: b}\n- tls-server: {name: s, cert: c, key: d}\n"
        ),
        "only one tls-server named \"s\" is allowed, found one in bad.yml item 1 (line 1) \
         and another in bad.yml item 2 (line 2)"
    );
}

#[test]
fn structure_errors() {
    assert_eq!(
        file_error("- node: {id: foo}\n  tcp-listener: {port: 1}\n"),
        "bad.yml item 1 (line 1): an item must have exactly one name (`- kind: {settings}`), found 2: node, tcp-listener"
    );
    assert_eq!(
        file_error("- 5\n"),
        "bad.yml item 1 (line 1): expected an item such as `- node: {id: foo}`, got an integer"
    );
    assert_eq!(
        file_error("- {1: foo}\n"),
        "bad.yml item 1 (line 1): the item name must be a string, found an integer 1"
    );
    assert_eq!(
        file_error("\n\n- node: {true: foo}\n"),
        "bad.yml item 1 (line 3): node: setting names must be strings, found a boolean true"
    );
    assert_eq!(
        file_error("just text\n"),
        "bad.yml: expected a list of items (`- node: {id: foo}`) or a map with `version: 2`, got a string"
    );
    assert_eq!(
        file_error("version: 1\nnode: {id: a}\n"),
        "bad.yml key version (line 1): the map form of the configuration is `version: 2`; write version 1 as a list of items"
    );
    assert_eq!(
        file_error("- node: {id: a}\n- node: {id: b}\n"),
        "only one node is allowed, found one in bad.yml item 1 (line 1) and another in bad.yml item 2 (line 2)"
    );
    assert_eq!(
        file_error("- version\n- node: {id: a}\n"),
        "bad.yml item 1 (line 1): version is a command, not a configuration item"
    );
}

#[test]
fn bad_yaml_reports_line_and_column() {
    let message = file_error("- node: {id: foo}\n- control-service: {filename: a\n");
    assert!(
        message.starts_with("config file bad.yml: invalid YAML: "),
        "{message}"
    );
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("column"), "{message}");
    let message = file_error("- node:\n    id: foo\n   bad: indent\n");
    assert!(message.contains("line 3"), "{message}");
}

#[test]
fn unreadable_files() {
    let Ok(dir) = tempfile::tempdir() else {
        panic!("temp dir")
    };
    let missing = dir.path().join("missing.yml");
    let message = args_error(&["--config", missing.to_str().unwrap_or_default()]);
    assert_eq!(
        message,
        format!(
            "cannot read config file {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    let message = args_error(&["--config", dir.path().to_str().unwrap_or_default()]);
    assert!(message.contains("Is a directory"), "{message}");
    let binary = dir.path().join("binary.yml");
    if std::fs::write(&binary, b"- node: {id: \xff}\n").is_err() {
        panic!("write");
    }
    assert!(matches!(
        config::load_file(&binary),
        Err(ConfigError::Read { .. })
    ));
    let message = config::load_file(&binary)
        .map(|_| ())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(message.contains("not UTF-8"), "{message}");
    assert!(matches!(
        config::load_file(PathBuf::from("/nonexistent/x.yml")),
        Err(ConfigError::Read { .. })
    ));
}

#[test]
fn command_line_errors() {
    assert_eq!(
        args_error(&["id=foo", "--node"]),
        "command line: parameter \"id=foo\" specified before command (expected --<kind> first)"
    );
    assert_eq!(
        args_error(&["--node", "id=foo", ""]),
        "command line: argument 3 is empty"
    );
    assert_eq!(
        args_error(&["--node", "id=foo", "--"]),
        "command line: unknown option \"--\""
    );
    assert_eq!(
        args_error(&["--node=foo"]),
        "command line: unknown option \"--node=foo\""
    );
    assert_eq!(
        args_error(&["--node", "id=a", "--node", "id=b"]),
        "only one node is allowed, found one in command line --node and another in command line --node (occurrence 2)"
    );
    assert_eq!(
        args_error(&["--node", "id=a", "--version"]),
        "command line --version: cannot specify any other options with version"
    );
    assert_eq!(
        args_error(&[
            "--cert-init",
            "commonname=x",
            "bits=1",
            "outcert=a",
            "outkey=b",
            "--node",
            "id=a"
        ]),
        "command line --cert-init: cannot specify any other options with cert-init"
    );
    let argv = vec![
        OsString::from("receptor"),
        OsString::from("--node"),
        non_utf8(),
    ];
    assert_eq!(
        config::parse_args(argv)
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default(),
        "command line: argument 2 is not valid UTF-8"
    );
}

fn non_utf8() -> OsString {
    use std::os::unix::ffi::OsStringExt;
    OsString::from_vec(vec![b'i', b'd', b'=', 0xff])
}

#[test]
fn command_service_commands_must_split_into_a_program() {
    assert_eq!(
        file_error("- command-service: {service: sh, command: \"sh -c 'echo\"}\n"),
        "bad.yml item 1 (line 1): command-service: key \"command\": EOF found when expecting closing quote"
    );
    assert_eq!(
        file_error("- command-service: {service: sh, command: \"# only a comment\"}\n"),
        "bad.yml item 1 (line 1): command-service: key \"command\": no program to run"
    );
    assert_eq!(
        file_error("- command-service: {service: toolongname, command: sh}\n"),
        "bad.yml item 1 (line 1): command-service: key \"service\": service name \"toolongname\" is too long (at most 8 bytes)"
    );
    let config = config::load_str(
        "- command-service: {service: sh, command: \"sh -c 'echo \\\"hi there\\\"'\"}\n",
        "ok.yml",
    )
    .expect("a valid command-service");
    assert_eq!(
        config.command_services[0].argv,
        ["sh", "-c", "echo \"hi there\""]
    );
}

#[test]
fn ip_router_networks_are_checked_as_go_checks_them() {
    let ip_router = |localnet: &str, routes: &str| {
        file_error(&format!(
            "- ip-router: {{networkname: n, localnet: \"{localnet}\", routes: \"{routes}\"}}\n"
        ))
    };
    let at = "bad.yml item 1 (line 1): ip-router:";
    assert_eq!(
        ip_router("198.18.0.0/29", ""),
        format!("{at} key \"localnet\": local network 198.18.0.0/29 must be a /30 CIDR")
    );
    assert_eq!(
        ip_router("2001:db8::/30", ""),
        format!("{at} key \"localnet\": local network 2001:db8::/30 must be IPv4")
    );
    assert_eq!(
        ip_router("198.18.0.300/30", ""),
        format!("{at} key \"localnet\": could not parse 198.18.0.300/30 as a CIDR address")
    );
    assert_eq!(
        ip_router("198.18.0.0/30", "198.18.1.0/24,nonsense"),
        format!("{at} key \"routes\": could not parse nonsense as a CIDR address")
    );
    let config = config::load_str(
        "- ip-router: {networkname: n, localnet: 198.18.0.1/30, routes: \"198.18.1.7/24,2001:db8:1::5/64\"}\n",
        "ok.yml",
    )
    .expect("a valid ip-router");
    let r = &config.ip_routers[0];
    assert_eq!(r.local_net.to_string(), "198.18.0.0/30");
    let routes: Vec<String> = r.routes.iter().map(ToString::to_string).collect();
    assert_eq!(routes, ["198.18.1.0/24", "2001:db8:1::/64"]);
    assert!(r.routes[1].contains("2001:db8:1::ffff".parse().expect("an address")));
    assert!(!r.routes[0].contains("198.18.2.1".parse().expect("an address")));
}
