//! Pools that go away under allocations. A pool removed from the flags, or shrunk,
//! would leave this node's containers holding addresses that no pool covers: IPAM would
//! still release them, but `ipam check` and `ipam show` would count them nowhere and the
//! operator would not learn that the pool was still in use.
//!
//! So at start the agent refuses to run while any of *its own* allocations lies outside
//! every configured pool, enabled or disabled, naming the pool and the allocations and
//! saying how to drain it: mark it disabled (`--disabled-pool`, no new addresses,
//! existing ones kept, as Calico's `disabled: true`), wait for the DELs, then remove it.
//! Other nodes' allocations are theirs to refuse at their own start (their agents may
//! still be running with the old pools during a rolling change).
//!
//! To name the pool, the pools a node started with are recorded under
//! `ipam/served/<node>` once the check passes. Without a record (data of an older
//! agent) the message names the blocks instead.
//!
//! Once the check passes, this node's *empty* blocks outside every pool are deleted
//! (each compared against its revision): they are what a drained and removed pool
//! leaves, and the fabric would keep routing them.
//!
//! The tunnel handle is not a container's: the tunnel moves to an enabled pool at start
//! (see `tunnel`), so it never holds a pool back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::block::Block;
use super::pool::{Pool, pool_covering};
use super::{AllBlocks, Ipam, IpamError, TUNNEL_HANDLE_PREFIX, encode, keys};
use crate::store::{Compare, Txn, TxnOp};

/// The stored form of `ipam/served/<node>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    /// Every pool the node started with, enabled and disabled.
    pub pools: Vec<IpNet>,
}

/// One of this node's allocations outside every configured pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stranded {
    pub ip: IpAddr,
    pub handle: String,
    pub block: IpNet,
}

/// The node a block's `ordinal` is held by: its borrower, else the block's affinity.
fn holder_node(b: &Block, ordinal: u32) -> Option<&str> {
    b.borrowed
        .get(&ordinal)
        .map(String::as_str)
        .or(b.affinity.as_deref())
}

/// `node`'s container allocations in blocks no pool of `pools` covers, in address order.
pub fn stranded(blocks: &BTreeMap<IpNet, Block>, pools: &[Pool], node: &str) -> Vec<Stranded> {
    let mut out = Vec::new();
    for b in blocks
        .values()
        .filter(|b| pool_covering(pools, &b.cidr).is_none())
    {
        for (&ordinal, handle) in &b.allocations {
            if handle.starts_with(TUNNEL_HANDLE_PREFIX) || holder_node(b, ordinal) != Some(node) {
                continue;
            }
            if let Some(ip) = b.ip(ordinal) {
                out.push(Stranded {
                    ip,
                    handle: handle.clone(),
                    block: b.cidr,
                });
            }
        }
    }
    out
}

/// Blocks affine to `node`, outside every pool, that hold nothing.
pub fn empty_leftovers<'a>(
    blocks: &'a BTreeMap<IpNet, Block>,
    pools: &'a [Pool],
    node: &'a str,
) -> impl Iterator<Item = &'a Block> {
    blocks.values().filter(move |b| {
        b.is_affine_to(node) && b.allocations.is_empty() && pool_covering(pools, &b.cidr).is_none()
    })
}

/// Why the agent refuses to start: per pool it served before (or, unrecorded, per
/// block), the allocations left there and how to drain it.
pub fn refusal(stranded: &[Stranded], served_before: &[IpNet]) -> String {
    // Group by the pool that held them, as recorded; else by block.
    let mut groups: BTreeMap<(bool, IpNet), Vec<&Stranded>> = BTreeMap::new();
    for s in stranded {
        let key = match served_before.iter().find(|p| p.contains(&s.ip)) {
            Some(pool) => (true, *pool),
            None => (false, s.block),
        };
        groups.entry(key).or_default().push(s);
    }
    let mut msg = String::new();
    for ((recorded, net), held) in &groups {
        let what = if *recorded {
            format!(
                "pool {net}, which this node served before, is no longer configured (removed or shrunk)"
            )
        } else {
            format!(
                "block {net} lies outside every configured pool (its pool was removed or shrunk)"
            )
        };
        let shown: Vec<String> = held
            .iter()
            .take(5)
            .map(|s| format!("{} ({})", s.ip, s.handle))
            .collect();
        let more = if held.len() > 5 {
            format!(", and {} more", held.len() - 5)
        } else {
            String::new()
        };
        let _ = write!(
            msg,
            "{what}, but {} of this node's allocations are in it: {}{more}; ",
            held.len(),
            shown.join(", ")
        );
    }
    let drain = match groups.keys().find(|(recorded, _)| *recorded) {
        Some((_, pool)) => format!("--disabled-pool {pool}"),
        None => "--disabled-pool <its CIDR>".to_string(),
    };
    let _ = write!(
        msg,
        "to remove a pool, drain it: start with {drain} (it hands out no new address and \
         keeps these), wait until its containers are deleted (`netctl ipam show`: USED 0), \
         then drop it"
    );
    msg
}

