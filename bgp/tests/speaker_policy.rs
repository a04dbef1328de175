//! A peer's own settings against a plain session on loopback (no root): its import
//! policy (protected prefixes refused, counted and listed; the rest taken), its export
//! prefix list, its prefix limit over refused routes, and its session options (hold
//! time and graceful restart in our OPEN, passive: no connection of ours).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use ipnet::IpNet;
use strait_bgp::codec::{AfiSafi, Capability, GracefulRestart, GracefulRestartFamily, Update};
use strait_bgp::fsm::{self, DownReason};
use strait_bgp::policy::{ImportPolicy, PrefixFilter, PrefixRule, Refusal};
use strait_bgp::rib::{AcceptAll, RouteUpdate};
use strait_bgp::session::{
    Listener, SessionConfig, SessionEvent, SessionHandle, announce_v4, withdrawal,
};
use strait_bgp::speaker::{FibEvent, PeerSpec, PeerStatus, Speaker, SpeakerConfig};

const ASN: u32 = 64512;
const PEER_ASN: u32 = 65001;
const SPEAKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const LIMIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn fsm_config(bgp_id: Ipv4Addr, passive: bool) -> fsm::Config {
    let gr = GracefulRestart {
        restart_state: false,
        notification: false,
        restart_time: 120,
        families: vec![GracefulRestartFamily {
            afi_safi: AfiSafi::IPV4_UNICAST,
            forwarding_preserved: false,
        }],
    };
    fsm::Config {
        local_asn: PEER_ASN,
        peer_asn: ASN,
        bgp_id,
        hold_time: 90,
        connect_retry: Duration::from_secs(1),
        idle_hold: Duration::from_secs(1),
        passive,
        capabilities: vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::GracefulRestart(gr),
        ],
    }
}

/// An eBGP peer (AS 65001) on 127.0.0.2 that waits for the speaker's connection.
fn passive_peer() -> (Listener, SessionHandle) {
    let listener = Listener::bind(SocketAddr::new(PEER.into(), 0)).unwrap();
    let session = SessionHandle::spawn(SessionConfig::new(fsm_config(PEER, true), SPEAKER.into()));
    listener
        .register(SPEAKER.into(), None, session.incoming())
        .unwrap();
    (listener, session)
}

async fn speaker() -> (Speaker, tokio::sync::mpsc::Receiver<FibEvent>) {
    let mut cfg = SpeakerConfig::new(ASN, Ipv4Addr::new(10, 0, 0, 1));
    cfg.listen = vec![SocketAddr::new(SPEAKER.into(), 0)];
    Speaker::start(cfg, Box::new(AcceptAll)).await.unwrap()
}

async fn next(s: &mut SessionHandle) -> SessionEvent {
    tokio::time::timeout(LIMIT, s.next_event())
        .await
        .expect("an event within the bound")
        .expect("session alive")
}

async fn up(s: &mut SessionHandle) -> Box<fsm::Negotiated> {
    loop {
        if let SessionEvent::Up(n) = next(s).await {
            return n;
        }
    }
}

/// Polls the speaker's status of `peer` until `ok` holds.
async fn status_until(
    speaker: &Speaker,
    peer: Ipv4Addr,
    what: &str,
    ok: impl Fn(&PeerStatus) -> bool,
) -> PeerStatus {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let all = speaker.peers().await;
        let s = all.iter().find(|s| s.address == IpAddr::V4(peer)).cloned();
        if let Some(s) = s.filter(&ok) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: status {all:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn permit(prefix: &str) -> PrefixRule {
    PrefixRule {
        permit: true,
        prefix: net(prefix),
        ge: None,
        le: None,
    }
}

#[tokio::test]
async fn a_peers_routes_inside_the_protected_prefixes_are_refused_and_counted() {
    let (listener, mut peer) = passive_peer();
    let (speaker, mut fib) = speaker().await;
    speaker
        .set_originated(vec![net("10.244.1.0/26"), net("10.244.2.0/26")])
        .await
        .unwrap();
    let mut spec = PeerSpec::new(IpAddr::V4(PEER), PEER_ASN);
    spec.port = listener.local_addr().port();
    spec.import = ImportPolicy {
        protected: vec![net("10.244.0.0/16")],
        ..ImportPolicy::default()
    };
    spec.export = PrefixFilter::new(vec![permit("10.244.1.0/26")]);
    spec.hold_time = Some(30);
    spec.graceful_restart = false;
    speaker.set_peers(vec![spec]).await.unwrap();

    let negotiated = up(&mut peer).await;
    assert_eq!(
        negotiated.peer.hold_time, 30,
        "the peer's hold time in our OPEN"
    );
    assert!(
        negotiated.peer.graceful_restart().is_none(),
        "graceful restart off for this peer: no capability"
    );
    // The export list: only 10.244.1.0/26 is sent.
    let SessionEvent::Update(u) = next(&mut peer).await else {
        panic!("expected our table");
    };
    let sent: Vec<IpNet> = RouteUpdate::from_update(&u)
        .announced
        .into_iter()
        .flat_map(|(ps, _)| ps)
        .collect();
    assert_eq!(sent, [net("10.244.1.0/26")]);

    // A /29 of a block (a hijack) and a prefix outside: the first refused.
    let nh = PEER;
    let hijack = net("10.244.2.0/29");
    let outside = net("192.0.2.0/24");
    let u = announce_v4(
        PEER_ASN,
        true,
        nh,
        &[
            "10.244.2.0/29".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap(),
        ],
    );
    peer.send_update(u).await.unwrap();
    let ev = tokio::time::timeout(LIMIT, fib.recv())
        .await
        .expect("a FIB change within the bound")
        .unwrap();
    let FibEvent::Changes(changes) = ev else {
        panic!("expected changes, got {ev:?}");
    };
    let prefixes: Vec<IpNet> = changes.iter().map(|c| c.prefix).collect();
    assert_eq!(prefixes, [outside], "only the prefix outside the pools");
    let s = status_until(&speaker, PEER, "one refused", |s| s.refused == 1).await;
    assert_eq!(s.received, 1, "the refused route is not received: {s:?}");
    let refused = speaker.refused(None).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].prefix, hijack);
    assert_eq!(refused[0].reason, Refusal::Protected(net("10.244.0.0/16")));
    assert!(speaker.rib(Some(hijack)).await.is_empty());

    // Withdrawn by the peer: no longer listed.
    peer.send_update(withdrawal(&[hijack])).await.unwrap();
    status_until(&speaker, PEER, "refused withdrawn", |s| s.refused == 0).await;
    assert!(speaker.refused(Some(IpAddr::V4(PEER))).await.is_empty());
    speaker.shutdown().await;
    drop(listener);
}

