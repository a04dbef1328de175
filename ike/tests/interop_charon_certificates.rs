//! strait's speaker against strongSwan's charon (5.9, kernel-libipsec) with X.509
//! certificates from one test PKI (a root, an intermediate, a certificate each):
//! ECDSA with us initiating, RSA with charon initiating, an RSA-4096 chain large
//! enough that IKE_AUTH goes in fragments, and the refusals an operator must read: an
//! expired certificate from charon, our certificate for another name. Skips visibly
//! without root, charon or openssl.

mod common;

use std::time::Duration;

use common::auth_failures;
use common::charon::*;
use strait_ike::auth::{CaVerifier, CertSigner};
use strait_ike::speaker::Speaker;
use strait_testbeds::pki::{KeyType, Pki, Validity, openssl_missing};

const OURS: &str = "10.231.0.1";
const THEIRS: &str = "10.231.0.2";

/// The bed's [`can_run`](common::charon::can_run), and openssl for the test PKI.
fn can_run(test: &str) -> bool {
    if !common::charon::can_run(test) {
        return false;
    }
    if let Some(why) = openssl_missing() {
        eprintln!("SKIP: {test}: {why}");
        return false;
    }
    true
}

/// The test PKI, every key of `key`: root `ca`, intermediate `int`, and from it
/// `charon` (charon.test, valid `charon_validity`), `strait` (strait.test) and
/// `other` (other.test), each with its name as SAN DNS and bundled with `int`.
fn make_pki(key: KeyType, charon_validity: Validity) -> Pki {
    let pki = Pki::new();
    pki.root("ca", "/CN=Interop Root CA/O=Strait", key);
    pki.issue(
        "int",
        "/CN=Interop Intermediate/O=Strait",
        key,
        "ca",
        true,
        "",
        Validity::Days(30),
    );
    for (name, validity) in [
        ("charon", charon_validity),
        ("strait", Validity::Days(3)),
        ("other", Validity::Days(3)),
    ] {
        let host = format!("{name}.test");
        pki.issue(
            name,
            &format!("/CN={host}"),
            key,
            "int",
            false,
            &format!("DNS:{host}"),
            validity,
        );
        pki.bundle(&format!("{name}-chain.crt"), &[name, "int"]);
    }
    pki
}

/// charon's files in swanctl's directories in the bed, and its configuration:
/// certificates both ways, its identity charon.test, ours strait.test, fragmentation.
fn start_charon(bed: &Bed, pki: &Pki) -> Charon {
    for (from, to) in [
        (pki.crt("charon"), "x509/charon.crt"),
        (pki.crt("ca"), "x509ca/ca.crt"),
        (pki.crt("int"), "x509ca/int.crt"),
        (pki.key("charon"), "private/charon.key"),
    ] {
        let to = bed.dir().join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
    let conf = format!(
        "connections {{
  strait {{
    version = 2
    local_addrs = {THEIRS}
    remote_addrs = {OURS}
    proposals = aes256gcm16-prfsha256-x25519
    fragmentation = yes
    send_cert = always
    local {{
      auth = pubkey
      certs = charon.crt
      id = charon.test
    }}
    remote {{
      auth = pubkey
      id = strait.test
    }}
    children {{
      net {{
        local_ts = 10.231.2.0/24
        remote_ts = 10.231.1.0/24
        esp_proposals = aes256gcm16
        mode = tunnel
        start_action = none
      }}
    }}
  }}
}}
"
    );
    bed.charon(&conf)
}

/// Our speaker as strait.test, signing with the certificate `cert` of `pki` and
/// checking charon's against `pki`'s root.
fn driver(bed: &Bed, pki: &Pki, cert: &str) -> Driver {
    let mut config = config(strait_id(), &["10.231.1.0/24"], &["10.231.2.0/24"]);
    config.remote_id = Some(charon_id());
    let signer =
        CertSigner::from_pem_files(&pki.path(&format!("{cert}-chain.crt")), &pki.key(cert))
            .unwrap();
    let verifier = CaVerifier::from_pem_file(&pki.crt("ca")).unwrap();
    bed.driver(Speaker::new(config, Box::new(signer), Box::new(verifier)))
}

/// One run: charon and our speaker in a fresh bed (fields drop in order: charon
/// stops before its netns and directory go).
struct Run {
    charon: Charon,
    driver: Driver,
    _bed: Bed,
}

fn run(pki: &Pki, our_cert: &str) -> Run {
    let bed = Bed::new(OURS, THEIRS, &["10.231.2.1"]);
    let charon = start_charon(&bed, pki);
    let driver = driver(&bed, pki, our_cert);
    Run {
        charon,
        driver,
        _bed: bed,
    }
}

