//! IPv4 over IPv6-only BGP sessions (RFC 8950, extended next hop) with real peers: a
//! `straitd --fabric bgp` whose underlay has no IPv4 address at all peers over IPv6
//! with BIRD and FRR (external peers, eBGP) on one IPv6-only segment.
//!
//! What users rely on:
//! - strait learns BIRD's and FRR's IPv4 prefixes with their IPv6 next hops and
//!   installs them (`ip route` shows `via inet6 …`);
//! - BIRD and FRR learn strait's IPv4 block with strait's IPv6 address as next hop,
//!   and FRR forwards to it: a ping from FRR's namespace reaches the container on
//!   strait's host, and the reply comes back over strait's `via inet6` route;
//! - a peer that does not offer extended next hops (BIRD without `extended next hop
//!   on`) keeps its session and gets strait's IPv6 block, but no IPv4 route (strait has
//!   no IPv4 next hop to give it);
//! - two IPv6-only strait nodes peering with each other route their containers' IPv4
//!   traffic host to host.
//!
//! Needs root, BIRD and FRR (visible SKIP otherwise) and the workspace binaries
//! (`straitd`, `strait`). One scenario at a time (a lock).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ipnet::IpNet;
use serde_json::json;
use strait_api::bgp::ExternalPeer;
use strait_testbeds::agent::{Agent, AgentOpts};
use strait_testbeds::cni::CniCall;
use strait_testbeds::netns::Netns;
use strait_testbeds::peers::{BgpDaemon, Bird, Family, Frr, Lan, Neighbor, PeerConfig, fib_routes};
use strait_testbeds::{require_root, wait_until};

const CONVERGE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
const STRAIT_AS: u32 = 65001;
const BIRD_AS: u32 = 65002;
const FRR_AS: u32 = 65003;
const PLAIN_AS: u32 = 65004;
const BIRD_NET: &str = "10.250.1.0/26";
const FRR_NET: &str = "10.250.2.0/26";
/// On FRR's loopback: the source of its pings into strait's block.
const FRR_HOST: &str = "10.250.2.1";

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn privileged(test: &str) -> bool {
    require_root(test)
        && strait_testbeds::peers::require(
            test,
            &[
                ("bird", "--version"),
                ("birdc", "--version"),
                ("/usr/lib/frr/bgpd", "--version"),
            ],
            "bird2, frr",
        )
}

/// A straitd in `ns` with an IPv6-only underlay (`underlay` on eth0), the BGP fabric
/// on the embedded store (peers come from `bgp/peers/`), and `pools`.
fn start_strait(ns: &Netns, dir: &std::path::Path, node: &str, underlay: Ipv6Addr) -> Agent {
    start_strait_with(
        ns,
        dir,
        node,
        underlay,
        STRAIT_AS,
        1,
        &["10.244.0.0/24", "fd00:244::/64"],
    )
}

fn start_strait_with(
    ns: &Netns,
    dir: &std::path::Path,
    node: &str,
    underlay: Ipv6Addr,
    asn: u32,
    id: u8,
    pools: &[&str],
) -> Agent {
    let mut opts = AgentOpts::new(node, pools);
    opts.extra.extend(
        [
            "--fabric",
            "bgp",
            "--underlay-iface",
            "eth0",
            "--underlay-addr",
            &underlay.to_string(),
            "--bgp-asn",
            &asn.to_string(),
            // BGP identifiers are IPv4: an IPv6-only node is given one.
            "--bgp-router-id",
            &Ipv4Addr::new(192, 0, 2, id).to_string(),
        ]
        .map(String::from),
    );
    Agent::start(ns, dir, opts)
}

/// `bgp/peers/<name>` on that agent (what `netctl bgp peer add` writes).
fn add_peer(agent: &Agent, name: &str, address: Ipv6Addr, asn: u32) {
    let peer = ExternalPeer::new(IpAddr::V6(address), asn);
    agent
        .client()
        .bgp_put_external_peer(name, &peer)
        .unwrap_or_else(|e| panic!("add peer {name}: {e}"));
}

/// A container on `host` (CNI ADD through that agent); its namespace and IPv4 address.
fn add_container(host: &Netns, agent: &Agent, name: &str) -> (Netns, Ipv4Addr) {
    let ns = Netns::new(format!("{}{name}", host.name()));
    let config = json!({
        "cniVersion": "1.1.0",
        "name": "stnet",
        "type": "strait",
        "socket": agent.socket,
        "stateDir": agent.state_dir,
    });
    let out = CniCall::new("ADD", config)
        .container(&format!("{}-{name}", host.name()), &ns.path())
        .in_netns(host.name())
        .run();
    assert!(out.ok(), "CNI ADD of {name}: {out:?}\n{}", agent.log());
    let v4 = strait_testbeds::host::result_ip(&out.json(), false)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{name} has no IPv4 address: {out:?}"));
    (ns, v4)
}

