//! The plugin's own async runtime.
//!
//! A plugin never runs on the host's runtime: a `cdylib` carries its own copy of tokio,
//! whose thread-locals the host's runtime does not set. Every instance of this plugin
//! shares one multi-threaded runtime, started on first use and kept as long as the
//! library is loaded (a plugin that started a backend is never unloaded). Sessions run on
//! it after their instance stops.

use std::sync::OnceLock;

use receptor_plugin_sdk::PluginError;
use tokio::runtime::{Builder, Runtime};

/// Most worker threads, whatever the machine: websocket pumping is light work.
const MAX_WORKERS: usize = 4;

/// The runtime, started on first call.
pub fn get() -> Result<&'static Runtime, PluginError> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, MAX_WORKERS);
    let rt = Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("receptor-ws")
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| PluginError::new(format!("cannot start the websocket runtime: {e}")))?;
    // Another thread may have won the race; its runtime is used and ours dropped.
    Ok(RUNTIME.get_or_init(|| rt))
}
