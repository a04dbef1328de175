//! `BPF_PROG_TEST_RUN` for tc programs: the kernel builds an skb from the test's
//! bytes (on the namespace's loopback, or the device the context names), runs the
//! program once and hands back its return value and the packet as it left it. A
//! redirect is not carried out: the verdict says it was asked for.
//!
//! The one place the test code calls bpf(2) itself (aya has no test-run API), so the
//! only module here that allows `unsafe`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The tc verdicts (`linux/pkt_cls.h`) the fast path returns; `TC_ACT_SHOT` (2)
/// joins them with the first program that drops.
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_REDIRECT: u32 = 7;

/// `BPF_PROG_TEST_RUN` of `enum bpf_cmd`.
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// `struct __sk_buff` as far as a test sets it: up to `ifindex`, the fields before
/// those two zero (the kernel refuses a context with fields it does not take). The
/// offsets are checked against the object's BTF below.
const CTX_LEN: usize = 44;
const CTX_INGRESS_IFINDEX: usize = 36;
const CTX_IFINDEX: usize = 40;

/// What the program sees of where the packet came from.
#[derive(Debug, Default, Clone, Copy)]
pub struct SkbContext {
    /// `skb->ingress_ifindex`: the device the packet came in on.
    pub ingress_ifindex: u32,
    /// The device the skb is on (`skb->dev`); 0 for the namespace's loopback. It
    /// must exist in the namespace the run happens in.
    pub ifindex: u32,
}

/// A run's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The program's return value (`TC_ACT_*`).
    pub verdict: u32,
    /// The packet as the program left it.
    pub packet: Vec<u8>,
}

/// The `test` member of `union bpf_attr` (`linux/bpf.h`). The kernel takes a
/// shorter `bpf_attr` than its own and zeroes the rest, but refuses (EINVAL) one
/// with a non-zero byte after the command's last field: the tail padding is a field
/// of its own, so that it is zero rather than whatever the stack held.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    tail: u32,
}

/// Runs the tc program `prog` once over `packet` (an Ethernet frame) on the calling
/// thread, in its network namespace.
pub fn run(prog: BorrowedFd<'_>, packet: &[u8], ctx: SkbContext) -> io::Result<Run> {
    let mut ctx_in = [0u8; CTX_LEN];
    ctx_in[CTX_INGRESS_IFINDEX..CTX_INGRESS_IFINDEX + 4]
        .copy_from_slice(&ctx.ingress_ifindex.to_ne_bytes());
    ctx_in[CTX_IFINDEX..CTX_IFINDEX + 4].copy_from_slice(&ctx.ifindex.to_ne_bytes());
    // Room for a program that grows the packet (encapsulation); the kernel says
    // ENOSPC rather than cut it.
    let mut out = vec![0u8; packet.len() + 256];
    let len = |n: usize| u32::try_from(n).map_err(|_| io::Error::other("packet too long"));
    let fd = u32::try_from(prog.as_raw_fd()).map_err(|_| io::Error::other("bad fd"))?;
    let mut attr = TestRunAttr {
        prog_fd: fd,
        data_size_in: len(packet.len())?,
        data_size_out: len(out.len())?,
        data_in: packet.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ctx_size_in: len(ctx_in.len())?,
        ctx_in: ctx_in.as_ptr() as u64,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed. The kernel
    // reads `data_size_in` bytes at `data_in` (`packet`) and `ctx_size_in` at
    // `ctx_in` (`ctx_in`), writes at most `data_size_out` bytes at `data_out` (`out`)
    // and writes back into `attr`; all of them outlive the call, which keeps no
    // pointer to them.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            size_of::<TestRunAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    out.truncate(attr.data_size_out as usize);
    Ok(Run {
        verdict: attr.retval,
        packet: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf_test::btf::Btf;

    #[test]
    fn the_context_fields_are_where_the_kernel_has_them() {
        // struct __sk_buff is in every tc program's BTF: its parameter's type.
        let skb = Btf::from_elf(strait_ebpf::FASTPATH)
            .unwrap()
            .struct_layout("__sk_buff")
            .unwrap();
        let at = |name: &str| {
            skb.members
                .iter()
                .find(|m| m.name == name)
                .map(|m| (m.offset, m.size))
                .unwrap_or_else(|| panic!("__sk_buff.{name}"))
        };
        assert_eq!(at("ingress_ifindex"), (CTX_INGRESS_IFINDEX, 4));
        assert_eq!(at("ifindex"), (CTX_IFINDEX, 4));
        assert_eq!(CTX_IFINDEX + 4, CTX_LEN);
    }

    #[test]
    fn the_attr_is_the_kernels_test_member() {
        // The members' offsets in linux/bpf.h; the size rounds batch_size's end up to
        // the 8 bytes of the __aligned_u64 members.
        assert_eq!(std::mem::offset_of!(TestRunAttr, data_in), 16);
        assert_eq!(std::mem::offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(std::mem::offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(std::mem::offset_of!(TestRunAttr, batch_size), 72);
        assert_eq!(size_of::<TestRunAttr>(), 80);
        // No padding the compiler may leave uninitialised.
        assert_eq!(std::mem::offset_of!(TestRunAttr, tail), 76);
    }
}
