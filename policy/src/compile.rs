//! The policy compiler: from the normalized policies ([`crate::ir`]) and what the
//! node knows of the cluster ([`crate::view`]) to one local endpoint's tables
//! ([`crate::tables`]), the content of its eBPF policy maps.
//!
//! [`Compiler::new`] puts the policies in evaluation order and numbers their rules
//! (a [`RuleId`] is an index into [`Compiler::rules`], so "the first matching rule"
//! is "the smallest id", which is what the datapath's merge relies on).
//! [`Compiler::compile`] then, per direction:
//! - keeps the rules of the policies that select the endpoint for that direction;
//! - resolves each rule's peers: selectors to the identities of the view they match,
//!   CIDRs (and "every peer", as `0.0.0.0/0` and `::/0`) to the CIDR side;
//! - resolves ports: numeric ranges as they are, named ports against the local
//!   endpoint (ingress) or against each peer identity (egress);
//! - sweeps, per (identity or CIDR class, protocol), the rules' port intervals into
//!   non-overlapping segments, each with its [`Cell`].
//!
//! A CIDR class is one prefix any rule names (as a net or an except); an address
//! falls in the class of its longest matching prefix, and the rules matching it are
//! the ones whose net contains that prefix and none of whose excepts does.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ir::{
    Action, Direction, EndpointSelector, NamespaceScope, Peer, Policy, PolicyKey, Ports, Protocol,
    Rule, Tier,
};
use crate::selector::Labels;
use crate::tables::{
    Cell, DirectionTables, EndpointTables, FIRST_ALLOCATED_IDENTITY, RuleId, RuleRef, Segment,
};
use crate::view::{ClusterView, LocalEndpoint, NamedPort};

/// The agent's `--policy-mode` (`enforce` or `audit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    /// Every deny (by a rule or by default) is recorded and not enforced.
    Audit,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "audit" => Ok(Mode::Audit),
            other => Err(format!("policy mode {other:?}: expected enforce or audit")),
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        })
    }
}

/// The policies in evaluation order with their rules numbered; compiles any local
/// endpoint's tables against a [`ClusterView`].
#[derive(Debug, Clone)]
pub struct Compiler {
    mode: Mode,
    policies: Vec<Policy>,
    rules: Vec<RuleRef>,
    /// Per policy (same index), the id of its first ingress and first egress rule.
    first_rule: Vec<[RuleId; 2]>,
    /// Rules below this id are the cluster tier's.
    cluster_rules: RuleId,
}

fn direction_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

/// Cluster tier first, by order then name; then the namespaced tier by namespace
/// and name.
fn evaluation_order(a: &Policy, b: &Policy) -> Ordering {
    match (a.tier, b.tier) {
        (Tier::Cluster { order: x }, Tier::Cluster { order: y }) => {
            x.total_cmp(&y).then_with(|| a.key.cmp(&b.key))
        }
        (Tier::Cluster { .. }, Tier::Namespaced) => Ordering::Less,
        (Tier::Namespaced, Tier::Cluster { .. }) => Ordering::Greater,
        (Tier::Namespaced, Tier::Namespaced) => a.key.cmp(&b.key),
    }
}

/// Whether a scope reaches a namespace (one missing from the view has just its
/// name label).
pub(crate) fn reaches(scope: &NamespaceScope, view: &ClusterView, namespace: &str) -> bool {
    match scope {
        NamespaceScope::Only(ns) => ns == namespace,
        NamespaceScope::Selector(s) => s.matches(&view.namespace_labels(namespace)),
        NamespaceScope::All => true,
    }
}

/// Whether a rule of this policy takes part in evaluation: every rule of the cluster
/// tier; only allows in the namespaced tier (Kubernetes policies have nothing else).
pub(crate) fn takes_part(policy: &Policy, rule: &Rule) -> bool {
    matches!(policy.tier, Tier::Cluster { .. }) || rule.action == Action::Allow
}

/// The ports of one protocol a rule's port list resolves to for one peer.
type Ranges = Vec<(Protocol, u16, u16)>;

/// Port intervals, each tagged with the rule that matches on it.
type Tagged = Vec<(u16, u16, RuleId)>;

/// A rule's CIDR peer, with the ports it allows for it.
struct CidrEntry {
    net: IpNet,
    except: Vec<IpNet>,
    rule: RuleId,
    ranges: Ranges,
}

