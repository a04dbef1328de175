//! The session driver against a scripted peer on loopback (no privileges needed): the
//! peer speaks raw BGP through the codec, so the test sees exactly what our speaker puts
//! on the wire. Covers session set-up over the listener, UPDATE delivery, a malformed
//! header answered by its NOTIFICATION, and connection collisions (RFC 4271 §6.8)
//! resolved each way by the BGP identifiers.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use strait_bgp::codec::{
    self, Capability, Context, Decoded, Message, Notification, Open, PathAttribute, Update, codes,
};
use strait_bgp::fsm::{self, DownReason, State};
use strait_bgp::session::{Listener, SendError, SessionConfig, SessionEvent, SessionHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const OURS: &str = "127.0.0.1";
const PEER: &str = "127.0.0.2";
const OUR_AS: u32 = 65001;
const PEER_AS: u32 = 65002;
const LIMIT: Duration = Duration::from_secs(10);

/// The scripted peer's end of one connection.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    /// How to read UPDATEs: what the OPENs negotiated.
    ctx: Context,
}

impl Wire {
    fn new(stream: TcpStream) -> Self {
        Wire {
            stream,
            buf: Vec::new(),
            ctx: Context::default(),
        }
    }

    async fn send(&mut self, m: &Message) {
        let bytes = codec::encode(m, &Context::default()).unwrap();
        self.stream.write_all(&bytes).await.unwrap();
    }

