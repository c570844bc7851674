//! `reload` may change backends and `local-only` only; anything else is refused with
//! Go receptor's messages.

use std::ffi::OsString;

use receptor_core::config::{self, reload_check, Config, Invocation, ReloadError};

const BASE: &str = "\
- node: {id: foo, datadir: /tmp/foo-data}
- log-level: debug
- tcp-listener: {port: 2222}
- tcp-peer: {address: bar:2222}
- control-service: {service: control, filename: /tmp/foo.sock, permissions: 0660}
- work-command: {worktype: cat, command: cat}
";

fn parse(text: &str) -> Config {
    config::load_str(text, "foo.yml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn check(new: &str) -> Result<(), ReloadError> {
    reload_check(&parse(BASE), &parse(new))
}

fn modified(kind: &str) -> Result<(), ReloadError> {
    Err(ReloadError::ModifiedOrAdded {
        kind: kind.to_owned(),
    })
}

fn removed(kind: &str) -> Result<(), ReloadError> {
    Err(ReloadError::Removed {
        kind: kind.to_owned(),
    })
}

#[test]
fn unchanged_and_reformatted_configs_reload() {
    assert_eq!(check(BASE), Ok(()));
    // Same meaning, different spelling: key order, quoting, octal spelling, map form.
    let respelled = "\
version: 2
control-services:
  - {permissions: \"432\", filename: /tmp/foo.sock}
node: {datadir: /tmp/foo-data, id: foo}
log-level: {level: DEBUG}
work-commands:
  - {command: cat, worktype: cat}
tcp-listeners: [{port: 2222}]
tcp-peers: [{address: bar:2222}]
";
    assert_eq!(check(respelled), Ok(()));
}

#[test]
fn backends_and_local_only_may_change() {
    let changed = "\
- node: {id: foo, datadir: /tmp/foo-data}
- log-level: debug
- tcp-listener: {port: 3333}
- udp-listener: {port: 4444}
- ws-peer: {address: ws://bar:8080/}
- local-only
- control-service: {service: control, filename: /tmp/foo.sock, permissions: 0660}
- work-command: {worktype: cat, command: cat}
";
    assert_eq!(check(changed), Ok(()));
    // Removing every backend is allowed too.
    let without = "\
- node: {id: foo, datadir: /tmp/foo-data}
- log-level: debug
- control-service: {service: control, filename: /tmp/foo.sock, permissions: 0660}
- work-command: {worktype: cat, command: cat}
";
    assert_eq!(check(without), Ok(()));
}

#[test]
fn other_changes_need_a_restart() {
    assert_eq!(
        check(&BASE.replace("command: cat}", "command: tac}")),
        modified("work-command")
    );
    assert_eq!(
        check(&format!(
            "{BASE}- work-command: {{worktype: echo, command: echo}}\n"
        )),
        modified("work-command")
    );
    assert_eq!(
        check(&BASE.replace("permissions: 0660", "permissions: 0600")),
        modified("control-service")
    );
    assert_eq!(
        check(&BASE.replace("log-level: debug", "log-level: info")),
        modified("log-level")
    );
    assert_eq!(
        check(&BASE.replace("/tmp/foo-data", "/tmp/other")),
        modified("node")
    );
    assert_eq!(
        check(&format!("{BASE}- my-worktype: {{x: 1}}\n")),
        modified("my-worktype")
    );
    assert_eq!(
        check(&format!(
            "{BASE}- tls-client: {{name: c, cert: a, key: b}}\n"
        )),
        modified("tls-client")
    );
    assert_eq!(check(&format!("{BASE}- trace\n")), modified("trace"));
    assert_eq!(
        check(&format!("{BASE}- plugins: [/opt/p]\n")),
        modified("plugins")
    );
}

#[test]
fn removals_need_a_restart() {
    assert_eq!(
        check(&BASE.replace("- work-command: {worktype: cat, command: cat}\n", "")),
        removed("work-command")
    );
    assert_eq!(
        check(&BASE.replace(
            "- control-service: {service: control, filename: /tmp/foo.sock, permissions: 0660}\n",
            ""
        )),
        removed("control-service")
    );
}

#[test]
fn messages_are_go_receptors() {
    assert_eq!(
        modified("work-command").map_err(|e| e.to_string()),
        Err(
            "a non-reloadable config action 'work-command' was modified or added. \
             Must restart receptor for these changes to take effect"
                .to_owned()
        )
    );
    assert_eq!(
        removed("work-command").map_err(|e| e.to_string()),
        Err(
            "a non-reloadable config action 'work-command' was removed. \
             Must restart receptor for changes to take effect"
                .to_owned()
        )
    );
}

#[test]
fn reparsing_the_same_command_line_is_a_clean_reload() {
    let Ok(dir) = tempfile::tempdir() else {
        panic!("temp dir")
    };
    let file = dir.path().join("foo.yml");
    if std::fs::write(
        &file,
        BASE.replace("- node: {id: foo, datadir: /tmp/foo-data}\n", ""),
    )
    .is_err()
    {
        panic!("write");
    }
    let args = || {
        [
            "receptor",
            "--node",
            "id=foo",
            "datadir=/tmp/foo-data",
            "--config",
            file.to_str().unwrap_or_default(),
        ]
        .map(OsString::from)
    };
    let parse_run = || match config::parse_args(args()) {
        Ok(Invocation::Run {
            config,
            config_file,
        }) => (config, config_file),
        other => panic!("{other:?}"),
    };
    let (old, config_file) = parse_run();
    assert_eq!(config_file.as_deref(), Some(file.as_path()));
    if std::fs::write(
        &file,
        BASE.replace("- node: {id: foo, datadir: /tmp/foo-data}\n", "")
            .replace("2222}", "2223}"),
    )
    .is_err()
    {
        panic!("write");
    }
    let (new, _) = parse_run();
    assert_eq!(reload_check(&old, &new), Ok(()));
    assert_ne!(old, new);
}
