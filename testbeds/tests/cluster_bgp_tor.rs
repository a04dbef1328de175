//! The BGP fabric over a routed underlay (docs/bgp.md "External peers", "Node-to-node
//! mesh"): two racks, each an L2 segment with its own AS, joined by a ToR that is BIRD
//! in the test bed's router namespace. No node-to-node mesh: every host peers only with
//! the ToR, through external peers added with `netctl bgp peer add`, as an operator
//! would (Calico's "AS per rack" with `nodeToNodeMeshEnabled: false`).
//!
//! What users rely on:
//! - with the mesh off, hosts have no sessions until external peers are added, and a
//!   bad peer is refused with the reason and not stored;
//! - each host's session with its ToR comes up (one of them signed with TCP MD5, the
//!   key given to netctl in a file), the host learns the other rack's
//!   blocks with the ToR as next hop, and the ToR forwards (its kernel FIB has every
//!   host's blocks): containers on different segments ping and talk TCP;
//! - removing an external peer with netctl tears its session down, and its routes
//!   leave the host, the ToR and the other rack.
//!
//! Both families: the sessions run over IPv4 and carry IPv6 unicast too (RFC 4760);
//! BIRD gives each rack its own IPv6 address on that segment as next hop.
//!
//! Root, etcd and BIRD needed. One scenario at a time (a lock), as in tests/cluster.rs.

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use strait_api::bgp::PeerKind;
use strait_testbeds::cluster::probe;
use strait_testbeds::cluster::underlay::{ROUTER, Segment};
use strait_testbeds::cluster::{Cluster, ClusterOpts, Container, Fabric};
use strait_testbeds::netns::Netns;
use strait_testbeds::peers::{Bird, Neighbor, PeerConfig, fib_routes, require};
use strait_testbeds::wait_until;

/// How long sessions and routes may take to come up or go after a change.
const CONVERGE: Duration = Duration::from_secs(30);
/// How often a condition waited for is checked again.
const POLL: Duration = Duration::from_millis(100);
const TOR_AS: u32 = 65000;
/// h2's session with the ToR is signed (RFC 2385); the key goes in with
/// `--md5-key-file`.
const MD5_HOST: usize = 1;
const MD5_KEY: &str = "rack-a tor key";

fn rack_as(seg: Segment) -> u32 {
    match seg {
        Segment::A => 65001,
        Segment::B => 65002,
    }
}

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn privileged(test: &str) -> bool {
    strait_testbeds::require_root(test)
        && strait_testbeds::etcd::require_etcd(test)
        && require(
            test,
            &[("bird", "--version"), ("birdc", "--version")],
            "bird2",
        )
}

/// The ToR's address on segment `seg`.
fn tor_ip(seg: Segment) -> IpAddr {
    IpAddr::V4(seg.v4(ROUTER))
}

/// Four hosts, h1 h2 on segment A (AS 65001), h3 h4 on B (AS 65002), no node mesh.
fn two_racks() -> Cluster {
    let mut opts = ClusterOpts::new(4, Fabric::Bgp);
    opts.two_segments = true;
    opts.agent_extra.push("--no-bgp-node-mesh".into());
    for i in 0..opts.hosts {
        let asn = rack_as(opts.segment_of(i));
        opts.host_extra
            .push((i, vec!["--bgp-asn".into(), asn.to_string()]));
    }
    Cluster::start(opts)
}

/// BIRD in the router namespace: AS 65000, every host a neighbour from the ToR's
/// address on its segment, best routes exported to the router's kernel FIB.
fn start_tor(cluster: &Cluster) -> Bird {
    let router = cluster
        .underlay()
        .router
        .as_ref()
        .expect("two segments have a router");
    let mut cfg = PeerConfig::new(Segment::A.v4(ROUTER), TOR_AS).kernel_fib(true);
    for (i, h) in cluster.hosts().iter().enumerate() {
        let mut n =
            Neighbor::new(IpAddr::V4(h.underlay_v4), rack_as(h.segment)).local(tor_ip(h.segment));
        if i == MD5_HOST {
            n = n.md5(MD5_KEY);
        }
        cfg = cfg.neighbor(n);
    }
    Bird::start(router, cfg).expect("start BIRD as the ToR")
}

fn router(cluster: &Cluster) -> &Netns {
    cluster.underlay().router.as_ref().expect("router")
}

/// `netctl -o json bgp peer list` on host `i`: (name, has an MD5 key).
fn external_peers(cluster: &Cluster, i: usize) -> Vec<(String, bool)> {
    let (ok, out) = cluster
        .host(i)
        .netctl(&["-o", "json", "bgp", "peer", "list"]);
    assert!(ok, "netctl bgp peer list: {out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {out}"))
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["md5"].as_bool().unwrap_or_default(),
            )
        })
        .collect()
}

