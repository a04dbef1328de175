//! A full table through the speaker as route reflector, on real sockets in network
//! namespaces: one client announces 100 000 IPv4 prefixes in UPDATEs of 1000, the other
//! receives every one with the first client's next hop, packed into full UPDATEs rather
//! than one per prefix; then all are withdrawn the same way. The times are printed (the
//! benchmark compares them with BIRD's), not asserted.
//! Needs root (network namespaces); skips visibly otherwise.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{NsRuntime, SpeakerNode, Star};
use ipnet::{IpNet, Ipv4Net};
use strait_bgp::codec::{AfiSafi, Capability};
use strait_bgp::fsm;
use strait_bgp::rib::RouteUpdate;
use strait_bgp::session::{self, SessionConfig, SessionEvent, SessionHandle};
use strait_bgp::speaker::{PeerSpec, SpeakerConfig};

const ASN: u32 = 64512;
const PREFIXES: u32 = 100_000;
const LIMIT: Duration = Duration::from_secs(300);

fn table() -> Vec<Ipv4Net> {
    (0..PREFIXES)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(0x0b00_0000 + (i << 8)), 24).unwrap())
        .collect()
}

/// A plain BGP session (no speaker) from leaf `i` to the hub.
fn client(rt: &NsRuntime, i: usize) -> SessionHandle {
    let fsm = fsm::Config {
        local_asn: ASN,
        peer_asn: ASN,
        bgp_id: Ipv4Addr::new(2, 2, 2, i as u8),
        hold_time: 90,
        connect_retry: Duration::from_secs(1),
        idle_hold: Duration::from_secs(1),
        passive: false,
        capabilities: vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
        ],
    };
    let mut c = SessionConfig::new(fsm, Star::hub_v4(i));
    c.local = Some(Star::leaf_v4(i));
    let listen = SocketAddr::new(Star::leaf_v4(i), session::BGP_PORT);
    let (listener, mut s) = rt.speaker(listen, c);
    rt.run(async move {
        let _listener = listener;
        loop {
            match tokio::time::timeout(LIMIT, s.next_event()).await {
                Ok(Some(SessionEvent::Up(_))) => return s,
                Ok(Some(_)) => {}
                _ => panic!("client {i} never came up"),
            }
        }
    })
}

/// Read UPDATEs until all `n` prefixes are announced (or withdrawn); how many UPDATEs
/// it took, when it was done, and a next hop seen.
async fn receive(
    mut s: SessionHandle,
    n: usize,
    withdraw: bool,
) -> (SessionHandle, usize, Instant, Option<IpAddr>) {
    let mut seen = std::collections::HashSet::new();
    let mut updates = 0;
    let mut next_hop = None;
    while seen.len() != n {
        match tokio::time::timeout(LIMIT, s.next_event()).await {
            Ok(Some(SessionEvent::Update(u))) => {
                updates += 1;
                let r = RouteUpdate::from_update(&u);
                for (ps, a) in r.announced {
                    next_hop = Some(a.next_hop_addr());
                    if !withdraw {
                        seen.extend(ps);
                    }
                }
                if withdraw {
                    seen.extend(r.withdrawn);
                }
            }
            Ok(Some(e)) => panic!("unexpected {e:?}"),
            _ => panic!("stalled at {} prefixes after {updates} UPDATEs", seen.len()),
        }
    }
    (s, updates, Instant::now(), next_hop)
}

async fn send_all(s: SessionHandle, updates: Vec<strait_bgp::codec::Update>) -> SessionHandle {
    for u in updates {
        s.send_update(u).await.expect("send");
    }
    s
}

#[test]
fn a_full_table_is_reflected_in_full_updates() {
    if !strait_testbeds::require_root("speaker_scale") {
        return;
    }
    let star = Star::new(2);
    let mut hub_cfg = SpeakerConfig::new(ASN, Ipv4Addr::new(10, 0, 0, 254));
    hub_cfg.graceful_restart = None;
    let mut hub = SpeakerNode::start(&star.hub, hub_cfg);
    let peers = (1..=2)
        .map(|i| {
            let mut p = PeerSpec::new(Star::leaf_v4(i), ASN);
            p.rr_client = true;
            p
        })
        .collect();
    let rts: Vec<NsRuntime> = star.leaves.iter().map(NsRuntime::start).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(hub.speaker().set_peers(peers)).unwrap();
    let mut sender = Some(client(&rts[0], 1));
    let mut receiver = Some(client(&rts[1], 2));
    let table = table();
    let n = table.len();
    let IpAddr::V4(nh) = Star::leaf_v4(1) else {
        unreachable!()
    };

    for withdraw in [false, true] {
        let updates: Vec<_> = table
            .chunks(1000)
            .map(|c| {
                if withdraw {
                    session::withdrawal(&c.iter().copied().map(IpNet::V4).collect::<Vec<_>>())
                } else {
                    session::announce_v4(ASN, false, nh, c)
                }
            })
            .collect();
        let (r, s) = (receiver.take().unwrap(), sender.take().unwrap());
        let (rt_s, rt_r) = (&rts[0], &rts[1]);
        let ((r, received_in, done, next_hop), s, start) = std::thread::scope(|sc| {
            let h = sc.spawn(move || rt_r.run(receive(r, n, withdraw)));
            let start = Instant::now();
            let s = rt_s.run(send_all(s, updates));
            (h.join().unwrap(), s, start)
        });
        let what = if withdraw { "withdrawn" } else { "announced" };
        println!(
            "{n} prefixes {what} through the reflector: {:?}, in {received_in} UPDATEs",
            done - start
        );
        // Full UPDATEs: a /24 takes 4 bytes, so about a thousand fit in 4096.
        assert!(received_in <= n / 900 + 2, "{received_in} UPDATEs");
        if !withdraw {
            assert_eq!(next_hop, Some(IpAddr::V4(nh)), "next hop unchanged on iBGP");
        }
        let ok = rt.block_on(hub.wait_fib(LIMIT, |v| {
            if withdraw {
                v.routes.is_empty()
            } else {
                v.routes.len() == n
            }
        }));
        assert!(ok, "hub's FIB holds {}", hub.view.routes.len());
        println!("  hub's FIB stream done after {:?}", start.elapsed());
        sender = Some(s);
        receiver = Some(r);
    }
    // Sessions first, then the speaker, then the runtimes.
    drop((sender, receiver));
    drop(hub);
}
