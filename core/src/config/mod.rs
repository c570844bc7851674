//! Configuration: the YAML list form, the `version: 2` map form and command-line flags.
//!
//! Receptor is configured with *items*, each of one *kind*: `node`, `log-level`,
//! `control-service`, `tcp-listener`, `work-command`, ... Go receptor 1.6.9 reads them
//! from three places, and so does this module:
//!
//! * a YAML list, `--config foo.yml` (or `-c`):
//!   ```yaml
//!   - node: {id: foo}
//!   - log-level: debug
//!   - tcp-listener: {port: 2222}
//!   - control-service: {service: control, filename: /tmp/foo.sock}
//!   ```
//! * the `version: 2` map form of the documentation, where plural keys hold lists
//!   (`tcp-listeners:` → `tcp-listener` items). Go needs `--config-v2` for it; here
//!   `--config` recognises either form by itself (`--config-v2` is accepted too);
//! * the command line, one flag per item with `key=value` words:
//!   `receptor --node id=foo --tcp-listener port=2222 --control-service filename=/tmp/foo.sock`.
//!
//! Values follow Go's conversions (`permissions: 0660` is octal, `"2222"` works for an
//! integer, `yes`/`no` are booleans, a number in a string field becomes its text).
//!
//! The core owns and validates the kinds it implements (node, log level, control
//! services, TLS configurations, work signing, service proxies, certificate commands,
//! and the receptor-rs extensions `plugins:`, listing plugin files or folders,
//! `control-limits:`, bounding control clients, and `mesh-limits:`, bounding what mesh
//! peers can make the node hold). Everything
//! else (backends, work types, built-in or third-party) is kept as a [`Section`]: a JSON
//! object the plugin host gives to the plugin that claims the kind, which reports
//! unknown kinds with the list of what is available. The core does not know the fields
//! of those kinds: each plugin describes its sections, and once the plugins are loaded
//! [`describe_sections`] applies those descriptions (bare values, Go's list and
//! repeated-key rules); `--help`, `--man` and the completions list them from the
//! [`PluginKind`]s given to [`parse_args_with`].
//!
//! YAML is read with serde-saphyr (serde_yaml is archived; serde-saphyr is pure Rust and
//! accepts the YAML 1.1 spellings Go's yaml.v2 accepts), only inside this module.

mod build;
mod cli;
pub(crate) mod coerce;
mod described;
mod error;
mod item;
mod model;
mod reload;
mod schema;
mod value;
mod yaml;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub use described::{describe_sections, PluginKind};
pub use error::{ConfigError, ReloadError};
pub use model::{
    Cidr, CommandServiceConfig, Config, ControlServiceConfig, IpRouterConfig, LogFormat, LogLevel,
    MeshLimitsConfig, MeshPageConfig, MetricsConfig, NodeConfig, Section, TcpClientConfig,
    TcpServerConfig, TlsClientConfig, TlsServerConfig, UdpClientConfig, UdpServerConfig,
    UnixSocketClientConfig, UnixSocketServerConfig, WorkSigningConfig, WorkVerificationConfig,
};
pub use reload::reload_check;

/// The kinds whose items `reload` restarts (everything else needs a process restart).
pub const RELOADABLE_KINDS: [&str; 7] = schema::RELOADABLE;

/// This project's version (the workspace's package version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The Go receptor release this project is a drop-in replacement for (wire, control
/// protocol, configuration, work-unit files). `status` reports it as `Version`.
pub const COMPATIBLE_VERSION: &str = "1.6.9";

/// What `receptor --version` prints: this project's version and the Go receptor release
/// it is compatible with, e.g. `receptor-rs 0.1.0 (compatible with receptor 1.6.9)`.
pub fn version_line() -> String {
    format!("receptor-rs {VERSION} (compatible with receptor {COMPATIBLE_VERSION})")
}

/// What the command line asks the `receptor` binary to do.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // made once per process; `Run` is the common case
pub enum Invocation {
    /// Run a node.
    Run {
        /// The configuration (command-line items and files, in order).
        config: Config,
        /// The first `--config` file, which `reload` re-reads.
        config_file: Option<PathBuf>,
    },
    /// `--version`: print [`version_line`].
    Version,
    /// Print this usage text and exit successfully (`--help`, no arguments); it lists
    /// the plugin kinds given to [`parse_args_with`].
    Help(String),
    /// Print this generated text verbatim and exit successfully (`--bash-completion`,
    /// `--completion SHELL`, `--man`): a script or page that nothing may be appended to.
    Print(String),
    /// `--cert-init`: create a CA (keys `commonname`, `bits`, `notbefore`, `notafter`,
    /// `outcert`, `outkey`; typed, defaults applied).
    CertInit(Section),
    /// `--cert-makereq`: create a certificate request (`commonname`, `bits`, `dnsname`,
    /// `ipaddress`, `nodeid` (lists), `outreq`, `inkey`, `outkey`).
    CertMakeReq(Section),
    /// `--cert-signreq`: sign a request (`req`, `cacert`, `cakey`, `notbefore`,
    /// `notafter`, `outcert`, `verify`).
    CertSignReq(Section),
}

/// Whether the core's own table lists `kind` (the core's sections, and Go receptor's
/// kinds that no plugin of this build provides).
pub fn is_core_listed_kind(kind: &str) -> bool {
    schema::kind(kind).is_some()
}

/// Parses a command line. The first item is the program name (as in `std::env::args_os`).
///
/// For `reload`, Go receptor re-parses the whole original command line (flags and
/// files); calling this again with the same arguments and comparing with
/// [`reload_check`] does the same.
pub fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Invocation, ConfigError> {
    cli::parse(args, Vec::new)
}

/// As [`parse_args`]; `plugin_kinds` is called (once) only when the command line asks
/// for `--help`, `--man` or a completion script, whose text then lists those kinds
/// with the core's (backends and work types in their groups).
pub fn parse_args_with<I, F>(args: I, plugin_kinds: F) -> Result<Invocation, ConfigError>
where
    I: IntoIterator<Item = OsString>,
    F: FnOnce() -> Vec<PluginKind>,
{
    cli::parse(args, plugin_kinds)
}

/// Reads one configuration file (either form) into a [`Config`], as `--config path`
/// alone would. A file holding only `--version`-like exclusive commands is refused.
pub fn load_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
    config_from_items(yaml::load_items(path.as_ref())?)
}

/// Parses configuration text (either form); `name` stands for the file in messages.
/// Relative `plugins:` paths stay relative to the working directory.
pub fn load_str(text: &str, name: &str) -> Result<Config, ConfigError> {
    let items = yaml::parse_items(text, name).map_err(|e| match e {
        yaml::ParseFailure::Yaml(message) => ConfigError::Yaml {
            path: PathBuf::from(name),
            message,
        },
        yaml::ParseFailure::Config(e) => e,
    })?;
    config_from_items(items)
}

fn config_from_items(items: Vec<item::RawItem>) -> Result<Config, ConfigError> {
    if let Some(item) = items
        .iter()
        .find(|i| schema::kind(&i.kind).is_some_and(|k| k.exclusive))
    {
        return Err(ConfigError::Format {
            origin: item.origin.clone(),
            message: format!("{} is a command, not a configuration item", item.kind),
        });
    }
    build::build_config(&items)
}

#[cfg(test)]
mod fuzz_tests;

/// The `--help` text for a program called `program`, listing the core's kinds and
/// `plugin_kinds`.
pub fn help_text(program: &str, plugin_kinds: &[PluginKind]) -> String {
    cli::help_text(program, plugin_kinds)
}
