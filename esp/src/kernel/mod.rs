//! The kernel's ESP datapath: XFRM states and policies over NETLINK_XFRM, behind the
//! same [`Datapath`] trait as strait's userspace one. Used where the kernel has ESP
//! with AES-GCM ([`probe`] says whether it has).
//!
//! What strait installs, in the network namespace [`Xfrm::start`] ran in:
//!
//! * per peer, for each inner prefix, three policies: `out` (any source to the
//!   prefix) and `in`/`fwd` (the prefix to any destination), each with one
//!   tunnel-mode ESP template between our outer address and the peer's, SPI 0 (any
//!   state) and the peer's reqid. A longer prefix gets a lower (stronger) priority,
//!   so the kernel picks the most specific peer, as a route lookup would. With a
//!   policy and no state the kernel drops the packet and asks for an SA (ACQUIRE):
//!   nothing leaves in clear before the first SA, or between SAs.
//! * per SA, one tunnel-mode ESP state: `rfc4106(gcm(aes))` with key || salt and a
//!   128-bit ICV, the replay window in `XFRMA_REPLAY_ESN_VAL` (with `XFRM_STATE_ESN`
//!   for 64-bit sequence numbers), UDP encapsulation on port 4500 when the SA says
//!   so, no lifetime limits (the IKE engine replaces SAs itself).
//!
//! **How strait's entries are marked:** by reqid. Every state and every policy
//! template strait makes has a reqid in [`REQID_BASE`]`..=`[`REQID_BASE`]` + 0xffff`
//! (`0x5354xxxx`, "ST"): peers get `REQID_BASE + 1…`, the throwaway state of
//! [`probe`] gets `REQID_BASE` itself and also an `XFRMA_MARK` no packet carries.
//! [`purge`] removes everything with such a reqid. Marks and interface ids are left
//! free for the operator: an XFRM mark on a policy would change which packets it
//! matches.
//!
//! States and policies outlive the [`Xfrm`] value (and the agent): a restarted agent
//! finds traffic still blocked by the policies, never in clear; [`purge`] clears
//! them when strait is to leave nothing behind.

mod ike_socket;
pub mod netlink;
pub mod wire;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use ipnet::IpNet;
use socket2::SockAddr;

use crate::datapath::{
    Datapath, DatapathError, Direction, Drops, IkeDatagram, PeerConfig, SaConfig, SaReport,
};
use crate::encap::{self, Datagram};
use crate::key::{Cipher, SaKey};
use crate::sa::SaStatus;
use crate::userspace::udp;
use netlink::{NlError, XfrmSocket};
use wire::{PolicyDir, PolicyInfo, PolicySpec, StateInfo, StateSpec, Tmpl};

/// The reqids of strait's states and policy templates: `0x5354_0000..=0x5354_ffff`.
pub const REQID_BASE: u32 = 0x5354_0000;
const REQID_MASK: u32 = 0xffff_0000;
/// The probe's state: reqid and mark (value, mask) no packet ever carries.
pub const PROBE_REQID: u32 = REQID_BASE;
pub const PROBE_MARK: (u32, u32) = (0x5354_0000, u32::MAX);
/// Priority of a policy for a /128 (or /32); one more per bit shorter.
pub const POLICY_PRIORITY_BASE: u32 = 0x2000;

/// Whether a reqid is strait's.
pub fn is_strait_reqid(reqid: u32) -> bool {
    reqid & REQID_MASK == REQID_BASE
}

