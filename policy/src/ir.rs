//! The normalized policy both document kinds become, and the semantics the
//! compiler, the reference evaluator and the datapath share.
//!
//! # Evaluation, per endpoint and direction
//! 1. **Cluster tier** (strait's cluster-wide policies that select the endpoint, by
//!    `order` ascending, then name): the first rule whose peers and ports match
//!    decides if its action is `Allow` or `Deny`; `Pass` skips the rest of the
//!    cluster tier; `Log` records the flow and evaluation goes on.
//! 2. **Namespaced tier** (Kubernetes NetworkPolicies of the endpoint's namespace
//!    that select it): allowed if any rule of any of them matches (rules are all
//!    `Allow`; order does not matter).
//! 3. **Default**: if any policy of either tier selects the endpoint *for this
//!    direction* (the endpoint is *isolated*), denied; otherwise allowed.
//!
//! A deny is not enforced (the packet passes, the verdict is recorded as an audit
//! deny) when the deciding policy is in audit (`audit: true`, or the agent runs
//! with `--policy-mode audit`); a default deny is audit when every policy isolating
//! the endpoint for that direction is in audit.
//!
//! Replies of an allowed connection are not evaluated (conntrack), and traffic
//! from the node's own host to its endpoints is always allowed (kubelet probes),
//! as in Calico and Cilium.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::selector::LabelSelector;

/// The namespace endpoints are in when the runtime gave none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The label every namespace carries with its own name (as Kubernetes since 1.21
/// sets `kubernetes.io/metadata.name`), so a `namespaceSelector` can name one.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
    /// Skip the rest of the cluster tier: the namespaced policies decide.
    Pass,
    /// Record the flow and go on to the next rule.
    Log,
}

/// Which policy: its kind, namespace and name. Also its key in the store, below
/// `/strait/v1/policy/`: `k8s/<namespace>/<name>` or `cluster/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PolicyKey {
    /// A Kubernetes `networking.k8s.io/v1` NetworkPolicy.
    K8s { namespace: String, name: String },
    /// strait's cluster-wide policy.
    Cluster { name: String },
}

impl PolicyKey {
    /// The store key's suffix below `/strait/v1/policy/`.
    pub fn store_suffix(&self) -> String {
        match self {
            PolicyKey::K8s { namespace, name } => format!("k8s/{namespace}/{name}"),
            PolicyKey::Cluster { name } => format!("cluster/{name}"),
        }
    }
}

impl fmt::Display for PolicyKey {
    /// `NAMESPACE/NAME` for Kubernetes policies, `cluster/NAME` for cluster-wide
    /// ones: how `netctl` names them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyKey::K8s { namespace, name } => write!(f, "{namespace}/{name}"),
            PolicyKey::Cluster { name } => write!(f, "cluster/{name}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Evaluated first, by `order` ascending (ties by name).
    Cluster {
        order: f64,
    },
    Namespaced,
}

/// Which namespaces a selector reaches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceScope {
    /// One namespace by name (a Kubernetes policy's own).
    Only(String),
    /// Namespaces whose labels match (labels include [`NAMESPACE_NAME_LABEL`]).
    Selector(LabelSelector),
    /// Every namespace.
    All,
}

/// A set of endpoints: those in a namespace the scope reaches whose labels the
/// selector matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EndpointSelector {
    pub namespaces: NamespaceScope,
    pub pods: LabelSelector,
}

/// Who is on the other side of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    /// Endpoints of the cluster, by identity.
    Endpoints(EndpointSelector),
    /// Addresses (any source or destination: endpoints, hosts, the internet),
    /// except the listed sub-prefixes.
    Cidr { net: IpNet, except: Vec<IpNet> },
}

/// IANA protocol numbers the policy maps key by; every other protocol is keyed as
/// [`Protocol::OTHER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Protocol(pub u8);

impl Protocol {
    pub const ICMP: Protocol = Protocol(1);
    pub const TCP: Protocol = Protocol(6);
    pub const UDP: Protocol = Protocol(17);
    pub const ICMPV6: Protocol = Protocol(58);
    pub const SCTP: Protocol = Protocol(132);
    /// Any protocol not listed above, in the maps' keys.
    pub const OTHER: Protocol = Protocol(255);
    /// Every key the maps distinguish, for rules that name no protocol.
    pub const ALL: [Protocol; 6] = [
        Protocol::TCP,
        Protocol::UDP,
        Protocol::SCTP,
        Protocol::ICMP,
        Protocol::ICMPV6,
        Protocol::OTHER,
    ];

    /// The key the maps use for a packet's protocol number.
    pub fn key_for(number: u8) -> Protocol {
        match number {
            1 | 6 | 17 | 58 | 132 => Protocol(number),
            _ => Protocol::OTHER,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Protocol::TCP => f.write_str("tcp"),
            Protocol::UDP => f.write_str("udp"),
            Protocol::SCTP => f.write_str("sctp"),
            Protocol::ICMP => f.write_str("icmp"),
            Protocol::ICMPV6 => f.write_str("icmpv6"),
            Protocol::OTHER => f.write_str("other"),
            Protocol(n) => write!(f, "proto-{n}"),
        }
    }
}

/// Which packets of a protocol. The maps' "port" is the destination port for TCP,
/// UDP and SCTP, `type << 8 | code` for ICMP and ICMPv6, 0 for other protocols.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ports {
    /// First and last, inclusive.
    Range(u16, u16),
    /// A port the endpoint on the server side declares by this name (Kubernetes
    /// named ports: resolved per endpoint by the compiler).
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMatch {
    pub protocol: Protocol,
    pub ports: Ports,
}

impl PortMatch {
    /// Every packet of the protocol.
    pub fn any(protocol: Protocol) -> Self {
        Self {
            protocol,
            ports: Ports::Range(0, u16::MAX),
        }
    }

    /// ICMP or ICMPv6 by type, and code if given.
    pub fn icmp(protocol: Protocol, icmp_type: u8, code: Option<u8>) -> Self {
        let base = u16::from(icmp_type) << 8;
        let ports = match code {
            Some(c) => Ports::Range(base | u16::from(c), base | u16::from(c)),
            None => Ports::Range(base, base | 0xff),
        };
        Self { protocol, ports }
    }
}

/// One rule of one direction of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub action: Action,
    /// Any of these; empty means every peer (any address).
    pub peers: Vec<Peer>,
    /// Any of these; empty means every protocol and port.
    pub ports: Vec<PortMatch>,
}

/// A policy in the normalized form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub key: PolicyKey,
    pub tier: Tier,
    /// Denies of this policy are recorded, not enforced.
    pub audit: bool,
    /// The endpoints it applies to.
    pub subject: EndpointSelector,
    /// `None`: the policy does not apply to this direction (it does not isolate
    /// the endpoint for it). `Some(vec![])`: it isolates and allows nothing.
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    pub fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}
