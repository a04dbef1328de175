//! Release against the store: free a handle's ordinals in their blocks and delete the
//! handle in one transaction, whatever number of blocks it spans, together with the
//! caller's own operations. Concurrent releases are combined like allocations (see
//! "Combining" in [`super`]): the releases of a batch that stay in this node's blocks
//! share one transaction.
//!
//! Blocks keep their affinity when they empty: a node that restarts or rejoins finds
//! its blocks (and its routes) where it left them. Reclaiming empty blocks of departed
//! nodes is cluster-wide work with a grace period, not the release path's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use tracing::debug;

use super::block::Block;
use super::combine::{MAX_TXN_OPS, Written, check_extra};
use super::error::batch_answers;
use super::handle::{Handle, validate_handle};
use super::{
    Cached, Committed, Ipam, IpamError, MAX_ATTEMPTS, NodeBlocks, backoff, block_compare,
    cached_of, decode_handle, encode, keys, pause_before, put,
};
use crate::store::{Compare, KeyValue, TxnOp};

/// What a guarded release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ReleaseOutcome {
    /// Freed; the addresses the handle held.
    Released(Vec<IpAddr>),
    /// Nothing to release.
    Missing,
    /// The guard refused: the record is no longer the one the caller meant.
    Refused(String),
}

/// A guard on the handle about to be released, seeing its key and value.
pub(super) type Verify<'a> = &'a (dyn Fn(&KeyValue, &Handle) -> Result<(), String> + Sync);

/// One release asked for.
pub(super) struct ReleaseItem<'a> {
    handle: String,
    /// Committed with the release, also when the handle is gone.
    extra: Vec<TxnOp>,
    verify: Option<Verify<'a>>,
}

/// One release of a batch: the handle as last read and, once decided, the answer.
struct Slot<'a> {
    item: ReleaseItem<'a>,
    key: String,
    kv: Option<KeyValue>,
    outcome: Option<Result<ReleaseOutcome, IpamError>>,
}

/// One release planned into a transaction: the addresses it frees (`None`: the handle
/// is absent, and only the extra operations are written).
struct Planned {
    slot: usize,
    ips: Option<Vec<IpAddr>>,
}

#[derive(Default)]
struct RoundPlan {
    planned: Vec<Planned>,
    deferred: Vec<usize>,
    decided: Vec<(usize, Result<ReleaseOutcome, IpamError>)>,
    /// Every block a planned handle names, as read: all are compared, changed or not.
    pinned: BTreeMap<IpNet, Option<Cached>>,
    /// The pinned blocks the releases change, as they will be written.
    changed: BTreeMap<IpNet, Block>,
}

impl Ipam {
    /// Releases every address of `handle` and deletes it. Idempotent: a handle that
    /// does not exist releases nothing and is not an error. Returns the addresses the
    /// handle held; an address its block no longer marks as the handle's is left as
    /// the block says.
    pub async fn release(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        self.release_with(handle, Vec::new()).await
    }

    /// [`Ipam::release`], committing `extra` (the caller's own record, say) in the same
    /// transaction. When the handle does not exist, `extra` is still committed, in a
    /// transaction of its own that checks the handle is absent, and nothing is
    /// returned: DEL must remove its record also when the reservation is already gone.
    /// `extra` follows the rules of [`super::ExtraOps`].
    ///
    /// Concurrent calls are combined into shared transactions. A dropped call whose
    /// batch already took it may still complete.
    pub async fn release_with(
        &self,
        handle: &str,
        extra: Vec<TxnOp>,
    ) -> Result<Vec<IpAddr>, IpamError> {
        validate_handle(handle)?;
        check_extra(&extra).map_err(|why| {
            IpamError::InvalidRequest(format!(
                "extra operations of the release of {handle:?}: {why}"
            ))
        })?;
        let item = ReleaseItem {
            handle: handle.to_string(),
            extra,
            verify: None,
        };
        let outcome = self
            .combined(&self.releases, item, |ipam, mut cache, items| async move {
                let answers = ipam.release_batch(&mut cache, items).await;
                (answers, cache)
            })
            .await?;
        match outcome {
            ReleaseOutcome::Released(ips) => Ok(ips),
            ReleaseOutcome::Missing => Ok(Vec::new()),
            ReleaseOutcome::Refused(reason) => Err(IpamError::InvalidRequest(reason)),
        }
    }

