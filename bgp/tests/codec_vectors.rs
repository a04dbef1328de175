//! Byte vectors for the codec, decoded and (where the encoder must produce exactly
//! these bytes) encoded.
//!
//! Source of every vector: built by hand, field by field, from the message formats of
//! RFC 4271 §4, RFC 5492 §4, RFC 4760 §3–4, RFC 6793, RFC 4724 §3, RFC 2918 §3 and
//! RFC 8950 §3–4; each
//! field is written on its own line with its meaning, so a reviewer checks them against
//! the RFC figures rather than against our encoder. The OPEN vectors mirror what FRR
//! sends (one capability per optional parameter) and how BIRD packs them (one
//! parameter), so both layouts are covered.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use strait_bgp::codec::{
    AfiSafi, AsPath, AsSegment, Capability, Context, DecodeError, Decoded, ExtendedNextHop, Family,
    GracefulRestart, GracefulRestartFamily, Message, MpReach, MpUnreach, NextHop, Notification,
    Open, Origin, PathAttribute, RawAttribute, RouteRefresh, SegmentKind, Update, decode, encode,
    frame_length,
};

/// Hex digits with any whitespace; `#` starts a comment to the end of the line.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .lines()
        .flat_map(|l| l.split('#').next().unwrap_or("").bytes())
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    assert!(digits.iter().all(u8::is_ascii_hexdigit), "not hex: {s}");
    assert!(digits.len().is_multiple_of(2), "odd hex in vector");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

const MARKER: &str = "ffffffff ffffffff ffffffff ffffffff";

/// A message of type `kind` around `body`, with the length computed (for the error
/// vectors, where the header is not what is tested).
fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = hex(MARKER);
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

fn decoded(bytes: &[u8], ctx: &Context) -> Message {
    match decode(bytes, ctx) {
        Ok(Decoded::Message(m)) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Decodes to `want` and encodes back to exactly `bytes`.
fn both_ways(bytes: &[u8], want: &Message, ctx: &Context) {
    assert_eq!(&decoded(bytes, ctx), want);
    assert_eq!(encode(want, ctx).unwrap(), bytes);
}

fn net4(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn seq(asns: &[u32]) -> AsPath {
    AsPath {
        segments: vec![AsSegment {
            kind: SegmentKind::Sequence,
            asns: asns.to_vec(),
        }],
    }
}

#[test]
fn keepalive() {
    let bytes = hex(&format!("{MARKER} 0013 04"));
    both_ways(&bytes, &Message::Keepalive, &Context::default());
    assert_eq!(frame_length(&bytes), Ok(Some(19)));
    assert_eq!(frame_length(&bytes[..18]), Ok(None));
}

fn frr_like_open() -> Open {
    Open {
        my_as: 65001,
        hold_time: 180,
        bgp_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(65001),
            Capability::GracefulRestart(GracefulRestart {
                restart_state: false,
                notification: false,
                restart_time: 120,
                families: vec![GracefulRestartFamily {
                    afi_safi: AfiSafi::IPV4_UNICAST,
                    forwarding_preserved: true,
                }],
            }),
        ],
    }
}

#[test]
fn open_with_capabilities_in_one_parameter() {
    let bytes = hex(&format!(
        "{MARKER} 003b 01
         04          # version
         fde9        # my AS 65001
         00b4        # hold time 180
         c0000201    # BGP identifier 192.0.2.1
         1e          # optional parameters length 30
         02 1c       # parameter: capabilities, 28 octets
           01 04 0001 00 01       # multiprotocol IPv4 unicast
           01 04 0002 00 01       # multiprotocol IPv6 unicast
           02 00                  # route refresh
           41 04 0000fde9         # 4-octet AS 65001
           40 06 0078 0001 01 80  # graceful restart: 120 s; IPv4 unicast, forwarding kept"
    ));
    both_ways(&bytes, &Message::Open(frr_like_open()), &Context::default());
}

#[test]
fn open_with_one_parameter_per_capability_decodes_the_same() {
    let bytes = hex(&format!(
        "{MARKER} 0043 01 04 fde9 00b4 c0000201
         26                                 # optional parameters length 38
         02 06 01 04 0001 00 01
         02 06 01 04 0002 00 01
         02 02 02 00
         02 06 41 04 0000fde9
         02 08 40 06 0078 0001 01 80"
    ));
    assert_eq!(
        decoded(&bytes, &Context::default()),
        Message::Open(frr_like_open())
    );
}

#[test]
fn open_of_a_4_octet_as_carries_as_trans() {
    // AS 4200000001 = 0xfa56ea01; AS_TRANS 23456 = 0x5ba0.
    let open = Open::new(4_200_000_001, 90, Ipv4Addr::new(10, 0, 0, 1), vec![]);
    let bytes = hex(&format!(
        "{MARKER} 0025 01 04 5ba0 005a 0a000001 08 02 06 41 04 fa56ea01"
    ));
    both_ways(&bytes, &Message::Open(open.clone()), &Context::default());
    assert_eq!(open.asn(), 4_200_000_001);
}

#[test]
fn unknown_capability_is_kept() {
    // Capability 70 (enhanced route refresh, RFC 7313) with no value, and an
    // unassigned code 200 with a value.
    let bytes = hex(&format!(
        "{MARKER} 0024 01 04 fde9 0000 c0000201 07 02 05 46 00 c8 01 aa"
    ));
    let Message::Open(open) = decoded(&bytes, &Context::default()) else {
        panic!("not an OPEN")
    };
    assert_eq!(
        open.capabilities,
        vec![
            Capability::Unknown {
                code: 70,
                value: vec![]
            },
            Capability::Unknown {
                code: 200,
                value: vec![0xaa]
            },
        ]
    );
    assert_eq!(open.hold_time, 0);
}

#[test]
fn ipv4_update_on_a_2_octet_session() {
    let bytes = hex(&format!(
        "{MARKER} 003c 02
         0003 10 0a09                 # withdrawn: 10.9.0.0/16
         001b                         # path attributes: 27 octets
           40 01 01 00                # ORIGIN IGP
           40 02 06 02 02 fde9 fdea   # AS_PATH: sequence 65001 65002
           40 03 04 c0000201          # NEXT_HOP 192.0.2.1
           80 04 04 00000000          # MULTI_EXIT_DISC 0
         10 0a01 18 c00002            # NLRI: 10.1.0.0/16, 192.0.2.0/24"
    ));
    let update = Update {
        withdrawn: vec![net4("10.9.0.0/16")],
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(seq(&[65001, 65002])),
            PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 1)),
            PathAttribute::MultiExitDisc(0),
        ],
        nlri: vec![net4("10.1.0.0/16"), net4("192.0.2.0/24")],
    };
    both_ways(&bytes, &Message::Update(update), &Context::default());
}

