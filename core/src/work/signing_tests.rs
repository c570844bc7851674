//! Tests of work signing and verification: the bytes of our tokens, Go's error texts,
//! and both directions against the reference Go receptor 1.6.9.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::work::remote::gonode::GoNode;

const PRIVATE_PKCS1: &[u8] = include_bytes!("testdata/sign_private_pkcs1.pem");
const PRIVATE_PKCS8: &[u8] = include_bytes!("testdata/sign_private_pkcs8.pem");
const PUBLIC: &[u8] = include_bytes!("testdata/sign_public.pem");
const PUBLIC_PKCS1: &[u8] = include_bytes!("testdata/sign_public_pkcs1.pem");
const OTHER_PRIVATE: &[u8] = include_bytes!("testdata/other_private.pem");

/// The token Go receptor 1.6.9 sent to node `spy` (spec, spy capture), signed with a
/// key we do not have: its header and claims are what ours must look like.
const GO_SPY_TOKEN: &str = "eyJhbGciOiJSUzUxMiIsInR5cCI6IkpXVCJ9.eyJhdWQiOlsic3B5Il0sImV4cCI6MTc5NTYyNzk5NX0.PmFWkzHKWh3u2syERy3Bh3NQrnvkSbuJ7QkQ4bQLmWugTI29xaixdKC8ksZrCW2gvArjJCAaKBbI5XyS1K5cXqUtvP6usQANrHUQf-m32Tg5Ryrx8Urj15012L1Nqu6hAC6o1V7gcDjILGZcJwt088l07AA7y6LiMYlYvaWyuEWLP7cJ-MRsB8dHCmv1SkTkEKYTQ6SAKUpVPc_WdbCqfzZfpcGC_YR-2NTTaxaNi-SK5N8_pVMVqATTVfZsu5xejp1bzejxxdKWnKVIpCvMsG77_gB378QzuDT9ARZhwvBFQLjvHRrPzIotIUTdCIffxwelb34ZVNgYn0tBpEV1LQ";

fn signer() -> Result<WorkSigner> {
    Ok(WorkSigner::from_pem(
        PRIVATE_PKCS1,
        Duration::from_secs(1800),
    )?)
}

fn verifier(node: &str) -> Result<SignatureVerifier> {
    Ok(SignatureVerifier::from_pem(PUBLIC, node)?)
}

fn now_secs() -> i64 {
    unix_seconds(SystemTime::now())
}

/// A token with any header and claims, signed with `key` (unsigned if `None`).
fn craft(
    header: &serde_json::Value,
    claims: &serde_json::Value,
    key: Option<(&[u8], Algorithm)>,
) -> Result<String> {
    let mut token = b64url_encode(header.to_string().as_bytes());
    token.push('.');
    token.push_str(&b64url_encode(claims.to_string().as_bytes()));
    let signature = match key {
        Some((pem, alg)) => {
            jsonwebtoken::crypto::sign(token.as_bytes(), &EncodingKey::from_rsa_pem(pem)?, alg)?
        }
        None => String::new(),
    };
    Ok(format!("{token}.{signature}"))
}

