//! RFC 7427/8420 Ed25519 authentication: the AUTH data layout, verification with the
//! key from the peer's record, and every refusal.

use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use strait_ike::auth::*;
use strait_ike::codec::{Identity, cert_encoding};

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
    let (method, data) = a.sign(b"signed octets").unwrap();
    assert_eq!(method, AUTH_DIGITAL_SIGNATURE);
    assert_eq!(data[0], 7, "ASN.1 length of the AlgorithmIdentifier");
    assert_eq!(data[1..8], ED25519_ALGORITHM_ID);
    assert_eq!(data.len(), 8 + 64);
    let certs = a.certificates();
    assert_eq!(certs[0].0, cert_encoding::RAW_PUBLIC_KEY);
    assert_eq!(certs[0].1.len(), 44);
    assert_eq!(a.hash_algorithms(), vec![HASH_IDENTITY]);
    v.verify(&node("a"), b"signed octets", method, &data, &certs)
        .unwrap();

    assert_eq!(
        v.verify(&node("a"), b"other octets", method, &data, &[]),
        Err(AuthError::BadSignature)
    );
    assert_eq!(
        v.verify(&node("b"), b"signed octets", method, &data, &[]),
        Err(AuthError::UnknownPeer(node("b")))
    );
    assert_eq!(
        v.verify(&node("a"), b"signed octets", 2, &data, &[]),
        Err(AuthError::UnsupportedMethod(2))
    );
    let mut other_alg = data.clone();
    other_alg[7] = 0x71; // Ed448
    assert_eq!(
        v.verify(&node("a"), b"signed octets", method, &other_alg, &[]),
        Err(AuthError::UnsupportedAlgorithm)
    );
    assert_eq!(
        v.verify(&node("a"), b"signed octets", method, &[200, 1], &[]),
        Err(AuthError::UnsupportedAlgorithm)
    );
    let wrong_cert = signer(true).certificates();
    assert_eq!(
        v.verify(&node("a"), b"signed octets", method, &data, &wrong_cert),
        Err(AuthError::CertificateMismatch)
    );
}

#[test]
fn a_changed_key_is_refused() {
    let old = signer(false);
    let new = signer(false);
    let recorded = old.public_key();
    let v = RawKeyVerifier::new(move |_: &Identity| Some(recorded));
    let (m, d) = new.sign(b"x").unwrap();
    assert_eq!(
        v.verify(&node("a"), b"x", m, &d, &[]),
        Err(AuthError::BadSignature)
    );
    assert!(new.certificates().is_empty());
}

#[test]
fn the_private_key_is_not_in_debug() {
    let s = signer(false);
    assert!(format!("{s:?}").starts_with("Ed25519Signer(public"));
}
