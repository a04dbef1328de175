//! The owner task: the one place the RIB lives. Session events, BFD state changes,
//! the API's requests and the timers (graceful-restart stale timers, convergence)
//! come in; UPDATEs go out through the sessions and best-path changes through the
//! FIB channel. Everything is handled in order on this task, so no state is shared.

use std::collections::{HashMap, HashSet};
use std::mem;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::config::{FibEvent, PeerSpec, SpeakerConfig, SpeakerError};
use super::pack::pack;
use super::status::{PeerStatus, RefusedRoute, RibEntry, down_reason, rib_entries};
use crate::bfd::{self, Bfd, BfdState, Diagnostic};
use crate::codec::{
    AfiSafi, Capability, Context, ExtendedNextHop, Family, GracefulRestart, GracefulRestartFamily,
    MpUnreach, NextHop, Notification, PathAttribute, Update, codes,
};
use crate::fsm::{self, DownReason, Negotiated};
use crate::policy::{ExportFilters, Protected, RefusedRoutes};
use crate::rib::{
    Attrs, Changes, FibChange, MaxPrefixesExceeded, PeerConfig, Rib, RibError, RouteUpdate,
};
use crate::session::{Listener, MD5_MAX_KEY_LEN, SessionConfig, SessionEvent, SessionHandle};

/// A peer without graceful restart sends no End-of-RIB: its initial table counts as
/// complete once it has been Established this long without sending an UPDATE.
pub const INITIAL_QUIET: Duration = Duration::from_secs(1);
/// Wait before a session that went down tries again.
const IDLE_HOLD: Duration = Duration::from_secs(1);
/// How many queued inputs are handled before the UPDATEs they caused are sent: a
/// burst of UPDATEs from one peer becomes full UPDATEs to the others.
const BATCH: usize = 4096;
/// A batch also ends once a peer has this many prefixes waiting to be sent, or the FIB
/// this many changes: a full table arriving in one burst would otherwise be held whole,
/// per peer, in the pending map (and its FIB changes in `fib_pending`, about 100 octets
/// each) before the first UPDATE goes out. At 4096 the packed UPDATEs stay full but for
/// one per flush and attribute set.
const OUT_FLUSH_AT: usize = 4096;
/// A slow FIB consumer makes the owner hold changes back (and coalesce them) rather
/// than wait: beyond this many held changes, only the latest per prefix is kept.
const FIB_COALESCE_AT: usize = 4096;
/// A peer that went over its prefix limit stays down this long, as BIRD's
/// `receive limit … action restart` does, rather than reloading its table every idle
/// hold time.
pub const MAX_PREFIX_RESTART: Duration = Duration::from_secs(60);
/// RFC 4486 Cease subcodes for a peer taken out of the configuration and for one whose
/// configuration changed (its session restarts).
const CEASE_DECONFIGURED: u8 = 3;
const CEASE_CONFIG_CHANGE: u8 = 6;
/// How long shutdown waits for the sessions to end: to send their Cease or, for a
/// restart, for the peers to close their side (at most `session::CLOSE_WAIT` each, in
/// parallel).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);

pub(super) enum Request {
    SetPeers(Vec<PeerSpec>, oneshot::Sender<Result<(), SpeakerError>>),
    SetOriginated(Vec<IpNet>, oneshot::Sender<()>),
    Peers(oneshot::Sender<Vec<PeerStatus>>),
    Rib(Option<IpNet>, oneshot::Sender<Vec<RibEntry>>),
    Refused(Option<IpAddr>, oneshot::Sender<Vec<RefusedRoute>>),
    SetProtected(Protected, oneshot::Sender<()>),
    /// `graceful`: close the connections without a NOTIFICATION.
    Shutdown {
        graceful: bool,
        reply: oneshot::Sender<()>,
    },
}

enum Input {
    Session {
        peer: IpAddr,
        generation: u64,
        event: SessionEvent,
    },
    Bfd {
        peer: IpAddr,
        generation: u64,
        state: BfdState,
    },
}

/// What the session negotiated, while it is Established.
struct Established {
    ctx: Context,
    /// The peer's graceful-restart capability, if it sent one.
    graceful_restart: Option<GracefulRestart>,
    since: (Instant, SystemTime),
}

struct BfdRun {
    local: IpAddr,
    seen_up: bool,
    watcher: JoinHandle<()>,
}

