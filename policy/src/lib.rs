//! strait-policy: network policy as data, without I/O (like `strait-bgp`'s core).
//!
//! - [`selector`]: Kubernetes label selectors (`matchLabels`, `matchExpressions`).
//! - [`ir`]: the one normalized form both document kinds become: who a policy
//!   applies to, and per direction an ordered list of rules (peers, ports, action).
//! - [`tables`]: what the compiler produces per local endpoint and direction, the
//!   shape of the eBPF policy maps (`ebpf/include/strait/abi.h`): verdicts by
//!   (peer identity or CIDR class, protocol, port range).
//! - [`compile`]: policies and the cluster view → one endpoint's tables;
//!   [`ports`]: port ranges as the maps' LPM prefixes, and what tables cost.
//! - [`eval`]: the reference evaluator, the semantics read literally (the
//!   compiler's oracle and `netctl policy trace`'s).
//! - [`parse`]: the documents users send (Kubernetes NetworkPolicy, strait's
//!   ClusterPolicy, Namespace) checked and turned into [`ir`]; [`parse_documents`].
//!
//! The agent owns the store, the identities' allocation and the maps; this crate
//! only decides.

pub mod compile;
pub mod doc;
mod documents;
pub mod eval;
#[doc(hidden)]
pub mod fuzzing;
pub mod ir;
pub mod parse;
pub mod ports;
pub mod selector;
pub mod tables;
pub mod view;

pub use documents::AUDIT_ANNOTATION;
pub use documents::cluster_policy::DEFAULT_ORDER;
pub use parse::{Document, NamespaceDoc, ParseError, Parsed, parse_documents};
