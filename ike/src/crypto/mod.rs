//! The cryptography of an IKE SA, all of it from `ring`: the transforms strait
//! negotiates ([`suite`]), key exchange ([`dh`]), the PRF and prf+ ([`prf`]), the key
//! schedule of RFC 7296 §2.14, §2.17 and §2.18 ([`keys`]) and the AES-GCM Encrypted
//! payload of RFC 5282 ([`sk`]).
//!
//! Every secret is a [`Secret`]: zeroed on drop, redacted in `Debug`.

pub mod dh;
pub mod keys;
pub mod prf;
pub mod sk;
pub mod suite;

use std::fmt;

use zeroize::Zeroizing;

/// Key material: zeroed when dropped, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes, redacted)", self.0.len())
    }
}

/// Why a cryptographic operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the peer's key exchange value is invalid for group {group}")]
    BadPublicValue { group: u16 },
    #[error("the system random generator failed")]
    Random,
    #[error("SK: too short for IV and ICV")]
    ShortEncrypted,
    #[error("SK: integrity check failed")]
    Icv,
    #[error("SK: pad length longer than the plaintext")]
    BadPadding,
    #[error("SK: {0}")]
    Inner(#[from] crate::codec::DecodeError),
    #[error("SK: {0}")]
    Encode(#[from] crate::codec::EncodeError),
}
