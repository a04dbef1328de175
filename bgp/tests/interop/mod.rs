//! Shared by the interop tests (interop_frr, interop_gobgp, interop_bird): a
//! session-level scenario and a route-reflector scenario, each run against any real
//! daemon of `strait_testbeds::peers`; strait's speaker in a namespace ([`StraitNode`]);
//! small readers of the UPDATEs a session receives.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use strait_bgp::codec::{AfiSafi, Capability, NextHop, PathAttribute, Update};
use strait_bgp::fsm;
use strait_bgp::rib::AcceptAll;
use strait_bgp::session::{
    SessionConfig, SessionEvent, SessionHandle, announce_v4, announce_v6, withdrawal,
};
use strait_bgp::speaker::{
    FibEvent, PeerSpec, PeerStatus, RibEntry, RibPath, Speaker, SpeakerConfig,
};
use strait_testbeds::netns::Netns;
use strait_testbeds::peers::{BgpDaemon, Lan, Neighbor, PeerConfig, fib_routes};
use strait_testbeds::wait_until;

use crate::common::{NsRuntime, VethPair};

pub const A4: &str = "10.234.0.1";
pub const B4: &str = "10.234.0.2";
pub const A6: &str = "fd00:234::1";
pub const B6: &str = "fd00:234::2";
/// Both above 65535: only 4-octet AS numbers (RFC 6793) get these across.
pub const AS_STRAIT: u32 = 4_200_000_001;
pub const AS_PEER: u32 = 4_200_000_002;

pub const PEER_V4: &str = "203.0.113.0/24";
pub const PEER_V6: &str = "2001:db8:f1::/48";
pub const OUR_V4: &str = "198.51.100.0/24";
pub const OUR_V6: &str = "2001:db8:5a::/48";

pub const SECS: fn(u64) -> Duration = Duration::from_secs;
pub const POLL: Duration = Duration::from_millis(100);

pub fn session_config(passive: bool, md5: Option<&str>) -> SessionConfig {
    let fsm = fsm::Config {
        local_asn: AS_STRAIT,
        peer_asn: AS_PEER,
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
    c.md5_key = md5.map(|k| k.as_bytes().to_vec());
    c
}

/// The daemon's side: eBGP to us, originating one prefix of each family.
pub fn peer_config(passive: bool, md5: Option<&str>) -> PeerConfig {
    let mut n = Neighbor::new(A4.parse().unwrap(), AS_STRAIT);
    if passive {
        n = n.passive();
    }
    if let Some(k) = md5 {
        n = n.md5(k);
    }
    PeerConfig::new(B4.parse().unwrap(), AS_PEER)
        .neighbor(n)
        .originate(&[PEER_V4, PEER_V6])
        .next_hop_v6(B6.parse().unwrap())
}

/// The AS numbers of an UPDATE's AS_PATH.
pub fn as_path(u: &Update) -> Vec<u32> {
    u.attributes
        .iter()
        .find_map(|a| match a {
            PathAttribute::AsPath(p) => {
                Some(p.segments.iter().flat_map(|s| s.asns.clone()).collect())
            }
            _ => None,
        })
        .unwrap_or_default()
}

pub fn v4_next_hop(u: &Update) -> Option<Ipv4Addr> {
    u.attributes.iter().find_map(|a| match a {
        PathAttribute::NextHop(n) => Some(*n),
        _ => None,
    })
}

pub fn v6_next_hop(u: &Update) -> Option<Ipv6Addr> {
    match u.mp_reach()?.next_hop {
        NextHop::V6 { global, .. } => Some(global),
        NextHop::V4(_) => None,
    }
}

/// Every UPDATE until all `wanted` prefixes were announced in them.
pub async fn updates_until(
    s: &mut SessionHandle,
    wanted: &[IpNet],
    limit: Duration,
) -> Result<Vec<Update>, String> {
    let mut seen: Vec<IpNet> = vec![];
    let mut updates = vec![];
    let deadline = tokio::time::Instant::now() + limit;
    while !wanted.iter().all(|w| seen.contains(w)) {
        match tokio::time::timeout_at(deadline, s.next_event()).await {
            Ok(Some(SessionEvent::Update(u))) => {
                seen.extend(u.nlri.iter().map(|n| IpNet::V4(*n)));
                if let Some(m) = u.mp_reach() {
                    seen.extend_from_slice(&m.nlri);
                }
                updates.push(u);
            }
            Ok(Some(SessionEvent::RouteRefresh(_))) => {}
            Ok(Some(other)) => return Err(format!("expected UPDATEs, got {other:?}")),
            Ok(None) => return Err("session task ended".into()),
            Err(_) => return Err(format!("{wanted:?} not all received, saw {seen:?}")),
        }
    }
    Ok(updates)
}

/// Which side opens the TCP connection and which MD5 keys are set.
#[derive(Clone, Copy)]
pub struct SessionCase<'a> {
    pub strait_passive: bool,
    /// (ours, theirs)
    pub md5: Option<(&'a str, &'a str)>,
}

