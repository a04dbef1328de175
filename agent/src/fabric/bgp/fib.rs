//! FIB sync: the speaker's Loc-RIB best paths into the kernel's main table.
//!
//! Over 600 lines with its unit tests; FIB sync itself is about 430 lines: one state
//! machine (wanted, held back, installed) that splitting would scatter.
//!
//! Owns every unicast route with protocol [`RTPROT_STRAIT`] that has a gateway (or
//! several, as one ECMP route) — in bgp mode, and only there (docs/bgp.md
//! "Ownership"). Never blackholes (the fabric's reconcile keeps those for the own
//! blocks), never routes without a gateway (container host routes, attach's), never
//! another protocol's routes.
//!
//! [`FibTable`] is the pure core: what the RIB wants, what is installed, and the
//! kernel operations that close the gap. [`FibSync`] drives it against the kernel
//! through [`HostNet::change_gateway_routes`] — on the real kernel [`Netlink::batch`]:
//! requests packed back to back, up to a thousand per system call, so 100 000 routes
//! cost the kernel's work, not 100 000 round trips; in unit tests, the fake kernel.
//!
//! Restart: the table starts from the kernel's proto-83 gateway routes (adopted, never
//! flushed); the RIB's changes replace them in place; what the RIB has not asked for by
//! the time the speaker reports convergence is deleted then ([`FibSync::converged`]).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use strait_bgp::codec::NextHop;
use strait_bgp::rib::FibChange;
use tracing::{debug, warn};

use crate::hostnet::{GatewayChange, HostNet};
use crate::netlink::{GatewayRoute, Netlink, NetlinkError, RTPROT_STRAIT, ignore_not_found};

/// This node's prefixes, as FIB sync must treat them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalPrefixes {
    /// What it originates: its blocks and the host routes of addresses it borrowed.
    pub own: Vec<IpNet>,
    /// Host routes of addresses in its blocks that other nodes borrowed.
    pub lent: Vec<IpNet>,
}

/// Next hops per ECMP route (docs/bgp.md: up to 8, as the speaker's multipath).
pub const MAX_NEXT_HOPS: usize = 8;

/// One kernel change of FIB sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FibOp {
    Replace(GatewayRoute),
    Delete(IpNet),
}

/// A next hop the kernel cannot be given as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "{prefix}: next hop {next_hop} is link-local only; strait installs global next hops \
         (the interface of a link-local one is not known)"
    )]
    LinkLocalOnly { prefix: IpNet, next_hop: IpAddr },
    #[error("{prefix}: next hop {next_hop} is of the other address family")]
    OtherFamily { prefix: IpNet, next_hop: IpAddr },
}

/// The kernel gateway of a BGP next hop for `prefix`: the IPv4 address, or the global
/// IPv6 address (RFC 2545; a link-local one would need its interface). An IPv4 prefix
/// may have an IPv6 gateway (RFC 8950, installed `via inet6`); an IPv6 prefix via an
/// IPv4 gateway is refused.
pub fn gateway_of(prefix: IpNet, next_hop: &NextHop) -> Result<IpAddr, Refused> {
    let ip = match next_hop {
        NextHop::V4(v4) => IpAddr::V4(*v4),
        NextHop::V6 { global, .. } => {
            if global.is_unicast_link_local() {
                return Err(Refused::LinkLocalOnly {
                    prefix,
                    next_hop: IpAddr::V6(*global),
                });
            }
            IpAddr::V6(*global)
        }
    };
    if ip.is_ipv4() && prefix.addr().is_ipv6() {
        return Err(Refused::OtherFamily {
            prefix,
            next_hop: ip,
        });
    }
    Ok(ip)
}

