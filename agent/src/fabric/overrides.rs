//! What `netctl routes` flags beside the fabric's own entries: kernel routes of another
//! origin that take a block's traffic away from the fabric (issue 19, item 16). By
//! longest match, a route more specific than a block wins over the block's route (a
//! /29 a router installed, a static route left behind), and a route of another protocol
//! for the block itself competes with the fabric's. Strait's own routes are the
//! fabric's and never flagged: protocol 83 (container host routes, borrowed addresses,
//! FIB sync) and whatever goes out of strait's own links (`strait.vxlan`, whose IPv6
//! tunnel address the kernel routes as a /128 inside the node's block; container
//! veths). Pure: the kernel's routes and the cluster's blocks in, the findings out.

use std::collections::BTreeMap;

use ipnet::IpNet;
use strait_api::routes::RouteOverride;

use super::reconcile::{LinkNames, route_text};
use crate::netlink::{RTPROT_STRAIT, Route};

/// strait's links are named so: `strait.vxlan`, container veths `strait<8 hex>`.
const STRAIT_LINK_PREFIX: &str = "strait";

/// Every kernel route (not strait's) equal to or inside a block of the cluster, with
/// the block it overrides; `blocks` maps each block to its node.
pub fn find(
    blocks: &BTreeMap<IpNet, Option<String>>,
    kernel: &[Route],
    names: &LinkNames,
) -> Vec<RouteOverride> {
    let mut out = Vec::new();
    let straits_link = |r: &Route| {
        r.oif
            .and_then(|i| names.get(&i))
            .is_some_and(|n| n.starts_with(STRAIT_LINK_PREFIX))
    };
    for route in kernel
        .iter()
        .filter(|r| r.protocol != RTPROT_STRAIT && !straits_link(r))
    {
        let dst = route.destination;
        // The block containing it (blocks do not overlap: at most one).
        let Some((block, node)) = blocks.iter().find(|(b, _)| b.contains(&dst)) else {
            continue;
        };
        let reason = if dst == *block {
            format!(
                "a route of protocol {} for the block itself competes with the fabric's",
                route.protocol
            )
        } else {
            format!(
                "more specific than the block: by longest match it takes the traffic for \
                 {dst} away from the fabric"
            )
        };
        out.push(RouteOverride {
            route: route_text(route, names),
            block: *block,
            node: node.clone(),
            reason,
        });
    }
    out.sort_by(|a, b| (a.block, &a.route).cmp(&(b.block, &b.route)));
    out
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::netlink::RouteKind;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn route(dst: &str, gateway: Option<&str>, protocol: u8) -> Route {
        Route {
            kind: RouteKind::Unicast,
            destination: net(dst),
            gateway: gateway.map(|g| g.parse::<IpAddr>().expect("ip")),
            oif: Some(2),
            protocol,
            onlink: false,
            metric: None,
        }
    }

    fn blocks() -> BTreeMap<IpNet, Option<String>> {
        [
            (net("10.244.1.0/26"), Some("n1".to_string())),
            (net("10.244.2.0/26"), Some("n2".to_string())),
        ]
        .into()
    }

    #[test]
    fn a_more_specific_or_same_prefix_route_of_another_origin_is_flagged() {
        let names: LinkNames = [(2, "eth0".to_string()), (9, "strait.vxlan".to_string())].into();
        let kernel = [
            // BIRD's /29 inside n2's block: the hijack of issue 19.
            route("10.244.2.0/29", Some("10.0.0.253"), 12),
            // A static route for n1's whole block.
            route("10.244.1.0/26", Some("10.0.0.9"), 4),
            // Strait's own: a container's host route, FIB sync's route.
            route("10.244.1.5/32", None, RTPROT_STRAIT),
            route("10.244.2.0/26", Some("10.0.0.2"), RTPROT_STRAIT),
            // Outside the blocks, and covering them: fine.
            route("192.0.2.0/24", Some("10.0.0.253"), 12),
            route("10.0.0.0/8", Some("10.0.0.1"), 4),
            route("0.0.0.0/0", Some("10.0.0.1"), 3),
            // The kernel's route to this node's own tunnel address on strait.vxlan.
            Route {
                oif: Some(9),
                ..route("10.244.1.0/32", None, 2)
            },
        ];
        let found = find(&blocks(), &kernel, &names);
        let summary: Vec<(String, String, Option<String>)> = found
            .iter()
            .map(|o| (o.block.to_string(), o.route.clone(), o.node.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "10.244.1.0/26".into(),
                    "10.244.1.0/26 via 10.0.0.9 dev eth0 proto 4".into(),
                    Some("n1".into())
                ),
                (
                    "10.244.2.0/26".into(),
                    "10.244.2.0/29 via 10.0.0.253 dev eth0 proto 12".into(),
                    Some("n2".into())
                ),
            ]
        );
        assert!(found[0].reason.contains("competes"), "{found:?}");
        assert!(found[1].reason.contains("more specific"), "{found:?}");
    }

    #[test]
    fn a_blackhole_inside_a_block_is_flagged_too() {
        let mut hole = route("10.244.2.8/29", None, 3);
        hole.kind = RouteKind::Blackhole;
        hole.oif = None;
        let found = find(&blocks(), &[hole], &LinkNames::new());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].route, "blackhole 10.244.2.8/29 proto 3");
    }
}
