//! Names and link-layer addresses of an endpoint's veth, derived deterministically so
//! that any agent (or a restarted one) computes the same ones.

use crate::netlink::LINK_PREFIX;

/// The kernel's IFNAMSIZ less the terminating NUL.
pub(super) const MAX_IFNAME_LEN: usize = 15;

/// Hex digits of the hash in a host interface name.
const HASH_HEX_DIGITS: usize = 8;

/// FNV-1a, 64 bit: a stable hash that needs no dependency and never changes between
/// releases (std's `DefaultHasher` may).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// The host-side name of the veth of one attachment: `strait` + 8 hex digits of the
/// FNV-1a 64 hash of `network \0 container_id \0 ifname` (14 bytes, within IFNAMSIZ).
///
/// The top 32 bits are kept: FNV's final multiply mixes the high bits best.
pub fn host_ifname(network: &str, container_id: &str, ifname: &str) -> String {
    // The NULs keep ("ab", "c") and ("a", "bc") apart; none of the parts can hold one.
    let hash = fnv1a64([network, container_id, ifname].join("\0").as_bytes());
    format!("{LINK_PREFIX}{:08x}", hash >> 32)
}

/// Whether `name` has the shape [`host_ifname`] produces.
pub fn is_host_ifname(name: &str) -> bool {
    name.strip_prefix(LINK_PREFIX).is_some_and(|hash| {
        hash.len() == HASH_HEX_DIGITS
            && hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// What starts the alias of an endpoint's host end: the rest names the agent's store
/// and node that own the link ([`owner_mark`]).
pub(super) const OWNER_MARK_PREFIX: &str = "strait:";

/// The owner mark for `identity` (an agent's store and node, see
/// `crate::attach::owner`): `strait:<identity>`, kept in the host end's alias
/// (`ip link show` prints it). A stale-link sweep removes only links marked with its own.
pub fn owner_mark(identity: &str) -> String {
    format!("{OWNER_MARK_PREFIX}{identity}")
}

/// The MAC of the host end of a veth: `ee:` + 5 bytes of a hash of its name. Locally
/// administered and unicast (the low two bits of `0xee` are `10`), stable across agent
/// restarts, and known before the link exists, so the container's gateway neighbour
/// entries need no lookup.
pub fn host_mac(host_ifname: &str) -> [u8; 6] {
    derived_mac(0xee, "host", host_ifname)
}

/// The MAC of the container end when the runtime asks for none: `02:` + 5 bytes of a
/// (differently salted) hash of the host end's name.
pub fn default_container_mac(host_ifname: &str) -> [u8; 6] {
    derived_mac(0x02, "container", host_ifname)
}

fn derived_mac(first: u8, salt: &str, name: &str) -> [u8; 6] {
    let [_, _, _, b1, b2, b3, b4, b5] = fnv1a64(format!("{salt}\0{name}").as_bytes()).to_be_bytes();
    [first, b1, b2, b3, b4, b5]
}

/// Whether the kernel would accept `name` as an interface name (`dev_valid_name`).
pub(super) fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        // From the FNV reference test suite (fnv-test: FNV-1a 64).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn host_ifname_is_stable_short_and_distinct() {
        let a = host_ifname("default", "0123456789abcdef", "eth0");
        assert_eq!(a, host_ifname("default", "0123456789abcdef", "eth0"));
        assert_eq!(a.len(), 14);
        assert!(valid_ifname(&a));
        assert!(is_host_ifname(&a));
        assert_ne!(a, host_ifname("default", "0123456789abcdef", "eth1"));
        assert_ne!(a, host_ifname("other", "0123456789abcdef", "eth0"));
        // The separator matters: moving a byte between parts changes the name.
        assert_ne!(
            host_ifname("ab", "c", "eth0"),
            host_ifname("a", "bc", "eth0")
        );
    }

    #[test]
    fn host_ifname_golden() {
        // Pinned: a change here renames every host link and breaks adoption of
        // existing endpoints after an upgrade.
        let hash = fnv1a64(b"net1\0abc\0eth0");
        assert_eq!(
            host_ifname("net1", "abc", "eth0"),
            format!("strait{:08x}", hash >> 32)
        );
        assert_eq!(host_ifname("net1", "abc", "eth0"), "straitbd234af8");
    }

    #[test]
    fn recognises_host_ifnames() {
        assert!(is_host_ifname("strait0a1b2c3d"));
        assert!(!is_host_ifname("strait0A1B2C3D"));
        assert!(!is_host_ifname("strait.vxlan"));
        assert!(!is_host_ifname("strait0a1b2c3"));
        assert!(!is_host_ifname("eth0"));
    }

    #[test]
    fn macs_are_local_unicast_and_differ_per_end() {
        let name = host_ifname("n", "c", "eth0");
        for mac in [host_mac(&name), default_container_mac(&name)] {
            assert_eq!(mac[0] & 0b11, 0b10, "{mac:02x?}");
        }
        assert_ne!(host_mac(&name)[1..], default_container_mac(&name)[1..]);
        assert_ne!(host_mac(&name), host_mac(&host_ifname("n", "d", "eth0")));
    }

    #[test]
    fn validates_ifnames() {
        assert!(valid_ifname("eth0"));
        assert!(valid_ifname("abcdefghijklmno"));
        assert!(!valid_ifname("abcdefghijklmnop"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname(".."));
        assert!(!valid_ifname("a/b"));
        assert!(!valid_ifname("a b"));
        assert!(!valid_ifname("a:1"));
    }
}
