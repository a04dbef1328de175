//! Read-only views: what `netctl ipam show` prints, handle lookups (by id, by id
//! prefix, by the address held), and whether this node could allocate at all (CNI
//! STATUS).

use std::collections::BTreeSet;
use std::net::IpAddr;

use strait_api::{BlockView, IpamView, PoolView};
use tracing::warn;

use super::allocator::{self, Scope};
use super::handle::{Handle, validate_handle};
use super::pool::pool_of;
use super::{Ipam, IpamError, decode_handle, keys};

impl Ipam {
    /// Pools with their use, and every block in the store. Sizes count every address,
    /// reserved ones included; `used` counts allocations.
    pub async fn view(&self) -> Result<IpamView, IpamError> {
        let all = self.read_blocks().await?;
        let pools = self
            .pools
            .iter()
            .map(|pool| {
                let mine = all.blocks.values().filter(|b| pool.holds_block(&b.cidr));
                let (claimed, used) =
                    mine.fold((0u64, 0u128), |(n, u), b| (n + 1, u + u128::from(b.used())));
                PoolView {
                    cidr: pool.cidr,
                    block_prefix: pool.block_prefix,
                    size: pool.size(),
                    usable: pool.usable(),
                    used,
                    blocks_claimed: claimed,
                    blocks_total: pool.block_count(),
                    disabled: pool.disabled,
                }
            })
            .collect();
        let blocks = all
            .blocks
            .values()
            .map(|b| BlockView {
                cidr: b.cidr,
                affinity: b.affinity.clone(),
                used: b.used(),
                size: b.size(),
                lent: b.lent().map(|(ip, n)| (ip, n.to_string())).collect(),
            })
            .collect();
        Ok(IpamView { pools, blocks })
    }

    /// The handle `handle`, if it exists.
    pub async fn get_handle(&self, handle: &str) -> Result<Option<Handle>, IpamError> {
        validate_handle(handle)?;
        match self.store.get(&keys::handle(handle)).await? {
            Some(kv) => Ok(Some(decode_handle(&kv)?)),
            None => Ok(None),
        }
    }

    /// Every handle of every node, sorted by id.
    pub async fn list_handles(&self) -> Result<Vec<Handle>, IpamError> {
        let resp = self.store.range(&keys::handles_prefix()).await?;
        resp.kvs.iter().map(decode_handle).collect()
    }

    /// The handle holding `ip` now, read from the store: `None` if `ip` is in no
    /// configured pool (disabled ones included), or its block or its ordinal is free.
    pub async fn holder_of(&self, ip: IpAddr) -> Result<Option<String>, IpamError> {
        let Some(cidr) = pool_of(&self.pools, ip).and_then(|p| p.block_of(ip)) else {
            return Ok(None);
        };
        Ok(self
            .read_block(&cidr)
            .await?
            .and_then(|c| c.block.holder(ip).map(str::to_string)))
    }

    /// Every stored handle, of any node, whose id starts with `prefix`, sorted by id:
    /// one read of the store's handles under that prefix.
    pub async fn handles_with_prefix(&self, prefix: &str) -> Result<Vec<Handle>, IpamError> {
        let resp = self
            .store
            .range(&format!("{}{prefix}", keys::handles_prefix()))
            .await?;
        resp.kvs.iter().map(decode_handle).collect()
    }

    /// Whether this node could allocate one address of every configured family now
    /// (claiming or borrowing as the config allows). A store that cannot be read
    /// counts as no: CNI STATUS reports the plugin unavailable either way.
    pub async fn has_free_address(&self) -> bool {
        let all = match self.read_blocks().await {
            Ok(all) => all,
            Err(e) => {
                warn!(error = %e, "IPAM: cannot read blocks for STATUS");
                return false;
            }
        };
        let mut working = all.blocks;
        let unreadable: &BTreeSet<_> = &all.unreadable;
        allocator::pick_dynamic_all(
            &self.families,
            &[],
            &self.pools,
            &mut working,
            self.rules(&BTreeSet::new()),
            Scope::Full { unreadable },
            "",
        )
        .is_ok()
    }
}
