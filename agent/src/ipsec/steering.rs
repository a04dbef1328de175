//! Steering: which packets enter the ESP datapath. Policy routing, as WireGuard's
//! wg-quick does it:
//!
//! - a rule per family, `not fwmark 0x530000/0xff0000 lookup 2083 priority 2083`, puts
//!   strait's IPsec table before the main table for every packet except the ESP and
//!   IKE datagrams of the datapath itself, whose sockets carry the mark (they then take
//!   the main table, to the underlay);
//! - in that table, per encrypted peer, each of its prefixes (its underlay addresses,
//!   which carries VXLAN, BGP-routed and the agents' own traffic to it, and its blocks,
//!   which carries host-gw and BGP-routed container traffic) twice: out of the
//!   datapath's TUN device (metric 1), and `prohibit` (metric [`FAIL_CLOSED_METRIC`]).
//!
//! The `prohibit` twin is what makes the steering fail closed: while the TUN device is
//! gone (the agent died and the device was not persistent, or is being recreated) its
//! routes are gone with it, and the packets meet `prohibit` instead of falling through
//! to the main table and leaving in clear. The routes and rules stay when the agent
//! stops; a restarted agent adopts them. Only a mode that encrypts nothing, or a peer
//! that no longer needs encryption, removes them.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use strait_api::Family;
use tracing::{info, warn};

use crate::netlink::{
    Netlink, NetlinkError, Rule, TableRoute, TableRouteKind, ignore_exists, ignore_not_found,
};

/// strait's IPsec routing table.
pub const IPSEC_TABLE: u32 = 2083;
/// Priority of the rule that looks it up: after the local table (0), before main
/// (32766).
pub const RULE_PRIORITY: u32 = 2083;
/// The mark on the datapath's own sockets, and the bits of it the rule reads.
pub const ESP_MARK: u32 = 0x0053_0000;
pub const ESP_MARK_MASK: u32 = 0x00ff_0000;
/// Metric of the routes into the TUN (not 0: IPv6 turns 0 into 1024, and a route
/// read back must compare equal).
pub const TUN_METRIC: u32 = 1;
/// Metric of the `prohibit` twin of every steered prefix.
pub const FAIL_CLOSED_METRIC: u32 = 4096;

/// The rules strait's steering wants: one per family.
pub fn rules() -> [Rule; 2] {
    [Family::V4, Family::V6].map(|family| Rule {
        family,
        priority: RULE_PRIORITY,
        table: IPSEC_TABLE,
        fwmark: Some((ESP_MARK, ESP_MARK_MASK)),
        invert: true,
    })
}

/// Whether `rule` is one of strait's steering rules (what a reconcile may delete).
fn is_ours(rule: &Rule) -> bool {
    rule.priority == RULE_PRIORITY && rule.table == IPSEC_TABLE
}

/// The table's routes for peers' `prefixes` (by peer name) through TUN `tun`; with
/// no TUN (none yet, or a datapath that has none), the `prohibit` twins alone.
pub fn routes(prefixes: &BTreeMap<String, Vec<IpNet>>, tun: Option<u32>) -> BTreeSet<TableRoute> {
    let mut out = BTreeSet::new();
    for net in prefixes.values().flatten() {
        let destination = net.trunc();
        if let Some(tun) = tun {
            out.insert(TableRoute {
                table: IPSEC_TABLE,
                destination,
                kind: TableRouteKind::Link(tun),
                metric: TUN_METRIC,
            });
        }
        out.insert(TableRoute {
            table: IPSEC_TABLE,
            destination,
            kind: TableRouteKind::Prohibit,
            metric: FAIL_CLOSED_METRIC,
        });
    }
    out
}

/// What a reconcile changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    pub added: usize,
    pub removed: usize,
}

/// Makes the kernel's steering what `want` says (`want` empty: no steering at all, the
/// rules removed too). Level-triggered: reads the kernel, applies the difference.
pub async fn reconcile(nl: &Netlink, want: &BTreeSet<TableRoute>) -> Result<Changes, NetlinkError> {
    let mut changes = Changes::default();
    let have: BTreeSet<TableRoute> = nl.table_routes(IPSEC_TABLE).await?.into_iter().collect();
    // Routes before the rules on the way in, rules before routes on the way out: the
    // table is never looked up while it is half filled.
    for route in want.difference(&have) {
        nl.replace_table_route(route).await?;
        changes.added += 1;
    }
    for route in have.difference(want) {
        ignore_not_found(nl.del_table_route(route).await)?;
        changes.removed += 1;
    }
    let rules_have: Vec<Rule> = nl.rules().await?.into_iter().filter(is_ours).collect();
    if want.is_empty() {
        for rule in rules_have {
            ignore_not_found(nl.del_rule(&rule).await)?;
            info!(%rule, "IPsec steering rule removed");
            changes.removed += 1;
        }
    } else {
        for rule in rules() {
            if !rules_have.contains(&rule) {
                ignore_exists(nl.add_rule(&rule).await)?;
                info!(%rule, "IPsec steering rule added");
                changes.added += 1;
            }
        }
        for stale in rules_have.iter().filter(|r| !rules().contains(r)) {
            warn!(rule = %stale, "removing a rule at strait's priority that is not strait's");
            ignore_not_found(nl.del_rule(stale).await)?;
            changes.removed += 1;
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefix_gets_a_tun_route_and_a_prohibit_twin() {
        let mut prefixes = BTreeMap::new();
        prefixes.insert(
            "h2".to_string(),
            vec![
                "10.0.1.2/32".parse().unwrap(),
                "10.244.1.7/26".parse().unwrap(),
            ],
        );
        assert_eq!(
            routes(&prefixes, None).len(),
            2,
            "prohibit alone without a TUN"
        );
        let want = routes(&prefixes, Some(9));
        assert_eq!(want.len(), 4);
        let block: IpNet = "10.244.1.0/26".parse().unwrap();
        assert!(want.contains(&TableRoute {
            table: IPSEC_TABLE,
            destination: block,
            kind: TableRouteKind::Link(9),
            metric: TUN_METRIC,
        }));
        assert!(want.contains(&TableRoute {
            table: IPSEC_TABLE,
            destination: block,
            kind: TableRouteKind::Prohibit,
            metric: FAIL_CLOSED_METRIC,
        }));
    }

    #[test]
    fn the_rules_skip_marked_packets_in_both_families() {
        let [v4, v6] = rules();
        assert_eq!((v4.family, v6.family), (Family::V4, Family::V6));
        assert!(v4.invert && is_ours(&v4));
        assert_eq!(v4.fwmark, Some((ESP_MARK, ESP_MARK_MASK)));
    }
}
