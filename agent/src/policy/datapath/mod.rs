//! The eBPF datapath of network policy (docs/policy.md "Datapath"):
//! [`PolicyDatapath`] implements [`Dataplane`] over the programs of
//! `ebpf/src/policy.c` and the maps of `ebpf/include/strait/policy.h`.
//!
//! - Programs: `strait_pol_from_ep` (tcx ingress of a container veth's host end: the
//!   container's egress) and `strait_pol_to_ep` (tcx egress: its ingress), attached
//!   without links ([`attach`]): they stay with the device when the agent exits,
//!   and the next agent replaces them in place.
//! - Maps: pinned by name under the bpf dir (`--bpf-dir`, [`DEFAULT_BPF_DIR`]),
//!   shared with the fast path's object (`FastPath::load_with_bpf_dir`), which runs
//!   the same ingress check before it delivers to an endpoint. A new agent loads
//!   the programs again but finds the maps, and with them every endpoint's tables
//!   and the conntrack, where the previous one left them ([`PolicyDatapath::load`]
//!   adopts them).
//! - Install is double-buffered: an endpoint's new tables are written under the
//!   version that is not live, then its `strait_pol_endpoints` entry (live
//!   version, generation, flags) is replaced in one update, then the old version's
//!   entries are deleted. A packet sees the old tables or the new, never a mix. A
//!   map that refuses an entry (full) leaves the old version live and untouched.
//!
//! [`maps`] turns tables into entries and back, [`conntrack`] lists and collects
//! the conntrack, [`events`] reads flow events, [`sys`] holds the two system calls
//! aya does not make.

pub(crate) mod abi;
pub(crate) mod attach;
pub mod bpffs;
pub mod conntrack;
mod events;
pub mod maps;
pub(crate) mod sys;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use aya::maps::lpm_trie::Key;
use aya::maps::{MapData, RingBuf};
use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};
use ipnet::IpNet;
use strait_policy::tables::EndpointTables;
use tokio::sync::broadcast;
use tracing::{info, warn};

pub use abi::PolicyReason;
pub use bpffs::{DEFAULT_BPF_DIR, PrivateBpffs, ensure_bpffs};
pub use conntrack::{Flow, GC_INTERVAL};
pub use maps::{RuleVerdict, canonical};

/// The policy maps' names: what another object that runs the check shares.
#[cfg(test)]
pub(crate) use abi::MAPS as POLICY_MAPS;

use super::dataplane::{Dataplane, DataplaneError, Installed, RawFlowEvent};
use abi::{
    CIDRS, CidrKey, ENDPOINTS, EVENTS, EndpointValue, FROM_ENDPOINT, IPCACHE, IpcacheValue, RULES,
    RuleKey, TO_ENDPOINT,
};
use maps::{CidrEntry, Maps, RuleEntry, map_err};
use sys::Hook;

/// What this agent knows it wrote for one endpoint: its live version's keys, so an
/// install deletes them without walking the whole trie.
#[derive(Clone, Default)]
struct Held {
    version: u8,
    rules: Vec<Key<RuleKey>>,
    cidrs: Vec<Key<CidrKey>>,
}

struct State {
    ebpf: Ebpf,
    maps: Maps,
    held: HashMap<u32, Held>,
    /// What the ipcache holds.
    ipcache: BTreeMap<IpNet, u32>,
    /// The last generation handed out; generations are unique across endpoints and
    /// restarts (see [`State::next_generation`]).
    generation: u32,
}

/// The loaded policy programs and their maps; see the module docs.
pub struct PolicyDatapath {
    state: Mutex<State>,
    bpf_dir: PathBuf,
    events: broadcast::Sender<RawFlowEvent>,
    /// The ring buffer while no reader task has it.
    ring: Arc<Mutex<Option<RingBuf<MapData>>>>,
}

/// How many events a slow subscriber may fall behind by before it loses some.
const EVENT_BACKLOG: usize = 4096;

