//! The Kubernetes integration's cost, beside strait without the API server in
//! between (`netctl`, the baseline), in the same run. A benchmark, not a test: it
//! prints figures and asserts nothing about them.
//!
//! One 3-host VXLAN cluster whose agents follow a real `kube-apiserver` (with the
//! project's RBAC role alone):
//!
//! * **Policies to every agent.** `--policies N` NetworkPolicies (spread over ten
//!   namespaces, one `kubectl apply` of a List) until the third host's agent lists
//!   them all with origin `kubernetes`; then the same documents, in other
//!   namespaces, with `netctl policy apply` on the first host until the third lists
//!   them. Both times run from the command's start (so each includes its CLI) to the
//!   last object seen, polled every 20 ms. Medians of `--runs`.
//! * **A label to the endpoint.** A pod on h2 (a Pod object and a CNI ADD naming
//!   it): `kubectl label pod` until h2's agent shows the endpoint with the new label;
//!   beside it `netctl endpoint label` of an endpoint without a pod on h2 (what the
//!   API path saves a user from typing). Polled every 5 ms; medians of `--labels`.
//! * **Memory.** Each agent's RSS (`VmRSS`) after start, with the API's objects,
//!   and with both sets.
//!
//! Usage: strait-bench-kube [--policies N] [--runs N] [--labels N]

use std::time::{Duration, Instant};

use serde_json::Value;
use strait_testbeds::bench::{checkpoint, median, stop_on_signals};
use strait_testbeds::cluster::{Cluster, ClusterOpts, Fabric};
use strait_testbeds::netpol::{kubectl, kubectl_apply};

const USAGE: &str = "usage: strait-bench-kube [--policies N] [--runs N] [--labels N]";
const NAMESPACES: usize = 10;
const TIMEOUT: Duration = Duration::from_secs(120);

