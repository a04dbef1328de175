//! Policy documents, as `netctl policy apply -f` and the agent read them (YAML or JSON,
//! any number of documents). The body is `strait_policy::fuzzing::documents`, which
//! policy/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_policy::fuzzing::documents(data));
