//! The `strait` CNI plugin (CNI spec 1.1.0; speaks 0.3.0 to 1.1.0): a thin client of
//! `straitd`.
//!
//! The runtime execs the binary once per operation. It validates the environment and
//! the network configuration, sends one request to the agent over its unix socket
//! (strait-api's blocking client: no async runtime, no netlink, no IPAM here) and
//! prints the versioned result or the spec's error JSON on stdout.
//!
//! - [`verb`]: the CNI operations;
//! - [`env`]: CNI_* variables, per-verb requirements, `CNI_ARGS`;
//! - [`config`]: the network configuration, runtimeConfig, `args`, GC attachments;
//! - [`requested`]: the syntax of a requested static address or MAC, wherever the
//!   runtime puts it (MACs are [`strait_api::MacAddr`]);
//! - [`version`]: supported versions and the VERSION answer;
//! - [`result`]: ADD results per version, `prevResult` chaining;
//! - [`error`]: failures and their CNI codes, in one place;
//! - DELs queued on disk while the agent is down use [`strait_api::queue`], in the
//!   queue [`queue`] finds;
//! - [`verbs`]: the operations themselves.

pub mod config;
pub mod env;
pub mod error;
/// The fuzz targets' bodies (fuzz/, tests/fuzz_smoke.rs); not the plugin's API.
#[doc(hidden)]
pub mod fuzzing;
pub mod queue;
pub mod requested;
pub mod result;
pub mod verb;
pub mod verbs;
pub mod version;

pub use env::RawEnv;
pub use error::CniError;
pub use verbs::{Outcome, run};
