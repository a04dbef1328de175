//! The 19-octet message header (RFC 4271 §4.1): marker, length, type.

use super::{DecodeError, EncodeError, HEADER_LEN, MAX_MESSAGE_LEN};

const MARKER: [u8; 16] = [0xff; 16];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Open = 1,
    Update = 2,
    Notification = 3,
    Keepalive = 4,
    RouteRefresh = 5,
}

impl MessageType {
    fn from_u8(t: u8) -> Option<Self> {
        Some(match t {
            1 => MessageType::Open,
            2 => MessageType::Update,
            3 => MessageType::Notification,
            4 => MessageType::Keepalive,
            5 => MessageType::RouteRefresh,
            _ => return None,
        })
    }

    /// The shortest (and for fixed-size messages the only) length of this type, so a
    /// length below it is a header error (RFC 4271 §6.1) rather than a body error.
    fn length_ok(self, len: usize) -> bool {
        match self {
            MessageType::Open => len >= 29,
            MessageType::Update => len >= 23,
            MessageType::Notification => len >= 21,
            MessageType::Keepalive => len == HEADER_LEN,
            // A wrong ROUTE-REFRESH length has its own error (RFC 7313 §5), raised by
            // the body decoder.
            MessageType::RouteRefresh => true,
        }
    }
}

/// For a stream reader: once `buf` holds a header, the length of the whole message it
/// starts; `None` while fewer than 19 octets have arrived. Checks what must hold before
/// the length can be trusted: the marker and the length range.
pub fn frame_length(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    if head[..16] != MARKER {
        return Err(DecodeError::ConnectionNotSynchronized);
    }
    let len = u16::from_be_bytes([head[16], head[17]]);
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&usize::from(len)) {
        return Err(DecodeError::BadMessageLength { length: len });
    }
    Ok(Some(usize::from(len)))
}

/// Check the header of the whole message `buf` and return its type and body.
pub(crate) fn split(buf: &[u8]) -> Result<(MessageType, &[u8]), DecodeError> {
    let Some(len) = frame_length(buf)? else {
        return Err(DecodeError::BadMessageLength {
            length: buf.len() as u16,
        });
    };
    if len != buf.len() {
        return Err(DecodeError::BadMessageLength { length: len as u16 });
    }
    let kind =
        MessageType::from_u8(buf[18]).ok_or(DecodeError::BadMessageType { kind: buf[18] })?;
    if !kind.length_ok(len) {
        return Err(DecodeError::BadMessageLength { length: len as u16 });
    }
    Ok((kind, &buf[HEADER_LEN..]))
}

/// A buffer holding the header of a `kind` message, its length still zero.
pub(crate) fn start(kind: MessageType) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&[0, 0, kind as u8]);
    out
}

/// Fill in the length of a message built on [`start`].
pub(crate) fn finish(mut out: Vec<u8>) -> Result<Vec<u8>, EncodeError> {
    if out.len() > MAX_MESSAGE_LEN {
        return Err(EncodeError::TooLong { length: out.len() });
    }
    let len = (out.len() as u16).to_be_bytes();
    out[16..18].copy_from_slice(&len);
    Ok(out)
}
