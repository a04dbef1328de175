//! External peers and the cluster's addresses (docs/bgp.md "Import policy", issue 19
//! items 16 and 19): a real BGP router (BIRD, the ToR of a two-rack test bed, as in
//! tests/cluster_bgp_tor.rs) announces a /29 inside another node's block and a prefix
//! outside the pools, with every external peer added by `netctl bgp peer add`.
//!
//! What users rely on:
//! - the /29 is refused on every host, counted (`netctl bgp peers`) and listed with
//!   the reason (`netctl bgp rib --refused`); traffic to that block still flows; the
//!   prefix outside the pools is installed;
//! - let in with `--allow` on the node that owns the block, it is best in the RIB but
//!   not installed (FIB sync keeps the block's traffic), and `netctl bgp rib` does not
//!   flag it `F`;
//! - the options given to netctl reach the session: the hold time is in our OPEN (BIRD
//!   shows it negotiated), import and export prefix lists apply, a prefix limit ends
//!   the session;
//! - a kernel route of another origin inside a block makes `netctl routes` say so and
//!   exit 1.
//!
//! Root, etcd and BIRD needed. One scenario at a time (a lock).

use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;
use strait_testbeds::cluster::probe;
use strait_testbeds::cluster::underlay::{ROUTER, Segment};
use strait_testbeds::cluster::{Cluster, ClusterOpts, Fabric};
use strait_testbeds::netns::Netns;
use strait_testbeds::peers::{Bird, Neighbor, PeerConfig, fib_routes, require};
use strait_testbeds::wait_until;

const CONVERGE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
const TOR_AS: u32 = 65000;
/// What BIRD offers; h1's peer is configured with less, which must win.
const TOR_HOLD: u16 = 90;
const H1_HOLD: u16 = 30;

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn privileged(test: &str) -> bool {
    strait_testbeds::require_root(test)
        && strait_testbeds::etcd::require_etcd(test)
        && require(
            test,
            &[("bird", "--version"), ("birdc", "--version")],
            "bird2",
        )
}

fn rack_as(seg: Segment) -> u32 {
    match seg {
        Segment::A => 65001,
        Segment::B => 65002,
    }
}

fn tor_ip(seg: Segment) -> IpAddr {
    IpAddr::V4(seg.v4(ROUTER))
}

/// `netctl bgp peer add tor-<host> --address <its ToR> --asn 65000 --node <host>`
/// with `extra` options, on host `i`.
fn add_tor_peer(cluster: &Cluster, i: usize, extra: &[&str]) {
    let h = cluster.host(i);
    let (name, address) = (format!("tor-{}", h.name), tor_ip(h.segment).to_string());
    let asn = TOR_AS.to_string();
    let mut args = vec![
        "bgp",
        "peer",
        "add",
        &name,
        "--address",
        &address,
        "--asn",
        &asn,
        "--node",
        &h.name,
    ];
    args.extend_from_slice(extra);
    let (ok, out) = h.netctl(&args);
    assert!(ok, "netctl bgp peer add {name} {extra:?}: {out}");
}

/// Host `i`'s session with its ToR, as `netctl bgp peers` shows it (`None` until
/// the speaker has the peer).
fn tor_status(cluster: &Cluster, i: usize) -> Option<strait_api::bgp::BgpPeerStatus> {
    let tor = tor_ip(cluster.host(i).segment);
    cluster
        .host(i)
        .bgp_peers()
        .into_iter()
        .find(|p| p.address == tor)
}

