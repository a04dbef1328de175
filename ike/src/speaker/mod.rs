//! The IKEv2 speaker of one node, sans-IO: it owns every IKE SA of the node, takes
//! datagrams and clock ticks from the caller, and leaves [`Event`]s (datagrams to send,
//! Child SAs to install or remove, SAs up and down) in a queue the caller drains.
//! Time is only the `now` the caller passes; [`Speaker::next_deadline`] says when to
//! call [`Speaker::poll`] next.
//!
//! The exchanges are in their own modules: [`init`] (IKE_SA_INIT, cookies, NAT
//! detection, INVALID_KE_PAYLOAD), [`auth_exchange`] (IKE_AUTH and the first Child SA),
//! [`create_child`] (CREATE_CHILD_SA: rekeys of Child and IKE SAs, simultaneous
//! rekeys), [`reauth`] (reauthentication: a second IKE SA that replaces the first),
//! [`informational`] (Delete, dead-peer detection), [`timers`]
//! (retransmission, lifetimes, DPD) and [`fragments`] (IKE fragmentation, RFC 7383).

mod auth_exchange;
mod create_child;
mod explain;
pub(crate) mod fragments;
mod informational;
mod init;
pub mod proposal;
mod reauth;
mod sa;
mod timers;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

use crate::auth::{LocalAuth, PeerAuth};
use crate::codec::{
    DecodeError, ExchangeType, Identity, Message, Notify, NotifyType, Payload, TrafficSelector,
};
use crate::crypto::Secret;
use crate::crypto::prf::Prf;
use crate::crypto::suite::{Cipher, Group};

pub use explain::selectors;
use fragments::Datagrams;
pub use proposal::{EspSuite, IkeSuite};
pub use sa::IkeState;
use sa::{IkeSa, InFlight, Intent, Pending};

/// A soft lifetime (rekey, minus up to `jitter` so that two ends do not rekey at
/// once) and a hard one (delete, if the rekey never succeeded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub soft: Duration,
    pub hard: Duration,
    pub jitter: Duration,
}

/// The speaker's configuration, the same for every peer.
#[derive(Debug, Clone)]
pub struct Config {
    pub local_id: Identity,
    /// The identity the peer must prove (its IDi, or its IDr when we initiate), for
    /// a speaker that talks to one peer (an external gateway). When set, an
    /// initiator also sends it as IDr, so a responder with several identities picks
    /// this one (RFC 7296 §1.2).
    pub remote_id: Option<Identity>,
    /// In order of preference.
    pub ike_ciphers: Vec<Cipher>,
    pub prfs: Vec<Prf>,
    /// The first is the one an initiator sends its KE for.
    pub groups: Vec<Group>,
    pub esp_ciphers: Vec<Cipher>,
    /// ESN options offered and accepted, in order of preference.
    pub esn: Vec<bool>,
    /// What Child SAs may cover on our side and the peer's; the initiator offers
    /// exactly these, the responder narrows to them.
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    /// A Child SA rekey carries a KE (PFS) in the IKE SA's group.
    pub pfs: bool,
    /// The first retransmission timeout; it doubles with every retransmission.
    pub retransmit_timeout: Duration,
    /// Retransmissions before the SA is given up.
    pub retransmit_tries: u32,
    /// An empty INFORMATIONAL after this long without a message from the peer.
    pub dpd_interval: Duration,
    pub ike_lifetime: Lifetime,
    pub child_lifetime: Lifetime,
    /// Reauthenticate every IKE SA this long after it was authenticated (minus up
    /// to the IKE lifetime's jitter): a new IKE SA with new Child SAs, traffic moved
    /// to them, then the old one deleted (RFC 7296 §2.8.3, make-before-break).
    /// `None`: only when asked ([`Speaker::reauthenticate`]) or on the peer's schedule.
    pub reauth_after: Option<Duration>,
    /// Half-open SAs at which the responder starts demanding cookies.
    pub cookie_threshold: usize,
    /// A half-open responder SA is dropped after this long.
    pub half_open_timeout: Duration,
    /// Where IKE moves once a NAT is detected (RFC 7296 §2.23).
    pub nat_t_port: u16,
    /// Make the peer encapsulate ESP in UDP even without a NAT (a fake
    /// NAT_DETECTION_SOURCE_IP, as strongSwan's `encap = yes`), and act as the side
    /// behind one: for a datapath that only speaks ESP in UDP 4500.
    pub force_udp_encap: bool,
    /// NAT keepalives (RFC 3948 §4) from the side behind the NAT.
    pub nat_keepalive: Duration,
    /// The largest IP datagram an IKE message after IKE_SA_INIT may take before it is
    /// sent as Encrypted Fragments (RFC 7383), to a peer that announced it reassembles;
    /// values below 576 (the IPv4 minimum, §2.5.1) count as 576, and 0 turns
    /// fragmentation off (not announced, neither sent nor accepted).
    pub fragment_size: usize,
}

