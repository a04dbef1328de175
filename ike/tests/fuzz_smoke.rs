//! The fuzz targets' bodies (`strait_ike::fuzzing`, run by `fuzz/` under libFuzzer) on
//! a fixed, deterministic set of inputs, so every `cargo test` covers what the fuzzer
//! covers on a stable toolchain: byte vectors like the codec tests', and seeded
//! pseudo-random mutations of them. The bodies panic on a finding.

use strait_fuzz_smoke::{self as smoke, Mutations};
use strait_ike::codec::{Payload, payload_type};
use strait_ike::fuzzing;

const MUTATIONS: usize = 3000;

/// Payload type numbers, transform types and IDs, the critical bit, lengths at their
/// edges.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x07, 0x08, 0x0b, 0x0e, 0x0f, 0x10, 0x14, 0x1f, 0x20, 0x21,
    0x22, 0x23, 0x24, 0x25, 0x28, 0x29, 0x2a, 0x2c, 0x2d, 0x2e, 0x40, 0x7f, 0x80, 0x8e, 0xfe, 0xff,
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

fn hexes(v: &[&str]) -> Vec<Vec<u8>> {
    v.iter().map(|s| hex(s)).collect()
}

fn sa_bodies() -> Vec<Vec<u8>> {
    hexes(&[
        "00 00 0024 01 01 00 03 03 00 000c 01 00 0014 800e 0100 03 00 0008 02 00 0005 00 00 0008 04 00 001f",
        "02 00 0018 01 03 04 01 11223344 00 00 000c 01 00 0014 800e 0080 00 00 001c 02 03 04 02 55667788 03 00 0008 05 00 0001 00 00 0008 05 00 0000",
        "00 00 001f 01 01 08 01 0102030405060708 00 00 000f 01 00 0014 0063 0003 010203",
    ])
}

fn init_request() -> Vec<u8> {
    let mut m = hex("0102030405060708 0000000000000000 21 20 22 08 00000000 000000ac 22 00 0028");
    m.extend(&sa_bodies()[0]);
    m.extend(hex("28 00 0028 001f 0000"));
    m.extend([0x11; 32]);
    m.extend(hex("29 00 0024"));
    m.extend([0x22; 32]);
    m.extend(hex("00 00 001c 00 00 4004"));
    m.extend([0x33; 20]);
    m
}

fn sk_message() -> Vec<u8> {
    hex(
        "0102030405060708 1112131415161718 2e 20 23 08 00000001 00000028 23 00 000c aabbccddeeff0011",
    )
}

#[test]
fn seeds_decode() {
    for m in [init_request(), sk_message()] {
        strait_ike::codec::Message::decode(&m).unwrap();
    }
}

#[test]
fn ike_message() {
    let mut seeds = vec![init_request(), sk_message(), Vec::new(), vec![0; 28]];
    let mut informational = hex(
        "0102030405060708 1112131415161718 29 20 25 20 00000002 00000024 00 00 0008 00 00 4006",
    );
    seeds.push(informational.clone());
    informational[19] = 0x28;
    seeds.push(informational);
    run(fuzzing::message, seeds, 0x1e2e_0001);
}

#[test]
fn ike_chain() {
    let seeds = hexes(&[
        "23 24 000c 02000000 6e6f6465 27 0000 000c 0e000000 07300506",
        "29 00 0008 00004006",
        "2c 2d 0018 01000000 07000010 0000ffff 0a000000 0a0000ff 00 00 0018 01000000 07000010 0000ffff 0a010000 0a0100ff",
        "c8 29 0006 abcd 00 00 0008 00004006",
    ]);
    run(fuzzing::chain, seeds, 0x1e2e_0002);
}

/// A payload body, its payload type and its seeds.
type Case = (fn(&[u8]), u8, Vec<Vec<u8>>);

