//! A block: a fixed slice of a pool, claimed by one node (its affinity), recording which
//! handle holds each of its addresses. One block is one store key, so every allocation
//! in it is one compare-and-swap on that key's `mod_revision`.
//!
//! Addresses inside a block are named by their ordinal: the offset from the block's
//! first address.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use strait_api::Family;

use super::config::MAX_BLOCK_HOST_BITS;
use super::pool::{from_u128, to_u128};

/// The stored form of `ipam/blocks/<cidr>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub cidr: IpNet,
    /// The node this block is affine to: the node that routes it and allocates from it
    /// first. `None` for a block no node has claimed (a static address outside any
    /// claimed block while its node was at `max_blocks_per_node`).
    pub affinity: Option<String>,
    /// Allocated ordinals and the handle holding each.
    #[serde(default)]
    pub allocations: BTreeMap<u32, String>,
    /// Ordinals held by a node other than the block's affinity (borrowed, or static
    /// in a block no node has claimed) → that node. The fabric routes each as a host
    /// route to its holder: the block's own route leads to the affine node, whose
    /// blackhole for the block would swallow it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub borrowed: BTreeMap<u32, String>,
    /// Where the search for a free ordinal starts. It moves past every allocation so a
    /// released address is not handed out again until the block wraps around: peers'
    /// caches (conntrack, ipcache, ARP) forget the old holder first.
    #[serde(default)]
    pub next_ordinal: u32,
    /// When the block was claimed, in seconds since the Unix epoch.
    #[serde(default)]
    pub claimed: u64,
}

impl Block {
    pub fn new(cidr: IpNet, affinity: Option<String>, claimed: u64) -> Self {
        Self {
            cidr,
            affinity,
            allocations: BTreeMap::new(),
            borrowed: BTreeMap::new(),
            next_ordinal: 0,
            claimed,
        }
    }

    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    /// Addresses in the block.
    pub fn size(&self) -> u32 {
        block_size(&self.cidr)
    }

    /// Addresses allocated.
    pub fn used(&self) -> u32 {
        u32::try_from(self.allocations.len()).unwrap_or(u32::MAX)
    }

    pub fn is_affine_to(&self, node: &str) -> bool {
        self.affinity.as_deref() == Some(node)
    }

    /// The address at `ordinal`.
    pub fn ip(&self, ordinal: u32) -> Option<IpAddr> {
        if ordinal >= self.size() {
            return None;
        }
        from_u128(
            self.family(),
            to_u128(self.cidr.network()) + u128::from(ordinal),
        )
    }

    /// The ordinal of `ip`, if the block holds it.
    pub fn ordinal(&self, ip: IpAddr) -> Option<u32> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        u32::try_from(to_u128(ip) - to_u128(self.cidr.network())).ok()
    }

    /// The handle holding `ip`, if it is allocated.
    pub fn holder(&self, ip: IpAddr) -> Option<&str> {
        self.ordinal(ip)
            .and_then(|o| self.allocations.get(&o))
            .map(String::as_str)
    }

    /// Records `ordinal` as held by `handle` and moves the search start past it.
    pub fn assign(&mut self, ordinal: u32, handle: &str) {
        self.allocations.insert(ordinal, handle.to_string());
        self.next_ordinal = (ordinal + 1) % self.size().max(1);
    }

    /// Records that node `holder` (not the block's affinity) holds `ordinal`.
    pub fn lend(&mut self, ordinal: u32, holder: &str) {
        self.borrowed.insert(ordinal, holder.to_string());
    }

    /// The addresses held by nodes other than the block's affinity, and by which.
    pub fn lent(&self) -> impl Iterator<Item = (IpAddr, &str)> {
        self.borrowed.iter().filter_map(|(o, node)| {
            let affine = self.affinity.as_deref() == Some(node.as_str());
            let held = self.allocations.contains_key(o);
            (held && !affine)
                .then(|| self.ip(*o).map(|ip| (ip, node.as_str())))
                .flatten()
        })
    }

    /// Frees every ordinal `handle` holds at one of `ips`; returns how many it freed.
    pub fn unassign(&mut self, ips: &[IpAddr], handle: &str) -> usize {
        let mut freed = 0;
        for ip in ips {
            if let Some(o) = self.ordinal(*ip)
                && self.allocations.get(&o).map(String::as_str) == Some(handle)
            {
                self.allocations.remove(&o);
                self.borrowed.remove(&o);
                freed += 1;
            }
        }
        freed
    }

    /// Checks what the type cannot: the cidr is what the key says, the block is not
    /// larger than any config allows, and every ordinal is inside it.
    pub fn verify(&self, key_cidr: &IpNet) -> Result<(), String> {
        if self.cidr != *key_cidr {
            return Err(format!(
                "holds block {} under the key of {key_cidr}",
                self.cidr
            ));
        }
        if self.cidr != self.cidr.trunc() {
            return Err(format!("block {} has host bits set", self.cidr));
        }
        if self.cidr.max_prefix_len() - self.cidr.prefix_len() > MAX_BLOCK_HOST_BITS {
            return Err(format!("block {} is larger than any block size", self.cidr));
        }
        if let Some((&o, _)) = self.allocations.range(self.size()..).next() {
            return Err(format!("ordinal {o} is outside block {}", self.cidr));
        }
        Ok(())
    }
}

