//! Two sites joined by a dedicated line (`strait-testbed up --sites 2`): each site a
//! segment with its own router, the routers joined by one shaped link. The agents carry
//! their `--site` in their records, and every packet between the sites crosses the line,
//! where a capture can see it.
//!
//! Root and etcd needed.

use std::time::Duration;

use serde_json::Value;
use strait_testbeds::cluster::underlay::{LINE_DEV, Line, site_of};
use strait_testbeds::cluster::{Cluster, ClusterOpts, Fabric, probe};

const CONVERGE: Duration = Duration::from_secs(30);

fn privileged(test: &str) -> bool {
    strait_testbeds::require_root(test) && strait_testbeds::etcd::require_etcd(test)
}

/// Packets the line's device in site A's router has sent and received.
fn line_packets(c: &Cluster) -> u64 {
    let (router, dev) = c.underlay().line().expect("two sites have a line");
    let v = router.ip_json(&["-s", "link", "show", dev]);
    let stats = &v[0]["stats64"];
    let n = |dir: &str| stats[dir]["packets"].as_u64().unwrap_or(0);
    n("rx") + n("tx")
}

#[test]
fn hosts_of_two_sites_talk_across_the_shaped_line() {
    if !privileged("hosts_of_two_sites_talk_across_the_shaped_line") {
        return;
    }
    let mut opts = ClusterOpts::new(2, Fabric::Vxlan);
    opts.sites = Some(Line {
        rate_mbit: Some(1000),
    });
    let mut c = Cluster::start(opts);

    // Each agent's record carries its site.
    let nodes: Vec<Value> = c
        .host(0)
        .agent
        .client()
        .get(strait_api::paths::NODES)
        .unwrap();
    for (i, h) in c.hosts().iter().enumerate() {
        let rec = nodes
            .iter()
            .find(|n| n["name"] == h.name.as_str())
            .unwrap_or_else(|| panic!("no {} in {nodes:?}", h.name));
        assert_eq!(
            rec["record"]["site"],
            site_of(c.opts.segment_of(i)),
            "{rec}"
        );
    }
    assert_ne!(c.host(0).segment, c.host(1).segment, "one host per site");

    // The line is shaped as asked.
    let (router, dev) = c.underlay().line().unwrap();
    assert_eq!(dev, LINE_DEV);
    let qdisc = router.exec(&["tc", "qdisc", "show", "dev", dev]);
    let qdisc = String::from_utf8_lossy(&qdisc.stdout);
    assert!(qdisc.contains("tbf") && qdisc.contains("1Gbit"), "{qdisc}");

    // Containers of the two sites talk, and their packets cross the line.
    let a = c.add_container(0, "a");
    let b = c.add_container(1, "b");
    let b_ip = b.v4.unwrap().into();
    probe::wait_ping(&a.ns, b_ip, CONVERGE).unwrap();
    let before = line_packets(&c);
    let out = a.ns.exec(&[
        "ping",
        "-q",
        "-c",
        "20",
        "-i",
        "0.01",
        "-W",
        "1",
        &b_ip.to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let crossed = line_packets(&c) - before;
    assert!(
        crossed >= 40,
        "20 echoes and 20 replies cross the line, saw {crossed}"
    );
}
