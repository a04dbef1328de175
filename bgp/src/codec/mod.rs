//! The BGP-4 wire codec: every message of RFC 4271 and the extensions strait speaks
//! (capabilities RFC 5492, MP-BGP RFC 4760, route refresh RFC 2918, 4-octet AS RFC 6793,
//! graceful restart RFC 4724), decoded into typed values and encoded back.
//!
//! Decoding never panics. A message that must end the session decodes to a
//! [`DecodeError`], which names the NOTIFICATION to send ([`DecodeError::notification`]).
//! An UPDATE that RFC 7606 lets the session survive decodes to
//! [`Decoded::TreatAsWithdraw`] (its routes are withdrawn) or loses only the broken
//! attribute ("attribute discard"). Encoding is the inverse of decoding: a decoded
//! message encodes to bytes that decode to the same value.
//!
//! How an UPDATE is read depends on what the OPENs negotiated (2- or 4-octet AS numbers,
//! the address families): that is the [`Context`] both directions take.

mod attributes;
mod error;
mod header;
mod notification;
mod open;
mod prefix;
mod reader;
mod update;

pub use attributes::{
    AsPath, AsSegment, MpReach, MpUnreach, NextHop, Origin, PathAttribute, RawAttribute,
    SegmentKind,
};
pub use error::{DecodeError, EncodeError};
pub use header::{MessageType, frame_length};
pub use notification::{Notification, codes};
pub use open::{Capability, ExtendedNextHop, GracefulRestart, GracefulRestartFamily, Open};
pub use update::Update;

use reader::Reader;

/// The message header's length (RFC 4271 §4.1). Here rather than in `header`, so
/// that `error` (which truncates NOTIFICATION data to fit) and `header` (which uses
/// the error types) do not import each other.
pub const HEADER_LEN: usize = 19;
/// RFC 4271 §4.1; strait does not negotiate RFC 8654 extended messages.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// The 2-octet stand-in for a 4-octet AS number (RFC 6793 §9).
pub const AS_TRANS: u16 = 23456;

/// An address family as capabilities and MP attributes name it, whether or not strait
/// routes it (RFC 4760 §3 and the IANA registries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AfiSafi {
    pub afi: u16,
    pub safi: u8,
}

impl AfiSafi {
    pub const IPV4_UNICAST: AfiSafi = AfiSafi { afi: 1, safi: 1 };
    pub const IPV6_UNICAST: AfiSafi = AfiSafi { afi: 2, safi: 1 };
}

/// The address families strait carries routes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    pub fn afi_safi(self) -> AfiSafi {
        match self {
            Family::Ipv4Unicast => AfiSafi::IPV4_UNICAST,
            Family::Ipv6Unicast => AfiSafi::IPV6_UNICAST,
        }
    }

    pub fn from_afi_safi(a: AfiSafi) -> Option<Family> {
        match a {
            AfiSafi::IPV4_UNICAST => Some(Family::Ipv4Unicast),
            AfiSafi::IPV6_UNICAST => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }
}

/// What the two OPENs negotiated that changes how UPDATEs are read and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// Both sides sent the 4-octet AS capability: AS_PATH and AGGREGATOR carry 4-octet
    /// AS numbers, and AS4_PATH is not used (RFC 6793 §4.1).
    pub four_octet_as: bool,
    /// Families both sides announced (IPv4 unicast is implied without MP-BGP). MP
    /// attributes of other families are ignored, as FRR and BIRD do.
    pub families: Vec<Family>,
    /// Both sides sent the Extended Next Hop Encoding capability for IPv4 unicast
    /// with IPv6 next hops (RFC 8950): IPv4 routes may then come and go in
    /// MP_REACH_NLRI with a 16- or 32-octet IPv6 next hop.
    pub ipv4_via_ipv6: bool,
}

impl Default for Context {
    /// Before any capability is negotiated: what RFC 4271 alone allows.
    fn default() -> Self {
        Context {
            four_octet_as: false,
            families: vec![Family::Ipv4Unicast],
            ipv4_via_ipv6: false,
        }
    }
}

impl Context {
    /// A session that negotiated everything strait speaks.
    pub fn modern() -> Self {
        Context {
            four_octet_as: true,
            families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
            ipv4_via_ipv6: true,
        }
    }

    fn carries(&self, family: Family) -> bool {
        self.families.contains(&family)
    }
}

/// A ROUTE-REFRESH request for one family (RFC 2918; the reserved octet is RFC 7313's
/// message subtype, kept as sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi_safi: AfiSafi,
    pub subtype: u8,
}

/// One BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

impl Message {
    pub fn kind(&self) -> MessageType {
        match self {
            Message::Open(_) => MessageType::Open,
            Message::Update(_) => MessageType::Update,
            Message::Notification(_) => MessageType::Notification,
            Message::Keepalive => MessageType::Keepalive,
            Message::RouteRefresh(_) => MessageType::RouteRefresh,
        }
    }
}

/// What decoding a well-framed message gives when the session survives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Message(Message),
    /// An UPDATE whose attributes are malformed in a way RFC 7606 §2 handles by
    /// "treat-as-withdraw": every prefix it names, announced or withdrawn, in any family,
    /// is withdrawn, and the session stays up. `error` is for the log.
    TreatAsWithdraw {
        withdrawn: Vec<ipnet::IpNet>,
        error: DecodeError,
    },
}

/// Decode one whole message (`buf` is exactly the bytes [`frame_length`] announced).
pub fn decode(buf: &[u8], ctx: &Context) -> Result<Decoded, DecodeError> {
    let (kind, body) = header::split(buf)?;
    let message = match kind {
        MessageType::Open => Message::Open(open::decode(body)?),
        MessageType::Update => return update::decode(body, ctx),
        MessageType::Notification => Message::Notification(notification::decode(body)),
        MessageType::Keepalive => Message::Keepalive,
        MessageType::RouteRefresh => {
            let mut r = Reader::new(body);
            let (Some(afi), Some(subtype), Some(safi), true) =
                (r.u16(), r.u8(), r.u8(), body.len() == 4)
            else {
                return Err(DecodeError::RouteRefreshLength {
                    message: buf.to_vec(),
                });
            };
            Message::RouteRefresh(RouteRefresh {
                afi_safi: AfiSafi { afi, safi },
                subtype,
            })
        }
    };
    Ok(Decoded::Message(message))
}

/// Encode one message, header included.
pub fn encode(msg: &Message, ctx: &Context) -> Result<Vec<u8>, EncodeError> {
    let mut out = header::start(msg.kind());
    match msg {
        Message::Open(o) => open::encode(o, &mut out)?,
        Message::Update(u) => update::encode(u, ctx, &mut out)?,
        Message::Notification(n) => notification::encode(n, &mut out),
        Message::Keepalive => {}
        Message::RouteRefresh(r) => {
            out.extend_from_slice(&r.afi_safi.afi.to_be_bytes());
            out.push(r.subtype);
            out.push(r.afi_safi.safi);
        }
    }
    header::finish(out)
}
