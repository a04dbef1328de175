//! The IKEv2 wire codec (RFC 7296 §3): the header, the generic payload header with its
//! critical bit, and every payload strait reads or writes, decoded into typed values
//! and encoded back.
//!
//! Decoding never panics and checks every length. An unknown payload is skipped
//! unless its critical bit is set, which is [`DecodeError::UnsupportedCriticalPayload`].
//! The Encrypted payload (SK, §3.14) is decoded as opaque bytes ([`Encrypted`]): the
//! SA's keys open it ([`crate::crypto::sk`]) and its plaintext is another payload
//! chain, read with [`decode_chain`]. The Encrypted Fragment payload (SKF, RFC 7383)
//! is opaque the same way ([`EncryptedFragment`]). Encoding is the inverse of decoding: a decoded
//! message encodes to bytes that decode to the same value.

mod error;
mod fragment;
mod id;
mod notify;
mod reader;
mod sa;
mod ts;

pub use error::{DecodeError, EncodeError};
pub use fragment::{EncryptedFragment, FRAGMENT_FIELDS_LEN};
pub use id::Identity;
pub use notify::{Delete, Notify, NotifyType};
pub use sa::{ATTR_KEY_LENGTH, Attribute, Proposal, Transform, transform_type};
pub use ts::{TS_IPV4_ADDR_RANGE, TS_IPV6_ADDR_RANGE, TrafficSelector};

use reader::Reader;

/// The fixed IKE header (§3.1).
pub const HEADER_LEN: usize = 28;
/// The generic payload header (§3.2).
pub const PAYLOAD_HEADER_LEN: usize = 4;

/// Payload type numbers (IANA "IKEv2 Payload Types").
pub mod payload_type {
    pub const NONE: u8 = 0;
    pub const SA: u8 = 33;
    pub const KE: u8 = 34;
    pub const IDI: u8 = 35;
    pub const IDR: u8 = 36;
    pub const CERT: u8 = 37;
    pub const CERTREQ: u8 = 38;
    pub const AUTH: u8 = 39;
    pub const NONCE: u8 = 40;
    pub const NOTIFY: u8 = 41;
    pub const DELETE: u8 = 42;
    pub const VENDOR: u8 = 43;
    pub const TSI: u8 = 44;
    pub const TSR: u8 = 45;
    pub const SK: u8 = 46;
    /// The Encrypted Fragment payload (RFC 7383).
    pub const SKF: u8 = 53;
}

/// CERT/CERTREQ encodings strait uses.
pub mod cert_encoding {
    pub const X509_SIGNATURE: u8 = 4;
    /// A bare SubjectPublicKeyInfo (RFC 7670).
    pub const RAW_PUBLIC_KEY: u8 = 15;
}

/// Exchange types (§3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeType {
    IkeSaInit,
    IkeAuth,
    CreateChildSa,
    Informational,
    Other(u8),
}

impl ExchangeType {
    pub fn from_u8(v: u8) -> Self {
        match v {
            34 => ExchangeType::IkeSaInit,
            35 => ExchangeType::IkeAuth,
            36 => ExchangeType::CreateChildSa,
            37 => ExchangeType::Informational,
            v => ExchangeType::Other(v),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            ExchangeType::IkeSaInit => 34,
            ExchangeType::IkeAuth => 35,
            ExchangeType::CreateChildSa => 36,
            ExchangeType::Informational => 37,
            ExchangeType::Other(v) => v,
        }
    }
}

/// Security protocol identifiers (§3.3.1), in proposals, notifies and deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolId {
    Ike,
    Ah,
    Esp,
    Other(u8),
}

impl ProtocolId {
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => ProtocolId::Ike,
            2 => ProtocolId::Ah,
            3 => ProtocolId::Esp,
            v => ProtocolId::Other(v),
        }
    }

    pub fn to_u8(self) -> u8 {
        match self {
            ProtocolId::Ike => 1,
            ProtocolId::Ah => 2,
            ProtocolId::Esp => 3,
            ProtocolId::Other(v) => v,
        }
    }
}

