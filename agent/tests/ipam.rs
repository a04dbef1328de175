//! IPAM against the embedded store in a temporary directory: allocation, release,
//! exhaustion, concurrency within one node and across nodes, check/GC, and restart.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use ipnet::IpNet;
use strait_api::IpamIssue;
use straitd::ipam::{AllocRequest, Block, Family, Handle, Ipam, IpamConfig, IpamError, keys};
use straitd::store::embedded::EmbeddedStore;
use straitd::store::{
    KeyValue, LeaseId, RangeResponse, Revision, Store, StoreError, Txn, TxnOp, TxnResponse, Watch,
};
use tempfile::TempDir;

async fn open(dir: &Path) -> Arc<EmbeddedStore> {
    EmbeddedStore::open(&dir.join("store.redb"))
        .await
        .expect("open embedded store")
}

fn config(pools: &[&str], v4: u8, v6: u8) -> IpamConfig {
    IpamConfig {
        pools: pools.iter().map(|p| p.parse().unwrap()).collect(),
        disabled_pools: Vec::new(),
        block_prefix_v4: v4,
        block_prefix_v6: v6,
        max_blocks_per_node: None,
        strict_affinity: false,
    }
}

async fn ipam(store: &Arc<EmbeddedStore>, node: &str, cfg: IpamConfig) -> Ipam {
    let store: Arc<dyn Store> = store.clone();
    Ipam::new(store, node.to_string(), cfg)
        .await
        .expect("valid config")
}

fn req(handle: &str) -> AllocRequest {
    AllocRequest {
        handle: handle.to_string(),
        network: "net0".into(),
        container_id: format!("ctr-{handle}"),
        ifname: "eth0".into(),
        netns: format!("/run/netns/{handle}"),
        ..Default::default()
    }
}

/// Where a test caller keeps its own record of an attachment (as attach does).
fn record_key(handle: &str) -> String {
    format!("/strait/v1/endpoints/node-a/{handle}")
}

/// `req(handle)` whose extra operation writes the caller's record: the addresses given.
fn req_with_record(handle: &str) -> AllocRequest {
    let key = record_key(handle);
    AllocRequest {
        extra: Some(Arc::new(move |ips: &[IpAddr]| {
            vec![TxnOp::Put {
                key: key.clone(),
                value: format!("{ips:?}").into_bytes(),
                lease: None,
            }]
        })),
        ..req(handle)
    }
}

fn delete_record(handle: &str) -> Vec<TxnOp> {
    vec![TxnOp::Delete {
        key: record_key(handle),
    }]
}

/// An IPAM on a counting store.
async fn counted(dir: &Path, cfg: IpamConfig) -> (Arc<Counting>, Arc<Ipam>) {
    let counting = Counting::new(open(dir).await);
    let store: Arc<dyn Store> = counting.clone();
    let ipam = Ipam::new(store, "node-a".into(), cfg).await.unwrap();
    (counting, Arc::new(ipam))
}

/// Starts allocation `blocker` with a slow transaction and waits until it holds the
/// node's lock: what is asked from now on queues up and goes in one batch.
async fn hold_the_lock(
    counting: &Counting,
    ipam: &Arc<Ipam>,
    blocker: AllocRequest,
) -> tokio::task::JoinHandle<()> {
    counting.slow_txns(Duration::from_millis(300));
    let before = counting.txns();
    let ipam = ipam.clone();
    let blocker = tokio::spawn(async move {
        ipam.allocate(blocker).await.unwrap();
    });
    while counting.txns() == before {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    blocker
}

fn static_req(handle: &str, ips: &[&str]) -> AllocRequest {
    AllocRequest {
        static_ips: ips.iter().map(|s| ip(s)).collect(),
        ..req(handle)
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

async fn used(ipam: &Ipam) -> u128 {
    ipam.view()
        .await
        .unwrap()
        .pools
        .iter()
        .map(|p| p.used)
        .sum()
}

#[tokio::test]
async fn dual_stack_allocation_records_handle_and_blocks() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let ipam = ipam(
        &store,
        "node-a",
        config(&["10.10.0.0/24", "fd00:10::/120"], 26, 122),
    )
    .await;

    let a = ipam.allocate(req("h1")).await.unwrap();
    assert_eq!(a.ips, vec![ip("10.10.0.1"), ip("fd00:10::1")]);
    let b = ipam.allocate(req("h2")).await.unwrap();
    assert_eq!(b.ips, vec![ip("10.10.0.2"), ip("fd00:10::2")]);

    let h = ipam.get_handle("h1").await.unwrap().unwrap();
    assert_eq!(h.ips, a.ips);
    assert_eq!(h.node, "node-a");
    assert_eq!(h.container_id, "ctr-h1");
    assert_eq!(h.netns, "/run/netns/h1");
    assert!(h.created > 0);

    let view = ipam.view().await.unwrap();
    assert_eq!(view.pools.len(), 2);
    for p in &view.pools {
        assert_eq!((p.used, p.blocks_claimed), (2, 1), "{p:?}");
    }
    assert_eq!(view.pools[0].size, 256);
    assert_eq!(
        view.pools[0].usable, 254,
        "the IPv4 pool's two edges are reserved"
    );
    assert_eq!(
        view.pools[1].usable,
        view.pools[1].size - 1,
        "IPv6: the first"
    );
    assert_eq!(view.pools[0].blocks_total, 4);
    assert_eq!(view.pools[1].blocks_total, 4);
    assert_eq!(view.blocks.len(), 2);
    for b in &view.blocks {
        assert_eq!(b.affinity.as_deref(), Some("node-a"));
        assert_eq!((b.used, b.size), (2, 64));
    }

    // The stored records have the documented shape.
    let kv = store
        .get(&keys::block(&net("10.10.0.0/26")))
        .await
        .unwrap()
        .unwrap();
    let block: Block = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(block.allocations.get(&1).map(String::as_str), Some("h1"));
    assert!(
        store
            .get("/strait/v1/ipam/handles/h2")
            .await
            .unwrap()
            .is_some()
    );

    let names: Vec<String> = ipam
        .list_handles()
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.handle)
        .collect();
    assert_eq!(names, ["h1", "h2"]);
}

#[tokio::test]
async fn static_addresses() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let ipam = ipam(
        &store,
        "node-a",
        config(&["10.20.0.0/24", "fd00:20::/120"], 26, 122),
    )
    .await;

    // In an unclaimed block: the block is claimed for this node.
    let s = ipam
        .allocate(static_req("s1", &["10.20.0.200", "fd00:20::99"]))
        .await
        .unwrap();
    assert_eq!(s.ips, vec![ip("10.20.0.200"), ip("fd00:20::99")]);
    let view = ipam.view().await.unwrap();
    let b = view
        .blocks
        .iter()
        .find(|b| b.cidr == net("10.20.0.192/26"))
        .unwrap();
    assert_eq!(b.affinity.as_deref(), Some("node-a"));

    // Taken, reserved, outside every pool, twice in one request.
    for (addr, want) in [
        ("10.20.0.200", "taken by handle s1"),
        ("10.20.0.0", "reserved"),
        ("10.20.0.255", "reserved"),
        ("fd00:20::", "reserved"),
        ("192.168.1.1", "outside every pool"),
    ] {
        match ipam.allocate(static_req("s2", &[addr])).await {
            Err(IpamError::StaticUnavailable { ip: got, reason }) => {
                assert_eq!(got, ip(addr));
                assert!(reason.contains(want), "{addr}: {reason}");
            }
            other => panic!("{addr}: {other:?}"),
        }
    }
    assert!(matches!(
        ipam.allocate(static_req("s2", &["10.20.0.5", "10.20.0.5"]))
            .await,
        Err(IpamError::InvalidRequest(_))
    ));
    // A failed request leaves nothing behind.
    assert!(ipam.get_handle("s2").await.unwrap().is_none());

    // Dynamic allocation goes around the static address in the same block.
    let mut seen = BTreeSet::from([ip("10.20.0.200")]);
    for i in 0..70 {
        let a = ipam.allocate(req(&format!("d{i}"))).await.unwrap();
        assert!(seen.insert(a.ips[0]), "duplicate {}", a.ips[0]);
    }

    // Two blocks, one transaction, one release.
    let m = ipam
        .allocate(static_req("multi", &["10.20.0.150", "fd00:20::50"]))
        .await
        .unwrap();
    assert_eq!(m.ips.len(), 2);
    assert_eq!(ipam.release("multi").await.unwrap(), m.ips);
    let again = ipam
        .allocate(static_req("multi2", &["10.20.0.150", "fd00:20::50"]))
        .await
        .unwrap();
    assert_eq!(again.ips, m.ips);
}

