//! Interop with strongSwan's charon (5.9, kernel-libipsec, so ESP and therefore IKE go
//! to UDP 4500): charon in one test-made netns, our speaker on real UDP sockets in
//! another, Ed25519 raw public keys on both sides (RFC 7427/8420). The IKE SA and the
//! Child SA come up, and the Child SA keys charon logs (at `chd = 4`) are ours; then a
//! Child SA rekey with PFS and an IKE SA rekey, checked the same way. Skips visibly
//! without root or charon.

mod common;

use std::time::{Duration, Instant};

use common::charon::*;
use strait_ike::auth::RawKeyVerifier;
use strait_ike::codec::{Identity, TrafficSelector};
use strait_ike::crypto::prf::Prf;
use strait_ike::crypto::suite::{Cipher, Group};
use strait_ike::speaker::{Config, Event, Speaker};
use strait_testbeds::netns::Netns;
use strait_testbeds::{require_root, unique_prefix};

const OURS: &str = "10.231.0.1";
const THEIRS: &str = "10.231.0.2";

#[test]
fn charon_establishes_rekeys_and_agrees_on_the_keys() {
    if !require_root("charon_establishes_rekeys_and_agrees_on_the_keys") {
        return;
    }
    if let Some(why) = tool_missing() {
        eprintln!("SKIP: charon_establishes_rekeys_and_agrees_on_the_keys: {why}");
        return;
    }
    let prefix = unique_prefix();
    let ours = Netns::new(format!("{prefix}s"));
    let theirs = Netns::new(format!("{prefix}c"));
    ours.exec_ok(&[
        "ip",
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        theirs.name(),
    ]);
    for (ns, addr) in [(&ours, OURS), (&theirs, THEIRS)] {
        ns.exec_ok(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
    }
    // libipsec routes charon's protected net through its TUN device from an address
    // it holds.
    theirs.exec_ok(&["ip", "addr", "add", "10.231.2.1/32", "dev", "lo"]);
    let dir = tempfile::tempdir().unwrap();

    let (signer, strait_pem) = strait_key(dir.path());
    let charon = start_charon(
        &theirs,
        dir.path(),
        &strait_pem,
        &CharonConf {
            local_addrs: THEIRS,
            remote_addrs: OURS,
            local_ts: "10.231.2.0/24",
            remote_ts: "10.231.1.0/24",
            charon_extra: "",
            connection_extra: "",
        },
    );
    let charon_key = charon_key(dir.path());
    let ts = |s: &str| TrafficSelector::prefix(s.parse().unwrap());
    let mut config = Config::new(Identity::Fqdn("strait.test".into()));
    config.ike_ciphers = vec![Cipher::AesGcm16_256];
    config.prfs = vec![Prf::HmacSha256];
    config.groups = vec![Group::Curve25519];
    config.esp_ciphers = vec![Cipher::AesGcm16_256];
    config.local_ts = vec![ts("10.231.1.0/24")];
    config.remote_ts = vec![ts("10.231.2.0/24")];
    let verifier = RawKeyVerifier::new(move |id: &Identity| {
        (*id == Identity::Fqdn("charon.test".into())).then_some(charon_key)
    });
    let mut driver = Driver::new(
        Speaker::new(config, Box::new(signer), Box::new(verifier)),
        sockets(&ours, OURS),
    );
    let peer = Identity::Fqdn("charon.test".into());
    let (local, remote) = (
        format!("{OURS}:500").parse().unwrap(),
        format!("{THEIRS}:500").parse().unwrap(),
    );
    driver
        .speaker
        .connect(peer.clone(), local, remote, Instant::now());
    let up = driver.run_until(Duration::from_secs(15), |e| !children(e).is_empty());
    assert!(
        up,
        "no Child SA with charon: {:?}\n{}",
        driver.events,
        charon.all_output()
    );
    let child = children(&driver.events)[0].clone();
    assert_eq!(child.cipher, Cipher::AesGcm16_256);
    assert!(!child.esn, "libipsec has no ESN");
    assert!(child.udp_encap, "libipsec forces UDP encapsulation");
    assert_eq!(child.ts_local, vec![ts("10.231.1.0/24")]);
    assert_eq!(child.ts_remote, vec![ts("10.231.2.0/24")]);
    assert_keys_match(&charon, &child, true);
    // No NAT on this line: only charon's forced encapsulation (libipsec) shows.
    let status = driver.speaker.status();
    assert!(!status[0].nat.local_behind_nat, "{status:?}");
    let sas = charon.swanctl(&["--list-sas"]);
    assert!(
        sas.contains("ESTABLISHED") && sas.contains("INSTALLED"),
        "{sas}"
    );

    // A Child SA rekey with PFS (the proposal carries x25519), then an IKE SA rekey,
    // then a Child SA rekey on the new IKE SA: the keys still agree.
    driver.speaker.rekey_child(&peer, Instant::now());
    let rekeyed = driver.run_until(Duration::from_secs(10), |e| {
        e.iter().any(|e| matches!(e, Event::ChildSaRekeyed { .. }))
            && e.iter().any(|e| matches!(e, Event::ChildSaDeleted { .. }))
    });
    assert!(rekeyed, "{:?}\n{}", driver.events, charon.log());
    assert_keys_match(&charon, children(&driver.events).last().unwrap(), true);

    driver.speaker.rekey_ike(&peer, Instant::now());
    let ike_rekeyed = driver.run_until(Duration::from_secs(10), |e| {
        e.iter().any(|e| matches!(e, Event::IkeSaRekeyed { .. }))
    });
    assert!(ike_rekeyed, "{:?}\n{}", driver.events, charon.log());
    driver.run_until(Duration::from_secs(2), |_| false);
    assert_eq!(
        driver.speaker.status().len(),
        1,
        "{:?}",
        driver.speaker.status()
    );
    driver.speaker.rekey_child(&peer, Instant::now());
    let again = driver.run_until(Duration::from_secs(10), |e| {
        e.iter()
            .filter(|e| matches!(e, Event::ChildSaRekeyed { .. }))
            .count()
            == 2
    });
    assert!(again, "{:?}\n{}", driver.events, charon.log());
    assert_keys_match(&charon, children(&driver.events).last().unwrap(), true);
    assert!(
        driver
            .events
            .iter()
            .all(|e| !matches!(e, Event::IkeSaDown { .. } | Event::AuthFailed { .. }))
    );

    driver.speaker.delete(&peer, Instant::now());
    assert!(driver.run_until(Duration::from_secs(5), |e| {
        e.iter().any(|e| matches!(e, Event::IkeSaDown { .. }))
    }));
    drop(charon);
}
