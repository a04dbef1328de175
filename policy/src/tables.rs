//! What the compiler produces for one local endpoint and one direction: the content
//! of its eBPF policy maps (`ebpf/include/strait/abi.h`), and the merge the datapath
//! does of what it finds there ([`Lookup::verdict`]), written once here so that the
//! compiler's tests, `netctl policy trace` (which reads the tables back from the
//! kernel) and the C program agree on it.
//!
//! A new flow is looked up twice: by the peer's **identity** (from the ipcache) and
//! by the peer's address's **CIDR class** (the longest prefix among the CIDRs the
//! endpoint's rules name; the rules matching an address are exactly those whose
//! CIDRs contain its longest matching prefix). Each lookup is keyed further by
//! protocol and port and yields a [`Cell`]: the first cluster-tier rule of its kind
//! that decides, the first log rule, and a namespaced rule that allows. The first
//! rule over both lookups is the one with the smaller id, because rule ids are
//! numbered in evaluation order.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::ir::{Action, Direction, PolicyKey, Protocol};

/// Identities below this are reserved; the store allocates from here.
pub const FIRST_ALLOCATED_IDENTITY: u32 = 256;
/// The node's own host (its addresses): always allowed into its endpoints.
pub const IDENTITY_HOST: u32 = 1;
/// Any address the ipcache does not know.
pub const IDENTITY_WORLD: u32 = 2;
/// Another node of the cluster (its underlay and tunnel addresses).
pub const IDENTITY_REMOTE_NODE: u32 = 3;
/// Set in the identity slot of a rule key that holds a CIDR class instead.
pub const CIDR_CLASS_FLAG: u32 = 0x8000_0000;

/// A rule's number: its place in evaluation order across all policies (cluster
/// tier first, by order; then namespaced). What events and counters name.
pub type RuleId = u32;

/// Where a rule comes from, for events, counters and `trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    pub id: RuleId,
    pub policy: PolicyKey,
    pub direction: Direction,
    /// Its index in the policy's list for that direction.
    pub index: usize,
    pub action: Action,
    pub audit: bool,
}

/// What one lookup found for one (peer, protocol, port).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// The first cluster-tier rule that matches with action allow, deny or pass,
    /// with its action and whether its policy is in audit.
    pub decision: Option<(RuleId, Action, bool)>,
    /// The first cluster-tier log rule that matches.
    pub log: Option<RuleId>,
    /// A namespaced rule that allows (the lowest id).
    pub allow: Option<RuleId>,
}

/// A port range with one cell: segments of one (peer, protocol) never overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub first: u16,
    pub last: u16,
    pub cell: Cell,
}

/// One endpoint, one direction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionTables {
    /// Some policy selects the endpoint for this direction: what no rule allows is
    /// denied.
    pub isolated: bool,
    /// Every policy isolating it is in audit: the default deny is not enforced.
    pub default_audit: bool,
    /// (peer identity, protocol) → port segments.
    pub identities: BTreeMap<(u32, Protocol), Vec<Segment>>,
    /// The CIDR classes: each prefix the rules name → its class number (LPM).
    pub cidrs: BTreeMap<IpNet, u32>,
    /// (CIDR class, protocol) → port segments.
    pub classes: BTreeMap<(u32, Protocol), Vec<Segment>>,
}

/// One local endpoint's tables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointTables {
    pub ingress: DirectionTables,
    pub egress: DirectionTables,
}

impl EndpointTables {
    pub fn direction(&self, d: Direction) -> &DirectionTables {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub fn direction_mut(&mut self, d: Direction) -> &mut DirectionTables {
        match d {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        }
    }
}

/// The outcome for one new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub allowed: bool,
    /// Denied by policy but passed, because the deciding policy (or every
    /// isolating one, for the default deny) is in audit.
    pub audit: bool,
    /// The rule that decided; `None` for the default (allow when not isolated,
    /// deny when isolated).
    pub rule: Option<RuleId>,
    /// A log rule matched before the decision.
    pub log: Option<RuleId>,
}

/// The two cells a new flow's lookups found, and the endpoint's flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lookup {
    pub by_identity: Option<Cell>,
    pub by_cidr: Option<Cell>,
    pub isolated: bool,
    pub default_audit: bool,
}

