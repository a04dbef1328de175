//! The one place that decides how a failure is told to a client: the CNI error code
//! (which the plugin passes to the runtime as is) and the HTTP status that goes with
//! it. Handlers return [`Failure`]; every owner's error converts into it here.
//!
//! Store unavailable is "try again later" (11) on every path: a runtime retries ADD
//! on 11, and netctl shows the message, which names the store.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use strait_api::{ApiError, code};

use crate::attach::AttachError;
use crate::attach::records::RecordError;
use crate::fabric::bgp::external::ExternalPeerError;
use crate::ipam::IpamError;
use crate::ipsec::IpsecPeerError;
use crate::policy::store::PolicyStoreError;
use crate::policy::{ApplyError, PolicyError};
use crate::services::store::ServiceStoreError;
use crate::store::StoreError;

/// A failed request, as the client will see it.
#[derive(Debug)]
pub struct Failure(pub ApiError);

impl Failure {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self(ApiError::new(code, msg))
    }

    /// The HTTP status of this failure.
    pub fn status(&self) -> StatusCode {
        status_of(self.0.code)
    }
}

fn status_of(c: u32) -> StatusCode {
    match c {
        code::TRY_AGAIN_LATER | code::STORE_UNAVAILABLE | code::NOT_AVAILABLE => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        code::DECODE_FAILURE | code::INVALID_CONFIG | code::INVALID_ENV | code::BAD_NETNS => {
            StatusCode::BAD_REQUEST
        }
        code::UNKNOWN_CONTAINER | code::NOT_CONFIGURED => StatusCode::NOT_FOUND,
        code::DUPLICATE_ATTACHMENT
        | code::STATIC_IP_UNAVAILABLE
        | code::CHECK_FAILED
        | code::HOST_PORT_TAKEN
        | code::OWNED_BY_KUBERNETES => StatusCode::CONFLICT,
        code::POOL_EXHAUSTED => StatusCode::INSUFFICIENT_STORAGE,
        // Asked of the wrong agent: the message names the right node.
        code::OTHER_NODE => StatusCode::MISDIRECTED_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(self.0)).into_response()
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

fn store_code(e: &StoreError) -> u32 {
    match e {
        StoreError::Unavailable(_) => code::TRY_AGAIN_LATER,
        _ => code::INTERNAL,
    }
}

fn ipam_code(e: &IpamError) -> u32 {
    match e {
        IpamError::Exhausted { .. } => code::POOL_EXHAUSTED,
        IpamError::StaticUnavailable { .. } => code::STATIC_IP_UNAVAILABLE,
        IpamError::UnusableStatic { .. } => code::INVALID_CONFIG,
        IpamError::DuplicateHandle(_) => code::DUPLICATE_ATTACHMENT,
        IpamError::Store(e) => store_code(e),
        _ => code::INTERNAL,
    }
}

fn attach_code(e: &AttachError) -> u32 {
    match e {
        AttachError::Starting => code::TRY_AGAIN_LATER,
        AttachError::Duplicate(_) => code::DUPLICATE_ATTACHMENT,
        AttachError::BadNetns { .. } => code::BAD_NETNS,
        AttachError::Unknown(_) => code::UNKNOWN_CONTAINER,
        AttachError::Invalid(_) => code::INVALID_ENV,
        AttachError::InvalidConfig(_) | AttachError::InvalidLabels(_) => code::INVALID_CONFIG,
        AttachError::OtherNode { .. } => code::OTHER_NODE,
        AttachError::HostPortTaken(_) => code::HOST_PORT_TAKEN,
        AttachError::Check { .. } => code::CHECK_FAILED,
        AttachError::Ipam(e) => ipam_code(e),
        AttachError::Store(e) | AttachError::Record(RecordError::Store(e)) => store_code(e),
        AttachError::Record(RecordError::Contended { .. }) => code::TRY_AGAIN_LATER,
        AttachError::Endpoint(_) | AttachError::Record(_) | AttachError::Policy(_) => {
            code::INTERNAL
        }
    }
}

impl From<AttachError> for Failure {
    fn from(e: AttachError) -> Self {
        Self::new(attach_code(&e), e.to_string())
    }
}

impl From<IpamError> for Failure {
    fn from(e: IpamError) -> Self {
        Self::new(ipam_code(&e), e.to_string())
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::new(store_code(&e), e.to_string())
    }
}

impl From<ExternalPeerError> for Failure {
    fn from(e: ExternalPeerError) -> Self {
        let c = match &e {
            ExternalPeerError::Invalid(_) => code::INVALID_CONFIG,
            ExternalPeerError::NotFound(_) => code::NOT_CONFIGURED,
            ExternalPeerError::Store(e) => store_code(e),
        };
        Self::new(c, e.to_string())
    }
}

impl From<IpsecPeerError> for Failure {
    fn from(e: IpsecPeerError) -> Self {
        let c = match &e {
            IpsecPeerError::Invalid(_) => code::INVALID_CONFIG,
            IpsecPeerError::NotFound(_) => code::NOT_CONFIGURED,
            IpsecPeerError::Unusable { .. } => code::INTERNAL,
            IpsecPeerError::Store(e) => store_code(e),
        };
        Self::new(c, e.to_string())
    }
}

/// A refused service apply (a document, an address outside the pool or another
/// service's) is the caller's to fix; nothing of it was written.
impl From<ServiceStoreError> for Failure {
    fn from(e: ServiceStoreError) -> Self {
        let c = match &e {
            ServiceStoreError::BadKey(_)
            | ServiceStoreError::Duplicate(_)
            | ServiceStoreError::Refused(_) => code::INVALID_CONFIG,
            ServiceStoreError::Store(e) => store_code(e),
            ServiceStoreError::Contended => code::TRY_AGAIN_LATER,
            ServiceStoreError::Corrupt { .. } => code::INTERNAL,
            ServiceStoreError::OwnedByKubernetes(_) => code::OWNED_BY_KUBERNETES,
        };
        Self::new(c, e.to_string())
    }
}

fn policy_store_code(e: &PolicyStoreError) -> u32 {
    match e {
        PolicyStoreError::BadKey(_) | PolicyStoreError::Duplicate(_) => code::INVALID_CONFIG,
        PolicyStoreError::Store(e) => store_code(e),
        PolicyStoreError::Corrupt { .. } => code::INTERNAL,
        PolicyStoreError::OwnedByKubernetes(_) => code::OWNED_BY_KUBERNETES,
    }
}

/// A refused apply is the caller's to fix (400, the message names the document and
/// field); nothing of it was written.
impl From<ApplyError> for Failure {
    fn from(e: ApplyError) -> Self {
        let c = match &e {
            ApplyError::Invalid(_) => code::INVALID_CONFIG,
            ApplyError::Store(e) => policy_store_code(e),
        };
        Self::new(c, e.to_string())
    }
}

impl From<PolicyError> for Failure {
    fn from(e: PolicyError) -> Self {
        let c = match &e {
            PolicyError::Store(e) => policy_store_code(e),
            PolicyError::NoEndpoint(_) => code::UNKNOWN_CONTAINER,
            PolicyError::Trace(_) => code::INVALID_CONFIG,
            PolicyError::Identity(crate::policy::identity::IdentityError::Store(e)) => {
                store_code(e)
            }
            PolicyError::Identity(crate::policy::identity::IdentityError::Contention(_)) => {
                code::TRY_AGAIN_LATER
            }
            PolicyError::Identity(_) | PolicyError::Dataplane(_) | PolicyError::Reconcile(_) => {
                code::INTERNAL
            }
        };
        Self::new(c, e.to_string())
    }
}

/// A request body. dockerd-style clients send no body at all for argument-less calls.
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body)
        .map_err(|e| Failure::new(code::DECODE_FAILURE, format!("malformed request body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_maps_store_unavailable_alike() {
        let down = || StoreError::Unavailable("etcd: connection refused".into());
        let from_attach = Failure::from(AttachError::Store(down()));
        let from_ipam = Failure::from(AttachError::Ipam(IpamError::Store(down())));
        let from_record = Failure::from(AttachError::Record(RecordError::Store(down())));
        let from_peers = Failure::from(ExternalPeerError::Store(down()));
        let from_store = Failure::from(down());
        for f in [from_attach, from_ipam, from_record, from_peers, from_store] {
            assert_eq!(f.0.code, code::TRY_AGAIN_LATER, "{f:?}");
            assert_eq!(f.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(f.0.message.contains("connection refused"), "{f:?}");
        }
    }

    #[test]
    fn attach_failures_get_their_cni_codes() {
        let cases = [
            (
                AttachError::Starting,
                code::TRY_AGAIN_LATER,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                AttachError::Duplicate("n/c/eth0".into()),
                code::DUPLICATE_ATTACHMENT,
                StatusCode::CONFLICT,
            ),
            (
                AttachError::BadNetns {
                    path: "/x".into(),
                    reason: "does not exist".into(),
                },
                code::BAD_NETNS,
                StatusCode::BAD_REQUEST,
            ),
            (
                AttachError::Invalid("ifname".into()),
                code::INVALID_ENV,
                StatusCode::BAD_REQUEST,
            ),
            (
                AttachError::InvalidConfig("mtu".into()),
                code::INVALID_CONFIG,
                StatusCode::BAD_REQUEST,
            ),
            (
                AttachError::InvalidLabels("label key \"a b\"".into()),
                code::INVALID_CONFIG,
                StatusCode::BAD_REQUEST,
            ),
            (
                AttachError::OtherNode {
                    id: "net.c1.eth0".into(),
                    node: "n2".into(),
                },
                code::OTHER_NODE,
                StatusCode::MISDIRECTED_REQUEST,
            ),
            (
                AttachError::HostPortTaken("host port 8080/tcp is held by endpoint x".into()),
                code::HOST_PORT_TAKEN,
                StatusCode::CONFLICT,
            ),
            (
                AttachError::Record(RecordError::Contended {
                    key: "k".into(),
                    attempts: 16,
                }),
                code::TRY_AGAIN_LATER,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                AttachError::Check {
                    id: "i".into(),
                    reason: "r".into(),
                },
                code::CHECK_FAILED,
                StatusCode::CONFLICT,
            ),
            (
                AttachError::Ipam(IpamError::Exhausted {
                    family: crate::ipam::Family::V4,
                    node: "n1".into(),
                    reason: "full".into(),
                }),
                code::POOL_EXHAUSTED,
                StatusCode::INSUFFICIENT_STORAGE,
            ),
            (
                AttachError::Ipam(IpamError::StaticUnavailable {
                    ip: "10.0.0.1".parse().expect("ip"),
                    reason: "taken".into(),
                }),
                code::STATIC_IP_UNAVAILABLE,
                StatusCode::CONFLICT,
            ),
            (
                AttachError::Ipam(IpamError::UnusableStatic {
                    ip: "169.254.1.1".parse().expect("ip"),
                    reason: "link-local space".into(),
                }),
                code::INVALID_CONFIG,
                StatusCode::BAD_REQUEST,
            ),
            (
                AttachError::Ipam(IpamError::InvalidRequest("x".into())),
                code::INTERNAL,
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (e, c, status) in cases {
            let shown = e.to_string();
            let f = Failure::from(e);
            assert_eq!((f.0.code, f.status()), (c, status), "{shown}");
            assert_eq!(f.0.message, shown);
        }
    }

    #[test]
    fn peer_failures_and_bad_bodies() {
        let f = Failure::from(ExternalPeerError::Invalid("asn 0 is reserved".into()));
        assert_eq!(
            (f.0.code, f.status()),
            (code::INVALID_CONFIG, StatusCode::BAD_REQUEST)
        );
        let f = Failure::from(ExternalPeerError::NotFound("tor".into()));
        assert_eq!(
            (f.0.code, f.status()),
            (code::NOT_CONFIGURED, StatusCode::NOT_FOUND)
        );
        let f = decode::<strait_api::DelRequest>(b"{\"network\":").expect_err("malformed");
        assert_eq!(
            (f.0.code, f.status()),
            (code::DECODE_FAILURE, StatusCode::BAD_REQUEST)
        );
        assert!(f.0.message.starts_with("malformed request body"), "{f:?}");
    }
}
