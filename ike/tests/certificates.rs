//! X.509 certificate authentication, one side against the other without a speaker:
//! [`CertSigner`] from PEM files (RSA and ECDSA keys in each file format), and
//! [`CaVerifier`]'s chain, validity, identity and signature checks with the sentences
//! a refusal is reported in. The certificates come from `openssl` at test time.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair};
use strait_ike::auth::{
    AUTH_ECDSA_P256, AUTH_RSA_SIGNATURE, CaVerifier, CertSigner, LocalAuth, PeerAuth,
};
use strait_ike::codec::Identity;
use strait_ike::crypto::prf::Prf;
use strait_testbeds::pki::{KeyType, Pki, Validity, openssl_missing};

const OCTETS: &[u8] = b"the signed octets of RFC 7296 section 2.15";
const SANS: &str = "DNS:gw.example,IP:192.0.2.1,email:ops@example.org";

macro_rules! need_openssl {
    () => {
        if let Some(why) = openssl_missing() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

/// A root CA (RSA), an intermediate (P-256) and a gateway certificate of `key`
/// issued by the intermediate.
fn pki(key: KeyType) -> Pki {
    let pki = Pki::new();
    pki.root("ca", "/CN=Test Root CA/O=Strait", KeyType::Rsa(2048));
    pki.issue(
        "int",
        "/CN=Test Intermediate/O=Strait",
        KeyType::P256,
        "ca",
        true,
        "",
        Validity::Days(365),
    );
    pki.issue(
        "gw",
        "/CN=gw.example/O=Strait",
        key,
        "int",
        false,
        SANS,
        Validity::Days(30),
    );
    pki.bundle("gw-chain.crt", &["gw", "int"]);
    pki
}

fn verifier(pki: &Pki) -> CaVerifier {
    CaVerifier::from_pem_file(&pki.crt("ca")).unwrap()
}

fn check(
    verifier: &CaVerifier,
    signer: &CertSigner,
    peer: &Identity,
    octets: &[u8],
) -> Result<(), String> {
    let (method, data) = signer.sign(Prf::HmacSha256, OCTETS).unwrap();
    verifier
        .verify(
            Prf::HmacSha256,
            peer,
            octets,
            method,
            &data,
            &signer.certificates(),
        )
        .map_err(|e| e.to_string())
}

fn gw_dn() -> Identity {
    Identity::dn(&[("CN", "gw.example"), ("O", "Strait")]).unwrap()
}

#[test]
fn each_key_type_and_file_format_signs_an_auth_the_ca_verifier_accepts() {
    need_openssl!();
    for (key, traditional) in [
        (KeyType::Rsa(2048), false),
        (KeyType::Rsa(2048), true),
        (KeyType::P256, false),
        (KeyType::P256, true),
        (KeyType::P384, false),
        (KeyType::P384, true),
    ] {
        let pki = pki(key);
        let key_file = if traditional {
            pki.traditional("gw")
        } else {
            pki.key("gw")
        };
        let signer = CertSigner::from_pem_files(&pki.path("gw-chain.crt"), &key_file)
            .unwrap_or_else(|e| panic!("{key:?} traditional={traditional}: {e}"));
        // Leaf then intermediate, as encoding 4.
        let certs = signer.certificates();
        assert_eq!(certs.len(), 2);
        assert!(certs.iter().all(|(enc, _)| *enc == 4));
        assert_eq!(certs[0].1, pki.der("gw"));
        assert_eq!(signer.hash_algorithms(), vec![2, 3, 4]);
        assert_eq!(signer.subject_dn(), gw_dn());
        let v = verifier(&pki);
        for peer in [
            Identity::Fqdn("GW.Example".into()),
            Identity::Ipv4("192.0.2.1".parse().unwrap()),
            Identity::Rfc822("ops@example.org".into()),
            Identity::dn(&[("cn", "gw.example"), ("o", "Strait")]).unwrap(),
        ] {
            check(&v, &signer, &peer, OCTETS)
                .unwrap_or_else(|e| panic!("{key:?} traditional={traditional} {peer}: {e}"));
        }
        assert_eq!(
            check(&v, &signer, &gw_dn(), b"other octets"),
            Err("the signature does not verify with the certificate's key".into()),
            "{key:?}"
        );
    }
}

#[test]
fn the_signer_lists_its_certificate_identities() {
    need_openssl!();
    let pki = pki(KeyType::P256);
    let signer = CertSigner::from_pem_files(&pki.crt("gw"), &pki.key("gw")).unwrap();
    assert_eq!(signer.certificates().len(), 1);
    assert_eq!(
        signer.identities(),
        vec![
            gw_dn(),
            Identity::Fqdn("gw.example".into()),
            Identity::Ipv4("192.0.2.1".parse().unwrap()),
            Identity::Rfc822("ops@example.org".into()),
        ]
    );
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused() {
    need_openssl!();
    let pki = pki(KeyType::P256);
    pki.issue(
        "other",
        "/CN=other",
        KeyType::P256,
        "int",
        false,
        "",
        Validity::Days(3),
    );
    let err = CertSigner::from_pem_files(&pki.crt("gw"), &pki.key("other")).unwrap_err();
    assert!(err.contains("is not the key of the certificate"), "{err}");
    // An RSA key for an ECDSA certificate, in either format.
    let err = CertSigner::from_pem_files(&pki.crt("gw"), &pki.key("ca")).unwrap_err();
    assert!(err.contains("not a usable EcdsaP256 private key"), "{err}");
    let err = CertSigner::from_pem_files(&pki.crt("gw"), &pki.traditional("ca")).unwrap_err();
    assert!(
        err.contains("a RSA PRIVATE KEY does not fit the certificate's EcdsaP256 key"),
        "{err}"
    );
    let err = CertSigner::from_pem_files(&pki.key("gw"), &pki.key("gw")).unwrap_err();
    assert!(err.contains("no CERTIFICATE"), "{err}");
}

#[test]
fn an_expired_or_not_yet_valid_certificate_is_refused_with_its_dates() {
    need_openssl!();
    let pki = pki(KeyType::P256);
    pki.issue(
        "old",
        "/CN=old.example",
        KeyType::P256,
        "int",
        false,
        "DNS:old.example",
        Validity::Between("20250101000000Z", "20260101000000Z"),
    );
    pki.bundle("old-chain.crt", &["old", "int"]);
    let signer = CertSigner::from_pem_files(&pki.path("old-chain.crt"), &pki.key("old")).unwrap();
    let peer = Identity::Fqdn("old.example".into());
    assert_eq!(
        check(&verifier(&pki), &signer, &peer, OCTETS),
        Err("certificate expired on 2026-01-01 00:00:00 UTC (CN=old.example)".into())
    );
    // The same certificate within its dates.
    let mid_2025 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let mut in_2025 = verifier(&pki).with_time(mid_2025);
    // ... where the CAs made today are not valid yet.
    let err = check(&in_2025, &signer, &peer, OCTETS).unwrap_err();
    assert!(err.starts_with("certificate not valid before "), "{err}");
    assert!(err.ends_with("(CN=Test Intermediate,O=Strait)"), "{err}");
    // Far enough ahead, the 30-day gateway certificate has expired too.
    in_2025 = verifier(&pki).with_time(SystemTime::now() + Duration::from_secs(40 * 86_400));
    let signer = CertSigner::from_pem_files(&pki.path("gw-chain.crt"), &pki.key("gw")).unwrap();
    let err = check(&in_2025, &signer, &gw_dn(), OCTETS).unwrap_err();
    assert!(
        err.starts_with("certificate expired on ") && err.ends_with("(CN=gw.example,O=Strait)"),
        "{err}"
    );
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    need_openssl!();
    let pki = pki(KeyType::Rsa(2048));
    pki.root("other-ca", "/CN=Other CA", KeyType::P256);
    pki.issue(
        "stranger",
        "/CN=gw.example",
        KeyType::P256,
        "other-ca",
        false,
        "DNS:gw.example",
        Validity::Days(3),
    );
    let signer = CertSigner::from_pem_files(&pki.crt("stranger"), &pki.key("stranger")).unwrap();
    assert_eq!(
        check(
            &verifier(&pki),
            &signer,
            &Identity::Fqdn("gw.example".into()),
            OCTETS
        ),
        Err("certificate not issued by a configured CA (issuer CN=Other CA)".into())
    );
    // Without its intermediate, our own CA's gateway cannot be chained either.
    let signer = CertSigner::from_pem_files(&pki.crt("gw"), &pki.key("gw")).unwrap();
    assert_eq!(
        check(&verifier(&pki), &signer, &gw_dn(), OCTETS),
        Err(
            "certificate not issued by a configured CA (issuer CN=Test Intermediate,O=Strait)"
                .into()
        )
    );
    // A CA file with both CAs accepts both.
    let both = pki.bundle("both.crt", &["other-ca", "ca"]);
    let signer = CertSigner::from_pem_files(&pki.crt("stranger"), &pki.key("stranger")).unwrap();
    let v = CaVerifier::from_pem_file(&both).unwrap();
    check(&v, &signer, &Identity::Fqdn("gw.example".into()), OCTETS).unwrap();
}

#[test]
fn a_forged_issuer_of_the_same_name_is_refused() {
    need_openssl!();
    let pki = pki(KeyType::P256);
    // A root of the same name as ours but another key.
    pki.root("fake-ca", "/CN=Test Root CA/O=Strait", KeyType::Rsa(2048));
    pki.issue(
        "fake",
        "/CN=gw.example",
        KeyType::P256,
        "fake-ca",
        false,
        "DNS:gw.example",
        Validity::Days(3),
    );
    let signer = CertSigner::from_pem_files(&pki.crt("fake"), &pki.key("fake")).unwrap();
    assert_eq!(
        check(&verifier(&pki), &signer, &Identity::Fqdn("gw.example".into()), OCTETS),
        Err("the signature on certificate CN=gw.example does not verify with its issuer's key (CN=Test Root CA,O=Strait)".into())
    );
}

#[test]
fn an_issuer_that_is_not_a_ca_is_refused() {
    need_openssl!();
    let pki = pki(KeyType::P256);
    // A gateway certificate used to issue another.
    pki.issue(
        "sub",
        "/CN=sub.example",
        KeyType::P256,
        "gw",
        false,
        "DNS:sub.example",
        Validity::Days(3),
    );
    pki.bundle("sub-chain.crt", &["sub", "gw", "int"]);
    let signer = CertSigner::from_pem_files(&pki.path("sub-chain.crt"), &pki.key("sub")).unwrap();
    assert_eq!(
        check(&verifier(&pki), &signer, &Identity::Fqdn("sub.example".into()), OCTETS),
        Err("certificate CN=gw.example,O=Strait issued CN=sub.example but is not a CA (no basicConstraints CA:TRUE)".into())
    );
}

#[test]
fn a_claimed_identity_the_certificate_does_not_name_is_refused() {
    need_openssl!();
    let pki = pki(KeyType::Rsa(2048));
    let signer = CertSigner::from_pem_files(&pki.path("gw-chain.crt"), &pki.key("gw")).unwrap();
    let v = verifier(&pki);
    for (peer, want) in [
        (Identity::Fqdn("other.example".into()), "fqdn:other.example"),
        (
            Identity::Ipv4("192.0.2.9".parse().unwrap()),
            "ipv4:192.0.2.9",
        ),
        (
            Identity::dn(&[("CN", "gw.example")]).unwrap(),
            "dn:CN=gw.example",
        ),
        (Identity::KeyId(b"gw".to_vec()), "keyid:6777"),
    ] {
        assert_eq!(
            check(&v, &signer, &peer, OCTETS),
            Err(format!(
                "certificate identity mismatch: got CN=gw.example,O=Strait \
                 (SAN DNS:gw.example, IP:192.0.2.1, email:ops@example.org); want {want}"
            ))
        );
    }
}

#[test]
fn no_certificate_and_garbage_certificates_are_refused() {
    need_openssl!();
    let pki = pki(KeyType::P256);
    let signer = CertSigner::from_pem_files(&pki.crt("gw"), &pki.key("gw")).unwrap();
    let (method, data) = signer.sign(Prf::HmacSha256, OCTETS).unwrap();
    let v = verifier(&pki);
    let verify = |certs: &[(u8, Vec<u8>)]| {
        v.verify(Prf::HmacSha256, &gw_dn(), OCTETS, method, &data, certs)
            .map_err(|e| e.to_string())
    };
    assert_eq!(verify(&[]), Err("the peer sent no certificate".into()));
    // A raw public key is no X.509 certificate.
    assert_eq!(
        verify(&[(15, vec![0x30, 0x00])]),
        Err("the peer sent no certificate".into())
    );
    let err = verify(&[(4, b"not DER".to_vec())]).unwrap_err();
    assert!(
        err.starts_with("the peer's certificate is unreadable"),
        "{err}"
    );
}

/// The PKCS#8 DER of `NAME.key`.
fn pkcs8(pki: &Pki, name: &str) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
        .arg(pki.key(name))
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn certs_of(pki: &Pki, names: &[&str]) -> Vec<(u8, Vec<u8>)> {
    names.iter().map(|n| (4, pki.der(n))).collect()
}

#[test]
fn classic_rsa_and_ecdsa_auth_methods_verify() {
    need_openssl!();
    let rng = SystemRandom::new();
    // Method 1: RSA PKCS#1 v1.5 with SHA-1.
    let pki = pki(KeyType::Rsa(2048));
    let v = verifier(&pki);
    // ring signs no SHA-1: openssl does.
    std::fs::write(pki.path("octets"), OCTETS).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha1", "-sign"])
        .arg(pki.key("gw"))
        .arg(pki.path("octets"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let sig = out.stdout;
    let pair = RsaKeyPair::from_pkcs8(&pkcs8(&pki, "gw")).unwrap();
    let certs = certs_of(&pki, &["gw", "int"]);
    v.verify(
        Prf::HmacSha256,
        &gw_dn(),
        OCTETS,
        AUTH_RSA_SIGNATURE,
        &sig,
        &certs,
    )
    .unwrap();
    assert_eq!(
        v.verify(
            Prf::HmacSha256,
            &gw_dn(),
            OCTETS,
            AUTH_ECDSA_P256,
            &sig,
            &certs
        )
        .unwrap_err()
        .to_string(),
        "AUTH method 9 needs a P-256 key; the peer's certificate holds a Rsa key"
    );
    // Method 14 with RSASSA-PSS (SHA-256, MGF1 SHA-256, salt 32).
    let mut pss = vec![0; pair.public().modulus_len()];
    pair.sign(&signature::RSA_PSS_SHA256, &rng, OCTETS, &mut pss)
        .unwrap();
    let mut data = vec![PSS_SHA256_ID.len() as u8];
    data.extend_from_slice(PSS_SHA256_ID);
    data.extend_from_slice(&pss);
    v.verify(Prf::HmacSha256, &gw_dn(), OCTETS, 14, &data, &certs)
        .unwrap();
    // Method 9: ECDSA P-256 with SHA-256, r||s.
    let pki = self::pki(KeyType::P256);
    let v = verifier(&pki);
    let pair = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &pkcs8(&pki, "gw"),
        &rng,
    )
    .unwrap();
    let sig = pair.sign(&rng, OCTETS).unwrap();
    let certs = certs_of(&pki, &["gw", "int"]);
    v.verify(
        Prf::HmacSha256,
        &gw_dn(),
        OCTETS,
        AUTH_ECDSA_P256,
        sig.as_ref(),
        &certs,
    )
    .unwrap();
    assert_eq!(
        v.verify(
            Prf::HmacSha256,
            &gw_dn(),
            b"x",
            AUTH_ECDSA_P256,
            sig.as_ref(),
            &certs
        )
        .unwrap_err()
        .to_string(),
        "the signature does not verify with the certificate's key"
    );
}

/// The AlgorithmIdentifier of RSASSA-PSS with SHA-256, MGF1 with SHA-256, salt 32.
const PSS_SHA256_ID: &[u8] = &[
    0x30, 0x41, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30, 0x34, 0xa0,
    0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
    0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30,
    0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0xa2, 0x03,
    0x02, 0x01, 0x20,
];

#[test]
fn the_certificate_request_names_each_ca_by_its_key_hash() {
    need_openssl!();
    let pki = pki(KeyType::P256);
    pki.root("other-ca", "/CN=Other CA", KeyType::P256);
    let both = pki.bundle("both.crt", &["ca", "other-ca"]);
    let v = CaVerifier::from_pem_file(&both).unwrap();
    let spki_sha1 = |name: &str| {
        let pubkey = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha1 -binary",
                pki.crt(name).display()
            ))
            .output()
            .unwrap();
        assert!(pubkey.status.success());
        pubkey.stdout
    };
    let want = [spki_sha1("ca"), spki_sha1("other-ca")].concat();
    assert_eq!(want.len(), 40);
    assert_eq!(v.cert_requests(), vec![(4, want)]);
}

#[test]
fn a_ca_file_without_certificates_is_refused() {
    need_openssl!();
    let pki = pki(KeyType::P256);
    let err = CaVerifier::from_pem_file(&pki.key("ca")).unwrap_err();
    assert!(err.contains("no CERTIFICATE"), "{err}");
    let err = CaVerifier::from_pem_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}
