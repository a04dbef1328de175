//! Policy's cluster-wide state on a real etcd (Debian's etcd-server, no root
//! needed): identities allocated by agents racing on one store, their GC, and two
//! agents' control planes (on the in-memory dataplane) agreeing on an endpoint's
//! identity and address across nodes.
//!
//! Without an `etcd` binary every test prints `SKIP` and passes, unless
//! `STRAIT_REQUIRE_PRIVILEGED=1` (CI) makes that a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use strait_api::policy::PolicyMode;
use strait_policy::view::IdentityLabels;
use strait_testbeds::etcd::{Etcd, require_etcd};
use straitd::policy::fake::{FakeDataplane, FakeHost};
use straitd::policy::identity::Identities;
use straitd::policy::{PolicyAgent, PolicyConfig};
use straitd::store::etcd::{EtcdOptions, EtcdStore};
use straitd::store::{PREFIX, Store};

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn connect(etcd: &Etcd) -> Arc<dyn Store> {
    EtcdStore::connect(&etcd.endpoints(), EtcdOptions::default())
        .await
        .expect("connect to the test etcd")
}

fn labels(ns: &str, app: &str) -> IdentityLabels {
    IdentityLabels {
        namespace: ns.into(),
        labels: [("app".to_string(), app.to_string())].into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_racing_allocate_one_identity_per_label_set() {
    if !require_etcd("two_agents_racing_allocate_one_identity_per_label_set") {
        return;
    }
    let etcd = blocking(Etcd::start);
    // Two agents: two connections, two allocators.
    let a = Identities::new(connect(&etcd).await, Duration::from_secs(300));
    let b = Identities::new(connect(&etcd).await, Duration::from_secs(300));
    let sets: Vec<IdentityLabels> = (0..16)
        .map(|i| labels("race", &format!("a{}", i % 5)))
        .collect();
    let run = |ids: Identities, sets: Vec<IdentityLabels>| {
        tokio::spawn(async move {
            let mut out = Vec::new();
            for s in sets {
                let id = ids.resolve(&s).await.expect("resolve");
                out.push((s, id));
            }
            out
        })
    };
    let mut reversed = sets.clone();
    reversed.reverse();
    let (ra, rb) = tokio::join!(run(a.clone(), sets), run(b, reversed));
    let mut by_set: BTreeMap<IdentityLabels, BTreeSet<u32>> = BTreeMap::new();
    for (s, id) in ra.unwrap().into_iter().chain(rb.unwrap()) {
        by_set.entry(s).or_default().insert(id);
    }
    assert_eq!(by_set.len(), 5);
    for (s, ids) in &by_set {
        assert_eq!(ids.len(), 1, "{s:?} got {ids:?}");
    }
    assert_eq!(
        a.list().await.unwrap().len(),
        5,
        "one stored identity per set"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_identities_are_collected_after_the_grace_and_used_ones_stay() {
    if !require_etcd("unused_identities_are_collected_after_the_grace_and_used_ones_stay") {
        return;
    }
    let etcd = blocking(Etcd::start);
    let ids = Identities::new(connect(&etcd).await, Duration::from_secs(60));
    let used = ids.resolve(&labels("gc", "used")).await.unwrap();
    let idle = ids.resolve(&labels("gc", "idle")).await.unwrap();
    let referenced = move || async move { Ok([used].into_iter().collect::<BTreeSet<u32>>()) };
    assert!(ids.collect(referenced, 1_000).await.unwrap().is_empty());
    assert_eq!(ids.collect(referenced, 1_060).await.unwrap(), vec![idle]);
    let left = ids.list().await.unwrap();
    assert!(left.contains_key(&used) && !left.contains_key(&idle));
    let again = ids.resolve(&labels("gc", "idle")).await.unwrap();
    assert!(again > idle, "a collected number is never handed out again");
}

/// A record as attach writes it (version 2).
fn record(node: &str, id: &str, link: &str, ip: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "version": 2, "id": id, "node": node, "network": "n", "container_id": id,
        "ifname": "eth0", "netns": "/run/netns/x", "host_ifname": link,
        "mac": "02:00:00:00:00:01", "host_mac": "02:00:00:00:00:02",
        "ips": [ip], "mtu": 1500, "namespace": "prod", "labels": {"app": "web"},
        "handle": id, "created": 1,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_maps_an_endpoint_address_to_the_identity_its_node_gave_it() {
    if !require_etcd("every_node_maps_an_endpoint_address_to_the_identity_its_node_gave_it") {
        return;
    }
    let etcd = blocking(Etcd::start);
    let start = async |node: &str| {
        let dp = Arc::new(FakeDataplane::default());
        let host = Arc::new(FakeHost::default());
        let agent = PolicyAgent::new(
            PolicyConfig::new(node, PolicyMode::Enforce),
            connect(&etcd).await,
            dp.clone(),
            host.clone(),
        );
        let (stop, rx) = tokio::sync::watch::channel(false);
        agent.spawn(rx);
        (dp, host, stop)
    };
    let (dp_a, _host_a, _stop_a) = start("a").await;
    let (dp_b, host_b, _stop_b) = start("b").await;
    host_b.set_link("strait1", 5);
    let store = connect(&etcd).await;
    store
        .put(
            &format!("{PREFIX}endpoints/b/web"),
            record("b", "web", "strait1", "10.1.1.5/32"),
            None,
        )
        .await
        .unwrap();
    let addr: ipnet::IpNet = "10.1.1.5/32".parse().unwrap();
    let t0 = std::time::Instant::now();
    let (on_a, installed_b) = loop {
        let on_a = dp_a.lock().ipcache.get(&addr).copied();
        let installed_b = dp_b.lock().entries.get(&5).map(|i| i.identity);
        if let (Some(x), Some(y)) = (on_a, installed_b) {
            break (x, y);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "not converged: a {on_a:?}, b {installed_b:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        on_a, installed_b,
        "node a classifies b's endpoint by the identity b installed"
    );
    assert!(
        dp_a.lock().entries.is_empty(),
        "node a enforces nothing of b's"
    );
}
