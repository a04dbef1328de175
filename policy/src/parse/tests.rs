//! What users rely on: every accepted form becomes the policy its kind means (the
//! shapes of the upstream e2e netpol suite's policies among them), and every refusal
//! names the document and the field as found in the file.

use serde_json::{Value, json};

use super::*;
use crate::DEFAULT_ORDER;
use crate::ir::{
    Action, EndpointSelector, NamespaceScope, Peer, Policy, PolicyKey, PortMatch, Ports, Protocol,
    Rule, Tier,
};
use crate::selector::{LabelSelector, Operator, Requirement};

// ===== helpers =====

fn np(spec: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web", "namespace": "prod"},
        "spec": spec,
    })
}

fn cp(spec: Value) -> Value {
    json!({
        "apiVersion": "strait.io/v1",
        "kind": "ClusterPolicy",
        "metadata": {"name": "guard"},
        "spec": spec,
    })
}

fn one(text: &str) -> Document {
    let mut parsed = parse_documents(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.len(), 1);
    parsed.remove(0).document
}

fn policy_of(text: &str) -> Policy {
    match one(text) {
        Document::Policy(p) => p,
        other => panic!("not a policy: {other:?}"),
    }
}

fn policy(v: Value) -> Policy {
    policy_of(&v.to_string())
}

fn refused_text(text: &str) -> ParseError {
    match parse_documents(text) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e,
    }
}

/// Refused, at `field`; the message is returned for the tests that check it.
#[track_caller]
fn refused_at(v: Value, field: &str) -> String {
    let e = refused_text(&v.to_string());
    assert_eq!(e.document, 1, "{e}");
    assert_eq!(e.field, field, "{e}");
    e.message
}

fn labels(pairs: &[(&str, &str)]) -> crate::selector::Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: labels(pairs),
        match_expressions: vec![],
    }
}

fn prod() -> NamespaceScope {
    NamespaceScope::Only("prod".into())
}

fn pods(namespaces: NamespaceScope, pods: LabelSelector) -> Peer {
    Peer::Endpoints(EndpointSelector { namespaces, pods })
}

fn allow(peers: Vec<Peer>, ports: Vec<PortMatch>) -> Rule {
    Rule {
        action: Action::Allow,
        peers,
        ports,
    }
}

fn range(protocol: Protocol, first: u16, last: u16) -> PortMatch {
    PortMatch {
        protocol,
        ports: Ports::Range(first, last),
    }
}

fn cidr(net: &str, except: &[&str]) -> Peer {
    Peer::Cidr {
        net: net.parse().unwrap(),
        except: except.iter().map(|e| e.parse().unwrap()).collect(),
    }
}

// ===== NetworkPolicy: accepted forms =====

/// e2e netpol "should support a 'default-deny-ingress' policy".
#[test]
fn deny_all_ingress() {
    let p = policy_of(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: x
spec:
  podSelector: {}
  policyTypes:
  - Ingress
",
    );
    assert_eq!(
        p,
        Policy {
            key: PolicyKey::K8s {
                namespace: "x".into(),
                name: "deny-all".into()
            },
            tier: Tier::Namespaced,
            audit: false,
            subject: EndpointSelector {
                namespaces: NamespaceScope::Only("x".into()),
                pods: LabelSelector::everything(),
            },
            ingress: Some(vec![]),
            egress: None,
        }
    );
}

/// e2e netpol "should enforce policy to allow no egress": isolates egress only.
#[test]
fn deny_all_egress() {
    let p = policy(np(json!({"podSelector": {}, "policyTypes": ["Egress"]})));
    assert_eq!(p.ingress, None);
    assert_eq!(p.egress, Some(vec![]));
}

#[test]
fn namespace_defaults_to_default() {
    let p = policy(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "web"}, "spec": {"podSelector": {"matchLabels": {"app": "web"}}},
    }));
    assert_eq!(
        p.key,
        PolicyKey::K8s {
            namespace: "default".into(),
            name: "web".into()
        }
    );
    assert_eq!(
        p.subject.namespaces,
        NamespaceScope::Only(crate::ir::DEFAULT_NAMESPACE.into())
    );
    assert_eq!(p.subject.pods, sel(&[("app", "web")]));
    // No policyTypes, no egress: Ingress only, and no rules allow nothing.
    assert_eq!(p.ingress, Some(vec![]));
    assert_eq!(p.egress, None);
}