/// strait's session (4-octet AS, IPv4 + IPv6 unicast over an IPv4 session) against a
/// real daemon started by `start` in the other namespace: Established on both sides;
/// the daemon's IPv4 and IPv6 prefixes arrive with its AS as the path and its next
/// hops; ours arrive at the daemon with our AS and next hops (and in its kernel FIB
/// under `fib_proto`, when it has one); a withdrawal takes ours away again.
/// With mismatched MD5 keys: no session, ever, on either side.
pub fn session_scenario<D: BgpDaemon>(
    case: SessionCase<'_>,
    fib_proto: Option<&str>,
    start: impl FnOnce(&Netns, PeerConfig) -> D,
) {
    let net = VethPair::new(A4, B4, A6, B6);
    net.up();
    let node = NsRuntime::start(&net.a);
    let cfg = session_config(case.strait_passive, case.md5.map(|(ours, _)| ours));
    let (_listener, mut session) =
        node.speaker(SocketAddr::new(A4.parse::<IpAddr>().unwrap(), 179), cfg);
    let daemon = start(
        &net.b,
        peer_config(!case.strait_passive, case.md5.map(|(_, theirs)| theirs)),
    );
    let a4: IpAddr = A4.parse().unwrap();

    if let Some((ours, theirs)) = case.md5
        && ours != theirs
    {
        // The kernel drops every segment not signed with the key it expects: no
        // connection, so no OPEN and no event at all.
        let ev = node.run(async move {
            let r = tokio::time::timeout(SECS(8), session.next_event()).await;
            (r, session)
        });
        assert!(
            ev.0.is_err(),
            "an event despite mismatched MD5 keys: {:?}",
            ev.0
        );
        let state = daemon.session_state(a4).unwrap();
        assert_ne!(
            state,
            "Established",
            "{} with a wrong MD5 key",
            daemon.kind()
        );
        eprintln!(
            "{} state after 8 s with the wrong MD5 key: {state}",
            daemon.kind()
        );
        return;
    }

    let (negotiated, session) = node.run(async move {
        let r = tokio::time::timeout(SECS(30), session.next_event()).await;
        (r, session)
    });
    let mut session = session;
    let negotiated = match negotiated {
        Ok(Some(SessionEvent::Up(n))) => n,
        other => panic!(
            "no session with {}: {other:?}, our state {:?}, theirs {:?}",
            daemon.kind(),
            session.state(),
            daemon.session_state(a4)
        ),
    };
    assert!(
        negotiated.codec.four_octet_as,
        "4-octet AS with {}",
        daemon.kind()
    );
    assert_eq!(negotiated.peer.asn(), AS_PEER);
    let t = wait_until(
        "the daemon sees the session Established",
        SECS(10),
        POLL,
        || daemon.established(a4),
    )
    .unwrap();
    eprintln!(
        "{}: Established on its side {t:?} after ours",
        daemon.kind()
    );

    // Theirs to us: IPv4 as NLRI, IPv6 in MP_REACH_NLRI with their IPv6 next hop.
    let wanted: Vec<IpNet> = vec![PEER_V4.parse().unwrap(), PEER_V6.parse().unwrap()];
    let (updates, s) = node.run(async move {
        let r = updates_until(&mut session, &wanted, SECS(20)).await;
        (r, session)
    });
    session = s;
    let updates = updates.unwrap_or_else(|e| panic!("from {}: {e}", daemon.kind()));
    let u4 = updates
        .iter()
        .find(|u| u.nlri.iter().any(|n| n.to_string() == PEER_V4))
        .expect("IPv4 UPDATE");
    assert_eq!(as_path(u4), vec![AS_PEER], "AS_PATH of {PEER_V4}");
    assert_eq!(v4_next_hop(u4), Some(B4.parse().unwrap()));
    let u6 = updates
        .iter()
        .find(|u| {
            u.mp_reach()
                .is_some_and(|m| m.nlri.iter().any(|n| n.to_string() == PEER_V6))
        })
        .expect("IPv6 UPDATE");
    assert_eq!(as_path(u6), vec![AS_PEER], "AS_PATH of {PEER_V6}");
    assert_eq!(v6_next_hop(u6), Some(B6.parse().unwrap()));

    // Ours to them.
    let p4: Ipv4Net = OUR_V4.parse().unwrap();
    let p6: Ipv6Net = OUR_V6.parse().unwrap();
    let session = node.run(async move {
        session
            .send_update(announce_v4(AS_STRAIT, true, A4.parse().unwrap(), &[p4]))
            .await
            .expect("announce IPv4");
        session
            .send_update(announce_v6(AS_STRAIT, true, A6.parse().unwrap(), &[p6]))
            .await
            .expect("announce IPv6");
        session
    });
    let t = wait_until("our prefixes at the daemon", SECS(10), POLL, || {
        daemon.paths(OUR_V4).is_ok_and(|p| !p.is_empty())
            && daemon.paths(OUR_V6).is_ok_and(|p| !p.is_empty())
    })
    .unwrap();
    eprintln!("{}: our two prefixes in its RIB after {t:?}", daemon.kind());
    let r4 = &daemon.paths(OUR_V4).unwrap()[0];
    assert_eq!(r4.as_path, vec![AS_STRAIT], "{r4:?}");
    assert_eq!(r4.next_hop, Some(a4), "{r4:?}");
    assert!(r4.best, "{r4:?}");
    let r6 = &daemon.paths(OUR_V6).unwrap()[0];
    assert_eq!(r6.as_path, vec![AS_STRAIT], "{r6:?}");
    assert_eq!(r6.next_hop, Some(A6.parse().unwrap()), "{r6:?}");
    if let Some(proto) = fib_proto {
        let t = wait_until(
            "our prefixes in the daemon's kernel FIB",
            SECS(10),
            POLL,
            || {
                let fib = fib_routes(&net.b, proto);
                fib.iter()
                    .any(|r| r.prefix.to_string() == OUR_V4 && r.gateways == vec![a4])
                    && fib.iter().any(|r| {
                        r.prefix.to_string() == OUR_V6
                            && r.gateways == vec![A6.parse::<IpAddr>().unwrap()]
                    })
            },
        )
        .unwrap();
        eprintln!("{}: both in its kernel FIB after {t:?}", daemon.kind());
    }

    // And away again.
    let session = node.run(async move {
        session
            .send_update(withdrawal(&[IpNet::V4(p4), IpNet::V6(p6)]))
            .await
            .expect("withdraw");
        session
    });
    wait_until(
        "our prefixes withdrawn at the daemon",
        SECS(10),
        POLL,
        || {
            daemon.paths(OUR_V4).is_ok_and(|p| p.is_empty())
                && daemon.paths(OUR_V6).is_ok_and(|p| p.is_empty())
        },
    )
    .unwrap();
    if let Some(proto) = fib_proto {
        wait_until("our prefixes out of the kernel FIB", SECS(10), POLL, || {
            !fib_routes(&net.b, proto)
                .iter()
                .any(|r| [OUR_V4, OUR_V6].contains(&r.prefix.to_string().as_str()))
        })
        .unwrap();
    }
    drop(session);
    drop(daemon);
    drop(node);
}

