//! Adj-RIB-Out: route reflection (RFC 4456 §6, §8), loop prevention, eBGP rewrites
//! (RFC 4271 §5.1), address families and the policy hooks.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;
use strait_bgp::codec::{AsPath, AsSegment, Family, NextHop, SegmentKind};
use strait_bgp::rib::{
    AcceptAll, Attrs, Changes, OutChange, PeerConfig, Policy, Rib, RibConfig, RouteUpdate,
};

const LOCAL_AS: u32 = 65000;
const ROUTER_ID: &str = "10.0.0.1";
const CLUSTER_ID: &str = "10.0.0.100";

const C1: &str = "10.1.0.1";
const C2: &str = "10.1.0.2";
const N1: &str = "10.2.0.1";
const N2: &str = "10.2.0.2";
const E1: &str = "10.3.0.1";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn peer(addr: &str, asn: u32, rr_client: bool) -> PeerConfig {
    PeerConfig {
        address: ip(addr),
        asn,
        // Router IDs follow the address so reflected routes are easy to check.
        router_id: v4(addr),
        rr_client,
        max_prefixes: None,
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        local_v4: Some(v4(ROUTER_ID)),
        local_v6: Some("fd00::1".parse().unwrap()),
        ipv4_via_ipv6: false,
    }
}

/// A reflector with clients C1, C2, non-clients N1, N2 and an eBGP peer E1 (AS 100).
fn reflector_with(policy: Box<dyn Policy>) -> Rib {
    let mut r = Rib::new(
        RibConfig {
            local_asn: LOCAL_AS,
            router_id: v4(ROUTER_ID),
            cluster_id: Some(v4(CLUSTER_ID)),
            multipath: 1,
        },
        policy,
    );
    for p in [
        peer(C1, LOCAL_AS, true),
        peer(C2, LOCAL_AS, true),
        peer(N1, LOCAL_AS, false),
        peer(N2, LOCAL_AS, false),
        peer(E1, 100, false),
    ] {
        r.peer_up(p).unwrap();
    }
    r
}

fn reflector() -> Rib {
    reflector_with(Box::new(AcceptAll))
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

fn sent_to(c: &Changes) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = c.out.iter().map(|o| o.peer).collect();
    v.sort();
    v
}

fn out<'a>(c: &'a Changes, peer: &str) -> &'a OutChange {
    c.out.iter().find(|o| o.peer == ip(peer)).unwrap()
}

const P: &str = "192.0.2.0/24";

#[test]
fn a_clients_route_is_reflected_to_clients_and_non_clients_and_sent_to_ebgp() {
    let mut r = reflector();
    let c = r.update(ip(C1), &announce(P, attrs(C1, &[]))).unwrap();
    assert_eq!(sent_to(&c), vec![ip(C2), ip(N1), ip(N2), ip(E1)]);
    for ibgp in [C2, N1, N2] {
        let a = out(&c, ibgp).attrs.as_ref().unwrap();
        assert_eq!(a.originator_id, Some(v4(C1)));
        assert_eq!(a.cluster_list, vec![v4(CLUSTER_ID)]);
        assert_eq!(a.next_hop, NextHop::V4(v4(C1)));
        assert_eq!(a.as_path.length(), 0);
    }
    assert_eq!(r.adj_rib_out(ip(C2), &net(P)), out(&c, C2).attrs.as_ref());
    assert_eq!(r.adj_rib_out(ip(C1), &net(P)), None);
}

#[test]
fn a_non_clients_route_is_reflected_to_clients_only() {
    let mut r = reflector();
    let c = r.update(ip(N1), &announce(P, attrs(N1, &[]))).unwrap();
    assert_eq!(sent_to(&c), vec![ip(C1), ip(C2), ip(E1)]);
    assert_eq!(r.adj_rib_out(ip(N2), &net(P)), None);
}

#[test]
fn reflection_keeps_an_existing_originator_id_and_prepends_the_cluster_id() {
    let mut r = reflector();
    let mut a = attrs(C1, &[]);
    a.originator_id = Some(v4("7.7.7.7"));
    a.cluster_list = vec![v4("8.8.8.8")];
    let c = r.update(ip(C1), &announce(P, a)).unwrap();
    let sent = out(&c, N1).attrs.as_ref().unwrap();
    assert_eq!(sent.originator_id, Some(v4("7.7.7.7")));
    assert_eq!(sent.cluster_list, vec![v4(CLUSTER_ID), v4("8.8.8.8")]);
}

