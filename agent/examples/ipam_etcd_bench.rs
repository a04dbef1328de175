//! Cluster IPAM throughput and latency on etcd, beside etcd's own in the same run.
//!
//! ```text
//! cargo run --release -p straitd --example ipam_etcd_bench [-- --agents 10 --per-agent 500 --concurrency 1,64]
//! ```
//!
//! Starts a private etcd (Debian's `etcd`, as the tests do), then for each concurrency
//! level runs, with `agents` store connections at `concurrency` requests in flight each:
//!
//! 1. baseline `put`: one unconditional put of a fresh key per request;
//! 2. baseline `txn`: one create-if-absent transaction per request (compare + put), the
//!    shape of a handle create;
//! 3. IPAM: one `Ipam::allocate` per request, each agent its own node with its own
//!    blocks (claiming them as it goes) — what a burst of CNI ADDs costs in IPAM.
//!
//! Printed per row: operations per second over the whole run, and p50/p99 latency of one
//! operation (from the call to its answer, queueing included). IPAM combines concurrent
//! allocations of one node into shared transactions, so at high concurrency it can beat
//! one-transaction-per-request baselines; at concurrency 1 the difference to `txn` is
//! IPAM's own overhead (reads on block claims, planning, encoding).

use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_testbeds::etcd::{Etcd, etcd_binary};
use straitd::ipam::{AllocRequest, Ipam, IpamConfig};
use straitd::store::etcd::{EtcdOptions, EtcdStore};
use straitd::store::{Compare, PREFIX, Store, Txn, TxnOp};

struct Args {
    agents: usize,
    per_agent: usize,
    concurrency: Vec<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        agents: 10,
        per_agent: 500,
        concurrency: vec![1, 64],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!("{flag}: {v:?} is not a positive number"))
        };
        match flag.as_str() {
            "--agents" => args.agents = number(value()?)?,
            "--per-agent" => args.per_agent = number(value()?)?,
            "--concurrency" => {
                args.concurrency = value()?
                    .split(',')
                    .map(|c| number(c.to_string()))
                    .collect::<Result<_, _>>()?
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; use --agents N --per-agent N --concurrency C[,C]"
                ));
            }
        }
    }
    Ok(args)
}

/// Wall time of the whole run and every operation's latency.
struct Run {
    wall: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn row(mut self, what: &str, concurrency: usize) {
        self.latencies.sort();
        let pct = |p: f64| {
            let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
            self.latencies[i].as_secs_f64() * 1e3
        };
        println!(
            "{what:<14} {concurrency:>11} {:>8} {:>10.0} {:>9.2} {:>9.2}",
            self.latencies.len(),
            self.latencies.len() as f64 / self.wall.as_secs_f64(),
            pct(0.50),
            pct(0.99),
        );
    }
}

/// Runs `op(agent, i)` for i in 0..per_agent on every agent, `concurrency` at a time per
/// agent, all agents at once.
async fn drive<F, Fut>(agents: usize, per_agent: usize, concurrency: usize, op: F) -> Run
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let mut workers = Vec::new();
    for agent in 0..agents {
        for lane in 0..concurrency {
            let op = op.clone();
            workers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = lane;
                while i < per_agent {
                    let t0 = Instant::now();
                    op(agent, i).await;
                    latencies.push(t0.elapsed());
                    i += concurrency;
                }
                latencies
            }));
        }
    }
    let mut latencies = Vec::with_capacity(agents * per_agent);
    for w in workers {
        latencies.extend(w.await.expect("worker"));
    }
    Run {
        wall: started.elapsed(),
        latencies,
    }
}

async fn connections(etcd: &Etcd, n: usize) -> Vec<Arc<dyn Store>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let store: Arc<dyn Store> = EtcdStore::connect(&etcd.endpoints(), EtcdOptions::default())
            .await
            .expect("connect to the bench etcd");
        out.push(store);
    }
    out
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ipam_etcd_bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if etcd_binary().is_none() {
        eprintln!("ipam_etcd_bench: etcd not installed (Debian package etcd-server)");
        return std::process::ExitCode::FAILURE;
    }
    let etcd = tokio::task::spawn_blocking(Etcd::start)
        .await
        .expect("start etcd");
    println!(
        "etcd {} ({}); {} agents x {} operations each, one etcd connection per agent",
        etcd.client_url(),
        etcd.data_dir().display(),
        args.agents,
        args.per_agent
    );
    println!(
        "{:<14} {:>11} {:>8} {:>10} {:>9} {:>9}",
        "operation", "in flight*", "ops", "ops/s", "p50 ms", "p99 ms"
    );

    for (round, &concurrency) in args.concurrency.iter().enumerate() {
        let stores = Arc::new(connections(&etcd, args.agents).await);

        let s = stores.clone();
        drive(args.agents, args.per_agent, concurrency, move |a, i| {
            let store = s[a].clone();
            async move {
                let key = format!("{PREFIX}bench/put/{round}/{a}/{i}");
                store.put(&key, vec![b'x'; 200], None).await.expect("put");
            }
        })
        .await
        .row("etcd put", concurrency);

        let s = stores.clone();
        drive(args.agents, args.per_agent, concurrency, move |a, i| {
            let store = s[a].clone();
            async move {
                let key = format!("{PREFIX}bench/txn/{round}/{a}/{i}");
                let txn = Txn::new()
                    .when([Compare::absent(key.clone())])
                    .and_then([TxnOp::Put {
                        key,
                        value: vec![b'x'; 200],
                        lease: None,
                    }]);
                assert!(store.txn(txn).await.expect("txn").succeeded);
            }
        })
        .await
        .row("etcd txn", concurrency);

        // Each round in a pool of its own, so every agent starts by claiming blocks.
        let mut ipams = Vec::new();
        for (a, store) in stores.iter().enumerate() {
            let cfg = IpamConfig {
                pools: vec![format!("10.{}.0.0/16", 64 + round).parse().unwrap()],
                disabled_pools: Vec::new(),
                block_prefix_v4: 26,
                block_prefix_v6: 122,
                max_blocks_per_node: None,
                strict_affinity: false,
            };
            ipams.push(Arc::new(
                Ipam::new(store.clone(), format!("bench-{round}-{a}"), cfg)
                    .await
                    .expect("IPAM"),
            ));
        }
        let ipams = Arc::new(ipams);
        drive(args.agents, args.per_agent, concurrency, move |a, i| {
            let ipam = ipams[a].clone();
            async move {
                let req = AllocRequest {
                    handle: format!("bench.{round}.{a}.{i}"),
                    network: "bench".into(),
                    container_id: format!("{a}-{i}"),
                    ifname: "eth0".into(),
                    ..Default::default()
                };
                ipam.allocate(req).await.expect("allocate");
            }
        })
        .await
        .row("IPAM allocate", concurrency);
    }
    println!("* requests in flight per agent; ops/s over all agents; latency per operation");
    std::process::ExitCode::SUCCESS
}
