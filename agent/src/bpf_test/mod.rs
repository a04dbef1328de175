//! Test harness for strait's eBPF programs (compiled only for tests): the fast path's
//! today, the policy and service programs' next.
//!
//! - [`btf`]: reads an object's BTF, for tests that tie a Rust mirror of a map layout
//!   or a counter enum to the object (no root needed).
//!
//! It lives in the agent because the agent loads the programs and fills their maps.

pub mod btf;
