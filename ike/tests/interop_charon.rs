//! Interop with strongSwan's charon (5.9, kernel-libipsec, so ESP and therefore IKE go
//! to UDP 4500): charon in one test-made netns, our speaker on real UDP sockets in
//! another, Ed25519 raw public keys on both sides (RFC 7427/8420). The IKE SA and the
//! Child SA come up, and the Child SA keys charon logs (at `chd = 4`) are ours; then a
//! Child SA rekey with PFS and an IKE SA rekey, checked the same way. Skips visibly
//! without root or charon.

mod common;

use std::time::{Duration, Instant};

use common::charon::*;
use strait_ike::crypto::suite::Cipher;
use strait_ike::speaker::{Event, Speaker};

const OURS: &str = "10.231.0.1";
const THEIRS: &str = "10.231.0.2";

#[test]
fn charon_establishes_rekeys_and_agrees_on_the_keys() {
    if !can_run("charon_establishes_rekeys_and_agrees_on_the_keys") {
        return;
    }
    // libipsec routes charon's protected net through its TUN device from an address
    // it holds.
    let bed = Bed::new(OURS, THEIRS, &["10.231.2.1"]);
    let (signer, verifier) = raw_keys(bed.dir());
    let charon = bed.charon(&swanctl_raw_keys(&RawKeyConf {
        local_addrs: THEIRS,
        remote_addrs: OURS,
        local_ts: "10.231.2.0/24",
        remote_ts: "10.231.1.0/24",
        connection_extra: "",
    }));
    let config = config(strait_id(), &["10.231.1.0/24"], &["10.231.2.0/24"]);
    let mut driver = bed.driver(Speaker::new(config, Box::new(signer), Box::new(verifier)));
    let peer = charon_id();
    driver.connect(peer.clone(), THEIRS);
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
    driver.close(&peer);
    drop(charon);
}
