//! One BFD session in Asynchronous mode (RFC 5880 §6) as a pure state machine: it takes
//! received packets, timer ticks and operator commands with the caller's clock and
//! random source, and returns actions (packets to send, state changes to report). No
//! I/O here; `driver.rs` puts it on sockets.
//!
//! What it implements: the AdminDown/Down/Init/Up machine and its three-way handshake
//! (§6.2, §6.8.6), the Detection Time of §6.8.4, transmit interval negotiation and
//! jitter (§6.8.2, §6.8.7), the slow transmit rate while not Up (§6.8.3), Poll Sequences
//! for parameter changes (§6.5, §6.8.3) and the diagnostics of §4.1 we can produce.
//! Not implemented: Demand mode of our own and the Echo function (we advertise a
//! Required Min Echo RX of zero, which tells the peer not to send echoes).

use std::time::{Duration, Instant};

use super::packet::{ControlPacket, Diagnostic, State};

/// §6.8.3: while not Up, Desired Min TX "MUST be set to a value of not less than one
/// second", so a session that cannot come up costs next to nothing.
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// What the operator configures for a session (§6.8.1 bfd.DesiredMinTxInterval,
/// bfd.RequiredMinRxInterval, bfd.DetectMult).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionParams {
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub detect_mult: u8,
}

impl Default for SessionParams {
    /// FRR's and BIRD's defaults: 300 ms both ways, multiplier 3 (≈ 900 ms detection).
    fn default() -> Self {
        Self {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("detect multiplier must be at least 1")]
    ZeroDetectMult,
    #[error("desired min TX must be between 1 µs and {max} µs, got {got:?}", max = u32::MAX)]
    DesiredMinTx { got: Duration },
    #[error("required min RX must be at most {max} µs, got {got:?}", max = u32::MAX)]
    RequiredMinRx { got: Duration },
}

impl SessionParams {
    /// Desired Min TX of zero is forbidden by §4.1; Required Min RX of zero is allowed
    /// and means "send me nothing", which a session that wants to detect failures never
    /// wants, but the RFC permits it.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.detect_mult == 0 {
            return Err(ParamsError::ZeroDetectMult);
        }
        let us = |d: Duration| u32::try_from(d.as_micros()).ok();
        match us(self.desired_min_tx) {
            Some(v) if v > 0 => {}
            _ => {
                return Err(ParamsError::DesiredMinTx {
                    got: self.desired_min_tx,
                });
            }
        }
        if us(self.required_min_rx).is_none() {
            return Err(ParamsError::RequiredMinRx {
                got: self.required_min_rx,
            });
        }
        Ok(())
    }
}

/// The random numbers that jitter the transmit interval. The driver passes a real
/// generator; tests pass fixed sequences.
pub trait RandomSource {
    fn next_u32(&mut self) -> u32;
}

impl<F: FnMut() -> u32> RandomSource for F {
    fn next_u32(&mut self) -> u32 {
        self()
    }
}

/// A change of the local session state, with the diagnostic that explains it. This is
/// what a client protocol (BGP) subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    pub from: State,
    pub to: State,
    pub diagnostic: Diagnostic,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Transmit this packet to the peer now.
    Send(ControlPacket),
    StateChanged(StateChange),
}

