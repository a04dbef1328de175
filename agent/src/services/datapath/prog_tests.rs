//! The packet-level programs run by the kernel (`BPF_PROG_TEST_RUN`,
//! `crate::bpf_test`): the embedded objects loaded as the agent loads them (maps
//! pinned in a bpffs of the test's own), frontends installed in scope `Outside`
//! with [`ServicesDatapath::install`], frames from a client outside the node run
//! through `strait_svc_from_net` and the backends' replies through
//! `strait_svc_to_net` (a local backend) or `strait_svc_from_net` (a remote one,
//! SNATed). Checked: the rewritten tuple, valid IP and TCP/UDP checksums, the
//! verdict, the counters. Needs root: without it each test prints a SKIP line.

use std::net::IpAddr;

use super::abi::{CT_F_CLOSING, CT_F_SNAT, CT_FORWARD, CT_REPLY, SNAT_PORTS};
use super::*;
use crate::bpf_test::packet::{self, ETH_P_IP, ETH_P_IPV6, TCP, UDP};
use crate::bpf_test::{Device, Run, SkbContext, TC_ACT_REDIRECT, TestNet, privileged};
use crate::policy::datapath::PrivateBpffs;

/// The node's underlay interface in the test's namespace.
const NET: Device = Device {
    name: "net0",
    ifindex: 20,
    mtu: 1500,
};

/// TCX_NEXT (`TC_ACT_UNSPEC`): handed on, to the stack.
const NEXT: u32 = u32::MAX;

const NODE: &str = "10.0.0.1";
const CLIENT: &str = "10.0.0.101";
const ROUTER: &str = "10.0.0.2";
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const NODE_PORT: u16 = 30080;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN: u8 = 0x01;

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

fn outside(addr: &str, port: u16, proto: Protocol) -> Frontend {
    Frontend {
        addr: ip(addr),
        port,
        proto,
        scope: Scope::Outside,
    }
}

fn backend(addr: &str, local: bool) -> Backend {
    Backend {
        addr: ip(addr),
        port: 8080,
        local,
    }
}

/// A packet's tuple, read back from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tuple {
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
}

fn frame(t: Tuple, proto: u8, flags: u8) -> Vec<u8> {
    let p = packet::transport(t.src, t.dst, proto, t.sport, t.dport, flags, b"strait");
    let ethertype = if t.src.is_ipv4() {
        ETH_P_IP
    } else {
        ETH_P_IPV6
    };
    packet::ethernet([0xaa; 6], [0xbb; 6], ethertype, &p)
}

/// The tuple of a frame, after checking every checksum in it.
fn tuple_of(run: &Run) -> Tuple {
    let ip_packet = &run.packet[packet::ETH_HLEN..];
    let (src, dst, hlen) = if ip_packet[0] >> 4 == 4 {
        assert!(
            packet::ipv4_checksum_ok(&ip_packet[..20]),
            "IPv4 header checksum"
        );
        let a = |o: usize| IpAddr::from(<[u8; 4]>::try_from(&ip_packet[o..o + 4]).unwrap());
        (a(12), a(16), 20)
    } else {
        let a = |o: usize| IpAddr::from(<[u8; 16]>::try_from(&ip_packet[o..o + 16]).unwrap());
        (a(8), a(24), 40)
    };
    assert!(
        packet::transport_checksum_ok(ip_packet),
        "TCP/UDP checksum of {ip_packet:?}"
    );
    let port = |o: usize| u16::from_be_bytes([ip_packet[hlen + o], ip_packet[hlen + o + 1]]);
    Tuple {
        src,
        sport: port(0),
        dst,
        dport: port(2),
    }
}

fn t(src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
    Tuple {
        src: ip(src),
        sport,
        dst: ip(dst),
        dport,
    }
}

struct Fixture {
    dp: ServicesDatapath,
    net: TestNet,
    // Last: unmounted after the maps are closed.
    _bpffs: PrivateBpffs,
}

