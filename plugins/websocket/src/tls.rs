//! TLS for `wss`: rustls configurations built from receptor's `tls-server` and
//! `tls-client` settings.
//!
//! A TCP backend's TLS is the core's business, but a websocket's TLS sits under HTTP, so
//! this plugin does it. The section keeps `tls` as written (the name of a `tls-server` or
//! `tls-client` config) and the core adds `tlsconfig`, that named config's fields as an
//! object. Read here, as Go receptor 1.6.9 applies them:
//!
//! * server (`ws-listener`): `cert`, `key` (PEM files, required), `requireclientcert`,
//!   `clientcas` (PEM bundle), `pinnedclientcert` (list), `mintls13` (default true).
//!   With `requireclientcert` or `clientcas` a client certificate is verified against
//!   `clientcas` (the system roots if absent) for client authentication, and it is
//!   required in both cases: receptor's verify callback refuses a handshake without
//!   one even where Go's own mode would let it through. Pins apply only then.
//! * client (`ws-peer`): `cert`, `key` (both or neither), `rootcas` (instead of the
//!   system roots), `insecureskipverify` (no check at all, pins included),
//!   `pinnedservercert` (list), `mintls13` (default true). The server's name is the
//!   host of the URL. A `wss` URL without a config uses the system roots.
//! * Pins are hex SHA-256 or SHA-512 fingerprints (colons allowed) of the peer's leaf
//!   certificate; any match suffices.
//! * `mintls13 = false` allows TLS 1.2 too. No ALPN but `http/1.1` is ever offered: the
//!   upgrade needs HTTP/1.1, and a Go server would otherwise pick `h2`.
//!
//! Other keys (`name`, `skipreceptornamescheck`, ...) are the core's and ignored.

use std::sync::Arc;

use receptor_plugin_sdk::{PluginError, Section};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};
use serde_json::Value;

/// The only application protocol offered or accepted.
const ALPN_HTTP11: &[u8] = b"http/1.1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 only.
static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

fn versions(min_tls13: bool) -> &'static [&'static SupportedProtocolVersion] {
    if min_tls13 {
        TLS13_ONLY
    } else {
        rustls::DEFAULT_VERSIONS
    }
}

fn err(what: impl std::fmt::Display) -> PluginError {
    PluginError::new(what.to_string())
}

/// The `tlsconfig` object of a section as a [`Section`] (for its lenient accessors), or
/// `None` when the section has no TLS. A `tls` name without `tlsconfig` is an error.
fn tls_section(section: &Section, what: &str) -> Result<Option<Section>, PluginError> {
    let name = section.string("tls")?.filter(|n| !n.is_empty());
    match (section.get("tlsconfig"), name) {
        (Some(v @ Value::Object(_)), name) => {
            let label = match name {
                Some(n) => format!("{}: {what} {n:?}", section.kind()),
                None => format!("{}: {what}", section.kind()),
            };
            Section::from_value(&label, v.clone()).map(Some)
        }
        (Some(_), _) => Err(err(format!(
            "{}: key \"tlsconfig\": expected a map of {what} settings",
            section.kind()
        ))),
        (None, Some(name)) => Err(err(format!(
            "{}: {what} config {name:?} was not passed to the plugin (no \"tlsconfig\")",
            section.kind()
        ))),
        (None, None) => Ok(None),
    }
}

