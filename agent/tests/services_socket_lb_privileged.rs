//! The socket-level service load balancer against the real kernel: backends (TCP
//! and UDP echo servers) on addresses of a namespace of the test's own, the
//! services programs attached to a cgroup of the test's own, frontends for service
//! addresses that exist nowhere, and clients that are child processes placed in
//! that cgroup and running in that namespace (a socket belongs to the cgroup of
//! the process that made it). Needs root: without it each test prints a SKIP line
//! (and fails under `STRAIT_REQUIRE_PRIVILEGED=1`).
//!
//! Everything is the test's own and goes on exit, also on panic: the namespace,
//! the cgroup (below the cgroup2 mount, named with the test's unique prefix), a
//! bpffs instance for the pinned maps, the child processes (killed by PID).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use strait_testbeds::netns::Netns;
use straitd::policy::datapath::PrivateBpffs;
use straitd::services::datapath::{
    Backend, Frontend, Protocol, Scope, ServiceReason, ServicesDatapath, TranslationKind,
};

macro_rules! require_root {
    ($name:literal) => {
        if !strait_testbeds::require_root($name) {
            return;
        }
    };
}

const VIP4: &str = "10.96.0.10";
const VIP6: &str = "fd00:96::10";
const PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;
/// The backends' addresses, on the namespace's `lo`; named b0, b1, b2.
const BACKENDS4: [&str; 3] = ["10.199.50.1", "10.199.50.2", "10.199.50.3"];
const BACKENDS6: [&str; 3] = ["fd99:50::1", "fd99:50::2", "fd99:50::3"];
/// A prime, as Maglev wants; the tests' tables deal the backends round-robin.
const M: u32 = 251;

/// The client, run by `python3` in the test's namespace and cgroup. Prints one
/// JSON document per step; every socket times out after 5 s so nothing hangs.
const CLIENT: &str = r#"
import errno, json, socket, sys

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
n = int(sys.argv[4]) if len(sys.argv) > 4 else 1
fam = socket.AF_INET6 if ":" in host else socket.AF_INET

def fmt(a):
    return f"[{a[0]}]:{a[1]}" if fam == socket.AF_INET6 else f"{a[0]}:{a[1]}"

def line(s):
    b = b""
    while not b.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            break
        b += c
    return b.decode().strip()

def tcp():
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect((host, port))
    return s, line(s), fmt(s.getpeername())

def out(v):
    print(json.dumps(v), flush=True)

if mode == "tcp":
    res = []
    for _ in range(n):
        s, name, peer = tcp()
        res.append([name, peer])
        s.close()
    out(res)
elif mode == "udp":
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(5)
    res = []
    for i in range(n):
        s.sendto(b"ping%d" % i, (host, port))
        data, src = s.recvfrom(100)
        name, payload = data.decode().split()
        res.append([name, fmt(src), payload == "ping%d" % i])
    out(res)
elif mode == "connect":
    try:
        s, name, peer = tcp()
        out({"name": name, "peer": peer})
    except OSError as e:
        out({"errno": errno.errorcode.get(e.errno, str(e.errno))})
elif mode == "hold":
    conns = [tcp() for _ in range(n)]
    out([c[1] for c in conns])
    sys.stdin.readline()
    res = []
    for s, name, _ in conns:
        s.sendall(b"still\n")
        res.append(line(s) == "still")
    out(res)
"#;

/// The cgroup2 mount point (hybrid hierarchies have it at /sys/fs/cgroup/unified).
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup2 mount")
}