/// e2e netpol "should enforce policy to allow traffic only from a namespace, based on
/// NamespaceSelector with MatchExpressions".
#[test]
fn allow_from_namespace_with_match_expressions() {
    let p = policy_of(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-ns-y, namespace: x}
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions:
        - {key: ns, operator: In, values: [y]}
        - key: legacy
          operator: DoesNotExist
",
    );
    let ns = LabelSelector {
        match_labels: Default::default(),
        match_expressions: vec![
            Requirement {
                key: "ns".into(),
                operator: Operator::In,
                values: vec!["y".into()],
            },
            Requirement {
                key: "legacy".into(),
                operator: Operator::DoesNotExist,
                values: vec![],
            },
        ],
    };
    assert_eq!(
        p.ingress,
        Some(vec![allow(
            vec![pods(
                NamespaceScope::Selector(ns),
                LabelSelector::everything()
            )],
            vec![]
        )])
    );
    assert_eq!(p.egress, None);
}

/// e2e netpol "should enforce policy based on PodSelector and NamespaceSelector": both
/// in one peer must hold together; two peers are either.
#[test]
fn pod_and_namespace_selector() {
    let p = policy(np(json!({
        "podSelector": {},
        "ingress": [{"from": [
            {"podSelector": {"matchLabels": {"pod": "b"}},
             "namespaceSelector": {"matchLabels": {"ns": "y"}}},
            {"podSelector": {"matchLabels": {"pod": "c"}}},
        ]}],
    })));
    assert_eq!(
        p.ingress.unwrap()[0].peers,
        vec![
            pods(
                NamespaceScope::Selector(sel(&[("ns", "y")])),
                sel(&[("pod", "b")])
            ),
            // A podSelector alone: pods of the policy's own namespace.
            pods(prod(), sel(&[("pod", "c")])),
        ]
    );
}

/// e2e netpol "should allow ingress access from updated namespace"-style
/// `namespaceSelector: {}`: every namespace, all pods.
#[test]
fn empty_namespace_selector_is_every_namespace() {
    let p = policy(np(
        json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}}]}]}),
    ));
    assert_eq!(
        p.ingress.unwrap()[0].peers,
        vec![pods(
            NamespaceScope::Selector(LabelSelector::everything()),
            LabelSelector::everything()
        )]
    );
}

/// e2e netpol "should allow ingress access on one named port" and the ipBlock cases.
#[test]
fn ip_block_with_except() {
    let p = policy(np(json!({
        "podSelector": {},
        "ingress": [{"from": [{"ipBlock": {
            // Host bits are cleared, as Kubernetes' CIDR parser does.
            "cidr": "10.1.2.3/16",
            "except": ["10.1.2.0/24", "10.1.3.7/32"],
        }}]}],
    })));
    assert_eq!(
        p.ingress.unwrap()[0].peers,
        vec![cidr("10.1.0.0/16", &["10.1.2.0/24", "10.1.3.7/32"])]
    );
}

#[test]
fn named_port() {
    let p = policy(np(json!({
        "podSelector": {},
        "ingress": [{"ports": [{"port": "serve-81-tcp"}, {"protocol": "UDP", "port": "dns"}]}],
    })));
    assert_eq!(
        p.ingress.unwrap(),
        vec![allow(
            vec![],
            vec![
                PortMatch {
                    protocol: Protocol::TCP,
                    ports: Ports::Named("serve-81-tcp".into())
                },
                PortMatch {
                    protocol: Protocol::UDP,
                    ports: Ports::Named("dns".into())
                },
            ]
        )]
    );
}

/// e2e netpol "should support allow-all policy" with port ranges (endPort).
#[test]
fn numeric_ports_and_end_port() {
    let p = policy(np(json!({
        "podSelector": {},
        "egress": [{"ports": [
            {"port": 80},
            {"protocol": "TCP", "port": 8000, "endPort": 9000},
            {"protocol": "SCTP", "port": 5000, "endPort": 5000},
        ]}],
    })));
    assert_eq!(
        p.egress.unwrap()[0].ports,
        vec![
            range(Protocol::TCP, 80, 80),
            range(Protocol::TCP, 8000, 9000),
            range(Protocol::SCTP, 5000, 5000),
        ]
    );
}

#[test]
fn protocol_without_port_is_every_port_of_it() {
    let p = policy(np(json!({
        "podSelector": {},
        "ingress": [{"ports": [{"protocol": "UDP"}, {}]}],
    })));
    assert_eq!(
        p.ingress.unwrap()[0].ports,
        vec![PortMatch::any(Protocol::UDP), PortMatch::any(Protocol::TCP)]
    );
}

/// e2e netpol "should enforce egress policy allowing traffic to a server in a
/// different namespace based on PodSelector and NamespaceSelector" / "egress to one
/// CIDR only".
#[test]
fn egress_to_one_cidr_only() {
    let p = policy_of(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: egress-one-cidr
  namespace: x
spec:
  podSelector:
    matchLabels:
      pod: a
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.5/32
",
    );
    assert_eq!(p.ingress, None);
    assert_eq!(
        p.egress,
        Some(vec![allow(vec![cidr("10.0.0.5/32", &[])], vec![])])
    );
}

