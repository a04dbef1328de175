//! RFC 8950 through the speaker, on IPv6 loopback (no root): an IPv6-only speaker (no
//! IPv4 address of its own) offers the Extended Next Hop capability, announces its
//! IPv4 prefixes with its IPv6 session address as next hop to a peer that offered it
//! too, and hands IPv4 routes learned with an IPv6 next hop to the FIB. A peer that did
//! not offer it gets no IPv4 route from that speaker (it has no next hop to give), and
//! the session carries IPv6 as before.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use strait_bgp::codec::{
    AfiSafi, Capability, ExtendedNextHop, Family, GracefulRestart, GracefulRestartFamily, MpReach,
    MpUnreach, NextHop, Origin, PathAttribute, Update,
};
use strait_bgp::fsm;
use strait_bgp::rib::{AcceptAll, Attrs, FibChange, RouteUpdate};
use strait_bgp::session::{Listener, SessionConfig, SessionEvent, SessionHandle};
use strait_bgp::speaker::{FibEvent, PeerSpec, Speaker, SpeakerConfig};

const ASN: u32 = 64512;
const LOOPBACK: Ipv6Addr = Ipv6Addr::LOCALHOST;
const LIMIT: Duration = Duration::from_secs(30);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A passive plain session on `[::1]` (graceful restart, so it sees End-of-RIB),
/// offering IPv4 unicast via IPv6 next hops when `rfc8950`.
fn peer(rfc8950: bool) -> (Listener, SessionHandle) {
    let families = [AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST];
    let mut capabilities = vec![
        Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
        Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
        Capability::GracefulRestart(GracefulRestart {
            restart_state: false,
            notification: false,
            restart_time: 120,
            families: families
                .into_iter()
                .map(|afi_safi| GracefulRestartFamily {
                    afi_safi,
                    forwarding_preserved: false,
                })
                .collect(),
        }),
    ];
    if rfc8950 {
        capabilities.push(Capability::ExtendedNextHop(vec![
            ExtendedNextHop::IPV4_UNICAST_VIA_IPV6,
        ]));
    }
    let fsm = fsm::Config {
        local_asn: ASN,
        peer_asn: ASN,
        bgp_id: Ipv4Addr::new(10, 0, 0, 2),
        hold_time: 90,
        connect_retry: Duration::from_secs(1),
        idle_hold: Duration::from_secs(1),
        passive: true,
        capabilities,
    };
    let listener = Listener::bind(SocketAddr::new(LOOPBACK.into(), 0)).unwrap();
    let session = SessionHandle::spawn(SessionConfig::new(fsm, LOOPBACK.into()));
    listener
        .register(LOOPBACK.into(), None, session.incoming())
        .unwrap();
    (listener, session)
}

/// What the peer learns until End-of-RIB for both families, and whether the session
/// negotiated IPv4 via IPv6.
async fn table(s: &mut SessionHandle) -> (HashMap<IpNet, Arc<Attrs>>, bool) {
    let mut routes = HashMap::new();
    let mut eor = Vec::new();
    let mut negotiated = None;
    while eor.len() < 2 {
        let ev = tokio::time::timeout(LIMIT, s.next_event())
            .await
            .expect("the table within the bound")
            .expect("session alive");
        match ev {
            SessionEvent::Up(n) => negotiated = Some(n.codec.ipv4_via_ipv6),
            SessionEvent::Update(u) => match u.end_of_rib() {
                Some(f) => eor.push(f),
                None => {
                    for (ps, a) in RouteUpdate::from_update(&u).announced {
                        for p in ps {
                            routes.insert(p, a.clone());
                        }
                    }
                }
            },
            e => panic!("unexpected {e:?}"),
        }
    }
    (routes, negotiated.expect("Up before the routes"))
}

/// A speaker with no IPv4 address of its own: the session's IPv6 address is its only
/// next hop.
async fn ipv6_only_speaker(peer_port: u16) -> (Speaker, tokio::sync::mpsc::Receiver<FibEvent>) {
    speaker(peer_port, None).await
}

async fn speaker(
    peer_port: u16,
    local_v4: Option<Ipv4Addr>,
) -> (Speaker, tokio::sync::mpsc::Receiver<FibEvent>) {
    let mut cfg = SpeakerConfig::new(ASN, Ipv4Addr::new(10, 0, 0, 1));
    cfg.listen = vec![SocketAddr::new(LOOPBACK.into(), 0)];
    assert!(cfg.extended_next_hop, "offered by default");
    assert_eq!((cfg.local_v4, cfg.local_v6), (None, None));
    cfg.local_v4 = local_v4;
    let (speaker, fib) = Speaker::start(cfg, Box::new(AcceptAll)).await.unwrap();
    speaker
        .set_originated(vec![net("10.244.1.0/26"), net("fd00:244:1::/64")])
        .await
        .unwrap();
    let mut spec = PeerSpec::new(IpAddr::V6(LOOPBACK), ASN);
    spec.port = peer_port;
    speaker.set_peers(vec![spec]).await.unwrap();
    (speaker, fib)
}

