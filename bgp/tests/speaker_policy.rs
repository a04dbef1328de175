//! A peer's own settings against a plain session on loopback (no root): its import
//! policy (inside the protected address space only what is expected is taken; the
//! rest there refused, counted and listed, judged again when the address space
//! changes; outside it everything taken), its export
//! prefix list, its prefix limit over refused routes, and its session options (hold
//! time and graceful restart in our OPEN, passive: no connection of ours).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use ipnet::IpNet;
use strait_bgp::codec::{AfiSafi, Capability, GracefulRestart, GracefulRestartFamily, Update};
use strait_bgp::fsm::{self, DownReason};
use strait_bgp::policy::{ImportPolicy, PrefixFilter, PrefixRule, Protected, Refusal};
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

/// Applies FIB events to `fib` until `done` holds of it.
async fn fib_until(
    events: &mut tokio::sync::mpsc::Receiver<FibEvent>,
    fib: &mut BTreeSet<IpNet>,
    what: &str,
    done: impl Fn(&BTreeSet<IpNet>) -> bool,
) {
    while !done(fib) {
        let ev = tokio::time::timeout(LIMIT, events.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: FIB {fib:?}"))
            .expect("speaker running");
        if let FibEvent::Changes(changes) = ev {
            for c in changes {
                if c.next_hops.is_empty() {
                    fib.remove(&c.prefix);
                } else {
                    fib.insert(c.prefix);
                }
            }
        }
    }
}

fn protected(expected: &[&str]) -> Protected {
    Protected {
        prefixes: vec![net("10.244.0.0/16")],
        expected: expected.iter().map(|p| net(p)).collect(),
    }
}

#[tokio::test]
async fn a_peers_routes_inside_the_protected_prefixes_are_refused_and_counted() {
    let (listener, mut peer) = passive_peer();
    let (speaker, mut events) = speaker().await;
    speaker
        .set_originated(vec![net("10.244.1.0/26"), net("10.244.2.0/26")])
        .await
        .unwrap();
    // 10.244.3.0/26 is another node's block, which a ToR relays.
    speaker
        .set_protected(protected(&["10.244.3.0/26"]))
        .await
        .unwrap();
    let mut spec = PeerSpec::new(IpAddr::V4(PEER), PEER_ASN);
    spec.port = listener.local_addr().port();
    spec.import = ImportPolicy {
        protect: true,
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

    // A /29 of a block (a hijack), a block nobody has, another node's block and a
    // prefix outside the pools.
    let hijack = net("10.244.2.0/29");
    let announced: Vec<_> = [
        "10.244.2.0/29",
        "10.244.4.0/26",
        "10.244.3.0/26",
        "192.0.2.0/24",
    ]
    .iter()
    .map(|p| p.parse().unwrap())
    .collect();
    peer.send_update(announce_v4(PEER_ASN, true, PEER, &announced))
        .await
        .unwrap();
    let mut fib = BTreeSet::new();
    fib_until(&mut events, &mut fib, "taken", |f| f.len() == 2).await;
    assert_eq!(
        fib.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["10.244.3.0/26", "192.0.2.0/24"]
    );
    let s = status_until(&speaker, PEER, "two refused", |s| s.refused == 2).await;
    assert_eq!(s.received, 2, "refused routes are not received: {s:?}");
    let refused = speaker.refused(None).await;
    let listed: Vec<(IpNet, Refusal)> = refused.iter().map(|r| (r.prefix, r.reason)).collect();
    let pool = Refusal::Protected(net("10.244.0.0/16"));
    assert_eq!(listed, [(hijack, pool), (net("10.244.4.0/26"), pool)]);
    assert!(speaker.rib(Some(hijack)).await.is_empty());

    // 10.244.4.0/26 allocated to a node, 10.244.3.0/26 released: judged again at once,
    // the session stays up.
    speaker
        .set_protected(protected(&["10.244.4.0/26"]))
        .await
        .unwrap();
    fib_until(&mut events, &mut fib, "judged again", |f| {
        f.contains(&net("10.244.4.0/26")) && !f.contains(&net("10.244.3.0/26"))
    })
    .await;
    let refused: Vec<IpNet> = speaker
        .refused(None)
        .await
        .iter()
        .map(|r| r.prefix)
        .collect();
    assert_eq!(refused, [hijack, net("10.244.3.0/26")]);
    let s = status_until(&speaker, PEER, "still up", |s| s.refused == 2).await;
    assert_eq!(s.state, fsm::State::Established);

    // Withdrawn by the peer: no longer listed.
    peer.send_update(withdrawal(&[hijack])).await.unwrap();
    status_until(&speaker, PEER, "refused withdrawn", |s| s.refused == 1).await;
    assert_eq!(speaker.refused(Some(IpAddr::V4(PEER))).await.len(), 1);
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
        protect: true,
        ..ImportPolicy::default()
    };
    speaker.set_protected(protected(&[])).await.unwrap();
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
