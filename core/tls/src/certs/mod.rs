//! Certificate commands: a small certificate authority for receptor meshes.
//!
//! * [`cert_init`] (`--cert-init`) creates a self-signed CA: RSA key, KeyUsage
//!   digitalSignature + keyCertSign (critical), EKU clientAuth + serverAuth,
//!   BasicConstraints CA (critical), subject key identifier.
//! * [`cert_makereq`] (`--cert-makereq`) creates a certificate request whose
//!   subjectAltName carries DNS names, IP addresses and ReceptorName otherNames
//!   (node IDs), with a new key (`outkey`) or an existing one (`inkey`).
//! * [`cert_signreq`] (`--cert-signreq`) signs a request with the CA: KeyUsage
//!   digitalSignature (critical), EKU clientAuth + serverAuth, authority key
//!   identifier, and the request's subjectAltName copied byte for byte.
//!
//! Everything follows Go receptor 1.6.9: parameter names and defaults (2048-bit keys
//! for `cert-init`, 10 years of CA validity, 1 year for signed certificates, serial =
//! Unix time), PEM block types (`CERTIFICATE`, `RSA PRIVATE KEY`,
//! `CERTIFICATE REQUEST`), file mode 0600, and error texts where they are seen by
//! users. Unlike Go, the request's signature is checked before signing.
//!
//! Each command takes its configuration section as a JSON object with lower-cased
//! keys (values may be strings, as the command line gives them).

mod keys;

use std::fs::OpenOptions;
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

use crate::der::{self, oids, read_all, read_tlv, tag};
use crate::section::{Section, SectionError};
use keys::{RsaKey, RsaSigAlg};

pub use crate::san::{parse_san, receptor_san, SanError, SanNames};

/// Errors of the certificate commands.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A parameter is missing or malformed.
    #[error("{0}")]
    Param(#[from] SectionError),
    /// Parameters that cannot be used together, or other usage errors.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read.
    #[error("open {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file's content is not what the command needs.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Key generation or signing failed, or the inputs are inconsistent.
    #[error("{0}")]
    Crypto(String),
    /// The operator answered the signreq prompt with something other than yes.
    #[error("user declined")]
    Declined,
}

/// One decoded PEM item of a receptor PEM file.
enum PemItem {
    Certificate(Vec<u8>),
    Request(Vec<u8>),
    PrivateKey(Result<Box<RsaKey>, String>),
    PublicKey,
}

/// Reads a PEM file into its items (in order).
fn load_pem(path: &str) -> Result<Vec<PemItem>, CertError> {
    let bytes = std::fs::read(path).map_err(|source| CertError::Read {
        path: path.into(),
        source,
    })?;
    let file_err = |reason: String| CertError::File {
        path: path.into(),
        reason,
    };
    let blocks = pem::parse_many(&bytes)
        .map_err(|e| file_err(format!("failed to decode PEM block: {e}")))?;
    if blocks.is_empty() {
        return Err(file_err(
            "failed to decode PEM block: no PEM data found".into(),
        ));
    }
    blocks
        .into_iter()
        .map(|b| match b.tag() {
            "CERTIFICATE" => Ok(PemItem::Certificate(b.into_contents())),
            "CERTIFICATE REQUEST" => Ok(PemItem::Request(b.into_contents())),
            "RSA PRIVATE KEY" => Ok(PemItem::PrivateKey(
                RsaKey::from_pkcs1_der(b.contents()).map(Box::new),
            )),
            "PRIVATE KEY" => Ok(PemItem::PrivateKey(
                RsaKey::from_pkcs8_der(b.contents()).map(Box::new),
            )),
            "PUBLIC KEY" => Ok(PemItem::PublicKey),
            other => Err(file_err(format!("unknown block type {other}"))),
        })
        .collect()
}

/// Loads a file that must hold exactly one item of the wanted kind.
fn load_single<T>(
    path: &str,
    what: &str,
    pick: impl FnOnce(PemItem) -> Result<Option<T>, String>,
) -> Result<T, CertError> {
    let mut items = load_pem(path)?;
    let file_err = |reason: String| CertError::File {
        path: path.into(),
        reason,
    };
    if items.len() != 1 {
        return Err(file_err(format!(
            "{what} file should contain exactly one item"
        )));
    }
    let item = items.remove(0);
    match pick(item).map_err(file_err)? {
        Some(v) => Ok(v),
        None => Err(CertError::File {
            path: path.into(),
            reason: format!("{what} file does not contain {what} data"),
        }),
    }
}

