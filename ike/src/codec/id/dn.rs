//! X.500 distinguished names as ID_DER_ASN1_DN carries them (RFC 7296 §3.5, the DER
//! of RFC 5280's `Name`): built from `(type, value)` pairs as written in a config
//! (`CN=gw.example,O=Example`), printed back the same way, and compared the way
//! strongSwan compares them (attribute types and values, not the string types).
//!
//! Only what a `Name` needs of DER is read here; the parser takes untrusted bytes and
//! never panics.

use std::fmt::Write;

/// ASN.1 tags used in names.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const IA5_STRING: u8 = 0x16;
const BMP_STRING: u8 = 0x1e;

/// The attribute types a DN may be written with, their OIDs (DER content bytes) and
/// the string type OpenSSL encodes them as.
const ATTRIBUTES: &[(&str, &[u8], u8)] = &[
    ("CN", &[0x55, 0x04, 0x03], UTF8_STRING),
    ("SN", &[0x55, 0x04, 0x04], UTF8_STRING),
    ("serialNumber", &[0x55, 0x04, 0x05], PRINTABLE_STRING),
    ("C", &[0x55, 0x04, 0x06], PRINTABLE_STRING),
    ("L", &[0x55, 0x04, 0x07], UTF8_STRING),
    ("ST", &[0x55, 0x04, 0x08], UTF8_STRING),
    ("street", &[0x55, 0x04, 0x09], UTF8_STRING),
    ("O", &[0x55, 0x04, 0x0a], UTF8_STRING),
    ("OU", &[0x55, 0x04, 0x0b], UTF8_STRING),
    ("title", &[0x55, 0x04, 0x0c], UTF8_STRING),
    ("GN", &[0x55, 0x04, 0x2a], UTF8_STRING),
    (
        "emailAddress",
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
        IA5_STRING,
    ),
    (
        "UID",
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
        UTF8_STRING,
    ),
    (
        "DC",
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
        IA5_STRING,
    ),
];

/// Other spellings accepted on input.
const ALIASES: &[(&str, &str)] = &[("E", "emailAddress"), ("S", "ST"), ("G", "GN")];

/// One attribute of a name: its OID (content bytes), string tag and value bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub oid: Vec<u8>,
    pub tag: u8,
    pub value: Vec<u8>,
}

impl Attribute {
    /// `CN`, `O`…, or the dotted OID of a type not in the table.
    pub fn type_name(&self) -> String {
        ATTRIBUTES
            .iter()
            .find(|(_, oid, _)| *oid == self.oid.as_slice())
            .map_or_else(|| dotted(&self.oid), |(name, _, _)| name.to_string())
    }

    /// The value as text: BMPString is UTF-16BE, the others ASCII or UTF-8.
    pub fn text(&self) -> String {
        if self.tag == BMP_STRING {
            let units: Vec<u16> = self
                .value
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16_lossy(&units)
        } else {
            String::from_utf8_lossy(&self.value).into_owned()
        }
    }
}

/// The DER of a `Name` from `(type, value)` pairs, in order, one attribute per RDN.
pub fn encode<K: AsRef<str>, V: AsRef<str>>(rdns: &[(K, V)]) -> Result<Vec<u8>, String> {
    if rdns.is_empty() {
        return Err("a distinguished name needs at least one attribute".into());
    }
    let mut name = Vec::new();
    for (kind, value) in rdns {
        let (kind, value) = (kind.as_ref().trim(), value.as_ref().trim());
        let kind = ALIASES
            .iter()
            .find(|(alias, _)| alias.eq_ignore_ascii_case(kind))
            .map_or(kind, |(_, name)| name);
        let Some((_, oid, tag)) = ATTRIBUTES
            .iter()
            .find(|(name, _, _)| name.eq_ignore_ascii_case(kind))
        else {
            let known: Vec<&str> = ATTRIBUTES.iter().map(|(n, _, _)| *n).collect();
            return Err(format!(
                "unknown DN attribute type {kind:?} (known: {})",
                known.join(", ")
            ));
        };
        if value.is_empty() {
            return Err(format!("DN attribute {kind} has an empty value"));
        }
        let fits = match *tag {
            PRINTABLE_STRING => value.bytes().all(is_printable),
            IA5_STRING => value.is_ascii(),
            _ => true,
        };
        if !fits {
            return Err(format!(
                "DN attribute {kind}={value:?} has characters its string type cannot hold"
            ));
        }
        let mut atv = tlv(OID, oid);
        atv.extend(tlv(*tag, value.as_bytes()));
        name.extend(tlv(SET, &tlv(SEQUENCE, &atv)));
    }
    Ok(tlv(SEQUENCE, &name))
}