/// What the RIB wants and what the kernel has, by prefix. Pure.
#[derive(Debug, Default)]
pub struct FibTable {
    /// The RIB's next hops per prefix (only prefixes it wants installed).
    wanted: HashMap<IpNet, Vec<IpAddr>>,
    /// What the kernel is known to hold: adopted at start, then kept by
    /// [`FibTable::applied`].
    installed: HashMap<IpNet, Vec<IpAddr>>,
    /// This node's own blocks: blackholed by the reconcile, never replaced by a route
    /// learned back from a peer.
    local: HashSet<IpNet>,
    /// Host routes inside `local` that are not this node's: addresses of its blocks
    /// that other nodes borrowed. Their holders' routes are installed.
    lent: HashSet<IpNet>,
    /// What the RIB wants for prefixes that are local now: not installed, but kept so
    /// that one that stops being local (an address lent out after its route arrived)
    /// is installed without waiting for the RIB to say it again.
    held_back: HashMap<IpNet, Vec<IpAddr>>,
    converged: bool,
}

fn within(blocks: &HashSet<IpNet>, prefix: &IpNet) -> bool {
    blocks.contains(prefix) || blocks.iter().any(|b| b.contains(prefix))
}

impl FibTable {
    /// Takes the kernel's proto-83 gateway routes as installed (a restart adopts them).
    pub fn adopt(&mut self, kernel: Vec<GatewayRoute>) {
        self.installed = kernel
            .into_iter()
            .map(|r| (r.destination, r.gateways))
            .collect();
    }

    /// Sets this node's own prefixes and the host routes inside them that other nodes
    /// hold (`lent`); returns deletions of gateway routes found on own prefixes (a
    /// route to an own block would shadow its blackhole) and the installs of held-back
    /// routes that are no longer local.
    pub fn set_local(
        &mut self,
        local: impl IntoIterator<Item = IpNet>,
        lent: impl IntoIterator<Item = IpNet>,
    ) -> Vec<FibOp> {
        self.local = local.into_iter().collect();
        self.lent = lent.into_iter().collect();
        // A block that became this node's is not wanted from the RIB any more, also
        // not by a later repair; held back in case it is lent out.
        let now_local: Vec<IpNet> = self
            .wanted
            .keys()
            .filter(|p| self.is_local(p))
            .copied()
            .collect();
        for p in now_local {
            if let Some(g) = self.wanted.remove(&p) {
                self.held_back.insert(p, g);
            }
        }
        let released: Vec<IpNet> = self
            .held_back
            .keys()
            .filter(|p| !self.is_local(p))
            .copied()
            .collect();
        let mut ops = Vec::new();
        for p in released {
            if let Some(g) = self.held_back.remove(&p) {
                if self.installed.get(&p) != Some(&g) {
                    ops.push(FibOp::Replace(GatewayRoute::new(
                        p,
                        g.clone(),
                        RTPROT_STRAIT,
                    )));
                }
                self.wanted.insert(p, g);
            }
        }
        ops.extend(
            self.installed
                .keys()
                .filter(|p| self.is_local(p))
                .map(|p| FibOp::Delete(*p)),
        );
        ops.sort_by_key(op_prefix);
        ops
    }

    /// Applies one batch of RIB changes (a later change of a prefix supersedes an
    /// earlier one); returns the kernel operations, one per prefix, and the next hops
    /// that cannot be installed. A prefix whose next hops are all refused is removed.
    pub fn update(&mut self, changes: Vec<FibChange>) -> (Vec<FibOp>, Vec<Refused>) {
        let mut last: HashMap<IpNet, Vec<NextHop>> = HashMap::with_capacity(changes.len());
        let mut order = Vec::with_capacity(changes.len());
        for change in changes {
            if last.insert(change.prefix, change.next_hops).is_none() {
                order.push(change.prefix);
            }
        }
        let mut refused = Vec::new();
        let mut ops = Vec::new();
        for prefix in order {
            let next_hops = last.remove(&prefix).unwrap_or_default();
            let mut gateways: Vec<IpAddr> = next_hops
                .iter()
                .filter_map(|nh| gateway_of(prefix, nh).map_err(|e| refused.push(e)).ok())
                .collect();
            gateways.sort_unstable();
            gateways.dedup();
            gateways.truncate(MAX_NEXT_HOPS);
            let local = self.is_local(&prefix);
            if gateways.is_empty() || local {
                self.wanted.remove(&prefix);
                if self.installed.contains_key(&prefix) && !local {
                    ops.push(FibOp::Delete(prefix));
                }
                if local && !gateways.is_empty() {
                    self.held_back.insert(prefix, gateways);
                } else {
                    self.held_back.remove(&prefix);
                }
                continue;
            }
            self.held_back.remove(&prefix);
            if self.installed.get(&prefix) != Some(&gateways) {
                ops.push(FibOp::Replace(GatewayRoute::new(
                    prefix,
                    gateways.clone(),
                    RTPROT_STRAIT,
                )));
            }
            self.wanted.insert(prefix, gateways);
        }
        (ops, refused)
    }

