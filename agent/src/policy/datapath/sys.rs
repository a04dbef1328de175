//! The two system calls the policy datapath makes itself, the only `unsafe` here:
//! `BPF_PROG_ATTACH` / `BPF_PROG_DETACH` of a program to a device's tcx hook
//! without a link (aya 0.14 attaches tcx only as links, which go away with their
//! descriptor unless pinned; a program attached without one stays with the device,
//! through the agent's exit, until it is replaced or the device is deleted), and
//! `clock_gettime(CLOCK_MONOTONIC)`, the clock of `bpf_ktime_get_ns()` that
//! conntrack expiry is in.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `enum bpf_cmd`.
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
/// `enum bpf_attach_type`.
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;
/// `BPF_F_REPLACE`: swap `replace_bpf_fd`'s program for the new one in place.
const BPF_F_REPLACE: u32 = 1 << 2;

/// Which tcx hook of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    fn attach_type(self) -> u32 {
        match self {
            Hook::Ingress => BPF_TCX_INGRESS,
            Hook::Egress => BPF_TCX_EGRESS,
        }
    }
}

/// The attach/detach member of `union bpf_attr` (`linux/bpf.h`), 32 bytes, every
/// byte a field so nothing uninitialised reaches the kernel.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_ifindex: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    relative_fd: u32,
    expected_revision: u64,
}

fn fd_u32(fd: BorrowedFd<'_>) -> io::Result<u32> {
    u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::other("bad fd"))
}

fn bpf(cmd: libc::c_long, attr: &mut AttachAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed, with every
    // byte initialised; the kernel reads it during the call and keeps no pointer.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut AttachAttr,
            size_of::<AttachAttr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Attaches `prog` to `ifindex`'s `hook` (in the calling thread's network
/// namespace), after the programs there; with `replace`, in that program's place
/// atomically (`BPF_F_REPLACE`).
pub(crate) fn tcx_attach(
    ifindex: u32,
    hook: Hook,
    prog: BorrowedFd<'_>,
    replace: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_ifindex: ifindex,
        attach_bpf_fd: fd_u32(prog)?,
        attach_type: hook.attach_type(),
        ..AttachAttr::default()
    };
    if let Some(old) = replace {
        attr.attach_flags = BPF_F_REPLACE;
        attr.replace_bpf_fd = fd_u32(old)?;
    }
    bpf(BPF_PROG_ATTACH, &mut attr)
}

/// Detaches `prog` from `ifindex`'s `hook`.
pub(crate) fn tcx_detach(ifindex: u32, hook: Hook, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_ifindex: ifindex,
        attach_bpf_fd: fd_u32(prog)?,
        attach_type: hook.attach_type(),
        ..AttachAttr::default()
    };
    bpf(BPF_PROG_DETACH, &mut attr)
}

/// `CLOCK_MONOTONIC` in nanoseconds: `bpf_ktime_get_ns()`'s clock.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // CLOCK_MONOTONIC cannot fail on Linux with a valid pointer.
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attr_is_the_kernels_attach_member() {
        assert_eq!(std::mem::offset_of!(AttachAttr, replace_bpf_fd), 16);
        assert_eq!(std::mem::offset_of!(AttachAttr, expected_revision), 24);
        assert_eq!(size_of::<AttachAttr>(), 32);
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_ns() >= a + 1_000_000);
    }
}
