//! `EtcdStore`: the cluster [`Store`] backend, etcd v3 through the `etcd-client` crate.
//!
//! Over 1 000 lines: one backend of [`super::Store`] — the client, transactions,
//! leases and resumable watches over etcd's API, which share its connection handling.
//!
//! This module owns the translation between strait's store model and etcd's API (keys,
//! compares, transactions, leases, watch responses, errors), the deadlines that keep a
//! request to an unreachable etcd from hanging, the per-watch tasks that resume a broken
//! watch stream, and the lease keep-alive task ([`EtcdStore::spawn_keepalive`]).
//!
//! # Connection
//!
//! One `etcd_client::Client` (one HTTP/2 channel, balanced over the endpoints) is shared
//! by every request, watch and keep-alive. The channel reconnects by itself after etcd
//! comes back, so a store outlives etcd restarts without being recreated. Every request
//! runs under [`EtcdOptions::request_timeout`]: a refused connection fails at once, but
//! an etcd that is hung, or a peer that accepts and never answers, would otherwise keep
//! a request waiting forever. Transport failures, gRPC `Unavailable`/`DeadlineExceeded`
//! and missed deadlines all become [`StoreError::Unavailable`]. A write that fails that
//! way may or may not have been applied (as with any etcd client): callers re-read or
//! CAS. HTTP/2 pings ([`EtcdOptions::keepalive_interval`]) break watch streams on a
//! connection whose peer went silent, so they resume elsewhere or later.
//!
//! # Watches
//!
//! Each [`Store::watch`] opens its own etcd watch stream (with `prev_kv`) and forwards it
//! from a task into the watch's channel, one [`WatchMessage::Events`] per revision (etcd
//! may batch several revisions into one response while replaying). When the stream
//! breaks (etcd restarted, connection lost, watch cancelled by the server) the task
//! re-opens it from the last revision it delivered + 1, with exponential backoff, until
//! the receiver is dropped or the store is; the consumer sees no gap and no duplicate.
//!
//! The trait wants `Compacted` for a start revision *at or below* the compact revision,
//! while etcd still serves a watch from exactly the compact revision. So every etcd watch
//! starts one revision early (`from - 1`) and the task drops that revision's events: etcd
//! then reports compaction exactly when the trait does, with the compact revision, and
//! the task forwards it as [`WatchMessage::Compacted`] and ends.
//!
//! # Leases
//!
//! [`Store::lease_keep_alive`] is one refresh per call (a short keep-alive stream). For
//! an owner that just wants its lease held, [`EtcdStore::spawn_keepalive`] runs the loop:
//! a refresh every third of the TTL, quicker retries after a failure, and a
//! [`LeaseState::Lost`] report when etcd says the lease is gone or when no refresh got
//! through for a whole TTL (the same rule as etcd's Go client).
//!
//! # Deviations from etcd's own behaviour (to meet the trait)
//!
//! - A watch from more than one revision past the current one is refused with
//!   [`StoreError::FutureRevision`] (etcd would wait). A resumed watch that finds the
//!   store behind its position (etcd replaced by an empty one) ends its channel; the
//!   caller's re-watch then gets `FutureRevision` and must re-read.
//! - Keys outside [`PREFIX`] and transactions that write one key twice in a branch are
//!   refused before anything is sent ([`StoreError::InvalidKey`]).
//! - Lease TTLs are whole seconds, rounded up; etcd raises them to its minimum (~2 s).
//! - A start revision of 1 cannot start one early; if the store was compacted at exactly
//!   revision 1, such a watch replays instead of reporting `Compacted` (harmless: the
//!   history from revision 1 is still there).

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{
    Client, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    WatchOptions, WatchResponse, WatchStream,
};
use tokio::sync::{mpsc, watch as signal};
use tokio::task::JoinHandle;

use super::validate::{check_key, check_prefix, check_txn};
use super::{
    CmpOp, CmpTarget, EventKind, KeyValue, LeaseId, PREFIX, RangeResponse, Revision, Store,
    StoreError, Txn, TxnOp, TxnOpResult, TxnResponse, Watch, WatchEvent, WatchMessage,
};

