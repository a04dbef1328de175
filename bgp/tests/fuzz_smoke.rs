//! The fuzz targets' bodies (`strait_bgp::fuzzing`, run by `fuzz/` under libFuzzer) on
//! a fixed, deterministic set of inputs, so every `cargo test` covers what the fuzzer
//! covers on a stable toolchain: the byte vectors of the codec tests, edge cases, and
//! seeded pseudo-random mutations of them. The bodies panic on a finding (a decoder
//! panic, or a decoded message whose encoding decodes to something else).

use strait_bgp::fuzzing;
use strait_fuzz_smoke::{self as smoke, Mutations};

const MUTATIONS: usize = 3000;

/// Bytes a mutation likes to insert: marker bytes, lengths at their edges, attribute
/// flags (optional/transitive/partial/extended), type codes, prefix lengths.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x0e, 0x0f, 0x10, 0x11, 0x13, 0x18, 0x20, 0x21, 0x40, 0x41,
    0x50, 0x7f, 0x80, 0x81, 0x90, 0xc0, 0xd0, 0xe0, 0xfe, 0xff,
];

fn run(body: fn(&[u8]), seeds: Vec<Vec<u8>>, rng_seed: u64) {
    let mutations = Mutations {
        count: MUTATIONS,
        rng_seed,
        interesting: INTERESTING,
    };
    smoke::run(body, seeds, &mutations);
}

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

const MARKER: &str = "ffffffffffffffffffffffffffffffff";

/// OPEN bodies: FRR-like capabilities, 4-octet AS, unknown capabilities, GR, extended
/// next hop (RFC 8950).
fn open_bodies() -> Vec<Vec<u8>> {
    [
        "04 fde9 00b4 c0000201 1e 02 1c 01040001 0001 01040002 0001 0200 41040000fde9 4006007800010180",
        "04 fde9 00b4 c0000201 26 0206 010400010001 0206 010400020001 0202 0200 0206 41040000fde9 0208 4006007800010180",
        "04 5ba0 005a 0a000001 08 02 06 41 04 fa56ea01",
        "04 fde9 0000 c0000201 07 02 05 46 00 c8 01 aa",
        "04 fde9 0003 c0000201 00",
        "04 fde9 00b4 c0000201 18 0206 010400010001 020e 050c 000100010002 000100800002",
    ]
    .iter()
    .map(|s| hex(s))
    .collect()
}

/// UPDATE bodies: IPv4 with withdrawals, IPv6 MP_REACH with a link-local next hop,
/// End-of-RIB, AS4_PATH, unknown transitive attributes, extended lengths, IPv4 routes
/// with a 16- and a 32-octet IPv6 next hop (RFC 8950).
fn update_bodies() -> Vec<Vec<u8>> {
    [
        "0003 100a09 001b 40010100 40020602 02fde9fdea 4003 04c0000201 800404 00000000 100a01 18c00002",
        "0000 0043 40010100 4002060201fa56ea01 800e2c 000201 20 20010db8000000000000000000000001 fe800000000000000000000000000001 00 3020010db80001 40050400000064",
        "0000 0000",
        "0000 0006 800f03000201",
        "0000 001b 40010100 4002040201 5ba0 4003 04c0000201 c0110602 01fa56ea01 100a01",
        "0000 001a 40010100 4002040201 fde9 4003 04c0000201 c06301aa 806401bb 100a01",
        "0000 0013 40010100 4002040201 fde9 5003 0004 c0000201 100a01",
        "0000 002b 40010100 4002040201 fde9 4003 04c0000201 c00808 fde90001fde90002 800904 0a000001 800a04 0a000002 100a01",
        "0000 001e 40010100 40020402 01fde9 4003 04c0000201 c0070600 01c0000201 4006 00 100a01",
        "0000 0023 40010100 400200 800e19 000101 10 20010db8000000000000000000000001 00 180a0001",
        "0000 0033 40010100 400200 800e29 000101 20 20010db8000000000000000000000001 fe800000000000000000000000000001 00 180a0001",
    ]
    .iter()
    .map(|s| hex(s))
    .collect()
}

fn framed(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = hex(MARKER);
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

#[test]
fn bgp_message() {
    let mut seeds: Vec<Vec<u8>> = open_bodies().iter().map(|b| framed(1, b)).collect();
    seeds.extend(update_bodies().iter().map(|b| framed(2, b)));
    seeds.extend([
        framed(4, &[]),
        framed(3, &hex("0602")),
        framed(3, &hex("0101 0012")),
        framed(5, &hex("00010001")),
        framed(5, &hex("0002 00 01 00")),
        framed(9, &[]),
        Vec::new(),
        hex(MARKER),
        hex(&format!("{MARKER} 1000 02")),
        hex(&format!("{MARKER} ffff 04")),
    ]);
    run(fuzzing::message, seeds, 0xb6b0_0001);
}

#[test]
fn bgp_update() {
    let mut seeds = update_bodies();
    seeds.push(Vec::new());
    run(fuzzing::update, seeds, 0xb6b0_0002);
}

#[test]
fn bgp_open() {
    let mut seeds = open_bodies();
    seeds.push(Vec::new());
    run(fuzzing::open, seeds, 0xb6b0_0003);
}

/// The seeds reach the round-trip check only if they decode: each is a valid message
/// in at least one of the two sessions the bodies try.
#[test]
fn seeds_are_valid_messages() {
    use strait_bgp::codec::{Context, Decoded, decode};
    let seeds: Vec<Vec<u8>> = open_bodies()
        .iter()
        .map(|b| framed(1, b))
        .chain(update_bodies().iter().map(|b| framed(2, b)))
        .collect();
    for (i, seed) in seeds.iter().enumerate() {
        let ok = [Context::default(), Context::modern()]
            .iter()
            .any(|ctx| matches!(decode(seed, ctx), Ok(Decoded::Message(_))));
        assert!(
            ok,
            "seed {i} does not decode: {:?}",
            decode(seed, &Context::modern())
        );
    }
}

/// BFD control packets: an Up packet at 300 ms, a Down packet with a diagnostic and
/// the Poll bit, and the same with trailing bytes (a longer length field is allowed).
#[test]
fn bfd_packet() {
    let up = hex("20 c0 03 18 00000001 00000002 000493e0 000493e0 00000000");
    let down_poll = hex("21 60 03 18 00000007 00000000 000f4240 000f4240 00000000");
    let mut longer = up.clone();
    longer[3] = 0x1a;
    longer.extend([0, 0]);
    let seeds = vec![up, down_poll, longer];
    for s in &seeds[..2] {
        assert!(
            strait_bgp::bfd::packet::ControlPacket::decode(s).is_ok(),
            "seed {s:02x?} must decode, or the round trip is never reached"
        );
    }
    run(fuzzing::bfd_packet, seeds, 0x5eed_0b0d);
}
