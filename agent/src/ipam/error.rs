//! The one error type of IPAM. Nothing here maps to CNI codes or HTTP status: the
//! agent's API layer does that at the process boundary.

use std::net::IpAddr;

use crate::store::StoreError;

use super::config::Family;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// The IPAM configuration is unusable; the message says which field and why.
    #[error("invalid IPAM config: {0}")]
    InvalidConfig(String),

    /// A request the allocator cannot act on (empty or malformed handle, a static
    /// address listed twice).
    #[error("invalid IPAM request: {0}")]
    InvalidRequest(String),

    /// No address of `family` can be given to `node`.
    #[error("no free {family} address for node {node}: {reason}")]
    Exhausted {
        family: Family,
        node: String,
        reason: String,
    },

    /// A statically requested address is taken, reserved, outside every pool, or in a
    /// block this node may not use.
    #[error("static address {ip} unavailable: {reason}")]
    StaticUnavailable { ip: IpAddr, reason: String },

    /// A handle with this id already holds addresses.
    #[error("IPAM handle {0:?} already exists")]
    DuplicateHandle(String),

    #[error(transparent)]
    Store(#[from] StoreError),

    /// A record in the store does not parse or contradicts its key.
    #[error("corrupt IPAM record {key}: {reason}")]
    Corrupt { key: String, reason: String },

    /// Every attempt of `op` lost a compare-and-swap race.
    #[error("{op}: gave up after {attempts} conflicting store updates")]
    Conflict { op: String, attempts: u32 },
}
