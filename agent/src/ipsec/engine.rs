//! The IPsec engine: one task that owns this node's IKE speaker and ESP datapath and
//! keeps them, and the steering, in line with the cluster.
//!
//! Inputs: the cluster's mode (`ipsec/settings`), the fabric's view of the cluster
//! (node records with sites and keys, blocks), IKE datagrams from the datapath's
//! shared UDP 4500 socket, the clock, and operator commands (`netctl ipsec rekey`).
//! On every change it recomputes the plan ([`super::pairs::plan`]) and applies the
//! difference:
//!
//! - a new peer: its address and prefixes go to the datapath, its prefixes into the
//!   steering (from then on its traffic enters the datapath, and is dropped until a
//!   Child SA is up: never sent in clear), and an IKE SA is started;
//! - a peer whose key changed: its IKE SA is deleted and started again, so it is
//!   authenticated with the new key;
//! - a peer no longer planned: its SAs are deleted and it leaves datapath and steering.
//!
//! Which side starts: the node whose name sorts first starts at once; the other
//! starts after [`RESPONDER_GRACE`] if no SA came (its peer may be the one that just
//! restarted and lost its SAs; INITIAL_CONTACT then clears the stale ones). Both
//! starting at once is resolved by the speaker.
//!
//! Speaker events are applied as they come: a Child SA up installs the inbound SA and
//! then switches outbound to it; a rekey installs the new pair, the old stays until its
//! Delete, so that both are live during the overlap. The side that answered a rekey
//! keeps sending on the old SA until the new one carries the initiator's traffic (or
//! the old one is deleted): its answer may not have reached the initiator yet, which
//! could not decrypt. A deleted Child SA leaves the datapath. Ten times a second the
//! engine asks the datapath for SAs near their sequence number or byte limit and has
//! the speaker rekey them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strait_api::ipsec::{EspDrops, IpsecMode, IpsecPeer, IpsecStatus};
use strait_esp::{Datapath, Direction, PeerConfig};
use strait_ike::auth::{Ed25519Signer, RawKeyVerifier};
use strait_ike::codec::Identity;
use strait_ike::speaker::{ChildSa, Config as IkeConfig, Event, IkeState, Lifetime, Speaker};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::NodeKey;
use super::child_sa;
use super::datapath::{self, DatapathSettings};
use super::gateway::bgp::TunnelBgp;
use super::gateway::learned::{self, Learned};
use super::gateway::plan as gateway_plan;
use super::gateway::runtime::Runtime;
use super::pairs::{PlannedPeer, plan};
use super::peers::Peers;
use super::steering;
use super::view;
use crate::fabric::ViewFollower;
use crate::fabric::desired::ClusterView;
use crate::netlink::Netlink;
use crate::store::Store;

/// How long the node whose name sorts second waits for its peer to start an IKE SA
/// before it starts one itself.
pub const RESPONDER_GRACE: Duration = Duration::from_secs(2);
/// After a failed or lost IKE SA, the next attempt waits this long, doubling.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How often SA counters are checked: against the limits, and for traffic on a new
/// inbound SA whose outbound twin is held back.
const LIMIT_CHECK: Duration = Duration::from_millis(100);
pub use super::child_sa::REPLAY_WINDOW;

/// What the engine is started with.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub node: String,
    pub site: String,
    pub datapath: DatapathSettings,
    /// Child SA lifetime (soft; hard is a third longer). `None`: the speaker's default.
    pub child_lifetime: Option<Duration>,
    /// IKE SA lifetime, likewise.
    pub ike_lifetime: Option<Duration>,
    /// Rekey a Child SA once either direction carried this many bytes.
    pub child_bytes: Option<u64>,
    pub dpd_interval: Option<Duration>,
    /// Reauthenticate IKE SAs this often (none: only when asked, or when the peer does).
    pub reauth_interval: Option<Duration>,
    /// Offer extended sequence numbers (else 32-bit only).
    pub esn: bool,
    /// Test-only: the SAs' keys, as Wireshark's `esp_sa` lines (the agent checked it
    /// is allowed).
    pub key_log: Option<PathBuf>,
    /// The MTU containers get while encryption is on.
    pub encrypted_mtu: u32,
    /// This node's container pools: its traffic selectors towards external peers
    /// when it is their site's gateway.
    pub pools: Vec<ipnet::IpNet>,
}

/// What the API asks of the engine.
enum Command {
    Status(oneshot::Sender<IpsecStatus>),
    /// With `true`, a reauthentication instead.
    Rekey(String, bool, oneshot::Sender<Result<(), String>>),
}

