//! An agent on etcd rides out an etcd outage (root and etcd needed): while etcd is
//! down, ADD answers "try again later" (CNI code 11) and STATUS "not available" (50),
//! and containers already attached keep their connectivity; once etcd is back, ADD
//! works again without restarting the agent.
//!
//! etcd runs inside the host namespace (the agent's), on that namespace's loopback.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strait_api::{NodeView, paths};
use strait_testbeds::agent::{Agent, AgentOpts};
use strait_testbeds::cni::{CniCall, CniOutcome};
use strait_testbeds::etcd::{Etcd, EtcdOpts, require_etcd};
use strait_testbeds::host::result_ip;
use strait_testbeds::netns::{Netns, reap_leftovers};
use strait_testbeds::{require_root, unique_prefix};

/// CNI codes the test expects (CNI spec: 11 try again later; 50 plugin not available).
const TRY_AGAIN_LATER: u64 = 11;
const NOT_AVAILABLE: u64 = 50;

/// The host namespace, etcd and the agent in it, and the plugin config for it.
struct Bed {
    prefix: String,
    // Field order is drop order: the agent before etcd, both before the namespaces.
    agent: Agent,
    etcd: Etcd,
    containers: Vec<Netns>,
    host: Netns,
    _dir: tempfile::TempDir,
}

impl Bed {
    /// etcd and a ready agent on it.
    fn start() -> Self {
        Self::start_with(true)
    }

    /// With `etcd_up` false, etcd is stopped before the agent starts, and the agent is
    /// not waited for.
    fn start_with(etcd_up: bool) -> Self {
        reap_leftovers();
        let prefix = unique_prefix();
        let host = Netns::new(format!("{prefix}h"));
        let mut etcd = Etcd::start_with(EtcdOpts {
            netns: Some(host.name().to_string()),
            ..EtcdOpts::default()
        });
        if !etcd_up {
            etcd.kill();
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .expect("temp dir");
        let mut opts = AgentOpts::new("node1", &["10.98.0.0/24"]);
        opts.extra = vec!["--etcd-endpoints".into(), etcd.client_url()];
        let agent = if etcd_up {
            Agent::start(&host, dir.path(), opts)
        } else {
            Agent::spawn(&host, dir.path(), opts)
        };
        Self {
            prefix,
            agent,
            etcd,
            containers: Vec::new(),
            host,
            _dir: dir,
        }
    }

    fn container_ns(&mut self) -> PathBuf {
        let ns = Netns::new(format!("{}c{}", self.prefix, self.containers.len()));
        let path = ns.path();
        self.containers.push(ns);
        path
    }

    fn config(&self) -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": "stnet",
            "type": "strait",
            "socket": self.agent.socket,
            "stateDir": self.agent.state_dir,
        })
    }

    fn call(&self, command: &str, id: &str, netns: &Path) -> CniOutcome {
        CniCall::new(command, self.config())
            .container(id, netns)
            .run()
    }

    /// Ping `ip` from container number `from` (a few tries: the first ARP may be slow).
    fn ping(&self, from: usize, ip: &str) -> bool {
        (0..3).any(|_| self.containers[from].ping(ip))
    }

    fn status(&self) -> CniOutcome {
        CniCall::new("STATUS", self.config()).run()
    }
}

