//! Privileged tests of a container's interface (`straitd::endpoint`) against the real
//! kernel. They need root: without it each test prints a SKIP line and returns, and
//! under `STRAIT_REQUIRE_PRIVILEGED=1` it fails instead (`strait_testbeds::require_root`).
//!
//! Each test makes its own "host" and container namespaces named `stt-ep-<pid>-<n>-…`,
//! runs the agent code on a thread inside its host namespace (with a current-thread
//! runtime, as the agent's own namespace), and deletes the namespaces on exit — also
//! on panic — which takes every link in them along. Traffic stays inside them.
//!
//! Timings are printed (run with `--nocapture`), never asserted.

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use straitd::endpoint::{self, CheckError, EndpointError, Problem, Side, VethSpec, host_ifname};
use straitd::netlink::{Netlink, RTPROT_STRAIT};
use straitd::netns::{self, NetNs};

static NEXT: AtomicUsize = AtomicUsize::new(0);
/// `ip netns add` makes /run/netns a shared mount the first time; concurrent first
/// calls can trip over each other, so namespace creation is serialised.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// The shared privilege guard: without root a test prints SKIP and returns, and under
/// `STRAIT_REQUIRE_PRIVILEGED=1` (CI) it fails instead.
macro_rules! require_root {
    ($name:literal) => {
        if !strait_testbeds::require_root($name) {
            return;
        }
    };
}

/// Runs a command and returns its stdout; panics with its stderr on failure.
fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn succeeds(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The namespaces of one test; deleted on drop.
struct Namespaces {
    prefix: String,
    names: Vec<String>,
}

impl Namespaces {
    fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        Self {
            prefix: format!("stt-ep-{}-{n}", std::process::id()),
            names: Vec::new(),
        }
    }

    /// Creates namespace `<prefix>-<suffix>` and returns its name.
    fn add(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.prefix);
        {
            let _serial = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run(&["ip", "netns", "add", &name]);
        }
        self.names.push(name.clone());
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let _serial = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        for name in &self.names {
            // Best effort: a failure here must not turn into a panic while panicking.
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

fn ns_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/{name}"))
}

/// Runs `body` on a fresh thread inside namespace `host` with a current-thread runtime:
/// for the code under test, that namespace is "the agent's own".
fn in_host<F, Fut>(host: &str, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    NetNs::open(ns_path(host))
        .expect("open host netns")
        .run(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(body());
        })
        .expect("enter host netns");
}

fn spec(container_ns: &str, id: &str, ips: &[&str]) -> VethSpec {
    VethSpec {
        host_ifname: host_ifname("test", &format!("{container_ns}-{id}"), "eth0"),
        container_ifname: "eth0".into(),
        netns: ns_path(container_ns),
        ips: ips.iter().map(|s| s.parse().expect("ip")).collect(),
        mtu: 0,
        container_mac: None,
        owner: None,
        handover: false,
    }
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&run(args)).unwrap_or_else(|e| panic!("{args:?}: bad JSON: {e}"))
}

/// The `strait*` links in namespace `ns`.
fn strait_links(ns: &str) -> Vec<String> {
    json(&["ip", "-n", ns, "-j", "link", "show"])
        .as_array()
        .expect("links")
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| n.starts_with("strait"))
        .map(str::to_string)
        .collect()
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| millis(samples[((samples.len() - 1) as f64 * q).round() as usize]);
    eprintln!(
        "TIMING {label}: n={} min={:.2}ms p50={:.2}ms p90={:.2}ms max={:.2}ms",
        samples.len(),
        at(0.0),
        at(0.5),
        at(0.9),
        at(1.0)
    );
}

