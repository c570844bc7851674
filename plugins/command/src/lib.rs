//! The `command` receptor plugin: receptor's `work-command` work type.
//!
//! A `work-command` runs a program for each unit: the unit's payload is its stdin, its
//! stdout and stderr go (merged, straight from the process, no copying) to the unit's
//! results file. Parameters are split like a shell would split them but no shell runs.
//! The program runs in its own session and process group under a small supervisor
//! ([`spawn`]), so it survives a restart of the node, its exit status is never lost,
//! and a cancel kills everything it started.
//!
//! * [`config`]: the `work-command` configuration section;
//! * [`shlex`]: splitting parameters as Go receptor does (from the SDK, shared with the
//!   host);
//! * [`spawn`]: the supervisor process (from the SDK, which also runs it from the host's
//!   spawner process, [`receptor_plugin_sdk::spawner`]);
//! * [`runner`]: starting, following, cancelling and re-attaching units;
//! * this module: the plugin as the host sees it ([`plugin`], exported with the SDK).

use std::sync::Arc;

use receptor_plugin_sdk::{
    export_plugin, Plugin, PluginError, Progress, ReattachRequest, Section, StartRequest,
    WorkHandle, WorkType, WorkTypeInfo,
};

pub mod config;
pub mod runner;
pub use receptor_plugin_sdk::shlex;
pub use receptor_plugin_sdk::spawn;

#[cfg(test)]
mod tests;

use config::CommandConfig;
use runner::{CommandWork, Report, Reporter, RunningCommand};

/// A configured `work-command` type.
#[derive(Debug)]
pub struct CommandType {
    work: CommandWork,
}

impl CommandType {
    /// Reads a `work-command` section.
    pub fn from_section(section: &Section) -> Result<CommandType, PluginError> {
        Ok(CommandType {
            work: CommandWork::new(CommandConfig::from_section(section)?),
        })
    }
}

/// A unit started or re-attached by a [`CommandType`].
struct CommandUnit(RunningCommand);

impl WorkHandle for CommandUnit {
    fn cancel(&self) -> Result<(), PluginError> {
        self.0.cancel().map_err(PluginError::new)
    }
}

fn reporter(progress: Progress) -> Reporter {
    Arc::new(move |r: Report| progress.report(r.state, &r.detail, r.extra.as_ref()))
}

impl WorkType for CommandType {
    fn info(&self) -> WorkTypeInfo {
        self.work.config().info()
    }

    fn start(
        &self,
        request: StartRequest,
        progress: Progress,
    ) -> Result<Box<dyn WorkHandle>, PluginError> {
        let running = self.work.start(
            &request.unit_dir,
            request.stdin,
            request.stdout,
            &request.params,
            reporter(progress),
        )?;
        Ok(Box::new(CommandUnit(running)))
    }

    fn reattach(
        &self,
        request: ReattachRequest,
        progress: Progress,
    ) -> Result<Box<dyn WorkHandle>, PluginError> {
        let running = self.work.reattach(
            &request.unit_dir,
            request.extra.as_ref(),
            reporter(progress),
        )?;
        Ok(Box::new(CommandUnit(running)))
    }
}

/// Describes the plugin to the host: it claims `work-command` sections, whose fields it
/// describes.
pub fn plugin() -> Plugin {
    use receptor_plugin_sdk::describe::work_type_keys;
    use receptor_plugin_sdk::{Field, FieldType, SectionDesc};
    Plugin::new("command", env!("CARGO_PKG_VERSION"))
        .work_type("work-command", |section| {
            Ok(Box::new(CommandType::from_section(section)?) as Box<dyn WorkType>)
        })
        .describe(
            SectionDesc::new("Work type that runs an external command")
                .fields([
                    work_type_keys::worktype(None),
                    Field::new(
                        "command",
                        FieldType::String,
                        "Command that processes a unit of work",
                    )
                    .required(),
                    Field::new("params", FieldType::String, "Command-line parameters"),
                    work_type_keys::allowruntimeparams(),
                    work_type_keys::verifysignature(),
                ])
                .v2_key("work-commands"),
        )
}

export_plugin!(plugin);
