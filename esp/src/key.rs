//! ESP ciphers (AES-GCM with a 16-octet ICV, RFC 4106) and SA key material. The key
//! lives in a `Zeroizing` buffer behind a type whose `Debug` never shows it.

use std::fmt;

use ring::aead::{self, LessSafeKey, UnboundKey};
use zeroize::Zeroizing;

/// The ESP transforms strait speaks: AES-GCM with a 16-octet ICV (IKEv2 transform IDs
/// 20 = ENCR_AES_GCM_16 with 128- or 256-bit keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    Aes128Gcm16,
    Aes256Gcm16,
}

/// Length of the salt appended to the AES key (RFC 4106 §8.1).
pub const SALT_LEN: usize = 4;
/// Length of the explicit IV on the wire (RFC 4106 §3.1).
pub const IV_LEN: usize = 8;
/// Length of the integrity check value (the GCM tag).
pub const ICV_LEN: usize = 16;

impl Cipher {
    /// AES key length in octets, without the salt.
    pub fn aes_key_len(self) -> usize {
        match self {
            Self::Aes128Gcm16 => 16,
            Self::Aes256Gcm16 => 32,
        }
    }

    /// Key material length as negotiated (key || salt): 20 or 36 octets.
    pub fn keymat_len(self) -> usize {
        self.aes_key_len() + SALT_LEN
    }

    /// The name Wireshark's `esp_sa` table and `ip xfrm` use for this transform.
    pub fn wireshark_name(self) -> &'static str {
        "AES-GCM with 16 octet ICV [RFC4106]"
    }

    /// Short name for status output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Aes128Gcm16 => "aes128gcm16",
            Self::Aes256Gcm16 => "aes256gcm16",
        }
    }

    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Self::Aes128Gcm16 => &aead::AES_128_GCM,
            Self::Aes256Gcm16 => &aead::AES_256_GCM,
        }
    }
}

/// Why key material was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("{cipher:?} needs {expected} octets of key material (key and salt), got {got}")]
    Length {
        cipher: Cipher,
        expected: usize,
        got: usize,
    },
}

/// Key material of one SA direction: the AES key followed by the 4-octet salt. Wiped
/// on drop; `Debug` prints only the cipher.
#[derive(Clone)]
pub struct SaKey {
    cipher: Cipher,
    bytes: Zeroizing<Vec<u8>>,
}

impl SaKey {
    /// `keymat` is key || salt, as IKEv2 derives it (RFC 4106 §8.1).
    pub fn new(cipher: Cipher, keymat: &[u8]) -> Result<Self, KeyError> {
        if keymat.len() != cipher.keymat_len() {
            return Err(KeyError::Length {
                cipher,
                expected: cipher.keymat_len(),
                got: keymat.len(),
            });
        }
        Ok(Self {
            cipher,
            bytes: Zeroizing::new(keymat.to_vec()),
        })
    }

    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The key material itself, for the kernel datapath and the test-only key log.
    pub fn expose_keymat(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn salt(&self) -> [u8; SALT_LEN] {
        let mut salt = [0; SALT_LEN];
        salt.copy_from_slice(&self.bytes[self.cipher.aes_key_len()..]);
        salt
    }

    pub(crate) fn aead_key(&self) -> LessSafeKey {
        let unbound = UnboundKey::new(
            self.cipher.algorithm(),
            &self.bytes[..self.cipher.aes_key_len()],
        )
        .expect("key length checked in SaKey::new");
        LessSafeKey::new(unbound)
    }
}

impl fmt::Debug for SaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaKey")
            .field("cipher", &self.cipher)
            .field("bytes", &"<redacted>")
            .finish()
    }
}

/// The AEAD state of one SA: ring's key schedule and the salt. `Debug` redacts both.
pub(crate) struct Aead {
    pub(crate) key: LessSafeKey,
    pub(crate) salt: [u8; SALT_LEN],
}

impl Aead {
    pub(crate) fn new(key: &SaKey) -> Self {
        Self {
            key: key.aead_key(),
            salt: key.salt(),
        }
    }

    /// nonce = salt || IV (RFC 4106 §4).
    pub(crate) fn nonce(&self, iv: [u8; IV_LEN]) -> aead::Nonce {
        let mut n = [0u8; aead::NONCE_LEN];
        n[..SALT_LEN].copy_from_slice(&self.salt);
        n[SALT_LEN..].copy_from_slice(&iv);
        aead::Nonce::assume_unique_for_key(n)
    }
}

impl fmt::Debug for Aead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Aead(<redacted>)")
    }
}

/// Additional authenticated data: SPI || seq-low, or SPI || seq-high || seq-low with
/// extended sequence numbers (RFC 4106 §5).
pub(crate) fn aad(spi: u32, seq: u64, esn: bool, buf: &mut [u8; 12]) -> &[u8] {
    buf[..4].copy_from_slice(&spi.to_be_bytes());
    if esn {
        buf[4..8].copy_from_slice(&((seq >> 32) as u32).to_be_bytes());
        buf[8..].copy_from_slice(&(seq as u32).to_be_bytes());
        &buf[..]
    } else {
        buf[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        &buf[..8]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keymat_length_is_checked() {
        assert!(SaKey::new(Cipher::Aes128Gcm16, &[0; 20]).is_ok());
        assert!(SaKey::new(Cipher::Aes256Gcm16, &[0; 36]).is_ok());
        assert_eq!(
            SaKey::new(Cipher::Aes128Gcm16, &[0; 16]).unwrap_err(),
            KeyError::Length {
                cipher: Cipher::Aes128Gcm16,
                expected: 20,
                got: 16
            }
        );
    }

    #[test]
    fn debug_redacts_the_key() {
        let k = SaKey::new(Cipher::Aes128Gcm16, &[0xab; 20]).unwrap();
        let s = format!("{k:?}");
        assert!(!s.contains("ab") && !s.contains("171"), "{s}");
        assert!(s.contains("redacted"));
    }
}
