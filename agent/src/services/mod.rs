//! Services: virtual IPs for groups of endpoints, balanced in strait's own eBPF
//! (docs/services.md).
//!
//! - [`pool`]: where cluster IPs and node ports come from;
//! - [`store`]: the service and EndpointSlice objects, and the claims that keep each
//!   cluster IP and node port to one service.

pub mod pool;
pub mod store;
