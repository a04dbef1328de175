//! The compiled tables and the reference evaluator agree: on random policy sets
//! (both tiers, every action, selectors with every operator, CIDRs with excepts in
//! both families, numeric, ranged, named and ICMP ports, audit, both modes) over
//! random clusters, every probe (each endpoint and reserved peer, both directions,
//! each protocol key, ports on and around the rules' edges) gets the same verdict,
//! deciding rule and log rule from the datapath's lookup and merge as from
//! [`evaluate`]. And a large policy set compiles (its size printed).

mod synthetic;

use std::collections::BTreeMap;
use std::net::IpAddr;

use strait_policy::compile::{Compiler, Mode};
use strait_policy::eval::{Peer, PeerEndpoint, evaluate};
use strait_policy::ir::{
    Action, Direction, EndpointSelector, NamespaceScope, Peer as RulePeer, Policy, PolicyKey,
    PortMatch, Ports, Protocol, Rule, Tier,
};
use strait_policy::selector::{LabelSelector, Operator, Requirement};
use strait_policy::tables::{
    FIRST_ALLOCATED_IDENTITY, IDENTITY_HOST, IDENTITY_REMOTE_NODE, IDENTITY_WORLD,
};
use strait_policy::view::{ClusterView, IdentityLabels, LocalEndpoint, NamedPort};
use synthetic::{Rng, labels};

const NAMESPACES: [&str; 4] = ["x", "y", "z", "w"];
const KEYS: [&str; 3] = ["app", "tier", "canary"];
const VALUES: [&str; 3] = ["web", "db", "fe"];
const PORT_NAMES: [&str; 3] = ["http", "dns", "metrics"];
const NAMED_PORT_NUMBERS: [u16; 5] = [80, 81, 53, 8080, 9090];
const CIDRS: [&str; 16] = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.0.0/24",
    "10.1.0.2/32",
    "10.2.0.0/16",
    "8.8.0.0/16",
    "192.168.0.0/24",
    "::/0",
    "fd00::/16",
    "fd00:1::/32",
    "fd00:1::2/128",
    "fd00:2::/32",
    "2001:db8::/32",
    "10.3.0.0/16",
    "fd00:3::/32",
];
const PROTOCOLS: [u8; 6] = [6, 17, 132, 1, 58, 47];
const PORTS: [u16; 14] = [
    0,
    53,
    79,
    80,
    81,
    82,
    443,
    8080,
    9090,
    65535,
    8 << 8,
    8 << 8 | 1,
    3 << 8 | 4,
    1024,
];

fn selector(rng: &mut Rng) -> LabelSelector {
    let mut s = LabelSelector::everything();
    for _ in 0..rng.below(3) {
        s.match_labels
            .insert(rng.pick(&KEYS).to_string(), rng.pick(&VALUES).to_string());
    }
    if rng.chance(30) {
        let operator = *rng.pick(&[
            Operator::In,
            Operator::NotIn,
            Operator::Exists,
            Operator::DoesNotExist,
        ]);
        let values = match operator {
            Operator::In | Operator::NotIn => (0..1 + rng.below(2))
                .map(|_| rng.pick(&VALUES).to_string())
                .collect(),
            _ => Vec::new(),
        };
        s.match_expressions.push(Requirement {
            key: rng.pick(&KEYS).to_string(),
            operator,
            values,
        });
    }
    s
}

fn namespace_scope(rng: &mut Rng, own: Option<&str>) -> NamespaceScope {
    match rng.below(4) {
        0 => NamespaceScope::All,
        1 => NamespaceScope::Only(own.unwrap_or(*rng.pick(&NAMESPACES)).to_string()),
        2 => NamespaceScope::Only(rng.pick(&NAMESPACES).to_string()),
        _ => {
            let mut s = LabelSelector::everything();
            if rng.chance(80) {
                s.match_labels.insert(
                    rng.pick(&["team", strait_policy::ir::NAMESPACE_NAME_LABEL])
                        .to_string(),
                    rng.pick(&["red", "blue", "x", "y", "w"]).to_string(),
                );
            }
            NamespaceScope::Selector(s)
        }
    }
}