/// Whether the calling thread's network namespace can hold an ESP state with
/// AES-GCM (`rfc4106(gcm(aes))`, 128-bit ICV), ESN and UDP encapsulation: a throwaway
/// state (127.0.0.1 → 127.0.0.2, marked so that no packet matches it) is added and
/// deleted at once. Err says why not, in the kernel's words.
pub fn probe() -> Result<(), String> {
    let mut nl = XfrmSocket::open().map_err(|e| format!("no XFRM netlink socket: {e}"))?;
    let key = SaKey::new(Cipher::Aes128Gcm16, &[0; 20]).expect("20 octets");
    let (src, dst) = (
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
    );
    let rng = ring::rand::SystemRandom::new();
    // A random SPI; another one if that one happens to be taken.
    for _ in 0..4 {
        let r: [u8; 4] = ring::rand::generate(&rng)
            .map_err(|_| "no random numbers".to_string())?
            .expose();
        let spi = 0x100 + u32::from_ne_bytes(r) % (u32::MAX - 0x100);
        let spec = StateSpec {
            src,
            dst,
            spi,
            reqid: PROBE_REQID,
            key: &key,
            esn: true,
            replay_window: 32,
            encap: Some((encap::NAT_T_PORT, encap::NAT_T_PORT)),
            mark: Some(PROBE_MARK),
        };
        match nl.request(wire::XFRM_MSG_NEWSA, &wire::new_sa(&spec)) {
            Ok(()) => {
                let id = wire::sa_id(dst, spi, src, Some(PROBE_MARK));
                return nl.request(wire::XFRM_MSG_DELSA, &id).map_err(|e| {
                    format!("could not delete the probe state 0x{spi:08x} (reqid 0x{PROBE_REQID:08x}): {e}")
                });
            }
            Err(e) if e.errno == libc::EEXIST => continue,
            Err(e) if unsupported(&e) => return Err(format!("kernel has no ESP: {e}")),
            Err(e) => return Err(format!("kernel refused an ESP state: {e}")),
        }
    }
    Err("no free SPI for the probe state".into())
}

/// The kernel lacks ESP (`EPROTONOSUPPORT`, "Requested type not found") or the
/// algorithm (`ENOSYS`, "Requested AEAD algorithm not found").
fn unsupported(e: &NlError) -> bool {
    matches!(e.errno, libc::ENOSYS | libc::EPROTONOSUPPORT)
}

/// Remove every state and policy of strait's (reqid in strait's range) from the
/// calling thread's network namespace; returns how many.
pub fn purge() -> Result<usize, String> {
    let mut nl = XfrmSocket::open().map_err(|e| format!("no XFRM netlink socket: {e}"))?;
    let states = delete_states(&mut nl, |s| is_strait_reqid(s.reqid))
        .map_err(|e| format!("removing strait's XFRM states: {e}"))?;
    let policies = delete_policies(&mut nl, |p| p.reqids.iter().any(|&r| is_strait_reqid(r)))
        .map_err(|e| format!("removing strait's XFRM policies: {e}"))?;
    Ok(states + policies)
}

