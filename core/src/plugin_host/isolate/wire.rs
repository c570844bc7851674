//! The protocol between a node and a plugin host process: JSON messages, one per
//! `SOCK_SEQPACKET` record of a unix socketpair (so a record is a whole message), at most
//! [`MAX_MESSAGE`] bytes, with the descriptors a message carries (a unit's stdin and
//! stdout) passed alongside as `SCM_RIGHTS`.

use std::collections::BTreeMap;
#[cfg(test)]
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use receptor_plugin_sdk::describe::{Field, FieldType, SectionDesc};
use serde::{Deserialize, Serialize};

/// The largest message either side sends or accepts (below the default unix socket
/// buffer, so one record always fits).
pub(in crate::plugin_host) const MAX_MESSAGE: usize = 128 * 1024;
/// The most descriptors one message carries.
const MAX_FDS: usize = 2;

/// A request from the node to its plugin host.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub(in crate::plugin_host) enum Request {
    /// Builds work type `work_type` (an id the node chose) from a config section.
    Create {
        /// Request id, echoed in the reply.
        id: u64,
        /// The node's id for the work type.
        work_type: u64,
        /// The section kind.
        kind: String,
        /// The section (keys lower case).
        config: serde_json::Value,
    },
    /// Starts unit `unit` (an id the node chose); carries stdin and stdout descriptors.
    Start {
        /// Request id.
        id: u64,
        /// The work type.
        work_type: u64,
        /// The node's id for the unit.
        unit: u64,
        /// The unit ID.
        unit_id: String,
        /// The unit's folder.
        unit_dir: String,
        /// Runtime parameters.
        params: String,
        /// Other submit parameters.
        extra_params: BTreeMap<String, String>,
    },
    /// Re-attaches to a unit that was running when the previous host ended.
    Reattach {
        /// Request id.
        id: u64,
        /// The work type.
        work_type: u64,
        /// The node's id for the unit.
        unit: u64,
        /// The unit ID.
        unit_id: String,
        /// The unit's folder.
        unit_dir: String,
        /// The unit's last `ExtraData`.
        extra: Option<serde_json::Value>,
    },
    /// Asks a unit to stop.
    Cancel {
        /// Request id.
        id: u64,
        /// The unit.
        unit: u64,
    },
    /// Frees a unit handle (no reply).
    FreeUnit {
        /// The unit.
        unit: u64,
    },
    /// Drops a work type (no reply; destroyed once its units are freed).
    Destroy {
        /// The work type.
        work_type: u64,
    },
}

/// What the host sends the node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub(in crate::plugin_host) enum Event {
    /// First message: the plugin loaded, and what it claims.
    Hello {
        /// Plugin name.
        name: String,
        /// Plugin version.
        version: String,
        /// Plugin ABI (major, minor).
        abi: (u32, u32),
        /// Every claimed section.
        claims: Vec<WireClaim>,
        /// The host's process id.
        pid: u32,
    },
    /// First message instead of `Hello`: the plugin could not be loaded.
    LoadFailed {
        /// Why.
        message: String,
    },
    /// The answer to request `id`.
    Reply {
        /// The request id.
        id: u64,
        /// What the call gave, or its error.
        result: Result<ReplyBody, String>,
    },
    /// A unit's progress (latest wins).
    Progress {
        /// The node's id for the unit.
        unit: u64,
        /// `STATE_*` number.
        state: u32,
        /// Detail.
        detail: String,
        /// `ExtraData`.
        extra: Option<serde_json::Value>,
    },
    /// A log line of the plugin (or of the host process).
    Log {
        /// `LOG_*` level.
        level: u32,
        /// The text.
        message: String,
    },
}

/// The result of a successful call.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(in crate::plugin_host) enum ReplyBody {
    /// A work type was created.
    Created {
        /// Its name.
        name: String,
        /// `verifysignature`.
        verify_signature: bool,
        /// `allowruntimeparams`.
        allow_runtime_params: bool,
    },
    /// The call succeeded (start, reattach, cancel).
    Done,
}

/// One claimed section, as the host describes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(in crate::plugin_host) struct WireClaim {
    /// The section kind.
    pub(in crate::plugin_host) kind: String,
    /// Whether it is a backend (else a work type).
    pub(in crate::plugin_host) backend: bool,
    /// One line of help.
    pub(in crate::plugin_host) help: String,
    /// The fields: name, `FIELD_*` type, required, default, help.
    pub(in crate::plugin_host) fields: Vec<(String, u32, bool, Option<String>, String)>,
    /// The bare command-line field.
    pub(in crate::plugin_host) bare_field: Option<String>,
    /// The version-2 key.
    pub(in crate::plugin_host) v2_key: Option<String>,
    /// Runs its own TLS.
    pub(in crate::plugin_host) own_tls: bool,
}

