//! FIB sync of the BGP fabric against the real kernel, in a namespace made here: the
//! speaker's changes become proto-83 routes (one gateway, or one ECMP route), a restart
//! adopts what is there and purges only stale proto-83 gateway routes at convergence,
//! and 100 000 routes go in and out with the time printed beside `ip -batch`. The
//! kernel is read back with `ip -j route` (not with the code under test). Needs root
//! (visible SKIP otherwise); the namespace is deleted on drop, also on panic.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use ipnet::IpNet;
use strait_bgp::codec::NextHop;
use strait_bgp::rib::FibChange;
use strait_testbeds::netns::Netns;
use straitd::fabric::bgp::fib::{FibSync, LocalPrefixes};
use straitd::netlink::Netlink;
use straitd::netns::NetNs;

/// A namespace with `eth0` (a veth whose peer stays inside; this kernel has no dummy
/// links) on 10.0.0.1/16 and fd99::1/64: the next hops 10.0.x.y and fd99::x are on its
/// connected subnets.
fn host() -> Netns {
    let ns = Netns::new(format!("{}fib", strait_testbeds::unique_prefix()));
    veth(&ns, "eth0");
    ns.exec_ok(&["ip", "addr", "add", "10.0.0.1/16", "dev", "eth0"]);
    ns.exec_ok(&["ip", "addr", "add", "fd99::1/64", "dev", "eth0", "nodad"]);
    ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
    ns
}

/// A link `name` that is up, with its veth peer `<name>p` up in the same namespace.
fn veth(ns: &Netns, name: &str) {
    let peer = format!("{name}p");
    ns.exec_ok(&[
        "ip", "link", "add", name, "type", "veth", "peer", "name", &peer,
    ]);
    ns.exec_ok(&["ip", "link", "set", &peer, "up"]);
    ns.exec_ok(&["ip", "link", "set", name, "up"]);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn netlink(ns: &Netns) -> Netlink {
    let netns = NetNs::open(ns.path()).expect("open netns");
    Netlink::open_in(&netns).await.expect("netlink")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}

fn change(prefix: &str, gateways: &[&str]) -> FibChange {
    FibChange {
        prefix: net(prefix),
        next_hops: gateways
            .iter()
            .map(|g| match g.parse::<IpAddr>().expect("ip") {
                IpAddr::V4(v4) => NextHop::V4(v4),
                IpAddr::V6(global) => NextHop::V6 {
                    global,
                    link_local: None,
                },
            })
            .collect(),
    }
}

/// The main table as `ip` shows it: destination → `"via A,B proto P"`, or
/// `"blackhole proto P"`, or `"dev D proto P"`.
fn routes(ns: &Netns) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for family in ["-4", "-6"] {
        let list = ns.ip_json(&[family, "route", "show", "table", "main"]);
        for r in list.as_array().expect("array") {
            let dst = r["dst"].as_str().expect("dst").to_string();
            let proto = r["protocol"].as_str().unwrap_or("?");
            if proto == "kernel" || dst.starts_with("fe80") || dst.starts_with("ff00") {
                continue;
            }
            let dst = if dst.contains('/') {
                dst
            } else if family == "-4" {
                format!("{dst}/32")
            } else {
                format!("{dst}/128")
            };
            // A gateway of the other family is `"via": {"family": "inet6", "host": …}`.
            let gateway = |h: &serde_json::Value| {
                h["gateway"].as_str().map(String::from).or_else(|| {
                    let via = &h["via"];
                    Some(format!(
                        "{} {}",
                        via["family"].as_str()?,
                        via["host"].as_str()?
                    ))
                })
            };
            let mut gateways: Vec<String> = match r["nexthops"].as_array() {
                Some(hops) => hops.iter().filter_map(gateway).collect(),
                None => gateway(r).into_iter().collect(),
            };
            gateways.sort();
            let what = if r["type"].as_str() == Some("blackhole") {
                "blackhole".to_string()
            } else if gateways.is_empty() {
                format!("dev {}", r["dev"].as_str().unwrap_or("?"))
            } else {
                format!("via {}", gateways.join(","))
            };
            out.insert(dst, format!("{what} proto {proto}"));
        }
    }
    out
}

fn expect(ns: &Netns, want: &[(&str, &str)]) {
    let want: BTreeMap<String, String> = want
        .iter()
        .map(|(d, w)| (d.to_string(), w.to_string()))
        .collect();
    assert_eq!(routes(ns), want);
}

