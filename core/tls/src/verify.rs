//! Certificate verifiers with receptor's rules: chain verification against the
//! configured roots with the right extended key usage, optional pinned fingerprints
//! of the leaf certificate, and optional ReceptorName checks.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};

use crate::{receptor_names, TlsError};

/// The handshake-signature methods of a [`ServerCertVerifier`] whose `algs` field
/// (a `WebPkiSupportedAlgorithms`) lists the accepted algorithms: the signature is
/// checked against the presented key with webpki, whatever the certificate checks are.
macro_rules! handshake_signatures_by_algs {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.algs.supported_schemes()
        }
    };
}
pub(super) use handshake_signatures_by_algs;

/// Pinned fingerprints of an accepted peer certificate (SHA-256 or SHA-512 of the
/// leaf DER); empty means "no pinning".
#[derive(Debug, Clone, Default)]
pub(crate) struct Pins(Arc<[Vec<u8>]>);

impl Pins {
    /// Decodes the configured fingerprints: hex, colons allowed, 32 or 64 bytes.
    pub(crate) fn decode(list: &[String]) -> Result<Pins, TlsError> {
        let mut out = Vec::with_capacity(list.len());
        for text in list {
            let clean: String = text.chars().filter(|c| *c != ':').collect();
            let bytes = decode_hex(&clean)
                .ok_or(TlsError::Fingerprint("error decoding fingerprint".into()))?;
            if bytes.len() != 32 && bytes.len() != 64 {
                return Err(TlsError::Fingerprint(
                    "fingerprints must be 32 or 64 bytes for sha256 or sha512".into(),
                ));
            }
            out.push(bytes);
        }
        Ok(Pins(out.into()))
    }

    /// Checks the leaf certificate against the pins (any match suffices).
    pub(crate) fn check(&self, leaf: &[u8]) -> Result<(), Error> {
        if self.0.is_empty() {
            return Ok(());
        }
        let sha256 = ring::digest::digest(&ring::digest::SHA256, leaf);
        let sha512 = ring::digest::digest(&ring::digest::SHA512, leaf);
        let ok = self.0.iter().any(|pin| {
            let sum = if pin.len() == 32 {
                sha256.as_ref()
            } else {
                sha512.as_ref()
            };
            sum == pin.as_slice()
        });
        if ok {
            Ok(())
        } else {
            Err(other(
                "presented certificate does not match any pinned fingerprint".to_string(),
            ))
        }
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// A verification failure carrying receptor's message.
#[derive(Debug)]
struct Failure(String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

fn other(msg: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Failure(msg)))))
}

/// Checks that the leaf certificate carries `expected` as a ReceptorName.
pub(crate) fn check_receptor_name(leaf: &[u8], expected: &str) -> Result<(), Error> {
    let names = receptor_names(leaf).map_err(|e| other(e.to_string()))?;
    if names.iter().any(|n| n == expected) {
        return Ok(());
    }
    Err(other(crate::name_mismatch_message(&names, expected)))
}

/// Verifies a server certificate the way receptor's client does.
#[derive(Debug)]
pub(crate) struct ReceptorServerVerifier {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) pins: Pins,
    /// Check the DNS/IP name the connection was made to (backends).
    pub(crate) check_hostname: bool,
    /// Require this ReceptorName (QUIC ConnType 2: the target node).
    pub(crate) expected_node: Option<String>,
    pub(crate) algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ReceptorServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        if self.check_hostname {
            verify_server_name(&cert, server_name)?;
        }
        self.pins.check(end_entity)?;
        if let Some(node) = &self.expected_node {
            check_receptor_name(end_entity, node)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures_by_algs!();
}

/// `insecureskipverify`: accepts any server certificate (no chain, name or pin
/// checks); the handshake signature is still verified against the presented key.
#[derive(Debug)]
pub(crate) struct InsecureServerVerifier {
    pub(crate) algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for InsecureServerVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures_by_algs!();
}

/// Verifies client certificates: chain against `clientcas` with EKU clientAuth (the
/// wrapped webpki verifier), then pins, then optionally a ReceptorName.
#[derive(Debug)]
pub(crate) struct ReceptorClientVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) pins: Pins,
    pub(crate) expected_node: Option<String>,
}

impl ClientCertVerifier for ReceptorClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Go 1.6.9 also refuses a client without certificate when only `clientcas` is
        // set: its verify callback fails with "peer certificate missing".
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.pins.check(end_entity)?;
        if let Some(node) = &self.expected_node {
            check_receptor_name(end_entity, node)?;
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_hex_of_sha256_or_sha512_length() {
        let h32 = "AB:".repeat(31) + "AB";
        let decoded = Pins::decode(&[h32]).map(|p| p.0.to_vec()).ok();
        assert_eq!(decoded, Some(vec![vec![0xab; 32]]));
        let decoded = Pins::decode(&["0f".repeat(64)]).map(|p| p.0.to_vec()).ok();
        assert_eq!(decoded, Some(vec![vec![0x0f; 64]]));
        assert!(Pins::decode(&["abc".into()]).is_err());
        assert!(Pins::decode(&["zz".repeat(32)]).is_err());
        assert!(Pins::decode(&["00".repeat(20)]).is_err());
    }

    #[test]
    fn pins_compare_the_leaf_digest() {
        let cert = b"not really a certificate";
        let sha256 = ring::digest::digest(&ring::digest::SHA256, cert);
        let sha512 = ring::digest::digest(&ring::digest::SHA512, cert);
        let pins = |list: Vec<Vec<u8>>| Pins(list.into());
        assert!(pins(vec![sha256.as_ref().to_vec()]).check(cert).is_ok());
        assert!(pins(vec![vec![0; 32], sha512.as_ref().to_vec()])
            .check(cert)
            .is_ok());
        assert!(pins(vec![vec![0; 32]]).check(cert).is_err());
        assert!(pins(Vec::new()).check(cert).is_ok());
    }
}
