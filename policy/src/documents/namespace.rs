//! `v1` Namespace: how a namespace gets the labels `namespaceSelector`s match. Only
//! its name and `metadata.labels` matter; `spec.finalizers` and `status` (as in a
//! `kubectl get -o yaml` copy) are tolerated.

use super::Failed;
use super::metadata::{self, NameRule};
use super::walk::Node;
use crate::parse::{Document, NamespaceDoc};

pub(crate) const KIND: &str = "Namespace";

pub(crate) fn parse(node: &Node<'_>) -> Result<Document, Failed> {
    let root = node.obj().map_err(|e| (None, e))?;
    root.only(&["apiVersion", "kind", "metadata", "spec", "status"])
        .map_err(|e| (None, e))?;
    let meta = metadata::parse(&root, NameRule::Label).map_err(|e| (None, e))?;
    let object = Some(format!("{KIND} {}", meta.name));
    if let Some(spec) = root.get("spec") {
        spec.obj()
            .and_then(|s| s.only(&["finalizers"]))
            .map_err(|e| (object.clone(), e))?;
    }
    Ok(Document::Namespace(NamespaceDoc {
        name: meta.name,
        labels: meta.labels,
    }))
}
