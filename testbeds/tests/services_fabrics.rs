//! Services on three hosts, once per fabric (VXLAN, host-gw, BGP): a Service with a
//! backend on every host, reached by its cluster IP from a container on every host,
//! from every host itself, and by its node port on every host from an underlay peer
//! outside the cluster. The scenario the operator relies on, end to end, with real
//! agents, etcd and the kernel:
//!
//! - 3 000 TCP connections from the three hosts' containers spread near-evenly over
//!   the three backends; UDP answers come from the cluster IP;
//! - `sessionAffinity: ClientIP` keeps each client on one backend, and
//!   `internalTrafficPolicy: Local` on its own host's;
//! - a backend taken out of a service while connections to it run: those connections
//!   go on (drained, as documented), new ones avoid it; a backend added takes new
//!   connections;
//! - kube-proxy's iptables DNAT rules for another service beside strait's: both
//!   services answer, `--fast-path auto` turns the fast path off while the foreign
//!   DNAT is there (as documented) and back on once it is gone;
//! - the fast path is on on every host throughout the rest.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use strait_testbeds::cluster::{Cluster, ClusterOpts, Container, Fabric};
use strait_testbeds::netns::Netns;
use strait_testbeds::services::{
    BackendServer, ECHO_SERVER, apply, counts, python_in, python_in_cgroup, service_on,
    wait_backends_on,
};
use strait_testbeds::{require_root, wait_until};

const CONVERGE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);
const NODE_PORT: u16 = 30080;
const UDP_NODE_PORT: u16 = 30053;
/// kube-proxy's service, outside strait's service pool: strait leaves it alone.
const KUBE_VIP: &str = "172.30.0.10";

/// `ADDR PORT N UDP_PORT M`: N TCP connects (each reads the backend's name and
/// closes), then M datagrams to UDP_PORT (0: none), each from a socket of its own;
/// JSON: answers by backend, the TCP peers and UDP sources the sockets showed, errors.
/// A black hole still shows as an error: 10 s per connection (not 3: the machine is
/// shared and a loaded one is slow to run a backend's thread), and a datagram is sent
/// up to three times, as a UDP client would, from its socket (the same backend).
const CLIENT: &str = r#"
import collections, json, socket, sys
addr, port, n, uport, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
counts, udp, peers, sources, errors = (collections.Counter(), collections.Counter(), set(),
                                        set(), collections.Counter())
for _ in range(n):
    s = socket.socket(fam); s.settimeout(10)
    try:
        s.connect((addr, port)); peers.add(s.getpeername()[0])
        counts[s.makefile("rb").readline().decode().strip()] += 1
    except OSError as e:
        errors[e.strerror or type(e).__name__] += 1
    finally:
        s.close()
for _ in range(m):
    u = socket.socket(fam, socket.SOCK_DGRAM); u.settimeout(2)
    u.connect((addr, uport))
    for attempt in range(3):
        try:
            u.send(b"q"); d, a = u.recvfrom(100)
            udp[d.decode()] += 1; sources.add(a[0])
            break
        except socket.timeout:
            if attempt == 2:
                errors["udp timeout"] += 1
        except OSError as e:
            errors["udp " + (e.strerror or type(e).__name__)] += 1
            break
    u.close()
print(json.dumps({"counts": counts, "udp": udp, "peers": sorted(peers),
                  "sources": sorted(sources), "errors": errors}))
"#;

/// `ADDR PORT N`: opens N connections and prints the backends' names as JSON; then,
/// for each line on stdin, sends a line on every connection and prints how many
/// echoed it back.
const HOLDER: &str = r#"
import json, socket, sys
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns, names = [], []
for i in range(n):
    try:
        s = socket.create_connection((addr, port), timeout=10)
        f = s.makefile("rb")
        conns.append((s, f)); names.append(f.readline().decode().strip())
    except OSError as e:
        print(json.dumps({"error": "connection %d of %d to %s:%d: %s" % (i + 1, n, addr, port, e)}), flush=True)
        sys.exit(1)
print(json.dumps({"names": names}), flush=True)
for line in sys.stdin:
    ok = 0
    for s, f in conns:
        try:
            s.sendall(b"ping\n")
            if f.readline() == b"ping\n":
                ok += 1
        except OSError:
            pass
    print(json.dumps({"echoed": ok}), flush=True)
"#;

/// A selector service for the spread, and a sticky one (ClientIP affinity) over the
/// same backends.
const WEB: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  type: NodePort
  ipFamilyPolicy: PreferDualStack
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080, nodePort: 30080}
  - {name: dns, port: 53, targetPort: 5353, protocol: UDP, nodePort: 30053}
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: shop}
spec:
  selector: {app: web}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  ports:
  - {name: http, port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: near, namespace: shop}
