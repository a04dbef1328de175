//! `netctl policy show --endpoint ID`: one endpoint's effective rules per direction
//! and its compiled tables beside what the kernel's maps hold, entry by entry
//! (`ok`, `missing`, `stale`, as `netctl fastpath` compares its maps).

use std::collections::BTreeMap;

use strait_api::policy::{DirectionView, EndpointPolicyView, EntryState, RuleView, TableEntry};
use strait_policy::compile::Compiler;
use strait_policy::ir::Direction;
use strait_policy::tables::{Cell, DirectionTables, EndpointTables, RuleRef, Segment};
use strait_policy::view::LocalEndpoint;

use super::dataplane::Installed;
use super::reconcile::Snapshot;

pub fn rule_view(r: &RuleRef) -> RuleView {
    RuleView {
        id: r.id,
        policy: r.policy.to_string(),
        index: r.index,
        action: format!("{:?}", r.action).to_lowercase(),
        audit: r.audit,
    }
}

/// A rule by id, if the compiler knows it.
pub fn rule_by_id(compiler: &Compiler, id: Option<u32>) -> Option<RuleView> {
    id.and_then(|id| compiler.rules().get(id as usize))
        .map(rule_view)
}

/// Entry key: (peer, protocol, ports).
type Key = (String, String, String);

fn cell_text(c: &Cell) -> String {
    let mut parts = Vec::new();
    if let Some((rule, action, audit)) = c.decision {
        let action = format!("{action:?}").to_lowercase();
        parts.push(if audit {
            format!("decision {rule} {action} audit")
        } else {
            format!("decision {rule} {action}")
        });
    }
    if let Some(l) = c.log {
        parts.push(format!("log {l}"));
    }
    if let Some(a) = c.allow {
        parts.push(format!("allow {a}"));
    }
    parts.join("; ")
}

fn ports_text(s: &Segment) -> String {
    if s.first == s.last {
        s.first.to_string()
    } else {
        format!("{}-{}", s.first, s.last)
    }
}

/// A direction's tables as comparable entries (the flags are one entry too).
fn entries(t: &DirectionTables) -> BTreeMap<Key, String> {
    let mut out = BTreeMap::new();
    out.insert(
        ("endpoint".into(), "-".into(), "-".into()),
        format!("isolated={} default_audit={}", t.isolated, t.default_audit),
    );
    for ((id, proto), segs) in &t.identities {
        for s in segs {
            out.insert(
                (format!("identity {id}"), proto.to_string(), ports_text(s)),
                cell_text(&s.cell),
            );
        }
    }
    let nets: BTreeMap<u32, String> = t
        .cidrs
        .iter()
        .map(|(net, class)| (*class, net.to_string()))
        .collect();
    for (net, class) in &t.cidrs {
        out.insert(
            (format!("cidr {net}"), "-".into(), "-".into()),
            format!("class {class}"),
        );
    }
    for ((class, proto), segs) in &t.classes {
        let peer = match nets.get(class) {
            Some(net) => format!("cidr {net} (class {class})"),
            None => format!("class {class}"),
        };
        for s in segs {
            out.insert(
                (peer.clone(), proto.to_string(), ports_text(s)),
                cell_text(&s.cell),
            );
        }
    }
    out
}

/// Each key of either side: `ok` when both hold the same; `missing` with the wanted
/// cell where the kernel's differs or is absent; `stale` with the kernel's where it
/// is not wanted as such.
pub fn compare(wanted: &DirectionTables, held: Option<&DirectionTables>) -> Vec<TableEntry> {
    let wanted = entries(wanted);
    let held = held.map(entries).unwrap_or_default();
    let entry = |(peer, protocol, ports): &Key, cell: &String, state| TableEntry {
        peer: peer.clone(),
        protocol: protocol.clone(),
        ports: ports.clone(),
        cell: cell.clone(),
        state,
    };
    let mut out = Vec::new();
    for (k, want) in &wanted {
        match held.get(k) {
            Some(have) if have == want => out.push(entry(k, want, EntryState::Ok)),
            have => {
                out.push(entry(k, want, EntryState::Missing));
                if let Some(have) = have {
                    out.push(entry(k, have, EntryState::Stale));
                }
            }
        }
    }
    for (k, have) in &held {
        if !wanted.contains_key(k) {
            out.push(entry(k, have, EntryState::Stale));
        }
    }
    out
}