impl Ipam {
    /// The start-up check of this module, on the blocks read at start: refuses with
    /// [`IpamError::InvalidConfig`] while this node holds addresses outside every pool;
    /// otherwise records the pools and deletes this node's empty leftover blocks
    /// (returns whether it deleted any). A store error fails it too (the caller decides
    /// whether that may wait).
    pub(super) async fn check_served(&self, all: &AllBlocks) -> Result<bool, IpamError> {
        let key = keys::served(&self.node);
        let before: Served = match self.store.get(&key).await? {
            Some(kv) => serde_json::from_slice(&kv.value).unwrap_or_else(|e| {
                warn!(key = %key, error = %e, "IPAM: unreadable record of served pools; ignored");
                Served::default()
            }),
            None => Served::default(),
        };
        let left = stranded(&all.blocks, &self.pools, &self.node);
        if !left.is_empty() {
            return Err(IpamError::InvalidConfig(refusal(&left, &before.pools)));
        }

        let mut deleted = false;
        for b in empty_leftovers(&all.blocks, &self.pools, &self.node) {
            let Some(&rev) = all.revs.get(&b.cidr) else {
                continue;
            };
            let bkey = keys::block(&b.cidr);
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(bkey.clone(), rev)])
                .and_then(vec![TxnOp::Delete { key: bkey }]);
            match self.store.txn(txn).await {
                Ok(r) if r.succeeded => {
                    deleted = true;
                    info!(block = %b.cidr, "IPAM: deleted this node's empty block outside every pool");
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(block = %b.cidr, error = %e, "IPAM: cannot delete a leftover block")
                }
            }
        }

        let now = Served {
            pools: self.pools.iter().map(|p| p.cidr).collect(),
        };
        if now != before {
            self.store.put(&key, encode(&key, &now)?, None).await?;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn pool(cidr: &str, disabled: bool) -> Pool {
        Pool {
            cidr: net(cidr),
            block_prefix: 26,
            disabled,
        }
    }

    fn blocks(list: Vec<Block>) -> BTreeMap<IpNet, Block> {
        list.into_iter().map(|b| (b.cidr, b)).collect()
    }

    #[test]
    fn finds_only_this_nodes_container_allocations_outside_every_pool() {
        let mut gone = Block::new(net("10.1.0.0/26"), Some("n1".into()), 0);
        gone.assign(5, "c1");
        gone.assign(6, "strait-tunnel.n1");
        gone.assign(7, "c2");
        gone.lend(7, "n2");
        let mut other = Block::new(net("10.1.0.64/26"), Some("n2".into()), 0);
        other.assign(1, "c3");
        other.assign(2, "c4");
        other.lend(2, "n1");
        let mut kept = Block::new(net("10.2.0.0/26"), Some("n1".into()), 0);
        kept.assign(1, "c5");
        let mut disabled = Block::new(net("10.3.0.0/26"), Some("n1".into()), 0);
        disabled.assign(1, "c6");
        let all = blocks(vec![gone, other, kept, disabled]);
        let pools = [pool("10.2.0.0/16", false), pool("10.3.0.0/16", true)];
        let got: Vec<(String, String)> = stranded(&all, &pools, "n1")
            .into_iter()
            .map(|s| (s.ip.to_string(), s.handle))
            .collect();
        assert_eq!(
            got,
            [
                ("10.1.0.5".to_string(), "c1".to_string()),
                ("10.1.0.66".to_string(), "c4".to_string())
            ],
            "not the tunnel, not what another node holds, nothing in a configured pool"
        );
    }

    #[test]
    fn a_shrunk_pool_strands_what_lies_beyond_its_new_edge() {
        let mut b = Block::new(net("10.1.5.0/26"), Some("n1".into()), 0);
        b.assign(3, "c1");
        let mut inside = Block::new(net("10.1.0.0/26"), Some("n1".into()), 0);
        inside.assign(3, "c2");
        let all = blocks(vec![b, inside]);
        let left = stranded(&all, &[pool("10.1.0.0/24", false)], "n1");
        assert_eq!(left.len(), 1);
        let m = refusal(&left, &[net("10.1.0.0/16")]);
        assert!(
            m.contains("pool 10.1.0.0/16, which this node served before")
                && m.contains("1 of this node's allocations")
                && m.contains("10.1.5.3 (c1)")
                && m.contains("--disabled-pool 10.1.0.0/16"),
            "{m}"
        );
    }

    #[test]
    fn without_a_record_the_refusal_names_the_blocks() {
        let left: Vec<Stranded> = (1..=7)
            .map(|i| Stranded {
                ip: format!("10.9.0.{i}").parse().unwrap(),
                handle: format!("c{i}"),
                block: net("10.9.0.0/26"),
            })
            .collect();
        let m = refusal(&left, &[]);
        assert!(
            m.contains("block 10.9.0.0/26 lies outside every configured pool")
                && m.contains("7 of this node's allocations")
                && m.contains("10.9.0.5 (c5), and 2 more")
                && m.contains("--disabled-pool <its CIDR>"),
            "{m}"
        );
    }

    #[test]
    fn only_own_empty_blocks_outside_every_pool_are_leftovers() {
        let mine_empty = Block::new(net("10.1.0.0/26"), Some("n1".into()), 0);
        let theirs_empty = Block::new(net("10.1.0.64/26"), Some("n2".into()), 0);
        let mut mine_used = Block::new(net("10.1.0.128/26"), Some("n1".into()), 0);
        mine_used.assign(1, "strait-tunnel.n1");
        let mine_in_pool = Block::new(net("10.2.0.0/26"), Some("n1".into()), 0);
        let all = blocks(vec![mine_empty, theirs_empty, mine_used, mine_in_pool]);
        let pools = [pool("10.2.0.0/16", false)];
        let got: Vec<IpNet> = empty_leftovers(&all, &pools, "n1")
            .map(|b| b.cidr)
            .collect();
        assert_eq!(got, [net("10.1.0.0/26")]);
    }
}
