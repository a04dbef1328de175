//! Any bytes as a series of authentic (or corrupted) fragments into one IKE SA's reassembly.
//! The body is `strait_ike::fuzzing::reassembly`, which ike/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_ike::fuzzing::reassembly(data));
