//! `ip-router`: IP packets between this node's tun interface and other nodes' over the
//! mesh, wire-compatible with Go receptor 1.6.9.
//!
//! As in Go: the node creates a tun device, gives it the first host address of its
//! `localnet` (an IPv4 /30) with the second as point-to-point peer, and listens on the
//! datagram service `networkname`, advertised with the tags `type: IP Router`,
//! `network: <networkname>`, `route_local: <localnet>` and `route_<i>: <route>` for each
//! of `routes`. Each datagram is one raw IP packet, as read from or written to the tun
//! device. Every advertisement of the same network from a node the routing table reaches
//! gives kernel routes through the tun device for its `route*` networks; routes of nodes
//! that go away are removed.
//!
//! Where this differs from Go 1.6.9 (each time in the user's favour):
//! * `interface` names the tun device (Go ignores it and takes the kernel's `tunN`);
//! * routes are device routes without a gateway, so IPv6 routes work too (Go gives IPv6
//!   routes an IPv4 gateway, which the kernel refuses);
//! * a packet goes to the advertiser of the longest matching prefix, the cheapest path
//!   among equals (Go takes the cheapest path among all matches);
//! * routes follow the mesh within [`ROUTE_REFRESH`] (Go: 10 s), and only the routes
//!   this router added are ever removed.
//!
//! Without the privilege to create a tun device (`CAP_NET_ADMIN`) the node does not start,
//! like Go's, with the reason.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use super::{ServiceError, ServiceHandle};
use crate::config::{Cidr, IpRouterConfig};
use crate::mesh::{Incoming, Mesh, MeshStatus, PacketConn};
use receptor_proto::svcad::ServiceAdvertisement;

/// The `type` tag of an ip-router's advertisement.
pub const AD_TYPE: &str = "IP Router";
/// How often the advertisements and routing table are re-read.
pub const ROUTE_REFRESH: Duration = Duration::from_secs(1);
/// Largest packet read from the tun device or the mesh.
const PACKET_BUFFER: usize = 65536;
/// Pause after a failed tun read, so that a persistent error does not spin.
const READ_BACKOFF: Duration = Duration::from_millis(100);

/// Starts an `ip-router`: the tun device, its address, the advertised mesh service.
pub(super) async fn start(
    mesh: &Mesh,
    cfg: &IpRouterConfig,
) -> Result<ServiceHandle, ServiceError> {
    let fail = |what: String| move |source| ServiceError::IpRouter { what, source };
    let IpAddr::V4(base) = cfg.local_net.addr else {
        return Err(fail("local network".into())(io::Error::new(
            io::ErrorKind::InvalidInput,
            "must be IPv4",
        )));
    };
    let mut tun = Tun::create(cfg.interface.as_deref()).map_err(fail(
        "error opening tun device (this needs CAP_NET_ADMIN and /dev/net/tun)".into(),
    ))?;
    let link_ip = Ipv4Addr::from(u32::from(base) + 1);
    let peer_ip = Ipv4Addr::from(u32::from(base) + 2);
    tun.configure(link_ip, peer_ip)
        .map_err(fail(format!("error setting up tun device {}", tun.name)))?;
    let mut tags = BTreeMap::from([
        ("type".to_owned(), AD_TYPE.to_owned()),
        ("network".to_owned(), cfg.network_name.clone()),
        ("route_local".to_owned(), cfg.local_net.to_string()),
    ]);
    for (i, route) in cfg.routes.iter().enumerate() {
        tags.insert(format!("route_{i}"), route.to_string());
    }
    let ad = ServiceAdvertisement {
        node_id: mesh.node_id().to_owned(),
        service: cfg.network_name.clone(),
        time: String::new(),
        conn_type: 0,
        tags: Some(tags),
        work_commands: None,
    };
    let pc = mesh
        .listen(Some(&cfg.network_name), Some(ad))
        .await
        .map_err(|source| ServiceError::MeshPacketListen {
            service: cfg.network_name.clone(),
            source,
        })?;
    let what = format!(
        "ip-router {} on {} ({link_ip} peer {peer_ip})",
        cfg.network_name, tun.name
    );
    tracing::info!("Running {what}");
    let router = Router {
        mesh: mesh.clone(),
        network: cfg.network_name.clone(),
        tun,
        pc,
        table: Vec::new(),
        installed: BTreeSet::new(),
        refused: BTreeSet::new(),
    };
    Ok(ServiceHandle::new(what, None, tokio::spawn(router.run())))
}