/// Host `i` has exactly one session, with its ToR, Established.
fn assert_tor_session(cluster: &Cluster, i: usize) {
    let tor = tor_ip(cluster.host(i).segment).to_string();
    wait_until(
        &format!("h{} session with the ToR", i + 1),
        CONVERGE,
        POLL,
        || {
            let peers = cluster.host(i).bgp_peers();
            match peers.as_slice() {
                [p] if p.address.to_string() == tor && p.established() => {
                    assert_eq!(p.kind, PeerKind::External);
                    Ok(())
                }
                _ => Err(format!("want only {tor} Established, have {peers:?}")),
            }
        },
    )
    .unwrap();
}

/// Host `from` routes container `to`'s addresses (both families) via its own ToR.
fn assert_route_via_tor(cluster: &Cluster, from: usize, to: &Container) {
    let seg = cluster.host(from).segment;
    let mut want = vec![(to.ip4(), tor_ip(seg))];
    if let Some(ip6) = to.v6 {
        want.push((IpAddr::V6(ip6), IpAddr::V6(seg.v6(ROUTER))));
    }
    for (ip, gw) in want {
        wait_until(
            &format!("h{} route to {} ({ip}) via {gw}", from + 1, to.name),
            CONVERGE,
            POLL,
            || {
                let routes = cluster.host(from).routes_to(ip);
                if routes.iter().any(|r| r.gateway == Some(gw)) {
                    Ok(())
                } else {
                    Err(format!("routes: {routes:?}"))
                }
            },
        )
        .unwrap();
    }
}

/// Host `from` has no fabric route to any of container `to`'s addresses.
fn no_route(cluster: &Cluster, from: usize, to: &Container) -> Result<(), String> {
    let routes: Vec<_> = to
        .ips()
        .into_iter()
        .flat_map(|ip| cluster.host(from).routes_to(ip))
        .collect();
    if routes.is_empty() {
        Ok(())
    } else {
        Err(format!("h{} -> {}: {routes:?}", from + 1, to.name))
    }
}

/// The ToR's kernel FIB has (or has not) a BGP route to `ip`.
fn tor_fib_has(cluster: &Cluster, ip: IpAddr) -> bool {
    fib_routes(router(cluster), "bird")
        .iter()
        .any(|r| r.prefix.contains(&ip))
}

