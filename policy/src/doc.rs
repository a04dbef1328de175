//! The toolkit the policy documents are read with, for other crates that read
//! Kubernetes-shaped documents the same way (strait-services: `Service`,
//! `EndpointSlice`): the same decoding of YAML and JSON streams ([`objects`]), the
//! same strict walk that names every refused field ([`Node`], [`Obj`], [`Invalid`]),
//! `metadata`, and Kubernetes' own syntax checks. One implementation, so that a
//! refusal reads the same whichever `netctl … apply` made it.

pub use crate::documents::metadata::{Metadata, NameRule, labels, parse as metadata};
pub use crate::documents::peers::{
    PortValue, label_selector, port_number, port_value, unsupported,
};
pub use crate::documents::validate::{
    dns1123_label, dns1123_subdomain, label_value, port_name, qualified_name,
};
pub use crate::documents::walk::{Invalid, Node, Obj, Result};
pub use crate::parse::{each_object, objects};
