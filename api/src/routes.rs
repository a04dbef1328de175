//! What `netctl routes` shows (served at `/v1/routes`): every entry the fabric wants
//! beside what the kernel has, each `ok`, `missing` or `stale`, and the fabric's
//! warnings.

use serde::{Deserialize, Serialize};

/// The fabric's view of this node's kernel state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteReport {
    pub node: String,
    /// `none`, `vxlan` or `host-gw`.
    pub mode: String,
    /// `strait.vxlan` as found (vxlan mode), or `None` when absent or not wanted.
    pub device: Option<DeviceReport>,
    /// Desired entries (`ok` or `missing`) followed by kernel entries strait owns but no
    /// longer wants (`stale`).
    pub entries: Vec<ReportEntry>,
    pub warnings: Vec<Warning>,
    /// When the kernel was read for this report, seconds since the Unix epoch.
    pub checked_at: u64,
    /// Reconciliations completed since the fabric started.
    pub reconciles: u64,
    /// Of those, the ones that failed (`strait_fabric_reconciles_total{result="error"}`).
    #[serde(default)]
    pub reconcile_errors: u64,
    /// The last reconciliation's failure, if the last one failed.
    pub last_error: Option<String>,
    /// Kernel routes of another origin that take traffic from a block of the fabric:
    /// the same prefix, or a more specific one inside it (issue 19, item 16).
    #[serde(default)]
    pub overrides: Vec<RouteOverride>,
}

/// A kernel route that overrides the fabric's route to a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteOverride {
    /// The kernel's route as `ip route` prints it.
    pub route: String,
    /// The block whose traffic it takes (part of, or all of it).
    pub block: ipnet::IpNet,
    /// The node the block belongs to (`None`: no affinity).
    pub node: Option<String>,
    /// What it does, in words.
    pub reason: String,
}

impl RouteReport {
    /// Entries in state `state`.
    pub fn count(&self, state: EntryState) -> usize {
        self.entries.iter().filter(|e| e.state == state).count()
    }

    /// Everything wanted is there, nothing stale is left and no other route takes a
    /// block's traffic.
    pub fn converged(&self) -> bool {
        self.entries.iter().all(|e| e.state == EntryState::Ok) && self.overrides.is_empty()
    }
}

/// The VXLAN device as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceReport {
    pub name: String,
    pub ifindex: u32,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<std::net::IpAddr>,
    pub mac: Option<String>,
    pub mtu: u32,
    pub up: bool,
}

/// One row of `netctl routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportEntry {
    pub kind: EntryKind,
    /// The node the entry is for (this node for blackholes and tunnel addresses);
    /// `None` for a stale entry no node claims.
    pub node: Option<String>,
    /// The entry as `ip`/`bridge` would print it, e.g. `10.244.1.0/26 via 10.244.1.1
    /// dev strait.vxlan onlink proto 83`.
    pub entry: String,
    pub state: EntryState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    Route,
    Fdb,
    Neighbour,
    Address,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryState {
    /// Wanted and in the kernel as wanted.
    Ok,
    /// Wanted and absent (or different) in the kernel.
    Missing,
    /// In the kernel, strait's, and not wanted.
    Stale,
}

/// Something that keeps the fabric from reaching part of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// The node concerned; `None` for cluster-wide conditions.
    pub node: Option<String>,
    pub message: String,
}

impl Warning {
    pub fn node(node: &str, message: String) -> Self {
        Self {
            node: Some(node.to_string()),
            message,
        }
    }

    pub fn cluster(message: String) -> Self {
        Self {
            node: None,
            message,
        }
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.node {
            Some(node) => write!(f, "node {node}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let report = RouteReport {
            node: "h1".into(),
            mode: "vxlan".into(),
            entries: vec![ReportEntry {
                kind: EntryKind::Fdb,
                node: Some("h2".into()),
                entry: "0e:00:00:00:00:02 dst 10.0.0.2".into(),
                state: EntryState::Missing,
            }],
            ..Default::default()
        };
        let v = serde_json::to_value(&report).expect("json");
        assert_eq!(v["entries"][0]["kind"], "fdb");
        assert_eq!(v["entries"][0]["state"], "missing");
        let back: RouteReport = serde_json::from_value(v).expect("parse");
        assert_eq!(back, report);
        assert!(!report.converged());
        let overridden = RouteReport {
            overrides: vec![RouteOverride {
                route: "10.244.2.0/29 via 10.0.0.253 dev eth0 proto 186".into(),
                block: "10.244.2.0/26".parse().expect("net"),
                node: Some("h2".into()),
                reason: "more specific".into(),
            }],
            ..Default::default()
        };
        assert!(
            !overridden.converged(),
            "an overridden block is not all well"
        );
        let old: RouteReport = serde_json::from_str(
            r#"{"node":"h1","mode":"bgp","device":null,"entries":[],"warnings":[],
                "checked_at":0,"reconciles":0,"last_error":null}"#,
        )
        .expect("a report without overrides reads");
        assert!(old.converged());
    }
}