fn load_private_key(path: &str) -> Result<RsaKey, CertError> {
    load_single(path, "private key", |item| match item {
        PemItem::PrivateKey(k) => k.map(|k| Some(*k)),
        _ => Ok(None),
    })
}

/// Writes PEM blocks joined by newlines, mode 0600, like Go's `SaveToPEMFile`.
fn save_pem(path: &str, blocks: &[(&str, Vec<u8>)]) -> Result<(), CertError> {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    let text: Vec<String> = blocks
        .iter()
        .map(|(t, d)| pem::encode_config(&pem::Pem::new(*t, d.clone()), config))
        .collect();
    let write_err = |source| CertError::Write {
        path: path.into(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(write_err)?;
    f.write_all(text.join("\n").as_bytes()).map_err(write_err)
}

/// Parses an optional RFC 3339 time parameter.
fn parse_time(s: &Section<'_>, key: &'static str) -> Result<Option<OffsetDateTime>, CertError> {
    match s.non_empty(key)? {
        None => Ok(None),
        Some(text) => OffsetDateTime::parse(&text, &Rfc3339)
            .map(Some)
            .map_err(|e| CertError::Usage(format!("parsing time {text:?}: {e}"))),
    }
}

/// `t` plus `years` calendar years, normalising 29 February like Go's `AddDate`.
fn add_years(t: OffsetDateTime, years: i32) -> OffsetDateTime {
    let year = t.year() + years;
    match t.replace_year(year) {
        Ok(v) => v,
        Err(_) => t
            .replace_day(1)
            .and_then(|d| d.replace_month(time::Month::March))
            .and_then(|d| d.replace_year(year))
            .unwrap_or(t),
    }
}

/// DER Time: UTCTime for 1950..2049, GeneralizedTime otherwise (RFC 5280).
fn der_time(t: OffsetDateTime) -> Vec<u8> {
    let t = t.to_offset(time::UtcOffset::UTC);
    let (y, mo, d, h, mi, s) = (
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    );
    if (1950..2050).contains(&y) {
        let text = format!("{:02}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z", y % 100);
        der::tlv(tag::UTC_TIME, text.as_bytes())
    } else {
        let text = format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}Z");
        der::tlv(tag::GENERALIZED_TIME, text.as_bytes())
    }
}

/// Go's string encoding: PrintableString when possible (Go also allows `*`), else UTF8String.
fn directory_string(s: &str) -> Vec<u8> {
    let printable = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?*".contains(&b));
    der::tlv(
        if printable {
            tag::PRINTABLE_STRING
        } else {
            tag::UTF8_STRING
        },
        s.as_bytes(),
    )
}

/// A Name with a single CN attribute.
fn cn_name(common_name: &str) -> Vec<u8> {
    let atv = der::seq(&[&der::oid(oids::COMMON_NAME), &directory_string(common_name)]);
    der::seq(&[&der::set(&[&atv])])
}

/// One Extension: `SEQUENCE { OID, [BOOLEAN TRUE], OCTET STRING value }`.
fn extension(oid: &[u64], critical: bool, value: &[u8]) -> Vec<u8> {
    let oid = der::oid(oid);
    let octets = der::tlv(tag::OCTET_STRING, value);
    if critical {
        der::seq(&[&oid, &der::tlv(tag::BOOLEAN, &[0xff]), &octets])
    } else {
        der::seq(&[&oid, &octets])
    }
}

/// KeyUsage BIT STRING with bits 0 (digitalSignature) and optionally 5 (keyCertSign),
/// trimmed like Go.
fn key_usage(cert_sign: bool) -> Vec<u8> {
    if cert_sign {
        der::tlv(tag::BIT_STRING, &[0x02, 0x84])
    } else {
        der::tlv(tag::BIT_STRING, &[0x07, 0x80])
    }
}

fn eku_client_server() -> Vec<u8> {
    der::seq(&[&der::oid(oids::CLIENT_AUTH), &der::oid(oids::SERVER_AUTH)])
}

/// The serial number Go receptor uses: the current Unix time.
fn unix_serial(now: OffsetDateTime) -> Vec<u8> {
    der::uint(&now.unix_timestamp().max(0).to_be_bytes())
}

/// Signs a TBS structure into a complete certificate or request.
fn sign_structure(tbs: Vec<u8>, key: &RsaKey, alg: RsaSigAlg) -> Result<Vec<u8>, CertError> {
    let sig = key.sign(alg, &tbs).map_err(CertError::Crypto)?;
    Ok(der::seq(&[
        &tbs,
        &alg.algorithm_identifier(),
        &der::bit_string(&sig),
    ]))
}

/// Key size parameter: positive and not absurd.
fn key_bits(bits: i64) -> Result<usize, CertError> {
    if !(512..=16384).contains(&bits) {
        return Err(CertError::Usage(format!(
            "invalid key size {bits}: must be between 512 and 16384 bits"
        )));
    }
    Ok(bits as usize)
}

/// `--cert-init`: creates a CA certificate and key.
///
/// Keys: `commonname`, `bits` (required), `notbefore`, `notafter` (RFC 3339; default
/// now and now + 10 years), `outcert`, `outkey`.
pub fn cert_init(section: &Value) -> Result<(), CertError> {
    let s = Section::new(section)?;
    let common_name = s.required("commonname")?;
    let bits = s.int("bits")?.ok_or(SectionError::Missing("bits"))?;
    let bits = if bits == 0 { 2048 } else { key_bits(bits)? };
    let not_before = parse_time(&s, "notbefore")?;
    let not_after = parse_time(&s, "notafter")?;
    let out_cert = s.required("outcert")?;
    let out_key = s.required("outkey")?;

    let now = OffsetDateTime::now_utc();
    let not_before = not_before.unwrap_or(now);
    let not_after = not_after.unwrap_or_else(|| add_years(now, 10));
    let key = RsaKey::generate(bits).map_err(CertError::Crypto)?;
    let cert = build_ca_cert(&key, &common_name, now, not_before, not_after)?;
    save_pem(&out_cert, &[("CERTIFICATE", cert)])?;
    save_pem(
        &out_key,
        &[(
            "RSA PRIVATE KEY",
            key.to_pkcs1_der().map_err(CertError::Crypto)?,
        )],
    )
}

fn build_ca_cert(
    key: &RsaKey,
    common_name: &str,
    now: OffsetDateTime,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Vec<u8>, CertError> {
    let spki = key.spki_der().map_err(CertError::Crypto)?;
    let ski = keys::sha1(&key.public_pkcs1_der().map_err(CertError::Crypto)?);
    let name = cn_name(common_name);
    let alg = RsaSigAlg::Sha256;
    let exts = [
        extension(oids::KEY_USAGE, true, &key_usage(true)),
        extension(oids::EXT_KEY_USAGE, false, &eku_client_server()),
        extension(
            oids::BASIC_CONSTRAINTS,
            true,
            &der::seq(&[&der::tlv(tag::BOOLEAN, &[0xff])]),
        ),
        extension(
            oids::SUBJECT_KEY_ID,
            false,
            &der::tlv(tag::OCTET_STRING, &ski),
        ),
    ];
    let tbs = der::seq(&[
        &der::explicit(0, &der::uint(&[2])),
        &unix_serial(now),
        &alg.algorithm_identifier(),
        &name,
        &der::seq(&[&der_time(not_before), &der_time(not_after)]),
        &name,
        &spki,
        &der::explicit(
            3,
            &der::seq(&exts.iter().map(Vec::as_slice).collect::<Vec<_>>()),
        ),
    ]);
    sign_structure(tbs, key, alg)
}

/// `--cert-makereq`: creates a certificate request.
///
/// Keys: `commonname` (required), `bits`, `dnsname`, `ipaddress`, `nodeid` (lists),
/// `outreq` (required), and either `outkey` (a new key of `bits` bits is generated)
/// or `inkey` (an existing RSA key; `bits` must then be absent).
pub fn cert_makereq(section: &Value) -> Result<(), CertError> {
    let s = Section::new(section)?;
    let common_name = s.required("commonname")?;
    let bits = s.int("bits")?.unwrap_or(0);
    let dns_names = s.list("dnsname")?;
    let ip_texts = s.list("ipaddress")?;
    let node_ids = s.list("nodeid")?;
    let out_req = s.required("outreq")?;
    let in_key = s.non_empty("inkey")?;
    let out_key = s.non_empty("outkey")?;
    match (&in_key, &out_key) {
        (None, None) => {
            return Err(CertError::Usage(
                "must provide either InKey or OutKey".into(),
            ))
        }
        (Some(_), Some(_)) => {
            return Err(CertError::Usage("cannot use both InKey and OutKey".into()))
        }
        (Some(_), None) if bits != 0 => {
            return Err(CertError::Usage(
                "cannot specify key bits when reading an already-existing key".into(),
            ))
        }
        (None, Some(_)) if bits == 0 => {
            return Err(CertError::Usage(
                "must specify key bits when creating a new key".into(),
            ))
        }
        _ => {}
    }
    let mut ips = Vec::with_capacity(ip_texts.len());
    for text in &ip_texts {
        let ip: IpAddr = text
            .parse()
            .map_err(|_| CertError::Usage(format!("invalid IP address: {text}")))?;
        ips.push(ip);
    }
    let key = match &in_key {
        Some(path) => load_request_key(path)?,
        None => RsaKey::generate(key_bits(bits)?).map_err(CertError::Crypto)?,
    };
    let san = receptor_san(&dns_names, &ips, &node_ids);
    let req = build_request(&key, &common_name, &san)?;
    save_pem(&out_req, &[("CERTIFICATE REQUEST", req)])?;
    if let Some(path) = out_key {
        save_pem(
            &path,
            &[(
                "RSA PRIVATE KEY",
                key.to_pkcs1_der().map_err(CertError::Crypto)?,
            )],
        )?;
    }
    Ok(())
}

/// `inkey` for makereq: the file must hold exactly one RSA private key (other items
/// are ignored, as in Go).
fn load_request_key(path: &str) -> Result<RsaKey, CertError> {
    let mut found: Option<RsaKey> = None;
    for item in load_pem(path)? {
        if let PemItem::PrivateKey(k) = item {
            let k = k.map_err(|reason| CertError::File {
                path: path.into(),
                reason,
            })?;
            if found.is_some() {
                return Err(CertError::Usage(format!(
                    "multiple private keys in file {path}"
                )));
            }
            found = Some(*k);
        }
    }
    found.ok_or_else(|| CertError::Usage(format!("no keys in file {path}")))
}

fn build_request(key: &RsaKey, common_name: &str, san: &[u8]) -> Result<Vec<u8>, CertError> {
    let spki = key.spki_der().map_err(CertError::Crypto)?;
    let ext_req = der::seq(&[
        &der::oid(oids::EXTENSION_REQUEST),
        &der::set(&[&der::seq(&[&extension(oids::SUBJECT_ALT_NAME, false, san)])]),
    ]);
    let info = der::seq(&[
        &der::uint(&[0]),
        &cn_name(common_name),
        &spki,
        &der::explicit(0, &ext_req),
    ]);
    sign_structure(info, key, RsaSigAlg::Sha256)
}

/// A parsed certificate request: the raw pieces signing needs.
struct Request {
    subject: Vec<u8>,
    spki: Vec<u8>,
    /// The subjectAltName extension as a complete Extension TLV (criticality kept).
    san_extension: Option<Vec<u8>>,
    names: SanNames,
    alg: RsaSigAlg,
    subject_text: String,
}

fn parse_request(der_bytes: &[u8]) -> Result<Request, String> {
    let bad = || "malformed certificate request".to_string();
    let (t, outer, _, rest) = read_tlv(der_bytes).ok_or_else(bad)?;
    if t != tag::SEQUENCE || !rest.is_empty() {
        return Err(bad());
    }
    let parts = read_all(outer).ok_or_else(bad)?;
    let [(tag::SEQUENCE, info, info_whole), (tag::SEQUENCE, alg_id, _), (tag::BIT_STRING, sig_bits, _)] =
        parts[..]
    else {
        return Err(bad());
    };
    let alg_oid = read_tlv(alg_id)
        .map(|(_, _, whole, _)| whole)
        .ok_or_else(bad)?;
    let alg = RsaSigAlg::from_oid(alg_oid).ok_or_else(|| {
        "unsupported request signature algorithm (only RSA PKCS#1 v1.5 with SHA-256/384/512 requests can be signed)"
            .to_string()
    })?;
    let info_parts = read_all(info).ok_or_else(bad)?;
    let (subject, spki, attrs) = match &info_parts[..] {
        [(tag::INTEGER, _, _), (tag::SEQUENCE, _, subject), (tag::SEQUENCE, _, spki), (0xa0, attrs, _)] => {
            (*subject, *spki, *attrs)
        }
        [(tag::INTEGER, _, _), (tag::SEQUENCE, _, subject), (tag::SEQUENCE, _, spki)] => {
            (*subject, *spki, &[][..])
        }
        _ => return Err(bad()),
    };
    let sig = match sig_bits.split_first() {
        Some((0, sig)) => sig,
        _ => return Err(bad()),
    };
    keys::verify(spki, alg, info_whole, sig).map_err(|e| format!("certificate request {e}"))?;
    let san_extension = find_requested_san(attrs).ok_or_else(bad)?;
    let names = match &san_extension {
        Some(ext) => {
            let value = extension_value(ext).ok_or_else(bad)?;
            parse_san(value).map_err(|e| format!("x509: {e}"))?
        }
        None => SanNames::default(),
    };
    let subject_text = x509_parser::x509::X509Name::from_der(subject)
        .map(|(_, n)| n.to_string().replace(", ", ","))
        .unwrap_or_default();
    Ok(Request {
        subject: subject.to_vec(),
        spki: spki.to_vec(),
        san_extension,
        names,
        alg,
        subject_text,
    })
}

/// Finds the subjectAltName Extension in a request's attributes.
/// `None` on malformed input, `Some(None)` when there is none.
fn find_requested_san(attrs: &[u8]) -> Option<Option<Vec<u8>>> {
    for (t, attr, _) in read_all(attrs)? {
        if t != tag::SEQUENCE {
            return None;
        }
        let parts = read_all(attr)?;
        let [(tag::OID, _, oid), (tag::SET, values, _)] = parts[..] else {
            return None;
        };
        if !der::oid_is(oid, oids::EXTENSION_REQUEST) {
            continue;
        }
        for (t, exts, _) in read_all(values)? {
            if t != tag::SEQUENCE {
                return None;
            }
            for (t, ext, whole) in read_all(exts)? {
                if t != tag::SEQUENCE {
                    return None;
                }
                let (_, _, oid, _) = read_tlv(ext)?;
                if der::oid_is(oid, oids::SUBJECT_ALT_NAME) {
                    return Some(Some(whole.to_vec()));
                }
            }
        }
    }
    Some(None)
}

/// The extnValue content of a complete Extension TLV.
fn extension_value(ext: &[u8]) -> Option<&[u8]> {
    let (_, content, _, _) = read_tlv(ext)?;
    let parts = read_all(content)?;
    parts
        .last()
        .filter(|(t, _, _)| *t == tag::OCTET_STRING)
        .map(|(_, v, _)| *v)
}

/// The CA pieces signing needs.
struct Ca {
    subject: Vec<u8>,
    spki: Vec<u8>,
    key_id: Option<Vec<u8>>,
}

fn parse_ca(der_bytes: &[u8]) -> Result<Ca, String> {
    let (_, cert) =
        X509Certificate::from_der(der_bytes).map_err(|e| format!("malformed certificate: {e}"))?;
    let key_id = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });
    Ok(Ca {
        subject: cert.subject().as_raw().to_vec(),
        spki: cert.public_key().raw.to_vec(),
        key_id,
    })
}

