//! Network policy's cost: TCP throughput and new connections per second across two
//! hosts with 0, 100, 1 000 and 10 000 ingress rules on the server, strait's eBPF
//! enforcement beside iptables implementing the same rules in the same topology, same
//! run; then the time a policy takes from `netctl policy apply` returning to being
//! enforced on every node of a 3-host cluster. A benchmark, not a test: it prints
//! figures and asserts nothing about them.
//!
//! Two 2-host VXLAN test beds run side by side, each with a client container on h1
//! (`app=client`), a server container on h2 (`app=server`) and `--fillers` more
//! containers on h1 (`app=filler-0..`), all in namespace `bench` (`args.cni`):
//!
//! * **strait**: the agents with their default fast path, the rules applied as
//!   Kubernetes NetworkPolicy documents with `netctl policy apply -f -` on h1.
//! * **iptables**: the agents with `--fast-path off`, so h2's kernel forwards through
//!   netfilter, and no strait policy; in h2's namespace one chain per endpoint
//!   (`strait-bench-1`, for the server) jumped to from FORWARD for packets out of the
//!   server's host veth, built as iptables-based CNIs (Calico, kube-router) build it:
//!   `ESTABLISHED,RELATED` accepted first, then per policy document one
//!   `-m set --match-set strait-bench-cidr-<doc> src` (ipset hash:net holding that
//!   document's CIDRs), one `-p tcp --dport P -m set --match-set strait-bench-sel-<N>
//!   src` per selector rule (ipset hash:ip of the members of `app=filler-N`), the
//!   client's allow last, then DROP. New connections traverse every rule before the
//!   client's; packets of established ones stop at the first.
//!
//! The rule set of size N (see [`bench_rules`]): rule i is a CIDR rule when i is even
//! (any port; distinct prefixes in 198.18.0.0/15, RFC 2544's range for benchmarks,
//! never the client's: /32s, every tenth a /24) and a selector rule when odd
//! (`podSelector: app=filler-(k mod 100)` on one TCP port); then one rule allows
//! `app=client` on the iperf3 port, the connection-rate port and the stage's probe
//! port. Documents of at most 500 rules. Stages run from no policy (strait without any
//! policy; iptables without the chain) up through the rule counts, and in each stage
//! rounds alternate between the two beds, each round starting with the next one.
//!
//! Measured per stage: iperf3 throughput (`-t S`, client on CPU 0, server on CPU 1
//! unless `--no-pin`), and new TCP connections per second (a Rust loop in the client's
//! namespace: connect, write 1 byte, read 1 byte, close, for `--conn-seconds`, against
//! an accept/echo thread in the server's namespace; the same pinning). Per stage also:
//! how long `netctl policy apply` took to return; how long after that h2 enforced it
//! (the client's connection to the stage's newly allowed probe port succeeds and to
//! the previous stage's port, now denied, fails twice in a row; polled every 5 ms);
//! the memory of h2's agent's policy maps (`strait_pol_*`, `strait_ct`, from
//! `/proc/<pid>/fdinfo`, named by `bpftool` when installed) beside iptables'
//! (`iptables-save` bytes of the chain, `ipset list -t` memory of the sets).
//!
//! Until `netctl policy apply` exists the strait-with-rules half fails at the first
//! apply: that is said plainly, and the baseline and the no-policy figures are still
//! measured and printed.
//!
//! The 3-host latency: a server (`app=lat-server`) on every host, each probed from a
//! client on the next host. A NetworkPolicy selecting the servers with no ingress
//! rule (deny all) is applied on h1; from `apply` returning, every client polls its
//! server with a fresh connection every 5 ms until it fails twice in a row; the
//! figure is the slowest host. Then the same policy with `ingress: [{}]` (allow all)
//! is applied and timed the same way until every connection succeeds. `--applies`
//! times each; medians.
//!
//! Usage: strait-bench-policy [--runs N] [--seconds S] [--conn-seconds S]
//!        [--rules 0,100,1000,10000] [--fillers F] [--applies N] [--no-pin]
//!        [--no-latency] [--print-policy N]
//! (`--print-policy N` prints the documents of N rules and exits.)
//! (root; iperf3, ipset, iptables and etcd installed; release build advised:
//! scripts/bench-policy.sh)

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;
use strait_testbeds::bench::{IperfRun, IperfServer, fast_path_line, iperf, median};
use strait_testbeds::cluster::{Cluster, ClusterHost, ClusterOpts, Container, Fabric, probe};
use strait_testbeds::netns::Netns;

/// The Kubernetes namespace of every container and policy of the benchmark.
const NAMESPACE: &str = "bench";
/// What every policy, chain and ipset of the benchmark is named with.
const PREFIX: &str = "strait-bench";
const IPERF_PORT: u16 = 5201;
/// The connection-rate echo server's port.
const CONN_PORT: u16 = 5202;
/// Stage s's probe port is `PROBE_BASE + s`: allowed in stage s only (and by no policy
/// in stage 0), so each apply newly allows one port and newly denies another.
const PROBE_BASE: u16 = 5210;
/// The 3-host latency servers' port.
const LAT_PORT: u16 = 5301;
/// Distinct `app=filler-N` labels the selector rules name.
const SELECTOR_LABELS: usize = 100;
const SELECTOR_PORT_BASE: u16 = 10000;
/// Rules per NetworkPolicy document (and per CIDR ipset).
const CHUNK: usize = 500;
/// The largest rule count whose CIDRs stay distinct inside 198.18.0.0/15.
const MAX_RULES: usize = 10240;
/// A connection attempt that has not completed by then counts as refused.
const PROBE_TIMEOUT: Duration = Duration::from_millis(50);
const POLL_EVERY: Duration = Duration::from_millis(5);
/// How long a change may take before the poll gives up.
const ENFORCE_LIMIT: Duration = Duration::from_secs(30);

struct Args {
    runs: usize,
    seconds: u32,
    conn_seconds: u32,
    rules: Vec<usize>,
    fillers: usize,
    applies: usize,
    pin: bool,
    latency: bool,
    /// Print the documents of this many rules and exit.
    print_policy: Option<usize>,
}

