//! `reload`: re-read the configuration file and apply what changed in its backends.
//!
//! The work is the daemon's: it supplies a [`ReloadFn`] that re-parses the file given
//! with `--config`, refuses changes to items that cannot be reloaded, and starts, stops
//! or replaces the backends whose sections changed (unchanged ones keep running); a
//! reload that fails leaves the node as it was. This command runs it (one reload at a time) and replies
//! `{"Success":true}` or `{"Error":"<message> ERRORCODE <n>","Success":false}`;
//! `receptorctl reload` turns the code into its exit status (3: a non-reloadable item
//! changed, 4: the configuration could not be loaded). Without a configuration file
//! there is nothing to reload, which is error code 4 as in Go receptor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::command::{Args, ControlCommand, ControlConn, Reply};

/// Error code: a non-reloadable configuration item was added, changed or removed.
pub const ERRORCODE_NOT_RELOADABLE: u8 = 3;
/// Error code: the configuration could not be loaded (or there is none).
pub const ERRORCODE_CONFIG: u8 = 4;

/// Why a reload failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadFailure {
    /// The error message (Go receptor's wording, e.g. `a non-reloadable config action
    /// 'work-command' was modified or added. Must restart receptor for these changes
    /// to take effect`).
    pub message: String,
    /// The `ERRORCODE` appended to the message.
    pub code: u8,
}

impl ReloadFailure {
    /// A failure with the given code and message.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        ReloadFailure {
            message: message.into(),
            code,
        }
    }
}

/// The future a reload callback returns.
pub type ReloadFuture = Pin<Box<dyn Future<Output = Result<(), ReloadFailure>> + Send>>;

/// The daemon's reload callback.
pub type ReloadFn = Arc<dyn Fn() -> ReloadFuture + Send + Sync>;

/// The reply to a reload with the given outcome.
pub fn reload_reply(outcome: &Result<(), ReloadFailure>) -> Value {
    match outcome {
        Ok(()) => json!({"Success": true}),
        Err(failure) => json!({
            "Error": format!("{} ERRORCODE {}", failure.message, failure.code),
            "Success": false,
        }),
    }
}

/// `reload`; parameters are ignored, as in Go receptor.
pub struct ReloadCommand {
    reload: Option<ReloadFn>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl ReloadCommand {
    /// A `reload` command running `reload`, or replying that no configuration file
    /// was provided when `None`.
    pub fn new(reload: Option<ReloadFn>) -> Self {
        ReloadCommand {
            reload,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }
    }
}

#[async_trait]
impl ControlCommand for ReloadCommand {
    fn name(&self) -> &'static str {
        "reload"
    }

    async fn run(&self, _args: Args, _conn: &mut ControlConn) -> Result<Reply, String> {
        let outcome = match &self.reload {
            None => Err(ReloadFailure::new(
                ERRORCODE_CONFIG,
                "no configuration file was provided, reload function not set",
            )),
            Some(reload) => {
                let _running = self.one_at_a_time.lock().await;
                let outcome = reload().await;
                if let Err(failure) = &outcome {
                    tracing::warn!("reload not successful: {}", failure.message);
                }
                outcome
            }
        };
        Ok(Reply::Json(reload_reply(&outcome)))
    }
}