#[test]
fn setup_gives_container_addresses_routes_and_neighbours() {
    require_root!("setup_gives_container_addresses_routes_and_neighbours");
    let mut ns = Namespaces::new();
    let host = ns.add("h");
    let ctr = ns.add("c");
    let spec = spec(&ctr, "a", &["10.77.0.5", "fd77::5"]);
    let s = spec.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    in_host(&host, move || async move {
        let nl = Netlink::connect().expect("netlink");
        let started = Instant::now();
        let created = endpoint::setup(&nl, &s).await.expect("setup");
        eprintln!(
            "TIMING setup (first, v4+v6): {:.2}ms",
            millis(started.elapsed())
        );
        tx.send(created).expect("send");
    });
    let created = rx.recv().expect("created");
    assert_eq!(created.host_ifname, spec.host_ifname);

    // Container: the interface, its addresses as /32 and /128, up, with lo up.
    let links = json(&["ip", "-n", &ctr, "-j", "link", "show", "eth0"]);
    let eth0 = &links[0];
    assert_eq!(
        eth0["ifindex"].as_u64(),
        Some(u64::from(created.container_ifindex))
    );
    assert_eq!(
        eth0["address"].as_str(),
        Some(created.container_mac.as_str())
    );
    assert!(
        eth0["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .any(|f| f == "UP")
    );
    let lo = json(&["ip", "-n", &ctr, "-j", "link", "show", "lo"]);
    assert!(
        lo[0]["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .any(|f| f == "UP")
    );
    let addrs = json(&["ip", "-n", &ctr, "-j", "addr", "show", "dev", "eth0"]);
    let infos: Vec<(String, u64, bool)> = addrs[0]["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .map(|a| {
            (
                a["local"].as_str().unwrap_or_default().to_string(),
                a["prefixlen"].as_u64().unwrap_or_default(),
                a["tentative"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert!(
        infos.contains(&("10.77.0.5".into(), 32, false)),
        "{infos:?}"
    );
    assert!(infos.contains(&("fd77::5".into(), 128, false)), "{infos:?}");

    // Container routes.
    // Their metric is the interface's index, so a second interface's copies coexist.
    let metric = created.container_ifindex;
    let v4 = run(&["ip", "-n", &ctr, "route", "show"]);
    assert!(
        v4.contains(&format!(
            "default via 169.254.1.1 dev eth0 proto 83 metric {metric} onlink"
        )),
        "{v4}"
    );
    assert!(
        v4.contains(&format!(
            "169.254.1.1 dev eth0 proto 83 scope link metric {metric}"
        )),
        "{v4}"
    );
    let v6 = run(&["ip", "-n", &ctr, "-6", "route", "show"]);
    assert!(
        v6.contains(&format!(
            "default via fe80::1 dev eth0 proto 83 metric {metric}"
        )),
        "{v6}"
    );

    // Container neighbours: both gateways → host veth MAC, permanent.
    let neigh = run(&["ip", "-n", &ctr, "neigh", "show", "nud", "permanent"]);
    for gw in ["169.254.1.1", "fe80::1"] {
        let line = format!("{gw} dev eth0 lladdr {} PERMANENT", created.host_mac);
        assert!(neigh.contains(&line), "missing {line:?} in {neigh}");
    }

    // Host: the veth up with proxy_arp, routes tagged 83, neighbours to the container MAC.
    let hl = json(&["ip", "-n", &host, "-j", "link", "show", &spec.host_ifname]);
    assert_eq!(
        hl[0]["ifindex"].as_u64(),
        Some(u64::from(created.host_ifindex))
    );
    assert_eq!(hl[0]["address"].as_str(), Some(created.host_mac.as_str()));
    assert!(
        hl[0]["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .any(|f| f == "UP")
    );
    let proxy = run(&[
        "ip",
        "netns",
        "exec",
        &host,
        "cat",
        &format!("/proc/sys/net/ipv4/conf/{}/proxy_arp", spec.host_ifname),
    ]);
    assert_eq!(proxy.trim(), "1");
    let hr = run(&["ip", "-n", &host, "route", "show", "proto", "83"]);
    assert!(
        hr.contains(&format!("10.77.0.5 dev {} scope link", spec.host_ifname)),
        "{hr}"
    );
    let hr6 = run(&["ip", "-n", &host, "-6", "route", "show", "proto", "83"]);
    assert!(
        hr6.contains(&format!("fd77::5 dev {}", spec.host_ifname)),
        "{hr6}"
    );
    let hn = run(&["ip", "-n", &host, "neigh", "show", "nud", "permanent"]);
    for ip in ["10.77.0.5", "fd77::5"] {
        let line = format!(
            "{ip} dev {} lladdr {} PERMANENT",
            spec.host_ifname, created.container_mac
        );
        assert!(hn.contains(&line), "missing {line:?} in {hn}");
    }
}

#[test]
fn two_containers_ping_each_other_and_timings() {
    require_root!("two_containers_ping_each_other_and_timings");
    let mut ns = Namespaces::new();
    let host = ns.add("h");
    let c1 = ns.add("c1");
    let c2 = ns.add("c2");
    let s1 = spec(&c1, "1", &["10.78.0.1", "fd78::1"]);
    let s2 = spec(&c2, "2", &["10.78.0.2", "fd78::2"]);
    let (a, b) = (s1.clone(), s2.clone());
    in_host(&host, move || async move {
        let nl = Netlink::connect().expect("netlink");
        endpoint::enable_forwarding(&nl).await.expect("forwarding");
        let t = Instant::now();
        endpoint::setup(&nl, &a).await.expect("setup c1");
        let first = t.elapsed();
        let t = Instant::now();
        endpoint::setup(&nl, &b).await.expect("setup c2");
        eprintln!(
            "TIMING setup c1={:.2}ms c2={:.2}ms",
            millis(first),
            millis(t.elapsed())
        );
        let mut owned = endpoint::list_owned_links(&nl).await.expect("list");
        owned.sort();
        let mut want = vec![a.host_ifname.clone(), b.host_ifname.clone()];
        want.sort();
        assert_eq!(owned.into_iter().map(|l| l.name).collect::<Vec<_>>(), want);
    });
    for key in ["ipv4/ip_forward", "ipv6/conf/all/forwarding"] {
        let value = run(&[
            "ip",
            "netns",
            "exec",
            &host,
            "cat",
            &format!("/proc/sys/net/{key}"),
        ]);
        assert_eq!(value.trim(), "1", "{key}");
    }
    for (from, to) in [
        (&c1, "10.78.0.2"),
        (&c2, "10.78.0.1"),
        (&c1, "fd78::2"),
        (&c2, "fd78::1"),
    ] {
        let t = Instant::now();
        run(&["ip", "netns", "exec", from, "ping", "-c1", "-W1", to]);
        eprintln!("ping {from} -> {to}: ok in {:.2}ms", millis(t.elapsed()));
    }

    // Latency: setup, route removal, link down and deletion, repeated on a fresh
    // endpoint (same container namespace, new interface) each round.
    let c3 = ns.add("c3");
    let (tx, rx) = std::sync::mpsc::channel();
    let host_for_timing = host.clone();
    in_host(&host_for_timing, move || async move {
        let nl = Netlink::connect().expect("netlink");
        let (mut setup, mut routes, mut down, mut delete, mut down_then_delete) =
            (vec![], vec![], vec![], vec![], vec![]);
        for round in 0..40 {
            let mut s = spec(&c3, &format!("t{round}"), &["10.78.1.1", "fd78:1::1"]);
            s.mtu = 1450;
            let ips = s.ips.clone();
            let t = Instant::now();
            endpoint::setup(&nl, &s).await.expect("setup");
            setup.push(t.elapsed());
            let t = Instant::now();
            endpoint::remove_host_routes(&nl, &s.host_ifname, &ips)
                .await
                .expect("remove routes");
            routes.push(t.elapsed());
            if round % 2 == 0 {
                let t = Instant::now();
                endpoint::delete_link(&nl, &s.host_ifname)
                    .await
                    .expect("delete");
                delete.push(t.elapsed());
            } else {
                let link = nl
                    .link_by_name(&s.host_ifname)
                    .await
                    .expect("get")
                    .expect("exists");
                let t = Instant::now();
                nl.set_down(link.index).await.expect("down");
                down.push(t.elapsed());
                let t2 = Instant::now();
                endpoint::delete_link(&nl, &s.host_ifname)
                    .await
                    .expect("delete");
                down_then_delete.push(t2.elapsed());
            }
        }
        tx.send((setup, routes, down, delete, down_then_delete))
            .expect("send");
    });
    let (setup, routes, down, delete, down_then_delete) = rx.recv().expect("timings");
    summary("setup (v4+v6, mtu)", setup);
    summary("remove_host_routes", routes);
    summary("set link down", down);
    summary("delete_link (up link)", delete);
    summary("delete_link (after down)", down_then_delete);
    let mut left = strait_links(&host);
    left.sort();
    let mut want = vec![s1.host_ifname.clone(), s2.host_ifname.clone()];
    want.sort();
    assert_eq!(left, want);
}

#[test]
fn mtu_and_static_container_mac_are_applied() {
    require_root!("mtu_and_static_container_mac_are_applied");
    let mut ns = Namespaces::new();
    let host = ns.add("h");
    let ctr = ns.add("c");
    let mut s = spec(&ctr, "m", &["10.79.0.9"]);
    s.mtu = 1400;
    s.container_mac = Some([0x02, 0x42, 0xac, 0x11, 0x00, 0x09]);
    let s2 = s.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    in_host(&host, move || async move {
        let nl = Netlink::connect().expect("netlink");
        tx.send(endpoint::setup(&nl, &s2).await.expect("setup"))
            .expect("send");
    });
    let created = rx.recv().expect("created");
    assert_eq!(created.container_mac, "02:42:ac:11:00:09");
    let c = json(&["ip", "-n", &ctr, "-j", "link", "show", "eth0"]);
    assert_eq!(c[0]["mtu"].as_u64(), Some(1400));
    assert_eq!(c[0]["address"].as_str(), Some("02:42:ac:11:00:09"));
    let h = json(&["ip", "-n", &host, "-j", "link", "show", &s.host_ifname]);
    assert_eq!(h[0]["mtu"].as_u64(), Some(1400));
    // IPv4 only: no IPv6 default route or gateway neighbour in the container.
    let v6 = run(&["ip", "-n", &ctr, "-6", "route", "show", "default"]);
    assert!(v6.trim().is_empty(), "{v6}");
}

#[test]
fn failures_midway_leave_no_link_behind() {
    require_root!("failures_midway_leave_no_link_behind");
    let mut ns = Namespaces::new();
    let host = ns.add("h");
    let ctr = ns.add("c");
    let busy = ns.add("busy");
    let nov6 = ns.add("nov6");
    // The container name is taken in `busy`.
    run(&[
        "ip", "-n", &busy, "link", "add", "eth0", "type", "veth", "peer", "name", "other",
    ]);
    // `nov6` refuses IPv6 on new interfaces: setup fails after the veth exists.
    run(&[
        "ip",
        "netns",
        "exec",
        &nov6,
        "sysctl",
        "-qw",
        "net.ipv6.conf.default.disable_ipv6=1",
    ]);
    let (missing, taken, late) = (
        VethSpec {
            netns: PathBuf::from(format!("/run/netns/{}-nonexistent", ns.prefix)),
            ..spec(&ctr, "x", &["10.80.0.1"])
        },
        spec(&busy, "y", &["10.80.0.2"]),
        spec(&nov6, "z", &["10.80.0.3", "fd80::3"]),
    );
    let host2 = host.clone();
    in_host(&host, move || async move {
        let nl = Netlink::connect().expect("netlink");
        let err = endpoint::setup(&nl, &missing).await.expect_err("no netns");
        eprintln!("missing netns -> {err}");
        assert!(matches!(err, EndpointError::Netns(_)), "{err}");

        let err = endpoint::setup(&nl, &taken).await.expect_err("name taken");
        eprintln!("name taken -> {err}");
        assert!(
            matches!(err, EndpointError::ContainerLinkExists { ref ifname, .. } if ifname == "eth0"),
            "{err}"
        );

        let err = endpoint::setup(&nl, &late).await.expect_err("no IPv6");
        eprintln!("late failure -> {err}");
        assert!(
            matches!(err, EndpointError::ContainerSide { ref ifname, .. } if ifname == "eth0"),
            "{err}"
        );
        assert!(
            nl.link_by_name(&late.host_ifname)
                .await
                .expect("get")
                .is_none()
        );
        assert!(nl.strait_routes().await.expect("routes").is_empty());
    });
    assert!(
        strait_links(&host2).is_empty(),
        "{:?}",
        strait_links(&host2)
    );
    // The pre-existing interface in `busy` is untouched, and `nov6` holds no eth0.
    assert!(succeeds(&["ip", "-n", &busy, "link", "show", "eth0"]));
    assert!(!succeeds(&["ip", "-n", &nov6, "link", "show", "eth0"]));
}

#[test]
fn stale_host_link_is_detected_and_left_alone() {
    require_root!("stale_host_link_is_detected_and_left_alone");
    let mut ns = Namespaces::new();
    let host = ns.add("h");
    let ctr = ns.add("c");
    let s = spec(&ctr, "s", &["10.81.0.1"]);
    run(&[
        "ip",
        "-n",
        &host,
        "link",
        "add",
        &s.host_ifname,
        "type",
        "veth",
        "peer",
        "name",
        "stalepeer",
    ]);
    let (s2, host2) = (s.clone(), host.clone());
    in_host(&host, move || async move {
        let nl = Netlink::connect().expect("netlink");
        let err = endpoint::setup(&nl, &s2).await.expect_err("stale");
        eprintln!("stale -> {err}");
        assert!(
            matches!(err, EndpointError::HostLinkExists { ref ifname, .. } if *ifname == s2.host_ifname),
            "{err}"
        );
        // Still there: setup never deletes what it did not create.
        assert!(
            nl.link_by_name(&s2.host_ifname)
                .await
                .expect("get")
                .is_some()
        );
        // The caller's way out: delete it, then set up again.
        endpoint::delete_link(&nl, &s2.host_ifname)
            .await
            .expect("delete");
        endpoint::setup(&nl, &s2)
            .await
            .expect("setup after cleanup");
    });
    assert_eq!(strait_links(&host2), vec![s.host_ifname.clone()]);
}

#[test]
fn check_passes_then_names_what_is_missing() {
    require_root!("check_passes_then_names_what_is_missing");
    let mut ns = Namespaces::new();
    let host = ns.add("h");
    let ctr = ns.add("c");
    let mut s = spec(&ctr, "k", &["10.82.0.1", "fd82::1"]);
    s.mtu = 1450;
    let (s2, host2, ctr2) = (s.clone(), host.clone(), ctr.clone());
    in_host(&host, move || async move {
        let nl = Netlink::connect().expect("netlink");
        endpoint::setup(&nl, &s2).await.expect("setup");
        let t = Instant::now();
        endpoint::check(&nl, &s2).await.expect("check passes");
        eprintln!("TIMING check: {:.2}ms", millis(t.elapsed()));

        // Behind its back: an address in the container and a host route go.
        run(&[
            "ip",
            "-n",
            &ctr2,
            "addr",
            "del",
            "10.82.0.1/32",
            "dev",
            "eth0",
        ]);
        run(&[
            "ip",
            "-n",
            &host2,
            "-6",
            "route",
            "del",
            "fd82::1",
            "dev",
            &s2.host_ifname,
        ]);
        let err = endpoint::check(&nl, &s2).await.expect_err("check fails");
        eprintln!("check -> {err}");
        let CheckError::Mismatch { problems, .. } = err else {
            panic!("unexpected {err}");
        };
        let ip4: IpAddr = "10.82.0.1".parse().expect("ip");
        assert!(problems.contains(&Problem::AddressMissing {
            ip: ip4,
            prefix_len: 32,
            ifname: "eth0".into()
        }));
        assert!(problems.iter().any(|p| matches!(
            p,
            Problem::RouteMissing { side: Side::Host, route } if route.starts_with("fd82::1 dev")
        )));
        // Removing the container's last IPv4 address also makes the kernel flush the
        // IPv4 routes and neighbours through eth0: check reports those too.
        assert!(problems.iter().any(|p| matches!(
            p,
            Problem::RouteMissing { side: Side::Container, route } if route.starts_with("default via 169.254.1.1")
        )));
        assert!(!problems.iter().any(|p| matches!(
            p,
            Problem::RouteMissing { side: Side::Container, route } if route.starts_with("default via fe80::1")
        )));

        // The container interface down and its MTU changed: both named.
        run(&[
            "ip", "-n", &ctr2, "link", "set", "eth0", "down", "mtu", "1400",
        ]);
        let Err(CheckError::Mismatch { problems, .. }) = endpoint::check(&nl, &s2).await else {
            panic!("check should fail");
        };
        assert!(problems.iter().any(|p| matches!(
            p,
            Problem::LinkDown {
                side: Side::Container,
                ..
            }
        )));
        assert!(problems.iter().any(|p| matches!(
            p,
            Problem::MtuMismatch {
                side: Side::Container,
                actual: 1400,
                ..
            }
        )));

        // The host veth gone: that is what it reports (the peer went with it).
        endpoint::delete_link(&nl, &s2.host_ifname)
            .await
            .expect("delete");
        let err = endpoint::check(&nl, &s2).await.expect_err("check fails");
        eprintln!("check after delete -> {err}");
        let CheckError::Mismatch { problems, .. } = err else {
            panic!("unexpected {err}");
        };
        assert!(problems.iter().any(|p| matches!(
            p,
            Problem::LinkMissing {
                side: Side::Host,
                ..
            }
        )));
        assert!(problems.iter().any(|p| matches!(
            p,
            Problem::LinkMissing {
                side: Side::Container,
                ..
            }
        )));
    });
}

#[test]
fn host_namespace_is_rejected_as_container_namespace() {
    require_root!("host_namespace_is_rejected_as_container_namespace");
    let mut ns = Namespaces::new();
    let host = ns.add("h");
    let ctr = ns.add("c");
    let (host2, ctr2) = (host.clone(), ctr.clone());
    in_host(&host, move || async move {
        assert!(netns::is_same_as_current(ns_path(&host2)).expect("compare"));
        assert!(!netns::is_same_as_current(ns_path(&ctr2)).expect("compare"));
        assert!(netns::is_same_as_current("/proc/thread-self/ns/net").expect("compare"));
        let nl = Netlink::connect().expect("netlink");
        let s = VethSpec {
            netns: ns_path(&host2),
            ..spec(&ctr2, "h", &["10.83.0.1"])
        };
        let err = endpoint::setup(&nl, &s).await.expect_err("host netns");
        eprintln!("host netns -> {err}");
        assert!(matches!(err, EndpointError::HostNamespace { .. }), "{err}");
    });
    assert!(strait_links(&host).is_empty());
    // From the test's own (init) namespace, neither is the current one.
    assert!(!netns::is_same_as_current(ns_path(&host)).expect("compare"));
}

#[test]
fn delete_link_and_remove_host_routes_are_idempotent() {
    require_root!("delete_link_and_remove_host_routes_are_idempotent");
    let mut ns = Namespaces::new();
    let host = ns.add("h");
    let ctr = ns.add("c");
    let s = spec(&ctr, "d", &["10.84.0.1", "fd84::1"]);
    let host2 = host.clone();
    in_host(&host, move || async move {
        let nl = Netlink::connect().expect("netlink");
        endpoint::setup(&nl, &s).await.expect("setup");
        endpoint::remove_host_routes(&nl, &s.host_ifname, &s.ips)
            .await
            .expect("remove routes");
        assert!(nl.strait_routes().await.expect("routes").is_empty());
        // Again: the routes are already gone.
        endpoint::remove_host_routes(&nl, &s.host_ifname, &s.ips)
            .await
            .expect("remove routes again");
        endpoint::delete_link(&nl, &s.host_ifname)
            .await
            .expect("delete");
        endpoint::delete_link(&nl, &s.host_ifname)
            .await
            .expect("delete again");
        endpoint::delete_link(&nl, "straitffffffff")
            .await
            .expect("delete never-was");
        // With the link gone, route removal has nothing to do.
        endpoint::remove_host_routes(&nl, &s.host_ifname, &s.ips)
            .await
            .expect("remove routes without link");
        assert!(nl.strait_routes().await.expect("routes").is_empty());
        let routes = nl.routes(Some(RTPROT_STRAIT)).await.expect("routes");
        assert!(routes.is_empty());
    });
    assert!(strait_links(&host2).is_empty());
    assert!(!succeeds(&["ip", "-n", &ctr, "link", "show", "eth0"]));
}

#[test]
fn list_owned_links_lists_endpoints_only() {
    require_root!("list_owned_links_lists_endpoints_only");
    let mut ns = Namespaces::new();
    let host = ns.add("h");
    let ctr = ns.add("c");
    // strait-named, but not an endpoint's host end (a fabric device, say).
    run(&[
        "ip",
        "-n",
        &host,
        "link",
        "add",
        "straitfab0",
        "type",
        "veth",
        "peer",
        "name",
        "fabpeer",
    ]);
    let s = VethSpec {
        owner: Some("strait:0123456789abcdef".into()),
        ..spec(&ctr, "l", &["10.85.0.1"])
    };
    in_host(&host, move || async move {
        let nl = Netlink::connect().expect("netlink");
        assert!(
            endpoint::list_owned_links(&nl)
                .await
                .expect("list")
                .is_empty()
        );
        let created = endpoint::setup(&nl, &s).await.expect("setup");
        assert_eq!(
            endpoint::list_owned_links(&nl).await.expect("list"),
            vec![endpoint::HostEnd::new(
                s.host_ifname.clone(),
                created.host_ifindex,
                Some("strait:0123456789abcdef")
            )],
            "listed with the owner mark set in its alias"
        );
        let all: Vec<String> = nl
            .strait_links()
            .await
            .expect("links")
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert!(all.contains(&"straitfab0".to_string()), "{all:?}");
    });
}

#[test]
fn abandoned_setup_leaves_no_link_behind() {
    require_root!("abandoned_setup_leaves_no_link_behind");
    let mut ns = Namespaces::new();
    let host = ns.add("h");
    let ctr = ns.add("c");
    let s = spec(&ctr, "ab", &["10.86.0.1", "fd86::1"]);
    let host2 = host.clone();
    in_host(&host, move || async move {
        let nl = Netlink::connect().expect("netlink");
        // One poll starts the setup; then the caller goes away.
        let mut pending = Box::pin(endpoint::setup(&nl, &s));
        assert!(futures::poll!(pending.as_mut()).is_pending());
        drop(pending);
        // The setup still completes (the link appears for a millisecond or two) and is
        // then undone (the link goes). Polling back to back (a lookup is ~50 µs; timers
        // would sleep a whole millisecond) catches the first phase.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut polls = 0;
        while nl
            .link_by_name(&s.host_ifname)
            .await
            .expect("get")
            .is_none()
        {
            polls += 1;
            assert!(
                Instant::now() < deadline,
                "abandoned setup never built its link ({polls} polls)"
            );
            tokio::task::yield_now().await;
        }
        while nl
            .link_by_name(&s.host_ifname)
            .await
            .expect("get")
            .is_some()
        {
            assert!(Instant::now() < deadline, "abandoned link still there");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    assert!(strait_links(&host2).is_empty());
    assert!(!succeeds(&["ip", "-n", &ctr, "link", "show", "eth0"]));
}

/// Docker's hand-over: both ends stay on the host, the host side is configured as for
/// any endpoint (routes, neighbours, proxy ARP, `fe80::1` for the container's IPv6
/// gateway), the container end waits down with its MAC for the runtime to move it, and
/// deleting the host end takes both.
#[test]
fn handover_leaves_the_container_end_on_the_host_for_the_runtime() {
    require_root!("handover_leaves_the_container_end_on_the_host_for_the_runtime");
    let mut ns = Namespaces::new();
    let host = ns.add("h");
    let s = VethSpec {
        container_ifname: "stpho0".into(),
        netns: PathBuf::new(),
        container_mac: Some([0x02, 0x42, 0x0a, 0x57, 0x00, 0x05]),
        handover: true,
        ..spec("unused", "ho", &["10.87.0.5", "fd87::5"])
    };
    let s2 = s.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    in_host(&host, move || async move {
        let nl = Netlink::connect().expect("netlink");
        tx.send(endpoint::setup(&nl, &s2).await.expect("setup"))
            .expect("send");
    });
    let created = rx.recv().expect("created");
    let peer = json(&["ip", "-n", &host, "-j", "link", "show", "stpho0"]);
    assert_eq!(peer[0]["address"].as_str(), Some("02:42:0a:57:00:05"));
    assert_eq!(
        peer[0]["ifindex"].as_u64(),
        Some(u64::from(created.container_ifindex))
    );
    assert!(
        !peer[0]["flags"]
            .as_array()
            .expect("flags")
            .iter()
            .any(|f| f == "UP"),
        "the runtime brings it up inside the container"
    );
    let routes = run(&["ip", "-n", &host, "route", "show", "dev", &s.host_ifname]);
    assert!(routes.contains("10.87.0.5 proto 83 scope link"), "{routes}");
    let routes6 = run(&[
        "ip",
        "-n",
        &host,
        "-6",
        "route",
        "show",
        "dev",
        &s.host_ifname,
    ]);
    assert!(routes6.contains("fd87::5 proto 83"), "{routes6}");
    let neigh = run(&["ip", "-n", &host, "neigh", "show", "dev", &s.host_ifname]);
    assert!(
        neigh.contains("10.87.0.5 lladdr 02:42:0a:57:00:05 PERMANENT"),
        "{neigh}"
    );
    let addrs = run(&[
        "ip",
        "-n",
        &host,
        "-6",
        "addr",
        "show",
        "dev",
        &s.host_ifname,
    ]);
    assert!(addrs.contains("inet6 fe80::1/64"), "{addrs}");
    assert_eq!(
        run(&[
            "ip",
            "netns",
            "exec",
            &host,
            "cat",
            &format!("/proc/sys/net/ipv4/conf/{}/proxy_arp", s.host_ifname)
        ])
        .trim(),
        "1"
    );
    let name = s.host_ifname.clone();
    in_host(&host, move || async move {
        let nl = Netlink::connect().expect("netlink");
        endpoint::delete_link(&nl, &name).await.expect("delete");
    });
    assert!(strait_links(&host).is_empty());
    assert!(
        !succeeds(&["ip", "-n", &host, "link", "show", "stpho0"]),
        "the peer went with it"
    );
}
