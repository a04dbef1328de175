//! The allocator's decisions, pure: which free ordinal of a block, which block of which
//! pool, whether to claim or borrow, where a static address lives. The store-backed
//! [`super::Ipam`] feeds these functions the blocks it read and writes back what they
//! changed in one transaction.
//!
//! Over 600 lines with its unit tests; the allocator itself is about 630 lines: the
//! planner of one batch, whose rules (affinity, borrowing, strict affinity, static
//! addresses, ranges) depend on each other.
//!
//! Order of preference for a dynamic address of one family, as in Calico:
//! 1. a block affine to this node (pools in configured order, blocks in address order);
//! 2. claim the first unclaimed block of a pool, unless the node already holds
//!    `max_blocks_per_node` blocks of that family;
//! 3. borrow from any other block with space, unless `strict_affinity`.
//!
//! A request may confine its dynamic addresses to ranges inside the pools (`within`: a
//! Docker network's subnet or IP range). The order stays the same, over only the
//! blocks overlapping a range and, in them, only the ordinals inside one.
//!
//! A request's picks are all or nothing ([`Picked`]): a batch plans many requests on one
//! copy of the blocks, and a request that falls short, or is left for a later
//! transaction, must leave no trace in that copy while its neighbours' picks stay.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use strait_api::Family;

use super::block::Block;
use super::pool::{Pool, pool_of, pool_of_block};

/// The rules one node allocates under.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub node: &'a str,
    pub max_blocks_per_node: Option<u32>,
    pub strict_affinity: bool,
    /// Unix seconds, stamped on claimed blocks.
    pub now: u64,
    /// Blocks that lost a compare-and-swap during this allocation: another writer is
    /// busy in them, so they are used only when no other block has room. Without this a
    /// borrower keeps colliding with the lender allocating in the same block.
    pub contended: &'a BTreeSet<IpNet>,
}

impl Rules<'_> {
    /// Whether the node may claim another block of `family`, given the blocks it holds.
    fn may_claim(&self, blocks: &BTreeMap<IpNet, Block>, family: Family) -> bool {
        self.max_blocks_per_node
            .is_none_or(|max| held_blocks(blocks, self.node, family) < u64::from(max))
    }
}

/// How an address was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// From a block already affine to this node.
    Affine,
    /// From a block this allocation claims for this node.
    Claimed,
    /// From another node's block, or from a block no node has claimed.
    Borrowed,
}

/// One chosen address; `blocks` already records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub block: IpNet,
    pub ip: IpAddr,
    pub source: Source,
}

/// The picks of one request, in order, already recorded in the blocks, and what it
/// takes to take them back.
#[derive(Debug, Clone, Default)]
pub struct Picked {
    pub picks: Vec<Pick>,
    undo: Vec<Undo>,
}

impl Picked {
    /// The addresses picked, in order.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.picks.iter().map(|p| p.ip).collect()
    }

    fn push(&mut self, (pick, undo): (Pick, Undo)) {
        self.picks.push(pick);
        self.undo.push(undo);
    }

    /// Adds `later`, picked on the same blocks after these: taking the whole back
    /// undoes `later` first.
    pub fn append(&mut self, later: Picked) {
        self.picks.extend(later.picks);
        self.undo.extend(later.undo);
    }

    /// Removes these picks from `blocks`, leaving every block exactly as it was before
    /// them. Valid only while they are the latest picks recorded in `blocks`.
    pub fn take_back(self, blocks: &mut BTreeMap<IpNet, Block>) {
        for u in self.undo.into_iter().rev() {
            match u.prior {
                None => {
                    blocks.remove(&u.block);
                }
                Some(prior) => {
                    if let Some(b) = blocks.get_mut(&u.block) {
                        b.allocations.remove(&u.ordinal);
                        b.borrowed.remove(&u.ordinal);
                        b.affinity = prior.affinity;
                        b.claimed = prior.claimed;
                        b.next_ordinal = prior.next_ordinal;
                    }
                }
            }
        }
    }
}

/// What one pick changed, to restore it: a pick adds one free ordinal, moves the search
/// start, and may claim the block (add it, or set its affinity).
#[derive(Debug, Clone)]
struct Undo {
    block: IpNet,
    ordinal: u32,
    /// The block's other changed fields before the pick; `None`: the pick added it.
    prior: Option<Prior>,
}

#[derive(Debug, Clone)]
struct Prior {
    affinity: Option<String>,
    claimed: u64,
    next_ordinal: u32,
}

impl Prior {
    fn of(b: &Block) -> Self {
        Self {
            affinity: b.affinity.clone(),
            claimed: b.claimed,
            next_ordinal: b.next_ordinal,
        }
    }
}

/// What the caller knows about the store's blocks.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Only this node's affine blocks (the cache): enough for the hot path, not for
    /// claiming or borrowing.
    Affine,
    /// Every block in the store; `unreadable` are keys that did not parse, which are
    /// neither claimed over nor borrowed from.
    Full { unreadable: &'a BTreeSet<IpNet> },
}

/// Why no address was picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortfall {
    /// The affine blocks are full; read every block and ask again with [`Scope::Full`].
    NeedFullView,
    /// Nothing can be given; the reason is for the operator.
    Exhausted(String),
}

