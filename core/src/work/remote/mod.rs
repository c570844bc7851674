//! Remote work: units submitted on this node to run on another node.
//!
//! `work submit bar cat` on node `foo` creates a local unit of the internal work type
//! `remote` (never advertised) that stands for the real unit on `bar`. Its status
//! file's `ExtraData` is a [`RemoteExtraData`] (Go receptor 1.6.9's layout), its
//! `stdin` is the payload, and its `stdout` receives the remote results, so that
//! `work status`, `work results`, `cancel` and `release` on `foo` work as for a local
//! unit. Each unit has a driver task ([`driver`]) that talks to `bar`'s control service
//! as a client, exactly as a Go node does, so Go and Rust nodes submit to each other;
//! what it does and when is decided by the unit's state machine ([`machine`]), which
//! does no I/O:
//!
//! * the submission forwards the local unit id as `workUnitID` (both nodes use the
//!   same id), every work parameter, the `tlsclient` name and, with `signwork`, a
//!   signature ([`crate::work::signing`]); `ttl` and `signwork` stay local;
//! * if `bar` cannot be reached on the first attempt the client gets `Job Submitted`
//!   and the driver keeps trying with back-off (1 s ×1.5, up to 1 min) until the unit
//!   starts, is cancelled or released, or its `ttl` expires;
//! * once started, the unit is followed with one results stream from the local
//!   `stdout` size on, and a slow status poll (on a control session that later units
//!   to the same node reuse, see `sessions`); it is finished here when the remote unit
//!   is final and all of its results are on the local disk;
//! * cancel and release are carried to `bar` (retried while it cannot be reached:
//!   `cancel pending` / `release pending`); `force-release` tries once;
//! * a start attempt whose connection breaks is retried like one that cannot connect;
//!   the retry finds the remote unit the broken attempt may have left and adopts it
//!   if it got its whole payload, or releases it and submits again if it did not;
//! * after a restart, units that were being followed are followed again from the
//!   local `stdout` size, units whose payload had been accepted but that had not
//!   started are started (Go 1.6.9 fails them), and pending cancels and releases are
//!   retried.

mod client;
mod dialer;
mod driver;
mod extra;
mod machine;
mod mesh_dialer;
mod sessions;

#[cfg(test)]
pub mod gonode;
#[cfg(test)]
mod mesh_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, watch};

pub use client::{ConnectError, ControlClient, RemoteStatus, StatusReply};
pub use dialer::{ControlDialer, ControlIo, ControlStream, DialError, Dialed, UnknownTlsClient};
pub use extra::{is_secret, redacted_extra, rfc3339_nano, RemoteExtraData};
pub use mesh_dialer::{MeshDialer, CONTROL_SERVICE};

use super::payload::receive_payload;
use super::request::{parse_go_duration, SubmitRequest};
use super::signing::WorkSigner;
use super::store::{Unit, Workceptor};
use super::worktype::{
    ReattachRequest, StartRequest, UnitState, WorkHandle, WorkProgress, WorkType, WorkTypeError,
};
use crate::control::command::{ControlConn, Reply};
use driver::{Command, Mode, Shared, StartOutcome};

/// Why remote work refused or failed a client's request; the text is the client's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemoteWorkError {
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The unit's queue of requests is full.
    #[error("work unit {0} is busy with other requests, try again")]
    Busy(String),
    /// The unit is gone (released).
    #[error("unknown work unit {0}")]
    UnknownUnit(String),
    /// The submission names a `tlsclient` that is not configured.
    #[error(transparent)]
    TlsClient(#[from] UnknownTlsClient),
    /// The submission's `ttl` is not a Go duration.
    #[error("{0}")]
    Ttl(String),
    /// The local unit store refused (creating or releasing the unit).
    #[error("{0}")]
    Store(String),
    /// The payload could not be received.
    #[error("{0}")]
    Payload(String),
    /// The unit could not be started, or the remote node refused a cancel or release.
    #[error("{0}")]
    Failed(String),
}

/// Name of the internal work type of remote units.
pub const REMOTE_WORK_TYPE: &str = "remote";

/// Submits work to other nodes and drives the local units that stand for it (the
/// `remote` work type); absent until remote work is configured, in which case
/// submissions to other nodes are refused.
#[async_trait]
pub trait RemoteSubmitter: Send + Sync {
    /// Submits `request` to `request.node`: creates the local unit, answers with the
    /// `Work unit created` line, reads the payload from `conn` and starts the remote
    /// unit. Returns the reply (`{"result":..,"unitid":..}`).
    async fn submit(
        &self,
        request: SubmitRequest,
        conn: &mut ControlConn,
    ) -> Result<Reply, RemoteWorkError>;

