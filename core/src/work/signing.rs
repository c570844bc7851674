//! Work signing and verification: the JSON Web Tokens that Go receptor 1.6.9 attaches
//! to remote work requests.
//!
//! A node with `work-signing` signs every request it sends to another node for a remote
//! unit submitted with `signwork: true` (submit, results, cancel, release). The token is
//! an RS512 JWT whose header is `{"alg":"RS512","typ":"JWT"}` and whose claims are
//! `{"aud":["<target node>"],"exp":<unix seconds>}` (golang-jwt v4 `RegisteredClaims`
//! with only those two set), so the bytes match what a Go node produces.
//!
//! A node with `work-verification` checks the `signature` of requests for work types
//! with `verifysignature: true` (the exemption of unix-socket clients is decided by the
//! `work` command). Verification follows golang-jwt v4 as receptor calls it, including
//! its error texts, which clients see after `could not verify signature: `:
//!
//! * the token must have three base64url segments, a JSON object header naming a known
//!   algorithm, and claims that decode as registered claims;
//! * claims are checked before the signature, and a bad signature wins over a bad claim
//!   (`nbf` over `iat` over `exp` among the claims);
//! * every RSA algorithm (`RS256`..`RS512`, `PS256`..`PS512`) is accepted with the
//!   configured key, as Go's key function does not restrict the method;
//! * `exp`, `nbf` and `iat` are optional; the audience is required and must contain this
//!   node's ID (`token audience did not match node ID`, without the prefix).
//!
//! Keys are RSA keys in PEM files, as Go reads them: a private key as PKCS#1
//! (`RSA PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`), a public key as PKIX (`PUBLIC KEY`;
//! PKCS#1 `RSA PUBLIC KEY` is accepted too), exactly one block per file. As in Go, a
//! configured key file must exist when the node starts (`<file> does not exist`), but a
//! file whose key cannot be used (an OpenSSH key, say) only fails the requests that need
//! it (`could not load signing key file: ...`, `could not load verifying key file:
//! ...`); it is read again at each such request until it holds a usable key, which is
//! then kept. RSA keys must have at least 2048 bits.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::Value;

use crate::config::{WorkSigningConfig, WorkVerificationConfig};
use receptor_proto::go::duration::go_duration;

/// The JWT header Go receptor writes, byte for byte.
const HEADER_JSON: &str = r#"{"alg":"RS512","typ":"JWT"}"#;

/// Errors of loading keys and signing.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// A configured key file does not exist (Go: `<file> does not exist`).
    #[error("{0} does not exist")]
    Missing(String),
    /// A key does not hold a usable RSA key.
    #[error("{0}")]
    BadKey(String),
    /// The key file could not be loaded when signing (Go's words).
    #[error("could not load signing key file: {0}")]
    Load(String),
    /// Signing failed.
    #[error("cannot sign work: {0}")]
    Sign(String),
    /// A unit submitted with `signwork` on a node without `work-signing`.
    #[error("cannot sign work: signing key is empty")]
    NoKey,
}

/// Why a work signature was not accepted; the text is the reply Go receptor gives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No token was sent.
    #[error("could not verify signature: signature is empty")]
    Empty,
    /// This node verifies no signatures (no `work-verification`).
    #[error("could not verify signature: verifying key not specified")]
    NoKey,
    /// The verifying key file holds no usable key.
    #[error("could not load verifying key file: {0}")]
    Key(String),
    /// The token is malformed, badly signed or out of its validity (golang-jwt's text).
    #[error("could not verify signature: {0}")]
    Token(String),
    /// The token is not for this node.
    #[error("token audience did not match node ID")]
    Audience,
}

/// A key kept from its PEM file. As in Go, a configured file must exist when the node
/// starts, but its content is only needed when a key is used: a file that cannot be
/// parsed at start-up is logged and read again at each use (so fixing it needs no
/// restart), and a use fails with the reason meanwhile.
struct KeyFile<K> {
    path: Option<PathBuf>,
    key: OnceLock<K>,
    parse: fn(&[u8]) -> Result<K, String>,
}

impl<K> KeyFile<K> {
    fn loaded(key: K, parse: fn(&[u8]) -> Result<K, String>) -> KeyFile<K> {
        let cell = OnceLock::new();
        let _ = cell.set(key);
        KeyFile {
            path: None,
            key: cell,
            parse,
        }
    }