    /// The next message, or None when the connection closed.
    async fn recv(&mut self) -> Option<Message> {
        tokio::time::timeout(LIMIT, async {
            loop {
                if let Some(len) = codec::frame_length(&self.buf).unwrap()
                    && self.buf.len() >= len
                {
                    let frame: Vec<u8> = self.buf.drain(..len).collect();
                    return match codec::decode(&frame, &self.ctx).unwrap() {
                        Decoded::Message(m) => Some(m),
                        other => panic!("our speaker sent a broken message: {other:?}"),
                    };
                }
                let mut chunk = [0u8; 4096];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .expect("our speaker said nothing within the limit")
    }

    async fn expect_open(&mut self) -> Open {
        match self.recv().await {
            Some(Message::Open(o)) => o,
            other => panic!("expected our OPEN, got {other:?}"),
        }
    }
}

fn peer_open(id: &str) -> Message {
    Message::Open(Open::new(PEER_AS, 9, id.parse().unwrap(), vec![]))
}

fn config(passive: bool, peer_port: u16) -> SessionConfig {
    let fsm = fsm::Config {
        local_asn: OUR_AS,
        peer_asn: PEER_AS,
        bgp_id: "10.0.0.5".parse().unwrap(),
        hold_time: 9,
        connect_retry: Duration::from_secs(1),
        idle_hold: Duration::from_secs(1),
        passive,
        capabilities: vec![],
    };
    let mut c = SessionConfig::new(fsm, PEER.parse().unwrap());
    c.local = Some(OURS.parse().unwrap());
    c.port = peer_port;
    c
}

/// Our speaker: a listener on loopback and the session for PEER registered with it.
fn speaker(config: SessionConfig) -> (Listener, SessionHandle) {
    let listener = Listener::bind(SocketAddr::new(OURS.parse().unwrap(), 0)).unwrap();
    let session = SessionHandle::spawn(config);
    listener
        .register(PEER.parse().unwrap(), None, session.incoming())
        .unwrap();
    (listener, session)
}

async fn connect_from_peer(to: SocketAddr) -> Wire {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(PEER.parse().unwrap(), 0)).unwrap();
    Wire::new(s.connect(to).await.unwrap())
}

async fn next_event(s: &mut SessionHandle) -> SessionEvent {
    tokio::time::timeout(LIMIT, s.next_event())
        .await
        .expect("no session event within the limit")
        .expect("session task alive")
}

#[tokio::test]
async fn updates_are_delivered_and_a_bad_header_gets_its_notification() {
    let (listener, mut session) = speaker(config(true, 179));
    let mut wire = connect_from_peer(listener.local_addr()).await;

    let ours = wire.expect_open().await;
    assert_eq!(ours.asn(), OUR_AS);
    wire.send(&peer_open("10.0.0.9")).await;
    wire.send(&Message::Keepalive).await;
    assert_eq!(wire.recv().await, Some(Message::Keepalive));
    match next_event(&mut session).await {
        SessionEvent::Up(n) => assert_eq!(n.hold_time, 9),
        other => panic!("expected Up, got {other:?}"),
    }
    assert_eq!(session.state(), State::Established);

    let update = Update {
        withdrawn: vec![],
        attributes: vec![
            PathAttribute::Origin(codec::Origin::Igp),
            PathAttribute::AsPath(codec::AsPath {
                segments: vec![codec::AsSegment {
                    kind: codec::SegmentKind::Sequence,
                    asns: vec![PEER_AS],
                }],
            }),
            PathAttribute::NextHop(PEER.parse().unwrap()),
        ],
        nlri: vec!["192.0.2.0/24".parse().unwrap()],
    };
    let ctx = Context {
        four_octet_as: true,
        families: vec![codec::Family::Ipv4Unicast],
        ipv4_via_ipv6: false,
    };
    let bytes = codec::encode(&Message::Update(update.clone()), &ctx).unwrap();
    wire.stream.write_all(&bytes).await.unwrap();
    assert_eq!(next_event(&mut session).await, SessionEvent::Update(update));

    // A header whose marker is not all ones: Connection Not Synchronized (§6.1).
    let mut bad = codec::encode(&Message::Keepalive, &ctx).unwrap();
    bad[0] = 0;
    wire.stream.write_all(&bad).await.unwrap();
    let notification = loop {
        match wire.recv().await {
            Some(Message::Notification(n)) => break n,
            // A keepalive may have been due just before.
            Some(Message::Keepalive) => continue,
            other => panic!("expected a NOTIFICATION, got {other:?}"),
        }
    };
    assert_eq!(
        (notification.code, notification.subcode),
        (codes::MESSAGE_HEADER, 1)
    );
    assert_eq!(
        next_event(&mut session).await,
        SessionEvent::Down(DownReason::Sent(notification))
    );
    assert_eq!(wire.recv().await, None, "the connection is closed after it");
}

/// Both sides open a connection at once; the peer's identifier is `peer_id`. Returns
/// (the connection we opened, the one the peer opened), as the peer sees them, after
/// both carried OPENs both ways.
async fn collide(peer_id: &str) -> (SessionHandle, Listener, Wire, Wire) {
    let peer_listener = TcpListener::bind(SocketAddr::new(PEER.parse().unwrap(), 0))
        .await
        .unwrap();
    let port = peer_listener.local_addr().unwrap().port();
    let (listener, session) = speaker(config(false, port));
    let (ours, _) = tokio::time::timeout(LIMIT, peer_listener.accept())
        .await
        .expect("our speaker connects")
        .unwrap();
    let mut ours = Wire::new(ours);
    let mut theirs = connect_from_peer(listener.local_addr()).await;
    // Our OPEN goes out on both: the second connection must carry one too, since the
    // peer may be waiting for it there.
    ours.expect_open().await;
    theirs.expect_open().await;
    ours.send(&peer_open(peer_id)).await;
    theirs.send(&peer_open(peer_id)).await;
    (session, listener, ours, theirs)
}

/// On the connection that stays: our KEEPALIVE, the peer's, and the session is Up.
async fn finish(session: &mut SessionHandle, kept: &mut Wire) {
    assert_eq!(kept.recv().await, Some(Message::Keepalive));
    kept.send(&Message::Keepalive).await;
    assert!(matches!(next_event(session).await, SessionEvent::Up(_)));
}

/// The last message before the connection closed, KEEPALIVEs passed over.
async fn closed_with(wire: &mut Wire) -> Option<Message> {
    let mut last = None;
    while let Some(m) = wire.recv().await {
        if m != Message::Keepalive {
            last = Some(m);
        }
    }
    last
}

fn cease_collision() -> Option<Message> {
    Some(Message::Notification(Notification::new(codes::CEASE, 7)))
}

#[tokio::test]
async fn collision_keeps_the_connection_of_the_higher_identifier_peer() {
    // The peer's identifier is higher than ours: the connection it opened stays.
    let (mut session, _l, mut ours, mut theirs) = collide("10.0.0.9").await;
    // Our connection may reach OpenConfirm (and send its KEEPALIVE) before the peer's
    // OPEN on the other one is read; then it is closed with Cease all the same.
    assert_eq!(closed_with(&mut ours).await, cease_collision());
    finish(&mut session, &mut theirs).await;
    assert_eq!(session.state(), State::Established);
}

#[tokio::test]
async fn collision_keeps_our_connection_when_our_identifier_is_higher() {
    let (mut session, _l, mut ours, mut theirs) = collide("10.0.0.1").await;
    // Ours stays: the peer's connection is closed, ours goes on to Established.
    assert_eq!(closed_with(&mut theirs).await, cease_collision());
    finish(&mut session, &mut ours).await;
}

/// Up on a fresh passive session, through the listener; the peer's wire back.
async fn established() -> (Listener, SessionHandle, Wire) {
    let (listener, mut session) = speaker(config(true, 179));
    let mut wire = connect_from_peer(listener.local_addr()).await;
    wire.expect_open().await;
    wire.send(&peer_open("10.0.0.9")).await;
    wire.send(&Message::Keepalive).await;
    assert_eq!(wire.recv().await, Some(Message::Keepalive));
    match next_event(&mut session).await {
        SessionEvent::Up(n) => wire.ctx = n.codec,
        other => panic!("expected Up, got {other:?}"),
    }
    (listener, session, wire)
}

#[tokio::test]
async fn a_peer_that_reads_slowly_does_not_stall_the_session() {
    let (_listener, mut session, mut wire) = established().await;
    // ~30 MB of UPDATEs, far more than the socket buffers hold while the peer reads
    // nothing: sending must not block the session.
    const UPDATES: usize = 30_000;
    let prefixes: Vec<ipnet::Ipv4Net> = (0..200u32)
        .map(|i| ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap())
        .collect();
    let update = strait_bgp::session::announce_v4(OUR_AS, true, OURS.parse().unwrap(), &prefixes);
    for _ in 0..UPDATES {
        tokio::time::timeout(LIMIT, session.send_update(update.clone()))
            .await
            .expect("send_update blocked on a full socket")
            .expect("established");
    }
    // The session still reads: an UPDATE from the peer arrives meanwhile.
    let theirs = Update {
        withdrawn: vec!["192.0.2.0/24".parse().unwrap()],
        attributes: vec![],
        nlri: vec![],
    };
    wire.send(&Message::Update(theirs.clone())).await;
    assert_eq!(next_event(&mut session).await, SessionEvent::Update(theirs));
    // And everything queued reaches the peer, in order, whole.
    let mut got = 0;
    while got < UPDATES {
        match wire.recv().await {
            Some(Message::Update(u)) => {
                assert_eq!(u.nlri, prefixes);
                got += 1;
            }
            Some(Message::Keepalive) => {}
            other => panic!("after {got} UPDATEs: {other:?}"),
        }
    }
}

#[tokio::test]
async fn route_refresh_both_ways_only_when_negotiated() {
    // Neither OPEN carries the capability: a request is refused, nothing is sent.
    let (_l, session, _wire) = established().await;
    let err = session
        .request_route_refresh(codec::AfiSafi::IPV4_UNICAST)
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::NoRouteRefresh), "{err}");

