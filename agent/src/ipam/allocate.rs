//! Allocation against the store: a batch of queued requests is planned with
//! [`super::allocator`] on cached or freshly read blocks, and every touched block, every
//! new handle and every request's extra operations are written in one transaction (see
//! "Combining" in [`super`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use tracing::{debug, info};

use super::Family;
use super::allocator::{self, Picked, Scope, Shortfall, Source};
use super::block::Block;
use super::combine::{MAX_TXN_OPS, Written, check_extra};
use super::error::batch_answers;
use super::handle::{AllocRequest, Allocation, Handle, validate_handle};
use super::{
    AllBlocks, Cached, Committed, Ipam, IpamError, MAX_ATTEMPTS, NodeBlocks, backoff,
    block_compare, cached_of, decode_handle, encode, keys, pause_before, put, unix_now,
};
use crate::store::{Compare, Revision, TxnOp};

/// One request of a batch and, once decided, its answer.
struct Slot {
    req: AllocRequest,
    handle_key: String,
    outcome: Option<Result<Allocation, IpamError>>,
}

/// One request planned into a transaction.
struct Planned {
    slot: usize,
    picked: Picked,
    extra: Vec<TxnOp>,
}

/// What one transaction of a batch writes, and what became of the requests it left out.
#[derive(Default)]
struct RoundPlan {
    planned: Vec<Planned>,
    /// Requests for the batch's next transaction.
    deferred: Vec<usize>,
    /// Requests that failed on their own.
    failed: Vec<(usize, IpamError)>,
    /// The blocks the planned requests changed, as they will be written.
    blocks: BTreeMap<IpNet, Block>,
    /// The revision each of `blocks` was read at (`None`: absent, created here).
    revs: BTreeMap<IpNet, Option<Revision>>,
}

/// Records the failures of a plan as the answers of their requests.
fn settle(slots: &mut [Slot], failed: Vec<(usize, IpamError)>) {
    for (i, e) in failed {
        slots[i].outcome = Some(Err(e));
    }
}

/// Blocks read from the store during one transaction's attempts: their state as of the
/// last read or conflict, and those that did not parse (with the error).
#[derive(Default)]
struct Fresh {
    seen: BTreeMap<IpNet, Option<Cached>>,
    unreadable: BTreeMap<IpNet, IpamError>,
}

impl Ipam {
    /// Allocates addresses for `req.handle`: `req.static_ips`, and one address from the
    /// enabled pools for each family they leave out (of `req.families`, or of every
    /// configured one), inside `req.within` if it is given. The blocks, the handle and
    /// `req.extra`'s operations are written in one transaction; a handle that already
    /// exists is [`IpamError::DuplicateHandle`].
    ///
    /// Concurrent calls are combined into shared transactions; each call's answer is
    /// what it would have been alone (see [`super`]). If this future is dropped after
    /// its batch took the request, the allocation may still be made (with its extra
    /// operations): whoever gave up on the answer releases the handle, as a runtime
    /// does with DEL after an ADD that did not answer.
    pub async fn allocate(&self, mut req: AllocRequest) -> Result<Allocation, IpamError> {
        validate_handle(&req.handle)?;
        if req.within.is_empty() && !self.node_ranges.is_empty() {
            req.within = self.node_ranges.clone();
            if req.families.is_empty() {
                req.families = self.node_ranges.iter().map(Family::of_net).collect();
            }
        }
        // Pool addresses come IPv4 first, whatever order the families were asked in.
        req.families.sort();
        req.families.dedup();
        self.check_static(&req.static_ips)?;
        self.combined(&self.allocations, req, |ipam, mut cache, reqs| async move {
            let answers = ipam.allocate_batch(&mut cache, reqs).await;
            (answers, cache)
        })
        .await
    }

    /// Runs one batch: answers every request, in order.
    async fn allocate_batch(
        &self,
        cache: &mut NodeBlocks,
        reqs: Vec<AllocRequest>,
    ) -> Vec<Result<Allocation, IpamError>> {
        let mut slots: Vec<Slot> = reqs
            .into_iter()
            .map(|req| Slot {
                handle_key: keys::handle(&req.handle),
                req,
                outcome: None,
            })
            .collect();
        let ended = self.allocate_rounds(cache, &mut slots).await.err();
        batch_answers(slots.into_iter().map(|s| s.outcome), ended)
    }

    /// Commits the batch in as many transactions as it needs (usually one).
    async fn allocate_rounds(
        &self,
        cache: &mut NodeBlocks,
        slots: &mut [Slot],
    ) -> Result<(), IpamError> {
        if !cache.loaded {
            // The cache must hold every affine block before planning: they are the
            // first choice, and they count towards max_blocks_per_node.
            let all = self.read_blocks().await?;
            cache.reload(&self.node, &all);
        }
        let mut todo: Vec<usize> = (0..slots.len()).collect();
        while !todo.is_empty() {
            todo = self.allocate_round(cache, slots, todo).await?;
        }
        Ok(())
    }

