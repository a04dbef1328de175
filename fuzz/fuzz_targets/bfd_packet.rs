//! One BFD control packet (RFC 5880 §4.1), decoded and round-tripped.
//! The body is `strait_bgp::fuzzing::bfd_packet`, which bgp/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_bgp::fuzzing::bfd_packet(data));
