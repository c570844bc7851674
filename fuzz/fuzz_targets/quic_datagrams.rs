#![no_main]
//! Fuzz target `quic_datagrams`: see `receptor_fuzz_targets::quic_datagrams`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_fuzz_targets::quic_datagrams(data));