/// Blocks of `family` affine to `node`.
pub fn held_blocks(blocks: &BTreeMap<IpNet, Block>, node: &str, family: Family) -> u64 {
    let n = blocks
        .values()
        .filter(|b| b.family() == family && b.is_affine_to(node))
        .count();
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Whether `ip` may be handed out under `ranges` (none: anywhere).
fn in_ranges(ranges: &[IpNet], ip: IpAddr) -> bool {
    ranges.is_empty() || ranges.iter().any(|r| r.contains(&ip))
}

/// Whether two networks share an address: one holds the other's first address.
fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first free, unreserved ordinal of `block` at or after its search start, wrapping
/// around, whose address lies inside `ranges` (none: anywhere).
pub fn free_ordinal(block: &Block, pool: &Pool, ranges: &[IpNet]) -> Option<u32> {
    let size = block.size();
    if block.used() >= size {
        return None;
    }
    if !ranges.is_empty() && !ranges.iter().any(|r| overlap(r, &block.cidr)) {
        return None;
    }
    let start = block.next_ordinal % size;
    (0..size).map(|i| (start + i) % size).find(|o| {
        !block.allocations.contains_key(o)
            && block
                .ip(*o)
                .is_some_and(|ip| !pool.is_reserved(ip) && in_ranges(ranges, ip))
    })
}

/// The first block of `pool` passing `wanted` with a free ordinal inside `ranges`, in
/// address order, contended blocks last.
fn first_free(
    blocks: &BTreeMap<IpNet, Block>,
    pool: &Pool,
    ranges: &[IpNet],
    contended: &BTreeSet<IpNet>,
    wanted: impl Fn(&Block) -> bool,
) -> Option<(IpNet, u32)> {
    let pass = |hot: bool| {
        blocks
            .values()
            .filter(|b| pool.holds_block(&b.cidr) && wanted(b))
            .filter(|b| contended.contains(&b.cidr) == hot)
            .find_map(|b| free_ordinal(b, pool, ranges).map(|o| (b.cidr, o)))
    };
    pass(false).or_else(|| pass(true))
}

/// The blocks of `pool` that may hold an address inside `ranges` (none: every block),
/// in address order within each range, without reading any: a pool may hold far more
/// blocks than the store does.
fn candidate_blocks<'a>(pool: &'a Pool, ranges: &[IpNet]) -> impl Iterator<Item = IpNet> + 'a {
    let spans: Vec<(u128, u128)> = if ranges.is_empty() {
        vec![(0, pool.block_count().saturating_sub(1))]
    } else {
        ranges
            .iter()
            .filter_map(|r| pool.blocks_overlapping(r))
            .collect()
    };
    spans
        .into_iter()
        .flat_map(|(first, last)| first..=last)
        .map_while(|n| pool.nth_block(n))
}

/// Chooses a dynamic address of `family` for `handle` and records it in `blocks`
/// (claiming a block by adding it or setting its affinity). When `within` is not
/// empty, the address lies inside one of its ranges of `family` (see [`dynamic`]).
pub fn pick_dynamic(
    family: Family,
    within: &[IpNet],
    pools: &[Pool],
    blocks: &mut BTreeMap<IpNet, Block>,
    rules: Rules<'_>,
    scope: Scope<'_>,
    handle: &str,
) -> Result<Pick, Shortfall> {
    dynamic(family, within, pools, blocks, rules, scope, handle).map(|(pick, _)| pick)
}

