//! A prevResult alone: decoded, chained before strait's result, rendered per version.
//! The body is `strait_cni::fuzzing::prev_result`, which cni/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_cni::fuzzing::prev_result(data));
