//! Node ports and external IPs from outside the cluster, end to end on a real
//! two-host cluster (etcd, VXLAN, the agents' packet-level translation on their
//! underlay interfaces): a client in an underlay peer namespace (not a node, no
//! agent, no socket balancer) connects to h1's underlay address on the node port of
//! a Service with backends on both hosts. Every connection is answered, spread over
//! the backends of both hosts (h2's reached through h1, SNATed, the reply coming
//! back through h1). With `externalTrafficPolicy: Local` only h1's backend answers
//! and sees the client's own address. An external IP routed to h1 by the peer works
//! the same way.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use strait_testbeds::cluster::{Cluster, ClusterOpts, Container, Fabric};
use strait_testbeds::netns::Netns;
use strait_testbeds::require_root;
use strait_testbeds::services::{BackendServer, apply, counts, python_in, wait_backends};

const NODE_PORT: u16 = 30080;
const EXTERNAL_IP: &str = "192.0.2.80";

/// TCP 8080 answers with the backend's name and the peer address it saw, and
/// closes.
const SERVER: &str = r#"
import socket, sys
name = sys.argv[1]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(1024)
print("ready", flush=True)
while True:
    c, a = s.accept(); c.sendall(("%s %s" % (name, a[0])).encode()); c.close()
"#;

/// `n` TCP connects to ADDR:PORT; JSON on stdout: answers by backend, the peer
/// addresses the backends saw, errors.
const CLIENT: &str = r#"
import collections, json, socket, sys
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
counts, seen, errors = collections.Counter(), set(), collections.Counter()
for _ in range(n):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((addr, port))
        name, peer = s.recv(100).decode().split()
        counts[name] += 1; seen.add(peer)
    except (OSError, ValueError) as e:
        errors[getattr(e, "strerror", None) or type(e).__name__] += 1
    finally:
        s.close()
print(json.dumps({"counts": counts, "seen": sorted(seen), "errors": errors}))
"#;

fn client(peer: &Netns, addr: &str, port: u16, n: u32) -> Value {
    python_in(peer, CLIENT, &[addr, &port.to_string(), &n.to_string()])
}

fn web(policy: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  type: NodePort
  externalTrafficPolicy: {policy}
  externalIPs: [{EXTERNAL_IP}]
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: 8080, nodePort: {NODE_PORT}}}
"
    )
}

#[test]
fn node_ports_and_external_ips_answer_clients_outside_the_cluster() {
    if !require_root("node_ports_and_external_ips_answer_clients_outside_the_cluster") {
        return;
    }
    let mut c = Cluster::start(ClusterOpts::new(2, Fabric::Vxlan));
    let mut backends: Vec<(Arc<Container>, BackendServer)> = Vec::new();
    for (name, host) in [("web-a", 0), ("web-b", 1), ("web-c", 1)] {
        let b = c
            .try_add_container_with(host, name, |config| {
                config["args"] = serde_json::json!({"cni": {
                    "namespace": "shop",
                    "labels": [{"key": "app", "value": "web"}],
                }});
            })
            .unwrap_or_else(|o| panic!("ADD {name}: {o:?}"));
        let server = BackendServer::start(&b, SERVER);
        backends.push((b, server));
    }
    let h1 = c.host(0).underlay_v4.to_string();
    let (_, client_v4, _) = c.add_underlay_peer(1);
    let client_v4 = client_v4.to_string();
    let peer = &c.peers()[0];
    // The external IP is routed to h1, as a router in front of the cluster would.
    peer.exec_ok(&[
        "ip",
        "route",
        "add",
        &format!("{EXTERNAL_IP}/32"),
        "via",
        &h1,
    ]);

    let (ok, out) = apply(&c, &web("Cluster"));
    assert!(ok, "{out}");
    wait_backends(&c, "shop/web", Some("NodePort"), 3);
    wait_backends(&c, "shop/web", Some("ExternalIP"), 3);
    for (addr, port) in [(h1.as_str(), NODE_PORT), (EXTERNAL_IP, 80)] {
        let r = client(peer, addr, port, 200);
        let by = counts(&r);
        assert!(
            r["errors"].as_object().unwrap().is_empty(),
            "{addr}:{port}: {r}"
        );
        assert_eq!(by.values().sum::<u64>(), 200, "{addr}:{port}: {r}");
        assert_eq!(by.len(), 3, "every backend, both hosts: {addr}:{port}: {r}");
        for (name, n) in &by {
            assert!(*n >= 30, "{addr}:{port}: {name} took {n} of 200: {r}");
        }
        // h1's backend sees the client; h2's see h1, which SNATed them.
        let seen: Vec<&str> = r["seen"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(seen.contains(&client_v4.as_str()), "{r}");
        assert!(seen.contains(&h1.as_str()), "{r}");
        eprintln!("{addr}:{port}: {by:?}, seen {seen:?}");
    }

    // Local: only h1's backend, which sees the client's own address.
    let (ok, out) = apply(&c, &web("Local"));
    assert!(ok, "{out}");
    wait_backends(&c, "shop/web", Some("NodePort"), 1);
    let r = client(peer, &h1, NODE_PORT, 200);
    assert!(r["errors"].as_object().unwrap().is_empty(), "{r}");
    assert_eq!(
        counts(&r),
        BTreeMap::from([("web-a".to_string(), 200)]),
        "{r}"
    );
    assert_eq!(r["seen"], serde_json::json!([client_v4]), "{r}");
    drop(backends);
}