/// A network reachable through a node.
#[derive(Debug, Clone, PartialEq)]
struct Route {
    net: Cidr,
    via: String,
    cost: f64,
}

/// One running router; owns the tun device and the mesh socket.
struct Router {
    mesh: Mesh,
    network: String,
    tun: Tun,
    pc: PacketConn,
    /// Where packets go, most specific networks first, cheapest first among equals.
    table: Vec<Route>,
    /// Kernel routes this router added.
    installed: BTreeSet<Cidr>,
    /// Kernel routes the kernel refused (not retried while still advertised).
    refused: BTreeSet<Cidr>,
}

/// What woke the router.
enum Event {
    Refresh,
    Tun(io::Result<usize>),
    Mesh(Result<Incoming, crate::mesh::MeshError>),
}

impl Router {
    async fn run(mut self) {
        let mut buf = vec![0u8; PACKET_BUFFER];
        let mut refresh = tokio::time::interval(ROUTE_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                _ = refresh.tick() => Event::Refresh,
                r = self.tun.read(&mut buf) => Event::Tun(r),
                m = self.pc.recv() => Event::Mesh(m),
            };
            match event {
                Event::Refresh => self.refresh().await,
                Event::Tun(Ok(n)) => self.forward(&buf[..n]).await,
                Event::Tun(Err(e)) => {
                    tracing::error!("Error reading from tun device {}: {e}", self.tun.name);
                    tokio::time::sleep(READ_BACKOFF).await;
                }
                Event::Mesh(Ok(Incoming::Data {
                    from_node, data, ..
                })) => self.deliver(&from_node, &data).await,
                Event::Mesh(Ok(_)) => {}
                Event::Mesh(Err(e)) => {
                    tracing::error!("ip-router {}: mesh socket closed: {e}", self.network);
                    return;
                }
            }
        }
    }

    /// Sends a packet from the tun device to the node that routes its destination.
    async fn forward(&self, packet: &[u8]) {
        let Some(dest) = destination(packet) else {
            tracing::trace!("ip-router: dropping a malformed packet from the tun device");
            return;
        };
        let Some(route) = self.table.iter().find(|r| r.net.contains(dest)) else {
            tracing::trace!("ip-router: no route to {dest}");
            return;
        };
        if let Err(e) = self.pc.send_to(&route.via, &self.network, packet).await {
            tracing::debug!("ip-router: error sending to {dest} via {}: {e}", route.via);
        }
    }

    /// Writes a packet from the mesh to the tun device.
    async fn deliver(&self, from: &str, packet: &[u8]) {
        if destination(packet).is_none() {
            tracing::debug!("ip-router: dropping a malformed packet from {from}");
            return;
        }
        if let Err(e) = self.tun.write(packet).await {
            tracing::debug!("Error writing to tun device {}: {e}", self.tun.name);
        }
    }

    /// Re-reads the advertisements and routing table; adds and removes kernel routes.
    async fn refresh(&mut self) {
        let status = self.mesh.status().await;
        self.table = known_routes(&status, self.mesh.node_id(), &self.network);
        let wanted: BTreeSet<Cidr> = self.table.iter().map(|r| r.net).collect();
        self.refused.retain(|net| wanted.contains(net));
        for net in self.installed.clone().difference(&wanted) {
            tracing::info!("ip-router {}: removing route to {net}", self.network);
            if let Err(e) = self.tun.route(libc::SIOCDELRT, *net) {
                tracing::warn!("error deleting kernel route to {net}: {e}");
            }
            self.installed.remove(net);
        }
        for route in &self.table {
            let net = route.net;
            if self.installed.contains(&net) || self.refused.contains(&net) {
                continue;
            }
            tracing::info!(
                "ip-router {}: adding route to {net} via {}",
                self.network,
                route.via
            );
            match self.tun.route(libc::SIOCADDRT, net) {
                Ok(()) => {
                    self.installed.insert(net);
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    self.installed.insert(net);
                }
                Err(e) => {
                    tracing::warn!("error adding kernel route to {net}: {e}");
                    self.refused.insert(net);
                }
            }
        }
    }
}

