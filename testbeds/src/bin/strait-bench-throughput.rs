//! Container-to-container TCP throughput across two hosts through strait's VXLAN
//! fabric, beside a hand-made kernel VXLAN pair on the same underlay, same MTU, same
//! run. A benchmark, not a test: it prints figures and asserts nothing about them.
//!
//! strait: iperf3 client in a container on h1, server in a container on h2; the path
//! is container veth → h1 → `strait.vxlan` → underlay bridge → h2 → veth.
//! Baseline: two namespaces plugged into the same underlay bridge, each with a VXLAN
//! device made by hand (`ip link add vx0 type vxlan ... remote <peer>`), iperf3
//! between their overlay addresses. A second baseline puts the endpoints of that pair
//! one veth and one routed hop behind the VXLAN devices, as strait's containers are:
//! it separates the cost of that shape from the cost of strait itself. Runs alternate
//! (strait, baseline, baseline, strait, ...) so all see the same machine load; the
//! medians are compared.
//!
//! Usage: strait-bench-throughput [--runs N] [--seconds S] [--underlay-mtu M]
//! (root; iperf3 and etcd installed; release build advised: scripts/bench-throughput.sh)

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use strait_testbeds::cluster::probe;
use strait_testbeds::cluster::{Cluster, ClusterOpts, Fabric};
use strait_testbeds::netns::Netns;

struct Args {
    runs: usize,
    seconds: u32,
    underlay_mtu: u32,
}

fn parse_args() -> Args {
    let mut a = Args {
        runs: 3,
        seconds: 10,
        underlay_mtu: 1500,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().and_then(|v| v.parse::<u32>().ok());
        match (flag.as_str(), val) {
            ("--runs", Some(n)) if n > 0 => a.runs = n as usize,
            ("--seconds", Some(n)) if n > 0 => a.seconds = n,
            ("--underlay-mtu", Some(n)) if (1280..=9000).contains(&n) => a.underlay_mtu = n,
            _ => {
                eprintln!(
                    "usage: strait-bench-throughput [--runs N] [--seconds S] [--underlay-mtu 1280..9000]"
                );
                std::process::exit(2);
            }
        }
    }
    a
}

