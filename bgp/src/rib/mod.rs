//! The routing information bases (RFC 4271 §3.2) as pure logic: per-peer Adj-RIB-In
//! after import policy, the Loc-RIB with the §9.1 decision process and ECMP, per-peer
//! Adj-RIB-Out with export policy, route reflection (RFC 4456) and the graceful-restart
//! helper (RFC 4724 §4.2). No I/O: the session driver feeds it UPDATEs and session
//! events and sends what comes out; the FIB sync installs the best-path changes.
//!
//! Every mutating call returns [`Changes`]: the Loc-RIB best paths that changed (for the
//! FIB) and the routes to announce or withdraw per peer. Nothing else has to be diffed.

mod attrs;
mod decision;
mod export;
mod intern;
mod policy;
mod prefix_map;
mod route;
mod short;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::codec::{Family, NextHop, Notification, codes};

pub use attrs::{Attrs, DEFAULT_LOCAL_PREF, RouteUpdate};
pub use decision::{LOCAL_PEER, Path};
pub use policy::{AcceptAll, Policy};

use export::ExportCache;
use intern::Interner;
use prefix_map::PrefixMap;
use route::{Route, Source};
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
    /// Small and dense, reused once the peer is gone: indexes the export cache.
    slot: usize,
    ebgp: bool,
    /// False while a restarting peer's routes are kept (graceful restart helper).
    up: bool,
    /// The current session, as its routes carry it; routes with an earlier one are
    /// stale.
    source: Arc<Source>,
    /// How many routes its Adj-RIB-In holds. The routes themselves are its paths in the
    /// Loc-RIB's destinations (after import policy): a map per peer repeated every
    /// prefix and pointer once more.
    adj_in_len: usize,
    /// How many prefixes it was sent (the Adj-RIB-Out itself is derived, see
    /// [`export`]).
    adj_out_len: usize,
}

/// A destination's candidate paths, the best first (after every call).
type Dest = Short<Route>;

/// What a destination had given the FIB and the peers before a change, to send only
/// the difference.
struct Before {
    best: Option<Route>,
    fib: Vec<NextHop>,
}

pub struct Rib {
    cfg: RibConfig,
    policy: Box<dyn Policy>,
    peers: HashMap<IpAddr, PeerState>,
    loc: PrefixMap<Dest>,
    exports: ExportCache,
    attrs: Interner,
    /// The source of the routes we originate.
    local: Arc<Source>,
}

fn family_of(p: &IpNet) -> Family {
    match p {
        IpNet::V4(_) => Family::Ipv4Unicast,
        IpNet::V6(_) => Family::Ipv6Unicast,
    }
}

fn path_of(dest: &Dest, peer: IpAddr) -> Option<&Route> {
    dest.iter().find(|r| r.peer() == peer)
}

/// The FIB next hops of settled `paths` (the best first): the best path's next hop, or
/// with ECMP the distinct next hops of the best `multipath` candidates; none when the
/// best is ours.
fn fib_of(paths: &[Route], multipath: usize) -> Vec<NextHop> {
    let Some(first) = paths.first() else {
        return Vec::new();
    };
    if first.is_local() {
        return Vec::new();
    }
    if multipath <= 1 || paths.len() == 1 {
        return vec![first.attrs.next_hop];
    }
    let mut fib = Vec::with_capacity(paths.len().min(multipath));
    for i in decision::rank(paths).into_iter().take(multipath) {
        let nh = paths[i].attrs.next_hop;
        if !fib.contains(&nh) {
            fib.push(nh);
        }
    }
    fib
}

/// The parts of the RIB that bring Adj-RIB-Outs in line with a best path, borrowed
/// apart from the Loc-RIB.
struct Exporter<'a> {
    cfg: &'a RibConfig,
    policy: &'a dyn Policy,
    peers: &'a mut HashMap<IpAddr, PeerState>,
    exports: &'a mut ExportCache,
}

