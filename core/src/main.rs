//! The `receptor` daemon: runs a mesh node, or one of the certificate commands.
//!
//! Flags and configuration files are those of Go receptor 1.6.9
//! (`receptor --node id=foo --tcp-listener port=2222 ...`, `receptor --config foo.yml`).

use std::process::ExitCode;

use receptor_core::certs;
use receptor_core::config::{self, Invocation};

fn main() -> ExitCode {
    // A spawner of command supervisors (started by the `work-command` plugin) runs
    // before anything else is set up.
    receptor_plugin_sdk::spawner::run_if_requested();
    let argv: Vec<_> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "plugin") {
        return plugin_command(&argv[2..]);
    }
    if argv.get(1).is_some_and(|a| a == "plugin-host") {
        return receptor_core::plugin_host::run_plugin_host(&argv[2..]);
    }
    let invocation = match config::parse_args_with(argv.clone(), default_plugin_kinds) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match invocation {
        Invocation::Version => {
            println!("{}", config::version_line());
            ExitCode::SUCCESS
        }
        Invocation::Help(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Invocation::Print(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Invocation::Run {
            config,
            config_file,
        } => run_node(config, config_file, argv),
        Invocation::CertInit(section) => cert_command(certs::cert_init(&section.value)),
        Invocation::CertMakeReq(section) => cert_command(certs::cert_makereq(&section.value)),
        Invocation::CertSignReq(section) => cert_command(certs::cert_signreq(&section.value)),
    }
}

/// `receptor plugin inspect FILE...`: what each file provides, or the precise reason it
/// is not a loadable plugin (an addition to Go receptor's command line, which has no
/// positional words).
fn plugin_command(args: &[std::ffi::OsString]) -> ExitCode {
    use receptor_core::plugin_host::{LoadOptions, PluginError, PluginHost};
    let (Some(verb), files) = (args.first(), args.get(1..).unwrap_or_default()) else {
        eprintln!("Usage: receptor plugin inspect FILE...");
        return ExitCode::FAILURE;
    };
    if verb != "inspect" || files.is_empty() {
        eprintln!("Usage: receptor plugin inspect FILE...");
        return ExitCode::FAILURE;
    }
    let mut status = ExitCode::SUCCESS;
    for file in files {
        let path = std::path::PathBuf::from(file);
        let loaded = match PluginHost::load(&LoadOptions {
            paths: vec![path.clone()],
            ..LoadOptions::default()
        }) {
            // A plugin that must run isolated is described by a plugin host.
            Err(PluginError::RequiresIsolation { .. }) => PluginHost::load(&LoadOptions {
                isolated: vec![path],
                ..LoadOptions::default()
            }),
            other => other,
        };
        match loaded {
            Ok(host) => print!("{}", host.inspect_text()),
            Err(e) => {
                println!(
                    "{}: not loadable: {e}",
                    std::path::Path::new(file).display()
                );
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}

/// The section kinds of the plugins on the default search path, with their
/// descriptions, for `--help`, `--man` and the completion scripts (the plugins are
/// loaded for this only when one of those is asked for, so a node's start-up does not
/// pay for it).
fn default_plugin_kinds() -> Vec<config::PluginKind> {
    use receptor_core::plugin_host::{ClaimType, LoadOptions, PluginHost};
    let host = match PluginHost::load(&LoadOptions {
        paths: Vec::new(),
        default_search: true,
        ..LoadOptions::default()
    }) {
        Ok(host) => host,
        Err(e) => {
            eprintln!("(plugins on the default search path: {e})");
            return Vec::new();
        }
    };
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
}

fn cert_command(outcome: Result<(), certs::CertError>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_node(
    config: config::Config,
    config_file: Option<std::path::PathBuf>,
    argv: Vec<std::ffi::OsString>,
) -> ExitCode {
    receptor_core::logging::init(config.log_level, config.log_format, &config.node.id);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("receptor")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(receptor_core::daemon::run(config, config_file, argv)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
