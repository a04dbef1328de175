//! Graceful restart (RFC 4724) between two speakers in network namespaces: when one
//! crashes (no NOTIFICATION, its sockets just close) the other keeps its routes, stale,
//! with no FIB withdrawal; when it comes back announcing less than before, what it did
//! not re-announce is withdrawn at its End-of-RIB and the rest never left the FIB.
//! Needs root (network namespaces); skips visibly otherwise.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{SpeakerNode, Star};
use ipnet::IpNet;
use strait_bgp::fsm::State;
use strait_bgp::speaker::{PeerSpec, SpeakerConfig};

const ASN: u32 = 64512;
const LIMIT: Duration = Duration::from_secs(60);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn leaf_config() -> SpeakerConfig {
    let mut c = SpeakerConfig::new(ASN, Ipv4Addr::new(1, 1, 1, 1));
    c.local_v6 = Some(Star::leaf_v6(1));
    c
}

async fn start_leaf(leaf: &SpeakerNode, originated: Vec<IpNet>) {
    // Origination before the peers: End-of-RIB follows the routes.
    leaf.speaker().set_originated(originated).await.unwrap();
    leaf.speaker()
        .set_peers(vec![PeerSpec::new(Star::hub_v4(1), ASN)])
        .await
        .unwrap();
}

#[test]
fn a_restarting_peers_routes_stay_until_its_end_of_rib() {
    if !strait_testbeds::require_root("speaker_gr") {
        return;
    }
    let star = Star::new(1);
    let mut hub = SpeakerNode::start(
        &star.hub,
        SpeakerConfig::new(ASN, Ipv4Addr::new(10, 0, 0, 254)),
    );
    let kept = [net("10.244.1.0/26"), net("fd00:244:1::/64")];
    let dropped = [net("10.244.2.0/26"), net("fd00:244:2::/64")];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut leaf = SpeakerNode::start(&star.leaves[0], leaf_config());
    let seen = rt.block_on(async {
        hub.speaker()
            .set_peers(vec![PeerSpec::new(Star::leaf_v4(1), ASN)])
            .await
            .unwrap();
        start_leaf(&leaf, kept.iter().chain(&dropped).copied().collect()).await;
        let ok = hub
            .wait_fib(LIMIT, |v| {
                v.converged
                    && kept
                        .iter()
                        .chain(&dropped)
                        .all(|p| v.routes.contains_key(p))
            })
            .await;
        assert!(ok, "hub's FIB: {:?}", hub.view.routes);

        leaf.crash();
        let peers = hub.wait_peers(LIMIT, |p| p[0].last_error.is_some()).await;
        assert_eq!(
            peers[0].last_error.as_deref(),
            Some("connection lost"),
            "{peers:?}"
        );
        assert_ne!(peers[0].state, State::Established);
        let seen = hub.view.history.len();
        // Kept, marked stale, still in the FIB.
        for p in kept.iter().chain(&dropped) {
            let e = hub.speaker().rib(Some(*p)).await;
            assert!(e.len() == 1 && e[0].paths[0].stale, "{p}: {e:?}");
            assert!(e[0].paths[0].in_fib, "{p}: {e:?}");
        }
        seen
    });

    // Back, announcing only `kept`.
    let leaf = SpeakerNode::start(&star.leaves[0], leaf_config());
    rt.block_on(async {
        start_leaf(&leaf, kept.to_vec()).await;
        let ok = hub
            .wait_fib(LIMIT, |v| dropped.iter().all(|p| !v.routes.contains_key(p)))
            .await;
        assert!(ok, "hub's FIB: {:?}", hub.view.routes);
        let since_crash = &hub.view.history[seen..];
        println!("FIB changes since the crash: {since_crash:?}");
        for c in since_crash {
            assert!(
                !(kept.contains(&c.prefix) && c.next_hops.is_empty()),
                "a re-announced route left the FIB: {c:?}"
            );
        }
        for p in kept {
            let e = hub.speaker().rib(Some(p)).await;
            assert!(e.len() == 1 && !e[0].paths[0].stale, "{p}: {e:?}");
            assert!(hub.view.routes.contains_key(&p));
        }
    });
    drop(leaf);
}

