//! One agent per host (issue 19, item 1), against real `straitd`s and the real
//! `strait` plugin in namespaces of the test's own: a second agent in the same network
//! namespace refuses to start, naming the lock and the first agent's PID, and the
//! first one's containers keep working; an agent of another store, started once the
//! first has stopped, leaves the links marked by the first one alone.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use strait_testbeds::agent::{Agent, AgentOpts};
use strait_testbeds::cni::{CniCall, CniOutcome};
use strait_testbeds::host::{Host, result_ip};
use strait_testbeds::{require_root, wait_until};

const POOLS: &[&str] = &["10.78.0.0/16", "fd00:78::/48"];

/// The host end's alias (`ip link show` prints it as `alias`).
fn alias(h: &Host, link: &str) -> Option<String> {
    h.ns.ip_json(&["link", "show", "dev", link])[0]["ifalias"]
        .as_str()
        .map(str::to_string)
}

/// The result's host-side interface name.
fn host_link(result: &Value) -> String {
    result["interfaces"][0]["name"]
        .as_str()
        .expect("host interface in the result")
        .to_string()
}

fn check(h: &Host, id: &str, ns: &Path, prev: &Value) -> CniOutcome {
    let mut cfg = h.config();
    cfg["prevResult"] = prev.clone();
    CniCall::new("CHECK", cfg).container(id, ns).run()
}

/// Another agent's directory (socket, state, log) beside the host's.
fn other_dir(h: &Host) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{}-b-", h.prefix))
        .tempdir()
        .expect("temp dir")
}

#[test]
fn a_second_agent_in_the_namespace_refuses_to_start_and_the_first_keeps_its_containers() {
    if !require_root("a_second_agent_in_the_namespace_refuses_to_start") {
        return;
    }
    let mut h = Host::new(POOLS);
    let ns0 = h.container_ns();
    let r0 = h.add("one0", &ns0);
    let ns1 = h.container_ns();
    let r1 = h.add("one1", &ns1);
    let link0 = host_link(&r0);
    assert!(
        alias(&h, &link0).is_some_and(|a| a.starts_with("strait:")),
        "the host end carries the agent's owner mark: {:?}",
        alias(&h, &link0)
    );

    // Agent B: same namespace, its own socket and state dir.
    let dir = other_dir(&h);
    let mut b = Agent::spawn(&h.ns, dir.path(), AgentOpts::new("node1", POOLS));
    wait_until(
        "the second agent to exit",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || b.exit_status().is_some(),
    )
    .unwrap();
    let status = b.exit_status().expect("exited");
    let log = b.log();
    assert!(!status.success(), "{status}\n{log}");
    let pid = h.agent.pid().expect("agent A runs");
    assert!(
        log.contains("/run/strait/netns-") && log.contains(".lock"),
        "B names the lock: {log}"
    );
    assert!(
        log.contains(&format!("PID {pid}")),
        "B names A's PID: {log}"
    );
    assert!(!b.socket.exists(), "B bound no socket");

    // A's containers are untouched: links there, CHECK passes, traffic flows.
    assert!(h.strait_links().contains(&link0), "{:?}", h.strait_links());
    let out = check(&h, "one0", &ns0, &r0);
    assert!(out.ok(), "CHECK after B's attempt: {}", out.stdout);
    let ip0 = result_ip(&r0, false).expect("IPv4");
    assert!(
        (0..3).any(|_| h.container(&ns1).ping(&ip0)),
        "one1 -> one0 after B's attempt"
    );
    drop(r1);

    for (id, ns) in [("one0", &ns0), ("one1", &ns1)] {
        assert!(h.del(id, ns).ok());
    }
}

#[test]
fn an_agent_of_another_store_leaves_the_links_marked_by_the_first_alone() {
    if !require_root("an_agent_of_another_store_leaves_the_links_marked_by_the_first_alone") {
        return;
    }
    let mut h = Host::new(POOLS);
    let ns0 = h.container_ns();
    let r0 = h.add("mark0", &ns0);
    let link0 = host_link(&r0);
    h.agent.stop();

    // The namespace's lock is free now; B has a store of its own and no record of
    // link0, which carries A's mark.
    let dir = other_dir(&h);
    let mut b = Agent::start(&h.ns, dir.path(), AgentOpts::new("node1", POOLS));
    assert!(
        h.strait_links().contains(&link0),
        "B's start-up sweep removed A's link: {:?}\n{}",
        h.strait_links(),
        b.log()
    );
    b.stop();

    h.agent.restart();
    let out = check(&h, "mark0", &ns0, &r0);
    assert!(out.ok(), "A's container as A left it: {}", out.stdout);
    assert!(h.del("mark0", &ns0).ok());
    assert!(h.wait_no_strait_links().is_empty());
}