/// The server configuration of a `ws-listener` section, `None` without TLS.
pub fn server_config(section: &Section) -> Result<Option<Arc<ServerConfig>>, PluginError> {
    let Some(t) = tls_section(section, "tls-server")? else {
        return Ok(None);
    };
    let ctx = |e: &dyn std::fmt::Display| err(format!("{}: {e}", t.kind()));
    let certs = load_certs(&t.required_string("cert")?).map_err(|e| ctx(&e))?;
    let key = load_key(&t.required_string("key")?).map_err(|e| ctx(&e))?;
    let require = t.bool("requireclientcert")?.unwrap_or(false);
    let clientcas = t.string("clientcas")?.filter(|s| !s.is_empty());
    let pins = fingerprints(&t, "pinnedclientcert")?;
    let min13 = t.bool("mintls13")?.unwrap_or(true);

    let provider = provider();
    let verifier: Arc<dyn ClientCertVerifier> = if require || clientcas.is_some() {
        let roots = match &clientcas {
            Some(path) => load_roots(path).map_err(|e| ctx(&e))?,
            None => system_roots().map_err(|e| ctx(&e))?,
        };
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| ctx(&e))?;
        if pins.is_empty() {
            inner
        } else {
            Arc::new(PinnedClient { inner, pins })
        }
    } else {
        WebPkiClientVerifier::no_client_auth()
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(min13))
        .map_err(|e| ctx(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| ctx(&e))?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The client configuration of a `ws-peer` section. Without `tlsconfig`: the system
/// roots, TLS 1.2 or 1.3, no client certificate (Go's default for `wss`).
pub fn client_config(section: &Section) -> Result<Arc<ClientConfig>, PluginError> {
    let t = tls_section(section, "tls-client")?;
    let kind = t
        .as_ref()
        .map_or_else(|| section.kind().to_owned(), |t| t.kind().to_owned());
    let ctx = |e: &dyn std::fmt::Display| err(format!("{kind}: {e}"));
    let get = |key: &str| -> Result<Option<String>, PluginError> {
        Ok(match &t {
            Some(t) => t.string(key)?.filter(|s| !s.is_empty()),
            None => None,
        })
    };
    let flag = |key: &str| -> Result<Option<bool>, PluginError> {
        match &t {
            Some(t) => t.bool(key),
            None => Ok(None),
        }
    };
    let (cert, key, rootcas) = (get("cert")?, get("key")?, get("rootcas")?);
    let insecure = flag("insecureskipverify")?.unwrap_or(false);
    let min13 = match &t {
        Some(_) => flag("mintls13")?.unwrap_or(true),
        None => false,
    };
    let pins = match &t {
        Some(t) => fingerprints(t, "pinnedservercert")?,
        None => Vec::new(),
    };

    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = if insecure {
        Arc::new(AcceptAnyServer {
            provider: provider.clone(),
        })
    } else {
        let roots = match &rootcas {
            Some(path) => load_roots(path).map_err(|e| ctx(&e))?,
            None => system_roots().map_err(|e| ctx(&e))?,
        };
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| ctx(&e))?;
        if pins.is_empty() {
            inner
        } else {
            Arc::new(PinnedServer { inner, pins })
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(min13))
        .map_err(|e| ctx(&e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (cert, key) {
        (Some(cert), Some(key)) => {
            let certs = load_certs(&cert).map_err(|e| ctx(&e))?;
            let key = load_key(&key).map_err(|e| ctx(&e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| ctx(&e))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(ctx(&"cert and key must both be supplied or neither")),
    };
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// The name a client checks the server's certificate against: the URL's host.
pub fn server_name(host: &str) -> Result<ServerName<'static>, PluginError> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| err(format!("{host:?} is not a valid TLS server name: {e}")))
}

fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {path}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {path}"));
    }
    Ok(certs)
}

fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read a private key from {path}: {e}"))
}

fn load_roots(path: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(load_certs(path)?);
    if added == 0 {
        return Err(format!("no usable CA certificate in {path}"));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err("no system root certificates found".to_owned());
    }
    Ok(roots)
}

/// Parses pinned fingerprints: a list of (or one) hex strings, colons allowed, of 32
/// (SHA-256) or 64 (SHA-512) bytes.
fn fingerprints(t: &Section, key: &str) -> Result<Vec<Vec<u8>>, PluginError> {
    let values: Vec<&Value> = match t.get(key) {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(v) => vec![v],
    };
    values
        .into_iter()
        .map(|v| {
            let s = v.as_str().ok_or_else(|| {
                err(format!(
                    "{}: key {key:?}: expected hex fingerprints",
                    t.kind()
                ))
            })?;
            parse_fingerprint(s)
                .map_err(|why| err(format!("{}: key {key:?}: {s:?}: {why}", t.kind())))
        })
        .collect()
}

fn parse_fingerprint(s: &str) -> Result<Vec<u8>, &'static str> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b':').collect();
    if !hex.len().is_multiple_of(2) {
        return Err("not a hex string");
    }
    let digit = |b: u8| (b as char).to_digit(16).ok_or("not a hex string");
    let bytes = hex
        .chunks(2)
        .map(|p| Ok((digit(p[0])? * 16 + digit(p[1])?) as u8))
        .collect::<Result<Vec<u8>, &'static str>>()?;
    if bytes.len() != 32 && bytes.len() != 64 {
        return Err("fingerprints must be 32 or 64 bytes for sha256 or sha512");
    }
    Ok(bytes)
}

/// Whether the leaf certificate's SHA-256 or SHA-512 fingerprint is one of `pins`.
fn pinned(pins: &[Vec<u8>], cert: &CertificateDer<'_>) -> bool {
    pins.iter().any(|pin| {
        let algorithm = if pin.len() == 32 {
            &ring::digest::SHA256
        } else {
            &ring::digest::SHA512
        };
        ring::digest::digest(algorithm, cert.as_ref()).as_ref() == pin.as_slice()
    })
}

fn not_pinned() -> rustls::Error {
    rustls::Error::General("presented certificate does not match any pinned fingerprint".into())
}

/// The handshake-signature methods of a verifier that wraps another (`inner`) and only
/// adds checks of the certificate itself: signatures are the inner verifier's business.
macro_rules! handshake_signatures_of_inner {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}

/// Standard verification, then the pins.
#[derive(Debug)]
struct PinnedServer {
    inner: Arc<WebPkiServerVerifier>,
    pins: Vec<Vec<u8>>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        if pinned(&self.pins, end_entity) {
            Ok(verified)
        } else {
            Err(not_pinned())
        }
    }

    handshake_signatures_of_inner!();
}

