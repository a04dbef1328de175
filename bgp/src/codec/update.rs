//! UPDATE (RFC 4271 §4.3): withdrawn IPv4 routes, path attributes, IPv4 NLRI; other
//! families travel in the MP attributes. Decoding applies RFC 7606: the worst fault
//! among the attributes decides between session reset, treat-as-withdraw and dropping
//! the broken attribute.

use ipnet::{IpNet, Ipv4Net};

use super::attributes::{self, PathAttribute, Severity};
use super::{Context, DecodeError, Decoded, EncodeError, Family, Message, Reader, prefix};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    pub withdrawn: Vec<Ipv4Net>,
    pub attributes: Vec<PathAttribute>,
    pub nlri: Vec<Ipv4Net>,
}

impl Update {
    pub fn mp_reach(&self) -> Option<&attributes::MpReach> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::MpReach(m) => Some(m),
            _ => None,
        })
    }

    pub fn mp_unreach(&self) -> Option<&attributes::MpUnreach> {
        self.attributes.iter().find_map(|a| match a {
            PathAttribute::MpUnreach(m) => Some(m),
            _ => None,
        })
    }

    /// The family this UPDATE marks End-of-RIB for (RFC 4724 §2): an empty UPDATE for
    /// IPv4 unicast, an UPDATE holding only an empty MP_UNREACH_NLRI for the others.
    pub fn end_of_rib(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(Family::Ipv4Unicast),
            [PathAttribute::MpUnreach(m)] if m.withdrawn.is_empty() => Some(m.family),
            _ => None,
        }
    }

    /// Every prefix this UPDATE names, announced or withdrawn, in every family.
    pub fn all_prefixes(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self.withdrawn.iter().map(attributes::v4).collect();
        out.extend(self.nlri.iter().map(attributes::v4));
        if let Some(m) = self.mp_reach() {
            out.extend_from_slice(&m.nlri);
        }
        if let Some(m) = self.mp_unreach() {
            out.extend_from_slice(&m.withdrawn);
        }
        out
    }
}

fn v4_prefixes(buf: &[u8]) -> Result<Vec<Ipv4Net>, DecodeError> {
    let nets = prefix::decode(buf, Family::Ipv4Unicast)
        .map_err(|reason| DecodeError::InvalidNetworkField { reason })?;
    Ok(nets
        .into_iter()
        .filter_map(|n| match n {
            IpNet::V4(n) => Some(n),
            IpNet::V6(_) => None,
        })
        .collect())
}

pub(crate) fn decode(body: &[u8], ctx: &Context) -> Result<Decoded, DecodeError> {
    let mut r = Reader::new(body);
    let list = |reason| DecodeError::MalformedAttributeList { reason };
    let withdrawn_len = r.u16().ok_or(list("no withdrawn routes length"))?;
    let withdrawn = r
        .take(usize::from(withdrawn_len))
        .ok_or(list("withdrawn routes overrun the message"))?;
    let attrs_len = r.u16().ok_or(list("no total path attribute length"))?;
    let attrs = r
        .take(usize::from(attrs_len))
        .ok_or(list("path attributes overrun the message"))?;
    // RFC 7606 §5.3: a broken NLRI or withdrawn field cannot be withdrawn selectively.
    let withdrawn = v4_prefixes(withdrawn)?;
    let nlri = v4_prefixes(r.rest())?;
    let (attributes, mut faults) = attributes::decode_all(attrs, ctx)?;
    let update = Update {
        withdrawn,
        attributes,
        nlri,
    };
    // RFC 7606 §3 d: well-known attributes missing from an UPDATE that announces
    // routes; NEXT_HOP only where the IPv4 NLRI field needs it (RFC 4760 §3).
    if !update.nlri.is_empty() || update.mp_reach().is_some() {
        let has = |code| {
            update.attributes.iter().any(|a| {
                matches!(
                    (a, code),
                    (PathAttribute::Origin(_), attributes::ORIGIN)
                        | (PathAttribute::AsPath(_), attributes::AS_PATH)
                        | (PathAttribute::NextHop(_), attributes::NEXT_HOP)
                )
            })
        };
        let mut needed = vec![attributes::ORIGIN, attributes::AS_PATH];
        if !update.nlri.is_empty() {
            needed.push(attributes::NEXT_HOP);
        }
        // A malformed attribute is reported as itself, not also as missing.
        let already = faults.iter().any(|(s, _)| *s >= Severity::Withdraw);
        if !already && let Some(code) = needed.into_iter().find(|c| !has(*c)) {
            faults.push((Severity::Withdraw, DecodeError::MissingWellKnown { code }));
        }
    }
    let worst = faults.iter().max_by_key(|(s, _)| *s).cloned();
    match worst {
        Some((Severity::Reset, e)) => Err(e),
        Some((Severity::Withdraw, error)) => Ok(Decoded::TreatAsWithdraw {
            withdrawn: update.all_prefixes(),
            error,
        }),
        // Attribute discard: the broken attributes are already left out.
        Some((Severity::Discard, _)) | None => Ok(Decoded::Message(Message::Update(update))),
    }
}

pub(crate) fn encode(u: &Update, ctx: &Context, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut withdrawn = Vec::new();
    let v4: Vec<IpNet> = u.withdrawn.iter().map(attributes::v4).collect();
    prefix::encode(&v4, Family::Ipv4Unicast, &mut withdrawn)?;
    let mut attrs = Vec::new();
    for a in &u.attributes {
        attributes::encode(a, ctx, &mut attrs)?;
    }
    let too_long = |_| EncodeError::TooLong {
        length: withdrawn.len() + attrs.len(),
    };
    out.extend_from_slice(
        &u16::try_from(withdrawn.len())
            .map_err(too_long)?
            .to_be_bytes(),
    );
    out.extend_from_slice(&withdrawn);
    out.extend_from_slice(&u16::try_from(attrs.len()).map_err(too_long)?.to_be_bytes());
    out.extend_from_slice(&attrs);
    let nlri: Vec<IpNet> = u.nlri.iter().map(attributes::v4).collect();
    prefix::encode(&nlri, Family::Ipv4Unicast, out)
}