    fn open(
        path: &Path,
        parse: fn(&[u8]) -> Result<K, String>,
        what: &str,
    ) -> Result<KeyFile<K>, SigningError> {
        if !path.exists() {
            return Err(SigningError::Missing(path.display().to_string()));
        }
        let file = KeyFile {
            path: Some(path.to_owned()),
            key: OnceLock::new(),
            parse,
        };
        if let Err(e) = file.get() {
            tracing::warn!(
                "{what} {}: {e}; requests that need it will fail",
                path.display()
            );
        }
        Ok(file)
    }

    /// The key, read from its file if it is not loaded yet.
    fn get(&self) -> Result<&K, String> {
        if let Some(key) = self.key.get() {
            return Ok(key);
        }
        let Some(path) = &self.path else {
            return Err("no key".to_owned());
        };
        let bytes = std::fs::read(path).map_err(|e| format!("open {}: {e}", path.display()))?;
        let key = (self.parse)(&bytes)?;
        Ok(self.key.get_or_init(|| key))
    }
}

/// Signs remote work requests (`work-signing`).
pub struct WorkSigner {
    key: KeyFile<EncodingKey>,
    expiration: Duration,
}

impl std::fmt::Debug for WorkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkSigner")
            .field("path", &self.key.path)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl WorkSigner {
    /// The signer of a `work-signing` configuration: its key file must exist; a file
    /// whose key cannot be used is logged, and signing fails until it is fixed.
    pub fn from_config(config: &WorkSigningConfig) -> Result<WorkSigner, SigningError> {
        Ok(WorkSigner {
            key: KeyFile::open(&config.private_key, parse_private_key, "work-signing key")?,
            expiration: config.token_expiration,
        })
    }

    /// A signer for a PEM private key; tokens expire `expiration` after they are made.
    pub fn from_pem(pem: &[u8], expiration: Duration) -> Result<WorkSigner, SigningError> {
        let key = parse_private_key(pem).map_err(SigningError::BadKey)?;
        Ok(WorkSigner {
            key: KeyFile::loaded(key, parse_private_key),
            expiration,
        })
    }

    /// How long a token stays valid.
    pub fn expiration(&self) -> Duration {
        self.expiration
    }

    /// A token for requests to node `audience`, valid from now.
    pub fn sign(&self, audience: &str) -> Result<String, SigningError> {
        self.sign_at(audience, SystemTime::now())
    }

    /// A token for requests to node `audience`, made at `now`.
    pub fn sign_at(&self, audience: &str, now: SystemTime) -> Result<String, SigningError> {
        let key = self.key.get().map_err(SigningError::Load)?;
        let exp = unix_seconds(now + self.expiration);
        let audience = receptor_proto::gojson::to_string(audience)
            .map_err(|e| SigningError::Sign(e.to_string()))?;
        let claims = format!(r#"{{"aud":[{audience}],"exp":{exp}}}"#);
        let mut token = b64url_encode(HEADER_JSON.as_bytes());
        token.push('.');
        token.push_str(&b64url_encode(claims.as_bytes()));
        let signature = jsonwebtoken::crypto::sign(token.as_bytes(), key, Algorithm::RS512)
            .map_err(|e| SigningError::Sign(e.to_string()))?;
        token.push('.');
        token.push_str(&signature);
        Ok(token)
    }
}

/// Verifies work signatures for this node (`work-verification`).
pub struct SignatureVerifier {
    key: KeyFile<DecodingKey>,
    node_id: String,
}

impl std::fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureVerifier")
            .field("path", &self.key.path)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl SignatureVerifier {
    /// The verifier of a `work-verification` configuration, for node `node_id` (the
    /// audience tokens must name): its key file must exist; a file whose key cannot be
    /// used is logged, and verification fails until it is fixed.
    pub fn from_config(
        config: &WorkVerificationConfig,
        node_id: &str,
    ) -> Result<SignatureVerifier, SigningError> {
        Ok(SignatureVerifier {
            key: KeyFile::open(
                &config.public_key,
                parse_public_key,
                "work-verification key",
            )?,
            node_id: node_id.to_owned(),
        })
    }

    /// A verifier for a PEM public key.
    pub fn from_pem(pem: &[u8], node_id: &str) -> Result<SignatureVerifier, SigningError> {
        let key = parse_public_key(pem).map_err(SigningError::BadKey)?;
        Ok(SignatureVerifier {
            key: KeyFile::loaded(key, parse_public_key),
            node_id: node_id.to_owned(),
        })
    }

    /// Checks `token` at time `now`.
    pub fn verify_at(&self, token: &str, now: SystemTime) -> Result<(), VerifyError> {
        if token.is_empty() {
            return Err(VerifyError::Empty);
        }
        let key = self.key.get().map_err(VerifyError::Key)?;
        let claims = Self::check_token(key, token, now).map_err(VerifyError::Token)?;
        let matches = claims.audience.contains(&self.node_id);
        let all_empty = claims.audience.iter().all(String::is_empty);
        if !matches || all_empty {
            return Err(VerifyError::Audience);
        }
        Ok(())
    }

    /// golang-jwt v4 `ParseWithClaims` with an RSA key: the claims, or the error text.
    fn check_token(key: &DecodingKey, token: &str, now: SystemTime) -> Result<Claims, String> {
        let parts: Vec<&str> = token.split('.').collect();
        let [header_b64, claims_b64, signature_b64] = parts[..] else {
            return Err("token contains an invalid number of segments".to_owned());
        };
        let header_bytes = b64url_decode(header_b64).map_err(|e| {
            if token.to_lowercase().starts_with("bearer ") {
                "tokenstring should not contain 'bearer '".to_owned()
            } else {
                e
            }
        })?;
        let header = parse_header(&header_bytes)?;
        let claims = parse_claims(&b64url_decode(claims_b64)?)?;
        let algorithm = match header.get("alg") {
            Some(Value::String(alg)) => alg.as_str(),
            _ => return Err("signing method (alg) is unspecified.".to_owned()),
        };
        let method = method_of(algorithm)?;
        let claims_error = claims.validate(now);
        let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
        let signature_error = Self::check_signature(key, method, signing_input, signature_b64);
        match (signature_error, claims_error) {
            (Err(e), _) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(())) => Ok(claims),
        }
    }

    fn check_signature(
        key: &DecodingKey,
        method: Method,
        input: &str,
        signature: &str,
    ) -> Result<(), String> {
        let algorithm = match method {
            Method::Rsa(algorithm) => algorithm,
            Method::None => return Err("'none' signature type is not allowed".to_owned()),
            // HMAC wants a byte key, ECDSA and EdDSA their own key types.
            Method::Other { decodes_first } => {
                if decodes_first {
                    b64url_decode(signature)?;
                }
                return Err("key is of invalid type".to_owned());
            }
        };
        b64url_decode(signature)?;
        match jsonwebtoken::crypto::verify(signature, input.as_bytes(), key, algorithm) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err("crypto/rsa: verification error".to_owned()),
        }
    }
}

