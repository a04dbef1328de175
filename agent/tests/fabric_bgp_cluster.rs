//! Two `straitd --fabric bgp` on one real etcd, each host a network namespace on one
//! bridged underlay (strait_testbeds::cluster): the agents find each other through
//! their node records, peer full mesh, announce their blocks and install each other's
//! block routes (proto 83 via the peer's underlay address), so containers on the two
//! hosts reach each other; `netctl bgp peers` and `netctl bgp rib` show it, and the
//! node records carry the `bgp` attributes. Needs root and etcd (visible SKIP
//! otherwise) and the workspace binaries (`cargo build --workspace --bins`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use strait_testbeds::cluster::probe::{ContinuousPing, wait_ping};
use strait_testbeds::cluster::{Cluster, ClusterOpts, Fabric};
use straitd::store::Store;

/// Polls `check` until it returns `Ok`, or panics with its last error.
fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let started = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if started.elapsed() > timeout => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Puts (`Some`) or deletes (`None`) `key` in the cluster's etcd, from inside host
/// `ns` (etcd listens on the underlay only): a fresh thread in that namespace with a
/// runtime of its own.
fn etcd_write(ns: &std::path::Path, endpoints: Vec<String>, key: String, value: Option<String>) {
    straitd::netns::NetNs::open(ns)
        .expect("host netns")
        .run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let store = straitd::store::etcd::EtcdStore::connect(
                    &endpoints,
                    straitd::store::etcd::EtcdOptions::default(),
                )
                .await
                .expect("etcd");
                match value {
                    Some(v) => {
                        store.put(&key, v.into_bytes(), None).await.expect("put");
                    }
                    None => {
                        store.delete(&key).await.expect("delete");
                    }
                }
            });
        })
        .expect("run in host netns");
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn two_agents_peer_full_mesh_and_route_each_others_blocks() {
    let name = "two_agents_peer_full_mesh_and_route_each_others_blocks";
    if !strait_testbeds::require_root(name) || !strait_testbeds::etcd::require_etcd(name) {
        return;
    }
    let mut cluster = Cluster::start(ClusterOpts::new(2, Fabric::Bgp));
    let a = cluster.add_container(0, "a");
    let b = cluster.add_container(1, "b");
    let (h1, h2) = (cluster.host(0), cluster.host(1));

    // Each node's record carries its BGP attributes (router ID: its underlay IPv4).
    let (ok, out) = h1.netctl(&["nodes", "-o", "json"]);
    assert!(ok, "{out}");
    let nodes = json(&out);
    let h2_record = nodes
        .as_array()
        .expect("array")
        .iter()
        .find(|n| n["name"] == "h2")
        .unwrap_or_else(|| panic!("no h2 in {out}"));
    let bgp = &h2_record["record"]["bgp"];
    assert_eq!(bgp["asn"], 64512, "{out}");
    assert_eq!(bgp["role"], "client", "{out}");
    assert_eq!(bgp["router_id"], h2.underlay_v4.to_string(), "{out}");

    // The session comes up: netctl exits 0 only when every peer is Established.
    eventually("h1's session to h2", Duration::from_secs(60), || {
        let (ok, out) = h1.netctl(&["bgp", "peers", "-o", "json"]);
        let peers = json(out.trim());
        let peers = peers.as_array().ok_or(out.clone())?;
        if ok
            && peers.len() == 1
            && peers[0]["address"] == h2.underlay_v4.to_string()
            && peers[0]["kind"] == "node"
            && peers[0]["state"] == "Established"
        {
            Ok(())
        } else {
            Err(out)
        }
    });

    // Each host routes the other's container addresses via the other's underlay
    // address (IPv4 and IPv6 blocks), and the containers reach each other.
    for (host, peer, container) in [(h1, h2, &b), (h2, h1, &a)] {
        for ip in container.ips() {
            let via = match ip {
                IpAddr::V4(_) => IpAddr::V4(peer.underlay_v4),
                IpAddr::V6(_) => IpAddr::V6(peer.underlay_v6),
            };
            eventually(
                &format!("{}'s route to {ip} via {via}", host.name),
                Duration::from_secs(30),
                || {
                    let routes = host.routes_to(ip);
                    if routes.iter().any(|r| r.gateway == Some(via)) {
                        Ok(())
                    } else {
                        Err(format!("{routes:?}"))
                    }
                },
            );
        }
    }
    for (from, to) in [(&a, &b), (&b, &a)] {
        for ip in to.ips() {
            wait_ping(&from.ns, ip, Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("{} → {ip}: {e}", from.name));
        }
    }

    // The RIB shows b's block as learned from h2, best and in the FIB.
    let (ok, out) = h1.netctl(&["bgp", "rib", "-o", "json"]);
    assert!(ok, "{out}");
    let rib = json(&out);
    let b_v4 = b.v4.expect("b has IPv4");
    let learned = rib
        .as_array()
        .expect("array")
        .iter()
        .find(|r| {
            r["peer"] == h2.underlay_v4.to_string()
                && r["prefix"]
                    .as_str()
                    .and_then(|p| p.parse::<ipnet::IpNet>().ok())
                    .is_some_and(|p| p.contains(&IpAddr::V4(b_v4)))
        })
        .unwrap_or_else(|| panic!("no path to {b_v4} from h2 in {out}"));
    assert_eq!(learned["best"], true, "{out}");
    assert_eq!(learned["fib"], true, "{out}");
    // An external peer for h1 only (a ToR that is not there): h1 gets a session that
    // does not come up, so `netctl bgp peers` exits 1 and names it; h2 has none.
    let ghost_key = "/strait/v1/bgp/peers/ghost-tor".to_string();
    let etcd = cluster.etcd().endpoints();
    etcd_write(
        &h1.ns.path(),
        etcd.clone(),
        ghost_key.clone(),
        Some(r#"{"address":"10.0.0.99","asn":65099,"node":"h1"}"#.into()),
    );
    eventually(
        "h1 peers with the external peer",
        Duration::from_secs(10),
        || {
            let (ok, out) = h1.netctl(&["bgp", "peers", "-o", "json"]);
            let peers = json(out.trim());
            let ghost = peers
                .as_array()
                .and_then(|p| p.iter().find(|p| p["address"] == "10.0.0.99"));
            match ghost {
                Some(g) if !ok && g["kind"] == "external" && g["asn"] == 65099 => {
                    assert_ne!(g["state"], "Established");
                    Ok(())
                }
                _ => Err(out),
            }
        },
    );
    let (ok, out) = h2.netctl(&["bgp", "peers", "-o", "json"]);
    assert!(
        ok && !out.contains("10.0.0.99"),
        "h2 must not peer with h1's ToR: {out}"
    );
    etcd_write(&h1.ns.path(), etcd, ghost_key, None);
    eventually(
        "h1 drops the external peer",
        Duration::from_secs(10),
        || {
            let (ok, out) = h1.netctl(&["bgp", "peers"]);
            if ok && !out.contains("10.0.0.99") {
                Ok(())
            } else {
                Err(out)
            }
        },
    );

    let (ok, table) = h1.netctl(&["bgp", "rib"]);
    assert!(ok && table.contains("*F"), "{table}");
    let (_, peers) = h1.netctl(&["bgp", "peers"]);
    eprintln!("h1: netctl bgp peers\n{peers}\nh1: netctl bgp rib\n{table}");
}

/// A restarted agent adopts its routes and its peer keeps this node's (graceful
/// restart: the old agent sends no Cease): traffic between the hosts' containers goes
/// on through the restart, both ways.
#[test]
fn an_agent_restart_loses_no_packet() {
    let name = "an_agent_restart_loses_no_packet";
    if !strait_testbeds::require_root(name) || !strait_testbeds::etcd::require_etcd(name) {
        return;
    }
    let mut cluster = Cluster::start(ClusterOpts::new(2, Fabric::Bgp));
    let a = cluster.add_container(0, "a");
    let b = cluster.add_container(1, "b");
    let (a_v4, b_v4) = (a.ips()[0], b.ips()[0]);
    wait_ping(&a.ns, b_v4, Duration::from_secs(60)).expect("a → b before the restart");
    wait_ping(&b.ns, a_v4, Duration::from_secs(20)).expect("b → a before the restart");
    // 6 s of 50 pps each way, the restart in the middle.
    let there = ContinuousPing::start(&a.ns, b_v4, 300, Duration::from_millis(20));
    let back = ContinuousPing::start(&b.ns, a_v4, 300, Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(1));
    cluster.restart_agent(0);
    let (there, back) = (there.finish().expect("ping"), back.finish().expect("ping"));
    assert_eq!(
        (there.lost(), back.lost()),
        (0, 0),
        "a → b {there:?}, b → a {back:?}"
    );
    eventually(
        "the restarted agent's session is back",
        Duration::from_secs(60),
        || {
            let (ok, out) = cluster.host(0).netctl(&["bgp", "peers"]);
            if ok { Ok(()) } else { Err(out) }
        },
    );
}
