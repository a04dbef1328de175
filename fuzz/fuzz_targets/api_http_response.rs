//! A raw HTTP response on the agent socket, as the blocking client parses it.
//! The body is `strait_api::fuzzing::http_response`, which api/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_api::fuzzing::http_response(data));