#[test]
fn ipv6_cidrs() {
    let p = policy(np(json!({
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "fd00:10::/48", "except": ["fd00:10:0:1::/64"]}}]}],
        "ingress": [{"from": [{"ipBlock": {"cidr": "::/0"}}]}],
    })));
    assert_eq!(
        p.egress.unwrap()[0].peers,
        vec![cidr("fd00:10::/48", &["fd00:10:0:1::/64"])]
    );
    assert_eq!(p.ingress.unwrap()[0].peers, vec![cidr("::/0", &[])]);
}

/// e2e netpol "should support allow-all policy": `ingress: [{}]`; and `from: []` is
/// also everybody.
#[test]
fn empty_rule_allows_all() {
    let p = policy(np(
        json!({"podSelector": {}, "ingress": [{}, {"from": [], "ports": []}]}),
    ));
    assert_eq!(
        p.ingress,
        Some(vec![allow(vec![], vec![]), allow(vec![], vec![])])
    );
}

#[test]
fn policy_types_default_as_kubernetes() {
    // Egress rules present: both directions.
    let p = policy(np(json!({"podSelector": {}, "egress": [{}]})));
    assert_eq!(
        (p.ingress, p.egress),
        (Some(vec![]), Some(vec![allow(vec![], vec![])]))
    );
    // `egress: []` is no egress rule: Ingress only.
    let p = policy(np(
        json!({"podSelector": {}, "egress": [], "policyTypes": []}),
    ));
    assert_eq!((p.ingress, p.egress), (Some(vec![]), None));
    // Rules of a direction policyTypes leaves out are ignored.
    let p = policy(np(
        json!({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{}]}),
    ));
    assert_eq!((p.ingress, p.egress), (None, Some(vec![])));
}

/// What `kubectl get networkpolicy -o yaml` prints applies as it is.
#[test]
fn server_fields_of_a_kubectl_copy_are_tolerated() {
    let p = policy_of(
        r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy"}
  creationTimestamp: "2024-05-01T10:00:00Z"
  generation: 1
  labels:
    team: web
  managedFields:
  - apiVersion: networking.k8s.io/v1
    fieldsType: FieldsV1
    manager: kubectl-client-side-apply
    operation: Update
  name: web
  namespace: prod
  resourceVersion: "1234"
  uid: 4a1b6f0e-0000-4000-8000-000000000000
spec:
  podSelector: {}
  policyTypes:
  - Ingress
status: {}
"#,
    );
    assert_eq!(p.ingress, Some(vec![]));
}

#[test]
fn audit_annotation() {
    let mut v = np(json!({"podSelector": {}}));
    assert!(!policy(v.clone()).audit);
    v["metadata"]["annotations"] = json!({"strait.io/audit": "true"});
    assert!(policy(v.clone()).audit);
    v["metadata"]["annotations"] = json!({"strait.io/audit": "false"});
    assert!(!policy(v).audit);
}

// ===== ClusterPolicy and Namespace =====

#[test]
fn cluster_policy_every_field() {
    let p = policy_of(
        "apiVersion: strait.io/v1
kind: ClusterPolicy
metadata:
  name: guard
spec:
  order: 10.5
  audit: true
  namespaceSelector:
    matchLabels: {env: prod}
  podSelector:
    matchExpressions: [{key: app, operator: Exists}]
  types: [Ingress, Egress]
  ingress:
  - action: Log
  - action: Allow
    protocol: TCP
    from:
    - podSelector: {matchLabels: {app: monitor}}
    ports:
    - port: 9090
    - port: metrics
    - port: 10000
      endPort: 10100
  - action: Pass
    from:
    - namespaceSelector: {matchLabels: {team: web}}
  - action: Deny
  egress:
  - action: Allow
    protocol: ICMP
    icmp: {type: 8, code: 0}
  - action: Allow
    protocol: ICMPv6
    icmp: {type: 128}
  - action: Allow
    protocol: UDP
    to: [{ipBlock: {cidr: 10.96.0.10/32}}]
  - action: Deny
    protocol: 47
    to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}]
