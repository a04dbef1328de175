//! The store conformance suite: etcd v3 semantics, checked through the [`Store`] trait only.
//!
//! Test code, so a crate of its own rather than a module of straitd: straitd's integration
//! tests dev-depend on it (`agent/tests/store_embedded.rs`, `agent/tests/store_etcd.rs`),
//! and every backend runs the same cases from its own test file:
//!
//! ```ignore
//! strait_store_conformance::run_all(|| async { my_fresh_store().await }).await;
//! ```
//!
//! or one case at a time from [`CASES`]. Each case takes a store from the factory and
//! panics (with the case's name and what differed) on the first deviation.
//!
//! How the cases are written, so that they also run against a shared etcd:
//! - each case writes only below its own fresh namespace (`PREFIX` + `conformance/<case>/<nonce>/`),
//!   so a store that already holds keys (earlier runs, other cases) is fine;
//! - revision arithmetic is exact (one write transaction = one revision), so nothing else
//!   may write to the store while a case runs: run the cases one after another, as
//!   [`run_all`] does;
//! - `compaction` compacts the whole store at a recent revision;
//! - no case asserts how long anything took. Waits for events have a generous deadline
//!   ([`WAIT`]) only so that a broken backend fails instead of hanging. Lease TTLs are
//!   1–2 s; a backend may round them up (etcd's minimum TTL is about 2 s).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use straitd::store::{
    CmpOp, CmpTarget, Compare, EventKind, KeyValue, LeaseId, PREFIX, Revision, Store, StoreError,
    Txn, TxnOp, TxnOpResult, Watch, WatchEvent, WatchMessage,
};

/// Longest wait for an expected watch message or lease expiry before a case fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// One conformance case.
pub type Case = fn(Arc<dyn Store>) -> BoxFuture<'static, ()>;

/// Every case, by name, in the order [`run_all`] runs them.
pub const CASES: &[(&str, Case)] = &[
    ("get_put_delete", |s| Box::pin(get_put_delete(s))),
    ("revisions_and_versions", |s| {
        Box::pin(revisions_and_versions(s))
    }),
    ("range_prefix", |s| Box::pin(range_prefix(s))),
    ("txn_branches_and_results", |s| {
        Box::pin(txn_branches_and_results(s))
    }),
    ("txn_compare_operators", |s| {
        Box::pin(txn_compare_operators(s))
    }),
    ("txn_without_writes_keeps_revision", |s| {
        Box::pin(txn_without_writes_keeps_revision(s))
    }),
    ("txn_rejects_duplicate_puts", |s| {
        Box::pin(txn_rejects_duplicate_puts(s))
    }),
    ("cas_create_race", |s| Box::pin(cas_create_race(s))),
    ("mod_revision_cas", |s| Box::pin(mod_revision_cas(s))),
    ("delete_prefix", |s| Box::pin(delete_prefix(s))),
    ("watch_from_now", |s| Box::pin(watch_from_now(s))),
    ("watch_replays_history", |s| {
        Box::pin(watch_replays_history(s))
    }),
    ("watch_prefix_isolation", |s| {
        Box::pin(watch_prefix_isolation(s))
    }),
    ("lease_attach_and_revoke", |s| {
        Box::pin(lease_attach_and_revoke(s))
    }),
    ("lease_keep_alive_extends", |s| {
        Box::pin(lease_keep_alive_extends(s))
    }),
    ("lease_expiry_deletes_keys", |s| {
        Box::pin(lease_expiry_deletes_keys(s))
    }),
    ("future_revision", |s| Box::pin(future_revision(s))),
    ("invalid_keys", |s| Box::pin(invalid_keys(s))),
    ("compaction", |s| Box::pin(compaction(s))),
];

