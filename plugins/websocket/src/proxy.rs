//! HTTP proxies for `ws-peer`, chosen from the environment as Go's
//! `http.ProxyFromEnvironment` does (Go receptor's dialer uses it):
//!
//! * `ws://` uses `HTTP_PROXY` (or `http_proxy`), `wss://` uses `HTTPS_PROXY` (or
//!   `https_proxy`); a value without a scheme means `http://`;
//! * `localhost` and loopback addresses are never proxied;
//! * `NO_PROXY` (or `no_proxy`) lists exceptions, comma-separated: `*` (everything),
//!   IP addresses, CIDR ranges, and domain names (`example.com` matches it and its
//!   subdomains, `.example.com` and `*.example.com` only subdomains), each optionally
//!   with `:port`.
//!
//! The tunnel is an HTTP `CONNECT host:port` (with `Proxy-Authorization: Basic` when the
//! proxy URL has a user), as gorilla/websocket opens it; TLS for `wss` and the upgrade
//! then run inside it. Only `http://` proxies are supported.

use std::io;
use std::net::IpAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest proxy response head read before giving up.
const MAX_RESPONSE_HEAD: usize = 8192;

/// A proxy to tunnel through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The proxy's host (IPv6 without brackets) and port.
    pub host: String,
    /// The proxy's port.
    pub port: u16,
    /// `user:password`, base64-encoded, for `Proxy-Authorization: Basic`.
    pub auth: Option<String>,
}

/// The proxy for a connection to `host:port` from the process environment.
pub fn from_env(secure: bool, host: &str, port: u16) -> Result<Option<Proxy>, String> {
    choose(|name| std::env::var(name).ok(), secure, host, port)
}

/// The proxy for a connection to `host:port`, reading variables through `env`.
pub fn choose(
    env: impl Fn(&str) -> Option<String>,
    secure: bool,
    host: &str,
    port: u16,
) -> Result<Option<Proxy>, String> {
    let any = |names: [&str; 2]| names.iter().find_map(|n| env(n).filter(|v| !v.is_empty()));
    let value = if secure {
        any(["HTTPS_PROXY", "https_proxy"])
    } else {
        any(["HTTP_PROXY", "http_proxy"])
    };
    let Some(value) = value else {
        return Ok(None);
    };
    let host = host.to_ascii_lowercase();
    if host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return Ok(None);
    }
    let no_proxy = any(["NO_PROXY", "no_proxy"]).unwrap_or_default();
    if no_proxy
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .any(|e| excepted(&e, &host, port))
    {
        return Ok(None);
    }
    parse_proxy_url(&value).map(Some)
}

/// Whether one `NO_PROXY` entry covers `host:port`.
fn excepted(entry: &str, host: &str, port: u16) -> bool {
    if entry == "*" {
        return true;
    }
    if let Some((net, bits)) = entry.split_once('/') {
        return match (
            host.parse::<IpAddr>(),
            net.parse::<IpAddr>(),
            bits.parse::<u32>(),
        ) {
            (Ok(ip), Ok(net), Ok(bits)) => in_cidr(ip, net, bits),
            _ => false,
        };
    }
    let (name, entry_port) = split_host_port(entry);
    if entry_port.is_some_and(|p| p.parse() != Ok(port)) {
        return false;
    }
    if let (Ok(a), Ok(b)) = (name.parse::<IpAddr>(), host.parse::<IpAddr>()) {
        return a == b;
    }
    let name = name.strip_prefix('*').unwrap_or(name);
    match name.strip_prefix('.') {
        Some(_) => host.ends_with(name),
        None => host == name || host.ends_with(&format!(".{name}")),
    }
}

