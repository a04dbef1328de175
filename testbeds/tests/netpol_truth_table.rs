//! Network policy as a truth table (issue 12), in the style of the Kubernetes e2e
//! netpol suite and cyclonus: namespaces x, y, z with pods a, b, c each, spread over
//! the hosts, every ordered pair probed on TCP 80/81 and UDP 80/81 in IPv4 and IPv6,
//! the expected table of each case written by hand from the Kubernetes semantics
//! (and, for `ClusterPolicy`, from docs/policy.md's tiers), never computed by strait.
//!
//! One cluster per test function, every case on it in turn; a failing case prints
//! its expected table beside the observed one and the suite goes on, failing at the
//! end with the list. `STRAIT_NETPOL_CASES=name,name` runs some cases only.
//!
//! strait's `ClusterPolicy` (docs/policy.md): `spec.order`, `spec.audit`, the subject
//! as `spec.namespaceSelector` / `spec.podSelector` (absent: every one), and ordered
//! `ingress`/`egress` rules `{action: Allow|Deny|Pass|Log, from|to, protocol, ports |
//! icmp}`. A cluster policy that selects a pod for a direction isolates it there, so
//! the cases end their rules with `Allow` or `Pass` to a namespaced policy when they
//! mean "everything else as before".
//!
//! Root and etcd needed. One cluster at a time (a lock).

use std::sync::{Mutex, MutexGuard};

use strait_testbeds::cluster::{ClusterOpts, Fabric};
use strait_testbeds::netpol::{
    self, Case, CaseCtx, Family, On, PeerSel, PodId, Port, Proto, Reachability, SERVED, TCP80,
    TCP81, UDP80, UDP81, cluster_policy, network_policy,
};

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn privileged(test: &str) -> bool {
    strait_testbeds::require_root(test) && strait_testbeds::etcd::require_etcd(test)
}

/// Every case on one cluster of `hosts` hosts on `fabric` (dual stack, fast path as
/// the agent defaults unless `agent_flags` say otherwise).
fn suite(test: &str, hosts: usize, fabric: Fabric, agent_flags: &[&str]) {
    let _serial = serial();
    if !privileged(test) {
        return;
    }
    let mut opts = ClusterOpts::new(hosts, fabric);
    opts.agent_extra = agent_flags.iter().map(|f| f.to_string()).collect();
    netpol::run_suite(test, opts, &[CASES, CLUSTER_CASES].concat());
}

/// The NetworkPolicy cases with nothing but the Kubernetes API server: namespaces,
/// pods (their labels and named ports) and policies are objects applied with
/// `kubectl`; CNI ADD names the pod, as containerd does; the agents run with the
/// project's RBAC role alone. Then labels of pods and namespaces changed with
/// `kubectl label` (how long each took to be enforced is printed).
#[test]
fn three_hosts_vxlan_kubernetes() {
    let test = "three_hosts_vxlan_kubernetes";
    let _serial = serial();
    if !privileged(test) || !strait_testbeds::kube::require_kube(test) {
        return;
    }
    let mut opts = ClusterOpts::new(3, Fabric::Vxlan);
    opts.kubernetes = Some(Default::default());
    netpol::run_suite(test, opts, &[CASES, KUBERNETES_CASES].concat());
}

#[test]
fn one_host() {
    suite("one_host", 1, Fabric::None, &[]);
}

#[test]
fn three_hosts_vxlan() {
    suite("three_hosts_vxlan", 3, Fabric::Vxlan, &[]);
}

#[test]
fn three_hosts_host_gw() {
    suite("three_hosts_host_gw", 3, Fabric::HostGw, &[]);
}

#[test]
fn three_hosts_bgp() {
    suite("three_hosts_bgp", 3, Fabric::Bgp, &[]);
}

#[test]
fn three_hosts_vxlan_fast_path_off() {
    suite(
        "three_hosts_vxlan_fast_path_off",
        3,
        Fabric::Vxlan,
        &["--fast-path", "off"],
    );
}

/// No policy at all: every pod reaches every pod on every served port and by ping,
/// in both families, across three hosts; and the prober does see a blocked port
/// (nothing serves TCP or UDP 82), so an all-reachable table means something.
#[test]
fn baseline_everything_reachable() {
    let test = "baseline_everything_reachable";
    let _serial = serial();
    if !privileged(test) {
        return;
    }
    let (cluster, model) = netpol::start_bed(ClusterOpts::new(3, Fabric::Vxlan));
    assert_eq!(
        model.families(),
        [Family::V4, Family::V6],
        "the test bed is dual stack: every pod should have both families\n{}",
        cluster.describe()
    );
    let mut ports = SERVED.to_vec();
    ports.push(Port::Icmp);
    let took = netpol::expect_within(
        &netpol::Prober::default(),
        &model,
        &model.reach(&ports, true),
        netpol::CONVERGE,
    )
    .unwrap_or_else(|e| panic!("{test}: {e}\n{}", cluster.describe()));
    println!("{test}: all reachable in {took:.1?}");

    let unserved = model.reach(&[Port::Tcp(82), Port::Udp(82)], false);
    for &family in model.families() {
        let observed = netpol::Prober::default().observe(&model, family, &unserved);
        let wrong = unserved.mismatches(&observed, family);
        assert!(
            wrong.is_empty(),
            "{test}: the prober sees unserved ports as reachable:\n{}",
            unserved.render_beside(&observed, family)
        );
    }
}

