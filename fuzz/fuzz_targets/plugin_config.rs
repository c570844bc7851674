#![no_main]
//! Fuzz target `plugin_config`: see `receptor_fuzz_targets::plugin_config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_fuzz_targets::plugin_config(data));
