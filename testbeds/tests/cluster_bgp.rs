//! The BGP fabric (docs/bgp.md) on a multi-host test bed: four hosts, two of them route
//! reflectors, containers on every host, strait's own speaker on every agent.
//!
//! What users rely on:
//! - every container reaches every other one, over routes to the other hosts' blocks
//!   whose next hop is that host (reflection never puts the RR in the data path);
//! - a route reflector crashing loses no packet: each client has the same routes from
//!   the other RR;
//! - a host dropping off the network silently is noticed by BFD: its routes leave every
//!   other host while its node record still exists (the lease would take 15 s), and
//!   `netctl bgp peers` names BFD. Without BFD the same takes the hold time; both
//!   figures are printed.
//!
//! - an agent whose speaker cannot listen (port 179 taken, no capability to bind it) is
//!   not called ready, and says why; it becomes ready once the port is free.
//!
//! Root and etcd needed. One scenario at a time (a lock), as in tests/cluster.rs.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use strait_api::{AgentStatus, Readiness, code, paths};
use strait_testbeds::cluster::probe::{self, ContinuousPing};
use strait_testbeds::cluster::{Cluster, ClusterOpts, Container, Fabric};
use strait_testbeds::wait_until;

/// How long sessions and routes may take to come up after a change.
const CONVERGE: Duration = Duration::from_secs(30);
/// How often a condition waited for is checked again.
const POLL: Duration = Duration::from_millis(100);
const PING_INTERVAL: Duration = Duration::from_millis(20);
/// Node lease TTL of the agents: long against BFD, so that a route removed while the
/// record still exists was removed by BGP, not by the registry.
const LEASE_TTL_SECS: u64 = 15;

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn privileged(test: &str) -> bool {
    strait_testbeds::require_root(test) && strait_testbeds::etcd::require_etcd(test)
}

/// Four hosts on one segment, h1 and h2 route reflectors of one cluster.
fn four_hosts_two_rrs(bfd: bool) -> Cluster {
    let mut opts = ClusterOpts::new(4, Fabric::Bgp);
    opts.node_lease_ttl_secs = Some(LEASE_TTL_SECS);
    if !bfd {
        opts.agent_extra.push("--no-bgp-bfd".into());
    }
    for rr in [0, 1] {
        opts.host_extra.push((
            rr,
            vec![
                "--bgp-role".into(),
                "rr".into(),
                "--bgp-cluster-id".into(),
                "10.0.0.250".into(),
            ],
        ));
    }
    Cluster::start(opts)
}

/// Host `i`'s BGP sessions are exactly to hosts `with`, all Established.
fn assert_sessions(cluster: &Cluster, i: usize, with: &[usize]) {
    let mut want: Vec<String> = with
        .iter()
        .map(|&h| cluster.host(h).underlay_v4.to_string())
        .collect();
    want.sort();
    wait_until(&format!("h{} sessions", i + 1), CONVERGE, POLL, || {
        let peers = cluster.host(i).bgp_peers();
        let mut got: Vec<String> = peers.iter().map(|p| p.address.to_string()).collect();
        got.sort();
        let all_up = peers.iter().all(|p| p.established());
        if got == want && all_up {
            Ok(())
        } else {
            Err(format!("want {want:?} established, have {peers:?}"))
        }
    })
    .unwrap();
}

/// Host `i`'s BFD session with host `peer` is Up.
fn assert_bfd_up(cluster: &Cluster, i: usize, peer: usize) {
    let addr = cluster.host(peer).underlay_v4.to_string();
    wait_until(
        &format!("h{} BFD with h{}", i + 1, peer + 1),
        CONVERGE,
        POLL,
        || {
            let peers = cluster.host(i).bgp_peers();
            if peers
                .iter()
                .any(|p| p.address.to_string() == addr && p.bfd.as_deref() == Some("Up"))
            {
                Ok(())
            } else {
                Err(format!("{peers:?}"))
            }
        },
    )
    .unwrap();
}

/// Host `from` routes container `to`'s address straight to `to`'s host.
fn assert_direct_route(cluster: &Cluster, from: usize, to: &Container) {
    let gw = IpAddr::V4(cluster.host(to.host).underlay_v4);
    wait_until(
        &format!("h{} route to {}", from + 1, to.name),
        CONVERGE,
        POLL,
        || {
            let routes = cluster.host(from).routes_to(to.ip4());
            if routes.iter().any(|r| r.gateway == Some(gw)) {
                Ok(())
            } else {
                Err(format!("routes: {routes:?}"))
            }
        },
    )
    .unwrap();
}

