//! The X.509 pieces that [`CertSigner`](super::CertSigner) and
//! [`CaVerifier`](super::CaVerifier) share: reading PEM files, the kinds of public key
//! a certificate holds, the DER AlgorithmIdentifiers of RFC 7427 and their ring
//! verification algorithms, and names and times in the words of our errors.
//! Certificates are parsed with `x509-parser`; every signature is checked with ring.

use std::path::Path;

use ring::signature::{self, VerificationAlgorithm};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};

use crate::codec::Identity;

// OID contents (the bytes after tag and length).
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_SHA1_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
const OID_RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
const OID_SHA256_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const OID_SHA384_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const OID_SHA512_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_ECDSA_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];

/// DER AlgorithmIdentifiers we sign AUTH with (RFC 7427 Appendix A): RSA with a NULL
/// parameter, ECDSA without.
pub const SHA256_WITH_RSA_ID: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
pub const ECDSA_SHA256_ID: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
pub const ECDSA_SHA384_ID: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];

/// The SIGNATURE_HASH_ALGORITHMS values of RFC 7427 §7 we sign and verify with.
pub const HASH_SHA2_256: u16 = 2;
pub const HASH_SHA2_384: u16 = 3;
pub const HASH_SHA2_512: u16 = 4;

/// The kind of key a SubjectPublicKeyInfo holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl KeyKind {
    pub fn of(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyKind, String> {
        let alg = spki.algorithm.algorithm.as_bytes();
        let params = spki
            .algorithm
            .parameters
            .as_ref()
            .map(|p| p.data)
            .unwrap_or_default();
        match alg {
            OID_RSA_ENCRYPTION => Ok(KeyKind::Rsa),
            OID_EC_PUBLIC_KEY if params == OID_P256 => Ok(KeyKind::EcdsaP256),
            OID_EC_PUBLIC_KEY if params == OID_P384 => Ok(KeyKind::EcdsaP384),
            OID_EC_PUBLIC_KEY => Err("an ECDSA key on a curve other than P-256 and P-384".into()),
            OID_ED25519 => Ok(KeyKind::Ed25519),
            _ => Err(format!(
                "a public key of unsupported type (OID {})",
                spki.algorithm.algorithm
            )),
        }
    }
}

/// The ring algorithm that checks a signature made with `alg` by a key of `kind`,
/// for certificate signatures and RFC 7427 AUTH alike.
pub fn verification(
    alg: &AlgorithmIdentifier<'_>,
    kind: KeyKind,
) -> Result<&'static dyn VerificationAlgorithm, String> {
    use KeyKind::*;
    let oid = alg.algorithm.as_bytes();
    let found: Option<&'static dyn VerificationAlgorithm> = match (oid, kind) {
        (OID_SHA256_WITH_RSA, Rsa) => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
        (OID_SHA384_WITH_RSA, Rsa) => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
        (OID_SHA512_WITH_RSA, Rsa) => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
        (OID_RSASSA_PSS, Rsa) => pss(alg),
        (OID_ECDSA_SHA256, EcdsaP256) => Some(&signature::ECDSA_P256_SHA256_ASN1),
        (OID_ECDSA_SHA384, EcdsaP256) => Some(&signature::ECDSA_P256_SHA384_ASN1),
        (OID_ECDSA_SHA256, EcdsaP384) => Some(&signature::ECDSA_P384_SHA256_ASN1),
        (OID_ECDSA_SHA384, EcdsaP384) => Some(&signature::ECDSA_P384_SHA384_ASN1),
        (OID_ED25519, Ed25519) => Some(&signature::ED25519),
        _ => None,
    };
    found.ok_or_else(|| {
        let name = match oid {
            OID_SHA1_WITH_RSA => "sha1WithRSAEncryption".to_string(),
            _ => format!("OID {}", alg.algorithm),
        };
        format!("signature algorithm {name} is not supported with a {kind:?} key")
    })
}

/// RSASSA-PSS by the hash its parameters name; ring checks MGF1 with that hash and a
/// salt as long as the hash, the parameters strongSwan and OpenSSL use.
fn pss(alg: &AlgorithmIdentifier<'_>) -> Option<&'static dyn VerificationAlgorithm> {
    let params = alg.parameters.as_ref()?;
    let params = x509_parser::signature_algorithm::RsaSsaPssParams::try_from(params).ok()?;
    match params.hash_algorithm_oid().as_bytes() {
        OID_SHA256 => Some(&signature::RSA_PSS_2048_8192_SHA256),
        OID_SHA384 => Some(&signature::RSA_PSS_2048_8192_SHA384),
        OID_SHA512 => Some(&signature::RSA_PSS_2048_8192_SHA512),
        _ => None,
    }
}

/// Parse one DER certificate, the whole input.
pub fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing bytes after the certificate".into()),
        Err(e) => Err(format!("not a DER X.509 certificate: {e}")),
    }
}

