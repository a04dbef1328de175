//! The peer's side of X.509 certificate authentication: the CA certificates we trust
//! (a PEM file), the chain the peer's CERT payloads (encoding 4) build from its
//! certificate through any intermediates to one of them, the peer's claimed identity
//! against its certificate, and its AUTH against the certificate's key: RFC 7427
//! Digital Signatures (method 14: RSA PKCS#1 v1.5 or PSS with SHA-2, ECDSA, Ed25519),
//! and the classic methods 1 (RSA with SHA-1) and 9/10 (ECDSA P-256/P-384, RFC 4754).
//! Every refusal is a sentence for `netctl ipsec peers`.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::digest;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::certificate::X509Certificate;

use super::x509::{self, KeyKind};
use super::{AUTH_DIGITAL_SIGNATURE, AuthError, PeerAuth};
use crate::codec::{Identity, cert_encoding};
use crate::crypto::prf::Prf;

/// AUTH method 1: RSA Digital Signature (PKCS#1 v1.5 with SHA-1).
pub const AUTH_RSA_SIGNATURE: u8 = 1;
/// AUTH method 9: ECDSA with SHA-256 on P-256 (RFC 4754).
pub const AUTH_ECDSA_P256: u8 = 9;
/// AUTH method 10: ECDSA with SHA-384 on P-384 (RFC 4754).
pub const AUTH_ECDSA_P384: u8 = 10;

/// How many certificates a chain may hold above the peer's own, CA excluded.
const MAX_INTERMEDIATES: usize = 8;

/// Checks peers by certificates issued (directly or through intermediates) by one of
/// the configured CAs.
#[derive(Debug, Clone)]
pub struct CaVerifier {
    /// DER, each parsed when read.
    cas: Vec<Vec<u8>>,
    /// The clock; `None` is the system's.
    time: Option<SystemTime>,
}

impl CaVerifier {
    /// From a PEM file of one or more CA certificates.
    pub fn from_pem_file(path: &Path) -> Result<CaVerifier, String> {
        CaVerifier::from_der(x509::read_certificates(path)?)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// From DER CA certificates (at least one).
    pub fn from_der(cas: Vec<Vec<u8>>) -> Result<CaVerifier, String> {
        if cas.is_empty() {
            return Err("no CA certificate".into());
        }
        for der in &cas {
            let ca = x509::parse(der)?;
            KeyKind::of(ca.public_key())
                .map_err(|e| format!("CA {}: {e}", x509::name(ca.subject().as_raw())))?;
        }
        Ok(CaVerifier { cas, time: None })
    }

    /// Check validity periods against `time` instead of the system clock.
    pub fn with_time(mut self, time: SystemTime) -> CaVerifier {
        self.time = Some(time);
        self
    }

    fn now(&self) -> i64 {
        let t = self.time.unwrap_or_else(SystemTime::now);
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// The chain from the first X.509 certificate of `certs` (the peer's) to a
    /// configured CA, and the peer's claimed identity against that certificate.
    /// Returns the peer's certificate (DER).
    pub fn check_certificates<'c>(
        &self,
        peer: &Identity,
        certs: &'c [(u8, Vec<u8>)],
    ) -> Result<&'c [u8], AuthError> {
        let sent: Vec<&[u8]> = certs
            .iter()
            .filter(|(encoding, _)| *encoding == cert_encoding::X509_SIGNATURE)
            .map(|(_, der)| der.as_slice())
            .collect();
        let Some(&leaf_der) = sent.first() else {
            return Err(AuthError::NoCertificate);
        };
        let refuse = |s: String| AuthError::Certificate(s);
        let leaf = x509::parse(leaf_der)
            .map_err(|e| refuse(format!("the peer's certificate is unreadable: {e}")))?;
        // Intermediates that do not parse cannot be on the chain; skip them.
        let others: Vec<X509Certificate<'_>> = sent[1..]
            .iter()
            .filter_map(|d| x509::parse(d).ok())
            .collect();
        let cas: Vec<X509Certificate<'_>> = self
            .cas
            .iter()
            .map(|d| x509::parse(d).expect("checked when read"))
            .collect();
        self.chain(&leaf, &others, &cas).map_err(refuse)?;
        if !x509::vouches_for(&leaf, peer) {
            return Err(refuse(format!(
                "certificate identity mismatch: got {}; want {peer}",
                x509::describe(&leaf)
            )));
        }
        Ok(leaf_der)
    }

