//! One test per semantic of [`crate::ir`], on a small cluster in the style of the
//! upstream network-policy tests: namespaces x, y, z with pods a, b, c each. Every
//! probe goes through both the compiled tables (the datapath's lookup and merge)
//! and the reference evaluator, which must agree.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;
use crate::eval::{self, PeerEndpoint};
use crate::ir::{NAMESPACE_NAME_LABEL, PortMatch};
use crate::selector::LabelSelector;
use crate::tables::{IDENTITY_HOST, IDENTITY_WORLD, Verdict};
use crate::view::IdentityLabels;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pods(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: labels(pairs),
        match_expressions: Vec::new(),
    }
}

/// The cluster: an identity per (namespace, pod), addresses 10.1.N.P and
/// fd00::N:P, namespace y labelled `team=blue`.
struct Bed {
    view: ClusterView,
    addrs: BTreeMap<String, (u32, IpAddr, IpAddr)>,
}

impl Bed {
    fn new() -> Self {
        let mut view = ClusterView::default();
        view.namespaces
            .insert("y".into(), labels(&[("team", "blue")]));
        let mut bed = Bed {
            view,
            addrs: BTreeMap::new(),
        };
        for (n, ns) in ["x", "y", "z"].iter().enumerate() {
            for (p, pod) in ["a", "b", "c"].iter().enumerate() {
                bed.add(ns, pod, n as u8 + 1, p as u8 + 1);
            }
        }
        bed
    }

    fn add(&mut self, ns: &str, pod: &str, n: u8, p: u8) {
        let identity = FIRST_ALLOCATED_IDENTITY + self.addrs.len() as u32;
        self.view.identities.insert(
            identity,
            IdentityLabels {
                namespace: ns.into(),
                labels: labels(&[("pod", pod)]),
            },
        );
        let v4 = IpAddr::from([10, 1, n, p]);
        let v6 = IpAddr::from([0xfd00, 0, 0, 0, 0, 0, u16::from(n), u16::from(p)]);
        self.addrs.insert(format!("{ns}/{pod}"), (identity, v4, v6));
    }

    fn declare(&mut self, name: &str, port_name: &str, protocol: Protocol, port: u16) {
        let identity = self.addrs[name].0;
        self.view
            .named_ports
            .entry(identity)
            .or_default()
            .push(NamedPort {
                name: port_name.into(),
                protocol,
                port,
            });
    }