/// `host[:port]` as host and port text, where host may be a bracketed IPv6 address.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((h, after)) = rest.split_once(']') {
            return (h, after.strip_prefix(':'));
        }
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// `[http://][user[:password]@]host[:port][/...]`.
fn parse_proxy_url(value: &str) -> Result<Proxy, String> {
    let bad = |why: &str| format!("proxy {value:?}: {why}");
    let rest = match value.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => return Err(bad(&format!("{scheme} proxies are not supported"))),
        None => value,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (host, port) = split_host_port(hostport);
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let port = match port {
        None => 80,
        Some(p) => p.parse().map_err(|_| bad(&format!("bad port {p:?}")))?,
    };
    Ok(Proxy {
        host: host.to_owned(),
        port,
        auth: userinfo.map(|u| base64(&percent_decode(u))),
    })
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn base64(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Opens a tunnel to `host:port` through `proxy`.
pub async fn connect(proxy: &Proxy, host: &str, port: u16) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect((proxy.host.as_str(), proxy.port)).await?;
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(auth) = &proxy.auth {
        req.push_str(&format!("Proxy-Authorization: Basic {auth}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    // Read the response head byte by byte: nothing after it may be consumed here.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_RESPONSE_HEAD || s.read(&mut byte).await? == 0 {
            return Err(io::Error::other(
                "proxy closed the connection or sent too much",
            ));
        }
        head.push(byte[0]);
    }
    let status_line =
        String::from_utf8_lossy(head.split(|&b| b == b'\r').next().unwrap_or(&[])).into_owned();
    let status = status_line.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(io::Error::other(format!(
            "proxy refused the tunnel: {status_line}"
        )));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn proxies_come_from_the_environment_like_go() {
        let e = env(&[
            ("HTTP_PROXY", "proxy.example:3128"),
            ("https_proxy", "http://user:p%40ss@[2001:db8::1]:8443/"),
            (
                "no_proxy",
                "internal.example, .corp.example,10.0.0.0/8,192.0.2.7:9000",
            ),
        ]);
        let p = choose(&e, false, "mesh.example", 80).unwrap().unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.auth),
            ("proxy.example", 3128, None)
        );
        let p = choose(&e, true, "mesh.example", 443).unwrap().unwrap();
        assert_eq!((p.host.as_str(), p.port), ("2001:db8::1", 8443));
        assert_eq!(p.auth.as_deref(), Some("dXNlcjpwQHNz")); // user:p@ss
        for (host, port) in [
            ("localhost", 80),
            ("127.0.0.1", 80),
            ("::1", 80),
            ("internal.example", 80),
            ("a.internal.example", 80),
            ("b.corp.example", 80),
            ("10.1.2.3", 80),
            ("192.0.2.7", 9000),
        ] {
            assert_eq!(
                choose(&e, false, host, port).unwrap(),
                None,
                "{host}:{port}"
            );
        }
        for (host, port) in [("corp.example", 80), ("192.0.2.7", 80), ("11.0.0.1", 80)] {
            assert!(
                choose(&e, false, host, port).unwrap().is_some(),
                "{host}:{port}"
            );
        }
        assert_eq!(choose(env(&[]), true, "mesh.example", 443).unwrap(), None);
        let star = env(&[("HTTP_PROXY", "p:1"), ("NO_PROXY", "*")]);
        assert_eq!(choose(star, false, "mesh.example", 80).unwrap(), None);
        let socks = env(&[("HTTP_PROXY", "socks5://p:1")]);
        assert!(choose(socks, false, "mesh.example", 80).is_err());
        let bad = env(&[("HTTP_PROXY", "p:port")]);
        assert!(choose(bad, false, "mesh.example", 80).is_err());
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(
            base64(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn tunnels_through_connect() {
        use std::io::{BufRead, BufReader, Write};
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = proxy.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for answer in [
                "HTTP/1.1 200 Connection established\r\n\r\ntunnelled",
                "HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
            ] {
                let (s, _) = proxy.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut head = String::new();
                while !head.ends_with("\r\n\r\n") {
                    r.read_line(&mut head).unwrap();
                }
                requests.push(head);
                (&s).write_all(answer.as_bytes()).unwrap();
            }
            requests
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let p = Proxy {
            host: "127.0.0.1".into(),
            port,
            auth: Some("dTpw".into()),
        };
        rt.block_on(async {
            let mut s = connect(&p, "mesh.example", 8080).await.unwrap();
            let mut rest = [0u8; 9];
            s.read_exact(&mut rest).await.unwrap();
            assert_eq!(
                &rest, b"tunnelled",
                "bytes after the head belong to the tunnel"
            );
            let e = connect(&p, "::1", 1).await.unwrap_err();
            assert!(e.to_string().contains("407"), "{e}");
        });
        let requests = server.join().unwrap();
        assert_eq!(
            requests[0],
            "CONNECT mesh.example:8080 HTTP/1.1\r\nHost: mesh.example:8080\r\nProxy-Authorization: Basic dTpw\r\n\r\n"
        );
        assert!(requests[1].starts_with("CONNECT [::1]:1 HTTP/1.1\r\n"));
    }
}
