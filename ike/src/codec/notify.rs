//! The Notify (RFC 7296 §3.10) and Delete (§3.11) payloads, and the notify message
//! types strait knows by name; any other type is kept as [`NotifyType::Other`].

use super::reader::Reader;
use super::{DecodeError, EncodeError, ProtocolId};

macro_rules! notify_types {
    ($($name:ident = $value:expr),* $(,)?) => {
        /// A notify message type (IANA "IKEv2 Notify Message Types"). Below 16384 an
        /// error, from 16384 a status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum NotifyType {
            $($name,)*
            Other(u16),
        }

        impl NotifyType {
            pub fn from_u16(v: u16) -> Self {
                match v {
                    $($value => NotifyType::$name,)*
                    other => NotifyType::Other(other),
                }
            }

            pub fn to_u16(self) -> u16 {
                match self {
                    $(NotifyType::$name => $value,)*
                    NotifyType::Other(v) => v,
                }
            }
        }
    };
}

notify_types! {
    UnsupportedCriticalPayload = 1,
    InvalidIkeSpi = 4,
    InvalidMajorVersion = 5,
    InvalidSyntax = 7,
    InvalidMessageId = 9,
    InvalidSpi = 11,
    NoProposalChosen = 14,
    InvalidKePayload = 17,
    AuthenticationFailed = 24,
    SinglePairRequired = 34,
    NoAdditionalSas = 35,
    InternalAddressFailure = 36,
    FailedCpRequired = 37,
    TsUnacceptable = 38,
    InvalidSelectors = 39,
    TemporaryFailure = 43,
    ChildSaNotFound = 44,
    InitialContact = 16384,
    SetWindowSize = 16385,
    AdditionalTsPossible = 16386,
    IpcompSupported = 16387,
    NatDetectionSourceIp = 16388,
    NatDetectionDestinationIp = 16389,
    Cookie = 16390,
    UseTransportMode = 16391,
    HttpCertLookupSupported = 16392,
    RekeySa = 16393,
    EspTfcPaddingNotSupported = 16394,
    NonFirstFragmentsAlso = 16395,
    Ikev2FragmentationSupported = 16430,
    SignatureHashAlgorithms = 16431,
}

impl NotifyType {
    /// Error types are below 16384 (RFC 7296 §3.10.1).
    pub fn is_error(self) -> bool {
        self.to_u16() < 16384
    }
}

/// A Notify payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// 0 when the notify is about no SA (the SPI is then empty).
    pub protocol: u8,
    pub spi: Vec<u8>,
    pub kind: NotifyType,
    pub data: Vec<u8>,
}

impl Notify {
    /// A notify about no particular SA.
    pub fn new(kind: NotifyType, data: Vec<u8>) -> Self {
        Notify {
            protocol: 0,
            spi: Vec::new(),
            kind,
            data,
        }
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let short = DecodeError::Truncated {
            payload: "N",
            what: "fixed part or SPI",
        };
        let (Some(protocol), Some(spi_size), Some(kind)) = (r.u8(), r.u8(), r.u16()) else {
            return Err(short);
        };
        let spi = r.take(spi_size as usize).ok_or(short)?.to_vec();
        Ok(Notify {
            protocol,
            spi,
            kind: NotifyType::from_u16(kind),
            data: r.rest().to_vec(),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let spi_size = u8::try_from(self.spi.len()).map_err(|_| EncodeError::TooLong {
            payload: "N",
            what: "SPI",
        })?;
        out.push(self.protocol);
        out.push(spi_size);
        out.extend_from_slice(&self.kind.to_u16().to_be_bytes());
        out.extend_from_slice(&self.spi);
        out.extend_from_slice(&self.data);
        Ok(())
    }
}

/// A Delete payload: SAs of one protocol. For the IKE SA itself the SPI list is empty
/// (the SPIs are in the header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub protocol: ProtocolId,
    pub spis: Vec<Vec<u8>>,
}

impl Delete {
    pub(crate) fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let (Some(protocol), Some(spi_size), Some(count)) = (r.u8(), r.u8(), r.u16()) else {
            return Err(DecodeError::Truncated {
                payload: "D",
                what: "fixed part",
            });
        };
        let protocol = ProtocolId::from_u8(protocol);
        let expected = match protocol {
            ProtocolId::Ike => 0,
            ProtocolId::Ah | ProtocolId::Esp => 4,
            ProtocolId::Other(_) => {
                return Err(DecodeError::Malformed {
                    payload: "D",
                    reason: "unknown protocol",
                });
            }
        };
        if spi_size != expected || (expected == 0 && count != 0) {
            return Err(DecodeError::Malformed {
                payload: "D",
                reason: "SPI size or count does not fit the protocol",
            });
        }
        if r.rest().len() != spi_size as usize * count as usize {
            return Err(DecodeError::Malformed {
                payload: "D",
                reason: "SPI list length differs from count times size",
            });
        }
        let spis = (0..count)
            .map(|_| r.take(spi_size as usize).map(<[u8]>::to_vec))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        Ok(Delete { protocol, spis })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let size = match self.protocol {
            ProtocolId::Ike if self.spis.is_empty() => 0,
            ProtocolId::Ah | ProtocolId::Esp if self.spis.iter().all(|s| s.len() == 4) => 4,
            _ => {
                return Err(EncodeError::Invalid {
                    payload: "D",
                    reason: "SPIs do not fit the protocol",
                });
            }
        };
        let count = u16::try_from(self.spis.len()).map_err(|_| EncodeError::TooLong {
            payload: "D",
            what: "SPI list",
        })?;
        out.push(self.protocol.to_u8());
        out.push(size);
        out.extend_from_slice(&count.to_be_bytes());
        for s in &self.spis {
            out.extend_from_slice(s);
        }
        Ok(())
    }
}