/// Tokens for node `bar` with what Go receptor 1.6.9 replied to each (observed on the
/// binary; `None` = accepted). Expiry deltas are compared without the duration.
fn cases() -> Result<Vec<(&'static str, String, Option<&'static str>)>> {
    let now = now_secs();
    let rs512 = json!({"alg":"RS512","typ":"JWT"});
    let ok = Some((PRIVATE_PKCS1, Algorithm::RS512));
    let good = craft(&rs512, &json!({"aud":["bar"],"exp":now+60}), ok)?;
    let (signing_input, _) = good.rsplit_once('.').context("three segments")?;
    Ok(vec![
        ("good", good.clone(), None),
        ("aud as a string", craft(&rs512, &json!({"aud":"bar","exp":now+60}), ok)?, None),
        ("aud of several", craft(&rs512, &json!({"aud":["x","bar"],"exp":now+60}), ok)?, None),
        ("no exp", craft(&rs512, &json!({"aud":["bar"]}), ok)?, None),
        ("fractional exp", craft(&rs512, &json!({"aud":["bar"],"exp":(now as f64)+60.5}), ok)?, None),
        ("RS256", craft(&json!({"alg":"RS256","typ":"JWT"}), &json!({"aud":["bar"],"exp":now+60}), Some((PRIVATE_PKCS1, Algorithm::RS256)))?, None),
        ("PS512", craft(&json!({"alg":"PS512","typ":"JWT"}), &json!({"aud":["bar"],"exp":now+60}), Some((PRIVATE_PKCS1, Algorithm::PS512)))?, None),
        ("other audience", craft(&rs512, &json!({"aud":["foo"],"exp":now+60}), ok)?, Some("token audience did not match node ID")),
        ("no audience", craft(&rs512, &json!({"exp":now+60}), ok)?, Some("token audience did not match node ID")),
        ("empty audience", craft(&rs512, &json!({"aud":[""],"exp":now+60}), ok)?, Some("token audience did not match node ID")),
        ("expired", craft(&rs512, &json!({"aud":["bar"],"exp":now-125}), ok)?, Some("could not verify signature: token is expired by")),
        ("exp as a string", craft(&rs512, &json!({"aud":["bar"],"exp":"123"}), ok)?, Some("could not verify signature: token is expired by")),
        ("not valid yet", craft(&rs512, &json!({"aud":["bar"],"exp":now+60,"nbf":now+100}), ok)?, Some("could not verify signature: token is not valid yet")),
        ("issued in the future", craft(&rs512, &json!({"aud":["bar"],"exp":now+60,"iat":now+100}), ok)?, Some("could not verify signature: token used before issued")),
        ("expired and badly signed", craft(&rs512, &json!({"aud":["bar"],"exp":now-100}), Some((OTHER_PRIVATE, Algorithm::RS512)))?, Some("could not verify signature: crypto/rsa: verification error")),
        ("other key", craft(&rs512, &json!({"aud":["bar"],"exp":now+60}), Some((OTHER_PRIVATE, Algorithm::RS512)))?, Some("could not verify signature: crypto/rsa: verification error")),
        ("HS256", craft(&json!({"alg":"HS256","typ":"JWT"}), &json!({"aud":["bar"],"exp":now+60}), None)?, Some("could not verify signature: key is of invalid type")),
        ("none", craft(&json!({"alg":"none","typ":"JWT"}), &json!({"aud":["bar"],"exp":now+60}), None)?, Some("could not verify signature: 'none' signature type is not allowed")),
        ("unknown alg", craft(&json!({"alg":"XX1","typ":"JWT"}), &json!({"aud":["bar"],"exp":now+60}), None)?, Some("could not verify signature: signing method (alg) is unavailable.")),
        ("no alg", craft(&json!({"typ":"JWT"}), &json!({"aud":["bar"],"exp":now+60}), None)?, Some("could not verify signature: signing method (alg) is unspecified.")),
        ("garbage", "a.b.c".to_owned(), Some("could not verify signature: illegal base64 data at input byte 0")),
        ("truncated header", format!("{}.{}.{}", b64url_encode(b"{"), b64url_encode(b"{}"), b64url_encode(b"x")), Some("could not verify signature: unexpected end of JSON input")),
        ("claims not an object", format!("{}.{}.{}", b64url_encode(rs512.to_string().as_bytes()), b64url_encode(b"[1]"), b64url_encode(b"x")), Some("could not verify signature: json: cannot unmarshal array into Go value of type jwt.RegisteredClaims")),
        ("numeric audience", craft(&rs512, &json!({"aud":5,"exp":now+60}), ok)?, Some("could not verify signature: json: unsupported type: float64")),
        ("padded signature", format!("{good}=="), Some("could not verify signature: illegal base64 data at input byte 342")),
        ("empty signature", format!("{signing_input}."), Some("could not verify signature: crypto/rsa: verification error")),
        ("four segments", "a.b.c.d".to_owned(), Some("could not verify signature: token contains an invalid number of segments")),
        ("one segment", "garbage".to_owned(), Some("could not verify signature: token contains an invalid number of segments")),
    ])
}

