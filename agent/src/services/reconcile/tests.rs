use std::collections::BTreeMap;

use strait_services::documents::Document;
use strait_services::frontends::EndpointView;
use strait_services::model::Protocol;
use strait_services::parse_documents;

use super::*;
use crate::services::dataplane::Fake;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn services(text: &str) -> BTreeMap<String, Service> {
    parse_documents(text)
        .unwrap()
        .into_iter()
        .filter_map(|p| match p.document {
            Document::Service(s) => Some((s.id(), s)),
            _ => None,
        })
        .collect()
}

fn web(extra: &str) -> BTreeMap<String, Service> {
    services(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec:\n  clusterIP: 10.96.0.10\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n{extra}"
    ))
}

fn ep(n: u8, node: &str) -> EndpointView {
    EndpointView {
        id: format!("{node}/c{n}"),
        namespace: "shop".into(),
        labels: [("app".to_string(), "web".to_string())].into(),
        addresses: vec![ip(&format!("10.244.0.{n}"))],
        named_ports: vec![],
        node: node.into(),
        ready: true,
    }
}

fn key() -> FrontendKey {
    FrontendKey {
        addr: ip("10.96.0.10"),
        port: 80,
        protocol: Protocol::TCP,
    }
}

#[test]
fn a_frontend_gets_its_backends_and_an_even_table_and_follows_changes() {
    let fake = Arc::new(Fake::default());
    let mut r = Reconciler::new(fake.clone());
    let mut inputs = Inputs {
        services: web(""),
        endpoints: vec![ep(2, "h1"), ep(3, "h2"), ep(4, "h2")],
        ..Default::default()
    };
    let p = plan(&inputs, "h1", &[]);
    assert_eq!(r.apply(&p), 1);
    let entry = fake.entries.lock().unwrap()[&key()].clone();
    assert_eq!(entry.backends.len(), 3);
    assert_eq!(entry.table.len(), 509);
    let mut counts = [0usize; 3];
    for &s in &entry.table {
        counts[s as usize] += 1;
    }
    assert!(counts.iter().all(|&c| c == 169 || c == 170), "{counts:?}");
    // Nothing changed: nothing installed.
    assert_eq!(r.apply(&plan(&inputs, "h1", &[])), 0);
    // A backend goes: the entry is replaced whole; the others keep most slots.
    inputs.endpoints.pop();
    assert_eq!(r.apply(&plan(&inputs, "h1", &[])), 1);
    assert_eq!(fake.entries.lock().unwrap()[&key()].backends.len(), 2);
    // The health check holds one down: it leaves the table.
    inputs.down.insert(("shop/web".into(), ip("10.244.0.2")));
    r.apply(&plan(&inputs, "h1", &[]));
    let e = fake.entries.lock().unwrap()[&key()].clone();
    assert_eq!(e.backends, vec![(ip("10.244.0.3"), 8080)]);
    // None left: the frontend stays, with an empty table (connections refused).
    inputs.endpoints.clear();
    r.apply(&plan(&inputs, "h1", &[]));
    let e = fake.entries.lock().unwrap()[&key()].clone();
    assert!(e.backends.is_empty() && e.table.is_empty());
    // The service goes: so does the frontend.
    inputs.services.clear();
    r.apply(&plan(&inputs, "h1", &[]));
    assert!(fake.entries.lock().unwrap().is_empty());
}

#[test]
fn a_refused_install_keeps_the_old_entry_and_is_retried_and_reported() {
    let fake = Arc::new(Fake::default());
    let mut r = Reconciler::new(fake.clone());
    let mut inputs = Inputs {
        services: web(""),
        endpoints: vec![ep(2, "h1")],
        ..Default::default()
    };
    r.apply(&plan(&inputs, "h1", &[]));
    let before = fake.entries.lock().unwrap()[&key()].clone();
    *fake.refuse.lock().unwrap() = Some("map strait_svc_slots is full".into());
    inputs.endpoints.push(ep(3, "h1"));
    let p = plan(&inputs, "h1", &[]);
    r.apply(&p);
    assert_eq!(fake.entries.lock().unwrap()[&key()], before);
    let views = r.views(&inputs, &p);
    let f = &views[0].frontends[0];
    assert!(!f.installed);
    assert_eq!(f.error.as_deref(), Some("map strait_svc_slots is full"));
    *fake.refuse.lock().unwrap() = None;
    r.apply(&p);
    assert_eq!(fake.entries.lock().unwrap()[&key()].backends.len(), 2);
    let views = r.views(&inputs, &p);
    assert!(views[0].frontends[0].installed && views[0].frontends[0].error.is_none());
}