/// Every session of the agent Established.
fn wait_established(agent: &Agent, peers: usize) {
    wait_until("strait's sessions Established", CONVERGE, POLL, || {
        let status = agent.client().bgp_peers().map_err(|e| e.to_string())?;
        if status.len() == peers && status.iter().all(|p| p.state == "Established") {
            Ok(())
        } else {
            Err(format!("{status:?}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
}

/// The strait host's proto-83 route to `to` goes via `gateway`, and `ip route` says
/// so the way an operator reads it: `via inet6 <gateway>`.
fn wait_installed_via_inet6(host: &Netns, to: Ipv4Addr, gateway: Ipv6Addr) {
    let mut prefix = None;
    wait_until(
        &format!("route to {to} via inet6 {gateway} in the kernel"),
        CONVERGE,
        POLL,
        || {
            let routes = fib_routes(host, "83");
            match routes.iter().find(|r| r.prefix.contains(&IpAddr::V4(to))) {
                Some(r) if r.gateways == [IpAddr::V6(gateway)] => {
                    prefix = Some(r.prefix);
                    Ok(())
                }
                _ => Err(format!("{routes:?}")),
            }
        },
    )
    .unwrap();
    let prefix = prefix.expect("found").to_string();
    let text = host.exec_ok(&["ip", "route", "show", &prefix]);
    assert!(
        text.contains(&format!("via inet6 {gateway}")) && text.contains("proto 83"),
        "{text}"
    );
}

/// The daemon's best path to the prefix holding `ip` has next hop `next_hop`.
fn wait_learned(daemon: &dyn BgpDaemon, ip: Ipv4Addr, next_hop: Ipv6Addr) -> IpNet {
    let mut found = None;
    wait_until(
        &format!("{} learns {ip} via {next_hop}", daemon.kind()),
        CONVERGE,
        POLL,
        || {
            let routes = daemon.routes(Family::V4).map_err(|e| e.to_string())?;
            match routes
                .iter()
                .find(|r| r.best && r.prefix.contains(&IpAddr::V4(ip)))
            {
                Some(r) if r.next_hop == Some(IpAddr::V6(next_hop)) => {
                    found = Some(r.prefix);
                    Ok(())
                }
                _ => Err(format!("{routes:?}")),
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.logs()));
    found.expect("found")
}

#[test]
fn strait_bird_and_frr_exchange_ipv4_routes_over_ipv6_only_sessions() {
    let _serial = serial();
    if !privileged("strait_bird_and_frr_exchange_ipv4_routes_over_ipv6_only_sessions") {
        return;
    }
    let lan = Lan::ipv6_only(4, 83);
    let (strait, bird_a, frr_a, plain_a) = (lan.v6(0), lan.v6(1), lan.v6(2), lan.v6(3));
    let host = lan.ns(0);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{}-", lan.prefix))
        .tempdir()
        .expect("temp dir");
    let agent = start_strait(host, dir.path(), "h1", strait);
    let (_c1, c1) = add_container(host, &agent, "c1");

    let bird = Bird::start(
        lan.ns(1),
        PeerConfig::new(Ipv4Addr::new(192, 0, 2, 2), BIRD_AS)
            .kernel_fib(false)
            .originate(&[BIRD_NET])
            .neighbor(Neighbor::new(strait.into(), STRAIT_AS).extended_next_hop()),
    )
    .expect("bird");
    lan.ns(2)
        .exec_ok(&["ip", "addr", "add", &format!("{FRR_HOST}/32"), "dev", "lo"]);
    let frr = Frr::start(
        lan.ns(2),
        PeerConfig::new(Ipv4Addr::new(192, 0, 2, 3), FRR_AS)
            .originate(&[FRR_NET])
            .neighbor(Neighbor::new(strait.into(), STRAIT_AS).extended_next_hop()),
    )
    .expect("frr");
    // Without `extended next hop on`.
    let plain = Bird::start(
        lan.ns(3),
        PeerConfig::new(Ipv4Addr::new(192, 0, 2, 4), PLAIN_AS)
            .kernel_fib(false)
            .originate(&["fd00:250:4::/64"])
            .neighbor(Neighbor::new(strait.into(), STRAIT_AS)),
    )
    .expect("plain bird");
    add_peer(&agent, "bird", bird_a, BIRD_AS);
    add_peer(&agent, "frr", frr_a, FRR_AS);
    add_peer(&agent, "plain", plain_a, PLAIN_AS);
    wait_established(&agent, 3);

    // strait installs the peers' IPv4 routes via their IPv6 addresses.
    let first = |net: &str| net.split('/').next().unwrap().parse::<Ipv4Addr>().unwrap();
    wait_installed_via_inet6(host, first(BIRD_NET), bird_a);
    wait_installed_via_inet6(host, first(FRR_NET), frr_a);

    // BIRD and FRR have strait's block with strait's IPv6 address as next hop; FRR
    // also has BIRD's, passed on by strait (eBGP, next hop self over IPv6).
    let block = wait_learned(&bird, c1, strait);
    assert_eq!(wait_learned(&frr, c1, strait), block);
    wait_learned(&frr, first(BIRD_NET), strait);

    // FRR's kernel routes strait's block via inet6 and the container answers FRR's
    // loopback over strait's `via inet6` route back.
    wait_until("FRR pings the container on strait", CONVERGE, POLL, || {
        let out = lan.ns(2).exec(&[
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "-I",
            FRR_HOST,
            &c1.to_string(),
        ]);
        if out.status.success() {
            Ok(())
        } else {
            let routes = lan.ns(2).exec_ok(&["ip", "route"]);
            Err(format!(
                "{}\nFRR routes:\n{routes}",
                String::from_utf8_lossy(&out.stdout)
            ))
        }
    })
    .unwrap();

    // The peer without RFC 8950: IPv6 from strait, no IPv4 route at all, session up.
    wait_until("plain BIRD has strait's IPv6 block", CONVERGE, POLL, || {
        let v6 = plain.routes(Family::V6).map_err(|e| e.to_string())?;
        if v6
            .iter()
            .any(|r| r.next_hop == Some(IpAddr::V6(strait)) && r.best)
        {
            Ok(())
        } else {
            Err(format!("{v6:?}"))
        }
    })
    .unwrap();
    let v4 = plain.routes(Family::V4).expect("plain routes");
    assert!(v4.is_empty(), "no IPv4 route without RFC 8950: {v4:?}");
    assert!(plain.established(strait.into()));
    let status = agent.client().bgp_peers().expect("peers");
    let p = status
        .iter()
        .find(|p| p.address == IpAddr::V6(plain_a))
        .expect("plain peer");
    assert_eq!(p.state, "Established", "{p:?}");
    assert!(p.prefixes_sent >= 1, "{p:?}");
}

#[test]
fn two_ipv6_only_strait_nodes_route_their_containers_ipv4_traffic() {
    let _serial = serial();
    if !require_root("two_ipv6_only_strait_nodes_route_their_containers_ipv4_traffic") {
        return;
    }
    let lan = Lan::ipv6_only(2, 84);
    let dirs: Vec<_> = (0..2)
        .map(|i| {
            tempfile::Builder::new()
                .prefix(&format!("{}-{i}-", lan.prefix))
                .tempdir()
                .expect("temp dir")
        })
        .collect();
    // One AS (iBGP, as node-to-node sessions are), each node its own pool: the
    // embedded stores do not share IPAM.
    let pools = [["10.246.0.0/24"], ["10.247.0.0/24"]];
    let agents: Vec<Agent> = (0..2)
        .map(|i| {
            start_strait_with(
                lan.ns(i),
                dirs[i].path(),
                &format!("n{i}"),
                lan.v6(i),
                64512,
                10 + i as u8,
                &pools[i],
            )
        })
        .collect();
    let (_ca, ca) = add_container(lan.ns(0), &agents[0], "ca");
    let (cb_ns, cb) = add_container(lan.ns(1), &agents[1], "cb");
    add_peer(&agents[0], "n1", lan.v6(1), 64512);
    add_peer(&agents[1], "n0", lan.v6(0), 64512);
    for a in &agents {
        wait_established(a, 1);
    }
    wait_installed_via_inet6(lan.ns(0), cb, lan.v6(1));
    wait_installed_via_inet6(lan.ns(1), ca, lan.v6(0));
    wait_until(
        "cb pings ca across the IPv6 underlay",
        CONVERGE,
        POLL,
        || {
            if cb_ns.ping(&ca.to_string()) {
                Ok(())
            } else {
                Err(lan.ns(1).exec_ok(&["ip", "route"]))
            }
        },
    )
    .unwrap();
    drop(agents);
}