/// Compares a verification result with the expected one; expiry deltas are cut off.
fn check(name: &str, got: Result<(), VerifyError>, want: Option<&str>) -> Result<()> {
    let cut = |s: &str| s.split(" expired by").next().unwrap_or_default().to_owned();
    match (got.map_err(|e| e.to_string()), want) {
        (Ok(()), None) => Ok(()),
        (Err(e), Some(w)) if cut(&e) == cut(w) => Ok(()),
        (got, want) => bail!("{name}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn tokens_have_the_bytes_go_makes() -> Result<()> {
    let (go_header, rest) = GO_SPY_TOKEN.split_once('.').context("segments")?;
    let (go_claims, _) = rest.split_once('.').context("segments")?;
    // Go signed at exp - 30m with tokenexpiration 30m; sign at the same instant.
    let made = UNIX_EPOCH + Duration::from_secs(1_795_627_995 - 1800) + Duration::from_millis(700);
    let token = signer()?.sign_at("spy", made)?;
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], go_header);
    assert_eq!(parts[1], go_claims);
    assert_eq!(
        b64url_decode(parts[1]).map_err(anyhow::Error::msg)?,
        br#"{"aud":["spy"],"exp":1795627995}"#
    );
    // RS512 PKCS#1 v1.5 is deterministic: the same input gives the same signature.
    assert_eq!(signer()?.sign_at("spy", made)?, token);
    // Verifiable one second before the expiry, expired at it.
    let v = verifier("spy")?;
    v.verify_at(&token, UNIX_EPOCH + Duration::from_secs(1_795_627_994))
        .map_err(anyhow::Error::msg)?;
    assert_eq!(
        v.verify_at(
            &token,
            UNIX_EPOCH + Duration::from_secs(1_795_627_995 + 62) + Duration::from_millis(5)
        )
        .map_err(|e| e.to_string()),
        Err("could not verify signature: token is expired by 1m2.005s".to_owned())
    );
    // Go's own token decodes, but its key is not ours.
    assert_eq!(
        v.verify_at(GO_SPY_TOKEN, made).map_err(|e| e.to_string()),
        Err("could not verify signature: crypto/rsa: verification error".to_owned())
    );
    Ok(())
}

#[test]
fn audience_is_escaped_like_go() -> Result<()> {
    let token = signer()?.sign_at("a<b>&c", UNIX_EPOCH + Duration::from_secs(100))?;
    let claims = token.split('.').nth(1).context("claims")?;
    assert_eq!(
        b64url_decode(claims).map_err(anyhow::Error::msg)?,
        br#"{"aud":["a\u003cb\u003e\u0026c"],"exp":1900}"#
    );
    Ok(())
}

#[test]
fn key_formats() -> Result<()> {
    let pkcs8 = WorkSigner::from_pem(PRIVATE_PKCS8, Duration::from_secs(60))?;
    for public in [PUBLIC, PUBLIC_PKCS1] {
        let v = SignatureVerifier::from_pem(public, "bar")?;
        v.verify(&pkcs8.sign("bar")?).map_err(anyhow::Error::msg)?;
        v.verify(&signer()?.sign("bar")?)
            .map_err(anyhow::Error::msg)?;
    }
    let two = [PRIVATE_PKCS1, PRIVATE_PKCS1].concat();
    let refused: &[(&[u8], &str)] = &[
        (PUBLIC, "private key file does not contain private key data"),
        (b"", "failed to decode PEM block"),
        (b"not a key at all", "failed to decode PEM block"),
        (
            b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
            "unknown block type OPENSSH PRIVATE KEY",
        ),
        (
            b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "not a usable RSA private key",
        ),
        (&two, "private key file should contain exactly one item"),
    ];
    for (pem, want) in refused {
        match WorkSigner::from_pem(pem, Duration::from_secs(60)) {
            Ok(_) => bail!("accepted {want}"),
            Err(e) => assert!(e.to_string().starts_with(want), "{e} does not say {want}"),
        }
    }
    assert!(SignatureVerifier::from_pem(PRIVATE_PKCS1, "bar")
        .is_err_and(|e| e.to_string() == "public key file does not contain public key data"));
    assert!(
        SignatureVerifier::from_pem(b"ssh-rsa AAAAB3NzaC1yc2E test@host\n", "bar")
            .is_err_and(|e| e.to_string() == "failed to decode PEM block")
    );
    Ok(())
}