/// strait's speaker in a namespace of the test's: its runtime, the speaker, and the
/// FIB as its event stream describes it (prefix → next hops).
pub struct StraitNode {
    pub speaker: Arc<Speaker>,
    pub fib: Arc<Mutex<BTreeMap<IpNet, Vec<NextHop>>>>,
    pub rt: NsRuntime,
}

impl StraitNode {
    pub fn start(
        ns: &Netns,
        config: SpeakerConfig,
        peers: Vec<PeerSpec>,
        originated: Vec<IpNet>,
    ) -> StraitNode {
        let rt = NsRuntime::start(ns);
        let fib = Arc::new(Mutex::new(BTreeMap::new()));
        let table = Arc::clone(&fib);
        let speaker = rt.run(async move {
            let (speaker, mut events) = Speaker::start(config, Box::new(AcceptAll))
                .await
                .expect("start the speaker");
            speaker.set_originated(originated).await.expect("originate");
            speaker.set_peers(peers).await.expect("set peers");
            tokio::spawn(async move {
                while let Some(ev) = events.recv().await {
                    if let FibEvent::Changes(changes) = ev {
                        let mut t = table.lock().unwrap();
                        for c in changes {
                            if c.next_hops.is_empty() {
                                t.remove(&c.prefix);
                            } else {
                                t.insert(c.prefix, c.next_hops);
                            }
                        }
                    }
                }
            });
            Arc::new(speaker)
        });
        StraitNode { speaker, fib, rt }
    }

