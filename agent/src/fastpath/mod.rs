//! The eBPF forwarding fast path (docs/datapath.md): strait's tc programs
//! (`ebpf/src/fastpath.c`) on the ingress of every container veth's host end and of
//! the fabric device, moving container packets straight to the device the kernel's
//! FIB picks instead of through the host's IP forwarding.
//!
//! This module owns loading the programs, attaching them, and their maps: the set of
//! local endpoints, the config (on/off, fabric device) and the counters.
//!
//! Attachments are tcx links (Linux 6.6+) held by this process. tcx, unlike a tc
//! clsact filter, takes no qdisc, so a chained `bandwidth` plugin can still add its
//! `ingress` qdisc to the veth. When the agent exits, its links go with it and the
//! containers' packets take the kernel's forwarding until the next agent attaches
//! again; routes do not change, so nothing is dropped and nothing is left behind.
//! A veth that gets a foreign ingress qdisc (`bandwidth` shaping the container's
//! egress) is detached, so that the shaping is not bypassed.

mod maps;
pub mod nat;
pub mod qdisc;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use aya::Ebpf;
use aya::programs::tc::{SchedClassifierLinkId, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use strait_api::{FastPathMode, FastPathStatus};
use tracing::{debug, info, warn};

pub use maps::Stats;

/// The programs' names in the object (also the names `bpftool net` prints).
const FROM_ENDPOINT: &str = "strait_from_ep";
const FROM_FABRIC: &str = "strait_from_fab";

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
    /// Host-side veths attached: name → (ifindex, link).
    endpoints: HashMap<String, (u32, SchedClassifierLinkId)>,
    fabric: Option<(String, u32, SchedClassifierLinkId)>,
    enabled: bool,
    reason: Option<String>,
}

impl FastPath {
    /// Loads the programs into the kernel (not yet attached anywhere) with the fast
    /// path switched off until [`FastPath::set_enabled`]. `mode` is what status shows.
    pub fn load(mode: FastPathMode) -> Result<Self, FastPathError> {
        if !tcx_supported() {
            return Err(FastPathError::Load(
                "tcx attachments need Linux 6.6 or later".into(),
            ));
        }
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

    /// Attaches to a container veth's host end and lists it as a fast-path
    /// destination. Attaching again is a no-op.
    pub fn attach_endpoint(&self, ifname: &str, ifindex: u32) -> Result<(), FastPathError> {
        let mut l = self.lock();
        if l.endpoints.get(ifname).is_some_and(|(i, _)| *i == ifindex) {
            return Ok(());
        }
        if let Some((_, old)) = l.endpoints.remove(ifname) {
            // The same name on a new ifindex: a new veth.
            detach(&mut l.ebpf, FROM_ENDPOINT, old);
        }
        let link = attach(&mut l.ebpf, FROM_ENDPOINT, ifname)?;
        if let Err(e) = l.maps.add_endpoint(ifindex) {
            detach(&mut l.ebpf, FROM_ENDPOINT, link);
            return Err(e);
        }
        l.endpoints.insert(ifname.to_string(), (ifindex, link));
        Ok(())
    }

    /// The veth is going away, or must be left to the kernel: detached, and no
    /// longer a destination.
    pub fn forget_endpoint(&self, ifname: &str) {
        let mut l = self.lock();
        if let Some((ifindex, link)) = l.endpoints.remove(ifname) {
            if let Err(e) = l.maps.remove_endpoint(ifindex) {
                debug!(ifname, ifindex, error = %e, "fast path: endpoint not in the map");
            }
            detach(&mut l.ebpf, FROM_ENDPOINT, link);
        }
    }

    /// The host ends attached now.
    pub fn attached_endpoints(&self) -> Vec<String> {
        self.lock().endpoints.keys().cloned().collect()
    }

    /// The fabric device (strait.vxlan) to attach to and redirect to; `None` when
    /// the node has none. Re-attaches when its ifindex changed (device re-created).
    pub fn set_fabric_device(&self, dev: Option<(&str, u32)>) -> Result<(), FastPathError> {
        let mut l = self.lock();
        let have = l.fabric.as_ref().map(|(n, i, _)| (n.as_str(), *i));
        if have == dev {
            return Ok(());
        }
        if let Some((_, _, old)) = l.fabric.take() {
            detach(&mut l.ebpf, FROM_FABRIC, old);
        }
        if let Some((name, ifindex)) = dev {
            let link = attach(&mut l.ebpf, FROM_FABRIC, name)?;
            info!(device = %name, "fast path attached to the fabric device");
            l.fabric = Some((name.to_string(), ifindex, link));
        }
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

/// Whether the kernel has tcx (Linux 6.6+), the only way the fast path attaches.
fn tcx_supported() -> bool {
    aya::util::KernelVersion::current().is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
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

/// Attaches `program` to `ifname`'s ingress as a tcx link, after any other tcx
/// program there; the link lives in the program until [`detach`].
fn attach(
    ebpf: &mut Ebpf,
    program: &'static str,
    ifname: &str,
) -> Result<SchedClassifierLinkId, FastPathError> {
    classifier(ebpf, program)?
        .attach_with_options(
            ifname,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| FastPathError::Attach {
            program,
            ifname: ifname.to_string(),
            reason: e.to_string(),
        })
}

/// Releases a link: the program leaves the device (if the device still exists).
fn detach(ebpf: &mut Ebpf, program: &'static str, link: SchedClassifierLinkId) {
    match classifier(ebpf, program) {
        Ok(prog) => {
            if let Err(e) = prog.detach(link) {
                debug!(program, error = %e, "fast path: detaching");
            }
        }
        Err(e) => warn!(error = %e, "fast path"),
    }
}