#[tokio::test]
async fn more_refused_routes_than_the_prefix_limit_end_the_session() {
    let (listener, mut peer) = passive_peer();
    let (speaker, _fib) = speaker().await;
    let mut spec = PeerSpec::new(IpAddr::V4(PEER), PEER_ASN);
    spec.port = listener.local_addr().port();
    spec.max_prefixes = Some(2);
    spec.import = ImportPolicy {
        protected: vec![net("10.244.0.0/16")],
        ..ImportPolicy::default()
    };
    speaker.set_peers(vec![spec]).await.unwrap();
    up(&mut peer).await;
    let within: Vec<_> = ["10.244.1.0/29", "10.244.1.8/29"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    peer.send_update(announce_v4(PEER_ASN, true, PEER, &within))
        .await
        .unwrap();
    status_until(&speaker, PEER, "two refused", |s| s.refused == 2).await;
    let third = ["10.244.1.16/29".parse().unwrap()];
    peer.send_update(announce_v4(PEER_ASN, true, PEER, &third))
        .await
        .unwrap();
    loop {
        match next(&mut peer).await {
            SessionEvent::Down(DownReason::Received(n)) => {
                assert_eq!((n.code, n.subcode), (6, 1), "Cease, maximum prefixes");
                break;
            }
            SessionEvent::Update(u) if u == Update::default() => {}
            e => panic!("expected the session to end, got {e:?}"),
        }
    }
    let s = status_until(&speaker, PEER, "down", |s| s.last_error.is_some()).await;
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains("maximum prefixes")),
        "{s:?}"
    );
    speaker.shutdown().await;
    drop(listener);
}

/// A free port on 127.0.0.1 for the speaker's listener (the peer connects to it).
fn free_port() -> u16 {
    TcpListener::bind((SPEAKER, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_passive_peer_is_never_connected_to_but_may_connect() {
    const QUIET: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
    // Where the speaker would connect to the passive peer: nothing may arrive here.
    let trap = TcpListener::bind((QUIET, 0)).unwrap();
    trap.set_nonblocking(true).unwrap();
    let (listener, mut active) = passive_peer();
    let port = free_port();
    let mut cfg = SpeakerConfig::new(ASN, Ipv4Addr::new(10, 0, 0, 1));
    cfg.listen = vec![SocketAddr::new(SPEAKER.into(), port)];
    let (speaker, _fib) = Speaker::start(cfg, Box::new(AcceptAll)).await.unwrap();
    let mut connects = PeerSpec::new(IpAddr::V4(PEER), PEER_ASN);
    connects.port = listener.local_addr().port();
    let mut passive = PeerSpec::new(IpAddr::V4(QUIET), PEER_ASN);
    passive.port = trap.local_addr().unwrap().port();
    passive.passive = true;
    speaker.set_peers(vec![connects, passive]).await.unwrap();

    // The other peer, set at the same time, has been connected to and is up.
    up(&mut active).await;
    match trap.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the speaker connected to a passive peer: {other:?}"),
    }
    // The passive peer connects in: the session comes up.
    let mut sc = SessionConfig::new(fsm_config(QUIET, false), SPEAKER.into());
    sc.port = port;
    sc.local = Some(QUIET.into());
    let mut quiet = SessionHandle::spawn(sc);
    up(&mut quiet).await;
    status_until(&speaker, QUIET, "passive peer Established", |s| {
        s.state == fsm::State::Established
    })
    .await;
    speaker.shutdown().await;
    drop(listener);
}
