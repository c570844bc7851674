//! The command table: command word → implementation.
//!
//! Other modules add their commands here (`work` from the work module, `connect` from
//! the streams module); the session loop looks commands up by name for every line.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use super::command::ControlCommand;
use super::ControlError;

/// Shared, cheaply cloneable table of control commands.
#[derive(Clone, Default)]
pub struct CommandRegistry {
    commands: Arc<RwLock<HashMap<&'static str, Arc<dyn ControlCommand>>>>,
}

impl std::fmt::Debug for CommandRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRegistry")
            .field("commands", &self.names())
            .finish()
    }
}

impl CommandRegistry {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a command under its [`ControlCommand::name`]; a name can be taken once.
    pub fn register(&self, command: Arc<dyn ControlCommand>) -> Result<(), ControlError> {
        let name = command.name();
        let mut commands = self
            .commands
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if commands.contains_key(name) {
            return Err(ControlError::DuplicateCommand(name.to_owned()));
        }
        commands.insert(name, command);
        Ok(())
    }

    /// The command registered under `name` (exact, case-sensitive match).
    pub fn get(&self, name: &str) -> Option<Arc<dyn ControlCommand>> {
        self.commands
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Registered command names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self
            .commands
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        names.sort_unstable();
        names
    }
}
