//! The Security Association payload (RFC 7296 §3.3): proposals, their transforms, and
//! the transform attributes (only Key Length is defined, §3.3.5).

use super::reader::Reader;
use super::{DecodeError, EncodeError, ProtocolId};

/// Transform types (§3.3.2).
pub mod transform_type {
    pub const ENCR: u8 = 1;
    pub const PRF: u8 = 2;
    pub const INTEG: u8 = 3;
    pub const DH: u8 = 4;
    pub const ESN: u8 = 5;
}

/// The Key Length attribute type, always in the short (TV) format.
pub const ATTR_KEY_LENGTH: u16 = 14;

/// A transform attribute: `short` ones carry a 2-byte value in place of a length (the
/// AF bit is set), long ones a byte string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    Short { kind: u16, value: u16 },
    Long { kind: u16, value: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    pub kind: u8,
    pub id: u16,
    pub attributes: Vec<Attribute>,
}

impl Transform {
    pub fn new(kind: u8, id: u16) -> Self {
        Transform {
            kind,
            id,
            attributes: Vec::new(),
        }
    }

    pub fn with_key_length(kind: u8, id: u16, bits: u16) -> Self {
        Transform {
            kind,
            id,
            attributes: vec![Attribute::Short {
                kind: ATTR_KEY_LENGTH,
                value: bits,
            }],
        }
    }

    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Short {
                kind: ATTR_KEY_LENGTH,
                value,
            } => Some(*value),
            _ => None,
        })
    }

    /// Whether the transform carries an attribute other than Key Length: RFC 7296
    /// §3.3.6 says to reject the whole proposal then.
    pub fn has_unknown_attribute(&self) -> bool {
        self.attributes.iter().any(|a| {
            !matches!(
                a,
                Attribute::Short {
                    kind: ATTR_KEY_LENGTH,
                    ..
                }
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub number: u8,
    pub protocol: ProtocolId,
    pub spi: Vec<u8>,
    pub transforms: Vec<Transform>,
}

impl Proposal {
    /// The transforms of one type, in the order sent.
    pub fn of_type(&self, kind: u8) -> impl Iterator<Item = &Transform> {
        self.transforms.iter().filter(move |t| t.kind == kind)
    }
}

const MALFORMED: fn(&'static str) -> DecodeError = |reason| DecodeError::Malformed {
    payload: "SA",
    reason,
};

pub(crate) fn decode(body: &[u8]) -> Result<Vec<Proposal>, DecodeError> {
    let mut r = Reader::new(body);
    let mut proposals = Vec::new();
    loop {
        let (Some(last), Some(_), Some(length)) = (r.u8(), r.u8(), r.u16()) else {
            return Err(DecodeError::Truncated {
                payload: "SA",
                what: "proposal header",
            });
        };
        let Some(inner) = (length as usize).checked_sub(4).and_then(|n| r.take(n)) else {
            return Err(MALFORMED("proposal length"));
        };
        proposals.push(decode_proposal(inner)?);
        match (last, r.is_empty()) {
            (0, true) => return Ok(proposals),
            (2, false) => {}
            (0 | 2, _) => return Err(MALFORMED("last-proposal flag disagrees with the length")),
            _ => return Err(MALFORMED("last-substructure value of a proposal")),
        }
    }
}

fn decode_proposal(body: &[u8]) -> Result<Proposal, DecodeError> {
    let mut r = Reader::new(body);
    let short = DecodeError::Truncated {
        payload: "SA",
        what: "proposal",
    };
    let (Some(number), Some(protocol), Some(spi_size), Some(count)) =
        (r.u8(), r.u8(), r.u8(), r.u8())
    else {
        return Err(short);
    };
    let spi = r.take(spi_size as usize).ok_or(short)?.to_vec();
    let mut transforms = Vec::with_capacity(count as usize);
    for i in 0..count {
        let (Some(last), Some(_), Some(length)) = (r.u8(), r.u8(), r.u16()) else {
            return Err(DecodeError::Truncated {
                payload: "SA",
                what: "transform header",
            });
        };
        let Some(inner) = (length as usize).checked_sub(4).and_then(|n| r.take(n)) else {
            return Err(MALFORMED("transform length"));
        };
        let expected_last = if i + 1 == count { 0 } else { 3 };
        if last != expected_last {
            return Err(MALFORMED("last-transform flag disagrees with the count"));
        }
        transforms.push(decode_transform(inner)?);
    }
    if !r.is_empty() {
        return Err(MALFORMED("bytes after the last transform"));
    }
    Ok(Proposal {
        number,
        protocol: ProtocolId::from_u8(protocol),
        spi,
        transforms,
    })
}

fn decode_transform(body: &[u8]) -> Result<Transform, DecodeError> {
    let mut r = Reader::new(body);
    let (Some(kind), Some(_), Some(id)) = (r.u8(), r.u8(), r.u16()) else {
        return Err(DecodeError::Truncated {
            payload: "SA",
            what: "transform",
        });
    };
    let mut attributes = Vec::new();
    while !r.is_empty() {
        let (Some(head), Some(v)) = (r.u16(), r.u16()) else {
            return Err(DecodeError::Truncated {
                payload: "SA",
                what: "attribute",
            });
        };
        let kind = head & 0x7fff;
        if head & 0x8000 != 0 {
            attributes.push(Attribute::Short { kind, value: v });
        } else {
            let value = r.take(v as usize).ok_or(DecodeError::Truncated {
                payload: "SA",
                what: "attribute value",
            })?;
            attributes.push(Attribute::Long {
                kind,
                value: value.to_vec(),
            });
        }
    }
    Ok(Transform {
        kind,
        id,
        attributes,
    })
}

fn too_long(what: &'static str) -> EncodeError {
    EncodeError::TooLong {
        payload: "SA",
        what,
    }
}

pub(crate) fn encode(proposals: &[Proposal], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if proposals.is_empty() {
        return Err(EncodeError::Invalid {
            payload: "SA",
            reason: "no proposal",
        });
    }
    for (i, p) in proposals.iter().enumerate() {
        let start = out.len();
        out.extend_from_slice(&[if i + 1 == proposals.len() { 0 } else { 2 }, 0, 0, 0]);
        let spi_size = u8::try_from(p.spi.len()).map_err(|_| too_long("SPI"))?;
        let count = u8::try_from(p.transforms.len()).map_err(|_| too_long("transform list"))?;
        out.extend_from_slice(&[p.number, p.protocol.to_u8(), spi_size, count]);
        out.extend_from_slice(&p.spi);
        for (j, t) in p.transforms.iter().enumerate() {
            let tstart = out.len();
            out.extend_from_slice(&[if j + 1 == p.transforms.len() { 0 } else { 3 }, 0, 0, 0]);
            out.push(t.kind);
            out.push(0);
            out.extend_from_slice(&t.id.to_be_bytes());
            for a in &t.attributes {
                match a {
                    Attribute::Short { kind, value } if *kind <= 0x7fff => {
                        out.extend_from_slice(&(kind | 0x8000).to_be_bytes());
                        out.extend_from_slice(&value.to_be_bytes());
                    }
                    Attribute::Long { kind, value } if *kind <= 0x7fff => {
                        let len = u16::try_from(value.len()).map_err(|_| too_long("attribute"))?;
                        out.extend_from_slice(&kind.to_be_bytes());
                        out.extend_from_slice(&len.to_be_bytes());
                        out.extend_from_slice(value);
                    }
                    _ => return Err(too_long("attribute type")),
                }
            }
            let tlen = u16::try_from(out.len() - tstart).map_err(|_| too_long("transform"))?;
            out[tstart + 2..tstart + 4].copy_from_slice(&tlen.to_be_bytes());
        }
        let plen = u16::try_from(out.len() - start).map_err(|_| too_long("proposal"))?;
        out[start + 2..start + 4].copy_from_slice(&plen.to_be_bytes());
    }
    Ok(())
}
