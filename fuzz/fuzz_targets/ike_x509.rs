//! Any bytes as a CA certificate, a peer's CERT payloads (X.509) and its AUTH data:
//! parsed, chained to the CA, the identity and signature checked.
//! The body is `strait_ike::fuzzing::x509`, which ike/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_ike::fuzzing::x509(data));
