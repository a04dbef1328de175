//! Service load balancing (docs/services.md).

pub mod datapath;