/// A cgroup below the cgroup2 mount, with strait's programs taken off and removed
/// on drop (its processes, all children of the test, are gone by then).
struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    fn new(name: &str) -> Self {
        let path = cgroup2_root().join(name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = ServicesDatapath::detach(&self.path);
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Echo servers for every backend address, TCP and UDP, on threads of the test
/// process (outside the test cgroup). Each says its name first: TCP a line on
/// accept, UDP `name payload` in each reply, from the backend's address.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn serve_tcp(l: TcpListener, name: String, stop: Arc<AtomicBool>) {
    l.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((mut c, _)) => {
                let (name, stop) = (name.clone(), stop.clone());
                std::thread::spawn(move || {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_millis(100)))
                        .unwrap();
                    if c.write_all(format!("{name}\n").as_bytes()).is_err() {
                        return;
                    }
                    let mut buf = [0u8; 512];
                    while !stop.load(Ordering::Relaxed) {
                        match c.read(&mut buf) {
                            Ok(0) => return,
                            Ok(n) => {
                                if c.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => return,
                        }
                    }
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve_udp(s: UdpSocket, name: String, stop: Arc<AtomicBool>) {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let reply = format!("{name} {}", String::from_utf8_lossy(&buf[..n]));
            let _ = s.send_to(reply.as_bytes(), from);
        }
    }
}

impl Servers {
    fn start(ns: &Netns) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, (a4, a6)) in BACKENDS4.iter().zip(BACKENDS6).enumerate() {
            for addr in [a4.to_string(), a6.to_string()] {
                let ip: IpAddr = addr.parse().unwrap();
                let sa = SocketAddr::new(ip, BACKEND_PORT);
                let (tcp, udp) = ns
                    .run_in(move || Ok((TcpListener::bind(sa)?, UdpSocket::bind(sa)?)))
                    .unwrap();
                let name = format!("b{i}");
                let (n, s) = (name.clone(), stop.clone());
                threads.push(std::thread::spawn(move || serve_tcp(tcp, n, s)));
                let s = stop.clone();
                threads.push(std::thread::spawn(move || serve_udp(udp, name, s)));
            }
        }
        Self { stop, threads }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A client process, killed by its PID if the test ends before it does.
struct ClientProc(Child);

impl Drop for ClientProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Declaration order is drop order: the datapath's descriptors, then the cgroup
/// (programs detached, directory removed), servers, namespace, bpffs.
struct Bed {
    dp: Option<ServicesDatapath>,
    cg: TestCgroup,
    servers: Servers,
    ns: Netns,
    bpffs: PrivateBpffs,
}

fn frontend(vip: &str, proto: Protocol) -> Frontend {
    Frontend {
        addr: vip.parse().unwrap(),
        port: PORT,
        proto,
        scope: Scope::Local,
    }
}

fn backends(addrs: &[&str]) -> Vec<Backend> {
    addrs
        .iter()
        .map(|a| Backend {
            addr: a.parse().unwrap(),
            port: BACKEND_PORT,
            local: false,
        })
        .collect()
}

/// `m` slots dealing `n` backends round-robin: each gets a near-equal share.
fn uniform(n: u32, m: u32) -> Vec<u32> {
    (0..m).map(|i| i % n).collect()
}

impl Bed {
    fn new() -> Self {
        let prefix = strait_testbeds::unique_prefix();
        let ns = Netns::new(format!("{prefix}n"));
        for a in BACKENDS4 {
            ns.exec_ok(&["ip", "addr", "add", &format!("{a}/32"), "dev", "lo"]);
        }
        for a in BACKENDS6 {
            ns.exec_ok(&[
                "ip",
                "addr",
                "add",
                &format!("{a}/128"),
                "dev",
                "lo",
                "nodad",
            ]);
        }
        let servers = Servers::start(&ns);
        let cg = TestCgroup::new(&format!("{prefix}-svc"));
        let bpffs = PrivateBpffs::new(&std::env::temp_dir(), "strait-svc").unwrap();
        let dp = ServicesDatapath::load(bpffs.path()).expect("loading the services object");
        dp.attach(&cg.path).expect("attaching to the test cgroup");
        Self {
            dp: Some(dp),
            cg,
            servers,
            ns,
            bpffs,
        }
    }

    fn dp(&self) -> &ServicesDatapath {
        self.dp.as_ref().expect("loaded")
    }

    /// Installs the VIP (TCP and UDP, both families) with all three backends and a
    /// uniform table.
    fn install_all(&self) {
        for (vip, addrs) in [(VIP4, BACKENDS4), (VIP6, BACKENDS6)] {
            for proto in [Protocol::Tcp, Protocol::Udp] {
                self.dp()
                    .install(
                        &frontend(vip, proto),
                        &backends(&addrs),
                        &uniform(3, M),
                        None,
                    )
                    .unwrap();
            }
        }
    }

    fn command(&self, in_cgroup: bool, args: &[&str]) -> Command {
        let join = if in_cgroup {
            format!("echo $$ > {}/cgroup.procs && ", self.cg.path.display())
        } else {
            String::new()
        };
        // The cgroup first: `ip netns exec` mounts a /sys of the namespace's own,
        // without the cgroup mounts, and a process's cgroup passes to what it
        // execs.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "{join}exec ip netns exec {} python3 -c \"$0\" \"$@\"",
                self.ns.name()
            ))
            .arg(CLIENT)
            .args(args);
        cmd
    }

    /// Runs the client to the end and returns what it printed.
    fn client(&self, in_cgroup: bool, args: &[&str]) -> Value {
        let out = self.command(in_cgroup, args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "client {args:?}: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("client {args:?} printed {stdout:?}: {e}"))
    }

    fn stat(&self, r: ServiceReason) -> u64 {
        self.dp().stats().unwrap()[&r]
    }
}

fn vip_peer(vip: &str) -> SocketAddr {
    SocketAddr::new(vip.parse().unwrap(), PORT)
}

fn peer(v: &Value) -> SocketAddr {
    v.as_str().unwrap().parse().unwrap()
}

/// Backend name → connections, from a `tcp` run's `[name, peer]` rows, each
/// checked to show the VIP as its peer.
fn spread(rows: &Value, vip: &str) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for row in rows.as_array().unwrap() {
        assert_eq!(peer(&row[1]), vip_peer(vip), "getpeername shows the VIP");
        *by.entry(row[0].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    by
}

#[test]
fn tcp_and_udp_to_a_vip_reach_a_backend_and_show_the_vip() {
    require_root!("tcp_and_udp_to_a_vip_reach_a_backend_and_show_the_vip");
    let bed = Bed::new();
    bed.install_all();
    for vip in [VIP4, VIP6] {
        let rows = bed.client(true, &["tcp", vip, "80", "10"]);
        let by = spread(&rows, vip);
        assert_eq!(by.values().sum::<usize>(), 10);
        assert!(by.keys().all(|b| ["b0", "b1", "b2"].contains(&b.as_str())));

        let rows = bed.client(true, &["udp", vip, "80", "10"]);
        for row in rows.as_array().unwrap() {
            assert!(["b0", "b1", "b2"].contains(&row[0].as_str().unwrap()));
            assert_eq!(peer(&row[1]), vip_peer(vip), "the reply comes from the VIP");
            assert_eq!(row[2], true, "the reply is the backend's echo");
        }
    }
    // A dual-stack socket to the IPv4 VIP, IPv4-mapped: connect6 translates it.
    let mapped = format!("::ffff:{VIP4}");
    let got = bed.client(true, &["connect", &mapped, "80"]);
    assert!(got["name"].as_str().is_some(), "{got}");
    assert_eq!(peer(&got["peer"]), vip_peer(&mapped));
    // 20 TCP, 20 UDP datagrams, the mapped connect; a connect elsewhere is not
    // counted.
    assert_eq!(bed.stat(ServiceReason::Translated), 41);
    assert_eq!(bed.stat(ServiceReason::RefusedNoBackend), 0);
    assert_eq!(bed.stat(ServiceReason::BackendMissing), 0);
}

#[test]
fn connections_spread_near_evenly_over_three_backends() {
    require_root!("connections_spread_near_evenly_over_three_backends");
    let bed = Bed::new();
    bed.install_all();
    let rows = bed.client(true, &["tcp", VIP4, "80", "300"]);
    let by = spread(&rows, VIP4);
    println!("300 connections: {by:?}");
    assert_eq!(by.len(), 3, "{by:?}");
    for (b, n) in &by {
        assert!(*n >= 60, "{b} got {n} of 300 (< 20 %): {by:?}");
    }

    // The datapath counted each backend's connections as the clients saw them.
    let tcp4 = frontend(VIP4, Protocol::Tcp);
    let counted = |bed: &Bed| -> BTreeMap<String, u64> {
        bed.dp()
            .backend_connections()
            .unwrap()
            .into_iter()
            .filter(|(f, _, _)| *f == tcp4)
            .map(|(_, b, n)| {
                let i = BACKENDS4
                    .iter()
                    .position(|a| a.parse::<IpAddr>().unwrap() == b.addr)
                    .unwrap();
                (format!("b{i}"), n)
            })
            .collect()
    };
    let want: BTreeMap<String, u64> = by.iter().map(|(b, n)| (b.clone(), *n as u64)).collect();
    assert_eq!(counted(&bed), want, "per-backend counts = connections made");
    // UDP: one per datagram of an unconnected socket.
    let rows = bed.client(true, &["udp", VIP4, "80", "12"]);
    let udp: u64 = bed
        .dp()
        .backend_connections()
        .unwrap()
        .iter()
        .filter(|(f, _, _)| *f == frontend(VIP4, Protocol::Udp))
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(udp, rows.as_array().unwrap().len() as u64);

    // A table installed again keeps the counts of the backends that stay; one that
    // leaves takes its counter with it (nothing left in the map).
    bed.dp()
        .install(&tcp4, &backends(&BACKENDS4), &uniform(3, 257), None)
        .unwrap();
    assert_eq!(counted(&bed), want, "a reinstall keeps the counts");
    bed.dp()
        .install(&tcp4, &backends(&BACKENDS4[..2]), &uniform(2, M), None)
        .unwrap();
    let kept: BTreeMap<String, u64> = want
        .iter()
        .filter(|(b, _)| *b != "b2")
        .map(|(b, n)| (b.clone(), *n))
        .collect();
    assert_eq!(counted(&bed), kept);
    // Three backends on each of four frontends, one fewer on one.
    assert_eq!(counter_entries(&bed), 11);
    for (vip, proto) in [
        (VIP4, Protocol::Tcp),
        (VIP4, Protocol::Udp),
        (VIP6, Protocol::Tcp),
        (VIP6, Protocol::Udp),
    ] {
        bed.dp().remove(&frontend(vip, proto)).unwrap();
    }
    assert_eq!(
        counter_entries(&bed),
        0,
        "removed frontends leave no counter"
    );
}

/// Entries in the pinned per-backend counter map, read as the kernel holds them.
fn counter_entries(bed: &Bed) -> usize {
    let pin = bed.bpffs.path().join("strait_svc_backend_stats");
    let map = aya::maps::MapData::from_pin(&pin).unwrap();
    let map = aya::maps::Map::PerCpuHashMap(map);
    let counters: aya::maps::PerCpuHashMap<_, u32, u64> =
        aya::maps::PerCpuHashMap::try_from(map).unwrap();
    counters.keys().count()
}

#[test]
fn translations_are_reported_while_someone_listens() {
    require_root!("translations_are_reported_while_someone_listens");
    let bed = Bed::new();
    bed.install_all();
    let monitor = || -> u32 {
        let pin = bed.bpffs.path().join("strait_svc_monitor");
        let map = aya::maps::Map::Array(aya::maps::MapData::from_pin(&pin).unwrap());
        let a: aya::maps::Array<_, u32> = aya::maps::Array::try_from(map).unwrap();
        a.get(&0, 0).unwrap()
    };
    assert_eq!(monitor(), 0, "off while nobody listens");
    let mut rx = bed.dp().translations();
    let rows = bed.client(true, &["tcp", VIP4, "80", "5"]);
    let udp = bed.client(true, &["udp", VIP6, "80", "3"]);
    // Read until all eight came; the deadline only ends a failing run.
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.len() < 8 && std::time::Instant::now() < deadline {
        match rx.try_recv() {
            Ok(t) => got.push(t),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    assert_eq!(got.len(), 8, "{got:?}");
    let name_of = |b: &SocketAddr| {
        let i = BACKENDS4
            .iter()
            .chain(BACKENDS6.iter())
            .position(|a| a.parse::<IpAddr>().unwrap() == b.ip())
            .unwrap();
        format!("b{}", i % 3)
    };
    let (tcp, dgram): (Vec<_>, Vec<_>) = got.iter().partition(|t| t.proto == Protocol::Tcp);
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for t in &tcp {
        assert_eq!(t.kind, TranslationKind::Connect);
        assert_eq!(t.frontend, vip_peer(VIP4));
        assert_eq!(t.backend.port(), BACKEND_PORT);
        assert_ne!(t.pid, 0, "the client's process");
        assert_ne!(t.netns_cookie, 0);
        assert_eq!(t.client, None);
        *by.entry(name_of(&t.backend)).or_default() += 1;
    }
    assert_eq!(
        by,
        spread(&rows, VIP4),
        "each event names the backend it reached"
    );
    assert_eq!(dgram.len(), 3);
    for (t, row) in dgram.iter().zip(udp.as_array().unwrap()) {
        assert_eq!(t.kind, TranslationKind::Sendmsg);
        assert_eq!(t.frontend, vip_peer(VIP6));
        assert_eq!(name_of(&t.backend), row[0].as_str().unwrap());
    }
    assert_eq!(bed.stat(ServiceReason::EventsLost), 0);
    // The last listener gone, the reader turns the events off.
    drop(rx);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while monitor() != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(monitor(), 0, "off again once nobody listens");
}

#[test]
fn a_frontend_without_backends_refuses_at_once() {
    require_root!("a_frontend_without_backends_refuses_at_once");
    let bed = Bed::new();
    for vip in [VIP4, VIP6] {
        bed.dp()
            .install(&frontend(vip, Protocol::Tcp), &[], &[], None)
            .unwrap();
        let got = bed.client(true, &["connect", vip, "80"]);
        assert_eq!(got["errno"], "ECONNREFUSED", "{vip}: {got}");
    }
    assert_eq!(bed.stat(ServiceReason::RefusedNoBackend), 2);
    assert_eq!(bed.stat(ServiceReason::Translated), 0);
    // Backends arrive: the same frontend translates.
    bed.dp()
        .install(
            &frontend(VIP4, Protocol::Tcp),
            &backends(&BACKENDS4),
            &uniform(3, M),
            None,
        )
        .unwrap();
    let got = bed.client(true, &["connect", VIP4, "80"]);
    assert!(got["name"].as_str().is_some(), "{got}");
}

#[test]
fn affinity_keeps_a_client_on_one_backend() {
    require_root!("affinity_keeps_a_client_on_one_backend");
    let bed = Bed::new();
    let f = frontend(VIP4, Protocol::Tcp);
    bed.dp()
        .install(
            &f,
            &backends(&BACKENDS4),
            &uniform(3, M),
            Some(Duration::from_secs(600)),
        )
        .unwrap();
    let by = spread(&bed.client(true, &["tcp", VIP4, "80", "50"]), VIP4);
    assert_eq!(by.len(), 1, "50 connects from one namespace: {by:?}");
    let chosen = by.keys().next().unwrap().clone();
    // The next run of the client (same namespace) stays too.
    let again = spread(&bed.client(true, &["tcp", VIP4, "80", "10"]), VIP4);
    assert_eq!(again.keys().collect::<Vec<_>>(), vec![&chosen]);

    // Its backend leaves: the client goes elsewhere and stays there.
    let index: usize = chosen[1..].parse().unwrap();
    let rest: Vec<&str> = (0..3)
        .filter(|i| *i != index)
        .map(|i| BACKENDS4[i])
        .collect();
    bed.dp()
        .install(
            &f,
            &backends(&rest),
            &uniform(2, M),
            Some(Duration::from_secs(600)),
        )
        .unwrap();
    let moved = spread(&bed.client(true, &["tcp", VIP4, "80", "20"]), VIP4);
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(!moved.contains_key(&chosen), "{moved:?}");
    assert_eq!(bed.stat(ServiceReason::BackendMissing), 0);
}

#[test]
fn replacing_the_table_keeps_open_connections() {
    require_root!("replacing_the_table_keeps_open_connections");
    let bed = Bed::new();
    let f = frontend(VIP4, Protocol::Tcp);
    bed.dp()
        .install(&f, &backends(&BACKENDS4), &uniform(3, M), None)
        .unwrap();
    let mut child = ClientProc(
        bed.command(true, &["hold", VIP4, "80", "30"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let names: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let names: Vec<&str> = names
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(names.contains(&"b2"), "some connections on b2: {names:?}");

    // b2 leaves and the table changes size while the 30 connections are open.
    bed.dp()
        .install(&f, &backends(&BACKENDS4[..2]), &uniform(2, 13), None)
        .unwrap();
    writeln!(child.0.stdin.as_mut().unwrap(), "go").unwrap();
    let still: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(
        still,
        Value::Array(vec![Value::Bool(true); 30]),
        "{names:?}"
    );
    assert!(child.0.wait().unwrap().success());

    // New connections follow the new table.
    let by = spread(&bed.client(true, &["tcp", VIP4, "80", "30"]), VIP4);
    assert!(!by.contains_key("b2"), "{by:?}");
}

#[test]
fn a_process_outside_the_cgroup_is_not_translated() {
    require_root!("a_process_outside_the_cgroup_is_not_translated");
    let bed = Bed::new();
    bed.install_all();
    // The namespace has no route to the VIP: untranslated, the connect fails.
    let got = bed.client(false, &["connect", VIP4, "80"]);
    assert_eq!(got["errno"], "ENETUNREACH", "{got}");
    assert_eq!(bed.stat(ServiceReason::Translated), 0);
    let got = bed.client(true, &["connect", VIP4, "80"]);
    assert!(got["name"].as_str().is_some(), "{got}");
    assert_eq!(bed.stat(ServiceReason::Translated), 1);
}

#[test]
fn a_restarted_datapath_keeps_its_frontends_and_translating() {
    require_root!("a_restarted_datapath_keeps_its_frontends_and_translating");
    let mut bed = Bed::new();
    bed.install_all();
    let before = bed.dp().frontends().unwrap();
    assert_eq!(before.len(), 4);
    let programs = ServicesDatapath::attached(&bed.cg.path).unwrap();
    assert_eq!(programs.len(), 8, "{programs:?}");

    // The agent is gone: the programs stay on the cgroup and keep translating.
    bed.dp = None;
    let by = spread(&bed.client(true, &["tcp", VIP4, "80", "10"]), VIP4);
    assert_eq!(by.values().sum::<usize>(), 10);

    // A new agent adopts the maps and replaces each program in place.
    let dp = ServicesDatapath::load(bed.bpffs.path()).unwrap();
    assert_eq!(dp.frontends().unwrap(), before);
    // The per-backend counts go on: what the clients made while no agent ran.
    let counted: BTreeMap<String, usize> = dp
        .backend_connections()
        .unwrap()
        .into_iter()
        .filter(|(f, _, n)| *f == frontend(VIP4, Protocol::Tcp) && *n > 0)
        .map(|(_, b, n)| {
            let i = BACKENDS4
                .iter()
                .position(|a| a.parse::<IpAddr>().unwrap() == b.addr)
                .unwrap();
            (format!("b{i}"), n as usize)
        })
        .collect();
    assert_eq!(counted, by, "counts kept across the restart");
    dp.attach(&bed.cg.path).unwrap();
    let replaced = ServicesDatapath::attached(&bed.cg.path).unwrap();
    assert_eq!(replaced.len(), 8, "one of each, not two: {replaced:?}");
    for ((name, old), (new_name, new)) in programs.iter().zip(&replaced) {
        assert_eq!(name, new_name);
        assert_ne!(old, new, "{name} is the new agent's copy");
    }
    bed.dp = Some(dp);
    // Attaching again changes nothing.
    bed.dp().attach(&bed.cg.path).unwrap();
    assert_eq!(ServicesDatapath::attached(&bed.cg.path).unwrap(), replaced);
    let by = spread(&bed.client(true, &["tcp", VIP6, "80", "10"]), VIP6);
    assert_eq!(by.values().sum::<usize>(), 10);
    let rows = bed.client(true, &["udp", VIP4, "80", "3"]);
    assert_eq!(peer(&rows[0][1]), vip_peer(VIP4));
    // The counters are pinned too: the runs before the restart count.
    assert_eq!(bed.stat(ServiceReason::Translated), 23);
}

#[test]
fn detached_and_unpinned_nothing_is_left() {
    require_root!("detached_and_unpinned_nothing_is_left");
    let bed = Bed::new();
    bed.install_all();
    assert_eq!(ServicesDatapath::detach(&bed.cg.path).unwrap(), 8);
    assert!(ServicesDatapath::attached(&bed.cg.path).unwrap().is_empty());
    // Detached: the namespace has no route to the VIP.
    let got = bed.client(true, &["connect", VIP4, "80"]);
    assert_eq!(got["errno"], "ENETUNREACH", "{got}");
    assert_eq!(ServicesDatapath::detach(&bed.cg.path).unwrap(), 0);

    let Bed {
        dp,
        cg,
        servers,
        ns,
        bpffs,
    } = bed;
    drop(dp);
    assert_eq!(ServicesDatapath::remove_pins(bpffs.path()).unwrap(), 11);
    // A bpffs mount's own files (maps.debug, progs.debug) aside, nothing.
    let left: Vec<String> = std::fs::read_dir(bpffs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".debug"))
        .collect();
    assert!(left.is_empty(), "pins left: {left:?}");
    let cg_path = cg.path.clone();
    drop(cg);
    assert!(!cg_path.exists(), "{} is still there", cg_path.display());
    drop((servers, ns, bpffs));
}
