//! strait's site gateway against strongSwan: throughput through the gateway, IKE
//! connection setup time and the interruption on gateway failover, each printed
//! beside a baseline measured in the same run. A benchmark, not a test: it prints
//! figures and asserts nothing about them.
//!
//! The bed is `strait_testbeds::gateway` (the one of `tests/gateway_external.rs`):
//! hosts h1 (`--ipsec-gateway`) and h2 of site `dc` on the underlay bridge, charon
//! ("charon 1", strongSwan 5.9 with kernel-libipsec) on the same bridge in front of
//! the LAN host 192.168.50.10, whose `iperf3 -s` every throughput path ends at.
//! Beside it, on the same bridge, a small strongSwan site with the same shapes:
//! "charon 2" in its own namespace as that site's gateway with a client one veth
//! behind it (as a container on the gateway host is), and a "host" namespace with a
//! client behind it that routes the LAN through charon 2 over the bridge (as h2 routes
//! it through h1). charon 1 serves both sites (two connections, the same proposals:
//! IKE aes256gcm16-prfsha384-x25519, ESP aes256gcm16, PSK), so both encrypted paths
//! end in the same far gateway, over the same line, at the same LAN host.
//!
//! 1. **Throughput**: iperf3 TCP, one stream, `--seconds` each, receiver's Mbit/s,
//!    median and range over `--tput-runs`; from a container on h2 (through gateway
//!    h1) and from a container on h1, and from the strongSwan site's two clients.
//!    Baseline A, plain: the same two container paths unencrypted, before the peer is
//!    declared, by static routes (h2 → h1 → charon 1's namespace → LAN, no ICMP
//!    redirects); baseline B: strongSwan to strongSwan as above. Plain runs first
//!    (strait's peer routes would take its path), then strait and strongSwan
//!    alternate, each round starting with the next path. Also the machine's busy CPU
//!    seconds per GB received, and the CPU seconds per GB of the IPsec processes
//!    (straitd on h1 and charon 1; charon 2 and charon 1).
//! 2. **Setup time**, `--runs` times each, strait and charon 2 taking turns: on the
//!    wire (tcpdump on charon 1's underlay port, read back by tshark), from the
//!    initiator's first IKE_SA_INIT request to charon 1's first IKE_AUTH response
//!    after it, which carries the first Child SA: the same responder and the same
//!    measuring point for both. Also from the command to that response: `netctl ipsec
//!    peer add` (store, gateway election, speaker start included) for strait,
//!    `swanctl --initiate` for charon 2. Between runs strait's peer is deleted and
//!    charon 2's IKE SA terminated, and charon 1 is left with neither.
//! 3. **Failover**, `--failover-runs` times, on a second bed: hosts h1 and h2 both
//!    gateways, h3 not, node lease `--lease-ttl` seconds, charon 1 accepting either
//!    gateway (one site identity). A container on h3 pings the LAN host every 10 ms
//!    (`ping -D`, timestamped replies) while the carrying gateway's agent is killed
//!    (SIGKILL) and the other takes over, and again while the killed agent starts
//!    again and the peer moves back to it. The interruption is the longest time
//!    between two consecutive replies, less the 10 ms interval; lost pings are the
//!    sequence numbers with no reply up to the last one answered.
//!
//! The agents are the `straitd` beside this program (target/release with
//! scripts/bench-gateway.sh) unless `STRAIT_BIN_DIR` says otherwise; the first line
//! printed names it. Everything made (namespaces, agents, etcd, charons, iperf3,
//! ping, tcpdump) goes on exit, on a panic and on Ctrl-C; only processes it started
//! are killed, by PID.
//!
//! Usage: strait-bench-gateway [--runs N] [--tput-runs N] [--seconds S]
//!        [--failover-runs N] [--lease-ttl S] [--no-failover]
//! (root; etcd, iperf3, ping, tcpdump, tshark, strongSwan's charon with
//! kernel-libipsec and swanctl)

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strait_testbeds::bench::{
    IperfRun, IperfServer, checkpoint, iperf, median, percentile, process_cpu_secs,
};
use strait_testbeds::esp::strongswan::{self, ExternalGateway};
use strait_testbeds::gateway::{CONVERGE, GatewayBed, LAN, LAN_HOST, PEER, PSK, external};
use strait_testbeds::netns::Netns;
use strait_testbeds::wait_until;
use strait_testbeds::wire::{Capture, tshark_fields};

