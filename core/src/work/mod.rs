//! Work units: the on-disk store, their state machine, results and the `work` command.
//!
//! A unit of work is one run of a work type (a `work-command`, a plugin type, later a
//! `remote` unit that drives another node). Units are kept exactly as Go receptor 1.6.9
//! keeps them, so that tools and operators find what they expect:
//!
//! * `<datadir>/<node id>/<unit id>/` holds `status` (JSON), `stdin` (the payload) and
//!   `stdout` (the results, a command's stdout and stderr merged);
//! * unit ids are the node id's letters and digits plus 8 random characters;
//! * states are Pending (0), Running (1), Succeeded (2), Failed (3) and Canceled (4).
//!
//! Modules: [`store`] owns the table of units and their folders, [`status`] the status
//! file format, [`results`] result streaming, [`worktype`] the contract with the work
//! types that run units, [`remote`] the `remote` work type (units that run on another
//! node), [`signing`] work signatures, [`request`] the parsing of `work` commands.
//! [`control`], the `work` control command, sits on top: it uses the others and none of
//! them uses it. The store knows no work type by name; what is particular to a type
//! (such as hiding the secrets in a remote unit's `ExtraData`) is a method of
//! [`worktype::WorkType`].

pub mod control;
pub mod inotify;
mod payload;
pub mod remote;
pub mod request;
pub mod results;
pub mod signing;
pub mod status;
pub mod store;
pub mod unitid;
pub mod worktype;

pub use control::WorkCommand;
pub use status::UnitStatus;
pub use store::{Unit, WorkError, WorkTypeInfo, Workceptor};

#[cfg(test)]
mod command_tests;
#[cfg(test)]
mod tests;
