//! Path attributes (RFC 4271 §4.3, §5; RFC 4456; RFC 4760; RFC 6793; RFC 1997) and how
//! each one's errors are handled (RFC 7606 §7): session reset, treat-as-withdraw, or
//! attribute discard.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};

use super::{AS_TRANS, Context, DecodeError, EncodeError, Family, Reader, prefix};

pub(crate) const ORIGIN: u8 = 1;
pub(crate) const AS_PATH: u8 = 2;
pub(crate) const NEXT_HOP: u8 = 3;
const MULTI_EXIT_DISC: u8 = 4;
const LOCAL_PREF: u8 = 5;
const ATOMIC_AGGREGATE: u8 = 6;
const AGGREGATOR: u8 = 7;
const COMMUNITIES: u8 = 8;
const ORIGINATOR_ID: u8 = 9;
const CLUSTER_LIST: u8 = 10;
pub(crate) const MP_REACH_NLRI: u8 = 14;
pub(crate) const MP_UNREACH_NLRI: u8 = 15;
const AS4_PATH: u8 = 17;

pub const FLAG_OPTIONAL: u8 = 0x80;
pub const FLAG_TRANSITIVE: u8 = 0x40;
pub const FLAG_PARTIAL: u8 = 0x20;
const FLAG_EXTENDED_LENGTH: u8 = 0x10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    Set = 1,
    Sequence = 2,
    /// RFC 5065.
    ConfedSequence = 3,
    ConfedSet = 4,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsSegment {
    pub kind: SegmentKind,
    /// 1 to 255 AS numbers.
    pub asns: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// The length the decision process compares (RFC 4271 §9.1.2.2 a): a set counts
    /// as one, confederation segments not at all.
    pub fn length(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentKind::Sequence => s.asns.len(),
                SegmentKind::Set => 1,
                SegmentKind::ConfedSequence | SegmentKind::ConfedSet => 0,
            })
            .sum()
    }

    pub fn contains(&self, asn: u32) -> bool {
        self.segments.iter().any(|s| s.asns.contains(&asn))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    V4(Ipv4Addr),
    /// RFC 2545 §3: a global address, and a link-local one when the peer shares the
    /// link.
    V6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
}

/// MP_REACH_NLRI for a family strait carries (RFC 4760 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    pub family: Family,
    pub next_hop: NextHop,
    pub nlri: Vec<IpNet>,
}

/// MP_UNREACH_NLRI (RFC 4760 §4). With no prefixes it is the family's End-of-RIB
/// marker (RFC 4724 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    pub family: Family,
    pub withdrawn: Vec<IpNet>,
}

/// An optional transitive attribute strait does not know, passed on as received with
/// the Partial bit set (RFC 4271 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAttribute {
    /// The flags octet without the Extended Length bit (the encoder picks that).
    pub flags: u8,
    pub code: u8,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathAttribute {
    Origin(Origin),
    AsPath(AsPath),
    NextHop(Ipv4Addr),
    MultiExitDisc(u32),
    LocalPref(u32),
    AtomicAggregate,
    Aggregator {
        asn: u32,
        address: Ipv4Addr,
    },
    /// RFC 1997.
    Communities(Vec<u32>),
    /// RFC 4456 §8.
    OriginatorId(Ipv4Addr),
    ClusterList(Vec<Ipv4Addr>),
    MpReach(MpReach),
    MpUnreach(MpUnreach),
    /// RFC 6793 §3: only between a 4-octet and a 2-octet speaker.
    As4Path(AsPath),
    Unknown(RawAttribute),
}

/// What RFC 7606 does with an UPDATE holding a malformed attribute, mildest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Severity {
    Discard,
    Withdraw,
    Reset,
}

/// An attribute error and how the UPDATE carrying it is handled.
pub(crate) type Fault = (Severity, DecodeError);

