//! Pools as an operator changes them (issue 19, items 3, 4 and 9), against the real
//! `straitd` and `strait` binaries in namespaces of the test's own: pools no container
//! can use are refused at start, static addresses from such space are a configuration
//! error, a static address of one family comes with a pool address of the other, and a
//! pool is drained (disabled) before it can be removed.

use std::time::Duration;

use strait_testbeds::agent::{Agent, AgentOpts};
use strait_testbeds::host::{Host, result_ip};
use strait_testbeds::{require_root, unique_prefix, wait_until};

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

/// Waits for an agent that should refuse to start; returns its log.
fn refused(agent: &mut Agent) -> String {
    let waited = wait_until(
        "the agent to refuse to start",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || agent.exit_status().is_some(),
    );
    let log = agent.log();
    assert!(waited.is_ok(), "still running: {log}");
    let status = agent.exit_status();
    assert!(
        status.is_none_or(|s| !s.success()),
        "exit status {status:?}: {log}"
    );
    log
}

#[test]
fn pools_no_container_can_use_are_refused_at_start() {
    root_or_skip!("pools_no_container_can_use_are_refused_at_start");
    let ns = strait_testbeds::netns::Netns::new(format!("{}bp", unique_prefix()));
    for pool in ["169.254.1.0/30", "fe80::/64"] {
        let dir = tempfile::tempdir().expect("dir");
        let mut agent = Agent::spawn(&ns, dir.path(), AgentOpts::new("badpool", &[pool]));
        let log = refused(&mut agent);
        assert!(
            log.contains(&format!("pool {pool} overlaps")) && log.contains("gateway"),
            "says which pool and why: {log}"
        );
        assert!(!agent.socket.exists(), "{log}");
    }
}

#[test]
fn static_addresses_no_container_can_hold_are_a_config_error() {
    root_or_skip!("static_addresses_no_container_can_hold_are_a_config_error");
    let mut h = Host::new(&["10.78.0.0/16", "fd00:78::/48"]);
    for (i, addr) in ["127.0.0.1", "169.254.1.1", "fe80::1"].iter().enumerate() {
        let ns = h.container_ns();
        let out = h
            .call("ADD", &format!("special{i}"), &ns)
            .cni_args(&format!("IP={addr}"))
            .run();
        assert_eq!(out.error_code(), 7, "{addr}: {}", out.stdout);
        assert!(out.stdout.contains(addr), "{}", out.stdout);
        assert_eq!(h.used_addresses(), 0, "{addr} reserved something");
    }
    assert!(h.wait_no_strait_links().is_empty());
}

#[test]
fn a_static_ipv4_address_comes_with_a_pool_ipv6_address() {
    root_or_skip!("a_static_ipv4_address_comes_with_a_pool_ipv6_address");
    let mut h = Host::new(&["10.78.0.0/16", "fd00:78::/48"]);
    let ns = h.container_ns();
    let r = h
        .call("ADD", "st4", &ns)
        .cni_args("IgnoreUnknown=1;IP=10.78.5.5")
        .run()
        .expect_ok();
    assert_eq!(result_ip(&r, false).as_deref(), Some("10.78.5.5"), "{r}");
    let v6 = result_ip(&r, true).unwrap_or_else(|| panic!("no IPv6 address: {r}"));
    assert!(v6.starts_with("fd00:78:"), "{r}");
    let addrs = h
        .container(&ns)
        .ip_json(&["-6", "addr", "show", "eth0", "scope", "global"]);
    assert!(
        addrs.to_string().contains(&v6),
        "the container has it: {addrs}"
    );
    assert!(h.del("st4", &ns).ok());
    assert_eq!(h.used_addresses(), 0);
}

#[test]
fn a_pool_is_drained_before_it_is_removed() {
    root_or_skip!("a_pool_is_drained_before_it_is_removed");
    const OLD: &str = "10.78.0.0/16";
    const NEW: &str = "10.79.0.0/16";
    const V6: &str = "fd00:78::/48";
    let mut h = Host::new(&[OLD, V6]);
    let a = h.container_ns();
    let ra = h.add("c1", &a);
    let old_ip = result_ip(&ra, false).expect("v4");
    assert!(old_ip.starts_with("10.78."), "{ra}");

    // The pool removed under an allocation: refused, with the way out.
    h.agent.stop();
    h.agent.set_pools(&[NEW, V6]);
    h.agent.relaunch();
    let log = refused(&mut h.agent);
    assert!(
        log.contains(&format!("pool {OLD}, which this node served before"))
            && log.contains(&old_ip)
            && log.contains(&format!("--disabled-pool {OLD}")),
        "names the pool, the allocation and how to drain it: {log}"
    );

    // Disabled: the agent starts, keeps and releases the old addresses, and gives new
    // ones from the other pool.
    h.agent.restart_with(&["--disabled-pool", OLD]);
    let view = h.ipam();
    let old = view
        .pools
        .iter()
        .find(|p| p.cidr.to_string() == OLD)
        .expect("the disabled pool is shown");
    assert!(old.disabled && old.used == 1, "{view:?}");
    let b = h.container_ns();
    let rb = h.add("c2", &b);
    assert!(
        result_ip(&rb, false).expect("v4").starts_with("10.79."),
        "nothing new from a disabled pool: {rb}"
    );
    let c = h.container_ns();
    let out = h.call("ADD", "c3", &c).cni_args("IP=10.78.9.9").run();
    assert_eq!(out.error_code(), 103, "{}", out.stdout);
    assert!(out.stdout.contains("disabled"), "{}", out.stdout);
    assert!(h.del("c1", &a).ok(), "DEL is served from a disabled pool");
    let view = h.ipam();
    let old = view.pools.iter().find(|p| p.cidr.to_string() == OLD);
    assert_eq!(old.map(|p| p.used), Some(0), "{view:?}");

    // Drained: the pool can go, and its empty block goes with it.
    h.agent.set_pools(&[NEW, V6]);
    h.agent.restart();
    let view = h.ipam();
    assert!(
        !view
            .blocks
            .iter()
            .any(|b| b.cidr.to_string().starts_with("10.78.")),
        "{view:?}"
    );
    assert!(h.del("c2", &b).ok());
    assert_eq!(h.used_addresses(), 0);
}