/// The prober and the table check against a stand-in for policy: an ip(6)tables
/// drop inside pod x/a of TCP 80 from y/b. The expectation that says so is met;
/// the all-reachable one fails naming exactly that cell in both families, with the
/// tables beside each other. And a pod that answers later than a poll waits (but
/// within the full timeouts) is reachable: the table that says so is met, and one
/// that calls a cell of it blocked fails, so the short waits of the polls never let
/// a wrongly allowed cell pass as blocked.
#[test]
fn prober_sees_a_firewall_drop() {
    let test = "prober_sees_a_firewall_drop";
    let _serial = serial();
    if !privileged(test) {
        return;
    }
    let (cluster, model) = netpol::start_bed(ClusterOpts::new(1, Fabric::None));
    let prober = netpol::Prober::default();
    netpol::expect_baseline(&model, netpol::CONVERGE)
        .unwrap_or_else(|e| panic!("{test}: {e}\n{}", cluster.describe()));
    let (xa, yb) = (model.pod("x", "a"), model.pod("y", "b"));
    for family in model.families() {
        let tool = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let src = yb.ip(*family).expect("y/b has the family").to_string();
        xa.container.ns.exec_ok(&[
            tool, "-A", "INPUT", "-s", &src, "-p", "tcp", "--dport", "80", "-j", "DROP",
        ]);
    }
    let mut r = model.reach(&SERVED, true);
    r.expect_peer(PeerSel::pod("y", "b"), PeerSel::pod("x", "a"), TCP80, false);
    netpol::expect_within(&prober, &model, &r, netpol::ENFORCE_TIMEOUT)
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    let err = netpol::expect_within(
        &prober,
        &model,
        &model.reach(&SERVED, true),
        std::time::Duration::ZERO,
    )
    .expect_err("the drop is seen");
    println!("{test}: the all-reachable expectation fails as it should:\n{err}");
    assert!(err.starts_with("2 cell(s) differ"), "{err}");
    for family in ["IPv4", "IPv6"] {
        assert!(
            err.contains(&format!(
                "y/b -> x/a TCP/80 {family}: expected reachable, observed blocked"
            )),
            "{err}"
        );
        assert!(err.contains(&format!("TCP/80 over {family}")), "{err}");
    }

    // x/a answers y/b later than a poll waits, within the full timeouts.
    xa.answer_late(yb, netpol::POLL_TIMEOUT * 2);
    netpol::expect_within(&prober, &model, &r, std::time::Duration::ZERO)
        .unwrap_or_else(|e| panic!("{test}: a late answer is an answer: {e}"));
    // Every poll sees y/b -> x/a blocked as this table says; the full probes do not.
    let mut wrong = r.clone();
    wrong.expect_peer(
        PeerSel::pod("y", "b"),
        PeerSel::pod("x", "a"),
        On::All,
        false,
    );
    let err = netpol::expect_within(&prober, &model, &wrong, std::time::Duration::from_secs(1))
        .expect_err("the late answers are seen");
    xa.answer_late(yb, std::time::Duration::ZERO);
    println!("{test}: late answers are not taken for a drop:\n{err}");
    assert!(err.starts_with("6 cell(s) differ"), "{err}");
    for family in ["IPv4", "IPv6"] {
        for port in ["TCP/81", "UDP/80", "UDP/81"] {
            assert!(
                err.contains(&format!(
                    "y/b -> x/a {port} {family}: expected blocked, observed reachable"
                )),
                "{err}"
            );
        }
    }
}

