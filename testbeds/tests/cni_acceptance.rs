//! strait's CNI acceptance list (what the CNI spec and real runtimes require of a
//! plugin) against the real
//! `strait` binary and a real `straitd`, in network namespaces of the test's own.
//! Each test names the list's line it covers.

use std::collections::HashSet;

use serde_json::{Value, json};
use strait_testbeds::cni::CniCall;
use strait_testbeds::host::{Host, result_ip};
use strait_testbeds::require_root;

const POOLS: &[&str] = &["10.77.0.0/16", "fd00:77::/48"];

macro_rules! root_or_skip {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

// ----- 4. ADD results in every version's shape -----

#[test]
fn add_result_shape_for_every_version() {
    root_or_skip!("add_result_shape_for_every_version");
    let mut h = Host::new(POOLS);
    for (i, version) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
        .iter()
        .enumerate()
    {
        h.cni_version = version.to_string();
        let ns = h.container_ns();
        let id = format!("shape{i}");
        let r = h.add(&id, &ns);
        assert_eq!(r["cniVersion"], *version, "{r}");
        let ifaces = r["interfaces"].as_array().expect("interfaces");
        assert_eq!(ifaces.len(), 2, "host veth and container iface: {r}");
        assert!(ifaces[0]["name"].as_str().unwrap().starts_with("strait"));
        assert_eq!(ifaces[1]["name"], "eth0");
        assert_eq!(ifaces[1]["sandbox"], ns.display().to_string());
        let ips = r["ips"].as_array().expect("ips");
        assert_eq!(ips.len(), 2, "dual stack: {r}");
        for ip in ips {
            assert_eq!(ip["interface"], 1, "ips point at the container iface: {r}");
            let pre_1_0 = version.starts_with("0.");
            assert_eq!(
                ip.get("version").is_some(),
                pre_1_0,
                "`version` only in 0.x results: {r}"
            );
        }
        if *version == "1.1.0" {
            assert!(
                ifaces[1]["mtu"].as_u64().is_some(),
                "1.1.0 reports MTU: {r}"
            );
        }
        // The container really has what the result says.
        let c = h.container(&ns);
        let addr4 = result_ip(&r, false).unwrap();
        let shown = c.exec_ok(&["ip", "-4", "addr", "show", "eth0"]);
        assert!(shown.contains(&addr4), "{shown}");
        assert!(h.del(&id, &ns).ok());
    }
}

// ----- 5. chaining -----

#[test]
fn chain_with_portmap_bandwidth_tuning() {
    root_or_skip!("chain_with_portmap_bandwidth_tuning");
    let Some(dir) = strait_testbeds::bins::reference_plugins_dir() else {
        panic!("reference CNI plugins missing: apt-get install containernetworking-plugins");
    };
    let mut h = Host::new(POOLS);
    h.cni_version = "1.0.0".into();
    let ns = h.container_ns();
    let id = "chain1";

    // loopback before strait: strait must keep the prevResult it is given.
    let lo_cfg = json!({"cniVersion": "1.0.0", "name": h.network, "type": "loopback"});
    let lo = CniCall::of_plugin(&dir.join("loopback"), "ADD", lo_cfg)
        .container(id, &ns)
        .in_netns(h.ns.name())
        .run()
        .expect_ok();
    let mut cfg = h.config();
    cfg["prevResult"] = lo.clone();
    let r = CniCall::new("ADD", cfg)
        .container(id, &ns)
        .run()
        .expect_ok();
    let names: Vec<&str> = r["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "lo", "prevResult interfaces kept first: {r}");
    assert!(names.contains(&"eth0"));
    let eth0_idx = names.iter().position(|n| *n == "eth0").unwrap();
    for ip in r["ips"].as_array().unwrap() {
        let addr = ip["address"].as_str().unwrap();
        if addr.starts_with("127.") || addr == "::1/128" {
            assert_eq!(ip["interface"], 0, "loopback's own: {r}");
        } else {
            assert_eq!(ip["interface"], eth0_idx, "re-indexed: {r}");
        }
    }

    // strait → portmap → bandwidth → tuning, each fed the previous result. They run
    // in the agent's namespace, as on a real host: bandwidth looks for the host veth
    // there, and portmap's iptables rules stay inside the test's namespace.
    let chain = [
        json!({"type": "portmap", "capabilities": {"portMappings": true},
               "runtimeConfig": {"portMappings": [
                   {"HostPort": 18080, "ContainerPort": 80, "Protocol": "tcp"}]}}),
        json!({"type": "bandwidth", "ingressRate": 100_000_000, "ingressBurst": 1_000_000,
               "egressRate": 100_000_000, "egressBurst": 1_000_000}),
        json!({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.rp_filter": "0"}}),
    ];
    let mut prev = r.clone();
    let mut configs = vec![];
    for plugin in &chain {
        let mut cfg = plugin.clone();
        cfg["cniVersion"] = json!("1.0.0");
        cfg["name"] = json!(h.network);
        cfg["prevResult"] = prev.clone();
        let kind = cfg["type"].as_str().unwrap().to_string();
        let out = CniCall::of_plugin(&dir.join(&kind), "ADD", cfg.clone())
            .container(id, &ns)
            .in_netns(h.ns.name())
            .run();
        prev = out.expect_ok();
        configs.push((kind, cfg));
    }
    // What strait put there survives the whole chain.
    let addr = result_ip(&prev, false).unwrap();
    assert_eq!(result_ip(&r, false).unwrap(), addr);
    let c = h.container(&ns);
    assert_eq!(
        c.exec_ok(&["sysctl", "-n", "net.ipv4.conf.eth0.rp_filter"])
            .trim(),
        "0"
    );
    // The fast path steps aside within its check interval (5 s): bandwidth's ingress
    // qdisc on the veth would be bypassed by it, and portmap's DNAT needs the host's
    // conntrack for the replies.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status: strait_api::AgentStatus = h
            .agent
            .client()
            .get(strait_api::paths::STATUS)
            .expect("status");
        let fp = status.fast_path.expect("the fast path is loaded");
        let reason = fp.reason.clone().unwrap_or_default();
        if fp.endpoints == 0 && !fp.active && reason.contains("DNAT") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fast path still on the shaped veth or on beside portmap's DNAT: {fp:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }

    // DEL in reverse, each with the final result as prevResult; strait last.
    for (kind, mut cfg) in configs.into_iter().rev() {
        cfg["prevResult"] = prev.clone();
        CniCall::of_plugin(&dir.join(&kind), "DEL", cfg)
            .container(id, &ns)
            .in_netns(h.ns.name())
            .run()
            .expect_ok();
    }
    let mut cfg = h.config();
    cfg["prevResult"] = prev;
    CniCall::new("DEL", cfg)
        .container(id, &ns)
        .run()
        .expect_ok();
    assert_eq!(h.used_addresses(), 0);
    assert!(h.wait_no_strait_links().is_empty());
}

// ----- 6. duplicate ADD -----

#[test]
fn second_add_errors_and_first_stays() {
    root_or_skip!("second_add_errors_and_first_stays");
    let mut h = Host::new(POOLS);
    let ns = h.container_ns();
    let r = h.add("dup1", &ns);
    let out = h.call("ADD", "dup1", &ns).run();
    assert_eq!(out.error_code(), 102, "{}", out.stdout);
    let addr = result_ip(&r, false).unwrap();
    let c = h.container(&ns);
    assert!(
        c.exec_ok(&["ip", "addr"]).contains(&addr),
        "first attachment intact"
    );
    assert_eq!(h.endpoints().len(), 1);
    assert_eq!(h.used_addresses(), 2);
    assert!(h.del("dup1", &ns).ok());
}

// ----- 7. failures halfway leave nothing -----

#[test]
fn failed_add_leaves_nothing() {
    root_or_skip!("failed_add_leaves_nothing");
    // A /30 pool in /30 blocks: two usable addresses.
    let mut h = Host::with_opts(
        |o| o.extra = vec!["--block-prefix-v4".into(), "30".into()],
        &["10.78.0.0/30"],
    );
    let a = h.container_ns();
    let b = h.container_ns();
    let c = h.container_ns();
    h.add("ex1", &a);
    h.add("ex2", &b);
    let out = h.call("ADD", "ex3", &c).run();
    assert_eq!(out.error_code(), 101, "pool exhausted: {}", out.stdout);
    assert_eq!(h.endpoints().len(), 2);
    assert_eq!(h.used_addresses(), 2);
    assert_eq!(h.strait_links().len(), 2, "no interface for the failed ADD");

    // netns vanished before ADD: nothing reserved, nothing created.
    assert!(h.del("ex2", &b).ok());
    h.delete_container_ns(&b);
    let out = h.call("ADD", "ex4", &b).run();
    assert_eq!(out.error_code(), 104, "{}", out.stdout);
    assert_eq!(h.used_addresses(), 1);
    assert_eq!(h.wait_strait_links(1).len(), 1);
    assert!(h.del("ex1", &a).ok());
}

// ----- 8. the host's own netns -----

#[test]
fn host_netns_is_rejected() {
    root_or_skip!("host_netns_is_rejected");
    let h = Host::new(POOLS);
    let out = h.call("ADD", "hostns", &h.ns.path()).run();
    assert_eq!(out.error_code(), 104, "{}", out.stdout);
    assert_eq!(h.used_addresses(), 0);
    assert!(h.strait_links().is_empty());
}

// ----- 9. DEL in every circumstance -----

#[test]
fn del_is_idempotent_and_survives_missing_netns() {
    root_or_skip!("del_is_idempotent_and_survives_missing_netns");
    let mut h = Host::new(POOLS);
    let a = h.container_ns();
    h.add("del1", &a);
    assert!(h.del("del1", &a).ok());
    assert!(h.del("del1", &a).ok(), "second DEL succeeds");

    // netns deleted before DEL.
    let b = h.container_ns();
    h.add("del2", &b);
    h.delete_container_ns(&b);
    assert!(h.del("del2", &b).ok());

    // containerd's second DEL: empty CNI_NETNS, no prevResult.
    let c = h.container_ns();
    h.add("del3", &c);
    let mut call = h.call("DEL", "del3", &c);
    call.netns = String::new();
    call.run().expect_ok();

    assert_eq!(h.used_addresses(), 0);
    assert!(h.endpoints().is_empty());
    assert!(h.wait_no_strait_links().is_empty());
}

#[test]
fn del_after_restart_and_while_agent_is_down() {
    root_or_skip!("del_after_restart_and_while_agent_is_down");
    let mut h = Host::new(POOLS);
    let a = h.container_ns();
    let b = h.container_ns();
    let ra = h.add("rs1", &a);
    h.add("rs2", &b);

    h.agent.restart();
    // The restarted agent adopted the attachment: still there and still working.
    assert_eq!(h.endpoints().len(), 2);
    let addr = result_ip(&ra, false).unwrap();
    assert!(h.container(&a).exec_ok(&["ip", "addr"]).contains(&addr));
    assert!(h.del("rs1", &a).ok());

    // Agent down: DEL succeeds, the release is queued and applied on start.
    h.agent.stop();
    let out = h.del("rs2", &b);
    assert!(
        out.ok(),
        "DEL with the agent down: {} {}",
        out.stdout,
        out.stderr
    );
    let queued: Vec<_> = std::fs::read_dir(h.agent.state_dir.join("pending-release"))
        .expect("queue dir")
        .collect();
    assert_eq!(queued.len(), 1, "one queued release");
    h.agent.restart();
    assert_eq!(h.used_addresses(), 0, "queued release applied at start");
    assert!(h.endpoints().is_empty());
    assert!(h.wait_no_strait_links().is_empty());
    let left: Vec<_> = std::fs::read_dir(h.agent.state_dir.join("pending-release"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "queue drained");
}

#[test]
fn killed_agent_leaves_nothing_behind() {
    root_or_skip!("killed_agent_leaves_nothing_behind");
    let mut h = Host::new(POOLS);
    let a = h.container_ns();
    let b = h.container_ns();
    let ra = h.add("kill1", &a);
    h.add("kill2", &b);
    h.agent.kill();
    // Traffic does not depend on the agent.
    let addr = result_ip(&ra, false).unwrap();
    assert!(
        h.container(&b).ping(&addr),
        "containers talk with the agent dead"
    );
    h.agent.restart();
    assert!(h.container(&b).ping(&addr), "and after the restart");
    assert_eq!(h.endpoints().len(), 2, "endpoints adopted");
    assert!(h.del("kill1", &a).ok());
    assert!(h.del("kill2", &b).ok());
    assert_eq!(h.used_addresses(), 0);
    assert!(h.wait_no_strait_links().is_empty());
}

// ----- 10. CHECK -----

#[test]
fn check_detects_changes_behind_its_back() {
    root_or_skip!("check_detects_changes_behind_its_back");
    let mut h = Host::new(POOLS);
    h.cni_version = "0.3.1".into();
    let ns = h.container_ns();
    let r = h.add("chk0", &ns);
    let out = h.call("CHECK", "chk0", &ns).run();
    assert_eq!(out.error_code(), 1, "CHECK before 0.4.0: {}", out.stdout);
    assert!(h.del("chk0", &ns).ok());
    drop(r);

    h.cni_version = "1.0.0".into();
    let check = |h: &Host, id: &str, ns: &std::path::Path, prev: &Value| {
        let mut cfg = h.config();
        cfg["prevResult"] = prev.clone();
        CniCall::new("CHECK", cfg).container(id, ns).run()
    };

    // Healthy: no output.
    let ns = h.container_ns();
    let r = h.add("chk1", &ns);
    let out = check(&h, "chk1", &ns, &r);
    assert!(out.ok() && out.stdout.trim().is_empty(), "{}", out.stdout);

    // Address removed.
    let addr4 = result_ip(&r, false).unwrap();
    h.container(&ns)
        .exec_ok(&["ip", "addr", "del", &format!("{addr4}/32"), "dev", "eth0"]);
    assert!(!check(&h, "chk1", &ns, &r).ok(), "missing address detected");

    // Host route removed.
    let ns2 = h.container_ns();
    let r2 = h.add("chk2", &ns2);
    let a2 = result_ip(&r2, false).unwrap();
    h.ns.exec_ok(&["ip", "route", "del", &format!("{a2}/32")]);
    assert!(!check(&h, "chk2", &ns2, &r2).ok(), "missing route detected");

    // veth removed.
    let ns3 = h.container_ns();
    let r3 = h.add("chk3", &ns3);
    let veth = r3["interfaces"][0]["name"].as_str().unwrap().to_string();
    h.ns.exec_ok(&["ip", "link", "del", &veth]);
    assert!(!check(&h, "chk3", &ns3, &r3).ok(), "missing veth detected");

    // Unknown attachment.
    let ns4 = h.container_ns();
    assert!(!check(&h, "never-added", &ns4, &r3).ok());

    for (id, ns) in [("chk1", &ns), ("chk2", &ns2), ("chk3", &ns3)] {
        assert!(h.del(id, ns).ok());
    }
    assert_eq!(h.used_addresses(), 0);
}

// ----- 11. STATUS -----

#[test]
fn status_reports_readiness() {
    root_or_skip!("status_reports_readiness");
    let mut h = Host::with_opts(
        |o| o.extra = vec!["--block-prefix-v4".into(), "30".into()],
        &["10.79.0.0/30"],
    );
    let ns = h.container_ns();
    h.cni_version = "1.0.0".into();
    let out = h.call("STATUS", "", &ns).run();
    assert_eq!(out.error_code(), 1, "STATUS before 1.1.0");

    h.cni_version = "1.1.0".into();
    let out = h.call("STATUS", "", &ns).run();
    assert!(out.ok(), "ready: {} {}", out.stdout, out.stderr);

    // Degraded data plane: forwarding off in the host namespace → 51.
    h.ns.exec_ok(&["sysctl", "-w", "net.ipv4.ip_forward=0"]);
    let out = h.call("STATUS", "", &ns).run();
    assert_eq!(out.error_code(), 51, "{}", out.stdout);
    h.ns.exec_ok(&["sysctl", "-w", "net.ipv4.ip_forward=1"]);

    // Pool exhausted → 50. A /30 pool: how many addresses it gives is IPAM's
    // business; fill it until ADD fails.
    let mut added = vec![];
    loop {
        let c = h.container_ns();
        let id = format!("st{}", added.len());
        let out = h.call("ADD", &id, &c).run();
        if !out.ok() {
            assert_eq!(out.error_code(), 101);
            break;
        }
        added.push((id, c));
        assert!(added.len() < 10, "a /30 pool cannot hold 10 addresses");
    }
    let out = h.call("STATUS", "", &ns).run();
    assert_eq!(out.error_code(), 50, "exhausted: {}", out.stdout);
    for (id, c) in &added {
        assert!(h.del(id, c).ok());
    }

    // Agent down → 50.
    h.agent.stop();
    let out = h.call("STATUS", "", &ns).run();
    assert_eq!(out.error_code(), 50, "agent down: {}", out.stdout);
}

// ----- 12. GC -----

#[test]
fn gc_releases_what_the_runtime_no_longer_knows() {
    root_or_skip!("gc_releases_what_the_runtime_no_longer_knows");
    let mut h = Host::new(POOLS);
    let a = h.container_ns();
    let b = h.container_ns();
    let c = h.container_ns();
    h.add("gc-a", &a);
    h.add("gc-b", &b);
    h.add("gc-c", &c);

    let gc = |h: &Host, key: &str, valid: &[&str]| {
        let mut cfg = h.config();
        cfg[key] = json!(
            valid
                .iter()
                .map(|id| json!({"containerID": id, "ifname": "eth0"}))
                .collect::<Vec<_>>()
        );
        CniCall::new("GC", cfg).run()
    };
    let out = gc(&h, "cni.dev/valid-attachments", &["gc-a", "gc-b", "gc-c"]);
    assert!(
        out.ok() && out.stdout.trim().is_empty(),
        "nothing stale: {}",
        out.stdout
    );
    assert_eq!(h.endpoints().len(), 3);

    let out = gc(&h, "cni.dev/valid-attachments", &["gc-a"]);
    assert!(out.ok(), "{} {}", out.stdout, out.stderr);
    let left: HashSet<String> = h.endpoints().into_iter().map(|e| e.container_id).collect();
    assert_eq!(left, HashSet::from(["gc-a".to_string()]));

    // The older key.
    let out = gc(&h, "cni.dev/attachments", &[]);
    assert!(out.ok(), "{} {}", out.stdout, out.stderr);
    assert!(h.endpoints().is_empty());
    assert_eq!(h.used_addresses(), 0);
    assert!(h.wait_no_strait_links().is_empty());
}

// ----- 14. while the agent starts -----

#[test]
fn agent_starting_answers_try_again_later() {
    root_or_skip!("agent_starting_answers_try_again_later");
    let mut h = Host::new(POOLS);
    let a = h.container_ns();
    let b = h.container_ns();
    h.add("start-a", &a);
    h.agent.stop();

    // Hold the store's file lock, as an agent still shutting down would: the new
    // agent serves its socket but cannot open the store.
    let store = std::fs::File::open(h.agent.state_dir.join("store.redb")).expect("store file");
    store.lock().expect("lock the store");
    h.agent.relaunch();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !h.agent.socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "socket never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = h.call("ADD", "start-b", &b).run();
    assert_eq!(out.error_code(), 11, "ADD while starting: {}", out.stdout);
    let out = h.call("STATUS", "", &b).run();
    assert_eq!(
        out.error_code(),
        50,
        "STATUS while starting: {}",
        out.stdout
    );
    // DEL succeeds at once: the agent queues it and applies it once started.
    let out = h.del("start-a", &a);
    assert!(
        out.ok(),
        "DEL while starting: {} {}",
        out.stdout,
        out.stderr
    );

    store.unlock().expect("unlock");
    drop(store);
    h.agent.wait_ready(std::time::Duration::from_secs(30));
    assert_eq!(h.used_addresses(), 0, "queued DEL applied after start");
    assert!(h.endpoints().is_empty());
    h.add("start-b", &b);
    assert!(h.del("start-b", &b).ok());
}

// ----- 15. static IP and MAC the ways runtimes send them -----

#[test]
fn static_ip_and_mac_from_runtimes() {
    root_or_skip!("static_ip_and_mac_from_runtimes");
    let mut h = Host::new(POOLS);

    // Podman: CNI_ARGS IP= and MAC=.
    let a = h.container_ns();
    let r = h
        .call("ADD", "st-podman", &a)
        .cni_args("IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.77.3.7;MAC=02:42:0a:4d:03:07")
        .run()
        .expect_ok();
    assert_eq!(result_ip(&r, false).unwrap(), "10.77.3.7");
    let link = h.container(&a).ip_json(&["link", "show", "eth0"]);
    assert_eq!(link[0]["address"], "02:42:0a:4d:03:07");

    // args.cni.ips
    let b = h.container_ns();
    let mut cfg = h.config();
    cfg["args"] = json!({"cni": {"ips": ["10.77.3.8"]}});
    let r = CniCall::new("ADD", cfg)
        .container("st-args", &b)
        .run()
        .expect_ok();
    assert_eq!(result_ip(&r, false).unwrap(), "10.77.3.8");

    // runtimeConfig ips (with a prefix length, as some runtimes send)
    let c = h.container_ns();
    let mut cfg = h.config();
    cfg["capabilities"] = json!({"ips": true});
    cfg["runtimeConfig"] = json!({"ips": ["10.77.3.9/16", "fd00:77::99"]});
    let r = CniCall::new("ADD", cfg)
        .container("st-rc", &c)
        .run()
        .expect_ok();
    assert_eq!(result_ip(&r, false).unwrap(), "10.77.3.9");
    assert_eq!(result_ip(&r, true).unwrap(), "fd00:77::99");

    // A taken static address is refused and reserves nothing.
    let d = h.container_ns();
    let before = h.used_addresses();
    let out = h.call("ADD", "st-taken", &d).cni_args("IP=10.77.3.7").run();
    assert_eq!(out.error_code(), 103, "{}", out.stdout);
    assert_eq!(h.used_addresses(), before);

    for (id, ns) in [("st-podman", &a), ("st-args", &b), ("st-rc", &c)] {
        assert!(h.del(id, ns).ok());
    }
    assert_eq!(h.used_addresses(), 0);
}

// ----- bad input to the agent's API changes nothing -----

#[test]
fn malformed_api_requests_change_nothing() {
    root_or_skip!("malformed_api_requests_change_nothing");
    let mut h = Host::new(POOLS);
    let ns = h.container_ns();
    h.add("keep", &ns);
    let client = h.agent.client();
    let netns = ns.display().to_string();
    let bodies: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"{}".to_vec(),
        br#"{"network": 5}"#.to_vec(),
        serde_json::to_vec(&json!({"network": "../../etc", "container_id": "c",
            "ifname": "eth0", "netns": netns}))
        .unwrap(),
        serde_json::to_vec(&json!({"network": "n", "container_id": "c/../../x",
            "ifname": "eth0", "netns": netns}))
        .unwrap(),
        serde_json::to_vec(&json!({"network": "n", "container_id": "c",
            "ifname": "eth0/../x", "netns": netns}))
        .unwrap(),
        serde_json::to_vec(&json!({"network": "n", "container_id": "c",
            "ifname": "eth0", "netns": netns, "ips": ["300.1.1.1"]}))
        .unwrap(),
        serde_json::to_vec(&json!({"network": "n", "container_id": "c",
            "ifname": "eth0", "netns": netns, "mac": "ff:ff:ff:ff:ff:ff"}))
        .unwrap(),
    ];
    for (i, body) in bodies.iter().enumerate() {
        // The last two are well-formed DELs, CHECKs and GCs (no such attachment): only
        // ADD must refuse them.
        let paths: &[&str] = if i >= 6 {
            &["/v1/cni/add"]
        } else {
            &["/v1/cni/add", "/v1/cni/del", "/v1/cni/check", "/v1/cni/gc"]
        };
        for path in paths {
            match client.request("POST", path, Some(body)) {
                Err(strait_api::ClientError::Api(e)) => assert!(
                    [4, 6, 7, 100, 104, 105].contains(&e.code),
                    "body {i} to {path}: unexpected code {}: {}",
                    e.code,
                    e.message
                ),
                other => panic!("body {i} to {path} accepted: {other:?}"),
            }
        }
    }
    assert_eq!(
        h.endpoints().len(),
        1,
        "the one real attachment is untouched"
    );
    assert_eq!(h.used_addresses(), 2);
    assert_eq!(h.strait_links().len(), 1);
    assert!(h.del("keep", &ns).ok());
}

// ----- connectivity: what all of it is for -----

#[test]
fn two_containers_ping_and_talk_tcp() {
    root_or_skip!("two_containers_ping_and_talk_tcp");
    let mut h = Host::new(POOLS);
    let a = h.container_ns();
    let b = h.container_ns();
    let ra = h.add("ping-a", &a);
    let _rb = h.add("ping-b", &b);
    let a4 = result_ip(&ra, false).unwrap();
    let a6 = result_ip(&ra, true).unwrap();
    let cb = h.container(&b);
    assert!(cb.ping(&a4), "IPv4 ping");
    assert!(
        cb.exec(&["ping", "-6", "-c1", "-W1", &a6]).status.success(),
        "IPv6 ping"
    );
    // TCP: a listener in a, a client in b.
    let ca = h.container(&a);
    let server = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ca.name(),
            "nc",
            "-l",
            "-p",
            "7777",
            "-q",
            "0",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("nc -l");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = cb.exec(&["sh", "-c", &format!("echo hello | nc -q 1 -w 2 {a4} 7777")]);
    assert!(out.status.success(), "nc client: {out:?}");
    let got = server.wait_with_output().expect("server output");
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "hello");
    assert!(h.del("ping-a", &a).ok());
    assert!(h.del("ping-b", &b).ok());
}

#[test]
fn second_interface_in_one_container() {
    root_or_skip!("second_interface_in_one_container");
    let mut h = Host::new(POOLS);
    let a = h.container_ns();
    let b = h.container_ns();
    let r0 = h.add("multi", &a);
    let r1 = h.call("ADD", "multi", &a).ifname("eth1").run().expect_ok();
    let (ip0, ip1) = (
        result_ip(&r0, false).unwrap(),
        result_ip(&r1, false).unwrap(),
    );
    assert_ne!(ip0, ip1);
    h.add("peer", &b);
    let cb = h.container(&b);
    assert!(cb.ping(&ip0), "eth0 reachable");
    assert!(cb.ping(&ip1), "eth1 reachable");
    // Removing eth1 leaves eth0 working.
    assert!(h.call("DEL", "multi", &a).ifname("eth1").run().ok());
    assert!(cb.ping(&ip0), "eth0 still reachable");
    assert!(h.del("multi", &a).ok());
    assert!(h.del("peer", &b).ok());
    assert_eq!(h.used_addresses(), 0);
}

// ----- 13. concurrency -----

#[test]
fn two_hundred_parallel_adds_then_dels() {
    root_or_skip!("two_hundred_parallel_adds_then_dels");
    const N: usize = 200;
    let mut h = Host::new(POOLS);
    let namespaces: Vec<_> = (0..N).map(|_| h.container_ns()).collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let h = &h;
                s.spawn(move || h.add(&format!("par{i}"), ns))
            })
            .collect();
        handles
            .into_iter()
            .map(|t| t.join().expect("ADD thread"))
            .collect()
    });
    let mut seen = HashSet::new();
    for r in &results {
        for v6 in [false, true] {
            let ip = result_ip(r, v6).expect("address");
            assert!(seen.insert(ip.clone()), "duplicate address {ip}");
        }
    }
    assert_eq!(h.endpoints().len(), N);
    assert_eq!(h.used_addresses(), 2 * N as u128);
    assert_eq!(h.strait_links().len(), N);

    std::thread::scope(|s| {
        for (i, ns) in namespaces.iter().enumerate() {
            let h = &h;
            s.spawn(move || {
                let out = h.del(&format!("par{i}"), ns);
                assert!(out.ok(), "DEL par{i}: {}", out.stdout);
            });
        }
    });
    assert_eq!(h.used_addresses(), 0, "no leaked reservation");
    assert!(h.endpoints().is_empty());
    let left = h.wait_no_strait_links();
    assert!(left.is_empty(), "leftover interfaces: {left:?}");
}