struct Args {
    policies: usize,
    runs: usize,
    labels: usize,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Args {
    let mut a = Args {
        policies: 500,
        runs: 3,
        labels: 20,
    };
    while let Some(flag) = it.next() {
        let val = it.next().and_then(|v| v.parse::<usize>().ok());
        match (flag.as_str(), val) {
            ("--policies", Some(n)) if (1..=5000).contains(&n) => a.policies = n,
            ("--runs", Some(n)) if n > 0 => a.runs = n,
            ("--labels", Some(n)) if n > 0 => a.labels = n,
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    a
}

fn main() {
    let args = parse_args(std::env::args().skip(1));
    if !strait_testbeds::require_root("strait-bench-kube")
        || !strait_testbeds::etcd::require_etcd("strait-bench-kube")
        || !strait_testbeds::kube::require_kube("strait-bench-kube")
    {
        std::process::exit(1);
    }
    stop_on_signals();
    let mut opts = ClusterOpts::new(3, Fabric::Vxlan);
    opts.kubernetes = Some(Default::default());
    let mut c = Cluster::start(opts);
    println!("{}", c.describe());
    let rss_start = rss_all(&c);

    let mut api_times = vec![];
    let mut kubectl_returned = vec![];
    let mut netctl_times = vec![];
    let mut rss_api = vec![];
    let mut rss_both = vec![];
    for run in 0..args.runs {
        checkpoint();
        let k_ns = format!("k{run}");
        let n_ns = format!("n{run}");
        let docs = policies(&k_ns, args.policies);
        let t = Instant::now();
        kubectl_apply(&c, &docs).unwrap_or_else(|e| panic!("{e}"));
        kubectl_returned.push(t.elapsed().as_secs_f64());
        wait_listed(&c, &k_ns, args.policies, "kubernetes");
        api_times.push(t.elapsed().as_secs_f64());
        rss_api.push(rss_all(&c));

        let docs = policies(&n_ns, args.policies);
        let t = Instant::now();
        let (ok, out) = netctl_stdin(&c, &docs);
        assert!(ok, "netctl policy apply: {out}");
        wait_listed(&c, &n_ns, args.policies, "netctl");
        netctl_times.push(t.elapsed().as_secs_f64());
        rss_both.push(rss_all(&c));

        // Both sets go before the next run.
        for i in 0..NAMESPACES {
            let ns = format!("{k_ns}-{i}");
            kubectl(&c, &["delete", "networkpolicy", "--all", "-n", &ns], "")
                .unwrap_or_else(|e| panic!("{e}"));
        }
        for (i, key) in keys(&n_ns, args.policies).iter().enumerate() {
            if i % 100 == 0 {
                checkpoint();
            }
            let (ok, out) = c.host(0).netctl(&["policy", "delete", key]);
            assert!(ok, "netctl policy delete {key}: {out}");
        }
        wait_listed(&c, &k_ns, 0, "kubernetes");
    }

    checkpoint();
    let (api_label, kubectl_label, netctl_label) = label_times(&mut c, args.labels);

    let med = |v: &[f64]| median(v.to_vec()).unwrap_or(f64::NAN);
    println!(
        "\n== policies to every agent ({} NetworkPolicies, {} runs)",
        args.policies, args.runs
    );
    println!(
        "kubectl apply → listed on h3   median {:>8.3} s   ({:?})",
        med(&api_times),
        rounded(&api_times)
    );
    println!(
        "  of which kubectl apply ran   median {:>8.3} s   (it creates the objects one by one)",
        med(&kubectl_returned)
    );
    println!(
        "netctl policy apply → on h3    median {:>8.3} s   ({:?})  baseline",
        med(&netctl_times),
        rounded(&netctl_times)
    );
    println!(
        "ratio kubectl/netctl           {:>8.2}",
        med(&api_times) / med(&netctl_times)
    );
    println!(
        "\n== a label to its endpoint on h2 ({} changes)",
        args.labels
    );
    println!(
        "kubectl label pod → endpoint   median {:>8.1} ms  p90 {:>8.1} ms",
        med(&api_label) * 1e3,
        p90(&api_label) * 1e3
    );
    println!(
        "  of which kubectl label ran   median {:>8.1} ms",
        med(&kubectl_label) * 1e3
    );
    println!(
        "netctl endpoint label          median {:>8.1} ms  p90 {:>8.1} ms  baseline",
        med(&netctl_label) * 1e3,
        p90(&netctl_label) * 1e3
    );
    println!("\n== agents' RSS (MiB), h1 h2 h3");
    println!("after start (watches, no objects) {:?}", rss_start);
    println!("with the API's policies           {:?}", rss_api.last());
    println!("with both sets                    {:?}", rss_both.last());
}

/// `n` NetworkPolicies over [`NAMESPACES`] namespaces `<ns>-<i>` (with the
/// Namespaces), as one YAML stream.
fn policies(ns: &str, n: usize) -> String {
    let mut docs = Vec::new();
    for i in 0..NAMESPACES {
        docs.push(format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}-{i}, labels: {{bench: \"{i}\"}}}}\n"
        ));
    }
    for p in 0..n {
        docs.push(format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {{name: p{p}, namespace: {ns}-{}}}\n\
             spec:\n  podSelector: {{matchLabels: {{app: a{p}}}}}\n  ingress:\n  - from:\n    \
             - namespaceSelector: {{matchLabels: {{bench: \"{}\"}}}}\n    ports:\n    \
             - {{protocol: TCP, port: {}}}\n",
            p % NAMESPACES,
            (p + 1) % NAMESPACES,
            1000 + p % 5000
        ));
    }
    docs.join("---\n")
}

fn keys(ns: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|p| format!("policy/k8s/{ns}-{}/p{p}", p % NAMESPACES))
        .collect()
}

fn netctl_stdin(c: &Cluster, docs: &str) -> (bool, String) {
    let file = c.dir().join("bench-policies.yaml");
    std::fs::write(&file, docs).expect("write the documents");
    c.host(0)
        .netctl(&["policy", "apply", "-f", file.to_str().expect("utf-8 path")])
}

/// Polls h3's `netctl policy list` until exactly `n` policies of namespaces
/// `<ns>-*` with `origin` are listed.
fn wait_listed(c: &Cluster, ns: &str, n: usize, origin: &str) {
    let prefix = format!("policy/k8s/{ns}-");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (ok, out) = c.host(2).netctl(&["-o", "json", "policy", "list"]);
        if ok {
            let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
            let count = v
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| {
                    o["key"].as_str().is_some_and(|k| k.starts_with(&prefix))
                        && o["origin"].as_str().unwrap_or("netctl") == origin
                })
                .count();
            if count == n {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{n} policies of {ns}-* not listed on h3 within {TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Medians' inputs: seconds from each label command's start to h2's agent showing
/// it, through the API server (and to kubectl's return) and through netctl.
fn label_times(c: &mut Cluster, n: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    kubectl_apply(
        c,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: lbl}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: pod, namespace: lbl, labels: {app: x}}\n\
         spec: {nodeName: h2, containers: [{name: c, image: busybox}]}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let pod = c
        .try_add_container_args(
            1,
            "lbl-pod",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=lbl;K8S_POD_NAME=pod",
            |_| {},
        )
        .unwrap_or_else(|o| panic!("ADD: {o:?}"));
    let plain = c.add_container(1, "lbl-plain");
    let mut api = vec![];
    let mut returned = vec![];
    let mut direct = vec![];
    for i in 0..n {
        checkpoint();
        let value = format!("v{i}");
        let t = Instant::now();
        kubectl(
            c,
            &[
                "label",
                "pod",
                "-n",
                "lbl",
                "pod",
                &format!("n={value}"),
                "--overwrite",
            ],
            "",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        returned.push(t.elapsed().as_secs_f64());
        wait_label(c, &pod.id, &value);
        api.push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let (ok, out) = c.host(1).netctl(&[
            "endpoint",
            "label",
            &plain.id,
            &format!("n={value}"),
            "--overwrite",
        ]);
        assert!(ok, "netctl endpoint label: {out}");
        wait_label(c, &plain.id, &value);
        direct.push(t.elapsed().as_secs_f64());
    }
    (api, returned, direct)
}

/// Polls h2's endpoints until the one of container `id` has label `n=value`.
fn wait_label(c: &Cluster, id: &str, value: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (ok, out) = c.host(1).netctl(&["-o", "json", "endpoints"]);
        if ok {
            let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
            let seen = v
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["container_id"] == id && e["labels"]["n"].as_str() == Some(value));
            if seen {
                return;
            }
        }
        assert!(Instant::now() < deadline, "label n={value} not on {id}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Each agent's VmRSS in MiB.
fn rss_all(c: &Cluster) -> Vec<f64> {
    c.hosts()
        .iter()
        .map(|h| {
            let pid = h.agent.pid().expect("agent running");
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map(|kb| (kb / 1024.0 * 10.0).round() / 10.0)
                .unwrap_or(f64::NAN)
        })
        .collect()
}

fn p90(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get((s.len() * 9 / 10).min(s.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}

fn rounded(v: &[f64]) -> Vec<f64> {
    v.iter().map(|x| (x * 1000.0).round() / 1000.0).collect()
}
