//! Scenario: traffic between two Go nodes that can only reach each other through a middle
//! node (`left - middle - right`): datagrams (ping), a stream (`connect` to the far node's
//! control service) and remote work whose payload and results (256 KiB each way) cross the
//! middle node.

use anyhow::{ensure, Result};
use receptor_tests::topology::{line_routes, start_line_with};
use receptor_tests::Implementation::{self, Go, Rust};

use crate::backends_common::remote_cat_of;

const NAMES: [&str; 3] = ["left", "middle", "right"];

/// 256 KiB of numbered lines: big enough to span many mesh datagrams and QUIC packets.
fn payload() -> Vec<u8> {
    let mut out = Vec::with_capacity(256 * 1024 + 64);
    let mut i = 0u32;
    while out.len() < 256 * 1024 {
        out.extend_from_slice(
            format!("line {i:06} of the payload routed through the middle\n").as_bytes(),
        );
        i += 1;
    }
    out
}

pub(crate) fn routed_between_go_nodes(middle: Implementation) -> Result<()> {
    let nodes = start_line_with(
        &[("left", Go), ("middle", middle), ("right", Go)],
        &[1.0, 1.0],
        |i, config| {
            if i == 2 {
                config.work_command("cat", "cat", None)
            } else {
                config
            }
        },
    )?;
    let (left, right) = (&nodes[0], &nodes[2]);
    left.wait_for_routes(&line_routes(&NAMES, 0))?;
    right.wait_for_routes(&line_routes(&NAMES, 2))?;

    // Datagrams.
    let ping = left.command_json("ping right")?;
    ensure!(
        ping["Success"] == true && ping["From"] == "right",
        "ping reply {ping}"
    );

    // A stream: left's control service bridges us to right's control service over the mesh.
    let mut ctl = left.control()?;
    ensure!(
        ctl.command("connect right control")? == "Connecting",
        "connect refused"
    );
    ensure!(
        ctl.read_line()? == "Receptor Control, node right",
        "no greeting from right"
    );
    let status = ctl.command_json(r#"{"command":"status","requested_fields":["NodeID"]}"#)?;
    ensure!(
        status["NodeID"] == "right",
        "status over the bridge: {status}"
    );
    drop(ctl);

    // Remote work: left submits to right; the payload goes out and the results come back.
    // First wait for right's advertisement (with its work types) to reach left.
    remote_cat_of(left, right, &payload())
}

mod go {
    use super::*;

    #[test]
    fn through_go() -> Result<()> {
        routed_between_go_nodes(Go)
    }
}

mod rust_nodes {
    use super::*;

    #[test]
    fn through_rust() -> Result<()> {
        routed_between_go_nodes(Rust)
    }
}
