//! CNI protocol versions: which ones strait speaks, how a `cniVersion` string maps to
//! one, and what the VERSION verb prints.
//!
//! The set is closed (an enum) so result shapes and verb gates are checked by `match`
//! and comparisons rather than by string juggling.

use std::fmt;

use serde::Serialize;

/// A CNI specification version strait supports. Ordered oldest to newest so verbs can
/// gate on `>=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// Every version strait accepts, oldest first (what VERSION reports).
pub const SUPPORTED: [CniVersion; 5] = [
    CniVersion::V0_3_0,
    CniVersion::V0_3_1,
    CniVersion::V0_4_0,
    CniVersion::V1_0_0,
    CniVersion::V1_1_0,
];

impl CniVersion {
    /// The newest version: what strait speaks when the input names none.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    /// The version named by `s`, if strait supports it. Exact match only: the spec's
    /// versions are full semver strings and runtimes send them that way.
    pub fn parse(s: &str) -> Option<Self> {
        SUPPORTED.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Results before 1.0.0 tag each IP with `"version": "4"|"6"`.
    pub fn ips_carry_version(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// Interface `mtu` in results was added in 1.1.0.
    pub fn interfaces_carry_mtu(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The VERSION verb's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// Echo of the input's `cniVersion` (spec §5 "VERSION Success").
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<&'static str>,
}

impl VersionInfo {
    /// The answer to a VERSION probe whose stdin named `input` (or nothing).
    ///
    /// The input is echoed even when strait does not support it: VERSION is how a
    /// runtime finds out what we speak, so refusing the probe would hide the answer.
    pub fn for_input(input: Option<&str>) -> Self {
        Self {
            cni_version: input
                .filter(|s| !s.is_empty())
                .unwrap_or(CniVersion::LATEST.as_str())
                .to_string(),
            supported_versions: SUPPORTED.iter().map(|v| v.as_str()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly_the_supported_versions() {
        for v in SUPPORTED {
            assert_eq!(CniVersion::parse(v.as_str()), Some(v));
        }
        for bad in [
            "0.1.0", "0.2.0", "1.2.0", "2.0.0", "1.0", "v1.0.0", "", " 1.0.0",
        ] {
            assert_eq!(CniVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn versions_are_ordered_oldest_first() {
        assert!(CniVersion::V0_3_0 < CniVersion::V0_3_1);
        assert!(CniVersion::V0_3_1 < CniVersion::V0_4_0);
        assert!(CniVersion::V0_4_0 < CniVersion::V1_0_0);
        assert!(CniVersion::V1_0_0 < CniVersion::V1_1_0);
        assert_eq!(SUPPORTED.iter().max(), Some(&CniVersion::LATEST));
    }

    #[test]
    fn result_shape_switches() {
        assert!(CniVersion::V0_4_0.ips_carry_version());
        assert!(!CniVersion::V1_0_0.ips_carry_version());
        assert!(!CniVersion::V1_0_0.interfaces_carry_mtu());
        assert!(CniVersion::V1_1_0.interfaces_carry_mtu());
    }

    #[test]
    fn version_info_echoes_input_or_latest() {
        let got = serde_json::to_value(VersionInfo::for_input(Some("1.0.0"))).unwrap();
        assert_eq!(
            got,
            serde_json::json!({
                "cniVersion": "1.0.0",
                "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
            })
        );
        assert_eq!(VersionInfo::for_input(None).cni_version, "1.1.0");
        assert_eq!(VersionInfo::for_input(Some("")).cni_version, "1.1.0");
    }
}
