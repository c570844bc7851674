//! Tests of the certificate commands: structure of what we write (checked with
//! x509-parser and `openssl`), and interoperability with the Go receptor 1.6.9
//! binary's certificate commands in both directions.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use x509_parser::prelude::*;

use super::*;

/// The Go reference binary, if present (`RECEPTOR_GO_BIN` overrides the path).
fn go_receptor() -> Option<PathBuf> {
    let path = std::env::var_os("RECEPTOR_GO_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.cache/receptor-reference/root/usr/bin/receptor"));
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipping Go interop part: {} not found", path.display());
        None
    }
}

fn go(bin: &Path, args: &[String]) {
    let out = Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "go receptor {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

fn pem_der(path: &str, want_tag: &str) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let block = ::pem::parse(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(block.tag(), want_tag, "{path}");
    block.into_contents()
}

/// True when the `openssl` command is installed (its checks are skipped otherwise).
fn have_openssl() -> bool {
    let found = Command::new("openssl").arg("version").output().is_ok();
    if !found {
        eprintln!("skipping openssl checks: openssl is not installed");
    }
    found
}

fn openssl_verify(ca: &str, cert: &str) {
    if !have_openssl() {
        return;
    }
    let out = Command::new("openssl")
        .args(["verify", "-CAfile", ca, "-purpose", "sslserver", cert])
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("openssl")
        .args(["verify", "-CAfile", ca, "-purpose", "sslclient", cert])
        .output()
        .unwrap_or_else(|e| panic!("openssl: {e}"));
    assert!(
        out.status.success(),
        "openssl verify client: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Extension TLVs of a certificate, keyed by OID text, in order.
fn extensions(cert_der: &[u8]) -> Vec<(String, bool, Vec<u8>)> {
    let (_, cert) = X509Certificate::from_der(cert_der).unwrap_or_else(|e| panic!("parse: {e}"));
    cert.extensions()
        .iter()
        .map(|e| (e.oid.to_id_string(), e.critical, e.value.to_vec()))
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap_or(0))
        .collect()
}

fn make_ca(dir: &Path, cn: &str) -> (String, String) {
    let (cert, key) = (p(dir, "ca.crt"), p(dir, "ca.key"));
    let r = cert_init(&json!({"commonname": cn, "bits": "2048", "outcert": cert, "outkey": key}));
    assert!(r.is_ok(), "{r:?}");
    (cert, key)
}

fn make_req(
    dir: &Path,
    name: &str,
    dns: &[&str],
    ips: &[&str],
    nodes: &[&str],
) -> (String, String) {
    let (req, key) = (
        p(dir, &format!("{name}.csr")),
        p(dir, &format!("{name}.key")),
    );
    let r = cert_makereq(&json!({
        "commonname": name, "bits": 2048, "dnsname": dns, "ipaddress": ips, "nodeid": nodes,
        "outreq": req, "outkey": key,
    }));
    assert!(r.is_ok(), "{r:?}");
    (req, key)
}

fn sign(req: &str, ca: &(String, String), out: &str) -> Result<(), CertError> {
    cert_signreq(
        &json!({"req": req, "cacert": ca.0, "cakey": ca.1, "outcert": out, "verify": "true"}),
    )
}

#[test]
fn our_ca_request_and_certificate_have_receptor_structure() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ca = make_ca(dir.path(), "Test CA");
    let (req, _key) = make_req(
        dir.path(),
        "node1",
        &["localhost"],
        &["127.0.0.1"],
        &["gonode2"],
    );
    let out = p(dir.path(), "node1.crt");
    let r = sign(&req, &ca, &out);
    assert!(r.is_ok(), "{r:?}");

    // PEM types and file modes as Go writes them.
    use std::os::unix::fs::PermissionsExt;
    for (f, t) in [
        (&ca.0, "CERTIFICATE"),
        (&ca.1, "RSA PRIVATE KEY"),
        (&req, "CERTIFICATE REQUEST"),
        (&out, "CERTIFICATE"),
    ] {
        let meta = std::fs::metadata(f).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
        let text = std::fs::read_to_string(f).unwrap_or_default();
        assert!(
            text.starts_with(&format!("-----BEGIN {t}-----\n")),
            "{f}: {text}"
        );
        assert!(text.ends_with(&format!("-----END {t}-----\n")), "{f}");
    }

    // CA: KeyUsage digitalSignature+keyCertSign critical, EKU, BasicConstraints CA, SKI.
    let ca_der = pem_der(&ca.0, "CERTIFICATE");
    let exts = extensions(&ca_der);
    let oids: Vec<&str> = exts.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(oids, ["2.5.29.15", "2.5.29.37", "2.5.29.19", "2.5.29.14"]);
    assert_eq!((exts[0].1, exts[0].2.clone()), (true, hex("03 02 02 84")));
    assert_eq!(
        exts[1].2,
        hex("30 14 06 08 2B 06 01 05 05 07 03 02 06 08 2B 06 01 05 05 07 03 01")
    );
    assert_eq!(
        (exts[2].1, exts[2].2.clone()),
        (true, hex("30 03 01 01 FF"))
    );
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ca_cert.subject().to_string(), "CN=Test CA");
    let years =
        ca_cert.validity().not_after.timestamp() - ca_cert.validity().not_before.timestamp();
    assert!((3650 * 86400..=3653 * 86400).contains(&years), "{years}");

    // Signed certificate: KU digitalSignature critical, EKU, AKI = CA SKI, SAN exact bytes.
    let der = pem_der(&out, "CERTIFICATE");
    let exts = extensions(&der);
    let oids: Vec<&str> = exts.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(oids, ["2.5.29.15", "2.5.29.37", "2.5.29.35", "2.5.29.17"]);
    assert_eq!((exts[0].1, exts[0].2.clone()), (true, hex("03 02 07 80")));
    assert!(
        exts[2].2.ends_with(&extensions(&ca_der)[3].2[2..]),
        "AKI must carry the CA's SKI"
    );
    assert_eq!(
        exts[3].2,
        hex("30 29 82 09 6C6F63616C686F7374 87 04 7F000001 A0 16 06 09 2B0601040192081301 A0 09 0C 07 676F6E6F646532")
    );
    let (_, cert) = X509Certificate::from_der(&der).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cert.subject().to_string(), "CN=node1");
    assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
    let days = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!((365 * 86400..=366 * 86400).contains(&days), "{days}");
    assert_eq!(
        crate::receptor_names(&der).unwrap_or_default(),
        vec!["gonode2".to_string()]
    );
    openssl_verify(&ca.0, &out);
}