/// The path attributes of an UPDATE in wire order, and the faults found in them. An
/// `Err` is a list whose structure cannot be trusted: the session is reset.
pub(crate) fn decode_all(
    buf: &[u8],
    ctx: &Context,
) -> Result<(Vec<PathAttribute>, Vec<Fault>), DecodeError> {
    let mut r = Reader::new(buf);
    let mut seen = [false; 256];
    let mut attrs = Vec::new();
    let mut faults = Vec::new();
    let list = |reason| DecodeError::MalformedAttributeList { reason };
    while !r.is_empty() {
        let whole = r.rest();
        let (Some(flags), Some(code)) = (r.u8(), r.u8()) else {
            return Err(list("truncated attribute header"));
        };
        let len = if flags & FLAG_EXTENDED_LENGTH != 0 {
            r.u16()
        } else {
            r.u8().map(u16::from)
        }
        .ok_or(list("truncated attribute length"))?;
        let value = r
            .take(usize::from(len))
            .ok_or(list("attribute overruns the attribute list"))?;
        let raw = &whole[..whole.len() - r.rest().len()];
        // RFC 7606 §3 g: a repeated MP attribute is fatal, any other repeat is dropped.
        if std::mem::replace(&mut seen[usize::from(code)], true) {
            if code == MP_REACH_NLRI || code == MP_UNREACH_NLRI {
                return Err(list("MP attribute repeated"));
            }
            continue;
        }
        match decode_one(flags, code, value, raw, ctx) {
            Ok(Some(a)) => attrs.push(a),
            Ok(None) => {}
            Err(fault) => faults.push(fault),
        }
    }
    Ok((attrs, faults))
}

/// The flags a recognized attribute must carry (optional, transitive), and whether
/// Partial may be set; `None` for an attribute strait does not know.
fn expected_flags(code: u8) -> Option<(u8, bool)> {
    Some(match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => (FLAG_TRANSITIVE, false),
        MULTI_EXIT_DISC | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH_NLRI | MP_UNREACH_NLRI => {
            (FLAG_OPTIONAL, false)
        }
        AGGREGATOR | COMMUNITIES | AS4_PATH => (FLAG_OPTIONAL | FLAG_TRANSITIVE, true),
        _ => return None,
    })
}

/// RFC 7606 §7: how a malformed instance of each recognized attribute is handled.
fn severity(code: u8) -> Severity {
    match code {
        ATOMIC_AGGREGATE | AGGREGATOR | AS4_PATH => Severity::Discard,
        MP_REACH_NLRI | MP_UNREACH_NLRI => Severity::Reset,
        _ => Severity::Withdraw,
    }
}

