//! Any bytes as a payload chain (the plaintext of an SK payload), its first type in the first byte.
//! The body is `strait_ike::fuzzing::chain`, which ike/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_ike::fuzzing::chain(data));
