//! `netctl doctor` and `netctl topology` against real agents: three hosts on the
//! VXLAN fabric with etcd, a container on each. Healthy, every check is ok and the
//! exit status 0, on one node and with `--all-nodes`; then one fault at a time, each
//! put right before the next: IP forwarding off, an FDB entry deleted behind the
//! agent, a host whose underlay MTU is smaller than the others', a leaked address,
//! etcd stopped. Each must be named by its check with the right exit status. The
//! topology is checked as DOT by Graphviz's `dot` and as the SVG netctl draws.
//!
//! Root, etcd and Graphviz needed.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use strait_testbeds::cluster::probe;
use strait_testbeds::cluster::underlay::UNDERLAY_DEV;
use strait_testbeds::cluster::{Cluster, ClusterHost, ClusterOpts, Fabric, VXLAN_DEV};
use strait_testbeds::wait_until;

const CONVERGE: Duration = Duration::from_secs(40);
const POLL: Duration = Duration::from_millis(500);

fn privileged(test: &str) -> bool {
    strait_testbeds::require_root(test) && strait_testbeds::etcd::require_etcd(test)
}

/// Every host's own CNI config directory, given to its agent as `--cni-conf-dir` (the
/// hosts of the bed share one file system, where nodes each have an /etc/cni/net.d),
/// holding a valid strait conflist that names that host's socket. The plugin directory
/// is the build's.
struct CniDirs {
    confs: Vec<tempfile::TempDir>,
    bin: PathBuf,
}

impl CniDirs {
    fn new(hosts: usize) -> Self {
        let bin = strait_testbeds::bins::bin("strait")
            .parent()
            .expect("plugin dir")
            .to_path_buf();
        Self {
            confs: (0..hosts)
                .map(|_| tempfile::tempdir().expect("tempdir"))
                .collect(),
            bin,
        }
    }

    /// The agents' flags, by host.
    fn add_flags(&self, opts: &mut ClusterOpts) {
        for (i, conf) in self.confs.iter().enumerate() {
            let flags = ["--cni-conf-dir", &conf.path().display().to_string()]
                .into_iter()
                .chain(["--cni-bin-dir", &self.bin.display().to_string()])
                .map(str::to_string)
                .collect();
            opts.host_extra.push((i, flags));
        }
    }

    /// Each host's conflist, once its agent's socket is known.
    fn write(&self, cluster: &Cluster) {
        for (conf, host) in self.confs.iter().zip(cluster.hosts()) {
            let list = serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "podnet",
                "plugins": [{"type": "strait", "socket": host.agent.socket}],
            });
            std::fs::write(conf.path().join("10-strait.conflist"), list.to_string())
                .expect("write conflist");
        }
    }
}