#[tokio::test]
async fn an_ipv6_only_speaker_sends_and_takes_ipv4_routes_via_ipv6_where_negotiated() {
    let (listener, mut peer) = peer(true);
    let (speaker, mut fib) = ipv6_only_speaker(listener.local_addr().port()).await;
    let (routes, negotiated) = table(&mut peer).await;
    assert!(negotiated, "both offered IPv4 unicast via IPv6");
    let via_us = NextHop::V6 {
        global: LOOPBACK,
        link_local: None,
    };
    assert_eq!(routes.len(), 2, "{routes:?}");
    assert_eq!(routes[&net("10.244.1.0/26")].next_hop, via_us);
    assert_eq!(routes[&net("fd00:244:1::/64")].next_hop, via_us);

    // The peer's IPv4 route with an IPv6 next hop (global and link-local, as BIRD and
    // FRR send on a shared link) reaches the FIB stream as it is.
    let theirs = NextHop::V6 {
        global: "fd00::2".parse().unwrap(),
        link_local: Some("fe80::2".parse().unwrap()),
    };
    let announce = Update {
        withdrawn: vec![],
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(Default::default()),
            PathAttribute::LocalPref(100),
            PathAttribute::MpReach(MpReach {
                family: Family::Ipv4Unicast,
                next_hop: theirs,
                nlri: vec![net("10.99.0.0/24")],
            }),
        ],
        nlri: vec![],
    };
    peer.send_update(announce).await.unwrap();
    peer.send_update(Update::default()).await.unwrap();
    peer.send_update(Update {
        attributes: vec![PathAttribute::MpUnreach(MpUnreach {
            family: Family::Ipv6Unicast,
            withdrawn: vec![],
        })],
        ..Update::default()
    })
    .await
    .unwrap();
    let mut got = Vec::new();
    loop {
        let ev = tokio::time::timeout(LIMIT, fib.recv())
            .await
            .expect("FIB events within the bound")
            .unwrap();
        if ev == FibEvent::Converged {
            break;
        }
        got.push(ev);
    }
    assert_eq!(
        got,
        vec![FibEvent::Changes(vec![FibChange {
            prefix: net("10.99.0.0/24"),
            next_hops: vec![theirs],
        }])]
    );
    speaker.shutdown().await;
    drop(listener);
}

#[tokio::test]
async fn a_peer_without_rfc_8950_gets_no_ipv4_routes_from_an_ipv6_only_speaker() {
    let (listener, mut peer) = peer(false);
    let (speaker, _fib) = ipv6_only_speaker(listener.local_addr().port()).await;
    let (routes, negotiated) = table(&mut peer).await;
    assert!(!negotiated);
    let prefixes: Vec<&IpNet> = routes.keys().collect();
    assert_eq!(prefixes, [&net("fd00:244:1::/64")], "IPv6 only");
    let status = speaker.peers().await;
    assert_eq!(status[0].state_name(), "Established", "{status:?}");
    assert_eq!(status[0].sent, 1);
    speaker.shutdown().await;
    drop(listener);
}

/// A speaker that has an IPv4 address too: over an IPv6 session that negotiated RFC
/// 8950 its IPv4 routes go via the session's IPv6 address (as FRR and BIRD send them;
/// the peer may have no route to our IPv4 address), and with IPv4 next hop self where
/// the peer did not offer it.
#[tokio::test]
async fn over_ipv6_ipv4_goes_via_the_session_address_where_negotiated_else_via_ipv4() {
    let ours = Ipv4Addr::new(192, 0, 2, 1);
    for rfc8950 in [true, false] {
        let (listener, mut peer) = peer(rfc8950);
        let (speaker, _fib) = speaker(listener.local_addr().port(), Some(ours)).await;
        let (routes, negotiated) = table(&mut peer).await;
        assert_eq!(negotiated, rfc8950);
        let want = if rfc8950 {
            NextHop::V6 {
                global: LOOPBACK,
                link_local: None,
            }
        } else {
            NextHop::V4(ours)
        };
        assert_eq!(routes[&net("10.244.1.0/26")].next_hop, want, "{rfc8950}");
        speaker.shutdown().await;
        drop(listener);
    }
}
