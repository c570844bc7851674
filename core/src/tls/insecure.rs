//! TLS for QUIC streams without user TLS (ConnType 1, e.g. the `control` service).
//!
//! The server presents a throw-away self-signed certificate whose subject CN is
//! `netceptor-insecure-common-name`; the client accepts any chain in which some
//! certificate has that CN (and refuses others with "insecure connection to secure
//! service", so a plain client cannot reach a ConnType 2 service). Validity dates are
//! not checked: Go never renews its certificate. The client sends its own node ID as
//! SNI; the server ignores SNI. Both sides use ALPN `netceptor` and TLS 1.3.
//!
//! Go serves an RSA-2048 certificate (serial 1, 24 h validity, no extensions). Go
//! clients only look at the CN, so this module uses a P-256 key, which is much
//! cheaper to generate, with the same subject, serial, validity and no extensions.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    ring as ring_provider, verify_tls12_signature, verify_tls13_signature,
    WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, Error, ServerConfig, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{versions, FixedCert, TlsError, NETCEPTOR_ALPN};

/// The subject CN of the insecure stream certificate.
pub const INSECURE_COMMON_NAME: &str = "netceptor-insecure-common-name";

/// A server configuration for a ConnType 1 listener: a fresh self-signed
/// certificate (valid from one minute ago for 24 hours), ALPN `netceptor`.
pub fn insecure_server_config() -> Result<Arc<ServerConfig>, TlsError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| TlsError::Rustls(format!("generating the stream key: {e}")))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| TlsError::Rustls(format!("stream certificate: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, INSECURE_COMMON_NAME);
    params.serial_number = Some(rcgen::SerialNumber::from(1u64));
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::hours(24);
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::Rustls(format!("stream certificate: {e}")))?;
    let provider = ring_provider::default_provider();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let certified = CertifiedKey::from_der(vec![cert.der().clone()], key_der, &provider)
        .map_err(|e| TlsError::Rustls(format!("stream certificate: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions(true))
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(FixedCert(Arc::new(certified))));
    config.alpn_protocols = vec![NETCEPTOR_ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration for dialing a ConnType 1 service (ALPN `netceptor`,
/// only the insecure common name accepted). Connect with the dialing node's own ID
/// as `ServerName` to send it as SNI, like Go.
pub fn insecure_client_config() -> Result<Arc<ClientConfig>, TlsError> {
    let provider = ring_provider::default_provider();
    let algs = provider.signature_verification_algorithms;
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions(true))
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(InsecureNameVerifier { algs }))
        .with_no_client_auth();
    config.alpn_protocols = vec![NETCEPTOR_ALPN.to_vec()];
    config.enable_early_data = false;
    Ok(Arc::new(config))
}

fn has_insecure_cn(der: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    let found = cert
        .subject()
        .iter_common_name()
        .any(|cn| cn.as_str() == Ok(INSECURE_COMMON_NAME));
    found
}

/// Accepts a chain iff some certificate in it has the insecure common name.
#[derive(Debug)]
struct InsecureNameVerifier {
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for InsecureNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if std::iter::once(end_entity)
            .chain(intermediates)
            .any(|c| has_insecure_cn(c))
        {
            return Ok(ServerCertVerified::assertion());
        }
        Err(Error::General(
            "insecure connection to secure service".into(),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