fn port_match(rng: &mut Rng) -> PortMatch {
    let protocol = Protocol(*rng.pick(&PROTOCOLS));
    let ports = match rng.below(5) {
        0 => Ports::Named(rng.pick(&PORT_NAMES).to_string()),
        1 => {
            let t = PortMatch::icmp(protocol, *rng.pick(&[0u8, 3, 8]), None);
            return if rng.chance(50) {
                t
            } else {
                PortMatch::icmp(protocol, 8, Some(*rng.pick(&[0u8, 1])))
            };
        }
        2 => Ports::Range(0, u16::MAX),
        _ => {
            // Edges near the probed ports; sometimes backwards (matches nothing).
            let a = *rng.pick(&[0u16, 53, 80, 81, 82, 1000, 8080, 2048]);
            let b = *rng.pick(&[53u16, 80, 81, 90, 1024, 8080, 9090, 65535]);
            Ports::Range(a, b)
        }
    };
    PortMatch { protocol, ports }
}

fn cidr_peer(rng: &mut Rng) -> RulePeer {
    let net: ipnet::IpNet = rng.pick(&CIDRS).parse().unwrap();
    let mut except = Vec::new();
    if rng.chance(40) {
        let inside: Vec<ipnet::IpNet> = CIDRS
            .iter()
            .map(|c| c.parse::<ipnet::IpNet>().unwrap())
            .filter(|c| net.contains(c) && *c != net)
            .collect();
        for _ in 0..rng.below(3) {
            if !inside.is_empty() {
                except.push(*rng.pick(&inside));
            }
        }
    }
    RulePeer::Cidr { net, except }
}

fn rules(rng: &mut Rng, cluster: bool, own: Option<&str>) -> Vec<Rule> {
    (0..rng.below(4))
        .map(|_| Rule {
            action: if cluster {
                *rng.pick(&[Action::Allow, Action::Deny, Action::Pass, Action::Log])
            } else {
                Action::Allow
            },
            peers: (0..rng.below(3))
                .map(|_| {
                    if rng.chance(60) {
                        RulePeer::Endpoints(EndpointSelector {
                            namespaces: namespace_scope(rng, own),
                            pods: selector(rng),
                        })
                    } else {
                        cidr_peer(rng)
                    }
                })
                .collect(),
            ports: (0..rng.below(3)).map(|_| port_match(rng)).collect(),
        })
        .collect()
}

fn policies(rng: &mut Rng) -> Vec<Policy> {
    (0..1 + rng.below(5))
        .map(|i| {
            let cluster = rng.chance(45);
            let ns = rng.pick(&NAMESPACES).to_string();
            let own = (!cluster).then_some(ns.as_str());
            let direction = |rng: &mut Rng| rng.chance(70).then(|| rules(rng, cluster, own));
            let ingress = direction(rng);
            let egress = direction(rng);
            Policy {
                key: if cluster {
                    PolicyKey::Cluster {
                        name: format!("c{i}"),
                    }
                } else {
                    PolicyKey::K8s {
                        namespace: ns.clone(),
                        name: format!("p{i}"),
                    }
                },
                tier: if cluster {
                    Tier::Cluster {
                        order: *rng.pick(&[1.0, 2.0, 2.0, 3.5]),
                    }
                } else {
                    Tier::Namespaced
                },
                audit: rng.chance(15),
                subject: EndpointSelector {
                    namespaces: if cluster {
                        namespace_scope(rng, None)
                    } else {
                        NamespaceScope::Only(ns.clone())
                    },
                    pods: if rng.chance(40) {
                        LabelSelector::everything()
                    } else {
                        selector(rng)
                    },
                },
                ingress,
                egress,
            }
        })
        .collect()
}