    /// Cancels a remote unit: `{"cancelled":id}`, or `{"cancel pending":id}` while the
    /// remote node cannot be reached.
    async fn cancel(&self, unit: Arc<Unit>) -> Result<Value, RemoteWorkError>;

    /// Releases a remote unit here and on the remote node: `{"released":id}`, or
    /// `{"release pending":id}` while the remote node cannot be reached (`force`:
    /// one attempt, then the local unit goes regardless).
    async fn release(&self, unit: Arc<Unit>, force: bool) -> Result<Value, RemoteWorkError>;
}

/// Timing of remote work.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// First delay before retrying a connection (Go: 1 s).
    pub retry_initial: Duration,
    /// Longest delay between retries (Go: 1 min).
    pub retry_max: Duration,
    /// First interval of the status poll of a followed unit (Go polls every second).
    pub poll_initial: Duration,
    /// Longest interval of the status poll while the remote state does not change.
    pub poll_max: Duration,
    /// The remote control service must greet within this (Go: 5 s).
    pub greeting_timeout: Duration,
    /// A remote reply line must come within this.
    pub reply_timeout: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            poll_initial: Duration::from_secs(1),
            poll_max: Duration::from_secs(5),
            greeting_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(60),
        }
    }
}

/// The `remote` work type as the unit store sees it: it lets the store create and load
/// remote units; [`RemoteWork`] runs them (the store never starts one itself).
#[derive(Debug, Default)]
pub struct RemoteWorkType;

impl RemoteWorkType {
    /// The type, ready for [`Workceptor::open_with`].
    pub fn shared() -> Arc<dyn WorkType> {
        Arc::new(RemoteWorkType)
    }
}

impl WorkType for RemoteWorkType {
    fn name(&self) -> &str {
        REMOTE_WORK_TYPE
    }

    fn verify_signature(&self) -> bool {
        false
    }

    fn allow_runtime_params(&self) -> bool {
        true
    }

    fn start(
        &self,
        _request: StartRequest,
        _progress: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError> {
        Err(WorkTypeError::Unsupported(
            "remote units are started by remote work, not by the store",
        ))
    }

    fn reattach(
        &self,
        _request: ReattachRequest,
        _progress: watch::Sender<WorkProgress>,
    ) -> Result<Box<dyn WorkHandle>, WorkTypeError> {
        Err(WorkTypeError::Unsupported(
            "remote units are resumed by remote work, not by the store",
        ))
    }

    /// Hides the `secret_*` parameters.
    fn shown_extra(&self, stored: Option<&Value>) -> Option<Value> {
        redacted_extra(stored)
    }
}

/// Remote work of one node: submits units to other nodes and drives them.
pub struct RemoteWork {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RemoteWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWork").finish_non_exhaustive()
    }
}

impl Drop for RemoteWork {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

impl RemoteWork {
    /// Remote work over `store` (opened with [`RemoteWorkType`] as an internal type),
    /// reaching other nodes with `dialer` and signing with `signer` (`work-signing`).
    pub fn new(
        store: Arc<Workceptor>,
        dialer: Arc<dyn ControlDialer>,
        signer: Option<Arc<WorkSigner>>,
        options: RemoteOptions,
    ) -> Arc<RemoteWork> {
        Arc::new(RemoteWork {
            shared: Arc::new(Shared::new(store, dialer, signer, options)),
        })
    }

    /// Picks up the remote units found on disk at start-up (call it before the control
    /// service serves clients): units whose payload was accepted but that had not
    /// started on the remote node are started now (Go 1.6.9 fails them), units still
    /// waiting for their payload fail (`Failed to restart: remote work had not
    /// previously started`), units that were being followed are followed again, pending
    /// cancels and releases are retried. Finished units are left alone.
    pub async fn recover(&self) {
        for unit in self.shared.store.list() {
            if !is_remote(&unit) {
                continue;
            }
            let status = unit.status();
            let failure = match RemoteExtraData::from_value(status.extra.as_ref()) {
                Err(e) => Some(format!("Failed to restart: {e}")),
                Ok(extra) if !extra.remote_started => {
                    if status.is_final() || status.detail == "Waiting for Input Data" {
                        Some("Failed to restart: remote work had not previously started".to_owned())
                    } else {
                        // Its payload was accepted: the driver starts it now.
                        self.shared.spawn(unit.clone(), Mode::Resume);
                        None
                    }
                }
                Ok(extra) => {
                    if !status.is_final() || extra.local_released {
                        self.shared.spawn(unit.clone(), Mode::Resume);
                    }
                    None
                }
            };
            if let (Some(detail), false) = (failure, status.is_final()) {
                tracing::warn!(unit = %unit.id(), "{detail}");
                if let Err(e) = unit.update(|s| s.set(UnitState::Failed, detail)).await {
                    tracing::warn!(unit = %unit.id(), "cannot write status file: {e}");
                }
            }
        }
    }

