//! Kubernetes `networking.k8s.io/v1` NetworkPolicy: checked as the API server checks
//! it, and turned into the namespaced tier of [`crate::ir`] with Kubernetes' meaning
//! (policyTypes defaulting, an absent or empty `from`/`to` or `ports` matching
//! everything, a `podSelector` peer meaning the policy's own namespace).

use super::Failed;
use super::metadata::{self, NameRule};
use super::peers::{self, directions, label_selector, peer, unsupported};
use super::walk::{Invalid, Node, Result};
use crate::ir::{
    Action, DEFAULT_NAMESPACE, Direction, EndpointSelector, NamespaceScope, Policy, PolicyKey,
    PortMatch, Protocol, Rule, Tier,
};
use crate::parse::Document;

pub(crate) const KIND: &str = "NetworkPolicy";
pub(crate) const API_VERSION: &str = "networking.k8s.io/v1";

pub(crate) fn parse(node: &Node<'_>) -> std::result::Result<Document, Failed> {
    let root = node.obj().map_err(|e| (None, e))?;
    root.only(&["apiVersion", "kind", "metadata", "spec", "status"])
        .map_err(|e| (None, e))?;
    let meta = metadata::parse(&root, NameRule::Subdomain).map_err(|e| (None, e))?;
    let namespace = meta
        .namespace()
        .map_err(|e| (None, e))?
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_string();
    let object = Some(format!("{KIND} {namespace}/{}", meta.name));
    let policy = (|| {
        let audit = super::audit_annotation(&meta)?;
        let spec_node = root.required("spec")?;
        let spec = spec_node.obj()?;
        spec.only(&["podSelector", "policyTypes", "ingress", "egress"])?;
        let pods = label_selector(&spec.required("podSelector")?)?;
        let own = NamespaceScope::Only(namespace.clone());
        let ingress = match spec.get("ingress") {
            None => Vec::new(),
            Some(list) => rules(&list, "from", &own)?,
        };
        let egress = match spec.get("egress") {
            None => Vec::new(),
            Some(list) => rules(&list, "to", &own)?,
        };
        let mut types = match spec.get("policyTypes") {
            None => Vec::new(),
            Some(node) => directions(&node)?,
        };
        if types.is_empty() {
            // Kubernetes' defaulting: Ingress always, Egress when there are egress rules.
            types.push(Direction::Ingress);
            if !egress.is_empty() {
                types.push(Direction::Egress);
            }
        }
        Ok::<_, Invalid>(Policy {
            key: PolicyKey::K8s {
                namespace: namespace.clone(),
                name: meta.name.clone(),
            },
            tier: Tier::Namespaced,
            audit,
            subject: EndpointSelector {
                namespaces: own.clone(),
                pods,
            },
            ingress: types.contains(&Direction::Ingress).then_some(ingress),
            egress: types.contains(&Direction::Egress).then_some(egress),
        })
    })()
    .map_err(|e| (object, e))?;
    Ok(Document::Policy(policy))
}

/// `spec.ingress` or `spec.egress`: each rule's peers (`from` or `to`) and ports.
fn rules(list: &Node<'_>, peers_field: &str, own: &NamespaceScope) -> Result<Vec<Rule>> {
    let mut rules = Vec::new();
    for item in list.list()? {
        let obj = item.obj()?;
        obj.only(&[peers_field, "ports"])?;
        let mut rule = Rule {
            action: Action::Allow,
            peers: Vec::new(),
            ports: Vec::new(),
        };
        if let Some(peers) = obj.get(peers_field) {
            for p in peers.list()? {
                rule.peers.push(peer(&p, own)?);
            }
        }
        if let Some(ports) = obj.get("ports") {
            for p in ports.list()? {
                rule.ports.push(port(&p)?);
            }
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// One `ports` entry: `protocol` (TCP by default), `port`, `endPort`.
fn port(node: &Node<'_>) -> Result<PortMatch> {
    let obj = node.obj()?;
    obj.only(&["protocol", "port", "endPort"])?;
    let protocol = match obj.get("protocol") {
        None => Protocol::TCP,
        Some(p) => match p.str()? {
            "TCP" => Protocol::TCP,
            "UDP" => Protocol::UDP,
            "SCTP" => Protocol::SCTP,
            other => return Err(unsupported(&p, other, &["TCP", "UDP", "SCTP"])),
        },
    };
    peers::port_match(protocol, obj.get("port"), obj.get("endPort"))
}
