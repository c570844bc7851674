#![no_main]
//! Fuzz target `config_yaml`: see `receptor_fuzz_targets::config_yaml`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_fuzz_targets::config_yaml(data));
