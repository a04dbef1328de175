//! `EmbeddedStore`: the single-host [`Store`] backend, one redb file with etcd v3 semantics.
//!
//! Over 1 000 lines: one backend of [`super::Store`] with its on-disk layout, write
//! path and every deviation from etcd documented beside the code that makes it; the
//! behaviour both backends share is tested by the conformance suite.
//!
//! This module owns the on-disk layout of the embedded store, its write path (one
//! committer, group commit), lease expiry and in-process watches. Everything a caller can
//! observe follows etcd v3 (see [`super`]); the deviations are listed at the end.
//!
//! # Layout (redb tables)
//!
//! | table        | key                 | value |
//! |--------------|---------------------|-------|
//! | `kv`         | key                 | encoded record: value, create/mod revision, version, lease |
//! | `history`    | revision            | encoded events of that revision (with each key's previous value) |
//! | `leases`     | lease id            | (TTL ms, deadline as Unix ms) |
//! | `lease_keys` | (lease id, key)     | () — which keys a lease deletes when it ends |
//! | `meta`       | name                | i64: format, revision, compact revision, next lease id |
//!
//! The history is what lets a watch start at any revision that is not compacted, also
//! after a restart. It is trimmed automatically to the last
//! [`EmbeddedOptions::history_limit`] revisions so the file does not grow forever.
//!
//! # Write path
//!
//! Every write (txn, put, delete, lease grant/keep-alive/revoke/expiry, compact) is queued
//! to a single committer running on tokio's blocking pool. The committer drains the queue
//! and applies all queued requests in **one** redb write transaction, committed with redb's
//! default durability (fsync) before any request is acknowledged: group commit. Each
//! request that writes still gets its own revision and is atomic on its own, because a
//! request is validated (compares, leases) before it mutates anything; only a storage
//! error can fail mid-request, and that aborts the whole redb transaction and fails every
//! request of the group, so nothing unacknowledged is half-applied and nothing
//! acknowledged is lost.
//!
//! Having one committer also gives a total order: events are published to live watches in
//! revision order, after the commit.
//!
//! # Watches
//!
//! A watch is a tokio task per watcher. It first replays the persisted history from its
//! start revision, then follows a broadcast channel fed by the committer. Writers never
//! wait for watchers: if a watcher falls behind the broadcast buffer it silently falls back
//! to reading the history from redb, and only if the history it needs has been compacted
//! meanwhile does it receive [`WatchMessage::Compacted`] and end (the same resync a caller
//! must handle anyway). A watch also ends (its channel closes) when the store is closed or
//! dropped or on a storage error; callers re-watch from their last revision with backoff.
//!
//! # Leases
//!
//! Deadlines are stored as wall-clock Unix milliseconds so that they mean the same after
//! a restart: on reopen, leases whose deadline passed while straitd was down expire at
//! once. A background task sleeps until the earliest deadline and expires leases through
//! the committer, so an expiry is an ordinary revisioned delete that watchers see. A
//! wall-clock jump forward expires leases early; backward, late.
//!
//! # Deviations from etcd
//!
//! - Lease TTLs have millisecond granularity and no minimum (etcd: seconds, minimum ~2 s).
//! - A watch whose start revision is more than one past the current revision is refused
//!   with [`StoreError::FutureRevision`] (etcd waits). A watcher resuming from a revision
//!   the store never reached means the store was replaced; it must re-read.
//! - A watch from a revision `<=` the compact revision gets `Compacted` (the trait's
//!   contract; etcd still serves a watch from exactly the compact revision).
//! - Watch events always carry `prev` (etcd only with `prev_kv`).
//! - `compact` of a revision at or below the current compact revision fails with
//!   [`StoreError::Compacted`], as etcd does; automatic compaction never fails.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::validate::{check_key, check_prefix, check_txn};
use super::{
    CmpOp, CmpTarget, Compare, EventKind, KeyValue, LeaseId, RangeResponse, Revision, Store,
    StoreError, Txn, TxnOp, TxnOpResult, TxnResponse, Watch, WatchEvent, WatchMessage,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const HISTORY: TableDefinition<i64, &[u8]> = TableDefinition::new("history");
const LEASES: TableDefinition<i64, (i64, i64)> = TableDefinition::new("leases");
const LEASE_KEYS: TableDefinition<(i64, &str), ()> = TableDefinition::new("lease_keys");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

const META_FORMAT: &str = "format";
const META_REVISION: &str = "revision";
const META_COMPACT: &str = "compact_revision";
const META_NEXT_LEASE: &str = "next_lease";

/// Bumped whenever the table layout or a record encoding changes incompatibly.
const FORMAT_VERSION: i64 = 1;

/// Most requests one redb write transaction takes; bounds the latency of the first request
/// in a very large group.
const MAX_GROUP: usize = 256;

/// Revisions a lagging watch reads from the history per blocking call.
const HISTORY_CHUNK: usize = 256;

/// How long [`EmbeddedStore::close`] waits for in-flight work to release the file.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Tunables of an [`EmbeddedStore`]. `Default` is what straitd uses.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Revisions of change history kept for watches; older ones are compacted
    /// automatically after each write. Default 10 000. At least 1.
    pub history_limit: u64,
    /// Messages buffered per watch. When full, only that watch's task waits for its
    /// consumer; writers never do. Default 128. At least 1.
    pub watch_buffer: usize,
    /// Revisions buffered for live fan-out to watches. A watch that falls further behind
    /// catches up from the on-disk history instead. Default 1024. At least 1.
    pub live_buffer: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            history_limit: 10_000,
            watch_buffer: 128,
            live_buffer: 1024,
        }
    }
}

