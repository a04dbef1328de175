//! Local origination: our routes beat learned ones, never reach the FIB, and go to each
//! peer with next hop self.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

use super::*;
use crate::codec::{Family, NextHop};

const LOCAL_AS: u32 = 65000;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn peer(addr: &str, asn: u32, rr_client: bool, local: &str) -> PeerConfig {
    let address: IpAddr = addr.parse().unwrap();
    PeerConfig {
        address,
        asn,
        router_id: match address {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::new(9, 9, 9, 9),
        },
        rr_client,
        max_prefixes: None,
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        local_v4: Some(local.parse().unwrap()),
        local_v6: Some("fd00::1".parse().unwrap()),
        ipv4_via_ipv6: false,
    }
}

fn rib() -> Rib {
    let mut r = Rib::new(
        RibConfig {
            local_asn: LOCAL_AS,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            cluster_id: None,
            multipath: 8,
        },
        Box::new(AcceptAll),
    );
    // An iBGP client, an iBGP non-client and an eBGP peer, each seeing us at another
    // address.
    r.peer_up(peer("10.1.0.1", LOCAL_AS, true, "10.1.0.254"))
        .unwrap();
    r.peer_up(peer("10.2.0.1", LOCAL_AS, false, "10.2.0.254"))
        .unwrap();
    r.peer_up(peer("10.3.0.1", 65100, false, "10.3.0.254"))
        .unwrap();
    r
}

fn learned(r: &mut Rib, from: &str, prefix: &str, next_hop: Ipv4Addr) -> Changes {
    let update = RouteUpdate {
        announced: vec![(
            vec![net(prefix)],
            Arc::new(Attrs::new(NextHop::V4(next_hop))),
        )],
        withdrawn: vec![],
    };
    r.update(from.parse().unwrap(), &update).unwrap()
}

fn sent(c: &Changes, to: &str) -> Option<Option<Arc<Attrs>>> {
    let to: IpAddr = to.parse().unwrap();
    c.out
        .iter()
        .rev()
        .find(|o| o.peer == to)
        .map(|o| o.attrs.clone())
}

#[test]
fn originated_goes_to_every_peer_with_next_hop_self_and_not_to_the_fib() {
    let mut r = rib();
    let c = r.originate(
        net("10.244.1.0/26"),
        Attrs::new(NextHop::V4(Ipv4Addr::UNSPECIFIED)),
    );
    assert!(
        c.fib.is_empty(),
        "our own prefix is not the FIB's: {:?}",
        c.fib
    );
    for (peer, nh) in [
        ("10.1.0.1", "10.1.0.254"),
        ("10.2.0.1", "10.2.0.254"),
        ("10.3.0.1", "10.3.0.254"),
    ] {
        let a = sent(&c, peer).flatten().expect(peer);
        assert_eq!(a.next_hop, NextHop::V4(nh.parse().unwrap()), "{peer}");
    }
    let ibgp = sent(&c, "10.2.0.1").flatten().unwrap();
    assert_eq!(ibgp.local_pref, Some(DEFAULT_LOCAL_PREF));
    assert!(ibgp.as_path.segments.is_empty());
    assert_eq!(ibgp.originator_id, None, "not reflected: no ORIGINATOR_ID");
    let ebgp = sent(&c, "10.3.0.1").flatten().unwrap();
    assert_eq!(ebgp.as_path.segments[0].asns, vec![LOCAL_AS]);
    assert_eq!(ebgp.local_pref, None);
    assert_eq!(r.originated(), vec![net("10.244.1.0/26")]);
}

#[test]
fn ipv6_origination_uses_the_sessions_ipv6_address() {
    let mut r = rib();
    let unspecified = NextHop::V6 {
        global: Ipv6Addr::UNSPECIFIED,
        link_local: None,
    };
    let c = r.originate(net("fd00:244::/64"), Attrs::new(unspecified));
    let a = sent(&c, "10.2.0.1").flatten().unwrap();
    assert_eq!(
        a.next_hop,
        NextHop::V6 {
            global: "fd00::1".parse().unwrap(),
            link_local: None
        }
    );
}

#[test]
fn local_route_beats_a_learned_one_and_the_learned_one_returns_after_withdraw() {
    let mut r = rib();
    let gw = Ipv4Addr::new(10, 2, 0, 1);
    let c = learned(&mut r, "10.2.0.1", "10.244.1.0/26", gw);
    assert_eq!(c.fib[0].next_hops, vec![NextHop::V4(gw)]);

    let c = r.originate(
        net("10.244.1.0/26"),
        Attrs::new(NextHop::V4(Ipv4Addr::UNSPECIFIED)),
    );
    assert_eq!(c.fib.len(), 1);
    assert!(
        c.fib[0].next_hops.is_empty(),
        "the learned route leaves the FIB"
    );
    assert!(r.best(&net("10.244.1.0/26")).unwrap().is_local());
    // The peer that sent it now hears ours.
    let back = sent(&c, "10.2.0.1").flatten().unwrap();
    assert_eq!(back.next_hop, NextHop::V4("10.2.0.254".parse().unwrap()));

    let c = r.withdraw_local(net("10.244.1.0/26"));
    assert_eq!(c.fib[0].next_hops, vec![NextHop::V4(gw)]);
    assert_eq!(
        sent(&c, "10.2.0.1"),
        Some(None),
        "split horizon: withdrawn from its source"
    );
    assert!(r.originated().is_empty());
}

#[test]
fn withdrawing_what_was_never_originated_changes_nothing() {
    let mut r = rib();
    assert!(r.withdraw_local(net("10.9.9.0/24")).is_empty());
    learned(
        &mut r,
        "10.2.0.1",
        "10.9.9.0/24",
        Ipv4Addr::new(10, 2, 0, 1),
    );
    assert!(r.withdraw_local(net("10.9.9.0/24")).is_empty());
    assert_eq!(r.loc_rib_len(), 1);
}

#[test]
fn a_peer_coming_up_gets_our_routes() {
    let mut r = rib();
    r.originate(
        net("10.244.1.0/26"),
        Attrs::new(NextHop::V4(Ipv4Addr::UNSPECIFIED)),
    );
    let c = r
        .peer_up(peer("10.4.0.1", LOCAL_AS, false, "10.4.0.254"))
        .unwrap();
    let a = sent(&c, "10.4.0.1").flatten().unwrap();
    assert_eq!(a.next_hop, NextHop::V4("10.4.0.254".parse().unwrap()));
    assert_eq!(
        r.adj_rib_out_routes("10.4.0.1".parse().unwrap(), Family::Ipv4Unicast)
            .len(),
        1
    );
    assert!(
        r.adj_rib_out_routes("10.4.0.1".parse().unwrap(), Family::Ipv6Unicast)
            .is_empty()
    );
}

#[test]
fn prefixes_originated_together_share_their_exported_attributes() {
    let mut r = rib();
    let attrs = Arc::new(Attrs::new(NextHop::V4(Ipv4Addr::UNSPECIFIED)));
    let c = r.originate_all(&[net("10.244.1.0/26"), net("10.244.2.0/26")], &attrs);
    let to: IpAddr = "10.2.0.1".parse().unwrap();
    let sent: Vec<&Arc<Attrs>> = c
        .out
        .iter()
        .filter(|o| o.peer == to)
        .filter_map(|o| o.attrs.as_ref())
        .collect();
    assert_eq!(sent.len(), 2);
    assert!(
        Arc::ptr_eq(sent[0], sent[1]),
        "one UPDATE's worth of attributes"
    );
}
