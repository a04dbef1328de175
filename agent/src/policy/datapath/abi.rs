//! The policy datapath's ABI on the Rust side: map and program names, the map key
//! and value layouts, and the reasons the check counts packets under, mirroring the
//! policy section of `ebpf/include/strait/abi.h` and `ebpf/include/strait/policy.h`.
//! The tests read the policy object's BTF (`crate::bpf_test::btf`) and compare every
//! struct's size and members, every enum's values and every map name with this file,
//! as `fastpath::abi` does for the fast path.

/// Program names in the object; the kernel keeps the first 15 bytes
/// ([`kernel_name`]), which is what a query of a device's tcx programs shows.
pub(crate) const FROM_ENDPOINT: &str = "strait_pol_from_ep";
pub(crate) const TO_ENDPOINT: &str = "strait_pol_to_ep";

/// Map names (`policy.h`), also their pin names under the bpf dir.
pub(crate) const ENDPOINTS: &str = "strait_pol_endpoints";
pub(crate) const RULES: &str = "strait_pol_rules";
pub(crate) const CIDRS: &str = "strait_pol_cidrs";
pub(crate) const IPCACHE: &str = "strait_pol_ipcache";
pub(crate) const CONNTRACK: &str = "strait_ct";
pub(crate) const EVENTS: &str = "strait_pol_events";
pub(crate) const STATS: &str = "strait_pol_stats";
pub(crate) const RULE_STATS: &str = "strait_pol_rule_stats";

/// Every policy map: what the policy object and the fast path object share.
#[cfg(test)]
pub(crate) const MAPS: [&str; 8] = [
    ENDPOINTS, RULES, CIDRS, IPCACHE, CONNTRACK, EVENTS, STATS, RULE_STATS,
];

/// A program's name as the kernel keeps it (BPF_OBJ_NAME_LEN - 1 bytes).
pub(crate) fn kernel_name(name: &str) -> &str {
    &name[..name.len().min(15)]
}

/// `STRAIT_POL_NONE`: no rule.
pub(crate) const NONE: u32 = u32::MAX;
/// `STRAIT_POL_RULE_KEY_FIXED_BITS`, `STRAIT_POL_CIDR_KEY_FIXED_BITS`.
pub(crate) const RULE_KEY_FIXED_BITS: u32 = 96;
pub(crate) const CIDR_KEY_FIXED_BITS: u32 = 64;

/// `enum strait_pol_dir`.
pub(crate) const DIR_INGRESS: u8 = 0;
pub(crate) const DIR_EGRESS: u8 = 1;

/// `enum strait_pol_action`.
pub(crate) const ACTION_ALLOW: u8 = 0;
pub(crate) const ACTION_DENY: u8 = 1;
pub(crate) const ACTION_PASS: u8 = 2;

/// `STRAIT_POL_F_*`.
pub(crate) const F_ISOLATED_INGRESS: u8 = 0x1;
pub(crate) const F_ISOLATED_EGRESS: u8 = 0x2;
pub(crate) const F_AUDIT_INGRESS: u8 = 0x4;
pub(crate) const F_AUDIT_EGRESS: u8 = 0x8;

/// `enum strait_pol_verdict`: the second half of a rule-stats key.
pub(crate) const VERDICT_ALLOWED: u32 = 0;
pub(crate) const VERDICT_DENIED: u32 = 1;
pub(crate) const VERDICT_AUDIT: u32 = 2;

/// `struct strait_addr`: IPv4 as IPv4-mapped IPv6.
pub(crate) type AddrKey = [u8; 16];

/// `struct strait_pol_endpoint`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EndpointValue {
    pub identity: u32,
    pub generation: u32,
    pub version: u8,
    pub flags: u8,
    pub pad: [u8; 2],
}

/// `struct strait_pol_rule_key` after its prefix length (aya's LPM key puts the
/// `u32` prefix length in front of this).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RuleKey {
    pub ifindex: u32,
    pub version: u8,
    pub dir: u8,
    pub proto: u8,
    pub pad: u8,
    pub peer: u32,
    /// Network order.
    pub port: [u8; 2],
    pub pad2: [u8; 2],
}

