//! Any bytes as a UDP 4500 datagram into a fixed inbound ESP SA: demultiplexed, opened, the inner packet read; nothing may panic, and nothing may open without the key.
//! The body is `strait_esp::fuzzing::inbound`, which esp/tests/fuzz_smoke.rs also runs under `cargo test`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strait_esp::fuzzing::inbound(data));
