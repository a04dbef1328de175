//! Real runtimes drive `strait`: Podman 4.3 (CNI backend) and containerd's CRI plugin
//! exec the plugin, which forwards to a `straitd` running in the test's own "host"
//! namespace. The runtimes create the containers' namespaces on the real host; the
//! host side of each veth lands in the agent's namespace, so the real host's network
//! is not touched. Everything is private (config, storage, CNI dirs; see
//! `strait_testbeds::runtimes`) and removed on exit and on panic.
//!
//! Covered:
//! * Podman: two containers get addresses from the agent's dual-stack pool, ping each
//!   other over IPv4 and IPv6 and talk TCP; the agent lists both endpoints (with the
//!   container IDs, netns paths and `K8S_POD_NAME` Podman sends); `podman rm -f`
//!   leaves no address, endpoint or `strait*` link.
//! * Podman: `--ip` (sent as `CNI_ARGS IP=`) is honoured.
//! * Podman: `-p 127.0.0.1:PORT:7777` with `"capabilities": {"portMappings": true}` on
//!   strait's entry and no `portmap`: the agent records the host port (its
//!   pseudo-service `hostport/…` in `netctl service list`) and a process of the
//!   agent's host reaches the container at 127.0.0.1:PORT through its socket
//!   balancer; `podman rm` frees it. (Podman reserves the port by binding it on the
//!   real host, so the host IP is one every host has.)
//! * Podman: `podman network connect` / `disconnect` add and remove a second
//!   interface (`CNI_IFNAME=eth1`). Ignored for now: straitd fails the second ADD.
//! * containerd CRI: two pod sandboxes get addresses and ping each other; their endpoints'
//!   pod and namespace are `K8S_POD_NAME`/`K8S_POD_NAMESPACE`; StopPodSandbox then RemovePodSandbox
//!   (the second DEL without a netns) both succeed and leave nothing behind.

use std::time::{Duration, Instant};

use serde_json::Value;
use strait_api::Endpoint;
use strait_testbeds::host::Host;
use strait_testbeds::require_root;
use strait_testbeds::runtimes::{Containerd, Podman, conflist, pod_ips, pod_netns, require_tools};

/// Dual stack, so every attachment holds two addresses.
const POOLS: &[&str] = &["10.81.0.0/16", "fd00:81::/48"];

macro_rules! privileged_with {
    ($name:expr, $tools:expr) => {
        if !require_root($name) || !require_tools($name, $tools) {
            return;
        }
    };
}

const PODMAN_TOOLS: &[&str] = &["podman", "runc", "conmon", "tar", "/usr/lib/cni/portmap"];
const CONTAINERD_TOOLS: &[&str] = &[
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "nsenter",
    "tar",
    "sha256sum",
    "/usr/lib/cni/portmap",
    "/usr/lib/cni/loopback",
];

/// Poll `f` until it is true or `timeout` passes: IPv6 DAD, a listener not yet bound.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn in_pool(addr: &str) -> bool {
    let ip: std::net::IpAddr = addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}"));
    POOLS
        .iter()
        .any(|p| p.parse::<ipnet::IpNet>().unwrap().contains(&ip))
}

fn endpoint_of<'a>(eps: &'a [Endpoint], container_id: &str, ifname: &str) -> &'a Endpoint {
    eps.iter()
        .find(|e| e.container_id == container_id && e.ifname == ifname)
        .unwrap_or_else(|| panic!("agent has no endpoint {container_id}/{ifname}: {eps:#?}"))
}

/// Equal paths, `/var/run` and `/run` being the same directory.
fn same_path(a: &str, b: &str) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn endpoint_addrs(ep: &Endpoint) -> Vec<String> {
    ep.ips.iter().map(|n| n.addr().to_string()).collect()
}

/// The agent's view once every attachment is gone: nothing allocated, no endpoint,
/// no `strait*` link in its namespace.
fn assert_agent_clean(h: &Host, what: &str) {
    assert_eq!(h.used_addresses(), 0, "{what}: addresses still allocated");
    let eps = h.endpoints();
    assert!(eps.is_empty(), "{what}: endpoints left: {eps:#?}");
    let links = h.wait_no_strait_links();
    assert!(links.is_empty(), "{what}: links left: {links:?}");
}

