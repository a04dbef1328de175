//! Deterministic synthetic clusters and policy sets for the compiler's tests and
//! its benchmark example: a small xorshift generator (no crates), and the large
//! policy set the scale figures are taken with (a mix of CIDR and selector rules,
//! as the datapath benchmarks use).

#![allow(dead_code)] // each user takes what it needs

use strait_policy::ir::{
    Action, EndpointSelector, NamespaceScope, Peer, Policy, PolicyKey, PortMatch, Ports, Protocol,
    Rule, Tier,
};
use strait_policy::selector::{LabelSelector, Labels};
use strait_policy::tables::FIRST_ALLOCATED_IDENTITY;
use strait_policy::view::{ClusterView, IdentityLabels, LocalEndpoint};

/// xorshift64: deterministic, good enough to spread test cases.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with `percent` % probability.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn match_labels(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: labels(pairs),
        match_expressions: Vec::new(),
    }
}

/// A cluster of `namespaces` namespaces (`ns-N`, labelled `team=tN%4`) with
/// `apps` identities each (`app=app-M`), and the local endpoint (`ns-0`, `app-0`).
pub fn scale_view(namespaces: usize, apps: usize) -> (ClusterView, LocalEndpoint) {
    let mut view = ClusterView::default();
    let mut id = FIRST_ALLOCATED_IDENTITY;
    for n in 0..namespaces {
        let ns = format!("ns-{n}");
        view.namespaces
            .insert(ns.clone(), labels(&[("team", &format!("t{}", n % 4))]));
        for a in 0..apps {
            view.identities.insert(
                id,
                IdentityLabels {
                    namespace: ns.clone(),
                    labels: labels(&[("app", &format!("app-{a}"))]),
                },
            );
            id += 1;
        }
    }
    let local = LocalEndpoint {
        identity: FIRST_ALLOCATED_IDENTITY,
        namespace: "ns-0".into(),
        labels: labels(&[("app", "app-0")]),
        named_ports: Vec::new(),
    };
    (view, local)
}

/// `rules` rules (in all) selecting the local endpoint of [`scale_view`], ten per
/// policy, policies alternately for ingress and egress: half the rules allow from
/// an app in one team's namespaces, half from a distinct /24 (every fifth with an
/// except), each on a port or a port range; every tenth policy is a cluster-tier
/// one whose rules deny instead.
pub fn scale_policies(rules: usize, apps: usize) -> Vec<Policy> {
    let mut rng = Rng::new(rules as u64 + 7);
    let mut policies = Vec::new();
    let mut made = 0;
    let mut p = 0;
    while made < rules {
        let count = (rules - made).min(10);
        let cluster = p % 10 == 9;
        let mut list = Vec::with_capacity(count);
        for n in made..made + count {
            let port = 1000 + (n % 2000) as u16;
            let ports = if n % 3 == 0 {
                vec![PortMatch {
                    protocol: Protocol::TCP,
                    ports: Ports::Range(port, port + 10),
                }]
            } else {
                vec![PortMatch {
                    protocol: *rng.pick(&[Protocol::TCP, Protocol::UDP]),
                    ports: Ports::Range(port, port),
                }]
            };
            let peer = if n % 2 == 0 {
                Peer::Endpoints(EndpointSelector {
                    namespaces: NamespaceScope::Selector(match_labels(&[(
                        "team",
                        &format!("t{}", rng.below(4)),
                    )])),
                    pods: match_labels(&[("app", &format!("app-{}", rng.below(apps.max(1))))]),
                })
            } else {
                // The k-th CIDR rule's own /24 in 10.64.0.0/10.
                let k = n / 2;
                let (x, y) = (64 + (k / 256) % 64, k % 256);
                let except = if n % 5 == 1 {
                    vec![format!("10.{x}.{y}.16/28").parse().expect("a prefix")]
                } else {
                    Vec::new()
                };
                Peer::Cidr {
                    net: format!("10.{x}.{y}.0/24").parse().expect("a prefix"),
                    except,
                }
            };
            list.push(Rule {
                action: if cluster { Action::Deny } else { Action::Allow },
                peers: vec![peer],
                ports,
            });
        }
        made += count;
        let (ingress, egress) = if p % 2 == 0 {
            (Some(list), None)
        } else {
            (None, Some(list))
        };
        policies.push(Policy {
            key: if cluster {
                PolicyKey::Cluster {
                    name: format!("deny-{p}"),
                }
            } else {
                PolicyKey::K8s {
                    namespace: "ns-0".into(),
                    name: format!("allow-{p}"),
                }
            },
            tier: if cluster {
                Tier::Cluster { order: p as f64 }
            } else {
                Tier::Namespaced
            },
            audit: false,
            subject: EndpointSelector {
                namespaces: if cluster {
                    NamespaceScope::All
                } else {
                    NamespaceScope::Only("ns-0".into())
                },
                pods: if p % 4 < 2 {
                    LabelSelector::everything()
                } else {
                    match_labels(&[("app", "app-0")])
                },
            },
            ingress,
            egress,
        });
        p += 1;
    }
    policies
}