const USAGE: &str = "usage: strait-bench-gateway [--runs N] [--tput-runs N] [--seconds S] \
                     [--failover-runs N] [--lease-ttl S] [--no-failover]";
/// The strongSwan site's networks: its gateway's client, and the other "host"'s.
const SW_NETS: &str = "10.98.0.0/16";
const SW_GW_CLIENT: &str = "10.98.1.2";
const SW_HOST_CLIENT: &str = "10.98.2.2";
/// How often the failover ping sends.
const PING_EVERY: Duration = Duration::from_millis(10);
/// How often the benchmark looks at SA state.
const POLL: Duration = Duration::from_millis(20);

struct Args {
    runs: usize,
    tput_runs: usize,
    seconds: u32,
    failover_runs: usize,
    lease_ttl: u64,
    failover: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        runs: 10,
        tput_runs: 3,
        seconds: 5,
        failover_runs: 5,
        lease_ttl: 3,
        failover: true,
    };
    let usage = || -> ! {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--no-failover" {
            a.failover = false;
            continue;
        }
        let val = it.next().and_then(|v| v.parse::<u32>().ok());
        match (flag.as_str(), val) {
            ("--runs", Some(n)) if (1..=1000).contains(&n) => a.runs = n as usize,
            ("--tput-runs", Some(n)) if (1..=100).contains(&n) => a.tput_runs = n as usize,
            ("--seconds", Some(n)) if (1..=600).contains(&n) => a.seconds = n,
            ("--failover-runs", Some(n)) if (1..=100).contains(&n) => a.failover_runs = n as usize,
            ("--lease-ttl", Some(n)) if (1..=60).contains(&n) => a.lease_ttl = u64::from(n),
            _ => usage(),
        }
    }
    a
}

/// Seconds since the epoch: the clock tcpdump and `ping -D` stamp with.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn main() {
    if !strait_testbeds::require_root("strait-bench-gateway")
        || !strait_testbeds::etcd::require_etcd("strait-bench-gateway")
    {
        std::process::exit(2);
    }
    for tool in ["iperf3", "ping", "tcpdump", "tshark"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            eprintln!("{tool} not installed (scripts/install-deps.sh; apt-get install iperf3)");
            std::process::exit(2);
        }
    }
    if !strongswan::available() {
        eprintln!("strongSwan's charon with kernel-libipsec and swanctl are not installed");
        std::process::exit(2);
    }
    let args = parse_args();
    strait_testbeds::bench::stop_on_signals();
    strait_testbeds::netns::reap_leftovers();
    println!(
        "agents: {}; load before: {}",
        strait_testbeds::bins::bin("straitd").display(),
        loadavg()
    );

    let (tput, setup) = throughput_and_setup(&args);
    let failover = if args.failover {
        Some(failover(&args))
    } else {
        None
    };

    println!();
    println!("load after: {}", loadavg());
    println!(
        "== throughput: iperf3 TCP, 1 stream, {} s x {} runs, to {LAN_HOST} behind charon 1 ==",
        args.seconds, args.tput_runs
    );
    println!(
        "{:<52} {:>24} {:>14} {:>16}",
        "path", "Mbit/s median (range)", "machine s/GB", "IPsec procs s/GB"
    );
    for p in &tput {
        println!(
            "{:<52} {:>24} {:>14} {:>16}",
            p.label,
            spread(&p.mbits, 0),
            median(p.machine.clone()).map_or("-".into(), |c| format!("{c:.2}")),
            median(p.procs.clone()).map_or("-".into(), |c| format!("{c:.2}"))
        );
    }
    // Index pairs of `tput`: strait beside strongSwan, then strait beside plain.
    for (a, b) in [(2, 4), (3, 5), (2, 0), (3, 1)] {
        if let (Some(s), Some(w)) = (
            tput.get(a).and_then(|p| median(p.mbits.clone())),
            tput.get(b).and_then(|p| median(p.mbits.clone())),
        ) {
            println!("{} / {}: {:.2}x", tput[a].label, tput[b].label, s / w);
        }
    }
    println!();
    println!(
        "== connection setup: first IKE_SA_INIT request to charon 1's IKE_AUTH response \
         (first Child SA), on the wire, {} runs ==",
        args.runs
    );
    println!(
        "{:<42} {:>30} {:>28}",
        "initiator", "wire ms p50 / p90 (range)", "command→done ms p50 / p90"
    );
    for s in &setup {
        println!(
            "{:<42} {:>30} {:>28}{}",
            s.label,
            p50_p90(&s.wire, true),
            p50_p90(&s.command, false),
            if s.missing > 0 {
                format!("  ({} runs not seen on the wire)", s.missing)
            } else {
                String::new()
            }
        );
    }
    if let Some(f) = failover {
        println!();
        println!(
            "== gateway failover: ping every {} ms from a container on h3, node lease {} s, \
             {} runs ==",
            PING_EVERY.as_millis(),
            args.lease_ttl,
            args.failover_runs
        );
        for (label, rows) in [
            ("carrying gateway's agent killed", &f.kill),
            ("killed agent back, peer moves back", &f.back),
        ] {
            let gaps: Vec<f64> = rows.iter().filter_map(|r| r.gap_ms).collect();
            let lost: Vec<f64> = rows.iter().map(|r| r.lost as f64).collect();
            let failed = rows.iter().filter(|r| r.gap_ms.is_none()).count();
            println!(
                "{label:<38} interruption ms {} ; lost pings {}{}",
                spread(&gaps, 0),
                spread(&lost, 0),
                if failed > 0 {
                    format!(" ; {failed} runs did not recover")
                } else {
                    String::new()
                }
            );
        }
        let takeover: Vec<f64> = f.takeover_ms.clone();
        println!(
            "{:<38} {} ms (kill → the other gateway's IKE SA and Child SA up, polled every {} ms)",
            "take-over",
            spread(&takeover, 0),
            POLL.as_millis()
        );
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// `median (min..max)` of `v` with `prec` decimals.
fn spread(v: &[f64], prec: usize) -> String {
    let Some(m) = median(v.to_vec()) else {
        return "-".into();
    };
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{m:.prec$} ({lo:.prec$}..{hi:.prec$})")
}

/// `p50 / p90` of `v` (ms), with the range when `range`.
fn p50_p90(v: &[f64], range: bool) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let d: Vec<Duration> = v
        .iter()
        .map(|ms| Duration::from_secs_f64(ms / 1e3))
        .collect();
    let ms = |p| percentile(&d, p).as_secs_f64() * 1e3;
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if range {
        format!("{:.1} / {:.1} ({lo:.1}..{hi:.1})", ms(50), ms(90))
    } else {
        format!("{:.1} / {:.1}", ms(50), ms(90))
    }
}

