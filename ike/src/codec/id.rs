//! The Identification payloads IDi and IDr (RFC 7296 §3.5), every ID type of the
//! IANA registry that RFC 7296 defines; distinguished names in [`dn`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{DecodeError, EncodeError};

mod dn;

/// An IKE identity: who a peer says it is, and the key its authentication is looked
/// up by.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    Ipv4(Ipv4Addr),
    /// A fully qualified domain name; strait nodes use their node name.
    Fqdn(String),
    /// An e-mail style address (ID_RFC822_ADDR).
    Rfc822(String),
    Ipv6(Ipv6Addr),
    /// A DER-encoded X.500 distinguished name.
    DerAsn1Dn(Vec<u8>),
    /// An opaque octet string (ID_KEY_ID).
    KeyId(Vec<u8>),
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Ipv4(a) => write!(f, "ipv4:{a}"),
            Identity::Ipv6(a) => write!(f, "ipv6:{a}"),
            Identity::Fqdn(s) => write!(f, "fqdn:{s}"),
            Identity::Rfc822(s) => write!(f, "email:{s}"),
            Identity::DerAsn1Dn(b) => match dn::to_string(b) {
                Some(s) => write!(f, "dn:{s}"),
                None => write!(f, "dn:(not a DER name) {}", hex(b)),
            },
            Identity::KeyId(b) => write!(f, "keyid:{}", hex(b)),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Identity {
    /// An ID_DER_ASN1_DN from `(type, value)` pairs in order, as in
    /// `dn:CN=gw.example,O=Example`: CN, SN, serialNumber, C, L, ST, street, O, OU,
    /// title, GN, emailAddress (or E), UID, DC. Encoded as OpenSSL does: UTF8String,
    /// but PrintableString for C and serialNumber, IA5String for emailAddress and DC.
    pub fn dn<K: AsRef<str>, V: AsRef<str>>(rdns: &[(K, V)]) -> Result<Identity, String> {
        dn::encode(rdns).map(Identity::DerAsn1Dn)
    }

    /// Whether the peer identity `self` is the `expected` one. Equal identities
    /// match; distinguished names match when their attributes and values do, whatever
    /// string types encode them (strongSwan and OpenSSL choose differently).
    pub fn matches(&self, expected: &Identity) -> bool {
        match (self, expected) {
            (Identity::DerAsn1Dn(a), Identity::DerAsn1Dn(b)) => dn::same(a, b),
            (Identity::Fqdn(a), Identity::Fqdn(b)) | (Identity::Rfc822(a), Identity::Rfc822(b)) => {
                a.eq_ignore_ascii_case(b)
            }
            _ => self == expected,
        }
    }

    pub fn id_type(&self) -> u8 {
        match self {
            Identity::Ipv4(_) => 1,
            Identity::Fqdn(_) => 2,
            Identity::Rfc822(_) => 3,
            Identity::Ipv6(_) => 5,
            Identity::DerAsn1Dn(_) => 9,
            Identity::KeyId(_) => 11,
        }
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let malformed = |reason| DecodeError::Malformed {
            payload: "ID",
            reason,
        };
        if body.len() < 4 {
            return Err(DecodeError::Truncated {
                payload: "ID",
                what: "ID type and reserved",
            });
        }
        let data = &body[4..];
        let text = |data: &[u8]| {
            if data.is_empty() || !data.is_ascii() {
                Err(malformed("name empty or not ASCII"))
            } else {
                Ok(String::from_utf8_lossy(data).into_owned())
            }
        };
        let bytes = |data: &[u8]| {
            if data.is_empty() {
                Err(malformed("empty identification data"))
            } else {
                Ok(data.to_vec())
            }
        };
        Ok(match body[0] {
            1 => Identity::Ipv4(
                <[u8; 4]>::try_from(data)
                    .map_err(|_| malformed("ID_IPV4_ADDR is not 4 bytes"))?
                    .into(),
            ),
            2 => Identity::Fqdn(text(data)?),
            3 => Identity::Rfc822(text(data)?),
            5 => Identity::Ipv6(
                <[u8; 16]>::try_from(data)
                    .map_err(|_| malformed("ID_IPV6_ADDR is not 16 bytes"))?
                    .into(),
            ),
            9 => Identity::DerAsn1Dn(bytes(data)?),
            11 => Identity::KeyId(bytes(data)?),
            _ => return Err(malformed("unknown ID type")),
        })
    }

    /// The payload body (ID type, reserved, data): what AUTH's MACedIDFor* covers.
    pub fn encode_body(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = vec![self.id_type(), 0, 0, 0];
        match self {
            Identity::Ipv4(a) => out.extend_from_slice(&a.octets()),
            Identity::Ipv6(a) => out.extend_from_slice(&a.octets()),
            Identity::Fqdn(s) | Identity::Rfc822(s) if !s.is_empty() && s.is_ascii() => {
                out.extend_from_slice(s.as_bytes())
            }
            Identity::DerAsn1Dn(b) | Identity::KeyId(b) if !b.is_empty() => {
                out.extend_from_slice(b)
            }
            _ => {
                return Err(EncodeError::Invalid {
                    payload: "ID",
                    reason: "empty or non-ASCII identification data",
                });
            }
        }
        Ok(out)
    }
}