struct Peer {
    spec: PeerSpec,
    /// Events of an earlier session to the same address are ignored.
    generation: u64,
    session: SessionHandle,
    forwarder: JoinHandle<()>,
    up: Option<Established>,
    last_error: Option<String>,
    /// We ended the session (BFD, max-prefix): its Down is not a restart.
    our_reset: Option<String>,
    bfd: Option<BfdRun>,
    bfd_state: Option<bfd::State>,
    /// Its first table is complete (End-of-RIB, or quiet), for [`FibEvent::Converged`].
    initial_done: bool,
    eor_wanted: Vec<Family>,
    quiet_until: Option<Instant>,
    /// Graceful restart helper: its stale routes go at this time at the latest.
    stale_until: Option<Instant>,
    /// Its session was stopped (max-prefix); a new one starts at this time.
    restart_at: Option<Instant>,
    /// What its import policy refused from the current session.
    refused: RefusedRoutes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Converge {
    Waiting,
    /// Decided; sent after the changes before it.
    Due,
    Sent,
}

pub(super) struct Owner {
    cfg: SpeakerConfig,
    rib: Rib,
    listeners: Vec<Listener>,
    bfd: Bfd,
    peers: HashMap<IpAddr, Peer>,
    next_generation: u64,
    inputs: mpsc::UnboundedSender<Input>,
    /// Adj-RIB-Out changes not yet sent, by peer: only the latest per prefix counts.
    out: HashMap<IpAddr, HashMap<IpNet, Option<Arc<Attrs>>>>,
    fib: mpsc::Sender<FibEvent>,
    fib_pending: Vec<FibChange>,
    /// `fib_pending`'s length after it was last coalesced: it is coalesced again only
    /// once it doubled, so a stalled consumer costs linear time, not quadratic.
    fib_coalesced: usize,
    converge: Converge,
    converge_at: Instant,
    originated: HashSet<IpNet>,
    /// Each peer's export prefix list, read by the RIB's export hook.
    export_filters: ExportFilters,
    /// The address space protecting peers may not announce into.
    protected: Protected,
}

/// An address as a peer's: IPv4 peers reaching a dual-stack socket show up mapped.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

/// The address to register `peer` under with `listener`, or `None` if that
/// listener cannot take its connections. A dual-stack (`[::]`) socket takes IPv4
/// peers, and its TCP MD5 keys name them IPv4-mapped.
fn listener_key(listener: SocketAddr, peer: IpAddr) -> Option<IpAddr> {
    match (listener.ip(), peer) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => Some(peer),
        (IpAddr::V6(l), IpAddr::V4(p)) if l == Ipv6Addr::UNSPECIFIED => {
            Some(IpAddr::V6(p.to_ipv6_mapped()))
        }
        _ => None,
    }
}

/// End-of-RIB for `family` (RFC 4724 §2).
fn end_of_rib(family: Family) -> Update {
    match family {
        Family::Ipv4Unicast => Update::default(),
        f => Update {
            attributes: vec![PathAttribute::MpUnreach(MpUnreach {
                family: f,
                withdrawn: Vec::new(),
            })],
            ..Update::default()
        },
    }
}

/// Keep the latest change per prefix, in the order of those latest changes.
fn coalesce(changes: &mut Vec<FibChange>) {
    let mut last: HashMap<IpNet, usize> = HashMap::with_capacity(changes.len());
    for (i, c) in changes.iter().enumerate() {
        last.insert(c.prefix, i);
    }
    let mut i = 0;
    changes.retain(|c| {
        let keep = last.get(&c.prefix) == Some(&i);
        i += 1;
        keep
    });
}

