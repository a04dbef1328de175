//! Any bytes as the body of a BGP UPDATE behind a valid header: path attributes, MP_REACH/MP_UNREACH, NLRI, RFC 7606 error handling.
//! The body is `strait_bgp::fuzzing::update`, which bgp/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_bgp::fuzzing::update(data));
