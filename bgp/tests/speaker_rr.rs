//! Three speakers in network namespaces, iBGP: a route reflector on the hub with two
//! clients on the leaves, both families over IPv4 sessions. What the agent relies on:
//! a client's originated prefixes reach the other client reflected (ORIGINATOR_ID,
//! CLUSTER_LIST) and show up in its FIB stream with the originator's next hop;
//! withdrawing a prefix or removing a peer takes its routes out everywhere; Converged
//! comes once; a peer over its prefix limit is torn down.
//! Needs root (network namespaces); skips visibly otherwise.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::{SpeakerNode, Star};
use ipnet::IpNet;
use strait_bgp::codec::NextHop;
use strait_bgp::fsm::State;
use strait_bgp::speaker::{PeerSpec, SpeakerConfig};

const ASN: u32 = 64512;
const CLUSTER_ID: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
/// Generous bounds for a failing test; nothing here is measured against them.
const LIMIT: Duration = Duration::from_secs(60);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn v4(a: IpAddr) -> NextHop {
    match a {
        IpAddr::V4(a) => NextHop::V4(a),
        IpAddr::V6(_) => unreachable!(),
    }
}

fn v6(a: std::net::Ipv6Addr) -> NextHop {
    NextHop::V6 {
        global: a,
        link_local: None,
    }
}

fn client_config(i: usize) -> SpeakerConfig {
    let mut c = SpeakerConfig::new(ASN, Ipv4Addr::new(1, 1, 1, i as u8));
    c.local_v6 = Some(Star::leaf_v6(i));
    c
}

fn reflector_peers(max_prefixes_c1: Option<usize>) -> Vec<PeerSpec> {
    (1..=2)
        .map(|i| {
            let mut p = PeerSpec::new(Star::leaf_v4(i), ASN);
            p.rr_client = true;
            p.description = format!("client {i}");
            if i == 1 {
                p.max_prefixes = max_prefixes_c1;
            }
            p
        })
        .collect()
}

struct Fabric {
    rr: SpeakerNode,
    c: Vec<SpeakerNode>,
    _star: Star,
}

fn fabric(max_prefixes_c1: Option<usize>) -> Fabric {
    let star = Star::new(2);
    let mut rr_cfg = SpeakerConfig::new(ASN, Ipv4Addr::new(10, 0, 0, 254));
    rr_cfg.cluster_id = Some(CLUSTER_ID);
    let rr = SpeakerNode::start(&star.hub, rr_cfg);
    let c: Vec<SpeakerNode> = (1..=2)
        .map(|i| SpeakerNode::start(&star.leaves[i - 1], client_config(i)))
        .collect();
    Fabric { rr, c, _star: star }.configure(max_prefixes_c1)
}

