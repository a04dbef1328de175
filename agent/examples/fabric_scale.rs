//! How fast the VXLAN fabric programs 1 000 remote nodes, beside iproute2 doing the
//! same in the same run. A benchmark, not a test: it prints figures and asserts none.
//!
//! `cargo run --release -p straitd --example fabric_scale [-- NODES]` as root. Each
//! scenario gets a fresh namespace (named with a unique `stt…` prefix, deleted at the
//! end) with a veth pair as underlay interface; no packet leaves it.
//!
//! 1. cold start: the store already holds NODES records and one block each; time from
//!    starting the `Fabric` until the kernel holds every FDB entry, neighbour and
//!    route;
//! 2. burst: the fabric is running on an empty cluster (its own record only), then
//!    the NODES records and blocks are put one key at a time; time from the first put
//!    until the kernel is complete, and how many reconciliations the debounce turned
//!    the burst into;
//! 3. steady state: one reconciliation that finds everything in place;
//! 4. baseline: the same entries by `ip -batch` and `bridge -batch` into a fresh
//!    namespace with a VXLAN device made by `ip`;
//! 5. the whole agent: a real `straitd --fabric vxlan` on a private etcd (both inside
//!    a namespace), NODES records and blocks put into etcd one key at a time; time
//!    until the agent's kernel holds them all, and the agent's VmRSS before and after.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use strait_api::{FabricMode, NodeRecord};
use strait_testbeds::netns::Netns;
use straitd::fabric::desired::ClusterView;
use straitd::fabric::{Fabric, FabricConfig, Underlay, VXLAN_DEVICE, reconcile, vtep_mac};
use straitd::ipam::{Block, keys};
use straitd::netlink::{Netlink, RTPROT_STRAIT, format_mac};
use straitd::netns::NetNs;
use straitd::node::node_key;
use straitd::store::embedded::EmbeddedStore;
use straitd::store::{Store, Txn, TxnOp};
use tokio::sync::watch;

const OWN: &str = "bench0";

fn underlay_of(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a64_0000 + i) // 10.100.0.0/16
}

fn block_of(i: u32) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0ac8_0000 + i * 64), 26).expect("block"))
}

fn tunnel_of(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0ac8_0000 + i * 64 + 1)
}

fn record(i: u32) -> NodeRecord {
    let name = if i == 0 {
        OWN.to_string()
    } else {
        format!("bench{i}")
    };
    NodeRecord {
        underlay_v4: Some(underlay_of(i)),
        underlay_v6: None,
        fabric: FabricMode::Vxlan,
        vtep_mac: Some(format_mac(&vtep_mac(&name))),
        vxlan_vni: Some(4096),
        vxlan_port: Some(4789),
        tunnel_v4: Some(tunnel_of(i)),
        tunnel_v6: None,
        agent_version: "bench".into(),
        started: 0,
        bgp: None,
        site: strait_api::ipsec::DEFAULT_SITE.into(),
        ipsec: None,
        name,
    }
}

/// Puts records and blocks of nodes `0..=nodes` in transactions of 500 writes.
async fn write_cluster(store: &Arc<dyn Store>, nodes: u32) {
    let mut ops = Vec::new();
    for i in 0..=nodes {
        let r = record(i);
        let block = Block::new(block_of(i), Some(r.name.clone()), 0);
        ops.push(TxnOp::Put {
            key: node_key(&r.name),
            value: serde_json::to_vec(&r).expect("json"),
            lease: None,
        });
        ops.push(TxnOp::Put {
            key: keys::block(&block.cidr),
            value: serde_json::to_vec(&block).expect("json"),
            lease: None,
        });
    }
    for chunk in ops.chunks(500) {
        store
            .txn(Txn::new().and_then(chunk.to_vec()))
            .await
            .expect("txn");
    }
}

/// Puts each record and block on its own (as 1 000 agents starting would), 64 at a
/// time, so the fabric sees a stream of single-key revisions.
async fn put_one_by_one(store: &Arc<dyn Store>, nodes: u32) {
    use futures::StreamExt;
    let mut writes = Vec::new();
    for i in 1..=nodes {
        let r = record(i);
        let block = Block::new(block_of(i), Some(r.name.clone()), 0);
        writes.push((node_key(&r.name), serde_json::to_vec(&r).expect("json")));
        writes.push((
            keys::block(&block.cidr),
            serde_json::to_vec(&block).expect("json"),
        ));
    }
    futures::stream::iter(writes)
        .map(|(key, value)| async move { store.put(&key, value, None).await.expect("put") })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
}

fn host(prefix: &str, name: &str) -> Netns {
    let ns = Netns::new(format!("{prefix}{name}"));
    // A veth pair stands in for the underlay NIC (this kernel has no dummy links).
    ns.exec_ok(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ]);
    ns.exec_ok(&["ip", "addr", "add", "10.100.0.0/16", "dev", "eth0"]);
    ns.exec_ok(&["ip", "link", "set", "eth1", "up"]);
    ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
    ns
}

