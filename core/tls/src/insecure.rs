//! TLS for QUIC streams without user TLS (ConnType 1, e.g. the `control` service).
//!
//! The server presents a throw-away self-signed certificate whose subject is
//! `CN=netceptor-insecure-common-name` (serial 1, valid from one minute ago for 24
//! hours, no extensions, as Go receptor makes it); the client accepts any chain that
//! contains a certificate with that common name, ignoring dates, and refuses anything
//! else with "insecure connection to secure service", so a plain client cannot reach a
//! ConnType 2 service. The client sends its own node ID as SNI; the server ignores SNI.
//! Both sides use ALPN `netceptor` and TLS 1.3 only. This gives encryption without
//! authentication.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SerialNumber};
use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ServerConfig};

use crate::{provider, versions, NETCEPTOR_ALPN};

/// Subject common name of the certificate of a ConnType 1 (insecure) service.
pub const INSECURE_COMMON_NAME: &str = "netceptor-insecure-common-name";
/// Refusal reported by a client when the server's certificate is not the insecure one.
pub const INSECURE_REFUSAL: &str = "insecure connection to secure service";

/// A generated insecure identity is reused by new listeners for this long.
const IDENTITY_REUSE: Duration = Duration::from_secs(12 * 3600);

/// Errors while building the TLS configurations of mesh streams.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// Key generation failed.
    #[error("key generation: {0}")]
    KeyGen(String),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("tls config: {0}")]
    Rustls(#[from] rustls::Error),
    /// The configuration lacks a cipher suite QUIC needs.
    #[error("tls config unusable for quic: {0}")]
    Quic(String),
}

/// Key type of the insecure (ConnType 1) server certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InsecureKeyType {
    /// RSA 2048 with sha256WithRSAEncryption, exactly as Go receptor.
    Rsa2048,
    /// ECDSA P-256 (the default): generated in microseconds where RSA-2048 takes most of
    /// a second at start-up, and much cheaper handshakes; Go clients accept it as well
    /// (they only check the common name).
    #[default]
    EcdsaP256,
}

/// A self-signed certificate and its private key.
struct InsecureIdentity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    made: Instant,
}

/// Builds a fresh insecure identity (blocking: RSA key generation takes a while).
fn generate_identity(kind: InsecureKeyType) -> Result<InsecureIdentity, TlsSetupError> {
    let (key_pair, pkcs8) = match kind {
        InsecureKeyType::Rsa2048 => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                .map_err(|e| TlsSetupError::KeyGen(e.to_string()))?;
            let der = key
                .to_pkcs8_der()
                .map_err(|e| TlsSetupError::KeyGen(e.to_string()))?;
            let pkcs8 = PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
            let pair = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_RSA_SHA256)?;
            (pair, pkcs8)
        }
        InsecureKeyType::EcdsaP256 => {
            let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let pkcs8 = PrivatePkcs8KeyDer::from(pair.serialize_der());
            (pair, pkcs8)
        }
    };
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, INSECURE_COMMON_NAME);
    params.distinguished_name = dn;
    params.serial_number = Some(SerialNumber::from_slice(&[1]));
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::hours(24);
    // No SANs, key usages, EKUs, CA flag or key identifiers: the certificate carries no
    // extensions at all.
    let cert = params.self_signed(&key_pair)?;
    Ok(InsecureIdentity {
        cert: cert.der().clone(),
        key: pkcs8,
        made: Instant::now(),
    })
}

type IdentityCache = Mutex<Vec<(InsecureKeyType, Arc<InsecureIdentity>)>>;

/// The process-wide insecure identity of `kind`, generated on first use (off the async
/// threads) and renewed when older than 12 hours.
async fn insecure_identity(kind: InsecureKeyType) -> Result<Arc<InsecureIdentity>, TlsSetupError> {
    static CACHE: IdentityCache = Mutex::new(Vec::new());
    // Generation is serialised so that concurrent first listeners share one key.
    static GENERATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let lock = || CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    let cached = || {
        lock()
            .iter()
            .find(|(k, id)| *k == kind && id.made.elapsed() < IDENTITY_REUSE)
            .map(|(_, id)| id.clone())
    };
    if let Some(id) = cached() {
        return Ok(id);
    }
    let _guard = GENERATING.lock().await;
    if let Some(id) = cached() {
        return Ok(id);
    }
    let id = tokio::task::spawn_blocking(move || generate_identity(kind))
        .await
        .map_err(|e| TlsSetupError::KeyGen(e.to_string()))??;
    let id = Arc::new(id);
    let mut cache = lock();
    cache.retain(|(k, _)| *k != kind);
    cache.push((kind, id.clone()));
    Ok(id)
}

