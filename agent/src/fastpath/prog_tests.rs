//! The fast path's programs run by the kernel (`BPF_PROG_TEST_RUN`, see
//! `crate::bpf_test`): the embedded object loaded as the agent loads it, its maps
//! filled by the agent's own map code, frames built here run through
//! `strait_from_ep` and `strait_from_fab`, and for each the verdict, the bytes as the
//! program left them and the one counter that rose. Needs root: without it each
//! test prints a SKIP line.
//!
//! The runs happen in a namespace of the test's with devices standing for an
//! endpoint's veth, the fabric device (a smaller MTU, as vxlan's) and the device the
//! packet comes in on: `bpf_check_mtu` looks the target up there.

use std::net::IpAddr;

use super::*;
use crate::bpf_test::packet::{self, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6};
use crate::bpf_test::{Device, Run, SkbContext, TC_ACT_OK, TC_ACT_REDIRECT, TestNet, privileged};

/// The device packets come in on (a container's veth, or the fabric device).
const IN: Device = Device {
    name: "in0",
    ifindex: 30,
    mtu: 1500,
};
/// The host end of a local endpoint's veth.
const EP: Device = Device {
    name: "ep0",
    ifindex: 10,
    mtu: 1500,
};
/// The fabric device, with vxlan's MTU.
const FABRIC: Device = Device {
    name: "fab0",
    ifindex: 20,
    mtu: 1450,
};

const EP_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0x01, 0x00, 0x07];
const EP_HOST_MAC: [u8; 6] = [0xee, 0x00, 0x00, 0x00, 0x00, 0x07];
const FABRIC_MAC: [u8; 6] = [0x0e, 0xfa, 0xb0, 0x00, 0x00, 0x01];
const VTEP_MAC: [u8; 6] = [0x0e, 0x7e, 0x90, 0x00, 0x00, 0x02];
/// What a sending container addresses its frames with (its gateway, itself).
const TO_GATEWAY: [u8; 6] = [0xee, 0x00, 0x00, 0x00, 0x00, 0x02];
const FROM_SENDER: [u8; 6] = [0x0a, 0x58, 0x0a, 0x01, 0x00, 0x02];

const SENDER_V4: &str = "10.1.0.2";
const SENDER_V6: &str = "fd00:1::2";
const LOCAL_V4: &str = "10.1.0.7";
const LOCAL_V6: &str = "fd00:1::7";
const REMOTE_V4: &str = "10.2.0.9";
const REMOTE_V6: &str = "fd00:2::9";
const REMOTE_BLOCK_V4: &str = "10.2.0.0/26";
const REMOTE_BLOCK_V6: &str = "fd00:2::/122";

/// The loaded programs with one local endpoint and two remote blocks, and the
/// namespace they run in.
struct Fixture {
    fp: FastPath,
    net: TestNet,
}

impl Fixture {
    fn new() -> Self {
        let fp = FastPath::load(FastPathMode::On).expect("loading the fast path's object");
        {
            let mut l = fp.lock();
            l.maps
                .write_config(true, Some((FABRIC.ifindex, FABRIC_MAC)))
                .unwrap();
            let ips: Vec<IpAddr> = [LOCAL_V4, LOCAL_V6]
                .iter()
                .map(|ip| ip.parse().unwrap())
                .collect();
            l.maps
                .add_endpoint(EP.ifindex, &ips, EP_MAC, EP_HOST_MAC)
                .unwrap();
            for block in [REMOTE_BLOCK_V4, REMOTE_BLOCK_V6] {
                l.maps.add_tunnel(block.parse().unwrap(), VTEP_MAC).unwrap();
            }
        }
        Self {
            fp,
            net: TestNet::new(&[IN, EP, FABRIC]),
        }
    }

    fn write_config(&self, enabled: bool, fabric: Option<(u32, [u8; 6])>) {
        self.fp.lock().maps.write_config(enabled, fabric).unwrap();
    }