impl Fixture {
    fn new() -> Self {
        let bpffs = PrivateBpffs::new(&std::env::temp_dir(), "strait-svct").unwrap();
        let dp = ServicesDatapath::load(bpffs.path()).expect("loading the services objects");
        let net = TestNet::new(&[NET]);
        // What the route lookup of a SNATed packet finds: the node's address, a
        // neighbour for the client and a router towards other nodes' blocks.
        let ns = net.ns();
        ns.exec_ok(&["sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"]);
        ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        ns.exec_ok(&["ip", "addr", "add", &format!("{NODE}/24"), "dev", NET.name]);
        ns.exec_ok(&[
            "ip",
            "route",
            "add",
            "10.244.1.0/24",
            "via",
            ROUTER,
            "dev",
            NET.name,
            "onlink",
        ]);
        ns.exec_ok(&[
            "ip",
            "neigh",
            "replace",
            ROUTER,
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            NET.name,
            "nud",
            "permanent",
        ]);
        dp.lock()
            .maps
            .nat_config
            .set(
                0,
                NatConfig {
                    snat4: maps::addr_key(ip(NODE)),
                    snat6: [0; 16],
                },
                0,
            )
            .unwrap();
        Self {
            dp,
            net,
            _bpffs: bpffs,
        }
    }

    fn run(&self, program: &str, frame: &[u8]) -> Run {
        let mut s = self.dp.lock();
        let prog = tc_program(&mut s.tc, program).unwrap();
        let fd = prog.fd().expect("the program is loaded");
        let ctx = SkbContext {
            ingress_ifindex: NET.ifindex,
            ifindex: NET.ifindex,
        };
        self.net.run(fd, frame, ctx)
    }

    /// A packet comes in from the underlay.
    fn coming_in(&self, t: Tuple, proto: u8, flags: u8) -> Run {
        self.run("strait_svc_from_net", &frame(t, proto, flags))
    }

    /// A packet leaves by the underlay.
    fn leaving(&self, t: Tuple, proto: u8, flags: u8) -> Run {
        self.run("strait_svc_to_net", &frame(t, proto, flags))
    }

    fn count(&self, r: ServiceReason) -> u64 {
        self.dp.stats().unwrap()[&r]
    }

    fn ct(&self) -> Vec<(abi::CtKey, abi::CtValue)> {
        let s = self.dp.lock();
        s.maps.ct.iter().map(Result::unwrap).collect()
    }
}

#[test]
fn a_local_backend_is_dnatted_keeping_the_client_and_its_reply_is_reversed() {
    privileged!("a_local_backend_is_dnatted_keeping_the_client_and_its_reply_is_reversed");
    let fx = Fixture::new();
    for proto in [Protocol::Tcp, Protocol::Udp] {
        let p = proto.number();
        let f = outside(NODE, NODE_PORT, proto);
        fx.dp
            .install(&f, &[backend("10.244.0.5", true)], &[0; 7], None)
            .unwrap();
        let flags = if p == TCP { SYN } else { 0 };
        let run = fx.coming_in(t(CLIENT, 40000, NODE, NODE_PORT), p, flags);
        assert_eq!(run.verdict, NEXT, "{proto}: handed to the stack");
        assert_eq!(
            tuple_of(&run),
            t(CLIENT, 40000, "10.244.0.5", 8080),
            "{proto}"
        );
        assert_eq!(run.packet[..12], frame(t(CLIENT, 1, NODE, 1), p, 0)[..12]);

        let reply = fx.leaving(t("10.244.0.5", 8080, CLIENT, 40000), p, ACK);
        assert_eq!(reply.verdict, NEXT);
        assert_eq!(
            tuple_of(&reply),
            t(NODE, NODE_PORT, CLIENT, 40000),
            "{proto}: the reply is from the node port"
        );
    }
    assert_eq!(fx.count(ServiceReason::NatNew), 2);
    assert_eq!(fx.count(ServiceReason::NatReply), 2);
    // Two entries per flow, none SNATed.
    let ct = fx.ct();
    assert_eq!(ct.len(), 4);
    assert!(ct.iter().all(|(_, v)| v.flags & CT_F_SNAT == 0));
    assert_eq!(ct.iter().filter(|(k, _)| k.dir == CT_FORWARD).count(), 2);
    assert_eq!(ct.iter().filter(|(k, _)| k.dir == CT_REPLY).count(), 2);
    // The socket balancer's scope is another frontend: nothing translates a
    // packet to a frontend installed only for local sockets.
    fx.dp
        .install(
            &Frontend {
                scope: Scope::Local,
                ..outside(NODE, 30081, Protocol::Tcp)
            },
            &[backend("10.244.0.5", true)],
            &[0],
            None,
        )
        .unwrap();
    let run = fx.coming_in(t(CLIENT, 40001, NODE, 30081), TCP, SYN);
    assert_eq!(tuple_of(&run), t(CLIENT, 40001, NODE, 30081));
}

