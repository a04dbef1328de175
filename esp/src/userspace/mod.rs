//! strait's userspace ESP datapath: a multi-queue TUN device with the kernel's GSO
//! offloads on one side, UDP 4500 sockets with UDP GSO/GRO on the other, and one
//! sending and one receiving worker thread per queue in between.
//!
//! Sending: a worker reads a (super-)packet from its TUN queue, finds the peer by
//! the inner destination, cuts the packet into segments ([`gso`]), seals each on the
//! peer's outbound SA straight into a send buffer, and sends runs of same-size ESP
//! packets with one `sendmsg` (UDP GSO). No peer, or no outbound SA: dropped and
//! counted; nothing ever leaves in clear.
//!
//! Receiving: a worker receives (GRO-coalesced) datagrams, hands IKE to the caller's
//! channel, opens ESP in place on the inbound SA its SPI names, checks the inner
//! source against the peer's prefixes and writes the packet to its TUN queue:
//! consecutive TCP segments of a flow joined into one GSO super-packet ([`gro`]),
//! anything else as it is, the vnet header written over the ESP header in front of
//! it (no copy).
//!
//! Tables are published RCU-style ([`tables`]); per packet a worker touches only
//! atomics of the SA it uses (and the inbound SA's replay window).

pub mod gro;
pub mod gso;
pub mod tables;
pub mod tun;
pub mod udp;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::SockAddr;

use crate::datapath::{
    Datapath, DatapathError, Direction, Drops, IkeDatagram, PeerConfig, SaConfig, SaReport,
};
use crate::encap::{self, Datagram};
use crate::inner::{self, Inner};
use crate::sa::{InboundSa, OutboundSa};
use gro::Coalescer;
use gso::{VNET_HDR_LEN, VnetHdr};
use tables::{Inbound, Peer, Published, View};

/// How the userspace datapath is set up.
#[derive(Debug, Clone)]
pub struct UserspaceConfig {
    /// Name of the TUN device, e.g. `stt-esp0`.
    pub tun_name: String,
    /// Queues (one sending and one receiving worker each); 0 = one per CPU.
    pub queues: usize,
    /// Where the UDP sockets bind, normally `0.0.0.0:4500`.
    pub bind: SocketAddr,
    /// `SO_MARK` on the sockets, so policy routing can tell strait's ESP apart.
    pub mark: Option<u32>,
    /// Keep the device (and the routes pointing at it) when the datapath goes away:
    /// with nobody reading it the kernel drops what is routed into it. A datapath
    /// started with the same name adopts it (and removes it on drop unless it is
    /// persistent too).
    pub persist: bool,
    /// Set the TUN's MTU (see [`crate::mtu::inner_mtu`]).
    pub mtu: Option<u32>,
}

impl UserspaceConfig {
    pub fn new(tun_name: impl Into<String>) -> Self {
        Self {
            tun_name: tun_name.into(),
            queues: 0,
            bind: SocketAddr::from(([0, 0, 0, 0], encap::NAT_T_PORT)),
            mark: None,
            persist: false,
            mtu: None,
        }
    }
}

/// How long a worker blocks before it looks at the stop flag.
const POLL_MS: i32 = 200;
/// Queue of IKE datagrams for a slow caller; beyond it they are dropped (IKE
/// retransmits).
const IKE_QUEUE: usize = 256;
/// Packets each TUN queue holds for its worker; beyond it the kernel drops them (the
/// device's TX dropped). A TUN starts with 500, some 100 ms of a 40 Mbit/s flow of
/// small segments: a loaded host that keeps the worker off the CPU longer dropped
/// packets there. 1000 is an Ethernet device's default, and costs only while full.
pub const TUN_QUEUE_LEN: u32 = 1000;