/// Addresses in a block of `cidr`. Blocks are at most 2^[`MAX_BLOCK_HOST_BITS`]
/// addresses (checked on load), so this always fits.
pub fn block_size(cidr: &IpNet) -> u32 {
    let host_bits = cidr.max_prefix_len() - cidr.prefix_len();
    1u32.checked_shl(u32::from(host_bits)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ordinals_round_trip() {
        let b = Block::new("fd00::40/122".parse().unwrap(), None, 0);
        assert_eq!(b.size(), 64);
        assert_eq!(b.ip(0), Some(ip("fd00::40")));
        assert_eq!(b.ip(63), Some(ip("fd00::7f")));
        assert_eq!(b.ip(64), None);
        assert_eq!(b.ordinal(ip("fd00::45")), Some(5));
        assert_eq!(b.ordinal(ip("fd00::80")), None);
    }

    #[test]
    fn assign_and_unassign_only_own_ordinals() {
        let mut b = Block::new("10.0.0.0/30".parse().unwrap(), Some("n1".into()), 0);
        b.assign(3, "h1");
        assert_eq!(b.next_ordinal, 0, "wraps around");
        b.assign(1, "h2");
        assert_eq!(b.holder(ip("10.0.0.3")), Some("h1"));
        assert_eq!(b.unassign(&[ip("10.0.0.1"), ip("10.0.0.3")], "h1"), 1);
        assert_eq!(b.holder(ip("10.0.0.1")), Some("h2"));
        assert_eq!(b.used(), 1);
    }

    #[test]
    fn lent_addresses_are_held_and_leave_with_their_holder() {
        let mut b = Block::new("10.0.0.0/30".parse().unwrap(), Some("n1".into()), 0);
        b.assign(1, "h1");
        b.lend(1, "n2");
        b.lend(2, "n3"); // not allocated: not lent
        b.assign(3, "h3");
        b.lend(3, "n1"); // the affine node itself: not lent
        assert_eq!(b.lent().collect::<Vec<_>>(), [(ip("10.0.0.1"), "n2")]);
        assert_eq!(b.unassign(&[ip("10.0.0.1")], "h1"), 1);
        assert_eq!(b.lent().count(), 0);
        assert!(!b.borrowed.contains_key(&1));
    }

    #[test]
    fn json_shape() {
        let mut b = Block::new("10.0.0.0/26".parse().unwrap(), Some("n1".into()), 7);
        b.assign(5, "h");
        let v: serde_json::Value = serde_json::to_value(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cidr": "10.0.0.0/26", "affinity": "n1",
                "allocations": {"5": "h"}, "next_ordinal": 6, "claimed": 7})
        );
        let back: Block = serde_json::from_value(v).unwrap();
        assert_eq!(back, b);
    }

    #[test]
    fn verify_catches_inconsistencies() {
        let key: IpNet = "10.0.0.0/26".parse().unwrap();
        let mut b = Block::new(key, None, 0);
        assert!(b.verify(&key).is_ok());
        assert!(b.verify(&"10.0.0.64/26".parse().unwrap()).is_err());
        b.allocations.insert(64, "h".into());
        assert!(b.verify(&key).unwrap_err().contains("ordinal 64"));
        let big = Block::new("10.0.0.0/8".parse().unwrap(), None, 0);
        assert!(big.verify(&"10.0.0.0/8".parse().unwrap()).is_err());
    }
}
