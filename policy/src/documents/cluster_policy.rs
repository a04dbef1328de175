//! strait's `strait.io/v1` ClusterPolicy: a cluster-wide policy in the spirit of
//! Calico's GlobalNetworkPolicy, evaluated before the namespaced tier by `order`,
//! with ordered rules whose action is Allow, Deny, Pass or Log. Its shape is
//! documented in docs/policy.md ("Writing policies"); keep the two in step.

use super::Failed;
use super::metadata::{self, NameRule};
use super::peers::{self, directions, label_selector, peer, unsupported};
use super::walk::{Invalid, Node, Result};
use crate::ir::{
    Action, Direction, EndpointSelector, NamespaceScope, Policy, PolicyKey, PortMatch, Protocol,
    Rule, Tier,
};
use crate::parse::Document;
use crate::selector::LabelSelector;

pub(crate) const KIND: &str = "ClusterPolicy";
pub(crate) const API_VERSION: &str = "strait.io/v1";

/// `spec.order` when absent: after every policy that sets a smaller one.
pub const DEFAULT_ORDER: f64 = 1000.0;

pub(crate) fn parse(node: &Node<'_>) -> std::result::Result<Document, Failed> {
    let root = node.obj().map_err(|e| (None, e))?;
    root.only(&["apiVersion", "kind", "metadata", "spec", "status"])
        .map_err(|e| (None, e))?;
    let meta = metadata::parse(&root, NameRule::Subdomain).map_err(|e| (None, e))?;
    let object = Some(format!("{KIND} {}", meta.name));
    let policy = (|| {
        if meta.has("namespace") {
            return Err(Invalid::new(
                &meta.path("namespace"),
                "a ClusterPolicy is cluster-wide: choose namespaces with spec.namespaceSelector",
            ));
        }
        let spec = root.required("spec")?.obj()?;
        spec.only(&[
            "order",
            "audit",
            "namespaceSelector",
            "podSelector",
            "types",
            "ingress",
            "egress",
        ])?;
        let order = match spec.get("order") {
            None => DEFAULT_ORDER,
            Some(n) => n.number()?,
        };
        let audit = match spec.get("audit") {
            None => false,
            Some(b) => b.bool()?,
        };
        let namespaces = match spec.get("namespaceSelector") {
            None => NamespaceScope::All,
            Some(s) => NamespaceScope::Selector(label_selector(&s)?),
        };
        let pods = match spec.get("podSelector") {
            None => LabelSelector::everything(),
            Some(s) => label_selector(&s)?,
        };
        let mut types = match spec.get("types") {
            None => Vec::new(),
            Some(t) => directions(&t)?,
        };
        if types.is_empty() {
            // The lists given say which directions; with neither, Ingress (as Calico).
            if spec.has("ingress") || !spec.has("egress") {
                types.push(Direction::Ingress);
            }
            if spec.has("egress") {
                types.push(Direction::Egress);
            }
        }
        let directed = |field: &str, peers_field: &str, direction: Direction| {
            let given = spec.get(field);
            if let Some(list) = &given
                && !types.contains(&direction)
            {
                return Err(list.invalid(format!(
                    "rules given, but spec.types does not include {direction:?}"
                )));
            }
            match given {
                None => Ok(types.contains(&direction).then(Vec::new)),
                Some(list) => rules(&list, peers_field).map(Some),
            }
        };
        let ingress = directed("ingress", "from", Direction::Ingress)?;
        let egress = directed("egress", "to", Direction::Egress)?;
        Ok(Policy {
            key: PolicyKey::Cluster {
                name: meta.name.clone(),
            },
            tier: Tier::Cluster { order },
            audit,
            subject: EndpointSelector { namespaces, pods },
            ingress,
            egress,
        })
    })()
    .map_err(|e| (object, e))?;
    Ok(Document::Policy(policy))
}

fn rules(list: &Node<'_>, peers_field: &str) -> Result<Vec<Rule>> {
    let mut rules = Vec::new();
    for item in list.list()? {
        rules.push(rule(&item, peers_field)?);
    }
    Ok(rules)
}