/// `--cert-signreq`: signs a request with the CA. Without `verify=true` the request
/// is shown and the operator must answer `yes` on standard input.
///
/// Keys: `req`, `cacert`, `cakey`, `outcert` (required), `notbefore`, `notafter`
/// (RFC 3339; default now and now + 1 year), `verify` (bool).
pub fn cert_signreq(section: &Value) -> Result<(), CertError> {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut output = std::io::stdout();
    cert_signreq_with(section, &mut input, &mut output)
}

/// [`cert_signreq`] with an explicit prompt input and output.
pub fn cert_signreq_with(
    section: &Value,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> Result<(), CertError> {
    let s = Section::new(section)?;
    let req_path = s.required("req")?;
    let ca_cert_path = s.required("cacert")?;
    let ca_key_path = s.required("cakey")?;
    let out_cert = s.required("outcert")?;
    let not_before = parse_time(&s, "notbefore")?;
    let not_after = parse_time(&s, "notafter")?;
    let verify = s.bool("verify")?.unwrap_or(false);

    let ca_der = load_single(&ca_cert_path, "certificate", |item| match item {
        PemItem::Certificate(d) => Ok(Some(d)),
        _ => Ok(None),
    })?;
    let ca = parse_ca(&ca_der).map_err(|reason| CertError::File {
        path: ca_cert_path.clone(),
        reason,
    })?;
    let ca_key = load_private_key(&ca_key_path)?;
    let req_der = load_single(&req_path, "certificate request", |item| match item {
        PemItem::Request(d) => Ok(Some(d)),
        _ => Ok(None),
    })?;
    let req = parse_request(&req_der).map_err(|reason| CertError::File {
        path: req_path.clone(),
        reason,
    })?;
    if req.names.is_empty() {
        return Err(CertError::Usage(
            "cannot sign: no names found in certificate".into(),
        ));
    }
    if !verify {
        confirm(&req, input, output)?;
    }
    if !ca_key.matches_spki(&ca.spki) {
        return Err(CertError::Crypto(
            "x509: provided PrivateKey doesn't match parent's PublicKey".into(),
        ));
    }
    let now = OffsetDateTime::now_utc();
    let not_before = not_before.unwrap_or(now);
    let not_after = not_after.unwrap_or_else(|| add_years(now, 1));
    let cert = build_signed_cert(&req, &ca, &ca_key, now, not_before, not_after)?;
    save_pem(&out_cert, &[("CERTIFICATE", cert)])
}

fn confirm(
    req: &Request,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> Result<(), CertError> {
    let algo = match keys::rsa_bits(&req.spki) {
        Some(bits) => format!("RSA ({bits} bits)"),
        None => "unknown".to_string(),
    };
    let mut text = format!(
        "Requested certificate:\n  Subject: {}\n  Encryption Algorithm: {algo}\n  Signature Algorithm: {}\n  Names:\n",
        req.subject_text,
        req.alg.go_name()
    );
    for name in &req.names.dns_names {
        text.push_str(&format!("    DNS Name: {name}\n"));
    }
    for ip in &req.names.ip_addresses {
        text.push_str(&format!("    IP Address: {ip}\n"));
    }
    for node in &req.names.node_ids {
        text.push_str(&format!("    Receptor Node ID: {node}\n"));
    }
    text.push_str("Sign certificate (yes/no)? ");
    let io_err = |e: std::io::Error| CertError::Usage(e.to_string());
    output
        .write_all(text.as_bytes())
        .and_then(|_| output.flush())
        .map_err(io_err)?;
    let mut line = String::new();
    let n = input.read_line(&mut line).map_err(io_err)?;
    if n == 0 {
        return Err(CertError::Usage("EOF".into()));
    }
    match line
        .split_whitespace()
        .next()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("y") | Some("yes") => Ok(()),
        None => Err(CertError::Usage("unexpected newline".into())),
        Some(_) => Err(CertError::Declined),
    }
}

fn build_signed_cert(
    req: &Request,
    ca: &Ca,
    ca_key: &RsaKey,
    now: OffsetDateTime,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Vec<u8>, CertError> {
    let mut exts = vec![
        extension(oids::KEY_USAGE, true, &key_usage(false)),
        extension(oids::EXT_KEY_USAGE, false, &eku_client_server()),
    ];
    if let Some(id) = &ca.key_id {
        exts.push(extension(
            oids::AUTHORITY_KEY_ID,
            false,
            &der::seq(&[&der::tlv(0x80, id)]),
        ));
    }
    if let Some(san) = &req.san_extension {
        exts.push(san.clone());
    }
    let tbs = der::seq(&[
        &der::explicit(0, &der::uint(&[2])),
        &unix_serial(now),
        &req.alg.algorithm_identifier(),
        &ca.subject,
        &der::seq(&[&der_time(not_before), &der_time(not_after)]),
        &req.subject,
        &req.spki,
        &der::explicit(
            3,
            &der::seq(&exts.iter().map(Vec::as_slice).collect::<Vec<_>>()),
        ),
    ]);
    sign_structure(tbs, ca_key, req.alg)
}

#[cfg(test)]
mod tests;