/// Largest response we accept (a range of many blocks or endpoints); tonic's default is
/// 4 MiB, which a big cluster's endpoint list can exceed.
const MAX_DECODING_MESSAGE: usize = 64 * 1024 * 1024;

/// First retry delay of a broken watch stream; doubles up to
/// [`EtcdOptions::watch_backoff_max`].
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Shortest refresh period of a keep-alive task (guards against a zero TTL).
const MIN_KEEPALIVE_PERIOD: Duration = Duration::from_millis(100);

/// Tunables of an [`EtcdStore`]. `Default` is what straitd uses.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Longest wait for a TCP connection to an endpoint. Default 3 s.
    pub dial_timeout: Duration,
    /// Longest wait for any one request (and for a watch stream to be created), after
    /// which it fails with [`StoreError::Unavailable`]. Default 5 s.
    pub request_timeout: Duration,
    /// HTTP/2 ping interval on a connection with open streams (watches), so that a dead
    /// peer breaks the watch instead of leaving it silent forever. Default 10 s. (etcd
    /// refuses pings more often than every 5 s, and pings without streams.)
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is dropped. Default 5 s.
    pub keepalive_timeout: Duration,
    /// Messages buffered per watch channel. Default 128. At least 1.
    pub watch_buffer: usize,
    /// Longest delay between attempts to re-open a broken watch. Default 5 s.
    pub watch_backoff_max: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            dial_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            watch_buffer: 128,
            watch_backoff_max: Duration::from_secs(5),
        }
    }
}

/// The etcd store: see the module docs.
///
/// Created with [`EtcdStore::connect`], which returns an `Arc<EtcdStore>` (it coerces to
/// `Arc<dyn Store>`). Dropping the last `Arc` ends its watches and keep-alive tasks.
pub struct EtcdStore {
    client: Client,
    endpoints: Vec<String>,
    options: EtcdOptions,
    /// Never sent on; dropped with the store, which tells watch and keep-alive tasks
    /// (they hold receivers) to end.
    shutdown: signal::Sender<()>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connect to etcd at `endpoints` (`http://host:port`) and check that it answers.
    ///
    /// Fails with [`StoreError::Unavailable`] if no endpoint answers within
    /// [`EtcdOptions::request_timeout`], and with [`StoreError::Backend`] for malformed
    /// endpoints. Must run inside a tokio runtime.
    pub async fn connect(
        endpoints: &[String],
        options: EtcdOptions,
    ) -> Result<Arc<Self>, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::Backend("etcd: no endpoints given".into()));
        }
        let options = EtcdOptions {
            watch_buffer: options.watch_buffer.max(1),
            ..options
        };
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.dial_timeout)
            .with_keep_alive(options.keepalive_interval, options.keepalive_timeout)
            // etcd answers pings on a connection without streams with GOAWAY.
            .with_keep_alive_while_idle(false)
            .with_tcp_keepalive(options.keepalive_interval);
        let client = deadline(
            options.request_timeout,
            endpoints,
            "connect",
            Client::connect(endpoints, Some(connect)),
        )
        .await?;
        let (shutdown, _) = signal::channel(());
        let store = Arc::new(Self {
            client,
            endpoints: endpoints.to_vec(),
            options,
            shutdown,
        });
        store.revision().await?;
        Ok(store)
    }

    /// Keep `lease` alive from a background task until the handle is dropped: refresh
    /// every third of `ttl`, and report loss through the handle.
    ///
    /// `ttl` is the lease's TTL as granted; call this right after the grant (or a
    /// refresh): the task counts the TTL from now. The lease is reported
    /// [`LeaseLoss::NotFound`] as soon as etcd says it is gone, and
    /// [`LeaseLoss::Unconfirmed`] once a whole TTL passed without a successful refresh
    /// (etcd unreachable: the lease may have expired, and with it the keys attached to
    /// it). Either way the task ends, and the owner must grant a new lease and re-put its
    /// keys. Dropping the handle stops refreshing but does not revoke the lease.
    pub fn spawn_keepalive(self: &Arc<Self>, lease: LeaseId, ttl: Duration) -> KeepaliveHandle {
        let (state_tx, state_rx) = signal::channel(LeaseState::Alive);
        let task = tokio::spawn(keep_alive_loop(
            Arc::downgrade(self),
            self.shutdown.subscribe(),
            lease,
            ttl,
            state_tx,
        ));
        KeepaliveHandle {
            lease,
            state: state_rx,
            task,
        }
    }

    /// Run one request under the request deadline, mapping errors.
    async fn call<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        deadline(self.options.request_timeout, &self.endpoints, what, request).await
    }

    /// A KV client with our message size limit (cheap: it shares the channel).
    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_DECODING_MESSAGE)
    }

    /// The compact revision, learnt the only way etcd tells it: a watch from revision 1
    /// is cancelled with it. `None` if etcd does not say (never compacted, or compacted
    /// at 1).
    async fn compact_revision(&self) -> Option<Revision> {
        let open = async {
            let mut stream = self
                .client
                .watch_client()
                .watch(PREFIX, Some(WatchOptions::new().with_start_revision(1)))
                .await?;
            // The first response acknowledges the creation; a compaction notice follows
            // at once if there is one.
            for _ in 0..2 {
                match stream.message().await? {
                    Some(r) if r.compact_revision() > 0 => return Ok(Some(r.compact_revision())),
                    Some(r) if r.created() => continue,
                    _ => break,
                }
            }
            Ok(None)
        };
        self.call("watch (compact revision)", open)
            .await
            .ok()
            .flatten()
    }
}

