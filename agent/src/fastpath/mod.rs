//! The eBPF forwarding fast path (docs/datapath.md): strait's tc programs
//! (`ebpf/src/fastpath.c`) on the ingress of every container veth's host end and of
//! the fabric device, moving container packets straight to the device the kernel's
//! FIB picks instead of through the host's IP forwarding.
//!
//! This module owns loading the programs, attaching them, and their maps: the set of
//! local endpoints, the config (on/off, fabric device) and the counters.
//!
//! Attachments are tc filters in a clsact qdisc, made over netlink at a fixed
//! priority and handle. They stay when the agent exits, so a restart changes nothing
//! for traffic; the next agent replaces each filter in place (atomic in cls_bpf). A
//! veth's filter goes with the veth. (tcx links would need no qdisc, but each attach
//! and detach waits for an RCU grace period under RTNL: 15 ms per container here,
//! seconds for a burst.)
//!
//! A new veth is attached off the ADD path, once it has settled ([`SETTLE`]): a
//! chained `bandwidth` plugin adds its own `ingress` qdisc to the veth right after
//! strait's ADD, and clsact would take that slot. A veth with an `ingress` qdisc is
//! left to the kernel; the fast path would also skip the shaping there.

mod maps;
pub mod nat;
pub mod qdisc;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::programs::tc::{NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle};
use aya::programs::{SchedClassifier, TcAttachType};
use strait_api::{FastPathMode, FastPathStatus};
use tracing::{debug, info, warn};

pub use maps::Stats;

/// The programs' names in the object (also the names `tc filter show` prints).
const FROM_ENDPOINT: &str = "strait_from_ep";
const FROM_FABRIC: &str = "strait_from_fab";

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

/// The loaded fast path; cheap to clone.
#[derive(Clone)]
pub struct FastPath {
    inner: Arc<Mutex<Loaded>>,
}

struct Loaded {
    mode: FastPathMode,
    ebpf: Ebpf,
    maps: maps::Maps,
    /// Host-side veths attached: name → ifindex.
    endpoints: HashMap<String, u32>,
    /// New veths waiting to settle: name → (ifindex, since).
    pending: HashMap<String, (u32, Instant)>,
    fabric: Option<(String, u32)>,
    enabled: bool,
    reason: Option<String>,
}

impl FastPath {
    /// Loads the programs into the kernel (not yet attached anywhere) with the fast
    /// path switched off until [`FastPath::set_enabled`]. `mode` is what status shows.
    pub fn load(mode: FastPathMode) -> Result<Self, FastPathError> {
        let mut ebpf =
            Ebpf::load(strait_ebpf::FASTPATH).map_err(|e| FastPathError::Load(e.to_string()))?;
        for name in [FROM_ENDPOINT, FROM_FABRIC] {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|e| FastPathError::Load(format!("program {name}: {e}")))?;
        }
        let mut maps = maps::Maps::take(&mut ebpf)?;
        maps.write_config(false, 0)?;
        Ok(Self {
            inner: Arc::new(Mutex::new(Loaded {
                mode,
                ebpf,
                maps,
                endpoints: HashMap::new(),
                pending: HashMap::new(),
                fabric: None,
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
    pub fn queue_endpoint(&self, ifname: &str, ifindex: u32) {
        self.lock()
            .pending
            .insert(ifname.to_string(), (ifindex, Instant::now()));
    }

    /// Attaches every queued veth older than `settle`, unless it is in `shaped`
    /// (devices with an `ingress` qdisc), which are dropped from the queue and left
    /// to the kernel. Returns how many were attached.
    pub fn attach_settled(&self, settle: Duration, shaped: &HashSet<String>) -> usize {
        let ready: Vec<(String, u32)> = {
            let mut l = self.lock();
            let ready: Vec<(String, u32)> = l
                .pending
                .iter()
                .filter(|(_, (_, since))| since.elapsed() >= settle)
                .map(|(n, (i, _))| (n.clone(), *i))
                .collect();
            for (name, _) in &ready {
                l.pending.remove(name);
            }
            ready
        };
        let mut attached = 0;
        for (name, ifindex) in ready {
            if shaped.contains(&name) {
                info!(veth = %name, "fast path: an ingress qdisc shapes this veth; left to the kernel");
                continue;
            }
            match self.attach_endpoint(&name, ifindex) {
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
            .any(|(_, since)| since.elapsed() >= settle)
    }

    /// Attaches to a container veth's host end now (a previous agent's filter is
    /// replaced in place) and lists it as a fast-path destination.
    pub fn attach_endpoint(&self, ifname: &str, ifindex: u32) -> Result<(), FastPathError> {
        let mut l = self.lock();
        attach(&mut l.ebpf, FROM_ENDPOINT, ifname)?;
        l.maps.add_endpoint(ifindex)?;
        l.endpoints.insert(ifname.to_string(), ifindex);
        Ok(())
    }

    /// The veth is going away: no longer a destination. Its filter goes with it.
    pub fn forget_endpoint(&self, ifname: &str) {
        let mut l = self.lock();
        l.pending.remove(ifname);
        if let Some(ifindex) = l.endpoints.remove(ifname)
            && let Err(e) = l.maps.remove_endpoint(ifindex)
        {
            debug!(ifname, ifindex, error = %e, "fast path: endpoint not in the map");
        }
    }

    /// The fabric device (strait.vxlan) to attach to and redirect to; `None` when
    /// the node has none. Re-attaches when its ifindex changed (device re-created).
    pub fn set_fabric_device(&self, dev: Option<(&str, u32)>) -> Result<(), FastPathError> {
        let mut l = self.lock();
        let want = dev.map(|(n, i)| (n.to_string(), i));
        if l.fabric == want {
            return Ok(());
        }
        if let Some((name, _)) = &want {
            attach(&mut l.ebpf, FROM_FABRIC, name)?;
            info!(device = %name, "fast path attached to the fabric device");
        }
        l.fabric = want;
        let (enabled, fabric) = (l.enabled, l.fabric.as_ref().map_or(0, |f| f.1));
        l.maps.write_config(enabled, fabric)
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
        let fabric = l.fabric.as_ref().map_or(0, |f| f.1);
        l.maps.write_config(enabled, fabric)
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
            fabric_device: l.fabric.as_ref().map(|f| f.0.clone()),
            endpoints: l.endpoints.len(),
            to_fabric: stats.to_fabric,
            to_endpoint: stats.to_endpoint,
            to_stack: stats.to_stack,
        }
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
