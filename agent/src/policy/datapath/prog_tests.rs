//! The policy programs run by the kernel (`BPF_PROG_TEST_RUN`, `crate::bpf_test`):
//! the embedded object loaded as the agent loads it (maps pinned in a bpffs of the
//! test's own), tables installed with [`Dataplane::install`], frames built here run
//! through `strait_pol_from_ep` (the endpoint sends) and `strait_pol_to_ep` (it
//! receives), and for each the verdict, the counter that rose, the events and the
//! conntrack. Needs root: without it each test prints a SKIP line.

use std::net::IpAddr;
use std::time::Duration;

use strait_policy::ir::{Action, Direction, Protocol};
use strait_policy::tables::{Cell, EndpointTables, IDENTITY_HOST, Segment};

use super::*;
use crate::bpf_test::packet::{self, ETH_P_IP, ETH_P_IPV6};
use crate::bpf_test::{Device, Run, SkbContext, TestNet, privileged};

/// The endpoint under test: the host end of its veth.
const EP: Device = Device {
    name: "ep0",
    ifindex: 10,
    mtu: 1500,
};

/// TCX_NEXT (`TC_ACT_UNSPEC`): on to the next program; and `TC_ACT_SHOT`.
const PASS: u32 = u32::MAX;
const DROP: u32 = 2;

const ME_V4: &str = "10.1.0.7";
const ME_V6: &str = "fd00:1::7";
/// A peer with identity [`PEER_ID`] in the ipcache.
const PEER_V4: &str = "10.1.0.2";
const PEER_V6: &str = "fd00:1::2";
const PEER_ID: u32 = 300;
const ME_ID: u32 = 400;

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

macro_rules! privileged {
    ($name:expr) => {
        if !privileged($name) {
            return;
        }
    };
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Fixture {
    dp: PolicyDatapath,
    net: TestNet,
    // Last: unmounted after the maps are closed.
    _bpffs: PrivateBpffs,
}

impl Fixture {
    fn new() -> Self {
        Self::sized(MapSizes::default())
    }

    fn sized(sizes: MapSizes) -> Self {
        let bpffs = PrivateBpffs::new(&std::env::temp_dir(), "strait-pt").unwrap();
        let dp =
            PolicyDatapath::load_sized(bpffs.path(), sizes).expect("loading the policy object");
        let wanted = [
            (format!("{PEER_V4}/32"), PEER_ID),
            (format!("{PEER_V6}/128"), PEER_ID),
            (format!("{ME_V4}/32"), ME_ID),
            (format!("{ME_V6}/128"), ME_ID),
            ("192.168.0.1/32".to_string(), IDENTITY_HOST),
        ]
        .into_iter()
        .map(|(n, i)| (n.parse().unwrap(), i))
        .collect();
        dp.sync_ipcache(&wanted).unwrap();
        Self {
            dp,
            net: TestNet::new(&[EP]),
            _bpffs: bpffs,
        }
    }

    fn run(&self, program: &str, frame: &[u8]) -> Run {
        let mut s = self.dp.lock();
        let prog = classifier(&mut s.ebpf, program).unwrap();
        let fd = prog.fd().expect("the program is loaded");
        let ctx = SkbContext {
            ingress_ifindex: EP.ifindex,
            ifindex: EP.ifindex,
        };
        self.net.run(fd, frame, ctx)
    }

    /// The endpoint sends `frame` (its egress check).
    fn send(&self, frame: &[u8]) -> u32 {
        self.run(FROM_ENDPOINT, frame).verdict
    }

    /// The endpoint receives `frame` (its ingress check).
    fn receive(&self, frame: &[u8]) -> u32 {
        self.run(TO_ENDPOINT, frame).verdict
    }

    fn install(&self, t: &EndpointTables) {
        self.dp.install(EP.ifindex, ME_ID, t).unwrap();
    }

    fn count(&self, r: PolicyReason) -> u64 {
        self.dp.stats().unwrap()[&r]
    }

    /// The conntrack entry of the `protocol` flow from `src_port`, if any.
    fn flow(&self, protocol: u8, src_port: u16) -> Option<Flow> {
        let ct = self.dp.conntrack().unwrap();
        ct.into_iter()
            .find(|c| c.protocol == protocol && c.src_port == src_port)
    }

    /// Moves the expiry of the `protocol` flow from `src_port` into the past, through
    /// the map: what the programs' clock sees once its timeout is over.
    fn expire(&self, protocol: u8, src_port: u16) {
        let mut s = self.dp.lock();
        let (k, mut e) = s
            .maps
            .conntrack
            .iter()
            .map(Result::unwrap)
            .find(|(k, _)| k.proto == protocol && k.sport == src_port.to_be_bytes())
            .expect("the flow is tracked");
        e.expires = 1;
        s.maps.conntrack.insert(k, e, 0).unwrap();
    }
}

/// An IP packet of `proto` from `src` to `dst` carrying `l4`, in an Ethernet frame.
fn frame(src: &str, dst: &str, proto: u8, l4: &[u8]) -> Vec<u8> {
    match (ip(src), ip(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = packet::ipv4(s, d, 64, 20 + l4.len());
            p[9] = proto;
            p[10..12].copy_from_slice(&[0, 0]);
            let check = !packet::ones_complement_sum(&p[..20]);
            p[10..12].copy_from_slice(&check.to_be_bytes());
            p[20..].copy_from_slice(l4);
            packet::ethernet([2; 6], [4; 6], ETH_P_IP, &p)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = packet::ipv6(s, d, 64, l4.len());
            p[6] = proto;
            p[40..].copy_from_slice(l4);
            packet::ethernet([2; 6], [4; 6], ETH_P_IPV6, &p)
        }
        _ => panic!("one family"),
    }
}

fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[12] = 0x50;
    h[13] = flags;
    h
}

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&8u16.to_be_bytes());
    h
}

