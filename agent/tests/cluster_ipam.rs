//! Cluster IPAM on a private etcd (no root needed): many nodes, each with its own etcd
//! connection, allocating from one pool at once; borrowing and strict affinity at the
//! block limit; a node that comes back keeps its blocks; the blocks of a departed node
//! are reclaimed after the grace period — only empty ones, by one leader at a time.
//!
//! Without an `etcd` binary every test prints `SKIP` and passes, unless
//! `STRAIT_REQUIRE_PRIVILEGED=1` (CI) makes that a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use strait_api::{FabricMode, NodeRecord};
use strait_testbeds::etcd::{Etcd, require_etcd};
use straitd::ipam::reclaim::{ReclaimConfig, Reclaimer, RoundReport, leader_key};
use straitd::ipam::tunnel::ensure_tunnel_addresses;
use straitd::ipam::{
    AllocRequest, Block, Handle, Ipam, IpamConfig, IpamError, keys, tunnel_handle,
};
use straitd::node::{Keepalive, Registry, RegistryConfig, last_record_key};
use straitd::store::Store;
use straitd::store::etcd::{EtcdOptions, EtcdStore};

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn connect(etcd: &Etcd) -> Arc<dyn Store> {
    let options = EtcdOptions {
        dial_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(10),
        ..EtcdOptions::default()
    };
    EtcdStore::connect(&etcd.endpoints(), options)
        .await
        .expect("connect to the test etcd")
}

fn config(pool: &str, v4_block: u8) -> IpamConfig {
    IpamConfig {
        pools: vec![pool.parse().unwrap()],
        disabled_pools: Vec::new(),
        block_prefix_v4: v4_block,
        block_prefix_v6: 122,
        max_blocks_per_node: None,
        strict_affinity: false,
    }
}

/// The IPAM of `node`, on a connection of its own (as each agent has).
async fn node(etcd: &Etcd, node: &str, cfg: IpamConfig) -> Arc<Ipam> {
    Arc::new(
        Ipam::new(connect(etcd).await, node.to_string(), cfg)
            .await
            .expect("valid IPAM config"),
    )
}

