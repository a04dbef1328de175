//! Attaching the policy programs to a container veth's host end with tcx, without
//! a link: the attachment belongs to the device, so it outlives the agent and goes
//! with the veth, and nothing is pinned for it. A program a previous agent attached
//! (found by its name among the device's tcx programs) is replaced in place with
//! `BPF_F_REPLACE`, atomically: no packet goes unchecked in between.

use std::os::fd::AsFd;

use aya::programs::tc::TcAttachType;
use aya::programs::{ProgramInfo, SchedClassifier};

use super::abi::kernel_name;
use super::sys::{self, Hook};

fn tc_type(hook: Hook) -> TcAttachType {
    match hook {
        Hook::Ingress => TcAttachType::Ingress,
        Hook::Egress => TcAttachType::Egress,
    }
}

/// strait's programs named `name` on `ifname`'s `hook`.
fn attached_named(ifname: &str, hook: Hook, name: &str) -> Result<Vec<ProgramInfo>, String> {
    let (_, progs) = SchedClassifier::query_tcx(ifname, tc_type(hook))
        .map_err(|e| format!("querying tcx programs: {e}"))?;
    let short = kernel_name(name);
    Ok(progs
        .into_iter()
        .filter(|p| p.name_as_str() == Some(short))
        .collect())
}

/// Attaches `prog` (named `name` in the object) to `ifname`'s (`ifindex`'s) `hook`:
/// nothing to do when it is there already, in place of a previous agent's program
/// of that name, or else after the device's other tcx programs.
pub(crate) fn attach(
    prog: &SchedClassifier,
    name: &str,
    ifname: &str,
    ifindex: u32,
    hook: Hook,
) -> Result<(), String> {
    let fd = prog.fd().map_err(|e| e.to_string())?;
    let ours = prog.info().map_err(|e| e.to_string())?.id();
    let existing = attached_named(ifname, hook, name)?;
    let mut rest: Vec<&ProgramInfo> = existing.iter().filter(|p| p.id() != ours).collect();
    if existing.iter().all(|p| p.id() != ours) {
        match rest.first() {
            Some(old) => {
                let old_fd = old.fd().map_err(|e| e.to_string())?;
                sys::tcx_attach(ifindex, hook, fd.as_fd(), Some(old_fd.as_fd()))
                    .map_err(|e| format!("replacing {name}: {e}"))?;
                rest.remove(0);
            }
            None => sys::tcx_attach(ifindex, hook, fd.as_fd(), None)
                .map_err(|e| format!("attaching {name}: {e}"))?,
        }
    }
    // More than one of ours (cannot happen through this function): one is enough.
    for extra in rest {
        let extra_fd = extra.fd().map_err(|e| e.to_string())?;
        sys::tcx_detach(ifindex, hook, extra_fd.as_fd())
            .map_err(|e| format!("detaching a second {name}: {e}"))?;
    }
    Ok(())
}

/// Detaches every program named `name` from `ifname`'s `hook` (policy switched off).
pub(crate) fn detach(name: &str, ifname: &str, ifindex: u32, hook: Hook) -> Result<usize, String> {
    let existing = attached_named(ifname, hook, name)?;
    for p in &existing {
        let fd = p.fd().map_err(|e| e.to_string())?;
        sys::tcx_detach(ifindex, hook, fd.as_fd()).map_err(|e| format!("detaching {name}: {e}"))?;
    }
    Ok(existing.len())
}

/// The ids of the programs named `name` on `ifname`'s `hook` (tests, `netctl`).
pub(crate) fn attached_ids(name: &str, ifname: &str, hook: Hook) -> Result<Vec<u32>, String> {
    Ok(attached_named(ifname, hook, name)?
        .iter()
        .map(ProgramInfo::id)
        .collect())
}