/// A cluster: namespaces x, y, z (some labelled; w never is), 3-9 identities with
/// named ports, each with an IPv4 and an IPv6 address in its namespace's range.
fn cluster(rng: &mut Rng) -> (ClusterView, Vec<Peer>) {
    let mut view = ClusterView::default();
    for ns in &NAMESPACES[..3] {
        if rng.chance(70) {
            view.namespaces.insert(
                ns.to_string(),
                labels(&[("team", *rng.pick(&["red", "blue"]))]),
            );
        }
    }
    let mut peers = Vec::new();
    for n in 0..3 + rng.below(7) {
        let identity = FIRST_ALLOCATED_IDENTITY + n as u32;
        let ns_index = rng.below(NAMESPACES.len());
        let mut l = BTreeMap::new();
        for key in KEYS {
            if rng.chance(60) {
                l.insert(key.to_string(), rng.pick(&VALUES).to_string());
            }
        }
        let il = IdentityLabels {
            namespace: NAMESPACES[ns_index].to_string(),
            labels: l,
        };
        let named: Vec<NamedPort> = (0..rng.below(3))
            .map(|_| NamedPort {
                name: rng.pick(&PORT_NAMES).to_string(),
                protocol: *rng.pick(&[Protocol::TCP, Protocol::UDP, Protocol::SCTP]),
                port: *rng.pick(&NAMED_PORT_NUMBERS),
            })
            .collect();
        view.identities.insert(identity, il.clone());
        if !named.is_empty() {
            view.named_ports.insert(identity, named.clone());
        }
        // x is 10.1/16 and fd00:1::/32, y 10.2 and fd00:2::, ...
        let host = n as u8 + 2;
        for addr in [
            IpAddr::from([10, ns_index as u8 + 1, 0, host]),
            IpAddr::from([0xfd00, ns_index as u16 + 1, 0, 0, 0, 0, 0, u16::from(host)]),
        ] {
            peers.push(Peer {
                addr,
                who: PeerEndpoint::Endpoint {
                    identity,
                    labels: il.clone(),
                    named_ports: named.clone(),
                },
            });
        }
    }
    for (addr, id) in [
        ("192.168.0.1", IDENTITY_HOST),
        ("192.168.0.2", IDENTITY_REMOTE_NODE),
        ("8.8.8.8", IDENTITY_WORLD),
        ("10.1.0.99", IDENTITY_WORLD),
        ("2001:db8::1", IDENTITY_WORLD),
        ("fd00:1::2", IDENTITY_WORLD),
        ("fe80::1", IDENTITY_HOST),
    ] {
        peers.push(Peer {
            addr: addr.parse().unwrap(),
            who: PeerEndpoint::Reserved(id),
        });
    }
    (view, peers)
}

fn local(view: &ClusterView, identity: u32) -> LocalEndpoint {
    let il = &view.identities[&identity];
    LocalEndpoint {
        identity,
        namespace: il.namespace.clone(),
        labels: il.labels.clone(),
        named_ports: view.named_ports.get(&identity).cloned().unwrap_or_default(),
    }
}

#[derive(Default, Debug)]
struct Outcomes {
    probes: usize,
    allowed_by_rule: usize,
    denied_by_rule: usize,
    audited: usize,
    default_denied: usize,
    open: usize,
    logged: usize,
    by_cidr_class: usize,
}

