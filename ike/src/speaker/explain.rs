//! The plain words a failed negotiation is reported in, for the log and for
//! `netctl ipsec peers`: proposals named as strongSwan prints them
//! (`IKE:AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048`), traffic selectors as
//! ranges, and what the peer's error notifies mean for whoever configures us.

use std::net::IpAddr;

use crate::codec::{NotifyType, Proposal, ProtocolId, TrafficSelector, Transform, transform_type};

use super::{Config, proposal};

/// One transform as strongSwan names it; unknown ones as `TYPE_ID`.
pub(crate) fn transform_name(t: &Transform) -> String {
    let bits = t.key_length();
    let with_bits = |name: &str| match bits {
        Some(b) => format!("{name}_{b}"),
        None => name.to_string(),
    };
    let known = match (t.kind, t.id) {
        (transform_type::ENCR, 3) => Some("3DES".to_string()),
        (transform_type::ENCR, 12) => Some(with_bits("AES_CBC")),
        (transform_type::ENCR, 13) => Some(with_bits("AES_CTR")),
        (transform_type::ENCR, 14) => Some(with_bits("AES_CCM_8")),
        (transform_type::ENCR, 15) => Some(with_bits("AES_CCM_12")),
        (transform_type::ENCR, 16) => Some(with_bits("AES_CCM_16")),
        (transform_type::ENCR, 18) => Some(with_bits("AES_GCM_8")),
        (transform_type::ENCR, 19) => Some(with_bits("AES_GCM_12")),
        (transform_type::ENCR, 20) => Some(with_bits("AES_GCM_16")),
        (transform_type::ENCR, 23) => Some(with_bits("CAMELLIA_CBC")),
        (transform_type::ENCR, 28) => Some("CHACHA20_POLY1305".to_string()),
        (transform_type::PRF, 1) => Some("PRF_HMAC_MD5".to_string()),
        (transform_type::PRF, 2) => Some("PRF_HMAC_SHA1".to_string()),
        (transform_type::PRF, 4) => Some("PRF_AES128_XCBC".to_string()),
        (transform_type::PRF, 5) => Some("PRF_HMAC_SHA2_256".to_string()),
        (transform_type::PRF, 6) => Some("PRF_HMAC_SHA2_384".to_string()),
        (transform_type::PRF, 7) => Some("PRF_HMAC_SHA2_512".to_string()),
        (transform_type::PRF, 8) => Some("PRF_AES128_CMAC".to_string()),
        (transform_type::INTEG, 1) => Some("HMAC_MD5_96".to_string()),
        (transform_type::INTEG, 2) => Some("HMAC_SHA1_96".to_string()),
        (transform_type::INTEG, 5) => Some("AES_XCBC_96".to_string()),
        (transform_type::INTEG, 8) => Some("AES_CMAC_96".to_string()),
        (transform_type::INTEG, 12) => Some("HMAC_SHA2_256_128".to_string()),
        (transform_type::INTEG, 13) => Some("HMAC_SHA2_384_192".to_string()),
        (transform_type::INTEG, 14) => Some("HMAC_SHA2_512_256".to_string()),
        (transform_type::DH, 1) => Some("MODP_768".to_string()),
        (transform_type::DH, 2) => Some("MODP_1024".to_string()),
        (transform_type::DH, 5) => Some("MODP_1536".to_string()),
        (transform_type::DH, 14) => Some("MODP_2048".to_string()),
        (transform_type::DH, 15) => Some("MODP_3072".to_string()),
        (transform_type::DH, 16) => Some("MODP_4096".to_string()),
        (transform_type::DH, 17) => Some("MODP_6144".to_string()),
        (transform_type::DH, 18) => Some("MODP_8192".to_string()),
        (transform_type::DH, 19) => Some("ECP_256".to_string()),
        (transform_type::DH, 20) => Some("ECP_384".to_string()),
        (transform_type::DH, 21) => Some("ECP_521".to_string()),
        (transform_type::DH, 31) => Some("CURVE_25519".to_string()),
        (transform_type::DH, 32) => Some("CURVE_448".to_string()),
        (transform_type::ESN, 0) => Some("NO_EXT_SEQ".to_string()),
        (transform_type::ESN, 1) => Some("EXT_SEQ".to_string()),
        _ => None,
    };
    known.unwrap_or_else(|| {
        let kind = match t.kind {
            transform_type::ENCR => "ENCR",
            transform_type::PRF => "PRF",
            transform_type::INTEG => "INTEG",
            transform_type::DH => "DH",
            transform_type::ESN => "ESN",
            _ => "TRANSFORM",
        };
        format!("{kind}_{}", t.id)
    })
}

