//! Routes over a peer's life: withdrawals, the max-prefix limit, peer down, and the
//! graceful-restart helper (RFC 4724 §4.2).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;
use strait_bgp::codec::{Family, NextHop, codes};
use strait_bgp::rib::{AcceptAll, Attrs, PeerConfig, Rib, RibConfig, RibError, RouteUpdate};

const LOCAL_AS: u32 = 65000;
const A: &str = "10.1.0.1";
const B: &str = "10.1.0.2";
const E: &str = "10.3.0.1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn peer(addr: &str, asn: u32) -> PeerConfig {
    PeerConfig {
        address: ip(addr),
        asn,
        router_id: v4(addr),
        rr_client: true,
        max_prefixes: None,
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        local_v4: Some(v4("10.0.0.1")),
        local_v6: Some("fd00::1".parse().unwrap()),
        ipv4_via_ipv6: false,
    }
}

/// Clients A and B, eBGP peer E.
fn rib() -> Rib {
    let mut r = Rib::new(
        RibConfig {
            local_asn: LOCAL_AS,
            router_id: v4("10.0.0.1"),
            cluster_id: None,
            multipath: 1,
        },
        Box::new(AcceptAll),
    );
    for p in [peer(A, LOCAL_AS), peer(B, LOCAL_AS), peer(E, 100)] {
        r.peer_up(p).unwrap();
    }
    r
}

fn nh(addr: &str) -> NextHop {
    NextHop::V4(v4(addr))
}

fn v6_nh(addr: &str) -> NextHop {
    NextHop::V6 {
        global: addr.parse().unwrap(),
        link_local: None,
    }
}

fn announce(prefixes: &[&str], next_hop: NextHop) -> RouteUpdate {
    RouteUpdate {
        announced: vec![(
            prefixes.iter().map(|p| net(p)).collect(),
            Arc::new(Attrs::new(next_hop)),
        )],
        withdrawn: vec![],
    }
}

fn withdraw(prefixes: &[&str]) -> RouteUpdate {
    RouteUpdate {
        announced: vec![],
        withdrawn: prefixes.iter().map(|p| net(p)).collect(),
    }
}

const P: &str = "192.0.2.0/24";
const Q: &str = "198.51.100.0/24";
const P6: &str = "2001:db8:1::/48";

#[test]
fn withdrawing_the_best_path_falls_back_to_the_next_and_the_last_removes_the_prefix() {
    let mut r = rib();
    r.update(ip(A), &announce(&[P], nh(A))).unwrap();
    r.update(ip(B), &announce(&[P], nh(B))).unwrap();
    assert_eq!(r.best(&net(P)).unwrap().peer, ip(A));

    let c = r.update(ip(A), &withdraw(&[P])).unwrap();
    assert_eq!(r.best(&net(P)).unwrap().peer, ip(B));
    assert_eq!(c.fib.len(), 1);
    assert_eq!(c.fib[0].next_hops, vec![nh(B)]);
    // A now hears B's route; B is withdrawn from (it would be its own route).
    let to_a = c.out.iter().find(|o| o.peer == ip(A)).unwrap();
    assert_eq!(to_a.attrs.as_ref().unwrap().next_hop, nh(B));
    assert_eq!(c.out.iter().find(|o| o.peer == ip(B)).unwrap().attrs, None);

    let c = r.update(ip(B), &withdraw(&[P])).unwrap();
    assert_eq!(
        c.fib,
        vec![strait_bgp::rib::FibChange {
            prefix: net(P),
            next_hops: vec![]
        }]
    );
    let mut withdrawn_from: Vec<IpAddr> = c
        .out
        .iter()
        .filter(|o| o.attrs.is_none())
        .map(|o| o.peer)
        .collect();
    withdrawn_from.sort();
    assert_eq!(withdrawn_from, vec![ip(A), ip(E)]);
    assert_eq!(r.loc_rib_len(), 0);
    for p in [A, B, E] {
        assert_eq!(r.adj_rib_out_len(ip(p)), 0);
    }
}

