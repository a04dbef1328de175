//! Any bytes as one BGP message, header included, decoded in a 2-octet and in a 4-octet/IPv6 session; what decodes must re-encode to the same message.
//! The body is `strait_bgp::fuzzing::message`, which bgp/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_bgp::fuzzing::message(data));