fn icmp(kind: u8, code: u8, id: u16) -> Vec<u8> {
    vec![kind, code, 0, 0, (id >> 8) as u8, id as u8, 0, 1]
}

fn tcp_v4(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    frame(src, dst, 6, &tcp(sport, dport, flags))
}

fn udp_to(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<u8> {
    frame(src, dst, 17, &udp(sport, dport))
}

fn allow(rule: u32) -> Cell {
    Cell {
        decision: None,
        log: None,
        allow: Some(rule),
    }
}

fn seg(first: u16, last: u16, cell: Cell) -> Segment {
    Segment { first, last, cell }
}

/// Isolated both ways, nothing allowed.
fn isolated() -> EndpointTables {
    let mut t = EndpointTables::default();
    t.ingress.isolated = true;
    t.egress.isolated = true;
    t
}

#[test]
fn an_endpoint_without_policy_is_open_and_tracked() {
    privileged!("an_endpoint_without_policy_is_open_and_tracked");
    let f = Fixture::new();
    assert_eq!(f.send(&udp_to(ME_V4, PEER_V4, 5000, 53)), PASS);
    assert_eq!(f.receive(&tcp_v4(PEER_V4, ME_V4, 40000, 22, TCP_SYN)), PASS);
    assert_eq!(f.count(PolicyReason::AllowedNew), 2);
    let ct = f.dp.conntrack().unwrap();
    assert_eq!(ct.len(), 2, "{ct:?}");
    let udp = ct.iter().find(|c| c.protocol == 17).unwrap();
    assert_eq!(
        (udp.direction, udp.src, udp.dst),
        (Direction::Egress, ip(ME_V4), ip(PEER_V4))
    );
    assert_eq!((udp.src_port, udp.dst_port, udp.generation), (5000, 53, 0));
    // ARP is not policy's.
    let arp = packet::ethernet([0xff; 6], [4; 6], packet::ETH_P_ARP, &[0u8; 28]);
    assert_eq!(f.receive(&arp), PASS);
    assert_eq!(f.count(PolicyReason::PassNotIp), 1);
    // Each new allowed flow was reported once.
    let events = f.dp.drain_events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e.allowed && e.rule.is_none()));
}

#[test]
fn isolated_endpoints_drop_what_no_rule_allows_and_say_so() {
    privileged!("isolated_endpoints_drop_what_no_rule_allows_and_say_so");
    let f = Fixture::new();
    f.install(&isolated());
    assert_eq!(f.receive(&tcp_v4(PEER_V4, ME_V4, 40000, 80, TCP_SYN)), DROP);
    assert_eq!(f.send(&udp_to(ME_V4, PEER_V4, 5000, 53)), DROP);
    assert_eq!(f.count(PolicyReason::DeniedDefault), 2);
    assert!(f.dp.conntrack().unwrap().is_empty());
    let events = f.dp.drain_events();
    assert_eq!(events.len(), 2);
    let e = &events[0];
    assert!(!e.allowed && !e.audit && e.rule.is_none());
    assert_eq!((e.ifindex, e.direction), (EP.ifindex, Direction::Ingress));
    assert_eq!(
        (e.src, e.dst, e.src_port, e.dst_port, e.protocol),
        (ip(PEER_V4), ip(ME_V4), 40000, 80, 6)
    );
    assert_eq!((e.src_identity, e.dst_identity), (PEER_ID, ME_ID));
    let e = &events[1];
    assert_eq!(
        (e.direction, e.src_identity, e.dst_identity),
        (Direction::Egress, ME_ID, PEER_ID)
    );
    assert_eq!(f.dp.rule_stats().unwrap()[&(None, RuleVerdict::Denied)], 2);
    // Its own host may always reach it (kubelet probes).
    assert_eq!(
        f.receive(&tcp_v4("192.168.0.1", ME_V4, 40000, 8080, TCP_SYN)),
        PASS
    );
    assert_eq!(f.count(PolicyReason::AllowedFromHost), 1);
}

#[test]
fn an_identity_rule_allows_its_peer_on_its_ports_only() {
    privileged!("an_identity_rule_allows_its_peer_on_its_ports_only");
    let f = Fixture::new();
    let mut t = isolated();
    t.ingress.identities.insert(
        (PEER_ID, Protocol::TCP),
        vec![seg(80, 80, allow(5)), seg(1000, 2000, allow(6))],
    );
    f.install(&t);
    let syn = |src: &str, port| tcp_v4(src, ME_V4, 40000, port, TCP_SYN);
    assert_eq!(f.receive(&syn(PEER_V4, 80)), PASS);
    // The edges of a range.
    assert_eq!(f.receive(&syn(PEER_V4, 81)), DROP);
    assert_eq!(f.receive(&syn(PEER_V4, 999)), DROP);
    assert_eq!(f.receive(&syn(PEER_V4, 1000)), PASS);
    assert_eq!(f.receive(&syn(PEER_V4, 2000)), PASS);
    assert_eq!(f.receive(&syn(PEER_V4, 2001)), DROP);
    // Another protocol, another peer.
    assert_eq!(f.receive(&udp_to(PEER_V4, ME_V4, 40000, 80)), DROP);
    assert_eq!(f.receive(&syn("10.1.0.99", 80)), DROP);
    assert_eq!(f.count(PolicyReason::AllowedNew), 3);
    assert_eq!(f.count(PolicyReason::DeniedDefault), 5);
    let allowed: Vec<Option<u32>> =
        f.dp.drain_events()
            .iter()
            .filter(|e| e.allowed)
            .map(|e| e.rule)
            .collect();
    assert_eq!(allowed, vec![Some(5), Some(6), Some(6)]);
    assert_eq!(
        f.dp.rule_stats().unwrap()[&(Some(6), RuleVerdict::Allowed)],
        2
    );
}