fn req(handle: &str) -> AllocRequest {
    AllocRequest {
        handle: handle.to_string(),
        network: "net0".into(),
        container_id: handle.to_string(),
        ifname: "eth0".into(),
        netns: format!("/run/netns/{handle}"),
        ..Default::default()
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

async fn blocks(store: &Arc<dyn Store>) -> BTreeMap<IpNet, Block> {
    store
        .range(&keys::blocks_prefix())
        .await
        .unwrap()
        .kvs
        .iter()
        .map(|kv| {
            let b: Block = serde_json::from_slice(&kv.value).unwrap();
            (b.cidr, b)
        })
        .collect()
}

async fn handles(store: &Arc<dyn Store>) -> BTreeMap<String, Handle> {
    store
        .range(&keys::handles_prefix())
        .await
        .unwrap()
        .kvs
        .iter()
        .map(|kv| {
            let h: Handle = serde_json::from_slice(&kv.value).unwrap();
            (h.handle.clone(), h)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_race_for_five_thousand_addresses() {
    if !require_etcd("ten_nodes_race_for_five_thousand_addresses") {
        return;
    }
    const NODES: usize = 10;
    const EACH: usize = 500;
    let etcd = blocking(Etcd::start);
    let mut ipams = Vec::new();
    for n in 0..NODES {
        ipams.push(node(&etcd, &format!("n{n}"), config("10.64.0.0/16", 26)).await);
    }

    // Every node allocates all of its addresses at once, all nodes at the same time.
    let mut tasks = Vec::new();
    for (n, ipam) in ipams.iter().enumerate() {
        for i in 0..EACH {
            let ipam = ipam.clone();
            tasks.push(tokio::spawn(async move {
                let h = format!("n{n}.c{i}.eth0");
                let a = ipam.allocate(req(&h)).await;
                (h, a)
            }));
        }
    }
    let mut given: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for t in tasks {
        let (h, a) = t.await.unwrap();
        let a = a.unwrap_or_else(|e| panic!("allocation of {h} failed: {e}"));
        assert_eq!(a.ips.len(), 1, "{h}: one IPv4 address");
        given.insert(h, a.ips);
    }
    assert_eq!(given.len(), NODES * EACH);
    let distinct: BTreeSet<IpAddr> = given.values().flatten().copied().collect();
    assert_eq!(distinct.len(), NODES * EACH, "an address was given twice");

    // None lost: every handle holds exactly what its caller was told, and every
    // block allocation names a handle that holds that very address.
    let store = connect(&etcd).await;
    let stored = handles(&store).await;
    assert_eq!(stored.len(), NODES * EACH);
    for (h, ips) in &given {
        assert_eq!(&stored[h].ips, ips, "handle {h}");
    }
    let all = blocks(&store).await;
    let mut in_blocks = 0;
    for b in all.values() {
        for (&ordinal, holder) in &b.allocations {
            let ip = b.ip(ordinal).unwrap();
            let h = stored
                .get(holder)
                .unwrap_or_else(|| panic!("{ip} in {} names missing handle {holder}", b.cidr));
            assert_eq!(h.ips, vec![ip], "{ip} in {} vs handle {holder}", b.cidr);
            in_blocks += 1;
        }
    }
    assert_eq!(in_blocks, NODES * EACH);
    // Nodes allocate from blocks of their own (only a node's last block is partial,
    // so none needs to borrow): each address is in a block affine to its node.
    for (h, ips) in &given {
        let n = h.split('.').next().unwrap();
        let b = all.values().find(|b| b.cidr.contains(&ips[0])).unwrap();
        assert_eq!(
            b.affinity.as_deref(),
            Some(n),
            "{h} got {} from {}",
            ips[0],
            b.cidr
        );
    }
    let report = ipams[0].check(Duration::ZERO, &|_| Ok(())).await.unwrap();
    assert!(report.issues.is_empty(), "{:?}", report.issues);

    // Release everything, all at once: every block ends empty, no handle is left.
    let mut tasks = Vec::new();
    for h in given.keys() {
        let n: usize = h[1..h.find('.').unwrap()].parse().unwrap();
        let ipam = ipams[n].clone();
        let h = h.clone();
        tasks.push(tokio::spawn(async move { (ipam.release(&h).await, h) }));
    }
    for t in tasks {
        let (released, h) = t.await.unwrap();
        assert_eq!(released.unwrap(), given[&h], "release of {h}");
    }
    assert!(handles(&store).await.is_empty());
    let after = blocks(&store).await;
    assert_eq!(
        after.len(),
        all.len(),
        "blocks keep their affinity when emptied"
    );
    for b in after.values() {
        assert!(
            b.allocations.is_empty(),
            "{} still holds {:?}",
            b.cidr,
            b.allocations
        );
        assert!(b.affinity.is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borrowing_at_the_block_limit_and_strict_affinity() {
    if !require_etcd("borrowing_at_the_block_limit_and_strict_affinity") {
        return;
    }
    let etcd = blocking(Etcd::start);
    let limited = IpamConfig {
        max_blocks_per_node: Some(1),
        ..config("10.65.0.0/24", 28)
    };
    let lender = node(&etcd, "lender", limited.clone()).await;
    let borrower = node(&etcd, "borrower", limited.clone()).await;
    let strict = node(
        &etcd,
        "strict",
        IpamConfig {
            strict_affinity: true,
            ..limited.clone()
        },
    )
    .await;

    let lent = lender.allocate(req("l0")).await.unwrap().ips[0];
    let lender_block = net("10.65.0.0/28");
    assert!(lender_block.contains(&lent));

    // The borrower fills its one block (16 addresses)...
    let mut own = BTreeSet::new();
    for i in 0..16 {
        own.insert(borrower.allocate(req(&format!("b{i}"))).await.unwrap().ips[0]);
    }
    let own_block = net("10.65.0.16/28");
    assert!(own.iter().all(|ip| own_block.contains(ip)), "{own:?}");
    // ...and may claim no other: it borrows from the lender's block, which stays the
    // lender's.
    let borrowed = borrower.allocate(req("b16")).await.unwrap().ips[0];
    assert!(lender_block.contains(&borrowed), "{borrowed}");
    let store = connect(&etcd).await;
    let all = blocks(&store).await;
    assert_eq!(all[&lender_block].affinity.as_deref(), Some("lender"));
    assert_eq!(all[&lender_block].holder(borrowed), Some("b16"));
    assert_eq!(
        all.values().filter(|b| b.is_affine_to("borrower")).count(),
        1,
        "the borrower holds no second block"
    );

    // Under strict affinity the same situation is a refusal, and nothing is written.
    for i in 0..16 {
        strict.allocate(req(&format!("s{i}"))).await.unwrap();
    }
    let before = blocks(&store).await;
    match strict.allocate(req("s16")).await {
        Err(IpamError::Exhausted { reason, .. }) => {
            assert!(reason.contains("strict_affinity"), "{reason}")
        }
        other => panic!("expected exhaustion under strict affinity, got {other:?}"),
    }
    assert_eq!(blocks(&store).await, before);
    assert!(!handles(&store).await.contains_key("s16"));
}

/// A registered agent with a reclaimer, as the daemon runs them.
struct Agent {
    registry: Arc<Registry>,
    keepalive: Option<Keepalive>,
    reclaimer: Reclaimer,
}

async fn agent(etcd: &Etcd, name: &str, cfg: IpamConfig, grace: Duration) -> Agent {
    let store = connect(etcd).await;
    let ipam = Arc::new(
        Ipam::new(store.clone(), name.to_string(), cfg)
            .await
            .unwrap(),
    );
    let registry = Registry::new(
        store,
        RegistryConfig {
            lease_ttl: Duration::from_secs(5),
        },
        NodeRecord {
            name: name.into(),
            underlay_v4: None,
            underlay_v6: None,
            fabric: FabricMode::None,
            vtep_mac: None,
            vxlan_vni: None,
            vxlan_port: None,
            tunnel_v4: None,
            tunnel_v6: None,
            agent_version: "test".into(),
            started: 0,
            bgp: None,
            site: strait_api::ipsec::DEFAULT_SITE.into(),
            ipsec: None,
        },
    );
    registry.register().await.unwrap();
    let keepalive = Some(registry.spawn());
    let reclaimer = Reclaimer::new(
        ipam,
        registry.subscribe_lease(),
        ReclaimConfig {
            grace,
            interval: Duration::from_secs(3600),
        },
    );
    Agent {
        registry,
        keepalive,
        reclaimer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_comes_back_keeps_its_blocks() {
    if !require_etcd("a_node_that_comes_back_keeps_its_blocks") {
        return;
    }
    let etcd = blocking(Etcd::start);
    let cfg = config("10.66.0.0/24", 28);
    let first = net("10.66.0.0/28");
    {
        let gone = node(&etcd, "gone", cfg.clone()).await;
        for i in 0..3 {
            let ip = gone.allocate(req(&format!("g{i}"))).await.unwrap().ips[0];
            assert!(first.contains(&ip));
        }
        // Its containers go, then the node: the block is empty and nobody's alive.
        for i in 0..3 {
            gone.release(&format!("g{i}")).await.unwrap();
        }
    }
    // Another (live) node allocates meanwhile and claims a block of its own.
    let _other_agent = agent(&etcd, "other", cfg.clone(), Duration::from_secs(3600)).await;
    let other = node(&etcd, "other", cfg.clone()).await;
    let ip = other.allocate(req("o0")).await.unwrap().ips[0];
    assert!(
        !first.contains(&ip),
        "{ip} taken from the departed node's block"
    );
    // The elected reclaimer sees the departed node but waits out its grace.
    let mut leader = agent(&etcd, "leader", cfg.clone(), Duration::from_secs(3600)).await;
    let report = leader.reclaimer.round().await.unwrap();
    assert!(report.leader);
    assert_eq!(report.waiting, ["gone"]);
    assert!(report.reclaimed.is_empty());

    // The node comes back (a new agent, fresh cache) and uses its block again.
    let back = node(&etcd, "gone", cfg).await;
    let ip = back.allocate(req("g3")).await.unwrap().ips[0];
    assert!(
        first.contains(&ip),
        "{ip} is not from the node's own block {first}"
    );
    let store = connect(&etcd).await;
    assert_eq!(
        blocks(&store).await[&first].affinity.as_deref(),
        Some("gone")
    );
}

/// Runs one round on both reclaimers at once; returns (a's, b's) reports.
async fn both(a: &mut Agent, b: &mut Agent) -> (RoundReport, RoundReport) {
    let (ra, rb) = tokio::join!(a.reclaimer.round(), b.reclaimer.round());
    (ra.unwrap(), rb.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_after_grace_only_empty_blocks_by_one_leader() {
    if !require_etcd("reclaim_after_grace_only_empty_blocks_by_one_leader") {
        return;
    }
    const GRACE: Duration = Duration::from_secs(2);
    let etcd = blocking(Etcd::start);
    let cfg = config("10.67.0.0/24", 28);
    let (b1, b2) = (net("10.67.0.0/28"), net("10.67.0.16/28"));

    // A node that had a VXLAN tunnel address and containers in two blocks; all of its
    // containers but one go, then the node (it never registers again).
    let dead = node(&etcd, "dead", cfg.clone()).await;
    let tunnel = ensure_tunnel_addresses(&dead).await.unwrap();
    assert!(b1.contains(&IpAddr::from(tunnel.v4.unwrap())));
    assert_eq!(
        ensure_tunnel_addresses(&dead).await.unwrap(),
        tunnel,
        "tunnel addresses are allocated once"
    );
    let mut last = None;
    for i in 0..15 {
        last = Some(dead.allocate(req(&format!("d{i}"))).await.unwrap().ips[0]);
    }
    let survivor = last.unwrap();
    assert!(b2.contains(&survivor), "{survivor}");
    for i in 0..14 {
        dead.release(&format!("d{i}")).await.unwrap();
    }
    drop(dead);

    let mut r1 = agent(&etcd, "r1", cfg.clone(), GRACE).await;
    let mut r2 = agent(&etcd, "r2", cfg.clone(), GRACE).await;
    let store = connect(&etcd).await;

    // First rounds: one leader; the departed node is within its grace.
    let (a, b) = both(&mut r1, &mut r2).await;
    assert!(a.leader != b.leader, "exactly one leader: {a:?} {b:?}");
    let lead = if a.leader { &a } else { &b };
    assert_eq!(lead.waiting, ["dead"]);
    assert!(lead.reclaimed.is_empty() && lead.released_tunnels.is_empty());

    tokio::time::sleep(GRACE + Duration::from_millis(500)).await;

    // After the grace: the tunnel handle is released, the block it emptied is
    // reclaimed, the block where a container still holds an address is kept.
    let (a, b) = both(&mut r1, &mut r2).await;
    assert!(a.leader != b.leader, "exactly one leader: {a:?} {b:?}");
    let (lead, follower, r1_leads) = if a.leader {
        (&a, &b, true)
    } else {
        (&b, &a, false)
    };
    assert_eq!(
        follower,
        &RoundReport::default(),
        "the follower does nothing"
    );
    assert_eq!(lead.released_tunnels, [tunnel_handle("dead")]);
    assert_eq!(lead.reclaimed, [(b1, "dead".to_string())]);
    assert_eq!(lead.kept.len(), 1, "{:?}", lead.kept);
    assert_eq!(lead.kept[0].0, b2);
    let all = blocks(&store).await;
    assert!(!all.contains_key(&b1), "the empty block lost its affinity");
    assert_eq!(all[&b2].affinity.as_deref(), Some("dead"));
    assert_eq!(all[&b2].holder(survivor), Some("d14"));
    let hs = handles(&store).await;
    assert!(!hs.contains_key(&tunnel_handle("dead")));
    assert_eq!(
        hs["d14"].ips,
        vec![survivor],
        "the container's address is untouched"
    );

    // The leader dies; the other agent takes over with a clock of its own.
    let (old, new) = if r1_leads {
        (&mut r1, &mut r2)
    } else {
        (&mut r2, &mut r1)
    };
    old.keepalive = None;
    let lease = old.registry.lease().unwrap();
    store.lease_revoke(lease).await.unwrap();
    assert!(store.get(&leader_key()).await.unwrap().is_none());
    // The last container goes (its DEL served by another node: releases work from
    // anywhere): the kept block is empty now.
    let cleanup = node(&etcd, "cleanup", cfg.clone()).await;
    assert_eq!(cleanup.release("d14").await.unwrap(), vec![survivor]);

    let report = old.reclaimer.round().await.unwrap();
    assert!(
        !report.leader,
        "a reclaimer without a live lease never leads"
    );
    let report = new.reclaimer.round().await.unwrap();
    assert!(report.leader);
    // The dead leader waits too: its last record (what other hosts route it by) is
    // forgotten once its grace is over (issue 19, item 10).
    assert_eq!(
        report.waiting,
        ["dead", old.registry.node()],
        "a new leader starts its own clock"
    );
    assert!(report.reclaimed.is_empty());
    let holder = store.get(&leader_key()).await.unwrap().unwrap();
    assert_eq!(holder.value, new.registry.node().as_bytes());
    assert_eq!(holder.lease, new.registry.lease());

    tokio::time::sleep(GRACE + Duration::from_millis(500)).await;
    let report = new.reclaimer.round().await.unwrap();
    assert_eq!(report.reclaimed, [(b2, "dead".to_string())]);
    assert_eq!(report.forgotten, [old.registry.node()]);
    assert!(
        store
            .get(&last_record_key(old.registry.node()))
            .await
            .unwrap()
            .is_none()
    );
    assert!(blocks(&store).await.is_empty());
    // A later round has nothing left to do.
    let report = new.reclaimer.round().await.unwrap();
    assert!(report.leader && report.waiting.is_empty() && report.reclaimed.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimer_never_takes_blocks_of_a_live_node() {
    if !require_etcd("a_reclaimer_never_takes_blocks_of_a_live_node") {
        return;
    }
    let etcd = blocking(Etcd::start);
    let cfg = config("10.68.0.0/24", 28);
    let mut live = agent(&etcd, "live", cfg.clone(), Duration::ZERO).await;
    let ipam = node(&etcd, "live", cfg.clone()).await;
    ipam.allocate(req("x")).await.unwrap();
    ipam.release("x").await.unwrap();
    let mut other = agent(&etcd, "other", cfg, Duration::ZERO).await;
    for _ in 0..2 {
        let (a, b) = both(&mut live, &mut other).await;
        let lead = if a.leader { a } else { b };
        assert!(
            lead.waiting.is_empty() && lead.reclaimed.is_empty(),
            "{lead:?}"
        );
    }
    let store = connect(&etcd).await;
    assert_eq!(
        blocks(&store).await[&net("10.68.0.0/28")]
            .affinity
            .as_deref(),
        Some("live")
    );
}