impl Compiler {
    pub fn new(mut policies: Vec<Policy>, mode: Mode) -> Self {
        policies.sort_by(evaluation_order);
        let mut rules = Vec::new();
        let mut first_rule = Vec::with_capacity(policies.len());
        let mut cluster_rules = 0;
        for policy in &policies {
            let audit = policy.audit || mode == Mode::Audit;
            let mut firsts = [0; 2];
            for d in [Direction::Ingress, Direction::Egress] {
                firsts[direction_index(d)] = rules.len() as RuleId;
                for (index, rule) in policy.rules(d).unwrap_or_default().iter().enumerate() {
                    rules.push(RuleRef {
                        id: rules.len() as RuleId,
                        policy: policy.key.clone(),
                        direction: d,
                        index,
                        action: rule.action,
                        audit,
                    });
                }
            }
            first_rule.push(firsts);
            if matches!(policy.tier, Tier::Cluster { .. }) {
                cluster_rules = rules.len() as RuleId;
            }
        }
        Self {
            mode,
            policies,
            rules,
            first_rule,
            cluster_rules,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Every rule of every policy, in evaluation order; index = [`RuleId`].
    pub fn rules(&self) -> &[RuleRef] {
        &self.rules
    }

    /// The policies in evaluation order.
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The id of a policy's (by index in [`Compiler::policies`]) first rule of a
    /// direction; the others follow it.
    pub(crate) fn first_rule(&self, policy: usize, d: Direction) -> RuleId {
        self.first_rule[policy][direction_index(d)]
    }

    fn subject_matches(subject: &EndpointSelector, view: &ClusterView, ep: &LocalEndpoint) -> bool {
        reaches(&subject.namespaces, view, &ep.namespace) && subject.pods.matches(&ep.labels)
    }

    /// Indices of the policies that select `ep` and isolate it for `d`, in
    /// evaluation order.
    pub(crate) fn selecting_indices(
        &self,
        view: &ClusterView,
        ep: &LocalEndpoint,
        d: Direction,
    ) -> Vec<usize> {
        self.policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.rules(d).is_some() && Self::subject_matches(&p.subject, view, ep))
            .map(|(i, _)| i)
            .collect()
    }

    /// The policies that select `ep` and isolate it for `d`, in evaluation order.
    pub fn selecting(
        &self,
        view: &ClusterView,
        ep: &LocalEndpoint,
        d: Direction,
    ) -> Vec<PolicyKey> {
        self.selecting_indices(view, ep, d)
            .into_iter()
            .map(|i| self.policies[i].key.clone())
            .collect()
    }

    /// Whether the default deny for these isolating policies is only recorded.
    pub(crate) fn default_audit(&self, selecting: &[usize]) -> bool {
        !selecting.is_empty()
            && (self.mode == Mode::Audit || selecting.iter().all(|&i| self.policies[i].audit))
    }

    pub fn compile(&self, view: &ClusterView, ep: &LocalEndpoint) -> EndpointTables {
        let world = World::new(view, ep);
        EndpointTables {
            ingress: self.compile_direction(&world, Direction::Ingress),
            egress: self.compile_direction(&world, Direction::Egress),
        }
    }

    fn compile_direction<'p>(&'p self, world: &World<'_, 'p>, d: Direction) -> DirectionTables {
        let selecting = self.selecting_indices(world.view, world.ep, d);
        let mut tables = DirectionTables {
            isolated: !selecting.is_empty(),
            default_audit: self.default_audit(&selecting),
            ..DirectionTables::default()
        };
        let mut by_identity: HashMap<(u32, Protocol), Tagged> = HashMap::new();
        let mut cidrs: Vec<CidrEntry> = Vec::new();
        for &pi in &selecting {
            let policy = &self.policies[pi];
            let first = self.first_rule(pi, d);
            for (i, rule) in policy.rules(d).unwrap_or_default().iter().enumerate() {
                if !takes_part(policy, rule) {
                    continue;
                }
                let id = first + i as RuleId;
                let (fixed, named) = world.ports(rule, d);
                let mut add_identity = |identity: u32, ranges: &Ranges| {
                    for &(proto, a, b) in ranges {
                        by_identity
                            .entry((identity, proto))
                            .or_default()
                            .push((a, b, id));
                    }
                };
                let named_for = |identity: u32| -> Ranges {
                    let declared = world.view.named_ports.get(&identity);
                    resolve_named(&named, declared.map_or(&[][..], |v| v.as_slice()))
                };
                if rule.peers.is_empty() {
                    // Every address, on the CIDR side; and, for egress named ports,
                    // every endpoint that declares the port.
                    for net in ["0.0.0.0/0", "::/0"] {
                        cidrs.push(CidrEntry {
                            net: net.parse().expect("a valid prefix"),
                            except: Vec::new(),
                            rule: id,
                            ranges: fixed.clone(),
                        });
                    }
                    if !named.is_empty() {
                        for identity in world.all_identities() {
                            add_identity(identity, &named_for(identity));
                        }
                    }
                }
                for peer in &rule.peers {
                    match peer {
                        Peer::Endpoints(sel) => {
                            for &identity in world.matching(sel).iter() {
                                add_identity(identity, &fixed);
                                if !named.is_empty() {
                                    add_identity(identity, &named_for(identity));
                                }
                            }
                        }
                        // A named port on a CIDR peer (egress) matches nothing.
                        Peer::Cidr { net, except } => cidrs.push(CidrEntry {
                            net: net.trunc(),
                            except: except.iter().map(IpNet::trunc).collect(),
                            rule: id,
                            ranges: fixed.clone(),
                        }),
                    }
                }
            }
        }
        for (key, ranges) in by_identity {
            let segments = self.segments(ranges);
            if !segments.is_empty() {
                tables.identities.insert(key, segments);
            }
        }
        self.cidr_side(&mut tables, cidrs);
        tables
    }

