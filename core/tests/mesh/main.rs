//! Tests of the mesh driver over real sockets: Rust nodes in one process linked by
//! socketpairs, TCP and datagram sockets; peers that send bad input; and mixed
//! meshes with the reference Go receptor 1.6.9.

mod common;
mod interop;
mod local;
mod robustness;
