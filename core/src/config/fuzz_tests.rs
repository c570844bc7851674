//! Property tests: no input, however malformed, makes the configuration reader panic.

use std::ffi::OsString;

use proptest::prelude::*;

use super::{load_str, parse_args};

const KINDS: &[&str] = &[
    "node",
    "log-level",
    "local-only",
    "trace",
    "version",
    "control-service",
    "control-services",
    "plugins",
    "tls-server",
    "tls-client",
    "tcp-listener",
    "tcp-listeners",
    "tcp-peer",
    "work-command",
    "work-signing",
    "work-verification",
    "tcp-server",
    "unix-socket-server",
    "command-service",
    "ip-router",
    "cert-init",
    "cert-makereq",
    "my-worktype",
    "",
];

const KEYS: &[&str] = &[
    "id",
    "datadir",
    "firewallrules",
    "maxidleconnectiontimeout",
    "level",
    "service",
    "filename",
    "permissions",
    "tls",
    "tcplisten",
    "name",
    "cert",
    "key",
    "pinnedclientcert",
    "port",
    "address",
    "privatekey",
    "tokenexpiration",
    "bits",
    "nodeid",
    "version",
    "command",
    "networkname",
    "localnet",
    "routes",
    "PORT",
    "",
];

const VALUES: &[&str] = &[
    "foo",
    "198.18.0.0/30",
    "2001:db8::/64,10.0.0.0/8",
    "sh -c 'x",
    "0660",
    "0o777",
    "0x1F",
    "99999999999999999999999",
    "-1",
    "1.5",
    ".inf",
    "-.nan",
    "yes",
    "off",
    "~",
    "null",
    "\"\"",
    "''",
    "[a, b]",
    "[]",
    "{}",
    "{x: 1}",
    "[{action: drop}]",
    "30m",
    "5d",
    "localhost",
    "a b",
    "é",
    "&anchor x",
    "*anchor",
    "!!binary aGVsbG8=",
    "!!int x",
    "|\n  text",
    "\"\\u0000\"",
    "2",
];

fn pick(list: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop::sample::select(list)
}

/// A document assembled from configuration-shaped fragments, in list or map form.
fn yamlish() -> impl Strategy<Value = String> {
    let entry = (pick(KEYS), pick(VALUES)).prop_map(|(k, v)| format!("{k}: {v}"));
    let item = (pick(KINDS), prop::collection::vec(entry, 0..4), 0..4u8).prop_map(
        |(kind, entries, shape)| match shape {
            0 => format!("- {kind}"),
            1 => format!("- {kind}: {{{}}}", entries.join(", ")),
            2 => format!(
                "- {kind}:\n{}",
                entries
                    .iter()
                    .map(|e| format!("    {e}\n"))
                    .collect::<String>()
            ),
            _ => format!(
                "{kind}:\n{}",
                entries
                    .iter()
                    .map(|e| format!("  - {e}\n"))
                    .collect::<String>()
            ),
        },
    );
    prop::collection::vec(item, 0..8).prop_map(|items| items.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn structured_documents_never_panic(text in yamlish()) {
        let _ = load_str(&text, "fuzz.yml");
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[-a-z0-9:{}\\[\\],'\"&*!|>#%@ \\n\\t.=_]{0,200}") {
        let _ = load_str(&text, "fuzz.yml");
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = load_str(&text, "fuzz.yml");
    }

    #[test]
    fn command_lines_never_panic(
        words in prop::collection::vec(
            prop_oneof![
                pick(KINDS).prop_map(|k| format!("--{k}")),
                pick(KINDS).prop_map(|k| format!("-{}", k.to_uppercase())),
                (pick(KEYS), pick(VALUES)).prop_map(|(k, v)| format!("{k}={v}")),
                pick(VALUES).prop_map(str::to_owned),
                "[-=a-zA-Z0-9 ]{0,6}",
            ],
            0..10,
        )
    ) {
        let mut args = vec![OsString::from("receptor")];
        args.extend(words.into_iter().map(OsString::from));
        let _ = parse_args(args);
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let deep = format!(
        "- node: {{id: foo, firewallrules: {}{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert!(load_str(&deep, "deep.yml").is_err());
    let deep_json = format!("firewallrules={}{}", "[".repeat(5000), "]".repeat(5000));
    let args = ["receptor", "--node", "id=foo", deep_json.as_str()].map(OsString::from);
    assert!(parse_args(args).is_err());
}

#[test]
fn alias_bombs_are_refused() {
    let mut text = String::from(
        "- node: {id: foo}\n- my-worktype:\n    a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for i in 1..30 {
        let prev = i - 1;
        text.push_str(&format!(
            "    a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
        ));
    }
    assert!(load_str(&text, "bomb.yml").is_err());
}
