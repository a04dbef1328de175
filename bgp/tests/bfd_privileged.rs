//! BFD between two network namespaces joined by a veth, on real sockets: sessions come
//! Up over IPv4 and IPv6, a forged packet without TTL 255 changes nothing (GTSM), a cut
//! link is detected by both sides, a removed peer signals AdminDown.
//! Needs root (network namespaces); skips visibly otherwise.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use strait_bgp::bfd::{Bfd, BfdState, ControlPacket, Diagnostic, SessionParams, State};
mod common;

use common::VethPair;
use strait_testbeds::netns::Netns;
use tokio::sync::{mpsc, oneshot, watch};

enum NodeCmd {
    AddPeer(IpAddr, IpAddr, oneshot::Sender<watch::Receiver<BfdState>>),
    RemovePeer(IpAddr, IpAddr, oneshot::Sender<()>),
}

/// A BFD engine running inside a namespace: an OS thread that entered it and runs a
/// current-thread runtime, so every socket the engine opens lives in that namespace.
struct Node {
    commands: Option<mpsc::UnboundedSender<NodeCmd>>,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    fn start(ns: &Netns, params: SessionParams) -> Self {
        let path = ns.path();
        let (tx, mut rx) = mpsc::unbounded_channel::<NodeCmd>();
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut bfd = Bfd::new();
                while let Some(cmd) = rx.recv().await {
                    match cmd {
                        NodeCmd::AddPeer(local, remote, reply) => {
                            let state = bfd.add_peer(local, remote, params).expect("add_peer");
                            let _ = reply.send(state);
                        }
                        NodeCmd::RemovePeer(local, remote, reply) => {
                            bfd.remove_peer(local, remote).await.expect("remove_peer");
                            let _ = reply.send(());
                        }
                    }
                }
            });
        });
        Self {
            commands: Some(tx),
            thread: Some(thread),
        }
    }

    fn add_peer(&self, local: &str, remote: &str) -> watch::Receiver<BfdState> {
        let (tx, rx) = oneshot::channel();
        let cmd = NodeCmd::AddPeer(local.parse().unwrap(), remote.parse().unwrap(), tx);
        self.commands.as_ref().unwrap().send(cmd).ok().unwrap();
        rx.blocking_recv().expect("node thread alive")
    }

    fn remove_peer(&self, local: &str, remote: &str) {
        let (tx, rx) = oneshot::channel();
        let cmd = NodeCmd::RemovePeer(local.parse().unwrap(), remote.parse().unwrap(), tx);
        self.commands.as_ref().unwrap().send(cmd).ok().unwrap();
        rx.blocking_recv().expect("node thread alive");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Closing the channel ends the runtime's loop; the thread then exits and its
        // sockets close before the namespace is deleted.
        self.commands.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Poll until `pred` holds for the session or `limit` passes; returns when it held.
fn wait_for(
    rx: &watch::Receiver<BfdState>,
    limit: Duration,
    pred: impl Fn(&BfdState) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if pred(&rx.borrow()) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn up(s: &BfdState) -> bool {
    s.state == State::Up
}

const A4: &str = "10.231.0.1";
const B4: &str = "10.231.0.2";
const A6: &str = "fd00:bfd::1";
const B6: &str = "fd00:bfd::2";

#[test]
fn bfd_between_namespaces() {
    if !strait_testbeds::require_root("bfd_between_namespaces") {
        return;
    }
    let net = VethPair::new(A4, B4, A6, B6);
    // The cut below is meant to lose the link, not the configuration.
    net.keep_addresses_on_down();
    net.up();
    let (ns_a, ns_b, va) = (&net.a, &net.b, &net.va);

    let params = SessionParams {
        desired_min_tx: Duration::from_millis(100),
        required_min_rx: Duration::from_millis(100),
        detect_mult: 3,
    };
    let node_a = Node::start(ns_a, params);
    let node_b = Node::start(ns_b, params);
    let a4 = node_a.add_peer(A4, B4);
    let b4 = node_b.add_peer(B4, A4);
    let a6 = node_a.add_peer(A6, B6);
    let b6 = node_b.add_peer(B6, A6);
    let all = [("a v4", &a4), ("b v4", &b4), ("a v6", &a6), ("b v6", &b6)];

    // 1. Handshake: with the 1 s slow rate before Up this takes a few seconds.
    for (name, rx) in all {
        let t = wait_for(rx, Duration::from_secs(15), up)
            .unwrap_or_else(|| panic!("{name} never came Up: {:?}", *rx.borrow()));
        println!("{name}: Up after {t:?} more");
    }
    assert_eq!(
        a4.borrow().remote_discriminator,
        b4.borrow().local_discriminator
    );
    assert_eq!(
        b6.borrow().remote_discriminator,
        a6.borrow().local_discriminator
    );

    // 2. GTSM (RFC 5881 §5): an AdminDown for a's v4 session, from b's address but with
    // TTL 64, must be ignored; the same packet with TTL 255 must take the session Down,
    // which shows the forged packet was otherwise good.
    let forged = ControlPacket {
        diagnostic: Diagnostic::AdministrativelyDown,
        state: State::AdminDown,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: b4.borrow().local_discriminator,
        your_discriminator: a4.borrow().local_discriminator,
        desired_min_tx_us: 100_000,
        required_min_rx_us: 100_000,
        required_min_echo_rx_us: 0,
    }
    .encode();
    let sock = ns_b
        .run_in(|| UdpSocket::bind(SocketAddr::new(B4.parse().unwrap(), 0)))
        .expect("socket in b");
    let to = SocketAddr::new(A4.parse().unwrap(), 3784);
    sock.set_ttl(64).unwrap();
    for _ in 0..5 {
        sock.send_to(&forged, to).unwrap();
    }
    assert_eq!(
        wait_for(&a4, Duration::from_millis(500), |s| !up(s)),
        None,
        "a packet with TTL 64 changed the session: {:?}",
        *a4.borrow()
    );
    sock.set_ttl(255).unwrap();
    sock.send_to(&forged, to).unwrap();
    wait_for(&a4, Duration::from_secs(2), |s| {
        s.state == State::Down && s.diagnostic == Diagnostic::NeighborSignaledDown
    })
    .unwrap_or_else(|| panic!("TTL 255 AdminDown not acted on: {:?}", *a4.borrow()));
    for (name, rx) in all {
        wait_for(rx, Duration::from_secs(15), up)
            .unwrap_or_else(|| panic!("{name} did not recover: {:?}", *rx.borrow()));
    }

    // 3. Cut the link: every session must go Down on its Detection Time
    // (3 × 100 ms), on both sides. The bound asserted is generous (a noisy 2-core
    // machine); the measured figure is printed.
    let cut = Instant::now();
    ns_a.exec_ok(&["ip", "link", "set", va, "down"]);
    for (name, rx) in all {
        let limit = Duration::from_secs(2);
        wait_for(rx, limit, |s| s.state == State::Down)
            .unwrap_or_else(|| panic!("{name} still {:?} {limit:?} after the cut", *rx.borrow()));
        let at = cut.elapsed();
        assert_eq!(
            rx.borrow().diagnostic,
            Diagnostic::ControlDetectionTimeExpired,
            "{name}"
        );
        println!("{name}: Down {at:?} after the cut");
    }

    // 4. The link returns: the sessions come back by themselves.
    ns_a.exec_ok(&["ip", "link", "set", va, "up"]);
    for (name, rx) in all {
        let t = wait_for(rx, Duration::from_secs(15), up)
            .unwrap_or_else(|| panic!("{name} did not come back: {:?}", *rx.borrow()));
        println!("{name}: Up again within {t:?}");
    }

    // 5. Removing a peer is no failure: the other side hears AdminDown.
    node_a.remove_peer(A6, B6);
    wait_for(&b6, Duration::from_secs(2), |s| {
        s.state == State::Down && s.diagnostic == Diagnostic::NeighborSignaledDown
    })
    .unwrap_or_else(|| panic!("b v6 after removal: {:?}", *b6.borrow()));
    assert_eq!(a6.borrow().state, State::AdminDown);
    assert!(
        up(&a4.borrow()) && up(&b4.borrow()),
        "the IPv4 sessions are untouched"
    );

    drop(node_a);
    drop(node_b);
}