/// We initiate with `pki` and expect the Child SA, keys agreeing with charon's.
fn we_initiate_and_establish(pki: &Pki) -> Run {
    let mut r = run(pki, "strait");
    r.driver.connect(charon_id(), THEIRS);
    let up = r.driver.run_until(Duration::from_secs(15), child_up);
    assert!(up, "{:?}\n{}", r.driver.events, r.charon.all_output());
    let child = r.driver.children()[0].clone();
    assert_eq!(child.peer, charon_id());
    assert_keys_match(&r.charon, &child, true);
    let sas = r.charon.swanctl(&["--list-sas"]);
    assert!(
        sas.contains("ESTABLISHED") && sas.contains("INSTALLED"),
        "{sas}"
    );
    assert!(
        auth_failures(&r.driver.events).is_empty(),
        "{:?}",
        r.driver.events
    );
    r
}

#[test]
fn ecdsa_certificates_when_we_initiate() {
    if !can_run("ecdsa_certificates_when_we_initiate") {
        return;
    }
    let pki = make_pki(KeyType::P256, Validity::Days(3));
    let r = we_initiate_and_establish(&pki);
    let log = r.charon.log();
    // Our CERTREQ named charon's trusted root, which it found by the key hash.
    assert!(
        log.contains("received cert request for \"CN=Interop Root CA, O=Strait\""),
        "{log}"
    );
    assert!(
        log.contains("authentication of 'strait.test' with ECDSA"),
        "{log}"
    );
}

#[test]
fn rsa_certificates_when_charon_initiates() {
    if !can_run("rsa_certificates_when_charon_initiates") {
        return;
    }
    let pki = make_pki(KeyType::Rsa(2048), Validity::Days(3));
    let mut r = run(&pki, "strait");
    let said = r.charon.initiate(&mut r.driver, child_up);
    assert!(said.contains("initiate completed successfully"), "{said}");
    let child = r.driver.children()[0].clone();
    assert_eq!(child.peer, charon_id());
    assert_keys_match(&r.charon, &child, false);
    let log = r.charon.log();
    assert!(
        log.contains("authentication of 'strait.test' with RSA_EMSA_PKCS1_SHA2_256 successful"),
        "{log}"
    );
}

#[test]
fn an_rsa_4096_chain_goes_in_fragments() {
    if !can_run("an_rsa_4096_chain_goes_in_fragments") {
        return;
    }
    let pki = make_pki(KeyType::Rsa(4096), Validity::Days(3));
    let r = we_initiate_and_establish(&pki);
    let log = r.charon.log();
    // Our IKE_AUTH request reached charon in pieces, and its answer left in pieces.
    assert!(log.contains("received fragment #1 of"), "{log}");
    assert!(log.contains("splitting IKE message"), "{log}");
}

#[test]
fn an_expired_certificate_from_charon_is_refused_in_plain_words() {
    if !can_run("an_expired_certificate_from_charon_is_refused_in_plain_words") {
        return;
    }
    let pki = make_pki(
        KeyType::P256,
        Validity::Between("20250101000000Z", "20260101000000Z"),
    );
    let mut r = run(&pki, "strait");
    r.driver.connect(charon_id(), THEIRS);
    r.driver
        .run_until(Duration::from_secs(15), |e| !auth_failures(e).is_empty());
    assert_eq!(
        auth_failures(&r.driver.events),
        vec!["certificate expired on 2026-01-01 00:00:00 UTC (CN=charon.test)".to_string()],
        "{}",
        r.charon.all_output()
    );
    assert!(r.driver.children().is_empty());
}

#[test]
fn our_certificate_for_another_name_is_refused_by_charon() {
    if !can_run("our_certificate_for_another_name_is_refused_by_charon") {
        return;
    }
    let pki = make_pki(KeyType::P256, Validity::Days(3));
    // We say we are strait.test but sign with other.test's certificate.
    let mut r = run(&pki, "other");
    r.driver.connect(charon_id(), THEIRS);
    r.driver
        .run_until(Duration::from_secs(15), |e| !auth_failures(e).is_empty());
    let failures = auth_failures(&r.driver.events);
    assert_eq!(
        failures.len(),
        1,
        "{:?}\n{}",
        r.driver.events,
        r.charon.all_output()
    );
    assert!(
        failures[0].contains("AUTHENTICATION_FAILED"),
        "{failures:?}"
    );
    let log = r.charon.log();
    assert!(
        log.contains("no trusted ECDSA public key found for 'strait.test'"),
        "{log}"
    );
    assert!(r.driver.children().is_empty());
}
