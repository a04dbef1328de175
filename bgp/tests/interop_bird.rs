//! strait's speaker with BIRD 2 (Debian package `bird2`): the session scenario the
//! FRR and GoBGP tests run too (either side opening, TCP MD5 with the right and a
//! wrong key, routes of both families both ways and into BIRD's kernel FIB), and the
//! two roles a fabric gives BIRD: route reflector of strait hosts, and eBGP
//! top-of-rack router with one AS per host.
//! Needs root and bird; skips visibly without them unless STRAIT_REQUIRE_PRIVILEGED=1.

mod common;
mod interop;

use std::net::{IpAddr, Ipv4Addr};

use interop::{POLL, SECS, SessionCase, StraitNode, next_hop_addr, session_scenario};
use ipnet::IpNet;
use strait_bgp::speaker::{PeerSpec, SpeakerConfig};
use strait_testbeds::peers::{BgpDaemon, Bird, Lan, Neighbor, PeerConfig, fib_routes, require};
use strait_testbeds::wait_until;

fn require_bird(test: &str) -> bool {
    require(
        test,
        &[("bird", "--version"), ("birdc", "--version")],
        "bird2",
    )
}

fn bird(ns: &strait_testbeds::netns::Netns, c: PeerConfig) -> Bird {
    Bird::start(ns, c).expect("start BIRD")
}

#[test]
fn bird_and_strait_exchange_ipv4_and_ipv6_routes() {
    if require_bird("bird_and_strait_exchange_ipv4_and_ipv6_routes") {
        let case = SessionCase {
            strait_passive: false,
            md5: None,
        };
        session_scenario(case, Some("bird"), bird);
    }
}

#[test]
fn bird_opens_the_session_to_a_passive_strait() {
    if require_bird("bird_opens_the_session_to_a_passive_strait") {
        let case = SessionCase {
            strait_passive: true,
            md5: None,
        };
        session_scenario(case, Some("bird"), bird);
    }
}

#[test]
fn md5_session_with_bird() {
    if require_bird("md5_session_with_bird") {
        // BIRD connects: the key is checked on our listening socket.
        let case = SessionCase {
            strait_passive: true,
            md5: Some(("strait-bird", "strait-bird")),
        };
        session_scenario(case, Some("bird"), bird);
    }
}

#[test]
fn md5_mismatch_with_bird_gives_no_session() {
    if require_bird("md5_mismatch_with_bird_gives_no_session") {
        // We connect, signing with a key BIRD does not accept.
        let case = SessionCase {
            strait_passive: false,
            md5: Some(("strait-key", "bird-key")),
        };
        session_scenario(case, None, bird);
    }
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|p| p.parse().unwrap()).collect()
}

/// A strait host: speaker with `asn` at LAN member `i`, one peer (`peer`, `peer_asn`),
/// originating `blocks` with next hops its own addresses.
fn host(lan: &Lan, i: usize, asn: u32, peer: IpAddr, peer_asn: u32, blocks: &[&str]) -> StraitNode {
    let mut cfg = SpeakerConfig::new(asn, lan.v4(i));
    cfg.connect_retry = std::time::Duration::from_secs(1);
    cfg.local_v4 = Some(lan.v4(i));
    cfg.local_v6 = Some(lan.v6(i));
    StraitNode::start(
        lan.ns(i),
        cfg,
        vec![PeerSpec::new(peer, peer_asn)],
        nets(blocks),
    )
}

#[test]
fn bird_reflects_routes_between_strait_hosts() {
    if !require_bird("bird_reflects_routes_between_strait_hosts") {
        return;
    }
    const AS: u32 = 64512;
    let lan = Lan::new(3, 81);
    let rr = lan.ip4(0);
    let cluster = Ipv4Addr::new(10, 81, 0, 100);
    let mut c = PeerConfig::new(lan.v4(0), AS)
        .cluster_id(cluster)
        .kernel_fib(false);
    for i in 1..3 {
        c = c.neighbor(Neighbor::new(lan.ip4(i), AS).rr_client());
    }
    let bird = Bird::start(lan.ns(0), c).expect("start bird");
    let block4 = |i: usize| format!("10.181.{i}.0/26");
    let block6 = |i: usize| format!("fd00:181:{i}::/64");
    let hosts: Vec<StraitNode> = (1..3)
        .map(|i| host(&lan, i, AS, rr, AS, &[&block4(i), &block6(i)]))
        .collect();
    let t = wait_until("both hosts Established", SECS(30), POLL, || {
        hosts.iter().all(|h| h.established(rr)) && (1..3).all(|i| bird.established(lan.ip4(i)))
    })
    .unwrap();
    eprintln!("BIRD RR, two strait hosts: Established after {t:?}");

    for (i, j) in [(1usize, 2usize), (2, 1)] {
        let h = &hosts[i - 1];
        let t = wait_until(
            "the other host's blocks in the FIB stream",
            SECS(20),
            POLL,
            || h.fib(&block4(j)).is_some() && h.fib(&block6(j)).is_some(),
        )
        .unwrap();
        eprintln!("host {i} has host {j}'s blocks after {t:?}");
        // Reflected: ORIGINATOR_ID the other host, CLUSTER_LIST BIRD's cluster, the
        // other host's next hops untouched (traffic goes host to host).
        let p4 = h.best(&block4(j)).expect("IPv4 best path");
        assert_eq!(p4.originator_id, Some(lan.v4(j)), "{p4:?}");
        assert_eq!(p4.cluster_list, vec![cluster], "{p4:?}");
        assert_eq!(next_hop_addr(&p4.next_hop), lan.ip4(j), "{p4:?}");
        assert_eq!(p4.from_peer, Some(rr));
        let p6 = h.best(&block6(j)).expect("IPv6 best path");
        assert_eq!(p6.originator_id, Some(lan.v4(j)), "{p6:?}");
        assert_eq!(next_hop_addr(&p6.next_hop), IpAddr::V6(lan.v6(j)), "{p6:?}");
        let fib4: Vec<IpAddr> = h
            .fib(&block4(j))
            .unwrap()
            .iter()
            .map(next_hop_addr)
            .collect();
        assert_eq!(fib4, vec![lan.ip4(j)]);
        let fib6: Vec<IpAddr> = h
            .fib(&block6(j))
            .unwrap()
            .iter()
            .map(next_hop_addr)
            .collect();
        assert_eq!(fib6, vec![IpAddr::V6(lan.v6(j))]);
        // Its own blocks do not come back as learned routes.
        assert!(h.fib(&block4(i)).is_none(), "own block in the FIB stream");
    }
    // BIRD has both hosts' blocks, from the hosts themselves.
    let at_bird = bird.paths(&block4(2)).unwrap();
    assert_eq!(at_bird.len(), 1, "{at_bird:?}");
    assert_eq!(at_bird[0].next_hop, Some(lan.ip4(2)));
    assert!(at_bird[0].as_path.is_empty(), "{at_bird:?}");
    drop(hosts);
}

