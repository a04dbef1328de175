//! `netctl policy trace --from X --to Y --port 80/tcp`: the verdict for one new flow,
//! from the store's policies (the reference evaluator, `strait_policy::eval`) and,
//! where the deciding endpoint is on this node, from the tables read back from its
//! kernel maps, saying when the two differ.
//!
//! Each side is an endpoint id (any node's), `[NAMESPACE/]k=v,...` (the identity of
//! that label set), or an address or CIDR (its identity from the ipcache, its
//! endpoint if it is one).

use std::net::{IpAddr, Ipv4Addr};

use strait_api::policy::{KernelVerdict, TracePeer, TraceStep, TraceView};
use strait_policy::eval::{self, Peer, PeerEndpoint};
use strait_policy::ir::{DEFAULT_NAMESPACE, Direction, Protocol};
use strait_policy::selector::Labels;
use strait_policy::tables::{FIRST_ALLOCATED_IDENTITY, IDENTITY_WORLD};
use strait_policy::view::{IdentityLabels, LocalEndpoint, NamedPort};

use super::dataplane::Installed;
use super::reconcile::Snapshot;
use super::show::rule_by_id;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(
        "{0:?} is not an endpoint id, a label set (k=v,... with an optional NAMESPACE/) or an address"
    )]
    BadPeer(String),
}

/// One side, resolved.
#[derive(Debug, Clone)]
pub struct Side {
    pub view: TracePeer,
    /// Set when the side is an endpoint or a label set.
    pub endpoint_key: Option<String>,
    pub named_ports: Vec<NamedPort>,
}

impl Side {
    fn is_endpoint(&self) -> bool {
        self.view.identity >= FIRST_ALLOCATED_IDENTITY && self.view.namespace.is_some()
    }

    fn local(&self) -> Option<LocalEndpoint> {
        self.is_endpoint().then(|| LocalEndpoint {
            identity: self.view.identity,
            namespace: self.view.namespace.clone().unwrap_or_default(),
            labels: self.view.labels.clone(),
            named_ports: self.named_ports.clone(),
        })
    }

    fn peer(&self) -> Peer {
        let addr = self
            .view
            .address
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let who = match self.local() {
            Some(l) => PeerEndpoint::Endpoint {
                identity: l.identity,
                labels: IdentityLabels {
                    namespace: l.namespace,
                    labels: l.labels,
                },
                named_ports: l.named_ports,
            },
            None => PeerEndpoint::Reserved(self.view.identity),
        };
        Peer { addr, who }
    }
}

/// Resolves one side against the snapshot.
/// The endpoint (of any node) an operator's ID names, as `netctl endpoints` and
/// `netctl endpoint label` take it (`strait_api::endpoint_ref`): its id, its
/// container ID, or a prefix of either that only one endpoint has.
pub fn find_endpoint<'a>(
    snap: &'a Snapshot,
    query: &str,
) -> Option<(&'a String, &'a super::cluster::EndpointEntry)> {
    let eps = &snap.cluster.endpoints;
    let found = strait_api::endpoint_ref::resolve(query, eps.values()).ok()?;
    eps.iter().find(|(_, e)| std::ptr::eq(*e, found))
}

