//! The fabric's reconciliation against the in-memory fake kernel: what it builds, that
//! a second pass changes nothing, that it removes only what is strait's and no longer
//! wanted, and how it treats a VXLAN device that does not match. No root needed; the
//! same scenarios run against the real kernel in `agent/tests/fabric_privileged.rs`.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use strait_api::{FabricMode, NodeRecord};

use super::desired::ClusterView;
use super::reconcile::reconcile;
use super::{FabricConfig, VXLAN_DEVICE, vtep_mac};
use crate::hostnet::HostNet;
use crate::hostnet::fake::FakeHost;
use crate::netlink::{FdbEntry, RTPROT_STRAIT, Route, format_mac};
use crate::node::Underlay;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}

fn record(i: u8, mode: FabricMode) -> NodeRecord {
    let name = format!("n{i}");
    NodeRecord {
        underlay_v4: Some(Ipv4Addr::new(10, 0, 0, i)),
        underlay_v6: None,
        fabric: mode,
        vtep_mac: Some(format_mac(&vtep_mac(&name))),
        vxlan_vni: Some(4096),
        vxlan_port: Some(4789),
        tunnel_v4: Some(Ipv4Addr::new(10, 244, i, 1)),
        tunnel_v6: None,
        agent_version: "test".into(),
        started: 0,
        bgp: None,
        site: strait_api::ipsec::DEFAULT_SITE.into(),
        ipsec: None,
        name,
    }
}

/// `n` nodes, node i with block 10.244.i.0/26.
fn cluster(n: u8, mode: FabricMode) -> ClusterView {
    let mut view = ClusterView::default();
    for i in 1..=n {
        let r = record(i, mode);
        view.blocks
            .insert(net(&format!("10.244.{i}.0/26")), Some(r.name.clone()));
        view.nodes.insert(r.name.clone(), r);
    }
    view
}

/// Node n1's host: eth0 with 10.0.0.1/24, MTU 1500.
fn host() -> (FakeHost, FabricConfig) {
    let host = FakeHost::new();
    host.add_device("eth0", 1500, &[(ip("10.0.0.1"), 24)]);
    let underlay = Underlay {
        iface: None,
        v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
        v6: None,
    };
    (host, FabricConfig::new("n1", FabricMode::Vxlan, underlay))
}

#[tokio::test]
async fn vxlan_builds_device_routes_fdb_and_neighbours_then_stays_still() {
    let (host, cfg) = host();
    let view = cluster(3, FabricMode::Vxlan);
    let done = reconcile(&host, &cfg, &view, true)
        .await
        .expect("reconcile");
    assert!(done.changes > 0);
    assert!(
        done.report.warnings.is_empty(),
        "{:?}",
        done.report.warnings
    );

    let dev = host
        .vxlan_by_name(VXLAN_DEVICE)
        .await
        .expect("read")
        .expect("strait.vxlan made");
    assert_eq!(
        (dev.vni, dev.port, dev.local),
        (Some(4096), Some(4789), Some(ip("10.0.0.1")))
    );
    assert!(!dev.learning && dev.link.up);
    assert_eq!(
        dev.link.mtu, 1450,
        "the underlay's MTU less VXLAN over IPv4"
    );
    assert_eq!(dev.link.mac, Some(vtep_mac("n1")));
    let index = dev.link.index;
    let addrs: Vec<IpAddr> = host
        .addresses(index)
        .await
        .expect("addresses")
        .into_iter()
        .map(|a| a.ip)
        .collect();
    assert_eq!(addrs, vec![ip("10.244.1.1")]);

    let routes = host.routes();
    assert!(
        routes.contains(&Route::blackhole(net("10.244.1.0/26"))),
        "{routes:?}"
    );
    for peer in [2u8, 3] {
        let want = Route::via(
            net(&format!("10.244.{peer}.0/26")),
            ip(&format!("10.244.{peer}.1")),
            index,
            true,
        );
        assert!(
            routes
                .iter()
                .any(|r| r.destination == want.destination && r.gateway == want.gateway),
            "route to n{peer}: {routes:?}"
        );
        let mac = vtep_mac(&format!("n{peer}"));
        assert!(host.fdb_of(index).contains(&FdbEntry {
            mac,
            dst: ip(&format!("10.0.0.{peer}"))
        }));
        assert!(
            host.neighbours_of(index)
                .iter()
                .any(|n| n.ip == ip(&format!("10.244.{peer}.1")) && n.mac == Some(mac))
        );
    }
    assert!(routes.iter().all(|r| r.protocol == RTPROT_STRAIT));

    let again = reconcile(&host, &cfg, &view, true)
        .await
        .expect("reconcile");
    assert_eq!(again.changes, 0, "a converged kernel needs no change");
    assert!(
        again
            .report
            .entries
            .iter()
            .all(|e| e.state == strait_api::routes::EntryState::Ok),
        "{:?}",
        again.report.entries
    );
}