fn load_err(e: impl std::fmt::Display) -> DataplaneError {
    DataplaneError::Load(e.to_string())
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut SchedClassifier, DataplaneError> {
    ebpf.program_mut(name)
        .ok_or_else(|| load_err(format!("program {name} is not in the object")))?
        .try_into()
        .map_err(|e| load_err(format!("program {name}: {e}")))
}

impl State {
    /// Unique across endpoints (so an entry a removed endpoint left behind never
    /// looks current to a new one with its address) and, by the wall clock's
    /// seconds as a floor, across restarts.
    fn next_generation(&mut self) -> u32 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        self.generation = self.generation.wrapping_add(1).max(now).max(1);
        self.generation
    }

    fn rule_entries(&self) -> Result<Vec<RuleEntry>, DataplaneError> {
        self.maps
            .rules
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(RULES))
    }

    fn cidr_entries(&self) -> Result<Vec<CidrEntry>, DataplaneError> {
        self.maps
            .cidrs
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(CIDRS))
    }

    /// Deletes the keys of a failed or superseded write; absent keys are fine.
    fn delete(&mut self, rules: &[Key<RuleKey>], cidrs: &[Key<CidrKey>]) {
        for k in rules {
            let _ = self.maps.rules.remove(k);
        }
        for k in cidrs {
            let _ = self.maps.cidrs.remove(k);
        }
    }

    /// Learns what the maps hold (a previous agent's endpoints) and deletes what no
    /// live version names: the half-written version of an install that was cut
    /// short, the tables of an endpoint whose entry is gone.
    fn adopt(&mut self) -> Result<(), DataplaneError> {
        let endpoints: HashMap<u32, EndpointValue> = self
            .maps
            .endpoints
            .iter()
            .collect::<Result<_, _>>()
            .map_err(map_err(ENDPOINTS))?;
        self.generation = endpoints.values().map(|e| e.generation).max().unwrap_or(0);
        let live = |ifindex: u32, version: u8| {
            endpoints
                .get(&ifindex)
                .is_some_and(|e| e.version == version)
        };
        let mut held: HashMap<u32, Held> = endpoints
            .iter()
            .map(|(i, e)| {
                (
                    *i,
                    Held {
                        version: e.version,
                        ..Held::default()
                    },
                )
            })
            .collect();
        let (mut stale_rules, mut stale_cidrs) = (Vec::new(), Vec::new());
        for (k, _) in self.rule_entries()? {
            let d = k.data();
            if live(d.ifindex, d.version) {
                held.entry(d.ifindex).or_default().rules.push(k);
            } else {
                stale_rules.push(k);
            }
        }
        for (k, _) in self.cidr_entries()? {
            let d = k.data();
            if live(d.ifindex, d.version) {
                held.entry(d.ifindex).or_default().cidrs.push(k);
            } else {
                stale_cidrs.push(k);
            }
        }
        if !stale_rules.is_empty() || !stale_cidrs.is_empty() {
            info!(
                rules = stale_rules.len(),
                cidrs = stale_cidrs.len(),
                "policy: deleting entries no live table names (an install or removal cut short)"
            );
            self.delete(&stale_rules, &stale_cidrs);
        }
        self.held = held;
        self.ipcache = BTreeMap::new();
        for entry in self.maps.ipcache.iter() {
            let (k, v) = entry.map_err(map_err(IPCACHE))?;
            if let Some(net) = maps::ipcache_net(&k) {
                self.ipcache.insert(net, v.identity);
            }
        }
        Ok(())
    }
}

