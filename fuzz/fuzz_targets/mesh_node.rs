#![no_main]
//! Fuzz target `mesh_node`: see `receptor_fuzz_targets::mesh_node`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| receptor_fuzz_targets::mesh_node(data));
