//! Encrypted throughput between two namespaces joined by a veth "line": strait's
//! userspace ESP datapath beside the same path unencrypted and beside strongSwan's
//! userspace ESP (charon with kernel-libipsec), all in one run, in the same two
//! namespaces. A benchmark, not a test: it prints figures and asserts nothing.
//!
//! Paths (iperf3 client in `a`, server in `b`):
//! * plain: 10.3.1.1 → 10.3.2.1 routed over the veth, MTU 1500;
//! * strait AES-128-GCM / AES-256-GCM: 10.1.0.1 → 10.2.0.1 through strait's TUNs
//!   (ESP in UDP, port 4501 so that charon can have 4500), MTU 1438;
//! * strongSwan aes128gcm16: 10.97.1.1 → 10.97.2.1 through charon's `ipsec0`.
//!
//! Printed: iperf3 TCP, one stream and four (`-P 4`), receiver's Gbit/s, median and
//! range over the runs (rounds alternate the order of the paths); CPU seconds per GB
//! of the ESP datapath processes (strait runs in this process, both ends; charon: both
//! charons), from /proc/<pid>/stat over each transfer; ping p50/p99 through each path;
//! on a line shaped with tbf (`--line-rate-mbit`, default 1000) one stream of each and
//! strait's goodput overhead against plain; and the cost of a rekey every second under
//! traffic (throughput beside the same without rekeys, lost pings of a 20 ms ping,
//! replay failures).
//!
//! Everything it makes (namespaces, veths, TUNs, charons, iperf3 servers) goes on exit,
//! on a panic and on Ctrl-C; it kills only the processes it started, by PID.
//!
//! Usage: strait-bench-esp [--runs N] [--seconds S] [--line-rate-mbit M (0: none)]
//!        [--queues Q] [--pings N] [--pin] [--no-strongswan]
//! (root; iperf3, ping, tc; strongSwan with kernel-libipsec for its column; release
//! build advised: scripts/bench-esp.sh)

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use strait_esp::{Cipher, Datapath, Direction};
use strait_testbeds::bench::{
    IperfRun, IperfServer, checkpoint, iperf_streams, median, percentile, process_cpu_secs,
};
use strait_testbeds::esp::{self, Line, StraitOpts, StraitPair, strongswan};
use strait_testbeds::netns::Netns;

const USAGE: &str = "usage: strait-bench-esp [--runs N] [--seconds S] [--line-rate-mbit M] \
                     [--queues Q] [--pings N] [--pin] [--no-strongswan]";
const STRAIT_PORT: u16 = 4501;
const PLAIN_A: &str = "10.3.1.1";
const PLAIN_B: &str = "10.3.2.1";

struct Args {
    runs: usize,
    seconds: u32,
    line_rate: Option<u32>,
    queues: usize,
    pings: u32,
    pin: bool,
    strongswan: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        runs: 3,
        seconds: 5,
        line_rate: Some(1000),
        queues: 0,
        pings: 200,
        pin: false,
        strongswan: true,
    };
    let usage = || -> ! {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--pin" => {
                a.pin = true;
                continue;
            }
            "--no-strongswan" => {
                a.strongswan = false;
                continue;
            }
            _ => {}
        }
        let val = it.next().and_then(|v| v.parse::<u32>().ok());
        match (flag.as_str(), val) {
            ("--runs", Some(n)) if n > 0 => a.runs = n as usize,
            ("--seconds", Some(n)) if n > 0 => a.seconds = n,
            ("--line-rate-mbit", Some(0)) => a.line_rate = None,
            ("--line-rate-mbit", Some(n)) if n <= 100_000 => a.line_rate = Some(n),
            ("--queues", Some(n)) if n <= 64 => a.queues = n as usize,
            ("--pings", Some(n)) if (10..=100_000).contains(&n) => a.pings = n,
            _ => usage(),
        }
    }
    a
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Strait(Cipher),
    StrongSwan,
}

struct Path {
    label: &'static str,
    kind: Kind,
    to: IpAddr,
}

/// What the datapath processes of a path have used so far, CPU seconds (None: the
/// path has none, or it cannot be read).
fn datapath_cpu(kind: Kind, charons: &[u32]) -> Option<f64> {
    match kind {
        Kind::Plain => None,
        Kind::Strait(_) => process_cpu_secs(std::process::id()),
        Kind::StrongSwan => charons
            .iter()
            .map(|&p| process_cpu_secs(p))
            .sum::<Option<f64>>(),
    }
}

