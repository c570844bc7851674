//! The `work` control command: `submit`, `list`, `status`, `results`, `cancel`,
//! `release` and `force-release`, driven by `receptorctl` or any client of the control
//! service, with Go receptor 1.6.9's replies and error texts.
//!
//! `work submit` and `work results` use the connection directly: submit reads the payload
//! that follows the `Work unit created with ID <id>. Send stdin data and EOF.` line until
//! the client half-closes (a payload over the `control-limits` gets one error line and the
//! connection is closed, the unit failed), results streams raw bytes after its header line and then hands
//! the session back to command mode. `work status` and `work list` write their reply line
//! themselves so that `ExtraData` keeps the field order of Go's structs.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::payload::receive_small_payload;
use super::remote::{RemoteSubmitter, REMOTE_WORK_TYPE};
use super::request::{self, SubmitRequest, WorkRequest};
use super::results;
use super::signing::{VerifyError, WorkVerifier};
use super::status::{StatusReply, UnitStatus};
use super::store::{Unit, WorkError, Workceptor};
use crate::control::command::{Args, ControlCommand, ControlConn, PeerKind, Reply};
use crate::control::session::farewell;

/// The `work` command.
pub struct WorkCommand {
    store: Arc<Workceptor>,
    verifier: Option<Arc<dyn WorkVerifier>>,
    remote: Option<Arc<dyn RemoteSubmitter>>,
}

