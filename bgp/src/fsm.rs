//! The BGP finite state machine of RFC 4271 §8, as a pure core: events in, actions
//! out, no sockets, and time only as the `now` the caller passes. Timers are deadlines
//! the FSM keeps; the driver sleeps until [`Fsm::next_deadline`] and calls
//! [`Fsm::poll`].
//!
//! Where RFC 4271 is optional or loose, this FSM does what FRR and BIRD do:
//! - No DelayOpen, no damping. A session dropped by an error goes to Idle and starts
//!   again by itself after the idle hold time (§8.1.1 IdleHoldTimer, the "automatic
//!   start" event 3) until ManualStop.
//! - A failed outgoing connection waits in Active for the ConnectRetry timer rather
//!   than passing through Idle (§8.2.2 sends Connect to Idle; the automatic restart
//!   would lead straight back).
//! - Connection collision (§6.8) is decided by the driver, which holds both
//!   connections, with [`collision_keeps`].

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::codec::{
    AfiSafi, Capability, Context, DecodeError, ExtendedNextHop, Family, Message, Notification,
    Open, RouteRefresh, Update, codes,
};

/// RFC 4271 §8.2.2: the hold time while waiting for the peer's OPEN.
const OPEN_HOLD: Duration = Duration::from_secs(240);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
    IdleHold,
}

const TIMERS: [Timer; 4] = [
    Timer::ConnectRetry,
    Timer::Hold,
    Timer::Keepalive,
    Timer::IdleHold,
];

/// What this side of the session is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    pub local_asn: u32,
    pub peer_asn: u32,
    pub bgp_id: Ipv4Addr,
    /// Proposed hold time: 0 or at least 3 seconds (RFC 4271 §4.2).
    pub hold_time: u16,
    pub connect_retry: Duration,
    /// Wait before starting again after an error (IdleHoldTime).
    pub idle_hold: Duration,
    /// Only accept connections, never open one (§8.1.1 PassiveTcpEstablishment).
    pub passive: bool,
    /// Capabilities to announce besides the 4-octet AS one, which is always sent.
    pub capabilities: Vec<Capability>,
}

impl Config {
    pub fn open(&self) -> Open {
        Open::new(
            self.local_asn,
            self.hold_time,
            self.bgp_id,
            self.capabilities.clone(),
        )
    }
}

/// What the OPENs agreed on, handed to the rest of the speaker when the session is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub peer: Open,
    /// min of both proposals (RFC 4271 §4.2); 0 means no keepalives, no hold timer.
    pub hold_time: u16,
    pub keepalive: u16,
    pub codec: Context,
    pub route_refresh: bool,
}

/// Agree on what both OPENs offer.
pub fn negotiate(local: &Open, peer: &Open) -> Negotiated {
    let hold_time = local.hold_time.min(peer.hold_time);
    let both = |c: &Capability| local.has(c) && peer.has(c);
    let mp = |o: &Open| -> Vec<AfiSafi> {
        let sent: Vec<AfiSafi> = o
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(a) => Some(*a),
                _ => None,
            })
            .collect();
        // Without multiprotocol capabilities a speaker carries IPv4 unicast only.
        if sent.is_empty() {
            vec![AfiSafi::IPV4_UNICAST]
        } else {
            sent
        }
    };
    let (ours, theirs) = (mp(local), mp(peer));
    let families = [Family::Ipv4Unicast, Family::Ipv6Unicast]
        .into_iter()
        .filter(|f| ours.contains(&f.afi_safi()) && theirs.contains(&f.afi_safi()))
        .collect();
    let four = |o: &Open| {
        o.capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
    };
    Negotiated {
        peer: peer.clone(),
        hold_time,
        // RFC 4271 §10: one third of the hold time.
        keepalive: hold_time / 3,
        codec: Context {
            four_octet_as: four(local) && four(peer),
            families,
            ipv4_via_ipv6: local.extended_next_hop(ExtendedNextHop::IPV4_UNICAST_VIA_IPV6)
                && peer.extended_next_hop(ExtendedNextHop::IPV4_UNICAST_VIA_IPV6),
        },
        route_refresh: both(&Capability::RouteRefresh),
    }
}

/// RFC 4271 §6.8 (with RFC 6286 §2.3 for equal identifiers): of two connections to
/// the same peer, the one opened by the side with the higher BGP identifier stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The connection this speaker opened.
    Outbound,
    /// The connection the peer opened.
    Inbound,
}