/// The embedded store: see the module docs.
///
/// Opened with [`EmbeddedStore::open`] or [`EmbeddedStore::open_with`]; both return an
/// `Arc<EmbeddedStore>`, which coerces to `Arc<dyn Store>`. The redb file is locked for as
/// long as the store is open: a second open of the same file (in this or another process)
/// fails. Dropping the last `Arc` starts closing; [`EmbeddedStore::close`] closes and waits
/// until the file is released, which a test that reopens the file needs.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    expiry: JoinHandle<()>,
}

/// State shared by the store handle, the committer, the lease expiry task and watches.
/// Background tasks hold it weakly so that dropping the store closes it.
struct Shared {
    path: PathBuf,
    options: EmbeddedOptions,
    /// `None` once closed. Held as an `Arc` so blocking work can use it off the lock.
    db: Mutex<Option<Arc<Database>>>,
    /// Live fan-out to watches, in revision order. `None` once closed, which ends watches.
    live: Mutex<Option<broadcast::Sender<Arc<Published>>>>,
    /// Last committed revision (updated after the commit, before publishing).
    revision: AtomicI64,
    queue: Mutex<CommitQueue>,
    /// Lease id → deadline (Unix ms), mirrored from the `leases` table after each commit;
    /// only the expiry task's schedule, never the authority.
    lease_deadlines: Mutex<HashMap<LeaseId, i64>>,
    lease_changed: Arc<Notify>,
}

/// The events of one revision, as published to live watches.
#[derive(Debug)]
struct Published {
    revision: Revision,
    events: Vec<WatchEvent>,
}

#[derive(Default)]
struct CommitQueue {
    pending: Vec<Pending>,
    /// Whether a committer is running; at most one is, which keeps revisions and
    /// publication in order.
    running: bool,
}

struct Pending {
    request: WriteRequest,
    reply: oneshot::Sender<Result<WriteReply, StoreError>>,
}

enum WriteRequest {
    Txn(Txn),
    LeaseGrant {
        ttl_ms: i64,
    },
    LeaseKeepAlive(LeaseId),
    LeaseRevoke(LeaseId),
    /// From the expiry task: revoke those of these leases whose deadline has passed.
    ExpireLeases(Vec<LeaseId>),
    Compact(Revision),
}

enum WriteReply {
    Txn(TxnResponse),
    LeaseGranted(LeaseId),
    Done,
}

impl EmbeddedStore {
    /// Open (or create) the store file at `path` with default options. Creates missing
    /// parent directories. Must run inside a tokio runtime (it starts the lease expiry
    /// task); the file work itself runs on the blocking pool.
    pub async fn open(path: &Path) -> Result<Arc<Self>, StoreError> {
        Self::open_with(path, EmbeddedOptions::default()).await
    }

    /// [`EmbeddedStore::open`] with explicit options (tests use a small history).
    pub async fn open_with(path: &Path, options: EmbeddedOptions) -> Result<Arc<Self>, StoreError> {
        let options = EmbeddedOptions {
            history_limit: options.history_limit.max(1),
            watch_buffer: options.watch_buffer.max(1),
            live_buffer: options.live_buffer.max(1),
        };
        let owned = path.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || open_file(&owned))
            .await
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))??;
        let (live, _) = broadcast::channel(options.live_buffer);
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            options,
            db: Mutex::new(Some(Arc::new(opened.db))),
            live: Mutex::new(Some(live)),
            revision: AtomicI64::new(opened.revision),
            queue: Mutex::new(CommitQueue::default()),
            lease_deadlines: Mutex::new(opened.lease_deadlines),
            lease_changed: Arc::new(Notify::new()),
        });
        let expiry = tokio::spawn(expire_leases(
            Arc::downgrade(&shared),
            shared.lease_changed.clone(),
        ));
        Ok(Arc::new(Self { shared, expiry }))
    }

    /// Close the store and wait until the file is released (in-flight reads and commits
    /// finish first; later calls fail with [`StoreError::Unavailable`]; watches end).
    /// Idempotent. Dropping the store does the same without waiting.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.expiry.abort();
        let Some(mut db) = self.shared.shut_down() else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
        loop {
            match Arc::try_unwrap(db) {
                Ok(db) => {
                    return tokio::task::spawn_blocking(move || db.close().or_backend())
                        .await
                        .map_err(|e| StoreError::Backend(format!("closing: {e}")))?;
                }
                Err(still_shared) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(StoreError::Backend(format!(
                            "{} still in use after {CLOSE_TIMEOUT:?}",
                            self.shared.path.display()
                        )));
                    }
                    db = still_shared;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    }

    async fn write(&self, request: WriteRequest) -> Result<WriteReply, StoreError> {
        submit(&self.shared, request).await
    }

    /// Run `f` on a read transaction on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.shared.db()?;
        tokio::task::spawn_blocking(move || {
            let rtx = db.begin_read().or_backend()?;
            f(&rtx)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task: {e}")))?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.expiry.abort();
        self.shared.shut_down();
    }
}

