//! The bodies of the API's fuzz targets (`fuzz/fuzz_targets/api_*.rs`), here so the
//! same code also runs as a deterministic smoke test under `cargo test`
//! (`tests/fuzz_smoke.rs`). Not part of the crate's API.
//!
//! Checked besides "no panic": a failure comes back as the error the caller turns
//! into an answer (a decode error, a [`ClientError`] that is about the response), and
//! it formats.
//!
//! The mutation engine the smoke test drives the bodies with is the dev-only crate
//! `strait-fuzz-smoke` (testbeds/fuzz-smoke).

use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;

use crate::client::{self, ClientError};
use crate::types::{
    AddRequest, AddResponse, AgentStatus, CheckRequest, DelRequest, Endpoint, GcRequest,
    GcResponse, IpamReport, IpamView, Readiness, ReleaseRequest, ReleaseResponse, StatusRequest,
};

/// `api_requests`: a request body, decoded as every request type the agent accepts.
pub fn requests(body: &[u8]) {
    request::<AddRequest>(body);
    request::<DelRequest>(body);
    request::<CheckRequest>(body);
    request::<StatusRequest>(body);
    request::<GcRequest>(body);
    request::<ReleaseRequest>(body);
    request::<crate::labels::LabelUpdate>(body);
}

/// The agent's `decode` (agent/src/api/mod.rs), which this crate cannot call: the
/// agent depends on strait-api, not the other way round. Keep the two in step: an
/// empty body means `{}`, anything else is JSON, and an error becomes the message of
/// a code-6 `ApiError`.
fn request<T: DeserializeOwned>(body: &[u8]) {
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    if let Err(e) = serde_json::from_slice::<T>(body) {
        let _ = format!("malformed request body: {e}");
    }
}

/// `api_http_response`: what the blocking client reads back from the socket, decoded
/// as every answer type the plugin and netctl ask for.
pub fn http_response(raw: &[u8]) {
    match client::answer(raw) {
        Ok(body) => {
            response::<AddResponse>(&body);
            response::<GcResponse>(&body);
            response::<Readiness>(&body);
            response::<AgentStatus>(&body);
            response::<Vec<Endpoint>>(&body);
            response::<IpamView>(&body);
            response::<IpamReport>(&body);
            response::<ReleaseResponse>(&body);
            // DEL and CHECK ignore the body but still parse it.
            response::<IgnoredAny>(&body);
            response::<Value>(&body);
        }
        Err(e) => response_error(&e),
    }
}

fn response<T: DeserializeOwned>(body: &[u8]) {
    if let Err(e) = client::decode::<T>(body) {
        response_error(&e);
    }
}

/// Bytes that came back can only be a bad response or the agent's error: the socket
/// variants would mean the parser invented an I/O failure.
fn response_error(e: &ClientError) {
    assert!(
        matches!(e, ClientError::Api(_) | ClientError::BadResponse(_)),
        "a response parse failure became {e:?}"
    );
    let _ = e.to_string();
}

/// `docker_requests`: a body on the Docker plugin socket, decoded as every request
/// type of the remote driver protocol, as the agent decodes them (an empty body is
/// `{}`); the option accessors the driver uses run on what decodes.
pub fn docker_requests(body: &[u8]) {
    use crate::docker::*;
    fn each<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
        match decode::<T>(body) {
            Ok(v) => Some(v),
            Err(e) => {
                let _ = format!("malformed request: {e}");
                None
            }
        }
    }
    if let Some(r) = each::<CreateNetworkRequest>(body) {
        let _ = bool_option(&r.options, option::INTERNAL);
        let _ = generic_options(&r.options).map(|g| string_option(&g, option::STRAIT_POOL));
    }
    each::<NetworkRequest>(body);
    if let Some(r) = each::<CreateEndpointRequest>(body) {
        let _ = port_bindings(&r.options);
    }
    each::<EndpointRequest>(body);
    if let Some(r) = each::<JoinRequest>(body) {
        let _ = port_bindings(&r.options);
    }
    if let Some(r) = each::<ExternalConnectivityRequest>(body) {
        let _ = port_bindings(&r.options);
    }
    each::<DiscoveryRequest>(body);
    if let Some(r) = each::<RequestPoolRequest>(body) {
        let _ = string_option(&r.options, option::STRAIT_POOL);
    }
    each::<ReleasePoolRequest>(body);
    if let Some(r) = each::<RequestAddressRequest>(body) {
        let _ = string_option(&r.options, option::REQUEST_ADDRESS_TYPE);
    }
    each::<ReleaseAddressRequest>(body);
    each::<IgnoredAny>(body);
}

/// `gateway_peer_documents`: the text of `netctl ipsec peer apply -f` (YAML or JSON,
/// one peer or lists), and the same bytes as the agent reads a `PUT` body or a stored
/// record. What is accepted is valid, reads back the same from its JSON, and shows no
/// pre-shared key once redacted; a refusal is a message that never quotes the key.
pub fn peer_documents(data: &[u8]) {
    use crate::gateway::{self, PeerAuth};
    let text = String::from_utf8_lossy(data);
    match gateway::parse_peer_documents(&text) {
        Ok(peers) => {
            assert!(!peers.is_empty(), "accepted text with no peer");
            for p in &peers {
                p.validate().expect("an accepted peer is valid");
                let json = serde_json::to_vec(p).expect("a peer serialises");
                let back = gateway::peer_from_json(&json).expect("its JSON reads back");
                assert_eq!(&back, p);
                let shown = p.redacted();
                if let PeerAuth::Psk { secret, .. } = &shown.auth {
                    assert!(secret.is_none(), "a redacted peer shows its key");
                }
                let _ = format!("{p:?}");
            }
            let list = serde_json::to_vec(&peers).expect("peers serialise");
            assert_eq!(
                gateway::peers_from_json(&list).expect("a list reads back"),
                peers
            );
        }
        Err(e) => assert!(!e.is_empty(), "an empty refusal"),
    }
    if let Ok(p) = gateway::peer_from_json(data) {
        let _ = p.validate();
    }
}
