//! IPAM: cluster-unique container addresses, Calico-style.
//!
//! Pools are cut into fixed-size blocks (/26 and /122 by default). A node claims a block
//! with affinity and allocates from it; blocks are what the fabric routes, so hot paths
//! touch one coarse key. When a node's blocks are full it claims another (up to
//! `max_blocks_per_node`), and after that borrows from other nodes' blocks unless
//! `strict_affinity`. Each attachment's addresses are recorded under a handle.
//!
//! Consistency rests on the store's transactions: an allocation writes its blocks and
//! its handle in one compare-and-swap transaction, a release frees the ordinals and
//! deletes the handle in one, so a crash never leaves half of either. The caller's own
//! writes (its endpoint record) can ride in the same transaction
//! ([`AllocRequest::extra`], [`Ipam::release_with`]). Conflicts are retried with fresh
//! reads. One agent per node name is assumed; two would still never hand out an address
//! twice (every write is compare-and-swap), but may starve each other into
//! [`IpamError::Conflict`].
//!
//! # Combining
//!
//! Within one agent, allocations and releases are serialised by one async mutex that
//! also guards the cache of this node's affine blocks: they all rewrite the same few
//! blocks, so running them side by side would only make them fail each other's
//! compare-and-swap. Serialising them one transaction (one fsync) each made a burst of
//! N ADDs take N fsyncs before the last address was given. So requests are combined
//! (see `combine`): concurrent allocations queue, and the one that gets the mutex
//! drains the queue and plans the whole batch at once against the cached blocks —
//! distinct ordinals, claiming more blocks as they fill — then commits one transaction
//! holding every block update, every handle create (each compared absent) and every
//! request's extra operations, and answers each waiter. Releases are combined the same
//! way, except that one freeing an address in another node's block gets a transaction
//! of its own (that node's allocations there would keep failing a shared one).
//! Uncontended, a batch is one request: the hot path is still one transaction, with
//! reads only after a conflict or when a block is full. A batch runs in a task of its
//! own, so a caller that drops its future never strands the others; its own request
//! may still be carried out (`combine` says why that is safe).
//!
//! A batch keeps every request's own semantics: requests are planned in queue order, a
//! request that cannot be satisfied (exhausted, static address taken, bad extra
//! operations) fails alone and leaves no trace in the plan, and when the transaction
//! fails its compares the reason is read back in the same transaction: a handle that
//! exists fails only its request (duplicate), blocks that moved are re-read and the
//! rest re-planned (bounded, as for one request). A request whose handle or extra keys
//! collide with an earlier one of the batch, or that would push the transaction past
//! `combine::MAX_TXN_OPS`, goes in the batch's next transaction instead.
//!
//! Modules: [`config`] (validation), [`pool`] and [`block`] (address arithmetic and the
//! stored block), [`handle`] (the stored handle, requests), [`keys`] (store keys),
//! [`allocator`] (pure decisions), `combine` (queues and batch election), and the
//! store-backed operations in `allocate`, `release`, `view` and [`check`] (consistency
//! report and GC); [`reclaim`] frees departed nodes' blocks and [`tunnel`] holds this
//! node's VXLAN device addresses under its tunnel handle; `served` refuses to start
//! while a removed or shrunk pool still holds this node's allocations. [`Family`] is strait-api's.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use serde::Serialize;
use tokio::sync::Mutex;
use tracing::warn;

use crate::store::{Compare, KeyValue, Revision, Store, Txn, TxnOp, TxnOpResult};

pub mod allocator;
pub mod block;
pub mod check;
pub mod config;
pub mod error;
pub mod handle;
pub mod keys;
pub mod pool;
pub mod reclaim;
pub mod tunnel;

mod allocate;
mod combine;
mod release;
mod served;
mod view;

pub use block::Block;
pub use config::IpamConfig;
pub use error::IpamError;
pub use handle::{AllocRequest, Allocation, ExtraOps, Handle};
pub use pool::Pool;
/// strait-api's address family, re-exported: IPAM's callers ask per family.
pub use strait_api::Family;

use allocator::Rules;
use combine::Queue;
use release::{ReleaseItem, ReleaseOutcome};