/// Go checks at start-up that key files exist, and reads them when it needs them.
#[test]
fn key_files_as_go_reads_them() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("nope.pem");
    let err = WorkSigner::from_config(&crate::config::WorkSigningConfig {
        private_key: missing.clone(),
        token_expiration: Duration::from_secs(300),
    })
    .err()
    .context("missing file accepted")?;
    assert_eq!(
        err.to_string(),
        format!("{} does not exist", missing.display())
    );
    assert!(SignatureVerifier::from_config(
        &crate::config::WorkVerificationConfig {
            public_key: missing
        },
        "bar"
    )
    .is_err());

    // An unusable key starts, fails the requests that need it, and is read again.
    let private = dir.path().join("private.pem");
    let public = dir.path().join("public.pem");
    std::fs::write(
        &private,
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    )?;
    std::fs::write(&public, b"ssh-rsa AAAAB3NzaC1yc2E test@host\n")?;
    let s = WorkSigner::from_config(&crate::config::WorkSigningConfig {
        private_key: private.clone(),
        token_expiration: Duration::from_secs(300),
    })?;
    let v = SignatureVerifier::from_config(
        &crate::config::WorkVerificationConfig {
            public_key: public.clone(),
        },
        "bar",
    )?;
    assert_eq!(
        s.sign("bar").err().map(|e| e.to_string()).as_deref(),
        Some("could not load signing key file: unknown block type OPENSSH PRIVATE KEY")
    );
    assert_eq!(
        v.verify("a.b.c").map_err(|e| e.to_string()),
        Err("could not load verifying key file: failed to decode PEM block".to_owned())
    );
    assert_eq!(
        v.verify("").map_err(|e| e.to_string()),
        Err("could not verify signature: signature is empty".to_owned())
    );
    std::fs::write(&private, PRIVATE_PKCS8)?;
    std::fs::write(&public, PUBLIC)?;
    v.verify(&s.sign("bar")?).map_err(anyhow::Error::msg)?;
    // Once loaded, a key stays.
    std::fs::remove_file(&private)?;
    std::fs::remove_file(&public)?;
    v.verify(&s.sign("bar")?).map_err(anyhow::Error::msg)?;
    Ok(())
}

#[test]
fn verification_errors_are_go_s() -> Result<()> {
    let v = verifier("bar")?;
    for (name, token, want) in cases()? {
        check(name, v.verify(&token), want)?;
    }
    assert_eq!(
        v.verify("").map_err(|e| e.to_string()),
        Err("could not verify signature: signature is empty".to_owned())
    );
    assert_eq!(
        v.verify("Bearer x.y.z").map_err(|e| e.to_string()),
        Err("could not verify signature: tokenstring should not contain 'bearer '".to_owned())
    );
    Ok(())
}

#[test]
fn base64_matches_go() {
    for data in [
        &b""[..],
        b"f",
        b"fo",
        b"foo",
        b"foob",
        b"fooba",
        b"foobar",
        &[0xff, 0xfe, 0x3e],
    ] {
        let text = b64url_encode(data);
        assert!(!text.contains('='));
        assert_eq!(b64url_decode(&text).as_deref(), Ok(data));
    }
    assert_eq!(b64url_encode(&[0xfb, 0xff]), "-_8");
    assert_eq!(b64url_decode("Zm9v\r\nYmFy").as_deref(), Ok(&b"foobar"[..]));
    assert_eq!(
        b64url_decode("Zm9vY"),
        Err("illegal base64 data at input byte 4".to_owned())
    );
    assert_eq!(
        b64url_decode("Zm+v"),
        Err("illegal base64 data at input byte 2".to_owned())
    );
    assert_eq!(
        b64url_decode("Zg=="),
        Err("illegal base64 data at input byte 2".to_owned())
    );
}

async fn submit_over_tcp(port: u16, request: serde_json::Value) -> Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    w.write_all(format!("{request}\n").as_bytes()).await?;
    line.clear();
    r.read_line(&mut line).await?;
    if line.starts_with("Work unit created") {
        w.write_all(b"signed payload").await?;
        w.shutdown().await?;
        line.clear();
        r.read_line(&mut line).await?;
    }
    Ok(line.trim_end().to_owned())
}

