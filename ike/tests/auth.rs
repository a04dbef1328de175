//! RFC 7427/8420 Ed25519 authentication: the AUTH data layout, verification with the
//! key from the peer's record, and every refusal.

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use strait_ike::auth::*;
use strait_ike::codec::{Identity, cert_encoding};
use strait_ike::crypto::prf::Prf;

fn signer(send_key: bool) -> Ed25519Signer {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    Ed25519Signer::from_pkcs8(pkcs8.as_ref(), send_key).unwrap()
}

fn node(name: &str) -> Identity {
    Identity::Fqdn(name.into())
}

#[test]
fn signature_verifies_with_the_recorded_key_only() {
    let a = signer(true);
    let key = a.public_key();
    let keys = move |id: &Identity| (*id == node("a")).then_some(key);
    let v = RawKeyVerifier::new(keys);
    let (method, data) = a.sign(Prf::HmacSha256, b"signed octets").unwrap();
    assert_eq!(method, AUTH_DIGITAL_SIGNATURE);
    assert_eq!(data[0], 7, "ASN.1 length of the AlgorithmIdentifier");
    assert_eq!(data[1..8], ED25519_ALGORITHM_ID);
    assert_eq!(data.len(), 8 + 64);
    let certs = a.certificates();
    assert_eq!(certs[0].0, cert_encoding::RAW_PUBLIC_KEY);
    assert_eq!(certs[0].1.len(), 44);
    assert_eq!(a.hash_algorithms(), vec![HASH_IDENTITY]);
    v.verify(
        Prf::HmacSha256,
        &node("a"),
        b"signed octets",
        method,
        &data,
        &certs,
    )
    .unwrap();

    assert_eq!(
        v.verify(
            Prf::HmacSha256,
            &node("a"),
            b"other octets",
            method,
            &data,
            &[]
        ),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        v.verify(
            Prf::HmacSha256,
            &node("b"),
            b"signed octets",
            method,
            &data,
            &[]
        ),
        Err(AuthError::UnknownPeer(node("b")))
    );
    assert_eq!(
        v.verify(Prf::HmacSha256, &node("a"), b"signed octets", 2, &data, &[]),
        Err(AuthError::UnsupportedMethod(2))
    );
    let mut other_alg = data.clone();
    other_alg[7] = 0x71; // Ed448
    assert_eq!(
        v.verify(
            Prf::HmacSha256,
            &node("a"),
            b"signed octets",
            method,
            &other_alg,
            &[]
        ),
        Err(AuthError::UnsupportedAlgorithm)
    );
    assert_eq!(
        v.verify(
            Prf::HmacSha256,
            &node("a"),
            b"signed octets",
            method,
            &[200, 1],
            &[]
        ),
        Err(AuthError::UnsupportedAlgorithm)
    );
    let wrong_cert = signer(true).certificates();
    assert_eq!(
        v.verify(
            Prf::HmacSha256,
            &node("a"),
            b"signed octets",
            method,
            &data,
            &wrong_cert
        ),
        Err(AuthError::CertificateMismatch)
    );
}

#[test]
fn a_changed_key_is_refused() {
    let old = signer(false);
    let new = signer(false);
    let recorded = old.public_key();
    let v = RawKeyVerifier::new(move |_: &Identity| Some(recorded));
    let (m, d) = new.sign(Prf::HmacSha256, b"x").unwrap();
    assert_eq!(
        v.verify(Prf::HmacSha256, &node("a"), b"x", m, &d, &[]),
        Err(AuthError::BadSignature)
    );
    assert!(new.certificates().is_empty());
}

#[test]
fn the_private_key_is_not_in_debug() {
    let s = signer(false);
    assert!(format!("{s:?}").starts_with("Ed25519Signer(public"));
}

/// RFC 7296 §2.15 computed here with ring's HMAC directly, not through the crate:
/// AUTH = prf(prf(secret, "Key Pad for IKEv2"), octets).
fn psk_auth(alg: ring::hmac::Algorithm, secret: &[u8], octets: &[u8]) -> Vec<u8> {
    use ring::hmac;
    let pad = hmac::sign(&hmac::Key::new(alg, secret), b"Key Pad for IKEv2");
    hmac::sign(&hmac::Key::new(alg, pad.as_ref()), octets)
        .as_ref()
        .to_vec()
}

#[test]
fn psk_auth_is_the_rfc_formula_with_the_negotiated_prf() {
    let psk = Psk::new(b"a shared secret of some length".to_vec());
    for (prf, alg, len) in [
        (Prf::HmacSha256, ring::hmac::HMAC_SHA256, 32),
        (Prf::HmacSha384, ring::hmac::HMAC_SHA384, 48),
    ] {
        let (method, data) = psk.sign(prf, b"signed octets").unwrap();
        assert_eq!(method, AUTH_SHARED_KEY);
        assert_eq!(data.len(), len);
        assert_eq!(
            data,
            psk_auth(alg, b"a shared secret of some length", b"signed octets")
        );
        psk.verify(prf, &node("gw"), b"signed octets", method, &data, &[])
            .unwrap();
    }
    assert!(psk.certificates().is_empty());
    assert!(psk.hash_algorithms().is_empty());
}

#[test]
fn psk_refuses_another_key_other_octets_another_prf_and_other_methods() {
    let ours = Psk::new(b"the right key, 24 bytes.".to_vec());
    let theirs = Psk::new(b"the wrong key, 24 bytes.".to_vec());
    let (m, d) = theirs.sign(Prf::HmacSha256, b"octets").unwrap();
    assert_eq!(
        ours.verify(Prf::HmacSha256, &node("gw"), b"octets", m, &d, &[]),
        Err(AuthError::PskMismatch)
    );
    let (m, d) = ours.sign(Prf::HmacSha256, b"octets").unwrap();
    assert_eq!(
        ours.verify(Prf::HmacSha256, &node("gw"), b"other", m, &d, &[]),
        Err(AuthError::PskMismatch)
    );
    assert_eq!(
        ours.verify(Prf::HmacSha384, &node("gw"), b"octets", m, &d, &[]),
        Err(AuthError::PskMismatch)
    );
    assert_eq!(
        ours.verify(Prf::HmacSha256, &node("gw"), b"octets", 14, &d, &[]),
        Err(AuthError::UnsupportedMethod(14))
    );
    assert_eq!(
        ours.verify(Prf::HmacSha256, &node("gw"), b"octets", m, &d[..31], &[]),
        Err(AuthError::PskMismatch)
    );
    assert!(
        AuthError::PskMismatch
            .to_string()
            .contains("different keys")
    );
}

#[test]
fn the_pre_shared_key_is_not_in_debug() {
    let psk = Psk::new(b"hunter2hunter2hunter2".to_vec());
    let shown = format!("{psk:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}
