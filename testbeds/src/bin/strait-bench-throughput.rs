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
//! in rounds, each round starting with the next path (strait, pair, pair+veth; pair,
//! pair+veth, strait; ...), so all see the same machine load and none is always
//! first. Reported: the medians, and the median of the per-round ratios, which
//! cancels the machine's slow drifts (on a shared VM one path's runs spread ±20 %).
//!
//! strait's agents run with their default `--fast-path auto` (the eBPF fast path,
//! docs/datapath.md) unless `--fast-path off|on` is given.
//!
//! iperf3's client and server are pinned to CPUs 0 and 1 (`iperf3 -A 0,1`) for every
//! path alike, unless `--no-pin`: on a 2-core machine, where the scheduler happens to
//! put the two ends otherwise changes a run by ±30 %.
//!
//! Usage: strait-bench-throughput [--runs N] [--seconds S] [--underlay-mtu M]
//!        [--fast-path auto|on|off] [--no-pin]
//! (root; iperf3 and etcd installed; release build advised: scripts/bench-throughput.sh)

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use strait_testbeds::bench::{IperfRun, IperfServer, fast_path_line, iperf, median};
use strait_testbeds::cluster::probe;
use strait_testbeds::cluster::{Cluster, ClusterOpts, Fabric};
use strait_testbeds::netns::Netns;

struct Args {
    runs: usize,
    seconds: u32,
    underlay_mtu: u32,
    fast_path: Option<String>,
    pin: bool,
}

const USAGE: &str = "usage: strait-bench-throughput [--runs N] [--seconds S] \
                     [--underlay-mtu 1280..9000] [--fast-path auto|on|off] [--no-pin]";

fn parse_args() -> Args {
    let mut a = Args {
        runs: 3,
        seconds: 10,
        underlay_mtu: 1500,
        fast_path: None,
        pin: true,
    };
    let usage = || -> ! {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--no-pin" {
            a.pin = false;
            continue;
        }
        let raw = it.next();
        if flag == "--fast-path" {
            match raw.as_deref() {
                Some(m @ ("auto" | "on" | "off")) => a.fast_path = Some(m.to_string()),
                _ => usage(),
            }
            continue;
        }
        let val = raw.and_then(|v| v.parse::<u32>().ok());
        match (flag.as_str(), val) {
            ("--runs", Some(n)) if n > 0 => a.runs = n as usize,
            ("--seconds", Some(n)) if n > 0 => a.seconds = n,
            ("--underlay-mtu", Some(n)) if (1280..=9000).contains(&n) => a.underlay_mtu = n,
            _ => usage(),
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
    if let Some(mode) = &args.fast_path {
        opts.agent_extra = vec!["--fast-path".into(), mode.clone()];
    }
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

    // The agents attach the fast path to a new veth once it has settled (2 s).
    if args.fast_path.as_deref() != Some("off") {
        for h in 0..2 {
            let attached = || fast_path_line(cluster.host(h)).contains("attached to 1 endpoints");
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while !attached() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
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
        "TCP throughput, iperf3 {} s x {} runs, underlay MTU {}, one stream, {}",
        args.seconds,
        args.runs,
        args.underlay_mtu,
        if args.pin {
            "client on CPU 0, server on CPU 1"
        } else {
            "not pinned"
        }
    );
    println!(
        "  strait:              container c1 (h1) -> container c2 {server_ip} (h2), MTU {}, fast path: {}",
        client.mtu,
        fast_path_line(cluster.host(0))
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
    let n = paths.len();
    let mut costs: Vec<Vec<f64>> = vec![vec![]; n];
    // Per round, each path's throughput (None: the run failed).
    let mut rounds: Vec<Vec<Option<f64>>> = vec![];
    for run in 1..=args.runs {
        let mut round = vec![None; n];
        for k in 0..n {
            let i = (run - 1 + k) % n;
            let path = &paths[i];
            let r = iperf(path.client, path.ip, args.seconds, args.pin);
            print_run(path.label, run, &r);
            if let Ok(r) = r {
                costs[i].extend(r.cpu_ms_per_gb);
                round[i] = Some(r.gbits);
            }
        }
        rounds.push(round);
    }
    drop(servers);
    println!(
        "  h1 fast path after the runs: {}",
        fast_path_line(cluster.host(0))
    );
    println!(
        "  h2 fast path after the runs: {}",
        fast_path_line(cluster.host(1))
    );

    println!();
    let medians: Vec<Option<f64>> = (0..n)
        .map(|i| median(rounds.iter().filter_map(|r| r[i]).collect()))
        .collect();
    let cost_medians: Vec<Option<f64>> = costs.into_iter().map(median).collect();
    for ((path, m), c) in paths.iter().zip(&medians).zip(&cost_medians) {
        let cost = c.map_or("-".to_string(), |c| format!("{c:.0} ms CPU per GB"));
        match m {
            Some(g) => println!("{:<20} median {g:>7.2} Gbit/s   {cost}", path.label),
            None => println!("{:<20} median {:>7}", path.label, "-"),
        }
    }
    let index = |label: &str| paths.iter().position(|p| p.label == label);
    if let Some(s) = index("strait") {
        for base in ["kernel VXLAN pair", "kernel VXLAN + veth"] {
            let Some(b) = index(base) else { continue };
            let of_medians = medians[s].zip(medians[b]).map(|(s, b)| 100.0 * s / b);
            let per_round: Vec<f64> = rounds
                .iter()
                .filter_map(|r| r[s].zip(r[b]).map(|(s, b)| 100.0 * s / b))
                .collect();
            let lo = per_round.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = per_round.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            match (of_medians, median(per_round.clone())) {
                (Some(m), Some(r)) => println!(
                    "strait / {base}: {m:.1} % of the medians; per round: median {r:.1} % \
                     ({lo:.1} .. {hi:.1} over {} rounds)",
                    per_round.len()
                ),
                _ => println!("strait / {base}: -"),
            }
        }
        println!(
            "(target: strait >= 95 % of the hand-made kernel VXLAN pair in the same \
             topology, containers behind a veth: \"kernel VXLAN + veth\". The bare pair, \
             iperf3 on the VXLAN devices themselves with no container hop, is the floor \
             of any veth-based CNI's cost.)"
        );
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

fn print_run(label: &str, run: usize, r: &Result<IperfRun, String>) {
    match r {
        Ok(r) => println!(
            "  run {run} {label:<20} {:>7.2} Gbit/s  ({} retransmits, {} ms CPU per GB)",
            r.gbits,
            r.retransmits,
            r.cpu_ms_per_gb.map_or("-".into(), |c| format!("{c:.0}"))
        ),
        Err(e) => println!("  run {run} {label:<20} failed: {e}"),
    }
}