#[test]
fn bgp_four_hosts_two_route_reflectors() {
    let _serial = serial();
    if !privileged("bgp_four_hosts_two_route_reflectors") {
        return;
    }
    let mut cluster = four_hosts_two_rrs(true);
    let cs: Vec<_> = (0..4)
        .map(|i| cluster.add_container(i, &format!("c{}", i + 1)))
        .collect();

    // RRs peer with everyone, clients with the two RRs only.
    assert_sessions(&cluster, 0, &[1, 2, 3]);
    assert_sessions(&cluster, 1, &[0, 2, 3]);
    assert_sessions(&cluster, 2, &[0, 1]);
    assert_sessions(&cluster, 3, &[0, 1]);

    // Reflected routes keep the originating host as next hop.
    for from in 0..4 {
        for to in &cs {
            if to.host != from {
                assert_direct_route(&cluster, from, to);
            }
        }
    }
    for a in &cs {
        for b in &cs {
            if a.name != b.name {
                probe::wait_ping(&a.ns, b.ip4(), CONVERGE)
                    .unwrap_or_else(|e| panic!("{} -> {}: {e}", a.name, b.name));
            }
        }
    }
    probe::tcp_echo(&cs[2].ns, &cs[3].ns, cs[3].ip4()).expect("TCP c3 -> c4");
    if let (Some(_), Some(b6)) = (cs[2].v6, cs[3].v6) {
        probe::wait_ping(&cs[2].ns, IpAddr::V6(b6), CONVERGE).expect("IPv6 c3 -> c4");
    }

    borrowed_address_is_announced(&mut cluster, &cs);

    // One RR crashes under traffic between two clients: nothing lost.
    let ping = ContinuousPing::start(&cs[2].ns, cs[3].ip4(), 150, PING_INTERVAL);
    std::thread::sleep(Duration::from_millis(500));
    cluster.kill_agent(0);
    let stats = ping.finish().expect("continuous ping");
    eprintln!("RR h1 killed under ping c3 -> c4: {stats:?}");
    assert_eq!(stats.lost(), 0, "packets lost while RR h1 died: {stats:?}");
    assert_direct_route(&cluster, 2, &cs[3]);
    cluster.start_agent(0);
    assert_sessions(&cluster, 2, &[0, 1]);

    // h4 drops off the network: BFD takes its routes away while its record still
    // exists.
    // Both RRs must have seen BFD Up with h4 first (after h1's restart its BFD
    // sessions take a moment): BFD only acts on Down after Up.
    for rr in [0, 1] {
        assert_bfd_up(&cluster, rr, 3);
    }
    let (elapsed, record_alive) = cut_and_time_withdrawal(&mut cluster, 3, &cs[3]);
    eprintln!("h4 cut, BFD on: routes gone on h3 after {elapsed:?}");
    assert!(
        record_alive,
        "h4's routes went only with its node record: BFD did not take them down"
    );
    // h3 is a client with no session to h4; the RRs are the ones that noticed.
    let rr_view = &cluster.host(1).bgp_peers();
    let h4 = cluster.host(3).underlay_v4.to_string();
    assert!(
        rr_view
            .iter()
            .any(|p| p.address.to_string() == h4 && !p.established()),
        "RR h2 still shows h4 Established after the cut: {rr_view:?}"
    );
    cluster.reconnect_host(3);
    assert_direct_route(&cluster, 2, &cs[3]);
    probe::wait_ping(&cs[2].ns, cs[3].ip4(), CONVERGE).expect("c3 -> c4 after h4 is back");
}

