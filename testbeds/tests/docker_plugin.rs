//! strait as dockerd's network and IPAM driver, end to end: a real dockerd (Debian's
//! docker.io) in a test host's namespace, that host's `straitd --docker-plugin` as its
//! `strait` driver, busybox containers (see `strait_testbeds::docker`).
//!
//! Covered: run/rm; two containers ping and talk TCP by IP, by alias and by name
//! (Docker's embedded DNS); subnets inside a pool served, outside refused; static IP
//! and MAC; IPv6; connect/disconnect; port publishing reached from the host; several
//! strait networks on one container; network rm with and without endpoints; straitd
//! stopped or killed and restarted while containers run; dockerd restarted; two Docker
//! hosts of one cluster sharing a network over VXLAN. Each ends with nothing leaked:
//! no endpoint, `netctl ipam check` clean, no `strait*` link, no address allocated.
//! The first test proves the harness itself with Docker's own `bridge` driver.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use strait_testbeds::cluster::{Cluster, ClusterOpts, Fabric};
use strait_testbeds::docker::{
    DOCKER_TOOLS, DockerBed, DockerHost, DockerOpts, IMAGE, netctl, netctl_json,
};
use strait_testbeds::netns::Netns;
use strait_testbeds::runtimes::require_tools;
use strait_testbeds::{require_root, wait_until};

const POOLS: &[&str] = &["10.83.0.0/16", "fd00:83::/48"];

macro_rules! privileged {
    ($name:expr) => {
        if !require_root($name) || !require_tools($name, DOCKER_TOOLS) {
            return;
        }
    };
}

const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(200);

// ----- helpers -----

/// The command of every long-running test container: busybox httpd serving
/// `hello-<name>` on port 80, in the foreground (it is PID 1).
fn web(name: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "mkdir -p /www && echo hello-{name} > /www/index.html && exec httpd -f -p 80 -h /www"
        ),
    ]
}

/// `docker run -d --name NAME --network NET OPTS strait-bb <web NAME>`.
fn run_web(bed: &DockerBed, name: &str, network: &str, opts: &[&str]) -> String {
    let mut all = vec!["--network", network];
    all.extend_from_slice(opts);
    let cmd = web(name);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let out = bed.docker.run(name, &all, &cmd);
    assert!(
        out.status.success(),
        "docker run {name} on {network} failed: {}{}\n----- straitd log (tail) -----\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log_tail(&bed.host.agent.log(), 40)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn log_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `docker network create -d strait ARGS NAME`.
fn create_network(d: &DockerHost, name: &str, args: &[&str]) {
    let mut all = vec!["network", "create", "-d", "strait"];
    all.extend_from_slice(args);
    all.push(name);
    d.docker_ok(&all);
}

/// `ip -o -FAMILY addr show IFACE` in the container: its addresses with prefix length.
fn addrs_in(d: &DockerHost, name: &str, iface: &str, v6: bool) -> Vec<String> {
    let fam = if v6 { "-6" } else { "-4" };
    let out = d.exec(name, &["ip", "-o", fam, "addr", "show", iface]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" scope global"))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|x| *x == "inet" || *x == "inet6")?;
            w.next().map(String::from)
        })
        .collect()
}

/// The default route's gateway inside the container.
fn default_via(d: &DockerHost, name: &str, v6: bool) -> Option<String> {
    let fam = if v6 { "-6" } else { "-4" };
    let out = d.exec(name, &["ip", fam, "route", "show", "default"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut w = text.split_whitespace();
    w.find(|x| *x == "via")?;
    w.next().map(String::from)
}

fn in_pools(addr: &str) -> bool {
    let ip: std::net::IpAddr = addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}"));
    POOLS
        .iter()
        .any(|p| p.parse::<ipnet::IpNet>().unwrap().contains(&ip))
}

fn ping(d: &DockerHost, from: &str, to: &str) {
    let fam = if to.contains(':') { "-6" } else { "-4" };
    let mut last = String::new();
    let r = wait_until(&format!("{from} pings {to}"), WAIT, POLL, || {
        let out = d.exec(from, &["ping", fam, "-c1", "-W1", to]);
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(last.clone())
        }
    });
    if let Err(e) = r {
        panic!("{e}\n{}", d.diagnose(&[from]));
    }
}

