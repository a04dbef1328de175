//! The fast path's ABI on the Rust side: the map and program names, the map key and
//! value layouts, and the reasons the programs count packets under, each mirroring
//! `ebpf/include/strait/abi.h` (layouts, reasons) and `ebpf/include/strait/maps.h`
//! (map names).
//!
//! The header pins its numbers with `_Static_assert`s; the test here reads the
//! compiled object's BTF (see `crate::bpf_test::btf`) and checks every struct's
//! size, member offsets and member sizes, every reason's value and every map name
//! against this file. A layout changed on one side only fails `cargo test` instead
//! of corrupting a map.

use aya::maps::lpm_trie::Key;

/// The programs' names in the object (also the names `tc filter show` prints).
pub(super) const FROM_ENDPOINT: &str = "strait_from_ep";
pub(super) const FROM_FABRIC: &str = "strait_from_fab";

/// The maps' names in the object (`maps.h`).
pub(super) const CONFIG: &str = "strait_fp_config";
pub(super) const ENDPOINTS: &str = "strait_fp_endpoints";
pub(super) const TUNNELS: &str = "strait_fp_tunnels";
pub(super) const STATS: &str = "strait_fp_stats";

/// `struct strait_addr`: an address as the maps key it, IPv4 as IPv4-mapped IPv6.
pub(super) type AddrKey = [u8; 16];

/// `struct strait_fp_tunnel_key`: aya's LPM trie key is the same layout (a `u32`
/// prefix length, then the data).
pub(super) type TunnelKey = Key<AddrKey>;

/// `struct strait_fp_config`: `strait_fp_config[0]`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Config {
    /// 0: every program hands every packet to the stack.
    pub enabled: u32,
    /// The fabric device; 0 when the node has none.
    pub fabric_ifindex: u32,
    /// The fabric device's own MAC: the source of what the programs send into it.
    pub fabric_mac: [u8; 6],
    pub pad: [u8; 2],
}

/// `struct strait_fp_endpoint`: the value of `strait_fp_endpoints`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct EndpointValue {
    /// The host end of the endpoint's veth.
    pub ifindex: u32,
    /// The container's end.
    pub mac: [u8; 6],
    /// The host's end: the container's gateway.
    pub host_mac: [u8; 6],
}

/// `struct strait_fp_tunnel`: the value of `strait_fp_tunnels`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct TunnelValue {
    pub vtep_mac: [u8; 6],
    pub pad: [u8; 2],
}

// SAFETY: each is `repr(C)` of integers and byte arrays without padding (the sizes
// are the sums of the fields, checked against the object's BTF by the test below),
// so every byte is initialised and every bit pattern a valid value, which is what
// `Pod` promises aya when it copies them to and from map memory.
#[allow(unsafe_code)]
unsafe impl aya::Pod for Config {}
// SAFETY: as for `Config`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for EndpointValue {}
// SAFETY: as for `Config`.
#[allow(unsafe_code)]
unsafe impl aya::Pod for TunnelValue {}

/// `enum strait_reason`: why a packet went where it went, the index of its counter
/// in `strait_fp_stats`. `Fwd*` are redirects; `Pass*` hand the packet to the
/// kernel's stack unchanged; `Drop*` drop it.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    FwdFabric = 0,
    FwdEndpoint = 1,
    PassNoEntry = 2,
    PassSameDevice = 3,
    PassMtu = 4,
    PassNotIp = 5,
    PassTtl = 6,
    PassShort = 7,
    PassDisabled = 8,
    DropPolicy = 9,
}

