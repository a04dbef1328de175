//! IPAM configuration: the pools, the block size per family, and the affinity rules.
//! Validation is pure and turns a config into the [`Pool`]s the allocator works with.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use strait_api::Family;

use super::error::IpamError;
use super::pool::{Pool, special_net_overlapping};

/// Calico's default block sizes: 64 addresses per block in both families.
pub const DEFAULT_BLOCK_PREFIX_V4: u8 = 26;
pub const DEFAULT_BLOCK_PREFIX_V6: u8 = 122;

/// Largest block, in host bits (4096 addresses). A block is one store value rewritten
/// on every allocation in it, so it must stay small; Calico bounds blocks the same way
/// (IPv4 /20–/32, IPv6 /116–/128).
pub const MAX_BLOCK_HOST_BITS: u8 = 12;

fn default_block_prefix_v4() -> u8 {
    DEFAULT_BLOCK_PREFIX_V4
}

fn default_block_prefix_v6() -> u8 {
    DEFAULT_BLOCK_PREFIX_V6
}

/// What the cluster's address pools look like and how nodes may use them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConfig {
    /// The pools, IPv4 and IPv6, in order of preference within a family.
    pub pools: Vec<IpNet>,
    /// Pools that hand out no new address (Calico's `disabled: true`): their
    /// allocations are kept and released as usual, so a pool is drained here before it
    /// is removed.
    #[serde(default)]
    pub disabled_pools: Vec<IpNet>,
    /// Prefix length of an IPv4 block (default /26: 64 addresses).
    #[serde(default = "default_block_prefix_v4")]
    pub block_prefix_v4: u8,
    /// Prefix length of an IPv6 block (default /122: 64 addresses).
    #[serde(default = "default_block_prefix_v6")]
    pub block_prefix_v6: u8,
    /// Most blocks one node may hold with affinity, per address family. `None`: no limit.
    #[serde(default)]
    pub max_blocks_per_node: Option<u32>,
    /// Never take addresses from another node's block (Calico's `strictAffinity`).
    #[serde(default)]
    pub strict_affinity: bool,
}

impl Default for IpamConfig {
    fn default() -> Self {
        Self {
            pools: Vec::new(),
            disabled_pools: Vec::new(),
            block_prefix_v4: DEFAULT_BLOCK_PREFIX_V4,
            block_prefix_v6: DEFAULT_BLOCK_PREFIX_V6,
            max_blocks_per_node: None,
            strict_affinity: false,
        }
    }
}

impl IpamConfig {
    /// `pools` with the default block sizes (/26, /122), no block limit and no strict
    /// affinity.
    pub fn with_pools(pools: Vec<IpNet>) -> Self {
        Self {
            pools,
            disabled_pools: Vec::new(),
            block_prefix_v4: default_block_prefix_v4(),
            block_prefix_v6: default_block_prefix_v6(),
            max_blocks_per_node: None,
            strict_affinity: false,
        }
    }

    /// Block prefix length of `family`.
    pub fn block_prefix(&self, family: Family) -> u8 {
        match family {
            Family::V4 => self.block_prefix_v4,
            Family::V6 => self.block_prefix_v6,
        }
    }

    /// Checks the config and returns its pools, the enabled ones first. Every rule
    /// names the offending value, because an operator reads this at agent start-up.
    ///
    /// An enabled pool may not touch special space (loopback, link-local with the
    /// containers' gateways, multicast, unspecified): an address from there cannot
    /// work. A disabled pool may, so that a pool an older agent accepted can be drained.
    pub fn validate(&self) -> Result<Vec<Pool>, IpamError> {
        let bad = |msg: String| Err(IpamError::InvalidConfig(msg));
        if self.pools.is_empty() {
            return bad(if self.disabled_pools.is_empty() {
                "no pools configured".into()
            } else {
                "every pool is disabled: give at least one enabled pool".into()
            });
        }
        if self.max_blocks_per_node == Some(0) {
            return bad("max_blocks_per_node is 0: no node could hold a block".into());
        }
        for (family, prefix) in [
            (Family::V4, self.block_prefix_v4),
            (Family::V6, self.block_prefix_v6),
        ] {
            let min = family.bits() - MAX_BLOCK_HOST_BITS;
            if prefix < min || prefix > family.bits() {
                return bad(format!(
                    "{family} block prefix /{prefix} is out of range: use /{min} to /{}",
                    family.bits()
                ));
            }
        }

        let mut pools: Vec<Pool> = Vec::with_capacity(self.pools.len() + self.disabled_pools.len());
        let all = self.pools.iter().map(|c| (*c, false));
        for (cidr, disabled) in all.chain(self.disabled_pools.iter().map(|c| (*c, true))) {
            let family = Family::of_net(&cidr);
            if cidr != cidr.trunc() {
                return bad(format!(
                    "pool {cidr} has host bits set; did you mean {}?",
                    cidr.trunc()
                ));
            }
            if cidr.prefix_len() == 0 {
                return bad(format!("pool {cidr} covers the whole {family} space"));
            }
            if !disabled && let Some(special) = special_net_overlapping(&cidr) {
                return bad(format!(
                    "pool {cidr} overlaps {special}: no container can use those addresses"
                ));
            }
            let block_prefix = self.block_prefix(family);
            if block_prefix < cidr.prefix_len() {
                return bad(format!(
                    "{family} block prefix /{block_prefix} is shorter than pool {cidr}: \
                     a block must fit inside its pool"
                ));
            }
            if let Some(other) = pools.iter().find(|p| overlaps(&p.cidr, &cidr)) {
                return bad(format!("pools {} and {cidr} overlap", other.cidr));
            }
            let pool = Pool {
                cidr,
                block_prefix,
                disabled,
            };
            if pool.usable() == 0 {
                return bad(format!(
                    "pool {cidr} has no usable address (its network{} address is reserved)",
                    if family == Family::V4 {
                        " and broadcast"
                    } else {
                        ""
                    }
                ));
            }
            pools.push(pool);
        }
        Ok(pools)
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pools: &[&str]) -> IpamConfig {
        IpamConfig {
            pools: pools.iter().map(|p| p.parse().unwrap()).collect(),
            ..IpamConfig::default()
        }
    }

