//! EmbeddedStore: the store conformance suite, plus what only a file-backed store has to
//! get right (restart, automatic compaction, slow watchers, closing) and a latency print.
//!
//! `cargo test -p straitd --test store_embedded -- --nocapture` shows the txn latency.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use strait_store_conformance as conformance;
use straitd::store::embedded::{EmbeddedOptions, EmbeddedStore};
use straitd::store::{
    Compare, EventKind, PREFIX, Store, StoreError, Txn, TxnOp, Watch, WatchMessage,
};

const WAIT: Duration = conformance::WAIT;

fn store_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state").join("store.redb")
}

async fn reopen(store: Arc<EmbeddedStore>, path: &Path) -> Arc<EmbeddedStore> {
    store.close().await.expect("close");
    drop(store);
    EmbeddedStore::open(path).await.expect("reopen")
}

async fn next(watch: &mut Watch, what: &str) -> WatchMessage {
    tokio::time::timeout(WAIT, watch.rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: no watch message within {WAIT:?}"))
        .unwrap_or_else(|| panic!("{what}: watch ended"))
}

fn put(key: &str, value: &str) -> TxnOp {
    TxnOp::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        lease: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = AtomicUsize::new(0);
    conformance::run_all(|| {
        let path = dir
            .path()
            .join(format!("case-{}.redb", n.fetch_add(1, Ordering::Relaxed)));
        async move {
            let store: Arc<dyn Store> = EmbeddedStore::open(&path).await.expect("open");
            store
        }
    })
    .await;
}

#[tokio::test]
async fn data_and_revision_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_path(&dir);
    let store = EmbeddedStore::open(&path).await.expect("open");
    assert_eq!(
        store.revision().await.unwrap(),
        0,
        "a new store starts at revision 0"
    );
    let a = format!("{PREFIX}test/a");
    let b = format!("{PREFIX}test/b");
    store.put(&a, b"1".to_vec(), None).await.unwrap();
    store.put(&a, b"2".to_vec(), None).await.unwrap();
    store.put(&b, b"x".to_vec(), None).await.unwrap();
    store.delete(&b).await.unwrap();
    let rev = store.revision().await.unwrap();
    let before = store.range(&format!("{PREFIX}test/")).await.unwrap();

    let store = reopen(store, &path).await;
    assert_eq!(
        store.revision().await.unwrap(),
        rev,
        "revision after reopen"
    );
    assert_eq!(
        store.range(&format!("{PREFIX}test/")).await.unwrap(),
        before,
        "keys, values and metadata after reopen"
    );
    let next_rev = store.put(&b, b"y".to_vec(), None).await.unwrap();
    assert_eq!(next_rev, rev + 1, "revisions continue after reopen");
    let kv = store.get(&b).await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.version), (next_rev, 1));
    assert!(
        store.describe().starts_with("embedded:"),
        "{}",
        store.describe()
    );
}

#[tokio::test]
async fn watch_resumes_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_path(&dir);
    let store = EmbeddedStore::open(&path).await.expect("open");
    let ns = format!("{PREFIX}test/");
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(
            store
                .put(&format!("{ns}k{i}"), vec![i], None)
                .await
                .unwrap(),
        );
    }
    let store = reopen(store, &path).await;
    let mut watch = store.watch(&ns, revs[1]).await.expect("watch");
    for (i, rev) in revs.iter().enumerate().skip(1) {
        match next(&mut watch, "replay after reopen").await {
            WatchMessage::Events(events) => {
                assert_eq!(events.len(), 1);
                assert_eq!(events[0].kv.key, format!("{ns}k{i}"));
                assert_eq!(events[0].kv.mod_revision, *rev);
            }
            other => panic!("replay after reopen: {other:?}"),
        }
    }
    let live = store
        .put(&format!("{ns}after"), vec![], None)
        .await
        .unwrap();
    match next(&mut watch, "live after reopen").await {
        WatchMessage::Events(events) => assert_eq!(events[0].kv.mod_revision, live),
        other => panic!("live after reopen: {other:?}"),
    }
}

