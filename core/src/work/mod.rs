//! Work units: the on-disk store, their state machine, results and remote units.

pub mod worktype;
