//! The parts both policy kinds share, with Kubernetes' syntax and checks: label
//! selectors, peers (`podSelector`, `namespaceSelector`, both, or `ipBlock`), ports
//! (`port`, named ports, `endPort`) and the list of directions a policy applies to.

use ipnet::IpNet;

use super::metadata;
use super::validate;
use super::walk::{Invalid, Node, Result};
use crate::ir::{Direction, EndpointSelector, NamespaceScope, Peer, PortMatch, Ports, Protocol};
use crate::selector::{LabelSelector, Operator, Requirement};

/// `metav1.LabelSelector`: `matchLabels` and `matchExpressions`.
pub fn label_selector(node: &Node<'_>) -> Result<LabelSelector> {
    let obj = node.obj()?;
    obj.only(&["matchLabels", "matchExpressions"])?;
    let match_labels = match obj.get("matchLabels") {
        None => Default::default(),
        Some(node) => metadata::labels(&node)?,
    };
    let mut match_expressions = Vec::new();
    if let Some(list) = obj.get("matchExpressions") {
        for item in list.list()? {
            match_expressions.push(requirement(&item)?);
        }
    }
    Ok(LabelSelector {
        match_labels,
        match_expressions,
    })
}

fn requirement(node: &Node<'_>) -> Result<Requirement> {
    let obj = node.obj()?;
    obj.only(&["key", "operator", "values"])?;
    let key_node = obj.required("key")?;
    let key = key_node.str()?;
    validate::qualified_name(key).map_err(|e| key_node.invalid(format!("{key:?}: {e}")))?;
    let op_node = obj.required("operator")?;
    let operator = match op_node.str()? {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => {
            return Err(unsupported(
                &op_node,
                other,
                &["In", "NotIn", "Exists", "DoesNotExist"],
            ));
        }
    };
    let mut values = Vec::new();
    let values_path = obj.child_path("values");
    if let Some(list) = obj.get("values") {
        for item in list.list()? {
            let value = item.str()?;
            validate::label_value(value).map_err(|e| item.invalid(format!("{value:?}: {e}")))?;
            values.push(value.to_string());
        }
    }
    match operator {
        Operator::In | Operator::NotIn if values.is_empty() => Err(Invalid::new(
            &values_path,
            "must be specified when `operator` is 'In' or 'NotIn'",
        )),
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => Err(Invalid::new(
            &values_path,
            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
        )),
        _ => Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        }),
    }
}

/// The API server's "Unsupported value" refusal of an enum field.
pub fn unsupported(node: &Node<'_>, given: &str, supported: &[&str]) -> Invalid {
    let supported: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    node.invalid(format!(
        "unsupported value {given:?}: supported values: {}",
        supported.join(", ")
    ))
}

/// One peer of `from`/`to`. `pods_only` is what a `podSelector` alone reaches: the
/// policy's own namespace for a NetworkPolicy, every namespace for a ClusterPolicy.
pub(crate) fn peer(node: &Node<'_>, pods_only: &NamespaceScope) -> Result<Peer> {
    let obj = node.obj()?;
    obj.only(&["podSelector", "namespaceSelector", "ipBlock"])?;
    let pods = obj.get("podSelector");
    let namespaces = obj.get("namespaceSelector");
    if let Some(block) = obj.get("ipBlock") {
        if pods.is_some() || namespaces.is_some() {
            return Err(node.invalid("may not specify both ipBlock and another peer"));
        }
        return ip_block(&block);
    }
    let namespaces = match namespaces {
        Some(n) => NamespaceScope::Selector(label_selector(&n)?),
        None if pods.is_some() => pods_only.clone(),
        None => {
            return Err(node.invalid(
                "must specify a peer: podSelector, namespaceSelector (or both), or ipBlock",
            ));
        }
    };
    let pods = match pods {
        Some(p) => label_selector(&p)?,
        None => LabelSelector::everything(),
    };
    Ok(Peer::Endpoints(EndpointSelector { namespaces, pods }))
}