pub fn collision_keeps(
    local_id: Ipv4Addr,
    local_asn: u32,
    peer_id: Ipv4Addr,
    peer_asn: u32,
) -> Keep {
    if (u32::from(local_id), local_asn) > (u32::from(peer_id), peer_asn) {
        Keep::Outbound
    } else {
        Keep::Inbound
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    ManualStart,
    ManualStop,
    /// Our connection attempt succeeded, or we accepted the peer's (events 16/17).
    TcpConnectionConfirmed,
    TcpConnectionFails,
    /// A well-formed message from the peer.
    Message(Message),
    /// An UPDATE to treat as a withdrawal of these prefixes (RFC 7606).
    TreatAsWithdraw(Vec<IpNet>),
    /// A message that failed to decode (events 21, 22, 28).
    DecodeError(DecodeError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Connect,
    Disconnect,
    Send(Message),
    SessionUp(Box<Negotiated>),
    SessionDown(DownReason),
    Deliver(Update),
    Withdraw(Vec<IpNet>),
    RouteRefreshRequested(AfiSafi),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    ManualStop,
    /// We sent this NOTIFICATION.
    Sent(Notification),
    /// The peer sent this NOTIFICATION.
    Received(Notification),
    ConnectionLost,
}

pub struct Fsm {
    config: Config,
    state: State,
    deadlines: [Option<Instant>; 4],
    negotiated: Option<Negotiated>,
    /// RFC 4271 §8: attempts since the last established session.
    pub connect_retry_counter: u32,
    /// Started by ManualStart and not stopped: errors restart the session.
    enabled: bool,
}

impl Fsm {
    pub fn new(config: Config) -> Self {
        Fsm {
            config,
            state: State::Idle,
            deadlines: [None; 4],
            negotiated: None,
            connect_retry_counter: 0,
            enabled: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    pub fn deadline(&self, t: Timer) -> Option<Instant> {
        self.deadlines[t as usize]
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Fire every timer due at `now`.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for t in TIMERS {
            if self.deadline(t).is_some_and(|d| d <= now) {
                self.deadlines[t as usize] = None;
                out.extend(self.timer_expired(now, t));
            }
        }
        out
    }

    /// The driver sent an UPDATE: it counts as a keepalive (RFC 4271 §4.4).
    pub fn update_sent(&mut self, now: Instant) {
        if self.state == State::Established {
            self.start_keepalive(now);
        }
    }

    fn set(&mut self, t: Timer, at: Option<Instant>) {
        self.deadlines[t as usize] = at;
    }

    fn start_keepalive(&mut self, now: Instant) {
        let k = self.negotiated.as_ref().map_or(0, |n| n.keepalive);
        self.set(
            Timer::Keepalive,
            (k > 0).then(|| now + Duration::from_secs(k.into())),
        );
    }

    fn restart_hold(&mut self, now: Instant) {
        let h = self.negotiated.as_ref().map_or(0, |n| n.hold_time);
        self.set(
            Timer::Hold,
            (h > 0).then(|| now + Duration::from_secs(h.into())),
        );
    }

    /// Leave for Idle; restart after the idle hold time unless stopped.
    fn enter_idle(&mut self, now: Instant, out: &mut Vec<Action>, reason: DownReason) {
        if self.state == State::Established {
            out.push(Action::SessionDown(reason));
        }
        // Active only listens; every other state but Idle holds a connection or an
        // attempt at one.
        if matches!(
            self.state,
            State::Connect | State::OpenSent | State::OpenConfirm | State::Established
        ) {
            out.push(Action::Disconnect);
        }
        self.deadlines = [None; 4];
        self.negotiated = None;
        self.state = State::Idle;
        if self.enabled {
            self.connect_retry_counter += 1;
            self.set(Timer::IdleHold, Some(now + self.config.idle_hold));
        }
    }

    /// Send `n` and drop the session (RFC 4271 §6).
    fn fail(&mut self, now: Instant, n: Notification) -> Vec<Action> {
        let mut out = vec![Action::Send(Message::Notification(n.clone()))];
        self.enter_idle(now, &mut out, DownReason::Sent(n));
        out
    }

    fn start(&mut self, now: Instant) -> Vec<Action> {
        self.set(Timer::ConnectRetry, Some(now + self.config.connect_retry));
        if self.config.passive {
            self.state = State::Active;
            vec![]
        } else {
            self.state = State::Connect;
            vec![Action::Connect]
        }
    }

    fn timer_expired(&mut self, now: Instant, t: Timer) -> Vec<Action> {
        match (self.state, t) {
            (State::Idle, Timer::IdleHold) if self.enabled => self.start(now),
            (State::Connect | State::Active, Timer::ConnectRetry) => {
                let mut out = if self.state == State::Connect {
                    vec![Action::Disconnect]
                } else {
                    vec![]
                };
                out.extend(self.start(now));
                out
            }
            (State::OpenSent | State::OpenConfirm | State::Established, Timer::Hold) => {
                self.fail(now, Notification::new(codes::HOLD_TIMER_EXPIRED, 0))
            }
            (State::OpenConfirm | State::Established, Timer::Keepalive) => {
                self.start_keepalive(now);
                vec![Action::Send(Message::Keepalive)]
            }
            // A timer left over from another state: nothing to do.
            _ => vec![],
        }
    }

    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        use State::*;
        match (self.state, event) {
            (Idle, Event::ManualStart) => {
                self.enabled = true;
                self.connect_retry_counter = 0;
                self.set(Timer::IdleHold, None);
                self.start(now)
            }
            (_, Event::ManualStart) => vec![],
            (Idle, Event::ManualStop) => {
                self.enabled = false;
                self.deadlines = [None; 4];
                vec![]
            }
            (OpenSent | OpenConfirm | Established, Event::ManualStop) => {
                // Cease / Administrative Shutdown (RFC 4486).
                let n = Notification::new(codes::CEASE, 2);
                let mut out = vec![Action::Send(Message::Notification(n))];
                self.enabled = false;
                self.enter_idle(now, &mut out, DownReason::ManualStop);
                self.connect_retry_counter = 0;
                out
            }
            (_, Event::ManualStop) => {
                let mut out = Vec::new();
                self.enabled = false;
                self.enter_idle(now, &mut out, DownReason::ManualStop);
                self.connect_retry_counter = 0;
                out
            }
            (Idle, _) => vec![],
            (Connect | Active, Event::TcpConnectionConfirmed) => {
                self.set(Timer::ConnectRetry, None);
                self.set(Timer::Hold, Some(now + OPEN_HOLD));
                self.state = OpenSent;
                vec![Action::Send(Message::Open(self.config.open()))]
            }
            (Connect | Active, Event::TcpConnectionFails) => {
                self.connect_retry_counter += 1;
                self.set(Timer::ConnectRetry, Some(now + self.config.connect_retry));
                let out = if self.state == Connect {
                    vec![Action::Disconnect]
                } else {
                    vec![]
                };
                self.state = Active;
                out
            }
            (Connect | Active, _) => {
                // §8.2.2: any other event in Connect or Active is an FSM error, without
                // a NOTIFICATION (there is no session to send it on yet).
                let mut out = Vec::new();
                self.enter_idle(now, &mut out, DownReason::ConnectionLost);
                out
            }
            (OpenSent | OpenConfirm | Established, Event::TcpConnectionFails) => {
                let mut out = Vec::new();
                self.enter_idle(now, &mut out, DownReason::ConnectionLost);
                out
            }
            (_, Event::DecodeError(e)) => self.fail(now, e.notification()),
            (_, Event::Message(Message::Notification(n))) => {
                let mut out = Vec::new();
                self.enter_idle(now, &mut out, DownReason::Received(n));
                out
            }
            (OpenSent, Event::Message(Message::Open(peer))) => self.open_received(now, peer),
            (OpenConfirm, Event::Message(Message::Keepalive)) => {
                self.restart_hold(now);
                self.state = Established;
                self.connect_retry_counter = 0;
                match self.negotiated.clone() {
                    Some(n) => vec![Action::SessionUp(Box::new(n))],
                    // OpenConfirm is only entered with the OPENs negotiated.
                    None => self.fail(now, Notification::new(codes::FSM, 2)),
                }
            }
            (Established, Event::Message(m)) => {
                self.restart_hold(now);
                match m {
                    Message::Keepalive => vec![],
                    Message::Update(u) => vec![Action::Deliver(u)],
                    Message::RouteRefresh(RouteRefresh { afi_safi, .. }) => {
                        vec![Action::RouteRefreshRequested(afi_safi)]
                    }
                    // A second OPEN: FSM error in Established (RFC 6608 subcode 3).
                    _ => self.fail(now, Notification::new(codes::FSM, 3)),
                }
            }
            (Established, Event::TreatAsWithdraw(prefixes)) => {
                self.restart_hold(now);
                vec![Action::Withdraw(prefixes)]
            }
            // Any other message, or a withdrawal before Established: an FSM error
            // (RFC 6608 subcodes 1 and 2 for OpenSent and OpenConfirm).
            (OpenSent, _) => self.fail(now, Notification::new(codes::FSM, 1)),
            (OpenConfirm, _) => self.fail(now, Notification::new(codes::FSM, 2)),
            (Established, _) => self.fail(now, Notification::new(codes::FSM, 3)),
        }
    }

    fn open_received(&mut self, now: Instant, peer: Open) -> Vec<Action> {
        if peer.asn() != self.config.peer_asn {
            return self.fail(
                now,
                DecodeError::BadPeerAs { asn: peer.asn() }.notification(),
            );
        }
        // RFC 6286 §2.2: the same identifier on both ends is an error for iBGP.
        if peer.bgp_id == self.config.bgp_id && peer.asn() == self.config.local_asn {
            return self.fail(
                now,
                DecodeError::BadBgpIdentifier { id: peer.bgp_id }.notification(),
            );
        }
        let n = negotiate(&self.config.open(), &peer);
        self.negotiated = Some(n);
        self.state = State::OpenConfirm;
        self.restart_hold(now);
        self.start_keepalive(now);
        vec![Action::Send(Message::Keepalive)]
    }
}
