//! The eBPF forwarding fast path (docs/datapath.md): strait's tc programs
//! (`ebpf/src/fastpath.c`) on the ingress of every container veth's host end and of
//! the fabric device, moving container packets straight to the device they leave by
//! instead of through the host's IP forwarding.
//!
//! This module owns loading the programs, attaching them, and their maps: the local
//! endpoints by address, the other nodes' blocks behind their VTEPs (written by the
//! fabric from the same desired state as its routes), the config (on/off, fabric
//! device) and the counters.
//!
//! Attachments are tc filters in a clsact qdisc, made over netlink at a fixed
//! priority and handle. They stay when the agent exits, so a restart changes nothing
//! for traffic; the next agent replaces each filter in place (atomic in cls_bpf). A
//! veth's filter goes with the veth. (tcx links would need no qdisc, but each attach
//! and detach waits for an RCU grace period under RTNL: 15 ms per container here,
//! seconds for a burst.)
//!
//! A packet the programs deliver to a local endpoint passes that endpoint's
//! ingress policy first (the check of `ebpf/include/strait/policy.h`, with the
//! policy maps shared through the bpf dir, see [`FastPath::load_with_bpf_dir`]):
//! `bpf_redirect_peer` skips the veth's tcx egress, where the policy programs check.
//!
//! A new veth is attached off the ADD path, once it has settled ([`SETTLE`]): a
//! chained `bandwidth` plugin adds its own `ingress` qdisc to the veth right after
//! strait's ADD, and clsact would take that slot. A veth with an `ingress` qdisc is
//! left to the kernel; the fast path would also skip the shaping there.

