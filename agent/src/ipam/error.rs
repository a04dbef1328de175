//! The one error type of IPAM. Nothing here maps to CNI codes or HTTP status: the
//! agent's API layer does that at the process boundary.

use std::net::IpAddr;

use strait_api::Family;

use crate::store::StoreError;

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

    /// A statically requested address no container can hold (loopback, link-local
    /// such as the containers' gateway, multicast, unspecified): the request's
    /// network configuration is wrong, whatever the pools.
    #[error("static address {ip} cannot be a container's: it is in {reason}")]
    UnusableStatic { ip: IpAddr, reason: String },

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

    /// The batch that carried this request ended without answering it (its task
    /// panicked, or the runtime is shutting down). Whether it took effect is unknown:
    /// an allocation may exist, so the caller releases the handle, as after any failed
    /// ADD.
    #[error("IPAM request interrupted: {0}")]
    Interrupted(String),
}

impl IpamError {
    /// The same error again, for each request of a batch that one failure ended (a
    /// store error is not `Clone`).
    pub(super) fn replicate(&self) -> IpamError {
        match self {
            IpamError::InvalidConfig(m) => IpamError::InvalidConfig(m.clone()),
            IpamError::InvalidRequest(m) => IpamError::InvalidRequest(m.clone()),
            IpamError::Exhausted {
                family,
                node,
                reason,
            } => IpamError::Exhausted {
                family: *family,
                node: node.clone(),
                reason: reason.clone(),
            },
            IpamError::StaticUnavailable { ip, reason } => IpamError::StaticUnavailable {
                ip: *ip,
                reason: reason.clone(),
            },
            IpamError::UnusableStatic { ip, reason } => IpamError::UnusableStatic {
                ip: *ip,
                reason: reason.clone(),
            },
            IpamError::DuplicateHandle(h) => IpamError::DuplicateHandle(h.clone()),
            IpamError::Store(e) => IpamError::Store(replicate_store(e)),
            IpamError::Corrupt { key, reason } => IpamError::Corrupt {
                key: key.clone(),
                reason: reason.clone(),
            },
            IpamError::Conflict { op, attempts } => IpamError::Conflict {
                op: op.clone(),
                attempts: *attempts,
            },
            IpamError::Interrupted(m) => IpamError::Interrupted(m.clone()),
        }
    }
}

/// A batch's answers, one per request in order: each request's outcome; the store
/// error that ended the batch (`ended`) for every request still open; and for one
/// left open without such an error, [`IpamError::Interrupted`].
pub(super) fn batch_answers<T>(
    outcomes: impl IntoIterator<Item = Option<Result<T, IpamError>>>,
    ended: Option<IpamError>,
) -> Vec<Result<T, IpamError>> {
    outcomes
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or_else(|| {
                Err(match &ended {
                    Some(e) => e.replicate(),
                    None => IpamError::Interrupted("its batch ended without deciding it".into()),
                })
            })
        })
        .collect()
}

fn replicate_store(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Compacted {
            requested,
            compact_revision,
        } => StoreError::Compacted {
            requested: *requested,
            compact_revision: *compact_revision,
        },
        StoreError::FutureRevision(r) => StoreError::FutureRevision(*r),
        StoreError::LeaseNotFound(l) => StoreError::LeaseNotFound(*l),
        StoreError::InvalidKey(k) => StoreError::InvalidKey(k.clone()),
        StoreError::Backend(m) => StoreError::Backend(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_answers_fill_open_requests_with_the_error_that_ended_the_batch() {
        let outcomes = || {
            vec![
                Some(Ok(1)),
                None,
                Some(Err(IpamError::InvalidRequest("x".into()))),
            ]
        };
        let ended = IpamError::Store(StoreError::Unavailable("etcd down".into()));
        let got = batch_answers(outcomes(), Some(ended));
        assert!(matches!(got[0], Ok(1)));
        assert!(
            matches!(&got[1], Err(IpamError::Store(StoreError::Unavailable(m))) if m == "etcd down")
        );
        assert!(
            matches!(&got[2], Err(IpamError::InvalidRequest(_))),
            "decided ones keep theirs"
        );
        let got = batch_answers(outcomes(), None);
        assert!(matches!(&got[1], Err(IpamError::Interrupted(_))));
    }
}
