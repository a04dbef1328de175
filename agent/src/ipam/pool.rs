//! A pool and the address arithmetic on it: which blocks it holds, which block an
//! address falls in, and which addresses are never handed out.
//!
//! Reserved addresses: the pool's first address (the network address; in IPv6 the
//! Subnet-Router anycast address of RFC 4291) and, in IPv4, its last (the broadcast
//! address). Only the pool's edges are reserved, not every block's: blocks are routed
//! as a whole (Calico does the same), so a block's own first and last addresses are
//! ordinary host addresses.
//!
//! Special space ([`special_space_of`], [`special_net_overlapping`]): address ranges no
//! container can hold. Besides loopback, multicast and unspecified space this is
//! link-local space, which holds the containers' own gateways `169.254.1.1` and
//! `fe80::1` (`endpoint::GATEWAY_V4`/`GATEWAY_V6`): a container given one of those
//! would route its default route via itself.

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
    /// No new allocations (Calico's `disabled: true`): its existing allocations stay
    /// and are released as usual, so the pool can be drained before it is removed.
    pub disabled: bool,
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

    /// The indexes (for [`Pool::nth_block`]) of the first and last of the pool's blocks
    /// that share an address with `range`; `None` if none does.
    pub fn blocks_overlapping(&self, range: &IpNet) -> Option<(u128, u128)> {
        if Family::of_net(range) != self.family() {
            return None;
        }
        let base = to_u128(self.cidr.network());
        let lo = base.max(to_u128(range.network()));
        let hi = to_u128(self.cidr.broadcast()).min(to_u128(range.broadcast()));
        if lo > hi {
            return None;
        }
        let host_bits = self.cidr.max_prefix_len() - self.block_prefix;
        Some(((lo - base) >> host_bits, (hi - base) >> host_bits))
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

/// A range of special space, named for messages.
struct SpecialNet {
    net: &'static str,
    what: &'static str,
}

/// Space no container address may come from. Link-local space holds the containers'
/// gateways, so it is named after them.
const SPECIAL_NETS: &[SpecialNet] = &[
    SpecialNet {
        net: "0.0.0.0/8",
        what: "unspecified (\"this network\")",
    },
    SpecialNet {
        net: "127.0.0.0/8",
        what: "loopback",
    },
    SpecialNet {
        net: "169.254.0.0/16",
        what: "link-local (it holds 169.254.1.1, the containers' gateway)",
    },
    SpecialNet {
        net: "224.0.0.0/4",
        what: "multicast",
    },
    SpecialNet {
        net: "255.255.255.255/32",
        what: "broadcast",
    },
    SpecialNet {
        net: "::/128",
        what: "unspecified",
    },
    SpecialNet {
        net: "::1/128",
        what: "loopback",
    },
    SpecialNet {
        net: "fe80::/10",
        what: "link-local (it holds fe80::1, the containers' gateway)",
    },
    SpecialNet {
        net: "ff00::/8",
        what: "multicast",
    },
];

fn special_nets() -> impl Iterator<Item = (IpNet, &'static str)> {
    SPECIAL_NETS
        .iter()
        .filter_map(|s| s.net.parse().ok().map(|n| (n, s.what)))
}

/// The special space `net` overlaps, as `"<range> (<what>)"`, if any.
pub fn special_net_overlapping(net: &IpNet) -> Option<String> {
    special_nets()
        .find(|(s, _)| s.contains(&net.network()) || net.contains(&s.network()))
        .map(|(s, what)| format!("{s} ({what})"))
}

/// The special space `ip` is in, as `"<what> space <range>"`, if any.
pub fn special_space_of(ip: IpAddr) -> Option<String> {
    special_nets()
        .find(|(s, _)| s.contains(&ip))
        .map(|(s, what)| format!("{what} space {s}"))
}

/// The pool holding `ip`, if any.
pub fn pool_of(pools: &[Pool], ip: IpAddr) -> Option<&Pool> {
    pools.iter().find(|p| p.cidr.contains(&ip))
}

/// The pool whose addresses `block` lies in, whatever its block size: a block no
/// pool covers is outside every pool (its pool was removed or shrunk).
pub fn pool_covering<'a>(pools: &'a [Pool], block: &IpNet) -> Option<&'a Pool> {
    pools.iter().find(|p| p.cidr.contains(block))
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
            disabled: false,
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
    fn finds_blocks_overlapping_a_range() {
        let p = pool("10.0.0.0/24", 26);
        let over = |r: &str| p.blocks_overlapping(&r.parse().unwrap());
        assert_eq!(over("10.0.0.70/31"), Some((1, 1)), "inside one block");
        assert_eq!(over("10.0.0.128/25"), Some((2, 3)));
        assert_eq!(
            over("10.0.0.64/25"),
            Some((0, 1)),
            "as its network 10.0.0.0/25"
        );
        assert_eq!(over("10.0.0.0/16"), Some((0, 3)), "around the pool");
        assert_eq!(over("10.0.1.0/24"), None);
        assert_eq!(over("fd00::/64"), None, "other family");
        let p = pool("fd00::/48", 122);
        assert_eq!(
            p.blocks_overlapping(&"fd00:0:0:1::/64".parse().unwrap()),
            Some((1 << 58, (2 << 58) - 1))
        );
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

    #[test]
    fn special_space_covers_the_containers_gateways() {
        for gw in [
            IpAddr::V4(crate::endpoint::GATEWAY_V4),
            IpAddr::V6(crate::endpoint::GATEWAY_V6),
        ] {
            let why = special_space_of(gw).unwrap_or_default();
            assert!(
                why.contains("link-local") && why.contains("gateway"),
                "{gw}: {why}"
            );
        }
        for (a, what) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.5", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
        ] {
            let why = special_space_of(ip(a)).unwrap_or_default();
            assert!(why.contains(what), "{a}: {why}");
        }
        for a in ["10.0.0.1", "fd00::1", "100.64.0.1", "2001:db8::1"] {
            assert_eq!(special_space_of(ip(a)), None, "{a}");
        }
    }

    #[test]
    fn a_net_overlaps_special_space_inside_or_around_it() {
        let over = |n: &str| special_net_overlapping(&n.parse().unwrap());
        assert!(
            over("169.254.1.0/30")
                .unwrap()
                .starts_with("169.254.0.0/16")
        );
        assert!(over("fe80::/64").unwrap().starts_with("fe80::/10"));
        // A pool around special space would hand it out too.
        assert!(over("128.0.0.0/1").unwrap().starts_with("169.254.0.0/16"));
        assert!(over("::/64").unwrap().starts_with("::/128"));
        assert_eq!(over("10.0.0.0/8"), None);
        assert_eq!(over("fd00::/48"), None);
        assert_eq!(over("::a00:0/112"), None);
    }
}
