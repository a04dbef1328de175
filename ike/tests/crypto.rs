//! The crypto layer against published answers (RFC 7748 §6.1 for Curve25519, RFC
//! 5903 §8.1 for ECP-256, RFC 4231 for HMAC-SHA2), prf+ checked by hand against
//! HMAC, the key schedule's shape and the Encrypted payload's integrity.

#![allow(deprecated)] // ring::test::rand::FixedSliceRandom feeds the RFCs' private keys.

use ring::hmac;
use ring::rand::SystemRandom;
use ring::test::rand::FixedSliceRandom;
use strait_ike::codec::{ExchangeType, Header, Message, Notify, NotifyType, Payload};
use strait_ike::crypto::dh::KeyShare;
use strait_ike::crypto::keys::IkeKeys;
use strait_ike::crypto::prf::Prf;
use strait_ike::crypto::sk::SkCipher;
use strait_ike::crypto::suite::{Cipher, Group};
use strait_ike::crypto::{CryptoError, Secret};

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

fn share(group: Group, private: &[u8]) -> KeyShare {
    KeyShare::generate(group, &FixedSliceRandom { bytes: private }).unwrap()
}

#[test]
fn curve25519_matches_rfc7748() {
    let a = share(
        Group::Curve25519,
        &hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
    );
    assert_eq!(
        a.public(),
        hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    );
    let bob = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    assert_eq!(
        a.agree(&bob).unwrap().expose(),
        hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
    );
}

#[test]
fn ecp256_matches_rfc5903() {
    let i = share(
        Group::Ecp256,
        &hex("C88F01F5 10D9AC3F 70A292DA A2316DE5 44E9AAB8 AFE84049 C62A9C57 862D1433"),
    );
    assert_eq!(
        i.public(),
        hex(concat!(
            "DAD0B653 94221CF9 B051E1FE CA5787D0 98DFE637 FC90B9EF 945D0C37 72581180",
            "5271A046 1CDB8252 D61F1C45 6FA3E59A B1F45B33 ACCF5F58 389E0577 B8990BB3"
        )),
        "the KE data is x || y"
    );
    let gr = hex(concat!(
        "D12DFB52 89C8D4F8 1208B702 70398C34 2296970A 0BCCB74C 736FC755 4494BF63",
        "56FBF3CA 366CC23E 8157854C 13C58D6A AC23F046 ADA30F83 53E74F33 039872AB"
    ));
    assert_eq!(
        i.agree(&gr).unwrap().expose(),
        hex("D6840F6B 42F6EDAF D13116E0 E1256520 2FEF8E9E CE7DCE03 812464D0 4B9442DE"),
        "g^ir is the x coordinate"
    );
}

#[test]
fn bad_public_values_are_refused() {
    let rng = SystemRandom::new();
    for (group, bad) in [
        (Group::Curve25519, vec![9u8; 31]),
        (Group::Curve25519, vec![0u8; 32]), // a low-order point: all-zero secret
        (Group::Ecp256, vec![1u8; 64]),     // not on the curve
        (Group::Ecp256, vec![1u8; 65]),
    ] {
        let s = KeyShare::generate(group, &rng).unwrap();
        assert_eq!(
            s.agree(&bad),
            Err(CryptoError::BadPublicValue { group: group.id() })
        );
    }
}

#[test]
fn both_sides_agree_in_each_group() {
    let rng = SystemRandom::new();
    for group in [Group::Curve25519, Group::Ecp256] {
        let a = KeyShare::generate(group, &rng).unwrap();
        let b = KeyShare::generate(group, &rng).unwrap();
        let (pa, pb) = (a.public().to_vec(), b.public().to_vec());
        assert_eq!(a.agree(&pb).unwrap(), b.agree(&pa).unwrap());
    }
}

#[test]
fn hmac_prfs_match_rfc4231() {
    let (key, data) = (b"Jefe", b"what do ya want for nothing?");
    assert_eq!(
        Prf::HmacSha256
            .prf(key, &[&data[..10], &data[10..]])
            .expose(),
        hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
    assert_eq!(
        Prf::HmacSha384.prf(key, &[data]).expose(),
        hex(concat!(
            "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e",
            "8e2240ca5e69e2c78b3239ecfab21649"
        ))
    );
}

#[test]
fn prf_plus_is_t1_t2_by_hand() {
    let (k, s) = (b"key", b"seed");
    let mac = |data: &[u8]| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, k), data);
    let t1 = mac(&[&s[..], &[1]].concat());
    let t2 = mac(&[t1.as_ref(), &s[..], &[2]].concat());
    let expected = [t1.as_ref(), t2.as_ref()].concat();
    let got = Prf::HmacSha256.prf_plus(k, &[b"se", b"ed"], 40);
    assert_eq!(got.expose(), &expected[..40]);
}