#[tokio::test]
async fn only_strait_entries_no_longer_wanted_are_removed() {
    let (host, cfg) = host();
    reconcile(&host, &cfg, &cluster(3, FabricMode::Vxlan), true)
        .await
        .expect("reconcile");
    let index = host
        .vxlan_by_name(VXLAN_DEVICE)
        .await
        .expect("read")
        .expect("device")
        .link
        .index;
    // Someone else's route, and a route of strait's for a block nobody has any more.
    let mut foreign = Route::via(net("192.168.50.0/24"), ip("10.0.0.254"), 1, false);
    foreign.protocol = 4;
    host.add_route(foreign.clone());
    host.add_route(Route::via(
        net("10.244.9.0/26"),
        ip("10.244.9.1"),
        index,
        true,
    ));

    // n3 leaves the cluster.
    let done = reconcile(&host, &cfg, &cluster(2, FabricMode::Vxlan), true)
        .await
        .expect("reconcile");
    assert!(
        done.changes >= 4,
        "stale route, n3's route, FDB and neighbour: {}",
        done.changes
    );
    let routes = host.routes();
    assert!(routes.contains(&foreign), "not strait's: kept");
    assert!(
        !routes
            .iter()
            .any(|r| r.destination == net("10.244.9.0/26") || r.destination == net("10.244.3.0/26")),
        "{routes:?}"
    );
    assert!(
        routes.iter().any(|r| r.destination == net("10.244.2.0/26")),
        "n2 kept"
    );
    assert!(!host.fdb_of(index).iter().any(|f| f.mac == vtep_mac("n3")));
    assert!(
        !host
            .neighbours_of(index)
            .iter()
            .any(|n| n.ip == ip("10.244.3.1"))
    );
}

#[tokio::test]
async fn a_vxlan_device_with_other_tunnel_parameters_is_recreated_a_wrong_mtu_fixed_in_place() {
    let (host, mut cfg) = host();
    let view = cluster(2, FabricMode::Vxlan);
    reconcile(&host, &cfg, &view, true)
        .await
        .expect("reconcile");
    let first = host
        .vxlan_by_name(VXLAN_DEVICE)
        .await
        .expect("read")
        .expect("device");

    host.set_mtu(first.link.index, 1400).await.expect("mtu");
    reconcile(&host, &cfg, &view, true)
        .await
        .expect("reconcile");
    let fixed = host
        .vxlan_by_name(VXLAN_DEVICE)
        .await
        .expect("read")
        .expect("device");
    assert_eq!(
        fixed.link.index, first.link.index,
        "fixed in place, not recreated"
    );
    assert_eq!(fixed.link.mtu, 1450);

    cfg.vni = 5000;
    let done = reconcile(&host, &cfg, &view, true)
        .await
        .expect("reconcile");
    let new = host
        .vxlan_by_name(VXLAN_DEVICE)
        .await
        .expect("read")
        .expect("device");
    assert_ne!(new.link.index, first.link.index, "recreated");
    assert_eq!(new.vni, Some(5000));
    assert!(
        done.changes > 0,
        "the new device's entries are programmed again"
    );
    let routes = host.routes();
    assert!(
        routes
            .iter()
            .any(|r| r.destination == net("10.244.2.0/26") && r.oif == Some(new.link.index)),
        "{routes:?}"
    );
}

