#![no_main]
//! Fuzz target `frame`: see `receptor_fuzz_targets::frame`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_fuzz_targets::frame(data));