/// PrintableString's alphabet (X.680 §41.4).
fn is_printable(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b)
}

/// The attributes of a DER `Name`, in order (a multi-valued RDN's in its order), or
/// `None` if the bytes are not exactly one well-formed `Name`.
pub fn parse(der: &[u8]) -> Option<Vec<Attribute>> {
    let (tag, mut rdns, rest) = read_tlv(der)?;
    if tag != SEQUENCE || !rest.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    while !rdns.is_empty() {
        let (tag, mut set, rest) = read_tlv(rdns)?;
        if tag != SET || set.is_empty() {
            return None;
        }
        rdns = rest;
        while !set.is_empty() {
            let (tag, atv, rest) = read_tlv(set)?;
            if tag != SEQUENCE {
                return None;
            }
            set = rest;
            let (tag, oid, atv) = read_tlv(atv)?;
            if tag != OID || oid.is_empty() {
                return None;
            }
            let (tag, value, end) = read_tlv(atv)?;
            if !end.is_empty() {
                return None;
            }
            out.push(Attribute {
                oid: oid.to_vec(),
                tag,
                value: value.to_vec(),
            });
        }
    }
    Some(out)
}

/// `CN=gw.example,O=Example`, or `None` if `der` is not a `Name`.
pub fn to_string(der: &[u8]) -> Option<String> {
    let attributes = parse(der)?;
    let mut s = String::new();
    for (i, a) in attributes.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{}={}", a.type_name(), a.text());
    }
    Some(s)
}

/// Whether two DER names name the same subject: the same attribute types in the same
/// order with the same values, whatever string types carry them (strongSwan encodes
/// a configured DN as PrintableString, OpenSSL as UTF8String); ASCII case is ignored
/// as X.520's caseIgnoreMatch does. Unparsable names equal only byte for byte.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    if a == b {
        return true;
    }
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(&y)
                    .all(|(p, q)| p.oid == q.oid && p.text().eq_ignore_ascii_case(&q.text()))
        }
        _ => false,
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
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
    out.extend_from_slice(content);
    out
}

/// One DER TLV with a low tag number and a definite length: (tag, content, rest).
fn read_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, b) = b.split_first()?;
    let (len, b) = if first < 0x80 {
        (first as usize, b)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n]
            .iter()
            .fold(0usize, |acc, x| (acc << 8) | *x as usize);
        (len, &b[n..])
    };
    if b.len() < len {
        return None;
    }
    Some((tag, &b[..len], &b[len..]))
}

/// An OID's content bytes as dotted decimal.
fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for &b in oid {
        acc = acc.saturating_mul(128).saturating_add((b & 0x7f) as u64);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (acc / 40).min(2);
                arcs.push(first);
                arcs.push(acc - first * 40);
            } else {
                arcs.push(acc);
            }
            acc = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oids_print_dotted() {
        assert_eq!(dotted(&[0x55, 0x04, 0x03]), "2.5.4.3");
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]),
            "1.2.840.113549.1.9.1"
        );
    }

    #[test]
    fn long_lengths_round_trip() {
        let v = "x".repeat(300);
        let der = encode(&[("CN", v.as_str())]).unwrap();
        assert_eq!(to_string(&der).unwrap(), format!("CN={v}"));
    }
}