#[test]
fn a_cidr_rule_allows_its_block_but_not_the_exception() {
    privileged!("a_cidr_rule_allows_its_block_but_not_the_exception");
    let f = Fixture::new();
    let mut t = isolated();
    // 10.0.0.0/8 except 10.9.0.0/16: the exception is a class of its own with no
    // cell, as the compiler makes it.
    t.egress.cidrs.insert("10.0.0.0/8".parse().unwrap(), 0);
    t.egress.cidrs.insert("10.9.0.0/16".parse().unwrap(), 1);
    t.egress.cidrs.insert("fd00::/16".parse().unwrap(), 2);
    t.egress
        .classes
        .insert((0, Protocol::UDP), vec![seg(0, u16::MAX, allow(7))]);
    t.egress
        .classes
        .insert((2, Protocol::UDP), vec![seg(53, 53, allow(8))]);
    f.install(&t);
    assert_eq!(f.send(&udp_to(ME_V4, "10.5.5.5", 5000, 9999)), PASS);
    assert_eq!(
        f.send(&udp_to(ME_V4, PEER_V4, 5000, 1)),
        PASS,
        "any identity in the block"
    );
    assert_eq!(f.send(&udp_to(ME_V4, "10.9.1.1", 5000, 9999)), DROP);
    assert_eq!(f.send(&udp_to(ME_V4, "11.0.0.1", 5000, 9999)), DROP);
    assert_eq!(f.send(&udp_to(ME_V6, "fd00:9::1", 5000, 53)), PASS);
    assert_eq!(f.send(&udp_to(ME_V6, "fd00:9::1", 5000, 54)), DROP);
    assert_eq!(f.send(&udp_to(ME_V6, "fd01::1", 5000, 53)), DROP);
}

#[test]
fn an_ipv6_prefix_never_matches_an_ipv4_peer() {
    privileged!("an_ipv6_prefix_never_matches_an_ipv4_peer");
    let f = Fixture::new();
    let mut t = isolated();
    t.egress.cidrs.insert("::/0".parse().unwrap(), 0);
    t.egress
        .classes
        .insert((0, Protocol::UDP), vec![seg(0, u16::MAX, allow(7))]);
    f.install(&t);
    assert_eq!(f.send(&udp_to(ME_V6, "2001:db8::1", 5000, 53)), PASS);
    assert_eq!(f.send(&udp_to(ME_V4, "8.8.8.8", 5000, 53)), DROP);
}

#[test]
fn the_first_rule_over_both_lookups_decides() {
    privileged!("the_first_rule_over_both_lookups_decides");
    let f = Fixture::new();
    let decide = |rule, action| Cell {
        decision: Some((rule, action, false)),
        log: None,
        allow: None,
    };
    let mut t = isolated();
    t.ingress.cidrs.insert("10.1.0.0/24".parse().unwrap(), 0);
    // Port 80: the identity's deny is rule 5, the CIDR's allow rule 3: allowed.
    // Port 81: the identity's deny is rule 2, the CIDR's allow rule 3: denied.
    t.ingress.identities.insert(
        (PEER_ID, Protocol::TCP),
        vec![
            seg(80, 80, decide(5, Action::Deny)),
            seg(81, 81, decide(2, Action::Deny)),
        ],
    );
    t.ingress.classes.insert(
        (0, Protocol::TCP),
        vec![seg(80, 81, decide(3, Action::Allow))],
    );
    f.install(&t);
    assert_eq!(f.receive(&tcp_v4(PEER_V4, ME_V4, 40000, 80, TCP_SYN)), PASS);
    assert_eq!(f.receive(&tcp_v4(PEER_V4, ME_V4, 40000, 81, TCP_SYN)), DROP);
    assert_eq!(f.count(PolicyReason::DeniedRule), 1);
    let rules: Vec<(bool, Option<u32>)> =
        f.dp.drain_events()
            .iter()
            .map(|e| (e.allowed, e.rule))
            .collect();
    assert_eq!(rules, vec![(true, Some(3)), (false, Some(2))]);
}

#[test]
fn pass_hands_over_to_the_namespaced_tier_and_log_rules_are_reported() {
    privileged!("pass_hands_over_to_the_namespaced_tier_and_log_rules_are_reported");
    let f = Fixture::new();
    let mut t = isolated();
    t.ingress.cidrs.insert("10.0.0.0/8".parse().unwrap(), 0);
    t.ingress.classes.insert(
        (0, Protocol::TCP),
        vec![seg(
            0,
            u16::MAX,
            Cell {
                decision: Some((1, Action::Pass, false)),
                log: Some(0),
                allow: None,
            },
        )],
    );
    t.ingress
        .identities
        .insert((PEER_ID, Protocol::TCP), vec![seg(80, 80, allow(40))]);
    f.install(&t);
    assert_eq!(f.receive(&tcp_v4(PEER_V4, ME_V4, 40000, 80, TCP_SYN)), PASS);
    // Passed on, and no namespaced rule allows it: the default.
    assert_eq!(f.receive(&tcp_v4(PEER_V4, ME_V4, 40000, 81, TCP_SYN)), DROP);
    let events = f.dp.drain_events();
    let got: Vec<(bool, Option<u32>, Option<u32>)> = events
        .iter()
        .map(|e| (e.allowed, e.rule, e.log_rule))
        .collect();
    assert_eq!(got, vec![(true, Some(40), Some(0)), (false, None, Some(0))]);
}

