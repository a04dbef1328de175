//! The cluster as the policy control plane sees it: the store's policies,
//! namespaces, identities, every node's endpoint records and the node records, kept
//! up to date from one watch of the store, with the revision they reflect.
//!
//! The reconcile loop owns one [`Cluster`] and feeds it what it reads
//! ([`Cluster::load`]) and every watch event after ([`Cluster::apply`]); everything
//! else (the compiler's [`ClusterView`], the ipcache) is derived from it.

use std::collections::{BTreeMap, BTreeSet};

use strait_api::NodeRecord;
use strait_policy::ir::Policy;
use strait_policy::selector::Labels;
use strait_policy::view::{ClusterView, IdentityLabels};
use tracing::warn;

use super::endpoints::{self, EndpointFacts, all_endpoints_prefix};
use super::identity::{self, identities_prefix};
use super::store::{
    decode_namespace, decode_policy, namespace_of_key, namespaces_prefix, policies_prefix,
};
use crate::node::{last_records_prefix, node_of_key, node_of_last_record_key, nodes_prefix};
use crate::store::{EventKind, KeyValue, Revision};

/// One endpoint record as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointEntry {
    pub facts: EndpointFacts,
    pub mod_revision: Revision,
    pub raw: Vec<u8>,
}

impl strait_api::endpoint_ref::EndpointIds for EndpointEntry {
    fn endpoint_id(&self) -> &str {
        &self.facts.id
    }
    /// The middle of `network.containerID.ifname`.
    fn container_id(&self) -> &str {
        self.facts.id.rsplit('.').nth(1).unwrap_or_default()
    }
    fn node(&self) -> &str {
        &self.facts.node
    }
}

/// What a change touched, so the loop does only the work it needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changed {
    pub policies: bool,
    /// Namespaces, identities or endpoints: the view or the local endpoints.
    pub view: bool,
    /// Nodes or endpoint addresses: the ipcache.
    pub ipcache: bool,
}

impl Changed {
    pub fn any(self) -> bool {
        self.policies || self.view || self.ipcache
    }
    pub fn merge(&mut self, o: Changed) {
        self.policies |= o.policies;
        self.view |= o.view;
        self.ipcache |= o.ipcache;
    }
}

#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// The store revision everything here reflects.
    pub revision: Revision,
    /// By full store key.
    pub policies: BTreeMap<String, Policy>,
    pub namespaces: BTreeMap<String, Labels>,
    pub identities: BTreeMap<u32, IdentityLabels>,
    /// By full store key (`endpoints/<node>/<id>`), every node's.
    pub endpoints: BTreeMap<String, EndpointEntry>,
    /// Live (`nodes/`) and last (`node-records/`) records, by node.
    pub nodes: BTreeMap<String, NodeRecord>,
    pub last_nodes: BTreeMap<String, NodeRecord>,
}

/// The prefixes the cluster is made of.
pub fn prefixes() -> [String; 6] {
    [
        policies_prefix(),
        namespaces_prefix(),
        identities_prefix(),
        all_endpoints_prefix(),
        nodes_prefix(),
        last_records_prefix(),
    ]
}

impl Cluster {
    /// Applies one key's put or delete; unreadable values are logged and count as
    /// absent.
    pub fn apply(&mut self, kind: EventKind, kv: &KeyValue) -> Changed {
        let key = kv.key.as_str();
        let put = kind == EventKind::Put;
        let mut changed = Changed::default();
        if key.starts_with(&policies_prefix()) {
            let new = put
                .then(|| decode_policy(key, &kv.value))
                .and_then(|r| r.map_err(|e| warn!(error = %e, "ignoring a policy")).ok())
                .map(|v| v.policy);
            changed.policies = set(&mut self.policies, key.to_string(), new);
        } else if let Some(ns) = namespace_of_key(key) {
            let new = put
                .then(|| decode_namespace(key, &kv.value))
                .and_then(|r| {
                    r.map_err(|e| warn!(error = %e, "ignoring a namespace"))
                        .ok()
                })
                .map(|v| v.labels);
            changed.view = set(&mut self.namespaces, ns.to_string(), new);
        } else if let Some(id) = identity::id_of_key(key) {
            let new = put
                .then(|| identity::decode_labels(key, &kv.value))
                .and_then(|r| {
                    r.map_err(|e| warn!(error = %e, "ignoring an identity"))
                        .ok()
                });
            changed.view = set(&mut self.identities, id, new);
        } else if endpoints::node_and_id(key).is_some() {
            let new = put
                .then(|| endpoints::decode(key, &kv.value))
                .and_then(|r| {
                    r.map_err(|e| warn!(key, error = %e, "ignoring an endpoint record"))
                        .ok()
                })
                .map(|facts| EndpointEntry {
                    facts,
                    mod_revision: kv.mod_revision,
                    raw: kv.value.clone(),
                });
            let old_ips = self
                .endpoints
                .get(key)
                .map(|e| (e.facts.ips.clone(), e.facts.identity));
            let new_ips = new
                .as_ref()
                .map(|e| (e.facts.ips.clone(), e.facts.identity));
            changed.view = set(&mut self.endpoints, key.to_string(), new);
            changed.ipcache = old_ips != new_ips;
        } else if let Some(node) = node_of_key(key) {
            let new = put.then(|| node_record(key, &kv.value)).flatten();
            changed.ipcache = set(&mut self.nodes, node.to_string(), new);
        } else if let Some(node) = node_of_last_record_key(key) {
            let new = put.then(|| node_record(key, &kv.value)).flatten();
            changed.ipcache = set(&mut self.last_nodes, node.to_string(), new);
        }
        changed
    }

