//! Route-reflector benchmark: strait's speaker against BIRD as the RR, same topology,
//! same originator, same run.
//!
//! ```text
//! LAN (bridge in a hub netns), AS 64512, all iBGP:
//!   m0 10.250.0.1  the RR under test (strait speaker in its own process, or BIRD)
//!   m1 10.250.0.2  originator: BIRD, static /26 blackholes (`birdc configure`), RR client
//!   m2 10.250.0.3  FRR bgpd+zebra, RR client, kernel FIB
//!   m3 10.250.0.4  FRR bgpd+zebra, RR client, kernel FIB
//! ```
//! Per prefix count N and run: fresh daemons, sessions up, then t0 = the originator is
//! told to announce N /26s. Printed: when the originator has them in its own RIB, when
//! each FRR client has received them all (RIB) and has them all in its kernel FIB
//! (`ip route show proto bgp`, counted), the same for the withdrawal, and the RR's
//! VmRSS/VmHWM once converged. BIRD is the originator because it is the fastest bulk
//! originator here (PEERS.md), so the RR and the clients are what is measured.
//!
//! The strait RR runs as its own process (this program re-executed with `--rr-child`
//! inside m0 via `ip netns exec`) so its RSS is its own. Run as root:
//!
//! ```text
//! cargo run --release -p strait-bgp --example bgp_rr_bench -- --prefixes 10000,100000 --runs 1
//! ```
//! Options: `--prefixes N[,N…]` (10000,100000), `--runs R` (1), `--rr strait,bird`
//! (both), `--timeout SECS` (180 per phase).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net};
use strait_bgp::rib::AcceptAll;
use strait_bgp::speaker::{FibEvent, PeerSpec, Speaker, SpeakerConfig};
use strait_testbeds::peers::{
    self, BgpDaemon, Bird, Family, Frr, Lan, Neighbor, PeerConfig, fib_count, rss_kib,
};
use strait_testbeds::wait_until;

const AS: u32 = 64512;
const NET: u8 = 250;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--rr-child") {
        rr_child(&args[2..]);
        return;
    }
    let opt = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
            .unwrap_or_else(|| default.to_string())
    };
    let counts: Vec<usize> = opt("--prefixes", "10000,100000")
        .split(',')
        .map(|n| n.trim().parse().expect("--prefixes N,N"))
        .collect();
    let runs: usize = opt("--runs", "1").parse().expect("--runs N");
    let rrs: Vec<String> = opt("--rr", "strait,bird")
        .split(',')
        .map(String::from)
        .collect();
    let timeout = Duration::from_secs(opt("--timeout", "180").parse().expect("--timeout SECS"));

    if !strait_testbeds::require_root("bgp_rr_bench") {
        std::process::exit(2);
    }
    for (b, a) in [
        ("bird", "--version"),
        ("/usr/lib/frr/bgpd", "--version"),
        ("vtysh", "--version"),
    ] {
        if !strait_testbeds::peers::installed(b, a) {
            eprintln!("bgp_rr_bench: needs {b} (scripts/install-deps.sh)");
            std::process::exit(2);
        }
    }

    let lan = Lan::new(4, NET);
    let mut rows = vec![];
    for &n in &counts {
        for run in 1..=runs {
            for rr in &rrs {
                eprintln!("== {n} prefixes, run {run}, RR {rr}");
                match one_run(&lan, rr, n, timeout) {
                    Ok(r) => rows.push((n, run, rr.clone(), r)),
                    Err(e) => {
                        eprintln!("run failed: {e}");
                        rows.push((n, run, rr.clone(), Figures::failed()));
                    }
                }
            }
        }
    }
    print_table(&rows);
}

/// Seconds since t0 at which each point saw everything (`None`: never, within the
/// timeout).
#[derive(Debug, Default, Clone)]
struct Figures {
    ok: bool,
    origin_rib: Option<f64>,
    client_rib: [Option<f64>; 2],
    client_fib: [Option<f64>; 2],
    withdraw_origin: Option<f64>,
    withdraw_fib: [Option<f64>; 2],
    rr_rss_kib: Option<(u64, u64)>,
    rr_rss_idle_kib: Option<(u64, u64)>,
}