#[test]
fn single_and_multipath_routes_are_installed_replaced_and_removed() {
    if !strait_testbeds::require_root(
        "single_and_multipath_routes_are_installed_replaced_and_removed",
    ) {
        return;
    }
    let ns = host();
    runtime().block_on(async {
        let mut fib = FibSync::start(netlink(&ns).await).await.expect("start");
        let done = fib
            .changes(vec![
                change("10.244.1.0/26", &["10.0.0.2"]),
                change("10.244.2.0/26", &["10.0.0.3", "10.0.0.2"]),
                change("fd00:244:1::/122", &["fd99::2"]),
                change("fd00:244:2::/122", &["fd99::2", "fd99::3"]),
            ])
            .await;
        assert!(done.failed.is_empty(), "{:?}", done.failed);
        expect(
            &ns,
            &[
                ("10.244.1.0/26", "via 10.0.0.2 proto 83"),
                ("10.244.2.0/26", "via 10.0.0.2,10.0.0.3 proto 83"),
                ("fd00:244:1::/122", "via fd99::2 proto 83"),
                ("fd00:244:2::/122", "via fd99::2,fd99::3 proto 83"),
            ],
        );

        // Replaced in place: another gateway, multipath to one, one to multipath.
        let done = fib
            .changes(vec![
                change("10.244.1.0/26", &["10.0.0.4"]),
                change("10.244.2.0/26", &["10.0.0.3"]),
                change("fd00:244:1::/122", &["fd99::4", "fd99::2"]),
                change("fd00:244:2::/122", &[]),
            ])
            .await;
        assert!(done.failed.is_empty(), "{:?}", done.failed);
        assert_eq!((done.replaced, done.deleted), (3, 1));
        expect(
            &ns,
            &[
                ("10.244.1.0/26", "via 10.0.0.4 proto 83"),
                ("10.244.2.0/26", "via 10.0.0.3 proto 83"),
                ("fd00:244:1::/122", "via fd99::2,fd99::4 proto 83"),
            ],
        );

        // A next hop on no connected subnet is not guessed onlink: the kernel refuses
        // it, the failure is reported, and the other changes of the batch still apply.
        let done = fib
            .changes(vec![
                change("10.244.3.0/26", &["192.0.2.9"]),
                change("10.244.1.0/26", &[]),
                change("10.244.2.0/26", &[]),
                change("fd00:244:1::/122", &[]),
            ])
            .await;
        assert_eq!(done.failed.len(), 1, "{:?}", done.failed);
        assert!(
            done.failed[0].contains("10.244.3.0/26"),
            "{:?}",
            done.failed
        );
        expect(&ns, &[]);
    });
}

/// RFC 8950: an IPv4 route via an IPv6 next hop is installed `via inet6` (alone, and
/// beside an IPv4 gateway in one ECMP route), read back as it was installed (the repair
/// loop then has nothing to do, a restart adopts it), and deleted.
#[test]
fn ipv4_routes_via_ipv6_gateways_are_installed_read_back_and_removed() {
    if !strait_testbeds::require_root(
        "ipv4_routes_via_ipv6_gateways_are_installed_read_back_and_removed",
    ) {
        return;
    }
    let ns = host();
    runtime().block_on(async {
        let mut fib = FibSync::start(netlink(&ns).await).await.expect("start");
        let done = fib
            .changes(vec![
                change("10.244.1.0/26", &["fd99::2"]),
                change("10.244.2.0/26", &["fd99::3", "10.0.0.2"]),
                change("10.244.3.0/26", &["fd99::3", "fd99::4"]),
            ])
            .await;
        assert!(done.failed.is_empty(), "{:?}", done.failed);
        let installed = [
            ("10.244.1.0/26", "via inet6 fd99::2 proto 83"),
            ("10.244.2.0/26", "via 10.0.0.2,inet6 fd99::3 proto 83"),
            ("10.244.3.0/26", "via inet6 fd99::3,inet6 fd99::4 proto 83"),
        ];
        expect(&ns, &installed);
        let repaired = fib.resync().await.expect("resync");
        assert_eq!(
            (repaired.replaced, repaired.deleted),
            (0, 0),
            "the kernel read back matches what was installed: {repaired:?}"
        );

        // A restarted agent adopts them and replaces them in place.
        let mut fib = FibSync::start(netlink(&ns).await).await.expect("start");
        assert_eq!(fib.table().installed_len(), 3);
        let done = fib
            .changes(vec![change("10.244.1.0/26", &["fd99::5"])])
            .await;
        assert!(done.failed.is_empty(), "{:?}", done.failed);
        let done = fib.converged().await;
        assert!(done.failed.is_empty(), "{:?}", done.failed);
        assert_eq!(done.deleted, 2);
        expect(&ns, &[("10.244.1.0/26", "via inet6 fd99::5 proto 83")]);
        let done = fib.changes(vec![change("10.244.1.0/26", &[])]).await;
        assert!(done.failed.is_empty(), "{:?}", done.failed);
        expect(&ns, &[]);
    });
}

