//! The three system calls the services datapath makes itself, the only `unsafe`
//! here: `BPF_PROG_ATTACH`, `BPF_PROG_DETACH` and `BPF_PROG_QUERY` on a cgroup.
//! aya 0.14 attaches a cgroup program as a link, which goes with its descriptor
//! unless pinned, and cannot list what a cgroup holds; a program attached without
//! a link (`BPF_F_ALLOW_MULTI`) stays with the cgroup through the agent's exit,
//! until it is replaced (`BPF_F_REPLACE`, in place) or detached.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `enum bpf_cmd`.
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_QUERY: libc::c_long = 16;
/// Several programs per hook, each cgroup's run after its ancestors'.
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;
/// Swap `replace_bpf_fd`'s program for the new one in place.
const BPF_F_REPLACE: u32 = 1 << 2;

/// The attach/detach member of `union bpf_attr` (`linux/bpf.h`), every byte a
/// field so nothing uninitialised reaches the kernel.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    relative_fd: u32,
    expected_revision: u64,
}

/// The query member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

fn fd_u32(fd: BorrowedFd<'_>) -> io::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::other("bad fd"))
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<()> {
    // SAFETY: `attr` is one of the `bpf_attr` members above, of the size passed,
    // with every byte initialised; the kernel reads (and for a query writes) it
    // during the call, and writes prog ids only into a buffer whose length the
    // attr gives (see `query`). It keeps no pointer.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Attaches `prog` to `cgroup`'s `attach_type` hook beside the programs there;
/// with `replace`, in that program's place, atomically.
pub(super) fn attach(
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
    prog: BorrowedFd<'_>,
    replace: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: fd_u32(cgroup)?,
        attach_bpf_fd: fd_u32(prog)?,
        attach_type,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..AttachAttr::default()
    };
    if let Some(old) = replace {
        attr.attach_flags |= BPF_F_REPLACE;
        attr.replace_bpf_fd = fd_u32(old)?;
    }
    bpf(BPF_PROG_ATTACH, &mut attr)
}

/// Detaches `prog` from `cgroup`'s `attach_type` hook.
pub(super) fn detach(
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
    prog: BorrowedFd<'_>,
) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: fd_u32(cgroup)?,
        attach_bpf_fd: fd_u32(prog)?,
        attach_type,
        ..AttachAttr::default()
    };
    bpf(BPF_PROG_DETACH, &mut attr)
}

/// The ids of the programs attached to `cgroup`'s `attach_type` hook itself (not
/// those it inherits).
pub(super) fn query(cgroup: BorrowedFd<'_>, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    loop {
        let mut attr = QueryAttr {
            target_fd: fd_u32(cgroup)?,
            attach_type,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..QueryAttr::default()
        };
        match bpf(BPF_PROG_QUERY, &mut attr) {
            Ok(()) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            // More than the buffer holds: prog_cnt says how many.
            Err(e)
                if e.raw_os_error() == Some(libc::ENOSPC) && attr.prog_cnt as usize > ids.len() =>
            {
                ids = vec![0; attr.prog_cnt as usize];
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attrs_are_the_kernels_members() {
        assert_eq!(std::mem::offset_of!(AttachAttr, replace_bpf_fd), 16);
        assert_eq!(size_of::<AttachAttr>(), 32);
        assert_eq!(std::mem::offset_of!(QueryAttr, prog_ids), 16);
        assert_eq!(std::mem::offset_of!(QueryAttr, prog_cnt), 24);
        assert_eq!(std::mem::offset_of!(QueryAttr, revision), 56);
        assert_eq!(size_of::<QueryAttr>(), 64);
    }
}
