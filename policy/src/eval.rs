//! The reference evaluator: the verdict for one new flow, straight from the
//! semantics in [`crate::ir`] (walk the rules in order, match peers and ports as
//! written), without the compiled tables. It is the oracle the compiler is tested
//! against and what `netctl policy trace` shows beside what the kernel's maps say.
//!
//! Like the tables, it decides new flows that reach policy: replies of allowed
//! connections (conntrack) and the node's own host reaching its endpoints
//! ([`host_bypass`]) are let through by the datapath before any lookup.

use std::net::IpAddr;

use crate::compile::{Compiler, reaches, takes_part};
use crate::ir::{Action, Direction, Peer as RulePeer, Ports, Protocol, Rule, Tier};
use crate::tables::{FIRST_ALLOCATED_IDENTITY, IDENTITY_HOST, RuleRef, Verdict};
use crate::view::{ClusterView, IdentityLabels, LocalEndpoint, NamedPort};

/// Who the other side of a flow is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEndpoint {
    /// An endpoint of the cluster (local or remote).
    Endpoint {
        identity: u32,
        labels: IdentityLabels,
        named_ports: Vec<NamedPort>,
    },
    /// A reserved identity ([`IDENTITY_HOST`], `IDENTITY_WORLD`,
    /// `IDENTITY_REMOTE_NODE`): matched by CIDR rules only.
    Reserved(u32),
}

impl PeerEndpoint {
    pub fn identity(&self) -> u32 {
        match self {
            PeerEndpoint::Endpoint { identity, .. } => *identity,
            PeerEndpoint::Reserved(id) => *id,
        }
    }
}

/// The other side of a flow: its address and who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub addr: IpAddr,
    pub who: PeerEndpoint,
}

/// A verdict and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub verdict: Verdict,
    /// The policies that select the endpoint for the direction (isolate it), in
    /// evaluation order.
    pub selecting: Vec<crate::ir::PolicyKey>,
    /// The rule that decided (`verdict.rule`); `None` for the default.
    pub deciding: Option<RuleRef>,
    /// The first log rule before the decision (`verdict.log`).
    pub log: Option<RuleRef>,
}

/// Traffic the datapath lets through before policy: the node's own host reaching
/// its endpoints (kubelet probes), as Calico and Cilium do.
pub fn host_bypass(d: Direction, peer: &Peer) -> bool {
    d == Direction::Ingress && peer.who == PeerEndpoint::Reserved(IDENTITY_HOST)
}

/// The verdict for a new flow of `ep` in direction `d` with `peer` (`protocol` as
/// on the wire, `port` as [`Ports`] defines it: destination port, or ICMP
/// `type << 8 | code`).
pub fn evaluate(
    compiler: &Compiler,
    view: &ClusterView,
    ep: &LocalEndpoint,
    d: Direction,
    peer: &Peer,
    protocol: u8,
    port: u16,
) -> Explanation {
    let proto = Protocol::key_for(protocol);
    let selecting = compiler.selecting_indices(view, ep, d);
    let flow = Flow {
        view,
        ep,
        d,
        peer,
        proto,
        port,
    };
    let mut log: Option<&RuleRef> = None;
    let mut decision: Option<&RuleRef> = None;
    let mut allow: Option<&RuleRef> = None;
    // Rules in id order: the cluster tier by order, then the namespaced tier.
    'policies: for &pi in &selecting {
        let policy = &compiler.policies()[pi];
        let cluster = matches!(policy.tier, Tier::Cluster { .. });
        if cluster && decision.is_some() {
            continue;
        }
        let first = compiler.first_rule(pi, d);
        for (i, rule) in policy.rules(d).unwrap_or_default().iter().enumerate() {
            if !takes_part(policy, rule) || !flow.matches(rule) {
                continue;
            }
            let r = &compiler.rules()[first as usize + i];
            if !cluster {
                allow = Some(r);
                break 'policies;
            }
            if rule.action == Action::Log {
                log.get_or_insert(r);
            } else {
                decision = Some(r);
                continue 'policies;
            }
        }
    }
    let verdict_of = |rule: Option<&RuleRef>, allowed: bool, audit: bool| Verdict {
        allowed,
        audit,
        rule: rule.map(|r| r.id),
        log: log.map(|r| r.id),
    };
    let (verdict, deciding) = match decision {
        Some(r) if r.action == Action::Allow => (verdict_of(Some(r), true, false), Some(r)),
        Some(r) if r.action == Action::Deny => (verdict_of(Some(r), r.audit, r.audit), Some(r)),
        // Pass, or no cluster-tier rule matched: the namespaced tier decides.
        _ => match allow {
            Some(r) => (verdict_of(Some(r), true, false), Some(r)),
            None if selecting.is_empty() => (verdict_of(None, true, false), None),
            None => {
                let audit = compiler.default_audit(&selecting);
                (verdict_of(None, audit, audit), None)
            }
        },
    };
    Explanation {
        verdict,
        selecting: selecting
            .iter()
            .map(|&i| compiler.policies()[i].key.clone())
            .collect(),
        deciding: deciding.cloned(),
        log: log.cloned(),
    }
}

/// One flow being evaluated.
struct Flow<'a> {
    view: &'a ClusterView,
    ep: &'a LocalEndpoint,
    d: Direction,
    peer: &'a Peer,
    proto: Protocol,
    port: u16,
}

impl Flow<'_> {
    /// The peer as an endpoint selectors can match (reserved identities never are).
    fn endpoint(&self) -> Option<(&IdentityLabels, &[NamedPort])> {
        match &self.peer.who {
            PeerEndpoint::Endpoint {
                identity,
                labels,
                named_ports,
            } if *identity >= FIRST_ALLOCATED_IDENTITY => Some((labels, named_ports)),
            _ => None,
        }
    }

    /// A rule matches when one of its peers does together with one of its ports.
    /// Egress named ports are the destination endpoint's, so they only match with
    /// a peer that is an endpoint: a selector, or "every peer".
    fn matches(&self, rule: &Rule) -> bool {
        let peer_ports = self.endpoint().map_or(&[][..], |(_, p)| p);
        if rule.peers.is_empty() {
            return self.ports_match(rule, peer_ports);
        }
        rule.peers.iter().any(|p| match p {
            RulePeer::Endpoints(sel) => {
                self.endpoint().is_some_and(|(il, _)| {
                    reaches(&sel.namespaces, self.view, &il.namespace)
                        && sel.pods.matches(&il.labels)
                }) && self.ports_match(rule, peer_ports)
            }
            RulePeer::Cidr { net, except } => {
                net.contains(&self.peer.addr)
                    && !except.iter().any(|x| x.contains(&self.peer.addr))
                    && self.ports_match(rule, &[])
            }
        })
    }

    /// Whether one of the rule's ports holds, with `peer_ports` the named ports of
    /// the egress destination as this peer entry sees it.
    fn ports_match(&self, rule: &Rule, peer_ports: &[NamedPort]) -> bool {
        if rule.ports.is_empty() {
            return true;
        }
        rule.ports.iter().any(|pm| {
            Protocol::key_for(pm.protocol.0) == self.proto
                && match &pm.ports {
                    Ports::Range(a, b) => *a <= self.port && self.port <= *b,
                    Ports::Named(name) => {
                        let declared = match self.d {
                            Direction::Ingress => &self.ep.named_ports[..],
                            Direction::Egress => peer_ports,
                        };
                        declared.iter().any(|np| {
                            np.name == *name && np.protocol == pm.protocol && np.port == self.port
                        })
                    }
                }
        })
    }
}