#[test]
fn ipv6_update_with_link_local_next_hop_on_a_4_octet_session() {
    let bytes = hex(&format!(
        "{MARKER} 005a 02
         0000                          # no withdrawn routes
         0043                          # path attributes: 67 octets
           40 01 01 00                 # ORIGIN IGP
           40 02 06 02 01 fa56ea01     # AS_PATH: sequence 4200000001
           80 0e 2c                    # MP_REACH_NLRI, 44 octets
             0002 01                   # IPv6 unicast
             20                        # next hop length 32
             20010db8 00000000 00000000 00000001   # 2001:db8::1
             fe800000 00000000 00000000 00000001   # fe80::1
             00                        # reserved
             30 20010db80001           # 2001:db8:1::/48
           40 05 04 00000064           # LOCAL_PREF 100"
    ));
    let update = Update {
        withdrawn: vec![],
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(seq(&[4_200_000_001])),
            PathAttribute::MpReach(MpReach {
                family: Family::Ipv6Unicast,
                next_hop: NextHop::V6 {
                    global: "2001:db8::1".parse().unwrap(),
                    link_local: Some("fe80::1".parse().unwrap()),
                },
                nlri: vec!["2001:db8:1::/48".parse().unwrap()],
            }),
            PathAttribute::LocalPref(100),
        ],
        nlri: vec![],
    };
    both_ways(&bytes, &Message::Update(update), &Context::modern());
    // The same bytes on a session without IPv6: the MP attribute is ignored.
    let no_v6 = Context {
        four_octet_as: true,
        families: vec![Family::Ipv4Unicast],
        ipv4_via_ipv6: false,
    };
    let Message::Update(u) = decoded(&bytes, &no_v6) else {
        panic!()
    };
    assert!(u.mp_reach().is_none());
}