#[tokio::test]
async fn leases_survive_reopen_and_expire_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_path(&dir);
    let store = EmbeddedStore::open(&path).await.expect("open");
    let short_key = format!("{PREFIX}test/short");
    let long_key = format!("{PREFIX}test/long");
    let short = store.lease_grant(Duration::from_secs(1)).await.unwrap();
    let long = store.lease_grant(Duration::from_secs(600)).await.unwrap();
    store
        .put(&long_key, b"l".to_vec(), Some(long))
        .await
        .unwrap();
    let rev = store
        .put(&short_key, b"s".to_vec(), Some(short))
        .await
        .unwrap();

    store.close().await.expect("close");
    drop(store);
    // Let the short lease's wall-clock deadline pass while the store is closed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let store = EmbeddedStore::open(&path).await.expect("reopen");

    // Watch from just after the last write before the restart: the expiry may already
    // have happened by now, and the history has it either way.
    let mut watch = store
        .watch(&format!("{PREFIX}test/"), rev + 1)
        .await
        .unwrap();
    match next(&mut watch, "expiry after reopen").await {
        WatchMessage::Events(events) => {
            assert_eq!(events.len(), 1, "{events:?}");
            assert_eq!(events[0].kind, EventKind::Delete);
            assert_eq!(events[0].kv.key, short_key);
        }
        other => panic!("expiry after reopen: {other:?}"),
    }
    assert!(
        matches!(
            store.lease_keep_alive(short).await,
            Err(StoreError::LeaseNotFound(_))
        ),
        "the expired lease is gone"
    );
    store
        .lease_keep_alive(long)
        .await
        .expect("a live lease survives a restart");
    assert_eq!(
        store.get(&long_key).await.unwrap().unwrap().lease,
        Some(long)
    );
    let fresh = store.lease_grant(Duration::from_secs(60)).await.unwrap();
    assert!(
        fresh != short && fresh != long,
        "lease ids are not reused after a restart"
    );
    store.lease_revoke(long).await.unwrap();
    assert_eq!(store.get(&long_key).await.unwrap(), None);
}

#[tokio::test]
async fn compaction_survives_reopen_and_history_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_path(&dir);
    let options = EmbeddedOptions {
        history_limit: 10,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with(&path, options.clone())
        .await
        .expect("open");
    let k = format!("{PREFIX}test/k");
    for i in 0..30 {
        store.put(&k, vec![i], None).await.unwrap();
    }
    let head = store.revision().await.unwrap();
    assert_eq!(head, 30);

    store.close().await.unwrap();
    drop(store);
    let store = EmbeddedStore::open_with(&path, options)
        .await
        .expect("reopen");
    let mut old = store.watch(&k, 1).await.unwrap();
    assert_eq!(
        next(&mut old, "watch below the automatic compaction").await,
        WatchMessage::Compacted {
            compact_revision: head - 10
        },
        "only the last history_limit revisions are kept"
    );
    assert!(
        old.rx.recv().await.is_none(),
        "the watch ends after Compacted"
    );

    let mut kept = store.watch(&k, head - 9).await.unwrap();
    for rev in head - 9..=head {
        match next(&mut kept, "replay of the kept history").await {
            WatchMessage::Events(events) => assert_eq!(events[0].kv.mod_revision, rev),
            other => panic!("replay of the kept history: {other:?}"),
        }
    }
    let explicit = store.compact(head - 5).await;
    assert!(
        explicit.is_ok(),
        "explicit compaction above the automatic one: {explicit:?}"
    );
    let again = store.compact(head - 5).await;
    assert!(
        matches!(again, Err(StoreError::Compacted { .. })),
        "compacting an already compacted revision, as etcd: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_watchers_do_not_block_writers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions {
        watch_buffer: 2,
        live_buffer: 4,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open_with(&store_path(&dir), options)
        .await
        .expect("open");
    let ns = format!("{PREFIX}test/");
    // Nobody reads this watch while the writes run.
    let mut watch = store.watch(&ns, 0).await.unwrap();
    const TASKS: usize = 10;
    const WRITES: usize = 30;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let ns = ns.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..WRITES {
                store
                    .put(&format!("{ns}{t}/{i}"), vec![], None)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(WAIT, t)
            .await
            .expect("writers finish while a watcher is stalled")
            .unwrap();
    }
    // The stalled watcher then receives every revision, in order, from the history.
    let head = store.revision().await.unwrap();
    let mut expect = 1;
    while expect <= head {
        match next(&mut watch, "stalled watcher").await {
            WatchMessage::Events(events) => {
                assert_eq!(events[0].kv.mod_revision, expect, "no gap, no duplicate");
                expect += 1;
            }
            other => panic!("stalled watcher: {other:?}"),
        }
    }
    assert_eq!(head, (TASKS * WRITES) as i64);
}

#[tokio::test]
async fn a_watcher_stalled_past_compaction_gets_compacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = EmbeddedOptions {
        history_limit: 5,
        watch_buffer: 1,
        live_buffer: 1,
    };
    let store = EmbeddedStore::open_with(&store_path(&dir), options)
        .await
        .expect("open");
    let k = format!("{PREFIX}test/k");
    let mut watch = store.watch(&k, 0).await.unwrap();
    for i in 0..50 {
        store.put(&k, vec![i], None).await.unwrap();
    }
    let mut last = 0;
    loop {
        match next(&mut watch, "stalled watcher").await {
            WatchMessage::Events(events) => {
                let rev = events[0].kv.mod_revision;
                assert_eq!(rev, last + 1, "in order, without gaps, until Compacted");
                last = rev;
                assert!(last < 50, "the watcher cannot have seen everything");
            }
            WatchMessage::Compacted { compact_revision } => {
                assert!(compact_revision >= last, "{compact_revision} < {last}");
                break;
            }
        }
    }
    assert!(
        watch.rx.recv().await.is_none(),
        "the watch ends after Compacted"
    );
}

