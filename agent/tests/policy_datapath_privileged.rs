//! The policy datapath against the real kernel: two container namespaces on veths
//! behind a host namespace that routes between them, the policy programs attached
//! to the veths' host ends with tcx, tables installed by hand, and real ping, TCP
//! and UDP through the kernel. Needs root: without it each test prints a SKIP line
//! (and fails under `STRAIT_REQUIRE_PRIVILEGED=1`).
//!
//! Everything is the test's own: namespaces named with its unique prefix (the veths
//! go with them) and a bpffs instance mounted on a directory of its own for the
//! pinned maps (this machine need not have bpffs at /sys/fs/bpf, and a test must not
//! mount one there). All are removed on exit, also on panic. Timings are printed
//! (`--nocapture`), never asserted.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_policy::ir::Protocol;
use strait_policy::tables::{Cell, DirectionTables, EndpointTables, Segment};
use strait_testbeds::netns::Netns;
use straitd::policy::datapath::{PolicyDatapath, PrivateBpffs};
use straitd::policy::dataplane::Dataplane;

const A_ID: u32 = 1000;
const B_ID: u32 = 2000;
const A_V4: &str = "10.199.1.2";
const B_V4: &str = "10.199.2.2";
const A_V6: &str = "fd99:1::2";
const B_V6: &str = "fd99:2::2";

macro_rules! require_root {
    ($name:literal) => {
        if !strait_testbeds::require_root($name) {
            return;
        }
    };
}

/// A host namespace routing between two containers `a` and `b`, each on a veth.
struct Bed {
    host: Netns,
    a: Netns,
    b: Netns,
    prefix: String,
}