/// The networks other nodes of `network` advertise, from nodes the routing table reaches,
/// ordered for lookup: longest prefix first, then cheapest path, then node name.
fn known_routes(status: &MeshStatus, me: &str, network: &str) -> Vec<Route> {
    let costs = path_costs(status, me);
    let mut routes = Vec::new();
    for ad in &status.advertisements {
        let Some(tags) = &ad.tags else { continue };
        if ad.node_id == me
            || tags.get("type").map(String::as_str) != Some(AD_TYPE)
            || tags.get("network").map(String::as_str) != Some(network)
            || !status.routing_table.contains_key(&ad.node_id)
        {
            continue;
        }
        let cost = costs.get(&ad.node_id).copied().unwrap_or(f64::MAX);
        for (key, value) in tags {
            if !key.starts_with("route") {
                continue;
            }
            if let Some(net) = Cidr::parse(value) {
                routes.push(Route {
                    net,
                    via: ad.node_id.clone(),
                    cost,
                });
            }
        }
    }
    routes.sort_by(|a, b| {
        b.net
            .prefix
            .cmp(&a.net.prefix)
            .then(a.cost.total_cmp(&b.cost))
            .then_with(|| a.via.cmp(&b.via))
    });
    routes
}

/// The cost of the cheapest path from `me` to every node (Dijkstra over the known
/// connection costs).
fn path_costs(status: &MeshStatus, me: &str) -> HashMap<String, f64> {
    let mut dist: HashMap<String, f64> = HashMap::from([(me.to_owned(), 0.0)]);
    let mut done: HashSet<String> = HashSet::new();
    loop {
        let next = dist
            .iter()
            .filter(|(n, _)| !done.contains(*n))
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(n, d)| (n.clone(), *d));
        let Some((node, d)) = next else {
            return dist;
        };
        done.insert(node.clone());
        for (peer, cost) in status
            .known_connection_costs
            .get(&node)
            .into_iter()
            .flatten()
        {
            let through = d + cost;
            if dist.get(peer).is_none_or(|known| through < *known) {
                dist.insert(peer.clone(), through);
            }
        }
    }
}

/// The destination address of an IPv4 or IPv6 packet, if it is one.
fn destination(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(dst)))
        }
        6 => {
            let dst: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(dst)))
        }
        _ => None,
    }
}

/// A tun device (no packet information header: one read or write is one IP packet).
struct Tun {
    fd: AsyncFd<OwnedFd>,
    name: String,
    index: libc::c_int,
}

/// `struct rtentry` of `<net/route.h>` (the `libc` crate has it only for musl).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_tos: libc::c_uchar,
    rt_class: libc::c_uchar,
    #[cfg(target_pointer_width = "64")]
    rt_pad4: [libc::c_short; 3],
    #[cfg(not(target_pointer_width = "64"))]
    rt_pad4: [libc::c_short; 1],
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// `struct in6_rtmsg` of `<net/route.h>` (private fields in the `libc` crate).
#[repr(C)]
struct In6RtMsg {
    rtmsg_dst: libc::in6_addr,
    rtmsg_src: libc::in6_addr,
    rtmsg_gateway: libc::in6_addr,
    rtmsg_type: u32,
    rtmsg_dst_len: u16,
    rtmsg_src_len: u16,
    rtmsg_metric: u32,
    rtmsg_info: libc::c_ulong,
    rtmsg_flags: u32,
    rtmsg_ifindex: libc::c_int,
}

/// `RTF_UP`: the route is usable.
const RTF_UP: u16 = 0x0001;
/// The metric `ip -6 route add` uses by default.
const IP6_RT_PRIO_USER: u32 = 1024;

impl Tun {
    /// Opens `/dev/net/tun` and creates the device (`name`, or the kernel's choice).
    fn create(name: Option<&str>) -> io::Result<Tun> {
        // SAFETY: the path is a NUL-terminated literal; open returns a descriptor or -1.
        let fd = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by open and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut req = ifreq(name.unwrap_or(""))?;
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes the `ifreq` we pass, which lives across the
        // call.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let name = ifname(&req);
        // SAFETY: an `OwnedFd` is a valid open descriptor that stays open, and returns the
        // same number from `as_raw_fd`, for as long as the `AsyncFd` owning it exists.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Tun { fd, name, index: 0 })
    }

