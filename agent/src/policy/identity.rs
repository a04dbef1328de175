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
//! end with one identity. Whoever writes an endpoint record that names an identity
//! puts [`Identities::touch_ops`] in the same transaction: the identity and its index
//! are written again with the record. That is what makes the GC safe against a
//! concurrent ADD: the GC deletes an identity only by CAS on the `mod_revision` it
//! saw unreferenced for a whole grace period; a record written meanwhile moved that
//! revision (the GC's delete fails), and a record written after the delete brings
//! the identity back with the same number (the counter never hands it out again).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strait_policy::tables::{CIDR_CLASS_FLAG, FIRST_ALLOCATED_IDENTITY};
use strait_policy::view::IdentityLabels;
use tracing::{debug, info};

use crate::store::{Compare, PREFIX, Revision, Store, StoreError, Txn, TxnOp};

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

pub fn decode_labels(key: &str, value: &[u8]) -> Result<IdentityLabels, IdentityError> {
    serde_json::from_slice(value).map_err(|e| IdentityError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Allocation and GC of identities on one store. Cheap to clone.
#[derive(Clone)]
pub struct Identities {
    store: Arc<dyn Store>,
    grace: Duration,
    /// Per unreferenced identity: the `mod_revision` seen and since when it has been
    /// seen unreferenced at that revision (this agent's clock).
    unused: Arc<Mutex<BTreeMap<u32, (Revision, Instant)>>>,
}

impl Identities {
    pub fn new(store: Arc<dyn Store>, grace: Duration) -> Self {
        Self {
            store,
            grace,
            unused: Arc::default(),
        }
    }

    /// The identity of `labels`, allocated if none exists yet. Idempotent; safe with
    /// any number of agents allocating at once.
    pub async fn resolve(&self, labels: &IdentityLabels) -> Result<u32, IdentityError> {
        let value = canonical(labels);
        let digest = fnv1a128_hex(&value);
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
                    Some(ident) if decode_labels(&ident.key, &ident.value)? == *labels => {
                        return Ok(id);
                    }
                    Some(_) => continue, // a collision: the next slot
                    None => {
                        // An index whose identity is gone (written back by a record's
                        // touch after the GC deleted the identity, then the GC again):
                        // restore the identity it names.
                        let txn = Txn::new()
                            .when([Compare::mod_revision(&key, kv.mod_revision)])
                            .and_then(self.touch_ops(id, labels));
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
                        value: value.clone(),
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

    /// The writes that re-assert identity `id` of `labels`, to ride in the
    /// transaction that writes a record naming it (see the module doc). The index
    /// goes to its first slot; a collided label set (never seen) keeps its slot by
    /// allocation and is not re-asserted.
    pub fn touch_ops(&self, id: u32, labels: &IdentityLabels) -> Vec<TxnOp> {
        let value = canonical(labels);
        let digest = fnv1a128_hex(&value);
        vec![
            TxnOp::Put {
                key: identity_key(id),
                value,
                lease: None,
            },
            TxnOp::Put {
                key: index_key(&digest, 0),
                value: id.to_string().into_bytes(),
                lease: None,
            },
        ]
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

    /// One GC pass at `now`: deletes the identities no record references that were
    /// seen unreferenced, unchanged, for the whole grace; `referenced` are the ids the
    /// endpoint records of every node name, read *after* the identities (a record
    /// written in between carries its identity's touch, which fails the delete).
    /// Returns the ids deleted.
    pub async fn collect<F, Fut>(
        &self,
        referenced: F,
        now: Instant,
    ) -> Result<Vec<u32>, IdentityError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<BTreeSet<u32>, IdentityError>>,
    {
        let idents = self.store.range(&identities_prefix()).await?;
        let referenced = referenced().await?;
        let mut due = Vec::new();
        {
            let mut unused = self.unused.lock().unwrap_or_else(|p| p.into_inner());
            let mut seen = BTreeMap::new();
            for kv in &idents.kvs {
                let Some(id) = id_of_key(&kv.key) else {
                    continue;
                };
                if referenced.contains(&id) {
                    continue;
                }
                let since = match unused.get(&id) {
                    Some((rev, since)) if *rev == kv.mod_revision => *since,
                    _ => now,
                };
                seen.insert(id, (kv.mod_revision, since));
                if now.saturating_duration_since(since) >= self.grace {
                    due.push((id, kv.mod_revision, kv.value.clone()));
                }
            }
            *unused = seen;
        }
        let mut deleted = Vec::new();
        for (id, rev, value) in due {
            let key = identity_key(id);
            let labels = decode_labels(&key, &value)?;
            let index = index_key(&fnv1a128_hex(&canonical(&labels)), 0);
            // Its index goes with it, unless the index names another identity now.
            let both = Txn::new()
                .when([
                    Compare::mod_revision(&key, rev),
                    Compare::value(&index, id.to_string().into_bytes()),
                ])
                .and_then([
                    TxnOp::Delete { key: key.clone() },
                    TxnOp::Delete { key: index },
                ]);
            let mut done = self.store.txn(both).await?.succeeded;
            if !done {
                let alone = Txn::new()
                    .when([Compare::mod_revision(&key, rev)])
                    .and_then([TxnOp::Delete { key: key.clone() }]);
                done = self.store.txn(alone).await?.succeeded;
            }
            if done {
                info!(identity = id, "deleted unused identity");
                deleted.push(id);
            } else {
                debug!(identity = id, "identity changed while collecting; kept");
            }
            self.unused
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
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

    /// Unused identities go after the grace, referenced ones stay, and a touch (a
    /// record written naming the identity) restarts the clock.
    pub(crate) async fn gc_deletes_only_identities_unused_for_the_grace(store: Arc<dyn Store>) {
        let grace = Duration::from_secs(60);
        let ids = Identities::new(store.clone(), grace);
        let used_labels = il("gc", &[("app", "used")]);
        let used = ids.resolve(&used_labels).await.unwrap();
        let idle_labels = il("gc", &[("app", "idle")]);
        let idle = ids.resolve(&idle_labels).await.unwrap();
        let touched_labels = il("gc", &[("app", "touched")]);
        let touched = ids.resolve(&touched_labels).await.unwrap();
        let referenced = move || async move { Ok([used].into_iter().collect::<BTreeSet<u32>>()) };
        let t0 = Instant::now();
        assert!(ids.collect(referenced, t0).await.unwrap().is_empty());
        // An ADD writes a record naming `touched`, with its touch.
        store
            .txn(Txn::new().and_then(ids.touch_ops(touched, &touched_labels)))
            .await
            .unwrap();
        let deleted = ids.collect(referenced, t0 + grace).await.unwrap();
        assert_eq!(deleted, vec![idle], "only the one idle for the grace");
        let left = ids.list().await.unwrap();
        assert!(left.contains_key(&used) && left.contains_key(&touched));
        assert!(!left.contains_key(&idle));
        // Allocating the collected labels again gives a new number, never the old one.
        let again = ids.resolve(&idle_labels).await.unwrap();
        assert!(again > touched, "{again} reuses a number");
        // The touched one goes a grace after its touch.
        let deleted = ids.collect(referenced, t0 + grace * 2).await.unwrap();
        assert_eq!(deleted, vec![touched]);
        // A record written after the delete brings it back with the same number.
        store
            .txn(Txn::new().and_then(ids.touch_ops(touched, &touched_labels)))
            .await
            .unwrap();
        assert_eq!(ids.resolve(&touched_labels).await.unwrap(), touched);
    }

    #[tokio::test]
    async fn gc_on_the_embedded_store() {
        let dir = tempfile::tempdir().unwrap();
        gc_deletes_only_identities_unused_for_the_grace(store(&dir).await).await;
    }
}