#[test]
fn a_restarting_peer_that_does_not_come_back_loses_its_routes_at_its_restart_time() {
    if !strait_testbeds::require_root("speaker_gr") {
        return;
    }
    let star = Star::new(1);
    let mut hub = SpeakerNode::start(
        &star.hub,
        SpeakerConfig::new(ASN, Ipv4Addr::new(10, 0, 0, 254)),
    );
    // The leaf announces a short restart time; the helper keeps its routes that long.
    let mut cfg = leaf_config();
    cfg.graceful_restart = Some(Duration::from_secs(2));
    let mut leaf = SpeakerNode::start(&star.leaves[0], cfg);
    let prefix = net("10.244.1.0/26");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        hub.speaker()
            .set_peers(vec![PeerSpec::new(Star::leaf_v4(1), ASN)])
            .await
            .unwrap();
        start_leaf(&leaf, vec![prefix]).await;
        assert!(
            hub.wait_fib(LIMIT, |v| v.routes.contains_key(&prefix))
                .await
        );

        leaf.crash();
        hub.wait_peers(LIMIT, |p| p[0].last_error.is_some()).await;
        let e = hub.speaker().rib(Some(prefix)).await;
        assert!(e.len() == 1 && e[0].paths[0].stale, "kept as stale: {e:?}");
        let crashed = std::time::Instant::now();
        assert!(
            hub.wait_fib(LIMIT, |v| !v.routes.contains_key(&prefix))
                .await
        );
        println!(
            "stale route withdrawn {:?} after the crash (restart time 2 s)",
            crashed.elapsed()
        );
        assert!(hub.speaker().rib(Some(prefix)).await.is_empty());
    });
}

#[test]
fn a_speaker_stopped_for_restart_keeps_its_routes_at_its_peers() {
    if !strait_testbeds::require_root("speaker_gr") {
        return;
    }
    let star = Star::new(1);
    let mut hub = SpeakerNode::start(
        &star.hub,
        SpeakerConfig::new(ASN, Ipv4Addr::new(10, 0, 0, 254)),
    );
    let mut leaf = SpeakerNode::start(&star.leaves[0], leaf_config());
    let prefixes = [net("10.244.1.0/26"), net("fd00:244:1::/64")];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen = rt.block_on(async {
        hub.speaker()
            .set_peers(vec![PeerSpec::new(Star::leaf_v4(1), ASN)])
            .await
            .unwrap();
        start_leaf(&leaf, prefixes.to_vec()).await;
        let ok = hub
            .wait_fib(LIMIT, |v| prefixes.iter().all(|p| v.routes.contains_key(p)))
            .await;
        assert!(ok, "hub's FIB: {:?}", hub.view.routes);
        let seen = hub.view.history.len();
        leaf.speaker.take().unwrap().shutdown_for_restart().await;
        let peers = hub.wait_peers(LIMIT, |p| p[0].last_error.is_some()).await;
        assert_eq!(
            peers[0].last_error.as_deref(),
            Some("connection lost"),
            "no NOTIFICATION: {peers:?}"
        );
        for p in prefixes {
            let e = hub.speaker().rib(Some(p)).await;
            assert!(e.len() == 1 && e[0].paths[0].stale, "{p}: {e:?}");
        }
        seen
    });
    drop(leaf);
    let leaf = SpeakerNode::start(&star.leaves[0], leaf_config());
    rt.block_on(async {
        start_leaf(&leaf, prefixes.to_vec()).await;
        for p in prefixes {
            let mut fresh = false;
            for _ in 0..600 {
                let e = hub.speaker().rib(Some(p)).await;
                if e.len() == 1 && !e[0].paths[0].stale {
                    fresh = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(fresh, "{p} re-announced");
        }
        // Drain what the FIB stream has: nothing was ever withdrawn.
        hub.wait_fib(Duration::from_millis(500), |_| false).await;
        let since = &hub.view.history[seen..];
        assert!(
            since.iter().all(|c| !c.next_hops.is_empty()),
            "withdrawn during the restart: {since:?}"
        );
        assert!(prefixes.iter().all(|p| hub.view.routes.contains_key(p)));
    });
    drop(leaf);
}
