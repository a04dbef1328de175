//! The Encrypted Fragment payload (SKF, RFC 7383 §2.5): one separately encrypted piece
//! of an IKE message too large for the path, numbered within its set. Like SK it is
//! decoded as opaque bytes (IV, ciphertext and ICV); the SA's keys open it
//! ([`crate::crypto::sk::SkCipher::open_fragment`]) and the plaintexts of all the
//! fragments, in order, are the inner payload chain of the whole message.

use super::reader::Reader;
use super::{DecodeError, EncodeError};

/// The fragment numbering before the encrypted data.
pub const FRAGMENT_FIELDS_LEN: usize = 4;

/// One Encrypted Fragment payload as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedFragment {
    /// The type of the first inner payload in fragment 1; 0 in every other fragment.
    pub first_inner: u8,
    /// 1 ..= `total`.
    pub number: u16,
    pub total: u16,
    /// IV, ciphertext and ICV.
    pub data: Vec<u8>,
}

impl EncryptedFragment {
    pub(crate) fn decode(next: u8, body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let (Some(number), Some(total)) = (r.u16(), r.u16()) else {
            return Err(DecodeError::Truncated {
                payload: "SKF",
                what: "fragment number and total",
            });
        };
        check(number, total).map_err(|reason| DecodeError::Malformed {
            payload: "SKF",
            reason,
        })?;
        Ok(EncryptedFragment {
            first_inner: next,
            number,
            total,
            data: r.rest().to_vec(),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check(self.number, self.total).map_err(|reason| EncodeError::Invalid {
            payload: "SKF",
            reason,
        })?;
        out.extend_from_slice(&self.number.to_be_bytes());
        out.extend_from_slice(&self.total.to_be_bytes());
        out.extend_from_slice(&self.data);
        Ok(())
    }
}

/// RFC 7383 §2.5: numbering starts at 1 and no fragment is beyond the total.
fn check(number: u16, total: u16) -> Result<(), &'static str> {
    if number == 0 || total == 0 {
        return Err("fragment number or total is zero");
    }
    if number > total {
        return Err("fragment number above the total");
    }
    Ok(())
}