/// The harness itself, without privilege: the builder sets exactly the cells it
/// names, mismatches are reported per cell, tables are rendered only where they
/// differ, documents land under `spec:`.
#[test]
fn harness_builds_and_renders_tables() {
    let pods: Vec<PodId> = netpol::NAMESPACES
        .iter()
        .flat_map(|ns| netpol::PODS.iter().map(move |p| PodId::new(ns, p)))
        .collect();
    let i = |ns: &str, p: &str| pods.iter().position(|x| *x == PodId::new(ns, p)).unwrap();
    let mut r = Reachability::new(&pods, &SERVED, true);
    r.expect_all_ingress(PeerSel::ns("x"), false)
        .expect_peer(PeerSel::ns("y"), PeerSel::pod("x", "a"), TCP80, true)
        .allow_loopback();
    assert!(!r.get(0, i("z", "a"), i("x", "b")));
    assert!(r.get(0, i("y", "c"), i("x", "a")));
    assert!(!r.get(1, i("y", "c"), i("x", "a")), "TCP/81 untouched");
    assert!(r.get(2, i("x", "b"), i("x", "b")), "loopback");
    assert!(r.get(3, i("x", "a"), i("y", "b")), "egress of x untouched");
    let mut by_proto = Reachability::new(&pods, &SERVED, true);
    by_proto.expect_peer(PeerSel::named("a"), PeerSel::any(), Proto::Udp, false);
    assert!(by_proto.get(0, i("y", "a"), i("z", "b")));
    assert!(!by_proto.get(2, i("y", "a"), i("z", "b")));
    assert!(by_proto.get(2, i("y", "b"), i("z", "b")));

    let mut o = r.clone();
    o.set(0, i("y", "c"), i("x", "a"), false);
    let m = r.mismatches(&o, Family::V4);
    assert_eq!(m.len(), 1);
    assert_eq!(
        m[0].to_string(),
        "y/c -> x/a TCP/80 IPv4: expected reachable, observed blocked"
    );
    let text = r.render_beside(&o, Family::V4);
    assert!(text.starts_with("TCP/80 over IPv4"), "{text}");
    assert!(text.contains("X*"), "{text}");
    assert!(
        !text.contains("TCP/81"),
        "only tables with a mismatch: {text}"
    );

    let d = network_policy(
        "x",
        "p",
        "
        podSelector: {}
        ingress:
          - from: []
        ",
    );
    assert_eq!(d.key.as_deref(), Some("x/p"));
    assert!(
        d.yaml
            .ends_with("spec:\n  podSelector: {}\n  ingress:\n    - from: []\n"),
        "{}",
        d.yaml
    );
    assert_eq!(
        cluster_policy("c", "order: 1").key.as_deref(),
        Some("cluster/c")
    );
}

// ---------------------------------------------------------------------------------
// The cases. Each applies its documents, then states the whole table it expects.

/// Every case, named after its function.
macro_rules! cases {
    ($($f:ident),* $(,)?) => {
        &[$(Case { name: stringify!($f), run: $f }),*]
    };
}

/// The cases of Kubernetes' NetworkPolicy: they run through `netctl` and through the
/// API server alike.
const CASES: &[Case] = cases![
    deny_all_ingress,
    deny_all_egress,
    deny_all_ingress_and_egress,
    allow_all_ingress_with_empty_rule,
    allow_from_same_namespace,
    allow_from_namespace_by_label,
    namespace_selector_in,
    namespace_selector_not_in,
    namespace_selector_exists,
    namespace_selector_exists_missing_key,
    pod_selector_same_namespace,
    pod_and_namespace_selector,
    pod_or_namespace_selector,
    allow_tcp_80_only,
    allow_udp_81_only,
    named_port_tcp,
    named_port_udp,
    end_port_range,
    protocol_mismatch,
    ip_block_one_pod,
    ip_block_except,
    egress_to_one_cidr,
    egress_to_namespace,
    deny_egress_but_udp_81,
    ingress_and_egress_policies_combine,
    multiple_policies_union,
    target_by_match_expressions,
    allow_from_all_namespaces,
    allow_pod_a_from_all_namespaces,
    policy_in_namespace_without_pods,
    policy_update_while_traffic_flows,
    policy_delete_restores,
];

/// The cases of strait's own `ClusterPolicy`, which only `netctl` applies (it is no
/// kind of the API server's).
const CLUSTER_CASES: &[Case] = cases![
    cluster_deny_beats_namespaced_allow,
    cluster_allow_overrides_namespaced_deny,
    cluster_pass_hands_to_namespaced,
    cluster_audit_deny_passes,
    cluster_icmp_echo_only,
    cluster_deny_egress_one_port,
];

/// Cases only the API server can drive: labels changed on live objects.
const KUBERNETES_CASES: &[Case] = cases![pod_label_change, namespace_label_change];

type Outcome = Result<(), String>;

/// `[{ipBlock: {cidr: "…"}}, …]`: one peer per CIDR.
fn ip_blocks(cidrs: &[String]) -> String {
    let peers: Vec<String> = cidrs
        .iter()
        .map(|c| format!("{{ipBlock: {{cidr: \"{c}\"}}}}"))
        .collect();
    format!("[{}]", peers.join(", "))
}

fn deny_all_ingress(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "deny-all-ingress",
        "
        podSelector: {}
        policyTypes: [Ingress]
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::ns("x"), false);
    t.expect(&r).map(drop)
}

