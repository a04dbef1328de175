//! A pool and the address arithmetic on it: which blocks it holds, which block an
//! address falls in, and which addresses are never handed out.
//!
//! Reserved addresses: the pool's first address (the network address; in IPv6 the
//! Subnet-Router anycast address of RFC 4291) and, in IPv4, its last (the broadcast
//! address). Only the pool's edges are reserved, not every block's: blocks are routed
//! as a whole (Calico does the same), so a block's own first and last addresses are
//! ordinary host addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use strait_api::Family;

/// One configured pool with the block size of its family. Built by
/// [`super::IpamConfig::validate`], so its invariants hold: `cidr` is truncated, its
/// prefix is above 0 and at most `block_prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub cidr: IpNet,
    pub block_prefix: u8,
}

impl Pool {
    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    /// Addresses in the pool, reserved ones included.
    pub fn size(&self) -> u128 {
        1u128 << (self.cidr.max_prefix_len() - self.cidr.prefix_len())
    }

    /// Addresses that can be handed out.
    pub fn usable(&self) -> u128 {
        let reserved = match self.family() {
            Family::V4 => 2,
            Family::V6 => 1,
        };
        self.size().saturating_sub(reserved)
    }

    /// Blocks the pool can hold.
    pub fn block_count(&self) -> u128 {
        1u128 << (self.block_prefix - self.cidr.prefix_len())
    }

    /// The `n`th block of the pool, counting from its first address.
    pub fn nth_block(&self, n: u128) -> Option<IpNet> {
        if n >= self.block_count() {
            return None;
        }
        let host_bits = self.cidr.max_prefix_len() - self.block_prefix;
        let base = to_u128(self.cidr.network());
        let start = from_u128(self.family(), base + (n << host_bits))?;
        IpNet::new(start, self.block_prefix).ok()
    }

    /// The block of this pool that holds `ip` (`ip` must be inside the pool).
    pub fn block_of(&self, ip: IpAddr) -> Option<IpNet> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        IpNet::new(ip, self.block_prefix).ok().map(|n| n.trunc())
    }

    /// Whether `block` is one of this pool's blocks.
    pub fn holds_block(&self, block: &IpNet) -> bool {
        block.prefix_len() == self.block_prefix && self.cidr.contains(block)
    }

    /// Whether `ip` is one of the pool's reserved edge addresses.
    pub fn is_reserved(&self, ip: IpAddr) -> bool {
        ip == self.cidr.network() || (self.family() == Family::V4 && ip == self.cidr.broadcast())
    }
}

/// An address as an integer (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of `family` with integer value `v`, if it fits.
pub fn from_u128(family: Family, v: u128) -> Option<IpAddr> {
    match family {
        Family::V4 => u32::try_from(v).ok().map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        Family::V6 => Some(IpAddr::V6(Ipv6Addr::from(v))),
    }
}

/// The pool holding `ip`, if any.
pub fn pool_of(pools: &[Pool], ip: IpAddr) -> Option<&Pool> {
    pools.iter().find(|p| p.cidr.contains(&ip))
}

/// The pool holding `block`, if any.
pub fn pool_of_block<'a>(pools: &'a [Pool], block: &IpNet) -> Option<&'a Pool> {
    pools.iter().find(|p| p.holds_block(block))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str, block_prefix: u8) -> Pool {
        Pool {
            cidr: cidr.parse().unwrap(),
            block_prefix,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn counts_v4() {
        let p = pool("10.0.0.0/24", 26);
        assert_eq!(p.size(), 256);
        assert_eq!(p.usable(), 254);
        assert_eq!(p.block_count(), 4);
        assert_eq!(p.nth_block(0), Some("10.0.0.0/26".parse().unwrap()));
        assert_eq!(p.nth_block(3), Some("10.0.0.192/26".parse().unwrap()));
        assert_eq!(p.nth_block(4), None);
    }

    #[test]
    fn counts_large_v6() {
        let p = pool("fd00::/48", 122);
        assert_eq!(p.size(), 1u128 << 80);
        assert_eq!(p.block_count(), 1u128 << 74);
        assert_eq!(
            p.nth_block((1u128 << 74) - 1),
            Some("fd00:0:0:ffff:ffff:ffff:ffff:ffc0/122".parse().unwrap())
        );
    }

    #[test]
    fn finds_blocks_of_addresses() {
        let p = pool("10.0.0.0/24", 26);
        assert_eq!(
            p.block_of(ip("10.0.0.77")),
            Some("10.0.0.64/26".parse().unwrap())
        );
        assert_eq!(p.block_of(ip("10.0.1.1")), None);
        assert!(p.holds_block(&"10.0.0.64/26".parse().unwrap()));
        assert!(!p.holds_block(&"10.0.0.64/27".parse().unwrap()));
    }

    #[test]
    fn reserves_pool_edges_only() {
        let p = pool("10.0.0.0/24", 26);
        assert!(p.is_reserved(ip("10.0.0.0")));
        assert!(p.is_reserved(ip("10.0.0.255")));
        assert!(!p.is_reserved(ip("10.0.0.63")));
        assert!(!p.is_reserved(ip("10.0.0.64")));
        let p = pool("fd00::/120", 122);
        assert!(p.is_reserved(ip("fd00::")));
        assert!(!p.is_reserved(ip("fd00::ff")));
    }
}