/// The SPIs of the SA pair generation `n` (a → b, b → a).
fn spis(n: u32) -> (u32, u32) {
    (0xa000_0000 | n, 0xb000_0000 | n)
}

/// strait's SAs: switched to a new pair (of the path's cipher) with fresh SPIs,
/// the old pair removed after the switch.
struct Keys<'a> {
    pair: &'a StraitPair,
    generation: u32,
    cipher: Option<Cipher>,
    removed_replays: u64,
}

impl Keys<'_> {
    fn use_cipher(&mut self, cipher: Cipher) {
        if self.cipher != Some(cipher) {
            self.rekey(cipher);
            // The last SAs of the old cipher go too, once what is in flight arrived.
            std::thread::sleep(Duration::from_millis(200));
            if self.generation >= 2 {
                self.remove(self.generation - 1);
            }
        }
    }

    /// Install the next generation (inbound first, then the outbound switch) and drop
    /// the one before the current: the current stays for packets in flight.
    fn rekey(&mut self, cipher: Cipher) {
        self.generation += 1;
        let seed = (self.generation % 200) as u8;
        self.pair
            .install(cipher, spis(self.generation), seed, true, None);
        if self.generation >= 3 {
            self.remove(self.generation - 2);
        }
        self.cipher = Some(cipher);
    }

    /// Remove generation `n`, keeping its replay failures in the count.
    fn remove(&mut self, n: u32) {
        let (ab, ba) = spis(n);
        self.removed_replays += self.replays_of(|spi| spi == ab || spi == ba);
        self.pair.remove((ab, ba));
    }

    fn replays_of(&self, spi: impl Fn(u32) -> bool) -> u64 {
        [&self.pair.dp_a, &self.pair.dp_b]
            .iter()
            .flat_map(|d| d.sa_status())
            .filter(|r| r.direction == Direction::Inbound && spi(r.status.spi))
            .map(|r| r.status.replay_failures)
            .sum()
    }

    /// Replay failures counted by every inbound SA so far, removed ones included.
    fn replays(&self) -> u64 {
        self.removed_replays + self.replays_of(|_| true)
    }
}