    pub fn peers(&self) -> Vec<PeerStatus> {
        let s = Arc::clone(&self.speaker);
        self.rt.run(async move { s.peers().await })
    }

    pub fn established(&self, peer: IpAddr) -> bool {
        self.peers()
            .iter()
            .any(|p| p.address == peer && p.state_name() == "Established")
    }

    pub fn rib(&self, prefix: &str) -> Vec<RibEntry> {
        let p: IpNet = prefix.parse().unwrap();
        let s = Arc::clone(&self.speaker);
        self.rt.run(async move { s.rib(Some(p)).await })
    }

    /// The best path of `prefix` in the Loc-RIB.
    pub fn best(&self, prefix: &str) -> Option<RibPath> {
        self.rib(prefix)
            .into_iter()
            .flat_map(|e| e.paths)
            .find(|p| p.best)
    }

    /// The next hops the FIB stream last gave for `prefix`.
    pub fn fib(&self, prefix: &str) -> Option<Vec<NextHop>> {
        let p: IpNet = prefix.parse().unwrap();
        self.fib.lock().unwrap().get(&p).cloned()
    }
}

pub fn next_hop_addr(n: &NextHop) -> IpAddr {
    match n {
        NextHop::V4(a) => IpAddr::V4(*a),
        NextHop::V6 { global, .. } => IpAddr::V6(*global),
    }
}

/// strait as route reflector (AS 64512, cluster ID 10.<net>.0.100, not its router ID)
/// for two clients of one kind on a LAN; each client originates an IPv4 /26 and an
/// IPv6 /64 with its own next hops. Each client must get the other's two prefixes
/// with ORIGINATOR_ID = the other's router ID, CLUSTER_LIST = [our cluster ID], the
/// other's next hops unchanged and an empty AS_PATH, and, with `fib_proto`, have them
/// in its kernel FIB via the other client. A withdrawal at one client reaches the other.
pub fn rr_scenario<D: BgpDaemon>(
    net: u8,
    fib_proto: Option<&str>,
    start: impl Fn(&Netns, PeerConfig) -> D,
) {
    const AS: u32 = 64512;
    let lan = Lan::new(3, net);
    let rr = lan.v4(0);
    let cluster = Ipv4Addr::new(10, net, 0, 100);
    let block4 = |i: usize| format!("10.{}.{i}.0/26", net.wrapping_add(100));
    let block6 = |i: usize| format!("fd00:{}:{i}::/64", u16::from(net) + 100);
    let mut cfg = SpeakerConfig::new(AS, rr);
    cfg.cluster_id = Some(cluster);
    cfg.connect_retry = Duration::from_secs(1);
    let peers = (1..3)
        .map(|i| {
            let mut p = PeerSpec::new(lan.ip4(i), AS);
            p.rr_client = true;
            p
        })
        .collect();
    let strait = StraitNode::start(lan.ns(0), cfg, peers, vec![]);
    let clients: Vec<D> = (1..3)
        .map(|i| {
            start(
                lan.ns(i),
                PeerConfig::new(lan.v4(i), AS)
                    .originate(&[&block4(i), &block6(i)])
                    .next_hop_v6(lan.v6(i))
                    .neighbor(Neighbor::new(rr.into(), AS)),
            )
        })
        .collect();
    let t = wait_until("both clients Established", SECS(30), POLL, || {
        clients.iter().all(|c| c.established(rr.into()))
            && (1..3).all(|i| strait.established(lan.ip4(i)))
    })
    .unwrap();
    eprintln!(
        "RR with two {} clients: Established after {t:?}",
        clients[0].kind()
    );

    // Client i gets client j's prefixes, reflected.
    for (i, j) in [(1usize, 2usize), (2, 1)] {
        let c = &clients[i - 1];
        let t = wait_until(
            "the other client's prefixes, reflected",
            SECS(20),
            POLL,
            || {
                c.paths(&block4(j)).is_ok_and(|p| !p.is_empty())
                    && c.paths(&block6(j)).is_ok_and(|p| !p.is_empty())
            },
        )
        .unwrap();
        eprintln!("client {i} has client {j}'s prefixes after {t:?}");
        let r4 = &c.paths(&block4(j)).unwrap()[0];
        assert_eq!(r4.originator_id, Some(lan.v4(j)), "{r4:?}");
        assert_eq!(r4.cluster_list, vec![cluster], "{r4:?}");
        assert_eq!(r4.next_hop, Some(lan.ip4(j)), "{r4:?}");
        assert!(r4.as_path.is_empty(), "{r4:?}");
        assert!(r4.best, "{r4:?}");
        let r6 = &c.paths(&block6(j)).unwrap()[0];
        assert_eq!(r6.originator_id, Some(lan.v4(j)), "{r6:?}");
        assert_eq!(r6.cluster_list, vec![cluster], "{r6:?}");
        assert_eq!(r6.next_hop, Some(IpAddr::V6(lan.v6(j))), "{r6:?}");
        // A client never gets its own routes back.
        let own = c.paths(&block4(i)).unwrap();
        assert!(own.iter().all(|r| r.originator_id.is_none()), "{own:?}");
        if let Some(proto) = fib_proto {
            let ns = lan.ns(i);
            let t = wait_until(
                "reflected prefixes in the client's kernel FIB",
                SECS(10),
                POLL,
                || {
                    let fib = fib_routes(ns, proto);
                    fib.iter().any(|r| {
                        r.prefix.to_string() == block4(j) && r.gateways == vec![lan.ip4(j)]
                    }) && fib.iter().any(|r| {
                        r.prefix.to_string() == block6(j)
                            && r.gateways == vec![IpAddr::V6(lan.v6(j))]
                    })
                },
            )
            .unwrap();
            eprintln!("client {i}'s kernel FIB has them after {t:?}");
        }
    }
    // The RR's own Loc-RIB: both clients' routes, next hops untouched.
    let best = strait.best(&block4(1)).expect("client 1's route at the RR");
    assert_eq!(next_hop_addr(&best.next_hop), lan.ip4(1));
    assert_eq!(best.from_peer, Some(lan.ip4(1)));
    drop(clients);
    drop(strait);
}

