//! Errors of configuration loading and of the reload check.

use std::path::PathBuf;

/// Why a configuration could not be read. Every message names where the problem is
/// (`foo.yml item 3 (line 7)`, `command line --tcp-listener`), the kind and key, and
/// what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML (the message carries the line and column).
    #[error("config file {}: invalid YAML: {message}", path.display())]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The document or an item does not have the shape of a receptor configuration.
    #[error("{origin}: {message}")]
    Format {
        /// Where (file and item).
        origin: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A key that the kind does not have.
    #[error("{origin}: {kind}: unknown key {key:?} (known keys: {known})")]
    UnknownKey {
        /// Where.
        origin: String,
        /// The kind, e.g. `control-service`.
        kind: String,
        /// The key as written.
        key: String,
        /// The keys the kind accepts, comma-separated.
        known: String,
    },
    /// Required keys are missing.
    #[error("{origin}: {kind}: missing required {}{}", if keys.len() > 1 { "keys " } else { "key " }, keys.join(", "))]
    MissingKey {
        /// Where.
        origin: String,
        /// The kind.
        kind: String,
        /// The missing keys, in declaration order.
        keys: Vec<String>,
    },
    /// A value of the wrong type or out of range.
    #[error("{origin}: {kind}: key {key:?}: {message}")]
    BadValue {
        /// Where.
        origin: String,
        /// The kind.
        kind: String,
        /// The key.
        key: String,
        /// What was expected and what was found.
        message: String,
    },
    /// An item that is well-formed but not acceptable (bad node ID, unknown TLS name...).
    #[error("{origin}: {kind}: {message}")]
    Invalid {
        /// Where.
        origin: String,
        /// The kind.
        kind: String,
        /// What is wrong.
        message: String,
    },
    /// A kind that may appear only once appears twice.
    #[error("only one {kind} is allowed, found one in {first} and another in {second}")]
    Duplicate {
        /// The kind.
        kind: String,
        /// The first occurrence.
        first: String,
        /// The second occurrence.
        second: String,
    },
    /// `--version` or a certificate command together with other options.
    #[error("{origin}: cannot specify any other options with {kind}")]
    Exclusive {
        /// The exclusive kind.
        kind: String,
        /// Where it is.
        origin: String,
    },
    /// The command line itself is malformed.
    #[error("command line: {0}")]
    CommandLine(String),
}

/// A reload that would need a restart (the messages are Go receptor's, which
/// `receptorctl reload` prints).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// A non-reloadable item is new or different.
    #[error(
        "a non-reloadable config action '{kind}' was modified or added. Must restart receptor for these changes to take effect"
    )]
    ModifiedOrAdded {
        /// The kind, e.g. `work-command`.
        kind: String,
    },
    /// A non-reloadable item is gone.
    #[error("a non-reloadable config action '{kind}' was removed. Must restart receptor for changes to take effect")]
    Removed {
        /// The kind.
        kind: String,
    },
}
