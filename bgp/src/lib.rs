//! strait-bgp: the BGP-4 speaker library. Not yet written: see the BGP issue. This crate is empty on purpose so the workspace layout of DESIGN.md exists.
