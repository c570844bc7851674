//! RSA keys for the certificate commands: generation, PEM loading (PKCS#1
//! `RSA PRIVATE KEY` and PKCS#8 `PRIVATE KEY`, like Go), and PKCS#1 v1.5 signing and
//! verification with SHA-256/384/512.

use ring::digest;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};

use crate::der::{self, oids};

/// The RSA signature algorithms the certificate commands produce and accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RsaSigAlg {
    Sha256,
    Sha384,
    Sha512,
}

impl RsaSigAlg {
    /// The AlgorithmIdentifier DER: `SEQUENCE { OID, NULL }`.
    pub(crate) fn algorithm_identifier(self) -> Vec<u8> {
        let oid = match self {
            RsaSigAlg::Sha256 => oids::SHA256_WITH_RSA,
            RsaSigAlg::Sha384 => oids::SHA384_WITH_RSA,
            RsaSigAlg::Sha512 => oids::SHA512_WITH_RSA,
        };
        der::seq(&[&der::oid(oid), &der::tlv(der::tag::NULL, &[])])
    }

    /// Recognises an encoded AlgorithmIdentifier's OID TLV.
    pub(crate) fn from_oid(oid_whole: &[u8]) -> Option<RsaSigAlg> {
        [RsaSigAlg::Sha256, RsaSigAlg::Sha384, RsaSigAlg::Sha512]
            .into_iter()
            .find(|alg| {
                let oid = match alg {
                    RsaSigAlg::Sha256 => oids::SHA256_WITH_RSA,
                    RsaSigAlg::Sha384 => oids::SHA384_WITH_RSA,
                    RsaSigAlg::Sha512 => oids::SHA512_WITH_RSA,
                };
                der::oid_is(oid_whole, oid)
            })
    }

    /// Go's name for the algorithm (`SHA256-RSA`), used in the signreq prompt.
    pub(crate) fn go_name(self) -> &'static str {
        match self {
            RsaSigAlg::Sha256 => "SHA256-RSA",
            RsaSigAlg::Sha384 => "SHA384-RSA",
            RsaSigAlg::Sha512 => "SHA512-RSA",
        }
    }

    fn padding_and_digest(self, msg: &[u8]) -> (Pkcs1v15Sign, Vec<u8>) {
        // DigestInfo prefixes from RFC 8017 section 9.2, note 1.
        let (alg, prefix): (&'static digest::Algorithm, &[u8]) = match self {
            RsaSigAlg::Sha256 => (
                &digest::SHA256,
                &[
                    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
                ],
            ),
            RsaSigAlg::Sha384 => (
                &digest::SHA384,
                &[
                    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x02, 0x05, 0x00, 0x04, 0x30,
                ],
            ),
            RsaSigAlg::Sha512 => (
                &digest::SHA512,
                &[
                    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x03, 0x05, 0x00, 0x04, 0x40,
                ],
            ),
        };
        let hashed = digest::digest(alg, msg).as_ref().to_vec();
        let padding = Pkcs1v15Sign {
            hash_len: Some(hashed.len()),
            prefix: prefix.into(),
        };
        (padding, hashed)
    }
}

/// An RSA private key.
pub(crate) struct RsaKey {
    key: RsaPrivateKey,
}

impl RsaKey {
    /// Generates a new key of `bits` bits.
    pub(crate) fn generate(bits: usize) -> Result<RsaKey, String> {
        let mut rng = rand::rngs::OsRng;
        RsaPrivateKey::new(&mut rng, bits)
            .map(|key| RsaKey { key })
            .map_err(|e| format!("cannot generate a {bits}-bit RSA key: {e}"))
    }

    /// Decodes a PKCS#1 (`RSA PRIVATE KEY`) DER key.
    pub(crate) fn from_pkcs1_der(der: &[u8]) -> Result<RsaKey, String> {
        RsaPrivateKey::from_pkcs1_der(der)
            .map(|key| RsaKey { key })
            .map_err(|e| e.to_string())
    }

    /// Decodes a PKCS#8 (`PRIVATE KEY`) DER key; only RSA keys are accepted.
    pub(crate) fn from_pkcs8_der(der: &[u8]) -> Result<RsaKey, String> {
        RsaPrivateKey::from_pkcs8_der(der)
            .map(|key| RsaKey { key })
            .map_err(|e| format!("not an RSA private key ({e})"))
    }

    /// The key in PKCS#1 DER, as Go writes it (`RSA PRIVATE KEY`).
    pub(crate) fn to_pkcs1_der(&self) -> Result<Vec<u8>, String> {
        self.key
            .to_pkcs1_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|e| e.to_string())
    }

    /// The SubjectPublicKeyInfo DER of the public half.
    pub(crate) fn spki_der(&self) -> Result<Vec<u8>, String> {
        self.key
            .to_public_key()
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|e| e.to_string())
    }

    /// The PKCS#1 RSAPublicKey DER (the subjectPublicKey bits); Go's subject key
    /// identifier is the SHA-1 of these bytes.
    pub(crate) fn public_pkcs1_der(&self) -> Result<Vec<u8>, String> {
        self.key
            .to_public_key()
            .to_pkcs1_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|e| e.to_string())
    }

    /// Signs `msg` (PKCS#1 v1.5).
    pub(crate) fn sign(&self, alg: RsaSigAlg, msg: &[u8]) -> Result<Vec<u8>, String> {
        let (padding, hashed) = alg.padding_and_digest(msg);
        self.key
            .sign(padding, &hashed)
            .map_err(|e| format!("signing failed: {e}"))
    }

    /// True when `spki_der` holds this key's public half.
    pub(crate) fn matches_spki(&self, spki_der: &[u8]) -> bool {
        match RsaPublicKey::from_public_key_der(spki_der) {
            Ok(public) => public.n() == self.key.n() && public.e() == self.key.e(),
            Err(_) => false,
        }
    }
}

/// Verifies a PKCS#1 v1.5 signature made by the RSA key in `spki_der`.
pub(crate) fn verify(
    spki_der: &[u8],
    alg: RsaSigAlg,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), String> {
    let public = RsaPublicKey::from_public_key_der(spki_der)
        .map_err(|_| "public key is not an RSA key".to_string())?;
    let (padding, hashed) = alg.padding_and_digest(msg);
    public
        .verify(padding, &hashed, sig)
        .map_err(|_| "signature is invalid".to_string())
}

/// Bit length of the RSA key in `spki_der`, if it is one.
pub(crate) fn rsa_bits(spki_der: &[u8]) -> Option<usize> {
    RsaPublicKey::from_public_key_der(spki_der)
        .ok()
        .map(|k| k.size() * 8)
}

/// SHA-1 of `data` (Go's subject key identifier method).
pub(crate) fn sha1(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}
