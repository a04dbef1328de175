//! `NetworkDriver.*`: Docker's network calls.
//!
//! The order dockerd calls them in for `docker run`: CreateEndpoint, Join,
//! ProgramExternalConnectivity, EndpointOperInfo; at the end RevokeExternalConnectivity,
//! Leave, DeleteEndpoint. `docker network connect`/`disconnect` skip the external
//! connectivity calls.
//!
//! * CreateEndpoint makes the attachment: the addresses Docker chose (reserved here,
//!   or already held through strait's IPAM driver), the endpoint record, and a veth
//!   with both ends on the host.
//! * Join records the container's namespace and names the end libnetwork moves in.
//!   Its answer is the routed model: the gateway is `169.254.1.1` behind an on-link
//!   /32 route (the address Docker assigns may be a /32, which has no on-link room for
//!   a gateway) and `fe80::1`, which the host end carries for this. libnetwork then
//!   moves the interface, renames it `ethN`, assigns the address and MAC and adds
//!   the routes. An `--internal` network gets no default route, only routes to its
//!   subnets, and `DisableGatewayService` so Docker adds no `docker_gwbridge` either.
//! * Leave: libnetwork moves the interface back to the host itself.
//! * DeleteEndpoint removes the attachment; a second one finds nothing and succeeds.
//!
//! An endpoint's record id and link names derive from Docker's endpoint ID alone, so
//! an agent restarted between any two calls finds what the first one made.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;
use strait_api::Family;
use strait_api::docker::{
    CapabilitiesResponse, CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest,
    EndpointInfoResponse, EndpointRequest, ExternalConnectivityRequest, InterfaceName, JoinRequest,
    JoinResponse, NetworkRequest, ROUTE_CONNECTED, ROUTE_NEXT_HOP, StaticRoute, bool_option,
    generic_options, option, port_bindings,
};
use tracing::{debug, info, warn};

use super::ipam::{GLOBAL_ADDRESS_SPACE, LOCAL_ADDRESS_SPACE, now, parse_addr};
use super::networks::{IpamKind, StoredNetwork, short};
use super::{DockerError, DockerPlugin};
use crate::attach::handover::{HandoverRequest, Reservation};
use crate::attach::records::attachment_id;
use crate::endpoint::{self, GATEWAY_V6};
use crate::ipam::DOCKER_HANDLE_PREFIX;

/// The network part of every Docker endpoint's record id and link names.
const ID_NETWORK: &str = "docker";
/// The interface part: libnetwork names the interface `eth<N>` itself.
pub const DST_PREFIX: &str = "eth";

/// The record id of Docker endpoint `endpoint_id`.
pub fn endpoint_record_id(endpoint_id: &str) -> String {
    attachment_id(ID_NETWORK, endpoint_id, DST_PREFIX)
}

/// The host end of Docker endpoint `endpoint_id`.
pub fn host_ifname(endpoint_id: &str) -> String {
    endpoint::host_ifname(ID_NETWORK, endpoint_id, DST_PREFIX)
}

/// The container end while it is on the host: `stp` and the host end's hash. Not a
/// `strait*` name, so the stale-link sweep never takes it for a host end; it goes
/// with the host end anyway.
pub fn peer_ifname(endpoint_id: &str) -> String {
    let host = host_ifname(endpoint_id);
    format!(
        "stp{}",
        host.trim_start_matches(crate::netlink::LINK_PREFIX)
    )
}

/// Docker IDs are 64 hex digits; anything else in a key or a link name is refused.
fn check_id(what: &str, id: &str) -> Result<(), DockerError> {
    if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(DockerError::new(format!(
            "{what} {id:?} is not a Docker ID"
        )));
    }
    Ok(())
}

pub fn capabilities() -> CapabilitiesResponse {
    CapabilitiesResponse {
        // Allocations are per dockerd (each keeps its own network objects); the
        // connectivity is the cluster's: containers of one network on several hosts
        // reach each other over the fabric.
        scope: "local".into(),
        connectivity_scope: "global".into(),
    }
}

