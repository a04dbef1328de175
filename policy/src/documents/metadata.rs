//! `metadata` of every kind: the name (and namespace) that key the object, its labels
//! and annotations, and the server-set fields a `kubectl get -o yaml` copy carries,
//! which are tolerated and ignored, as `kubectl apply` does.

use super::validate;
use super::walk::{Invalid, Node, Obj, Result};
use crate::selector::Labels;

/// Every `ObjectMeta` field; anything else is refused as unknown.
const FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// What strait reads of `metadata`.
#[derive(Debug)]
pub struct Metadata<'a> {
    obj: Obj<'a>,
    pub name: String,
    pub labels: Labels,
    pub annotations: Vec<(&'a str, &'a str)>,
}

/// Which syntax the name must have: a namespace's name is a DNS label, a policy's a
/// DNS subdomain (as in Kubernetes).
pub enum NameRule {
    Label,
    Subdomain,
}

pub fn parse<'a>(root: &Obj<'a>, rule: NameRule) -> Result<Metadata<'a>> {
    let node = root.required("metadata")?;
    let obj = node.obj()?;
    obj.only(FIELDS)?;
    let name_node = obj.get("name").ok_or_else(|| {
        Invalid::new(
            &obj.child_path("name"),
            "required value (apply needs a name; generateName is not enough)",
        )
    })?;
    let name = name_node.str()?;
    match rule {
        NameRule::Label => validate::dns1123_label(name),
        NameRule::Subdomain => validate::dns1123_subdomain(name),
    }
    .map_err(|e| name_node.invalid(format!("{name:?}: {e}")))?;
    let labels = match obj.get("labels") {
        None => Labels::new(),
        Some(node) => labels(&node)?,
    };
    let annotations = match obj.get("annotations") {
        None => Vec::new(),
        Some(node) => {
            let pairs = node.string_map()?;
            for (key, _) in &pairs {
                validate::qualified_name(key)
                    .map_err(|e| node.invalid(format!("invalid key {key:?}: {e}")))?;
            }
            pairs
        }
    };
    Ok(Metadata {
        name: name.to_string(),
        labels,
        annotations,
        obj,
    })
}

impl<'a> Metadata<'a> {
    /// `metadata.namespace`, checked, if given.
    pub fn namespace(&self) -> Result<Option<&'a str>> {
        let Some(node) = self.obj.get("namespace") else {
            return Ok(None);
        };
        let ns = node.str()?;
        validate::dns1123_label(ns).map_err(|e| node.invalid(format!("{ns:?}: {e}")))?;
        Ok(Some(ns))
    }

    /// The path of `metadata.<key>`, for refusals about it.
    pub fn path(&self, key: &str) -> String {
        self.obj.child_path(key)
    }

    pub fn has(&self, key: &str) -> bool {
        self.obj.has(key)
    }

    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        self.annotations
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }
}

/// A label map (`metadata.labels`, `matchLabels`): keys qualified names, values label
/// values. Refusals name the map and the key, as the API server's do.
pub fn labels(node: &Node<'_>) -> Result<Labels> {
    let mut labels = Labels::new();
    for (key, value) in node.string_map()? {
        validate::qualified_name(key)
            .map_err(|e| node.invalid(format!("invalid key {key:?}: {e}")))?;
        validate::label_value(value)
            .map_err(|e| node.invalid(format!("invalid value {value:?} of {key:?}: {e}")))?;
        labels.insert(key.to_string(), value.to_string());
    }
    Ok(labels)
}
