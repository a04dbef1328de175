//! [`HostNet`] on the real kernel: rtnetlink in the agent's namespace and, for the
//! container's end, in the container's (entered on a fresh thread by
//! [`crate::netns`]).

use std::net::IpAddr;
use std::path::Path;

use super::{Answer, GatewayChange, HostNet, NetnsState};
use crate::endpoint::{self, CheckError, EndpointError, HostEnd, VethCreated, VethSpec};
use crate::netlink::{
    Address, FdbEntry, FdbWrite, GatewayRoute, Link, Neighbour, Netlink, Route, Vxlan, VxlanSpec,
};
use crate::netns;

impl HostNet for Netlink {
    async fn create_endpoint(&self, spec: &VethSpec) -> Result<VethCreated, EndpointError> {
        endpoint::setup(self, spec).await
    }

    async fn check_endpoint(&self, spec: &VethSpec) -> Result<(), CheckError> {
        endpoint::check(self, spec).await
    }

    async fn delete_link(&self, name: &str) -> Result<(), EndpointError> {
        endpoint::delete_link(self, name).await
    }

    async fn delete_links(&self, names: &[String]) -> Result<(), EndpointError> {
        endpoint::delete_links(self, names).await
    }

    async fn endpoint_links(&self) -> Result<Vec<HostEnd>, EndpointError> {
        endpoint::list_owned_links(self).await
    }

    fn netns_state(&self, path: &Path) -> NetnsState {
        match netns::probe(path) {
            netns::Probe::Network { current: true } => NetnsState::Host,
            netns::Probe::Network { current: false } => NetnsState::Usable,
            netns::Probe::Missing => NetnsState::Missing,
            netns::Probe::Unusable(why) => NetnsState::Unusable(why),
        }
    }

    fn forwarding_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, what) in [
            ("net/ipv4/ip_forward", "IPv4 forwarding is off"),
            ("net/ipv6/conf/all/forwarding", "IPv6 forwarding is off"),
        ] {
            match std::fs::read_to_string(self.proc_sys().join(key)) {
                Ok(v) if v.trim() == "1" => {}
                Ok(_) => problems.push(what.to_string()),
                // No IPv6 in this kernel or namespace: nothing to forward.
                Err(_) => {}
            }
        }
        problems
    }

    async fn link_by_name(&self, name: &str) -> Answer<Option<Link>> {
        Netlink::link_by_name(self, name).await
    }

    async fn link_by_index(&self, index: u32) -> Answer<Option<Link>> {
        Netlink::link_by_index(self, index).await
    }

    async fn links(&self) -> Answer<Vec<Link>> {
        self.links_with_prefix("").await
    }

    async fn delete_link_index(&self, index: u32) -> Answer<()> {
        self.del_link(index).await
    }

    async fn set_mtu(&self, index: u32, mtu: u32) -> Answer<()> {
        Netlink::set_mtu(self, index, mtu).await
    }

    async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Answer<()> {
        Netlink::set_mac(self, index, mac).await
    }

    async fn set_up(&self, index: u32) -> Answer<()> {
        Netlink::set_up(self, index).await
    }

    async fn vxlan_by_name(&self, name: &str) -> Answer<Option<Vxlan>> {
        Netlink::vxlan_by_name(self, name).await
    }

    async fn create_vxlan(&self, spec: &VxlanSpec) -> Answer<()> {
        Netlink::create_vxlan(self, spec).await
    }

    async fn disable_ipv6_addrgen(&self, index: u32) -> Answer<()> {
        Netlink::disable_ipv6_addrgen(self, index).await
    }

    async fn addresses(&self, index: u32) -> Answer<Vec<Address>> {
        Netlink::addresses(self, index).await
    }

    async fn all_addresses(&self) -> Answer<Vec<Address>> {
        Netlink::all_addresses(self).await
    }

    async fn add_address(&self, index: u32, ip: IpAddr, prefix_len: u8) -> Answer<()> {
        Netlink::add_address(self, index, ip, prefix_len).await
    }

    async fn del_address(&self, index: u32, ip: IpAddr, prefix_len: u8) -> Answer<()> {
        Netlink::del_address(self, index, ip, prefix_len).await
    }

    async fn main_routes(&self) -> Answer<Vec<Route>> {
        Netlink::main_routes(self).await
    }

    async fn routes_of(&self, protocol: u8) -> Answer<Vec<Route>> {
        self.routes_with_blackholes(protocol).await
    }

    async fn replace_route(&self, route: &Route) -> Answer<()> {
        Netlink::replace_route(self, route).await
    }

    async fn del_route(&self, route: &Route) -> Answer<()> {
        Netlink::del_route(self, route).await
    }

    async fn fdb(&self, index: u32) -> Answer<Vec<FdbEntry>> {
        Netlink::fdb(self, index).await
    }

    async fn replace_fdb(&self, index: u32, entry: &FdbEntry) -> Answer<()> {
        self.set_fdb(index, entry, FdbWrite::Replace).await
    }

    async fn del_fdb(&self, index: u32, entry: &FdbEntry) -> Answer<()> {
        Netlink::del_fdb(self, index, entry).await
    }

    async fn neighbours(&self, index: u32) -> Answer<Vec<Neighbour>> {
        Netlink::neighbours(self, index).await
    }

    async fn set_permanent_neighbour(&self, index: u32, ip: IpAddr, mac: [u8; 6]) -> Answer<()> {
        Netlink::set_permanent_neighbour(self, index, ip, mac).await
    }

    async fn del_neighbour(&self, index: u32, ip: IpAddr) -> Answer<()> {
        Netlink::del_neighbour(self, index, ip).await
    }

    async fn gateway_routes(&self, protocol: u8) -> Answer<Vec<GatewayRoute>> {
        Netlink::gateway_routes(self, protocol).await
    }

    async fn change_gateway_routes(&self, changes: Vec<GatewayChange>) -> Answer<Vec<Answer<()>>> {
        let batch = changes
            .iter()
            .map(|c| match c {
                GatewayChange::Replace(r) => r.replace_request(),
                GatewayChange::Delete(r) => r.delete_request(),
            })
            .collect();
        self.batch(batch).await
    }
}
