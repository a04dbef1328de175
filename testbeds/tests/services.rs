//! Services end to end on a real two-host cluster (etcd, VXLAN, the agents' socket
//! balancers): a Service applied with `netctl` selects containers by label on both
//! hosts; a client container on h1 (its process in h1's agent's service cgroup, as a
//! container's would be under the host's root) reaches the cluster IP, IPv4 and IPv6,
//! TCP and UDP, spread over the backends by the Maglev table, and sees the cluster IP
//! as its peer. A backend removed leaves the table; a refused document changes
//! nothing; a deleted service stops translating.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use strait_testbeds::cluster::{Cluster, ClusterOpts, Container, Fabric};
use strait_testbeds::services::{
    BackendServer, ECHO_SERVER, apply, counts, python_in_cgroup, service, wait_backends,
};
use strait_testbeds::{require_root, wait_until};

const CONVERGE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);

/// `n` TCP connects to VIP:80 (each: the backend's name, the peer address the socket
/// shows) and, with `udp`, one datagram to VIP:53; JSON on stdout.
const CLIENT: &str = r#"
import collections, json, socket, sys
vip, n, udp = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "udp"
fam = socket.AF_INET6 if ":" in vip else socket.AF_INET
counts, peers, errors = collections.Counter(), set(), collections.Counter()
for _ in range(n):
    s = socket.socket(fam); s.settimeout(3)
    try:
        s.connect((vip, 80)); peers.add(s.getpeername()[0])
        counts[s.makefile("rb").readline().decode().strip()] += 1
    except OSError as e:
        errors[e.strerror or type(e).__name__] += 1
    finally:
        s.close()
out = {"counts": counts, "peers": sorted(peers), "errors": errors}
if udp:
    u = socket.socket(fam, socket.SOCK_DGRAM); u.settimeout(3)
    u.sendto(b"q", (vip, 53)); d, a = u.recvfrom(100)
    out["udp"] = [d.decode(), a[0]]
print(json.dumps(out))
"#;

/// A `netctl` that streams (`monitor`), its lines read on a thread; killed by its
/// PID on drop.
struct MonitorProcess {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl MonitorProcess {
    fn start(c: &Cluster, args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(strait_testbeds::bins::bin("netctl"))
            .arg("--socket")
            .arg(&c.host(0).agent.socket)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("exec netctl monitor");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if !line.trim().is_empty() && tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }
}

impl Drop for MonitorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the client in `c`'s namespace, its process in `cgroup` (the agent's service
/// cgroup, as a container's processes would be below it).
fn client(cgroup: &Path, c: &Container, vip: IpAddr, n: u32, udp: bool) -> Value {
    let (vip, n) = (vip.to_string(), n.to_string());
    let mode = if udp { "udp" } else { "tcp" };
    python_in_cgroup(cgroup, c.ns.name(), CLIENT, &[&vip, &n, mode])
}

const WEB: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ipFamilyPolicy: PreferDualStack
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: dns, port: 53, targetPort: 5353, protocol: UDP}
";