    /// Numbers the CIDR classes and fills each class's cells.
    fn cidr_side(&self, tables: &mut DirectionTables, mut entries: Vec<CidrEntry>) {
        // A CIDR peer with no port left (an unresolved named port) matches nothing.
        entries.retain(|e| !e.ranges.is_empty());
        let prefixes: BTreeSet<IpNet> = entries
            .iter()
            .flat_map(|e| std::iter::once(e.net).chain(e.except.iter().copied()))
            .collect();
        let mut by_net: HashMap<IpNet, Vec<usize>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            by_net.entry(e.net).or_default().push(i);
        }
        for (n, prefix) in prefixes.into_iter().enumerate() {
            // Numbered from 1: 0 is no class.
            let class = n as u32 + 1;
            tables.cidrs.insert(prefix, class);
            // The rules' nets containing this prefix are among its ancestors.
            let mut per_proto: BTreeMap<Protocol, Tagged> = BTreeMap::new();
            for len in 0..=prefix.prefix_len() {
                let ancestor = IpNet::new(prefix.addr(), len)
                    .expect("a length up to the prefix's own")
                    .trunc();
                for &i in by_net.get(&ancestor).into_iter().flatten() {
                    let e = &entries[i];
                    if e.except.iter().any(|x| x.contains(&prefix)) {
                        continue;
                    }
                    for &(proto, a, b) in &e.ranges {
                        per_proto.entry(proto).or_default().push((a, b, e.rule));
                    }
                }
            }
            for (proto, ranges) in per_proto {
                let segments = self.segments(ranges);
                if !segments.is_empty() {
                    tables.classes.insert((class, proto), segments);
                }
            }
        }
    }

    /// Sweeps port intervals (each tagged with its rule) into non-overlapping
    /// segments, adjacent equal cells merged, empty cells left out.
    fn segments(&self, ranges: Tagged) -> Vec<Segment> {
        // (position, rule, starts): an interval ends at last + 1, hence u32.
        let mut events: Vec<(u32, RuleId, bool)> = Vec::with_capacity(ranges.len() * 2);
        for (a, b, id) in ranges {
            if a <= b {
                events.push((u32::from(a), id, true));
                events.push((u32::from(b) + 1, id, false));
            }
        }
        events.sort_unstable_by_key(|e| e.0);
        // Active rules by kind, counted (a rule can cover a port twice).
        let mut decisions: BTreeMap<RuleId, u32> = BTreeMap::new();
        let mut logs: BTreeMap<RuleId, u32> = BTreeMap::new();
        let mut allows: BTreeMap<RuleId, u32> = BTreeMap::new();
        let mut out: Vec<Segment> = Vec::new();
        let mut i = 0;
        while i < events.len() {
            let pos = events[i].0;
            while i < events.len() && events[i].0 == pos {
                let (_, id, starts) = events[i];
                let set = match (self.is_cluster(id), self.rules[id as usize].action) {
                    (true, Action::Log) => &mut logs,
                    (true, _) => &mut decisions,
                    (false, _) => &mut allows,
                };
                if starts {
                    *set.entry(id).or_default() += 1;
                } else if let Some(n) = set.get_mut(&id) {
                    *n -= 1;
                    if *n == 0 {
                        set.remove(&id);
                    }
                }
                i += 1;
            }
            let Some(&(next, _, _)) = events.get(i) else {
                break;
            };
            let cell = Cell {
                decision: decisions.keys().next().map(|&id| {
                    let r = &self.rules[id as usize];
                    (id, r.action, r.audit)
                }),
                log: logs.keys().next().copied(),
                allow: allows.keys().next().copied(),
            };
            if cell == Cell::default() {
                continue;
            }
            let (first, last) = (pos as u16, (next - 1) as u16);
            match out.last_mut() {
                Some(prev) if prev.cell == cell && u32::from(prev.last) + 1 == pos => {
                    prev.last = last;
                }
                _ => out.push(Segment { first, last, cell }),
            }
        }
        out
    }

    /// Whether a rule is of the cluster tier (which comes first in id order).
    pub(crate) fn is_cluster(&self, id: RuleId) -> bool {
        id < self.cluster_rules
    }
}