impl Shared {
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        lock(&self.db).clone().ok_or_else(closed)
    }

    /// Refuse new work and end watches; returns the database handle if still open.
    fn shut_down(&self) -> Option<Arc<Database>> {
        lock(&self.live).take();
        lock(&self.db).take()
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("embedded store is closed".into())
}

/// A poisoned lock only means another thread panicked while holding it; the data behind
/// these locks stays consistent (each critical section is a single push/take/insert).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Map any storage error to [`StoreError::Backend`].
trait OrBackend<T> {
    fn or_backend(self) -> Result<T, StoreError>;
}

impl<T, E: std::fmt::Display> OrBackend<T> for Result<T, E> {
    fn or_backend(self) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Backend(e.to_string()))
    }
}

// ---------------------------------------------------------------------------------------
// Record encoding. Hand-rolled and length-prefixed: values are opaque bytes and the
// history stores each twice (value and previous value), so compactness matters.

struct Enc(Vec<u8>);

impl Enc {
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        // Values are far below 4 GiB (redb's own limit is lower).
        self.0
            .extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
        self.0.extend_from_slice(b);
    }
    /// Everything of a `KeyValue` but the key, which the caller stores beside it.
    fn kv_fields(&mut self, kv: &KeyValue) {
        self.i64(kv.create_revision);
        self.i64(kv.mod_revision);
        self.i64(kv.version);
        self.i64(kv.lease.unwrap_or(0));
        self.bytes(&kv.value);
    }
}

struct Dec<'a>(&'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(StoreError::Backend("corrupt record: truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn i64(&mut self) -> Result<i64, StoreError> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(raw))
    }
    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.take(4)?);
        self.take(u32::from_le_bytes(raw) as usize)
    }
    fn string(&mut self) -> Result<String, StoreError> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| StoreError::Backend("corrupt record: key is not UTF-8".into()))
    }
    fn kv_fields(&mut self, key: String) -> Result<KeyValue, StoreError> {
        let create_revision = self.i64()?;
        let mod_revision = self.i64()?;
        let version = self.i64()?;
        let lease = self.i64()?;
        let value = self.bytes()?.to_vec();
        Ok(KeyValue {
            key,
            value,
            create_revision,
            mod_revision,
            version,
            lease: (lease != 0).then_some(lease),
        })
    }
}

fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut e = Enc(Vec::with_capacity(36 + kv.value.len()));
    e.kv_fields(kv);
    e.0
}

fn decode_kv(key: &str, raw: &[u8]) -> Result<KeyValue, StoreError> {
    Dec(raw).kv_fields(key.to_string())
}

fn encode_events(events: &[WatchEvent]) -> Vec<u8> {
    let mut e = Enc(Vec::new());
    e.i64(events.len() as i64);
    for ev in events {
        e.i64(match ev.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        });
        e.bytes(ev.kv.key.as_bytes());
        e.kv_fields(&ev.kv);
        match &ev.prev {
            Some(prev) => {
                e.i64(1);
                e.kv_fields(prev);
            }
            None => e.i64(0),
        }
    }
    e.0
}

fn decode_events(raw: &[u8]) -> Result<Vec<WatchEvent>, StoreError> {
    let mut d = Dec(raw);
    let n = d.i64()?;
    let mut events = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(1024));
    for _ in 0..n {
        let kind = match d.i64()? {
            0 => EventKind::Put,
            1 => EventKind::Delete,
            other => {
                return Err(StoreError::Backend(format!(
                    "corrupt history: event kind {other}"
                )));
            }
        };
        let key = d.string()?;
        let kv = d.kv_fields(key.clone())?;
        let prev = match d.i64()? {
            0 => None,
            _ => Some(d.kv_fields(key)?),
        };
        events.push(WatchEvent { kind, kv, prev });
    }
    Ok(events)
}

// ---------------------------------------------------------------------------------------
// Opening

struct Opened {
    db: Database,
    revision: Revision,
    lease_deadlines: HashMap<LeaseId, i64>,
}

fn open_file(path: &Path) -> Result<Opened, StoreError> {
    let at = |e: &dyn std::fmt::Display| StoreError::Backend(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| at(&e))?;
    }
    let db = Database::create(path).map_err(|e| at(&e))?;
    let wtx = db.begin_write().map_err(|e| at(&e))?;
    let (revision, lease_deadlines) = {
        let mut meta = wtx.open_table(META).map_err(|e| at(&e))?;
        let format = meta
            .get(META_FORMAT)
            .map_err(|e| at(&e))?
            .map(|g| g.value());
        match format {
            None => {
                meta.insert(META_FORMAT, FORMAT_VERSION)
                    .map_err(|e| at(&e))?;
            }
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(at(&format!(
                    "store format {other}, this straitd reads format {FORMAT_VERSION}"
                )));
            }
        }
        let revision = meta
            .get(META_REVISION)
            .map_err(|e| at(&e))?
            .map_or(0, |g| g.value());
        // Create every table now so that readers never meet a missing one.
        wtx.open_table(KV).map_err(|e| at(&e))?;
        wtx.open_table(HISTORY).map_err(|e| at(&e))?;
        wtx.open_table(LEASE_KEYS).map_err(|e| at(&e))?;
        let leases = wtx.open_table(LEASES).map_err(|e| at(&e))?;
        let mut deadlines = HashMap::new();
        for entry in leases.iter().map_err(|e| at(&e))? {
            let (id, lease) = entry.map_err(|e| at(&e))?;
            deadlines.insert(id.value(), lease.value().1);
        }
        (revision, deadlines)
    };
    wtx.commit().map_err(|e| at(&e))?;
    Ok(Opened {
        db,
        revision,
        lease_deadlines,
    })
}

