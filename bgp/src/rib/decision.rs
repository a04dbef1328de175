//! The RFC 4271 §9.1 decision process over one destination's candidate paths, with the
//! route-reflection tie-breaks of RFC 4456 §9 and ECMP.
//!
//! MED (step c) is compared only between routes from the same neighbouring AS, which is
//! not a total order, so the steps are eliminations over the candidate set, as the RFC
//! words them, rather than one comparator.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::attrs::Attrs;
use super::route::Route;

/// One candidate for a destination: a peer's route after import policy. (The RIB
/// stores it more compactly, as a [`Route`].)
#[derive(Debug, Clone)]
pub struct Path {
    pub peer: IpAddr,
    pub ebgp: bool,
    pub peer_router_id: Ipv4Addr,
    pub attrs: Arc<Attrs>,
    /// Kept for a restarting peer (RFC 4724 helper) until End-of-RIB or its timer.
    pub stale: bool,
}

/// The `peer` of a route this speaker originates ([`super::Rib::originate`]). No BGP
/// session can have the unspecified address, so it never collides with a neighbour.
pub const LOCAL_PEER: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

impl Path {
    /// A route this speaker originates rather than learned from a peer.
    pub fn is_local(&self) -> bool {
        self.peer == LOCAL_PEER
    }
}

/// The cost to reach a next hop; strait has no IGP, so every next hop costs the same
/// until the FIB sync can tell reachability (§9.1.2.2 e).
fn igp_cost(_p: &Route) -> u32 {
    0
}

/// Indexes of the paths that survive steps a–e (the ECMP candidates), then ordered by
/// the remaining tie-breaks (f, g and the peer address), best first.
pub(super) fn rank(paths: &[Route]) -> Vec<usize> {
    let mut c: Vec<usize> = (0..paths.len()).collect();
    // Our own route first, as BIRD and FRR (weight 32768) do: a prefix we originate is
    // ours whatever a peer says about it.
    keep_best(&mut c, |i| !paths[i].is_local());
    keep_best(&mut c, |i| {
        std::cmp::Reverse(paths[i].attrs.effective_local_pref())
    });
    keep_best(&mut c, |i| paths[i].attrs.as_path.length());
    keep_best(&mut c, |i| paths[i].attrs.origin);
    // c: a route loses if a route from the same neighbouring AS has a lower MED. A
    // missing MED is the lowest value (RFC 4271 §9.1.2.2 c).
    let med = |i: usize| paths[i].attrs.med.unwrap_or(0);
    let snapshot = c.clone();
    c.retain(|&i| {
        let asn = paths[i].attrs.neighbour_as();
        !snapshot
            .iter()
            .any(|&j| paths[j].attrs.neighbour_as() == asn && med(j) < med(i))
    });
    // d: eBGP over iBGP.
    keep_best(&mut c, |i| !paths[i].source.ebgp);
    keep_best(&mut c, |i| igp_cost(&paths[i]));
    c.sort_by(|&a, &b| tie_break(&paths[a], &paths[b]));
    c
}

/// §9.1.2.2 f with RFC 4456 §9, then the shortest CLUSTER_LIST, then the lowest peer
/// address (g).
fn tie_break(a: &Route, b: &Route) -> Ordering {
    a.identifier()
        .cmp(&b.identifier())
        .then(a.attrs.cluster_list.len().cmp(&b.attrs.cluster_list.len()))
        .then(a.peer().cmp(&b.peer()))
}

fn keep_best<K: Ord>(c: &mut Vec<usize>, key: impl Fn(usize) -> K) {
    if c.len() < 2 {
        return;
    }
    if let Some(best) = c.iter().map(|&i| key(i)).min() {
        c.retain(|&i| key(i) == best);
    }
}
