//! The TUN device of the userspace datapath: opened with one file descriptor per
//! queue (`IFF_MULTI_QUEUE`), with the vnet header (`IFF_VNET_HDR`) and the offloads
//! (`TUNSETOFFLOAD`: checksum, TSO4/6, USO4/6 where the kernel has it) so that the
//! kernel hands over 64 KiB GSO super-packets instead of MTU-sized ones. Also the
//! interface settings the datapath makes itself: MTU, queue length and up.
//!
//! The descriptors are made in the calling thread's network namespace; the device
//! lives there whatever thread reads it later.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// From <linux/if_tun.h>: _IOW('T', n, int).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_TSO_ECN: libc::c_uint = 0x08;
const TUN_F_USO4: libc::c_uint = 0x20;
const TUN_F_USO6: libc::c_uint = 0x40;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;

/// Which offloads the device got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offloads {
    pub tso: bool,
    pub uso: bool,
}

/// Open `queues` queues of the TUN device `name` (created if missing, adopted if a
/// persistent one exists; persistent afterwards exactly if `persist`), with offloads
/// enabled on each.
pub fn open(name: &str, queues: usize, persist: bool) -> io::Result<(Vec<OwnedFd>, Offloads)> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TUN name {name:?} must be 1 to 15 bytes"),
        ));
    }
    let mut fds = Vec::with_capacity(queues);
    let mut offloads = Offloads {
        tso: false,
        uso: false,
    };
    for _ in 0..queues.max(1) {
        let fd = open_queue(name)?;
        offloads = set_offloads(&fd)?;
        fds.push(fd);
    }
    // Either way: a device left persistent by an earlier datapath is adopted, and
    // goes with this one unless it is to persist again.
    ioctl_int(&fds[0], TUNSETPERSIST, libc::c_ulong::from(persist))?;
    Ok((fds, offloads))
}

fn ifreq(name: &str) -> libc::ifreq {
    let mut req: libc::ifreq = zeroed_ifreq();
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req
}

#[allow(unsafe_code)]
fn zeroed_ifreq() -> libc::ifreq {
    // SAFETY: ifreq is a C struct of integers and a union of plain data; all zeroes
    // is a valid value (an empty name and a zero union).
    unsafe { std::mem::zeroed() }
}

#[allow(unsafe_code)]
fn open_queue(name: &str) -> io::Result<OwnedFd> {
    let path = CString::new("/dev/net/tun").expect("no NUL");
    // Non-blocking: a busy worker reads without polling first ([`read`]).
    // SAFETY: open(2) with a valid C string; the returned descriptor is owned here.
    let raw = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = ifreq(name);
    req.ifr_ifru.ifru_flags = IFF_TUN | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which lives across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// TSO and checksum always; USO too where the kernel knows it (6.2 and later), else
/// without.
fn set_offloads(fd: &OwnedFd) -> io::Result<Offloads> {
    let tso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
    if ioctl_int(
        fd,
        TUNSETOFFLOAD,
        (tso | TUN_F_USO4 | TUN_F_USO6) as libc::c_ulong,
    )
    .is_ok()
    {
        return Ok(Offloads {
            tso: true,
            uso: true,
        });
    }
    ioctl_int(fd, TUNSETOFFLOAD, tso as libc::c_ulong)?;
    Ok(Offloads {
        tso: true,
        uso: false,
    })
}

#[allow(unsafe_code)]
fn ioctl_int(fd: &OwnedFd, req: libc::c_ulong, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: these TUN ioctls take their argument by value, not as a pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A socket for interface ioctls, made in (and bound to) the caller's namespace.
pub fn control_socket() -> io::Result<OwnedFd> {
    Ok(socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?.into())
}

/// Set the MTU of interface `name`.
#[allow(unsafe_code)]
pub fn set_mtu(ctl: &OwnedFd, name: &str, mtu: u32) -> io::Result<()> {
    let mut req = ifreq(name);
    req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
    // SAFETY: SIOCSIFMTU reads one ifreq, which lives across the call.
    if unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCSIFMTU, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set how many packets each queue of interface `name` holds for its reader.
#[allow(unsafe_code)]
pub fn set_tx_queue_len(ctl: &OwnedFd, name: &str, len: u32) -> io::Result<()> {
    let mut req = ifreq(name);
    // `ifr_qlen` is the union's plain int, which libc names after another of its uses.
    req.ifr_ifru.ifru_ifindex = len as libc::c_int;
    // SAFETY: SIOCSIFTXQLEN reads one ifreq, which lives across the call.
    if unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCSIFTXQLEN, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bring interface `name` up.
#[allow(unsafe_code)]
pub fn set_up(ctl: &OwnedFd, name: &str) -> io::Result<()> {
    let mut req = ifreq(name);
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write one ifreq, alive across both
    // calls; the union's flags member is the one these requests use.
    unsafe {
        if libc::ioctl(ctl.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(ctl.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Make a persistent device transient again, so it disappears with its last queue.
pub fn clear_persist(fd: &OwnedFd) -> io::Result<()> {
    ioctl_int(fd, TUNSETPERSIST, 0)
}

/// Read a packet from a queue into `buf`, waiting up to `timeout_ms` for one if none
/// is there; `None` when nothing arrived in time. The descriptor is non-blocking:
/// under load the packet is there and the read is the only system call.
pub fn read(fd: &OwnedFd, buf: &mut [u8], timeout_ms: i32) -> io::Result<Option<usize>> {
    if let Some(n) = read_now(fd, buf)? {
        return Ok(Some(n));
    }
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd that lives across the call.
    #[allow(unsafe_code)]
    let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(None)
        } else {
            Err(e)
        };
    }
    if r == 0 {
        return Ok(None);
    }
    read_now(fd, buf)
}

/// One non-blocking read: `None` if no packet is waiting.
#[allow(unsafe_code)]
fn read_now(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: read(2) writes at most buf.len() octets into `buf`.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(n as usize))
}

/// Write one packet (vnet header included) to a queue.
#[allow(unsafe_code)]
pub fn write(fd: &OwnedFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: write(2) reads at most buf.len() octets from `buf`.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
