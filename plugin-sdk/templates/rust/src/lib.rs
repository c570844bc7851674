//! `hello`: a minimal receptor work type. Each unit writes `hello, ` and then its
//! payload to its results. Configure it with
//!
//! ```yaml
//! - hello-worktype:
//!     worktype: hello        # the name clients submit to (the default)
//!     greeting: hello        # what to write first (the default)
//! ```
//!
//! or `receptor --hello-worktype hello ...` on the command line, then
//! `receptorctl work submit hello --payload-literal world -f` prints `hello, world`.

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use receptor_plugin_sdk::{
    export_plugin, Field, FieldType, Plugin, PluginError, Progress, Section, SectionDesc,
    StartRequest, UnitState, WorkHandle, WorkType, WorkTypeInfo,
};

/// A configured `hello` work type.
struct Hello {
    info: WorkTypeInfo,
    greeting: String,
}

/// A running unit: cancelling sets the flag its thread checks between reads.
struct Unit {
    cancelled: Arc<AtomicBool>,
}

impl WorkHandle for Unit {
    fn cancel(&self) -> Result<(), PluginError> {
        self.cancelled.store(true, Ordering::Relaxed);
        Ok(())
    }
}

impl WorkType for Hello {
    fn info(&self) -> WorkTypeInfo {
        self.info.clone()
    }

    fn start(
        &self,
        mut req: StartRequest,
        progress: Progress,
    ) -> Result<Box<dyn WorkHandle>, PluginError> {
        let cancelled = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancelled);
        let greeting = format!("{}, ", self.greeting);
        progress.report(UnitState::Running, "Running", None);
        // Never block the caller: the unit runs on a thread of its own, which owns the
        // unit's files (closed when it ends) and the progress handle.
        std::thread::spawn(move || {
            let copied = (|| -> std::io::Result<bool> {
                req.stdout.write_all(greeting.as_bytes())?;
                let mut buf = [0u8; 65536];
                loop {
                    if flag.load(Ordering::Relaxed) {
                        return Ok(false);
                    }
                    match req.stdin.read(&mut buf) {
                        Ok(0) => return Ok(true),
                        Ok(n) => req.stdout.write_all(&buf[..n])?,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            })();
            drop(req);
            match copied {
                Ok(true) => progress.report(UnitState::Succeeded, "Greeted", None),
                Ok(false) => progress.report(UnitState::Canceled, "Canceled", None),
                Err(e) => progress.report(UnitState::Failed, &format!("hello: {e}"), None),
            }
        });
        Ok(Box::new(Unit { cancelled }))
    }

    // `reattach` is not overridden: after a node restart, the default says this work
    // type cannot follow a unit, and the node marks it failed.
}

fn create(section: &Section) -> Result<Box<dyn WorkType>, PluginError> {
    Ok(Box::new(Hello {
        info: WorkTypeInfo::from_section(section, Some("hello"))?,
        greeting: section
            .string("greeting")?
            .unwrap_or_else(|| "hello".to_owned()),
    }))
}

/// What the plugin provides and how its section reads (the node checks the section
/// against this description, lists it in `--help`, and takes `--hello-worktype NAME`).
fn plugin() -> Plugin {
    Plugin::new("hello", env!("CARGO_PKG_VERSION"))
        .work_type("hello-worktype", create)
        .describe(
            SectionDesc::new("Write a greeting, then the payload")
                .field(
                    Field::new("worktype", FieldType::String, "Name clients submit to")
                        .default("hello"),
                )
                .field(
                    Field::new("greeting", FieldType::String, "What to write first")
                        .default("hello"),
                )
                .field(Field::new(
                    "verifysignature",
                    FieldType::Bool,
                    "Require signed submissions",
                ))
                .field(Field::new(
                    "allowruntimeparams",
                    FieldType::Bool,
                    "Accept runtime parameters",
                ))
                .bare_field("worktype")
                .v2_key("hello-worktypes"),
        )
}

export_plugin!(plugin);
