//! `discovery.k8s.io/v1` EndpointSlice: a service's backends by address (a service
//! without a selector, or addresses outside the cluster), checked as the API server
//! checks it and turned into [`EndpointSlice`]. Its service is named by the label
//! `kubernetes.io/service-name`, as kube-proxy reads it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use strait_policy::doc::{Invalid, NameRule, Node, Obj, Result, metadata, port_number};

use super::{DEFAULT_NAMESPACE, Failed, one_of};
use crate::model::{EndpointSlice, Family, Protocol, SliceEndpoint, SlicePort};

pub(super) const KIND: &str = "EndpointSlice";
pub(super) const API_VERSION: &str = "discovery.k8s.io/v1";
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The API server's limit on endpoints (and ports) per slice.
const MAX_ENDPOINTS: usize = 1000;
const MAX_PORTS: usize = 100;

pub(super) fn parse(node: &Node<'_>) -> std::result::Result<EndpointSlice, Failed> {
    let root = node.obj().map_err(|e| (None, e))?;
    root.only(&[
        "apiVersion",
        "kind",
        "metadata",
        "addressType",
        "endpoints",
        "ports",
    ])
    .map_err(|e| (None, e))?;
    let meta = metadata(&root, NameRule::Subdomain).map_err(|e| (None, e))?;
    let namespace = meta
        .namespace()
        .map_err(|e| (None, e))?
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_string();
    let object = Some(format!("{KIND} {namespace}/{}", meta.name));
    (|| {
        let service = meta
            .labels
            .get(SERVICE_NAME_LABEL)
            .cloned()
            .ok_or_else(|| {
                Invalid::new(
                    &meta.path("labels"),
                    format!(
                        "required label {SERVICE_NAME_LABEL}: the service these endpoints are for"
                    ),
                )
            })?;
        strait_policy::doc::dns1123_label(&service).map_err(|e| {
            Invalid::new(
                &meta.path("labels"),
                format!("{SERVICE_NAME_LABEL}: {service:?}: {e}"),
            )
        })?;
        let address_type = root.required("addressType")?;
        let family = match one_of(&address_type, &["IPv4", "IPv6", "FQDN"])? {
            "IPv4" => Family::IPv4,
            "IPv6" => Family::IPv6,
            _ => {
                return Err(address_type.invalid(
                    "strait balances over addresses; an FQDN backend needs DNS, which strait \
                     does not resolve",
                ));
            }
        };
        let endpoints = match root.get("endpoints") {
            None => Vec::new(),
            Some(list) => endpoints(&list, family)?,
        };
        let ports = match root.get("ports") {
            None => Vec::new(),
            Some(list) => ports(&list)?,
        };
        Ok(EndpointSlice {
            namespace: namespace.clone(),
            name: meta.name.clone(),
            service,
            family,
            ports,
            endpoints,
        })
    })()
    .map_err(|e| (object, e))
}

fn endpoints(list: &Node<'_>, family: Family) -> Result<Vec<SliceEndpoint>> {
    let items = list.list()?;
    if items.len() > MAX_ENDPOINTS {
        return Err(list.invalid(format!(
            "must have at most {MAX_ENDPOINTS} items, not {}",
            items.len()
        )));
    }
    let mut out = Vec::new();
    for item in items {
        let obj = item.obj()?;
        obj.only(&[
            "addresses",
            "conditions",
            "hostname",
            "targetRef",
            "nodeName",
            "zone",
            "hints",
            "deprecatedTopology",
        ])?;
        let addresses = obj.required("addresses")?;
        let mut first = None;
        for a in addresses.list()? {
            let s = a.str()?;
            let ip: IpAddr = s
                .parse()
                .map_err(|_| a.invalid(format!("{s:?}: must be a valid {family} address")))?;
            if Family::of(&ip) != family {
                return Err(a.invalid(format!("{ip} is not an {family} address (addressType)")));
            }
            first.get_or_insert(ip);
        }
        let address = first.ok_or_else(|| {
            addresses.invalid("required value: an endpoint needs at least one address")
        })?;
        let (ready, serving, terminating) = conditions(&obj)?;
        let node_name = match obj.get("nodeName") {
            None => None,
            Some(node) => {
                let name = node.str()?;
                strait_policy::doc::dns1123_subdomain(name)
                    .map_err(|e| node.invalid(format!("{name:?}: {e}")))?;
                Some(name.to_string())
            }
        };
        for tolerated in ["hostname", "zone"] {
            if let Some(node) = obj.get(tolerated) {
                node.str()?;
            }
        }
        for tolerated in ["targetRef", "hints", "deprecatedTopology"] {
            if let Some(node) = obj.get(tolerated) {
                node.obj()?;
            }
        }
        out.push(SliceEndpoint {
            address,
            ready,
            serving,
            terminating,
            node_name,
        });
    }
    Ok(out)
}

/// `conditions`, with the API's reading of absence: `ready` unknown counts as ready,
/// `serving` defaults to `ready`, `terminating` to false.
fn conditions(obj: &Obj<'_>) -> Result<(bool, bool, bool)> {
    let Some(node) = obj.get("conditions") else {
        return Ok((true, true, false));
    };
    let c = node.obj()?;
    c.only(&["ready", "serving", "terminating"])?;
    let flag = |name: &str| c.get(name).map(|n| n.bool()).transpose();
    let terminating = flag("terminating")?.unwrap_or(false);
    let ready = flag("ready")?.unwrap_or(!terminating);
    let serving = flag("serving")?.unwrap_or(ready);
    Ok((ready, serving, terminating))
}

fn ports(list: &Node<'_>) -> Result<Vec<SlicePort>> {
    let items = list.list()?;
    if items.len() > MAX_PORTS {
        return Err(list.invalid(format!("must have at most {MAX_PORTS} items")));
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for item in items {
        let obj = item.obj()?;
        obj.only(&["name", "protocol", "port", "appProtocol"])?;
        let name = match obj.get("name") {
            None => String::new(),
            Some(node) => {
                let name = node.str()?;
                if !name.is_empty() {
                    strait_policy::doc::dns1123_label(name)
                        .map_err(|e| node.invalid(format!("{name:?}: {e}")))?;
                }
                name.to_string()
            }
        };
        let protocol = match obj.get("protocol") {
            None => Protocol::TCP,
            Some(node) => match one_of(&node, &["TCP", "UDP", "SCTP"])? {
                "TCP" => Protocol::TCP,
                "UDP" => Protocol::UDP,
                _ => return Err(node.invalid("strait balances TCP and UDP, not SCTP")),
            },
        };
        if !names.insert((name.clone(), protocol)) {
            return Err(Invalid::new(
                &obj.child_path("name"),
                format!("duplicate value {name:?}/{protocol}"),
            ));
        }
        let port = match obj.get("port") {
            None => None,
            Some(node) => Some(port_number(&node)?),
        };
        if let Some(node) = obj.get("appProtocol") {
            node.str()?;
        }
        out.push(SlicePort {
            name,
            protocol,
            port,
        });
    }
    Ok(out)
}