/// Run every case, one after another, each on a store from `make`.
pub async fn run_all<F, Fut>(mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    for (name, case) in CASES {
        eprintln!("store conformance: {name}");
        case(make().await).await;
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

/// A namespace no earlier run or case has used.
fn namespace(case: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}conformance/{case}/{nanos:x}-{n}/")
}

fn put(key: &str, value: &str) -> TxnOp {
    TxnOp::Put {
        key: key.to_string(),
        value: value.as_bytes().to_vec(),
        lease: None,
    }
}

fn get(key: &str) -> TxnOp {
    TxnOp::Get {
        key: key.to_string(),
    }
}

async fn value_of(store: &Arc<dyn Store>, key: &str) -> Option<Vec<u8>> {
    store.get(key).await.expect("get").map(|kv| kv.value)
}

async fn revision(store: &Arc<dyn Store>) -> Revision {
    store.revision().await.expect("revision")
}

async fn keys_under(store: &Arc<dyn Store>, prefix: &str) -> Vec<String> {
    let range = store.range(prefix).await.expect("range");
    range.kvs.into_iter().map(|kv| kv.key).collect()
}

async fn next_message(watch: &mut Watch, what: &str) -> WatchMessage {
    match tokio::time::timeout(WAIT, watch.rx.recv()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("{what}: the watch ended unexpectedly"),
        Err(_) => panic!("{what}: no watch message within {WAIT:?}"),
    }
}

/// The next `Events` message; checks that it holds the changes of exactly one revision.
async fn next_events(watch: &mut Watch, what: &str) -> Vec<WatchEvent> {
    match next_message(watch, what).await {
        WatchMessage::Events(events) => {
            assert!(!events.is_empty(), "{what}: empty Events message");
            let rev = events[0].kv.mod_revision;
            assert!(
                events.iter().all(|e| e.kv.mod_revision == rev),
                "{what}: one Events message must carry one revision: {events:?}"
            );
            events
        }
        other => panic!("{what}: expected Events, got {other:?}"),
    }
}

async fn assert_watch_ends(watch: &mut Watch, what: &str) {
    match tokio::time::timeout(WAIT, watch.rx.recv()).await {
        Ok(None) => {}
        Ok(Some(message)) => panic!("{what}: expected the watch to end, got {message:?}"),
        Err(_) => panic!("{what}: the watch did not end within {WAIT:?}"),
    }
}

fn assert_put(event: &WatchEvent, key: &str, value: &str, rev: Revision, what: &str) {
    assert_eq!(event.kind, EventKind::Put, "{what}: kind of {event:?}");
    assert_eq!(event.kv.key, key, "{what}: key");
    assert_eq!(event.kv.value, value.as_bytes(), "{what}: value of {key}");
    assert_eq!(event.kv.mod_revision, rev, "{what}: mod_revision of {key}");
}

fn assert_delete(event: &WatchEvent, key: &str, rev: Revision, what: &str) {
    assert_eq!(event.kind, EventKind::Delete, "{what}: kind of {event:?}");
    assert_eq!(event.kv.key, key, "{what}: key");
    assert!(
        event.kv.value.is_empty(),
        "{what}: a delete carries no value"
    );
    assert_eq!(
        event.kv.mod_revision, rev,
        "{what}: a delete's mod_revision is the revision of the delete"
    );
}

fn is_lease_not_found<T: std::fmt::Debug>(r: &Result<T, StoreError>, id: LeaseId) -> bool {
    matches!(r, Err(StoreError::LeaseNotFound(l)) if *l == id)
}

// ---------------------------------------------------------------------------------------
// Cases

/// Single-key get, put and delete, and what they do to the revision.
pub async fn get_put_delete(store: Arc<dyn Store>) {
    let ns = namespace("get_put_delete");
    let k = format!("{ns}k");
    assert_eq!(
        store.get(&k).await.expect("get"),
        None,
        "a fresh key is absent"
    );

    let before = revision(&store).await;
    let r1 = store.put(&k, b"v1".to_vec(), None).await.expect("put");
    assert_eq!(r1, before + 1, "a put bumps the revision by exactly one");
    assert_eq!(revision(&store).await, r1, "revision() after a put");
    assert_eq!(
        store.get(&k).await.expect("get"),
        Some(KeyValue {
            key: k.clone(),
            value: b"v1".to_vec(),
            create_revision: r1,
            mod_revision: r1,
            version: 1,
            lease: None,
        }),
        "a freshly put key"
    );

    assert!(
        store.delete(&k).await.expect("delete"),
        "delete of a present key returns true"
    );
    assert_eq!(
        revision(&store).await,
        r1 + 1,
        "a delete bumps the revision"
    );
    assert_eq!(
        store.get(&k).await.expect("get"),
        None,
        "a deleted key is absent"
    );
    assert!(
        !store.delete(&k).await.expect("delete"),
        "delete of a missing key returns false"
    );
    assert_eq!(
        revision(&store).await,
        r1 + 1,
        "deleting a missing key writes nothing and keeps the revision"
    );

    let empty = format!("{ns}empty");
    store
        .put(&empty, Vec::new(), None)
        .await
        .expect("put empty");
    assert_eq!(
        value_of(&store, &empty).await,
        Some(Vec::new()),
        "an empty value is a present key"
    );
}

/// create_revision, mod_revision and version across updates, delete and re-create.
pub async fn revisions_and_versions(store: Arc<dyn Store>) {
    let ns = namespace("revisions_and_versions");
    let k = format!("{ns}k");
    let r1 = store.put(&k, b"a".to_vec(), None).await.expect("put");
    let r2 = store.put(&k, b"b".to_vec(), None).await.expect("put");
    let r3 = store.put(&k, b"c".to_vec(), None).await.expect("put");
    assert_eq!((r2, r3), (r1 + 1, r1 + 2), "one revision per write");
    let kv = store.get(&k).await.expect("get").expect("present");
    assert_eq!(
        (
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            kv.value.as_slice()
        ),
        (r1, r3, 3, b"c".as_slice()),
        "(create_revision, mod_revision, version, value) after three puts"
    );

    let other = store
        .put(&format!("{ns}other"), b"x".to_vec(), None)
        .await
        .expect("put");
    let kv = store.get(&k).await.expect("get").expect("present");
    assert_eq!(
        kv.mod_revision, r3,
        "a write to another key leaves this key's mod_revision"
    );

    store.delete(&k).await.expect("delete");
    let r6 = store.put(&k, b"d".to_vec(), None).await.expect("put");
    assert_eq!(r6, other + 2, "delete and put each take one revision");
    let kv = store.get(&k).await.expect("get").expect("present");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r6, r6, 1),
        "a key re-created after a delete starts over"
    );
    let range = store.range(&ns).await.expect("range");
    assert_eq!(range.revision, r6, "range reports the revision it read at");
}