#[test]
fn dates_and_string_types() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cert = p(dir.path(), "c.crt");
    let r = cert_init(&json!({
        "commonname": "nö de", "bits": 2048, "outcert": cert, "outkey": p(dir.path(), "c.key"),
        "notbefore": "2020-01-01T00:00:00Z", "notafter": "2060-01-01T00:00:00+02:00",
    }));
    assert!(r.is_ok(), "{r:?}");
    let der = pem_der(&cert, "CERTIFICATE");
    let (_, c) = X509Certificate::from_der(&der).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.validity().not_before.timestamp(), 1577836800);
    assert_eq!(c.validity().not_after.timestamp(), 2840133600);
    // UTF8String CN (non-printable), GeneralizedTime after 2049 (bytes as Go writes them)
    assert!(der
        .windows(8)
        .any(|w| w == [0x0c, 0x06, b'n', 0xc3, 0xb6, b' ', b'd', b'e']));
    assert!(der.windows(17).any(|w| w == b"\x18\x0f20591231220000Z"));
    assert!(der.windows(15).any(|w| w == b"\x17\x0d200101000000Z"));
}

#[test]
fn go_signs_our_request_and_we_sign_go_requests() {
    let Some(bin) = go_receptor() else { return };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();

    // Go CA signs a request we made.
    let go_ca = (p(d, "goca.crt"), p(d, "goca.key"));
    go(
        &bin,
        &[
            "--cert-init".into(),
            "commonname=Go CA".into(),
            "bits=2048".into(),
            format!("outcert={}", go_ca.0),
            format!("outkey={}", go_ca.1),
        ],
    );
    let (our_req, _) = make_req(
        d,
        "rustnode",
        &["localhost"],
        &["127.0.0.1", "::1"],
        &["rustnode", "alias"],
    );
    let go_signed = p(d, "go-signed.crt");
    go(
        &bin,
        &[
            "--cert-signreq".into(),
            format!("req={our_req}"),
            format!("cacert={}", go_ca.0),
            format!("cakey={}", go_ca.1),
            format!("outcert={go_signed}"),
            "verify=yes".into(),
        ],
    );
    openssl_verify(&go_ca.0, &go_signed);
    let go_der = pem_der(&go_signed, "CERTIFICATE");
    assert_eq!(
        crate::receptor_names(&go_der).unwrap_or_default(),
        vec!["rustnode", "alias"]
    );

    // We sign the same request with the Go CA: same extensions, byte for byte.
    let our_signed = p(d, "rust-signed.crt");
    let r = sign(&our_req, &go_ca, &our_signed);
    assert!(r.is_ok(), "{r:?}");
    openssl_verify(&go_ca.0, &our_signed);
    assert_eq!(
        extensions(&pem_der(&our_signed, "CERTIFICATE")),
        extensions(&go_der)
    );

    // We sign a request Go made (new key), and one Go made from our key (inkey).
    let go_req = (p(d, "go.csr"), p(d, "go.key"));
    go(
        &bin,
        &[
            "--cert-makereq".into(),
            "commonname=gonode".into(),
            "bits=2048".into(),
            "dnsname=localhost".into(),
            "ipaddress=127.0.0.1".into(),
            "nodeid=gonode2".into(),
            format!("outreq={}", go_req.0),
            format!("outkey={}", go_req.1),
        ],
    );
    let out = p(d, "gonode.crt");
    let r = sign(&go_req.0, &go_ca, &out);
    assert!(r.is_ok(), "{r:?}");
    openssl_verify(&go_ca.0, &out);
    let der = pem_der(&out, "CERTIFICATE");
    assert_eq!(
        extensions(&der)[3].2,
        hex("30 29 82 09 6C6F63616C686F7374 87 04 7F000001 A0 16 06 09 2B0601040192081301 A0 09 0C 07 676F6E6F646532")
    );

    // Our CA (and its RSA PRIVATE KEY) is usable by Go's signreq.
    let our_ca = make_ca(d, "Rust CA");
    let go_req2 = p(d, "go2.csr");
    go(
        &bin,
        &[
            "--cert-makereq".into(),
            "commonname=x".into(),
            "nodeid=x".into(),
            format!("outreq={go_req2}"),
            format!("inkey={}", go_req.1),
        ],
    );
    let out2 = p(d, "x.crt");
    go(
        &bin,
        &[
            "--cert-signreq".into(),
            format!("req={go_req2}"),
            format!("cacert={}", our_ca.0),
            format!("cakey={}", our_ca.1),
            format!("outcert={out2}"),
            "verify=true".into(),
        ],
    );
    openssl_verify(&our_ca.0, &out2);
}

