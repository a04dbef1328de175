//! Any bytes as the answer to an initiator's IKE_SA_INIT (its SPI patched in), then its timers.
//! The body is `strait_ike::fuzzing::initiator_response`, which ike/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_ike::fuzzing::initiator_response(data));