#[test]
fn a_service_spreads_connections_over_its_backends_on_both_hosts() {
    if !require_root("a_service_spreads_connections_over_its_backends_on_both_hosts") {
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
        let server = BackendServer::start(&b, ECHO_SERVER);
        backends.push((b, server));
    }
    let cl = c.add_container(0, "client");
    let cgroup = c.host(0).agent.service_cgroup();

    let (ok, out) = apply(&c, WEB);
    assert!(ok, "{out}");
    assert!(out.contains("service/web created (cluster IP "), "{out}");
    wait_backends(&c, "shop/web", None, 3);
    let svc = service(&c, "shop/web");
    let vips: Vec<IpAddr> = svc["cluster_ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(vips.len(), 2, "PreferDualStack: {svc}");

    for vip in &vips {
        let r = client(&cgroup, &cl, *vip, 300, true);
        let by = counts(&r);
        assert!(r["errors"].as_object().unwrap().is_empty(), "{vip}: {r}");
        assert_eq!(by.values().sum::<u64>(), 300, "{vip}: {r}");
        assert_eq!(by.len(), 3, "every backend, both hosts: {r}");
        for (name, n) in &by {
            assert!(*n >= 60, "{vip}: {name} took {n} of 300: {r}");
        }
        // The socket shows the service, not the backend.
        assert_eq!(r["peers"], serde_json::json!([vip.to_string()]), "{r}");
        assert_eq!(
            r["udp"][1],
            vip.to_string(),
            "UDP answers from the VIP: {r}"
        );
        eprintln!("{vip}: {by:?}, UDP answered by {}", r["udp"][0]);

        // The node counted each backend's connections as the client saw them.
        let shown = |proto_port: &str| -> Vec<u64> {
            let frontend = match vip {
                IpAddr::V4(a) => format!("{a}:{proto_port}"),
                IpAddr::V6(a) => format!("[{a}]:{proto_port}"),
            };
            let (ok, out) = c.host(0).netctl(&["-o", "json", "service", "list", "-w"]);
            assert!(ok, "{out}");
            let all: Value = serde_json::from_str(&out).unwrap();
            let f = all
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["frontends"].as_array().unwrap())
                .find(|f| f["frontend"] == frontend.as_str())
                .unwrap_or_else(|| panic!("{frontend} in {out}"))
                .clone();
            let mut n: Vec<u64> = f["backends"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["connections"].as_u64().unwrap())
                .collect();
            n.sort_unstable();
            n
        };
        let mut made: Vec<u64> = by.values().copied().collect();
        made.sort_unstable();
        assert_eq!(shown("80/TCP"), made, "{vip}: per-backend connections");
        assert_eq!(
            shown("53/UDP").iter().sum::<u64>(),
            1,
            "{vip}: one datagram"
        );
    }

    // `netctl monitor --service` shows the translations, named by the plan.
    let monitor = MonitorProcess::start(&c, &["-o", "json", "monitor", "--service", "shop/web"]);
    let deadline = std::time::Instant::now() + CONVERGE;
    let xlate = loop {
        // The monitor subscribes asynchronously: connect until a line comes.
        client(&cgroup, &cl, vips[0], 5, false);
        if let Ok(line) = monitor.lines.recv_timeout(Duration::from_secs(1)) {
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            break v["xlate"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no translation in the monitor"
        );
    };
    assert_eq!(xlate["service"], "shop/web", "{xlate}");
    assert_eq!(xlate["port_name"], "http", "{xlate}");
    assert_eq!(xlate["via"], "socket", "{xlate}");
    assert_eq!(xlate["frontend"], format!("{}:80", vips[0]), "{xlate}");
    assert!(
        xlate["backend"].as_str().unwrap().ends_with(":8080"),
        "{xlate}"
    );
    drop(monitor);

    // Services need no DNAT in the host's netfilter, so the fast path stays on.
    for h in c.hosts() {
        let fp = h.fast_path();
        assert!(
            fp.active,
            "{}: fast path off with services in use: {fp:?}",
            h.name
        );
    }

    // The agent restarts: the balancer stays attached with its maps, so connects are
    // translated while it is away, and after.
    c.stop_agent(0);
    let r = client(&cgroup, &cl, vips[0], 50, false);
    assert_eq!(
        counts(&r).values().sum::<u64>(),
        50,
        "while the agent is down: {r}"
    );
    c.start_agent(0);
    wait_backends(&c, "shop/web", None, 3);
    let r = client(&cgroup, &cl, vips[0], 50, false);
    assert_eq!(
        counts(&r).values().sum::<u64>(),
        50,
        "after the restart: {r}"
    );

    // A backend removed (CNI DEL): new connections avoid it.
    let (gone, server) = backends.remove(0);
    drop(server);
    let out = c.remove_container(&gone.name);
    assert!(out.ok(), "{out:?}");
    wait_backends(&c, "shop/web", None, 2);
    let r = client(&cgroup, &cl, vips[0], 100, false);
    let by = counts(&r);
    assert!(!by.contains_key("web-a"), "{r}");
    assert_eq!(by.values().sum::<u64>(), 100, "{r}");

    // A refused document changes nothing.
    let (ok, out) = apply(
        &c,
        &WEB.replace(
            "  ipFamilyPolicy: PreferDualStack\n",
            "  clusterIP: 10.95.0.1\n",
        ),
    );
    assert!(!ok, "{out}");
    assert!(out.contains("outside the service pool"), "{out}");
    assert_eq!(service(&c, "shop/web")["cluster_ips"], svc["cluster_ips"]);

    // Deleted: the address is nobody's and connects to it are not translated.
    let (ok, out) = c.host(0).netctl(&["service", "delete", "shop/web"]);
    assert!(ok, "{out}");
    wait_until("the service is gone from h1", CONVERGE, POLL, || {
        if service(&c, "shop/web").is_null() {
            Ok(())
        } else {
            Err("still listed".into())
        }
    })
    .unwrap();
    let r = client(&cgroup, &cl, vips[0], 3, false);
    assert!(
        counts(&r).is_empty(),
        "nothing answers a deleted service: {r}"
    );
    drop(backends);
}

/// A backend whose server stops (its container stays, ready as far as the runtime
/// knows) fails the service's TCP health check and leaves the table; connects avoid
/// it; started again, it comes back; with both down, connects are refused at once.
/// How long it took is printed, not asserted.
#[test]
fn a_backend_failing_its_health_check_leaves_and_comes_back() {
    if !require_root("a_backend_failing_its_health_check_leaves_and_comes_back") {
        return;
    }
    let mut c = Cluster::start(ClusterOpts::new(1, Fabric::Vxlan));
    let mut servers = BTreeMap::new();
    let mut containers = Vec::new();
    for name in ["web-a", "web-b"] {
        let b = c
            .try_add_container_with(0, name, |config| {
                config["args"] = serde_json::json!({"cni": {
                    "namespace": "shop",
                    "labels": [{"key": "app", "value": "web"}],
                }});
            })
            .unwrap_or_else(|o| panic!("ADD {name}: {o:?}"));
        servers.insert(name, BackendServer::start(&b, ECHO_SERVER));
        containers.push(b);
    }
    let cl = c.add_container(0, "client");
    let cgroup = c.host(0).agent.service_cgroup();
    let checked = WEB.replace(
        "metadata: {name: web, namespace: shop}",
        "metadata:\n  name: web\n  namespace: shop\n  annotations: {strait.io/health-check: tcp, strait.io/health-check-interval: 200ms}",
    );
    let (ok, out) = apply(&c, &checked);
    assert!(ok, "{out}");
    wait_backends(&c, "shop/web", None, 2);
    let vip: IpAddr = service(&c, "shop/web")["cluster_ips"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let stopped = std::time::Instant::now();
    drop(servers.remove("web-a"));
    wait_backends(&c, "shop/web", None, 1);
    eprintln!(
        "web-a held down {} ms after its server stopped (checks every 200 ms, fall 2)",
        stopped.elapsed().as_millis()
    );
    let s = service(&c, "shop/web");
    let down: Vec<&Value> = s["frontends"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["healthy"] == false)
        .collect();
    assert_eq!(down.len(), 1, "{s}");
    assert_eq!(down[0]["ready"], true, "ready, but failing its check: {s}");
    let r = client(&cgroup, &cl, vip, 50, false);
    assert_eq!(counts(&r).get("web-b"), Some(&50), "{r}");
    // The trace says which backend takes connections, and why the other does not.
    let (ok, out) = c
        .host(0)
        .netctl(&["service", "trace", "--to", &format!("{vip}:80")]);
    assert!(ok, "{out}");
    assert!(out.contains("shop/web port http (ClusterIP)"), "{out}");
    assert!(out.contains("held down: its health check fails"), "{out}");
    eprintln!("{out}");

    servers.insert("web-a", BackendServer::start(&containers[0], ECHO_SERVER));
    wait_backends(&c, "shop/web", None, 2);
    let r = client(&cgroup, &cl, vip, 100, false);
    assert_eq!(counts(&r).len(), 2, "both again: {r}");

    // Both fail: nothing is left, and a connect is refused at once (never a black
    // hole: the client's 3 s timeout would show).
    servers.clear();
    wait_backends(&c, "shop/web", None, 0);
    let r = client(&cgroup, &cl, vip, 20, false);
    assert!(counts(&r).is_empty(), "{r}");
    assert_eq!(
        r["errors"],
        serde_json::json!({"Connection refused": 20}),
        "every connect refused: {r}"
    );
}

/// `ports` ports, each a frontend of its own, over `backends` addresses outside the
/// cluster: over 327 backends every table has the largest size, 65 521 slots.
fn big(name: &str, ports: u16, backends: u32) -> String {
    let service_ports: Vec<String> = (1..=ports)
        .map(|p| format!("  - {{name: p{p}, port: {}, targetPort: 8080}}", 1000 + p))
        .collect();
    let slice_ports: Vec<String> = (1..=ports)
        .map(|p| format!("- {{name: p{p}, port: 8080, protocol: TCP}}"))
        .collect();
    let endpoints: Vec<String> = (0..backends)
        .map(|i| format!("- {{addresses: [\"198.18.{}.{}\"]}}", i / 250, i % 250 + 1))
        .collect();
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  ports:
{}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: shop
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports:
{}
endpoints:
{}
",
        service_ports.join("\n"),
        slice_ports.join("\n"),
        endpoints.join("\n")
    )
}

/// A file of more services than etcd takes in one transaction is written whole.
/// Bad input end to end: a file with one refused document creates nothing; a
/// service whose tables do not fit the datapath's slot map (1 Mi slots, 16 tables of
/// the largest size) gets what fits, the rest is reported with the map's name and
/// reason, and the service already there keeps answering. Deleted, its slots are
/// free again.
#[test]
fn a_refused_file_creates_nothing_and_a_full_map_leaves_other_services_intact() {
    if !require_root("a_refused_file_creates_nothing_and_a_full_map_leaves_other_services_intact") {
        return;
    }
    let mut c = Cluster::start(ClusterOpts::new(1, Fabric::Vxlan));
    let b = c
        .try_add_container_with(0, "web-a", |config| {
            config["args"] = serde_json::json!({"cni": {
                "namespace": "shop",
                "labels": [{"key": "app", "value": "web"}],
            }});
        })
        .unwrap_or_else(|o| panic!("ADD web-a: {o:?}"));
    let _server = BackendServer::start(&b, ECHO_SERVER);
    let cl = c.add_container(0, "client");
    let cgroup = c.host(0).agent.service_cgroup();

    // One document of two refused: neither is created.
    let bad = format!(
        "{WEB}---\n{}",
        WEB.replace("name: web,", "name: other,")
            .replace("port: 80,", "port: 70000,")
    );
    let (ok, out) = apply(&c, &bad);
    assert!(!ok, "{out}");
    assert!(
        out.contains("70000"),
        "the refusal names the field's value: {out}"
    );
    assert!(service(&c, "shop/web").is_null(), "nothing created: {out}");
    assert!(service(&c, "shop/other").is_null(), "{out}");

    // One file of 150 services: more than etcd takes in one transaction (128
    // operations), written in several, every one created with its address.
    let many: Vec<String> = (0..150)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: many-{i}, namespace: bulk}}\n\
                 spec:\n  ports:\n  - {{port: 80}}\n"
            )
        })
        .collect();
    let (ok, out) = apply(&c, &many.join("---\n"));
    assert!(ok, "{out}");
    assert_eq!(out.matches(" created (cluster IP ").count(), 150, "{out}");
    wait_until(
        "the 150 services listed, each its own cluster IP",
        CONVERGE,
        POLL,
        || {
            let (ok, out) = c.host(0).netctl(&["-o", "json", "service", "list"]);
            let listed: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
            let ips: std::collections::BTreeSet<String> = listed
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["name"].as_str().is_some_and(|n| n.starts_with("bulk/")))
                .filter_map(|s| s["cluster_ips"][0].as_str().map(String::from))
                .collect();
            if ok && ips.len() == 150 {
                Ok(())
            } else {
                Err(format!("{} distinct: {out}", ips.len()))
            }
        },
    )
    .unwrap();

    let (ok, out) = apply(&c, WEB);
    assert!(ok, "{out}");
    wait_backends(&c, "shop/web", None, 1);
    let vip: IpAddr = service(&c, "shop/web")["cluster_ips"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // 18 frontends of 65 521 slots each: more than the slot map holds.
    let (ok, out) = apply(&c, &big("big", 18, 400));
    assert!(ok, "{out}");
    let mut refused = Vec::new();
    wait_until(
        "big's frontends installed or refused",
        CONVERGE,
        POLL,
        || {
            let s = service(&c, "shop/big");
            refused = s["frontends"].as_array().cloned().unwrap_or_default();
            let settled = refused.len() == 18
                && refused
                    .iter()
                    .all(|f| f["installed"] == true || f["error"].is_string());
            if settled { Ok(()) } else { Err(s.to_string()) }
        },
    )
    .unwrap();
    let errors: Vec<&str> = refused.iter().filter_map(|f| f["error"].as_str()).collect();
    let installed = refused.iter().filter(|f| f["installed"] == true).count();
    eprintln!("big: {installed} of 18 frontends installed; refused: {errors:?}");
    assert!(!errors.is_empty(), "some frontend did not fit: {refused:?}");
    assert!(
        (14..=16).contains(&installed),
        "what fits is installed: {refused:?}"
    );
    for e in &errors {
        assert!(
            e.contains("strait_svc_slots") && e.contains("the map is full"),
            "the error names the map and why: {e}"
        );
    }
    let (ok, out) = c.host(0).netctl(&["service", "list"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("the map is full"),
        "netctl shows the refusal: {out}"
    );

    // The service that was there is intact.
    wait_backends(&c, "shop/web", None, 1);
    let r = client(&cgroup, &cl, vip, 30, true);
    assert_eq!(counts(&r).get("web-a"), Some(&30), "{r}");

    // Deleted: its slots are free again, for 15 tables of the largest size.
    let (ok, out) = c.host(0).netctl(&["service", "delete", "shop/big"]);
    assert!(ok, "{out}");
    let (ok, out) = apply(&c, &big("big2", 15, 400));
    assert!(ok, "{out}");
    wait_backends(&c, "shop/big2", None, 400);
    let r = client(&cgroup, &cl, vip, 10, false);
    assert_eq!(counts(&r).get("web-a"), Some(&10), "{r}");
}