#[test]
fn a_restart_adopts_and_purges_only_stale_gateway_routes_at_convergence() {
    if !strait_testbeds::require_root(
        "a_restart_adopts_and_purges_only_stale_gateway_routes_at_convergence",
    ) {
        return;
    }
    let ns = host();
    // What an earlier agent and others left: FIB routes (one the RIB confirms, stale
    // ones), a static route, the fabric's blackhole and a container's host route.
    veth(&ns, "strait0000abcd");
    for argv in [
        "route add 10.244.1.0/26 via 10.0.0.2 proto 83",
        "route add 10.244.2.0/26 via 10.0.0.3 proto 83",
        "route add 10.244.3.0/26 proto 83 nexthop via 10.0.0.2 nexthop via 10.0.0.3",
        "-6 route add fd00:244:3::/122 via fd99::3 proto 83",
        "route add 10.99.0.0/16 via 10.0.0.9 proto static",
        "route add blackhole 10.244.9.0/26 proto 83",
        "route add 10.244.9.5/32 dev strait0000abcd scope link proto 83",
    ] {
        let mut args = vec!["ip"];
        args.extend(argv.split(' '));
        ns.exec_ok(&args);
    }
    let before = routes(&ns);
    runtime().block_on(async {
        let mut fib = FibSync::start(netlink(&ns).await).await.expect("start");
        assert_eq!(
            fib.table().installed_len(),
            4,
            "adopted the proto-83 gateway routes"
        );
        assert_eq!(routes(&ns), before, "starting changes nothing");
        let done = fib
            .changes(vec![
                change("10.244.1.0/26", &["10.0.0.2"]),
                change("10.244.4.0/26", &["10.0.0.4"]),
            ])
            .await;
        assert!(done.failed.is_empty(), "{:?}", done.failed);
        assert_eq!(done.replaced, 1, "the confirmed route is left as it is");
        let mut now = before.clone();
        now.insert("10.244.4.0/26".into(), "via 10.0.0.4 proto 83".into());
        assert_eq!(routes(&ns), now, "nothing is purged before convergence");

        let done = fib.converged().await;
        assert!(done.failed.is_empty(), "{:?}", done.failed);
        assert_eq!(done.deleted, 3);
        expect(
            &ns,
            &[
                ("10.244.1.0/26", "via 10.0.0.2 proto 83"),
                ("10.244.4.0/26", "via 10.0.0.4 proto 83"),
                ("10.99.0.0/16", "via 10.0.0.9 proto static"),
                ("10.244.9.0/26", "blackhole proto 83"),
                ("10.244.9.5/32", "dev strait0000abcd proto 83"),
            ],
        );
    });
}

/// IPv6 matches no route type on delete: a delete by destination alone would take the
/// blackhole the fabric's reconcile put where a learned route used to be.
#[test]
fn a_delete_never_takes_a_blackhole_at_the_same_destination() {
    if !strait_testbeds::require_root("a_delete_never_takes_a_blackhole_at_the_same_destination") {
        return;
    }
    let ns = host();
    runtime().block_on(async {
        let mut fib = FibSync::start(netlink(&ns).await).await.expect("start");
        let done = fib
            .changes(vec![
                change("fd00:244:9::/122", &["fd99::2"]),
                change("10.244.9.0/26", &["10.0.0.2"]),
            ])
            .await;
        assert!(done.failed.is_empty(), "{:?}", done.failed);
        // The block became this node's: the reconcile blackholes it in place.
        ns.exec_ok(&[
            "ip",
            "-6",
            "route",
            "replace",
            "blackhole",
            "fd00:244:9::/122",
            "proto",
            "83",
        ]);
        ns.exec_ok(&[
            "ip",
            "route",
            "replace",
            "blackhole",
            "10.244.9.0/26",
            "proto",
            "83",
        ]);
        let done = fib
            .set_local(&LocalPrefixes {
                own: vec![net("fd00:244:9::/122"), net("10.244.9.0/26")],
                lent: vec![],
            })
            .await;
        assert!(done.failed.is_empty(), "{:?}", done.failed);
        expect(
            &ns,
            &[
                ("fd00:244:9::/122", "blackhole proto 83"),
                ("10.244.9.0/26", "blackhole proto 83"),
            ],
        );
    });
}