#[test]
fn ike_payloads() {
    let cases: Vec<Case> = vec![
        (fuzzing::sa, payload_type::SA, sa_bodies()),
        (
            fuzzing::ke,
            payload_type::KE,
            hexes(&["001f 0000 1111111111111111", "0013 0000 22"]),
        ),
        (
            fuzzing::id,
            payload_type::IDI,
            hexes(&[
                "01000000 c0000201",
                "02000000 6e6f64652d61",
                "03000000 6f707340782e6f7267",
                "05000000 20010db8000000000000000000000001",
                "09000000 3000",
                "0b000000 010203",
            ]),
        ),
        (
            fuzzing::cert,
            payload_type::CERT,
            hexes(&[
                "0f 302a300506032b6570032100 0000000000000000000000000000000000000000000000000000000000000000",
            ]),
        ),
        (
            fuzzing::certreq,
            payload_type::CERTREQ,
            hexes(&["04", "0f 01"]),
        ),
        (
            fuzzing::auth,
            payload_type::AUTH,
            hexes(&["0e000000 07 300506032b6570 0102030405"]),
        ),
        (
            fuzzing::nonce,
            payload_type::NONCE,
            hexes(&["00112233445566778899aabbccddeeff"]),
        ),
        (
            fuzzing::notify,
            payload_type::NOTIFY,
            hexes(&[
                "00 00 4004 0011223344556677889900112233445566778899",
                "03 04 4009 01020304",
                "00 00 402f 0005 0002",
            ]),
        ),
        (
            fuzzing::delete,
            payload_type::DELETE,
            hexes(&["03 04 0002 0102030405060708", "01 00 0000"]),
        ),
        (
            fuzzing::vendor,
            payload_type::VENDOR,
            hexes(&["737472616974"]),
        ),
        (
            fuzzing::ts,
            payload_type::TSI,
            hexes(&[
                "02000000 07 00 0010 0000ffff 0a000000 0a0000ff 08 11 0028 11941194 fd000000000000000000000000000000 fd00000000000000ffffffffffffffff",
            ]),
        ),
    ];
    for (i, (body, kind, mut seeds)) in cases.into_iter().enumerate() {
        for s in &seeds {
            // A seed that does not decode never reaches the round-trip check.
            let decoded = Payload::decode_body(kind, s).unwrap();
            assert!(decoded.is_ok(), "seed {s:02x?} of type {kind}: {decoded:?}");
        }
        seeds.push(Vec::new());
        run(body, seeds, 0x1e2e_0100 + i as u64);
    }
}

/// Real IKE_SA_INIT requests and responses of two speakers, and the error answers.
fn exchange_seeds() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    use strait_ike::auth::{Ed25519Signer, RawKeyVerifier};
    use strait_ike::codec::Identity;
    use strait_ike::speaker::{Config, Event, Speaker};
    let make = |name: &str| {
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .unwrap();
        let signer = Ed25519Signer::from_pkcs8(pkcs8.as_ref(), true).unwrap();
        let verifier = RawKeyVerifier::new(|_: &Identity| None);
        Speaker::new(
            Config::new(Identity::Fqdn(name.into())),
            Box::new(signer),
            Box::new(verifier),
        )
    };
    let (mut a, mut b) = (make("a"), make("b"));
    let (la, lb) = (
        "192.0.2.1:500".parse().unwrap(),
        "192.0.2.2:500".parse().unwrap(),
    );
    let now = std::time::Instant::now();
    a.connect(Identity::Fqdn("b".into()), la, lb, now);
    let Some(Event::Transmit { bytes: request, .. }) = a.next_event() else {
        panic!()
    };
    b.handle_datagram(lb, la, &request, now);
    let Some(Event::Transmit {
        bytes: response, ..
    }) = b.next_event()
    else {
        panic!()
    };
    (vec![request, init_request()], vec![response])
}

#[test]
fn ike_responder_datagram() {
    let (mut seeds, responses) = exchange_seeds();
    seeds.extend(responses);
    seeds.push(Vec::new());
    // A speaker (and a key) per input: fewer inputs than the codec bodies get.
    let mutations = Mutations {
        count: 300,
        rng_seed: 0x1e2e_0201,
        interesting: INTERESTING,
    };
    smoke::run(fuzzing::responder_datagram, seeds, &mutations);
}

#[test]
fn ike_initiator_response() {
    let (_, mut seeds) = exchange_seeds();
    seeds.push(Vec::new());
    let mutations = Mutations {
        count: 300,
        rng_seed: 0x1e2e_0202,
        interesting: INTERESTING,
    };
    smoke::run(fuzzing::initiator_response, seeds, &mutations);
}

#[test]
fn ike_dn() {
    let name = strait_ike::codec::Identity::dn(&[
        ("CN", "gw.example"),
        ("O", "Example"),
        ("C", "DE"),
        ("emailAddress", "ops@example.com"),
    ])
    .unwrap();
    let strait_ike::codec::Identity::DerAsn1Dn(der) = name else {
        unreachable!()
    };
    let doubled = [der.clone(), der.clone()].concat();
    run(fuzzing::dn, vec![der, doubled, vec![0x30, 0x00]], 0xd17e);
}

#[test]
fn ike_encrypted_fragment() {
    let seeds = hexes(&[
        // Fragment 1 of 2 naming an IDi inside, then fragment 2 of 2.
        "23 0001 0002 0000000000000000 aabbccddeeff00112233445566778899 01",
        "00 0002 0002 0000000000000001 aabbccddeeff00112233445566778899 02",
        "00 0000 0001",
        "00 0003 0002",
        "00",
    ]);
    run(fuzzing::encrypted_fragment, seeds, 0x1e2e_0301);
}

