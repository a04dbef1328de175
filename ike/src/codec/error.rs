//! Decode and encode errors. Each decode error names the part of the message that
//! was wrong and maps to the notify RFC 7296 §3.10.1 says to answer with
//! ([`DecodeError::notify`]).

use super::notify::NotifyType;

/// Why a message or payload cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("header: {len} bytes, shorter than the 28-byte IKE header")]
    ShortHeader { len: usize },
    #[error("header: length field {field} but the datagram has {actual} bytes")]
    LengthMismatch { field: u32, actual: usize },
    #[error("header: major version {major}, strait speaks 2")]
    InvalidMajorVersion { major: u8 },
    #[error("{payload}: truncated ({what})")]
    Truncated {
        payload: &'static str,
        what: &'static str,
    },
    #[error("payload type {kind}: length field {length} is impossible")]
    BadPayloadLength { kind: u8, length: u16 },
    #[error("payload type {kind}: unknown and marked critical")]
    UnsupportedCriticalPayload { kind: u8 },
    #[error("{payload}: malformed ({reason})")]
    Malformed {
        payload: &'static str,
        reason: &'static str,
    },
    #[error("SK: the encrypted payload is not the last payload")]
    EncryptedNotLast,
}

impl DecodeError {
    /// The notify to answer a request that failed with this error with, and its data.
    pub fn notify(&self) -> (NotifyType, Vec<u8>) {
        match self {
            DecodeError::InvalidMajorVersion { .. } => (NotifyType::InvalidMajorVersion, vec![]),
            DecodeError::UnsupportedCriticalPayload { kind } => {
                (NotifyType::UnsupportedCriticalPayload, vec![*kind])
            }
            _ => (NotifyType::InvalidSyntax, vec![]),
        }
    }
}

/// Why a value cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{payload}: {what} does not fit its length field")]
    TooLong {
        payload: &'static str,
        what: &'static str,
    },
    #[error("{payload}: {reason}")]
    Invalid {
        payload: &'static str,
        reason: &'static str,
    },
}
