//! What strait offers in SA payloads and how it chooses from, or checks, the other
//! side's: one IKE proposal listing every configured cipher, PRF and group; one ESP
//! proposal listing every cipher and ESN option (and, for a PFS rekey, the group).
//! Traffic selectors are narrowed to what the configuration allows (RFC 7296 §2.9).

use crate::codec::{NotifyType, Proposal, ProtocolId, TrafficSelector, Transform, transform_type};
use crate::crypto::prf::Prf;
use crate::crypto::suite::{Cipher, ESN_NONE, ESN_ON, Group};

use super::Config;

/// What an IKE SA runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeSuite {
    pub cipher: Cipher,
    pub prf: Prf,
    pub group: Group,
}

/// What a Child SA runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspSuite {
    pub cipher: Cipher,
    pub esn: bool,
    /// The PFS group of a CREATE_CHILD_SA; none for the Child SA of IKE_AUTH.
    pub group: Option<Group>,
}

pub(crate) fn ike_offer(config: &Config, spi: Vec<u8>) -> Vec<Proposal> {
    let mut transforms: Vec<Transform> = config.ike_ciphers.iter().map(|c| c.transform()).collect();
    transforms.extend(config.prfs.iter().map(|p| p.transform()));
    transforms.extend(config.groups.iter().map(|g| g.transform()));
    vec![Proposal {
        number: 1,
        protocol: ProtocolId::Ike,
        spi,
        transforms,
    }]
}

fn esn_transform(esn: bool) -> Transform {
    Transform::new(transform_type::ESN, if esn { ESN_ON } else { ESN_NONE })
}

pub(crate) fn esp_offer(config: &Config, spi: u32, group: Option<Group>) -> Vec<Proposal> {
    let mut transforms: Vec<Transform> = config.esp_ciphers.iter().map(|c| c.transform()).collect();
    transforms.extend(group.map(Group::transform));
    transforms.extend(config.esn.iter().map(|e| esn_transform(*e)));
    vec![Proposal {
        number: 1,
        protocol: ProtocolId::Esp,
        spi: spi.to_be_bytes().to_vec(),
        transforms,
    }]
}

/// The first of `ours` (in our order of preference) that `theirs` offers.
fn pick<T: Copy + PartialEq>(
    ours: &[T],
    theirs: &[Transform],
    from: impl Fn(&Transform) -> Option<T>,
) -> Option<T> {
    let offered: Vec<T> = theirs.iter().filter_map(&from).collect();
    ours.iter().copied().find(|o| offered.contains(o))
}

/// The responder's choice of an IKE proposal; `ke_group` is the group of the KE the
/// initiator sent, preferred when both sides accept it so that no INVALID_KE round
/// trip is needed.
pub(crate) fn choose_ike(
    config: &Config,
    offers: &[Proposal],
    ke_group: Option<u16>,
) -> Result<(u8, IkeSuite), NotifyType> {
    for p in offers {
        if p.protocol != ProtocolId::Ike
            || p.transforms.iter().any(Transform::has_unknown_attribute)
        {
            continue;
        }
        let cipher = pick(&config.ike_ciphers, &p.transforms, Cipher::from_transform);
        let prf = pick(&config.prfs, &p.transforms, |t| {
            (t.kind == transform_type::PRF)
                .then(|| Prf::from_id(t.id))
                .flatten()
        });
        let groups: Vec<Group> = p
            .of_type(transform_type::DH)
            .filter_map(|t| Group::from_id(t.id))
            .filter(|g| config.groups.contains(g))
            .collect();
        let group = ke_group
            .and_then(Group::from_id)
            .filter(|g| groups.contains(g))
            .or_else(|| config.groups.iter().copied().find(|g| groups.contains(g)));
        if let (Some(cipher), Some(prf), Some(group)) = (cipher, prf, group) {
            return Ok((p.number, IkeSuite { cipher, prf, group }));
        }
    }
    Err(NotifyType::NoProposalChosen)
}

