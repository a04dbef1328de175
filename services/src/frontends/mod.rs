//! Where a service answers and whom it sends to, on one node.
//!
//! A service's frontends are (address, port, protocol): each cluster IP and each
//! external IP on every service port, and with type NodePort each of this node's
//! addresses on the port's node port. Each frontend's candidate backends are the
//! endpoints of the service's namespace its selector matches (target port by number,
//! or by the endpoint's named port) together with the endpoints of its EndpointSlices
//! (the slice port of the same name), in the frontend's family.
//!
//! Which candidates take traffic ([`usable`]) follows Kubernetes: ready ones (any,
//! with `publishNotReadyAddresses`); when none is ready, those still serving while
//! they terminate, so that a rolling update's last backend drains instead of
//! refusing; never one the agent's health check failed; with a Local traffic policy
//! only those on this node.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::{
    EndpointSlice, Family, Protocol, Service, ServiceKind, ServicePort, TargetPort,
};

/// An endpoint of the cluster as services see it (the agent's endpoint records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    /// The endpoint's id in the store (`node/container`), for `netctl`.
    pub id: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub addresses: Vec<IpAddr>,
    /// Named ports it declares: (name, protocol, number).
    pub named_ports: Vec<(String, Protocol, u16)>,
    pub node: String,
    pub ready: bool,
}

/// Which kind of address a frontend is: it decides the traffic policy that applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    ClusterIP,
    ExternalIP,
    NodePort,
    /// A container's host port (CNI `portMappings`): the node's addresses, or the one
    /// it names, to that container alone; planned by the agent from the endpoint
    /// record, not from a service.
    HostPort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Frontend {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub scope: Scope,
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}/{}", self.port, self.protocol),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{}", self.port, self.protocol),
        }
    }
}

/// Where a candidate came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Origin {
    /// A local or remote endpoint the selector matched, by id.
    Endpoint(String),
    /// An EndpointSlice, by `namespace/name`.
    Slice(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub addr: IpAddr,
    pub port: u16,
    /// The node it runs on, when known (a slice may name none: outside the cluster).
    pub node: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub origin: Origin,
}

impl Backend {
    /// What Maglev keys it by: the same on every node.
    pub fn key(&self) -> String {
        match self.addr {
            IpAddr::V4(a) => format!("{a}:{}", self.port),
            IpAddr::V6(a) => format!("[{a}]:{}", self.port),
        }
    }
}

/// One frontend of a service with its candidate backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub frontend: Frontend,
    /// `namespace/name` of the service and the name of its port.
    pub service: String,
    pub port_name: String,
    /// Sorted by key, each address and port once (a selector and a slice naming the
    /// same backend count it once, the endpoint first).
    pub backends: Vec<Backend>,
    /// Only backends on this node may take its traffic (a Local traffic policy).
    pub local_only: bool,
    pub affinity_secs: Option<u32>,
    pub publish_not_ready: bool,
}

/// Every frontend of `service` on a node whose addresses (those node ports answer on)
/// are `node_addresses`, with its candidates from `endpoints` and `slices` (all of the
/// cluster; those of other services are skipped).
pub fn resolve(
    service: &Service,
    node_addresses: &[IpAddr],
    endpoints: &[EndpointView],
    slices: &[EndpointSlice],
) -> Vec<Resolved> {
    let mut out = Vec::new();
    for port in &service.ports {
        let mut frontends: Vec<Frontend> = Vec::new();
        for &addr in &service.cluster_ips {
            frontends.push(Frontend {
                addr,
                port: port.port,
                protocol: port.protocol,
                scope: Scope::ClusterIP,
            });
        }
        for &addr in &service.external_ips {
            frontends.push(Frontend {
                addr,
                port: port.port,
                protocol: port.protocol,
                scope: Scope::ExternalIP,
            });
        }
        if let (ServiceKind::NodePort, Some(node_port)) = (service.kind, port.node_port) {
            for &addr in node_addresses {
                if service.ip_families.contains(&Family::of(&addr)) {
                    frontends.push(Frontend {
                        addr,
                        port: node_port,
                        protocol: port.protocol,
                        scope: Scope::NodePort,
                    });
                }
            }
        }
        for frontend in frontends {
            let family = Family::of(&frontend.addr);
            let backends = candidates(service, port, family, endpoints, slices);
            let local_only = match frontend.scope {
                Scope::ClusterIP => service.internal_local,
                Scope::ExternalIP | Scope::NodePort => service.external_local,
                Scope::HostPort => true,
            };
            out.push(Resolved {
                frontend,
                service: service.id(),
                port_name: port.name.clone(),
                backends,
                local_only,
                affinity_secs: service.affinity_secs,
                publish_not_ready: service.publish_not_ready,
            });
        }
    }
    out
}

fn candidates(
    service: &Service,
    service_port: &ServicePort,
    family: Family,
    endpoints: &[EndpointView],
    slices: &[EndpointSlice],
) -> Vec<Backend> {
    let (port_name, protocol) = (&service_port.name, service_port.protocol);
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    if let Some(selector) = &service.selector {
        for ep in endpoints {
            if ep.namespace != service.namespace
                || !selector.iter().all(|(k, v)| ep.labels.get(k) == Some(v))
            {
                continue;
            }
            let port = match &service_port.target_port {
                TargetPort::Number(n) => Some(*n),
                TargetPort::Name(name) => ep
                    .named_ports
                    .iter()
                    .find(|(n, p, _)| n == name && *p == protocol)
                    .map(|(_, _, number)| *number),
            };
            let Some(port) = port else { continue };
            for &addr in ep.addresses.iter().filter(|a| Family::of(a) == family) {
                if seen.insert((addr, port)) {
                    out.push(Backend {
                        addr,
                        port,
                        node: Some(ep.node.clone()),
                        ready: ep.ready,
                        serving: ep.ready,
                        terminating: false,
                        origin: Origin::Endpoint(ep.id.clone()),
                    });
                }
            }
        }
    }
    for slice in slices {
        if slice.namespace != service.namespace
            || slice.service != service.name
            || slice.family != family
        {
            continue;
        }
        let Some(port) = slice
            .ports
            .iter()
            .find(|p| &p.name == port_name && p.protocol == protocol)
            .and_then(|p| p.port)
        else {
            continue;
        };
        for e in &slice.endpoints {
            if seen.insert((e.address, port)) {
                out.push(Backend {
                    addr: e.address,
                    port,
                    node: e.node_name.clone(),
                    ready: e.ready,
                    serving: e.serving,
                    terminating: e.terminating,
                    origin: Origin::Slice(slice.id()),
                });
            }
        }
    }
    out.sort_by_key(Backend::key);
    out
}

/// The candidates of `r` that take new traffic on node `node`; `down` says which the
/// health checks hold down.
pub fn usable<'a>(
    r: &'a Resolved,
    node: &str,
    down: impl Fn(&Backend) -> bool,
) -> Vec<&'a Backend> {
    let eligible: Vec<&Backend> = r
        .backends
        .iter()
        .filter(|b| !down(b))
        .filter(|b| !r.local_only || b.node.as_deref() == Some(node))
        .collect();
    if r.publish_not_ready {
        return eligible;
    }
    let ready: Vec<&Backend> = eligible.iter().copied().filter(|b| b.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    eligible
        .into_iter()
        .filter(|b| b.serving && b.terminating)
        .collect()
}

#[cfg(test)]
mod tests;
