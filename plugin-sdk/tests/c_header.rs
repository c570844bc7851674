//! The C header and the Rust ABI module describe the same layout: a C program compiled
//! against `include/receptor_plugin.h` prints every struct's size and every field's
//! offset and size, and every constant, and they must equal the Rust values.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of, size_of_val};
use std::path::Path;
use std::process::Command;

use receptor_plugin_sdk::abi;

/// (C struct, C field, Rust offset, Rust size) for every field of every ABI struct.
macro_rules! fields {
    ($( $rust:ident => $c:literal { $($field:ident),* $(,)? } )*) => {{
        let mut v: Vec<(String, String, usize, usize)> = Vec::new();
        $(
            v.push(($c.to_owned(), String::new(), 0, size_of::<abi::$rust>()));
            $(
                let zeroed = std::mem::MaybeUninit::<abi::$rust>::uninit();
                // SAFETY: only the address of the field is computed, nothing is read.
                let size = size_of_val(unsafe { &*std::ptr::addr_of!((*zeroed.as_ptr()).$field) });
                v.push(($c.to_owned(), stringify!($field).to_owned(), offset_of!(abi::$rust, $field), size));
            )*
        )*
        v
    }};
}

fn layout_table() -> Vec<(String, String, usize, usize)> {
    fields! {
        Str => "ReceptorStr" { ptr, len }
        HostApi => "ReceptorHostApi" {
            struct_size, abi_major, abi_minor, ctx, log, config_string, config_int, config_bool,
            config_duration_ms, config_list_len, config_list_item
        }
        ErrorSink => "ReceptorErrorSink" { struct_size, ctx, set }
        BackendHost => "ReceptorBackendHost" {
            struct_size, ctx, connection, release, connection_tls
        }
        BackendVtable => "ReceptorBackendVtable" { struct_size, start, session_closed, stop }
        WorkTypeInfo => "ReceptorWorkTypeInfo" { struct_size, name, flags, reserved }
        Progress => "ReceptorProgress" { struct_size, ctx, report, release }
        StartRequest => "ReceptorStartRequest" {
            struct_size, unit_id, unit_dir, stdin_fd, stdout_fd, params, extra_params_json
        }
        ReattachRequest => "ReceptorReattachRequest" { struct_size, unit_id, unit_dir, extra_json }
        WorkTypeVtable => "ReceptorWorkTypeVtable" {
            struct_size, create, start, reattach, cancel, free_unit, destroy
        }
        SectionClaim => "ReceptorSectionClaim" {
            struct_size, section_kind, claim_type, flags, claim_ctx, backend, work_type,
            help, fields, field_count, bare_field, v2_key
        }
        FieldDesc => "ReceptorFieldDesc" {
            struct_size, name, field_type, flags, default_value, help
        }
        PluginDescriptor => "ReceptorPluginDescriptor" {
            struct_size, abi_major, abi_minor, name, version, claims, claim_count
        }
    }
}

fn constants() -> Vec<(&'static str, i64)> {
    vec![
        ("RECEPTOR_PLUGIN_ABI_MAJOR", i64::from(abi::ABI_MAJOR)),
        ("RECEPTOR_PLUGIN_ABI_MINOR", i64::from(abi::ABI_MINOR)),
        (
            "RECEPTOR_BACKEND_HOST_V1_0_SIZE",
            abi::BACKEND_HOST_V1_0_SIZE as i64,
        ),
        (
            "RECEPTOR_BACKEND_HOST_V1_1_SIZE",
            abi::BACKEND_HOST_V1_1_SIZE as i64,
        ),
        (
            "RECEPTOR_HOST_API_V1_0_SIZE",
            abi::HOST_API_V1_0_SIZE as i64,
        ),
        (
            "RECEPTOR_HOST_API_V1_2_SIZE",
            abi::HOST_API_V1_2_SIZE as i64,
        ),
        (
            "RECEPTOR_SECTION_CLAIM_V1_0_SIZE",
            abi::SECTION_CLAIM_V1_0_SIZE as i64,
        ),
        (
            "RECEPTOR_SECTION_CLAIM_V1_2_SIZE",
            abi::SECTION_CLAIM_V1_2_SIZE as i64,
        ),
        ("RECEPTOR_STATUS_ABSENT", i64::from(abi::STATUS_ABSENT)),
        (
            "RECEPTOR_CLAIM_FLAG_OWN_TLS",
            i64::from(abi::CLAIM_FLAG_OWN_TLS),
        ),
        ("RECEPTOR_FIELD_STRING", i64::from(abi::FIELD_STRING)),
        ("RECEPTOR_FIELD_INT", i64::from(abi::FIELD_INT)),
        ("RECEPTOR_FIELD_BOOL", i64::from(abi::FIELD_BOOL)),
        ("RECEPTOR_FIELD_DURATION", i64::from(abi::FIELD_DURATION)),
        ("RECEPTOR_FIELD_LIST", i64::from(abi::FIELD_LIST)),
        ("RECEPTOR_FIELD_FLOAT", i64::from(abi::FIELD_FLOAT)),
        ("RECEPTOR_FIELD_ANY", i64::from(abi::FIELD_ANY)),
        ("RECEPTOR_FIELD_REQUIRED", i64::from(abi::FIELD_REQUIRED)),
        ("RECEPTOR_STATUS_OK", i64::from(abi::STATUS_OK)),
        ("RECEPTOR_STATUS_ERROR", i64::from(abi::STATUS_ERROR)),
        ("RECEPTOR_STATUS_PANIC", i64::from(abi::STATUS_PANIC)),
        ("RECEPTOR_FRAMING_LEN16LE", i64::from(abi::FRAMING_LEN16LE)),
        (
            "RECEPTOR_FRAMING_DATAGRAM",
            i64::from(abi::FRAMING_DATAGRAM),
        ),
        ("RECEPTOR_CLAIM_BACKEND", i64::from(abi::CLAIM_BACKEND)),
        ("RECEPTOR_CLAIM_WORK_TYPE", i64::from(abi::CLAIM_WORK_TYPE)),
        (
            "RECEPTOR_WORK_TYPE_VERIFY_SIGNATURE",
            i64::from(abi::WORK_TYPE_VERIFY_SIGNATURE),
        ),
        (
            "RECEPTOR_WORK_TYPE_ALLOW_RUNTIME_PARAMS",
            i64::from(abi::WORK_TYPE_ALLOW_RUNTIME_PARAMS),
        ),
        ("RECEPTOR_STATE_PENDING", i64::from(abi::STATE_PENDING)),
        ("RECEPTOR_STATE_RUNNING", i64::from(abi::STATE_RUNNING)),
        ("RECEPTOR_STATE_SUCCEEDED", i64::from(abi::STATE_SUCCEEDED)),
        ("RECEPTOR_STATE_FAILED", i64::from(abi::STATE_FAILED)),
        ("RECEPTOR_STATE_CANCELED", i64::from(abi::STATE_CANCELED)),
        ("RECEPTOR_LOG_ERROR", i64::from(abi::LOG_ERROR)),
        ("RECEPTOR_LOG_WARN", i64::from(abi::LOG_WARN)),
        ("RECEPTOR_LOG_INFO", i64::from(abi::LOG_INFO)),
        ("RECEPTOR_LOG_DEBUG", i64::from(abi::LOG_DEBUG)),
        ("RECEPTOR_LOG_TRACE", i64::from(abi::LOG_TRACE)),
    ]
}

