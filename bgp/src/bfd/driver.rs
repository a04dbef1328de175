//! Single-hop BFD over UDP (RFC 5881) on tokio: one listener per address family on
//! port 3784 that checks GTSM and demultiplexes, one task and one sending socket per
//! session.
//!
//! Sockets are opened in the network namespace of the thread that calls
//! [`Bfd::add_peer`] (the first call per family opens the listener), so a caller that
//! serves another namespace calls it from a thread inside that namespace.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::packet::{ControlPacket, Diagnostic, State};
use super::session::{Action, ParamsError, RandomSource, Session, SessionParams};

/// RFC 5881 §4: Control packets go to UDP port 3784.
pub const CONTROL_PORT: u16 = 3784;
/// RFC 5881 §4: the source port comes from the dynamic range.
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// RFC 5881 §5 (GTSM, RFC 5082): sent with TTL/Hop Limit 255, and only packets that
/// arrive with 255 are from a directly connected neighbour.
pub const GTSM_TTL: u8 = 255;
/// DSCP CS6 (network control), as FRR and BIRD mark BFD.
const TOS_CS6: i32 = 0xc0;

/// What a subscriber (the BGP session) sees of one BFD session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdState {
    pub state: State,
    /// Why the session last changed state.
    pub diagnostic: Diagnostic,
    /// The state the peer last reported.
    pub remote_state: State,
    pub local_discriminator: u32,
    pub remote_discriminator: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum BfdError {
    #[error("BFD session {local} -> {remote} already exists")]
    PeerExists { local: IpAddr, remote: IpAddr },
    #[error("no BFD session {local} -> {remote}")]
    NoSuchPeer { local: IpAddr, remote: IpAddr },
    #[error("local {local} and remote {remote} are of different address families")]
    MixedFamilies { local: IpAddr, remote: IpAddr },
    #[error("session parameters: {0}")]
    Params(#[from] ParamsError),
    #[error("{op} for BFD {addr}: {source}")]
    Socket {
        op: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
}

type PeerKey = (IpAddr, IpAddr);

enum Command {
    Packet(ControlPacket),
    SetParams(SessionParams),
}

struct Peer {
    discriminator: u32,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Demux {
    by_addr: HashMap<PeerKey, Peer>,
    by_discr: HashMap<u32, PeerKey>,
}

/// The BFD engine of one network namespace. Dropping it stops every session and
/// listener (without AdminDown: use [`Bfd::remove_peer`] for a graceful end).
pub struct Bfd {
    demux: Arc<Mutex<Demux>>,
    listener_v4: Option<JoinHandle<()>>,
    listener_v6: Option<JoinHandle<()>>,
    rng: SplitMix64,
}

impl Default for Bfd {
    fn default() -> Self {
        Self::new()
    }
}

impl Bfd {
    pub fn new() -> Self {
        Self {
            demux: Arc::default(),
            listener_v4: None,
            listener_v6: None,
            rng: SplitMix64::from_entropy(),
        }
    }

    /// Start a session from `local` to the directly connected `remote`, and return
    /// its state; the receiver sees every change. Must run inside a tokio runtime.
    pub fn add_peer(
        &mut self,
        local: IpAddr,
        remote: IpAddr,
        params: SessionParams,
    ) -> Result<watch::Receiver<BfdState>, BfdError> {
        if local.is_ipv4() != remote.is_ipv4() {
            return Err(BfdError::MixedFamilies { local, remote });
        }
        params.validate()?;
        if self.lock().by_addr.contains_key(&(local, remote)) {
            return Err(BfdError::PeerExists { local, remote });
        }
        self.ensure_listener(local.is_ipv4())?;
        let socket = self.bind_sender(local)?;
        let discriminator = {
            let demux = self.demux.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let d = self.rng.next_u32();
                if d != 0 && !demux.by_discr.contains_key(&d) {
                    break d;
                }
            }
        };
        let session = Session::new(discriminator, params, Instant::now())?;
        let (state_tx, state_rx) = watch::channel(snapshot(&session));
        // Small: BFD packets are periodic, a stale one is worth nothing, and the
        // listener drops rather than waits when a session lags.
        let (commands, rx) = mpsc::channel(16);
        let task = tokio::spawn(run_session(
            session,
            socket,
            SocketAddr::new(remote, CONTROL_PORT),
            rx,
            state_tx,
            SplitMix64(self.rng.next_u64()),
        ));
        let mut demux = self.lock();
        demux.by_discr.insert(discriminator, (local, remote));
        demux.by_addr.insert(
            (local, remote),
            Peer {
                discriminator,
                commands,
                task,
            },
        );
        Ok(state_rx)
    }

    /// End a session. The peer is told with an AdminDown packet (RFC 5880 §6.8.16), so
    /// it goes Down with diagnostic "neighbor signaled session down" and, per RFC 5882
    /// §3.2, need not tear down its BGP session.
    pub async fn remove_peer(&mut self, local: IpAddr, remote: IpAddr) -> Result<(), BfdError> {
        let peer = {
            let mut demux = self.lock();
            let peer = demux
                .by_addr
                .remove(&(local, remote))
                .ok_or(BfdError::NoSuchPeer { local, remote })?;
            demux.by_discr.remove(&peer.discriminator);
            peer
        };
        // Closing the command channel asks the task to send AdminDown and stop.
        drop(peer.commands);
        let _ = peer.task.await;
        Ok(())
    }

    /// Change a session's intervals or multiplier (a Poll Sequence while Up).
    pub async fn set_params(
        &self,
        local: IpAddr,
        remote: IpAddr,
        params: SessionParams,
    ) -> Result<(), BfdError> {
        params.validate()?;
        let commands = self
            .lock()
            .by_addr
            .get(&(local, remote))
            .map(|p| p.commands.clone())
            .ok_or(BfdError::NoSuchPeer { local, remote })?;
        commands
            .send(Command::SetParams(params))
            .await
            .map_err(|_| BfdError::NoSuchPeer { local, remote })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Demux> {
        // A panicking session task cannot leave the tables half-updated (it never
        // holds the lock), so a poisoned lock is still consistent.
        self.demux.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ensure_listener(&mut self, v4: bool) -> Result<(), BfdError> {
        let slot = if v4 {
            &mut self.listener_v4
        } else {
            &mut self.listener_v6
        };
        if slot.is_some() {
            return Ok(());
        }
        let addr = if v4 {
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), CONTROL_PORT)
        } else {
            SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), CONTROL_PORT)
        };
        let err = |op| move |source| BfdError::Socket { op, addr, source };
        let std_sock = bind_listener(addr).map_err(err("bind listener"))?;
        let fd = &std_sock;
        if v4 {
            setsockopt(fd, sockopt::Ipv4RecvTtl, &true).map_err(|e| err("IP_RECVTTL")(e.into()))?;
            setsockopt(fd, sockopt::Ipv4PacketInfo, &true)
                .map_err(|e| err("IP_PKTINFO")(e.into()))?;
        } else {
            setsockopt(fd, sockopt::Ipv6RecvHopLimit, &true)
                .map_err(|e| err("IPV6_RECVHOPLIMIT")(e.into()))?;
            setsockopt(fd, sockopt::Ipv6RecvPacketInfo, &true)
                .map_err(|e| err("IPV6_RECVPKTINFO")(e.into()))?;
        }
        std_sock.set_nonblocking(true).map_err(err("nonblocking"))?;
        let sock = UdpSocket::from_std(std_sock).map_err(err("register listener"))?;
        *slot = Some(tokio::spawn(listen(sock, self.demux.clone())));
        Ok(())
    }

    /// A socket bound to `local` and a free port of the dynamic range, sending with
    /// TTL 255 (RFC 5881 §4, §5).
    fn bind_sender(&mut self, local: IpAddr) -> Result<UdpSocket, BfdError> {
        let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
        let mut last = None;
        for _ in 0..64 {
            let port = SOURCE_PORTS.start() + (self.rng.next_u32() % span) as u16;
            let addr = SocketAddr::new(local, port);
            match std::net::UdpSocket::bind(addr) {
                Ok(s) => return configure_sender(s, addr),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                Err(source) => {
                    return Err(BfdError::Socket {
                        op: "bind sender",
                        addr,
                        source,
                    });
                }
            }
        }
        Err(BfdError::Socket {
            op: "find a free source port",
            addr: SocketAddr::new(local, 0),
            source: last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)),
        })
    }
}