// ---------------------------------------------------------------------------------------
// The committer

async fn submit(shared: &Arc<Shared>, request: WriteRequest) -> Result<WriteReply, StoreError> {
    shared.db()?; // fail fast once closed
    let (reply, answer) = oneshot::channel();
    {
        let mut queue = lock(&shared.queue);
        queue.pending.push(Pending { request, reply });
        if !queue.running {
            queue.running = true;
            let committer = shared.clone();
            tokio::task::spawn_blocking(move || run_committer(&committer));
        }
    }
    // The request stays queued if this future is dropped: it is then applied fully,
    // which is the cancel-safety the trait promises.
    answer
        .await
        .map_err(|_| StoreError::Backend("embedded store committer failed".into()))?
}

/// Drain the queue, one redb write transaction per group, until it is empty.
fn run_committer(shared: &Shared) {
    // If a group panics, fail what is queued (dropping the reply senders) and let the
    // next request start a new committer instead of queueing forever.
    struct PanicGuard<'a>(&'a Shared);
    impl Drop for PanicGuard<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let mut queue = lock(&self.0.queue);
                queue.pending.clear();
                queue.running = false;
            }
        }
    }
    let _guard = PanicGuard(shared);
    loop {
        let group: Vec<Pending> = {
            let mut queue = lock(&shared.queue);
            if queue.pending.is_empty() {
                queue.running = false;
                return;
            }
            let n = queue.pending.len().min(MAX_GROUP);
            queue.pending.drain(..n).collect()
        };
        commit_group(shared, group);
    }
}

/// Why a request failed inside the committer.
enum ApplyError {
    /// Refused by a check made before the request changed anything (lease missing,
    /// future or compacted revision). Only this request fails.
    Rejected(StoreError),
    /// Storage failed, possibly mid-request: the whole group is aborted.
    Fatal(StoreError),
}

impl ApplyError {
    fn into_error(self) -> StoreError {
        match self {
            ApplyError::Rejected(e) | ApplyError::Fatal(e) => e,
        }
    }
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> Self {
        ApplyError::Fatal(e)
    }
}

impl From<redb::StorageError> for ApplyError {
    fn from(e: redb::StorageError) -> Self {
        ApplyError::Fatal(StoreError::Backend(e.to_string()))
    }
}

fn commit_group(shared: &Shared, group: Vec<Pending>) {
    let (requests, replies): (Vec<_>, Vec<_>) =
        group.into_iter().map(|p| (p.request, p.reply)).unzip();
    match apply_group(shared, requests) {
        Ok(done) => {
            shared.revision.store(done.revision, Ordering::SeqCst);
            if !done.lease_changes.is_empty() {
                let mut deadlines = lock(&shared.lease_deadlines);
                for (id, deadline) in done.lease_changes {
                    match deadline {
                        Some(d) => deadlines.insert(id, d),
                        None => deadlines.remove(&id),
                    };
                }
                shared.lease_changed.notify_one();
            }
            if let Some(live) = lock(&shared.live).as_ref() {
                for published in done.published {
                    // No receivers is fine: nobody is watching.
                    let _ = live.send(published);
                }
            }
            for (reply, result) in replies.into_iter().zip(done.results) {
                // The caller may have gone away; its write stands.
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            let message = e.to_string();
            tracing::warn!(store = %shared.path.display(), error = %message, "embedded store commit failed");
            for reply in replies {
                let _ = reply.send(Err(match &e {
                    StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
                    _ => StoreError::Backend(message.clone()),
                }));
            }
        }
    }
}

struct GroupDone {
    revision: Revision,
    results: Vec<Result<WriteReply, StoreError>>,
    published: Vec<Arc<Published>>,
    lease_changes: Vec<(LeaseId, Option<i64>)>,
}

fn apply_group(shared: &Shared, requests: Vec<WriteRequest>) -> Result<GroupDone, StoreError> {
    let db = shared.db()?;
    let wtx = db.begin_write().or_backend()?;
    // The tables borrow the transaction: finish with them before committing.
    let done = {
        let mut w = Writer::open(&wtx)?;
        let mut results = Vec::with_capacity(requests.len());
        for request in requests {
            match w.apply(request) {
                Ok(reply) => results.push(Ok(reply)),
                Err(ApplyError::Rejected(e)) => results.push(Err(e)),
                Err(ApplyError::Fatal(e)) => return Err(e),
            }
        }
        w.finish(shared.options.history_limit)
            .map_err(ApplyError::into_error)?;
        GroupDone {
            revision: w.revision,
            results,
            published: w.published,
            lease_changes: w.lease_changes,
        }
    };
    wtx.commit().or_backend()?;
    Ok(done)
}

/// One redb write transaction's tables and the store counters as they evolve through a
/// group of requests.
struct Writer<'t> {
    kv: redb::Table<'t, &'static str, &'static [u8]>,
    history: redb::Table<'t, i64, &'static [u8]>,
    leases: redb::Table<'t, i64, (i64, i64)>,
    lease_keys: redb::Table<'t, (i64, &'static str), ()>,
    meta: redb::Table<'t, &'static str, i64>,
    revision: Revision,
    compact: Revision,
    next_lease: LeaseId,
    /// One clock reading per group: every lease decision in it agrees.
    now: i64,
    published: Vec<Arc<Published>>,
    lease_changes: Vec<(LeaseId, Option<i64>)>,
}