#[test]
fn agent_rides_out_an_etcd_outage() {
    if !require_root("agent_rides_out_an_etcd_outage")
        || !require_etcd("agent_rides_out_an_etcd_outage")
    {
        return;
    }
    let mut bed = Bed::start();
    let status: Value = bed.agent.client().get(paths::STATUS).expect("GET status");
    assert_eq!(
        status["store"].as_str(),
        Some(format!("etcd:{}", bed.etcd.client_url()).as_str())
    );
    // The agent registers itself (just after it turns ready) and serves the node list.
    let deadline = Instant::now() + Duration::from_secs(20);
    let nodes = loop {
        let nodes: Vec<NodeView> = bed.agent.client().get(paths::NODES).expect("GET nodes");
        if !nodes.is_empty() || Instant::now() > deadline {
            break nodes;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0].name, "node1");
    assert!(nodes[0].alive && nodes[0].record.is_some(), "{nodes:?}");

    // Two containers attached before the outage; they talk to each other through the
    // host (the host namespace itself has no address to ping from).
    let c0 = bed.container_ns();
    let ip0 = result_ip(&bed.call("ADD", "c0", &c0).expect_ok(), false).expect("IPv4");
    let c1 = bed.container_ns();
    let ip1 = result_ip(&bed.call("ADD", "c1", &c1).expect_ok(), false).expect("IPv4");
    assert!(bed.ping(1, &ip0), "c1 -> c0 before the outage");
    assert!(bed.status().ok(), "ready before the outage");

    // etcd crashes.
    bed.etcd.kill();
    let c2 = bed.container_ns();
    let refused = bed.call("ADD", "c2", &c2);
    assert_eq!(
        refused.error_code(),
        TRY_AGAIN_LATER,
        "ADD while etcd is down: {}",
        refused.stdout
    );
    let status = bed.status();
    assert_eq!(
        status.error_code(),
        NOT_AVAILABLE,
        "STATUS: {}",
        status.stdout
    );
    assert!(
        status.stdout.contains("store"),
        "STATUS names the store as the reason: {}",
        status.stdout
    );
    // The operator's view answers from what the agent knows without etcd: not ready,
    // and why (issue 19, item 12), and `netctl status` says so once, exiting 1.
    let status: Value = bed.agent.client().get(paths::STATUS).expect("GET status");
    assert_eq!(status["readiness"]["ready"], false, "{status}");
    assert!(
        status["readiness"]["reasons"].to_string().contains("store"),
        "{status}"
    );
    let netctl = std::process::Command::new(strait_testbeds::bins::bin("netctl"))
        .arg("--socket")
        .arg(&bed.agent.socket)
        .arg("status")
        .output()
        .expect("exec netctl");
    let shown = String::from_utf8_lossy(&netctl.stdout);
    assert_eq!(
        netctl.status.code(),
        Some(1),
        "netctl status during the outage: {shown}{}",
        String::from_utf8_lossy(&netctl.stderr)
    );
    assert!(
        shown.contains("node1") && shown.contains("no (code 50)") && shown.contains("store"),
        "{shown}"
    );
    // Nothing was torn down: the attached containers still talk, and the refused ADD
    // left no interface behind.
    assert!(bed.ping(1, &ip0), "c1 -> c0 during the outage");
    assert!(bed.ping(0, &ip1), "c0 -> c1 during the outage");
    let links = bed.host.links();
    assert_eq!(
        links.iter().filter(|l| l.starts_with("strait")).count(),
        2,
        "{links:?}"
    );

    // etcd comes back; the same agent serves ADD again (a runtime retries code 11).
    bed.etcd.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        let out = bed.call("ADD", "c2", &c2);
        if out.ok() {
            break out.json();
        }
        assert_eq!(out.error_code(), TRY_AGAIN_LATER, "{}", out.stdout);
        assert!(
            Instant::now() < deadline,
            "ADD still refused 60 s after etcd came back: {}",
            out.stdout
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let ip2 = result_ip(&result, false).expect("an IPv4 address");
    assert!(ip2 != ip0 && ip2 != ip1, "{ip2} given twice");
    assert!(bed.ping(2, &ip0), "the new container reaches an old one");
    assert!(bed.ping(1, &ip0), "old containers still talk");
    assert!(bed.status().ok(), "ready again");

    for (i, c) in [c0, c1, c2].iter().enumerate() {
        assert!(bed.call("DEL", &format!("c{i}"), c).ok());
    }
}

#[test]
fn agent_waits_for_etcd_at_start() {
    if !require_root("agent_waits_for_etcd_at_start")
        || !require_etcd("agent_waits_for_etcd_at_start")
    {
        return;
    }
    let mut bed = Bed::start_with(false);
    let c0 = bed.container_ns();
    // The agent serves its socket while it waits: ADD is "try again later", STATUS
    // "not available" (a brief wait for the socket itself first).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bed.agent.socket.exists() {
        assert!(Instant::now() < deadline, "no socket:\n{}", bed.agent.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = bed.call("ADD", "c0", &c0);
    assert_eq!(refused.error_code(), TRY_AGAIN_LATER, "{}", refused.stdout);
    assert_eq!(bed.status().error_code(), NOT_AVAILABLE);

    bed.etcd.restart();
    bed.agent.wait_ready(Duration::from_secs(60));
    let result = bed.call("ADD", "c0", &c0).expect_ok();
    assert!(result_ip(&result, false).is_some());
    assert!(bed.call("DEL", "c0", &c0).ok());
}
