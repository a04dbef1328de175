//! The service maps, typed by [`super::abi`], and the conversions between the
//! datapath's types and their entries: a frontend as a `strait_svc_frontends` key,
//! a backend as a `strait_svc_backends` value, backend ids. Addresses are keyed as
//! 16 bytes, IPv4 as IPv4-mapped IPv6, ports in network order, as the programs
//! read them.

use std::net::{IpAddr, Ipv6Addr};

use aya::Ebpf;
use aya::maps::{
    Array, HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf,
};

use super::abi::{
    AddrKey, BACKEND_STATS, BACKENDS, BE_F_LOCAL, BackendValue, CT, CtKey, CtValue, EVENTS,
    FRONTENDS, FrontendValue, MONITOR, NAT_CONFIG, NatConfig, REASON_MAX, SCOPE_LOCAL,
    SCOPE_OUTSIDE, SLOTS, STATS, SlotKey, SvcKey,
};
use super::{Backend, Frontend, Protocol, Scope, ServicesError};

/// The typed maps the agent writes and reads. (The reverse and affinity maps are
/// the programs' own; the agent never writes them.)
pub(super) struct Maps {
    pub(super) frontends: HashMap<MapData, SvcKey, FrontendValue>,
    pub(super) slots: HashMap<MapData, SlotKey, u32>,
    pub(super) backends: HashMap<MapData, u32, BackendValue>,
    /// The packet-level flows (`strait_svc_ct`): the programs write them; the
    /// agent only reads them (tests, `flows`).
    pub(super) ct: HashMap<MapData, CtKey, CtValue>,
    pub(super) nat_config: Array<MapData, NatConfig>,
    stats: PerCpuArray<MapData, u64>,
    /// Connections per backend id (`strait_svc_backend_stats`): made and deleted
    /// with the backend's entry, counted into by the programs.
    backend_stats: PerCpuHashMap<MapData, u32, u64>,
}

pub(super) fn map_err(map: &'static str) -> impl Fn(MapError) -> ServicesError {
    move |e| {
        let full = matches!(&e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::E2BIG));
        ServicesError::Map {
            map,
            reason: if full {
                "the map is full".to_string()
            } else {
                e.to_string()
            },
        }
    }
}

fn take(ebpf: &mut Ebpf, map: &'static str) -> Result<aya::maps::Map, ServicesError> {
    ebpf.take_map(map).ok_or(ServicesError::Map {
        map,
        reason: "not in the object".into(),
    })
}

impl Maps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, ServicesError> {
        Ok(Self {
            frontends: HashMap::try_from(take(ebpf, FRONTENDS)?).map_err(map_err(FRONTENDS))?,
            slots: HashMap::try_from(take(ebpf, SLOTS)?).map_err(map_err(SLOTS))?,
            backends: HashMap::try_from(take(ebpf, BACKENDS)?).map_err(map_err(BACKENDS))?,
            ct: HashMap::try_from(take(ebpf, CT)?).map_err(map_err(CT))?,
            nat_config: Array::try_from(take(ebpf, NAT_CONFIG)?).map_err(map_err(NAT_CONFIG))?,
            stats: PerCpuArray::try_from(take(ebpf, STATS)?).map_err(map_err(STATS))?,
            backend_stats: PerCpuHashMap::try_from(take(ebpf, BACKEND_STATS)?)
                .map_err(map_err(BACKEND_STATS))?,
        })
    }

    /// The translation events' ring buffer and switch, turned off: no reader yet
    /// (a previous agent's monitor ended with it).
    pub(super) fn take_events(ebpf: &mut Ebpf) -> Result<super::events::Source, ServicesError> {
        let mut source = super::events::Source {
            ring: RingBuf::try_from(take(ebpf, EVENTS)?).map_err(map_err(EVENTS))?,
            monitor: Array::try_from(take(ebpf, MONITOR)?).map_err(map_err(MONITOR))?,
        };
        source.set(false).map_err(map_err(MONITOR))?;
        Ok(source)
    }

    /// Makes backend `id`'s connection counter, at zero. Before the backend is in a
    /// slot, so no connection to it goes uncounted.
    pub(super) fn new_backend_counter(&mut self, id: u32) -> Result<(), ServicesError> {
        self.backend_stats
            .insert(id, zeroes()?, 0)
            .map_err(map_err(BACKEND_STATS))
    }

    /// Makes backend `id`'s counter unless it has one: a previous agent's backends,
    /// whose counts go on.
    pub(super) fn keep_backend_counter(&mut self, id: u32) -> Result<(), ServicesError> {
        const BPF_NOEXIST: u64 = 1;
        match self.backend_stats.insert(id, zeroes()?, BPF_NOEXIST) {
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(())
            }
            other => other.map_err(map_err(BACKEND_STATS)),
        }
    }

    /// Deletes backend `id`'s counter alone (tests: an older agent's backend).
    #[cfg(test)]
    pub(super) fn drop_backend_counter(&mut self, id: u32) {
        self.backend_stats.remove(&id).unwrap();
    }

    /// Every backend counter: (backend id, connections summed over CPUs).
    pub(super) fn backend_counts(&self) -> Result<Vec<(u32, u64)>, ServicesError> {
        let mut out = Vec::new();
        for entry in self.backend_stats.iter() {
            let (id, per_cpu) = entry.map_err(map_err(BACKEND_STATS))?;
            out.push((id, per_cpu.iter().sum()));
        }
        Ok(out)
    }

    /// Every counter of `strait_svc_stats`, summed over CPUs, by reason index. A
    /// map pinned by an older agent has fewer: the reasons it lacks read 0.
    pub(super) fn stats(&self) -> Result<[u64; REASON_MAX], ServicesError> {
        let mut out = [0u64; REASON_MAX];
        for (i, slot) in out.iter_mut().enumerate() {
            let per_cpu = match self.stats.get(&(i as u32), 0) {
                Ok(v) => v,
                Err(MapError::OutOfBounds { .. }) => continue,
                Err(e) => return Err(map_err(STATS)(e)),
            };
            *slot = per_cpu.iter().sum();
        }
        Ok(out)
    }

    /// Deletes `slots` of frontend `id`; absent ones are fine.
    pub(super) fn delete_slots(&mut self, id: u32, slots: std::ops::Range<u32>) {
        for slot in slots {
            let _ = self.slots.remove(&SlotKey { id, slot });
        }
    }

    /// Deletes backends by id, with their counters; absent ones are fine.
    pub(super) fn delete_backends(&mut self, ids: impl IntoIterator<Item = u32>) {
        for id in ids {
            let _ = self.backends.remove(&id);
            let _ = self.backend_stats.remove(&id);
        }
    }
}