spec:
  selector: {app: web}
  internalTrafficPolicy: Local
  ports:
  - {name: http, port: 80, targetPort: 8080}
";

/// A service without a selector whose backends an EndpointSlice lists: taking one
/// out of the slice removes it from the service while its container (and its open
/// connections) live on.
fn listed(backends: &[&Container]) -> String {
    let endpoints: Vec<String> = backends
        .iter()
        .map(|b| format!("  - {{addresses: [\"{}\"]}}", b.ip4()))
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: api, namespace: shop}}
spec:
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: api-1
  namespace: shop
  labels: {{kubernetes.io/service-name: api}}
addressType: IPv4
ports:
- {{name: http, port: 8080, protocol: TCP}}
endpoints:
{}
",
        endpoints.join("\n")
    )
}

fn cluster(fabric: Fabric) -> Cluster {
    Cluster::start(ClusterOpts::new(3, fabric))
}

fn cluster_ip(c: &Cluster, name: &str, family: usize) -> IpAddr {
    let s = service_on(c, 0, name);
    s["cluster_ips"][family]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no cluster IP {family}: {s}"))
        .parse()
        .unwrap()
}

/// [`CLIENT`] in `ns`, its process in `cgroup`.
fn client(cgroup: &Path, ns: &str, addr: IpAddr, port: u16, n: u32, udp: u32) -> Value {
    let (addr, port, n, udp) = (
        addr.to_string(),
        port.to_string(),
        n.to_string(),
        udp.to_string(),
    );
    python_in_cgroup(cgroup, ns, CLIENT, &[&addr, &port, &n, "53", &udp])
}

/// [`CLIENT`] from an underlay peer (no agent, no socket balancer there) to `addr`'s
/// node ports: `n` TCP connects, `udp` datagrams.
fn outside_client(peer: &Netns, addr: &str, n: u32, udp: u32) -> Value {
    let (port, n) = (NODE_PORT.to_string(), n.to_string());
    let (uport, udp) = (UDP_NODE_PORT.to_string(), udp.to_string());
    python_in(peer, CLIENT, &[addr, &port, &n, &uport, &udp])
}