#[test]
fn bgp_routed_underlay_with_a_tor_per_rack_and_no_node_mesh() {
    let _serial = serial();
    if !privileged("bgp_routed_underlay_with_a_tor_per_rack_and_no_node_mesh") {
        return;
    }
    let mut cluster = two_racks();
    assert_eq!(
        (0..4).map(|i| cluster.host(i).segment).collect::<Vec<_>>(),
        [Segment::A, Segment::A, Segment::B, Segment::B]
    );
    // Declared after the cluster: stopped before the router namespace goes.
    let tor = start_tor(&cluster);
    let cs: Vec<_> = (0..4)
        .map(|i| cluster.add_container(i, &format!("c{}", i + 1)))
        .collect();

    // No mesh, no route reflector, no external peer yet: no session at all, once the
    // speaker answers.
    for i in 0..4 {
        let mut peers = None;
        wait_until(
            &format!("h{} speaker answering", i + 1),
            CONVERGE,
            POLL,
            || {
                let (ok, out) = cluster.host(i).netctl(&["-o", "json", "bgp", "peers"]);
                match serde_json::from_str::<Value>(&out) {
                    Ok(Value::Array(list)) => {
                        peers = Some((ok, list));
                        Ok(())
                    }
                    _ => Err(out),
                }
            },
        )
        .unwrap();
        let (ok, list) = peers.expect("answered");
        assert!(ok && list.is_empty(), "h{}: mesh is off: {list:?}", i + 1);
    }

    // Bad peers are refused with the reason, and nothing is stored.
    let (ok, out) = cluster.host(0).netctl(&[
        "bgp",
        "peer",
        "add",
        "tor-h1",
        "--address",
        "10.0.0.253",
        "--asn",
        "0",
    ]);
    assert!(!ok && out.contains("reserved"), "AS 0: {out}");
    let api = strait_api::Client::new(&cluster.host(0).agent.socket);
    let mut bad = strait_api::bgp::ExternalPeer::new(tor_ip(Segment::A), TOR_AS);
    bad.node = Some("h1".into());
    bad.md5_key = Some("k".repeat(81));
    let err = api
        .bgp_put_external_peer("tor-h1", &bad)
        .expect_err("an 81-byte MD5 key is refused by the agent");
    assert!(err.to_string().contains("at most 80"), "{err}");
    bad.md5_key = None;
    bad.address = "0.0.0.0".parse().expect("ip");
    let err = api
        .bgp_put_external_peer("tor-h1", &bad)
        .expect_err("the unspecified address is refused by the agent");
    assert!(err.to_string().contains("unspecified"), "{err}");
    assert!(external_peers(&cluster, 0).is_empty(), "nothing written");

    // One external peer per host, its rack's ToR, added on any agent.
    let key_file = cluster.dir().join("tor-h2.key");
    std::fs::write(&key_file, format!("{MD5_KEY}\n")).expect("key file");
    for i in 0..4 {
        let h = cluster.host(i);
        let name = format!("tor-{}", h.name);
        let (address, asn) = (tor_ip(h.segment).to_string(), TOR_AS.to_string());
        let mut args = vec![
            "bgp",
            "peer",
            "add",
            &name,
            "--address",
            &address,
            "--asn",
            &asn,
            "--node",
            &h.name,
        ];
        if i == MD5_HOST {
            args.extend(["--md5-key-file", key_file.to_str().expect("utf-8 path")]);
        }
        let (ok, out) = cluster.host(3 - i).netctl(&args);
        assert!(ok, "netctl bgp peer add for {}: {out}", h.name);
    }
    let mut listed = external_peers(&cluster, 1);
    listed.sort();
    assert_eq!(
        listed,
        [
            ("tor-h1".into(), false),
            ("tor-h2".into(), true),
            ("tor-h3".into(), false),
            ("tor-h4".into(), false)
        ]
    );
    let t0 = Instant::now();
    for i in 0..4 {
        assert_tor_session(&cluster, i);
    }
    eprintln!(
        "4 sessions with the ToR Established {:?} after the peers were added",
        t0.elapsed()
    );

    // The other rack's blocks via the ToR, and the ToR forwards.
    for (from, to) in [(0, 2), (0, 3), (1, 2), (2, 0), (3, 1)] {
        assert_route_via_tor(&cluster, from, &cs[to]);
    }
    wait_until(
        "every host's blocks in the ToR's FIB",
        CONVERGE,
        POLL,
        || {
            let ips = cs.iter().flat_map(|c| c.ips());
            match ips.into_iter().find(|ip| !tor_fib_has(&cluster, *ip)) {
                None => Ok(()),
                Some(ip) => Err(format!(
                    "no route to {ip}: {:?}",
                    fib_routes(router(&cluster), "bird")
                )),
            }
        },
    )
    .unwrap();
    for (a, b) in [(0, 2), (2, 0), (1, 3), (3, 1), (0, 3)] {
        probe::wait_ping(&cs[a].ns, cs[b].ip4(), CONVERGE)
            .unwrap_or_else(|e| panic!("{} -> {}: {e}", cs[a].name, cs[b].name));
    }
    // Inside a rack the hosts share an AS and refuse each other's routes from the ToR
    // (AS_PATH loop): they go by the default route, through the ToR.
    probe::wait_ping(&cs[0].ns, cs[1].ip4(), CONVERGE).expect("c1 -> c2, same rack");
    probe::wait_ping(&cs[3].ns, cs[2].ip4(), CONVERGE).expect("c4 -> c3, same rack");
    probe::tcp_echo(&cs[0].ns, &cs[2].ns, cs[2].ip4()).expect("TCP c1 -> c3");
    probe::tcp_echo(&cs[3].ns, &cs[1].ns, cs[1].ip4()).expect("TCP c4 -> c2");
    let (a6, b6) = match (cs[0].v6, cs[2].v6) {
        (Some(a), Some(b)) => (IpAddr::V6(a), IpAddr::V6(b)),
        _ => panic!("dual-stack pools give every container an IPv6 address"),
    };
    probe::wait_ping(&cs[0].ns, b6, CONVERGE).expect("IPv6 c1 -> c3");
    probe::wait_ping(&cs[2].ns, a6, CONVERGE).expect("IPv6 c3 -> c1");
    probe::tcp_echo(&cs[2].ns, &cs[0].ns, a6).expect("TCP over IPv6 c3 -> c1");

    // Removing h1's peer: its session goes, and its routes leave h1, the ToR and the
    // other rack.
    let (ok, out) = cluster.host(2).netctl(&["bgp", "peer", "remove", "tor-h1"]);
    assert!(ok, "netctl bgp peer remove: {out}");
    let t0 = Instant::now();
    wait_until("h1 without sessions", CONVERGE, POLL, || {
        let peers = &cluster.host(0).bgp_peers();
        if peers.is_empty() {
            Ok(())
        } else {
            Err(format!("{peers:?}"))
        }
    })
    .unwrap();
    wait_until(
        "the routes learned over tor-h1 gone",
        CONVERGE,
        POLL,
        || {
            no_route(&cluster, 0, &cs[2])?;
            no_route(&cluster, 0, &cs[3])?;
            no_route(&cluster, 2, &cs[0])?;
            no_route(&cluster, 3, &cs[0])?;
            match cs[0]
                .ips()
                .into_iter()
                .find(|ip| tor_fib_has(&cluster, *ip))
            {
                Some(ip) => Err(format!("{ip} still in the ToR's FIB")),
                None => Ok(()),
            }
        },
    )
    .unwrap();
    eprintln!("tor-h1 removed: its routes gone after {:?}", t0.elapsed());
    // The others are untouched.
    assert_tor_session(&cluster, 1);
    assert_route_via_tor(&cluster, 2, &cs[1]);
    probe::wait_ping(&cs[2].ns, cs[1].ip4(), CONVERGE).expect("c3 -> c2 after h1's peer left");
    let (ok, out) = cluster.host(0).netctl(&["bgp", "peer", "remove", "tor-h1"]);
    assert!(
        !ok && out.contains("no external BGP peer"),
        "a second remove: {out}"
    );
    drop(tor);
}
