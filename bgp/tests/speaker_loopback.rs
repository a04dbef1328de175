//! The speaker against a plain session on loopback (no root): what a peer receives —
//! our originated prefixes with next hop self and LOCAL_PREF, End-of-RIB per family
//! after them when the peer announced graceful restart (RFC 4724), the table again on
//! ROUTE-REFRESH (RFC 2918) — and what the speaker takes from it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use strait_bgp::codec::{
    AfiSafi, Capability, Family, GracefulRestart, GracefulRestartFamily, MpUnreach, NextHop,
    PathAttribute, Update,
};
use strait_bgp::fsm;
use strait_bgp::rib::{AcceptAll, Attrs, RouteUpdate};
use strait_bgp::session::{Listener, SessionConfig, SessionEvent, SessionHandle};
use strait_bgp::speaker::{FibEvent, PeerSpec, Speaker, SpeakerConfig};

const ASN: u32 = 64512;
const SPEAKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const LIMIT: Duration = Duration::from_secs(30);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// A passive plain session on 127.0.0.2 that announces graceful restart and route
/// refresh; the speaker connects to its port.
fn peer() -> (Listener, SessionHandle) {
    let gr = GracefulRestart {
        restart_state: false,
        notification: false,
        restart_time: 120,
        families: [AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST]
            .into_iter()
            .map(|afi_safi| GracefulRestartFamily {
                afi_safi,
                forwarding_preserved: false,
            })
            .collect(),
    };
    let fsm = fsm::Config {
        local_asn: ASN,
        peer_asn: ASN,
        bgp_id: PEER,
        hold_time: 90,
        connect_retry: Duration::from_secs(1),
        idle_hold: Duration::from_secs(1),
        passive: true,
        capabilities: vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::GracefulRestart(gr),
        ],
    };
    let listener = Listener::bind(SocketAddr::new(PEER.into(), 0)).unwrap();
    let session = SessionHandle::spawn(SessionConfig::new(fsm, SPEAKER.into()));
    listener
        .register(SPEAKER.into(), None, session.incoming())
        .unwrap();
    (listener, session)
}