    fn err(c: &IpamConfig) -> String {
        match c.validate() {
            Err(IpamError::InvalidConfig(m)) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn accepts_dual_stack_defaults() {
        let pools = cfg(&["10.0.0.0/16", "fd00:10::/64"]).validate().unwrap();
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].block_prefix, 26);
        assert_eq!(pools[1].block_prefix, 122);
    }

    #[test]
    fn rejects_no_pools() {
        assert!(err(&cfg(&[])).contains("no pools"));
    }

    #[test]
    fn rejects_host_bits() {
        let m = err(&cfg(&["10.0.0.1/24"]));
        assert!(m.contains("host bits") && m.contains("10.0.0.0/24"), "{m}");
    }

    #[test]
    fn rejects_block_larger_than_pool() {
        let m = err(&cfg(&["10.0.0.0/28"]));
        assert!(m.contains("/26 is shorter than pool 10.0.0.0/28"), "{m}");
    }

    #[test]
    fn rejects_overlapping_pools() {
        let m = err(&cfg(&["10.0.0.0/16", "10.0.128.0/24"]));
        assert!(m.contains("overlap"), "{m}");
        let m = err(&cfg(&["fd00::/64", "fd00::/64"]));
        assert!(m.contains("overlap"), "{m}");
    }

    #[test]
    fn families_do_not_overlap_each_other() {
        cfg(&["10.0.0.0/16", "::a00:0/112"]).validate().unwrap();
    }

    #[test]
    fn rejects_block_prefix_out_of_range() {
        let mut c = cfg(&["10.0.0.0/8"]);
        c.block_prefix_v4 = 16;
        assert!(err(&c).contains("out of range"));
        c.block_prefix_v4 = 33;
        assert!(err(&c).contains("out of range"));
        c.block_prefix_v4 = 26;
        c.block_prefix_v6 = 64;
        assert!(err(&c).contains("IPv6 block prefix /64"));
    }

    #[test]
    fn rejects_pools_without_usable_addresses() {
        let mut c = cfg(&["10.0.0.0/31"]);
        c.block_prefix_v4 = 31;
        assert!(err(&c).contains("no usable address"));
        let mut c = cfg(&["fd00::1/128"]);
        c.block_prefix_v6 = 128;
        assert!(err(&c).contains("no usable address"));
    }

    #[test]
    fn rejects_special_space_and_zero_limits() {
        assert!(err(&cfg(&["127.0.0.0/16"])).contains("loopback"));
        assert!(err(&cfg(&["0.0.0.0/0"])).contains("whole IPv4 space"));
        let mut c = cfg(&["10.0.0.0/16"]);
        c.max_blocks_per_node = Some(0);
        assert!(err(&c).contains("max_blocks_per_node"));
    }

    #[test]
    fn rejects_pools_the_containers_cannot_use() {
        for (pool, what) in [
            ("169.254.1.0/30", "169.254.1.1, the containers' gateway"),
            ("169.254.0.0/16", "link-local"),
            ("fe80::/64", "fe80::1, the containers' gateway"),
            ("127.0.0.0/16", "loopback"),
            ("::1/128", "loopback"),
            ("224.0.0.0/24", "multicast"),
            ("ff02::/64", "multicast"),
            ("0.0.0.0/16", "unspecified"),
            ("::/120", "unspecified"),
            ("128.0.0.0/1", "link-local"),
        ] {
            let mut c = cfg(&[pool]);
            c.block_prefix_v4 = 30;
            c.block_prefix_v6 = 122;
            let m = err(&c);
            assert!(m.contains(pool) && m.contains(what), "{pool}: {m}");
        }
    }

    #[test]
    fn disabled_pools_come_after_the_enabled_ones_and_may_be_drained_from_bad_space() {
        let mut c = cfg(&["10.1.0.0/16"]);
        c.disabled_pools = vec![
            "10.0.0.0/16".parse().unwrap(),
            "169.254.1.0/24".parse().unwrap(),
        ];
        let pools = c.validate().unwrap();
        let got: Vec<(String, bool)> = pools
            .iter()
            .map(|p| (p.cidr.to_string(), p.disabled))
            .collect();
        assert_eq!(
            got,
            [
                ("10.1.0.0/16".into(), false),
                ("10.0.0.0/16".into(), true),
                ("169.254.1.0/24".into(), true)
            ]
        );
        c.disabled_pools = vec!["10.1.0.0/16".parse().unwrap()];
        assert!(err(&c).contains("overlap"), "enabled and disabled at once");
        let mut c = cfg(&[]);
        c.disabled_pools = vec!["10.0.0.0/16".parse().unwrap()];
        assert!(err(&c).contains("every pool is disabled"));
    }

    #[test]
    fn deserializes_with_defaults() {
        let c: IpamConfig = serde_json::from_str(r#"{"pools":["10.1.0.0/16"]}"#).unwrap();
        assert_eq!(c, cfg(&["10.1.0.0/16"]));
    }
}