fn deny_all_egress(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "deny-all-egress",
        "
        podSelector: {}
        policyTypes: [Egress]
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_all_egress(PeerSel::ns("x"), false);
    t.expect(&r).map(drop)
}

fn deny_all_ingress_and_egress(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "deny-all",
        "
        podSelector: {}
        policyTypes: [Ingress, Egress]
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::ns("x"), false)
        .expect_all_egress(PeerSel::ns("x"), false);
    t.expect(&r).map(drop)
}

/// A deny-all and an allow-all (`ingress: [{}]`) on the same pods: allowed.
fn allow_all_ingress_with_empty_rule(t: &mut CaseCtx) -> Outcome {
    t.apply(&[
        network_policy(
            "x",
            "deny-all-ingress",
            "
            podSelector: {}
            policyTypes: [Ingress]
            ",
        ),
        network_policy(
            "x",
            "allow-all-ingress",
            "
            podSelector: {}
            ingress: [{}]
            ",
        ),
    ])?;
    t.expect(&t.reach(true)).map(drop)
}

fn allow_from_same_namespace(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "allow-same-namespace",
        "
        podSelector: {}
        ingress:
          - from:
              - podSelector: {}
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::ns("x"), false).expect_peer(
        PeerSel::ns("x"),
        PeerSel::ns("x"),
        On::All,
        true,
    );
    t.expect(&r).map(drop)
}

fn allow_from_namespace_by_label(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "allow-from-y",
        "
        podSelector: {}
        ingress:
          - from:
              - namespaceSelector:
                  matchLabels: {ns: y}
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::ns("x"), false).expect_peer(
        PeerSel::ns("y"),
        PeerSel::ns("x"),
        On::All,
        true,
    );
    t.expect(&r).map(drop)
}

fn namespace_selector_in(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "allow-from-y-z",
        "
        podSelector: {}
        ingress:
          - from:
              - namespaceSelector:
                  matchExpressions:
                    - {key: ns, operator: In, values: [y, z]}
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::ns("x"), false)
        .expect_peer(PeerSel::ns("y"), PeerSel::ns("x"), On::All, true)
        .expect_peer(PeerSel::ns("z"), PeerSel::ns("x"), On::All, true);
    t.expect(&r).map(drop)
}

fn namespace_selector_not_in(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "allow-from-not-y",
        "
        podSelector: {}
        ingress:
          - from:
              - namespaceSelector:
                  matchExpressions:
                    - {key: ns, operator: NotIn, values: [y]}
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::ns("x"), false)
        .expect_peer(PeerSel::ns("x"), PeerSel::ns("x"), On::All, true)
        .expect_peer(PeerSel::ns("z"), PeerSel::ns("x"), On::All, true);
    t.expect(&r).map(drop)
}

/// `Exists` on a key every namespace has, with a pod selector in the same peer.
fn namespace_selector_exists(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "allow-pods-a-of-labelled-namespaces",
        "
        podSelector: {}
        ingress:
          - from:
              - namespaceSelector:
                  matchExpressions:
                    - {key: ns, operator: Exists}
                podSelector:
                  matchLabels: {pod: a}
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::ns("x"), false).expect_peer(
        PeerSel::named("a"),
        PeerSel::ns("x"),
        On::All,
        true,
    );
    t.expect(&r).map(drop)
}

/// `Exists` on a key no namespace has selects none: x allows nothing in.
fn namespace_selector_exists_missing_key(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "allow-from-team-namespaces",
        "
        podSelector: {}
        ingress:
          - from:
              - namespaceSelector:
                  matchExpressions:
                    - {key: team, operator: Exists}
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::ns("x"), false);
    t.expect(&r).map(drop)
}

fn pod_selector_same_namespace(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "a-from-b",
        "
        podSelector:
          matchLabels: {pod: a}
        ingress:
          - from:
              - podSelector:
                  matchLabels: {pod: b}
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::pod("x", "a"), false)
        .expect_peer(
            PeerSel::pod("x", "b"),
            PeerSel::pod("x", "a"),
            On::All,
            true,
        );
    t.expect(&r).map(drop)
}

/// Both selectors in one peer: pods b of namespace y only.
fn pod_and_namespace_selector(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "a-from-y-b",
        "
        podSelector:
          matchLabels: {pod: a}
        ingress:
          - from:
              - namespaceSelector:
                  matchLabels: {ns: y}
                podSelector:
                  matchLabels: {pod: b}
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::pod("x", "a"), false)
        .expect_peer(
            PeerSel::pod("y", "b"),
            PeerSel::pod("x", "a"),
            On::All,
            true,
        );
    t.expect(&r).map(drop)
}

