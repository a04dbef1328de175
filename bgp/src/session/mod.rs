//! The tokio session driver: one task per peer around the pure [`crate::fsm::Fsm`]. It
//! owns the TCP connections (ours and the peer's), frames and decodes the byte stream
//! with the codec under the negotiated [`Context`], runs the FSM's timers on the tokio
//! clock, carries out its actions, resolves connection collisions (RFC 4271 §6.8) with
//! [`crate::fsm::collision_keeps`], and reports to the caller through a channel of
//! [`SessionEvent`]s. The caller sends UPDATEs through the [`SessionHandle`].
//!
//! Connections the peer opens arrive through a [`Listener`], which hands each one to the
//! session registered for its source address.

mod listener;
mod md5;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::codec::{
    self, AfiSafi, AsPath, AsSegment, Context, Decoded, Message, MpReach, MpUnreach, NextHop,
    Notification, Origin, PathAttribute, SegmentKind, Update, codes,
};
use crate::fsm::{self, Action, DownReason, Event, Fsm, Keep, Negotiated, State};

pub use listener::{Incoming, Listener};
pub use md5::MAX_KEY_LEN as MD5_MAX_KEY_LEN;

/// The well-known BGP port.
pub const BGP_PORT: u16 = 179;

/// Cease subcode 7, Connection Collision Resolution (RFC 4486).
const CEASE_COLLISION: u8 = 7;
/// Cease subcode 5, Connection Rejected (RFC 4486): a connection while in Idle.
const CEASE_REJECTED: u8 = 5;

/// One peer.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub fsm: fsm::Config,
    pub peer: IpAddr,
    /// The peer's port for our connections (179 unless testing).
    pub port: u16,
    /// Source address of our connections; the kernel picks one when `None`.
    pub local: Option<IpAddr>,
    /// RFC 2385 key; the same key must be registered with the [`Listener`].
    pub md5_key: Option<Vec<u8>>,
    /// Bound on one TCP connection attempt (the ConnectRetry timer bounds the rest).
    pub connect_timeout: Duration,
}

