//! Ephemeral key exchange over `ring::agreement`: Curve25519 (RFC 8031) and ECP-256
//! (RFC 5903, whose public value is x || y without ring's leading 0x04).

use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
use ring::rand::SecureRandom;

use super::suite::Group;
use super::{CryptoError, Secret};

/// One side's ephemeral key: the private half lives until [`KeyShare::agree`].
pub struct KeyShare {
    group: Group,
    private: EphemeralPrivateKey,
    public: Vec<u8>,
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyShare({:?}, private redacted)", self.group)
    }
}

fn algorithm(group: Group) -> &'static agreement::Algorithm {
    match group {
        Group::Curve25519 => &agreement::X25519,
        Group::Ecp256 => &agreement::ECDH_P256,
    }
}

impl KeyShare {
    pub fn generate(group: Group, rng: &dyn SecureRandom) -> Result<KeyShare, CryptoError> {
        let private = EphemeralPrivateKey::generate(algorithm(group), rng)
            .map_err(|_| CryptoError::Random)?;
        let public = private
            .compute_public_key()
            .map_err(|_| CryptoError::Random)?;
        let public = match group {
            Group::Curve25519 => public.as_ref().to_vec(),
            Group::Ecp256 => public.as_ref()[1..].to_vec(),
        };
        Ok(KeyShare {
            group,
            private,
            public,
        })
    }

    pub fn group(&self) -> Group {
        self.group
    }

    /// The KE payload's key exchange data.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// g^ir from the peer's KE data; refuses a value of the wrong length, a point not
    /// on the curve and (Curve25519) an all-zero result.
    pub fn agree(self, peer: &[u8]) -> Result<Secret, CryptoError> {
        let bad = CryptoError::BadPublicValue {
            group: self.group.id(),
        };
        let peer = match self.group {
            Group::Curve25519 if peer.len() == 32 => peer.to_vec(),
            Group::Ecp256 if peer.len() == 64 => [&[4u8][..], peer].concat(),
            _ => return Err(bad),
        };
        agreement::agree_ephemeral(
            self.private,
            &UnparsedPublicKey::new(algorithm(self.group), peer),
            |shared| Secret::new(shared.to_vec()),
        )
        .map_err(|_| bad)
    }
}