impl Fabric {
    fn configure(self, max_prefixes_c1: Option<usize>) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Origination first: End-of-RIB then follows the routes.
            for (i, c) in self.c.iter().enumerate() {
                let i = i + 1;
                c.speaker()
                    .set_originated(vec![
                        net(&format!("10.244.{i}.0/26")),
                        net(&format!("fd00:244:{i}::/64")),
                    ])
                    .await
                    .unwrap();
                let mut rr = PeerSpec::new(Star::hub_v4(i), ASN);
                rr.description = "reflector".into();
                c.speaker().set_peers(vec![rr]).await.unwrap();
            }
            self.rr
                .speaker()
                .set_peers(reflector_peers(max_prefixes_c1))
                .await
                .unwrap();
        });
        self
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn reflected_routes_reach_the_other_client_and_leave_again() {
    if !strait_testbeds::require_root("speaker_rr") {
        return;
    }
    let mut f = fabric(None);
    let rt = runtime();
    rt.block_on(async {
        // Client 2 learns client 1's prefixes, next hop client 1 (not the reflector).
        let c1_v4 = net("10.244.1.0/26");
        let c1_v6 = net("fd00:244:1::/64");
        let ok = f.c[1]
            .wait_fib(LIMIT, |v| {
                v.routes.get(&c1_v4) == Some(&vec![v4(Star::leaf_v4(1))])
                    && v.routes.get(&c1_v6) == Some(&vec![v6(Star::leaf_v6(1))])
            })
            .await;
        assert!(ok, "client 2's FIB: {:?}", f.c[1].view.routes);
        let ok = f.c[0]
            .wait_fib(LIMIT, |v| {
                v.routes.get(&net("10.244.2.0/26")) == Some(&vec![v4(Star::leaf_v4(2))])
                    && v.routes.get(&net("fd00:244:2::/64")) == Some(&vec![v6(Star::leaf_v6(2))])
            })
            .await;
        assert!(ok, "client 1's FIB: {:?}", f.c[0].view.routes);
        let ok = f.rr.wait_fib(LIMIT, |v| v.routes.len() == 4).await;
        assert!(ok, "reflector's FIB: {:?}", f.rr.view.routes);
        // Our own prefixes never come back into our FIB.
        assert!(!f.c[0].view.routes.contains_key(&c1_v4));

        let entry = f.c[1].speaker().rib(Some(c1_v4)).await;
        assert_eq!(entry.len(), 1, "{entry:?}");
        let best = &entry[0].paths[0];
        assert!(best.best && best.in_fib);
        assert_eq!(best.from_peer, Some(Star::hub_v4(2)));
        assert_eq!(best.originator_id, Some(Ipv4Addr::new(1, 1, 1, 1)));
        assert_eq!(best.cluster_list, vec![CLUSTER_ID]);
        assert_eq!(best.local_pref, Some(100));
        let own = f.c[0].speaker().rib(Some(c1_v4)).await;
        assert_eq!(own[0].paths[0].from_peer, None, "local route: {own:?}");
        assert!(!own[0].paths[0].in_fib);

        // Every side converges, once (FibView panics on a second one).
        let (c1, c2) = f.c.split_at_mut(1);
        for node in [&mut f.rr, &mut c1[0], &mut c2[0]] {
            assert!(node.wait_fib(LIMIT, |v| v.converged).await, "no Converged");
        }

        let peers = f.rr.speaker().peers().await;
        assert_eq!(peers.len(), 2);
        for p in &peers {
            assert_eq!(p.state, State::Established, "{p:?}");
            assert!(p.rr_client && p.uptime.is_some());
            assert_eq!((p.received, p.accepted, p.sent), (2, 2, 2), "{p:?}");
        }

        // Client 1 stops originating its IPv4 block: gone from client 2 and the RR.
        f.c[0].speaker().set_originated(vec![c1_v6]).await.unwrap();
        assert!(
            f.c[1]
                .wait_fib(LIMIT, |v| !v.routes.contains_key(&c1_v4))
                .await
        );
        assert!(
            f.rr.wait_fib(LIMIT, |v| !v.routes.contains_key(&c1_v4))
                .await
        );
        assert!(
            f.c[1].view.routes.contains_key(&c1_v6),
            "the other family stays"
        );

        // The reflector drops client 1: its remaining route leaves everywhere.
        let only_c2: Vec<PeerSpec> = reflector_peers(None).into_iter().skip(1).collect();
        f.rr.speaker().set_peers(only_c2).await.unwrap();
        assert!(
            f.rr.wait_fib(LIMIT, |v| !v.routes.contains_key(&c1_v6))
                .await
        );
        assert!(
            f.c[1]
                .wait_fib(LIMIT, |v| !v.routes.contains_key(&c1_v6))
                .await
        );
        let peers = f.rr.speaker().peers().await;
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].address, Star::leaf_v4(2));
        assert!(f.rr.speaker().rib(Some(c1_v6)).await.is_empty());
        // Client 1 saw the Cease.
        let c1 = f.c[0]
            .wait_peers(LIMIT, |p| p[0].last_error.is_some())
            .await;
        println!("client 1 after removal: {:?}", c1[0].last_error);
        // Cease / Peer De-configured (RFC 4486).
        assert_eq!(
            c1[0].last_error.as_deref(),
            Some("received NOTIFICATION 6/3")
        );
    });
}

#[test]
fn a_peer_over_its_prefix_limit_is_torn_down_and_its_routes_withdrawn() {
    if !strait_testbeds::require_root("speaker_rr") {
        return;
    }
    // Client 1 announces two prefixes (one per family); the reflector allows one.
    let mut f = fabric(Some(1));
    let rt = runtime();
    rt.block_on(async {
        let peers =
            f.rr.wait_peers(LIMIT, |p| {
                p.iter().any(|p| {
                    p.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("maximum"))
                })
            })
            .await;
        println!("reflector's peers: {peers:#?}");
        let c1 = peers
            .iter()
            .find(|p| p.address == Star::leaf_v4(1))
            .unwrap();
        assert!(
            c1.last_error
                .as_deref()
                .unwrap()
                .contains("maximum prefixes")
        );
        // Client 2 is unaffected and ends up with nothing of client 1 (what was
        // accepted before the limit was reached is withdrawn with the session).
        let ok = f.c[1]
            .wait_fib(LIMIT, |v| {
                v.converged
                    && !v.routes.contains_key(&net("10.244.1.0/26"))
                    && !v.routes.contains_key(&net("fd00:244:1::/64"))
            })
            .await;
        assert!(ok, "client 2's FIB: {:?}", f.c[1].view.routes);
        assert!(
            f.rr.speaker()
                .rib(Some(net("10.244.1.0/26")))
                .await
                .is_empty()
        );
        // It stays down (no table reload every idle hold time) until the hold-down
        // ends; three idle hold times are plenty for a reconnect to show.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let peers = f.rr.speaker().peers().await;
        let c1 = peers
            .iter()
            .find(|p| p.address == Star::leaf_v4(1))
            .unwrap();
        assert_ne!(c1.state, State::Established, "{c1:?}");
        assert!(
            c1.last_error
                .as_deref()
                .unwrap()
                .contains("maximum prefixes")
        );
        // Client 1 was told why (Cease / Maximum Number of Prefixes Reached).
        let c1 = f.c[0]
            .wait_peers(LIMIT, |p| p[0].last_error.is_some())
            .await;
        assert_eq!(
            c1[0].last_error.as_deref(),
            Some("received NOTIFICATION 6/1")
        );
    });
}
