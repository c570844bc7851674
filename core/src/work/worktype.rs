//! The contract between the unit store and the work types that run units.
//!
//! Work types come from plugins (the plugin host adapts the C ABI to this trait), but
//! the store only ever sees this trait. A work type gets the unit's payload and results
//! files as owned descriptors and reports progress by replacing the unit's
//! [`WorkProgress`] in a `watch` channel: the latest value wins, so reporting never
//! blocks and never queues, and the final state is never lost.

use tokio::sync::watch;

/// Unit states, with the numbers Go receptor writes in `status` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnitState {
    /// 0: created, waiting for its payload or to start.
    Pending,
    /// 1: the worker is running.
    Running,
    /// 2: finished successfully.
    Succeeded,
    /// 3: finished with an error.
    Failed,
    /// 4: cancelled by a client.
    Canceled,
}

/// What a running unit last reported.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkProgress {
    /// Current state.
    pub state: UnitState,
    /// Human-readable detail (`Running: PID 42`, `exit status 0`, ...).
    pub detail: String,
    /// Work-type specific data stored as the status file's `ExtraData` (`None` = null).
    pub extra: Option<serde_json::Value>,
}

/// What a work type gets to start one unit, and to pick up one that was running when the
/// node stopped: the plugin SDK's types, so the host and plugins share one definition.
pub use receptor_plugin_sdk::work::{ReattachRequest, StartRequest};

/// Why a work type could not start, re-attach to or cancel a unit. The texts are what
/// clients see after `Error starting worker: ` or `Failed to restart: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkTypeError {
    /// The work type refused or failed, with its own message (a plugin's error text).
    #[error("{0}")]
    Refused(String),
    /// The request could not be put in the form the work type takes.
    #[error("{0}")]
    BadRequest(String),
    /// The work type accepted the call but handed back no unit.
    #[error("the work type returned no unit")]
    NoUnit,
    /// The work type does not run units this way.
    #[error("{0}")]
    Unsupported(&'static str),
    /// The call panicked.
    #[error("work type panicked: {0}")]
    Panicked(String),
}

/// A unit that a work type is running.
pub trait WorkHandle: Send + Sync {
    /// Asks the unit to stop; it then reports `Canceled` (or a final state it reached first).
    fn cancel(&self) -> Result<(), WorkTypeError>;
}

/// A kind of work a node can run (`echo`, a `work-command`, a third-party plugin type).
pub trait WorkType: Send + Sync {
    /// The name clients use in `work submit <node> <name>`.
    fn name(&self) -> &str;

    /// Whether submissions must carry a valid signature (`verifysignature`).
    fn verify_signature(&self) -> bool;

    /// Whether clients may pass runtime `params` (`allowruntimeparams`).
    fn allow_runtime_params(&self) -> bool;

    /// Starts a unit. Progress goes to `progress` until a final state is sent.
    fn start(
        &self,
        request: StartRequest,
        progress: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError>;

    /// Re-attaches to a unit that was running when the node stopped. `Err` means the
    /// unit cannot be followed any more; the store then marks it failed with that reason.
    fn reattach(
        &self,
        request: ReattachRequest,
        progress: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError>;

    /// `ExtraData` as `work status` and `work list` show it, when it differs from what
    /// is stored (e.g. without secrets); `None` shows the stored value.
    fn shown_extra(&self, _stored: Option<&serde_json::Value>) -> Option<serde_json::Value> {
        None
    }
}
