//! The routing information bases (RFC 4271 §3.2) as pure logic: per-peer Adj-RIB-In
//! after import policy, the Loc-RIB with the §9.1 decision process and ECMP, per-peer
//! Adj-RIB-Out with export policy, route reflection (RFC 4456) and the graceful-restart
//! helper (RFC 4724 §4.2). No I/O: the session driver feeds it UPDATEs and session
//! events and sends what comes out; the FIB sync installs the best-path changes.
//!
//! Every mutating call returns [`Changes`]: the Loc-RIB best paths that changed (for the
//! FIB) and the routes to announce or withdraw per peer. Nothing else has to be diffed.

mod adj_out;
mod attrs;
mod decision;
mod policy;
mod short;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::codec::{Family, NextHop, Notification, codes};

pub use attrs::{Attrs, DEFAULT_LOCAL_PREF, RouteUpdate};
pub use decision::{LOCAL_PEER, Path};
pub use policy::{AcceptAll, Policy};

use adj_out::AdjOut;
use short::Short;

/// The speaker's own identity and the knobs of the decision process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibConfig {
    pub local_asn: u32,
    pub router_id: Ipv4Addr,
    /// RFC 4456 §7: the router ID unless set.
    pub cluster_id: Option<Ipv4Addr>,
    /// How many equal-cost paths go to the FIB (1 = no ECMP).
    pub multipath: usize,
}

/// One configured neighbour, as the session learned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: IpAddr,
    pub asn: u32,
    /// The BGP identifier from its OPEN.
    pub router_id: Ipv4Addr,
    /// An iBGP peer we reflect routes to as a route-reflection client.
    pub rr_client: bool,
    /// RFC 4486 subcode 1: more routes than this ends the session.
    pub max_prefixes: Option<usize>,
    /// The families the session negotiated; nothing else is advertised to it.
    pub families: Vec<Family>,
    /// Our addresses on the session, used as next hop towards eBGP peers. A family
    /// without one is not advertised to an eBGP peer.
    pub local_v4: Option<Ipv4Addr>,
    pub local_v6: Option<Ipv6Addr>,
    /// The session negotiated RFC 8950 (IPv4 unicast with IPv6 next hops): IPv4
    /// routes may go to it with an IPv6 next hop, and our own with `local_v6` when
    /// there is no `local_v4`. Without it, no IPv4 route with an IPv6 next hop is sent.
    pub ipv4_via_ipv6: bool,
}

/// A Loc-RIB best-path change for the FIB: the next hops (ECMP, best first) now used for
/// `prefix`; empty means the prefix is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FibChange {
    pub prefix: IpNet,
    pub next_hops: Vec<NextHop>,
}

/// An Adj-RIB-Out change: announce `prefix` to `peer` with `attrs`, or withdraw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutChange {
    pub peer: IpAddr,
    pub prefix: IpNet,
    pub attrs: Option<Arc<Attrs>>,
}

/// What one call changed, in the order it happened: a later entry for the same prefix
/// (and peer) supersedes an earlier one, so a sender may keep only the last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub fib: Vec<FibChange>,
    pub out: Vec<OutChange>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.fib.is_empty() && self.out.is_empty()
    }
}

/// The peer sent more routes than its limit. The RIB left its Adj-RIB-In as it was;
/// the session sends [`MaxPrefixesExceeded::notification`] and then calls
/// [`Rib::peer_down`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaxPrefixesExceeded {
    pub peer: IpAddr,
    pub limit: usize,
    /// The family of the first prefix past the limit.
    pub family: Family,
}