    /// Plans `todo` into one transaction and commits it, retrying conflicts. Decides
    /// every request of `todo` but those it returns, which wait for the next
    /// transaction; it returns some only after committing others, so rounds progress.
    async fn allocate_round(
        &self,
        cache: &mut NodeBlocks,
        slots: &mut [Slot],
        todo: Vec<usize>,
    ) -> Result<Vec<usize>, IpamError> {
        let mut fresh = Fresh::default();
        // Blocks another writer changed under this round.
        let mut contended: BTreeSet<IpNet> = BTreeSet::new();
        let mut pending = todo;
        let mut conflicts = 0u32;
        loop {
            let plan = self
                .plan_round(cache, &mut fresh, &contended, slots, &pending)
                .await?;
            if plan.planned.is_empty() {
                // Nothing to write (and so nothing deferred): the failures are final.
                settle(slots, plan.failed);
                return Ok(plan.deferred);
            }

            let created = unix_now();
            let mut compares = Vec::with_capacity(plan.planned.len() + plan.blocks.len());
            let mut ops = Vec::new();
            let mut reread = Vec::with_capacity(compares.capacity());
            for p in &plan.planned {
                let key = &slots[p.slot].handle_key;
                compares.push(Compare::absent(key.clone()));
                reread.push(key.clone());
            }
            for (cidr, block) in &plan.blocks {
                let key = keys::block(cidr);
                compares.push(block_compare(cidr, plan.revs.get(cidr).copied().flatten()));
                ops.push(put(key.clone(), encode(&key, block)?));
                reread.push(key);
            }
            for p in &plan.planned {
                let s = &slots[p.slot];
                let record = Handle {
                    handle: s.req.handle.clone(),
                    network: s.req.network.clone(),
                    container_id: s.req.container_id.clone(),
                    ifname: s.req.ifname.clone(),
                    netns: s.req.netns.clone(),
                    node: self.node.clone(),
                    ips: p.picked.ips(),
                    created,
                };
                ops.push(put(s.handle_key.clone(), encode(&s.handle_key, &record)?));
                ops.extend(p.extra.iter().cloned());
            }

            match self.commit(compares, ops, reread).await? {
                Committed::Yes(rev) => {
                    // A failure is final only now: it may have come from an address an
                    // earlier request of the plan took, and that one is now committed.
                    settle(slots, plan.failed);
                    for (cidr, block) in plan.blocks {
                        cache.learn(&self.node, cidr, Some(Cached { block, rev }));
                    }
                    debug!(
                        requests = plan.planned.len(),
                        deferred = plan.deferred.len(),
                        "IPAM: allocation batch committed"
                    );
                    for p in plan.planned {
                        self.log_picks(&p.picked);
                        let s = &mut slots[p.slot];
                        let ips = p.picked.ips();
                        debug!(handle = %s.req.handle, ips = ?ips, "IPAM: allocated");
                        s.outcome = Some(Ok(Allocation {
                            handle: s.req.handle.clone(),
                            ips,
                        }));
                    }
                    return Ok(plan.deferred);
                }
                Committed::No(kvs) => {
                    let mut kvs = kvs.into_iter();
                    let mut duplicates = false;
                    for p in &plan.planned {
                        if let Some(existing) = kvs.next().flatten() {
                            duplicates = true;
                            let s = &mut slots[p.slot];
                            // Only a well-formed handle is a duplicate; garbage is reported.
                            s.outcome = Some(match decode_handle(&existing) {
                                Ok(_) => Err(IpamError::DuplicateHandle(s.req.handle.clone())),
                                Err(e) => Err(e),
                            });
                        }
                    }
                    for (cidr, kv) in plan.blocks.keys().zip(kvs) {
                        let state = cached_of(kv)?;
                        let read_at = plan.revs.get(cidr).copied().flatten();
                        if state.as_ref().map(|c| c.rev) != read_at {
                            contended.insert(*cidr);
                        }
                        cache.learn(&self.node, *cidr, state.clone());
                        fresh.seen.insert(*cidr, state);
                    }
                    pending.retain(|&i| slots[i].outcome.is_none());
                    if duplicates {
                        // Progress: the duplicates are answered; the rest go again at once.
                        continue;
                    }
                    conflicts += 1;
                    debug!(
                        attempt = conflicts,
                        requests = pending.len(),
                        "IPAM: allocation conflict, retrying"
                    );
                    if conflicts >= MAX_ATTEMPTS {
                        // What lost the races reports it; what failed on its own says
                        // why; what never got a turn waits for the next transaction.
                        settle(slots, plan.failed);
                        for p in &plan.planned {
                            let s = &mut slots[p.slot];
                            if s.outcome.is_none() {
                                s.outcome = Some(Err(IpamError::Conflict {
                                    op: format!("allocate {}", s.req.handle),
                                    attempts: MAX_ATTEMPTS,
                                }));
                            }
                        }
                        return Ok(plan.deferred);
                    }
                    if pause_before(conflicts) {
                        backoff(conflicts).await;
                        for cidr in plan.blocks.keys() {
                            let state = self.read_block(cidr).await?;
                            cache.learn(&self.node, *cidr, state.clone());
                            fresh.seen.insert(*cidr, state);
                        }
                    }
                }
            }
        }
    }

