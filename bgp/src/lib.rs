//! strait-bgp: the BGP-4 speaker library. It depends on nothing of the agent.
//!
//! What exists:
//! - [`codec`]: the wire codec — every message of RFC 4271 with capabilities (RFC 5492),
//!   MP-BGP IPv4/IPv6 unicast (RFC 4760), route refresh (RFC 2918), 4-octet AS
//!   (RFC 6793), graceful restart (RFC 4724), route-reflection attributes (RFC 4456);
//!   decode errors name their NOTIFICATION, RFC 7606 error handling for UPDATEs.
//! - [`fsm`]: the RFC 4271 §8 state machine as a pure core (events in, actions out,
//!   timers as deadlines on the caller's clock), hold-time negotiation and connection
//!   collision resolution.
//! - [`session`]: the tokio driver around the FSM for one peer — connect and accept,
//!   framing, collisions, TCP MD5 (RFC 2385); interop-tested against BIRD 2.
//! - [`rib`]: Adj-RIB-In, the Loc-RIB decision process with ECMP, Adj-RIB-Out with
//!   route reflection, max-prefix and graceful-restart helper — pure logic.
//! - [`bfd`]: single-hop BFD (RFC 5880/5881): codec, pure session, tokio driver.
//! - [`speaker`]: all of it wired together behind the declarative API of docs/bgp.md —
//!   one task owning the RIB, sessions per peer, local origination with next hop self,
//!   packed UPDATEs, graceful-restart helper, BFD tearing sessions down (RFC 5882), a
//!   FIB event stream with a one-time "converged", peer and RIB status.
//!
//! - [`policy`]: per-peer prefix lists (import and export) and protected prefixes a
//!   peer may not announce, refused routes counted per peer.
//!
//! Not here: installing routes in the kernel (the agent's FIB sync consumes
//! [`speaker::FibEvent`]s), a policy language (only prefix lists and the [`rib::Policy`] hooks), BGP
//! confederations, add-path, multihop BFD.

pub mod bfd;
pub mod codec;
pub mod fsm;
/// The fuzz targets' bodies (fuzz/, tests/fuzz_smoke.rs); not the library's API.
#[doc(hidden)]
pub mod fuzzing;
pub mod policy;
pub mod rib;
pub mod session;
pub mod speaker;