/// Checks work signatures (JWTs) sent by clients; provided by the node's
/// `work-verification` configuration.
pub trait WorkVerifier: Send + Sync {
    /// Verifies `token` for this node (the error's text is the reply, e.g.
    /// `token audience did not match node ID`).
    fn verify(&self, token: &str) -> Result<(), VerifyError>;
}

impl WorkVerifier for SignatureVerifier {
    fn verify(&self, token: &str) -> Result<(), VerifyError> {
        self.verify_at(token, SystemTime::now())
    }
}

/// A signing method golang-jwt knows.
#[derive(Debug, Clone, Copy)]
enum Method {
    /// One of the RSA methods, verified with the configured key.
    Rsa(Algorithm),
    /// `none`.
    None,
    /// A method whose key type an RSA key is not; `decodes_first` when Go decodes the
    /// signature before it looks at the key.
    Other { decodes_first: bool },
}

fn method_of(alg: &str) -> Result<Method, String> {
    Ok(match alg {
        "RS256" => Method::Rsa(Algorithm::RS256),
        "RS384" => Method::Rsa(Algorithm::RS384),
        "RS512" => Method::Rsa(Algorithm::RS512),
        "PS256" => Method::Rsa(Algorithm::PS256),
        "PS384" => Method::Rsa(Algorithm::PS384),
        "PS512" => Method::Rsa(Algorithm::PS512),
        "none" => Method::None,
        "HS256" | "HS384" | "HS512" | "EdDSA" | "Ed25519" => Method::Other {
            decodes_first: false,
        },
        "ES256" | "ES384" | "ES512" => Method::Other {
            decodes_first: true,
        },
        _ => return Err("signing method (alg) is unavailable.".to_owned()),
    })
}

