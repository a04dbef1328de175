//! A BGP node restarting its agent under an FRR peer that runs BFD and graceful restart
//! (docs/bgp.md "Graceful restart and BFD"): the peer must keep the node's routes
//! through every restart, so traffic to the node's containers never stops.
//!
//! One host (h1, AS 64512) and FRR 8.4 (bgpd, bfdd, zebra; AS 65000) in a namespace on
//! the same segment, added as an external peer with `netctl bgp peer add --bfd`. FRR
//! installs h1's block into its kernel FIB through zebra; a ping from FRR's namespace
//! to a container on h1 runs across each of 20 agent restarts (SIGTERM, the agent's
//! graceful stop, start again) and must lose nothing. On stop the agent closes the BGP
//! session without a NOTIFICATION (FRR becomes the graceful-restart helper, RFC 4724)
//! and only then ends BFD with AdminDown: FRR 8.4 takes any BFD Down as a failure and
//! drops the routes of a session that is still Established.
//!
//! Root, etcd and FRR needed. One scenario at a time (a lock), as in tests/cluster.rs.

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use strait_api::bgp::BgpPeerStatus;
use strait_testbeds::cluster::probe::{self, ContinuousPing};
use strait_testbeds::cluster::{Cluster, ClusterOpts, Fabric};
use strait_testbeds::peers::{Frr, Neighbor, PeerConfig, fib_routes, require};
use strait_testbeds::wait_until;

/// How long sessions and routes may take to come up after a change.
const CONVERGE: Duration = Duration::from_secs(30);
/// How often a condition waited for is checked again.
const POLL: Duration = Duration::from_millis(100);
const RESTARTS: usize = 20;
/// Each restart's ping: 150 requests 20 ms apart (3 s, while the agent stops, starts
/// and its session comes back).
const PING_COUNT: u32 = 150;
const PING_INTERVAL: Duration = Duration::from_millis(20);
const FRR_AS: u32 = 65000;
const NODE_AS: u32 = 64512;

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn privileged(test: &str) -> bool {
    strait_testbeds::require_root(test)
        && strait_testbeds::etcd::require_etcd(test)
        && require(
            test,
            &[
                ("/usr/lib/frr/bgpd", "--version"),
                ("/usr/lib/frr/bfdd", "--version"),
                ("/usr/lib/frr/zebra", "--version"),
                ("vtysh", "--version"),
            ],
            "frr",
        )
}

/// h1's session with FRR is back in full: Established with BFD Up on both sides, and
/// FRR holds `block` from h1 as a fresh (not stale) path, i.e. after our End-of-RIB.
fn converged(cluster: &Cluster, frr: &Frr, frr_ip: IpAddr, block: &str) -> Result<(), String> {
    let h1 = IpAddr::V4(cluster.host(0).underlay_v4);
    // Not `bgp_peers()`: right after a restart the speaker answers 503 for a while.
    let (_, out) = cluster.host(0).netctl(&["-o", "json", "bgp", "peers"]);
    let peers: Vec<BgpPeerStatus> =
        serde_json::from_str(&out).map_err(|e| format!("netctl bgp peers: {e}: {out}"))?;
    let ours = peers.iter().find(|p| p.address == frr_ip);
    match ours {
        Some(p) if p.established() && p.bfd.as_deref() == Some("Up") => {}
        _ => return Err(format!("h1's peers: {peers:?}")),
    }
    let state = frr.vtysh_json(&format!("show bgp neighbors {h1} json"));
    let state = state
        .as_ref()
        .ok()
        .and_then(|v| v[h1.to_string()]["bgpState"].as_str().map(str::to_string));
    if state.as_deref() != Some("Established") {
        return Err(format!("FRR's session with h1: {state:?}"));
    }
    match frr.bfd_status(h1) {
        Ok(Some(s)) if s == "up" => {}
        other => return Err(format!("FRR's BFD with h1: {other:?}")),
    }
    match frr.stale_paths(block) {
        Ok((0, n)) if n > 0 => Ok(()),
        other => Err(format!("FRR's paths of {block} (stale, all): {other:?}")),
    }
}

#[test]
fn frr_with_bfd_keeps_a_restarting_nodes_routes() {
    let _serial = serial();
    let test = "frr_with_bfd_keeps_a_restarting_nodes_routes";
    if !privileged(test) {
        return;
    }
    let mut cluster = Cluster::start(ClusterOpts::new(1, Fabric::Bgp));
    let h1 = IpAddr::V4(cluster.host(0).underlay_v4);
    let frr_v4 = cluster.add_underlay_peer(1).1;
    let frr_ip = IpAddr::V4(frr_v4);
    let frr_cfg = PeerConfig::new(frr_v4, FRR_AS).neighbor(Neighbor::new(h1, NODE_AS).bfd());
    // Declared after the cluster: stopped before its namespaces go.
    let frr = Frr::start(&cluster.peers()[0], frr_cfg).expect("start FRR");
    let (ok, out) = cluster.host(0).netctl(&[
        "bgp",
        "peer",
        "add",
        "frr",
        "--address",
        &frr_ip.to_string(),
        "--asn",
        &FRR_AS.to_string(),
        "--bfd",
    ]);
    assert!(ok, "netctl bgp peer add: {out}");
    let c1 = cluster.add_container(0, "c1");

    // FRR's kernel FIB reaches c1 through h1 (the route zebra installed from BGP).
    let mut block = None;
    wait_until("FRR's FIB route to c1 via h1", CONVERGE, POLL, || {
        let routes = fib_routes(&cluster.peers()[0], "bgp");
        block = routes
            .iter()
            .find(|r| r.prefix.contains(&c1.ip4()) && r.gateways == [h1])
            .map(|r| r.prefix);
        block.map(|_| ()).ok_or(format!("{routes:?}"))
    })
    .unwrap();
    let block: IpNet = block.expect("found");
    let block = block.to_string();
    wait_until("h1 and FRR converged", CONVERGE, POLL, || {
        converged(&cluster, &frr, frr_ip, &block)
    })
    .unwrap();
    probe::wait_ping(&cluster.peers()[0], c1.ip4(), CONVERGE).unwrap();
    let gr = frr
        .vtysh_json(&format!("show bgp neighbors {h1} json"))
        .expect("FRR neighbour");
    let gr = &gr[h1.to_string()]["gracefulRestartInfo"];
    assert_eq!(
        gr["remoteGrMode"].as_str(),
        Some("Restart"),
        "h1 announces graceful restart: {gr}"
    );

    let started = Instant::now();
    let mut losses = vec![];
    for round in 1..=RESTARTS {
        let ping = ContinuousPing::start(&cluster.peers()[0], c1.ip4(), PING_COUNT, PING_INTERVAL);
        cluster.restart_agent(0);
        wait_until(
            &format!("restart {round}: h1 and FRR converged"),
            CONVERGE,
            POLL,
            || converged(&cluster, &frr, frr_ip, &block),
        )
        .unwrap();
        let stats = ping.finish().unwrap();
        println!("restart {round}: {stats:?}");
        if stats.lost() > 0 {
            losses.push((round, stats));
        }
    }
    println!(
        "{RESTARTS} restarts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // FRR's logs are printed by its drop when this fails.
    assert!(
        losses.is_empty(),
        "pings to c1 lost across agent restarts (round, counts): {losses:?}"
    );
}
