//! Network policy as the agent shows it (`netctl policy …`, `netctl monitor`): what
//! an apply wrote, the stored objects, one endpoint's effective rules beside its
//! kernel maps, a trace, flow events, and the control plane's status. Plain types
//! (strings and numbers), so clients need nothing of `strait-policy`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use crate::routes::EntryState;

/// `--policy-mode`: whether denies are enforced or only recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    #[default]
    Enforce,
    /// Every deny is recorded and counted; the packet passes.
    Audit,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Enforce => "enforce",
            PolicyMode::Audit => "audit",
        }
    }
}

impl std::fmt::Display for PolicyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PolicyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "enforce" => Ok(PolicyMode::Enforce),
            "audit" => Ok(PolicyMode::Audit),
            other => Err(format!(
                "unknown policy mode {other:?}: use enforce or audit"
            )),
        }
    }
}

/// What `netctl policy apply` wrote: every object of the file, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    /// The store revision of the write; a node enforces it once its
    /// [`PolicyStatus::applied_revision`] reaches this.
    pub revision: i64,
    /// The objects' keys, as `list` names them (`policy/k8s/NS/NAME`,
    /// `policy/cluster/NAME`, `namespaces/NAME`).
    pub keys: Vec<String>,
}

/// One stored object (`netctl policy get|list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyObject {
    pub key: String,
    /// Its store revision (of the last write).
    pub revision: i64,
    /// The document as it was applied.
    pub source: serde_json::Value,
    /// The normalized policy every node compiles, or a namespace's labels.
    pub normalized: serde_json::Value,
    /// Who wrote it: `netctl`, or the Kubernetes API server through the agent.
    #[serde(default, skip_serializing_if = "crate::Origin::is_netctl")]
    pub origin: crate::Origin,
}

/// One rule in evaluation order, as events and counters name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleView {
    pub id: u32,
    /// `NS/NAME` or `cluster/NAME`.
    pub policy: String,
    /// Its index in the policy's list for the direction.
    pub index: usize,
    /// allow, deny, pass, log.
    pub action: String,
    pub audit: bool,
}

/// One entry of an endpoint's policy maps, wanted or found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// `identity N` or `cidr NET (class N)`.
    pub peer: String,
    /// tcp, udp, sctp, icmp, icmpv6, other.
    pub protocol: String,
    /// `first-last` (or one number).
    pub ports: String,
    /// What the cell holds: `decision R action[ audit]`, `log R`, `allow R`, joined by `; `.
    pub cell: String,
    pub state: EntryState,
}

/// One direction of `netctl policy show --endpoint`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionView {
    pub isolated: bool,
    pub default_audit: bool,
    /// The rules that apply to the endpoint in this direction, in evaluation order.
    pub rules: Vec<RuleView>,
    /// The compiled tables beside the kernel's (ok, missing, stale per entry).
    pub entries: Vec<TableEntry>,
}

/// `netctl policy show --endpoint ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPolicyView {
    pub endpoint: String,
    pub node: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub identity: Option<u32>,
    /// The host end of its veth, when it is on this node.
    pub ifindex: Option<u32>,
    /// The identity the kernel holds for it (None: no entry).
    pub installed_identity: Option<u32>,
    /// Every entry is `ok` and the kernel's identity is the record's.
    pub in_sync: bool,
    pub ingress: DirectionView,
    pub egress: DirectionView,
}

/// One side of a trace: `ENDPOINT-ID`, `[NS/]k=v,...` or an address or CIDR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracePeer {
    /// As given.
    pub spec: String,
    pub endpoint: Option<String>,
    pub node: Option<String>,
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub identity: u32,
    pub address: Option<IpAddr>,
}

/// One direction's decision in a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStep {
    /// egress (of the source) or ingress (of the destination).
    pub direction: String,
    /// The endpoint whose policy decides; None when that side is not an endpoint.
    pub endpoint: Option<String>,
    /// The policies selecting it for this direction.
    pub selected_by: Vec<String>,
    pub allowed: bool,
    pub audit: bool,
    /// The deciding rule; None for the default (allow when not isolated, deny when
    /// isolated).
    pub rule: Option<RuleView>,
    pub log_rule: Option<RuleView>,
    /// What the kernel's maps decide, when the endpoint is on this node and has
    /// entries; None otherwise.
    pub kernel: Option<KernelVerdict>,
    /// The store's policies and the kernel's maps decide differently.
    pub differs: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelVerdict {
    pub allowed: bool,
    pub audit: bool,
    pub rule: Option<u32>,
}

/// `netctl policy trace`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceView {
    pub from: TracePeer,
    pub to: TracePeer,
    pub protocol: String,
    pub port: u16,
    pub steps: Vec<TraceStep>,
    /// Both directions allow (audit denies pass).
    pub allowed: bool,
}

/// One verdict, named (`netctl monitor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEvent {
    /// Unix time, nanoseconds.
    pub time_ns: u64,
    pub node: String,
    /// ingress or egress, of `endpoint`.
    pub direction: String,
    /// The local endpoint the verdict was made for.
    pub endpoint: Option<String>,
    pub src: FlowPeer,
    pub dst: FlowPeer,
    pub protocol: String,
    pub allowed: bool,
    pub audit: bool,
    pub rule: Option<RuleView>,
    pub log_rule: Option<RuleView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowPeer {
    pub address: IpAddr,
    pub port: u16,
    pub identity: u32,
    pub endpoint: Option<String>,
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The policy control plane on one node (`netctl status`, latency measurement).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyStatus {
    pub mode: PolicyMode,
    /// The store revision this node's kernel maps reflect.
    pub applied_revision: i64,
    /// Local endpoints with policy installed.
    pub endpoints_enforced: usize,
    /// Rules over all policies (both directions).
    pub rules: usize,
    pub policies: usize,
    pub identities: usize,
    /// Entries of the ipcache (address → identity).
    pub ipcache_entries: usize,
    /// The last failure to compile or install, if the last pass failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A CIDR given where an endpoint or labels could be, for a trace.
pub fn parse_cidr_or_address(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        assert_eq!("audit".parse::<PolicyMode>(), Ok(PolicyMode::Audit));
        assert_eq!(PolicyMode::default().to_string(), "enforce");
        assert!("off".parse::<PolicyMode>().unwrap_err().contains("enforce"));
    }
}
