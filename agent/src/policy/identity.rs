//! Cluster-wide security identities: one number per distinct (namespace, labels),
//! allocated in the store so every node names an endpoint's peers alike.
//!
//! Keys below `/strait/v1/`:
//! - `identities/<id>`: the [`IdentityLabels`] the number stands for (JSON);
//! - `identity-index/<digest>`: the id of a label set, found by the FNV-1a 128 digest
//!   of its canonical JSON (sorted keys: serde's output of a `BTreeMap`). A digest
//!   that collides is detected by comparing the stored labels, and the next slot
//!   (`<digest>.1`, `.2`, …) is used;
//! - `identity-next`: the next number to hand out, from
//!   [`FIRST_ALLOCATED_IDENTITY`]. Numbers are never handed out twice.
//!
//! Allocation is one compare-and-swap transaction (counter unchanged, index slot
//! absent) retried on conflict, so two agents allocating the same labels at once
//! end with one identity.
//!
//! # Garbage collection, and why a concurrent ADD never loses its identity
//! The GC works in two steps, each a CAS on the identity's `mod_revision`: an
//! identity no endpoint record (of any node) names is first *marked* unused (its
//! value gains `unused_since`, a Unix time); one still marked and unreferenced a
//! grace later is deleted with its index. The records are read *after* the
//! identities, so a record written before the read counts.
//!
//! [`Identities::resolve`] — which ADD and the label-change path call before they
//! write a record naming the identity — *unmarks* a marked identity it returns
//! (CAS). So between resolve and the record's write (milliseconds) the identity is
//! unmarked, and the GC cannot delete it before marking it again and waiting a whole
//! grace, by when the record exists and counts. If the GC's delete comes first,
//! resolve's unmark fails, and resolve finds the labels unallocated and allocates
//! anew. Unmarked identities cost the allocation path no write at all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strait_policy::tables::{CIDR_CLASS_FLAG, FIRST_ALLOCATED_IDENTITY};
use strait_policy::view::IdentityLabels;
use tracing::{debug, info};

use crate::store::{Compare, PREFIX, Store, StoreError, Txn, TxnOp};

/// How long an identity stays unreferenced before the GC deletes it.
pub const DEFAULT_IDENTITY_GC_GRACE: Duration = Duration::from_secs(5 * 60);

/// Digest slots tried before giving up (a second FNV-128 collision is not expected).
const MAX_SLOTS: usize = 8;
/// CAS attempts before allocation reports contention.
const MAX_ATTEMPTS: usize = 64;

pub fn identities_prefix() -> String {
    format!("{PREFIX}identities/")
}

pub fn identity_key(id: u32) -> String {
    format!("{}{id}", identities_prefix())
}

fn index_prefix() -> String {
    format!("{PREFIX}identity-index/")
}

fn counter_key() -> String {
    format!("{PREFIX}identity-next")
}

/// The id an `identities/<id>` key names.
pub fn id_of_key(key: &str) -> Option<u32> {
    key.strip_prefix(&identities_prefix())?.parse().ok()
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("identity key {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("identities exhausted: the counter reached {0}")]
    Exhausted(u32),
    #[error("allocating an identity for {0}: too much contention, try again")]
    Contention(String),
}

/// The canonical bytes of a label set: what the digest is of and what is stored.
pub fn canonical(labels: &IdentityLabels) -> Vec<u8> {
    // Strings and a BTreeMap of strings: always serialises, keys sorted.
    serde_json::to_vec(labels).unwrap_or_default()
}

/// The stored value: the labels, and the GC's mark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    labels: IdentityLabels,
    /// Unix seconds since which the GC has seen no record name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unused_since: Option<u64>,
}

fn encode(labels: &IdentityLabels, unused_since: Option<u64>) -> Vec<u8> {
    serde_json::to_vec(&Stored {
        labels: labels.clone(),
        unused_since,
    })
    .unwrap_or_default()
}

