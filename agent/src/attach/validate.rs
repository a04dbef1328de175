//! The agent checks names and paths itself rather than trusting its client: they
//! become store keys and interface names. The rules are the CNI spec's.

use std::path::Path;

use super::AttachError;
use crate::hostnet::{HostNet, NetnsState};

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