",
    );
    let rule = |action, peers, ports| Rule {
        action,
        peers,
        ports,
    };
    assert_eq!(
        p.key,
        PolicyKey::Cluster {
            name: "guard".into()
        }
    );
    assert_eq!(p.tier, Tier::Cluster { order: 10.5 });
    assert!(p.audit);
    assert_eq!(
        p.subject,
        EndpointSelector {
            namespaces: NamespaceScope::Selector(sel(&[("env", "prod")])),
            pods: LabelSelector {
                match_labels: Default::default(),
                match_expressions: vec![Requirement {
                    key: "app".into(),
                    operator: Operator::Exists,
                    values: vec![],
                }],
            },
        }
    );
    assert_eq!(
        p.ingress.unwrap(),
        vec![
            rule(Action::Log, vec![], vec![]),
            rule(
                Action::Allow,
                // In a cluster policy a podSelector alone reaches every namespace.
                vec![pods(NamespaceScope::All, sel(&[("app", "monitor")]))],
                vec![
                    range(Protocol::TCP, 9090, 9090),
                    PortMatch {
                        protocol: Protocol::TCP,
                        ports: Ports::Named("metrics".into())
                    },
                    range(Protocol::TCP, 10000, 10100),
                ]
            ),
            rule(
                Action::Pass,
                vec![pods(
                    NamespaceScope::Selector(sel(&[("team", "web")])),
                    LabelSelector::everything()
                )],
                vec![]
            ),
            rule(Action::Deny, vec![], vec![]),
        ]
    );
    assert_eq!(
        p.egress.unwrap(),
        vec![
            rule(
                Action::Allow,
                vec![],
                vec![PortMatch::icmp(Protocol::ICMP, 8, Some(0))]
            ),
            rule(
                Action::Allow,
                vec![],
                vec![PortMatch::icmp(Protocol::ICMPV6, 128, None)]
            ),
            rule(
                Action::Allow,
                vec![cidr("10.96.0.10/32", &[])],
                vec![PortMatch::any(Protocol::UDP)]
            ),
            rule(
                Action::Deny,
                vec![cidr("0.0.0.0/0", &["10.0.0.0/8"])],
                vec![PortMatch::any(Protocol(47))]
            ),
        ]
    );
}

#[test]
fn cluster_policy_defaults() {
    let p = policy(cp(json!({})));
    assert_eq!(
        p.tier,
        Tier::Cluster {
            order: DEFAULT_ORDER
        }
    );
    assert!(!p.audit);
    assert_eq!(
        p.subject,
        EndpointSelector {
            namespaces: NamespaceScope::All,
            pods: LabelSelector::everything()
        }
    );
    // No lists, no types: Ingress, isolating with no rule.
    assert_eq!((p.ingress, p.egress), (Some(vec![]), None));
    // Types follow the lists given.
    let p = policy(cp(json!({"egress": [{"action": "Deny"}]})));
    assert_eq!(p.ingress, None);
    assert_eq!(
        p.egress,
        Some(vec![Rule {
            action: Action::Deny,
            peers: vec![],
            ports: vec![]
        }])
    );
    let p = policy(cp(json!({"ingress": [], "egress": []})));
    assert_eq!((p.ingress, p.egress), (Some(vec![]), Some(vec![])));
    let p = policy(cp(json!({"types": ["Egress"], "order": -5})));
    assert_eq!((p.ingress, p.egress), (None, Some(vec![])));
    assert_eq!(p.tier, Tier::Cluster { order: -5.0 });
}

#[test]
fn namespace_document() {
    let doc = one("apiVersion: v1
kind: Namespace
metadata:
  name: prod
  labels:
    env: prod
    team: web
spec:
  finalizers: [kubernetes]
status:
  phase: Active
");
    assert_eq!(
        doc,
        Document::Namespace(NamespaceDoc {
            name: "prod".into(),
            labels: labels(&[("env", "prod"), ("team", "web")]),
        })
    );
}

// ===== input forms =====

#[test]
fn yaml_stream_skips_empty_documents() {
    let text = "---
# nothing here
---
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: a}
spec: {podSelector: {}}
...
";
    let parsed = parse_documents(text).unwrap();
    assert_eq!(parsed.len(), 2);
    assert!(matches!(parsed[0].document, Document::Namespace(_)));
    assert!(matches!(parsed[1].document, Document::Policy(_)));
    // The source is the object as given, as JSON.
    assert_eq!(
        parsed[0].source,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}})
    );
    assert_eq!(parse_documents("").unwrap(), vec![]);
    assert_eq!(parse_documents("# only a comment\n---\n").unwrap(), vec![]);
}

#[test]
fn json_object_array_stream_and_list() {
    let ns = |n: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}});
    let names = |text: String| -> Vec<String> {
        parse_documents(&text)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|p| match p.document {
                Document::Namespace(n) => n.name,
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(names(ns("a").to_string()), ["a"]);
    assert_eq!(names(json!([ns("a"), ns("b")]).to_string()), ["a", "b"]);
    // JSON with tabs (which YAML would refuse) and objects one after another.
    assert_eq!(names(format!("\t{}\n\t{}\n", ns("a"), ns("b"))), ["a", "b"]);
    let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
                      "items": [ns("a"), ns("b")]});
    assert_eq!(names(list.to_string()), ["a", "b"]);
    let parsed = parse_documents(&list.to_string()).unwrap();
    assert_eq!(parsed[1].source, ns("b"));
    // The same List as YAML.
    assert_eq!(
        names(
            "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: c}}\n"
                .into()
        ),
        ["c"]
    );
}

// ===== refusals =====

