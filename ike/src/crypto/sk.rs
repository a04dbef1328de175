//! The Encrypted payload with AES-GCM-16 (RFC 5282): an 8-byte explicit IV, the
//! nonce salt || IV with the 4-byte salt from the end of SK_e*, a 16-byte ICV, and as
//! additional data the IKE header through the SK payload's generic header. The
//! plaintext is the inner payload chain, no padding, and the pad length byte. An
//! Encrypted Fragment (SKF, RFC 7383) is sealed the same way, each fragment on its own,
//! its additional data running through the fragment number and total.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};

use super::suite::Cipher;
use super::{CryptoError, Secret};
use crate::codec::{
    self, Encrypted, EncryptedFragment, FRAGMENT_FIELDS_LEN, HEADER_LEN, Header, Message,
    PAYLOAD_HEADER_LEN, Payload, payload_type,
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
        let sealed_len = IV_LEN + plain.len() + 1 + ICV_LEN;
        let mut outer = Vec::new();
        let mut chain: Vec<Payload> = clear.to_vec();
        chain.push(Payload::Encrypted(Encrypted {
            first_inner,
            data: vec![0; sealed_len],
        }));
        let first = codec::encode_chain(&chain, &mut outer)?;
        let total = HEADER_LEN + outer.len();
        let mut out = header.encode(first, message_length(total)?).to_vec();
        out.extend_from_slice(&outer);
        // Everything up to the SK payload's data is authenticated, not encrypted.
        out.truncate(total - sealed_len);
        self.seal_after(out, plain)
    }

    /// `inner` as a set of Encrypted Fragment datagrams (RFC 7383 §2.5) of at most
    /// `max_len` bytes each, every one sealed on its own. Fragment 1 names the first
    /// inner payload, the others 0.
    pub fn seal_fragments(
        &mut self,
        header: &Header,
        inner: &[Payload],
        max_len: usize,
    ) -> Result<Vec<Vec<u8>>, CryptoError> {
        let mut plain = Vec::new();
        let first_inner = codec::encode_chain(inner, &mut plain)?;
        let room = max_len
            .checked_sub(FRAGMENT_OVERHEAD)
            .filter(|r| *r > 0)
            .ok_or(codec::EncodeError::Invalid {
                payload: "SKF",
                reason: "fragment size leaves no room for data",
            })?;
        let chunks: Vec<&[u8]> = if plain.is_empty() {
            vec![&plain[..]]
        } else {
            plain.chunks(room).collect()
        };
        let total = u16::try_from(chunks.len()).map_err(|_| codec::EncodeError::TooLong {
            payload: "SKF",
            what: "fragment count",
        })?;
        let mut out = Vec::with_capacity(chunks.len());
        for (i, chunk) in chunks.iter().enumerate() {
            let number = u16::try_from(i + 1).expect("at most total");
            let next = if number == 1 { first_inner } else { 0 };
            out.push(self.seal_fragment(header, next, number, total, chunk)?);
        }
        Ok(out)
    }

    /// One Encrypted Fragment datagram: fragment `number` of `total`, carrying `chunk`
    /// of the inner chain, and `next` in its next-payload field.
    pub fn seal_fragment(
        &mut self,
        header: &Header,
        next: u8,
        number: u16,
        total: u16,
        chunk: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let data_len = IV_LEN + chunk.len() + 1 + ICV_LEN;
        let payload_len = PAYLOAD_HEADER_LEN + FRAGMENT_FIELDS_LEN + data_len;
        let field = u16::try_from(payload_len).map_err(|_| codec::EncodeError::TooLong {
            payload: "SKF",
            what: "fragment",
        })?;
        let mut dgram = header
            .encode(payload_type::SKF, message_length(HEADER_LEN + payload_len)?)
            .to_vec();
        dgram.extend_from_slice(&[next, 0]);
        dgram.extend_from_slice(&field.to_be_bytes());
        dgram.extend_from_slice(&number.to_be_bytes());
        dgram.extend_from_slice(&total.to_be_bytes());
        self.seal_after(dgram, chunk.to_vec())
    }

    /// Append IV, `plain` with its pad length byte encrypted, and ICV to `aad`, which
    /// is authenticated as it is.
    fn seal_after(&mut self, mut aad: Vec<u8>, mut plain: Vec<u8>) -> Result<Vec<u8>, CryptoError> {
        plain.push(0); // pad length: AES-GCM needs no padding
        let iv = self.next_iv.to_be_bytes();
        self.next_iv += 1;
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(&iv), Aad::from(&aad[..]), &mut plain)
            .map_err(|_| CryptoError::Icv)?;
        aad.extend_from_slice(&iv);
        aad.extend_from_slice(&plain);
        aad.extend_from_slice(tag.as_ref());
        Ok(aad)
    }

    /// The inner payloads of a decoded datagram whose last payload is SK.
    pub fn open(&self, datagram: &[u8], message: &Message) -> Result<Vec<Payload>, CryptoError> {
        let Some(Payload::Encrypted(sk)) = message.payloads.last() else {
            return Err(CryptoError::ShortEncrypted);
        };
        let plain = self.open_data(datagram, &sk.data)?;
        Ok(codec::decode_chain(sk.first_inner, &plain, false)?)
    }

    /// The plaintext piece of the inner payload chain that `fragment`, the last
    /// payload of `datagram`, carries: authentic, not yet decodable on its own.
    pub fn open_fragment(
        &self,
        datagram: &[u8],
        fragment: &EncryptedFragment,
    ) -> Result<Vec<u8>, CryptoError> {
        self.open_data(datagram, &fragment.data)
    }

    /// Decrypt `data` (IV, ciphertext, ICV), the tail of `datagram`, with everything
    /// before it as additional data; the plaintext without its padding.
    fn open_data(&self, datagram: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if data.len() < IV_LEN + ICV_LEN + 1 || datagram.len() < data.len() {
            return Err(CryptoError::ShortEncrypted);
        }
        let aad = &datagram[..datagram.len() - data.len()];
        debug_assert!(aad.len() >= HEADER_LEN + PAYLOAD_HEADER_LEN);
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&data[..IV_LEN]);
        let mut sealed = data[IV_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(self.nonce(&iv), Aad::from(aad), &mut sealed)
            .map_err(|_| CryptoError::Icv)?;
        let (&pad, rest) = plain.split_last().ok_or(CryptoError::BadPadding)?;
        let inner_len = rest
            .len()
            .checked_sub(pad as usize)
            .ok_or(CryptoError::BadPadding)?;
        Ok(rest[..inner_len].to_vec())
    }
}

fn message_length(total: usize) -> Result<u32, CryptoError> {
    Ok(
        u32::try_from(total).map_err(|_| codec::EncodeError::TooLong {
            payload: "header",
            what: "message",
        })?,
    )
}

/// What one Encrypted Fragment datagram carries besides its piece of plaintext: the
/// IKE header, the payload header, fragment number and total, IV, pad length, ICV.
pub const FRAGMENT_OVERHEAD: usize =
    HEADER_LEN + PAYLOAD_HEADER_LEN + FRAGMENT_FIELDS_LEN + IV_LEN + 1 + ICV_LEN;

/// Whether a decoded message carries an SK payload (the rest must then be opened).
pub fn is_encrypted(message: &Message) -> bool {
    matches!(message.payloads.last(), Some(p) if p.kind() == payload_type::SK)
}
