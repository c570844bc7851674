//! The skeletons in `plugin-sdk/templates/` are copied out of the workspace, built as a
//! plugin author would build them (cargo, make and cc) and pass the harness as they are.

use std::path::{Path, PathBuf};
use std::process::Command;

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the harness lives in plugin-sdk")
        .to_path_buf()
}

/// Copies a folder's files (not a `target` folder) into `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a folder");
    for entry in std::fs::read_dir(from).expect("read the template") {
        let entry = entry.expect("an entry");
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if path.is_dir() {
            if entry.file_name() != "target" {
                copy_tree(&path, &dest);
            }
        } else {
            std::fs::copy(&path, &dest).expect("copy a file");
        }
    }
}

/// The shared target folder of the out-of-tree plugin builds of the tests (the
/// standalone example uses it too, so the SDK is compiled once for both).
fn shared_target() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test binary>
    exe.ancestors()
        .nth(3)
        .expect("test binary lives in target/<profile>/deps")
        .join("example-rust-plugin")
}

#[test]
fn rust_template_builds_and_passes_its_harness_test() {
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("my-plugin");
    copy_tree(&sdk_dir().join("templates/rust"), &copy);
    // What an author does first: point the dependencies at their SDK.
    let manifest = copy.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("the template's manifest");
    let sdk = sdk_dir();
    let text = text
        .replace(
            "path = \"../../harness\"",
            &format!("path = {:?}", sdk.join("harness")),
        )
        .replace("path = \"../..\"", &format!("path = {:?}", sdk));
    assert!(!text.contains("\"../"), "{text}");
    std::fs::write(&manifest, text).expect("write the manifest");
    // The workspace's lock file: the same dependency versions, nothing to download.
    std::fs::copy(sdk.join("../Cargo.lock"), copy.join("Cargo.lock")).expect("copy Cargo.lock");
    let target = shared_target();
    let out = Command::new(env!("CARGO"))
        .args(["test", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("run cargo test on the template");
    assert!(
        out.status.success(),
        "cargo test in the Rust template failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 passed"), "{stdout}");

    // The command-line harness agrees on the library the test built.
    let lib = target.join("debug/deps/libreceptor_hello.so");
    let out = Command::new(env!("CARGO_BIN_EXE_receptor-plugin-harness"))
        .arg(&lib)
        .output()
        .expect("run the harness");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.ends_with("6 passed, 0 failed\n"), "{text}");
}

#[test]
fn c_template_builds_and_passes_the_harness() {
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("my-plugin");
    copy_tree(&sdk_dir().join("templates/c"), &copy);
    let out = Command::new("make")
        .current_dir(&copy)
        .arg(format!("RECEPTOR_SDK={}", sdk_dir().display()))
        .arg(format!(
            "HARNESS={}",
            env!("CARGO_BIN_EXE_receptor-plugin-harness")
        ))
        .arg("check")
        .output()
        .expect("run make");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "make check in the C template failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("PASS  re-attach after a restart works or says it cannot: refused: hello-c units cannot be resumed"), "{text}");
    assert!(text.ends_with("6 passed, 0 failed\n"), "{text}");
}
