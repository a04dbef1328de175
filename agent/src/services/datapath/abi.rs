//! The services datapath's ABI on the Rust side: program and map names, the map
//! key and value layouts and the reasons the programs count under, mirroring the
//! services section of `ebpf/include/strait/abi.h` and
//! `ebpf/include/strait/services.h`. The tests read the services object's BTF
//! (`crate::bpf_test::btf`) and compare every struct's size and members, the
//! reasons' values and the map and program names with this file, as
//! `policy::datapath::abi` does for policy.

/// The kernel's `enum bpf_attach_type` values of the hooks the programs go on.
pub(crate) const ATTACH_INET4_CONNECT: u32 = 10;
pub(crate) const ATTACH_INET6_CONNECT: u32 = 11;
pub(crate) const ATTACH_UDP4_SENDMSG: u32 = 14;
pub(crate) const ATTACH_UDP6_SENDMSG: u32 = 15;
pub(crate) const ATTACH_UDP4_RECVMSG: u32 = 19;
pub(crate) const ATTACH_UDP6_RECVMSG: u32 = 20;
pub(crate) const ATTACH_INET4_GETPEERNAME: u32 = 29;
pub(crate) const ATTACH_INET6_GETPEERNAME: u32 = 30;

/// Every program (its name in the object, which fits the kernel's 15 bytes, so a
/// query of a cgroup's programs shows it whole) and the hook it goes on (the
/// object's `SEC("cgroup/…")` says the same to aya; a number that is not the
/// program's makes the kernel refuse the attach). In attach order: the programs
/// that show the service address back first, so no socket is translated before
/// its replies can be; detached in the reverse order.
pub(crate) const PROGRAMS: [(&str, u32); 8] = [
    ("strait_recvmsg4", ATTACH_UDP4_RECVMSG),
    ("strait_recvmsg6", ATTACH_UDP6_RECVMSG),
    ("strait_getpeer4", ATTACH_INET4_GETPEERNAME),
    ("strait_getpeer6", ATTACH_INET6_GETPEERNAME),
    ("strait_connect4", ATTACH_INET4_CONNECT),
    ("strait_connect6", ATTACH_INET6_CONNECT),
    ("strait_sendmsg4", ATTACH_UDP4_SENDMSG),
    ("strait_sendmsg6", ATTACH_UDP6_SENDMSG),
];

/// The packet-level programs (`services_tc.c`) and the tcx hook of the underlay
/// interface each goes on: the reply translation first, so no flow is translated
/// before its replies can be.
pub(crate) const TC_PROGRAMS: [(&str, TcHook); 2] = [
    ("strait_svc_to_net", TcHook::Egress),
    ("strait_svc_from_net", TcHook::Ingress),
];

pub(crate) use crate::policy::datapath::sys::Hook as TcHook;

/// Map names (`services.h`), also their pin names under the bpf dir.
pub(crate) const FRONTENDS: &str = "strait_svc_frontends";
pub(crate) const SLOTS: &str = "strait_svc_slots";
pub(crate) const BACKENDS: &str = "strait_svc_backends";
pub(crate) const REVNAT: &str = "strait_svc_revnat";
pub(crate) const AFFINITY: &str = "strait_svc_affinity";
pub(crate) const STATS: &str = "strait_svc_stats";
pub(crate) const CT: &str = "strait_svc_ct";
pub(crate) const NAT_CONFIG: &str = "strait_svc_nat_config";
pub(crate) const BACKEND_STATS: &str = "strait_svc_backend_stats";
pub(crate) const EVENTS: &str = "strait_svc_events";
pub(crate) const MONITOR: &str = "strait_svc_monitor";

pub(crate) const MAPS: [&str; 11] = [
    FRONTENDS,
    SLOTS,
    BACKENDS,
    REVNAT,
    AFFINITY,
    STATS,
    CT,
    NAT_CONFIG,
    BACKEND_STATS,
    EVENTS,
    MONITOR,
];

