//! The fabric against the real kernel: hosts are network namespaces on one bridged
//! underlay (itself a namespace), each with a "container" namespace behind a veth,
//! built here with `ip` (no straitd). One embedded store holds the node records and
//! blocks; a `Fabric` runs per host namespace. Needs root (visible SKIP otherwise).
//!
//! Every namespace is named with the test's unique prefix and deleted on drop, also on
//! panic, which takes every link in it along; traffic stays inside them.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde_json::Value;
use strait_api::{FabricMode, NodeRecord};
use strait_testbeds::netns::Netns;
use straitd::fabric::{
    EntryKind, EntryState, Fabric, FabricConfig, FabricHandle, RouteReport, Underlay, ViewFollower,
    vtep_mac,
};
use straitd::ipam::{Block, keys};
use straitd::netlink::{Netlink, format_mac};
use straitd::netns::NetNs;
use straitd::node::node_key;
use straitd::store::Store;
use straitd::store::embedded::EmbeddedStore;
use tokio::sync::watch;

/// `ip netns add` makes /run/netns a shared mount the first time; concurrent first calls
/// can trip over each other, so building topologies is serialised.
static SETUP: Mutex<()> = Mutex::new(());

const VXLAN: &str = "strait.vxlan";

/// One host: its namespace, its container's, and what its records say.
struct Host {
    node: String,
    ns: Netns,
    container: Netns,
    underlay_v4: Ipv4Addr,
    underlay_v6: Ipv6Addr,
    /// 1-based host number: blocks 10.244.<i>.0/26 and fd00:244:<i>::/122.
    i: u8,
}

impl Host {
    fn container_v4(&self) -> String {
        format!("10.244.{}.2", self.i)
    }
    fn container_v6(&self) -> String {
        format!("fd00:244:{}::2", self.i)
    }
    fn block_v4(&self) -> IpNet {
        format!("10.244.{}.0/26", self.i).parse().expect("net")
    }
    fn block_v6(&self) -> IpNet {
        format!("fd00:244:{}::/122", self.i).parse().expect("net")
    }
    fn record(&self, mode: FabricMode) -> NodeRecord {
        NodeRecord {
            name: self.node.clone(),
            underlay_v4: Some(self.underlay_v4),
            underlay_v6: Some(self.underlay_v6),
            fabric: mode,
            vtep_mac: Some(format_mac(&vtep_mac(&self.node))),
            vxlan_vni: Some(4096),
            vxlan_port: Some(4789),
            tunnel_v4: Some(Ipv4Addr::new(10, 244, self.i, 1)),
            tunnel_v6: Some(format!("fd00:244:{}::1", self.i).parse().expect("ip")),
            agent_version: "test".into(),
            started: 0,
            bgp: None,
            site: strait_api::ipsec::DEFAULT_SITE.into(),
            ipsec: None,
        }
    }
}

/// Underlay namespace with a bridge, and hosts plugged into it.
struct Topology {
    hosts: Vec<Host>,
    // Dropped last: the hosts' veths go with their namespaces either way.
    _underlay: Netns,
}

