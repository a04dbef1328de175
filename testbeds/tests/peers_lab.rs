//! The peer harness against itself: BIRD as route reflector (AS 64512, cluster
//! 10.<n>.0.100) for an FRR client and a gobgpd client on one LAN. Each client gets the
//! other's IPv4 and IPv6 prefix with ORIGINATOR_ID and CLUSTER_LIST, FRR installs them
//! in its kernel FIB, and every query of the harness reads what it should.
//! Needs root, bird, FRR and gobgpd; skips visibly without them unless
//! STRAIT_REQUIRE_PRIVILEGED=1.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use strait_testbeds::peers::{
    BgpDaemon, Bird, Family, Frr, Gobgp, Lan, Neighbor, PeerConfig, fib_count, fib_routes,
};
use strait_testbeds::wait_until;

const AS: u32 = 64512;

#[test]
fn bird_reflects_between_frr_and_gobgp() {
    let test = "bird_reflects_between_frr_and_gobgp";
    if !strait_testbeds::peers::require(
        test,
        &[
            ("bird", "--version"),
            ("/usr/lib/frr/bgpd", "--version"),
            ("gobgpd", "--version"),
        ],
        "bird2, frr, gobgpd",
    ) {
        return;
    }
    let lan = Lan::new(3, 61);
    let (rr, frr_a, gob_a) = (lan.v4(0), lan.v4(1), lan.v4(2));
    let cluster = Ipv4Addr::new(10, 61, 0, 100);
    let bird = Bird::start(
        lan.ns(0),
        PeerConfig::new(rr, AS)
            .cluster_id(cluster)
            .neighbor(Neighbor::new(frr_a.into(), AS).rr_client())
            .neighbor(Neighbor::new(gob_a.into(), AS).rr_client()),
    )
    .expect("bird");
    let frr = Frr::start(
        lan.ns(1),
        PeerConfig::new(frr_a, AS)
            .originate(&["10.161.1.0/26", "fd00:161:1::/64"])
            .neighbor(Neighbor::new(rr.into(), AS)),
    )
    .expect("frr");
    let gobgp = Gobgp::start(
        lan.ns(2),
        PeerConfig::new(gob_a, AS)
            .originate(&["10.161.2.0/26", "fd00:161:2::/64"])
            .next_hop_v6(lan.v6(2))
            .neighbor(Neighbor::new(rr.into(), AS)),
    )
    .expect("gobgp");
    let t = wait_until(
        "all sessions Established",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            bird.established(frr_a.into())
                && bird.established(gob_a.into())
                && frr.established(rr.into())
                && gobgp.established(rr.into())
        },
    )
    .unwrap();
    eprintln!("sessions up after {t:?}");

    // FRR learns gobgp's prefixes through the RR, and the other way round.
    let t = wait_until(
        "reflected prefixes at both clients",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            frr.paths("10.161.2.0/26").is_ok_and(|p| !p.is_empty())
                && frr.paths("fd00:161:2::/64").is_ok_and(|p| !p.is_empty())
                && gobgp.paths("10.161.1.0/26").is_ok_and(|p| !p.is_empty())
                && gobgp.paths("fd00:161:1::/64").is_ok_and(|p| !p.is_empty())
        },
    )
    .unwrap();
    eprintln!("reflected after {t:?}");
    let at_frr = &frr.paths("10.161.2.0/26").unwrap()[0];
    assert_eq!(at_frr.originator_id, Some(gob_a), "{at_frr:?}");
    assert_eq!(at_frr.cluster_list, vec![cluster], "{at_frr:?}");
    assert_eq!(at_frr.next_hop, Some(IpAddr::V4(gob_a)), "{at_frr:?}");
    assert!(at_frr.best);
    let v6_at_frr = &frr.paths("fd00:161:2::/64").unwrap()[0];
    assert_eq!(
        v6_at_frr.next_hop,
        Some(IpAddr::V6(lan.v6(2))),
        "{v6_at_frr:?}"
    );
    let at_gobgp = &gobgp.paths("10.161.1.0/26").unwrap()[0];
    assert_eq!(at_gobgp.originator_id, Some(frr_a), "{at_gobgp:?}");
    assert_eq!(at_gobgp.cluster_list, vec![cluster], "{at_gobgp:?}");
    assert_eq!(at_gobgp.next_hop, Some(IpAddr::V4(frr_a)), "{at_gobgp:?}");
    // BIRD's own view: the routes of both clients, not reflected to itself.
    let at_bird = bird.paths("10.161.1.0/26").unwrap();
    assert_eq!(at_bird.len(), 1, "{at_bird:?}");
    assert_eq!(at_bird[0].next_hop, Some(IpAddr::V4(frr_a)));
    assert_eq!(bird.prefix_count(Family::V4).unwrap(), 2);
    assert_eq!(gobgp.prefix_count(Family::V4).unwrap(), 2);
    assert_eq!(frr.prefix_count(Family::V6).unwrap(), 2);

    // FRR's zebra puts gobgp's prefixes into FRR's kernel FIB, via gobgp's address.
    wait_until(
        "gobgp's prefixes in FRR's kernel FIB",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || fib_count(lan.ns(1).name(), Family::V4, "bgp").unwrap_or(0) == 1,
    )
    .unwrap();
    let fib = fib_routes(lan.ns(1), "bgp");
    let r4 = fib
        .iter()
        .find(|r| r.prefix.to_string() == "10.161.2.0/26")
        .unwrap_or_else(|| panic!("{fib:?}"));
    assert_eq!(r4.gateways, vec![IpAddr::V4(gob_a)]);
    wait_until(
        "gobgp's IPv6 prefix in FRR's kernel FIB",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            fib_routes(lan.ns(1), "bgp")
                .iter()
                .any(|r| r.prefix.to_string() == "fd00:161:2::/64")
        },
    )
    .unwrap();
    // BIRD's kernel protocol installs the clients' prefixes too.
    assert!(
        wait_until(
            "BIRD's kernel FIB",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || fib_count(lan.ns(0).name(), Family::V4, "bird").unwrap_or(0) == 2
        )
        .is_ok()
    );
}
