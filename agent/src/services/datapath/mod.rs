//! The socket-level datapath of services (docs/services.md "Datapath"):
//! [`ServicesDatapath`] loads the cgroup `sock_addr` programs of
//! `ebpf/src/services.c`, attaches them to a cgroup v2 directory and keeps the
//! service maps of `ebpf/include/strait/services.h`: per frontend (VIP, port,
//! protocol) its backends and its Maglev table, which the caller computes.
//!
//! - Programs: connect, sendmsg, recvmsg and getpeername, IPv4 and IPv6, attached
//!   without links ([`attach`]): they stay with the cgroup when the agent exits,
//!   and the next agent replaces them in place.
//! - Maps: pinned by name under the bpf dir; a new agent adopts the frontends the
//!   previous one installed, so translation goes on across a restart.
//! - Ids are the datapath's own: a frontend gets the lowest free id in 1..=65535
//!   and keeps it while it exists (its affinity entries are keyed by it); a backend
//!   is `frontend id << 16 | index` and keeps its index while it stays a backend of
//!   that frontend.
//! - An install writes new backends, then the slots the table grows by, then
//!   overwrites the slots that were there, then the frontend entry, then deletes
//!   what the new table no longer uses. A connect reads one slot, so it sees a
//!   backend of the old table or of the new, each of which exists while it can be
//!   read. A map that refuses an entry (full) can only do so while new keys are
//!   written, before any existing entry changed: those are deleted again and the
//!   frontend works as before.
//!
//! - Scopes: a frontend is installed per way it is reached ([`Scope`]): by this
//!   node's sockets (the cgroup programs) or by packets from outside the node (the
//!   tc programs of `ebpf/src/services_tc.c` on the underlay interface, attached
//!   with [`ServicesDatapath::attach_net`]; docs/services.md "Packet-level
//!   translation"). Each is a frontend of its own, with its own id and backends.
//!
//! [`maps`] turns frontends and backends into entries and back, [`sys`] holds the
//! system calls aya does not make.

mod abi;
mod attach;
mod events;
mod maps;
mod sys;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aya::maps::{MapData, MapError};
use aya::programs::{CgroupSockAddr, SchedClassifier};
use aya::{Ebpf, EbpfLoader};
use tokio::sync::broadcast;
use tracing::info;

pub use abi::{ServiceReason, TABLE_MAX};
pub use events::{Translation, TranslationKind};

use crate::policy::datapath::attach as tcx;
use crate::policy::datapath::ensure_bpffs;
use abi::{
    BACKENDS, BackendValue, F_AFFINITY, FRONTENDS, FrontendValue, MAPS, NAT_CONFIG, NatConfig,
    PROGRAMS, SLOTS, SlotKey, TC_PROGRAMS,
};
use maps::{Maps, map_err};

/// A transport protocol a service can be reached by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// Who reaches a frontend: each scope is installed (and translated) on its own.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// A socket of this node (the cgroup programs): every kind of frontend.
    #[default]
    Local,
    /// A packet from outside the node, at the underlay interface (the tc
    /// programs): node ports and external IPs.
    Outside,
}

/// A service address as clients connect to it, and who does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: Protocol,
    pub scope: Scope,
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            std::net::SocketAddr::new(self.addr, self.port),
            self.proto
        )?;
        if self.scope == Scope::Outside {
            f.write_str(" (from outside)")?;
        }
        Ok(())
    }
}

/// Where a frontend's connections go; same protocol as the frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    pub addr: IpAddr,
    pub port: u16,
    /// On this node: a packet from outside is only DNATed to it, and keeps the
    /// client's address; a backend elsewhere is also SNATed to this node's, so
    /// its reply comes back here to be translated. (Sockets do not care.)
    pub local: bool,
}

/// A frontend as the maps hold it ([`ServicesDatapath::frontends`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Its backends, in the order of their ids.
    pub backends: Vec<Backend>,
    /// The Maglev table: `table[slot]` indexes `backends`; [`Installed::MISSING`]
    /// for a slot that is absent or names no backend (connects landing there are
    /// refused).
    pub table: Vec<u32>,
    pub affinity: Option<Duration>,
}

