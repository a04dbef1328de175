//! Authentication in IKE_AUTH (RFC 7296 §2.15) behind two traits, [`LocalAuth`]
//! (how we prove ourselves) and [`PeerAuth`] (how we check the peer), one pair per
//! speaker. The methods:
//! - [`raw_key`]: RFC 7427 Digital Signature (AUTH method 14) with Ed25519 (RFC 8420)
//!   over raw public keys, between strait nodes;
//! - [`psk`]: pre-shared keys (AUTH method 2), for other vendors' gateways;
//! - X.509 certificates for other vendors' gateways: [`cert_signer`] signs with our
//!   certificate's key, [`ca_verifier`] checks the peer's chain to a configured CA,
//!   its identity and its signature ([`x509`] holds what they share).
//!
//! This module owns the traits, the signed octets of §2.15 and the refusals.

pub mod ca_verifier;
pub mod cert_signer;
pub mod psk;
pub mod raw_key;
pub mod x509;

pub use ca_verifier::{AUTH_ECDSA_P256, AUTH_ECDSA_P384, AUTH_RSA_SIGNATURE, CaVerifier};
pub use cert_signer::CertSigner;
pub use psk::{AUTH_SHARED_KEY, Psk};
pub use raw_key::{
    AUTH_DIGITAL_SIGNATURE, ED25519_ALGORITHM_ID, Ed25519Signer, HASH_IDENTITY, PeerKeys,
    RawKeyVerifier, ed25519_spki,
};

use crate::codec::Identity;
use crate::crypto::Secret;
use crate::crypto::prf::Prf;

/// Why a peer's authentication was refused (reported as `AuthFailed` with this
/// reason; the peer gets AUTHENTICATION_FAILED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no public key known for peer {0}")]
    UnknownPeer(Identity),
    #[error("AUTH method {0} is not accepted")]
    UnsupportedMethod(u8),
    #[error("the AUTH data names a signature algorithm other than Ed25519")]
    UnsupportedAlgorithm,
    #[error("the signature does not verify with the peer's key")]
    BadSignature,
    #[error("the raw public key the peer sent differs from the one on record")]
    CertificateMismatch,
    #[error("signing failed")]
    Sign,
    #[error("the peer's AUTH does not match our pre-shared key: the two sides have different keys")]
    PskMismatch,
    #[error("the peer sent no certificate")]
    NoCertificate,
    #[error("the signature does not verify with the certificate's key")]
    CertificateSignature,
    /// The peer's certificate chain, identity or signature algorithm, in words.
    #[error("{0}")]
    Certificate(String),
}

/// What the local side proves itself with.
pub trait LocalAuth: Send {
    /// The AUTH payload's method and data over `octets` (§2.15's signed octets);
    /// `prf` is the IKE SA's negotiated one (a pre-shared key's AUTH is a prf).
    fn sign(&self, prf: Prf, octets: &[u8]) -> Result<(u8, Vec<u8>), AuthError>;
    /// CERT payloads (encoding, data) to send with AUTH.
    fn certificates(&self) -> Vec<(u8, Vec<u8>)>;
    /// The hash algorithms to announce in SIGNATURE_HASH_ALGORITHMS, if any.
    fn hash_algorithms(&self) -> Vec<u16>;
}

/// Checks a peer's AUTH payload.
pub trait PeerAuth: Send {
    /// `certs` are the CERT payloads the peer sent with AUTH; `prf` is the IKE SA's
    /// negotiated one.
    fn verify(
        &self,
        prf: Prf,
        peer: &Identity,
        octets: &[u8],
        method: u8,
        data: &[u8],
        certs: &[(u8, Vec<u8>)],
    ) -> Result<(), AuthError>;

    /// CERTREQ payloads (encoding, data) naming the authorities we trust, sent in
    /// the IKE_SA_INIT response (responder) or IKE_AUTH request (initiator) so that
    /// the peer sends its certificate.
    fn cert_requests(&self) -> Vec<(u8, Vec<u8>)> {
        Vec::new()
    }
}

/// The signed octets of §2.15: the sender's first message, the peer's nonce, and
/// prf(SK_p, the sender's ID payload body).
pub fn signed_octets(
    prf: Prf,
    sk_p: &Secret,
    first_message: &[u8],
    peer_nonce: &[u8],
    id_body: &[u8],
) -> Vec<u8> {
    let maced = prf.prf(sk_p.expose(), &[id_body]);
    [first_message, peer_nonce, maced.expose()].concat()
}
