//! Services' cost: new TCP connections per second and their latency (p50, p99) to a
//! service across two hosts, strait's socket balancer beside the backend's own
//! address and beside the same services as kube-proxy's iptables mode writes them,
//! with 1 000 services; one connection's throughput through a service beside the
//! backend's address, for connect-time (socket) and per-packet (tc, node port)
//! balancing; the agent's memory with and without the services. A benchmark, not a
//! test: it prints figures beside their baselines and asserts nothing about them.
//!
//! The bed: two hosts (etcd, VXLAN, IPv4). Backends `b1`..`b3` on h2 (`app=bench`,
//! `b1` also `iperf=yes`) and `bl` on h1 (`app=local`), each running this program's
//! answer server (`__serve`: one byte in, one byte back, reset) on 8080 (strait's
//! services' target), 8081 (the direct baselines') and 8082 (kube-proxy's rules'):
//! see [`DIRECT_PORT`] and [`serve_answers`]; and iperf3's server (b1, bl). The client is a container on h1 whose process is put in h1's
//! agent's service cgroup, as a container's processes are below the node's root
//! cgroup: it is this program again (`__client`, re-executed in the container's
//! namespace after joining the cgroup), which makes N connections one after the
//! other, then W workers N/W each in parallel (connect, write a byte, read the
//! answer, read to the server's reset).
//!
//! Applied with `netctl service apply`, 25 to a file (as a deployment tool sends
//! them, rather than one file of all): `--services` Services `bench/svc-NNNN`
//! (selector `app=bench`, port 80 → 8080), the measured one `svc-0500` in the middle;
//! `bench/iperf` (`iperf=yes`, 5201) and the NodePort `bench/local` (`app=local`, 8080
//! on node port 30080, 5201 on 30201).
//!
//! Connection rate, the variants alternating in rounds (each round starts with the
//! next one):
//! * **direct**: the client to b1's own address (the baseline: no balancing); the
//!   parallel workers to b1, b2 and b3 in turn, as a service spreads them.
//! * **strait**: the client to svc-0500's cluster IP (socket balancer).
//! * **iptables**: the same services in h1's nat table as kube-proxy's iptables mode
//!   makes them (`KUBE-SERVICES` → `KUBE-SVC-<hash>` per service port →
//!   `KUBE-SEP-<hash>` per endpoint, `-m statistic --mode random --probability
//!   1/k`, `KUBE-MARK-MASQ`, jumped to from PREROUTING and OUTPUT) on addresses in
//!   172.20.0.0/16, outside strait's service pool, so strait leaves them alone;
//!   installed with `iptables-restore --noflush` for the round and removed after it
//!   (also on a panic). The agent's `--fast-path auto` turns the fast path off while
//!   they are there (a DNAT strait did not make): that is part of what is compared,
//!   and the program waits for it to go off before measuring and on again after.
//! * **IPVS**: measured only when the kernel has IP_VS (`/proc/net/ip_vs`); said
//!   plainly otherwise.
//! * **node port** (tc translation on h1's underlay interface): an underlay peer (no
//!   agent) to h1's address on 30080, backend bl on h1, beside **peer direct**: the
//!   same peer to bl's own address (routed via h1).
//!
//! Throughput, one TCP stream, iperf3 pinned (`-A 0,1`), in alternating rounds: the
//! client container to `bench/iperf`'s cluster IP beside b1's address; the peer to
//! h1's node port 30201 beside bl's address. Printed: medians and the per-round ratio.
//!
//! The agents are the `straitd` beside this program (target/release after `cargo
//! build --release -p straitd -p netctl -p strait-cni`) unless `STRAIT_BIN_DIR` says
//! otherwise; the first line printed names them. Everything made (namespaces,
//! agents, etcd, servers, rules) goes on exit, on a panic and on Ctrl-C (checked
//! between measurements); only processes it started are killed, by PID.
//!
//! Usage: strait-bench-services [--runs N] [--conns N] [--workers W] [--services N]
//!        [--tput-runs N] [--seconds S]
//! (root; etcd, iperf3 and iptables installed)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use strait_testbeds::bench::{
    ConnLoad, IperfRun, IperfServer, checkpoint, command_in_cgroup, connection_load,
    fast_path_line, iperf, iperf_in_cgroup, median, serve_answers,
};
use strait_testbeds::cluster::{Cluster, ClusterHost, ClusterOpts, Container, Fabric};
use strait_testbeds::netns::Netns;
use strait_testbeds::services::{BackendServer, apply, service, wait_backends};
use strait_testbeds::wait_until;

const USAGE: &str = "usage: strait-bench-services [--runs N] [--conns N] [--workers W] \
                     [--services N] [--tput-runs N] [--seconds S]";

