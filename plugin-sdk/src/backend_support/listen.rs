//! The address keys of listener sections, and binding them.
//!
//! Every receptor listener (`tcp-listener`, `udp-listener`, `ws-listener`) takes
//! `bindaddr` (default `0.0.0.0`) and a required `port`, and reports a bad address or a
//! failed bind with the section's kind in front.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use crate::{PluginError, Section};

/// Where a listener section asks to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddress {
    /// The section's kind (`tcp-listener`, ...), for error messages.
    pub kind: &'static str,
    /// `bindaddr`, `0.0.0.0` when absent.
    pub bindaddr: String,
    /// `port`.
    pub port: u16,
}

impl ListenAddress {
    /// Reads `bindaddr` and the required `port` of a `kind` section.
    pub fn from_section(kind: &'static str, section: &Section) -> Result<Self, PluginError> {
        let bindaddr = section
            .string("bindaddr")?
            .unwrap_or_else(|| "0.0.0.0".to_owned());
        let port = section
            .port("port")?
            .ok_or_else(|| PluginError::new(format!("{kind}: missing required key \"port\"")))?;
        Ok(ListenAddress {
            kind,
            bindaddr,
            port,
        })
    }

    /// Resolves the address and binds the first of its socket addresses that `bind`
    /// accepts (as std's `bind` functions do with a slice).
    pub fn bind<T>(
        &self,
        bind: impl FnOnce(&[SocketAddr]) -> io::Result<T>,
    ) -> Result<T, PluginError> {
        let ListenAddress {
            kind,
            bindaddr,
            port,
        } = self;
        let addrs: Vec<_> = (bindaddr.as_str(), *port)
            .to_socket_addrs()
            .map_err(|e| PluginError::new(format!("{kind}: bad bindaddr {bindaddr:?}: {e}")))?
            .collect();
        bind(&addrs[..]).map_err(|e| {
            PluginError::new(format!("{kind}: cannot listen on {bindaddr}:{port}: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn section(pairs: &[(&str, serde_json::Value)]) -> Section {
        let map: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        Section::from_value("x-listener", map.into()).unwrap()
    }

    #[test]
    fn bindaddr_defaults_and_port_is_required() {
        let a = ListenAddress::from_section("x-listener", &section(&[("port", 0.into())])).unwrap();
        assert_eq!((a.bindaddr.as_str(), a.port), ("0.0.0.0", 0));
        let e = ListenAddress::from_section("x-listener", &section(&[])).unwrap_err();
        assert_eq!(e.to_string(), "x-listener: missing required key \"port\"");
    }

    #[test]
    fn binds_or_reports_the_address() {
        let a = ListenAddress::from_section(
            "x-listener",
            &section(&[("bindaddr", "127.0.0.1".into()), ("port", 0.into())]),
        )
        .unwrap();
        let l = a.bind(|addrs| TcpListener::bind(addrs)).unwrap();
        assert!(l.local_addr().unwrap().ip().is_loopback());
        let taken = l.local_addr().unwrap().port();
        let busy = ListenAddress {
            port: taken,
            ..a.clone()
        };
        let e = busy.bind(|addrs| TcpListener::bind(addrs)).unwrap_err();
        let want = format!("x-listener: cannot listen on 127.0.0.1:{taken}: ");
        assert!(e.to_string().starts_with(&want), "{e}");
        let bad = ListenAddress {
            bindaddr: "no such host.invalid".into(),
            ..a
        };
        let e = bad.bind(|addrs| TcpListener::bind(addrs)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("x-listener: bad bindaddr \"no such host.invalid\": "),
            "{e}"
        );
    }
}
