//! The `tcp` receptor plugin.