/// Range returns exactly the keys under the prefix, sorted by key.
pub async fn range_prefix(store: Arc<dyn Store>) {
    let ns = namespace("range_prefix");
    for k in ["b/1", "a/2", "ab", "a/10", "a/1"] {
        store
            .put(&format!("{ns}{k}"), k.as_bytes().to_vec(), None)
            .await
            .expect("put");
    }
    let range = store.range(&format!("{ns}a/")).await.expect("range");
    let got: Vec<(String, Vec<u8>)> = range.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
    let want: Vec<(String, Vec<u8>)> = ["a/1", "a/10", "a/2"]
        .iter()
        .map(|k| (format!("{ns}{k}"), k.as_bytes().to_vec()))
        .collect();
    assert_eq!(
        got, want,
        "range of {ns}a/: only its keys, sorted (not {ns}ab)"
    );
    assert_eq!(range.revision, revision(&store).await, "range revision");

    let all: Vec<String> = ["a/1", "a/10", "a/2", "ab", "b/1"]
        .iter()
        .map(|k| format!("{ns}{k}"))
        .collect();
    assert_eq!(
        keys_under(&store, &ns).await,
        all,
        "range of the whole namespace"
    );
    assert!(
        keys_under(&store, &format!("{ns}zzz/")).await.is_empty(),
        "range of an empty prefix"
    );
}

/// Success and failure branches run atomically and report one result per op, in order.
pub async fn txn_branches_and_results(store: Arc<dyn Store>) {
    let ns = namespace("txn_branches_and_results");
    let (k1, k2, k3, k4) = (
        format!("{ns}k1"),
        format!("{ns}k2"),
        format!("{ns}k3"),
        format!("{ns}k4"),
    );
    store.put(&k1, b"v1".to_vec(), None).await.expect("put");
    for p in ["p/1", "p/2"] {
        store
            .put(&format!("{ns}{p}"), b"p".to_vec(), None)
            .await
            .expect("put");
    }
    let k1_kv = store.get(&k1).await.expect("get");
    let before = revision(&store).await;

    let response = store
        .txn(
            Txn::new()
                .when([Compare::value(&k1, "v1"), Compare::absent(&k2)])
                .and_then([
                    put(&k2, "v2"),
                    get(&k1),
                    TxnOp::Delete {
                        key: format!("{ns}missing"),
                    },
                    TxnOp::DeletePrefix {
                        prefix: format!("{ns}p/"),
                    },
                ])
                .or_else([put(&k3, "wrong branch")]),
        )
        .await
        .expect("txn");
    assert!(
        response.succeeded,
        "compares that hold select the success branch"
    );
    assert_eq!(
        response.results,
        vec![
            TxnOpResult::Put,
            TxnOpResult::Get(k1_kv.clone()),
            TxnOpResult::Delete(0),
            TxnOpResult::Delete(2),
        ],
        "results of the success branch, in op order"
    );
    assert_eq!(
        response.revision,
        before + 1,
        "a writing txn takes exactly one revision"
    );
    let k2_kv = store.get(&k2).await.expect("get").expect("k2 written");
    assert_eq!(
        k2_kv.mod_revision, response.revision,
        "txn writes carry the txn's revision"
    );
    assert_eq!(
        value_of(&store, &k3).await,
        None,
        "the failure branch did not run"
    );
    assert!(
        keys_under(&store, &format!("{ns}p/")).await.is_empty(),
        "DeletePrefix ran"
    );

    let response = store
        .txn(
            Txn::new()
                .when([Compare::value(&k1, "not v1")])
                .and_then([put(&k3, "wrong branch")])
                .or_else([get(&k1), put(&k4, "v4")]),
        )
        .await
        .expect("txn");
    assert!(
        !response.succeeded,
        "a compare that fails selects the failure branch"
    );
    assert_eq!(
        response.results,
        vec![TxnOpResult::Get(k1_kv), TxnOpResult::Put],
        "results of the failure branch"
    );
    assert_eq!(
        response.revision,
        before + 2,
        "the failure branch wrote: one revision"
    );
    assert_eq!(
        value_of(&store, &k3).await,
        None,
        "the success branch did not run"
    );
    assert_eq!(
        value_of(&store, &k4).await,
        Some(b"v4".to_vec()),
        "failure branch put"
    );

    let response = store
        .txn(Txn::new().and_then([get(&k2)]))
        .await
        .expect("txn");
    assert!(response.succeeded, "a txn without compares succeeds");
}