#[test]
fn compiled_tables_agree_with_the_evaluator_on_random_policy_sets() {
    let mut seen = Outcomes::default();
    for seed in 1..=200u64 {
        let mut rng = Rng::new(seed);
        let (view, peers) = cluster(&mut rng);
        let mode = if rng.chance(15) {
            Mode::Audit
        } else {
            Mode::Enforce
        };
        let compiler = Compiler::new(policies(&mut rng), mode);
        let ids: Vec<u32> = view.identities.keys().copied().collect();
        for _ in 0..2 {
            let ep = local(&view, *rng.pick(&ids));
            let tables = compiler.compile(&view, &ep);
            for d in [Direction::Ingress, Direction::Egress] {
                let t = tables.direction(d);
                for peer in &peers {
                    for &protocol in &PROTOCOLS {
                        for &port in &PORTS {
                            let lookup = t.lookup(peer.who.identity(), peer.addr, protocol, port);
                            let by_tables = lookup.verdict();
                            let e = evaluate(&compiler, &view, &ep, d, peer, protocol, port);
                            assert_eq!(
                                by_tables,
                                e.verdict,
                                "seed {seed}, endpoint {ep:?}, {d:?}, peer {peer:?}, \
                                 {protocol}/{port}\npolicies: {:#?}\ntables: {t:#?}",
                                compiler.policies()
                            );
                            assert_eq!(e.deciding.map(|r| r.id), e.verdict.rule);
                            assert_eq!(e.log.map(|r| r.id), e.verdict.log);
                            let v = e.verdict;
                            seen.probes += 1;
                            match (v.rule, v.allowed, v.audit) {
                                (_, true, true) => seen.audited += 1,
                                (Some(_), true, false) => seen.allowed_by_rule += 1,
                                (Some(_), false, _) => seen.denied_by_rule += 1,
                                (None, false, _) => seen.default_denied += 1,
                                (None, true, false) => seen.open += 1,
                            }
                            seen.logged += usize::from(v.log.is_some());
                            let cidr_decided = lookup.by_cidr.is_some_and(|c| {
                                c.decision.is_some_and(|x| Some(x.0) == v.rule) || c.allow == v.rule
                            });
                            seen.by_cidr_class += usize::from(v.rule.is_some() && cidr_decided);
                        }
                    }
                }
            }
        }
    }
    println!("{seen:?}");
    // The generator reaches every kind of outcome (else this test proves little).
    assert!(
        seen.allowed_by_rule > 0 && seen.denied_by_rule > 0,
        "{seen:?}"
    );
    assert!(
        seen.audited > 0 && seen.default_denied > 0 && seen.open > 0,
        "{seen:?}"
    );
    assert!(seen.logged > 0 && seen.by_cidr_class > 0, "{seen:?}");
}

#[test]
fn ten_thousand_rules_compile() {
    let (view, local) = synthetic::scale_view(20, 50);
    let policies = synthetic::scale_policies(10_000, 50);
    let compiler = Compiler::new(policies, Mode::Enforce);
    assert_eq!(compiler.rules().len(), 10_000);
    let tables = compiler.compile(&view, &local);
    println!(
        "10000 rules: {} identity keys, {} CIDR classes, {} map entries",
        tables.ingress.identities.len() + tables.egress.identities.len(),
        tables.ingress.cidrs.len() + tables.egress.cidrs.len(),
        tables.entry_count()
    );
    assert!(tables.ingress.isolated && tables.egress.isolated);
    // Every CIDR rule's /24 is a class, each except too.
    assert!(tables.ingress.cidrs.len() + tables.egress.cidrs.len() >= 5_000);
    // A probe into one of the allowed /24s on its port agrees with the evaluator.
    let rule = compiler
        .rules()
        .iter()
        .find(|r| r.action == Action::Allow && r.direction == Direction::Ingress && r.index == 1)
        .expect("an allow rule");
    let policy = compiler
        .policies()
        .iter()
        .find(|p| p.key == rule.policy)
        .unwrap();
    let r = &policy.ingress.as_ref().unwrap()[1];
    let (RulePeer::Cidr { net, .. }, Ports::Range(port, _)) = (&r.peers[0], &r.ports[0].ports)
    else {
        panic!("rule 1 of a policy is a CIDR rule: {r:?}");
    };
    let addr = match net {
        ipnet::IpNet::V4(n) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(n.network()) + 1)),
        ipnet::IpNet::V6(_) => unreachable!(),
    };
    let peer = Peer {
        addr,
        who: PeerEndpoint::Reserved(IDENTITY_WORLD),
    };
    let protocol = r.ports[0].protocol.0;
    let e = evaluate(
        &compiler,
        &view,
        &local,
        Direction::Ingress,
        &peer,
        protocol,
        *port,
    );
    let v = tables
        .ingress
        .lookup(IDENTITY_WORLD, addr, protocol, *port)
        .verdict();
    assert_eq!(v, e.verdict);
    assert!(v.allowed && v.rule.is_some(), "{v:?}");
}
