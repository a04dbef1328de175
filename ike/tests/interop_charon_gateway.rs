//! strait's speaker against strongSwan's charon (5.9, kernel-libipsec) as another
//! vendor's gateway: pre-shared keys with each side initiating, our DN identity,
//! and the failures an operator must be able to read: a wrong key, a wrong identity,
//! proposals with nothing in common, each in plain words on our side and seen by
//! charon. Skips visibly without root or charon.

mod common;

use std::time::Duration;

use common::charon::*;
use common::failures;
use strait_ike::auth::Psk;
use strait_ike::codec::Identity;
use strait_ike::speaker::{Config, Event, Speaker};

const OURS: &str = "10.231.0.1";
const THEIRS: &str = "10.231.0.2";
const KEY: &str = "a pre-shared key of 32 bytes, ok";
/// What both sides have in common where the test is not about proposals.
const GOOD_PROPOSALS: &str = "aes256gcm16-prfsha256-x25519";

/// charon's side: `ike_proposals`, PSK both ways with `key`, its identity
/// charon.test, ours `our_id` as swanctl writes identities.
fn swanctl_psk(ike_proposals: &str, key: &str, our_id: &str) -> String {
    format!(
        "connections {{
  strait {{
    version = 2
    local_addrs = {THEIRS}
    remote_addrs = {OURS}
    proposals = {ike_proposals}
    local {{
      auth = psk
      id = charon.test
    }}
    remote {{
      auth = psk
      id = \"{our_id}\"
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
secrets {{
  ike-strait {{
    secret = \"{key}\"
  }}
}}
"
    )
}

/// Our side (see [`config`]) as `local_id`, expecting `remote_id`.
fn our_config(local_id: Identity, remote_id: Identity) -> Config {
    let mut config = config(local_id, &["10.231.1.0/24"], &["10.231.2.0/24"]);
    config.remote_id = Some(remote_id);
    config
}

/// A bed with charon on `swanctl_psk(ike_proposals, KEY, "strait.test")`, and our
/// speaker as strait.test with `key`, expecting `remote_id`.
fn gateway(ike_proposals: &str, key: &str, remote_id: Identity) -> (Bed, Charon, Driver) {
    let bed = Bed::new(OURS, THEIRS, &["10.231.2.1"]);
    let charon = bed.charon(&swanctl_psk(ike_proposals, KEY, "strait.test"));
    let driver = psk_driver(&bed, our_config(strait_id(), remote_id), key);
    (bed, charon, driver)
}

fn psk_driver(bed: &Bed, config: Config, key: &str) -> Driver {
    let psk = || Box::new(Psk::new(key.as_bytes().to_vec()));
    bed.driver(Speaker::new(config, psk(), psk()))
}

#[test]
fn psk_with_a_dn_identity_when_we_initiate() {
    if !can_run("psk_with_a_dn_identity_when_we_initiate") {
        return;
    }
    let bed = Bed::new(OURS, THEIRS, &["10.231.2.1"]);
    // strongSwan parses the DN of its configuration itself and compares it with the
    // DER we send.
    let charon = bed.charon(&swanctl_psk(
        GOOD_PROPOSALS,
        KEY,
        "CN=strait.test, O=Strait, C=DE",
    ));
    let ours = Identity::dn(&[("CN", "strait.test"), ("O", "Strait"), ("C", "DE")]).unwrap();
    let mut driver = psk_driver(&bed, our_config(ours, charon_id()), KEY);
    driver.connect(charon_id(), THEIRS);
    let up = driver.run_until(Duration::from_secs(15), child_up);
    assert!(up, "{:?}\n{}", driver.events, charon.all_output());
    let child = driver.children()[0].clone();
    assert_eq!(child.peer, charon_id());
    assert_eq!(child.ts_remote, vec![ts("10.231.2.0/24")]);
    assert_keys_match(&charon, &child, true);
    let sas = charon.swanctl(&["--list-sas"]);
    assert!(
        sas.contains("ESTABLISHED") && sas.contains("INSTALLED"),
        "{sas}"
    );
    assert!(
        sas.contains("CN=strait.test, O=Strait, C=DE"),
        "charon names us by our DN: {sas}"
    );
    assert!(failures(&driver.events).is_empty(), "{:?}", driver.events);
}

#[test]
fn psk_when_charon_initiates() {
    if !can_run("psk_when_charon_initiates") {
        return;
    }
    let (_bed, charon, mut driver) = gateway(GOOD_PROPOSALS, KEY, charon_id());
    let said = charon.initiate(&mut driver, child_up);
    let child = driver.children()[0].clone();
    assert_eq!(child.peer, charon_id());
    assert_eq!(child.ts_local, vec![ts("10.231.1.0/24")]);
    assert_keys_match(&charon, &child, false);
    assert!(said.contains("initiate completed successfully"), "{said}");
}

#[test]
fn a_wrong_psk_is_reported_on_both_sides() {
    if !can_run("a_wrong_psk_is_reported_on_both_sides") {
        return;
    }
    let (_bed, charon, mut driver) = gateway(
        GOOD_PROPOSALS,
        "not the key charon has, 32 bytes",
        charon_id(),
    );
    driver.connect(charon_id(), THEIRS);
    let failed = driver.run_until(Duration::from_secs(15), |e| !failures(e).is_empty());
    assert!(failed, "{:?}\n{}", driver.events, charon.all_output());
    let reason = failures(&driver.events).remove(0);
    assert!(
        reason.contains("AUTHENTICATION_FAILED") && reason.contains("pre-shared key"),
        "{reason}"
    );
    assert!(driver.children().is_empty());
    let log = charon.log();
    assert!(log.contains("MAC mismatched"), "{log}");
    assert!(
        log.contains("IKE_AUTH response 1 [ N(AUTH_FAILED) ]"),
        "{log}"
    );

    // charon initiating with the other key: our side names the cause.
    let said = charon.initiate(&mut driver, |e| {
        e.iter().any(
            |e| matches!(e, Event::AuthFailed { reason, .. } if reason.contains("different keys")),
        )
    });
    assert!(said.contains("failed"), "{said}");
    assert!(charon.log().contains("received AUTHENTICATION_FAILED"));
}

#[test]
fn a_peer_that_is_not_the_expected_identity_is_refused() {
    if !can_run("a_peer_that_is_not_the_expected_identity_is_refused") {
        return;
    }
    let (_bed, charon, mut driver) =
        gateway(GOOD_PROPOSALS, KEY, Identity::Fqdn("other.test".into()));
    charon.initiate(&mut driver, |e| !failures(e).is_empty());
    assert_eq!(
        failures(&driver.events),
        vec!["the peer says it is fqdn:charon.test; we expect fqdn:other.test".to_string()]
    );
    assert!(driver.children().is_empty());
    assert!(charon.log().contains("received AUTHENTICATION_FAILED"));
}

#[test]
fn proposals_with_nothing_in_common_are_explained_in_both_roles() {
    if !can_run("proposals_with_nothing_in_common_are_explained_in_both_roles") {
        return;
    }
    let (_bed, charon, mut driver) = gateway("aes128-sha1-modp2048", KEY, charon_id());
    driver.connect(charon_id(), THEIRS);
    assert!(
        driver.run_until(Duration::from_secs(15), |e| !failures(e).is_empty()),
        "{:?}\n{}",
        driver.events,
        charon.all_output()
    );
    assert_eq!(
        failures(&driver.events),
        vec![
            "the peer accepted none of our proposals (NO_PROPOSAL_CHOSEN; \
             we offered IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519)"
                .to_string()
        ]
    );
    let log = charon.log();
    assert!(
        log.contains("received proposals unacceptable")
            && log.contains("IKE_SA_INIT response 0 [ N(NO_PROP) ]"),
        "{log}"
    );

    driver.events.clear();
    charon.initiate(&mut driver, |e| !failures(e).is_empty());
    assert_eq!(
        failures(&driver.events),
        vec![
            "the peer proposed only IKE:AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048; \
             we accept IKE:AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE_25519"
                .to_string()
        ]
    );
    assert!(
        charon.log().contains("received NO_PROPOSAL_CHOSEN"),
        "{}",
        charon.log()
    );
}
