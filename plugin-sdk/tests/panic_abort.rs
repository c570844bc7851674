//! The export macro refuses to build a plugin with `panic = "abort"` (a panic in it would
//! abort the whole node): `cargo check` of the standalone example plugin with
//! `-C panic=abort` fails with the macro's message.

use std::path::Path;
use std::process::Command;

#[test]
fn a_panic_abort_plugin_does_not_build() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rust-plugin/Cargo.toml");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("panic-abort-check");
    let out = Command::new(env!("CARGO"))
        .args(["check", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .env("RUSTFLAGS", "-C panic=abort")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("run cargo check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "built with panic=abort:\n{stderr}");
    assert!(
        stderr.contains("this plugin is built with panic = \"abort\"")
            && stderr.contains("panic_abort_allowed"),
        "{stderr}"
    );
}