    /// Runs `program` over `frame` as if it came in on `ingress`.
    fn run_from(&self, program: &'static str, frame: &[u8], ingress: u32) -> Run {
        let mut l = self.fp.lock();
        let prog = classifier(&mut l.ebpf, program).unwrap();
        let fd = prog.fd().expect("the program is loaded");
        let ctx = SkbContext {
            ingress_ifindex: ingress,
            ifindex: IN.ifindex,
        };
        self.net.run(fd, frame, ctx)
    }

    fn run(&self, program: &'static str, frame: &[u8]) -> Run {
        self.run_from(program, frame, IN.ifindex)
    }

    /// [`Fixture::run`] for a frame the kernel may refuse to run.
    fn try_run(&self, program: &'static str, frame: &[u8]) -> std::io::Result<Run> {
        let mut l = self.fp.lock();
        let prog = classifier(&mut l.ebpf, program).unwrap();
        let fd = prog.fd().expect("the program is loaded");
        let ctx = SkbContext {
            ingress_ifindex: IN.ifindex,
            ifindex: IN.ifindex,
        };
        self.net.try_run(fd, frame, ctx)
    }

    /// Asserts that the counters are `counted` times `reason` and nothing else.
    fn assert_counted(&self, reason: Reason, counted: u64) {
        let stats = self.fp.lock().maps.stats().unwrap();
        for r in Reason::ALL {
            let want = if r == reason { counted } else { 0 };
            assert_eq!(stats.get(r), want, "counter {}", r.name());
        }
    }
}

fn v4_frame(dst: &str, ttl: u8, len: usize) -> Vec<u8> {
    let ip = packet::ipv4(SENDER_V4.parse().unwrap(), dst.parse().unwrap(), ttl, len);
    packet::ethernet(TO_GATEWAY, FROM_SENDER, ETH_P_IP, &ip)
}

fn v6_frame(dst: &str, hop_limit: u8, payload_len: usize) -> Vec<u8> {
    let ip = packet::ipv6(
        SENDER_V6.parse().unwrap(),
        dst.parse().unwrap(),
        hop_limit,
        payload_len,
    );
    packet::ethernet(TO_GATEWAY, FROM_SENDER, ETH_P_IPV6, &ip)
}

/// `frame` as forwarding leaves it on the next hop: new MACs, TTL one less and the
/// header checksum computed afresh.
fn forwarded_v4(frame: &[u8], dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[packet::DST_MAC].copy_from_slice(&dst_mac);
    f[packet::SRC_MAC].copy_from_slice(&src_mac);
    f[packet::IPV4_TTL] -= 1;
    f[packet::IPV4_CHECK].copy_from_slice(&[0, 0]);
    let check = !packet::ones_complement_sum(&f[packet::IPV4_HEADER]);
    f[packet::IPV4_CHECK].copy_from_slice(&check.to_be_bytes());
    f
}

fn forwarded_v6(frame: &[u8], dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[packet::DST_MAC].copy_from_slice(&dst_mac);
    f[packet::SRC_MAC].copy_from_slice(&src_mac);
    f[packet::IPV6_HOP_LIMIT] -= 1;
    f
}

/// Asserts the program handed `frame` to the stack untouched.
fn assert_passed(run: &Run, frame: &[u8]) {
    assert_eq!(run.verdict, TC_ACT_OK, "verdict");
    assert_eq!(
        run.packet, frame,
        "a packet handed to the stack is left as it was"
    );
}

macro_rules! privileged {
    ($name:expr) => {
        if !privileged($name) {
            return;
        }
    };
}

#[test]
fn ipv4_to_a_local_endpoint_is_redirected_to_its_veth_peer() {
    privileged!("ipv4_to_a_local_endpoint_is_redirected_to_its_veth_peer");
    let f = Fixture::new();
    let frame = v4_frame(LOCAL_V4, 64, 84);
    let run = f.run(FROM_ENDPOINT, &frame);
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    assert_eq!(run.packet, forwarded_v4(&frame, EP_MAC, EP_HOST_MAC));
    assert_eq!(run.packet[packet::IPV4_TTL], 63);
    assert!(packet::ipv4_checksum_ok(&run.packet[packet::IPV4_HEADER]));
    f.assert_counted(Reason::FwdEndpoint, 1);
    // From the fabric the same: other nodes' containers reach this one.
    let run = f.run(FROM_FABRIC, &frame);
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    assert_eq!(run.packet, forwarded_v4(&frame, EP_MAC, EP_HOST_MAC));
    f.assert_counted(Reason::FwdEndpoint, 2);
    let status = f.fp.status();
    assert_eq!((status.to_endpoint, status.to_stack), (2, 0));
    assert_eq!(status.by_reason["fwd_endpoint"], 2);
}

