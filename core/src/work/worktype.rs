//! The contract between the unit store and the work types that run units.
//!
//! Work types come from plugins (the plugin host adapts the C ABI to this trait), but
//! the store only ever sees this trait. A work type gets the unit's payload and results
//! files as owned descriptors and reports progress by replacing the unit's
//! [`WorkProgress`] in a `watch` channel: the latest value wins, so reporting never
//! blocks and never queues, and the final state is never lost.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;

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

/// Everything a work type needs to start one unit.
#[derive(Debug)]
pub struct StartRequest {
    /// The unit ID.
    pub unit_id: String,
    /// The unit's folder (`<datadir>/<node>/<unit>`).
    pub unit_dir: PathBuf,
    /// The payload, opened for reading from the start.
    pub stdin: File,
    /// The results file, opened for appending; whatever is written here is the unit's output.
    pub stdout: File,
    /// Runtime command-line parameters (`params`), empty if none.
    pub params: String,
    /// Every other submit parameter (key → value), as the client sent them.
    pub extra_params: BTreeMap<String, String>,
}

/// Everything a work type needs to pick up a unit that was running when the node stopped.
#[derive(Debug, Clone)]
pub struct ReattachRequest {
    /// The unit ID.
    pub unit_id: String,
    /// The unit's folder.
    pub unit_dir: PathBuf,
    /// The unit's `ExtraData` as last saved.
    pub extra: Option<serde_json::Value>,
}

/// A unit that a work type is running.
pub trait WorkHandle: Send + Sync {
    /// Asks the unit to stop; it then reports `Canceled` (or a final state it reached first).
    fn cancel(&self) -> Result<(), String>;
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
    ) -> Result<Box<dyn WorkHandle>, String>;

    /// Re-attaches to a unit that was running when the node stopped. `Err` means the
    /// unit cannot be followed any more; the store then marks it failed with that reason.
    fn reattach(
        &self,
        request: ReattachRequest,
        progress: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, String>;

    /// `ExtraData` as `work status` and `work list` show it, when it differs from what
    /// is stored (e.g. without secrets); `None` shows the stored value.
    fn shown_extra(&self, _stored: Option<&serde_json::Value>) -> Option<serde_json::Value> {
        None
    }
}