#[test]
fn routes_that_looped_through_this_reflector_are_dropped() {
    let mut r = reflector();
    let mut ours = attrs(C1, &[]);
    ours.originator_id = Some(v4(ROUTER_ID));
    let mut our_cluster = attrs(C1, &[]);
    our_cluster.cluster_list = vec![v4("8.8.8.8"), v4(CLUSTER_ID)];
    for a in [ours, our_cluster] {
        let c = r.update(ip(C1), &announce(P, a)).unwrap();
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(r.adj_rib_in(ip(C1), &net(P)), None);
        assert!(r.best(&net(P)).is_none());
    }
}

#[test]
fn an_ebgp_route_with_our_as_in_its_path_is_dropped() {
    let mut r = reflector();
    let c = r
        .update(ip(E1), &announce(P, attrs(E1, &[100, LOCAL_AS, 300])))
        .unwrap();
    assert!(c.is_empty());
    assert_eq!(r.loc_rib_len(), 0);
}

#[test]
fn ebgp_routes_reach_every_ibgp_peer_with_local_pref_and_their_next_hop() {
    let mut r = reflector();
    let mut a = attrs(E1, &[100]);
    // LOCAL_PREF from another AS is ignored (RFC 4271 §5.1.5).
    a.local_pref = Some(500);
    a.med = Some(3);
    let c = r.update(ip(E1), &announce(P, a)).unwrap();
    assert_eq!(sent_to(&c), vec![ip(C1), ip(C2), ip(N1), ip(N2)]);
    for ibgp in [C1, C2, N1, N2] {
        let a = out(&c, ibgp).attrs.as_ref().unwrap();
        assert_eq!(a.local_pref, Some(100));
        assert_eq!(a.next_hop, NextHop::V4(v4(E1)));
        assert_eq!(a.originator_id, None);
        assert!(a.cluster_list.is_empty());
        assert_eq!(a.med, Some(3));
        assert_eq!(a.as_path.segments[0].asns, vec![100]);
    }
}

#[test]
fn ebgp_export_prepends_our_as_sets_next_hop_self_and_strips_ibgp_attributes() {
    let mut r = reflector();
    let mut a = attrs(C1, &[300]);
    a.local_pref = Some(250);
    a.med = Some(9);
    a.originator_id = Some(v4("7.7.7.7"));
    a.cluster_list = vec![v4("8.8.8.8")];
    a.communities = vec![0x0001_0002];
    let c = r.update(ip(C1), &announce(P, a)).unwrap();
    let sent = out(&c, E1).attrs.as_ref().unwrap();
    assert_eq!(sent.as_path.segments[0].asns, vec![LOCAL_AS, 300]);
    assert_eq!(sent.next_hop, NextHop::V4(v4(ROUTER_ID)));
    assert_eq!(sent.local_pref, None);
    assert_eq!(sent.med, None);
    assert_eq!(sent.originator_id, None);
    assert!(sent.cluster_list.is_empty());
    assert_eq!(sent.communities, vec![0x0001_0002]);
}

#[test]
fn a_route_is_not_sent_to_an_ebgp_peer_whose_as_is_in_its_path() {
    let mut r = reflector();
    let c = r
        .update(ip(C1), &announce(P, attrs(C1, &[300, 100])))
        .unwrap();
    assert!(!sent_to(&c).contains(&ip(E1)));
}

#[test]
fn ipv6_routes_go_only_to_peers_that_negotiated_ipv6_with_the_v6_next_hop_self() {
    let mut r = reflector();
    let mut v4_only = peer("10.3.0.2", 200, false);
    v4_only.families = vec![Family::Ipv4Unicast];
    r.peer_up(v4_only).unwrap();
    let mut a = attrs(C1, &[]);
    a.next_hop = NextHop::V6 {
        global: "2001:db8::c1".parse().unwrap(),
        link_local: None,
    };
    let c = r.update(ip(C1), &announce("2001:db8:5::/48", a)).unwrap();
    assert_eq!(sent_to(&c), vec![ip(C2), ip(N1), ip(N2), ip(E1)]);
    assert_eq!(
        out(&c, E1).attrs.as_ref().unwrap().next_hop,
        NextHop::V6 {
            global: "fd00::1".parse().unwrap(),
            link_local: None
        }
    );
}