#[test]
fn ipv6_to_a_local_endpoint_is_redirected_to_its_veth_peer() {
    privileged!("ipv6_to_a_local_endpoint_is_redirected_to_its_veth_peer");
    let f = Fixture::new();
    let frame = v6_frame(LOCAL_V6, 64, 64);
    let run = f.run(FROM_ENDPOINT, &frame);
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    assert_eq!(run.packet, forwarded_v6(&frame, EP_MAC, EP_HOST_MAC));
    assert_eq!(run.packet[packet::IPV6_HOP_LIMIT], 63);
    f.assert_counted(Reason::FwdEndpoint, 1);
    let run = f.run(FROM_FABRIC, &frame);
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    f.assert_counted(Reason::FwdEndpoint, 2);
}

#[test]
fn a_remote_block_goes_into_the_fabric_to_its_vtep() {
    privileged!("a_remote_block_goes_into_the_fabric_to_its_vtep");
    let f = Fixture::new();
    let frame = v4_frame(REMOTE_V4, 64, 84);
    let run = f.run(FROM_ENDPOINT, &frame);
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    assert_eq!(run.packet, forwarded_v4(&frame, VTEP_MAC, FABRIC_MAC));
    assert!(packet::ipv4_checksum_ok(&run.packet[packet::IPV4_HEADER]));
    f.assert_counted(Reason::FwdFabric, 1);
    let frame = v6_frame(REMOTE_V6, 64, 64);
    let run = f.run(FROM_ENDPOINT, &frame);
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    assert_eq!(run.packet, forwarded_v6(&frame, VTEP_MAC, FABRIC_MAC));
    f.assert_counted(Reason::FwdFabric, 2);
    assert_eq!(f.fp.status().to_fabric, 2);
}

#[test]
fn what_came_from_the_fabric_never_goes_back_into_it() {
    privileged!("what_came_from_the_fabric_never_goes_back_into_it");
    let f = Fixture::new();
    let frame = v4_frame(REMOTE_V4, 64, 84);
    assert_passed(&f.run(FROM_FABRIC, &frame), &frame);
    f.assert_counted(Reason::PassNoEntry, 1);
}

#[test]
fn a_destination_in_no_map_goes_to_the_stack() {
    privileged!("a_destination_in_no_map_goes_to_the_stack");
    let f = Fixture::new();
    for frame in [
        v4_frame("192.0.2.1", 64, 84),
        v6_frame("2001:db8::1", 64, 64),
    ] {
        assert_passed(&f.run(FROM_ENDPOINT, &frame), &frame);
    }
    f.assert_counted(Reason::PassNoEntry, 2);
    // Without a fabric device the tunnel map is not asked.
    f.write_config(true, None);
    let frame = v4_frame(REMOTE_V4, 64, 84);
    assert_passed(&f.run(FROM_ENDPOINT, &frame), &frame);
    f.assert_counted(Reason::PassNoEntry, 3);
    let status = f.fp.status();
    assert_eq!(status.to_stack, 3);
    assert_eq!(status.by_reason["pass_no_entry"], 3);
}

#[test]
fn an_expiring_ttl_goes_to_the_stack_for_its_icmp() {
    privileged!("an_expiring_ttl_goes_to_the_stack_for_its_icmp");
    let f = Fixture::new();
    for frame in [
        v4_frame(LOCAL_V4, 1, 84),
        v4_frame(REMOTE_V4, 0, 84),
        v6_frame(LOCAL_V6, 1, 64),
    ] {
        assert_passed(&f.run(FROM_ENDPOINT, &frame), &frame);
    }
    f.assert_counted(Reason::PassTtl, 3);
    // Handed over before the lookup: not in the old total.
    assert_eq!(f.fp.status().to_stack, 0);
    // TTL 2 still leaves with 1.
    let frame = v4_frame(LOCAL_V4, 2, 84);
    let run = f.run(FROM_ENDPOINT, &frame);
    assert_eq!(run.verdict, TC_ACT_REDIRECT);
    assert_eq!(run.packet[packet::IPV4_TTL], 1);
}

