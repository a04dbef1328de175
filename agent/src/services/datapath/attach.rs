//! Attaching the services programs to a cgroup v2 directory without links
//! (`BPF_F_ALLOW_MULTI`): the attachment belongs to the cgroup, so it outlives the
//! agent and nothing is pinned for it. A program a previous agent attached (found
//! by its name among the cgroup's programs on that hook) is replaced in place with
//! `BPF_F_REPLACE`, atomically: no connect goes untranslated in between, and a
//! restarted agent never leaves two copies.

use std::collections::HashSet;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use aya::programs::{CgroupSockAddr, ProgramInfo, loaded_programs};

use super::sys;

/// Opens a cgroup v2 directory for attaching.
pub(super) fn open(cgroup: &Path) -> Result<File, String> {
    File::open(cgroup).map_err(|e| format!("opening {}: {e}", cgroup.display()))
}

/// The programs named `name` on `cgroup`'s `attach_type` hook.
fn attached_named(cgroup: &File, attach_type: u32, name: &str) -> Result<Vec<ProgramInfo>, String> {
    let ids: HashSet<u32> = sys::query(cgroup.as_fd(), attach_type)
        .map_err(|e| format!("querying the cgroup's programs: {e}"))?
        .into_iter()
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // A program unloaded while this walks is an error of its own; skip it.
    Ok(loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| ids.contains(&p.id()) && p.name_as_str() == Some(name))
        .collect())
}

/// Attaches `prog` (named `name`) to `cgroup`'s `attach_type` hook: nothing to do
/// when it is there already, in place of a previous agent's program of that name,
/// or else after the cgroup's other programs there.
pub(super) fn attach(
    prog: &CgroupSockAddr,
    name: &str,
    attach_type: u32,
    cgroup: &File,
) -> Result<(), String> {
    let fd = prog.fd().map_err(|e| e.to_string())?;
    let ours = prog.info().map_err(|e| e.to_string())?.id();
    let existing = attached_named(cgroup, attach_type, name)?;
    let mut rest: Vec<&ProgramInfo> = existing.iter().filter(|p| p.id() != ours).collect();
    if existing.iter().all(|p| p.id() != ours) {
        match rest.first() {
            Some(old) => {
                let old_fd = old.fd().map_err(|e| e.to_string())?;
                sys::attach(
                    cgroup.as_fd(),
                    attach_type,
                    fd.as_fd(),
                    Some(old_fd.as_fd()),
                )
                .map_err(|e| format!("replacing {name}: {e}"))?;
                rest.remove(0);
            }
            None => sys::attach(cgroup.as_fd(), attach_type, fd.as_fd(), None)
                .map_err(|e| format!("attaching {name}: {e}"))?,
        }
    }
    // More than one of ours (two agents raced): one is enough.
    for extra in rest {
        let extra_fd = extra.fd().map_err(|e| e.to_string())?;
        sys::detach(cgroup.as_fd(), attach_type, extra_fd.as_fd())
            .map_err(|e| format!("detaching a second {name}: {e}"))?;
    }
    Ok(())
}

/// Detaches every program named `name` from `cgroup`'s `attach_type` hook;
/// returns how many there were.
pub(super) fn detach(cgroup: &File, name: &str, attach_type: u32) -> Result<usize, String> {
    let existing = attached_named(cgroup, attach_type, name)?;
    for p in &existing {
        let fd = p.fd().map_err(|e| e.to_string())?;
        sys::detach(cgroup.as_fd(), attach_type, fd.as_fd())
            .map_err(|e| format!("detaching {name}: {e}"))?;
    }
    Ok(existing.len())
}

/// The ids of the programs named `name` on `cgroup`'s `attach_type` hook.
pub(super) fn attached_ids(
    cgroup: &File,
    name: &str,
    attach_type: u32,
) -> Result<Vec<u32>, String> {
    Ok(attached_named(cgroup, attach_type, name)?
        .iter()
        .map(ProgramInfo::id)
        .collect())
}
