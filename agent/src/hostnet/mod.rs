//! The host's network configuration as the attach lifecycle sees it: a semantic
//! trait, [`HostNet`], over the operations the agent performs on the kernel for its
//! endpoints — build a container's veth with its addresses, routes and neighbours,
//! check it, delete host links, list the links strait owns, look at a network
//! namespace file, read the forwarding sysctls.
//!
//! Two implementations: the real kernel ([`crate::netlink::Netlink`], through
//! [`crate::endpoint`] and [`crate::netns`]) and, for unit tests, an in-memory fake
//! kernel ([`fake::FakeHost`]) that keeps links and namespaces in maps and can be told
//! to fail or to hold an operation half-way. The trait names what the agent does, not
//! netlink messages, so the rules built on it ([`crate::attach`]) are tested without
//! root; the real implementation keeps its own privileged tests
//! (`agent/tests/endpoint_privileged.rs`).
//!
//! The fabric's reconcile loops stay on [`crate::netlink::Netlink`]: their logic is
//! already pure (`fabric::desired`, `fabric::reconcile::plan`) and tested without a
//! kernel; only the apply step talks to it.

#[cfg(test)]
pub mod fake;
mod kernel;

use std::future::Future;
use std::path::Path;

use crate::endpoint::{CheckError, EndpointError, VethCreated, VethSpec};

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

    /// The host ends of endpoints present on the host, as `(name, ifindex)`.
    fn endpoint_links(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, u32)>, EndpointError>> + Send;

    /// What `path` is, as a container's network namespace.
    fn netns_state(&self, path: &Path) -> NetnsState;

    /// What keeps containers from talking although ADD works (forwarding sysctls off).
    fn forwarding_problems(&self) -> Vec<String>;
}
