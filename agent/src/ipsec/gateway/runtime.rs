//! The external peers this node carries as its site's active gateway: one IKE speaker
//! per peer (each peer has its own identities, authentication and traffic selectors),
//! their Child SAs in the shared ESP datapath under the name `ext:<peer>`, and what
//! the steering must send into it.
//!
//! The node engine owns the datapath and the UDP 4500 socket; it hands this runtime
//! the datagrams from external peers' addresses, polls it by its deadline and drains
//! its speakers' events into the datapath. Everything else about external peers is
//! here.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use strait_api::gateway::{ExternalPeer, IdSpec, Initiate, PeerAuth as AuthConfig};
use strait_api::ipsec::{IpsecPeer, PeerTotals};
use strait_esp::{Datapath, Direction, PeerConfig};
use strait_ike::auth::{CaVerifier, CertSigner, LocalAuth, PeerAuth, Psk};
use strait_ike::codec::{Identity, TrafficSelector};
use strait_ike::speaker::{ChildStatus, Config as IkeConfig, Event, IkeState, Speaker};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::bgp;
use super::plan::{PeerPlan, Role};
use crate::ipsec::steering::ESP_MARK;
use crate::ipsec::{child_sa, view};

/// IKE's own port: where other vendors' gateways start an IKE SA (RFC 7296 §2).
/// After IKE_SA_INIT both sides move to the datapath's port 4500, since every
/// external peer's speaker forces UDP encapsulation.
pub const IKE_PORT: u16 = 500;

/// After a failed IKE SA the next attempt waits this long, doubling.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The datapath's name for external peer `name` (node names never hold a ':').
pub fn datapath_name(peer: &str) -> String {
    format!("ext:{peer}")
}

/// Reads a peer's pre-shared key: from its record, or from the file it names.
pub type PskSource = dyn Fn(&ExternalPeer) -> Result<Vec<u8>, String> + Send;

/// One external peer this node carries.
struct Carried {
    plan: PeerPlan,
    local: IpAddr,
    speaker: Speaker,
    remote_id: Identity,
    next_attempt: Option<Instant>,
    retry: Duration,
    last_error: Option<String>,
    /// The peer's current record, to notice a change that needs new SAs.
    record: ExternalPeer,
    /// Rekeys the peer asked for: our new outbound SAs held back until safe.
    held_back: child_sa::HeldBack,
    /// Deleted Child SAs' inbound halves, kept a little longer.
    retiring: child_sa::Retiring,
    /// What crossed its SAs since this node carries it.
    totals: PeerTotals,
}