#[test]
fn what_is_not_ip_goes_to_the_stack() {
    privileged!("what_is_not_ip_goes_to_the_stack");
    let f = Fixture::new();
    // An ARP request for the local endpoint's address.
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&FROM_SENDER);
    arp.extend_from_slice(&[10, 1, 0, 2]);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&[10, 1, 0, 7]);
    let frame = packet::ethernet([0xff; 6], FROM_SENDER, ETH_P_ARP, &arp);
    assert_passed(&f.run(FROM_ENDPOINT, &frame), &frame);
    assert_passed(&f.run(FROM_FABRIC, &frame), &frame);
    f.assert_counted(Reason::PassNotIp, 2);
}

#[test]
fn too_big_for_the_device_it_would_leave_by_goes_to_the_stack() {
    privileged!("too_big_for_the_device_it_would_leave_by_goes_to_the_stack");
    let f = Fixture::new();
    // 1500 bytes fit the endpoint's veth but not the fabric's 1450.
    let frame = v4_frame(REMOTE_V4, 64, 1500);
    assert_passed(&f.run(FROM_ENDPOINT, &frame), &frame);
    let frame = v6_frame(REMOTE_V6, 64, 1460);
    assert_passed(&f.run(FROM_ENDPOINT, &frame), &frame);
    f.assert_counted(Reason::PassMtu, 2);
    assert_eq!(f.fp.status().to_stack, 2);
    // Exactly the fabric's MTU goes.
    let frame = v4_frame(REMOTE_V4, 64, 1450);
    assert_eq!(f.run(FROM_ENDPOINT, &frame).verdict, TC_ACT_REDIRECT);
    let frame = v4_frame(LOCAL_V4, 64, 1500);
    assert_eq!(f.run(FROM_ENDPOINT, &frame).verdict, TC_ACT_REDIRECT);
}

#[test]
fn a_packet_never_goes_back_out_of_the_device_it_came_in_on() {
    privileged!("a_packet_never_goes_back_out_of_the_device_it_came_in_on");
    let f = Fixture::new();
    let frame = v4_frame(LOCAL_V4, 64, 84);
    assert_passed(&f.run_from(FROM_ENDPOINT, &frame, EP.ifindex), &frame);
    f.assert_counted(Reason::PassSameDevice, 1);
    assert_eq!(f.fp.status().to_stack, 1);
}

#[test]
fn headers_cut_short_go_to_the_stack() {
    privileged!("headers_cut_short_go_to_the_stack");
    let f = Fixture::new();
    let v4 = v4_frame(LOCAL_V4, 64, 84);
    let v6 = v6_frame(LOCAL_V6, 64, 0);
    // An Ethernet header and part of an IP header.
    let mut ran = 0;
    for frame in [&v4[..packet::ETH_HLEN + 19], &v6[..packet::ETH_HLEN + 39]] {
        match f.try_run(FROM_ENDPOINT, frame) {
            Ok(run) => {
                assert_passed(&run, frame);
                ran += 1;
            }
            // Recent kernels (stable 6.18 among them) refuse an IPv4 or IPv6 frame
            // shorter than its header before any program sees it; on those the
            // program's check cannot be reached from a test run, only from the wire.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => eprintln!(
                "NOTE: headers_cut_short_go_to_the_stack: this kernel refuses a {}-byte IP \
                 frame in BPF_PROG_TEST_RUN; STRAIT_PASS_SHORT not exercised",
                frame.len()
            ),
            Err(e) => panic!("BPF_PROG_TEST_RUN: {e}"),
        }
    }
    f.assert_counted(Reason::PassShort, ran);
}