    /// Whether `prefix` is one of this node's blocks or inside one. A peer's route
    /// there (a /32 equal to a local container's address, say) would take traffic for
    /// this node's containers away from their veths: never installed, unless it is
    /// the host route of an address another node borrowed (`lent`). A shorter prefix
    /// covering a block (an aggregate from a ToR) is fine: longest match keeps the
    /// block's own routes first.
    fn is_local(&self, prefix: &IpNet) -> bool {
        within(&self.local, prefix) && !self.lent.contains(prefix)
    }

    /// Marks the initial exchange over; returns the deletions of every installed route
    /// the RIB has not asked for.
    pub fn converge(&mut self) -> Vec<FibOp> {
        self.converged = true;
        self.stale()
    }

    fn stale(&self) -> Vec<FibOp> {
        let mut ops: Vec<FibOp> = self
            .installed
            .keys()
            .filter(|p| !self.wanted.contains_key(p))
            .map(|p| FibOp::Delete(*p))
            .collect();
        ops.sort_by_key(op_prefix);
        ops
    }

    /// Compares with the kernel's routes as read now (someone may have deleted or
    /// changed one): what to replace, and once converged what to delete.
    pub fn resync(&mut self, kernel: Vec<GatewayRoute>) -> Vec<FibOp> {
        self.adopt(kernel);
        let mut ops: Vec<FibOp> = self
            .wanted
            .iter()
            .filter(|(p, g)| self.installed.get(p) != Some(g))
            .map(|(p, g)| FibOp::Replace(GatewayRoute::new(*p, g.clone(), RTPROT_STRAIT)))
            .collect();
        ops.extend(
            self.local
                .iter()
                .filter(|p| self.installed.contains_key(p))
                .map(|p| FibOp::Delete(*p)),
        );
        if self.converged {
            ops.extend(self.stale());
        }
        ops.sort_by_key(op_prefix);
        ops.dedup();
        ops
    }

    /// Records the outcome of `op`: the kernel now has it (or, failed, kept what it had).
    pub fn applied(&mut self, op: &FibOp, ok: bool) {
        if !ok {
            return;
        }
        match op {
            FibOp::Replace(r) => {
                self.installed.insert(r.destination, r.gateways.clone());
            }
            FibOp::Delete(p) => {
                self.installed.remove(p);
            }
        }
    }

    pub fn is_converged(&self) -> bool {
        self.converged
    }

    /// Prefixes the RIB wants installed.
    pub fn wanted_len(&self) -> usize {
        self.wanted.len()
    }

    /// Routes the kernel holds, as far as FIB sync knows.
    pub fn installed_len(&self) -> usize {
        self.installed.len()
    }

    /// Whether the kernel holds `prefix` via `gateway`, as far as FIB sync knows: what
    /// `netctl bgp rib` flags `F`. A route FIB sync refused (an own block learned from
    /// a peer, a link-local next hop) is not.
    pub fn installed_via(&self, prefix: &IpNet, gateway: IpAddr) -> bool {
        self.installed
            .get(prefix)
            .is_some_and(|g| g.contains(&gateway))
    }
}

