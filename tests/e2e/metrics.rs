//! Scenario: the Prometheus endpoint and the `metrics` control command.
//!
//! A line `a - b - c`; `b` serves metrics on a harness port. The endpoint is scraped with
//! the Python `prometheus_client` text parser (a real Prometheus parser, not ours) before,
//! while and after traffic runs: pings from `a` to `c` (forwarded by `b`), a traceroute
//! (whose first probe expires at `b`), a ping from `b` to an unknown node, a unit of work
//! `a` runs on `b`. The counters move
//! as the traffic does; the control command `metrics` (asked from `a` across the mesh)
//! agrees; when `c` goes away its link is counted down.

use std::collections::BTreeMap;
use std::thread;

use anyhow::{ensure, Context, Result};
use receptor_tests::free_port;
use receptor_tests::receptorctl::run_python;
use receptor_tests::topology::{start_star, Star};
use receptor_tests::wait::wait_until;
use serde_json::{json, Value};

/// Scrapes `url` with prometheus_client's parser; prints every sample as
/// `{"name{label=value,...}": value}` (labels sorted).
const SCRAPE: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
out = {}
for family in text_string_to_metric_families(text):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;

type Samples = BTreeMap<String, f64>;

fn scrape(url: &str) -> Result<Samples> {
    let out = run_python(SCRAPE, &[url])?.ok()?;
    serde_json::from_str(&out.stdout).with_context(|| format!("scrape output {:?}", out.stdout))
}

fn sample(samples: &Samples, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

#[test]
fn counters_move_with_traffic() -> Result<()> {
    let metrics_port = free_port()?;
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let Star { a, b, mut c } = start_star((
        "metrics",
        json!({"address": format!("127.0.0.1:{metrics_port}")}),
    ))?;

    let before = scrape(&url)?;
    ensure!(
        sample(&before, "receptor_known_nodes{}") == 3.0,
        "{before:?}"
    );
    ensure!(sample(&before, "receptor_routes{}") == 2.0, "{before:?}");
    ensure!(
        sample(&before, "receptor_link_cost{peer=a}") == 1.0
            && sample(&before, "receptor_link_transitions_total{peer=c,to=up}") == 1.0,
        "{before:?}"
    );
    ensure!(
        sample(&before, "receptor_routing_updates_total{event=received}") > 0.0
            && sample(&before, "receptor_routing_updates_total{event=sent}") > 0.0,
        "{before:?}"
    );

    // Traffic while scraping: pings a -> c through b.
    const PINGS: &str = "5";
    let socket = a.socket();
    let pinger = thread::spawn(move || {
        receptor_tests::receptorctl::run_receptorctl(&socket, &["ping", "c", "--count", PINGS])
    });
    let mut during = Vec::new();
    while !pinger.is_finished() {
        during.push(scrape(&url)?);
    }
    let pinged = pinger
        .join()
        .map_err(|_| anyhow::anyhow!("ping thread panicked"))??
        .ok()?;
    ensure!(
        pinged.stdout.matches("Reply from c").count() == 5,
        "{}",
        pinged.stdout
    );
    a.receptorctl(&["traceroute", "c"])?.ok()?;
    // A ping from b to a node nobody knows is dropped at b: no route.
    let lost = b.receptorctl(&["ping", "nosuch", "--count", "1"])?;
    ensure!(!lost.stdout.contains("Reply from"), "{}", lost.stdout);
    let work = a
        .receptorctl(&[
            "work",
            "submit",
            "cat",
            "--node",
            "b",
            "--payload-literal",
            "hello metrics",
            "-f",
        ])?
        .ok()?;
    ensure!(work.stdout.trim_end() == "hello metrics", "{}", work.stdout);

    let after = wait_until(
        receptor_tests::wait::CONVERGE_TIMEOUT,
        "the unit's counters",
        || {
            let s = scrape(&url)?;
            Ok((sample(&s, "receptor_units{state=Succeeded,worktype=cat}") == 1.0).then_some(s))
        },
    )?;
    let grew = |key: &str, by: f64| -> Result<()> {
        let (x, y) = (sample(&before, key), sample(&after, key));
        ensure!(y - x >= by, "{key}: {x} -> {y}, expected at least +{by}");
        Ok(())
    };
    // 5 pings and 5 replies cross b, plus the traceroute's answered probe.
    grew("receptor_datagrams_forwarded_total{}", 10.0)?;
    grew("receptor_datagrams_dropped_total{reason=hop_limit}", 1.0)?;
    grew("receptor_datagrams_dropped_total{reason=unreachable}", 1.0)?;
    for peer in ["a", "c"] {
        for dir in ["in", "out"] {
            grew(
                &format!("receptor_link_messages_total{{direction={dir},peer={peer}}}"),
                5.0,
            )?;
            grew(
                &format!("receptor_link_bytes_total{{direction={dir},peer={peer}}}"),
                5.0 * 40.0,
            )?;
        }
    }
    grew("receptor_unit_starts_total{worktype=cat}", 1.0)?;
    grew("receptor_result_bytes_written_total{}", 13.0)?;
    grew("receptor_result_bytes_streamed_total{}", 13.0)?;
    grew("receptor_plugin_calls_total{plugin=command}", 1.0)?;
    grew("receptor_control_connections_total{}", 1.0)?;
    // Counters never go down between scrapes.
    let mut previous = &before;
    for s in during.iter().chain(std::iter::once(&after)) {
        let key = "receptor_datagrams_forwarded_total{}";
        ensure!(sample(s, key) >= sample(previous, key), "{key} went down");
        previous = s;
    }

    // The control command, asked across the mesh from a, tells the same story.
    let mut conn = a.control()?;
    ensure!(
        conn.command("connect b control")? == "Connecting",
        "connect refused"
    );
    ensure!(
        conn.read_line()? == "Receptor Control, node b",
        "no greeting from b"
    );
    let from_a: Value = conn.command_json("metrics")?;
    ensure!(from_a["node"] == "b", "{from_a}");
    ensure!(from_a["mesh"]["known_nodes"] == 3, "{from_a}");
    ensure!(from_a["work_types"]["cat"]["started"] == 1, "{from_a}");
    ensure!(
        from_a["mesh"]["links"]
            .as_array()
            .is_some_and(|l| l.len() == 2),
        "{from_a}"
    );

    // A link that goes down is counted.
    c.kill();
    wait_until(
        receptor_tests::wait::CONVERGE_TIMEOUT,
        "c's link to go down",
        || {
            let s = scrape(&url)?;
            Ok(
                (sample(&s, "receptor_link_transitions_total{peer=c,to=down}") == 1.0)
                    .then_some(()),
            )
        },
    )?;
    Ok(())
}