/// The registered claims receptor looks at.
#[derive(Debug, Default)]
struct Claims {
    audience: Vec<String>,
    expires_at: Option<i64>,
    not_before: Option<i64>,
    issued_at: Option<i64>,
}

impl Claims {
    /// golang-jwt v4 `RegisteredClaims.Valid`: the last failing check names the error.
    fn validate(&self, now: SystemTime) -> Result<(), String> {
        let now_nanos = unix_nanos(now);
        let mut error = None;
        if let Some(exp) = self.expires_at {
            let exp_nanos = i128::from(exp) * 1_000_000_000;
            if now_nanos >= exp_nanos {
                let delta = i64::try_from(now_nanos - exp_nanos).unwrap_or(i64::MAX);
                error = Some(format!("token is expired by {}", go_duration(delta)));
            }
        }
        if let Some(iat) = self.issued_at {
            if now_nanos < i128::from(iat) * 1_000_000_000 {
                error = Some("token used before issued".to_owned());
            }
        }
        if let Some(nbf) = self.not_before {
            if now_nanos < i128::from(nbf) * 1_000_000_000 {
                error = Some("token is not valid yet".to_owned());
            }
        }
        error.map_or(Ok(()), Err)
    }
}

fn parse_header(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(bytes).map_err(go_json_error)? {
        Value::Object(map) => Ok(map),
        other => Err(format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            go_json_kind(&other)
        )),
    }
}

fn parse_claims(bytes: &[u8]) -> Result<Claims, String> {
    let map = match serde_json::from_slice::<Value>(bytes).map_err(go_json_error)? {
        Value::Object(map) => map,
        other => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type jwt.RegisteredClaims",
                go_json_kind(&other)
            ))
        }
    };
    let mut claims = Claims::default();
    for (key, value) in &map {
        match key.as_str() {
            "iss" | "sub" | "jti" if !matches!(value, Value::String(_) | Value::Null) => {
                return Err(format!(
                    "json: cannot unmarshal {} into Go struct field RegisteredClaims.{key} of type string",
                    go_json_kind(value)
                ));
            }
            "aud" => claims.audience = parse_audience(value)?,
            "exp" => claims.expires_at = parse_numeric_date(value)?,
            "nbf" => claims.not_before = parse_numeric_date(value)?,
            "iat" => claims.issued_at = parse_numeric_date(value)?,
            _ => {}
        }
    }
    Ok(claims)
}

/// golang-jwt `ClaimStrings`: a string or an array of strings.
fn parse_audience(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("json: unsupported type: {}", go_type_name(other))),
            })
            .collect(),
        other => Err(format!("json: unsupported type: {}", go_type_name(other))),
    }
}

/// golang-jwt `NumericDate`: a JSON number (or a string holding one) of seconds,
/// truncated to whole seconds.
fn parse_numeric_date(value: &Value) -> Result<Option<i64>, String> {
    let seconds = match value {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => s.parse::<f64>().map_err(|_| {
            format!(
                "could not parse NumericData: json: invalid number literal, trying to unmarshal {} into Number",
                receptor_proto::gojson::to_string(&Value::String(s.clone())).unwrap_or_default()
            )
        })?,
        other => {
            return Err(format!(
                "could not parse NumericData: json: cannot unmarshal {} into Go value of type json.Number",
                go_json_kind(other)
            ))
        }
    };
    if !seconds.is_finite() {
        return Err("could not convert json number value to float: value out of range".to_owned());
    }
    // Saturating float-to-int conversion, then floor to whole seconds as Go's
    // `Truncate(time.Second)` does.
    Ok(Some(seconds.floor() as i64))
}