/// Two peers: namespace y, or pods b of x itself.
fn pod_or_namespace_selector(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "a-from-y-or-b",
        "
        podSelector:
          matchLabels: {pod: a}
        ingress:
          - from:
              - namespaceSelector:
                  matchLabels: {ns: y}
              - podSelector:
                  matchLabels: {pod: b}
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::pod("x", "a"), false)
        .expect_peer(PeerSel::ns("y"), PeerSel::pod("x", "a"), On::All, true)
        .expect_peer(
            PeerSel::pod("x", "b"),
            PeerSel::pod("x", "a"),
            On::All,
            true,
        );
    t.expect(&r).map(drop)
}

/// Only the port named in the rule: `ingress` into x/a on `port` from everyone.
fn only_port(t: &mut CaseCtx, name: &str, ports_yaml: &str, open: &[Port]) -> Outcome {
    t.apply(&[network_policy(
        "x",
        name,
        &format!(
            "
            podSelector:
              matchLabels: {{pod: a}}
            ingress:
              - ports: {ports_yaml}
            "
        ),
    )])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::pod("x", "a"), false);
    for &p in open {
        r.expect_peer(PeerSel::any(), PeerSel::pod("x", "a"), p, true);
    }
    t.expect(&r).map(drop)
}

fn allow_tcp_80_only(t: &mut CaseCtx) -> Outcome {
    only_port(t, "a-tcp-80", "[{protocol: TCP, port: 80}]", &[TCP80])
}

fn allow_udp_81_only(t: &mut CaseCtx) -> Outcome {
    only_port(t, "a-udp-81", "[{protocol: UDP, port: 81}]", &[UDP81])
}

/// The pod declares `serve-80-tcp` (protocol TCP is the default).
fn named_port_tcp(t: &mut CaseCtx) -> Outcome {
    only_port(t, "a-serve-80-tcp", "[{port: serve-80-tcp}]", &[TCP80])
}

fn named_port_udp(t: &mut CaseCtx) -> Outcome {
    only_port(
        t,
        "a-serve-81-udp",
        "[{protocol: UDP, port: serve-81-udp}]",
        &[UDP81],
    )
}

fn end_port_range(t: &mut CaseCtx) -> Outcome {
    only_port(
        t,
        "a-tcp-80-81",
        "[{protocol: TCP, port: 80, endPort: 81}]",
        &[TCP80, TCP81],
    )
}

/// A UDP rule for port 80 does not open TCP 80.
fn protocol_mismatch(t: &mut CaseCtx) -> Outcome {
    only_port(t, "a-udp-80", "[{protocol: UDP, port: 80}]", &[UDP80])
}

/// x/a from y/b's addresses (/32 and /128) only.
fn ip_block_one_pod(t: &mut CaseCtx) -> Outcome {
    let from = ip_blocks(&t.host_cidrs("y", "b"));
    t.apply(&[network_policy(
        "x",
        "a-from-y-b-address",
        &format!(
            "
            podSelector:
              matchLabels: {{pod: a}}
            ingress:
              - from: {from}
            "
        ),
    )])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::pod("x", "a"), false)
        .expect_peer(
            PeerSel::pod("y", "b"),
            PeerSel::pod("x", "a"),
            On::All,
            true,
        );
    t.expect(&r).map(drop)
}

/// x/a from everywhere except y/b's addresses.
fn ip_block_except(t: &mut CaseCtx) -> Outcome {
    let carve = t.host_cidrs("y", "b");
    let peers: Vec<String> = t
        .all_cidrs()
        .iter()
        .zip(&carve)
        .map(|(all, one)| format!("{{ipBlock: {{cidr: \"{all}\", except: [\"{one}\"]}}}}"))
        .collect();
    t.apply(&[network_policy(
        "x",
        "a-from-all-but-y-b",
        &format!(
            "
            podSelector:
              matchLabels: {{pod: a}}
            ingress:
              - from: [{}]
            ",
            peers.join(", ")
        ),
    )])?;
    let mut r = t.reach(true);
    r.expect_peer(
        PeerSel::pod("y", "b"),
        PeerSel::pod("x", "a"),
        On::All,
        false,
    );
    t.expect(&r).map(drop)
}

/// x/a may only send to y/b's addresses.
fn egress_to_one_cidr(t: &mut CaseCtx) -> Outcome {
    let to = ip_blocks(&t.host_cidrs("y", "b"));
    t.apply(&[network_policy(
        "x",
        "a-to-y-b-address",
        &format!(
            "
            podSelector:
              matchLabels: {{pod: a}}
            policyTypes: [Egress]
            egress:
              - to: {to}
            "
        ),
    )])?;
    let mut r = t.reach(true);
    r.expect_all_egress(PeerSel::pod("x", "a"), false)
        .expect_peer(
            PeerSel::pod("x", "a"),
            PeerSel::pod("y", "b"),
            On::All,
            true,
        );
    t.expect(&r).map(drop)
}

