//! A blocking NETLINK_XFRM socket, bound to the network namespace it was opened in:
//! requests answered by an acknowledgement (with the kernel's extended error
//! message, e.g. "Requested AEAD algorithm not found"), single answers and dumps. One
//! request at a time; answers to other sequence numbers are skipped.
//!
//! `NETLINK_CAP_ACK` is set so that an error does not echo the request back: a
//! refused `NEWSA` would otherwise carry its key through one more buffer.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NLMSG_HDR_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
/// In an error: the request was not echoed (`NETLINK_CAP_ACK`).
const NLM_F_CAPPED: u16 = 0x100;
/// In an error: extended-ack attributes follow.
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
/// How long to wait for the kernel before giving up on an answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The kernel refused a request: its errno and, where it gave one, its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlError {
    pub errno: i32,
    pub message: Option<String>,
}

impl NlError {
    fn io(e: io::Error) -> Self {
        Self {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
            message: Some(e.to_string()),
        }
    }
}

impl fmt::Display for NlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = io::Error::from_raw_os_error(self.errno);
        match &self.message {
            Some(m) => write!(f, "{m} ({os})"),
            None => write!(f, "{os}"),
        }
    }
}

/// A NETLINK_XFRM socket.
#[derive(Debug)]
pub struct XfrmSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl XfrmSocket {
    /// Open a socket in the calling thread's network namespace.
    #[allow(unsafe_code)]
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain system call; the descriptor is owned right away.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_XFRM,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; zeroed with the family set is "bind to
        // a kernel-chosen port id, no groups".
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `sa` lives across the call, with its true length.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // Best effort: without them errors are plain errnos, with the request echoed.
        let _ = setsockopt(&fd, SOL_NETLINK, NETLINK_EXT_ACK, &1i32.to_ne_bytes());
        let _ = setsockopt(&fd, SOL_NETLINK, NETLINK_CAP_ACK, &1i32.to_ne_bytes());
        let tv = libc::timeval {
            tv_sec: ANSWER_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: timeval is plain data; viewed as its bytes for the call.
        let tv_bytes = unsafe {
            std::slice::from_raw_parts(
                (&tv as *const libc::timeval).cast::<u8>(),
                size_of::<libc::timeval>(),
            )
        };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, tv_bytes)?;
        Ok(Self {
            fd,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Send a request the kernel acknowledges; Ok when it succeeded.
    pub fn request(&mut self, kind: u16, body: &[u8]) -> Result<(), NlError> {
        let seq = self.send(kind, NLM_F_REQUEST | NLM_F_ACK, body)?;
        let mut result = None;
        self.receive(seq, |k, flags, payload| {
            if k == NLMSG_ERROR {
                result = Some(parse_error(flags, payload));
                return true;
            }
            false
        })?;
        match result {
            Some(None) | None => Ok(()),
            Some(Some(e)) => Err(e),
        }
    }

    /// Send a request with one answer (`XFRM_MSG_GETSA`), and return its body.
    pub fn get(&mut self, kind: u16, body: &[u8]) -> Result<Vec<u8>, NlError> {
        let seq = self.send(kind, NLM_F_REQUEST, body)?;
        let mut answer = Err(NlError {
            errno: libc::EIO,
            message: Some("no answer".into()),
        });
        self.receive(seq, |k, flags, payload| {
            answer = if k == NLMSG_ERROR {
                match parse_error(flags, payload) {
                    Some(e) => Err(e),
                    None => return false,
                }
            } else {
                Ok(payload.to_vec())
            };
            true
        })?;
        answer
    }

    /// Dump a table (`XFRM_MSG_GETSA`, `XFRM_MSG_GETPOLICY`): the body of every
    /// entry.
    pub fn dump(&mut self, kind: u16) -> Result<Vec<Vec<u8>>, NlError> {
        let seq = self.send(kind, NLM_F_REQUEST | NLM_F_DUMP, &[])?;
        let mut out = Vec::new();
        let mut failed = None;
        self.receive(seq, |k, flags, payload| match k {
            NLMSG_DONE => true,
            NLMSG_ERROR => {
                failed = parse_error(flags, payload);
                true
            }
            _ => {
                out.push(payload.to_vec());
                false
            }
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    #[allow(unsafe_code)]
    fn send(&mut self, kind: u16, flags: u16, body: &[u8]) -> Result<u32, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let msg = frame(kind, flags, self.seq, body);
        // SAFETY: `msg` lives across the call; the kernel (port 0) is the default
        // destination of an unconnected netlink socket.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(NlError::io(io::Error::last_os_error()));
        }
        Ok(self.seq)
    }

    /// Read messages until `each` (type, flags, payload) of one with sequence
    /// number `seq` says done.
    #[allow(unsafe_code)]
    fn receive(
        &mut self,
        seq: u32,
        mut each: impl FnMut(u16, u16, &[u8]) -> bool,
    ) -> Result<(), NlError> {
        loop {
            // SAFETY: the buffer is ours, with its true length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(NlError::io(e));
            }
            let mut b = &self.buf[..n as usize];
            while b.len() >= NLMSG_HDR_LEN {
                let len = u32::from_ne_bytes(b[0..4].try_into().expect("4")) as usize;
                if len < NLMSG_HDR_LEN || len > b.len() {
                    break;
                }
                let kind = u16::from_ne_bytes([b[4], b[5]]);
                let flags = u16::from_ne_bytes([b[6], b[7]]);
                let s = u32::from_ne_bytes(b[8..12].try_into().expect("4"));
                if s == seq && each(kind, flags, &b[NLMSG_HDR_LEN..len]) {
                    return Ok(());
                }
                b = &b[len.next_multiple_of(4).min(b.len())..];
            }
        }
    }
}

/// A netlink message: header, then the body padded to four octets.
pub fn frame(kind: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDR_LEN + body.len();
    let mut m = Vec::with_capacity(len.next_multiple_of(4));
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    m.extend_from_slice(body);
    m.resize(len.next_multiple_of(4), 0);
    m
}

/// `nlmsgerr`: `None` for an acknowledgement (error 0), else the errno and the
/// extended-ack message.
pub fn parse_error(flags: u16, p: &[u8]) -> Option<NlError> {
    let code = i32::from_ne_bytes(p.get(0..4)?.try_into().ok()?);
    if code == 0 {
        return None;
    }
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        // After the error code: the request's header, and its body unless capped.
        let echoed = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDR_LEN
        } else {
            p.get(4..8)
                .map_or(0, |l| u32::from_ne_bytes(l.try_into().expect("4")) as usize)
        };
        if let Some(tlvs) = p.get(4 + echoed.next_multiple_of(4)..) {
            message = super::wire::attrs(tlvs)
                .find(|(k, _)| *k == NLMSGERR_ATTR_MSG)
                .map(|(_, m)| {
                    String::from_utf8_lossy(m)
                        .trim_end_matches('\0')
                        .trim_end_matches('.')
                        .to_string()
                });
        }
    }
    Some(NlError {
        errno: -code,
        message,
    })
}

