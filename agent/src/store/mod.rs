//! The store: strait's cluster state, modelled on etcd v3.
//!
//! Every key lives under [`PREFIX`]. Values are opaque bytes (JSON by convention). The
//! model is etcd's: one global revision that every write bumps; per key a
//! `create_revision`, `mod_revision` and `version`; transactions that compare and then
//! either apply `success` or `failure` atomically; leases with a TTL whose expiry deletes
//! the keys attached to them; watches that resume from any revision not yet compacted.
//!
//! Two backends implement [`Store`]: [`embedded::EmbeddedStore`] (one redb file, single
//! host, the default) and, for clusters, an etcd backend. The conformance suite (the
//! dev-only crate `strait-store-conformance`, agent/store-conformance) is written against
//! the trait only and runs against both.
//!
//! Rules for users of the store (see DESIGN.md): leases carry liveness only, never
//! ownership of an allocation; hot paths touch few, coarse keys; every watch resumes from
//! its last revision and backs off.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub mod embedded;
pub mod etcd;
pub mod follow;
mod validate;

/// Root of every strait key.
pub const PREFIX: &str = "/strait/v1/";

/// A store revision (etcd's `int64` revision). Revision 0 means "none" / "from now".
pub type Revision = i64;

/// A lease id. 0 is never a valid lease.
pub type LeaseId = i64;

/// One key with its value and etcd-style metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after the first put).
    pub version: i64,
    /// Lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

/// Comparison operator of a [`Compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// What a [`Compare`] looks at. For a missing key, revisions and version are 0 and the
/// value compares as absent (a `Value` compare against a missing key is false).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmpTarget {
    Version(i64),
    CreateRevision(Revision),
    ModRevision(Revision),
    Value(Vec<u8>),
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub op: CmpOp,
    pub target: CmpTarget,
}

impl Compare {
    /// True iff the key does not exist.
    pub fn absent(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            op: CmpOp::Equal,
            target: CmpTarget::CreateRevision(0),
        }
    }

    /// True iff the key was last written at `rev` (use the `mod_revision` you read).
    pub fn mod_revision(key: impl Into<String>, rev: Revision) -> Self {
        Self {
            key: key.into(),
            op: CmpOp::Equal,
            target: CmpTarget::ModRevision(rev),
        }
    }

    /// True iff the key's value equals `value`.
    pub fn value(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            op: CmpOp::Equal,
            target: CmpTarget::Value(value.into()),
        }
    }
}

/// One operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
    /// Delete every key starting with `prefix`.
    DeletePrefix {
        prefix: String,
    },
    Get {
        key: String,
    },
}

/// Result of one [`TxnOp`], in the same order as the ops that ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResult {
    Put,
    /// Number of keys deleted.
    Delete(u64),
    Get(Option<KeyValue>),
}

/// An etcd-style transaction: if every compare holds, run `success`, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn when(mut self, c: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(c);
        self
    }
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }

    /// Packs `groups` (compares and the operations they guard, which must stay in
    /// one transaction), in order, into as few transactions as etcd takes: at most
    /// [`MAX_TXN_OPS`] compares and as many operations each. A group larger than
    /// that alone is a transaction of its own, which etcd refuses by name.
    pub fn packed(groups: impl IntoIterator<Item = TxnGroup>) -> Vec<Txn> {
        let mut out: Vec<Txn> = Vec::new();
        for (compares, ops) in groups {
            let fits = out.last().is_some_and(|t| {
                t.compares.len() + compares.len() <= MAX_TXN_OPS
                    && t.success.len() + ops.len() <= MAX_TXN_OPS
            });
            if !fits {
                out.push(Txn::new());
            }
            let last = out.last_mut().expect("pushed");
            last.compares.extend(compares);
            last.success.extend(ops);
        }
        out
    }
}

/// Compares and the operations they guard, which go in one transaction.
pub type TxnGroup = (Vec<Compare>, Vec<TxnOp>);

/// etcd's default `--max-txn-ops`: the most compares, and the most operations, one
/// transaction may carry. Writes of more (an apply of many objects) are packed into
/// several with [`Txn::packed`].
pub const MAX_TXN_OPS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether the compares held (and `success` ran).
    pub succeeded: bool,
    /// Store revision after the transaction.
    pub revision: Revision,
    pub results: Vec<TxnOpResult>,
}

