//! The document kinds [`crate::parse`] reads, one module each, and what they share:
//! a strict walk over the decoded value that keeps every field's path ([`walk`]),
//! Kubernetes' syntax checks ([`validate`]), `metadata`, and selectors, peers and
//! ports ([`peers`]).

pub(crate) mod cluster_policy;
pub(crate) mod metadata;
pub(crate) mod namespace;
pub(crate) mod network_policy;
pub(crate) mod peers;
pub(crate) mod validate;
pub(crate) mod walk;

use metadata::Metadata;
use walk::{Invalid, Result};

/// A refusal, with the object it is about when its kind and name were read.
pub(crate) type Failed = (Option<String>, Invalid);

/// A NetworkPolicy has no field for audit mode; this annotation is strait's.
pub const AUDIT_ANNOTATION: &str = "strait.io/audit";

/// `strait.io/audit: "true"` or `"false"`; anything else is refused rather than read
/// as "not audit", since a typo would enforce what the user meant only to watch.
fn audit_annotation(meta: &Metadata<'_>) -> Result<bool> {
    match meta.annotation(AUDIT_ANNOTATION) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(Invalid::new(
            &meta.path("annotations"),
            format!("{AUDIT_ANNOTATION}: must be \"true\" or \"false\", not {other:?}"),
        )),
    }
}