/// Every compare target and operator, on a present and on a missing key.
pub async fn txn_compare_operators(store: Arc<dyn Store>) {
    let ns = namespace("txn_compare_operators");
    let k = format!("{ns}k");
    let missing = format!("{ns}missing");
    let r1 = store.put(&k, b"m".to_vec(), None).await.expect("put");
    let cmp = |key: &str, op: CmpOp, target: CmpTarget| Compare {
        key: key.to_string(),
        op,
        target,
    };
    use CmpOp::{Equal, Greater, Less, NotEqual};
    use CmpTarget::{CreateRevision, ModRevision, Value, Version};
    let cases = [
        (cmp(&k, Equal, Version(1)), true),
        (cmp(&k, NotEqual, Version(1)), false),
        (cmp(&k, Greater, Version(0)), true),
        (cmp(&k, Less, Version(2)), true),
        (cmp(&k, Less, Version(1)), false),
        (cmp(&k, Equal, CreateRevision(r1)), true),
        (cmp(&k, Equal, ModRevision(r1)), true),
        (cmp(&k, Less, ModRevision(r1 + 1)), true),
        (cmp(&k, Greater, ModRevision(r1)), false),
        (cmp(&k, Equal, Value(b"m".to_vec())), true),
        (cmp(&k, NotEqual, Value(b"m".to_vec())), false),
        (cmp(&k, Greater, Value(b"a".to_vec())), true),
        (cmp(&k, Less, Value(b"z".to_vec())), true),
        (cmp(&k, Less, Value(b"a".to_vec())), false),
        (Compare::absent(&k), false),
        (Compare::mod_revision(&k, r1), true),
        (Compare::value(&k, "m"), true),
        // A missing key has version and revisions 0, and no value to compare.
        (Compare::absent(&missing), true),
        (cmp(&missing, Equal, Version(0)), true),
        (cmp(&missing, Equal, ModRevision(0)), true),
        (cmp(&missing, Equal, Value(Vec::new())), false),
        (cmp(&missing, NotEqual, Value(b"x".to_vec())), false),
    ];
    for (compare, want) in cases {
        let response = store
            .txn(Txn::new().when([compare.clone()]).and_then([get(&k)]))
            .await
            .expect("txn");
        assert_eq!(
            response.succeeded, want,
            "compare {compare:?} (key at revision {r1})"
        );
    }
    let both = store
        .txn(Txn::new().when([Compare::value(&k, "m"), Compare::absent(&k)]))
        .await
        .expect("txn");
    assert!(!both.succeeded, "every compare must hold, not just one");
}

/// A transaction that changes nothing leaves the revision where it was.
pub async fn txn_without_writes_keeps_revision(store: Arc<dyn Store>) {
    let ns = namespace("txn_without_writes_keeps_revision");
    let k = format!("{ns}k");
    store.put(&k, b"v".to_vec(), None).await.expect("put");
    let before = revision(&store).await;

    let reads = store
        .txn(Txn::new().and_then([get(&k)]))
        .await
        .expect("txn");
    assert_eq!(
        reads.revision, before,
        "a read-only txn reports the current revision"
    );

    let failed = store
        .txn(
            Txn::new()
                .when([Compare::absent(&k)])
                .and_then([put(&k, "x")]),
        )
        .await
        .expect("txn");
    assert!(!failed.succeeded);
    assert!(
        failed.results.is_empty(),
        "an empty failure branch has no results"
    );
    assert_eq!(
        failed.revision, before,
        "a failed txn without failure ops writes nothing"
    );

    let no_op_deletes = store
        .txn(Txn::new().and_then([
            TxnOp::Delete {
                key: format!("{ns}missing"),
            },
            TxnOp::DeletePrefix {
                prefix: format!("{ns}none/"),
            },
        ]))
        .await
        .expect("txn");
    assert_eq!(
        no_op_deletes.results,
        vec![TxnOpResult::Delete(0), TxnOpResult::Delete(0)]
    );
    assert_eq!(
        no_op_deletes.revision, before,
        "deletes of nothing write nothing"
    );
    assert_eq!(
        revision(&store).await,
        before,
        "revision() after writeless txns"
    );
}

/// As etcd: one branch may not put the same key twice; the whole txn is refused.
pub async fn txn_rejects_duplicate_puts(store: Arc<dyn Store>) {
    let ns = namespace("txn_rejects_duplicate_puts");
    let k = format!("{ns}k");
    let before = revision(&store).await;
    let result = store
        .txn(Txn::new().and_then([put(&k, "1"), put(&k, "2")]))
        .await;
    assert!(
        matches!(result, Err(StoreError::InvalidKey(_))),
        "two puts of one key in one branch: {result:?}"
    );
    assert_eq!(
        value_of(&store, &k).await,
        None,
        "nothing of a refused txn is written"
    );
    assert_eq!(revision(&store).await, before);
}