fn decode_one(
    flags: u8,
    code: u8,
    value: &[u8],
    raw: &[u8],
    ctx: &Context,
) -> Result<Option<PathAttribute>, Fault> {
    let Some((class, partial_ok)) = expected_flags(code) else {
        return unknown(flags, code, value, raw);
    };
    let sev = severity(code);
    let attribute = raw.to_vec();
    // RFC 7606 §3 c: a flags error is handled as the attribute's own malformation.
    if flags & (FLAG_OPTIONAL | FLAG_TRANSITIVE) != class
        || (!partial_ok && flags & FLAG_PARTIAL != 0)
    {
        return Err((sev, DecodeError::AttributeFlags { attribute }));
    }
    let length_error = || {
        (
            sev,
            DecodeError::AttributeLength {
                attribute: raw.to_vec(),
            },
        )
    };
    let four = |v: &[u8]| <[u8; 4]>::try_from(v).map_err(|_| length_error());
    let attr = match code {
        ORIGIN => match value {
            [0] => PathAttribute::Origin(Origin::Igp),
            [1] => PathAttribute::Origin(Origin::Egp),
            [2] => PathAttribute::Origin(Origin::Incomplete),
            [_] => return Err((sev, DecodeError::InvalidOrigin { attribute })),
            _ => return Err(length_error()),
        },
        AS_PATH => {
            let width = if ctx.four_octet_as { 4 } else { 2 };
            PathAttribute::AsPath(
                decode_as_path(value, width)
                    .map_err(|reason| (sev, DecodeError::MalformedAsPath { reason }))?,
            )
        }
        NEXT_HOP => {
            let a = Ipv4Addr::from(four(value)?);
            // RFC 4271 §6.3: a next hop that cannot be a host's address.
            if a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
                return Err((sev, DecodeError::InvalidNextHop { attribute }));
            }
            PathAttribute::NextHop(a)
        }
        MULTI_EXIT_DISC => PathAttribute::MultiExitDisc(u32::from_be_bytes(four(value)?)),
        LOCAL_PREF => PathAttribute::LocalPref(u32::from_be_bytes(four(value)?)),
        ATOMIC_AGGREGATE if value.is_empty() => PathAttribute::AtomicAggregate,
        ATOMIC_AGGREGATE => return Err(length_error()),
        AGGREGATOR => {
            let mut r = Reader::new(value);
            let asn = match (ctx.four_octet_as, value.len()) {
                (true, 8) => r.u32(),
                (false, 6) => r.u16().map(u32::from),
                _ => None,
            };
            match (asn, r.array::<4>()) {
                (Some(asn), Some(a)) => PathAttribute::Aggregator {
                    asn,
                    address: Ipv4Addr::from(a),
                },
                _ => return Err(length_error()),
            }
        }
        COMMUNITIES => {
            if value.is_empty() || !value.len().is_multiple_of(4) {
                return Err(length_error());
            }
            PathAttribute::Communities(
                value
                    .chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        }
        ORIGINATOR_ID => PathAttribute::OriginatorId(Ipv4Addr::from(four(value)?)),
        CLUSTER_LIST => {
            if value.is_empty() || !value.len().is_multiple_of(4) {
                return Err(length_error());
            }
            PathAttribute::ClusterList(
                value
                    .chunks_exact(4)
                    .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                    .collect(),
            )
        }
        MP_REACH_NLRI => match decode_mp_reach(value, ctx) {
            Ok(Some(m)) => PathAttribute::MpReach(m),
            Ok(None) => return Ok(None),
            Err(()) => return Err((sev, DecodeError::OptionalAttribute { attribute })),
        },
        MP_UNREACH_NLRI => match decode_mp_unreach(value, ctx) {
            Ok(Some(m)) => PathAttribute::MpUnreach(m),
            Ok(None) => return Ok(None),
            Err(()) => return Err((sev, DecodeError::OptionalAttribute { attribute })),
        },
        AS4_PATH => {
            // RFC 6793 §4.1: between 4-octet speakers AS4_PATH means nothing.
            if ctx.four_octet_as {
                return Ok(None);
            }
            let path = decode_as_path(value, 4)
                .map_err(|reason| (sev, DecodeError::MalformedAsPath { reason }))?;
            // RFC 6793 §6: confederation segments make AS4_PATH malformed.
            if path
                .segments
                .iter()
                .any(|s| matches!(s.kind, SegmentKind::ConfedSequence | SegmentKind::ConfedSet))
            {
                return Err((
                    sev,
                    DecodeError::MalformedAsPath {
                        reason: "confederation segment in AS4_PATH",
                    },
                ));
            }
            PathAttribute::As4Path(path)
        }
        _ => return unknown(flags, code, value, raw),
    };
    Ok(Some(attr))
}

/// RFC 4271 §5 and §6.3: an unknown well-known attribute ends the session, an unknown
/// optional transitive one is kept and marked Partial, an optional non-transitive one
/// is dropped.
fn unknown(flags: u8, code: u8, value: &[u8], raw: &[u8]) -> Result<Option<PathAttribute>, Fault> {
    if flags & FLAG_OPTIONAL == 0 {
        return Err((
            Severity::Reset,
            DecodeError::UnrecognizedWellKnown {
                attribute: raw.to_vec(),
            },
        ));
    }
    if flags & FLAG_TRANSITIVE == 0 {
        return Ok(None);
    }
    Ok(Some(PathAttribute::Unknown(RawAttribute {
        // The low four bits are unused: ignored on receipt, zero when sent.
        flags: (flags & 0xe0) | FLAG_PARTIAL,
        code,
        value: value.to_vec(),
    })))
}

