//! Which endpoint an operator's ID names: the endpoint's own id
//! (`network.containerID.ifname`), a container ID, or a prefix of either that only one
//! endpoint has (as `netctl endpoints` shortens container IDs, and git hashes).

use crate::Endpoint;

/// Why an ID names no one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no endpoint {0}")]
    NotFound(String),
    /// Several endpoints match: each as `id (node NODE)`.
    #[error("{query} names {} endpoints: {}; give more of the ID", .matches.len(), .matches.join(", "))]
    Ambiguous { query: String, matches: Vec<String> },
}

/// What an ID is matched against, for every form an endpoint is held in (the wire
/// type here, the agent's own records elsewhere).
pub trait EndpointIds {
    /// `network.containerID.ifname`.
    fn endpoint_id(&self) -> &str;
    fn container_id(&self) -> &str;
    fn node(&self) -> &str;
}

impl EndpointIds for Endpoint {
    fn endpoint_id(&self) -> &str {
        &self.id
    }
    fn container_id(&self) -> &str {
        &self.container_id
    }
    fn node(&self) -> &str {
        &self.node
    }
}

/// The one endpoint of `eps` that `query` names. An exact endpoint id wins, then an
/// exact container ID, then a unique prefix of either.
pub fn resolve<'a, E: EndpointIds + 'a>(
    query: &str,
    eps: impl IntoIterator<Item = &'a E>,
) -> Result<&'a E, ResolveError> {
    if query.is_empty() {
        return Err(ResolveError::NotFound(String::from("\"\"")));
    }
    let eps: Vec<&E> = eps.into_iter().collect();
    if let Some(ep) = eps.iter().find(|e| e.endpoint_id() == query) {
        return Ok(ep);
    }
    let exact: Vec<&E> = eps
        .iter()
        .copied()
        .filter(|e| e.container_id() == query)
        .collect();
    let matches = if exact.is_empty() {
        eps.iter()
            .copied()
            .filter(|e| e.container_id().starts_with(query) || e.endpoint_id().starts_with(query))
            .collect()
    } else {
        exact
    };
    match matches.as_slice() {
        [] => Err(ResolveError::NotFound(query.to_string())),
        [one] => Ok(one),
        many => Err(ResolveError::Ambiguous {
            query: query.to_string(),
            matches: many
                .iter()
                .map(|e| format!("{} (node {})", e.endpoint_id(), e.node()))
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(node: &str, cid: &str, ifname: &str) -> Endpoint {
        serde_json::from_value(serde_json::json!({
            "id": format!("net.{cid}.{ifname}"), "node": node, "network": "net",
            "container_id": cid, "ifname": ifname, "netns": "/run/netns/x",
            "host_ifname": "strait0", "mac": "02:00:00:00:00:01",
            "host_mac": "02:00:00:00:00:02", "ips": [], "mtu": 1500, "handle": "x",
            "created": 0
        }))
        .expect("an endpoint")
    }

    #[test]
    fn ids_container_ids_and_unique_prefixes() {
        let eps = [
            ep("n1", "abc123", "eth0"),
            ep("n1", "abc123", "net1"),
            ep("n2", "abd999", "eth0"),
            ep("n1", "abc1", "eth0"),
        ];
        let id = |q: &str| resolve(q, &eps).map(|e| e.id.clone());
        assert_eq!(id("net.abc123.net1").unwrap(), "net.abc123.net1");
        assert_eq!(id("abd").unwrap(), "net.abd999.eth0");
        // An exact container ID beats the longer IDs it prefixes.
        assert_eq!(id("abc1").unwrap(), "net.abc1.eth0");
        // Two interfaces of one container: ambiguous, both named with their node.
        let e = id("abc123").unwrap_err();
        assert!(
            matches!(&e, ResolveError::Ambiguous { matches, .. } if matches.len() == 2),
            "{e:?}"
        );
        assert!(e.to_string().contains("net.abc123.eth0 (node n1)"), "{e}");
        assert!(matches!(id("ab"), Err(ResolveError::Ambiguous { .. })));
        assert_eq!(id("zzz"), Err(ResolveError::NotFound("zzz".into())));
        assert!(matches!(id(""), Err(ResolveError::NotFound(_))));
    }
}