#[test]
fn a_hundred_thousand_routes_in_and_out() {
    if !strait_testbeds::require_root("a_hundred_thousand_routes_in_and_out") {
        return;
    }
    const N: u32 = 100_000;
    let prefix = |i: u32| Ipv4Addr::from(0x6400_0000 + (i << 8));
    let gateway = |i: u32| Ipv4Addr::new(10, 0, 0, 2 + (i % 4) as u8);

    // Baseline: the same routes through `ip -batch` in a namespace of its own.
    let baseline = host();
    let batch = std::env::temp_dir().join(format!("{}.batch", baseline.name()));
    let text: String = (0..N)
        .map(|i| format!("route add {}/24 via {} proto 83\n", prefix(i), gateway(i)))
        .collect();
    std::fs::write(&batch, text).expect("write batch");
    let started = Instant::now();
    baseline.exec_ok(&["ip", "-batch", batch.to_str().expect("path")]);
    let ip_batch = started.elapsed();
    let _ = std::fs::remove_file(&batch);
    drop(baseline);

    let ns = host();
    runtime().block_on(async {
        let nl = netlink(&ns).await;
        let mut fib = FibSync::start(nl.clone()).await.expect("start");
        let changes = (0..N)
            .map(|i| FibChange {
                prefix: IpNet::new(IpAddr::V4(prefix(i)), 24).expect("net"),
                next_hops: vec![NextHop::V4(gateway(i))],
            })
            .chain((0..1000u32).map(|i| {
                FibChange {
                    prefix: IpNet::new(
                        IpAddr::V6(Ipv6Addr::from(0xfd00_0244_u128 << 96 | u128::from(i) << 16)),
                        122,
                    )
                    .expect("net"),
                    next_hops: vec![
                        NextHop::V6 {
                            global: "fd99::2".parse().expect("ip"),
                            link_local: None,
                        },
                        NextHop::V6 {
                            global: "fd99::3".parse().expect("ip"),
                            link_local: None,
                        },
                    ],
                }
            }))
            .collect();
        let started = Instant::now();
        let done = fib.changes(changes).await;
        let install = started.elapsed();
        assert!(done.failed.is_empty(), "{:?}", &done.failed[..1]);
        assert_eq!(done.replaced, N as usize + 1000);
        let count = ns.exec_ok(&["sh", "-c", "ip route show proto 83 | wc -l"]);
        assert_eq!(count.trim(), N.to_string());
        let count = ns.exec_ok(&["sh", "-c", "ip -6 route show proto 83 | grep -c ^fd00:244"]);
        assert_eq!(count.trim(), "1000", "v6 routes");
        let count = ns.exec_ok(&[
            "sh",
            "-c",
            "ip -6 route show proto 83 | grep -c 'nexthop via'",
        ]);
        assert_eq!(count.trim(), "2000", "two next hops each");

        let started = Instant::now();
        let mut restarted = FibSync::start(nl).await.expect("restart");
        let adopt = started.elapsed();
        assert_eq!(restarted.table().installed_len(), N as usize + 1000);
        let started = Instant::now();
        let done = restarted.converged().await;
        let purge = started.elapsed();
        assert!(done.failed.is_empty(), "{:?}", &done.failed[..1]);
        assert_eq!(done.deleted, N as usize + 1000);
        let count = ns.exec_ok(&["sh", "-c", "ip route show proto 83 | wc -l"]);
        assert_eq!(count.trim(), "0");
        eprintln!(
            "FIB sync, {N} IPv4 routes + 1000 IPv6 ECMP routes: install {install:?}, \
             adopt (dump) {adopt:?}, purge {purge:?}; baseline ip -batch install of the \
             {N} IPv4 routes: {ip_batch:?}"
        );
    });
}