fn decode_as_path(value: &[u8], width: usize) -> Result<AsPath, &'static str> {
    let mut r = Reader::new(value);
    let mut segments = Vec::new();
    while !r.is_empty() {
        let (Some(kind), Some(count)) = (r.u8(), r.u8()) else {
            return Err("truncated segment header");
        };
        let kind = match kind {
            1 => SegmentKind::Set,
            2 => SegmentKind::Sequence,
            3 => SegmentKind::ConfedSequence,
            4 => SegmentKind::ConfedSet,
            _ => return Err("unknown segment type"),
        };
        // RFC 7606 §7.2: a zero-length segment is malformed.
        if count == 0 {
            return Err("empty segment");
        }
        let asns = r
            .take(usize::from(count) * width)
            .ok_or("segment overruns the attribute")?;
        let asns = asns
            .chunks_exact(width)
            .map(|c| match c {
                [a, b] => u32::from(u16::from_be_bytes([*a, *b])),
                [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
                _ => 0,
            })
            .collect();
        segments.push(AsSegment { kind, asns });
    }
    Ok(AsPath { segments })
}

/// The family of an MP attribute, `None` when it is not one this session carries.
fn mp_family(r: &mut Reader<'_>, ctx: &Context) -> Result<Option<Family>, ()> {
    let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
        return Err(());
    };
    Ok(Family::from_afi_safi(super::AfiSafi { afi, safi }).filter(|f| ctx.carries(*f)))
}

fn decode_mp_reach(value: &[u8], ctx: &Context) -> Result<Option<MpReach>, ()> {
    let mut r = Reader::new(value);
    let Some(family) = mp_family(&mut r, ctx)? else {
        return Ok(None);
    };
    let nh_len = r.u8().ok_or(())?;
    let nh = r.take(usize::from(nh_len)).ok_or(())?;
    let v6_allowed = match family {
        Family::Ipv4Unicast => ctx.ipv4_via_ipv6,
        Family::Ipv6Unicast => true,
    };
    let next_hop = match (family, nh.len()) {
        (Family::Ipv4Unicast, 4) => NextHop::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])),
        // RFC 8950 §4 for IPv4 NLRI, RFC 2545 §3 for IPv6: global, then link-local.
        (_, 16 | 32) if v6_allowed => {
            let global = <[u8; 16]>::try_from(&nh[..16]).map_err(|_| ())?;
            let link_local = nh.get(16..32).and_then(|b| <[u8; 16]>::try_from(b).ok());
            NextHop::V6 {
                global: Ipv6Addr::from(global),
                link_local: link_local.map(Ipv6Addr::from),
            }
        }
        _ => return Err(()),
    };
    // The reserved octet (formerly SNPAs), ignored on receipt.
    r.u8().ok_or(())?;
    let nlri = prefix::decode(r.rest(), family).map_err(|_| ())?;
    Ok(Some(MpReach {
        family,
        next_hop,
        nlri,
    }))
}

fn decode_mp_unreach(value: &[u8], ctx: &Context) -> Result<Option<MpUnreach>, ()> {
    let mut r = Reader::new(value);
    let Some(family) = mp_family(&mut r, ctx)? else {
        return Ok(None);
    };
    let withdrawn = prefix::decode(r.rest(), family).map_err(|_| ())?;
    Ok(Some(MpUnreach { family, withdrawn }))
}

