//! Interop with BIRD 2 (Debian package `bird2`): our speaker in one namespace, BIRD in
//! another, eBGP between 4-octet AS numbers over IPv4 with IPv4 and IPv6 unicast. The
//! session comes up whichever side opens the connection (BIRD active and we passive,
//! then the other way round), and a prefix of each family crosses each way.
//! Needs root and `bird`; skips visibly without them unless STRAIT_REQUIRE_PRIVILEGED=1.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use strait_bgp::codec::{AfiSafi, Capability, Update};
use strait_bgp::fsm;
use strait_bgp::session::{SessionConfig, SessionEvent, SessionHandle, announce_v4, announce_v6};
use strait_testbeds::peers::{BgpDaemon, Bird, Family, Neighbor, PeerConfig, require, wait_until};
mod common;

use common::{NsRuntime, VethPair};

const A4: &str = "10.233.0.1";
const B4: &str = "10.233.0.2";
const A6: &str = "fd00:b9d::1";
const B6: &str = "fd00:b9d::2";
const AS_STRAIT: u32 = 4_200_000_001;
const AS_BIRD: u32 = 4_200_000_002;
/// What BIRD originates (blackhole statics).
const FROM_BIRD: [&str; 2] = ["203.0.113.0/24", "2001:db8:bd::/48"];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// BIRD in namespace b with strait's speaker as its one neighbour, `passive` or
/// connecting itself, with MD5 key `md5`.
fn bird(ns: &strait_testbeds::netns::Netns, passive: bool, md5: Option<&str>) -> Bird {
    let mut strait = Neighbor::new(ip(A4), AS_STRAIT).local(ip(B4));
    if passive {
        strait = strait.passive();
    }
    if let Some(key) = md5 {
        strait = strait.md5(key);
    }
    let config = PeerConfig::new(B4.parse().unwrap(), AS_BIRD)
        .neighbor(strait)
        .originate(&FROM_BIRD)
        .next_hop_v6(B6.parse().unwrap())
        .kernel_fib(false);
    Bird::start(ns, config).expect("start bird")
}

fn config(passive: bool) -> SessionConfig {
    let fsm = fsm::Config {
        local_asn: AS_STRAIT,
        peer_asn: AS_BIRD,
        bgp_id: A4.parse().unwrap(),
        hold_time: 9,
        connect_retry: Duration::from_secs(1),
        idle_hold: Duration::from_secs(1),
        passive,
        capabilities: vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::RouteRefresh,
        ],
    };
    let mut c = SessionConfig::new(fsm, B4.parse().unwrap());
    c.local = Some(A4.parse().unwrap());
    c
}

/// Every prefix announced in the UPDATEs seen until both wanted ones arrived.
fn wait_for_prefixes(
    rt: &tokio::runtime::Runtime,
    s: &mut SessionHandle,
    wanted: &[IpNet],
) -> Vec<Update> {
    let mut seen = Vec::new();
    let mut updates = Vec::new();
    rt.block_on(async {
        let limit = Duration::from_secs(20);
        while !wanted.iter().all(|w| seen.contains(w)) {
            match tokio::time::timeout(limit, s.next_event()).await {
                Ok(Some(SessionEvent::Update(u))) => {
                    seen.extend(u.nlri.iter().map(|n| IpNet::V4(*n)));
                    if let Some(m) = u.mp_reach() {
                        seen.extend_from_slice(&m.nlri);
                    }
                    updates.push(u);
                }
                Ok(Some(other)) => panic!("expected UPDATEs from BIRD, got {other:?}"),
                Ok(None) => panic!("session task ended"),
                Err(_) => panic!("BIRD's prefixes {wanted:?} not received, saw {seen:?}"),
            }
        }
    });
    updates
}

