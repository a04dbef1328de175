//! The Traffic Selector payloads TSi and TSr (RFC 7296 §3.13): address ranges with an
//! IP protocol and a port range, IPv4 and IPv6.

use std::net::IpAddr;

use super::reader::Reader;
use super::{DecodeError, EncodeError};

pub const TS_IPV4_ADDR_RANGE: u8 = 7;
pub const TS_IPV6_ADDR_RANGE: u8 = 8;

/// One traffic selector. Both addresses are of the same family; the type on the wire
/// follows from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// 0 for any protocol.
    pub ip_protocol: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start_addr: IpAddr,
    pub end_addr: IpAddr,
}

impl TrafficSelector {
    /// Every address, port and protocol between `start` and `end`.
    pub fn range(start: IpAddr, end: IpAddr) -> Self {
        TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 0xffff,
            start_addr: start,
            end_addr: end,
        }
    }

    /// Every packet to and from the prefix.
    pub fn prefix(net: ipnet::IpNet) -> Self {
        TrafficSelector::range(net.network(), net.broadcast())
    }

    /// The part of `self` inside `other`, if any (RFC 7296 §2.9 narrowing).
    pub fn intersect(&self, other: &TrafficSelector) -> Option<TrafficSelector> {
        let proto = match (self.ip_protocol, other.ip_protocol) {
            (0, p) | (p, 0) => p,
            (a, b) if a == b => a,
            _ => return None,
        };
        let start_port = self.start_port.max(other.start_port);
        let end_port = self.end_port.min(other.end_port);
        let start_addr = self.start_addr.max(other.start_addr);
        let end_addr = self.end_addr.min(other.end_addr);
        let same_family = start_addr.is_ipv4() == end_addr.is_ipv4()
            && self.start_addr.is_ipv4() == other.start_addr.is_ipv4();
        (same_family && start_port <= end_port && start_addr <= end_addr).then_some(
            TrafficSelector {
                ip_protocol: proto,
                start_port,
                end_port,
                start_addr,
                end_addr,
            },
        )
    }

    /// Whether every packet `self` selects is also selected by `other`.
    pub fn is_within(&self, other: &TrafficSelector) -> bool {
        self.intersect(other).as_ref() == Some(self)
    }
}

fn malformed(reason: &'static str) -> DecodeError {
    DecodeError::Malformed {
        payload: "TS",
        reason,
    }
}

pub(crate) fn decode(body: &[u8]) -> Result<Vec<TrafficSelector>, DecodeError> {
    let mut r = Reader::new(body);
    let (Some(count), Some(_)) = (r.u8(), r.array::<3>()) else {
        return Err(DecodeError::Truncated {
            payload: "TS",
            what: "count and reserved",
        });
    };
    if count == 0 {
        return Err(malformed("no traffic selector"));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (Some(kind), Some(ip_protocol), Some(length), Some(start_port), Some(end_port)) =
            (r.u8(), r.u8(), r.u16(), r.u16(), r.u16())
        else {
            return Err(DecodeError::Truncated {
                payload: "TS",
                what: "selector header",
            });
        };
        let (start_addr, end_addr): (IpAddr, IpAddr) = match (kind, length) {
            (TS_IPV4_ADDR_RANGE, 16) => match (r.array::<4>(), r.array::<4>()) {
                (Some(a), Some(b)) => (a.into(), b.into()),
                _ => return Err(malformed("IPv4 range truncated")),
            },
            (TS_IPV6_ADDR_RANGE, 40) => match (r.array::<16>(), r.array::<16>()) {
                (Some(a), Some(b)) => (a.into(), b.into()),
                _ => return Err(malformed("IPv6 range truncated")),
            },
            (TS_IPV4_ADDR_RANGE | TS_IPV6_ADDR_RANGE, _) => {
                return Err(malformed("selector length does not fit its type"));
            }
            _ => return Err(malformed("unknown selector type")),
        };
        out.push(TrafficSelector {
            ip_protocol,
            start_port,
            end_port,
            start_addr,
            end_addr,
        });
    }
    if !r.is_empty() {
        return Err(malformed("bytes after the last selector"));
    }
    Ok(out)
}

pub(crate) fn encode(ts: &[TrafficSelector], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let count = u8::try_from(ts.len())
        .ok()
        .filter(|c| *c > 0)
        .ok_or(EncodeError::Invalid {
            payload: "TS",
            reason: "no selector, or more than 255",
        })?;
    out.extend_from_slice(&[count, 0, 0, 0]);
    for t in ts {
        let (kind, len) = match (t.start_addr, t.end_addr) {
            (IpAddr::V4(_), IpAddr::V4(_)) => (TS_IPV4_ADDR_RANGE, 16u16),
            (IpAddr::V6(_), IpAddr::V6(_)) => (TS_IPV6_ADDR_RANGE, 40),
            _ => {
                return Err(EncodeError::Invalid {
                    payload: "TS",
                    reason: "range mixes address families",
                });
            }
        };
        out.extend_from_slice(&[kind, t.ip_protocol]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&t.start_port.to_be_bytes());
        out.extend_from_slice(&t.end_port.to_be_bytes());
        for a in [t.start_addr, t.end_addr] {
            match a {
                IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
            }
        }
    }
    Ok(())
}