/// Append `attr`, header included.
pub(crate) fn encode(
    attr: &PathAttribute,
    ctx: &Context,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let mut v = Vec::new();
    let code = match attr {
        PathAttribute::Origin(o) => {
            v.push(*o as u8);
            ORIGIN
        }
        PathAttribute::AsPath(p) => {
            encode_as_path(p, if ctx.four_octet_as { 4 } else { 2 }, &mut v)?;
            AS_PATH
        }
        PathAttribute::NextHop(a) => {
            v.extend_from_slice(&a.octets());
            NEXT_HOP
        }
        PathAttribute::MultiExitDisc(m) => {
            v.extend_from_slice(&m.to_be_bytes());
            MULTI_EXIT_DISC
        }
        PathAttribute::LocalPref(l) => {
            v.extend_from_slice(&l.to_be_bytes());
            LOCAL_PREF
        }
        PathAttribute::AtomicAggregate => ATOMIC_AGGREGATE,
        PathAttribute::Aggregator { asn, address } => {
            if ctx.four_octet_as {
                v.extend_from_slice(&asn.to_be_bytes());
            } else {
                v.extend_from_slice(&u16::try_from(*asn).unwrap_or(AS_TRANS).to_be_bytes());
            }
            v.extend_from_slice(&address.octets());
            AGGREGATOR
        }
        PathAttribute::Communities(cs) => {
            if cs.is_empty() {
                return Err(EncodeError::Unrepresentable {
                    what: "empty COMMUNITIES",
                });
            }
            cs.iter()
                .for_each(|c| v.extend_from_slice(&c.to_be_bytes()));
            COMMUNITIES
        }
        PathAttribute::OriginatorId(a) => {
            v.extend_from_slice(&a.octets());
            ORIGINATOR_ID
        }
        PathAttribute::ClusterList(ids) => {
            if ids.is_empty() {
                return Err(EncodeError::Unrepresentable {
                    what: "empty CLUSTER_LIST",
                });
            }
            ids.iter().for_each(|a| v.extend_from_slice(&a.octets()));
            CLUSTER_LIST
        }
        PathAttribute::MpReach(m) => {
            v.extend_from_slice(&m.family.afi_safi().afi.to_be_bytes());
            v.push(m.family.afi_safi().safi);
            match (m.family, m.next_hop) {
                (Family::Ipv4Unicast, NextHop::V4(a)) => {
                    v.push(4);
                    v.extend_from_slice(&a.octets());
                }
                // IPv4 NLRI with an IPv6 next hop only where RFC 8950 was negotiated.
                (family, NextHop::V6 { global, link_local })
                    if family == Family::Ipv6Unicast || ctx.ipv4_via_ipv6 =>
                {
                    v.push(if link_local.is_some() { 32 } else { 16 });
                    v.extend_from_slice(&global.octets());
                    if let Some(ll) = link_local {
                        v.extend_from_slice(&ll.octets());
                    }
                }
                _ => {
                    return Err(EncodeError::Unrepresentable {
                        what: "next hop of another family",
                    });
                }
            }
            v.push(0);
            prefix::encode(&m.nlri, m.family, &mut v)?;
            MP_REACH_NLRI
        }
        PathAttribute::MpUnreach(m) => {
            v.extend_from_slice(&m.family.afi_safi().afi.to_be_bytes());
            v.push(m.family.afi_safi().safi);
            prefix::encode(&m.withdrawn, m.family, &mut v)?;
            MP_UNREACH_NLRI
        }
        PathAttribute::As4Path(p) => {
            encode_as_path(p, 4, &mut v)?;
            AS4_PATH
        }
        PathAttribute::Unknown(raw) => {
            v.extend_from_slice(&raw.value);
            raw.code
        }
    };
    let mut flags = match attr {
        PathAttribute::Unknown(raw) => raw.flags & 0xe0,
        _ => expected_flags(code)
            .map(|(f, _)| f)
            .unwrap_or(FLAG_OPTIONAL | FLAG_TRANSITIVE),
    };
    let len = u16::try_from(v.len()).map_err(|_| EncodeError::Unrepresentable {
        what: "attribute over 65535 octets",
    })?;
    if len > 255 {
        flags |= FLAG_EXTENDED_LENGTH;
    }
    out.push(flags);
    out.push(code);
    if len > 255 {
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(len as u8);
    }
    out.extend_from_slice(&v);
    Ok(())
}

/// AS numbers over 65535 become AS_TRANS in a 2-octet path; the caller sends the real
/// path in AS4_PATH (RFC 6793 §4.2.2).
fn encode_as_path(p: &AsPath, width: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    for s in &p.segments {
        let count = u8::try_from(s.asns.len()).ok().filter(|c| *c > 0).ok_or(
            EncodeError::Unrepresentable {
                what: "AS_PATH segment of 0 or over 255 ASes",
            },
        )?;
        out.push(s.kind as u8);
        out.push(count);
        for asn in &s.asns {
            if width == 4 {
                out.extend_from_slice(&asn.to_be_bytes());
            } else {
                out.extend_from_slice(&u16::try_from(*asn).unwrap_or(AS_TRANS).to_be_bytes());
            }
        }
    }
    Ok(())
}

/// An IPv4 prefix as an `IpNet`, for callers mixing classic and MP NLRI.
pub(crate) fn v4(n: &Ipv4Net) -> IpNet {
    IpNet::V4(*n)
}
