//! Site gateways: connecting a site to external IPsec peers (another vendor's
//! gateway at the far end of the site's line).
//!
//! - [`election`]: which gateway node of a site carries which peer; all nodes agree
//!   from the cluster view alone.
//! - [`plan`]: each node's part for each peer (carry it, route through the gateway,
//!   or refuse its networks while the site has no gateway), its traffic selectors and
//!   routes.
//! - [`runtime`]: the IKE speakers of the peers this node carries.
//! - [`bgp`]: BGP with the routers behind carried peers, through their tunnels.
//! - [`learned`]: what those sessions learned, in the store for every node of the site.

pub mod bgp;
pub mod election;
pub mod learned;
pub mod plan;
pub mod runtime;

#[cfg(test)]
pub(crate) mod tests {
    use strait_api::FabricMode;
    use strait_api::ipsec::NodeIpsec;
    use strait_api::types::NodeRecord;

    /// A node record of `site` with underlay 10.0.0.`n`.
    pub fn record(name: &str, site: &str, gateway: bool, n: u8) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            underlay_v4: Some(std::net::Ipv4Addr::new(10, 0, 0, n)),
            underlay_v6: None,
            fabric: FabricMode::HostGw,
            vtep_mac: None,
            vxlan_vni: None,
            vxlan_port: None,
            tunnel_v4: None,
            tunnel_v6: None,
            agent_version: "test".into(),
            started: 0,
            bgp: None,
            site: site.into(),
            ipsec: Some(NodeIpsec {
                ed25519: "00".repeat(32),
                gateway,
            }),
        }
    }
}