impl Config {
    /// strait's defaults for node `local_id`: AES-GCM-16/256 then 128, SHA-384 then
    /// SHA-256, Curve25519 then ECP-256, ESN preferred, any selectors, PFS on.
    pub fn new(local_id: Identity) -> Self {
        let any4 = TrafficSelector::prefix("0.0.0.0/0".parse().expect("prefix"));
        let any6 = TrafficSelector::prefix("::/0".parse().expect("prefix"));
        Config {
            local_id,
            remote_id: None,
            ike_ciphers: vec![Cipher::AesGcm16_256, Cipher::AesGcm16_128],
            prfs: vec![Prf::HmacSha384, Prf::HmacSha256],
            groups: vec![Group::Curve25519, Group::Ecp256],
            esp_ciphers: vec![Cipher::AesGcm16_256, Cipher::AesGcm16_128],
            esn: vec![true, false],
            local_ts: vec![any4.clone(), any6.clone()],
            remote_ts: vec![any4, any6],
            pfs: true,
            retransmit_timeout: Duration::from_millis(500),
            retransmit_tries: 5,
            dpd_interval: Duration::from_secs(30),
            ike_lifetime: Lifetime {
                soft: Duration::from_secs(3 * 3600),
                hard: Duration::from_secs(4 * 3600),
                jitter: Duration::from_secs(300),
            },
            child_lifetime: Lifetime {
                soft: Duration::from_secs(3600),
                hard: Duration::from_secs(4800),
                jitter: Duration::from_secs(120),
            },
            reauth_after: None,
            cookie_threshold: 64,
            half_open_timeout: Duration::from_secs(30),
            nat_t_port: 4500,
            force_udp_encap: false,
            nat_keepalive: Duration::from_secs(20),
            fragment_size: 1280,
        }
    }
}

/// What NAT detection (RFC 7296 §2.23) found on the path of an IKE SA.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatStatus {
    /// Our address is translated: we send keepalives.
    pub local_behind_nat: bool,
    pub remote_behind_nat: bool,
}

impl NatStatus {
    /// ESP must then travel in UDP 4500 (RFC 3948).
    pub fn any(&self) -> bool {
        self.local_behind_nat || self.remote_behind_nat
    }
}

/// A Child SA to install: everything the ESP datapath needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSa {
    pub peer: Identity,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub spi_in: u32,
    pub spi_out: u32,
    pub cipher: Cipher,
    /// AES-GCM key || 4-byte salt for packets we receive and send.
    pub key_in: Secret,
    pub key_out: Secret,
    pub esn: bool,
    pub ts_local: Vec<TrafficSelector>,
    pub ts_remote: Vec<TrafficSelector>,
    pub soft_lifetime: Duration,
    pub hard_lifetime: Duration,
    /// ESP goes in UDP (RFC 3948) because a NAT is on the path.
    pub udp_encap: bool,
}