#[derive(Default)]
struct DropCounters {
    no_route: AtomicU64,
    no_sa: AtomicU64,
    seal_failed: AtomicU64,
    tx_malformed: AtomicU64,
    send_errors: AtomicU64,
    unknown_spi: AtomicU64,
    inner_refused: AtomicU64,
    tun_errors: AtomicU64,
    ike_dropped: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Shared {
    tables: Published,
    stop: AtomicBool,
    drops: DropCounters,
    ike: SyncSender<IkeDatagram>,
    /// Whether UDP GSO sends work (cleared on the first failure).
    gso: AtomicBool,
}

/// The running userspace datapath. Dropping it stops the workers (and removes the
/// device unless it was made persistent).
pub struct Userspace {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    ike_rx: Mutex<Option<Receiver<IkeDatagram>>>,
    socket: Arc<OwnedFd>,
    /// The first queue, shared with its workers; [`Userspace::inject`] writes to it.
    tun0: Arc<OwnedFd>,
    ctl: OwnedFd,
    tun_name: String,
    offloads: tun::Offloads,
}

/// A peer's outbound SAs: the one in use, and the others still installed.
type OutboundSas = (Option<Arc<OutboundSa>>, Vec<Arc<OutboundSa>>);

fn unknown_sa(peer: &str, direction: Direction, spi: u32) -> DatapathError {
    DatapathError::UnknownSa {
        peer: peer.to_string(),
        direction,
        spi,
    }
}

impl std::fmt::Debug for Userspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Userspace")
            .field("tun", &self.tun_name)
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl Userspace {
    /// Create the device and sockets in the calling thread's network namespace and
    /// start the workers.
    pub fn start(config: UserspaceConfig) -> Result<Self, DatapathError> {
        let queues = match config.queues {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let (tun_fds, offloads) = tun::open(&config.tun_name, queues, config.persist)?;
        let ctl = tun::control_socket()?;
        if let Some(mtu) = config.mtu {
            tun::set_mtu(&ctl, &config.tun_name, mtu)?;
        }
        tun::set_tx_queue_len(&ctl, &config.tun_name, TUN_QUEUE_LEN)?;
        tun::set_up(&ctl, &config.tun_name)?;
        let poll = Duration::from_millis(POLL_MS as u64);
        let sockets = (0..queues)
            .map(|_| udp::open(config.bind, config.mark, poll).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let (ike_tx, ike_rx) = std::sync::mpsc::sync_channel(IKE_QUEUE);
        let shared = Arc::new(Shared {
            tables: Published::default(),
            stop: AtomicBool::new(false),
            drops: DropCounters::default(),
            ike: ike_tx,
            gso: AtomicBool::new(true),
        });
        let tun_fds: Vec<Arc<OwnedFd>> = tun_fds.into_iter().map(Arc::new).collect();
        let tun0 = tun_fds[0].clone();
        let mut workers = Vec::new();
        for (i, (tun, sock)) in tun_fds.into_iter().zip(&sockets).enumerate() {
            let (s, t, sh) = (sock.clone(), tun.clone(), shared.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("esp-tx{i}"))
                    .spawn(move || send_worker(&sh, &t, &s))?,
            );
            let (s, t, sh) = (sock.clone(), tun, shared.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("esp-rx{i}"))
                    .spawn(move || receive_worker(&sh, &t, &s))?,
            );
        }
        tracing::info!(
            tun = %config.tun_name, queues, tso = offloads.tso, uso = offloads.uso,
            bind = %config.bind, "userspace ESP datapath started"
        );
        Ok(Self {
            shared,
            workers,
            ike_rx: Mutex::new(Some(ike_rx)),
            socket: sockets[0].clone(),
            tun0,
            ctl,
            tun_name: config.tun_name,
            offloads,
        })
    }

    /// Replaces `peer`'s outbound SAs (the one in use, the others) with what `change`
    /// makes of them, in one table edit; `missing` when there is no such peer.
    fn edit_outbound(
        &self,
        peer: &str,
        missing: impl FnOnce() -> DatapathError,
        change: impl FnOnce(&Peer) -> Result<OutboundSas, DatapathError>,
    ) -> Result<(), DatapathError> {
        self.shared.tables.edit(|t| {
            let p = t.peers.get(peer).ok_or_else(missing)?;
            let (outbound, retired) = change(p)?;
            let next = Peer {
                name: p.name.clone(),
                config: p.config.clone(),
                to: p.to.clone(),
                outbound,
                retired,
            };
            t.peers.insert(peer.to_string(), Arc::new(next));
            Ok(())
        })
    }

    /// Set the TUN's MTU (e.g. [`crate::mtu::inner_mtu`] of the underlay's).
    pub fn set_mtu(&self, mtu: u32) -> Result<(), DatapathError> {
        Ok(tun::set_mtu(&self.ctl, &self.tun_name, mtu)?)
    }

    pub fn tun_name(&self) -> &str {
        &self.tun_name
    }

    /// Whether the kernel accepted TSO and USO on the device.
    pub fn offloads(&self) -> tun::Offloads {
        self.offloads
    }

    /// Feed one UDP payload received from `from` into the receive path, as if it
    /// came off the socket (tests inject tampered packets this way).
    pub fn inject(&self, from: SocketAddr, datagram: &[u8]) {
        let view = View::new(&self.shared.tables);
        let mut d = datagram.to_vec();
        let mut gro = Coalescer::new();
        handle_datagram(&self.shared, &view, &self.tun0, &mut gro, from, &mut d);
        gro.flush(&mut |b| write_tun(&self.shared, &self.tun0, b));
    }
}

impl Drop for Userspace {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn report(
    peer: &str,
    direction: Direction,
    active: bool,
    near: bool,
    status: crate::SaStatus,
) -> SaReport {
    SaReport {
        peer: peer.to_string(),
        direction,
        active,
        near_limit: near,
        status,
    }
}

impl Datapath for Userspace {
    fn name(&self) -> &'static str {
        "userspace"
    }