impl Figures {
    fn failed() -> Self {
        Figures::default()
    }
}

/// The RR under test: a strait speaker child process or BIRD.
enum Rr {
    Strait(Child),
    Bird(Bird),
}

impl Rr {
    fn pid(&self) -> u32 {
        match self {
            Rr::Strait(c) => c.id(),
            Rr::Bird(b) => b.pid(),
        }
    }
}

impl Drop for Rr {
    fn drop(&mut self) {
        if let Rr::Strait(c) = self {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn prefixes(n: usize) -> Vec<IpNet> {
    let base = u32::from(Ipv4Addr::new(10, 128, 0, 0));
    (0..n as u32)
        .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(base + (i << 6)), 26).unwrap()))
        .collect()
}

fn one_run(lan: &Lan, rr_kind: &str, n: usize, timeout: Duration) -> Result<Figures, String> {
    let rr_addr = lan.v4(0);
    let cluster = rr_addr;
    let clients: Vec<IpAddr> = (1..4).map(|i| lan.ip4(i)).collect();
    let rr = match rr_kind {
        "strait" => Rr::Strait(start_strait_rr(lan, &clients)?),
        "bird" => {
            let mut c = PeerConfig::new(rr_addr, AS)
                .cluster_id(cluster)
                .kernel_fib(false);
            for &a in &clients {
                c = c.neighbor(Neighbor::new(a, AS).rr_client());
            }
            Rr::Bird(Bird::start(lan.ns(0), c).map_err(|e| format!("bird RR: {e}"))?)
        }
        other => return Err(format!("unknown RR {other} (strait or bird)")),
    };
    let mut origin = Bird::start(
        lan.ns(1),
        PeerConfig::new(lan.v4(1), AS)
            .kernel_fib(false)
            .neighbor(Neighbor::new(rr_addr.into(), AS)),
    )
    .map_err(|e| format!("originator: {e}"))?;
    let frr: Vec<Frr> = (2..4)
        .map(|i| {
            Frr::start(
                lan.ns(i),
                PeerConfig::new(lan.v4(i), AS).neighbor(Neighbor::new(rr_addr.into(), AS)),
            )
            .map_err(|e| format!("FRR client: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mut daemons: Vec<&dyn BgpDaemon> = vec![&origin, &frr[0], &frr[1]];
    if let Rr::Bird(b) = &rr {
        daemons.push(b);
    }
    let t = wait_until(
        "every session Established",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || origin.established(rr_addr.into()) && frr.iter().all(|f| f.established(rr_addr.into())),
    )
    // The daemons are dropped on the way out, not panicking: their logs go in the error.
    .map_err(|e| format!("{e}\n{}", peers::logs(&daemons)))?;
    eprintln!("sessions up after {:.2} s", t.as_secs_f64());
    // Let the initial exchange (End-of-RIB, keepalives) settle.
    std::thread::sleep(Duration::from_millis(500));
    let mut fig = Figures {
        ok: true,
        rr_rss_idle_kib: rss_kib(rr.pid()),
        ..Default::default()
    };
    drop(daemons);

    // Announce.
    let t0 = Instant::now();
    origin
        .set_originated(prefixes(n))
        .map_err(|e| format!("originate: {e}"))?;
    poll(t0, timeout, n, &origin, &frr, lan, &mut fig, false);
    fig.rr_rss_kib = rss_kib(rr.pid());
    print_progress("announce", &fig, false);

    // Withdraw.
    let t1 = Instant::now();
    origin
        .set_originated(vec![])
        .map_err(|e| format!("withdraw: {e}"))?;
    poll(t1, timeout, 0, &origin, &frr, lan, &mut fig, true);
    print_progress("withdraw", &fig, true);
    fig.ok =
        fig.client_fib.iter().all(Option::is_some) && fig.withdraw_fib.iter().all(Option::is_some);
    drop(frr);
    drop(origin);
    drop(rr);
    // Let the kernel forget the sockets before the next run binds port 179 again.
    std::thread::sleep(Duration::from_millis(500));
    Ok(fig)
}

/// Poll every point until each has reached `want` (prefixes) or `timeout` passed.
#[allow(clippy::too_many_arguments)]
fn poll(
    t0: Instant,
    timeout: Duration,
    want: usize,
    origin: &Bird,
    frr: &[Frr],
    lan: &Lan,
    fig: &mut Figures,
    withdraw: bool,
) {
    let rr = lan.ip4(0);
    let mut origin_t = None;
    let mut rib_t = [None, None];
    let mut fib_t = [None, None];
    while t0.elapsed() < timeout {
        if origin_t.is_none() && origin.prefix_count(Family::V4).ok() == Some(want) {
            origin_t = Some(t0.elapsed().as_secs_f64());
        }
        for (i, f) in frr.iter().enumerate() {
            if !withdraw
                && rib_t[i].is_none()
                && f.received(rr, Family::V4).ok() == Some(want as u64)
            {
                rib_t[i] = Some(t0.elapsed().as_secs_f64());
            }
            if fib_t[i].is_none()
                && fib_count(lan.ns(i + 2).name(), Family::V4, "bgp").ok() == Some(want)
            {
                fib_t[i] = Some(t0.elapsed().as_secs_f64());
            }
        }
        let done = origin_t.is_some()
            && fib_t.iter().all(Option::is_some)
            && (withdraw || rib_t.iter().all(Option::is_some));
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if withdraw {
        fig.withdraw_origin = origin_t;
        fig.withdraw_fib = fib_t;
    } else {
        fig.origin_rib = origin_t;
        fig.client_rib = rib_t;
        fig.client_fib = fib_t;
    }
}

fn s(t: Option<f64>) -> String {
    t.map(|t| format!("{t:.2}")).unwrap_or_else(|| "-".into())
}

fn max(ts: &[Option<f64>]) -> Option<f64> {
    ts.iter().try_fold(0f64, |m, t| t.map(|t| m.max(t)))
}

fn print_progress(phase: &str, f: &Figures, withdraw: bool) {
    if withdraw {
        eprintln!(
            "  {phase}: originator {} s, client FIBs empty {} / {} s",
            s(f.withdraw_origin),
            s(f.withdraw_fib[0]),
            s(f.withdraw_fib[1])
        );
    } else {
        eprintln!(
            "  {phase}: originator {} s, client RIBs {} / {} s, client FIBs {} / {} s, RR RSS {:?} KiB",
            s(f.origin_rib),
            s(f.client_rib[0]),
            s(f.client_rib[1]),
            s(f.client_fib[0]),
            s(f.client_fib[1]),
            f.rr_rss_kib
        );
    }
}

fn print_table(rows: &[(usize, usize, String, Figures)]) {
    println!();
    println!(
        "RR benchmark: originator BIRD (static) -> RR -> 2 FRR clients (bgpd+zebra, kernel FIB); seconds from the start of the announcement / withdrawal"
    );
    println!(
        "{:>8} {:>3} {:<6} | {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} | {:>8} {:>9} | {:>9} {:>9} {:>9}",
        "prefixes",
        "run",
        "RR",
        "orig RIB",
        "c1 RIB",
        "c2 RIB",
        "c1 FIB",
        "c2 FIB",
        "all FIBs",
        "wd orig",
        "wd FIBs",
        "RSS idle",
        "RSS",
        "HWM"
    );
    for (n, run, rr, f) in rows {
        let kib = |v: Option<u64>| v.map(|k| format!("{k} K")).unwrap_or_else(|| "-".into());
        println!(
            "{:>8} {:>3} {:<6} | {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} | {:>8} {:>9} | {:>9} {:>9} {:>9}{}",
            n,
            run,
            rr,
            s(f.origin_rib),
            s(f.client_rib[0]),
            s(f.client_rib[1]),
            s(f.client_fib[0]),
            s(f.client_fib[1]),
            s(max(&f.client_fib)),
            s(f.withdraw_origin),
            s(max(&f.withdraw_fib)),
            kib(f.rr_rss_idle_kib.map(|r| r.0)),
            kib(f.rr_rss_kib.map(|r| r.0)),
            kib(f.rr_rss_kib.map(|r| r.1)),
            if f.ok { "" } else { "  (incomplete)" }
        );
    }
    // Medians per prefix count and RR, over the runs that completed.
    let mut keys: Vec<(usize, String)> =
        rows.iter().map(|(n, _, rr, _)| (*n, rr.clone())).collect();
    keys.dedup();
    keys.sort();
    keys.dedup();
    println!();
    println!(
        "medians over completed runs: {:>8} {:<6} | {:>9} {:>9} {:>9} | {:>9}",
        "prefixes", "RR", "RIBs", "all FIBs", "wd FIBs", "HWM"
    );
    for (n, rr) in keys {
        let runs: Vec<&Figures> = rows
            .iter()
            .filter(|(m, _, r, f)| *m == n && *r == rr && f.ok)
            .map(|(_, _, _, f)| f)
            .collect();
        let med = |v: Vec<Option<f64>>| -> Option<f64> {
            let mut v: Vec<f64> = v.into_iter().flatten().collect();
            if v.is_empty() {
                return None;
            }
            v.sort_by(f64::total_cmp);
            Some(v[v.len() / 2])
        };
        let ribs = med(runs.iter().map(|f| max(&f.client_rib)).collect());
        let fibs = med(runs.iter().map(|f| max(&f.client_fib)).collect());
        let wd = med(runs.iter().map(|f| max(&f.withdraw_fib)).collect());
        let hwm = med(runs
            .iter()
            .map(|f| f.rr_rss_kib.map(|r| r.1 as f64))
            .collect());
        println!(
            "{:>37} {:<6} | {:>9} {:>9} {:>9} | {:>9}  ({} runs)",
            n,
            rr,
            s(ribs),
            s(fibs),
            s(wd),
            hwm.map(|k| format!("{k:.0} K"))
                .unwrap_or_else(|| "-".into()),
            runs.len()
        );
    }
}

/// Start this program again as the strait RR inside m0; returns once it says ready.
fn start_strait_rr(lan: &Lan, clients: &[IpAddr]) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let peers: Vec<String> = clients.iter().map(IpAddr::to_string).collect();
    let mut child = Command::new("ip")
        .args(["netns", "exec", lan.ns(0).name()])
        .arg(exe)
        .args(["--rr-child", &lan.v4(0).to_string(), &peers.join(",")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start the strait RR: {e}"))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("strait RR did not start: {line:?}"));
    }
    let _ = child.stdin.as_mut().map(|s| s.flush());
    Ok(child)
}

/// The strait RR: router ID (also cluster ID) and the clients' addresses; reflects
/// until its stdin closes. The FIB stream is drained (an RR here forwards nothing, as
/// BIRD's RR exports to no kernel table).
fn rr_child(args: &[String]) {
    let router_id: Ipv4Addr = args[0].parse().expect("router id");
    let clients: Vec<IpAddr> = args[1]
        .split(',')
        .map(|a| a.parse().expect("client address"))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut cfg = SpeakerConfig::new(AS, router_id);
        cfg.cluster_id = Some(router_id);
        cfg.graceful_restart = None;
        cfg.connect_retry = Duration::from_secs(1);
        let (speaker, mut fib) = Speaker::start(cfg, Box::new(AcceptAll))
            .await
            .expect("start the speaker");
        let peers = clients
            .iter()
            .map(|&a| {
                let mut p = PeerSpec::new(a, AS);
                p.rr_client = true;
                p
            })
            .collect();
        speaker.set_peers(peers).await.expect("set peers");
        tokio::spawn(async move {
            while let Some(ev) = fib.recv().await {
                if let FibEvent::Converged = ev {
                    continue;
                }
            }
        });
        println!("ready");
        let _ = std::io::stdout().flush();
        // Until the parent closes our stdin (or kills us).
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            let _ = std::io::stdin().read_line(&mut sink);
        })
        .await;
        speaker.shutdown().await;
    });
}
