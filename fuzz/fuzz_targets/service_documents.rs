//! Service and EndpointSlice documents, as `netctl service apply -f` and the agent
//! read them (YAML or JSON, any number of documents). The body is
//! `strait_services::fuzzing::documents`, which services/tests/fuzz_smoke.rs also runs
//! under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_services::fuzzing::documents(data));