    fn chain(
        &self,
        leaf: &X509Certificate<'_>,
        others: &[X509Certificate<'_>],
        cas: &[X509Certificate<'_>],
    ) -> Result<(), String> {
        let now = self.now();
        in_time(leaf, now)?;
        let mut current = leaf;
        let mut used = vec![false; others.len()];
        for _ in 0..=MAX_INTERMEDIATES {
            let issuer = current.issuer().as_raw();
            let mut named_but_unsigned = false;
            for ca in cas
                .iter()
                .filter(|c| same_name(c.subject().as_raw(), issuer))
            {
                if signed_by(current, ca) {
                    return in_time(ca, now);
                }
                named_but_unsigned = true;
            }
            let next = others.iter().enumerate().find(|(i, c)| {
                !used[*i] && same_name(c.subject().as_raw(), issuer) && {
                    let ok = signed_by(current, c);
                    named_but_unsigned |= !ok;
                    ok
                }
            });
            let Some((i, next)) = next else {
                return Err(if named_but_unsigned {
                    format!(
                        "the signature on certificate {} does not verify with its issuer's key ({})",
                        x509::name(current.subject().as_raw()),
                        x509::name(issuer)
                    )
                } else {
                    format!(
                        "certificate not issued by a configured CA (issuer {})",
                        x509::name(issuer)
                    )
                });
            };
            if !is_ca(next) {
                return Err(format!(
                    "certificate {} issued {} but is not a CA (no basicConstraints CA:TRUE)",
                    x509::name(next.subject().as_raw()),
                    x509::name(current.subject().as_raw())
                ));
            }
            in_time(next, now)?;
            used[i] = true;
            current = next;
        }
        Err(format!(
            "certificate chain longer than {MAX_INTERMEDIATES} intermediates"
        ))
    }

    /// The CERTREQ data of encoding 4: the SHA-1 hashes of our CAs'
    /// SubjectPublicKeyInfo, one after another (RFC 7296 §3.7).
    fn authorities(&self) -> Vec<u8> {
        self.cas
            .iter()
            .flat_map(|der| {
                let ca = x509::parse(der).expect("checked when read");
                digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, ca.public_key().raw)
                    .as_ref()
                    .to_vec()
            })
            .collect()
    }
}

fn same_name(a: &[u8], b: &[u8]) -> bool {
    a == b || Identity::DerAsn1Dn(a.to_vec()).matches(&Identity::DerAsn1Dn(b.to_vec()))
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

fn in_time(cert: &X509Certificate<'_>, now: i64) -> Result<(), String> {
    let v = cert.validity();
    let who = x509::name(cert.subject().as_raw());
    if now < v.not_before.timestamp() {
        return Err(format!(
            "certificate not valid before {} ({who})",
            x509::utc(v.not_before.timestamp())
        ));
    }
    if now > v.not_after.timestamp() {
        return Err(format!(
            "certificate expired on {} ({who})",
            x509::utc(v.not_after.timestamp())
        ));
    }
    Ok(())
}

/// Whether `issuer`'s key made the signature on `cert`.
fn signed_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    let Ok(kind) = KeyKind::of(issuer.public_key()) else {
        return false;
    };
    let Ok(alg) = x509::verification(&cert.signature_algorithm, kind) else {
        return false;
    };
    UnparsedPublicKey::new(alg, &issuer.public_key().subject_public_key.data)
        .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .is_ok()
}

/// The algorithm that checks AUTH `method` with a key of `kind`, and the signature.
fn auth_algorithm(
    method: u8,
    data: &[u8],
    kind: KeyKind,
) -> Result<(&'static dyn VerificationAlgorithm, &[u8]), AuthError> {
    let wrong_key = |what: &str| {
        AuthError::Certificate(format!(
            "AUTH method {method} needs {what}; the peer's certificate holds a {kind:?} key"
        ))
    };
    match method {
        AUTH_DIGITAL_SIGNATURE => {
            let (&len, rest) = data.split_first().ok_or(AuthError::UnsupportedAlgorithm)?;
            let (alg, sig) = rest
                .split_at_checked(len as usize)
                .ok_or(AuthError::UnsupportedAlgorithm)?;
            let alg = x509::parse_algorithm(alg).ok_or_else(|| {
                AuthError::Certificate("the AUTH data holds no AlgorithmIdentifier".into())
            })?;
            let alg = x509::verification(&alg, kind).map_err(AuthError::Certificate)?;
            Ok((alg, sig))
        }
        AUTH_RSA_SIGNATURE if kind == KeyKind::Rsa => Ok((
            &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            data,
        )),
        AUTH_RSA_SIGNATURE => Err(wrong_key("an RSA key")),
        AUTH_ECDSA_P256 if kind == KeyKind::EcdsaP256 => {
            Ok((&signature::ECDSA_P256_SHA256_FIXED, data))
        }
        AUTH_ECDSA_P256 => Err(wrong_key("a P-256 key")),
        AUTH_ECDSA_P384 if kind == KeyKind::EcdsaP384 => {
            Ok((&signature::ECDSA_P384_SHA384_FIXED, data))
        }
        AUTH_ECDSA_P384 => Err(wrong_key("a P-384 key")),
        _ => Err(AuthError::UnsupportedMethod(method)),
    }
}

impl PeerAuth for CaVerifier {
    fn verify(
        &self,
        _prf: Prf,
        peer: &Identity,
        octets: &[u8],
        method: u8,
        data: &[u8],
        certs: &[(u8, Vec<u8>)],
    ) -> Result<(), AuthError> {
        let leaf = x509::parse(self.check_certificates(peer, certs)?).expect("parsed before");
        let spki = leaf.public_key();
        let kind = KeyKind::of(spki)
            .map_err(|e| AuthError::Certificate(format!("the peer's certificate holds {e}")))?;
        let (alg, sig) = auth_algorithm(method, data, kind)?;
        UnparsedPublicKey::new(alg, &spki.subject_public_key.data)
            .verify(octets, sig)
            .map_err(|_| AuthError::CertificateSignature)
    }

    fn cert_requests(&self) -> Vec<(u8, Vec<u8>)> {
        vec![(cert_encoding::X509_SIGNATURE, self.authorities())]
    }
}