/// A [`CLIENT`] run with every one of its `tcp` connects and `udp` datagrams
/// answered, the datagrams from `source` (the address the client sent them to).
fn all_answered(r: &Value, what: &str, tcp: u64, udp: u64, source: &str) {
    no_errors(r, what);
    assert_eq!(counts(r).values().sum::<u64>(), tcp, "{what}: {r}");
    let answers: u64 = r["udp"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    assert_eq!(answers, udp, "{what}: UDP: {r}");
    if udp > 0 {
        assert_eq!(
            r["sources"],
            json!([source]),
            "{what}: UDP answered from: {r}"
        );
    }
}

fn no_errors(r: &Value, what: &str) {
    assert!(
        r["errors"].as_object().is_some_and(|e| e.is_empty()),
        "{what}: {r}"
    );
}

fn assert_fast_path_on(c: &Cluster, when: &str) {
    for h in c.hosts() {
        let fp = h.fast_path();
        assert!(fp.active, "{}: fast path off {when}: {fp:?}", h.name);
    }
}

/// [`HOLDER`] run by a container's process in its host's service cgroup; killed by
/// PID on drop.
struct Holder {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Holder {
    /// `n` connections to `addr:port` from namespace `ns`, the process in `cgroup`
    /// when given (the socket balancer's clients), and the backends they reached.
    fn open(cgroup: Option<&Path>, ns: &str, addr: &str, port: u16, n: u32) -> (Self, Vec<String>) {
        let join = cgroup
            .map(|g| format!("echo $$ > {}/cgroup.procs && ", g.display()))
            .unwrap_or_default();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{join}exec ip netns exec {ns} python3 -c \"$0\" \"$@\""
            ))
            .arg(HOLDER)
            .args([addr.to_string(), port.to_string(), n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("holder");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut h = Self { child, out };
        let v = h.line();
        let names = v["names"]
            .as_array()
            .unwrap_or_else(|| panic!("holder: {v}"))
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        (h, names)
    }

    fn line(&mut self) -> Value {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("holder output");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("holder: {e}: {line:?}"))
    }

    /// How many of the held connections echo a line now.
    fn echoed(&mut self) -> u64 {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(b"go\n")
            .and_then(|()| stdin.flush())
            .expect("holder stdin");
        let v = self.line();
        v["echoed"]
            .as_u64()
            .unwrap_or_else(|| panic!("holder: {v}"))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// kube-proxy's iptables mode for one ClusterIP service with two endpoints, as it
/// writes them (KUBE-SERVICES → KUBE-SVC → KUBE-SEP with `statistic`, jumped to from
/// PREROUTING and OUTPUT), in `host`'s own namespace.
fn kube_proxy_rules(a: IpAddr, b: IpAddr) -> String {
    format!(
        "*nat
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-STRAITTEST - [0:0]
:KUBE-SEP-STRAITTESTA - [0:0]
:KUBE-SEP-STRAITTESTB - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-SERVICES -d {KUBE_VIP}/32 -p tcp -m comment --comment \"shop/kube:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-STRAITTEST
-A KUBE-SVC-STRAITTEST -m comment --comment \"shop/kube:http -> {a}:8080\" -m statistic --mode random --probability 0.5 -j KUBE-SEP-STRAITTESTA
-A KUBE-SVC-STRAITTEST -m comment --comment \"shop/kube:http -> {b}:8080\" -j KUBE-SEP-STRAITTESTB
-A KUBE-SEP-STRAITTESTA -s {a}/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-STRAITTESTA -p tcp -m tcp -j DNAT --to-destination {a}:8080
-A KUBE-SEP-STRAITTESTB -s {b}/32 -j KUBE-MARK-MASQ
-A KUBE-SEP-STRAITTESTB -p tcp -m tcp -j DNAT --to-destination {b}:8080
COMMIT
"
    )
}

fn iptables_restore(c: &Cluster, host: usize, rules: &str) {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            c.host(host).ns.name(),
            "iptables-restore",
            "--noflush",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("iptables-restore");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(rules.as_bytes())
        .expect("rules");
    assert!(child.wait().expect("iptables-restore").success(), "{rules}");
}

fn scenario(fabric: Fabric) {
    let mut c = cluster(fabric);
    let mut servers = BTreeMap::new();
    let mut backends = BTreeMap::new();
    for (name, host) in [("web-a", 0), ("web-b", 1), ("web-c", 2)] {
        let b = c
            .try_add_container_with(host, name, |config| {
                config["args"] = json!({"cni": {
                    "namespace": "shop",
                    "labels": [{"key": "app", "value": "web"}],
                }});
            })
            .unwrap_or_else(|o| panic!("ADD {name}: {o:?}"));
        servers.insert(name.to_string(), BackendServer::start(&b, ECHO_SERVER));
        backends.insert(name.to_string(), b);
    }
    let clients: Vec<Arc<Container>> = (0..3)
        .map(|h| c.add_container(h, &format!("client-{}", h + 1)))
        .collect();
    let cgroups: Vec<_> = c.hosts().iter().map(|h| h.agent.service_cgroup()).collect();

    let (ok, out) = apply(&c, WEB);
    assert!(ok, "{out}");
    for h in 0..3 {
        wait_backends_on(&c, h, "shop/web", None, 3);
        wait_backends_on(&c, h, "shop/sticky", None, 3);
        wait_backends_on(&c, h, "shop/near", None, 1);
    }
    let vip4 = cluster_ip(&c, "shop/web", 0);
    let vip6 = cluster_ip(&c, "shop/web", 1);

    // From a container on every host: 1 000 connections each, and UDP.
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    for (h, cl) in clients.iter().enumerate() {
        let r = client(&cgroups[h], cl.ns.name(), vip4, 80, 1000, 20);
        all_answered(&r, &cl.name, 1000, 20, &vip4.to_string());
        assert_eq!(r["peers"], json!([vip4.to_string()]), "{r}");
        for (name, n) in counts(&r) {
            *total.entry(name).or_default() += n;
        }
    }
    eprintln!("{fabric:?}: 3 000 connections from the three hosts' containers: {total:?}");
    assert_eq!(total.len(), 3, "every backend: {total:?}");
    for (name, n) in &total {
        // 1 000 each is even; 850..=1150 is over 5 standard deviations of a fair split.
        assert!(
            (850..=1150).contains(n),
            "{name} took {n} of 3 000: {total:?}"
        );
    }

    // IPv6, from h2's container.
    let r = client(&cgroups[1], clients[1].ns.name(), vip6, 80, 150, 5);
    all_answered(&r, "IPv6", 150, 5, &vip6.to_string());
    assert_eq!(counts(&r).len(), 3, "{r}");

    // From every host itself (its own processes, in its agent's service cgroup).
    for (h, host) in c.hosts().iter().enumerate() {
        let r = client(&cgroups[h], host.ns.name(), vip4, 80, 150, 10);
        all_answered(&r, &host.name, 150, 10, &vip4.to_string());
        assert_eq!(counts(&r).len(), 3, "{}: {r}", host.name);
    }

    // The node port of every host, from outside the cluster.
    let (_, peer_v4, _) = c.add_underlay_peer(1);
    let peer_v4 = peer_v4.to_string();
    for h in 0..3 {
        wait_backends_on(&c, h, "shop/web", Some("NodePort"), 3);
    }
    let addrs = c
        .hosts()
        .iter()
        .flat_map(|h| [h.underlay_v4.to_string(), h.underlay_v6.to_string()]);
    for addr in addrs.collect::<Vec<_>>() {
        let r = outside_client(&c.peers()[0], &addr, 150, 20);
        let what = format!("{peer_v4} to {addr}'s node ports");
        all_answered(&r, &what, 150, 20, &addr);
        assert_eq!(counts(&r).len(), 3, "{what}: {r}");
    }
    // Every host's node port from a container on every host (a pod that reaches a
    // service by a node's address, as an ingress controller configured with node
    // addresses does).
    for (h, cl) in clients.iter().enumerate() {
        for host in c.hosts() {
            let addr: IpAddr = host.underlay_v4.into();
            let r = client(&cgroups[h], cl.ns.name(), addr, NODE_PORT, 60, 0);
            no_errors(&r, &format!("{} to {addr}:{NODE_PORT}", cl.name));
            assert_eq!(counts(&r).values().sum::<u64>(), 60, "{r}");
        }
    }
    assert_fast_path_on(&c, "with services in use");

    // h1's agent restarts while connections run, through its socket balancer and
    // through its node port (the packet-level flows, some SNATed to other hosts):
    // programs and maps stay, so every one of them goes on.
    let h1 = c.host(0).underlay_v4.to_string();
    let (mut inside, _) = Holder::open(
        Some(&cgroups[0]),
        clients[0].ns.name(),
        &vip4.to_string(),
        80,
        30,
    );
    let (mut outside, names) = Holder::open(None, c.peers()[0].name(), &h1, NODE_PORT, 30);
    assert!(
        names.iter().any(|n| n != "web-a"),
        "some node port connections SNATed to another host: {names:?}"
    );
    c.restart_agent(0);
    wait_backends_on(&c, 0, "shop/web", None, 3);
    assert_eq!(
        inside.echoed(),
        30,
        "socket-balanced connections across a restart"
    );
    assert_eq!(
        outside.echoed(),
        30,
        "node port connections across a restart"
    );
    drop((inside, outside));

    // ClientIP affinity: each client stays on one backend.
    let sticky = cluster_ip(&c, "shop/sticky", 0);
    for (h, cl) in clients.iter().enumerate() {
        let r = client(&cgroups[h], cl.ns.name(), sticky, 80, 50, 0);
        no_errors(&r, "sticky");
        assert_eq!(counts(&r).len(), 1, "{}: affinity: {r}", cl.name);
    }

    // internalTrafficPolicy: Local: each host's clients reach its own backend only.
    let near = cluster_ip(&c, "shop/near", 0);
    for (h, cl) in clients.iter().enumerate() {
        let r = client(&cgroups[h], cl.ns.name(), near, 80, 30, 0);
        all_answered(&r, "internalTrafficPolicy: Local", 30, 0, "");
        let own = ["web-a", "web-b", "web-c"][h];
        assert_eq!(
            counts(&r).keys().collect::<Vec<_>>(),
            [own],
            "{}: {r}",
            cl.name
        );
    }

    // A backend taken out of a service while connections to it run.
    let all: Vec<&Container> = backends.values().map(|b| b.as_ref()).collect();
    let (ok, out) = apply(&c, &listed(&all));
    assert!(ok, "{out}");
    for h in 0..3 {
        wait_backends_on(&c, h, "shop/api", None, 3);
    }
    let api = cluster_ip(&c, "shop/api", 0);
    let (mut held, names) = Holder::open(
        Some(&cgroups[0]),
        clients[0].ns.name(),
        &api.to_string(),
        80,
        30,
    );
    let on_c = names.iter().filter(|n| *n == "web-c").count() as u64;
    assert!(on_c > 0, "some held connections on web-c: {names:?}");
    let (ok, out) = apply(&c, &listed(&[&backends["web-a"], &backends["web-b"]]));
    assert!(ok, "{out}");
    for h in 0..3 {
        wait_backends_on(&c, h, "shop/api", None, 2);
    }
    // Drained, not reset: every held connection, web-c's too, still echoes.
    assert_eq!(held.echoed(), 30, "held connections after web-c left");
    let r = client(&cgroups[0], clients[0].ns.name(), api, 80, 200, 0);
    no_errors(&r, "after web-c left");
    assert!(
        !counts(&r).contains_key("web-c"),
        "new connections avoid web-c: {r}"
    );
    assert_eq!(counts(&r).values().sum::<u64>(), 200, "{r}");

    // A backend added takes new connections.
    let d = c
        .try_add_container_with(2, "web-d", |config| {
            config["args"] = json!({"cni": {"namespace": "shop"}});
        })
        .unwrap_or_else(|o| panic!("ADD web-d: {o:?}"));
    servers.insert("web-d".into(), BackendServer::start(&d, ECHO_SERVER));
    let (ok, out) = apply(&c, &listed(&[&backends["web-a"], &backends["web-b"], &d]));
    assert!(ok, "{out}");
    for h in 0..3 {
        wait_backends_on(&c, h, "shop/api", None, 3);
    }
    let r = client(&cgroups[1], clients[1].ns.name(), api, 80, 300, 0);
    no_errors(&r, "after web-d joined");
    let by = counts(&r);
    assert!(
        by.get("web-d").is_some_and(|n| *n >= 50),
        "web-d takes its share: {r}"
    );
    assert!(!by.contains_key("web-c"), "{r}");
    assert_eq!(held.echoed(), 30, "held connections after web-d joined");
    drop(held);

    // kube-proxy's DNAT rules beside, on h1.
    iptables_restore(
        &c,
        0,
        &kube_proxy_rules(backends["web-a"].ip4(), backends["web-b"].ip4()),
    );
    wait_until(
        "h1's fast path off for kube-proxy's DNAT",
        CONVERGE,
        POLL,
        || {
            let fp = c.host(0).fast_path();
            if fp.active {
                Err(format!("{fp:?}"))
            } else {
                Ok(())
            }
        },
    )
    .unwrap();
    let fp = c.host(0).fast_path();
    eprintln!("{fabric:?}: h1 with kube-proxy's rules: {fp:?}");
    assert!(
        fp.reason
            .as_deref()
            .is_some_and(|r| r.contains("kube-proxy")),
        "the reason names kube-proxy: {fp:?}"
    );
    let r = client(&cgroups[0], clients[0].ns.name(), vip4, 80, 150, 5);
    no_errors(&r, "strait's service beside kube-proxy's rules");
    assert_eq!(counts(&r).len(), 3, "{r}");
    let kube: IpAddr = KUBE_VIP.parse().unwrap();
    let r = client(&cgroups[0], clients[0].ns.name(), kube, 80, 60, 0);
    no_errors(&r, "kube-proxy's service");
    let by = counts(&r);
    assert_eq!(by.values().sum::<u64>(), 60, "{r}");
    assert!(
        by.keys().all(|k| k == "web-a" || k == "web-b"),
        "kube-proxy's endpoints only: {r}"
    );
    let r = outside_client(&c.peers()[0], &c.host(0).underlay_v4.to_string(), 60, 5);
    no_errors(&r, "node port beside kube-proxy's rules");
    // Gone again: the fast path comes back.
    iptables_restore(
        &c,
        0,
        "*nat\n-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -D OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -F KUBE-SERVICES\n-F KUBE-SVC-STRAITTEST\n-F KUBE-SEP-STRAITTESTA\n\
         -F KUBE-SEP-STRAITTESTB\n-F KUBE-MARK-MASQ\n-X KUBE-SERVICES\n-X KUBE-SVC-STRAITTEST\n\
         -X KUBE-SEP-STRAITTESTA\n-X KUBE-SEP-STRAITTESTB\n-X KUBE-MARK-MASQ\nCOMMIT\n",
    );
    wait_until("h1's fast path back on", CONVERGE, POLL, || {
        let fp = c.host(0).fast_path();
        if fp.active {
            Ok(())
        } else {
            Err(format!("{fp:?}"))
        }
    })
    .unwrap();
    assert_fast_path_on(&c, "after kube-proxy's rules left");
    drop(servers);
}

#[test]
fn services_on_three_hosts_over_vxlan() {
    if require_root("services_on_three_hosts_over_vxlan") {
        scenario(Fabric::Vxlan);
    }
}

#[test]
fn services_on_three_hosts_over_host_gw() {
    if require_root("services_on_three_hosts_over_host_gw") {
        scenario(Fabric::HostGw);
    }
}

#[test]
fn services_on_three_hosts_over_bgp() {
    if require_root("services_on_three_hosts_over_bgp") {
        scenario(Fabric::Bgp);
    }
}