fn schedule(prf: Prf, cipher: Cipher) -> IkeKeys {
    let g = Secret::new(vec![7; 32]);
    IkeKeys::derive(prf, cipher, &g, &[1; 32], &[2; 32], 0x1111, 0x2222)
}

#[test]
fn ike_keys_have_the_lengths_of_the_suite() {
    for (prf, cipher, p, e) in [
        (Prf::HmacSha256, Cipher::AesGcm16_128, 32, 20),
        (Prf::HmacSha384, Cipher::AesGcm16_256, 48, 36),
    ] {
        let k = schedule(prf, cipher);
        let lens = [&k.sk_d, &k.sk_ei, &k.sk_er, &k.sk_pi, &k.sk_pr].map(Secret::len);
        assert_eq!(lens, [p, e, e, p, p]);
        assert_ne!(k.sk_ei, k.sk_er);
        // The layout: prf+(prf(Ni | Nr, g^ir), Ni | Nr | SPIi | SPIr), split in order.
        let seed = Prf::prf(prf, &[[1u8; 32], [2; 32]].concat(), &[&[7; 32]]);
        let all = prf.prf_plus(
            seed.expose(),
            &[
                &[1; 32],
                &[2; 32],
                &0x1111u64.to_be_bytes(),
                &0x2222u64.to_be_bytes(),
            ],
            3 * p + 2 * e,
        );
        assert_eq!(k.sk_d.expose(), &all.expose()[..p]);
        assert_eq!(k.sk_pr.expose(), &all.expose()[2 * p + 2 * e..]);
    }
}

#[test]
fn child_keys_and_rekeys_differ() {
    let k = schedule(Prf::HmacSha256, Cipher::AesGcm16_256);
    let plain = k.child(
        Prf::HmacSha256,
        Cipher::AesGcm16_256,
        None,
        &[3; 32],
        &[4; 32],
    );
    assert_eq!(plain.initiator_to_responder.len(), 36);
    let expected = Prf::HmacSha256.prf_plus(k.sk_d.expose(), &[&[3; 32], &[4; 32]], 72);
    assert_eq!(
        plain.responder_to_initiator.expose(),
        &expected.expose()[36..]
    );
    let g = Secret::new(vec![9; 32]);
    let pfs = k.child(
        Prf::HmacSha256,
        Cipher::AesGcm16_256,
        Some(&g),
        &[3; 32],
        &[4; 32],
    );
    assert_ne!(plain, pfs);
    let new = k.rekey(
        Prf::HmacSha256,
        Prf::HmacSha256,
        Cipher::AesGcm16_256,
        &g,
        &[3; 32],
        &[4; 32],
        5,
        6,
    );
    assert_ne!(new.sk_d, k.sk_d);
}

#[test]
fn secrets_are_redacted_in_debug() {
    let k = schedule(Prf::HmacSha256, Cipher::AesGcm16_128);
    let shown = format!("{k:?}");
    assert!(shown.contains("redacted"));
    let hexed: String = k.sk_d.expose()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!shown.contains(&hexed) && !shown.contains(&format!("{}", k.sk_d.expose()[0])));
}

fn header() -> Header {
    Header {
        spi_i: 1,
        spi_r: 2,
        minor_version: 0,
        exchange: ExchangeType::Informational,
        initiator: true,
        version: false,
        response: false,
        message_id: 3,
    }
}

#[test]
fn encrypted_payload_round_trips_and_detects_tampering() {
    for cipher in [Cipher::AesGcm16_128, Cipher::AesGcm16_256] {
        let k = schedule(Prf::HmacSha256, cipher);
        let mut tx = SkCipher::new(cipher, &k.sk_ei);
        let rx = SkCipher::new(cipher, &k.sk_ei);
        let other = SkCipher::new(cipher, &k.sk_er);
        let inner = vec![
            Payload::Notify(Notify::new(NotifyType::InitialContact, vec![])),
            Payload::Vendor(b"strait".to_vec()),
        ];
        let bytes = tx.seal(&header(), &[], &inner).unwrap();
        let m = Message::decode(&bytes).unwrap();
        assert_eq!(rx.open(&bytes, &m).unwrap(), inner);
        assert_eq!(other.open(&bytes, &m), Err(CryptoError::Icv), "wrong key");
        // Every byte is covered: the header (AAD), the SK header (AAD), IV, ciphertext,
        // ICV.
        for i in [0, 19, 22, 28, 32, 40, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            let result = Message::decode(&bad).map(|m| rx.open(&bad, &m));
            assert!(
                matches!(result, Ok(Err(CryptoError::Icv)) | Err(_)),
                "byte {i} flipped: {result:?}"
            );
        }
        let second = tx.seal(&header(), &[], &inner).unwrap();
        assert_ne!(second[32..40], bytes[32..40], "a fresh IV per message");
    }
}