/// A client that reached a local backend by the node port, closed, and then
/// connects to that backend's own address from the same port: the backend's
/// SYN-ACK is the new connection's and must leave as it is, not be turned into the
/// old flow's node port (the client's socket would drop it: a black hole). The
/// closed flow's entries go; a new flow to the node port is tracked afresh.
#[test]
fn a_new_connection_on_a_closed_flows_tuple_is_not_translated() {
    privileged!("a_new_connection_on_a_closed_flows_tuple_is_not_translated");
    let fx = Fixture::new();
    let be = "10.244.0.5";
    let f = outside(NODE, NODE_PORT, Protocol::Tcp);
    fx.dp
        .install(&f, &[backend(be, true)], &[0; 7], None)
        .unwrap();
    let run = fx.coming_in(t(CLIENT, 40000, NODE, NODE_PORT), TCP, SYN);
    assert_eq!(tuple_of(&run), t(CLIENT, 40000, be, 8080));
    let reply = fx.leaving(t(be, 8080, CLIENT, 40000), TCP, SYN | ACK);
    assert_eq!(tuple_of(&reply), t(NODE, NODE_PORT, CLIENT, 40000));
    // Closed: the client's FIN, the backend's FIN.
    fx.coming_in(t(CLIENT, 40000, NODE, NODE_PORT), TCP, FIN | ACK);
    let fin = fx.leaving(t(be, 8080, CLIENT, 40000), TCP, FIN | ACK);
    assert_eq!(tuple_of(&fin), t(NODE, NODE_PORT, CLIENT, 40000));
    assert!(fx.ct().iter().all(|(_, v)| v.flags & CT_F_CLOSING != 0));

    // The same port, straight to the backend: its SYN-ACK leaves untouched.
    let direct = fx.leaving(t(be, 8080, CLIENT, 40000), TCP, SYN | ACK);
    assert_eq!(direct.verdict, NEXT);
    assert_eq!(tuple_of(&direct), t(be, 8080, CLIENT, 40000));
    assert!(fx.ct().is_empty(), "the closed flow's entries are gone");
    let later = fx.leaving(t(be, 8080, CLIENT, 40000), TCP, ACK);
    assert_eq!(tuple_of(&later), t(be, 8080, CLIENT, 40000));

    // A flow that is not closing keeps its translation on a SYN (a retransmitted
    // SYN-ACK), and a new SYN to the node port on a closed tuple is a new flow.
    fx.coming_in(t(CLIENT, 40001, NODE, NODE_PORT), TCP, SYN);
    let again = fx.leaving(t(be, 8080, CLIENT, 40001), TCP, SYN | ACK);
    let twice = fx.leaving(t(be, 8080, CLIENT, 40001), TCP, SYN | ACK);
    assert_eq!(tuple_of(&again), t(NODE, NODE_PORT, CLIENT, 40001));
    assert_eq!(tuple_of(&twice), t(NODE, NODE_PORT, CLIENT, 40001));
    fx.coming_in(t(CLIENT, 40001, NODE, NODE_PORT), TCP, FIN | ACK);
    let new = fx.coming_in(t(CLIENT, 40001, NODE, NODE_PORT), TCP, SYN);
    assert_eq!(tuple_of(&new), t(CLIENT, 40001, be, 8080));
    let ct = fx.ct();
    assert_eq!(ct.len(), 2, "the new flow's two entries: {ct:?}");
    assert!(ct.iter().all(|(_, v)| v.flags & CT_F_CLOSING == 0));
}

#[test]
fn a_new_flow_is_reported_only_while_someone_listens() {
    privileged!("a_new_flow_is_reported_only_while_someone_listens");
    let fx = Fixture::new();
    let f = outside(NODE, NODE_PORT, Protocol::Tcp);
    fx.dp
        .install(&f, &[backend("10.244.0.5", true)], &[0; 7], None)
        .unwrap();
    // Nobody listens: translated, counted, not reported.
    fx.coming_in(t(CLIENT, 40000, NODE, NODE_PORT), TCP, SYN);
    let mut s = fx.dp.source.lock().unwrap();
    assert!(s.as_mut().unwrap().drain().is_empty(), "no event while off");
    drop(s);
    // On (drain_translations turns them on): one event per new flow, none for
    // the flow's later packets.
    assert!(fx.dp.drain_translations().is_empty());
    fx.coming_in(t(CLIENT, 40001, NODE, NODE_PORT), TCP, SYN);
    fx.coming_in(t(CLIENT, 40001, NODE, NODE_PORT), TCP, ACK);
    let got = fx.dp.drain_translations();
    assert_eq!(got.len(), 1, "{got:?}");
    let e = &got[0];
    assert_eq!(e.kind, TranslationKind::Nat);
    assert_eq!(e.proto, Protocol::Tcp);
    assert_eq!(e.client, Some(format!("{CLIENT}:40001").parse().unwrap()));
    assert_eq!(e.frontend, format!("{NODE}:{NODE_PORT}").parse().unwrap());
    assert_eq!(e.backend, "10.244.0.5:8080".parse().unwrap());
    assert_eq!((e.pid, e.netns_cookie, e.cgroup_id), (0, 0, 0));
    assert_eq!(fx.count(ServiceReason::EventsLost), 0);
}

