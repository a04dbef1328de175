//! Our side of X.509 certificate authentication: an RSA or ECDSA (P-256, P-384)
//! private key and its certificate, read from PEM files. AUTH is an RFC 7427 Digital
//! Signature (method 14): sha256WithRSAEncryption, or ECDSA with SHA-256 (P-256) or
//! SHA-384 (P-384); IKE_AUTH carries the certificate and any intermediates as CERT
//! payloads of encoding 4, leaf first.

use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};

use super::x509::{self, KeyKind};
use super::{AUTH_DIGITAL_SIGNATURE, AuthError, LocalAuth};
use crate::codec::{Identity, cert_encoding};
use crate::crypto::prf::Prf;

enum Key {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair, &'static [u8]),
}

/// An X.509 certificate (with its intermediates) and the private key of its leaf.
pub struct CertSigner {
    /// DER, the leaf first.
    chain: Vec<Vec<u8>>,
    key: Key,
    rng: SystemRandom,
}

impl std::fmt::Debug for CertSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CertSigner({})", self.subject_dn())
    }
}

impl CertSigner {
    /// From a PEM certificate file (our certificate, then any intermediates up to,
    /// but not including, the CA the peer trusts) and a PEM private key file: RSA as
    /// PKCS#1 ("RSA PRIVATE KEY") or PKCS#8 ("PRIVATE KEY"), ECDSA as PKCS#8 or SEC1
    /// ("EC PRIVATE KEY"). The key must be the certificate's.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<CertSigner, String> {
        let chain = x509::read_certificates(cert)?;
        let (spki_key, kind) = {
            let leaf = x509::parse(&chain[0])?;
            let spki = leaf.public_key();
            let kind = KeyKind::of(spki).map_err(|e| format!("{}: {e}", cert.display()))?;
            (spki.subject_public_key.data.to_vec(), kind)
        };
        let blocks = x509::read_pem(key)?;
        let Some((tag, der)) = blocks.iter().find(|(t, _)| t.ends_with("PRIVATE KEY")) else {
            return Err(format!("{}: no PRIVATE KEY in the file", key.display()));
        };
        let bad = |e: ring::error::KeyRejected| {
            format!("{}: not a usable {kind:?} private key: {e}", key.display())
        };
        let rng = SystemRandom::new();
        let key_pair = match (tag.as_str(), kind) {
            ("RSA PRIVATE KEY", KeyKind::Rsa) => Key::Rsa(RsaKeyPair::from_der(der).map_err(bad)?),
            ("PRIVATE KEY", KeyKind::Rsa) => Key::Rsa(RsaKeyPair::from_pkcs8(der).map_err(bad)?),
            ("PRIVATE KEY" | "EC PRIVATE KEY", KeyKind::EcdsaP256 | KeyKind::EcdsaP384) => {
                let (alg, id, curve) = if kind == KeyKind::EcdsaP256 {
                    (
                        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                        x509::ECDSA_SHA256_ID,
                        OID_P256_DER,
                    )
                } else {
                    (
                        &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                        x509::ECDSA_SHA384_ID,
                        OID_P384_DER,
                    )
                };
                let pkcs8 = if tag == "EC PRIVATE KEY" {
                    sec1_to_pkcs8(der, curve)
                } else {
                    der.clone()
                };
                Key::Ecdsa(
                    EcdsaKeyPair::from_pkcs8(alg, &pkcs8, &rng).map_err(bad)?,
                    id,
                )
            }
            _ => {
                return Err(format!(
                    "{}: a {tag} does not fit the certificate's {kind:?} key",
                    key.display()
                ));
            }
        };
        let public = match &key_pair {
            Key::Rsa(k) => k.public_key().as_ref(),
            Key::Ecdsa(k, _) => k.public_key().as_ref(),
        };
        if public != spki_key {
            return Err(format!(
                "the private key in {} is not the key of the certificate in {}",
                key.display(),
                cert.display()
            ));
        }
        Ok(CertSigner {
            chain,
            key: key_pair,
            rng,
        })
    }

    fn leaf(&self) -> x509_parser::certificate::X509Certificate<'_> {
        x509::parse(&self.chain[0]).expect("checked when read")
    }

    /// Our certificate's subject, as an ID_DER_ASN1_DN: the identity strongSwan
    /// assumes for a certificate when none is configured.
    pub fn subject_dn(&self) -> Identity {
        x509::subject(&self.leaf())
    }

    /// Every identity our certificate vouches for: the subject, then the
    /// subjectAltName DNS names, IP addresses and e-mail addresses.
    pub fn identities(&self) -> Vec<Identity> {
        x509::identities(&self.leaf())
    }
}

/// The DER OIDs (tag and length included) of the named curves.
const OID_P256_DER: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384_DER: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_EC_PUBLIC_KEY_DER: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];

/// A DER tag-length-value.
fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(value);
    out
}

/// A SEC1 ECPrivateKey wrapped as the PKCS#8 PrivateKeyInfo ring reads (RFC 5915
/// §2: the same key, named by id-ecPublicKey and its curve).
fn sec1_to_pkcs8(sec1: &[u8], curve: &[u8]) -> Vec<u8> {
    let alg = tlv(0x30, &[OID_EC_PUBLIC_KEY_DER, curve].concat());
    let body = [&[0x02, 0x01, 0x00][..], &alg, &tlv(0x04, sec1)].concat();
    tlv(0x30, &body)
}

impl LocalAuth for CertSigner {
    fn sign(&self, _prf: Prf, octets: &[u8]) -> Result<(u8, Vec<u8>), AuthError> {
        let (id, sig) = match &self.key {
            Key::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &self.rng, octets, &mut sig)
                    .map_err(|_| AuthError::Sign)?;
                (x509::SHA256_WITH_RSA_ID, sig)
            }
            Key::Ecdsa(k, id) => {
                let sig = k.sign(&self.rng, octets).map_err(|_| AuthError::Sign)?;
                (*id, sig.as_ref().to_vec())
            }
        };
        let mut data = vec![id.len() as u8];
        data.extend_from_slice(id);
        data.extend(sig);
        Ok((AUTH_DIGITAL_SIGNATURE, data))
    }

    fn certificates(&self) -> Vec<(u8, Vec<u8>)> {
        self.chain
            .iter()
            .map(|der| (cert_encoding::X509_SIGNATURE, der.clone()))
            .collect()
    }

    fn hash_algorithms(&self) -> Vec<u16> {
        vec![
            x509::HASH_SHA2_256,
            x509::HASH_SHA2_384,
            x509::HASH_SHA2_512,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_get_long_form_lengths() {
        assert_eq!(tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = tlv(0x04, &[0; 200]);
        assert_eq!(&long[..3], &[0x04, 0x81, 200]);
        let longer = tlv(0x04, &[0; 300]);
        assert_eq!(&longer[..4], &[0x04, 0x82, 0x01, 0x2c]);
    }
}
