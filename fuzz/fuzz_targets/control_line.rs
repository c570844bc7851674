#![no_main]
//! Fuzz target `control_line`: see `receptor_fuzz_targets::control_line`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_fuzz_targets::control_line(data));