/// One dynamic address, in the order of preference of the module doc. With `within`
/// (a Docker network's subnet or IP range inside a pool), every step only considers
/// the blocks overlapping its ranges of `family`, and in them only the ordinals inside
/// a range; a range of `family` overlapping no enabled pool, or no range of `family`
/// at all, is a shortfall naming the ranges.
fn dynamic(
    family: Family,
    within: &[IpNet],
    pools: &[Pool],
    blocks: &mut BTreeMap<IpNet, Block>,
    rules: Rules<'_>,
    scope: Scope<'_>,
    handle: &str,
) -> Result<(Pick, Undo), Shortfall> {
    // A disabled pool hands out nothing new, not even from this node's own blocks.
    let pools: Vec<&Pool> = pools
        .iter()
        .filter(|p| p.family() == family && !p.disabled)
        .collect();
    let pool_list = pools
        .iter()
        .map(|p| p.cidr.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if pools.is_empty() {
        return Err(Shortfall::Exhausted(format!(
            "no enabled {family} pool is configured"
        )));
    }
    let ranges: Vec<IpNet> = within
        .iter()
        .filter(|r| Family::of_net(r) == family)
        .copied()
        .collect();
    let range_list = ranges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if !within.is_empty() && ranges.is_empty() {
        let asked = within
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Shortfall::Exhausted(format!(
            "the address must lie inside {asked}, none of which is {family}"
        )));
    }
    if let Some(r) = ranges
        .iter()
        .find(|r| !pools.iter().any(|p| overlap(&p.cidr, r)))
    {
        return Err(Shortfall::Exhausted(format!(
            "{r} overlaps no enabled {family} pool (pools: {pool_list})"
        )));
    }

    // 1. This node's own blocks.
    for pool in &pools {
        let found = first_free(blocks, pool, &ranges, rules.contended, |b| {
            b.is_affine_to(rules.node)
        });
        if let Some((cidr, ordinal)) = found {
            let prior = blocks.get(&cidr).map(Prior::of);
            return assign(
                blocks,
                cidr,
                ordinal,
                handle,
                Source::Affine,
                prior,
                rules.node,
            );
        }
    }
    let unreadable = match scope {
        Scope::Affine => return Err(Shortfall::NeedFullView),
        Scope::Full { unreadable } => unreadable,
    };

    // 2. Claim a block: the lowest one of the first pool that has one, so a node's
    // blocks stay compact and contention shows up as a CAS conflict, not a duplicate.
    let may_claim = rules.may_claim(blocks, family);
    if may_claim {
        for pool in &pools {
            for cidr in candidate_blocks(pool, &ranges) {
                if unreadable.contains(&cidr) {
                    continue;
                }
                let candidate = match blocks.get(&cidr) {
                    None => Block::new(cidr, None, rules.now),
                    Some(b) if b.affinity.is_none() => b.clone(),
                    Some(_) => continue,
                };
                let Some(ordinal) = free_ordinal(&candidate, pool, &ranges) else {
                    continue;
                };
                let prior = blocks.get(&cidr).map(Prior::of);
                let mut claimed = candidate;
                claimed.affinity = Some(rules.node.to_string());
                claimed.claimed = rules.now;
                blocks.insert(cidr, claimed);
                return assign(
                    blocks,
                    cidr,
                    ordinal,
                    handle,
                    Source::Claimed,
                    prior,
                    rules.node,
                );
            }
        }
    }

    // 3. Borrow from a block someone else holds (or nobody holds, when claiming is
    // not allowed).
    if !rules.strict_affinity {
        for pool in &pools {
            let found = first_free(blocks, pool, &ranges, rules.contended, |b| {
                !b.is_affine_to(rules.node)
            });
            if let Some((cidr, ordinal)) = found {
                let prior = blocks.get(&cidr).map(Prior::of);
                return assign(
                    blocks,
                    cidr,
                    ordinal,
                    handle,
                    Source::Borrowed,
                    prior,
                    rules.node,
                );
            }
        }
    }

    let held = held_blocks(blocks, rules.node, family);
    let max = rules
        .max_blocks_per_node
        .map_or_else(String::new, |m| m.to_string());
    if !ranges.is_empty() {
        let why = match (may_claim, rules.strict_affinity) {
            (true, false) => {
                return Err(Shortfall::Exhausted(format!(
                    "no free address in {range_list}"
                )));
            }
            (false, true) => format!(
                "the node's blocks there are full, it may hold no more \
             (max_blocks_per_node={max}), and strict_affinity forbids borrowing"
            ),
            (false, false) => format!(
                "the node's blocks there are full, it may hold no more \
             (max_blocks_per_node={max}), and no other block there has a free address"
            ),
            (true, true) => "the node's blocks there are full, every other block there \
             is claimed, and strict_affinity forbids borrowing"
                .to_string(),
        };
        return Err(Shortfall::Exhausted(format!(
            "no free address in {range_list} this node may use: {why}"
        )));
    }
    Err(Shortfall::Exhausted(
        match (may_claim, rules.strict_affinity) {
            (false, true) => format!(
                "the node's {held} blocks are full, it may hold no more \
             (max_blocks_per_node={max}), and strict_affinity forbids borrowing"
            ),
            (false, false) => format!(
                "the node's {held} blocks are full, it may hold no more \
             (max_blocks_per_node={max}), and no other block of pools {pool_list} has a \
             free address"
            ),
            (true, true) => format!(
                "the node's {held} blocks are full, every block of pools {pool_list} is \
             claimed, and strict_affinity forbids borrowing"
            ),
            (true, false) => format!("every address of pools {pool_list} is allocated"),
        },
    ))
}

/// One dynamic address per family in `families` (inside `within`, see [`dynamic`]), all
/// recorded in `blocks`, or none: on a shortfall `blocks` is as before, and the error
/// says which family fell short.
pub fn pick_dynamic_all(
    families: &[Family],
    within: &[IpNet],
    pools: &[Pool],
    blocks: &mut BTreeMap<IpNet, Block>,
    rules: Rules<'_>,
    scope: Scope<'_>,
    handle: &str,
) -> Result<Picked, (Family, Shortfall)> {
    let mut picked = Picked::default();
    for &family in families {
        match dynamic(family, within, pools, blocks, rules, scope, handle) {
            Ok(p) => picked.push(p),
            Err(s) => {
                picked.take_back(blocks);
                return Err((family, s));
            }
        }
    }
    Ok(picked)
}

/// Every static address of `ips` recorded in `blocks` (see [`pick_static`]), or none:
/// on the first that cannot be had, `blocks` is as before and the error names it.
pub fn pick_static_all(
    pools: &[Pool],
    blocks: &mut BTreeMap<IpNet, Block>,
    rules: Rules<'_>,
    ips: &[IpAddr],
    handle: &str,
) -> Result<Picked, (IpAddr, String)> {
    let mut picked = Picked::default();
    for &ip in ips {
        match static_ip(pools, blocks, rules, ip, handle) {
            Ok(p) => picked.push(p),
            Err(reason) => {
                picked.take_back(blocks);
                return Err((ip, reason));
            }
        }
    }
    Ok(picked)
}

/// The pool a static address may come from, or why it may not.
pub fn locate_static(pools: &[Pool], ip: IpAddr) -> Result<&Pool, String> {
    let pool = pool_of(pools, ip).ok_or_else(|| "outside every pool".to_string())?;
    if pool.is_reserved(ip) {
        return Err(format!("reserved: an edge address of pool {}", pool.cidr));
    }
    if pool.disabled {
        return Err(format!(
            "pool {} is disabled: it hands out no new address",
            pool.cidr
        ));
    }
    Ok(pool)
}

/// Records static `ip` for `handle` in `blocks`. `blocks` must hold the block of `ip`
/// if the store has it: a missing entry means the block is unclaimed, and this claims
/// it for the node (or, at `max_blocks_per_node`, creates it without affinity).
pub fn pick_static(
    pools: &[Pool],
    blocks: &mut BTreeMap<IpNet, Block>,
    rules: Rules<'_>,
    ip: IpAddr,
    handle: &str,
) -> Result<Pick, String> {
    static_ip(pools, blocks, rules, ip, handle).map(|(pick, _)| pick)
}

