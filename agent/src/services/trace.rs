//! `netctl service trace --to VIP:PORT`: where a connect from this node goes, from the
//! plan this node holds: the frontend, and every candidate backend with why it takes
//! new connections or not (ready, health, traffic policy) and its share of the table.

use std::net::SocketAddr;

use strait_api::services::{ServiceTrace, TraceCandidate};
use strait_services::frontends::Origin;
use strait_services::model::Protocol;

use super::dataplane::FrontendKey;
use super::reconcile::{Inputs, Plan};

/// `10.96.0.10:80`, `[fd00::1]:53/udp`.
pub fn parse_to(to: &str) -> Result<FrontendKey, String> {
    let (addr, protocol) = match to.rsplit_once('/') {
        Some((a, p)) => (
            a,
            match p.to_ascii_lowercase().as_str() {
                "tcp" => Protocol::TCP,
                "udp" => Protocol::UDP,
                _ => return Err(format!("{to:?}: the protocol after '/' is tcp or udp")),
            },
        ),
        None => (to, Protocol::TCP),
    };
    let addr: SocketAddr = addr.parse().map_err(|_| {
        format!("{to:?}: give ADDRESS:PORT ([ADDRESS]:PORT for IPv6), /udp for UDP")
    })?;
    Ok(FrontendKey {
        addr: addr.ip(),
        port: addr.port(),
        protocol,
    })
}

pub fn trace(
    key: &FrontendKey,
    inputs: &Inputs,
    plan: &Plan,
    node: &str,
    installed: bool,
    error: Option<String>,
) -> Result<ServiceTrace, String> {
    let p = plan.frontends.get(key).ok_or_else(|| {
        format!(
            "no service answers on {}:{}/{} on this node (netctl service list shows them)",
            key.addr, key.port, key.protocol
        )
    })?;
    let r = &p.resolved;
    let shares = p.table.shares();
    let candidates = r
        .backends
        .iter()
        .map(|b| {
            let k = b.key();
            let slots = p
                .table
                .backends
                .iter()
                .position(|t| t == &k)
                .map(|i| shares[i] as u32)
                .unwrap_or(0);
            let down = inputs.down.contains(&(r.service.clone(), b.addr));
            let why = if slots > 0 && !b.ready {
                "not ready, but serving while it terminates and no other backend is ready"
                    .to_string()
            } else if slots > 0 {
                "ready".to_string()
            } else if down {
                "held down: its health check fails".to_string()
            } else if r.local_only && b.node.as_deref() != Some(node) {
                format!(
                    "on {}, and the traffic policy is Local: only this node's backends",
                    b.node.as_deref().unwrap_or("no node of the cluster")
                )
            } else if !b.ready {
                "not ready".to_string()
            } else {
                "not taken while other backends are ready (it is terminating)".to_string()
            };
            TraceCandidate {
                backend: k,
                node: b.node.clone(),
                origin: match &b.origin {
                    Origin::Endpoint(id) => id.clone(),
                    Origin::Slice(s) => format!("EndpointSlice {s}"),
                },
                usable: slots > 0,
                why,
                slots,
            }
        })
        .collect();
    let usable = p.entry.backends.len();
    let choice = if usable == 0 {
        "no backend takes connections: a connect is refused at once (ECONNREFUSED)".to_string()
    } else {
        let mut c = format!(
            "a connect takes one of the {} slots of the Maglev table at random: each usable \
             backend by its share of slots",
            p.entry.table.len()
        );
        if let Some(secs) = r.affinity_secs {
            c.push_str(&format!(
                "; with ClientIP affinity a client (its network namespace) goes back to the \
                 backend it had, for {secs} s after its last connect"
            ));
        }
        c
    };
    Ok(ServiceTrace {
        frontend: r.frontend.to_string(),
        service: r.service.clone(),
        port_name: r.port_name.clone(),
        scope: format!("{:?}", r.frontend.scope),
        table_size: p.entry.table.len() as u32,
        choice,
        candidates,
        installed,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_to_trace() {
        let k = parse_to("10.96.0.10:80").unwrap();
        assert_eq!((k.port, k.protocol), (80, Protocol::TCP));
        let k = parse_to("[fd00:96::a]:53/UDP").unwrap();
        assert_eq!(
            (k.addr.to_string().as_str(), k.protocol),
            ("fd00:96::a", Protocol::UDP)
        );
        assert!(parse_to("10.96.0.10").unwrap_err().contains("ADDRESS:PORT"));
        assert!(
            parse_to("10.96.0.10:80/sctp")
                .unwrap_err()
                .contains("tcp or udp")
        );
        let e = trace(
            &parse_to("10.96.0.10:80").unwrap(),
            &Inputs::default(),
            &Plan::default(),
            "h1",
            false,
            None,
        )
        .unwrap_err();
        assert!(e.contains("no service answers on 10.96.0.10:80/TCP"), "{e}");
    }
}
