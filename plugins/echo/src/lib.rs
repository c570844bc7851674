//! The `echo` receptor plugin: a work type whose units copy their payload to their
//! results, like a `work-command` running `cat`.
//!
//! Configured by an `echo-worktype` section; its `worktype` key names the type
//! (default `echo`), with the usual `verifysignature` and `allowruntimeparams` keys.
//! A unit reports `Running`, copies stdin to stdout on a thread of its own and reports
//! `Succeeded` with the detail `exit status 0` (what a `cat` command unit shows), or
//! `Failed` with the I/O error, or `Canceled` if cancelled before it finished.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use receptor_plugin_sdk::describe::work_type_keys;
use receptor_plugin_sdk::{
    export_plugin, Plugin, PluginError, Progress, Section, SectionDesc, StartRequest, UnitState,
    WorkHandle, WorkType, WorkTypeInfo,
};

/// Copy buffer size.
const CHUNK: usize = 128 * 1024;

/// A configured echo work type.
pub struct Echo {
    info: WorkTypeInfo,
}

impl Echo {
    /// Reads an `echo-worktype` section.
    pub fn from_section(section: &Section) -> Result<Echo, PluginError> {
        section.reject_unknown_keys(&["worktype", "verifysignature", "allowruntimeparams"], &[])?;
        Ok(Echo {
            info: WorkTypeInfo::from_section(section, Some("echo"))?,
        })
    }
}

/// A running echo unit.
struct EchoUnit {
    cancel: Arc<AtomicBool>,
}

impl WorkHandle for EchoUnit {
    fn cancel(&self) -> Result<(), PluginError> {
        self.cancel.store(true, Ordering::Relaxed);
        Ok(())
    }
}

impl WorkType for Echo {
    fn info(&self) -> WorkTypeInfo {
        self.info.clone()
    }

    fn start(
        &self,
        request: StartRequest,
        progress: Progress,
    ) -> Result<Box<dyn WorkHandle>, PluginError> {
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        progress.report(UnitState::Running, "Running", None);
        std::thread::Builder::new()
            .name(format!("echo {}", request.unit_id))
            .spawn(move || {
                let (state, detail) = match copy(request, &flag) {
                    Ok(true) => (UnitState::Canceled, "Canceled".to_owned()),
                    Ok(false) => (UnitState::Succeeded, "exit status 0".to_owned()),
                    Err(e) => (UnitState::Failed, format!("echo failed: {e}")),
                };
                progress.report(state, &detail, None);
            })?;
        Ok(Box::new(EchoUnit { cancel }))
    }
}

/// Copies stdin to stdout; returns true if cancelled first.
fn copy(mut request: StartRequest, cancel: &AtomicBool) -> std::io::Result<bool> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        if cancel.load(Ordering::Relaxed) {
            return Ok(true);
        }
        let n = match request.stdin.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        request.stdout.write_all(&buf[..n])?;
    }
}

/// Describes the plugin to the host, with its section's fields.
pub fn plugin() -> Plugin {
    Plugin::new("echo", env!("CARGO_PKG_VERSION"))
        .work_type("echo-worktype", |section: &Section| {
            Ok(Box::new(Echo::from_section(section)?) as Box<dyn WorkType>)
        })
        .describe(
            SectionDesc::new("Work type whose units copy their payload to their results")
                .fields([
                    work_type_keys::worktype(Some("echo")),
                    work_type_keys::verifysignature(),
                    work_type_keys::allowruntimeparams(),
                ])
                .bare_field("worktype"),
        )
}

export_plugin!(plugin);