/// strait's speaker (a [`PeerSpec`] with `md5_key`, as the agent configures an
/// external peer) and a daemon with `their_key`, iBGP on a LAN, both sides active.
/// Same key: Established and the daemon's prefix arrives in our FIB stream. Different
/// keys: never Established on either side (8 s).
pub fn speaker_md5_scenario<D: BgpDaemon>(
    net: u8,
    our_key: &str,
    their_key: &str,
    start: impl Fn(&Netns, PeerConfig) -> D,
) {
    const AS: u32 = 64512;
    let lan = Lan::new(2, net);
    let mut cfg = SpeakerConfig::new(AS, lan.v4(0));
    cfg.connect_retry = Duration::from_secs(1);
    let mut peer = PeerSpec::new(lan.ip4(1), AS);
    peer.md5_key = Some(our_key.as_bytes().to_vec());
    let strait = StraitNode::start(lan.ns(0), cfg, vec![peer], vec![]);
    let prefix = format!("10.{}.7.0/26", net.wrapping_add(100));
    let daemon = start(
        lan.ns(1),
        PeerConfig::new(lan.v4(1), AS)
            .originate(&[&prefix])
            .neighbor(Neighbor::new(lan.ip4(0), AS).md5(their_key)),
    );
    if our_key != their_key {
        let r = wait_until(
            "a session despite different MD5 keys",
            SECS(8),
            POLL,
            || strait.established(lan.ip4(1)) || daemon.established(lan.ip4(0)),
        );
        assert!(r.is_err(), "Established with different MD5 keys");
        let ours = strait.peers();
        eprintln!(
            "wrong MD5 key, after 8 s: ours {:?}, {}'s {:?}",
            ours.iter().map(|p| p.state_name()).collect::<Vec<_>>(),
            daemon.kind(),
            daemon.session_state(lan.ip4(0))
        );
        return;
    }
    let t = wait_until(
        "an MD5 session, and the daemon's prefix",
        SECS(30),
        POLL,
        || {
            strait.established(lan.ip4(1))
                && daemon.established(lan.ip4(0))
                && strait.fib(&prefix).is_some()
        },
    )
    .unwrap();
    eprintln!(
        "MD5 session with {} and its prefix after {t:?}",
        daemon.kind()
    );
    let nh: Vec<IpAddr> = strait
        .fib(&prefix)
        .unwrap()
        .iter()
        .map(next_hop_addr)
        .collect();
    assert_eq!(nh, vec![lan.ip4(1)]);
}