/// `STRAIT_REASON_MAX`: how many counters `strait_fp_stats` holds.
pub(super) const REASON_MAX: usize = 10;

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; REASON_MAX] = [
        Reason::FwdFabric,
        Reason::FwdEndpoint,
        Reason::PassNoEntry,
        Reason::PassSameDevice,
        Reason::PassMtu,
        Reason::PassNotIp,
        Reason::PassTtl,
        Reason::PassShort,
        Reason::PassDisabled,
        Reason::DropPolicy,
    ];

    /// The reason as status shows it: the C name without `STRAIT_`, lower case.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::FwdFabric => "fwd_fabric",
            Reason::FwdEndpoint => "fwd_endpoint",
            Reason::PassNoEntry => "pass_no_entry",
            Reason::PassSameDevice => "pass_same_device",
            Reason::PassMtu => "pass_mtu",
            Reason::PassNotIp => "pass_not_ip",
            Reason::PassTtl => "pass_ttl",
            Reason::PassShort => "pass_short",
            Reason::PassDisabled => "pass_disabled",
            Reason::DropPolicy => "drop_policy",
        }
    }

    /// The counter's index in `strait_fp_stats`.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// Whether status counts it in `to_stack`: IP packets the programs looked up
    /// and then handed to the stack. Packets passed before the lookup (not IP, TTL
    /// expiring, cut short, fast path off) have their own counters only.
    pub const fn after_lookup(self) -> bool {
        matches!(
            self,
            Reason::PassNoEntry | Reason::PassSameDevice | Reason::PassMtu
        )
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;
    use crate::bpf_test::btf::{Btf, Member};

    fn btf() -> Btf {
        Btf::from_elf(strait_ebpf::FASTPATH).expect("the fast path object's BTF")
    }

    /// (name, offset, size) of each member, as the Rust side lays them out.
    fn members(rows: &[(&str, usize, usize)]) -> Vec<Member> {
        rows.iter()
            .map(|&(name, offset, size)| Member {
                name: name.to_string(),
                offset,
                size,
            })
            .collect()
    }

    #[test]
    fn struct_layouts_match_the_objects_btf() {
        let btf = btf();
        let check = |c_name: &str, size: usize, want: Vec<Member>| {
            let s = btf
                .struct_layout(c_name)
                .unwrap_or_else(|e| panic!("struct {c_name}: {e}"));
            assert_eq!(s.size, size, "size of struct {c_name}");
            assert_eq!(s.members, want, "members of struct {c_name}");
        };
        check(
            "strait_fp_config",
            size_of::<Config>(),
            members(&[
                ("enabled", offset_of!(Config, enabled), 4),
                ("fabric_ifindex", offset_of!(Config, fabric_ifindex), 4),
                ("fabric_mac", offset_of!(Config, fabric_mac), 6),
                ("pad", offset_of!(Config, pad), 2),
            ]),
        );
        check(
            "strait_fp_endpoint",
            size_of::<EndpointValue>(),
            members(&[
                ("ifindex", offset_of!(EndpointValue, ifindex), 4),
                ("mac", offset_of!(EndpointValue, mac), 6),
                ("host_mac", offset_of!(EndpointValue, host_mac), 6),
            ]),
        );
        check(
            "strait_fp_tunnel",
            size_of::<TunnelValue>(),
            members(&[
                ("vtep_mac", offset_of!(TunnelValue, vtep_mac), 6),
                ("pad", offset_of!(TunnelValue, pad), 2),
            ]),
        );
        check(
            "strait_addr",
            size_of::<AddrKey>(),
            members(&[("bytes", 0, 16)]),
        );
        // aya's key is `repr(C, packed)` { prefix_len: u32, data: K } with private
        // fields: its size is what can be checked here; the prefix length at 0 and
        // the address at 4 are what the tunnel hits of the program tests rely on.
        check(
            "strait_fp_tunnel_key",
            size_of::<TunnelKey>(),
            members(&[("prefixlen", 0, 4), ("addr", 4, size_of::<AddrKey>())]),
        );
    }

    #[test]
    fn reasons_match_the_objects_enum() {
        let want: Vec<(String, i64)> = Reason::ALL
            .iter()
            .map(|r| {
                (
                    format!("STRAIT_{}", r.name().to_uppercase()),
                    i64::from(r.index()),
                )
            })
            .chain([("STRAIT_REASON_MAX".to_string(), REASON_MAX as i64)])
            .collect();
        let got = btf()
            .enum_values("strait_reason")
            .expect("enum strait_reason");
        assert_eq!(got, want);
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index() as usize, i, "{r:?} is listed out of order");
        }
    }

    #[test]
    fn map_and_program_names_are_the_objects() {
        let btf = btf();
        let mut maps = btf.datasec_vars(".maps").expect("the .maps section");
        maps.sort();
        // The fast path's own, and the policy maps it shares (its ingress check).
        let mut want = vec![CONFIG, ENDPOINTS, TUNNELS, STATS];
        want.extend(crate::policy::datapath::POLICY_MAPS);
        want.sort();
        assert_eq!(maps, want);
        for program in [FROM_ENDPOINT, FROM_FABRIC] {
            assert!(
                btf.has_func(program),
                "program {program} is not in the object"
            );
        }
    }
}