fn static_ip(
    pools: &[Pool],
    blocks: &mut BTreeMap<IpNet, Block>,
    rules: Rules<'_>,
    ip: IpAddr,
    handle: &str,
) -> Result<(Pick, Undo), String> {
    let pool = locate_static(pools, ip)?;
    let cidr = pool
        .block_of(ip)
        .ok_or_else(|| format!("no block of pool {} holds it", pool.cidr))?;
    let prior = blocks.get(&cidr).map(Prior::of);
    let family = pool.family();
    let may_claim = rules.may_claim(blocks, family);
    let max = rules.max_blocks_per_node.unwrap_or(0);

    let source = match blocks.get_mut(&cidr) {
        None if may_claim => {
            blocks.insert(
                cidr,
                Block::new(cidr, Some(rules.node.to_string()), rules.now),
            );
            Source::Claimed
        }
        None if rules.strict_affinity => {
            return Err(format!(
                "its block {cidr} is unclaimed and node {} already holds \
                 max_blocks_per_node={max} {family} blocks",
                rules.node
            ));
        }
        None => {
            blocks.insert(cidr, Block::new(cidr, None, rules.now));
            Source::Borrowed
        }
        Some(block) => {
            if let Some(holder) = block.holder(ip) {
                return Err(format!("taken by handle {holder}"));
            }
            match block.affinity.as_deref() {
                Some(n) if n == rules.node => Source::Affine,
                Some(other) if rules.strict_affinity => {
                    return Err(format!(
                        "its block {cidr} is affine to node {other} and strict_affinity is on"
                    ));
                }
                Some(_) => Source::Borrowed,
                None if may_claim => {
                    block.affinity = Some(rules.node.to_string());
                    block.claimed = rules.now;
                    Source::Claimed
                }
                None => Source::Borrowed,
            }
        }
    };
    let ordinal = blocks
        .get(&cidr)
        .and_then(|b| b.ordinal(ip))
        .ok_or_else(|| format!("not inside its block {cidr}"))?;
    assign(blocks, cidr, ordinal, handle, source, prior, rules.node)
        .map_err(|_| format!("block {cidr} vanished"))
}

/// Records `ordinal` of `cidr` for `handle` on `node` (a borrowed address also as
/// lent to `node`). `prior` is the block as it was before this pick changed anything
/// in it (`None`: the pick added the block).
fn assign(
    blocks: &mut BTreeMap<IpNet, Block>,
    cidr: IpNet,
    ordinal: u32,
    handle: &str,
    source: Source,
    prior: Option<Prior>,
    node: &str,
) -> Result<(Pick, Undo), Shortfall> {
    let block = blocks
        .get_mut(&cidr)
        .ok_or_else(|| Shortfall::Exhausted(format!("block {cidr} vanished")))?;
    let ip = block
        .ip(ordinal)
        .ok_or_else(|| Shortfall::Exhausted(format!("ordinal {ordinal} outside {cidr}")))?;
    block.assign(ordinal, handle);
    if source == Source::Borrowed {
        block.lend(ordinal, node);
    }
    Ok((
        Pick {
            block: cidr,
            ip,
            source,
        },
        Undo {
            block: cidr,
            ordinal,
            prior,
        },
    ))
}

/// The block cidr `ip` would live in, from the pools or, for an address outside every
/// pool (a pool removed from the config), from the family's block size.
pub fn block_cidr_of(
    pools: &[Pool],
    block_prefix: impl Fn(Family) -> u8,
    ip: IpAddr,
) -> Option<IpNet> {
    match pool_of(pools, ip) {
        Some(pool) => pool.block_of(ip),
        None => IpNet::new(ip, block_prefix(Family::of(&ip)))
            .ok()
            .map(|n| n.trunc()),
    }
}