#[test]
fn extended_next_hop_capability() {
    let bytes = hex(&format!(
        "{MARKER} 0035 01 04 fde9 00b4 c0000201
         18                          # optional parameters length 24
         02 06 01 04 0001 00 01      # multiprotocol IPv4 unicast
         02 0e 05 0c                 # extended next hop, 12 octets:
                0001 0001 0002       #   IPv4 unicast via IPv6
                0001 0080 0002       #   IPv4 SAFI 128 via IPv6"
    ));
    let open = Open {
        my_as: 65001,
        hold_time: 180,
        bgp_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::ExtendedNextHop(vec![
                ExtendedNextHop::IPV4_UNICAST_VIA_IPV6,
                ExtendedNextHop {
                    afi: 1,
                    safi: 128,
                    next_hop_afi: 2,
                },
            ]),
        ],
    };
    assert_eq!(
        decoded(&bytes, &Context::default()),
        Message::Open(open.clone())
    );
    assert!(open.extended_next_hop(ExtendedNextHop::IPV4_UNICAST_VIA_IPV6));
    // Re-encoded, the two capabilities share one parameter.
    let packed = encode(&Message::Open(open.clone()), &Context::default()).unwrap();
    assert_eq!(decoded(&packed, &Context::default()), Message::Open(open));
    // Not a whole number of 6-octet entries.
    let short = hex(&format!(
        "{MARKER} 0023 01 04 fde9 00b4 c0000201 06 02 04 05 02 0001"
    ));
    assert!(matches!(
        decode(&short, &Context::default()),
        Err(DecodeError::MalformedOpen { .. })
    ));
}

fn ipv4_via_ipv6() -> Context {
    Context {
        four_octet_as: true,
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        ipv4_via_ipv6: true,
    }
}

#[test]
fn ipv4_routes_with_an_ipv6_next_hop() {
    let body = |nh: &str, nh_len: &str, attr_len: &str, total: &str| {
        let mp_len = format!("{:02x}", 3 + 1 + nh.len() / 2 + 1 + 4);
        hex(&format!(
            "{MARKER} {total} 02
             0000                    # no withdrawn routes
             {attr_len}              # path attributes length
             40 01 01 00             # ORIGIN IGP
             40 02 00                # AS_PATH empty
             80 0e {mp_len}          # MP_REACH_NLRI
               0001 01               #   AFI 1 (IPv4), SAFI 1 (unicast)
               {nh_len} {nh}         #   next hop: IPv6 (RFC 8950 §4)
               00                    #   reserved
               18 0a0001             #   10.0.1.0/24"
        ))
    };
    let global = "20010db8000000000000000000000001";
    let ll = "fe800000000000000000000000000001";
    // 16-octet next hop: MP_REACH of 3+25 octets, attributes 4+3+28 = 35, message
    // 19+4+35 = 58.
    let short = body(global, "10", "0023", "003a");
    let want = |link_local: Option<&str>| {
        Message::Update(Update {
            withdrawn: vec![],
            attributes: vec![
                PathAttribute::Origin(Origin::Igp),
                PathAttribute::AsPath(AsPath::default()),
                PathAttribute::MpReach(MpReach {
                    family: Family::Ipv4Unicast,
                    next_hop: NextHop::V6 {
                        global: "2001:db8::1".parse().unwrap(),
                        link_local: link_local.map(|l| l.parse().unwrap()),
                    },
                    nlri: vec!["10.0.1.0/24".parse().unwrap()],
                }),
            ],
            nlri: vec![],
        })
    };
    both_ways(&short, &want(None), &ipv4_via_ipv6());
    // 32 octets: global and link-local, as over IPv6 link-local sessions.
    let long = body(&format!("{global}{ll}"), "20", "0033", "004a");
    both_ways(&long, &want(Some("fe80::1")), &ipv4_via_ipv6());

    // Without the capability negotiated the same bytes are a malformed MP_REACH_NLRI
    // (RFC 7606 §7.11: the session is reset), and nothing encodes an IPv4 route with
    // an IPv6 next hop.
    let plain = Context {
        ipv4_via_ipv6: false,
        ..Context::modern()
    };
    let attr = format!("80 0e 19 0001 01 10 {global} 00 18 0a0001");
    let e = fails(&short, &plain, 3, 9, &hex(&attr));
    assert!(matches!(e, DecodeError::OptionalAttribute { .. }), "{e:?}");
    assert!(encode(&want(None), &plain).is_err());
}

