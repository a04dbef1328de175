//! IPsec steering against the real kernel, in a namespace of the test's own: the rule
//! and the table routes a reconcile makes, where the kernel then sends a packet with
//! and without the datapath's mark, that losing the device fails closed (prohibit, not
//! the main table), that an empty reconcile removes everything, and the site gateway's
//! routes (through the gateway, or refused while there is none). Needs root
//! (visible SKIP otherwise).

use std::collections::BTreeMap;

use ipnet::IpNet;
use strait_testbeds::netns::Netns;
use straitd::ipsec::gateway::plan::{self, GatewayRoute};
use straitd::ipsec::steering::{self, ESP_MARK, IPSEC_TABLE};
use straitd::netlink::Netlink;
use straitd::netns::NetNs;

/// `ip route get DST [mark M]` in `ns`: the kernel's answer, or its error.
fn route_get(ns: &Netns, dst: &str, mark: Option<u32>) -> String {
    let mark = mark.map(|m| format!("{m:#x}"));
    let mut argv = vec!["ip", "route", "get", dst];
    if let Some(m) = &mark {
        argv.extend(["mark", m.as_str()]);
    }
    let out = ns.exec(&argv);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn steering_sends_unmarked_traffic_into_the_device_and_fails_closed() {
    if !strait_testbeds::require_root(
        "steering_sends_unmarked_traffic_into_the_device_and_fails_closed",
    ) {
        return;
    }
    let prefix = strait_testbeds::unique_prefix();
    let ns = Netns::new(format!("{prefix}st"));
    // The underlay: a veth with a default route, as a host has.
    ns.exec_ok(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    ns.exec_ok(&["ip", "addr", "add", "10.0.0.1/24", "dev", "eth0"]);
    ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
    ns.exec_ok(&["ip", "link", "set", "eth0p", "up"]);
    ns.exec_ok(&["ip", "route", "add", "default", "via", "10.0.0.254"]);
    // The datapath's device (a veth stands in for the TUN: steering only needs a link).
    ns.exec_ok(&[
        "ip", "link", "add", "stesp", "type", "veth", "peer", "name", "stespp",
    ]);
    ns.exec_ok(&["ip", "link", "set", "stesp", "up"]);
    ns.exec_ok(&["ip", "link", "set", "stespp", "up"]);
    let tun: u32 = {
        let v = ns.ip_json(&["link", "show", "stesp"]);
        v[0]["ifindex"].as_u64().expect("ifindex") as u32
    };

    let nl = Netlink::open_in(&NetNs::open(ns.path()).expect("netns"))
        .await
        .expect("netlink");
    let mut prefixes: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
    prefixes.insert(
        "h2".into(),
        vec![
            "10.0.1.2/32".parse().unwrap(),
            "10.244.1.0/26".parse().unwrap(),
            "fd00:244:1::/122".parse().unwrap(),
        ],
    );
    let want = steering::routes(&prefixes, Some(tun));
    let changes = steering::reconcile(&nl, &want).await.expect("reconcile");
    assert_eq!(changes.added, 6 + 2, "three prefixes twice, two rules");
    assert_eq!(
        steering::reconcile(&nl, &want).await.expect("again"),
        Default::default(),
        "a second pass changes nothing"
    );
    let rules = String::from_utf8_lossy(&ns.exec(&["ip", "rule"]).stdout).into_owned();
    assert!(
        rules.contains(&format!(
            "2083:\tnot from all fwmark {ESP_MARK:#x}/0xff0000 lookup 2083"
        )),
        "{rules}"
    );

    // Unmarked: into the device, for the node and for its block. Marked (the
    // datapath's own ESP): the main table, to the underlay.
    assert!(route_get(&ns, "10.0.1.2", None).contains("dev stesp"));
    assert!(route_get(&ns, "10.244.1.9", None).contains("dev stesp"));
    let marked = route_get(&ns, "10.0.1.2", Some(ESP_MARK));
    assert!(marked.contains("via 10.0.0.254 dev eth0"), "{marked}");
    // A destination that is not a peer's is not touched.
    assert!(route_get(&ns, "10.0.9.9", None).contains("dev eth0"));

    // The device goes (a crash without a persistent TUN): prohibit, never eth0.
    ns.exec_ok(&["ip", "link", "del", "stesp"]);
    let gone = route_get(&ns, "10.244.1.9", None);
    assert!(
        gone.contains("prohibit") || gone.contains("Permission denied"),
        "{gone}"
    );
    let ping = ns.exec(&["ping", "-c1", "-W1", "10.0.1.2"]);
    assert!(!ping.status.success(), "nothing leaves in clear");

    // Nothing to encrypt any more: everything goes, the rules too.
    let changes = steering::reconcile(&nl, &Default::default())
        .await
        .expect("clear");
    assert!(changes.removed >= 2, "{changes:?}");
    assert!(nl.table_routes(IPSEC_TABLE).await.unwrap().is_empty());
    let rules = String::from_utf8_lossy(&ns.exec(&["ip", "rule"]).stdout).into_owned();
    assert!(!rules.contains("2083"), "{rules}");
    assert!(route_get(&ns, "10.244.1.9", None).contains("dev eth0"));
}

/// A node of a site that is not the external peer's gateway routes the peer's
/// networks through the gateway in strait's table; while the site has none they are
/// refused, never sent by the default route in clear.
#[tokio::test]
async fn gateway_routes_go_through_the_gateway_or_fail_closed() {
    if !strait_testbeds::require_root("gateway_routes_go_through_the_gateway_or_fail_closed") {
        return;
    }
    let prefix = strait_testbeds::unique_prefix();
    let ns = Netns::new(format!("{prefix}gw"));
    ns.exec_ok(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    ns.exec_ok(&["ip", "addr", "add", "10.0.0.2/24", "dev", "eth0"]);
    ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
    ns.exec_ok(&["ip", "link", "set", "eth0p", "up"]);
    ns.exec_ok(&["ip", "route", "add", "default", "via", "10.0.0.254"]);
    let nl = Netlink::open_in(&NetNs::open(ns.path()).expect("netns"))
        .await
        .expect("netlink");
    let remote: IpNet = "192.168.50.0/24".parse().unwrap();
    let via = plan::table_routes(&[GatewayRoute::Via {
        dst: remote,
        next_hop: "10.0.0.1".parse().unwrap(),
    }]);
    steering::reconcile(&nl, &via).await.expect("reconcile");
    assert_eq!(
        steering::reconcile(&nl, &via).await.expect("again"),
        Default::default(),
        "a via route read back compares equal"
    );
    let got = route_get(&ns, "192.168.50.7", None);
    assert!(got.contains("via 10.0.0.1 dev eth0"), "{got}");
    // The site lost its gateway: refused.
    let none = plan::table_routes(&[GatewayRoute::Prohibit { dst: remote }]);
    steering::reconcile(&nl, &none).await.expect("reconcile");
    let got = route_get(&ns, "192.168.50.7", None);
    assert!(
        got.contains("prohibit") || got.contains("Permission denied"),
        "{got}"
    );
    steering::reconcile(&nl, &Default::default())
        .await
        .expect("clear");
    assert!(nl.table_routes(IPSEC_TABLE).await.unwrap().is_empty());
}