fn delete_states(nl: &mut XfrmSocket, pick: impl Fn(&StateInfo) -> bool) -> Result<usize, NlError> {
    let mut n = 0;
    for s in nl
        .dump(wire::XFRM_MSG_GETSA)?
        .iter()
        .filter_map(|b| wire::parse_state(b))
    {
        if s.proto != wire::IPPROTO_ESP || !pick(&s) {
            continue;
        }
        match nl.request(
            wire::XFRM_MSG_DELSA,
            &wire::sa_id(s.dst, s.spi, s.src, s.mark),
        ) {
            Ok(()) => n += 1,
            // Gone meanwhile (expired), or a larval ACQUIRE state the kernel drops
            // by itself.
            Err(e) if e.errno == libc::ESRCH || e.errno == libc::ENOENT => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn delete_policies(
    nl: &mut XfrmSocket,
    pick: impl Fn(&PolicyInfo) -> bool,
) -> Result<usize, NlError> {
    let mut n = 0;
    for p in nl
        .dump(wire::XFRM_MSG_GETPOLICY)?
        .iter()
        .filter_map(|b| wire::parse_policy(b))
    {
        let Some(dir) = PolicyDir::from_u8(p.dir) else {
            continue; // a socket policy (dir ≥ 3)
        };
        if !pick(&p) {
            continue;
        }
        match nl.request(
            wire::XFRM_MSG_DELPOLICY,
            &wire::policy_id(p.family, p.index, dir),
        ) {
            Ok(()) => n += 1,
            Err(e) if e.errno == libc::ENOENT => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The policies of one peer: out, in and fwd for each of its prefixes.
pub fn peer_policies(config: &PeerConfig, reqid: u32) -> Vec<PolicySpec> {
    let remote = config.remote.ip();
    let out = Tmpl {
        src: config.local,
        dst: remote,
        reqid,
    };
    let inb = Tmpl {
        src: remote,
        dst: config.local,
        reqid,
    };
    let mut v = Vec::with_capacity(config.prefixes.len() * 3);
    for net in &config.prefixes {
        let net = net.trunc();
        let any = match net {
            IpNet::V4(_) => IpNet::new(Ipv4Addr::UNSPECIFIED.into(), 0),
            IpNet::V6(_) => IpNet::new(Ipv6Addr::UNSPECIFIED.into(), 0),
        }
        .expect("prefix length 0");
        let priority = POLICY_PRIORITY_BASE + 128 - u32::from(net.prefix_len());
        let p = |src, dst, dir, tmpl| PolicySpec {
            src,
            dst,
            dir,
            priority,
            tmpl,
        };
        v.push(p(any, net, PolicyDir::Out, out));
        v.push(p(net, any, PolicyDir::In, inb));
        v.push(p(net, any, PolicyDir::Fwd, inb));
    }
    v
}

/// A policy's identity in the kernel: direction and selector.
fn same_key(a: &PolicySpec, b: &PolicySpec) -> bool {
    (a.dir, a.src, a.dst) == (b.dir, b.src, b.dst)
}

fn is_policy(p: &PolicyInfo, spec: &PolicySpec) -> bool {
    p.dir == spec.dir as u8
        && p.src == Some(spec.src)
        && p.dst == Some(spec.dst)
        && p.reqids.contains(&spec.tmpl.reqid)
}

/// How the kernel datapath is set up.
#[derive(Debug, Clone)]
pub struct XfrmConfig {
    /// Where the IKE/ESP-in-UDP socket binds, normally `0.0.0.0:4500`.
    pub bind: SocketAddr,
    /// `SO_MARK` on that socket.
    pub mark: Option<u32>,
}

impl Default for XfrmConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], encap::NAT_T_PORT)),
            mark: None,
        }
    }
}

/// One installed SA, as strait knows it (the kernel holds the key).
#[derive(Debug, Clone)]
struct Sa {
    spi: u32,
    cipher: Cipher,
    esn: bool,
    src: IpAddr,
    dst: IpAddr,
}

#[derive(Debug)]
struct Peer {
    config: PeerConfig,
    reqid: u32,
    inbound: Vec<Sa>,
    /// Oldest first; the last one is what new packets use.
    outbound: Vec<Sa>,
}

struct Inner {
    nl: XfrmSocket,
    peers: BTreeMap<String, Peer>,
}

/// How often the IKE receiver looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);
/// IKE datagrams queued for a slow caller; beyond it they are dropped (IKE
/// retransmits).
const IKE_QUEUE: usize = 256;

/// The kernel XFRM datapath. Dropping it stops the IKE receiver; the kernel's states
/// and policies stay (see the module documentation).
pub struct Xfrm {
    inner: Mutex<Inner>,
    socket: Arc<OwnedFd>,
    /// The local port of ESP in UDP (the socket's).
    port: u16,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
    ike_rx: Mutex<Option<Receiver<IkeDatagram>>>,
    ike_dropped: Arc<AtomicU64>,
    /// `/proc/net/xfrm_stat` of the datapath's namespace, opened there.
    stat: Mutex<Option<File>>,
}

impl std::fmt::Debug for Xfrm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xfrm").field("port", &self.port).finish()
    }
}