mod abi;
mod endpoints;
mod maps;
pub mod nat;
pub mod qdisc;
pub mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle};
use aya::programs::{SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use ipnet::IpNet;
use strait_api::routes::EntryState;
use strait_api::{FastPathEntry, FastPathMaps, FastPathMode, FastPathStatus};
use tracing::{debug, info, warn};

pub use abi::Reason;
pub use maps::Stats;

use crate::netlink::format_mac;

use abi::{FROM_ENDPOINT, FROM_FABRIC};

/// Where strait's filter sits on every device it attaches to. A fixed priority and
/// handle let the next agent find and replace it.
const TC_PRIORITY: u16 = 1;
const TC_HANDLE: TcHandle = TcHandle::new(0, 0x5354);

/// How long a new veth is left alone before the fast path attaches to it: the CNI
/// chain that made it (portmap, bandwidth, tuning) is done by then.
pub const SETTLE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum FastPathError {
    #[error("loading the fast path's eBPF object: {0}")]
    Load(String),
    #[error("attaching {program} to {ifname}: {reason}")]
    Attach {
        program: &'static str,
        ifname: String,
        reason: String,
    },
    #[error("fast path map {map}: {reason}")]
    Map { map: &'static str, reason: String },
}

/// A local endpoint as the programs deliver to it: its addresses and the MACs of its
/// veth (the container's end, and the host's end that is its gateway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ips: Vec<IpAddr>,
    pub mac: [u8; 6],
    pub host_mac: [u8; 6],
}

/// The fabric device the programs attach to and send other nodes' blocks out of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabricDevice {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

/// Other nodes' blocks and the VTEP MAC each is behind (vxlan's routes, neighbour
/// and FDB entries, in one lookup).
pub type Tunnels = BTreeMap<IpNet, [u8; 6]>;

/// The loaded fast path; cheap to clone.
#[derive(Clone)]
pub struct FastPath {
    inner: Arc<Mutex<Loaded>>,
}

struct Loaded {
    mode: FastPathMode,
    ebpf: Ebpf,
    maps: maps::Maps,
    /// Host-side veths attached: name → (ifindex, what the map lists for it).
    endpoints: HashMap<String, (u32, Endpoint)>,
    /// New veths waiting to settle: name → (ifindex, endpoint, since).
    pending: HashMap<String, (u32, Endpoint, Instant)>,
    fabric: Option<FabricDevice>,
    /// What the tunnel map holds.
    tunnels: Tunnels,
    enabled: bool,
    reason: Option<String>,
}

impl FastPath {
    /// Loads the programs into the kernel (not yet attached anywhere) with the fast
    /// path switched off until [`FastPath::set_enabled`]. `mode` is what status shows.
    ///
    /// The programs run each local endpoint's ingress policy check before they
    /// deliver to it; loaded this way their policy maps are their own (pinned in a
    /// private bpffs instance that is gone again once loaded), empty, so every
    /// endpoint is open. [`FastPath::load_with_bpf_dir`] shares the policy
    /// datapath's maps instead.
    pub fn load(mode: FastPathMode) -> Result<Self, FastPathError> {
        let private =
            crate::policy::datapath::PrivateBpffs::new(&std::env::temp_dir(), "strait-fp")
                .map_err(FastPathError::Load)?;
        Self::load_with_bpf_dir(mode, private.path())
    }

    /// [`FastPath::load`], with the policy maps (`strait_pol_*`, `strait_ct`) those
    /// pinned under `bpf_dir` by the policy datapath (`--bpf-dir`), or pinned there
    /// for it: the fast path then enforces the same policy on what it delivers.
    pub fn load_with_bpf_dir(mode: FastPathMode, bpf_dir: &Path) -> Result<Self, FastPathError> {
        crate::policy::datapath::ensure_bpffs(bpf_dir).map_err(FastPathError::Load)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(bpf_dir)
            .load(strait_ebpf::FASTPATH)
            .map_err(|e| FastPathError::Load(e.to_string()))?;
        for name in [FROM_ENDPOINT, FROM_FABRIC] {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|e| FastPathError::Load(format!("program {name}: {e}")))?;
        }
        let mut maps = maps::Maps::take(&mut ebpf)?;
        maps.write_config(false, None)?;
        Ok(Self {
            inner: Arc::new(Mutex::new(Loaded {
                mode,
                ebpf,
                maps,
                endpoints: HashMap::new(),
                pending: HashMap::new(),
                fabric: None,
                tunnels: Tunnels::new(),
                enabled: false,
                reason: Some("starting".into()),
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Loaded> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new container veth: attached by [`FastPath::attach_settled`] once it has
    /// settled. Costs the ADD nothing.
    pub fn queue_endpoint(&self, ifname: &str, ifindex: u32, ep: Endpoint) {
        self.lock()
            .pending
            .insert(ifname.to_string(), (ifindex, ep, Instant::now()));
    }

    /// Attaches every queued veth older than `settle`, unless it is in `shaped`
    /// (devices with an `ingress` qdisc), which are dropped from the queue and left
    /// to the kernel. Returns how many were attached.
    pub fn attach_settled(&self, settle: Duration, shaped: &HashSet<String>) -> usize {
        let ready: Vec<(String, u32, Endpoint)> = self
            .lock()
            .pending
            .extract_if(|_, (_, _, since)| since.elapsed() >= settle)
            .map(|(name, (ifindex, ep, _))| (name, ifindex, ep))
            .collect();
        let mut attached = 0;
        for (name, ifindex, ep) in ready {
            if shaped.contains(&name) {
                info!(veth = %name, "fast path: an ingress qdisc shapes this veth; left to the kernel");
                continue;
            }
            match self.attach_endpoint(&name, ifindex, ep) {
                Ok(()) => attached += 1,
                Err(e) => warn!(error = %e, "fast path: the endpoint uses the kernel's forwarding"),
            }
        }
        attached
    }

    /// Whether a queued veth is older than `settle`, ready for
    /// [`FastPath::attach_settled`].
    pub fn has_settled(&self, settle: Duration) -> bool {
        self.lock()
            .pending
            .values()
            .any(|(_, _, since)| since.elapsed() >= settle)
    }

    /// Attaches to a container veth's host end now (a previous agent's filter is
    /// replaced in place) and lists its addresses as fast-path destinations.
    pub fn attach_endpoint(
        &self,
        ifname: &str,
        ifindex: u32,
        ep: Endpoint,
    ) -> Result<(), FastPathError> {
        let mut l = self.lock();
        attach(&mut l.ebpf, FROM_ENDPOINT, ifname)?;
        l.maps.add_endpoint(ifindex, &ep.ips, ep.mac, ep.host_mac)?;
        l.endpoints.insert(ifname.to_string(), (ifindex, ep));
        Ok(())
    }

    /// The veth is going away: its addresses are no longer destinations. Its filter
    /// goes with it.
    pub fn forget_endpoint(&self, ifname: &str) {
        let mut l = self.lock();
        l.pending.remove(ifname);
        if let Some((ifindex, ep)) = l.endpoints.remove(ifname) {
            l.maps.remove_endpoint(ifindex, &ep.ips);
        }
    }

    /// The fabric device (strait.vxlan) to attach to and redirect to, `None` when the
    /// node has none, and the blocks behind each VTEP. Re-attaches when the device
    /// changed (re-created); the tunnel map is brought to `tunnels` entry by entry.
    pub fn set_fabric(
        &self,
        dev: Option<FabricDevice>,
        tunnels: &Tunnels,
    ) -> Result<(), FastPathError> {
        let mut l = self.lock();
        if l.fabric != dev {
            if let Some(d) = &dev {
                attach(&mut l.ebpf, FROM_FABRIC, &d.name)?;
                info!(device = %d.name, "fast path attached to the fabric device");
            }
            l.fabric = dev;
            let (enabled, fabric) = (l.enabled, l.fabric_config());
            l.maps.write_config(enabled, fabric)?;
        }
        let Loaded {
            maps,
            tunnels: held,
            ..
        } = &mut *l;
        let stale: Vec<IpNet> = held
            .keys()
            .filter(|b| !tunnels.contains_key(b))
            .copied()
            .collect();
        for block in stale {
            maps.remove_tunnel(block)?;
            held.remove(&block);
        }
        for (block, mac) in tunnels {
            if held.get(block) != Some(mac) {
                maps.add_tunnel(*block, *mac)?;
                held.insert(*block, *mac);
            }
        }
        Ok(())
    }

    /// Switches the programs on or off (they stay attached; off, they hand every
    /// packet to the stack). `reason` says why, for status.
    pub fn set_enabled(&self, enabled: bool, reason: Option<String>) -> Result<(), FastPathError> {
        let mut l = self.lock();
        if l.enabled != enabled {
            match &reason {
                Some(r) => info!(enabled, reason = %r, "fast path switched"),
                None => info!(enabled, "fast path switched"),
            }
        }
        l.enabled = enabled;
        l.reason = reason;
        let fabric = l.fabric_config();
        l.maps.write_config(enabled, fabric)
    }

    /// The maps as the kernel holds them beside what this agent wants there
    /// (`netctl fastpath`).
    pub fn maps(&self) -> Result<FastPathMaps, FastPathError> {
        let l = self.lock();
        let names: HashMap<u32, &str> = l
            .endpoints
            .iter()
            .map(|(name, (ifindex, _))| (*ifindex, name.as_str()))
            .collect();
        let endpoint = |v: abi::EndpointValue| {
            let name = names.get(&v.ifindex).copied().unwrap_or("?");
            format!(
                "ifindex {} ({name}) mac {} gateway {}",
                v.ifindex,
                format_mac(&v.mac),
                format_mac(&v.host_mac)
            )
        };
        let wanted_endpoints: BTreeMap<IpNet, String> = l
            .endpoints
            .values()
            .flat_map(|(ifindex, ep)| {
                let value = abi::EndpointValue {
                    ifindex: *ifindex,
                    mac: ep.mac,
                    host_mac: ep.host_mac,
                };
                ep.ips.iter().map(move |ip| (IpNet::from(*ip), value))
            })
            .map(|(k, v)| (k, endpoint(v)))
            .collect();
        let held_endpoints: BTreeMap<IpNet, String> = l
            .maps
            .endpoint_entries()?
            .into_iter()
            .map(|(ip, v)| (IpNet::from(ip), endpoint(v)))
            .collect();
        let vtep = |mac: &[u8; 6]| format!("vtep {}", format_mac(mac));
        let wanted_tunnels: BTreeMap<IpNet, String> =
            l.tunnels.iter().map(|(b, m)| (*b, vtep(m))).collect();
        let held_tunnels: BTreeMap<IpNet, String> = l
            .maps
            .tunnel_entries()?
            .into_iter()
            .map(|(b, m)| (b, vtep(&m)))
            .collect();
        Ok(FastPathMaps {
            endpoints: compare(&wanted_endpoints, &held_endpoints),
            tunnels: compare(&wanted_tunnels, &held_tunnels),
        })
    }

    pub fn status(&self) -> FastPathStatus {
        let l = self.lock();
        let stats = l.maps.stats().unwrap_or_else(|e| {
            warn!(error = %e, "fast path: reading counters");
            Stats::default()
        });
        FastPathStatus {
            mode: l.mode,
            active: l.enabled,
            reason: l.reason.clone(),
            fabric_device: l.fabric.as_ref().map(|f| f.name.clone()),
            endpoints: l.endpoints.len(),
            tunnels: l.tunnels.len(),
            to_fabric: stats.to_fabric,
            to_endpoint: stats.to_endpoint,
            to_stack: stats.to_stack,
            by_reason: Reason::ALL
                .iter()
                .map(|r| (r.name().to_string(), stats.get(*r)))
                .collect(),
        }
    }
}

/// Each key of either side: `ok` when both hold the same value; `missing` with the
/// wanted value where the kernel's differs or is absent; `stale` with the kernel's
/// where it is not wanted as such.
fn compare(wanted: &BTreeMap<IpNet, String>, held: &BTreeMap<IpNet, String>) -> Vec<FastPathEntry> {
    let entry = |key: &IpNet, value: &String, state| FastPathEntry {
        key: *key,
        value: value.clone(),
        state,
    };
    let mut out = Vec::new();
    for (key, want) in wanted {
        match held.get(key) {
            Some(have) if have == want => out.push(entry(key, want, EntryState::Ok)),
            have => {
                out.push(entry(key, want, EntryState::Missing));
                if let Some(have) = have {
                    out.push(entry(key, have, EntryState::Stale));
                }
            }
        }
    }
    for (key, have) in held {
        if !wanted.contains_key(key) {
            out.push(entry(key, have, EntryState::Stale));
        }
    }
    out
}

impl Loaded {
    fn fabric_config(&self) -> Option<(u32, [u8; 6])> {
        self.fabric.as_ref().map(|f| (f.ifindex, f.mac))
    }
}

/// `--fast-path off`: removes strait's filters a previous agent left on these
/// devices. Devices without one are fine.
pub fn remove_leftovers<'a>(devices: impl IntoIterator<Item = &'a str>) {
    for dev in devices {
        for name in [FROM_ENDPOINT, FROM_FABRIC] {
            match aya::programs::tc::qdisc_detach_program(dev, TcAttachType::Ingress, name) {
                Ok(()) => info!(device = dev, program = name, "fast path: removed"),
                Err(e) => debug!(device = dev, program = name, error = %e, "nothing to remove"),
            }
        }
    }
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, FastPathError> {
    ebpf.program_mut(name)
        .ok_or_else(|| FastPathError::Load(format!("program {name} is not in the object")))?
        .try_into()
        .map_err(|e| FastPathError::Load(format!("program {name}: {e}")))
}

/// Attaches `program` to `ifname`'s ingress at strait's priority and handle: a new
/// filter, or the previous agent's replaced in place. The attachment is then let go
/// of, so that neither this agent's exit nor a drop detaches it.
fn attach(ebpf: &mut Ebpf, program: &'static str, ifname: &str) -> Result<(), FastPathError> {
    let err = |reason: String| FastPathError::Attach {
        program,
        ifname: ifname.to_string(),
        reason,
    };
    // Fails when the qdisc exists (a previous agent made it); the attach says whether
    // there really is none.
    let _ = aya::programs::tc::qdisc_add_clsact(ifname);
    let prog = classifier(ebpf, program)?;
    let options = || {
        TcAttachOptions::Netlink(NlOptions {
            priority: TC_PRIORITY,
            handle: TC_HANDLE,
            ..NlOptions::default()
        })
    };
    let id = match prog.attach_with_options(ifname, TcAttachType::Ingress, options()) {
        Ok(id) => id,
        Err(create) => {
            // EEXIST: a previous agent's filter is there; replace it in place.
            let old = SchedClassifierLink::attached(
                ifname,
                TcAttachType::Ingress,
                TC_PRIORITY,
                TC_HANDLE,
                None,
            )
            .map_err(|e| err(e.to_string()))?;
            prog.attach_to_link(old)
                .map_err(|replace| err(format!("{create}; replacing: {replace}")))?
        }
    };
    let link = prog.take_link(id).map_err(|e| err(e.to_string()))?;
    // A netlink tc link is (ifindex, priority, handle): no descriptor, no memory.
    // Dropping it would delete the filter; forgetting it leaves the filter to the
    // device's lifetime and the next agent.
    std::mem::forget(link);
    Ok(())
}

#[cfg(test)]
mod prog_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_compare_entry_by_entry() {
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let map = |rows: &[(&str, &str)]| -> BTreeMap<IpNet, String> {
            rows.iter().map(|(k, v)| (net(k), v.to_string())).collect()
        };
        let wanted = map(&[
            ("10.0.0.0/26", "a"),
            ("10.0.1.0/26", "b"),
            ("10.0.2.0/26", "c"),
        ]);
        let held = map(&[
            ("10.0.0.0/26", "a"),
            ("10.0.1.0/26", "x"),
            ("10.0.3.0/26", "d"),
        ]);
        let entries = compare(&wanted, &held);
        let got: Vec<(String, &str, EntryState)> = entries
            .iter()
            .map(|e| (e.key.to_string(), e.value.as_str(), e.state))
            .collect();
        let want = [
            ("10.0.0.0/26", "a", EntryState::Ok),
            ("10.0.1.0/26", "b", EntryState::Missing),
            ("10.0.1.0/26", "x", EntryState::Stale),
            ("10.0.2.0/26", "c", EntryState::Missing),
            ("10.0.3.0/26", "d", EntryState::Stale),
        ];
        assert_eq!(got, want.map(|(k, v, s)| (k.to_string(), v, s)).to_vec());
    }
}