#[test]
fn one_bad_document_refuses_all() {
    let good = np(json!({"podSelector": {}}));
    let mut bad =
        np(json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80, "endPort": 79}]}]}));
    bad["metadata"]["name"] = json!("api");
    let text = format!(
        "{}\n---\n{}\n---\n{}\n",
        serde_json::to_string(&good).unwrap(),
        bad,
        good
    );
    let e = refused_text(&text);
    assert_eq!(e.document, 2);
    assert_eq!(e.field, "spec.ingress[0].ports[0].endPort");
    assert_eq!(
        e.to_string(),
        "document 2 (NetworkPolicy prod/api): spec.ingress[0].ports[0].endPort: \
         must not be less than port (80)"
    );
    // In a JSON list, the third object is document 3.
    let e = refused_text(&json!([good, good, bad]).to_string());
    assert_eq!(
        (e.document, e.field.as_str()),
        (3, "spec.ingress[0].ports[0].endPort")
    );
}

#[test]
fn not_yaml_or_not_an_object() {
    let e = refused_text("apiVersion: v1\nkind: Namespace\n---\nmetadata: [\n");
    assert_eq!((e.document, e.field.as_str()), (2, ""));
    assert!(e.message.starts_with("not valid YAML or JSON"), "{e}");
    let e = refused_text("{\"kind\": ");
    assert_eq!(e.document, 1);
    let e = refused_text("just a string\n");
    assert_eq!((e.document, e.field.as_str()), (1, ""));
    assert!(e.message.contains("must be an object"), "{e}");
    let e = refused_text("[1]");
    assert!(e.message.contains("must be an object"), "{e}");
}

#[test]
fn kind_and_api_version() {
    let mut v = np(json!({"podSelector": {}}));
    v.as_object_mut().unwrap().remove("kind");
    assert_eq!(refused_at(v, "kind"), "required value");
    let mut v = np(json!({"podSelector": {}}));
    v.as_object_mut().unwrap().remove("apiVersion");
    refused_at(v, "apiVersion");
    let mut v = np(json!({"podSelector": {}}));
    v["kind"] = json!("Pod");
    assert!(refused_at(v, "kind").starts_with("unsupported kind \"Pod\""));
    let mut v = np(json!({"podSelector": {}}));
    v["apiVersion"] = json!("extensions/v1beta1");
    assert_eq!(
        refused_at(v, "apiVersion"),
        "NetworkPolicy is in apiVersion \"networking.k8s.io/v1\", not \"extensions/v1beta1\""
    );
    let mut v = cp(json!({}));
    v["apiVersion"] = json!("crd.projectcalico.org/v1");
    refused_at(v, "apiVersion");
}

#[test]
fn unknown_and_duplicate_fields() {
    let msg = refused_at(np(json!({"podSelector": {}, "ingres": []})), "spec.ingres");
    assert_eq!(
        msg,
        "unknown field (known fields here: podSelector, policyTypes, ingress, egress)"
    );
    refused_at(
        np(json!({"podSelector": {}, "ingress": [{"to": []}]})),
        "spec.ingress[0].to",
    );
    refused_at(
        np(json!({"podSelector": {}, "egress": [{"from": []}]})),
        "spec.egress[0].from",
    );
    refused_at(
        np(json!({"podSelector": {}, "ingress": [{"from": [{"ipblock": {}}]}]})),
        "spec.ingress[0].from[0].ipblock",
    );
    refused_at(
        np(json!({"podSelector": {"matchLabel": {}}})),
        "spec.podSelector.matchLabel",
    );
    refused_at(
        np(json!({"podSelector": {}, "ingress": [{"ports": [{"prot": "TCP"}]}]})),
        "spec.ingress[0].ports[0].prot",
    );
    let mut v = np(json!({"podSelector": {}}));
    v["extra"] = json!(1);
    refused_at(v, "extra");
    let mut v = np(json!({"podSelector": {}}));
    v["metadata"]["nmae"] = json!("x");
    refused_at(v, "metadata.nmae");

    let e = refused_text(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web}
spec:
  podSelector: {}
  ingress:
  - ports:
    - port: 80
      port: 81
",
    );
    assert_eq!(
        (e.document, e.field.as_str()),
        (1, "spec.ingress[0].ports[0].port")
    );
    assert_eq!(e.message, "duplicate field");
    let e = refused_text(r#"[{"kind": "Namespace"}, {"kind": "Namespace", "kind": "x"}]"#);
    assert_eq!((e.document, e.field.as_str()), (2, "kind"));
}