impl DockerPlugin {
    pub async fn create_network(&self, req: CreateNetworkRequest) -> Result<(), DockerError> {
        check_id("network ID", &req.network_id)?;
        let generic = generic_options(&req.options).map_err(DockerError)?;
        let internal = bool_option(&req.options, option::INTERNAL).map_err(DockerError)?
            || bool_option(&generic, option::INTERNAL).map_err(DockerError)?;
        let data: Vec<_> = req.ipv4_data.iter().chain(&req.ipv6_data).collect();
        let ipam = match data.first() {
            Some(d)
                if d.address_space == LOCAL_ADDRESS_SPACE
                    || d.address_space == GLOBAL_ADDRESS_SPACE =>
            {
                IpamKind::Strait
            }
            _ => IpamKind::Docker,
        };
        let mut subnets = Vec::new();
        for d in &data {
            let s: IpNet = d
                .pool
                .parse()
                .map_err(|e| DockerError::new(format!("subnet {:?} is not a CIDR: {e}", d.pool)))?;
            subnets.push(s.trunc());
        }
        if ipam == IpamKind::Docker {
            // Docker's own IPAM picked (or was given) these: strait can serve them
            // only from its pools, and only as one network per subnet.
            for s in &subnets {
                self.networks.check_subnet(*s, self.ipam.pools()).await?;
            }
        }
        if let Some(p) =
            strait_api::docker::string_option(&generic, option::STRAIT_POOL).map_err(DockerError)?
        {
            let p: IpNet = p
                .parse()
                .map_err(|e| DockerError::new(format!("strait.pool {p:?} is not a CIDR: {e}")))?;
            if let Some(s) = subnets
                .iter()
                .find(|s| Family::of_net(s) == Family::of_net(&p))
                && !p.contains(s)
            {
                return Err(DockerError::new(format!(
                    "the network's addresses come from {s}, not from strait.pool {p}: give \
                     strait.pool as an IPAM option (--ipam-driver strait --ipam-opt strait.pool={p})"
                )));
            }
        }
        let net = StoredNetwork {
            id: req.network_id.clone(),
            name: None,
            node: self.node.clone(),
            ipam,
            subnets,
            internal,
            created: now(),
        };
        self.networks.create(&net).await?;
        info!(network = %short(&net.id), subnets = ?net.subnets, ipam = ?ipam, internal, "Docker network created");
        Ok(())
    }

    /// The record of Docker endpoint `endpoint_id`, or the error a request about an
    /// unknown endpoint gets.
    async fn endpoint(&self, endpoint_id: &str) -> Result<strait_api::Endpoint, DockerError> {
        let id = endpoint_record_id(endpoint_id);
        self.attacher.handover_record(&id).await?.ok_or_else(|| {
            DockerError::new(format!(
                "endpoint {} is not known to strait",
                short(endpoint_id)
            ))
        })
    }

    pub async fn delete_network(&self, req: NetworkRequest) -> Result<(), DockerError> {
        check_id("network ID", &req.network_id)?;
        if self.networks.delete(&req.network_id).await? {
            info!(network = %short(&req.network_id), "Docker network deleted");
        }
        Ok(())
    }

    pub async fn create_endpoint(
        &self,
        req: CreateEndpointRequest,
    ) -> Result<CreateEndpointResponse, DockerError> {
        check_id("endpoint ID", &req.endpoint_id)?;
        let net = self.networks.require(&req.network_id).await?;
        let mut ips = Vec::new();
        for a in [&req.interface.address, &req.interface.address_ipv6] {
            if !a.trim().is_empty() {
                ips.push(parse_addr(a)?);
            }
        }
        if ips.is_empty() {
            return Err(DockerError::new(
                "Docker gave the endpoint no address; strait needs one from the network's IPAM",
            ));
        }
        for ip in &ips {
            let fits = net.subnets.iter().any(|s| s.contains(ip));
            if !fits && !net.subnets.is_empty() {
                return Err(DockerError::new(format!(
                    "{ip} is not inside the network's subnets ({})",
                    join(&net.subnets)
                )));
            }
        }
        let reservation = match net.ipam {
            IpamKind::Docker => Reservation::Static,
            IpamKind::Strait => {
                let mut held = None;
                for ip in &ips {
                    match self.ipam.holder_of(*ip).await? {
                        Some(h) if h.starts_with(DOCKER_HANDLE_PREFIX) => {
                            held.get_or_insert(h);
                        }
                        other => {
                            return Err(DockerError::new(format!(
                                "{ip} is not reserved by strait's IPAM for Docker ({}); was \
                                 the network created with --ipam-driver strait?",
                                other.map_or("free".to_string(), |h| format!("held by {h}"))
                            )));
                        }
                    }
                }
                Reservation::Held(held.unwrap_or_default())
            }
        };
        let mac = match req.interface.mac_address.trim() {
            "" => None,
            m => Some(
                m.parse::<strait_api::MacAddr>()
                    .map_err(|e| DockerError::new(format!("MAC address {m:?}: {e}")))?
                    .octets(),
            ),
        };
        let network_name = self.network_name(&net).await;
        let id = endpoint_record_id(&req.endpoint_id);
        let created = self
            .attacher
            .add_handover(HandoverRequest {
                id: id.clone(),
                network: network_name,
                container_id: req.endpoint_id.clone(),
                peer_ifname: peer_ifname(&req.endpoint_id),
                host_ifname: host_ifname(&req.endpoint_id),
                ips: ips.clone(),
                reservation,
                mac,
                pod: None,
                labels: BTreeMap::new(),
            })
            .await?;
        info!(endpoint = %short(&req.endpoint_id), network = %short(&net.id), ?ips, host = %created.host_ifname, "Docker endpoint created");
        Ok(CreateEndpointResponse::default())
    }

