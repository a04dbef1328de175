//! Host ports on ADD: which ports of the node an endpoint may hold. The services
//! reconciler serves them from the endpoint record (`services::hostports`); this
//! module only decides, before anything is reserved, whether the record may say so.
//!
//! A host port is (protocol, port, address), the address one of the node's or none
//! (every underlay address). It is refused when another endpoint of this node holds
//! an overlapping one (same protocol and port, the same address or either on every
//! address), and when it is a node port some service holds: a node port is on every
//! node's addresses, so the two could not both be served. The records are the
//! claims: one agent writes its node's records, and [`Attacher::hold_host_ports`]'s
//! lock keeps two ADDs of this agent from checking at once.

use std::collections::BTreeSet;
use std::net::IpAddr;

use strait_api::{Endpoint, HostPort, HostPortProtocol};

use super::{AttachError, Attacher};
use crate::hostnet::HostNet;

/// The request's mappings as the record keeps them: each port and container port
/// 1-65535, each host IP one of the node's (`is_node_address`), repeats once. Two
/// different mappings of one host port are refused: the node could send it to only
/// one.
pub fn normalize(
    wanted: &[HostPort],
    is_node_address: impl Fn(IpAddr) -> bool,
) -> Result<Vec<HostPort>, String> {
    let mut out: Vec<HostPort> = Vec::new();
    for (i, m) in wanted.iter().enumerate() {
        if m.host_port == 0 || m.container_port == 0 {
            return Err(format!(
                "port mapping {i} ({m}): host and container ports are 1-65535"
            ));
        }
        let m = HostPort {
            host_ip: m.host_ip.filter(|ip| !ip.is_unspecified()),
            ..*m
        };
        if let Some(ip) = m.host_ip
            && !is_node_address(ip)
        {
            return Err(format!(
                "port mapping {i} ({m}): host IP {ip} is not an address of this node \
                 (give one of its addresses, or none for all)"
            ));
        }
        if out.contains(&m) {
            continue;
        }
        if let Some(other) = out.iter().find(|o| o.overlaps(&m)) {
            return Err(format!(
                "port mappings {other} and {m} both want host port {}/{}",
                m.host_port, m.protocol
            ));
        }
        out.push(m);
    }
    Ok(out)
}

/// Why `wanted` cannot be held, if it cannot: the first mapping another endpoint of
/// `held` (this node's records, `id` itself left out) or a service's node port
/// (`node_ports`: protocol, port → service) already has.
pub fn conflict(
    id: &str,
    wanted: &[HostPort],
    held: &[Endpoint],
    node_ports: &dyn Fn(HostPortProtocol, u16) -> Option<String>,
) -> Option<String> {
    for m in wanted {
        for ep in held.iter().filter(|ep| ep.id != id) {
            if let Some(theirs) = ep.port_mappings.iter().find(|h| h.overlaps(m)) {
                return Some(format!(
                    "host port {}/{} is held by endpoint {} ({theirs}); release it \
                     (CNI DEL) or choose another host port",
                    m.host_port, m.protocol, ep.id
                ));
            }
        }
        if let Some(service) = node_ports(m.protocol, m.host_port) {
            return Some(format!(
                "host port {}/{} is a node port of Service {service} on every node; \
                 choose another host port",
                m.host_port, m.protocol
            ));
        }
    }
    None
}

/// Whether `ip` is an address of this host: binding to it works only then.
pub fn is_local_address(ip: IpAddr) -> bool {
    match std::net::UdpSocket::bind((ip, 0)) {
        Ok(_) => true,
        // EADDRNOTAVAIL: not ours. Anything else (EACCES…) says nothing of the
        // address: it is taken as ours, the datapath decides.
        Err(e) => e.raw_os_error() != Some(libc::EADDRNOTAVAIL),
    }
}