    /// Releases `handle` if `verify` accepts the record as read; the transaction pins
    /// that very record (its `mod_revision`), so what was verified is what is freed.
    /// Not combined: GC calls it one handle at a time with a borrowed guard.
    pub(super) async fn release_if(
        &self,
        handle: &str,
        verify: Verify<'_>,
    ) -> Result<ReleaseOutcome, IpamError> {
        let mut cache = self.cache.lock().await;
        let item = ReleaseItem {
            handle: handle.to_string(),
            extra: Vec::new(),
            verify: Some(verify),
        };
        self.release_batch(&mut cache, vec![item])
            .await
            .pop()
            .unwrap_or_else(|| Err(IpamError::Interrupted("release left undecided".into())))
    }

    /// Runs one batch of releases: answers every item, in order.
    async fn release_batch(
        &self,
        cache: &mut NodeBlocks,
        items: Vec<ReleaseItem<'_>>,
    ) -> Vec<Result<ReleaseOutcome, IpamError>> {
        let mut slots: Vec<Slot<'_>> = items
            .into_iter()
            .map(|item| Slot {
                key: keys::handle(&item.handle),
                item,
                kv: None,
                outcome: None,
            })
            .collect();
        let ended = self.release_rounds(cache, &mut slots).await.err();
        batch_answers(slots.into_iter().map(|s| s.outcome), ended)
    }

