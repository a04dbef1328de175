//! The CNI_* environment and CNI_ARGS, as `KEY=VALUE` lines.
//! The body is `strait_cni::fuzzing::env_and_args`, which cni/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_cni::fuzzing::env_and_args(data));
