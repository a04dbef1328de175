//! From the cluster's services, slices and endpoints to this node's datapath.
//!
//! [`plan`] is pure: every frontend this node serves, its candidates, the usable ones
//! and their Maglev table (the same on every node for the same backends). A frontend
//! two services claim (an external IP one service shares with another's node port)
//! goes to the service whose name sorts first; the other reports the clash. This
//! node's host ports ([`super::hostports`]) are planned first: a node port or
//! external IP a service shares with one stays the host port's on this node (ADD
//! refuses a host port that is a node port already, so only a service applied after
//! the container clashes) and the service reports the clash.
//! [`Reconciler::apply`] makes the datapath hold the plan: frontends whose entry
//! changed are installed whole, those no longer planned removed, and one the datapath
//! refuses (a full map) keeps its previous entry and reports why, while the others go
//! on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use strait_api::services::{BackendView, FrontendView, ServiceView};
use strait_services::frontends::{Backend, EndpointView, Origin, Resolved, Scope, resolve, usable};
use strait_services::maglev;
use strait_services::model::{EndpointSlice, Service, ServiceKind};
use tracing::{info, warn};

use super::dataplane::{Entry, FrontendKey, ServiceDataplane};
use super::hostports::{self, HostPortEndpoint};

/// What the plan is computed from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    /// By `ns/name`.
    pub services: BTreeMap<String, Service>,
    pub slices: BTreeMap<String, EndpointSlice>,
    pub endpoints: Vec<EndpointView>,
    /// Backends the health checks hold down: (service, address).
    pub down: BTreeSet<(String, IpAddr)>,
    /// The endpoints (of every node) with host ports.
    pub host_ports: Vec<HostPortEndpoint>,
}

/// One frontend as planned.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub resolved: Resolved,
    pub table: maglev::Table,
    pub entry: Entry,
}

/// The frontends this node serves, and the clashes found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub frontends: BTreeMap<FrontendKey, Planned>,
    /// Per service (`ns/name`), frontends it could not have and why.
    pub clashes: BTreeMap<String, Vec<String>>,
}

pub fn plan(inputs: &Inputs, node: &str, node_addresses: &[IpAddr]) -> Plan {
    let mut out = Plan::default();
    for ep in inputs.host_ports.iter().filter(|ep| ep.node == node) {
        for resolved in hostports::resolve(ep, node_addresses) {
            out.add(&ep.name(), resolved, inputs, node);
        }
    }
    let slices: Vec<EndpointSlice> = inputs.slices.values().cloned().collect();
    for (id, service) in &inputs.services {
        for resolved in resolve(service, node_addresses, &inputs.endpoints, &slices) {
            out.add(id, resolved, inputs, node);
        }
    }
    out
}

impl Plan {
    /// Plans `resolved` for `id` (a service, or a host port's pseudo-service), unless
    /// an earlier one has its frontend: then `id` reports the clash.
    fn add(&mut self, id: &str, resolved: Resolved, inputs: &Inputs, node: &str) {
        let f = resolved.frontend;
        let key = FrontendKey {
            addr: f.addr,
            port: f.port,
            protocol: f.protocol,
        };
        if let Some(holder) = self.frontends.get(&key) {
            let held_by = match holder.resolved.service.strip_prefix(hostports::PREFIX) {
                Some(endpoint) => format!("a host port of endpoint {endpoint}"),
                None => format!("Service {}'s", holder.resolved.service),
            };
            self.clashes
                .entry(id.to_string())
                .or_default()
                .push(format!("{f} is also {held_by}, which has it"));
            return;
        }
        let down = |b: &Backend| inputs.down.contains(&(resolved.service.clone(), b.addr));
        let chosen: Vec<&Backend> = usable(&resolved, node, down);
        let keys: Vec<String> = chosen.iter().map(|b| b.key()).collect();
        let table = maglev::build(&keys, maglev::table_size(keys.len()));
        // The table indexes the backends in its own (sorted) order.
        let backends = table
            .backends
            .iter()
            .filter_map(|k| chosen.iter().find(|b| &b.key() == k))
            .map(|b| (b.addr, b.port))
            .collect();
        let local = chosen
            .iter()
            .filter(|b| b.node.as_deref() == Some(node))
            .map(|b| (b.addr, b.port))
            .collect();
        let entry = Entry {
            backends,
            table: table.slots.clone(),
            affinity_secs: resolved.affinity_secs,
            // Node ports, external IPs and host ports are reached by packets
            // from outside too (the packet-level translation); cluster IPs only
            // by sockets.
            from_outside: matches!(
                f.scope,
                Scope::NodePort | Scope::ExternalIP | Scope::HostPort
            ),
            local,
        };
        self.frontends.insert(
            key,
            Planned {
                resolved,
                table,
                entry,
            },
        );
    }
}

/// Holds the datapath to the plan.
pub struct Reconciler {
    dp: Arc<dyn ServiceDataplane>,
    /// What the datapath holds, as this reconciler installed it.
    applied: BTreeMap<FrontendKey, Entry>,
    /// Frontends the datapath refused, and why.
    errors: BTreeMap<FrontendKey, String>,
    /// Whether the datapath's leftovers (a previous agent's) were read.
    adopted: bool,
}

impl Reconciler {
    pub fn new(dp: Arc<dyn ServiceDataplane>) -> Self {
        Self {
            dp,
            applied: BTreeMap::new(),
            errors: BTreeMap::new(),
            adopted: false,
        }
    }