fn op_prefix(op: &FibOp) -> IpNet {
    match op {
        FibOp::Replace(r) => r.destination,
        FibOp::Delete(p) => *p,
    }
}

/// The outcome of applying one batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub replaced: usize,
    pub deleted: usize,
    /// One line per failed operation (the route and the kernel's error).
    pub failed: Vec<String>,
}

/// FIB sync bound to one namespace's main table (of the host kernel `K`: the real one,
/// or the fake in unit tests).
pub struct FibSync<K: HostNet = Netlink> {
    netlink: K,
    table: FibTable,
}

impl<K: HostNet> FibSync<K> {
    /// Adopts the kernel's proto-83 gateway routes; changes nothing in the kernel.
    pub async fn start(netlink: K) -> Result<Self, NetlinkError> {
        let mut table = FibTable::default();
        table.adopt(netlink.gateway_routes(RTPROT_STRAIT).await?);
        debug!(
            adopted = table.installed_len(),
            "FIB sync adopted the kernel's routes"
        );
        Ok(Self { netlink, table })
    }

    pub fn table(&self) -> &FibTable {
        &self.table
    }

    /// This node's own prefixes (never installed; a gateway route on one is deleted)
    /// and the addresses of its blocks other nodes borrowed (their routes are).
    pub async fn set_local(&mut self, local: &LocalPrefixes) -> Applied {
        let ops = self
            .table
            .set_local(local.own.iter().copied(), local.lent.iter().copied());
        self.apply(ops).await
    }

    /// Installs one batch of the RIB's changes.
    pub async fn changes(&mut self, changes: Vec<FibChange>) -> Applied {
        let (ops, refused) = self.table.update(changes);
        let mut applied = self.apply(ops).await;
        applied
            .failed
            .extend(refused.iter().map(ToString::to_string));
        applied
    }

    /// The speaker converged: deletes what was adopted and not confirmed (also what
    /// the RIB stopped wanting while a delete failed).
    pub async fn converged(&mut self) -> Applied {
        let ops = self.table.converge();
        self.apply(ops).await
    }

    /// Same as [`FibSync::converged`], on request (e.g. the graceful-restart time ran
    /// out without the speaker reporting convergence).
    pub async fn purge_stale(&mut self) -> Applied {
        self.converged().await
    }

    /// Reads the kernel and repairs it: routes missing or changed behind FIB sync's
    /// back are replaced; after convergence stale ones are deleted.
    pub async fn resync(&mut self) -> Result<Applied, NetlinkError> {
        let kernel = self.netlink.gateway_routes(RTPROT_STRAIT).await?;
        let ops = self.table.resync(kernel);
        Ok(self.apply(ops).await)
    }