/// How Go's `encoding/json` names a JSON value's kind in type errors.
fn go_json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The Go type `encoding/json` decodes a value into inside an `interface{}`.
fn go_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn go_json_error(e: serde_json::Error) -> String {
    if e.is_eof() {
        "unexpected end of JSON input".to_owned()
    } else {
        format!("invalid JSON: {e}")
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    }
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url (`base64.RawURLEncoding`).
fn b64url_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(B64URL[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn b64url_value(c: u8) -> Option<u32> {
    B64URL.iter().position(|&x| x == c).map(|p| p as u32)
}

/// Go's `base64.RawURLEncoding.DecodeString`, with its error text
/// (`illegal base64 data at input byte N`); CR and LF are skipped as Go skips them.
fn b64url_decode(text: &str) -> Result<Vec<u8>, String> {
    let corrupt = |at: usize| format!("illegal base64 data at input byte {at}");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    let mut quantum = [0u32; 4];
    let mut filled = 0;
    for (i, &c) in bytes.iter().enumerate() {
        if c == b'\r' || c == b'\n' {
            continue;
        }
        let v = b64url_value(c).ok_or_else(|| corrupt(i))?;
        quantum[filled] = v;
        filled += 1;
        if filled == 4 {
            let n = (quantum[0] << 18) | (quantum[1] << 12) | (quantum[2] << 6) | quantum[3];
            out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
            filled = 0;
        }
    }
    match filled {
        0 => {}
        1 => return Err(corrupt(bytes.len() - 1)),
        _ => {
            let n = (quantum[0] << 18) | (quantum[1] << 12) | (quantum[2] << 6);
            out.push((n >> 16) as u8);
            if filled == 3 {
                out.push((n >> 8) as u8);
            }
        }
    }
    Ok(out)
}

/// Go's `certificates.LoadPrivateKey`: exactly one PEM block, an RSA private key in
/// PKCS#1 (`RSA PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`). Errors in Go's words.
fn parse_private_key(pem: &[u8]) -> Result<EncodingKey, String> {
    match single_pem_label(pem, "private")?.as_str() {
        "RSA PRIVATE KEY" | "PRIVATE KEY" => {}
        _ => return Err("private key file does not contain private key data".to_owned()),
    }
    let key = EncodingKey::from_rsa_pem(pem)
        .map_err(|e| format!("not a usable RSA private key ({e})"))?;
    // The key is only parsed when it signs: do it once now.
    jsonwebtoken::crypto::sign(b"probe", &key, Algorithm::RS512)
        .map_err(|e| format!("not a usable RSA private key ({e})"))?;
    Ok(key)
}

/// Go's `certificates.LoadPublicKey`: exactly one PEM block, an RSA public key in PKIX
/// (`PUBLIC KEY`; PKCS#1 `RSA PUBLIC KEY` is accepted too). Errors in Go's words.
fn parse_public_key(pem: &[u8]) -> Result<DecodingKey, String> {
    match single_pem_label(pem, "public")?.as_str() {
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {}
        _ => return Err("public key file does not contain public key data".to_owned()),
    }
    DecodingKey::from_rsa_pem(pem).map_err(|e| format!("not a usable RSA public key ({e})"))
}

/// PEM block types Go's key loader knows.
const KNOWN_BLOCKS: &[&str] = &[
    "CERTIFICATE",
    "CERTIFICATE REQUEST",
    "RSA PRIVATE KEY",
    "PRIVATE KEY",
    "PUBLIC KEY",
    "RSA PUBLIC KEY",
];

/// The label of the only PEM block in `pem` (Go's key loaders want exactly one item).
fn single_pem_label(pem: &[u8], kind: &str) -> Result<String, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "failed to decode PEM block".to_owned())?;
    let labels: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN "))
        .filter_map(|l| l.strip_suffix("-----"))
        .collect();
    if let Some(unknown) = labels.iter().find(|l| !KNOWN_BLOCKS.contains(l)) {
        return Err(format!("unknown block type {unknown}"));
    }
    match labels[..] {
        [label] => Ok(label.to_owned()),
        [] => Err("failed to decode PEM block".to_owned()),
        _ => Err(format!("{kind} key file should contain exactly one item")),
    }
}

#[cfg(test)]
#[path = "signing_tests.rs"]
mod tests;
