//! When the speaker says Converged without any peer finishing a table: the deadline
//! since start (graceful-restart time, or `converge_deadline` without GR) passes, with
//! no peers and with a peer that never comes up. Loopback only; no root needed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use strait_bgp::rib::AcceptAll;
use strait_bgp::speaker::{FibEvent, PeerSpec, Speaker, SpeakerConfig};

fn config() -> SpeakerConfig {
    let mut c = SpeakerConfig::new(64512, Ipv4Addr::new(10, 0, 0, 1));
    c.listen = vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)];
    c.graceful_restart = None;
    c.converge_deadline = Duration::from_secs(1);
    c
}

/// The FIB stream up to and including Converged; the stream must then stay open
/// without a second one.
async fn until_converged(fib: &mut tokio::sync::mpsc::Receiver<FibEvent>) -> Vec<FibEvent> {
    let mut seen = Vec::new();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), fib.recv())
            .await
            .expect("Converged within the bound")
            .expect("stream open");
        let done = ev == FibEvent::Converged;
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn with_no_peers_converged_comes_once_at_the_deadline() {
    let (speaker, mut fib) = Speaker::start(config(), Box::new(AcceptAll)).await.unwrap();
    let start = Instant::now();
    let seen = until_converged(&mut fib).await;
    println!("Converged after {:?} (deadline 1 s)", start.elapsed());
    assert_eq!(seen, vec![FibEvent::Converged]);
    let again = tokio::time::timeout(Duration::from_millis(1500), fib.recv()).await;
    assert!(again.is_err(), "nothing after Converged: {again:?}");
    speaker.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_never_comes_up_does_not_hold_converged_forever() {
    let (speaker, mut fib) = Speaker::start(config(), Box::new(AcceptAll)).await.unwrap();
    // Nothing listens there.
    let mut p = PeerSpec::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 64512);
    p.port = 9;
    speaker.set_peers(vec![p]).await.unwrap();
    let seen = until_converged(&mut fib).await;
    assert_eq!(seen, vec![FibEvent::Converged]);
    let peers = speaker.peers().await;
    assert_eq!(peers.len(), 1);
    assert_ne!(peers[0].state, strait_bgp::fsm::State::Established);
    speaker.shutdown().await;
}

#[tokio::test]
async fn invalid_peer_lists_are_refused_whole() {
    let (speaker, _fib) = Speaker::start(config(), Box::new(AcceptAll)).await.unwrap();
    let a = PeerSpec::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 64512);
    let mut long_key = a.clone();
    long_key.address = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    long_key.md5_key = Some(vec![b'k'; 81]);
    assert!(speaker.set_peers(vec![a.clone(), a.clone()]).await.is_err());
    assert!(speaker.set_peers(vec![a.clone(), long_key]).await.is_err());
    assert!(speaker.peers().await.is_empty(), "nothing applied");
    speaker.set_peers(vec![a.clone()]).await.unwrap();
    assert_eq!(speaker.peers().await.len(), 1);
    let mut renamed = a;
    renamed.description = "renamed".into();
    speaker.set_peers(vec![renamed]).await.unwrap();
    let peers = speaker.peers().await;
    assert_eq!(peers[0].description, "renamed");
    speaker.set_peers(vec![]).await.unwrap();
    assert!(speaker.peers().await.is_empty());
    speaker.shutdown().await;
}
