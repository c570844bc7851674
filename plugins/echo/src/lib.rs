//! The `echo` receptor plugin.
