//! Work types: plugins that run units of work.
//!
//! A unit gets its payload (`stdin`) and results (`stdout`) as open files, reports its
//! state through a [`Progress`] handle that any thread may use, and can be cancelled.
//! After a node restart the host asks the work type to [`WorkType::reattach`] to units
//! that were running; a work type that cannot follow them says so and the host marks
//! them failed.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use crate::{abi, config::Section, PluginError};

/// Unit states (the numbers in receptor's `status` files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitState {
    /// Created, not started.
    Pending,
    /// Running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Cancelled.
    Canceled,
}

impl UnitState {
    /// The ABI code (`STATE_*`).
    pub fn to_abi(self) -> u32 {
        match self {
            UnitState::Pending => abi::STATE_PENDING,
            UnitState::Running => abi::STATE_RUNNING,
            UnitState::Succeeded => abi::STATE_SUCCEEDED,
            UnitState::Failed => abi::STATE_FAILED,
            UnitState::Canceled => abi::STATE_CANCELED,
        }
    }

    /// Decodes an ABI code.
    pub fn from_abi(code: u32) -> Option<UnitState> {
        match code {
            abi::STATE_PENDING => Some(UnitState::Pending),
            abi::STATE_RUNNING => Some(UnitState::Running),
            abi::STATE_SUCCEEDED => Some(UnitState::Succeeded),
            abi::STATE_FAILED => Some(UnitState::Failed),
            abi::STATE_CANCELED => Some(UnitState::Canceled),
            _ => None,
        }
    }
}

/// Properties of a configured work type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkTypeInfo {
    /// The name clients use in `work submit <node> <name>`.
    pub name: String,
    /// Whether submissions must carry a valid signature (`verifysignature`).
    pub verify_signature: bool,
    /// Whether clients may pass runtime `params` (`allowruntimeparams`).
    pub allow_runtime_params: bool,
}

impl WorkTypeInfo {
    /// Reads the usual keys of a work-type section: `worktype` (required unless
    /// `default_name` is given), `verifysignature` and `allowruntimeparams` (default false).
    pub fn from_section(
        section: &Section,
        default_name: Option<&str>,
    ) -> Result<WorkTypeInfo, PluginError> {
        let name = match (section.string("worktype")?, default_name) {
            (Some(n), _) if !n.is_empty() => n,
            (_, Some(d)) => d.to_owned(),
            _ => section.required_string("worktype")?,
        };
        Ok(WorkTypeInfo {
            name,
            verify_signature: section.bool("verifysignature")?.unwrap_or(false),
            allow_runtime_params: section.bool("allowruntimeparams")?.unwrap_or(false),
        })
    }

    pub(crate) fn flags(&self) -> u32 {
        let mut flags = 0;
        if self.verify_signature {
            flags |= abi::WORK_TYPE_VERIFY_SIGNATURE;
        }
        if self.allow_runtime_params {
            flags |= abi::WORK_TYPE_ALLOW_RUNTIME_PARAMS;
        }
        flags
    }
}

/// Everything needed to start one unit.
#[derive(Debug)]
pub struct StartRequest {
    /// The unit ID.
    pub unit_id: String,
    /// The unit's folder.
    pub unit_dir: PathBuf,
    /// The payload, open for reading from the start.
    pub stdin: File,
    /// The results file, open for appending.
    pub stdout: File,
    /// Runtime command-line parameters (`params`), empty if none.
    pub params: String,
    /// Every other submit parameter.
    pub extra_params: BTreeMap<String, String>,
}

/// Everything needed to pick up a unit that was running when the node stopped.
#[derive(Debug, Clone)]
pub struct ReattachRequest {
    /// The unit ID.
    pub unit_id: String,
    /// The unit's folder.
    pub unit_dir: PathBuf,
    /// The unit's `ExtraData` as last saved.
    pub extra: Option<Value>,
}

/// Reports a unit's progress to the host; cheap to clone, usable from any thread, never
/// blocks. The latest report wins, so report the final state last.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<ProgressInner>,
}

struct ProgressInner {
    host: abi::Progress,
}

// SAFETY: the ABI requires the host's progress callbacks and context to be thread-safe.
unsafe impl Send for ProgressInner {}
// SAFETY: as above; the struct is only read.
unsafe impl Sync for ProgressInner {}

impl Drop for ProgressInner {
    fn drop(&mut self) {
        if let Some(release) = self.host.release {
            // SAFETY: this is the plugin's one reference to ctx, given up exactly once.
            unsafe { release(self.host.ctx) };
        }
    }
}

impl Progress {
    /// Takes over the plugin's reference to a host progress context.
    ///
    /// # Safety
    /// `host` must come from a `start`/`reattach` call and be taken over only once.
    pub(crate) unsafe fn from_abi(host: abi::Progress) -> Progress {
        Progress {
            inner: Arc::new(ProgressInner { host }),
        }
    }

    /// Replaces the unit's state, detail and extra data (`None` = null).
    pub fn report(&self, state: UnitState, detail: &str, extra: Option<&Value>) {
        let host = &self.inner.host;
        let Some(report) = host.report else {
            return;
        };
        let extra_json = extra.map(Value::to_string).unwrap_or_default();
        // SAFETY: ctx is alive while this handle holds its reference; strings are
        // borrowed for the call.
        unsafe {
            report(
                host.ctx,
                state.to_abi(),
                abi::Str::new(detail),
                abi::Str::new(&extra_json),
            )
        };
    }
}

/// A running unit.
pub trait WorkHandle: Send + Sync + 'static {
    /// Asks the unit to stop; it then reports Canceled (or a final state reached first).
    fn cancel(&self) -> Result<(), PluginError>;
}

/// A configured work type.
pub trait WorkType: Send + Sync + 'static {
    /// Its properties (name, signature and runtime-params flags).
    fn info(&self) -> WorkTypeInfo;

    /// Starts a unit on the plugin's own threads and returns promptly.
    fn start(
        &self,
        request: StartRequest,
        progress: Progress,
    ) -> Result<Box<dyn WorkHandle>, PluginError>;

    /// Re-attaches to a unit that was running when the node stopped. The default says it
    /// cannot, and the host marks such units failed.
    fn reattach(
        &self,
        request: ReattachRequest,
        progress: Progress,
    ) -> Result<Box<dyn WorkHandle>, PluginError> {
        drop(progress);
        Err(PluginError::new(format!(
            "work type {} cannot re-attach to unit {} after a restart",
            self.info().name,
            request.unit_id
        )))
    }
}

/// The earlier name of [`UnitState`].
pub type WorkState = UnitState;
/// The earlier name of [`WorkHandle`].
pub use self::WorkHandle as Unit;
