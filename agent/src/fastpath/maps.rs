//! The fast path's maps, typed: their layouts mirror `ebpf/src/fastpath.c`.
//! Addresses are keyed as 16 bytes, IPv4 as IPv4-mapped IPv6, as the programs do.

use std::net::IpAddr;

use aya::Ebpf;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use ipnet::IpNet;

use super::FastPathError;

const CONFIG: &str = "strait_fp_config";
const ENDPOINTS: &str = "strait_fp_endpoints";
const TUNNELS: &str = "strait_fp_tunnels";
const STATS: &str = "strait_fp_stats";

/// Indexes of `enum fastpath_stat`.
const STAT_TO_FABRIC: u32 = 0;
const STAT_TO_ENDPOINT: u32 = 1;
const STAT_TO_STACK: u32 = 2;

/// The counters, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub to_fabric: u64,
    pub to_endpoint: u64,
    pub to_stack: u64,
}

/// `struct addr`: an address as the programs key it.
type AddrKey = [u8; 16];

/// `struct endpoint`, decoded: (ifindex, container MAC, gateway MAC).
pub(super) type EndpointValue = (u32, [u8; 6], [u8; 6]);

pub(super) struct Maps {
    /// `struct fastpath_config { u32 enabled; u32 fabric_ifindex; u8 fabric_mac[6];
    /// u8 pad[2]; }`.
    config: Array<MapData, [u8; 16]>,
    /// address → `struct endpoint { u32 ifindex; u8 mac[6]; u8 host_mac[6]; }`.
    endpoints: HashMap<MapData, AddrKey, [u8; 16]>,
    /// block → `struct tunnel { u8 vtep_mac[6]; u8 pad[2]; }`.
    tunnels: LpmTrie<MapData, AddrKey, [u8; 8]>,
    stats: PerCpuArray<MapData, u64>,
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> FastPathError {
    move |e| FastPathError::Map {
        map,
        reason: e.to_string(),
    }
}

fn take(ebpf: &mut Ebpf, map: &'static str) -> Result<aya::maps::Map, FastPathError> {
    ebpf.take_map(map).ok_or(FastPathError::Map {
        map,
        reason: "not in the object".into(),
    })
}

impl Maps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, FastPathError> {
        Ok(Self {
            config: Array::try_from(take(ebpf, CONFIG)?).map_err(map_err(CONFIG))?,
            endpoints: HashMap::try_from(take(ebpf, ENDPOINTS)?).map_err(map_err(ENDPOINTS))?,
            tunnels: LpmTrie::try_from(take(ebpf, TUNNELS)?).map_err(map_err(TUNNELS))?,
            stats: PerCpuArray::try_from(take(ebpf, STATS)?).map_err(map_err(STATS))?,
        })
    }

    /// `fabric`: the fabric device's ifindex and MAC, when there is one.
    pub(super) fn write_config(
        &mut self,
        enabled: bool,
        fabric: Option<(u32, [u8; 6])>,
    ) -> Result<(), FastPathError> {
        self.config
            .set(0, config_value(enabled, fabric), 0)
            .map_err(map_err(CONFIG))
    }

    /// Lists `ips` as delivered to the veth `ifindex`, with the MACs of that link.
    pub(super) fn add_endpoint(
        &mut self,
        ifindex: u32,
        ips: &[IpAddr],
        mac: [u8; 6],
        host_mac: [u8; 6],
    ) -> Result<(), FastPathError> {
        let value = endpoint_value(ifindex, mac, host_mac);
        for ip in ips {
            self.endpoints
                .insert(addr_key(*ip), value, 0)
                .map_err(map_err(ENDPOINTS))?;
        }
        Ok(())
    }

    /// Removes `ips`, each only while it still names veth `ifindex`: an address a
    /// newer endpoint took over stays its.
    pub(super) fn remove_endpoint(&mut self, ifindex: u32, ips: &[IpAddr]) {
        for ip in ips {
            let key = addr_key(*ip);
            if let Ok(value) = self.endpoints.get(&key, 0)
                && value[..4] == ifindex.to_ne_bytes()
            {
                // Gone already is what was wanted.
                let _ = self.endpoints.remove(&key);
            }
        }
    }

    pub(super) fn add_tunnel(
        &mut self,
        block: IpNet,
        vtep_mac: [u8; 6],
    ) -> Result<(), FastPathError> {
        let mut value = [0u8; 8];
        value[..6].copy_from_slice(&vtep_mac);
        self.tunnels
            .insert(&tunnel_key(block), value, 0)
            .map_err(map_err(TUNNELS))
    }

    pub(super) fn remove_tunnel(&mut self, block: IpNet) -> Result<(), FastPathError> {
        self.tunnels
            .remove(&tunnel_key(block))
            .map_err(map_err(TUNNELS))
    }

