//! The Adj-RIB-Out is derived from the Loc-RIB (export.rs) and staleness from the
//! session a route came with (route.rs): what a per-prefix copy used to answer must
//! still come out the same — policy rewrites per prefix, peer slots reused, sessions
//! replaced, and the export cache swept as attributes come and go.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;

use super::*;
use crate::codec::{Family, NextHop};

const AS: u32 = 65000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn client(addr: &str) -> PeerConfig {
    let address = ip(addr);
    PeerConfig {
        address,
        asn: AS,
        router_id: match address {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::new(9, 9, 9, 9),
        },
        rr_client: true,
        max_prefixes: None,
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        local_v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
        local_v6: None,
        ipv4_via_ipv6: false,
    }
}

fn rib(policy: Box<dyn Policy>) -> Rib {
    let mut r = Rib::new(
        RibConfig {
            local_asn: AS,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            cluster_id: None,
            multipath: 1,
        },
        policy,
    );
    for a in ["10.0.0.2", "10.0.0.3"] {
        r.peer_up(client(a)).unwrap();
    }
    r
}

fn announce(prefixes: &[&str], med: u32) -> RouteUpdate {
    let mut a = Attrs::new(NextHop::V4(Ipv4Addr::new(10, 0, 0, 2)));
    a.med = Some(med);
    RouteUpdate {
        announced: vec![(prefixes.iter().map(|p| net(p)).collect(), Arc::new(a))],
        withdrawn: vec![],
    }
}

/// Tags what goes to 10.0.0.3 for 192.0.2.0/24 with community 7 and keeps
/// 198.51.100.0/24 from it; everything else passes as it is.
struct PerPrefix;

impl Policy for PerPrefix {
    fn export(&self, peer: &PeerConfig, prefix: &IpNet, attrs: &Arc<Attrs>) -> Option<Arc<Attrs>> {
        if peer.address != ip("10.0.0.3") {
            return Some(Arc::clone(attrs));
        }
        if *prefix == net("192.0.2.0/24") {
            let mut a = Attrs::clone(attrs);
            a.communities.push(7);
            return Some(Arc::new(a));
        }
        (*prefix != net("198.51.100.0/24")).then(|| Arc::clone(attrs))
    }
}

#[test]
fn what_export_policy_rewrote_per_prefix_is_what_the_adj_rib_out_says_was_sent() {
    let mut r = rib(Box::new(PerPrefix));
    let to = ip("10.0.0.3");
    let c = r
        .update(
            ip("10.0.0.2"),
            &announce(&["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"], 1),
        )
        .unwrap();
    let sent: Vec<&OutChange> = c.out.iter().filter(|o| o.peer == to).collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let tagged = r.adj_rib_out(to, &net("192.0.2.0/24")).unwrap();
    assert_eq!(tagged.communities, vec![7]);
    assert_eq!(r.adj_rib_out(to, &net("198.51.100.0/24")), None);
    assert!(
        r.adj_rib_out(to, &net("203.0.113.0/24"))
            .unwrap()
            .communities
            .is_empty()
    );
    assert_eq!(r.adj_rib_out_len(to), 2);
    // A new MED: the tagged prefix and the passed one change for that peer; the kept
    // one still is not sent.
    let c = r
        .update(
            ip("10.0.0.2"),
            &announce(&["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"], 2),
        )
        .unwrap();
    let mut sent: Vec<IpNet> = c
        .out
        .iter()
        .filter(|o| o.peer == to)
        .map(|o| o.prefix)
        .collect();
    sent.sort();
    assert_eq!(sent, vec![net("192.0.2.0/24"), net("203.0.113.0/24")]);
    assert_eq!(
        r.adj_rib_out(to, &net("192.0.2.0/24")).unwrap().med,
        Some(2)
    );
    // Withdrawn: the two sent ones are withdrawn, nothing is left over.
    let c = r
        .update(
            ip("10.0.0.2"),
            &RouteUpdate {
                announced: vec![],
                withdrawn: vec![
                    net("192.0.2.0/24"),
                    net("198.51.100.0/24"),
                    net("203.0.113.0/24"),
                ],
            },
        )
        .unwrap();
    assert_eq!(c.out.iter().filter(|o| o.peer == to).count(), 2);
    assert!(c.out.iter().all(|o| o.attrs.is_none()));
    assert_eq!(r.adj_rib_out_len(to), 0);
    assert_eq!(r.adj_rib_out(to, &net("192.0.2.0/24")), None);
}