fn main() {
    if !strait_testbeds::require_root("strait-bench-esp") {
        std::process::exit(2);
    }
    for tool in ["iperf3", "ping", "tc"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            eprintln!("{tool} not installed (apt-get install -y iperf3 iputils-ping iproute2)");
            std::process::exit(2);
        }
    }
    let args = parse_args();
    strait_testbeds::bench::stop_on_signals();
    strait_testbeds::netns::reap_leftovers();
    let prefix = strait_testbeds::unique_prefix();

    let line = Line::new(&prefix);
    // plain: addresses on lo, routed over the line.
    for (ns, me, them, via) in [
        (&line.a, PLAIN_A, PLAIN_B, esp::B_OUTER),
        (&line.b, PLAIN_B, PLAIN_A, esp::A_OUTER),
    ] {
        ns.exec_ok(&["ip", "addr", "add", &format!("{me}/32"), "dev", "lo"]);
        ns.exec_ok(&[
            "ip",
            "route",
            "add",
            &format!("{them}/32"),
            "via",
            via,
            "src",
            me,
        ]);
    }
    line.a.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{}/32", esp::A_INNER),
        "dev",
        "lo",
    ]);
    let inner_mtu = strait_esp::mtu::inner_mtu(1500, false);
    let pair = StraitPair::start(
        &line,
        StraitOpts {
            tun_a: format!("{prefix}ea"),
            tun_b: format!("{prefix}eb"),
            queues: args.queues,
            port: STRAIT_PORT,
            mtu: inner_mtu,
            persist: false,
        },
    );
    let mut keys = Keys {
        pair: &pair,
        generation: 0,
        cipher: None,
        removed_replays: 0,
    };
    keys.use_cipher(Cipher::Aes128Gcm16);

    let swan = if !args.strongswan {
        None
    } else if !strongswan::available() {
        println!("strongSwan (charon with kernel-libipsec, swanctl) not installed: no column");
        None
    } else {
        match strongswan::Pair::start(&line, "aes128gcm16") {
            Ok(p) => Some(p),
            Err(e) => {
                println!("strongSwan did not come up, no column: {e}");
                None
            }
        }
    };
    let charons = swan
        .as_ref()
        .map(strongswan::Pair::pids)
        .unwrap_or_default();

    let mut paths = vec![
        Path {
            label: "plain (no ESP)",
            kind: Kind::Plain,
            to: PLAIN_B.parse().expect("address"),
        },
        Path {
            label: "strait AES-128-GCM",
            kind: Kind::Strait(Cipher::Aes128Gcm16),
            to: esp::B_INNER.parse().expect("address"),
        },
        Path {
            label: "strait AES-256-GCM",
            kind: Kind::Strait(Cipher::Aes256Gcm16),
            to: esp::B_INNER.parse().expect("address"),
        },
    ];
    if swan.is_some() {
        paths.push(Path {
            label: "strongSwan aes128gcm16",
            kind: Kind::StrongSwan,
            to: strongswan::B_INNER.parse().expect("address"),
        });
    }
    let mut reachable = vec![];
    for p in paths {
        let ok = strait_testbeds::wait_until(
            "ping",
            Duration::from_secs(10),
            Duration::from_millis(200),
            || line.a.ping(&p.to.to_string()),
        )
        .is_ok();
        if ok {
            reachable.push(p);
        } else {
            println!("{}: no connectivity, left out", p.label);
        }
    }
    let paths = reachable;
    let servers: Vec<IperfServer> = paths
        .iter()
        .map(|p| IperfServer::start(&line.b, p.to))
        .collect();

    println!(
        "ESP between two namespaces over a veth line; iperf3 {} s x {} runs, receiver's \
         rate; {} queues per datapath; {}; load before: {}",
        args.seconds,
        args.runs,
        queues_of(args.queues),
        if args.pin {
            "iperf3 pinned to CPUs 0,1"
        } else {
            "not pinned"
        },
        loadavg()
    );

    // Throughput and CPU, 1 and 4 streams, rounds rotating the order.
    let n = paths.len();
    let mut gbits: Vec<[Vec<f64>; 2]> = (0..n).map(|_| [vec![], vec![]]).collect();
    let mut cpu: Vec<Vec<f64>> = vec![vec![]; n];
    for run in 0..args.runs {
        for (s, streams) in [1u32, 4].into_iter().enumerate() {
            for k in 0..n {
                checkpoint();
                let i = (run + k) % n;
                let p = &paths[i];
                if let Kind::Strait(c) = p.kind {
                    keys.use_cipher(c);
                }
                let before = datapath_cpu(p.kind, &charons);
                let r = iperf_streams(&line.a, p.to, args.seconds, args.pin, streams);
                let used = datapath_cpu(p.kind, &charons)
                    .zip(before)
                    .map(|(a, b)| a - b);
                print_run(p.label, run + 1, streams, &r);
                if let Ok(r) = r {
                    gbits[i][s].push(r.gbits);
                    if let Some(secs) = used.filter(|_| r.bytes > 0) {
                        cpu[i].push(secs / (r.bytes as f64 / 1e9));
                    }
                }
            }
        }
    }

    // Latency, idle paths.
    let mut latency = vec![];
    for p in &paths {
        checkpoint();
        if let Kind::Strait(c) = p.kind {
            keys.use_cipher(c);
        }
        latency.push(ping(&line.a, p.to, args.pings, 0.02));
    }

    // The shaped line: one stream each.
    let mut shaped: Vec<Vec<f64>> = vec![vec![]; n];
    if let Some(rate) = args.line_rate {
        line.shape(Some(rate));
        for run in 0..args.runs {
            for k in 0..n {
                checkpoint();
                let i = (run + k) % n;
                let p = &paths[i];
                if let Kind::Strait(c) = p.kind {
                    keys.use_cipher(c);
                }
                let r = iperf_streams(&line.a, p.to, args.seconds, args.pin, 1);
                print_run(&format!("{} @{rate} Mbit/s", p.label), run + 1, 1, &r);
                if let Ok(r) = r {
                    shaped[i].push(r.gbits);
                }
            }
        }
        line.shape(None);
    }

    // Rekey cost: strait AES-128, one stream and a 20 ms ping, without and with a new
    // SA pair every second.
    let strait_to: IpAddr = esp::B_INNER.parse().expect("address");
    let mut rekey_rows = vec![];
    if paths
        .iter()
        .any(|p| p.kind == Kind::Strait(Cipher::Aes128Gcm16))
    {
        keys.use_cipher(Cipher::Aes128Gcm16);
        for run in 0..args.runs {
            for with_rekeys in [false, true] {
                checkpoint();
                let row = rekey_run(&line, &mut keys, strait_to, args.seconds, with_rekeys);
                println!(
                    "  run {} rekey {:<3} {:>6.2} Gbit/s, {} rekeys, pings lost {}/{}, \
                     replay failures {}, unknown SPI {}",
                    run + 1,
                    if with_rekeys { "on" } else { "off" },
                    row.gbits,
                    row.rekeys,
                    row.lost,
                    row.sent,
                    row.replays,
                    row.unknown_spi
                );
                rekey_rows.push((with_rekeys, row));
            }
        }
    }
    drop(servers);

    // The summary.
    println!();
    println!("load after: {}", loadavg());
    println!(
        "{:<24} {:>26} {:>26} {:>12} {:>18}",
        "path", "1 stream Gbit/s", "4 streams Gbit/s", "CPU s/GB", "ping p50/p99 ms"
    );
    for (i, p) in paths.iter().enumerate() {
        let (lat50, lat99, lost) = &latency[i];
        println!(
            "{:<24} {:>26} {:>26} {:>12} {:>18}",
            p.label,
            spread(&gbits[i][0]),
            spread(&gbits[i][1]),
            median(cpu[i].clone()).map_or("-".into(), |c| format!("{c:.2}")),
            format!(
                "{lat50:.3}/{lat99:.3}{}",
                if *lost > 0 {
                    format!(" ({lost} lost)")
                } else {
                    String::new()
                }
            )
        );
    }
    let find = |k: Kind| paths.iter().position(|p| p.kind == k);
    let (plain, s128, swan_i) = (
        find(Kind::Plain),
        find(Kind::Strait(Cipher::Aes128Gcm16)),
        find(Kind::StrongSwan),
    );
    if let (Some(s), Some(w)) = (s128, swan_i) {
        for (streams, col) in [(1, 0), (4, 1)] {
            if let (Some(a), Some(b)) =
                (median(gbits[s][col].clone()), median(gbits[w][col].clone()))
            {
                println!(
                    "strait AES-128-GCM / strongSwan, {streams} stream(s): {:.1}x",
                    a / b
                );
            }
        }
    }
    if let (Some(pl), Some(s)) = (plain, s128) {
        let lat = |i: usize| (latency[i].0, latency[i].1);
        println!(
            "latency added by strait AES-128-GCM: p50 {:+.3} ms, p99 {:+.3} ms",
            lat(s).0 - lat(pl).0,
            lat(s).1 - lat(pl).1
        );
        if let Some(rate) = args.line_rate {
            for (i, p) in paths.iter().enumerate() {
                println!(
                    "{:<24} on a {rate} Mbit/s line: {}",
                    p.label,
                    spread(&shaped[i])
                );
            }
            let overhead: Vec<f64> = shaped[s]
                .iter()
                .zip(&shaped[pl])
                .map(|(s, p)| 100.0 * (1.0 - s / p))
                .collect();
            if let Some(o) = median(overhead) {
                println!(
                    "goodput overhead of strait AES-128-GCM vs plain on the {rate} Mbit/s line: \
                     {o:.1} % (target < 5 %; ESP in UDP costs {} octets of each 1500)",
                    1500 - inner_mtu
                );
            }
        }
    }
    if !rekey_rows.is_empty() {
        let pick = |on: bool| -> Vec<&RekeyRow> {
            rekey_rows
                .iter()
                .filter(|(w, _)| *w == on)
                .map(|(_, r)| r)
                .collect()
        };
        for on in [false, true] {
            let rows = pick(on);
            let g = median(rows.iter().map(|r| r.gbits).collect());
            println!(
                "strait AES-128-GCM, {}: {} Gbit/s, {} rekeys, pings lost {} of {}, \
                 replay failures {}, unknown SPI {}",
                if on {
                    "a rekey every second"
                } else {
                    "no rekeys          "
                },
                g.map_or("-".into(), |g| format!("{g:.2}")),
                rows.iter().map(|r| r.rekeys).sum::<u32>(),
                rows.iter().map(|r| r.lost).sum::<u32>(),
                rows.iter().map(|r| r.sent).sum::<u32>(),
                rows.iter().map(|r| r.replays).sum::<u64>(),
                rows.iter().map(|r| r.unknown_spi).sum::<u64>()
            );
        }
    }
    if let Some(s) = &swan {
        let sas = s.list_sas();
        if let Some(l) = sas.lines().find(|l| l.contains("ESP:")) {
            println!("strongSwan CHILD_SA: {}", l.trim());
        }
    }
    let d = (pair.dp_a.drops(), pair.dp_b.drops());
    println!("strait drops: a {:?}; b {:?}", d.0, d.1);
    drop(swan);
    drop(pair);
    drop(line);
}

