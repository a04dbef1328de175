//! Any bytes as the body of a CERTREQ payload.
//! The body is `strait_ike::fuzzing::certreq`, which ike/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_ike::fuzzing::certreq(data));
