//! RFC 7427 Digital Signature authentication (AUTH method 14) with Ed25519 (RFC 8420)
//! over raw public keys, as strait nodes use between themselves: the peer's key looked
//! up by its identity ([`PeerKeys`]) and optionally also sent as a CERT of encoding 15
//! (RFC 7670), which must then match.

use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use super::{AuthError, LocalAuth, PeerAuth};
use crate::codec::{Identity, cert_encoding};
use crate::crypto::prf::Prf;

/// AUTH method 14 (RFC 7427).
pub const AUTH_DIGITAL_SIGNATURE: u8 = 14;
/// The DER AlgorithmIdentifier of Ed25519, OID 1.3.101.112, no parameters (RFC 8420).
pub const ED25519_ALGORITHM_ID: [u8; 7] = [0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
/// The "Identity" hash of SIGNATURE_HASH_ALGORITHMS (RFC 8420 §2): the signature is
/// over the message itself, as Ed25519 does.
pub const HASH_IDENTITY: u16 = 5;
/// The DER prefix of an Ed25519 SubjectPublicKeyInfo before its 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Where a peer's Ed25519 public key comes from: for strait nodes, the peer's node
/// record.
pub trait PeerKeys: Send {
    fn public_key(&self, peer: &Identity) -> Option<[u8; 32]>;
}

impl<F: Fn(&Identity) -> Option<[u8; 32]> + Send> PeerKeys for F {
    fn public_key(&self, peer: &Identity) -> Option<[u8; 32]> {
        self(peer)
    }
}

/// The SubjectPublicKeyInfo of an Ed25519 public key (CERT encoding 15).
pub fn ed25519_spki(key: &[u8; 32]) -> Vec<u8> {
    [&ED25519_SPKI_PREFIX[..], key].concat()
}

/// The local Ed25519 key pair (the agent makes and stores it; only the PKCS#8 bytes
/// pass through here).
pub struct Ed25519Signer {
    pair: Ed25519KeyPair,
    send_key: bool,
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519Signer(public {:02x?})", self.public_key())
    }
}

impl Ed25519Signer {
    /// From a PKCS#8 v1 or v2 document. With `send_key`, IKE_AUTH also carries the
    /// public key as a CERT of encoding 15.
    pub fn from_pkcs8(pkcs8: &[u8], send_key: bool) -> Result<Self, ring::error::KeyRejected> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)?;
        Ok(Ed25519Signer { pair, send_key })
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut k = [0; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        k
    }
}

impl LocalAuth for Ed25519Signer {
    fn sign(&self, _prf: Prf, octets: &[u8]) -> Result<(u8, Vec<u8>), AuthError> {
        let sig = self.pair.sign(octets);
        let mut data = vec![ED25519_ALGORITHM_ID.len() as u8];
        data.extend_from_slice(&ED25519_ALGORITHM_ID);
        data.extend_from_slice(sig.as_ref());
        Ok((AUTH_DIGITAL_SIGNATURE, data))
    }

    fn certificates(&self) -> Vec<(u8, Vec<u8>)> {
        if self.send_key {
            vec![(
                cert_encoding::RAW_PUBLIC_KEY,
                ed25519_spki(&self.public_key()),
            )]
        } else {
            Vec::new()
        }
    }

    fn hash_algorithms(&self) -> Vec<u16> {
        vec![HASH_IDENTITY]
    }
}

/// Verifies RFC 7427 Ed25519 signatures with keys from a [`PeerKeys`] lookup.
pub struct RawKeyVerifier<K> {
    keys: K,
}

impl<K: PeerKeys> RawKeyVerifier<K> {
    pub fn new(keys: K) -> Self {
        RawKeyVerifier { keys }
    }
}

impl<K: PeerKeys> PeerAuth for RawKeyVerifier<K> {
    fn verify(
        &self,
        _prf: Prf,
        peer: &Identity,
        octets: &[u8],
        method: u8,
        data: &[u8],
        certs: &[(u8, Vec<u8>)],
    ) -> Result<(), AuthError> {
        if method != AUTH_DIGITAL_SIGNATURE {
            return Err(AuthError::UnsupportedMethod(method));
        }
        let key = self
            .keys
            .public_key(peer)
            .ok_or_else(|| AuthError::UnknownPeer(peer.clone()))?;
        for (encoding, data) in certs {
            if *encoding == cert_encoding::RAW_PUBLIC_KEY && *data != ed25519_spki(&key) {
                return Err(AuthError::CertificateMismatch);
            }
        }
        let (&len, rest) = data.split_first().ok_or(AuthError::UnsupportedAlgorithm)?;
        let (alg, sig) = rest
            .split_at_checked(len as usize)
            .ok_or(AuthError::UnsupportedAlgorithm)?;
        if alg != ED25519_ALGORITHM_ID {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        UnparsedPublicKey::new(&signature::ED25519, key)
            .verify(octets, sig)
            .map_err(|_| AuthError::BadSignature)
    }
}
