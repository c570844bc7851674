#![no_main]
//! Fuzz target `unit_status`: see `receptor_fuzz_targets::unit_status`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_fuzz_targets::unit_status(data));
