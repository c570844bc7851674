//! The control service: transports, command parsing and command implementations.

pub mod command;