#[test]
fn bird_as_ebgp_tor_for_strait_hosts() {
    if !require_bird("bird_as_ebgp_tor_for_strait_hosts") {
        return;
    }
    const TOR_AS: u32 = 65000;
    // One AS per host (4-octet), so a host accepts the other's routes through the ToR.
    let host_as = |i: usize| 4_200_000_000 + i as u32;
    let lan = Lan::new(3, 82);
    let tor = lan.ip4(0);
    let mut c = PeerConfig::new(lan.v4(0), TOR_AS)
        .originate(&["10.190.0.0/16", "fd00:190::/48"])
        .next_hop_v6(lan.v6(0));
    for i in 1..3 {
        c = c.neighbor(Neighbor::new(lan.ip4(i), host_as(i)));
    }
    let bird = Bird::start(lan.ns(0), c).expect("start bird");
    let block4 = |i: usize| format!("10.182.{i}.0/26");
    let block6 = |i: usize| format!("fd00:182:{i}::/64");
    let hosts: Vec<StraitNode> = (1..3)
        .map(|i| host(&lan, i, host_as(i), tor, TOR_AS, &[&block4(i), &block6(i)]))
        .collect();
    let t = wait_until("both hosts Established", SECS(30), POLL, || {
        hosts.iter().all(|h| h.established(tor)) && (1..3).all(|i| bird.established(lan.ip4(i)))
    })
    .unwrap();
    eprintln!("BIRD ToR, two strait hosts: Established after {t:?}");

    // The ToR's own prefixes reach every host with its AS and its next hop.
    for h in &hosts {
        wait_until("the ToR's prefixes", SECS(20), POLL, || {
            h.fib("10.190.0.0/16").is_some() && h.fib("fd00:190::/48").is_some()
        })
        .unwrap();
        let p = h.best("10.190.0.0/16").unwrap();
        assert_eq!(
            p.as_path
                .segments
                .iter()
                .flat_map(|s| s.asns.clone())
                .collect::<Vec<_>>(),
            vec![TOR_AS]
        );
        assert_eq!(next_hop_addr(&p.next_hop), tor);
        let p6 = h.best("fd00:190::/48").unwrap();
        assert_eq!(next_hop_addr(&p6.next_hop), IpAddr::V6(lan.v6(0)));
    }
    // Host to host through the ToR: AS_PATH ToR then the other host.
    for (i, j) in [(1usize, 2usize), (2, 1)] {
        let h = &hosts[i - 1];
        wait_until("the other host's blocks", SECS(20), POLL, || {
            h.fib(&block4(j)).is_some() && h.fib(&block6(j)).is_some()
        })
        .unwrap();
        let p4 = h.best(&block4(j)).unwrap();
        let path: Vec<u32> = p4
            .as_path
            .segments
            .iter()
            .flat_map(|s| s.asns.clone())
            .collect();
        assert_eq!(path, vec![TOR_AS, host_as(j)], "{p4:?}");
        assert!(p4.originator_id.is_none() && p4.cluster_list.is_empty());
        // BIRD keeps the other host's address: a third-party next hop on the shared
        // LAN (RFC 4271 §5.1.3), so host-to-host traffic skips the ToR.
        assert_eq!(next_hop_addr(&p4.next_hop), lan.ip4(j), "{p4:?}");
        let fib: Vec<IpAddr> = h
            .fib(&block4(j))
            .unwrap()
            .iter()
            .map(next_hop_addr)
            .collect();
        assert_eq!(fib, vec![lan.ip4(j)]);
    }
    // The ToR forwards to the hosts: their blocks in its kernel FIB via each host.
    let t = wait_until("hosts' blocks in BIRD's kernel FIB", SECS(10), POLL, || {
        let fib = fib_routes(lan.ns(0), "bird");
        (1..3).all(|i| {
            fib.iter()
                .any(|r| r.prefix.to_string() == block4(i) && r.gateways == vec![lan.ip4(i)])
                && fib.iter().any(|r| {
                    r.prefix.to_string() == block6(i) && r.gateways == vec![IpAddr::V6(lan.v6(i))]
                })
        })
    })
    .unwrap();
    eprintln!("ToR kernel FIB complete after {t:?}");
    let r = &bird.paths(&block4(1)).unwrap()[0];
    assert_eq!(r.as_path, vec![host_as(1)], "{r:?}");
    drop(hosts);
}
