//! # receptor-tls
//!
//! TLS for receptor: the named `tls-server` and `tls-client` configurations, node-ID
//! certificates and the certificate commands. One implementation for every user: the
//! core (TLS-TCP backends, the control service, QUIC streams) and backend plugins that
//! run TLS themselves (the websocket plugin, where TLS sits below HTTP), so a fix to
//! certificate checking reaches every backend at once.
//!
//! * [`section`]: reading a section's values (typed YAML or command-line strings);
//! * [`san`]: the subjectAltName as receptor writes and reads it (ReceptorName node IDs);
//!   every certificate parse of this crate goes through it;
//! * [`certs`]: `--cert-init`, `--cert-makereq`, `--cert-signreq`;
//! * this module: the rustls configurations.
//!
//! A node's configuration defines TLS settings by name; backends (`tcp-listener`,
//! `ws-peer`, ...), the control service and streams with user TLS (QUIC ConnType 2)
//! refer to them by that name. [`TlsRegistry`] builds rustls configurations from the
//! sections (JSON objects with lower-cased keys) with Go receptor 1.6.9's semantics:
//!
//! * `mintls13` (default **true**): TLS 1.3 only; when false TLS 1.2 is allowed with
//!   Go's restricted suite and curve lists (ECDHE-RSA-AES256-GCM-SHA384,
//!   ECDHE-RSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES128-GCM-SHA256; P-384, P-256 —
//!   P-521 and the static-RSA suite are not available in rustls).
//! * Server client-auth: `requireclientcert` or `clientcas` → a client certificate is
//!   verified against `clientcas` (system roots if unset) with EKU clientAuth and the
//!   `pinnedclientcert` fingerprints. Go 1.6.9 refuses certificate-less clients in
//!   both modes (its verify callback fails with "peer certificate missing"), so this
//!   module makes the certificate mandatory in both.
//! * Client: chain against `rootcas` (system roots if unset) with EKU serverAuth, the
//!   DNS name or IP dialled, then `pinnedservercert`; `insecureskipverify` disables
//!   every check, pins included.
//! * Start-up: the node's own certificate must carry the node ID as a ReceptorName
//!   (otherName 1.3.6.1.4.1.2312.19.1) unless `skipreceptornamescheck`.
//! * QUIC ConnType 2 (section 8.4 of the wire spec): ALPN `netceptor`; the client
//!   requires the target node ID as ReceptorName and checks no DNS name
//!   ([`ClientTls::quic_config`]); a server with `requireclientcert` requires the
//!   client node ID as ReceptorName and checks no pins
//!   ([`ServerTls::quic_config_for_peer`]).
//!
//! * QUIC ConnType 1 (no user TLS, section 8.3): [`insecure_server_config`] and
//!   [`insecure_client_config`].
//!
//! Beyond 1.6.9, [`ServerTls::check_peer_node`] / [`ClientTls::check_peer_node`] let
//! the mesh compare a backend peer's certificate with the node ID the peer announces
//! in its first ROUTE message (disabled by `skipreceptornamescheck`).

pub mod certs;
mod der;
mod insecure;
pub mod san;
pub mod section;
mod verify;

pub use insecure::{
    insecure_client_config, insecure_server_config, InsecureKeyType, TlsSetupError,
    INSECURE_COMMON_NAME, INSECURE_REFUSAL,
};

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use rustls::crypto::{ring as ring_provider, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};
use serde_json::Value;
use x509_parser::prelude::{FromDer, X509Certificate};

use section::{Section, SectionError};
use verify::{InsecureServerVerifier, Pins, ReceptorClientVerifier, ReceptorServerVerifier};

/// The ALPN protocol of receptor's QUIC streams.
pub const NETCEPTOR_ALPN: &[u8] = b"netceptor";