/// `struct strait_pol_cell`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CellValue {
    pub decision_rule: u32,
    pub log_rule: u32,
    pub allow_rule: u32,
    pub decision_action: u8,
    pub decision_audit: u8,
    pub pad: [u8; 2],
}

/// `struct strait_pol_cidr_key` after its prefix length.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CidrKey {
    pub ifindex: u32,
    pub version: u8,
    pub dir: u8,
    /// 4 or 6.
    pub family: u8,
    pub pad: u8,
    pub addr: AddrKey,
}

/// `struct strait_pol_ipcache_value`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpcacheValue {
    pub identity: u32,
    pub pad: u32,
}

/// `struct strait_ct_key`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CtKey {
    pub src: AddrKey,
    pub dst: AddrKey,
    /// Network order.
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u8,
    pub dir: u8,
    pub pad: [u8; 2],
}

/// `struct strait_ct_entry`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CtEntry {
    pub expires: u64,
    pub packets: u64,
    pub bytes: u64,
    pub generation: u32,
    pub rule: u32,
    pub tcp_flags_fwd: u8,
    pub tcp_flags_rev: u8,
    pub audit: u8,
    pub pad: [u8; 5],
}

/// `struct strait_pol_event`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Event {
    pub time_ns: u64,
    pub ifindex: u32,
    pub dir: u8,
    pub proto: u8,
    pub allowed: u8,
    pub audit: u8,
    pub src: AddrKey,
    pub dst: AddrKey,
    pub sport: u16,
    pub dport: u16,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub rule: u32,
    pub log_rule: u32,
    pub pad: u32,
}

/// `struct strait_pol_rule_stat_key`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct RuleStatKey {
    pub rule: u32,
    pub verdict: u32,
}

// SAFETY: each is `repr(C)` of integers and byte arrays without padding (the sizes
// are the sums of the fields, checked against the object's BTF by the tests below),
// so every byte is initialised and every bit pattern a valid value, which is what
// `Pod` promises aya when it copies them to and from map memory.
#[allow(unsafe_code)]
unsafe impl aya::Pod for EndpointValue {}
// SAFETY: as for `EndpointValue`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for RuleKey {}
// SAFETY: as for `EndpointValue`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for CellValue {}
// SAFETY: as for `EndpointValue`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for CidrKey {}
// SAFETY: as for `EndpointValue`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for IpcacheValue {}
// SAFETY: as for `EndpointValue`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for CtKey {}
// SAFETY: as for `EndpointValue`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for CtEntry {}
// SAFETY: as for `EndpointValue`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for RuleStatKey {}

/// `enum strait_pol_reason`: why the check let a packet pass or dropped it, the
/// index of its counter in `strait_pol_stats`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyReason {
    AllowedNew = 0,
    AllowedEstablished = 1,
    AllowedReply = 2,
    AllowedRelated = 3,
    AllowedFromHost = 4,
    AllowedUntracked = 5,
    ReevaluatedAllowed = 6,
    DeniedRule = 7,
    DeniedDefault = 8,
    AuditDenied = 9,
    ReevaluatedDenied = 10,
    EventsLost = 11,
    PassNotIp = 12,
    PassLinkControl = 13,
}

/// `STRAIT_POL_REASON_MAX`.
pub(crate) const REASON_MAX: usize = 14;

impl PolicyReason {
    pub const ALL: [PolicyReason; REASON_MAX] = [
        PolicyReason::AllowedNew,
        PolicyReason::AllowedEstablished,
        PolicyReason::AllowedReply,
        PolicyReason::AllowedRelated,
        PolicyReason::AllowedFromHost,
        PolicyReason::AllowedUntracked,
        PolicyReason::ReevaluatedAllowed,
        PolicyReason::DeniedRule,
        PolicyReason::DeniedDefault,
        PolicyReason::AuditDenied,
        PolicyReason::ReevaluatedDenied,
        PolicyReason::EventsLost,
        PolicyReason::PassNotIp,
        PolicyReason::PassLinkControl,
    ];