impl Bed {
    fn new() -> Self {
        let prefix = strait_testbeds::unique_prefix();
        let host = Netns::new(format!("{prefix}h"));
        let a = Netns::new(format!("{prefix}a"));
        let b = Netns::new(format!("{prefix}b"));
        host.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        host.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        for (c, n, v4, v6) in [(&a, 1, A_V4, A_V6), (&b, 2, B_V4, B_V6)] {
            let veth = format!("{prefix}{}", if n == 1 { "va" } else { "vb" });
            host.exec_ok(&[
                "ip",
                "link",
                "add",
                &veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                c.name(),
            ]);
            host.exec_ok(&[
                "ip",
                "addr",
                "add",
                &format!("10.199.{n}.1/24"),
                "dev",
                &veth,
            ]);
            host.exec_ok(&[
                "ip",
                "addr",
                "add",
                &format!("fd99:{n}::1/64"),
                "dev",
                &veth,
                "nodad",
            ]);
            host.exec_ok(&["ip", "link", "set", &veth, "up"]);
            c.exec_ok(&["ip", "addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
            c.exec_ok(&[
                "ip",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            c.exec_ok(&["ip", "link", "set", "eth0", "up"]);
            c.exec_ok(&[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("10.199.{n}.1"),
            ]);
            c.exec_ok(&[
                "ip",
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("fd99:{n}::1"),
            ]);
        }
        Self { host, a, b, prefix }
    }

    fn veth(&self, c: char) -> String {
        format!("{}v{c}", self.prefix)
    }

    fn ifindex(&self, ifname: &str) -> u32 {
        self.host.ip_json(&["link", "show", ifname])[0]["ifindex"]
            .as_u64()
            .expect("ifindex") as u32
    }

    /// Attaches `dp` to container `c`'s veth, from inside the host namespace.
    fn attach(&self, dp: &Arc<PolicyDatapath>, c: char) {
        let (name, ifindex, dp) = (self.veth(c), self.ifindex(&self.veth(c)), dp.clone());
        self.host
            .run_in(move || dp.attach(&name, ifindex).map_err(std::io::Error::other))
            .unwrap();
    }

    fn is_attached(&self, dp: &Arc<PolicyDatapath>, c: char) -> bool {
        let (name, dp) = (self.veth(c), dp.clone());
        self.host
            .run_in(move || dp.is_attached(&name).map_err(std::io::Error::other))
            .unwrap()
    }

    fn ping(&self, from: &Netns, to: &str) -> bool {
        from.exec(&["ping", "-c1", "-W1", to]).status.success()
    }
}

fn ipcache() -> BTreeMap<ipnet::IpNet, u32> {
    [
        (format!("{A_V4}/32"), A_ID),
        (format!("{A_V6}/128"), A_ID),
        (format!("{B_V4}/32"), B_ID),
        (format!("{B_V6}/128"), B_ID),
    ]
    .into_iter()
    .map(|(n, i)| (n.parse().unwrap(), i))
    .collect()
}

fn allow(rule: u32) -> Cell {
    Cell {
        decision: None,
        log: None,
        allow: Some(rule),
    }
}

fn seg(first: u16, last: u16, rule: u32) -> Segment {
    Segment {
        first,
        last,
        cell: allow(rule),
    }
}

/// Isolated, allowing `peer` the listed (protocol, first, last) ports.
fn allowing(peer: u32, rules: &[(Protocol, u16, u16)]) -> DirectionTables {
    let mut t = DirectionTables {
        isolated: true,
        ..DirectionTables::default()
    };
    for (i, (proto, first, last)) in rules.iter().enumerate() {
        t.identities
            .entry((peer, *proto))
            .or_default()
            .push(seg(*first, *last, 10 + i as u32));
    }
    t
}

const ECHO: (Protocol, u16, u16) = (Protocol::ICMP, 8 << 8, (8 << 8) | 0xff);
const ECHO6: (Protocol, u16, u16) = (Protocol::ICMPV6, 128 << 8, (128 << 8) | 0xff);

/// A TCP echo server in `ns` on `port` (both families), serving connections on
/// threads until the process ends.
fn tcp_echo(ns: &Netns, port: u16) {
    let listener = ns
        .run_in(move || TcpListener::bind(("::", port)))
        .expect("binding the echo server");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 256];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

fn udp_echo(ns: &Netns, port: u16) {
    let sock = ns
        .run_in(move || UdpSocket::bind(("::", port)))
        .expect("binding the UDP echo server");
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
}

fn connect(ns: &Netns, to: SocketAddr) -> std::io::Result<TcpStream> {
    ns.run_in(move || {
        let s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(s)
    })
}

/// One round trip on an open connection.
fn round_trip(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4];
    s.write_all(b"ping").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

fn udp_round_trip(ns: &Netns, to: SocketAddr) -> bool {
    ns.run_in(move || {
        let sock = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
        sock.set_read_timeout(Some(Duration::from_secs(1)))?;
        sock.send_to(b"hello", to)?;
        let mut buf = [0u8; 16];
        let (n, _) = sock.recv_from(&mut buf)?;
        Ok(&buf[..n] == b"hello")
    })
    .unwrap_or(false)
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

#[test]
fn policy_is_enforced_on_real_traffic_and_survives_a_new_datapath() {
    require_root!("policy_is_enforced_on_real_traffic_and_survives_a_new_datapath");
    let bed = Bed::new();
    let bpffs = PrivateBpffs::new(&std::env::temp_dir(), "strait-it").unwrap();
    let dp = Arc::new(PolicyDatapath::load(bpffs.path()).unwrap());
    dp.sync_ipcache(&ipcache()).unwrap();
    bed.attach(&dp, 'a');
    bed.attach(&dp, 'b');
    assert!(bed.is_attached(&dp, 'a') && bed.is_attached(&dp, 'b'));
    tcp_echo(&bed.b, 8080);
    tcp_echo(&bed.b, 8081);
    udp_echo(&bed.b, 9090);
    let (ia, ib) = (bed.ifindex(&bed.veth('a')), bed.ifindex(&bed.veth('b')));

    // No tables: open. (The first IPv6 ping waits for the veths' link-local
    // addresses to finish DAD, which neighbour discovery needs.)
    strait_testbeds::wait_until(
        "a pings b",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || bed.ping(&bed.a, B_V4) && bed.ping(&bed.a, B_V6) && bed.ping(&bed.b, A_V6),
    )
    .unwrap();
    assert!(connect(&bed.a, addr(B_V4, 8081)).is_ok());

    // b isolated for ingress: nothing reaches it; a still reaches the host.
    let mut tb = EndpointTables {
        ingress: allowing(A_ID, &[]),
        ..EndpointTables::default()
    };
    dp.install(ib, B_ID, &tb).unwrap();
    assert!(!bed.ping(&bed.a, B_V4));
    assert!(!bed.ping(&bed.a, B_V6));
    assert!(connect(&bed.a, addr(B_V4, 8080)).is_err());
    assert!(!udp_round_trip(&bed.a, addr(B_V4, 9090)));
    assert!(bed.ping(&bed.a, "10.199.1.1"));

    // a isolated both ways, allowed out to b; b allows a in on some ports. Replies
    // pass both checks through conntrack.
    let b_ports = [
        ECHO,
        ECHO6,
        (Protocol::TCP, 8080, 8080),
        (Protocol::UDP, 9090, 9090),
    ];
    let ta = EndpointTables {
        ingress: allowing(B_ID, &[]),
        egress: allowing(B_ID, &b_ports),
    };
    dp.install(ia, A_ID, &ta).unwrap();
    tb.ingress = allowing(A_ID, &b_ports);
    dp.install(ib, B_ID, &tb).unwrap();
    assert!(bed.ping(&bed.a, B_V4) && bed.ping(&bed.a, B_V6));
    assert!(!bed.ping(&bed.b, A_V4), "a's ingress allows nothing new");
    assert!(udp_round_trip(&bed.a, addr(B_V4, 9090)));
    assert!(udp_round_trip(&bed.a, addr(B_V6, 9090)));
    assert!(
        connect(&bed.a, addr(B_V4, 8081)).is_err(),
        "port 8081 is not allowed"
    );
    let mut conn = connect(&bed.a, addr(B_V4, 8080)).expect("port 8080 is allowed");
    assert!(round_trip(&mut conn));
    let mut conn6 = connect(&bed.a, addr(B_V6, 8080)).expect("IPv6 port 8080");
    assert!(round_trip(&mut conn6));

    // An unrelated change: the connection goes on.
    let mut more = b_ports.to_vec();
    more.push((Protocol::UDP, 5353, 5353));
    tb.ingress = allowing(A_ID, &more);
    dp.install(ib, B_ID, &tb).unwrap();
    assert!(round_trip(&mut conn));

    // A new datapath from the pins (an agent restart): it adopts the tables,
    // replaces the programs in place, and enforcement is unchanged.
    let generation = dp.read_back(ib).unwrap().unwrap().generation;
    drop(dp);
    assert!(round_trip(&mut conn), "enforcement without any agent");
    assert!(!bed.ping(&bed.b, A_V4));
    let dp = Arc::new(PolicyDatapath::load(bpffs.path()).unwrap());
    assert_eq!(dp.installed().unwrap(), {
        let mut v = vec![ia, ib];
        v.sort();
        v
    });
    let back = dp.read_back(ib).unwrap().unwrap();
    assert_eq!((back.identity, back.generation), (B_ID, generation));
    assert_eq!(back.tables, straitd::policy::datapath::canonical(&tb));
    assert_eq!(dp.read_ipcache().unwrap(), ipcache());
    bed.attach(&dp, 'a');
    bed.attach(&dp, 'b');
    assert!(bed.is_attached(&dp, 'a') && bed.is_attached(&dp, 'b'));
    assert!(
        round_trip(&mut conn),
        "replacing the programs keeps the connection"
    );
    assert!(round_trip(&mut conn6));
    assert!(!bed.ping(&bed.b, A_V4));
    assert!(connect(&bed.a, addr(B_V4, 8081)).is_err());

    // The rule gone: the established connection ends on its next packet.
    let flows = dp.conntrack().unwrap();
    assert!(
        flows.iter().any(|f| f.protocol == 6 && f.dst_port == 8080),
        "{flows:?}"
    );
    tb.ingress = allowing(A_ID, &[ECHO]);
    dp.install(ib, B_ID, &tb).unwrap();
    assert!(!round_trip(&mut conn));
    assert!(bed.ping(&bed.a, B_V4));
    let stats = dp.stats().unwrap();
    println!("policy counters: {stats:?}");

    // Removed: b is open again (to what a's egress allows).
    dp.remove(ib).unwrap();
    assert!(connect(&bed.a, addr(B_V4, 8080)).is_ok());
    drop(dp);
    drop(bed);
    drop(bpffs);
}

#[test]
fn attaching_to_fifty_veths_costs_this_much() {
    require_root!("attaching_to_fifty_veths_costs_this_much");
    let prefix = strait_testbeds::unique_prefix();
    let ns = Netns::new(format!("{prefix}n"));
    let bpffs = PrivateBpffs::new(&std::env::temp_dir(), "strait-ib").unwrap();
    let dp = Arc::new(PolicyDatapath::load(bpffs.path()).unwrap());
    let n = 50;
    for i in 0..n {
        ns.exec_ok(&[
            "ip",
            "link",
            "add",
            &format!("h{i}"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("c{i}"),
        ]);
        ns.exec_ok(&["ip", "link", "set", &format!("h{i}"), "up"]);
    }
    let indexes: Vec<(String, u32)> = (0..n)
        .map(|i| {
            let name = format!("h{i}");
            let idx = ns.ip_json(&["link", "show", &name])[0]["ifindex"]
                .as_u64()
                .unwrap() as u32;
            (name, idx)
        })
        .collect();
    let timed = |dp: Arc<PolicyDatapath>, indexes: Vec<(String, u32)>| {
        ns.run_in(move || {
            let mut took = Vec::new();
            for (name, idx) in &indexes {
                let start = Instant::now();
                dp.attach(name, *idx).map_err(std::io::Error::other)?;
                took.push(start.elapsed());
            }
            took.sort();
            Ok(took)
        })
        .unwrap()
    };
    let first = timed(dp.clone(), indexes.clone());
    // A new agent's programs replacing the old in place (BPF_F_REPLACE).
    let next = Arc::new(PolicyDatapath::load(bpffs.path()).unwrap());
    let replace = timed(next.clone(), indexes.clone());
    let (name, _) = &indexes[0];
    let name = name.clone();
    let next2 = next.clone();
    assert!(
        ns.run_in(move || next2.is_attached(&name).map_err(std::io::Error::other))
            .unwrap()
    );
    let pct = |t: &[Duration], p: usize| t[(t.len() * p / 100).min(t.len() - 1)];
    println!(
        "tcx attach (both hooks) over {n} veths: median {:?}, p90 {:?}, max {:?}; \
         replacing a previous agent's: median {:?}, p90 {:?}, max {:?}",
        pct(&first, 50),
        pct(&first, 90),
        first[n - 1],
        pct(&replace, 50),
        pct(&replace, 90),
        replace[n - 1]
    );
    drop((dp, next));
    drop(ns);
    drop(bpffs);
}
