//! IKE fragmentation (RFC 7383) with strongSwan's charon: `fragmentation = yes` in its
//! connection and a small `charon.fragment_size`, our `fragment_size` small too, and
//! 16 traffic selectors each way so that IKE_AUTH and CREATE_CHILD_SA do not fit:
//! both go as Encrypted Fragments in both directions (counted on our sockets and in
//! charon's log), and the Child SAs come up with the keys charon has. Skips visibly
//! without root or charon.

mod common;

use std::time::{Duration, Instant};

use common::charon::*;
use strait_ike::codec::{ExchangeType, TrafficSelector};
use strait_ike::speaker::{Event, Speaker};

const OURS: &str = "10.233.0.1";
const THEIRS: &str = "10.233.0.2";
/// The IPv4 minimum both sides may use (RFC 7383 §2.5.1).
const FRAGMENT_SIZE: usize = 576;

/// 16 /24s: charon's side in 10.234/16, ours in 10.235/16.
fn nets(second: u8) -> Vec<String> {
    (0..16).map(|n| format!("10.{second}.{n}.0/24")).collect()
}

/// (fragments we sent, fragments we received) of `exchange`.
fn fragments(driver: &Driver, exchange: ExchangeType) -> (usize, usize) {
    let count = |sent: bool| {
        driver
            .wire
            .iter()
            .filter(|w| w.sent == sent)
            .filter(|w| w.fragment().is_some_and(|(x, ..)| x == exchange))
            .count()
    };
    (count(true), count(false))
}

#[test]
fn charon_and_strait_fragment_ike_auth_and_create_child_sa_both_ways() {
    let name = "charon_and_strait_fragment_ike_auth_and_create_child_sa_both_ways";
    if !can_run(name) {
        return;
    }
    // libipsec routes each protected net through its TUN device from an address it
    // holds there.
    let held: Vec<String> = (0..16).map(|n| format!("10.234.{n}.1")).collect();
    let held: Vec<&str> = held.iter().map(String::as_str).collect();
    let bed = Bed::new(OURS, THEIRS, &held);
    let (signer, verifier) = raw_keys(bed.dir());
    let (theirs_ts, ours_ts) = (nets(234), nets(235));
    let charon = Charon::start(
        &bed.theirs,
        bed.dir(),
        &swanctl_raw_keys(&RawKeyConf {
            local_addrs: THEIRS,
            remote_addrs: OURS,
            local_ts: &theirs_ts.join(","),
            remote_ts: &ours_ts.join(","),
            connection_extra: "    fragmentation = yes",
        }),
        &format!("  fragment_size = {FRAGMENT_SIZE}"),
    );
    let ts = |v: &[String]| -> Vec<TrafficSelector> { v.iter().map(|s| ts(s)).collect() };
    let (ours, theirs): (Vec<&str>, Vec<&str>) = (
        ours_ts.iter().map(String::as_str).collect(),
        theirs_ts.iter().map(String::as_str).collect(),
    );
    let mut config = config(strait_id(), &ours, &theirs);
    config.fragment_size = FRAGMENT_SIZE;
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
    assert_eq!(child.ts_local, ts(&ours_ts));
    assert_eq!(child.ts_remote, ts(&theirs_ts));
    assert_keys_match(&charon, &child, true);

    let (sent, received) = fragments(&driver, ExchangeType::IkeAuth);
    assert!(sent >= 2, "our IKE_AUTH went in {sent} fragments");
    assert!(
        received >= 2,
        "charon's IKE_AUTH came in {received} fragments"
    );
    let log = charon.log();
    assert!(
        log.contains("received fragment #1 of")
            && log.contains("reassembled fragmented IKE message"),
        "charon reassembled nothing:\n{log}"
    );
    assert!(
        log.contains("splitting IKE message"),
        "charon fragmented nothing:\n{log}"
    );
    // Every datagram after IKE_SA_INIT fits the fragment size, IP and UDP headers
    // and the non-ESP marker included.
    for w in driver.wire.iter().filter(|w| w.local.port() == 4500) {
        assert!(
            w.bytes.len() + 20 + 8 + 4 <= FRAGMENT_SIZE,
            "{} bytes",
            w.bytes.len()
        );
    }

    // A Child SA rekey carries all the selectors again: fragmented both ways.
    driver.speaker.rekey_child(&peer, Instant::now());
    let rekeyed = driver.run_until(Duration::from_secs(10), |e| {
        e.iter().any(|e| matches!(e, Event::ChildSaRekeyed { .. }))
            && e.iter().any(|e| matches!(e, Event::ChildSaDeleted { .. }))
    });
    assert!(rekeyed, "{:?}\n{}", driver.events, charon.log());
    let (sent, received) = fragments(&driver, ExchangeType::CreateChildSa);
    assert!(
        sent >= 2 && received >= 2,
        "CREATE_CHILD_SA: {sent} sent, {received} received"
    );
    assert_keys_match(&charon, children(&driver.events).last().unwrap(), true);
    driver.close(&peer);
    drop(charon);
}