    /// The endpoint map as the kernel holds it: address → (ifindex, mac, host_mac).
    pub(super) fn endpoint_entries(&self) -> Result<Vec<(IpAddr, EndpointValue)>, FastPathError> {
        let mut out = Vec::new();
        for entry in self.endpoints.iter() {
            let (key, v) = entry.map_err(map_err(ENDPOINTS))?;
            let ifindex = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]);
            let mut mac = [0u8; 6];
            let mut host_mac = [0u8; 6];
            mac.copy_from_slice(&v[4..10]);
            host_mac.copy_from_slice(&v[10..16]);
            out.push((key_addr(key), (ifindex, mac, host_mac)));
        }
        Ok(out)
    }

    /// The tunnel map as the kernel holds it: block → VTEP MAC.
    pub(super) fn tunnel_entries(&self) -> Result<Vec<(IpNet, [u8; 6])>, FastPathError> {
        let mut out = Vec::new();
        for entry in self.tunnels.iter() {
            let (key, v) = entry.map_err(map_err(TUNNELS))?;
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&v[..6]);
            if let Some(block) = key_block(key.prefix_len(), key.data()) {
                out.push((block, mac));
            }
        }
        Ok(out)
    }

    pub(super) fn stats(&self) -> Result<Stats, FastPathError> {
        let sum = |i: u32| -> Result<u64, FastPathError> {
            Ok(self.stats.get(&i, 0).map_err(map_err(STATS))?.iter().sum())
        };
        Ok(Stats {
            to_fabric: sum(STAT_TO_FABRIC)?,
            to_endpoint: sum(STAT_TO_ENDPOINT)?,
            to_stack: sum(STAT_TO_STACK)?,
        })
    }
}

/// IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so one map holds both families.
fn addr_key(ip: IpAddr) -> AddrKey {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// [`addr_key`] back: an IPv4-mapped key is the IPv4 address.
fn key_addr(key: AddrKey) -> IpAddr {
    let v6 = std::net::Ipv6Addr::from(key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// [`tunnel_key`] back; `None` for a prefix length no block has.
fn key_block(prefix_len: u32, key: AddrKey) -> Option<IpNet> {
    let len = u8::try_from(prefix_len).ok()?;
    match key_addr(key) {
        IpAddr::V4(v4) if len >= 96 => IpNet::new(IpAddr::V4(v4), len - 96).ok(),
        IpAddr::V4(_) => None,
        ip @ IpAddr::V6(_) => IpNet::new(ip, len).ok(),
    }
}

/// An IPv4 block's prefix counts the 96 bits of the mapping in front of it.
fn tunnel_key(block: IpNet) -> Key<AddrKey> {
    let block = block.trunc();
    let len = match block {
        IpNet::V4(n) => 96 + u32::from(n.prefix_len()),
        IpNet::V6(n) => u32::from(n.prefix_len()),
    };
    Key::new(len, addr_key(block.addr()))
}

/// The C structs' bytes in the kernel's (native) byte order.
fn config_value(enabled: bool, fabric: Option<(u32, [u8; 6])>) -> [u8; 16] {
    let (ifindex, mac) = fabric.unwrap_or((0, [0; 6]));
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&u32::from(enabled).to_ne_bytes());
    bytes[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    bytes[8..14].copy_from_slice(&mac);
    bytes
}

fn endpoint_value(ifindex: u32, mac: [u8; 6], host_mac: [u8; 6]) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&ifindex.to_ne_bytes());
    bytes[4..10].copy_from_slice(&mac);
    bytes[10..].copy_from_slice(&host_mac);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_value_lays_out_the_c_struct() {
        let mac = [2, 0, 0, 0, 0, 9];
        let v = config_value(true, Some((7, mac)));
        assert_eq!(u32::from_ne_bytes(v[..4].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(v[4..8].try_into().unwrap()), 7);
        assert_eq!(v[8..14], mac);
        assert_eq!(v[14..], [0, 0]);
        let v = config_value(false, None);
        assert_eq!(v, [0; 16]);
    }

    #[test]
    fn endpoint_value_lays_out_the_c_struct() {
        let v = endpoint_value(0x0102_0304, [1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]);
        assert_eq!(u32::from_ne_bytes(v[..4].try_into().unwrap()), 0x0102_0304);
        assert_eq!(v[4..10], [1, 2, 3, 4, 5, 6]);
        assert_eq!(v[10..], [7, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn ipv4_is_keyed_mapped_and_its_prefix_shifted_by_96() {
        let key = addr_key("10.244.1.7".parse().unwrap());
        assert_eq!(key[..10], [0; 10]);
        assert_eq!(key[10..12], [0xff, 0xff]);
        assert_eq!(key[12..], [10, 244, 1, 7]);
        // Host bits are dropped: the trie matches on the prefix only.
        let k = tunnel_key("10.244.1.64/26".parse().unwrap());
        assert_eq!(k.prefix_len(), 122);
        assert_eq!(k.data()[12..], [10, 244, 1, 64]);
        let k = tunnel_key("fd00:244::1/122".parse().unwrap());
        assert_eq!(k.prefix_len(), 122);
        assert_eq!(
            k.data(),
            "fd00:244::".parse::<std::net::Ipv6Addr>().unwrap().octets()
        );
        // And back, as `netctl fastpath` reads the maps.
        for block in ["10.244.1.64/26", "10.244.1.7/32", "fd00:244::/122"] {
            let block: IpNet = block.parse().unwrap();
            let k = tunnel_key(block);
            assert_eq!(key_block(k.prefix_len(), k.data()), Some(block));
        }
        assert_eq!(key_addr(key), "10.244.1.7".parse::<IpAddr>().unwrap());
    }
}