/// `netctl doctor -o json` on `host`, each agent checking its own CNI directories:
/// exit code and report.
fn doctor(host: &ClusterHost, all_nodes: bool) -> (i32, Value) {
    let mut args = vec![
        "--socket".to_string(),
        host.agent.socket.display().to_string(),
        "doctor".into(),
        "-o".into(),
        "json".into(),
    ];
    if all_nodes {
        args.push("--all-nodes".into());
    }
    let out = std::process::Command::new(strait_testbeds::bins::bin("netctl"))
        .args(&args)
        .output()
        .expect("run netctl doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "doctor's JSON: {e}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// The check `name` of node `node` in a report.
fn check<'a>(report: &'a Value, node: &str, name: &str) -> &'a Value {
    report["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["node"] == node)
        .flat_map(|n| n["checks"].as_array().into_iter().flatten())
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} of {node} in {report:#}"))
}

/// Every check of every node that is not ok or skip, as `node/check: detail`.
fn findings(report: &Value) -> Vec<String> {
    let mut out = vec![];
    for n in report["nodes"].as_array().into_iter().flatten() {
        for c in n["checks"].as_array().into_iter().flatten() {
            if c["verdict"] != "ok" && c["verdict"] != "skip" {
                out.push(format!(
                    "{}/{}: {} {}",
                    n["node"], c["name"], c["verdict"], c["detail"]
                ));
            }
        }
    }
    for c in report["cluster"].as_array().into_iter().flatten() {
        if c["verdict"] != "ok" && c["verdict"] != "skip" {
            out.push(format!(
                "cluster/{}: {} {}",
                c["name"], c["verdict"], c["detail"]
            ));
        }
    }
    out
}

/// Ok once the doctor finds nothing on `host` (every node with `all_nodes`).
fn healthy(host: &ClusterHost, all_nodes: bool) -> Result<(), String> {
    let (code, report) = doctor(host, all_nodes);
    match code {
        0 => Ok(()),
        _ => Err(format!("exit {code}: {:?}", findings(&report))),
    }
}

#[test]
fn doctor_names_each_fault_and_topology_draws_the_cluster() {
    if !privileged("doctor_names_each_fault_and_topology_draws_the_cluster") {
        return;
    }
    let dirs = CniDirs::new(3);
    let mut opts = ClusterOpts::new(3, Fabric::Vxlan);
    dirs.add_flags(&mut opts);
    let mut cluster = Cluster::start(opts);
    dirs.write(&cluster);
    let a = cluster.add_container(0, "a");
    let b = cluster.add_container(1, "b");
    let c = cluster.add_container(2, "c");
    for (from, to) in [(&a, &b), (&b, &c), (&c, &a)] {
        probe::wait_ping(&from.ns, to.ip4(), CONVERGE).expect("mesh");
    }
    let (h1, h2, h3) = (cluster.host(0), cluster.host(1), cluster.host(2));

    // Healthy: every check ok (or not applicable), exit 0, here and everywhere.
    let started = std::time::Instant::now();
    let (code, report) = doctor(h1, false);
    let one = started.elapsed();
    assert_eq!(findings(&report), Vec::<String>::new(), "{report:#}");
    assert_eq!(code, 0);
    assert_eq!(
        check(&report, "h1", "mtu-path")["verdict"],
        "ok",
        "{report:#}"
    );
    let started = std::time::Instant::now();
    let (code, report) = doctor(h1, true);
    let all = started.elapsed();
    assert_eq!(findings(&report), Vec::<String>::new(), "{report:#}");
    assert_eq!(code, 0);
    assert_eq!(
        report["nodes"].as_array().map(Vec::len),
        Some(3),
        "{report:#}"
    );
    // Figures for the record, not asserted (shared machines are noisy).
    println!("netctl doctor took {one:.2?} on one node, {all:.2?} with --all-nodes (3 nodes)");

    // Topology: DOT that Graphviz renders, and netctl's own SVG.
    topology(h1);

    // IP forwarding off on h2.
    h2.ns.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
    let (code, report) = doctor(h2, false);
    h2.ns.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let c = check(&report, "h2", "ip-forwarding");
    assert_eq!(c["verdict"], "fail", "{report:#}");
    assert!(
        c["fix"].as_str().unwrap().contains("net.ipv4.ip_forward=1"),
        "{c}"
    );
    assert_eq!(code, 2);

    // An FDB entry deleted behind the agent's back (it puts it back within its resync:
    // if that happened before the doctor looked, delete again).
    let mut seen = false;
    for _ in 0..3 {
        let fdb = h1.vxlan_fdb();
        let (mac, dst) = fdb
            .iter()
            .find_map(|(mac, dst)| Some((mac.clone(), (*dst)?)))
            .expect("an FDB entry with a destination");
        let dst = dst.to_string();
        h1.ns
            .exec_ok(&["bridge", "fdb", "del", &mac, "dev", VXLAN_DEV, "dst", &dst]);
        let (code, report) = doctor(h1, false);
        let c = check(&report, "h1", "fabric");
        if c["verdict"] == "fail" {
            assert!(c["detail"].as_str().unwrap().contains(&mac), "{c}");
            assert!(c["fix"].is_string(), "{c}");
            assert_eq!(code, 2);
            seen = true;
            break;
        }
        // Put back already: the next resync is 30 s away.
        assert!(h1.vxlan_fdb().iter().any(|(m, _)| *m == mac), "{report:#}");
    }
    assert!(seen, "a deleted FDB entry was never reported");
    wait_until("the fabric puts the FDB entry back", CONVERGE, POLL, || {
        healthy(h1, false)
    })
    .unwrap();

    // h3's underlay carries less than the others': its own check sees its containers'
    // MTU exceed it, and h1's DF probe finds full-size packets to h3 lost.
    h3.ns
        .exec_ok(&["ip", "link", "set", "dev", UNDERLAY_DEV, "mtu", "1400"]);
    let (code3, report3) = doctor(h3, false);
    let (code1, report1) = doctor(h1, false);
    h3.ns
        .exec_ok(&["ip", "link", "set", "dev", UNDERLAY_DEV, "mtu", "1500"]);
    let local = check(&report3, "h3", "mtu");
    assert_eq!(local["verdict"], "fail", "{report3:#}");
    assert!(local["fix"].as_str().unwrap().contains("--mtu"), "{local}");
    assert_eq!(code3, 2);
    let path = check(&report1, "h1", "mtu-path");
    assert_eq!(path["verdict"], "fail", "{report1:#}");
    assert!(path["detail"].as_str().unwrap().contains("h3"), "{path}");
    assert!(!path["detail"].as_str().unwrap().contains("h2"), "{path}");
    assert_eq!(code1, 2);
    wait_until("h3 healthy with its MTU back", CONVERGE, POLL, || {
        healthy(h3, false)
    })
    .unwrap();

    // A leaked address: a container's netns deleted without a CNI DEL.
    let leak = cluster.add_container(1, "leak");
    let leaked = leak.ip4().to_string();
    let h2 = cluster.host(1);
    let out = std::process::Command::new("ip")
        .args(["netns", "delete", leak.ns.name()])
        .output()
        .expect("ip netns delete");
    assert!(out.status.success());
    let (code, report) = doctor(h2, false);
    let c = check(&report, "h2", "ipam-leaks");
    assert_eq!(c["verdict"], "warn", "{report:#}");
    assert!(c["detail"].as_str().unwrap().contains(&leaked), "{c}");
    assert!(c["fix"].as_str().unwrap().contains("ipam release"), "{c}");
    assert_eq!(code, 1, "a leak alone is a warning: {report:#}");
    cluster.remove_container("leak");

    // etcd stopped: the store check fails, in bounded time, and names the fix.
    cluster.kill_etcd();
    let (code, report) = doctor(cluster.host(0), false);
    cluster.restart_etcd();
    let c = check(&report, "h1", "store");
    assert_eq!(c["verdict"], "fail", "{report:#}");
    assert!(c["fix"].as_str().unwrap().contains("etcd"), "{c}");
    assert_eq!(code, 2);
    wait_until(
        "healthy once etcd is back",
        Duration::from_secs(60),
        POLL,
        || healthy(cluster.host(0), true),
    )
    .unwrap();
}

/// `netctl topology`: the tree names every node; `-o dot` is rendered by Graphviz;
/// `-o svg FILE` is a picture naming every node.
fn topology(h1: &ClusterHost) {
    let (ok, tree) = h1.netctl(&["topology"]);
    assert!(ok, "{tree}");
    for n in ["h1", "h2", "h3"] {
        assert!(tree.contains(n), "{tree}");
    }
    let (ok, dot) = h1.netctl(&["topology", "-o", "dot"]);
    assert!(ok, "{dot}");
    let svg = render_dot(&dot);
    for n in ["h1", "h2", "h3"] {
        assert!(svg.contains(n), "Graphviz's SVG lacks {n}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cluster.svg");
    let (ok, out) = h1.netctl(&["topology", "-o", "svg", file.to_str().expect("utf-8")]);
    assert!(ok, "{out}");
    let own = std::fs::read_to_string(&file).expect("svg written");
    assert!(
        own.contains("<svg") && own.trim_end().ends_with("</svg>"),
        "{own}"
    );
    for n in ["h1", "h2", "h3"] {
        assert!(own.contains(n), "netctl's SVG lacks {n}");
    }
}

fn render_dot(dot: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("Graphviz's dot (apt install graphviz)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(dot.as_bytes())
        .expect("write DOT");
    let out = child.wait_with_output().expect("dot");
    assert!(
        out.status.success(),
        "dot refused the DOT: {}\n{dot}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 svg")
}

/// `netctl topology -o json` on `host`: exit code and what it drew.
fn topology_json(host: &ClusterHost) -> (i32, Value) {
    let out = std::process::Command::new(strait_testbeds::bins::bin("netctl"))
        .arg("--socket")
        .arg(&host.agent.socket)
        .args(["topology", "-o", "json"])
        .output()
        .expect("run netctl topology");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("topology JSON: {e}: {text}"));
    (out.status.code().unwrap_or(-1), v)
}

/// The BGP links of a topology, as (a, b, up, reflector).
fn bgp_links(topo: &Value) -> Vec<(String, String, bool, Option<String>)> {
    topo["links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["kind"] == "bgp")
        .map(|l| {
            (
                l["a"].as_str().unwrap_or_default().to_string(),
                l["b"].as_str().unwrap_or_default().to_string(),
                l["up"] == true,
                l["reflector"].as_str().map(str::to_string),
            )
        })
        .collect()
}

/// The BGP fabric with h1 as route reflector: doctor's `bgp` check and the topology's
/// sessions (reflector marked, no client-to-client session), then h3's agent stopped:
/// h1's doctor names the session down, the topology draws it down and exits 1.
#[test]
fn doctor_and_topology_follow_bgp_sessions() {
    if !privileged("doctor_and_topology_follow_bgp_sessions") {
        return;
    }
    let mut opts = ClusterOpts::new(3, Fabric::Bgp);
    opts.node_lease_ttl_secs = Some(5);
    opts.agent_extra.push("--no-bgp-bfd".into());
    opts.host_extra.push((
        0,
        vec![
            "--bgp-role".into(),
            "rr".into(),
            "--bgp-cluster-id".into(),
            "10.0.0.250".into(),
        ],
    ));
    let dirs = CniDirs::new(3);
    dirs.add_flags(&mut opts);
    let mut cluster = Cluster::start(opts);
    dirs.write(&cluster);
    wait_until("every node healthy", CONVERGE, POLL, || {
        healthy(cluster.host(0), true)
    })
    .unwrap();
    let (code, report) = doctor(cluster.host(0), false);
    assert_eq!(code, 0);
    let bgp = check(&report, "h1", "bgp");
    assert!(
        bgp["detail"]
            .as_str()
            .unwrap()
            .starts_with("2 sessions Established"),
        "{bgp}"
    );

    let (code, topo) = topology_json(cluster.host(1));
    assert_eq!(code, 0, "{topo:#}");
    let mut links = bgp_links(&topo);
    links.sort();
    let rr = Some("h1".to_string());
    assert_eq!(
        links,
        vec![
            ("h1".into(), "h2".into(), true, rr.clone()),
            ("h1".into(), "h3".into(), true, rr.clone()),
        ],
        "{topo:#}"
    );
    let h1 = topo["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "h1")
        .unwrap();
    assert_eq!(h1["route_reflector"], true, "{topo:#}");

    cluster.stop_agent(2);
    wait_until("h1's session to h3 down", CONVERGE, POLL, || {
        let (code, report) = doctor(cluster.host(0), false);
        let bgp = check(&report, "h1", "bgp");
        match (code, bgp["verdict"].as_str()) {
            (2, Some("fail")) if bgp["detail"].as_str().unwrap_or("").contains("h3") => Ok(()),
            _ => Err(format!("exit {code}: {bgp}")),
        }
    })
    .unwrap();
    wait_until("the topology draws h1-h3 down", CONVERGE, POLL, || {
        let (code, topo) = topology_json(cluster.host(0));
        let down = bgp_links(&topo)
            .iter()
            .any(|(a, b, up, _)| a == "h1" && b == "h3" && !up);
        match (code, down) {
            (1, true) => Ok(()),
            _ => Err(format!("exit {code}: {:?}", bgp_links(&topo))),
        }
    })
    .unwrap();
    cluster.start_agent(2);
    wait_until("healthy again", CONVERGE, POLL, || {
        healthy(cluster.host(0), true)
    })
    .unwrap();
}