/// Proposals as strongSwan logs them, `IKE:A/B/C, ESP:D/E`.
pub(crate) fn proposals(ps: &[Proposal]) -> String {
    if ps.is_empty() {
        return "nothing".into();
    }
    ps.iter()
        .map(|p| {
            let protocol = match p.protocol {
                ProtocolId::Ike => "IKE".to_string(),
                ProtocolId::Esp => "ESP".to_string(),
                ProtocolId::Ah => "AH".to_string(),
                ProtocolId::Other(n) => format!("PROTOCOL_{n}"),
            };
            let ts: Vec<String> = p.transforms.iter().map(transform_name).collect();
            format!("{protocol}:{}", ts.join("/"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The responder's reason when no IKE proposal of the peer fits.
pub(crate) fn ike_mismatch(config: &Config, offers: &[Proposal]) -> String {
    format!(
        "the peer proposed only {}; we accept {}",
        proposals(offers),
        proposals(&proposal::ike_offer(config, Vec::new()))
    )
}

/// The responder's reason when no ESP proposal of the peer fits.
pub(crate) fn esp_mismatch(config: &Config, offers: &[Proposal]) -> String {
    format!(
        "the peer proposed only {} for the Child SA; we accept {}",
        proposals(offers),
        proposals(&proposal::esp_offer(config, 0, None))
    )
}

/// Traffic selectors as `netctl` and the log show them: `10.0.1.0/24` (a prefix) or
/// `10.0.1.5-10.0.1.9`, with the protocol and ports when they are narrower than all.
pub fn selectors(ts: &[TrafficSelector]) -> String {
    if ts.is_empty() {
        return "none".into();
    }
    ts.iter().map(selector).collect::<Vec<_>>().join(", ")
}

fn selector(t: &TrafficSelector) -> String {
    let mut s = match ipnet::IpNet::new(t.start_addr, prefix_len(t.start_addr, t.end_addr)) {
        Ok(net) if net.network() == t.start_addr && net.broadcast() == t.end_addr => {
            net.to_string()
        }
        _ => format!("{}-{}", t.start_addr, t.end_addr),
    };
    if t.ip_protocol != 0 {
        s.push_str(&format!(" proto {}", t.ip_protocol));
    }
    if (t.start_port, t.end_port) != (0, 65535) {
        s.push_str(&format!(" ports {}-{}", t.start_port, t.end_port));
    }
    s
}

/// The prefix length a range would have if it were a prefix.
fn prefix_len(start: IpAddr, end: IpAddr) -> u8 {
    match (start, end) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros() as u8,
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros() as u8,
        _ => 0,
    }
}

/// The responder's reason when the peer's selectors and ours have nothing in common.
pub(crate) fn ts_mismatch(
    config: &Config,
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
) -> String {
    format!(
        "the peer proposed traffic selectors {} === {}; we allow {} === {}",
        selectors(tsi),
        selectors(tsr),
        selectors(&config.remote_ts),
        selectors(&config.local_ts)
    )
}

/// What the initiator says when the responder refused `stage` ("IKE_SA_INIT" or
/// "the Child SA") with `kind`.
pub(crate) fn refused(config: &Config, kind: NotifyType, child: bool) -> String {
    match kind {
        NotifyType::NoProposalChosen if child => format!(
            "the peer accepted none of our Child SA proposals (NO_PROPOSAL_CHOSEN; we offered {})",
            proposals(&proposal::esp_offer(config, 0, None))
        ),
        NotifyType::NoProposalChosen => format!(
            "the peer accepted none of our proposals (NO_PROPOSAL_CHOSEN; we offered {})",
            proposals(&proposal::ike_offer(config, Vec::new()))
        ),
        NotifyType::TsUnacceptable => format!(
            "the peer refused our traffic selectors (TS_UNACCEPTABLE; we offered {} === {})",
            selectors(&config.local_ts),
            selectors(&config.remote_ts)
        ),
        NotifyType::AuthenticationFailed => super::auth_exchange::PEER_REFUSED_OUR_AUTH.into(),
        other if child => format!("the peer refused the Child SA with {other:?}"),
        other => format!("the peer refused IKE_SA_INIT with {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Identity;

    #[test]
    fn transforms_are_named_as_strongswan_names_them() {
        let p = Proposal {
            number: 1,
            protocol: ProtocolId::Ike,
            spi: vec![],
            transforms: vec![
                Transform::with_key_length(transform_type::ENCR, 12, 128),
                Transform::new(transform_type::INTEG, 2),
                Transform::new(transform_type::PRF, 2),
                Transform::new(transform_type::DH, 14),
                Transform::new(transform_type::DH, 99),
            ],
        };
        assert_eq!(
            proposals(&[p]),
            "IKE:AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048/DH_99"
        );
        let config = Config::new(Identity::Fqdn("a".into()));
        assert_eq!(
            proposals(&proposal::ike_offer(&config, vec![])),
            "IKE:AES_GCM_16_256/AES_GCM_16_128/PRF_HMAC_SHA2_384/PRF_HMAC_SHA2_256/CURVE_25519/ECP_256"
        );
    }

    #[test]
    fn selectors_print_as_prefixes_or_ranges() {
        let net = TrafficSelector::prefix("10.1.0.0/16".parse().unwrap());
        let range =
            TrafficSelector::range("10.0.0.5".parse().unwrap(), "10.0.0.9".parse().unwrap());
        let all6 = TrafficSelector::prefix("::/0".parse().unwrap());
        assert_eq!(
            selectors(&[net, range, all6]),
            "10.1.0.0/16, 10.0.0.5-10.0.0.9, ::/0"
        );
    }
}
