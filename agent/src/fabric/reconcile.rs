//! One reconciliation: read what the kernel has of the fabric's, compare it with the
//! desired state, and apply the difference — add what is missing, replace what is
//! wrong, delete what is strait's and no longer wanted.
//!
//! Over 600 lines with its unit tests; the pass itself is about 470 lines (plan,
//! read, apply, report), each step used only by the next.
//!
//! The comparison ([`plan`]) is pure. Applying pipelines the requests over the one
//! netlink socket (up to [`IN_FLIGHT`] at a time): 1 000 peers are 3 000 requests, and
//! one round trip each in sequence would cost seconds. Requests that must happen in
//! order (delete a wrong route, then add the right one) form one sequence; sequences
//! run concurrently. A failed request does not stop the others; all failures are
//! reported together.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use ipnet::IpNet;
use strait_api::FabricMode;

use super::desired::{self, ClusterView, Desired, LocalLinks, NeighbourEntry};
use super::{FabricConfig, FabricError, VXLAN_DEVICE, hostgw, overrides, owns_route, vxlan};
use crate::hostnet::HostNet;
use crate::netlink::{
    FdbEntry, Neighbour, NetlinkError, RTPROT_STRAIT, Route, RouteKind, format_mac, ignore_exists,
    ignore_not_found,
};
use strait_api::routes::{DeviceReport, EntryKind, EntryState, ReportEntry, RouteReport};

/// Kernel requests in flight at once. The socket's receive buffer holds the
/// acknowledgements of far more; the bound keeps one reconciliation from queueing
/// thousands of futures.
pub const IN_FLIGHT: usize = 128;

/// What the kernel has that the fabric owns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actual {
    /// Addresses on `strait.vxlan`, with their prefix length.
    pub addresses: Vec<(IpAddr, u8)>,
    pub fdb: Vec<FdbEntry>,
    /// Unicast neighbour entries on `strait.vxlan`.
    pub neighbours: Vec<Neighbour>,
    /// Routes the fabric owns (see [`super::owns_route`]).
    pub routes: Vec<Route>,
}

/// One kernel change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    SetRoute(Route),
    DelRoute(Route),
    SetFdb(FdbEntry),
    DelFdb(FdbEntry),
    SetNeighbour(NeighbourEntry),
    DelNeighbour(IpAddr),
    AddAddress(IpAddr),
    DelAddress(IpAddr, u8),
}

/// The comparison's result: one report row per entry, and the changes that make the
/// kernel match, as sequences that run concurrently.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub entries: Vec<ReportEntry>,
    pub steps: Vec<Vec<Op>>,
}

impl Plan {
    pub fn changes(&self) -> usize {
        self.steps.iter().map(Vec::len).sum()
    }
}

/// Names of links by ifindex, for report rows.
pub type LinkNames = HashMap<u32, String>;

/// Compares `desired` with `actual`.
pub fn plan(desired: &Desired, actual: &Actual, names: &LinkNames) -> Plan {
    let mut plan = Plan::default();
    plan_addresses(desired, actual, &mut plan);
    plan_fdb(desired, actual, &mut plan);
    plan_neighbours(desired, actual, &mut plan);
    plan_routes(desired, actual, names, &mut plan);
    plan
}

fn row(kind: EntryKind, node: Option<&str>, entry: String, state: EntryState) -> ReportEntry {
    ReportEntry {
        kind,
        node: node.map(str::to_string),
        entry,
        state,
    }
}

