//! `netctl doctor` and `netctl topology`: what one node's agent finds when it checks
//! itself ([`NodeHealth`]), and the answer of `GET /v1/doctor` (this node, or every
//! node asked through the store with `?all_nodes=true`).
//!
//! A check says one thing a support engineer would look at (forwarding is on, the
//! store answers, the tunnel carries full-size packets to each peer), its verdict, and
//! when it is not `ok` the fix in one sentence.

use serde::{Deserialize, Serialize};

/// How a check came out. Ordered: the worst verdict of a report decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Ok,
    /// Did not apply here (no BGP on a vxlan node), or could not be decided; `detail`
    /// says which.
    Skip,
    /// Works now, but will not for long, or not for everything.
    Warn,
    /// Broken: some traffic does not flow, or the agent cannot do its job.
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Skip => "skip",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }

    /// `netctl doctor`'s exit status: 0 healthy, 1 warnings, 2 failures.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Ok | Verdict::Skip => 0,
            Verdict::Warn => 1,
            Verdict::Fail => 2,
        }
    }
}

/// One check of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Stable identifier (`ip-forwarding`, `mtu`, `fabric`, …): what scripts match on.
    pub name: String,
    pub verdict: Verdict,
    /// What was found, in one line.
    pub detail: String,
    /// What to do about it, in one sentence; only when the verdict is warn or fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: &str, detail: impl Into<String>) -> Self {
        Self::new(name, Verdict::Ok, detail, None)
    }
    pub fn skip(name: &str, detail: impl Into<String>) -> Self {
        Self::new(name, Verdict::Skip, detail, None)
    }
    pub fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Verdict::Warn, detail, Some(fix.into()))
    }
    pub fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Verdict::Fail, detail, Some(fix.into()))
    }
    fn new(name: &str, verdict: Verdict, detail: impl Into<String>, fix: Option<String>) -> Self {
        Self {
            name: name.to_string(),
            verdict,
            detail: detail.into(),
            fix,
        }
    }
}

/// A link of this node to another as its agent sees it: what `netctl topology` draws.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The other end: a node's name, or an external peer's (`bgp/peers/` or an
    /// external IPsec peer's name).
    pub peer: String,
    pub kind: LinkKind,
    /// `up` or the protocol's own state word (`Active`, `connecting`, …).
    pub state: String,
    /// Whether the link works now (a VXLAN tunnel whose FDB entry is in place, an
    /// Established session, an IKE SA with Child SAs).
    pub up: bool,
    /// The peer is a route reflector (BGP) / this node reflects for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkKind {
    /// A VXLAN tunnel to the peer's VTEP.
    Vxlan,
    /// A host-gw route to the peer's underlay.
    HostGw,
    /// A BGP session.
    Bgp,
    /// An IPsec IKE SA (encrypted link).
    Ipsec,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Vxlan => "vxlan",
            LinkKind::HostGw => "host-gw",
            LinkKind::Bgp => "bgp",
            LinkKind::Ipsec => "ipsec",
        }
    }
}

/// What one node's agent found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    pub node: String,
    pub site: String,
    /// `vxlan`, `host-gw`, `bgp`, `none`.
    pub fabric: String,
    pub agent_version: String,
    /// The node's clock when it answered, milliseconds since the Unix epoch.
    pub clock_ms: u64,
    pub checks: Vec<Check>,
    pub links: Vec<Link>,
    /// Blocks affine to the node.
    #[serde(default)]
    pub blocks: usize,
}

impl NodeHealth {
    pub fn worst(&self) -> Verdict {
        self.checks
            .iter()
            .map(|c| c.verdict)
            .max()
            .unwrap_or(Verdict::Ok)
    }
}

/// `GET /v1/doctor`: this node's health, and with `all_nodes` every live node's,
/// asked through the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorReport {
    pub nodes: Vec<NodeHealth>,
    /// Cluster-wide findings of the asking agent (`all_nodes`): nodes that did not
    /// answer, version skew, clock skew.
    #[serde(default)]
    pub cluster: Vec<Check>,
}

impl DoctorReport {
    /// The worst verdict of every node and of the cluster checks.
    pub fn worst(&self) -> Verdict {
        self.nodes
            .iter()
            .map(NodeHealth::worst)
            .chain(self.cluster.iter().map(|c| c.verdict))
            .max()
            .unwrap_or(Verdict::Ok)
    }
}

/// The query of `GET /v1/doctor`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorQuery {
    /// Ask every live node through the store.
    #[serde(default)]
    pub all_nodes: bool,
    /// Only the links (no probes, no kernel reads): what `netctl topology` needs.
    #[serde(default)]
    pub links_only: bool,
    /// Where runtimes look for CNI network configs (default: each agent's own
    /// `--cni-conf-dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_conf_dir: Option<String>,
    /// Where runtimes look for CNI plugins, `:`-separated (default: each agent's own
    /// `--cni-bin-dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_bin_dir: Option<String>,
}

impl DoctorQuery {
    /// As the query string of `GET /v1/doctor` (`?all_nodes=…&…`), the directories
    /// percent-encoded.
    pub fn to_query(&self) -> String {
        let mut parts = vec![format!("all_nodes={}", self.all_nodes)];
        if self.links_only {
            parts.push("links_only=true".into());
        }
        if let Some(d) = &self.cni_conf_dir {
            parts.push(format!("cni_conf_dir={}", crate::query::escape(d)));
        }
        if let Some(d) = &self.cni_bin_dir {
            parts.push(format!("cni_bin_dir={}", crate::query::escape(d)));
        }
        format!("?{}", parts.join("&"))
    }
}

/// Where runtimes look for CNI network configs unless told otherwise.
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// Where runtimes look for CNI plugins: the CNI project's path, and Debian's.
pub const DEFAULT_CNI_BIN_DIR: &str = "/opt/cni/bin:/usr/lib/cni";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_verdict_decides_the_exit_code() {
        let node = |checks| NodeHealth {
            node: "h1".into(),
            site: "default".into(),
            fabric: "vxlan".into(),
            agent_version: "0.1.0".into(),
            clock_ms: 0,
            checks,
            links: vec![],
            blocks: 1,
        };
        let report = DoctorReport {
            nodes: vec![node(vec![
                Check::ok("store", "answers"),
                Check::skip("bgp", "not the bgp fabric"),
            ])],
            cluster: vec![],
        };
        assert_eq!(report.worst().exit_code(), 0);
        let report = DoctorReport {
            nodes: vec![node(vec![Check::warn("ipam", "90% used", "add a pool")])],
            cluster: vec![Check::fail("nodes", "h2 did not answer", "start it")],
        };
        assert_eq!(report.worst(), Verdict::Fail);
        assert_eq!(report.worst().exit_code(), 2);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["nodes"][0]["checks"][0]["verdict"], "warn");
        assert_eq!(json["nodes"][0]["checks"][0]["fix"], "add a pool");
        let back: DoctorReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn query_values_are_encoded() {
        let q = DoctorQuery {
            all_nodes: true,
            links_only: true,
            ..Default::default()
        };
        assert_eq!(q.to_query(), "?all_nodes=true&links_only=true");
        let q = DoctorQuery {
            cni_conf_dir: Some("/tmp/a b&c".into()),
            cni_bin_dir: Some("/opt/cni/bin:/usr/lib/cni".into()),
            ..Default::default()
        };
        assert_eq!(
            q.to_query(),
            "?all_nodes=false&cni_conf_dir=%2Ftmp%2Fa%20b%26c\
             &cni_bin_dir=%2Fopt%2Fcni%2Fbin%3A%2Fusr%2Flib%2Fcni"
        );
    }
}
