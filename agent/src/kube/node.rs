//! This node's `Node` object: its network condition and strait's annotations.
//!
//! Once the agent is ready (its fabric started, policy in place, ADDs taken) it sets
//! the `NetworkUnavailable` condition to `False`, as kubelet expects a network
//! plugin to (the node stays unschedulable for pods until then where a cloud
//! provider set it `True`), and annotates the node with what strait knows of it from
//! its record in the store: underlay and tunnel addresses, VTEP MAC, fabric, site.
//! Both are compared with the Node as the watch sees it and patched only when they
//! differ, on every change of the Node and every [`RESYNC`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use strait_api::NodeRecord;
use tokio::sync::watch;
use tracing::{info, warn};

use super::mirror::View;
use crate::store::Store;

/// The Node is compared with what it should be at least this often.
pub const RESYNC: Duration = Duration::from_secs(30);

/// The condition's reason while strait's network is up.
pub const REASON: &str = "StraitIsUp";

/// The prefix of strait's annotations on Node objects.
pub const ANNOTATION_PREFIX: &str = "strait.io/";

/// strait's annotations for a node whose record is `record`.
pub fn annotations(record: &NodeRecord) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            a.insert(format!("{ANNOTATION_PREFIX}{k}"), v);
        }
    };
    put("underlay-ipv4", record.underlay_v4.map(|ip| ip.to_string()));
    put("underlay-ipv6", record.underlay_v6.map(|ip| ip.to_string()));
    put("tunnel-ipv4", record.tunnel_v4.map(|ip| ip.to_string()));
    put("tunnel-ipv6", record.tunnel_v6.map(|ip| ip.to_string()));
    put("vtep-mac", record.vtep_mac.clone());
    put("fabric", Some(record.fabric.to_string()));
    put("site", Some(record.site.clone()));
    a
}

/// The annotations of `want` that `node` lacks or has otherwise, and strait's that
/// it has and `want` has not (as `null`, which a merge patch removes).
pub fn annotation_patch(
    node: &Node,
    want: &BTreeMap<String, String>,
) -> serde_json::Map<String, serde_json::Value> {
    let have = node.metadata.annotations.clone().unwrap_or_default();
    let mut patch = serde_json::Map::new();
    for (k, v) in want {
        if have.get(k) != Some(v) {
            patch.insert(k.clone(), json!(v));
        }
    }
    for k in have.keys() {
        if k.starts_with(ANNOTATION_PREFIX) && !want.contains_key(k) {
            patch.insert(k.clone(), serde_json::Value::Null);
        }
    }
    patch
}

/// Whether `node` says its network is available, by strait.
pub fn network_available(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "NetworkUnavailable"))
        .is_some_and(|c| c.status == "False" && c.reason.as_deref() == Some(REASON))
}

/// The Node's `spec.podCIDRs` (or the older `spec.podCIDR`), as `--ipam kubernetes`
/// confines this node's addresses to. `Err` says what is missing.
pub async fn pod_cidrs(client: &kube::Client, node: &str) -> Result<Vec<ipnet::IpNet>, String> {
    let api: kube::Api<Node> = kube::Api::all(client.clone());
    let n = api
        .get_opt(node)
        .await
        .map_err(|e| format!("reading Node {node}: {e}"))?
        .ok_or_else(|| format!("there is no Node {node} in the API server"))?;
    pod_cidrs_of(&n)
}

/// [`pod_cidrs`] of a Node as read.
pub fn pod_cidrs_of(n: &Node) -> Result<Vec<ipnet::IpNet>, String> {
    let spec = n.spec.clone().unwrap_or_default();
    let given: Vec<String> = match spec.pod_cidrs {
        Some(list) if !list.is_empty() => list,
        _ => spec.pod_cidr.into_iter().collect(),
    };
    if given.is_empty() {
        return Err(format!(
            "Node {} has no spec.podCIDRs yet (kube-controller-manager --allocate-node-cidrs \
             sets them)",
            n.metadata.name.as_deref().unwrap_or("?")
        ));
    }
    given
        .iter()
        .map(|c| {
            c.parse::<ipnet::IpNet>()
                .map(|n| n.trunc())
                .map_err(|e| format!("spec.podCIDRs: {c:?}: {e}"))
        })
        .collect()
}

pub struct NodeSync {
    api: kube::Api<Node>,
    store: Arc<dyn Store>,
    node: String,
}

impl NodeSync {
    pub fn new(client: kube::Client, store: Arc<dyn Store>, node: String) -> Self {
        Self {
            api: kube::Api::all(client),
            store,
            node,
        }
    }