/// Errors building or using TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A section parameter is missing or malformed.
    #[error("error in {kind} {name}: {source}")]
    Section {
        /// `tls-server` or `tls-client`.
        kind: &'static str,
        /// The configuration's name (may be empty if that is what is missing).
        name: String,
        /// What is wrong.
        source: SectionError,
    },
    /// A file could not be read.
    #[error("open {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file's content is not usable (bad PEM, no certificate, bad key, ...).
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The node's own certificate does not name the node (start-up check).
    #[error(
        "nodeID={node_id} not found in certificate name(s); names found=[{}]; cfg section={section}; server cert={cert}",
        found.join(" ")
    )]
    NodeIdNotInCert {
        /// This node's ID.
        node_id: String,
        /// ReceptorNames in the certificate.
        found: Vec<String>,
        /// The configuration's name.
        section: String,
        /// The certificate file.
        cert: String,
    },
    /// A pinned fingerprint is malformed.
    #[error("error decoding fingerprints: {0}")]
    Fingerprint(String),
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("{0}")]
    Rustls(String),
    /// System root certificates were needed but none were found.
    #[error("no system root certificates found: configure {0}")]
    NoSystemRoots(&'static str),
    /// No `tls-server` or `tls-client` configuration has this name.
    #[error("unknown TLS config {0}")]
    Unknown(String),
    /// A certificate could not be parsed.
    #[error("{0}")]
    Certificate(String),
    /// The peer's certificate does not carry the node ID it announced.
    #[error("{0}")]
    PeerNodeMismatch(String),
    /// A `tls-client` names a certificate without its key or the reverse.
    #[error("cert and key must both be supplied or neither")]
    CertWithoutKey,
}

/// Whose section is being built, and so which checks it gets.
#[derive(Debug, Clone, Copy)]
enum Checked<'a> {
    /// The node's own configuration: `name`, `cert` and `key` are required and the
    /// certificate must name node `.0` (unless `skipreceptornamescheck`).
    Node(&'a str),
    /// A section the core has already checked and handed to a backend plugin: no name
    /// is required and a `tls-client` may have no certificate (both or neither).
    ByCore,
}

/// Go's wording for a ReceptorName mismatch.
fn name_mismatch_message(found: &[String], expected: &str) -> String {
    match found.len() {
        0 => format!("x509: certificate is not valid for any Receptor node IDs, but wanted to match {expected}"),
        1 => format!("x509: certificate is valid for Receptor node ID {}, not {expected}", found[0]),
        _ => format!("x509: certificate is valid for Receptor node IDs {}, not {expected}", found.join(", ")),
    }
}

/// The ReceptorName node IDs (otherName 1.3.6.1.4.1.2312.19.1) in a certificate's
/// subjectAltName, in order. A malformed subjectAltName is an error.
pub fn receptor_names(cert_der: &[u8]) -> Result<Vec<String>, TlsError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| TlsError::Certificate(format!("x509: malformed certificate: {e}")))?;
    let mut names = Vec::new();
    for ext in cert.extensions() {
        if ext.oid.to_id_string() == "2.5.29.17" {
            let san = san::parse_san(ext.value)
                .map_err(|e| TlsError::Certificate(format!("x509: {e}")))?;
            names.extend(san.node_ids);
        }
    }
    Ok(names)
}

/// Checks that `peer_certs` (leaf first) names `announced` as a ReceptorName.
/// No certificate (the peer was not asked for one) passes.
fn check_peer(
    skip: bool,
    peer_certs: Option<&[CertificateDer<'_>]>,
    announced: &str,
) -> Result<(), TlsError> {
    if skip {
        return Ok(());
    }
    let Some(leaf) = peer_certs.and_then(|c| c.first()) else {
        return Ok(());
    };
    let names = receptor_names(leaf)?;
    if names.iter().any(|n| n == announced) {
        Ok(())
    } else {
        Err(TlsError::PeerNodeMismatch(name_mismatch_message(
            &names, announced,
        )))
    }
}

/// The crypto provider for a `mintls13` setting.
pub fn provider(min_tls13: bool) -> Arc<CryptoProvider> {
    let base = ring_provider::default_provider();
    if min_tls13 {
        return Arc::new(base);
    }
    use ring_provider::cipher_suite as cs;
    use ring_provider::kx_group;
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![kx_group::SECP384R1, kx_group::SECP256R1],
        ..base
    })
}