#[test]
fn end_of_rib_markers() {
    let v4 = hex(&format!("{MARKER} 0017 02 0000 0000"));
    let v6 = hex(&format!("{MARKER} 001d 02 0000 0006 80 0f 03 0002 01"));
    let Message::Update(u4) = decoded(&v4, &Context::modern()) else {
        panic!()
    };
    let Message::Update(u6) = decoded(&v6, &Context::modern()) else {
        panic!()
    };
    assert_eq!(u4.end_of_rib(), Some(Family::Ipv4Unicast));
    assert_eq!(u6.end_of_rib(), Some(Family::Ipv6Unicast));
    assert_eq!(
        u6.mp_unreach(),
        Some(&MpUnreach {
            family: Family::Ipv6Unicast,
            withdrawn: vec![]
        })
    );
    assert_eq!(
        encode(&Message::Update(u6), &Context::modern()).unwrap(),
        v6
    );
}

#[test]
fn notification_and_route_refresh() {
    // Cease / Administrative Shutdown (RFC 4486), no data.
    let cease = hex(&format!("{MARKER} 0015 03 06 02"));
    both_ways(
        &cease,
        &Message::Notification(Notification::new(6, 2)),
        &Context::default(),
    );
    let rr = hex(&format!("{MARKER} 0017 05 0001 00 01"));
    both_ways(
        &rr,
        &Message::RouteRefresh(RouteRefresh {
            afi_safi: AfiSafi::IPV4_UNICAST,
            subtype: 0,
        }),
        &Context::default(),
    );
}

// ===== errors: each names the NOTIFICATION of RFC 4271 §6 =====

/// Decoding fails with a NOTIFICATION of `code`/`subcode` carrying `data`.
fn fails(bytes: &[u8], ctx: &Context, code: u8, subcode: u8, data: &[u8]) -> DecodeError {
    let err = match decode(bytes, ctx) {
        Err(e) => e,
        Ok(d) => panic!("expected an error, decoded {d:?}"),
    };
    let n = err.notification();
    assert_eq!(
        (n.code, n.subcode, n.data.as_slice()),
        (code, subcode, data),
        "{err}"
    );
    err
}

#[test]
fn header_errors() {
    let ctx = Context::default();
    let mut bad_marker = hex(&format!("{MARKER} 0013 04"));
    bad_marker[3] = 0xfe;
    fails(&bad_marker, &ctx, 1, 1, &[]);
    assert_eq!(
        frame_length(&bad_marker),
        Err(DecodeError::ConnectionNotSynchronized)
    );
    let short = hex(&format!("{MARKER} 0012 04"));
    fails(&short, &ctx, 1, 2, &[0x00, 0x12]);
    let huge = hex(&format!("{MARKER} 1001 04"));
    assert_eq!(
        frame_length(&huge),
        Err(DecodeError::BadMessageLength { length: 4097 })
    );
    fails(&msg(9, &[]), &ctx, 1, 3, &[9]);
    // A KEEPALIVE has no body.
    fails(&msg(4, &[0]), &ctx, 1, 2, &[0x00, 0x14]);
    // An UPDATE shorter than its two length fields.
    fails(&msg(2, &[0, 0, 0]), &ctx, 1, 2, &[0x00, 0x16]);
    // ROUTE-REFRESH of the wrong length (RFC 7313 §5): the data is the message.
    let rr = msg(5, &hex("0001 00 01 00"));
    fails(&rr, &ctx, 7, 1, &rr.clone());
}

