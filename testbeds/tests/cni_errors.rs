//! Errors a runtime or a person must be able to act on (issue 19): the real `strait`
//! binary against a real `straitd` in namespaces of the test's own (root needed).
//!
//! - a `CNI_NETNS` that is not a network namespace is code 104, whatever it is;
//! - an MTU IPv6 cannot use, with an IPv6 pool, is code 7 naming the minimum;
//! - a plugin that may not use the socket says "permission denied" (not "try again");
//! - a DEL made while the agent is down lands in the agent's queue although the
//!   config's `stateDir` names another directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;
use strait_testbeds::cni::{CniCall, CniOutcome};
use strait_testbeds::host::Host;
use strait_testbeds::require_root;

const POOLS: &[&str] = &["10.79.0.0/16", "fd00:79::/48"];

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

fn error(out: &CniOutcome) -> Value {
    assert!(
        !out.ok(),
        "expected an error: {} {}",
        out.stdout,
        out.stderr
    );
    out.json()
}

#[test]
fn a_netns_path_that_is_no_network_namespace_is_code_104() {
    root_or_skip!("a_netns_path_that_is_no_network_namespace_is_code_104");
    let h = Host::new(POOLS);
    let dir = tempfile::tempdir().expect("dir");
    let plain = dir.path().join("not-a-netns");
    std::fs::write(&plain, b"").expect("file");
    // The agent resolves the path: /proc/self is the agent, so this is its mount
    // namespace.
    let cases = [
        (plain.as_path(), "not a namespace file"),
        (
            Path::new("/proc/self/ns/mnt"),
            "mnt namespace, not a network",
        ),
        (dir.path(), "not a namespace file"),
    ];
    for (i, (path, says)) in cases.into_iter().enumerate() {
        let out = h.call("ADD", &format!("nsk{i}"), path).run();
        let err = error(&out);
        assert_eq!(err["code"], 104, "{}: {err}", path.display());
        let msg = err["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains(says) && msg.contains(&path.display().to_string()),
            "{}: {msg}",
            path.display()
        );
    }
    assert_eq!(h.used_addresses(), 0, "nothing reserved");
    assert!(h.endpoints().is_empty());
    assert!(h.strait_links().is_empty());
}

#[test]
fn an_mtu_below_ipv6s_minimum_with_an_ipv6_pool_is_code_7() {
    root_or_skip!("an_mtu_below_ipv6s_minimum_with_an_ipv6_pool_is_code_7");
    let mut h = Host::new(POOLS);
    let ns = h.container_ns();
    let mut call = h.call("ADD", "mtu68", &ns);
    call.config["mtu"] = 68.into();
    let err = error(&call.run());
    assert_eq!(err["code"], 7, "{err}");
    let msg = err["msg"].as_str().unwrap_or_default();
    assert!(msg.contains("1280") && msg.contains("IPv6"), "{msg}");
    assert_eq!(h.used_addresses(), 0, "nothing reserved");
    assert!(h.strait_links().is_empty());
    // 1280 itself works.
    call.config["mtu"] = 1280.into();
    call.container_id = "mtu1280".into();
    let r = call.run().expect_ok();
    assert_eq!(r["interfaces"][1]["mtu"], 1280, "{r}");
}

#[test]
fn a_plugin_that_may_not_use_the_socket_says_permission_denied() {
    root_or_skip!("a_plugin_that_may_not_use_the_socket_says_permission_denied");
    let mut h = Host::new(POOLS);
    // The socket's directory is open to all; the socket itself is root's, 0600.
    std::fs::set_permissions(&h.agent.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = tempfile::tempdir().expect("dir");
    let as_nobody = bin.path().join("strait-as-nobody");
    std::fs::write(
        &as_nobody,
        format!(
            "#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups {}\n",
            strait_testbeds::bins::bin("strait").display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&as_nobody, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let ns = h.container_ns();
    for (command, id) in [("ADD", "perm1"), ("DEL", "perm1")] {
        let out = CniCall::of_plugin(&as_nobody, command, h.config())
            .container(id, &ns)
            .run();
        let err = error(&out);
        assert_eq!(err["code"], 5, "{command}: {err} {}", out.stderr);
        let msg = err["msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains("permission denied")
                && msg.contains(&h.agent.socket.display().to_string())
                && msg.contains("mode 0600")
                && msg.contains("uid 65534")
                && !msg.contains("not running"),
            "{command}: {msg}"
        );
    }
    let queue = h.agent.state_dir.join("pending-release");
    let queued = std::fs::read_dir(&queue).map(|d| d.count()).unwrap_or(0);
    assert_eq!(queued, 0, "a refused DEL is not queued");
    // As root the same call works.
    h.add("perm1", &ns);
}

#[test]
fn a_del_while_the_agent_is_down_finds_the_agents_queue_not_the_configs() {
    root_or_skip!("a_del_while_the_agent_is_down_finds_the_agents_queue_not_the_configs");
    let mut h = Host::new(POOLS);
    let ns = h.container_ns();
    h.add("loc1", &ns);
    // The config names a state dir no agent uses (the conflist's default while the
    // agent runs with --state-dir elsewhere).
    let elsewhere = tempfile::tempdir().expect("dir");
    let mut del = h.call("DEL", "loc1", &ns);
    del.config["stateDir"] = elsewhere.path().display().to_string().into();

    h.agent.stop();
    let out = del.run();
    assert!(
        out.ok(),
        "DEL with the agent down: {} {}",
        out.stdout,
        out.stderr
    );
    let queue = h.agent.state_dir.join("pending-release");
    let queued = std::fs::read_dir(&queue).expect("agent's queue").count();
    assert_eq!(queued, 1, "queued where the agent drains: {}", out.stderr);
    assert!(
        !elsewhere.path().join("pending-release").exists(),
        "nothing under the config's stateDir"
    );
    h.agent.restart();
    assert_eq!(
        h.used_addresses(),
        0,
        "the queued release was applied at start"
    );
    assert!(h.endpoints().is_empty());
}