/// `insecureskipverify`: any certificate, but the handshake signatures must still match it.
#[derive(Debug)]
struct AcceptAnyServer {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Client-certificate verification, then the pins.
#[derive(Debug)]
struct PinnedClient {
    inner: Arc<dyn ClientCertVerifier>,
    pins: Vec<Vec<u8>>,
}

impl ClientCertVerifier for PinnedClient {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if pinned(&self.pins, end_entity) {
            Ok(verified)
        } else {
            Err(not_pinned())
        }
    }

    handshake_signatures_of_inner!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fingerprints_are_hex_of_sha256_or_sha512_length() {
        let h32 = "AB:".repeat(31) + "AB";
        assert_eq!(parse_fingerprint(&h32).unwrap(), vec![0xab; 32]);
        assert_eq!(parse_fingerprint(&"0f".repeat(64)).unwrap(), vec![0x0f; 64]);
        assert!(parse_fingerprint("abc").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
        assert!(parse_fingerprint(&"00".repeat(20)).is_err());
    }

    #[test]
    fn pins_compare_the_leaf_digest() {
        let cert = CertificateDer::from(b"not really a certificate".to_vec());
        let sha256 = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
        let sha512 = ring::digest::digest(&ring::digest::SHA512, cert.as_ref());
        assert!(pinned(&[sha256.as_ref().to_vec()], &cert));
        assert!(pinned(&[vec![0; 32], sha512.as_ref().to_vec()], &cert));
        assert!(!pinned(&[vec![0; 32]], &cert));
    }

    #[test]
    fn a_tls_name_needs_its_config() {
        let s = Section::from_value("ws-listener", json!({"port": 1, "tls": "srv"})).unwrap();
        let e = server_config(&s).unwrap_err().to_string();
        assert!(e.contains("\"srv\"") && e.contains("tlsconfig"), "{e}");
        let s = Section::from_value("ws-listener", json!({"port": 1})).unwrap();
        assert!(server_config(&s).unwrap().is_none());
        let s = Section::from_value(
            "ws-listener",
            json!({"tls": "srv", "tlsconfig": {"cert": "/nonexistent.pem", "key": "/nonexistent.key"}}),
        )
        .unwrap();
        let e = server_config(&s).unwrap_err().to_string();
        assert!(
            e.contains("tls-server \"srv\"") && e.contains("/nonexistent.pem"),
            "{e}"
        );
        let s = Section::from_value(
            "ws-peer",
            json!({"tls": "cli", "tlsconfig": {"cert": "/x.pem"}}),
        )
        .unwrap();
        let e = client_config(&s).unwrap_err().to_string();
        assert!(e.contains("both be supplied or neither"), "{e}");
        let s = Section::from_value(
            "ws-peer",
            json!({"tlsconfig": {"insecureskipverify": "yes", "pinnedservercert": ["12"]}}),
        )
        .unwrap();
        let e = client_config(&s).unwrap_err().to_string();
        assert!(
            e.contains("pinnedservercert") && e.contains("32 or 64"),
            "{e}"
        );
    }
}