fn queues_of(q: usize) -> usize {
    match q {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// `median (min..max)` of `v`.
fn spread(v: &[f64]) -> String {
    let Some(m) = median(v.to_vec()) else {
        return "-".into();
    };
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{m:.2} ({lo:.2}..{hi:.2})")
}

fn print_run(label: &str, run: usize, streams: u32, r: &Result<IperfRun, String>) {
    match r {
        Ok(r) => println!(
            "  run {run} {label:<36} -P {streams} {:>7.2} Gbit/s  ({} retransmits)",
            r.gbits, r.retransmits
        ),
        Err(e) => println!("  run {run} {label:<36} -P {streams} failed: {e}"),
    }
}

/// `count` pings `interval` s apart from `from` to `to`: (p50 ms, p99 ms, lost).
fn ping(from: &Netns, to: IpAddr, count: u32, interval: f64) -> (f64, f64, u32) {
    let out = from.exec(&[
        "ping",
        "-n",
        "-c",
        &count.to_string(),
        "-i",
        &interval.to_string(),
        "-W",
        "1",
        &to.to_string(),
    ]);
    let rtts = rtts(&String::from_utf8_lossy(&out.stdout));
    let lost = count.saturating_sub(rtts.len() as u32);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(percentile(&rtts, 50)), ms(percentile(&rtts, 99)), lost)
}

/// The `time=… ms` of each echo reply in ping's output.
fn rtts(out: &str) -> Vec<Duration> {
    out.lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ms| Duration::from_secs_f64(ms / 1e3))
        .collect()
}