fn c_program(table: &[(String, String, usize, usize)]) -> String {
    let mut src = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"receptor_plugin.h\"\nint main(void) {\n",
    );
    for (s, f, _, _) in table {
        if f.is_empty() {
            src += &format!("  printf(\"{s} . 0 %zu\\n\", sizeof({s}));\n");
        } else {
            src += &format!(
                "  printf(\"{s} {f} %zu %zu\\n\", offsetof({s}, {f}), sizeof((({s} *)0)->{f}));\n"
            );
        }
    }
    for (name, _) in constants() {
        src += &format!("  printf(\"const {name} %lld\\n\", (long long)({name}));\n");
    }
    src += "  ReceptorStr s = RECEPTOR_STR(\"abc\");\n  printf(\"const str_len %zu\\n\", s.len);\n";
    src += "  printf(\"const entry_symbol %s\\n\", RECEPTOR_PLUGIN_ENTRY_V1);\n  return 0;\n}\n";
    src
}

#[test]
fn c_header_layout_matches_rust_abi() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    header_layout_matches(&cc, "layout.c", &["-std=c11"]);
}

/// The header is valid C++17 too, with the same layout (and its export macro and
/// `RECEPTOR_STR` work there).
#[test]
fn cxx_header_layout_matches_rust_abi() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_owned());
    header_layout_matches(&cxx, "layout.cpp", &["-std=c++17", "-Wno-invalid-offsetof"]);
}

#[allow(clippy::unwrap_used)] // test code: a failed step fails the test
fn header_layout_matches(compiler: &str, file: &str, std_args: &[&str]) {
    let cc = compiler;
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let dir = tempfile::tempdir().unwrap();
    let table = layout_table();
    let src = dir.path().join(file);
    std::fs::write(&src, c_program(&table)).unwrap();
    let exe = dir.path().join("layout");
    let out = Command::new(cc)
        .args(std_args)
        .args(["-Wall", "-Wextra", "-Werror", "-I"])
        .arg(&include)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e}"));
    assert!(
        out.status.success(),
        "cc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();

    let mut c_layout = BTreeMap::new();
    let mut c_consts = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["const", name, value] => {
                c_consts.insert(name.to_string(), value.to_string());
            }
            [s, f, off, size] => {
                let f = if *f == "." {
                    String::new()
                } else {
                    f.to_string()
                };
                c_layout.insert(
                    (s.to_string(), f),
                    (
                        off.parse::<usize>().unwrap(),
                        size.parse::<usize>().unwrap(),
                    ),
                );
            }
            _ => panic!("unexpected line {line:?}"),
        }
    }
    for (s, f, off, size) in &table {
        let c = c_layout[&(s.clone(), f.clone())];
        assert_eq!(
            c,
            (*off, *size),
            "{s}.{f}: C (offset, size) {c:?}, Rust ({off}, {size})"
        );
    }
    for (name, value) in constants() {
        assert_eq!(c_consts[name], value.to_string(), "constant {name}");
    }
    assert_eq!(c_consts["entry_symbol"], abi::ENTRY_SYMBOL_V1);
    assert_eq!(c_consts["str_len"], "3");
}
