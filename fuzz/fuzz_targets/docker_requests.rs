//! A body on the Docker plugin socket, decoded as every remote driver request type.
//! The body is `strait_api::fuzzing::docker_requests`, which api/tests/fuzz_smoke.rs also
//! runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_api::fuzzing::docker_requests(data));
