//! API server objects into strait's store documents.
//!
//! An object goes through the same parser as `netctl policy apply`, as the JSON the
//! API server serves, so a NetworkPolicy means the same whichever way it came. What
//! the parser refuses (a field strait does not read, a selector it cannot express)
//! is refused here with the parser's message, naming the field.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Serialize;
use serde_json::Value;

use crate::policy::store::StoredDoc;

/// The annotation `kubectl apply` keeps a copy of the object in: noise in `netctl
/// policy get`, and as large as the object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A Namespace as the `namespaces/<name>` document its labels come from.
pub fn namespace(ns: &Namespace) -> Result<StoredDoc, String> {
    one(ns)
}

/// A NetworkPolicy as its `policy/k8s/<ns>/<name>` document.
pub fn network_policy(np: &NetworkPolicy) -> Result<StoredDoc, String> {
    one(np)
}

/// The object as the API serves it, less server bookkeeping nobody reads.
pub fn source<T: Serialize>(obj: &T) -> Result<Value, String> {
    let mut v = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        if let Some(ann) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            ann.remove(LAST_APPLIED);
            if ann.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    Ok(v)
}

fn one<T: Serialize>(obj: &T) -> Result<StoredDoc, String> {
    let text = source(obj)?.to_string();
    let mut parsed = strait_policy::parse_documents(&text).map_err(|e| reason(&e))?;
    match (parsed.pop(), parsed.is_empty()) {
        (Some(p), true) => Ok(StoredDoc::from(p)),
        _ => Err("not one object".to_string()),
    }
}

/// Why a parser refused one object: the field and the message, without "document
/// 1" (there is only ever one here).
pub fn reason(e: &strait_policy::ParseError) -> String {
    if e.field.is_empty() {
        e.message.clone()
    } else {
        format!("{}: {}", e.field, e.message)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicySpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use kube::api::ObjectMeta;
    use strait_api::Origin;

    use super::*;

    fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(String::from),
            uid: Some("6c1e6f4e-1111-2222-3333-444455556666".into()),
            resource_version: Some("812".into()),
            labels: Some([("team".to_string(), "front".to_string())].into()),
            annotations: Some([(LAST_APPLIED.to_string(), "{...}".to_string())].into()),
            managed_fields: Some(vec![Default::default()]),
            ..Default::default()
        }
    }

    #[test]
    fn a_namespace_keeps_its_labels_and_drops_the_bookkeeping() {
        let ns = Namespace {
            metadata: meta(None, "prod"),
            ..Default::default()
        };
        let doc = namespace(&ns).unwrap();
        assert_eq!(doc.key(), "namespaces/prod");
        let StoredDoc::Namespace { source, labels, .. } = &doc else {
            panic!("{doc:?}")
        };
        assert_eq!(labels["team"], "front");
        assert_eq!(source["kind"], "Namespace");
        assert_eq!(
            source["metadata"]["uid"],
            "6c1e6f4e-1111-2222-3333-444455556666"
        );
        assert!(
            source["metadata"].get("managedFields").is_none(),
            "{source}"
        );
        assert!(source["metadata"].get("annotations").is_none(), "{source}");
        let stored: serde_json::Value =
            serde_json::from_slice(&doc.value(Origin::Kubernetes)).unwrap();
        assert_eq!(stored["origin"], "kubernetes");
    }

    #[test]
    fn a_network_policy_reads_as_netctl_would_read_it() {
        let np = NetworkPolicy {
            metadata: meta(Some("prod"), "web"),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                }),
                ingress: Some(vec![Default::default()]),
                policy_types: Some(vec!["Ingress".into()]),
                ..Default::default()
            }),
        };
        let doc = network_policy(&np).unwrap();
        assert_eq!(doc.key(), "policy/k8s/prod/web");
        let StoredDoc::Policy { source, .. } = &doc else {
            panic!("{doc:?}")
        };
        assert_eq!(source["apiVersion"], "networking.k8s.io/v1");
    }

    #[test]
    fn what_the_parser_refuses_is_refused_naming_the_field() {
        let np = NetworkPolicy {
            metadata: meta(Some("prod"), "bad"),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                ingress: Some(vec![
                    k8s_openapi::api::networking::v1::NetworkPolicyIngressRule {
                        from: Some(vec![NetworkPolicyPeer {
                            ip_block: Some(k8s_openapi::api::networking::v1::IPBlock {
                                cidr: "10.0.0.0/33".into(),
                                except: None,
                            }),
                            ..Default::default()
                        }]),
                        ports: None,
                    },
                ]),
                ..Default::default()
            }),
        };
        let err = network_policy(&np).unwrap_err();
        assert!(err.contains("ipBlock.cidr"), "{err}");
        assert!(!err.contains("document 1"), "{err}");
    }
}