/// Await `request` for at most `timeout`; map its error. A missed deadline means no
/// endpoint answered: [`StoreError::Unavailable`].
async fn deadline<T>(
    timeout: Duration,
    endpoints: &[String],
    what: &str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(map_error(e, None)),
        Err(_) => Err(StoreError::Unavailable(format!(
            "etcd {}: {what}: no answer within {timeout:?}",
            endpoints.join(",")
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// gRPC status codes (the numbers are fixed by the gRPC spec), as `tonic::Code` converts
/// to `i32`; we name them here rather than depend on tonic directly.
mod grpc {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const UNAVAILABLE: i32 = 14;
}

/// Map an etcd-client error to ours. `lease` is the lease the request used, for
/// [`StoreError::LeaseNotFound`]. The compacted case carries the requested revision as a
/// placeholder compact revision; [`Store::compact`] fills in the real one.
fn map_error(e: etcd_client::Error, lease: Option<LeaseId>) -> StoreError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => {
            let mapped = map_status(status.code().into(), status.message(), lease);
            match mapped {
                StoreError::Backend(_) => StoreError::Backend(format!("etcd: {status}")),
                other => other,
            }
        }
        E::LeaseKeepAliveError(msg) if msg.contains("lease not found") => {
            StoreError::LeaseNotFound(lease.unwrap_or(0))
        }
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::LeaseKeepAliveError(_) => {
            StoreError::Unavailable(format!("etcd: {e}"))
        }
        other => StoreError::Backend(format!("etcd: {other}")),
    }
}

/// Map a gRPC status (code number and message) from etcd. etcd's own errors are told
/// apart by their fixed messages (`rpctypes` in etcd), as its Go client does.
fn map_status(code: i32, msg: &str, lease: Option<LeaseId>) -> StoreError {
    if msg.contains("requested lease not found") {
        StoreError::LeaseNotFound(lease.unwrap_or(0))
    } else if msg.contains("duplicate key") {
        StoreError::InvalidKey(format!("etcd refused the txn: {msg}"))
    } else if msg.contains("required revision is a future revision") {
        StoreError::FutureRevision(0)
    } else if msg.contains("required revision has been compacted") {
        StoreError::Compacted {
            requested: 0,
            compact_revision: 0,
        }
    } else if code == grpc::UNAVAILABLE
        || code == grpc::DEADLINE_EXCEEDED
        || code == grpc::CANCELLED
        || code == grpc::ABORTED
        // "too many requests": etcd is overloaded, try again later.
        || (code == grpc::RESOURCE_EXHAUSTED && msg.contains("too many requests"))
        // hyper/h2 connection failures surface as Unknown.
        || (code == grpc::UNKNOWN && looks_like_transport(msg))
    {
        StoreError::Unavailable(format!("etcd: {msg}"))
    } else {
        StoreError::Backend(format!("etcd: {msg} (gRPC code {code})"))
    }
}

fn looks_like_transport(msg: &str) -> bool {
    let msg = msg.to_ascii_lowercase();
    [
        "transport",
        "connect",
        "connection",
        "broken pipe",
        "h2 protocol",
        "stream",
    ]
    .iter()
    .any(|w| msg.contains(w))
}

// ---------------------------------------------------------------------------------------
// Conversions

fn to_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    let key = kv
        .key_str()
        .map_err(|e| StoreError::Backend(format!("etcd: key is not UTF-8: {e}")))?;
    Ok(KeyValue {
        key: key.to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    })
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::Backend("etcd: response without header".into()))
}