#[test]
fn open_errors() {
    let ctx = Context::default();
    let open = |version: &str, hold: &str, id: &str, params: &str| {
        msg(1, &hex(&format!("{version} fde9 {hold} {id} {params}")))
    };
    fails(&open("03", "00b4", "c0000201", "00"), &ctx, 2, 1, &[0, 4]);
    fails(&open("04", "0002", "c0000201", "00"), &ctx, 2, 6, &[]);
    fails(&open("04", "0001", "c0000201", "00"), &ctx, 2, 6, &[]);
    fails(&open("04", "00b4", "00000000", "00"), &ctx, 2, 3, &[]);
    // Optional parameter 1 (authentication, deprecated by RFC 5492).
    fails(
        &open("04", "00b4", "c0000201", "03 01 01 00"),
        &ctx,
        2,
        4,
        &[],
    );
    // AS 0 (RFC 7607).
    fails(&msg(1, &hex("04 0000 00b4 c0000201 00")), &ctx, 2, 2, &[]);
    // Parameters length past the message, and a capability past its parameter.
    fails(
        &open("04", "00b4", "c0000201", "09 02 06 41 04 0000fde9"),
        &ctx,
        2,
        0,
        &[],
    );
    fails(
        &open("04", "00b4", "c0000201", "08 02 06 41 05 0000fde9"),
        &ctx,
        2,
        0,
        &[],
    );
}

/// An UPDATE announcing 10.1.0.0/16 with `attrs` (hex) as its attributes.
fn update_with(attrs: &str) -> Vec<u8> {
    let attrs = hex(attrs);
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(&attrs);
    body.extend_from_slice(&hex("10 0a01"));
    msg(2, &body)
}

const ORIGIN: &str = "40 01 01 00";
const AS_PATH: &str = "40 02 04 02 01 fde9";
const NEXT_HOP: &str = "40 03 04 c0000201";

/// Treat-as-withdraw (RFC 7606): the session survives, 10.1.0.0/16 is withdrawn, and
/// the error (for the log) is the NOTIFICATION RFC 4271 would have sent.
fn withdraws(bytes: &[u8], subcode: u8, data: &[u8]) {
    match decode(bytes, &Context::default()) {
        Ok(Decoded::TreatAsWithdraw { withdrawn, error }) => {
            assert_eq!(withdrawn, vec![IpNet::V4(net4("10.1.0.0/16"))]);
            let n = error.notification();
            assert_eq!(
                (n.code, n.subcode, n.data.as_slice()),
                (3, subcode, data),
                "{error}"
            );
        }
        other => panic!("expected treat-as-withdraw, got {other:?}"),
    }
}

#[test]
fn update_errors_that_withdraw() {
    withdraws(
        &update_with(&format!("40 01 01 03 {AS_PATH} {NEXT_HOP}")),
        6,
        &hex("40 01 01 03"),
    );
    withdraws(
        &update_with(&format!("40 01 02 0000 {AS_PATH} {NEXT_HOP}")),
        5,
        &hex("40 01 02 0000"),
    );
    // ORIGIN flagged optional.
    withdraws(
        &update_with(&format!("c0 01 01 00 {AS_PATH} {NEXT_HOP}")),
        4,
        &hex("c0 01 01 00"),
    );
    withdraws(&update_with(&format!("{ORIGIN} {AS_PATH}")), 3, &[3]);
    withdraws(&update_with(&format!("{ORIGIN} {NEXT_HOP}")), 3, &[2]);
    withdraws(
        &update_with(&format!("{ORIGIN} {AS_PATH} 40 03 04 00000000")),
        8,
        &hex("40 03 04 00000000"),
    );
    withdraws(
        &update_with(&format!("{ORIGIN} {AS_PATH} 40 03 04 e0000001")),
        8,
        &hex("40 03 04 e0000001"),
    );
    // AS_PATH segment type 5, and a segment longer than the attribute.
    withdraws(
        &update_with(&format!("{ORIGIN} 40 02 04 05 01 fde9 {NEXT_HOP}")),
        11,
        &[],
    );
    withdraws(
        &update_with(&format!("{ORIGIN} 40 02 04 02 02 fde9 {NEXT_HOP}")),
        11,
        &[],
    );
    // COMMUNITIES not a multiple of 4.
    withdraws(
        &update_with(&format!("{ORIGIN} {AS_PATH} {NEXT_HOP} c0 08 03 fde900")),
        5,
        &hex("c0 08 03 fde900"),
    );
}

