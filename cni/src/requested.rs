//! What a runtime may request for the container, in the syntax it uses wherever it
//! asks (runtimeConfig, `args`, `CNI_ARGS`): a static address and a MAC. Both
//! [`crate::config`] and [`crate::env`] read these, so they live in neither.

use std::net::IpAddr;

use ipnet::IpNet;
use strait_api::MacAddr;

/// A statically requested address: `10.1.2.3`, or `10.1.2.3/24` whose prefix is the
/// runtime's idea of the subnet (the agent decides that; we keep the address).
pub fn parse_static_ip(s: &str) -> Option<IpAddr> {
    if s.contains('/') {
        s.parse::<IpNet>().ok().map(|n| n.addr())
    } else {
        s.parse().ok()
    }
}

/// A requested container MAC in any form [`MacAddr`] reads (`aa:bb:cc:dd:ee:ff` or
/// `aa-bb-…`, either case), returned in its lower-case colon form. Multicast and
/// all-zero addresses are refused: the kernel would reject them on the container
/// interface halfway through ADD.
pub fn parse_mac(s: &str) -> Option<String> {
    let mac: MacAddr = s.parse().ok()?;
    (mac.is_unicast() && !mac.is_zero()).then(|| mac.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_ip_and_mac_syntax() {
        assert_eq!(
            parse_static_ip("10.1.2.3"),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(
            parse_static_ip("10.1.2.3/24"),
            Some("10.1.2.3".parse().unwrap())
        );
        assert_eq!(
            parse_static_ip("fd00::1/64"),
            Some("fd00::1".parse().unwrap())
        );
        assert_eq!(parse_static_ip("10.1.2.3/33"), None);
        assert_eq!(parse_static_ip("10.1.2"), None);
        assert_eq!(
            parse_mac("02-42-AC-11-00-02").as_deref(),
            Some("02:42:ac:11:00:02")
        );
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "0:42:ac:11:00:02",
            "ff:ff:ff:ff:ff:ff",
            "00:00:00:00:00:00",
            "02:42:ac:11:00:0g",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }
}