/// The IKE header without its two derived fields (next payload and length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub spi_i: u64,
    pub spi_r: u64,
    /// Kept as received; the major version is always 2.
    pub minor_version: u8,
    pub exchange: ExchangeType,
    /// The I flag: sent by the original initiator of the IKE SA.
    pub initiator: bool,
    /// The V flag: the sender could speak a higher major version.
    pub version: bool,
    /// The R flag: this message is a response.
    pub response: bool,
    pub message_id: u32,
}

impl Header {
    fn flags(&self) -> u8 {
        (u8::from(self.initiator) << 3)
            | (u8::from(self.version) << 4)
            | (u8::from(self.response) << 5)
    }

    /// The 28 header bytes for a message whose first payload is `next` and whose
    /// total length is `length`.
    pub fn encode(&self, next: u8, length: u32) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&self.spi_i.to_be_bytes());
        h[8..16].copy_from_slice(&self.spi_r.to_be_bytes());
        h[16] = next;
        h[17] = 0x20 | (self.minor_version & 0x0f);
        h[18] = self.exchange.to_u8();
        h[19] = self.flags();
        h[20..24].copy_from_slice(&self.message_id.to_be_bytes());
        h[24..28].copy_from_slice(&length.to_be_bytes());
        h
    }

    /// The header of a datagram and its first payload's type, checking the length
    /// field against the datagram and the major version.
    pub fn decode(buf: &[u8]) -> Result<(Header, u8), DecodeError> {
        let mut r = Reader::new(buf);
        let (Some(spi_i), Some(spi_r), Some(next), Some(version), Some(exchange), Some(flags)) =
            (r.u64(), r.u64(), r.u8(), r.u8(), r.u8(), r.u8())
        else {
            return Err(DecodeError::ShortHeader { len: buf.len() });
        };
        let (Some(message_id), Some(length)) = (r.u32(), r.u32()) else {
            return Err(DecodeError::ShortHeader { len: buf.len() });
        };
        if version >> 4 != 2 {
            return Err(DecodeError::InvalidMajorVersion {
                major: version >> 4,
            });
        }
        if length as usize != buf.len() {
            return Err(DecodeError::LengthMismatch {
                field: length,
                actual: buf.len(),
            });
        }
        Ok((
            Header {
                spi_i,
                spi_r,
                minor_version: version & 0x0f,
                exchange: ExchangeType::from_u8(exchange),
                initiator: flags & 0x08 != 0,
                version: flags & 0x10 != 0,
                response: flags & 0x20 != 0,
                message_id,
            },
            next,
        ))
    }
}

/// The Encrypted payload as it travels: IV, ciphertext and ICV in `data`, and the type
/// of the first payload inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    pub first_inner: u8,
    pub data: Vec<u8>,
}

/// One payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Sa(Vec<Proposal>),
    Ke {
        group: u16,
        data: Vec<u8>,
    },
    IdI(Identity),
    IdR(Identity),
    Cert {
        encoding: u8,
        data: Vec<u8>,
    },
    CertReq {
        encoding: u8,
        data: Vec<u8>,
    },
    Auth {
        method: u8,
        data: Vec<u8>,
    },
    /// Ni or Nr: 16 to 256 bytes.
    Nonce(Vec<u8>),
    Notify(Notify),
    Delete(Delete),
    Vendor(Vec<u8>),
    TsI(Vec<TrafficSelector>),
    TsR(Vec<TrafficSelector>),
    Encrypted(Encrypted),
    EncryptedFragment(EncryptedFragment),
}

impl Payload {
    pub fn kind(&self) -> u8 {
        use payload_type::*;
        match self {
            Payload::Sa(_) => SA,
            Payload::Ke { .. } => KE,
            Payload::IdI(_) => IDI,
            Payload::IdR(_) => IDR,
            Payload::Cert { .. } => CERT,
            Payload::CertReq { .. } => CERTREQ,
            Payload::Auth { .. } => AUTH,
            Payload::Nonce(_) => NONCE,
            Payload::Notify(_) => NOTIFY,
            Payload::Delete(_) => DELETE,
            Payload::Vendor(_) => VENDOR,
            Payload::TsI(_) => TSI,
            Payload::TsR(_) => TSR,
            Payload::Encrypted(_) => SK,
            Payload::EncryptedFragment(_) => SKF,
        }
    }