/// Many tasks race to create one key with create-if-absent: exactly one wins, and every
/// loser reads the winner's value in its failure branch.
pub async fn cas_create_race(store: Arc<dyn Store>) {
    const TASKS: usize = 50;
    let ns = namespace("cas_create_race");
    let k = format!("{ns}claim");
    let start = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for i in 0..TASKS {
        let (store, k, start) = (store.clone(), k.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let response = store
                .txn(
                    Txn::new()
                        .when([Compare::absent(&k)])
                        .and_then([put(&k, &format!("task-{i}"))])
                        .or_else([get(&k)]),
                )
                .await
                .expect("txn");
            (i, response)
        }));
    }
    let mut responses = Vec::new();
    for t in tasks {
        responses.push(t.await.expect("task"));
    }
    let winners: Vec<usize> = responses
        .iter()
        .filter(|(_, r)| r.succeeded)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one create-if-absent wins, got {winners:?}"
    );
    let winner_value = format!("task-{}", winners[0]).into_bytes();
    for (i, r) in responses.iter().filter(|(_, r)| !r.succeeded) {
        match r.results.as_slice() {
            [TxnOpResult::Get(Some(kv))] => assert_eq!(
                kv.value, winner_value,
                "task {i} lost and must read the winner's value"
            ),
            other => panic!("task {i} lost; its failure branch returned {other:?}"),
        }
    }
    let kv = store.get(&k).await.expect("get").expect("claimed");
    assert_eq!(
        (kv.value, kv.version),
        (winner_value, 1),
        "the key was written once"
    );
}