impl Lookup {
    /// The datapath's merge (policy.c does the same).
    pub fn verdict(&self) -> Verdict {
        let cells = [self.by_identity, self.by_cidr];
        let decision = cells
            .iter()
            .flatten()
            .filter_map(|c| c.decision)
            .min_by_key(|d| d.0);
        let log = cells
            .iter()
            .flatten()
            .filter_map(|c| c.log)
            .filter(|l| decision.is_none_or(|d| *l < d.0))
            .min();
        match decision {
            Some((rule, Action::Allow, _)) => {
                return Verdict {
                    allowed: true,
                    audit: false,
                    rule: Some(rule),
                    log,
                };
            }
            Some((rule, Action::Deny, audit)) => {
                return Verdict {
                    allowed: audit,
                    audit,
                    rule: Some(rule),
                    log,
                };
            }
            // Pass (or no cluster-tier decision): the namespaced tier decides.
            _ => {}
        }
        if let Some(rule) = cells.iter().flatten().filter_map(|c| c.allow).min() {
            return Verdict {
                allowed: true,
                audit: false,
                rule: Some(rule),
                log,
            };
        }
        if self.isolated {
            Verdict {
                allowed: self.default_audit,
                audit: self.default_audit,
                rule: None,
                log,
            }
        } else {
            Verdict {
                allowed: true,
                audit: false,
                rule: None,
                log,
            }
        }
    }
}

impl DirectionTables {
    /// The cell for (key, protocol, port) in `map`, as the LPM lookup on the
    /// port's prefix decomposition finds it.
    fn cell(
        map: &BTreeMap<(u32, Protocol), Vec<Segment>>,
        key: u32,
        proto: Protocol,
        port: u16,
    ) -> Option<Cell> {
        map.get(&(key, proto))?
            .iter()
            .find(|s| s.first <= port && port <= s.last)
            .map(|s| s.cell)
    }

    /// The CIDR class of an address: its longest matching prefix's.
    pub fn class_of(&self, addr: std::net::IpAddr) -> Option<u32> {
        self.cidrs
            .iter()
            .filter(|(net, _)| net.contains(&addr))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(_, class)| *class)
    }

    /// What the datapath finds for a new flow with this peer (protocol number as
    /// on the wire; port as [`crate::ir::Ports`] defines it).
    pub fn lookup(&self, identity: u32, addr: std::net::IpAddr, protocol: u8, port: u16) -> Lookup {
        let proto = Protocol::key_for(protocol);
        Lookup {
            by_identity: Self::cell(&self.identities, identity, proto, port),
            by_cidr: self
                .class_of(addr)
                .and_then(|c| Self::cell(&self.classes, c, proto, port)),
            isolated: self.isolated,
            default_audit: self.default_audit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(
        decision: Option<(RuleId, Action, bool)>,
        log: Option<RuleId>,
        allow: Option<RuleId>,
    ) -> Cell {
        Cell {
            decision,
            log,
            allow,
        }
    }

    #[test]
    fn first_rule_over_both_lookups_decides() {
        let l = Lookup {
            by_identity: Some(cell(Some((5, Action::Deny, false)), None, None)),
            by_cidr: Some(cell(Some((3, Action::Allow, false)), None, None)),
            isolated: true,
            default_audit: false,
        };
        let v = l.verdict();
        assert!(v.allowed);
        assert_eq!(v.rule, Some(3));
    }

    #[test]
    fn pass_goes_to_the_namespaced_tier_and_isolation_decides_last() {
        let pass = cell(Some((1, Action::Pass, false)), None, None);
        let isolated = Lookup {
            by_identity: Some(pass),
            by_cidr: None,
            isolated: true,
            default_audit: false,
        };
        assert!(!isolated.verdict().allowed);
        let allowed = Lookup {
            by_cidr: Some(cell(None, None, Some(40))),
            ..isolated
        };
        assert_eq!(allowed.verdict().rule, Some(40));
        assert!(allowed.verdict().allowed);
        let open = Lookup {
            isolated: false,
            ..isolated
        };
        assert!(open.verdict().allowed);
    }

    #[test]
    fn audit_denies_pass_and_say_so() {
        let l = Lookup {
            by_identity: Some(cell(Some((2, Action::Deny, true)), Some(1), None)),
            ..Lookup::default()
        };
        let v = l.verdict();
        assert!(v.allowed && v.audit);
        assert_eq!(v.log, Some(1));
        let d = Lookup {
            isolated: true,
            default_audit: true,
            ..Lookup::default()
        };
        assert!(d.verdict().allowed && d.verdict().audit);
    }

    #[test]
    fn a_log_rule_after_the_decision_is_not_reported() {
        let l = Lookup {
            by_identity: Some(cell(Some((2, Action::Allow, false)), None, None)),
            by_cidr: Some(cell(None, Some(7), None)),
            ..Lookup::default()
        };
        assert_eq!(l.verdict().log, None);
    }
}
