#![no_main]
//! Fuzz target `work_signature`: see `receptor_fuzz_targets::work_signature`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_fuzz_targets::work_signature(data));