/// One namespace's identities.
struct Members<'a> {
    name: &'a str,
    /// As selectors see them.
    labels: Labels,
    identities: Vec<(u32, &'a Labels)>,
}

/// What one endpoint's compilation looks things up in.
struct World<'a, 'p> {
    view: &'a ClusterView,
    ep: &'a LocalEndpoint,
    /// Allocated identities (reserved ones never match a selector) by namespace.
    namespaces: Vec<Members<'a>>,
    /// Selectors resolved so far: policies repeat them a lot.
    resolved: RefCell<HashMap<&'p EndpointSelector, Rc<[u32]>>>,
}

impl<'a, 'p> World<'a, 'p> {
    fn new(view: &'a ClusterView, ep: &'a LocalEndpoint) -> Self {
        let mut by_namespace: BTreeMap<&str, Vec<(u32, &Labels)>> = BTreeMap::new();
        for (&id, il) in view.identities.range(FIRST_ALLOCATED_IDENTITY..) {
            by_namespace
                .entry(il.namespace.as_str())
                .or_default()
                .push((id, &il.labels));
        }
        let namespaces = by_namespace
            .into_iter()
            .map(|(name, identities)| Members {
                name,
                labels: view.namespace_labels(name),
                identities,
            })
            .collect();
        World {
            view,
            ep,
            namespaces,
            resolved: RefCell::new(HashMap::new()),
        }
    }

    fn all_identities(&self) -> impl Iterator<Item = u32> + '_ {
        self.namespaces
            .iter()
            .flat_map(|m| m.identities.iter().map(|(id, _)| *id))
    }

    /// The identities a selector matches.
    fn matching(&self, sel: &'p EndpointSelector) -> Rc<[u32]> {
        if let Some(ids) = self.resolved.borrow().get(sel) {
            return ids.clone();
        }
        let mut ids = Vec::new();
        for ns in &self.namespaces {
            let reached = match &sel.namespaces {
                NamespaceScope::Only(only) => only == ns.name,
                NamespaceScope::Selector(s) => s.matches(&ns.labels),
                NamespaceScope::All => true,
            };
            if reached {
                ids.extend(
                    ns.identities
                        .iter()
                        .filter(|(_, labels)| sel.pods.matches(labels))
                        .map(|(id, _)| *id),
                );
            }
        }
        let ids: Rc<[u32]> = ids.into();
        self.resolved.borrow_mut().insert(sel, ids.clone());
        ids
    }

    /// A rule's ports: those that hold for every peer (numeric, and named ones of
    /// the local endpoint for ingress), and for egress the named ports each peer
    /// identity resolves itself (protocol as the rule gives it, name).
    fn ports<'r>(&self, rule: &'r Rule, d: Direction) -> (Ranges, Vec<(Protocol, &'r str)>) {
        if rule.ports.is_empty() {
            let all = Protocol::ALL.iter().map(|&p| (p, 0, u16::MAX)).collect();
            return (all, Vec::new());
        }
        let mut fixed = Vec::new();
        let mut named = Vec::new();
        for pm in &rule.ports {
            match &pm.ports {
                Ports::Range(a, b) => {
                    if a <= b {
                        fixed.push((Protocol::key_for(pm.protocol.0), *a, *b));
                    }
                }
                Ports::Named(name) => match d {
                    Direction::Ingress => fixed.extend(resolve_named(
                        &[(pm.protocol, name.as_str())],
                        &self.ep.named_ports,
                    )),
                    Direction::Egress => named.push((pm.protocol, name.as_str())),
                },
            }
        }
        (fixed, named)
    }
}

/// Named ports (protocol, name) against what an endpoint declares.
fn resolve_named(named: &[(Protocol, &str)], declared: &[NamedPort]) -> Ranges {
    let mut out = Vec::new();
    for &(proto, name) in named {
        for np in declared {
            if np.name == name && np.protocol == proto {
                out.push((Protocol::key_for(proto.0), np.port, np.port));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