/// What the caller must do or may want to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Send `bytes` from `local` to `remote` (on port 4500 the caller prepends the
    /// non-ESP marker, except to a NAT keepalive, the single octet 0xFF, which goes
    /// bare: RFC 3948 §2.3).
    Transmit {
        local: SocketAddr,
        remote: SocketAddr,
        bytes: Vec<u8>,
    },
    ChildSaUp(ChildSa),
    /// `new` replaces the SA with SPIs `old_spi_in`/`old_spi_out`: install `new`
    /// now; the old one stays until its own [`Event::ChildSaDeleted`].
    ///
    /// `initiator` says whether we asked for the rekey. The responder's answer may
    /// still be on its way when the responder has the new SA: a responder that sent
    /// on it at once could reach the initiator before it can decrypt, so it should
    /// keep sending on the old SA until the new one carries traffic from the
    /// initiator, or the old one is deleted (RFC 7296 §2.8).
    ChildSaRekeyed {
        old_spi_in: u32,
        old_spi_out: u32,
        new: ChildSa,
        initiator: bool,
    },
    /// We are about to ask the peer to delete this Child SA: stop sending on it now
    /// (the peer drops its inbound half when it reads our request), but keep
    /// receiving on it until [`Event::ChildSaDeleted`].
    ChildSaDeleting {
        peer: Identity,
        spi_in: u32,
        spi_out: u32,
    },
    ChildSaDeleted {
        peer: Identity,
        spi_in: u32,
        spi_out: u32,
    },
    /// IKE_AUTH succeeded but the peer (or we) refused the Child SA.
    ChildSaFailed {
        peer: Identity,
        reason: String,
    },
    IkeSaUp {
        peer: Identity,
        local: SocketAddr,
        remote: SocketAddr,
        nat: NatStatus,
    },
    /// A rekey replaced the IKE SA with the peer; nothing for the datapath to do.
    IkeSaRekeyed {
        peer: Identity,
    },
    IkeSaDown {
        peer: Identity,
        reason: String,
    },
    AuthFailed {
        peer: Identity,
        reason: String,
    },
    /// An IKE SA with `remote` failed before it was up, for any reason (proposals,
    /// authentication, identities, no answer), in plain words; `peer` is the
    /// identity we expected or the peer claimed, if known yet. Authentication
    /// failures also come as [`Event::AuthFailed`].
    Failed {
        remote: SocketAddr,
        peer: Option<Identity>,
        reason: String,
    },
}

/// One Child SA in [`SaStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildStatus {
    pub spi_in: u32,
    pub spi_out: u32,
    pub cipher: Cipher,
    pub esn: bool,
    pub established: Instant,
    pub replaced: bool,
    /// The negotiated traffic selectors: ours, and the peer's.
    pub ts_local: Vec<TrafficSelector>,
    pub ts_remote: Vec<TrafficSelector>,
}

/// One IKE SA, for `netctl ipsec status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaStatus {
    pub peer: Option<Identity>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: IkeState,
    pub initiator: bool,
    pub spi_i: u64,
    pub spi_r: u64,
    pub suite: Option<IkeSuite>,
    pub established: Option<Instant>,
    pub ike_rekeys: u32,
    pub child_rekeys: u32,
    pub last_dpd: Option<Instant>,
    pub nat: NatStatus,
    pub children: Vec<ChildStatus>,
}

/// The IKE speaker of one node.
pub struct Speaker {
    config: Config,
    local_auth: Box<dyn LocalAuth>,
    peer_auth: Box<dyn PeerAuth>,
    rng: SystemRandom,
    /// By our SPI.
    sas: HashMap<u64, IkeSa>,
    /// Responder SAs by the initiator's address and SPI, to answer a retransmitted
    /// IKE_SA_INIT from the cache.
    half_open: HashMap<(SocketAddr, u64), u64>,
    cookie_secret: Secret,
    events: VecDeque<Event>,
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker")
            .field("local_id", &self.config.local_id)
            .field("sas", &self.sas.len())
            .finish_non_exhaustive()
    }
}

