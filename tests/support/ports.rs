//! Ports for test nodes that cannot collide when tests run in parallel.
//!
//! cargo-nextest runs every test in its own process, and a receptor child must bind the port
//! itself, so "bind port 0 and pass the number on" is not enough: between our release and the
//! child's bind, the kernel may hand the same ephemeral port to another process (a parallel
//! test's listener, or the source port of any outgoing connection).
//!
//! Instead, ports come from a fixed range *below* the kernel's ephemeral range (which starts at
//! 32768 by default, so the kernel never hands these out on its own), split into blocks of
//! [`BLOCK_SIZE`] ports. A test process claims a whole block by taking an exclusive `flock` on
//! a per-block lock file in the temp folder and keeps it until the process exits (the kernel
//! drops the lock even on a crash or SIGKILL, so nothing leaks). Inside a process a counter
//! hands out the block's ports one by one (threads of a plain `cargo test` run share it), and
//! a new block is claimed when one runs out. Each port is checked to be free on 127.0.0.1 for
//! both TCP and UDP before it is handed out, which skips ports that something outside the
//! tests (say, a hand-started node) happens to use.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// The ports handed out; kept below the Linux default ephemeral range (32768-60999).
pub const PORT_RANGE: Range<u16> = 20000..32000;
/// Ports per claimed block.
pub const BLOCK_SIZE: u16 = 16;

struct Allocator {
    /// Lock files of the claimed blocks: holding them keeps the blocks ours.
    held: Vec<File>,
    next: u16,
    end: u16,
}

static ALLOCATOR: Mutex<Allocator> = Mutex::new(Allocator {
    held: Vec::new(),
    next: 0,
    end: 0,
});

/// Returns a port on 127.0.0.1 that no other test process will be given while this
/// process runs, and that was free (TCP and UDP) when this function returned.
pub fn free_port() -> Result<u16> {
    let mut alloc = ALLOCATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        if alloc.next >= alloc.end {
            let (file, block) = claim_block()?;
            alloc.held.push(file);
            alloc.next = block.start;
            alloc.end = block.end;
        }
        let port = alloc.next;
        alloc.next += 1;
        if is_free(port) {
            return Ok(port);
        }
    }
}

fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// The lock file of the block that holds `port` (only meaningful for ports in [`PORT_RANGE`]).
pub fn block_lock_path(port: u16) -> Result<PathBuf> {
    let block = port.saturating_sub(PORT_RANGE.start) / BLOCK_SIZE;
    Ok(lock_dir()?.join(format!("block-{block}.lock")))
}

fn lock_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join("receptor-tests-ports");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Claims the first unlocked block, starting the search at a spot that differs per process
/// so that parallel test processes rarely contend for the same lock file.
fn claim_block() -> Result<(File, Range<u16>)> {
    let blocks = (PORT_RANGE.end - PORT_RANGE.start) / BLOCK_SIZE;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seed = std::process::id().wrapping_mul(7919).wrapping_add(nanos);
    let first = (seed % u32::from(blocks)) as u16;
    for i in 0..blocks {
        let block = (first + i) % blocks;
        let path = block_lock_path(PORT_RANGE.start + block * BLOCK_SIZE)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {
                let start = PORT_RANGE.start + block * BLOCK_SIZE;
                return Ok((file, start..start + BLOCK_SIZE));
            }
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
    bail!("all {blocks} port blocks in {PORT_RANGE:?} are claimed by other processes")
}
