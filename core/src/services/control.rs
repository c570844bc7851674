//! The control service as a mesh service and on TLS TCP listeners.
//!
//! * [`serve_mesh`]: a `control-service` with a non-empty `service` (default
//!   `control`) listens on that mesh service, advertised with the tags
//!   `{"type":"Control Service"}` (the mesh adds the node's work commands to such ads),
//!   as ConnType 1, or ConnType 2 when `tls` names a `tls-server`. Each stream is a
//!   control session of a [`PeerKind::Mesh`] client: other nodes' remote work and
//!   `connect` come in this way.
//!
//! TLS on the TCP listener (`tcptls`) is the control module's own
//! ([`ControlService::serve_tcp_tls`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{listen_options, serve_streams, ServiceError, ServiceHandle};
use crate::control::{ControlService, PeerKind};
use crate::mesh::Mesh;
use crate::streams::listen_with;
use crate::tls::ServerTls;
use receptor_proto::svcad::ServiceAdvertisement;

/// Serves `control` on the mesh service `service` (ConnType 2 with `tls`).
pub async fn serve_mesh(
    mesh: &Mesh,
    control: &ControlService,
    service: &str,
    tls: Option<Arc<ServerTls>>,
) -> Result<ServiceHandle, ServiceError> {
    let tags = BTreeMap::from([(
        "type".to_owned(),
        ServiceAdvertisement::CONTROL_SERVICE_TYPE.to_owned(),
    )]);
    let listener = listen_with(mesh, service, listen_options(tls, tags)).await?;
    let what = format!("control service on mesh service {}", listener.service());
    let control = control.clone();
    let task = tokio::spawn(serve_streams(listener, move |stream, node| {
        let control = control.clone();
        async move {
            control.serve_stream(stream, PeerKind::Mesh { node }).await;
        }
    }));
    Ok(ServiceHandle::new(what, None, task))
}