impl Xfrm {
    /// Open the netlink and UDP sockets in the calling thread's network namespace and
    /// start receiving IKE.
    pub fn start(config: XfrmConfig) -> Result<Self, DatapathError> {
        let nl = XfrmSocket::open()?;
        let (socket, port) = ike_socket::open(config.bind, config.mark, POLL)?;
        let socket = Arc::new(socket);
        // thread-self: /proc/self/net is the main thread's namespace, not ours.
        let stat = File::open("/proc/thread-self/net/xfrm_stat").ok();
        let (tx, rx) = std::sync::mpsc::sync_channel(IKE_QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let ike_dropped = Arc::new(AtomicU64::new(0));
        let worker = {
            let (s, st, d) = (socket.clone(), stop.clone(), ike_dropped.clone());
            std::thread::Builder::new()
                .name("xfrm-ike-rx".into())
                .spawn(move || receive_ike(&s, &st, &tx, &d))?
        };
        tracing::info!(bind = %config.bind, "kernel XFRM ESP datapath started");
        Ok(Self {
            inner: Mutex::new(Inner {
                nl,
                peers: BTreeMap::new(),
            }),
            socket,
            port,
            stop,
            worker: Some(worker),
            ike_rx: Mutex::new(Some(rx)),
            ike_dropped,
            stat: Mutex::new(stat),
        })
    }

    /// The reqid of a peer's states and policy templates.
    pub fn reqid(&self, peer: &str) -> Option<u32> {
        self.lock().peers.get(peer).map(|p| p.reqid)
    }

    /// Whether the kernel decapsulates ESP in UDP on the shared socket (its
    /// `UDP_ENCAP` is `UDP_ENCAP_ESPINUDP`); a check for start-up logs and tests.
    pub fn decapsulates_esp(&self) -> std::io::Result<bool> {
        Ok(ike_socket::encap_type(&self.socket)? == wire::UDP_ENCAP_ESPINUDP)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add_state(
        &self,
        inner: &mut Inner,
        peer: &str,
        direction: Direction,
        sa: &SaConfig,
    ) -> Result<Sa, DatapathError> {
        let p = inner
            .peers
            .get(peer)
            .ok_or_else(|| DatapathError::UnknownPeer(peer.to_string()))?;
        let (local, remote) = (p.config.local, p.config.remote);
        let (src, dst, encap) = match direction {
            Direction::Inbound => (remote.ip(), local, (remote.port(), self.port)),
            Direction::Outbound => (local, remote.ip(), (self.port, remote.port())),
        };
        // ESN needs a window on outbound states too (older kernels refuse 0).
        let window = match sa.replay_window {
            0 => 32,
            w if w > wire::REPLAY_WINDOW_MAX => {
                return Err(DatapathError::Invalid(format!(
                    "replay window {w}: the kernel takes at most {}",
                    wire::REPLAY_WINDOW_MAX
                )));
            }
            w => w,
        };
        let spec = StateSpec {
            src,
            dst,
            spi: sa.spi,
            reqid: p.reqid,
            key: &sa.key,
            esn: sa.esn,
            replay_window: window,
            encap: sa.udp_encap.then_some(encap),
            mark: None,
        };
        inner
            .nl
            .request(wire::XFRM_MSG_NEWSA, &wire::new_sa(&spec))
            .map_err(|e| match e.errno {
                libc::EEXIST if direction == Direction::Inbound => {
                    DatapathError::DuplicateSpi(sa.spi)
                }
                _ if unsupported(&e) => DatapathError::Unsupported(format!(
                    "ESP with {} (CONFIG_INET_ESP, CONFIG_CRYPTO_GCM): {e}",
                    wire::AEAD_GCM
                )),
                _ => DatapathError::Kernel {
                    op: "add ESP state",
                    message: e.to_string(),
                },
            })?;
        Ok(Sa {
            spi: sa.spi,
            cipher: sa.key.cipher(),
            esn: sa.esn,
            src,
            dst,
        })
    }

    fn report(
        nl: &mut XfrmSocket,
        peer: &str,
        direction: Direction,
        active: bool,
        sa: &Sa,
    ) -> Option<SaReport> {
        let body = nl
            .get(
                wire::XFRM_MSG_GETSA,
                &wire::sa_id(sa.dst, sa.spi, sa.src, None),
            )
            .map_err(|e| tracing::debug!(peer, spi = sa.spi, error = %e, "XFRM GETSA failed"))
            .ok()?;
        let s = wire::parse_state(&body)?;
        let seq = match direction {
            Direction::Outbound => s.oseq,
            Direction::Inbound => s.seq,
        };
        let max = if sa.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        Some(SaReport {
            peer: peer.to_string(),
            direction,
            active,
            near_limit: direction == Direction::Outbound && seq >= max - max / 16,
            status: SaStatus {
                spi: sa.spi,
                cipher: sa.cipher,
                esn: sa.esn,
                packets: s.packets,
                bytes: s.bytes,
                replay_failures: s.replay_failures,
                icv_failures: s.icv_failures,
                malformed: 0,
                seq,
            },
        })
    }

    fn xfrm_stat(&self) -> BTreeMap<String, u64> {
        let mut text = String::new();
        let mut f = self.stat.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = f.as_mut() {
            let _ = f
                .seek(SeekFrom::Start(0))
                .and_then(|_| f.read_to_string(&mut text));
        }
        text.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((w.next()?.to_string(), w.next()?.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Xfrm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

fn kernel(op: &'static str) -> impl FnOnce(NlError) -> DatapathError {
    move |e| DatapathError::Kernel {
        op,
        message: e.to_string(),
    }
}

impl Datapath for Xfrm {
    fn name(&self) -> &'static str {
        "kernel"
    }

    fn add_peer(&self, name: &str, config: PeerConfig) -> Result<(), DatapathError> {
        if wire::family(config.local) != wire::family(config.remote.ip()) {
            return Err(DatapathError::Invalid(format!(
                "peer {name:?}: local address {} and remote address {} differ in family",
                config.local,
                config.remote.ip()
            )));
        }
        let mut inner = self.lock();
        let inner = &mut *inner;
        let (reqid, old) = match inner.peers.get(name) {
            Some(p) => (p.reqid, peer_policies(&p.config, p.reqid)),
            None => {
                let used: Vec<u32> = inner.peers.values().map(|p| p.reqid).collect();
                let reqid = (REQID_BASE + 1..=REQID_BASE + 0xffff)
                    .find(|r| !used.contains(r))
                    .ok_or_else(|| DatapathError::Invalid("more than 65535 peers".into()))?;
                (reqid, Vec::new())
            }
        };
        let new = peer_policies(&config, reqid);
        // Add or replace every policy; on a failure put back what was there.
        for (i, p) in new.iter().enumerate() {
            if let Err(e) = inner
                .nl
                .request(wire::XFRM_MSG_UPDPOLICY, &wire::upd_policy(p))
            {
                let done = &new[..i];
                for o in old.iter().filter(|o| done.iter().any(|d| same_key(d, o))) {
                    let _ = inner
                        .nl
                        .request(wire::XFRM_MSG_UPDPOLICY, &wire::upd_policy(o));
                }
                let added: Vec<_> = done
                    .iter()
                    .filter(|d| !old.iter().any(|o| same_key(d, o)))
                    .collect();
                let _ = delete_policies(&mut inner.nl, |k| added.iter().any(|a| is_policy(k, a)));
                return Err(DatapathError::Kernel {
                    op: "add XFRM policy",
                    message: e.to_string(),
                });
            }
        }
        // Prefixes no longer the peer's: their policies go, unless another peer has
        // taken the selector over meanwhile (its template has that peer's reqid).
        let gone: Vec<_> = old
            .iter()
            .filter(|o| !new.iter().any(|n| same_key(n, o)))
            .collect();
        if !gone.is_empty() {
            delete_policies(&mut inner.nl, |k| gone.iter().any(|g| is_policy(k, g)))
                .map_err(kernel("remove XFRM policy"))?;
        }
        match inner.peers.get_mut(name) {
            // Its SAs stay: a changed address needs new SAs, which IKE makes.
            Some(p) => p.config = config,
            None => {
                inner.peers.insert(
                    name.to_string(),
                    Peer {
                        config,
                        reqid,
                        inbound: Vec::new(),
                        outbound: Vec::new(),
                    },
                );
            }
        }
        Ok(())
    }

    fn remove_peer(&self, name: &str) -> Result<(), DatapathError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let reqid = inner
            .peers
            .get(name)
            .ok_or_else(|| DatapathError::UnknownPeer(name.to_string()))?
            .reqid;
        // States first: until the policies go too, the peer's traffic meets a
        // policy without a state and is dropped, never sent in clear. After that
        // the kernel routes the prefixes like any others.
        delete_states(&mut inner.nl, |s| s.reqid == reqid).map_err(kernel("remove ESP state"))?;
        delete_policies(&mut inner.nl, |p| p.reqids.contains(&reqid))
            .map_err(kernel("remove XFRM policy"))?;
        inner.peers.remove(name);
        Ok(())
    }

    fn install_inbound(&self, peer: &str, sa: SaConfig) -> Result<(), DatapathError> {
        let mut inner = self.lock();
        if inner
            .peers
            .values()
            .any(|p| p.inbound.iter().any(|s| s.spi == sa.spi))
        {
            return Err(DatapathError::DuplicateSpi(sa.spi));
        }
        let installed = self.add_state(&mut inner, peer, Direction::Inbound, &sa)?;
        let p = inner.peers.get_mut(peer).expect("checked by add_state");
        p.inbound.push(installed);
        Ok(())
    }

    /// The switch is the kernel's: the out policies' templates name no SPI, only the
    /// peer's reqid, and for each packet the kernel takes the newest valid state with
    /// that reqid between the two endpoints (`xfrm_state_find` prefers the later
    /// `add_time`, and a new state bumps the generation of the older ones, so cached
    /// bundles of open flows are rebuilt on it). So adding the new state is the
    /// switch, in one step: packets already handed to the old state finish on it,
    /// the old state stays installed (and inbound on the peer keeps both) until
    /// `remove_sa`, and no packet finds no state. The policies need no change.
    fn install_outbound(&self, peer: &str, sa: SaConfig) -> Result<(), DatapathError> {
        let mut inner = self.lock();
        let installed = self.add_state(&mut inner, peer, Direction::Outbound, &sa)?;
        let p = inner.peers.get_mut(peer).expect("checked by add_state");
        p.outbound.retain(|s| s.spi != installed.spi);
        p.outbound.push(installed);
        Ok(())
    }

    /// The kernel has no "installed but not in use" for a state: it sends on the
    /// newest state of the peer's reqid. So a standby SA is in use at once here, and
    /// activating one is a check that it exists.
    fn add_outbound(&self, peer: &str, sa: SaConfig) -> Result<(), DatapathError> {
        self.install_outbound(peer, sa)
    }

    fn activate_outbound(&self, peer: &str, spi: u32) -> Result<(), DatapathError> {
        let inner = self.lock();
        let known = inner
            .peers
            .get(peer)
            .is_some_and(|p| p.outbound.iter().any(|s| s.spi == spi));
        if known {
            Ok(())
        } else {
            Err(DatapathError::UnknownSa {
                peer: peer.to_string(),
                direction: Direction::Outbound,
                spi,
            })
        }
    }

    /// Removing the outbound SA in use hands new packets to the newest one left, in
    /// the kernel as in strait's list.
    fn remove_sa(&self, peer: &str, direction: Direction, spi: u32) -> Result<(), DatapathError> {
        let unknown = || DatapathError::UnknownSa {
            peer: peer.to_string(),
            direction,
            spi,
        };
        let mut inner = self.lock();
        let inner = &mut *inner;
        let p = inner.peers.get_mut(peer).ok_or_else(unknown)?;
        let list = match direction {
            Direction::Inbound => &mut p.inbound,
            Direction::Outbound => &mut p.outbound,
        };
        let i = list.iter().position(|s| s.spi == spi).ok_or_else(unknown)?;
        let sa = &list[i];
        match inner.nl.request(
            wire::XFRM_MSG_DELSA,
            &wire::sa_id(sa.dst, sa.spi, sa.src, None),
        ) {
            // ESRCH: the kernel had already removed it.
            Err(e) if e.errno != libc::ESRCH => {
                return Err(DatapathError::Kernel {
                    op: "remove ESP state",
                    message: e.to_string(),
                });
            }
            _ => {}
        }
        list.remove(i);
        Ok(())
    }

    fn sa_status(&self) -> Vec<SaReport> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut out = Vec::new();
        for (name, p) in &inner.peers {
            let n = p.outbound.len();
            for (i, sa) in p.outbound.iter().enumerate().rev() {
                out.extend(Self::report(
                    &mut inner.nl,
                    name,
                    Direction::Outbound,
                    i + 1 == n,
                    sa,
                ));
            }
            for sa in &p.inbound {
                out.extend(Self::report(
                    &mut inner.nl,
                    name,
                    Direction::Inbound,
                    true,
                    sa,
                ));
            }
        }
        out
    }

    /// The kernel's counters of the namespace (`/proc/net/xfrm_stat`), which also
    /// count traffic of XFRM entries not strait's.
    fn drops(&self) -> Drops {
        let s = self.xfrm_stat();
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        Drops {
            no_sa: g("XfrmOutNoStates"),
            unknown_spi: g("XfrmInNoStates"),
            inner_refused: g("XfrmInTmplMismatch"),
            send_errors: g("XfrmOutError"),
            ike_dropped: self.ike_dropped.load(Ordering::Relaxed),
            ..Drops::default()
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

/// The IKE side of the shared port: the kernel keeps ESP and keepalives, so what
/// arrives is IKE behind the non-ESP marker (anything else is dropped).
fn receive_ike(
    sock: &OwnedFd,
    stop: &AtomicBool,
    tx: &SyncSender<IkeDatagram>,
    dropped: &AtomicU64,
) {
    let mut buf = vec![0u8; 65_535];
    while !stop.load(Ordering::Relaxed) {
        let r = match udp::recv(sock, &mut buf) {
            Ok(r) => r,
            Err(e) if udp::nothing_yet(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "receiving on the IKE socket failed");
                std::thread::sleep(POLL);
                continue;
            }
        };
        let (Some(from), Datagram::Ike(m)) = (r.from, encap::classify(&buf[..r.len])) else {
            continue;
        };
        let msg = IkeDatagram {
            from,
            message: m.to_vec(),
        };
        if tx.try_send(msg).is_err() {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerConfig {
        PeerConfig {
            local: "192.0.2.1".parse().unwrap(),
            remote: "192.0.2.2:4500".parse().unwrap(),
            prefixes: vec![
                "10.2.0.0/24".parse().unwrap(),
                "fd00:2::1/64".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn a_peer_gets_out_in_and_fwd_per_prefix_more_specific_first() {
        let ps = peer_policies(&peer(), REQID_BASE + 1);
        assert_eq!(ps.len(), 6);
        let (out, inb, fwd) = (&ps[0], &ps[1], &ps[2]);
        assert_eq!(
            (out.dir, out.src.to_string(), out.dst.to_string()),
            (PolicyDir::Out, "0.0.0.0/0".into(), "10.2.0.0/24".into())
        );
        assert_eq!(out.tmpl.src.to_string(), "192.0.2.1");
        assert_eq!(out.tmpl.dst.to_string(), "192.0.2.2");
        assert_eq!(
            (inb.dir, inb.src.to_string(), inb.dst.to_string()),
            (PolicyDir::In, "10.2.0.0/24".into(), "0.0.0.0/0".into())
        );
        assert_eq!((inb.tmpl.src, inb.tmpl.dst), (out.tmpl.dst, out.tmpl.src));
        assert_eq!(
            (fwd.dir, fwd.src, fwd.tmpl),
            (PolicyDir::Fwd, inb.src, inb.tmpl)
        );
        // The IPv6 prefix is cut to its network, and a /64 outranks a /24.
        assert_eq!(ps[3].dst.to_string(), "fd00:2::/64");
        assert_eq!(ps[3].src.to_string(), "::/0");
        assert!(ps[3].priority < out.priority);
        assert!(ps.iter().all(|p| p.tmpl.reqid == REQID_BASE + 1));
    }

    #[test]
    fn strait_reqids_are_recognised() {
        assert!(is_strait_reqid(REQID_BASE));
        assert!(is_strait_reqid(REQID_BASE + 0xffff));
        assert!(!is_strait_reqid(REQID_BASE - 1));
        assert!(!is_strait_reqid(REQID_BASE + 0x1_0000));
        assert!(!is_strait_reqid(1));
    }
}