fn egress_to_namespace(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "to-y",
        "
        podSelector: {}
        policyTypes: [Egress]
        egress:
          - to:
              - namespaceSelector:
                  matchLabels: {ns: y}
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_all_egress(PeerSel::ns("x"), false).expect_peer(
        PeerSel::ns("x"),
        PeerSel::ns("y"),
        On::All,
        true,
    );
    t.expect(&r).map(drop)
}

/// Deny all egress but one UDP port, as a namespace that may only ask DNS.
fn deny_egress_but_udp_81(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "egress-udp-81-only",
        "
        podSelector: {}
        policyTypes: [Egress]
        egress:
          - ports:
              - {protocol: UDP, port: 81}
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_all_egress(PeerSel::ns("x"), false).expect_peer(
        PeerSel::ns("x"),
        PeerSel::any(),
        UDP81,
        true,
    );
    t.expect(&r).map(drop)
}

/// x/a may send to y only; y/b takes from z only: x/a reaches y/a and y/c, not y/b.
fn ingress_and_egress_policies_combine(t: &mut CaseCtx) -> Outcome {
    t.apply(&[
        network_policy(
            "x",
            "a-to-y",
            "
            podSelector:
              matchLabels: {pod: a}
            policyTypes: [Egress]
            egress:
              - to:
                  - namespaceSelector:
                      matchLabels: {ns: y}
            ",
        ),
        network_policy(
            "y",
            "b-from-z",
            "
            podSelector:
              matchLabels: {pod: b}
            ingress:
              - from:
                  - namespaceSelector:
                      matchLabels: {ns: z}
            ",
        ),
    ])?;
    let mut r = t.reach(true);
    r.expect_all_egress(PeerSel::pod("x", "a"), false)
        .expect_peer(PeerSel::pod("x", "a"), PeerSel::ns("y"), On::All, true)
        .expect_all_ingress(PeerSel::pod("y", "b"), false)
        .expect_peer(PeerSel::ns("z"), PeerSel::pod("y", "b"), On::All, true);
    t.expect(&r).map(drop)
}

/// Two policies on x/a, each allowing a different source: the union.
fn multiple_policies_union(t: &mut CaseCtx) -> Outcome {
    t.apply(&[
        network_policy(
            "x",
            "a-from-y",
            "
            podSelector:
              matchLabels: {pod: a}
            ingress:
              - from:
                  - namespaceSelector:
                      matchLabels: {ns: y}
            ",
        ),
        network_policy(
            "x",
            "a-from-z-c",
            "
            podSelector:
              matchLabels: {pod: a}
            ingress:
              - from:
                  - namespaceSelector:
                      matchLabels: {ns: z}
                    podSelector:
                      matchLabels: {pod: c}
            ",
        ),
    ])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::pod("x", "a"), false)
        .expect_peer(PeerSel::ns("y"), PeerSel::pod("x", "a"), On::All, true)
        .expect_peer(
            PeerSel::pod("z", "c"),
            PeerSel::pod("x", "a"),
            On::All,
            true,
        );
    t.expect(&r).map(drop)
}

fn target_by_match_expressions(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "deny-a-b",
        "
        podSelector:
          matchExpressions:
            - {key: pod, operator: In, values: [a, b]}
        policyTypes: [Ingress]
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::pod("x", "a"), false)
        .expect_all_ingress(PeerSel::pod("x", "b"), false);
    t.expect(&r).map(drop)
}

/// `namespaceSelector: {}`: from every namespace, so isolated x still takes
/// everything from pods.
fn allow_from_all_namespaces(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "from-all-namespaces",
        "
        podSelector: {}
        ingress:
          - from:
              - namespaceSelector: {}
        ",
    )])?;
    t.expect(&t.reach(true)).map(drop)
}

fn allow_pod_a_from_all_namespaces(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "from-pods-a-everywhere",
        "
        podSelector: {}
        ingress:
          - from:
              - namespaceSelector: {}
                podSelector:
                  matchLabels: {pod: a}
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::ns("x"), false).expect_peer(
        PeerSel::named("a"),
        PeerSel::ns("x"),
        On::All,
        true,
    );
    t.expect(&r).map(drop)
}

/// A policy of namespace w, which has no pod and no Namespace document: it applies,
/// changes nothing, and holds for w's first pod when it appears.
fn policy_in_namespace_without_pods(t: &mut CaseCtx) -> Outcome {
    // The namespace first: the API server refuses a policy (and a pod) in a
    // namespace that does not exist.
    t.apply(&[
        netpol::namespace("w", &[("ns", "w")]),
        network_policy(
            "w",
            "from-x",
            "
        podSelector: {}
        ingress:
          - from:
              - namespaceSelector:
                  matchLabels: {ns: x}
        ",
        ),
    ])?;
    t.expect(&t.reach(true))?;
    let last = t.cluster.hosts().len() - 1;
    t.add_pod("w", "a", last)?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::pod("w", "a"), false)
        .expect_peer(PeerSel::ns("x"), PeerSel::pod("w", "a"), On::All, true);
    t.expect(&r).map(drop)
}

