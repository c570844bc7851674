//! The control service's `metrics` command (a receptor-rs extension; Go receptor has no
//! command of that name): the node's figures as one JSON object, for any control client,
//! local or across the mesh (`connect <node> control`). The fields are those of
//! [`crate::metrics::Snapshot`]; the Prometheus endpoint serves the same figures.

use async_trait::async_trait;

use super::{Args, ControlCommand, ControlConn, Reply};
use crate::metrics::http::SnapshotFn;

/// `metrics`: a [`crate::metrics::Snapshot`] as JSON.
pub struct MetricsCommand {
    snapshot: SnapshotFn,
}

impl MetricsCommand {
    /// A command answering with what `snapshot` gathers.
    pub fn new(snapshot: SnapshotFn) -> MetricsCommand {
        MetricsCommand { snapshot }
    }
}

#[async_trait]
impl ControlCommand for MetricsCommand {
    fn name(&self) -> &'static str {
        "metrics"
    }

    async fn run(&self, _args: Args, _conn: &mut ControlConn) -> Result<Reply, String> {
        let snapshot = (self.snapshot)().await;
        serde_json::to_value(&snapshot)
            .map(Reply::Json)
            .map_err(|e| format!("could not convert metrics to JSON: {e}"))
    }
}