const POD_CIDR: &str = "10.244.0.0/16";
/// The services' target port on every backend's answer server; the services' port.
const ANSWER_PORT: u16 = 8080;
const SERVICE_PORT: u16 = 80;
/// Each path reaches the backends on a port of its own: a connection leaves state
/// keyed by the backend's address and port (the host's conntrack, strait's reverse
/// NAT entries for the node port), which another path's connection reusing the
/// client's port would otherwise meet. The direct baselines use this one ...
const DIRECT_PORT: u16 = 8081;
/// ... and kube-proxy's rules DNAT to this one (strait's services to [`ANSWER_PORT`]).
const KUBE_PROXY_PORT: u16 = 8082;
const IPERF_PORT: u16 = 5201;
const NODE_PORT_ANSWER: u16 = 30080;
const NODE_PORT_IPERF: u16 = 30201;
/// Services per `netctl service apply` (see where it is used).
const APPLY_CHUNK: usize = 25;
/// Accepting threads of each answer server.
const SERVER_THREADS: usize = 4;

struct Args {
    runs: usize,
    conns: u64,
    workers: u64,
    services: usize,
    tput_runs: usize,
    seconds: u32,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Args {
    let mut a = Args {
        runs: 5,
        conns: 2000,
        workers: 4,
        services: 1000,
        tput_runs: 5,
        seconds: 5,
    };
    while let Some(flag) = it.next() {
        let val = it.next().and_then(|v| v.parse::<u64>().ok());
        match (flag.as_str(), val) {
            ("--runs", Some(n)) if n > 0 => a.runs = n as usize,
            ("--conns", Some(n)) if n >= 100 => a.conns = n,
            ("--workers", Some(n)) if (1..=64).contains(&n) => a.workers = n,
            ("--services", Some(n)) if (1..=10_000).contains(&n) => a.services = n as usize,
            ("--tput-runs", Some(n)) if n > 0 => a.tput_runs = n as usize,
            ("--seconds", Some(n)) if (1..=60).contains(&n) => a.seconds = n as u32,
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    a
}

fn main() {
    let mut argv = std::env::args().skip(1);
    match argv.next().as_deref() {
        Some("__serve") => serve_main(argv),
        Some("__client") => client_main(argv),
        first => {
            let args = parse_args(first.map(String::from).into_iter().chain(argv));
            bench(&args)
        }
    }
}

/// `__serve ADDR:PORT...`: the backends' answer server.
fn serve_main(argv: impl Iterator<Item = String>) -> ! {
    let addrs: Vec<SocketAddr> = argv
        .map(|a| a.parse().expect("__serve ADDR:PORT..."))
        .collect();
    serve_answers(&addrs, SERVER_THREADS)
}

/// `__client ADDR:PORT[,ADDR:PORT...] PER_WORKER WORKERS`: one load (worker i to the
/// i-th address, round robin), as JSON on stdout.
fn client_main(mut argv: impl Iterator<Item = String>) {
    let mut next = || argv.next().unwrap_or_default();
    let (to, per_worker, workers) = (next(), next(), next());
    let to: Result<Vec<SocketAddr>, _> = to.split(',').map(str::parse).collect();
    let (Ok(to), Ok(per_worker), Ok(workers)) =
        (to, per_worker.parse::<u64>(), workers.parse::<u64>())
    else {
        eprintln!("usage: __client ADDR:PORT[,ADDR:PORT...] PER_WORKER WORKERS");
        std::process::exit(2);
    };
    println!("{}", connection_load(&to, per_worker, workers).to_json());
}

// ---------------------------------------------------------------------------------
// The bed

/// Where a client runs: in a container's namespace with its process in an agent's
/// service cgroup, or in a namespace outside the cluster.
enum Place<'a> {
    Container { cgroup: PathBuf, ns: &'a Netns },
    Outside(&'a Netns),
}

impl Place<'_> {
    fn command(&self, argv: &[&str]) -> Command {
        match self {
            Place::Container { cgroup, ns } => command_in_cgroup(cgroup, ns.name(), argv),
            Place::Outside(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns.name()]).args(argv);
                cmd
            }
        }
    }

    /// This program's `__client` here: `per_worker` connections from each of
    /// `workers` threads to `to` (worker i to the i-th address, round robin).
    fn load(&self, to: &[SocketAddr], per_worker: u64, workers: u64) -> Result<ConnLoad, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let exe = exe.to_str().ok_or("the program's path is not UTF-8")?;
        let to: Vec<String> = to.iter().map(SocketAddr::to_string).collect();
        let (to, pw, w) = (to.join(","), per_worker.to_string(), workers.to_string());
        let out = self
            .command(&[exe, "__client", &to, &pw, &w])
            .output()
            .map_err(|e| format!("__client: {e}"))?;
        let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "__client to {to}: {e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
        ConnLoad::from_json(&v).ok_or_else(|| format!("__client to {to}: {v}"))
    }