impl SessionConfig {
    pub fn new(fsm: fsm::Config, peer: IpAddr) -> Self {
        SessionConfig {
            fsm,
            peer,
            port: BGP_PORT,
            local: None,
            md5_key: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// What the session tells its owner, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    Up(Box<Negotiated>),
    Down(DownReason),
    /// An UPDATE from the peer, for Adj-RIB-In.
    Update(Update),
    /// Prefixes to withdraw from Adj-RIB-In: an UPDATE the session survived under
    /// RFC 7606 treat-as-withdraw.
    Withdraw(Vec<IpNet>),
    /// The peer asks for our routes of this family again (RFC 2918).
    RouteRefresh(AfiSafi),
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the session is not established")]
    NotEstablished,
    #[error("the UPDATE does not encode: {0}")]
    Encode(String),
    #[error("the peer did not announce the route refresh capability")]
    NoRouteRefresh,
    #[error("the session task has ended")]
    Gone,
}

enum Command {
    Send(Box<Update>, oneshot::Sender<Result<(), SendError>>),
    /// Fire and forget: the owner sending a table does not wait per UPDATE.
    Queue(Box<Update>),
    Reset(Option<Notification>),
    RouteRefresh(AfiSafi, oneshot::Sender<Result<(), SendError>>),
    Stop,
    StopForRestart,
}

/// The caller's side of a running session. Dropping it stops the session (Cease,
/// Administrative Shutdown to an established peer).
pub struct SessionHandle {
    commands: mpsc::UnboundedSender<Command>,
    incoming: Incoming,
    state: watch::Receiver<State>,
    local: watch::Receiver<Option<SocketAddr>>,
    /// The session's events; take them with [`SessionHandle::next_event`] or move the
    /// receiver out.
    pub events: mpsc::UnboundedReceiver<SessionEvent>,
}

impl SessionHandle {
    /// Start the session (ManualStart) on the current tokio runtime. Sockets for our
    /// connections are created by the session task, in its thread's network namespace.
    pub fn spawn(config: SessionConfig) -> SessionHandle {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (incoming, incoming_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(State::Idle);
        let (local_tx, local) = watch::channel(None);
        let driver = Driver {
            local: local_tx,
            reset: None,
            fsm: Fsm::new(config.fsm.clone()),
            config,
            current: None,
            pending: None,
            connecting: None,
            events: events_tx,
            state: state_tx,
        };
        tokio::spawn(driver.run(command_rx, incoming_rx));
        SessionHandle {
            commands,
            incoming,
            state,
            local,
            events,
        }
    }

    /// Register this with the [`Listener`] for the peer's address.
    pub fn incoming(&self) -> Incoming {
        self.incoming.clone()
    }

    pub fn state(&self) -> State {
        *self.state.borrow()
    }

    /// Our end of the established connection (the next hop self, BFD's source); set
    /// before [`SessionEvent::Up`] is sent, `None` while not Established.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *self.local.borrow()
    }

    /// Watch the FSM state (for `netctl bgp peers` and tests).
    pub fn watch_state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }

    /// Send an UPDATE to the peer (see [`announce_v4`], [`announce_v6`] and [`withdrawal`]). Fails when
    /// the session is not Established: routes are re-sent by the owner on the next Up.
    pub async fn send_update(&self, update: Update) -> Result<(), SendError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Send(Box::new(update), tx))
            .map_err(|_| SendError::Gone)?;
        rx.await.map_err(|_| SendError::Gone)?
    }

    /// Send an UPDATE without waiting for the session task: UPDATEs go out in the order
    /// queued. One that cannot go out (not Established, does not encode) is logged and
    /// dropped; the owner re-sends its Adj-RIB-Out on the next Up anyway.
    pub fn queue_update(&self, update: Update) {
        let _ = self.commands.send(Command::Queue(Box::new(update)));
    }

    /// Drop the connection now, sending `notification` first if given, as if it was
    /// lost; the session then starts again after the idle hold time. The Down event
    /// carries [`DownReason::Sent`] with the notification, or
    /// [`DownReason::ConnectionLost`] without one. For limits (max-prefix) and BFD.
    pub fn reset(&self, notification: Option<Notification>) {
        let _ = self.commands.send(Command::Reset(notification));
    }

    /// Ask the peer to send its routes of `afi_safi` again (RFC 2918), e.g. after an
    /// import policy changed.
    pub async fn request_route_refresh(&self, afi_safi: AfiSafi) -> Result<(), SendError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::RouteRefresh(afi_safi, tx))
            .map_err(|_| SendError::Gone)?;
        rx.await.map_err(|_| SendError::Gone)?
    }

    /// ManualStop: Cease to an established peer, then the task ends.
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }

    /// End the session for a restart of this speaker: the connection closes without a
    /// NOTIFICATION, so a peer that negotiated graceful restart keeps our routes (RFC
    /// 4724 §4.2), and the task ends only once the peer has closed its side too (or
    /// after [`CLOSE_WAIT`]). The peer's close means it has taken the session down
    /// as a restart, so what the caller does next (BFD's AdminDown) cannot be taken
    /// for a failure of a session that is still up. Wait with [`SessionHandle::ended`].
    pub fn stop_for_restart(&self) {
        let _ = self.commands.send(Command::StopForRestart);
    }

    /// Resolves once the session task has ended (its connections closed).
    pub fn ended(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut state = self.state.clone();
        async move { while state.changed().await.is_ok() {} }
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

fn origin_path(local_asn: u32, ebgp: bool) -> Vec<PathAttribute> {
    let path = if ebgp {
        AsPath {
            segments: vec![AsSegment {
                kind: SegmentKind::Sequence,
                asns: vec![local_asn],
            }],
        }
    } else {
        AsPath::default()
    };
    let mut attributes = vec![
        PathAttribute::Origin(Origin::Igp),
        PathAttribute::AsPath(path),
    ];
    // RFC 4271 §5.1.5: LOCAL_PREF goes to internal peers only.
    if !ebgp {
        attributes.push(PathAttribute::LocalPref(100));
    }
    attributes
}

/// An UPDATE announcing IPv4 `prefixes` we originate from `local_asn`, reached through
/// `next_hop`. For eBGP our AS is the path; for iBGP the path is empty.
pub fn announce_v4(local_asn: u32, ebgp: bool, next_hop: Ipv4Addr, prefixes: &[Ipv4Net]) -> Update {
    let mut attributes = origin_path(local_asn, ebgp);
    attributes.push(PathAttribute::NextHop(next_hop));
    Update {
        withdrawn: vec![],
        attributes,
        nlri: prefixes.to_vec(),
    }
}

/// An UPDATE announcing IPv6 `prefixes` in MP_REACH_NLRI (RFC 4760, next hop per
/// RFC 2545), over a session of either transport family.
pub fn announce_v6(local_asn: u32, ebgp: bool, next_hop: Ipv6Addr, prefixes: &[Ipv6Net]) -> Update {
    let mut attributes = origin_path(local_asn, ebgp);
    attributes.push(PathAttribute::MpReach(MpReach {
        family: codec::Family::Ipv6Unicast,
        next_hop: NextHop::V6 {
            global: next_hop,
            link_local: None,
        },
        nlri: prefixes.iter().copied().map(IpNet::V6).collect(),
    }));
    Update {
        withdrawn: vec![],
        attributes,
        nlri: vec![],
    }
}

/// An UPDATE withdrawing `prefixes` (IPv4 in the withdrawn routes field, IPv6 in
/// MP_UNREACH_NLRI).
pub fn withdrawal(prefixes: &[IpNet]) -> Update {
    let withdrawn = prefixes
        .iter()
        .filter_map(|p| match p {
            IpNet::V4(n) => Some(*n),
            IpNet::V6(_) => None,
        })
        .collect();
    let v6: Vec<IpNet> = prefixes
        .iter()
        .filter(|p| matches!(p, IpNet::V6(_)))
        .copied()
        .collect();
    let attributes = if v6.is_empty() {
        vec![]
    } else {
        vec![PathAttribute::MpUnreach(MpUnreach {
            family: codec::Family::Ipv6Unicast,
            withdrawn: v6,
        })]
    };
    Update {
        withdrawn,
        attributes,
        nlri: vec![],
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Outbound,
    Inbound,
}

/// [`SessionHandle::stop_for_restart`] waits this long at most for the peer to close
/// its side after ours.
pub const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A write that makes no progress for this long gives the connection up: the peer
/// stopped reading (its hold timer, or ours, ends the session meanwhile).
const WRITE_STALL: Duration = Duration::from_secs(60);

/// One TCP connection: the read half and the bytes read from it that do not yet make
/// a message, and a queue to a writer task. Writing in its own task means the driver
/// keeps reading (and answering keepalives) while a long burst of UPDATEs drains into
/// a slow peer, and two speakers sending each other full tables cannot deadlock.
struct Conn {
    reader: OwnedReadHalf,
    writer: mpsc::UnboundedSender<Vec<u8>>,
    direction: Direction,
    buf: Vec<u8>,
    /// Our OPEN went out on it while it was the second connection.
    open_sent: bool,
}

impl Conn {
    fn new(stream: TcpStream, direction: Direction) -> Self {
        let (reader, mut w) = stream.into_split();
        let (writer, mut queue) = mpsc::unbounded_channel::<Vec<u8>>();
        // Ends when the Conn is dropped and the queue is drained (so a NOTIFICATION
        // queued last still goes out), then closes our side with a FIN.
        tokio::spawn(async move {
            while let Some(bytes) = queue.recv().await {
                match tokio::time::timeout(WRITE_STALL, w.write_all(&bytes)).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
            }
            let _ = w.shutdown().await;
        });
        Conn {
            reader,
            writer,
            direction,
            buf: Vec::with_capacity(codec::MAX_MESSAGE_LEN),
            open_sent: false,
        }
    }

    /// Best effort: tell the peer why this connection closes.
    async fn cease(self, subcode: u8) {
        let n = Message::Notification(Notification::new(codes::CEASE, subcode));
        if let Ok(bytes) = codec::encode(&n, &Context::default()) {
            self.send(bytes);
        }
    }

    /// Close our side (after what is queued) and wait for the peer to close its side,
    /// reading and dropping whatever it still sends, for `wait` at most.
    async fn close_and_wait(self, wait: Duration) {
        let Conn {
            mut reader, writer, ..
        } = self;
        // The writer task drains its queue, then shuts our side down with a FIN.
        drop(writer);
        let _ = tokio::time::timeout(wait, async {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = reader.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }

    /// Queue `bytes`; false when the writer gave up on the connection.
    fn send(&self, bytes: Vec<u8>) -> bool {
        self.writer.send(bytes).is_ok()
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

struct Driver {
    config: SessionConfig,
    fsm: Fsm,
    /// The connection the FSM runs on.
    current: Option<Conn>,
    /// A second connection to the same peer, where our OPEN is sent and the peer's is
    /// awaited, until the peer's BGP identifier is known from either connection and
    /// §6.8 can pick one. Both are needed: the peer may run its session on this one.
    pending: Option<Conn>,
    connecting: Option<Connecting>,
    events: mpsc::UnboundedSender<SessionEvent>,
    state: watch::Sender<State>,
    local: watch::Sender<Option<SocketAddr>>,
    /// Why the owner asked for [`Command::Reset`]: the Down it causes reports it.
    reset: Option<Option<Notification>>,
}

/// What woke the driver.
enum Wake {
    Command(Option<Command>),
    Incoming(TcpStream),
    Connected(io::Result<TcpStream>),
    Read(io::Result<usize>),
    PendingRead(io::Result<usize>),
    Timer,
}

async fn read_some(conn: &mut Option<Conn>) -> io::Result<usize> {
    match conn {
        Some(c) => {
            let mut chunk = [0u8; 4096];
            let n = c.reader.read(&mut chunk).await?;
            c.buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        }
        None => std::future::pending().await,
    }
}

impl Driver {
    fn now() -> std::time::Instant {
        Instant::now().into_std()
    }

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut incoming: mpsc::UnboundedReceiver<TcpStream>,
    ) {
        let start = self.fsm.handle(Self::now(), Event::ManualStart);
        self.execute(start).await;
        loop {
            let deadline = self.fsm.next_deadline();
            let (connecting, current, pending) =
                (&mut self.connecting, &mut self.current, &mut self.pending);
            let wake = tokio::select! {
                c = commands.recv() => Wake::Command(c),
                Some(s) = incoming.recv() => Wake::Incoming(s),
                r = async {
                    match connecting {
                        Some(c) => c.await,
                        None => std::future::pending().await,
                    }
                } => Wake::Connected(r),
                r = read_some(current) => Wake::Read(r),
                r = read_some(pending) => Wake::PendingRead(r),
                _ = async {
                    match deadline {
                        Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
                        None => std::future::pending().await,
                    }
                } => Wake::Timer,
            };
            match wake {
                Wake::Command(Some(Command::Send(update, reply))) => {
                    let r = self.send_update(*update).await;
                    let _ = reply.send(r);
                }
                Wake::Command(Some(Command::Queue(update))) => {
                    if let Err(e) = self.send_update(*update).await {
                        tracing::debug!(peer = %self.config.peer, error = %e, "bgp: queued UPDATE not sent");
                    }
                }
                Wake::Command(Some(Command::Reset(notification))) => {
                    self.reset_connection(notification).await
                }
                Wake::Command(Some(Command::RouteRefresh(afi_safi, reply))) => {
                    let r = self.send_route_refresh(afi_safi).await;
                    let _ = reply.send(r);
                }
                Wake::Command(None | Some(Command::Stop)) => {
                    let out = self.fsm.handle(Self::now(), Event::ManualStop);
                    self.execute(out).await;
                    return;
                }
                Wake::Command(Some(Command::StopForRestart)) => {
                    self.stop_for_restart().await;
                    return;
                }
                Wake::Incoming(stream) => self.new_connection(stream, Direction::Inbound).await,
                Wake::Connected(r) => {
                    self.connecting = None;
                    match r {
                        Ok(stream) => self.new_connection(stream, Direction::Outbound).await,
                        Err(e) => {
                            tracing::debug!(peer = %self.config.peer, error = %e, "bgp: connect failed");
                            if self.current.is_none() {
                                self.event(Event::TcpConnectionFails).await;
                            }
                        }
                    }
                }
                Wake::Read(Ok(0)) | Wake::Read(Err(_)) => {
                    self.current = None;
                    self.event(Event::TcpConnectionFails).await;
                }
                Wake::Read(Ok(_)) => self.drain_messages().await,
                Wake::PendingRead(Ok(0)) | Wake::PendingRead(Err(_)) => self.pending = None,
                Wake::PendingRead(Ok(_)) => self.pending_open().await,
                Wake::Timer => {
                    let out = self.fsm.poll(Self::now());
                    self.execute(out).await;
                }
            }
        }
    }

    async fn event(&mut self, e: Event) {
        let out = self.fsm.handle(Self::now(), e);
        self.execute(out).await;
    }

    fn context(&self) -> Context {
        self.fsm
            .negotiated()
            .map_or_else(Context::default, |n| n.codec.clone())
    }

    /// Decode every whole message in the buffer and feed it to the FSM.
    async fn drain_messages(&mut self) {
        loop {
            let Some(conn) = self.current.as_mut() else {
                return;
            };
            let len = match codec::frame_length(&conn.buf) {
                Ok(Some(len)) if conn.buf.len() >= len => len,
                Ok(_) => return,
                Err(e) => {
                    self.event(Event::DecodeError(e)).await;
                    return;
                }
            };
            let frame: Vec<u8> = conn.buf.drain(..len).collect();
            let event = match codec::decode(&frame, &self.context()) {
                Ok(Decoded::Message(m)) => Event::Message(m),
                Ok(Decoded::TreatAsWithdraw { withdrawn, error }) => {
                    tracing::warn!(peer = %self.config.peer, %error, "bgp: UPDATE treated as withdraw");
                    Event::TreatAsWithdraw(withdrawn)
                }
                Err(e) => Event::DecodeError(e),
            };
            self.event(event).await;
        }
    }

    async fn send_update(&mut self, update: Update) -> Result<(), SendError> {
        if self.fsm.state() != State::Established {
            return Err(SendError::NotEstablished);
        }
        let bytes = codec::encode(&Message::Update(update), &self.context())
            .map_err(|e| SendError::Encode(e.to_string()))?;
        self.write(&bytes).await;
        self.fsm.update_sent(Self::now());
        Ok(())
    }

    async fn reset_connection(&mut self, notification: Option<Notification>) {
        let Some(conn) = self.current.take() else {
            return;
        };
        if let Some(n) = &notification
            && let Ok(bytes) = codec::encode(&Message::Notification(n.clone()), &self.context())
        {
            // The writer drains its queue before closing, so this goes out last.
            conn.send(bytes);
        }
        drop(conn);
        self.reset = Some(notification);
        self.event(Event::TcpConnectionFails).await;
        self.reset = None;
    }

    /// As a lost connection (the Down says so, no NOTIFICATION goes out), then
    /// ManualStop from Idle, which sends nothing; then wait for the peer's close.
    async fn stop_for_restart(&mut self) {
        let current = self.current.take();
        let pending = self.pending.take();
        self.connecting = None;
        if current.is_some() {
            self.reset = Some(None);
            self.event(Event::TcpConnectionFails).await;
            self.reset = None;
        }
        let out = self.fsm.handle(Self::now(), Event::ManualStop);
        self.execute(out).await;
        let wait = |c: Option<Conn>| async move {
            if let Some(c) = c {
                c.close_and_wait(CLOSE_WAIT).await;
            }
        };
        tokio::join!(wait(current), wait(pending));
    }

    async fn send_route_refresh(&mut self, afi_safi: AfiSafi) -> Result<(), SendError> {
        let Some(n) = self
            .fsm
            .negotiated()
            .filter(|_| self.fsm.state() == State::Established)
        else {
            return Err(SendError::NotEstablished);
        };
        if !n.route_refresh {
            return Err(SendError::NoRouteRefresh);
        }
        let m = Message::RouteRefresh(codec::RouteRefresh {
            afi_safi,
            subtype: 0,
        });
        let bytes =
            codec::encode(&m, &self.context()).map_err(|e| SendError::Encode(e.to_string()))?;
        self.write(&bytes).await;
        Ok(())
    }

    /// Write to the current connection; a failed write is a lost connection.
    async fn write(&mut self, bytes: &[u8]) {
        let Some(conn) = self.current.as_mut() else {
            return;
        };
        if !conn.send(bytes.to_vec()) {
            tracing::debug!(peer = %self.config.peer, "bgp: write failed");
            self.current = None;
            // Boxed: execute → write → event → execute recurses.
            Box::pin(self.event(Event::TcpConnectionFails)).await;
        }
    }

    async fn new_connection(&mut self, stream: TcpStream, direction: Direction) {
        let _ = stream.set_nodelay(true);
        let conn = Conn::new(stream, direction);
        if self.fsm.state() == State::Idle && direction == Direction::Inbound {
            // Idle here only waits out the idle hold after a drop (a stopped session's
            // task has ended). The peer is back, so start now rather than turn it
            // away: two speakers that dropped together would otherwise keep rejecting
            // each other, each connecting while the other waits in Idle.
            let out = self.fsm.handle(Self::now(), Event::ManualStart);
            self.execute(out).await;
        }
        match self.fsm.state() {
            State::Connect | State::Active if self.current.is_none() => {
                self.current = Some(conn);
                self.event(Event::TcpConnectionConfirmed).await;
            }
            // Our own connection finishing after a drop: not now.
            State::Idle => conn.cease(CEASE_REJECTED).await,
            // §6.8: a connection in Established wins over any new one.
            State::Established => conn.cease(CEASE_COLLISION).await,
            State::OpenConfirm => match self.fsm.negotiated() {
                Some(n) => {
                    let (id, asn) = (n.peer.bgp_id, n.peer.asn());
                    self.resolve_collision(conn, id, asn).await
                }
                None => conn.cease(CEASE_COLLISION).await,
            },
            // The peer's identifier is not known yet: keep the connection until it is.
            _ if self.pending.is_none() => {
                let mut conn = conn;
                let open = Message::Open(self.config.fsm.open());
                if let Ok(bytes) = codec::encode(&open, &Context::default())
                    && conn.send(bytes)
                {
                    conn.open_sent = true;
                    self.pending = Some(conn);
                }
            }
            _ => conn.cease(CEASE_COLLISION).await,
        }
    }

    /// The second connection's first message: the peer's OPEN names its identifier,
    /// which decides the collision; anything else ends that connection.
    async fn pending_open(&mut self) {
        let Some(conn) = self.pending.as_ref() else {
            return;
        };
        let len = match codec::frame_length(&conn.buf) {
            Ok(Some(len)) if conn.buf.len() >= len => len,
            Ok(_) => return,
            Err(_) => {
                self.pending = None;
                return;
            }
        };
        match codec::decode(&conn.buf[..len], &Context::default()) {
            Ok(Decoded::Message(Message::Open(open))) => {
                let other = self.pending.take().expect("checked above");
                // The OPEN stays in the buffer: if this connection wins, the FSM reads it.
                self.resolve_collision(other, open.bgp_id, open.asn()).await;
            }
            _ => self.pending = None,
        }
    }

    /// §6.8: keep the connection opened by the side with the higher BGP identifier,
    /// close the other with Cease / Connection Collision Resolution.
    async fn resolve_collision(&mut self, other: Conn, peer_id: Ipv4Addr, peer_asn: u32) {
        let Some(current) = self.current.as_ref() else {
            return other.cease(CEASE_COLLISION).await;
        };
        let keep = fsm::collision_keeps(
            self.config.fsm.bgp_id,
            self.config.fsm.local_asn,
            peer_id,
            peer_asn,
        );
        let keep = match keep {
            Keep::Outbound => Direction::Outbound,
            Keep::Inbound => Direction::Inbound,
        };
        if current.direction == keep || other.direction != keep {
            return other.cease(CEASE_COLLISION).await;
        }
        tracing::debug!(peer = %self.config.peer, "bgp: collision, switching connection");
        if let Some(old) = self.current.take() {
            old.cease(CEASE_COLLISION).await;
        }
        // A fresh FSM for the connection that stays: the session was never up, so
        // nothing is lost, and it avoids the idle hold time of a dropped connection.
        self.fsm = Fsm::new(self.config.fsm.clone());
        let _ = self.fsm.handle(Self::now(), Event::ManualStart);
        self.connecting = None;
        let open_sent = other.open_sent;
        self.current = Some(other);
        let mut out = self.fsm.handle(Self::now(), Event::TcpConnectionConfirmed);
        if open_sent {
            out.retain(|a| !matches!(a, Action::Send(Message::Open(_))));
        }
        Box::pin(self.execute(out)).await;
        // The peer's OPEN and whatever followed may already be in the buffer.
        Box::pin(self.drain_messages()).await;
    }

    fn connect(&mut self) {
        let peer = SocketAddr::new(self.config.peer, self.config.port);
        let local = self.config.local;
        let key = self.config.md5_key.clone();
        let limit = self.config.connect_timeout;
        self.connecting = Some(Box::pin(async move {
            let socket = match peer {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            if let Some(key) = &key {
                md5::set_key(&socket, peer.ip(), key)?;
            }
            if let Some(local) = local {
                socket.bind(SocketAddr::new(local, 0))?;
            }
            tokio::time::timeout(limit, socket.connect(peer))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
        }));
    }

    fn publish(&mut self) {
        let state = self.fsm.state();
        let local = match (&self.current, state) {
            (Some(c), State::Established) => c.reader.local_addr().ok(),
            _ => None,
        };
        self.local.send_if_modified(|l| {
            let changed = *l != local;
            *l = local;
            changed
        });
        self.state.send_replace(state);
    }

    async fn execute(&mut self, actions: Vec<Action>) {
        // The FSM already is in the state these actions lead to: publish it before the
        // events, so an owner woken by Up or Down reads the state that goes with it.
        self.publish();
        for action in actions {
            match action {
                Action::Connect => self.connect(),
                Action::Disconnect => {
                    self.current = None;
                    self.connecting = None;
                }
                Action::Send(m) => match codec::encode(&m, &self.context()) {
                    Ok(bytes) => self.write(&bytes).await,
                    Err(e) => {
                        tracing::error!(peer = %self.config.peer, error = %e, "bgp: message does not encode")
                    }
                },
                Action::SessionUp(n) => {
                    tracing::info!(peer = %self.config.peer, "bgp: session established");
                    let _ = self.events.send(SessionEvent::Up(n));
                }
                Action::SessionDown(r) => {
                    let r = match (&self.reset, r) {
                        (Some(Some(n)), DownReason::ConnectionLost) => DownReason::Sent(n.clone()),
                        (_, r) => r,
                    };
                    tracing::info!(peer = %self.config.peer, reason = ?r, "bgp: session down");
                    let _ = self.events.send(SessionEvent::Down(r));
                }
                Action::Deliver(u) => {
                    let _ = self.events.send(SessionEvent::Update(u));
                }
                Action::Withdraw(p) => {
                    let _ = self.events.send(SessionEvent::Withdraw(p));
                }
                Action::RouteRefreshRequested(a) => {
                    let _ = self.events.send(SessionEvent::RouteRefresh(a));
                }
            }
        }
        self.publish();
        if self.fsm.state() == State::OpenConfirm
            && let Some(peer) = self.fsm.negotiated().map(|n| (n.peer.bgp_id, n.peer.asn()))
            && let Some(other) = self.pending.take()
        {
            Box::pin(self.resolve_collision(other, peer.0, peer.1)).await;
        }
        if self.fsm.state() == State::Idle {
            // Nothing to collide with any more.
            self.pending = None;
        }
    }
}