const USAGE: &str = "usage: strait-bench-policy [--runs N] [--seconds S] [--conn-seconds S] \
                     [--rules 0,100,1000,10000] [--fillers F] [--applies N] [--no-pin] \
                     [--no-latency] [--print-policy N]";

fn parse_args() -> Args {
    let mut a = Args {
        runs: 3,
        seconds: 5,
        conn_seconds: 3,
        rules: vec![0, 100, 1000, 10000],
        fillers: 8,
        applies: 10,
        pin: true,
        latency: true,
        print_policy: None,
    };
    let usage = || -> ! {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--no-pin" => {
                a.pin = false;
                continue;
            }
            "--no-latency" => {
                a.latency = false;
                continue;
            }
            _ => {}
        }
        let Some(raw) = it.next() else { usage() };
        if flag == "--rules" {
            let counts: Option<Vec<usize>> = raw.split(',').map(|n| n.parse().ok()).collect();
            match counts {
                Some(mut c) if !c.is_empty() && c.iter().all(|n| *n <= MAX_RULES) => {
                    // Ascending: each stage's documents are a superset of the last's,
                    // so no stale document of a larger set is left behind.
                    c.sort_unstable();
                    c.dedup();
                    a.rules = c;
                }
                _ => {
                    eprintln!("--rules: comma-separated counts, each at most {MAX_RULES}");
                    usage()
                }
            }
            continue;
        }
        match (flag.as_str(), raw.parse::<usize>().ok()) {
            ("--runs", Some(n)) if n > 0 => a.runs = n,
            ("--seconds", Some(n)) if n > 0 => a.seconds = n as u32,
            ("--conn-seconds", Some(n)) if n > 0 => a.conn_seconds = n as u32,
            ("--fillers", Some(n)) if n <= SELECTOR_LABELS => a.fillers = n,
            ("--applies", Some(n)) if n > 0 => a.applies = n,
            ("--print-policy", Some(n)) if n <= MAX_RULES => a.print_policy = Some(n),
            _ => usage(),
        }
    }
    a
}

fn main() {
    let args = parse_args();
    if let Some(n) = args.print_policy {
        print!(
            "{}",
            policy_yaml(&bench_rules(n), &[IPERF_PORT, CONN_PORT, PROBE_BASE + 1])
        );
        return;
    }
    let me = "strait-bench-policy";
    if !strait_testbeds::require_root(me) || !strait_testbeds::etcd::require_etcd(me) {
        std::process::exit(2);
    }
    for (tool, probe_arg) in [
        ("iperf3", "--version"),
        ("ipset", "--version"),
        ("iptables", "--version"),
    ] {
        if Command::new(tool).arg(probe_arg).output().is_err() {
            eprintln!("{tool} not installed: apt-get install -y {tool}");
            std::process::exit(2);
        }
    }
    let work = tempfile::Builder::new()
        .prefix("strait-bench-policy-")
        .tempdir()
        .expect("temp dir");

    two_host_stages(&args, work.path().to_path_buf());
    if args.latency {
        println!();
        three_host_latency(&args);
    }
}

// ---------------------------------------------------------------------------------
// The rule sets

/// One generated ingress rule of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BenchRule {
    /// From a prefix, any port.
    Cidr(String),
    /// From `app=filler-<label>` in the namespace, on one TCP port.
    Selector { label: usize, port: u16 },
}

/// The first `n` rules: even ones CIDR, odd ones selector (see the module docs).
/// The rules of a smaller count are a prefix of those of a larger one.
fn bench_rules(n: usize) -> Vec<BenchRule> {
    (0..n)
        .map(|i| {
            let j = i / 2;
            if i % 2 == 0 {
                BenchRule::Cidr(if j % 10 == 9 {
                    // /24s: 512 of them in 198.18.0.0/15.
                    let m = j / 10;
                    format!("198.{}.{}.0/24", 18 + m / 256, m % 256)
                } else {
                    format!("198.18.{}.{}/32", j / 256, j % 256)
                })
            } else {
                BenchRule::Selector {
                    label: j % SELECTOR_LABELS,
                    port: SELECTOR_PORT_BASE + (j / SELECTOR_LABELS) as u16,
                }
            }
        })
        .collect()
}

/// The rule set as NetworkPolicy documents selecting the server (`---`-separated, at
/// most [`CHUNK`] rules each), and last the one allowing the client on `ports`.
fn policy_yaml(rules: &[BenchRule], client_ports: &[u16]) -> String {
    let mut out = String::new();
    for (c, chunk) in rules.chunks(CHUNK).enumerate() {
        out.push_str(&policy_head(&format!("{PREFIX}-rules-{c}"), "server"));
        out.push_str("  ingress:\n");
        for r in chunk {
            match r {
                BenchRule::Cidr(cidr) => {
                    out.push_str(&format!("  - from: [{{ipBlock: {{cidr: {cidr}}}}}]\n"));
                }
                BenchRule::Selector { label, port } => out.push_str(&format!(
                    "  - from: [{{podSelector: {{matchLabels: {{app: filler-{label}}}}}}}]\n    \
                     ports: [{{protocol: TCP, port: {port}}}]\n"
                )),
            }
        }
        out.push_str("---\n");
    }
    out.push_str(&policy_head(&format!("{PREFIX}-allow-client"), "server"));
    let ports: Vec<String> = client_ports
        .iter()
        .map(|p| format!("{{protocol: TCP, port: {p}}}"))
        .collect();
    out.push_str(&format!(
        "  ingress:\n  - from: [{{podSelector: {{matchLabels: {{app: client}}}}}}]\n    \
         ports: [{}]\n",
        ports.join(", ")
    ));
    out
}

/// A NetworkPolicy's head up to its rules: name, namespace, `app=<app>` selected for
/// ingress.
fn policy_head(name: &str, app: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  \
         namespace: {NAMESPACE}\nspec:\n  podSelector:\n    matchLabels:\n      app: {app}\n  \
         policyTypes: [Ingress]\n"
    )
}

