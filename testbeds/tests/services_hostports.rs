//! Host ports (CNI runtimeConfig `portMappings`) served by strait itself, end to end
//! on a real host (etcd, VXLAN, the agent's socket balancer and its packet-level
//! translation on the underlay interface), with no `portmap` plugin in the chain:
//!
//! - a container publishing 8080→80/tcp and 15353→53/udp answers at the node's
//!   underlay addresses from an underlay peer (IPv4 and IPv6; a namespace with no
//!   agent: the tc translation; the container sees the peer's own address), and at
//!   its IPv4 address from the host itself and from a container on the same host
//!   (processes in the agent's service cgroup: the socket balancer);
//! - meanwhile the fast path is on and serves the host port's veth, and no rule
//!   is in the host's iptables nat table;
//! - a second container asking for 8080/tcp is refused (CNI code 109, naming the
//!   holder) and leaves nothing behind (no address held, no link);
//! - DEL frees the port: a third container gets it and answers, also after the
//!   agent's restart (it serves them from the endpoint record);
//! - with the reference `portmap` chained after strait for it, both serve: it
//!   answers still (strait translates before netfilter), while portmap's DNAT turns
//!   `--fast-path auto` off, and back on once portmap's DEL removed it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use strait_testbeds::cluster::{Cluster, ClusterHost as Host, ClusterOpts, Container, Fabric};
use strait_testbeds::services::{
    BackendServer, counts, python_in, python_in_cgroup, wait_backends,
};
use strait_testbeds::{require_root, wait_until};

const TCP_HOST_PORT: u16 = 8080;
const UDP_HOST_PORT: u16 = 15353;

/// TCP 80 and UDP 53 answer with the container's name and the peer address each saw.
const SERVER: &str = r#"
import socket, sys, threading
name = sys.argv[1]
t = socket.socket()
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", 80)); t.listen(1024)
t6 = socket.socket(socket.AF_INET6)
t6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
t6.bind(("::", 80)); t6.listen(1024)
def udp(fam, any):
    u = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    u.bind((any, 53))
    while True:
        d, a = u.recvfrom(100); u.sendto(("%s %s" % (name, a[0])).encode(), a)
def tcp(t):
    while True:
        c, a = t.accept(); c.sendall(("%s %s" % (name, a[0])).encode()); c.close()
threading.Thread(target=udp, args=(socket.AF_INET, "0.0.0.0"), daemon=True).start()
threading.Thread(target=udp, args=(socket.AF_INET6, "::"), daemon=True).start()
threading.Thread(target=tcp, args=(t6,), daemon=True).start()
print("ready", flush=True)
while True:
    c, a = t.accept(); c.sendall(("%s %s" % (name, a[0])).encode()); c.close()
"#;

/// `n` exchanges with ADDR:PORT over tcp or udp (a UDP reply must come from
/// ADDR:PORT); JSON on stdout: answers by container, the peers they saw, errors.
const CLIENT: &str = r#"
import collections, json, socket, sys
addr, port, n, proto = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
counts, seen, errors = collections.Counter(), set(), collections.Counter()
for _ in range(n):
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, kind); s.settimeout(3)
    try:
        if proto == "tcp":
            s.connect((addr, port)); d = s.recv(100)
        else:
            s.sendto(b"q", (addr, port)); d, a = s.recvfrom(100)
            if a[:2] != (addr, port):
                raise ValueError("reply from %s:%d" % a[:2])
        name, peer = d.decode().split()
        counts[name] += 1; seen.add(peer)
    except (OSError, ValueError) as e:
        errors[getattr(e, "strerror", None) or str(e)] += 1
    finally:
        s.close()
print(json.dumps({"counts": counts, "seen": sorted(seen), "errors": errors}))
"#;

/// Exchanges per client run: enough that the peer's new flows reuse some client
/// ports of its earlier ones (ports of a 28 232-port range), which must not follow
/// a flow tracked for a container that is gone.
const N: u32 = 400;

