//! MTU: what containers send must fit what the fabric carries, on this host and on
//! the whole path to every peer. The first half compares this host's numbers (the
//! containers' MTU, the underlay interface's, the VXLAN device's); the second sends
//! an ICMP echo of exactly the containers' MTU, with Don't Fragment, to every peer's
//! tunnel address (its VXLAN device's address, or its underlay address with
//! host-gw and BGP), because a smaller MTU on the peer or on a link between shows
//! only there: full-size packets vanish while pings of the default size pass.

use std::net::IpAddr;
use std::time::Duration;

use strait_api::FabricMode;
use strait_api::NodeRecord;
use strait_api::doctor::Check;

use crate::fabric::{VXLAN_DEVICE, vxlan_mtu};

/// This host's numbers.
pub struct HostMtu {
    pub fabric: FabricMode,
    pub container: u32,
    pub underlay: u32,
    pub underlay_iface: Option<String>,
    pub ipv6_underlay: bool,
    /// The VXLAN device's, with the vxlan fabric once it exists.
    pub vxlan_device: Option<u32>,
}

pub fn local(h: &HostMtu) -> Check {
    let iface = h
        .underlay_iface
        .as_deref()
        .unwrap_or("the default route's interface");
    let fix_lower = |to: u32| {
        format!(
            "set --mtu {to} (or `mtu` in the CNI config) on every node, or raise {iface}'s \
             MTU; new containers get the new MTU"
        )
    };
    match h.fabric {
        FabricMode::Vxlan => {
            let carried = vxlan_mtu(h.underlay, h.ipv6_underlay);
            if h.container > carried {
                return Check::fail(
                    "mtu",
                    format!(
                        "containers send {} bytes; {iface} ({}) carries {carried} once \
                         VXLAN adds its {} bytes: full-size packets to other nodes are lost",
                        h.container,
                        h.underlay,
                        h.underlay - carried
                    ),
                    fix_lower(carried),
                );
            }
            if let Some(dev) = h.vxlan_device
                && h.container > dev
            {
                return Check::fail(
                    "mtu",
                    format!(
                        "containers send {} bytes and {VXLAN_DEVICE}'s MTU is {dev}",
                        h.container
                    ),
                    fix_lower(dev),
                );
            }
            Check::ok(
                "mtu",
                format!(
                    "containers {}, {VXLAN_DEVICE} {}, {iface} {}",
                    h.container,
                    h.vxlan_device
                        .map_or("absent".to_string(), |d| d.to_string()),
                    h.underlay
                ),
            )
        }
        FabricMode::HostGw | FabricMode::Bgp | FabricMode::None => {
            if h.container > h.underlay {
                return Check::fail(
                    "mtu",
                    format!(
                        "containers send {} bytes and {iface} carries {}",
                        h.container, h.underlay
                    ),
                    fix_lower(h.underlay),
                );
            }
            Check::ok(
                "mtu",
                format!("containers {}, {iface} {}", h.container, h.underlay),
            )
        }
    }
}

/// Where a peer's containers' packets go: its tunnel address with VXLAN, else its
/// underlay address. IPv4 first, as the fabric encapsulates.
pub fn probe_target(fabric: FabricMode, peer: &NodeRecord) -> Option<IpAddr> {
    match fabric {
        FabricMode::Vxlan => peer
            .tunnel_v4
            .map(IpAddr::V4)
            .or(peer.tunnel_v6.map(IpAddr::V6)),
        FabricMode::HostGw | FabricMode::Bgp => peer
            .underlay_v4
            .map(IpAddr::V4)
            .or(peer.underlay_v6.map(IpAddr::V6)),
        FabricMode::None => None,
    }
}

/// How one peer answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMtu {
    /// Full-size packets come back.
    Carries,
    /// Only packets up to this size do.
    Only(usize),
    /// Not even small ones.
    Silent,
    /// The probe could not be sent (no CAP_NET_RAW, no route).
    Error(String),
}

const PROBE: Duration = Duration::from_millis(900);
const SMALL: usize = 128;