impl<'t> Writer<'t> {
    fn open(wtx: &'t redb::WriteTransaction) -> Result<Self, StoreError> {
        let meta = wtx.open_table(META).or_backend()?;
        let get = |name: &str| -> Result<i64, StoreError> {
            Ok(meta.get(name).or_backend()?.map_or(0, |g| g.value()))
        };
        let revision = get(META_REVISION)?;
        let compact = get(META_COMPACT)?;
        let next_lease = get(META_NEXT_LEASE)?.max(1);
        Ok(Self {
            kv: wtx.open_table(KV).or_backend()?,
            history: wtx.open_table(HISTORY).or_backend()?,
            leases: wtx.open_table(LEASES).or_backend()?,
            lease_keys: wtx.open_table(LEASE_KEYS).or_backend()?,
            meta,
            revision,
            compact,
            next_lease,
            now: now_ms(),
            published: Vec::new(),
            lease_changes: Vec::new(),
        })
    }

    fn apply(&mut self, request: WriteRequest) -> Result<WriteReply, ApplyError> {
        match request {
            WriteRequest::Txn(txn) => self.txn(txn).map(WriteReply::Txn),
            WriteRequest::LeaseGrant { ttl_ms } => {
                let id = self.next_lease;
                self.next_lease += 1;
                let deadline = self.now.saturating_add(ttl_ms);
                self.leases.insert(id, (ttl_ms, deadline))?;
                self.lease_changes.push((id, Some(deadline)));
                Ok(WriteReply::LeaseGranted(id))
            }
            WriteRequest::LeaseKeepAlive(id) => {
                let Some((ttl_ms, deadline)) = self.lease(id)? else {
                    return Err(ApplyError::Rejected(StoreError::LeaseNotFound(id)));
                };
                // Past its deadline the lease is dead even if the expiry task has not
                // deleted its keys yet (as etcd).
                if deadline <= self.now {
                    return Err(ApplyError::Rejected(StoreError::LeaseNotFound(id)));
                }
                let deadline = self.now.saturating_add(ttl_ms);
                self.leases.insert(id, (ttl_ms, deadline))?;
                self.lease_changes.push((id, Some(deadline)));
                Ok(WriteReply::Done)
            }
            WriteRequest::LeaseRevoke(id) => {
                if self.lease(id)?.is_none() {
                    return Err(ApplyError::Rejected(StoreError::LeaseNotFound(id)));
                }
                self.end_lease(id)?;
                Ok(WriteReply::Done)
            }
            WriteRequest::ExpireLeases(ids) => {
                for id in ids {
                    // Re-checked here: a keep-alive may have been committed since the
                    // expiry task looked.
                    if matches!(self.lease(id)?, Some((_, deadline)) if deadline <= self.now) {
                        self.end_lease(id)?;
                    }
                }
                Ok(WriteReply::Done)
            }
            WriteRequest::Compact(rev) => {
                if rev > self.revision {
                    return Err(ApplyError::Rejected(StoreError::FutureRevision(rev)));
                }
                if rev <= self.compact {
                    return Err(ApplyError::Rejected(StoreError::Compacted {
                        requested: rev,
                        compact_revision: self.compact,
                    }));
                }
                self.compact_to(rev)?;
                Ok(WriteReply::Done)
            }
        }
    }

    fn txn(&mut self, txn: Txn) -> Result<TxnResponse, ApplyError> {
        // Phase 1, read-only: decide the branch and check its leases. A rejection here
        // leaves nothing behind.
        let mut succeeded = true;
        for c in &txn.compares {
            if !self.compare(c)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded { txn.success } else { txn.failure };
        for op in &ops {
            if let TxnOp::Put {
                lease: Some(id), ..
            } = op
                && !self.lease_alive(*id)?
            {
                return Err(ApplyError::Rejected(StoreError::LeaseNotFound(*id)));
            }
        }
        // Phase 2: apply. Only storage errors from here on, and they abort the group.
        let rev = self.revision + 1;
        let mut events = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(match op {
                TxnOp::Put { key, value, lease } => {
                    self.put(rev, key, value, lease, &mut events)?;
                    TxnOpResult::Put
                }
                TxnOp::Delete { key } => {
                    TxnOpResult::Delete(self.delete(rev, &key, &mut events)?)
                }
                TxnOp::DeletePrefix { prefix } => {
                    let mut n = 0;
                    for key in self.keys_under(&prefix)? {
                        n += self.delete(rev, &key, &mut events)?;
                    }
                    TxnOpResult::Delete(n)
                }
                TxnOp::Get { key } => TxnOpResult::Get(self.get(&key)?),
            });
        }
        self.record(rev, events)?;
        Ok(TxnResponse {
            succeeded,
            revision: self.revision,
            results,
        })
    }