    /// Plans the requests `pending`, in order, on one working copy of the blocks, so
    /// their ordinals are distinct. Dynamic requests are planned on the cached affine
    /// blocks; when those are full, the whole round is planned again on a full read of
    /// every block (claiming or borrowing). Static addresses are always planned on fresh
    /// reads of their blocks.
    async fn plan_round(
        &self,
        cache: &mut NodeBlocks,
        fresh: &mut Fresh,
        contended: &BTreeSet<IpNet>,
        slots: &[Slot],
        pending: &[usize],
    ) -> Result<RoundPlan, IpamError> {
        // "Taken" must never be concluded from a stale copy, so the blocks of static
        // addresses are read from the store, once per round (conflicts refresh them).
        for &i in pending {
            for &ip in &slots[i].req.static_ips {
                let Some(cidr) = self.block_cidr_of(ip) else {
                    continue;
                };
                if fresh.seen.contains_key(&cidr) || fresh.unreadable.contains_key(&cidr) {
                    continue;
                }
                match self.read_block(&cidr).await {
                    Ok(state) => {
                        fresh.seen.insert(cidr, state);
                    }
                    Err(e @ IpamError::Store(_)) => return Err(e),
                    // A block that does not parse fails the requests that need it only.
                    Err(e) => {
                        fresh.unreadable.insert(cidr, e);
                    }
                }
            }
        }

        let mut full: Option<AllBlocks> = None;
        loop {
            match self.plan_on(cache, fresh, contended, slots, pending, full.as_ref()) {
                Some(plan) => return Ok(plan),
                None => {
                    let all = self.read_blocks().await?;
                    cache.reload(&self.node, &all);
                    // The full read is the freshest state of every block.
                    for (cidr, state) in fresh.seen.iter_mut() {
                        *state = all.blocks.get(cidr).and_then(|b| {
                            let rev = *all.revs.get(cidr)?;
                            Some(Cached {
                                block: b.clone(),
                                rev,
                            })
                        });
                    }
                    full = Some(all);
                }
            }
        }
    }

