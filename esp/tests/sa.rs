//! Round trips, replay edges, ESN crossing 2^32, tampering, and known answers made by
//! an independent implementation (scapy's `SecurityAssociation`).

use strait_esp::sa::NEXT_HEADER_IPV4;
use strait_esp::{Cipher, InboundSa, OpenError, OutboundSa, SaKey, SealError};

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn key(cipher: Cipher) -> SaKey {
    let mut k: Vec<u8> = (0..cipher.aes_key_len() as u8).collect();
    k.extend([0xa0, 0xa1, 0xa2, 0xa3]);
    SaKey::new(cipher, &k).unwrap()
}

/// An ICMP echo from 10.1.0.1 to 10.2.0.1 carrying "hello".
const INNER: &str = "4500002100010000400166d70a0100010a0200010800b4250007000168656c6c6f";

fn seal(sa: &OutboundSa, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    sa.seal(NEXT_HEADER_IPV4, payload, &mut out).unwrap();
    out
}

fn open(sa: &InboundSa, packet: &[u8]) -> Result<Vec<u8>, OpenError> {
    let mut p = packet.to_vec();
    let o = sa.open(&mut p)?;
    assert_eq!(o.next_header, NEXT_HEADER_IPV4);
    Ok(p[o.payload].to_vec())
}

/// Made with scapy 2.5: `SecurityAssociation(ESP, spi=0x01020304, crypt_algo='AES-GCM',
/// crypt_key=bytes(range(16))+bytes.fromhex('a0a1a2a3'), tunnel_header=IP(...))
/// .encrypt(IP(src='10.1.0.1',dst='10.2.0.1',id=1)/ICMP(id=7,seq=1)/b'hello',
/// seq_num=1, iv=(1).to_bytes(8,'big'))`, the ESP layer's bytes.
const SCAPY_AES128_SEQ1: &str = "0102030400000001000000000000000103711cd36c857750c76d20c0d10594671bf019829ef534876df68b1174c3337e84facfaffcee85be435b172da17ff85cf122e6c8";

/// The same with a 256-bit key (`bytes(range(32))` + salt), `esn_en=True, esn=1`,
/// `seq_num=5`, `iv=((1<<32)|5).to_bytes(8,'big')`: sequence number 2^32 + 5.
const SCAPY_AES256_ESN: &str = "0102030400000005000000010000000596c6364d690d5230845012120efc75e2b5162f722faccfa5af7034337c97011a7594cd5151bd58c254d00569a56a6df3420bf3c2";

#[test]
fn sealing_matches_scapy_aes128() {
    let sa = OutboundSa::new(0x0102_0304, &key(Cipher::Aes128Gcm16), false);
    assert_eq!(seal(&sa, &hex(INNER)), hex(SCAPY_AES128_SEQ1));
    let rx = InboundSa::with_default_window(0x0102_0304, &key(Cipher::Aes128Gcm16), false);
    assert_eq!(open(&rx, &hex(SCAPY_AES128_SEQ1)).unwrap(), hex(INNER));
}

#[test]
fn sealing_matches_scapy_aes256_with_esn() {
    let sa =
        OutboundSa::new(0x0102_0304, &key(Cipher::Aes256Gcm16), true).with_next_seq((1 << 32) + 5);
    assert_eq!(seal(&sa, &hex(INNER)), hex(SCAPY_AES256_ESN));
    let rx = InboundSa::with_default_window(0x0102_0304, &key(Cipher::Aes256Gcm16), true);
    // The receiver has seen up to just below 2^32, so it infers the high half 1.
    let pre =
        OutboundSa::new(0x0102_0304, &key(Cipher::Aes256Gcm16), true).with_next_seq((1 << 32) - 3);
    open(&rx, &seal(&pre, b"x")).unwrap();
    assert_eq!(open(&rx, &hex(SCAPY_AES256_ESN)).unwrap(), hex(INNER));
}

#[test]
fn round_trips_for_both_ciphers_with_and_without_esn() {
    for cipher in [Cipher::Aes128Gcm16, Cipher::Aes256Gcm16] {
        for esn in [false, true] {
            let tx = OutboundSa::new(7, &key(cipher), esn);
            let rx = InboundSa::with_default_window(7, &key(cipher), esn);
            for len in [0usize, 1, 2, 3, 4, 5, 100, 1400, 9000] {
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let p = seal(&tx, &payload);
                assert_eq!(p.len(), OutboundSa::sealed_len(len));
                assert_eq!((p.len() - 16 - 16) % 4, 0, "ciphertext aligned to 4");
                assert_eq!(
                    open(&rx, &p).unwrap(),
                    payload,
                    "{cipher:?} esn={esn} len={len}"
                );
            }
            let st = rx.status();
            assert_eq!((st.packets, st.seq), (9, 9));
        }
    }
}

/// Sealing a payload given in two parts is sealing their concatenation.
#[test]
fn sealing_in_two_parts_is_sealing_the_whole() {
    let k = key(Cipher::Aes128Gcm16);
    let payload: Vec<u8> = (0..1400u32).map(|i| (i * 31) as u8).collect();
    for cut in [0, 1, 52, 1399, 1400] {
        let (a, b) = (OutboundSa::new(5, &k, true), OutboundSa::new(5, &k, true));
        let mut whole = Vec::new();
        a.seal(NEXT_HEADER_IPV4, &payload, &mut whole).unwrap();
        let mut parts = Vec::new();
        b.seal_parts(
            NEXT_HEADER_IPV4,
            &payload[..cut],
            &payload[cut..],
            &mut parts,
        )
        .unwrap();
        assert_eq!(parts, whole, "cut at {cut}");
        assert_eq!(b.status().bytes, 1400);
    }
}

