//! Handles: the record of which addresses one attachment holds
//! (`ipam/handles/<handle>`), and the request and answer of an allocation.
//!
//! A handle and the block entries naming it are written in one transaction, so after a
//! crash either both exist or neither does. The caller's own record of the attachment
//! can ride in that same transaction ([`AllocRequest::extra`]), so it too exists
//! exactly when the addresses do.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use strait_api::Family;

use super::error::IpamError;
use crate::store::TxnOp;

/// The stored form of `ipam/handles/<handle>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub handle: String,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    /// The node that allocated the addresses (not necessarily the blocks' affinity:
    /// the address may be borrowed).
    pub node: String,
    pub ips: Vec<IpAddr>,
    /// Seconds since the Unix epoch.
    pub created: u64,
}

/// Store writes to commit with an allocation, made from the addresses it chose (in the
/// order of [`Allocation::ips`]).
///
/// Called once per attempt to commit, so possibly more than once (again after a
/// conflict, with other addresses): it must only build operations, not act. What it
/// returns is written in the same transaction as the blocks and the handle, all or
/// nothing. The operations may only touch keys under [`crate::store::PREFIX`] outside
/// IPAM's own keys, and no key twice; otherwise the request fails with
/// [`IpamError::InvalidRequest`] and writes nothing. Results of `Get` operations are
/// not returned.
pub type ExtraOps = Arc<dyn Fn(&[IpAddr]) -> Vec<TxnOp> + Send + Sync>;

/// What [`super::Ipam::allocate`] is asked for. `Default` leaves every field empty, so
/// callers name what they set: `AllocRequest { handle, ..Default::default() }`.
#[derive(Clone, Default)]
pub struct AllocRequest {
    /// The handle id; unique per attachment. Becomes a key segment, so no `/`.
    pub handle: String,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    /// Exact addresses to allocate. A family they leave out still gets an address
    /// from the pools (a static IPv4 address on a dual-stack node comes with a pool
    /// IPv6 address, and the other way round).
    pub static_ips: Vec<IpAddr>,
    /// The families to allocate a pool address of; empty: every family with an
    /// enabled pool. A family `static_ips` covers gets no pool address either way, and
    /// a family listed without an enabled pool fails the request
    /// ([`IpamError::Exhausted`] naming it). Docker's IPAM driver asks per family.
    pub families: Vec<Family>,
    /// When not empty, every pool address allocated lies inside one of these ranges (a
    /// Docker network's `--subnet` or `--ip-range` inside a pool): this node's blocks
    /// overlapping a range first, then claiming a free block overlapping one, then
    /// borrowing there as the rules allow; only the ordinals inside a range, never a
    /// pool's reserved edge addresses. A family to allocate with no range of its own
    /// here, or a range overlapping no enabled pool of its family, fails the request;
    /// so does a full range, with [`IpamError::Exhausted`] naming it. `static_ips` are
    /// not restricted by it.
    pub within: Vec<IpNet>,
    /// The caller's writes to commit atomically with the allocation (its endpoint
    /// record), so that the record exists if and only if the addresses do.
    pub extra: Option<ExtraOps>,
}

impl fmt::Debug for AllocRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllocRequest")
            .field("handle", &self.handle)
            .field("network", &self.network)
            .field("container_id", &self.container_id)
            .field("ifname", &self.ifname)
            .field("netns", &self.netns)
            .field("static_ips", &self.static_ips)
            .field("families", &self.families)
            .field("within", &self.within)
            .field(
                "extra",
                &self.extra.as_ref().map(|_| "Fn(&[IpAddr]) -> Vec<TxnOp>"),
            )
            .finish()
    }
}

/// The addresses given to one handle: the static ones in the request's order, then one
/// from the pools for each family they leave out, IPv4 before IPv6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub handle: String,
    pub ips: Vec<IpAddr>,
}

/// Longest handle id accepted; keys stay readable in `etcdctl get --prefix`.
const MAX_HANDLE_LEN: usize = 512;

/// Checks that `handle` can be a key segment.
pub fn validate_handle(handle: &str) -> Result<(), IpamError> {
    let bad = |why: &str| {
        Err(IpamError::InvalidRequest(format!(
            "handle {handle:?} {why}"
        )))
    };
    if handle.is_empty() {
        return bad("is empty");
    }
    if handle.len() > MAX_HANDLE_LEN {
        return bad("is longer than 512 bytes");
    }
    if handle.contains('/') {
        return bad("contains '/'");
    }
    if handle.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("contains whitespace or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_ids() {
        assert!(validate_handle("k8s-pod-network.abc123.eth0").is_ok());
        assert!(validate_handle("").is_err());
        assert!(validate_handle("a/b").is_err());
        assert!(validate_handle("a b").is_err());
        assert!(validate_handle(&"x".repeat(513)).is_err());
    }

    #[test]
    fn json_shape() {
        let h = Handle {
            handle: "h".into(),
            network: "net".into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            node: "n1".into(),
            ips: vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            created: 42,
        };
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["ips"], serde_json::json!(["10.0.0.1", "fd00::1"]));
        assert_eq!(serde_json::from_value::<Handle>(v).unwrap(), h);
    }
}