impl MaxPrefixesExceeded {
    /// Cease / Maximum Number of Prefixes Reached, with RFC 4486 §4's data: AFI, SAFI
    /// and the limit.
    pub fn notification(&self) -> Notification {
        let mut n = Notification::new(codes::CEASE, 1);
        let a = self.family.afi_safi();
        n.data.extend_from_slice(&a.afi.to_be_bytes());
        n.data.push(a.safi);
        let limit = u32::try_from(self.limit).unwrap_or(u32::MAX);
        n.data.extend_from_slice(&limit.to_be_bytes());
        n
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RibError {
    #[error("no peer {0} in the RIB")]
    UnknownPeer(IpAddr),
    #[error("peer {0} is already up")]
    AlreadyUp(IpAddr),
    #[error("peer {} sent more than {} prefixes", .0.peer, .0.limit)]
    MaxPrefixes(MaxPrefixesExceeded),
}

struct PeerState {
    cfg: PeerConfig,
    /// Dense and never reused: indexes the export memo.
    slot: usize,
    ebgp: bool,
    /// False while a restarting peer's routes are kept (graceful restart helper).
    up: bool,
    /// How many routes its Adj-RIB-In holds. The routes themselves are its paths in the
    /// Loc-RIB's `Dest`s (after import policy, stale flag included): a map per peer
    /// repeated every prefix and pointer once more.
    adj_in_len: usize,
    /// How many routes its Adj-RIB-Out holds (the routes live in the Loc-RIB's `Dest`).
    adj_out_len: usize,
}

struct Dest {
    paths: Short<Path>,
    /// What the FIB was last given. `None`, the common case, stands for the best
    /// path's one next hop, without a copy: 16 octets here instead of 40. Anything
    /// that changes `paths` goes through [`Dest::paths_mut`], which writes it out first.
    fib: Option<Box<[NextHop]>>,
    /// The Adj-RIB-Outs' entries for this prefix, by peer slot. Kept beside the
    /// Loc-RIB entry rather than in a map per peer: updating every peer's Adj-RIB-Out
    /// then costs no further lookups, which is where the time went at 100 000 prefixes.
    out: AdjOut,
}

impl Default for Dest {
    fn default() -> Dest {
        Dest {
            paths: Short::Empty,
            // Empty: no allocation.
            fib: Some(Box::new([])),
            out: AdjOut::default(),
        }
    }
}

impl Dest {
    fn fib_hops(&self) -> &[NextHop] {
        match &self.fib {
            Some(hops) => hops,
            None => std::slice::from_ref(&self.paths[0].attrs.next_hop),
        }
    }

    /// The paths to change: the FIB entry stops depending on them first.
    fn paths_mut(&mut self) -> &mut Short<Path> {
        if self.fib.is_none() {
            self.fib = Some(Box::new([self.paths[0].attrs.next_hop]));
        }
        &mut self.paths
    }

    fn path_of(&self, peer: IpAddr) -> Option<&Path> {
        self.paths.iter().find(|p| p.peer == peer)
    }
}

/// Export results for one call, per (source attributes, source peer) and target peer
/// slot: one UPDATE's prefixes share their attributes, so each is rewritten once per
/// peer. The row in use sits outside the map so consecutive prefixes of one UPDATE
/// hit it without hashing. Each row keeps its source `Arc`, so that address cannot be
/// reused for other attributes while the memo lives.
#[derive(Default)]
struct ExportMemo {
    current: Option<(MemoKey, MemoRow)>,
    rows: HashMap<MemoKey, MemoRow>,
}

/// Source attributes (by address), source peer, and the family, which decides the
/// next hop towards eBGP peers.
type MemoKey = (usize, IpAddr, Family);

struct MemoRow {
    _source: Arc<Attrs>,
    /// By peer slot: `None` not computed yet, `Some(None)` not exported.
    per_peer: Vec<Option<Option<Arc<Attrs>>>>,
}

impl ExportMemo {
    fn row(&mut self, source: &Arc<Attrs>, peer: IpAddr, family: Family) -> &mut MemoRow {
        let key = (Arc::as_ptr(source) as usize, peer, family);
        if self.current.as_ref().is_none_or(|(k, _)| *k != key) {
            let row = self.rows.remove(&key).unwrap_or_else(|| MemoRow {
                _source: Arc::clone(source),
                per_peer: Vec::new(),
            });
            if let Some((k, old)) = self.current.replace((key, row)) {
                self.rows.insert(k, old);
            }
        }
        match &mut self.current {
            Some((_, row)) => row,
            None => unreachable!("just set"),
        }
    }
}

pub struct Rib {
    cfg: RibConfig,
    policy: Box<dyn Policy>,
    peers: HashMap<IpAddr, PeerState>,
    next_slot: usize,
    loc: HashMap<IpNet, Dest>,
}

fn family_of(p: &IpNet) -> Family {
    match p {
        IpNet::V4(_) => Family::Ipv4Unicast,
        IpNet::V6(_) => Family::Ipv6Unicast,
    }
}

impl Rib {
    pub fn new(cfg: RibConfig, policy: Box<dyn Policy>) -> Rib {
        Rib {
            cfg,
            policy,
            peers: HashMap::new(),
            next_slot: 0,
            loc: HashMap::new(),
        }
    }

    fn cluster_id(&self) -> Ipv4Addr {
        self.cfg.cluster_id.unwrap_or(self.cfg.router_id)
    }

    /// A session reached Established: the peer gets the whole Loc-RIB its export rules
    /// allow. A peer that was restarting keeps its stale routes until End-of-RIB.
    pub fn peer_up(&mut self, cfg: PeerConfig) -> Result<Changes, RibError> {
        let addr = cfg.address;
        let ebgp = cfg.asn != self.cfg.local_asn;
        match self.peers.get_mut(&addr) {
            Some(p) if p.up => return Err(RibError::AlreadyUp(addr)),
            Some(p) => {
                p.cfg = cfg;
                p.ebgp = ebgp;
                p.up = true;
            }
            None => {
                self.next_slot += 1;
                self.peers.insert(
                    addr,
                    PeerState {
                        cfg,
                        slot: self.next_slot,
                        ebgp,
                        up: true,
                        adj_in_len: 0,
                        adj_out_len: 0,
                    },
                );
            }
        }
        let mut changes = Changes::default();
        let mut memo = ExportMemo::default();
        let prefixes: Vec<IpNet> = self.loc.keys().copied().collect();
        for prefix in prefixes {
            self.sync_out(&prefix, Some(addr), &mut memo, &mut changes);
        }
        Ok(changes)
    }

    /// Apply one UPDATE from `peer`. On [`RibError::MaxPrefixes`] nothing changed.
    pub fn update(&mut self, peer: IpAddr, update: &RouteUpdate) -> Result<Changes, RibError> {
        let state = match self.peers.get(&peer) {
            Some(p) if p.up => p,
            _ => return Err(RibError::UnknownPeer(peer)),
        };
        // First decide every prefix's fate (import checks and policy are pure), so a
        // limit breach can refuse the whole UPDATE before anything changes.
        let mut decided: Vec<(IpNet, Option<Arc<Attrs>>)> = Vec::new();
        decided.extend(update.withdrawn.iter().map(|p| (p.trunc(), None)));
        for (prefixes, attrs) in &update.announced {
            let checked = self.import_checks(state, attrs);
            for p in prefixes {
                let p = p.trunc();
                let a = checked
                    .as_ref()
                    .and_then(|a| self.policy.import(&state.cfg, &p, a));
                decided.push((p, a));
            }
        }
        if let Some(limit) = state.cfg.max_prefixes {
            let mut count = state.adj_in_len;
            let mut seen: HashMap<IpNet, bool> = HashMap::new();
            // The limit holds for the UPDATE's outcome, not the steps on the way.
            let mut first_past: Option<Family> = None;
            for (p, a) in &decided {
                let held = || self.loc.get(p).is_some_and(|d| d.path_of(peer).is_some());
                let before = seen.get(p).copied().unwrap_or_else(held);
                let after = a.is_some();
                seen.insert(*p, after);
                match (before, after) {
                    (false, true) => count += 1,
                    (true, false) => count -= 1,
                    _ => {}
                }
                if count > limit {
                    first_past.get_or_insert(family_of(p));
                }
            }
            if count > limit {
                return Err(RibError::MaxPrefixes(MaxPrefixesExceeded {
                    peer,
                    limit,
                    family: first_past.unwrap_or(Family::Ipv4Unicast),
                }));
            }
        }
        let mut changes = Changes::default();
        let mut memo = ExportMemo::default();
        for (prefix, attrs) in decided {
            self.set_route(peer, prefix, attrs, &mut memo, &mut changes);
        }
        Ok(changes)
    }

    /// The RIB's own import rules: AS_PATH loop (eBGP), LOCAL_PREF is not taken from
    /// another AS (RFC 4271 §5.1.5), route-reflection loops (RFC 4456 §8).
    fn import_checks(&self, peer: &PeerState, attrs: &Arc<Attrs>) -> Option<Arc<Attrs>> {
        if peer.ebgp {
            if attrs.as_path.contains(self.cfg.local_asn) {
                return None;
            }
            if attrs.local_pref.is_some() {
                let mut a = Attrs::clone(attrs);
                a.local_pref = None;
                return Some(Arc::new(a));
            }
        } else if attrs.originator_id == Some(self.cfg.router_id)
            || attrs.cluster_list.contains(&self.cluster_id())
        {
            return None;
        }
        Some(Arc::clone(attrs))
    }

    /// Put (or remove, `None`) `peer`'s route for `prefix` into its Adj-RIB-In and the
    /// Loc-RIB candidates, and recompute the destination.
    fn set_route(
        &mut self,
        peer: IpAddr,
        prefix: IpNet,
        attrs: Option<Arc<Attrs>>,
        memo: &mut ExportMemo,
        changes: &mut Changes,
    ) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let (ebgp, router_id) = (state.ebgp, state.cfg.router_id);
        match attrs {
            Some(a) => {
                let dest = self.loc.entry(prefix).or_default();
                let path = Path {
                    peer,
                    ebgp,
                    peer_router_id: router_id,
                    attrs: a,
                    stale: false,
                };
                match dest.paths_mut().iter_mut().find(|p| p.peer == peer) {
                    Some(p) => *p = path,
                    None => {
                        dest.paths_mut().push(path);
                        state.adj_in_len += 1;
                    }
                }
            }
            None => {
                let Some(dest) = self
                    .loc
                    .get_mut(&prefix)
                    .filter(|d| d.path_of(peer).is_some())
                else {
                    return;
                };
                dest.paths_mut().retain(|p| p.peer != peer);
                state.adj_in_len -= 1;
            }
        }
        self.recompute(&prefix, memo, changes);
    }

    /// Run the decision process for `prefix` and push what changed.
    fn recompute(&mut self, prefix: &IpNet, memo: &mut ExportMemo, changes: &mut Changes) {
        let Some(dest) = self.loc.get_mut(prefix) else {
            return;
        };
        let ranked = decision::rank(&dest.paths);
        let mut fib: Vec<NextHop> = Vec::with_capacity(ranked.len().min(self.cfg.multipath));
        // A prefix we originate is ours: the FIB gets nothing from BGP for it (the
        // agent routes its own blocks), so a peer's route for it is removed too.
        let local_best = ranked.first().is_some_and(|&i| dest.paths[i].is_local());
        let candidates = if local_best { &[][..] } else { &ranked[..] };
        for &i in candidates.iter().take(self.cfg.multipath.max(1)) {
            let nh = dest.paths[i].attrs.next_hop;
            if !fib.contains(&nh) {
                fib.push(nh);
            }
        }
        let changed = fib[..] != *dest.fib_hops();
        // The best path first in `paths`, so readers need not rank again.
        if let Some(&best) = ranked.first() {
            // `fib` is set again below: nothing to write out first.
            dest.paths.swap(0, best);
        }
        // One next hop is the best path's: kept as `None`.
        if changed || fib.len() == 1 {
            dest.fib = (fib.len() != 1).then(|| fib.clone().into_boxed_slice());
        }
        if changed {
            changes.fib.push(FibChange {
                prefix: *prefix,
                next_hops: fib,
            });
        }
        self.sync_out(prefix, None, memo, changes);
        if self.loc.get(prefix).is_some_and(|d| d.paths.is_empty()) {
            self.loc.remove(prefix);
        }
    }

    /// Bring every up peer's (or only `only`'s) Adj-RIB-Out for `prefix` in line with
    /// the Loc-RIB's best path.
    fn sync_out(
        &mut self,
        prefix: &IpNet,
        only: Option<IpAddr>,
        memo: &mut ExportMemo,
        changes: &mut Changes,
    ) {
        let best = self.loc.get(prefix).and_then(|d| d.paths.first()).cloned();
        let src_client = best
            .as_ref()
            .and_then(|b| self.peers.get(&b.peer))
            .is_some_and(|p| p.cfg.rr_client);
        let family = family_of(prefix);
        let mut row = best.as_ref().map(|b| memo.row(&b.attrs, b.peer, family));
        let Some(dest) = self.loc.get_mut(prefix) else {
            return;
        };
        for (&dst, dst_state) in self.peers.iter_mut() {
            if !dst_state.up || only.is_some_and(|o| o != dst) {
                continue;
            }
            let wanted = match (&best, &mut row) {
                (Some(b), Some(row)) => {
                    if row.per_peer.len() <= dst_state.slot {
                        row.per_peer.resize(dst_state.slot + 1, None);
                    }
                    let rewritten = row.per_peer[dst_state.slot]
                        .get_or_insert_with(|| {
                            export_rules(&self.cfg, b, src_client, dst_state, family).map(Arc::new)
                        })
                        .clone();
                    rewritten.and_then(|a| self.policy.export(&dst_state.cfg, prefix, &a))
                }
                _ => None,
            };
            let current = dest.out.get(dst_state.slot);
            let same = match (current, &wanted) {
                (None, None) => true,
                (Some(c), Some(w)) => Arc::ptr_eq(c, w) || c == w,
                _ => false,
            };
            if same {
                continue;
            }
            match &wanted {
                Some(w) => {
                    if dest.out.set(dst_state.slot, Arc::clone(w)) {
                        dst_state.adj_out_len += 1;
                    }
                }
                None => {
                    if dest.out.remove(dst_state.slot) {
                        dst_state.adj_out_len -= 1;
                    }
                }
            }
            changes.out.push(OutChange {
                peer: dst,
                prefix: *prefix,
                attrs: wanted,
            });
        }
    }

    /// The session went down for good (or a limit was breached): its routes leave the
    /// Loc-RIB and the peer is forgotten.
    pub fn peer_down(&mut self, peer: IpAddr) -> Result<Changes, RibError> {
        let state = self
            .peers
            .remove(&peer)
            .ok_or(RibError::UnknownPeer(peer))?;
        self.forget_adj_rib_out(state.slot);
        let mut changes = Changes::default();
        let mut memo = ExportMemo::default();
        let held: Vec<IpNet> = self
            .loc
            .iter()
            .filter(|(_, d)| d.path_of(peer).is_some())
            .map(|(p, _)| *p)
            .collect();
        for prefix in &held {
            if let Some(dest) = self.loc.get_mut(prefix) {
                dest.paths_mut().retain(|p| p.peer != peer);
            }
            self.recompute(prefix, &mut memo, &mut changes);
        }
        Ok(changes)
    }

    /// Graceful restart helper (RFC 4724 §4.2): the peer's session went down but it
    /// announced it would restart; its routes stay in use, marked stale, until it sends
    /// End-of-RIB or the caller's restart timer fires. Nothing is sent to it meanwhile.
    pub fn peer_restarting(&mut self, peer: IpAddr) -> Result<(), RibError> {
        let state = self
            .peers
            .get_mut(&peer)
            .ok_or(RibError::UnknownPeer(peer))?;
        state.up = false;
        let slot = state.slot;
        state.adj_out_len = 0;
        for d in self.loc.values_mut() {
            if let Some(p) = d.paths.iter_mut().find(|p| p.peer == peer) {
                p.stale = true;
            }
        }
        self.forget_adj_rib_out(slot);
        Ok(())
    }

    /// Drop a peer's Adj-RIB-Out when its session ends: a new session starts from
    /// nothing sent.
    fn forget_adj_rib_out(&mut self, slot: usize) {
        for d in self.loc.values_mut() {
            d.out.remove(slot);
        }
    }

    /// End-of-RIB for `family` from `peer`: routes it did not re-announce are removed.
    pub fn end_of_rib(&mut self, peer: IpAddr, family: Family) -> Result<Changes, RibError> {
        self.sweep_stale(peer, Some(family))
    }

    /// The restart timer fired: every stale route of `peer` goes; a peer that has not
    /// come back is forgotten.
    pub fn restart_timer_expired(&mut self, peer: IpAddr) -> Result<Changes, RibError> {
        let changes = self.sweep_stale(peer, None)?;
        if self.peers.get(&peer).is_some_and(|p| !p.up) {
            self.peers.remove(&peer);
        }
        Ok(changes)
    }

    fn sweep_stale(&mut self, peer: IpAddr, family: Option<Family>) -> Result<Changes, RibError> {
        if !self.peers.contains_key(&peer) {
            return Err(RibError::UnknownPeer(peer));
        }
        let stale: Vec<IpNet> = self
            .loc
            .iter()
            .filter(|(p, d)| {
                family.is_none_or(|f| family_of(p) == f) && d.path_of(peer).is_some_and(|r| r.stale)
            })
            .map(|(p, _)| *p)
            .collect();
        let mut changes = Changes::default();
        let mut memo = ExportMemo::default();
        for prefix in stale {
            self.set_route(peer, prefix, None, &mut memo, &mut changes);
        }
        Ok(changes)
    }

    /// Originate `prefix` with `attrs` (LOCAL_PREF, ORIGIN, communities; the next hop
    /// is rewritten per peer to our address on that session). It is preferred over
    /// every learned route for the prefix and never reaches the FIB. Replaces an
    /// earlier origination of the same prefix.
    pub fn originate(&mut self, prefix: IpNet, attrs: impl Into<Arc<Attrs>>) -> Changes {
        self.originate_all(&[prefix], &attrs.into())
    }

    /// [`Rib::originate`] for many prefixes with the same attributes: each peer gets
    /// one rewritten copy for all of them, so they go out in shared UPDATEs.
    pub fn originate_all(&mut self, prefixes: &[IpNet], attrs: &Arc<Attrs>) -> Changes {
        let mut changes = Changes::default();
        let mut memo = ExportMemo::default();
        for prefix in prefixes {
            let prefix = prefix.trunc();
            let path = Path {
                peer: LOCAL_PEER,
                ebgp: false,
                peer_router_id: self.cfg.router_id,
                attrs: Arc::clone(attrs),
                stale: false,
            };
            let dest = self.loc.entry(prefix).or_default();
            match dest.paths_mut().iter_mut().find(|p| p.is_local()) {
                Some(p) => *p = path,
                None => dest.paths_mut().push(path),
            }
            self.recompute(&prefix, &mut memo, &mut changes);
        }
        changes
    }

    /// Stop originating `prefix`; a learned route for it, if any, takes over.
    pub fn withdraw_local(&mut self, prefix: IpNet) -> Changes {
        let prefix = prefix.trunc();
        let mut changes = Changes::default();
        let Some(dest) = self.loc.get_mut(&prefix) else {
            return changes;
        };
        let before = dest.paths.len();
        dest.paths_mut().retain(|p| !p.is_local());
        if dest.paths.len() != before {
            self.recompute(&prefix, &mut ExportMemo::default(), &mut changes);
        }
        changes
    }

    /// The prefixes we originate.
    pub fn originated(&self) -> Vec<IpNet> {
        self.loc
            .iter()
            .filter(|(_, d)| d.paths.iter().any(Path::is_local))
            .map(|(p, _)| *p)
            .collect()
    }

    /// Every destination: its candidate paths (the best first) and its FIB next hops.
    pub fn destinations(&self) -> impl Iterator<Item = (&IpNet, &[Path], &[NextHop])> {
        self.loc
            .iter()
            .map(|(p, d)| (p, d.paths.as_slice(), d.fib_hops()))
    }

    /// The candidate paths for `prefix`, the best first.
    pub fn paths(&self, prefix: &IpNet) -> &[Path] {
        self.loc.get(prefix).map_or(&[], |d| d.paths.as_slice())
    }

    /// How many of `peer`'s routes are the Loc-RIB's best path (BIRD's "preferred").
    pub fn best_len(&self, peer: IpAddr) -> usize {
        self.loc
            .values()
            .filter(|d| d.paths.first().is_some_and(|p| p.peer == peer))
            .count()
    }

    /// `peer`'s Adj-RIB-Out for `family`: what to send again on a ROUTE-REFRESH.
    pub fn adj_rib_out_routes(&self, peer: IpAddr, family: Family) -> Vec<(IpNet, Arc<Attrs>)> {
        let Some(slot) = self.peers.get(&peer).map(|p| p.slot) else {
            return Vec::new();
        };
        self.loc
            .iter()
            .filter(|(p, _)| family_of(p) == family)
            .filter_map(|(p, d)| d.out.get(slot).map(|a| (*p, Arc::clone(a))))
            .collect()
    }

    /// Whether `peer` is known, up or restarting.
    pub fn has_peer(&self, peer: IpAddr) -> bool {
        self.peers.contains_key(&peer)
    }

    /// The Loc-RIB best path for `prefix`.
    pub fn best(&self, prefix: &IpNet) -> Option<&Path> {
        self.loc.get(prefix).and_then(|d| d.paths.first())
    }

    /// The next hops the FIB has for `prefix` (ECMP, best first).
    pub fn fib_next_hops(&self, prefix: &IpNet) -> &[NextHop] {
        self.loc.get(prefix).map_or(&[], Dest::fib_hops)
    }

    /// How many destinations the Loc-RIB holds.
    pub fn loc_rib_len(&self) -> usize {
        self.loc.len()
    }

    /// `peer`'s route for `prefix` after import policy, and whether it is stale.
    pub fn adj_rib_in(&self, peer: IpAddr, prefix: &IpNet) -> Option<(&Arc<Attrs>, bool)> {
        self.peers.get(&peer)?;
        let r = self.loc.get(prefix)?.path_of(peer)?;
        Some((&r.attrs, r.stale))
    }

    pub fn adj_rib_in_len(&self, peer: IpAddr) -> usize {
        self.peers.get(&peer).map_or(0, |p| p.adj_in_len)
    }

    /// What was last sent to `peer` for `prefix`.
    pub fn adj_rib_out(&self, peer: IpAddr, prefix: &IpNet) -> Option<&Arc<Attrs>> {
        let slot = self.peers.get(&peer)?.slot;
        let dest = self.loc.get(prefix)?;
        dest.out.get(slot)
    }

    pub fn adj_rib_out_len(&self, peer: IpAddr) -> usize {
        self.peers.get(&peer).map_or(0, |p| p.adj_out_len)
    }
}

/// What `dst` is told about a best path, before export policy: split horizon and route
/// reflection (RFC 4456 §6, §8), eBGP rewrites (RFC 4271 §5.1).
fn export_rules(
    cfg: &RibConfig,
    best: &Path,
    src_client: bool,
    dst: &PeerState,
    family: Family,
) -> Option<Attrs> {
    if best.peer == dst.cfg.address || !dst.cfg.families.contains(&family) {
        return None;
    }
    if dst.ebgp {
        // The peer would drop it as a loop (RFC 4271 §9.1.2); don't send it.
        if best.attrs.as_path.contains(dst.cfg.asn) {
            return None;
        }
        let next_hop = next_hop_self(&dst.cfg, family)?;
        let mut a = Attrs::clone(&best.attrs);
        a.prepend_as(cfg.local_asn);
        a.next_hop = next_hop;
        a.local_pref = None;
        // MED is not passed on to another AS (RFC 4271 §5.1.4); RR attributes are
        // non-transitive and stay within the AS (RFC 4456 §8).
        a.med = None;
        a.originator_id = None;
        a.cluster_list.clear();
        Some(a)
    } else if best.is_local() {
        // Next hop self towards internal peers: our address on that session.
        let next_hop = next_hop_self(&dst.cfg, family)?;
        let mut a = Attrs::clone(&best.attrs);
        a.next_hop = next_hop;
        a.local_pref = Some(best.attrs.effective_local_pref());
        Some(a)
    } else if best.ebgp {
        if !next_hop_fits(&best.attrs.next_hop, &dst.cfg, family) {
            return None;
        }
        let mut a = Attrs::clone(&best.attrs);
        a.local_pref = Some(best.attrs.effective_local_pref());
        Some(a)
    } else {
        // iBGP to iBGP: only a reflector passes it on, from a client to everyone, from
        // a non-client to clients only.
        if !src_client && !dst.cfg.rr_client {
            return None;
        }
        // Reflected unchanged (RFC 4456 §10): a next hop the client cannot be sent
        // (IPv4 via IPv6 without RFC 8950) means no route for it, not a rewritten one.
        if !next_hop_fits(&best.attrs.next_hop, &dst.cfg, family) {
            return None;
        }
        let mut a = Attrs::clone(&best.attrs);
        a.originator_id.get_or_insert(best.peer_router_id);
        a.cluster_list
            .insert(0, cfg.cluster_id.unwrap_or(cfg.router_id));
        Some(a)
    }
}

/// Our next hop towards `dst` for `family`: our address of that family on the
/// session; for IPv4 without one, our IPv6 address where the session negotiated RFC
/// 8950. `None`: the family cannot be sent to it with us as next hop.
fn next_hop_self(dst: &PeerConfig, family: Family) -> Option<NextHop> {
    let v6 = |global| NextHop::V6 {
        global,
        link_local: None,
    };
    match family {
        Family::Ipv4Unicast => match (dst.local_v4, dst.local_v6) {
            (Some(a), _) => Some(NextHop::V4(a)),
            (None, Some(global)) if dst.ipv4_via_ipv6 => Some(v6(global)),
            _ => None,
        },
        Family::Ipv6Unicast => dst.local_v6.map(v6),
    }
}

/// Whether a route of `family` with `next_hop` may be sent to `dst` as it is: an IPv4
/// route with an IPv6 next hop only over a session that negotiated RFC 8950.
fn next_hop_fits(next_hop: &NextHop, dst: &PeerConfig, family: Family) -> bool {
    !(family == Family::Ipv4Unicast && matches!(next_hop, NextHop::V6 { .. })) || dst.ipv4_via_ipv6
}

#[cfg(test)]
mod local_tests;