/// A cheap handle on the running engine, for the API.
#[derive(Clone)]
pub struct IpsecHandle {
    commands: mpsc::Sender<Command>,
}

impl IpsecHandle {
    /// This node's IPsec status; `None` when the engine is gone.
    pub async fn status(&self) -> Option<IpsecStatus> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Rekey the Child SAs with `peer` now.
    pub async fn rekey(&self, peer: &str) -> Result<(), String> {
        self.rekey_or_reauth(peer, false).await
    }

    /// Reauthenticate with `peer` now: new IKE and Child SAs replace the old ones.
    pub async fn reauth(&self, peer: &str) -> Result<(), String> {
        self.rekey_or_reauth(peer, true).await
    }

    async fn rekey_or_reauth(&self, peer: &str, reauth: bool) -> Result<(), String> {
        let gone = || "the IPsec engine is not running".to_string();
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Rekey(peer.to_string(), reauth, tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// One peer as the engine tracks it.
struct PeerState {
    plan: PlannedPeer,
    /// When the next IKE SA may be started (`None`: one is up or under way).
    next_attempt: Option<Instant>,
    retry: Duration,
    last_error: Option<String>,
    /// Outbound SPI → the inbound SPI of the same Child SA (the speaker's handle).
    children: BTreeMap<u32, u32>,
    /// Totals since start, over every SA there was.
    totals: strait_api::ipsec::PeerTotals,
    /// Rekeys we answered: new outbound SAs held back until safe.
    held_back: child_sa::HeldBack,
    /// Deleted Child SAs' inbound halves, kept a little longer.
    retiring: child_sa::Retiring,
}

/// The keys peers are authenticated with, shared with the speaker's verifier.
type Keys = Arc<Mutex<HashMap<String, [u8; 32]>>>;

/// A datapath that runs, and why it is that one.
struct Running {
    datapath: Arc<dyn Datapath>,
    reason: String,
}

/// What the engine follows for the site gateway: the external peers, the networks
/// gateways learned over BGP (both from the store, see [`super::peers::follow`] and
/// [`learned::follow`]), and the store where this node's own sessions write theirs.
pub struct GatewayInputs {
    pub peers: watch::Receiver<Option<Peers>>,
    pub learned: watch::Receiver<Option<BTreeMap<String, Vec<ipnet::IpNet>>>>,
    pub store: Arc<dyn Store>,
}

/// The engine; run it on a task with [`Engine::run`].
pub struct Engine {
    cfg: EngineConfig,
    netlink: Netlink,
    speaker: Speaker,
    keys: Keys,
    running: Option<Running>,
    datapath_error: Option<String>,
    /// The datapath the probe at start picked, and why (until one runs).
    predicted: (&'static str, String),
    peers: BTreeMap<String, PeerState>,
    mode: IpsecMode,
    view: Arc<ClusterView>,
    commands: mpsc::Receiver<Command>,
    ike_tx: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    ike_rx: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    key_log: Option<strait_esp::keylog::KeyLog>,
    /// What the containers' MTU is reduced by while encryption is on (read by ADD).
    mtu_less: Arc<AtomicU32>,
    /// Each SA's counters when last read, to add what they grew by to the totals.
    tally: view::Tally,
    /// The external peers in the store, and the ones this node carries as its site's
    /// gateway (their speakers, SAs and steering).
    external: Peers,
    gateway: Runtime,
    /// IKE datagrams from the gateway's UDP 500 socket.
    ike500_rx: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    /// What the gateway wants in the IPsec table: its carried peers' networks into
    /// the datapath, and on the site's other nodes the routes through the gateway.
    gateway_steering: BTreeMap<String, Vec<ipnet::IpNet>>,
    gateway_routes: BTreeSet<crate::netlink::TableRoute>,
    /// What gateways learned over BGP from routers behind external peers, and this
    /// node's own sessions (while it runs).
    learned: Learned,
    tunnel_bgp: Option<TunnelBgp>,
}

impl Engine {
    /// Builds the engine and its speaker, signing with this node's `key`; nothing runs
    /// until [`Engine::run`]. `mtu_less` is where the engine says how much smaller
    /// new containers' MTU must be (ESP's overhead while any pair is encrypted).
    pub fn new(
        cfg: EngineConfig,
        netlink: Netlink,
        key: &NodeKey,
        mtu_less: Arc<AtomicU32>,
    ) -> Result<(Self, IpsecHandle), String> {
        let mut ike = IkeConfig::new(identity(&cfg.node));
        let lifetime = |l: Duration| Lifetime {
            soft: l,
            hard: l + l / 3,
            jitter: l / 10,
        };
        if let Some(l) = cfg.child_lifetime {
            ike.child_lifetime = lifetime(l);
        }
        if let Some(l) = cfg.ike_lifetime {
            ike.ike_lifetime = lifetime(l);
        }
        if let Some(d) = cfg.dpd_interval {
            ike.dpd_interval = d;
        }
        ike.reauth_after = cfg.reauth_interval;
        ike.nat_t_port = cfg.datapath.port;
        if !cfg.esn {
            ike.esn = vec![false];
        }
        let signer = Ed25519Signer::from_pkcs8(key.pkcs8(), true)
            .map_err(|e| format!("this node's IPsec key: {e}"))?;
        let keys: Keys = Arc::default();
        let lookup = keys.clone();
        let verifier = RawKeyVerifier::new(move |id: &Identity| {
            let node = node_of(id)?;
            lookup.lock().ok()?.get(&node).copied()
        });
        let (ike500_tx, ike500_rx) = mpsc::channel(256);
        let gateway = Runtime::new(
            ike.clone(),
            cfg.datapath.port,
            Box::new(super::peers::psk),
            ike500_tx,
        );
        let speaker = Speaker::new(ike, Box::new(signer), Box::new(verifier));
        let key_log = match &cfg.key_log {
            Some(path) => Some(
                strait_esp::keylog::KeyLog::open(path)
                    .map_err(|e| format!("key log {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let (cmd_tx, commands) = mpsc::channel(16);
        let (ike_tx, ike_rx) = mpsc::channel(1024);
        let predicted = datapath::predict(&cfg.datapath);
        info!(datapath = predicted.0, reason = %predicted.1, "IPsec datapath, once a pair needs encryption");
        let engine = Engine {
            predicted,
            cfg,
            netlink,
            speaker,
            keys,
            running: None,
            datapath_error: None,
            peers: BTreeMap::new(),
            mode: IpsecMode::Off,
            view: Arc::default(),
            commands,
            ike_tx,
            ike_rx,
            key_log,
            mtu_less,
            tally: Default::default(),
            external: Peers::new(),
            gateway,
            ike500_rx,
            gateway_steering: BTreeMap::new(),
            gateway_routes: BTreeSet::new(),
            learned: Learned::new(),
            tunnel_bgp: None,
        };
        Ok((engine, IpsecHandle { commands: cmd_tx }))
    }

    /// Runs until `stop`. The steering is left in place on return (a restarted agent
    /// adopts it), so nothing to an encrypted peer leaves in clear in between.
    pub async fn run(
        mut self,
        mut mode: watch::Receiver<Option<IpsecMode>>,
        follower: ViewFollower,
        gateway: GatewayInputs,
        mut stop: watch::Receiver<bool>,
    ) {
        let GatewayInputs {
            peers: mut external,
            learned: mut learned_rx,
            store,
        } = gateway;
        let ViewFollower { mut views, ack } = follower;
        // Nothing is planned before the mode, the cluster, the external peers and what
        // gateways learned were read: an agent that starts must not take the steering
        // it adopted for "mode off" or "no peers" and let a packet out in clear until
        // the store answers.
        let first = async {
            let mode = *mode.wait_for(Option::is_some).await.ok()?;
            let view = views.wait_for(Option::is_some).await.ok()?.clone();
            let peers = external.wait_for(Option::is_some).await.ok()?.clone();
            let learned = learned_rx.wait_for(Option::is_some).await.ok()?.clone();
            Some((mode?, view?, peers?, learned?))
        };
        let (m, v, e, l) = tokio::select! {
            _ = stopped(&mut stop) => return,
            first = first => match first {
                Some(first) => first,
                None => return,
            },
        };
        self.mode = m;
        self.view = v;
        self.external = e;
        self.learned = learned::by_peer(&l);
        self.tunnel_bgp = Some(TunnelBgp::start(store, self.cfg.node.clone()));
        self.apply_plan().await;
        ack.applied(&self.view);
        let mut limits = tokio::time::interval(LIMIT_CHECK);
        loop {
            let deadline = [
                self.speaker.next_deadline(),
                self.next_attempt(),
                self.gateway.next_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            tokio::select! {
                _ = stopped(&mut stop) => break,
                changed = mode.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let Some(m) = *mode.borrow_and_update() else { continue };
                    self.mode = m;
                    info!(mode = %self.mode, "IPsec mode");
                    self.apply_plan().await;
                }
                changed = views.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let Some(view) = views.borrow_and_update().clone() else { continue };
                    if *view != *self.view {
                        self.view = view.clone();
                        self.apply_plan().await;
                    }
                    // The steering of every planned peer's prefixes is in: the fabric
                    // may route them.
                    ack.applied(&view);
                }
                changed = external.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let Some(peers) = external.borrow_and_update().clone() else { continue };
                    self.external = peers;
                    self.apply_plan().await;
                }
                changed = learned_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let Some(records) = learned_rx.borrow_and_update().clone() else { continue };
                    self.learned = learned::by_peer(&records);
                    self.apply_plan().await;
                }
                Some((from, bytes)) = self.ike_rx.recv() => {
                    if self.gateway.owns(from) {
                        let port = self.cfg.datapath.port;
                        self.gateway.handle_datagram(from, port, &bytes, Instant::now());
                        self.drain();
                    } else if let Some(local) = self.local_for(from) {
                        self.speaker.handle_datagram(local, from, &bytes, Instant::now());
                        self.drain();
                    } else if self.gateway.takes_unknown() {
                        let port = self.cfg.datapath.port;
                        self.gateway.handle_datagram(from, port, &bytes, Instant::now());
                        self.drain();
                    }
                }
                Some((from, bytes)) = self.ike500_rx.recv() => {
                    let port = super::gateway::runtime::IKE_PORT;
                    self.gateway.handle_datagram(from, port, &bytes, Instant::now());
                    self.drain();
                }
                Some(command) = self.commands.recv() => self.command(command),
                _ = limits.tick() => self.check_limits(),
                _ = sleep_until(deadline) => {
                    let now = Instant::now();
                    self.speaker.poll(now);
                    self.gateway.poll(now);
                    self.start_due(now);
                    self.drain();
                }
            }
        }
        info!("IPsec engine stopped; the steering stays, so nothing leaves in clear");
    }

    /// Recomputes the plan and applies the difference to speaker, datapath, keys and
    /// steering.
    async fn apply_plan(&mut self) {
        let now = Instant::now();
        let planned = match self.mode {
            IpsecMode::Off => BTreeMap::new(),
            mode => plan(mode, &self.cfg.node, &self.view),
        };
        let encrypting = self.mode != IpsecMode::Off;
        let overhead = self.cfg.datapath.overhead();
        self.mtu_less
            .store(if encrypting { overhead } else { 0 }, Ordering::Relaxed);
        let pools = self.cfg.pools.clone();
        let gateway_plans = gateway_plan::plan(
            &self.cfg.node,
            &self.view,
            &self.external,
            &pools,
            &self.learned,
        );
        let carries = gateway_plans
            .values()
            .any(|p| matches!(p.role, gateway_plan::Role::Active { .. }));
        if (!planned.is_empty() || carries) && self.running.is_none() {
            self.start_datapath();
        }
        self.gateway_steering = self.gateway.apply(
            &gateway_plans,
            self.running.as_ref().map(|r| &*r.datapath),
            now,
        );
        self.gateway_routes = gateway_plan::table_routes(&gateway_plan::routes(&gateway_plans));
        let gone: Vec<String> = self
            .peers
            .keys()
            .filter(|n| !planned.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            info!(peer = %name, "IPsec peer removed: its SAs are deleted");
            self.speaker.delete(&identity(&name), now);
            if let Some(r) = &self.running {
                let _ = r.datapath.remove_peer(&name);
            }
            self.lock_keys().remove(&name);
            self.peers.remove(&name);
        }
        for (name, p) in planned {
            let key = p.peer.ed25519.clone().ok();
            let old_key = self.lock_keys().get(&name).copied();
            match key {
                Some(k) => self.lock_keys().insert(name.clone(), k),
                None => self.lock_keys().remove(&name),
            };
            let first = if self.cfg.node < name {
                now
            } else {
                now + RESPONDER_GRACE
            };
            let state = self.peers.entry(name.clone()).or_insert_with(|| {
                info!(peer = %name, site = %p.peer.site, "IPsec peer added");
                PeerState {
                    plan: p.clone(),
                    next_attempt: Some(first),
                    retry: RETRY_MIN,
                    last_error: None,
                    children: BTreeMap::new(),
                    held_back: Default::default(),
                    retiring: Default::default(),
                    totals: Default::default(),
                }
            });
            if old_key.is_some() && old_key != key {
                // Authenticated with a key the node no longer has: authenticate again.
                info!(peer = %name, "IPsec peer's key changed: its SAs are renegotiated");
                self.speaker.delete(&identity(&name), now);
                state.next_attempt = Some(now);
            }
            state.last_error = match (&p.peer.ed25519, p.address) {
                (Err(why), _) => Some(format!("no usable key: {why}")),
                (_, None) => Some("no underlay address of a family this node has".into()),
                _ => state.last_error.take(),
            };
            state.plan = p;
            if let (Some(r), Some(local), Some(addr)) =
                (&self.running, state.plan.local, state.plan.address)
            {
                let config = PeerConfig {
                    local,
                    remote: SocketAddr::new(addr, self.cfg.datapath.port),
                    prefixes: state.plan.prefixes.clone(),
                };
                if let Err(e) = r.datapath.add_peer(&name, config) {
                    warn!(peer = %name, error = %e, "adding the peer to the ESP datapath");
                }
            }
        }
        self.steer().await;
        self.start_due(now);
        self.drain();
    }

    fn start_datapath(&mut self) {
        match datapath::start(&self.cfg.datapath) {
            Ok(started) => {
                info!(datapath = started.datapath.name(), reason = %started.reason, "ESP datapath started");
                if let Some(rx) = started.datapath.take_ike_receiver() {
                    let tx = self.ike_tx.clone();
                    // The datapath's receive workers are threads; this one hands their
                    // IKE datagrams to the engine's task, and ends with the datapath.
                    let spawned = std::thread::Builder::new()
                        .name("ipsec-ike-rx".into())
                        .spawn(move || {
                            while let Ok(d) = rx.recv() {
                                if tx.blocking_send((d.from, d.message)).is_err() {
                                    break;
                                }
                            }
                        });
                    if let Err(e) = spawned {
                        warn!(error = %e, "starting the IKE receive thread");
                    }
                }
                self.datapath_error = None;
                self.running = Some(Running {
                    datapath: started.datapath,
                    reason: started.reason,
                });
            }
            Err(e) => {
                warn!(error = %e, "no ESP datapath: traffic to encrypted peers is refused");
                self.datapath_error = Some(e);
            }
        }
    }

    /// The steering for the planned peers: into the TUN device where it exists,
    /// `prohibit` alone where it does not (no datapath yet). The kernel datapath needs
    /// none: its XFRM policies take the packets, and drop them while no SA is there.
    async fn steer(&mut self) {
        let kernel = self
            .running
            .as_ref()
            .is_some_and(|r| r.datapath.name() == "kernel");
        let prefixes: BTreeMap<String, Vec<ipnet::IpNet>> = self
            .peers
            .iter()
            .map(|(n, p)| (n.clone(), p.plan.prefixes.clone()))
            .chain(self.gateway_steering.clone())
            .filter(|_| !kernel)
            .collect();
        let tun = match self.netlink.link_by_name(datapath::TUN_NAME).await {
            Ok(link) => link.map(|l| l.index),
            Err(e) => {
                warn!(error = %e, "reading the ESP device");
                None
            }
        };
        if let Some(tun) = tun {
            let want = self.gateway.bgp_addresses().into_iter().collect();
            hold_addresses(&self.netlink, tun, want).await;
        }
        let mut want = steering::routes(&prefixes, tun);
        want.extend(self.gateway_routes.iter().copied());
        match steering::reconcile(&self.netlink, &want).await {
            Ok(c) if c != steering::Changes::default() => {
                info!(
                    added = c.added,
                    removed = c.removed,
                    "IPsec steering updated"
                )
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "IPsec steering"),
        }
    }

    /// The earliest time a peer's IKE SA is due to be started.
    fn next_attempt(&self) -> Option<Instant> {
        self.peers.values().filter_map(|p| p.next_attempt).min()
    }

    /// Starts the IKE SAs that are due, with peers that have none.
    fn start_due(&mut self, now: Instant) {
        if self.running.is_none() {
            return;
        }
        let with_sa: BTreeSet<String> = self
            .speaker
            .status()
            .into_iter()
            .filter(|s| !matches!(s.state, IkeState::Deleting | IkeState::Dead))
            .filter_map(|s| s.peer.as_ref().and_then(node_of))
            .collect();
        let port = self.cfg.datapath.port;
        for (name, p) in &mut self.peers {
            let Some(due) = p.next_attempt else { continue };
            if due > now {
                continue;
            }
            p.next_attempt = None;
            if with_sa.contains(name) {
                continue;
            }
            let (Ok(_), Some(local), Some(remote)) =
                (&p.plan.peer.ed25519, p.plan.local, p.plan.address)
            else {
                continue;
            };
            debug!(peer = %name, %remote, "starting an IKE SA");
            self.speaker.connect(
                identity(name),
                SocketAddr::new(local, port),
                SocketAddr::new(remote, port),
                now,
            );
        }
    }

    /// Our address for a datagram from `from`: the planned local address towards
    /// that peer, else this node's underlay address of the same family.
    fn local_for(&self, from: SocketAddr) -> Option<SocketAddr> {
        let port = self.cfg.datapath.port;
        if let Some(p) = self
            .peers
            .values()
            .find(|p| p.plan.address == Some(from.ip()))
        {
            return p.plan.local.map(|l| SocketAddr::new(l, port));
        }
        let own = self
            .view
            .nodes
            .get(&self.cfg.node)
            .or_else(|| self.view.last_records.get(&self.cfg.node))?;
        let ip = match from.ip() {
            IpAddr::V4(_) => own.underlay_v4.map(IpAddr::V4),
            IpAddr::V6(_) => own.underlay_v6.map(IpAddr::V6),
        }?;
        Some(SocketAddr::new(ip, port))
    }

    /// Applies the speaker's events.
    fn drain(&mut self) {
        while let Some(event) = self.speaker.next_event() {
            self.event(event);
        }
        if let Some(r) = &self.running {
            self.gateway.drain(&*r.datapath, self.key_log.as_ref());
        }
        // BGP through a tunnel follows the tunnel: a session while it is up.
        if let Some(t) = &self.tunnel_bgp {
            t.set(self.gateway.bgp_sessions());
        }
    }

    fn event(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::Transmit { remote, bytes, .. } => {
                if let Some(r) = &self.running
                    && let Err(e) = r.datapath.send_ike(remote, &bytes)
                {
                    debug!(%remote, error = %e, "sending an IKE message");
                }
            }
            Event::ChildSaUp(child) => self.install_child(&child, true),
            Event::ChildSaRekeyed { new, initiator, .. } => {
                if let Some(p) = node_of(&new.peer).and_then(|n| self.peers.get_mut(&n)) {
                    p.totals.child_rekeys += 1;
                }
                self.install_child(&new, initiator)
            }
            Event::ChildSaDeleting { peer, spi_out, .. } => {
                // Our Delete is on its way: the peer drops its inbound half on reading
                // it, so nothing more may leave on this SA. The newest other outbound
                // SA takes over; the inbound half stays until the Delete is answered.
                let Some(name) = node_of(&peer) else { return };
                if let Some(r) = &self.running {
                    child_sa::ignore_unknown(r.datapath.remove_sa(
                        &name,
                        Direction::Outbound,
                        spi_out,
                    ));
                }
                if let Some(p) = self.peers.get_mut(&name) {
                    p.held_back.forget(spi_out);
                }
            }
            Event::ChildSaDeleted {
                peer,
                spi_in,
                spi_out,
            } => {
                let Some(name) = node_of(&peer) else { return };
                if let Some(r) = &self.running {
                    child_sa::ignore_unknown(r.datapath.remove_sa(
                        &name,
                        Direction::Outbound,
                        spi_out,
                    ));
                }
                // The inbound half lingers for what the peer sealed just before.
                if let Some(p) = self.peers.get_mut(&name) {
                    p.children.remove(&spi_out);
                    p.held_back.forget(spi_out);
                    p.retiring.retire(spi_in, now);
                }
                debug!(peer = %name, spi_in = format!("{spi_in:08x}"), spi_out = format!("{spi_out:08x}"), "Child SA deleted");
            }
            Event::ChildSaFailed { peer, reason } => {
                warn!(%peer, %reason, "Child SA refused");
                self.set_error(&peer, format!("Child SA refused: {reason}"), now);
            }
            Event::IkeSaUp {
                peer, remote, nat, ..
            } => {
                info!(%peer, %remote, nat = nat.any(), "IKE SA established");
                if let Some(p) = node_of(&peer).and_then(|n| self.peers.get_mut(&n)) {
                    p.next_attempt = None;
                    p.retry = RETRY_MIN;
                    p.last_error = None;
                }
            }
            Event::IkeSaRekeyed { peer } => debug!(%peer, "IKE SA rekeyed"),
            Event::IkeSaDown { peer, reason } => {
                warn!(%peer, %reason, "IKE SA down");
                self.set_error(&peer, format!("IKE SA down: {reason}"), now);
            }
            Event::AuthFailed { peer, reason } => {
                if let Some(p) = node_of(&peer).and_then(|n| self.peers.get_mut(&n)) {
                    p.totals.auth_failures += 1;
                }
                warn!(%peer, %reason, "IKE authentication failed: nothing is sent to it in clear");
                self.set_error(&peer, format!("authentication failed: {reason}"), now);
            }
            // Node peers' failures also come as IkeSaDown or AuthFailed, handled above.
            Event::Failed {
                remote,
                peer,
                reason,
            } => debug!(%remote, ?peer, %reason, "IKE SA failed before it was up"),
        }
    }

    /// Records a failure with `peer` and schedules the next attempt, backing off.
    fn set_error(&mut self, peer: &Identity, error: String, now: Instant) {
        if let Some(p) = node_of(peer).and_then(|n| self.peers.get_mut(&n)) {
            p.last_error = Some(error);
            p.next_attempt = Some(now + p.retry);
            p.retry = (p.retry * 2).min(RETRY_MAX);
        }
    }

    /// Installs a Child SA: inbound first, so the peer's first packet on it is
    /// taken, then outbound — in use at once when `switch` (a new SA, or a rekey we
    /// asked for, whose answer the peer sent after installing), else held back (see
    /// [`child_sa::HeldBack`]).
    fn install_child(&mut self, child: &ChildSa, switch: bool) {
        let Some(name) = node_of(&child.peer) else {
            return;
        };
        let Some(r) = &self.running else { return };
        let spi_out = child.spi_out;
        if let Err(e) = child_sa::install(&*r.datapath, self.key_log.as_ref(), &name, child, switch)
        {
            warn!(peer = %name, error = %e, "installing a Child SA");
            return;
        }
        info!(peer = %name, spi_in = format!("{:08x}", child.spi_in), spi_out = format!("{spi_out:08x}"), switch, "Child SA installed");
        let Some(p) = self.peers.get_mut(&name) else {
            return;
        };
        p.children.insert(spi_out, child.spi_in);
        if !switch {
            p.held_back.hold(child.spi_in, spi_out, Instant::now());
        }
    }

    /// Puts in use the held-back outbound SAs whose inbound twin carried traffic, or
    /// whose grace ran out, and removes the retired inbound SAs whose linger ran out.
    fn child_sas_due(&mut self, esp: &[strait_esp::SaReport]) {
        let Some(r) = &self.running else { return };
        let now = Instant::now();
        for (name, p) in &mut self.peers {
            p.held_back.switch_due(&*r.datapath, name, esp, now);
            p.retiring.remove_due(&*r.datapath, name, now);
        }
        self.gateway.child_sas_due(&*r.datapath, esp, now);
    }

    /// Has the speaker rekey the Child SAs whose outbound direction is near its
    /// sequence number limit or carried `child_bytes`.
    fn check_limits(&mut self) {
        let Some(r) = &self.running else { return };
        let now = Instant::now();
        let esp = r.datapath.sa_status();
        let mut due = vec![];
        for sa in &esp {
            if sa.direction != Direction::Outbound || !sa.active {
                continue;
            }
            let bytes = self.cfg.child_bytes.is_some_and(|b| sa.status.bytes >= b);
            if (sa.near_limit || bytes)
                && let Some(spi_in) = self
                    .peers
                    .get(&sa.peer)
                    .and_then(|p| p.children.get(&sa.status.spi))
            {
                due.push(*spi_in);
            }
        }
        self.child_sas_due(&esp);
        self.count(&esp);
        for spi_in in due {
            self.speaker.child_limit_reached(spi_in, now);
        }
        self.drain();
    }

    /// Adds what every SA's counters grew by since the last read to its peer's
    /// totals, node peers' here and external peers' in the gateway's runtime.
    fn count(&mut self, esp: &[strait_esp::SaReport]) {
        for (peer, grew) in self.tally.count(esp) {
            match self.peers.get_mut(&peer) {
                Some(p) => view::add(&mut p.totals, &grew),
                None => self.gateway.count(&peer, &grew),
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Rekey(peer, reauth, reply) => {
                let now = Instant::now();
                let result = if let Some(external) = peer.strip_prefix("ext:") {
                    let r = match reauth {
                        true => self.gateway.reauth(external, now),
                        false => self.gateway.rekey(external, now),
                    };
                    self.drain();
                    r
                } else if self.peers.contains_key(&peer) {
                    match reauth {
                        true => self.speaker.reauthenticate(&identity(&peer), now),
                        false => self.speaker.rekey_child(&identity(&peer), now),
                    }
                    self.drain();
                    Ok(())
                } else {
                    Err(format!("{peer:?} is not an IPsec peer of this node"))
                };
                let _ = reply.send(result);
            }
        }
    }

    fn status(&self) -> IpsecStatus {
        let now = Instant::now();
        let sas = self.speaker.status();
        let esp = self
            .running
            .as_ref()
            .map(|r| r.datapath.sa_status())
            .unwrap_or_default();
        let mut peers: Vec<IpsecPeer> = self
            .peers
            .iter()
            .map(|(name, p)| {
                let ike = view::shown(
                    sas.iter()
                        .filter(|s| s.peer.as_ref().and_then(node_of).as_deref() == Some(name)),
                );
                let address = p
                    .plan
                    .address
                    .map(|a| SocketAddr::new(a, self.cfg.datapath.port));
                let child =
                    |c: &strait_ike::speaker::ChildStatus| view::child_counted(c, name, &esp);
                let mut v = view::peer(
                    name.clone(),
                    p.plan.peer.site.clone(),
                    address,
                    ike,
                    child,
                    now,
                );
                v.last_error = p.last_error.clone();
                v.totals = p.totals.clone();
                v
            })
            .collect();
        peers.extend(self.gateway.status(now, &esp));
        let drops = self
            .running
            .as_ref()
            .map(|r| {
                let d = r.datapath.drops();
                EspDrops {
                    no_route: d.no_route,
                    no_sa: d.no_sa,
                    seal_failed: d.seal_failed,
                    unknown_spi: d.unknown_spi,
                    inner_refused: d.inner_refused,
                    other: d.tx_malformed + d.send_errors + d.tun_errors + d.ike_dropped,
                }
            })
            .unwrap_or_default();
        IpsecStatus {
            node: self.cfg.node.clone(),
            site: self.cfg.site.clone(),
            mode: self.mode,
            datapath: self.running.as_ref().map(|r| r.datapath.name().to_string()),
            datapath_reason: self
                .running
                .as_ref()
                .map(|r| r.reason.clone())
                .or_else(|| self.datapath_error.clone())
                .or_else(|| {
                    Some(format!(
                        "not started; would be {}: {}",
                        self.predicted.0, self.predicted.1
                    ))
                }),
            mtu: (self.mode != IpsecMode::Off).then_some(self.cfg.encrypted_mtu),
            peers,
            drops,
        }
    }

    fn lock_keys(&self) -> std::sync::MutexGuard<'_, HashMap<String, [u8; 32]>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Puts our BGP session addresses (`want`) of the carried external peers on the
/// datapath's device, and takes off any other host address there (the device is
/// strait's alone; an address left there by a run that carried more peers must go).
/// An IPv6 link-local address the kernel gave the device is left alone.
async fn hold_addresses(netlink: &Netlink, tun: u32, want: BTreeSet<IpAddr>) {
    let have = match netlink.addresses(tun).await {
        Ok(a) => a,
        Err(e) => {
            warn!(error = %e, "reading the ESP device's addresses");
            return;
        }
    };
    let link_local = |ip: &IpAddr| matches!(ip, IpAddr::V6(a) if a.is_unicast_link_local());
    for a in have
        .iter()
        .filter(|a| !want.contains(&a.ip) && !link_local(&a.ip))
    {
        if let Some(e) = netlink.del_address(tun, a.ip, a.prefix_len).await.err() {
            warn!(address = %a.ip, error = %e, "removing an address from the ESP device");
        }
    }
    for ip in want.iter().filter(|ip| !have.iter().any(|a| a.ip == **ip)) {
        let len = if ip.is_ipv4() { 32 } else { 128 };
        match netlink.add_address(tun, *ip, len).await {
            Ok(()) => info!(address = %ip, "BGP session address for an external peer held here"),
            Err(e) => {
                warn!(address = %ip, error = %e, "adding the BGP session address to the ESP device")
            }
        }
    }
}

/// Resolves once `stop` turns true or its sender is gone; holds no guard.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Between strait nodes, the IKE identity is the node name as an FQDN ID.
fn identity(node: &str) -> Identity {
    Identity::Fqdn(node.to_string())
}

fn node_of(id: &Identity) -> Option<String> {
    match id {
        Identity::Fqdn(n) => Some(n.clone()),
        _ => None,
    }
}