#[test]
fn esn_crosses_two_to_the_32() {
    let k = key(Cipher::Aes128Gcm16);
    let tx = OutboundSa::new(9, &k, true).with_next_seq((1 << 32) - 2);
    let rx = InboundSa::with_default_window(9, &k, true);
    let packets: Vec<_> = (0..5).map(|_| seal(&tx, b"payload")).collect();
    // Low halves on the wire: ...fffe, ...ffff, 0, 1, 2.
    assert_eq!(&packets[2][4..8], &[0, 0, 0, 0]);
    // Deliver out of order across the boundary.
    for i in [0, 2, 1, 4, 3] {
        open(&rx, &packets[i]).unwrap();
    }
    assert_eq!(rx.status().seq, (1 << 32) + 2);
    for p in &packets {
        assert!(matches!(open(&rx, p), Err(OpenError::Replay { .. })));
    }
}

#[test]
fn without_esn_the_counter_refuses_to_wrap() {
    let k = key(Cipher::Aes128Gcm16);
    let tx = OutboundSa::new(9, &k, false).with_next_seq(u64::from(u32::MAX));
    let mut out = Vec::new();
    assert_eq!(tx.seal(4, b"a", &mut out).unwrap().seq, u64::from(u32::MAX));
    out.clear();
    assert_eq!(
        tx.seal(4, b"a", &mut out),
        Err(SealError::RekeyNeeded { spi: 9 })
    );
    assert!(out.is_empty(), "nothing is sealed after the limit");
    let esn = OutboundSa::new(9, &k, true).with_next_seq(u64::MAX);
    esn.seal(4, b"a", &mut out).unwrap();
    assert_eq!(
        esn.seal(4, b"a", &mut out),
        Err(SealError::RekeyNeeded { spi: 9 })
    );
}

#[test]
fn near_limit_is_signalled_from_the_soft_limit() {
    let k = key(Cipher::Aes128Gcm16);
    let tx = OutboundSa::new(9, &k, false).with_soft_limit(3);
    let mut out = Vec::new();
    let flags: Vec<bool> = (0..4)
        .map(|_| tx.seal(4, b"a", &mut out).unwrap().near_limit)
        .collect();
    assert_eq!(flags, [false, false, true, true]);
}

#[test]
fn replay_window_edges() {
    let k = key(Cipher::Aes128Gcm16);
    let tx = OutboundSa::new(1, &k, false);
    let rx = InboundSa::new(1, &k, false, 1024);
    let p: Vec<_> = (0..3000).map(|_| seal(&tx, b"x")).collect();
    // p[i] carries sequence number i + 1.
    open(&rx, &p[0]).unwrap();
    assert_eq!(open(&rx, &p[0]), Err(OpenError::Replay { seq: 1 }));
    open(&rx, &p[1999]).unwrap(); // seq 2000: a jump ahead by more than the window
    assert_eq!(open(&rx, &p[975]), Err(OpenError::Replay { seq: 976 })); // too old
    open(&rx, &p[976]).unwrap(); // seq 977: the oldest still in the window
    open(&rx, &p[1500]).unwrap(); // in the window, out of order
    assert_eq!(open(&rx, &p[1500]), Err(OpenError::Replay { seq: 1501 }));
    open(&rx, &p[2999]).unwrap();
    let st = rx.status();
    assert_eq!((st.packets, st.replay_failures, st.seq), (5, 3, 3000));
}

#[test]
fn a_flipped_byte_fails_the_icv_and_leaves_the_window_alone() {
    let k = key(Cipher::Aes256Gcm16);
    // Sequence number 2, so that no single flipped bit makes it 0 (refused before
    // decryption as never sent).
    let tx = OutboundSa::new(5, &k, true).with_next_seq(2);
    let rx = InboundSa::with_default_window(5, &k, true);
    let good = seal(&tx, &hex(INNER));
    for i in 4..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        let r = open(&rx, &bad);
        assert!(matches!(r, Err(OpenError::Icv)), "byte {i}: {r:?}");
    }
    let st = rx.status();
    assert_eq!((st.packets, st.seq), (0, 0), "the window did not move");
    assert_eq!(st.icv_failures as usize, good.len() - 4);
    assert_eq!(open(&rx, &good).unwrap(), hex(INNER));
}

#[test]
fn wrong_spi_is_refused() {
    let k = key(Cipher::Aes128Gcm16);
    let tx = OutboundSa::new(5, &k, false);
    let rx = InboundSa::with_default_window(6, &k, false);
    assert_eq!(
        open(&rx, &seal(&tx, b"x")),
        Err(OpenError::Spi {
            expected: 6,
            got: 5
        })
    );
    assert!(matches!(
        open(&rx, &[0, 0, 0, 6]),
        Err(OpenError::Malformed(_))
    ));
}

#[test]
fn a_wrong_key_fails_the_icv() {
    let tx = OutboundSa::new(5, &key(Cipher::Aes128Gcm16), false);
    let other = SaKey::new(Cipher::Aes128Gcm16, &[7; 20]).unwrap();
    let rx = InboundSa::with_default_window(5, &other, false);
    assert_eq!(open(&rx, &seal(&tx, b"x")), Err(OpenError::Icv));
}