/// Optimistic concurrency on mod_revision: stale writers fail, and concurrent
/// read-modify-write loops lose no update.
pub async fn mod_revision_cas(store: Arc<dyn Store>) {
    let ns = namespace("mod_revision_cas");
    let k = format!("{ns}counter");
    let r1 = store.put(&k, b"0".to_vec(), None).await.expect("put");
    let first = store
        .txn(
            Txn::new()
                .when([Compare::mod_revision(&k, r1)])
                .and_then([put(&k, "1")]),
        )
        .await
        .expect("txn");
    assert!(first.succeeded, "CAS on the current mod_revision succeeds");
    let stale = store
        .txn(
            Txn::new()
                .when([Compare::mod_revision(&k, r1)])
                .and_then([put(&k, "stale")]),
        )
        .await
        .expect("txn");
    assert!(!stale.succeeded, "CAS on an old mod_revision fails");
    assert_eq!(value_of(&store, &k).await, Some(b"1".to_vec()));

    const TASKS: usize = 10;
    const INCREMENTS: usize = 10;
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, k) = (store.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..INCREMENTS {
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts < 10_000, "CAS increment never succeeded");
                    let kv = store.get(&k).await.expect("get").expect("counter");
                    let n: u64 = String::from_utf8_lossy(&kv.value).parse().expect("number");
                    let response = store
                        .txn(
                            Txn::new()
                                .when([Compare::mod_revision(&k, kv.mod_revision)])
                                .and_then([put(&k, &(n + 1).to_string())]),
                        )
                        .await
                        .expect("txn");
                    if response.succeeded {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let kv = store.get(&k).await.expect("get").expect("counter");
    assert_eq!(
        kv.value,
        (1 + TASKS * INCREMENTS).to_string().into_bytes(),
        "concurrent CAS increments lost an update"
    );
    assert_eq!(
        kv.version,
        (2 + TASKS * INCREMENTS) as i64,
        "one version per successful write"
    );
}

/// DeletePrefix removes exactly the keys under the prefix, in one revision.
pub async fn delete_prefix(store: Arc<dyn Store>) {
    let ns = namespace("delete_prefix");
    for k in ["x/1", "x/2", "x/3", "xy", "y/1"] {
        store
            .put(&format!("{ns}{k}"), k.as_bytes().to_vec(), None)
            .await
            .expect("put");
    }
    let mut watch = store.watch(&ns, 0).await.expect("watch");
    let before = revision(&store).await;
    let response = store
        .txn(Txn::new().and_then([TxnOp::DeletePrefix {
            prefix: format!("{ns}x/"),
        }]))
        .await
        .expect("txn");
    assert_eq!(
        response.results,
        vec![TxnOpResult::Delete(3)],
        "three keys under x/"
    );
    assert_eq!(
        response.revision,
        before + 1,
        "one revision for the whole prefix"
    );
    assert_eq!(
        keys_under(&store, &ns).await,
        vec![format!("{ns}xy"), format!("{ns}y/1")],
        "only keys under the prefix are gone"
    );
    let events = next_events(&mut watch, "delete_prefix events").await;
    assert_eq!(events.len(), 3, "one Delete event per key: {events:?}");
    for (event, k) in events.iter().zip(["x/1", "x/2", "x/3"]) {
        assert_delete(
            event,
            &format!("{ns}{k}"),
            response.revision,
            "delete_prefix",
        );
        assert_eq!(
            event.prev.as_ref().map(|p| p.value.as_slice()),
            Some(k.as_bytes()),
            "a Delete event carries the previous value"
        );
    }
}

/// A watch from 0 sees only changes after it started, with previous values.
pub async fn watch_from_now(store: Arc<dyn Store>) {
    let ns = namespace("watch_from_now");
    let (old, k) = (format!("{ns}old"), format!("{ns}k"));
    store
        .put(&old, b"before the watch".to_vec(), None)
        .await
        .expect("put");
    let mut watch = store.watch(&ns, 0).await.expect("watch");

    let r1 = store.put(&k, b"a".to_vec(), None).await.expect("put");
    let events = next_events(&mut watch, "first change after the watch").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_put(
        &events[0],
        &k,
        "a",
        r1,
        "watch from now: create (not the older write)",
    );
    assert_eq!(
        (
            events[0].kv.create_revision,
            events[0].kv.version,
            &events[0].prev
        ),
        (r1, 1, &None),
        "a create has version 1 and no previous value"
    );

    let r2 = store.put(&k, b"b".to_vec(), None).await.expect("put");
    let events = next_events(&mut watch, "update").await;
    assert_put(&events[0], &k, "b", r2, "watch from now: update");
    let prev = events[0]
        .prev
        .as_ref()
        .expect("an update carries the previous value");
    assert_eq!(
        (prev.value.as_slice(), prev.mod_revision),
        (b"a".as_slice(), r1)
    );

    assert!(store.delete(&k).await.expect("delete"));
    let events = next_events(&mut watch, "delete").await;
    assert_delete(&events[0], &k, r2 + 1, "watch from now: delete");
    assert_eq!(
        events[0].prev.as_ref().map(|p| p.value.as_slice()),
        Some(b"b".as_slice()),
        "a delete carries the previous value"
    );
}

/// A watch from an old revision replays every change since, in order, one message per
/// revision, then continues live without a gap or a duplicate.
pub async fn watch_replays_history(store: Arc<dyn Store>) {
    let ns = namespace("watch_replays_history");
    let key = |k: &str| format!("{ns}{k}");
    let r1 = store
        .put(&key("a"), b"1".to_vec(), None)
        .await
        .expect("put");
    let r2 = store
        .put(&key("b"), b"1".to_vec(), None)
        .await
        .expect("put");
    let r3 = store
        .put(&key("a"), b"2".to_vec(), None)
        .await
        .expect("put");
    assert!(store.delete(&key("b")).await.expect("delete"));
    let r4 = r3 + 1;
    let r5 = store
        .txn(Txn::new().and_then([put(&key("c"), "1"), put(&key("d"), "1")]))
        .await
        .expect("txn")
        .revision;

    let mut watch = store.watch(&ns, r1).await.expect("watch");
    let what = "replay from an old revision";
    assert_put(
        &next_events(&mut watch, what).await[0],
        &key("a"),
        "1",
        r1,
        what,
    );
    assert_put(
        &next_events(&mut watch, what).await[0],
        &key("b"),
        "1",
        r2,
        what,
    );
    let events = next_events(&mut watch, what).await;
    assert_put(&events[0], &key("a"), "2", r3, what);
    assert_eq!(
        events[0].prev.as_ref().map(|p| p.mod_revision),
        Some(r1),
        "{what}: prev"
    );
    assert_delete(&next_events(&mut watch, what).await[0], &key("b"), r4, what);
    let events = next_events(&mut watch, what).await;
    assert_eq!(
        events.len(),
        2,
        "{what}: both puts of the txn in one message"
    );
    assert_put(&events[0], &key("c"), "1", r5, what);
    assert_put(&events[1], &key("d"), "1", r5, what);

    let r6 = store
        .put(&key("e"), b"1".to_vec(), None)
        .await
        .expect("put");
    assert_put(
        &next_events(&mut watch, "live after replay").await[0],
        &key("e"),
        "1",
        r6,
        "live after replay",
    );

    let mut from_middle = store.watch(&ns, r3).await.expect("watch");
    assert_put(
        &next_events(&mut from_middle, "replay from the middle").await[0],
        &key("a"),
        "2",
        r3,
        "replay starts at the requested revision, inclusive",
    );
}

/// A watch sees only keys under its prefix; a txn touching several prefixes is split.
pub async fn watch_prefix_isolation(store: Arc<dyn Store>) {
    let ns = namespace("watch_prefix_isolation");
    let key = |k: &str| format!("{ns}{k}");
    let mut watch = store.watch(&key("a/"), 0).await.expect("watch");
    let what = "watch of a/";
    store
        .put(&key("b/1"), b"x".to_vec(), None)
        .await
        .expect("put");
    store
        .put(&key("ab"), b"x".to_vec(), None)
        .await
        .expect("put");
    let r = store
        .put(&key("a/1"), b"x".to_vec(), None)
        .await
        .expect("put");
    let events = next_events(&mut watch, what).await;
    assert_eq!(events.len(), 1, "{what}: {events:?}");
    assert_put(
        &events[0],
        &key("a/1"),
        "x",
        r,
        "the first event is the first key under a/",
    );

    let r = store
        .txn(Txn::new().and_then([put(&key("b/2"), "y"), put(&key("a/2"), "y")]))
        .await
        .expect("txn")
        .revision;
    let events = next_events(&mut watch, what).await;
    assert_eq!(
        events.len(),
        1,
        "{what}: only the a/ half of the txn: {events:?}"
    );
    assert_put(&events[0], &key("a/2"), "y", r, what);

    store.delete(&key("b/1")).await.expect("delete");
    let r = store
        .put(&key("a/3"), b"z".to_vec(), None)
        .await
        .expect("put");
    assert_put(
        &next_events(&mut watch, what).await[0],
        &key("a/3"),
        "z",
        r,
        what,
    );
}

/// Keys put with a lease carry it; a put without a lease detaches; revoke deletes the
/// lease's keys in one revision and ends the lease.
pub async fn lease_attach_and_revoke(store: Arc<dyn Store>) {
    let ns = namespace("lease_attach_and_revoke");
    let key = |k: &str| format!("{ns}{k}");
    let id = store
        .lease_grant(Duration::from_secs(60))
        .await
        .expect("grant");
    for k in ["k1", "k2", "k3"] {
        store
            .put(&key(k), b"v".to_vec(), Some(id))
            .await
            .expect("put with lease");
    }
    // Put without a lease moves k3 off the lease, as etcd.
    store
        .put(&key("k3"), b"v".to_vec(), None)
        .await
        .expect("put");
    let k1 = store.get(&key("k1")).await.expect("get").expect("k1");
    assert_eq!(k1.lease, Some(id), "a key put with a lease reports it");
    let k3 = store.get(&key("k3")).await.expect("get").expect("k3");
    assert_eq!(k3.lease, None, "a put without a lease detaches the key");

    let mut watch = store.watch(&ns, 0).await.expect("watch");
    let before = revision(&store).await;
    store.lease_revoke(id).await.expect("revoke");
    assert_eq!(
        revision(&store).await,
        before + 1,
        "a revoke deletes in one revision"
    );
    assert_eq!(
        keys_under(&store, &ns).await,
        vec![key("k3")],
        "revoke deletes the lease's keys and only those"
    );
    let mut events = next_events(&mut watch, "revoke").await;
    events.sort_by(|a, b| a.kv.key.cmp(&b.kv.key));
    assert_eq!(events.len(), 2, "one Delete per leased key: {events:?}");
    assert_delete(&events[0], &key("k1"), before + 1, "revoke");
    assert_delete(&events[1], &key("k2"), before + 1, "revoke");

    let again = store.lease_revoke(id).await;
    assert!(
        is_lease_not_found(&again, id),
        "revoke of a revoked lease: {again:?}"
    );
    let keep = store.lease_keep_alive(id).await;
    assert!(
        is_lease_not_found(&keep, id),
        "keep-alive of a revoked lease: {keep:?}"
    );
    let put = store.put(&key("k4"), b"v".to_vec(), Some(id)).await;
    assert!(
        is_lease_not_found(&put, id),
        "put with a revoked lease: {put:?}"
    );
    assert_eq!(value_of(&store, &key("k4")).await, None);

    let empty = store
        .lease_grant(Duration::from_secs(60))
        .await
        .expect("grant");
    let before = revision(&store).await;
    store.lease_revoke(empty).await.expect("revoke");
    assert_eq!(
        revision(&store).await,
        before,
        "revoking a lease without keys writes nothing"
    );
}

/// Keep-alives hold a lease (and its keys) well past its TTL.
pub async fn lease_keep_alive_extends(store: Arc<dyn Store>) {
    let ns = namespace("lease_keep_alive_extends");
    let k = format!("{ns}k");
    let id = store
        .lease_grant(Duration::from_secs(2))
        .await
        .expect("grant");
    store
        .put(&k, b"alive".to_vec(), Some(id))
        .await
        .expect("put");
    // 4 s in all: twice the TTL, refreshed every quarter of it.
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        store
            .lease_keep_alive(id)
            .await
            .unwrap_or_else(|e| panic!("keep-alive {i} of a live lease: {e}"));
    }
    assert_eq!(
        value_of(&store, &k).await,
        Some(b"alive".to_vec()),
        "a kept-alive lease's key outlives the TTL"
    );
    store.lease_revoke(id).await.expect("revoke");
}

