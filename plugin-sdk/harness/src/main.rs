//! `receptor-plugin-harness PATH [--section JSON] [--kind KIND]`: loads a work-type
//! plugin with no node, runs the contract checks and prints a pass/fail list. Exits 0
//! when every check passes, 1 when one fails, 2 when the plugin cannot be driven.

use std::process::ExitCode;

use receptor_plugin_harness::Harness;

const USAGE: &str =
    "usage: receptor-plugin-harness PLUGIN.so [--section JSON] [--kind KIND] [--verbose]

Loads a receptor work-type plugin through its C ABI, with no node, and checks the
contract: one final state per unit, descriptors closed, cancel honoured, re-attach
after a restart works or says it cannot, errors instead of panics.

  --section JSON   the work type's section settings (default: {})
  --kind KIND      the section kind, for a plugin that claims several work types
  --verbose        also print what the plugin logged";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut path = None;
    let mut section = "{}".to_owned();
    let mut kind = None;
    let mut verbose = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--section" | "--kind" => {
                let Some(value) = args.next() else {
                    eprintln!("{arg} needs a value\n\n{USAGE}");
                    return ExitCode::from(2);
                };
                if arg == "--section" {
                    section = value;
                } else {
                    kind = Some(value);
                }
            }
            "--verbose" | "-v" => verbose = true,
            other if other.starts_with('-') => {
                eprintln!("unknown option {other}\n\n{USAGE}");
                return ExitCode::from(2);
            }
            other if path.is_none() => path = Some(other.to_owned()),
            other => {
                eprintln!("unexpected argument {other}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(path) = path else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let mut harness = match Harness::load_kind(&path, kind.as_deref(), &section) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("FAIL  {e}");
            return ExitCode::from(2);
        }
    };
    println!("{}", harness.describe());
    let checks = harness.check_all();
    let failed = checks.iter().filter(|c| !c.passed).count();
    for c in &checks {
        println!(
            "{}  {}: {}",
            if c.passed { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    if verbose {
        for line in harness.log_lines() {
            println!("log   {line}");
        }
    }
    println!("{} passed, {failed} failed", checks.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