    fn iperf(&self, to: IpAddr, seconds: u32) -> Result<IperfRun, String> {
        match self {
            Place::Container { cgroup, ns } => iperf_in_cgroup(cgroup, ns, to, seconds, true),
            Place::Outside(ns) => iperf(ns, to, seconds, true),
        }
    }
}

fn add_labelled(
    c: &mut Cluster,
    host: usize,
    name: &str,
    labels: &[(&str, &str)],
) -> Arc<Container> {
    let labels: Vec<Value> = labels
        .iter()
        .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
        .collect();
    c.try_add_container_with(host, name, |config| {
        config["args"] = serde_json::json!({"cni": {"namespace": "bench", "labels": labels}});
    })
    .unwrap_or_else(|o| panic!("ADD {name}: {o:?}"))
}

/// The answer server in `c`'s namespace on its address, on each path's port.
fn answer_server(c: &Container) -> BackendServer {
    let exe = std::env::current_exe().expect("current_exe");
    let [a, b, k] = [ANSWER_PORT, DIRECT_PORT, KUBE_PROXY_PORT]
        .map(|p| SocketAddr::new(c.ip4(), p).to_string());
    BackendServer::start_command(
        c,
        &[exe.to_str().expect("UTF-8 path"), "__serve", &a, &b, &k],
    )
}

/// The measured service's name among `n`.
fn measured(n: usize) -> usize {
    n / 2
}

/// `n` ClusterIP services on the `app=bench` backends, then `bench/iperf` and the
/// NodePort `bench/local`: one document each.
fn services_docs(n: usize) -> Vec<String> {
    let mut docs: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i:04}, namespace: bench}}\n\
                 spec:\n  selector: {{app: bench}}\n  ports:\n  \
                 - {{name: echo, port: {SERVICE_PORT}, targetPort: {ANSWER_PORT}}}\n"
            )
        })
        .collect();
    docs.push(format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: iperf, namespace: bench}}\n\
         spec:\n  selector: {{iperf: \"yes\"}}\n  ports:\n  \
         - {{name: iperf, port: {IPERF_PORT}, targetPort: {IPERF_PORT}}}\n"
    ));
    docs.push(format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: local, namespace: bench}}\n\
         spec:\n  type: NodePort\n  selector: {{app: local}}\n  ports:\n  \
         - {{name: echo, port: {SERVICE_PORT}, targetPort: {ANSWER_PORT}, nodePort: {NODE_PORT_ANSWER}}}\n  \
         - {{name: iperf, port: {IPERF_PORT}, targetPort: {IPERF_PORT}, nodePort: {NODE_PORT_IPERF}}}\n"
    ));
    docs
}

fn cluster_ip(c: &Cluster, name: &str) -> IpAddr {
    let s = service(c, name);
    s["cluster_ips"][0]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{name} has no cluster IP: {s}"))
}

/// Waits until h1's agent shows at least `n` services with every frontend installed.
fn wait_all_installed(c: &Cluster, n: usize) {
    wait_until(
        &format!("{n} services installed on h1"),
        Duration::from_secs(300),
        Duration::from_secs(1),
        || {
            let (ok, out) = c.host(0).netctl(&["-o", "json", "service", "list"]);
            if !ok {
                return Err(out);
            }
            let all: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
            let installed = all
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| {
                    s["frontends"]
                        .as_array()
                        .is_some_and(|f| !f.is_empty() && f.iter().all(|f| f["installed"] == true))
                })
                .count();
            if installed >= n {
                Ok(())
            } else {
                Err(format!("{installed} installed"))
            }
        },
    )
    .unwrap();
}

