//! EtcdStore against a private etcd (Debian's etcd-server, no root needed): the store
//! conformance suite, plus what only a networked store has to get right — resuming
//! after compaction, failing fast when etcd is unreachable, recovering after an etcd
//! restart without being recreated, and keeping a lease alive.
//!
//! Without an `etcd` binary every test prints `SKIP` and passes, unless
//! `STRAIT_REQUIRE_PRIVILEGED=1` (CI) makes that a failure.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_store_conformance as conformance;
use strait_testbeds::etcd::{Etcd, require_etcd};
use straitd::store::etcd::{EtcdOptions, EtcdStore, LeaseLoss, LeaseState};
use straitd::store::{
    Compare, EventKind, PREFIX, Revision, Store, StoreError, Txn, TxnOp, Watch, WatchMessage,
};

const WAIT: Duration = conformance::WAIT;

/// Short deadlines, so the failure cases finish quickly.
fn options() -> EtcdOptions {
    EtcdOptions {
        dial_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
        watch_backoff_max: Duration::from_millis(500),
        ..EtcdOptions::default()
    }
}

async fn connect(etcd: &Etcd) -> Arc<EtcdStore> {
    EtcdStore::connect(&etcd.endpoints(), options())
        .await
        .expect("connect to the test etcd")
}

/// Run blocking test-bed work (starting or killing etcd) without stalling the runtime's
/// other tasks (watch forwarders must keep running).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn next(watch: &mut Watch, what: &str) -> WatchMessage {
    tokio::time::timeout(WAIT, watch.rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: no watch message within {WAIT:?}"))
        .unwrap_or_else(|| panic!("{what}: watch ended"))
}

/// The next Events message, as (key, value, mod_revision) of its single event.
async fn next_put(watch: &mut Watch, what: &str) -> (String, Vec<u8>, Revision) {
    match next(watch, what).await {
        WatchMessage::Events(events) => {
            assert_eq!(events.len(), 1, "{what}: {events:?}");
            assert_eq!(events[0].kind, EventKind::Put, "{what}");
            let kv = &events[0].kv;
            (kv.key.clone(), kv.value.clone(), kv.mod_revision)
        }
        other => panic!("{what}: expected Events, got {other:?}"),
    }
}

fn ns(test: &str) -> String {
    format!("{PREFIX}test-etcd/{test}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    if !require_etcd("conformance_suite") {
        return;
    }
    let started = Instant::now();
    // One etcd for the whole suite: the cases use their own namespaces, and run_all
    // runs them one after another, as their exact revision checks need.
    let etcd = blocking(Etcd::start);
    let endpoints = etcd.endpoints();
    conformance::run_all(|| {
        let endpoints = endpoints.clone();
        async move {
            let store: Arc<dyn Store> = EtcdStore::connect(&endpoints, options())
                .await
                .expect("connect");
            store
        }
    })
    .await;
    eprintln!("etcd conformance suite: {:?}", started.elapsed());
}

/// A watcher that fell behind a compaction gets `Compacted`, re-reads, and follows on
/// from the read's revision without missing a later change. Compacting an already
/// compacted revision reports the real compact revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resume_after_compaction() {
    if !require_etcd("watch_resume_after_compaction") {
        return;
    }
    let etcd = blocking(Etcd::start);
    let store = connect(&etcd).await;
    let ns = ns("compaction");
    let mut revs = Vec::new();
    for i in 0..5u8 {
        revs.push(
            store
                .put(&format!("{ns}k{i}"), vec![i], None)
                .await
                .unwrap(),
        );
    }
    // The watcher saw up to revs[1], then was away while history was compacted.
    let resume_from = revs[1] + 1;
    store.compact(revs[3]).await.expect("compact");

    let mut watch = store.watch(&ns, resume_from).await.expect("watch");
    match next(&mut watch, "resume below the compaction").await {
        WatchMessage::Compacted { compact_revision } => assert_eq!(compact_revision, revs[3]),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(WAIT, watch.rx.recv())
            .await
            .expect("the watch ends after Compacted")
            .is_none()
    );

    // Re-read, then watch from the read's revision + 1.
    let read = store.range(&ns).await.expect("range");
    assert_eq!(read.kvs.len(), 5, "compaction keeps the data");
    let mut watch = store.watch(&ns, read.revision + 1).await.expect("watch");
    let r = store
        .put(&format!("{ns}after"), b"x".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(
        next_put(&mut watch, "after re-read").await,
        (format!("{ns}after"), b"x".to_vec(), r)
    );

    // Watching from exactly the compact revision is compacted too (the trait's rule).
    let mut at = store.watch(&ns, revs[3]).await.expect("watch");
    assert!(matches!(
        next(&mut at, "watch at the compact revision").await,
        WatchMessage::Compacted { .. }
    ));
    // And one above it replays.
    let mut above = store.watch(&ns, revs[3] + 1).await.expect("watch");
    assert_eq!(
        next_put(&mut above, "watch above the compact revision")
            .await
            .2,
        revs[4]
    );

    match store.compact(revs[2]).await {
        Err(StoreError::Compacted {
            requested,
            compact_revision,
        }) => assert_eq!((requested, compact_revision), (revs[2], revs[3])),
        other => panic!("compacting below the compact revision: {other:?}"),
    }
}

