//! Any bytes as the body of a BGP OPEN behind a valid header: optional parameters and capabilities.
//! The body is `strait_bgp::fuzzing::open`, which bgp/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_bgp::fuzzing::open(data));