/// The agent's resident memory (`VmRSS`), KiB.
fn agent_rss_kib(host: &ClusterHost) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", host.agent.pid()?)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Waits (up to 20 s: `auto` looks for foreign DNAT every 5 s) until h1's fast path
/// is `active`; false if it did not get there.
fn wait_fast_path(host: &ClusterHost, active: bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if host.fast_path().active == active {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------
// kube-proxy's iptables mode, generated

/// The iptables variant's address of service `i`: 172.20.0.0/16, outside strait's
/// service pool (10.96.0.0/12) and the container pool.
fn iptables_vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 20, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// A chain name as kube-proxy shapes them: prefix and 16 characters of a hash of
/// what the chain is for.
fn chain_name(prefix: &str, what: &str) -> String {
    // FNV-1a: any stable hash does; kube-proxy's own is a truncated SHA-256.
    let h = what.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{prefix}{h:016X}")
}

/// The nat table kube-proxy's iptables mode writes for ClusterIP services `vips`
/// (`ns/name`, address, port), each with `endpoints`, for a cluster of `cluster_cidr`:
/// the `iptables-restore --noflush` input that installs it, the one that removes it.
fn kube_proxy_nat(
    vips: &[(String, Ipv4Addr, u16)],
    endpoints: &[SocketAddr],
    cluster_cidr: &str,
) -> (String, String) {
    const PORTALS: &str = "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES";
    const POSTROUTING: &str =
        "-m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING";
    let mut chains = vec![
        "KUBE-SERVICES".to_string(),
        "KUBE-NODEPORTS".into(),
        "KUBE-POSTROUTING".into(),
        "KUBE-MARK-MASQ".into(),
    ];
    let mut rules = vec![
        format!("-A PREROUTING {PORTALS}"),
        format!("-A OUTPUT {PORTALS}"),
        format!("-A POSTROUTING {POSTROUTING}"),
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000".into(),
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN".into(),
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000".into(),
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" \
         -j MASQUERADE --random-fully"
            .into(),
    ];
    let k = endpoints.len();
    for (name, vip, port) in vips {
        let port_name = format!("{name}:echo");
        let svc = chain_name("KUBE-SVC-", &format!("{port_name}/tcp"));
        chains.push(svc.clone());
        let comment = format!("-m comment --comment \"{port_name} cluster IP\"");
        rules.push(format!(
            "-A KUBE-SERVICES -d {vip}/32 -p tcp {comment} -m tcp --dport {port} -j {svc}"
        ));
        rules.push(format!(
            "-A {svc} ! -s {cluster_cidr} -d {vip}/32 -p tcp {comment} -m tcp --dport {port} \
             -j KUBE-MARK-MASQ"
        ));
        for (j, ep) in endpoints.iter().enumerate() {
            let sep = chain_name("KUBE-SEP-", &format!("{port_name}/tcp/{ep}"));
            chains.push(sep.clone());
            // The j-th of k endpoints is taken with 1/(k-j) of what the ones before
            // left: each gets 1/k; the last takes the rest.
            let pick = if j + 1 < k {
                format!(
                    "-m statistic --mode random --probability {:.11} ",
                    1.0 / (k - j) as f64
                )
            } else {
                String::new()
            };
            rules.push(format!(
                "-A {svc} -m comment --comment \"{port_name} -> {ep}\" {pick}-j {sep}"
            ));
            rules.push(format!(
                "-A {sep} -s {}/32 -m comment --comment {port_name} -j KUBE-MARK-MASQ",
                ep.ip()
            ));
            rules.push(format!(
                "-A {sep} -p tcp -m comment --comment {port_name} -m tcp -j DNAT \
                 --to-destination {ep}"
            ));
        }
    }
    rules.push(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must \
         be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
            .into(),
    );
    let declare: String = chains.iter().map(|c| format!(":{c} - [0:0]\n")).collect();
    let install = format!("*nat\n{declare}{}\nCOMMIT\n", rules.join("\n"));
    // Declaring a chain again flushes it, so the jumps go first, then the chains.
    let remove = format!(
        "*nat\n{declare}-D PREROUTING {PORTALS}\n-D OUTPUT {PORTALS}\n-D POSTROUTING {POSTROUTING}\n{}COMMIT\n",
        chains
            .iter()
            .map(|c| format!("-X {c}\n"))
            .collect::<String>()
    );
    (install, remove)
}

/// kube-proxy's rules in a host's nat table while this lives: removed on drop (also
/// on a panic), and then only what they added.
struct KubeProxyRules<'a> {
    host: &'a ClusterHost,
    remove: String,
}

impl<'a> KubeProxyRules<'a> {
    fn install(host: &'a ClusterHost, install: &str, remove: &str) -> Result<Self, String> {
        restore(host, install)?;
        Ok(Self {
            host,
            remove: remove.to_string(),
        })
    }
}

impl Drop for KubeProxyRules<'_> {
    fn drop(&mut self) {
        if let Err(e) = restore(self.host, &self.remove) {
            eprintln!("removing kube-proxy's rules from {}: {e}", self.host.name);
        }
    }
}

