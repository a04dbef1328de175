//! The fast path follows the attach lifecycle's endpoints: a new veth is queued to be
//! attached once settled, a deleted one's addresses leave the endpoint map, and at
//! start the endpoints a previous agent left are adopted.

use std::collections::{HashMap, HashSet};

use tracing::warn;

use super::{Endpoint, FastPath};
use crate::attach::events::{EndpointEvent, EndpointSubscriber};

impl EndpointSubscriber for FastPath {
    fn endpoint_event(&self, event: &EndpointEvent<'_>) {
        match event {
            EndpointEvent::Attached {
                endpoint,
                host_ifindex,
            } => {
                if endpoint.host_ports {
                    // An older plugin's host ports, which only a chained portmap
                    // serves (DNAT): its replies need the host's conntrack. Host ports
                    // strait serves (`port_mappings`) are translated before netfilter
                    // and need no such thing.
                    return;
                }
                // The new veth gets the fast path once it has settled, off the ADD path
                // (see [`super::SETTLE`]); until then the kernel forwards for it.
                match destination(endpoint) {
                    Ok(dest) => self.queue_endpoint(&endpoint.host_ifname, *host_ifindex, dest),
                    Err(e) => {
                        warn!(error = %e, "fast path: the endpoint uses the kernel's forwarding")
                    }
                }
            }
            EndpointEvent::Detached { host_ifname } => self.forget_endpoint(host_ifname),
        }
    }
}

impl FastPath {
    /// Attaches to every recorded endpoint's veth present in `links` (name → ifindex;
    /// at start, a previous agent's filters are replaced in place), but for those with
    /// host ports or in `shaped` (an `ingress` qdisc). Returns how many.
    pub fn adopt(
        &self,
        endpoints: &[strait_api::Endpoint],
        links: &HashMap<String, u32>,
        shaped: &HashSet<String>,
    ) -> usize {
        let mut attached = 0;
        for ep in endpoints {
            if ep.host_ports || shaped.contains(&ep.host_ifname) {
                // Only portmap serves its host ports (an older plugin's record: its
                // replies need the host's conntrack), or bandwidth shapes it.
                continue;
            }
            let Some(&index) = links.get(&ep.host_ifname) else {
                continue;
            };
            let dest = match destination(ep) {
                Ok(dest) => dest,
                Err(e) => {
                    warn!(id = %ep.id, error = %e, "fast path: record left to the kernel");
                    continue;
                }
            };
            match self.attach_endpoint(&ep.host_ifname, index, dest) {
                Ok(()) => attached += 1,
                Err(e) => warn!(error = %e, "fast path"),
            }
        }
        attached
    }
}

/// The record as the endpoint map lists it.
fn destination(ep: &strait_api::Endpoint) -> Result<Endpoint, String> {
    Ok(Endpoint {
        ips: ep.ips.iter().map(|n| n.addr()).collect(),
        mac: parse_mac(&ep.mac)?,
        host_mac: parse_mac(&ep.host_mac)?,
    })
}

/// A recorded MAC (attach checked it was a unicast one when it made the endpoint).
fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    s.parse::<strait_api::MacAddr>()
        .map(strait_api::MacAddr::octets)
        .map_err(|e| e.to_string())
}
