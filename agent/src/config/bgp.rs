//! The BGP fabric's settings (docs/bgp.md "Running it"): the keys `bgp_*` (flags and
//! TOML alike, defined in [`super::Keys`]), resolved (defaults: [`BgpSettings::default`])
//! and validated apart from the rest.

use std::net::{IpAddr, Ipv4Addr};

use strait_api::bgp::{BgpRole, DEFAULT_ASN, DEFAULT_PORT};

use super::{ConfigError, Keys};

/// RFC 4724's restart time is 12 bits.
pub const MAX_GRACEFUL_RESTART_SECS: u64 = 4095;
/// Restart time announced, and how long peers' routes are kept while they restart.
pub const DEFAULT_GRACEFUL_RESTART_SECS: u64 = 120;
/// RFC 6793 AS_TRANS: stands in for a 4-octet AS in 2-octet fields, never a real AS.
const AS_TRANS: u32 = 23456;

/// The resolved BGP settings (used with `--fabric bgp` only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpSettings {
    pub asn: u32,
    pub role: BgpRole,
    /// RFC 4456 cluster ID of a route reflector; `None`: its router ID.
    pub cluster_id: Option<Ipv4Addr>,
    /// `None`: the node's underlay IPv4 address.
    pub router_id: Option<Ipv4Addr>,
    pub port: u16,
    pub bfd: bool,
    /// Node-to-node mesh when there is no route reflector (`--no-bgp-node-mesh`: off).
    pub node_mesh: bool,
    /// 0: no graceful restart.
    pub graceful_restart_secs: u64,
}

impl Default for BgpSettings {
    fn default() -> Self {
        Self {
            asn: DEFAULT_ASN,
            role: BgpRole::Client,
            cluster_id: None,
            router_id: None,
            port: DEFAULT_PORT,
            bfd: true,
            node_mesh: true,
            graceful_restart_secs: DEFAULT_GRACEFUL_RESTART_SECS,
        }
    }
}

impl BgpSettings {
    /// Validated in every fabric mode, so a typo is caught before the fabric is
    /// switched to bgp.
    pub(super) fn from_keys(keys: &Keys) -> Result<Self, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let default = Self::default();
        let asn = keys.bgp_asn.unwrap_or(default.asn);
        if asn == 0 || asn == AS_TRANS {
            return invalid(format!(
                "bgp_asn {asn} is reserved (RFC 7607, RFC 6793): use a private AS such as \
                 {DEFAULT_ASN}"
            ));
        }
        let role = keys.bgp_role.unwrap_or(default.role);
        let cluster_id = match keys.bgp_cluster_id {
            None => None,
            Some(IpAddr::V4(id)) if !id.is_unspecified() => Some(id),
            Some(other) => {
                return invalid(format!(
                    "bgp_cluster_id {other}: an RFC 4456 cluster ID is a non-zero IPv4 address"
                ));
            }
        };
        if cluster_id.is_some() && role != BgpRole::Rr {
            return invalid(
                "bgp_cluster_id is a route reflector's: give it with --bgp-role rr".into(),
            );
        }
        let router_id = match keys.bgp_router_id {
            None => None,
            Some(IpAddr::V4(id)) if !id.is_unspecified() => Some(id),
            Some(other) => {
                return invalid(format!(
                    "bgp_router_id {other}: a BGP identifier is a non-zero IPv4 address"
                ));
            }
        };
        let port = keys.bgp_port.unwrap_or(default.port);
        if port == 0 {
            return invalid("bgp_port 0: give the TCP port BGP uses (179 by default)".into());
        }
        let bfd = keys.bgp_bfd.unwrap_or(default.bfd);
        let node_mesh = keys.bgp_node_mesh.unwrap_or(default.node_mesh);
        let graceful_restart_secs = keys
            .bgp_graceful_restart_secs
            .unwrap_or(default.graceful_restart_secs);
        if graceful_restart_secs > MAX_GRACEFUL_RESTART_SECS {
            return invalid(format!(
                "bgp_graceful_restart_secs {graceful_restart_secs} does not fit RFC 4724's \
                 12 bits (at most {MAX_GRACEFUL_RESTART_SECS})"
            ));
        }
        Ok(Self {
            asn,
            role,
            cluster_id,
            router_id,
            port,
            bfd,
            node_mesh,
            graceful_restart_secs,
        })
    }
}