    fn ep(&self, name: &str) -> LocalEndpoint {
        let identity = self.addrs[name].0;
        let il = &self.view.identities[&identity];
        LocalEndpoint {
            identity,
            namespace: il.namespace.clone(),
            labels: il.labels.clone(),
            named_ports: self
                .view
                .named_ports
                .get(&identity)
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// An endpoint peer by `ns/pod` (IPv4 address), or a reserved one by address.
    fn peer(&self, name: &str) -> eval::Peer {
        self.peer_at(name, false)
    }

    fn peer_at(&self, name: &str, v6: bool) -> eval::Peer {
        if let Some(&(identity, a4, a6)) = self.addrs.get(name) {
            return eval::Peer {
                addr: if v6 { a6 } else { a4 },
                who: PeerEndpoint::Endpoint {
                    identity,
                    labels: self.view.identities[&identity].clone(),
                    named_ports: self
                        .view
                        .named_ports
                        .get(&identity)
                        .cloned()
                        .unwrap_or_default(),
                },
            };
        }
        eval::Peer {
            addr: name.parse().expect("an address"),
            who: PeerEndpoint::Reserved(IDENTITY_WORLD),
        }
    }

    /// The verdict for a new flow, through the tables and the evaluator alike.
    fn probe(
        &self,
        c: &Compiler,
        ep: &str,
        d: Direction,
        peer: &eval::Peer,
        protocol: u8,
        port: u16,
    ) -> Verdict {
        let local = self.ep(ep);
        let tables = c.compile(&self.view, &local);
        let by_tables = tables
            .direction(d)
            .lookup(peer.who.identity(), peer.addr, protocol, port)
            .verdict();
        let explained = eval::evaluate(c, &self.view, &local, d, peer, protocol, port);
        assert_eq!(
            by_tables, explained.verdict,
            "{ep} {d:?} {peer:?} {protocol}/{port}: tables vs evaluator"
        );
        by_tables
    }

    fn allowed(
        &self,
        c: &Compiler,
        ep: &str,
        d: Direction,
        peer: &str,
        proto: u8,
        port: u16,
    ) -> bool {
        let v = self.probe(c, ep, d, &self.peer(peer), proto, port);
        v.allowed && !v.audit
    }
}

fn k8s(
    ns: &str,
    name: &str,
    subject: LabelSelector,
    ingress: Option<Vec<Rule>>,
    egress: Option<Vec<Rule>>,
) -> Policy {
    Policy {
        key: PolicyKey::K8s {
            namespace: ns.into(),
            name: name.into(),
        },
        tier: Tier::Namespaced,
        audit: false,
        subject: EndpointSelector {
            namespaces: NamespaceScope::Only(ns.into()),
            pods: subject,
        },
        ingress,
        egress,
    }
}

fn cluster(name: &str, order: f64, ingress: Vec<Rule>) -> Policy {
    Policy {
        key: PolicyKey::Cluster { name: name.into() },
        tier: Tier::Cluster { order },
        audit: false,
        subject: EndpointSelector {
            namespaces: NamespaceScope::All,
            pods: LabelSelector::everything(),
        },
        ingress: Some(ingress),
        egress: None,
    }
}

fn rule(action: Action, peers: Vec<Peer>, ports: Vec<PortMatch>) -> Rule {
    Rule {
        action,
        peers,
        ports,
    }
}

fn allow(peers: Vec<Peer>, ports: Vec<PortMatch>) -> Rule {
    rule(Action::Allow, peers, ports)
}

fn in_ns(ns: &str, sel: LabelSelector) -> Peer {
    Peer::Endpoints(EndpointSelector {
        namespaces: NamespaceScope::Only(ns.into()),
        pods: sel,
    })
}

fn ns_selector(ns: LabelSelector, sel: LabelSelector) -> Peer {
    Peer::Endpoints(EndpointSelector {
        namespaces: NamespaceScope::Selector(ns),
        pods: sel,
    })
}

fn cidr(net: &str, except: &[&str]) -> Peer {
    Peer::Cidr {
        net: net.parse().unwrap(),
        except: except.iter().map(|e| e.parse().unwrap()).collect(),
    }
}

fn tcp(first: u16, last: u16) -> PortMatch {
    PortMatch {
        protocol: Protocol::TCP,
        ports: Ports::Range(first, last),
    }
}

fn named(protocol: Protocol, name: &str) -> PortMatch {
    PortMatch {
        protocol,
        ports: Ports::Named(name.into()),
    }
}

use Direction::{Egress, Ingress};

#[test]
fn without_policy_everything_is_allowed_and_nothing_is_isolated() {
    let bed = Bed::new();
    let c = Compiler::new(Vec::new(), Mode::Enforce);
    let t = c.compile(&bed.view, &bed.ep("x/a"));
    assert_eq!(t, EndpointTables::default());
    assert!(bed.allowed(&c, "x/a", Ingress, "z/c", TCP, 80));
    assert!(bed.allowed(&c, "x/a", Egress, "8.8.8.8", UDP, 53));
}

#[test]
fn deny_all_ingress_isolates_the_selected_endpoints_for_ingress_only() {
    let bed = Bed::new();
    let c = Compiler::new(
        vec![k8s(
            "x",
            "deny-all",
            LabelSelector::everything(),
            Some(vec![]),
            None,
        )],
        Mode::Enforce,
    );
    for pod in ["x/a", "x/b", "x/c"] {
        let v = bed.probe(&c, pod, Ingress, &bed.peer("y/a"), TCP, 80);
        assert_eq!(
            v,
            Verdict {
                allowed: false,
                audit: false,
                rule: None,
                log: None
            }
        );
        assert!(!bed.allowed(&c, pod, Ingress, "x/b", UDP, 81));
        assert!(
            bed.allowed(&c, pod, Egress, "y/a", TCP, 80),
            "egress stays open"
        );
    }
    assert!(
        bed.allowed(&c, "y/a", Ingress, "x/a", TCP, 80),
        "other namespaces untouched"
    );
    assert_eq!(
        c.selecting(&bed.view, &bed.ep("x/a"), Ingress),
        vec![PolicyKey::K8s {
            namespace: "x".into(),
            name: "deny-all".into()
        }]
    );
    assert!(c.selecting(&bed.view, &bed.ep("x/a"), Egress).is_empty());
}

#[test]
fn deny_all_egress_denies_hosts_and_the_world_too() {
    let bed = Bed::new();
    let c = Compiler::new(
        vec![k8s(
            "x",
            "deny-egress",
            pods(&[("pod", "a")]),
            None,
            Some(vec![]),
        )],
        Mode::Enforce,
    );
    assert!(!bed.allowed(&c, "x/a", Egress, "x/b", TCP, 80));
    assert!(!bed.allowed(&c, "x/a", Egress, "8.8.8.8", UDP, 53));
    assert!(
        bed.allowed(&c, "x/b", Egress, "8.8.8.8", UDP, 53),
        "x/b is not selected"
    );
    assert!(bed.allowed(&c, "x/a", Ingress, "x/b", TCP, 80));
}

#[test]
fn allow_from_a_namespace_by_its_labels_or_its_name() {
    let bed = Bed::new();
    let by_label = k8s(
        "x",
        "from-blue",
        pods(&[("pod", "a")]),
        Some(vec![allow(
            vec![ns_selector(
                pods(&[("team", "blue")]),
                LabelSelector::everything(),
            )],
            vec![],
        )]),
        None,
    );
    let by_name = k8s(
        "x",
        "from-z",
        pods(&[("pod", "b")]),
        Some(vec![allow(
            vec![ns_selector(
                pods(&[(NAMESPACE_NAME_LABEL, "z")]),
                LabelSelector::everything(),
            )],
            vec![],
        )]),
        None,
    );
    let c = Compiler::new(vec![by_label, by_name], Mode::Enforce);
    for pod in ["a", "b", "c"] {
        assert!(bed.allowed(&c, "x/a", Ingress, &format!("y/{pod}"), TCP, 80));
        assert!(!bed.allowed(&c, "x/a", Ingress, &format!("z/{pod}"), TCP, 80));
        assert!(bed.allowed(&c, "x/b", Ingress, &format!("z/{pod}"), UDP, 81));
        assert!(!bed.allowed(&c, "x/b", Ingress, &format!("y/{pod}"), UDP, 81));
    }
    assert!(
        !bed.allowed(&c, "x/a", Ingress, "x/c", TCP, 80),
        "own namespace not named"
    );
    assert!(
        !bed.allowed(&c, "x/a", Ingress, "8.8.8.8", TCP, 80),
        "selectors match no address"
    );
}

#[test]
fn pod_and_namespace_selectors_together_must_both_match() {
    let bed = Bed::new();
    let c = Compiler::new(
        vec![k8s(
            "x",
            "and",
            LabelSelector::everything(),
            Some(vec![allow(
                vec![ns_selector(
                    pods(&[("team", "blue")]),
                    pods(&[("pod", "b")]),
                )],
                vec![],
            )]),
            None,
        )],
        Mode::Enforce,
    );
    for peer in ["x/a", "x/b", "y/a", "y/c", "z/b"] {
        assert!(!bed.allowed(&c, "x/c", Ingress, peer, TCP, 80), "{peer}");
    }
    assert!(bed.allowed(&c, "x/c", Ingress, "y/b", TCP, 80));
    // The tables hold exactly one identity (y/b), for every protocol.
    let t = c.compile(&bed.view, &bed.ep("x/c"));
    let y_b = bed.addrs["y/b"].0;
    assert!(t.ingress.identities.keys().all(|(id, _)| *id == y_b));
    assert_eq!(t.ingress.identities.len(), Protocol::ALL.len());
    assert!(t.ingress.cidrs.is_empty());
}

#[test]
fn ip_block_with_except_both_address_families() {
    let bed = Bed::new();
    let c = Compiler::new(
        vec![k8s(
            "x",
            "block",
            LabelSelector::everything(),
            Some(vec![allow(
                vec![
                    cidr("10.1.0.0/16", &["10.1.3.0/24"]),
                    cidr("fd00::/64", &["fd00::2:0/112", "fd00::3:0/112"]),
                    cidr("fd00::2:2/128", &[]),
                ],
                vec![tcp(80, 80)],
            )]),
            None,
        )],
        Mode::Enforce,
    );
    assert!(bed.allowed(&c, "x/a", Ingress, "y/b", TCP, 80));
    assert!(!bed.allowed(&c, "x/a", Ingress, "y/b", TCP, 81));
    assert!(!bed.allowed(&c, "x/a", Ingress, "z/b", TCP, 80), "except");
    assert!(!bed.allowed(&c, "x/a", Ingress, "10.2.0.1", TCP, 80));
    let v6 = |name: &str| bed.probe(&c, "x/a", Ingress, &bed.peer_at(name, true), TCP, 80);
    assert!(v6("x/b").allowed);
    assert!(
        v6("y/b").allowed,
        "an except of one net is covered by another"
    );
    assert!(!v6("z/b").allowed);
    let t = c.compile(&bed.view, &bed.ep("x/a"));
    // Each net and each except is a class of its own.
    assert_eq!(t.ingress.cidrs.len(), 6);
    let except_class = t.ingress.cidrs[&"10.1.3.0/24".parse().unwrap()];
    assert!(
        !t.ingress
            .classes
            .keys()
            .any(|(class, _)| *class == except_class)
    );
}

#[test]
fn named_ports_resolve_on_the_local_endpoint_for_ingress() {
    let mut bed = Bed::new();
    bed.declare("x/a", "http", Protocol::TCP, 8080);
    bed.declare("x/a", "dns", Protocol::UDP, 5353);
    let c = Compiler::new(
        vec![k8s(
            "x",
            "named",
            LabelSelector::everything(),
            Some(vec![allow(
                vec![],
                vec![named(Protocol::TCP, "http"), named(Protocol::TCP, "dns")],
            )]),
            None,
        )],
        Mode::Enforce,
    );
    assert!(bed.allowed(&c, "x/a", Ingress, "y/a", TCP, 8080));
    assert!(
        bed.allowed(&c, "x/a", Ingress, "8.8.8.8", TCP, 8080),
        "any peer"
    );
    assert!(!bed.allowed(&c, "x/a", Ingress, "y/a", TCP, 80));
    assert!(
        !bed.allowed(&c, "x/a", Ingress, "y/a", UDP, 8080),
        "protocol must match"
    );
    assert!(
        !bed.allowed(&c, "x/a", Ingress, "y/a", UDP, 5353),
        "dns is UDP, rule says TCP"
    );
    assert!(!bed.allowed(&c, "x/a", Ingress, "y/a", TCP, 5353));
    assert!(
        !bed.allowed(&c, "x/b", Ingress, "y/a", TCP, 8080),
        "x/b declares nothing"
    );
}

#[test]
fn named_ports_resolve_on_each_destination_for_egress() {
    let mut bed = Bed::new();
    bed.declare("y/b", "http", Protocol::TCP, 8080);
    bed.declare("z/b", "http", Protocol::TCP, 9090);
    let to_pods = allow(
        vec![ns_selector(
            LabelSelector::everything(),
            pods(&[("pod", "b")]),
        )],
        vec![named(Protocol::TCP, "http")],
    );
    let to_cidr = allow(
        vec![cidr("10.1.0.0/16", &[])],
        vec![named(Protocol::TCP, "http")],
    );
    let c = Compiler::new(
        vec![k8s(
            "x",
            "egress",
            pods(&[("pod", "a")]),
            None,
            Some(vec![to_pods, to_cidr]),
        )],
        Mode::Enforce,
    );
    assert!(bed.allowed(&c, "x/a", Egress, "y/b", TCP, 8080));
    assert!(!bed.allowed(&c, "x/a", Egress, "y/b", TCP, 9090));
    assert!(bed.allowed(&c, "x/a", Egress, "z/b", TCP, 9090));
    assert!(!bed.allowed(&c, "x/a", Egress, "z/b", TCP, 8080));
    assert!(
        !bed.allowed(&c, "x/a", Egress, "y/c", TCP, 8080),
        "y/c declares nothing"
    );

    // With no peers, a named port reaches every endpoint that declares it, and
    // nothing that is only an address.
    let c = Compiler::new(
        vec![k8s(
            "x",
            "egress",
            pods(&[("pod", "a")]),
            None,
            Some(vec![allow(vec![], vec![named(Protocol::TCP, "http")])]),
        )],
        Mode::Enforce,
    );
    assert!(bed.allowed(&c, "x/a", Egress, "y/b", TCP, 8080));
    assert!(bed.allowed(&c, "x/a", Egress, "z/b", TCP, 9090));
    assert!(!bed.allowed(&c, "x/a", Egress, "8.8.8.8", TCP, 8080));
}

#[test]
fn end_port_ranges_are_inclusive_and_one_segment() {
    let bed = Bed::new();
    let c = Compiler::new(
        vec![k8s(
            "x",
            "range",
            LabelSelector::everything(),
            Some(vec![allow(
                vec![in_ns("x", pods(&[("pod", "b")]))],
                vec![tcp(80, 81), tcp(81, 90)],
            )]),
            None,
        )],
        Mode::Enforce,
    );
    assert!(!bed.allowed(&c, "x/a", Ingress, "x/b", TCP, 79));
    for port in [80, 81, 85, 90] {
        assert!(bed.allowed(&c, "x/a", Ingress, "x/b", TCP, port));
    }
    assert!(!bed.allowed(&c, "x/a", Ingress, "x/b", TCP, 91));
    assert!(!bed.allowed(&c, "x/a", Ingress, "x/b", UDP, 80));
    let t = c.compile(&bed.view, &bed.ep("x/a"));
    let segments = &t.ingress.identities[&(bed.addrs["x/b"].0, Protocol::TCP)];
    assert_eq!(
        segments.len(),
        1,
        "overlapping ranges of one rule merge: {segments:?}"
    );
    assert_eq!((segments[0].first, segments[0].last), (80, 90));
    // 80-87, 88-89 and 90 in the LPM trie, and nothing else in any map.
    assert_eq!(t.entry_count(), 3);
}

#[test]
fn cluster_tier_runs_first_in_order_with_pass_and_log() {
    let bed = Bed::new();
    let log_all = cluster("log-all", 10.0, vec![rule(Action::Log, vec![], vec![])]);
    let deny_z = cluster(
        "deny-z",
        20.0,
        vec![rule(
            Action::Deny,
            vec![ns_selector(
                pods(&[(NAMESPACE_NAME_LABEL, "z")]),
                LabelSelector::everything(),
            )],
            vec![],
        )],
    );
    let pass_b = cluster(
        "pass-b",
        30.0,
        vec![rule(
            Action::Pass,
            vec![in_ns("x", pods(&[("pod", "b")]))],
            vec![],
        )],
    );
    // Allows everyone on 80; after pass-b, so x/b is left to the namespaced tier.
    let allow_80 = cluster("allow-80", 40.0, vec![allow(vec![], vec![tcp(80, 80)])]);
    let k8s_b = k8s(
        "x",
        "from-b",
        LabelSelector::everything(),
        Some(vec![allow(
            vec![in_ns("x", pods(&[("pod", "b")]))],
            vec![tcp(81, 81)],
        )]),
        None,
    );
    let c = Compiler::new(
        vec![k8s_b, allow_80, pass_b, deny_z, log_all],
        Mode::Enforce,
    );
    let names: Vec<String> = c.policies().iter().map(|p| p.key.to_string()).collect();
    assert_eq!(
        names,
        [
            "cluster/log-all",
            "cluster/deny-z",
            "cluster/pass-b",
            "cluster/allow-80",
            "x/from-b"
        ]
    );
    let ids: Vec<RuleId> = c.rules().iter().map(|r| r.id).collect();
    assert_eq!(ids, [0, 1, 2, 3, 4]);

    let z = bed.probe(&c, "x/a", Ingress, &bed.peer("z/a"), TCP, 80);
    assert_eq!(
        (z.allowed, z.rule, z.log),
        (false, Some(1), Some(0)),
        "deny-z beats allow-80"
    );
    let y = bed.probe(&c, "x/a", Ingress, &bed.peer("y/a"), TCP, 80);
    assert_eq!((y.allowed, y.rule, y.log), (true, Some(3), Some(0)));
    // x/b passes: allow-80 is skipped, only the namespaced tier's 81 is open.
    let b80 = bed.probe(&c, "x/a", Ingress, &bed.peer("x/b"), TCP, 80);
    assert_eq!((b80.allowed, b80.rule, b80.log), (false, None, Some(0)));
    let b81 = bed.probe(&c, "x/a", Ingress, &bed.peer("x/b"), TCP, 81);
    assert_eq!((b81.allowed, b81.rule), (true, Some(4)));
    // A cluster policy isolates too: y/a is not allowed on 81 by anyone.
    assert!(!bed.allowed(&c, "y/a", Ingress, "x/c", TCP, 81));
    assert!(bed.allowed(&c, "y/a", Ingress, "x/c", TCP, 80));

    let e = eval::evaluate(
        &c,
        &bed.view,
        &bed.ep("x/a"),
        Ingress,
        &bed.peer("z/a"),
        TCP,
        80,
    );
    assert_eq!(
        e.deciding.map(|r| r.policy.to_string()),
        Some("cluster/deny-z".into())
    );
    assert_eq!(e.log.map(|r| r.action), Some(Action::Log));
    assert_eq!(e.selecting.len(), 5);
}

#[test]
fn equal_orders_go_by_name() {
    let bed = Bed::new();
    let c = Compiler::new(
        vec![
            cluster("b-allow", 5.0, vec![allow(vec![], vec![])]),
            cluster("a-deny", 5.0, vec![rule(Action::Deny, vec![], vec![])]),
        ],
        Mode::Enforce,
    );
    let v = bed.probe(&c, "x/a", Ingress, &bed.peer("y/a"), TCP, 80);
    assert!(!v.allowed);
    assert_eq!(
        c.rules()[v.rule.unwrap() as usize].policy.to_string(),
        "cluster/a-deny"
    );
}

#[test]
fn icmp_matches_by_type_and_code() {
    let bed = Bed::new();
    let c = Compiler::new(
        vec![cluster(
            "no-ping",
            1.0,
            vec![
                rule(
                    Action::Deny,
                    vec![],
                    vec![PortMatch::icmp(Protocol::ICMP, 8, None)],
                ),
                allow(vec![], vec![]),
            ],
        )],
        Mode::Enforce,
    );
    assert!(!bed.allowed(&c, "x/a", Ingress, "y/a", ICMP, 8 << 8));
    assert!(bed.allowed(&c, "x/a", Ingress, "y/a", ICMP, 3 << 8 | 4));
    assert!(
        bed.allowed(&c, "x/a", Ingress, "y/a", 58, 8 << 8),
        "ICMPv6 is another protocol"
    );
}

#[test]
fn audit_records_denies_and_lets_them_pass() {
    let bed = Bed::new();
    let mut deny_all = k8s(
        "x",
        "deny-all",
        LabelSelector::everything(),
        Some(vec![]),
        None,
    );
    deny_all.audit = true;
    let c = Compiler::new(vec![deny_all.clone()], Mode::Enforce);
    let v = bed.probe(&c, "x/a", Ingress, &bed.peer("y/a"), TCP, 80);
    assert_eq!((v.allowed, v.audit, v.rule), (true, true, None));

    // One enforcing policy among the isolating ones makes the default deny real.
    let enforcing = k8s(
        "x",
        "only-b",
        LabelSelector::everything(),
        Some(vec![allow(vec![in_ns("x", pods(&[("pod", "b")]))], vec![])]),
        None,
    );
    let c = Compiler::new(vec![deny_all, enforcing.clone()], Mode::Enforce);
    assert!(!c.compile(&bed.view, &bed.ep("x/a")).ingress.default_audit);
    let v = bed.probe(&c, "x/a", Ingress, &bed.peer("y/a"), TCP, 80);
    assert_eq!((v.allowed, v.audit), (false, false));

    // A rule's deny in an audited cluster policy, and everything under --policy-mode audit.
    let mut deny_y = cluster(
        "deny-y",
        1.0,
        vec![rule(
            Action::Deny,
            vec![ns_selector(
                pods(&[("team", "blue")]),
                LabelSelector::everything(),
            )],
            vec![],
        )],
    );
    deny_y.audit = true;
    let c = Compiler::new(vec![deny_y.clone()], Mode::Enforce);
    let v = bed.probe(&c, "x/a", Ingress, &bed.peer("y/a"), TCP, 80);
    assert_eq!((v.allowed, v.audit, v.rule), (true, true, Some(0)));
    deny_y.audit = false;
    let c = Compiler::new(vec![deny_y, enforcing], Mode::Audit);
    assert!(c.rules().iter().all(|r| r.audit));
    let v = bed.probe(&c, "x/a", Ingress, &bed.peer("y/a"), TCP, 80);
    assert_eq!((v.allowed, v.audit, v.rule), (true, true, Some(0)));
    let v = bed.probe(&c, "x/a", Ingress, &bed.peer("z/a"), TCP, 80);
    assert_eq!(
        (v.allowed, v.audit, v.rule),
        (true, true, None),
        "default deny audited"
    );
    let v = bed.probe(&c, "x/a", Ingress, &bed.peer("x/b"), TCP, 80);
    assert_eq!((v.allowed, v.audit, v.rule), (true, false, Some(1)));
}

#[test]
fn policies_of_a_namespace_are_unioned() {
    let bed = Bed::new();
    let from_b = k8s(
        "x",
        "p1",
        pods(&[("pod", "a")]),
        Some(vec![allow(
            vec![in_ns("x", pods(&[("pod", "b")]))],
            vec![tcp(80, 80)],
        )]),
        None,
    );
    let from_c = k8s(
        "x",
        "p2",
        pods(&[("pod", "a")]),
        Some(vec![
            allow(vec![in_ns("x", pods(&[("pod", "c")]))], vec![tcp(81, 81)]),
            allow(
                vec![in_ns("x", LabelSelector::everything())],
                vec![tcp(80, 80)],
            ),
        ]),
        None,
    );
    let c = Compiler::new(vec![from_c, from_b], Mode::Enforce);
    let v = bed.probe(&c, "x/a", Ingress, &bed.peer("x/b"), TCP, 80);
    assert_eq!(
        (v.allowed, v.rule),
        (true, Some(0)),
        "the lowest allowing rule is reported"
    );
    assert!(!bed.allowed(&c, "x/a", Ingress, "x/b", TCP, 81));
    assert!(bed.allowed(&c, "x/a", Ingress, "x/c", TCP, 81));
    assert!(bed.allowed(&c, "x/a", Ingress, "x/c", TCP, 80));
    assert!(
        !bed.allowed(&c, "x/a", Ingress, "y/c", TCP, 81),
        "Only(x) is x's pods"
    );
}

#[test]
fn a_policy_for_a_missing_namespace_matches_once_it_appears() {
    let mut bed = Bed::new();
    let in_w = k8s(
        "w",
        "deny-all",
        LabelSelector::everything(),
        Some(vec![]),
        None,
    );
    let from_w = k8s(
        "x",
        "from-w",
        LabelSelector::everything(),
        Some(vec![allow(
            vec![ns_selector(
                pods(&[("team", "green")]),
                LabelSelector::everything(),
            )],
            vec![],
        )]),
        None,
    );
    let c = Compiler::new(vec![in_w, from_w], Mode::Enforce);
    // Nothing in w yet: x/a is isolated and allows nobody.
    let t = c.compile(&bed.view, &bed.ep("x/a"));
    assert!(t.ingress.isolated && t.ingress.identities.is_empty());
    bed.add("w", "a", 9, 1);
    assert!(
        !bed.allowed(&c, "x/a", Ingress, "w/a", TCP, 80),
        "w has no team label yet"
    );
    assert!(
        !bed.allowed(&c, "w/a", Ingress, "x/a", TCP, 80),
        "w/a is isolated"
    );
    bed.view
        .namespaces
        .insert("w".into(), labels(&[("team", "green")]));
    assert!(bed.allowed(&c, "x/a", Ingress, "w/a", TCP, 80));
}

#[test]
fn reserved_identities_match_cidrs_only() {
    let bed = Bed::new();
    let c = Compiler::new(
        vec![k8s(
            "x",
            "all-pods",
            LabelSelector::everything(),
            Some(vec![
                allow(
                    vec![ns_selector(
                        LabelSelector::everything(),
                        LabelSelector::everything(),
                    )],
                    vec![],
                ),
                allow(vec![cidr("192.168.0.0/16", &[])], vec![tcp(22, 22)]),
            ]),
            None,
        )],
        Mode::Enforce,
    );
    let host = eval::Peer {
        addr: "192.168.0.1".parse().unwrap(),
        who: PeerEndpoint::Reserved(IDENTITY_HOST),
    };
    assert!(!bed.probe(&c, "x/a", Ingress, &host, TCP, 80).allowed);
    assert!(bed.probe(&c, "x/a", Ingress, &host, TCP, 22).allowed);
    assert!(eval::host_bypass(Ingress, &host));
    assert!(!eval::host_bypass(Egress, &host));
    assert!(!bed.allowed(&c, "x/a", Ingress, "8.8.8.8", TCP, 80));
    assert!(bed.allowed(&c, "x/a", Ingress, "z/c", UDP, 9));
}

#[test]
fn rules_are_numbered_in_evaluation_order_per_policy_and_direction() {
    let both = Policy {
        ingress: Some(vec![allow(vec![], vec![]), allow(vec![], vec![])]),
        egress: Some(vec![allow(vec![], vec![])]),
        ..k8s("a", "both", LabelSelector::everything(), None, None)
    };
    let c = Compiler::new(
        vec![both, cluster("first", -1.0, vec![allow(vec![], vec![])])],
        Mode::Enforce,
    );
    let rules: Vec<(String, Direction, usize)> = c
        .rules()
        .iter()
        .map(|r| (r.policy.to_string(), r.direction, r.index))
        .collect();
    assert_eq!(
        rules,
        [
            ("cluster/first".to_string(), Ingress, 0),
            ("a/both".to_string(), Ingress, 0),
            ("a/both".to_string(), Ingress, 1),
            ("a/both".to_string(), Egress, 0),
        ]
    );
    assert!(
        c.rules()
            .iter()
            .enumerate()
            .all(|(i, r)| r.id as usize == i)
    );
}

#[test]
fn policy_mode_reads_and_prints_as_the_flag_takes_it() {
    assert_eq!("enforce".parse::<Mode>(), Ok(Mode::Enforce));
    assert_eq!("audit".parse::<Mode>(), Ok(Mode::Audit));
    assert!(
        "Audit"
            .parse::<Mode>()
            .unwrap_err()
            .contains("enforce or audit")
    );
    assert_eq!(Mode::Audit.to_string(), "audit");
}