/// One rule: `action`, peers, and what traffic (`protocol` with `ports` or `icmp`).
fn rule(node: &Node<'_>, peers_field: &str) -> Result<Rule> {
    let obj = node.obj()?;
    obj.only(&["action", peers_field, "protocol", "ports", "icmp"])?;
    let action_node = obj.required("action")?;
    let action = match action_node.str()? {
        "Allow" => Action::Allow,
        "Deny" => Action::Deny,
        "Pass" => Action::Pass,
        "Log" => Action::Log,
        other => {
            return Err(unsupported(
                &action_node,
                other,
                &["Allow", "Deny", "Pass", "Log"],
            ));
        }
    };
    let mut peer_list = Vec::new();
    if let Some(list) = obj.get(peers_field) {
        for p in list.list()? {
            // A podSelector alone reaches pods of every namespace here.
            peer_list.push(peer(&p, &NamespaceScope::All)?);
        }
    }
    let protocol = match obj.get("protocol") {
        None => None,
        Some(p) => Some(protocol(&p)?),
    };
    let ports = match (protocol, obj.get("ports"), obj.get("icmp")) {
        (None, None, None) => Vec::new(),
        (Some(proto), None, None) => vec![PortMatch::any(proto)],
        (proto, Some(list), _) => {
            let Some(proto) =
                proto.filter(|p| [Protocol::TCP, Protocol::UDP, Protocol::SCTP].contains(p))
            else {
                return Err(list.invalid("needs protocol TCP, UDP or SCTP"));
            };
            if let Some(icmp) = obj.get("icmp") {
                return Err(icmp.invalid("may not be given with ports"));
            }
            let mut matches = Vec::new();
            for entry in list.list()? {
                let e = entry.obj()?;
                e.only(&["port", "endPort"])?;
                let port = e.required("port")?;
                matches.push(peers::port_match(proto, Some(port), e.get("endPort"))?);
            }
            matches
        }
        (proto, None, Some(icmp)) => {
            let Some(proto) = proto.filter(|p| [Protocol::ICMP, Protocol::ICMPV6].contains(p))
            else {
                return Err(icmp.invalid("needs protocol ICMP or ICMPv6"));
            };
            vec![icmp_match(proto, &icmp)?]
        }
    };
    Ok(Rule {
        action,
        peers: peer_list,
        ports,
    })
}

/// `TCP`, `UDP`, `SCTP`, `ICMP`, `ICMPv6`, or an IANA protocol number 1–255.
fn protocol(node: &Node<'_>) -> Result<Protocol> {
    const NAMES: &[&str] = &["TCP", "UDP", "SCTP", "ICMP", "ICMPv6"];
    if let serde_json::Value::String(name) = node.value {
        return match name.as_str() {
            "TCP" => Ok(Protocol::TCP),
            "UDP" => Ok(Protocol::UDP),
            "SCTP" => Ok(Protocol::SCTP),
            "ICMP" => Ok(Protocol::ICMP),
            "ICMPv6" => Ok(Protocol::ICMPV6),
            other => Err(unsupported(node, other, NAMES)),
        };
    }
    let n = node.integer()?;
    u8::try_from(n)
        .ok()
        .filter(|&p| p >= 1)
        .map(Protocol)
        .ok_or_else(|| {
            node.invalid(format!(
                "{n}: must be a protocol number between 1 and 255, or one of {}",
                NAMES.join(", ")
            ))
        })
}

/// `icmp: {type, code}`: a type 0–255, and a code 0–255 if given.
fn icmp_match(protocol: Protocol, node: &Node<'_>) -> Result<PortMatch> {
    let obj = node.obj()?;
    obj.only(&["type", "code"])?;
    let byte = |n: &Node<'_>| {
        let v = n.integer()?;
        u8::try_from(v).map_err(|_| n.invalid(format!("{v}: must be between 0 and 255, inclusive")))
    };
    let code = obj.get("code").map(|c| byte(&c)).transpose()?;
    let icmp_type = match obj.get("type") {
        Some(t) => byte(&t)?,
        None => {
            let path = obj.child_path("type");
            return Err(Invalid::new(
                &path,
                if code.is_some() {
                    "required value: code needs type"
                } else {
                    "required value"
                },
            ));
        }
    };
    Ok(PortMatch::icmp(protocol, icmp_type, code))
}
