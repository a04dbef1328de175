//! Any bytes as one Encrypted Fragment payload (RFC 7383): next payload, then its body.
//! The body is `strait_ike::fuzzing::encrypted_fragment`, which ike/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_ike::fuzzing::encrypted_fragment(data));
