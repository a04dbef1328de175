//! What the RIB costs per prefix as a route reflector: 100 000 IPv4 /26s from one client
//! reflected to two others (bgp_rr_bench's topology), with VmRSS/VmHWM from
//! /proc/self/status before and after. Printed (`-- --nocapture`), not asserted: the
//! allocator's behaviour is not ours to pin. One test per file, so the process measures
//! only this.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net};
use strait_bgp::codec::{Family, NextHop};
use strait_bgp::rib::{AcceptAll, Attrs, PeerConfig, Rib, RibConfig, RouteUpdate};

const AS: u32 = 64512;
const PREFIXES: u32 = 100_000;
/// About what fits in one 4096-octet UPDATE with /26s.
const PER_UPDATE: usize = 800;

/// (VmRSS, VmHWM) in KiB; `None` where /proc is not Linux's.
fn rss_kib() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn client(n: u8) -> PeerConfig {
    PeerConfig {
        address: IpAddr::V4(Ipv4Addr::new(10, 250, 0, n)),
        asn: AS,
        router_id: Ipv4Addr::new(10, 250, 0, n),
        rr_client: true,
        max_prefixes: None,
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        local_v4: Some(Ipv4Addr::new(10, 250, 0, 1)),
        local_v6: None,
        ipv4_via_ipv6: false,
    }
}

#[test]
fn rib_bytes_per_prefix_as_a_route_reflector() {
    let mut rib = Rib::new(
        RibConfig {
            local_asn: AS,
            router_id: Ipv4Addr::new(10, 250, 0, 1),
            cluster_id: None,
            multipath: 1,
        },
        Box::new(AcceptAll),
    );
    let peers: Vec<PeerConfig> = (2..=4).map(client).collect();
    for p in &peers {
        rib.peer_up(p.clone()).unwrap();
    }
    let attrs = Arc::new(Attrs::new(NextHop::V4(Ipv4Addr::new(10, 250, 0, 2))));
    let table: Vec<IpNet> = (0..PREFIXES)
        .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0b00_0000 + (i << 6)), 26).unwrap()))
        .collect();
    let updates: Vec<RouteUpdate> = table
        .chunks(PER_UPDATE)
        .map(|c| RouteUpdate {
            announced: vec![(c.to_vec(), Arc::clone(&attrs))],
            withdrawn: Vec::new(),
        })
        .collect();
    let before = rss_kib();
    let start = Instant::now();
    let mut out = 0;
    for u in &updates {
        out += rib.update(peers[0].address, u).unwrap().out.len();
    }
    let took = start.elapsed();
    let after = rss_kib();
    assert_eq!(out, 2 * PREFIXES as usize);
    assert_eq!(rib.loc_rib_len(), PREFIXES as usize);
    assert_eq!(rib.adj_rib_in_len(peers[0].address), PREFIXES as usize);
    assert_eq!(rib.adj_rib_out_len(peers[1].address), PREFIXES as usize);
    if let (Some(b), Some(a)) = (before, after) {
        println!(
            "{PREFIXES} prefixes, 3 RR clients: {took:?}; VmRSS {} -> {} KiB, VmHWM {} -> {} KiB; {} bytes per prefix (RSS)",
            b.0,
            a.0,
            b.1,
            a.1,
            (a.0 - b.0) * 1024 / u64::from(PREFIXES)
        );
    }
}