impl Speaker {
    pub fn new(
        config: Config,
        local_auth: Box<dyn LocalAuth>,
        peer_auth: Box<dyn PeerAuth>,
    ) -> Self {
        let rng = SystemRandom::new();
        let mut secret = vec![0; 32];
        rng.fill(&mut secret)
            .expect("the system random generator works");
        Speaker {
            config,
            local_auth,
            peer_auth,
            rng,
            sas: HashMap::new(),
            half_open: HashMap::new(),
            cookie_secret: Secret::new(secret),
            events: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The next thing the caller must act on, if any.
    pub fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Start an IKE SA with `peer` at `remote`, sending from `local`.
    pub fn connect(&mut self, peer: Identity, local: SocketAddr, remote: SocketAddr, now: Instant) {
        self.start_initiator(peer, local, remote, now);
    }

    /// Rekey the Child SAs with `peer` now.
    pub fn rekey_child(&mut self, peer: &Identity, now: Instant) {
        for spi in self.established_with(peer) {
            let mut sa = self.sas.remove(&spi).expect("listed");
            let children: Vec<u32> = sa
                .children
                .iter()
                .filter(|c| !c.replaced && !c.rekeying)
                .map(|c| c.spi_in)
                .collect();
            for spi_in in children {
                self.request(&mut sa, Intent::RekeyChild { spi_in }, now);
            }
            self.put_back(sa);
        }
    }

    /// Rekey the IKE SA with `peer` now.
    pub fn rekey_ike(&mut self, peer: &Identity, now: Instant) {
        for spi in self.established_with(peer) {
            let mut sa = self.sas.remove(&spi).expect("listed");
            self.request(&mut sa, Intent::RekeyIke, now);
            self.put_back(sa);
        }
    }

    /// Reauthenticate with `peer` now (RFC 7296 §2.8.3): a new IKE SA with new Child
    /// SAs, which replace the old ones ([`Event::ChildSaRekeyed`]), then the old IKE
    /// SA deleted. The old one carries traffic until then.
    pub fn reauthenticate(&mut self, peer: &Identity, now: Instant) {
        for spi in self.established_with(peer) {
            reauth::start(self, spi, now);
        }
    }

    /// The ESP datapath says the Child SA with inbound SPI `spi_in` is near its byte
    /// or sequence-number limit: rekey it.
    pub fn child_limit_reached(&mut self, spi_in: u32, now: Instant) {
        let found = self
            .sas
            .iter()
            .find(|(_, sa)| {
                sa.children
                    .iter()
                    .any(|c| c.spi_in == spi_in && !c.rekeying && !c.replaced)
            })
            .map(|(k, _)| *k);
        if let Some(spi) = found {
            let mut sa = self.sas.remove(&spi).expect("found");
            self.request(&mut sa, Intent::RekeyChild { spi_in }, now);
            self.put_back(sa);
        }
    }

    /// Delete every IKE SA (and so every Child SA) with `peer`.
    pub fn delete(&mut self, peer: &Identity, now: Instant) {
        let spis: Vec<u64> = self
            .sas
            .iter()
            .filter(|(_, sa)| sa.peer.as_ref() == Some(peer))
            .map(|(k, _)| *k)
            .collect();
        for spi in spis {
            let mut sa = self.sas.remove(&spi).expect("listed");
            if sa.state == IkeState::Established {
                self.request(&mut sa, Intent::DeleteIke, now);
            } else {
                self.close(&mut sa, "deleted locally".into());
            }
            self.put_back(sa);
        }
    }

    pub fn status(&self) -> Vec<SaStatus> {
        let mut out: Vec<SaStatus> = self
            .sas
            .values()
            .map(|sa| {
                let (spi_i, spi_r) = sa.spis();
                SaStatus {
                    peer: sa.peer.clone(),
                    local: sa.local,
                    remote: sa.remote,
                    state: sa.state,
                    initiator: sa.initiator,
                    spi_i,
                    spi_r,
                    suite: sa.suite,
                    established: sa.established,
                    ike_rekeys: sa.ike_rekeys,
                    child_rekeys: sa.child_rekeys,
                    last_dpd: sa.last_dpd,
                    nat: sa.nat,
                    children: sa
                        .children
                        .iter()
                        .map(|c| ChildStatus {
                            spi_in: c.spi_in,
                            spi_out: c.spi_out,
                            cipher: c.suite.cipher,
                            esn: c.suite.esn,
                            established: c.established,
                            replaced: c.replaced,
                            ts_local: c.ts_local.clone(),
                            ts_remote: c.ts_remote.clone(),
                        })
                        .collect(),
                }
            })
            .collect();
        out.sort_by_key(|s| (s.peer.clone(), s.spi_i, s.spi_r));
        out
    }

    /// One datagram from `remote` to `local` (the non-ESP marker already removed).
    pub fn handle_datagram(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) {
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.answer_bad_init(local, remote, bytes, &e);
                return;
            }
        };
        let h = &msg.header;
        if h.exchange == ExchangeType::IkeSaInit && !h.response {
            if h.spi_r == 0 && h.message_id == 0 {
                self.handle_init_request(local, remote, bytes, &msg, now);
            }
            return;
        }
        // The I flag is the original initiator's: when it is set we are the responder.
        let ours = if h.initiator { h.spi_r } else { h.spi_i };
        let theirs = if h.initiator { h.spi_i } else { h.spi_r };
        let Some(mut sa) = self.sas.remove(&ours) else {
            tracing::debug!(%remote, spi = ours, "IKE message for an unknown SA dropped");
            return;
        };
        if sa.initiator == h.initiator || (sa.remote_spi != 0 && sa.remote_spi != theirs) {
            tracing::debug!(%remote, "IKE message with mismatched SPIs or flags dropped");
        } else if h.response {
            self.handle_response(&mut sa, bytes, &msg, now);
        } else {
            self.handle_request(&mut sa, local, remote, bytes, &msg, now);
        }
        self.put_back(sa);
    }

