//! Any bytes as the body of an IDi/IDr payload, every ID type.
//! The body is `strait_ike::fuzzing::id`, which ike/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_ike::fuzzing::id(data));