impl Exporter<'_> {
    /// Tell every up peer (or only `only`, which was sent nothing yet) what changed
    /// for `prefix` now that its best path went from `old` to `new`.
    fn sync(
        &mut self,
        prefix: &IpNet,
        old: Option<&Route>,
        new: Option<&Route>,
        only: Option<IpAddr>,
        changes: &mut Changes,
    ) {
        let family = family_of(prefix);
        for (&dst, dst_state) in self.peers.iter_mut() {
            if !dst_state.up || only.is_some_and(|o| o != dst) {
                continue;
            }
            let slot = dst_state.slot;
            let sent = match only {
                Some(_) => None,
                None => self.exports.sent(prefix, old, family, slot).cloned(),
            };
            let wanted = match new {
                Some(b) => {
                    let rewritten = self.exports.rewritten(b, family, slot, || {
                        export_rules(
                            self.cfg,
                            &b.to_path(false),
                            b.source.rr_client,
                            dst_state,
                            family,
                        )
                    });
                    let wanted = rewritten
                        .as_ref()
                        .and_then(|a| self.policy.export(&dst_state.cfg, prefix, a));
                    self.exports
                        .record(prefix, slot, rewritten.as_ref(), wanted.as_ref());
                    wanted
                }
                None => {
                    self.exports.record(prefix, slot, None, None);
                    None
                }
            };
            let same = match (&sent, &wanted) {
                (None, None) => true,
                (Some(c), Some(w)) => Arc::ptr_eq(c, w) || c == w,
                _ => false,
            };
            if same {
                continue;
            }
            match (&sent, &wanted) {
                (None, Some(_)) => dst_state.adj_out_len += 1,
                (Some(_), None) => dst_state.adj_out_len -= 1,
                _ => {}
            }
            changes.out.push(OutChange {
                peer: dst,
                prefix: *prefix,
                attrs: wanted,
            });
        }
    }
}

impl Rib {
    pub fn new(cfg: RibConfig, policy: Box<dyn Policy>) -> Rib {
        let local = Arc::new(Source {
            addr: LOCAL_PEER,
            ebgp: false,
            router_id: cfg.router_id,
            rr_client: false,
        });
        Rib {
            cfg,
            policy,
            peers: HashMap::new(),
            loc: PrefixMap::default(),
            exports: ExportCache::default(),
            attrs: Interner::default(),
            local,
        }
    }

    fn cluster_id(&self) -> Ipv4Addr {
        self.cfg.cluster_id.unwrap_or(self.cfg.router_id)
    }

    fn exporter(&mut self) -> (Exporter<'_>, &mut PrefixMap<Dest>) {
        (
            Exporter {
                cfg: &self.cfg,
                policy: self.policy.as_ref(),
                peers: &mut self.peers,
                exports: &mut self.exports,
            },
            &mut self.loc,
        )
    }

    /// Whether `r` is kept only for a restarting peer: its session is not the peer's
    /// current one, or the peer is not up.
    fn is_stale(&self, r: &Route) -> bool {
        self.peers
            .get(&r.peer())
            .is_some_and(|p| !p.up || !Arc::ptr_eq(&p.source, &r.source))
    }

    fn path(&self, r: &Route) -> Path {
        r.to_path(self.is_stale(r))
    }

