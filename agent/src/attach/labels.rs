//! An endpoint's labels after ADD: `netctl endpoint label ID key=value … key-`.
//!
//! The change is one compare-and-swap on the endpoint's record ([`EndpointRecords::update`]),
//! so it composes with every other writer of the record. Records are per node and each
//! agent writes only its own node's: an ID naming another node's endpoint is refused
//! with that node's name, so the operator knows whose agent to ask.
//!
//! [`EndpointRecords::update`]: super::records::EndpointRecords::update

use std::collections::BTreeMap;

use strait_api::Endpoint;
use strait_api::endpoint_ref::{self, ResolveError};
use strait_api::labels::LabelUpdate;
use strait_policy::view::NamedPort;

use super::records::Updated;
use super::{AttachError, Attacher};
use crate::hostnet::HostNet;

/// What policy reads of a pod: its labels and the ports its containers name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFacts {
    pub labels: BTreeMap<String, String>,
    pub named_ports: Vec<NamedPort>,
}

/// Pods as the API server has them now (the Kubernetes integration's view of this
/// node's pods).
pub trait PodSource: Send + Sync {
    /// `None`: the pod is not known (yet).
    fn pod_facts(&self, namespace: &str, pod: &str) -> Option<PodFacts>;
}

impl<K: HostNet> Attacher<K> {
    /// The labels and named ports an ADD gives its endpoint: the runtime's, or the
    /// pod's from the API server where the ADD names a pod the integration knows.
    pub(super) fn facts_at_add(
        &self,
        namespace: &str,
        pod: Option<&str>,
        from_runtime: PodFacts,
    ) -> PodFacts {
        match (self.pod_source.get(), pod) {
            (Some(source), Some(pod)) => source.pod_facts(namespace, pod).unwrap_or(from_runtime),
            _ => from_runtime,
        }
    }

    /// Sets the labels and named ports of this node's endpoint `id` to its pod's (the
    /// Kubernetes integration, following the pod). `Ok(false)`: the endpoint is gone.
    pub async fn replace_pod_facts(&self, id: &str, facts: &PodFacts) -> Result<bool, AttachError> {
        let named_ports = strait_api::labels::normalize_named_ports(facts.named_ports.clone())
            .map_err(AttachError::InvalidLabels)?;
        let result = self
            .records
            .update(id, |record| {
                record.labels = facts.labels.clone();
                record.named_ports = named_ports.clone();
                Ok(())
            })
            .await?;
        match result {
            Updated::Done(ep) => {
                tracing::info!(%id, labels = %strait_api::labels::format_labels(&ep.labels), "labels follow the pod");
                Ok(true)
            }
            Updated::Gone => Ok(false),
            Updated::Refused(reason) => Err(AttachError::InvalidLabels(reason)),
        }
    }

    /// Apply `update` to the labels of the endpoint `query` names (an endpoint id, a
    /// container ID, or a unique prefix of either). Bad labels, a changed value
    /// without `overwrite`, or another node's endpoint change nothing.
    pub async fn label(&self, query: &str, update: &LabelUpdate) -> Result<Endpoint, AttachError> {
        update.check().map_err(AttachError::InvalidLabels)?;
        let id = self.resolve_endpoint(query).await?;
        let result = self
            .records
            .update(&id, |record| {
                record.labels = update.apply(&record.labels)?;
                Ok(())
            })
            .await?;
        match result {
            Updated::Done(ep) => {
                tracing::info!(%id, labels = %strait_api::labels::format_labels(&ep.labels), "labels changed");
                Ok(*ep)
            }
            Updated::Gone => Err(AttachError::Unknown(id)),
            Updated::Refused(reason) => Err(AttachError::InvalidLabels(reason)),
        }
    }

    /// The id of this node's endpoint that `query` names.
    async fn resolve_endpoint(&self, query: &str) -> Result<String, AttachError> {
        // The common case, an exact id of this node's, needs no look at the cluster.
        if self.records.get(query).await?.is_some() {
            return Ok(query.to_string());
        }
        let all = self.records.list_cluster().await?;
        let ep = endpoint_ref::resolve(query, &all).map_err(|e| match e {
            ResolveError::NotFound(_) => AttachError::Unknown(query.to_string()),
            ambiguous @ ResolveError::Ambiguous { .. } => {
                AttachError::Invalid(ambiguous.to_string())
            }
        })?;
        if ep.node != self.cfg.node {
            return Err(AttachError::OtherNode {
                id: ep.id.clone(),
                node: ep.node.clone(),
            });
        }
        Ok(ep.id.clone())
    }
}