/// One throughput path and what its runs gave.
struct TputPath {
    label: String,
    /// The processes doing its IPsec (none: plain).
    pids: Vec<u32>,
    mbits: Vec<f64>,
    machine: Vec<f64>,
    procs: Vec<f64>,
}

impl TputPath {
    fn new(label: &str, pids: Vec<u32>) -> Self {
        Self {
            label: label.into(),
            pids,
            mbits: vec![],
            machine: vec![],
            procs: vec![],
        }
    }

    fn cpu(&self) -> Option<f64> {
        if self.pids.is_empty() {
            return None;
        }
        self.pids.iter().map(|&p| process_cpu_secs(p)).sum()
    }

    /// One iperf3 run to the LAN host, printed and kept.
    fn run(&mut self, ns: &Netns, round: usize, seconds: u32) {
        checkpoint();
        let lan: IpAddr = LAN_HOST.parse().expect("address");
        let before = self.cpu();
        let r = iperf(ns, lan, seconds, false);
        let used = self.cpu().zip(before).map(|(a, b)| a - b);
        match &r {
            Ok(IperfRun {
                gbits,
                retransmits,
                bytes,
                cpu_ms_per_gb,
            }) => {
                println!(
                    "  run {round} {:<52} {:>8.0} Mbit/s ({retransmits} retransmits)",
                    self.label,
                    gbits * 1e3
                );
                self.mbits.push(gbits * 1e3);
                if let Some(ms) = cpu_ms_per_gb {
                    self.machine.push(ms / 1e3);
                }
                if let Some(secs) = used.filter(|_| *bytes > 0) {
                    self.procs.push(secs / (*bytes as f64 / 1e9));
                }
            }
            Err(e) => println!("  run {round} {:<52} failed: {e}", self.label),
        }
    }
}

