//! Two speakers authenticating as other vendors' gateways do, over the in-memory
//! network: pre-shared keys (AUTH method 2), the identity the peer must prove, and
//! the plain-words reasons a failure is reported with.

mod common;

use std::time::Duration;

use common::*;
use strait_ike::auth::Psk;
use strait_ike::codec::{Identity, TrafficSelector};
use strait_ike::crypto::prf::Prf;
use strait_ike::crypto::suite::{Cipher, Group};
use strait_ike::speaker::{Config, Event, Speaker};

const LIMIT: Duration = Duration::from_secs(30);
/// The key both sides share where the test is not about the key.
const KEY: &[u8] = b"sixteen or more bytes of key";

fn psk_speaker(config: Config, key: &[u8]) -> Speaker {
    Speaker::new(
        config,
        Box::new(Psk::new(key.to_vec())),
        Box::new(Psk::new(key.to_vec())),
    )
}

/// A pair whose speakers use pre-shared keys `a` and `b`, with `configs`.
fn psk_pair(configs: [Config; 2], a: &[u8], b: &[u8]) -> Net {
    let mut net = Net::new(configs.to_vec());
    let [ca, cb] = configs;
    net.nodes[0].speaker = psk_speaker(ca, a);
    net.nodes[1].speaker = psk_speaker(cb, b);
    net
}

/// A pair whose speakers hold different pre-shared keys.
fn wrong_key_pair() -> Net {
    psk_pair(
        [config(0), config(1)],
        b"the initiator's key, long",
        b"the responder's key, long",
    )
}

/// The Child SA failures of `initiator` and `responder` once both have one.
fn child_failures_between(initiator: Config, responder: Config) -> (Vec<String>, Vec<String>) {
    let mut net = Net::new(vec![initiator, responder]);
    net.connect(0, 1);
    net.run_until(LIMIT, |n| {
        n.nodes
            .iter()
            .all(|n| !child_failures(&n.events).is_empty())
    });
    (
        child_failures(&net.nodes[0].events),
        child_failures(&net.nodes[1].events),
    )
}

#[test]
fn pre_shared_keys_establish_in_both_roles() {
    for initiator in [0, 1] {
        let mut net = psk_pair([config(0), config(1)], KEY, KEY);
        net.connect(initiator, 1 - initiator);
        assert!(net.run_until(LIMIT, Net::established));
        let (a, b) = (&net.nodes[0].installed()[0], &net.nodes[1].installed()[0]);
        assert_mirror(a, b);
        assert_eq!(a.peer, node_id(1));
        assert!(auth_failures(&net.nodes[0].events).is_empty());
    }
}

#[test]
fn a_wrong_pre_shared_key_fails_on_both_sides_with_the_reason() {
    let mut net = wrong_key_pair();
    net.connect(0, 1);
    net.run_until(LIMIT, |n| {
        !auth_failures(&n.nodes[0].events).is_empty()
            && !auth_failures(&n.nodes[1].events).is_empty()
    });
    let responder = auth_failures(&net.nodes[1].events);
    assert_eq!(responder.len(), 1, "{:?}", net.nodes[1].events);
    assert!(responder[0].contains("pre-shared key"), "{responder:?}");
    let initiator = auth_failures(&net.nodes[0].events);
    assert_eq!(initiator.len(), 1, "{:?}", net.nodes[0].events);
    assert!(
        initiator[0].contains("AUTHENTICATION_FAILED")
            && initiator[0].contains("check the pre-shared key"),
        "{initiator:?}"
    );
    assert!(net.nodes.iter().all(|n| n.installed().is_empty()));
}

#[test]
fn the_responder_refuses_an_initiator_that_is_not_the_expected_peer() {
    let mut responder = config(1);
    responder.remote_id = Some(Identity::Fqdn("someone-else".into()));
    let mut net = psk_pair([config(0), responder], KEY, KEY);
    net.connect(0, 1);
    net.run_until(LIMIT, |n| !auth_failures(&n.nodes[1].events).is_empty());
    assert_eq!(
        auth_failures(&net.nodes[1].events),
        vec!["the peer says it is fqdn:node-a; we expect fqdn:someone-else".to_string()]
    );
    assert!(net.nodes.iter().all(|n| n.installed().is_empty()));
}

#[test]
fn the_initiator_refuses_a_responder_that_is_not_the_expected_peer() {
    let mut initiator = config(0);
    initiator.remote_id = Some(Identity::Fqdn("gw.example".into()));
    let mut net = psk_pair([initiator, config(1)], KEY, KEY);
    let (local, remote, now) = (net.nodes[0].addr, net.nodes[1].addr, net.now);
    net.nodes[0]
        .speaker
        .connect(Identity::Fqdn("gw.example".into()), local, remote, now);
    // The responder, which took the initiator's AUTH, is told and drops its SAs.
    net.run_until(LIMIT, |n| {
        n.nodes.iter().all(|n| !auth_failures(&n.events).is_empty())
    });
    assert_eq!(
        auth_failures(&net.nodes[0].events),
        vec!["the peer says it is fqdn:node-b; we expect fqdn:gw.example".to_string()]
    );
    assert!(net.nodes.iter().all(|n| n.installed().is_empty()));
}

