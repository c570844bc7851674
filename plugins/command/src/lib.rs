//! The `command` receptor plugin.