    fn add_peer(&self, name: &str, config: PeerConfig) -> Result<(), DatapathError> {
        self.shared.tables.edit(|t| {
            let (outbound, retired) = match t.peers.get(name) {
                Some(old) => (old.outbound.clone(), old.retired.clone()),
                None => (None, Vec::new()),
            };
            let peer = Peer {
                name: name.to_string(),
                to: SockAddr::from(config.remote),
                config,
                outbound,
                retired,
            };
            t.peers.insert(name.to_string(), Arc::new(peer));
            Ok(())
        })
    }

    fn remove_peer(&self, name: &str) -> Result<(), DatapathError> {
        self.shared.tables.edit(|t| {
            t.peers
                .remove(name)
                .ok_or_else(|| DatapathError::UnknownPeer(name.to_string()))?;
            t.inbound.retain(|_, e| e.peer != name);
            Ok(())
        })
    }

    fn install_inbound(&self, peer: &str, sa: SaConfig) -> Result<(), DatapathError> {
        self.shared.tables.edit(|t| {
            let p = t
                .peers
                .get(peer)
                .ok_or_else(|| DatapathError::UnknownPeer(peer.to_string()))?;
            if t.inbound.contains_key(&sa.spi) {
                return Err(DatapathError::DuplicateSpi(sa.spi));
            }
            let entry = Inbound {
                peer: peer.to_string(),
                sa: Arc::new(InboundSa::new(sa.spi, &sa.key, sa.esn, sa.replay_window)),
                prefixes: p.config.prefixes.clone().into(),
            };
            t.inbound.insert(sa.spi, Arc::new(entry));
            Ok(())
        })
    }

    fn install_outbound(&self, peer: &str, sa: SaConfig) -> Result<(), DatapathError> {
        let new = Arc::new(OutboundSa::new(sa.spi, &sa.key, sa.esn));
        self.edit_outbound(
            peer,
            || DatapathError::UnknownPeer(peer.to_string()),
            |p| {
                let mut retired = p.retired.clone();
                retired.extend(p.outbound.clone());
                Ok((Some(new), retired))
            },
        )
    }

    fn add_outbound(&self, peer: &str, sa: SaConfig) -> Result<(), DatapathError> {
        let new = Arc::new(OutboundSa::new(sa.spi, &sa.key, sa.esn));
        self.edit_outbound(
            peer,
            || DatapathError::UnknownPeer(peer.to_string()),
            |p| {
                let mut retired = p.retired.clone();
                Ok(match &p.outbound {
                    Some(active) => {
                        retired.push(new);
                        (Some(active.clone()), retired)
                    }
                    None => (Some(new), retired),
                })
            },
        )
    }

    fn activate_outbound(&self, peer: &str, spi: u32) -> Result<(), DatapathError> {
        let unknown = || unknown_sa(peer, Direction::Outbound, spi);
        self.edit_outbound(peer, unknown, |p| {
            if p.outbound.as_ref().is_some_and(|s| s.spi() == spi) {
                return Ok((p.outbound.clone(), p.retired.clone()));
            }
            let mut retired = p.retired.clone();
            let i = retired
                .iter()
                .position(|s| s.spi() == spi)
                .ok_or_else(unknown)?;
            let chosen = retired.remove(i);
            retired.extend(p.outbound.clone());
            Ok((Some(chosen), retired))
        })
    }

    fn remove_sa(&self, peer: &str, direction: Direction, spi: u32) -> Result<(), DatapathError> {
        let unknown = || unknown_sa(peer, direction, spi);
        if direction == Direction::Inbound {
            return self.shared.tables.edit(|t| match t.inbound.get(&spi) {
                Some(e) if e.peer == peer => {
                    t.inbound.remove(&spi);
                    Ok(())
                }
                _ => Err(unknown()),
            });
        }
        self.edit_outbound(peer, unknown, |p| {
            let mut retired = p.retired.clone();
            let mut outbound = p.outbound.clone();
            if outbound.as_ref().is_some_and(|s| s.spi() == spi) {
                // The newest SA still installed takes over (its counter goes on,
                // so no sequence number is used twice): during a simultaneous
                // rekey the other new SA may be the one the IKE speaker keeps.
                outbound = retired.pop();
            } else if let Some(i) = retired.iter().position(|s| s.spi() == spi) {
                retired.remove(i);
            } else {
                return Err(unknown());
            }
            Ok((outbound, retired))
        })
    }

