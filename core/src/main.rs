//! The `receptor` daemon.
fn main() {}