    /// Follows the Node once `ready` is true, until `stop`.
    pub async fn run(
        self,
        mut nodes: View<Node>,
        mut ready: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = ready.wait_for(|r| *r) => {}
        }
        let mut tick = tokio::time::interval(RESYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let node = nodes
                .borrow_and_update()
                .as_ref()
                .and_then(|v| v.get(&self.node).cloned());
            if let Some(node) = node
                && let Err(e) = self.round(&node).await
            {
                warn!(error = %e, node = %self.node, "Kubernetes: updating the Node object; retrying");
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = nodes.changed() => {}
                _ = tick.tick() => {}
            }
        }
    }

    async fn round(&self, node: &Node) -> anyhow::Result<()> {
        if let Some(kv) = self.store.get(&crate::node::node_key(&self.node)).await? {
            let record: NodeRecord = serde_json::from_slice(&kv.value)?;
            let patch = annotation_patch(node, &annotations(&record));
            if !patch.is_empty() {
                self.api
                    .patch(
                        &self.node,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"annotations": patch}})),
                    )
                    .await?;
                info!(node = %self.node, "Kubernetes: Node annotated with strait's addresses");
            }
        }
        if !network_available(node) {
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let condition = json!({
                "type": "NetworkUnavailable",
                "status": "False",
                "reason": REASON,
                "message": "strait's agent is ready on this node",
                "lastTransitionTime": now,
                "lastHeartbeatTime": now,
            });
            self.api
                .patch_status(
                    &self.node,
                    &PatchParams::default(),
                    &Patch::Strategic(json!({"status": {"conditions": [condition]}})),
                )
                .await?;
            info!(node = %self.node, "Kubernetes: NetworkUnavailable is False");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeCondition, NodeStatus};
    use kube::api::ObjectMeta;

    use super::*;

    fn record() -> NodeRecord {
        serde_json::from_value(json!({
            "name": "n1", "underlay_v4": "192.0.2.1", "underlay_v6": null,
            "fabric": "vxlan", "vtep_mac": "02:00:00:00:00:01", "tunnel_v4": "10.244.0.1",
            "agent_version": "0.1.0", "started": 0, "site": "default",
        }))
        .unwrap()
    }

    #[test]
    fn pod_cidrs_come_from_the_list_or_the_single_field() {
        let mut n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:244:1::/64"]},
        }))
        .unwrap();
        let got: Vec<String> = pod_cidrs_of(&n)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.244.1.0/24", "fd00:244:1::/64"]);
        n.spec.as_mut().unwrap().pod_cidrs = None;
        assert_eq!(pod_cidrs_of(&n).unwrap().len(), 1);
        n.spec.as_mut().unwrap().pod_cidr = None;
        assert!(pod_cidrs_of(&n).unwrap_err().contains("no spec.podCIDRs"));
    }

    #[test]
    fn annotations_name_the_nodes_addresses_and_a_patch_carries_only_changes() {
        let want = annotations(&record());
        assert_eq!(want["strait.io/underlay-ipv4"], "192.0.2.1");
        assert_eq!(want["strait.io/tunnel-ipv4"], "10.244.0.1");
        assert_eq!(want["strait.io/vtep-mac"], "02:00:00:00:00:01");
        assert!(!want.contains_key("strait.io/underlay-ipv6"));

        let mut node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                annotations: Some(
                    [
                        (
                            "strait.io/underlay-ipv4".to_string(),
                            "192.0.2.1".to_string(),
                        ),
                        (
                            "strait.io/underlay-ipv6".to_string(),
                            "2001:db8::1".to_string(),
                        ),
                        (
                            "kubeadm.alpha.kubernetes.io/cri-socket".to_string(),
                            "x".to_string(),
                        ),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        let patch = annotation_patch(&node, &want);
        assert!(
            !patch.contains_key("strait.io/underlay-ipv4"),
            "unchanged: not sent"
        );
        assert_eq!(
            patch["strait.io/underlay-ipv6"],
            serde_json::Value::Null,
            "stale: removed"
        );
        assert!(
            !patch.contains_key("kubeadm.alpha.kubernetes.io/cri-socket"),
            "not strait's"
        );
        assert_eq!(patch["strait.io/fabric"], "vxlan");

        assert!(!network_available(&node));
        node.status = Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "NetworkUnavailable".into(),
                status: "False".into(),
                reason: Some(REASON.into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(network_available(&node));
    }
}