/// Probes `to` with `size`-byte packets, and when they do not come back, finds the
/// largest size that does (by halving the interval, 6 probes at most).
pub fn probe(to: IpAddr, size: usize) -> PathMtu {
    let echo = |len| crate::node::probe::echo_sized(to, Some(len), PROBE);
    match echo(size) {
        Ok(true) => return PathMtu::Carries,
        Ok(false) => {}
        Err(e) => return PathMtu::Error(e.to_string()),
    }
    match echo(SMALL) {
        Ok(true) => {}
        Ok(false) => return PathMtu::Silent,
        Err(e) => return PathMtu::Error(e.to_string()),
    }
    let (mut good, mut bad) = (SMALL, size);
    for _ in 0..6 {
        if bad - good <= 8 {
            break;
        }
        let mid = (good + bad) / 2;
        match echo(mid) {
            Ok(true) => good = mid,
            _ => bad = mid,
        }
    }
    PathMtu::Only(good)
}

/// The verdict over every peer's probe.
pub fn paths(container: u32, results: &[(String, IpAddr, PathMtu)]) -> Check {
    if results.is_empty() {
        return Check::skip("mtu-path", "no other node to probe");
    }
    let mut short = Vec::new();
    let mut silent = Vec::new();
    let mut errors = Vec::new();
    for (node, addr, r) in results {
        match r {
            PathMtu::Carries => {}
            PathMtu::Only(n) => short.push(format!("{node} ({addr}) answers up to {n} bytes")),
            PathMtu::Silent => silent.push(format!("{node} ({addr})")),
            PathMtu::Error(e) => errors.push(format!("{node} ({addr}): {e}")),
        }
    }
    if !short.is_empty() {
        return Check::fail(
            "mtu-path",
            format!(
                "{}-byte packets with Don't Fragment are lost: {}",
                container,
                short.join("; ")
            ),
            "give every node's underlay the same MTU (`ip link set dev IFACE mtu N`), or \
             lower --mtu on every node to what the smallest path carries, less the \
             encapsulation",
        );
    }
    if !silent.is_empty() {
        return Check::fail(
            "mtu-path",
            format!("no echo answer at all from {}", silent.join(", ")),
            "check the fabric to those nodes (`netctl routes` on both ends) and that no \
             firewall drops ICMP on the underlay",
        );
    }
    if !errors.is_empty() {
        return Check::warn(
            "mtu-path",
            format!("could not probe: {}", errors.join("; ")),
            "run straitd with CAP_NET_RAW (the packaged unit and the DaemonSet give it)",
        );
    }
    Check::ok(
        "mtu-path",
        format!(
            "{} peer{} answer {container}-byte packets with Don't Fragment",
            results.len(),
            if results.len() == 1 { "" } else { "s" }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_api::doctor::Verdict;

    fn host(fabric: FabricMode, container: u32, underlay: u32, dev: Option<u32>) -> HostMtu {
        HostMtu {
            fabric,
            container,
            underlay,
            underlay_iface: Some("eth0".into()),
            ipv6_underlay: false,
            vxlan_device: dev,
        }
    }

    #[test]
    fn containers_must_fit_the_underlay_less_the_encapsulation() {
        assert_eq!(
            local(&host(FabricMode::Vxlan, 1450, 1500, Some(1450))).verdict,
            Verdict::Ok
        );
        let c = local(&host(FabricMode::Vxlan, 1450, 1400, Some(1350)));
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.detail.contains("carries 1350"), "{c:?}");
        assert!(c.fix.unwrap().contains("--mtu 1350"));
        assert_eq!(
            local(&host(FabricMode::HostGw, 1500, 1500, None)).verdict,
            Verdict::Ok
        );
        assert_eq!(
            local(&host(FabricMode::Bgp, 1500, 1400, None)).verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn a_short_path_fails_and_names_the_peer() {
        let addr: IpAddr = "10.244.1.0".parse().unwrap();
        let ok = paths(1450, &[("h2".into(), addr, PathMtu::Carries)]);
        assert_eq!(ok.verdict, Verdict::Ok);
        let short = paths(
            1450,
            &[
                ("h2".into(), addr, PathMtu::Carries),
                ("h3".into(), addr, PathMtu::Only(1350)),
            ],
        );
        assert_eq!(short.verdict, Verdict::Fail);
        assert!(
            short.detail.contains("h3 (10.244.1.0) answers up to 1350"),
            "{short:?}"
        );
        assert_eq!(paths(1450, &[]).verdict, Verdict::Skip);
        let silent = paths(1450, &[("h2".into(), addr, PathMtu::Silent)]);
        assert_eq!(silent.verdict, Verdict::Fail);
    }
}