#[tokio::test]
async fn close_releases_the_file_and_ends_watches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = store_path(&dir);
    let store = EmbeddedStore::open(&path).await.expect("open");
    let second = EmbeddedStore::open(&path).await;
    assert!(
        matches!(second, Err(StoreError::Backend(_))),
        "a second open of a locked file fails"
    );
    let mut watch = store.watch(PREFIX, 0).await.unwrap();
    store.close().await.expect("close");
    assert!(
        matches!(
            store.put(&format!("{PREFIX}k"), vec![], None).await,
            Err(StoreError::Unavailable(_))
        ),
        "writes after close"
    );
    assert!(matches!(
        store.get(&format!("{PREFIX}k")).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        tokio::time::timeout(WAIT, watch.rx.recv())
            .await
            .expect("watch ends")
            .is_none(),
        "close ends watches"
    );
    store.close().await.expect("close is idempotent");
    let reopened = EmbeddedStore::open(&path)
        .await
        .expect("reopen after close");
    drop(reopened);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "p50 {:?}  p99 {:?}  max {:?}",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    )
}

/// Prints txn latency on this disk; asserts only correctness. The txn is shaped like a
/// CNI ADD's: create-if-absent of a handle plus an update of the block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_latency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(&store_path(&dir)).await.expect("open");
    let block = format!("{PREFIX}ipam/blocks/10.0.0.0-26");
    store.put(&block, vec![0; 64], None).await.unwrap();
    let cni_txn = |handle: String| {
        Txn::new()
            .when([Compare::absent(&handle)])
            .and_then([put(&handle, "10.0.0.7"), put(&block, "bitmap")])
    };

    const SEQUENTIAL: usize = 1000;
    let mut samples = Vec::with_capacity(SEQUENTIAL);
    let started = Instant::now();
    for i in 0..SEQUENTIAL {
        let t = Instant::now();
        let r = store
            .txn(cni_txn(format!("{PREFIX}ipam/handles/seq-{i}")))
            .await
            .unwrap();
        samples.push(t.elapsed());
        assert!(r.succeeded);
    }
    let total = started.elapsed();
    println!(
        "embedded store, {SEQUENTIAL} sequential txns: {}  ({:.0} txn/s)",
        summary(samples),
        SEQUENTIAL as f64 / total.as_secs_f64()
    );

    const TASKS: usize = 50;
    const PER_TASK: usize = 20;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let block = block.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(PER_TASK);
            for i in 0..PER_TASK {
                let handle = format!("{PREFIX}ipam/handles/conc-{t}-{i}");
                let txn = Txn::new()
                    .when([Compare::absent(&handle)])
                    .and_then([put(&handle, "10.0.0.7"), put(&block, "bitmap")]);
                let start = Instant::now();
                let r = store.txn(txn).await.unwrap();
                samples.push(start.elapsed());
                assert!(r.succeeded);
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.unwrap());
    }
    let total = started.elapsed();
    println!(
        "embedded store, {TASKS} concurrent tasks x {PER_TASK} txns: {}  ({:.0} txn/s)",
        summary(samples),
        (TASKS * PER_TASK) as f64 / total.as_secs_f64()
    );
    assert_eq!(
        store.revision().await.unwrap(),
        (1 + SEQUENTIAL + TASKS * PER_TASK) as i64
    );
}