#[test]
fn metadata_name_and_namespace() {
    let mut v = np(json!({"podSelector": {}}));
    v["metadata"] = json!({"generateName": "web-"});
    refused_at(v, "metadata.name");
    let mut v = np(json!({"podSelector": {}}));
    v["metadata"]["name"] = json!("Web");
    assert!(refused_at(v, "metadata.name").contains("RFC 1123 subdomain"));
    let mut v = np(json!({"podSelector": {}}));
    v["metadata"]["namespace"] = json!("a.b");
    assert!(refused_at(v, "metadata.namespace").contains("RFC 1123 label"));
    let mut v = np(json!({"podSelector": {}}));
    v["metadata"]["name"] = json!(7);
    assert_eq!(
        refused_at(v, "metadata.name"),
        "must be a string, not a number"
    );
    let mut v = np(json!({"podSelector": {}}));
    v.as_object_mut().unwrap().remove("metadata");
    refused_at(v, "metadata");
    let mut v = np(json!({"podSelector": {}}));
    v["metadata"]["labels"] = json!({"team": "a b"});
    assert!(refused_at(v, "metadata.labels").starts_with("invalid value \"a b\" of \"team\""));
    let mut v = np(json!({"podSelector": {}}));
    v["metadata"]["annotations"] = json!({"strait.io/audit": "yes"});
    refused_at(v, "metadata.annotations");
}

#[test]
fn spec_and_pod_selector_are_required() {
    let mut v = np(json!({}));
    v.as_object_mut().unwrap().remove("spec");
    refused_at(v, "spec");
    assert_eq!(
        refused_at(np(json!({})), "spec.podSelector"),
        "required value"
    );
    refused_at(np(json!({"podSelector": []})), "spec.podSelector");
}

#[test]
fn policy_types() {
    let msg = refused_at(
        np(json!({"podSelector": {}, "policyTypes": ["Ingress", "egress"]})),
        "spec.policyTypes[1]",
    );
    assert_eq!(
        msg,
        "unsupported value \"egress\": supported values: \"Ingress\", \"Egress\""
    );
    refused_at(
        np(json!({"podSelector": {}, "policyTypes": ["Egress", "Egress"]})),
        "spec.policyTypes[1]",
    );
    refused_at(
        np(json!({"podSelector": {}, "policyTypes": "Ingress"})),
        "spec.policyTypes",
    );
}

#[test]
fn peers() {
    let at = |peer: Value| np(json!({"podSelector": {}, "ingress": [{"from": [peer]}]}));
    assert!(
        refused_at(at(json!({})), "spec.ingress[0].from[0]").starts_with("must specify a peer")
    );
    assert_eq!(
        refused_at(
            at(json!({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}})),
            "spec.ingress[0].from[0]"
        ),
        "may not specify both ipBlock and another peer"
    );
    refused_at(
        at(json!({"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}})),
        "spec.ingress[0].from[0]",
    );
    refused_at(
        at(json!({"ipBlock": {}})),
        "spec.ingress[0].from[0].ipBlock.cidr",
    );
    for bad in ["10.0.0.0", "10.0.0.0/33", "010.0.0.0/8", "fd00::/129", "x"] {
        let msg = refused_at(
            at(json!({"ipBlock": {"cidr": bad}})),
            "spec.ingress[0].from[0].ipBlock.cidr",
        );
        assert!(msg.contains("not a valid CIDR"), "{bad}: {msg}");
    }
    let except =
        |e: &str| at(json!({"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.1.0/24", e]}}));
    for bad in [
        "10.2.0.0/24",
        "10.1.0.0/16",
        "10.0.0.0/8",
        "fd00::/64",
        "x/1",
    ] {
        refused_at(except(bad), "spec.ingress[0].from[0].ipBlock.except[1]");
    }
    assert_eq!(
        refused_at(
            except("10.1.0.0/16"),
            "spec.ingress[0].from[0].ipBlock.except[1]"
        ),
        "10.1.0.0/16 must be a strict subset of `cidr` (10.1.0.0/16)"
    );
    refused_at(
        np(json!({"podSelector": {}, "egress": [{"to": {"podSelector": {}}}]})),
        "spec.egress[0].to",
    );
}