#[test]
fn ike_reassembly() {
    let seeds = hexes(&[
        // Fragments 1..3 of 3 of one request, then a duplicate and a corrupted one.
        "00 0001 0003 00 10 41  00 0002 0003 00 10 42  00 0003 0003 00 10 43",
        "00 0001 0002 00 10 41  00 0001 0002 00 10 41  00 0002 0002 01 10 42",
        // Totals that disagree, a response, another message ID, too many.
        "00 0001 0004 00 20 41  00 0002 0002 00 20 42  00 0003 0008 00 20 43",
        "01 0001 0002 04 ff 41  02 0002 0002 0c ff 42  00 0001 0041 00 ff 44",
    ]);
    run(fuzzing::reassembly, seeds, 0x1e2e_0302);
}

/// A P-256 CA ("CN=Fuzz CA", 2026-12-06 to 2036-12-03), made by
/// `openssl req -new` + `openssl x509 -req -days 3650` with basicConstraints CA:TRUE.
const FUZZ_CA: &str = "308201673082010ea003020102021442a68cba4d321e6afbd59747c75498526623b783300a06082a8648ce3d04030230123110300e06035504030c0746757a7a204341301e170d3236313230363233323935365a170d3336313230333233323935365a30123110300e06035504030c0746757a7a2043413059301306072a8648ce3d020106082a8648ce3d030107034200044d2e787960f3846861220130cb41c59f8080baab03509d18fa0fb32d8101be5cbda30a6661edc58a9b398a3c1b84c1bb0f548b74cf9e4164a516ca44d292100ba3423040300f0603551d130101ff040530030101ff300e0603551d0f0101ff040403020106301d0603551d0e041604143e81c22800d6506136c33ddb6b0ceafdfba9b4e2300a06082a8648ce3d0403020347003044022054a3caaa9225ee6905ba7f5840fed9b06c27427cf5c43e467fe46372709bffbf022022f6e9df76a4017639cee9485ba3e155ccc0f1a5fbe54b35ff8b4d2f3ae7a4f8";
/// A P-256 gateway certificate of that CA: CN=gw.example, SAN DNS:gw.example,
/// IP:192.0.2.1.
const FUZZ_GW: &str = "3082018130820126a003020102020102300a06082a8648ce3d04030230123110300e06035504030c0746757a7a204341301e170d3236313230363233323935365a170d3336313230333233323935365a30153113301106035504030c0a67772e6578616d706c653059301306072a8648ce3d020106082a8648ce3d03010703420004ad2709cc4bf9a791c867b4d7cba1af46bacc178f136ad2423e3fd995117a61225da59662964c59f14f89f994755ef9a1106260fdab3bc7dd4810bb63956b8cf6a36a306830090603551d1304023000301b0603551d1104143012820a67772e6578616d706c658704c0000201301d0603551d0e0416041424aee8dc03023893b0006d2d3700009871c02064301f0603551d230418301680143e81c22800d6506136c33ddb6b0ceafdfba9b4e2300a06082a8648ce3d0403020349003046022100ef1552ef9294380855b87d04d9b182398821e8fc57cfc99135ea3376b7a53b990221008a66856ce92b5bafae0d251b2a7acaa28d54c66abdd841a51244910601180106";
/// The gateway key's ECDSA-SHA256 signature over `fuzz` (`openssl dgst -sha256 -sign`).
const FUZZ_SIG: &str = "3046022100f57db8b54df178fb56225de94405012894d080b89fb1254927618a157effc340022100f4c677832256509659479d29c2f4629b83833f5eae4ee588c0b5a64bc90537f9";

fn prefixed(items: &[Vec<u8>]) -> Vec<u8> {
    items
        .iter()
        .flat_map(|i| [&(i.len() as u16).to_be_bytes()[..], i].concat())
        .collect()
}

#[test]
fn ike_x509() {
    let (ca, gw, sig) = (hex(FUZZ_CA), hex(FUZZ_GW), hex(FUZZ_SIG));
    // Method 14 data: the length and DER AlgorithmIdentifier of ecdsa-with-SHA256.
    let auth = [&[12][..], strait_ike::auth::x509::ECDSA_SHA256_ID, &sig].concat();
    let good = prefixed(&[ca.clone(), gw.clone(), auth.clone()]);
    // The seed goes all the way through: chain, identity and signature.
    assert_eq!(fuzzing::x509_outcome(&good), Ok(Ok(())));
    let seeds = vec![
        good,
        prefixed(&[ca.clone(), gw.clone(), ca.clone(), auth.clone()]),
        prefixed(&[ca.clone(), ca.clone(), auth.clone()]),
        prefixed(&[gw.clone(), gw.clone(), auth]),
        prefixed(&[ca]),
    ];
    run(fuzzing::x509, seeds, 0x0509);
}
