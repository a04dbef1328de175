//! Identities as other vendors' gateways use them: distinguished names built from
//! `(type, value)` pairs, printed back, compared whatever string types encode them;
//! identities printed as the configuration writes them.

use strait_ike::codec::Identity;

fn der(id: &Identity) -> &[u8] {
    match id {
        Identity::DerAsn1Dn(b) => b,
        other => panic!("not a DN: {other}"),
    }
}

#[test]
fn a_dn_is_encoded_as_openssl_does() {
    let id = Identity::dn(&[("CN", "gw"), ("C", "DE")]).unwrap();
    // Name = SEQUENCE { SET { SEQUENCE { OID 2.5.4.3, UTF8String "gw" } },
    //                   SET { SEQUENCE { OID 2.5.4.6, PrintableString "DE" } } }
    let expected = [
        0x30, 0x1a, 0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x02, b'g', b'w',
        0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, b'D', b'E',
    ];
    assert_eq!(der(&id), expected);
    assert_eq!(id.to_string(), "dn:CN=gw,C=DE");
}

#[test]
fn dns_round_trip_through_der_and_text() {
    let pairs = [
        ("CN", "gw.example.com"),
        ("OU", "Net"),
        ("O", "Example Ltd"),
        ("L", "Köln"),
        ("ST", "NRW"),
        ("C", "DE"),
        ("emailAddress", "ops@example.com"),
        ("DC", "example"),
    ];
    let id = Identity::dn(&pairs).unwrap();
    assert_eq!(
        id.to_string(),
        "dn:CN=gw.example.com,OU=Net,O=Example Ltd,L=Köln,ST=NRW,C=DE,emailAddress=ops@example.com,DC=example"
    );
    // Aliases and case of the types, spaces around parts, as people write them.
    let again = Identity::dn(&[
        ("cn", " gw.example.com"),
        ("ou", "Net"),
        ("o", "Example Ltd"),
        ("l", "Köln"),
        ("S", "NRW"),
        ("c", "DE"),
        ("E", "ops@example.com"),
        ("dc", "example"),
    ])
    .unwrap();
    assert_eq!(again, id);
}

#[test]
fn bad_dns_are_refused_with_the_reason() {
    let e = Identity::dn(&[("XX", "y")]).unwrap_err();
    assert!(e.contains("unknown DN attribute type \"XX\""), "{e}");
    assert!(
        Identity::dn::<&str, &str>(&[])
            .unwrap_err()
            .contains("at least one")
    );
    assert!(Identity::dn(&[("CN", " ")]).unwrap_err().contains("empty"));
    let e = Identity::dn(&[("C", "D_E")]).unwrap_err();
    assert!(e.contains("cannot hold"), "{e}");
    assert!(Identity::dn(&[("emailAddress", "ö@x")]).is_err());
}

/// A short-form DER TLV (contents under 128 bytes), for names built by hand here.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    assert!(content.len() < 128);
    [&[tag, content.len() as u8][..], content].concat()
}

/// A Name of single-attribute RDNs with PrintableString values, as strongSwan encodes
/// a DN from its configuration: (OID last arc under 2.5.4, value).
fn printable_dn(rdns: &[(u8, &str)]) -> Identity {
    let mut name = Vec::new();
    for (arc, value) in rdns {
        let atv = [tlv(0x06, &[0x55, 0x04, *arc]), tlv(0x13, value.as_bytes())].concat();
        name.extend(tlv(0x31, &tlv(0x30, &atv)));
    }
    Identity::DerAsn1Dn(tlv(0x30, &name))
}

#[test]
fn dns_match_whatever_their_string_types() {
    let ours = Identity::dn(&[("CN", "charon.test"), ("O", "Test")]).unwrap();
    let same = printable_dn(&[(3, "charon.test"), (10, "TEST")]);
    assert_ne!(der(&same), der(&ours));
    assert_eq!(same.to_string(), "dn:CN=charon.test,O=TEST");
    assert!(
        same.matches(&ours),
        "case and string type aside, the same DN"
    );
    assert!(ours.matches(&ours));
    assert!(!printable_dn(&[(3, "charon.test"), (10, "TEST!")]).matches(&ours));
    assert!(!printable_dn(&[(3, "charon.test"), (11, "Test")]).matches(&ours));
    let reordered = Identity::dn(&[("O", "Test"), ("CN", "charon.test")]).unwrap();
    assert!(!reordered.matches(&ours));
    let fewer = Identity::dn(&[("CN", "charon.test")]).unwrap();
    assert!(!fewer.matches(&ours));
    assert!(!Identity::Fqdn("charon.test".into()).matches(&ours));
}

#[test]
fn identities_print_as_the_configuration_writes_them() {
    assert_eq!(
        Identity::Ipv4("192.0.2.1".parse().unwrap()).to_string(),
        "ipv4:192.0.2.1"
    );
    assert_eq!(
        Identity::Ipv6("2001:db8::1".parse().unwrap()).to_string(),
        "ipv6:2001:db8::1"
    );
    assert_eq!(Identity::Fqdn("gw".into()).to_string(), "fqdn:gw");
    assert_eq!(Identity::Rfc822("a@b".into()).to_string(), "email:a@b");
    assert!(Identity::Fqdn("GW.example".into()).matches(&Identity::Fqdn("gw.EXAMPLE".into())));
    // Bytes that are not a DER Name print as such, never panic.
    assert_eq!(
        Identity::DerAsn1Dn(vec![0x30, 0x05, 0x31]).to_string(),
        "dn:(not a DER name) 300531"
    );
}
