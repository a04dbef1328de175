//! The Loc-RIB decision process (RFC 4271 §9.1.2.2, RFC 4456 §9): each test makes one
//! step the deciding one, and ECMP hands the FIB the equal-cost next hops.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;
use strait_bgp::codec::{AsPath, AsSegment, Family, NextHop, Origin, SegmentKind};
use strait_bgp::rib::{AcceptAll, Attrs, PeerConfig, Rib, RibConfig, RouteUpdate};

const LOCAL_AS: u32 = 65000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn rib(multipath: usize) -> Rib {
    Rib::new(
        RibConfig {
            local_asn: LOCAL_AS,
            router_id: v4("10.0.0.1"),
            cluster_id: None,
            multipath,
        },
        Box::new(AcceptAll),
    )
}

fn peer(addr: &str, asn: u32, router_id: &str) -> PeerConfig {
    PeerConfig {
        address: ip(addr),
        asn,
        router_id: v4(router_id),
        rr_client: false,
        max_prefixes: None,
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        local_v4: Some(v4("10.0.0.1")),
        local_v6: Some("fd00::1".parse().unwrap()),
        ipv4_via_ipv6: false,
    }
}

fn attrs(next_hop: &str, asns: &[u32]) -> Attrs {
    let mut a = Attrs::new(NextHop::V4(v4(next_hop)));
    if !asns.is_empty() {
        a.as_path = AsPath {
            segments: vec![AsSegment {
                kind: SegmentKind::Sequence,
                asns: asns.to_vec(),
            }],
        };
    }
    a
}

fn announce(prefix: &str, a: Attrs) -> RouteUpdate {
    RouteUpdate {
        announced: vec![(vec![net(prefix)], Arc::new(a))],
        withdrawn: vec![],
    }
}

const P: &str = "192.0.2.0/24";

/// Two peers announce P; returns which peer's path is best.
fn winner(a: (PeerConfig, Attrs), b: (PeerConfig, Attrs)) -> IpAddr {
    let mut r = rib(1);
    for (cfg, at) in [a, b] {
        let addr = cfg.address;
        r.peer_up(cfg).unwrap();
        r.update(addr, &announce(P, at)).unwrap();
    }
    r.best(&net(P)).unwrap().peer
}

#[test]
fn highest_local_pref_wins_over_a_shorter_path() {
    let mut long = attrs("10.1.0.1", &[100, 200, 300]);
    long.local_pref = Some(200);
    let mut short = attrs("10.1.0.2", &[100]);
    short.local_pref = Some(150);
    let w = winner(
        (peer("10.1.0.2", LOCAL_AS, "1.1.1.1"), short),
        (peer("10.1.0.1", LOCAL_AS, "9.9.9.9"), long),
    );
    assert_eq!(w, ip("10.1.0.1"));
}

#[test]
fn shortest_as_path_wins_and_an_as_set_counts_one() {
    // 100 200 {300 400 500} is length 3, shorter than 100 200 300 400.
    let mut with_set = attrs("10.1.0.1", &[100, 200]);
    with_set.as_path.segments.push(AsSegment {
        kind: SegmentKind::Set,
        asns: vec![300, 400, 500],
    });
    let w = winner(
        (
            peer("10.1.0.2", 100, "1.1.1.1"),
            attrs("10.1.0.2", &[100, 200, 300, 400]),
        ),
        (peer("10.1.0.1", 100, "9.9.9.9"), with_set),
    );
    assert_eq!(w, ip("10.1.0.1"));
}

#[test]
fn lowest_origin_wins() {
    let mut incomplete = attrs("10.1.0.2", &[100]);
    incomplete.origin = Origin::Incomplete;
    let mut egp = attrs("10.1.0.1", &[100]);
    egp.origin = Origin::Egp;
    let w = winner(
        (peer("10.1.0.2", 100, "1.1.1.1"), incomplete),
        (peer("10.1.0.1", 100, "9.9.9.9"), egp),
    );
    assert_eq!(w, ip("10.1.0.1"));
}

#[test]
fn lowest_med_wins_among_routes_from_the_same_neighbouring_as() {
    let mut high = attrs("10.1.0.2", &[100]);
    high.med = Some(20);
    let mut low = attrs("10.1.0.1", &[100]);
    low.med = Some(5);
    let w = winner(
        (peer("10.1.0.2", 100, "1.1.1.1"), high),
        (peer("10.1.0.1", 100, "9.9.9.9"), low),
    );
    assert_eq!(w, ip("10.1.0.1"));
}

#[test]
fn med_is_not_compared_between_different_neighbouring_ases() {
    // The lower MED comes from AS 200; MED is skipped and the router ID decides.
    let mut high = attrs("10.1.0.2", &[100]);
    high.med = Some(20);
    let mut low = attrs("10.1.0.1", &[200]);
    low.med = Some(5);
    let w = winner(
        (peer("10.1.0.2", 100, "1.1.1.1"), high),
        (peer("10.1.0.1", 200, "9.9.9.9"), low),
    );
    assert_eq!(w, ip("10.1.0.2"));
}

#[test]
fn ebgp_wins_over_ibgp() {
    let w = winner(
        (
            peer("10.1.0.2", LOCAL_AS, "1.1.1.1"),
            attrs("10.1.0.2", &[100]),
        ),
        (peer("10.1.0.1", 100, "9.9.9.9"), attrs("10.1.0.1", &[100])),
    );
    assert_eq!(w, ip("10.1.0.1"));
}