#[test]
fn switched_off_every_packet_goes_to_the_stack() {
    privileged!("switched_off_every_packet_goes_to_the_stack");
    let f = Fixture::new();
    f.write_config(false, Some((FABRIC.ifindex, FABRIC_MAC)));
    for frame in [v4_frame(LOCAL_V4, 64, 84), v6_frame(REMOTE_V6, 64, 64)] {
        assert_passed(&f.run(FROM_ENDPOINT, &frame), &frame);
        assert_passed(&f.run(FROM_FABRIC, &frame), &frame);
    }
    f.assert_counted(Reason::PassDisabled, 4);
    assert_eq!(f.fp.status().to_stack, 0);
}

#[test]
fn a_local_endpoints_ingress_policy_decides_before_the_fast_path_delivers() {
    use crate::policy::datapath::{PolicyDatapath, PrivateBpffs};
    use crate::policy::dataplane::Dataplane;
    use strait_policy::ir::Protocol;
    use strait_policy::tables::{Cell, EndpointTables, Segment};

    privileged!("a_local_endpoints_ingress_policy_decides_before_the_fast_path_delivers");
    let bpffs = PrivateBpffs::new(&std::env::temp_dir(), "strait-fpt").unwrap();
    let policy = PolicyDatapath::load(bpffs.path()).unwrap();
    let fp = FastPath::load_with_bpf_dir(FastPathMode::On, bpffs.path()).unwrap();
    {
        let mut l = fp.lock();
        l.maps
            .write_config(true, Some((FABRIC.ifindex, FABRIC_MAC)))
            .unwrap();
        let ips: Vec<IpAddr> = [LOCAL_V4, LOCAL_V6]
            .iter()
            .map(|ip| ip.parse().unwrap())
            .collect();
        l.maps
            .add_endpoint(EP.ifindex, &ips, EP_MAC, EP_HOST_MAC)
            .unwrap();
    }
    let f = Fixture {
        fp,
        net: TestNet::new(&[IN, EP, FABRIC]),
    };
    // The local endpoint takes UDP on port 0x0203 (what the frames carry) from the
    // sender's identity, nothing else.
    let sender = 300;
    let ipcache = [
        (format!("{SENDER_V4}/32"), sender),
        (format!("{SENDER_V6}/128"), sender),
    ]
    .into_iter()
    .map(|(n, i)| (n.parse().unwrap(), i))
    .collect();
    policy.sync_ipcache(&ipcache).unwrap();
    let mut t = EndpointTables::default();
    t.ingress.isolated = true;
    let allow = Cell {
        decision: None,
        log: None,
        allow: Some(1),
    };
    t.ingress.identities.insert(
        (sender, Protocol::UDP),
        vec![Segment {
            first: 0x0203,
            last: 0x0203,
            cell: allow,
        }],
    );
    policy.install(EP.ifindex, 400, &t).unwrap();
    let frame = v4_frame(LOCAL_V4, 64, 84);
    assert_eq!(f.run(FROM_ENDPOINT, &frame).verdict, TC_ACT_REDIRECT);
    assert_eq!(
        f.run(FROM_FABRIC, &v6_frame(LOCAL_V6, 64, 64)).verdict,
        TC_ACT_REDIRECT
    );
    // Denied: dropped rather than redirected past the veth's policy hook.
    t.ingress.identities.clear();
    policy.install(EP.ifindex, 400, &t).unwrap();
    let shot = 2;
    assert_eq!(
        f.run(FROM_ENDPOINT, &v4_frame(LOCAL_V4, 64, 84)).verdict,
        shot
    );
    assert_eq!(
        f.run(FROM_FABRIC, &v6_frame(LOCAL_V6, 64, 64)).verdict,
        shot
    );
    let stats = f.fp.lock().maps.stats().unwrap();
    assert_eq!(
        (
            stats.get(Reason::FwdEndpoint),
            stats.get(Reason::DropPolicy)
        ),
        (2, 2)
    );
    assert_eq!(f.fp.status().by_reason["drop_policy"], 2);
    let events = policy.drain_events();
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(
        events[2..]
            .iter()
            .all(|e| !e.allowed && e.ifindex == EP.ifindex)
    );
    // Traffic to elsewhere is not the local endpoint's to judge.
    assert_eq!(
        f.run(FROM_FABRIC, &v4_frame(REMOTE_V4, 64, 84)).verdict,
        TC_ACT_OK
    );
}
