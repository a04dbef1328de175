//! IKE fragmentation (RFC 7383) with strongSwan's charon: `fragmentation = yes` in its
//! connection and a small `charon.fragment_size`, our `fragment_size` small too, and
//! 16 traffic selectors each way so that IKE_AUTH and CREATE_CHILD_SA do not fit:
//! both go as Encrypted Fragments in both directions (counted on our sockets and in
//! charon's log), and the Child SAs come up with the keys charon has. Skips visibly
//! without root or charon.

mod common;

use std::time::{Duration, Instant};

use common::charon::*;
use strait_ike::auth::RawKeyVerifier;
use strait_ike::codec::{ExchangeType, Identity, TrafficSelector};
use strait_ike::crypto::prf::Prf;
use strait_ike::crypto::suite::{Cipher, Group};
use strait_ike::speaker::{Config, Event, Speaker};
use strait_testbeds::netns::Netns;
use strait_testbeds::{require_root, unique_prefix};

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
    if !require_root(name) {
        return;
    }
    if let Some(why) = tool_missing() {
        eprintln!("SKIP: {name}: {why}");
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
    // libipsec routes each protected net through its TUN device from an address it
    // holds there.
    for n in 0..16 {
        theirs.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("10.234.{n}.1/32"),
            "dev",
            "lo",
        ]);
    }
    let dir = tempfile::tempdir().unwrap();
    let (signer, strait_pem) = strait_key(dir.path());
    let (theirs_ts, ours_ts) = (nets(234), nets(235));
    let charon = start_charon(
        &theirs,
        dir.path(),
        &strait_pem,
        &CharonConf {
            local_addrs: THEIRS,
            remote_addrs: OURS,
            local_ts: &theirs_ts.join(","),
            remote_ts: &ours_ts.join(","),
            charon_extra: &format!("  fragment_size = {FRAGMENT_SIZE}"),
            connection_extra: "    fragmentation = yes",
        },
    );
    let charon_key = charon_key(dir.path());
    let ts = |v: &[String]| -> Vec<TrafficSelector> {
        v.iter()
            .map(|s| TrafficSelector::prefix(s.parse().unwrap()))
            .collect()
    };
    let mut config = Config::new(Identity::Fqdn("strait.test".into()));
    config.ike_ciphers = vec![Cipher::AesGcm16_256];
    config.prfs = vec![Prf::HmacSha256];
    config.groups = vec![Group::Curve25519];
    config.esp_ciphers = vec![Cipher::AesGcm16_256];
    config.local_ts = ts(&ours_ts);
    config.remote_ts = ts(&theirs_ts);
    config.fragment_size = FRAGMENT_SIZE;
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