/// What the peer learns until it has seen End-of-RIB for both families.
async fn table(s: &mut SessionHandle) -> HashMap<IpNet, std::sync::Arc<Attrs>> {
    let mut routes = HashMap::new();
    let mut eor = Vec::new();
    while eor.len() < 2 {
        let ev = tokio::time::timeout(LIMIT, s.next_event())
            .await
            .expect("the table within the bound")
            .expect("session alive");
        match ev {
            SessionEvent::Update(u) => match u.end_of_rib() {
                Some(f) => {
                    assert!(!eor.contains(&f), "End-of-RIB twice for {f:?}");
                    eor.push(f);
                }
                None => {
                    assert!(eor.is_empty(), "routes after End-of-RIB: {u:?}");
                    let r = RouteUpdate::from_update(&u);
                    for (ps, a) in r.announced {
                        for p in ps {
                            routes.insert(p, a.clone());
                        }
                    }
                }
            },
            SessionEvent::Up(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
    routes
}

#[tokio::test]
async fn a_peer_gets_our_routes_then_end_of_rib_and_again_on_route_refresh() {
    let (listener, mut peer) = peer();
    let mut cfg = SpeakerConfig::new(ASN, Ipv4Addr::new(10, 0, 0, 1));
    cfg.listen = vec![SocketAddr::new(SPEAKER.into(), 0)];
    cfg.local_v6 = Some("fd00::1".parse().unwrap());
    let (speaker, mut fib) = Speaker::start(cfg, Box::new(AcceptAll)).await.unwrap();
    let ours = [
        net("10.244.1.0/26"),
        net("10.244.2.0/26"),
        net("fd00:244:1::/64"),
    ];
    speaker.set_originated(ours.to_vec()).await.unwrap();
    let mut spec = PeerSpec::new(IpAddr::V4(PEER), ASN);
    spec.port = listener.local_addr().port();
    speaker.set_peers(vec![spec]).await.unwrap();

    let routes = table(&mut peer).await;
    assert_eq!(routes.len(), 3, "{routes:?}");
    let v4 = &routes[&ours[0]];
    assert_eq!(v4.next_hop, NextHop::V4(SPEAKER), "next hop self");
    assert_eq!(v4.local_pref, Some(100));
    assert!(v4.as_path.segments.is_empty(), "iBGP: empty AS_PATH");
    assert!(
        std::sync::Arc::ptr_eq(v4, &routes[&ours[1]]),
        "one UPDATE for both"
    );
    assert_eq!(
        routes[&ours[2]].next_hop,
        NextHop::V6 {
            global: "fd00::1".parse().unwrap(),
            link_local: None
        },
        "the configured IPv6 next hop over an IPv4 session"
    );

    // ROUTE-REFRESH for IPv4: the IPv4 routes come again.
    peer.request_route_refresh(AfiSafi::IPV4_UNICAST)
        .await
        .unwrap();
    let ev = tokio::time::timeout(LIMIT, peer.next_event())
        .await
        .unwrap()
        .unwrap();
    let SessionEvent::Update(u) = ev else {
        panic!("expected the table again, got {ev:?}");
    };
    let mut again: Vec<IpNet> = RouteUpdate::from_update(&u)
        .announced
        .into_iter()
        .flat_map(|(ps, _)| ps)
        .collect();
    again.sort();
    assert_eq!(again, ours[..2].to_vec());

    // The peer's route and its End-of-RIB: in the FIB stream, then Converged.
    let nh = Ipv4Addr::new(127, 0, 0, 2);
    let u = strait_bgp::session::announce_v4(ASN, false, nh, &["10.99.0.0/24".parse().unwrap()]);
    peer.send_update(u).await.unwrap();
    // End-of-RIB: an empty UPDATE for IPv4, an empty MP_UNREACH_NLRI for IPv6.
    peer.send_update(Update::default()).await.unwrap();
    let eor_v6 = Update {
        attributes: vec![PathAttribute::MpUnreach(MpUnreach {
            family: Family::Ipv6Unicast,
            withdrawn: vec![],
        })],
        ..Update::default()
    };
    peer.send_update(eor_v6).await.unwrap();
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
        vec![FibEvent::Changes(vec![strait_bgp::rib::FibChange {
            prefix: net("10.99.0.0/24"),
            next_hops: vec![NextHop::V4(nh)],
        }])],
        "our own prefixes never in the FIB stream"
    );
    let status = speaker.peers().await;
    assert_eq!((status[0].received, status[0].sent), (1, 3), "{status:?}");
    speaker.shutdown().await;
    drop(listener);
}

/// RFC 4724 §4.1: a speaker that restarted (its predecessor's routes are still in the
/// kernel) sets the Restart State bit in its OPEN until it has converged, so a helper
/// sends its table without waiting for ours; a fresh speaker does not.
#[tokio::test]
async fn a_restarted_speaker_sets_the_restart_state_bit() {
    for restarted in [false, true] {
        let (listener, mut peer) = peer();
        let mut cfg = SpeakerConfig::new(ASN, Ipv4Addr::new(10, 0, 0, 1));
        cfg.listen = vec![SocketAddr::new(SPEAKER.into(), 0)];
        cfg.restarted = restarted;
        let (speaker, _fib) = Speaker::start(cfg, Box::new(AcceptAll)).await.unwrap();
        let mut spec = PeerSpec::new(IpAddr::V4(PEER), ASN);
        spec.port = listener.local_addr().port();
        speaker.set_peers(vec![spec]).await.unwrap();
        let negotiated = loop {
            let ev = tokio::time::timeout(LIMIT, peer.next_event())
                .await
                .expect("Established within the bound")
                .expect("session alive");
            if let SessionEvent::Up(n) = ev {
                break n;
            }
        };
        let gr = negotiated
            .peer
            .graceful_restart()
            .expect("the speaker announces graceful restart");
        assert_eq!(
            gr.restart_state, restarted,
            "R bit, restarted = {restarted}"
        );
        assert!(
            gr.families.iter().all(|f| f.forwarding_preserved),
            "forwarding is preserved for every family: {gr:?}"
        );
        speaker.shutdown().await;
        drop(listener);
    }
}