    /// Gives the device `local` with `peer` as point-to-point peer and brings it up.
    fn configure(&mut self, local: Ipv4Addr, peer: Ipv4Addr) -> io::Result<()> {
        let sock = socket(libc::AF_INET)?;
        let mut req = ifreq(&self.name)?;
        req.ifr_ifru.ifru_addr = sockaddr_v4(local);
        ioctl(&sock, libc::SIOCSIFADDR, &mut req)?;
        let mut req = ifreq(&self.name)?;
        req.ifr_ifru.ifru_dstaddr = sockaddr_v4(peer);
        ioctl(&sock, libc::SIOCSIFDSTADDR, &mut req)?;
        let mut req = ifreq(&self.name)?;
        ioctl(&sock, libc::SIOCGIFFLAGS, &mut req)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        ioctl(&sock, libc::SIOCSIFFLAGS, &mut req)?;
        let mut req = ifreq(&self.name)?;
        ioctl(&sock, libc::SIOCGIFINDEX, &mut req)?;
        // SAFETY: SIOCGIFINDEX filled the index member of the union.
        self.index = unsafe { req.ifr_ifru.ifru_ifindex };
        Ok(())
    }

    /// Adds (`SIOCADDRT`) or deletes (`SIOCDELRT`) a route to `net` through the device.
    fn route(&self, op: libc::c_ulong, net: Cidr) -> io::Result<()> {
        match net.addr {
            IpAddr::V4(addr) => {
                let sock = socket(libc::AF_INET)?;
                let dev = CString::new(self.name.as_str())
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(net.prefix))
                    .unwrap_or(0);
                // SAFETY: RtEntry is plain data (integers, sockaddrs, a pointer), for which
                // all zeroes is a valid value.
                let mut rt: RtEntry = unsafe { zeroed() };
                rt.rt_dst = sockaddr_v4(addr);
                rt.rt_genmask = sockaddr_v4(Ipv4Addr::from(mask));
                rt.rt_flags = RTF_UP;
                rt.rt_dev = dev.as_ptr().cast_mut();
                ioctl(&sock, op, &mut rt)
            }
            IpAddr::V6(addr) => {
                let sock = socket(libc::AF_INET6)?;
                // SAFETY: In6RtMsg is plain data, for which all zeroes is a valid value.
                let mut rt: In6RtMsg = unsafe { zeroed() };
                rt.rtmsg_dst = libc::in6_addr {
                    s6_addr: addr.octets(),
                };
                rt.rtmsg_dst_len = u16::from(net.prefix);
                rt.rtmsg_metric = IP6_RT_PRIO_USER;
                rt.rtmsg_flags = u32::from(RTF_UP);
                rt.rtmsg_ifindex = self.index;
                ioctl(&sock, op, &mut rt)
            }
        }
    }

    /// Reads one packet.
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd
            .async_io(tokio::io::Interest::READABLE, |fd| {
                // SAFETY: `buf` is a valid writable buffer of the given length and the
                // descriptor is open while `self` lives.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n.unsigned_abs())
                }
            })
            .await
    }

    /// Writes one packet.
    async fn write(&self, packet: &[u8]) -> io::Result<usize> {
        self.fd
            .async_io(tokio::io::Interest::WRITABLE, |fd| {
                // SAFETY: `packet` is a valid readable buffer of the given length and the
                // descriptor is open while `self` lives.
                let n =
                    unsafe { libc::write(fd.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n.unsigned_abs())
                }
            })
            .await
    }
}

/// An `ifreq` naming `name` (empty: none), the rest zero.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: ifreq is plain data (a name and a union of integers and sockaddrs), for
    // which all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// The interface name of an `ifreq` the kernel filled in.
