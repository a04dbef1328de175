//! Any bytes as a datagram to a fresh IKE responder (IKE_SA_INIT handling, cookies, error answers), then its timers.
//! The body is `strait_ike::fuzzing::responder_datagram`, which ike/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_ike::fuzzing::responder_datagram(data));