fn cmp_op(op: CmpOp) -> CompareOp {
    match op {
        CmpOp::Equal => CompareOp::Equal,
        CmpOp::NotEqual => CompareOp::NotEqual,
        CmpOp::Less => CompareOp::Less,
        CmpOp::Greater => CompareOp::Greater,
    }
}

fn to_etcd_txn(txn: &Txn) -> etcd_client::Txn {
    let compares: Vec<etcd_client::Compare> = txn
        .compares
        .iter()
        .map(|c| {
            let op = cmp_op(c.op);
            let key = c.key.as_str();
            match &c.target {
                CmpTarget::Version(v) => etcd_client::Compare::version(key, op, *v),
                CmpTarget::CreateRevision(r) => etcd_client::Compare::create_revision(key, op, *r),
                CmpTarget::ModRevision(r) => etcd_client::Compare::mod_revision(key, op, *r),
                CmpTarget::Value(v) => etcd_client::Compare::value(key, op, v.clone()),
            }
        })
        .collect();
    let ops = |ops: &[TxnOp]| -> Vec<etcd_client::TxnOp> {
        ops.iter()
            .map(|op| match op {
                TxnOp::Put { key, value, lease } => etcd_client::TxnOp::put(
                    key.as_str(),
                    value.clone(),
                    lease.map(|l| PutOptions::new().with_lease(l)),
                ),
                TxnOp::Delete { key } => etcd_client::TxnOp::delete(key.as_str(), None),
                TxnOp::DeletePrefix { prefix } => etcd_client::TxnOp::delete(
                    prefix.as_str(),
                    Some(DeleteOptions::new().with_prefix()),
                ),
                TxnOp::Get { key } => etcd_client::TxnOp::get(key.as_str(), None),
            })
            .collect()
    };
    // etcd-client's builder asserts this call order: when, and_then, or_else.
    etcd_client::Txn::new()
        .when(compares)
        .and_then(ops(&txn.success))
        .or_else(ops(&txn.failure))
}

/// The lease a txn's puts use, to name it in [`StoreError::LeaseNotFound`].
fn txn_lease(txn: &Txn) -> Option<LeaseId> {
    txn.success
        .iter()
        .chain(&txn.failure)
        .find_map(|op| match op {
            TxnOp::Put { lease, .. } => *lease,
            _ => None,
        })
}

fn from_etcd_txn(r: &etcd_client::TxnResponse) -> Result<TxnResponse, StoreError> {
    let revision = header_revision(r.header())?;
    let mut results = Vec::new();
    for op in r.op_responses() {
        results.push(match op {
            etcd_client::TxnOpResponse::Put(_) => TxnOpResult::Put,
            etcd_client::TxnOpResponse::Delete(d) => {
                TxnOpResult::Delete(u64::try_from(d.deleted()).unwrap_or(0))
            }
            etcd_client::TxnOpResponse::Get(g) => {
                TxnOpResult::Get(g.kvs().first().map(to_kv).transpose()?)
            }
            etcd_client::TxnOpResponse::Txn(_) => {
                return Err(StoreError::Backend(
                    "etcd: nested txn result for a txn without nested txns".into(),
                ));
            }
        });
    }
    Ok(TxnResponse {
        succeeded: r.succeeded(),
        revision,
        results,
    })
}