impl<K: HostNet> Attacher<K> {
    /// Checks the request's host ports against this node's other endpoints and the
    /// services' node ports. Returns them as the record keeps them, with the lock
    /// the caller holds until the record is written (or the ADD failed), so no
    /// other ADD checks against a state about to change. No mappings: no lock.
    pub(super) async fn hold_host_ports(
        &self,
        id: &str,
        wanted: &[HostPort],
    ) -> Result<(Vec<HostPort>, Option<tokio::sync::MutexGuard<'_, ()>>), AttachError> {
        if wanted.is_empty() {
            return Ok((Vec::new(), None));
        }
        let mappings = normalize(wanted, is_local_address).map_err(AttachError::InvalidConfig)?;
        let guard = self.host_port_lock.lock().await;
        let held = self.records.list().await?;
        let mut node_ports = BTreeSet::new();
        for m in &mappings {
            let protocol = match m.protocol {
                HostPortProtocol::Tcp => strait_services::model::Protocol::TCP,
                HostPortProtocol::Udp => strait_services::model::Protocol::UDP,
            };
            let key = crate::services::store::port_claim(protocol, m.host_port);
            if let Some(kv) = self.store.get(&key).await? {
                let holder = String::from_utf8_lossy(&kv.value).into_owned();
                node_ports.insert((m.protocol, m.host_port, holder));
            }
        }
        let node_port = |p: HostPortProtocol, port: u16| {
            node_ports
                .iter()
                .find(|(q, n, _)| *q == p && *n == port)
                .map(|(_, _, s)| s.clone())
        };
        if let Some(why) = conflict(id, &mappings, &held, &node_port) {
            return Err(AttachError::HostPortTaken(why));
        }
        Ok((mappings, Some(guard)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(port: u16, proto: HostPortProtocol, ip: Option<&str>, to: u16) -> HostPort {
        HostPort {
            host_port: port,
            container_port: to,
            protocol: proto,
            host_ip: ip.map(|s| s.parse().unwrap()),
        }
    }

    fn holder(id: &str, ports: Vec<HostPort>) -> Endpoint {
        Endpoint {
            id: id.into(),
            node: "a".into(),
            network: "n".into(),
            container_id: id.into(),
            ifname: "eth0".into(),
            netns: "/x".into(),
            host_ifname: "strait1".into(),
            mac: "02:00:00:00:00:01".into(),
            host_mac: "02:00:00:00:00:02".into(),
            ips: Vec::new(),
            mtu: 1500,
            namespace: "default".into(),
            pod: None,
            labels: Default::default(),
            named_ports: Vec::new(),
            identity: None,
            handle: id.into(),
            created: 0,
            host_ports: false,
            port_mappings: ports,
        }
    }

    const NODE: &str = "192.0.2.1";

    fn normalized(wanted: &[HostPort]) -> Result<Vec<HostPort>, String> {
        normalize(wanted, |ip| ip == NODE.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn normalize_keeps_one_of_each_and_checks_ports_and_addresses() {
        use HostPortProtocol::{Tcp, Udp};
        let tcp = hp(8080, Tcp, None, 80);
        let udp = hp(8080, Udp, None, 53);
        assert_eq!(
            normalized(&[tcp, udp, tcp]).unwrap(),
            vec![tcp, udp],
            "a repeat (a runtime naming the port twice) is kept once"
        );
        // 0.0.0.0 is every address.
        assert_eq!(
            normalized(&[hp(8080, Tcp, Some("0.0.0.0"), 80)]).unwrap(),
            vec![tcp]
        );
        assert_eq!(
            normalized(&[hp(8080, Tcp, Some(NODE), 80)]).unwrap()[0].host_ip,
            Some(NODE.parse().unwrap())
        );
        let e = normalized(&[hp(8080, Tcp, Some("198.51.100.7"), 80)]).unwrap_err();
        assert!(
            e.contains("198.51.100.7 is not an address of this node"),
            "{e}"
        );
        let e = normalized(&[hp(0, Tcp, None, 80)]).unwrap_err();
        assert!(e.contains("1-65535"), "{e}");
        let e = normalized(&[hp(8080, Tcp, None, 0)]).unwrap_err();
        assert!(e.contains("1-65535"), "{e}");
        // One host port to two container ports: refused, naming both.
        let e = normalized(&[tcp, hp(8080, Tcp, Some(NODE), 81)]).unwrap_err();
        assert!(e.contains("both want host port 8080/tcp"), "{e}");
    }

    #[test]
    fn a_port_another_endpoint_holds_is_refused_naming_it() {
        use HostPortProtocol::{Tcp, Udp};
        let none = |_: HostPortProtocol, _: u16| None;
        let held = vec![
            holder("n.web.eth0", vec![hp(8080, Tcp, None, 80)]),
            holder("n.dns.eth0", vec![hp(5353, Udp, Some(NODE), 53)]),
        ];
        let e = conflict("n.new.eth0", &[hp(8080, Tcp, None, 80)], &held, &none).unwrap();
        assert!(e.contains("8080/tcp is held by endpoint n.web.eth0"), "{e}");
        // Every address overlaps the one address.
        let e = conflict("n.new.eth0", &[hp(8080, Tcp, Some(NODE), 80)], &held, &none);
        assert!(e.is_some());
        let e = conflict("n.new.eth0", &[hp(5353, Udp, None, 53)], &held, &none).unwrap();
        assert!(e.contains("n.dns.eth0"), "{e}");
        // Other protocol, other port, other address: free.
        for free in [
            hp(8080, Udp, None, 80),
            hp(8081, Tcp, None, 80),
            hp(5353, Udp, Some("192.0.2.2"), 53),
        ] {
            assert_eq!(
                conflict("n.new.eth0", &[free], &held, &none),
                None,
                "{free}"
            );
        }
        // An endpoint's own record (an ADD retried) is no conflict.
        assert_eq!(
            conflict("n.web.eth0", &[hp(8080, Tcp, None, 80)], &held, &none),
            None
        );
    }

    #[test]
    fn a_node_port_is_refused_naming_the_service() {
        let node_ports = |p: HostPortProtocol, port: u16| {
            (p == HostPortProtocol::Tcp && port == 30080).then(|| "shop/web".to_string())
        };
        let e = conflict(
            "n.new.eth0",
            &[hp(30080, HostPortProtocol::Tcp, None, 80)],
            &[],
            &node_ports,
        )
        .unwrap();
        assert!(e.contains("node port of Service shop/web"), "{e}");
        assert_eq!(
            conflict(
                "n.new.eth0",
                &[hp(30080, HostPortProtocol::Udp, None, 80)],
                &[],
                &node_ports
            ),
            None
        );
    }
}