/// `netctl policy apply -f -` on `host` with `yaml` on stdin: how long it took to
/// return, or what it said when it failed. The one place that knows the CLI.
/// Applies the documents in as few `netctl policy apply` calls as keep each under
/// 512 KiB: one store transaction may not exceed etcd's request limit (1.5 MiB by
/// default, as a Kubernetes object may not), and 10 000 rules stored with their
/// source do. Returns the time of all calls together.
fn strait_apply_in_parts(host: &ClusterHost, yaml: &str) -> Result<Duration, String> {
    const PART: usize = 512 * 1024;
    let mut parts: Vec<String> = Vec::new();
    for doc in yaml.split("\n---\n") {
        match parts.last_mut() {
            Some(last) if last.len() + doc.len() < PART => {
                last.push_str("\n---\n");
                last.push_str(doc);
            }
            _ => parts.push(doc.to_string()),
        }
    }
    let mut took = Duration::ZERO;
    for part in &parts {
        took += strait_apply(host, part)?;
    }
    Ok(took)
}

fn strait_apply(host: &ClusterHost, yaml: &str) -> Result<Duration, String> {
    let netctl = strait_testbeds::bins::bin("netctl");
    let t0 = Instant::now();
    let mut child = Command::new(netctl)
        .arg("--socket")
        .arg(&host.agent.socket)
        .args(["policy", "apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("exec netctl: {e}"))?;
    let written = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(yaml.as_bytes());
    let out = child
        .wait_with_output()
        .map_err(|e| format!("netctl: {e}"))?;
    let took = t0.elapsed();
    if out.status.success() && written.is_ok() {
        return Ok(took);
    }
    // One line: what it printed, its lines joined.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .lines()
    .map(str::trim)
    .filter(|l| !l.is_empty())
    .collect::<Vec<_>>()
    .join("; ");
    Err(format!(
        "{} ({}): {}",
        out.status,
        written.err().map_or("input sent".into(), |e| e.to_string()),
        said.trim()
    ))
}

// ---------------------------------------------------------------------------------
// The two-host stages

/// One 2-host bed: its cluster and its containers.
struct Bed {
    label: &'static str,
    cluster: Cluster,
    client: Arc<Container>,
    server: Arc<Container>,
    /// `app=filler-N` → the member's address (the containers that exist).
    fillers: BTreeMap<usize, Ipv4Addr>,
}

impl Bed {
    fn start(label: &'static str, fast_path_off: bool, fillers: usize) -> Self {
        let mut opts = ClusterOpts::new(2, Fabric::Vxlan);
        opts.pools = vec!["10.244.0.0/16".into()];
        if fast_path_off {
            opts.agent_extra = vec!["--fast-path".into(), "off".into()];
        }
        let mut cluster = Cluster::start(opts);
        let client = add_labelled(&mut cluster, 0, "client", "client");
        let server = add_labelled(&mut cluster, 1, "server", "server");
        let fillers = (0..fillers)
            .map(|n| {
                let c = add_labelled(&mut cluster, 0, &format!("f{n}"), &format!("filler-{n}"));
                (n, c.v4.expect("filler has an IPv4 address"))
            })
            .collect();
        // Many short connections from one address: reuse ports in TIME_WAIT and use
        // the whole port range (the client's own namespace).
        client
            .ns
            .exec_ok(&["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"]);
        client
            .ns
            .exec_ok(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"]);
        Self {
            label,
            cluster,
            client,
            server,
            fillers,
        }
    }

    fn server_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.server.ip4(), port)
    }

    /// Wait until the agents have attached the fast path to every endpoint (they do
    /// once a new veth has settled), when it is on.
    fn wait_fast_path(&self) {
        for (i, h) in self.cluster.hosts().iter().enumerate() {
            let want = self
                .cluster
                .containers()
                .iter()
                .filter(|c| c.host == i)
                .count();
            let deadline = Instant::now() + Duration::from_secs(20);
            while fast_path_endpoints(h).is_some_and(|n| n < want) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// A container in namespace `bench` labelled `app=<app>`, through `args.cni`.
fn add_labelled(cluster: &mut Cluster, host: usize, name: &str, app: &str) -> Arc<Container> {
    let app = app.to_string();
    cluster
        .try_add_container_with(host, name, move |config| {
            config["args"] = json!({"cni": {
                "namespace": NAMESPACE,
                "labels": [{"key": "app", "value": app}],
            }});
        })
        .unwrap_or_else(|out| panic!("CNI ADD of {name}: {out:?}"))
}

/// Endpoints the fast path is attached to on `host`; None when it is not loaded.
fn fast_path_endpoints(host: &ClusterHost) -> Option<usize> {
    let status: strait_api::AgentStatus =
        host.agent.client().get(strait_api::paths::STATUS).ok()?;
    status.fast_path.filter(|f| f.active).map(|f| f.endpoints)
}

/// A stage: no policy at all, or N rules plus the client's allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    NoPolicy,
    Rules(usize),
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stage::NoPolicy => write!(f, "no policy"),
            Stage::Rules(n) => write!(f, "{n} rules"),
        }
    }
}

/// What one stage measured, per bed (index 0 strait, 1 iptables), per round.
#[derive(Default)]
struct StageFigures {
    gbits: [Vec<Option<f64>>; 2],
    conns: [Vec<Option<f64>>; 2],
    /// `netctl policy apply` / the iptables replace returning.
    apply: [Option<Duration>; 2],
    /// From apply returning until the server's node enforced it.
    enforced: [Option<Duration>; 2],
    /// Policy memory on h2: strait's maps; iptables' chain text and sets.
    strait_maps: Option<MapMemory>,
    iptables_mem: Option<(usize, u64)>,
    /// The bed was not measured in this stage, and why.
    skipped: [Option<String>; 2],
}

fn two_host_stages(args: &Args, work: PathBuf) {
    let strait = Bed::start("strait", false, args.fillers);
    let kernel = Bed::start("iptables", true, args.fillers);
    let beds = [&strait, &kernel];
    strait.wait_fast_path();

    // Connectivity with full-size packets, before any policy (ICMP is not allowed
    // once the server is isolated).
    for bed in beds {
        let ip = bed.server.ip4();
        probe::wait_ping(&bed.client.ns, ip, Duration::from_secs(30))
            .and_then(|()| probe::ping_full_mtu(&bed.client.ns, ip, bed.client.mtu))
            .unwrap_or_else(|e| panic!("{} bed: {e}", bed.label));
    }

    let stages: Vec<Stage> = std::iter::once(Stage::NoPolicy)
        .chain(args.rules.iter().map(|n| Stage::Rules(*n)))
        .collect();
    let probe_ports: Vec<u16> = (0..stages.len() as u16).map(|s| PROBE_BASE + s).collect();
    let mut echo_ports = vec![CONN_PORT];
    echo_ports.extend(&probe_ports);
    let echoes: Vec<EchoServer> = beds
        .iter()
        .map(|b| EchoServer::start(&b.server, &echo_ports, args.pin.then_some(1)))
        .collect();
    let iperfs: Vec<IperfServer> = beds
        .iter()
        .map(|b| IperfServer::start(&b.server.ns, b.server.ip4()))
        .collect();

    println!(
        "Policy benchmark: 2 hosts, VXLAN, client container on h1 -> server container on h2, \
         {} filler containers on h1",
        args.fillers
    );
    println!(
        "  strait:   fast path {}; rules applied with `netctl policy apply -f -` on h1",
        fast_path_line(strait.cluster.host(1))
    );
    println!(
        "  iptables: strait with --fast-path off, no strait policy; chain {PREFIX}-1 in h2's \
         netns from FORWARD -o <server veth>; one ipset hash:net per document of {CHUNK} \
         rules, one ipset hash:ip per selector label"
    );
    println!(
        "  per stage and round: iperf3 {} s ({}), then new TCP connections for {} s; {} rounds",
        args.seconds,
        if args.pin {
            "client CPU 0, server CPU 1"
        } else {
            "not pinned"
        },
        args.conn_seconds,
        args.runs
    );

    let mut iptables = IptablesPolicy::new(&kernel, work);
    // Some(reason) once strait's policy cannot be applied: its rule stages are skipped.
    let mut strait_unavailable: Option<String> = None;
    let mut results: Vec<(Stage, StageFigures)> = vec![];
    for (s, stage) in stages.iter().enumerate() {
        println!();
        println!("== stage: {stage} ==");
        let mut fig = StageFigures::default();
        if let Stage::Rules(n) = *stage {
            let rules = bench_rules(n);
            let ports = [IPERF_PORT, CONN_PORT, probe_ports[s]];
            let previous = probe_ports[s - 1];
            // strait
            if let Some(why) = &strait_unavailable {
                fig.skipped[0] = Some(why.clone());
            } else {
                let yaml = policy_yaml(&rules, &ports);
                match strait_apply_in_parts(strait.cluster.host(0), &yaml) {
                    Ok(took) => {
                        fig.apply[0] = Some(took);
                        let t0 = Instant::now();
                        fig.enforced[0] = poll_change(&strait, probe_ports[s], previous, t0);
                        fig.strait_maps = strait
                            .cluster
                            .host(1)
                            .agent
                            .pid()
                            .map(MapMemory::of_process);
                        println!(
                            "  strait: apply of {} bytes returned after {}; enforced on h2 {} later",
                            yaml.len(),
                            ms(Some(took)),
                            fig.enforced[0].map_or("- (not within 30 s)".into(), |d| ms(Some(d)))
                        );
                    }
                    Err(e) => {
                        let why = format!(
                            "`netctl policy apply -f -` failed on h1: {e}\n  (the policy \
                             pieces of issue 12 are not in this build?) The strait-with-rules \
                             figures are skipped; the iptables baseline and the no-policy \
                             strait figures are measured."
                        );
                        println!("  strait: {why}");
                        strait_unavailable = Some(why.clone());
                        fig.skipped[0] = Some(why);
                    }
                }
            }
            // iptables
            match iptables.replace(&rules, &ports) {
                Ok(took) => {
                    fig.apply[1] = Some(took);
                    let t0 = Instant::now();
                    fig.enforced[1] = poll_change(&kernel, probe_ports[s], previous, t0);
                    fig.iptables_mem = Some(iptables.memory());
                    println!(
                        "  iptables: ipset + iptables-restore returned after {}; enforcement \
                         checked {} later",
                        ms(Some(took)),
                        fig.enforced[1].map_or("- (NOT ENFORCED)".into(), |d| ms(Some(d)))
                    );
                }
                Err(e) => {
                    println!("  iptables: {e}");
                    fig.skipped[1] = Some(e);
                }
            }
        } else {
            fig.strait_maps = strait
                .cluster
                .host(1)
                .agent
                .pid()
                .map(MapMemory::of_process);
            fig.iptables_mem = Some(iptables.memory());
        }
        // Both paths must still carry the client's connections.
        for (b, bed) in beds.iter().enumerate() {
            if fig.skipped[b].is_none()
                && !wait_connect(
                    &bed.client,
                    bed.server_addr(CONN_PORT),
                    Duration::from_secs(10),
                )
            {
                let why = format!("client cannot connect to {}", bed.server_addr(CONN_PORT));
                println!("  {}: {why}; not measured", bed.label);
                fig.skipped[b] = Some(why);
            }
        }
        for run in 1..=args.runs {
            let mut gbits = [None, None];
            let mut conns = [None, None];
            for k in 0..2 {
                let b = (run - 1 + k) % 2;
                if fig.skipped[b].is_some() {
                    continue;
                }
                let bed = beds[b];
                let r = iperf(&bed.client.ns, bed.server.ip4(), args.seconds, args.pin);
                print_iperf(bed.label, run, &r);
                gbits[b] = r.ok().map(|r| r.gbits);
                let c = conn_rate(
                    &bed.client,
                    bed.server_addr(CONN_PORT),
                    args.conn_seconds,
                    args.pin,
                );
                match &c {
                    Ok(c) => println!(
                        "  run {run} {:<9} {:>9.0} conn/s  ({} connections, {} failed)",
                        bed.label, c.per_sec, c.done, c.failed
                    ),
                    Err(e) => println!("  run {run} {:<9} connections failed: {e}", bed.label),
                }
                conns[b] = c.ok().map(|c| c.per_sec);
            }
            for b in 0..2 {
                fig.gbits[b].push(gbits[b]);
                fig.conns[b].push(conns[b]);
            }
        }
        results.push((*stage, fig));
    }
    println!(
        "  h2 fast path after the runs (strait bed): {}",
        fast_path_line(strait.cluster.host(1))
    );
    drop(iperfs);
    drop(echoes);
    drop(iptables);

    println!();
    print_rate_table(
        "Throughput, iperf3 one stream, Gbit/s (medians)",
        &results,
        |f| &f.gbits,
        2,
    );
    println!();
    print_rate_table(
        "New TCP connections per second (connect, 1 byte each way, close; medians)",
        &results,
        |f| &f.conns,
        0,
    );
    println!();
    print_update_table(&results);
    if let Some(why) = strait_unavailable {
        println!();
        println!("strait with rules: not measured: {why}");
    }
    println!(
        "(target: strait with 10 000 rules >= 95 % of its no-policy throughput, and above \
         iptables in both throughput and connections per second. The iptables column's \
         \"no policy\" row is strait's kernel path without any chain.)"
    );
}

/// From `t0`, poll until the client's connection to `allowed` succeeds and to `denied`
/// fails twice in a row (on the server's node: the newly applied rules hold): how long
/// it took, None after [`ENFORCE_LIMIT`].
fn poll_change(bed: &Bed, allowed: u16, denied: u16, t0: Instant) -> Option<Duration> {
    let open = spawn_poll(&bed.client, bed.server_addr(allowed), true, t0);
    let shut = spawn_poll(&bed.client, bed.server_addr(denied), false, t0);
    let open = open.join().ok().flatten();
    let shut = shut.join().ok().flatten();
    open.zip(shut).map(|(a, b)| a.max(b))
}

fn print_iperf(label: &str, run: usize, r: &Result<IperfRun, String>) {
    match r {
        Ok(r) => println!(
            "  run {run} {label:<9} {:>9.2} Gbit/s  ({} retransmits, {} ms CPU per GB)",
            r.gbits,
            r.retransmits,
            r.cpu_ms_per_gb.map_or("-".into(), |c| format!("{c:.0}"))
        ),
        Err(e) => println!("  run {run} {label:<9} iperf3 failed: {e}"),
    }
}

/// One figure's table: rules | strait | iptables | strait/iptables (of the medians;
/// the median of the per-round ratios) | strait / strait without policy.
fn print_rate_table(
    title: &str,
    results: &[(Stage, StageFigures)],
    pick: impl Fn(&StageFigures) -> &[Vec<Option<f64>>; 2],
    decimals: usize,
) {
    println!("{title}");
    println!(
        "{:<12} | {:>10} | {:>10} | {:>26} | {:>16}",
        "rules", "strait", "iptables", "strait/iptables (rounds)", "strait/no policy"
    );
    let no_policy = results
        .iter()
        .find(|(s, _)| *s == Stage::NoPolicy)
        .and_then(|(_, f)| median(pick(f)[0].iter().flatten().copied().collect()));
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.decimals$}"));
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} %"));
    for (stage, fig) in results {
        let series = pick(fig);
        let m: Vec<Option<f64>> = series
            .iter()
            .map(|s| median(s.iter().flatten().copied().collect()))
            .collect();
        let per_round: Vec<f64> = series[0]
            .iter()
            .zip(&series[1])
            .filter_map(|(s, i)| s.zip(*i).map(|(s, i)| 100.0 * s / i))
            .collect();
        let of_medians = m[0].zip(m[1]).map(|(s, i)| 100.0 * s / i);
        let vs_none = m[0].zip(no_policy).map(|(s, n)| 100.0 * s / n);
        println!(
            "{:<12} | {:>10} | {:>10} | {:>26} | {:>16}",
            stage.to_string(),
            fmt(m[0]),
            fmt(m[1]),
            format!("{} ({})", pct(of_medians), pct(median(per_round))),
            pct(vs_none)
        );
    }
}