fn config() -> FabricConfig {
    let mut cfg = FabricConfig::new(
        OWN,
        FabricMode::Vxlan,
        Underlay {
            iface: Some("eth0".into()),
            v4: Some(underlay_of(0)),
            v6: None,
        },
    );
    // No periodic pass in the window measured.
    cfg.resync = Duration::from_secs(600);
    cfg
}

/// (FDB entries, neighbours, fabric routes) in the kernel now.
async fn counts(nl: &Netlink) -> (usize, usize, usize) {
    let Ok(Some(device)) = nl.link_by_name(VXLAN_DEVICE).await else {
        return (0, 0, 0);
    };
    let fdb = nl.fdb(device.index).await.map(|f| f.len()).unwrap_or(0);
    let neigh = nl
        .neighbours(device.index)
        .await
        .map(|n| n.len())
        .unwrap_or(0);
    let routes = nl
        .routes(Some(RTPROT_STRAIT))
        .await
        .map(|r| r.iter().filter(|r| r.gateway.is_some()).count())
        .unwrap_or(0);
    (fdb, neigh, routes)
}

/// Waits until the kernel holds `nodes` of each; returns when it did.
async fn until_complete(nl: &Netlink, nodes: usize) -> Instant {
    loop {
        let (f, n, r) = counts(nl).await;
        if f >= nodes && n >= nodes && r >= nodes {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn rss_kib() -> u64 {
    rss_of("self")
}

/// VmRSS of `/proc/<pid>/status`, KiB.
fn rss_of(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

async fn open_store(dir: &tempfile::TempDir, name: &str) -> Arc<dyn Store> {
    EmbeddedStore::open(&dir.path().join(name))
        .await
        .expect("store")
}

/// Scenario 5: the whole agent. Returns (time to program, time to write, agent VmRSS
/// before, after), or why it could not run.
fn whole_agent(prefix: &str, nodes: u32) -> Result<(Duration, Duration, u64, u64), String> {
    use strait_testbeds::agent::{Agent, AgentOpts};
    use strait_testbeds::etcd::{Etcd, EtcdOpts};
    use straitd::store::etcd::{EtcdOptions, EtcdStore};
    if strait_testbeds::etcd::etcd_binary().is_none() {
        return Err("etcd not installed (Debian package etcd-server)".into());
    }
    let ns = host(prefix, "d");
    ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
    let etcd = Etcd::start_with(EtcdOpts {
        netns: Some(ns.name().to_string()),
        ..EtcdOpts::default()
    });
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut opts = AgentOpts::new(OWN, &["10.200.0.0/16"]);
    opts.extra = vec![
        "--etcd-endpoints".into(),
        etcd.client_url(),
        "--fabric".into(),
        "vxlan".into(),
        "--underlay-iface".into(),
        "eth0".into(),
    ];
    let agent = Agent::start(&ns, dir.path(), opts);
    let pid = agent.pid().ok_or("agent has no PID")?.to_string();
    let endpoints = etcd.endpoints();
    let ns_path = ns.path();
    // The writer and the kernel reader live in the agent's namespace: a thread of
    // their own enters it and runs a runtime there (etcd listens on its loopback).
    let netns = NetNs::open(&ns_path).map_err(|e| e.to_string())?;
    let measured = netns
        .run(move || -> Result<_, String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let store: Arc<dyn Store> = EtcdStore::connect(&endpoints, EtcdOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let nl = Netlink::connect().map_err(|e| e.to_string())?;
                let rss_before = rss_of(&pid);
                let started = Instant::now();
                put_one_by_one(&store, nodes).await;
                let written = started.elapsed();
                let done = until_complete(&nl, nodes as usize).await;
                // Memory once the work is done and the caches are full.
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok((done - started, written, rss_before, rss_of(&pid)))
            })
        })
        .map_err(|e| e.to_string())?;
    drop(agent);
    drop(etcd);
    measured
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    if !strait_testbeds::require_root("fabric_scale") {
        return;
    }
    let nodes: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("NODES is a number"))
        .unwrap_or(1000);
    let prefix = strait_testbeds::unique_prefix();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rss_start = rss_kib();
    println!(
        "fabric_scale: {nodes} remote nodes, one block each ({} kernel entries)",
        nodes * 3
    );

    let (cold, cold_reconciles, steady, steady_changes) = rt.block_on(async {
        // 1. Cold start.
        let ns = host(&prefix, "a");
        let store = open_store(&dir, "a.redb").await;
        write_cluster(&store, nodes).await;
        let nl = Netlink::open_in(&NetNs::open(ns.path()).expect("ns"))
            .await
            .expect("netlink");
        let started = Instant::now();
        let fabric = Fabric::new(store.clone(), nl.clone(), config());
        let handle = fabric.handle();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(fabric.run(rx));
        let done = until_complete(&nl, nodes as usize).await;
        let cold = done - started;
        let cold_reconciles = handle.reconciles();

        // 3. Steady state: everything in place.
        let mut view = ClusterView::default();
        for i in 0..=nodes {
            let r = record(i);
            view.blocks.insert(block_of(i), Some(r.name.clone()));
            view.nodes.insert(r.name.clone(), r);
        }
        let t = Instant::now();
        let pass = reconcile::reconcile(&nl, &config(), &view, true)
            .await
            .expect("steady reconcile");
        let steady = t.elapsed();
        stop.send(true).expect("stop");
        task.await.expect("fabric");
        drop(ns);
        (cold, cold_reconciles, steady, pass.changes)
    });
    let rss_after_cold = rss_kib();

    let (burst, burst_written, burst_reconciles) = rt.block_on(async {
        // 2. Burst into a running fabric.
        let ns = host(&prefix, "b");
        let store = open_store(&dir, "b.redb").await;
        write_cluster(&store, 0).await;
        let nl = Netlink::open_in(&NetNs::open(ns.path()).expect("ns"))
            .await
            .expect("netlink");
        let fabric = Fabric::new(store.clone(), nl.clone(), config());
        let handle = fabric.handle();
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(fabric.run(rx));
        while handle.reconciles() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let before = handle.reconciles();
        let started = Instant::now();
        put_one_by_one(&store, nodes).await;
        let written = started.elapsed();
        let done = until_complete(&nl, nodes as usize).await;
        // Let a reconciliation still pending from the burst finish before counting.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reconciles = handle.reconciles() - before;
        stop.send(true).expect("stop");
        task.await.expect("fabric");
        drop(ns);
        (done - started, written, reconciles)
    });
    let rss_end = rss_kib();

    // 4. Baseline: iproute2.
    let ns = host(&prefix, "c");
    ns.exec_ok(&[
        "ip",
        "link",
        "add",
        VXLAN_DEVICE,
        "type",
        "vxlan",
        "id",
        "4096",
        "dstport",
        "4789",
        "local",
        "10.100.0.0",
        "nolearning",
    ]);
    ns.exec_ok(&["ip", "link", "set", VXLAN_DEVICE, "up"]);
    let mut ip_batch = tempfile::NamedTempFile::new().expect("batch file");
    let mut bridge_batch = tempfile::NamedTempFile::new().expect("batch file");
    for i in 1..=nodes {
        let r = record(i);
        let mac = r.vtep_mac.expect("mac");
        let tunnel = IpAddr::V4(tunnel_of(i));
        writeln!(
            bridge_batch,
            "fdb append {mac} dst {} dev {VXLAN_DEVICE} self permanent",
            underlay_of(i)
        )
        .expect("write");
        writeln!(
            ip_batch,
            "neigh replace {tunnel} lladdr {mac} dev {VXLAN_DEVICE} nud permanent"
        )
        .expect("write");
        writeln!(
            ip_batch,
            "route replace {} via {tunnel} dev {VXLAN_DEVICE} onlink proto 83",
            block_of(i)
        )
        .expect("write");
    }
    let (ip_path, bridge_path) = (
        ip_batch.path().to_string_lossy().into_owned(),
        bridge_batch.path().to_string_lossy().into_owned(),
    );
    let started = Instant::now();
    ns.exec_ok(&["bridge", "-batch", &bridge_path]);
    ns.exec_ok(&["ip", "-batch", &ip_path]);
    let baseline = started.elapsed();
    let check = rt.block_on(async {
        let nl = Netlink::open_in(&NetNs::open(ns.path()).expect("ns"))
            .await
            .expect("netlink");
        counts(&nl).await
    });
    drop(ns);

    let whole = whole_agent(&prefix, nodes);

    println!();
    println!("{:<84} {:>10}", "scenario", "time");
    println!(
        "{:<84} {:>10}",
        format!("strait fabric, cold start ({cold_reconciles} reconciliation(s))"),
        ms(cold)
    );
    println!(
        "{:<84} {:>10}",
        format!(
            "strait fabric, {} single puts (written in {}; {burst_reconciles} reconciliation(s))",
            2 * nodes,
            ms(burst_written)
        ),
        ms(burst)
    );
    println!(
        "{:<84} {:>10}",
        format!("strait fabric, steady-state pass ({steady_changes} changes)"),
        ms(steady)
    );
    println!(
        "{:<84} {:>10}",
        format!(
            "baseline: bridge -batch + ip -batch (kernel: {} fdb, {} neigh, {} routes)",
            check.0, check.1, check.2
        ),
        ms(baseline)
    );
    match &whole {
        Ok((programmed, written, _, _)) => println!(
            "{:<84} {:>10}",
            format!(
                "whole straitd on etcd, {} single puts into etcd (written in {})",
                2 * nodes,
                ms(*written)
            ),
            ms(*programmed)
        ),
        Err(why) => println!("whole straitd on etcd: not run: {why}"),
    }
    println!();
    if let Ok((_, _, before, after)) = &whole {
        println!("straitd VmRSS: {before} KiB before the {nodes} nodes, {after} KiB after");
    }
    println!(
        "VmRSS: {} KiB at start, {} KiB after the cold start, {} KiB at the end \
         (whole process: runtime, two embedded stores, caches)",
        rss_start, rss_after_cold, rss_end
    );
}