/// `iptables-restore --noflush` of `input` in the host's namespace.
fn restore(host: &ClusterHost, input: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            host.ns.name(),
            "iptables-restore",
            "-w",
            "--noflush",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("iptables-restore: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .map_err(|e| format!("iptables-restore: {e}"))?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables-restore in {}: {}",
            host.name,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why IPVS is not measured here, if it is not.
fn ipvs_missing() -> Option<&'static str> {
    if !Path::new("/proc/net/ip_vs").exists() {
        return Some("the kernel has no IP_VS");
    }
    if Command::new("ipvsadm").arg("--version").output().is_err() {
        return Some("ipvsadm is not installed");
    }
    None
}

// ---------------------------------------------------------------------------------
// The runs

/// A connection-rate variant: where its client runs, what it connects to, what it
/// is compared with.
struct ConnVariant<'a> {
    label: &'static str,
    place: Place<'a>,
    to: SocketAddr,
    /// Where the parallel workers connect: `to`, or for the direct baseline every
    /// backend (as the service spreads them), worker i to the i-th.
    spread: Vec<SocketAddr>,
    baseline: Option<&'static str>,
    kube_proxy: bool,
}

#[derive(Default)]
struct ConnFigures {
    seq: Vec<ConnLoad>,
    par: Vec<ConnLoad>,
    /// The fast path as `netctl status` showed it during each of this variant's runs.
    fast_path: Vec<String>,
}

struct TputVariant<'a> {
    label: &'static str,
    place: Place<'a>,
    to: IpAddr,
    baseline: Option<&'static str>,
}