fn ifname(req: &libc::ifreq) -> String {
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A `sockaddr` holding the `sockaddr_in` of `addr`.
fn sockaddr_v4(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    const _: () = assert!(size_of::<libc::sockaddr_in>() == size_of::<libc::sockaddr>());
    // SAFETY: both are 16-byte plain-data structs (checked above), and a sockaddr is
    // meant to hold a sockaddr_in.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// A datagram socket of `family` for configuration ioctls.
fn socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket takes integers only and returns a descriptor or -1.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs a configuration ioctl with `arg`.
fn ioctl<T>(sock: &OwnedFd, request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    let fd: RawFd = sock.as_raw_fd();
    // SAFETY: `arg` is the struct `request` expects (the callers pair them), valid for
    // reads and writes for the duration of the call.
    if unsafe { libc::ioctl(fd, request as _, std::ptr::from_mut(arg)) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad(node: &str, network: &str, routes: &[(&str, &str)]) -> ServiceAdvertisement {
        let mut tags = BTreeMap::from([
            ("type".to_owned(), AD_TYPE.to_owned()),
            ("network".to_owned(), network.to_owned()),
        ]);
        for (k, v) in routes {
            tags.insert((*k).to_owned(), (*v).to_owned());
        }
        ServiceAdvertisement {
            node_id: node.to_owned(),
            service: network.to_owned(),
            time: String::new(),
            conn_type: 0,
            tags: Some(tags),
            work_commands: None,
        }
    }

    /// `me` - b (cost 1) - c (cost 1), and me - c directly at cost 5.
    fn status(ads: Vec<ServiceAdvertisement>) -> MeshStatus {
        let costs = |pairs: &[(&str, f64)]| {
            pairs
                .iter()
                .map(|(n, c)| ((*n).to_owned(), *c))
                .collect::<BTreeMap<String, f64>>()
        };
        MeshStatus {
            connections: Vec::new(),
            routing_table: BTreeMap::from([
                ("b".to_owned(), "b".to_owned()),
                ("c".to_owned(), "b".to_owned()),
            ]),
            known_connection_costs: BTreeMap::from([
                ("me".to_owned(), costs(&[("b", 1.0), ("c", 5.0)])),
                ("b".to_owned(), costs(&[("me", 1.0), ("c", 1.0)])),
                ("c".to_owned(), costs(&[("b", 1.0), ("me", 5.0)])),
            ]),
            advertisements: ads,
        }
    }

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).expect("a CIDR")
    }

    #[test]
    fn routes_come_from_reachable_routers_of_the_network_most_specific_first() {
        let st = status(vec![
            ad("me", "net", &[("route_local", "10.0.0.0/30")]),
            ad(
                "b",
                "net",
                &[("route_local", "10.0.0.4/30"), ("route_0", "10.1.0.0/16")],
            ),
            ad(
                "c",
                "net",
                &[
                    ("route_0", "10.1.2.0/24"),
                    ("route_1", "10.1.0.0/16"),
                    ("routex", "junk"),
                ],
            ),
            ad("d", "net", &[("route_0", "10.9.0.0/16")]),
            ad("b", "other", &[("route_0", "10.8.0.0/16")]),
        ]);
        let table = known_routes(&st, "me", "net");
        let got: Vec<(String, &str, f64)> = table
            .iter()
            .map(|r| (r.net.to_string(), r.via.as_str(), r.cost))
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.4/30".to_owned(), "b", 1.0),
                ("10.1.2.0/24".to_owned(), "c", 2.0),
                ("10.1.0.0/16".to_owned(), "b", 1.0),
                ("10.1.0.0/16".to_owned(), "c", 2.0),
            ]
        );
        let lookup = |ip: &str| {
            let ip: IpAddr = ip.parse().expect("an address");
            table
                .iter()
                .find(|r| r.net.contains(ip))
                .map(|r| r.via.as_str())
        };
        assert_eq!(lookup("10.1.2.3"), Some("c"));
        assert_eq!(lookup("10.1.9.9"), Some("b"));
        assert_eq!(
            lookup("10.0.0.1"),
            None,
            "own routes are not routed to the mesh"
        );
        assert_eq!(lookup("10.9.0.1"), None, "d is not in the routing table");
        assert!(table.iter().all(|r| r.net != cidr("10.8.0.0/16")));
    }

    #[test]
    fn destinations_of_ipv4_and_ipv6_packets() {
        let mut v4 = vec![0x45u8; 20];
        v4[16..20].copy_from_slice(&[198, 18, 0, 5]);
        assert_eq!(destination(&v4), Some("198.18.0.5".parse().expect("v4")));
        assert_eq!(destination(&v4[..19]), None);
        let mut v6 = vec![0x60u8; 40];
        let dst: Ipv6Addr = "2001:db8::1".parse().expect("v6");
        v6[24..40].copy_from_slice(&dst.octets());
        assert_eq!(destination(&v6), Some(IpAddr::V6(dst)));
        assert_eq!(destination(&v6[..39]), None);
        assert_eq!(destination(&[0x50; 60]), None);
        assert_eq!(destination(&[]), None);
    }
}
