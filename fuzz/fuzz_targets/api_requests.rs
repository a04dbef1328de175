//! A local API request body, decoded as every request type straitd accepts.
//! The body is `strait_api::fuzzing::requests`, which api/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_api::fuzzing::requests(data));
