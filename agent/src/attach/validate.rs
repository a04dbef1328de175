//! The agent checks names and paths itself rather than trusting its client: they
//! become store keys and interface names. The rules are the CNI spec's.

use std::path::Path;

use strait_api::{AddRequest, NamedPort};

use super::AttachError;
use crate::hostnet::{HostNet, NetnsState};
use crate::ipam::Family;
use crate::ipam::pool::Pool;

/// Network name, container ID and interface name of one attachment.
pub(super) fn validate(network: &str, container_id: &str, ifname: &str) -> Result<(), AttachError> {
    validate_name("network name", network)?;
    validate_name("container ID", container_id)?;
    let bad_ifname = ifname.is_empty()
        || ifname.len() > 15
        || ifname == "."
        || ifname == ".."
        || ifname
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad_ifname {
        return Err(AttachError::Invalid(format!(
            "interface name {ifname:?}: 1-15 bytes, not . or .., no '/', ':' or whitespace"
        )));
    }
    Ok(())
}

/// What policy will match the endpoint by: its namespace, labels and named ports, with
/// Kubernetes' syntax (the plugin checks them too; the API has other clients). What
/// to record: the request's namespace, else `default`, and its named ports without
/// repeats.
pub(super) fn check_policy_facts(
    req: &AddRequest,
) -> Result<(String, Vec<NamedPort>), AttachError> {
    use strait_api::labels::{normalize_named_ports, validate_labels, validate_namespace};
    let namespace = match req.namespace.as_deref() {
        Some(ns) => {
            validate_namespace(ns).map_err(AttachError::InvalidLabels)?;
            ns.to_string()
        }
        None => strait_policy::ir::DEFAULT_NAMESPACE.to_string(),
    };
    validate_labels(&req.labels).map_err(AttachError::InvalidLabels)?;
    let named_ports =
        normalize_named_ports(req.named_ports.clone()).map_err(AttachError::InvalidLabels)?;
    Ok((namespace, named_ports))
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, as the CNI spec requires of network names and
/// container IDs.
pub(super) fn validate_name(what: &str, name: &str) -> Result<(), AttachError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 253;
    if ok {
        Ok(())
    } else {
        Err(AttachError::Invalid(format!(
            "{what} {name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (at most 253)"
        )))
    }
}

/// The container's namespace exists and is not the agent's own.
pub(super) fn check_netns(host: &impl HostNet, path: &str) -> Result<(), AttachError> {
    let bad = |reason: String| AttachError::BadNetns {
        path: path.to_string(),
        reason,
    };
    match host.netns_state(Path::new(path)) {
        NetnsState::Usable => Ok(()),
        NetnsState::Missing => Err(bad("does not exist".into())),
        NetnsState::Host => Err(bad("is the host's own network namespace".into())),
        NetnsState::Unusable(reason) => Err(bad(reason)),
    }
}

/// IPv6's minimum link MTU (RFC 8200 §5): below it the kernel takes IPv6 off the
/// interface, and adding the container's address fails with "No such device".
pub(super) const IPV6_MIN_MTU: u32 = 1280;
/// IPv4's minimum (RFC 791).
const IPV4_MIN_MTU: u32 = 68;

/// The container interface's MTU can carry every family the agent hands out: ADD gets
/// one address per pool family, so one IPv6 pool makes 1280 the floor.
pub(super) fn check_mtu(mtu: u32, pools: &[Pool]) -> Result<(), AttachError> {
    // A disabled pool gives no new container an address, so only enabled ones count.
    let v6 = pools
        .iter()
        .any(|p| !p.disabled && p.family() == Family::V6);
    let (min, why) = if v6 {
        (
            IPV6_MIN_MTU,
            "IPv6's minimum (the agent serves an IPv6 pool)",
        )
    } else {
        (IPV4_MIN_MTU, "IPv4's minimum")
    };
    if mtu < min {
        return Err(AttachError::InvalidConfig(format!(
            "mtu {mtu} is below {min}, {why}"
        )));
    }
    if mtu > 65535 {
        return Err(AttachError::InvalidConfig(format!(
            "mtu {mtu} is above 65535"
        )));
    }
    Ok(())
}

/// A container MAC: six hex pairs (`strait_api::MacAddr`'s text form), unicast.
pub(super) fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mac: strait_api::MacAddr = s
        .parse()
        .map_err(|e: strait_api::ParseMacError| e.to_string())?;
    if mac.is_multicast() {
        return Err(format!("MAC {s:?} is multicast"));
    }
    Ok(mac.octets())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_cni_rules() {
        assert!(validate("net", "abc123", "eth0").is_ok());
        assert!(validate("my-net.v1", "k8s_pod.1-x", "eth1").is_ok());
        for (n, c, i) in [
            ("", "c", "eth0"),
            ("../x", "c", "eth0"),
            ("n", "-c", "eth0"),
            ("n", "a/b", "eth0"),
            ("n", "c", ""),
            ("n", "c", "a23456789012345x"),
            ("n", "c", ".."),
            ("n", "c", "et h0"),
            ("n", "c", "eth:0"),
        ] {
            assert!(validate(n, c, i).is_err(), "{n:?} {c:?} {i:?} accepted");
        }
    }

    #[test]
    fn mtu_floor_is_ipv6s_when_an_ipv6_pool_is_served() {
        let pool = |cidr: &str| Pool {
            cidr: cidr.parse().expect("cidr"),
            block_prefix: 26,
            disabled: false,
        };
        let v4 = [pool("10.0.0.0/16")];
        let dual = [pool("10.0.0.0/16"), pool("fd00::/48")];
        assert!(check_mtu(68, &v4).is_ok());
        assert!(check_mtu(67, &v4).is_err());
        assert!(check_mtu(1280, &dual).is_ok());
        let e = check_mtu(68, &dual).expect_err("68 with IPv6");
        let msg = e.to_string();
        assert!(msg.contains("1280") && msg.contains("IPv6"), "{msg}");
        assert!(matches!(e, AttachError::InvalidConfig(_)), "{e:?}");
        assert!(check_mtu(65536, &v4).is_err());
        let v6_disabled = [
            pool("10.0.0.0/16"),
            Pool {
                disabled: true,
                ..pool("fd00::/48")
            },
        ];
        assert!(
            check_mtu(68, &v6_disabled).is_ok(),
            "a disabled pool gives no address"
        );
    }

    #[test]
    fn macs_must_be_unicast_hex() {
        assert_eq!(
            parse_mac("02:42:0a:00:00:01").unwrap(),
            [2, 0x42, 10, 0, 0, 1]
        );
        assert!(parse_mac("01:00:5e:00:00:01").is_err(), "multicast");
        assert!(parse_mac("02:42:0a:00:00").is_err());
        assert!(parse_mac("zz:42:0a:00:00:01").is_err());
    }
}
