//! External IPsec peer documents, as `netctl ipsec peer apply -f` reads them (YAML or
//! JSON, one peer or lists) and as the agent reads a `PUT` body or a stored record.
//! The body is `strait_api::fuzzing::peer_documents`, which api/tests/fuzz_smoke.rs
//! also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_api::fuzzing::peer_documents(data));