/// An expired lease deletes its keys in an ordinary revision that watches see, and is gone.
pub async fn lease_expiry_deletes_keys(store: Arc<dyn Store>) {
    let ns = namespace("lease_expiry_deletes_keys");
    let key = |k: &str| format!("{ns}{k}");
    let id = store
        .lease_grant(Duration::from_secs(1))
        .await
        .expect("grant");
    store
        .put(&key("k1"), b"v".to_vec(), Some(id))
        .await
        .expect("put");
    store
        .put(&key("k2"), b"v".to_vec(), Some(id))
        .await
        .expect("put");
    store
        .put(&key("k3"), b"v".to_vec(), None)
        .await
        .expect("put");
    let mut watch = store.watch(&ns, 0).await.expect("watch");

    let mut events = next_events(&mut watch, "lease expiry").await;
    events.sort_by(|a, b| a.kv.key.cmp(&b.kv.key));
    assert_eq!(
        events.len(),
        2,
        "both leased keys deleted in one revision: {events:?}"
    );
    let rev = events[0].kv.mod_revision;
    assert_delete(&events[0], &key("k1"), rev, "lease expiry");
    assert_delete(&events[1], &key("k2"), rev, "lease expiry");
    assert_eq!(
        keys_under(&store, &ns).await,
        vec![key("k3")],
        "only the leased keys go"
    );

    let keep = store.lease_keep_alive(id).await;
    assert!(
        is_lease_not_found(&keep, id),
        "keep-alive of an expired lease: {keep:?}"
    );
    let put = store.put(&key("k4"), b"v".to_vec(), Some(id)).await;
    assert!(
        is_lease_not_found(&put, id),
        "put with an expired lease: {put:?}"
    );
    let never = 0x5eed_0000_0000_0001;
    let put = store.put(&key("k5"), b"v".to_vec(), Some(never)).await;
    assert!(
        is_lease_not_found(&put, never),
        "put with a never-granted lease: {put:?}"
    );
    assert_eq!(
        keys_under(&store, &ns).await,
        vec![key("k3")],
        "failed puts wrote nothing"
    );
}