    /// Decode one payload body of type `kind`; `None` for a type strait does not know.
    pub fn decode_body(kind: u8, body: &[u8]) -> Option<Result<Payload, DecodeError>> {
        use payload_type::*;
        let trunc = |payload, what| Err(DecodeError::Truncated { payload, what });
        Some(match kind {
            SA => sa::decode(body).map(Payload::Sa),
            KE => match body {
                [g0, g1, _, _, data @ ..] if !data.is_empty() => Ok(Payload::Ke {
                    group: u16::from_be_bytes([*g0, *g1]),
                    data: data.to_vec(),
                }),
                _ => trunc("KE", "group, reserved and key exchange data"),
            },
            IDI => Identity::decode(body).map(Payload::IdI),
            IDR => Identity::decode(body).map(Payload::IdR),
            CERT => match body {
                [encoding, data @ ..] if !data.is_empty() => Ok(Payload::Cert {
                    encoding: *encoding,
                    data: data.to_vec(),
                }),
                _ => trunc("CERT", "encoding and certificate data"),
            },
            CERTREQ => match body {
                [encoding, data @ ..] => Ok(Payload::CertReq {
                    encoding: *encoding,
                    data: data.to_vec(),
                }),
                _ => trunc("CERTREQ", "encoding"),
            },
            AUTH => match body {
                [method, _, _, _, data @ ..] if !data.is_empty() => Ok(Payload::Auth {
                    method: *method,
                    data: data.to_vec(),
                }),
                _ => trunc("AUTH", "method, reserved and authentication data"),
            },
            NONCE if (16..=256).contains(&body.len()) => Ok(Payload::Nonce(body.to_vec())),
            NONCE => Err(DecodeError::Malformed {
                payload: "Nonce",
                reason: "not between 16 and 256 bytes",
            }),
            NOTIFY => Notify::decode(body).map(Payload::Notify),
            DELETE => Delete::decode(body).map(Payload::Delete),
            VENDOR => Ok(Payload::Vendor(body.to_vec())),
            TSI => ts::decode(body).map(Payload::TsI),
            TSR => ts::decode(body).map(Payload::TsR),
            _ => return None,
        })
    }

    fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let invalid = |payload, reason| Err(EncodeError::Invalid { payload, reason });
        match self {
            Payload::Sa(p) => sa::encode(p, out)?,
            Payload::Ke { group, data } => {
                if data.is_empty() {
                    return invalid("KE", "empty key exchange data");
                }
                out.extend_from_slice(&group.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(data);
            }
            Payload::IdI(id) | Payload::IdR(id) => out.extend_from_slice(&id.encode_body()?),
            Payload::Cert { encoding, data } => {
                if data.is_empty() {
                    return invalid("CERT", "empty certificate data");
                }
                out.push(*encoding);
                out.extend_from_slice(data);
            }
            Payload::CertReq { encoding, data } => {
                out.push(*encoding);
                out.extend_from_slice(data);
            }
            Payload::Auth { method, data } => {
                if data.is_empty() {
                    return invalid("AUTH", "empty authentication data");
                }
                out.extend_from_slice(&[*method, 0, 0, 0]);
                out.extend_from_slice(data);
            }
            Payload::Nonce(n) => {
                if !(16..=256).contains(&n.len()) {
                    return invalid("Nonce", "not between 16 and 256 bytes");
                }
                out.extend_from_slice(n);
            }
            Payload::Notify(n) => n.encode(out)?,
            Payload::Delete(d) => d.encode(out)?,
            Payload::Vendor(v) => out.extend_from_slice(v),
            Payload::TsI(t) | Payload::TsR(t) => ts::encode(t, out)?,
            Payload::Encrypted(e) => out.extend_from_slice(&e.data),
            Payload::EncryptedFragment(f) => f.encode(out)?,
        }
        Ok(())
    }
}