impl Owner {
    pub(super) fn start(
        cfg: SpeakerConfig,
        rib: Rib,
        listeners: Vec<Listener>,
        fib: mpsc::Sender<FibEvent>,
        requests: mpsc::UnboundedReceiver<Request>,
        export_filters: ExportFilters,
    ) -> JoinHandle<()> {
        let (inputs, inputs_rx) = mpsc::unbounded_channel();
        let converge_at = Instant::now() + cfg.graceful_restart.unwrap_or(cfg.converge_deadline);
        let owner = Owner {
            cfg,
            rib,
            listeners,
            bfd: Bfd::new(),
            peers: HashMap::new(),
            next_generation: 0,
            inputs,
            out: HashMap::new(),
            fib,
            fib_pending: Vec::new(),
            fib_coalesced: 0,
            converge: Converge::Waiting,
            converge_at,
            originated: HashSet::new(),
            export_filters,
            protected: Protected::default(),
        };
        tokio::spawn(owner.run(requests, inputs_rx))
    }

    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        mut inputs: mpsc::UnboundedReceiver<Input>,
    ) {
        loop {
            let deadline = self.next_deadline();
            let fib = self.fib.clone();
            let fib_ready = !self.fib_pending.is_empty() || self.converge == Converge::Due;
            tokio::select! {
                r = requests.recv() => match r {
                    Some(Request::Shutdown { graceful, reply }) => {
                        self.shutdown(graceful).await;
                        let _ = reply.send(());
                        return;
                    }
                    None => {
                        self.shutdown(false).await;
                        return;
                    }
                    Some(r) => self.request(r).await,
                },
                Some(input) = inputs.recv() => {
                    self.input(input).await;
                    for _ in 1..BATCH {
                        if self.fib_pending.len() >= OUT_FLUSH_AT
                            || self.out.values().any(|o| o.len() >= OUT_FLUSH_AT)
                        {
                            break;
                        }
                        match inputs.try_recv() {
                            Ok(input) => self.input(input).await,
                            Err(_) => break,
                        }
                    }
                }
                permit = fib.reserve(), if fib_ready => {
                    if permit.is_err() {
                        // Nobody reads the FIB stream any more: keep routing regardless.
                        self.fib_pending.clear();
                        self.converge = Converge::Sent;
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.timers().await
                }
            }
            self.flush_out();
            self.check_converged();
            self.send_fib();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let converge = (self.converge == Converge::Waiting).then_some(self.converge_at);
        self.peers
            .values()
            .flat_map(|p| [p.quiet_until, p.stale_until, p.restart_at])
            .chain([converge])
            .flatten()
            .min()
    }

    async fn request(&mut self, r: Request) {
        match r {
            Request::SetPeers(specs, reply) => {
                let r = self.set_peers(specs).await;
                let _ = reply.send(r);
            }
            Request::SetOriginated(prefixes, reply) => {
                self.set_originated(prefixes);
                let _ = reply.send(());
            }
            Request::Peers(reply) => {
                let _ = reply.send(self.status());
            }
            Request::Rib(prefix, reply) => {
                let _ = reply.send(rib_entries(&self.rib, prefix));
            }
            Request::Refused(peer, reply) => {
                let _ = reply.send(self.refused(peer));
            }
            Request::SetProtected(protected, reply) => {
                self.set_protected(protected);
                let _ = reply.send(());
            }
            Request::Shutdown { .. } => unreachable!("handled by run"),
        }
    }

    fn apply(&mut self, changes: Changes) {
        self.fib_pending.extend(changes.fib);
        for o in changes.out {
            self.out
                .entry(o.peer)
                .or_default()
                .insert(o.prefix, o.attrs);
        }
    }

    /// Send every peer what changed in its Adj-RIB-Out, packed.
    fn flush_out(&mut self) {
        for (peer, routes) in self.out.drain() {
            let Some(p) = self.peers.get(&peer) else {
                continue;
            };
            let Some(up) = &p.up else {
                continue;
            };
            for u in pack(routes, &up.ctx) {
                p.session.queue_update(u);
            }
        }
    }

    fn send_fib(&mut self) {
        if !self.fib_pending.is_empty() {
            match self.fib.try_reserve() {
                Ok(permit) => {
                    permit.send(FibEvent::Changes(mem::take(&mut self.fib_pending)));
                    self.fib_coalesced = 0;
                }
                Err(mpsc::error::TrySendError::Full(())) => {
                    if self.fib_pending.len() > FIB_COALESCE_AT.max(2 * self.fib_coalesced) {
                        coalesce(&mut self.fib_pending);
                        self.fib_coalesced = self.fib_pending.len();
                    }
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(())) => {
                    self.fib_pending.clear();
                    return;
                }
            }
        }
        if self.converge == Converge::Due
            && let Ok(permit) = self.fib.try_reserve()
        {
            permit.send(FibEvent::Converged);
            self.converge = Converge::Sent;
        }
    }

    fn check_converged(&mut self) {
        if self.converge != Converge::Waiting {
            return;
        }
        let all_done = !self.peers.is_empty() && self.peers.values().all(|p| p.initial_done);
        if all_done || Instant::now() >= self.converge_at {
            tracing::info!(all_done, "bgp: converged");
            self.converge = Converge::Due;
        }
    }

    async fn timers(&mut self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut restart = Vec::new();
        for (addr, p) in self.peers.iter_mut() {
            if p.restart_at.is_some_and(|t| t <= now) {
                restart.push(*addr);
            }
            if p.quiet_until.is_some_and(|t| t <= now) {
                p.quiet_until = None;
                p.initial_done = true;
            }
            if p.stale_until.is_some_and(|t| t <= now) {
                p.stale_until = None;
                expired.push(*addr);
            }
        }
        for addr in restart {
            self.restart_session(addr);
        }
        for addr in expired {
            tracing::info!(peer = %addr, "bgp: graceful restart timer expired, stale routes removed");
            if let Ok(c) = self.rib.restart_timer_expired(addr) {
                self.apply(c);
            }
        }
    }

    fn capabilities(&self) -> Vec<Capability> {
        let mut caps = vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::RouteRefresh,
        ];
        if self.cfg.extended_next_hop {
            caps.push(Capability::ExtendedNextHop(vec![
                ExtendedNextHop::IPV4_UNICAST_VIA_IPV6,
            ]));
        }
        if let Some(t) = self.cfg.graceful_restart {
            caps.push(Capability::GracefulRestart(GracefulRestart {
                restart_state: self.cfg.restarted && self.converge == Converge::Waiting,
                notification: false,
                restart_time: t.as_secs().min(4095) as u16,
                // Forwarding is preserved: the kernel keeps our routes across a
                // restart (FIB sync never flushes).
                families: [AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]
                    .into_iter()
                    .map(|afi_safi| GracefulRestartFamily {
                        afi_safi,
                        forwarding_preserved: true,
                    })
                    .collect(),
            }));
        }
        caps
    }

    fn validate(specs: &[PeerSpec]) -> Result<(), SpeakerError> {
        let mut seen = HashSet::new();
        for s in specs {
            let bad = |reason| SpeakerError::InvalidPeer {
                peer: s.address,
                reason,
            };
            if !seen.insert(s.address) {
                return Err(bad("configured twice"));
            }
            if s.md5_key
                .as_ref()
                .is_some_and(|k| k.len() > MD5_MAX_KEY_LEN)
            {
                return Err(bad("TCP MD5 key longer than 80 bytes"));
            }
            if s.bfd.is_some_and(|b| b.validate().is_err()) {
                return Err(bad("invalid BFD parameters"));
            }
            if s.address.is_unspecified() {
                return Err(bad("unspecified address"));
            }
            if matches!(s.hold_time, Some(1 | 2)) {
                return Err(bad("hold time must be 0 or at least 3 s"));
            }
            if s.connect_retry.is_some_and(|d| d.is_zero()) {
                return Err(bad("connect retry time of 0"));
            }
        }
        Ok(())
    }

    async fn set_peers(&mut self, specs: Vec<PeerSpec>) -> Result<(), SpeakerError> {
        Self::validate(&specs)?;
        let wanted: HashMap<IpAddr, PeerSpec> = specs.into_iter().map(|s| (s.address, s)).collect();
        // A new description is not worth a session reset; anything else is.
        let same_session = |a: &PeerSpec, b: &PeerSpec| {
            PeerSpec {
                description: String::new(),
                ..a.clone()
            } == PeerSpec {
                description: String::new(),
                ..b.clone()
            }
        };
        let mut stale = Vec::new();
        for (addr, p) in self.peers.iter_mut() {
            match wanted.get(addr) {
                Some(w) if same_session(w, &p.spec) => p.spec.description = w.description.clone(),
                Some(_) => stale.push((*addr, CEASE_CONFIG_CHANGE)),
                None => stale.push((*addr, CEASE_DECONFIGURED)),
            }
        }
        for (addr, subcode) in stale {
            self.remove_peer(addr, subcode).await;
        }
        let mut result = Ok(());
        for (addr, spec) in wanted {
            if !self.peers.contains_key(&addr)
                && let Err(e) = self.add_peer(spec)
            {
                // The others still start: one bad peer does not block the fabric.
                tracing::warn!(peer = %addr, error = %e, "bgp: peer not started");
                result = Err(e);
            }
        }
        result
    }

    fn add_peer(&mut self, spec: PeerSpec) -> Result<(), SpeakerError> {
        let addr = spec.address;
        let fsm = fsm::Config {
            local_asn: self.cfg.asn,
            peer_asn: spec.asn,
            bgp_id: self.cfg.router_id,
            hold_time: spec.hold_time.unwrap_or(self.cfg.hold_time),
            connect_retry: spec.connect_retry.unwrap_or(self.cfg.connect_retry),
            idle_hold: IDLE_HOLD,
            passive: spec.passive,
            capabilities: self
                .capabilities()
                .into_iter()
                .filter(|c| spec.graceful_restart || !matches!(c, Capability::GracefulRestart(_)))
                .collect(),
        };
        let mut sc = SessionConfig::new(fsm, addr);
        sc.port = spec.port;
        sc.local = spec.local;
        sc.md5_key = spec.md5_key.clone();
        let mut session = SessionHandle::spawn(sc);
        for l in &self.listeners {
            let Some(key) = listener_key(l.local_addr(), addr) else {
                continue;
            };
            if let Err(source) = l.register(key, spec.md5_key.as_deref(), session.incoming()) {
                self.unregister(addr);
                return Err(SpeakerError::Register { peer: addr, source });
            }
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        let (_, closed) = mpsc::unbounded_channel();
        let mut events = mem::replace(&mut session.events, closed);
        let inputs = self.inputs.clone();
        let forwarder = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let input = Input::Session {
                    peer: addr,
                    generation,
                    event,
                };
                if inputs.send(input).is_err() {
                    return;
                }
            }
        });
        tracing::info!(peer = %addr, asn = spec.asn, "bgp: peer added");
        self.export_filters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(addr, spec.export.clone());
        self.peers.insert(
            addr,
            Peer {
                spec,
                generation,
                session,
                forwarder,
                up: None,
                last_error: None,
                our_reset: None,
                bfd: None,
                bfd_state: None,
                initial_done: false,
                eor_wanted: Vec::new(),
                quiet_until: None,
                stale_until: None,
                restart_at: None,
                refused: RefusedRoutes::default(),
            },
        );
        Ok(())
    }

    /// A new session for a peer whose session was stopped, keeping what the status
    /// and convergence know of it.
    fn restart_session(&mut self, addr: IpAddr) {
        let Some(old) = self.peers.remove(&addr) else {
            return;
        };
        old.forwarder.abort();
        self.unregister(addr);
        tracing::info!(peer = %addr, "bgp: session restarted after its prefix limit hold-down");
        match self.add_peer(old.spec.clone()) {
            Ok(()) => {
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.last_error = old.last_error;
                    p.initial_done = old.initial_done;
                }
            }
            Err(e) => {
                tracing::warn!(peer = %addr, error = %e, "bgp: session not restarted");
                self.peers.insert(
                    addr,
                    Peer {
                        restart_at: Some(Instant::now() + MAX_PREFIX_RESTART),
                        ..old
                    },
                );
            }
        }
    }

    fn unregister(&self, addr: IpAddr) {
        for l in &self.listeners {
            if let Some(key) = listener_key(l.local_addr(), addr)
                && let Err(e) = l.unregister(key)
            {
                tracing::warn!(peer = %addr, error = %e, "bgp: unregister from listener");
            }
        }
    }

    /// Stop the session (Cease with `subcode` to an established peer), forget its
    /// routes.
    async fn remove_peer(&mut self, addr: IpAddr, subcode: u8) {
        let Some(mut p) = self.peers.remove(&addr) else {
            return;
        };
        tracing::info!(peer = %addr, subcode, "bgp: peer removed");
        // The reset sends the Cease and leaves the session Idle, where the stop that
        // follows sends nothing more.
        p.session
            .reset(Some(Notification::new(codes::CEASE, subcode)));
        p.session.stop();
        p.forwarder.abort();
        self.unregister(addr);
        self.export_filters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&addr);
        self.stop_bfd(addr, &mut p).await;
        self.out.remove(&addr);
        if self.rib.has_peer(addr)
            && let Ok(c) = self.rib.peer_down(addr)
        {
            self.apply(c);
        }
    }

    async fn stop_bfd(&mut self, addr: IpAddr, p: &mut Peer) {
        if let Some(b) = p.bfd.take() {
            b.watcher.abort();
            // AdminDown tells the peer not to take its BGP session down for it.
            if let Err(e) = self.bfd.remove_peer(b.local, addr).await {
                tracing::debug!(peer = %addr, error = %e, "bgp: BFD remove");
            }
        }
    }

    fn set_originated(&mut self, prefixes: Vec<IpNet>) {
        let wanted: HashSet<IpNet> = prefixes.into_iter().map(|p| p.trunc()).collect();
        let gone: Vec<IpNet> = self.originated.difference(&wanted).copied().collect();
        for p in gone {
            let c = self.rib.withdraw_local(p);
            self.apply(c);
        }
        let new: Vec<IpNet> = wanted.difference(&self.originated).copied().collect();
        // One set of attributes per family, so our prefixes share UPDATEs. The next
        // hop is a placeholder: export puts our session address there.
        let v4 = Arc::new(Attrs::new(NextHop::V4(std::net::Ipv4Addr::UNSPECIFIED)));
        let v6 = Arc::new(Attrs::new(NextHop::V6 {
            global: Ipv6Addr::UNSPECIFIED,
            link_local: None,
        }));
        let (new_v4, new_v6): (Vec<IpNet>, Vec<IpNet>) =
            new.into_iter().partition(|p| matches!(p, IpNet::V4(_)));
        let c = self.rib.originate_all(&new_v4, &v4);
        self.apply(c);
        let c = self.rib.originate_all(&new_v6, &v6);
        self.apply(c);
        self.originated = wanted;
    }

    async fn input(&mut self, input: Input) {
        match input {
            Input::Session {
                peer,
                generation,
                event,
            } => {
                if self
                    .peers
                    .get(&peer)
                    .is_some_and(|p| p.generation == generation)
                {
                    self.session_event(peer, event).await;
                }
            }
            Input::Bfd {
                peer,
                generation,
                state,
            } => {
                if self
                    .peers
                    .get(&peer)
                    .is_some_and(|p| p.generation == generation)
                {
                    self.bfd_event(peer, state);
                }
            }
        }
    }

    async fn session_event(&mut self, addr: IpAddr, event: SessionEvent) {
        match event {
            SessionEvent::Up(n) => self.peer_up(addr, *n),
            SessionEvent::Down(reason) => self.peer_down(addr, reason).await,
            SessionEvent::Update(u) => {
                if let Some(family) = u.end_of_rib() {
                    self.end_of_rib(addr, family);
                } else {
                    self.routes(addr, &RouteUpdate::from_update(&u));
                }
            }
            SessionEvent::Withdraw(prefixes) => {
                let update = RouteUpdate {
                    announced: Vec::new(),
                    withdrawn: prefixes,
                };
                self.routes(addr, &update);
            }
            SessionEvent::RouteRefresh(afi_safi) => {
                // RFC 2918 §4: the whole Adj-RIB-Out of that family again.
                if let Some(family) = Family::from_afi_safi(afi_safi) {
                    for (prefix, attrs) in self.rib.adj_rib_out_routes(addr, family) {
                        self.out
                            .entry(addr)
                            .or_default()
                            .insert(prefix, Some(attrs));
                    }
                }
            }
        }
    }

    fn peer_up(&mut self, addr: IpAddr, n: Negotiated) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        let local = p.session.local_addr().map(|a| canonical(a.ip()));
        let cfg = PeerConfig {
            address: addr,
            asn: p.spec.asn,
            router_id: n.peer.bgp_id,
            rr_client: p.spec.rr_client,
            max_prefixes: p.spec.max_prefixes,
            families: n.codec.families.clone(),
            // Over IPv6 with RFC 8950, IPv4 goes via the session's own address, as FRR
            // and BIRD do: the peer reaches it for sure, an IPv4 address of ours
            // perhaps not (a node with an IPv6-only underlay).
            local_v4: match local {
                Some(IpAddr::V4(a)) => Some(a),
                Some(IpAddr::V6(_)) if n.codec.ipv4_via_ipv6 => None,
                _ => self.cfg.local_v4,
            },
            local_v6: match local {
                Some(IpAddr::V6(a)) => Some(a),
                _ => self.cfg.local_v6,
            },
            ipv4_via_ipv6: n.codec.ipv4_via_ipv6,
        };
        let graceful_restart = n.peer.graceful_restart().cloned();
        tracing::info!(peer = %addr, ?local, families = ?cfg.families, gr = graceful_restart.is_some(), ipv4_via_ipv6 = cfg.ipv4_via_ipv6, "bgp: peer up");
        p.up = Some(Established {
            ctx: n.codec.clone(),
            graceful_restart: graceful_restart.clone(),
            since: (Instant::now(), SystemTime::now()),
        });
        p.our_reset = None;
        if !p.initial_done {
            if graceful_restart.is_some() {
                p.eor_wanted = n.codec.families.clone();
            } else {
                p.quiet_until = Some(Instant::now() + INITIAL_QUIET);
            }
        }
        let bfd = p.spec.bfd;
        let changes = match self.rib.peer_up(cfg.clone()) {
            Err(RibError::AlreadyUp(_)) => {
                // A Down we did not see: start from nothing.
                let down = self.rib.peer_down(addr).unwrap_or_default();
                self.apply(down);
                self.rib.peer_up(cfg).unwrap_or_default()
            }
            r => r.unwrap_or_default(),
        };
        self.apply(changes);
        // Our table, then End-of-RIB per family (RFC 4724 §4), on the session's queue
        // in that order.
        self.flush_out();
        if let Some(p) = self.peers.get(&addr)
            && graceful_restart.is_some()
        {
            for f in &n.codec.families {
                p.session.queue_update(end_of_rib(*f));
            }
        }
        if let (Some(params), Some(local)) = (bfd, local) {
            self.start_bfd(addr, local, params);
        }
    }

    fn start_bfd(&mut self, addr: IpAddr, local: IpAddr, params: bfd::SessionParams) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        // A BFD that cannot start leaves BGP alone (RFC 5882 §4.1 does not gate the
        // session on BFD).
        let mut state = match self.bfd.add_peer(local, addr, params) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(peer = %addr, error = %e, "bgp: BFD not started");
                return;
            }
        };
        let inputs = self.inputs.clone();
        let generation = p.generation;
        let watcher = tokio::spawn(async move {
            while state.changed().await.is_ok() {
                let s = *state.borrow_and_update();
                let input = Input::Bfd {
                    peer: addr,
                    generation,
                    state: s,
                };
                if inputs.send(input).is_err() {
                    return;
                }
            }
        });
        p.bfd_state = Some(bfd::State::Down);
        p.bfd = Some(BfdRun {
            local,
            seen_up: false,
            watcher,
        });
    }

    /// RFC 5882 §4.3: BFD Down after Up takes the BGP session down at once. Its routes
    /// are withdrawn, not kept as graceful-restart stale: a link BFD saw die is not a
    /// restarting control plane. AdminDown from the peer (§3.2) is not a failure.
    fn bfd_event(&mut self, addr: IpAddr, s: BfdState) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        p.bfd_state = Some(s.state);
        let Some(run) = p.bfd.as_mut() else {
            return;
        };
        match s.state {
            bfd::State::Up => run.seen_up = true,
            bfd::State::Down if run.seen_up && s.diagnostic != Diagnostic::NeighborSignaledDown => {
                run.seen_up = false;
                tracing::warn!(peer = %addr, diagnostic = ?s.diagnostic, "bgp: BFD down, session reset");
                p.our_reset = Some(format!("BFD down ({:?})", s.diagnostic));
                p.session.reset(None);
            }
            _ => {}
        }
    }

    async fn peer_down(&mut self, addr: IpAddr, reason: DownReason) {
        let Some(mut p) = self.peers.remove(&addr) else {
            return;
        };
        let up = p.up.take();
        let ours = p.our_reset.take();
        p.last_error = Some(ours.clone().unwrap_or_else(|| down_reason(&reason)));
        self.stop_bfd(addr, &mut p).await;
        self.out.remove(&addr);
        p.refused.clear();
        // RFC 4724 §4.2: only a lost connection is a restart, not a NOTIFICATION, not
        // a reset of ours; and only if both sides negotiated it.
        let restart_time = up
            .and_then(|u| u.graceful_restart)
            .filter(|g| !g.families.is_empty() && g.restart_time > 0)
            .map(|g| Duration::from_secs(g.restart_time.into()));
        let restarting = self.cfg.graceful_restart.is_some()
            && p.spec.graceful_restart
            && ours.is_none()
            && reason == DownReason::ConnectionLost
            && restart_time.is_some();
        tracing::info!(peer = %addr, reason = p.last_error.as_deref().unwrap_or(""), restarting, "bgp: peer down");
        if let (true, Some(t)) = (restarting, restart_time) {
            if self.rib.peer_restarting(addr).is_ok() {
                p.stale_until = Some(Instant::now() + t);
            }
        } else {
            p.stale_until = None;
            if self.rib.has_peer(addr)
                && let Ok(c) = self.rib.peer_down(addr)
            {
                self.apply(c);
            }
        }
        self.peers.insert(addr, p);
    }

    fn end_of_rib(&mut self, addr: IpAddr, family: Family) {
        if let Ok(c) = self.rib.end_of_rib(addr, family) {
            self.apply(c);
        }
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        tracing::debug!(peer = %addr, ?family, "bgp: End-of-RIB");
        let before = p.eor_wanted.len();
        p.eor_wanted.retain(|f| *f != family);
        if before > 0 && p.eor_wanted.is_empty() {
            p.initial_done = true;
        }
    }

    fn routes(&mut self, addr: IpAddr, update: &RouteUpdate) {
        // The import policy first: refused routes never reach the RIB, and more of
        // them than the prefix limit ends the session as accepted ones would.
        let mut filtered = None;
        let mut refused_past = None;
        if let Some(p) = self.peers.get_mut(&addr)
            && p.up.is_some()
        {
            let ebgp = p.spec.asn != self.cfg.asn;
            filtered = p.refused.filter(
                &p.spec.import,
                &self.protected,
                update,
                ebgp.then_some(self.cfg.asn),
            );
            if let Some(limit) = p.spec.max_prefixes
                && p.refused.len() > limit
            {
                let family = p
                    .refused
                    .iter()
                    .next()
                    .map_or(Family::Ipv4Unicast, |(n, _)| {
                        if n.addr().is_ipv4() {
                            Family::Ipv4Unicast
                        } else {
                            Family::Ipv6Unicast
                        }
                    });
                refused_past = Some(MaxPrefixesExceeded {
                    peer: addr,
                    limit,
                    family,
                });
            }
        }
        match refused_past {
            Some(e) => self.max_prefixes_exceeded(addr, &e),
            None => self.rib_update(addr, filtered.as_ref().unwrap_or(update)),
        }
        if let Some(p) = self.peers.get_mut(&addr)
            && p.quiet_until.is_some()
        {
            p.quiet_until = Some(Instant::now() + INITIAL_QUIET);
        }
    }

    /// One UPDATE (after the import policy) into the RIB.
    fn rib_update(&mut self, addr: IpAddr, update: &RouteUpdate) {
        match self.rib.update(addr, update) {
            Ok(c) => self.apply(c),
            Err(RibError::MaxPrefixes(e)) => self.max_prefixes_exceeded(addr, &e),
            Err(e) => tracing::debug!(peer = %addr, error = %e, "bgp: UPDATE ignored"),
        }
    }

    /// Cease/1 to the peer; its session stays down for [`MAX_PREFIX_RESTART`].
    fn max_prefixes_exceeded(&mut self, addr: IpAddr, e: &MaxPrefixesExceeded) {
        if let Some(p) = self.peers.get_mut(&addr)
            && p.our_reset.is_none()
        {
            tracing::warn!(peer = %addr, limit = e.limit, refused = p.refused.len(), "bgp: maximum prefixes exceeded");
            p.our_reset = Some(format!(
                "maximum prefixes exceeded (limit {}), sent NOTIFICATION 6/1",
                e.limit
            ));
            p.session.reset(Some(e.notification()));
            // Stopped after the reset's Down, so it stays down for a while.
            p.session.stop();
            p.restart_at = Some(Instant::now() + MAX_PREFIX_RESTART);
            // Its table will not come: convergence does not wait for it.
            p.initial_done = true;
        }
    }

    /// A new protected address space, without restarting any session: each
    /// protecting peer's refused routes that pass now go into the RIB, and its routes
    /// of prefixes no longer expected that fail now leave it (and are listed).
    fn set_protected(&mut self, protected: Protected) {
        if protected == self.protected {
            return;
        }
        let old = mem::replace(&mut self.protected, protected);
        let gone: Vec<IpNet> = old
            .expected
            .difference(&self.protected.expected)
            .copied()
            .collect();
        let addrs: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| p.up.is_some() && p.spec.import.protect)
            .map(|(a, _)| *a)
            .collect();
        for addr in addrs {
            let Some(p) = self.peers.get_mut(&addr) else {
                continue;
            };
            let mut update = p.refused.release(&p.spec.import, &self.protected);
            for prefix in &gone {
                let Some((attrs, _)) = self.rib.adj_rib_in(addr, prefix) else {
                    continue;
                };
                if let Err(why) = p.spec.import.check(&self.protected, prefix) {
                    p.refused.refuse(*prefix, why, Arc::clone(attrs));
                    update.withdrawn.push(*prefix);
                }
            }
            if !update.announced.is_empty() || !update.withdrawn.is_empty() {
                self.rib_update(addr, &update);
            }
        }
    }

    fn status(&self) -> Vec<PeerStatus> {
        let mut out: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|(addr, p)| {
                let since = p.up.as_ref().map(|u| u.since);
                PeerStatus {
                    address: *addr,
                    asn: p.spec.asn,
                    description: p.spec.description.clone(),
                    rr_client: p.spec.rr_client,
                    state: p.session.state(),
                    established_since: since.map(|s| s.1),
                    uptime: since.map(|s| s.0.elapsed()),
                    received: self.rib.adj_rib_in_len(*addr),
                    accepted: self.rib.best_len(*addr),
                    sent: self.rib.adj_rib_out_len(*addr),
                    refused: p.refused.len(),
                    bfd: p.bfd_state,
                    last_error: p.last_error.clone(),
                }
            })
            .collect();
        out.sort_by_key(|s| s.address);
        out
    }

    /// What the import policies refused, of one peer or all, by peer and prefix.
    fn refused(&self, only: Option<IpAddr>) -> Vec<RefusedRoute> {
        let mut out: Vec<RefusedRoute> = self
            .peers
            .iter()
            .filter(|(addr, _)| only.is_none_or(|o| o == **addr))
            .flat_map(|(addr, p)| {
                p.refused.iter().map(|(prefix, why)| RefusedRoute {
                    peer: *addr,
                    prefix: *prefix,
                    reason: *why,
                })
            })
            .collect();
        out.sort_by_key(|r| (r.peer, r.prefix));
        out
    }

    async fn shutdown(&mut self, graceful: bool) {
        let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
        let mut closing = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if let Some(p) = self.peers.remove(&addr) {
                if graceful {
                    // No NOTIFICATION, so a peer that negotiated graceful restart keeps
                    // our routes (RFC 4724 §4.2); the session ends once the peer has
                    // closed its side, i.e. has taken the session down as a restart.
                    p.session.stop_for_restart();
                } else {
                    p.session.stop();
                }
                self.unregister(addr);
                closing.push((addr, p));
            }
        }
        // Sessions first, BFD after: a BFD Down (AdminDown included: FRR 8.4 takes it
        // as a failure) reaching a peer whose session is still Established makes it
        // reset that session with a Cease, which cancels graceful restart and drops
        // our routes (RFC 5882 §4.3: BFD must not undo a graceful restart). The wait
        // also lets a Cease go out before a runtime shut down right after swallows it.
        let ended: Vec<_> = closing.iter().map(|(_, p)| p.session.ended()).collect();
        let _ = tokio::time::timeout(SHUTDOWN_WAIT, async {
            for e in ended {
                e.await;
            }
        })
        .await;
        // AdminDown now reaches peers whose sessions are closed; it puts their BFD
        // session Down, so the next speaker's BFD comes Up from scratch instead of
        // being taken for this one failing.
        for (addr, mut p) in closing {
            self.stop_bfd(addr, &mut p).await;
        }
        tracing::info!("bgp: speaker stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(prefix: &str, nh: Option<&str>) -> FibChange {
        FibChange {
            prefix: prefix.parse().unwrap(),
            next_hops: nh
                .map(|a| vec![NextHop::V4(a.parse().unwrap())])
                .unwrap_or_default(),
        }
    }

    #[test]
    fn coalescing_keeps_the_latest_change_per_prefix() {
        let mut v = vec![
            change("10.0.0.0/24", Some("10.1.0.1")),
            change("10.0.1.0/24", Some("10.1.0.1")),
            change("10.0.0.0/24", None),
            change("10.0.2.0/24", Some("10.1.0.2")),
            change("10.0.1.0/24", Some("10.1.0.3")),
        ];
        coalesce(&mut v);
        assert_eq!(
            v,
            vec![
                change("10.0.0.0/24", None),
                change("10.0.2.0/24", Some("10.1.0.2")),
                change("10.0.1.0/24", Some("10.1.0.3")),
            ]
        );
    }

    #[test]
    fn dual_stack_listeners_take_ipv4_peers_mapped() {
        let any6: SocketAddr = "[::]:179".parse().unwrap();
        let any4: SocketAddr = "0.0.0.0:179".parse().unwrap();
        let one6: SocketAddr = "[fd00::1]:179".parse().unwrap();
        let v4: IpAddr = "10.0.0.2".parse().unwrap();
        let v6: IpAddr = "fd00::2".parse().unwrap();
        assert_eq!(
            listener_key(any6, v4),
            Some("::ffff:10.0.0.2".parse().unwrap())
        );
        assert_eq!(listener_key(any4, v4), Some(v4));
        assert_eq!(listener_key(any4, v6), None);
        assert_eq!(listener_key(one6, v4), None);
        assert_eq!(listener_key(one6, v6), Some(v6));
        assert_eq!(canonical("::ffff:10.0.0.2".parse().unwrap()), v4);
    }

    #[test]
    fn end_of_rib_markers_read_back_as_such() {
        for f in [Family::Ipv4Unicast, Family::Ipv6Unicast] {
            assert_eq!(end_of_rib(f).end_of_rib(), Some(f));
        }
    }
}
