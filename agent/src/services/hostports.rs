//! Host ports as frontends: each local endpoint's `portMappings`, planned like a node
//! port with `externalTrafficPolicy: Local` whose one backend is the container
//! (docs/services.md, "Host ports"). ADD decided which endpoint holds a port
//! (`attach::hostports`); this module only says where each is served.
//!
//! They show in `netctl service list` as pseudo-services `hostport/<endpoint id>` of
//! kind `HostPort` (as `cilium service list` shows a pod's host ports).

use std::net::IpAddr;

use strait_api::{HostPort, HostPortProtocol};
use strait_services::frontends::{Backend, Frontend, Origin, Resolved, Scope};
use strait_services::model::Protocol;

/// What a host port's pseudo-service is named after its endpoint.
pub const PREFIX: &str = "hostport/";

/// An endpoint with host ports, as the endpoint record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPortEndpoint {
    /// The endpoint's id in the store (`node/id`), as services name endpoints.
    pub id: String,
    pub node: String,
    pub addresses: Vec<IpAddr>,
    pub mappings: Vec<HostPort>,
}

impl HostPortEndpoint {
    /// Its pseudo-service's name: `hostport/<endpoint id>`.
    pub fn name(&self) -> String {
        format!("{PREFIX}{}", self.id)
    }

    /// How `netctl service list` shows its ports: `[HOSTIP:]HOSTPORT:PORT/PROTO`, as
    /// a runtime's `-p` takes them.
    pub fn ports(&self) -> Vec<String> {
        self.mappings
            .iter()
            .map(|m| {
                let ip = match m.host_ip {
                    Some(IpAddr::V4(a)) => format!("{a}:"),
                    Some(IpAddr::V6(a)) => format!("[{a}]:"),
                    None => String::new(),
                };
                format!(
                    "{ip}{}:{}/{}",
                    m.host_port,
                    m.container_port,
                    protocol(m.protocol)
                )
            })
            .collect()
    }
}

fn protocol(p: HostPortProtocol) -> Protocol {
    match p {
        HostPortProtocol::Tcp => Protocol::TCP,
        HostPortProtocol::Udp => Protocol::UDP,
    }
}

/// The frontends of `ep`'s host ports on this node (whose underlay addresses are
/// `node_addresses`): per mapping, its host IP or else each node address, in each
/// family the container has an address of, to the container's address of that
/// family on the container port.
pub fn resolve(ep: &HostPortEndpoint, node_addresses: &[IpAddr]) -> Vec<Resolved> {
    let mut out = Vec::new();
    for m in &ep.mappings {
        let addrs: Vec<IpAddr> = match m.host_ip {
            Some(ip) => vec![ip],
            None => node_addresses.to_vec(),
        };
        for addr in addrs {
            let Some(backend) = ep.addresses.iter().find(|b| b.is_ipv4() == addr.is_ipv4()) else {
                continue;
            };
            out.push(Resolved {
                frontend: Frontend {
                    addr,
                    port: m.host_port,
                    protocol: protocol(m.protocol),
                    scope: Scope::HostPort,
                },
                service: ep.name(),
                port_name: format!("{}/{}", m.host_port, m.protocol),
                backends: vec![Backend {
                    addr: *backend,
                    port: m.container_port,
                    node: Some(ep.node.clone()),
                    ready: true,
                    serving: true,
                    terminating: false,
                    origin: Origin::Endpoint(ep.id.clone()),
                }],
                local_only: true,
                affinity_secs: None,
                publish_not_ready: false,
            });
        }
    }
    out
}
