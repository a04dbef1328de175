//! Whether a host answers on its underlay: ICMP echo to a node's underlay address.
//!
//! A node whose lease expired may be a healthy host whose agent is down (an upgrade, a
//! crash loop: its containers still talk, and the other hosts keep routing to it) or a
//! host that is gone or cut off. The lease cannot tell them apart; the data plane
//! can. `netctl nodes` asks this probe about every node whose lease expired and shows
//! `unreachable` when none of its underlay addresses answers (issue 19, item 10). The
//! routes stay either way until its blocks are reclaimed: a probe lost to a firewall
//! must not cut containers off.
//!
//! Raw ICMP sockets (the agent runs as root with CAP_NET_RAW), not the unprivileged
//! ping sockets, which `net.ipv4.ping_group_range` often switches off.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// How long a node's addresses get to answer before it counts as unreachable. Short,
/// because `netctl nodes` waits for it, and long enough for a few round trips of a
/// wide-area underlay.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Requests sent within the timeout, so one lost packet does not make a host
/// unreachable.
const TRIES: u32 = 3;

/// ICMP (RFC 792) and ICMPv6 (RFC 4443) echo types.
const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// Whether any of `addrs` answers an ICMP echo within `timeout`. All are asked at
/// once. An address the kernel has no route to, or that a router reports
/// unreachable, is a no; an error opening the socket (no CAP_NET_RAW) is returned, so
/// the caller does not report hosts unreachable that it could not ask.
pub async fn any_answers(addrs: Vec<IpAddr>, timeout: Duration) -> io::Result<bool> {
    let asks: Vec<_> = addrs
        .into_iter()
        .map(|a| tokio::task::spawn_blocking(move || echo(a, timeout)))
        .collect();
    let mut answered = false;
    for ask in asks {
        answered |= ask.await.map_err(io::Error::other)??;
    }
    Ok(answered)
}

/// One echo exchange with `to`, blocking for at most `timeout`.
pub fn echo(to: IpAddr, timeout: Duration) -> io::Result<bool> {
    echo_sized(to, None, timeout)
}

/// IPv4 and IPv6 header sizes (no options) and the ICMP echo header's.
const IPV4_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;
const ECHO_HEADER: usize = 8;