/// The server TLS configuration of a ConnType 1 service: the process-wide insecure
/// certificate of `kind`, ALPN `netceptor`, no session tickets.
pub async fn insecure_server_config(kind: InsecureKeyType) -> Result<ServerConfig, TlsSetupError> {
    let id = insecure_identity(kind).await?;
    let mut cfg = ServerConfig::builder_with_provider(provider(true))
        .with_protocol_versions(versions(true))?
        .with_no_client_auth()
        .with_single_cert(
            vec![id.cert.clone()],
            PrivateKeyDer::Pkcs8(id.key.clone_key()),
        )?;
    cfg.alpn_protocols = vec![NETCEPTOR_ALPN.to_vec()];
    // Go clients keep no session cache; tickets would be wasted bytes.
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}

/// The client TLS configuration for ConnType 1 services (ALPN `netceptor`, only the
/// insecure common name accepted, no resumption). Connect with the dialing node's
/// own ID as `ServerName` to send it as SNI, like Go.
pub fn insecure_client_config() -> Result<ClientConfig, TlsSetupError> {
    let provider = provider(true);
    let algs = provider.signature_verification_algorithms;
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(true))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(InsecureCnVerifier { algs }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![NETCEPTOR_ALPN.to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(cfg)
}

/// Whether `der` parses as a certificate whose subject CN is the insecure name.
fn has_insecure_cn(der: &CertificateDer<'_>) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return false;
    };
    // Like Go's pkix.Name, the last CN attribute is the common name.
    cert.subject()
        .iter_common_name()
        .last()
        .and_then(|cn| cn.as_str().ok())
        == Some(INSECURE_COMMON_NAME)
}

/// Accepts exactly the chains of ConnType 1 services; still checks the handshake
/// signature against the presented key.
#[derive(Debug)]
struct InsecureCnVerifier {
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for InsecureCnVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if std::iter::once(end_entity)
            .chain(intermediates)
            .any(has_insecure_cn)
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(INSECURE_REFUSAL.to_owned()))
        }
    }

    crate::verify::handshake_signatures_by_algs!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_certificate_has_go_shape() -> anyhow::Result<()> {
        for kind in [InsecureKeyType::EcdsaP256, InsecureKeyType::Rsa2048] {
            let id = generate_identity(kind)?;
            let (_, cert) = x509_parser::parse_x509_certificate(id.cert.as_ref())?;
            assert_eq!(cert.version(), x509_parser::x509::X509Version::V3);
            assert_eq!(cert.raw_serial(), &[1]);
            assert_eq!(
                cert.subject().to_string(),
                format!("CN={INSECURE_COMMON_NAME}")
            );
            assert_eq!(
                cert.issuer().to_string(),
                format!("CN={INSECURE_COMMON_NAME}")
            );
            assert!(cert.extensions().is_empty(), "no extensions expected");
            let nb = cert.validity().not_before.timestamp();
            let na = cert.validity().not_after.timestamp();
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            assert!((now - 60 - nb).abs() <= 5, "not before = now - 1 min");
            assert!((na - now - 86400).abs() <= 5, "not after = now + 24 h");
            assert!(has_insecure_cn(&id.cert));
            if kind == InsecureKeyType::Rsa2048 {
                assert_eq!(
                    cert.signature_algorithm.algorithm.to_id_string(),
                    "1.2.840.113549.1.1.11",
                    "sha256WithRSAEncryption"
                );
                let spki = cert.public_key().parsed()?;
                let x509_parser::public_key::PublicKey::RSA(rsa) = spki else {
                    anyhow::bail!("not an RSA key");
                };
                assert_eq!(rsa.key_size(), 2048);
            }
        }
        Ok(())
    }

    #[test]
    fn other_common_names_are_refused() -> anyhow::Result<()> {
        let mut params = CertificateParams::new(vec!["node1".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, "node1");
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.self_signed(&key)?;
        assert!(!has_insecure_cn(cert.der()));
        let verifier = InsecureCnVerifier {
            algs: provider(true).signature_verification_algorithms,
        };
        let name = ServerName::try_from("node1")?;
        let err = verifier
            .verify_server_cert(cert.der(), &[], &name, &[], UnixTime::now())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(INSECURE_REFUSAL), "{err}");
        assert!(!has_insecure_cn(&CertificateDer::from(vec![1u8, 2, 3])));
        Ok(())
    }
}