#[test]
fn a_flow_keeps_its_backend_and_flows_spread_over_the_table() {
    privileged!("a_flow_keeps_its_backend_and_flows_spread_over_the_table");
    let fx = Fixture::new();
    let f = outside("192.0.2.1", 80, Protocol::Tcp);
    let bs = [
        backend("10.244.0.5", true),
        backend("10.244.0.6", true),
        backend("10.244.0.7", true),
    ];
    let table: Vec<u32> = (0..251).map(|i| i % 3).collect();
    fx.dp.install(&f, &bs, &table, None).unwrap();
    let mut per_backend: BTreeMap<IpAddr, u32> = BTreeMap::new();
    for port in 20000..20300 {
        let run = fx.coming_in(t(CLIENT, port, "192.0.2.1", 80), TCP, SYN);
        let first = tuple_of(&run).dst;
        // The same flow's next packet: the same backend.
        let again = tuple_of(&fx.coming_in(t(CLIENT, port, "192.0.2.1", 80), TCP, ACK)).dst;
        assert_eq!(again, first, "port {port}");
        *per_backend.entry(first).or_default() += 1;
    }
    assert_eq!(per_backend.len(), 3, "{per_backend:?}");
    assert!(per_backend.values().all(|&n| n >= 60), "{per_backend:?}");
    assert_eq!(fx.count(ServiceReason::NatNew), 300);
    assert_eq!(fx.count(ServiceReason::NatEstablished), 300);
    // Each backend counted the new flows it was given, not their later packets.
    let counted: BTreeMap<IpAddr, u32> = fx
        .dp
        .backend_connections()
        .unwrap()
        .into_iter()
        .filter(|(g, _, _)| *g == f)
        .map(|(_, b, n)| (b.addr, n as u32))
        .collect();
    assert_eq!(counted, per_backend);

    // The table changes: every slot names .7. Tracked flows keep their backend
    // while it exists.
    let to = |port| t(CLIENT, port, "192.0.2.1", 80);
    let on_5 = (20000..20300)
        .find(|&p| tuple_of(&fx.coming_in(to(p), TCP, ACK)).dst == ip("10.244.0.5"))
        .unwrap();
    fx.dp.install(&f, &bs, &[2; 251], None).unwrap();
    assert_eq!(
        tuple_of(&fx.coming_in(to(on_5), TCP, ACK)).dst,
        ip("10.244.0.5")
    );
    // A new flow takes the new table.
    assert_eq!(
        tuple_of(&fx.coming_in(to(30000), TCP, SYN)).dst,
        ip("10.244.0.7")
    );
    // .5 leaves: its flows are new flows again, on the table as it is.
    fx.dp.install(&f, &bs[1..], &[1; 251], None).unwrap();
    assert_eq!(
        tuple_of(&fx.coming_in(to(on_5), TCP, ACK)).dst,
        ip("10.244.0.7")
    );
}

#[test]
fn a_tracked_flow_never_follows_its_backends_id_to_another_address() {
    privileged!("a_tracked_flow_never_follows_its_backends_id_to_another_address");
    let fx = Fixture::new();
    // A host port's frontend: its container is deleted and another added, so the
    // frontend is removed and made again, taking the same ids for a backend of
    // another address.
    let f = outside(NODE, 15353, Protocol::Udp);
    let flow = t(CLIENT, 40000, NODE, 15353);
    fx.dp
        .install(&f, &[backend("10.244.0.5", true)], &[0; 7], None)
        .unwrap();
    assert_eq!(tuple_of(&fx.coming_in(flow, UDP, 0)).dst, ip("10.244.0.5"));
    assert!(fx.dp.remove(&f).unwrap());
    fx.dp
        .install(&f, &[backend("10.244.0.9", true)], &[0; 7], None)
        .unwrap();
    assert_eq!(
        tuple_of(&fx.coming_in(flow, UDP, 0)).dst,
        ip("10.244.0.9"),
        "the flow is new again, not sent on to the address that is gone"
    );
    assert_eq!(fx.count(ServiceReason::NatNew), 2);
    assert_eq!(fx.count(ServiceReason::NatEstablished), 0);
    // Its next packet follows the new entry.
    assert_eq!(tuple_of(&fx.coming_in(flow, UDP, 0)).dst, ip("10.244.0.9"));
    assert_eq!(fx.count(ServiceReason::NatEstablished), 1);
}

