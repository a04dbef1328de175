//! The host's network configuration as the agent's owners use it: one trait,
//! [`HostNet`], over the operations the agent performs on the kernel — not netlink
//! messages but what they are for:
//!
//! * endpoints ([`crate::attach`]): build a container's veth with its addresses,
//!   routes and neighbours in both namespaces, check it, delete host links, list the
//!   links strait owns, look at a network namespace file, read the forwarding sysctls;
//! * the fabric ([`crate::fabric`]): links (the VXLAN device and the underlay),
//!   addresses, strait's routes, the FDB and neighbour entries of the VXLAN device;
//!   the BGP fabric's FIB sync: multipath gateway routes, changed many at once.
//!
//! Not here: attaching the fast path's tc programs, which is aya's (it owns the
//! programs' file descriptors; a fake could load no program anyway).
//!
//! Two implementations: the real kernel ([`crate::netlink::Netlink`], through
//! [`crate::endpoint`] and [`crate::netns`]) and, for unit tests, an in-memory fake
//! kernel ([`fake::FakeHost`]) that keeps links, namespaces and tables in maps and can
//! be told to fail or to hold an operation half-way. The rules built on the trait (the
//! attach lifecycle, the fabric's reconciliation) are tested without root; the real
//! implementation keeps its own privileged tests (`agent/tests/endpoint_privileged.rs`,
//! `agent/tests/fabric_privileged.rs`).
//!
//! Every removal is idempotent in the callers' helpers (`netlink::ignore_not_found`);
//! the fake answers as the kernel does (ENOENT, EEXIST) so those helpers are exercised.

#[cfg(test)]
pub mod fake;
mod kernel;

use std::future::Future;
use std::net::IpAddr;
use std::path::Path;

use crate::endpoint::{CheckError, EndpointError, HostEnd, VethCreated, VethSpec};
use crate::netlink::{
    Address, FdbEntry, GatewayRoute, Link, Neighbour, NetlinkError, Route, Vxlan, VxlanSpec,
};

/// A kernel answer: the value or the operation's error.
pub type Answer<T> = Result<T, NetlinkError>;

/// What a path given as a container's network namespace turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsState {
    /// A network namespace other than the agent's own.
    Usable,
    /// Nothing at that path.
    Missing,
    /// The agent's own namespace: an endpoint there would put the container's end on
    /// the host.
    Host,
    /// Something that cannot be used, and why.
    Unusable(String),
}