fn versions(min_tls13: bool) -> &'static [&'static SupportedProtocolVersion] {
    static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
    static TLS12_UP: &[&SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    if min_tls13 {
        TLS13_ONLY
    } else {
        TLS12_UP
    }
}

fn read_file(path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_string(),
        source,
    })
}

fn file_err(path: &str, reason: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// All `CERTIFICATE` blocks of a PEM file (other blocks are skipped, like Go).
fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path)?;
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        certs.push(item.map_err(|e| file_err(path, format!("malformed PEM: {e}")))?);
    }
    if certs.is_empty() {
        return Err(file_err(path, "no PEM \"CERTIFICATE\" block found"));
    }
    for (i, c) in certs.iter().enumerate() {
        X509Certificate::from_der(c)
            .map_err(|e| file_err(path, format!("certificate #{} is malformed: {e}", i + 1)))?;
    }
    Ok(certs)
}

fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            file_err(path, "no PEM private key block found")
        }
        e => file_err(path, format!("malformed PEM: {e}")),
    })
}

/// A root store from a CA bundle file; it must hold at least one usable certificate.
fn load_roots(path: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| file_err(path, format!("unusable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// The system's root certificates (loaded once).
fn system_roots(param: &'static str) -> Result<Arc<RootCertStore>, TlsError> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let _ = store.add_parsable_certificates(found.certs);
        Arc::new(store)
    });
    if roots.is_empty() {
        Err(TlsError::NoSystemRoots(param))
    } else {
        Ok(roots.clone())
    }
}

/// Loads the node's certificate and key, checks they match and (unless skipped) that
/// the certificate names the node.
fn load_identity(
    provider: &CryptoProvider,
    cert_path: &str,
    key_path: &str,
    node_id: Option<&str>,
    section_name: &str,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = load_certs(cert_path)?;
    let key = load_key(key_path)?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Rustls(format!(
            "tls: private key in {key_path} does not match the certificate in {cert_path}"
        )),
        e => file_err(key_path, format!("unusable private key: {e}")),
    })?;
    if let Some(node_id) = node_id {
        let leaf = certified
            .cert
            .first()
            .map(|c| c.as_ref())
            .unwrap_or_default();
        let found = receptor_names(leaf).map_err(|e| file_err(cert_path, e.to_string()))?;
        if !found.iter().any(|n| n == node_id) {
            return Err(TlsError::NodeIdNotInCert {
                node_id: node_id.to_string(),
                found,
                section: section_name.to_string(),
                cert: cert_path.to_string(),
            });
        }
    }
    Ok(Arc::new(certified))
}

/// A single certificate for every connection.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl rustls::client::ResolvesClientCert for FixedCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// How a server authenticates clients.
#[derive(Debug, Clone)]
enum ClientAuth {
    None,
    /// `clientcas` only (Go: VerifyClientCertIfGiven, effectively required).
    IfGiven(Arc<dyn rustls::server::danger::ClientCertVerifier>),
    /// `requireclientcert`.
    Required(Arc<dyn rustls::server::danger::ClientCertVerifier>),
}

/// What every server configuration of one `tls-server` section shares.
#[derive(Debug)]
struct ServerParts {
    provider: Arc<CryptoProvider>,
    min_tls13: bool,
    identity: Arc<CertifiedKey>,
    client_auth: ClientAuth,
}

impl ServerParts {
    fn build(
        &self,
        pins: Pins,
        expected_node: Option<String>,
        quic: bool,
    ) -> Result<ServerConfig, TlsError> {
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(versions(self.min_tls13))
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match &self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::IfGiven(inner) | ClientAuth::Required(inner) => builder
                .with_client_cert_verifier(Arc::new(ReceptorClientVerifier {
                    inner: inner.clone(),
                    pins,
                    expected_node,
                })),
        };
        let mut config = builder.with_cert_resolver(Arc::new(FixedCert(self.identity.clone())));
        if quic {
            config.alpn_protocols = vec![NETCEPTOR_ALPN.to_vec()];
            config.max_early_data_size = 0;
        }
        Ok(config)
    }
}