/// `(underlay v4 /24, underlay v6 /64)` per host.
fn build(underlays: &[(&str, &str)]) -> Topology {
    let _guard = SETUP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let prefix = strait_testbeds::unique_prefix();
    let underlay = Netns::new(format!("{prefix}ul"));
    underlay.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
    underlay.exec_ok(&["ip", "link", "set", "br0", "up"]);
    let mut hosts = Vec::new();
    for (n, (v4, v6)) in underlays.iter().enumerate() {
        let i = u8::try_from(n + 1).expect("few hosts");
        let ns = Netns::new(format!("{prefix}h{i}"));
        let container = Netns::new(format!("{prefix}c{i}"));
        let port = format!("{prefix}h{i}");
        underlay.exec_ok(&[
            "ip",
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ]);
        underlay.exec_ok(&["ip", "link", "set", &port, "master", "br0", "up"]);
        ns.exec_ok(&["ip", "addr", "add", v4, "dev", "eth0"]);
        ns.exec_ok(&["ip", "addr", "add", v6, "dev", "eth0", "nodad"]);
        ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        ns.exec_ok(&[
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        // The container: a veth named like attach's (strait<8 hex>), a /32 and a /128,
        // host routes with strait's protocol — the routes the fabric must never touch.
        let veth = format!("strait{i:08x}");
        ns.exec_ok(&[
            "ip",
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            container.name(),
        ]);
        ns.exec_ok(&["ip", "addr", "add", "169.254.1.1/32", "dev", &veth]);
        ns.exec_ok(&["ip", "addr", "add", "fe80::1/64", "dev", &veth, "nodad"]);
        ns.exec_ok(&["ip", "link", "set", &veth, "up"]);
        let host = Host {
            node: format!("h{i}"),
            ns,
            container,
            underlay_v4: v4.split('/').next().expect("addr").parse().expect("v4"),
            underlay_v6: v6.split('/').next().expect("addr").parse().expect("v6"),
            i,
        };
        let (c4, c6) = (host.container_v4(), host.container_v6());
        host.ns.exec_ok(&[
            "ip", "route", "add", &c4, "dev", &veth, "proto", "83", "scope", "link",
        ]);
        host.ns
            .exec_ok(&["ip", "-6", "route", "add", &c6, "dev", &veth, "proto", "83"]);
        let c = &host.container;
        c.exec_ok(&["ip", "addr", "add", &format!("{c4}/32"), "dev", "eth0"]);
        c.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{c6}/128"),
            "dev",
            "eth0",
            "nodad",
        ]);
        c.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        c.exec_ok(&[
            "ip",
            "route",
            "add",
            "169.254.1.1",
            "dev",
            "eth0",
            "scope",
            "link",
        ]);
        c.exec_ok(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            "169.254.1.1",
            "dev",
            "eth0",
        ]);
        c.exec_ok(&[
            "ip", "-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0",
        ]);
        hosts.push(host);
    }
    Topology {
        hosts,
        _underlay: underlay,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn put_json(store: &Arc<dyn Store>, key: &str, value: &impl serde::Serialize) {
    store
        .put(key, serde_json::to_vec(value).expect("json"), None)
        .await
        .expect("put");
}

async fn publish(store: &Arc<dyn Store>, host: &Host, mode: FabricMode) {
    put_json(store, &node_key(&host.node), &host.record(mode)).await;
    for cidr in [host.block_v4(), host.block_v6()] {
        put_json(
            store,
            &keys::block(&cidr),
            &Block::new(cidr, Some(host.node.clone()), 0),
        )
        .await;
    }
}

/// A fabric running on the runtime for one host.
struct Running {
    handle: FabricHandle,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(store: &Arc<dyn Store>, host: &Host, mode: FabricMode) -> Running {
    let netns = NetNs::open(host.ns.path()).expect("open host netns");
    let netlink = Netlink::open_in(&netns).await.expect("netlink in host");
    let underlay = Underlay {
        iface: Some("eth0".into()),
        v4: Some(host.underlay_v4),
        v6: Some(host.underlay_v6),
    };
    let mut cfg = FabricConfig::new(host.node.clone(), mode, underlay);
    // Short, so planted stale state is found quickly; the debounce stays the default.
    cfg.resync = Duration::from_millis(500);
    let fabric = Fabric::new(store.clone(), netlink, cfg);
    let handle = fabric.handle();
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(fabric.run(rx));
    Running { handle, stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.send(true).expect("fabric alive");
        self.task.await.expect("fabric task");
    }
}

/// Polls `handle`'s report until `done` holds (after at least `min_reconciles`), or
/// panics with the last report.
async fn wait_for(
    handle: &FabricHandle,
    min_reconciles: u64,
    what: &str,
    done: impl Fn(&RouteReport) -> bool,
) -> RouteReport {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = handle.report().await;
        if report.reconciles >= min_reconciles && done(&report) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached; last report:\n{}",
            serde_json::to_string_pretty(&report).expect("json")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every entry ok and, per peer, a route for each of its blocks.
fn converged_with(report: &RouteReport, routes: usize) -> bool {
    report.converged()
        && report
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Route)
            .count()
            == routes
}

/// Pings until one answer or 5 tries (the first may wait on ARP/NDP).
fn ping(from: &Netns, to: &str) -> bool {
    (0..5).any(|_| from.ping(to))
}

fn json(ns: &Netns, argv: &[&str]) -> Value {
    let text = ns.exec_ok(argv);
    if text.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{argv:?}: {e}: {text}"))
}

fn routes(ns: &Netns) -> Vec<Value> {
    let mut all = json(ns, &["ip", "-j", "-4", "route", "show", "table", "main"])
        .as_array()
        .cloned()
        .unwrap_or_default();
    all.extend(
        json(ns, &["ip", "-j", "-6", "route", "show", "table", "main"])
            .as_array()
            .cloned()
            .unwrap_or_default(),
    );
    all
}

fn has_route(ns: &Netns, dst: &str) -> bool {
    routes(ns).iter().any(|r| r["dst"] == dst)
}

fn fdb(ns: &Netns) -> Vec<Value> {
    json(ns, &["bridge", "-j", "fdb", "show", "dev", VXLAN])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn neighbours(ns: &Netns) -> Vec<Value> {
    json(ns, &["ip", "-j", "neigh", "show", "dev", VXLAN])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// What a restart must leave as it is: the device (same ifindex), routes, FDB,
/// neighbours and addresses, with counters and ages dropped.
fn kernel_snapshot(ns: &Netns) -> Value {
    let device = json(ns, &["ip", "-j", "-d", "link", "show", VXLAN]);
    let device = device[0].clone();
    let keep = |v: &Value, fields: &[&str]| -> Value {
        fields
            .iter()
            .map(|f| (f.to_string(), v[*f].clone()))
            .collect()
    };
    serde_json::json!({
        "device": keep(&device, &["ifindex", "address", "mtu", "flags", "linkinfo"]),
        "routes": routes(ns),
        "fdb": fdb(ns).iter().map(|e| keep(e, &["mac", "dst", "state", "flags"])).collect::<Vec<_>>(),
        "neigh": neighbours(ns).iter().map(|e| keep(e, &["dst", "lladdr", "state"])).collect::<Vec<_>>(),
        "addr": json(ns, &["ip", "-j", "addr", "show", "dev", VXLAN])[0]["addr_info"].clone(),
    })
}

#[test]
fn vxlan_connects_containers_across_hosts() {
    if !strait_testbeds::require_root("vxlan_connects_containers_across_hosts") {
        return;
    }
    let topo = build(&[
        ("10.99.0.1/24", "fd99::1/64"),
        ("10.99.0.2/24", "fd99::2/64"),
        ("10.99.0.3/24", "fd99::3/64"),
    ]);
    let [h1, h2, h3] = &topo.hosts[..] else {
        unreachable!()
    };
    // h2 has a leftover device with another VNI: it must be recreated, not adopted.
    h2.ns.exec_ok(&[
        "ip",
        "link",
        "add",
        VXLAN,
        "type",
        "vxlan",
        "id",
        "7",
        "dstport",
        "4789",
        "local",
        "10.99.0.2",
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    rt.block_on(async {
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("store.redb"))
            .await
            .expect("store");
        for h in &topo.hosts {
            publish(&store, h, FabricMode::Vxlan).await;
        }
        let mut fabrics = Vec::new();
        for h in &topo.hosts {
            fabrics.push(start(&store, h, FabricMode::Vxlan).await);
        }
        // Per host: two own blackholes, two routes to each of two peers.
        for f in &fabrics {
            let r = wait_for(&f.handle, 1, "converged", |r| converged_with(r, 6)).await;
            assert!(r.warnings.is_empty(), "{:?}", r.warnings);
            // Two tunnel addresses, two blackholes, and per peer an FDB entry, two
            // neighbours and two routes.
            assert_eq!(r.count(EntryState::Ok), 2 + 2 + 2 * (1 + 2 + 2), "{r:#?}");
        }

        let device = json(&h2.ns, &["ip", "-j", "-d", "link", "show", VXLAN]);
        let info = &device[0]["linkinfo"]["info_data"];
        assert_eq!(
            info["id"], 4096,
            "recreated with the configured VNI: {device}"
        );
        assert_eq!(info["learning"], false);
        assert_eq!(device[0]["mtu"], 1450, "underlay 1500 − 50");
        assert_eq!(device[0]["address"], format_mac(&vtep_mac("h2")));

        // Containers reach each other, both families, both directions.
        for (a, b) in [(h1, h2), (h2, h3), (h3, h1)] {
            assert!(
                ping(&a.container, &b.container_v4()),
                "{} → {}",
                a.node,
                b.node
            );
            assert!(
                ping(&b.container, &a.container_v4()),
                "{} → {}",
                b.node,
                a.node
            );
            assert!(
                ping(&a.container, &b.container_v6()),
                "{} → {} v6",
                a.node,
                b.node
            );
        }

        // A full-size packet for the overlay passes; one byte more than the overlay
        // carries is answered with "fragmentation needed" (path MTU discovery works),
        // not silently dropped.
        let full = h1.container.exec(&[
            "ping",
            "-c1",
            "-W1",
            "-M",
            "do",
            "-s",
            "1422",
            &h2.container_v4(),
        ]);
        assert!(full.status.success(), "1450-byte packet: {full:?}");
        let big = h1.container.exec(&[
            "ping",
            "-c1",
            "-W1",
            "-M",
            "do",
            "-s",
            "1423",
            &h2.container_v4(),
        ]);
        let out = String::from_utf8_lossy(&big.stdout).to_string()
            + &String::from_utf8_lossy(&big.stderr);
        assert!(!big.status.success(), "1451 bytes cannot pass: {out}");
        assert!(
            out.contains("Frag needed") && out.contains("1450"),
            "an ICMP frag-needed with the overlay MTU, not a silent drop: {out}"
        );

        // Planted by hand on h1: strait-owned stale state goes, everything else stays.
        let ns = &h1.ns;
        ns.exec_ok(&[
            "ip",
            "route",
            "add",
            "10.77.0.0/24",
            "via",
            "10.244.2.1",
            "dev",
            VXLAN,
            "onlink",
            "proto",
            "83",
        ]);
        ns.exec_ok(&[
            "ip",
            "route",
            "add",
            "blackhole",
            "10.79.0.0/24",
            "proto",
            "83",
        ]);
        ns.exec_ok(&[
            "ip",
            "route",
            "add",
            "10.78.0.0/24",
            "via",
            "10.99.0.2",
            "dev",
            "eth0",
            "proto",
            "static",
        ]);
        ns.exec_ok(&[
            "bridge",
            "fdb",
            "append",
            "00:00:00:00:00:00",
            "dst",
            "10.99.0.77",
            "dev",
            VXLAN,
        ]);
        ns.exec_ok(&[
            "ip",
            "neigh",
            "add",
            "10.244.77.1",
            "lladdr",
            "0e:00:00:00:00:77",
            "dev",
            VXLAN,
            "nud",
            "permanent",
        ]);
        let before = fabrics[0].handle.reconciles();
        let r = wait_for(&fabrics[0].handle, before + 2, "stale state removed", |r| {
            converged_with(r, 6)
        })
        .await;
        assert!(r.count(EntryState::Stale) == 0);
        assert!(
            !has_route(ns, "10.77.0.0/24"),
            "stale proto-83 route removed"
        );
        assert!(
            !has_route(ns, "10.79.0.0/24"),
            "stale proto-83 blackhole removed"
        );
        assert!(
            has_route(ns, "10.78.0.0/24"),
            "a static route is not strait's"
        );
        assert!(
            has_route(ns, &h1.container_v4()),
            "container host route kept"
        );
        assert!(
            has_route(ns, &h1.container_v6()),
            "container host route kept"
        );
        assert!(!fdb(ns).iter().any(|e| e["dst"] == "10.99.0.77"));
        assert!(!neighbours(ns).iter().any(|e| e["dst"] == "10.244.77.1"));
        assert!(ping(&h1.container, &h2.container_v4()));

        // Restart h1's fabric: the kernel is adopted as it is.
        let snapshot = kernel_snapshot(&h1.ns);
        let first = fabrics.remove(0);
        first.stop().await;
        assert_eq!(
            kernel_snapshot(&h1.ns),
            snapshot,
            "stopping flushes nothing"
        );
        let again = start(&store, h1, FabricMode::Vxlan).await;
        wait_for(&again.handle, 2, "restarted fabric in sync", |r| {
            converged_with(r, 6)
        })
        .await;
        assert_eq!(
            kernel_snapshot(&h1.ns),
            snapshot,
            "a restart changes nothing"
        );
        fabrics.insert(0, again);

        // h3 leaves: its record goes (its blocks stay, as on a node's death), and the
        // others drop its FDB entry, neighbours and routes.
        store.delete(&node_key(&h3.node)).await.expect("delete");
        for f in &fabrics[..2] {
            wait_for(&f.handle, 1, "h3 forgotten", |r| converged_with(r, 4)).await;
        }
        for h in [h1, h2] {
            let mac = format_mac(&vtep_mac("h3"));
            assert!(
                !fdb(&h.ns).iter().any(|e| e["mac"] == mac.as_str()),
                "{}",
                h.node
            );
            assert!(!neighbours(&h.ns).iter().any(|e| e["dst"] == "10.244.3.1"));
            assert!(!has_route(&h.ns, "10.244.3.0/26"));
            assert!(!has_route(&h.ns, "fd00:244:3::/122"));
        }
        assert!(
            ping(&h1.container, &h2.container_v6()),
            "the others still talk"
        );

        for f in fabrics {
            f.stop().await;
        }
    });
}

#[test]
fn host_gw_routes_via_peers_on_the_segment_only() {
    if !strait_testbeds::require_root("host_gw_routes_via_peers_on_the_segment_only") {
        return;
    }
    // h3 sits on the same bridge but in another subnet: not directly routable.
    let topo = build(&[
        ("10.99.0.1/24", "fd99::1/64"),
        ("10.99.0.2/24", "fd99::2/64"),
        ("10.98.0.3/24", "fd98::3/64"),
    ]);
    let [h1, h2, h3] = &topo.hosts[..] else {
        unreachable!()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    rt.block_on(async {
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("store.redb"))
            .await
            .expect("store");
        for h in &topo.hosts {
            publish(&store, h, FabricMode::HostGw).await;
        }
        let f1 = start(&store, h1, FabricMode::HostGw).await;
        let f2 = start(&store, h2, FabricMode::HostGw).await;
        // h1: two own blackholes and two routes to h2; h3 gets none, with a warning.
        let r = wait_for(&f1.handle, 1, "h1 converged", |r| converged_with(r, 4)).await;
        wait_for(&f2.handle, 1, "h2 converged", |r| converged_with(r, 4)).await;
        assert!(r.device.is_none(), "host-gw makes no VXLAN device");
        let about_h3: Vec<_> = r
            .warnings
            .iter()
            .filter(|w| w.node.as_deref() == Some("h3"))
            .collect();
        assert_eq!(about_h3.len(), 2, "one per family: {:?}", r.warnings);
        assert!(about_h3[0].message.contains("no connected subnet"));
        assert!(!has_route(&h1.ns, "10.244.3.0/26"));
        assert!(!has_route(&h1.ns, "fd00:244:3::/122"));

        let to_h2 = routes(&h1.ns)
            .into_iter()
            .find(|r| r["dst"] == "10.244.2.0/26")
            .expect("route to h2's block");
        assert_eq!(to_h2["gateway"], "10.99.0.2");
        assert_eq!(to_h2["dev"], "eth0");
        assert_eq!(to_h2["protocol"], "83");
        assert!(ping(&h1.container, &h2.container_v4()));
        assert!(ping(&h2.container, &h1.container_v6()));
        assert!(!h1.container.ping(&h3.container_v4()), "no route, no reach");

        f1.stop().await;
        f2.stop().await;
    });
}

/// A follower of the view (IPsec's steering) comes first: while it has not applied
/// the view with a peer's block, the fabric does not route that block; once it says it
/// did, the route follows.
#[test]
fn a_follower_of_the_view_is_waited_for_before_a_block_is_routed() {
    if !strait_testbeds::require_root(
        "a_follower_of_the_view_is_waited_for_before_a_block_is_routed",
    ) {
        return;
    }
    let topo = build(&[
        ("10.99.0.1/24", "fd99::1/64"),
        ("10.99.0.2/24", "fd99::2/64"),
    ]);
    let [h1, h2] = &topo.hosts[..] else {
        unreachable!()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    rt.block_on(async {
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("store.redb"))
            .await
            .expect("store");
        for h in &topo.hosts {
            publish(&store, h, FabricMode::HostGw).await;
        }
        let netns = NetNs::open(h1.ns.path()).expect("open host netns");
        let netlink = Netlink::open_in(&netns).await.expect("netlink in host");
        let underlay = Underlay {
            iface: Some("eth0".into()),
            v4: Some(h1.underlay_v4),
            v6: Some(h1.underlay_v6),
        };
        let fabric = Fabric::new(
            store.clone(),
            netlink,
            FabricConfig::new(h1.node.clone(), FabricMode::HostGw, underlay),
        );
        let ViewFollower { mut views, ack } = fabric.handle().follow_view();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(fabric.run(rx));

        // The fabric has listed both nodes and published them, but nobody applied it.
        let view = views
            .wait_for(|v| v.as_ref().is_some_and(|v| v.blocks.len() == 4))
            .await
            .expect("a view")
            .clone()
            .expect("listed");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            !has_route(&h1.ns, &h2.block_v4().to_string()),
            "routed before the follower applied the view"
        );
        // Applied: the route comes, with the one the fabric published meanwhile.
        ack.applied(&view);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !has_route(&h1.ns, &h2.block_v4().to_string()) {
            assert!(Instant::now() < deadline, "routed once applied");
            if views.has_changed().unwrap_or(false) {
                let latest = views.borrow_and_update().clone().expect("listed");
                ack.applied(&latest);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(has_route(&h1.ns, &h2.block_v6().to_string()));
        stop.send(true).expect("fabric alive");
        task.await.expect("fabric task");
    });
}