    /// The network's Docker name (asked of dockerd once, then kept), else its short ID.
    async fn network_name(&self, net: &StoredNetwork) -> String {
        if let Some(n) = &net.name {
            return n.clone();
        }
        match self.dockerd.network_name(&net.id).await {
            Ok(name) => {
                if let Err(e) = self.networks.set_name(&net.id, &name).await {
                    debug!(error = %e, "keeping the network's name");
                }
                name
            }
            Err(e) => {
                debug!(network = %short(&net.id), error = %e, "network name unknown");
                short(&net.id).to_string()
            }
        }
    }

    pub async fn join(self: &Arc<Self>, req: JoinRequest) -> Result<JoinResponse, DockerError> {
        check_id("endpoint ID", &req.endpoint_id)?;
        let net = self.networks.require(&req.network_id).await?;
        let ep = self.endpoint(&req.endpoint_id).await?;
        let id = ep.id.clone();
        if req.sandbox_key.is_empty() {
            return Err(DockerError::new("Join without a sandbox key"));
        }
        self.attacher
            .set_handover_netns(&id, &req.sandbox_key)
            .await?;
        let has = |f: Family| ep.ips.iter().any(|n| Family::of_net(n) == f);
        // A second strait interface of the container needs a gateway of its own.
        let gw4 = endpoint::free_gateway_v4(std::path::Path::new(&req.sandbox_key)).await;
        let mut resp = JoinResponse {
            interface_name: Some(InterfaceName {
                src_name: peer_ifname(&req.endpoint_id),
                dst_prefix: DST_PREFIX.into(),
            }),
            ..Default::default()
        };
        if has(Family::V4) {
            // The gateway must be on-link before libnetwork adds the default route.
            resp.static_routes.push(StaticRoute {
                destination: format!("{gw4}/32"),
                route_type: ROUTE_CONNECTED,
                next_hop: String::new(),
            });
        }
        if net.internal {
            // Only the network's own subnets (or pools), through the host.
            for s in &net.subnets {
                let via = match Family::of_net(s) {
                    Family::V4 => IpAddr::V4(gw4),
                    Family::V6 => IpAddr::V6(GATEWAY_V6),
                };
                resp.static_routes.push(StaticRoute {
                    destination: s.to_string(),
                    route_type: ROUTE_NEXT_HOP,
                    next_hop: via.to_string(),
                });
            }
            resp.disable_gateway_service = true;
        } else {
            if has(Family::V4) {
                resp.gateway = gw4.to_string();
            }
            if has(Family::V6) {
                resp.gateway_ipv6 = GATEWAY_V6.to_string();
            }
            // Without a v4 gateway dockerd would add docker_gwbridge.
            resp.disable_gateway_service = resp.gateway.is_empty();
        }
        let mut gateways = Vec::new();
        if has(Family::V4) {
            gateways.push(IpAddr::V4(gw4));
        }
        if has(Family::V6) {
            gateways.push(IpAddr::V6(GATEWAY_V6));
        }
        self.learn_names_later(
            ep,
            gateways,
            req.sandbox_key.clone(),
            req.network_id.clone(),
        );
        debug!(endpoint = %short(&req.endpoint_id), sandbox = %req.sandbox_key, "joined");
        Ok(resp)
    }