/// The UDP 500 socket (IPv4) of a gateway that carries peers, and the task that
/// hands what arrives on it to the engine. Marked like the datapath's sockets, so the
/// steering lets its datagrams take the main table.
struct Port500 {
    socket: Arc<tokio::net::UdpSocket>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Port500 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Port500 {
    fn open(to_engine: mpsc::Sender<(SocketAddr, Vec<u8>)>) -> std::io::Result<Port500> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_mark(ESP_MARK)?;
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        s.bind(&SocketAddr::from(([0, 0, 0, 0], IKE_PORT)).into())?;
        let socket = Arc::new(tokio::net::UdpSocket::from_std(s.into())?);
        let rx = socket.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                match rx.recv_from(&mut buf).await {
                    Ok((n, from)) => {
                        if to_engine.send((from, buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "receiving on UDP 500");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(Port500 { socket, task })
    }
}

/// The runtime; see the module doc.
pub struct Runtime {
    /// The template every peer's speaker configuration starts from (lifetimes, DPD,
    /// proposals, NAT-T port).
    base: IkeConfig,
    port: u16,
    psk: Box<PskSource>,
    carried: BTreeMap<String, Carried>,
    /// Peers this node should carry but cannot (no key, bad identity), and why.
    refused: BTreeMap<String, (PeerPlan, String)>,
    /// Open while this node carries a peer.
    port500: Option<Port500>,
    /// Where the UDP 500 socket's datagrams go (the engine's loop).
    to_engine: mpsc::Sender<(SocketAddr, Vec<u8>)>,
}

impl Runtime {
    /// `to_engine` receives what arrives on UDP 500 (see [`Runtime::handle_datagram`]).
    pub fn new(
        base: IkeConfig,
        port: u16,
        psk: Box<PskSource>,
        to_engine: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    ) -> Self {
        Runtime {
            base,
            port,
            psk,
            carried: BTreeMap::new(),
            refused: BTreeMap::new(),
            port500: None,
            to_engine,
        }
    }

    /// Takes the new plans: peers this node now carries get a speaker (and, when
    /// strait initiates, an IKE SA at once); peers it no longer carries are deleted
    /// and leave the datapath. Returns the steering this node's carried peers need.
    pub fn apply(
        &mut self,
        plans: &BTreeMap<String, PeerPlan>,
        datapath: Option<&dyn Datapath>,
        now: Instant,
    ) -> BTreeMap<String, Vec<IpNet>> {
        let active: BTreeMap<&String, (&PeerPlan, IpAddr)> = plans
            .iter()
            .filter_map(|(n, p)| match p.role {
                Role::Active { local } => Some((n, (p, local))),
                _ => None,
            })
            .collect();
        let gone: Vec<String> = self
            .carried
            .iter()
            .filter(|(n, c)| {
                active.get(n).is_none_or(|(p, local)| {
                    p.peer != c.record || *local != c.local || p.local_ts != c.plan.local_ts
                })
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            let mut c = self.carried.remove(&name).expect("listed");
            info!(peer = %name, "external IPsec peer no longer carried here (or changed): its SAs are deleted");
            c.speaker.delete(&c.remote_id, now);
            if let Some(dp) = datapath {
                drain(&mut c, dp, None, self.port500.as_ref());
                let _ = dp.remove_peer(&datapath_name(&name));
            }
        }
        self.refused.clear();
        for (name, (plan, local)) in active {
            if let Some(c) = self.carried.get_mut(name) {
                // Same peer, same selectors: only what is routed (learned) may change.
                c.plan = plan.clone();
                continue;
            }
            if let Some(why) = self.second_anonymous(name, plan) {
                warn!(peer = %name, reason = %why, "external IPsec peer cannot be carried");
                self.refused.insert(name.clone(), (plan.clone(), why));
                continue;
            }
            match self.speaker_for(plan, local) {
                Ok((speaker, remote_id)) => {
                    info!(peer = %name, %local, "carrying external IPsec peer");
                    let initiates =
                        plan.peer.initiate != Initiate::Peer && plan.peer.address.is_some();
                    self.carried.insert(
                        name.clone(),
                        Carried {
                            plan: plan.clone(),
                            local,
                            speaker,
                            remote_id,
                            next_attempt: initiates.then_some(now),
                            retry: RETRY_MIN,
                            last_error: None,
                            record: plan.peer.clone(),
                            held_back: Default::default(),
                            retiring: Default::default(),
                            totals: Default::default(),
                        },
                    );
                }
                Err(why) => {
                    warn!(peer = %name, reason = %why, "external IPsec peer cannot be carried");
                    self.refused.insert(name.clone(), (plan.clone(), why));
                }
            }
        }
        if self.carried.is_empty() {
            self.port500 = None;
        } else if self.port500.is_none() {
            match Port500::open(self.to_engine.clone()) {
                Ok(p) => self.port500 = Some(p),
                Err(e) => warn!(error = %e, "no UDP 500 for external peers: they must use 4500"),
            }
        }
        if let Some(dp) = datapath {
            for c in self.carried.values() {
                add_to_datapath(c, dp, self.port);
            }
        }
        // Refused peers are steered too: their networks fail closed in the datapath
        // (no SA) instead of leaving by the default route.
        self.carried
            .iter()
            .map(|(n, c)| (datapath_name(n), c.plan.routed.clone()))
            .chain(
                self.refused
                    .iter()
                    .map(|(n, (p, _))| (datapath_name(n), p.routed.clone())),
            )
            .collect()
    }

    /// The BGP sessions there should be through carried peers' tunnels: one per peer
    /// with `bgp` whose tunnel is up (an established IKE SA with a Child SA in use).
    pub fn bgp_sessions(&self) -> BTreeMap<String, bgp::Session> {
        self.carried
            .iter()
            .filter_map(|(name, c)| {
                let b = c.plan.peer.bgp.as_ref()?;
                let sas = c.speaker.status();
                let up = view::shown(&sas).is_some_and(|s| {
                    s.state == IkeState::Established && s.children.iter().any(|ch| !ch.replaced)
                });
                if !up {
                    return None;
                }
                let ours = IpNet::from(b.local_address);
                let mut refuse = c.plan.local_ts.clone();
                refuse.push(IpNet::from(c.local));
                refuse.extend(c.plan.peer.address.map(IpNet::from));
                let router_id = match (c.local, b.local_address) {
                    (IpAddr::V4(a), _) | (_, IpAddr::V4(a)) => a,
                    // An IPv6-only gateway: any stable 32 bits unique to the session.
                    (IpAddr::V6(a), IpAddr::V6(_)) => {
                        let o = a.octets();
                        std::net::Ipv4Addr::new(o[12], o[13], o[14], o[15])
                    }
                };
                Some((
                    name.clone(),
                    bgp::Session {
                        router: b.address,
                        asn: b.asn,
                        local: b.local_address,
                        local_asn: b.local_asn(),
                        router_id,
                        announce: c
                            .plan
                            .local_ts
                            .iter()
                            .filter(|n| **n != ours)
                            .copied()
                            .collect(),
                        refuse,
                    },
                ))
            })
            .collect()
    }

    /// Our BGP session addresses of the carried peers: this gateway holds them (on the
    /// datapath's device) while it carries the peer.
    pub fn bgp_addresses(&self) -> Vec<IpAddr> {
        self.carried
            .values()
            .filter_map(|c| c.plan.peer.bgp.as_ref().map(|b| b.local_address))
            .collect()
    }

    /// A peer without an address is served from wherever its IKE arrives, which only
    /// works for one such peer per gateway: later ones (by name) are refused.
    fn second_anonymous(&self, name: &str, plan: &PeerPlan) -> Option<String> {
        if plan.peer.address.is_some() {
            return None;
        }
        let other = self
            .carried
            .iter()
            .find(|(n, c)| c.plan.peer.address.is_none() && n.as_str() != name)?;
        Some(format!(
            "peer {} has no address either, and this gateway tells such peers apart only by \
             where their IKE comes from: give one of them an address",
            other.0
        ))
    }

    fn speaker_for(&self, plan: &PeerPlan, local: IpAddr) -> Result<(Speaker, Identity), String> {
        let peer = &plan.peer;
        let (local_auth, peer_auth, own_id): (Box<dyn LocalAuth>, Box<dyn PeerAuth>, Identity) =
            match &peer.auth {
                AuthConfig::Psk { .. } => {
                    let psk = Psk::new((self.psk)(peer)?);
                    (Box::new(psk.clone()), Box::new(psk), ip_identity(local))
                }
                AuthConfig::Cert {
                    cert_file,
                    key_file,
                    ca_file,
                } => {
                    // The private key file is held to a PSK file's rules: root's, and
                    // nobody else's to read.
                    crate::ipsec::peers::read_secret_file(key_file)
                        .map_err(|e| format!("key_file: {e}"))?;
                    let signer = CertSigner::from_pem_files(cert_file, key_file)?;
                    let verifier = CaVerifier::from_pem_file(ca_file)?;
                    let id = signer.subject_dn();
                    (Box::new(signer), Box::new(verifier), id)
                }
            };
        let local_id = match &peer.local_id {
            Some(s) => identity(s)?,
            None => own_id,
        };
        let remote_id = match (&peer.remote_id, &peer.auth, peer.address) {
            (Some(s), _, _) => identity(s)?,
            (None, AuthConfig::Cert { .. }, _) => {
                return Err("a peer authenticated by certificate needs a remote_id: the identity its certificate names".into());
            }
            (None, _, Some(a)) => ip_identity(a),
            (None, _, None) => return Err("a peer without an address needs a remote_id".into()),
        };
        let mut config = self.base.clone();
        config.force_udp_encap = true;
        config.local_id = local_id;
        config.remote_id = Some(remote_id.clone());
        config.local_ts = plan
            .local_ts
            .iter()
            .map(|n| TrafficSelector::prefix(*n))
            .collect();
        config.remote_ts = plan
            .remote_ts
            .iter()
            .map(|n| TrafficSelector::prefix(*n))
            .collect();
        if config.local_ts.is_empty() || config.remote_ts.is_empty() {
            return Err("no traffic selectors: the node has no pools and the peer no local_networks, or the peer has no remote_networks".into());
        }
        Ok((Speaker::new(config, local_auth, peer_auth), remote_id))
    }

    /// The carried peer a datagram from `from` is from: the one with that address, or
    /// the peer without an address whose IKE SA runs from there.
    fn peer_at(&self, from: SocketAddr) -> Option<String> {
        let by_address = self
            .carried
            .iter()
            .find(|(_, c)| c.plan.peer.address == Some(from.ip()));
        let learned = || {
            self.carried.iter().find(|(_, c)| {
                c.plan.peer.address.is_none()
                    && c.speaker
                        .status()
                        .iter()
                        .any(|s| s.remote.ip() == from.ip())
            })
        };
        by_address.or_else(learned).map(|(n, _)| n.clone())
    }

    /// The carried peer without an address, if any: IKE from an address nobody else
    /// owns (no node, no other external peer) is its.
    fn anonymous(&self) -> Option<String> {
        self.carried
            .iter()
            .find(|(_, c)| c.plan.peer.address.is_none())
            .map(|(n, _)| n.clone())
    }

    /// Whether a datagram from `from` is a known external peer's (by its address, or
    /// where an address-less peer's IKE SA runs).
    pub fn owns(&self, from: SocketAddr) -> bool {
        self.peer_at(from).is_some()
    }

    /// Whether IKE from an address nobody owns may be for a peer without an address
    /// (ask after the node peers were asked).
    pub fn takes_unknown(&self) -> bool {
        self.anonymous().is_some()
    }

    /// An IKE datagram from `from` to our port `port` (500, or the datapath's 4500
    /// with the marker already taken off): to the peer at that address, else to the
    /// peer without an address.
    pub fn handle_datagram(&mut self, from: SocketAddr, port: u16, bytes: &[u8], now: Instant) {
        let Some(name) = self.peer_at(from).or_else(|| self.anonymous()) else {
            debug!(%from, "IKE from an address no external peer has");
            return;
        };
        if let Some(c) = self.carried.get_mut(&name) {
            let local = SocketAddr::new(c.local, port);
            c.speaker.handle_datagram(local, from, bytes, now);
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.carried
            .values()
            .flat_map(|c| [c.speaker.next_deadline(), c.next_attempt])
            .flatten()
            .min()
    }

    /// Runs due timers and starts due IKE SAs.
    pub fn poll(&mut self, now: Instant) {
        // Start on IKE's own port, as other vendors' gateways expect, when we have it.
        let port = if self.port500.is_some() {
            IKE_PORT
        } else {
            self.port
        };
        for c in self.carried.values_mut() {
            c.speaker.poll(now);
            if c.next_attempt.is_some_and(|t| t <= now) {
                c.next_attempt = None;
                let up = c
                    .speaker
                    .status()
                    .iter()
                    .any(|s| !matches!(s.state, IkeState::Deleting | IkeState::Dead));
                if let (false, Some(addr)) = (up, c.plan.peer.address) {
                    debug!(peer = %c.plan.peer.name, %addr, "starting an IKE SA with an external peer");
                    c.speaker.connect(
                        c.remote_id.clone(),
                        SocketAddr::new(c.local, port),
                        SocketAddr::new(addr, port),
                        now,
                    );
                }
            }
        }
    }

    /// Applies every speaker's events to the datapath.
    pub fn drain(&mut self, datapath: &dyn Datapath, key_log: Option<&strait_esp::keylog::KeyLog>) {
        for c in self.carried.values_mut() {
            drain(c, datapath, key_log, self.port500.as_ref());
        }
    }

    /// Puts in use the held-back outbound SAs that are due (see [`child_sa::HeldBack`])
    /// and removes the retired inbound SAs whose linger ran out ([`child_sa::Retiring`]).
    pub fn child_sas_due(
        &mut self,
        datapath: &dyn Datapath,
        esp: &[strait_esp::SaReport],
        now: Instant,
    ) {
        for (name, c) in &mut self.carried {
            let name = datapath_name(name);
            c.held_back.switch_due(datapath, &name, esp, now);
            c.retiring.remove_due(datapath, &name, now);
        }
    }

    /// Adds what datapath peer `peer`'s SAs grew by (see [`view::Tally`]) to its
    /// totals, when it is an external peer this node carries.
    pub fn count(&mut self, peer: &str, grew: &PeerTotals) {
        if let Some(c) = peer
            .strip_prefix("ext:")
            .and_then(|name| self.carried.get_mut(name))
        {
            view::add(&mut c.totals, grew);
        }
    }

    /// Rekeys the Child SA with external peer `name` now (`netctl ipsec rekey`).
    pub fn rekey(&mut self, name: &str, now: Instant) -> Result<(), String> {
        let c = self
            .carried
            .get_mut(name)
            .ok_or_else(|| format!("external peer {name:?} is not carried by this node"))?;
        c.speaker.rekey_child(&c.remote_id, now);
        Ok(())
    }

    /// Reauthenticates with external peer `name` now (`netctl ipsec rekey --reauth`):
    /// new IKE and Child SAs, traffic moved to them, then the old ones deleted.
    pub fn reauth(&mut self, name: &str, now: Instant) -> Result<(), String> {
        let c = self
            .carried
            .get_mut(name)
            .ok_or_else(|| format!("external peer {name:?} is not carried by this node"))?;
        c.speaker.reauthenticate(&c.remote_id, now);
        Ok(())
    }

    /// The peers this node carries (or should, and cannot), as `netctl ipsec peers`
    /// shows them, with the counters of their SAs in the datapath's report `esp`.
    pub fn status(&self, now: Instant, esp: &[strait_esp::SaReport]) -> Vec<IpsecPeer> {
        let mut out: Vec<IpsecPeer> = self
            .carried
            .iter()
            .map(|(name, c)| {
                let sas = c.speaker.status();
                // Where its IKE SA runs (behind a NAT: the mapped address and port),
                // else where we would start one.
                let address = view::shown(&sas).map(|s| s.remote).or(c
                    .plan
                    .peer
                    .address
                    .map(|a| SocketAddr::new(a, self.port)));
                let dp_name = datapath_name(name);
                let child = |ch: &ChildStatus| view::child_counted(ch, &dp_name, esp);
                let mut v = view::peer(
                    dp_name.clone(),
                    c.plan.peer.site.clone(),
                    address,
                    view::shown(&sas),
                    child,
                    now,
                );
                v.last_error = c.last_error.clone();
                v.totals = c.totals.clone();
                v
            })
            .collect();
        out.extend(self.refused.iter().map(|(name, (p, why))| {
            let address = p.peer.address.map(|a| SocketAddr::new(a, self.port));
            let no_child = |ch: &ChildStatus| view::child(ch, false, None, None);
            let mut v = view::peer(
                datapath_name(name),
                p.peer.site.clone(),
                address,
                None,
                no_child,
                now,
            );
            v.last_error = Some(why.clone());
            v
        }));
        out
    }
}

/// One carried peer's speaker events, applied.
fn drain(
    c: &mut Carried,
    dp: &dyn Datapath,
    key_log: Option<&strait_esp::keylog::KeyLog>,
    port500: Option<&Port500>,
) {
    let name = datapath_name(&c.plan.peer.name);
    let now = Instant::now();
    while let Some(event) = c.speaker.next_event() {
        match event {
            Event::Transmit {
                local,
                remote,
                bytes,
            } if local.port() == IKE_PORT => {
                let sent = match port500 {
                    Some(p) => p.socket.try_send_to(&bytes, remote).map(|_| ()),
                    None => Err(std::io::Error::other("no UDP 500 socket")),
                };
                if let Err(e) = sent {
                    debug!(%remote, error = %e, "sending an IKE message on UDP 500");
                }
            }
            Event::Transmit { remote, bytes, .. } => {
                if let Err(e) = dp.send_ike(remote, &bytes) {
                    debug!(%remote, error = %e, "sending an IKE message to an external peer");
                }
            }
            Event::ChildSaUp(child) => install(c, dp, key_log, &name, &child, true, now),
            Event::ChildSaRekeyed { new, initiator, .. } => {
                c.totals.child_rekeys += 1;
                install(c, dp, key_log, &name, &new, initiator, now)
            }
            Event::ChildSaDeleting { spi_out, .. } => {
                child_sa::ignore_unknown(dp.remove_sa(&name, Direction::Outbound, spi_out));
                c.held_back.forget(spi_out);
            }
            Event::ChildSaDeleted {
                spi_in, spi_out, ..
            } => {
                // The inbound half lingers for what the peer sealed just before.
                child_sa::ignore_unknown(dp.remove_sa(&name, Direction::Outbound, spi_out));
                c.held_back.forget(spi_out);
                c.retiring.retire(spi_in, now);
            }
            Event::IkeSaUp { remote, .. } => {
                info!(peer = %name, %remote, "IKE SA with external peer established");
                // ESP goes where this IKE SA runs (a NAT's mapped port, or the only
                // address an address-less peer has).
                add_to_datapath(c, dp, remote.port());
                c.retry = RETRY_MIN;
                c.last_error = None;
                c.next_attempt = None;
            }
            Event::IkeSaRekeyed { .. } => debug!(peer = %name, "IKE SA rekeyed"),
            Event::IkeSaDown { reason, .. } => {
                fail(c, &name, format!("IKE SA down: {reason}"), now)
            }
            Event::ChildSaFailed { reason, .. } => {
                fail(c, &name, format!("Child SA refused: {reason}"), now)
            }
            Event::AuthFailed { reason, .. } => {
                c.totals.auth_failures += 1;
                fail(c, &name, format!("authentication failed: {reason}"), now)
            }
            Event::Failed { reason, .. } => fail(c, &name, reason, now),
        }
    }
}

/// Adds peer `c` to the datapath, or updates it: ESP to where its established IKE SA
/// runs, else to its address on `port`; what enters the tunnel is what is routed into
/// it, and the same prefixes bound what may come out. A peer without an address waits
/// for its first IKE SA.
fn add_to_datapath(c: &Carried, dp: &dyn Datapath, port: u16) {
    let sas = c.speaker.status();
    let established = sas
        .iter()
        .filter(|s| s.state == IkeState::Established)
        .max_by_key(|s| s.established)
        .map(|s| s.remote);
    let Some(remote) = established.or(c.plan.peer.address.map(|a| SocketAddr::new(a, port))) else {
        return;
    };
    let config = PeerConfig {
        local: c.local,
        remote,
        prefixes: c.plan.routed.clone(),
    };
    if let Err(e) = dp.add_peer(&datapath_name(&c.plan.peer.name), config) {
        warn!(peer = %c.plan.peer.name, error = %e, "adding the external peer to the ESP datapath");
    }
}

/// Installs a Child SA of `c`: in use at once when `switch` (a new SA, or a rekey we
/// asked for), else held back until the peer uses its inbound twin.
fn install(
    c: &mut Carried,
    dp: &dyn Datapath,
    key_log: Option<&strait_esp::keylog::KeyLog>,
    name: &str,
    child: &strait_ike::speaker::ChildSa,
    switch: bool,
    now: Instant,
) {
    match child_sa::install(dp, key_log, name, child, switch) {
        Ok(()) => {
            info!(peer = %name, spi_in = format!("{:08x}", child.spi_in), spi_out = format!("{:08x}", child.spi_out), switch, "Child SA installed");
            if !switch {
                c.held_back.hold(child.spi_in, child.spi_out, now);
            }
        }
        Err(e) => warn!(peer = %name, error = %e, "installing a Child SA"),
    }
}

/// Records a failure and, when strait initiates, schedules the next attempt.
fn fail(c: &mut Carried, name: &str, reason: String, now: Instant) {
    warn!(peer = %name, %reason, "external IPsec peer: nothing is sent to it in clear");
    c.last_error = Some(reason);
    if c.plan.peer.initiate != Initiate::Peer && c.plan.peer.address.is_some() {
        c.next_attempt = Some(now + c.retry);
        c.retry = (c.retry * 2).min(RETRY_MAX);
    }
}

fn ip_identity(ip: IpAddr) -> Identity {
    match ip {
        IpAddr::V4(a) => Identity::Ipv4(a),
        IpAddr::V6(a) => Identity::Ipv6(a),
    }
}

/// An identity as a peer record writes it.
pub fn identity(s: &str) -> Result<Identity, String> {
    Ok(match IdSpec::parse(s)? {
        IdSpec::Fqdn(n) => Identity::Fqdn(n),
        IdSpec::Email(e) => Identity::Rfc822(e),
        IdSpec::Ipv4(a) => Identity::Ipv4(a),
        IdSpec::Ipv6(a) => Identity::Ipv6(a),
        IdSpec::Dn(rdns) => Identity::dn(&rdns)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_from_peer_records() {
        assert_eq!(
            identity("fqdn:gw.example").unwrap(),
            Identity::Fqdn("gw.example".into())
        );
        assert_eq!(
            identity("ipv4:198.51.100.7").unwrap(),
            Identity::Ipv4("198.51.100.7".parse().unwrap())
        );
        let dn = identity("dn:CN=gw.example,O=Example").unwrap();
        assert_eq!(dn.to_string(), "dn:CN=gw.example,O=Example");
        assert!(identity("gw").is_err());
    }
}