    /// Replaces everything under `prefix` with `kvs` (a fresh read).
    pub fn load(&mut self, prefix: &str, kvs: &[KeyValue]) {
        let stale: Vec<KeyValue> = self
            .keys_under(prefix)
            .into_iter()
            .map(|key| KeyValue {
                key,
                value: Vec::new(),
                create_revision: 0,
                mod_revision: 0,
                version: 0,
                lease: None,
            })
            .collect();
        for kv in &stale {
            self.apply(EventKind::Delete, kv);
        }
        for kv in kvs {
            self.apply(EventKind::Put, kv);
        }
    }

    fn keys_under(&self, prefix: &str) -> Vec<String> {
        let p = prefix;
        let mut out: Vec<String> = Vec::new();
        out.extend(self.policies.keys().filter(|k| k.starts_with(p)).cloned());
        out.extend(self.endpoints.keys().filter(|k| k.starts_with(p)).cloned());
        if p == namespaces_prefix() {
            out.extend(self.namespaces.keys().map(|n| format!("{p}{n}")));
        } else if p == identities_prefix() {
            out.extend(self.identities.keys().map(|id| identity::identity_key(*id)));
        } else if p == nodes_prefix() {
            out.extend(self.nodes.keys().map(|n| crate::node::node_key(n)));
        } else if p == last_records_prefix() {
            out.extend(
                self.last_nodes
                    .keys()
                    .map(|n| crate::node::last_record_key(n)),
            );
        }
        out
    }

    /// This node's endpoints, by store key.
    pub fn local_endpoints<'a>(
        &'a self,
        node: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a EndpointEntry)> + 'a {
        self.endpoints
            .iter()
            .filter(move |(_, e)| e.facts.node == node)
    }

    /// The ids endpoint records of every node reference.
    pub fn referenced_identities(&self) -> BTreeSet<u32> {
        self.endpoints
            .values()
            .filter_map(|e| e.facts.identity)
            .collect()
    }

    /// What the compiler needs: namespaces (every one named by a document or an
    /// identity), identities, and per identity the union of its endpoints' named
    /// ports.
    pub fn view(&self) -> ClusterView {
        let mut namespaces = self.namespaces.clone();
        for il in self.identities.values() {
            namespaces.entry(il.namespace.clone()).or_default();
        }
        let mut named_ports: BTreeMap<u32, Vec<_>> = BTreeMap::new();
        for e in self.endpoints.values() {
            if let Some(id) = e.facts.identity
                && !e.facts.named_ports.is_empty()
            {
                let ports = named_ports.entry(id).or_default();
                for p in &e.facts.named_ports {
                    if !ports.contains(p) {
                        ports.push(p.clone());
                    }
                }
            }
        }
        for ports in named_ports.values_mut() {
            ports.sort();
        }
        ClusterView {
            namespaces,
            identities: self.identities.clone(),
            named_ports,
        }
    }

    /// Every node's record: live if there is one, else the last.
    pub fn all_nodes(&self) -> BTreeMap<&str, &NodeRecord> {
        let mut out: BTreeMap<&str, &NodeRecord> = self
            .last_nodes
            .iter()
            .map(|(n, r)| (n.as_str(), r))
            .collect();
        out.extend(self.nodes.iter().map(|(n, r)| (n.as_str(), r)));
        out
    }
}

fn node_record(key: &str, value: &[u8]) -> Option<NodeRecord> {
    serde_json::from_slice(value)
        .map_err(|e| warn!(key, error = %e, "ignoring a node record"))
        .ok()
}

/// Sets or removes `key`; whether anything changed.
fn set<K: Ord, V: PartialEq>(map: &mut BTreeMap<K, V>, key: K, value: Option<V>) -> bool {
    match value {
        Some(v) => {
            if map.get(&key) == Some(&v) {
                false
            } else {
                map.insert(key, v);
                true
            }
        }
        None => map.remove(&key).is_some(),
    }
}