pub(crate) fn ike_answer(number: u8, spi: Vec<u8>, s: IkeSuite) -> Vec<Proposal> {
    vec![Proposal {
        number,
        protocol: ProtocolId::Ike,
        spi,
        transforms: vec![s.cipher.transform(), s.prf.transform(), s.group.transform()],
    }]
}

/// The initiator's check of the responder's IKE choice: one proposal, one transform
/// of each type, each one we offered, with the SPI size `spi_len`.
pub(crate) fn check_ike_answer(
    config: &Config,
    answer: &[Proposal],
    spi_len: usize,
) -> Result<IkeSuite, &'static str> {
    let [p] = answer else {
        return Err("the responder chose more or less than one proposal");
    };
    if p.protocol != ProtocolId::Ike || p.spi.len() != spi_len {
        return Err("the responder's proposal is not an IKE proposal of the right SPI size");
    }
    let one = |kind| {
        let mut it = p.of_type(kind);
        match (it.next(), it.next()) {
            (Some(t), None) => Some(t),
            _ => None,
        }
    };
    if p.transforms.len() != 3 {
        return Err("the responder's proposal has transforms besides ENCR, PRF and DH");
    }
    let cipher = one(transform_type::ENCR).and_then(Cipher::from_transform);
    let prf = one(transform_type::PRF).and_then(|t| Prf::from_id(t.id));
    let group = one(transform_type::DH).and_then(|t| Group::from_id(t.id));
    match (cipher, prf, group) {
        (Some(cipher), Some(prf), Some(group))
            if config.ike_ciphers.contains(&cipher)
                && config.prfs.contains(&prf)
                && config.groups.contains(&group) =>
        {
            Ok(IkeSuite { cipher, prf, group })
        }
        _ => Err("the responder chose a transform that was not offered"),
    }
}

/// The responder's choice of an ESP proposal. `ke_group` is the group of the KE
/// payload of a CREATE_CHILD_SA (PFS), `None` in IKE_AUTH or without PFS.
pub(crate) fn choose_esp(
    config: &Config,
    offers: &[Proposal],
    ke_group: Option<u16>,
) -> Result<(u8, u32, EspSuite), NotifyType> {
    let mut invalid_ke = false;
    for p in offers {
        if p.protocol != ProtocolId::Esp || p.spi.len() != 4 {
            continue;
        }
        let Some(cipher) = pick(&config.esp_ciphers, &p.transforms, Cipher::from_transform) else {
            continue;
        };
        let esns: Vec<bool> = p
            .of_type(transform_type::ESN)
            .filter_map(|t| match t.id {
                ESN_NONE => Some(false),
                ESN_ON => Some(true),
                _ => None,
            })
            .collect();
        let esn = if esns.is_empty() {
            Some(false)
        } else {
            config.esn.iter().copied().find(|e| esns.contains(e))
        };
        let Some(esn) = esn else { continue };
        let offered_groups: Vec<u16> = p.of_type(transform_type::DH).map(|t| t.id).collect();
        let group = match ke_group {
            None => None,
            Some(g) => match Group::from_id(g) {
                Some(grp) if offered_groups.contains(&g) && config.groups.contains(&grp) => {
                    Some(grp)
                }
                _ => {
                    invalid_ke = true;
                    continue;
                }
            },
        };
        let spi = u32::from_be_bytes([p.spi[0], p.spi[1], p.spi[2], p.spi[3]]);
        return Ok((p.number, spi, EspSuite { cipher, esn, group }));
    }
    Err(if invalid_ke {
        NotifyType::InvalidKePayload
    } else {
        NotifyType::NoProposalChosen
    })
}

pub(crate) fn esp_answer(number: u8, spi: u32, s: EspSuite) -> Vec<Proposal> {
    let mut transforms = vec![s.cipher.transform()];
    transforms.extend(s.group.map(Group::transform));
    transforms.push(esn_transform(s.esn));
    vec![Proposal {
        number,
        protocol: ProtocolId::Esp,
        spi: spi.to_be_bytes().to_vec(),
        transforms,
    }]
}