fn to_event(e: &etcd_client::Event) -> Result<WatchEvent, StoreError> {
    let kv = e
        .kv()
        .ok_or_else(|| StoreError::Backend("etcd: watch event without kv".into()))?;
    Ok(WatchEvent {
        kind: match e.event_type() {
            EventType::Put => EventKind::Put,
            EventType::Delete => EventKind::Delete,
        },
        kv: to_kv(kv)?,
        prev: e.prev_kv().map(to_kv).transpose()?,
    })
}

// ---------------------------------------------------------------------------------------
// Watches

/// What one watch response means for the forwarding task.
enum Step {
    /// Messages to deliver (possibly none), in order.
    Deliver(Vec<WatchMessage>),
    /// The start revision was compacted: deliver `Compacted` and end.
    Compacted(Revision),
    /// The server cancelled the watch for another reason: re-open it.
    Cancelled(String),
}

/// Everything a forwarding task needs; it holds no reference to the store itself, so
/// the store can be dropped (which ends the task through `shutdown`).
struct Watcher {
    client: Client,
    endpoints: Vec<String>,
    options: EtcdOptions,
    prefix: String,
    /// First revision not yet delivered.
    next: Revision,
    tx: mpsc::Sender<WatchMessage>,
    shutdown: signal::Receiver<()>,
}

/// How (re-)opening a watch ended.
enum Opened {
    Stream(Box<WatchStream>),
    /// The store is behind `next`: it is not the store this watch was following.
    Behind(Revision),
}