/// Prefix of the handle that holds a node's tunnel addresses (the VXLAN device's own,
/// as Calico's `ipv4VXLANTunnelAddr`): `strait-tunnel.<node>`. No attachment has such a
/// handle: attachment handles are `<network>.<containerID>.<ifname>`.
pub const TUNNEL_HANDLE_PREFIX: &str = "strait-tunnel.";

/// Prefix of the handles of addresses Docker's IPAM driver API reserved
/// (`IpamDriver.RequestAddress`) for a Docker network: `docker-ipam.<...>`. They live
/// until Docker releases them (`ReleaseAddress`, `ReleasePool`), not with an endpoint
/// record, so the agent's leak check and GC treat them like the tunnel handles: never a
/// leak.
pub const DOCKER_HANDLE_PREFIX: &str = "docker-ipam.";

/// The handle of `node`'s tunnel addresses.
pub fn tunnel_handle(node: &str) -> String {
    format!("{TUNNEL_HANDLE_PREFIX}{node}")
}

/// Attempts of one transaction (of one request, or of a batch) before its requests
/// report [`IpamError::Conflict`]. Each conflict means another writer made progress, so
/// this bounds starvation, not correctness.
const MAX_ATTEMPTS: u32 = 32;

/// The IPAM of one node.
pub struct Ipam {
    store: Arc<dyn Store>,
    node: String,
    cfg: IpamConfig,
    pools: Vec<Pool>,
    /// Families with an enabled pool, IPv4 first: one address each.
    families: Vec<Family>,
    /// This node's affine blocks. The lock also serializes this node's allocations and
    /// releases, so they never race each other for the same block. Shared (`Arc`) so a
    /// batch can take it into a task of its own.
    cache: Arc<Mutex<NodeBlocks>>,
    /// Allocations waiting for a batch.
    allocations: Arc<Queue<AllocRequest, Allocation>>,
    /// Releases waiting for a batch.
    releases: Arc<Queue<ReleaseItem<'static>, ReleaseOutcome>>,
    /// Where this node's pool addresses must lie (`--ipam kubernetes`: the Node's
    /// podCIDRs); empty: anywhere in the pools.
    node_ranges: Vec<IpNet>,
}

/// A block as last read or written, with the `mod_revision` to compare against.
#[derive(Debug, Clone)]
struct Cached {
    block: Block,
    rev: Revision,
}

#[derive(Debug, Default)]
struct NodeBlocks {
    /// Whether `affine` reflects a full read; until then every allocation reads all
    /// blocks.
    loaded: bool,
    affine: BTreeMap<IpNet, Cached>,
}

impl NodeBlocks {
    /// Records what the store holds for `cidr` (`None`: the key is absent).
    fn learn(&mut self, node: &str, cidr: IpNet, state: Option<Cached>) {
        match state {
            Some(c) if c.block.is_affine_to(node) => {
                self.affine.insert(cidr, c);
            }
            _ => {
                self.affine.remove(&cidr);
            }
        }
    }

    /// Replaces the cache with the affine blocks of a full read.
    fn reload(&mut self, node: &str, all: &AllBlocks) {
        self.affine = all
            .blocks
            .iter()
            .filter(|(_, b)| b.is_affine_to(node))
            .filter_map(|(c, b)| {
                let rev = *all.revs.get(c)?;
                Some((
                    *c,
                    Cached {
                        block: b.clone(),
                        rev,
                    },
                ))
            })
            .collect();
        self.loaded = true;
    }
}

/// Every block in the store, read at one revision.
#[derive(Debug, Default)]
struct AllBlocks {
    blocks: BTreeMap<IpNet, Block>,
    revs: BTreeMap<IpNet, Revision>,
    /// Block keys whose value does not parse: never claimed over or borrowed from.
    unreadable: BTreeSet<IpNet>,
}

/// Result of a compare-and-swap.
enum Committed {
    /// Applied, at this store revision.
    Yes(Revision),
    /// A compare failed; the values of the re-read keys, in order.
    No(Vec<Option<KeyValue>>),
}