/// `md5`: the key of each side, ours first.
fn scenario(strait_passive: bool, md5: Option<(&str, &str)>) {
    let net = VethPair::new(A4, B4, A6, B6);
    net.up();
    let (a, b) = (&net.a, &net.b);
    for ns in [a, b] {
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
    }

    let node = NsRuntime::start(a);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = config(strait_passive);
    cfg.md5_key = md5.map(|(ours, _)| ours.as_bytes().to_vec());
    let (_listener, mut session) =
        node.speaker(SocketAddr::new(A4.parse::<IpAddr>().unwrap(), 179), cfg);
    let bird = bird(b, !strait_passive, md5.map(|(_, theirs)| theirs));

    if let Some((ours, theirs)) = md5
        && ours != theirs
    {
        // The kernel drops every unsigned-for-us segment: no connection, no OPEN.
        let up = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(8), session.next_event()).await
        });
        assert!(up.is_err(), "an event despite mismatched MD5 keys: {up:?}");
        assert!(
            !bird.established(ip(A4)),
            "{:?}",
            bird.session_state(ip(A4))
        );
        return;
    }
    let negotiated = rt.block_on(async {
        match tokio::time::timeout(Duration::from_secs(30), session.next_event()).await {
            Ok(Some(SessionEvent::Up(n))) => n,
            other => panic!(
                "no session with BIRD: {other:?}, state {:?}",
                session.state()
            ),
        }
    });
    assert!(negotiated.codec.four_octet_as, "4-octet AS with BIRD");
    assert_eq!(negotiated.peer.asn(), AS_BIRD);
    wait_until(
        "BIRD's session Established",
        Duration::from_secs(10),
        Duration::from_millis(100),
        &[&bird],
        || bird.established(ip(A4)),
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // BIRD to us: its static routes, IPv4 as NLRI, IPv6 in MP_REACH_NLRI.
    let from_bird: [IpNet; 2] = FROM_BIRD.map(|p| p.parse().unwrap());
    let updates = wait_for_prefixes(&rt, &mut session, &from_bird);
    assert!(
        updates
            .iter()
            .any(|u| u.nlri.iter().any(|n| IpNet::V4(*n) == from_bird[0]))
    );

    // Us to BIRD.
    let p4: Ipv4Net = "198.51.100.0/24".parse().unwrap();
    let p6: Ipv6Net = "2001:db8:5a::/48".parse().unwrap();
    rt.block_on(session.send_update(announce_v4(AS_STRAIT, true, A4.parse().unwrap(), &[p4])))
        .expect("announce IPv4");
    rt.block_on(session.send_update(announce_v6(AS_STRAIT, true, A6.parse().unwrap(), &[p6])))
        .expect("announce IPv6");
    let ours = [IpNet::V4(p4), IpNet::V6(p6)];
    wait_until(
        "our prefixes in BIRD's table, AS_PATH ours",
        Duration::from_secs(10),
        Duration::from_millis(100),
        &[&bird],
        || {
            ours.iter().all(|p| {
                bird.routes(Family::of(p)).is_ok_and(|rs| {
                    rs.iter()
                        .any(|r| r.prefix == *p && r.as_path == [AS_STRAIT])
                })
            })
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    drop(session);
    drop(bird);
    drop(node);
}

fn require_bird(test: &str) -> bool {
    require(
        test,
        &[("bird", "--version"), ("birdc", "--version")],
        "bird2",
    )
}

#[test]
fn bird_opens_the_session_and_routes_cross_both_ways() {
    if require_bird("bird_opens_the_session") {
        scenario(true, None);
    }
}

#[test]
fn strait_opens_the_session_to_bird_and_routes_cross_both_ways() {
    if require_bird("strait_opens_the_session_to_bird") {
        scenario(false, None);
    }
}

#[test]
fn md5_session_with_bird() {
    if require_bird("md5_session_with_bird") {
        // BIRD connects: the key is checked on our listening socket.
        scenario(true, Some(("strait-bird", "strait-bird")));
    }
}

#[test]
fn md5_mismatch_with_bird_gives_no_session() {
    if require_bird("md5_mismatch_with_bird_gives_no_session") {
        // We connect: our connecting socket signs with a key BIRD does not accept.
        scenario(false, Some(("strait-key", "bird-key")));
    }
}