// ----- the agent's state is root's alone -----

#[test]
fn state_dir_and_store_are_root_only_also_when_found_loose() {
    root_or_skip!("state_dir_and_store_are_root_only_also_when_found_loose");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let mut h = Host::new(POOLS);
    let state = h.agent.state_dir.clone();
    let store = state.join("store.redb");
    let queue = state.join("pending-release");
    assert_eq!(mode(&state), 0o700, "a new state dir");
    assert_eq!(mode(&queue), 0o700, "a new DEL queue dir");
    assert_eq!(mode(&store), 0o600, "a new store");

    // An older agent (or an operator) left them readable by everyone.
    h.agent.stop();
    for (p, m) in [(&state, 0o755), (&queue, 0o755), (&store, 0o644)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
    }
    h.agent.restart();
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&queue), 0o700);
    assert_eq!(mode(&store), 0o600);
    let log = h.agent.log();
    assert!(
        log.contains("tightened the mode of a state directory")
            && log.contains("tightened the mode of the store"),
        "the agent says what it changed: {log}"
    );
    // And it still serves.
    let ns = h.container_ns();
    let r = h.add("private1", &ns);
    assert_eq!(r["ips"].as_array().map(Vec::len), Some(2), "{r}");
}

#[test]
fn an_agent_that_fails_to_start_removes_its_socket() {
    root_or_skip!("an_agent_that_fails_to_start_removes_its_socket");
    use strait_testbeds::agent::{Agent, AgentOpts};
    // --fabric vxlan in a namespace with no address: no underlay, start-up fails after
    // the socket is bound.
    let ns = strait_testbeds::netns::Netns::new(format!("{}nu", strait_testbeds::unique_prefix()));
    let dir = tempfile::tempdir().expect("dir");
    let mut opts = AgentOpts::new("nounderlay", POOLS);
    opts.extra = vec!["--fabric".into(), "vxlan".into()];
    let mut agent = Agent::spawn(&ns, dir.path(), opts);
    let status = strait_testbeds::wait_until(
        "the agent to give up",
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(50),
        || agent.exit_status().is_some(),
    )
    .map(|_| agent.exit_status());
    let log = agent.log();
    assert!(status.is_ok(), "still running: {log}");
    assert!(log.contains("underlay"), "says why: {log}");
    assert!(
        !agent.socket.exists(),
        "no socket left behind for plugins to mistake for a live agent: {log}"
    );
}