/// Why the session ignored a packet that passed the codec's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Discard {
    #[error("Your Discriminator {got:#x} is not this session's {ours:#x}")]
    DiscriminatorMismatch { got: u32, ours: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Poll {
    Idle,
    Active,
    /// Parameters changed again while a Poll Sequence ran; §6.5 forbids a second
    /// concurrent one, so another starts when this one ends.
    ActiveThenAgain,
}

#[derive(Debug)]
pub struct Session {
    state: State,
    local_diag: Diagnostic,
    local_discr: u32,
    params: SessionParams,
    /// The intervals our packets advertise (µs).
    adv_desired_tx: u32,
    adv_required_rx: u32,
    /// The intervals we act on: our transmit interval and the RX interval in our
    /// Detection Time. They lag the advertised ones during a Poll Sequence when acting
    /// early would make the peer declare us dead (§6.8.3).
    tx_in_use: u32,
    rx_in_use: u32,
    poll: Poll,
    remote_state: State,
    remote_discr: u32,
    remote_min_rx: u32,
    remote_desired_tx: u32,
    remote_detect_mult: u8,
    remote_demand: bool,
    next_tx: Option<Instant>,
    /// The interval `next_tx` was computed from.
    scheduled_iv: Option<Duration>,
    last_tx: Option<Instant>,
    detect_deadline: Option<Instant>,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Session {
    /// A session in Down that starts transmitting at once (the Active role, §6.1).
    /// `local_discr` must be non-zero and unique on this system; the driver picks it.
    pub fn new(local_discr: u32, params: SessionParams, now: Instant) -> Result<Self, ParamsError> {
        params.validate()?;
        let adv_desired_tx = micros(params.desired_min_tx.max(SLOW_TX));
        let adv_required_rx = micros(params.required_min_rx);
        Ok(Self {
            state: State::Down,
            local_diag: Diagnostic::None,
            local_discr,
            params,
            adv_desired_tx,
            adv_required_rx,
            tx_in_use: adv_desired_tx,
            rx_in_use: adv_required_rx,
            poll: Poll::Idle,
            remote_state: State::Down,
            remote_discr: 0,
            // §6.8.1: bfd.RemoteMinRxInterval starts at 1 µs.
            remote_min_rx: 1,
            remote_desired_tx: 0,
            remote_detect_mult: 0,
            remote_demand: false,
            next_tx: Some(now),
            scheduled_iv: None,
            last_tx: None,
            detect_deadline: None,
        })
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn remote_state(&self) -> State {
        self.remote_state
    }
    pub fn diagnostic(&self) -> Diagnostic {
        self.local_diag
    }
    pub fn local_discriminator(&self) -> u32 {
        self.local_discr
    }
    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discr
    }
    pub fn params(&self) -> SessionParams {
        self.params
    }
    pub fn poll_in_progress(&self) -> bool {
        self.poll != Poll::Idle
    }

    /// The interval between our periodic packets before jitter, or `None` when the
    /// peer asked for none (Required Min RX zero, or Demand mode while both are Up).
    pub fn tx_interval(&self) -> Option<Duration> {
        if self.remote_min_rx == 0
            || (self.remote_demand && self.state == State::Up && self.remote_state == State::Up)
        {
            return None;
        }
        Some(Duration::from_micros(u64::from(
            self.tx_in_use.max(self.remote_min_rx),
        )))
    }

    /// §6.8.4, Asynchronous mode: the peer's Detect Mult times the larger of our
    /// Required Min RX and its Desired Min TX. `None` before any packet arrived.
    pub fn detection_time(&self) -> Option<Duration> {
        if self.remote_detect_mult == 0 {
            return None;
        }
        let per_packet = u64::from(self.rx_in_use.max(self.remote_desired_tx));
        Some(Duration::from_micros(
            per_packet * u64::from(self.remote_detect_mult),
        ))
    }

    /// The next instant at which [`Session::on_timer`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.next_tx, self.detect_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Run the timers due at `now`: detection first (a session that just went Down
    /// says so in the packet sent in the same tick), then periodic transmission.
    pub fn on_timer(&mut self, now: Instant, rng: &mut impl RandomSource) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.detect_deadline.is_some_and(|d| now >= d) {
            self.detect_deadline = None;
            if matches!(self.state, State::Init | State::Up) {
                self.transition(
                    State::Down,
                    Diagnostic::ControlDetectionTimeExpired,
                    now,
                    &mut actions,
                );
            }
            // §6.8.1: bfd.RemoteDiscr is reset when the Detection Time expires, so the
            // next packet we send carries Your Discriminator 0 and the peer (if it
            // restarted with a new discriminator) can still be found.
            self.remote_discr = 0;
            self.remote_state = State::Down;
        }
        if self.next_tx.is_some_and(|t| now >= t) {
            actions.push(Action::Send(self.control_packet(false)));
            self.last_tx = Some(now);
            self.scheduled_iv = self.tx_interval();
            self.next_tx = self.scheduled_iv.map(|iv| now + self.jittered(iv, rng));
        }
        actions
    }

    /// Reception of a Control packet that passed [`ControlPacket::decode`] and was
    /// demultiplexed to this session (§6.8.6 from "If the Your Discriminator field is
    /// nonzero" on).
    pub fn on_packet(&mut self, pkt: &ControlPacket, now: Instant) -> Result<Vec<Action>, Discard> {
        if pkt.your_discriminator != 0 && pkt.your_discriminator != self.local_discr {
            return Err(Discard::DiscriminatorMismatch {
                got: pkt.your_discriminator,
                ours: self.local_discr,
            });
        }
        let mut actions = Vec::new();
        self.remote_discr = pkt.my_discriminator;
        self.remote_state = pkt.state;
        self.remote_demand = pkt.demand;
        self.remote_min_rx = pkt.required_min_rx_us;
        self.remote_desired_tx = pkt.desired_min_tx_us;
        self.remote_detect_mult = pkt.detect_mult;
        if pkt.final_ && self.poll != Poll::Idle {
            self.finish_poll();
        }
        if self.state == State::AdminDown {
            return Ok(actions);
        }
        self.detect_deadline = self.detection_time().map(|t| now + t);
        match (self.state, pkt.state) {
            (State::Down, State::AdminDown) => {}
            (_, State::AdminDown) => self.transition(
                State::Down,
                Diagnostic::NeighborSignaledDown,
                now,
                &mut actions,
            ),
            (State::Down, State::Down) => {
                self.transition(State::Init, Diagnostic::None, now, &mut actions)
            }
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                self.transition(State::Up, Diagnostic::None, now, &mut actions)
            }
            (State::Up, State::Down) => self.transition(
                State::Down,
                Diagnostic::NeighborSignaledDown,
                now,
                &mut actions,
            ),
            _ => {}
        }
        if pkt.poll {
            // §6.8.7: the Final goes out "without respect to the transmission timer".
            actions.push(Action::Send(self.control_packet(true)));
        }
        // The peer may have lowered its Required Min RX: do not sit out an old, longer
        // timer.
        self.expedite(now, false);
        Ok(actions)
    }

    /// Take the session administratively down (§6.8.16): tell the peer with AdminDown
    /// packets, stop detecting.
    pub fn admin_down(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state != State::AdminDown {
            self.transition(
                State::AdminDown,
                Diagnostic::AdministrativelyDown,
                now,
                &mut actions,
            );
            self.detect_deadline = None;
        }
        actions
    }

    /// Leave AdminDown: the session restarts in Down (§6.8.16).
    pub fn admin_up(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state == State::AdminDown {
            self.transition(State::Down, Diagnostic::None, now, &mut actions);
        }
        actions
    }

    /// Change the configured intervals or multiplier. While Up, a Poll Sequence tells
    /// the peer, and a longer TX or shorter RX takes effect only once it is answered.
    pub fn set_params(&mut self, params: SessionParams, now: Instant) -> Result<(), ParamsError> {
        params.validate()?;
        self.params = params;
        self.advertise(self.desired_tx_for_state(), micros(params.required_min_rx));
        self.expedite(now, false);
        Ok(())
    }

    /// The packet describing our current state; with `final_` it answers a Poll.
    pub fn control_packet(&self, final_: bool) -> ControlPacket {
        ControlPacket {
            diagnostic: self.local_diag,
            state: self.state,
            poll: !final_ && self.poll != Poll::Idle,
            final_,
            control_plane_independent: false,
            demand: false,
            detect_mult: self.params.detect_mult,
            my_discriminator: self.local_discr,
            your_discriminator: self.remote_discr,
            desired_min_tx_us: self.adv_desired_tx,
            required_min_rx_us: self.adv_required_rx,
            required_min_echo_rx_us: 0,
        }
    }

    fn desired_tx_for_state(&self) -> u32 {
        if self.state == State::Up {
            micros(self.params.desired_min_tx)
        } else {
            micros(self.params.desired_min_tx.max(SLOW_TX))
        }
    }

    fn transition(
        &mut self,
        to: State,
        diagnostic: Diagnostic,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let from = self.state;
        self.state = to;
        self.local_diag = diagnostic;
        if to != State::Up {
            // Out of Up no peer relies on our timing, so changes apply at once and an
            // unanswered poll is moot.
            self.poll = Poll::Idle;
        }
        self.advertise(self.desired_tx_for_state(), self.adv_required_rx);
        actions.push(Action::StateChanged(StateChange {
            from,
            to,
            diagnostic,
        }));
        // Tell the peer about the new state as soon as the rate limit allows rather
        // than at the end of a (possibly one-second) interval.
        self.expedite(now, true);
    }

    fn advertise(&mut self, desired_tx: u32, required_rx: u32) {
        if desired_tx == self.adv_desired_tx && required_rx == self.adv_required_rx {
            return;
        }
        self.adv_desired_tx = desired_tx;
        self.adv_required_rx = required_rx;
        let up = self.state == State::Up;
        // §6.8.3: while Up, a longer TX interval or a shorter RX interval would make
        // the peer's or our Detection Time too short until it has seen the change.
        if !(up && desired_tx > self.tx_in_use) {
            self.tx_in_use = desired_tx;
        }
        if !(up && required_rx < self.rx_in_use) {
            self.rx_in_use = required_rx;
        }
        if up {
            self.poll = match self.poll {
                Poll::Idle => Poll::Active,
                _ => Poll::ActiveThenAgain,
            };
        }
    }

    fn finish_poll(&mut self) {
        match self.poll {
            Poll::ActiveThenAgain => self.poll = Poll::Active,
            _ => {
                self.poll = Poll::Idle;
                self.tx_in_use = self.adv_desired_tx;
                self.rx_in_use = self.adv_required_rx;
            }
        }
    }

    /// Bring the next periodic packet forward to the earliest instant §6.8.7 allows
    /// (the last one plus 75 % of the current interval) if it is scheduled later:
    /// always with `force` (a state change to announce), otherwise only when the
    /// interval shrank below the one the pending packet was scheduled with, so that
    /// ordinary receptions leave the jitter alone.
    fn expedite(&mut self, now: Instant, force: bool) {
        let Some(iv) = self.tx_interval() else {
            self.next_tx = None;
            self.scheduled_iv = None;
            return;
        };
        if !force && self.next_tx.is_some() && self.scheduled_iv.is_some_and(|s| iv >= s) {
            return;
        }
        let earliest = self.last_tx.map_or(now, |t| (t + iv * 3 / 4).max(now));
        if self.next_tx.is_none_or(|n| earliest < n) {
            self.next_tx = Some(earliest);
        }
        self.scheduled_iv = Some(iv);
    }

    /// §6.8.7: reduce the interval by 0–25 % at random, or by 10–25 % with a detect
    /// multiplier of 1 so a single late packet does not cause a false failure.
    fn jittered(&self, iv: Duration, rng: &mut impl RandomSource) -> Duration {
        let percent = if self.params.detect_mult == 1 {
            75 + rng.next_u32() % 16
        } else {
            75 + rng.next_u32() % 26
        };
        iv * percent / 100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sessions wired back to back through the codec, on a simulated clock.
    struct Pair {
        now: Instant,
        a: Session,
        b: Session,
        link_up: bool,
        /// (time since start, which side, change)
        changes: Vec<(Duration, char, StateChange)>,
        /// Packets each side sent: (time, packet).
        sent_a: Vec<(Duration, ControlPacket)>,
        sent_b: Vec<(Duration, ControlPacket)>,
        start: Instant,
        rng: u32,
    }

    fn fast() -> SessionParams {
        SessionParams {
            desired_min_tx: Duration::from_millis(100),
            required_min_rx: Duration::from_millis(100),
            detect_mult: 3,
        }
    }

    impl Pair {
        fn new(pa: SessionParams, pb: SessionParams) -> Self {
            let start = Instant::now();
            Self {
                now: start,
                a: Session::new(0xa, pa, start).unwrap(),
                b: Session::new(0xb, pb, start).unwrap(),
                link_up: true,
                changes: Vec::new(),
                sent_a: Vec::new(),
                sent_b: Vec::new(),
                start,
                rng: 1,
            }
        }

        fn deliver(&mut self, from: char, actions: Vec<Action>) {
            let mut queue: Vec<(char, Action)> = actions.into_iter().map(|x| (from, x)).collect();
            while let Some((side, action)) = queue.pop() {
                let at = self.now - self.start;
                match action {
                    Action::StateChanged(c) => self.changes.push((at, side, c)),
                    Action::Send(p) => {
                        let wire =
                            ControlPacket::decode(&p.encode()).expect("we send valid packets");
                        if side == 'a' {
                            self.sent_a.push((at, wire));
                        } else {
                            self.sent_b.push((at, wire));
                        }
                        if !self.link_up {
                            continue;
                        }
                        let (peer, name) = if side == 'a' {
                            (&mut self.b, 'b')
                        } else {
                            (&mut self.a, 'a')
                        };
                        let more = peer.on_packet(&wire, self.now).unwrap();
                        queue.extend(more.into_iter().map(|x| (name, x)));
                    }
                }
            }
        }

        /// Advance the clock in 1 ms steps for `d`, running both sides' timers.
        fn run(&mut self, d: Duration) {
            let end = self.now + d;
            while self.now < end {
                self.now += Duration::from_millis(1);
                let mut seed = self.rng;
                let mut rng = move || {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed
                };
                let aa = self.a.on_timer(self.now, &mut rng);
                self.deliver('a', aa);
                let bb = self.b.on_timer(self.now, &mut rng);
                self.deliver('b', bb);
                self.rng = rng();
            }
        }

        fn both_up(&mut self) {
            self.run(Duration::from_secs(5));
            assert_eq!(
                (self.a.state(), self.b.state()),
                (State::Up, State::Up),
                "{:?}",
                self.changes
            );
        }
    }

    #[test]
    fn three_way_handshake_brings_both_up() {
        let mut p = Pair::new(fast(), fast());
        p.run(Duration::from_secs(5));
        assert_eq!(p.a.state(), State::Up);
        assert_eq!(p.b.state(), State::Up);
        assert_eq!(p.a.remote_discriminator(), 0xb);
        assert_eq!(p.b.remote_discriminator(), 0xa);
        // Each side went Down → Init → Up or Down → Up, never straight past Init
        // without the peer having seen it.
        for side in ['a', 'b'] {
            let path: Vec<State> = p
                .changes
                .iter()
                .filter(|c| c.1 == side)
                .map(|c| c.2.to)
                .collect();
            assert!(
                path == [State::Init, State::Up] || path == [State::Up],
                "{side}: {path:?}"
            );
        }
    }

    #[test]
    fn slow_tx_while_down_fast_once_up() {
        let mut p = Pair::new(fast(), fast());
        p.link_up = false;
        p.run(Duration::from_secs(5));
        assert_eq!(p.a.state(), State::Down);
        // §6.8.3: at least 1 s advertised, and gaps no shorter than 75 % of it.
        assert!(
            p.sent_a
                .iter()
                .all(|(_, pkt)| pkt.desired_min_tx_us >= 1_000_000)
        );
        for w in p.sent_a.windows(2) {
            assert!(w[1].0 - w[0].0 >= Duration::from_millis(750), "{:?}", w);
        }
        p.link_up = true;
        p.both_up();
        let sent_before = p.sent_a.len();
        p.run(Duration::from_secs(1));
        let up_packets = &p.sent_a[sent_before..];
        assert!(
            up_packets
                .iter()
                .all(|(_, pkt)| pkt.desired_min_tx_us == 100_000)
        );
        // 100 ms jittered to 75–100 ms: 10 to 14 packets a second.
        assert!(
            (10..=14).contains(&up_packets.len()),
            "{}",
            up_packets.len()
        );
    }

    #[test]
    fn detection_time_expiry_takes_both_down() {
        let mut p = Pair::new(fast(), fast());
        p.both_up();
        assert_eq!(p.a.detection_time(), Some(Duration::from_millis(300)));
        p.link_up = false;
        let cut = p.now - p.start;
        p.changes.clear();
        p.run(Duration::from_secs(1));
        for side in ['a', 'b'] {
            let (at, _, c) = p.changes.iter().find(|c| c.1 == side).expect("went down");
            assert_eq!(c.to, State::Down);
            assert_eq!(c.diagnostic, Diagnostic::ControlDetectionTimeExpired);
            // Within one Detection Time of the last packet received before the cut.
            assert!(
                *at - cut <= Duration::from_millis(300),
                "{side} after {:?}",
                *at - cut
            );
        }
        assert_eq!(p.a.remote_discriminator(), 0, "§6.8.1: reset on expiry");
        // And it recovers when the link returns.
        p.link_up = true;
        p.both_up();
    }

    #[test]
    fn detection_time_uses_remote_mult_and_slower_side() {
        let mut pb = fast();
        pb.detect_mult = 5;
        pb.desired_min_tx = Duration::from_millis(200);
        let mut p = Pair::new(fast(), pb);
        p.both_up();
        p.run(Duration::from_secs(1));
        // a detects b: b's mult 5 × max(a's RX 100, b's TX 200) = 1 s.
        assert_eq!(p.a.detection_time(), Some(Duration::from_secs(1)));
        // b detects a: a's mult 3 × max(b's RX 100, a's TX 100).
        assert_eq!(p.b.detection_time(), Some(Duration::from_millis(300)));
        // a must send no faster than b's Required Min RX, b at its own 200 ms.
        assert_eq!(p.a.tx_interval(), Some(Duration::from_millis(100)));
        assert_eq!(p.b.tx_interval(), Some(Duration::from_millis(200)));
    }

    #[test]
    fn peer_signalling_down_is_neighbor_signaled_down() {
        let mut p = Pair::new(fast(), fast());
        p.both_up();
        p.changes.clear();
        let acts = p.a.admin_down(p.now);
        p.deliver('a', acts);
        p.run(Duration::from_millis(200));
        assert_eq!(p.a.state(), State::AdminDown);
        assert_eq!(p.a.diagnostic(), Diagnostic::AdministrativelyDown);
        assert_eq!(p.b.state(), State::Down);
        assert_eq!(p.b.diagnostic(), Diagnostic::NeighborSignaledDown);
        // b stays Down while a is AdminDown, and a ignores b entirely.
        p.run(Duration::from_secs(5));
        assert_eq!((p.a.state(), p.b.state()), (State::AdminDown, State::Down));
        assert!(p.sent_a.last().unwrap().1.state == State::AdminDown);
        let acts = p.a.admin_up(p.now);
        p.deliver('a', acts);
        p.both_up();
    }

    #[test]
    fn poll_sequence_defers_slower_tx_until_final() {
        let mut p = Pair::new(fast(), fast());
        p.both_up();
        p.run(Duration::from_secs(1));
        assert!(!p.a.poll_in_progress());
        // Cut the link so the poll cannot be answered yet.
        p.link_up = false;
        let slower = SessionParams {
            desired_min_tx: Duration::from_millis(250),
            ..fast()
        };
        p.a.set_params(slower, p.now).unwrap();
        assert!(p.a.poll_in_progress());
        assert_eq!(p.a.control_packet(false).desired_min_tx_us, 250_000);
        assert!(p.a.control_packet(false).poll);
        // §6.8.3: the longer interval is not used before the Final.
        assert_eq!(p.a.tx_interval(), Some(Duration::from_millis(100)));
        p.run(Duration::from_millis(50));
        p.link_up = true;
        p.run(Duration::from_millis(300));
        assert!(!p.a.poll_in_progress(), "b answered with F");
        assert!(p.sent_b.iter().any(|(_, pkt)| pkt.final_));
        assert_eq!(p.a.tx_interval(), Some(Duration::from_millis(250)));
        assert_eq!(p.b.detection_time(), Some(Duration::from_millis(750)));
        assert_eq!((p.a.state(), p.b.state()), (State::Up, State::Up));
        // No further packet carries P.
        let n = p.sent_a.len();
        p.run(Duration::from_secs(1));
        assert!(p.sent_a[n..].iter().all(|(_, pkt)| !pkt.poll));
    }

    #[test]
    fn going_up_polls_the_new_fast_rate() {
        let mut p = Pair::new(fast(), fast());
        p.both_up();
        // The first Up packets carry the 100 ms Desired Min TX with P set, and b's
        // Final ends it.
        assert!(
            p.sent_a
                .iter()
                .any(|(_, x)| x.state == State::Up && x.poll && x.desired_min_tx_us == 100_000)
        );
        assert!(p.sent_b.iter().any(|(_, x)| x.final_));
        assert!(!p.a.poll_in_progress() && !p.b.poll_in_progress());
    }

    #[test]
    fn packet_for_another_discriminator_changes_nothing() {
        let now = Instant::now();
        let mut s = Session::new(7, fast(), now).unwrap();
        let mut pkt = Session::new(9, fast(), now).unwrap().control_packet(false);
        pkt.your_discriminator = 8;
        assert_eq!(
            s.on_packet(&pkt, now),
            Err(Discard::DiscriminatorMismatch { got: 8, ours: 7 })
        );
        assert_eq!(s.state(), State::Down);
        assert_eq!(s.remote_discriminator(), 0);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let now = Instant::now();
        for mult in [1u8, 3] {
            let s = Session::new(
                1,
                SessionParams {
                    detect_mult: mult,
                    ..fast()
                },
                now,
            )
            .unwrap();
            let iv = Duration::from_millis(1000);
            let (lo, hi) = if mult == 1 { (750, 900) } else { (750, 1000) };
            let mut seen = std::collections::BTreeSet::new();
            for r in 0..200u32 {
                let mut rng = || r;
                let j = s.jittered(iv, &mut rng).as_millis();
                assert!((lo..=hi).contains(&j), "mult {mult}: {j}");
                seen.insert(j);
            }
            assert!(seen.contains(&lo) && seen.contains(&hi));
        }
    }

    #[test]
    fn invalid_params_are_refused() {
        let now = Instant::now();
        let bad = SessionParams {
            detect_mult: 0,
            ..fast()
        };
        assert_eq!(
            Session::new(1, bad, now).unwrap_err(),
            ParamsError::ZeroDetectMult
        );
        let bad = SessionParams {
            desired_min_tx: Duration::ZERO,
            ..fast()
        };
        assert!(matches!(
            Session::new(1, bad, now),
            Err(ParamsError::DesiredMinTx { .. })
        ));
        let mut s = Session::new(1, fast(), now).unwrap();
        let bad = SessionParams {
            required_min_rx: Duration::from_secs(10_000),
            ..fast()
        };
        assert!(s.set_params(bad, now).is_err());
        assert_eq!(s.params(), fast(), "a refused change changes nothing");
    }
}