    fn compare(&self, c: &Compare) -> Result<bool, ApplyError> {
        let kv = self.get(&c.key)?;
        let ordering = match (&c.target, &kv) {
            // etcd: a value compare against a missing key is false, whatever the operator.
            (CmpTarget::Value(_), None) => return Ok(false),
            (CmpTarget::Value(v), Some(kv)) => kv.value.as_slice().cmp(v.as_slice()),
            (CmpTarget::Version(n), kv) => kv.as_ref().map_or(0, |k| k.version).cmp(n),
            (CmpTarget::CreateRevision(r), kv) => {
                kv.as_ref().map_or(0, |k| k.create_revision).cmp(r)
            }
            (CmpTarget::ModRevision(r), kv) => kv.as_ref().map_or(0, |k| k.mod_revision).cmp(r),
        };
        Ok(match c.op {
            CmpOp::Equal => ordering.is_eq(),
            CmpOp::NotEqual => ordering.is_ne(),
            CmpOp::Less => ordering.is_lt(),
            CmpOp::Greater => ordering.is_gt(),
        })
    }

    fn get(&self, key: &str) -> Result<Option<KeyValue>, ApplyError> {
        match self.kv.get(key)? {
            Some(raw) => Ok(Some(decode_kv(key, raw.value())?)),
            None => Ok(None),
        }
    }

    fn keys_under(&self, prefix: &str) -> Result<Vec<String>, ApplyError> {
        let mut keys = Vec::new();
        for entry in self.kv.range::<&str>(prefix..)? {
            let (key, _) = entry?;
            let key = key.value();
            if !key.starts_with(prefix) {
                break;
            }
            keys.push(key.to_string());
        }
        Ok(keys)
    }

    fn put(
        &mut self,
        rev: Revision,
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
        events: &mut Vec<WatchEvent>,
    ) -> Result<(), ApplyError> {
        let prev = self.get(&key)?;
        let kv = KeyValue {
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
            value,
            key,
        };
        // A put moves the key to the new lease (or to none), as etcd.
        let old_lease = prev.as_ref().and_then(|p| p.lease);
        if old_lease != lease {
            if let Some(old) = old_lease {
                self.lease_keys.remove((old, kv.key.as_str()))?;
            }
            if let Some(new) = lease {
                self.lease_keys.insert((new, kv.key.as_str()), ())?;
            }
        }
        self.kv.insert(kv.key.as_str(), encode_kv(&kv).as_slice())?;
        events.push(WatchEvent {
            kind: EventKind::Put,
            kv,
            prev,
        });
        Ok(())
    }