#[test]
fn a_peer_coming_up_is_sent_the_whole_loc_rib_its_rules_allow() {
    let mut r = reflector();
    r.update(ip(N1), &announce(P, attrs(N1, &[]))).unwrap();
    r.update(ip(C1), &announce("198.51.100.0/24", attrs(C1, &[])))
        .unwrap();
    let c = r.peer_up(peer("10.2.0.3", LOCAL_AS, false)).unwrap();
    // A new non-client gets the client's route, not the other non-client's.
    assert_eq!(c.out.len(), 1);
    assert_eq!(c.out[0].prefix, net("198.51.100.0/24"));
    assert!(c.fib.is_empty());
    assert_eq!(r.adj_rib_out_len(ip("10.2.0.3")), 1);
}

#[test]
fn a_peer_already_up_is_refused() {
    let mut r = reflector();
    assert!(r.peer_up(peer(C1, LOCAL_AS, true)).is_err());
}

/// Rejects 203.0.113.0/24 on import, raises LOCAL_PREF of everything from N1, and keeps
/// everything from E1.
struct TestPolicy;

impl Policy for TestPolicy {
    fn import(&self, peer: &PeerConfig, prefix: &IpNet, attrs: &Arc<Attrs>) -> Option<Arc<Attrs>> {
        if *prefix == net("203.0.113.0/24") {
            return None;
        }
        if peer.address == ip(N1) {
            let mut a = Attrs::clone(attrs);
            a.local_pref = Some(300);
            return Some(Arc::new(a));
        }
        Some(Arc::clone(attrs))
    }

    fn export(&self, peer: &PeerConfig, _prefix: &IpNet, attrs: &Arc<Attrs>) -> Option<Arc<Attrs>> {
        (peer.address != ip(E1)).then(|| Arc::clone(attrs))
    }
}

#[test]
fn import_policy_can_reject_and_rewrite_and_export_policy_can_filter() {
    let mut r = reflector_with(Box::new(TestPolicy));
    let c = r
        .update(ip(C1), &announce("203.0.113.0/24", attrs(C1, &[])))
        .unwrap();
    assert!(c.is_empty());
    r.update(ip(C1), &announce(P, attrs(C1, &[]))).unwrap();
    assert_eq!(r.best(&net(P)).unwrap().peer, ip(C1));
    // N1's path wins through the LOCAL_PREF its import policy set.
    let c = r.update(ip(N1), &announce(P, attrs(N1, &[]))).unwrap();
    assert_eq!(r.best(&net(P)).unwrap().peer, ip(N1));
    assert_eq!(c.fib[0].next_hops, vec![NextHop::V4(v4(N1))]);
    assert_eq!(r.adj_rib_out(ip(E1), &net(P)), None);
    // N2 had C1's route; N1's is not reflected to a non-client, so it is withdrawn.
    assert_eq!(out(&c, N2).attrs, None);
    assert_eq!(out(&c, C1).attrs.as_ref().unwrap().local_pref, Some(300));
}

#[test]
fn one_announcement_of_both_families_gets_each_familys_next_hop_self() {
    let mut r = reflector();
    let update = RouteUpdate {
        announced: vec![(
            vec![net(P), net("2001:db8:5::/48"), net("198.51.100.0/24")],
            Arc::new(attrs(C1, &[])),
        )],
        withdrawn: vec![],
    };
    r.update(ip(C1), &update).unwrap();
    let hop = |p: &str| r.adj_rib_out(ip(E1), &net(p)).unwrap().next_hop;
    assert_eq!(hop(P), NextHop::V4(v4(ROUTER_ID)));
    assert_eq!(
        hop("2001:db8:5::/48"),
        NextHop::V6 {
            global: "fd00::1".parse().unwrap(),
            link_local: None
        }
    );
    assert_eq!(hop("198.51.100.0/24"), NextHop::V4(v4(ROUTER_ID)));
}