/// The initiator's check of the responder's ESP choice; gives the responder's SPI.
pub(crate) fn check_esp_answer(
    config: &Config,
    answer: &[Proposal],
    group: Option<Group>,
) -> Result<(u32, EspSuite), &'static str> {
    let [p] = answer else {
        return Err("the responder chose more or less than one ESP proposal");
    };
    let Ok(spi) = <[u8; 4]>::try_from(&p.spi[..]) else {
        return Err("the responder's ESP SPI is not 4 bytes");
    };
    if p.protocol != ProtocolId::Esp || p.number != 1 {
        return Err("the responder's proposal is not the ESP proposal offered");
    }
    let encr: Vec<_> = p.of_type(transform_type::ENCR).collect();
    let esn: Vec<_> = p.of_type(transform_type::ESN).collect();
    let dh: Vec<_> = p.of_type(transform_type::DH).collect();
    if encr.len() != 1 || esn.len() > 1 || encr.len() + esn.len() + dh.len() != p.transforms.len() {
        return Err("the responder's ESP proposal has the wrong number of transforms");
    }
    let cipher = Cipher::from_transform(encr[0])
        .filter(|c| config.esp_ciphers.contains(c))
        .ok_or("the responder chose an ESP cipher that was not offered")?;
    let esn = match esn.first().map(|t| t.id) {
        None => false,
        Some(ESN_NONE) => false,
        Some(ESN_ON) => true,
        Some(_) => return Err("the responder chose an ESN value that was not offered"),
    };
    if !config.esn.contains(&esn) {
        return Err("the responder chose an ESN value that was not offered");
    }
    let chosen_group = dh.first().map(|t| t.id);
    if chosen_group != group.map(Group::id) {
        return Err("the responder's PFS group differs from the one offered");
    }
    Ok((u32::from_be_bytes(spi), EspSuite { cipher, esn, group }))
}

/// The responder's narrowing: each proposed selector cut to what `allowed` covers.
pub(crate) fn narrow(
    proposed: &[TrafficSelector],
    allowed: &[TrafficSelector],
) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = Vec::new();
    for p in proposed {
        for a in allowed {
            if let Some(t) = p.intersect(a)
                && !out.contains(&t)
            {
                out.push(t);
            }
        }
    }
    out
}

/// The initiator's check: every selector the responder chose lies inside one it was
/// offered.
pub(crate) fn within_offer(chosen: &[TrafficSelector], offered: &[TrafficSelector]) -> bool {
    !chosen.is_empty()
        && chosen
            .iter()
            .all(|c| offered.iter().any(|o| c.is_within(o)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> TrafficSelector {
        TrafficSelector::prefix(s.parse().unwrap())
    }

    #[test]
    fn a_selector_outside_the_offer_is_refused() {
        let offered = [ts("10.0.0.0/16")];
        assert!(within_offer(&[ts("10.0.1.0/24")], &offered));
        assert!(!within_offer(&[ts("10.1.0.0/24")], &offered));
        assert!(!within_offer(&[ts("10.0.0.0/8")], &offered));
        assert!(!within_offer(&[], &offered));
    }

    #[test]
    fn narrowing_keeps_what_both_allow() {
        let got = narrow(
            &[ts("10.0.0.0/8")],
            &[ts("10.1.0.0/16"), ts("192.168.0.0/16")],
        );
        assert_eq!(got, vec![ts("10.1.0.0/16")]);
    }

    #[test]
    fn an_esp_answer_not_offered_is_refused() {
        let mut config = Config::new(crate::codec::Identity::Fqdn("a".into()));
        config.esp_ciphers = vec![Cipher::AesGcm16_256];
        let (_, _, suite) = choose_esp(&config, &esp_offer(&config, 0x1000, None), None).unwrap();
        let good = esp_answer(1, 0x2000, suite);
        assert_eq!(check_esp_answer(&config, &good, None).unwrap().0, 0x2000);
        let bad = esp_answer(
            1,
            0x2000,
            EspSuite {
                cipher: Cipher::AesGcm16_128,
                ..suite
            },
        );
        assert!(check_esp_answer(&config, &bad, None).is_err());
    }
}