/// An echo exchange whose packets are `ip_len` bytes long on the wire (IP header
/// included; `None`: 16 bytes of ICMP), sent with Don't Fragment: the kernel's
/// default for a raw socket sets DF on every packet the route's MTU carries, so a
/// packet that a smaller link further on cannot carry is lost, not fragmented. What
/// `netctl doctor` probes a path's MTU with. A size the local route cannot carry is
/// an error (EMSGSIZE), not a no.
pub fn echo_sized(to: IpAddr, ip_len: Option<usize>, timeout: Duration) -> io::Result<bool> {
    let (domain, protocol, request, reply) = match to {
        IpAddr::V4(_) => (
            Domain::IPV4,
            Protocol::ICMPV4,
            ECHO_REQUEST_V4,
            ECHO_REPLY_V4,
        ),
        IpAddr::V6(_) => (
            Domain::IPV6,
            Protocol::ICMPV6,
            ECHO_REQUEST_V6,
            ECHO_REPLY_V6,
        ),
    };
    let socket = Socket::new(domain, Type::from(libc::SOCK_RAW), Some(protocol))?;
    // Connected: the kernel hands this socket only ICMP from `to`, and reports
    // unreachable errors for it.
    match socket.connect(&SocketAddr::new(to, 0).into()) {
        Ok(()) => {}
        Err(e) if unreachable(&e) => return Ok(false),
        Err(e) => return Err(e),
    }
    // The identifier tells our replies from another prober's on the same host.
    let id = (std::process::id() as u16) ^ 0x5354;
    let start = Instant::now();
    let deadline = start + timeout;
    let mut buf = vec![0u8; 65536];
    let header = if to.is_ipv4() {
        IPV4_HEADER
    } else {
        IPV6_HEADER
    };
    let payload = ip_len.map(|l| l.saturating_sub(header + ECHO_HEADER));
    for n in 0..TRIES {
        let packet = echo_request(request, id, n as u16, to.is_ipv4(), payload);
        match socket.send(&packet) {
            Ok(_) => {}
            Err(e) if unreachable(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
        let until = (start + timeout * (n + 1) / TRIES).min(deadline);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left))?;
            match (&socket).read(&mut buf) {
                Ok(len) => {
                    if is_our_reply(&buf[..len], to.is_ipv4(), reply, id) {
                        return Ok(true);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if unreachable(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(false)
}

/// The errors that mean "no way there": no route, a router's or the neighbour
/// layer's unreachable report.
fn unreachable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ECONNREFUSED | libc::EHOSTDOWN)
    )
}

/// An echo request: type, code 0, checksum, identifier, sequence and a payload of
/// `payload` bytes (8 when `None`). The kernel fills in the ICMPv6 checksum (it
/// covers a pseudo-header only it knows); the ICMPv4 one is ours.
fn echo_request(kind: u8, id: u16, seq: u16, v4: bool, payload: Option<usize>) -> Vec<u8> {
    let mut p = vec![0u8; ECHO_HEADER + payload.unwrap_or(8)];
    p[0] = kind;
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[8..].iter_mut().enumerate() {
        *b = b"strait\0\0"[i % 8];
    }
    if v4 {
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether `packet` (with its IPv4 header on an IPv4 raw socket; ICMPv6 alone) is an
/// echo reply with our identifier. Our own requests come back too when the target
/// is local, so the type matters.
fn is_our_reply(packet: &[u8], v4: bool, reply: u8, id: u16) -> bool {
    let icmp = if v4 {
        let Some(first) = packet.first() else {
            return false;
        };
        let header = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || packet.len() < header {
            return false;
        }
        &packet[header..]
    } else {
        packet
    };
    icmp.len() >= 8 && icmp[0] == reply && icmp[4..6] == id.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_testbeds::netns::Netns;

    #[test]
    fn the_checksum_of_a_request_checks_out() {
        let p = echo_request(ECHO_REQUEST_V4, 0x1234, 7, true, None);
        // Summing a packet with its checksum in place gives all ones (RFC 1071).
        assert_eq!(checksum(&p), 0);
        let v6 = echo_request(ECHO_REQUEST_V6, 0x1234, 7, false, Some(1400));
        assert_eq!(&v6[2..4], &[0, 0], "the kernel fills the ICMPv6 checksum");
    }

    #[test]
    fn only_echo_replies_with_our_identifier_count() {
        let mut reply = echo_request(ECHO_REPLY_V6, 42, 0, false, None);
        assert!(is_our_reply(&reply, false, ECHO_REPLY_V6, 42));
        assert!(
            !is_our_reply(&reply, false, ECHO_REPLY_V6, 43),
            "another prober's"
        );
        reply[0] = ECHO_REQUEST_V6;
        assert!(
            !is_our_reply(&reply, false, ECHO_REPLY_V6, 42),
            "our own request"
        );
        // IPv4: behind a 20-byte header (version 4, IHL 5).
        let mut v4 = vec![0x45u8];
        v4.extend([0u8; 19]);
        v4.extend(echo_request(ECHO_REPLY_V4, 42, 0, true, Some(100)));
        assert!(is_our_reply(&v4, true, ECHO_REPLY_V4, 42));
        assert!(
            !is_our_reply(&v4[..22], true, ECHO_REPLY_V4, 42),
            "truncated"
        );
        assert!(!is_our_reply(&[], true, ECHO_REPLY_V4, 42));
    }

    /// In a namespace of its own with only `lo` up: loopback answers (both families),
    /// and an address with no route does not.
    #[test]
    fn loopback_answers_and_an_address_without_a_route_does_not() {
        if !strait_testbeds::require_root("probe::loopback_answers") {
            return;
        }
        let ns = Netns::new(format!("{}probe", strait_testbeds::unique_prefix()));
        crate::netns::run_in(ns.path(), || {
            let t = Duration::from_millis(600);
            assert!(echo("127.0.0.1".parse().unwrap(), t).expect("echo 127.0.0.1"));
            assert!(echo("::1".parse().unwrap(), t).expect("echo ::1"));
            assert!(!echo("10.255.0.1".parse().unwrap(), t).expect("echo 10.255.0.1"));
            assert!(!echo("fd00:ffff::1".parse().unwrap(), t).expect("echo fd00:ffff::1"));
            // Full-size packets, Don't Fragment: loopback's MTU (65536) carries them.
            assert!(echo_sized("127.0.0.1".parse().unwrap(), Some(9000), t).expect("9000"));
            assert!(echo_sized("::1".parse().unwrap(), Some(1500), t).expect("1500 v6"));
        })
        .expect("run in netns");
    }
}
