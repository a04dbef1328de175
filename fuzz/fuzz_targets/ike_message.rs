//! Any bytes as one whole IKEv2 datagram: header, payload chain, the SK payload still sealed.
//! The body is `strait_ike::fuzzing::message`, which ike/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_ike::fuzzing::message(data));
