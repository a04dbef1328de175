//! Flow events (`netctl monitor`): the datapath's [`RawFlowEvent`]s named — the
//! local endpoint, each side's endpoint, namespace and labels (from the identity and
//! the address), and the deciding and log rules (from the compiler that numbered
//! them) — for the API's broadcast.

use std::net::IpAddr;

use strait_api::policy::{FlowEvent, FlowPeer};
use strait_policy::ir::Protocol;

use super::dataplane::RawFlowEvent;
use super::reconcile::Snapshot;
use super::show::rule_by_id;

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn peer(snap: &Snapshot, address: IpAddr, port: u16, identity: u32) -> FlowPeer {
    let endpoint = snap
        .cluster
        .endpoints
        .values()
        .find(|e| e.facts.ips.iter().any(|n| n.addr() == address));
    let labels = snap.view.identities.get(&identity);
    FlowPeer {
        address,
        port,
        identity,
        endpoint: endpoint.map(|e| e.facts.id.clone()),
        namespace: labels
            .map(|l| l.namespace.clone())
            .or_else(|| endpoint.map(|e| e.facts.namespace.clone())),
        labels: labels.map(|l| l.labels.clone()).unwrap_or_default(),
    }
}

/// The event named. Its time is when the agent read it (the ring buffer's delay is
/// microseconds; the datapath's clock is not the wall clock).
pub fn enrich(snap: &Snapshot, node: &str, raw: &RawFlowEvent) -> FlowEvent {
    let endpoint = snap.enforced.get(&raw.ifindex).and_then(|en| {
        snap.cluster
            .endpoints
            .get(&en.endpoint)
            .map(|e| e.facts.id.clone())
    });
    FlowEvent {
        time_ns: unix_ns(),
        node: node.to_string(),
        direction: format!("{:?}", raw.direction).to_lowercase(),
        endpoint,
        src: peer(snap, raw.src, raw.src_port, raw.src_identity),
        dst: peer(snap, raw.dst, raw.dst_port, raw.dst_identity),
        protocol: Protocol::key_for(raw.protocol).to_string(),
        allowed: raw.allowed,
        audit: raw.audit,
        rule: rule_by_id(&snap.compiler, raw.rule),
        log_rule: rule_by_id(&snap.compiler, raw.log_rule),
    }
}
