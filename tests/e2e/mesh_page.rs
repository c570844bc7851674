//! Scenario: the mesh page in a real headless browser.
//!
//! A line `a - b - c`; `b` serves the `mesh-page` on a harness port and runs a unit of
//! `cat`. Debian's `chromium` loads the page, runs its script and dumps the DOM: the
//! drawing shows the three nodes and the two links with their costs, and the unit table
//! shows the unit. A screenshot is kept as `target/artifacts/mesh-page.png`. Then `c`
//! stops, and the page (loaded again until a deadline) drops `c`'s link. The JSON paths
//! and the read-only rules (GET only, 404 elsewhere) are checked over plain HTTP; a
//! second node serves the page over HTTPS through a named `tls-server`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use receptor_tests::topology::{start_star, Star};
use receptor_tests::wait::{wait_until, CONVERGE_TIMEOUT};
use receptor_tests::Implementation::Rust;
use receptor_tests::{free_port, NodeConfig, NodeProcess};
use serde_json::{json, Value};

/// Runs headless chromium on `url` with `extra` arguments; returns its stdout.
fn chromium(url: &str, extra: &[&str]) -> Result<String> {
    let profile = tempfile::tempdir()?;
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .context("running chromium (Debian package `chromium`; scripts/test.sh installs it)")?;
    ensure!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The page's DOM after its script has drawn (virtual time lets the first fetches land).
fn dump_dom(url: &str) -> Result<String> {
    chromium(url, &["--dump-dom", "--virtual-time-budget=3000"])
}

/// A raw HTTP/1.1 exchange: the status line and the body.
fn http(port: u16, request: &str) -> Result<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").context("no end of head")?;
    let status = head.lines().next().unwrap_or_default().to_owned();
    Ok((status, body.to_owned()))
}

fn get_json(port: u16, path: &str) -> Result<Value> {
    let (status, body) = http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
    )?;
    ensure!(status.contains(" 200 "), "{path}: {status}");
    serde_json::from_str(&body).with_context(|| format!("{path}: {body:?}"))
}

/// `target/` of this build (the test binary runs from `target/<profile>/deps`).
fn target_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .nth(3)
        .map(PathBuf::from)
        .context("test binary is not in target/<profile>/deps")
}

#[test]
fn page_draws_the_mesh_and_follows_it() -> Result<()> {
    let page_port = free_port()?;
    let url = format!("http://127.0.0.1:{page_port}/");
    let Star { a: _a, b, mut c } = start_star((
        "mesh-page",
        json!({"address": format!("127.0.0.1:{page_port}")}),
    ))?;
    let work = b
        .receptorctl(&["work", "submit", "cat", "--payload-literal", "hi", "-f"])?
        .ok()?;
    ensure!(work.stdout.trim_end() == "hi", "{}", work.stdout);

    // The JSON the page draws from.
    let topo = get_json(page_port, "/topology.json")?;
    ensure!(topo["Node"] == "b", "{topo}");
    let units = get_json(page_port, "/units.json")?;
    let unit_id = units["Units"][0]["ID"]
        .as_str()
        .context("no unit listed")?
        .to_owned();
    ensure!(units["Units"][0]["WorkType"] == "cat", "{units}");

    // Read-only: other methods and paths are refused; the node keeps serving.
    let (status, _) = http(
        page_port,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    )?;
    ensure!(status.contains(" 405 "), "{status}");
    let (status, _) = http(page_port, "GET /etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n")?;
    ensure!(status.contains(" 404 "), "{status}");

    // The browser draws the three nodes, both links with their costs, and the unit.
    let dom = wait_until(CONVERGE_TIMEOUT, "the page to draw the mesh", || {
        let dom = dump_dom(&url)?;
        Ok(
            (dom.contains(r#"data-link="a|b""#) && dom.contains(r#"data-link="b|c""#))
                .then_some(dom),
        )
    })?;
    for node in ["a", "b", "c"] {
        ensure!(
            dom.contains(&format!(r#"data-node="{node}""#)),
            "node {node} not drawn: {dom}"
        );
    }
    ensure!(
        dom.contains(r#"<text class="cost""#) && dom.contains(">1</text>"),
        "no link costs drawn: {dom}"
    );
    ensure!(
        dom.contains(&format!(r#"data-unit="{unit_id}""#))
            && dom.contains("<td>cat</td>")
            && dom.contains("<td>Succeeded</td>"),
        "unit table: {dom}"
    );
    ensure!(dom.contains("3 nodes, 2 links"), "status line: {dom}");

    let artifacts = target_dir()?.join("artifacts");
    std::fs::create_dir_all(&artifacts)?;
    let shot = artifacts.join("mesh-page.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=700,800",
            "--virtual-time-budget=3000",
        ],
    )?;
    let png = std::fs::read(&shot).with_context(|| format!("no screenshot {}", shot.display()))?;
    if !png.starts_with(b"\x89PNG") {
        bail!("{} is not a PNG", shot.display());
    }

    // c stops: its link leaves the drawing, a's stays.
    c.kill();
    wait_until(CONVERGE_TIMEOUT, "c's link to leave the page", || {
        let dom = dump_dom(&url)?;
        Ok(
            (!dom.contains(r#"data-link="b|c""#) && dom.contains(r#"data-link="a|b""#))
                .then_some(()),
        )
    })?;
    Ok(())
}

/// Fetches an HTTPS URL trusting only `ca`; prints the body.
const FETCH_TLS: &str = r#"
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
print(urllib.request.urlopen(sys.argv[1], timeout=10, context=ctx).read().decode())
"#;

#[test]
fn page_over_tls_with_a_named_tls_server() -> Result<()> {
    let dir = tempfile::tempdir()?;
    crate::streams_tls::make_certs(dir.path(), &["p"])?;
    let file = |name: &str| dir.path().join(name).display().to_string();
    let page_port = free_port()?;
    let _p = NodeProcess::start(
        Rust,
        NodeConfig::new("p")
            .entry(
                "tls-server",
                json!({"name": "page", "cert": file("p.crt"), "key": file("p.key")}),
            )
            .entry(
                "mesh-page",
                json!({"address": format!("127.0.0.1:{page_port}"), "tls": "page"}),
            ),
    )?;
    let url = format!("https://127.0.0.1:{page_port}/topology.json");
    let out = receptor_tests::receptorctl::run_python(FETCH_TLS, &[&url, &file("ca.crt")])?.ok()?;
    let topo: Value =
        serde_json::from_str(out.stdout.trim()).with_context(|| format!("{:?}", out.stdout))?;
    ensure!(topo["Node"] == "p", "{topo}");
    // Plain HTTP on the TLS port gets no page.
    ensure!(
        http(page_port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .map_or(true, |(s, _)| !s.contains(" 200 ")),
        "plain HTTP answered on the TLS port"
    );
    Ok(())
}