/// The (key, value) sizes each policy map has in this build: a map pinned by an
/// agent whose layouts differ must not be taken over (aya reuses a pinned map
/// without comparing).
fn expected_sizes() -> [(&'static str, usize, usize); 8] {
    use std::mem::size_of;
    [
        (ENDPOINTS, size_of::<u32>(), size_of::<EndpointValue>()),
        (RULES, 4 + size_of::<RuleKey>(), size_of::<abi::CellValue>()),
        (CIDRS, 4 + size_of::<CidrKey>(), size_of::<u32>()),
        (
            IPCACHE,
            4 + size_of::<abi::AddrKey>(),
            size_of::<IpcacheValue>(),
        ),
        (
            abi::CONNTRACK,
            size_of::<abi::CtKey>(),
            size_of::<abi::CtEntry>(),
        ),
        (EVENTS, 0, 0),
        (abi::STATS, size_of::<u32>(), size_of::<u64>()),
        (
            abi::RULE_STATS,
            size_of::<abi::RuleStatKey>(),
            size_of::<u64>(),
        ),
    ]
}

/// Entries to create maps with instead of the object's sizes; `None`: the object's.
#[derive(Debug, Clone, Copy, Default)]
struct MapSizes {
    rules: Option<u32>,
    conntrack: Option<u32>,
}

/// Refuses pins under `bpf_dir` whose key or value size is not this build's.
fn check_pins(bpf_dir: &Path) -> Result<(), DataplaneError> {
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

impl PolicyDatapath {
    /// Loads the programs (not attached anywhere yet) with their maps pinned under
    /// `bpf_dir` (made a bpffs directory if needed, see [`ensure_bpffs`]), and
    /// adopts what the maps already hold.
    pub fn load(bpf_dir: &Path) -> Result<Self, DataplaneError> {
        Self::load_sized(bpf_dir, MapSizes::default())
    }

    /// [`PolicyDatapath::load`] with maps created at `sizes` when they are not
    /// pinned yet (tests of a full map).
    fn load_sized(bpf_dir: &Path, sizes: MapSizes) -> Result<Self, DataplaneError> {
        ensure_bpffs(bpf_dir).map_err(load_err)?;
        check_pins(bpf_dir)?;
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(bpf_dir);
        if let Some(n) = sizes.rules {
            loader.map_max_entries(RULES, n);
        }
        if let Some(n) = sizes.conntrack {
            loader.map_max_entries(abi::CONNTRACK, n);
        }
        let mut ebpf = loader.load(strait_ebpf::POLICY).map_err(load_err)?;
        for name in [FROM_ENDPOINT, TO_ENDPOINT] {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|e| load_err(format!("program {name}: {e}")))?;
        }
        let ring = RingBuf::try_from(
            ebpf.take_map(EVENTS)
                .ok_or_else(|| load_err("the event ring buffer is not in the object"))?,
        )
        .map_err(map_err(EVENTS))?;
        let maps = Maps::take(&mut ebpf)?;
        let mut state = State {
            ebpf,
            maps,
            held: HashMap::new(),
            ipcache: BTreeMap::new(),
            generation: 0,
        };
        state.adopt()?;
        if !state.held.is_empty() {
            info!(endpoints = state.held.len(), dir = %bpf_dir.display(), "policy: adopted the installed tables");
        }
        Ok(Self {
            state: Mutex::new(state),
            bpf_dir: bpf_dir.to_path_buf(),
            events: broadcast::channel(EVENT_BACKLOG).0,
            ring: Arc::new(Mutex::new(Some(ring))),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the maps are pinned.
    pub fn bpf_dir(&self) -> &Path {
        &self.bpf_dir
    }

    /// Flow events as the programs report them. The first subscriber starts a
    /// reader thread, which stops when the last one is gone.
    pub fn subscribe(&self) -> broadcast::Receiver<RawFlowEvent> {
        let rx = self.events.subscribe();
        let taken = self.ring.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(ring) = taken {
            let (tx, slot) = (self.events.clone(), self.ring.clone());
            let spawned = std::thread::Builder::new()
                .name("policy-events".into())
                .spawn(move || {
                    let ring = events::read(ring, tx);
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(ring);
                });
            if let Err(e) = spawned {
                warn!(error = %e, "policy events: cannot start the reader");
            }
        }
        rx
    }

    /// The events in the ring buffer now, read on the calling thread (tests, and a
    /// caller without a runtime); empty while a reader task has the ring buffer.
    pub fn drain_events(&self) -> Vec<RawFlowEvent> {
        match self.ring.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            Some(ring) => events::drain(ring),
            None => Vec::new(),
        }
    }

    /// The check's counters by reason.
    pub fn stats(&self) -> Result<BTreeMap<PolicyReason, u64>, DataplaneError> {
        let by_index = self.lock().maps.stats()?;
        Ok(PolicyReason::ALL
            .iter()
            .map(|r| (*r, by_index[r.index() as usize]))
            .collect())
    }

    /// Flows decided per (rule, verdict); rule `None` is the default.
    pub fn rule_stats(&self) -> Result<BTreeMap<(Option<u32>, RuleVerdict), u64>, DataplaneError> {
        self.lock().maps.rule_stats()
    }

    /// The conntrack, entry by entry.
    pub fn conntrack(&self) -> Result<Vec<Flow>, DataplaneError> {
        conntrack::list(&self.lock().maps)
    }

    /// Deletes expired conntrack entries (every [`GC_INTERVAL`]); returns how many.
    pub fn conntrack_gc(&self) -> Result<usize, DataplaneError> {
        conntrack::gc(&mut self.lock().maps)
    }

    /// Takes the policy programs off a device (policy switched off for it).
    pub fn detach(&self, ifname: &str, ifindex: u32) -> Result<(), DataplaneError> {
        for (name, hook) in [(FROM_ENDPOINT, Hook::Ingress), (TO_ENDPOINT, Hook::Egress)] {
            attach::detach(name, ifname, ifindex, hook).map_err(|reason| {
                DataplaneError::Attach {
                    ifname: ifname.to_string(),
                    reason,
                }
            })?;
        }
        Ok(())
    }

    /// Whether both programs are attached to `ifname` (any agent's copy).
    pub fn programs_attached(&self, ifname: &str) -> Result<bool, DataplaneError> {
        let mut all = true;
        for (name, hook) in [(FROM_ENDPOINT, Hook::Ingress), (TO_ENDPOINT, Hook::Egress)] {
            let ids = attach::attached_ids(name, ifname, hook).map_err(|reason| {
                DataplaneError::Attach {
                    ifname: ifname.to_string(),
                    reason,
                }
            })?;
            all &= !ids.is_empty();
        }
        Ok(all)
    }
}

impl Dataplane for PolicyDatapath {
    fn is_attached(&self, ifname: &str) -> Result<bool, DataplaneError> {
        self.programs_attached(ifname)
    }

    fn attach(&self, ifname: &str, ifindex: u32) -> Result<(), DataplaneError> {
        let mut s = self.lock();
        for (name, hook) in [(FROM_ENDPOINT, Hook::Ingress), (TO_ENDPOINT, Hook::Egress)] {
            let prog = classifier(&mut s.ebpf, name)?;
            attach::attach(prog, name, ifname, ifindex, hook).map_err(|reason| {
                DataplaneError::Attach {
                    ifname: ifname.to_string(),
                    reason,
                }
            })?;
        }
        Ok(())
    }

    fn install(
        &self,
        ifindex: u32,
        identity: u32,
        tables: &EndpointTables,
    ) -> Result<(), DataplaneError> {
        let mut s = self.lock();
        let old = s.held.get(&ifindex).cloned();
        let version = old.as_ref().map_or(0, |h| 1 - h.version);
        let (rules, cidrs) = maps::entries(ifindex, version, tables)
            .map_err(|reason| DataplaneError::Map { map: RULES, reason })?;
        // Nothing is under that version: adoption and every install delete what
        // they leave there.
        let mut written_rules = Vec::with_capacity(rules.len());
        let mut written_cidrs = Vec::with_capacity(cidrs.len());
        let mut failed = None;
        for (k, v) in &rules {
            if let Err(e) = s.maps.rules.insert(k, v, 0) {
                failed = Some(map_err(RULES)(e));
                break;
            }
            written_rules.push(*k);
        }
        if failed.is_none() {
            for (k, v) in &cidrs {
                if let Err(e) = s.maps.cidrs.insert(k, v, 0) {
                    failed = Some(map_err(CIDRS)(e));
                    break;
                }
                written_cidrs.push(*k);
            }
        }
        let generation = s.next_generation();
        let entry = EndpointValue {
            identity,
            generation,
            version,
            flags: maps::flags(tables),
            pad: [0; 2],
        };
        if failed.is_none()
            && let Err(e) = s.maps.endpoints.insert(ifindex, entry, 0)
        {
            failed = Some(map_err(ENDPOINTS)(e));
        }
        if let Some(e) = failed {
            s.delete(&written_rules, &written_cidrs);
            return Err(e);
        }
        // The new version is live: the old one goes.
        if let Some(old) = old {
            s.delete(&old.rules, &old.cidrs);
        }
        s.held.insert(
            ifindex,
            Held {
                version,
                rules: written_rules,
                cidrs: written_cidrs,
            },
        );
        Ok(())
    }

    fn remove(&self, ifindex: u32) -> Result<(), DataplaneError> {
        let mut s = self.lock();
        match s.maps.endpoints.remove(&ifindex) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(ENDPOINTS)(e)),
        }
        if let Some(held) = s.held.remove(&ifindex) {
            s.delete(&held.rules, &held.cidrs);
        }
        Ok(())
    }

    fn installed(&self) -> Result<Vec<u32>, DataplaneError> {
        let s = self.lock();
        let mut out: Vec<u32> = s
            .maps
            .endpoints
            .keys()
            .collect::<Result<_, _>>()
            .map_err(map_err(ENDPOINTS))?;
        out.sort_unstable();
        Ok(out)
    }

    fn read_back(&self, ifindex: u32) -> Result<Option<Installed>, DataplaneError> {
        let s = self.lock();
        let entry = match s.maps.endpoints.get(&ifindex, 0) {
            Ok(e) => e,
            Err(aya::maps::MapError::KeyNotFound) => return Ok(None),
            Err(e) => return Err(map_err(ENDPOINTS)(e)),
        };
        let tables = maps::read_back(
            ifindex,
            entry.version,
            entry.flags,
            &s.rule_entries()?,
            &s.cidr_entries()?,
        );
        Ok(Some(Installed {
            identity: entry.identity,
            generation: entry.generation,
            tables,
        }))
    }

    fn sync_ipcache(&self, wanted: &BTreeMap<IpNet, u32>) -> Result<(), DataplaneError> {
        let mut s = self.lock();
        let wanted: BTreeMap<IpNet, u32> = wanted.iter().map(|(n, i)| (n.trunc(), *i)).collect();
        // New and changed entries first, so no address is unknown in between.
        for (net, identity) in &wanted {
            if s.ipcache.get(net) != Some(identity) {
                let value = IpcacheValue {
                    identity: *identity,
                    pad: 0,
                };
                s.maps
                    .ipcache
                    .insert(&maps::ipcache_key(*net), value, 0)
                    .map_err(map_err(IPCACHE))?;
                s.ipcache.insert(*net, *identity);
            }
        }
        let stale: HashSet<IpNet> = s
            .ipcache
            .keys()
            .filter(|n| !wanted.contains_key(n))
            .copied()
            .collect();
        for net in stale {
            match s.maps.ipcache.remove(&maps::ipcache_key(net)) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(IPCACHE)(e)),
            }
            s.ipcache.remove(&net);
        }
        Ok(())
    }

    fn read_ipcache(&self) -> Result<BTreeMap<IpNet, u32>, DataplaneError> {
        let s = self.lock();
        let mut out = BTreeMap::new();
        for entry in s.maps.ipcache.iter() {
            let (k, v) = entry.map_err(map_err(IPCACHE))?;
            if let Some(net) = maps::ipcache_net(&k) {
                out.insert(net, v.identity);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod prog_tests;
