//! BFD under BGP (RFC 5882) between speakers in network namespaces: a hub peers with
//! two leaves, one session with BFD and one without. Both links are cut at once: the
//! BFD peer's route leaves the FIB stream while the other's is still there (it waits
//! for the hold timer), and the status shows why. The times are printed, not asserted.
//! Needs root (network namespaces); skips visibly otherwise.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{SpeakerNode, Star};
use ipnet::IpNet;
use strait_bgp::bfd;
use strait_bgp::fsm::State;
use strait_bgp::speaker::{BfdParams, PeerSpec, SpeakerConfig};

const ASN: u32 = 64512;
const LIMIT: Duration = Duration::from_secs(60);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn bfd_takes_the_route_out_before_the_hold_timer_would() {
    if !strait_testbeds::require_root("speaker_bfd") {
        return;
    }
    let star = Star::new(2);
    let bfd_of = |i: usize| (i == 1).then(BfdParams::default);
    let mut hub = SpeakerNode::start(
        &star.hub,
        SpeakerConfig::new(ASN, Ipv4Addr::new(10, 0, 0, 254)),
    );
    let leaves: Vec<SpeakerNode> = (1..=2)
        .map(|i| {
            SpeakerNode::start(
                &star.leaves[i - 1],
                SpeakerConfig::new(ASN, Ipv4Addr::new(1, 1, 1, i as u8)),
            )
        })
        .collect();
    let prefix = |i: usize| net(&format!("10.244.{i}.0/24"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (i, leaf) in leaves.iter().enumerate() {
            let i = i + 1;
            leaf.speaker().set_originated(vec![prefix(i)]).await.unwrap();
            let mut p = PeerSpec::new(Star::hub_v4(i), ASN);
            p.bfd = bfd_of(i);
            leaf.speaker().set_peers(vec![p]).await.unwrap();
        }
        let peers = (1..=2)
            .map(|i| {
                let mut p = PeerSpec::new(Star::leaf_v4(i), ASN);
                p.bfd = bfd_of(i);
                p
            })
            .collect();
        hub.speaker().set_peers(peers).await.unwrap();

        let ok = hub
            .wait_fib(LIMIT, |v| {
                v.routes.contains_key(&prefix(1)) && v.routes.contains_key(&prefix(2))
            })
            .await;
        assert!(ok, "hub's FIB: {:?}", hub.view.routes);
        let peers = hub
            .wait_peers(LIMIT, |p| p[0].bfd == Some(bfd::State::Up))
            .await;
        assert_eq!(peers[0].bfd, Some(bfd::State::Up), "{peers:?}");
        assert_eq!(peers[1].bfd, None, "no BFD configured: {peers:?}");

        println!(
            "before the cut: uptimes {:?}",
            peers.iter().map(|p| p.uptime).collect::<Vec<_>>()
        );
        // Cut both links on the hub's side.
        let cut = Instant::now();
        for dev in &star.hub_ifs {
            star.hub.exec_ok(&["ip", "link", "set", dev, "down"]);
        }
        assert!(
            hub.wait_fib(LIMIT, |v| !v.routes.contains_key(&prefix(1)))
                .await
        );
        let with_bfd = cut.elapsed();
        assert!(
            hub.view.routes.contains_key(&prefix(2)),
            "the peer without BFD waits for its hold timer"
        );
        let peers = hub
            .wait_peers(LIMIT, |p| p[0].last_error.is_some())
            .await;
        println!("after BFD down: {peers:#?}");
        assert_eq!(peers[0].bfd, Some(bfd::State::Down));
        assert!(
            peers[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("BFD down")),
            "{peers:?}"
        );
        assert_eq!(peers[1].state, State::Established);

        assert!(
            hub.wait_fib(LIMIT, |v| !v.routes.contains_key(&prefix(2)))
                .await
        );
        let without_bfd = cut.elapsed();
        let peers = hub.speaker().peers().await;
        // Hold Timer Expired (RFC 4271 §6.5).
        assert_eq!(
            peers[1].last_error.as_deref(),
            Some("sent NOTIFICATION 4/0"),
            "{peers:?}"
        );
        println!(
            "link cut → route withdrawn: with BFD {with_bfd:?}, without BFD (hold time {} s) {without_bfd:?}",
            strait_bgp::speaker::DEFAULT_HOLD_TIME
        );
    });
    drop(leaves);
}
