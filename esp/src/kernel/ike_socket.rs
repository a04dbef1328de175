//! The UDP 4500 socket of the kernel datapath. `UDP_ENCAP_ESPINUDP` on it makes the
//! kernel take ESP in UDP off the socket and decapsulate it (RFC 3948); what is left
//! for the socket are IKE messages, still behind their non-ESP marker, which
//! [`crate::encap::classify`] sorts as on the userspace datapath (the kernel already
//! ate the keepalives).
//!
//! The socket bypasses every XFRM policy in both directions (a per-socket allow
//! policy, as IKE daemons set): IKE must flow while the policies for the peer's
//! prefixes (which may hold the peer's own address) demand ESP that IKE is still
//! negotiating.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::netlink::setsockopt;
use super::wire::{self, PolicyDir};

const SOL_UDP: libc::c_int = 17;
const UDP_ENCAP: libc::c_int = 100;
const IP_XFRM_POLICY: libc::c_int = 17;
const IPV6_XFRM_POLICY: libc::c_int = 35;

/// Open the socket on `bind`; returns it and the port it got.
pub fn open(bind: SocketAddr, mark: Option<u32>, poll: Duration) -> io::Result<(OwnedFd, u16)> {
    let s = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(m) = mark {
        s.set_mark(m)?;
    }
    s.set_read_timeout(Some(poll))?;
    s.bind(&bind.into())?;
    let port = s
        .local_addr()?
        .as_socket()
        .map_or(bind.port(), |a| a.port());
    let fd: OwnedFd = s.into();
    let encap = i32::from(wire::UDP_ENCAP_ESPINUDP).to_ne_bytes();
    setsockopt(&fd, SOL_UDP, UDP_ENCAP, &encap)?;
    let (level, name, family) = match bind {
        SocketAddr::V4(_) => (libc::IPPROTO_IP, IP_XFRM_POLICY, libc::AF_INET),
        SocketAddr::V6(_) => (libc::IPPROTO_IPV6, IPV6_XFRM_POLICY, libc::AF_INET6),
    };
    for dir in [PolicyDir::In, PolicyDir::Out] {
        setsockopt(&fd, level, name, &wire::socket_bypass(family as u16, dir))?;
    }
    Ok((fd, port))
}

/// The socket's `UDP_ENCAP` type: [`wire::UDP_ENCAP_ESPINUDP`] when the kernel takes
/// ESP off it.
#[allow(unsafe_code)]
pub fn encap_type(fd: &OwnedFd) -> io::Result<u16> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` octets into `v`, alive across the call.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_UDP,
            UDP_ENCAP,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v as u16)
}
