//! This node's pods: their labels and named ports become their endpoints'.
//!
//! An endpoint whose CNI ADD named a pod (`K8S_POD_NAMESPACE`/`K8S_POD_NAME`, as
//! containerd and CRI-O send) takes the pod's labels at ADD when the watch has the
//! pod already ([`PodView`], the attacher's [`PodSource`]), and in any case from the
//! loop here: on every change of the pods' view, on every new endpoint, and every
//! [`RESYNC`], each endpoint of a known pod whose labels differ from the pod's gets
//! the pod's, and its named ports (one compare-and-swap on its record, as `netctl
//! endpoint label` does). The pod's labels replace whatever the runtime gave.
//! The policy control plane then moves it to the identity of its new labels.
//!
//! A pod the watch does not have (deleted while its sandbox lives on, or not yet
//! seen) leaves its endpoint's labels as they are.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{Notify, watch};
use tracing::warn;

use super::mirror::View;
use crate::attach::Attacher;
use crate::attach::events::{EndpointEvent, EndpointSubscriber};
use crate::attach::labels::{PodFacts, PodSource};
use strait_policy::view::NamedPort;

/// Endpoints are compared with their pods at least this often.
pub const RESYNC: Duration = Duration::from_secs(30);

/// What endpoints of `pod` should have: its labels, and the ports its containers
/// name (`spec.containers[].ports[].name`, for policies that name a port).
pub fn facts_of(pod: &Pod) -> PodFacts {
    let mut ports = Vec::new();
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        for p in c.ports.iter().flatten() {
            let (Some(name), Ok(port)) = (&p.name, u16::try_from(p.container_port)) else {
                continue;
            };
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let Some(protocol) = strait_api::labels::parse_port_protocol(proto) else {
                continue;
            };
            ports.push(NamedPort {
                name: name.clone(),
                protocol,
                port,
            });
        }
    }
    let named_ports = strait_api::labels::normalize_named_ports(ports).unwrap_or_else(|e| {
        warn!(pod = %super::mirror::key_of(pod), error = %e, "Kubernetes: the pod's named ports are not used");
        Vec::new()
    });
    PodFacts {
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        named_ports,
    }
}

/// The pods' view, as the attacher asks it at ADD.
pub struct PodView(View<Pod>);

impl PodSource for PodView {
    fn pod_facts(&self, namespace: &str, pod: &str) -> Option<PodFacts> {
        let view = self.0.borrow();
        view.as_ref()?
            .get(&format!("{namespace}/{pod}"))
            .map(facts_of)
    }
}

#[derive(Clone)]
pub struct PodLabels {
    attacher: Arc<Attacher>,
    /// Woken by a new endpoint.
    attached: Arc<Notify>,
}

impl EndpointSubscriber for PodLabels {
    fn endpoint_event(&self, event: &EndpointEvent<'_>) {
        if let EndpointEvent::Attached { endpoint, .. } = event
            && endpoint.pod.is_some()
        {
            self.attached.notify_one();
        }
    }
}

impl PodLabels {
    pub fn new(attacher: Arc<Attacher>) -> Self {
        Self {
            attacher,
            attached: Arc::new(Notify::new()),
        }
    }

    pub fn source(&self, pods: View<Pod>) -> PodView {
        PodView(pods)
    }

    pub async fn run(self, mut pods: View<Pod>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(RESYNC);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = pods.changed() => {}
                _ = self.attached.notified() => {}
                _ = tick.tick() => {}
            }
            let Some(view) = pods.borrow_and_update().clone() else {
                continue;
            };
            if let Err(e) = self.round(&view).await {
                warn!(error = %e, "Kubernetes: giving endpoints their pods' labels; retrying");
            }
        }
    }

    async fn round(&self, pods: &BTreeMap<String, Pod>) -> Result<(), crate::attach::AttachError> {
        for ep in self.attacher.endpoints().await? {
            let Some(pod_name) = &ep.pod else {
                continue;
            };
            let Some(pod) = pods.get(&format!("{}/{pod_name}", ep.namespace)) else {
                continue;
            };
            let want = facts_of(pod);
            if ep.labels != want.labels || ep.named_ports != want.named_ports {
                self.attacher.replace_pod_facts(&ep.id, &want).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec};
    use kube::api::ObjectMeta;

    use super::*;

    fn port(name: Option<&str>, port: i32, proto: Option<&str>) -> ContainerPort {
        ContainerPort {
            name: name.map(String::from),
            container_port: port,
            protocol: proto.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn a_pods_labels_and_named_ports_are_its_endpoints() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("prod".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![
                    Container {
                        name: "web".into(),
                        ports: Some(vec![port(Some("http"), 8080, None), port(None, 9090, None)]),
                        ..Default::default()
                    },
                    Container {
                        name: "dns".into(),
                        ports: Some(vec![port(Some("dns"), 53, Some("UDP"))]),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = facts_of(&pod);
        assert_eq!(f.labels["app"], "web");
        let ports: Vec<String> = f
            .named_ports
            .iter()
            .map(|p| format!("{}={}/{}", p.name, p.port, p.protocol))
            .collect();
        assert_eq!(ports, ["http=8080/tcp", "dns=53/udp"]);
    }
}