#[test]
fn update_errors_that_reset_the_session() {
    let ctx = Context::default();
    // NLRI prefix length 33.
    let mut long_prefix = hex(&format!("0000 000b {ORIGIN} {NEXT_HOP}"));
    long_prefix.extend_from_slice(&hex("21 0a000001 00"));
    fails(&msg(2, &long_prefix), &ctx, 3, 10, &[]);
    // Withdrawn routes length past the message.
    fails(&msg(2, &hex("0009 10 0a01 0000")), &ctx, 3, 1, &[]);
    // An attribute longer than the attribute list.
    fails(&update_with("40 01 05 00"), &ctx, 3, 1, &[]);
    // Unknown well-known attribute 99.
    fails(
        &update_with(&format!("{ORIGIN} {AS_PATH} {NEXT_HOP} 40 63 01 aa")),
        &ctx,
        3,
        2,
        &hex("40 63 01 aa"),
    );
    // MP_REACH_NLRI twice.
    let mp = "80 0e 0c 0002 01 10 20010db8000000000000000000000001 00";
    let mp = mp.replace("0c", "15");
    fails(
        &update_with(&format!("{ORIGIN} {AS_PATH} {NEXT_HOP} {mp} {mp}")),
        &Context::modern(),
        3,
        1,
        &[],
    );
    // IPv6 next hop of 20 octets.
    let bad_nh = "80 0e 19 0002 01 14 20010db8000000000000000000000001 00000000 00";
    let e = fails(
        &update_with(&format!("{ORIGIN} {AS_PATH} {NEXT_HOP} {bad_nh}")),
        &Context::modern(),
        3,
        9,
        &hex(bad_nh),
    );
    assert!(matches!(e, DecodeError::OptionalAttribute { .. }));
}

#[test]
fn attributes_discarded_or_kept() {
    let ctx = Context::default();
    // ATOMIC_AGGREGATE with a value: only that attribute is dropped (RFC 7606 §7.6).
    let Message::Update(u) = decoded(
        &update_with(&format!("{ORIGIN} {AS_PATH} {NEXT_HOP} 40 06 01 00")),
        &ctx,
    ) else {
        panic!()
    };
    assert_eq!(u.attributes.len(), 3);
    assert_eq!(u.nlri, vec![net4("10.1.0.0/16")]);
    // A repeated ORIGIN: the first one counts (RFC 7606 §3 g).
    let Message::Update(u) = decoded(
        &update_with(&format!("{ORIGIN} 40 01 01 02 {AS_PATH} {NEXT_HOP}")),
        &ctx,
    ) else {
        panic!()
    };
    assert_eq!(u.attributes[0], PathAttribute::Origin(Origin::Igp));
    assert_eq!(u.attributes.len(), 3);
    // Unknown optional transitive: kept, marked Partial. Unknown non-transitive: dropped.
    let Message::Update(u) = decoded(
        &update_with(&format!(
            "{ORIGIN} {AS_PATH} {NEXT_HOP} c0 63 01 aa 80 64 01 bb"
        )),
        &ctx,
    ) else {
        panic!()
    };
    assert_eq!(
        u.attributes[3..],
        [PathAttribute::Unknown(RawAttribute {
            flags: 0xe0,
            code: 99,
            value: vec![0xaa]
        })]
    );
    // Extended length on a short attribute is accepted.
    let Message::Update(u) = decoded(
        &update_with(&format!("{ORIGIN} {AS_PATH} 50 03 0004 c0000201")),
        &ctx,
    ) else {
        panic!()
    };
    assert_eq!(
        u.attributes[2],
        PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 1))
    );
}

#[test]
fn as4_path_between_old_and_new_speakers() {
    // A 2-octet session: AS_PATH holds AS_TRANS, AS4_PATH the real AS.
    let bytes = update_with(&format!(
        "{ORIGIN} 40 02 04 02 01 5ba0 {NEXT_HOP} c0 11 06 02 01 fa56ea01"
    ));
    let Message::Update(u) = decoded(&bytes, &Context::default()) else {
        panic!()
    };
    assert_eq!(u.attributes[1], PathAttribute::AsPath(seq(&[23456])));
    assert_eq!(
        u.attributes[3],
        PathAttribute::As4Path(seq(&[4_200_000_001]))
    );
    // Encoding a 4-octet AS on a 2-octet session writes AS_TRANS.
    let again = encode(
        &Message::Update(Update {
            attributes: vec![PathAttribute::AsPath(seq(&[4_200_000_001]))],
            ..u
        }),
        &Context::default(),
    )
    .unwrap();
    assert!(again.windows(2).any(|w| w == [0x5b, 0xa0]));
}