    /// The C name without `STRAIT_POL_`, lower case.
    pub const fn name(self) -> &'static str {
        match self {
            PolicyReason::AllowedNew => "allowed_new",
            PolicyReason::AllowedEstablished => "allowed_established",
            PolicyReason::AllowedReply => "allowed_reply",
            PolicyReason::AllowedRelated => "allowed_related",
            PolicyReason::AllowedFromHost => "allowed_from_host",
            PolicyReason::AllowedUntracked => "allowed_untracked",
            PolicyReason::ReevaluatedAllowed => "reevaluated_allowed",
            PolicyReason::DeniedRule => "denied_rule",
            PolicyReason::DeniedDefault => "denied_default",
            PolicyReason::AuditDenied => "audit_denied",
            PolicyReason::ReevaluatedDenied => "reevaluated_denied",
            PolicyReason::EventsLost => "events_lost",
            PolicyReason::PassNotIp => "pass_not_ip",
            PolicyReason::PassLinkControl => "pass_link_control",
        }
    }

    pub const fn index(self) -> u32 {
        self as u32
    }

    /// Whether the packet was dropped.
    pub const fn dropped(self) -> bool {
        matches!(
            self,
            PolicyReason::DeniedRule
                | PolicyReason::DeniedDefault
                | PolicyReason::ReevaluatedDenied
        )
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;
    use crate::bpf_test::btf::{Btf, Member};

    fn btf() -> Btf {
        Btf::from_elf(strait_ebpf::POLICY).expect("the policy object's BTF")
    }

    fn members(rows: &[(&str, usize, usize)]) -> Vec<Member> {
        rows.iter()
            .map(|&(name, offset, size)| Member {
                name: name.to_string(),
                offset,
                size,
            })
            .collect()
    }

    fn check(btf: &Btf, c_name: &str, size: usize, want: Vec<Member>) {
        let s = btf
            .struct_layout(c_name)
            .unwrap_or_else(|e| panic!("struct {c_name}: {e}"));
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
            "strait_pol_endpoint",
            size_of::<EndpointValue>(),
            members(&[
                m!(EndpointValue, identity, 4),
                m!(EndpointValue, generation, 4),
                m!(EndpointValue, version, 1),
                m!(EndpointValue, flags, 1),
                m!(EndpointValue, pad, 2),
            ]),
        );
        // The LPM keys: the prefix length, then the Rust struct 4 bytes on.
        check(
            &btf,
            "strait_pol_rule_key",
            4 + size_of::<RuleKey>(),
            members(&[
                ("prefixlen", 0, 4),
                ("ifindex", 4 + offset_of!(RuleKey, ifindex), 4),
                ("version", 4 + offset_of!(RuleKey, version), 1),
                ("dir", 4 + offset_of!(RuleKey, dir), 1),
                ("proto", 4 + offset_of!(RuleKey, proto), 1),
                ("pad", 4 + offset_of!(RuleKey, pad), 1),
                ("peer", 4 + offset_of!(RuleKey, peer), 4),
                ("port", 4 + offset_of!(RuleKey, port), 2),
                ("pad2", 4 + offset_of!(RuleKey, pad2), 2),
            ]),
        );
        assert_eq!(
            RULE_KEY_FIXED_BITS as usize,
            8 * offset_of!(RuleKey, port),
            "everything before the port is matched whole"
        );
        check(
            &btf,
            "strait_pol_cell",
            size_of::<CellValue>(),
            members(&[
                m!(CellValue, decision_rule, 4),
                m!(CellValue, log_rule, 4),
                m!(CellValue, allow_rule, 4),
                m!(CellValue, decision_action, 1),
                m!(CellValue, decision_audit, 1),
                m!(CellValue, pad, 2),
            ]),
        );
        check(
            &btf,
            "strait_pol_cidr_key",
            4 + size_of::<CidrKey>(),
            members(&[
                ("prefixlen", 0, 4),
                ("ifindex", 4 + offset_of!(CidrKey, ifindex), 4),
                ("version", 4 + offset_of!(CidrKey, version), 1),
                ("dir", 4 + offset_of!(CidrKey, dir), 1),
                ("family", 4 + offset_of!(CidrKey, family), 1),
                ("pad", 4 + offset_of!(CidrKey, pad), 1),
                ("addr", 4 + offset_of!(CidrKey, addr), 16),
            ]),
        );
        assert_eq!(CIDR_KEY_FIXED_BITS as usize, 8 * offset_of!(CidrKey, addr));
        check(
            &btf,
            "strait_pol_ipcache_key",
            4 + size_of::<AddrKey>(),
            members(&[("prefixlen", 0, 4), ("addr", 4, 16)]),
        );
        check(
            &btf,
            "strait_pol_ipcache_value",
            size_of::<IpcacheValue>(),
            members(&[m!(IpcacheValue, identity, 4), m!(IpcacheValue, pad, 4)]),
        );
        check(
            &btf,
            "strait_ct_key",
            size_of::<CtKey>(),
            members(&[
                m!(CtKey, src, 16),
                m!(CtKey, dst, 16),
                m!(CtKey, sport, 2),
                m!(CtKey, dport, 2),
                m!(CtKey, proto, 1),
                m!(CtKey, dir, 1),
                m!(CtKey, pad, 2),
            ]),
        );
        check(
            &btf,
            "strait_ct_entry",
            size_of::<CtEntry>(),
            members(&[
                m!(CtEntry, expires, 8),
                m!(CtEntry, packets, 8),
                m!(CtEntry, bytes, 8),
                m!(CtEntry, generation, 4),
                m!(CtEntry, rule, 4),
                m!(CtEntry, tcp_flags_fwd, 1),
                m!(CtEntry, tcp_flags_rev, 1),
                m!(CtEntry, audit, 1),
                m!(CtEntry, pad, 5),
            ]),
        );
        check(
            &btf,
            "strait_pol_event",
            size_of::<Event>(),
            members(&[
                m!(Event, time_ns, 8),
                m!(Event, ifindex, 4),
                m!(Event, dir, 1),
                m!(Event, proto, 1),
                m!(Event, allowed, 1),
                m!(Event, audit, 1),
                m!(Event, src, 16),
                m!(Event, dst, 16),
                m!(Event, sport, 2),
                m!(Event, dport, 2),
                m!(Event, src_identity, 4),
                m!(Event, dst_identity, 4),
                m!(Event, rule, 4),
                m!(Event, log_rule, 4),
                m!(Event, pad, 4),
            ]),
        );
        check(
            &btf,
            "strait_pol_rule_stat_key",
            size_of::<RuleStatKey>(),
            members(&[m!(RuleStatKey, rule, 4), m!(RuleStatKey, verdict, 4)]),
        );
    }

    #[test]
    fn enums_match_the_objects() {
        let btf = btf();
        let want: Vec<(String, i64)> = PolicyReason::ALL
            .iter()
            .map(|r| {
                (
                    format!("STRAIT_POL_{}", r.name().to_uppercase()),
                    i64::from(r.index()),
                )
            })
            .chain([("STRAIT_POL_REASON_MAX".to_string(), REASON_MAX as i64)])
            .collect();
        assert_eq!(btf.enum_values("strait_pol_reason").unwrap(), want);
        for (i, r) in PolicyReason::ALL.iter().enumerate() {
            assert_eq!(r.index() as usize, i, "{r:?} is listed out of order");
        }
        // enum strait_pol_dir and strait_pol_action are only constants in the C
        // (no BTF); their values are pinned by the program tests' verdicts.
        let pairs = |rows: &[(&str, u32)]| -> Vec<(String, i64)> {
            rows.iter()
                .map(|(n, v)| (n.to_string(), i64::from(*v)))
                .collect()
        };
        assert_eq!(
            btf.enum_values("strait_pol_verdict").unwrap(),
            pairs(&[
                ("STRAIT_POL_VERDICT_ALLOWED", VERDICT_ALLOWED),
                ("STRAIT_POL_VERDICT_DENIED", VERDICT_DENIED),
                ("STRAIT_POL_VERDICT_AUDIT", VERDICT_AUDIT),
            ])
        );
    }

    #[test]
    fn map_and_program_names_are_the_objects() {
        let btf = btf();
        let mut maps = btf.datasec_vars(".maps").expect("the .maps section");
        maps.sort();
        let mut want = MAPS.to_vec();
        want.sort();
        assert_eq!(maps, want);
        for program in [FROM_ENDPOINT, TO_ENDPOINT] {
            assert!(
                btf.has_func(program),
                "program {program} is not in the object"
            );
        }
        assert_eq!(kernel_name(FROM_ENDPOINT), "strait_pol_from");
        assert_eq!(kernel_name(TO_ENDPOINT), "strait_pol_to_e");
    }
}
