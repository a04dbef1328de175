//! The Encrypted payload with AES-GCM-16 (RFC 5282): an 8-byte explicit IV, the
//! nonce salt || IV with the 4-byte salt from the end of SK_e*, a 16-byte ICV, and as
//! additional data the IKE header through the SK payload's generic header. The
//! plaintext is the inner payload chain, no padding, and the pad length byte.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

use super::suite::Cipher;
use super::{CryptoError, Secret};
use crate::codec::{
    self, Encrypted, HEADER_LEN, Header, Message, PAYLOAD_HEADER_LEN, Payload, payload_type,
};

const IV_LEN: usize = 8;
const ICV_LEN: usize = 16;

/// One direction's AES-GCM key, with the IV counter that makes every nonce unique
/// under it.
pub struct SkCipher {
    key: LessSafeKey,
    salt: [u8; 4],
    next_iv: u64,
}

impl std::fmt::Debug for SkCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SkCipher(redacted, next IV {})", self.next_iv)
    }
}

impl SkCipher {
    /// From SK_ei or SK_er: key then salt.
    pub fn new(cipher: Cipher, keymat: &Secret) -> SkCipher {
        let k = keymat.expose();
        assert_eq!(
            k.len(),
            cipher.keymat_len(),
            "key material of the wrong length"
        );
        let alg = match cipher {
            Cipher::AesGcm16_128 => &aead::AES_128_GCM,
            Cipher::AesGcm16_256 => &aead::AES_256_GCM,
        };
        let key = UnboundKey::new(alg, &k[..cipher.key_len()]).expect("key length fits the cipher");
        let mut salt = [0; 4];
        salt.copy_from_slice(&k[cipher.key_len()..]);
        SkCipher {
            key: LessSafeKey::new(key),
            salt,
            next_iv: 0,
        }
    }

    fn nonce(&self, iv: &[u8; IV_LEN]) -> Nonce {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.salt);
        n[4..].copy_from_slice(iv);
        Nonce::assume_unique_for_key(n)
    }

    /// A whole datagram: `header`, the `clear` payloads, and an SK payload holding
    /// `inner`.
    pub fn seal(
        &mut self,
        header: &Header,
        clear: &[Payload],
        inner: &[Payload],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut plain = Vec::new();
        let first_inner = codec::encode_chain(inner, &mut plain)?;
        plain.push(0); // pad length: AES-GCM needs no padding
        let mut outer = Vec::new();
        let mut chain: Vec<Payload> = clear.to_vec();
        chain.push(Payload::Encrypted(Encrypted {
            first_inner,
            data: vec![0; IV_LEN + plain.len() + ICV_LEN],
        }));
        let first = codec::encode_chain(&chain, &mut outer)?;
        let total = HEADER_LEN + outer.len();
        let length = u32::try_from(total).map_err(|_| codec::EncodeError::TooLong {
            payload: "header",
            what: "message",
        })?;
        let mut out = header.encode(first, length).to_vec();
        out.extend_from_slice(&outer);
        // Everything up to the SK payload's data is authenticated, not encrypted.
        let data_at = total - (IV_LEN + plain.len() + ICV_LEN);
        out.truncate(data_at);
        let iv = self.next_iv.to_be_bytes();
        self.next_iv += 1;
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(&iv), Aad::from(&out[..]), &mut plain)
            .map_err(|_| CryptoError::Icv)?;
        out.extend_from_slice(&iv);
        out.extend_from_slice(&plain);
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// The inner payloads of a decoded datagram whose last payload is SK.
    pub fn open(&self, datagram: &[u8], message: &Message) -> Result<Vec<Payload>, CryptoError> {
        let Some(Payload::Encrypted(sk)) = message.payloads.last() else {
            return Err(CryptoError::ShortEncrypted);
        };
        if sk.data.len() < IV_LEN + ICV_LEN + 1 || datagram.len() < sk.data.len() {
            return Err(CryptoError::ShortEncrypted);
        }
        let aad = &datagram[..datagram.len() - sk.data.len()];
        debug_assert!(aad.len() >= HEADER_LEN + PAYLOAD_HEADER_LEN);
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&sk.data[..IV_LEN]);
        let mut sealed = sk.data[IV_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(self.nonce(&iv), Aad::from(aad), &mut sealed)
            .map_err(|_| CryptoError::Icv)?;
        let (&pad, rest) = plain.split_last().ok_or(CryptoError::BadPadding)?;
        let inner_len = rest
            .len()
            .checked_sub(pad as usize)
            .ok_or(CryptoError::BadPadding)?;
        Ok(codec::decode_chain(
            sk.first_inner,
            &rest[..inner_len],
            false,
        )?)
    }
}

/// Whether a decoded message carries an SK payload (the rest must then be opened).
pub fn is_encrypted(message: &Message) -> bool {
    matches!(message.payloads.last(), Some(p) if p.kind() == payload_type::SK)
}