/// A container on h3 holding an address of h2's block (static; a dynamic borrow at
/// `max_blocks_per_node` leaves the same record): h3 announces it as a /32, which
/// every host installs, the lender h2 too (above its blackhole for the block). Every
/// other container reaches it. Released, the /32 is withdrawn everywhere.
fn borrowed_address_is_announced(cluster: &mut Cluster, cs: &[Arc<Container>]) {
    let IpAddr::V4(lent) = cs[1].ip4() else {
        unreachable!("ip4 is IPv4")
    };
    let borrowed = IpAddr::V4((u32::from(lent) + 1).into());
    let holder = cluster.add_container_with_ip(2, "holder", borrowed);
    let via_h3 = IpAddr::V4(cluster.host(2).underlay_v4);
    for i in [0, 1, 3] {
        wait_until(
            &format!("h{}'s /32 to {borrowed}", i + 1),
            CONVERGE,
            POLL,
            || match cluster.host(i).host_routes_to(borrowed).as_slice() {
                [r] if r.gateway == Some(via_h3) => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .unwrap();
    }
    for from in [&cs[0], &cs[1], &cs[3]] {
        probe::wait_ping(&from.ns, borrowed, CONVERGE)
            .unwrap_or_else(|e| panic!("{} -> holder {borrowed}: {e}", from.name));
    }
    probe::tcp_echo(&cs[1].ns, &holder.ns, borrowed).expect("TCP lender's c2 -> holder");

    assert!(cluster.remove_container("holder").ok());
    for i in [0, 1, 3] {
        wait_until(
            &format!("h{} withdraws the /32", i + 1),
            CONVERGE,
            POLL,
            || match cluster.host(i).host_routes_to(borrowed).as_slice() {
                [] => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .unwrap();
    }
}

/// Cut host `i` off and time until host 2 (a client) has no route to `c` any more.
/// Also says whether `i`'s node record was still in the store at that moment.
fn cut_and_time_withdrawal(cluster: &mut Cluster, i: usize, c: &Container) -> (Duration, bool) {
    let observer = 2;
    assert_direct_route(cluster, observer, c);
    let node = cluster.host(i).name.clone();
    let start = Instant::now();
    cluster.cut_host(i);
    wait_until(
        &format!("routes to {} gone from h{}", c.name, observer + 1),
        Duration::from_secs(LEASE_TTL_SECS * 4),
        POLL,
        || {
            let routes = cluster.host(observer).routes_to(c.ip4());
            if routes.is_empty() {
                Ok(())
            } else {
                Err(format!("{routes:?}"))
            }
        },
    )
    .unwrap();
    let elapsed = start.elapsed();
    let (_, nodes) = cluster.host(observer).netctl(&["-o", "json", "nodes"]);
    let alive = nodes.contains(&format!("\"{node}\""));
    (elapsed, alive)
}

/// The same cut without BFD: the routes stay until the hold timer (or the node lease)
/// runs out. Printed beside the BFD figure of the other scenario; no time asserted.
#[test]
fn bgp_host_cut_without_bfd() {
    let _serial = serial();
    if !privileged("bgp_host_cut_without_bfd") {
        return;
    }
    let mut cluster = four_hosts_two_rrs(false);
    let cs: Vec<_> = (0..4)
        .map(|i| cluster.add_container(i, &format!("c{}", i + 1)))
        .collect();
    assert_sessions(&cluster, 2, &[0, 1]);
    let (elapsed, record_alive) = cut_and_time_withdrawal(&mut cluster, 3, &cs[3]);
    eprintln!(
        "h4 cut, BFD off: routes gone on h3 after {elapsed:?} (node record still there: \
         {record_alive})"
    );
    let rr_view = &cluster.host(1).bgp_peers();
    let h4 = cluster.host(3).underlay_v4.to_string();
    assert!(
        rr_view
            .iter()
            .all(|p| p.address.to_string() != h4 || p.bfd.is_none()),
        "BFD state shown although BFD is off: {rr_view:?}"
    );
}

/// Host `i`'s readiness as `netctl status` shows it: the same answer as `/readyz`,
/// which carries it in a 503 when not ready.
fn readiness(cluster: &Cluster, i: usize) -> Result<Readiness, String> {
    cluster
        .host(i)
        .agent
        .client()
        .get::<AgentStatus>(paths::STATUS)
        .map(|s| s.readiness)
        .map_err(|e| e.to_string())
}

/// Another process holds the BGP port on h2's underlay when its agent starts: the
/// agent serves ADDs but `/readyz` says "limited connectivity" with the address and
/// the error, not "ready" (a DaemonSet's probe would otherwise pass while the node's
/// routes reach no peer). Freed, the speaker starts on its retry and the agent is
/// ready, with its session to h1 up.
#[test]
fn bgp_port_taken_is_not_ready() {
    let _serial = serial();
    if !privileged("bgp_port_taken_is_not_ready") {
        return;
    }
    let mut cluster = Cluster::start(ClusterOpts::new(2, Fabric::Bgp));
    assert_sessions(&cluster, 1, &[0]);

    cluster.stop_agent(1);
    // Listening on the wildcard address takes port 179 on every address of h2.
    let squatter = cluster
        .host(1)
        .ns
        .run_in(|| std::net::TcpListener::bind("0.0.0.0:179"))
        .expect("bind port 179 in h2");
    cluster.relaunch_agent(1);
    let mut seen = None;
    wait_until(
        "h2 not ready because of BGP",
        CONVERGE,
        POLL,
        || match readiness(&cluster, 1) {
            // Past start-up (code 50 "agent is starting"), which may already name it.
            Ok(r)
                if r.code != code::NOT_AVAILABLE && r.reasons.iter().any(|m| m.contains("BGP")) =>
            {
                seen = Some(r);
                Ok(())
            }
            Ok(r) => Err(format!("{r:?}")),
            Err(e) => Err(e),
        },
    )
    .unwrap();
    let not_ready = seen.expect("readiness seen");
    assert!(!not_ready.ready, "{not_ready:?}");
    assert_eq!(not_ready.code, code::LIMITED_CONNECTIVITY, "{not_ready:?}");
    let reason = not_ready.reasons.join("; ");
    assert!(
        reason.contains(":179") && reason.contains("in use"),
        "the reason names the address and the error: {reason}"
    );

    // The probe a kubelet runs sees the same: 503 with the reason.
    let probe = cluster
        .host(1)
        .agent
        .client()
        .get::<Readiness>(paths::READYZ)
        .expect_err("/readyz is 503 while the port is taken")
        .to_string();
    assert!(
        probe.contains("503") && probe.contains(":179"),
        "/readyz: {probe}"
    );

    drop(squatter);
    wait_until(
        "h2 ready once port 179 is free",
        CONVERGE,
        POLL,
        || match readiness(&cluster, 1) {
            Ok(r) if r.ready => Ok(()),
            Ok(r) => Err(format!("{r:?}")),
            Err(e) => Err(e),
        },
    )
    .unwrap();
    assert_sessions(&cluster, 1, &[0]);
}
