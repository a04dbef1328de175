//! The BGP fabric (`--fabric bgp`, docs/bgp.md): this node's speaker, who it peers
//! with, what it originates, and FIB sync of what it learns.

pub mod fib;
pub mod peering;