/// HTTP GET from container `from` to `target` (an address or a name) over TCP: the
/// answer must carry `hello-<server>`. busybox nc, not wget: the static busybox's wget
/// crashes in glibc's NSS without the libraries in the image.
fn http_get(d: &DockerHost, from: &str, target: &str, server: &str) {
    let script = format!(r#"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 {target} 80"#);
    wait_until(&format!("{from} GETs http://{target}/"), WAIT, POLL, || {
        let out = d.exec(from, &["sh", "-c", &script]);
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if body.contains(&format!("hello-{server}")) {
            Ok(())
        } else {
            Err(format!(
                "{}: {body}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
    .unwrap();
}

/// The agent's endpoints (`netctl -o json endpoints`).
fn endpoints(socket: &std::path::Path) -> Vec<Value> {
    netctl_json(socket, &["endpoints"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The agent's endpoint of Docker endpoint `endpoint_id`, once it carries the Docker
/// network and container names (the agent asks dockerd for them).
fn wait_endpoint(socket: &std::path::Path, endpoint_id: &str, network: &str, name: &str) -> Value {
    let mut found = Value::Null;
    wait_until(
        &format!("endpoint {endpoint_id} named {network}/{name}"),
        WAIT,
        POLL,
        || {
            let eps = endpoints(socket);
            let Some(ep) = eps.iter().find(|e| e["container_id"] == endpoint_id) else {
                return Err(format!("no such endpoint: {eps:#?}"));
            };
            found = ep.clone();
            if ep["network"] == network && ep["pod"] == name {
                Ok(())
            } else {
                Err(format!("{ep:#}"))
            }
        },
    )
    .unwrap();
    found
}

fn endpoint_ips(ep: &Value) -> Vec<String> {
    ep["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str())
        .map(|i| i.split('/').next().unwrap_or(i).to_string())
        .collect()
}

/// Docker networks the agent keeps (`netctl -o json docker networks`).
fn stored_networks(socket: &std::path::Path) -> Vec<Value> {
    netctl_json(socket, &["docker", "networks"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Docker's ID of network `name`.
fn network_id(d: &DockerHost, name: &str) -> String {
    d.docker_ok(&["network", "inspect", "-f", "{{.Id}}", name])
}

/// Whether the agent keeps network `id`.
fn is_stored(socket: &std::path::Path, id: &str) -> bool {
    stored_networks(socket).iter().any(|n| n["id"] == id)
}

/// The agent's entry for network `name` (by Docker's ID); panics if it has none.
fn stored(socket: &std::path::Path, d: &DockerHost, name: &str) -> Value {
    let id = network_id(d, name);
    let nets = stored_networks(socket);
    nets.iter()
        .find(|n| n["id"] == id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("network {name} ({id}) not stored: {nets:#?}"))
}

/// Wait until the agent's entry for network `name` carries that name (the agent asks
/// dockerd once an endpoint is made on it).
fn wait_stored_name(socket: &std::path::Path, d: &DockerHost, name: &str) -> Value {
    let mut found = Value::Null;
    wait_until(
        &format!("network {name} named in the store"),
        WAIT,
        POLL,
        || {
            found = stored(socket, d, name);
            if found["name"] == name {
                Ok(())
            } else {
                Err(format!("{found:#}"))
            }
        },
    )
    .unwrap();
    found
}

/// Once every container is gone: no endpoint, `netctl ipam check` clean, no `strait*`
/// link in the host's namespace.
fn assert_no_leak(socket: &std::path::Path, host_ns: &Netns, what: &str) {
    wait_until(&format!("{what}: no endpoint left"), WAIT, POLL, || {
        let eps = endpoints(socket);
        if eps.is_empty() {
            Ok(())
        } else {
            Err(format!("{eps:#?}"))
        }
    })
    .unwrap();
    let (ok, out, err) = netctl(socket, &["ipam", "check"]);
    assert!(ok, "{what}: netctl ipam check found problems: {out}{err}");
    let report = netctl_json(socket, &["ipam", "check"]);
    assert_eq!(
        report["issues"].as_array().map(Vec::len),
        Some(0),
        "{what}: {report:#}"
    );
    wait_until(
        &format!("{what}: no strait* link left"),
        WAIT * 3,
        POLL,
        || {
            let links: Vec<String> = host_ns
                .links()
                .into_iter()
                .filter(|l| l.starts_with("strait") && l != "strait.vxlan")
                .collect();
            if links.is_empty() {
                Ok(())
            } else {
                Err(format!("{links:?}"))
            }
        },
    )
    .unwrap();
}

/// [`assert_no_leak`], and once the networks are gone too, no address allocated.
fn assert_clean(bed: &DockerBed, what: &str) {
    assert_no_leak(&bed.host.agent.socket, &bed.host.ns, what);
    bed.docker.remove_all();
    wait_until(
        &format!("{what}: no address allocated"),
        WAIT,
        POLL,
        || match bed.host.used_addresses() {
            0 => Ok(()),
            n => Err(format!("{n} used: {:#?}", bed.host.ipam())),
        },
    )
    .unwrap();
}

fn rm(d: &DockerHost, names: &[&str]) {
    let mut args = vec!["rm", "-f"];
    args.extend_from_slice(names);
    d.docker_ok(&args);
}

// ----- the harness, proved with Docker's own bridge driver -----

/// The harness alone: dockerd in a namespace, the image, a `bridge` network, two
/// containers that ping each other, a published port reached from the namespace, a
/// dockerd restart, and cleanup. No agent involved.
#[test]
fn docker_harness_runs_the_bridge_driver() {
    privileged!("docker_harness_runs_the_bridge_driver");
    let prefix = strait_testbeds::unique_prefix();
    let ns = Netns::new(format!("{prefix}h"));
    let mut d = DockerHost::prepare(DockerOpts::default());
    d.start(ns.name());
    let bridge = format!("{prefix}br");
    d.docker_ok(&[
        "network",
        "create",
        "-d",
        "bridge",
        "--subnet",
        "10.84.1.0/24",
        "-o",
        &format!("com.docker.network.bridge.name={bridge}"),
        "hbr",
    ]);
    assert!(
        ns.links().contains(&bridge),
        "bridge {bridge} not in the namespace"
    );
    let cmd = web("ha");
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    d.run_ok(
        "ha",
        &["--network", "hbr", "-p", "127.0.0.1:18084:80"],
        &cmd,
    );
    let cmd = web("hb");
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    d.run_ok("hb", &["--network", "hbr", "--network-alias", "bee"], &cmd);
    let a = d.ip("ha", "hbr");
    // The containers' netns files dockerd mounts show outside its mount namespace
    // (the agent needs them, as on a real host).
    let sandbox = d.inspect("ha")["NetworkSettings"]["SandboxKey"]
        .as_str()
        .expect("SandboxKey")
        .to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(sandbox.as_str())),
        "{sandbox} is not mounted here"
    );
    ping(&d, "hb", &a);
    http_get(&d, "ha", "bee", "hb");
    let body = get_from(&ns, 18084);
    assert!(body.contains("hello-ha"), "{body}");
    d.restart();
    let out = d.docker_ok(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        "hbr",
        IMAGE,
        "ip",
        "-o",
        "-4",
        "addr",
    ]);
    assert!(out.contains("10.84.1."), "{out}");
    drop(d);
    assert!(
        !ns.links().contains(&bridge),
        "the bridge network's bridge is left after cleanup"
    );
}

/// dockerd with `--iptables=true`: a published port of the bridge driver works, and
/// the chains dockerd leaves on exit are gone after the harness's cleanup.
#[test]
fn docker_harness_removes_dockers_iptables_chains() {
    privileged!("docker_harness_removes_dockers_iptables_chains");
    let prefix = strait_testbeds::unique_prefix();
    let ns = Netns::new(format!("{prefix}h"));
    let mut d = DockerHost::prepare(DockerOpts { iptables: true });
    d.start(ns.name());
    d.docker_ok(&[
        "network",
        "create",
        "-d",
        "bridge",
        "--subnet",
        "10.84.2.0/24",
        "-o",
        &format!("com.docker.network.bridge.name={prefix}br"),
        "hipt",
    ]);
    let cmd = web("hi");
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    d.run_ok(
        "hi",
        &["--network", "hipt", "-p", "127.0.0.1:18085:80"],
        &cmd,
    );
    let body = get_from(&ns, 18085);
    assert!(body.contains("hello-hi"), "{body}");
    let rules = ns.exec_ok(&["iptables", "-w", "-t", "nat", "-S"]);
    assert!(rules.contains("DOCKER"), "dockerd made no chains: {rules}");
    drop(d);
    for table in ["filter", "nat"] {
        let rules = ns.exec_ok(&["iptables", "-w", "-t", table, "-S"]);
        assert!(!rules.contains("DOCKER"), "{table} after cleanup: {rules}");
    }
}

/// HTTP GET `/` from the namespace `ns` to 127.0.0.1:`port`; the whole answer.
fn get_from(ns: &Netns, port: u16) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        let r = ns.run_in(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        });
        match r {
            Ok(body) if body.contains("200") => return body,
            Ok(body) => last = body,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(POLL);
    }
    panic!("GET 127.0.0.1:{port} from {}: {last}", ns.name());
}

// ----- strait -----

#[test]
fn docker_run_rm() {
    privileged!("docker_run_rm");
    let bed = DockerBed::new(POOLS);
    let d = &bed.docker;
    let sock = bed.host.agent.socket.clone();
    create_network(d, "runrm", &["--ipam-driver", "strait"]);
    let net = stored(&sock, d, "runrm");
    assert_eq!(net["ipam"], "strait", "{net:#}");
    let net_id = network_id(d, "runrm");

    run_web(&bed, "rr1", "runrm", &[]);
    let ip = d.ip("rr1", "runrm");
    assert!(in_pools(&ip), "{ip} is not from a strait pool");
    assert_eq!(addrs_in(d, "rr1", "eth0", false), vec![format!("{ip}/32")]);
    assert_eq!(
        default_via(d, "rr1", false).as_deref(),
        Some("169.254.1.1"),
        "default route"
    );
    let ep = wait_endpoint(&sock, &d.endpoint_id("rr1", "runrm"), "runrm", "rr1");
    assert!(endpoint_ips(&ep).contains(&ip), "{ep:#}");
    wait_stored_name(&sock, d, "runrm");

    // A short-lived container, as `docker run --rm` users have them.
    let out = d.docker_ok(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        "runrm",
        IMAGE,
        "ip",
        "-o",
        "-4",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(out.contains("/32"), "{out}");

    rm(d, &["rr1"]);
    assert_no_leak(&sock, &bed.host.ns, "after rm");
    d.docker_ok(&["network", "rm", "runrm"]);
    assert!(!is_stored(&sock, &net_id), "network rm left it stored");
    assert_clean(&bed, "after network rm");
}

#[test]
fn docker_two_containers_by_ip_alias_and_name() {
    privileged!("docker_two_containers_by_ip_alias_and_name");
    let bed = DockerBed::new(POOLS);
    let d = &bed.docker;
    create_network(d, "pair", &["--ipam-driver", "strait"]);
    run_web(&bed, "pa", "pair", &["--network-alias", "alpha"]);
    run_web(&bed, "pb", "pair", &["--network-alias", "beta"]);
    let a = d.ip("pa", "pair");
    let b = d.ip("pb", "pair");
    assert_ne!(a, b);
    ping(d, "pa", &b);
    ping(d, "pb", &a);
    http_get(d, "pa", &b, "pb");
    http_get(d, "pb", &a, "pa");
    // Docker's embedded DNS on a strait network: aliases and container names.
    http_get(d, "pa", "beta", "pb");
    http_get(d, "pb", "alpha", "pa");
    ping(d, "pa", "pb");
    rm(d, &["pa", "pb"]);
    assert_clean(&bed, "after rm");
}

#[test]
fn docker_subnet_inside_a_pool_is_served_outside_refused() {
    privileged!("docker_subnet_inside_a_pool_is_served_outside_refused");
    let bed = DockerBed::new(POOLS);
    let d = &bed.docker;
    // strait IPAM with a subnet and a range inside a pool.
    create_network(
        d,
        "sub",
        &[
            "--ipam-driver",
            "strait",
            "--subnet",
            "10.83.100.0/24",
            "--ip-range",
            "10.83.100.128/25",
        ],
    );
    run_web(&bed, "s1", "sub", &[]);
    let ip = d.ip("s1", "sub");
    let range: ipnet::IpNet = "10.83.100.128/25".parse().unwrap();
    assert!(
        range.contains(&ip.parse::<std::net::IpAddr>().unwrap()),
        "{ip} is not in --ip-range {range}"
    );
    // Docker's default IPAM with a subnet inside a pool.
    create_network(d, "defipam", &["--subnet", "10.83.101.0/24"]);
    run_web(&bed, "s2", "defipam", &[]);
    let ip2 = d.ip("s2", "defipam");
    assert!(ip2.starts_with("10.83.101."), "{ip2}");
    assert_eq!(addrs_in(d, "s2", "eth0", false), vec![format!("{ip2}/24")]);
    // Two containers of one /24 reach each other (on-link for them).
    run_web(&bed, "s3", "defipam", &[]);
    ping(d, "s3", &ip2);
    http_get(d, "s2", &d.ip("s3", "defipam"), "s3");

    // Outside every pool: refused with words a user understands, nothing created.
    for ipam in [&["--ipam-driver", "strait"][..], &[][..]] {
        let mut args = vec!["network", "create", "-d", "strait"];
        args.extend_from_slice(ipam);
        args.extend_from_slice(&["--subnet", "192.168.77.0/24", "outside"]);
        let out = d.docker(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains("outside every strait pool"),
            "{args:?}: unclear error: {err}"
        );
        let ls = d.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
        assert!(!ls.lines().any(|l| l == "outside"), "{ls}");
    }
    let stored = stored_networks(&bed.host.agent.socket);
    assert_eq!(stored.len(), 2, "{stored:#?}");
    rm(d, &["s1", "s2", "s3"]);
    assert_clean(&bed, "after rm");
}

#[test]
fn docker_static_ip_and_mac() {
    privileged!("docker_static_ip_and_mac");
    let bed = DockerBed::new(POOLS);
    let d = &bed.docker;
    create_network(
        d,
        "static",
        &["--ipam-driver", "strait", "--subnet", "10.83.50.0/24"],
    );
    let mac = "02:42:0a:53:32:4d";
    run_web(
        &bed,
        "st1",
        "static",
        &["--ip", "10.83.50.77", "--mac-address", mac],
    );
    let addrs = addrs_in(d, "st1", "eth0", false);
    assert!(
        addrs.iter().any(|a| a.starts_with("10.83.50.77/")),
        "{addrs:?}"
    );
    let link = String::from_utf8_lossy(&d.exec("st1", &["ip", "link", "show", "eth0"]).stdout)
        .into_owned();
    assert!(link.contains(mac), "eth0 has not {mac}: {link}");
    let ep = wait_endpoint(
        &bed.host.agent.socket,
        &d.endpoint_id("st1", "static"),
        "static",
        "st1",
    );
    assert!(
        endpoint_ips(&ep).contains(&"10.83.50.77".to_string()),
        "{ep:#}"
    );
    // The address is taken: a second container asking for it is refused.
    let out = d.run(
        "st2",
        &["--network", "static", "--ip", "10.83.50.77"],
        &["sleep", "60"],
    );
    assert!(!out.status.success(), "a second container got 10.83.50.77");
    rm(d, &["st1", "st2"]);
    assert_clean(&bed, "after rm");
}

#[test]
fn docker_ipv6() {
    privileged!("docker_ipv6");
    let bed = DockerBed::new(POOLS);
    let d = &bed.docker;
    create_network(
        d,
        "six",
        &[
            "--ipam-driver",
            "strait",
            "--ipv6",
            "--subnet",
            "fd00:83:0:60::/64",
        ],
    );
    run_web(&bed, "v1", "six", &[]);
    run_web(&bed, "v2", "six", &[]);
    let six = |n: &str| -> String {
        let a = d.attachment(n, "six");
        a["GlobalIPv6Address"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| panic!("{n} has no IPv6 address: {a}"))
            .to_string()
    };
    let (a, b) = (six("v1"), six("v2"));
    assert!(a.starts_with("fd00:83:0:60:"), "{a}");
    let addrs = addrs_in(d, "v1", "eth0", true);
    assert!(addrs.iter().any(|x| x.starts_with(&a)), "{addrs:?}");
    assert_eq!(default_via(d, "v1", true).as_deref(), Some("fe80::1"));
    ping(d, "v1", &b);
    ping(d, "v2", &a);
    http_get(d, "v1", &b, "v2");
    // IPv4 beside it.
    ping(d, "v1", &d.ip("v2", "six"));
    let ep = wait_endpoint(
        &bed.host.agent.socket,
        &d.endpoint_id("v1", "six"),
        "six",
        "v1",
    );
    assert!(endpoint_ips(&ep).contains(&a), "{ep:#}");
    rm(d, &["v1", "v2"]);
    assert_clean(&bed, "after rm");
}

#[test]
fn docker_connect_disconnect() {
    privileged!("docker_connect_disconnect");
    let bed = DockerBed::new(POOLS);
    let d = &bed.docker;
    let sock = bed.host.agent.socket.clone();
    create_network(d, "cd1", &["--ipam-driver", "strait"]);
    create_network(d, "cd2", &["--ipam-driver", "strait"]);
    run_web(&bed, "cc", "cd1", &[]);
    assert!(addrs_in(d, "cc", "eth1", false).is_empty());
    d.docker_ok(&["network", "connect", "cd2", "cc"]);
    let ip2 = d.ip("cc", "cd2");
    assert_eq!(addrs_in(d, "cc", "eth1", false), vec![format!("{ip2}/32")]);
    let ep2 = d.endpoint_id("cc", "cd2");
    wait_endpoint(&sock, &ep2, "cd2", "cc");
    assert_eq!(endpoints(&sock).len(), 2);

    d.docker_ok(&["network", "disconnect", "cd2", "cc"]);
    let out = d.exec("cc", &["ip", "link", "show", "eth1"]);
    assert!(!out.status.success(), "eth1 still there after disconnect");
    wait_until("the cd2 endpoint goes", WAIT, POLL, || {
        !endpoints(&sock).iter().any(|e| e["container_id"] == ep2)
    })
    .unwrap();
    // eth0 is untouched.
    run_web(&bed, "cpeer", "cd1", &[]);
    ping(d, "cpeer", &d.ip("cc", "cd1"));
    rm(d, &["cc", "cpeer"]);
    assert_clean(&bed, "after rm");
}

#[test]
fn docker_several_strait_networks_on_one_container() {
    privileged!("docker_several_strait_networks_on_one_container");
    let bed = DockerBed::new(POOLS);
    let d = &bed.docker;
    create_network(d, "m1", &["--ipam-driver", "strait"]);
    create_network(d, "m2", &["--ipam-driver", "strait"]);
    run_web(&bed, "hub", "m1", &[]);
    d.docker_ok(&["network", "connect", "--alias", "hub2", "m2", "hub"]);
    run_web(&bed, "p1", "m1", &[]);
    run_web(&bed, "p2", "m2", &[]);
    ping(d, "hub", &d.ip("p1", "m1"));
    ping(d, "hub", &d.ip("p2", "m2"));
    http_get(d, "p1", &d.ip("hub", "m1"), "hub");
    http_get(d, "p2", &d.ip("hub", "m2"), "hub");
    // Each network's DNS names only what is on it.
    http_get(d, "p2", "hub2", "hub");
    rm(d, &["hub", "p1", "p2"]);
    assert_clean(&bed, "after rm");
}

/// `-p 127.0.0.1:P:80` and `-p P:80` on a strait network, reached from the host's
/// namespace while busybox httpd serves in the container; the two containers still
/// reach each other; the ports close again after rm.
fn port_publishing(iptables: bool, ports: [u16; 2]) {
    let bed = DockerBed::with(POOLS, DockerOpts { iptables }, |_| {});
    let d = &bed.docker;
    create_network(d, "pub", &["--ipam-driver", "strait"]);
    run_web(
        &bed,
        "w1",
        "pub",
        &["-p", &format!("127.0.0.1:{}:80", ports[0])],
    );
    run_web(&bed, "w2", "pub", &["-p", &format!("{}:80", ports[1])]);
    let body = get_from(&bed.host.ns, ports[0]);
    assert!(body.contains("hello-w1"), "{body}");
    let body = get_from(&bed.host.ns, ports[1]);
    assert!(body.contains("hello-w2"), "{body}");
    // With `--iptables=true` dockerd sets the FORWARD policy to DROP in the host's
    // namespace: containers must still reach each other.
    ping(d, "w1", &d.ip("w2", "pub"));
    http_get(d, "w2", &d.ip("w1", "pub"), "w1");
    rm(d, &["w1", "w2"]);
    let port = ports[0];
    wait_until(&format!("port {port} closed after rm"), WAIT, POLL, || {
        bed.host
            .ns
            .run_in(move || TcpStream::connect(("127.0.0.1", port)).map(|_| ()))
            .is_err()
    })
    .unwrap();
    assert_clean(&bed, "after rm");
}

#[test]
fn docker_port_publishing_reached_from_the_host() {
    privileged!("docker_port_publishing_reached_from_the_host");
    port_publishing(false, [18281, 18282]);
}

#[test]
fn docker_port_publishing_with_dockers_iptables() {
    privileged!("docker_port_publishing_with_dockers_iptables");
    port_publishing(true, [18283, 18284]);
}

#[test]
fn docker_network_rm_with_and_without_endpoints() {
    privileged!("docker_network_rm_with_and_without_endpoints");
    let bed = DockerBed::new(POOLS);
    let d = &bed.docker;
    let sock = bed.host.agent.socket.clone();
    create_network(d, "busy", &["--ipam-driver", "strait"]);
    create_network(d, "idle", &["--ipam-driver", "strait"]);
    run_web(&bed, "nb", "busy", &[]);
    let out = d.docker(&["network", "rm", "busy"]);
    assert!(!out.status.success(), "docker removed a network in use");
    let busy = stored(&sock, d, "busy")["id"].clone();
    let idle = stored(&sock, d, "idle")["id"].clone();
    ping(d, "nb", &d.ip("nb", "busy"));

    d.docker_ok(&["network", "rm", "idle"]);
    assert!(
        !is_stored(&sock, idle.as_str().unwrap()),
        "idle still stored"
    );
    assert!(is_stored(&sock, busy.as_str().unwrap()), "busy gone");
    rm(d, &["nb"]);
    d.docker_ok(&["network", "rm", "busy"]);
    let stored = stored_networks(&sock);
    assert!(stored.is_empty(), "{stored:#?}");
    assert_clean(&bed, "after network rm");
}

/// straitd goes away (SIGTERM or SIGKILL) and comes back while containers run: they
/// keep talking, a new container joins the network dockerd did not create again, and
/// removing them all afterwards leaks nothing.
fn straitd_restart_while_containers_run(test: &str, kill: bool) {
    let mut bed = DockerBed::new(POOLS);
    create_network(&bed.docker, "keep", &["--ipam-driver", "strait"]);
    run_web(&bed, "k1", "keep", &[]);
    run_web(&bed, "k2", "keep", &[]);
    let (a, b) = (bed.docker.ip("k1", "keep"), bed.docker.ip("k2", "keep"));
    ping(&bed.docker, "k1", &b);
    if kill {
        bed.host.agent.kill();
    }
    bed.host.agent.restart();
    let d = &bed.docker;
    ping(d, "k1", &b);
    http_get(d, "k2", &a, "k1");
    let sock = bed.host.agent.socket.clone();
    assert!(
        is_stored(&sock, &network_id(d, "keep")),
        "{test}: the network is gone after the restart"
    );
    wait_endpoint(&sock, &d.endpoint_id("k1", "keep"), "keep", "k1");
    run_web(&bed, "k3", "keep", &[]);
    ping(d, "k3", &a);
    rm(d, &["k1", "k2", "k3"]);
    assert_clean(&bed, test);
}

#[test]
fn docker_straitd_restarted_while_containers_run() {
    privileged!("docker_straitd_restarted_while_containers_run");
    straitd_restart_while_containers_run("docker_straitd_restarted_while_containers_run", false);
}

#[test]
fn docker_straitd_killed_while_containers_run() {
    privileged!("docker_straitd_killed_while_containers_run");
    straitd_restart_while_containers_run("docker_straitd_killed_while_containers_run", true);
}

#[test]
fn docker_dockerd_restarted() {
    privileged!("docker_dockerd_restarted");
    let mut bed = DockerBed::new(POOLS);
    create_network(&bed.docker, "dr", &["--ipam-driver", "strait"]);
    run_web(&bed, "d1", "dr", &[]);
    bed.docker.restart();
    let d = &bed.docker;
    let out = d.docker_ok(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        "dr",
        IMAGE,
        "ip",
        "-o",
        "-4",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(out.contains("/32"), "{out}");
    run_web(&bed, "d2", "dr", &[]);
    d.docker_ok(&["start", "d1"]);
    ping(d, "d2", &d.ip("d1", "dr"));
    http_get(d, "d1", "d2", "d2");
    rm(d, &["d1", "d2"]);
    assert_clean(&bed, "after rm");
}

/// Two Docker hosts of one cluster (one etcd, VXLAN), each with its own dockerd and
/// straitd: the same network name created on both is one network.
#[test]
fn docker_two_hosts_share_a_network() {
    privileged!("docker_two_hosts_share_a_network");
    struct Bed {
        // Drop order: dockerds (and their containers) before the cluster.
        dockers: Vec<DockerHost>,
        cluster: Cluster,
    }
    let mut dockers: Vec<DockerHost> = (0..2)
        .map(|_| DockerHost::prepare(DockerOpts::default()))
        .collect();
    let mut opts = ClusterOpts::new(2, Fabric::Vxlan);
    opts.host_extra = dockers
        .iter()
        .enumerate()
        .map(|(i, d)| (i, d.agent_flags()))
        .collect();
    let cluster = Cluster::start(opts);
    for (i, d) in dockers.iter_mut().enumerate() {
        d.start(cluster.host(i).ns.name());
    }
    let bed = Bed { dockers, cluster };
    for d in &bed.dockers {
        create_network(d, "wide", &["--ipam-driver", "strait"]);
    }
    let (d1, d2) = (&bed.dockers[0], &bed.dockers[1]);
    let cmd = web("x1");
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    d1.run_ok("x1", &["--network", "wide"], &cmd);
    let cmd = web("x2");
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    d2.run_ok("x2", &["--network", "wide"], &cmd);
    let (a, b) = (d1.ip("x1", "wide"), d2.ip("x2", "wide"));
    assert_ne!(a, b, "two hosts gave out one address");
    ping(d1, "x1", &b);
    ping(d2, "x2", &a);
    http_get(d1, "x1", &b, "x2");
    http_get(d2, "x2", &a, "x1");
    rm(d1, &["x1"]);
    rm(d2, &["x2"]);
    for (i, d) in bed.dockers.iter().enumerate() {
        let h = bed.cluster.host(i);
        assert_no_leak(&h.agent.socket, &h.ns, &h.name);
        d.remove_all();
    }
}