    /// Run the timers that are due.
    pub fn poll(&mut self, now: Instant) {
        timers::poll(self, now);
    }

    /// When [`Speaker::poll`] must next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        timers::next_deadline(self)
    }

    // ---- shared machinery of the exchanges ----

    fn established_with(&self, peer: &Identity) -> Vec<u64> {
        self.sas
            .iter()
            .filter(|(_, sa)| sa.state == IkeState::Established && sa.peer.as_ref() == Some(peer))
            .map(|(k, _)| *k)
            .collect()
    }

    fn put_back(&mut self, sa: IkeSa) {
        if sa.state == IkeState::Dead {
            self.half_open.retain(|_, v| *v != sa.local_spi);
        } else {
            self.sas.insert(sa.local_spi, sa);
        }
    }

    fn random<const N: usize>(&self) -> [u8; N] {
        let mut b = [0u8; N];
        self.rng
            .fill(&mut b)
            .expect("the system random generator works");
        b
    }

    fn nonce(&self) -> Vec<u8> {
        self.random::<32>().to_vec()
    }

    fn new_ike_spi(&self) -> u64 {
        loop {
            let spi = u64::from_be_bytes(self.random());
            if spi != 0 && !self.sas.contains_key(&spi) {
                return spi;
            }
        }
    }

    /// An ESP SPI of ours, above the reserved range 0..=255 and unused.
    fn new_esp_spi(&self) -> u32 {
        loop {
            let spi = u32::from_be_bytes(self.random());
            let used = self
                .sas
                .values()
                .any(|sa| sa.children.iter().any(|c| c.spi_in == spi));
            if spi > 255 && !used {
                return spi;
            }
        }
    }

    /// How long a request's retransmissions take to give up, about: what a retired
    /// IKE SA waits for its Delete.
    fn give_up_after(&self) -> Duration {
        self.config.retransmit_timeout * 2u32.saturating_pow(self.config.retransmit_tries + 1)
    }

    fn jittered(&self, now: Instant, l: Lifetime) -> (Instant, Instant) {
        let jitter_ms = l.jitter.as_millis() as u64;
        let j = if jitter_ms == 0 {
            0
        } else {
            u64::from_be_bytes(self.random()) % jitter_ms
        };
        let soft = l.soft.saturating_sub(Duration::from_millis(j));
        (now + soft, now + l.hard)
    }

    /// Send one message: its datagram, or all its fragments.
    fn transmit(&mut self, local: SocketAddr, remote: SocketAddr, bytes: impl Into<Datagrams>) {
        for bytes in bytes.into().0 {
            self.events.push_back(Event::Transmit {
                local,
                remote,
                bytes,
            });
        }
    }

    fn emit(&mut self, e: Event) {
        self.events.push_back(e);
    }

    /// Queue `intent`, or send it now if no request of ours is in flight.
    fn request(&mut self, sa: &mut IkeSa, intent: Intent, now: Instant) {
        let allowed = match sa.state {
            IkeState::Established => true,
            // A superseded SA may still delete itself.
            IkeState::Rekeyed => intent == Intent::DeleteIke,
            _ => false,
        };
        if !allowed {
            return;
        }
        if sa.pending.is_some() {
            if !sa.queue.contains(&intent) {
                sa.queue.push_back(intent);
            }
            return;
        }
        let built = match intent {
            Intent::RekeyChild { spi_in } => create_child::rekey_child_request(self, sa, spi_in),
            Intent::RekeyIke => create_child::rekey_ike_request(self, sa),
            Intent::DeleteChild { spis_in } => {
                if let Some(peer) = sa.peer.clone() {
                    for c in sa.children.iter().filter(|c| spis_in.contains(&c.spi_in)) {
                        self.events.push_back(Event::ChildSaDeleting {
                            peer: peer.clone(),
                            spi_in: c.spi_in,
                            spi_out: c.spi_out,
                        });
                    }
                }
                Some(informational::delete_child_request(sa, spis_in))
            }
            Intent::DeleteIke => {
                sa.state = IkeState::Deleting;
                Some(informational::delete_ike_request())
            }
            Intent::Dpd => {
                sa.last_dpd = Some(now);
                Some((ExchangeType::Informational, Vec::new(), InFlight::Dpd))
            }
        };
        let Some((exchange, inner, what)) = built else {
            self.next_request(sa, now);
            return;
        };
        let message_id = sa.next_request_id;
        let header = sa.header(exchange, false, message_id);
        match sa.seal(&header, &inner) {
            Ok(bytes) => {
                sa.next_request_id += 1;
                self.transmit(sa.local, sa.remote, bytes.clone());
                sa.pending = Some(Pending {
                    message_id,
                    bytes,
                    retransmits: 0,
                    next_send: now + self.config.retransmit_timeout,
                    what,
                });
            }
            Err(e) => tracing::warn!(error = %e, "IKE request not sealed"),
        }
    }

    /// Send the next queued request, if any.
    fn next_request(&mut self, sa: &mut IkeSa, now: Instant) {
        if sa.pending.is_none()
            && let Some(intent) = sa.queue.pop_front()
        {
            self.request(sa, intent, now);
        }
    }

    /// Answer the peer's request `message_id` with `inner`, and keep the answer for
    /// its retransmissions.
    fn respond(
        &mut self,
        sa: &mut IkeSa,
        exchange: ExchangeType,
        message_id: u32,
        inner: &[Payload],
    ) {
        let header = sa.header(exchange, true, message_id);
        match sa.seal(&header, inner) {
            Ok(bytes) => {
                sa.cached_response = Some((message_id, bytes.clone()));
                sa.expected_request_id = message_id.wrapping_add(1);
                self.transmit(sa.local, sa.remote, bytes);
            }
            Err(e) => tracing::warn!(error = %e, "IKE response not sealed"),
        }
    }

    fn handle_request(
        &mut self,
        sa: &mut IkeSa,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
        msg: &Message,
        now: Instant,
    ) {
        let id = msg.header.message_id;
        if let Some((cached_id, cached)) = &sa.cached_response
            && *cached_id == id
        {
            // A retransmitted request: the same answer, no new processing.
            if fragments::answers_retransmission(sa, bytes, msg) {
                let cached = cached.clone();
                self.transmit(sa.local, sa.remote, cached);
            }
            return;
        }
        if id != sa.expected_request_id {
            tracing::debug!(
                id,
                expected = sa.expected_request_id,
                "IKE request outside the window dropped"
            );
            return;
        }
        let Some(opened) = fragments::open(sa, bytes, msg) else {
            return;
        };
        let inner = match opened {
            Ok(inner) => inner,
            Err(crate::crypto::CryptoError::Inner(e)) => {
                // Authentic but malformed: the request gets the error.
                let (kind, data) = e.notify();
                self.respond(
                    sa,
                    msg.header.exchange,
                    id,
                    &[Payload::Notify(Notify::new(kind, data))],
                );
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "IKE request dropped");
                return;
            }
        };
        sa.last_received = now;
        if sa.nat.remote_behind_nat && remote != sa.remote {
            // RFC 7296 §2.23: follow the peer's NAT mapping.
            sa.remote = remote;
        } else if sa.nat.local_behind_nat && remote.ip() == sa.remote.ip() {
            // We are (or act as) the side behind a NAT: the peer moved from 500 to
            // 4500 after IKE_SA_INIT, and its requests are answered where they came
            // from.
            sa.remote = remote;
        }
        sa.local = local;
        match (msg.header.exchange, sa.state) {
            (ExchangeType::IkeAuth, IkeState::InitDone) => {
                auth_exchange::handle_request(self, sa, id, &inner, now)
            }
            (ExchangeType::CreateChildSa, IkeState::Established) => {
                create_child::handle_request(self, sa, id, &inner, now)
            }
            (ExchangeType::Informational, _) if sa.state != IkeState::InitDone => {
                informational::handle_request(self, sa, id, &inner, now)
            }
            (ExchangeType::CreateChildSa, IkeState::Rekeyed | IkeState::Deleting) => {
                let n = Notify::new(NotifyType::TemporaryFailure, vec![]);
                self.respond(sa, msg.header.exchange, id, &[Payload::Notify(n)]);
            }
            _ => {
                tracing::debug!(exchange = ?msg.header.exchange, state = ?sa.state, "unexpected IKE request dropped")
            }
        }
    }

    fn handle_response(&mut self, sa: &mut IkeSa, bytes: &[u8], msg: &Message, now: Instant) {
        let Some(pending) = sa.pending.as_ref() else {
            return;
        };
        if pending.message_id != msg.header.message_id {
            return;
        }
        if let InFlight::Init = pending.what {
            init::handle_response(self, sa, bytes, msg, now);
            return;
        }
        let Some(opened) = fragments::open(sa, bytes, msg) else {
            return;
        };
        let inner = match opened {
            Ok(inner) => inner,
            Err(e) => {
                tracing::debug!(error = %e, "IKE response dropped");
                return;
            }
        };
        sa.last_received = now;
        let pending = sa.pending.take().expect("checked");
        match pending.what {
            InFlight::Init => unreachable!("handled above"),
            InFlight::Auth { child_spi_in } => {
                auth_exchange::handle_response(self, sa, child_spi_in, &inner, now)
            }
            InFlight::RekeyChild {
                old_spi_in,
                new_spi_in,
                ni,
                share,
            } => create_child::rekey_child_response(
                self, sa, old_spi_in, new_spi_in, ni, share, &inner, now,
            ),
            InFlight::RekeyIke { new_spi, ni, share } => {
                create_child::rekey_ike_response(self, sa, new_spi, ni, share, &inner, now)
            }
            InFlight::DeleteChild { spis_in } => {
                informational::delete_child_response(self, sa, &spis_in)
            }
            InFlight::DeleteIke => {
                self.close(sa, "deleted".into());
                return;
            }
            InFlight::Dpd => {}
        }
        self.next_request(sa, now);
    }

    /// `sa` failed before it was up: the caller hears why.
    fn failed(&mut self, sa: &IkeSa, peer: Option<Identity>, reason: &str) {
        self.emit(Event::Failed {
            remote: sa.remote,
            peer: peer.or_else(|| sa.peer.clone()),
            reason: reason.to_string(),
        });
    }

    /// End `sa`: its Child SAs are deleted, the caller hears why.
    fn close(&mut self, sa: &mut IkeSa, reason: String) {
        if sa.established.is_none() && !sa.superseded && sa.state != IkeState::Dead {
            self.failed(sa, None, &reason);
        }
        if let Some(peer) = sa.peer.clone() {
            for c in std::mem::take(&mut sa.children) {
                self.emit(Event::ChildSaDeleted {
                    peer: peer.clone(),
                    spi_in: c.spi_in,
                    spi_out: c.spi_out,
                });
            }
            // Another IKE SA with the peer (a reauthentication's, or the one that
            // stays of two opened at once) still carries it: nothing went down.
            let replaced = self
                .established_with(&peer)
                .iter()
                .any(|spi| *spi != sa.local_spi);
            if !sa.superseded && !replaced && (sa.initiator || sa.established.is_some()) {
                self.emit(Event::IkeSaDown { peer, reason });
            }
        }
        sa.state = IkeState::Dead;
        sa.pending = None;
    }

    /// Build the [`ChildSa`] event value of `child` in `sa`.
    fn child_sa(&self, sa: &IkeSa, child: &sa::Child, key_in: Secret, key_out: Secret) -> ChildSa {
        ChildSa {
            peer: sa
                .peer
                .clone()
                .expect("a Child SA has an authenticated peer"),
            local: sa.local,
            remote: sa.remote,
            spi_in: child.spi_in,
            spi_out: child.spi_out,
            cipher: child.suite.cipher,
            key_in,
            key_out,
            esn: child.suite.esn,
            ts_local: child.ts_local.clone(),
            ts_remote: child.ts_remote.clone(),
            soft_lifetime: child.rekey_at - child.established,
            hard_lifetime: child.expire_at - child.established,
            udp_encap: sa.nat.any(),
        }
    }

    /// An unparsable IKE_SA_INIT request still gets its error, unencrypted (§2.21.1).
    fn answer_bad_init(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
        e: &DecodeError,
    ) {
        let Ok((h, _)) = crate::codec::Header::decode(bytes) else {
            return;
        };
        if h.exchange != ExchangeType::IkeSaInit || h.response || h.spi_r != 0 || h.message_id != 0
        {
            return;
        }
        let (kind, data) = e.notify();
        let reply = Message {
            header: crate::codec::Header {
                response: true,
                initiator: false,
                ..h
            },
            payloads: vec![Payload::Notify(Notify::new(kind, data))],
        };
        if let Ok(b) = reply.encode() {
            self.transmit(local, remote, b);
        }
    }
}