#[tokio::test]
async fn tiny_pool_exhausts_with_clear_error() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    // 16 addresses in four /30 blocks; the pool's first and last are never handed out.
    let ipam = ipam(&store, "node-a", config(&["10.30.0.0/28"], 30, 122)).await;

    let mut got = BTreeSet::new();
    for i in 0..14 {
        let a = ipam.allocate(req(&format!("h{i}"))).await.unwrap();
        assert_eq!(a.ips.len(), 1);
        assert!(got.insert(a.ips[0]));
    }
    assert!(!got.contains(&ip("10.30.0.0")) && !got.contains(&ip("10.30.0.15")));
    assert!(!ipam.has_free_address().await);

    match ipam.allocate(req("one-too-many")).await {
        Err(e @ IpamError::Exhausted { .. }) => {
            let IpamError::Exhausted { family, .. } = &e else {
                unreachable!()
            };
            assert_eq!(*family, Family::V4);
            let msg = e.to_string();
            assert!(
                msg.contains("IPv4") && msg.contains("node-a") && msg.contains("10.30.0.0/28"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(ipam.get_handle("one-too-many").await.unwrap().is_none());

    let freed = ipam.release("h3").await.unwrap();
    assert_eq!(freed.len(), 1);
    assert!(ipam.has_free_address().await);
    let a = ipam.allocate(req("again")).await.unwrap();
    assert_eq!(a.ips, freed, "the only free address");

    let view = ipam.view().await.unwrap();
    assert_eq!(view.pools[0].used, 14);
    assert_eq!(view.pools[0].blocks_claimed, 4);
    assert_eq!(view.blocks.len(), 4);
}

#[tokio::test]
async fn release_is_idempotent_and_handles_are_unique() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let ipam = ipam(&store, "node-a", config(&["10.40.0.0/24"], 26, 122)).await;

    let a = ipam.allocate(req("h")).await.unwrap();
    match ipam.allocate(req("h")).await {
        Err(IpamError::DuplicateHandle(h)) => assert_eq!(h, "h"),
        other => panic!("{other:?}"),
    }
    assert_eq!(used(&ipam).await, 1, "the duplicate took nothing");

    assert_eq!(ipam.release("h").await.unwrap(), a.ips);
    assert_eq!(ipam.release("h").await.unwrap(), Vec::<IpAddr>::new());
    assert_eq!(
        ipam.release("never-existed").await.unwrap(),
        Vec::<IpAddr>::new()
    );
    assert!(matches!(
        ipam.release("bad/handle").await,
        Err(IpamError::InvalidRequest(_))
    ));
    assert_eq!(used(&ipam).await, 0);

    // The block stays affine to the node once empty.
    let view = ipam.view().await.unwrap();
    assert_eq!(view.blocks[0].affinity.as_deref(), Some("node-a"));
    assert_eq!(view.blocks[0].used, 0);

    // A released address is not the next one handed out.
    let b = ipam.allocate(req("h")).await.unwrap();
    assert_ne!(b.ips, a.ips);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_parallel_allocations() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let ipam = Arc::new(
        ipam(
            &store,
            "node-a",
            config(&["10.50.0.0/16", "fd00:50::/112"], 26, 122),
        )
        .await,
    );

    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let ipam = ipam.clone();
            tokio::spawn(async move { ipam.allocate(req(&format!("h{i:03}"))).await })
        })
        .collect();
    let mut all = BTreeSet::new();
    for t in tasks {
        let a = t.await.unwrap().unwrap();
        assert_eq!(a.ips.len(), 2);
        for ip in a.ips {
            assert!(all.insert(ip), "duplicate {ip}");
        }
    }
    assert_eq!(all.len(), 400);
    assert_eq!(used(&ipam).await, 400);
    let view = ipam.view().await.unwrap();
    // 200 addresses per family in 64-address blocks, the pool's first address reserved.
    assert_eq!(view.blocks.len(), 8);
    assert!(
        view.blocks
            .iter()
            .all(|b| b.affinity.as_deref() == Some("node-a"))
    );

    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let ipam = ipam.clone();
            tokio::spawn(async move { ipam.release(&format!("h{i:03}")).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().len(), 2);
    }
    assert_eq!(used(&ipam).await, 0);
    assert!(ipam.list_handles().await.unwrap().is_empty());
    let report = ipam
        .check(Duration::ZERO, &|_: &Handle| Ok(()))
        .await
        .unwrap();
    assert!(report.issues.is_empty(), "{:?}", report.issues);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_race_on_one_store() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    // Blocks of 16: both nodes keep claiming, so claims collide.
    let cfg = config(&["10.60.0.0/23"], 28, 122);
    let a = Arc::new(ipam(&store, "node-a", cfg.clone()).await);
    let b = Arc::new(ipam(&store, "node-b", cfg).await);

    let mut tasks = Vec::new();
    for i in 0..240 {
        let (ipam, name) = if i % 2 == 0 {
            (a.clone(), "a")
        } else {
            (b.clone(), "b")
        };
        tasks.push(tokio::spawn(async move {
            ipam.allocate(req(&format!("{name}-{i}"))).await
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        let alloc = t.await.unwrap().unwrap();
        assert!(all.insert(alloc.ips[0]), "duplicate {}", alloc.ips[0]);
    }
    assert_eq!(all.len(), 240);

    // Each block is affine to the node whose handles fill it (no borrowing needed).
    let handles = a.list_handles().await.unwrap();
    let view = a.view().await.unwrap();
    for blk in &view.blocks {
        for h in handles.iter().filter(|h| blk.cidr.contains(&h.ips[0])) {
            assert_eq!(Some(h.node.as_str()), blk.affinity.as_deref(), "{h:?}");
        }
    }
    let report = b.check(Duration::ZERO, &|_: &Handle| Ok(())).await.unwrap();
    assert!(report.issues.is_empty(), "{:?}", report.issues);
}

/// Two agents under one node name (an old process not yet gone) share blocks and
/// caches go stale under each other's writes. One agent per node is the design; here
/// only safety is promised: no address twice, and any failure is a reported conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_agents_of_one_node_never_duplicate() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let cfg = config(&["10.61.0.0/23"], 28, 122);
    let a = Arc::new(ipam(&store, "node-a", cfg.clone()).await);
    let a2 = Arc::new(ipam(&store, "node-a", cfg).await);
    let mut tasks = Vec::new();
    for i in 0..160 {
        let ipam = if i % 2 == 0 { a.clone() } else { a2.clone() };
        tasks.push(tokio::spawn(async move {
            ipam.allocate(req(&format!("h-{i}"))).await
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(alloc) => assert!(all.insert(alloc.ips[0]), "duplicate {}", alloc.ips[0]),
            Err(IpamError::Conflict { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(used(&a).await, all.len() as u128);
    let report = a2
        .check(Duration::ZERO, &|_: &Handle| Ok(()))
        .await
        .unwrap();
    assert!(report.issues.is_empty(), "{:?}", report.issues);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn borrowing_under_contention() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let pools = ["10.130.0.0/24"];
    let a = Arc::new(ipam(&store, "node-a", config(&pools, 26, 122)).await);
    let mut capped = config(&pools, 26, 122);
    capped.max_blocks_per_node = Some(1);
    let b = Arc::new(ipam(&store, "node-b", capped).await);
    // node-a holds two blocks: 10.130.0.0/26 and, through a static address,
    // 10.130.0.128/26.
    a.allocate(req("a-first")).await.unwrap();
    a.allocate(static_req("a-static", &["10.130.0.130"]))
        .await
        .unwrap();
    for i in 0..64 {
        b.allocate(req(&format!("b-own-{i}"))).await.unwrap();
    }
    // node-b's block is full: everything it allocates now is borrowed from node-a's
    // blocks while node-a allocates in them.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (ipam, name) = if i % 5 < 3 {
            (a.clone(), format!("a-{i}"))
        } else {
            (b.clone(), format!("b-{i}"))
        };
        tasks.push(tokio::spawn(async move { ipam.allocate(req(&name)).await }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        let alloc = t.await.unwrap().unwrap();
        assert!(all.insert(alloc.ips[0]), "duplicate {}", alloc.ips[0]);
    }
    let view = a.view().await.unwrap();
    assert_eq!(view.pools[0].used, 166);
    assert_eq!(
        view.blocks
            .iter()
            .filter(|blk| blk.affinity.as_deref() == Some("node-b"))
            .count(),
        1
    );
    let report = a.check(Duration::ZERO, &|_: &Handle| Ok(())).await.unwrap();
    assert!(report.issues.is_empty(), "{:?}", report.issues);
}

#[tokio::test]
async fn borrowing_when_max_blocks_reached() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    // Four blocks of 16 (62 usable addresses).
    let pools = ["10.70.0.0/26"];
    let b = ipam(&store, "node-b", config(&pools, 28, 122)).await;
    for i in 0..20 {
        b.allocate(req(&format!("b{i}"))).await.unwrap();
    }
    // node-b holds two blocks now: 15 + 5 used.

    let mut capped = config(&pools, 28, 122);
    capped.max_blocks_per_node = Some(1);
    let a = ipam(&store, "node-a", capped.clone()).await;
    let mut mine = Vec::new();
    for i in 0..27 {
        mine.push(a.allocate(req(&format!("a{i}"))).await.unwrap().ips[0]);
    }
    let view = a.view().await.unwrap();
    let held: Vec<_> = view
        .blocks
        .iter()
        .filter(|blk| blk.affinity.as_deref() == Some("node-a"))
        .collect();
    assert_eq!(held.len(), 1, "max_blocks_per_node respected");
    let own = held[0].cidr;
    let borrowed: Vec<_> = mine.iter().filter(|ip| !own.contains(*ip)).collect();
    assert_eq!(
        borrowed.len(),
        11,
        "16 from its own block, node-b's 11 free borrowed"
    );
    assert!(borrowed.iter().all(|ip| net("10.70.0.16/28").contains(*ip)));
    // Borrowing takes from existing blocks only; the unclaimed one stays unclaimed.
    match a.allocate(req("a-more")).await {
        Err(IpamError::Exhausted { reason, .. }) => {
            assert!(reason.contains("max_blocks_per_node=1"), "{reason}")
        }
        other => panic!("{other:?}"),
    }

    // A strict node claims the last free block and then gets a clear error, never
    // another node's addresses.
    capped.strict_affinity = true;
    let strict = ipam(&store, "node-c", capped).await;
    b.release("b19").await.unwrap();
    let mut n = 0;
    let err = loop {
        match strict.allocate(req(&format!("c{n}"))).await {
            Ok(a) => {
                assert!(net("10.70.0.48/28").contains(&a.ips[0]));
                n += 1;
            }
            Err(e) => break e,
        }
    };
    match &err {
        IpamError::Exhausted { reason, .. } => {
            assert!(reason.contains("strict_affinity"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(n, 15, "the last block, less the pool's broadcast address");

    // Release works across nodes: node-b frees addresses node-a borrowed.
    let report = b.check(Duration::ZERO, &|_: &Handle| Ok(())).await.unwrap();
    assert!(report.issues.is_empty(), "{:?}", report.issues);
    for i in 0..27 {
        assert_eq!(b.release(&format!("a{i}")).await.unwrap().len(), 1);
    }
    for i in 0..19 {
        b.release(&format!("b{i}")).await.unwrap();
    }
    for i in 0..n {
        strict.release(&format!("c{i}")).await.unwrap();
    }
    assert_eq!(used(&a).await, 0);
}

#[tokio::test]
async fn release_through_a_stale_cache_frees_everything() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let cfg = config(&["10.110.0.0/24"], 26, 122);
    let a = ipam(&store, "node-a", cfg.clone()).await;
    let b = ipam(&store, "node-b", cfg).await;
    a.allocate(req("a0")).await.unwrap();
    // node-b takes an address in node-a's block; node-a's cache does not know.
    b.allocate(static_req("b0", &["10.110.0.9"])).await.unwrap();
    // node-a releases it (its GC, say): the allocation must go with the handle.
    assert_eq!(a.release("b0").await.unwrap(), vec![ip("10.110.0.9")]);
    let report = a.check(Duration::ZERO, &|_: &Handle| Ok(())).await.unwrap();
    assert!(report.issues.is_empty(), "{:?}", report.issues);
    assert_eq!(used(&a).await, 1);
    // node-a's next allocation continues from the block as stored (the search start
    // moved past node-b's address), not from its stale copy.
    let next = a.allocate(req("a1")).await.unwrap();
    assert_eq!(next.ips, vec![ip("10.110.0.10")]);
}

/// Forwards to a real store and counts reads and transactions. Each transaction can be
/// made slower (`slow_txns`), so that requests made meanwhile queue up behind it.
struct Counting {
    inner: Arc<dyn Store>,
    reads: AtomicUsize,
    txns: AtomicUsize,
    delay_ms: AtomicU64,
}

impl Counting {
    fn new(inner: Arc<dyn Store>) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            reads: AtomicUsize::new(0),
            txns: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(0),
        })
    }

    fn txns(&self) -> usize {
        self.txns.load(Ordering::SeqCst)
    }

    fn slow_txns(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap();
        self.delay_ms.store(ms, Ordering::SeqCst);
    }
}

#[async_trait]
impl Store for Counting {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn range(&self, prefix: &str) -> Result<RangeResponse, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.range(prefix).await
    }
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        self.inner.put(key, value, lease).await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.inner.delete(key).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.txns.fetch_add(1, Ordering::SeqCst);
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.inner.txn(txn).await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.inner.lease_revoke(lease).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        self.inner.watch(prefix, from).await
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }
}

#[tokio::test]
async fn hot_path_is_one_transaction() {
    let dir = TempDir::new().unwrap();
    let counting = Counting::new(open(dir.path()).await);
    let store: Arc<dyn Store> = counting.clone();
    let ipam = Ipam::new(
        store,
        "node-a".into(),
        config(&["10.120.0.0/24", "fd00:120::/120"], 26, 122),
    )
    .await
    .unwrap();
    ipam.allocate(req("first")).await.unwrap(); // claims two blocks
    let (reads, txns) = (
        counting.reads.load(Ordering::SeqCst),
        counting.txns.load(Ordering::SeqCst),
    );
    for i in 0..10 {
        ipam.allocate(req(&format!("h{i}"))).await.unwrap();
    }
    assert_eq!(counting.reads.load(Ordering::SeqCst), reads, "no reads");
    assert_eq!(
        counting.txns.load(Ordering::SeqCst),
        txns + 10,
        "one txn each"
    );

    // A release reads the handle and writes once.
    ipam.release("h3").await.unwrap();
    assert_eq!(counting.reads.load(Ordering::SeqCst), reads + 1);
    assert_eq!(counting.txns.load(Ordering::SeqCst), txns + 11);
}

/// Rewrites one block through the store, bypassing IPAM (as a buggy tool would).
async fn edit_block(store: &Arc<EmbeddedStore>, cidr: IpNet, f: impl FnOnce(&mut Block)) {
    let key = keys::block(&cidr);
    let kv = store.get(&key).await.unwrap().unwrap();
    let mut block: Block = serde_json::from_slice(&kv.value).unwrap();
    f(&mut block);
    store
        .put(&key, serde_json::to_vec(&block).unwrap(), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn check_and_gc_find_and_free_leaks() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let ipam = ipam(&store, "node-a", config(&["10.80.0.0/24"], 26, 122)).await;

    let live = ipam.allocate(req("live")).await.unwrap();
    let leaked = ipam.allocate(req("leaked")).await.unwrap();
    // An allocation whose handle never got written, and a handle naming an address
    // its block does not give it.
    edit_block(&store, net("10.80.0.0/26"), |b| {
        b.allocations.insert(40, "ghost".into());
    })
    .await;
    let stray = Handle {
        handle: "stray".into(),
        network: "net0".into(),
        container_id: "ctr".into(),
        ifname: "eth0".into(),
        netns: String::new(),
        node: "node-a".into(),
        ips: vec![ip("10.80.0.50")],
        created: 0,
    };
    store
        .put(
            &keys::handle("stray"),
            serde_json::to_vec(&stray).unwrap(),
            None,
        )
        .await
        .unwrap();

    let alive = |h: &Handle| match h.handle.as_str() {
        "leaked" => Err("netns is gone".to_string()),
        _ => Ok(()),
    };

    // Within the grace period nothing is a leak yet.
    let report = ipam.check(Duration::from_secs(3600), &alive).await.unwrap();
    assert!(
        !report
            .issues
            .iter()
            .any(|i| matches!(i, IpamIssue::LeakedHandle { .. }))
    );

    let report = ipam.gc(Duration::ZERO, &alive, true).await.unwrap();
    assert_eq!(report.grace_secs, 0);
    let expect_leak = IpamIssue::LeakedHandle {
        handle: "leaked".into(),
        ips: leaked.ips.clone(),
        reason: "netns is gone".into(),
        age_secs: match &report.issues[0] {
            IpamIssue::LeakedHandle { age_secs, .. } => *age_secs,
            other => panic!("{other:?}"),
        },
    };
    assert_eq!(
        report.issues,
        vec![
            expect_leak,
            IpamIssue::OrphanAllocation {
                block: net("10.80.0.0/26"),
                ip: ip("10.80.0.40"),
                handle: "ghost".into()
            },
            IpamIssue::MissingAllocation {
                handle: "stray".into(),
                ip: ip("10.80.0.50")
            },
        ]
    );
    // Dry run changed nothing.
    assert!(ipam.get_handle("leaked").await.unwrap().is_some());
    assert_eq!(used(&ipam).await, 3);

    let resp = ipam.release_from_report(&report).await.unwrap();
    assert_eq!(
        resp.released,
        vec!["leaked".to_string(), "10.80.0.40".into()]
    );
    assert_eq!(resp.skipped.len(), 1, "{:?}", resp.skipped);
    assert!(resp.skipped[0].starts_with("stray:"), "{:?}", resp.skipped);
    assert!(ipam.get_handle("leaked").await.unwrap().is_none());
    assert_eq!(
        ipam.get_handle("live").await.unwrap().unwrap().ips,
        live.ips
    );
    assert_eq!(used(&ipam).await, 1);

    // The same report again: everything is already done.
    let resp = ipam.release_from_report(&report).await.unwrap();
    assert!(resp.released.is_empty());
    assert_eq!(resp.skipped.len(), 3, "{:?}", resp.skipped);

    // Only the missing allocation is left.
    let after = ipam.check(Duration::ZERO, &alive).await.unwrap();
    assert_eq!(after.issues.len(), 1, "{:?}", after.issues);
}

#[tokio::test]
async fn release_from_report_skips_what_changed() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let ipam = ipam(&store, "node-a", config(&["10.90.0.0/24"], 26, 122)).await;
    ipam.allocate(req("h")).await.unwrap();
    ipam.allocate(req("g")).await.unwrap();
    edit_block(&store, net("10.90.0.0/26"), |b| {
        b.allocations.insert(30, "ghost".into());
    })
    .await;
    let gone = |h: &Handle| -> Result<(), String> { Err(format!("{} is gone", h.handle)) };
    let report = ipam.check(Duration::ZERO, &gone).await.unwrap();
    assert_eq!(report.issues.len(), 3, "{:?}", report.issues);

    // Since the report: `h` was released and recreated, `ghost` was written properly.
    ipam.release("h").await.unwrap();
    let h2 = ipam.allocate(req("h")).await.unwrap();
    edit_block(&store, net("10.90.0.0/26"), |b| {
        b.allocations.remove(&30);
    })
    .await;
    ipam.allocate(static_req("ghost", &["10.90.0.30"]))
        .await
        .unwrap();

    let resp = ipam.release_from_report(&report).await.unwrap();
    assert_eq!(resp.released, vec!["g".to_string()]);
    assert!(
        resp.skipped
            .iter()
            .any(|s| s.starts_with("h:") && s.contains("recreated")),
        "{:?}",
        resp.skipped
    );
    assert!(
        resp.skipped.iter().any(|s| s.starts_with("10.90.0.30:")),
        "{:?}",
        resp.skipped
    );
    assert_eq!(ipam.get_handle("h").await.unwrap().unwrap().ips, h2.ips);
    assert_eq!(
        ipam.get_handle("ghost").await.unwrap().unwrap().ips,
        vec![ip("10.90.0.30")]
    );
}

#[tokio::test]
async fn restart_keeps_allocations() {
    let dir = TempDir::new().unwrap();
    let cfg = config(&["10.100.0.0/24", "fd00:100::/120"], 26, 122);
    let first = {
        let store = open(dir.path()).await;
        let ipam = ipam(&store, "node-a", cfg.clone()).await;
        let mut ips = Vec::new();
        for i in 0..5 {
            ips.push(ipam.allocate(req(&format!("h{i}"))).await.unwrap());
        }
        ipam.release("h2").await.unwrap();
        drop(ipam);
        store.close().await.unwrap();
        ips
    };

    let store = open(dir.path()).await;
    let ipam = ipam(&store, "node-a", cfg).await;
    for (i, a) in first.iter().enumerate() {
        let h = ipam.get_handle(&a.handle).await.unwrap();
        if i == 2 {
            assert!(h.is_none());
        } else {
            assert_eq!(h.unwrap().ips, a.ips);
        }
    }
    assert_eq!(used(&ipam).await, 8);
    // New allocations continue in the node's blocks without reusing held addresses.
    let next = ipam.allocate(req("h5")).await.unwrap();
    assert_eq!(next.ips, vec![ip("10.100.0.6"), ip("fd00:100::6")]);
    assert_eq!(ipam.view().await.unwrap().blocks.len(), 2);
    assert!(matches!(
        ipam.allocate(req("h1")).await,
        Err(IpamError::DuplicateHandle(_))
    ));
}

#[tokio::test]
async fn invalid_config_is_refused() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let store: Arc<dyn Store> = store;
    for (pools, why) in [
        (vec!["10.0.0.0/28"], "shorter than pool"),
        (vec!["10.0.0.0/16", "10.0.1.0/24"], "overlap"),
        (vec!["10.0.0.1/16"], "host bits"),
    ] {
        match Ipam::new(store.clone(), "n".into(), config(&pools, 26, 122)).await {
            Err(IpamError::InvalidConfig(m)) => assert!(m.contains(why), "{m}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("{pools:?} accepted"),
        }
    }
}

/// Prints (never asserts) how long 200 concurrent allocations take, with the number of
/// store transactions, beside a baseline of 200 allocations one at a time in the same
/// run. Run with `--nocapture` (and `--release`) to see the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timing_two_hundred_concurrent_allocations() {
    let dir = TempDir::new().unwrap();
    let counting = Counting::new(open(dir.path()).await);
    let store: Arc<dyn Store> = counting.clone();
    let ipam = Arc::new(
        Ipam::new(
            store,
            "node-a".into(),
            config(&["10.140.0.0/16", "fd00:140::/112"], 26, 122),
        )
        .await
        .unwrap(),
    );
    // Claim the first blocks outside the measurement.
    ipam.allocate(req("warm-up")).await.unwrap();

    let txns0 = counting.txns.load(Ordering::SeqCst);
    let t0 = std::time::Instant::now();
    for i in 0..200 {
        ipam.allocate(req(&format!("seq{i:03}"))).await.unwrap();
    }
    let sequential = t0.elapsed();
    let seq_txns = counting.txns.load(Ordering::SeqCst) - txns0;

    let txns0 = counting.txns.load(Ordering::SeqCst);
    let t0 = std::time::Instant::now();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let ipam = ipam.clone();
            tokio::spawn(async move {
                let start = std::time::Instant::now();
                ipam.allocate(req(&format!("par{i:03}"))).await.unwrap();
                start.elapsed()
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.push(t.await.unwrap());
    }
    let concurrent = t0.elapsed();
    let par_txns = counting.txns.load(Ordering::SeqCst) - txns0;
    lat.sort();
    println!(
        "200 allocations one at a time: {:.1} ms, {seq_txns} txns",
        sequential.as_secs_f64() * 1e3
    );
    println!(
        "200 concurrent allocations: {:.1} ms, {par_txns} txns; per call p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms",
        concurrent.as_secs_f64() * 1e3,
        lat[99].as_secs_f64() * 1e3,
        lat[197].as_secs_f64() * 1e3,
        lat[199].as_secs_f64() * 1e3,
    );
}

#[tokio::test]
async fn extra_ops_commit_with_the_allocation_or_not_at_all() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    // Six usable addresses in two /30 blocks.
    let ipam = ipam(&store, "node-a", config(&["10.150.0.0/29"], 30, 122)).await;

    let a = ipam.allocate(req_with_record("h1")).await.unwrap();
    let record = store.get(&record_key("h1")).await.unwrap().unwrap();
    assert_eq!(record.value, format!("{:?}", a.ips).into_bytes());
    let handle = store.get(&keys::handle("h1")).await.unwrap().unwrap();
    assert_eq!(
        record.mod_revision, handle.mod_revision,
        "written in the handle's transaction"
    );

    // A static address that is taken: nothing written.
    let taken = a.ips[0].to_string();
    let r = AllocRequest {
        static_ips: vec![ip(&taken)],
        ..req_with_record("h2")
    };
    assert!(matches!(
        ipam.allocate(r).await,
        Err(IpamError::StaticUnavailable { .. })
    ));
    assert!(store.get(&record_key("h2")).await.unwrap().is_none());

    // Exhausted: nothing written.
    for i in 0..5 {
        ipam.allocate(req(&format!("f{i}"))).await.unwrap();
    }
    assert!(matches!(
        ipam.allocate(req_with_record("h3")).await,
        Err(IpamError::Exhausted { .. })
    ));
    assert!(store.get(&record_key("h3")).await.unwrap().is_none());
    assert!(ipam.get_handle("h3").await.unwrap().is_none());

    // Extra operations on IPAM's own keys are refused, and nothing is written.
    ipam.release("f0").await.unwrap();
    let bad = AllocRequest {
        extra: Some(Arc::new(|_: &[IpAddr]| {
            vec![TxnOp::Delete {
                key: keys::handle("h1"),
            }]
        })),
        ..req("h4")
    };
    assert!(matches!(
        ipam.allocate(bad).await,
        Err(IpamError::InvalidRequest(_))
    ));
    assert!(ipam.get_handle("h4").await.unwrap().is_none());
    assert!(ipam.get_handle("h1").await.unwrap().is_some());
    assert_eq!(used(&ipam).await, 5);
}

#[tokio::test]
async fn release_with_commits_extra_ops_also_without_a_handle() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let ipam = ipam(&store, "node-a", config(&["10.151.0.0/24"], 26, 122)).await;

    let a = ipam.allocate(req_with_record("h1")).await.unwrap();
    assert_eq!(
        ipam.release_with("h1", delete_record("h1")).await.unwrap(),
        a.ips
    );
    assert!(store.get(&record_key("h1")).await.unwrap().is_none());
    assert!(ipam.get_handle("h1").await.unwrap().is_none());
    assert_eq!(used(&ipam).await, 0);

    // The reservation is gone already (a DEL after a failed ADD, say): the caller's
    // record still goes.
    store
        .put(&record_key("h2"), b"stale".to_vec(), None)
        .await
        .unwrap();
    assert!(
        ipam.release_with("h2", delete_record("h2"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.get(&record_key("h2")).await.unwrap().is_none());

    let outside = vec![TxnOp::Put {
        key: "/elsewhere".into(),
        value: Vec::new(),
        lease: None,
    }];
    assert!(matches!(
        ipam.release_with("h2", outside).await,
        Err(IpamError::InvalidRequest(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_handle_fails_only_itself_in_a_batch() {
    let dir = TempDir::new().unwrap();
    let (counting, ipam) = counted(dir.path(), config(&["10.160.0.0/24"], 26, 122)).await;
    ipam.allocate(req("old")).await.unwrap();

    let blocker = hold_the_lock(&counting, &ipam, req("blocker")).await;
    let txns = counting.txns();
    let names: [&'static str; 7] = ["a", "old", "b", "twin", "c", "twin", "d"];
    let tasks: Vec<_> = names
        .iter()
        .map(|&n| {
            let ipam = ipam.clone();
            tokio::spawn(async move { ipam.allocate(req_with_record(n)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    counting.slow_txns(Duration::ZERO);
    blocker.await.unwrap();

    let mut ips = BTreeSet::new();
    let mut twins = (0, 0);
    for (name, t) in names.iter().zip(tasks) {
        match (*name, t.await.unwrap()) {
            ("old", Err(IpamError::DuplicateHandle(h))) => assert_eq!(h, "old"),
            ("twin", Err(IpamError::DuplicateHandle(_))) => twins.1 += 1,
            ("twin", Ok(a)) => {
                twins.0 += 1;
                assert!(ips.insert(a.ips[0]));
            }
            (_, Ok(a)) => assert!(ips.insert(a.ips[0]), "duplicate {}", a.ips[0]),
            (n, other) => panic!("{n}: {other:?}"),
        }
    }
    assert_eq!(twins, (1, 1), "one twin wins, as one after the other");
    assert_eq!(ips.len(), 5);
    // The batch failed on "old", went again without it, and "twin" went again alone.
    let used_txns = counting.txns() - txns;
    assert!(used_txns <= 4, "{used_txns} transactions for 7 requests");
    for n in ["a", "b", "c", "d", "twin"] {
        assert!(counting.get(&record_key(n)).await.unwrap().is_some(), "{n}");
    }
    assert!(
        counting.get(&record_key("old")).await.unwrap().is_none(),
        "the duplicate wrote nothing"
    );
    assert_eq!(used(&ipam).await, 7, "old, blocker and five");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhaustion_in_a_batch_fails_only_what_does_not_fit() {
    let dir = TempDir::new().unwrap();
    // 14 usable addresses in four /30 blocks.
    let (counting, ipam) = counted(dir.path(), config(&["10.170.0.0/28"], 30, 122)).await;
    let mut first = Vec::new();
    for i in 0..10 {
        first.push(ipam.allocate(req(&format!("f{i}"))).await.unwrap());
    }

    let blocker = hold_the_lock(&counting, &ipam, req("blocker")).await;
    let txns = counting.txns();
    let taken = first[0].ips[0].to_string();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let ipam = ipam.clone();
        tasks.push(tokio::spawn(async move {
            ipam.allocate(req_with_record(&format!("n{i}"))).await
        }));
    }
    let static_taken = AllocRequest {
        static_ips: vec![ip(&taken)],
        ..req_with_record("s")
    };
    let ipam2 = ipam.clone();
    let static_task = tokio::spawn(async move { ipam2.allocate(static_taken).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    counting.slow_txns(Duration::ZERO);
    blocker.await.unwrap();

    let (mut ok, mut exhausted) = (Vec::new(), Vec::new());
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(a) => ok.push((i, a)),
            Err(IpamError::Exhausted { .. }) => exhausted.push(i),
            Err(e) => panic!("n{i}: {e}"),
        }
    }
    assert!(matches!(
        static_task.await.unwrap(),
        Err(IpamError::StaticUnavailable { .. })
    ));
    assert_eq!(
        (ok.len(), exhausted.len()),
        (3, 5),
        "the last block's three"
    );
    let distinct: BTreeSet<IpAddr> = ok.iter().map(|(_, a)| a.ips[0]).collect();
    assert_eq!(distinct.len(), 3);
    assert!(distinct.iter().all(|a| net("10.170.0.12/30").contains(a)));
    let used_txns = counting.txns() - txns;
    assert!(used_txns <= 2, "{used_txns} transactions for 9 requests");
    for (i, _) in &ok {
        assert!(
            counting
                .get(&record_key(&format!("n{i}")))
                .await
                .unwrap()
                .is_some()
        );
    }
    for i in exhausted {
        let h = format!("n{i}");
        assert!(counting.get(&record_key(&h)).await.unwrap().is_none());
        assert!(ipam.get_handle(&h).await.unwrap().is_none());
    }
    assert!(counting.get(&record_key("s")).await.unwrap().is_none());
    assert_eq!(used(&ipam).await, 14);
    let report = ipam
        .check(Duration::ZERO, &|_: &Handle| Ok(()))
        .await
        .unwrap();
    assert!(report.issues.is_empty(), "{:?}", report.issues);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_allocations_and_releases_share_transactions() {
    let dir = TempDir::new().unwrap();
    let (counting, ipam) = counted(
        dir.path(),
        config(&["10.180.0.0/16", "fd00:180::/112"], 26, 122),
    )
    .await;

    let txns = counting.txns();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let ipam = ipam.clone();
            tokio::spawn(async move { ipam.allocate(req_with_record(&format!("h{i:03}"))).await })
        })
        .collect();
    let mut all = BTreeSet::new();
    for t in tasks {
        let a = t.await.unwrap().unwrap();
        assert_eq!(a.ips.len(), 2);
        for ip in a.ips {
            assert!(all.insert(ip), "duplicate {ip}");
        }
    }
    let alloc_txns = counting.txns() - txns;
    println!("200 concurrent allocations: {alloc_txns} transactions");
    assert!(alloc_txns < 100, "{alloc_txns} transactions");
    assert_eq!(all.len(), 400);
    assert_eq!(used(&ipam).await, 400);
    let records = counting
        .range("/strait/v1/endpoints/node-a/")
        .await
        .unwrap();
    assert_eq!(records.kvs.len(), 200);

    let txns = counting.txns();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let ipam = ipam.clone();
            tokio::spawn(async move {
                let h = format!("h{i:03}");
                ipam.release_with(&h, delete_record(&h)).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().len(), 2);
    }
    let release_txns = counting.txns() - txns;
    println!("200 concurrent releases: {release_txns} transactions");
    assert!(release_txns < 100, "{release_txns} transactions");
    assert_eq!(used(&ipam).await, 0);
    assert!(ipam.list_handles().await.unwrap().is_empty());
    let records = counting
        .range("/strait/v1/endpoints/node-a/")
        .await
        .unwrap();
    assert!(records.kvs.is_empty());
    let report = ipam
        .check(Duration::ZERO, &|_: &Handle| Ok(()))
        .await
        .unwrap();
    assert!(report.issues.is_empty(), "{:?}", report.issues);
}

/// Callers that give up (dropped futures) at any point leave the store consistent: each
/// allocation exists with its handle and its caller's record, or not at all, and the
/// callers that stayed got their answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_callers_leave_whole_allocations_or_none() {
    let dir = TempDir::new().unwrap();
    let (counting, ipam) = counted(dir.path(), config(&["10.190.0.0/22"], 26, 122)).await;
    counting.slow_txns(Duration::from_millis(20));
    let tasks: Vec<_> = (0..120)
        .map(|i| {
            let ipam = ipam.clone();
            tokio::spawn(async move { ipam.allocate(req_with_record(&format!("h{i:03}"))).await })
        })
        .collect();
    let mut kept = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if i % 2 == 1 {
            t.abort();
        } else {
            kept.push(t);
        }
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }
    for t in kept {
        t.await.unwrap().unwrap();
    }
    counting.slow_txns(Duration::ZERO);
    // Batches that took aborted requests may still be committing.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let handles: BTreeSet<String> = ipam
        .list_handles()
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.handle)
        .collect();
    let records: BTreeSet<String> = counting
        .range("/strait/v1/endpoints/node-a/")
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| kv.key.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(handles, records, "a record exactly where a handle is");
    assert!(handles.len() >= 60, "{} handles", handles.len());
    println!(
        "{} of 60 dropped callers' allocations were made anyway",
        handles.len() - 60
    );
    assert_eq!(used(&ipam).await, handles.len() as u128);
    let report = ipam
        .check(Duration::ZERO, &|_: &Handle| Ok(()))
        .await
        .unwrap();
    assert!(report.issues.is_empty(), "{:?}", report.issues);
    for h in &handles {
        ipam.release_with(h, delete_record(h)).await.unwrap();
    }
    assert_eq!(used(&ipam).await, 0);
}

/// Within a batch, what a request that turns out to be a duplicate had planned to take
/// (a static address, the last free address) goes to the requests after it, as if it
/// had been refused on its own first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_takes_nothing_from_its_neighbours() {
    let dir = TempDir::new().unwrap();
    // 14 usable addresses in four /30 blocks.
    let (counting, ipam) = counted(dir.path(), config(&["10.171.0.0/28"], 30, 122)).await;
    for i in 0..14 {
        ipam.allocate(req(&format!("f{i}"))).await.unwrap();
    }
    let mut freed = Vec::new();
    for h in ["f0", "f5", "f9"] {
        freed.extend(ipam.release(h).await.unwrap());
    }
    // Three free addresses: the blocker takes the second, the test asks for the first
    // statically, and the last is the only one left for a dynamic request.
    let free_static = freed[0];
    let blocker = AllocRequest {
        static_ips: vec![freed[1]],
        ..req("blocker")
    };
    let blocker = hold_the_lock(&counting, &ipam, blocker).await;
    let spawn = |r: AllocRequest| {
        let ipam = ipam.clone();
        tokio::spawn(async move { ipam.allocate(r).await })
    };
    // One after the other, so they queue in this order.
    let dup_static = spawn(AllocRequest {
        static_ips: vec![free_static],
        ..req("f1")
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let want_static = spawn(AllocRequest {
        static_ips: vec![free_static],
        ..req_with_record("s")
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let dup_dynamic = spawn(req("f2"));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let want_dynamic = spawn(req_with_record("d"));
    tokio::time::sleep(Duration::from_millis(20)).await;
    counting.slow_txns(Duration::ZERO);
    blocker.await.unwrap();

    assert!(matches!(
        dup_static.await.unwrap(),
        Err(IpamError::DuplicateHandle(_))
    ));
    assert_eq!(want_static.await.unwrap().unwrap().ips, vec![free_static]);
    assert!(matches!(
        dup_dynamic.await.unwrap(),
        Err(IpamError::DuplicateHandle(_))
    ));
    assert_eq!(want_dynamic.await.unwrap().unwrap().ips, vec![freed[2]]);
    assert_eq!(used(&ipam).await, 14);
    for n in ["s", "d"] {
        assert!(counting.get(&record_key(n)).await.unwrap().is_some(), "{n}");
    }
}

/// Issue 19, item 9: a static address of one family no longer drops the other family's
/// pool address.
#[tokio::test]
async fn a_static_address_of_one_family_comes_with_a_pool_address_of_the_other() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let dual = ipam(
        &store,
        "node-a",
        config(&["10.21.0.0/24", "fd00:21::/120"], 26, 122),
    )
    .await;
    let v4 = dual
        .allocate(static_req("s4", &["10.21.0.77"]))
        .await
        .unwrap();
    assert_eq!(v4.ips, vec![ip("10.21.0.77"), ip("fd00:21::1")]);
    let v6 = dual
        .allocate(static_req("s6", &["fd00:21::99"]))
        .await
        .unwrap();
    // The block's search start moved past the static address.
    assert_eq!(v6.ips, vec![ip("fd00:21::99"), ip("10.21.0.78")]);
    assert_eq!(dual.get_handle("s6").await.unwrap().unwrap().ips, v6.ips);
    assert_eq!(dual.release("s4").await.unwrap(), v4.ips);

    // The pool side failing fails the whole request, static address included.
    let small = TempDir::new().unwrap();
    let store = open(small.path()).await;
    let ipam = ipam(
        &store,
        "node-a",
        config(&["10.22.0.0/24", "fd00:22::/126"], 26, 126),
    )
    .await;
    for i in 0..3 {
        ipam.allocate(req(&format!("d{i}"))).await.unwrap();
    }
    match ipam.allocate(static_req("s", &["10.22.0.200"])).await {
        Err(IpamError::Exhausted { family, .. }) => assert_eq!(family, Family::V6),
        other => panic!("{other:?}"),
    }
    assert!(ipam.get_handle("s").await.unwrap().is_none());
    let again = ipam
        .allocate(static_req("s2", &["10.22.0.200", "fd00:22::3"]))
        .await;
    assert!(
        matches!(again, Err(IpamError::StaticUnavailable { .. })),
        "fd00:22::3 is taken: {again:?}"
    );
    let freed = ipam.allocate(static_req("s3", &["10.22.0.200"])).await;
    assert!(freed.is_err(), "still no IPv6 address");
    ipam.release("d0").await.unwrap();
    let ok = ipam
        .allocate(static_req("s4", &["10.22.0.200"]))
        .await
        .unwrap();
    assert_eq!(
        ok.ips[0],
        ip("10.22.0.200"),
        "not held by the failed requests"
    );
}

/// Issue 19, item 3: a static address no container can hold is a configuration error,
/// whatever the pools, and takes nothing.
#[tokio::test]
async fn static_addresses_in_special_space_are_refused_as_such() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let ipam = ipam(
        &store,
        "node-a",
        config(&["10.23.0.0/24", "fd00:23::/120"], 26, 122),
    )
    .await;
    for (addr, what) in [
        ("127.0.0.1", "loopback"),
        ("169.254.1.1", "gateway"),
        ("fe80::1", "gateway"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::1", "loopback"),
    ] {
        match ipam.allocate(static_req("bad", &[addr])).await {
            Err(e @ IpamError::UnusableStatic { .. }) => {
                let m = e.to_string();
                assert!(m.contains(addr) && m.contains(what), "{addr}: {m}");
            }
            other => panic!("{addr}: {other:?}"),
        }
    }
    assert!(ipam.get_handle("bad").await.unwrap().is_none());
    assert_eq!(used(&ipam).await, 0);
    assert!(ipam.view().await.unwrap().blocks.is_empty());
}

/// Issue 19, item 3: a pool no container can use is refused at start.
#[tokio::test]
async fn pools_in_special_space_are_refused_at_start() {
    let dir = TempDir::new().unwrap();
    let store: Arc<dyn Store> = open(dir.path()).await;
    for pool in ["169.254.1.0/30", "fe80::/64", "127.0.0.0/24"] {
        match Ipam::new(store.clone(), "n".into(), config(&[pool], 30, 122)).await {
            Err(IpamError::InvalidConfig(m)) => assert!(m.contains(pool), "{m}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("{pool} accepted"),
        }
    }
}

fn with_disabled(mut cfg: IpamConfig, disabled: &[&str]) -> IpamConfig {
    cfg.disabled_pools = disabled.iter().map(|p| p.parse().unwrap()).collect();
    cfg
}

async fn refusal(store: &Arc<EmbeddedStore>, node: &str, cfg: IpamConfig) -> String {
    let s: Arc<dyn Store> = store.clone();
    match Ipam::new(s, node.into(), cfg).await {
        Err(IpamError::InvalidConfig(m)) => m,
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("started"),
    }
}

/// Issue 19, item 4: removing or shrinking a pool under this node's allocations is
/// refused at start with a way out; disabled, the pool keeps its allocations, serves
/// their release and hands out nothing new; drained and removed, its empty blocks go.
#[tokio::test]
async fn a_pool_is_drained_before_it_is_removed() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let old = config(&["10.30.0.0/16"], 26, 122);
    let a = ipam(&store, "node-a", old.clone()).await;
    let held: Vec<_> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(a.allocate(req(&format!("c{i}"))).await.unwrap());
        }
        v
    };
    // Another node's allocation in the same pool is its own business at its start.
    let b = ipam(&store, "node-b", old.clone()).await;
    b.allocate(req("b0")).await.unwrap();
    drop((a, b));

    // Removed: refused, naming the pool, the allocations and how to drain it.
    let m = refusal(&store, "node-a", config(&["10.31.0.0/16"], 26, 122)).await;
    assert!(
        m.contains("pool 10.30.0.0/16, which this node served before")
            && m.contains("3 of this node's allocations")
            && m.contains(&format!("{} (c0)", held[0].ips[0]))
            && m.contains("--disabled-pool 10.30.0.0/16"),
        "{m}"
    );
    // Shrunk past the allocations: refused too.
    let m = refusal(&store, "node-a", config(&["10.30.128.0/17"], 26, 122)).await;
    assert!(m.contains("pool 10.30.0.0/16"), "{m}");
    // Nothing was written by the refusals: the record still names the old pool.
    let m = refusal(&store, "node-a", config(&["10.31.0.0/16"], 26, 122)).await;
    assert!(m.contains("10.30.0.0/16"), "{m}");

    // Disabled: starts, keeps and releases what it holds, hands out nothing new.
    let drain = with_disabled(config(&["10.31.0.0/16"], 26, 122), &["10.30.0.0/16"]);
    let a = ipam(&store, "node-a", drain.clone()).await;
    let view = a.view().await.unwrap();
    let old_view = view
        .pools
        .iter()
        .find(|p| p.cidr == net("10.30.0.0/16"))
        .unwrap();
    assert!(old_view.disabled);
    assert_eq!(old_view.used, 4, "node-b's included");
    let fresh = a.allocate(req("new")).await.unwrap();
    assert!(net("10.31.0.0/16").contains(&fresh.ips[0]), "{fresh:?}");
    let free_in_old_block = IpAddr::from([10, 30, 0, 40]);
    match a.allocate(static_req("st", &["10.30.0.40"])).await {
        Err(IpamError::StaticUnavailable { ip: got, reason }) => {
            assert_eq!(got, free_in_old_block);
            assert!(reason.contains("disabled"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let report = a.check(Duration::ZERO, &|_| Ok(())).await.unwrap();
    assert!(
        !report
            .issues
            .iter()
            .any(|i| matches!(i, IpamIssue::BlockOutsidePools { .. })),
        "a disabled pool's blocks are inside a pool: {report:?}"
    );
    for h in &held {
        assert_eq!(a.release(&h.handle).await.unwrap(), h.ips);
    }
    drop(a);

    // Drained on this node: it may drop the pool. Its empty block goes; node-b's block
    // (still in use) is reported by check, and by nothing else.
    let ours = config(&["10.31.0.0/16"], 26, 122);
    let a = ipam(&store, "node-a", ours).await;
    let blocks = a.view().await.unwrap().blocks;
    let old_blocks: Vec<_> = blocks
        .iter()
        .filter(|b| net("10.30.0.0/16").contains(&b.cidr))
        .collect();
    assert_eq!(old_blocks.len(), 1, "{blocks:?}");
    assert_eq!(old_blocks[0].affinity.as_deref(), Some("node-b"));
    let report = a.check(Duration::ZERO, &|_| Ok(())).await.unwrap();
    let outside: Vec<_> = report
        .issues
        .iter()
        .filter_map(|i| match i {
            IpamIssue::BlockOutsidePools { block, used, .. } => Some((*block, *used)),
            _ => None,
        })
        .collect();
    assert_eq!(outside, [(old_blocks[0].cidr, 1)], "{report:?}");
    // node-b still holds an address there: its own start without the pool refuses.
    let m = refusal(&store, "node-b", config(&["10.31.0.0/16"], 26, 122)).await;
    assert!(
        m.contains("1 of this node's allocations") && m.contains("(b0)"),
        "{m}"
    );
}

/// Issue 19, item 4: without a record of the pools served (data of an older agent),
/// the refusal names the blocks.
#[tokio::test]
async fn a_removed_pool_without_a_record_is_named_by_its_blocks() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let a = ipam(&store, "node-a", config(&["10.32.0.0/24"], 26, 122)).await;
    a.allocate(req("c0")).await.unwrap();
    drop(a);
    store.delete(&keys::served("node-a")).await.unwrap();
    let m = refusal(&store, "node-a", config(&["10.33.0.0/24"], 26, 122)).await;
    assert!(
        m.contains("block 10.32.0.0/26 lies outside every configured pool")
            && m.contains("10.32.0.1 (c0)"),
        "{m}"
    );
}

/// Issue 19, item 4: the tunnel address leaves a disabled pool at start, so it never
/// keeps the pool from draining.
#[tokio::test]
async fn the_tunnel_address_moves_out_of_a_disabled_pool() {
    use straitd::ipam::tunnel::ensure_tunnel_addresses;
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let a = ipam(&store, "node-a", config(&["10.34.0.0/24"], 26, 122)).await;
    let before = ensure_tunnel_addresses(&a).await.unwrap();
    assert_eq!(before.v4, Some("10.34.0.1".parse().unwrap()));
    assert_eq!(ensure_tunnel_addresses(&a).await.unwrap(), before, "kept");
    drop(a);
    let drain = with_disabled(config(&["10.35.0.0/24"], 26, 122), &["10.34.0.0/24"]);
    let a = ipam(&store, "node-a", drain).await;
    let after = ensure_tunnel_addresses(&a).await.unwrap();
    assert_eq!(after.v4, Some("10.35.0.1".parse().unwrap()));
    let view = a.view().await.unwrap();
    let old = view.pools.iter().find(|p| p.disabled).unwrap();
    assert_eq!(old.used, 0, "the old pool is drained");
}

/// `req(handle)` as Docker's IPAM driver asks: pool addresses of `families` only,
/// inside `within` if it names ranges.
fn docker_req(handle: &str, families: &[Family], within: &[&str]) -> AllocRequest {
    AllocRequest {
        families: families.to_vec(),
        within: within.iter().map(|s| net(s)).collect(),
        ..req(handle)
    }
}

/// Issue 13: Docker's IPAM asks per family, for a network's subnet or IP range inside a
/// pool; what does not fit fails with the range or family named and writes nothing.
#[tokio::test]
async fn one_family_at_a_time_inside_a_networks_range() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let ipam = ipam(
        &store,
        "node-a",
        config(&["10.40.0.0/24", "fd00:40::/120"], 26, 122),
    )
    .await;

    let v6 = ipam.allocate(docker_req("v6", &[Family::V6], &[])).await;
    assert_eq!(v6.unwrap().ips, [ip("fd00:40::1")], "IPv6 only");
    let both = ipam
        .allocate(docker_req("both", &[Family::V6, Family::V4], &[]))
        .await
        .unwrap();
    assert_eq!(both.ips, [ip("10.40.0.1"), ip("fd00:40::2")], "IPv4 first");

    let mut got = BTreeSet::new();
    for i in 0..8 {
        let a = ipam
            .allocate(docker_req(
                &format!("r{i}"),
                &[Family::V4],
                &["10.40.0.128/29"],
            ))
            .await
            .unwrap();
        assert_eq!(a.ips.len(), 1, "{a:?}");
        assert!(net("10.40.0.128/29").contains(&a.ips[0]), "{a:?}");
        assert!(got.insert(a.ips[0]));
        assert_eq!(
            ipam.get_handle(&a.handle).await.unwrap().unwrap().ips,
            a.ips
        );
    }
    let full = ipam
        .allocate(docker_req("r8", &[Family::V4], &["10.40.0.128/29"]))
        .await;
    match full {
        Err(IpamError::Exhausted { family, reason, .. }) => {
            assert_eq!(family, Family::V4);
            assert_eq!(reason, "no free address in 10.40.0.128/29");
        }
        other => panic!("{other:?}"),
    }
    assert!(ipam.get_handle("r8").await.unwrap().is_none());
    // The range's block is this node's now; outside the range it serves as before.
    let plain = ipam.allocate(req("plain")).await.unwrap();
    assert_eq!(plain.ips.len(), 2);
    assert!(!net("10.40.0.128/29").contains(&plain.ips[0]), "{plain:?}");

    // A static address is not bound by the range, and covers its family.
    let s = AllocRequest {
        static_ips: vec![ip("10.40.0.5")],
        ..docker_req("s", &[Family::V4], &["10.40.0.128/29"])
    };
    assert_eq!(ipam.allocate(s).await.unwrap().ips, [ip("10.40.0.5")]);

    let before = used(&ipam).await;
    let outside = ipam
        .allocate(docker_req("o", &[Family::V4], &["192.168.7.0/24"]))
        .await;
    match outside {
        Err(IpamError::Exhausted { reason, .. }) => {
            assert!(reason.contains("192.168.7.0/24"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let v4_only = ipam
        .allocate(docker_req(
            "w",
            &[Family::V4, Family::V6],
            &["10.40.0.192/30"],
        ))
        .await;
    match v4_only {
        Err(IpamError::Exhausted { family, .. }) => assert_eq!(family, Family::V6),
        other => panic!("no IPv6 range given: {other:?}"),
    }
    assert_eq!(used(&ipam).await, before, "the failures took nothing");
    assert!(ipam.get_handle("w").await.unwrap().is_none());

    // A family without an enabled pool is named.
    let v4_dir = TempDir::new().unwrap();
    let v4_store = open(v4_dir.path()).await;
    let v4 = ipam_on_v4_only(&v4_store).await;
    match v4.allocate(docker_req("x", &[Family::V6], &[])).await {
        Err(IpamError::Exhausted { family, reason, .. }) => {
            assert_eq!(family, Family::V6);
            assert!(reason.contains("no enabled IPv6 pool"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

async fn ipam_on_v4_only(store: &Arc<EmbeddedStore>) -> Ipam {
    ipam(store, "node-a", config(&["10.41.0.0/24"], 26, 122)).await
}

/// Issue 13: who holds an address, read from the store (Docker's ReleaseAddress names
/// only the address).
#[tokio::test]
async fn holder_of_an_address() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let a = ipam(
        &store,
        "node-a",
        config(&["10.42.0.0/24", "fd00:42::/120"], 26, 122),
    )
    .await;
    let b = ipam(
        &store,
        "node-b",
        config(&["10.42.0.0/24", "fd00:42::/120"], 26, 122),
    )
    .await;
    let h1 = a.allocate(req("h1")).await.unwrap();
    let h2 = b.allocate(req("h2")).await.unwrap();
    for (ips, h) in [(&h1.ips, "h1"), (&h2.ips, "h2")] {
        for &x in ips {
            assert_eq!(a.holder_of(x).await.unwrap().as_deref(), Some(h), "{x}");
        }
    }
    assert_eq!(
        b.holder_of(h1.ips[0]).await.unwrap().as_deref(),
        Some("h1"),
        "any node's"
    );
    assert_eq!(
        a.holder_of(ip("10.42.0.9")).await.unwrap(),
        None,
        "free ordinal"
    );
    assert_eq!(
        a.holder_of(ip("10.42.0.200")).await.unwrap(),
        None,
        "no block"
    );
    assert_eq!(
        a.holder_of(ip("192.168.0.1")).await.unwrap(),
        None,
        "no pool"
    );
    a.release("h1").await.unwrap();
    assert_eq!(a.holder_of(h1.ips[0]).await.unwrap(), None, "released");
}

/// Issue 13: every handle under a prefix, of any node (Docker's reservations live
/// under `DOCKER_HANDLE_PREFIX`).
#[tokio::test]
async fn handles_with_a_prefix() {
    use straitd::ipam::DOCKER_HANDLE_PREFIX;
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let a = ipam(&store, "node-a", config(&["10.43.0.0/24"], 26, 122)).await;
    let b = ipam(&store, "node-b", config(&["10.43.0.0/24"], 26, 122)).await;
    let d = |rest: &str| format!("{DOCKER_HANDLE_PREFIX}{rest}");
    a.allocate(req(&d("net1.a"))).await.unwrap();
    a.allocate(req("net1.c1.eth0")).await.unwrap();
    b.allocate(req(&d("net1.b"))).await.unwrap();
    b.allocate(req(&d("net2.c"))).await.unwrap();

    let names = |hs: Vec<Handle>| -> Vec<(String, String)> {
        hs.into_iter().map(|h| (h.handle, h.node)).collect()
    };
    assert_eq!(
        names(a.handles_with_prefix(&d("net1.")).await.unwrap()),
        [
            (d("net1.a"), "node-a".to_string()),
            (d("net1.b"), "node-b".to_string())
        ]
    );
    assert_eq!(
        a.handles_with_prefix(DOCKER_HANDLE_PREFIX)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(a.handles_with_prefix("").await.unwrap().len(), 4);
    assert!(a.handles_with_prefix("nothing").await.unwrap().is_empty());
    let h = &b.handles_with_prefix(&d("net2.")).await.unwrap()[0];
    assert_eq!(
        (h.ips.len(), h.container_id.as_str()),
        (1, "ctr-docker-ipam.net2.c")
    );
}

/// `--ipam kubernetes`: a node confined to its podCIDRs allocates only inside them
/// (only their families), each node in its own; a range outside every pool refuses
/// to start.
#[tokio::test]
async fn confined_to_the_nodes_pod_cidrs() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path()).await;
    let cfg = config(&["10.20.0.0/16", "fd00:20::/48"], 26, 122);
    let a = ipam(&store, "node-a", cfg.clone())
        .await
        .confined_to(vec!["10.20.7.0/24".parse().unwrap()])
        .unwrap();
    let b = ipam(&store, "node-b", cfg.clone())
        .await
        .confined_to(vec![
            "10.20.9.0/24".parse().unwrap(),
            "fd00:20:0:9::/64".parse().unwrap(),
        ])
        .unwrap();
    let in_a: IpNet = "10.20.7.0/24".parse().unwrap();
    for i in 0..70 {
        let got = a.allocate(req(&format!("a{i}"))).await.unwrap();
        assert_eq!(got.ips.len(), 1, "IPv4 only: {:?}", got.ips);
        assert!(in_a.contains(&got.ips[0]), "{:?}", got.ips);
    }
    let got = b.allocate(req("b0")).await.unwrap();
    // As in Calico's blocks, every address of the range is handed out, the first too.
    assert_eq!(got.ips, vec![ip("10.20.9.0"), ip("fd00:20:0:9::")]);
    assert_eq!(b.node_ranges().len(), 2);

    let err = ipam(&store, "node-c", cfg)
        .await
        .confined_to(vec!["10.99.0.0/24".parse().unwrap()])
        .err()
        .expect("a range outside the pools is refused");
    assert!(err.to_string().contains("10.99.0.0/24"), "{err}");
}