fn print_update_table(results: &[(Stage, StageFigures)]) {
    println!("Policy update and memory on the server's node (h2)");
    println!(
        "{:<12} | {:>12} | {:>15} | {:>16} | {:>14} | {:>19} | {:>12}",
        "rules",
        "strait apply",
        "strait enforced",
        "strait pol. maps",
        "iptables apply",
        "iptables-save chain",
        "ipset memory"
    );
    for (stage, fig) in results {
        let maps = fig
            .strait_maps
            .as_ref()
            .map_or("-".into(), MapMemory::short);
        let (chain, sets) = fig.iptables_mem.map_or(("-".into(), "-".into()), |(c, s)| {
            (format!("{c} B"), kib(s))
        });
        println!(
            "{:<12} | {:>12} | {:>15} | {:>16} | {:>14} | {:>19} | {:>12}",
            stage.to_string(),
            ms(fig.apply[0]),
            ms(fig.enforced[0]),
            maps,
            ms(fig.apply[1]),
            chain,
            sets
        );
    }
    for (stage, fig) in results {
        if let Some(m) = &fig.strait_maps {
            println!("  strait maps of h2's agent, {stage}: {}", m.detail());
        }
    }
    println!(
        "  (apply: until the command returned; enforced: from then until h2 allowed the \
         stage's new probe port and refused the previous one, polled every 5 ms)"
    );
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
}

