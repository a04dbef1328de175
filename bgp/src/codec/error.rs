//! Decode errors, each naming the NOTIFICATION RFC 4271 §6 (and RFC 7313 for
//! ROUTE-REFRESH) prescribes, with its data.

use std::net::Ipv4Addr;

use super::notification::{Notification, codes};
use super::{HEADER_LEN, MAX_MESSAGE_LEN};

/// Why a message cannot be accepted. [`DecodeError::notification`] is what to send the
/// peer when the error ends the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message header: marker is not all ones (connection not synchronized)")]
    ConnectionNotSynchronized,
    #[error("message header: bad message length {length}")]
    BadMessageLength { length: u16 },
    #[error("message header: bad message type {kind}")]
    BadMessageType { kind: u8 },
    #[error("OPEN: unsupported version {version} (strait speaks 4)")]
    UnsupportedVersion { version: u8 },
    #[error("OPEN: bad peer AS {asn}")]
    BadPeerAs { asn: u32 },
    #[error("OPEN: bad BGP identifier {id}")]
    BadBgpIdentifier { id: Ipv4Addr },
    #[error("OPEN: unsupported optional parameter type {kind}")]
    UnsupportedOptionalParameter { kind: u8 },
    #[error("OPEN: unacceptable hold time {hold_time}")]
    UnacceptableHoldTime { hold_time: u16 },
    /// Raised by the session, not the codec: a capability strait requires that the peer
    /// did not send. `capabilities` are the encoded capabilities missing (RFC 5492 §5).
    #[error("OPEN: unsupported capability")]
    UnsupportedCapability { capabilities: Vec<u8> },
    #[error("OPEN: malformed ({reason})")]
    MalformedOpen { reason: &'static str },
    #[error("UPDATE: malformed attribute list ({reason})")]
    MalformedAttributeList { reason: &'static str },
    #[error("UPDATE: unrecognized well-known attribute")]
    UnrecognizedWellKnown { attribute: Vec<u8> },
    #[error("UPDATE: missing well-known attribute type {code}")]
    MissingWellKnown { code: u8 },
    #[error("UPDATE: attribute flags error")]
    AttributeFlags { attribute: Vec<u8> },
    #[error("UPDATE: attribute length error")]
    AttributeLength { attribute: Vec<u8> },
    #[error("UPDATE: invalid ORIGIN")]
    InvalidOrigin { attribute: Vec<u8> },
    #[error("UPDATE: invalid NEXT_HOP")]
    InvalidNextHop { attribute: Vec<u8> },
    #[error("UPDATE: optional attribute error")]
    OptionalAttribute { attribute: Vec<u8> },
    #[error("UPDATE: invalid network field ({reason})")]
    InvalidNetworkField { reason: &'static str },
    #[error("UPDATE: malformed AS_PATH ({reason})")]
    MalformedAsPath { reason: &'static str },
    #[error("ROUTE-REFRESH: invalid message length")]
    RouteRefreshLength { message: Vec<u8> },
}

impl DecodeError {
    /// The NOTIFICATION that reports this error to the peer.
    pub fn notification(&self) -> Notification {
        use DecodeError::*;
        let (code, subcode, data) = match self {
            ConnectionNotSynchronized => (codes::MESSAGE_HEADER, 1, vec![]),
            BadMessageLength { length } => {
                (codes::MESSAGE_HEADER, 2, length.to_be_bytes().to_vec())
            }
            BadMessageType { kind } => (codes::MESSAGE_HEADER, 3, vec![*kind]),
            // The data is the largest version we speak (RFC 4271 §6.2).
            UnsupportedVersion { .. } => (codes::OPEN, 1, 4u16.to_be_bytes().to_vec()),
            BadPeerAs { .. } => (codes::OPEN, 2, vec![]),
            BadBgpIdentifier { .. } => (codes::OPEN, 3, vec![]),
            UnsupportedOptionalParameter { .. } => (codes::OPEN, 4, vec![]),
            UnacceptableHoldTime { .. } => (codes::OPEN, 6, vec![]),
            UnsupportedCapability { capabilities } => (codes::OPEN, 7, capabilities.clone()),
            MalformedOpen { .. } => (codes::OPEN, 0, vec![]),
            MalformedAttributeList { .. } => (codes::UPDATE, 1, vec![]),
            UnrecognizedWellKnown { attribute } => (codes::UPDATE, 2, attribute.clone()),
            MissingWellKnown { code } => (codes::UPDATE, 3, vec![*code]),
            AttributeFlags { attribute } => (codes::UPDATE, 4, attribute.clone()),
            AttributeLength { attribute } => (codes::UPDATE, 5, attribute.clone()),
            InvalidOrigin { attribute } => (codes::UPDATE, 6, attribute.clone()),
            InvalidNextHop { attribute } => (codes::UPDATE, 8, attribute.clone()),
            OptionalAttribute { attribute } => (codes::UPDATE, 9, attribute.clone()),
            InvalidNetworkField { .. } => (codes::UPDATE, 10, vec![]),
            MalformedAsPath { .. } => (codes::UPDATE, 11, vec![]),
            RouteRefreshLength { message } => (codes::ROUTE_REFRESH, 1, message.clone()),
        };
        // The data must leave the NOTIFICATION within the 4096-octet limit.
        let mut data = data;
        data.truncate(MAX_MESSAGE_LEN - HEADER_LEN - 2);
        Notification {
            code,
            subcode,
            data,
        }
    }
}

/// A value the wire cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("message would be {length} octets, over the 4096 BGP allows")]
    TooLong { length: usize },
    #[error("{what} cannot be encoded")]
    Unrepresentable { what: &'static str },
    #[error("prefix {prefix} is not of the attribute's family")]
    WrongFamily { prefix: ipnet::IpNet },
}
