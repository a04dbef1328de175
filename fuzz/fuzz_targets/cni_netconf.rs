//! The network configuration on stdin, as every verb reads it (prevResult included).
//! The body is `strait_cni::fuzzing::netconf`, which cni/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_cni::fuzzing::netconf(data));