/// Apply, probe, change the same policy, probe: the table follows.
fn policy_update_while_traffic_flows(t: &mut CaseCtx) -> Outcome {
    let from = |ns: &str| {
        network_policy(
            "x",
            "allow-from-one-namespace",
            &format!(
                "
                podSelector: {{}}
                ingress:
                  - from:
                      - namespaceSelector:
                          matchLabels: {{ns: {ns}}}
                "
            ),
        )
    };
    t.apply(&[from("y")])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::ns("x"), false).expect_peer(
        PeerSel::ns("y"),
        PeerSel::ns("x"),
        On::All,
        true,
    );
    t.expect(&r)
        .map_err(|e| format!("before the update: {e}"))?;
    t.apply(&[from("z")])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::ns("x"), false).expect_peer(
        PeerSel::ns("z"),
        PeerSel::ns("x"),
        On::All,
        true,
    );
    t.expect(&r).map_err(|e| format!("after the update: {e}"))?;
    Ok(())
}

fn policy_delete_restores(t: &mut CaseCtx) -> Outcome {
    let deny = network_policy(
        "x",
        "deny-all-ingress",
        "
        podSelector: {}
        policyTypes: [Ingress]
        ",
    );
    t.apply(std::slice::from_ref(&deny))?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::ns("x"), false);
    t.expect(&r)
        .map_err(|e| format!("before the delete: {e}"))?;
    t.delete(&deny)?;
    t.expect(&t.reach(true))
        .map_err(|e| format!("after the delete: {e}"))?;
    Ok(())
}

// Cluster-wide policies: evaluated before the namespaced ones, by order.

/// A cluster deny (order 10) beats a namespaced allow-all; the rest passes on to it.
fn cluster_deny_beats_namespaced_allow(t: &mut CaseCtx) -> Outcome {
    t.apply(&[
        cluster_policy(
            "deny-y-to-x",
            "
            order: 10
            namespaceSelector:
              matchLabels: {ns: x}
            ingress:
              - action: Deny
                from:
                  - namespaceSelector:
                      matchLabels: {ns: y}
              - action: Pass
            ",
        ),
        network_policy(
            "x",
            "allow-all-ingress",
            "
            podSelector: {}
            ingress: [{}]
            ",
        ),
    ])?;
    let mut r = t.reach(true);
    r.expect_peer(PeerSel::ns("y"), PeerSel::ns("x"), On::All, false);
    t.expect(&r).map(drop)
}

/// A cluster allow (order 1) lets z in although x denies all ingress.
fn cluster_allow_overrides_namespaced_deny(t: &mut CaseCtx) -> Outcome {
    t.apply(&[
        cluster_policy(
            "allow-z-to-x",
            "
            order: 1
            namespaceSelector:
              matchLabels: {ns: x}
            ingress:
              - action: Allow
                from:
                  - namespaceSelector:
                      matchLabels: {ns: z}
              - action: Pass
            ",
        ),
        network_policy(
            "x",
            "deny-all-ingress",
            "
            podSelector: {}
            policyTypes: [Ingress]
            ",
        ),
    ])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::ns("x"), false).expect_peer(
        PeerSel::ns("z"),
        PeerSel::ns("x"),
        On::All,
        true,
    );
    t.expect(&r).map(drop)
}

/// `pass` (order 5) for y and z skips the cluster deny at order 10; the namespaced
/// policy then allows y only. x itself meets the deny.
fn cluster_pass_hands_to_namespaced(t: &mut CaseCtx) -> Outcome {
    t.apply(&[
        cluster_policy(
            "pass-y-z-to-x",
            "
            order: 5
            namespaceSelector:
              matchLabels: {ns: x}
            ingress:
              - action: Pass
                from:
                  - namespaceSelector:
                      matchExpressions:
                        - {key: ns, operator: In, values: [y, z]}
            ",
        ),
        cluster_policy(
            "deny-all-to-x",
            "
            order: 10
            namespaceSelector:
              matchLabels: {ns: x}
            ingress:
              - action: Deny
            ",
        ),
        network_policy(
            "x",
            "allow-from-y",
            "
            podSelector: {}
            ingress:
              - from:
                  - namespaceSelector:
                      matchLabels: {ns: y}
            ",
        ),
    ])?;
    let mut r = t.reach(true);
    r.expect_all_ingress(PeerSel::ns("x"), false).expect_peer(
        PeerSel::ns("y"),
        PeerSel::ns("x"),
        On::All,
        true,
    );
    t.expect(&r).map(drop)
}