/// Wraps a section problem of `kind` config `name` into a [`TlsError::Section`].
fn section_error(kind: &'static str, name: &str) -> impl Fn(SectionError) -> TlsError {
    let name = name.to_string();
    move |source| TlsError::Section {
        kind,
        name: name.clone(),
        source,
    }
}

/// Opens a `tls-server` or `tls-client` section and reads its `name`: required in a node's
/// own section, optional in one the core has checked.
fn open_section<'a>(
    kind: &'static str,
    checked: Checked<'_>,
    section: &'a Value,
) -> Result<(Section<'a>, String), TlsError> {
    let err = section_error(kind, "");
    let s = Section::new(section).map_err(&err)?;
    let name = match checked {
        Checked::Node(_) => s.required("name").map_err(&err)?,
        Checked::ByCore => s.non_empty("name").map_err(&err)?.unwrap_or_default(),
    };
    Ok((s, name))
}

/// The keys `tls-server` and `tls-client` share (read after each one's own keys), and
/// what they decide.
struct Shared<'a> {
    /// `skipreceptornamescheck`.
    skip: bool,
    /// `mintls13` (default true).
    min_tls13: bool,
    /// The crypto provider for that minimum version.
    provider: Arc<CryptoProvider>,
    /// The node the certificate must name: none when skipped or checked by the core.
    node_id: Option<&'a str>,
}

impl<'a> Shared<'a> {
    fn read(
        s: &Section<'_>,
        e: &impl Fn(SectionError) -> TlsError,
        checked: Checked<'a>,
    ) -> Result<Shared<'a>, TlsError> {
        let skip = s
            .bool("skipreceptornamescheck")
            .map_err(e)?
            .unwrap_or(false);
        let min_tls13 = s.bool("mintls13").map_err(e)?.unwrap_or(true);
        let node_id = match checked {
            Checked::Node(id) if !skip => Some(id),
            _ => None,
        };
        Ok(Shared {
            skip,
            min_tls13,
            provider: provider(min_tls13),
            node_id,
        })
    }
}

/// A built `tls-server` configuration.
#[derive(Debug)]
pub struct ServerTls {
    name: String,
    skip_names_check: bool,
    parts: ServerParts,
    backend: Arc<ServerConfig>,
    quic_shared: Arc<ServerConfig>,
}

impl ServerTls {
    /// Builds a `tls-server` section for node `node_id`.
    ///
    /// Keys: `name`, `cert`, `key` (required), `requireclientcert`, `clientcas`,
    /// `pinnedclientcert`, `skipreceptornamescheck`, `mintls13` (default true).
    pub fn from_section(node_id: &str, section: &Value) -> Result<ServerTls, TlsError> {
        Self::build(Checked::Node(node_id), section)
    }

    /// Builds a `tls-server` section the core has already checked (a backend plugin's
    /// `tlsconfig`): `name` may be absent and the certificate is not compared with the
    /// node ID again.
    pub fn from_checked_section(section: &Value) -> Result<ServerTls, TlsError> {
        Self::build(Checked::ByCore, section)
    }

