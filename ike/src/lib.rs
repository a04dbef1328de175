//! strait-ike: an IKEv2 speaker (RFC 7296) as a library, sans-IO like `strait-bgp`.
//!
//! What exists:
//! - [`codec`]: the wire codec of RFC 7296 §3, every payload strait reads or writes,
//!   strict length checks, typed decode errors naming the notify to answer with.
//! - [`crypto`]: the transforms (AES-GCM-16, HMAC-SHA2 PRFs, Curve25519 and ECP-256),
//!   the key schedule and the Encrypted payload, all on `ring`.
//! - [`auth`]: IKE_AUTH authentication as traits; RFC 7427 Ed25519 signatures over
//!   raw public keys (RFC 8420, RFC 7670) between strait nodes.

pub mod auth;
pub mod codec;
pub mod crypto;
/// The fuzz targets' bodies (fuzz/, tests/fuzz_smoke.rs); not the library's API.
#[doc(hidden)]
pub mod fuzzing;
pub mod speaker;