    async fn release_rounds(
        &self,
        cache: &mut NodeBlocks,
        slots: &mut [Slot<'_>],
    ) -> Result<(), IpamError> {
        let reads = futures::future::join_all(slots.iter().map(|s| self.store.get(&s.key))).await;
        for (s, kv) in slots.iter_mut().zip(reads) {
            s.kv = kv?;
        }
        // Releases within this node's blocks share a transaction. One that frees an
        // address in another node's block goes alone: that node allocates there all the
        // time, and each of its commits would fail the shared transaction.
        let mut local = Vec::new();
        let mut rounds = Vec::new();
        for (i, s) in slots.iter().enumerate() {
            let foreign =
                s.kv.as_ref()
                    .and_then(|kv| decode_handle(kv).ok())
                    .is_some_and(|h| {
                        h.ips.iter().any(|ip| {
                            self.block_cidr_of(*ip)
                                .is_none_or(|c| !cache.affine.contains_key(&c))
                        })
                    });
            if foreign {
                rounds.push(vec![i]);
            } else {
                local.push(i);
            }
        }
        rounds.insert(0, local);
        for round in rounds {
            let mut todo = round;
            while !todo.is_empty() {
                todo = self.release_round(cache, slots, todo).await?;
            }
        }
        Ok(())
    }

    /// Plans `todo` into one transaction and commits it, retrying conflicts. Decides
    /// every item of `todo` but those it returns, which wait for the next transaction;
    /// it returns some only after committing others.
    async fn release_round(
        &self,
        cache: &mut NodeBlocks,
        slots: &mut [Slot<'_>],
        todo: Vec<usize>,
    ) -> Result<Vec<usize>, IpamError> {
        // Blocks outside the cache read during this round, kept across retries.
        let mut seen: BTreeMap<IpNet, Option<Cached>> = BTreeMap::new();
        let mut pending = todo;
        let mut conflicts = 0u32;
        loop {
            let plan = self.plan_release(cache, &mut seen, slots, &pending).await?;
            for (i, outcome) in plan.decided {
                slots[i].outcome = Some(outcome);
            }
            if plan.planned.is_empty() {
                return Ok(plan.deferred);
            }

            let mut compares = Vec::with_capacity(plan.planned.len() + plan.pinned.len());
            let mut ops = Vec::new();
            let mut reread = Vec::with_capacity(compares.capacity());
            for p in &plan.planned {
                let s = &slots[p.slot];
                compares.push(match &s.kv {
                    Some(kv) => Compare::mod_revision(s.key.clone(), kv.mod_revision),
                    None => Compare::absent(s.key.clone()),
                });
                reread.push(s.key.clone());
            }
            for (cidr, state) in &plan.pinned {
                compares.push(block_compare(cidr, state.as_ref().map(|c| c.rev)));
                reread.push(keys::block(cidr));
            }
            for (cidr, block) in &plan.changed {
                let key = keys::block(cidr);
                ops.push(put(key.clone(), encode(&key, block)?));
            }
            for p in &plan.planned {
                let s = &slots[p.slot];
                if p.ips.is_some() {
                    ops.push(TxnOp::Delete { key: s.key.clone() });
                }
                ops.extend(s.item.extra.iter().cloned());
            }

            match self.commit(compares, ops, reread).await? {
                Committed::Yes(rev) => {
                    for (cidr, block) in plan.changed {
                        cache.learn(&self.node, cidr, Some(Cached { block, rev }));
                    }
                    for p in plan.planned {
                        let s = &mut slots[p.slot];
                        s.outcome = Some(Ok(match p.ips {
                            Some(ips) => {
                                debug!(handle = %s.item.handle, ips = ?ips, "IPAM: released");
                                ReleaseOutcome::Released(ips)
                            }
                            None => ReleaseOutcome::Missing,
                        }));
                    }
                    return Ok(plan.deferred);
                }
                Committed::No(kvs) => {
                    let mut kvs = kvs.into_iter();
                    for p in &plan.planned {
                        slots[p.slot].kv = kvs.next().flatten();
                    }
                    for (cidr, kv) in plan.pinned.keys().zip(kvs) {
                        let state = cached_of(kv)?;
                        cache.learn(&self.node, *cidr, state.clone());
                        seen.insert(*cidr, state);
                    }
                    conflicts += 1;
                    debug!(
                        attempt = conflicts,
                        requests = pending.len(),
                        "IPAM: release conflict, retrying"
                    );
                    if conflicts >= MAX_ATTEMPTS {
                        // What lost the races reports it; what never got a turn waits
                        // for the next transaction.
                        for p in &plan.planned {
                            let s = &mut slots[p.slot];
                            s.outcome = Some(Err(IpamError::Conflict {
                                op: format!("release {}", s.item.handle),
                                attempts: MAX_ATTEMPTS,
                            }));
                        }
                        return Ok(plan.deferred);
                    }
                    if pause_before(conflicts) {
                        backoff(conflicts).await;
                        for p in &plan.planned {
                            let s = &mut slots[p.slot];
                            s.kv = self.store.get(&s.key).await?;
                        }
                        for cidr in plan.pinned.keys() {
                            let state = self.read_block(cidr).await?;
                            cache.learn(&self.node, *cidr, state.clone());
                            seen.insert(*cidr, state);
                        }
                    }
                    pending.retain(|&i| slots[i].outcome.is_none());
                }
            }
        }
    }

    /// Plans the items `pending`, in order, into one transaction: each handle as last
    /// read, every block it names pinned at the state it is planned on.
    async fn plan_release(
        &self,
        cache: &NodeBlocks,
        seen: &mut BTreeMap<IpNet, Option<Cached>>,
        slots: &[Slot<'_>],
        pending: &[usize],
    ) -> Result<RoundPlan, IpamError> {
        let mut plan = RoundPlan::default();
        let mut handles: BTreeSet<&str> = BTreeSet::new();
        let mut written = Written::default();
        let mut ops = 0usize;
        let mut txn_full = false;
        'items: for &i in pending {
            let s = &slots[i];
            if txn_full || handles.contains(s.item.handle.as_str()) {
                plan.deferred.push(i);
                continue;
            }
            let record = match &s.kv {
                // Nothing to free and nothing to write: done, without a transaction.
                None if s.item.extra.is_empty() => {
                    plan.decided.push((i, Ok(ReleaseOutcome::Missing)));
                    continue;
                }
                None => None,
                Some(kv) => {
                    let record = match decode_handle(kv) {
                        Ok(r) => r,
                        Err(e) => {
                            plan.decided.push((i, Err(e)));
                            continue;
                        }
                    };
                    if let Some(verify) = s.item.verify
                        && let Err(reason) = verify(kv, &record)
                    {
                        plan.decided.push((i, Ok(ReleaseOutcome::Refused(reason))));
                        continue;
                    }
                    Some(record)
                }
            };
            if written.clashes(&s.item.extra) {
                plan.deferred.push(i);
                continue;
            }

            // Every block the handle names is pinned, changed or not: a cached copy that
            // missed one of the handle's allocations would otherwise let the handle go
            // and leave that allocation orphaned.
            let cidrs: BTreeSet<IpNet> = record
                .iter()
                .flat_map(|r| r.ips.iter())
                .filter_map(|ip| self.block_cidr_of(*ip))
                .collect();
            let mut states: Vec<(IpNet, Option<Cached>)> = Vec::new();
            for &cidr in cidrs.iter().filter(|c| !plan.pinned.contains_key(c)) {
                let state = match (cache.affine.get(&cidr), seen.get(&cidr)) {
                    (Some(c), _) => Some(c.clone()),
                    (None, Some(s)) => s.clone(),
                    (None, None) => match self.read_block(&cidr).await {
                        Ok(s) => {
                            seen.insert(cidr, s.clone());
                            s
                        }
                        Err(e @ IpamError::Store(_)) => return Err(e),
                        Err(e) => {
                            plan.decided.push((i, Err(e)));
                            continue 'items;
                        }
                    },
                };
                states.push((cidr, state));
            }
            let cost = usize::from(record.is_some()) + s.item.extra.len() + states.len();
            if !plan.planned.is_empty() && ops + cost > MAX_TXN_OPS {
                txn_full = true;
                plan.deferred.push(i);
                continue;
            }
            ops += cost;
            written.add(&s.item.extra);
            handles.insert(&s.item.handle);
            plan.pinned.extend(states);
            if let Some(r) = &record {
                for cidr in &cidrs {
                    // Several releases of the batch may free ordinals of one block.
                    if let Some(block) = plan.changed.get_mut(cidr) {
                        block.unassign(&r.ips, &s.item.handle);
                        continue;
                    }
                    let Some(Some(read)) = plan.pinned.get(cidr) else {
                        continue;
                    };
                    let mut block = read.block.clone();
                    if block.unassign(&r.ips, &s.item.handle) > 0 {
                        plan.changed.insert(*cidr, block);
                    }
                }
            }
            plan.planned.push(Planned {
                slot: i,
                ips: record.map(|r| r.ips),
            });
        }
        Ok(plan)
    }

    /// Frees `ip` in block `cidr` if the block still gives it to `handle` and no handle
    /// of that name exists: an orphan allocation, and nothing else.
    pub(super) async fn release_orphan(
        &self,
        cidr: IpNet,
        ip: IpAddr,
        handle: &str,
    ) -> Result<ReleaseOutcome, IpamError> {
        let handle_key = keys::handle(handle);
        let block_key = keys::block(&cidr);
        let mut cache = self.cache.lock().await;
        let mut state = self.read_block(&cidr).await?;
        for attempt in 1..=MAX_ATTEMPTS {
            let Some(mut c) = state.take() else {
                return Ok(ReleaseOutcome::Refused(format!("block {cidr} is gone")));
            };
            match c.block.holder(ip) {
                None => return Ok(ReleaseOutcome::Refused(format!("{ip} is free now"))),
                Some(h) if h != handle => {
                    return Ok(ReleaseOutcome::Refused(format!(
                        "{ip} is held by handle {h} now"
                    )));
                }
                Some(_) => {}
            }
            c.block.unassign(&[ip], handle);
            let compares = vec![
                block_compare(&cidr, Some(c.rev)),
                Compare::absent(handle_key.clone()),
            ];
            let ops = vec![put(block_key.clone(), encode(&block_key, &c.block)?)];
            match self
                .commit(compares, ops, vec![block_key.clone(), handle_key.clone()])
                .await?
            {
                Committed::Yes(rev) => {
                    cache.learn(
                        &self.node,
                        cidr,
                        Some(Cached {
                            block: c.block,
                            rev,
                        }),
                    );
                    return Ok(ReleaseOutcome::Released(vec![ip]));
                }
                Committed::No(kvs) => {
                    let mut kvs = kvs.into_iter();
                    let block_kv = kvs.next().flatten();
                    if kvs.next().flatten().is_some() {
                        return Ok(ReleaseOutcome::Refused(format!(
                            "handle {handle} exists now"
                        )));
                    }
                    state = cached_of(block_kv)?;
                    if pause_before(attempt) {
                        backoff(attempt).await;
                        state = self.read_block(&cidr).await?;
                    }
                    cache.learn(&self.node, cidr, state.clone());
                }
            }
        }
        Err(IpamError::Conflict {
            op: format!("release orphan {ip}"),
            attempts: MAX_ATTEMPTS,
        })
    }
}