fn mappings() -> Value {
    json!({"portMappings": [
        {"hostPort": TCP_HOST_PORT, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": UDP_HOST_PORT, "containerPort": 53, "protocol": "udp"},
    ]})
}

/// A container with [`mappings`] on host 0.
fn add_published(
    c: &mut Cluster,
    name: &str,
) -> Result<Arc<Container>, strait_testbeds::cni::CniOutcome> {
    c.try_add_container_with(0, name, |config| {
        config["capabilities"] = json!({"portMappings": true});
        config["runtimeConfig"] = mappings();
    })
}

/// Every `n` exchange answered by `name` alone.
fn assert_all_answered(what: &str, r: &Value, name: &str) {
    assert!(r["errors"].as_object().unwrap().is_empty(), "{what}: {r}");
    assert_eq!(
        counts(r),
        BTreeMap::from([(name.to_string(), u64::from(N))]),
        "{what}: {r}"
    );
}

fn peer_client(peer: &strait_testbeds::netns::Netns, addr: &str, port: u16, proto: &str) -> Value {
    python_in(
        peer,
        CLIENT,
        &[addr, &port.to_string(), &N.to_string(), proto],
    )
}

fn cgroup_client(cgroup: &Path, ns: &str, addr: &str, port: u16, proto: &str) -> Value {
    python_in_cgroup(
        cgroup,
        ns,
        CLIENT,
        &[addr, &port.to_string(), &N.to_string(), proto],
    )
}

/// The name of `c`'s host-port pseudo-service (`hostport/<node>/<endpoint id>`) as
/// host 0's `netctl service list` shows it, once it does.
fn hostport_service(c: &Cluster, container: &Container) -> String {
    let suffix = format!(".{}.eth0", container.id);
    let mut name = String::new();
    wait_until(
        &format!("{}'s host ports in netctl service list", container.name),
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let (ok, out) = c.host(0).netctl(&["-o", "json", "service", "list"]);
            let all: Value = serde_json::from_str(&out).map_err(|e| format!("{ok} {e}: {out}"))?;
            let found = all.as_array().into_iter().flatten().find(|s| {
                s["type"] == "HostPort" && s["name"].as_str().is_some_and(|n| n.ends_with(&suffix))
            });
            match found {
                Some(s) => {
                    name = s["name"].as_str().unwrap_or_default().to_string();
                    Ok(())
                }
                None => Err(out),
            }
        },
    )
    .unwrap();
    name
}

