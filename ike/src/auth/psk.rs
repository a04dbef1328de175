//! Pre-shared key authentication (AUTH method 2, RFC 7296 §2.15), as other vendors'
//! gateways use it: AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"),
//! <SignedOctets>) with the IKE SA's negotiated prf. One key proves both sides; the
//! signed octets differ by role, so a reflected AUTH does not verify.

use super::{AuthError, LocalAuth, PeerAuth};
use crate::codec::Identity;
use crate::crypto::Secret;
use crate::crypto::prf::Prf;

/// AUTH method 2: Shared Key Message Integrity Code.
pub const AUTH_SHARED_KEY: u8 = 2;
/// The pad of §2.15, without a terminating NUL.
const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// A pre-shared key, for both our AUTH and the peer's. Zeroed on drop, never printed.
#[derive(Clone)]
pub struct Psk {
    secret: Secret,
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Psk(redacted)")
    }
}

impl Psk {
    pub fn new(secret: Vec<u8>) -> Psk {
        Psk {
            secret: Secret::new(secret),
        }
    }

    /// The AUTH data over `octets`.
    fn auth(&self, prf: Prf, octets: &[u8]) -> Secret {
        let padded = prf.prf(self.secret.expose(), &[KEY_PAD]);
        prf.prf(padded.expose(), &[octets])
    }
}

/// Whether `a` and `b` are equal, in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl LocalAuth for Psk {
    fn sign(&self, prf: Prf, octets: &[u8]) -> Result<(u8, Vec<u8>), AuthError> {
        Ok((AUTH_SHARED_KEY, self.auth(prf, octets).expose().to_vec()))
    }

    fn certificates(&self) -> Vec<(u8, Vec<u8>)> {
        Vec::new()
    }

    /// None: SIGNATURE_HASH_ALGORITHMS is for signatures only (RFC 7427 §4).
    fn hash_algorithms(&self) -> Vec<u16> {
        Vec::new()
    }
}

impl PeerAuth for Psk {
    fn verify(
        &self,
        prf: Prf,
        _peer: &Identity,
        octets: &[u8],
        method: u8,
        data: &[u8],
        _certs: &[(u8, Vec<u8>)],
    ) -> Result<(), AuthError> {
        if method != AUTH_SHARED_KEY {
            return Err(AuthError::UnsupportedMethod(method));
        }
        if constant_time_eq(self.auth(prf, octets).expose(), data) {
            Ok(())
        } else {
            Err(AuthError::PskMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_is_exact() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
