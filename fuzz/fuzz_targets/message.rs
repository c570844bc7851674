#![no_main]
//! Fuzz target `message`: see `receptor_fuzz_targets::message`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_fuzz_targets::message(data));