/// The host's links, and the addresses its agent's IPAM holds (per block).
fn footprint(h: &Host) -> (BTreeSet<String>, Vec<(String, u64)>) {
    let links = h.ns.ip_json(&["link", "show"]);
    let links = links
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect();
    let (ok, out) = h.netctl(&["-o", "json", "ipam", "show"]);
    assert!(ok, "{out}");
    let ipam: Value = serde_json::from_str(&out).unwrap();
    let used = ipam["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["cidr"].to_string(), b["used"].as_u64().unwrap_or(0)))
        .collect();
    (links, used)
}

/// `iptables-save -t nat` of the host, with the tool that works here (`None`: no
/// iptables on this machine).
fn nat_table(h: &Host) -> Option<String> {
    ["iptables-nft-save", "iptables-legacy-save", "iptables-save"]
        .into_iter()
        .map(|t| h.ns.exec(&[t, "-t", "nat"]))
        .find(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn host_ports_are_served_by_strait_with_the_fast_path_on() {
    if !require_root("host_ports_are_served_by_strait_with_the_fast_path_on") {
        return;
    }
    let mut c = Cluster::start(ClusterOpts::new(1, Fabric::Vxlan));
    let web = add_published(&mut c, "web-1").unwrap_or_else(|o| panic!("ADD web-1: {o:?}"));
    let server = BackendServer::start(&web, SERVER);
    let cl = c.add_container(0, "client");
    let h1 = c.host(0).underlay_v4.to_string();
    let h1_v6 = c.host(0).underlay_v6.to_string();
    let (_, peer_v4, peer_v6) = c.add_underlay_peer(1);
    let (peer_v4, peer_v6) = (peer_v4.to_string(), peer_v6.to_string());
    let cgroup = c.host(0).agent.service_cgroup();

    let name = hostport_service(&c, &web);
    wait_backends(&c, &name, Some("HostPort"), 1);
    let (ok, list) = c.host(0).netctl(&["service", "list"]);
    assert!(ok, "{list}");
    eprintln!("{list}");
    assert!(
        list.contains(&name) && list.contains("HostPort") && list.contains("8080:80/TCP"),
        "netctl service list names the endpoint's host ports: {list}"
    );

    // The fast path is on, and serves the host port's veth too (web-1 and client),
    // before and during the traffic.
    wait_until(
        "both veths in the fast path",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let fp = c.host(0).fast_path();
            match (fp.active, fp.endpoints) {
                (true, 2) => Ok(()),
                _ => Err(format!("{fp:?}")),
            }
        },
    )
    .unwrap();
    let to_endpoint = c.host(0).fast_path().to_endpoint;

    // From the underlay, both families: translated in tc, the container sees the
    // peer itself.
    for (node, client) in [(&h1, &peer_v4), (&h1_v6, &peer_v6)] {
        for (port, proto) in [(TCP_HOST_PORT, "tcp"), (UDP_HOST_PORT, "udp")] {
            let r = peer_client(&c.peers()[0], node, port, proto);
            assert_all_answered(&format!("peer → {node}:{port}/{proto}"), &r, "web-1");
            assert_eq!(r["seen"], json!([client]), "the client's own address: {r}");
        }
    }
    // From the host itself and from a container beside: the socket balancer.
    for (who, ns) in [("host", c.host(0).ns.name()), ("container", cl.ns.name())] {
        for (port, proto) in [(TCP_HOST_PORT, "tcp"), (UDP_HOST_PORT, "udp")] {
            let r = cgroup_client(&cgroup, ns, &h1, port, proto);
            assert_all_answered(&format!("{who} → {h1}:{port}/{proto}"), &r, "web-1");
        }
    }

    // Still on after all that traffic, which it carried into the veths (the
    // container's exchanges with web-1, at least).
    let fp = c.host(0).fast_path();
    assert!(fp.active, "the fast path stays on with host ports: {fp:?}");
    assert!(
        fp.to_endpoint > to_endpoint,
        "the fast path redirected none of it: {fp:?}"
    );
    match nat_table(c.host(0)) {
        Some(nat) => assert!(
            !nat.lines().any(|l| l.starts_with("-A")),
            "strait made no iptables nat rule: {nat}"
        ),
        None => println!("SKIPPED (visible): no iptables-save here, the nat table unchecked"),
    }

    // A second container wanting 8080/tcp: refused, naming the holder; nothing left.
    let before = footprint(c.host(0));
    let Err(refused) = add_published(&mut c, "web-2") else {
        panic!("web-2 was given host port 8080/tcp, which web-1 holds");
    };
    assert_eq!(refused.error_code(), 109, "{refused:?}");
    let msg = refused.json()["msg"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("host port 8080/tcp is held by endpoint") && msg.contains(&web.id),
        "{msg}"
    );
    assert_eq!(footprint(c.host(0)), before, "the refused ADD left nothing");

    // DEL frees it: a third container gets it and answers.
    drop(server);
    assert!(c.remove_container("web-1").ok());
    let web3 = add_published(&mut c, "web-3").unwrap_or_else(|o| panic!("ADD web-3: {o:?}"));
    let _server3 = BackendServer::start(&web3, SERVER);
    let name3 = hostport_service(&c, &web3);
    wait_backends(&c, &name3, Some("HostPort"), 1);
    let (_, list) = c.host(0).netctl(&["service", "list"]);
    assert!(
        !list.contains(&name),
        "web-1's host ports went with it: {list}"
    );
    let r = peer_client(&c.peers()[0], &h1, TCP_HOST_PORT, "tcp");
    assert_all_answered("peer → web-3", &r, "web-3");
    // UDP too: the peer's flows to web-1 are still tracked, and those of its new
    // ones that reuse a client port must go to web-3, not to web-1's old address.
    let r = peer_client(&c.peers()[0], &h1, UDP_HOST_PORT, "udp");
    assert_all_answered("peer → web-3 over udp", &r, "web-3");
    // A restarted agent serves them from the record.
    c.restart_agent(0);
    wait_backends(&c, &name3, Some("HostPort"), 1);
    let r = peer_client(&c.peers()[0], &h1, UDP_HOST_PORT, "udp");
    assert_all_answered("peer → web-3 after the agent's restart", &r, "web-3");
    let (ok, trace) =
        c.host(0)
            .netctl(&["service", "trace", "--to", &format!("{h1}:{TCP_HOST_PORT}")]);
    assert!(
        ok && trace.contains(&name3),
        "the trace names the host port: {trace}"
    );

    portmap_beside(&c, &web3, &h1);
}

/// The reference `portmap` chained after strait for `web3` (its prevResult: the
/// container's address): its DNAT turns the fast path off, the port still answers
/// from the underlay peer and from the host; its DEL brings the fast path back.
fn portmap_beside(c: &Cluster, web3: &Container, h1: &str) {
    let Some(dir) = strait_testbeds::bins::reference_plugins_dir() else {
        panic!("reference CNI plugins missing: apt-get install containernetworking-plugins");
    };
    let mut config = c.host(0).cni_config();
    config["cniVersion"] = json!("1.0.0");
    config["type"] = json!("portmap");
    config["capabilities"] = json!({"portMappings": true});
    config["runtimeConfig"] = mappings();
    config["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": web3.ns.path()}],
        "ips": [{"address": format!("{}/32", web3.ip4()), "interface": 0}],
    });
    let call = |verb: &str| {
        strait_testbeds::cni::CniCall::of_plugin(&dir.join("portmap"), verb, config.clone())
            .container(&web3.id, &web3.ns.path())
            .in_netns(c.host(0).ns.name())
            .run()
    };
    call("ADD").expect_ok();
    let fast_path = |on: bool| {
        wait_until(
            &format!("the fast path {}", if on { "on" } else { "off" }),
            Duration::from_secs(30),
            Duration::from_millis(250),
            || {
                let fp = c.host(0).fast_path();
                let dnat = fp.reason.as_deref().unwrap_or_default().contains("DNAT");
                if fp.active == on && dnat != on {
                    Ok(())
                } else {
                    Err(format!("{fp:?}"))
                }
            },
        )
        .unwrap();
    };
    fast_path(false);
    let nat = nat_table(c.host(0)).unwrap_or_default();
    assert!(nat.contains("DNAT"), "portmap's rules: {nat}");
    for (port, proto) in [(TCP_HOST_PORT, "tcp"), (UDP_HOST_PORT, "udp")] {
        let r = peer_client(&c.peers()[0], h1, port, proto);
        assert_all_answered(
            &format!("beside portmap: peer → {h1}:{port}/{proto}"),
            &r,
            "web-3",
        );
    }
    let cgroup = c.host(0).agent.service_cgroup();
    let r = cgroup_client(&cgroup, c.host(0).ns.name(), h1, TCP_HOST_PORT, "tcp");
    assert_all_answered("beside portmap: host → web-3", &r, "web-3");
    call("DEL").expect_ok();
    fast_path(true);
}
