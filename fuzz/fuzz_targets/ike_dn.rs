//! Any bytes as an ID_DER_ASN1_DN: printed as `CN=…,O=…` and matched against other
//! distinguished names.
//! The body is `strait_ike::fuzzing::dn`, which ike/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_ike::fuzzing::dn(data));
