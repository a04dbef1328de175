//! What the compiler knows of the cluster: namespaces and their labels, the
//! identities allocated (each a namespace and a label set), the named ports the
//! endpoints of each identity declare, and the one local endpoint being compiled.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ir::{NAMESPACE_NAME_LABEL, Protocol};
use crate::selector::Labels;

/// What an identity stands for: every endpoint with this namespace and these labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdentityLabels {
    pub namespace: String,
    pub labels: Labels,
}

/// A port an endpoint declares by name (Kubernetes `containerPort.name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NamedPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Namespaces given labels (`kind: Namespace` documents). A namespace that only
    /// appears in an identity exists too, with just [`NAMESPACE_NAME_LABEL`].
    pub namespaces: BTreeMap<String, Labels>,
    pub identities: BTreeMap<u32, IdentityLabels>,
    /// Per identity, the named ports its endpoints declare (the union).
    pub named_ports: BTreeMap<u32, Vec<NamedPort>>,
}

impl ClusterView {
    /// A namespace's labels as selectors see them: its own, and its name under
    /// [`NAMESPACE_NAME_LABEL`].
    pub fn namespace_labels(&self, namespace: &str) -> Labels {
        let mut labels = self.namespaces.get(namespace).cloned().unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), namespace.to_string());
        labels
    }
}

/// The endpoint whose tables are being compiled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalEndpoint {
    pub identity: u32,
    pub namespace: String,
    pub labels: Labels,
    pub named_ports: Vec<NamedPort>,
}