    /// Stops every driver (node shutdown); units stay as they are on disk.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    async fn command(
        &self,
        unit: Arc<Unit>,
        make: impl FnOnce(driver::CommandReply) -> Command,
    ) -> Result<Value, RemoteWorkError> {
        let (tx, rx) = oneshot::channel();
        self.shared.dispatch(unit, make(tx));
        rx.await.unwrap_or(Err(RemoteWorkError::ShuttingDown))
    }
}

fn is_remote(unit: &Unit) -> bool {
    unit.work_type()
        .is_some_and(|w| w.name() == REMOTE_WORK_TYPE)
}

#[async_trait]
impl RemoteSubmitter for RemoteWork {
    async fn submit(
        &self,
        request: SubmitRequest,
        conn: &mut ControlConn,
    ) -> Result<Reply, RemoteWorkError> {
        let shared = &self.shared;
        shared.dialer.check_tls_client(&request.tls_client)?;
        let expiration = match request.ttl.as_str() {
            "" => None,
            ttl => {
                let ttl = parse_go_duration(ttl).map_err(RemoteWorkError::Ttl)?;
                if let (true, Some(signer)) = (request.sign_work, &shared.signer) {
                    if ttl > signer.expiration() {
                        tracing::warn!("json web token expires before ttl");
                    }
                }
                Some(SystemTime::now() + ttl)
            }
        };
        let unit = shared
            .store
            .create(REMOTE_WORK_TYPE, request.unit_id.as_deref())
            .await
            .map_err(|e| RemoteWorkError::Store(e.to_string()))?;
        let extra = RemoteExtraData {
            remote_node: request.node,
            remote_work_type: request.work_type,
            remote_params: request.params,
            sign_work: request.sign_work,
            tls_client: request.tls_client,
            expiration,
            ..RemoteExtraData::default()
        }
        .to_value();
        if let Err(e) = unit.update(|s| s.extra = Some(extra)).await {
            tracing::warn!(unit = %unit.id(), "cannot write status file: {e}");
        }
        let created = format!(
            "Work unit created with ID {}. Send stdin data and EOF.\n",
            unit.id()
        );
        if conn.writer.write_all(created.as_bytes()).await.is_err() {
            let _ = shared.store.release(unit.id(), true).await;
            return Ok(Reply::Close);
        }
        if let Err(e) = receive_payload(&unit, &mut conn.reader, &conn.limits).await {
            let message = e.to_string();
            shared
                .store
                .fail(&unit, format!("Error reading input data: {message}"))
                .await;
            // The rest of the payload may still be coming: it must not be read as
            // commands.
            crate::control::session::farewell(&mut conn.writer, &message).await;
            return Ok(Reply::Close);
        }
        // The payload is on disk; once this is too, the unit is started even after a
        // power loss.
        if let Err(e) = unit
            .update_durable(|s| s.set(UnitState::Pending, "Starting Worker"))
            .await
        {
            tracing::warn!(unit = %unit.id(), "cannot write status file: {e}");
        }
        let id = unit.id().to_owned();
        let (tx, rx) = oneshot::channel();
        shared.spawn(unit, Mode::Start(tx));
        let result = match rx.await {
            Ok(StartOutcome::Started) => "Job Started",
            Ok(StartOutcome::Pending) => "Job Submitted",
            Ok(StartOutcome::Failed(message)) => return Err(RemoteWorkError::Failed(message)),
            Err(_) => return Err(RemoteWorkError::ShuttingDown),
        };
        Ok(Reply::Json(json!({"result": result, "unitid": id})))
    }

    async fn cancel(&self, unit: Arc<Unit>) -> Result<Value, RemoteWorkError> {
        self.command(unit, Command::Cancel).await
    }

    async fn release(&self, unit: Arc<Unit>, force: bool) -> Result<Value, RemoteWorkError> {
        self.command(unit, |reply| Command::Release { force, reply })
            .await
    }
}