/// Parse a DER AlgorithmIdentifier, the whole input.
pub fn parse_algorithm(der: &[u8]) -> Option<AlgorithmIdentifier<'_>> {
    match AlgorithmIdentifier::from_der(der) {
        Ok(([], alg)) => Some(alg),
        _ => None,
    }
}

/// The PEM blocks of a file, as (tag, DER contents).
pub fn read_pem(path: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let blocks = pem::parse_many(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if blocks.is_empty() {
        return Err(format!("{}: no PEM blocks", path.display()));
    }
    Ok(blocks
        .into_iter()
        .map(|b| (b.tag().to_string(), b.into_contents()))
        .collect())
}

/// The DER certificates of a PEM file, in file order.
pub fn read_certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let certs: Vec<Vec<u8>> = read_pem(path)?
        .into_iter()
        .filter(|(tag, _)| tag == "CERTIFICATE")
        .map(|(_, der)| der)
        .collect();
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE in the file", path.display()));
    }
    for der in &certs {
        parse(der).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(certs)
}

/// A certificate's subject as an ID_DER_ASN1_DN.
pub fn subject(cert: &X509Certificate<'_>) -> Identity {
    Identity::DerAsn1Dn(cert.subject().as_raw().to_vec())
}

/// A DER name in the words of strongSwan's logs, `CN=gw,O=Example`.
pub fn name(der: &[u8]) -> String {
    let id = Identity::DerAsn1Dn(der.to_vec()).to_string();
    id.strip_prefix("dn:").unwrap_or(&id).to_string()
}

/// The identities a certificate vouches for, as IKE IDs: its subject, then its
/// subjectAltName DNS names, IP addresses and e-mail addresses.
pub fn identities(cert: &X509Certificate<'_>) -> Vec<Identity> {
    let mut out = vec![subject(cert)];
    for general in alt_names(cert) {
        match general {
            GeneralName::DNSName(s) if s.is_ascii() && !s.is_empty() => {
                out.push(Identity::Fqdn(s.to_string()))
            }
            GeneralName::RFC822Name(s) if s.is_ascii() && !s.is_empty() => {
                out.push(Identity::Rfc822(s.to_string()))
            }
            GeneralName::IPAddress(b) => {
                if let Ok(a) = <[u8; 4]>::try_from(*b) {
                    out.push(Identity::Ipv4(a.into()));
                } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                    out.push(Identity::Ipv6(a.into()));
                }
            }
            _ => {}
        }
    }
    out
}

fn alt_names<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a GeneralName<'a>> {
    match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.iter().collect(),
        _ => Vec::new(),
    }
}

/// Whether the certificate vouches for `id`: ID_FQDN and ID_RFC822_ADDR by a
/// subjectAltName of that kind (case-insensitive), IP addresses by a SAN iPAddress,
/// a DN by the subject (attribute by attribute, whatever the string types).
pub fn vouches_for(cert: &X509Certificate<'_>, id: &Identity) -> bool {
    match id {
        Identity::DerAsn1Dn(_) => subject(cert).matches(id),
        Identity::KeyId(_) => false,
        _ => identities(cert).iter().skip(1).any(|have| have.matches(id)),
    }
}

/// The certificate's subject and SANs, as in `CN=x (SAN DNS:a, IP:1.2.3.4)`.
pub fn describe(cert: &X509Certificate<'_>) -> String {
    let sans: Vec<String> = identities(cert)
        .iter()
        .skip(1)
        .map(|id| match id {
            Identity::Fqdn(s) => format!("DNS:{s}"),
            Identity::Rfc822(s) => format!("email:{s}"),
            Identity::Ipv4(a) => format!("IP:{a}"),
            Identity::Ipv6(a) => format!("IP:{a}"),
            other => other.to_string(),
        })
        .collect();
    let subject = name(cert.subject().as_raw());
    if sans.is_empty() {
        subject
    } else {
        format!("{subject} (SAN {})", sans.join(", "))
    }
}

/// A UNIX time as `2026-01-01 00:00:00 UTC`.
pub fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_767_225_600), "2026-01-01 00:00:00 UTC");
        assert_eq!(utc(951_825_599), "2000-02-29 11:59:59 UTC");
        assert_eq!(utc(-1), "1969-12-31 23:59:59 UTC");
    }
}