/// The strongSwan site beside strait's: charon 2's namespace with a client behind it,
/// and a "host" with a client behind it, on the same underlay bridge.
struct SwanSite {
    charon: ExternalGateway,
    gw_client: Netns,
    host_client: Netns,
    addr: String,
}

/// A namespace `name` one veth behind `via` (`via_addr`/24 on `via`'s side, `addr`/24
/// in it, its default route through `via`).
fn client_behind(via: &Netns, name: String, via_addr: &str, addr: &str) -> Netns {
    let ns = Netns::new(name);
    via.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    via.exec_ok(&[
        "ip", "link", "add", "cl0", "type", "veth", "peer", "name", "cl1",
    ]);
    via.exec_ok(&["ip", "link", "set", "cl1", "netns", ns.name()]);
    via.exec_ok(&["ip", "addr", "add", &format!("{via_addr}/24"), "dev", "cl0"]);
    via.exec_ok(&["ip", "link", "set", "cl0", "up"]);
    ns.exec_ok(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "cl1"]);
    ns.exec_ok(&["ip", "link", "set", "cl1", "up"]);
    ns.exec_ok(&["ip", "route", "add", "default", "via", via_addr]);
    ns
}

/// charon's connection `name` with PSK and addresses as identities, one tunnel-mode
/// child `child` that nothing starts by itself.
fn swanctl_conn(name: &str, me: &str, them: &str, local_ts: &str, remote_ts: &str) -> String {
    format!(
        "  {name} {{\n    version = 2\n    local_addrs = {me}\n    remote_addrs = {them}\n    \
         proposals = aes256gcm16-prfsha384-x25519\n    local {{\n      auth = psk\n      \
         id = {me}\n    }}\n    remote {{\n      auth = psk\n      id = {them}\n    }}\n    \
         children {{\n      net {{\n        local_ts = {local_ts}\n        \
         remote_ts = {remote_ts}\n        esp_proposals = aes256gcm16-x25519\n        \
         mode = tunnel\n        start_action = none\n      }}\n    }}\n  }}\n"
    )
}

fn swanctl_secret(name: &str, a: &str, b: &str) -> String {
    format!("  ike-{name} {{\n    id-a = {a}\n    id-b = {b}\n    secret = \"{PSK}\"\n  }}\n")
}