fn decode(key: &str, value: &[u8]) -> Result<Stored, IdentityError> {
    serde_json::from_slice(value).map_err(|e| IdentityError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// FNV-1a, 128 bits (the reference offset basis and prime), as 32 hex digits.
pub fn fnv1a128_hex(bytes: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for b in bytes {
        h ^= u128::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    format!("{h:032x}")
}

fn index_key(digest: &str, slot: usize) -> String {
    if slot == 0 {
        format!("{}{digest}", index_prefix())
    } else {
        format!("{}{digest}.{slot}", index_prefix())
    }
}

fn parse_id(key: &str, value: &[u8]) -> Result<u32, IdentityError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| IdentityError::Corrupt {
            key: key.to_string(),
            reason: "not a number".into(),
        })
}

/// The label set an `identities/<id>` value stands for.
pub fn decode_labels(key: &str, value: &[u8]) -> Result<IdentityLabels, IdentityError> {
    decode(key, value).map(|s| s.labels)
}

/// Allocation and GC of identities on one store. Cheap to clone.
#[derive(Clone)]
pub struct Identities {
    store: Arc<dyn Store>,
    grace: Duration,
}

impl Identities {
    pub fn new(store: Arc<dyn Store>, grace: Duration) -> Self {
        Self { store, grace }
    }

    /// The identity of `labels`, allocated if none exists yet. Idempotent; safe with
    /// any number of agents allocating at once.
    pub async fn resolve(&self, labels: &IdentityLabels) -> Result<u32, IdentityError> {
        let digest = fnv1a128_hex(&canonical(labels));
        for _ in 0..MAX_ATTEMPTS {
            // The first slot that is free or holds these labels.
            let mut free = None;
            for slot in 0..MAX_SLOTS {
                let key = index_key(&digest, slot);
                let Some(kv) = self.store.get(&key).await? else {
                    free = Some(key);
                    break;
                };
                let id = parse_id(&key, &kv.value)?;
                match self.store.get(&identity_key(id)).await? {
                    Some(ident) => {
                        let stored = decode(&ident.key, &ident.value)?;
                        if stored.labels != *labels {
                            continue; // a collision: the next slot
                        }
                        if stored.unused_since.is_none() {
                            return Ok(id);
                        }
                        // Marked by the GC: unmark it before a record names it.
                        let txn = Txn::new()
                            .when([Compare::mod_revision(&ident.key, ident.mod_revision)])
                            .and_then([TxnOp::Put {
                                key: ident.key.clone(),
                                value: encode(labels, None),
                                lease: None,
                            }]);
                        if self.store.txn(txn).await?.succeeded {
                            return Ok(id);
                        }
                        // Deleted or changed meanwhile: look again.
                        free = None;
                        break;
                    }
                    None => {
                        // An index whose identity is gone (never left so by the GC,
                        // which deletes both at once): restore the identity it names.
                        let txn = Txn::new()
                            .when([
                                Compare::mod_revision(&key, kv.mod_revision),
                                Compare::absent(identity_key(id)),
                            ])
                            .and_then([TxnOp::Put {
                                key: identity_key(id),
                                value: encode(labels, None),
                                lease: None,
                            }]);
                        if self.store.txn(txn).await?.succeeded {
                            return Ok(id);
                        }
                        free = None;
                        break;
                    }
                }
            }
            let Some(slot_key) = free else { continue };
            let counter = self.store.get(&counter_key()).await?;
            let (next, counter_cmp) = match &counter {
                Some(kv) => (
                    parse_id(&kv.key, &kv.value)?,
                    Compare::mod_revision(counter_key(), kv.mod_revision),
                ),
                None => (FIRST_ALLOCATED_IDENTITY, Compare::absent(counter_key())),
            };
            if next >= CIDR_CLASS_FLAG {
                return Err(IdentityError::Exhausted(next));
            }
            let txn = Txn::new()
                .when([counter_cmp, Compare::absent(&slot_key)])
                .and_then([
                    TxnOp::Put {
                        key: counter_key(),
                        value: (next + 1).to_string().into_bytes(),
                        lease: None,
                    },
                    TxnOp::Put {
                        key: identity_key(next),
                        value: encode(labels, None),
                        lease: None,
                    },
                    TxnOp::Put {
                        key: slot_key.clone(),
                        value: next.to_string().into_bytes(),
                        lease: None,
                    },
                ]);
            if self.store.txn(txn).await?.succeeded {
                info!(identity = next, namespace = %labels.namespace, labels = ?labels.labels, "allocated identity");
                return Ok(next);
            }
            // Someone allocated meanwhile (maybe these labels): look again.
        }
        Err(IdentityError::Contention(format!(
            "{}/{:?}",
            labels.namespace, labels.labels
        )))
    }

    /// Every identity in the store.
    pub async fn list(&self) -> Result<BTreeMap<u32, IdentityLabels>, IdentityError> {
        let resp = self.store.range(&identities_prefix()).await?;
        let mut out = BTreeMap::new();
        for kv in resp.kvs {
            if let Some(id) = id_of_key(&kv.key) {
                out.insert(id, decode_labels(&kv.key, &kv.value)?);
            }
        }
        Ok(out)
    }

    /// One GC pass at `now` (Unix seconds): marks the identities no record names,
    /// unmarks those named again, and deletes those marked at least a grace ago and
    /// still unnamed. `referenced` reads the ids the endpoint records of every node
    /// name; it is called after the identities are read. Returns the ids deleted.
    pub async fn collect<F, Fut>(&self, referenced: F, now: u64) -> Result<Vec<u32>, IdentityError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<BTreeSet<u32>, IdentityError>>,
    {
        let idents = self.store.range(&identities_prefix()).await?;
        let referenced = referenced().await?;
        let mut deleted = Vec::new();
        for kv in &idents.kvs {
            let Some(id) = id_of_key(&kv.key) else {
                continue;
            };
            let stored = decode(&kv.key, &kv.value)?;
            let cas = Compare::mod_revision(&kv.key, kv.mod_revision);
            let put = |unused_since| TxnOp::Put {
                key: kv.key.clone(),
                value: encode(&stored.labels, unused_since),
                lease: None,
            };
            let txn = match (referenced.contains(&id), stored.unused_since) {
                (true, None) => continue,
                (true, Some(_)) => Txn::new().when([cas]).and_then([put(None)]),
                (false, None) => Txn::new().when([cas]).and_then([put(Some(now))]),
                (false, Some(since)) if now.saturating_sub(since) < self.grace.as_secs() => {
                    continue;
                }
                (false, Some(_)) => {
                    let index = index_key(&fnv1a128_hex(&canonical(&stored.labels)), 0);
                    // Its index goes with it, unless the index names another identity.
                    let both = Txn::new()
                        .when([
                            cas.clone(),
                            Compare::value(&index, id.to_string().into_bytes()),
                        ])
                        .and_then([
                            TxnOp::Delete {
                                key: kv.key.clone(),
                            },
                            TxnOp::Delete { key: index },
                        ]);
                    let mut done = self.store.txn(both).await?.succeeded;
                    if !done {
                        let alone = Txn::new().when([cas]).and_then([TxnOp::Delete {
                            key: kv.key.clone(),
                        }]);
                        done = self.store.txn(alone).await?.succeeded;
                    }
                    if done {
                        info!(identity = id, "deleted an unused identity");
                        deleted.push(id);
                    } else {
                        debug!(identity = id, "identity changed while collecting; kept");
                    }
                    continue;
                }
            };
            // A lost race only means the next pass decides again.
            self.store.txn(txn).await?;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;

    pub(crate) fn il(ns: &str, pairs: &[(&str, &str)]) -> IdentityLabels {
        IdentityLabels {
            namespace: ns.into(),
            labels: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
        EmbeddedStore::open(&dir.path().join("s.redb"))
            .await
            .unwrap()
    }

    #[test]
    fn fnv1a128_matches_the_reference_vectors() {
        // From the FNV reference (fnv-test: FNV-1a 128).
        assert_eq!(fnv1a128_hex(b""), "6c62272e07bb014262b821756295c58d");
        assert_eq!(fnv1a128_hex(b"a"), "d228cb696f1a8caf78912b704e4a8964");
    }

    #[tokio::test]
    async fn allocation_is_idempotent_and_distinct_per_label_set() {
        let dir = tempfile::tempdir().unwrap();
        let ids = Identities::new(store(&dir).await, DEFAULT_IDENTITY_GC_GRACE);
        let web = ids.resolve(&il("a", &[("app", "web")])).await.unwrap();
        assert_eq!(web, FIRST_ALLOCATED_IDENTITY);
        assert_eq!(ids.resolve(&il("a", &[("app", "web")])).await.unwrap(), web);
        let other_ns = ids.resolve(&il("b", &[("app", "web")])).await.unwrap();
        let db = ids.resolve(&il("a", &[("app", "db")])).await.unwrap();
        assert_eq!(
            [web, other_ns, db]
                .into_iter()
                .collect::<BTreeSet<_>>()
                .len(),
            3
        );
        let listed = ids.list().await.unwrap();
        assert_eq!(listed[&db], il("a", &[("app", "db")]));
    }

    /// Two agents (two allocators, one store) race for the same label sets: each set
    /// ends with exactly one identity, and both agents got it.
    pub(crate) async fn racing_allocators_agree(store: Arc<dyn Store>) {
        let a = Identities::new(store.clone(), DEFAULT_IDENTITY_GC_GRACE);
        let b = Identities::new(store.clone(), DEFAULT_IDENTITY_GC_GRACE);
        let sets: Vec<IdentityLabels> = (0..12)
            .map(|i| il("race", &[("app", &format!("a{}", i % 4))]))
            .collect();
        let run = |ids: Identities, sets: Vec<IdentityLabels>| {
            tokio::spawn(async move {
                let mut out = Vec::new();
                for s in &sets {
                    out.push((s.clone(), ids.resolve(s).await.unwrap()));
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
        assert_eq!(by_set.len(), 4);
        for (s, ids) in &by_set {
            assert_eq!(ids.len(), 1, "{s:?} got {ids:?}");
        }
        let stored: BTreeSet<IdentityLabels> = a
            .list()
            .await
            .unwrap()
            .into_values()
            .filter(|l| l.namespace == "race")
            .collect();
        assert_eq!(stored.len(), 4, "one stored identity per label set");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_allocators_racing_on_one_store_agree() {
        let dir = tempfile::tempdir().unwrap();
        racing_allocators_agree(store(&dir).await).await;
    }

    /// Unused identities are marked, then deleted a grace later; referenced ones
    /// stay; resolving a marked one (an ADD naming it) unmarks it, so it is not
    /// deleted under the record being written; numbers are never reused.
    pub(crate) async fn gc_deletes_only_identities_unused_for_the_grace(store: Arc<dyn Store>) {
        let grace = Duration::from_secs(60);
        let ids = Identities::new(store.clone(), grace);
        let used = ids.resolve(&il("gc", &[("app", "used")])).await.unwrap();
        let idle_labels = il("gc", &[("app", "idle")]);
        let idle = ids.resolve(&idle_labels).await.unwrap();
        let revived_labels = il("gc", &[("app", "revived")]);
        let revived = ids.resolve(&revived_labels).await.unwrap();
        let referenced = move || async move { Ok([used].into_iter().collect::<BTreeSet<u32>>()) };
        let t0 = 1_000_000;
        let g = grace.as_secs();
        assert!(
            ids.collect(referenced, t0).await.unwrap().is_empty(),
            "first marked"
        );
        assert!(
            ids.collect(referenced, t0 + g - 1)
                .await
                .unwrap()
                .is_empty(),
            "within the grace"
        );
        // An ADD resolves `revived` (and is about to write its record).
        assert_eq!(ids.resolve(&revived_labels).await.unwrap(), revived);
        let deleted = ids.collect(referenced, t0 + g).await.unwrap();
        assert_eq!(deleted, vec![idle], "only the one marked a grace ago");
        let left = ids.list().await.unwrap();
        assert!(left.contains_key(&used) && left.contains_key(&revived));
        assert!(!left.contains_key(&idle));
        // Allocating the collected labels again gives a new number, never the old one.
        let again = ids.resolve(&idle_labels).await.unwrap();
        assert!(again > revived, "{again} reuses a number");
        // `revived` was marked again at t0 + g (its record never came): it goes a grace
        // after that; the new one is only marked.
        assert!(
            ids.collect(referenced, t0 + 2 * g - 1)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            ids.collect(referenced, t0 + 2 * g).await.unwrap(),
            vec![revived]
        );
        assert_ne!(ids.resolve(&revived_labels).await.unwrap(), revived);
    }

    #[tokio::test]
    async fn gc_on_the_embedded_store() {
        let dir = tempfile::tempdir().unwrap();
        gc_deletes_only_identities_unused_for_the_grace(store(&dir).await).await;
    }
}