#[test]
fn an_audit_deny_passes_and_is_reported_as_audit() {
    privileged!("an_audit_deny_passes_and_is_reported_as_audit");
    let f = Fixture::new();
    let mut t = EndpointTables::default();
    t.ingress.identities.insert(
        (PEER_ID, Protocol::TCP),
        vec![seg(
            0,
            u16::MAX,
            Cell {
                decision: Some((2, Action::Deny, true)),
                log: None,
                allow: None,
            },
        )],
    );
    // And an isolated egress whose every policy is in audit.
    t.egress.isolated = true;
    t.egress.default_audit = true;
    f.install(&t);
    assert_eq!(f.receive(&tcp_v4(PEER_V4, ME_V4, 40000, 80, TCP_SYN)), PASS);
    assert_eq!(f.send(&udp_to(ME_V4, "192.0.2.1", 5000, 53)), PASS);
    assert_eq!(f.count(PolicyReason::AuditDenied), 2);
    let events = f.dp.drain_events();
    let got: Vec<(bool, bool, Option<u32>)> = events
        .iter()
        .map(|e| (e.allowed, e.audit, e.rule))
        .collect();
    assert_eq!(got, vec![(true, true, Some(2)), (true, true, None)]);
    // Tracked, flagged: the connection works as it would without policy.
    let ct = f.dp.conntrack().unwrap();
    assert_eq!(ct.len(), 2);
    assert!(ct.iter().all(|c| c.audit));
    assert_eq!(
        f.dp.rule_stats().unwrap()[&(Some(2), RuleVerdict::Audit)],
        1
    );
}

#[test]
fn replies_of_an_allowed_flow_pass_and_nothing_else_does() {
    privileged!("replies_of_an_allowed_flow_pass_and_nothing_else_does");
    let f = Fixture::new();
    let mut t = isolated();
    t.egress
        .identities
        .insert((PEER_ID, Protocol::UDP), vec![seg(53, 53, allow(1))]);
    t.egress
        .identities
        .insert((PEER_ID, Protocol::TCP), vec![seg(443, 443, allow(2))]);
    t.egress.identities.insert(
        (PEER_ID, Protocol::ICMP),
        vec![seg(8 << 8, (8 << 8) | 0xff, allow(3))],
    );
    f.install(&t);
    // UDP.
    assert_eq!(f.send(&udp_to(ME_V4, PEER_V4, 5000, 53)), PASS);
    assert_eq!(f.receive(&udp_to(PEER_V4, ME_V4, 53, 5000)), PASS);
    assert_eq!(
        f.receive(&udp_to(PEER_V4, ME_V4, 53, 5001)),
        DROP,
        "another port"
    );
    // TCP: SYN out, SYN-ACK back, then both ways.
    assert_eq!(f.send(&tcp_v4(ME_V4, PEER_V4, 40000, 443, TCP_SYN)), PASS);
    assert_eq!(
        f.receive(&tcp_v4(PEER_V4, ME_V4, 443, 40000, TCP_SYN | TCP_ACK)),
        PASS
    );
    assert_eq!(f.send(&tcp_v4(ME_V4, PEER_V4, 40000, 443, TCP_ACK)), PASS);
    assert_eq!(
        f.receive(&tcp_v4(PEER_V4, ME_V4, 443, 40000, TCP_ACK)),
        PASS
    );
    // The peer cannot open a connection of its own.
    assert_eq!(
        f.receive(&tcp_v4(PEER_V4, ME_V4, 443, 40001, TCP_SYN)),
        DROP
    );
    // ICMP echo: the reply carries the request's identifier.
    assert_eq!(f.send(&frame(ME_V4, PEER_V4, 1, &icmp(8, 0, 77))), PASS);
    assert_eq!(f.receive(&frame(PEER_V4, ME_V4, 1, &icmp(0, 0, 77))), PASS);
    assert_eq!(f.receive(&frame(PEER_V4, ME_V4, 1, &icmp(0, 0, 78))), DROP);
    assert_eq!(f.count(PolicyReason::AllowedReply), 4);
    assert_eq!(f.count(PolicyReason::AllowedEstablished), 1);
    let ct = f.dp.conntrack().unwrap();
    let conn = ct.iter().find(|c| c.protocol == 6).unwrap();
    assert_eq!(
        (conn.tcp_flags_fwd, conn.tcp_flags_rev),
        (TCP_SYN | TCP_ACK, TCP_SYN | TCP_ACK)
    );
    assert!(conn.expires_in > Duration::from_secs(3600), "established");
    assert_eq!((conn.packets, conn.rule), (4, Some(2)));
}

#[test]
fn tcp_is_tracked_from_its_syn_only() {
    privileged!("tcp_is_tracked_from_its_syn_only");
    let f = Fixture::new();
    let mut t = isolated();
    t.egress
        .identities
        .insert((PEER_ID, Protocol::TCP), vec![seg(443, 443, allow(2))]);
    f.install(&t);
    // Mid-stream (an entry evicted, say): allowed by policy packet by packet, but
    // not tracked, so the peer's packets are not taken for replies.
    assert_eq!(f.send(&tcp_v4(ME_V4, PEER_V4, 40000, 443, TCP_ACK)), PASS);
    assert_eq!(f.count(PolicyReason::AllowedUntracked), 1);
    assert!(f.dp.conntrack().unwrap().is_empty());
    assert_eq!(
        f.receive(&tcp_v4(PEER_V4, ME_V4, 443, 40000, TCP_ACK)),
        DROP
    );
    assert!(
        f.dp.drain_events().iter().all(|e| !e.allowed),
        "no event for an untracked pass"
    );
}