fn main() {
    if !strait_testbeds::require_root("strait-bench-throughput")
        || !strait_testbeds::etcd::require_etcd("strait-bench-throughput")
    {
        std::process::exit(2);
    }
    if Command::new("iperf3").arg("--version").output().is_err() {
        eprintln!("iperf3 not installed: apt-get install -y iperf3");
        std::process::exit(2);
    }
    let args = parse_args();

    let mut opts = ClusterOpts::new(2, Fabric::Vxlan);
    opts.pools = vec!["10.244.0.0/16".into()];
    opts.underlay_mtu = args.underlay_mtu;
    let mut cluster = Cluster::start(opts);
    let client = cluster.add_container(0, "c1");
    let server = cluster.add_container(1, "c2");
    let server_ip = IpAddr::V4(server.v4.expect("c2 has an IPv4 address"));

    // The baseline pair, on the same bridge with the same underlay MTU.
    let vx_mtu = args.underlay_mtu - 50;
    let (p1, p1_ip, _) = cluster.add_underlay_peer(1);
    let p1_name = p1.name().to_string();
    let (p2, p2_ip, _) = cluster.add_underlay_peer(2);
    let p2_name = p2.name().to_string();
    let overlay = ["192.168.42.1", "192.168.42.2"];
    for (name, local, remote, addr) in [
        (&p1_name, p1_ip, p2_ip, overlay[0]),
        (&p2_name, p2_ip, p1_ip, overlay[1]),
    ] {
        let ns = find_peer(&cluster, name);
        ns.exec_ok(&[
            "ip",
            "link",
            "add",
            "vx0",
            "mtu",
            &vx_mtu.to_string(),
            "type",
            "vxlan",
            "id",
            "42",
            "dstport",
            "4789",
            "local",
            &local.to_string(),
            "remote",
            &remote.to_string(),
            "dev",
            "eth0",
        ]);
        ns.exec_ok(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "vx0"]);
        ns.exec_ok(&["ip", "link", "set", "vx0", "up"]);
    }
    // The same pair with the endpoints one veth and one routed hop behind the VXLAN
    // devices: strait's shape, without strait. Tells the cost of the shape apart from
    // the cost of strait.
    let q1 = Netns::new(format!("{}q1", cluster.prefix));
    let q2 = Netns::new(format!("{}q2", cluster.prefix));
    for (peer, q, subnet, other, via) in [
        (&p1_name, &q1, 51, 52, overlay[1]),
        (&p2_name, &q2, 52, 51, overlay[0]),
    ] {
        let ns = find_peer(&cluster, peer);
        let mtu = vx_mtu.to_string();
        ns.exec_ok(&[
            "ip",
            "link",
            "add",
            "v0",
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            q.name(),
            "mtu",
            &mtu,
        ]);
        ns.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("192.168.{subnet}.254/24"),
            "dev",
            "v0",
        ]);
        ns.exec_ok(&["ip", "link", "set", "v0", "up"]);
        ns.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let dst = format!("192.168.{other}.0/24");
        ns.exec_ok(&["ip", "route", "add", &dst, "via", via, "dev", "vx0"]);
        q.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("192.168.{subnet}.1/24"),
            "dev",
            "eth0",
        ]);
        q.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        let gw = format!("192.168.{subnet}.254");
        q.exec_ok(&["ip", "route", "add", "default", "via", &gw]);
    }

    let mut paths = vec![];
    // Both paths must carry full-size packets, or the comparison is meaningless.
    let wait = Duration::from_secs(30);
    let strait = Path {
        label: "strait",
        client: &client.ns,
        server: &server.ns,
        ip: server_ip,
        mtu: client.mtu,
    };
    match strait.check(wait) {
        Ok(()) => paths.push(strait),
        Err(e) => println!("strait path has no connectivity, measuring the baselines only: {e}"),
    }
    for path in [
        Path {
            label: "kernel VXLAN pair",
            client: find_peer(&cluster, &p1_name),
            server: find_peer(&cluster, &p2_name),
            ip: overlay[1].parse().expect("overlay address"),
            mtu: vx_mtu,
        },
        Path {
            label: "kernel VXLAN + veth",
            client: &q1,
            server: &q2,
            ip: "192.168.52.1".parse().expect("address"),
            mtu: vx_mtu,
        },
    ] {
        path.check(wait)
            .unwrap_or_else(|e| panic!("baseline {}: {e}", path.label));
        paths.push(path);
    }

    println!(
        "TCP throughput, iperf3 {} s x {} runs, underlay MTU {}, one stream",
        args.seconds, args.runs, args.underlay_mtu
    );
    println!(
        "  strait:              container c1 (h1) -> container c2 {server_ip} (h2), MTU {}",
        client.mtu
    );
    println!(
        "  kernel VXLAN pair:   vx0 (VNI 42) <-> vx0 on the same underlay bridge, MTU {vx_mtu}"
    );
    println!(
        "  kernel VXLAN + veth: the pair, endpoints behind a veth and a routed hop (strait's shape)"
    );

    let servers: Vec<IperfServer> = paths
        .iter()
        .map(|p| IperfServer::start(p.server, p.ip))
        .collect();
    let mut results: Vec<Vec<f64>> = vec![vec![]; paths.len()];
    for run in 1..=args.runs {
        for (path, res) in paths.iter().zip(results.iter_mut()) {
            let r = iperf(path.client, path.ip, args.seconds);
            print_run(path.label, run, &r);
            if let Ok(r) = r {
                res.push(r.gbits);
            }
        }
    }
    drop(servers);

    println!();
    let medians: Vec<Option<f64>> = results.into_iter().map(median).collect();
    for (path, m) in paths.iter().zip(&medians) {
        match m {
            Some(g) => println!("{:<20} median {g:>7.2} Gbit/s", path.label),
            None => println!("{:<20} median {:>7}", path.label, "-"),
        }
    }
    let of = |label: &str| {
        paths
            .iter()
            .zip(&medians)
            .find(|(p, _)| p.label == label)
            .and_then(|(_, m)| *m)
    };
    if let Some(s) = of("strait") {
        for base in ["kernel VXLAN pair", "kernel VXLAN + veth"] {
            if let Some(b) = of(base) {
                println!("strait / {base}: {:.1} %", 100.0 * s / b);
            }
        }
        println!("(target: strait >= 95 % of the kernel VXLAN pair)");
    }
}

/// One measured path: iperf3 from `client` to `ip` in `server`.
struct Path<'a> {
    label: &'static str,
    client: &'a Netns,
    server: &'a Netns,
    ip: IpAddr,
    mtu: u32,
}

impl Path<'_> {
    /// Reachable, and full-size packets pass.
    fn check(&self, wait: Duration) -> Result<(), String> {
        probe::wait_ping(self.client, self.ip, wait)?;
        probe::ping_full_mtu(self.client, self.ip, self.mtu)
    }
}

fn find_peer<'a>(cluster: &'a Cluster, name: &str) -> &'a Netns {
    cluster
        .peers()
        .iter()
        .find(|p| p.name() == name)
        .expect("peer namespace")
}

/// One iperf3 run's result.
struct Run {
    gbits: f64,
    retransmits: u64,
}

fn print_run(label: &str, run: usize, r: &Result<Run, String>) {
    match r {
        Ok(r) => println!(
            "  run {run} {label:<20} {:>7.2} Gbit/s  ({} retransmits)",
            r.gbits, r.retransmits
        ),
        Err(e) => println!("  run {run} {label:<20} failed: {e}"),
    }
}

/// `iperf3 -c` from `from` to `to` for `seconds`; the receiver's rate.
fn iperf(from: &Netns, to: IpAddr, seconds: u32) -> Result<Run, String> {
    let mut last = String::new();
    // The server may still be binding on the first run: retry a refused connection.
    for _ in 0..5 {
        let out = from.exec(&[
            "iperf3",
            "-c",
            &to.to_string(),
            "-t",
            &seconds.to_string(),
            "-J",
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            return Ok(Run {
                gbits: bps / 1e9,
                retransmits: v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
            });
        }
        last = v["error"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned());
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(last)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// `iperf3 -s` in a namespace, killed by its PID on drop.
struct IperfServer(Child);

impl IperfServer {
    fn start(ns: &Netns, ip: IpAddr) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "iperf3", "-s", "-B"])
            .arg(ip.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn iperf3 -s");
        Self(child)
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