    fn sa_status(&self) -> Vec<SaReport> {
        let t = self.shared.tables.load();
        let mut out = Vec::new();
        for p in t.peers.values() {
            if let Some(sa) = &p.outbound {
                out.push(report(
                    &p.name,
                    Direction::Outbound,
                    true,
                    sa.near_limit(),
                    sa.status(),
                ));
            }
            for sa in &p.retired {
                out.push(report(
                    &p.name,
                    Direction::Outbound,
                    false,
                    sa.near_limit(),
                    sa.status(),
                ));
            }
        }
        let mut inbound: Vec<_> = t.inbound.values().collect();
        inbound.sort_by_key(|e| (e.peer.clone(), e.sa.spi()));
        for e in inbound {
            out.push(report(
                &e.peer,
                Direction::Inbound,
                true,
                false,
                e.sa.status(),
            ));
        }
        out
    }

    fn drops(&self) -> Drops {
        let d = &self.shared.drops;
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Drops {
            no_route: l(&d.no_route),
            no_sa: l(&d.no_sa),
            seal_failed: l(&d.seal_failed),
            tx_malformed: l(&d.tx_malformed),
            send_errors: l(&d.send_errors),
            unknown_spi: l(&d.unknown_spi),
            inner_refused: l(&d.inner_refused),
            tun_errors: l(&d.tun_errors),
            ike_dropped: l(&d.ike_dropped),
        }
    }

    fn send_ike(&self, to: SocketAddr, message: &[u8]) -> Result<(), DatapathError> {
        let d = encap::ike_datagram(message);
        Ok(udp::send(&self.socket, &SockAddr::from(to), &d, None)?)
    }

    fn take_ike_receiver(&self) -> Option<Receiver<IkeDatagram>> {
        self.ike_rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A run of ESP packets to one peer, sealed back to back into one buffer and sent
/// with one `sendmsg` (UDP GSO): all `segment` octets long but the last.
struct Batch {
    buf: Vec<u8>,
    segment: usize,
    count: usize,
    /// The last packet was shorter than `segment`: nothing may follow it.
    closed: bool,
}

impl Batch {
    fn new() -> Self {
        Self {
            buf: Vec::with_capacity(udp::MAX_GSO_BYTES + 2048),
            segment: 0,
            count: 0,
            closed: false,
        }
    }

    fn flush(&mut self, shared: &Shared, sock: &OwnedFd, to: &SockAddr) {
        if self.count == 0 {
            return;
        }
        let r = if self.count == 1 {
            udp::send(sock, to, &self.buf, None)
        } else if shared.gso.load(Ordering::Relaxed) {
            udp::send(sock, to, &self.buf, Some(self.segment as u16)).or_else(|e| {
                // No UDP GSO on this path: from now on one datagram per call.
                tracing::warn!(error = %e, "UDP GSO send failed; sending datagrams one by one");
                shared.gso.store(false, Ordering::Relaxed);
                self.send_each(sock, to)
            })
        } else {
            self.send_each(sock, to)
        };
        if r.is_err() {
            shared
                .drops
                .send_errors
                .fetch_add(self.count as u64, Ordering::Relaxed);
        }
        self.buf.clear();
        self.count = 0;
        self.closed = false;
    }

    fn send_each(&self, sock: &OwnedFd, to: &SockAddr) -> std::io::Result<()> {
        for d in self.buf.chunks(self.segment) {
            udp::send(sock, to, d, None)?;
        }
        Ok(())
    }

    /// Account for the packet just sealed at `start..`; send what is due.
    fn sealed(&mut self, start: usize, shared: &Shared, sock: &OwnedFd, to: &SockAddr) {
        let len = self.buf.len() - start;
        if self.count > 0 && (self.closed || len > self.segment) {
            // It cannot join this run: send the run, and start a new one with it.
            let packet = self.buf.split_off(start);
            self.flush(shared, sock, to);
            self.buf = packet;
        }
        if self.count == 0 {
            self.segment = len;
        } else if len < self.segment {
            self.closed = true;
        }
        self.count += 1;
        if self.closed
            || self.count == udp::MAX_GSO_SEGMENTS
            || self.buf.len() + self.segment > udp::MAX_GSO_BYTES
        {
            self.flush(shared, sock, to);
        }
    }
}

fn send_worker(shared: &Shared, tun_fd: &OwnedFd, sock: &OwnedFd) {
    let mut buf = vec![0u8; VNET_HDR_LEN + 65_535];
    let mut scratch = Vec::with_capacity(256);
    let mut batch = Batch::new();
    let mut view = View::new(&shared.tables);
    let d = &shared.drops;
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match tun::read(tun_fd, &mut buf, POLL_MS) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "reading the TUN failed");
                std::thread::sleep(Duration::from_millis(POLL_MS as u64));
                continue;
            }
        };
        view.refresh(&shared.tables);
        let (Some(hdr), Some(packet)) = (VnetHdr::parse(&buf[..n]), buf.get_mut(VNET_HDR_LEN..n))
        else {
            bump(&d.tx_malformed);
            continue;
        };
        let Some(inner) = Inner::parse(packet) else {
            bump(&d.tx_malformed);
            continue;
        };
        let Some(peer) = view.tables.route(inner.dst) else {
            bump(&d.no_route);
            continue;
        };
        let Some(sa) = &peer.outbound else {
            bump(&d.no_sa);
            continue;
        };
        let next_header = inner.next_header();
        let to = &peer.to;
        let r = gso::segments(&hdr, packet, &mut scratch, |head, rest| {
            let start = batch.buf.len();
            match sa.seal_parts(next_header, head, rest, &mut batch.buf) {
                Ok(_) => batch.sealed(start, shared, sock, to),
                Err(_) => {
                    batch.buf.truncate(start);
                    bump(&d.seal_failed);
                }
            }
        });
        if r.is_err() {
            bump(&d.tx_malformed);
        }
        batch.flush(shared, sock, to);
    }
}