#[test]
fn an_install_ends_the_flows_its_tables_no_longer_allow() {
    privileged!("an_install_ends_the_flows_its_tables_no_longer_allow");
    let f = Fixture::new();
    let mut t = isolated();
    t.ingress
        .identities
        .insert((PEER_ID, Protocol::TCP), vec![seg(80, 80, allow(5))]);
    t.egress
        .identities
        .insert((PEER_ID, Protocol::UDP), vec![seg(53, 53, allow(6))]);
    f.install(&t);
    assert_eq!(f.receive(&tcp_v4(PEER_V4, ME_V4, 40000, 80, TCP_SYN)), PASS);
    assert_eq!(f.send(&udp_to(ME_V4, PEER_V4, 5000, 53)), PASS);
    let first = f.dp.read_back(EP.ifindex).unwrap().unwrap().generation;
    // Still allowed under a new generation (another rule number): kept.
    let mut t2 = t.clone();
    t2.ingress
        .identities
        .insert((PEER_ID, Protocol::TCP), vec![seg(80, 80, allow(9))]);
    f.install(&t2);
    assert!(f.dp.read_back(EP.ifindex).unwrap().unwrap().generation > first);
    assert_eq!(f.receive(&tcp_v4(PEER_V4, ME_V4, 40000, 80, TCP_ACK)), PASS);
    assert_eq!(f.count(PolicyReason::ReevaluatedAllowed), 1);
    assert_eq!(f.receive(&tcp_v4(PEER_V4, ME_V4, 40000, 80, TCP_ACK)), PASS);
    assert_eq!(
        f.count(PolicyReason::AllowedEstablished),
        1,
        "current again"
    );
    // The rules gone: the next packet of each flow, either way, ends it.
    f.install(&isolated());
    assert_eq!(f.receive(&tcp_v4(PEER_V4, ME_V4, 40000, 80, TCP_ACK)), DROP);
    assert_eq!(
        f.receive(&udp_to(PEER_V4, ME_V4, 53, 5000)),
        DROP,
        "a reply, re-evaluated as its flow"
    );
    assert_eq!(f.count(PolicyReason::ReevaluatedDenied), 2);
    assert!(f.dp.conntrack().unwrap().is_empty());
    let denied: Vec<Option<u32>> =
        f.dp.drain_events()
            .iter()
            .filter(|e| !e.allowed)
            .map(|e| e.rule)
            .collect();
    assert_eq!(denied, vec![None, None]);
}

#[test]
fn icmp_errors_about_a_tracked_flow_pass() {
    privileged!("icmp_errors_about_a_tracked_flow_pass");
    let f = Fixture::new();
    let mut t = isolated();
    t.egress
        .identities
        .insert((PEER_ID, Protocol::UDP), vec![seg(53, 53, allow(1))]);
    f.install(&t);
    let sent = udp_to(ME_V4, PEER_V4, 5000, 53);
    assert_eq!(f.send(&sent), PASS);
    // Port unreachable from the peer, or from a router on the way, about it.
    let about = |inner: &[u8]| {
        let mut body = icmp(3, 3, 0);
        body.extend_from_slice(&inner[packet::ETH_HLEN..packet::ETH_HLEN + 28]);
        body
    };
    assert_eq!(f.receive(&frame(PEER_V4, ME_V4, 1, &about(&sent))), PASS);
    assert_eq!(
        f.receive(&frame("192.0.2.254", ME_V4, 1, &about(&sent))),
        PASS
    );
    assert_eq!(f.count(PolicyReason::AllowedRelated), 2);
    // About a flow nobody opened: the policy decides (denied here).
    let other = udp_to(ME_V4, PEER_V4, 5001, 53);
    assert_eq!(f.receive(&frame(PEER_V4, ME_V4, 1, &about(&other))), DROP);
    // IPv6: packet too big about a tracked flow.
    t.egress
        .identities
        .insert((PEER_ID, Protocol::TCP), vec![seg(443, 443, allow(2))]);
    f.install(&t);
    let syn = frame(ME_V6, PEER_V6, 6, &tcp(40000, 443, TCP_SYN));
    assert_eq!(f.send(&syn), PASS);
    let mut ptb = icmp(2, 0, 0);
    ptb.extend_from_slice(&syn[packet::ETH_HLEN..packet::ETH_HLEN + 48]);
    assert_eq!(f.receive(&frame("fd00:ff::1", ME_V6, 58, &ptb)), PASS);
    assert_eq!(f.count(PolicyReason::AllowedRelated), 3);
}

#[test]
fn ipv6_is_enforced_like_ipv4_and_neighbour_discovery_always_passes() {
    privileged!("ipv6_is_enforced_like_ipv4_and_neighbour_discovery_always_passes");
    let f = Fixture::new();
    let mut t = isolated();
    t.ingress
        .identities
        .insert((PEER_ID, Protocol::TCP), vec![seg(80, 80, allow(5))]);
    f.install(&t);
    let syn = |src: &str, port| frame(src, ME_V6, 6, &tcp(40000, port, TCP_SYN));
    assert_eq!(f.receive(&syn(PEER_V6, 80)), PASS);
    assert_eq!(f.receive(&syn(PEER_V6, 81)), DROP);
    assert_eq!(f.receive(&syn("fd00:1::99", 80)), DROP);
    assert_eq!(
        f.send(&frame(
            ME_V6,
            PEER_V6,
            6,
            &tcp(80, 40000, TCP_SYN | TCP_ACK)
        )),
        PASS
    );
    // Neighbour solicitation and advertisement.
    assert_eq!(
        f.receive(&frame(PEER_V6, ME_V6, 58, &icmp(135, 0, 0))),
        PASS
    );
    assert_eq!(f.send(&frame(ME_V6, PEER_V6, 58, &icmp(136, 0, 0))), PASS);
    assert_eq!(f.count(PolicyReason::PassLinkControl), 2);
    // Echo is policy's.
    assert_eq!(
        f.receive(&frame(PEER_V6, ME_V6, 58, &icmp(128, 0, 1))),
        DROP
    );
    let e =
        f.dp.drain_events()
            .into_iter()
            .find(|e| e.protocol == 58)
            .unwrap();
    assert_eq!((e.src, e.dst_port), (ip(PEER_V6), 128 << 8));
}

