//! The `receptor` daemon: runs a mesh node, or one of the certificate commands.
//!
//! Flags and configuration files are those of Go receptor 1.6.9
//! (`receptor --node id=foo --tcp-listener port=2222 ...`, `receptor --config foo.yml`).

use std::process::ExitCode;

use receptor_core::certs;
use receptor_core::config::{self, Invocation, LogLevel};

fn main() -> ExitCode {
    let argv: Vec<_> = std::env::args_os().collect();
    let invocation = match config::parse_args(argv.clone()) {
        Ok(inv) => inv,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match invocation {
        Invocation::Version => {
            println!("{}", config::VERSION);
            ExitCode::SUCCESS
        }
        Invocation::Help(text) => {
            print!("{text}");
            print!("{}", plugin_help());
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

/// The `--help` entries of the sections that plugins on the default search path
/// describe and the core's list does not have (plugins are loaded for this only when
/// help is asked for, so a node's start-up does not pay for it).
fn plugin_help() -> String {
    use receptor_core::plugin_host::{LoadOptions, PluginHost};
    let host = match PluginHost::load(&LoadOptions {
        paths: Vec::new(),
        default_search: true,
    }) {
        Ok(host) => host,
        Err(e) => return format!("(plugins on the default search path: {e})\n"),
    };
    let text = host.help_text(config::is_core_listed_kind);
    if text.is_empty() {
        return text;
    }
    format!("Sections of plugins on the default search path:\n\n{text}")
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
    init_logging(config.log_level);
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

fn init_logging(level: LogLevel) {
    let default = match level {
        LogLevel::Error => "error",
        LogLevel::Warning => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    };
    let filter = std::env::var("RECEPTOR_LOG").unwrap_or_else(|_| default.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
