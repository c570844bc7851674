//! Runs the built plugin through the plugin ABI with no node (receptor-plugin-harness).

use std::path::PathBuf;

use receptor_plugin_harness::Harness;

/// The shared library cargo built for this package: next to the test binary
/// (`<target>/<profile>/deps`) under `cargo test`, or in `<target>/<profile>`.
fn library() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let file = format!("lib{}.so", env!("CARGO_PKG_NAME").replace('-', "_"));
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(&file))
        .find(|lib| lib.is_file())
        .unwrap_or_else(|| panic!("{file} was not built next to {}", exe.display()))
}

#[test]
fn greets_and_keeps_the_contract() {
    let mut harness =
        Harness::load(library(), r#"{"worktype": "hi", "greeting": "hi"}"#).expect("loads");
    let unit = harness.run_unit(b"world").expect("runs");
    assert_eq!(unit.stdout, b"hi, world");
    let checks = harness.check_all();
    assert!(checks.iter().all(|c| c.passed), "{checks:#?}");
}
