//! Any bytes as the body of an SA payload: proposals, transforms, attributes.
//! The body is `strait_ike::fuzzing::sa`, which ike/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_ike::fuzzing::sa(data));