#[test]
fn makereq_with_existing_keys() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    if !have_openssl() {
        return;
    }
    let ca = make_ca(d, "CA");
    // PKCS#8 key written by openssl
    let pk8 = p(d, "k8.pem");
    let st = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            &pk8,
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(st.status.success());
    assert!(std::fs::read_to_string(&pk8)
        .unwrap_or_default()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    let req = p(d, "r.csr");
    let r = cert_makereq(&json!({"commonname": "n", "nodeid": "n", "outreq": req, "inkey": pk8}));
    assert!(r.is_ok(), "{r:?}");
    let out = p(d, "n.crt");
    assert!(sign(&req, &ca, &out).is_ok());
    // the certificate's key is the openssl key
    let pubkey = Command::new("openssl")
        .args(["pkey", "-in", &pk8, "-pubout"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let certkey = Command::new("openssl")
        .args(["x509", "-in", &out, "-noout", "-pubkey"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pubkey.stdout, certkey.stdout);

    // usage errors, worded as Go words them
    let e = cert_makereq(&json!({"commonname": "n", "outreq": req, "inkey": pk8, "outkey": "x"}));
    assert_eq!(
        e.map_err(|e| e.to_string()),
        Err("cannot use both InKey and OutKey".into())
    );
    let e = cert_makereq(&json!({"commonname": "n", "outreq": req}));
    assert_eq!(
        e.map_err(|e| e.to_string()),
        Err("must provide either InKey or OutKey".into())
    );
    let e = cert_makereq(&json!({"commonname": "n", "outreq": req, "outkey": "x"}));
    assert_eq!(
        e.map_err(|e| e.to_string()),
        Err("must specify key bits when creating a new key".into())
    );
    let e = cert_makereq(&json!({"commonname": "n", "outreq": req, "inkey": pk8, "bits": 2048}));
    assert_eq!(
        e.map_err(|e| e.to_string()),
        Err("cannot specify key bits when reading an already-existing key".into())
    );
    let e = cert_makereq(
        &json!({"commonname": "n", "outreq": req, "inkey": pk8, "ipaddress": "1.2.3"}),
    );
    assert_eq!(
        e.map_err(|e| e.to_string()),
        Err("invalid IP address: 1.2.3".into())
    );
    let e = cert_makereq(&json!({"commonname": "n", "outreq": req, "inkey": ca.0}));
    assert_eq!(
        e.map_err(|e| e.to_string()),
        Err(format!("no keys in file {}", ca.0))
    );
    let e = cert_init(&json!({"commonname": "n", "outcert": "a", "outkey": "b"}));
    assert_eq!(
        e.map_err(|e| e.to_string()),
        Err("required parameter missing: bits".into())
    );
}

#[test]
fn signreq_refuses_bad_input_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let ca = make_ca(d, "CA");
    let out = p(d, "out.crt");

    // no names
    let (bare, _) = make_req(d, "bare", &[], &[], &[]);
    let e = sign(&bare, &ca, &out).map_err(|e| e.to_string());
    assert_eq!(e, Err("cannot sign: no names found in certificate".into()));

    // malformed PEM names the file
    let garbage = p(d, "garbage.pem");
    std::fs::write(&garbage, "not pem at all\n").unwrap_or_else(|e| panic!("{e}"));
    let e = sign(&garbage, &ca, &out)
        .map_err(|e| e.to_string())
        .err()
        .unwrap_or_default();
    assert!(
        e.starts_with(&format!("{garbage}: failed to decode PEM block")),
        "{e}"
    );
    let e = sign(&p(d, "missing.csr"), &ca, &out)
        .map_err(|e| e.to_string())
        .err()
        .unwrap_or_default();
    assert!(
        e.starts_with(&format!("open {}: ", p(d, "missing.csr"))),
        "{e}"
    );

    // a key where the CA certificate should be, and a mismatched CA key
    let (req, key) = make_req(d, "n", &[], &[], &["n"]);
    let e = sign(&req, &(ca.1.clone(), ca.1.clone()), &out)
        .map_err(|e| e.to_string())
        .err()
        .unwrap_or_default();
    assert_eq!(
        e,
        format!(
            "{}: certificate file does not contain certificate data",
            ca.1
        )
    );
    let e = sign(&req, &(ca.0.clone(), key.clone()), &out).map_err(|e| e.to_string());
    assert_eq!(
        e,
        Err("x509: provided PrivateKey doesn't match parent's PublicKey".into())
    );
    let e = sign(&req, &(ca.0.clone(), ca.0.clone()), &out)
        .map_err(|e| e.to_string())
        .err()
        .unwrap_or_default();
    assert_eq!(
        e,
        format!(
            "{}: private key file does not contain private key data",
            ca.0
        )
    );

    // a request whose signature does not match (tampered subject)
    let mut der = pem_der(&req, "CERTIFICATE REQUEST");
    let at = der
        .windows(3)
        .position(|w| w == [0x13, 0x01, b'n'])
        .map(|i| i + 2);
    let Some(at) = at else {
        panic!("CN not found in request")
    };
    der[at] = b'm';
    let tampered = p(d, "tampered.csr");
    std::fs::write(
        &tampered,
        ::pem::encode(&::pem::Pem::new("CERTIFICATE REQUEST", der)),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let e = sign(&tampered, &ca, &out)
        .map_err(|e| e.to_string())
        .err()
        .unwrap_or_default();
    assert_eq!(
        e,
        format!("{tampered}: certificate request signature is invalid")
    );

    // corrupt base64 inside a valid-looking PEM frame
    let broken = p(d, "broken.key");
    std::fs::write(
        &broken,
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let e = sign(&req, &(ca.0.clone(), broken.clone()), &out)
        .map_err(|e| e.to_string())
        .err()
        .unwrap_or_default();
    assert!(e.starts_with(&format!("{broken}: ")), "{e}");
    assert!(!Path::new(&out).exists());
}

#[test]
fn signreq_prompts_unless_verify() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let ca = make_ca(d, "CA");
    let (req, _) = make_req(d, "node1", &["localhost"], &["127.0.0.1"], &["node1"]);
    let out = p(d, "out.crt");
    let section = json!({"req": req, "cacert": ca.0, "cakey": ca.1, "outcert": out});
    let mut shown = Vec::new();
    let r = cert_signreq_with(&section, &mut "no\n".as_bytes(), &mut shown);
    assert!(matches!(r, Err(CertError::Declined)), "{r:?}");
    assert_eq!(
        String::from_utf8_lossy(&shown),
        "Requested certificate:\n  Subject: CN=node1\n  Encryption Algorithm: RSA (2048 bits)\n  \
         Signature Algorithm: SHA256-RSA\n  Names:\n    DNS Name: localhost\n    IP Address: 127.0.0.1\n    \
         Receptor Node ID: node1\nSign certificate (yes/no)? "
    );
    assert!(!Path::new(&out).exists());
    let r = cert_signreq_with(&section, &mut "YES\n".as_bytes(), &mut Vec::new());
    assert!(r.is_ok(), "{r:?}");
    assert!(Path::new(&out).exists());
}