/// Waits until host `i`'s session with its ToR satisfies `ok`; returns its status.
fn wait_tor(
    cluster: &Cluster,
    i: usize,
    what: &str,
    ok: impl Fn(&strait_api::bgp::BgpPeerStatus) -> bool,
) -> strait_api::bgp::BgpPeerStatus {
    let mut last = None;
    wait_until(&format!("h{}: {what}", i + 1), CONVERGE, POLL, || {
        last = tor_status(cluster, i);
        match &last {
            Some(s) if ok(s) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .unwrap();
    last.expect("seen")
}

/// `netctl -o json bgp rib --refused` on host `i`: (prefix, reason).
fn refused(cluster: &Cluster, i: usize) -> Vec<(IpNet, String)> {
    let (ok, out) = cluster
        .host(i)
        .netctl(&["-o", "json", "bgp", "rib", "--refused"]);
    assert!(ok, "netctl bgp rib --refused: {out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {out}"))
        .iter()
        .map(|r| {
            (
                r["prefix"]
                    .as_str()
                    .unwrap_or_default()
                    .parse()
                    .expect("prefix"),
                r["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn router(cluster: &Cluster) -> &Netns {
    cluster
        .underlay()
        .router
        .as_ref()
        .expect("two segments have a router")
}

/// `netctl -o json bgp rib PREFIX` on host `i`.
fn rib(cluster: &Cluster, i: usize, prefix: &str) -> Vec<strait_api::bgp::BgpRibEntry> {
    let (ok, out) = cluster
        .host(i)
        .netctl(&["-o", "json", "bgp", "rib", prefix]);
    assert!(ok, "netctl bgp rib {prefix}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Host `i`'s kernel has a fabric route with exactly this destination.
fn has_route(cluster: &Cluster, i: usize, dst: IpNet) -> bool {
    cluster
        .host(i)
        .fabric_routes()
        .iter()
        .any(|r| r.dst == Some(dst) && !r.blackhole)
}

#[test]
fn an_external_peer_cannot_hijack_a_block_and_its_options_reach_the_session() {
    let _serial = serial();
    if !privileged("an_external_peer_cannot_hijack_a_block_and_its_options_reach_the_session") {
        return;
    }
    let mut opts = ClusterOpts::new(2, Fabric::Bgp);
    opts.two_segments = true;
    opts.agent_extra.push("--no-bgp-node-mesh".into());
    for i in 0..opts.hosts {
        let asn = rack_as(opts.segment_of(i));
        opts.host_extra
            .push((i, vec!["--bgp-asn".into(), asn.to_string()]));
    }
    let mut cluster = Cluster::start(opts);
    let mut cfg = PeerConfig::new(Segment::A.v4(ROUTER), TOR_AS).kernel_fib(true);
    cfg.hold_time = TOR_HOLD;
    for h in cluster.hosts() {
        cfg = cfg.neighbor(
            Neighbor::new(IpAddr::V4(h.underlay_v4), rack_as(h.segment)).local(tor_ip(h.segment)),
        );
    }
    // Declared after the cluster: stopped before the router namespace goes.
    let mut tor = Bird::start(router(&cluster), cfg).expect("start BIRD as the ToR");
    let c1 = cluster.add_container(0, "c1");
    let c2 = cluster.add_container(1, "c2");

    add_tor_peer(&cluster, 0, &["--hold-time", &H1_HOLD.to_string()]);
    add_tor_peer(&cluster, 1, &[]);
    for i in 0..2 {
        wait_tor(&cluster, i, "session with the ToR", |s| s.established());
    }
    // The hold time given to netctl is in h1's OPEN: BIRD offered 90, 30 was agreed.
    let shown = tor
        .birdc(&["show", "protocols", "all", "n0"])
        .expect("birdc");
    let hold = shown
        .lines()
        .find(|l| l.contains("Hold timer"))
        .unwrap_or_else(|| panic!("no hold timer: {shown}"));
    assert!(
        hold.trim_end().ends_with(&format!("/{H1_HOLD}")),
        "h1's hold time {H1_HOLD} negotiated: {hold}"
    );
    eprintln!("h1's session as BIRD shows it: {}", hold.trim());
    probe::wait_ping(&c1.ns, c2.ip4(), CONVERGE).expect("c1 -> c2 through the ToR");

    // The ToR announces a /29 of h2's block (holding c2's address) and a prefix
    // outside the pools.
    let hijack = IpNet::new(c2.ip4(), 29).expect("net").trunc();
    let outside: IpNet = "192.0.2.0/24".parse().expect("net");
    tor.set_originated(vec![hijack, outside])
        .expect("BIRD announces");
    wait_until("192.0.2.0/24 installed on h1", CONVERGE, POLL, || {
        if has_route(&cluster, 0, outside) {
            Ok(())
        } else {
            Err(format!("{:?}", cluster.host(0).fabric_routes()))
        }
    })
    .unwrap();
    for i in 0..2 {
        wait_until(
            &format!("h{}: the /29 refused and counted", i + 1),
            CONVERGE,
            POLL,
            || {
                let s = tor_status(&cluster, i);
                let counted = s.as_ref().is_some_and(|s| s.prefixes_refused >= 1);
                let list = refused(&cluster, i);
                match list.iter().find(|(p, _)| *p == hijack) {
                    Some((_, why)) if counted => {
                        assert!(why.contains("cluster owns"), "{why}");
                        Ok(())
                    }
                    _ => Err(format!("{s:?} {list:?}")),
                }
            },
        )
        .unwrap();
        assert!(
            !has_route(&cluster, i, hijack),
            "h{}: the /29 is not installed: {:?}",
            i + 1,
            cluster.host(i).fabric_routes()
        );
    }
    let (_, table) = cluster.host(0).netctl(&["bgp", "peers"]);
    eprintln!("netctl bgp peers on h1:\n{table}");
    assert!(
        table.contains("REFUSED") && table.contains("refused by import policy"),
        "{table}"
    );
    probe::wait_ping(&c1.ns, c2.ip4(), CONVERGE).expect("c1 -> c2 with the /29 announced");

    // Item 17: h2 lets the /29 in (--allow); its RIB takes it as best, but FIB sync
    // never installs a route inside the node's own block, so it is not flagged F.
    let hijack_s = hijack.to_string();
    add_tor_peer(&cluster, 1, &["--allow", &hijack_s]);
    wait_until(
        "h2: the allowed /29 best, not in the FIB",
        CONVERGE,
        POLL,
        || {
            let rows = rib(&cluster, 1, &hijack_s);
            match rows.as_slice() {
                [r] if r.best && !r.fib => Ok(()),
                _ => Err(format!("{rows:?}")),
            }
        },
    )
    .unwrap();
    assert!(
        !has_route(&cluster, 1, hijack),
        "h2 keeps its block's traffic"
    );
    wait_until(
        "h2: 192.0.2.0/24 best and in the FIB",
        CONVERGE,
        POLL,
        || {
            let rows = rib(&cluster, 1, "192.0.2.0/24");
            match rows.as_slice() {
                [r] if r.best && r.fib => Ok(()),
                _ => Err(format!("{rows:?}")),
            }
        },
    )
    .unwrap();
    probe::wait_ping(&c1.ns, c2.ip4(), CONVERGE).expect("c1 -> c2 with the /29 allowed on h2");

    // A kernel route of another origin inside h2's block: netctl routes on h1 says so.
    let (ok, out) = cluster.host(0).netctl(&["routes"]);
    assert!(
        ok && !out.contains("OVERRIDDEN"),
        "all well before, the refused /29 installed nowhere: {out}"
    );
    let tor1 = tor_ip(Segment::A).to_string();
    let add = cluster.host(0).exec(&[
        "ip", "route", "add", &hijack_s, "via", &tor1, "proto", "static",
    ]);
    assert!(add.status.success(), "{add:?}");
    let (ok_after, out) = cluster.host(0).netctl(&["routes"]);
    assert!(
        !ok_after,
        "netctl routes exits 1 with a block overridden: {out}"
    );
    assert!(
        out.contains("OVERRIDDEN") && out.contains(&format!("{hijack_s} via {tor1}")),
        "{out}"
    );
    let del = cluster.host(0).exec(&[
        "ip", "route", "del", &hijack_s, "via", &tor1, "proto", "static",
    ]);
    assert!(del.status.success(), "{del:?}");
    let (ok_again, out) = cluster.host(0).netctl(&["routes"]);
    assert!(ok_again, "all well again once the route is gone: {out}");

    // Prefix lists: h1 takes nothing of 192.0.2.0/24 and sends the ToR no IPv4.
    add_tor_peer(
        &cluster,
        0,
        &[
            "--hold-time",
            &H1_HOLD.to_string(),
            "--import",
            "deny 192.0.2.0/24",
            "--import",
            "permit 0.0.0.0/0 le 32",
            "--import",
            "permit ::/0 le 128",
            "--export",
            "permit ::/0 le 128",
        ],
    );
    wait_until("192.0.2.0/24 filtered on h1", CONVERGE, POLL, || {
        let list = refused(&cluster, 0);
        let filtered = list
            .iter()
            .any(|(p, why)| *p == outside && why.contains("import filter"));
        let up = tor_status(&cluster, 0).is_some_and(|s| s.established());
        if filtered && !has_route(&cluster, 0, outside) && up {
            Ok(())
        } else {
            Err(format!("{list:?} {:?}", cluster.host(0).fabric_routes()))
        }
    })
    .unwrap();
    assert!(has_route(&cluster, 1, outside), "h2 has no filter");
    wait_until("the ToR without h1's IPv4 block", CONVERGE, POLL, || {
        let fib = fib_routes(router(&cluster), "bird");
        let v4 = fib.iter().any(|r| r.prefix.contains(&c1.ip4()));
        let v6 = fib.iter().any(|r| r.prefix.contains(&c1.ip6()));
        if !v4 && v6 {
            Ok(())
        } else {
            Err(format!("{fib:?}"))
        }
    })
    .unwrap();
    probe::wait_ping(&c2.ns, c1.ip6(), CONVERGE).expect("IPv6 c2 -> c1 still exported");

    // A prefix limit of 1: the ToR sends more (h2's blocks, the two statics): h1 ends
    // the session.
    add_tor_peer(&cluster, 0, &["--max-prefix", "1"]);
    wait_tor(&cluster, 0, "session ended by its prefix limit", |s| {
        !s.established()
            && s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("maximum prefixes"))
    });
    let (_, table) = cluster.host(0).netctl(&["bgp", "peers"]);
    eprintln!("netctl bgp peers on h1 after --max-prefix 1:\n{table}");
    wait_tor(&cluster, 1, "session untouched", |s| s.established());
    drop(tor);
}