fn kib(bytes: u64) -> String {
    format!("{:.0} KiB", bytes as f64 / 1024.0)
}

// ---------------------------------------------------------------------------------
// Probes: the echo server, the connection loop, the enforcement poll

/// Accept/echo threads on `ports` of a container's address: each connection gets its
/// one byte back and is closed. Stopped (threads joined) on drop.
struct EchoServer {
    server: Arc<Container>,
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServer {
    fn start(server: &Arc<Container>, ports: &[u16], cpu: Option<usize>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut addrs = vec![];
        let mut threads = vec![];
        for port in ports {
            let addr = SocketAddr::new(server.ip4(), *port);
            // The socket stays in the server's namespace; the thread serving it need
            // not be there.
            let listener = server
                .ns
                .run_in(move || TcpListener::bind(addr))
                .unwrap_or_else(|e| panic!("listen on {addr} in {}: {e}", server.ns.name()));
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                pin_to(cpu);
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(mut conn) = conn else { continue };
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut byte = [0u8; 1];
                    if conn.read_exact(&mut byte).is_ok() {
                        let _ = conn.write_all(&byte);
                    }
                }
            }));
            addrs.push(addr);
        }
        Self {
            server: server.clone(),
            addrs,
            stop,
            threads,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake each blocked accept with a connection from inside the namespace (no
        // policy applies to the container's own address).
        for addr in self.addrs.clone() {
            let _ = self
                .server
                .ns
                .run_in(move || TcpStream::connect_timeout(&addr, Duration::from_secs(1)));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Pin the calling thread to `cpu` (best effort).
fn pin_to(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        let mut set = nix::sched::CpuSet::new();
        if set.set(cpu).is_ok() {
            let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
        }
    }
}

struct ConnRun {
    per_sec: f64,
    done: u64,
    failed: u64,
}

/// Connect, write a byte, read it back, close, one connection after the other for
/// `seconds`, from a thread in the client's namespace.
fn conn_rate(
    client: &Container,
    to: SocketAddr,
    seconds: u32,
    pin: bool,
) -> Result<ConnRun, String> {
    let r = client.ns.run_in(move || {
        pin_to(pin.then_some(0));
        let t0 = Instant::now();
        let limit = Duration::from_secs(seconds.into());
        let (mut done, mut failed) = (0u64, 0u64);
        let one = || -> std::io::Result<()> {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(1))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.write_all(&[7])?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)
        };
        while t0.elapsed() < limit {
            match one() {
                Ok(()) => done += 1,
                Err(_) if failed < 100 => failed += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(ConnRun {
            per_sec: done as f64 / t0.elapsed().as_secs_f64(),
            done,
            failed,
        })
    });
    r.map_err(|e| format!("{to}: {e}"))
}

/// One fresh connection attempt from the client's namespace.
fn connects(client: &Container, to: SocketAddr, timeout: Duration) -> bool {
    client
        .ns
        .run_in(move || TcpStream::connect_timeout(&to, timeout).map(|_| ()))
        .is_ok()
}

/// Try to connect for up to `limit`.
fn wait_connect(client: &Container, to: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if connects(client, to, Duration::from_secs(1)) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A thread that polls `to` from `client`'s namespace every [`POLL_EVERY`] until a
/// fresh connection succeeds (`want_open`) or fails twice in a row (not: one attempt
/// may be lost to a busy machine, a refusal must hold): the time from `t0` to the
/// start of the first attempt that showed it; None after [`ENFORCE_LIMIT`].
fn spawn_poll(
    client: &Arc<Container>,
    to: SocketAddr,
    want_open: bool,
    t0: Instant,
) -> JoinHandle<Option<Duration>> {
    let client = client.clone();
    std::thread::spawn(move || {
        client
            .ns
            .run_in(move || {
                let needed = if want_open { 1 } else { 2 };
                let mut first: Option<Instant> = None;
                let mut seen = 0;
                loop {
                    let at = Instant::now();
                    let open = TcpStream::connect_timeout(&to, PROBE_TIMEOUT).is_ok();
                    if open == want_open {
                        let since = *first.get_or_insert(at);
                        seen += 1;
                        if seen >= needed {
                            return Ok(Some(since.saturating_duration_since(t0)));
                        }
                    } else {
                        first = None;
                        seen = 0;
                    }
                    if t0.elapsed() > ENFORCE_LIMIT {
                        return Ok(None);
                    }
                    std::thread::sleep(POLL_EVERY);
                }
            })
            .ok()
            .flatten()
    })
}

// ---------------------------------------------------------------------------------
// The iptables baseline

/// The server's chain and ipsets in h2's namespace of the iptables bed; everything
/// named `strait-bench-*`, removed on drop (also on panic).
struct IptablesPolicy<'a> {
    host: &'a Netns,
    client: Ipv4Addr,
    fillers: BTreeMap<usize, Ipv4Addr>,
    /// The server's host-side veth.
    dev: String,
    chain: String,
    hooked: bool,
    work: PathBuf,
}

impl<'a> IptablesPolicy<'a> {
    fn new(bed: &'a Bed, work: PathBuf) -> Self {
        let host = &bed.cluster.host(1).ns;
        let route = host.ip_json(&["route", "get", &bed.server.ip4().to_string()]);
        let dev = route[0]["dev"]
            .as_str()
            .unwrap_or_else(|| panic!("no route to the server on h2: {route}"))
            .to_string();
        Self {
            host,
            client: bed.client.v4.expect("client has an IPv4 address"),
            fillers: bed.fillers.clone(),
            dev,
            chain: format!("{PREFIX}-1"),
            hooked: false,
            work,
        }
    }

    /// Replace the chain's rules and the sets with `rules` plus the client's allow on
    /// `client_ports`: how long that took (flush, destroy, `ipset restore`,
    /// `iptables-restore --noflush`).
    fn replace(&mut self, rules: &[BenchRule], client_ports: &[u16]) -> Result<Duration, String> {
        if !self.hooked {
            self.iptables(&["-N", &self.chain])?;
            self.iptables(&["-I", "FORWARD", "1", "-o", &self.dev, "-j", &self.chain])?;
            self.hooked = true;
        }
        let (sets, chain) = self.render(rules, client_ports);
        let t0 = Instant::now();
        self.iptables(&["-F", &self.chain])?;
        self.destroy_sets();
        self.restore(&["ipset", "restore"], &sets, "sets.txt")?;
        self.restore(&["iptables-restore", "--noflush"], &chain, "chain.txt")?;
        Ok(t0.elapsed())
    }

    /// (`ipset restore` input, `iptables-restore` input).
    fn render(&self, rules: &[BenchRule], client_ports: &[u16]) -> (String, String) {
        let mut sets = String::new();
        let mut chain = format!(
            "*filter\n:{c} - [0:0]\n-A {c} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n",
            c = self.chain
        );
        let mut labels = std::collections::BTreeSet::new();
        for (n, chunk) in rules.chunks(CHUNK).enumerate() {
            let cidrs: Vec<&str> = chunk
                .iter()
                .filter_map(|r| match r {
                    BenchRule::Cidr(c) => Some(c.as_str()),
                    BenchRule::Selector { .. } => None,
                })
                .collect();
            if !cidrs.is_empty() {
                let set = format!("{PREFIX}-cidr-{n}");
                sets.push_str(&format!("create {set} hash:net family inet\n"));
                for c in cidrs {
                    sets.push_str(&format!("add {set} {c}\n"));
                }
                chain.push_str(&format!(
                    "-A {} -m set --match-set {set} src -j ACCEPT\n",
                    self.chain
                ));
            }
            for r in chunk {
                if let BenchRule::Selector { label, port } = r {
                    let set = format!("{PREFIX}-sel-{label}");
                    if labels.insert(*label) {
                        sets.push_str(&format!("create {set} hash:ip family inet\n"));
                        if let Some(ip) = self.fillers.get(label) {
                            sets.push_str(&format!("add {set} {ip}\n"));
                        }
                    }
                    chain.push_str(&format!(
                        "-A {} -p tcp --dport {port} -m set --match-set {set} src -j ACCEPT\n",
                        self.chain
                    ));
                }
            }
        }
        let client = format!("{PREFIX}-client");
        sets.push_str(&format!(
            "create {client} hash:ip family inet\nadd {client} {}\n",
            self.client
        ));
        let ports: Vec<String> = client_ports.iter().map(u16::to_string).collect();
        chain.push_str(&format!(
            "-A {c} -p tcp -m multiport --dports {} -m set --match-set {client} src -j ACCEPT\n\
             -A {c} -j DROP\nCOMMIT\n",
            ports.join(","),
            c = self.chain
        ));
        (sets, chain)
    }

    /// (bytes of `iptables-save` lines naming the chain, `ipset list -t` memory of the
    /// bench's sets).
    fn memory(&self) -> (usize, u64) {
        let save = self.host.exec(&["iptables-save", "-t", "filter"]);
        let chain = String::from_utf8_lossy(&save.stdout)
            .lines()
            .filter(|l| l.contains(&self.chain))
            .map(|l| l.len() + 1)
            .sum();
        let list = self.host.exec(&["ipset", "list", "-t"]);
        let mut sets = 0;
        let mut ours = false;
        for line in String::from_utf8_lossy(&list.stdout).lines() {
            if let Some(name) = line.strip_prefix("Name: ") {
                ours = name.starts_with(PREFIX);
            } else if let Some(size) = line.strip_prefix("Size in memory: ")
                && ours
            {
                sets += size.trim().parse::<u64>().unwrap_or(0);
            }
        }
        (chain, sets)
    }

    fn iptables(&self, argv: &[&str]) -> Result<(), String> {
        let mut full = vec!["iptables", "-w"];
        full.extend_from_slice(argv);
        let out = self.host.exec(&full);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{full:?} in {}: {}",
                self.host.name(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Run `argv` in h2's namespace with `input` on stdin (kept in the work dir as
    /// `file` for a look afterwards).
    fn restore(&self, argv: &[&str], input: &str, file: &str) -> Result<(), String> {
        let path = self.work.join(file);
        std::fs::write(&path, input).map_err(|e| format!("{}: {e}", path.display()))?;
        let stdin = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        let out = Command::new("ip")
            .args(["netns", "exec", self.host.name()])
            .args(argv)
            .stdin(stdin)
            .output()
            .map_err(|e| format!("{argv:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{argv:?} in {}: {}",
                self.host.name(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Destroy the bench's sets (only `strait-bench-*`; unreferenced once the chain is
    /// flushed).
    fn destroy_sets(&self) {
        let list = self.host.exec(&["ipset", "list", "-n"]);
        for name in String::from_utf8_lossy(&list.stdout).lines() {
            if name.starts_with(PREFIX) {
                let _ = self.host.exec(&["ipset", "destroy", name]);
            }
        }
    }
}

impl Drop for IptablesPolicy<'_> {
    fn drop(&mut self) {
        if self.hooked {
            // Each call removes one copy of the jump; there is one.
            while self
                .iptables(&["-D", "FORWARD", "-o", &self.dev, "-j", &self.chain])
                .is_ok()
            {}
            let _ = self.iptables(&["-F", &self.chain]);
            let _ = self.iptables(&["-X", &self.chain]);
        }
        self.destroy_sets();
    }
}

// ---------------------------------------------------------------------------------
// strait's map memory

/// The eBPF maps a process holds, from `/proc/<pid>/fdinfo`, named by `bpftool` when
/// it is installed (fdinfo carries no name).
struct MapMemory {
    /// (id, name, memlock bytes, max entries).
    maps: Vec<(u32, Option<String>, u64, u64)>,
}

impl MapMemory {
    fn of_process(pid: u32) -> Self {
        let names = bpftool_names();
        let mut maps: BTreeMap<u32, (Option<String>, u64, u64)> = BTreeMap::new();
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten();
        for fd in fds.flatten() {
            let is_map = std::fs::read_link(fd.path())
                .is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf-map");
            if !is_map {
                continue;
            }
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .unwrap_or_default();
            let field = |k: &str| -> Option<u64> {
                info.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.trim().parse().ok())
            };
            if let Some(id) = field("map_id:") {
                let id = id as u32;
                let memlock = field("memlock:").unwrap_or(0);
                let max = field("max_entries:").unwrap_or(0);
                maps.insert(id, (names.get(&id).cloned(), memlock, max));
            }
        }
        Self {
            maps: maps
                .into_iter()
                .map(|(id, (n, m, e))| (id, n, m, e))
                .collect(),
        }
    }

    fn is_policy(name: &str) -> bool {
        name.starts_with("strait_pol") || name == "strait_ct"
    }

    /// The policy maps' memory, or every map's when no names are known.
    fn short(&self) -> String {
        if self.maps.iter().any(|m| m.1.is_some()) {
            let pol: u64 = self
                .maps
                .iter()
                .filter(|m| m.1.as_deref().is_some_and(Self::is_policy))
                .map(|m| m.2)
                .sum();
            kib(pol)
        } else {
            let all: u64 = self.maps.iter().map(|m| m.2).sum();
            format!("all {}", kib(all))
        }
    }

    fn detail(&self) -> String {
        let all: u64 = self.maps.iter().map(|m| m.2).sum();
        let named: Vec<String> = self
            .maps
            .iter()
            .filter(|m| m.1.as_deref().is_some_and(Self::is_policy))
            .map(|(_, n, m, e)| format!("{} {} ({e} max)", n.as_deref().unwrap_or("?"), kib(*m)))
            .collect();
        let names = if self.maps.iter().any(|m| m.1.is_some()) {
            if named.is_empty() {
                "no strait_pol_*/strait_ct map".to_string()
            } else {
                named.join(", ")
            }
        } else {
            "map names unknown (bpftool not installed)".to_string()
        };
        format!("{} maps, {} in all; {names}", self.maps.len(), kib(all))
    }
}

/// Map id → name from `bpftool -j map show`; empty when bpftool is missing.
fn bpftool_names() -> BTreeMap<u32, String> {
    let Ok(out) = Command::new("bpftool").args(["-j", "map", "show"]).output() else {
        return BTreeMap::new();
    };
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m["id"].as_u64()? as u32, m["name"].as_str()?.to_string())))
        .collect()
}

// ---------------------------------------------------------------------------------
// The 3-host apply-to-enforced latency

fn three_host_latency(args: &Args) {
    println!("Apply-to-enforced latency: 3 hosts, VXLAN, fast path on");
    let mut cluster = Cluster::start({
        let mut o = ClusterOpts::new(3, Fabric::Vxlan);
        o.pools = vec!["10.244.0.0/16".into()];
        o
    });
    // Server on every host, its client on the next host.
    let servers: Vec<Arc<Container>> = (0..3)
        .map(|h| add_labelled(&mut cluster, h, &format!("s{}", h + 1), "lat-server"))
        .collect();
    let clients: Vec<Arc<Container>> = (0..3)
        .map(|h| {
            add_labelled(
                &mut cluster,
                (h + 1) % 3,
                &format!("k{}", h + 1),
                "lat-client",
            )
        })
        .collect();
    let echoes: Vec<EchoServer> = servers
        .iter()
        .map(|s| EchoServer::start(s, &[LAT_PORT], None))
        .collect();
    let pairs: Vec<(Arc<Container>, SocketAddr)> = clients
        .iter()
        .zip(&servers)
        .map(|(c, s)| (c.clone(), SocketAddr::new(s.ip4(), LAT_PORT)))
        .collect();
    for (c, to) in &pairs {
        if !wait_connect(c, *to, Duration::from_secs(30)) {
            println!(
                "  {} cannot reach {to} before any policy; not measured",
                c.name
            );
            return;
        }
    }
    let name = format!("{PREFIX}-lat");
    let deny = policy_head(&name, "lat-server");
    let allow = format!("{deny}  ingress:\n  - {{}}\n");
    println!(
        "  a server on each host, its client on the next; NetworkPolicy {NAMESPACE}/{name} \
         applied on h1, alternately deny-all (no ingress rule) and allow-all (`ingress: [{{}}]`); \
         {} of each; from apply returning until all 3 servers refuse (twice in a row) / accept \
         a fresh connection, polled every 5 ms",
        args.applies
    );
    let mut to_deny = vec![];
    let mut to_allow = vec![];
    let mut applies = vec![];
    for i in 1..=args.applies {
        for (yaml, want_open, series) in
            [(&deny, false, &mut to_deny), (&allow, true, &mut to_allow)]
        {
            let took = match strait_apply(cluster.host(0), yaml) {
                Ok(t) => t,
                Err(e) => {
                    println!(
                        "  `netctl policy apply -f -` failed on h1: {e}\n  (the policy pieces \
                         of issue 12 are not in this build?) Latency not measured."
                    );
                    return;
                }
            };
            applies.push(took.as_secs_f64() * 1e3);
            let t0 = Instant::now();
            let polls: Vec<_> = pairs
                .iter()
                .map(|(c, to)| spawn_poll(c, *to, want_open, t0))
                .collect();
            let times: Vec<Option<Duration>> =
                polls.into_iter().map(|p| p.join().ok().flatten()).collect();
            let slowest = times
                .iter()
                .copied()
                .collect::<Option<Vec<Duration>>>()
                .and_then(|t| t.into_iter().max());
            let each: Vec<String> = times.iter().map(|t| ms(*t)).collect();
            println!(
                "  {i:>2} {}: apply {} ms, then enforced on h1/h2/h3 servers after {} -> {}",
                if want_open { "allow-all" } else { "deny-all " },
                took.as_millis(),
                each.join(" / "),
                ms(slowest)
            );
            series.push(slowest.map(|d| d.as_secs_f64() * 1e3));
        }
    }
    drop(echoes);
    for (what, series) in [("deny-all", &to_deny), ("allow-all", &to_allow)] {
        let done: Vec<f64> = series.iter().flatten().copied().collect();
        let lo = done.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = done.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        match median(done.clone()) {
            Some(m) => println!(
                "{what}: apply-to-enforced on every host: median {m:.0} ms ({lo:.0} .. {hi:.0}; \
                 {} of {} within {} s)",
                done.len(),
                series.len(),
                ENFORCE_LIMIT.as_secs()
            ),
            None => println!(
                "{what}: never enforced within {} s",
                ENFORCE_LIMIT.as_secs()
            ),
        }
    }
    if let Some(m) = median(applies) {
        println!("netctl policy apply itself: median {m:.0} ms (target: enforced < 1 s)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_sets_are_prefixes_of_each_other_and_cidrs_distinct() {
        let big = bench_rules(MAX_RULES);
        assert_eq!(bench_rules(1000)[..], big[..1000]);
        let cidrs: std::collections::BTreeSet<&String> = big
            .iter()
            .filter_map(|r| match r {
                BenchRule::Cidr(c) => Some(c),
                BenchRule::Selector { .. } => None,
            })
            .collect();
        assert_eq!(cidrs.len(), MAX_RULES / 2);
        assert!(
            cidrs
                .iter()
                .all(|c| c.starts_with("198.18.") || c.starts_with("198.19."))
        );
    }

    #[test]
    fn documents_hold_at_most_a_chunk_and_end_with_the_clients_allow() {
        let yaml = policy_yaml(&bench_rules(1200), &[5201, 5202]);
        let docs: Vec<&str> = yaml.split("---\n").collect();
        assert_eq!(docs.len(), 4);
        assert!(docs[3].contains("app: client}") && docs[3].contains("port: 5202}"));
        assert_eq!(docs[0].matches("  - from:").count(), CHUNK);
        assert_eq!(docs[2].matches("  - from:").count(), 200);
    }
}