impl Drop for Bfd {
    fn drop(&mut self) {
        for h in [self.listener_v4.take(), self.listener_v6.take()]
            .into_iter()
            .flatten()
        {
            h.abort();
        }
        for peer in self.lock().by_addr.values() {
            peer.task.abort();
        }
    }
}

/// Bind the listener; the IPv6 one is IPV6_V6ONLY so it can share port 3784 with the
/// IPv4 one (IPv4 peers are served by the IPv4 socket).
fn bind_listener(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, socket,
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    match addr {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a))?,
        SocketAddr::V6(a) => {
            setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(a))?
        }
    }
    Ok(std::net::UdpSocket::from(fd))
}

fn configure_sender(s: std::net::UdpSocket, addr: SocketAddr) -> Result<UdpSocket, BfdError> {
    let err = |op| move |source| BfdError::Socket { op, addr, source };
    if addr.is_ipv4() {
        s.set_ttl(u32::from(GTSM_TTL)).map_err(err("IP_TTL"))?;
        setsockopt(&s, sockopt::Ipv4Tos, &TOS_CS6).map_err(|e| err("IP_TOS")(e.into()))?;
    } else {
        setsockopt(&s, sockopt::Ipv6Ttl, &i32::from(GTSM_TTL))
            .map_err(|e| err("IPV6_UNICAST_HOPS")(e.into()))?;
        setsockopt(&s, sockopt::Ipv6TClass, &TOS_CS6).map_err(|e| err("IPV6_TCLASS")(e.into()))?;
    }
    s.set_nonblocking(true).map_err(err("nonblocking"))?;
    UdpSocket::from_std(s).map_err(err("register sender"))
}