/// Nothing listening, or a peer that accepts and never answers: every call fails with
/// `Unavailable` within about the request timeout, never hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_is_unavailable_quickly() {
    // Needs no etcd binary at all.
    let limit = options().request_timeout + Duration::from_secs(2);

    // A port nobody listens on (bound, then released).
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    // A peer that accepts connections and then says nothing.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            held.push(conn);
        }
    });

    for url in [closed, silent_url] {
        let started = Instant::now();
        let result = EtcdStore::connect(std::slice::from_ref(&url), options()).await;
        let took = started.elapsed();
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "connect to {url}: {result:?}"
        );
        assert!(took < limit, "connect to {url} took {took:?}");
        eprintln!("connect to unreachable {url}: Unavailable after {took:?}");
    }
}

/// A connected etcd that stops answering (SIGSTOP: the connection stays up) makes calls
/// fail with `Unavailable` after the request timeout, not hang; once it answers again,
/// so does the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_etcd_is_unavailable_not_a_hang() {
    if !require_etcd("hung_etcd_is_unavailable_not_a_hang") {
        return;
    }
    let etcd = blocking(Etcd::start);
    let store = connect(&etcd).await;
    let k = format!("{}k", ns("hung"));
    store.put(&k, b"v".to_vec(), None).await.unwrap();
    etcd.freeze();
    let started = Instant::now();
    let get = store.get(&k).await;
    let put = store.put(&k, b"w".to_vec(), None).await;
    let took = started.elapsed();
    etcd.thaw();
    assert!(matches!(get, Err(StoreError::Unavailable(_))), "{get:?}");
    assert!(matches!(put, Err(StoreError::Unavailable(_))), "{put:?}");
    let limit = 2 * options().request_timeout + Duration::from_secs(2);
    assert!(took < limit, "two calls to a hung etcd took {took:?}");
    eprintln!("two calls to a frozen etcd: Unavailable after {took:?}");
    // The put may or may not have been applied (the outcome of a timed-out write is
    // unknown); either way the store answers again.
    let value = wait_available(|| store.get(&k)).await.map(|kv| kv.value);
    assert!(
        value == Some(b"v".to_vec()) || value == Some(b"w".to_vec()),
        "{value:?}"
    );
}