    fn build(checked: Checked<'_>, section: &Value) -> Result<ServerTls, TlsError> {
        let (s, name) = open_section("tls-server", checked, section)?;
        let e = section_error("tls-server", &name);
        let cert = s.required("cert").map_err(&e)?;
        let key = s.required("key").map_err(&e)?;
        let require = s.bool("requireclientcert").map_err(&e)?.unwrap_or(false);
        let client_cas = s.non_empty("clientcas").map_err(&e)?;
        let pins = s.list("pinnedclientcert").map_err(&e)?;
        let Shared {
            skip,
            min_tls13,
            provider,
            node_id,
        } = Shared::read(&s, &e, checked)?;
        let identity = load_identity(&provider, &cert, &key, node_id, &name)?;
        let pins = Pins::decode(&pins)?;
        let client_auth = if require || client_cas.is_some() {
            let roots = match &client_cas {
                Some(path) => load_roots(path)?,
                None => system_roots("clientcas")?,
            };
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| TlsError::Rustls(format!("client certificate verifier: {e}")))?;
            if require {
                ClientAuth::Required(verifier)
            } else {
                ClientAuth::IfGiven(verifier)
            }
        } else {
            ClientAuth::None
        };
        let parts = ServerParts {
            provider,
            min_tls13,
            identity,
            client_auth,
        };
        let backend = Arc::new(parts.build(pins.clone(), None, false)?);
        let quic_shared = match &parts.client_auth {
            // requireclientcert: a per-peer configuration is built for each QUIC
            // connection; pins are not checked there (as in Go).
            ClientAuth::Required(_) => parts.build(Pins::default(), None, true)?,
            _ => parts.build(pins, None, true)?,
        };
        Ok(ServerTls {
            name,
            skip_names_check: skip,
            parts,
            backend,
            quic_shared: Arc::new(quic_shared),
        })
    }

    /// The configuration's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when clients must present a certificate.
    pub fn requests_client_cert(&self) -> bool {
        !matches!(self.parts.client_auth, ClientAuth::None)
    }

    /// The rustls configuration for backend listeners (TCP, WebSocket) and the
    /// control service's TCP listener. No ALPN.
    pub fn backend_config(&self) -> Arc<ServerConfig> {
        self.backend.clone()
    }

    /// The rustls configuration for a QUIC (ConnType 2) connection from node
    /// `client_node` (ALPN `netceptor`). With `requireclientcert` the client's
    /// certificate must carry `client_node` as ReceptorName (pins are not checked);
    /// otherwise one shared configuration is returned.
    pub fn quic_config_for_peer(&self, client_node: &str) -> Result<Arc<ServerConfig>, TlsError> {
        if !matches!(self.parts.client_auth, ClientAuth::Required(_)) {
            return Ok(self.quic_shared.clone());
        }
        self.parts
            .build(Pins::default(), Some(client_node.to_string()), true)
            .map(Arc::new)
    }

    /// The rustls configuration shared by every QUIC (ConnType 2) client of a mesh
    /// listener (ALPN `netceptor`). With `requireclientcert` it does not know the client's
    /// node: check that with [`ServerTls::check_quic_client`] once the handshake is done.
    pub fn quic_listener_config(&self) -> Arc<ServerConfig> {
        self.quic_shared.clone()
    }

    /// For listeners built with [`ServerTls::quic_listener_config`]: with
    /// `requireclientcert`, the client's certificate chain (leaf first) must carry
    /// `client_node` as ReceptorName; otherwise every client passes.
    pub fn check_quic_client(
        &self,
        chain: &[CertificateDer<'_>],
        client_node: &str,
    ) -> Result<(), TlsError> {
        if !matches!(self.parts.client_auth, ClientAuth::Required(_)) {
            return Ok(());
        }
        if chain.is_empty() {
            return Err(TlsError::PeerNodeMismatch(name_mismatch_message(
                &[],
                client_node,
            )));
        }
        check_peer(false, Some(chain), client_node)
    }

    /// Beyond 1.6.9: checks that a backend client's certificate names the node ID it
    /// announced in its first ROUTE. Passes when `skipreceptornamescheck` is set or
    /// the client presented no certificate.
    pub fn check_peer_node(
        &self,
        peer_certs: Option<&[CertificateDer<'_>]>,
        announced: &str,
    ) -> Result<(), TlsError> {
        check_peer(self.skip_names_check, peer_certs, announced)
    }
}

/// What every client configuration of one `tls-client` section shares.
#[derive(Debug)]
struct ClientParts {
    insecure: bool,
    provider: Arc<CryptoProvider>,
    min_tls13: bool,
    identity: Option<Arc<CertifiedKey>>,
    roots: Option<Arc<RootCertStore>>,
    pins: Pins,
}

impl ClientParts {
    fn build(
        &self,
        check_hostname: bool,
        expected_node: Option<String>,
        quic: bool,
    ) -> Result<ClientConfig, TlsError> {
        let algs = self.provider.signature_verification_algorithms;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
            match (&self.roots, self.insecure) {
                (Some(roots), false) => Arc::new(ReceptorServerVerifier {
                    roots: roots.clone(),
                    pins: self.pins.clone(),
                    check_hostname,
                    expected_node,
                    algs,
                }),
                _ => Arc::new(InsecureServerVerifier { algs }),
            };
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(versions(self.min_tls13))
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.identity {
            Some(id) => builder.with_client_cert_resolver(Arc::new(FixedCert(id.clone()))),
            None => builder.with_no_client_auth(),
        };
        if quic {
            config.alpn_protocols = vec![NETCEPTOR_ALPN.to_vec()];
            config.enable_early_data = false;
        }
        Ok(config)
    }
}

/// A built `tls-client` configuration.
#[derive(Debug)]
pub struct ClientTls {
    name: String,
    skip_names_check: bool,
    parts: ClientParts,
    backend: Arc<ClientConfig>,
}

impl ClientTls {
    /// Builds a `tls-client` section for node `node_id`.
    ///
    /// Keys: `name`, `cert`, `key` (required), `rootcas`, `insecureskipverify`,
    /// `pinnedservercert`, `skipreceptornamescheck`, `mintls13` (default true).
    pub fn from_section(node_id: &str, section: &Value) -> Result<ClientTls, TlsError> {
        Self::build(Checked::Node(node_id), section)
    }

    /// Builds a `tls-client` section the core has already checked (a backend plugin's
    /// `tlsconfig`): `name` may be absent, `cert` and `key` may both be absent (no client
    /// certificate), and the certificate is not compared with the node ID again.
    pub fn from_checked_section(section: &Value) -> Result<ClientTls, TlsError> {
        Self::build(Checked::ByCore, section)
    }

    fn build(checked: Checked<'_>, section: &Value) -> Result<ClientTls, TlsError> {
        let (s, name) = open_section("tls-client", checked, section)?;
        let e = section_error("tls-client", &name);
        let (cert, key) = match checked {
            Checked::Node(_) => (
                Some(s.required("cert").map_err(&e)?),
                Some(s.required("key").map_err(&e)?),
            ),
            Checked::ByCore => (
                s.non_empty("cert").map_err(&e)?,
                s.non_empty("key").map_err(&e)?,
            ),
        };
        let root_cas = s.non_empty("rootcas").map_err(&e)?;
        let insecure = s.bool("insecureskipverify").map_err(&e)?.unwrap_or(false);
        let pins = s.list("pinnedservercert").map_err(&e)?;
        let Shared {
            skip,
            min_tls13,
            provider,
            node_id,
        } = Shared::read(&s, &e, checked)?;
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some(load_identity(&provider, &cert, &key, node_id, &name)?),
            (None, None) => None,
            _ => return Err(TlsError::CertWithoutKey),
        };
        let pins = Pins::decode(&pins)?;
        let roots = match (&root_cas, insecure) {
            (Some(path), _) => Some(load_roots(path)?),
            (None, false) => Some(system_roots("rootcas")?),
            (None, true) => None,
        };
        let parts = ClientParts {
            insecure,
            provider,
            min_tls13,
            identity,
            roots,
            pins,
        };
        Self::assemble(name, skip, parts)
    }

    /// Go's built-in client configuration `default`: system roots, no client
    /// certificate, TLS 1.2 minimum.
    pub fn default_config() -> Result<ClientTls, TlsError> {
        let parts = ClientParts {
            insecure: false,
            provider: provider(false),
            min_tls13: false,
            identity: None,
            roots: Some(system_roots("rootcas")?),
            pins: Pins::default(),
        };
        Self::assemble("default".into(), false, parts)
    }

    fn assemble(
        name: String,
        skip_names_check: bool,
        parts: ClientParts,
    ) -> Result<ClientTls, TlsError> {
        let backend = Arc::new(parts.build(true, None, false)?);
        Ok(ClientTls {
            name,
            skip_names_check,
            parts,
            backend,
        })
    }

    /// The configuration's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when `insecureskipverify` is set.
    pub fn insecure(&self) -> bool {
        self.parts.insecure
    }

    /// The rustls configuration for backend dialers (`tcp-peer`, `ws-peer`): connect
    /// with the dialled host as `ServerName` (DNS name or IP). No ALPN (a wss dialer
    /// sets `http/1.1` on a clone if it wants ALPN).
    pub fn backend_config(&self) -> Arc<ClientConfig> {
        self.backend.clone()
    }

    /// The rustls configuration for a QUIC (ConnType 2) connection to `target_node`:
    /// ALPN `netceptor`, no DNS name check, the server certificate must carry
    /// `target_node` as ReceptorName (unless `insecureskipverify`). Any `ServerName`
    /// may be used for the connection: it is not checked.
    pub fn quic_config(&self, target_node: &str) -> Result<Arc<ClientConfig>, TlsError> {
        self.parts
            .build(false, Some(target_node.to_string()), true)
            .map(Arc::new)
    }

    /// Beyond 1.6.9: checks that a backend server's certificate names the node ID it
    /// announced in its first ROUTE. Passes when `skipreceptornamescheck` or
    /// `insecureskipverify` is set.
    pub fn check_peer_node(
        &self,
        peer_certs: Option<&[CertificateDer<'_>]>,
        announced: &str,
    ) -> Result<(), TlsError> {
        check_peer(
            self.skip_names_check || self.parts.insecure,
            peer_certs,
            announced,
        )
    }
}

/// Named TLS configurations of a node.
#[derive(Debug, Default)]
pub struct TlsRegistry {
    servers: HashMap<String, Arc<ServerTls>>,
    clients: HashMap<String, Arc<ClientTls>>,
    default_client: OnceLock<Result<Arc<ClientTls>, String>>,
}

impl TlsRegistry {
    /// An empty registry (only the built-in client configuration `default`).
    pub fn new() -> TlsRegistry {
        TlsRegistry::default()
    }

    /// Builds every `tls-server` and `tls-client` section for node `node_id`.
    pub fn from_sections(
        node_id: &str,
        servers: &[Value],
        clients: &[Value],
    ) -> Result<TlsRegistry, TlsError> {
        let mut reg = TlsRegistry::new();
        for s in servers {
            reg.add_server(node_id, s)?;
        }
        for c in clients {
            reg.add_client(node_id, c)?;
        }
        Ok(reg)
    }

    /// Adds (or, as in Go, replaces) a `tls-server` configuration.
    pub fn add_server(
        &mut self,
        node_id: &str,
        section: &Value,
    ) -> Result<Arc<ServerTls>, TlsError> {
        let tls = Arc::new(ServerTls::from_section(node_id, section)?);
        self.servers.insert(tls.name().to_string(), tls.clone());
        Ok(tls)
    }

    /// Adds (or, as in Go, replaces) a `tls-client` configuration.
    pub fn add_client(
        &mut self,
        node_id: &str,
        section: &Value,
    ) -> Result<Arc<ClientTls>, TlsError> {
        let tls = Arc::new(ClientTls::from_section(node_id, section)?);
        self.clients.insert(tls.name().to_string(), tls.clone());
        Ok(tls)
    }

    /// The `tls-server` configuration called `name`.
    pub fn server(&self, name: &str) -> Result<Arc<ServerTls>, TlsError> {
        self.servers
            .get(name)
            .cloned()
            .ok_or_else(|| TlsError::Unknown(name.to_string()))
    }

    /// The `tls-client` configuration called `name`; `default` is built in (system
    /// roots, no client certificate) unless the configuration defines its own.
    pub fn client(&self, name: &str) -> Result<Arc<ClientTls>, TlsError> {
        if let Some(c) = self.clients.get(name) {
            return Ok(c.clone());
        }
        if name == "default" {
            return self
                .default_client
                .get_or_init(|| {
                    ClientTls::default_config()
                        .map(Arc::new)
                        .map_err(|e| e.to_string())
                })
                .clone()
                .map_err(TlsError::Rustls);
        }
        Err(TlsError::Unknown(name.to_string()))
    }

    /// Names of the server configurations.
    pub fn server_names(&self) -> impl Iterator<Item = &str> {
        self.servers.keys().map(String::as_str)
    }

    /// Names of the client configurations (without the built-in `default`).
    pub fn client_names(&self) -> impl Iterator<Item = &str> {
        self.clients.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests;