#[test]
fn a_remote_backend_is_snatted_to_the_node_and_its_reply_routed_back() {
    privileged!("a_remote_backend_is_snatted_to_the_node_and_its_reply_routed_back");
    let fx = Fixture::new();
    let f = outside(NODE, NODE_PORT, Protocol::Tcp);
    fx.dp
        .install(&f, &[backend("10.244.1.9", false)], &[0; 7], None)
        .unwrap();
    let run = fx.coming_in(t(CLIENT, 40000, NODE, NODE_PORT), TCP, SYN);
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "routed by the program");
    let out = tuple_of(&run);
    assert_eq!(out.src, ip(NODE), "SNATed to the node");
    assert!(
        SNAT_PORTS.contains(&u32::from(out.sport)),
        "a SNAT port: {}",
        out.sport
    );
    assert_eq!((out.dst, out.dport), (ip("10.244.1.9"), 8080));
    assert_eq!(
        run.packet[packet::DST_MAC],
        ROUTER_MAC,
        "to the route's next hop"
    );
    assert_eq!(run.packet[packet::IPV4_TTL], 63, "one hop");
    assert_eq!(fx.count(ServiceReason::NatNewSnat), 1);

    // The reply comes back to the SNAT port: to the client, from the node port.
    let reply = fx.coming_in(t("10.244.1.9", 8080, NODE, out.sport), TCP, SYN | ACK);
    assert_eq!(reply.verdict, TC_ACT_REDIRECT);
    assert_eq!(tuple_of(&reply), t(NODE, NODE_PORT, CLIENT, 40000));
    assert_eq!(fx.count(ServiceReason::NatReply), 1);
    // The egress program leaves what the ingress one routed alone.
    let leaving = fx.leaving(t(NODE, NODE_PORT, CLIENT, 40000), TCP, ACK);
    assert_eq!(tuple_of(&leaving), t(NODE, NODE_PORT, CLIENT, 40000));

    // A second client flow takes another port.
    let second = tuple_of(&fx.coming_in(t(CLIENT, 40001, NODE, NODE_PORT), TCP, SYN));
    assert_ne!(second.sport, out.sport);
    assert!(fx.ct().iter().all(|(_, v)| v.flags & CT_F_SNAT != 0));

    // Without a SNAT address of the family, a remote backend cannot be reached:
    // dropped and counted, not sent with an address the reply cannot come back to.
    fx.dp
        .lock()
        .maps
        .nat_config
        .set(0, NatConfig::default(), 0)
        .unwrap();
    let run = fx.coming_in(t(CLIENT, 40002, NODE, NODE_PORT), TCP, SYN);
    assert_eq!(run.verdict, 2, "TC_ACT_SHOT");
    assert_eq!(fx.count(ServiceReason::NatNoRoute), 1);
}

#[test]
fn what_is_no_service_is_untouched_and_a_frontend_without_backends_goes_to_the_stack() {
    privileged!(
        "what_is_no_service_is_untouched_and_a_frontend_without_backends_goes_to_the_stack"
    );
    let fx = Fixture::new();
    fx.dp
        .install(
            &outside(NODE, NODE_PORT, Protocol::Tcp),
            &[backend("10.244.0.5", true)],
            &[0],
            None,
        )
        .unwrap();
    fx.dp
        .install(&outside(NODE, 30090, Protocol::Tcp), &[], &[], None)
        .unwrap();
    let untouched = [
        frame(t(CLIENT, 40000, NODE, 22), TCP, SYN),
        frame(t(CLIENT, 40000, NODE, NODE_PORT), UDP, 0),
        frame(t(CLIENT, 40000, "10.0.0.3", NODE_PORT), TCP, SYN),
        frame(t("fd00::101", 40000, "fd00::1", NODE_PORT), TCP, SYN),
        frame(t(CLIENT, 40000, NODE, 30090), TCP, SYN),
        packet::ethernet([0xff; 6], [0xbb; 6], packet::ETH_P_ARP, &[0; 28]),
    ];
    for f in &untouched {
        for program in ["strait_svc_from_net", "strait_svc_to_net"] {
            let run = fx.run(program, f);
            assert_eq!(run.verdict, NEXT, "{program}");
            assert_eq!(&run.packet, f, "{program}: not a byte changed");
        }
    }
    assert_eq!(fx.count(ServiceReason::NatNoBackend), 1, "30090, coming in");
    for r in [
        ServiceReason::NatNew,
        ServiceReason::NatNewSnat,
        ServiceReason::NatReply,
        ServiceReason::NatEstablished,
    ] {
        assert_eq!(fx.count(r), 0, "{r:?}");
    }
    assert!(fx.ct().is_empty());
}

