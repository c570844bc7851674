//! The harness against real plugins: the built-in `echo` and `command` work types, the
//! examples (a C plugin compiled here with `cc`, a standalone Rust plugin built with
//! cargo), a Rust fixture that panics, and a C fixture that breaks the contract on
//! purpose (so that every check is seen failing too).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use receptor_plugin_harness::{Check, Harness, HarnessError, Reattach};
use receptor_plugin_sdk::UnitState;

fn repo_root() -> PathBuf {
    receptor_tests::binaries::repo_root()
}

/// A library of this build's workspace (built on first use, see `plugin_dir`).
fn workspace_lib(name: &str) -> PathBuf {
    let path = receptor_tests::binaries::plugin_dir()
        .expect("the workspace's plugin libraries")
        .join(format!("lib{name}.so"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Compiles a C plugin against the SDK's header into `out`.
fn compile_c(source: &Path, out: &Path) -> PathBuf {
    let stem = source.file_stem().and_then(|s| s.to_str()).expect("name");
    let lib = out.join(format!("lib{stem}.so"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let output = Command::new(cc)
        .args([
            "-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-pthread",
        ])
        .arg("-fvisibility=hidden")
        .arg("-I")
        .arg(repo_root().join("plugin-sdk/include"))
        .arg(source)
        .arg("-o")
        .arg(&lib)
        .output()
        .expect("run the C compiler");
    assert!(
        output.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    lib
}

/// Builds `examples/rust-plugin` (its own workspace) into the target folder the core's
/// tests use for it.
fn rust_example() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test binary>
    let target = exe
        .ancestors()
        .nth(3)
        .expect("test binary lives in target/<profile>/deps")
        .join("example-rust-plugin");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--manifest-path"])
        .arg(repo_root().join("examples/rust-plugin/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo build for the example plugin");
    assert!(status.success(), "building examples/rust-plugin failed");
    target.join("debug/libreceptor_wordcount.so")
}

fn failed(checks: &[Check]) -> Vec<&Check> {
    checks.iter().filter(|c| !c.passed).collect()
}

#[test]
fn echo_passes_every_check() {
    let mut h = Harness::load(workspace_lib("receptor_echo"), r#"{"WorkType": "copy"}"#)
        .expect("echo loads");
    assert_eq!(h.kind(), "echo-worktype");
    assert_eq!(h.work_type_name(), "copy");
    let unit = h.run_unit(b"one\ntwo\n").expect("a unit runs");
    assert!(unit.ok(), "{:?}", unit.problems);
    assert_eq!(unit.final_state, Some(UnitState::Succeeded));
    assert_eq!(unit.stdout, b"one\ntwo\n");
    let checks = h.check_all();
    assert_eq!(checks.len(), 6);
    assert!(failed(&checks).is_empty(), "{checks:#?}");
}

#[test]
fn command_passes_and_cancel_and_reattach_follow_its_process() {
    let lib = workspace_lib("receptor_command");
    let mut h = Harness::load(&lib, r#"{"worktype": "cat", "command": "cat"}"#).expect("loads");
    let checks = h.check_all();
    assert!(failed(&checks).is_empty(), "{checks:#?}");
    let unit = h.run_unit(b"payload").expect("runs");
    assert_eq!(unit.stdout, b"payload");

    // A long command, cancelled once running: Canceled, well within the bound.
    let mut sleeper = Harness::load(
        &lib,
        r#"{"worktype": "sleeper", "command": "sleep", "params": "60"}"#,
    )
    .expect("loads")
    .with_cancel_limit(Duration::from_secs(5));
    let unit = sleeper.cancel_unit(b"", false).expect("starts");
    assert!(unit.ok(), "{:?}", unit.problems);
    assert_eq!(unit.final_state, Some(UnitState::Canceled));
    assert!(unit.cancel_latency.unwrap_or_default() < Duration::from_secs(5));

    // A restart while a unit runs: the new work type follows its process to the end.
    let mut short = Harness::load(
        &lib,
        r#"{"worktype": "short", "command": "sh", "params": "-c 'sleep 1; echo done'"}"#,
    )
    .expect("loads");
    match short.restart_and_reattach(b"", true).expect("starts") {
        Reattach::Resumed(unit) => {
            assert!(unit.ok(), "{:?}", unit.problems);
            assert_eq!(unit.final_state, Some(UnitState::Succeeded));
            assert_eq!(unit.stdout, b"done\n");
        }
        Reattach::Refused { message, .. } => panic!("refused: {message}"),
    }
}

#[test]
fn a_plugin_with_several_work_types_or_none_is_named() {
    let err = Harness::load(workspace_lib("receptor_tcp"), "{}")
        .err()
        .expect("tcp has no work type");
    assert!(matches!(err, HarnessError::NoWorkType { .. }), "{err}");
    assert!(err.to_string().contains("tcp-listener"), "{err}");
    let err = Harness::load_kind(workspace_lib("receptor_echo"), Some("nope"), "{}")
        .err()
        .expect("no such kind");
    assert!(
        err.to_string().contains("no work-type section nope"),
        "{err}"
    );
    let err = Harness::load("/nonexistent/libx.so", "{}")
        .err()
        .expect("no file");
    assert!(matches!(err, HarnessError::Load { .. }), "{err}");
}

#[test]
fn the_example_plugins_pass() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = compile_c(
        &repo_root().join("examples/c-plugin/uppercase.c"),
        dir.path(),
    );
    let mut h = Harness::load(&c, r#"{"worktype": "shout"}"#).expect("C example loads");
    assert_eq!(h.run_unit(b"hi there").expect("runs").stdout, b"HI THERE");
    let checks = h.check_all();
    assert!(failed(&checks).is_empty(), "{checks:#?}");

    let rust = rust_example();
    let mut h = Harness::load(&rust, r#"{"worktype": "wc"}"#).expect("Rust example loads");
    let checks = h.check_all();
    assert!(failed(&checks).is_empty(), "{checks:#?}");
}

#[test]
fn contract_breaches_fail_their_checks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sloppy = compile_c(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sloppy.c"),
        dir.path(),
    );
    let mut h = Harness::load(&sloppy, "{}")
        .expect("loads")
        .with_cancel_limit(Duration::from_millis(100))
        .with_fd_limit(Duration::from_millis(300));
    let unit = h.run_unit(b"x").expect("starts");
    assert!(
        unit.problems.iter().any(|p| p.contains("2 final states")),
        "{:?}",
        unit.problems
    );
    assert!(
        unit.problems
            .iter()
            .any(|p| p.contains("descriptors still open")),
        "{:?}",
        unit.problems
    );
    let checks = h.check_all();
    let names: Vec<&str> = failed(&checks).iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "a unit reports exactly one final state, last",
            "every descriptor of the unit is closed after it ended",
            "the unit keeps the rest of the contract",
            "a cancelled unit ends within 100ms",
            "re-attach after a restart works or says it cannot",
        ],
        "{checks:#?}"
    );

    // A plugin that panics: an error naming the panic, never a crash of the harness.
    let mut faulty = Harness::load(workspace_lib("faulty_fixture"), "{}").expect("loads");
    let err = faulty.run_unit(b"").expect_err("start panics");
    assert!(
        matches!(err, HarnessError::Call { panicked: true, .. }),
        "{err}"
    );
    let checks = faulty.check_all();
    assert!(!failed(&checks).is_empty(), "{checks:#?}");
}

#[test]
fn the_command_line_prints_a_pass_fail_list() {
    let bin = env!("CARGO_BIN_EXE_receptor-plugin-harness");
    let out = Command::new(bin)
        .arg(workspace_lib("receptor_echo"))
        .args(["--section", r#"{"worktype": "echo"}"#])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("PASS  a unit reports exactly one final state"),
        "{text}"
    );
    assert!(text.ends_with("6 passed, 0 failed\n"), "{text}");

    let out = Command::new(bin)
        .arg(workspace_lib("receptor_command"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("create failed"), "{err}");

    let out = Command::new(bin)
        .arg(workspace_lib("faulty_fixture"))
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL  a unit runs: start failed (the plugin panicked)"),
        "{text}"
    );
}