/// Decode a payload chain starting with type `first`. An Encrypted payload (SK or
/// SKF) must be the last one (its next-payload field names the first payload inside
/// it); inside an Encrypted payload (`allow_sk` false) it is an error.
pub fn decode_chain(first: u8, buf: &[u8], allow_sk: bool) -> Result<Vec<Payload>, DecodeError> {
    let mut r = Reader::new(buf);
    let mut kind = first;
    let mut payloads = Vec::new();
    while kind != payload_type::NONE {
        let (Some(next), Some(flags), Some(length)) = (r.u8(), r.u8(), r.u16()) else {
            return Err(DecodeError::Truncated {
                payload: "generic payload header",
                what: "header",
            });
        };
        let Some(body) = (length as usize)
            .checked_sub(PAYLOAD_HEADER_LEN)
            .and_then(|n| r.take(n))
        else {
            return Err(DecodeError::BadPayloadLength { kind, length });
        };
        if kind == payload_type::SK || kind == payload_type::SKF {
            if !allow_sk || !r.is_empty() {
                return Err(DecodeError::EncryptedNotLast);
            }
            payloads.push(if kind == payload_type::SK {
                Payload::Encrypted(Encrypted {
                    first_inner: next,
                    data: body.to_vec(),
                })
            } else {
                Payload::EncryptedFragment(EncryptedFragment::decode(next, body)?)
            });
            return Ok(payloads);
        }
        match Payload::decode_body(kind, body) {
            Some(p) => payloads.push(p?),
            None if flags & 0x80 != 0 => {
                return Err(DecodeError::UnsupportedCriticalPayload { kind });
            }
            None => {} // RFC 7296 §2.5: skip an unknown payload not marked critical.
        }
        kind = next;
    }
    if !r.is_empty() {
        return Err(DecodeError::Malformed {
            payload: "message",
            reason: "bytes after the last payload",
        });
    }
    Ok(payloads)
}

/// Encode a payload chain; returns the type of its first payload (0 if empty). An
/// Encrypted payload, if any, must be last: its next-payload field is its
/// `first_inner`.
pub fn encode_chain(payloads: &[Payload], out: &mut Vec<u8>) -> Result<u8, EncodeError> {
    for (i, p) in payloads.iter().enumerate() {
        let next = match (p, payloads.get(i + 1)) {
            (Payload::Encrypted(e), None) => e.first_inner,
            (Payload::EncryptedFragment(f), None) => f.first_inner,
            (Payload::Encrypted(_) | Payload::EncryptedFragment(_), Some(_)) => {
                return Err(EncodeError::Invalid {
                    payload: "SK",
                    reason: "the encrypted payload must be last",
                });
            }
            (_, Some(n)) => n.kind(),
            (_, None) => payload_type::NONE,
        };
        let start = out.len();
        out.extend_from_slice(&[next, 0, 0, 0]);
        p.encode_body(out)?;
        let len = u16::try_from(out.len() - start).map_err(|_| EncodeError::TooLong {
            payload: "generic payload header",
            what: "payload",
        })?;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(payloads.first().map_or(payload_type::NONE, Payload::kind))
}

/// One IKE message as it travels (an Encrypted payload still sealed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Decode one whole datagram (without the non-ESP marker on port 4500).
    pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
        let (header, first) = Header::decode(buf)?;
        let payloads = decode_chain(first, &buf[HEADER_LEN..], true)?;
        Ok(Message { header, payloads })
    }

    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut body = Vec::new();
        let first = encode_chain(&self.payloads, &mut body)?;
        let length = u32::try_from(HEADER_LEN + body.len()).map_err(|_| EncodeError::TooLong {
            payload: "header",
            what: "message",
        })?;
        let mut out = self.header.encode(first, length).to_vec();
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// The first Notify of type `kind`, if any.
    pub fn notify(&self, kind: NotifyType) -> Option<&Notify> {
        find_notify(&self.payloads, kind)
    }
}

/// The first Notify of type `kind` in `payloads`.
pub fn find_notify(payloads: &[Payload], kind: NotifyType) -> Option<&Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind == kind => Some(n),
        _ => None,
    })
}
