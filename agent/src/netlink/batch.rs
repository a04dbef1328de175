//! Many route requests at once, for a full table (FIB sync's 100 000 routes): the
//! requests are packed back to back into few `sendmsg` calls on a socket of their own,
//! and the acknowledgements read in bulk. The kernel handles every message of one send
//! before the call returns, so the cost is the kernel's work per route plus a system
//! call per batch — not a round trip, a channel hop and a future per route.
//!
//! The socket is opened in the connection's namespace (by the namespace worker, as
//! every namespace entry) and driven on the blocking pool; it is dropped afterwards. Its
//! three system calls (socket with a forced receive buffer, sendto, recv) are the only
//! unsafe code here: rtnetlink's connection has neither bulk sends nor a way to size
//! its buffer.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_route::RouteNetlinkMessage;

use super::{Netlink, NetlinkError};

/// Bytes of requests per send: well under the default socket send buffer.
const SEND_BYTES: usize = 64 * 1024;
/// Requests per send: their acknowledgements (a few hundred bytes of buffer each)
/// must all fit in the receive buffer, which is raised to [`RCVBUF`].
const SEND_REQUESTS: usize = 1024;
/// The same when the buffer cannot be raised (no CAP_NET_ADMIN): the default buffer
/// (about 200 KiB) holds this many acknowledgements with room to spare.
const SEND_REQUESTS_SMALL_BUFFER: usize = 64;
const RCVBUF: libc::c_int = 8 * 1024 * 1024;
const NLMSG_ERROR: u16 = 2;

/// One request of a batch.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    pub op: &'static str,
    /// What it is about, for its error.
    pub object: String,
    pub message: RouteNetlinkMessage,
    /// `NLM_F_*` beyond `REQUEST | ACK` (e.g. `CREATE | REPLACE`).
    pub flags: u16,
}

impl Netlink {
    /// Sends every request and returns each one's outcome, in order. `Err` only when
    /// the socket cannot be opened; a request the kernel refuses is an `Err` in its
    /// slot, and the others still apply.
    pub async fn batch(
        &self,
        requests: Vec<BatchRequest>,
    ) -> Result<Vec<Result<(), NetlinkError>>, NetlinkError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let connect_err = |source| NetlinkError::Connect {
            netns: self.netns.path().to_path_buf(),
            source,
        };
        let socket = self
            .netns
            .run_async(open_socket)
            .await?
            .map_err(connect_err)?;
        tokio::task::spawn_blocking(move || run(&socket, requests))
            .await
            .map_err(|e| connect_err(std::io::Error::other(e)))
    }
}

/// A netlink socket and how many requests one send may carry.
struct BatchSocket {
    fd: OwnedFd,
    per_send: usize,
}

#[allow(unsafe_code)]
fn open_socket() -> std::io::Result<BatchSocket> {
    // SAFETY: plain system calls on a descriptor this function owns from creation.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let int_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // Room for a whole send's acknowledgements; FORCE needs CAP_NET_ADMIN, which the
        // agent has; without it, smaller sends fit the default buffer.
        let forced = libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&RCVBUF as *const libc::c_int).cast(),
            int_len,
        ) == 0;
        // Error acknowledgements without a copy of the request.
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            libc::NETLINK_CAP_ACK,
            (&one as *const libc::c_int).cast(),
            int_len,
        );
        Ok(BatchSocket {
            fd,
            per_send: if forced {
                SEND_REQUESTS
            } else {
                SEND_REQUESTS_SMALL_BUFFER
            },
        })
    }
}

fn run(socket: &BatchSocket, requests: Vec<BatchRequest>) -> Vec<Result<(), NetlinkError>> {
    let fd = &socket.fd;
    let mut outcomes: Vec<Option<Result<(), NetlinkError>>> =
        (0..requests.len()).map(|_| None).collect();
    let mut buf = Vec::with_capacity(SEND_BYTES + 4096);
    let mut start = 0;
    // Sequence numbers are request indexes + 1 (0 is what the kernel uses for itself).
    while start < requests.len() {
        buf.clear();
        let mut end = start;
        while end < requests.len() && end - start < socket.per_send && buf.len() < SEND_BYTES {
            let r = &requests[end];
            let mut m = NetlinkMessage::from(r.message.clone());
            m.header.flags = NLM_F_REQUEST | NLM_F_ACK | r.flags;
            m.header.sequence_number = (end + 1) as u32;
            m.finalize();
            let at = buf.len();
            buf.resize(at + m.buffer_len(), 0);
            m.serialize(&mut buf[at..]);
            end += 1;
        }
        let pending: HashMap<u32, usize> = (start..end).map(|i| ((i + 1) as u32, i)).collect();
        if let Err(e) = send(fd, &buf).and_then(|()| receive(fd, pending, &requests, &mut outcomes))
        {
            for (i, slot) in outcomes.iter_mut().enumerate().take(end).skip(start) {
                if slot.is_none() {
                    *slot = Some(Err(NetlinkError::Protocol {
                        op: requests[i].op,
                        object: requests[i].object.clone(),
                        detail: format!("batched request: {e}"),
                    }));
                }
            }
        }
        start = end;
    }
    outcomes
        .into_iter()
        .zip(&requests)
        .map(|(o, r)| {
            o.unwrap_or_else(|| {
                Err(NetlinkError::Protocol {
                    op: r.op,
                    object: r.object.clone(),
                    detail: "no acknowledgement".into(),
                })
            })
        })
        .collect()
}

#[allow(unsafe_code)]
fn send(fd: &OwnedFd, buf: &[u8]) -> std::io::Result<()> {
    // SAFETY: a zeroed sockaddr_nl is the kernel's address (pid 0, no groups); sendto
    // reads `buf` within its length.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if sent as usize != buf.len() {
        return Err(std::io::Error::other("short netlink send"));
    }
    Ok(())
}

/// Reads acknowledgements until every request in `pending` has one.
#[allow(unsafe_code)]
fn receive(
    fd: &OwnedFd,
    mut pending: HashMap<u32, usize>,
    requests: &[BatchRequest],
    outcomes: &mut [Option<Result<(), NetlinkError>>],
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    while !pending.is_empty() {
        // SAFETY: reads into a buffer this function owns, bounded by its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut data = &buf[..n as usize];
        // struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }, then for
        // NLMSG_ERROR an i32 error (0: acknowledged).
        while data.len() >= 16 {
            let len = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
            if len < 16 || len > data.len() {
                return Err(std::io::Error::other("malformed netlink answer"));
            }
            let kind = u16::from_ne_bytes(data[4..6].try_into().expect("2 bytes"));
            let seq = u32::from_ne_bytes(data[8..12].try_into().expect("4 bytes"));
            if kind == NLMSG_ERROR
                && len >= 20
                && let Some(i) = pending.remove(&seq)
            {
                let code = i32::from_ne_bytes(data[16..20].try_into().expect("4 bytes"));
                outcomes[i] = Some(if code == 0 {
                    Ok(())
                } else {
                    Err(NetlinkError::Kernel {
                        op: requests[i].op,
                        object: requests[i].object.clone(),
                        errno: -code,
                    })
                });
            }
            // Messages are 4-byte aligned.
            let next = (len + 3) & !3;
            data = &data[next.min(data.len())..];
        }
    }
    Ok(())
}
