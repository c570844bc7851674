//! The datagram layer streams run on.
//!
//! QUIC needs nothing from the mesh but unreliable datagrams between `(node, service)`
//! addresses plus the unreachable notices the mesh reports back. [`DatagramNetwork`] and
//! [`DatagramSocket`] state exactly that, so the stream adapter can run over the real
//! mesh ([`Mesh`] / [`PacketConn`]) or over any other carrier (the tests use an in-memory
//! one with loss and reordering).

use std::future::Future;
use std::time::Duration;

use receptor_proto::svcad::ServiceAdvertisement;

use crate::mesh::{Incoming, Mesh, MeshError, PacketConn};

/// Something that can open datagram sockets on named services: a mesh node.
pub trait DatagramNetwork: Send + Sync + 'static {
    /// The socket type [`DatagramNetwork::open`] returns.
    type Socket: DatagramSocket;

    /// This node's ID (the client's TLS server name, and how peers address us).
    fn node_id(&self) -> &str;

    /// Opens a socket on `service` (`None` = a fresh ephemeral name); with `advertise`
    /// the service is advertised to the mesh while the socket is open.
    fn open(
        &self,
        service: Option<&str>,
        advertise: Option<ServiceAdvertisement>,
    ) -> impl Future<Output = Result<Self::Socket, MeshError>> + Send;

    /// Waits (at most `limit`) until `node` can send datagrams back to this node, so
    /// that a dial's first answer is not lost; carriers that always can return at once.
    fn ready_to_answer(&self, node: &str, limit: Duration) -> impl Future<Output = ()> + Send {
        let _ = (node, limit);
        async {}
    }
}

/// A datagram socket bound to one local service; dropping it unregisters the service.
pub trait DatagramSocket: Send + 'static {
    /// The local service name.
    fn service(&self) -> &str;

    /// Sends one datagram to `(node, service)`, waiting for queue room.
    fn send_to(
        &self,
        node: &str,
        service: &str,
        data: &[u8],
    ) -> impl Future<Output = Result<(), MeshError>> + Send;

    /// Receives the next datagram or unreachable notice.
    ///
    /// Must be cancel-safe: the adapter polls it in a `select!` next to its send queue.
    fn recv(&mut self) -> impl Future<Output = Result<Incoming, MeshError>> + Send;
}

impl DatagramNetwork for Mesh {
    type Socket = PacketConn;

    fn node_id(&self) -> &str {
        Mesh::node_id(self)
    }

    async fn open(
        &self,
        service: Option<&str>,
        advertise: Option<ServiceAdvertisement>,
    ) -> Result<PacketConn, MeshError> {
        self.listen(service, advertise).await
    }

    async fn ready_to_answer(&self, node: &str, limit: Duration) {
        if !self.wait_routes_back(node, limit).await {
            tracing::debug!(
                node,
                "no sign yet that the node can route back to us; dialing anyway"
            );
        }
    }
}

impl DatagramSocket for PacketConn {
    fn service(&self) -> &str {
        PacketConn::service(self)
    }

    async fn send_to(&self, node: &str, service: &str, data: &[u8]) -> Result<(), MeshError> {
        PacketConn::send_to(self, node, service, data).await
    }

    async fn recv(&mut self) -> Result<Incoming, MeshError> {
        PacketConn::recv(self).await
    }
}