#[test]
fn withdrawing_an_unknown_prefix_changes_nothing() {
    let mut r = rib();
    r.update(ip(A), &announce(&[P], nh(A))).unwrap();
    assert!(r.update(ip(B), &withdraw(&[P])).unwrap().is_empty());
    assert_eq!(r.best(&net(P)).unwrap().peer, ip(A));
}

#[test]
fn an_implicit_withdraw_replaces_the_peers_route() {
    let mut r = rib();
    r.update(ip(A), &announce(&[P], nh(A))).unwrap();
    let c = r.update(ip(A), &announce(&[P], nh("10.9.9.9"))).unwrap();
    assert_eq!(c.fib[0].next_hops, vec![nh("10.9.9.9")]);
    assert_eq!(r.adj_rib_in_len(ip(A)), 1);
}

#[test]
fn updates_from_an_unknown_peer_are_refused() {
    let mut r = rib();
    assert_eq!(
        r.update(ip("10.7.7.7"), &announce(&[P], nh(A))),
        Err(RibError::UnknownPeer(ip("10.7.7.7")))
    );
    assert_eq!(r.loc_rib_len(), 0);
}

#[test]
fn peer_down_removes_its_routes_and_recomputes() {
    let mut r = rib();
    r.update(ip(A), &announce(&[P, Q], nh(A))).unwrap();
    r.update(ip(B), &announce(&[P], nh(B))).unwrap();
    let c = r.peer_down(ip(A)).unwrap();
    assert_eq!(r.best(&net(P)).unwrap().peer, ip(B));
    assert!(r.best(&net(Q)).is_none());
    let mut fib: Vec<_> = c
        .fib
        .iter()
        .map(|f| (f.prefix, f.next_hops.clone()))
        .collect();
    fib.sort_by_key(|(p, _)| *p);
    assert_eq!(fib, vec![(net(P), vec![nh(B)]), (net(Q), vec![])]);
    assert!(c.out.iter().all(|o| o.peer != ip(A)));
    assert_eq!(r.adj_rib_out(ip(E), &net(Q)), None);
    assert_eq!(r.peer_down(ip(A)), Err(RibError::UnknownPeer(ip(A))));
}

#[test]
fn crossing_the_prefix_limit_is_refused_whole_with_the_cease_notification() {
    let mut r = rib();
    let mut limited = peer("10.1.0.9", LOCAL_AS);
    limited.max_prefixes = Some(3);
    r.peer_up(limited).unwrap();
    let l = ip("10.1.0.9");
    r.update(
        l,
        &announce(
            &["10.10.1.0/24", "10.10.2.0/24", "10.10.3.0/24"],
            nh("10.1.0.9"),
        ),
    )
    .unwrap();
    // Replacing and withdrawing within the limit is fine.
    let mut swap = announce(&["10.10.4.0/24", "10.10.1.0/24"], nh("10.1.0.9"));
    swap.withdrawn = vec![net("10.10.2.0/24")];
    r.update(l, &swap).unwrap();
    assert_eq!(r.adj_rib_in_len(l), 3);

    let before = r.loc_rib_len();
    let err = r
        .update(
            l,
            &announce(&["10.10.5.0/24", "10.10.6.0/24"], nh("10.1.0.9")),
        )
        .unwrap_err();
    let RibError::MaxPrefixes(exceeded) = err else {
        panic!("{err:?}");
    };
    assert_eq!(exceeded.limit, 3);
    let n = exceeded.notification();
    assert_eq!((n.code, n.subcode), (codes::CEASE, 1));
    // RFC 4486 §4: AFI 1, SAFI 1, limit 3.
    assert_eq!(n.data, vec![0, 1, 1, 0, 0, 0, 3]);
    assert_eq!(r.adj_rib_in_len(l), 3);
    assert_eq!(r.loc_rib_len(), before);
    assert!(r.best(&net("10.10.5.0/24")).is_none());
}