    /// Installs what changed, removes what is no longer planned. Returns the number
    /// of changes made.
    pub fn apply(&mut self, plan: &Plan) -> usize {
        let mut changes = 0;
        if !self.adopted {
            // A previous agent's frontends: those not planned go; the planned ones are
            // installed again below (same backends, same table: established flows keep
            // their backend).
            match self.dp.installed() {
                Ok(keys) => {
                    for key in keys.into_iter().filter(|k| !plan.frontends.contains_key(k)) {
                        match self.dp.remove(&key) {
                            Ok(()) => changes += 1,
                            Err(e) => {
                                warn!(frontend = ?key, error = %e, "removing a stale frontend")
                            }
                        }
                    }
                    self.adopted = true;
                }
                Err(e) => warn!(error = %e, "reading the services datapath"),
            }
        }
        for (key, planned) in &plan.frontends {
            if self.applied.get(key) == Some(&planned.entry) && !self.errors.contains_key(key) {
                continue;
            }
            match self.dp.install(key, &planned.entry) {
                Ok(()) => {
                    self.applied.insert(*key, planned.entry.clone());
                    self.errors.remove(key);
                    changes += 1;
                }
                Err(e) => {
                    if self.errors.get(key) != Some(&e) {
                        warn!(frontend = %planned.resolved.frontend, error = %e, "the datapath refused a frontend; its previous state stays");
                    }
                    self.errors.insert(*key, e);
                }
            }
        }
        let gone: Vec<FrontendKey> = self
            .applied
            .keys()
            .filter(|k| !plan.frontends.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            match self.dp.remove(&key) {
                Ok(()) => {
                    self.applied.remove(&key);
                    self.errors.remove(&key);
                    changes += 1;
                }
                Err(e) => {
                    self.errors.insert(key, e);
                }
            }
        }
        self.errors
            .retain(|k, _| plan.frontends.contains_key(k) || self.applied.contains_key(k));
        if changes > 0 {
            info!(
                changes,
                frontends = plan.frontends.len(),
                "services datapath updated"
            );
        }
        changes
    }

    /// Whether `key` is installed as planned, and the datapath's refusal if any.
    pub fn state(&self, key: &FrontendKey, planned: &Entry) -> (bool, Option<String>) {
        (
            self.applied.get(key) == Some(planned),
            self.errors.get(key).cloned(),
        )
    }

    /// Every service as this node serves it, then this node's host ports as
    /// pseudo-services (`hostport/<endpoint>`, kind `HostPort`).
    pub fn views(&self, inputs: &Inputs, plan: &Plan) -> Vec<ServiceView> {
        let mut views = Vec::new();
        for (id, service) in &inputs.services {
            let frontends = self.frontend_views(id, inputs, plan);
            views.push(ServiceView {
                name: id.clone(),
                kind: service.kind.to_string(),
                cluster_ips: service.cluster_ips.clone(),
                external_ips: service.external_ips.clone(),
                ports: service
                    .ports
                    .iter()
                    .map(|p| match (service.kind, p.node_port) {
                        (ServiceKind::NodePort, Some(n)) => {
                            format!("{}:{n}/{}", p.port, p.protocol)
                        }
                        _ => format!("{}/{}", p.port, p.protocol),
                    })
                    .collect(),
                frontends,
            });
        }
        for ep in &inputs.host_ports {
            let name = ep.name();
            let frontends = self.frontend_views(&name, inputs, plan);
            if frontends.is_empty() {
                // Another node's.
                continue;
            }
            views.push(ServiceView {
                name,
                kind: "HostPort".into(),
                cluster_ips: Vec::new(),
                external_ips: Vec::new(),
                ports: ep.ports(),
                frontends,
            });
        }
        views
    }

    /// The frontends planned for `id`, then those it could not have and why.
    fn frontend_views(&self, id: &str, inputs: &Inputs, plan: &Plan) -> Vec<FrontendView> {
        let mut frontends: Vec<FrontendView> = plan
            .frontends
            .iter()
            .filter(|(_, p)| p.resolved.service == id)
            .map(|(key, p)| self.frontend_view(key, p, inputs))
            .collect();
        for clash in plan.clashes.get(id).into_iter().flatten() {
            frontends.push(FrontendView {
                frontend: String::new(),
                scope: String::new(),
                backends: Vec::new(),
                table_size: 0,
                installed: false,
                error: Some(clash.clone()),
            });
        }
        frontends
    }

    fn frontend_view(&self, key: &FrontendKey, p: &Planned, inputs: &Inputs) -> FrontendView {
        let shares = p.table.shares();
        let backends = p
            .resolved
            .backends
            .iter()
            .map(|b| {
                let k = b.key();
                let slots = p
                    .table
                    .backends
                    .iter()
                    .position(|t| t == &k)
                    .map(|i| shares[i] as u32)
                    .unwrap_or(0);
                BackendView {
                    address: b.addr,
                    port: b.port,
                    node: b.node.clone(),
                    ready: b.ready,
                    healthy: inputs
                        .services
                        .get(&p.resolved.service)
                        .and_then(|s| s.health_check.as_ref())
                        .map(|_| !inputs.down.contains(&(p.resolved.service.clone(), b.addr))),
                    usable: slots > 0,
                    slots,
                    // The datapath's count, filled in when the views are read.
                    connections: 0,
                    origin: match &b.origin {
                        Origin::Endpoint(id) => id.clone(),
                        Origin::Slice(s) => format!("EndpointSlice {s}"),
                    },
                }
            })
            .collect();
        FrontendView {
            frontend: p.resolved.frontend.to_string(),
            scope: format!("{:?}", p.resolved.frontend.scope),
            backends,
            table_size: p.entry.table.len() as u32,
            installed: self.applied.get(key) == Some(&p.entry),
            error: self.errors.get(key).cloned(),
        }
    }
}

#[cfg(test)]
mod tests;
