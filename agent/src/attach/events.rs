//! Endpoint events: how other owners follow endpoints without the attach lifecycle
//! knowing them. The fast path subscribes today (it attaches its programs to a new
//! veth and forgets a deleted one); policy will.
//!
//! Subscribers are called synchronously, in the order the attacher does things, from
//! inside the operation: a subscriber must only record the event (queue work, update
//! a map) and never block or call back into the attacher.

use strait_api::Endpoint;

/// Something that happened to one endpoint of this node.
#[derive(Debug, Clone, Copy)]
pub enum EndpointEvent<'a> {
    /// ADD built the endpoint's interface; `host_ifindex` is its host end.
    Attached {
        endpoint: &'a Endpoint,
        host_ifindex: u32,
    },
    /// The endpoint's host veth is about to be deleted (DEL, CNI GC, an operator's
    /// release).
    Detached { host_ifname: &'a str },
}

/// A follower of [`EndpointEvent`]s; see the module doc for the rules.
pub trait EndpointSubscriber: Send + Sync {
    fn endpoint_event(&self, event: &EndpointEvent<'_>);
}