/// Go node `bar` verifies with our public key: it accepts what we sign, and refuses
/// every crafted token with the text our verifier gives.
#[tokio::test]
async fn go_verifies_our_tokens_as_we_do() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let public = dir.path().join("public.pem");
    std::fs::write(&public, PUBLIC)?;
    let extra = format!(
        "- work-verification:\n    publickey: {}\n\
         - work-command:\n    worktype: signedcat\n    command: cat\n    verifysignature: true\n",
        public.display()
    );
    let Some(go) = GoNode::start(dir.path(), "bar", &extra).await? else {
        return Ok(());
    };
    let ours = verifier("bar")?;
    let mut cases = cases()?;
    cases.push(("signed by us", signer()?.sign("bar")?, None));
    cases.push((
        "signed by us for foo",
        signer()?.sign("foo")?,
        Some("token audience did not match node ID"),
    ));
    for (name, token, _) in cases {
        let reply = submit_over_tcp(
            go.control_port,
            json!({"command":"work","subcommand":"submit","node":"localhost","worktype":"signedcat","signature":token}),
        )
        .await?;
        let go_result = if reply.contains("\"result\":\"Job Started\"") {
            Ok(())
        } else {
            Err(reply.strip_prefix("ERROR: ").unwrap_or(&reply).to_owned())
        };
        let go_view = go_result.clone().err();
        check(name, ours.verify(&token), go_view.as_deref())
            .with_context(|| format!("Go said {go_result:?}"))?;
    }
    // The unit signed by us ran: its results are the payload.
    let listed: serde_json::Value = serde_json::from_str(&go.command("work list").await?)?;
    let units = listed.as_object().context("work list")?;
    assert!(!units.is_empty());
    assert!(units.values().all(|u| u["WorkType"] == "signedcat"));
    Ok(())
}

/// Go node `foo` signs a remote submission with our private key: node `spy` is a Go
/// node whose `control` service is forwarded (tcp-client) to this test, which reads
/// the submit line and verifies its signature with our code.
#[tokio::test]
async fn we_verify_go_tokens() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let private = dir.path().join("private.pem");
    std::fs::write(&private, PRIVATE_PKCS8)?;
    let extra = format!(
        "- work-signing:\n    privatekey: {}\n    tokenexpiration: 10m\n",
        private.display()
    );
    let Some(foo) = GoNode::start(dir.path(), "foo", &extra).await? else {
        return Ok(());
    };
    let spy_listener = TcpListener::bind("127.0.0.1:0").await?;
    let spy_port = spy_listener.local_addr()?.port();
    let spy_extra = format!(
        "- tcp-peer:\n    address: 127.0.0.1:{}\n- tcp-client:\n    service: control\n    address: 127.0.0.1:{spy_port}\n",
        foo.listen_port
    );
    let Some(_spy) = GoNode::start_with(dir.path(), "spy", "", &spy_extra).await? else {
        return Ok(());
    };
    // "Job Submitted" while the mesh converges, or an error when foo reads our reply.
    let before = now_secs();
    let reply = foo
        .command(r#"{"command":"work","subcommand":"submit","node":"spy","worktype":"cat","signwork":"true","myparam":"v1"}"#)
        .await?;
    assert!(reply.starts_with("Work unit created"), "{reply}");
    let submit_line = tokio::time::timeout(Duration::from_secs(40), async {
        loop {
            let (stream, _) = spy_listener.accept().await?;
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"Receptor Control, node spy\n").await?;
            let mut line = String::new();
            r.read_line(&mut line).await?;
            if line.contains("\"submit\"") {
                w.write_all(b"ERROR: seen by the test\n").await?;
                return anyhow::Ok(line);
            }
        }
    })
    .await
    .context("foo never submitted to spy")??;
    let request: serde_json::Value = serde_json::from_str(&submit_line)?;
    let token = request["signature"].as_str().context("no signature")?;
    verifier("spy")?.verify(token)?;
    assert_eq!(verifier("bar")?.verify(token), Err(VerifyError::Audience));
    // Same header and claim layout as ours; exp = signing time + 10m.
    let (header, rest) = token.split_once('.').context("segments")?;
    assert_eq!(header, b64url_encode(HEADER_JSON.as_bytes()));
    let claims: serde_json::Value = serde_json::from_slice(
        &b64url_decode(rest.split_once('.').context("segments")?.0).map_err(anyhow::Error::msg)?,
    )?;
    assert_eq!(claims["aud"], json!(["spy"]));
    let exp = claims["exp"].as_i64().context("exp")?;
    assert!((before + 600..=now_secs() + 600).contains(&exp), "{exp}");
    Ok(())
}