fn bench(args: &Args) {
    if !strait_testbeds::require_root("strait-bench-services")
        || !strait_testbeds::etcd::require_etcd("strait-bench-services")
    {
        std::process::exit(2);
    }
    for (tool, pkg) in [("iperf3", "iperf3"), ("iptables-restore", "iptables")] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("{tool} not installed: apt-get install -y {pkg}");
            std::process::exit(2);
        }
    }
    strait_testbeds::bench::stop_on_signals();
    strait_testbeds::netns::reap_leftovers();
    let bin_dir = strait_testbeds::bins::bin("straitd");
    println!(
        "binaries: {} (straitd, netctl, strait beside it)",
        bin_dir.parent().unwrap_or(&bin_dir).display()
    );

    let mut opts = ClusterOpts::new(2, Fabric::Vxlan);
    opts.pools = vec![POD_CIDR.into()];
    let mut c = Cluster::start(opts);
    let mut backends = vec![];
    for (name, labels) in [
        ("b1", &[("app", "bench"), ("iperf", "yes")][..]),
        ("b2", &[("app", "bench")][..]),
        ("b3", &[("app", "bench")][..]),
    ] {
        backends.push(add_labelled(&mut c, 1, name, labels));
    }
    let local = add_labelled(&mut c, 0, "bl", &[("app", "local")]);
    let client = c.add_container(0, "client");
    let cgroup = c.host(0).agent.service_cgroup();
    let _servers: Vec<BackendServer> = backends
        .iter()
        .chain([&local])
        .map(|b| answer_server(b))
        .collect();
    let _iperf_servers = [
        IperfServer::start(&backends[0].ns, backends[0].ip4()),
        IperfServer::start(&local.ns, local.ip4()),
    ];
    let h1_addr = c.host(0).underlay_v4;
    let (_, peer_v4, _) = c.add_underlay_peer(1);
    let peer = &c.peers()[0];
    // The peer reaches the containers through h1, as a router in front of the
    // cluster would: the baseline of the node port.
    peer.exec_ok(&["ip", "route", "add", POD_CIDR, "via", &h1_addr.to_string()]);

    let rss_before = agent_rss_kib(c.host(0));
    let docs = services_docs(args.services);
    let t0 = Instant::now();
    // One apply is one store transaction, and etcd refuses one of more than its
    // --max-txn-ops (128 by default) operations: a few services per file.
    for chunk in docs.chunks(APPLY_CHUNK) {
        let (ok, out) = apply(&c, &chunk.join("---\n"));
        assert!(ok, "netctl service apply: {out}");
    }
    let apply_took = t0.elapsed();
    let measured_name = format!("bench/svc-{:04}", measured(args.services));
    wait_backends(&c, &measured_name, None, 3);
    wait_backends(&c, "bench/iperf", None, 1);
    wait_backends(&c, "bench/local", Some("NodePort"), 1);
    wait_all_installed(&c, args.services + 2);
    let installed_after = t0.elapsed();
    let rss_after = agent_rss_kib(c.host(0));
    let vip = cluster_ip(&c, &measured_name);
    let iperf_vip = cluster_ip(&c, "bench/iperf");
    if !wait_fast_path(c.host(0), true) {
        println!(
            "h1's fast path is not on with the services: {}",
            fast_path_line(c.host(0))
        );
    }

    let endpoints: Vec<SocketAddr> = backends
        .iter()
        .map(|b| SocketAddr::new(b.ip4(), KUBE_PROXY_PORT))
        .collect();
    let kube_services: Vec<(String, Ipv4Addr, u16)> = (0..args.services)
        .map(|i| (format!("bench/svc-{i:04}"), iptables_vip(i), SERVICE_PORT))
        .collect();
    let (kube_install, kube_remove) = kube_proxy_nat(&kube_services, &endpoints, POD_CIDR);
    let kube_vip = iptables_vip(measured(args.services));

    let in_client = || Place::Container {
        cgroup: cgroup.clone(),
        ns: &client.ns,
    };
    let conn_variants = [
        ConnVariant {
            label: "direct",
            place: in_client(),
            to: SocketAddr::new(backends[0].ip4(), DIRECT_PORT),
            spread: backends
                .iter()
                .map(|b| SocketAddr::new(b.ip4(), DIRECT_PORT))
                .collect(),
            baseline: None,
            kube_proxy: false,
        },
        ConnVariant {
            label: "strait",
            place: in_client(),
            to: SocketAddr::new(vip, SERVICE_PORT),
            spread: vec![SocketAddr::new(vip, SERVICE_PORT)],
            baseline: Some("direct"),
            kube_proxy: false,
        },
        ConnVariant {
            label: "iptables",
            place: in_client(),
            to: SocketAddr::new(IpAddr::V4(kube_vip), SERVICE_PORT),
            spread: vec![SocketAddr::new(IpAddr::V4(kube_vip), SERVICE_PORT)],
            baseline: Some("direct"),
            kube_proxy: true,
        },
        ConnVariant {
            label: "peer direct",
            place: Place::Outside(peer),
            to: SocketAddr::new(local.ip4(), DIRECT_PORT),
            spread: vec![SocketAddr::new(local.ip4(), DIRECT_PORT)],
            baseline: None,
            kube_proxy: false,
        },
        ConnVariant {
            label: "node port",
            place: Place::Outside(peer),
            to: SocketAddr::new(IpAddr::V4(h1_addr), NODE_PORT_ANSWER),
            spread: vec![SocketAddr::new(IpAddr::V4(h1_addr), NODE_PORT_ANSWER)],
            baseline: Some("peer direct"),
            kube_proxy: false,
        },
    ];
    // Every path answers before anything is measured.
    for v in &conn_variants {
        let (r, _) = with_rules(&c, v, "check", &kube_install, &kube_remove, || {
            v.place.load(&v.spread, 20, v.spread.len() as u64)
        });
        let r = r.unwrap_or_else(|e| panic!("{}: {e}", v.label));
        assert!(r.failed == 0, "{} to {}: {r:?}", v.label, v.to);
    }

    let per_worker = (args.conns / args.workers).max(1);
    let n = conn_variants.len();
    let mut figures: Vec<ConnFigures> = (0..n).map(|_| ConnFigures::default()).collect();
    for run in 0..args.runs {
        for k in 0..n {
            checkpoint();
            let i = (run + k) % n;
            let v = &conn_variants[i];
            let round = format!("run {}", run + 1);
            let ((seq, par), fp) = with_rules(&c, v, &round, &kube_install, &kube_remove, || {
                (
                    v.place.load(&[v.to], args.conns, 1),
                    v.place.load(&v.spread, per_worker, args.workers),
                )
            });
            for (what, r) in [("sequential", &seq), ("parallel", &par)] {
                match r {
                    Ok(r) => println!(
                        "  run {} {:<12} {what:<10} {:>7.0} conn/s  p50 {:>5} us  p99 {:>6} us  \
                         {} failed",
                        run + 1,
                        v.label,
                        r.per_sec,
                        r.p50.as_micros(),
                        r.p99.as_micros(),
                        r.failed
                    ),
                    Err(e) => println!("  run {} {:<12} {what}: {e}", run + 1, v.label),
                }
            }
            let f = &mut figures[i];
            f.seq.extend(seq.ok());
            f.par.extend(par.ok());
            f.fast_path.push(fp);
        }
    }

    let tput_variants = [
        TputVariant {
            label: "direct",
            place: in_client(),
            to: backends[0].ip4(),
            baseline: None,
        },
        TputVariant {
            label: "strait VIP",
            place: in_client(),
            to: iperf_vip,
            baseline: Some("direct"),
        },
        TputVariant {
            label: "peer direct",
            place: Place::Outside(peer),
            to: local.ip4(),
            baseline: None,
        },
        TputVariant {
            label: "node port",
            place: Place::Outside(peer),
            to: IpAddr::V4(h1_addr),
            baseline: Some("peer direct"),
        },
    ];
    let m = tput_variants.len();
    // Per round, each variant's Gbit/s.
    let mut tput: Vec<Vec<Option<f64>>> = vec![];
    for run in 0..args.tput_runs {
        let mut round = vec![None; m];
        for k in 0..m {
            checkpoint();
            let i = (run + k) % m;
            let v = &tput_variants[i];
            // The node port's iperf3 target is the node port, not iperf3's own.
            let r = if v.label == "node port" {
                iperf_node_port(peer, h1_addr, args.seconds)
            } else {
                v.place.iperf(v.to, args.seconds)
            };
            match &r {
                Ok(r) => println!(
                    "  run {} {:<12} {:>6.2} Gbit/s ({} retransmits)",
                    run + 1,
                    v.label,
                    r.gbits,
                    r.retransmits
                ),
                Err(e) => println!("  run {} {:<12} iperf3 failed: {e}", run + 1, v.label),
            }
            round[i] = r.ok().map(|r| r.gbits);
        }
        tput.push(round);
    }

    println!();
    println!(
        "== new TCP connections to a service, 2 hosts (VXLAN), {} services; medians of {} runs ==",
        args.services, args.runs
    );
    println!(
        "client: container on h1 in the agent's service cgroup (peer: an underlay namespace); \
         backends: b1-b3 on h2 (bl on h1 for the node port); each connection: connect, 1 byte, \
         answer, reset by the server (no TIME_WAIT)"
    );
    println!(
        "{:<12} {:<44} {:>22} {:>22}   beside its baseline (conn/s)",
        "variant",
        "to",
        format!("{} sequential", args.conns),
        format!("{} workers x {per_worker}", args.workers),
    );
    println!(
        "{:<12} {:<44} {:>22} {:>22}",
        "", "", "conn/s  p50/p99 us", "conn/s  p50/p99 us"
    );
    let summary = |loads: &[ConnLoad]| -> Option<(f64, f64, f64)> {
        Some((
            median(loads.iter().map(|l| l.per_sec).collect())?,
            median(loads.iter().map(|l| l.p50.as_secs_f64() * 1e6).collect())?,
            median(loads.iter().map(|l| l.p99.as_secs_f64() * 1e6).collect())?,
        ))
    };
    let cell = |s: Option<(f64, f64, f64)>| {
        s.map_or("-".into(), |(r, p50, p99)| {
            format!("{r:>6.0}  {p50:>5.0}/{p99:<6.0}")
        })
    };
    let index = |label: &str| conn_variants.iter().position(|v| v.label == label);
    for (v, f) in conn_variants.iter().zip(&figures) {
        let to = match v.label {
            "direct" => format!("b1 {} (workers: b1-b3)", v.to),
            "strait" => format!("{measured_name} cluster IP {}", v.to),
            "iptables" => format!("KUBE-SVC of svc-{:04} {}", measured(args.services), v.to),
            "peer direct" => format!("bl {} (via h1)", v.to),
            _ => format!("h1 node port {} -> bl", v.to),
        };
        let (seq, par) = (summary(&f.seq), summary(&f.par));
        let vs = v
            .baseline
            .and_then(index)
            .map(|b| {
                let (bs, bp) = (summary(&figures[b].seq), summary(&figures[b].par));
                let pct = |a: Option<(f64, f64, f64)>, b: Option<(f64, f64, f64)>| {
                    a.zip(b)
                        .map_or("-".into(), |(a, b)| format!("{:.0} %", 100.0 * a.0 / b.0))
                };
                format!(
                    "{} / {} of {}",
                    pct(seq, bs),
                    pct(par, bp),
                    v.baseline.unwrap_or_default()
                )
            })
            .unwrap_or_else(|| "(baseline)".into());
        println!(
            "{:<12} {:<44} {:>22} {:>22}   {vs}",
            v.label,
            to,
            cell(seq),
            cell(par)
        );
    }
    println!(
        "IPVS: not measured: {}",
        ipvs_missing().unwrap_or("this program does not drive ipvsadm yet")
    );
    for label in ["strait", "iptables"] {
        if let Some(i) = index(label) {
            // The state and why, without the counters that follow.
            let mut states: Vec<&str> = figures[i]
                .fast_path
                .iter()
                .map(|l| l.split(';').next().unwrap_or(l))
                .collect();
            states.dedup();
            println!("h1's fast path during {label}: {}", states.join(" | "));
        }
    }
    println!(
        "(iptables: kube-proxy's iptables-mode nat rules for the same {} services, 3 endpoints \
         each, installed for its runs only; they are a DNAT strait did not make, so \
         `--fast-path auto` turns h1's fast path off meanwhile: part of the comparison)",
        args.services
    );

    println!();
    println!(
        "== throughput of one TCP connection, iperf3 {} s, client CPU 0, server CPU 1; medians of {} runs ==",
        args.seconds, args.tput_runs
    );
    let tindex = |label: &str| tput_variants.iter().position(|v| v.label == label);
    for (i, v) in tput_variants.iter().enumerate() {
        let med = median(tput.iter().filter_map(|r| r[i]).collect());
        let to = match v.label {
            "direct" => format!("container -> b1 {}", v.to),
            "strait VIP" => format!("container -> bench/iperf {} (socket LB)", v.to),
            "peer direct" => format!("peer -> bl {} (via h1)", v.to),
            _ => format!("peer -> h1 {}:{NODE_PORT_IPERF} -> bl (tc NAT)", v.to),
        };
        let vs = v
            .baseline
            .and_then(tindex)
            .map_or("(baseline)".to_string(), |b| {
                let per_round: Vec<f64> = tput
                    .iter()
                    .filter_map(|r| r[i].zip(r[b]).map(|(a, b)| 100.0 * a / b))
                    .collect();
                median(per_round).map_or("-".into(), |p| {
                    format!(
                        "{p:.1} % of {} (median per-round ratio)",
                        v.baseline.unwrap_or_default()
                    )
                })
            });
        println!(
            "{:<12} {:<52} {:>8} Gbit/s   {vs}",
            v.label,
            to,
            med.map_or("-".into(), |g| format!("{g:.2}"))
        );
    }

    println!();
    println!(
        "h1's agent: VmRSS {} with no services, {} with {} services (apply took {:.1} s, all \
         installed on h1 {:.1} s after it began)",
        kib(rss_before),
        kib(rss_after),
        args.services + 2,
        apply_took.as_secs_f64(),
        installed_after.as_secs_f64()
    );
    println!("(peer {peer_v4}: an underlay namespace with no agent)");
}