fn ip_block(node: &Node<'_>) -> Result<Peer> {
    let obj = node.obj()?;
    obj.only(&["cidr", "except"])?;
    let net = cidr(&obj.required("cidr")?)?;
    let mut except = Vec::new();
    if let Some(list) = obj.get("except") {
        for item in list.list()? {
            let sub = cidr(&item)?;
            let inside = match (net, sub) {
                (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_)) => {
                    net.contains(&sub.network()) && sub.prefix_len() > net.prefix_len()
                }
                _ => false,
            };
            if !inside {
                return Err(
                    item.invalid(format!("{sub} must be a strict subset of `cidr` ({net})"))
                );
            }
            except.push(sub);
        }
    }
    Ok(Peer::Cidr { net, except })
}

/// A CIDR, with host bits cleared as Kubernetes' parser does (`10.0.0.1/24` is
/// `10.0.0.0/24`). IPv4 octets with a leading zero (`010.0.0.0/8`) are refused, as
/// current Kubernetes does: some tools read them as octal.
fn cidr(node: &Node<'_>) -> Result<IpNet> {
    let s = node.str()?;
    let address = s.split('/').next().unwrap_or_default();
    let leading_zero = !address.contains(':')
        && address
            .split('.')
            .any(|octet| octet.len() > 1 && octet.starts_with('0'));
    s.parse::<IpNet>()
        .ok()
        .filter(|_| !leading_zero)
        .map(|n| n.trunc())
        .ok_or_else(|| {
            node.invalid(format!(
                "{s:?} is not a valid CIDR (e.g. 10.0.0.0/16 or fd00::/64)"
            ))
        })
}

/// A `port`: a number or a port name.
pub enum PortValue {
    Number(u16),
    Name(String),
}

pub fn port_value(node: &Node<'_>) -> Result<PortValue> {
    if let serde_json::Value::String(name) = node.value {
        validate::port_name(name).map_err(|e| node.invalid(format!("{name:?}: {e}")))?;
        return Ok(PortValue::Name(name.clone()));
    }
    port_number(node).map(PortValue::Number)
}

pub fn port_number(node: &Node<'_>) -> Result<u16> {
    let n = node.integer()?;
    u16::try_from(n)
        .ok()
        .filter(|&p| p >= 1)
        .ok_or_else(|| node.invalid(format!("{n}: must be between 1 and 65535, inclusive")))
}

/// `port` and `endPort` of one entry into the ports of `protocol`: a range, or one
/// named port. `port` absent: every port of the protocol.
pub(crate) fn port_match(
    protocol: Protocol,
    port: Option<Node<'_>>,
    end_port: Option<Node<'_>>,
) -> Result<PortMatch> {
    let ports = match (port, end_port) {
        (None, None) => return Ok(PortMatch::any(protocol)),
        (None, Some(end)) => {
            return Err(end.invalid("may not be specified when `port` is not specified"));
        }
        (Some(port), end) => match port_value(&port)? {
            PortValue::Name(name) => {
                if let Some(end) = end {
                    return Err(end.invalid("may not be specified when `port` is non-numeric"));
                }
                Ports::Named(name)
            }
            PortValue::Number(first) => {
                let last = match end {
                    None => first,
                    Some(end) => {
                        let last = port_number(&end)?;
                        if last < first {
                            return Err(
                                end.invalid(format!("must not be less than port ({first})"))
                            );
                        }
                        last
                    }
                };
                Ports::Range(first, last)
            }
        },
    };
    Ok(PortMatch { protocol, ports })
}

/// `policyTypes` (NetworkPolicy) or `types` (ClusterPolicy): `Ingress`, `Egress`, each
/// at most once. An empty list is an absent one.
pub(crate) fn directions(node: &Node<'_>) -> Result<Vec<Direction>> {
    let mut directions = Vec::new();
    for item in node.list()? {
        let direction = match item.str()? {
            "Ingress" => Direction::Ingress,
            "Egress" => Direction::Egress,
            other => return Err(unsupported(&item, other, &["Ingress", "Egress"])),
        };
        if directions.contains(&direction) {
            return Err(item.invalid(format!("duplicate value {:?}", item.str()?)));
        }
        directions.push(direction);
    }
    Ok(directions)
}