fn throughput_and_setup(args: &Args) -> (Vec<TputPath>, Vec<SetupRow>) {
    println!(
        "bed 1: hosts h1 (gateway) and h2 of site dc, charon 1 before the LAN, charon 2's site"
    );
    let mut bed = GatewayBed::start(2, &[0], None, &[]);
    let c1 = bed.cluster.add_container(0, "c1");
    let c2 = bed.cluster.add_container(1, "c2");
    let prefix = bed.cluster.prefix.clone();
    let (_, sw4, _) = bed.cluster.add_underlay_peer(51);
    let (_, swh4, _) = bed.cluster.add_underlay_peer(52);
    let (sw4, swh4) = (sw4.to_string(), swh4.to_string());
    let gw = bed.gw_addr.clone();
    let h1 = bed.cluster.hosts()[0].underlay_v4.to_string();

    // charon 1: the bed's connection to strait (nothing started by charon), and one to
    // charon 2.
    let conf = bed
        .swanctl_psk(PSK, "none")
        .replacen(
            "connections {\n",
            &format!(
                "connections {{\n{}",
                swanctl_conn("swan", &gw, &sw4, LAN, SW_NETS)
            ),
            1,
        )
        .replacen(
            "secrets {\n",
            &format!("secrets {{\n{}", swanctl_secret("swan", &gw, &sw4)),
            1,
        );
    let charon1 = bed.charon(&conf, &[]).expect("charon 1");
    let site = {
        let peers = bed.cluster.peers();
        let (sw_ns, swh_ns) = (&peers[1], &peers[2]);
        let gw_client = client_behind(sw_ns, format!("{prefix}swc"), "10.98.1.1", SW_GW_CLIENT);
        let host_client =
            client_behind(swh_ns, format!("{prefix}swhc"), "10.98.2.1", SW_HOST_CLIENT);
        swh_ns.exec_ok(&["ip", "route", "add", LAN, "via", &sw4]);
        sw_ns.exec_ok(&["ip", "route", "add", "10.98.2.0/24", "via", &swh4]);
        let conf = format!(
            "connections {{\n{}}}\nsecrets {{\n{}}}\n",
            swanctl_conn("site", &sw4, &gw, SW_NETS, LAN),
            swanctl_secret("site", &sw4, &gw)
        );
        let charon = ExternalGateway::start(sw_ns, &conf, &[]).expect("charon 2");
        SwanSite {
            charon,
            gw_client,
            host_client,
            addr: sw4.clone(),
        }
    };
    let _server = IperfServer::start(&bed.lan, LAN_HOST.parse().expect("address"));

    // Baseline A: the same container paths unencrypted, by static routes.
    let mut plain = vec![
        TputPath::new("plain, container on h2 via h1", vec![]),
        TputPath::new("plain, container on h1", vec![]),
    ];
    {
        let hosts = bed.cluster.hosts();
        let (host1, host2) = (&hosts[0], &hosts[1]);
        let routes: [(&Netns, String); 3] = [
            (&host1.ns, format!("{LAN} via {gw}")),
            (&host2.ns, format!("{LAN} via {h1}")),
            (bed.charon_ns(), format!("10.244.0.0/16 via {h1}")),
        ];
        // h1 sends h2's packets back out of the port they came in by: without this it
        // would tell h2 (ICMP redirect) to send them to charon 1 directly.
        for conf in ["all", "eth0"] {
            host1.ns.exec_ok(&[
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{conf}.send_redirects=0"),
            ]);
            host2.ns.exec_ok(&[
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{conf}.accept_redirects=0"),
            ]);
        }
        for (ns, r) in &routes {
            let mut argv = vec!["ip", "route", "add"];
            argv.extend(r.split(' '));
            ns.exec_ok(&argv);
        }
        let reach: Vec<bool> = [&c2, &c1]
            .iter()
            .map(|c| wait_ping(&c.ns, LAN_HOST))
            .collect();
        for round in 0..args.tput_runs {
            for k in 0..plain.len() {
                let i = (round + k) % plain.len();
                if reach[i] {
                    let ns = if i == 0 { &c2.ns } else { &c1.ns };
                    plain[i].run(ns, round + 1, args.seconds);
                }
            }
        }
        for (i, ok) in reach.iter().enumerate() {
            if !ok {
                println!("{}: the LAN host does not answer, left out", plain[i].label);
            }
        }
        for (ns, r) in &routes {
            let mut argv = vec!["ip", "route", "del"];
            argv.extend(r.split(' '));
            ns.exec_ok(&argv);
        }
    }

    // Setup time: strait and charon 2 take turns; the last of each stays up.
    let setup = setup_runs(&bed, &charon1, &site, &h1, args.runs);

    // strait and strongSwan, alternating.
    let strait_pids: Vec<u32> = [bed.cluster.hosts()[0].agent.pid(), charon1.pid()]
        .into_iter()
        .flatten()
        .collect();
    let swan_pids: Vec<u32> = [site.charon.pid(), charon1.pid()]
        .into_iter()
        .flatten()
        .collect();
    let mut enc = vec![
        TputPath::new(
            "strait, container on h2 via gateway h1",
            strait_pids.clone(),
        ),
        TputPath::new("strait, container on gateway h1", strait_pids),
        TputPath::new(
            "strongSwan, client on another host via charon 2",
            swan_pids.clone(),
        ),
        TputPath::new("strongSwan, client on charon 2's host", swan_pids),
    ];
    let namespaces: Vec<&Netns> = vec![&c2.ns, &c1.ns, &site.host_client, &site.gw_client];
    let reach: Vec<bool> = namespaces
        .iter()
        .map(|ns| wait_ping(ns, LAN_HOST))
        .collect();
    for (i, ok) in reach.iter().enumerate() {
        if !ok {
            println!("{}: the LAN host does not answer, left out", enc[i].label);
        }
    }
    for round in 0..args.tput_runs {
        for k in 0..enc.len() {
            let i = (round + k) % enc.len();
            if reach[i] {
                enc[i].run(namespaces[i], round + 1, args.seconds);
            }
        }
    }
    if let Some(p) = external(&bed.cluster.hosts()[0]) {
        println!(
            "strait's SA: {} {}",
            p.ike_state,
            p.child_sas
                .iter()
                .map(|c| format!("{c:?}"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    if let Ok(sas) = charon1.swanctl(&["--list-sas"]) {
        for l in sas
            .lines()
            .filter(|l| l.contains("ESP:") || l.contains("IKEv2"))
        {
            println!("charon 1: {}", l.trim());
        }
    }
    plain.extend(enc);
    (plain, setup)
}

/// Pings `to` from `ns` until it answers (10 s at most).
fn wait_ping(ns: &Netns, to: &str) -> bool {
    wait_until(
        "ping",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || ns.ping(to),
    )
    .is_ok()
}

/// One initiator's setup times, ms.
struct SetupRow {
    label: String,
    wire: Vec<f64>,
    command: Vec<f64>,
    missing: usize,
}

/// One setup run: who initiated (its underlay address), when the command was given,
/// and when the run (with its teardown) was over.
struct Window {
    initiator: String,
    start: f64,
    end: f64,
}

fn setup_runs(
    bed: &GatewayBed,
    charon1: &ExternalGateway,
    site: &SwanSite,
    h1_addr: &str,
    runs: usize,
) -> Vec<SetupRow> {
    let dir = tempfile::tempdir().expect("tempdir");
    let pcap = dir.path().join("ike.pcap");
    let capture = Capture::start(bed.charon_ns().name(), "eth0", &pcap);
    let h1 = &bed.cluster.hosts()[0];
    let mut windows = vec![];
    for run in 0..runs {
        let last = run + 1 == runs;
        for k in 0..2 {
            checkpoint();
            let start = now();
            if (run + k) % 2 == 0 {
                bed.add_peer_psk(PSK, &[]);
                let up = wait_until(
                    "strait's SAs with charon 1",
                    CONVERGE,
                    POLL,
                    || match external(h1) {
                        Some(p) if p.ike_state == "established" && !p.child_sas.is_empty() => {
                            Ok(())
                        }
                        other => Err(format!("{other:?}")),
                    },
                );
                if let Err(e) = up {
                    println!("  setup run {}: strait: {e}", run + 1);
                }
                if !last {
                    let (ok, out) = h1.netctl(&["ipsec", "peer", "delete", PEER]);
                    assert!(ok, "netctl ipsec peer delete: {out}");
                    let gone = wait_until("strait lets the peer go", CONVERGE, POLL, || {
                        external(h1).is_none()
                    });
                    if let Err(e) = gone {
                        println!("  setup run {}: strait: {e}", run + 1);
                    }
                    clear(charon1, "strait");
                }
                windows.push(Window {
                    initiator: h1_addr.to_string(),
                    start,
                    end: now(),
                });
            } else {
                if let Err(e) =
                    site.charon
                        .swanctl(&["--initiate", "--child", "net", "--timeout", "10"])
                {
                    println!("  setup run {}: charon 2: {e}", run + 1);
                }
                if !last {
                    let _ =
                        site.charon
                            .swanctl(&["--terminate", "--ike", "site", "--timeout", "10"]);
                    clear(charon1, "swan");
                }
                windows.push(Window {
                    initiator: site.addr.clone(),
                    start,
                    end: now(),
                });
            }
        }
    }
    let pcap = capture.stop();
    // time; source; destination; exchange type; response flag
    let packets: Vec<(f64, String, String, u32, bool)> = tshark_fields(
        &pcap,
        &[],
        "isakmp",
        &[
            "frame.time_epoch",
            "ip.src",
            "ip.dst",
            "isakmp.exchangetype",
            "isakmp.flag_r",
        ],
    )
    .into_iter()
    .filter_map(|f| {
        let flag = f.get(4)?;
        Some((
            f.first()?.parse().ok()?,
            f.get(1)?.clone(),
            f.get(2)?.clone(),
            f.get(3)?.parse().ok()?,
            flag == "1" || flag.eq_ignore_ascii_case("true"),
        ))
    })
    .collect();
    let mut rows = vec![
        SetupRow {
            label: "strait gateway h1 (netctl ipsec peer add)".into(),
            wire: vec![],
            command: vec![],
            missing: 0,
        },
        SetupRow {
            label: "strongSwan charon 2 (swanctl --initiate)".into(),
            wire: vec![],
            command: vec![],
            missing: 0,
        },
    ];
    for w in &windows {
        let row = if w.initiator == h1_addr { 0 } else { 1 };
        let mine: Vec<_> = packets
            .iter()
            .filter(|p| p.0 >= w.start && p.0 <= w.end)
            .filter(|p| p.1 == w.initiator || p.2 == w.initiator)
            .collect();
        // IKE_SA_INIT = 34, IKE_AUTH = 35.
        let init = mine
            .iter()
            .find(|p| p.3 == 34 && !p.4 && p.1 == w.initiator);
        let auth = init.and_then(|i| {
            mine.iter()
                .find(|p| p.0 >= i.0 && p.3 == 35 && p.4 && p.2 == w.initiator)
        });
        match (init, auth) {
            (Some(i), Some(a)) => {
                rows[row].wire.push((a.0 - i.0) * 1e3);
                rows[row].command.push((a.0 - w.start) * 1e3);
            }
            _ => rows[row].missing += 1,
        }
    }
    rows
}

/// Makes charon 1 drop what it still holds of connection `conn` and waits until it has.
fn clear(charon: &ExternalGateway, conn: &str) {
    let holds = || {
        charon
            .swanctl(&["--list-sas", "--ike", conn])
            .is_ok_and(|s| s.contains(&format!("{conn}:")))
    };
    if holds() {
        let _ = charon.swanctl(&["--terminate", "--ike", conn, "--timeout", "5"]);
    }
    let _ = wait_until("charon 1 lets go", Duration::from_secs(10), POLL, || {
        !holds()
    });
}

/// `ping -D` every [`PING_EVERY`] in the background; [`Pinger::finish`] stops it with
/// SIGINT and reads the timestamped replies.
struct Pinger(Option<Child>);

/// What a [`Pinger`] saw.
struct Interruption {
    /// The longest time without a reply, less the interval; None: no reply at all.
    gap_ms: Option<f64>,
    lost: u64,
}

impl Pinger {
    fn start(from: &Netns, to: &str) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", from.name(), "ping", "-D", "-n", "-W", "1"])
            .args(["-i", &format!("{:.3}", PING_EVERY.as_secs_f64()), to])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ping");
        Self(Some(child))
    }

    fn finish(mut self) -> Interruption {
        let child = self.0.take().expect("finish once");
        // `ip netns exec` execs ping in place: the PID is ping's.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let out = child.wait_with_output().expect("ping");
        interruption(&String::from_utf8_lossy(&out.stdout), PING_EVERY)
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The replies of `ping -D` output (`[epoch] 64 bytes from …: icmp_seq=N …`): the
/// longest gap between consecutive ones less `interval`, and the sequence numbers up
/// to the last answered that got no answer.
fn interruption(out: &str, interval: Duration) -> Interruption {
    let mut replies: Vec<(f64, u64)> = out
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| {
            let t = l.strip_prefix('[')?.split(']').next()?.parse().ok()?;
            let seq = l
                .split("icmp_seq=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((t, seq))
        })
        .collect();
    replies.sort_by(|a, b| a.0.total_cmp(&b.0));
    let gap = replies
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .fold(None, |m: Option<f64>, g| Some(m.map_or(g, |m| m.max(g))));
    let mut seqs: Vec<u64> = replies.iter().map(|r| r.1).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let lost = seqs.last().map_or(0, |&last| last - seqs.len() as u64);
    Interruption {
        gap_ms: gap.map(|g| ((g - interval.as_secs_f64()) * 1e3).max(0.0)),
        lost,
    }
}

/// The failover figures.
struct Failover {
    kill: Vec<Interruption>,
    back: Vec<Interruption>,
    takeover_ms: Vec<f64>,
}

fn failover(args: &Args) -> Failover {
    println!(
        "bed 2: hosts h1, h2 (gateways) and h3 of site dc, node lease {} s, charon 1 taking \
         either gateway",
        args.lease_ttl
    );
    let mut bed = GatewayBed::start(3, &[0, 1], Some(args.lease_ttl), &[]);
    let c3 = bed.cluster.add_container(2, "c3");
    let me = bed.gw_addr.clone();
    // As in tests/gateway_external.rs: both gateways prove the site's identity.
    let conf = format!(
        "connections {{\n  strait {{\n    version = 2\n    local_addrs = {me}\n    \
         remote_addrs = %any\n    \
         proposals = aes256gcm16-prfsha384-x25519\n    local {{\n      auth = psk\n      \
         id = {me}\n    }}\n    remote {{\n      auth = psk\n      id = gw.dc.strait.test\n    \
         }}\n    children {{\n      lan {{\n        local_ts = {LAN}\n        \
         remote_ts = 10.244.0.0/16\n        esp_proposals = aes256gcm16-x25519\n        \
         mode = tunnel\n      }}\n    }}\n  }}\n}}\nsecrets {{\n  ike-strait {{\n    \
         id-a = {me}\n    id-b = gw.dc.strait.test\n    secret = \"{PSK}\"\n  }}\n}}\n"
    );
    let charon = bed.charon(&conf, &[]).expect("charon");
    let doc = format!(
        "name: {PEER}\nsite: dc\naddress: {me}\nauth: {{method: psk, secret: {PSK}}}\n\
         local_id: fqdn:gw.dc.strait.test\nremote_networks: [{LAN}]\n"
    );
    bed.apply_peer(2, &doc);
    let carries = |bed: &GatewayBed, i: usize| {
        external(&bed.cluster.hosts()[i])
            .is_some_and(|p| p.ike_state == "established" && p.child_sas.iter().any(|c| c.active))
    };
    let carrier = |bed: &GatewayBed| (0..2).find(|&i| carries(bed, i));
    let mut f = Failover {
        kill: vec![],
        back: vec![],
        takeover_ms: vec![],
    };
    if wait_until("one gateway carries the peer", CONVERGE, POLL, || {
        carrier(&bed).is_some()
    })
    .is_err()
    {
        println!(
            "no gateway carries the peer: no failover figures\n{}",
            charon.log()
        );
        return f;
    }
    if !wait_ping(&c3.ns, LAN_HOST) {
        println!("c3 does not reach the LAN host: no failover figures");
        return f;
    }
    for run in 1..=args.failover_runs {
        checkpoint();
        let Some(first) = carrier(&bed) else {
            println!("  run {run}: no gateway carries the peer; stopping");
            break;
        };
        let second = 1 - first;
        let ping = Pinger::start(&c3.ns, LAN_HOST);
        std::thread::sleep(Duration::from_secs(1));
        let killed = std::time::Instant::now();
        bed.cluster.kill_agent(first);
        let took = wait_until("the other gateway takes over", CONVERGE, POLL, || {
            carries(&bed, second)
        });
        let took_ms = killed.elapsed().as_secs_f64() * 1e3;
        // Traffic resumes after the SA is up (routes on h3 follow the node records).
        std::thread::sleep(Duration::from_secs(2));
        let kill = ping.finish();
        println!(
            "  run {run} kill h{}: {}, take-over after {took_ms:.0} ms{}",
            first + 1,
            describe(&kill),
            if took.is_err() { " (not seen)" } else { "" }
        );
        if took.is_ok() {
            f.takeover_ms.push(took_ms);
        }
        f.kill.push(kill);

        checkpoint();
        let ping = Pinger::start(&c3.ns, LAN_HOST);
        std::thread::sleep(Duration::from_secs(1));
        bed.cluster.start_agent(first);
        let moved = wait_until("the peer moves back", CONVERGE, POLL, || {
            carries(&bed, first) && external(&bed.cluster.hosts()[second]).is_none()
        });
        std::thread::sleep(Duration::from_secs(2));
        let back = ping.finish();
        println!(
            "  run {run} h{} back: {}{}",
            first + 1,
            describe(&back),
            if moved.is_err() {
                " (the peer did not move back)"
            } else {
                ""
            }
        );
        f.back.push(back);
    }
    f
}

fn describe(i: &Interruption) -> String {
    match i.gap_ms {
        Some(g) => format!("interruption {g:.0} ms, {} pings lost", i.lost),
        None => "no reply at all".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_longest_gap_and_the_lost_pings() {
        let out = "PING 192.168.50.10 (192.168.50.10) 56(84) bytes of data.\n\
            [100.000] 64 bytes from 192.168.50.10: icmp_seq=1 ttl=62 time=0.5 ms\n\
            [100.010] 64 bytes from 192.168.50.10: icmp_seq=2 ttl=62 time=0.5 ms\n\
            From 10.0.0.3 icmp_seq=3 Packet filtered\n\
            [100.540] 64 bytes from 192.168.50.10: icmp_seq=55 ttl=62 time=0.5 ms\n\
            [100.550] 64 bytes from 192.168.50.10: icmp_seq=56 ttl=62 time=0.5 ms\n";
        let i = interruption(out, Duration::from_millis(10));
        assert!((i.gap_ms.unwrap() - 520.0).abs() < 0.01);
        assert_eq!(i.lost, 52);
        assert!(interruption("", Duration::from_millis(10)).gap_ms.is_none());
    }
}