impl Installed {
    pub const MISSING: u32 = u32::MAX;

    /// The backend of each slot (`None`: missing).
    pub fn slots(&self) -> impl Iterator<Item = Option<Backend>> + '_ {
        self.table
            .iter()
            .map(|&i| self.backends.get(i as usize).copied())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServicesError {
    #[error("services datapath: loading: {0}")]
    Load(String),
    #[error("services datapath: cgroup {}: {reason}", cgroup.display())]
    Attach { cgroup: PathBuf, reason: String },
    #[error("services datapath: device {device}: {reason}")]
    AttachNet { device: String, reason: String },
    #[error("services datapath: map {map}: {reason}")]
    Map { map: &'static str, reason: String },
    /// Refused before anything was written.
    #[error("services datapath: {frontend}: {reason}")]
    Invalid { frontend: String, reason: String },
}

fn load_err(e: impl fmt::Display) -> ServicesError {
    ServicesError::Load(e.to_string())
}

/// What this agent knows it wrote for one frontend.
#[derive(Debug, Clone)]
struct Held {
    id: u32,
    table_size: u32,
    /// Each backend's index: its id is `id << 16 | index`.
    backends: BTreeMap<Backend, u16>,
}

impl Held {
    fn backend_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.backends
            .values()
            .map(|&i| maps::backend_id(self.id, i))
    }
}

struct State {
    ebpf: Ebpf,
    /// The packet-level programs' object (`services_tc.c`): the same pinned maps.
    tc: Ebpf,
    maps: Maps,
    held: HashMap<Frontend, Held>,
    /// Ids of frontend entries this build does not read (another scope): never
    /// handed out.
    foreign: HashSet<u32>,
}

/// The largest frontend id: the high half of a backend id.
const FRONTEND_ID_MAX: u32 = 0xffff;

impl State {
    fn free_frontend_id(&self) -> Option<u32> {
        let used: HashSet<u32> = self
            .held
            .values()
            .map(|h| h.id)
            .chain(self.foreign.iter().copied())
            .collect();
        (1..=FRONTEND_ID_MAX).find(|id| !used.contains(id))
    }

