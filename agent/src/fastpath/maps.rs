//! The fast path's maps, typed: their layouts mirror `ebpf/src/fastpath.c`.

use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData, PerCpuArray};

use super::FastPathError;

const CONFIG: &str = "strait_fp_config";
const ENDPOINTS: &str = "strait_fp_endpoints";
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

pub(super) struct Maps {
    /// `struct fastpath_config { u32 enabled; u32 fabric_ifindex; }`, as 8 bytes.
    config: Array<MapData, u64>,
    endpoints: HashMap<MapData, u32, u32>,
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
            stats: PerCpuArray::try_from(take(ebpf, STATS)?).map_err(map_err(STATS))?,
        })
    }

    pub(super) fn write_config(
        &mut self,
        enabled: bool,
        fabric_ifindex: u32,
    ) -> Result<(), FastPathError> {
        self.config
            .set(0, config_value(enabled, fabric_ifindex), 0)
            .map_err(map_err(CONFIG))
    }

    pub(super) fn add_endpoint(&mut self, ifindex: u32) -> Result<(), FastPathError> {
        self.endpoints
            .insert(ifindex, 1, 0)
            .map_err(map_err(ENDPOINTS))
    }

    pub(super) fn remove_endpoint(&mut self, ifindex: u32) -> Result<(), FastPathError> {
        self.endpoints.remove(&ifindex).map_err(map_err(ENDPOINTS))
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

/// The C struct's bytes in the kernel's (native) byte order: `enabled` first.
fn config_value(enabled: bool, fabric_ifindex: u32) -> u64 {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&u32::from(enabled).to_ne_bytes());
    bytes[4..].copy_from_slice(&fabric_ifindex.to_ne_bytes());
    u64::from_ne_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_value_lays_out_the_c_struct() {
        let v = config_value(true, 7).to_ne_bytes();
        assert_eq!(u32::from_ne_bytes(v[..4].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(v[4..].try_into().unwrap()), 7);
        let v = config_value(false, 0x0102_0304).to_ne_bytes();
        assert_eq!(u32::from_ne_bytes(v[..4].try_into().unwrap()), 0);
        assert_eq!(u32::from_ne_bytes(v[4..].try_into().unwrap()), 0x0102_0304);
    }
}
