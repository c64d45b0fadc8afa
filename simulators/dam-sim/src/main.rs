//! dam-sim binary.
fn main() {}