#[test]
fn ports() {
    let at = |port: Value| np(json!({"podSelector": {}, "ingress": [{"ports": [{}, port]}]}));
    let f = "spec.ingress[0].ports[1]";
    assert_eq!(
        refused_at(at(json!({"protocol": "tcp"})), &format!("{f}.protocol")),
        "unsupported value \"tcp\": supported values: \"TCP\", \"UDP\", \"SCTP\""
    );
    refused_at(at(json!({"protocol": "ICMP"})), &format!("{f}.protocol"));
    for bad in [
        json!(0),
        json!(65536),
        json!(-1),
        json!(1u64 << 40),
        json!(u64::MAX),
    ] {
        let msg = refused_at(at(json!({"port": bad})), &format!("{f}.port"));
        assert!(
            msg.ends_with("must be between 1 and 65535, inclusive"),
            "{msg}"
        );
    }
    assert_eq!(
        refused_at(at(json!({"port": 80.5})), &format!("{f}.port")),
        "must be a whole number, not 80.5"
    );
    // A quoted number is a port name, and a port name needs a letter.
    assert_eq!(
        refused_at(at(json!({"port": "80"})), &format!("{f}.port")),
        "\"80\": must contain at least one letter (a-z)"
    );
    refused_at(
        at(json!({"port": "a-very-long-port-name"})),
        &format!("{f}.port"),
    );
    refused_at(at(json!({"port": true})), &format!("{f}.port"));
    assert_eq!(
        refused_at(
            at(json!({"port": "http", "endPort": 90})),
            &format!("{f}.endPort")
        ),
        "may not be specified when `port` is non-numeric"
    );
    assert_eq!(
        refused_at(at(json!({"endPort": 90})), &format!("{f}.endPort")),
        "may not be specified when `port` is not specified"
    );
    refused_at(
        at(json!({"port": 80, "endPort": 65536})),
        &format!("{f}.endPort"),
    );
    assert_eq!(
        refused_at(
            at(json!({"port": 80, "endPort": 79})),
            &format!("{f}.endPort")
        ),
        "must not be less than port (80)"
    );
}

#[test]
fn label_selectors() {
    let at = |s: Value| np(json!({"podSelector": s}));
    assert!(
        refused_at(
            at(json!({"matchLabels": {"bad key": "x"}})),
            "spec.podSelector.matchLabels"
        )
        .starts_with("invalid key \"bad key\"")
    );
    refused_at(
        at(json!({"matchLabels": {"app": "-x"}})),
        "spec.podSelector.matchLabels",
    );
    assert_eq!(
        refused_at(
            at(json!({"matchLabels": {"version": 1.5}})),
            "spec.podSelector.matchLabels.version"
        ),
        "must be a string, not a number (quote it: \"1.5\")"
    );
    let expr = |e: Value| at(json!({"matchExpressions": [e]}));
    let f = "spec.podSelector.matchExpressions[0]";
    assert_eq!(
        refused_at(
            expr(json!({"key": "a", "operator": "in", "values": ["x"]})),
            &format!("{f}.operator")
        ),
        "unsupported value \"in\": supported values: \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\""
    );
    assert_eq!(
        refused_at(
            expr(json!({"key": "a", "operator": "In"})),
            &format!("{f}.values")
        ),
        "must be specified when `operator` is 'In' or 'NotIn'"
    );
    refused_at(
        expr(json!({"key": "a", "operator": "NotIn", "values": []})),
        &format!("{f}.values"),
    );
    assert_eq!(
        refused_at(
            expr(json!({"key": "a", "operator": "Exists", "values": ["x"]})),
            &format!("{f}.values")
        ),
        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
    );
    refused_at(
        expr(json!({"key": "a", "operator": "DoesNotExist", "values": ["x"]})),
        &format!("{f}.values"),
    );
    refused_at(
        expr(json!({"key": "a/b/c", "operator": "Exists"})),
        &format!("{f}.key"),
    );
    refused_at(expr(json!({"operator": "Exists"})), &format!("{f}.key"));
    refused_at(expr(json!({"key": "a"})), &format!("{f}.operator"));
    refused_at(
        expr(json!({"key": "a", "operator": "In", "values": ["a b"]})),
        &format!("{f}.values[0]"),
    );
    // The same checks in peers' selectors.
    refused_at(
        np(
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]}]}),
        ),
        "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values",
    );
}

