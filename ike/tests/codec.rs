//! The codec against byte vectors laid out by hand from RFC 7296 §3 (so that a
//! decoder and encoder agreeing on a wrong layout still fail), round trips of every
//! payload, and the errors malformed input gets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use strait_ike::codec::*;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// An IKE_SA_INIT request: SA (AES-GCM-16/256, PRF_HMAC_SHA2_256, Curve25519), KE,
/// Ni, NAT_DETECTION_SOURCE_IP.
fn init_request() -> Vec<u8> {
    hex(concat!(
        // header: SPIi, SPIr, next SA, version 2.0, IKE_SA_INIT, I flag, ID 0, length 172
        "0102030405060708 0000000000000000 21 20 22 08 00000000 000000ac",
        // SA, next KE, length 40; proposal last, length 36, #1, IKE, no SPI, 3 transforms
        "22 00 0028  00 00 0024 01 01 00 03",
        "03 00 000c 01 00 0014 800e 0100", // ENCR_AES_GCM_16, key length 256
        "03 00 0008 02 00 0005",           // PRF_HMAC_SHA2_256
        "00 00 0008 04 00 001f",           // DH group 31
        // KE, next Nonce, length 40, group 31
        "28 00 0028 001f 0000",
        "1111111111111111111111111111111111111111111111111111111111111111",
        // Nonce, next Notify, length 36
        "29 00 0024 2222222222222222222222222222222222222222222222222222222222222222",
        // Notify, last, length 28: no protocol, no SPI, NAT_DETECTION_SOURCE_IP
        "00 00 001c 00 00 4004 3333333333333333333333333333333333333333",
    ))
}

#[test]
fn init_request_decodes_field_by_field() {
    let m = Message::decode(&init_request()).unwrap();
    assert_eq!(m.header.spi_i, 0x0102030405060708);
    assert_eq!(m.header.spi_r, 0);
    assert_eq!(m.header.exchange, ExchangeType::IkeSaInit);
    assert!(m.header.initiator && !m.header.response && !m.header.version);
    assert_eq!(m.header.message_id, 0);
    let [
        Payload::Sa(sa),
        Payload::Ke { group, data },
        Payload::Nonce(n),
        Payload::Notify(nat),
    ] = &m.payloads[..]
    else {
        panic!("payloads {:?}", m.payloads)
    };
    assert_eq!(sa.len(), 1);
    assert_eq!(sa[0].number, 1);
    assert_eq!(sa[0].protocol, ProtocolId::Ike);
    assert!(sa[0].spi.is_empty());
    assert_eq!(
        sa[0].transforms,
        vec![
            Transform::with_key_length(transform_type::ENCR, 20, 256),
            Transform::new(transform_type::PRF, 5),
            Transform::new(transform_type::DH, 31),
        ]
    );
    assert_eq!(sa[0].transforms[0].key_length(), Some(256));
    assert_eq!((*group, data.len()), (31, 32));
    assert_eq!(n, &vec![0x22; 32]);
    assert_eq!(nat.kind, NotifyType::NatDetectionSourceIp);
    assert_eq!(nat.data, vec![0x33; 20]);
    assert_eq!(
        m.encode().unwrap(),
        init_request(),
        "encoding is byte-exact"
    );
}

#[test]
fn header_checks_length_and_version() {
    let mut m = init_request();
    m.push(0);
    assert_eq!(
        Message::decode(&m),
        Err(DecodeError::LengthMismatch {
            field: 172,
            actual: 173
        })
    );
    let mut m = init_request();
    m[17] = 0x30;
    assert_eq!(
        Message::decode(&m),
        Err(DecodeError::InvalidMajorVersion { major: 3 })
    );
    assert_eq!(
        Message::decode(&m).unwrap_err().notify().0,
        NotifyType::InvalidMajorVersion
    );
    assert_eq!(
        Message::decode(&init_request()[..20]),
        Err(DecodeError::ShortHeader { len: 20 })
    );
}

/// The init request with a payload of unknown type 200 between SA and KE.
fn with_unknown(critical: bool) -> Vec<u8> {
    let mut m = init_request();
    m[28] = 200; // SA's next payload
    let unknown = [
        0x22,
        if critical { 0x80 } else { 0 },
        0x00,
        0x06,
        0xab,
        0xcd,
    ];
    m.splice(68..68, unknown);
    m[27] += 6;
    m
}

#[test]
fn unknown_payloads_are_skipped_unless_critical() {
    let m = Message::decode(&with_unknown(false)).unwrap();
    assert_eq!(m.payloads.len(), 4, "the unknown payload is skipped");
    let e = Message::decode(&with_unknown(true)).unwrap_err();
    assert_eq!(e, DecodeError::UnsupportedCriticalPayload { kind: 200 });
    assert_eq!(
        e.notify(),
        (NotifyType::UnsupportedCriticalPayload, vec![200])
    );
}