/// An audit-mode deny of everything into x lets it all pass, while an enforced
/// policy beside it (z to y denied) holds.
fn cluster_audit_deny_passes(t: &mut CaseCtx) -> Outcome {
    t.apply(&[
        cluster_policy(
            "audit-deny-to-x",
            "
            order: 10
            audit: true
            namespaceSelector:
              matchLabels: {ns: x}
            ingress:
              - action: Deny
            ",
        ),
        cluster_policy(
            "deny-z-to-y",
            "
            order: 20
            namespaceSelector:
              matchLabels: {ns: y}
            ingress:
              - action: Deny
                from:
                  - namespaceSelector:
                      matchLabels: {ns: z}
              - action: Allow
            ",
        ),
    ])?;
    let mut r = t.reach(true);
    r.expect_peer(PeerSel::ns("z"), PeerSel::ns("y"), On::All, false);
    t.expect(&r).map(drop)
}

/// Into x only echo requests (ICMP type 8, ICMPv6 type 128); their replies pass.
fn cluster_icmp_echo_only(t: &mut CaseCtx) -> Outcome {
    t.apply(&[cluster_policy(
        "echo-only-to-x",
        "
        order: 10
        namespaceSelector:
          matchLabels: {ns: x}
        ingress:
          - action: Allow
            protocol: ICMP
            icmp: {type: 8}
          - action: Allow
            protocol: ICMPv6
            icmp: {type: 128}
          - action: Deny
        ",
    )])?;
    let mut r = t.reach_with_icmp(true);
    r.expect_all_ingress(PeerSel::ns("x"), false).expect_peer(
        PeerSel::any(),
        PeerSel::ns("x"),
        Port::Icmp,
        true,
    );
    t.expect(&r).map(drop)
}

/// Egress of z to y on TCP 81 denied, everything else allowed.
fn cluster_deny_egress_one_port(t: &mut CaseCtx) -> Outcome {
    t.apply(&[cluster_policy(
        "deny-z-to-y-tcp-81",
        "
        order: 10
        namespaceSelector:
          matchLabels: {ns: z}
        egress:
          - action: Deny
            to:
              - namespaceSelector:
                  matchLabels: {ns: y}
            protocol: TCP
            ports: [{port: 81}]
          - action: Allow
        ",
    )])?;
    let mut r = t.reach(true);
    r.expect_peer(PeerSel::ns("z"), PeerSel::ns("y"), TCP81, false);
    t.expect(&r).map(drop)
}

/// x/a admits pods labelled `role: client` from any namespace. Nobody is, until
/// `kubectl label pod y/b role=client`; then y/b reaches it, and after the label is
/// removed it does not any more.
fn pod_label_change(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "clients-only",
        "
        podSelector: {matchLabels: {pod: a}}
        ingress:
          - from:
              - namespaceSelector: {}
                podSelector: {matchLabels: {role: client}}
        ",
    )])?;
    let mut isolated = t.reach(true);
    isolated.expect_all_ingress(PeerSel::pod("x", "a"), false);
    t.expect(&isolated)?;

    t.label("pod", Some("y"), "b", "role", "client")?;
    let mut admitted = isolated.clone();
    admitted.expect_peer(
        PeerSel::pod("y", "b"),
        PeerSel::pod("x", "a"),
        On::All,
        true,
    );
    let took = t.expect(&admitted)?;
    println!("pod_label_change: the new label enforced after {took:.2?}");

    t.unlabel("pod", Some("y"), "b", "role")?;
    let took = t.expect(&isolated)?;
    println!("pod_label_change: the removed label enforced after {took:.2?}");
    Ok(())
}

/// x admits namespaces labelled `team: blue`. None is, until `kubectl label
/// namespace z team=blue`; then z's pods reach x's, and after the label is removed
/// they do not any more.
fn namespace_label_change(t: &mut CaseCtx) -> Outcome {
    t.apply(&[network_policy(
        "x",
        "blue-team",
        "
        podSelector: {}
        ingress:
          - from:
              - namespaceSelector: {matchLabels: {team: blue}}
        ",
    )])?;
    let mut isolated = t.reach(true);
    isolated.expect_all_ingress(PeerSel::ns("x"), false);
    t.expect(&isolated)?;

    t.label("namespace", None, "z", "team", "blue")?;
    let mut admitted = isolated.clone();
    admitted.expect_peer(PeerSel::ns("z"), PeerSel::ns("x"), On::All, true);
    let took = t.expect(&admitted)?;
    println!("namespace_label_change: the new label enforced after {took:.2?}");

    t.unlabel("namespace", None, "z", "team")?;
    let took = t.expect(&isolated)?;
    println!("namespace_label_change: the removed label enforced after {took:.2?}");
    Ok(())
}