#[tokio::test]
async fn leaving_vxlan_mode_removes_the_device_and_report_only_changes_nothing() {
    let (host, cfg) = host();
    let view = cluster(2, FabricMode::Vxlan);
    reconcile(&host, &cfg, &view, true)
        .await
        .expect("reconcile");
    let before = host.routes();

    // A report (netctl routes) reads and compares; it writes nothing.
    let report = reconcile(&host, &cfg, &view, false).await.expect("report");
    assert_eq!(report.changes, 0);
    assert_eq!(host.routes(), before);

    let mut gw = cfg.clone();
    gw.mode = FabricMode::HostGw;
    reconcile(&host, &gw, &cluster(2, FabricMode::HostGw), true)
        .await
        .expect("reconcile");
    assert!(
        host.vxlan_by_name(VXLAN_DEVICE)
            .await
            .expect("read")
            .is_none()
    );
    let routes = host.routes();
    assert!(
        routes
            .iter()
            .any(|r| r.destination == net("10.244.2.0/26") && r.gateway == Some(ip("10.0.0.2"))),
        "host-gw routes n2's block via its underlay address: {routes:?}"
    );
}

#[tokio::test]
async fn host_gw_gives_no_route_to_a_peer_off_the_segment_and_says_so() {
    let (host, mut cfg) = host();
    cfg.mode = FabricMode::HostGw;
    let mut view = cluster(2, FabricMode::HostGw);
    if let Some(n2) = view.nodes.get_mut("n2") {
        n2.underlay_v4 = Some(Ipv4Addr::new(172, 16, 0, 2));
    }
    let done = reconcile(&host, &cfg, &view, true)
        .await
        .expect("reconcile");
    assert!(
        !host
            .routes()
            .iter()
            .any(|r| r.destination == net("10.244.2.0/26")),
        "{:?}",
        host.routes()
    );
    assert!(
        !done.report.warnings.is_empty(),
        "the unreachable peer is reported"
    );
}

/// Issue 19, item 16: `netctl routes` no longer says all is well when a route of
/// another origin takes part of a block's traffic (a /29 a router installed); the
/// fabric's own entries stay ok, and the route is not touched.
#[tokio::test]
async fn the_report_flags_a_kernel_route_that_overrides_a_block() {
    let (host, cfg) = host();
    let view = cluster(2, FabricMode::Vxlan);
    reconcile(&host, &cfg, &view, true)
        .await
        .expect("reconcile");
    let clean = reconcile(&host, &cfg, &view, false).await.expect("report");
    assert!(clean.report.converged(), "{:?}", clean.report);
    let eth0 = host
        .links()
        .await
        .expect("links")
        .into_iter()
        .find(|l| l.name == "eth0")
        .expect("eth0")
        .index;
    let mut hijack = Route::host(ip("10.244.2.0"), eth0);
    hijack.destination = net("10.244.2.0/29");
    hijack.gateway = Some(ip("10.0.0.253"));
    hijack.protocol = 12;
    host.replace_route(&hijack).await.expect("route");
    let report = reconcile(&host, &cfg, &view, false)
        .await
        .expect("report")
        .report;
    assert!(!report.converged(), "an overridden block is not all well");
    assert_eq!(report.overrides.len(), 1, "{:?}", report.overrides);
    let o = &report.overrides[0];
    assert_eq!(
        (o.block, o.node.as_deref()),
        (net("10.244.2.0/26"), Some("n2"))
    );
    assert!(o.route.starts_with("10.244.2.0/29 via 10.0.0.253"), "{o:?}");
    assert!(
        report
            .entries
            .iter()
            .all(|e| e.state == strait_api::routes::EntryState::Ok),
        "{:?}",
        report.entries
    );
    // A reconcile that applies leaves another protocol's route alone.
    reconcile(&host, &cfg, &view, true)
        .await
        .expect("reconcile");
    assert!(host.main_routes().await.expect("routes").contains(&hijack));
}