#[test]
fn bad_lengths_are_named() {
    // A payload length running past the message.
    let mut m = init_request();
    m[31] = 0xff;
    assert!(matches!(
        Message::decode(&m),
        Err(DecodeError::BadPayloadLength { kind: 33, .. })
    ));
    // A payload length below its own header.
    let mut m = init_request();
    m[31] = 2;
    assert!(matches!(
        Message::decode(&m),
        Err(DecodeError::BadPayloadLength {
            kind: 33,
            length: 2
        })
    ));
    // A transform count that disagrees with the last-transform flags.
    let mut m = init_request();
    m[39] = 4;
    assert!(matches!(
        Message::decode(&m),
        Err(DecodeError::Malformed { payload: "SA", .. })
    ));
    // A nonce of 15 bytes.
    let p = Payload::decode_body(payload_type::NONCE, &[0; 15]).unwrap();
    assert!(matches!(
        p,
        Err(DecodeError::Malformed {
            payload: "Nonce",
            ..
        })
    ));
    // An IPv4 identity of 5 bytes.
    let p = Payload::decode_body(payload_type::IDI, &[1, 0, 0, 0, 10, 0, 0, 1, 9]).unwrap();
    assert!(matches!(
        p,
        Err(DecodeError::Malformed { payload: "ID", .. })
    ));
    // A TS whose length does not fit its type.
    let p = Payload::decode_body(
        payload_type::TSI,
        &hex("01000000 07 00 0014 0000ffff 0a000000 0a0000ff 00000000"),
    )
    .unwrap();
    assert!(matches!(
        p,
        Err(DecodeError::Malformed { payload: "TS", .. })
    ));
    // A Delete of ESP SPIs with a count that does not match.
    let p = Payload::decode_body(payload_type::DELETE, &hex("03 04 0002 11223344")).unwrap();
    assert!(matches!(
        p,
        Err(DecodeError::Malformed { payload: "D", .. })
    ));
}

#[test]
fn encrypted_payload_must_be_last() {
    // header + SK (next = IDi inside) + a trailing Nonce after it.
    let mut m = hex("0102030405060708 1112131415161718 2e 20 23 08 00000001 00000000");
    m.extend(hex("23 00 0008 aabbccdd"));
    let mut ok = m.clone();
    let len = ok.len() as u32;
    ok[24..28].copy_from_slice(&len.to_be_bytes());
    let d = Message::decode(&ok).unwrap();
    assert_eq!(
        d.payloads,
        vec![Payload::Encrypted(Encrypted {
            first_inner: payload_type::IDI,
            data: hex("aabbccdd")
        })]
    );
    m.extend(hex("00 00 0014 00000000000000000000000000000000"));
    let len = m.len() as u32;
    m[24..28].copy_from_slice(&len.to_be_bytes());
    assert_eq!(Message::decode(&m), Err(DecodeError::EncryptedNotLast));
}

fn every_payload() -> Vec<Payload> {
    let v4 = |a, b| IpAddr::V4(Ipv4Addr::new(10, 0, a, b));
    vec![
        Payload::Sa(vec![
            Proposal {
                number: 1,
                protocol: ProtocolId::Esp,
                spi: vec![1, 2, 3, 4],
                transforms: vec![
                    Transform::with_key_length(transform_type::ENCR, 20, 128),
                    Transform::new(transform_type::ESN, 1),
                    Transform::new(transform_type::ESN, 0),
                ],
            },
            Proposal {
                number: 2,
                protocol: ProtocolId::Ike,
                spi: vec![9; 8],
                transforms: vec![Transform {
                    kind: transform_type::ENCR,
                    id: 20,
                    attributes: vec![Attribute::Long {
                        kind: 99,
                        value: vec![1, 2, 3],
                    }],
                }],
            },
        ]),
        Payload::Ke {
            group: 19,
            data: vec![7; 64],
        },
        Payload::IdI(Identity::Ipv4(Ipv4Addr::new(192, 0, 2, 1))),
        Payload::IdR(Identity::Fqdn("node-a.example".into())),
        Payload::IdI(Identity::Rfc822("ops@example.org".into())),
        Payload::IdR(Identity::Ipv6(Ipv6Addr::LOCALHOST)),
        Payload::IdI(Identity::DerAsn1Dn(vec![0x30, 0x00])),
        Payload::IdR(Identity::KeyId(vec![1, 2, 3])),
        Payload::Cert {
            encoding: cert_encoding::RAW_PUBLIC_KEY,
            data: vec![0x30; 44],
        },
        Payload::CertReq {
            encoding: cert_encoding::X509_SIGNATURE,
            data: vec![],
        },
        Payload::Auth {
            method: 14,
            data: vec![7, 0x30, 5, 6, 3, 0x2b, 0x65, 0x70, 1, 2],
        },
        Payload::Nonce(vec![5; 16]),
        Payload::Notify(Notify {
            protocol: 3,
            spi: vec![0, 0, 0, 1],
            kind: NotifyType::RekeySa,
            data: vec![],
        }),
        Payload::Notify(Notify::new(NotifyType::Other(40000), vec![1])),
        Payload::Delete(Delete {
            protocol: ProtocolId::Esp,
            spis: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]],
        }),
        Payload::Delete(Delete {
            protocol: ProtocolId::Ike,
            spis: vec![],
        }),
        Payload::Vendor(b"strait".to_vec()),
        Payload::TsI(vec![TrafficSelector::range(v4(0, 0), v4(0, 255))]),
        Payload::TsR(vec![
            TrafficSelector {
                ip_protocol: 17,
                start_port: 4500,
                end_port: 4500,
                start_addr: Ipv6Addr::UNSPECIFIED.into(),
                end_addr: Ipv6Addr::from([0xff; 16]).into(),
            },
            TrafficSelector::range(v4(1, 0), v4(1, 9)),
        ]),
        Payload::Encrypted(Encrypted {
            first_inner: payload_type::IDI,
            data: vec![0xee; 40],
        }),
    ]
}