fn snapshot(s: &Session) -> BfdState {
    BfdState {
        state: s.state(),
        diagnostic: s.diagnostic(),
        remote_state: s.remote_state(),
        local_discriminator: s.local_discriminator(),
        remote_discriminator: s.remote_discriminator(),
    }
}

/// One received datagram with what the kernel told us about it.
struct Received {
    len: usize,
    source: Option<IpAddr>,
    destination: Option<IpAddr>,
    ttl: Option<i32>,
}

fn recv_with_cmsgs(fd: i32, buf: &mut [u8]) -> io::Result<Received> {
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(
        nix::libc::in6_pktinfo,
        nix::libc::c_int,
        nix::libc::in_pktinfo,
        nix::libc::c_int
    );
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())?;
    let source = msg.address.and_then(|a| {
        a.as_sockaddr_in()
            .map(|s| IpAddr::V4(s.ip()))
            .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
    });
    let mut out = Received {
        len: msg.bytes,
        source,
        destination: None,
        ttl: None,
    };
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                out.ttl = Some(t)
            }
            ControlMessageOwned::Ipv4PacketInfo(i) => {
                out.destination = Some(Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr)).into())
            }
            ControlMessageOwned::Ipv6PacketInfo(i) => {
                out.destination = Some(Ipv6Addr::from(i.ipi6_addr.s6_addr).into())
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Receive Control packets for every session of one address family, check them and
/// hand each to its session.
async fn listen(sock: UdpSocket, demux: Arc<Mutex<Demux>>) {
    let mut buf = [0u8; 512];
    let fd = sock.as_raw_fd();
    loop {
        let got = sock
            .async_io(Interest::READABLE, || recv_with_cmsgs(fd, &mut buf))
            .await;
        let r = match got {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "BFD listener receive failed");
                continue;
            }
        };
        let (Some(source), Some(destination)) = (r.source, r.destination) else {
            continue;
        };
        // RFC 5881 §5: without authentication, anything not sent with TTL 255 may come
        // from beyond the link and is discarded; so is a packet whose TTL is unknown.
        if r.ttl != Some(i32::from(GTSM_TTL)) {
            tracing::debug!(%source, ttl = ?r.ttl, "BFD packet discarded: TTL is not 255 (GTSM)");
            continue;
        }
        let pkt = match ControlPacket::decode(&buf[..r.len]) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%source, error = %e, "BFD packet discarded");
                continue;
            }
        };
        let source = canonical(source);
        let destination = canonical(destination);
        let target = {
            let demux = demux.lock().unwrap_or_else(|e| e.into_inner());
            // RFC 5880 §6.8.6: a non-zero Your Discriminator selects the session; zero
            // (the peer has not heard from us yet) leaves the addresses. The source
            // must match either way, so a packet cannot steer another peer's session.
            let key = if pkt.your_discriminator != 0 {
                demux.by_discr.get(&pkt.your_discriminator).copied()
            } else {
                Some((destination, source))
            };
            key.filter(|k| k.1 == source)
                .and_then(|k| demux.by_addr.get(&k))
                .map(|p| p.commands.clone())
        };
        match target {
            Some(tx) => {
                let _ = tx.try_send(Command::Packet(pkt));
            }
            None => tracing::debug!(
                %source, %destination, your = pkt.your_discriminator,
                "BFD packet for no session"
            ),
        }
    }
}