/// RFC 8950: an IPv4 route with an IPv6 next hop (from an IPv6-only node) is reflected
/// unchanged to clients whose session negotiated extended next hops; a peer without it
/// cannot be sent that next hop, so it gets no route, and one it had is withdrawn.
#[test]
fn ipv4_routes_via_ipv6_are_reflected_only_to_peers_that_negotiated_rfc_8950() {
    let mut r = reflector();
    let with_8950 = |addr: &str, asn: u32, rr_client: bool| PeerConfig {
        ipv4_via_ipv6: true,
        ..peer(addr, asn, rr_client)
    };
    // C3 is a client that negotiated it, E2 an eBGP peer that did.
    r.peer_up(with_8950("10.1.0.3", LOCAL_AS, true)).unwrap();
    r.peer_up(with_8950("10.3.0.2", 200, false)).unwrap();
    // First a route with an IPv4 next hop from a non-client: reflected to clients.
    let c = r.update(ip(N1), &announce(P, attrs(N1, &[]))).unwrap();
    assert_eq!(
        sent_to(&c),
        vec![ip(C1), ip(C2), ip("10.1.0.3"), ip(E1), ip("10.3.0.2")]
    );
    // A better one via IPv6 from client C2.
    let via6 = NextHop::V6 {
        global: "fd99::2".parse().unwrap(),
        link_local: Some("fe80::2".parse().unwrap()),
    };
    let mut a = attrs(C2, &[]);
    a.next_hop = via6;
    a.local_pref = Some(200);
    let c = r.update(ip(C2), &announce(P, a)).unwrap();
    assert_eq!(r.best(&net(P)).unwrap().peer, ip(C2));
    assert_eq!(
        r.fib_next_hops(&net(P)),
        [via6],
        "the FIB gets the IPv6 next hop"
    );
    let reflected = out(&c, "10.1.0.3").attrs.as_ref().expect("to C3");
    assert_eq!(reflected.next_hop, via6, "reflected unchanged");
    assert_eq!(reflected.originator_id, Some(v4(C2)));
    // C1 and N1 did not negotiate it: withdrawn (N1 held none, a non-client's own).
    assert_eq!(out(&c, C1).attrs, None, "withdrawn from C1");
    assert_eq!(r.adj_rib_out(ip(C1), &net(P)), None);
    assert_eq!(r.adj_rib_out(ip(N1), &net(P)), None);
    assert_eq!(r.adj_rib_out(ip(N2), &net(P)), None);
    // eBGP peers get next hop self: our IPv4 address, whatever they negotiated.
    for e in [E1, "10.3.0.2"] {
        assert_eq!(
            r.adj_rib_out(ip(e), &net(P)).unwrap().next_hop,
            NextHop::V4(v4(ROUTER_ID)),
            "{e}"
        );
    }
    // A peer coming up later without RFC 8950 is not sent it either.
    r.peer_up(peer("10.1.0.4", LOCAL_AS, true)).unwrap();
    assert_eq!(r.adj_rib_out(ip("10.1.0.4"), &net(P)), None);
    // The IPv6 path goes: the IPv4 one is the best again and C1 gets it back.
    let c = r
        .update(
            ip(C2),
            &RouteUpdate {
                announced: vec![],
                withdrawn: vec![net(P)],
            },
        )
        .unwrap();
    assert_eq!(
        out(&c, C1).attrs.as_ref().unwrap().next_hop,
        NextHop::V4(v4(N1))
    );
}

/// Next hop self for IPv4 on a session without an IPv4 address of ours (an IPv6-only
/// node): our IPv6 address where RFC 8950 was negotiated, else no IPv4 route at all.
/// With an IPv4 address, that one, as before.
#[test]
fn an_ipv6_only_speaker_announces_ipv4_with_its_ipv6_next_hop_only_where_negotiated() {
    let mut r = Rib::new(
        RibConfig {
            local_asn: LOCAL_AS,
            router_id: v4(ROUTER_ID),
            cluster_id: None,
            multipath: 1,
        },
        Box::new(AcceptAll),
    );
    let ours: std::net::Ipv6Addr = "fd00::1".parse().unwrap();
    let v6_only = |addr: &str, asn: u32, negotiated: bool| PeerConfig {
        local_v4: None,
        ipv4_via_ipv6: negotiated,
        ..peer(addr, asn, false)
    };
    r.peer_up(v6_only(N1, LOCAL_AS, true)).unwrap();
    r.peer_up(v6_only(N2, LOCAL_AS, false)).unwrap();
    r.peer_up(v6_only(E1, 100, true)).unwrap();
    r.peer_up(PeerConfig {
        ipv4_via_ipv6: true,
        ..peer(C1, LOCAL_AS, false)
    })
    .unwrap();
    let block = "10.244.0.0/26";
    let c = r.originate(net(block), Attrs::new(NextHop::V4(Ipv4Addr::UNSPECIFIED)));
    let self6 = NextHop::V6 {
        global: ours,
        link_local: None,
    };
    assert_eq!(sent_to(&c), vec![ip(C1), ip(N1), ip(E1)], "not to N2");
    assert_eq!(out(&c, N1).attrs.as_ref().unwrap().next_hop, self6);
    let e = out(&c, E1).attrs.as_ref().unwrap();
    assert_eq!(e.next_hop, self6);
    assert_eq!(e.as_path.segments[0].asns, [LOCAL_AS]);
    assert_eq!(
        out(&c, C1).attrs.as_ref().unwrap().next_hop,
        NextHop::V4(v4(ROUTER_ID)),
        "an IPv4 address of ours is preferred"
    );
}