/// The view of endpoint `key` (its record's store key), with what the kernel holds
/// for its ifindex (if it is local and enforced).
pub fn endpoint_view(
    snap: &Snapshot,
    key: &str,
    ifindex: Option<u32>,
    installed: Option<&Installed>,
) -> Option<EndpointPolicyView> {
    let e = snap.cluster.endpoints.get(key)?;
    let identity = e.facts.identity.unwrap_or(0);
    let local = LocalEndpoint {
        identity,
        namespace: e.facts.namespace.clone(),
        labels: e.facts.labels.clone(),
        named_ports: e.facts.named_ports.clone(),
    };
    // In the form the kernel's maps read back in (adjacent equal segments merged).
    let wanted: EndpointTables =
        super::datapath::canonical(&snap.compiler.compile(&snap.view, &local));
    let direction = |d: Direction| {
        let selecting = snap.compiler.selecting(&snap.view, &local, d);
        let rules = snap
            .compiler
            .rules()
            .iter()
            .filter(|r| r.direction == d && selecting.contains(&r.policy))
            .map(rule_view)
            .collect();
        let t = wanted.direction(d);
        DirectionView {
            isolated: t.isolated,
            default_audit: t.default_audit,
            rules,
            entries: compare(t, installed.map(|i| i.tables.direction(d))),
        }
    };
    let ingress = direction(Direction::Ingress);
    let egress = direction(Direction::Egress);
    let in_sync = installed.is_some_and(|i| i.identity == identity)
        && ingress
            .entries
            .iter()
            .chain(&egress.entries)
            .all(|e| e.state == EntryState::Ok);
    Some(EndpointPolicyView {
        endpoint: e.facts.id.clone(),
        node: e.facts.node.clone(),
        namespace: e.facts.namespace.clone(),
        labels: e.facts.labels.clone(),
        identity: e.facts.identity,
        ifindex,
        installed_identity: installed.map(|i| i.identity),
        in_sync,
        ingress,
        egress,
    })
}

#[cfg(test)]
mod tests {
    use strait_policy::ir::{Action, Protocol};

    use super::*;

    fn seg(first: u16, last: u16, allow: u32) -> Segment {
        Segment {
            first,
            last,
            cell: Cell {
                decision: None,
                log: None,
                allow: Some(allow),
            },
        }
    }

    #[test]
    fn compare_says_ok_missing_and_stale() {
        let mut want = DirectionTables {
            isolated: true,
            ..Default::default()
        };
        want.identities
            .insert((300, Protocol::TCP), vec![seg(80, 80, 1), seg(81, 90, 2)]);
        let mut held = want.clone();
        held.identities
            .insert((300, Protocol::TCP), vec![seg(80, 80, 1), seg(81, 90, 3)]);
        held.identities.insert(
            (301, Protocol::UDP),
            vec![Segment {
                first: 53,
                last: 53,
                cell: Cell {
                    decision: Some((0, Action::Deny, true)),
                    ..Default::default()
                },
            }],
        );
        let got: Vec<(String, String, EntryState)> = compare(&want, Some(&held))
            .into_iter()
            .map(|e| (e.peer, e.ports, e.state))
            .collect();
        let s = |p: &str, ports: &str, st| (p.to_string(), ports.to_string(), st);
        assert_eq!(
            got,
            vec![
                s("endpoint", "-", EntryState::Ok),
                s("identity 300", "80", EntryState::Ok),
                s("identity 300", "81-90", EntryState::Missing),
                s("identity 300", "81-90", EntryState::Stale),
                s("identity 301", "53", EntryState::Stale),
            ]
        );
        assert!(
            compare(&want, None)
                .iter()
                .all(|e| e.state == EntryState::Missing)
        );
    }
}
