//! The API server's Services and EndpointSlices into strait's service store.
//!
//! Written by the same leader as namespaces and policies ([`super::cluster`]), but
//! through [`ServiceStore::apply_as`]: a service's cluster IPs and node ports are
//! claims, written with it in one transaction. A Service keeps the cluster IPs and
//! node ports the API server gave it, so `--service-pool` must hold the cluster's
//! service range (kube-apiserver's `--service-cluster-ip-range`); a Service whose
//! address lies outside it is refused like any other object strait cannot express.
//!
//! What kube-proxy would leave alone is left alone here too, not refused: headless
//! Services (`clusterIP: None`, DNS only) and `ExternalName` ones. A `LoadBalancer`
//! Service is served as what it also is, a NodePort Service (cluster IPs and node
//! ports); its load-balancer address is the provider's business.
//!
//! Each object is compared with the store by its source (the API's object, which
//! carries its `resourceVersion`), applied alone (one refusal stops no other), and
//! deleted when the API server no longer has it. Unlike namespaces and policies, these
//! writes are not fenced on the leadership: a leader that stalled past its lease may
//! write one round late, which the new leader's next round undoes.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;
use strait_api::Origin;
use strait_api::kube::Refusal;
use strait_services::documents::Parsed;
use tracing::{info, warn};

use super::mirror::{Objects, key_of};
use super::translate;
use crate::services::store::{ServiceStore, ServiceStoreError};

/// What becomes of one API object.
#[derive(Debug)]
pub enum Translated {
    Apply(Box<Parsed>),
    /// Nothing strait serves (headless, ExternalName).
    Skip,
    Refused(String),
}

/// A Service as strait reads it.
pub fn service(svc: &Service) -> Translated {
    let spec = svc.spec.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") || spec.cluster_ip.as_deref() == Some("None") {
        return Translated::Skip;
    }
    let mut source = match translate::source(svc) {
        Ok(v) => v,
        Err(e) => return Translated::Refused(e),
    };
    if spec.type_.as_deref() == Some("LoadBalancer") {
        source["spec"]["type"] = Value::from("NodePort");
        // The provider's fields have no meaning for a NodePort Service.
        if let Some(spec) = source["spec"].as_object_mut() {
            for &field in strait_services::documents::LOAD_BALANCER_FIELDS {
                spec.remove(field);
            }
        }
    }
    one(source)
}

/// An EndpointSlice as strait reads it.
pub fn slice(s: &EndpointSlice) -> Translated {
    match translate::source(s) {
        Ok(v) => one(v),
        Err(e) => Translated::Refused(e),
    }
}

fn one(source: Value) -> Translated {
    match strait_services::documents::parse_documents(&source.to_string()) {
        Ok(mut parsed) if parsed.len() == 1 => {
            Translated::Apply(Box::new(parsed.pop().expect("one")))
        }
        Ok(_) => Translated::Refused("not one object".into()),
        Err(e) => Translated::Refused(translate::reason(&e)),
    }
}

/// One round: the service store follows the API server. Returns the refusals (keyed
/// like [`super::cluster::Desired::refused`]).
pub async fn round(
    store: &ServiceStore,
    services: &Objects<Service>,
    slices: &Objects<EndpointSlice>,
) -> Result<BTreeMap<String, Refusal>, ServiceStoreError> {
    let stored: BTreeMap<String, (Value, Origin)> = store
        .list()
        .await?
        .into_iter()
        .map(|o| (o.key, (o.source, o.origin)))
        .collect();
    let mut refused = BTreeMap::new();
    let mut wanted = BTreeSet::new();
    let objects = services
        .values()
        .map(|s| ("Service", "services", key_of(s), service(s)))
        .chain(
            slices
                .values()
                .map(|s| ("EndpointSlice", "endpointslices", key_of(s), slice(s))),
        );
    for (kind, dir, object, t) in objects {
        let key = format!("{dir}/{object}");
        let parsed = match t {
            Translated::Skip => continue,
            Translated::Refused(reason) => {
                // The last good version stays.
                wanted.insert(key);
                super::cluster::refuse(&mut refused, kind, object, reason);
                continue;
            }
            Translated::Apply(p) => p,
        };
        wanted.insert(key.clone());
        if stored.get(&key).is_some_and(|(source, origin)| {
            *origin == Origin::Kubernetes && *source == parsed.source
        }) {
            continue;
        }
        match store
            .apply_as(std::slice::from_ref(&parsed), Origin::Kubernetes)
            .await
        {
            Ok(_) => info!(%key, "Kubernetes: stored"),
            Err(ServiceStoreError::Refused(reason)) => {
                super::cluster::refuse(&mut refused, kind, object, reason)
            }
            Err(e) => return Err(e),
        }
    }
    for (key, (_, origin)) in &stored {
        if *origin == Origin::Kubernetes && !wanted.contains(key) {
            match store.delete_as_kubernetes(key).await {
                Ok(_) => info!(%key, "Kubernetes: deleted (gone from the API server)"),
                Err(e) => warn!(%key, error = %e, "Kubernetes: deleting"),
            }
        }
    }
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A Service as the API server serves it (defaults filled in, status).
    fn served(kind: &str, extra: Value) -> Service {
        let mut v = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "prod", "uid": "u1", "resourceVersion": "7",
                         "creationTimestamp": "2026-12-07T12:00:00Z"},
            "spec": {
                "type": kind, "selector": {"app": "web"},
                "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
            },
            "status": {"loadBalancer": {}},
        });
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_served_cluster_ip_service_reads_with_its_address() {
        let Translated::Apply(p) = service(&served("ClusterIP", json!({}))) else {
            panic!("not applied")
        };
        let strait_services::documents::Document::Service(s) = &p.document else {
            panic!("{p:?}")
        };
        assert_eq!(
            s.cluster_ips,
            vec!["10.96.0.10".parse::<std::net::IpAddr>().unwrap()]
        );
    }

    #[test]
    fn load_balancers_are_node_ports_and_headless_or_external_names_are_left_alone() {
        let lb = served(
            "LoadBalancer",
            json!({"externalTrafficPolicy": "Cluster", "allocateLoadBalancerNodePorts": true,
                   "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080}]}),
        );
        match service(&lb) {
            Translated::Apply(p) => assert_eq!(p.source["spec"]["type"], "NodePort"),
            other => panic!("{other:?}"),
        }
        let headless = served(
            "ClusterIP",
            json!({"clusterIP": "None", "clusterIPs": ["None"]}),
        );
        assert!(matches!(service(&headless), Translated::Skip));
        let ext = served("ExternalName", json!({"externalName": "db.example.org"}));
        assert!(matches!(service(&ext), Translated::Skip));
    }
}