/// `STRAIT_SVC_SCOPE_LOCAL`, `STRAIT_SVC_SCOPE_OUTSIDE`.
pub(crate) const SCOPE_LOCAL: u8 = 0;
pub(crate) const SCOPE_OUTSIDE: u8 = 1;
/// `STRAIT_SVC_BE_F_LOCAL`.
pub(crate) const BE_F_LOCAL: u8 = 0x1;
/// `STRAIT_SVC_CT_F_SNAT`.
#[cfg(test)]
pub(crate) const CT_F_SNAT: u8 = 0x1;
/// `STRAIT_SVC_CT_F_CLOSING`: a FIN or RST was seen; a SYN on the tuple is a new flow.
#[cfg(test)]
pub(crate) const CT_F_CLOSING: u8 = 0x2;
/// `STRAIT_SVC_SNAT_PORT_MIN` and `STRAIT_SVC_SNAT_PORTS`.
#[cfg(test)]
pub(crate) const SNAT_PORTS: std::ops::Range<u32> = 61000..61000 + 4536;

/// `STRAIT_SVC_F_AFFINITY`.
pub(crate) const F_AFFINITY: u8 = 0x1;
/// `STRAIT_SVC_TABLE_MAX`: the largest Maglev table a frontend may have.
pub const TABLE_MAX: usize = 65521;

/// `struct strait_addr`: IPv4 as IPv4-mapped IPv6.
pub(crate) type AddrKey = [u8; 16];

/// `struct strait_svc_key`: the key of `strait_svc_frontends`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SvcKey {
    pub addr: AddrKey,
    /// Network order.
    pub port: [u8; 2],
    pub proto: u8,
    pub scope: u8,
}

/// `struct strait_svc_frontend`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrontendValue {
    pub id: u32,
    pub table_size: u32,
    pub affinity_secs: u32,
    pub backends: u16,
    pub flags: u8,
    pub pad: u8,
}

/// `struct strait_svc_slot_key`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SlotKey {
    pub id: u32,
    pub slot: u32,
}

/// `struct strait_svc_backend`, by backend id (`frontend id << 16 | index`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BackendValue {
    pub addr: AddrKey,
    /// Network order.
    pub port: [u8; 2],
    pub proto: u8,
    pub flags: u8,
}

/// `struct strait_svc_revnat_key`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RevNatKey {
    pub cookie: u64,
    pub addr: AddrKey,
    pub port: [u8; 2],
    pub pad: [u8; 6],
}

/// `struct strait_svc_revnat`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RevNatValue {
    pub addr: AddrKey,
    pub port: [u8; 2],
    pub pad: [u8; 2],
    pub id: u32,
}

/// `struct strait_svc_affinity_key`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct AffinityKey {
    pub netns_cookie: u64,
    pub id: u32,
    pub pad: u32,
}

/// `struct strait_svc_affinity`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AffinityValue {
    pub last_ns: u64,
    pub backend: u32,
    pub pad: u32,
}

/// `STRAIT_SVC_CT_FORWARD`, `STRAIT_SVC_CT_REPLY` (`enum strait_svc_ct_dir`).
#[cfg(test)]
pub(crate) const CT_FORWARD: u8 = 0;
#[cfg(test)]
pub(crate) const CT_REPLY: u8 = 1;

/// `struct strait_svc_ct_key`: a packet's tuple as it arrives at the tc programs.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CtKey {
    pub src: AddrKey,
    pub dst: AddrKey,
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub dir: u8,
    pub pad: [u8; 2],
}

/// `struct strait_svc_ct`: what a packet matching the key becomes.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CtValue {
    pub src: AddrKey,
    pub dst: AddrKey,
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub backend: u32,
    pub expires: u64,
    pub flags: u8,
    pub pad: [u8; 7],
}

/// `struct strait_svc_nat_config`: the node's SNAT addresses (zero: none).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NatConfig {
    pub snat4: AddrKey,
    pub snat6: AddrKey,
}

/// `enum strait_svc_xlate`: which translation made an event.
pub(crate) const XLATE_CONNECT: u8 = 0;
pub(crate) const XLATE_SENDMSG: u8 = 1;
pub(crate) const XLATE_NAT: u8 = 2;
pub(crate) const XLATE_NAT_SNAT: u8 = 3;