impl Ipam {
    /// Validates `cfg` and prepares the IPAM of `node`. The cache of the node's blocks
    /// is loaded now if the store answers, else on first use: an agent must start (and
    /// serve DEL) while the store is briefly away.
    /// Confines every pool address of this node to `ranges` (the Node's podCIDRs,
    /// `--ipam kubernetes`): an allocation that names no ranges of its own gets these,
    /// and only their families. Each range must lie inside an enabled pool.
    pub fn confined_to(mut self, ranges: Vec<IpNet>) -> Result<Self, IpamError> {
        for r in &ranges {
            let inside = self.pools.iter().any(|p| !p.disabled && p.cidr.contains(r));
            if !inside {
                return Err(IpamError::InvalidConfig(format!(
                    "the node's range {r} lies in no enabled pool ({}): give --pools that \
                     hold the cluster's pod CIDRs",
                    self.cfg
                        .pools
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        self.node_ranges = ranges;
        Ok(self)
    }

    /// The ranges this node's addresses are confined to (empty: none).
    pub fn node_ranges(&self) -> &[IpNet] {
        &self.node_ranges
    }

    pub async fn new(
        store: Arc<dyn Store>,
        node: String,
        cfg: IpamConfig,
    ) -> Result<Ipam, IpamError> {
        let pools = cfg.validate()?;
        if node.is_empty() {
            return Err(IpamError::InvalidConfig("node name is empty".into()));
        }
        let mut families: Vec<Family> = pools
            .iter()
            .filter(|p| !p.disabled)
            .map(Pool::family)
            .collect();
        families.sort();
        families.dedup();
        let ipam = Ipam {
            store,
            node,
            cfg,
            pools,
            families,
            cache: Arc::new(Mutex::new(NodeBlocks::default())),
            allocations: Arc::default(),
            releases: Arc::default(),
            node_ranges: Vec::new(),
        };
        match ipam.read_blocks().await {
            Ok(all) => {
                // Refuses a pool removed under this node's allocations (see `served`).
                let deleted = match ipam.check_served(&all).await {
                    Err(e @ IpamError::InvalidConfig(_)) => return Err(e),
                    Err(e) => {
                        warn!(error = %e, "IPAM: cannot check the pools served before");
                        false
                    }
                    Ok(deleted) => deleted,
                };
                let all = match deleted {
                    true => ipam.read_blocks().await.unwrap_or(all),
                    false => all,
                };
                ipam.cache.lock().await.reload(&ipam.node, &all)
            }
            Err(e) => warn!(error = %e, "IPAM: cannot read blocks yet; will on first use"),
        }
        Ok(ipam)
    }

    /// Another handle on this IPAM, sharing its lock, cache and queues: what a batch's
    /// task runs on.
    fn share(&self) -> Ipam {
        Ipam {
            store: self.store.clone(),
            node: self.node.clone(),
            cfg: self.cfg.clone(),
            pools: self.pools.clone(),
            families: self.families.clone(),
            cache: self.cache.clone(),
            allocations: self.allocations.clone(),
            releases: self.releases.clone(),
            node_ranges: self.node_ranges.clone(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn config(&self) -> &IpamConfig {
        &self.cfg
    }

    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    fn rules<'a>(&'a self, contended: &'a BTreeSet<IpNet>) -> Rules<'a> {
        Rules {
            contended,
            node: &self.node,
            max_blocks_per_node: self.cfg.max_blocks_per_node,
            strict_affinity: self.cfg.strict_affinity,
            now: unix_now(),
        }
    }

    /// The block `ip` lives in (see [`allocator::block_cidr_of`]).
    fn block_cidr_of(&self, ip: std::net::IpAddr) -> Option<IpNet> {
        allocator::block_cidr_of(&self.pools, |f| self.cfg.block_prefix(f), ip)
    }

    /// Reads every block. Unparseable blocks are logged and set aside rather than
    /// failing allocation for the whole node.
    async fn read_blocks(&self) -> Result<AllBlocks, IpamError> {
        let resp = self.store.range(&keys::blocks_prefix()).await?;
        let mut all = AllBlocks::default();
        for kv in &resp.kvs {
            match decode_block(kv) {
                Ok(b) => {
                    all.revs.insert(b.cidr, kv.mod_revision);
                    all.blocks.insert(b.cidr, b);
                }
                Err(e) => {
                    warn!(error = %e, "IPAM: skipping unreadable block");
                    if let Some(cidr) = keys::block_cidr(&kv.key) {
                        all.unreadable.insert(cidr);
                    }
                }
            }
        }
        Ok(all)
    }

    /// Reads one block: `None` if its key is absent.
    async fn read_block(&self, cidr: &IpNet) -> Result<Option<Cached>, IpamError> {
        match self.store.get(&keys::block(cidr)).await? {
            None => Ok(None),
            Some(kv) => Ok(Some(Cached {
                block: decode_block(&kv)?,
                rev: kv.mod_revision,
            })),
        }
    }

    /// Runs one transaction: if `compares` hold, `ops`; otherwise re-read `reread`.
    async fn commit(
        &self,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
        reread: Vec<String>,
    ) -> Result<Committed, IpamError> {
        let txn = Txn::new()
            .when(compares)
            .and_then(ops)
            .or_else(reread.into_iter().map(|key| TxnOp::Get { key }));
        let resp = self.store.txn(txn).await?;
        if resp.succeeded {
            return Ok(Committed::Yes(resp.revision));
        }
        Ok(Committed::No(
            resp.results
                .into_iter()
                .map(|r| match r {
                    TxnOpResult::Get(kv) => kv,
                    _ => None,
                })
                .collect(),
        ))
    }
}

/// Parses a block value and checks it against its key.
fn decode_block(kv: &KeyValue) -> Result<Block, IpamError> {
    let corrupt = |reason: String| IpamError::Corrupt {
        key: kv.key.clone(),
        reason,
    };
    let cidr = keys::block_cidr(&kv.key).ok_or_else(|| corrupt("not a block key".into()))?;
    let block: Block = serde_json::from_slice(&kv.value).map_err(|e| corrupt(e.to_string()))?;
    block.verify(&cidr).map_err(corrupt)?;
    Ok(block)
}

/// The cache entry for a block as re-read (`None`: the key is absent).
fn cached_of(kv: Option<KeyValue>) -> Result<Option<Cached>, IpamError> {
    kv.map(|kv| {
        Ok(Cached {
            block: decode_block(&kv)?,
            rev: kv.mod_revision,
        })
    })
    .transpose()
}

/// Parses a handle value and checks it against its key.
fn decode_handle(kv: &KeyValue) -> Result<Handle, IpamError> {
    let corrupt = |reason: String| IpamError::Corrupt {
        key: kv.key.clone(),
        reason,
    };
    let h: Handle = serde_json::from_slice(&kv.value).map_err(|e| corrupt(e.to_string()))?;
    if keys::handle_id(&kv.key) != Some(h.handle.as_str()) {
        return Err(corrupt(format!("holds handle {:?}", h.handle)));
    }
    Ok(h)
}

fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, IpamError> {
    serde_json::to_vec(value).map_err(|e| IpamError::Corrupt {
        key: key.to_string(),
        reason: format!("cannot encode: {e}"),
    })
}

fn put(key: String, value: Vec<u8>) -> TxnOp {
    TxnOp::Put {
        key,
        value,
        lease: None,
    }
}

/// The compare that pins a block to what was read: its `mod_revision`, or absence.
fn block_compare(cidr: &IpNet, rev: Option<Revision>) -> Compare {
    match rev {
        Some(rev) => Compare::mod_revision(keys::block(cidr), rev),
        None => Compare::absent(keys::block(cidr)),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether to pause before retrying after conflict number `attempt`.
///
/// A conflict's own re-read (the transaction's failure branch) is current, so most
/// retries go at once: a pause lets a busy writer on the same block (another node
/// borrowing, or this node while another borrows) commit again, and the pausing side
/// would lose every time. Every fourth conflict pauses, so two sides that keep
/// colliding fall out of step.
fn pause_before(attempt: u32) -> bool {
    attempt.is_multiple_of(4)
}

/// Sleeps a short, jittered while (1 ms up to 1 + 2^min(attempt, 6) ms).
async fn backoff(attempt: u32) {
    let cap_ms = 1u64 << attempt.min(6);
    let mut h = RandomState::new().build_hasher();
    h.write_u32(attempt);
    let jitter = h.finish() % (cap_ms + 1);
    tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
}