/// Whether `block` belongs to a configured pool.
pub fn in_pools(pools: &[Pool], block: &IpNet) -> bool {
    pool_of_block(pools, block).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "n1";

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pools(specs: &[(&str, u8)]) -> Vec<Pool> {
        specs
            .iter()
            .map(|(c, p)| Pool {
                cidr: net(c),
                block_prefix: *p,
                disabled: false,
            })
            .collect()
    }

    static NONE_CONTENDED: BTreeSet<IpNet> = BTreeSet::new();

    fn rules(max: Option<u32>, strict: bool) -> Rules<'static> {
        Rules {
            contended: &NONE_CONTENDED,
            node: NODE,
            max_blocks_per_node: max,
            strict_affinity: strict,
            now: 100,
        }
    }

    fn full(
        family: Family,
        pools: &[Pool],
        blocks: &mut BTreeMap<IpNet, Block>,
        r: Rules<'_>,
    ) -> Result<Pick, Shortfall> {
        let none = BTreeSet::new();
        pick_dynamic(
            family,
            &[],
            pools,
            blocks,
            r,
            Scope::Full { unreadable: &none },
            "h",
        )
    }

    #[test]
    fn free_ordinal_skips_pool_edges_and_taken() {
        let pool = pools(&[("10.0.0.0/30", 30)])[0];
        let mut b = Block::new(net("10.0.0.0/30"), None, 0);
        assert_eq!(
            free_ordinal(&b, &pool, &[]),
            Some(1),
            "network address skipped"
        );
        b.assign(1, "a");
        assert_eq!(free_ordinal(&b, &pool, &[]), Some(2));
        b.assign(2, "b");
        assert_eq!(free_ordinal(&b, &pool, &[]), None, "broadcast skipped");
    }

    #[test]
    fn free_ordinal_delays_reuse() {
        let pool = pools(&[("10.0.0.0/24", 26)])[0];
        let mut b = Block::new(net("10.0.0.64/26"), None, 0);
        b.assign(0, "a");
        b.assign(1, "b");
        b.allocations.remove(&0);
        assert_eq!(
            free_ordinal(&b, &pool, &[]),
            Some(2),
            "released ordinal 0 not reused yet"
        );
        b.next_ordinal = 63;
        b.assign(63, "c");
        assert_eq!(free_ordinal(&b, &pool, &[]), Some(0), "wraps around");
    }

    #[test]
    fn affine_only_scope_asks_for_full_view() {
        let p = pools(&[("10.0.0.0/24", 26)]);
        let mut blocks = BTreeMap::new();
        let got = pick_dynamic(
            Family::V4,
            &[],
            &p,
            &mut blocks,
            rules(None, false),
            Scope::Affine,
            "h",
        );
        assert_eq!(got, Err(Shortfall::NeedFullView));
    }

    #[test]
    fn claims_first_block_then_uses_it() {
        let p = pools(&[("10.0.0.0/24", 26)]);
        let mut blocks = BTreeMap::new();
        let first = full(Family::V4, &p, &mut blocks, rules(None, false)).unwrap();
        assert_eq!(first.source, Source::Claimed);
        assert_eq!(first.ip, ip("10.0.0.1"));
        assert_eq!(blocks[&net("10.0.0.0/26")].affinity.as_deref(), Some(NODE));
        assert_eq!(blocks[&net("10.0.0.0/26")].claimed, 100);
        let second = pick_dynamic(
            Family::V4,
            &[],
            &p,
            &mut blocks,
            rules(None, false),
            Scope::Affine,
            "h2",
        )
        .unwrap();
        assert_eq!((second.source, second.ip), (Source::Affine, ip("10.0.0.2")));
    }

    #[test]
    fn claims_past_other_nodes_blocks() {
        let p = pools(&[("10.0.0.0/24", 26)]);
        let mut blocks = BTreeMap::new();
        for c in ["10.0.0.0/26", "10.0.0.64/26"] {
            blocks.insert(net(c), Block::new(net(c), Some("other".into()), 0));
        }
        let got = full(Family::V4, &p, &mut blocks, rules(None, false)).unwrap();
        assert_eq!(
            (got.block, got.source),
            (net("10.0.0.128/26"), Source::Claimed)
        );
    }

    #[test]
    fn claims_an_unaffine_block() {
        let p = pools(&[("10.0.0.0/24", 26)]);
        let mut blocks = BTreeMap::new();
        blocks.insert(net("10.0.0.0/26"), Block::new(net("10.0.0.0/26"), None, 0));
        let got = full(Family::V4, &p, &mut blocks, rules(None, false)).unwrap();
        assert_eq!(
            (got.block, got.source),
            (net("10.0.0.0/26"), Source::Claimed)
        );
        assert_eq!(blocks[&net("10.0.0.0/26")].affinity.as_deref(), Some(NODE));
    }

    #[test]
    fn skips_unreadable_blocks() {
        let p = pools(&[("10.0.0.0/24", 26)]);
        let mut blocks = BTreeMap::new();
        let bad = BTreeSet::from([net("10.0.0.0/26")]);
        let got = pick_dynamic(
            Family::V4,
            &[],
            &p,
            &mut blocks,
            rules(None, false),
            Scope::Full { unreadable: &bad },
            "h",
        )
        .unwrap();
        assert_eq!(got.block, net("10.0.0.64/26"));
    }

    #[test]
    fn borrows_at_max_blocks_unless_strict() {
        let p = pools(&[("10.0.0.0/28", 30)]);
        let mut blocks = BTreeMap::new();
        let mut mine = Block::new(net("10.0.0.4/30"), Some(NODE.into()), 0);
        for o in 0..4 {
            mine.assign(o, "x");
        }
        blocks.insert(mine.cidr, mine);
        blocks.insert(
            net("10.0.0.8/30"),
            Block::new(net("10.0.0.8/30"), Some("other".into()), 0),
        );
        let mut after = blocks.clone();
        let got = full(Family::V4, &p, &mut after, rules(Some(1), false)).unwrap();
        assert_eq!(
            (got.block, got.source),
            (net("10.0.0.8/30"), Source::Borrowed)
        );
        // The lender's block says who holds the address, for the fabric's host route.
        let lender = &after[&net("10.0.0.8/30")];
        assert_eq!(lender.lent().collect::<Vec<_>>(), [(got.ip, NODE)]);

        match full(Family::V4, &p, &mut blocks, rules(Some(1), true)) {
            Err(Shortfall::Exhausted(m)) => {
                assert!(
                    m.contains("max_blocks_per_node=1") && m.contains("strict_affinity"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn strict_affinity_still_claims_free_blocks() {
        let p = pools(&[("10.0.0.0/28", 30)]);
        let mut blocks = BTreeMap::new();
        blocks.insert(
            net("10.0.0.0/30"),
            Block::new(net("10.0.0.0/30"), Some("other".into()), 0),
        );
        let got = full(Family::V4, &p, &mut blocks, rules(None, true)).unwrap();
        assert_eq!(
            (got.block, got.source),
            (net("10.0.0.4/30"), Source::Claimed)
        );
    }

    #[test]
    fn contended_blocks_come_last() {
        let p = pools(&[("10.0.0.0/24", 26)]);
        let mut blocks = BTreeMap::new();
        for c in ["10.0.0.0/26", "10.0.0.64/26"] {
            blocks.insert(net(c), Block::new(net(c), Some("other".into()), 0));
        }
        let hot = BTreeSet::from([net("10.0.0.0/26")]);
        let r = Rules {
            contended: &hot,
            ..rules(Some(0), false)
        };
        let got = full(Family::V4, &p, &mut blocks, r).unwrap();
        assert_eq!(
            (got.block, got.source),
            (net("10.0.0.64/26"), Source::Borrowed)
        );
        let hot = BTreeSet::from([net("10.0.0.0/26"), net("10.0.0.64/26")]);
        let r = Rules {
            contended: &hot,
            ..rules(Some(0), false)
        };
        let got = full(Family::V4, &p, &mut blocks, r).unwrap();
        assert_eq!(
            got.block,
            net("10.0.0.0/26"),
            "still used when nothing else has room"
        );
    }

    #[test]
    fn exhausts_tiny_pool_exactly() {
        // /28 in /30 blocks: 16 addresses, the pool's first and last reserved.
        let p = pools(&[("10.0.0.0/28", 30)]);
        let mut blocks = BTreeMap::new();
        let mut got = BTreeSet::new();
        while let Ok(pick) = full(Family::V4, &p, &mut blocks, rules(None, false)) {
            assert!(got.insert(pick.ip), "duplicate {}", pick.ip);
        }
        assert_eq!(got.len(), 14);
        assert!(!got.contains(&ip("10.0.0.0")) && !got.contains(&ip("10.0.0.15")));
        match full(Family::V4, &p, &mut blocks, rules(None, false)) {
            Err(Shortfall::Exhausted(m)) => assert!(m.contains("10.0.0.0/28"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prefers_pools_in_config_order() {
        let p = pools(&[("10.1.0.0/24", 26), ("10.0.0.0/24", 26)]);
        let mut blocks = BTreeMap::new();
        let got = full(Family::V4, &p, &mut blocks, rules(None, false)).unwrap();
        assert_eq!(got.block, net("10.1.0.0/26"));
    }

    #[test]
    fn a_disabled_pool_hands_out_nothing_new_not_even_from_own_blocks() {
        let mut p = pools(&[("10.0.0.0/24", 26), ("10.1.0.0/24", 26)]);
        p[0].disabled = true;
        let mut blocks = BTreeMap::new();
        let mut mine = Block::new(net("10.0.0.0/26"), Some(NODE.into()), 0);
        mine.assign(1, "old");
        blocks.insert(mine.cidr, mine);
        let got = full(Family::V4, &p, &mut blocks, rules(None, false)).unwrap();
        assert_eq!(
            (got.block, got.source),
            (net("10.1.0.0/26"), Source::Claimed)
        );
        let e = pick_static(&p, &mut blocks, rules(None, false), ip("10.0.0.9"), "h");
        assert!(e.unwrap_err().contains("pool 10.0.0.0/24 is disabled"));
        p[1].disabled = true;
        match full(Family::V4, &p, &mut blocks, rules(None, false)) {
            Err(Shortfall::Exhausted(m)) => assert!(m.contains("no enabled IPv4 pool"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_pool_of_family() {
        let p = pools(&[("10.0.0.0/24", 26)]);
        let mut blocks = BTreeMap::new();
        assert!(matches!(
            full(Family::V6, &p, &mut blocks, rules(None, false)),
            Err(Shortfall::Exhausted(_))
        ));
    }

    #[test]
    fn static_lookup() {
        let p = pools(&[("10.0.0.0/24", 26), ("fd00::/120", 122)]);
        assert!(locate_static(&p, ip("10.0.0.5")).is_ok());
        assert!(
            locate_static(&p, ip("10.0.0.0"))
                .unwrap_err()
                .contains("reserved")
        );
        assert!(
            locate_static(&p, ip("10.0.0.255"))
                .unwrap_err()
                .contains("reserved")
        );
        assert!(
            locate_static(&p, ip("fd00::"))
                .unwrap_err()
                .contains("reserved")
        );
        assert!(locate_static(&p, ip("fd00::ff")).is_ok());
        assert_eq!(
            locate_static(&p, ip("192.168.0.1")).unwrap_err(),
            "outside every pool"
        );
    }

    #[test]
    fn static_claims_uses_and_refuses() {
        let p = pools(&[("10.0.0.0/24", 26)]);
        let mut blocks = BTreeMap::new();
        let got = pick_static(&p, &mut blocks, rules(None, false), ip("10.0.0.70"), "h").unwrap();
        assert_eq!(
            (got.block, got.source),
            (net("10.0.0.64/26"), Source::Claimed)
        );
        let again = pick_static(&p, &mut blocks, rules(None, false), ip("10.0.0.70"), "h2");
        assert_eq!(again.unwrap_err(), "taken by handle h");
        let got = pick_static(&p, &mut blocks, rules(None, false), ip("10.0.0.71"), "h2").unwrap();
        assert_eq!(got.source, Source::Affine);
    }

    #[test]
    fn static_respects_strict_affinity_and_max_blocks() {
        let p = pools(&[("10.0.0.0/24", 26)]);
        let mut blocks = BTreeMap::new();
        blocks.insert(
            net("10.0.0.0/26"),
            Block::new(net("10.0.0.0/26"), Some("other".into()), 0),
        );
        let e = pick_static(
            &p,
            &mut blocks.clone(),
            rules(None, true),
            ip("10.0.0.5"),
            "h",
        );
        assert!(e.unwrap_err().contains("affine to node other"));
        let got = pick_static(
            &p,
            &mut blocks.clone(),
            rules(None, false),
            ip("10.0.0.5"),
            "h",
        );
        assert_eq!(got.unwrap().source, Source::Borrowed);

        blocks.insert(
            net("10.0.0.64/26"),
            Block::new(net("10.0.0.64/26"), Some(NODE.into()), 0),
        );
        let e = pick_static(
            &p,
            &mut blocks.clone(),
            rules(Some(1), true),
            ip("10.0.0.130"),
            "h",
        );
        assert!(e.unwrap_err().contains("unclaimed"));
        let got = pick_static(
            &p,
            &mut blocks,
            rules(Some(1), false),
            ip("10.0.0.130"),
            "h",
        )
        .unwrap();
        assert_eq!(got.source, Source::Borrowed);
        assert_eq!(blocks[&net("10.0.0.128/26")].affinity, None);
    }

    #[test]
    fn a_request_that_falls_short_leaves_no_trace() {
        // IPv6 has three usable addresses (only the pool's first is reserved); all are
        // taken.
        let p = pools(&[("10.0.0.0/24", 26), ("fd00::/126", 126)]);
        let none = BTreeSet::new();
        let scope = Scope::Full { unreadable: &none };
        let mut blocks = BTreeMap::new();
        blocks.insert(net("10.0.0.0/26"), Block::new(net("10.0.0.0/26"), None, 7));
        for h in ["a", "b", "c"] {
            full(Family::V6, &p, &mut blocks, rules(None, false)).unwrap_or_else(|e| {
                panic!("{h}: {e:?}");
            });
        }
        let before = blocks.clone();
        // The IPv4 pick claims the unaffine block, then IPv6 falls short.
        let got = pick_dynamic_all(
            &[Family::V4, Family::V6],
            &[],
            &p,
            &mut blocks,
            rules(None, false),
            scope,
            "h",
        );
        assert!(matches!(got, Err((Family::V6, Shortfall::Exhausted(_)))));
        assert_eq!(blocks, before);

        // Static: the second address is taken after the first claimed a new block.
        let got = pick_static_all(
            &p,
            &mut blocks,
            rules(None, false),
            &[ip("10.0.0.70"), ip("fd00::1")],
            "h",
        );
        assert_eq!(got.unwrap_err().0, ip("fd00::1"));
        assert_eq!(blocks, before);

        // Taken back after success too (a batch leaving a request for later).
        let picked = pick_static_all(
            &p,
            &mut blocks,
            rules(None, false),
            &[ip("10.0.0.70"), ip("10.0.0.71"), ip("10.0.0.5")],
            "h",
        )
        .unwrap();
        assert_eq!(picked.ips().len(), 3);
        assert_ne!(blocks, before);
        picked.take_back(&mut blocks);
        assert_eq!(blocks, before);
    }

    /// A dynamic address of `family` inside `within`, on every block.
    fn within(
        family: Family,
        within: &[&str],
        pools: &[Pool],
        blocks: &mut BTreeMap<IpNet, Block>,
        r: Rules<'_>,
    ) -> Result<Pick, Shortfall> {
        let none = BTreeSet::new();
        let ranges: Vec<IpNet> = within.iter().map(|s| net(s)).collect();
        pick_dynamic(
            family,
            &ranges,
            pools,
            blocks,
            r,
            Scope::Full { unreadable: &none },
            "h",
        )
    }

    fn exhausted(got: Result<Pick, Shortfall>) -> String {
        match got {
            Err(Shortfall::Exhausted(m)) => m,
            other => panic!("not exhausted: {other:?}"),
        }
    }

    #[test]
    fn within_a_range_smaller_than_a_block() {
        let p = pools(&[("10.0.0.0/24", 26)]);
        let mut blocks = BTreeMap::new();
        // This node's first block has room, but lies outside the range.
        let mut mine = Block::new(net("10.0.0.0/26"), Some(NODE.into()), 0);
        mine.assign(1, "old");
        blocks.insert(mine.cidr, mine);
        let r = rules(None, false);
        let first = within(Family::V4, &["10.0.0.70/31"], &p, &mut blocks, r).unwrap();
        assert_eq!(
            (first.ip, first.block, first.source),
            (ip("10.0.0.70"), net("10.0.0.64/26"), Source::Claimed)
        );
        // Now affine, and its search start is past .70: still only the range.
        let second = within(Family::V4, &["10.0.0.70/31"], &p, &mut blocks, r).unwrap();
        assert_eq!(
            (second.ip, second.source),
            (ip("10.0.0.71"), Source::Affine)
        );
        let m = exhausted(within(Family::V4, &["10.0.0.70/31"], &p, &mut blocks, r));
        assert_eq!(m, "no free address in 10.0.0.70/31");
        // The block's other ordinals and the node's other block are untouched.
        assert_eq!(blocks[&net("10.0.0.64/26")].used(), 2);
        assert_eq!(blocks[&net("10.0.0.0/26")].used(), 1);
        // Without a range the rest of the block is there as before.
        assert_eq!(
            full(Family::V4, &p, &mut blocks, r).unwrap().ip,
            ip("10.0.0.2")
        );
    }

    #[test]
    fn within_a_range_keeps_the_pool_edges_reserved() {
        let p = pools(&[("10.0.0.0/24", 26)]);
        let mut blocks = BTreeMap::new();
        let r = rules(None, false);
        let mut got = Vec::new();
        while let Ok(pick) = within(Family::V4, &["10.0.0.0/30"], &p, &mut blocks, r) {
            got.push(pick.ip);
        }
        assert_eq!(got, [ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]);
        let mut got = Vec::new();
        while let Ok(pick) = within(Family::V4, &["10.0.0.252/30"], &p, &mut blocks, r) {
            got.push(pick.ip);
        }
        assert_eq!(got, [ip("10.0.0.252"), ip("10.0.0.253"), ip("10.0.0.254")]);
    }

    #[test]
    fn within_a_range_spanning_blocks_fills_exactly_those() {
        // /28 blocks; the range covers two blocks whole and half of a third.
        let p = pools(&[("10.0.0.0/24", 28)]);
        let mut blocks = BTreeMap::new();
        let ranges = ["10.0.0.32/27", "10.0.0.72/29"];
        let r = rules(None, false);
        let mut got = BTreeSet::new();
        while let Ok(pick) = within(Family::V4, &ranges, &p, &mut blocks, r) {
            assert!(
                ranges.iter().any(|x| net(x).contains(&pick.ip)),
                "{} outside the ranges",
                pick.ip
            );
            assert!(got.insert(pick.ip), "duplicate {}", pick.ip);
        }
        assert_eq!(got.len(), 32 + 8);
        let claimed: Vec<IpNet> = blocks.keys().copied().collect();
        assert_eq!(
            claimed,
            [
                net("10.0.0.32/28"),
                net("10.0.0.48/28"),
                net("10.0.0.64/28")
            ]
        );
        assert_eq!(blocks[&net("10.0.0.64/28")].used(), 8);
        let m = exhausted(within(Family::V4, &ranges, &p, &mut blocks, r));
        assert_eq!(m, "no free address in 10.0.0.32/27, 10.0.0.72/29");
    }

    #[test]
    fn within_borrows_in_the_range_as_the_rules_allow() {
        let p = pools(&[("10.0.0.0/24", 26)]);
        let mut blocks = BTreeMap::new();
        // The node holds its one block (outside the range); another node holds the
        // range's block.
        blocks.insert(
            net("10.0.0.0/26"),
            Block::new(net("10.0.0.0/26"), Some(NODE.into()), 0),
        );
        blocks.insert(
            net("10.0.0.64/26"),
            Block::new(net("10.0.0.64/26"), Some("other".into()), 0),
        );
        let got = within(
            Family::V4,
            &["10.0.0.96/30"],
            &p,
            &mut blocks.clone(),
            rules(Some(1), false),
        )
        .unwrap();
        assert_eq!((got.ip, got.source), (ip("10.0.0.96"), Source::Borrowed));

        let m = exhausted(within(
            Family::V4,
            &["10.0.0.96/30"],
            &p,
            &mut blocks.clone(),
            rules(None, true),
        ));
        assert!(
            m.starts_with("no free address in 10.0.0.96/30 this node may use")
                && m.contains("strict_affinity"),
            "{m}"
        );
        // At max_blocks_per_node, a range in unclaimed space has nothing to borrow.
        let m = exhausted(within(
            Family::V4,
            &["10.0.0.128/30"],
            &p,
            &mut blocks,
            rules(Some(1), false),
        ));
        assert!(
            m.starts_with("no free address in 10.0.0.128/30 this node may use")
                && m.contains("max_blocks_per_node=1"),
            "{m}"
        );
    }

    #[test]
    fn within_a_range_outside_every_enabled_pool_is_refused() {
        let mut p = pools(&[("10.0.0.0/24", 26), ("10.1.0.0/24", 26)]);
        p[1].disabled = true;
        let r = rules(None, false);
        let mut blocks = BTreeMap::new();
        for range in ["192.168.0.0/24", "10.1.0.0/25"] {
            let m = exhausted(within(Family::V4, &[range], &p, &mut blocks, r));
            assert!(
                m.contains(range) && m.contains("overlaps no enabled"),
                "{m}"
            );
        }
        // A range of the other family only: nothing to allocate IPv4 from.
        let m = exhausted(within(Family::V4, &["fd00::/120"], &p, &mut blocks, r));
        assert!(m.contains("fd00::/120") && m.contains("IPv4"), "{m}");
        assert!(blocks.is_empty());
    }

    #[test]
    fn only_the_families_asked_for_on_dual_stack() {
        let p = pools(&[("10.0.0.0/24", 26), ("fd00::/120", 122)]);
        let none = BTreeSet::new();
        let scope = Scope::Full { unreadable: &none };
        let mut blocks = BTreeMap::new();
        let r = rules(None, false);
        let got = pick_dynamic_all(&[Family::V6], &[], &p, &mut blocks, r, scope, "h").unwrap();
        assert_eq!(got.ips(), [ip("fd00::1")]);
        assert_eq!(
            blocks.keys().copied().collect::<Vec<_>>(),
            [net("fd00::/122")]
        );
        // A range of each family: each family's address from its own range.
        let ranges = [net("10.0.0.200/29"), net("fd00::80/125")];
        let got = pick_dynamic_all(
            &[Family::V4, Family::V6],
            &ranges,
            &p,
            &mut blocks,
            r,
            scope,
            "h2",
        )
        .unwrap();
        assert_eq!(got.ips(), [ip("10.0.0.200"), ip("fd00::80")]);
    }

    #[test]
    fn block_cidr_outside_pools_uses_family_prefix() {
        let p = pools(&[("10.0.0.0/24", 26)]);
        let prefix = |f: Family| if f == Family::V4 { 26 } else { 122 };
        assert_eq!(
            block_cidr_of(&p, prefix, ip("10.0.0.70")),
            Some(net("10.0.0.64/26"))
        );
        assert_eq!(
            block_cidr_of(&p, prefix, ip("10.9.0.70")),
            Some(net("10.9.0.64/26"))
        );
        assert!(in_pools(&p, &net("10.0.0.64/26")));
        assert!(!in_pools(&p, &net("10.9.0.64/26")));
    }
}
