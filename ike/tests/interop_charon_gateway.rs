//! strait's speaker against strongSwan's charon (5.9, kernel-libipsec) as another
//! vendor's gateway: pre-shared keys with each side initiating, our DN identity,
//! and the failures an operator must be able to read: a wrong key, a wrong identity,
//! proposals with nothing in common, each in plain words on our side and seen by
//! charon. Skips visibly without root or charon.

#[path = "common/charon_bed.rs"]
mod charon;

use std::time::{Duration, Instant};

use charon::{Bed, Charon, Driver, OURS, THEIRS, assert_keys_match, tool_missing};
use strait_ike::auth::Psk;
use strait_ike::codec::{Identity, TrafficSelector};
use strait_ike::crypto::prf::Prf;
use strait_ike::crypto::suite::{Cipher, Group};
use strait_ike::speaker::{Config, Event, Speaker};
use strait_testbeds::require_root;

const KEY: &str = "a pre-shared key of 32 bytes, ok";

fn can_run(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    if let Some(why) = tool_missing() {
        eprintln!("SKIP: {test}: {why}");
        return false;
    }
    true
}

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

fn ts(s: &str) -> TrafficSelector {
    TrafficSelector::prefix(s.parse().unwrap())
}

/// Our side: AES-GCM-256, SHA-256, Curve25519 (what charon is given), our selectors,
/// expecting charon.test.
fn config(local_id: Identity, remote_id: Identity) -> Config {
    let mut config = Config::new(local_id);
    config.remote_id = Some(remote_id);
    config.ike_ciphers = vec![Cipher::AesGcm16_256];
    config.prfs = vec![Prf::HmacSha256];
    config.groups = vec![Group::Curve25519];
    config.esp_ciphers = vec![Cipher::AesGcm16_256];
    config.local_ts = vec![ts("10.231.1.0/24")];
    config.remote_ts = vec![ts("10.231.2.0/24")];
    config
}

fn psk_driver(bed: &Bed, config: Config, key: &str) -> Driver {
    let psk = || Box::new(Psk::new(key.as_bytes().to_vec()));
    bed.driver(Speaker::new(config, psk(), psk()))
}

fn charon_id() -> Identity {
    Identity::Fqdn("charon.test".into())
}

fn connect(driver: &mut Driver, peer: Identity) {
    let (local, remote) = (
        format!("{OURS}:500").parse().unwrap(),
        format!("{THEIRS}:500").parse().unwrap(),
    );
    driver.speaker.connect(peer, local, remote, Instant::now());
}

fn failures(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Failed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// charon initiates (`swanctl --initiate`) while our speaker answers; the child
/// process's output once it ends.
fn charon_initiates(
    charon: &Charon,
    driver: &mut Driver,
    done: impl Fn(&[Event]) -> bool,
) -> String {
    let mut initiate = charon
        .swanctl_command(&["--initiate", "--child", "net", "--timeout", "15"])
        .spawn()
        .unwrap();
    let ok = driver.run_until(Duration::from_secs(20), done);
    // Our answers are out; let swanctl see the outcome.
    driver.run_until(Duration::from_secs(1), |_| false);
    let _ = initiate.kill();
    let out = initiate.wait_with_output().unwrap();
    assert!(ok, "{:?}\n{}", driver.events, charon.all_output());
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn psk_with_a_dn_identity_when_we_initiate() {
    if !can_run("psk_with_a_dn_identity_when_we_initiate") {
        return;
    }
    let bed = Bed::new();
    let dir = tempfile::tempdir().unwrap();
    // strongSwan parses the DN of its configuration itself and compares it with the
    // DER we send.
    let charon = Charon::start(
        &bed.theirs,
        dir.path(),
        &swanctl_psk(
            "aes256gcm16-prfsha256-x25519",
            KEY,
            "CN=strait.test, O=Strait, C=DE",
        ),
    );
    let ours = Identity::dn(&[("CN", "strait.test"), ("O", "Strait"), ("C", "DE")]).unwrap();
    let mut driver = psk_driver(&bed, config(ours, charon_id()), KEY);
    connect(&mut driver, charon_id());
    let up = driver.run_until(Duration::from_secs(15), |e| {
        e.iter().any(|e| matches!(e, Event::ChildSaUp(_)))
    });
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
    let bed = Bed::new();
    let dir = tempfile::tempdir().unwrap();
    let charon = Charon::start(
        &bed.theirs,
        dir.path(),
        &swanctl_psk("aes256gcm16-prfsha256-x25519", KEY, "strait.test"),
    );
    let mut driver = psk_driver(
        &bed,
        config(Identity::Fqdn("strait.test".into()), charon_id()),
        KEY,
    );
    let said = charon_initiates(&charon, &mut driver, |e| {
        e.iter().any(|e| matches!(e, Event::ChildSaUp(_)))
    });
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
    let bed = Bed::new();
    let dir = tempfile::tempdir().unwrap();
    let charon = Charon::start(
        &bed.theirs,
        dir.path(),
        &swanctl_psk("aes256gcm16-prfsha256-x25519", KEY, "strait.test"),
    );
    let mut driver = psk_driver(
        &bed,
        config(Identity::Fqdn("strait.test".into()), charon_id()),
        "not the key charon has, 32 bytes",
    );
    connect(&mut driver, charon_id());
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
    let said = charon_initiates(&charon, &mut driver, |e| {
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
    let bed = Bed::new();
    let dir = tempfile::tempdir().unwrap();
    let charon = Charon::start(
        &bed.theirs,
        dir.path(),
        &swanctl_psk("aes256gcm16-prfsha256-x25519", KEY, "strait.test"),
    );
    let mut driver = psk_driver(
        &bed,
        config(
            Identity::Fqdn("strait.test".into()),
            Identity::Fqdn("other.test".into()),
        ),
        KEY,
    );
    charon_initiates(&charon, &mut driver, |e| !failures(e).is_empty());
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
    let bed = Bed::new();
    let dir = tempfile::tempdir().unwrap();
    let charon = Charon::start(
        &bed.theirs,
        dir.path(),
        &swanctl_psk("aes128-sha1-modp2048", KEY, "strait.test"),
    );
    let mut driver = psk_driver(
        &bed,
        config(Identity::Fqdn("strait.test".into()), charon_id()),
        KEY,
    );
    connect(&mut driver, charon_id());
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
    charon_initiates(&charon, &mut driver, |e| !failures(e).is_empty());
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