fn receive_worker(shared: &Shared, tun_fd: &OwnedFd, sock: &OwnedFd) {
    let mut buf = vec![0u8; 65_535];
    let mut view = View::new(&shared.tables);
    let mut gro = Coalescer::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let r = match udp::recv(sock, &mut buf) {
            Ok(r) => r,
            Err(e) if udp::nothing_yet(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "receiving on the ESP socket failed");
                std::thread::sleep(Duration::from_millis(POLL_MS as u64));
                continue;
            }
        };
        view.refresh(&shared.tables);
        let Some(from) = r.from else { continue };
        let segment = r.segment.unwrap_or(r.len).max(1);
        for d in buf[..r.len].chunks_mut(segment) {
            handle_datagram(shared, &view, tun_fd, &mut gro, from, d);
        }
        // Nothing waits past the end of a receive: no latency added.
        gro.flush(&mut |b| write_tun(shared, tun_fd, b));
    }
}

fn write_tun(shared: &Shared, tun_fd: &OwnedFd, packet: &[u8]) {
    if tun::write(tun_fd, packet).is_err() {
        bump(&shared.drops.tun_errors);
    }
}

fn handle_datagram(
    shared: &Shared,
    view: &View,
    tun_fd: &OwnedFd,
    gro: &mut Coalescer,
    from: SocketAddr,
    d: &mut [u8],
) {
    let drops = &shared.drops;
    match encap::classify(d) {
        Datagram::Esp(_) => {}
        Datagram::Ike(m) => {
            let msg = IkeDatagram {
                from,
                message: m.to_vec(),
            };
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
                shared.ike.try_send(msg)
            {
                bump(&drops.ike_dropped);
            }
            return;
        }
        Datagram::Keepalive | Datagram::Invalid => return,
    }
    let spi = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    let Some(entry) = view.tables.inbound.get(&spi) else {
        bump(&drops.unknown_spi);
        return;
    };
    // Counted by the SA (replay, ICV, malformed).
    let Ok(opened) = entry.sa.open(d) else { return };
    let payload = &d[opened.payload.clone()];
    let allowed = inner::matches_next_header(payload, opened.next_header)
        && Inner::parse(payload).is_some_and(|i| entry.prefixes.iter().any(|n| n.contains(&i.src)));
    if !allowed {
        bump(&drops.inner_refused);
        return;
    }
    if gro.push(payload, &mut |b| write_tun(shared, tun_fd, b)) {
        return;
    }
    // Not coalescable: the vnet header goes over the ESP header and IV just before
    // the payload.
    let start = opened.payload.start - VNET_HDR_LEN;
    VnetHdr::default().write(&mut d[start..opened.payload.start]);
    write_tun(shared, tun_fd, &d[start..opened.payload.end]);
}