    /// Learns what the maps hold (a previous agent's frontends) and deletes what no
    /// frontend names: the backends and slots of an install or removal cut short.
    fn adopt(&mut self) -> Result<(), ServicesError> {
        let mut by_id: HashMap<u32, Frontend> = HashMap::new();
        for entry in self.maps.frontends.iter() {
            let (k, v) = entry.map_err(map_err(FRONTENDS))?;
            match maps::key_frontend(&k) {
                Some(f) => {
                    by_id.insert(v.id, f);
                    self.held.insert(
                        f,
                        Held {
                            id: v.id,
                            table_size: v.table_size,
                            backends: BTreeMap::new(),
                        },
                    );
                }
                None => {
                    self.foreign.insert(v.id);
                }
            }
        }
        let mut stale_backends = Vec::new();
        for entry in self.maps.backends.iter() {
            let (bid, v) = entry.map_err(map_err(BACKENDS))?;
            let (fid, index) = maps::split_backend_id(bid);
            match by_id.get(&fid).and_then(|f| self.held.get_mut(f)) {
                Some(h) => {
                    h.backends.insert(maps::value_backend(&v), index);
                }
                None if !self.foreign.contains(&fid) => stale_backends.push(bid),
                None => {}
            }
        }
        // Counters: every backend kept has one (an older agent's maps had none),
        // and none is left without its backend.
        let live: HashSet<u32> = self.held.values().flat_map(Held::backend_ids).collect();
        for &bid in &live {
            self.maps.keep_backend_counter(bid)?;
        }
        for (bid, _) in self.maps.backend_counts()? {
            if !live.contains(&bid) && !self.foreign.contains(&maps::split_backend_id(bid).0) {
                stale_backends.push(bid);
            }
        }
        let mut stale_slots = Vec::new();
        for key in self.maps.slots.keys() {
            let k = key.map_err(map_err(SLOTS))?;
            let live = match by_id.get(&k.id).and_then(|f| self.held.get(f)) {
                Some(h) => k.slot < h.table_size,
                None => self.foreign.contains(&k.id),
            };
            if !live {
                stale_slots.push(k);
            }
        }
        if !stale_backends.is_empty() || !stale_slots.is_empty() {
            info!(
                backends = stale_backends.len(),
                slots = stale_slots.len(),
                "services: deleting entries no frontend names (an install or removal cut short)"
            );
            self.maps.delete_backends(stale_backends);
            for k in stale_slots {
                let _ = self.maps.slots.remove(&k);
            }
        }
        Ok(())
    }
}

/// The (key, value) sizes each service map has in this build: a map pinned by an
/// agent whose layouts differ must not be taken over (aya reuses a pinned map
/// without comparing).
fn expected_sizes() -> [(&'static str, usize, usize); 11] {
    use std::mem::size_of;
    [
        (
            FRONTENDS,
            size_of::<abi::SvcKey>(),
            size_of::<FrontendValue>(),
        ),
        (SLOTS, size_of::<SlotKey>(), size_of::<u32>()),
        (BACKENDS, size_of::<u32>(), size_of::<BackendValue>()),
        (
            abi::REVNAT,
            size_of::<abi::RevNatKey>(),
            size_of::<abi::RevNatValue>(),
        ),
        (
            abi::AFFINITY,
            size_of::<abi::AffinityKey>(),
            size_of::<abi::AffinityValue>(),
        ),
        (abi::STATS, size_of::<u32>(), size_of::<u64>()),
        (abi::CT, size_of::<abi::CtKey>(), size_of::<abi::CtValue>()),
        (NAT_CONFIG, size_of::<u32>(), size_of::<NatConfig>()),
        (abi::BACKEND_STATS, size_of::<u32>(), size_of::<u64>()),
        (abi::EVENTS, 0, 0),
        (abi::MONITOR, size_of::<u32>(), size_of::<u32>()),
    ]
}

/// Refuses pins under `bpf_dir` whose key or value size is not this build's.
fn check_pins(bpf_dir: &Path) -> Result<(), ServicesError> {
    for (name, key, value) in expected_sizes() {
        let path = bpf_dir.join(name);
        if !path.exists() {
            continue;
        }
        let info = MapData::from_pin(&path)
            .and_then(|m| m.info())
            .map_err(|e| load_err(format!("pinned map {}: {e}", path.display())))?;
        let (k, v) = (info.key_size() as usize, info.value_size() as usize);
        if (k, v) != (key, value) {
            return Err(load_err(format!(
                "pinned map {} has {k}-byte keys and {v}-byte values, this agent's has {key} and \
                 {value}: it was made by an incompatible version; remove it to start afresh",
                path.display()
            )));
        }
    }
    Ok(())
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut CgroupSockAddr, ServicesError> {
    ebpf.program_mut(name)
        .ok_or_else(|| load_err(format!("program {name} is not in the object")))?
        .try_into()
        .map_err(|e| load_err(format!("program {name}: {e}")))
}

fn tc_program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut SchedClassifier, ServicesError> {
    ebpf.program_mut(name)
        .ok_or_else(|| load_err(format!("program {name} is not in the object")))?
        .try_into()
        .map_err(|e| load_err(format!("program {name}: {e}")))
}

/// Checks what [`ServicesDatapath::install`] is given before anything is written.
fn validate(
    frontend: &Frontend,
    backends: &[Backend],
    table: &[u32],
    affinity: Option<Duration>,
) -> Result<(), String> {
    if backends.len() > usize::from(u16::MAX) {
        return Err(format!(
            "{} backends, at most {} per frontend",
            backends.len(),
            u16::MAX
        ));
    }
    if table.len() > TABLE_MAX {
        return Err(format!(
            "a table of {} slots, at most {TABLE_MAX}",
            table.len()
        ));
    }
    if backends.is_empty() != table.is_empty() {
        return Err(format!(
            "{} backends and a table of {} slots: both or neither must be empty",
            backends.len(),
            table.len()
        ));
    }
    if let Some(bad) = table.iter().find(|&&i| i as usize >= backends.len()) {
        return Err(format!(
            "the table names backend {bad}, there are {}",
            backends.len()
        ));
    }
    let v4 = frontend.addr.is_ipv4();
    if let Some(b) = backends.iter().find(|b| b.addr.is_ipv4() != v4) {
        return Err(format!(
            "backend {} is not of the frontend's address family",
            std::net::SocketAddr::new(b.addr, b.port)
        ));
    }
    if let Some(d) = affinity
        && (d.as_secs() == 0 || d.as_secs() > u64::from(u32::MAX))
    {
        return Err(format!(
            "an affinity timeout of {d:?}: from 1 s to {} s",
            u32::MAX
        ));
    }
    Ok(())
}

/// The loaded services programs and their maps; see the module docs.
pub struct ServicesDatapath {
    state: Mutex<State>,
    bpf_dir: PathBuf,
    events: broadcast::Sender<Translation>,
    /// The events' ring buffer while no reader thread has it.
    source: events::Slot,
}

/// How many translations a slow subscriber may fall behind by before it loses some.
const EVENT_BACKLOG: usize = 4096;

impl ServicesDatapath {
    /// Loads the programs (attached nowhere yet) with their maps pinned under
    /// `bpf_dir` (made a bpffs directory if needed), and adopts the frontends the
    /// maps already hold.
    pub fn load(bpf_dir: &Path) -> Result<Self, ServicesError> {
        Self::load_sized(bpf_dir, None)
    }

    /// [`ServicesDatapath::load`] with the slot map created at `slots` entries when
    /// it is not pinned yet (tests of a full map).
    fn load_sized(bpf_dir: &Path, slots: Option<u32>) -> Result<Self, ServicesError> {
        ensure_bpffs(bpf_dir).map_err(load_err)?;
        check_pins(bpf_dir)?;
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(bpf_dir);
        if let Some(n) = slots {
            loader.map_max_entries(SLOTS, n);
        }
        let mut ebpf = loader.load(strait_ebpf::SERVICES).map_err(load_err)?;
        for (name, _) in PROGRAMS {
            program(&mut ebpf, name)?
                .load()
                .map_err(|e| load_err(format!("program {name}: {e}")))?;
        }
        let maps = Maps::take(&mut ebpf)?;
        // Loaded second: its maps are the pins the first object just made or found.
        let mut tc = loader.load(strait_ebpf::SERVICES_TC).map_err(load_err)?;
        for (name, _) in TC_PROGRAMS {
            tc_program(&mut tc, name)?
                .load()
                .map_err(|e| load_err(format!("program {name}: {e}")))?;
        }
        let mut state = State {
            ebpf,
            tc,
            maps,
            held: HashMap::new(),
            foreign: HashSet::new(),
        };
        state.adopt()?;
        let source = Maps::take_events(&mut state.ebpf)?;
        if !state.held.is_empty() {
            info!(frontends = state.held.len(), dir = %bpf_dir.display(), "services: adopted the installed frontends");
        }
        Ok(Self {
            state: Mutex::new(state),
            bpf_dir: bpf_dir.to_path_buf(),
            events: broadcast::channel(EVENT_BACKLOG).0,
            source: Arc::new(Mutex::new(Some(source))),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the maps are pinned.
    pub fn bpf_dir(&self) -> &Path {
        &self.bpf_dir
    }

    /// Attaches every program to the cgroup v2 directory `cgroup` (the agent: the
    /// cgroup2 root), in place of a previous agent's copies. The programs that
    /// show the service address back go on first, so no socket is translated
    /// before its replies can be.
    pub fn attach(&self, cgroup: &Path) -> Result<(), ServicesError> {
        let err = |reason: String| ServicesError::Attach {
            cgroup: cgroup.to_path_buf(),
            reason,
        };
        let dir = attach::open(cgroup).map_err(err)?;
        let mut s = self.lock();
        for (name, hook) in PROGRAMS {
            let prog = program(&mut s.ebpf, name)?;
            attach::attach(prog, name, hook, &dir).map_err(err)?;
        }
        Ok(())
    }

    /// Takes strait's services programs (any agent's copies) off `cgroup`: for
    /// `--services off` and tests; needs nothing loaded. Returns how many there
    /// were. The programs that translate go first.
    pub fn detach(cgroup: &Path) -> Result<usize, ServicesError> {
        let err = |reason: String| ServicesError::Attach {
            cgroup: cgroup.to_path_buf(),
            reason,
        };
        let dir = attach::open(cgroup).map_err(err)?;
        let mut n = 0;
        for (name, hook) in PROGRAMS.iter().rev() {
            n += attach::detach(&dir, name, *hook).map_err(err)?;
        }
        Ok(n)
    }

    /// strait's services programs on `cgroup`, as (program name, kernel program
    /// id), in attach order.
    pub fn attached(cgroup: &Path) -> Result<Vec<(&'static str, u32)>, ServicesError> {
        let err = |reason: String| ServicesError::Attach {
            cgroup: cgroup.to_path_buf(),
            reason,
        };
        let dir = attach::open(cgroup).map_err(err)?;
        let mut out = Vec::new();
        for (name, hook) in PROGRAMS {
            for id in attach::attached_ids(&dir, name, hook).map_err(err)? {
                out.push((name, id));
            }
        }
        Ok(out)
    }

    /// Attaches the packet-level programs to the underlay interface `ifname`
    /// (`ifindex` in the calling thread's network namespace) with tcx, in place
    /// of a previous agent's copies, after writing the node's SNAT addresses
    /// (`None`: flows of that family to a backend elsewhere are dropped). The
    /// attachment belongs to the device and outlives the agent, like the policy
    /// programs'. The reply translation goes on first.
    pub fn attach_net(
        &self,
        ifname: &str,
        ifindex: u32,
        snat4: Option<Ipv4Addr>,
        snat6: Option<Ipv6Addr>,
    ) -> Result<(), ServicesError> {
        let err = |reason: String| ServicesError::AttachNet {
            device: ifname.to_string(),
            reason,
        };
        let mut s = self.lock();
        let config = NatConfig {
            snat4: snat4.map_or([0; 16], |a| maps::addr_key(IpAddr::V4(a))),
            snat6: snat6.map_or([0; 16], |a| maps::addr_key(IpAddr::V6(a))),
        };
        s.maps
            .nat_config
            .set(0, config, 0)
            .map_err(map_err(NAT_CONFIG))?;
        for (name, hook) in TC_PROGRAMS {
            let prog = tc_program(&mut s.tc, name)?;
            tcx::attach(prog, name, ifname, ifindex, hook).map_err(err)?;
        }
        Ok(())
    }

    /// Attaches the reply translation alone (`strait_svc_to_net`, tcx egress) to the
    /// fabric device `ifname` (vxlan), in place of a previous agent's copy: a local
    /// backend's reply to a client on another node (that reached this node's node
    /// port) leaves through the tunnel, not the underlay, and needs its source
    /// turned back into the frontend there. New flows never come in through the
    /// fabric device: node ports are reached at the node's underlay addresses.
    pub fn attach_reply_net(&self, ifname: &str, ifindex: u32) -> Result<(), ServicesError> {
        let (name, hook) = TC_PROGRAMS[0];
        debug_assert_eq!(name, "strait_svc_to_net");
        let mut s = self.lock();
        let prog = tc_program(&mut s.tc, name)?;
        tcx::attach(prog, name, ifname, ifindex, hook).map_err(|reason| ServicesError::AttachNet {
            device: ifname.to_string(),
            reason,
        })
    }

    /// Takes the packet-level programs (any agent's copies) off `ifname`; needs
    /// nothing loaded. Returns how many there were. The translation of new flows
    /// goes first.
    pub fn detach_net(ifname: &str, ifindex: u32) -> Result<usize, ServicesError> {
        let mut n = 0;
        for (name, hook) in TC_PROGRAMS.iter().rev() {
            n += tcx::detach(name, ifname, ifindex, *hook).map_err(|reason| {
                ServicesError::AttachNet {
                    device: ifname.to_string(),
                    reason,
                }
            })?;
        }
        Ok(n)
    }

    /// The packet-level programs on `ifname`, as (program name, kernel program id).
    pub fn attached_net(ifname: &str) -> Result<Vec<(&'static str, u32)>, ServicesError> {
        let mut out = Vec::new();
        for (name, hook) in TC_PROGRAMS {
            let ids = tcx::attached_ids(name, ifname, hook).map_err(|reason| {
                ServicesError::AttachNet {
                    device: ifname.to_string(),
                    reason,
                }
            })?;
            out.extend(ids.into_iter().map(|id| (name, id)));
        }
        Ok(out)
    }

    /// Deletes the service maps' pins under `bpf_dir` (`--services off`, tests);
    /// the maps go once no program uses them. Returns how many there were.
    pub fn remove_pins(bpf_dir: &Path) -> Result<usize, ServicesError> {
        let mut n = 0;
        for name in MAPS {
            match std::fs::remove_file(bpf_dir.join(name)) {
                Ok(()) => n += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(load_err(format!("removing the pin {name}: {e}"))),
            }
        }
        Ok(n)
    }

    /// Installs `frontend` with `backends` and its Maglev table (`table[slot]` is an
    /// index into `backends`; `table.len()` is M, at most [`TABLE_MAX`]), in place
    /// of what it had. No backends (and an empty table): connects to it are
    /// refused. `affinity`: ClientIP session affinity with that timeout, by the
    /// client's network namespace.
    ///
    /// Bad input is refused before anything is written. A map that refuses an
    /// entry leaves the frontend as it was (see the module docs).
    pub fn install(
        &self,
        frontend: &Frontend,
        backends: &[Backend],
        table: &[u32],
        affinity: Option<Duration>,
    ) -> Result<(), ServicesError> {
        validate(frontend, backends, table, affinity).map_err(|reason| ServicesError::Invalid {
            frontend: frontend.to_string(),
            reason,
        })?;
        let mut s = self.lock();
        let old = s.held.get(frontend).cloned();
        let id = match &old {
            Some(h) => h.id,
            None => s.free_frontend_id().ok_or_else(|| ServicesError::Invalid {
                frontend: frontend.to_string(),
                reason: format!("every frontend id is taken ({FRONTEND_ID_MAX} frontends)"),
            })?,
        };
        let old_backends = old.as_ref().map(|h| h.backends.clone()).unwrap_or_default();
        let old_size = old.as_ref().map_or(0, |h| h.table_size);

        // Indices: a backend that stays keeps its own; a new one takes one that no
        // backend of the old table had, so no live slot's backend changes under it.
        let mut assigned: BTreeMap<Backend, u16> = BTreeMap::new();
        for b in backends {
            if let Some(&i) = old_backends.get(b) {
                assigned.insert(*b, i);
            }
        }
        let mut taken: HashSet<u16> = old_backends.values().copied().collect();
        let mut next = 0u32;
        for b in backends {
            if assigned.contains_key(b) {
                continue;
            }
            while next <= u32::from(u16::MAX) && taken.contains(&(next as u16)) {
                next += 1;
            }
            if next > u32::from(u16::MAX) {
                return Err(ServicesError::Invalid {
                    frontend: frontend.to_string(),
                    reason: "no backend index is free beside the old table's".into(),
                });
            }
            taken.insert(next as u16);
            assigned.insert(*b, next as u16);
        }
        let slot_ids: Vec<u32> = table
            .iter()
            .map(|&i| maps::backend_id(id, assigned[&backends[i as usize]]))
            .collect();
        let new_size = table.len() as u32;
        let context = |e: ServicesError| match e {
            ServicesError::Map { map, reason } => ServicesError::Map {
                map,
                reason: format!("{reason} (installing {frontend}; it is left as it was)"),
            },
            other => other,
        };

        // 1. New backends.
        let mut new_ids = Vec::new();
        for (b, &i) in &assigned {
            if old_backends.contains_key(b) {
                continue;
            }
            let bid = maps::backend_id(id, i);
            // Its counter first: a connect can reach the backend as soon as a slot
            // names it, and counts only into a counter that is there.
            if let Err(e) = s.maps.new_backend_counter(bid) {
                new_ids.push(bid);
                s.maps.delete_backends(new_ids);
                return Err(context(e));
            }
            if let Err(e) = s
                .maps
                .backends
                .insert(bid, maps::backend_value(b, frontend.proto), 0)
            {
                new_ids.push(bid);
                s.maps.delete_backends(new_ids);
                return Err(context(map_err(BACKENDS)(e)));
            }
            new_ids.push(bid);
        }
        // 2. The slots the table grows by: new keys, invisible while the frontend
        //    entry says the old size.
        for slot in old_size..new_size {
            let key = SlotKey { id, slot };
            if let Err(e) = s.maps.slots.insert(key, slot_ids[slot as usize], 0) {
                s.maps.delete_slots(id, old_size..slot);
                s.maps.delete_backends(new_ids);
                return Err(context(map_err(SLOTS)(e)));
            }
        }
        // 3. The slots both tables have, in place: each names a backend of the old
        //    table or of the new, all of which exist now. A failure here (not a
        //    full map: the keys exist) leaves a mixed table of live backends.
        let mixed = |s: &mut State| {
            let mut backends = old_backends.clone();
            backends.extend(assigned.iter().map(|(b, i)| (*b, *i)));
            s.held.insert(
                *frontend,
                Held {
                    id,
                    table_size: old_size.max(new_size),
                    backends,
                },
            );
        };
        for slot in 0..old_size.min(new_size) {
            if let Err(e) = s
                .maps
                .slots
                .insert(SlotKey { id, slot }, slot_ids[slot as usize], 0)
            {
                mixed(&mut s);
                return Err(map_err(SLOTS)(e));
            }
        }
        // 4. The frontend entry: the new size, count and affinity at once.
        let value = FrontendValue {
            id,
            table_size: new_size,
            affinity_secs: affinity.map_or(0, |d| d.as_secs() as u32),
            backends: assigned.len() as u16,
            flags: if affinity.is_some() { F_AFFINITY } else { 0 },
            pad: 0,
        };
        if let Err(e) = s.maps.frontends.insert(maps::svc_key(frontend), value, 0) {
            if old.is_none() {
                s.maps.delete_slots(id, 0..new_size);
                s.maps.delete_backends(new_ids);
                return Err(context(map_err(FRONTENDS)(e)));
            }
            mixed(&mut s);
            return Err(map_err(FRONTENDS)(e));
        }
        // 5. What the new table no longer uses.
        s.maps.delete_slots(id, new_size..old_size);
        let gone: Vec<u32> = old_backends
            .iter()
            .filter(|(b, _)| !assigned.contains_key(b))
            .map(|(_, &i)| maps::backend_id(id, i))
            .collect();
        s.maps.delete_backends(gone);
        s.held.insert(
            *frontend,
            Held {
                id,
                table_size: new_size,
                backends: assigned,
            },
        );
        Ok(())
    }

    /// Removes `frontend`: connects to its address are no longer translated.
    /// Returns whether it was installed.
    pub fn remove(&self, frontend: &Frontend) -> Result<bool, ServicesError> {
        let mut s = self.lock();
        let Some(held) = s.held.get(frontend).cloned() else {
            return Ok(false);
        };
        match s.maps.frontends.remove(&maps::svc_key(frontend)) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(FRONTENDS)(e)),
        }
        s.maps.delete_slots(held.id, 0..held.table_size);
        let ids: Vec<u32> = held.backend_ids().collect();
        s.maps.delete_backends(ids);
        s.held.remove(frontend);
        Ok(true)
    }

    /// Every frontend as the maps hold it, read back from the kernel, sorted.
    pub fn frontends(&self) -> Result<Vec<(Frontend, Installed)>, ServicesError> {
        let s = self.lock();
        let mut by_frontend: HashMap<u32, Vec<(u16, Backend)>> = HashMap::new();
        for entry in s.maps.backends.iter() {
            let (bid, v) = entry.map_err(map_err(BACKENDS))?;
            let (fid, index) = maps::split_backend_id(bid);
            by_frontend
                .entry(fid)
                .or_default()
                .push((index, maps::value_backend(&v)));
        }
        let mut out = Vec::new();
        for entry in s.maps.frontends.iter() {
            let (k, v) = entry.map_err(map_err(FRONTENDS))?;
            let Some(frontend) = maps::key_frontend(&k) else {
                continue;
            };
            let mut list = by_frontend.remove(&v.id).unwrap_or_default();
            list.sort();
            let position: HashMap<u32, u32> = list
                .iter()
                .enumerate()
                .map(|(pos, (index, _))| (maps::backend_id(v.id, *index), pos as u32))
                .collect();
            let mut table = Vec::with_capacity(v.table_size as usize);
            for slot in 0..v.table_size {
                let bid = match s.maps.slots.get(&SlotKey { id: v.id, slot }, 0) {
                    Ok(bid) => Some(bid),
                    Err(MapError::KeyNotFound) => None,
                    Err(e) => return Err(map_err(SLOTS)(e)),
                };
                table.push(
                    bid.and_then(|b| position.get(&b).copied())
                        .unwrap_or(Installed::MISSING),
                );
            }
            out.push((
                frontend,
                Installed {
                    backends: list.into_iter().map(|(_, b)| b).collect(),
                    table,
                    affinity: (v.flags & F_AFFINITY != 0)
                        .then(|| Duration::from_secs(u64::from(v.affinity_secs))),
                },
            ));
        }
        out.sort_by_key(|(f, _)| *f);
        Ok(out)
    }

    /// The connections each installed backend was given while it has been one
    /// (socket connects, unconnected UDP datagrams, new flows from outside), by
    /// frontend. A backend keeps its count while it stays a backend of the
    /// frontend, across installs and agent restarts; one that leaves loses it.
    pub fn backend_connections(&self) -> Result<Vec<(Frontend, Backend, u64)>, ServicesError> {
        let s = self.lock();
        let mut by_id: HashMap<u32, (Frontend, Backend)> = HashMap::new();
        for (f, h) in &s.held {
            for (b, &i) in &h.backends {
                by_id.insert(maps::backend_id(h.id, i), (*f, *b));
            }
        }
        let mut out: Vec<(Frontend, Backend, u64)> = s
            .maps
            .backend_counts()?
            .into_iter()
            .filter_map(|(bid, n)| by_id.get(&bid).map(|(f, b)| (*f, *b, n)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Translations as the programs report them (`netctl monitor`). The first
    /// subscriber starts a reader thread and turns the programs' events on; they
    /// go off again when the last one is gone.
    pub fn translations(&self) -> broadcast::Receiver<Translation> {
        let mut held = self.source.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.events.subscribe();
        if let Some(source) = held.take() {
            let (tx, slot) = (self.events.clone(), self.source.clone());
            let spawned = std::thread::Builder::new()
                .name("services-events".into())
                .spawn(move || events::read(source, tx, slot));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "services events: cannot start the reader");
            }
        }
        rx
    }

    /// Turns the events on and reads what the ring buffer holds on the calling
    /// thread (tests); empty while a reader thread has the ring buffer.
    #[cfg(test)]
    fn drain_translations(&self) -> Vec<Translation> {
        let mut held = self.source.lock().unwrap_or_else(|p| p.into_inner());
        match held.as_mut() {
            Some(source) => {
                source.set(true).unwrap();
                source.drain()
            }
            None => Vec::new(),
        }
    }

    /// How many entries the packet-level flow table holds (two per flow: its
    /// forward and its reply direction).
    pub fn nat_entries(&self) -> Result<usize, ServicesError> {
        let s = self.lock();
        let mut n = 0;
        for key in s.maps.ct.keys() {
            key.map_err(map_err(abi::CT))?;
            n += 1;
        }
        Ok(n)
    }

    /// The programs' counters by reason, summed over CPUs.
    pub fn stats(&self) -> Result<BTreeMap<ServiceReason, u64>, ServicesError> {
        let by_index = self.lock().maps.stats()?;
        Ok(ServiceReason::ALL
            .iter()
            .map(|r| (*r, by_index[r.index() as usize]))
            .collect())
    }
}

#[cfg(test)]
mod prog_tests;
#[cfg(test)]
mod tests;
