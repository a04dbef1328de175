//! Two speakers authenticating with X.509 certificates, as other vendors' gateways
//! do, over the in-memory network: RSA and ECDSA in both roles, the CERTREQ that
//! names our CA, and the plain-words reasons a peer's certificate is refused with.
//! The certificates come from `openssl` at test time.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use strait_ike::auth::{CaVerifier, CertSigner};
use strait_ike::codec::{ExchangeType, Identity, Payload};
use strait_ike::speaker::Speaker;
use strait_testbeds::pki::{KeyType, Pki, Validity, openssl_missing};

const LIMIT: Duration = Duration::from_secs(30);

macro_rules! need_openssl {
    () => {
        if let Some(why) = openssl_missing() {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
}

fn gw(i: usize) -> String {
    format!("gw-{}.example", (b'a' + i as u8) as char)
}

/// A CA (RSA) and an intermediate, and a certificate of `keys[i]` for each gateway
/// `gw-a.example`, `gw-b.example` (its SAN DNS name), issued by the intermediate.
fn pki(keys: [KeyType; 2]) -> Pki {
    let pki = Pki::new();
    pki.root("ca", "/CN=Test Root CA", KeyType::Rsa(2048));
    pki.issue(
        "int",
        "/CN=Test Intermediate",
        KeyType::P256,
        "ca",
        true,
        "",
        Validity::Days(30),
    );
    for (i, key) in keys.into_iter().enumerate() {
        let name = gw(i);
        pki.issue(
            &name,
            &format!("/CN={name}"),
            key,
            "int",
            false,
            &format!("DNS:{name}"),
            Validity::Days(3),
        );
        pki.bundle(&format!("{name}-chain.crt"), &[&name, "int"]);
    }
    pki
}

/// A pair of gateways `gw-a.example`, `gw-b.example` with certificates from `pki`
/// (gateway `i` signing with the certificate of `certs[i]`) and verifiers of `cas[i]`.
fn cert_pair(pki: &Pki, certs: [&str; 2], cas: [CaVerifier; 2]) -> Net {
    let configs = [0, 1].map(|i| {
        let mut c = config(i);
        c.local_id = Identity::Fqdn(gw(i));
        c
    });
    let mut net = Net::new(configs.to_vec());
    for (i, (config, ca)) in configs.into_iter().zip(cas).enumerate() {
        let signer = CertSigner::from_pem_files(
            &pki.path(&format!("{}-chain.crt", certs[i])),
            &pki.key(certs[i]),
        )
        .unwrap();
        net.nodes[i].id = config.local_id.clone();
        net.nodes[i].speaker = Speaker::new(config, Box::new(signer), Box::new(ca));
    }
    net
}

fn ca(pki: &Pki) -> CaVerifier {
    CaVerifier::from_pem_file(&pki.crt("ca")).unwrap()
}

#[test]
fn rsa_and_ecdsa_certificates_establish_in_both_roles() {
    need_openssl!();
    for keys in [
        [KeyType::Rsa(2048), KeyType::P256],
        [KeyType::P384, KeyType::Rsa(3072)],
    ] {
        let pki = pki(keys);
        for initiator in [0, 1] {
            let mut net = cert_pair(&pki, [&gw(0), &gw(1)], [ca(&pki), ca(&pki)]);
            net.connect(initiator, 1 - initiator);
            assert!(
                net.run_until(LIMIT, Net::established),
                "{keys:?} initiator {initiator}: {:?} / {:?}",
                net.nodes[0].events,
                net.nodes[1].events
            );
            let (a, b) = (&net.nodes[0].installed()[0], &net.nodes[1].installed()[0]);
            assert_mirror(a, b);
            assert_eq!(a.peer, Identity::Fqdn(gw(1)));
            assert_eq!(b.peer, Identity::Fqdn(gw(0)));
            // The responder asked for a certificate of our CA in IKE_SA_INIT.
            let responder = net.nodes[1 - initiator].addr;
            let init_response = net
                .sent
                .iter()
                .filter(|d| d.from == responder)
                .filter_map(|d| d.message())
                .find(|m| m.header.exchange == ExchangeType::IkeSaInit)
                .expect("an IKE_SA_INIT response");
            let certreq = init_response.payloads.iter().find_map(|p| match p {
                Payload::CertReq { encoding, data } => Some((*encoding, data.len())),
                _ => None,
            });
            assert_eq!(certreq, Some((4, 20)), "one SHA-1 hash of encoding 4");
        }
    }
}

#[test]
fn a_certificate_for_another_name_is_refused_with_both_names() {
    need_openssl!();
    let pki = pki([KeyType::P256, KeyType::P256]);
    // Gateway a claims to be gw-a.example but signs with gw-b.example's certificate.
    let mut net = cert_pair(&pki, [&gw(1), &gw(1)], [ca(&pki), ca(&pki)]);
    net.connect(0, 1);
    net.run_until(LIMIT, |n| {
        n.nodes.iter().all(|n| !auth_failures(&n.events).is_empty())
    });
    assert_eq!(
        auth_failures(&net.nodes[1].events),
        vec![
            "certificate identity mismatch: got CN=gw-b.example (SAN DNS:gw-b.example); \
             want fqdn:gw-a.example"
                .to_string()
        ]
    );
    assert!(auth_failures(&net.nodes[0].events)[0].contains("AUTHENTICATION_FAILED"));
    assert!(net.nodes.iter().all(|n| n.installed().is_empty()));
}

#[test]
fn the_initiator_refuses_an_expired_responder_certificate() {
    need_openssl!();
    let pki = pki([KeyType::Rsa(2048), KeyType::P256]);
    // The initiator's clock is past the responder's 3-day certificate (and not the
    // 30-day intermediate).
    let later = SystemTime::now() + Duration::from_secs(5 * 86_400);
    let mut net = cert_pair(
        &pki,
        [&gw(0), &gw(1)],
        [ca(&pki).with_time(later), ca(&pki)],
    );
    net.connect(0, 1);
    net.run_until(LIMIT, |n| !auth_failures(&n.nodes[0].events).is_empty());
    let reason = &auth_failures(&net.nodes[0].events)[0];
    assert!(
        reason.starts_with("certificate expired on ") && reason.ends_with(" UTC (CN=gw-b.example)"),
        "{reason}"
    );
    assert!(net.nodes[0].installed().is_empty());
}

#[test]
fn a_peer_from_a_ca_we_do_not_trust_is_refused() {
    need_openssl!();
    let pki = pki([KeyType::P256, KeyType::P256]);
    pki.root("other-ca", "/CN=Other CA", KeyType::P256);
    let other = CaVerifier::from_pem_file(&pki.crt("other-ca")).unwrap();
    let mut net = cert_pair(&pki, [&gw(0), &gw(1)], [ca(&pki), other]);
    net.connect(0, 1);
    net.run_until(LIMIT, |n| !auth_failures(&n.nodes[1].events).is_empty());
    assert_eq!(
        auth_failures(&net.nodes[1].events),
        vec!["certificate not issued by a configured CA (issuer CN=Test Root CA)".to_string()]
    );
}
