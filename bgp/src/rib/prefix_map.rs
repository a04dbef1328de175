//! The Loc-RIB's index: a map from prefix to destination with compact keys, one table
//! per family. An IPv4 prefix is a `u64` (address and length) rather than an `IpNet`
//! (18 octets, and the table's buckets padded to the value's alignment); at 100 000
//! prefixes the buckets are most of the RIB, and their size is paid twice while the
//! table grows (old and new table side by side). The IPv4 table is cut into shards
//! that grow one at a time, so that growth costs a sixteenth of the table, not half.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::codec::Family;

/// An IPv6 prefix: address halves and length (24 octets; a `u128` would be aligned to
/// 16 and take 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct V6Key {
    hi: u64,
    lo: u64,
    len: u8,
}

fn v4_key(n: &Ipv4Net) -> u64 {
    (u64::from(u32::from(n.addr())) << 8) | u64::from(n.prefix_len())
}

fn v4_net(k: u64) -> IpNet {
    let addr = Ipv4Addr::from((k >> 8) as u32);
    // Keys are only made from valid prefixes.
    IpNet::V4(Ipv4Net::new(addr, (k & 0xff) as u8).expect("valid IPv4 prefix length"))
}

fn v6_key(n: &Ipv6Net) -> V6Key {
    let a = u128::from(n.addr());
    V6Key {
        hi: (a >> 64) as u64,
        lo: a as u64,
        len: n.prefix_len(),
    }
}

fn v6_net(k: &V6Key) -> IpNet {
    let addr = Ipv6Addr::from((u128::from(k.hi) << 64) | u128::from(k.lo));
    IpNet::V6(Ipv6Net::new(addr, k.len).expect("valid IPv6 prefix length"))
}

/// How many shards the IPv4 table has.
const V4_SHARDS: usize = 16;

/// Prefix → `V`, by family. Prefixes are used as given (the RIB truncates them first).
#[derive(Debug)]
pub(super) struct PrefixMap<V> {
    v4: [HashMap<u64, V>; V4_SHARDS],
    v6: HashMap<V6Key, V>,
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        PrefixMap {
            v4: std::array::from_fn(|_| HashMap::new()),
            v6: HashMap::new(),
        }
    }
}

/// A key's shard: neighbouring prefixes spread over all of them (Fibonacci hashing;
/// the table inside hashes the key again, with its own keyed hasher).
fn shard(k: u64) -> usize {
    (k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize
}

impl<V> PrefixMap<V> {
    fn v4_table(&self, k: u64) -> &HashMap<u64, V> {
        &self.v4[shard(k)]
    }

    fn v4_table_mut(&mut self, k: u64) -> &mut HashMap<u64, V> {
        &mut self.v4[shard(k)]
    }

    pub(super) fn len(&self) -> usize {
        self.v4.iter().map(HashMap::len).sum::<usize>() + self.v6.len()
    }

    pub(super) fn get(&self, p: &IpNet) -> Option<&V> {
        match p {
            IpNet::V4(n) => {
                let k = v4_key(n);
                self.v4_table(k).get(&k)
            }
            IpNet::V6(n) => self.v6.get(&v6_key(n)),
        }
    }

    pub(super) fn get_mut(&mut self, p: &IpNet) -> Option<&mut V> {
        match p {
            IpNet::V4(n) => {
                let k = v4_key(n);
                self.v4_table_mut(k).get_mut(&k)
            }
            IpNet::V6(n) => self.v6.get_mut(&v6_key(n)),
        }
    }

    /// `p`'s value, made by `make` if it has none.
    pub(super) fn get_or_insert_with(&mut self, p: &IpNet, make: impl FnOnce() -> V) -> &mut V {
        match p {
            IpNet::V4(n) => {
                let k = v4_key(n);
                self.v4_table_mut(k).entry(k).or_insert_with(make)
            }
            IpNet::V6(n) => self.v6.entry(v6_key(n)).or_insert_with(make),
        }
    }

    /// Remove `p` if `gone` says so of its value.
    pub(super) fn remove_if(&mut self, p: &IpNet, gone: impl FnOnce(&V) -> bool) {
        fn remove<K: std::hash::Hash + Eq, V>(e: Entry<'_, K, V>, gone: impl FnOnce(&V) -> bool) {
            if let Entry::Occupied(o) = e
                && gone(o.get())
            {
                o.remove();
            }
        }
        match p {
            IpNet::V4(n) => {
                let k = v4_key(n);
                remove(self.v4_table_mut(k).entry(k), gone)
            }
            IpNet::V6(n) => remove(self.v6.entry(v6_key(n)), gone),
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (IpNet, &V)> {
        let v4 = self.v4.iter().flatten().map(|(k, v)| (v4_net(*k), v));
        let v6 = self.v6.iter().map(|(k, v)| (v6_net(k), v));
        v4.chain(v6)
    }

    /// One family's entries.
    pub(super) fn iter_family(&self, f: Family) -> Box<dyn Iterator<Item = (IpNet, &V)> + '_> {
        match f {
            Family::Ipv4Unicast => Box::new(self.v4.iter().flatten().map(|(k, v)| (v4_net(*k), v))),
            Family::Ipv6Unicast => Box::new(self.v6.iter().map(|(k, v)| (v6_net(k), v))),
        }
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.v4
            .iter()
            .flat_map(HashMap::values)
            .chain(self.v6.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_as_the_prefixes_they_were_made_from() {
        let mut m = PrefixMap::default();
        let nets: Vec<IpNet> = [
            "0.0.0.0/0",
            "10.128.0.64/26",
            "255.255.255.255/32",
            "::/0",
            "fd00:1:2:3::/64",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        for (i, n) in nets.iter().enumerate() {
            *m.get_or_insert_with(n, || i) += 100;
        }
        assert_eq!(m.len(), nets.len());
        let mut back: Vec<(IpNet, usize)> = m.iter().map(|(n, v)| (n, *v)).collect();
        back.sort();
        let mut want: Vec<(IpNet, usize)> = nets
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, i + 100))
            .collect();
        want.sort();
        assert_eq!(back, want);
        assert_eq!(m.iter_family(Family::Ipv6Unicast).count(), 3);
        // A /26 and a /27 at the same address are different prefixes.
        assert!(m.get(&"10.128.0.64/27".parse().unwrap()).is_none());
        m.remove_if(&nets[1], |v| *v == 0);
        assert_eq!(m.get(&nets[1]), Some(&101));
        m.remove_if(&nets[1], |v| *v == 101);
        assert_eq!(m.get(&nets[1]), None);
        assert_eq!(m.len(), nets.len() - 1);
    }
}