    async fn apply(&mut self, ops: Vec<FibOp>) -> Applied {
        let nl = &self.netlink;
        // A delete names the installed route with its gateways (see
        // `Netlink::del_gateway_route`); a prefix not installed has nothing to delete.
        let requests: Vec<(FibOp, GatewayRoute)> = ops
            .into_iter()
            .filter_map(|op| {
                let route = match &op {
                    FibOp::Replace(r) => r.clone(),
                    FibOp::Delete(p) => {
                        GatewayRoute::new(*p, self.table.installed.get(p)?.clone(), RTPROT_STRAIT)
                    }
                };
                Some((op, route))
            })
            .collect();
        let changes = requests
            .iter()
            .map(|(op, route)| match op {
                FibOp::Replace(_) => GatewayChange::Replace(route.clone()),
                FibOp::Delete(_) => GatewayChange::Delete(route.clone()),
            })
            .collect();
        let outcomes = match nl.change_gateway_routes(changes).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                let first = e.to_string();
                warn!(error = %first, "FIB sync cannot open a netlink socket");
                return Applied {
                    failed: vec![first; requests.len()],
                    ..Applied::default()
                };
            }
        };
        let results = requests.into_iter().zip(outcomes).map(|((op, _), result)| {
            let result = match op {
                // Already gone is what a delete wants.
                FibOp::Delete(_) => ignore_not_found(result),
                FibOp::Replace(_) => result,
            };
            (op, result)
        });
        let mut applied = Applied::default();
        for (op, result) in results {
            self.table.applied(&op, result.is_ok());
            match (result, &op) {
                (Ok(()), FibOp::Replace(_)) => applied.replaced += 1,
                (Ok(()), FibOp::Delete(_)) => applied.deleted += 1,
                (Err(e), _) => applied.failed.push(e.to_string()),
            }
        }
        if let Some(first) = applied.failed.first() {
            warn!(failed = applied.failed.len(), first = %first, "FIB sync: kernel changes failed");
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn v4(s: &str) -> NextHop {
        NextHop::V4(s.parse().expect("ip"))
    }

    fn change(prefix: &str, next_hops: Vec<NextHop>) -> FibChange {
        FibChange {
            prefix: net(prefix),
            next_hops,
        }
    }

    fn route(prefix: &str, gateways: &[&str]) -> GatewayRoute {
        GatewayRoute::new(
            net(prefix),
            gateways.iter().map(|g| g.parse().expect("ip")).collect(),
            RTPROT_STRAIT,
        )
    }

    fn apply_all(table: &mut FibTable, ops: &[FibOp]) {
        for op in ops {
            table.applied(op, true);
        }
    }

    #[test]
    fn the_last_change_of_a_prefix_wins_and_ecmp_is_one_route() {
        let mut t = FibTable::default();
        let (ops, refused) = t.update(vec![
            change("10.244.1.0/26", vec![v4("10.0.0.1")]),
            change("10.244.1.0/26", vec![v4("10.0.0.3"), v4("10.0.0.2")]),
        ]);
        assert!(refused.is_empty());
        assert_eq!(
            ops,
            [FibOp::Replace(route(
                "10.244.1.0/26",
                &["10.0.0.2", "10.0.0.3"]
            ))]
        );
        apply_all(&mut t, &ops);
        // The same next hops again (another order) change nothing.
        let (ops, _) = t.update(vec![change(
            "10.244.1.0/26",
            vec![v4("10.0.0.2"), v4("10.0.0.3")],
        )]);
        assert!(ops.is_empty());
        let (ops, _) = t.update(vec![change("10.244.1.0/26", vec![])]);
        assert_eq!(ops, [FibOp::Delete(net("10.244.1.0/26"))]);
    }

    #[test]
    fn ipv6_uses_the_global_next_hop_and_refuses_link_local_only() {
        let mut t = FibTable::default();
        let global: Ipv6Addr = "fd99::2".parse().expect("ip");
        let (ops, refused) = t.update(vec![
            change(
                "fd00:244:1::/122",
                vec![NextHop::V6 {
                    global,
                    link_local: Some("fe80::2".parse().expect("ip")),
                }],
            ),
            change(
                "fd00:244:2::/122",
                vec![NextHop::V6 {
                    global: "fe80::3".parse().expect("ip"),
                    link_local: None,
                }],
            ),
            change("fd00:244:3::/122", vec![v4("10.0.0.3")]),
        ]);
        assert_eq!(
            ops,
            [FibOp::Replace(route("fd00:244:1::/122", &["fd99::2"]))]
        );
        assert_eq!(refused.len(), 2);
        assert!(
            refused[0].to_string().contains("link-local"),
            "{}",
            refused[0]
        );
        assert!(matches!(refused[1], Refused::OtherFamily { .. }));
    }

    #[test]
    fn ipv4_routes_via_ipv6_next_hops_are_installed() {
        let mut t = FibTable::default();
        let v6 = |g: &str, ll: Option<&str>| NextHop::V6 {
            global: g.parse().expect("ip"),
            link_local: ll.map(|l| l.parse().expect("ip")),
        };
        let (ops, refused) = t.update(vec![
            change("10.244.1.0/26", vec![v6("fd99::2", Some("fe80::2"))]),
            change(
                "10.244.2.0/26",
                vec![v6("fd99::3", None), v4("10.0.0.3"), v6("fe80::4", None)],
            ),
        ]);
        assert_eq!(
            ops,
            [
                FibOp::Replace(route("10.244.1.0/26", &["fd99::2"])),
                FibOp::Replace(route("10.244.2.0/26", &["10.0.0.3", "fd99::3"])),
            ]
        );
        assert_eq!(
            refused.len(),
            1,
            "only the link-local-only one: {refused:?}"
        );
    }

    #[test]
    fn restart_adopts_replaces_in_place_and_purges_only_at_convergence() {
        let mut t = FibTable::default();
        t.adopt(vec![
            route("10.244.1.0/26", &["10.0.0.1"]),
            route("10.244.2.0/26", &["10.0.0.2"]),
            route("10.244.3.0/26", &["10.0.0.3"]),
        ]);
        let (ops, _) = t.update(vec![
            change("10.244.1.0/26", vec![v4("10.0.0.1")]),
            change("10.244.2.0/26", vec![v4("10.0.0.22")]),
        ]);
        assert_eq!(
            ops,
            [FibOp::Replace(route("10.244.2.0/26", &["10.0.0.22"]))],
            "an adopted route the RIB confirms is not touched"
        );
        apply_all(&mut t, &ops);
        let stale = t.converge();
        assert_eq!(stale, [FibOp::Delete(net("10.244.3.0/26"))]);
        apply_all(&mut t, &stale);
        assert_eq!(t.installed_len(), 2);
        assert!(t.converge().is_empty());
    }

    #[test]
    fn own_blocks_are_never_installed() {
        let mut t = FibTable::default();
        t.adopt(vec![route("10.244.9.0/26", &["10.0.0.2"])]);
        let ops = t.set_local([net("10.244.9.0/26")], []);
        assert_eq!(ops, [FibOp::Delete(net("10.244.9.0/26"))]);
        apply_all(&mut t, &ops);
        let (ops, _) = t.update(vec![change("10.244.9.0/26", vec![v4("10.0.0.2")])]);
        assert!(ops.is_empty(), "{ops:?}");
        assert_eq!(t.wanted_len(), 0);
        // A learned block that becomes this node's: deleted, and a repair does not put
        // it back.
        let (ops, _) = t.update(vec![change("10.244.8.0/26", vec![v4("10.0.0.3")])]);
        apply_all(&mut t, &ops);
        let ops = t.set_local([net("10.244.8.0/26"), net("10.244.9.0/26")], []);
        assert_eq!(ops, [FibOp::Delete(net("10.244.8.0/26"))]);
        apply_all(&mut t, &ops);
        assert!(t.resync(vec![]).is_empty());
    }

    #[test]
    fn routes_inside_own_blocks_are_never_installed_aggregates_are() {
        let mut t = FibTable::default();
        assert!(t.set_local([net("10.244.9.0/26")], []).is_empty());
        let (ops, _) = t.update(vec![
            change("10.244.9.5/32", vec![v4("10.0.0.2")]),
            change("10.244.0.0/16", vec![v4("10.0.0.254")]),
        ]);
        assert_eq!(ops.len(), 1, "{ops:?}");
        assert!(
            matches!(&ops[0], FibOp::Replace(r) if r.destination == net("10.244.0.0/16")),
            "{ops:?}"
        );
        // A more specific route learned before the block became this node's goes.
        let (ops, _) = t.update(vec![change("10.244.8.7/32", vec![v4("10.0.0.3")])]);
        apply_all(&mut t, &ops);
        let ops = t.set_local([net("10.244.8.0/26"), net("10.244.9.0/26")], []);
        assert_eq!(ops, [FibOp::Delete(net("10.244.8.7/32"))]);
    }

    #[test]
    fn host_routes_of_lent_addresses_are_installed_in_either_order() {
        let block = net("10.244.9.0/26");
        // The holder's route arrives before the block record says the address is lent.
        let mut t = FibTable::default();
        assert!(t.set_local([block], []).is_empty());
        let (ops, _) = t.update(vec![change("10.244.9.5/32", vec![v4("10.0.0.2")])]);
        assert!(ops.is_empty(), "inside an own block, not lent yet: {ops:?}");
        let ops = t.set_local([block], [net("10.244.9.5/32")]);
        assert!(
            matches!(ops.as_slice(), [FibOp::Replace(r)] if r.destination == net("10.244.9.5/32")),
            "{ops:?}"
        );
        apply_all(&mut t, &ops);
        // A repair keeps it; the converge purge does not take it.
        assert!(
            t.resync(vec![route("10.244.9.5/32", &["10.0.0.2"])])
                .is_empty()
        );
        assert!(t.converge().is_empty());
        // Released (no longer lent): gone again.
        let ops = t.set_local([block], []);
        assert_eq!(ops, [FibOp::Delete(net("10.244.9.5/32"))]);
        apply_all(&mut t, &ops);

        // The other order: lent first, then the route.
        let mut t = FibTable::default();
        assert!(t.set_local([block], [net("10.244.9.6/32")]).is_empty());
        let (ops, _) = t.update(vec![
            change("10.244.9.6/32", vec![v4("10.0.0.3")]),
            change("10.244.9.7/32", vec![v4("10.0.0.3")]),
        ]);
        assert!(
            matches!(ops.as_slice(), [FibOp::Replace(r)] if r.destination == net("10.244.9.6/32")),
            "only the lent address: {ops:?}"
        );
    }

    #[test]
    fn a_failed_replace_is_retried_by_resync() {
        let mut t = FibTable::default();
        let (ops, _) = t.update(vec![change("10.244.1.0/26", vec![v4("10.0.0.1")])]);
        t.applied(&ops[0], false);
        let again = t.resync(vec![]);
        assert_eq!(again, ops);
        // Before convergence a route nobody wants is kept; afterwards it goes.
        let foreign = route("10.244.7.0/26", &["10.0.0.7"]);
        assert!(
            !t.resync(vec![foreign.clone()])
                .contains(&FibOp::Delete(foreign.destination))
        );
        t.converge();
        assert!(
            t.resync(vec![foreign.clone()])
                .contains(&FibOp::Delete(foreign.destination))
        );
    }

    #[test]
    fn more_than_eight_next_hops_are_cut_to_eight() {
        let mut t = FibTable::default();
        let hops = (1..=12u8)
            .map(|i| NextHop::V4(Ipv4Addr::new(10, 0, 0, i)))
            .collect();
        let (ops, _) = t.update(vec![change("10.244.1.0/26", hops)]);
        let [FibOp::Replace(r)] = ops.as_slice() else {
            panic!("{ops:?}");
        };
        assert_eq!(r.gateways.len(), MAX_NEXT_HOPS);
    }

    #[test]
    fn a_hundred_thousand_changes() {
        let mut t = FibTable::default();
        let changes: Vec<FibChange> = (0..100_000u32)
            .map(|i| FibChange {
                prefix: IpNet::new(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i << 8))), 24)
                    .expect("net"),
                next_hops: vec![NextHop::V4(Ipv4Addr::new(10, 255, 0, 1 + (i % 4) as u8))],
            })
            .collect();
        let started = std::time::Instant::now();
        let (ops, refused) = t.update(changes);
        eprintln!("100 000 FIB changes planned in {:?}", started.elapsed());
        assert!(refused.is_empty());
        assert_eq!(ops.len(), 100_000);
    }

    // ----- FibSync against the fake kernel -----

    use crate::hostnet::fake::FakeHost;

    fn local(own: &[&str]) -> LocalPrefixes {
        LocalPrefixes {
            own: own.iter().map(|p| net(p)).collect(),
            lent: Vec::new(),
        }
    }

    #[tokio::test]
    async fn fib_sync_installs_replaces_and_withdraws_on_the_kernel() {
        let host = FakeHost::new();
        let mut fib = FibSync::start(host.clone()).await.expect("start");
        let applied = fib
            .changes(vec![
                change("10.244.2.0/26", vec![v4("10.0.0.2")]),
                change("10.244.3.0/26", vec![v4("10.0.0.3"), v4("10.0.0.4")]),
            ])
            .await;
        assert_eq!(
            (applied.replaced, applied.failed.len()),
            (2, 0),
            "{applied:?}"
        );
        assert_eq!(
            host.gateway_route_table(),
            vec![
                route("10.244.2.0/26", &["10.0.0.2"]),
                route("10.244.3.0/26", &["10.0.0.3", "10.0.0.4"]),
            ]
        );
        // One next hop of the ECMP route goes; then the other prefix is withdrawn.
        fib.changes(vec![change("10.244.3.0/26", vec![v4("10.0.0.4")])])
            .await;
        let applied = fib.changes(vec![change("10.244.2.0/26", vec![])]).await;
        assert_eq!(applied.deleted, 1, "{applied:?}");
        assert_eq!(
            host.gateway_route_table(),
            vec![route("10.244.3.0/26", &["10.0.0.4"])]
        );
    }

    #[tokio::test]
    async fn fib_sync_adopts_at_start_and_deletes_the_unconfirmed_at_convergence() {
        let host = FakeHost::new();
        // A previous agent's routes, and another protocol's route to leave alone.
        host.put_gateway_route(route("10.244.2.0/26", &["10.0.0.2"]));
        host.put_gateway_route(route("10.244.9.0/26", &["10.0.0.9"]));
        let mut foreign = route("192.168.0.0/24", &["10.0.0.254"]);
        foreign.protocol = 4;
        host.put_gateway_route(foreign.clone());

        let mut fib = FibSync::start(host.clone()).await.expect("start");
        assert_eq!(fib.table().installed_len(), 2, "adopted, not flushed");
        assert_eq!(host.gateway_route_table().len(), 3, "start changes nothing");
        // The speaker confirms one; the other is stale once it has converged.
        fib.changes(vec![change("10.244.2.0/26", vec![v4("10.0.0.2")])])
            .await;
        let applied = fib.converged().await;
        assert_eq!(applied.deleted, 1, "{applied:?}");
        assert_eq!(
            host.gateway_route_table(),
            vec![route("10.244.2.0/26", &["10.0.0.2"]), foreign]
        );
    }

    #[tokio::test]
    async fn fib_sync_resync_repairs_what_was_changed_behind_its_back_and_retries_refusals() {
        let host = FakeHost::new();
        let mut fib = FibSync::start(host.clone()).await.expect("start");
        fib.set_local(&local(&["10.244.1.0/26"])).await;
        host.refuse_gateway_changes(1);
        let applied = fib
            .changes(vec![
                change("10.244.2.0/26", vec![v4("10.0.0.2")]),
                change("10.244.3.0/26", vec![v4("10.0.0.3")]),
            ])
            .await;
        assert_eq!(applied.failed.len(), 1, "{applied:?}");
        // Someone deletes one route and points the own block somewhere.
        host.remove_gateway_route(net("10.244.3.0/26"));
        host.put_gateway_route(route("10.244.1.0/26", &["10.0.0.66"]));
        let applied = fib.resync().await.expect("resync");
        assert!(applied.failed.is_empty(), "{applied:?}");
        assert_eq!(
            host.gateway_route_table(),
            vec![
                route("10.244.2.0/26", &["10.0.0.2"]),
                route("10.244.3.0/26", &["10.0.0.3"]),
            ],
            "the refused one installed, the deleted one back, none on an own block"
        );
    }
}