struct RekeyRow {
    gbits: f64,
    rekeys: u32,
    sent: u32,
    lost: u32,
    replays: u64,
    /// ESP packets whose SPI was no longer (or not yet) installed.
    unknown_spi: u64,
}

/// One stream and a 20 ms ping through strait for `seconds`, with a new SA pair every
/// second if `rekeys`.
fn rekey_run(line: &Line, keys: &mut Keys<'_>, to: IpAddr, seconds: u32, rekeys: bool) -> RekeyRow {
    let before = keys.replays();
    let unknown = |k: &Keys<'_>| k.pair.dp_a.drops().unknown_spi + k.pair.dp_b.drops().unknown_spi;
    let unknown_before = unknown(keys);
    let pings = seconds * 50;
    let (r, lost, done) = std::thread::scope(|s| {
        let pinger = s.spawn(|| ping(&line.a, to, pings, 0.02));
        let client = s.spawn(|| iperf_streams(&line.a, to, seconds, false, 1));
        let mut done = 0;
        if rekeys {
            let cipher = keys.cipher.unwrap_or(Cipher::Aes128Gcm16);
            let start = Instant::now();
            while !client.is_finished()
                && start.elapsed() < Duration::from_secs(u64::from(seconds) + 5)
            {
                std::thread::sleep(Duration::from_secs(1));
                if client.is_finished() {
                    break;
                }
                keys.rekey(cipher);
                done += 1;
            }
        }
        let r = client.join().expect("iperf3 thread");
        let (_, _, lost) = pinger.join().expect("ping thread");
        (r, lost, done)
    });
    RekeyRow {
        gbits: r.map_or(0.0, |r| r.gbits),
        rekeys: done,
        sent: pings,
        lost,
        replays: keys.replays() - before,
        unknown_spi: unknown(keys) - unknown_before,
    }
}
