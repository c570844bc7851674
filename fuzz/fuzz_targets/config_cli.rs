#![no_main]
//! Fuzz target `config_cli`: see `receptor_fuzz_targets::config_cli`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_fuzz_targets::config_cli(data));