fn host_len(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn plan_addresses(desired: &Desired, actual: &Actual, plan: &mut Plan) {
    let have: HashSet<(IpAddr, u8)> = actual.addresses.iter().copied().collect();
    let mut wanted = HashSet::new();
    for ip in &desired.addresses {
        let key = (*ip, host_len(ip));
        wanted.insert(key);
        let text = format!("{ip}/{} dev {VXLAN_DEVICE}", key.1);
        if have.contains(&key) {
            plan.entries
                .push(row(EntryKind::Address, None, text, EntryState::Ok));
        } else {
            plan.entries
                .push(row(EntryKind::Address, None, text, EntryState::Missing));
            plan.steps.push(vec![Op::AddAddress(*ip)]);
        }
    }
    for (ip, len) in &actual.addresses {
        if !wanted.contains(&(*ip, *len)) {
            plan.entries.push(row(
                EntryKind::Address,
                None,
                format!("{ip}/{len} dev {VXLAN_DEVICE}"),
                EntryState::Stale,
            ));
            plan.steps.push(vec![Op::DelAddress(*ip, *len)]);
        }
    }
}

fn plan_fdb(desired: &Desired, actual: &Actual, plan: &mut Plan) {
    let have: HashSet<&FdbEntry> = actual.fdb.iter().collect();
    let wanted: HashSet<&FdbEntry> = desired.fdb.iter().map(|o| &o.entry).collect();
    for o in &desired.fdb {
        let state = if have.contains(&o.entry) {
            EntryState::Ok
        } else {
            // Replace, not append: a VTEP MAC has one remote; a wrong one is rewritten in
            // place (the stale remote, if still there, is deleted below).
            plan.steps.push(vec![Op::SetFdb(o.entry)]);
            EntryState::Missing
        };
        plan.entries.push(row(
            EntryKind::Fdb,
            Some(&o.node),
            format!("{} dev {VXLAN_DEVICE}", o.entry),
            state,
        ));
    }
    for entry in &actual.fdb {
        if !wanted.contains(entry) {
            plan.entries.push(row(
                EntryKind::Fdb,
                None,
                format!("{entry} dev {VXLAN_DEVICE}"),
                EntryState::Stale,
            ));
            plan.steps.push(vec![Op::DelFdb(*entry)]);
        }
    }
}

fn plan_neighbours(desired: &Desired, actual: &Actual, plan: &mut Plan) {
    let have: HashMap<IpAddr, &Neighbour> = actual.neighbours.iter().map(|n| (n.ip, n)).collect();
    let mut wanted = HashSet::new();
    for o in &desired.neighbours {
        let NeighbourEntry { ip, mac } = o.entry;
        wanted.insert(ip);
        let ok = have
            .get(&ip)
            .is_some_and(|n| n.mac == Some(mac) && n.permanent);
        if !ok {
            plan.steps.push(vec![Op::SetNeighbour(o.entry)]);
        }
        plan.entries.push(row(
            EntryKind::Neighbour,
            Some(&o.node),
            format!(
                "{ip} lladdr {} dev {VXLAN_DEVICE} permanent",
                format_mac(&mac)
            ),
            if ok {
                EntryState::Ok
            } else {
                EntryState::Missing
            },
        ));
    }
    for n in &actual.neighbours {
        if !wanted.contains(&n.ip) {
            let lladdr = n.mac.map(|m| format!(" lladdr {}", format_mac(&m)));
            plan.entries.push(row(
                EntryKind::Neighbour,
                None,
                format!("{}{} dev {VXLAN_DEVICE}", n.ip, lladdr.unwrap_or_default()),
                EntryState::Stale,
            ));
            plan.steps.push(vec![Op::DelNeighbour(n.ip)]);
        }
    }
}

/// Whether the kernel's `have` is the route `want`. A desired route without a metric
/// accepts the kernel's default (none for IPv4, 1024 for IPv6); a blackhole has no
/// device to compare (IPv6 reports `lo`).
fn same_route(want: &Route, have: &Route) -> bool {
    want.kind == have.kind
        && want.destination == have.destination
        && want.protocol == have.protocol
        && want.metric.is_none_or(|m| have.metric == Some(m))
        && (want.kind == RouteKind::Blackhole
            || (want.gateway == have.gateway && want.oif == have.oif && want.onlink == have.onlink))
}

fn plan_routes(desired: &Desired, actual: &Actual, names: &LinkNames, plan: &mut Plan) {
    let mut at: HashMap<ipnet::IpNet, Vec<&Route>> = HashMap::new();
    for r in &actual.routes {
        at.entry(r.destination).or_default().push(r);
    }
    let mut stale_rows = Vec::new();
    for o in &desired.routes {
        let want = &o.entry;
        let others = at.remove(&want.destination).unwrap_or_default();
        let ok = others.iter().any(|have| same_route(want, have));
        let mut steps = Vec::new();
        // Anything else at this destination goes first, so the replace cannot be matched
        // by a later delete. If the wanted route is there, the rest just goes.
        let mut kept_one = false;
        for have in others {
            if ok && !kept_one && same_route(want, have) {
                kept_one = true;
                continue;
            }
            stale_rows.push(row(
                EntryKind::Route,
                None,
                route_text(have, names),
                EntryState::Stale,
            ));
            steps.push(Op::DelRoute(have.clone()));
        }
        if !ok {
            steps.push(Op::SetRoute(want.clone()));
        }
        if !steps.is_empty() {
            plan.steps.push(steps);
        }
        plan.entries.push(row(
            EntryKind::Route,
            Some(&o.node),
            route_text(want, names),
            if ok {
                EntryState::Ok
            } else {
                EntryState::Missing
            },
        ));
    }
    let mut left: Vec<&Route> = at.into_values().flatten().collect();
    left.sort_by_key(|r| r.destination);
    for have in left {
        stale_rows.push(row(
            EntryKind::Route,
            None,
            route_text(have, names),
            EntryState::Stale,
        ));
        plan.steps.push(vec![Op::DelRoute(have.clone())]);
    }
    plan.entries.extend(stale_rows);
}

/// A route as `ip route` prints it, with link names.
pub(super) fn route_text(r: &Route, names: &LinkNames) -> String {
    let mut text = match r.kind {
        RouteKind::Blackhole => format!("blackhole {}", r.destination),
        RouteKind::Unicast => r.destination.to_string(),
    };
    if let Some(gateway) = r.gateway {
        text.push_str(&format!(" via {gateway}"));
    }
    if r.kind == RouteKind::Unicast
        && let Some(oif) = r.oif
    {
        match names.get(&oif) {
            Some(name) => text.push_str(&format!(" dev {name}")),
            None => text.push_str(&format!(" dev index {oif}")),
        }
    }
    if r.onlink {
        text.push_str(" onlink");
    }
    if let Some(metric) = r.metric {
        text.push_str(&format!(" metric {metric}"));
    }
    text.push_str(&format!(" proto {}", r.protocol));
    text
}

/// Reads what the kernel has of the fabric's: on `strait.vxlan` (index `vxlan`) its
/// addresses, FDB and unicast neighbours; in the main table the routes it owns in
/// `mode`.
pub async fn read_actual(
    nl: &impl HostNet,
    vxlan: Option<u32>,
    mode: FabricMode,
) -> Result<Actual, NetlinkError> {
    let routes = async {
        let mut routes = nl.routes_of(RTPROT_STRAIT).await?;
        routes.retain(|r| owns_route(r, vxlan, mode));
        Ok::<_, NetlinkError>(routes)
    };
    let Some(index) = vxlan else {
        return Ok(Actual {
            routes: routes.await?,
            ..Default::default()
        });
    };
    let (addresses, fdb, neighbours, routes) = tokio::try_join!(
        nl.addresses(index),
        nl.fdb(index),
        nl.neighbours(index),
        routes
    )?;
    Ok(Actual {
        addresses: addresses
            .into_iter()
            .map(|a| (a.ip, a.prefix_len))
            .collect(),
        fdb,
        // Multicast entries (e.g. MLD groups the kernel joins for the tunnel address)
        // are the kernel's bookkeeping, not peers.
        neighbours: neighbours
            .into_iter()
            .filter(|n| !n.ip.is_multicast())
            .collect(),
        routes,
    })
}

/// Runs every sequence of `steps` against the kernel (`vxlan`: the device's index),
/// up to [`IN_FLIGHT`] requests at a time. Returns the failures as one error.
pub async fn apply(
    nl: &impl HostNet,
    vxlan: Option<u32>,
    steps: Vec<Vec<Op>>,
) -> Result<(), FabricError> {
    let total: usize = steps.iter().map(Vec::len).sum();
    let failures: Vec<String> = futures::stream::iter(steps)
        .map(|sequence| async move {
            let mut failures = Vec::new();
            for op in sequence {
                if let Err(e) = run(nl, vxlan, &op).await {
                    failures.push(e.to_string());
                }
            }
            failures
        })
        .buffer_unordered(IN_FLIGHT)
        .flat_map(futures::stream::iter)
        .collect()
        .await;
    match failures.first() {
        None => Ok(()),
        Some(first) => Err(FabricError::Apply {
            failed: failures.len(),
            total,
            first: first.clone(),
        }),
    }
}

async fn run(nl: &impl HostNet, vxlan: Option<u32>, op: &Op) -> Result<(), NetlinkError> {
    let device = || {
        vxlan.ok_or_else(|| NetlinkError::Incomplete {
            op: "program strait.vxlan",
            object: VXLAN_DEVICE.to_string(),
            what: "the device (it does not exist)",
        })
    };
    match op {
        Op::SetRoute(r) => nl.replace_route(r).await,
        Op::DelRoute(r) => ignore_not_found(nl.del_route(r).await),
        Op::SetFdb(f) => nl.replace_fdb(device()?, f).await,
        Op::DelFdb(f) => ignore_not_found(nl.del_fdb(device()?, f).await),
        Op::SetNeighbour(n) => nl.set_permanent_neighbour(device()?, n.ip, n.mac).await,
        Op::DelNeighbour(ip) => ignore_not_found(nl.del_neighbour(device()?, *ip).await),
        Op::AddAddress(ip) => ignore_exists(nl.add_address(device()?, *ip, host_len(ip)).await),
        Op::DelAddress(ip, len) => ignore_not_found(nl.del_address(device()?, *ip, *len).await),
    }
}

/// The outcome of [`reconcile`]: the report of what was found (before applying) and
/// how many changes were made.
#[derive(Debug, Clone)]
pub struct Reconciled {
    pub report: RouteReport,
    pub changes: usize,
    /// See [`desired::Desired::tunnels`].
    pub tunnels: BTreeMap<IpNet, [u8; 6]>,
}

/// One full pass: with `apply`, make the device right (or remove it outside vxlan
/// mode), compute the desired state against the links as they are, read the kernel,
/// and apply the difference; without, only compare (what `netctl routes` shows).
pub async fn reconcile(
    nl: &impl HostNet,
    cfg: &FabricConfig,
    cluster: &ClusterView,
    apply_changes: bool,
) -> Result<Reconciled, FabricError> {
    let device = match (cfg.mode, apply_changes) {
        (FabricMode::Vxlan, true) => Some(vxlan::ensure_device(nl, cfg).await?),
        (_, true) => {
            vxlan::remove_device(nl).await?;
            None
        }
        (_, false) => nl.vxlan_by_name(VXLAN_DEVICE).await?,
    };
    let names: LinkNames = nl
        .links()
        .await?
        .into_iter()
        .map(|l| (l.index, l.name))
        .collect();
    let vxlan_index = device.as_ref().map(|d| d.link.index);
    let links = LocalLinks {
        vxlan: vxlan_index,
        connected: if cfg.mode == FabricMode::HostGw {
            hostgw::connected_subnets(nl, &names).await?
        } else {
            Vec::new()
        },
    };
    let desired = desired::compute(cfg, cluster, &links);
    let actual = read_actual(nl, vxlan_index, cfg.mode).await?;
    // Only for the report: the whole table is read, every protocol's.
    let overrides = if apply_changes || cfg.mode == FabricMode::None {
        Vec::new()
    } else {
        overrides::find(&cluster.blocks, &nl.main_routes().await?, &names)
    };
    let plan = plan(&desired, &actual, &names);
    let changes = plan.changes();
    let report = RouteReport {
        node: cfg.node.clone(),
        mode: cfg.mode.to_string(),
        device: device.map(|d| DeviceReport {
            name: d.link.name,
            ifindex: d.link.index,
            vni: d.vni,
            port: d.port,
            local: d.local,
            mac: d.link.mac.as_ref().map(format_mac),
            mtu: d.link.mtu,
            up: d.link.up,
        }),
        entries: plan.entries,
        warnings: desired.warnings,
        checked_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        reconciles: 0,
        reconcile_errors: 0,
        last_error: None,
        overrides,
    };
    if apply_changes && changes > 0 {
        apply(nl, vxlan_index, plan.steps).await?;
    }
    Ok(Reconciled {
        report,
        changes,
        tunnels: desired.tunnels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fabric::desired::Owned;

    fn owned<T>(node: &str, entry: T) -> Owned<T> {
        Owned {
            node: node.into(),
            entry,
        }
    }

    fn names() -> LinkNames {
        [(9, VXLAN_DEVICE.to_string()), (2, "eth0".to_string())]
            .into_iter()
            .collect()
    }

    fn net(s: &str) -> ipnet::IpNet {
        s.parse().expect("net")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn in_sync_means_no_changes() {
        let route = Route::via(net("10.244.2.0/26"), ip("10.244.2.1"), 9, true);
        let fdb = FdbEntry {
            mac: [0x0e, 0, 0, 0, 0, 2],
            dst: ip("10.0.0.2"),
        };
        let desired = Desired {
            addresses: vec![ip("10.244.1.1")],
            fdb: vec![owned("n2", fdb)],
            neighbours: vec![owned(
                "n2",
                NeighbourEntry {
                    ip: ip("10.244.2.1"),
                    mac: fdb.mac,
                },
            )],
            routes: vec![owned("n2", route.clone())],
            ..Desired::default()
        };
        let mut kernel_route = route.clone();
        kernel_route.metric = Some(1024);
        let actual = Actual {
            addresses: vec![(ip("10.244.1.1"), 32)],
            fdb: vec![fdb],
            neighbours: vec![Neighbour {
                index: 9,
                ip: ip("10.244.2.1"),
                mac: Some(fdb.mac),
                permanent: true,
            }],
            routes: vec![kernel_route],
        };
        let p = plan(&desired, &actual, &names());
        assert_eq!(p.changes(), 0, "{:?}", p.steps);
        assert!(p.entries.iter().all(|e| e.state == EntryState::Ok));
        assert_eq!(p.entries.len(), 4);
        assert_eq!(
            p.entries[3].entry,
            "10.244.2.0/26 via 10.244.2.1 dev strait.vxlan onlink proto 83"
        );
    }

    #[test]
    fn wrong_entries_are_replaced_and_stale_ones_deleted() {
        let mac = [0x0e, 0, 0, 0, 0, 2];
        let desired = Desired {
            fdb: vec![owned(
                "n2",
                FdbEntry {
                    mac,
                    dst: ip("10.0.0.2"),
                },
            )],
            neighbours: vec![owned(
                "n2",
                NeighbourEntry {
                    ip: ip("10.244.2.1"),
                    mac,
                },
            )],
            routes: vec![owned(
                "n2",
                Route::via(net("10.244.2.0/26"), ip("10.244.2.1"), 9, true),
            )],
            ..Default::default()
        };
        let moved = FdbEntry {
            mac,
            dst: ip("10.0.0.99"),
        };
        let wrong_route = Route::blackhole(net("10.244.2.0/26"));
        let gone = Route::via(net("10.244.3.0/26"), ip("10.244.3.1"), 9, true);
        let actual = Actual {
            addresses: vec![(ip("10.244.7.1"), 32)],
            fdb: vec![moved],
            neighbours: vec![Neighbour {
                index: 9,
                ip: ip("10.244.2.1"),
                mac: Some(mac),
                permanent: false,
            }],
            routes: vec![wrong_route.clone(), gone.clone()],
        };
        let p = plan(&desired, &actual, &names());
        let all: Vec<&Op> = p.steps.iter().flatten().collect();
        assert!(all.contains(&&Op::DelAddress(ip("10.244.7.1"), 32)));
        assert!(all.contains(&&Op::SetFdb(desired.fdb[0].entry)));
        assert!(all.contains(&&Op::DelFdb(moved)));
        assert!(all.contains(&&Op::SetNeighbour(desired.neighbours[0].entry)));
        assert!(all.contains(&&Op::DelRoute(gone)));
        // The wrong route at the wanted destination goes before the right one comes.
        assert!(p.steps.contains(&vec![
            Op::DelRoute(wrong_route),
            Op::SetRoute(desired.routes[0].entry.clone())
        ]));
        assert_eq!(
            p.entries
                .iter()
                .filter(|e| e.state == EntryState::Stale)
                .count(),
            4
        );
        assert_eq!(
            p.entries
                .iter()
                .filter(|e| e.state == EntryState::Missing)
                .count(),
            3
        );
    }

    #[test]
    fn blackholes_match_whatever_device_the_kernel_reports() {
        let want = Route::blackhole(net("fd00:244:1::/122"));
        let mut have = want.clone();
        have.oif = Some(1);
        have.metric = Some(1024);
        assert!(same_route(&want, &have));
        let mut unicast = have.clone();
        unicast.kind = RouteKind::Unicast;
        assert!(!same_route(&want, &unicast));
    }
}