impl Watcher {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let mut kv = self.client.kv_client();
        let get = kv.get(PREFIX, Some(GetOptions::new().with_count_only()));
        let r = deadline(
            self.options.request_timeout,
            &self.endpoints,
            "get (revision)",
            get,
        )
        .await?;
        header_revision(r.header())
    }

    /// Open an etcd watch that delivers from `self.next` on; see the module docs for
    /// why it starts one revision early.
    async fn open(&self) -> Result<Opened, StoreError> {
        let current = self.current_revision().await?;
        if self.next > current + 1 {
            return Ok(Opened::Behind(current));
        }
        let start = (self.next - 1).max(1);
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_progress_notify()
            .with_start_revision(start);
        // A replay batches many revisions into one response: same limit as ranges.
        let mut client = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_DECODING_MESSAGE);
        let prefix = self.prefix.clone();
        let open = async move {
            let mut stream = client.watch(prefix, Some(options)).await?;
            // Wait for the creation ack, so that a stream that cannot be created fails
            // here (under the deadline) and not silently in the task.
            match stream.message().await? {
                Some(r) if r.created() && !r.canceled() => Ok(Ok(Box::new(stream))),
                Some(r) => Ok(Err(StoreError::Backend(format!(
                    "etcd: watch not created: {}",
                    r.cancel_reason()
                )))),
                None => Err(etcd_client::Error::WatchError(
                    "watch stream ended before it was created".into(),
                )),
            }
        };
        let stream =
            deadline(self.options.request_timeout, &self.endpoints, "watch", open).await??;
        Ok(Opened::Stream(stream))
    }

    /// Turn one response into messages: one `Events` per revision, dropping revisions
    /// already delivered (or before the start).
    fn step(&mut self, r: &WatchResponse) -> Result<Step, StoreError> {
        if r.compact_revision() > 0 {
            return Ok(Step::Compacted(r.compact_revision()));
        }
        if r.canceled() {
            return Ok(Step::Cancelled(r.cancel_reason().to_string()));
        }
        let mut messages: Vec<WatchMessage> = Vec::new();
        let mut current: Vec<WatchEvent> = Vec::new();
        for e in r.events() {
            let event = to_event(e)?;
            let rev = event.kv.mod_revision;
            if rev < self.next {
                continue;
            }
            if current.first().is_some_and(|c| c.kv.mod_revision != rev) {
                messages.push(WatchMessage::Events(std::mem::take(&mut current)));
            }
            current.push(event);
        }
        if let Some(last) = current.last() {
            self.next = last.kv.mod_revision + 1;
            messages.push(WatchMessage::Events(current));
        } else if r.events().is_empty()
            && !r.created()
            && let Some(h) = r.header()
        {
            // A progress notification: etcd sends it only to a watcher that has caught
            // up, so everything up to the header's revision has been delivered. Moving
            // on keeps a resume after a quiet spell from landing in compacted history.
            self.next = self.next.max(h.revision() + 1);
        }
        Ok(Step::Deliver(messages))
    }

    /// Sleep for `d` unless the receiver or the store goes away first (false then).
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.tx.closed() => false,
            _ = self.shutdown.changed() => false,
        }
    }

    /// Forward `stream`, re-opening it with backoff whenever it breaks, until the
    /// receiver or the store is dropped, or the start revision is compacted.
    async fn run(mut self, mut stream: Box<WatchStream>) {
        let mut backoff = WATCH_BACKOFF_MIN;
        loop {
            let why = loop {
                let received = tokio::select! {
                    _ = self.tx.closed() => return,
                    _ = self.shutdown.changed() => return,
                    r = stream.message() => r,
                };
                let response = match received {
                    Ok(Some(r)) => r,
                    Ok(None) => break "the stream ended".to_string(),
                    Err(e) => break map_error(e, None).to_string(),
                };
                match self.step(&response) {
                    Ok(Step::Deliver(messages)) => {
                        backoff = WATCH_BACKOFF_MIN;
                        for m in messages {
                            if self.tx.send(m).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(Step::Compacted(compact_revision)) => {
                        let _ = self
                            .tx
                            .send(WatchMessage::Compacted { compact_revision })
                            .await;
                        return;
                    }
                    Ok(Step::Cancelled(reason)) => break format!("cancelled by etcd: {reason}"),
                    Err(e) => break e.to_string(),
                }
            };
            tracing::info!(prefix = %self.prefix, next = self.next, reason = %why,
                "etcd watch broke; re-opening");
            drop(stream);
            stream = loop {
                if !self.pause(backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(self.options.watch_backoff_max);
                match self.open().await {
                    Ok(Opened::Stream(s)) => break s,
                    Ok(Opened::Behind(current)) => {
                        tracing::warn!(prefix = %self.prefix, next = self.next, current,
                            "etcd is behind this watch (replaced?); ending the watch");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(prefix = %self.prefix, error = %e,
                            "re-opening etcd watch failed; retrying");
                    }
                }
            };
        }
    }
}

// ---------------------------------------------------------------------------------------
// Lease keep-alive task

/// What a [`KeepaliveHandle`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Refreshed within the last TTL (or just handed over).
    Alive,
    /// The lease is (or must be presumed) gone; the task has ended.
    Lost(LeaseLoss),
}

/// Why a kept-alive lease counts as lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseLoss {
    /// etcd says the lease does not exist (expired or revoked).
    NotFound,
    /// No refresh succeeded for a whole TTL (etcd unreachable); the lease may have
    /// expired. Carries the time since the last successful refresh.
    Unconfirmed(Duration),
    /// The store was dropped, so nobody refreshes the lease any more.
    StoreClosed,
}

/// A running keep-alive task ([`EtcdStore::spawn_keepalive`]). Dropping it stops the
/// task (the lease is not revoked; it expires after its TTL).
#[derive(Debug)]
pub struct KeepaliveHandle {
    lease: LeaseId,
    state: signal::Receiver<LeaseState>,
    task: JoinHandle<()>,
}

impl KeepaliveHandle {
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// The state right now.
    pub fn state(&self) -> LeaseState {
        *self.state.borrow()
    }

    /// A receiver of state changes, for a `select!` loop.
    pub fn subscribe(&self) -> signal::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Wait until the lease is lost, and say why.
    pub async fn lost(&mut self) -> LeaseLoss {
        match self
            .state
            .wait_for(|s| matches!(s, LeaseState::Lost(_)))
            .await
        {
            Ok(state) => match *state {
                LeaseState::Lost(why) => why,
                LeaseState::Alive => LeaseLoss::StoreClosed,
            },
            // The task ended without saying (it panicked or was aborted).
            Err(_) => LeaseLoss::StoreClosed,
        }
    }
}