/// IPv4-mapped IPv6 addresses are IPv4 peers.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

async fn run_session(
    mut session: Session,
    sock: UdpSocket,
    remote: SocketAddr,
    mut commands: mpsc::Receiver<Command>,
    state_tx: watch::Sender<BfdState>,
    mut rng: SplitMix64,
) {
    let mut actions = session.on_timer(Instant::now(), &mut rng);
    loop {
        for action in actions.drain(..) {
            match action {
                Action::Send(pkt) => {
                    // A link that is down makes sends fail; the Detection Time is what
                    // reports it, not the error.
                    if let Err(e) = sock.send_to(&pkt.encode(), remote).await {
                        tracing::debug!(%remote, error = %e, "BFD send failed");
                    }
                }
                Action::StateChanged(c) => {
                    tracing::info!(
                        peer = %remote.ip(), from = %c.from, to = %c.to, diag = ?c.diagnostic,
                        "BFD session state changed"
                    );
                }
            }
        }
        let now_state = snapshot(&session);
        state_tx.send_if_modified(|s| {
            let changed = *s != now_state;
            *s = now_state;
            changed
        });
        let deadline = session
            .next_deadline()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(3600));
        tokio::select! {
            cmd = commands.recv() => match cmd {
                Some(Command::Packet(pkt)) => match session.on_packet(&pkt, Instant::now()) {
                    Ok(a) => actions = a,
                    Err(e) => tracing::debug!(%remote, error = %e, "BFD packet discarded"),
                },
                Some(Command::SetParams(p)) => {
                    if let Err(e) = session.set_params(p, Instant::now()) {
                        tracing::warn!(%remote, error = %e, "BFD parameters refused");
                    }
                }
                None => {
                    // Removed: say AdminDown once so the peer knows this is no failure.
                    session.admin_down(Instant::now());
                    let _ = sock.send_to(&session.control_packet(false).encode(), remote).await;
                    state_tx.send_replace(snapshot(&session));
                    return;
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                actions = session.on_timer(Instant::now(), &mut rng);
            }
        }
    }
}

/// A small PRNG for discriminators, source ports and jitter; none of them is a secret
/// (without authentication BFD has none), they only need to differ between sessions
/// and restarts.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn from_entropy() -> Self {
        // std's RandomState is seeded from the OS per process; mix in the time so two
        // engines in one process differ too.
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        Self(h.finish())
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl RandomSource for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}
