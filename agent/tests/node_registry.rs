//! The node registry against a private etcd (no root needed): the record appears bound
//! to the node's lease, follows changes, goes away when nobody keeps the lease alive,
//! and comes back by itself when the lease is lost (revoked, expired) or etcd restarts.
//!
//! Without an `etcd` binary every test prints `SKIP` and passes, unless
//! `STRAIT_REQUIRE_PRIVILEGED=1` (CI) makes that a failure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_api::{FabricMode, NodeRecord};
use strait_testbeds::etcd::{Etcd, require_etcd};
use straitd::node::{FabricInfo, Registry, RegistryConfig, last_record_key, node_key};
use straitd::store::etcd::{EtcdOptions, EtcdStore};
use straitd::store::{KeyValue, Store};

/// etcd's own minimum lease TTL is about 2 s; 3 s is the agent's minimum.
const TTL: Duration = Duration::from_secs(3);
/// Longest wait for something the registry does by itself (several TTLs).
const WAIT: Duration = Duration::from_secs(30);

fn options() -> EtcdOptions {
    EtcdOptions {
        dial_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
        ..EtcdOptions::default()
    }
}

async fn connect(etcd: &Etcd) -> Arc<dyn Store> {
    EtcdStore::connect(&etcd.endpoints(), options())
        .await
        .expect("connect to the test etcd")
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn record(name: &str) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        underlay_v4: Some("192.0.2.1".parse().unwrap()),
        underlay_v6: None,
        fabric: FabricMode::Vxlan,
        vtep_mac: None,
        vxlan_vni: Some(4096),
        vxlan_port: Some(4789),
        tunnel_v4: None,
        tunnel_v6: None,
        agent_version: "0.1.0".into(),
        started: 1,
        bgp: None,
        site: strait_api::ipsec::DEFAULT_SITE.into(),
        ipsec: None,
    }
}

fn registry(store: &Arc<dyn Store>, name: &str) -> Arc<Registry> {
    Registry::new(
        store.clone(),
        RegistryConfig { lease_ttl: TTL },
        record(name),
    )
}

/// Polls the node's key until `want` holds for it (`None`: absent); panics after
/// [`WAIT`] saying `what`.
async fn wait_for(
    store: &Arc<dyn Store>,
    node: &str,
    what: &str,
    want: impl Fn(Option<&KeyValue>) -> bool,
) -> Option<KeyValue> {
    let deadline = Instant::now() + WAIT;
    loop {
        let kv = store.get(&node_key(node)).await.ok().flatten();
        if want(kv.as_ref()) {
            return kv;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {WAIT:?} (last seen {kv:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn decode(kv: &KeyValue) -> NodeRecord {
    serde_json::from_slice(&kv.value).expect("node record JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_is_bound_to_the_lease_and_follows_changes() {
    if !require_etcd("record_is_bound_to_the_lease_and_follows_changes") {
        return;
    }
    let etcd = blocking(Etcd::start);
    let store = connect(&etcd).await;
    let reg = registry(&store, "h1");
    let keepalive = reg.spawn();

    let kv = wait_for(&store, "h1", "record written", |kv| kv.is_some())
        .await
        .unwrap();
    let lease = reg.lease().expect("a lease once registered");
    assert_eq!(kv.lease, Some(lease), "the record rides on the node lease");
    assert_eq!(decode(&kv), record("h1"));

    // A change of the fabric's part is rewritten under the same lease.
    reg.set_fabric_info(FabricInfo {
        vtep_mac: Some([0x0e, 0x12, 0x34, 0x56, 0x78, 0x9a]),
        tunnel_v4: Some("10.244.0.1".parse().unwrap()),
        tunnel_v6: Some("fd00:244::1".parse().unwrap()),
    })
    .await
    .expect("rewrite the record");
    let kv = store.get(&node_key("h1")).await.unwrap().unwrap();
    let r = decode(&kv);
    assert_eq!(r.vtep_mac.as_deref(), Some("0e:12:34:56:78:9a"));
    assert_eq!(r.tunnel_v4, Some("10.244.0.1".parse().unwrap()));
    assert_eq!(r.tunnel_v6, Some("fd00:244::1".parse().unwrap()));
    assert_eq!(kv.lease, Some(lease));
    assert_eq!(reg.nodes().await.unwrap(), vec![r.clone()]);

    // Kept alive, the record outlives its TTL several times over.
    tokio::time::sleep(TTL * 3).await;
    assert!(
        store.get(&node_key("h1")).await.unwrap().is_some(),
        "the keep-alive loop keeps the record"
    );

    // The agent dies (nobody refreshes): the record goes with the lease. Nothing
    // revokes it; it expires.
    drop(keepalive);
    wait_for(&store, "h1", "record gone after its lease expired", |kv| {
        kv.is_none()
    })
    .await;
    assert!(reg.nodes().await.unwrap().is_empty());
    // The last record stays, without a lease, as last written: other hosts keep
    // routing to the node by it (issue 19, item 10).
    let last = store.get(&last_record_key("h1")).await.unwrap();
    let last = last.expect("the last record outlives the lease");
    assert_eq!(last.lease, None);
    assert_eq!(decode(&last), r);
    assert_eq!(reg.last_records().await.unwrap(), vec![r]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_is_replaced_and_the_record_put_again() {
    if !require_etcd("a_lost_lease_is_replaced_and_the_record_put_again") {
        return;
    }
    let etcd = blocking(Etcd::start);
    let store = connect(&etcd).await;
    let reg = registry(&store, "h2");
    let _keepalive = reg.spawn();
    let first = wait_for(&store, "h2", "record written", |kv| kv.is_some())
        .await
        .unwrap()
        .lease
        .unwrap();

    // The lease is gone behind the agent's back (what a long outage does): etcd
    // answers the next refresh with "lease not found".
    store.lease_revoke(first).await.unwrap();
    let kv = wait_for(&store, "h2", "record back under a new lease", |kv| {
        kv.is_some_and(|kv| kv.lease.is_some_and(|l| l != first))
    })
    .await
    .unwrap();
    assert_eq!(reg.lease(), kv.lease, "the registry follows its new lease");
    assert_eq!(decode(&kv), record("h2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_outlives_an_etcd_restart() {
    if !require_etcd("the_record_outlives_an_etcd_restart") {
        return;
    }
    let mut etcd = blocking(Etcd::start);
    let store = connect(&etcd).await;
    let reg = registry(&store, "h3");
    let _keepalive = reg.spawn();
    wait_for(&store, "h3", "record written", |kv| kv.is_some()).await;

    // etcd crashes for longer than the TTL, then comes back on the same data dir.
    blocking(|| etcd.kill());
    tokio::time::sleep(TTL + Duration::from_secs(1)).await;
    blocking(|| etcd.restart());

    wait_for(&store, "h3", "record present after the restart", |kv| {
        kv.is_some()
    })
    .await;
    // Refreshing resumed by itself: two TTLs later the record is still there, under
    // the lease the registry holds.
    tokio::time::sleep(TTL * 2).await;
    let kv = store
        .get(&node_key("h3"))
        .await
        .unwrap()
        .expect("record kept alive after the restart");
    assert_eq!(kv.lease, reg.lease());
    assert!(reg.lease().is_some());
}