/// Runs `f` for variant `v`: for the iptables variant with kube-proxy's rules in h1's
/// nat table (and the fast path, which they turn off, off), removed after. Also h1's
/// fast path as `netctl status` showed it while `f` ran.
fn with_rules<T>(
    c: &Cluster,
    v: &ConnVariant<'_>,
    round: &str,
    install: &str,
    remove: &str,
    f: impl FnOnce() -> T,
) -> (T, String) {
    let h1 = c.host(0);
    let rules = v.kube_proxy.then(|| {
        let t0 = Instant::now();
        let rules = KubeProxyRules::install(h1, install, remove).unwrap_or_else(|e| panic!("{e}"));
        let took = t0.elapsed();
        if !wait_fast_path(h1, false) {
            println!("  h1's fast path stayed on with kube-proxy's rules");
        }
        println!(
            "  {round} iptables: rules restored in {:.1} s, fast path off {:.1} s after",
            took.as_secs_f64(),
            (t0.elapsed() - took).as_secs_f64()
        );
        rules
    });
    let fp = fast_path_line(h1);
    let r = f();
    if let Some(rules) = rules {
        drop(rules);
        if !wait_fast_path(h1, true) {
            println!("  h1's fast path did not come back after kube-proxy's rules left");
        }
    }
    (r, fp)
}