#[allow(unsafe_code)]
pub(super) fn setsockopt(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &[u8],
) -> io::Result<()> {
    // SAFETY: the kernel reads `value.len()` octets from `value`, alive across the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_a_request() {
        let m = frame(0x12, NLM_F_REQUEST, 7, &[1, 2, 3]);
        assert_eq!(
            m,
            [
                19, 0, 0, 0, 0x12, 0, 1, 0, 7, 0, 0, 0, 0, 0, 0, 0, //
                1, 2, 3, 0
            ]
            .map(|b: i32| b as u8)
        );
    }

    #[test]
    fn reads_the_extended_ack_message() {
        // error -ENOSYS, capped request header, NLMSGERR_ATTR_MSG.
        let mut p = (-libc::ENOSYS).to_ne_bytes().to_vec();
        p.extend_from_slice(&frame(0x10, 5, 1, &[])[..16]);
        crate::kernel::wire::attr(
            &mut p,
            NLMSGERR_ATTR_MSG,
            b"Requested AEAD algorithm not found.\0",
        );
        let e = parse_error(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p).unwrap();
        assert_eq!(e.errno, libc::ENOSYS);
        assert_eq!(
            e.message.as_deref(),
            Some("Requested AEAD algorithm not found")
        );
        assert!(
            e.to_string()
                .starts_with("Requested AEAD algorithm not found (")
        );
        // An acknowledgement is no error.
        assert_eq!(parse_error(0, &0i32.to_ne_bytes()), None);
        // Without TLVs: only the errno.
        let e = parse_error(0, &(-libc::ESRCH).to_ne_bytes()).unwrap();
        assert_eq!((e.errno, e.message), (libc::ESRCH, None));
    }
}