    /// One planning pass: on the cached affine blocks (`full` is `None`) or on every
    /// block. `None` when a dynamic request needs the full view this pass lacks.
    fn plan_on(
        &self,
        cache: &NodeBlocks,
        fresh: &Fresh,
        contended: &BTreeSet<IpNet>,
        slots: &[Slot],
        pending: &[usize],
        full: Option<&AllBlocks>,
    ) -> Option<RoundPlan> {
        let mut working: BTreeMap<IpNet, Block>;
        let mut revs: BTreeMap<IpNet, Option<Revision>>;
        match full {
            None => {
                working = cache
                    .affine
                    .iter()
                    .map(|(c, x)| (*c, x.block.clone()))
                    .collect();
                revs = cache
                    .affine
                    .iter()
                    .map(|(c, x)| (*c, Some(x.rev)))
                    .collect();
            }
            Some(all) => {
                working = all.blocks.clone();
                revs = all.revs.iter().map(|(c, r)| (*c, Some(*r))).collect();
            }
        }
        for (cidr, state) in &fresh.seen {
            match state {
                Some(c) => {
                    working.insert(*cidr, c.block.clone());
                    revs.insert(*cidr, Some(c.rev));
                }
                None => {
                    working.remove(cidr);
                    revs.insert(*cidr, None);
                }
            }
        }
        let scope = match full {
            None => Scope::Affine,
            Some(all) => Scope::Full {
                unreadable: &all.unreadable,
            },
        };
        let rules = self.rules(contended);

        let mut plan = RoundPlan::default();
        let mut handles: BTreeSet<&str> = BTreeSet::new();
        let mut written = Written::default();
        let mut touched: BTreeSet<IpNet> = BTreeSet::new();
        let mut ops = 0usize;
        let mut txn_full = false;
        for &i in pending {
            let req = &slots[i].req;
            // A second request for one handle waits for the first to be decided, as it
            // would have alone; so do all requests once the transaction is full.
            if txn_full || handles.contains(req.handle.as_str()) {
                plan.deferred.push(i);
                continue;
            }
            // The static addresses first, then one from the pools for each family
            // they leave out; all of them or none.
            let mut picked = Picked::default();
            if !req.static_ips.is_empty() {
                if let Some(e) = req
                    .static_ips
                    .iter()
                    .filter_map(|ip| self.block_cidr_of(*ip))
                    .find_map(|c| fresh.unreadable.get(&c))
                {
                    plan.failed.push((i, e.replicate()));
                    continue;
                }
                match allocator::pick_static_all(
                    &self.pools,
                    &mut working,
                    rules,
                    &req.static_ips,
                    &req.handle,
                ) {
                    Ok(p) => picked = p,
                    Err((ip, reason)) => {
                        plan.failed
                            .push((i, IpamError::StaticUnavailable { ip, reason }));
                        continue;
                    }
                }
            }
            let families = match req.families.is_empty() {
                true => &self.families,
                false => &req.families,
            };
            let left_out: Vec<Family> = families
                .iter()
                .copied()
                .filter(|f| !req.static_ips.iter().any(|ip| Family::of(ip) == *f))
                .collect();
            if !left_out.is_empty() {
                match allocator::pick_dynamic_all(
                    &left_out,
                    &req.within,
                    &self.pools,
                    &mut working,
                    rules,
                    scope,
                    &req.handle,
                ) {
                    Ok(p) => picked.append(p),
                    // The working copy is dropped whole: nothing to take back.
                    Err((_, Shortfall::NeedFullView)) if full.is_none() => return None,
                    Err((family, shortfall)) => {
                        picked.take_back(&mut working);
                        let reason = match shortfall {
                            Shortfall::NeedFullView => {
                                "the allocator asked for a full view it already had".into()
                            }
                            Shortfall::Exhausted(reason) => reason,
                        };
                        plan.failed.push((i, self.exhausted(family, reason)));
                        continue;
                    }
                }
            }

            let extra = req
                .extra
                .as_ref()
                .map_or_else(Vec::new, |f| f(&picked.ips()));
            if let Err(why) = check_extra(&extra) {
                picked.take_back(&mut working);
                plan.failed.push((
                    i,
                    IpamError::InvalidRequest(format!(
                        "extra operations of handle {:?}: {why}",
                        req.handle
                    )),
                ));
                continue;
            }
            let new_blocks: BTreeSet<IpNet> = picked
                .picks
                .iter()
                .map(|p| p.block)
                .filter(|b| !touched.contains(b))
                .collect();
            let cost = 1 + extra.len() + new_blocks.len();
            let too_big = !plan.planned.is_empty() && ops + cost > MAX_TXN_OPS;
            if too_big || written.clashes(&extra) {
                picked.take_back(&mut working);
                txn_full |= too_big;
                plan.deferred.push(i);
                continue;
            }
            ops += cost;
            written.add(&extra);
            touched.extend(new_blocks);
            handles.insert(&req.handle);
            plan.planned.push(Planned {
                slot: i,
                picked,
                extra,
            });
        }
        for cidr in touched {
            if let Some(block) = working.remove(&cidr) {
                plan.revs.insert(cidr, revs.get(&cidr).copied().flatten());
                plan.blocks.insert(cidr, block);
            }
        }
        Some(plan)
    }

    fn log_picks(&self, picked: &Picked) {
        for p in &picked.picks {
            match p.source {
                Source::Claimed => {
                    info!(block = %p.block, node = %self.node, "IPAM: claimed block")
                }
                Source::Borrowed => {
                    info!(block = %p.block, ip = %p.ip, "IPAM: borrowed address")
                }
                Source::Affine => {}
            }
        }
    }

    /// Static addresses must be distinct, outside special space, inside an enabled
    /// pool, and not a reserved address.
    fn check_static(&self, ips: &[IpAddr]) -> Result<(), IpamError> {
        let mut distinct = BTreeSet::new();
        for &ip in ips {
            if !distinct.insert(ip) {
                return Err(IpamError::InvalidRequest(format!(
                    "static address {ip} requested twice"
                )));
            }
            // Checked before the pools: no pool may hold it, and "outside every pool"
            // would hide that the request itself is wrong.
            if let Some(reason) = super::pool::special_space_of(ip) {
                return Err(IpamError::UnusableStatic { ip, reason });
            }
            allocator::locate_static(&self.pools, ip)
                .map_err(|reason| IpamError::StaticUnavailable { ip, reason })?;
        }
        Ok(())
    }

    fn exhausted(&self, family: super::Family, reason: String) -> IpamError {
        IpamError::Exhausted {
            family,
            node: self.node.clone(),
            reason,
        }
    }
}
