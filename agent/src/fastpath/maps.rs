//! The fast path's maps, typed by the layouts in [`super::abi`] (which mirrors
//! `ebpf/include/strait/abi.h`). Addresses are keyed as 16 bytes, IPv4 as
//! IPv4-mapped IPv6, as the programs do.

use std::net::IpAddr;

use aya::Ebpf;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use ipnet::IpNet;

use super::FastPathError;
use super::abi::{
    AddrKey, CONFIG, Config, ENDPOINTS, EndpointValue, REASON_MAX, Reason, STATS, TUNNELS,
    TunnelKey, TunnelValue,
};

/// The counters, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Redirected into the fabric device ([`Reason::FwdFabric`]).
    pub to_fabric: u64,
    /// Redirected to a local endpoint ([`Reason::FwdEndpoint`]).
    pub to_endpoint: u64,
    /// IP packets looked up and then handed to the stack (the reasons
    /// [`Reason::after_lookup`] names).
    pub to_stack: u64,
    /// Every counter, indexed by [`Reason::index`].
    pub by_reason: [u64; REASON_MAX],
}

impl Stats {
    /// The totals from the per-reason counters.
    fn from_reasons(by_reason: [u64; REASON_MAX]) -> Self {
        let count = |r: Reason| by_reason[r.index() as usize];
        Self {
            to_fabric: count(Reason::FwdFabric),
            to_endpoint: count(Reason::FwdEndpoint),
            to_stack: Reason::ALL
                .iter()
                .filter(|r| r.after_lookup())
                .map(|r| count(*r))
                .sum(),
            by_reason,
        }
    }

    pub fn get(&self, reason: Reason) -> u64 {
        self.by_reason[reason.index() as usize]
    }
}

pub(super) struct Maps {
    config: Array<MapData, Config>,
    /// address → endpoint.
    endpoints: HashMap<MapData, AddrKey, EndpointValue>,
    /// block → VTEP.
    tunnels: LpmTrie<MapData, AddrKey, TunnelValue>,
    /// One counter per [`Reason`].
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
        let value = EndpointValue {
            ifindex,
            mac,
            host_mac,
        };
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
                && value.ifindex == ifindex
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
        let value = TunnelValue {
            vtep_mac,
            pad: [0; 2],
        };
        self.tunnels
            .insert(&tunnel_key(block), value, 0)
            .map_err(map_err(TUNNELS))
    }

    pub(super) fn remove_tunnel(&mut self, block: IpNet) -> Result<(), FastPathError> {
        self.tunnels
            .remove(&tunnel_key(block))
            .map_err(map_err(TUNNELS))
    }

    /// The endpoint map as the kernel holds it.
    pub(super) fn endpoint_entries(&self) -> Result<Vec<(IpAddr, EndpointValue)>, FastPathError> {
        let mut out = Vec::new();
        for entry in self.endpoints.iter() {
            let (key, value) = entry.map_err(map_err(ENDPOINTS))?;
            out.push((key_addr(key), value));
        }
        Ok(out)
    }

    /// The tunnel map as the kernel holds it: block → VTEP MAC.
    pub(super) fn tunnel_entries(&self) -> Result<Vec<(IpNet, [u8; 6])>, FastPathError> {
        let mut out = Vec::new();
        for entry in self.tunnels.iter() {
            let (key, value) = entry.map_err(map_err(TUNNELS))?;
            if let Some(block) = key_block(key.prefix_len(), key.data()) {
                out.push((block, value.vtep_mac));
            }
        }
        Ok(out)
    }

    pub(super) fn stats(&self) -> Result<Stats, FastPathError> {
        let mut by_reason = [0u64; REASON_MAX];
        for reason in Reason::ALL {
            let per_cpu = self.stats.get(&reason.index(), 0).map_err(map_err(STATS))?;
            by_reason[reason.index() as usize] = per_cpu.iter().sum();
        }
        Ok(Stats::from_reasons(by_reason))
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
fn tunnel_key(block: IpNet) -> TunnelKey {
    let block = block.trunc();
    let len = match block {
        IpNet::V4(n) => 96 + u32::from(n.prefix_len()),
        IpNet::V6(n) => u32::from(n.prefix_len()),
    };
    Key::new(len, addr_key(block.addr()))
}

fn config_value(enabled: bool, fabric: Option<(u32, [u8; 6])>) -> Config {
    let (fabric_ifindex, fabric_mac) = fabric.unwrap_or((0, [0; 6]));
    Config {
        enabled: u32::from(enabled),
        fabric_ifindex,
        fabric_mac,
        pad: [0; 2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The byte positions these tests checked in the hand-made buffers are now the
    // structs' field offsets; abi.rs checks the same numbers against the object.
    #[test]
    fn config_value_lays_out_the_c_struct() {
        use std::mem::offset_of;
        let mac = [2, 0, 0, 0, 0, 9];
        let v = config_value(true, Some((7, mac)));
        assert_eq!((offset_of!(Config, enabled), v.enabled), (0, 1));
        assert_eq!(
            (offset_of!(Config, fabric_ifindex), v.fabric_ifindex),
            (4, 7)
        );
        assert_eq!((offset_of!(Config, fabric_mac), v.fabric_mac), (8, mac));
        assert_eq!((offset_of!(Config, pad), v.pad), (14, [0, 0]));
        assert_eq!(size_of::<Config>(), 16);
        let v = config_value(false, None);
        assert_eq!(v, Config::default());
    }

    #[test]
    fn endpoint_value_lays_out_the_c_struct() {
        use std::mem::offset_of;
        assert_eq!(offset_of!(EndpointValue, ifindex), 0);
        assert_eq!(offset_of!(EndpointValue, mac), 4);
        assert_eq!(offset_of!(EndpointValue, host_mac), 10);
        assert_eq!(size_of::<EndpointValue>(), 16);
    }

    #[test]
    fn the_totals_keep_their_meaning() {
        let mut by_reason = [0u64; REASON_MAX];
        for (i, r) in Reason::ALL.iter().enumerate() {
            by_reason[r.index() as usize] = 1 << i;
        }
        let s = Stats::from_reasons(by_reason);
        assert_eq!(s.to_fabric, s.get(Reason::FwdFabric));
        assert_eq!(s.to_endpoint, s.get(Reason::FwdEndpoint));
        // Looked up, then handed over; not what was handed over before the lookup.
        assert_eq!(
            s.to_stack,
            s.get(Reason::PassNoEntry) + s.get(Reason::PassSameDevice) + s.get(Reason::PassMtu)
        );
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
