//! The eBPF forwarding fast path (docs/datapath.md): strait's tc programs
//! (`ebpf/src/fastpath.c`) on the ingress of every container veth's host end and of
//! the fabric device, moving container packets straight to the device the kernel's
//! FIB picks instead of through the host's IP forwarding.
//!
//! This module owns loading the programs, attaching them, and their maps: the set of
//! local endpoints, the config (on/off, fabric device) and the counters.
//!
//! Attachments outlive the agent: they are tc filters (netlink, clsact) at a fixed
//! priority and handle, which stay when the process exits, so a restart drops no
//! packet. The next agent replaces each filter in place with its own programs (one
//! netlink request, atomic in cls_bpf). A veth's filter goes with the veth.

mod maps;
pub mod nat;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

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
                fabric: None,
                enabled: false,
                reason: Some("starting".into()),
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Loaded> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attaches to a container veth's host end (a new one, or one a previous agent
    /// attached to) and lists it as a fast-path destination.
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
