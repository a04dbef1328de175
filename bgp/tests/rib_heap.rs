//! The RIB's heap as a route reflector, counted by this test's own allocator rather
//! than read from the kernel: 100 000 IPv4 /26s from one client reflected to two
//! others (bgp_rr_bench's topology). The bytes the RIB keeps per prefix, and its peak
//! while the table grows, are bounded; one test per file, so the counts are this
//! test's alone.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ipnet::{IpNet, Ipv4Net};
use strait_bgp::codec::{Family, NextHop};
use strait_bgp::rib::{AcceptAll, Attrs, PeerConfig, Rib, RibConfig, RouteUpdate};

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to `System` unchanged; the counters only observe. (The
// default `realloc` allocates, copies and frees through these two.)
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const AS: u32 = 64512;
const PREFIXES: u32 = 100_000;
/// About what fits in one 4096-octet UPDATE with /26s.
const PER_UPDATE: usize = 800;
/// What the Loc-RIB (with the Adj-RIB-In and the two Adj-RIB-Outs) may keep per
/// prefix once the table is in: a 131 072-bucket table of 25 octets (the key and two
/// pointers) is 33 per prefix. It was about 170 (IpNet keys, the FIB next hops and
/// the Adj-RIB-Out entries stored per destination).
const KEPT_PER_PREFIX: usize = 48;
/// The peak on the way (the table grows a shard at a time): under 40 per prefix. It
/// was about 210, the old table held beside the new one as it grew.
const PEAK_PER_PREFIX: usize = 48;

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
fn reflecting_a_full_table_keeps_a_few_dozen_bytes_per_prefix() {
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
    // One UPDATE at a time, as a session hands them over; its own buffers are not the
    // RIB's and are gone before the next.
    let update = |i: usize| {
        let first = (i * PER_UPDATE) as u32;
        let last = (first + PER_UPDATE as u32).min(PREFIXES);
        let prefixes = (first..last)
            .map(|n| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0b00_0000 + (n << 6)), 26).unwrap()))
            .collect();
        let attrs = Attrs::new(NextHop::V4(Ipv4Addr::new(10, 250, 0, 2)));
        RouteUpdate {
            announced: vec![(prefixes, Arc::new(attrs))],
            withdrawn: Vec::new(),
        }
    };
    let updates = (PREFIXES as usize).div_ceil(PER_UPDATE);
    let base = LIVE.load(Ordering::Relaxed);
    // The RIB's peak, with what the calls return (the caller drops it before the next
    // UPDATE) but not the UPDATEs themselves.
    let mut peak = 0;
    let mut sent = 0;
    for i in 0..updates {
        let u = update(i);
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let changes = rib.update(peers[0].address, &u).unwrap();
        sent += changes.out.len();
        peak = peak.max(PEAK.load(Ordering::Relaxed) - base - u_size(&u));
    }
    let kept = LIVE.load(Ordering::Relaxed) - base;
    assert_eq!(sent, 2 * PREFIXES as usize);
    assert_eq!(rib.loc_rib_len(), PREFIXES as usize);
    assert_eq!(rib.adj_rib_out_len(peers[2].address), PREFIXES as usize);
    let per_prefix = kept / PREFIXES as usize;
    let peak_per_prefix = peak / PREFIXES as usize;
    println!(
        "{PREFIXES} prefixes reflected: {kept} bytes kept ({per_prefix} per prefix), \
         peak {peak} ({peak_per_prefix} per prefix)"
    );
    assert!(
        per_prefix <= KEPT_PER_PREFIX,
        "{per_prefix} bytes per prefix kept, more than {KEPT_PER_PREFIX}"
    );
    assert!(
        peak_per_prefix <= PEAK_PER_PREFIX,
        "peak {peak_per_prefix} bytes per prefix, more than {PEAK_PER_PREFIX}"
    );
}

/// The heap an UPDATE's routes hold (its prefix list and attributes).
fn u_size(u: &RouteUpdate) -> usize {
    u.announced
        .iter()
        .map(|(p, _)| p.capacity() * std::mem::size_of::<IpNet>() + std::mem::size_of::<Attrs>())
        .sum()
}
