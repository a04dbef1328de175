//! CNI ADD/DEL latency: `strait` against Debian's reference `bridge` + `host-local`,
//! measured in the same run on the same machine. Prints p50/p99 for sequential calls
//! and for a burst of concurrent calls. A benchmark, not a test: it asserts nothing
//! about time.
//!
//! Both plugins are exec'd directly, as a runtime does. The bench process moves itself
//! into a namespace of its own before starting any thread, so the bridge plugin (which
//! works in the namespace it runs in) builds its bridge there; `straitd` runs in a
//! second namespace and the `strait` plugin only talks to its socket.
//!
//! Usage: strait-bench-cni [--sequential N] [--burst N]   (root; release build advised)

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use strait_testbeds::agent::{Agent, AgentOpts};
use strait_testbeds::bench::percentile;
use strait_testbeds::cni::CniCall;
use strait_testbeds::netns::Netns;

struct Args {
    sequential: usize,
    burst: usize,
    /// `--fast-path` for the agent (its default when absent).
    fast_path: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        sequential: 100,
        burst: 100,
        fast_path: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let raw = it.next();
        let val = raw.as_deref().and_then(|v| v.parse().ok());
        match (flag.as_str(), val, raw.as_deref()) {
            ("--sequential", Some(n), _) => a.sequential = n,
            ("--burst", Some(n), _) => a.burst = n,
            ("--fast-path", _, Some(m @ ("auto" | "on" | "off"))) => {
                a.fast_path = Some(m.to_string())
            }
            _ => {
                eprintln!(
                    "usage: strait-bench-cni [--sequential N] [--burst N] [--fast-path auto|on|off]"
                );
                std::process::exit(2);
            }
        }
    }
    a
}

fn main() {
    if !strait_testbeds::require_root("strait-bench-cni") {
        std::process::exit(2);
    }
    let args = parse_args();
    strait_testbeds::netns::reap_leftovers();
    let prefix = strait_testbeds::unique_prefix();

    // The bridge baseline's "host": this process itself, before any thread exists.
    let bridge_host = Netns::new(format!("{prefix}b"));
    enter(&bridge_host.path());
    let strait_host = Netns::new(format!("{prefix}h"));
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir()
        .expect("temp dir");
    let mut opts = AgentOpts::new("bench", &["10.90.0.0/16"]);
    if let Some(mode) = &args.fast_path {
        opts.extra = vec!["--fast-path".into(), mode.clone()];
    }
    let mut agent = Agent::start(&strait_host, dir.path(), opts);

    let Some(plugins) = strait_testbeds::bins::reference_plugins_dir() else {
        eprintln!("reference CNI plugins missing: apt-get install containernetworking-plugins");
        std::process::exit(2);
    };
    let strait_cfg = json!({
        "cniVersion": "1.0.0", "name": "benchnet", "type": "strait",
        "socket": agent.socket, "stateDir": agent.state_dir,
    });
    let bridge_cfg = json!({
        "cniVersion": "1.0.0", "name": "benchbr", "type": "bridge",
        "bridge": format!("{prefix}br"), "isGateway": true, "ipMasq": false,
        "ipam": { "type": "host-local", "dataDir": dir.path().join("host-local"),
                  "ranges": [[{"subnet": "10.91.0.0/16"}]],
                  "routes": [{"dst": "0.0.0.0/0"}] }
    });
    let strait_bin = strait_testbeds::bins::bin("strait");
    let bridge_bin = plugins.join("bridge");

    // Warm both: page cache, the bridge device, the agent's first block claim.
    let warm = Netns::new(format!("{prefix}w"));
    for (bin, cfg) in [(&strait_bin, &strait_cfg), (&bridge_bin, &bridge_cfg)] {
        call(bin, "ADD", cfg, "warm", &warm.path());
        call(bin, "DEL", cfg, "warm", &warm.path());
    }
    drop(warm);

    println!(
        "CNI latency, {} sequential and a {}-way burst; fresh netns per container",
        args.sequential, args.burst
    );
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9}",
        "", "ADD p50", "ADD p99", "DEL p50", "DEL p99"
    );
    for (label, bin, cfg) in [
        ("strait", &strait_bin, &strait_cfg),
        ("bridge+host-local", &bridge_bin, &bridge_cfg),
    ] {
        settle();
        let seq = run_sequential(&prefix, label, bin, cfg, args.sequential);
        print_row(&format!("{label} sequential"), &seq);
        settle();
        let burst = run_burst(&prefix, label, bin, cfg, args.burst);
        print_row(&format!("{label} burst"), &burst);
    }
    agent.stop();
}

/// Wait for the kernel to reclaim the previous phase's namespaces. `ip netns del`
/// returns at once and the kernel tears the namespaces down later, in a work queue that
/// takes the rtnl lock: without a pause that teardown would run during the next phase
/// and be measured as the plugin's latency (whichever plugin comes next).
fn settle() {
    std::thread::sleep(Duration::from_secs(3));
}

/// ADD and DEL latencies of one run.
struct Sample {
    add: Vec<Duration>,
    del: Vec<Duration>,
}

fn run_sequential(prefix: &str, label: &str, bin: &Path, cfg: &Value, n: usize) -> Sample {
    let nss: Vec<Netns> = (0..n)
        .map(|i| Netns::new(format!("{prefix}{}s{i}", &label[..1])))
        .collect();
    let add = nss
        .iter()
        .enumerate()
        .map(|(i, ns)| call(bin, "ADD", cfg, &format!("seq{i}"), &ns.path()))
        .collect();
    let del = nss
        .iter()
        .enumerate()
        .map(|(i, ns)| call(bin, "DEL", cfg, &format!("seq{i}"), &ns.path()))
        .collect();
    Sample { add, del }
}

fn run_burst(prefix: &str, label: &str, bin: &Path, cfg: &Value, n: usize) -> Sample {
    let nss: Vec<Netns> = (0..n)
        .map(|i| Netns::new(format!("{prefix}{}b{i}", &label[..1])))
        .collect();
    let par = |verb: &str| -> Vec<Duration> {
        std::thread::scope(|s| {
            let hs: Vec<_> = nss
                .iter()
                .enumerate()
                .map(|(i, ns)| {
                    let verb = verb.to_string();
                    s.spawn(move || call(bin, &verb, cfg, &format!("burst{i}"), &ns.path()))
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("thread")).collect()
        })
    };
    let add = par("ADD");
    let del = par("DEL");
    Sample { add, del }
}

fn call(bin: &Path, verb: &str, cfg: &Value, id: &str, netns: &Path) -> Duration {
    let out = CniCall::of_plugin(bin, verb, cfg.clone())
        .container(id, netns)
        .run();
    if !out.ok() {
        eprintln!(
            "{} {verb} {id} failed: {} {}",
            bin.display(),
            out.stdout,
            out.stderr
        );
        std::process::exit(1);
    }
    out.took
}

fn print_row(label: &str, s: &Sample) {
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9}",
        label,
        ms(percentile(&s.add, 50)),
        ms(percentile(&s.add, 99)),
        ms(percentile(&s.del, 50)),
        ms(percentile(&s.del, 99))
    );
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Move this (still single-threaded) process into `ns`.
fn enter(ns: &Path) {
    let f = std::fs::File::open(ns).expect("open netns");
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}