impl Drop for KeepaliveHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep_alive_loop(
    store: Weak<EtcdStore>,
    mut shutdown: signal::Receiver<()>,
    lease: LeaseId,
    ttl: Duration,
    state: signal::Sender<LeaseState>,
) {
    let period = (ttl / 3).max(MIN_KEEPALIVE_PERIOD);
    // After a failure, retry sooner than the period: a TTL leaves room for few tries.
    let retry = (period / 2).max(MIN_KEEPALIVE_PERIOD);
    let mut last_ok = Instant::now();
    let mut wait = period;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {
                state.send_replace(LeaseState::Lost(LeaseLoss::StoreClosed));
                return;
            }
        }
        let Some(store) = store.upgrade() else {
            state.send_replace(LeaseState::Lost(LeaseLoss::StoreClosed));
            return;
        };
        // One attempt may not outlast the period, or a hung request would eat the TTL.
        let attempt = period.min(store.options.request_timeout);
        let result = tokio::time::timeout(attempt, store.lease_keep_alive(lease)).await;
        drop(store);
        match result {
            Ok(Ok(())) => {
                last_ok = Instant::now();
                wait = period;
                state.send_if_modified(|s| {
                    let changed = *s != LeaseState::Alive;
                    *s = LeaseState::Alive;
                    changed
                });
            }
            Ok(Err(StoreError::LeaseNotFound(_))) => {
                tracing::warn!(lease, "etcd lease is gone");
                state.send_replace(LeaseState::Lost(LeaseLoss::NotFound));
                return;
            }
            failed => {
                let since = last_ok.elapsed();
                if since >= ttl {
                    tracing::warn!(lease, ?since, "etcd lease not refreshed for its TTL");
                    state.send_replace(LeaseState::Lost(LeaseLoss::Unconfirmed(since)));
                    return;
                }
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {attempt:?}"),
                };
                tracing::info!(lease, %error, "etcd lease refresh failed; retrying");
                wait = retry.min(ttl.saturating_sub(since));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The trait

#[async_trait]
impl Store for EtcdStore {
    fn describe(&self) -> String {
        format!("etcd:{}", self.endpoints.join(","))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        let mut kv = self.kv();
        let r = self.call("get", kv.get(key, None)).await?;
        r.kvs().first().map(to_kv).transpose()
    }

    async fn range(&self, prefix: &str) -> Result<RangeResponse, StoreError> {
        check_prefix(prefix)?;
        let mut kv = self.kv();
        // etcd returns a range sorted by key, read at one revision (the header's).
        let r = self
            .call(
                "range",
                kv.get(prefix, Some(GetOptions::new().with_prefix())),
            )
            .await?;
        Ok(RangeResponse {
            kvs: r.kvs().iter().map(to_kv).collect::<Result<_, _>>()?,
            revision: header_revision(r.header())?,
        })
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        check_key(key)?;
        let mut kv = self.kv();
        let options = lease.map(|l| PutOptions::new().with_lease(l));
        let r = deadline(
            self.options.request_timeout,
            &self.endpoints,
            "put",
            kv.put(key, value, options),
        )
        .await
        .map_err(|e| with_lease(e, lease))?;
        header_revision(r.header())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        check_key(key)?;
        let mut kv = self.kv();
        let r = self.call("delete", kv.delete(key, None)).await?;
        Ok(r.deleted() > 0)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        check_txn(&txn)?;
        let lease = txn_lease(&txn);
        let mut kv = self.kv();
        let r = self
            .call("txn", kv.txn(to_etcd_txn(&txn)))
            .await
            .map_err(|e| with_lease(e, lease))?;
        from_etcd_txn(&r)
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        // etcd counts whole seconds; round up so a lease never lives shorter than asked.
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let secs = i64::try_from(secs.max(1)).unwrap_or(i64::MAX);
        let mut client = self.client.clone();
        let r = self
            .call("lease grant", client.lease_grant(secs, None))
            .await?;
        if !r.error().is_empty() {
            return Err(StoreError::Backend(format!(
                "etcd: lease grant: {}",
                r.error()
            )));
        }
        Ok(r.id())
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut client = self.client.clone();
        // etcd-client reads the first answer itself and fails with "lease not found"
        // when etcd answers with TTL 0. One refresh per call: dropping the stream ends it.
        self.call("lease keep-alive", client.lease_keep_alive(lease))
            .await
            .map_err(|e| with_lease(e, Some(lease)))?;
        Ok(())
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut client = self.client.clone();
        self.call("lease revoke", client.lease_revoke(lease))
            .await
            .map_err(|e| with_lease(e, Some(lease)))?;
        Ok(())
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        check_prefix(prefix)?;
        let current = self.revision().await?;
        // 0 means "from now" (the trait); a negative revision is read the same way.
        let next = if from <= 0 {
            current + 1
        } else if from > current + 1 {
            // etcd would wait for the revision; the trait refuses it (module docs).
            return Err(StoreError::FutureRevision(from));
        } else {
            from
        };
        let (tx, rx) = mpsc::channel(self.options.watch_buffer);
        let watcher = Watcher {
            client: self.client.clone(),
            endpoints: self.endpoints.clone(),
            options: self.options.clone(),
            prefix: prefix.to_string(),
            next,
            tx,
            shutdown: self.shutdown.subscribe(),
        };
        let stream = match watcher.open().await? {
            Opened::Stream(s) => s,
            // Only if the store went back between the two reads.
            Opened::Behind(_) => return Err(StoreError::FutureRevision(from)),
        };
        tokio::spawn(watcher.run(stream));
        Ok(Watch { rx })
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut kv = self.kv();
        match self.call("compact", kv.compact(revision, None)).await {
            Ok(_) => Ok(()),
            Err(StoreError::FutureRevision(_)) => Err(StoreError::FutureRevision(revision)),
            Err(StoreError::Compacted { .. }) => Err(StoreError::Compacted {
                requested: revision,
                // etcd's error does not say; at least `revision` is compacted.
                compact_revision: self.compact_revision().await.unwrap_or(revision),
            }),
            Err(e) => Err(e),
        }
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        let mut kv = self.kv();
        let r = self
            .call(
                "get (revision)",
                kv.get(PREFIX, Some(GetOptions::new().with_count_only())),
            )
            .await?;
        header_revision(r.header())
    }
}

/// Name the request's lease in a `LeaseNotFound` mapped without it.
fn with_lease(e: StoreError, lease: Option<LeaseId>) -> StoreError {
    match (e, lease) {
        (StoreError::LeaseNotFound(0), Some(l)) => StoreError::LeaseNotFound(l),
        (e, _) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_store_errors() {
        assert!(matches!(
            map_status(5, "etcdserver: requested lease not found", Some(7)),
            StoreError::LeaseNotFound(7)
        ));
        assert!(matches!(
            map_status(3, "etcdserver: duplicate key given in txn request", None),
            StoreError::InvalidKey(_)
        ));
        assert!(matches!(
            map_status(
                11,
                "etcdserver: mvcc: required revision is a future revision",
                None
            ),
            StoreError::FutureRevision(_)
        ));
        assert!(matches!(
            map_status(
                11,
                "etcdserver: mvcc: required revision has been compacted",
                None
            ),
            StoreError::Compacted { .. }
        ));
        for (code, msg) in [
            (14, "etcdserver: no leader"),
            (4, "context deadline exceeded"),
            (2, "transport error"),
            (8, "etcdserver: too many requests"),
        ] {
            assert!(
                matches!(map_status(code, msg, None), StoreError::Unavailable(_)),
                "{code} {msg}"
            );
        }
        assert!(matches!(
            map_status(8, "etcdserver: mvcc: database space exceeded", None),
            StoreError::Backend(_)
        ));
        assert!(matches!(
            map_error(
                etcd_client::Error::LeaseKeepAliveError("lease not found".into()),
                Some(3)
            ),
            StoreError::LeaseNotFound(3)
        ));
        assert!(matches!(
            map_error(etcd_client::Error::WatchError("closed".into()), None),
            StoreError::Unavailable(_)
        ));
    }
}
