//! strait-services: services as data, without I/O (as `strait-policy` is for policy).
//!
//! - [`model`]: a service as strait keeps it in the store: virtual IPs, ports, how its
//!   backends are chosen (a label selector over endpoints, EndpointSlices, or both),
//!   affinity, traffic policies, an optional active health check.
//! - [`documents`]: what users send (`netctl service apply -f`): Kubernetes `v1`
//!   Service and `discovery.k8s.io/v1` EndpointSlice, checked strictly and turned
//!   into [`model`]; one error naming document and field, or everything.
//! - [`frontends`]: the addresses a service answers on (cluster IPs, external IPs,
//!   node ports) and, per frontend, its backends from the cluster's endpoints and
//!   slices ([`frontends::resolve`]).
//! - [`maglev`]: Maglev consistent hashing, the lookup table every node computes
//!   alike from the same backends.
//!
//! The agent owns the store, VIP and node-port allocation, health checks and the eBPF
//! maps; this crate only decides.

pub mod documents;
pub mod frontends;
#[doc(hidden)]
pub mod fuzzing;
pub mod maglev;
pub mod model;

pub use documents::{Document, ParseError, parse_documents};
