//! The documents `netctl service apply -f FILE` reads: Kubernetes `v1` Service and
//! `discovery.k8s.io/v1` EndpointSlice, as `kubectl apply` takes them (YAML documents
//! separated by `---`, JSON objects, a list, or a `kind: List`). Decoding, the strict
//! walk and the refusals are strait-policy's ([`strait_policy::doc`]), so a refusal
//! reads like one from `netctl policy apply`: the document's number, the object, the
//! field, why. One invalid document refuses the whole input.
//!
//! What strait cannot do is refused by name rather than half done: `ExternalName`
//! (a DNS alias), headless services (`clusterIP: None`: DNS only), `LoadBalancer`
//! (needs a provider of load-balancer addresses), SCTP, FQDN EndpointSlices.

mod endpoint_slice;
mod service;

use serde_json::Value;
pub use strait_policy::ParseError;
use strait_policy::doc::{Invalid, Node, each_object, unsupported};

use crate::model::{EndpointSlice, Service};

/// The fields of a Service's `spec` that only a load-balancer provider reads.
pub const LOAD_BALANCER_FIELDS: &[&str] = &[
    "loadBalancerIP",
    "loadBalancerSourceRanges",
    "loadBalancerClass",
    "allocateLoadBalancerNodePorts",
    "healthCheckNodePort",
];

/// Where an object without `metadata.namespace` lives.
pub const DEFAULT_NAMESPACE: &str = "default";

/// One object of the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The object as given: what `netctl service get -o yaml` shows back.
    pub source: Value,
    pub document: Document,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Service(Service),
    EndpointSlice(EndpointSlice),
}

/// Every object in `text`, or the first error.
pub fn parse_documents(text: &str) -> Result<Vec<Parsed>, ParseError> {
    each_object(text, Kind::List, kind_of, one)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Service,
    EndpointSlice,
    List,
}

fn kind_of(node: &Node<'_>) -> Result<Kind, Invalid> {
    let obj = node.obj()?;
    let kind = obj.required("kind")?.str()?;
    let api_version = obj.required("apiVersion")?;
    let (found, want) = match kind {
        service::KIND => (Kind::Service, service::API_VERSION),
        endpoint_slice::KIND => (Kind::EndpointSlice, endpoint_slice::API_VERSION),
        "List" => (Kind::List, "v1"),
        other => {
            return Err(Invalid::new(
                &obj.child_path("kind"),
                format!(
                    "unsupported kind {other:?}: strait reads Service (v1), EndpointSlice \
                     (discovery.k8s.io/v1) and List (v1)"
                ),
            ));
        }
    };
    let given = api_version.str()?;
    if given != want {
        return Err(Invalid::new(
            &api_version.path,
            format!("{kind} is in apiVersion {want:?}, not {given:?}"),
        ));
    }
    Ok(found)
}

fn one(node: &Node<'_>, kind: Kind, number: usize) -> Result<Parsed, ParseError> {
    let document = match kind {
        Kind::Service => service::parse(node).map(Document::Service),
        Kind::EndpointSlice => endpoint_slice::parse(node).map(Document::EndpointSlice),
        Kind::List => Err((
            None,
            Invalid::new(&node.path, "a List may not hold another List"),
        )),
    };
    let document = document.map_err(|(object, e)| ParseError {
        document: number,
        field: e.field,
        message: e.message,
        object,
    })?;
    Ok(Parsed {
        source: node.value.clone(),
        document,
    })
}

/// A refusal, with the object it is about once its kind and name were read.
type Failed = (Option<String>, Invalid);

/// `value` must be one of `supported`.
fn one_of<'a>(node: &Node<'a>, supported: &[&str]) -> Result<&'a str, Invalid> {
    let given = node.str()?;
    if supported.contains(&given) {
        Ok(given)
    } else {
        Err(unsupported(node, given, supported))
    }
}

#[cfg(test)]
mod tests;