#[test]
fn a_previous_agents_stale_frontends_are_removed_on_start() {
    let fake = Arc::new(Fake::default());
    let stale = FrontendKey {
        addr: ip("10.96.0.99"),
        port: 1,
        protocol: Protocol::UDP,
    };
    fake.install(&stale, &Entry::default()).unwrap();
    let mut r = Reconciler::new(fake.clone());
    let inputs = Inputs {
        services: web(""),
        endpoints: vec![ep(2, "h1")],
        ..Default::default()
    };
    r.apply(&plan(&inputs, "h1", &[]));
    let keys: Vec<FrontendKey> = fake.entries.lock().unwrap().keys().copied().collect();
    assert_eq!(keys, vec![key()]);
}

#[test]
fn local_traffic_policy_and_clashes_are_shown() {
    let mut svcs = services(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  clusterIP: 10.96.0.10\n  selector: {app: web}\n  type: NodePort\n  externalTrafficPolicy: Local\n  externalIPs: [192.0.2.1]\n  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]\n",
    );
    svcs.extend(services(
        "apiVersion: v1\nkind: Service\nmetadata: {name: other, namespace: shop}\nspec:\n  clusterIP: 10.96.0.11\n  externalIPs: [192.0.2.1]\n  ports: [{port: 80}]\n",
    ));
    let inputs = Inputs {
        services: svcs,
        endpoints: vec![ep(2, "h1"), ep(3, "h2")],
        ..Default::default()
    };
    let p = plan(&inputs, "h1", &[ip("172.16.0.1")]);
    let r = Reconciler::new(Arc::new(Fake::default()));
    let views = r.views(&inputs, &p);
    let web = views.iter().find(|v| v.name == "shop/web").unwrap();
    let np = web
        .frontends
        .iter()
        .find(|f| f.scope == "NodePort")
        .unwrap();
    assert_eq!(
        np.backends.iter().filter(|b| b.usable).count(),
        1,
        "Local: only h1's backend: {np:?}"
    );
    let cluster = web
        .frontends
        .iter()
        .find(|f| f.scope == "ClusterIP")
        .unwrap();
    assert_eq!(cluster.backends.iter().filter(|b| b.usable).count(), 2);
    // The external IP both claim goes to the name that sorts first.
    assert!(
        web.frontends.iter().any(|f| f
            .error
            .as_deref()
            .is_some_and(|e| e.contains("also Service shop/other's"))),
        "{web:?}"
    );
}

#[test]
fn node_ports_and_external_ips_are_reached_from_outside_and_know_their_local_backends() {
    let inputs = Inputs {
        services: services(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  clusterIP: 10.96.0.10\n  selector: {app: web}\n  type: NodePort\n  externalIPs: [192.0.2.1]\n  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]\n",
        ),
        endpoints: vec![ep(2, "h1"), ep(3, "h2")],
        ..Default::default()
    };
    let p = plan(&inputs, "h1", &[ip("172.16.0.1")]);
    let entry = |addr: &str, port: u16| {
        p.frontends[&FrontendKey {
            addr: ip(addr),
            port,
            protocol: Protocol::TCP,
        }]
            .entry
            .clone()
    };
    let local: BTreeSet<(IpAddr, u16)> = [(ip("10.244.0.2"), 8080)].into();
    for (addr, port, outside) in [
        ("10.96.0.10", 80, false),
        ("192.0.2.1", 80, true),
        ("172.16.0.1", 30080, true),
    ] {
        let e = entry(addr, port);
        assert_eq!(e.from_outside, outside, "{addr}:{port}");
        assert_eq!(e.backends.len(), 2, "{addr}:{port}");
        assert_eq!(e.local, local, "only h1's backend is h1's: {addr}:{port}");
    }
    // On h2 the same backends, the other one local.
    let p2 = plan(&inputs, "h2", &[ip("172.16.0.2")]);
    let e = &p2.frontends[&FrontendKey {
        addr: ip("172.16.0.2"),
        port: 30080,
        protocol: Protocol::TCP,
    }]
        .entry;
    assert_eq!(e.local, [(ip("10.244.0.3"), 8080)].into());
}