/// iperf3 from the peer to h1's node port for iperf3.
fn iperf_node_port(peer: &Netns, h1: Ipv4Addr, seconds: u32) -> Result<IperfRun, String> {
    strait_testbeds::bench::iperf_port(peer, IpAddr::V4(h1), NODE_PORT_IPERF, seconds, true)
}

fn kib(v: Option<u64>) -> String {
    v.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_proxy_rules_pick_each_endpoint_with_its_share() {
        let eps: Vec<SocketAddr> = ["10.244.1.2:8080", "10.244.1.3:8080", "10.244.1.4:8080"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let svcs = vec![
            ("bench/a".to_string(), iptables_vip(0), 80),
            ("bench/b".to_string(), iptables_vip(1), 80),
        ];
        let (install, remove) = kube_proxy_nat(&svcs, &eps, POD_CIDR);
        assert_eq!(install.matches("--probability 0.33333333333").count(), 2);
        assert_eq!(install.matches("--probability 0.50000000000").count(), 2);
        assert_eq!(install.matches("-j DNAT --to-destination").count(), 6);
        assert_eq!(install.matches("-A KUBE-SERVICES -d 172.20.0.").count(), 2);
        // Every chain declared is removed, and the three jumps.
        let declared = install.lines().filter(|l| l.starts_with(':')).count();
        assert_eq!(declared, 4 + 2 + 6);
        assert_eq!(
            remove.lines().filter(|l| l.starts_with("-X ")).count(),
            declared
        );
        assert_eq!(remove.lines().filter(|l| l.starts_with("-D ")).count(), 3);
    }
}