#[test]
fn a_full_map_leaves_the_installed_tables_in_force() {
    privileged!("a_full_map_leaves_the_installed_tables_in_force");
    // Room for 64 rule entries; installs need room for the old and the new.
    let f = Fixture::sized(MapSizes {
        rules: Some(64),
        ..MapSizes::default()
    });
    let mut small = isolated();
    small
        .ingress
        .identities
        .insert((PEER_ID, Protocol::TCP), vec![seg(80, 80, allow(5))]);
    f.install(&small);
    let mut big = isolated();
    // 1..=65534 takes 30 prefixes; three peers of it do not fit beside `small`.
    for peer in [PEER_ID, 301, 302] {
        big.ingress
            .identities
            .insert((peer, Protocol::UDP), vec![seg(1, 65534, allow(6))]);
    }
    let err = f.dp.install(EP.ifindex, ME_ID, &big).unwrap_err();
    assert!(
        matches!(
            err,
            DataplaneError::Map {
                map: "strait_pol_rules",
                ..
            }
        ),
        "{err}"
    );
    let back = f.dp.read_back(EP.ifindex).unwrap().unwrap();
    assert_eq!(back.tables, canonical(&small));
    assert_eq!(f.receive(&tcp_v4(PEER_V4, ME_V4, 40000, 80, TCP_SYN)), PASS);
    assert_eq!(f.receive(&udp_to(PEER_V4, ME_V4, 5000, 1000)), DROP);
    // Nothing of the failed install is left behind.
    let entries = f.dp.lock().rule_entries().unwrap().len();
    assert_eq!(entries, 1);
}

#[test]
fn a_new_datapath_adopts_what_the_pinned_maps_hold() {
    privileged!("a_new_datapath_adopts_what_the_pinned_maps_hold");
    let f = Fixture::new();
    let mut t = isolated();
    t.ingress
        .identities
        .insert((PEER_ID, Protocol::TCP), vec![seg(80, 80, allow(5))]);
    t.egress.cidrs.insert("10.0.0.0/8".parse().unwrap(), 0);
    t.egress
        .classes
        .insert((0, Protocol::UDP), vec![seg(53, 53, allow(6))]);
    f.install(&t);
    f.dp.install(11, 500, &isolated()).unwrap();
    let before = f.dp.read_back(EP.ifindex).unwrap().unwrap();
    let next = PolicyDatapath::load(f.dp.bpf_dir()).unwrap();
    assert_eq!(next.installed().unwrap(), vec![EP.ifindex, 11]);
    assert_eq!(next.read_back(EP.ifindex).unwrap(), Some(before.clone()));
    assert_eq!(next.read_ipcache().unwrap(), f.dp.read_ipcache().unwrap());
    // It replaces and removes what the first one installed, by what it found.
    next.install(EP.ifindex, ME_ID, &isolated()).unwrap();
    let after = next.read_back(EP.ifindex).unwrap().unwrap();
    assert_eq!(after.tables, isolated());
    assert!(after.generation > before.generation);
    next.remove(11).unwrap();
    assert_eq!(next.installed().unwrap(), vec![EP.ifindex]);
    assert_eq!(next.lock().rule_entries().unwrap().len(), 0);
    assert_eq!(next.lock().cidr_entries().unwrap().len(), 0);
    // The first one's programs use the same maps.
    assert_eq!(f.receive(&tcp_v4(PEER_V4, ME_V4, 40000, 80, TCP_SYN)), DROP);
}

#[test]
fn expired_conntrack_entries_are_collected() {
    privileged!("expired_conntrack_entries_are_collected");
    let f = Fixture::new();
    assert_eq!(f.send(&udp_to(ME_V4, PEER_V4, 5000, 53)), PASS);
    assert_eq!(f.send(&frame(ME_V4, PEER_V4, 1, &icmp(8, 0, 1))), PASS);
    assert_eq!(f.dp.conntrack_gc().unwrap(), 0, "nothing has expired yet");
    let now = sys::monotonic_ns();
    // ICMP's 30 s are over 45 s from now, UDP's 60 s are not.
    assert_eq!(
        conntrack::gc_at(&mut f.dp.lock().maps, now + 45_000_000_000).unwrap(),
        1
    );
    let left = f.dp.conntrack().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].protocol, 17);
    assert_eq!(
        conntrack::gc_at(&mut f.dp.lock().maps, now + 61_000_000_000).unwrap(),
        1
    );
    assert!(f.dp.conntrack().unwrap().is_empty());
}

#[test]
fn a_pinned_map_of_another_layout_is_refused() {
    privileged!("a_pinned_map_of_another_layout_is_refused");
    let f = Fixture::new();
    let other = PrivateBpffs::new(&std::env::temp_dir(), "strait-pt").unwrap();
    // Another build's conntrack: here, a map of the wrong sizes under its name.
    let wrong = MapData::from_pin(f.dp.bpf_dir().join(abi::CIDRS)).unwrap();
    wrong.pin(other.path().join(abi::CONNTRACK)).unwrap();
    let err = PolicyDatapath::load(other.path()).err().expect("refused");
    assert!(err.to_string().contains("strait_ct"), "{err}");
    assert!(err.to_string().contains("incompatible"), "{err}");
}