fn host_port_ep(node: &str, mappings: Vec<strait_api::HostPort>) -> HostPortEndpoint {
    HostPortEndpoint {
        id: format!("{node}/n.c9.eth0"),
        node: node.into(),
        addresses: vec![ip("10.244.0.9"), ip("fd00:244::9")],
        mappings,
    }
}

fn mapping(host_port: u16, to: u16, udp: bool, host_ip: Option<&str>) -> strait_api::HostPort {
    strait_api::HostPort {
        host_port,
        container_port: to,
        protocol: if udp {
            strait_api::HostPortProtocol::Udp
        } else {
            strait_api::HostPortProtocol::Tcp
        },
        host_ip: host_ip.map(ip),
    }
}

#[test]
fn host_ports_are_frontends_of_the_node_addresses_to_the_container_alone() {
    let node_addrs = [ip("192.0.2.1"), ip("2001:db8::1")];
    let inputs = Inputs {
        host_ports: vec![
            host_port_ep(
                "h1",
                vec![
                    mapping(8080, 80, false, None),
                    mapping(5353, 53, true, None),
                ],
            ),
            // Another node's: not planned here.
            HostPortEndpoint {
                id: "h2/n.c8.eth0".into(),
                ..host_port_ep("h2", vec![mapping(9090, 90, false, None)])
            },
        ],
        ..Default::default()
    };
    let p = plan(&inputs, "h1", &node_addrs);
    let fk = |a: &str, port, protocol| FrontendKey {
        addr: ip(a),
        port,
        protocol,
    };
    assert_eq!(p.frontends.len(), 4, "{:?}", p.frontends.keys());
    let tcp4 = &p.frontends[&fk("192.0.2.1", 8080, Protocol::TCP)];
    assert_eq!(tcp4.entry.backends, vec![(ip("10.244.0.9"), 80)]);
    assert!(tcp4.entry.from_outside, "reached from the underlay too");
    assert!(
        tcp4.entry.local.contains(&(ip("10.244.0.9"), 80)),
        "never SNATed"
    );
    assert_eq!(tcp4.resolved.service, "hostport/h1/n.c9.eth0");
    let udp6 = &p.frontends[&fk("2001:db8::1", 5353, Protocol::UDP)];
    assert_eq!(udp6.entry.backends, vec![(ip("fd00:244::9"), 53)]);

    // A host IP: that address only; the other family has no frontend.
    let one = Inputs {
        host_ports: vec![host_port_ep(
            "h1",
            vec![mapping(8080, 80, false, Some("192.0.2.1"))],
        )],
        ..Default::default()
    };
    let p1 = plan(&one, "h1", &node_addrs);
    assert_eq!(
        p1.frontends.keys().copied().collect::<Vec<_>>(),
        vec![fk("192.0.2.1", 8080, Protocol::TCP)]
    );

    // Shown as the endpoint's pseudo-service, installed.
    let fake = Arc::new(Fake::default());
    let mut r = Reconciler::new(fake.clone());
    r.apply(&p);
    assert_eq!(fake.entries.lock().unwrap().len(), 4);
    let views = r.views(&inputs, &p);
    assert_eq!(views.len(), 1, "only this node's endpoint");
    assert_eq!(views[0].name, "hostport/h1/n.c9.eth0");
    assert_eq!(views[0].kind, "HostPort");
    assert_eq!(views[0].ports, vec!["8080:80/TCP", "5353:53/UDP"]);
    assert!(
        views[0]
            .frontends
            .iter()
            .all(|f| f.installed && f.scope == "HostPort")
    );
}

#[test]
fn a_node_port_applied_after_a_host_port_reports_the_clash() {
    let node_addrs = [ip("192.0.2.1")];
    let inputs = Inputs {
        services: services(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  type: NodePort\n  clusterIP: 10.96.0.10\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]\n",
        ),
        endpoints: vec![ep(2, "h1")],
        host_ports: vec![host_port_ep("h1", vec![mapping(30080, 80, false, None)])],
        ..Default::default()
    };
    let p = plan(&inputs, "h1", &node_addrs);
    let held = &p.frontends[&FrontendKey {
        addr: ip("192.0.2.1"),
        port: 30080,
        protocol: Protocol::TCP,
    }];
    assert_eq!(held.resolved.service, "hostport/h1/n.c9.eth0");
    let clash = &p.clashes["shop/web"];
    assert!(
        clash[0].contains("is also a host port of endpoint h1/n.c9.eth0"),
        "{clash:?}"
    );
    // The service's cluster IP is untouched.
    assert!(p.frontends.contains_key(&key()));
}
