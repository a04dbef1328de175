//! `docker run` with strait as the network driver, beside Docker's own `bridge`
//! driver on the same dockerd in the same run: the wall time of `docker run --rm
//! --network X strait-bb true` (sequential, the two drivers interleaved run by run, p50
//! and p95), then a burst of concurrent `docker run -d` on each (wall time until all
//! have started, then until `docker rm -f` of all returns). A benchmark, not a test: it
//! asserts nothing about time.
//!
//! One host (a namespace) with its `straitd` (embedded store, `--docker-plugin`) and a
//! private dockerd in it (`strait_testbeds::docker`); `--baseline-only` runs the
//! bridge half alone, without an agent.
//!
//! Usage: strait-bench-docker [--runs N] [--burst N] [--baseline-only]
//!        (root; release build advised)

use std::time::{Duration, Instant};

use strait_testbeds::bench::percentile;
use strait_testbeds::docker::{DOCKER_TOOLS, DockerBed, DockerHost, DockerOpts, IMAGE};
use strait_testbeds::netns::Netns;

struct Args {
    runs: usize,
    burst: usize,
    baseline_only: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        runs: 20,
        burst: 50,
        baseline_only: false,
    };
    let usage = || -> ! {
        eprintln!("usage: strait-bench-docker [--runs N] [--burst N] [--baseline-only]");
        std::process::exit(2);
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--baseline-only" => a.baseline_only = true,
            "--runs" | "--burst" => {
                let Some(n) = it.next().and_then(|v| v.parse().ok()).filter(|n| *n > 0) else {
                    usage()
                };
                if flag == "--runs" {
                    a.runs = n;
                } else {
                    a.burst = n;
                }
            }
            _ => usage(),
        }
    }
    a
}

/// What the bench drives: a dockerd, with an agent unless `--baseline-only`.
enum Bed {
    Full(Box<DockerBed>),
    // Drop order: dockerd before its namespace.
    Baseline { docker: Box<DockerHost>, _ns: Netns },
}

impl Bed {
    fn docker(&self) -> &DockerHost {
        match self {
            Bed::Full(b) => &b.docker,
            Bed::Baseline { docker, .. } => docker,
        }
    }
}

fn main() {
    let name = "strait-bench-docker";
    if !strait_testbeds::require_root(name)
        || !strait_testbeds::runtimes::require_tools(name, DOCKER_TOOLS)
    {
        std::process::exit(2);
    }
    let args = parse_args();
    let bed = if args.baseline_only {
        strait_testbeds::netns::reap_leftovers();
        let ns = Netns::new(format!("{}h", strait_testbeds::unique_prefix()));
        let mut d = DockerHost::prepare(DockerOpts::default());
        d.start(ns.name());
        Bed::Baseline {
            docker: Box::new(d),
            _ns: ns,
        }
    } else {
        Bed::Full(Box::new(DockerBed::new(&["10.92.0.0/16"])))
    };
    let d = bed.docker();
    let bridge_dev = format!("{}br", d.prefix);
    d.docker_ok(&[
        "network",
        "create",
        "-d",
        "bridge",
        "--subnet",
        "10.93.0.0/24",
        "-o",
        &format!("com.docker.network.bridge.name={bridge_dev}"),
        "benchbridge",
    ]);
    let mut nets = vec![("bridge", "benchbridge")];
    if !args.baseline_only {
        d.docker_ok(&[
            "network",
            "create",
            "-d",
            "strait",
            "--ipam-driver",
            "strait",
            "benchstrait",
        ]);
        nets.insert(0, ("strait", "benchstrait"));
    }

    // Warm both: page cache, the image's layers, the plugin's activation.
    for (_, net) in &nets {
        run_rm(d, net);
    }

    println!(
        "docker run --rm --network X {IMAGE} true: {} runs each, interleaved",
        args.runs
    );
    let mut times: Vec<Vec<Duration>> = vec![vec![]; nets.len()];
    for _ in 0..args.runs {
        for (i, (_, net)) in nets.iter().enumerate() {
            times[i].push(run_rm(d, net));
        }
    }
    println!("{:<10} {:>10} {:>10} {:>10}", "driver", "p50", "p95", "max");
    for (i, (label, _)) in nets.iter().enumerate() {
        println!(
            "{:<10} {:>10} {:>10} {:>10}",
            label,
            ms(percentile(&times[i], 50)),
            ms(percentile(&times[i], 95)),
            ms(percentile(&times[i], 100))
        );
    }

    println!(
        "\nburst: {} concurrent docker run -d, then docker rm -f of all",
        args.burst
    );
    println!(
        "{:<10} {:>14} {:>14} {:>8}",
        "driver", "all started", "all removed", "failed"
    );
    for (label, net) in &nets {
        settle();
        let (start, remove, failed) = burst(d, label, net, args.burst);
        println!(
            "{:<10} {:>14} {:>14} {:>8}",
            label,
            ms(start),
            ms(remove),
            failed
        );
    }
    drop(bed);
}

/// One `docker run --rm`; its wall time. Exits on failure: a figure of a failed run
/// means nothing.
fn run_rm(d: &DockerHost, net: &str) -> Duration {
    let t = Instant::now();
    let out = d.docker(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        net,
        IMAGE,
        "true",
    ]);
    let took = t.elapsed();
    if !out.status.success() {
        eprintln!(
            "docker run on {net} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            d.log_tail(30)
        );
        std::process::exit(1);
    }
    took
}

/// `n` concurrent `docker run -d` on `net`: (wall time until all returned, wall time
/// of `docker rm -f` of them all, how many runs failed).
fn burst(d: &DockerHost, label: &str, net: &str, n: usize) -> (Duration, Duration, usize) {
    let names: Vec<String> = (0..n).map(|i| format!("{label}-burst{i}")).collect();
    let t = Instant::now();
    let failed = std::thread::scope(|s| {
        let hs: Vec<_> = names
            .iter()
            .map(|name| {
                s.spawn(move || {
                    let out = d.run(name, &["--network", net], &["sleep", "600"]);
                    if !out.status.success() {
                        eprintln!(
                            "{name}: {}",
                            String::from_utf8_lossy(&out.stderr).trim_end()
                        );
                    }
                    out.status.success()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or(false))
            .filter(|ok| !ok)
            .count()
    });
    let started = t.elapsed();
    let t = Instant::now();
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    let _ = d.docker(&args);
    (started, t.elapsed(), failed)
}

/// Let the kernel finish tearing down the previous phase's namespaces and links (it
/// does so after the commands return) before the next phase is timed.
fn settle() {
    std::thread::sleep(Duration::from_secs(3));
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}