#[test]
fn every_payload_round_trips_in_a_message() {
    let m = Message {
        header: Header {
            spi_i: 1,
            spi_r: 2,
            minor_version: 0,
            exchange: ExchangeType::CreateChildSa,
            initiator: false,
            version: false,
            response: true,
            message_id: 7,
        },
        payloads: every_payload(),
    };
    let bytes = m.encode().unwrap();
    assert_eq!(Message::decode(&bytes).unwrap(), m);
}

#[test]
fn unencodable_values_are_refused() {
    let bad = [
        Payload::Sa(vec![]),
        Payload::Nonce(vec![0; 8]),
        Payload::TsI(vec![]),
        Payload::TsR(vec![TrafficSelector::range(
            Ipv4Addr::LOCALHOST.into(),
            Ipv6Addr::LOCALHOST.into(),
        )]),
        Payload::IdI(Identity::Fqdn(String::new())),
        Payload::Delete(Delete {
            protocol: ProtocolId::Esp,
            spis: vec![vec![1]],
        }),
    ];
    for p in bad {
        let mut out = Vec::new();
        assert!(
            encode_chain(std::slice::from_ref(&p), &mut out).is_err(),
            "{p:?} encoded"
        );
    }
}

#[test]
fn traffic_selectors_narrow() {
    let a = TrafficSelector::prefix("10.0.0.0/16".parse().unwrap());
    let b = TrafficSelector::prefix("10.0.1.0/24".parse().unwrap());
    assert_eq!(a.intersect(&b), Some(b.clone()));
    assert!(b.is_within(&a) && !a.is_within(&b));
    let c = TrafficSelector::prefix("10.1.0.0/24".parse().unwrap());
    assert_eq!(a.intersect(&c), None);
    let v6 = TrafficSelector::prefix("fd00::/64".parse().unwrap());
    assert_eq!(a.intersect(&v6), None);
}

/// An Encrypted Fragment message laid out from RFC 7383 §2.5: the header names SKF
/// (53), the payload carries Fragment Number and Total Fragments before the sealed
/// data, and its next-payload field names the first inner payload.
#[test]
fn encrypted_fragment_decodes_field_by_field() {
    let bytes = hex(concat!(
        // header: next SKF, IKE_AUTH, I flag, ID 1, length 28 + 24
        "0102030405060708 1112131415161718 35 20 23 08 00000001 00000034",
        // SKF: next IDi, length 24, fragment 1 of 3, 16 bytes IV/ciphertext/ICV
        "23 00 0018 0001 0003 00112233445566778899aabbccddeeff",
    ));
    let m = Message::decode(&bytes).unwrap();
    assert_eq!(
        m.payloads,
        vec![Payload::EncryptedFragment(EncryptedFragment {
            first_inner: payload_type::IDI,
            number: 1,
            total: 3,
            data: hex("00112233445566778899aabbccddeeff"),
        })]
    );
    assert_eq!(m.encode().unwrap(), bytes);
    for (fields, reason) in [("0000 0003", "number zero"), ("0004 0003", "above total")] {
        let mut bad = bytes.clone();
        bad[32..36].copy_from_slice(&hex(fields));
        assert!(
            matches!(
                Message::decode(&bad),
                Err(DecodeError::Malformed { payload: "SKF", .. })
            ),
            "{reason}"
        );
    }
}