    /// Returns how many keys were deleted (0 or 1).
    fn delete(
        &mut self,
        rev: Revision,
        key: &str,
        events: &mut Vec<WatchEvent>,
    ) -> Result<u64, ApplyError> {
        let prev = match self.kv.remove(key)? {
            Some(raw) => decode_kv(key, raw.value())?,
            None => return Ok(0),
        };
        if let Some(lease) = prev.lease {
            self.lease_keys.remove((lease, key))?;
        }
        events.push(WatchEvent {
            kind: EventKind::Delete,
            // etcd's tombstone: only the key and the revision of the delete.
            kv: KeyValue {
                key: key.to_string(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: rev,
                version: 0,
                lease: None,
            },
            prev: Some(prev),
        });
        Ok(1)
    }

    fn lease(&self, id: LeaseId) -> Result<Option<(i64, i64)>, ApplyError> {
        Ok(self.leases.get(id)?.map(|g| g.value()))
    }

    fn lease_alive(&self, id: LeaseId) -> Result<bool, ApplyError> {
        Ok(matches!(self.lease(id)?, Some((_, deadline)) if deadline > self.now))
    }

    /// Delete a lease and its keys, in one revision (if it had keys).
    fn end_lease(&mut self, id: LeaseId) -> Result<(), ApplyError> {
        let mut keys = Vec::new();
        for entry in self.lease_keys.range((id, "")..(id + 1, ""))? {
            let (k, _) = entry?;
            keys.push(k.value().1.to_string());
        }
        let rev = self.revision + 1;
        let mut events = Vec::new();
        for key in &keys {
            self.delete(rev, key, &mut events)?;
        }
        self.leases.remove(id)?;
        self.record(rev, events)?;
        self.lease_changes.push((id, None));
        Ok(())
    }

    /// A write that changed something takes the next revision and enters the history;
    /// one that changed nothing leaves the revision alone (etcd).
    fn record(&mut self, rev: Revision, events: Vec<WatchEvent>) -> Result<(), ApplyError> {
        if events.is_empty() {
            return Ok(());
        }
        debug_assert_eq!(rev, self.revision + 1);
        self.history
            .insert(rev, encode_events(&events).as_slice())?;
        self.revision = rev;
        self.published.push(Arc::new(Published {
            revision: rev,
            events,
        }));
        Ok(())
    }

    /// History below `rev` goes; watches from `rev` or below get `Compacted`.
    fn compact_to(&mut self, rev: Revision) -> Result<(), ApplyError> {
        self.history.retain_in::<i64, _>(..rev, |_, _| false)?;
        self.compact = rev;
        Ok(())
    }

    /// Automatic compaction, then persist the counters.
    fn finish(&mut self, history_limit: u64) -> Result<(), ApplyError> {
        let limit = i64::try_from(history_limit).unwrap_or(i64::MAX);
        if self.revision - self.compact > limit {
            self.compact_to(self.revision - limit)?;
        }
        self.meta.insert(META_REVISION, self.revision)?;
        self.meta.insert(META_COMPACT, self.compact)?;
        self.meta.insert(META_NEXT_LEASE, self.next_lease)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Lease expiry

/// Sleep until the earliest lease deadline, then expire what is due through the
/// committer. Holds the store weakly; aborted when the store closes.
async fn expire_leases(shared: Weak<Shared>, changed: Arc<Notify>) {
    loop {
        let sleep_for = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let now = now_ms();
            let (due, earliest) = {
                let deadlines = lock(&shared.lease_deadlines);
                let due: Vec<LeaseId> = deadlines
                    .iter()
                    .filter(|&(_, &d)| d <= now)
                    .map(|(&id, _)| id)
                    .collect();
                (due, deadlines.values().copied().filter(|&d| d > now).min())
            };
            if !due.is_empty() {
                match submit(&shared, WriteRequest::ExpireLeases(due)).await {
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "embedded store: lease expiry failed, retrying");
                        Some(Duration::from_secs(1))
                    }
                }
            } else {
                earliest.map(|d| Duration::from_millis(u64::try_from(d - now).unwrap_or(0)))
            }
        };
        // A grant or keep-alive notifies (notify_one keeps a permit, so none is lost
        // between the scan above and this wait).
        match sleep_for {
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = changed.notified() => {}
                }
            }
            None => changed.notified().await,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Watches

enum HistoryChunk {
    Compacted(Revision),
    Events {
        messages: Vec<WatchMessage>,
        /// First revision not covered by this chunk.
        next: Revision,
        /// Whether `next` is past the head revision of the snapshot read.
        at_head: bool,
    },
}

fn filter(events: &[WatchEvent], prefix: &str) -> Vec<WatchEvent> {
    events
        .iter()
        .filter(|e| e.kv.key.starts_with(prefix))
        .cloned()
        .collect()
}

/// Read up to [`HISTORY_CHUNK`] revisions of history from `from`, filtered by `prefix`.
fn read_history(db: &Database, prefix: &str, from: Revision) -> Result<HistoryChunk, StoreError> {
    let rtx = db.begin_read().or_backend()?;
    let meta = rtx.open_table(META).or_backend()?;
    let get = |name: &str| -> Result<i64, StoreError> {
        Ok(meta.get(name).or_backend()?.map_or(0, |g| g.value()))
    };
    let compact = get(META_COMPACT)?;
    let head = get(META_REVISION)?;
    if from <= compact {
        return Ok(HistoryChunk::Compacted(compact));
    }
    let history = rtx.open_table(HISTORY).or_backend()?;
    let mut messages = Vec::new();
    let mut next = from;
    let mut seen = 0;
    for entry in history.range(from..=head).or_backend()? {
        let (rev, raw) = entry.or_backend()?;
        let events = filter(&decode_events(raw.value())?, prefix);
        if !events.is_empty() {
            messages.push(WatchMessage::Events(events));
        }
        next = rev.value() + 1;
        seen += 1;
        if seen == HISTORY_CHUNK {
            break;
        }
    }
    if seen < HISTORY_CHUNK {
        next = head + 1;
    }
    Ok(HistoryChunk::Events {
        messages,
        next,
        at_head: next > head,
    })
}

/// One watch: replay history from `next`, then follow the live fan-out; fall back to the
/// history whenever the live stream lags or skips.
async fn run_watch(
    shared: Weak<Shared>,
    prefix: Arc<str>,
    mut next: Revision,
    mut live: broadcast::Receiver<Arc<Published>>,
    tx: mpsc::Sender<WatchMessage>,
    mut catching_up: bool,
) {
    loop {
        while catching_up {
            let db = match shared.upgrade().map(|s| s.db()) {
                Some(Ok(db)) => db,
                _ => return, // closed
            };
            let p = prefix.clone();
            let chunk = tokio::task::spawn_blocking(move || read_history(&db, &p, next)).await;
            match chunk {
                Ok(Ok(HistoryChunk::Compacted(compact_revision))) => {
                    let _ = tx.send(WatchMessage::Compacted { compact_revision }).await;
                    return;
                }
                Ok(Ok(HistoryChunk::Events {
                    messages,
                    next: after,
                    at_head,
                })) => {
                    for m in messages {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                    next = after;
                    catching_up = !at_head;
                }
                Ok(Err(e)) => {
                    tracing::warn!(prefix = %prefix, error = %e, "embedded store: watch ended");
                    return;
                }
                Err(e) => {
                    tracing::warn!(prefix = %prefix, error = %e, "embedded store: watch ended");
                    return;
                }
            }
        }
        let received = tokio::select! {
            _ = tx.closed() => return,
            r = live.recv() => r,
        };
        match received {
            Ok(published) if published.revision < next => {}
            Ok(published) if published.revision == next => {
                next += 1;
                let events = filter(&published.events, &prefix);
                if !events.is_empty() && tx.send(WatchMessage::Events(events)).await.is_err() {
                    return;
                }
            }
            // A skipped revision (not expected) or a lag: the history has it all.
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => catching_up = true,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The trait

#[async_trait]
impl Store for EmbeddedStore {
    fn describe(&self) -> String {
        format!("embedded:{}", self.shared.path.display())
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        let key = key.to_string();
        self.read(move |rtx| {
            let kv = rtx.open_table(KV).or_backend()?;
            match kv.get(key.as_str()).or_backend()? {
                Some(raw) => Ok(Some(decode_kv(&key, raw.value())?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn range(&self, prefix: &str) -> Result<RangeResponse, StoreError> {
        check_prefix(prefix)?;
        let prefix = prefix.to_string();
        self.read(move |rtx| {
            // One read transaction: the keys and the revision are of one snapshot.
            let revision = rtx
                .open_table(META)
                .or_backend()?
                .get(META_REVISION)
                .or_backend()?
                .map_or(0, |g| g.value());
            let table = rtx.open_table(KV).or_backend()?;
            let mut kvs = Vec::new();
            for entry in table.range::<&str>(prefix.as_str()..).or_backend()? {
                let (key, raw) = entry.or_backend()?;
                let key = key.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                kvs.push(decode_kv(key, raw.value())?);
            }
            Ok(RangeResponse { kvs, revision })
        })
        .await
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        let txn = Txn::new().and_then([TxnOp::Put {
            key: key.to_string(),
            value,
            lease,
        }]);
        Ok(self.txn(txn).await?.revision)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let txn = Txn::new().and_then([TxnOp::Delete {
            key: key.to_string(),
        }]);
        let response = self.txn(txn).await?;
        Ok(matches!(response.results.first(), Some(TxnOpResult::Delete(n)) if *n > 0))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        check_txn(&txn)?;
        match self.write(WriteRequest::Txn(txn)).await? {
            WriteReply::Txn(response) => Ok(response),
            _ => Err(unexpected_reply()),
        }
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        match self.write(WriteRequest::LeaseGrant { ttl_ms }).await? {
            WriteReply::LeaseGranted(id) => Ok(id),
            _ => Err(unexpected_reply()),
        }
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.write(WriteRequest::LeaseKeepAlive(lease)).await?;
        Ok(())
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.write(WriteRequest::LeaseRevoke(lease)).await?;
        Ok(())
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        check_prefix(prefix)?;
        // Subscribe before reading the revision: every revision above the one read is
        // published after this subscription, so the live stream has no gap.
        let live = lock(&self.shared.live)
            .as_ref()
            .ok_or_else(closed)?
            .subscribe();
        let current = self.shared.revision.load(Ordering::SeqCst);
        // 0 means "from now" (the trait); a negative revision is read the same way.
        let (next, catching_up) = if from <= 0 {
            (current + 1, false)
        } else if from > current + 1 {
            return Err(StoreError::FutureRevision(from));
        } else {
            // Also for `from == current + 1`: the history read checks compaction.
            (from, true)
        };
        let (tx, rx) = mpsc::channel(self.shared.options.watch_buffer);
        tokio::spawn(run_watch(
            Arc::downgrade(&self.shared),
            Arc::from(prefix),
            next,
            live,
            tx,
            catching_up,
        ));
        Ok(Watch { rx })
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.write(WriteRequest::Compact(revision)).await?;
        Ok(())
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.shared.db()?;
        Ok(self.shared.revision.load(Ordering::SeqCst))
    }
}

fn unexpected_reply() -> StoreError {
    StoreError::Backend("embedded store: committer answered the wrong request kind".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &[u8], lease: Option<LeaseId>) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: 3,
            mod_revision: 7,
            version: 5,
            lease,
        }
    }

    #[test]
    fn records_round_trip() {
        let a = kv("/strait/v1/a", b"hello", Some(9));
        assert_eq!(decode_kv(&a.key, &encode_kv(&a)).unwrap(), a);
        let events = vec![
            WatchEvent {
                kind: EventKind::Put,
                kv: kv("/strait/v1/a", b"new", None),
                prev: Some(a.clone()),
            },
            WatchEvent {
                kind: EventKind::Delete,
                kv: kv("/strait/v1/b", b"", None),
                prev: None,
            },
        ];
        assert_eq!(decode_events(&encode_events(&events)).unwrap(), events);
    }

    #[test]
    fn truncated_record_is_an_error_not_a_panic() {
        let raw = encode_kv(&kv("/strait/v1/a", b"hello", None));
        for n in 0..raw.len() {
            assert!(
                decode_kv("/strait/v1/a", &raw[..n]).is_err(),
                "prefix of {n} bytes"
            );
        }
    }
}