#[test]
fn cluster_policy_refusals() {
    let rule = |r: Value| cp(json!({"ingress": [r]}));
    let f = "spec.ingress[0]";
    assert_eq!(
        refused_at(rule(json!({})), &format!("{f}.action")),
        "required value"
    );
    assert_eq!(
        refused_at(rule(json!({"action": "allow"})), &format!("{f}.action")),
        "unsupported value \"allow\": supported values: \"Allow\", \"Deny\", \"Pass\", \"Log\""
    );
    assert_eq!(
        refused_at(
            rule(json!({"action": "Allow", "ports": [{"port": 80}]})),
            &format!("{f}.ports")
        ),
        "needs protocol TCP, UDP or SCTP"
    );
    refused_at(
        rule(json!({"action": "Allow", "protocol": "ICMP", "ports": [{"port": 80}]})),
        &format!("{f}.ports"),
    );
    refused_at(
        rule(json!({"action": "Allow", "protocol": "TCP", "ports": [{"endPort": 80}]})),
        &format!("{f}.ports[0].port"),
    );
    refused_at(
        rule(
            json!({"action": "Allow", "protocol": "TCP", "ports": [{"port": 80, "protocol": "UDP"}]}),
        ),
        &format!("{f}.ports[0].protocol"),
    );
    refused_at(
        rule(json!({"action": "Allow", "protocol": "TCP", "ports": [{"port": 90, "endPort": 80}]})),
        &format!("{f}.ports[0].endPort"),
    );
    assert_eq!(
        refused_at(
            rule(json!({"action": "Allow", "protocol": "TCP", "icmp": {"type": 8}})),
            &format!("{f}.icmp")
        ),
        "needs protocol ICMP or ICMPv6"
    );
    refused_at(
        rule(json!({"action": "Allow", "icmp": {"type": 8}})),
        &format!("{f}.icmp"),
    );
    assert_eq!(
        refused_at(
            rule(json!({"action": "Allow", "protocol": "ICMP", "icmp": {"code": 0}})),
            &format!("{f}.icmp.type")
        ),
        "required value: code needs type"
    );
    refused_at(
        rule(json!({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 256}})),
        &format!("{f}.icmp.type"),
    );
    refused_at(
        rule(json!({"action": "Allow", "protocol": "ICMPv6", "icmp": {"type": 1, "code": -1}})),
        &format!("{f}.icmp.code"),
    );
    for bad in [json!(0), json!(256), json!("icmp"), json!("GRE")] {
        refused_at(
            rule(json!({"action": "Deny", "protocol": bad})),
            &format!("{f}.protocol"),
        );
    }
    refused_at(
        rule(json!({"action": "Deny", "to": []})),
        &format!("{f}.to"),
    );
    refused_at(
        rule(
            json!({"action": "Deny", "from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}),
        ),
        &format!("{f}.from[0]"),
    );
    assert_eq!(
        refused_at(
            cp(json!({"types": ["Ingress"], "egress": []})),
            "spec.egress"
        ),
        "rules given, but spec.types does not include Egress"
    );
    refused_at(cp(json!({"order": "1"})), "spec.order");
    refused_at(cp(json!({"audit": "true"})), "spec.audit");
    refused_at(cp(json!({"selector": "all()"})), "spec.selector");
    refused_at(
        cp(json!({"namespaceSelector": {"matchLabels": {"a": "b c"}}})),
        "spec.namespaceSelector.matchLabels",
    );
    let mut v = cp(json!({}));
    v["metadata"]["namespace"] = json!("prod");
    refused_at(v, "metadata.namespace");
    let mut v = cp(json!({}));
    v.as_object_mut().unwrap().remove("spec");
    refused_at(v, "spec");
}

#[test]
fn namespace_refusals() {
    let ns = |meta: Value| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta});
    assert!(refused_at(ns(json!({"name": "a.b"})), "metadata.name").contains("RFC 1123 label"));
    refused_at(
        ns(json!({"name": "a", "labels": {"x": 1}})),
        "metadata.labels.x",
    );
    let mut v = ns(json!({"name": "a"}));
    v["spec"] = json!({"finalizers": [], "other": 1});
    refused_at(v, "spec.other");
}

#[test]
fn list_refusals() {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}});
    let list = |items: Value| json!({"apiVersion": "v1", "kind": "List", "items": items});
    refused_at(
        list(json!([ns, {"kind": "Namespace"}])),
        "items[1].apiVersion",
    );
    refused_at(list(json!([list(json!([]))])), "items[0]");
    refused_at(list(json!({})), "items");
    let e = refused_text(
        &list(json!([ns, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "B"}}]))
            .to_string(),
    );
    assert_eq!(e.field, "items[1].metadata.name");
    let mut v = list(json!([]));
    v["extra"] = json!(1);
    refused_at(v, "extra");
}

/// The examples of docs/policy.md are valid and mean what the text says.
#[test]
fn documentation_examples() {
    let doc = include_str!("../../../docs/policy.md");
    let examples: Vec<&str> = doc
        .split("```yaml\n")
        .skip(1)
        .map(|s| s.split("```").next().unwrap())
        .collect();
    assert_eq!(examples.len(), 2);
    let web = policy_of(examples[0]);
    assert_eq!(
        web.ingress.unwrap()[0].peers[0],
        pods(
            NamespaceScope::Selector(sel(&[("team", "front")])),
            sel(&[("role", "proxy")])
        )
    );
    let guard = policy_of(examples[1]);
    assert_eq!(guard.tier, Tier::Cluster { order: 100.0 });
    let egress = guard.egress.unwrap();
    assert_eq!(
        egress.iter().map(|r| r.action).collect::<Vec<_>>(),
        [Action::Deny, Action::Allow, Action::Pass]
    );
    assert_eq!(guard.ingress, None);
    // The error shown is the one the parser gives.
    let shown = doc.lines().find(|l| l.starts_with("document 2 (")).unwrap();
    let bad = examples[0].replace(
        "{protocol: TCP, port: 8080, endPort: 8090}",
        "{protocol: TCP, port: 8080, endPort: 8090}\n    - {port: 8080, endPort: 80}",
    );
    let e = refused_text(&format!("{}---\n{bad}", examples[1]));
    assert_eq!(e.to_string(), shown);
}