/// etcd killed under a connected store: every call fails with `Unavailable` quickly;
/// after etcd restarts on the same data dir and ports, the same store works again and
/// a watch opened before the crash delivers later changes without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_etcd_restart() {
    if !require_etcd("reconnects_after_etcd_restart") {
        return;
    }
    let mut etcd = blocking(Etcd::start);
    let store = connect(&etcd).await;
    assert_eq!(
        store.describe(),
        format!("etcd:{}", etcd.client_url()),
        "describe"
    );
    let ns = ns("restart");
    let k = format!("{ns}k");
    let mut watch = store.watch(&ns, 0).await.expect("watch");
    let r1 = store.put(&k, b"before".to_vec(), None).await.unwrap();
    assert_eq!(next_put(&mut watch, "before the crash").await.2, r1);
    let lease = store.lease_grant(Duration::from_secs(60)).await.unwrap();

    blocking(|| etcd.kill());
    let limit = options().request_timeout + Duration::from_secs(2);
    let started = Instant::now();
    let results: Vec<(&str, Result<(), StoreError>)> = vec![
        ("get", store.get(&k).await.map(drop)),
        ("range", store.range(&ns).await.map(drop)),
        ("put", store.put(&k, vec![], None).await.map(drop)),
        ("delete", store.delete(&k).await.map(drop)),
        (
            "txn",
            store
                .txn(Txn::new().when([Compare::absent(&k)]))
                .await
                .map(drop),
        ),
        ("revision", store.revision().await.map(drop)),
        ("watch", store.watch(&ns, 0).await.map(drop)),
        (
            "lease_grant",
            store.lease_grant(Duration::from_secs(5)).await.map(drop),
        ),
        ("lease_keep_alive", store.lease_keep_alive(lease).await),
        ("compact", store.compact(1).await),
    ];
    let took = started.elapsed();
    for (what, result) in results {
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{what} while etcd is down: {result:?}"
        );
    }
    eprintln!("10 calls against a killed etcd: all Unavailable in {took:?}");
    assert!(
        took < limit * 10,
        "calls against a dead etcd took {took:?} in all"
    );

    blocking(|| etcd.restart());
    // The channel reconnects on its own; the first calls may still see the old
    // connection's failure, so allow a short settling period.
    let back = Instant::now();
    let deadline = back + Duration::from_secs(10);
    let r2 = loop {
        match store.put(&k, b"after".to_vec(), None).await {
            Ok(r) => break r,
            Err(StoreError::Unavailable(e)) if Instant::now() < deadline => {
                eprintln!("after restart: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("put after restart: {e}"),
        }
    };
    eprintln!(
        "store usable again {:?} after etcd was ready",
        back.elapsed()
    );
    assert_eq!(
        r2,
        r1 + 1,
        "etcd kept its revision across the restart: data dir reused"
    );
    assert_eq!(
        store.get(&k).await.unwrap().map(|kv| kv.value),
        Some(b"after".to_vec())
    );
    store
        .lease_keep_alive(lease)
        .await
        .expect("a lease survives an etcd restart");

    // The watch opened before the crash resumed by itself: the next change, no gap.
    assert_eq!(
        next_put(&mut watch, "after the restart").await,
        (k.clone(), b"after".to_vec(), r2)
    );
    let r3 = store.put(&k, b"later".to_vec(), None).await.unwrap();
    assert_eq!(next_put(&mut watch, "later").await.2, r3);
}

/// The keep-alive task holds a lease (and its key) well past its TTL, and reports the
/// loss once etcd no longer has the lease; with etcd gone it reports the lease
/// unconfirmed after one TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_task_holds_and_reports_loss() {
    if !require_etcd("keepalive_task_holds_and_reports_loss") {
        return;
    }
    let mut etcd = blocking(Etcd::start);
    let store = connect(&etcd).await;
    let ns = ns("keepalive");
    let k = format!("{ns}node");
    let ttl = Duration::from_secs(2);
    let lease = store.lease_grant(ttl).await.unwrap();
    store.put(&k, b"alive".to_vec(), Some(lease)).await.unwrap();
    let mut handle = store.spawn_keepalive(lease, ttl);
    assert_eq!(handle.lease(), lease);

    tokio::time::sleep(ttl * 3).await;
    assert_eq!(handle.state(), LeaseState::Alive, "refreshed past 3 TTLs");
    assert_eq!(
        store.get(&k).await.unwrap().map(|kv| kv.lease),
        Some(Some(lease)),
        "the key of a kept-alive lease outlives its TTL"
    );

    // etcd loses the lease (revoked by someone else): reported within a refresh period.
    let mut watch = store.watch(&ns, 0).await.unwrap();
    store.lease_revoke(lease).await.unwrap();
    let started = Instant::now();
    let loss = tokio::time::timeout(WAIT, handle.lost())
        .await
        .expect("loss reported");
    assert_eq!(loss, LeaseLoss::NotFound);
    eprintln!("revoked lease reported lost after {:?}", started.elapsed());
    match next(&mut watch, "the lease's key goes").await {
        WatchMessage::Events(events) => assert_eq!(events[0].kind, EventKind::Delete),
        other => panic!("{other:?}"),
    }

    // etcd unreachable: the lease can no longer be confirmed; reported after one TTL.
    let lease = store.lease_grant(ttl).await.unwrap();
    let mut handle = store.spawn_keepalive(lease, ttl);
    blocking(|| etcd.kill());
    let started = Instant::now();
    let loss = tokio::time::timeout(WAIT, handle.lost())
        .await
        .expect("loss reported");
    let took = started.elapsed();
    assert!(
        matches!(loss, LeaseLoss::Unconfirmed(since) if since >= ttl),
        "{loss:?}"
    );
    assert!(
        took < ttl + options().request_timeout,
        "unconfirmed lease reported after {took:?}"
    );
    eprintln!("lease with etcd down reported {loss:?} after {took:?}");

    // Dropping the store ends the task of a live lease.
    blocking(|| etcd.restart());
    let lease = wait_available(|| store.lease_grant(ttl)).await;
    let mut handle = store.spawn_keepalive(lease, ttl);
    drop(store);
    assert_eq!(
        tokio::time::timeout(WAIT, handle.lost()).await.unwrap(),
        LeaseLoss::StoreClosed
    );
}

/// Retry `f` while it fails with `Unavailable` (right after an etcd restart).
async fn wait_available<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("after restart: {e}"),
        }
    }
}

/// Dropping the receiver ends the forwarding task, and dropping the store ends watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_ends_watches() {
    if !require_etcd("dropping_the_store_ends_watches") {
        return;
    }
    let etcd = blocking(Etcd::start);
    let store = connect(&etcd).await;
    let ns = ns("drop");
    let mut watch = store.watch(&ns, 0).await.unwrap();
    let txn = Txn::new().and_then([TxnOp::Put {
        key: format!("{ns}a"),
        value: vec![],
        lease: None,
    }]);
    let r = store.txn(txn).await.unwrap().revision;
    assert_eq!(next_put(&mut watch, "before drop").await.2, r);
    drop(store);
    assert!(
        tokio::time::timeout(WAIT, watch.rx.recv())
            .await
            .expect("the watch ends when the store is dropped")
            .is_none()
    );
}
