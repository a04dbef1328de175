use super::*;
use crate::model::*;

fn one(text: &str) -> Document {
    let mut parsed = parse_documents(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.len(), 1);
    parsed.remove(0).document
}

fn service(text: &str) -> Service {
    match one(text) {
        Document::Service(s) => s,
        other => panic!("{other:?}"),
    }
}

fn refused(text: &str) -> String {
    parse_documents(text).expect_err("refused").to_string()
}

const MINIMAL: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n";

#[test]
fn a_minimal_service_gets_kubernetes_defaults() {
    let s = service(MINIMAL);
    assert_eq!(s.namespace, "default");
    assert_eq!(s.kind, ServiceKind::ClusterIP);
    assert!(s.needs_cluster_ips());
    assert_eq!(s.ip_families, vec![Family::IPv4]);
    assert_eq!(s.ip_family_policy, FamilyPolicy::SingleStack);
    assert_eq!(
        s.ports,
        vec![ServicePort {
            name: String::new(),
            protocol: Protocol::TCP,
            port: 80,
            target_port: TargetPort::Number(80),
            node_port: None,
        }]
    );
    assert_eq!(s.selector, None);
    assert_eq!(s.affinity_secs, None);
    assert!(!s.internal_local && !s.external_local && !s.publish_not_ready);
}

#[test]
fn dual_stack_affinity_node_ports_and_health_checks_are_read() {
    let s = service(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n  annotations:\n    strait.io/health-check: 'http:/ready'\n    strait.io/health-check-interval: 2s\nspec:\n  type: NodePort\n  clusterIPs: [10.96.0.10, 'fd00:96::10']\n  selector: {app: web}\n  sessionAffinity: ClientIP\n  externalTrafficPolicy: Local\n  ports:\n  - {name: http, port: 80, targetPort: http, nodePort: 30080}\n  - {name: q, port: 81, protocol: UDP}\n",
    );
    assert_eq!(s.ip_family_policy, FamilyPolicy::RequireDualStack);
    assert_eq!(s.ip_families, vec![Family::IPv4, Family::IPv6]);
    assert_eq!(s.affinity_secs, Some(DEFAULT_AFFINITY_SECS));
    assert!(s.external_local);
    assert_eq!(s.ports[0].target_port, TargetPort::Name("http".into()));
    assert_eq!(s.ports[0].node_port, Some(30080));
    assert_eq!(s.ports[1].node_port, None);
    assert!(s.needs_node_ports());
    assert_eq!(
        s.health_check,
        Some(HealthCheck {
            kind: CheckKind::Http {
                path: "/ready".into()
            },
            interval_ms: 2000,
            fall: 2,
            rise: 2,
        })
    );
    // PreferDualStack without addresses asks for both families.
    let s = service(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ipFamilyPolicy: PreferDualStack\n  ipFamilies: [IPv6]\n  ports: [{port: 80}]\n",
    );
    assert_eq!(s.ip_families, vec![Family::IPv6, Family::IPv4]);
}

#[test]
fn what_strait_cannot_do_is_refused_by_name() {
    let cases = [
        ("type: LoadBalancer", "spec.type", "load-balancer addresses"),
        ("type: ExternalName", "spec.type", "DNS alias"),
        ("clusterIP: None", "spec.clusterIP", "headless"),
        (
            "trafficDistribution: PreferClose",
            "spec.trafficDistribution",
            "does not implement",
        ),
        (
            "loadBalancerIP: 1.2.3.4",
            "spec.loadBalancerIP",
            "LoadBalancer",
        ),
    ];
    for (line, field, why) in cases {
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  {line}\n  ports: [{{port: 80}}]\n"
        );
        let e = refused(&text);
        assert!(e.contains(field) && e.contains(why), "{line}: {e}");
        assert!(e.contains("Service default/web"), "{e}");
    }
    let e = refused(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80, protocol: SCTP}]\n",
    );
    assert!(
        e.contains("spec.ports[0].protocol") && e.contains("SCTP"),
        "{e}"
    );
}