impl std::fmt::Debug for WorkCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkCommand")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl WorkCommand {
    /// The `work` command over `store`, without signature verification or remote work.
    pub fn new(store: Arc<Workceptor>) -> WorkCommand {
        WorkCommand {
            store,
            verifier: None,
            remote: None,
        }
    }

    /// Adds a signature verifier (`work-verification`).
    pub fn with_verifier(mut self, verifier: Arc<dyn WorkVerifier>) -> WorkCommand {
        self.verifier = Some(verifier);
        self
    }

    /// Adds remote work submission.
    pub fn with_remote(mut self, remote: Arc<dyn RemoteSubmitter>) -> WorkCommand {
        self.remote = Some(remote);
        self
    }

    /// The unit store.
    pub fn store(&self) -> &Arc<Workceptor> {
        &self.store
    }

    /// Go's `processSignature`: a signature is required for work types that verify
    /// signatures, except on the unix socket, and refused for the others.
    fn check_signature(
        &self,
        verify: bool,
        signature: &str,
        peer: &PeerKind,
    ) -> Result<(), String> {
        if !verify {
            if signature.is_empty() {
                return Ok(());
            }
            return Err("work type did not expect a signature".to_owned());
        }
        if *peer == PeerKind::Unix {
            return Ok(());
        }
        if signature.is_empty() {
            return Err(VerifyError::Empty.to_string());
        }
        match &self.verifier {
            Some(verifier) => verifier.verify(signature).map_err(|e| e.to_string()),
            None => Err(VerifyError::NoKey.to_string()),
        }
    }

    /// Go's `ShouldVerifySignature`: remote units by their `SignWork`, the others by
    /// their work type's `verifysignature`.
    fn unit_verifies(unit: &Unit) -> bool {
        if Self::is_remote_unit(unit) {
            return unit
                .status()
                .extra
                .as_ref()
                .and_then(|e| e.get("SignWork"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
        }
        unit.work_type().is_some_and(|w| w.verify_signature())
    }

    fn is_remote_unit(unit: &Unit) -> bool {
        unit.work_type()
            .is_some_and(|w| w.name() == REMOTE_WORK_TYPE)
    }

    fn is_local(&self, node: &str) -> bool {
        node.eq_ignore_ascii_case("localhost") || node == self.store.node_id()
    }

    async fn submit(&self, req: SubmitRequest, conn: &mut ControlConn) -> Result<Reply, String> {
        if !self.is_local(&req.node) {
            return self.submit_remote(req, conn).await;
        }
        if !req.ttl.is_empty() {
            return Err("ttl option is intended for remote work only".to_owned());
        }
        let wt = self
            .store
            .work_type(&req.work_type)
            .ok_or_else(|| WorkError::UnknownWorkType(req.work_type.clone()).to_string())?;
        self.check_signature(wt.verify_signature(), &req.signature, &conn.peer)?;
        let params = req.runtime_params().to_owned();
        if !params.is_empty() && !wt.allow_runtime_params() {
            return Err(WorkError::ParamsNotAllowed.to_string());
        }
        let unit = self
            .store
            .create(&req.work_type, req.unit_id.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        let created = format!(
            "Work unit created with ID {}. Send stdin data and EOF.\n",
            unit.id()
        );
        if conn.writer.write_all(created.as_bytes()).await.is_err() {
            // The client is gone: leave nothing behind.
            let _ = self.store.release(unit.id(), true).await;
            return Ok(Reply::Close);
        }
        // A small payload is kept in memory and written by the start itself; a larger
        // one is streamed to the file as it comes.
        let payload = match receive_small_payload(&unit, &mut conn.reader, &conn.limits).await {
            Ok(payload) => payload,
            Err(e) => {
                let msg = e.to_string();
                self.store
                    .fail(&unit, format!("Error reading input data: {msg}"))
                    .await;
                // The rest of the payload may still be coming: it must not be read as
                // commands.
                farewell(&mut conn.writer, &msg).await;
                return Ok(Reply::Close);
            }
        };
        let mut extra_params: BTreeMap<String, String> = req.params;
        extra_params.remove("params");
        self.store
            .start_with_payload(&unit, payload, params, extra_params)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Reply::Json(
            json!({"result": "Job Started", "unitid": unit.id()}),
        ))
    }

    async fn submit_remote(
        &self,
        req: SubmitRequest,
        conn: &mut ControlConn,
    ) -> Result<Reply, String> {
        if req.tls_client.is_empty()
            && req
                .params
                .keys()
                .any(|k| k.to_lowercase().starts_with("secret_"))
        {
            return Err("cannot send secrets over a non-TLS connection".to_owned());
        }
        if !req.ttl.is_empty() {
            request::parse_go_duration(&req.ttl)?;
        }
        if let Some(id) = &req.unit_id {
            super::unitid::validate(id).map_err(|e| e.to_string())?;
        }
        match &self.remote {
            Some(remote) => remote.submit(req, conn).await.map_err(|e| e.to_string()),
            None => Err(format!(
                "cannot submit work to node {}: remote work is not available on this node",
                req.node
            )),
        }
    }

    async fn write_line(conn: &mut ControlConn, value: &impl Serialize) -> Result<Reply, String> {
        let mut line = receptor_proto::gojson::to_vec(value).map_err(|e| e.to_string())?;
        line.push(b'\n');
        match conn.writer.write_all(&line).await {
            Ok(()) => Ok(Reply::Done),
            Err(_) => Ok(Reply::Close),
        }
    }

    async fn list(&self, unit_id: Option<String>, conn: &mut ControlConn) -> Result<Reply, String> {
        let units = match unit_id {
            Some(id) => vec![self.store.get(&id).map_err(|e| e.to_string())?],
            None => self.store.list(),
        };
        let entries: Vec<(Arc<Unit>, UnitStatus, Option<Value>)> = units
            .into_iter()
            .map(|u| {
                let status = u.status();
                let extra = u.extra_override();
                (u, status, extra)
            })
            .collect();
        let map: BTreeMap<&str, StatusReply<'_>> = entries
            .iter()
            .map(|(u, s, extra)| (u.id(), s.reply(extra.as_ref())))
            .collect();
        Self::write_line(conn, &map).await
    }

    async fn status(&self, unit_id: &str, conn: &mut ControlConn) -> Result<Reply, String> {
        let unit = self.store.get(unit_id).map_err(|e| e.to_string())?;
        let status = unit.status();
        let extra = unit.extra_override();
        Self::write_line(conn, &status.reply(extra.as_ref())).await
    }

    async fn results(
        &self,
        unit_id: &str,
        startpos: i64,
        signature: &str,
        conn: &mut ControlConn,
    ) -> Result<Reply, String> {
        let unit = self.store.get(unit_id).map_err(|e| e.to_string())?;
        self.check_signature(Self::unit_verifies(&unit), signature, &conn.peer)?;
        let startpos = u64::try_from(startpos)
            .map_err(|_| "start position must not be negative".to_owned())?;
        let header = format!("Streaming results for work unit {unit_id}\n");
        if conn.writer.write_all(header.as_bytes()).await.is_err() {
            return Ok(Reply::Close);
        }
        match results::stream_results(&unit, startpos, &mut conn.writer).await {
            Ok(_) => Ok(Reply::Done),
            Err(_) => Ok(Reply::Close),
        }
    }

    async fn cancel(
        &self,
        unit_id: &str,
        signature: &str,
        peer: &PeerKind,
    ) -> Result<Reply, String> {
        let unit = self.store.get(unit_id).map_err(|e| e.to_string())?;
        self.check_signature(Self::unit_verifies(&unit), signature, peer)?;
        if let (true, Some(remote)) = (Self::is_remote_unit(&unit), &self.remote) {
            return remote
                .cancel(unit)
                .await
                .map(Reply::Json)
                .map_err(|e| e.to_string());
        }
        self.store
            .cancel(unit_id)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Reply::Json(json!({ "cancelled": unit_id })))
    }

    async fn release(
        &self,
        unit_id: &str,
        signature: &str,
        force: bool,
        peer: &PeerKind,
    ) -> Result<Reply, String> {
        let unit = self.store.get(unit_id).map_err(|e| e.to_string())?;
        self.check_signature(Self::unit_verifies(&unit), signature, peer)?;
        if let (true, Some(remote)) = (Self::is_remote_unit(&unit), &self.remote) {
            return remote
                .release(unit, force)
                .await
                .map(Reply::Json)
                .map_err(|e| e.to_string());
        }
        self.store
            .release(unit_id, force)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Reply::Json(json!({ "released": unit_id })))
    }
}

#[async_trait]
impl ControlCommand for WorkCommand {
    fn name(&self) -> &'static str {
        "work"
    }

    async fn run(&self, args: Args, conn: &mut ControlConn) -> Result<Reply, String> {
        match request::parse(&args)? {
            WorkRequest::Submit(req) => self.submit(req, conn).await,
            WorkRequest::List { unit_id } => self.list(unit_id, conn).await,
            WorkRequest::Status { unit_id } => self.status(&unit_id, conn).await,
            WorkRequest::Results {
                unit_id,
                startpos,
                signature,
            } => self.results(&unit_id, startpos, &signature, conn).await,
            WorkRequest::Cancel { unit_id, signature } => {
                self.cancel(&unit_id, &signature, &conn.peer).await
            }
            WorkRequest::Release {
                unit_id,
                signature,
                force,
            } => self.release(&unit_id, &signature, force, &conn.peer).await,
            WorkRequest::Bad => Err("bad command".to_owned()),
        }
    }
}
