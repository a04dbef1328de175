//! The UDP 4500 sockets of the userspace datapath: one per worker on the same port
//! (`SO_REUSEPORT`, so the kernel spreads peers over workers), optionally marked
//! (`SO_MARK`, so the agent's policy routing can exempt strait's own ESP), sending
//! runs of same-size datagrams to one peer in one call (UDP GSO, the `UDP_SEGMENT`
//! control message) and receiving coalesced runs (`UDP_GRO`).

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// The kernel's limit of segments in one UDP GSO send.
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Largest UDP payload in one GSO send (the IP length field limits the super-packet).
pub const MAX_GSO_BYTES: usize = 65_000;

/// Open a socket bound to `bind`, shared with the other workers' sockets.
pub fn open(bind: SocketAddr, mark: Option<u32>, poll: Duration) -> io::Result<OwnedFd> {
    let s = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    if let Some(m) = mark {
        s.set_mark(m)?;
    }
    // Bursts of 64 KiB super-packets; the defaults drop under load. Best effort:
    // the kernel caps them at net.core.[rw]mem_max.
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    // Receives wake up this often to notice a shutdown.
    s.set_read_timeout(Some(poll))?;
    s.bind(&bind.into())?;
    let fd: OwnedFd = s.into();
    // Without GRO support the socket still works, one datagram per receive.
    let _ = setsockopt_int(&fd, SOL_UDP, UDP_GRO, 1);
    Ok(fd)
}

#[allow(unsafe_code)]
fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads one c_int that lives across the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Send `buf` to `to`: one datagram, or (with `segment`) consecutive datagrams of
/// `segment` octets each, the last possibly shorter, in one system call.
#[allow(unsafe_code)]
pub fn send(fd: &OwnedFd, to: &SockAddr, buf: &[u8], segment: Option<u16>) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // Room for one cmsghdr carrying a u16, 8-aligned.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; zeroed is its empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = to.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = to.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(seg) = segment {
        // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic; the control buffer is 32 octets,
        // more than CMSG_SPACE(2) (24), and CMSG_FIRSTHDR/CMSG_DATA point inside it.
        unsafe {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(size_of::<u16>() as u32) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = SOL_UDP;
            (*c).cmsg_type = UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
        }
    }
    loop {
        // SAFETY: every pointer in `msg` (address, iovec, control) lives across the
        // call; sendmsg only reads them.
        let r = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, 0) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One receive: the octets (possibly several coalesced datagrams), the sender, and
/// the size of each datagram when the kernel coalesced them.
pub struct Received {
    pub len: usize,
    pub from: Option<SocketAddr>,
    pub segment: Option<usize>,
}

/// Whether a [`recv`] error only says that nothing came within the poll interval (or
/// a signal broke in): the receive loops go on at once.
pub fn nothing_yet(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Receive into `buf`. A timeout (nothing arrived within the poll interval) is
/// `ErrorKind::WouldBlock`.
#[allow(unsafe_code)]
pub fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Received> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    let mut addr = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    // SAFETY: msghdr is plain data; zeroed is its empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_mut_ptr().cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    // SAFETY: every pointer in `msg` points into locals or `buf`, all alive across
    // the call, with their true lengths.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut segment = None;
    // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG_* macros
    // walk only within it, and the GRO value is one c_int.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == SOL_UDP && (*c).cmsg_type == UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                segment = usize::try_from(v).ok().filter(|&s| s > 0);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    // SAFETY: recvmsg wrote msg_namelen octets of a socket address into `addr`,
    // which began zeroed; the family says which struct it holds.
    let from = socket_addr(unsafe { addr.assume_init_ref() });
    Ok(Received {
        len: n as usize,
        from,
        segment,
    })
}

/// The IPv4 or IPv6 address in a `sockaddr_storage` (else `None`).
#[allow(unsafe_code)]
fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family is AF_INET, so the storage holds a sockaddr_in.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family is AF_INET6, so the storage holds a sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}
