//! 100 000 prefixes through a route reflector with four clients and an eBGP peer: every
//! route reaches every peer it should, with the right attributes. The time is printed
//! (`cargo test --test rib_scale -- --nocapture`), never asserted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use strait_bgp::codec::{AsPath, AsSegment, Family, NextHop, SegmentKind};
use strait_bgp::rib::{AcceptAll, Attrs, PeerConfig, Rib, RibConfig, RouteUpdate};

const LOCAL_AS: u32 = 65000;
const PREFIXES: usize = 100_000;
const V6_PREFIXES: usize = 20_000;
/// Prefixes per UPDATE, about what fits in 4 096 octets.
const PER_UPDATE: usize = 500;

fn peer(n: u8, asn: u32, rr_client: bool) -> PeerConfig {
    PeerConfig {
        address: IpAddr::V4(Ipv4Addr::new(10, 1, 0, n)),
        asn,
        router_id: Ipv4Addr::new(10, 1, 0, n),
        rr_client,
        max_prefixes: Some(PREFIXES),
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        local_v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
        local_v6: Some("fd00::1".parse().unwrap()),
        ipv4_via_ipv6: false,
    }
}

fn prefixes() -> Vec<IpNet> {
    let mut v: Vec<IpNet> = (0..PREFIXES - V6_PREFIXES)
        .map(|i| {
            let i = u32::try_from(i).unwrap();
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from((20 << 24) | (i << 8)), 24).unwrap())
        })
        .collect();
    v.extend((0..V6_PREFIXES).map(|i| {
        let i = u128::try_from(i).unwrap();
        IpNet::V6(Ipv6Net::new(Ipv6Addr::from((0x2001_0db8u128 << 96) | (i << 80)), 48).unwrap())
    }));
    v
}

/// The UPDATEs a client sends for every prefix with AS_PATH `asns`.
fn updates(all: &[IpNet], next_hop_v4: Ipv4Addr, asns: &[u32]) -> Vec<RouteUpdate> {
    let mut a4 = Attrs::new(NextHop::V4(next_hop_v4));
    a4.as_path = AsPath {
        segments: vec![AsSegment {
            kind: SegmentKind::Sequence,
            asns: asns.to_vec(),
        }],
    };
    let mut a6 = a4.clone();
    a6.next_hop = NextHop::V6 {
        global: next_hop_v4.to_ipv6_mapped(),
        link_local: None,
    };
    let (a4, a6) = (Arc::new(a4), Arc::new(a6));
    all.chunks(PER_UPDATE)
        .map(|chunk| RouteUpdate {
            announced: vec![(
                chunk.to_vec(),
                if chunk[0].addr().is_ipv4() {
                    Arc::clone(&a4)
                } else {
                    Arc::clone(&a6)
                },
            )],
            withdrawn: vec![],
        })
        .collect()
}

#[test]
fn a_hundred_thousand_prefixes_through_a_route_reflector() {
    let mut rib = Rib::new(
        RibConfig {
            local_asn: LOCAL_AS,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            cluster_id: None,
            multipath: 4,
        },
        Box::new(AcceptAll),
    );
    let clients: Vec<PeerConfig> = (1..=4).map(|n| peer(n, LOCAL_AS, true)).collect();
    let ebgp = peer(100, 64512, false);
    for p in clients.iter().chain([&ebgp]) {
        rib.peer_up(p.clone()).unwrap();
    }
    let (c1, c2) = (clients[0].address, clients[1].address);
    let all = prefixes();

    // Client 1 announces everything: the FIB gets every prefix, the other three clients
    // and the eBGP peer get every route.
    let first = updates(&all, Ipv4Addr::new(10, 1, 0, 1), &[64600]);
    let start = Instant::now();
    let (mut fib, mut out) = (0, 0);
    for u in &first {
        let c = rib.update(c1, u).unwrap();
        fib += c.fib.len();
        out += c.out.len();
    }
    let announce_time = start.elapsed();
    assert_eq!(rib.loc_rib_len(), PREFIXES);
    assert_eq!(fib, PREFIXES);
    assert_eq!(out, PREFIXES * 4);
    for p in &clients[1..] {
        assert_eq!(rib.adj_rib_out_len(p.address), PREFIXES);
    }
    assert_eq!(rib.adj_rib_out_len(c1), 0);
    let sample = all[PREFIXES - 1];
    let reflected = rib.adj_rib_out(c2, &sample).unwrap();
    assert_eq!(reflected.originator_id, Some(Ipv4Addr::new(10, 1, 0, 1)));
    assert_eq!(reflected.cluster_list, vec![Ipv4Addr::new(10, 0, 0, 1)]);
    let to_ebgp = rib.adj_rib_out(ebgp.address, &sample).unwrap();
    assert_eq!(to_ebgp.as_path.segments[0].asns, vec![LOCAL_AS, 64600]);

    // Client 2 announces the same prefixes with a longer path: a backup, no change.
    let backup = updates(&all, Ipv4Addr::new(10, 1, 0, 2), &[64601, 64601]);
    let start = Instant::now();
    for u in &backup {
        assert!(rib.update(c2, u).unwrap().is_empty());
    }
    let backup_time = start.elapsed();

    // Client 1 goes down: every prefix fails over to client 2's path.
    let start = Instant::now();
    let c = rib.peer_down(c1).unwrap();
    let failover_time = start.elapsed();
    assert_eq!(c.fib.len(), PREFIXES);
    assert_eq!(rib.loc_rib_len(), PREFIXES);
    assert_eq!(rib.best(&sample).unwrap().peer, c2);
    assert_eq!(
        rib.adj_rib_out(ebgp.address, &sample)
            .unwrap()
            .as_path
            .length(),
        3
    );
    // Client 2's own routes are withdrawn from it; the others get its path.
    assert_eq!(rib.adj_rib_out_len(c2), 0);

    println!(
        "rib_scale: {PREFIXES} prefixes, 4 RR clients + 1 eBGP peer: announce {:?}, \
         backup paths {:?}, fail-over on peer down {:?}",
        announce_time, backup_time, failover_time
    );
}
