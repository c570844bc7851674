//! Certificates for the TLS scenarios, made the way users make them: with the
//! `receptor --cert-init`, `--cert-makereq` and `--cert-signreq` commands of either
//! implementation, so that each side has to accept the other's certificates.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use receptor_tests::receptorctl;
use receptor_tests::Implementation;
use serde_json::{json, Value};
use tempfile::TempDir;

/// A folder of CAs and certificates for one test.
pub(crate) struct Pki {
    dir: TempDir,
}

/// A certificate authority (`--cert-init`).
pub(crate) struct Ca {
    pub(crate) cert: PathBuf,
    key: PathBuf,
}

/// A certificate signed by a [`Ca`] and its key.
pub(crate) struct Cert {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

fn receptor(by: Implementation, args: &[String]) -> Result<()> {
    let mut cmd = Command::new(by.binary()?);
    cmd.args(args);
    let out = receptorctl::run(cmd)?;
    ensure!(
        out.success(),
        "receptor ({}) {args:?} failed: {}",
        by.label(),
        out.describe()
    );
    Ok(())
}

impl Pki {
    /// An empty folder.
    pub(crate) fn new() -> Result<Pki> {
        let dir = tempfile::Builder::new()
            .prefix("receptor-pki-")
            .tempdir()
            .context("creating the certificate folder")?;
        Ok(Pki { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A CA called `name`, made by `by`.
    pub(crate) fn ca(&self, name: &str, by: Implementation) -> Result<Ca> {
        let ca = Ca {
            cert: self.path(&format!("{name}.crt")),
            key: self.path(&format!("{name}.key")),
        };
        receptor(
            by,
            &[
                "--cert-init".into(),
                format!("commonname={name} CA"),
                "bits=2048".into(),
                format!("outcert={}", ca.cert.display()),
                format!("outkey={}", ca.key.display()),
            ],
        )?;
        Ok(ca)
    }

    /// A certificate `file` naming `node_ids` as ReceptorNames (plus DNS name
    /// `localhost` and IP 127.0.0.1), requested and signed with `by`'s commands.
    pub(crate) fn cert(
        &self,
        ca: &Ca,
        file: &str,
        node_ids: &[&str],
        by: Implementation,
    ) -> Result<Cert> {
        let out = Cert {
            cert: self.path(&format!("{file}.crt")),
            key: self.path(&format!("{file}.key")),
        };
        let req = self.path(&format!("{file}.csr"));
        let mut makereq = vec![
            "--cert-makereq".to_string(),
            "bits=2048".into(),
            format!("commonname={file}"),
            "dnsname=localhost".into(),
            "ipaddress=127.0.0.1".into(),
            format!("outreq={}", req.display()),
            format!("outkey={}", out.key.display()),
        ];
        makereq.extend(node_ids.iter().map(|id| format!("nodeid={id}")));
        receptor(by, &makereq)?;
        receptor(
            by,
            &[
                "--cert-signreq".into(),
                format!("req={}", req.display()),
                format!("cacert={}", ca.cert.display()),
                format!("cakey={}", ca.key.display()),
                format!("outcert={}", out.cert.display()),
                "verify=yes".into(),
            ],
        )?;
        Ok(out)
    }
}

/// The SHA-256 fingerprint (hex) of a PEM certificate, as `pinned*cert` takes it.
pub(crate) fn fingerprint(cert: &Path) -> Result<String> {
    let out = receptorctl::run_python(
        "import hashlib, ssl, sys\n\
         pem = open(sys.argv[1]).read()\n\
         print(hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest())",
        &[&cert.display().to_string()],
    )?
    .ok()?;
    let hex = out.stdout.trim().to_string();
    ensure!(
        hex.len() == 64,
        "fingerprint of {}: {hex:?}",
        cert.display()
    );
    Ok(hex)
}

/// A `tls-server` section: `cert` presented, client certificates required and
/// verified against `client_ca`, plus `extra` keys.
pub(crate) fn tls_server(name: &str, cert: &Cert, client_ca: &Ca, extra: Value) -> Value {
    let mut v = json!({
        "name": name,
        "cert": cert.cert.display().to_string(),
        "key": cert.key.display().to_string(),
        "requireclientcert": true,
        "clientcas": client_ca.cert.display().to_string(),
    });
    merge(&mut v, extra);
    v
}

/// A `tls-client` section: `cert` presented, servers verified against `root_ca`, plus
/// `extra` keys.
pub(crate) fn tls_client(name: &str, cert: &Cert, root_ca: &Ca, extra: Value) -> Value {
    let mut v = json!({
        "name": name,
        "cert": cert.cert.display().to_string(),
        "key": cert.key.display().to_string(),
        "rootcas": root_ca.cert.display().to_string(),
    });
    merge(&mut v, extra);
    v
}

fn merge(into: &mut Value, extra: Value) {
    if let (Value::Object(into), Value::Object(extra)) = (into, extra) {
        into.extend(extra);
    }
}