#[test]
fn an_expired_entry_is_absent_to_the_programs_and_collected() {
    privileged!("an_expired_entry_is_absent_to_the_programs_and_collected");
    let f = Fixture::new();
    let mut t = isolated();
    t.egress
        .identities
        .insert((PEER_ID, Protocol::UDP), vec![seg(53, 53, allow(1))]);
    f.install(&t);
    for sport in [5000, 5001, 5002] {
        assert_eq!(f.send(&udp_to(ME_V4, PEER_V4, sport, 53)), PASS);
    }
    f.expire(17, 5000);
    f.expire(17, 5002);
    assert_eq!(f.flow(17, 5000).unwrap().expires_in, Duration::ZERO);
    // The reply of an expired flow is not a reply: the isolated ingress drops it.
    assert_eq!(f.receive(&udp_to(PEER_V4, ME_V4, 53, 5000)), DROP);
    assert_eq!(f.count(PolicyReason::DeniedDefault), 1);
    assert_eq!(f.receive(&udp_to(PEER_V4, ME_V4, 53, 5001)), PASS);
    assert_eq!(f.count(PolicyReason::AllowedReply), 1);
    // The flow's own next packet is a new flow, allowed again, with a fresh entry.
    assert_eq!(f.send(&udp_to(ME_V4, PEER_V4, 5002, 53)), PASS);
    assert_eq!(f.count(PolicyReason::AllowedNew), 4);
    assert_eq!(f.count(PolicyReason::AllowedEstablished), 0);
    let renewed = f.flow(17, 5002).unwrap();
    assert_eq!(renewed.packets, 1, "a new entry, not the old one's count");
    assert!(renewed.expires_in > Duration::from_secs(30));
    // The agent's collection deletes the expired entry and keeps the live ones.
    assert_eq!(f.dp.conntrack_gc().unwrap(), 1);
    let mut left: Vec<u16> =
        f.dp.conntrack()
            .unwrap()
            .iter()
            .map(|c| c.src_port)
            .collect();
    left.sort_unstable();
    assert_eq!(left, vec![5001, 5002]);
    assert_eq!(f.dp.conntrack_gc().unwrap(), 0);
}

#[test]
fn a_long_lived_connection_survives_unrelated_policy_changes() {
    privileged!("a_long_lived_connection_survives_unrelated_policy_changes");
    let f = Fixture::new();
    let mut t = isolated();
    t.ingress
        .identities
        .insert((PEER_ID, Protocol::TCP), vec![seg(80, 80, allow(5))]);
    f.install(&t);
    let generation = || f.dp.read_back(EP.ifindex).unwrap().unwrap().generation;
    let first = generation();
    let from_peer = |flags| tcp_v4(PEER_V4, ME_V4, 40000, 80, flags);
    let to_peer = |flags| tcp_v4(ME_V4, PEER_V4, 80, 40000, flags);
    assert_eq!(f.receive(&from_peer(TCP_SYN)), PASS);
    assert_eq!(f.send(&to_peer(TCP_SYN | TCP_ACK)), PASS);
    assert_eq!(f.receive(&from_peer(TCP_ACK)), PASS);
    assert_eq!(f.send(&to_peer(TCP_ACK)), PASS);
    let conn = f.flow(6, 40000).unwrap();
    assert_eq!((conn.generation, conn.rule), (first, Some(5)));
    assert!(conn.expires_in > Duration::from_secs(3600), "established");
    // A rule for another protocol and direction: a new generation.
    let mut t2 = t.clone();
    t2.egress
        .identities
        .insert((PEER_ID, Protocol::UDP), vec![seg(53, 53, allow(6))]);
    f.install(&t2);
    let second = generation();
    assert!(second > first);
    // The endpoint's next packet (a reply) re-evaluates the connection as it was
    // opened: still allowed, its entry brought up to date.
    assert_eq!(f.send(&to_peer(TCP_ACK)), PASS);
    assert_eq!(f.count(PolicyReason::ReevaluatedAllowed), 1);
    let conn = f.flow(6, 40000).unwrap();
    assert_eq!((conn.generation, conn.rule), (second, Some(5)));
    assert!(
        conn.expires_in > Duration::from_secs(3600),
        "still established"
    );
    // Current again: no second evaluation.
    assert_eq!(f.receive(&from_peer(TCP_ACK)), PASS);
    assert_eq!(f.send(&to_peer(TCP_ACK)), PASS);
    assert_eq!(f.count(PolicyReason::AllowedEstablished), 2);
    assert_eq!(f.count(PolicyReason::AllowedReply), 3);
    assert_eq!(f.count(PolicyReason::ReevaluatedAllowed), 1);
    // The rule taken away again: this time the peer's packet comes first.
    f.install(&t);
    let third = generation();
    assert!(third > second);
    assert_eq!(f.receive(&from_peer(TCP_ACK)), PASS);
    assert_eq!(f.count(PolicyReason::ReevaluatedAllowed), 2);
    assert_eq!(f.flow(6, 40000).unwrap().generation, third);
    assert_eq!(f.send(&to_peer(TCP_ACK)), PASS);
    assert_eq!(f.count(PolicyReason::AllowedReply), 4);
    assert_eq!(
        f.count(PolicyReason::ReevaluatedDenied)
            + f.count(PolicyReason::DeniedDefault)
            + f.count(PolicyReason::DeniedRule),
        0
    );
    // Allowed flows are reported by their first packet only.
    assert_eq!(f.dp.drain_events().len(), 1);
}