/// `struct strait_svc_event`: one translation, as `strait_svc_events` carries it.
/// Only its layout is used (the reader decodes by offset).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    pub time_ns: u64,
    pub netns_cookie: u64,
    pub cgroup_id: u64,
    pub client: AddrKey,
    pub frontend: AddrKey,
    pub backend: AddrKey,
    pub client_port: [u8; 2],
    pub frontend_port: [u8; 2],
    pub backend_port: [u8; 2],
    pub proto: u8,
    pub kind: u8,
    pub frontend_id: u32,
    pub backend_id: u32,
    pub pid: u32,
    pub pad: u32,
}

// SAFETY: each is `repr(C)` of integers and byte arrays without padding (the sizes
// are the sums of the fields, checked against the object's BTF by the tests below),
// so every byte is initialised and every bit pattern a valid value, which is what
// `Pod` promises aya when it copies them to and from map memory.
#[allow(unsafe_code)]
unsafe impl aya::Pod for SvcKey {}
// SAFETY: as for `SvcKey`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for FrontendValue {}
// SAFETY: as for `SvcKey`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for SlotKey {}
// SAFETY: as for `SvcKey`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for BackendValue {}
// SAFETY: as for `SvcKey`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for RevNatKey {}
// SAFETY: as for `SvcKey`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for RevNatValue {}
// SAFETY: as for `SvcKey`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for AffinityKey {}
// SAFETY: as for `SvcKey`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for AffinityValue {}
// SAFETY: as for `SvcKey`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for CtKey {}
// SAFETY: as for `SvcKey`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for CtValue {}
// SAFETY: as for `SvcKey`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for NatConfig {}

/// `enum strait_svc_reason`: what a connect or send to a service address came to,
/// the index of its counter in `strait_svc_stats`. A connect to anything else is
/// not counted.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceReason {
    /// Sent to a backend.
    Translated = 0,
    /// The frontend has no backend: refused with ECONNREFUSED.
    RefusedNoBackend = 1,
    /// The chosen slot names a backend that is not there: refused with
    /// ECONNREFUSED.
    BackendMissing = 2,
    /// tc: a new flow from outside DNATed to a backend on this node.
    NatNew = 3,
    /// tc: a new flow from outside DNATed and SNATed to a backend elsewhere.
    NatNewSnat = 4,
    /// tc: a packet of a tracked flow, translated as its flow.
    NatEstablished = 5,
    /// tc: a backend's reply, translated back.
    NatReply = 6,
    /// tc: a frontend without a usable backend: left to the stack.
    NatNoBackend = 7,
    /// tc: no SNAT port free for the backend: dropped.
    NatNoPort = 8,
    /// tc: no route (or no SNAT address) for a translated packet: dropped.
    NatNoRoute = 9,
    /// A translation event `strait_svc_events` had no room for.
    EventsLost = 10,
}

/// `STRAIT_SVC_REASON_MAX`.
pub(crate) const REASON_MAX: usize = 11;

impl ServiceReason {
    pub const ALL: [ServiceReason; REASON_MAX] = [
        ServiceReason::Translated,
        ServiceReason::RefusedNoBackend,
        ServiceReason::BackendMissing,
        ServiceReason::NatNew,
        ServiceReason::NatNewSnat,
        ServiceReason::NatEstablished,
        ServiceReason::NatReply,
        ServiceReason::NatNoBackend,
        ServiceReason::NatNoPort,
        ServiceReason::NatNoRoute,
        ServiceReason::EventsLost,
    ];

