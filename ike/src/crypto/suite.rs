//! The transforms strait speaks (RFC 7296 §3.3.2 and the IANA registry): what each
//! is called on the wire and how long its keys are.

use crate::codec::{Transform, transform_type};

/// ENCR_AES_GCM_16 (RFC 4106 for ESP, RFC 5282 for IKE).
pub const ENCR_AES_GCM_16: u16 = 20;
pub const PRF_HMAC_SHA2_256: u16 = 5;
pub const PRF_HMAC_SHA2_384: u16 = 6;
pub const DH_ECP_256: u16 = 19;
pub const DH_CURVE25519: u16 = 31;
pub const ESN_NONE: u16 = 0;
pub const ESN_ON: u16 = 1;

/// AES-GCM with a 16-byte ICV and a 128- or 256-bit key. Its key material is the key
/// followed by a 4-byte salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    AesGcm16_128,
    AesGcm16_256,
}

impl Cipher {
    pub fn key_bits(self) -> u16 {
        match self {
            Cipher::AesGcm16_128 => 128,
            Cipher::AesGcm16_256 => 256,
        }
    }

    pub fn key_len(self) -> usize {
        self.key_bits() as usize / 8
    }

    /// Key and salt (RFC 4106 §8.1, RFC 5282 §7.1).
    pub fn keymat_len(self) -> usize {
        self.key_len() + 4
    }

    pub fn transform(self) -> Transform {
        Transform::with_key_length(transform_type::ENCR, ENCR_AES_GCM_16, self.key_bits())
    }

    pub fn from_transform(t: &Transform) -> Option<Cipher> {
        if t.kind != transform_type::ENCR || t.id != ENCR_AES_GCM_16 || t.has_unknown_attribute() {
            return None;
        }
        match t.key_length()? {
            128 => Some(Cipher::AesGcm16_128),
            256 => Some(Cipher::AesGcm16_256),
            _ => None,
        }
    }
}

/// Key exchange groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// ECP-256 (RFC 5903): the public value is x || y.
    Ecp256,
    /// Curve25519 (RFC 8031).
    Curve25519,
}

impl Group {
    pub fn id(self) -> u16 {
        match self {
            Group::Ecp256 => DH_ECP_256,
            Group::Curve25519 => DH_CURVE25519,
        }
    }

    pub fn from_id(id: u16) -> Option<Group> {
        match id {
            DH_ECP_256 => Some(Group::Ecp256),
            DH_CURVE25519 => Some(Group::Curve25519),
            _ => None,
        }
    }

    pub fn transform(self) -> Transform {
        Transform::new(transform_type::DH, self.id())
    }
}