/// A per-CPU value of zero on every CPU.
fn zeroes() -> Result<PerCpuValues<u64>, ServicesError> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| ServicesError::Map {
        map: BACKEND_STATS,
        reason: format!("{what}: {e}"),
    })?;
    PerCpuValues::try_from(vec![0u64; cpus]).map_err(|e| ServicesError::Map {
        map: BACKEND_STATS,
        reason: e.to_string(),
    })
}

/// IPv4 as IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
pub(super) fn addr_key(ip: IpAddr) -> AddrKey {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// [`addr_key`] back.
pub(super) fn key_addr(key: AddrKey) -> IpAddr {
    let v6 = Ipv6Addr::from(key);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// A frontend as its `strait_svc_frontends` key.
pub(super) fn svc_key(f: &Frontend) -> SvcKey {
    SvcKey {
        addr: addr_key(f.addr),
        port: f.port.to_be_bytes(),
        proto: f.proto.number(),
        scope: match f.scope {
            Scope::Local => SCOPE_LOCAL,
            Scope::Outside => SCOPE_OUTSIDE,
        },
    }
}

/// [`svc_key`] back; `None` for a scope or protocol this datapath does not make.
pub(super) fn key_frontend(k: &SvcKey) -> Option<Frontend> {
    let scope = match k.scope {
        SCOPE_LOCAL => Scope::Local,
        SCOPE_OUTSIDE => Scope::Outside,
        _ => return None,
    };
    Some(Frontend {
        addr: key_addr(k.addr),
        port: u16::from_be_bytes(k.port),
        proto: Protocol::from_number(k.proto)?,
        scope,
    })
}

pub(super) fn backend_value(b: &Backend, proto: Protocol) -> BackendValue {
    BackendValue {
        addr: addr_key(b.addr),
        port: b.port.to_be_bytes(),
        proto: proto.number(),
        flags: if b.local { BE_F_LOCAL } else { 0 },
    }
}

pub(super) fn value_backend(v: &BackendValue) -> Backend {
    Backend {
        addr: key_addr(v.addr),
        port: u16::from_be_bytes(v.port),
        local: v.flags & BE_F_LOCAL != 0,
    }
}

/// A backend id: its frontend's id in the high half, so the programs can tell
/// whose backend an affinity entry names (`STRAIT_SVC_BACKEND_FRONTEND`).
pub(super) fn backend_id(frontend: u32, index: u16) -> u32 {
    frontend << 16 | u32::from(index)
}

/// [`backend_id`] back: (frontend id, index).
pub(super) fn split_backend_id(id: u32) -> (u32, u16) {
    (id >> 16, id as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontends_and_backends_round_trip_through_their_entries() {
        for f in [
            Frontend {
                addr: "10.96.0.10".parse().unwrap(),
                port: 80,
                proto: Protocol::Tcp,
                scope: Scope::Local,
            },
            Frontend {
                addr: "fd00:96::a".parse().unwrap(),
                port: 53,
                proto: Protocol::Udp,
                scope: Scope::Outside,
            },
        ] {
            let k = svc_key(&f);
            assert_eq!(key_frontend(&k), Some(f));
            for local in [false, true] {
                let b = Backend {
                    addr: f.addr,
                    port: 8080,
                    local,
                };
                assert_eq!(value_backend(&backend_value(&b, f.proto)), b);
            }
        }
        let k = svc_key(&Frontend {
            addr: "10.96.0.10".parse().unwrap(),
            port: 0x1234,
            proto: Protocol::Tcp,
            scope: Scope::Local,
        });
        assert_eq!(&k.addr[10..], &[0xff, 0xff, 10, 96, 0, 10]);
        assert_eq!(k.port, [0x12, 0x34], "network order");
        assert_eq!(k.proto, 6);
        assert_eq!(k.scope, 0);
        assert_eq!(
            key_frontend(&SvcKey { scope: 1, ..k }).map(|f| f.scope),
            Some(Scope::Outside)
        );
        assert_eq!(key_frontend(&SvcKey { scope: 2, ..k }), None);
        assert_eq!(key_frontend(&SvcKey { proto: 1, ..k }), None);
    }

    #[test]
    fn a_backend_id_names_its_frontend() {
        let id = backend_id(7, 3);
        assert_eq!(id, 0x0007_0003);
        assert_eq!(split_backend_id(id), (7, 3));
        assert_eq!(split_backend_id(backend_id(65535, 65535)), (65535, 65535));
    }
}