#[test]
fn an_expected_dn_matches_the_same_dn_in_other_string_types() {
    let dn = Identity::dn(&[("CN", "gw.example"), ("O", "Example")]).unwrap();
    let mut initiator = config(0);
    initiator.local_id = dn.clone();
    let mut responder = config(1);
    responder.remote_id = Some(Identity::dn(&[("cn", "GW.example"), ("o", "example")]).unwrap());
    let mut net = psk_pair([initiator, responder], KEY, KEY);
    net.nodes[0].id = dn.clone();
    net.connect(0, 1);
    assert!(
        net.run_until(LIMIT, Net::established),
        "{:?}",
        net.nodes[1].events
    );
    assert_eq!(
        net.nodes[1].installed()[0].peer.to_string(),
        "dn:CN=gw.example,O=Example"
    );
}

#[test]
fn mismatched_ike_proposals_are_explained_on_both_sides() {
    let mut initiator = config(0);
    initiator.ike_ciphers = vec![Cipher::AesGcm16_128];
    initiator.prfs = vec![Prf::HmacSha256];
    initiator.groups = vec![Group::Ecp256];
    let mut responder = config(1);
    responder.ike_ciphers = vec![Cipher::AesGcm16_256];
    let mut net = Net::new(vec![initiator, responder]);
    net.connect(0, 1);
    net.run_until(LIMIT, |n| {
        n.nodes.iter().all(|n| !failures(&n.events).is_empty())
    });
    assert_eq!(
        failures(&net.nodes[1].events),
        vec![
            "the peer proposed only IKE:AES_GCM_16_128/PRF_HMAC_SHA2_256/ECP_256; \
             we accept IKE:AES_GCM_16_256/PRF_HMAC_SHA2_384/PRF_HMAC_SHA2_256/CURVE_25519/ECP_256"
                .to_string()
        ]
    );
    assert!(net.nodes[1].events.iter().any(
        |e| matches!(e, Event::Failed { remote, peer: None, .. } if *remote == net.nodes[0].addr)
    ));
    assert_eq!(
        failures(&net.nodes[0].events),
        vec![
            "the peer accepted none of our proposals (NO_PROPOSAL_CHOSEN; \
             we offered IKE:AES_GCM_16_128/PRF_HMAC_SHA2_256/ECP_256)"
                .to_string()
        ]
    );
}

#[test]
fn mismatched_child_proposals_and_selectors_are_explained_on_both_sides() {
    let mut initiator = config(0);
    initiator.esp_ciphers = vec![Cipher::AesGcm16_128];
    initiator.esn = vec![false];
    let mut responder = config(1);
    responder.esp_ciphers = vec![Cipher::AesGcm16_256];
    let (initiator, responder) = child_failures_between(initiator, responder);
    assert_eq!(
        responder,
        vec![
            "the peer proposed only ESP:AES_GCM_16_128/NO_EXT_SEQ for the Child SA; \
             we accept ESP:AES_GCM_16_256/EXT_SEQ/NO_EXT_SEQ"
                .to_string()
        ]
    );
    assert_eq!(
        initiator,
        vec![
            "the peer accepted none of our Child SA proposals (NO_PROPOSAL_CHOSEN; \
             we offered ESP:AES_GCM_16_128/NO_EXT_SEQ)"
                .to_string()
        ]
    );

    let ts = |s: &str| TrafficSelector::prefix(s.parse().unwrap());
    let mut initiator = config(0);
    initiator.local_ts = vec![ts("10.1.0.0/24")];
    initiator.remote_ts = vec![ts("10.2.0.0/24")];
    let mut responder = config(1);
    responder.local_ts = vec![ts("10.9.0.0/24")];
    let (initiator, responder) = child_failures_between(initiator, responder);
    assert_eq!(
        responder,
        vec![
            "the peer proposed traffic selectors 10.1.0.0/24 === 10.2.0.0/24; \
             we allow 0.0.0.0/0, ::/0 === 10.9.0.0/24"
                .to_string()
        ]
    );
    assert_eq!(
        initiator,
        vec![
            "the peer refused our traffic selectors (TS_UNACCEPTABLE; \
             we offered 10.1.0.0/24 === 10.2.0.0/24)"
                .to_string()
        ]
    );
}

#[test]
fn a_failure_before_the_sa_is_up_comes_as_failed_with_the_remote() {
    let mut net = wrong_key_pair();
    net.connect(0, 1);
    net.run_until(LIMIT, |n| {
        n.nodes.iter().all(|n| !failures(&n.events).is_empty())
    });
    let (a, b) = (net.nodes[0].addr, net.nodes[1].addr);
    assert!(net.nodes[1].events.iter().any(|e| matches!(
        e,
        Event::Failed { remote, peer: Some(p), reason }
            if *remote == a && *p == node_id(0) && reason.contains("pre-shared key")
    )));
    assert!(net.nodes[0].events.iter().any(|e| matches!(
        e,
        Event::Failed { remote, peer: Some(p), reason }
            if *remote == b && *p == node_id(1) && reason.contains("AUTHENTICATION_FAILED")
    )));
}
