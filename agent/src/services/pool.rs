//! The service pools: where cluster IPs come from (`--service-pool`, one per family),
//! and the node-port range. Pure: which address or port is free is decided here from
//! what the store says is taken; [`super::store`] claims it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use strait_services::model::{Family, NODE_PORTS};

/// Kubernetes' default service range, and a unique-local IPv6 one beside it.
pub fn default_pools() -> Vec<IpNet> {
    vec![
        "10.96.0.0/12".parse().expect("literal"),
        "fd00:96::/108".parse().expect("literal"),
    ]
}

/// The default pools that overlap none of the address pools: a cluster whose
/// containers use 10.0.0.0/8 still starts, without an IPv4 service pool until one is
/// given (`netctl service apply` then says so).
pub fn defaults_beside(pools: &[IpNet], disabled: &[IpNet]) -> Vec<IpNet> {
    default_pools()
        .into_iter()
        .filter(|d| validate(std::slice::from_ref(d), pools, disabled).is_ok())
        .collect()
}

/// The pools are usable: one per family, not too small, overlapping neither each
/// other nor the container pools (a VIP that is also a container's address would be
/// translated away from it).
pub fn validate(services: &[IpNet], pools: &[IpNet], disabled: &[IpNet]) -> Result<(), String> {
    let mut families = BTreeSet::new();
    for p in services {
        if p.network() != p.addr() {
            return Err(format!(
                "service pool {p}: host bits set (did you mean {}?)",
                p.trunc()
            ));
        }
        let family = Family::of(&p.addr());
        if !families.insert(family) {
            return Err(format!(
                "service pool {p}: a second {family} service pool (one per family)"
            ));
        }
        let host_bits = u32::from(p.max_prefix_len() - p.prefix_len());
        if host_bits < 4 {
            return Err(format!(
                "service pool {p}: too small (at least /{} for {family})",
                p.max_prefix_len() - 4
            ));
        }
        if let Some(other) = pools
            .iter()
            .chain(disabled)
            .find(|o| o.contains(&p.network()) || p.contains(&o.network()))
        {
            return Err(format!(
                "service pool {p} overlaps the address pool {other}: a service address \
                 must never be a container's"
            ));
        }
    }
    Ok(())
}

/// The pool of `family`, if there is one.
pub fn pool_of(pools: &[IpNet], family: Family) -> Option<&IpNet> {
    pools.iter().find(|p| Family::of(&p.addr()) == family)
}

/// Whether `ip` may be a cluster IP: inside its family's pool, and neither the pool's
/// network nor (IPv4) its broadcast address.
pub fn usable(pools: &[IpNet], ip: IpAddr) -> Result<(), String> {
    let Some(pool) = pool_of(pools, Family::of(&ip)) else {
        return Err(format!(
            "{ip}: there is no {} service pool (--service-pool)",
            Family::of(&ip)
        ));
    };
    if !pool.contains(&ip) {
        return Err(format!(
            "{ip} is outside the service pool {pool} (--service-pool)"
        ));
    }
    if ip == pool.network() || (ip.is_ipv4() && ip == pool.broadcast()) {
        return Err(format!(
            "{ip} is the service pool's own network or broadcast address"
        ));
    }
    Ok(())
}

/// A free address of `pool`, not in `taken`: the first free one from a place that
/// `seed` (the service's name) picks, so services applied at once by different agents
/// rarely race for one address. `None`: the pool is full.
pub fn free_address(pool: &IpNet, taken: &BTreeSet<IpAddr>, seed: &str) -> Option<IpAddr> {
    let host_bits = u32::from(pool.max_prefix_len() - pool.prefix_len());
    // Pools past 2^32 addresses are searched in their first 2^32.
    let size: u64 = 1u64 << host_bits.min(32);
    let start = fnv(seed) % size;
    let base = match pool.network() {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    for i in 0..size {
        let offset = (start + i) % size;
        let n = base + u128::from(offset);
        let ip = match pool.network() {
            IpAddr::V4(_) => IpAddr::from(std::net::Ipv4Addr::from(n as u32)),
            IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::from(n)),
        };
        if usable(std::slice::from_ref(pool), ip).is_ok() && !taken.contains(&ip) {
            return Some(ip);
        }
    }
    None
}

/// A free node port (`protocol`'s ports taken are `taken`), likewise from a place
/// `seed` picks.
pub fn free_node_port(taken: &BTreeSet<u16>, seed: &str) -> Option<u16> {
    let (first, last) = (*NODE_PORTS.start(), *NODE_PORTS.end());
    let size = u64::from(last - first) + 1;
    let start = fnv(seed) % size;
    (0..size)
        .map(|i| first + ((start + i) % size) as u16)
        .find(|p| !taken.contains(p))
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn pools_are_one_per_family_and_apart_from_the_container_pools() {
        let pods = [net("10.244.0.0/16")];
        assert!(validate(&default_pools(), &pods, &[]).is_ok());
        let e = validate(&[net("10.96.0.0/12"), net("10.200.0.0/16")], &pods, &[]).unwrap_err();
        assert!(e.contains("one per family"), "{e}");
        let e = validate(&[net("10.244.0.0/24")], &pods, &[]).unwrap_err();
        assert!(e.contains("overlaps"), "{e}");
        let e = validate(&[net("10.0.0.0/8")], &pods, &[]).unwrap_err();
        assert!(e.contains("overlaps"), "{e}");
        let e = validate(&[net("10.96.0.1/12")], &pods, &[]).unwrap_err();
        assert!(e.contains("host bits"), "{e}");
        let e = validate(&[net("10.96.0.0/30")], &pods, &[]).unwrap_err();
        assert!(e.contains("too small"), "{e}");
        // A default that would overlap is left out, not refused.
        assert_eq!(
            defaults_beside(&[net("10.0.0.0/8")], &[]),
            vec![net("fd00:96::/108")]
        );
    }

    #[test]
    fn addresses_inside_the_pool_only() {
        let pools = default_pools();
        assert!(usable(&pools, "10.96.0.10".parse().unwrap()).is_ok());
        assert!(usable(&pools, "fd00:96::10".parse().unwrap()).is_ok());
        let e = usable(&pools, "10.95.0.10".parse().unwrap()).unwrap_err();
        assert!(e.contains("outside the service pool 10.96.0.0/12"), "{e}");
        assert!(usable(&pools, "10.96.0.0".parse().unwrap()).is_err());
        assert!(usable(&pools, "10.111.255.255".parse().unwrap()).is_err());
        let e = usable(&pools[..1], "fd00:96::1".parse().unwrap()).unwrap_err();
        assert!(e.contains("no IPv6 service pool"), "{e}");
    }

    #[test]
    fn free_addresses_and_ports_skip_what_is_taken_until_none_is_left() {
        let pool = net("10.96.0.0/29");
        let mut taken = BTreeSet::new();
        for _ in 0..6 {
            let ip = free_address(&pool, &taken, "shop/web").expect("free");
            assert!(usable(std::slice::from_ref(&pool), ip).is_ok());
            assert!(taken.insert(ip));
        }
        assert_eq!(free_address(&pool, &taken, "shop/web"), None, "{taken:?}");
        let mut ports = BTreeSet::new();
        for _ in 0..100 {
            let p = free_node_port(&ports, "shop/web").unwrap();
            assert!(NODE_PORTS.contains(&p));
            assert!(ports.insert(p));
        }
        let all: BTreeSet<u16> = NODE_PORTS.collect();
        assert_eq!(free_node_port(&all, "x"), None);
    }
}