#[test]
fn ipv6_frontends_are_translated_the_same_way() {
    privileged!("ipv6_frontends_are_translated_the_same_way");
    let fx = Fixture::new();
    let f = outside("fd00::1", NODE_PORT, Protocol::Udp);
    let b = Backend {
        addr: ip("fd00:244::5"),
        port: 8080,
        local: true,
    };
    fx.dp.install(&f, &[b], &[0; 3], None).unwrap();
    let run = fx.coming_in(t("fd00::101", 40000, "fd00::1", NODE_PORT), UDP, 0);
    assert_eq!(run.verdict, NEXT);
    assert_eq!(tuple_of(&run), t("fd00::101", 40000, "fd00:244::5", 8080));
    let reply = fx.leaving(t("fd00:244::5", 8080, "fd00::101", 40000), UDP, 0);
    assert_eq!(
        tuple_of(&reply),
        t("fd00::1", NODE_PORT, "fd00::101", 40000)
    );
}

#[test]
fn the_programs_attach_to_a_device_once_and_detach() {
    privileged!("the_programs_attach_to_a_device_once_and_detach");
    let fx = Fixture::new();
    // tcx attaches in the calling thread's namespace: the test's, on a thread of
    // its own, which needs the datapath by value.
    let ns = fx.net.ns();
    let attached = || {
        ns.run_in(|| Ok(ServicesDatapath::attached_net(NET.name)))
            .unwrap()
            .unwrap()
    };
    let attach = |dp: &std::sync::Arc<ServicesDatapath>| {
        let dp = dp.clone();
        ns.run_in(move || Ok(dp.attach_net(NET.name, NET.ifindex, Some(ip4(NODE)), None)))
            .unwrap()
            .unwrap()
    };
    let first = std::sync::Arc::new(ServicesDatapath::load(fx._bpffs.path()).unwrap());
    for _ in 0..2 {
        attach(&first);
        let names: Vec<&str> = attached().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["strait_svc_to_net", "strait_svc_from_net"]);
    }
    // A second agent's copy replaces the first in place.
    let second = std::sync::Arc::new(ServicesDatapath::load(fx._bpffs.path()).unwrap());
    let before = attached();
    attach(&second);
    let after = attached();
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|a| !before.contains(a)),
        "{before:?} {after:?}"
    );
    let n = ns
        .run_in(|| Ok(ServicesDatapath::detach_net(NET.name, NET.ifindex)))
        .unwrap()
        .unwrap();
    assert_eq!(n, 2);
    assert!(attached().is_empty());
}

/// The fabric device gets the reply translation alone, once however often it is
/// attached; detach takes it off.
#[test]
fn the_reply_translation_attaches_alone_to_a_fabric_device() {
    privileged!("the_reply_translation_attaches_alone_to_a_fabric_device");
    let fx = Fixture::new();
    let ns = fx.net.ns();
    let dp = std::sync::Arc::new(ServicesDatapath::load(fx._bpffs.path()).unwrap());
    for _ in 0..2 {
        let dp = dp.clone();
        ns.run_in(move || Ok(dp.attach_reply_net(NET.name, NET.ifindex)))
            .unwrap()
            .unwrap();
        let names: Vec<&str> = ns
            .run_in(|| Ok(ServicesDatapath::attached_net(NET.name)))
            .unwrap()
            .unwrap()
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(names, ["strait_svc_to_net"]);
    }
    let n = ns
        .run_in(|| Ok(ServicesDatapath::detach_net(NET.name, NET.ifindex)))
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);
}

fn ip4(s: &str) -> std::net::Ipv4Addr {
    s.parse().unwrap()
}