#[test]
fn a_full_conntrack_evicts_but_never_allows_what_policy_denies() {
    privileged!("a_full_conntrack_evicts_but_never_allows_what_policy_denies");
    const CT_MAX: usize = 64;
    let f = Fixture::sized(MapSizes {
        conntrack: Some(CT_MAX as u32),
        ..MapSizes::default()
    });
    let mut t = isolated();
    t.egress
        .identities
        .insert((PEER_ID, Protocol::UDP), vec![seg(53, 53, allow(1))]);
    t.egress
        .identities
        .insert((PEER_ID, Protocol::TCP), vec![seg(443, 443, allow(2))]);
    f.install(&t);
    let udp_out = |sport| udp_to(ME_V4, PEER_V4, sport, 53);
    let udp_back = |dport| udp_to(PEER_V4, ME_V4, 53, dport);
    let tcp_out = |sport, flags| tcp_v4(ME_V4, PEER_V4, sport, 443, flags);
    let tcp_back = |dport, flags| tcp_v4(PEER_V4, ME_V4, 443, dport, flags);
    // Three tables' worth of allowed flows, UDP and TCP in turn.
    let fills = 3 * CT_MAX as u16;
    for sport in 10000..10000 + fills {
        let sent = if sport % 2 == 0 {
            f.send(&udp_out(sport))
        } else {
            f.send(&tcp_out(sport, TCP_SYN))
        };
        assert_eq!(sent, PASS);
    }
    assert_eq!(f.count(PolicyReason::AllowedNew), u64::from(fills));
    let ct = f.dp.conntrack().unwrap();
    assert!(ct.len() <= CT_MAX, "{} entries", ct.len());
    // Which entries the kernel's LRU evicted is its choice: take them from the map.
    let evicted = |protocol: u8| -> Vec<u16> {
        (10000..10000 + fills)
            .filter(|p| (p % 2 == 0) == (protocol == 17) && f.flow(protocol, *p).is_none())
            .collect()
    };
    let (udp_gone, tcp_gone) = (evicted(17), evicted(6));
    // Each protocol had 96 flows, the table room for 64.
    assert!(udp_gone.len() >= 32 && tcp_gone.len() >= 32);
    let tracked = |ct: &[Flow]| -> Vec<(u8, u16)> {
        let mut v: Vec<(u8, u16)> = ct.iter().map(|c| (c.protocol, c.src_port)).collect();
        v.sort_unstable();
        v
    };
    let before = tracked(&ct);

    // (a) Denied flows are denied, full table or not, and neither make an entry
    // nor evict one.
    assert_eq!(f.send(&udp_to(ME_V4, PEER_V4, 6000, 54)), DROP);
    assert_eq!(f.send(&tcp_v4(ME_V4, PEER_V4, 6001, 444, TCP_SYN)), DROP);
    assert_eq!(f.receive(&tcp_v4(PEER_V4, ME_V4, 6002, 22, TCP_SYN)), DROP);
    assert_eq!(f.count(PolicyReason::DeniedDefault), 3);
    assert_eq!(tracked(&f.dp.conntrack().unwrap()), before);

    // (c) A reply whose flow's entry was evicted is judged as a flow of its own, in
    // its own direction: the isolated ingress allows no UDP from port 53 and no TCP
    // from 443, so both are dropped (and the TCP connection is broken).
    assert_eq!(f.receive(&udp_back(udp_gone[0])), DROP);
    assert_eq!(f.receive(&tcp_back(tcp_gone[0], TCP_SYN | TCP_ACK)), DROP);
    assert_eq!(f.count(PolicyReason::DeniedDefault), 5);
    assert_eq!(f.count(PolicyReason::AllowedReply), 0);
    // The replies of flows still tracked pass.
    let (udp_kept, tcp_kept) = (before[before.len() - 1].1, before[0].1);
    assert_eq!((before[0].0, before[before.len() - 1].0), (6, 17));
    assert_eq!(f.receive(&udp_back(udp_kept)), PASS);
    assert_eq!(f.receive(&tcp_back(tcp_kept, TCP_SYN | TCP_ACK)), PASS);
    assert_eq!(f.count(PolicyReason::AllowedReply), 2);
    assert_eq!(tracked(&f.dp.conntrack().unwrap()), before);

    // (b) An evicted flow's next packet is a new flow: UDP is allowed and tracked
    // again, and its replies pass again.
    assert_eq!(f.send(&udp_out(udp_gone[1])), PASS);
    assert_eq!(f.count(PolicyReason::AllowedNew), u64::from(fills) + 1);
    assert_eq!(
        f.flow(17, udp_gone[1]).map(|c| c.direction),
        Some(Direction::Egress)
    );
    assert_eq!(f.receive(&udp_back(udp_gone[1])), PASS);
    assert_eq!(f.count(PolicyReason::AllowedReply), 3);
    // TCP in the middle of its connection is allowed packet by packet but not
    // tracked again, so the peer's answers are not replies.
    assert_eq!(f.send(&tcp_out(tcp_gone[1], TCP_ACK)), PASS);
    assert_eq!(f.count(PolicyReason::AllowedUntracked), 1);
    assert!(f.flow(6, tcp_gone[1]).is_none());
    assert_eq!(f.receive(&tcp_back(tcp_gone[1], TCP_ACK)), DROP);
    assert_eq!(f.count(PolicyReason::DeniedDefault), 6);

    // The rules removed meanwhile: an evicted flow's next packet is denied as any
    // new flow, a tracked one's by re-evaluation.
    f.install(&isolated());
    assert_eq!(f.send(&udp_out(udp_gone[2])), DROP);
    assert_eq!(f.send(&tcp_out(tcp_gone[2], TCP_ACK)), DROP);
    assert_eq!(f.count(PolicyReason::DeniedDefault), 8);
    assert_eq!(f.send(&udp_out(udp_gone[1])), DROP);
    assert_eq!(f.count(PolicyReason::ReevaluatedDenied), 1);
    assert!(f.flow(17, udp_gone[1]).is_none());
    assert!(f.flow(17, udp_gone[2]).is_none() && f.flow(6, tcp_gone[2]).is_none());
}