#[test]
fn a_restarting_peers_routes_stay_stale_until_end_of_rib_sweeps_the_unrenewed() {
    let mut r = rib();
    r.update(ip(A), &announce(&[P, Q], nh(A))).unwrap();
    r.update(ip(A), &announce(&[P6], v6_nh("2001:db8::a")))
        .unwrap();

    r.peer_restarting(ip(A)).unwrap();
    // Still forwarding, still advertised to the others.
    assert_eq!(r.fib_next_hops(&net(P)), &[nh(A)]);
    assert!(r.adj_rib_out(ip(E), &net(Q)).is_some());
    assert!(r.adj_rib_in(ip(A), &net(P)).unwrap().1);
    assert!(r.best(&net(P)).unwrap().stale);

    // The peer is back: it gets the table again and renews P only.
    r.peer_up(peer(A, LOCAL_AS)).unwrap();
    let c = r.update(ip(A), &announce(&[P], nh(A))).unwrap();
    assert!(c.fib.is_empty(), "a renewed route is no change: {c:?}");
    assert!(!r.adj_rib_in(ip(A), &net(P)).unwrap().1);
    assert!(r.adj_rib_in(ip(A), &net(Q)).unwrap().1);

    let c = r.end_of_rib(ip(A), Family::Ipv4Unicast).unwrap();
    assert_eq!(
        c.fib,
        vec![strait_bgp::rib::FibChange {
            prefix: net(Q),
            next_hops: vec![]
        }]
    );
    assert_eq!(r.adj_rib_out(ip(E), &net(Q)), None);
    assert!(r.best(&net(P)).is_some());
    // IPv6 waits for its own End-of-RIB or the timer.
    assert!(r.best(&net(P6)).is_some());
    let c = r.restart_timer_expired(ip(A)).unwrap();
    assert_eq!(c.fib.len(), 1);
    assert!(r.best(&net(P6)).is_none());
    assert!(
        r.best(&net(P)).is_some(),
        "the renewed route survives the timer"
    );
}

#[test]
fn a_peer_that_does_not_come_back_loses_its_routes_when_the_timer_fires() {
    let mut r = rib();
    r.update(ip(A), &announce(&[P], nh(A))).unwrap();
    r.update(ip(B), &announce(&[P], nh(B))).unwrap();
    r.peer_restarting(ip(A)).unwrap();
    // Nothing is sent to a peer whose session is down.
    let c = r.update(ip(B), &announce(&[Q], nh(B))).unwrap();
    assert!(c.out.iter().all(|o| o.peer != ip(A)));

    let c = r.restart_timer_expired(ip(A)).unwrap();
    assert_eq!(c.fib[0].next_hops, vec![nh(B)]);
    assert_eq!(r.best(&net(P)).unwrap().peer, ip(B));
    assert_eq!(
        r.update(ip(A), &announce(&[P], nh(A))),
        Err(RibError::UnknownPeer(ip(A)))
    );
}

#[test]
fn the_prefix_limit_holds_for_the_updates_outcome_and_names_the_family_past_it() {
    let mut r = rib();
    let mut limited = peer("10.1.0.9", LOCAL_AS);
    limited.max_prefixes = Some(2);
    r.peer_up(limited).unwrap();
    let l = ip("10.1.0.9");
    r.update(
        l,
        &announce(&["10.10.1.0/24", "10.10.2.0/24"], nh("10.1.0.9")),
    )
    .unwrap();
    // A new IPv6 route first, then a route that now loops back to us and so replaces
    // 10.10.2.0/24 by nothing: two routes in the end.
    let mut looped = Attrs::new(nh("10.1.0.9"));
    looped.originator_id = Some(v4("10.0.0.1"));
    let update = RouteUpdate {
        announced: vec![
            (vec![net(P6)], Arc::new(Attrs::new(v6_nh("2001:db8::9")))),
            (vec![net("10.10.2.0/24")], Arc::new(looped)),
        ],
        withdrawn: vec![],
    };
    r.update(l, &update).unwrap();
    assert_eq!(r.adj_rib_in_len(l), 2);
    assert!(r.best(&net("10.10.2.0/24")).is_none());

    let err = r
        .update(l, &announce(&["2001:db8:2::/48"], v6_nh("2001:db8::9")))
        .unwrap_err();
    let RibError::MaxPrefixes(exceeded) = err else {
        panic!("{err:?}");
    };
    // RFC 4486 §4: AFI 2, SAFI 1, limit 2.
    assert_eq!(exceeded.notification().data, vec![0, 2, 1, 0, 0, 0, 2]);
}
