//! `netctl policy` and `netctl monitor` against a real agent (issue 12, "Seeing it"):
//! one host, the truth table's model (namespaces x, y, z with pods a, b, c serving
//! TCP/UDP 80/81), a deny-all and an allow policy applied with `netctl policy apply`,
//! then what an operator does with them: list, get, status --wait-revision, show,
//! trace, delete; and `netctl monitor` showing a denied flow from a real probe.
//!
//! Root and etcd needed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use strait_api::Endpoint;
use strait_api::policy::FlowEvent;
use strait_api::policy_wire::MonitorLine;
use strait_testbeds::cluster::{Cluster, ClusterOpts, Fabric};
use strait_testbeds::netpol::{self, Family, Model, Prober, SERVED};
use strait_testbeds::wait_until;

const WAIT: Duration = Duration::from_secs(20);

fn privileged(test: &str) -> bool {
    strait_testbeds::require_root(test) && strait_testbeds::etcd::require_etcd(test)
}

/// `netctl <args>` on host 0 with `stdin`: (exit code, stdout, stderr).
fn netctl(cluster: &Cluster, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(strait_testbeds::bins::bin("netctl"))
        .arg("--socket")
        .arg(&cluster.host(0).agent.socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("exec netctl");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("netctl stdin");
    }
    let out = child.wait_with_output().expect("netctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// As [`netctl`], expecting exit 0; its stdout.
fn ok(cluster: &Cluster, args: &[&str], stdin: &str) -> String {
    let (code, out, err) = netctl(cluster, args, stdin);
    assert_eq!(code, 0, "netctl {args:?}: {out}{err}");
    out
}

/// The agent's endpoint id of pod `ns/pod`.
fn endpoint_id(cluster: &Cluster, model: &Model, ns: &str, pod: &str) -> String {
    let container = &model.pod(ns, pod).container;
    let eps: Vec<Endpoint> = cluster
        .host(0)
        .agent
        .client()
        .get(strait_api::paths::ENDPOINTS)
        .expect("endpoints");
    eps.into_iter()
        .find(|e| e.container_id == container.id)
        .unwrap_or_else(|| panic!("no endpoint of {ns}/{pod}"))
        .id
}

/// `netctl monitor` running, its lines read on a thread; killed (by its PID) on drop.
struct Monitor {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Monitor {
    fn start(cluster: &Cluster, args: &[&str]) -> Self {
        let mut child = Command::new(strait_testbeds::bins::bin("netctl"))
            .arg("--socket")
            .arg(&cluster.host(0).agent.socket)
            .arg("monitor")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("exec netctl monitor");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The first event `want` accepts, within `WAIT`.
    fn find(&self, want: impl Fn(&FlowEvent) -> bool) -> Result<FlowEvent, String> {
        let deadline = std::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            match serde_json::from_str::<MonitorLine>(&line) {
                Ok(MonitorLine::Event(e)) if want(&e) => return Ok(*e),
                Ok(_) => seen.push(line),
                Err(e) => return Err(format!("not a monitor line ({e}): {line}")),
            }
        }
        Err(format!(
            "no such event within {WAIT:?}; saw {} lines: {:?}",
            seen.len(),
            seen.iter().take(5).collect::<Vec<_>>()
        ))
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const POLICIES: &str = "\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: x
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-from-y
  namespace: x
spec:
  podSelector:
    matchLabels:
      pod: a
  ingress:
    - from:
        - namespaceSelector:
            matchLabels:
              ns: y
      ports:
        - port: 80
          protocol: TCP
";

#[test]
fn policy_cli_on_a_real_agent() {
    let test = "policy_cli_on_a_real_agent";
    if !privileged(test) {
        return;
    }
    let (cluster, model) = netpol::start_bed(ClusterOpts::new(1, Fabric::None));
    let namespaces: Vec<String> = netpol::NAMESPACES
        .iter()
        .map(|ns| netpol::namespace(ns, &[("ns", ns)]).yaml)
        .collect();
    let out = ok(
        &cluster,
        &["policy", "apply", "-f", "-"],
        &namespaces.join("---\n"),
    );
    assert!(out.contains("namespace/x created"), "{out}");
    netpol::expect_baseline(&model, netpol::CONVERGE)
        .unwrap_or_else(|e| panic!("no full reachability before any policy: {e}"));

    // Apply: what was created, the revision to wait for.
    let out = ok(
        &cluster,
        &["policy", "apply", "-f", "-", "-o", "json"],
        POLICIES,
    );
    let report: strait_api::policy_wire::ApplyReport =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let revision = report.outcome.revision.to_string();
    ok(
        &cluster,
        &[
            "policy",
            "status",
            "--wait-revision",
            &revision,
            "--timeout",
            "10",
        ],
        "",
    );
    let out = ok(&cluster, &["policy", "apply", "-f", "-"], POLICIES);
    assert_eq!(
        out,
        "networkpolicy.networking.k8s.io/deny-all unchanged\n\
         networkpolicy.networking.k8s.io/allow-from-y unchanged\n"
    );

    // A refused document: exit 1 naming the field, nothing of the file applied.
    let bad = format!(
        "{}---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  \
         name: broken\n  namespace: x\nspec:\n  podSelector: {{}}\n  ingress:\n    - \
         ports:\n        - port: 80\n          endPort: 70\n",
        netpol::network_policy("x", "extra", "podSelector: {}\npolicyTypes: [Egress]").yaml
    );
    let (code, out, err) = netctl(&cluster, &["policy", "apply", "-f", "-"], &bad);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("endPort"), "{err}");
    let list = ok(&cluster, &["policy", "list"], "");
    assert!(
        !list.contains("extra") && !list.contains("broken"),
        "{list}"
    );
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for name in ["deny-all", "allow-from-y"] {
        assert!(
            rows.iter().any(|r| r[..3] == ["NetworkPolicy", "x", name]),
            "{name} in\n{list}"
        );
    }

    // Get gives back the document as applied.
    let out = ok(
        &cluster,
        &["policy", "get", "x/allow-from-y", "-o", "json"],
        "",
    );
    let source: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(source["metadata"]["name"], "allow-from-y");
    assert_eq!(
        source["spec"]["ingress"][0]["ports"][0]["port"], 80,
        "{source}"
    );

    // Show: x/a isolated for ingress with one rule, its kernel maps in sync.
    let xa = endpoint_id(&cluster, &model, "x", "a");
    let out = ok(&cluster, &["policy", "show", "--endpoint", &xa], "");
    assert!(out.contains("ingress: isolated, default deny"), "{out}");
    assert!(out.contains("rule x/allow-from-y#0 (allow"), "{out}");
    assert!(out.contains("egress: open"), "{out}");
    assert!(out.ends_with("kernel maps: in sync\n"), "{out}");

    // Trace: from y allowed by the rule, from z denied, the kernel agreeing.
    let yb = endpoint_id(&cluster, &model, "y", "b");
    let zb = endpoint_id(&cluster, &model, "z", "b");
    let out = ok(
        &cluster,
        &[
            "policy", "trace", "--from", &yb, "--to", &xa, "--port", "80/tcp",
        ],
        "",
    );
    assert!(
        out.contains("selected by x/allow-from-y, x/deny-all")
            || out.contains("selected by x/deny-all, x/allow-from-y"),
        "{out}"
    );
    assert!(out.contains("verdict: allowed"), "{out}");
    assert!(
        out.contains("maps agree with the store's policies"),
        "{out}"
    );
    let out = ok(
        &cluster,
        &[
            "policy", "trace", "--from", &zb, "--to", &xa, "--port", "80/tcp",
        ],
        "",
    );
    assert!(out.contains("verdict: DENIED"), "{out}");
    assert!(
        out.contains("maps agree with the store's policies"),
        "{out}"
    );
    let out = ok(
        &cluster,
        &[
            "policy", "trace", "--from", "y/pod=c", "--to", &xa, "--port", "81/tcp",
        ],
        "",
    );
    assert!(out.contains("verdict: DENIED"), "{out}");

    // Monitor: a real probe from z/b to x/a is denied and shown, with its policy's
    // endpoint named.
    let monitor = Monitor::start(
        &cluster,
        &["--verdict", "denied", "--endpoint", &xa, "-o", "json"],
    );
    // The monitor is connected once the agent has a subscriber; give it a moment by
    // probing until a line comes (each probe is a new denied connection).
    let family = Family::V4;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let found = std::thread::scope(|s| {
        let prober = s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = Prober::default().observe(&model, family, &model.reach(&SERVED, false));
            }
        });
        let found = monitor.find(|e| {
            !e.allowed && e.dst.endpoint.as_deref() == Some(xa.as_str()) && e.dst.port == 80
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = prober.join();
        found
    });
    let event = found.unwrap_or_else(|e| panic!("netctl monitor: {e}"));
    assert_eq!(event.direction, "ingress", "{event:?}");
    assert_eq!(event.dst.namespace.as_deref(), Some("x"), "{event:?}");
    drop(monitor);

    // The metrics count the denials: per policy and verdict from the events, by
    // reason from the datapath's counters.
    let metrics = cluster
        .host(0)
        .agent
        .client()
        .request("GET", "/metrics", None)
        .expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    let count = |prefix: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(
        count(
            r#"strait_policy_verdicts_total{policy="default",direction="ingress",verdict="denied"} "#
        ) > 0,
        "{metrics}"
    );
    assert!(
        count(r#"strait_policy_drops_total{reason="denied_default"} "#) > 0,
        "{metrics}"
    );

    // Delete both; a second delete is an error naming the object.
    let out = ok(
        &cluster,
        &["policy", "delete", "x/deny-all", "x/allow-from-y"],
        "",
    );
    assert_eq!(
        out,
        "networkpolicy.networking.k8s.io/deny-all deleted\n\
         networkpolicy.networking.k8s.io/allow-from-y deleted\n"
    );
    let (code, _, err) = netctl(&cluster, &["policy", "delete", "x/deny-all"], "");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("policy/k8s/x/deny-all"), "{err}");
    let client = cluster.host(0).agent.client();
    wait_until(
        "the deletes applied",
        WAIT,
        Duration::from_millis(50),
        || {
            client
                .get::<strait_api::policy::PolicyStatus>(strait_api::paths::POLICY_STATUS)
                .is_ok_and(|s| s.policies == 0)
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    netpol::expect_baseline(&model, netpol::CONVERGE)
        .unwrap_or_else(|e| panic!("full reachability again after the deletes: {e}"));
}