    /// The C name without `STRAIT_SVC_`, lower case.
    pub const fn name(self) -> &'static str {
        match self {
            ServiceReason::Translated => "translated",
            ServiceReason::RefusedNoBackend => "refused_no_backend",
            ServiceReason::BackendMissing => "backend_missing",
            ServiceReason::NatNew => "nat_new",
            ServiceReason::NatNewSnat => "nat_new_snat",
            ServiceReason::NatEstablished => "nat_established",
            ServiceReason::NatReply => "nat_reply",
            ServiceReason::NatNoBackend => "nat_no_backend",
            ServiceReason::NatNoPort => "nat_no_port",
            ServiceReason::NatNoRoute => "nat_no_route",
            ServiceReason::EventsLost => "events_lost",
        }
    }

    pub const fn index(self) -> u32 {
        self as u32
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;
    use crate::bpf_test::btf::{Btf, Member};

    fn btf() -> Btf {
        Btf::from_elf(strait_ebpf::SERVICES).expect("the services object's BTF")
    }

    fn check(btf: &Btf, c_name: &str, size: usize, rows: &[(&str, usize, usize)]) {
        let s = btf
            .struct_layout(c_name)
            .unwrap_or_else(|e| panic!("struct {c_name}: {e}"));
        let want: Vec<Member> = rows
            .iter()
            .map(|&(name, offset, size)| Member {
                name: name.to_string(),
                offset,
                size,
            })
            .collect();
        assert_eq!(s.size, size, "size of struct {c_name}");
        assert_eq!(s.members, want, "members of struct {c_name}");
    }

    macro_rules! m {
        ($t:ty, $f:ident, $size:expr) => {
            (stringify!($f), offset_of!($t, $f), $size)
        };
    }

    #[test]
    fn struct_layouts_match_the_objects_btf() {
        let btf = btf();
        check(
            &btf,
            "strait_svc_key",
            size_of::<SvcKey>(),
            &[
                m!(SvcKey, addr, 16),
                m!(SvcKey, port, 2),
                m!(SvcKey, proto, 1),
                m!(SvcKey, scope, 1),
            ],
        );
        check(
            &btf,
            "strait_svc_frontend",
            size_of::<FrontendValue>(),
            &[
                m!(FrontendValue, id, 4),
                m!(FrontendValue, table_size, 4),
                m!(FrontendValue, affinity_secs, 4),
                m!(FrontendValue, backends, 2),
                m!(FrontendValue, flags, 1),
                m!(FrontendValue, pad, 1),
            ],
        );
        check(
            &btf,
            "strait_svc_slot_key",
            size_of::<SlotKey>(),
            &[m!(SlotKey, id, 4), m!(SlotKey, slot, 4)],
        );
        check(
            &btf,
            "strait_svc_backend",
            size_of::<BackendValue>(),
            &[
                m!(BackendValue, addr, 16),
                m!(BackendValue, port, 2),
                m!(BackendValue, proto, 1),
                m!(BackendValue, flags, 1),
            ],
        );
        check(
            &btf,
            "strait_svc_revnat_key",
            size_of::<RevNatKey>(),
            &[
                m!(RevNatKey, cookie, 8),
                m!(RevNatKey, addr, 16),
                m!(RevNatKey, port, 2),
                m!(RevNatKey, pad, 6),
            ],
        );
        check(
            &btf,
            "strait_svc_revnat",
            size_of::<RevNatValue>(),
            &[
                m!(RevNatValue, addr, 16),
                m!(RevNatValue, port, 2),
                m!(RevNatValue, pad, 2),
                m!(RevNatValue, id, 4),
            ],
        );
        check(
            &btf,
            "strait_svc_affinity_key",
            size_of::<AffinityKey>(),
            &[
                m!(AffinityKey, netns_cookie, 8),
                m!(AffinityKey, id, 4),
                m!(AffinityKey, pad, 4),
            ],
        );
        check(
            &btf,
            "strait_svc_affinity",
            size_of::<AffinityValue>(),
            &[
                m!(AffinityValue, last_ns, 8),
                m!(AffinityValue, backend, 4),
                m!(AffinityValue, pad, 4),
            ],
        );
        check(
            &btf,
            "strait_svc_event",
            size_of::<Event>(),
            &[
                m!(Event, time_ns, 8),
                m!(Event, netns_cookie, 8),
                m!(Event, cgroup_id, 8),
                m!(Event, client, 16),
                m!(Event, frontend, 16),
                m!(Event, backend, 16),
                m!(Event, client_port, 2),
                m!(Event, frontend_port, 2),
                m!(Event, backend_port, 2),
                m!(Event, proto, 1),
                m!(Event, kind, 1),
                m!(Event, frontend_id, 4),
                m!(Event, backend_id, 4),
                m!(Event, pid, 4),
                m!(Event, pad, 4),
            ],
        );
        let kinds = btf.enum_values("strait_svc_xlate").unwrap();
        assert_eq!(
            kinds,
            [
                ("STRAIT_SVC_XLATE_CONNECT", XLATE_CONNECT),
                ("STRAIT_SVC_XLATE_SENDMSG", XLATE_SENDMSG),
                ("STRAIT_SVC_XLATE_NAT", XLATE_NAT),
                ("STRAIT_SVC_XLATE_NAT_SNAT", XLATE_NAT_SNAT),
            ]
            .map(|(n, v)| (n.to_string(), i64::from(v)))
        );
    }

    #[test]
    fn packet_level_layouts_match_the_tc_objects_btf() {
        let btf = Btf::from_elf(strait_ebpf::SERVICES_TC).expect("the services tc object's BTF");
        check(
            &btf,
            "strait_svc_ct_key",
            size_of::<CtKey>(),
            &[
                m!(CtKey, src, 16),
                m!(CtKey, dst, 16),
                m!(CtKey, sport, 2),
                m!(CtKey, dport, 2),
                m!(CtKey, proto, 1),
                m!(CtKey, dir, 1),
                m!(CtKey, pad, 2),
            ],
        );
        check(
            &btf,
            "strait_svc_ct",
            size_of::<CtValue>(),
            &[
                m!(CtValue, src, 16),
                m!(CtValue, dst, 16),
                m!(CtValue, sport, 2),
                m!(CtValue, dport, 2),
                m!(CtValue, backend, 4),
                m!(CtValue, expires, 8),
                m!(CtValue, flags, 1),
                m!(CtValue, pad, 7),
            ],
        );
        check(
            &btf,
            "strait_svc_nat_config",
            size_of::<NatConfig>(),
            &[m!(NatConfig, snat4, 16), m!(NatConfig, snat6, 16)],
        );
        // The two objects share the pinned maps: the same layouts in both.
        for (name, size) in [
            ("strait_svc_key", size_of::<SvcKey>()),
            ("strait_svc_frontend", size_of::<FrontendValue>()),
            ("strait_svc_backend", size_of::<BackendValue>()),
        ] {
            assert_eq!(btf.struct_layout(name).unwrap().size, size, "{name}");
        }
        let mut maps = btf.datasec_vars(".maps").expect("the .maps section");
        maps.sort();
        let mut want = MAPS.to_vec();
        want.sort();
        assert_eq!(maps, want, "the tc object holds the same maps");
        for (program, _) in TC_PROGRAMS {
            assert!(
                btf.has_func(program),
                "program {program} is not in the object"
            );
        }
        // tcx programs are found by the name the kernel keeps (15 bytes), as the
        // policy programs are: those must differ.
        let kept: std::collections::HashSet<&str> = TC_PROGRAMS
            .iter()
            .map(|(p, _)| crate::policy::datapath::abi::kernel_name(p))
            .collect();
        assert_eq!(kept.len(), TC_PROGRAMS.len());
    }

    #[test]
    fn reasons_match_the_objects_enum() {
        let want: Vec<(String, i64)> = ServiceReason::ALL
            .iter()
            .map(|r| {
                (
                    format!("STRAIT_SVC_{}", r.name().to_uppercase()),
                    i64::from(r.index()),
                )
            })
            .chain([("STRAIT_SVC_REASON_MAX".to_string(), REASON_MAX as i64)])
            .collect();
        assert_eq!(btf().enum_values("strait_svc_reason").unwrap(), want);
        for (i, r) in ServiceReason::ALL.iter().enumerate() {
            assert_eq!(r.index() as usize, i, "{r:?} is listed out of order");
        }
    }

    #[test]
    fn map_and_program_names_are_the_objects() {
        let btf = btf();
        let mut maps = btf.datasec_vars(".maps").expect("the .maps section");
        maps.sort();
        let mut want = MAPS.to_vec();
        want.sort();
        assert_eq!(maps, want);
        for (program, _) in PROGRAMS {
            assert!(
                btf.has_func(program),
                "program {program} is not in the object"
            );
            assert!(
                program.len() <= 15,
                "{program} is longer than the kernel keeps"
            );
        }
    }
}