    // Both announce it: our request reaches the peer, the peer's reaches the owner.
    let mut cfg = config(true, 179);
    cfg.fsm.capabilities = vec![Capability::RouteRefresh];
    let (listener, mut session) = speaker(cfg);
    let mut wire = connect_from_peer(listener.local_addr()).await;
    wire.expect_open().await;
    let open = Open::new(
        PEER_AS,
        9,
        "10.0.0.9".parse().unwrap(),
        vec![Capability::RouteRefresh],
    );
    wire.send(&Message::Open(open)).await;
    wire.send(&Message::Keepalive).await;
    assert_eq!(wire.recv().await, Some(Message::Keepalive));
    assert!(matches!(
        next_event(&mut session).await,
        SessionEvent::Up(_)
    ));
    session
        .request_route_refresh(codec::AfiSafi::IPV6_UNICAST)
        .await
        .unwrap();
    let request = codec::RouteRefresh {
        afi_safi: codec::AfiSafi::IPV6_UNICAST,
        subtype: 0,
    };
    assert_eq!(wire.recv().await, Some(Message::RouteRefresh(request)));
    wire.send(&Message::RouteRefresh(codec::RouteRefresh {
        afi_safi: codec::AfiSafi::IPV4_UNICAST,
        subtype: 0,
    }))
    .await;
    assert_eq!(
        next_event(&mut session).await,
        SessionEvent::RouteRefresh(codec::AfiSafi::IPV4_UNICAST)
    );
}