/// The kernel operations of the attach lifecycle. Every method is idempotent where
/// the operation is meant to be (deleting what is gone succeeds).
pub trait HostNet: Clone + Send + Sync + 'static {
    /// Builds the container's interface described by `spec` (see [`crate::endpoint`]):
    /// all of it, or nothing. A host link of the same name fails with
    /// [`EndpointError::HostLinkExists`] and changes nothing.
    fn create_endpoint(
        &self,
        spec: &VethSpec,
    ) -> impl Future<Output = Result<VethCreated, EndpointError>> + Send;

    /// The endpoint is as [`HostNet::create_endpoint`] left it; every difference
    /// found is reported.
    fn check_endpoint(
        &self,
        spec: &VethSpec,
    ) -> impl Future<Output = Result<(), CheckError>> + Send;

    /// Deletes one host link (its peer, routes and neighbours go with it).
    fn delete_link(&self, name: &str) -> impl Future<Output = Result<(), EndpointError>> + Send;

    /// Deletes several host links, in one kernel batch where it can.
    fn delete_links(
        &self,
        names: &[String],
    ) -> impl Future<Output = Result<(), EndpointError>> + Send;

    /// The host ends of endpoints present on the host, with their owner marks.
    fn endpoint_links(&self) -> impl Future<Output = Result<Vec<HostEnd>, EndpointError>> + Send;

    /// What `path` is, as a container's network namespace.
    fn netns_state(&self, path: &Path) -> NetnsState;

    /// What keeps containers from talking although ADD works (forwarding sysctls off).
    fn forwarding_problems(&self) -> Vec<String>;

    // ----- links -----

    fn link_by_name(&self, name: &str) -> impl Future<Output = Answer<Option<Link>>> + Send;
    fn link_by_index(&self, index: u32) -> impl Future<Output = Answer<Option<Link>>> + Send;
    /// Every link of the host.
    fn links(&self) -> impl Future<Output = Answer<Vec<Link>>> + Send;
    fn delete_link_index(&self, index: u32) -> impl Future<Output = Answer<()>> + Send;
    fn set_mtu(&self, index: u32, mtu: u32) -> impl Future<Output = Answer<()>> + Send;
    fn set_mac(&self, index: u32, mac: [u8; 6]) -> impl Future<Output = Answer<()>> + Send;
    fn set_up(&self, index: u32) -> impl Future<Output = Answer<()>> + Send;
    /// The VXLAN device `name` with its tunnel parameters, if there is one.
    fn vxlan_by_name(&self, name: &str) -> impl Future<Output = Answer<Option<Vxlan>>> + Send;
    /// Creates a VXLAN device, down, without address learning; EEXIST if the name is
    /// taken.
    fn create_vxlan(&self, spec: &VxlanSpec) -> impl Future<Output = Answer<()>> + Send;
    /// No IPv6 link-local address will ever be generated on the link.
    fn disable_ipv6_addrgen(&self, index: u32) -> impl Future<Output = Answer<()>> + Send;

    // ----- addresses -----

    fn addresses(&self, index: u32) -> impl Future<Output = Answer<Vec<Address>>> + Send;
    fn all_addresses(&self) -> impl Future<Output = Answer<Vec<Address>>> + Send;
    fn add_address(
        &self,
        index: u32,
        ip: IpAddr,
        prefix_len: u8,
    ) -> impl Future<Output = Answer<()>> + Send;
    fn del_address(
        &self,
        index: u32,
        ip: IpAddr,
        prefix_len: u8,
    ) -> impl Future<Output = Answer<()>> + Send;

    // ----- routes (main table) -----

    /// Every route of `protocol`, blackholes included.
    fn routes_of(&self, protocol: u8) -> impl Future<Output = Answer<Vec<Route>>> + Send;
    /// Every unicast and blackhole route, of any protocol.
    fn main_routes(&self) -> impl Future<Output = Answer<Vec<Route>>> + Send;
    /// Adds `route`, or replaces the one with the same destination and metric.
    fn replace_route(&self, route: &Route) -> impl Future<Output = Answer<()>> + Send;
    fn del_route(&self, route: &Route) -> impl Future<Output = Answer<()>> + Send;

    // ----- FDB and neighbours of a device -----

    fn fdb(&self, index: u32) -> impl Future<Output = Answer<Vec<FdbEntry>>> + Send;
    /// The MAC's (only) remote becomes `entry.dst` (`bridge fdb replace`).
    fn replace_fdb(&self, index: u32, entry: &FdbEntry) -> impl Future<Output = Answer<()>> + Send;
    fn del_fdb(&self, index: u32, entry: &FdbEntry) -> impl Future<Output = Answer<()>> + Send;
    fn neighbours(&self, index: u32) -> impl Future<Output = Answer<Vec<Neighbour>>> + Send;
    fn set_permanent_neighbour(
        &self,
        index: u32,
        ip: IpAddr,
        mac: [u8; 6],
    ) -> impl Future<Output = Answer<()>> + Send;
    fn del_neighbour(&self, index: u32, ip: IpAddr) -> impl Future<Output = Answer<()>> + Send;

    // ----- gateway routes (the BGP fabric's FIB) -----

    /// Every gateway route (one or several next hops) of `protocol`.
    fn gateway_routes(
        &self,
        protocol: u8,
    ) -> impl Future<Output = Answer<Vec<GatewayRoute>>> + Send;
    /// Applies every change, many per system call where the kernel allows; returns each
    /// one's outcome in order. `Err` only when nothing could be sent at all.
    fn change_gateway_routes(
        &self,
        changes: Vec<GatewayChange>,
    ) -> impl Future<Output = Answer<Vec<Answer<()>>>> + Send;
}

/// One change of a gateway route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayChange {
    /// Add the route, or replace the one with its destination.
    Replace(GatewayRoute),
    /// Delete the route (named with its gateways, as installed).
    Delete(GatewayRoute),
}
