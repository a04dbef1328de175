//! The fuzz target's body (`strait_esp::fuzzing::inbound`, run by `fuzz/` under
//! libFuzzer) on a fixed, deterministic set of inputs, so every `cargo test` covers
//! what the fuzzer covers on a stable toolchain: valid ESP packets sealed with the
//! body's SA, IKE and keepalive datagrams, edge cases, and seeded mutations of them.

use strait_esp::fuzzing::{self, SPI};
use strait_esp::{OutboundSa, encap};
use strait_fuzz_smoke::{self as smoke, Mutations};

/// Bytes a mutation likes to insert: the marker and keepalive octets, SPI and
/// sequence-number edges, pad lengths, next headers.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x02, 0x03, 0x04, 0x10, 0x29, 0x32, 0x45, 0x60, 0x7f, 0x80, 0xfe, 0xff,
];

#[test]
fn esp_inbound() {
    let tx = OutboundSa::new(SPI, &fuzzing::key(), true);
    let inner = [
        0x45, 0, 0, 20, 0, 0, 0, 0, 64, 1, 0, 0, 10, 1, 0, 1, 10, 2, 0, 1,
    ];
    let mut seeds = Vec::new();
    for payload in [&inner[..], &[], &[7; 3], &[0x60; 40]] {
        let mut p = Vec::new();
        tx.seal(4, payload, &mut p).unwrap();
        seeds.push(p);
    }
    seeds.extend([
        encap::ike_datagram(b"ike"),
        encap::NAT_KEEPALIVE.to_vec(),
        Vec::new(),
        vec![0, 0, 0x10, 0x01, 0, 0, 0, 1],
    ]);
    // The valid seeds open, so the mutations start from packets that reach the
    // decryption and the trailer checks.
    for s in &seeds[..4] {
        let rx = strait_esp::InboundSa::with_default_window(SPI, &fuzzing::key(), true);
        rx.open(&mut s.clone()).expect("seed opens");
    }
    let mutations = Mutations {
        count: 3000,
        rng_seed: 0xe5b0_0001,
        interesting: INTERESTING,
    };
    smoke::run(fuzzing::inbound, seeds, &mutations);
}