#[test]
fn a_new_peer_in_a_freed_slot_starts_from_nothing_sent() {
    let mut r = rib(Box::new(PerPrefix));
    r.update(ip("10.0.0.2"), &announce(&["192.0.2.0/24"], 1))
        .unwrap();
    // 10.0.0.3 goes; 10.0.0.4 takes its slot and gets the table, untagged (the
    // policy tags only for 10.0.0.3).
    r.peer_down(ip("10.0.0.3")).unwrap();
    let c = r.peer_up(client("10.0.0.4")).unwrap();
    assert_eq!(c.out.len(), 1);
    let a = r.adj_rib_out(ip("10.0.0.4"), &net("192.0.2.0/24")).unwrap();
    assert!(a.communities.is_empty());
    assert_eq!(r.adj_rib_out(ip("10.0.0.3"), &net("192.0.2.0/24")), None);
    // 10.0.0.3 back: tagged again, in a slot of its own.
    let c = r.peer_up(client("10.0.0.3")).unwrap();
    assert_eq!(c.out[0].attrs.as_ref().unwrap().communities, vec![7]);
    assert_eq!(r.adj_rib_out_len(ip("10.0.0.4")), 1);
}

#[test]
fn a_restarting_peers_routes_are_stale_until_its_new_session_renews_them() {
    let mut r = rib(Box::new(AcceptAll));
    let a = ip("10.0.0.2");
    r.update(a, &announce(&["192.0.2.0/24", "198.51.100.0/24"], 1))
        .unwrap();
    assert!(!r.best(&net("192.0.2.0/24")).unwrap().stale);
    r.peer_restarting(a).unwrap();
    assert!(r.adj_rib_in(a, &net("192.0.2.0/24")).unwrap().1);
    // Still what the other client was sent.
    assert!(
        r.adj_rib_out(ip("10.0.0.3"), &net("192.0.2.0/24"))
            .is_some()
    );
    r.peer_up(client("10.0.0.2")).unwrap();
    // The new session renews one of them, with the same attributes: nothing to send.
    let c = r.update(a, &announce(&["192.0.2.0/24"], 1)).unwrap();
    assert!(c.fib.is_empty());
    assert!(!r.adj_rib_in(a, &net("192.0.2.0/24")).unwrap().1);
    assert!(r.adj_rib_in(a, &net("198.51.100.0/24")).unwrap().1);
    let c = r.end_of_rib(a, Family::Ipv4Unicast).unwrap();
    assert_eq!(c.fib.len(), 1);
    assert_eq!(c.fib[0].prefix, net("198.51.100.0/24"));
    assert_eq!(r.adj_rib_in_len(a), 1);
}

#[test]
fn the_export_cache_forgets_attributes_no_route_holds() {
    let mut r = rib(Box::new(AcceptAll));
    // Each UPDATE replaces the route with new attributes: a row per UPDATE, swept as
    // the old ones lose their last route.
    for med in 0..10_000 {
        r.update(ip("10.0.0.2"), &announce(&["192.0.2.0/24"], med))
            .unwrap();
    }
    assert!(r.exports.rows() < 200, "{} rows", r.exports.rows());
    assert_eq!(
        r.adj_rib_out(ip("10.0.0.3"), &net("192.0.2.0/24"))
            .unwrap()
            .med,
        Some(9_999)
    );
}

#[test]
fn equal_attributes_from_different_updates_are_one_set_and_one_rewrite() {
    let mut r = rib(Box::new(AcceptAll));
    let a = ip("10.0.0.2");
    let c1 = r.update(a, &announce(&["192.0.2.0/24"], 1)).unwrap();
    let c2 = r.update(a, &announce(&["198.51.100.0/24"], 1)).unwrap();
    let held = |p: &str| Arc::clone(r.adj_rib_in(a, &net(p)).unwrap().0);
    assert!(Arc::ptr_eq(&held("192.0.2.0/24"), &held("198.51.100.0/24")));
    // So both go to the other client with one attribute set: one UPDATE.
    let (o1, o2) = (c1.out[0].attrs.as_ref(), c2.out[0].attrs.as_ref());
    assert!(Arc::ptr_eq(o1.unwrap(), o2.unwrap()));
}