#[test]
fn invalid_services_are_refused_with_the_field() {
    let base = |spec: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n{spec}")
    };
    let cases = [
        ("  ports: []\n", "spec.ports", "at least one port"),
        (
            "  ports: [{port: 80}, {port: 81}]\n",
            "spec.ports[0].name",
            "needs a name",
        ),
        (
            "  ports: [{name: a, port: 80}, {name: a, port: 81}]\n",
            "spec.ports[1].name",
            "duplicate",
        ),
        (
            "  ports: [{name: a, port: 80}, {name: b, port: 80}]\n",
            "spec.ports[1].port",
            "duplicate",
        ),
        (
            "  ports: [{port: 0}]\n",
            "spec.ports[0].port",
            "between 1 and 65535",
        ),
        (
            "  ports: [{port: 80, nodePort: 30080}]\n",
            "spec.ports[0].nodePort",
            "NodePort",
        ),
        (
            "  type: NodePort\n  ports: [{port: 80, nodePort: 80}]\n",
            "spec.ports[0].nodePort",
            "valid range",
        ),
        (
            "  ports: [{port: 80, targetPort: 'not a name'}]\n",
            "spec.ports[0].targetPort",
            "",
        ),
        (
            "  clusterIP: 10.96.0.300\n  ports: [{port: 80}]\n",
            "spec.clusterIP",
            "valid IP",
        ),
        (
            "  clusterIP: 10.96.0.1\n  clusterIPs: [10.96.0.2]\n  ports: [{port: 80}]\n",
            "spec.clusterIP",
            "first of clusterIPs",
        ),
        (
            "  clusterIPs: [10.96.0.1, 10.96.0.2]\n  ports: [{port: 80}]\n",
            "spec.clusterIPs[1]",
            "different families",
        ),
        (
            "  clusterIPs: [10.96.0.1]\n  ipFamilies: [IPv6]\n  ports: [{port: 80}]\n",
            "spec.ipFamilies",
            "does not match",
        ),
        (
            "  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv4, IPv6]\n  ports: [{port: 80}]\n",
            "spec.ipFamilyPolicy",
            "one family",
        ),
        (
            "  sessionAffinity: Sticky\n  ports: [{port: 80}]\n",
            "spec.sessionAffinity",
            "supported values",
        ),
        (
            "  sessionAffinityConfig: {clientIP: {timeoutSeconds: 5}}\n  ports: [{port: 80}]\n",
            "timeoutSeconds",
            "ClientIP",
        ),
        (
            "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\n  ports: [{port: 80}]\n",
            "timeoutSeconds",
            "greater than 0",
        ),
        (
            "  externalTrafficPolicy: Local\n  ports: [{port: 80}]\n",
            "spec.externalTrafficPolicy",
            "NodePort",
        ),
        (
            "  externalIPs: [1.2.3.4, 1.2.3.4]\n  ports: [{port: 80}]\n",
            "spec.externalIPs[1]",
            "duplicate",
        ),
        (
            "  selector: {'bad key!': x}\n  ports: [{port: 80}]\n",
            "spec.selector",
            "invalid key",
        ),
        (
            "  ports: [{port: 80}]\n  color: blue\n",
            "spec.color",
            "unknown field",
        ),
    ];
    for (spec, field, why) in cases {
        let e = refused(&base(spec));
        assert!(e.contains(field) && e.contains(why), "{spec}: {e}");
    }
    for (annotations, why) in [
        ("strait.io/health-check: udp", "must be \\\"tcp\\\""),
        ("strait.io/health-check: 'http:healthz'", "must start"),
        (
            "{strait.io/health-check: tcp, strait.io/health-check-interval: 5ms}",
            "duration between",
        ),
        ("strait.io/health-check-interval: 1s", "without"),
    ] {
        let annotations = if annotations.starts_with('{') {
            annotations.to_string()
        } else {
            format!("{{{annotations}}}")
        };
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations: {annotations}\nspec:\n  ports: [{{port: 80}}]\n"
        );
        let e = refused(&text);
        assert!(e.contains("metadata.annotations"), "{e}");
        assert!(
            e.contains(why.replace("\\\"", "\"").as_str()),
            "{annotations}: {e}"
        );
    }
}

#[test]
fn endpoint_slices_name_their_service_and_default_their_conditions() {
    let d = one(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: db-1\n  namespace: ops\n  labels: {kubernetes.io/service-name: db}\naddressType: IPv4\nports: [{name: pg, port: 5432}]\nendpoints:\n- addresses: [198.51.100.7, 198.51.100.9]\n- addresses: [198.51.100.8]\n  conditions: {terminating: true, serving: true}\n  nodeName: n2\n",
    );
    let Document::EndpointSlice(s) = d else {
        panic!("{d:?}")
    };
    assert_eq!(s.service, "db");
    assert_eq!(s.id(), "ops/db-1");
    assert_eq!(s.endpoints[0].address.to_string(), "198.51.100.7");
    assert!(s.endpoints[0].ready && s.endpoints[0].serving && !s.endpoints[0].terminating);
    assert!(!s.endpoints[1].ready && s.endpoints[1].serving && s.endpoints[1].terminating);
    assert_eq!(s.endpoints[1].node_name.as_deref(), Some("n2"));
    assert_eq!(s.ports[0].protocol, Protocol::TCP);

    let slice = |body: &str| {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: s\n  labels: {{kubernetes.io/service-name: db}}\n{body}"
        )
    };
    for (body, field, why) in [
        ("addressType: FQDN\n", "addressType", "DNS"),
        (
            "addressType: IPv4\nendpoints: [{addresses: ['fd00::1']}]\n",
            "endpoints[0].addresses[0]",
            "not an IPv4",
        ),
        (
            "addressType: IPv4\nendpoints: [{addresses: []}]\n",
            "endpoints[0].addresses",
            "at least one",
        ),
        (
            "addressType: IPv4\nports: [{name: a, port: 1}, {name: a, port: 2}]\n",
            "ports[1].name",
            "duplicate",
        ),
    ] {
        let e = refused(&slice(body));
        assert!(e.contains(field) && e.contains(why), "{body}: {e}");
    }
    let e = refused(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\naddressType: IPv4\n",
    );
    assert!(e.contains("kubernetes.io/service-name"), "{e}");
}

#[test]
fn one_bad_document_refuses_all_and_kinds_are_checked() {
    let text =
        format!("{MINIMAL}---\napiVersion: v1\nkind: Service\nmetadata: {{name: b}}\nspec: {{}}\n");
    let e = parse_documents(&text).expect_err("refused");
    assert_eq!(e.document, 2);
    assert_eq!(e.object.as_deref(), Some("Service default/b"));
    let e = refused("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n");
    assert!(e.contains("unsupported kind"), "{e}");
    let e =
        refused("apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: p}\n");
    assert!(e.contains("apiVersion"), "{e}");
    let list = parse_documents(
        r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
             "spec": {"ports": [{"port": 80}]}},
            {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
             "metadata": {"name": "a-1", "labels": {"kubernetes.io/service-name": "a"}},
             "addressType": "IPv4"}]}"#,
    )
    .unwrap();
    assert_eq!(list.len(), 2);
}

#[test]
fn a_health_check_needs_a_tcp_port() {
    let e = refused(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: dns\n  annotations: {strait.io/health-check: tcp}\nspec:\n  ports: [{port: 53, protocol: UDP}]\n",
    );
    assert!(e.contains("first TCP port"), "{e}");
}