    /// What follows a Join in the background: once libnetwork has moved the interface
    /// in, the container gets permanent neighbour entries for its gateways (as CNI
    /// containers get at setup) and the record its `ethN` name; once dockerd lists the
    /// container, the record gets its name and the network's.
    fn learn_names_later(
        self: &Arc<Self>,
        ep: strait_api::Endpoint,
        gateways: Vec<IpAddr>,
        sandbox: String,
        network_id: String,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let id = ep.id.clone();
            let macs = ep
                .mac
                .parse::<strait_api::MacAddr>()
                .ok()
                .zip(ep.host_mac.parse::<strait_api::MacAddr>().ok());
            let mut ifname = None;
            let mut container = None;
            // The runtime creates the namespace and moves the interface after Join
            // has answered, within a second normally; a busy host gets half a minute.
            for attempt in 0..160 {
                let pause = if attempt < 40 { 50 } else { 250 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
                if ifname.is_none()
                    && let Some((mac, host_mac)) = macs
                {
                    match endpoint::finish_handover(
                        std::path::Path::new(&sandbox),
                        DST_PREFIX,
                        mac.octets(),
                        host_mac.octets(),
                        &gateways,
                    )
                    .await
                    {
                        Ok(Some(name)) => ifname = Some(name),
                        Ok(None) => {}
                        Err(e) => {
                            debug!(%id, error = %e, "the container's gateway neighbours; trying again")
                        }
                    }
                }
                // The container's name: every fourth round (dockerd lists it late).
                if container.is_none() && (attempt % 4 == 3 || attempt >= 40) {
                    match me.dockerd.container_of_endpoint(&ep.container_id).await {
                        Ok(Some(name)) => container = Some(Some(name)),
                        Ok(None) => {}
                        Err(e) => {
                            debug!(%id, error = %e, "dockerd does not answer; the container's name stays unknown");
                            container = Some(None);
                        }
                    }
                }
                if ifname.is_some() && container.is_some() {
                    break;
                }
            }
            let network = match me.networks.get(&network_id).await {
                Ok(Some(net)) => Some(me.network_name(&net).await),
                _ => None,
            };
            if ifname.is_none() {
                warn!(%id, sandbox, "the container's interface never arrived: no permanent gateway neighbours (proxy ARP still answers while the host has a route)");
            }
            if let Err(e) = me
                .attacher
                .set_handover_names(&id, network, container.flatten(), ifname)
                .await
            {
                debug!(%id, error = %e, "recording the container's names");
            }
        });
    }

    pub async fn leave(&self, req: EndpointRequest) -> Result<(), DockerError> {
        check_id("endpoint ID", &req.endpoint_id)?;
        self.networks.require(&req.network_id).await?;
        Ok(())
    }

    pub async fn delete_endpoint(&self, req: EndpointRequest) -> Result<(), DockerError> {
        check_id("endpoint ID", &req.endpoint_id)?;
        // A network deleted from the store (a reset) must not strand the endpoint:
        // everything needed derives from the endpoint ID.
        if self.networks.get(&req.network_id).await?.is_none() {
            warn!(network = %short(&req.network_id), "DeleteEndpoint on a network strait does not know; removing the endpoint anyway");
        }
        self.stop_ports(&req.endpoint_id).await?;
        let id = endpoint_record_id(&req.endpoint_id);
        self.attacher
            .remove_handover(&id, &host_ifname(&req.endpoint_id))
            .await?;
        info!(endpoint = %short(&req.endpoint_id), "Docker endpoint deleted");
        Ok(())
    }

    pub async fn endpoint_info(
        &self,
        req: EndpointRequest,
    ) -> Result<EndpointInfoResponse, DockerError> {
        check_id("endpoint ID", &req.endpoint_id)?;
        let ep = self.endpoint(&req.endpoint_id).await?;
        let mut value = BTreeMap::new();
        value.insert("strait.node".into(), Value::String(ep.node.clone()));
        value.insert(
            "strait.host_interface".into(),
            Value::String(ep.host_ifname.clone()),
        );
        value.insert(
            "strait.addresses".into(),
            Value::Array(
                ep.ips
                    .iter()
                    .map(|n| Value::String(n.to_string()))
                    .collect(),
            ),
        );
        Ok(EndpointInfoResponse { value })
    }

    pub async fn program_external_connectivity(
        &self,
        req: ExternalConnectivityRequest,
    ) -> Result<(), DockerError> {
        check_id("endpoint ID", &req.endpoint_id)?;
        let bindings = port_bindings(&req.options).map_err(DockerError)?;
        if bindings.is_empty() {
            return Ok(());
        }
        let ep = self.endpoint(&req.endpoint_id).await?;
        let targets: Vec<IpAddr> = ep.ips.iter().map(|n| n.addr()).collect();
        self.publish_ports(&req.endpoint_id, &targets, bindings)
            .await
    }

    pub async fn revoke_external_connectivity(
        &self,
        req: EndpointRequest,
    ) -> Result<(), DockerError> {
        check_id("endpoint ID", &req.endpoint_id)?;
        self.stop_ports(&req.endpoint_id).await
    }
}

fn join(nets: &[IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_endpoint_id_alone() {
        let e = "9b8ae3ab108dc15f5a408237a5b9b87b9aa081d68838103294fcf4a5d0f5963c";
        assert_eq!(host_ifname(e), host_ifname(e));
        assert!(endpoint::is_host_ifname(&host_ifname(e)));
        let peer = peer_ifname(e);
        assert!(peer.starts_with("stp") && peer.len() == 11, "{peer}");
        assert!(!endpoint::is_host_ifname(&peer));
        assert_eq!(endpoint_record_id(e), format!("docker.{e}.eth"));
    }

    #[test]
    fn ids_that_are_not_docker_ids_are_refused() {
        assert!(check_id("endpoint ID", "abc123").is_ok());
        for bad in ["", "../x", "a.b", "a/b", &"a".repeat(129)] {
            assert!(check_id("endpoint ID", bad).is_err(), "{bad}");
        }
    }
}