// ----- Podman -----

/// What `podman inspect` says about one container on one network.
struct PodmanAttachment {
    id: String,
    netns: String,
    v4: String,
    v6: String,
}

fn podman_attachment(p: &Podman, name: &str, network: &str) -> PodmanAttachment {
    let c = p.inspect(name);
    let net = &c["NetworkSettings"]["Networks"][network];
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    PodmanAttachment {
        id: s(&c["Id"]),
        netns: s(&c["NetworkSettings"]["SandboxKey"]),
        v4: s(&net["IPAddress"]),
        v6: s(&net["GlobalIPv6Address"]),
    }
}

/// Start a container on `network` and fail with Podman's and the agent's words if it
/// does not come up.
fn podman_start(p: &Podman, h: &Host, name: &str, network: &str, extra: &[&str]) {
    // busybox ping needs a raw socket; Podman's default capabilities leave NET_RAW out.
    let mut opts = vec!["--network", network, "--cap-add", "NET_RAW"];
    opts.extend_from_slice(extra);
    let out = p.run_container(name, &opts);
    assert!(
        out.status.success(),
        "podman run {name} failed: {}{}\n----- straitd log (tail) -----\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        h.agent
            .log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn podman_ping(p: &Podman, from: &str, to: &str) -> bool {
    let family = if to.contains(':') { "-6" } else { "-4" };
    eventually(Duration::from_secs(5), || {
        p.run(&["exec", from, "ping", family, "-c1", "-W1", to])
            .status
            .success()
    })
}

/// TCP from `client` to `server_addr` (a container of `server`): busybox nc listens
/// in `server` and writes what it receives to a file; `client` sends one line.
fn podman_tcp(p: &Podman, server: &str, client: &str, server_addr: &str) {
    // The listener's stdin stays open (sleep): with /dev/null busybox nc half-closes
    // right after accept, and a client whose piped input is not there yet then sees
    // EOF and exits 0 having sent nothing (seen under load).
    p.ok(&[
        "exec",
        "-d",
        server,
        "sh",
        "-c",
        "sleep 60 | nc -l -p 7777 > /tmp/got",
    ]);
    // Send only once the listener is up: a refused connect would just be retried,
    // but a clear "never listened" beats a timeout.
    let listening = eventually(Duration::from_secs(10), || {
        p.run(&["exec", server, "netstat", "-ltn"])
            .stdout
            .windows(5)
            .any(|w| w == b":7777")
    });
    assert!(listening, "nc never listened in {server}");
    let mut attempts = vec![];
    let sent = eventually(Duration::from_secs(10), || {
        let out = p.run(&[
            "exec",
            client,
            "sh",
            "-c",
            &format!("echo hello-strait | nc -w 2 {server_addr} 7777"),
        ]);
        attempts.push(format!(
            "{}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
        out.status.success()
    });
    assert!(
        sent,
        "nc {client} → {server_addr}:7777 failed: {attempts:?}"
    );
    let mut last = String::new();
    let got = eventually(Duration::from_secs(10), || {
        let out = p.run(&["exec", server, "cat", "/tmp/got"]);
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        last.trim() == "hello-strait"
    });
    assert!(
        got,
        "{server} did not receive the TCP payload: got {last:?}; client attempts {attempts:?}"
    );
}

#[test]
fn podman_two_containers_dual_stack_ping_tcp_and_cleanup() {
    privileged_with!(
        "podman_two_containers_dual_stack_ping_tcp_and_cleanup",
        PODMAN_TOOLS
    );
    let t0 = Instant::now();
    let h = Host::new(POOLS);
    let p = Podman::new(&h.prefix);
    let net = format!("{}net", h.prefix);
    p.add_network(&conflist(&h, &net));
    let (a, b) = (format!("{}-a", h.prefix), format!("{}-b", h.prefix));
    podman_start(&p, &h, &a, &net, &[]);
    podman_start(&p, &h, &b, &net, &[]);

    let ca = podman_attachment(&p, &a, &net);
    let cb = podman_attachment(&p, &b, &net);
    for (name, c) in [(&a, &ca), (&b, &cb)] {
        assert!(in_pool(&c.v4), "{name}: IPv4 {:?} not from the pool", c.v4);
        assert!(in_pool(&c.v6), "{name}: IPv6 {:?} not from the pool", c.v6);
        // The container itself has them, not just Podman's record.
        let shown = p.ok(&["exec", name, "ip", "addr", "show", "eth0"]);
        assert!(shown.contains(&c.v4) && shown.contains(&c.v6), "{shown}");
    }
    assert_ne!(ca.v4, cb.v4);

    // The agent knows both, as Podman attached them.
    let eps = h.endpoints();
    assert_eq!(eps.len(), 2, "{eps:#?}");
    assert_eq!(h.used_addresses(), 4);
    for (name, c) in [(&a, &ca), (&b, &cb)] {
        let ep = endpoint_of(&eps, &c.id, "eth0");
        let addrs = endpoint_addrs(ep);
        assert!(addrs.contains(&c.v4) && addrs.contains(&c.v6), "{ep:#?}");
        assert!(same_path(&ep.netns, &c.netns), "netns Podman made: {ep:#?}");
        assert_eq!(ep.network, net);
        assert_eq!(
            ep.pod.as_ref(),
            Some(name),
            "Podman's CNI_ARGS K8S_POD_NAME: {ep:#?}"
        );
        assert!(h.ns.links().contains(&ep.host_ifname), "{ep:#?}");
    }

    // Connectivity both ways, both families.
    assert!(podman_ping(&p, &a, &cb.v4), "IPv4 ping a → b");
    assert!(podman_ping(&p, &b, &ca.v4), "IPv4 ping b → a");
    assert!(podman_ping(&p, &a, &cb.v6), "IPv6 ping a → b");
    assert!(podman_ping(&p, &b, &ca.v6), "IPv6 ping b → a");

    // TCP with busybox nc: a listens and writes what it gets to a file; b sends.
    podman_tcp(&p, &a, &b, &ca.v4);

    // Removal: Podman's DELs release everything and its namespaces go.
    let rm = p.rm(&[&a, &b]);
    assert!(rm.status.success(), "podman rm: {rm:?}");
    assert_agent_clean(&h, "after podman rm -f");
    for c in [&ca, &cb] {
        assert!(
            !std::path::Path::new(&c.netns).exists(),
            "netns {} left",
            c.netns
        );
    }
    assert!(
        p.ps_names().is_empty(),
        "containers left: {:?}",
        p.ps_names()
    );
    eprintln!("podman two containers: {:?}", t0.elapsed());
}

/// One TCP connect from the agent's host namespace, its process in the agent's
/// service cgroup, sending a line.
const SEND_LINE: &str = r#"
import json, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
s.sendall(b"hello-strait\n"); s.close()
print(json.dumps({"sent": True}))
"#;

#[test]
fn podman_publishes_a_port_strait_serves() {
    privileged_with!("podman_publishes_a_port_strait_serves", PODMAN_TOOLS);
    let h = Host::new(POOLS);
    let p = Podman::new(&h.prefix);
    let net = format!("{}net", h.prefix);
    // strait alone, with the capability: Podman hands it the -p mappings, and no
    // portmap writes rules in the real host's iptables.
    let mut list = conflist(&h, &net);
    list["plugins"] = serde_json::json!([{
        "type": "strait",
        "socket": h.agent.socket,
        "stateDir": h.agent.state_dir,
        "capabilities": {"portMappings": true},
    }]);
    p.add_network(&list);
    // Podman binds the host port on the real host to reserve it: loopback's address
    // is the host IP every host has. The test's host namespace gets an address of
    // its own too, as a real host has, for the connect's source (one from 127.0.0.1
    // could not leave the host for the container).
    const HOST_IP: &str = "127.0.0.1";
    h.ns.exec_ok(&["ip", "addr", "add", "192.0.2.10/32", "dev", "lo"]);
    let web = format!("{}-web", h.prefix);
    podman_start(
        &p,
        &h,
        &web,
        &net,
        &["-p", &format!("{HOST_IP}:18080:7777")],
    );

    let eps = h.endpoints();
    let ep = endpoint_of(&eps, &podman_attachment(&p, &web, &net).id, "eth0");
    assert_eq!(
        ep.port_mappings,
        vec![strait_api::HostPort {
            host_port: 18080,
            container_port: 7777,
            protocol: strait_api::HostPortProtocol::Tcp,
            host_ip: Some(HOST_IP.parse().unwrap()),
        }],
        "{ep:#?}"
    );
    // Its pseudo-service, every frontend installed, as `netctl service list` shows.
    let services = || -> Vec<strait_api::services::ServiceView> {
        h.agent
            .client()
            .get(strait_api::paths::SERVICES)
            .expect("GET services")
    };
    let name = format!("hostport/node1/{}", ep.id);
    let shown = eventually(Duration::from_secs(30), || {
        services().iter().any(|s| {
            s.name == name
                && s.kind == "HostPort"
                && !s.frontends.is_empty()
                && s.frontends.iter().all(|f| f.installed)
        })
    });
    assert!(shown, "{name}: {:#?}", services());

    p.ok(&[
        "exec",
        "-d",
        &web,
        "sh",
        "-c",
        "sleep 60 | nc -l -p 7777 > /tmp/got",
    ]);
    let listening = eventually(Duration::from_secs(10), || {
        p.run(&["exec", &web, "netstat", "-ltn"])
            .stdout
            .windows(5)
            .any(|w| w == b":7777")
    });
    assert!(listening, "nc never listened in {web}");
    strait_testbeds::services::python_in_cgroup(
        &h.agent.service_cgroup(),
        h.ns.name(),
        SEND_LINE,
        &[HOST_IP, "18080"],
    );
    let mut last = String::new();
    let got = eventually(Duration::from_secs(10), || {
        last =
            String::from_utf8_lossy(&p.run(&["exec", &web, "cat", "/tmp/got"]).stdout).into_owned();
        last.trim() == "hello-strait"
    });
    assert!(
        got,
        "{web} did not get the line sent to {HOST_IP}:18080: {last:?}"
    );

    let rm = p.rm(&[&web]);
    assert!(rm.status.success(), "podman rm: {rm:?}");
    assert_agent_clean(&h, "after podman rm -f");
    let left = services();
    assert!(
        left.iter().all(|s| s.kind != "HostPort"),
        "the host port went with it: {left:#?}"
    );
}

#[test]
fn podman_static_ip() {
    privileged_with!("podman_static_ip", PODMAN_TOOLS);
    let t0 = Instant::now();
    let h = Host::new(POOLS);
    let p = Podman::new(&h.prefix);
    let net = format!("{}net", h.prefix);
    p.add_network(&conflist(&h, &net));
    let (s, o) = (format!("{}-st", h.prefix), format!("{}-o", h.prefix));

    // --ip: Podman sends CNI_ARGS IP=…; the agent must hand out exactly that.
    const STATIC: &str = "10.81.3.7";
    podman_start(&p, &h, &s, &net, &["--ip", STATIC]);
    podman_start(&p, &h, &o, &net, &[]);
    let cs = podman_attachment(&p, &s, &net);
    assert_eq!(cs.v4, STATIC, "podman inspect");
    let shown = p.ok(&["exec", &s, "ip", "-4", "addr", "show", "eth0"]);
    assert!(shown.contains(&format!("{STATIC}/")), "{shown}");
    let eps = h.endpoints();
    let ep = endpoint_of(&eps, &cs.id, "eth0");
    assert!(endpoint_addrs(ep).contains(&STATIC.to_string()), "{ep:#?}");
    assert!(podman_ping(&p, &o, STATIC), "ping the static address");

    let rm = p.rm(&[&s, &o]);
    assert!(rm.status.success(), "podman rm: {rm:?}");
    assert_agent_clean(&h, "after podman rm -f");
    eprintln!("podman static ip: {:?}", t0.elapsed());
}

#[test]
fn podman_network_connect_second_interface() {
    privileged_with!("podman_network_connect_second_interface", PODMAN_TOOLS);
    let t0 = Instant::now();
    let h = Host::new(POOLS);
    let p = Podman::new(&h.prefix);
    let net = format!("{}net", h.prefix);
    let net2 = format!("{}net2", h.prefix);
    p.add_network(&conflist(&h, &net));
    p.add_network(&conflist(&h, &net2));
    let (a, b) = (format!("{}-a", h.prefix), format!("{}-b", h.prefix));
    podman_start(&p, &h, &a, &net, &[]);
    podman_start(&p, &h, &b, &net, &[]);
    let ca = podman_attachment(&p, &a, &net);

    // network connect: ADD with CNI_IFNAME=eth1 for the second network.
    let before = h.used_addresses();
    let out = p.run(&["network", "connect", &net2, &a]);
    assert!(
        out.status.success(),
        "podman network connect: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        h.agent.log()
    );
    let eps = h.endpoints();
    let eth1 = endpoint_of(&eps, &ca.id, "eth1");
    assert_eq!(eth1.network, net2);
    let eth1_v4 = endpoint_addrs(eth1)
        .into_iter()
        .find(|a| !a.contains(':'))
        .expect("eth1 IPv4");
    assert!(in_pool(&eth1_v4));
    let shown = p.ok(&["exec", &a, "ip", "addr", "show", "eth1"]);
    assert!(shown.contains(&eth1_v4), "{shown}");
    assert_eq!(
        podman_attachment(&p, &a, &net2).v4,
        eth1_v4,
        "podman inspect agrees"
    );
    assert!(h.used_addresses() > before);
    // eth0 keeps its address and its connectivity; eth1 is reachable too.
    assert!(endpoint_addrs(endpoint_of(&eps, &ca.id, "eth0")).contains(&ca.v4));
    assert!(podman_ping(&p, &b, &ca.v4), "ping a's eth0 after connect");
    assert!(podman_ping(&p, &b, &eth1_v4), "ping a's eth1");

    // disconnect: DEL with CNI_IFNAME=eth1 takes eth1, and only eth1, away.
    let out = p.run(&["network", "disconnect", &net2, &a]);
    assert!(
        out.status.success(),
        "podman network disconnect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(h.used_addresses(), before);
    let eps = h.endpoints();
    assert!(
        !eps.iter()
            .any(|e| e.container_id == ca.id && e.ifname == "eth1"),
        "{eps:#?}"
    );
    endpoint_of(&eps, &ca.id, "eth0");
    let links = p.ok(&["exec", &a, "ip", "-o", "link"]);
    assert!(!links.contains("eth1"), "{links}");
    assert!(
        podman_ping(&p, &b, &ca.v4),
        "eth0 still works after disconnect"
    );

    let rm = p.rm(&[&a, &b]);
    assert!(rm.status.success(), "podman rm: {rm:?}");
    assert_agent_clean(&h, "after podman rm -f");
    eprintln!("podman network connect/disconnect: {:?}", t0.elapsed());
}

// ----- containerd (CRI) -----

#[test]
fn containerd_cri_two_pods_ping_labels_and_double_del() {
    privileged_with!(
        "containerd_cri_two_pods_ping_labels_and_double_del",
        CONTAINERD_TOOLS
    );
    let t0 = Instant::now();
    // Declared first so it drops last: containerd's cleanup DELs still reach it.
    let h = Host::new(POOLS);
    let net = format!("{}net", h.prefix);
    let ctrd = Containerd::start(&h.prefix, &conflist(&h, &net));
    let started = t0.elapsed();
    let ns = format!("{}-ns", h.prefix);
    let names = [format!("{}-p1", h.prefix), format!("{}-p2", h.prefix)];
    let ids: Vec<String> = names.iter().map(|n| ctrd.runp(n, &ns)).collect();

    let inspects: Vec<Value> = ids.iter().map(|id| ctrd.inspectp(id)).collect();
    let eps = h.endpoints();
    assert_eq!(eps.len(), 2, "{eps:#?}");
    assert_eq!(h.used_addresses(), 4);
    let mut v4s = vec![];
    let mut netns = vec![];
    for ((id, name), inspect) in ids.iter().zip(&names).zip(&inspects) {
        assert_eq!(inspect["status"]["state"], 0, "SANDBOX_READY: {inspect:#}");
        let ips = pod_ips(inspect);
        assert_eq!(ips.len(), 2, "dual stack pod IPs: {inspect:#}");
        assert!(ips.iter().all(|i| in_pool(i)), "{ips:?}");
        let path = pod_netns(inspect).expect("pod netns path in the runtime spec");
        // The pod's eth0 really has them.
        let shown = nsenter(&path, &["ip", "addr", "show", "eth0"]);
        assert!(ips.iter().all(|i| shown.contains(i.as_str())), "{shown}");

        let ep = endpoint_of(&eps, id, "eth0");
        let addrs = endpoint_addrs(ep);
        assert!(ips.iter().all(|i| addrs.contains(i)), "{ep:#?} vs {ips:?}");
        assert!(
            same_path(&ep.netns, &path),
            "netns containerd made: {ep:#?}"
        );
        // containerd's CNI_ARGS K8S_POD_NAME and K8S_POD_NAMESPACE are the endpoint's
        // pod and namespace (not labels: the pod's labels are not in CNI_ARGS).
        assert_eq!(ep.pod.as_ref(), Some(name), "{ep:#?}");
        assert_eq!(&ep.namespace, &ns, "{ep:#?}");
        assert!(ep.labels.is_empty(), "{ep:#?}");
        v4s.push(ips.iter().find(|i| !i.contains(':')).cloned().unwrap());
        netns.push((path, ips));
    }

    // Pod to pod, both families, each way.
    for (from, to) in [(0, 1), (1, 0)] {
        for dst in &netns[to].1 {
            let family = if dst.contains(':') { "-6" } else { "-4" };
            let ok = eventually(Duration::from_secs(5), || {
                nsenter_status(&netns[from].0, &["ping", family, "-c1", "-W1", dst])
            });
            assert!(ok, "ping pod{from} → {dst}");
        }
    }

    // StopPodSandbox: the first DEL (with the netns) frees the pod's addresses.
    ctrd.cri_ok(&["stopp", &ids[0]]);
    let eps = h.endpoints();
    assert!(
        !eps.iter().any(|e| e.container_id == ids[0]),
        "stopped pod still attached: {eps:#?}"
    );
    assert_eq!(h.used_addresses(), 2);
    // RemovePodSandbox: the second DEL, CNI_NETNS empty and no prevResult, succeeds.
    ctrd.cri_ok(&["rmp", &ids[0]]);
    ctrd.forget_pod(&ids[0]);
    // The other pod is unharmed.
    assert!(eventually(Duration::from_secs(2), || {
        nsenter_status(&netns[1].0, &["ping", "-c1", "-W1", &v4s[1]])
    }));
    ctrd.cri_ok(&["stopp", &ids[1]]);
    ctrd.cri_ok(&["rmp", &ids[1]]);
    ctrd.forget_pod(&ids[1]);

    assert_agent_clean(&h, "after Stop/RemovePodSandbox");
    let pods = ctrd.cri_json(&["pods"]);
    assert_eq!(pods, serde_json::json!([]), "CRI still lists pods");
    for (path, _) in &netns {
        assert!(
            !std::path::Path::new(path).exists(),
            "containerd left netns {path}"
        );
    }
    eprintln!(
        "containerd CRI: {:?} (containerd up and image imported in {started:?})",
        t0.elapsed()
    );
}

fn nsenter_cmd(netns: &str, argv: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("nsenter");
    c.arg(format!("--net={netns}")).arg("--").args(argv);
    c
}

/// Run a host program inside a pod's network namespace; its stdout.
fn nsenter(netns: &str, argv: &[&str]) -> String {
    strait_testbeds::runtimes::run_ok(nsenter_cmd(netns, argv))
}

fn nsenter_status(netns: &str, argv: &[&str]) -> bool {
    strait_testbeds::runtimes::run_with_timeout(
        nsenter_cmd(netns, argv),
        strait_testbeds::runtimes::CMD_TIMEOUT,
    )
    .status
    .success()
}

/// A pod of the Kubernetes API server, its sandbox made by containerd's CRI: the CNI
/// ADD containerd sends names the pod (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`), and the
/// agent, following the API server (`--kubeconfig`, the project's RBAC role alone),
/// gives the endpoint the pod's labels and named ports before RunPodSandbox returns;
/// `kubectl label pod` changes them afterwards. No kubelet runs here (the Pod is
/// written bound to its node); containerd stands in for it, with its real CNI calls.
#[test]
fn containerd_cri_pod_takes_its_labels_from_the_api_server() {
    let test = "containerd_cri_pod_takes_its_labels_from_the_api_server";
    privileged_with!(test, CONTAINERD_TOOLS);
    if !strait_testbeds::etcd::require_etcd(test) || !strait_testbeds::kube::require_kube(test) {
        return;
    }
    use strait_testbeds::cluster::{Cluster, ClusterOpts, Fabric};
    use strait_testbeds::netpol::{kubectl, kubectl_apply};
    let mut opts = ClusterOpts::new(1, Fabric::Vxlan);
    opts.kubernetes = Some(Default::default());
    let c = Cluster::start(opts);
    let ns = format!("{}-shop", c.prefix).to_lowercase();
    let pod = format!("{}-web", c.prefix).to_lowercase();
    kubectl_apply(
        &c,
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: {ns}, labels: {{app: web}}}}\n\
             spec:\n  nodeName: h1\n  containers:\n  - name: web\n    image: busybox\n    \
             ports: [{{name: http, containerPort: 8080}}]\n"
        ),
    )
    .unwrap();
    let net = format!("{}net", c.prefix);
    let ctrd = Containerd::start(
        &c.prefix,
        &strait_testbeds::runtimes::conflist_for(&c.host(0).agent, &net),
    );
    let id = ctrd.runp(&pod, &ns);
    let socket = &c.host(0).agent.socket;
    let endpoint = || -> Value {
        let all = strait_testbeds::docker::netctl_json(socket, &["endpoints"]);
        all.as_array()
            .and_then(|a| a.iter().find(|e| e["container_id"] == id.as_str()).cloned())
            .unwrap_or(Value::Null)
    };
    // Taken at ADD: there when RunPodSandbox has returned.
    let ep = endpoint();
    assert_eq!(ep["pod"], pod.as_str(), "{ep:#}");
    assert_eq!(ep["namespace"], ns.as_str(), "{ep:#}");
    assert_eq!(ep["labels"], serde_json::json!({"app": "web"}), "{ep:#}");
    assert_eq!(ep["named_ports"][0]["name"], "http", "{ep:#}");
    assert_eq!(ep["named_ports"][0]["port"], 8080, "{ep:#}");

    kubectl(&c, &["label", "pod", "-n", &ns, &pod, "tier=front"], "").unwrap();
    let t = Instant::now();
    let ok = eventually(Duration::from_secs(15), || {
        endpoint()["labels"] == serde_json::json!({"app": "web", "tier": "front"})
    });
    assert!(ok, "the label did not reach the endpoint: {:#}", endpoint());
    eprintln!(
        "{test}: kubectl label reached the endpoint in {:?}",
        t.elapsed()
    );

    ctrd.cri_ok(&["stopp", &id]);
    ctrd.cri_ok(&["rmp", &id]);
    ctrd.forget_pod(&id);
    let left = strait_testbeds::docker::netctl_json(socket, &["endpoints"]);
    assert_eq!(
        left,
        serde_json::json!([]),
        "endpoints left after the pod went"
    );
}
