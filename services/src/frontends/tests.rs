use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::*;
use crate::model::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn web() -> Service {
    Service {
        namespace: "shop".into(),
        name: "web".into(),
        kind: ServiceKind::NodePort,
        cluster_ips: vec![ip("10.96.0.10"), ip("fd00:96::10")],
        ip_families: vec![Family::IPv4, Family::IPv6],
        ip_family_policy: FamilyPolicy::RequireDualStack,
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::TCP,
            port: 80,
            target_port: TargetPort::Name("http".into()),
            node_port: Some(30080),
        }],
        selector: Some(BTreeMap::from([("app".into(), "web".into())])),
        external_ips: vec![ip("192.0.2.10")],
        affinity_secs: None,
        internal_local: false,
        external_local: true,
        publish_not_ready: false,
        health_check: None,
    }
}

fn endpoint(id: &str, ns: &str, app: &str, addr: &str, node: &str, ready: bool) -> EndpointView {
    EndpointView {
        id: id.into(),
        namespace: ns.into(),
        labels: BTreeMap::from([("app".into(), app.into())]),
        addresses: vec![ip(addr)],
        named_ports: vec![("http".into(), Protocol::TCP, 8080)],
        node: node.into(),
        ready,
    }
}

#[test]
fn frontends_are_cluster_ips_external_ips_and_node_ports_of_the_family() {
    let r = resolve(&web(), &[ip("172.16.0.1"), ip("fd99::1")], &[], &[]);
    let f: Vec<String> = r
        .iter()
        .map(|r| format!("{:?} {}", r.frontend.scope, r.frontend))
        .collect();
    assert_eq!(
        f,
        [
            "ClusterIP 10.96.0.10:80/TCP",
            "ClusterIP [fd00:96::10]:80/TCP",
            "ExternalIP 192.0.2.10:80/TCP",
            "NodePort 172.16.0.1:30080/TCP",
            "NodePort [fd99::1]:30080/TCP",
        ]
    );
    assert!(!r[0].local_only, "internal policy Cluster");
    assert!(r[2].local_only && r[3].local_only, "external policy Local");
}

#[test]
fn the_selector_picks_endpoints_of_its_namespace_by_named_port() {
    let eps = [
        endpoint("h1/a", "shop", "web", "10.244.0.2", "h1", true),
        endpoint("h2/b", "shop", "web", "10.244.1.2", "h2", true),
        endpoint("h2/c", "other", "web", "10.244.1.3", "h2", true),
        endpoint("h2/d", "shop", "db", "10.244.1.4", "h2", true),
        endpoint("h1/e", "shop", "web", "fd00:244::2", "h1", true),
        EndpointView {
            named_ports: vec![],
            ..endpoint("h1/f", "shop", "web", "10.244.0.9", "h1", true)
        },
    ];
    let r = resolve(&web(), &[], &eps, &[]);
    let v4: Vec<String> = r[0].backends.iter().map(Backend::key).collect();
    assert_eq!(v4, ["10.244.0.2:8080", "10.244.1.2:8080"]);
    let v6: Vec<String> = r[1].backends.iter().map(Backend::key).collect();
    assert_eq!(v6, ["[fd00:244::2]:8080"]);
}

#[test]
fn slices_add_backends_by_port_name_and_family() {
    let mut s = web();
    s.selector = None;
    let slice = EndpointSlice {
        namespace: "shop".into(),
        name: "web-ext".into(),
        service: "web".into(),
        family: Family::IPv4,
        ports: vec![SlicePort {
            name: "http".into(),
            protocol: Protocol::TCP,
            port: Some(9000),
        }],
        endpoints: vec![SliceEndpoint {
            address: ip("198.51.100.7"),
            ready: true,
            serving: true,
            terminating: false,
            node_name: None,
        }],
    };
    let other = EndpointSlice {
        service: "db".into(),
        ..slice.clone()
    };
    let r = resolve(&s, &[], &[], &[slice, other]);
    assert_eq!(r[0].backends.len(), 1);
    assert_eq!(r[0].backends[0].key(), "198.51.100.7:9000");
    assert_eq!(
        r[0].backends[0].origin,
        Origin::Slice("shop/web-ext".into())
    );
    assert!(r[1].backends.is_empty(), "no IPv6 slice");
}

#[test]
fn usable_backends_follow_readiness_health_and_traffic_policy() {
    let eps = [
        endpoint("h1/a", "shop", "web", "10.244.0.2", "h1", true),
        endpoint("h2/b", "shop", "web", "10.244.1.2", "h2", true),
        endpoint("h2/c", "shop", "web", "10.244.1.3", "h2", false),
    ];
    let r = resolve(&web(), &[ip("172.16.0.1")], &eps, &[]);
    let keys = |v: Vec<&Backend>| v.into_iter().map(Backend::key).collect::<Vec<_>>();
    let none = |_: &Backend| false;
    assert_eq!(
        keys(usable(&r[0], "h1", none)),
        ["10.244.0.2:8080", "10.244.1.2:8080"]
    );
    let down = BTreeSet::from(["10.244.0.2:8080".to_string()]);
    assert_eq!(
        keys(usable(&r[0], "h1", |b: &Backend| down.contains(&b.key()))),
        ["10.244.1.2:8080"]
    );
    // The node port is Local: only h1's.
    let node_port = r
        .iter()
        .find(|r| r.frontend.scope == Scope::NodePort)
        .unwrap();
    assert_eq!(keys(usable(node_port, "h1", none)), ["10.244.0.2:8080"]);
    assert!(usable(node_port, "h3", none).is_empty());
    // publishNotReadyAddresses takes the unready one too.
    let mut s = web();
    s.publish_not_ready = true;
    let r = resolve(&s, &[], &eps, &[]);
    assert_eq!(usable(&r[0], "h1", none).len(), 3);
}

#[test]
fn terminating_backends_serve_only_when_none_is_ready() {
    let mut s = web();
    s.selector = None;
    let slice = |ready: bool| EndpointSlice {
        namespace: "shop".into(),
        name: "s".into(),
        service: "web".into(),
        family: Family::IPv4,
        ports: vec![SlicePort {
            name: "http".into(),
            protocol: Protocol::TCP,
            port: Some(80),
        }],
        endpoints: vec![
            SliceEndpoint {
                address: ip("10.0.0.1"),
                ready: false,
                serving: true,
                terminating: true,
                node_name: None,
            },
            SliceEndpoint {
                address: ip("10.0.0.2"),
                ready,
                serving: ready,
                terminating: false,
                node_name: None,
            },
        ],
    };
    let none = |_: &Backend| false;
    let r = resolve(&s, &[], &[], &[slice(true)]);
    assert_eq!(usable(&r[0], "h1", none)[0].key(), "10.0.0.2:80");
    let r = resolve(&s, &[], &[], &[slice(false)]);
    let u = usable(&r[0], "h1", none);
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].key(), "10.0.0.1:80");
}
