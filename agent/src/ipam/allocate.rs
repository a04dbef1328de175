//! Allocation against the store: plan with [`super::allocator`] on cached or freshly
//! read blocks, then write every touched block and the new handle in one transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use tracing::{debug, info};

use super::allocator::{self, Pick, Scope, Shortfall, Source};
use super::block::Block;
use super::handle::{AllocRequest, Allocation, Handle, validate_handle};
use super::{
    Cached, Committed, Ipam, IpamError, MAX_ATTEMPTS, NodeBlocks, backoff, block_compare,
    cached_of, decode_handle, encode, keys, pause_before, put, unix_now,
};
use crate::store::{Compare, Revision};

/// The blocks an allocation writes: their new state, and the revision each was read at
/// (`None`: the key was absent and the transaction creates it).
struct Plan {
    picks: Vec<Pick>,
    blocks: BTreeMap<IpNet, Block>,
    revs: BTreeMap<IpNet, Option<Revision>>,
}

impl Ipam {
    /// Allocates addresses for `req.handle`: one per configured family, or exactly
    /// `req.static_ips` when given. The blocks and the handle are written in one
    /// transaction; a handle that already exists is [`IpamError::DuplicateHandle`].
    pub async fn allocate(&self, req: AllocRequest) -> Result<Allocation, IpamError> {
        validate_handle(&req.handle)?;
        self.check_static(&req.static_ips)?;
        let handle_key = keys::handle(&req.handle);

        let mut cache = self.cache.lock().await;
        if !cache.loaded {
            // The cache must hold every affine block before planning: they are the
            // first choice, and they count towards max_blocks_per_node.
            let all = self.read_blocks().await?;
            cache.reload(&self.node, &all);
        }
        // Blocks read from the store during this call, kept across retries.
        let mut seen: BTreeMap<IpNet, Option<Cached>> = BTreeMap::new();
        // Blocks another writer changed under this call.
        let mut contended: BTreeSet<IpNet> = BTreeSet::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let plan = if req.static_ips.is_empty() {
                self.plan_dynamic(&mut cache, &contended, &req.handle)
                    .await?
            } else {
                self.plan_static(&cache, &mut seen, &contended, &req)
                    .await?
            };
            let record = Handle {
                handle: req.handle.clone(),
                network: req.network.clone(),
                container_id: req.container_id.clone(),
                ifname: req.ifname.clone(),
                netns: req.netns.clone(),
                node: self.node.clone(),
                ips: plan.picks.iter().map(|p| p.ip).collect(),
                created: unix_now(),
            };

            let mut compares = vec![Compare::absent(handle_key.clone())];
            let mut ops = Vec::with_capacity(plan.blocks.len() + 1);
            let mut reread = vec![handle_key.clone()];
            for (cidr, block) in &plan.blocks {
                let key = keys::block(cidr);
                compares.push(block_compare(cidr, plan.revs.get(cidr).copied().flatten()));
                ops.push(put(key.clone(), encode(&key, block)?));
                reread.push(key);
            }
            ops.push(put(handle_key.clone(), encode(&handle_key, &record)?));

            match self.commit(compares, ops, reread).await? {
                Committed::Yes(rev) => {
                    for (cidr, block) in plan.blocks {
                        cache.learn(&self.node, cidr, Some(Cached { block, rev }));
                    }
                    for p in &plan.picks {
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
                    debug!(handle = %req.handle, ips = ?record.ips, "IPAM: allocated");
                    return Ok(Allocation {
                        handle: req.handle,
                        ips: record.ips,
                    });
                }
                Committed::No(kvs) => {
                    let mut kvs = kvs.into_iter();
                    if let Some(Some(existing)) = kvs.next() {
                        // Only a well-formed handle is a duplicate; garbage is reported.
                        decode_handle(&existing)?;
                        return Err(IpamError::DuplicateHandle(req.handle));
                    }
                    debug!(handle = %req.handle, attempt, "IPAM: allocation conflict, retrying");
                    for (cidr, kv) in plan.blocks.keys().zip(kvs) {
                        let state = cached_of(kv)?;
                        let read_at = plan.revs.get(cidr).copied().flatten();
                        if state.as_ref().map(|c| c.rev) != read_at {
                            contended.insert(*cidr);
                        }
                        cache.learn(&self.node, *cidr, state.clone());
                        seen.insert(*cidr, state);
                    }
                    if pause_before(attempt) {
                        backoff(attempt).await;
                        for cidr in plan.blocks.keys() {
                            let state = self.read_block(cidr).await?;
                            cache.learn(&self.node, *cidr, state.clone());
                            seen.insert(*cidr, state);
                        }
                    }
                }
            }
        }
        Err(IpamError::Conflict {
            op: format!("allocate {}", req.handle),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Static addresses must be distinct, inside a pool, and not a reserved address.
    fn check_static(&self, ips: &[IpAddr]) -> Result<(), IpamError> {
        let mut distinct = BTreeSet::new();
        for &ip in ips {
            if !distinct.insert(ip) {
                return Err(IpamError::InvalidRequest(format!(
                    "static address {ip} requested twice"
                )));
            }
            allocator::locate_static(&self.pools, ip)
                .map_err(|reason| IpamError::StaticUnavailable { ip, reason })?;
        }
        Ok(())
    }

    /// Plans one dynamic address per family: from the cache when the node's blocks
    /// have room, else from a full read of every block (claiming or borrowing).
    async fn plan_dynamic(
        &self,
        cache: &mut NodeBlocks,
        contended: &BTreeSet<IpNet>,
        handle: &str,
    ) -> Result<Plan, IpamError> {
        let rules = self.rules(contended);
        {
            let mut working: BTreeMap<IpNet, Block> = cache
                .affine
                .iter()
                .map(|(c, x)| (*c, x.block.clone()))
                .collect();
            let revs: BTreeMap<IpNet, Revision> =
                cache.affine.iter().map(|(c, x)| (*c, x.rev)).collect();
            match allocator::pick_dynamic_all(
                &self.families,
                &self.pools,
                &mut working,
                rules,
                Scope::Affine,
                handle,
            ) {
                Ok(picks) => return Ok(plan_of(picks, working, &revs)),
                Err((_, Shortfall::NeedFullView)) => {}
                Err((family, Shortfall::Exhausted(reason))) => {
                    return Err(self.exhausted(family, reason));
                }
            }
        }

        let all = self.read_blocks().await?;
        cache.reload(&self.node, &all);
        let mut working = all.blocks;
        let scope = Scope::Full {
            unreadable: &all.unreadable,
        };
        match allocator::pick_dynamic_all(
            &self.families,
            &self.pools,
            &mut working,
            rules,
            scope,
            handle,
        ) {
            Ok(picks) => Ok(plan_of(picks, working, &all.revs)),
            Err((family, Shortfall::Exhausted(reason))) => Err(self.exhausted(family, reason)),
            Err((family, Shortfall::NeedFullView)) => Err(self.exhausted(
                family,
                "the allocator asked for a full view it already had".into(),
            )),
        }
    }

    /// Plans the static addresses of `req` on fresh reads of their blocks; the cached
    /// affine blocks only count towards `max_blocks_per_node`.
    async fn plan_static(
        &self,
        cache: &NodeBlocks,
        // Blocks read during this call, current as of the last conflict.
        seen: &mut BTreeMap<IpNet, Option<Cached>>,
        contended: &BTreeSet<IpNet>,
        req: &AllocRequest,
    ) -> Result<Plan, IpamError> {
        let mut working: BTreeMap<IpNet, Block> = BTreeMap::new();
        let mut revs: BTreeMap<IpNet, Revision> = BTreeMap::new();
        for (c, x) in &cache.affine {
            working.insert(*c, x.block.clone());
            revs.insert(*c, x.rev);
        }
        // The blocks of the requested addresses are read from the store, never taken
        // from the cache: "taken" must not be concluded from a stale copy.
        for &ip in &req.static_ips {
            let Some(cidr) = self.block_cidr_of(ip) else {
                continue;
            };
            let state = match seen.get(&cidr) {
                Some(s) => s.clone(),
                None => {
                    let s = self.read_block(&cidr).await?;
                    seen.insert(cidr, s.clone());
                    s
                }
            };
            match state {
                Some(c) => {
                    working.insert(cidr, c.block);
                    revs.insert(cidr, c.rev);
                }
                None => {
                    working.remove(&cidr);
                    revs.remove(&cidr);
                }
            }
        }

        let rules = self.rules(contended);
        let mut picks = Vec::with_capacity(req.static_ips.len());
        for &ip in &req.static_ips {
            let pick = allocator::pick_static(&self.pools, &mut working, rules, ip, &req.handle)
                .map_err(|reason| IpamError::StaticUnavailable { ip, reason })?;
            picks.push(pick);
        }
        Ok(plan_of(picks, working, &revs))
    }

    fn exhausted(&self, family: super::Family, reason: String) -> IpamError {
        IpamError::Exhausted {
            family,
            node: self.node.clone(),
            reason,
        }
    }
}

/// Keeps only the blocks the picks touched, with the revisions they were read at.
fn plan_of(
    picks: Vec<Pick>,
    mut working: BTreeMap<IpNet, Block>,
    revs: &BTreeMap<IpNet, Revision>,
) -> Plan {
    let mut blocks = BTreeMap::new();
    let mut touched_revs = BTreeMap::new();
    for p in &picks {
        if let Some(b) = working.remove(&p.block) {
            blocks.insert(p.block, b);
            touched_revs.insert(p.block, revs.get(&p.block).copied());
        }
    }
    Plan {
        picks,
        blocks,
        revs: touched_revs,
    }
}