/// Kind of change a watch reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch. For a delete, `kv.value` is empty and
/// `kv.mod_revision` is the revision of the delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The key as it was before this change, if it existed.
    pub prev: Option<KeyValue>,
}

/// What a watch channel carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// Changes of one revision, in order.
    Events(Vec<WatchEvent>),
    /// The requested start revision was compacted away; the watcher must re-read the
    /// prefix and start a new watch from that read's revision + 1. The watch ends after
    /// this message. (A channel that closes without this message — store closed,
    /// connection lost — means: watch again from the last revision seen + 1.)
    Compacted { compact_revision: Revision },
}

/// A live watch. Dropping it cancels the watch.
#[derive(Debug)]
pub struct Watch {
    pub rx: mpsc::Receiver<WatchMessage>,
}

/// Result of reading a prefix: the keys and the revision they were read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    pub revision: Revision,
}

/// Errors of every store backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable (etcd down, connection lost). Retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The requested revision has been compacted.
    #[error("revision {requested} compacted (compact revision {compact_revision})")]
    Compacted {
        requested: Revision,
        compact_revision: Revision,
    },
    /// The revision is in the future.
    #[error("revision {0} is newer than the store")]
    FutureRevision(Revision),
    /// The lease does not exist (expired or revoked).
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// A key outside [`PREFIX`] or otherwise malformed.
    #[error("invalid key {0:?}")]
    InvalidKey(String),
    /// The backend failed (I/O, corruption).
    #[error("store backend: {0}")]
    Backend(String),
}

/// etcd v3 semantics for strait's state. All methods are cancel-safe in the sense that a
/// dropped future either applied a write fully or not at all.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short description for `netctl status` ("embedded:/var/lib/strait/store.redb").
    fn describe(&self) -> String;

    /// Read one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Read every key starting with `prefix`, sorted by key, at one revision.
    async fn range(&self, prefix: &str) -> Result<RangeResponse, StoreError>;

    /// Unconditional put; returns the new revision.
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError>;

    /// Unconditional delete; returns whether the key existed.
    async fn delete(&self, key: &str) -> Result<bool, StoreError>;

    /// Atomic compare-and-swap transaction. A transaction that writes nothing does not
    /// bump the revision.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError>;

    /// Grant a lease with `ttl`; keys put with it are deleted when it expires.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Refresh a lease to its full TTL; `LeaseNotFound` once it expired.
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Revoke a lease now, deleting its keys.
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Watch every key starting with `prefix`, from revision `from` (inclusive); 0 means
    /// changes after now. A `from` at or below the compact revision yields one
    /// [`WatchMessage::Compacted`].
    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError>;

    /// Drop history up to and including `revision`: watches can no longer start at or
    /// below it (they get [`WatchMessage::Compacted`]).
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The current revision.
    async fn revision(&self) -> Result<Revision, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(n: usize) -> TxnGroup {
        let op = |i| TxnOp::Delete {
            key: format!("k{i}"),
        };
        (
            vec![Compare::absent(format!("c{n}"))],
            (0..n).map(op).collect(),
        )
    }

    #[test]
    fn groups_are_packed_whole_and_in_order_within_etcds_limit() {
        // 60 + 60 fit one transaction; the third group goes to the next.
        let txns = Txn::packed([group(60), group(60), group(60), group(5)]);
        let shape: Vec<(usize, usize)> = txns
            .iter()
            .map(|t| (t.compares.len(), t.success.len()))
            .collect();
        assert_eq!(shape, [(2, 120), (2, 65)]);
        // Compares count too.
        let many: Vec<_> = (0..200).map(|_| group(0)).collect();
        let txns = Txn::packed(many);
        assert_eq!(txns.len(), 2);
        assert_eq!(txns[0].compares.len(), MAX_TXN_OPS);
        // A group over the limit alone is a transaction of its own.
        let txns = Txn::packed([group(1), group(200), group(1)]);
        let sizes: Vec<usize> = txns.iter().map(|t| t.success.len()).collect();
        assert_eq!(sizes, [1, 200, 1]);
        assert!(Txn::packed([]).is_empty());
    }
}