impl WireClaim {
    /// The wire form of a claim.
    pub(in crate::plugin_host) fn new(kind: &str, backend: bool, desc: &SectionDesc) -> WireClaim {
        WireClaim {
            kind: kind.to_owned(),
            backend,
            help: desc.help.clone(),
            fields: desc
                .fields
                .iter()
                .map(|f| {
                    (
                        f.name.clone(),
                        f.field_type.to_abi(),
                        f.required,
                        f.default.clone(),
                        f.help.clone(),
                    )
                })
                .collect(),
            bare_field: desc.bare_field.clone(),
            v2_key: desc.v2_key.clone(),
            own_tls: desc.own_tls,
        }
    }

    /// The section description it carries.
    pub(in crate::plugin_host) fn desc(&self) -> SectionDesc {
        SectionDesc {
            help: self.help.clone(),
            fields: self
                .fields
                .iter()
                .map(|(name, t, required, default, help)| Field {
                    name: name.to_ascii_lowercase(),
                    field_type: FieldType::from_abi(*t),
                    required: *required,
                    default: default.clone(),
                    help: help.clone(),
                })
                .collect(),
            bare_field: self.bare_field.clone(),
            v2_key: self.v2_key.clone(),
            own_tls: self.own_tls,
        }
    }
}

/// A `SOCK_SEQPACKET` socketpair whose descriptors are close-on-exec.
pub(in crate::plugin_host) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded: the descriptor is new and ours.
    let first = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: likewise.
    let second = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    Ok((first, second))
}

/// Sets how long a send may block (a peer that stopped reading).
pub(in crate::plugin_host) fn set_send_timeout(
    sock: &OwnedFd,
    timeout: std::time::Duration,
) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    // SAFETY: tv is a valid timeval for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends one message with `fds` (their copies stay with the caller, which closes them).
pub(in crate::plugin_host) fn send<T: Serialize>(
    sock: &OwnedFd,
    msg: &T,
    fds: &[RawFd],
) -> io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "message of {} bytes is over the limit of {MAX_MESSAGE}",
                bytes.len()
            ),
        ));
    }
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors",
        ));
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // Room for MAX_FDS descriptors, aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: zeroed msghdr is a valid "no name, no control" header.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if !fds.is_empty() {
        let payload = std::mem::size_of_val(fds);
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(payload as u32) } as usize;
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = space;
        // (The control buffer, 64 bytes, holds one header with MAX_FDS descriptors.)
        // SAFETY: CMSG_FIRSTHDR only reads `hdr`'s control fields set above.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(&hdr) };
        // SAFETY: CMSG_LEN only computes a size.
        let cmsg_len = unsafe { libc::CMSG_LEN(payload as u32) } as usize;
        // SAFETY: cmsg points to the start of the aligned control buffer, which is large
        // enough for one header and its data.
        unsafe {
            cmsg.write(libc::cmsghdr {
                cmsg_len,
                cmsg_level: libc::SOL_SOCKET,
                cmsg_type: libc::SCM_RIGHTS,
            })
        };
        // SAFETY: computes the data address of this header.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        // SAFETY: the buffer has room for the descriptors after the header.
        unsafe { std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), data.cast(), payload) };
    }
    loop {
        // SAFETY: hdr points to the live iovec and control buffer above.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &hdr, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Receives one message and the descriptors it carries (close-on-exec). `Ok(None)` at
/// the end (the peer closed its end).
pub(in crate::plugin_host) fn recv(sock: &OwnedFd) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: zeroed msghdr is a valid "no name, no control" header.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = std::mem::size_of_val(&control);
    let n = loop {
        // SAFETY: hdr points to the live buffers above.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    };
    // SAFETY: `hdr` was just filled by a successful recvmsg.
    let fds = unsafe { receptor_plugin_sdk::spawner::received_fds(&hdr) };
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    if hdr.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 || n > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message over the limit of {MAX_MESSAGE} bytes"),
        ));
    }
    buf.truncate(n);
    Ok(Some((buf, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn messages_carry_descriptors_and_stay_bounded() {
        let (a, b) = socketpair().expect("socketpair");
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(b"payload").expect("write");
        let request = Request::Cancel { id: 7, unit: 9 };
        send(&a, &request, &[file.as_raw_fd()]).expect("send");
        drop(file);
        let (bytes, fds) = recv(&b).expect("recv").expect("a message");
        let got: Request = serde_json::from_slice(&bytes).expect("json");
        assert!(matches!(got, Request::Cancel { id: 7, unit: 9 }));
        assert_eq!(fds.len(), 1);
        let mut passed = File::from(fds.into_iter().next().expect("fd"));
        passed.rewind().expect("rewind");
        let mut text = String::new();
        passed.read_to_string(&mut text).expect("read");
        assert_eq!(text, "payload");

        let big = Event::Log {
            level: 1,
            message: "x".repeat(MAX_MESSAGE),
        };
        assert!(
            send(&a, &big, &[]).is_err(),
            "an oversized message is refused"
        );
        let too_many = [0, 1, 2];
        assert!(send(&a, &Request::FreeUnit { unit: 1 }, &too_many).is_err());

        drop(a);
        assert!(
            recv(&b).expect("end").is_none(),
            "the peer's close is the end"
        );
    }
}