    /// A session reached Established: the peer gets the whole Loc-RIB its export rules
    /// allow. A peer that was restarting keeps its stale routes until End-of-RIB.
    pub fn peer_up(&mut self, cfg: PeerConfig) -> Result<Changes, RibError> {
        let addr = cfg.address;
        let ebgp = cfg.asn != self.cfg.local_asn;
        let source = Arc::new(Source {
            addr,
            ebgp,
            router_id: cfg.router_id,
            rr_client: cfg.rr_client,
        });
        let slot = match self.peers.get_mut(&addr) {
            Some(p) if p.up => return Err(RibError::AlreadyUp(addr)),
            Some(p) => {
                p.cfg = cfg;
                p.ebgp = ebgp;
                p.up = true;
                p.source = source;
                p.adj_out_len = 0;
                p.slot
            }
            None => {
                // The smallest slot no peer holds.
                let mut used: Vec<usize> = self.peers.values().map(|p| p.slot).collect();
                used.sort_unstable();
                let slot = used
                    .iter()
                    .enumerate()
                    .find(|(i, s)| **s != i + 1)
                    .map_or(used.len() + 1, |(i, _)| i + 1);
                self.peers.insert(
                    addr,
                    PeerState {
                        cfg,
                        slot,
                        ebgp,
                        up: true,
                        source,
                        adj_in_len: 0,
                        adj_out_len: 0,
                    },
                );
                slot
            }
        };
        self.exports.forget_slot(slot);
        let mut changes = Changes::default();
        let (mut exporter, loc) = self.exporter();
        for (prefix, dest) in loc.iter() {
            exporter.sync(&prefix, None, dest.first(), Some(addr), &mut changes);
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
            let checked = self
                .import_checks(state, attrs)
                .map(|a| self.attrs.intern(a));
            for p in prefixes {
                let p = p.trunc();
                let a = checked.as_ref().and_then(|c| {
                    let a = self.policy.import(&state.cfg, &p, c)?;
                    Some(if Arc::ptr_eq(&a, c) {
                        a
                    } else {
                        self.attrs.intern(a)
                    })
                });
                decided.push((p, a));
            }
        }
        if let Some(limit) = state.cfg.max_prefixes {
            let mut count = state.adj_in_len;
            let mut seen: HashMap<IpNet, bool> = HashMap::new();
            // The limit holds for the UPDATE's outcome, not the steps on the way.
            let mut first_past: Option<Family> = None;
            for (p, a) in &decided {
                let held = || self.loc.get(p).is_some_and(|d| path_of(d, peer).is_some());
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
        for (prefix, attrs) in decided {
            self.set_route(peer, prefix, attrs, &mut changes);
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

    /// What `prefix` gives the FIB and the peers now.
    fn before(&self, prefix: &IpNet) -> Before {
        let paths = self.loc.get(prefix).map_or(&[][..], |d| d.as_slice());
        Before {
            best: paths.first().cloned(),
            fib: fib_of(paths, self.cfg.multipath),
        }
    }

    /// Put (or remove, `None`) `peer`'s route for `prefix` into its Adj-RIB-In and the
    /// Loc-RIB candidates, and recompute the destination.
    fn set_route(
        &mut self,
        peer: IpAddr,
        prefix: IpNet,
        attrs: Option<Arc<Attrs>>,
        changes: &mut Changes,
    ) {
        let Some(source) = self.peers.get(&peer).map(|p| Arc::clone(&p.source)) else {
            return;
        };
        let before = self.before(&prefix);
        let (added, removed) = match attrs {
            Some(attrs) => {
                let route = Route { attrs, source };
                let mut added = false;
                let dest = self.loc.get_or_insert_with(&prefix, || {
                    added = true;
                    Short::One(route.clone())
                });
                if !added {
                    match dest.iter_mut().find(|r| r.peer() == peer) {
                        Some(r) => *r = route,
                        None => {
                            dest.push(route);
                            added = true;
                        }
                    }
                }
                (added, false)
            }
            None => {
                let Some(dest) = self
                    .loc
                    .get_mut(&prefix)
                    .filter(|d| path_of(d, peer).is_some())
                else {
                    return;
                };
                dest.retain(|r| r.peer() != peer);
                (false, true)
            }
        };
        if let Some(state) = self.peers.get_mut(&peer) {
            if added {
                state.adj_in_len += 1;
            }
            if removed {
                state.adj_in_len -= 1;
            }
        }
        self.settle(&prefix, before, changes);
    }

    /// Run the decision process for `prefix` after its paths changed, and push what
    /// changed since `before`.
    fn settle(&mut self, prefix: &IpNet, before: Before, changes: &mut Changes) {
        let multipath = self.cfg.multipath;
        let (mut exporter, loc) = self.exporter();
        let Some(dest) = loc.get_mut(prefix) else {
            return;
        };
        // The best path first, so readers need not rank again.
        if dest.len() > 1
            && let Some(&best) = decision::rank(dest).first()
        {
            dest.swap(0, best);
        }
        let fib = fib_of(dest, multipath);
        if fib != before.fib {
            changes.fib.push(FibChange {
                prefix: *prefix,
                next_hops: fib,
            });
        }
        let best = dest.first();
        if !Route::same(before.best.as_ref(), best) {
            exporter.sync(prefix, before.best.as_ref(), best, None, changes);
        }
        loc.remove_if(prefix, |d| d.is_empty());
    }

    /// The session went down for good (or a limit was breached): its routes leave the
    /// Loc-RIB and the peer is forgotten.
    pub fn peer_down(&mut self, peer: IpAddr) -> Result<Changes, RibError> {
        let state = self
            .peers
            .get_mut(&peer)
            .ok_or(RibError::UnknownPeer(peer))?;
        // Nothing more is sent to it; its routes still export as they did until they
        // are withdrawn from the others.
        state.up = false;
        let slot = state.slot;
        self.exports.forget_slot(slot);
        let mut changes = Changes::default();
        let held: Vec<IpNet> = self
            .loc
            .iter()
            .filter(|(_, d)| path_of(d, peer).is_some())
            .map(|(p, _)| p)
            .collect();
        for prefix in &held {
            let before = self.before(prefix);
            if let Some(dest) = self.loc.get_mut(prefix) {
                dest.retain(|r| r.peer() != peer);
            }
            self.settle(prefix, before, &mut changes);
        }
        self.peers.remove(&peer);
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
        // Not up: its routes read as stale, and its next session starts from nothing
        // sent.
        state.up = false;
        state.adj_out_len = 0;
        let slot = state.slot;
        self.exports.forget_slot(slot);
        Ok(())
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
                family.is_none_or(|f| family_of(p) == f)
                    && path_of(d, peer).is_some_and(|r| self.is_stale(r))
            })
            .map(|(p, _)| p)
            .collect();
        let mut changes = Changes::default();
        for prefix in stale {
            self.set_route(peer, prefix, None, &mut changes);
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
        let attrs = self.attrs.intern(Arc::clone(attrs));
        for prefix in prefixes {
            let prefix = prefix.trunc();
            let route = Route {
                attrs: Arc::clone(&attrs),
                source: Arc::clone(&self.local),
            };
            let before = self.before(&prefix);
            let dest = self.loc.get_or_insert_with(&prefix, Short::default);
            match dest.iter_mut().find(|r| r.is_local()) {
                Some(r) => *r = route,
                None => dest.push(route),
            }
            self.settle(&prefix, before, &mut changes);
        }
        changes
    }

    /// Stop originating `prefix`; a learned route for it, if any, takes over.
    pub fn withdraw_local(&mut self, prefix: IpNet) -> Changes {
        let prefix = prefix.trunc();
        let mut changes = Changes::default();
        if !self
            .loc
            .get(&prefix)
            .is_some_and(|d| d.iter().any(Route::is_local))
        {
            return changes;
        }
        let before = self.before(&prefix);
        if let Some(dest) = self.loc.get_mut(&prefix) {
            dest.retain(|r| !r.is_local());
        }
        self.settle(&prefix, before, &mut changes);
        changes
    }

    /// The prefixes we originate.
    pub fn originated(&self) -> Vec<IpNet> {
        self.loc
            .iter()
            .filter(|(_, d)| d.iter().any(Route::is_local))
            .map(|(p, _)| p)
            .collect()
    }

    /// Every destination: its candidate paths (the best first) and its FIB next hops.
    pub fn destinations(&self) -> impl Iterator<Item = (IpNet, Vec<Path>, Vec<NextHop>)> + '_ {
        self.loc.iter().map(|(p, d)| {
            let paths = d.iter().map(|r| self.path(r)).collect();
            (p, paths, fib_of(d, self.cfg.multipath))
        })
    }

    /// The candidate paths for `prefix`, the best first.
    pub fn paths(&self, prefix: &IpNet) -> Vec<Path> {
        self.loc
            .get(prefix)
            .map_or_else(Vec::new, |d| d.iter().map(|r| self.path(r)).collect())
    }

    /// How many of `peer`'s routes are the Loc-RIB's best path (BIRD's "preferred").
    pub fn best_len(&self, peer: IpAddr) -> usize {
        self.loc
            .values()
            .filter(|d| d.first().is_some_and(|r| r.peer() == peer))
            .count()
    }

    /// `peer`'s Adj-RIB-Out for `family`: what to send again on a ROUTE-REFRESH.
    pub fn adj_rib_out_routes(&self, peer: IpAddr, family: Family) -> Vec<(IpNet, Arc<Attrs>)> {
        self.loc
            .iter_family(family)
            .filter_map(|(p, _)| self.adj_rib_out(peer, &p).map(|a| (p, Arc::clone(a))))
            .collect()
    }

    /// Whether `peer` is known, up or restarting.
    pub fn has_peer(&self, peer: IpAddr) -> bool {
        self.peers.contains_key(&peer)
    }

    /// The Loc-RIB best path for `prefix`.
    pub fn best(&self, prefix: &IpNet) -> Option<Path> {
        self.loc
            .get(prefix)
            .and_then(|d| d.first())
            .map(|r| self.path(r))
    }

    /// The next hops the FIB has for `prefix` (ECMP, best first).
    pub fn fib_next_hops(&self, prefix: &IpNet) -> Vec<NextHop> {
        self.loc
            .get(prefix)
            .map_or_else(Vec::new, |d| fib_of(d, self.cfg.multipath))
    }

    /// How many destinations the Loc-RIB holds.
    pub fn loc_rib_len(&self) -> usize {
        self.loc.len()
    }

    /// `peer`'s route for `prefix` after import policy, and whether it is stale.
    pub fn adj_rib_in(&self, peer: IpAddr, prefix: &IpNet) -> Option<(&Arc<Attrs>, bool)> {
        self.peers.get(&peer)?;
        let r = path_of(self.loc.get(prefix)?, peer)?;
        Some((&r.attrs, self.is_stale(r)))
    }

    pub fn adj_rib_in_len(&self, peer: IpAddr) -> usize {
        self.peers.get(&peer).map_or(0, |p| p.adj_in_len)
    }

    /// What was last sent to `peer` for `prefix`.
    pub fn adj_rib_out(&self, peer: IpAddr, prefix: &IpNet) -> Option<&Arc<Attrs>> {
        let state = self.peers.get(&peer).filter(|p| p.up)?;
        let best = self.loc.get(prefix).and_then(|d| d.first());
        self.exports
            .sent(prefix, best, family_of(prefix), state.slot)
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

#[cfg(test)]
mod derived_tests;