/// Revisions the store has not reached are refused; the next revision is watchable.
pub async fn future_revision(store: Arc<dyn Store>) {
    let ns = namespace("future_revision");
    let current = revision(&store).await;
    let far = current + 1000;
    let watch = store.watch(&ns, far).await;
    assert!(
        matches!(watch, Err(StoreError::FutureRevision(r)) if r == far),
        "watch from a future revision: {:?}",
        watch.map(|_| "a watch")
    );
    let compact = store.compact(far).await;
    assert!(
        matches!(compact, Err(StoreError::FutureRevision(_))),
        "compact at a future revision: {compact:?}"
    );
    let mut watch = store
        .watch(&ns, current + 1)
        .await
        .expect("watch from the next revision");
    let k = format!("{ns}k");
    let r = store.put(&k, b"v".to_vec(), None).await.expect("put");
    assert_put(
        &next_events(&mut watch, "watch from next").await[0],
        &k,
        "v",
        r,
        "watch from the next revision",
    );
}

/// Keys and prefixes outside [`PREFIX`] are refused everywhere, and nothing is written.
pub async fn invalid_keys(store: Arc<dyn Store>) {
    let before = revision(&store).await;
    let ns = namespace("invalid_keys");
    let good = format!("{ns}k");
    let invalid = |r: &Result<(), StoreError>| matches!(r, Err(StoreError::InvalidKey(_)));
    for bad in ["", "relative/key", "/strait/v1", "/strait/v2/x", "/other/x"] {
        let r = store.get(bad).await.map(drop);
        assert!(invalid(&r), "get({bad:?}): {r:?}");
        let r = store.put(bad, b"v".to_vec(), None).await.map(drop);
        assert!(invalid(&r), "put({bad:?}): {r:?}");
        let r = store.delete(bad).await.map(drop);
        assert!(invalid(&r), "delete({bad:?}): {r:?}");
        let r = store.range(bad).await.map(drop);
        assert!(invalid(&r), "range({bad:?}): {r:?}");
        let r = store.watch(bad, 0).await.map(drop);
        assert!(invalid(&r), "watch({bad:?}): {r:?}");
        let r = store
            .txn(
                Txn::new()
                    .when([Compare::absent(bad)])
                    .and_then([put(&good, "v")]),
            )
            .await
            .map(drop);
        assert!(invalid(&r), "txn comparing {bad:?}: {r:?}");
        // Both branches are validated, also the one that would not run.
        let r = store
            .txn(
                Txn::new()
                    .and_then([put(&good, "v")])
                    .or_else([put(bad, "v")]),
            )
            .await
            .map(drop);
        assert!(invalid(&r), "txn with {bad:?} in its failure branch: {r:?}");
    }
    assert_eq!(
        value_of(&store, &good).await,
        None,
        "no refused request wrote"
    );
    assert_eq!(
        revision(&store).await,
        before,
        "no refused request took a revision"
    );
}

/// After compaction a watch from below the compact revision gets one `Compacted` and
/// ends; watches above it still replay; data is untouched.
pub async fn compaction(store: Arc<dyn Store>) {
    let ns = namespace("compaction");
    let k = format!("{ns}k");
    let mut revs = Vec::new();
    for v in ["1", "2", "3", "4"] {
        revs.push(
            store
                .put(&k, v.as_bytes().to_vec(), None)
                .await
                .expect("put"),
        );
    }
    let (r1, r3, r4) = (revs[0], revs[2], revs[3]);
    store.compact(r3).await.expect("compact");

    let mut old = store.watch(&ns, r1).await.expect("watch");
    match next_message(&mut old, "watch from below the compact revision").await {
        WatchMessage::Compacted { compact_revision } => assert!(
            compact_revision >= r3,
            "Compacted reports the compact revision ({compact_revision} < {r3})"
        ),
        other => panic!("watch from a compacted revision: expected Compacted, got {other:?}"),
    }
    assert_watch_ends(&mut old, "a watch after Compacted").await;

    let mut recent = store
        .watch(&ns, r3 + 1)
        .await
        .expect("watch above the compaction");
    assert_put(
        &next_events(&mut recent, "replay above the compaction").await[0],
        &k,
        "4",
        r4,
        "replay above the compaction",
    );
    let kv = store.get(&k).await.expect("get").expect("present");
    assert_eq!(
        (kv.value.as_slice(), kv.version),
        (b"4".as_slice(), 4),
        "compaction drops history, not data"
    );
}
