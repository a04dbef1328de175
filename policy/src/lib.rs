//! strait-policy: network policy as data, without I/O (like `strait-bgp`'s core).
//!
//! - [`selector`]: Kubernetes label selectors (`matchLabels`, `matchExpressions`).
//! - [`ir`]: the one normalized form both document kinds become: who a policy
//!   applies to, and per direction an ordered list of rules (peers, ports, action).
//! - [`tables`]: what the compiler produces per local endpoint and direction, the
//!   shape of the eBPF policy maps (`ebpf/include/strait/abi.h`): verdicts by
//!   (peer identity or CIDR class, protocol, port range).
//!
//! - [`parse`]: the documents users send (Kubernetes NetworkPolicy, strait's
//!   ClusterPolicy, Namespace) checked and turned into [`ir`]; [`parse_documents`].
//!
//! The agent owns the store, the identities' allocation and the maps; this crate
//! only decides.

mod documents;
#[doc(hidden)]
pub mod fuzzing;
pub mod ir;
pub mod parse;
pub mod selector;
pub mod tables;
pub mod view;

pub use documents::AUDIT_ANNOTATION;
pub use documents::cluster_policy::DEFAULT_ORDER;
pub use parse::{Document, NamespaceDoc, ParseError, Parsed, parse_documents};