pub fn resolve(snap: &Snapshot, spec: &str) -> Result<Side, TraceError> {
    let spec = spec.trim();
    // An endpoint of any node, by id or container ID.
    if let Some((key, e)) = find_endpoint(snap, spec) {
        return Ok(endpoint_side(spec, key, e));
    }
    if let Some(net) = strait_api::policy::parse_cidr_or_address(spec) {
        let addr = net.addr();
        if let Some((key, e)) = snap
            .cluster
            .endpoints
            .iter()
            .find(|(_, e)| e.facts.ips.iter().any(|n| n.contains(&addr)))
        {
            let mut side = endpoint_side(spec, key, e);
            side.view.address = Some(addr);
            return Ok(side);
        }
        let identity = snap
            .ipcache
            .iter()
            .filter(|(n, _)| n.contains(&addr))
            .max_by_key(|(n, _)| n.prefix_len())
            .map_or(IDENTITY_WORLD, |(_, id)| *id);
        return Ok(Side {
            view: TracePeer {
                spec: spec.to_string(),
                endpoint: None,
                node: None,
                namespace: None,
                labels: Labels::new(),
                identity,
                address: Some(addr),
            },
            endpoint_key: None,
            named_ports: Vec::new(),
        });
    }
    let (namespace, pairs) = match spec.split_once('/') {
        Some((ns, rest)) => (ns.to_string(), rest),
        None => (DEFAULT_NAMESPACE.to_string(), spec),
    };
    let mut labels = Labels::new();
    for pair in pairs.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| TraceError::BadPeer(spec.to_string()))?;
        if k.is_empty() {
            return Err(TraceError::BadPeer(spec.to_string()));
        }
        labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    let il = IdentityLabels {
        namespace: namespace.clone(),
        labels: labels.clone(),
    };
    // The identity of exactly this label set; a set no endpoint has yet is traced
    // as if it had one (selectors match labels, not numbers).
    let identity = snap
        .view
        .identities
        .iter()
        .find(|(_, l)| **l == il)
        .map_or(u32::MAX >> 1, |(id, _)| *id);
    let named_ports = snap
        .view
        .named_ports
        .get(&identity)
        .cloned()
        .unwrap_or_default();
    let address = snap
        .cluster
        .endpoints
        .values()
        .find(|e| e.facts.identity == Some(identity))
        .and_then(|e| e.facts.ips.first())
        .map(|n| n.addr());
    Ok(Side {
        view: TracePeer {
            spec: spec.to_string(),
            endpoint: None,
            node: None,
            namespace: Some(namespace),
            labels,
            identity,
            address,
        },
        endpoint_key: None,
        named_ports,
    })
}

fn endpoint_side(spec: &str, key: &str, e: &super::cluster::EndpointEntry) -> Side {
    Side {
        view: TracePeer {
            spec: spec.to_string(),
            endpoint: Some(e.facts.id.clone()),
            node: Some(e.facts.node.clone()),
            namespace: Some(e.facts.namespace.clone()),
            labels: e.facts.labels.clone(),
            identity: e.facts.identity.unwrap_or(0),
            address: e.facts.ips.first().map(|n| n.addr()),
        },
        endpoint_key: Some(key.to_string()),
        named_ports: e.facts.named_ports.clone(),
    }
}

/// The trace; `installed` reads the kernel's tables of a local endpoint by its
/// record's key (None: not local or no entry).
pub fn trace(
    snap: &Snapshot,
    from: &Side,
    to: &Side,
    protocol: u8,
    port: u16,
    installed: impl Fn(&str) -> Option<Installed>,
) -> TraceView {
    let mut steps = Vec::new();
    for (d, subject, peer) in [
        (Direction::Egress, from, to),
        (Direction::Ingress, to, from),
    ] {
        let Some(local) = subject.local() else {
            continue;
        };
        let p = peer.peer();
        let bypass = eval::host_bypass(d, &p);
        let (allowed, audit, rule, log_rule, selected_by) = if bypass {
            (true, false, None, None, Vec::new())
        } else {
            let x = eval::evaluate(&snap.compiler, &snap.view, &local, d, &p, protocol, port);
            (
                x.verdict.allowed,
                x.verdict.audit,
                rule_by_id(&snap.compiler, x.verdict.rule),
                rule_by_id(&snap.compiler, x.verdict.log),
                x.selecting.iter().map(|k| k.to_string()).collect(),
            )
        };
        // The host's own traffic into its endpoints passes before any lookup.
        let kernel = subject
            .endpoint_key
            .as_deref()
            .filter(|_| !bypass)
            .and_then(&installed)
            .map(|inst| {
                let v = inst
                    .tables
                    .direction(d)
                    .lookup(p.who.identity(), p.addr, protocol, port)
                    .verdict();
                KernelVerdict {
                    allowed: v.allowed,
                    audit: v.audit,
                    rule: v.rule,
                }
            });
        let differs = kernel.as_ref().is_some_and(|k| {
            k.allowed != allowed || k.audit != audit || k.rule != rule.as_ref().map(|r| r.id)
        });
        steps.push(TraceStep {
            direction: format!("{d:?}").to_lowercase(),
            endpoint: subject.view.endpoint.clone(),
            selected_by,
            allowed,
            audit,
            rule,
            log_rule,
            kernel,
            differs,
        });
    }
    TraceView {
        from: from.view.clone(),
        to: to.view.clone(),
        protocol: Protocol::key_for(protocol).to_string(),
        port,
        allowed: steps.iter().all(|s| s.allowed),
        steps,
    }
}
