//! Waiting for a condition with a deadline: the only way tests synchronise with nodes.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// How long a mesh gets to converge (routes, advertisements) in tests. Generous: debug
/// builds on a loaded 2-core machine.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Calls `probe` until it returns `Ok(Some(value))` or `timeout` passes.
///
/// `Ok(None)` means "not yet"; an `Err` is treated as "not yet" too (a node may not be up),
/// and the last one is included in the timeout error together with `what`.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match probe() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            match last_error {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        thread::sleep(POLL_INTERVAL);
    }
}
