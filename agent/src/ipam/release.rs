//! Release against the store: free a handle's ordinals in their blocks and delete the
//! handle in one transaction, whatever number of blocks it spans.
//!
//! Blocks keep their affinity when they empty: a node that restarts or rejoins finds
//! its blocks (and its routes) where it left them. Reclaiming empty blocks of departed
//! nodes is cluster-wide work with a grace period, not the release path's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use tracing::debug;

use super::block::Block;
use super::handle::{Handle, validate_handle};
use super::{
    Cached, Committed, Ipam, IpamError, MAX_ATTEMPTS, backoff, block_compare, cached_of,
    decode_handle, encode, keys, pause_before, put,
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

impl Ipam {
    /// Releases every address of `handle` and deletes it. Idempotent: a handle that
    /// does not exist releases nothing and is not an error. Returns the addresses the
    /// handle held; an address its block no longer marks as the handle's is left as
    /// the block says.
    pub async fn release(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        validate_handle(handle)?;
        match self.release_if(handle, &|_, _| Ok(())).await? {
            ReleaseOutcome::Released(ips) => Ok(ips),
            ReleaseOutcome::Missing => Ok(Vec::new()),
            ReleaseOutcome::Refused(reason) => Err(IpamError::InvalidRequest(reason)),
        }
    }

    /// Releases `handle` if `verify` accepts the record as read; the transaction pins
    /// that very record (its `mod_revision`), so what was verified is what is freed.
    pub(super) async fn release_if(
        &self,
        handle: &str,
        verify: Verify<'_>,
    ) -> Result<ReleaseOutcome, IpamError> {
        let handle_key = keys::handle(handle);
        let mut cache = self.cache.lock().await;
        let mut handle_kv = self.store.get(&handle_key).await?;
        // Blocks outside the cache read during this call, kept across retries.
        let mut seen: BTreeMap<IpNet, Option<Cached>> = BTreeMap::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let Some(kv) = handle_kv.take() else {
                return Ok(ReleaseOutcome::Missing);
            };
            let record = decode_handle(&kv)?;
            if let Err(reason) = verify(&kv, &record) {
                return Ok(ReleaseOutcome::Refused(reason));
            }

            let cidrs: BTreeSet<IpNet> = record
                .ips
                .iter()
                .filter_map(|ip| self.block_cidr_of(*ip))
                .collect();
            // Every block the handle names is pinned, changed or not: a cached copy that
            // missed one of the handle's allocations would otherwise let the handle go
            // and leave that allocation orphaned.
            let mut pinned: BTreeMap<IpNet, Option<Cached>> = BTreeMap::new();
            for cidr in cidrs {
                let state = match (cache.affine.get(&cidr), seen.get(&cidr)) {
                    (Some(c), _) => Some(c.clone()),
                    (None, Some(s)) => s.clone(),
                    (None, None) => {
                        let s = self.read_block(&cidr).await?;
                        seen.insert(cidr, s.clone());
                        s
                    }
                };
                pinned.insert(cidr, state);
            }

            let mut compares = vec![Compare::mod_revision(handle_key.clone(), kv.mod_revision)];
            let mut ops = Vec::with_capacity(pinned.len() + 1);
            let mut reread = vec![handle_key.clone()];
            let mut changed: BTreeMap<IpNet, Block> = BTreeMap::new();
            for (cidr, state) in &pinned {
                let key = keys::block(cidr);
                compares.push(block_compare(cidr, state.as_ref().map(|c| c.rev)));
                reread.push(key.clone());
                if let Some(c) = state {
                    let mut block = c.block.clone();
                    if block.unassign(&record.ips, handle) > 0 {
                        ops.push(put(key.clone(), encode(&key, &block)?));
                        changed.insert(*cidr, block);
                    }
                }
            }
            ops.push(TxnOp::Delete {
                key: handle_key.clone(),
            });

            match self.commit(compares, ops, reread).await? {
                Committed::Yes(rev) => {
                    for (cidr, block) in changed {
                        cache.learn(&self.node, cidr, Some(Cached { block, rev }));
                    }
                    debug!(handle, ips = ?record.ips, "IPAM: released");
                    return Ok(ReleaseOutcome::Released(record.ips));
                }
                Committed::No(kvs) => {
                    debug!(handle, attempt, "IPAM: release conflict, retrying");
                    let mut kvs = kvs.into_iter();
                    handle_kv = kvs.next().flatten();
                    for (cidr, kv) in pinned.keys().zip(kvs) {
                        let state = cached_of(kv)?;
                        cache.learn(&self.node, *cidr, state.clone());
                        seen.insert(*cidr, state);
                    }
                    if pause_before(attempt) {
                        backoff(attempt).await;
                        handle_kv = self.store.get(&handle_key).await?;
                        for cidr in pinned.keys() {
                            let state = self.read_block(cidr).await?;
                            cache.learn(&self.node, *cidr, state.clone());
                            seen.insert(*cidr, state);
                        }
                    }
                }
            }
        }
        Err(IpamError::Conflict {
            op: format!("release {handle}"),
            attempts: MAX_ATTEMPTS,
        })
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