#[test]
fn lowest_router_id_wins() {
    let w = winner(
        (peer("10.1.0.1", 100, "9.9.9.9"), attrs("10.1.0.1", &[100])),
        (peer("10.1.0.2", 100, "1.1.1.1"), attrs("10.1.0.2", &[100])),
    );
    assert_eq!(w, ip("10.1.0.2"));
}

#[test]
fn originator_id_stands_in_for_the_router_id_of_a_reflected_route() {
    let mut reflected = attrs("10.1.0.1", &[100]);
    reflected.originator_id = Some(v4("9.9.9.9"));
    let w = winner(
        (peer("10.1.0.1", LOCAL_AS, "1.1.1.1"), reflected),
        (
            peer("10.1.0.2", LOCAL_AS, "5.5.5.5"),
            attrs("10.1.0.2", &[100]),
        ),
    );
    assert_eq!(w, ip("10.1.0.2"));
}

#[test]
fn shortest_cluster_list_wins() {
    let mut far = attrs("10.1.0.1", &[100]);
    far.originator_id = Some(v4("7.7.7.7"));
    far.cluster_list = vec![v4("3.3.3.3"), v4("4.4.4.4")];
    let mut near = far.clone();
    near.cluster_list = vec![v4("3.3.3.3")];
    let w = winner(
        (peer("10.1.0.1", LOCAL_AS, "1.1.1.1"), far),
        (peer("10.1.0.2", LOCAL_AS, "2.2.2.2"), near),
    );
    assert_eq!(w, ip("10.1.0.2"));
}

#[test]
fn lowest_peer_address_breaks_the_last_tie() {
    // Two sessions to the same router.
    let w = winner(
        (peer("10.1.0.9", 100, "1.1.1.1"), attrs("10.1.0.9", &[100])),
        (peer("10.1.0.3", 100, "1.1.1.1"), attrs("10.1.0.3", &[100])),
    );
    assert_eq!(w, ip("10.1.0.3"));
}

#[test]
fn ecmp_gives_the_fib_every_equal_cost_next_hop_up_to_the_limit() {
    let mut r = rib(2);
    let mut changes = Vec::new();
    for (addr, rid, asn, path) in [
        ("10.1.0.1", "3.3.3.3", 100, vec![100, 300]),
        ("10.1.0.2", "1.1.1.1", 200, vec![200, 300]),
        ("10.1.0.3", "2.2.2.2", 201, vec![201, 300]),
        // Longer path: never a multipath.
        ("10.1.0.4", "0.0.0.1", 202, vec![202, 202, 300]),
    ] {
        r.peer_up(peer(addr, asn, rid)).unwrap();
        changes.push(
            r.update(ip(addr), &announce(P, attrs(addr, &path)))
                .unwrap(),
        );
    }
    let nh = |s: &str| NextHop::V4(v4(s));
    // Best first (lowest router ID), then the next equal-cost path; the limit is 2.
    assert_eq!(r.fib_next_hops(&net(P)), &[nh("10.1.0.2"), nh("10.1.0.3")]);
    assert_eq!(r.best(&net(P)).unwrap().peer, ip("10.1.0.2"));
    // The longer path changed nothing the FIB sees.
    assert!(changes[3].fib.is_empty());
    let c = r
        .update(
            ip("10.1.0.2"),
            &RouteUpdate {
                announced: vec![],
                withdrawn: vec![net(P)],
            },
        )
        .unwrap();
    assert_eq!(c.fib.len(), 1);
    assert_eq!(c.fib[0].next_hops, vec![nh("10.1.0.3"), nh("10.1.0.1")]);
}

#[test]
fn without_multipath_the_fib_gets_only_the_best() {
    let mut r = rib(1);
    for (addr, rid) in [("10.1.0.1", "3.3.3.3"), ("10.1.0.2", "1.1.1.1")] {
        r.peer_up(peer(addr, 100, rid)).unwrap();
        r.update(ip(addr), &announce(P, attrs(addr, &[100])))
            .unwrap();
    }
    assert_eq!(r.fib_next_hops(&net(P)), &[NextHop::V4(v4("10.1.0.2"))]);
}

#[test]
fn an_update_with_ipv4_nlri_and_mp_reach_becomes_two_route_groups() {
    let mut a = attrs("10.1.0.1", &[100]);
    a.med = Some(7);
    a.communities = vec![0xfde8_0001];
    let v6_hop = NextHop::V6 {
        global: "2001:db8::1".parse().unwrap(),
        link_local: Some("fe80::1".parse().unwrap()),
    };
    let mut update = a.to_update(&[net("192.0.2.0/24"), net("2001:db8:1::/48")]);
    // to_update writes the IPv4 next hop; MP_REACH carries the IPv6 one.
    for attr in &mut update.attributes {
        if let strait_bgp::codec::PathAttribute::MpReach(m) = attr {
            m.next_hop = v6_hop;
        }
    }
    update.withdrawn.push("198.51.100.0/24".parse().unwrap());
    let ru = RouteUpdate::from_update(&update);
    assert_eq!(ru.announced.len(), 2);
    assert_eq!(ru.announced[0].0, vec![net("192.0.2.0/24")]);
    assert_eq!(*ru.announced[0].1, a);
    assert_eq!(ru.announced[1].0, vec![net("2001:db8:1::/48")]);
    assert_eq!(ru.announced[1].1.next_hop, v6_hop);
    assert_eq!(ru.announced[1].1.med, Some(7));
    assert_eq!(ru.withdrawn, vec![net("198.51.100.0/24")]);
}
