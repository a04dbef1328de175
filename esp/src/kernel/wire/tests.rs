//! The encoders against the bytes iproute2 sends for the same command (captured with
//! `strace -e trace=sendmsg -xx ip xfrm …`, the 16-octet netlink header cut off), and
//! the decoders against the encoders and the UAPI offsets.

use super::*;
use crate::key::Cipher;

fn key20(bytes: &[u8]) -> SaKey {
    SaKey::new(Cipher::Aes128Gcm16, bytes).unwrap()
}

const KEY: [u8; 20] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn new_sa_esn_with_udp_encap_matches_iproute2() {
    // ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0xa0000001
    //   reqid 0x53540001 mode tunnel flag esn flag af-unspec replay-window 2048
    //   aead 'rfc4106(gcm(aes))' 0x0102…14 128 encap espinudp 4500 4501 0.0.0.0
    let want = "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000c0000202000000000000000000000000a000000132000000c0000201000000000000000000000000ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000100545302000100a00000000000000060001200726663343130362867636d2861657329290000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000a0000000800000000102030405060708090a0b0c0d0e0f10111213141c0004000200119411950000000000000000000000000000000000001c001700400000000000000000000000000000000000000000080000";
    let key = key20(&KEY);
    let got = new_sa(&StateSpec {
        src: ip("192.0.2.1"),
        dst: ip("192.0.2.2"),
        spi: 0xa000_0001,
        reqid: 0x5354_0001,
        key: &key,
        esn: true,
        replay_window: 2048,
        encap: Some((4500, 4501)),
        mark: None,
    });
    assert_eq!(got.len(), 376);
    assert_eq!(hex_str(&got), want);
}

fn hex_str(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn new_sa_ipv6_without_esn_or_encap_matches_iproute2() {
    // ip xfrm state add src 2001:db8::1 dst 2001:db8::2 proto esp spi 0xa0000002
    //   reqid 0x53540002 mode tunnel flag af-unspec replay-window 1024
    //   aead 'rfc4106(gcm(aes))' 0x0102…14 128
    let want = "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000020010db8000000000000000000000002a00000023200000020010db8000000000000000000000001ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000020054530a000100200000000000000060001200726663343130362867636d2861657329290000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000a0000000800000000102030405060708090a0b0c0d0e0f10111213141c001700200000000000000000000000000000000000000000040000";
    let key = key20(&KEY);
    let got = new_sa(&StateSpec {
        src: ip("2001:db8::1"),
        dst: ip("2001:db8::2"),
        spi: 0xa000_0002,
        reqid: 0x5354_0002,
        key: &key,
        esn: false,
        replay_window: 1024,
        encap: None,
        mark: None,
    });
    assert_eq!(hex_str(&got), want);
}

#[test]
fn marked_probe_state_and_its_deletion_match_iproute2() {
    // ip xfrm state add src 127.0.0.1 dst 127.0.0.2 proto esp spi 0x100
    //   reqid 0x53540000 mode tunnel flag esn flag af-unspec replay-window 32
    //   aead 'rfc4106(gcm(aes))' 0x00…00 128 encap espinudp 4500 4500 0.0.0.0
    //   mark 0x53540000 mask 0xffffffff
    let want = "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000007f00000200000000000000000000000000000100320000007f000001000000000000000000000000ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000545302000100a00000000000000060001200726663343130362867636d2861657329290000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000a00000008000000000000000000000000000000000000000000000001c0004000200119411940000000000000000000000000000000000001c0017000100000000000000000000000000000000000000200000000c00150000005453ffffffff";
    let key = key20(&[0; 20]);
    let spec = StateSpec {
        src: ip("127.0.0.1"),
        dst: ip("127.0.0.2"),
        spi: 0x100,
        reqid: 0x5354_0000,
        key: &key,
        esn: true,
        replay_window: 32,
        encap: Some((4500, 4500)),
        mark: Some((0x5354_0000, u32::MAX)),
    };
    assert_eq!(hex_str(&new_sa(&spec)), want);
    // ip xfrm state delete src 127.0.0.1 dst 127.0.0.2 proto esp spi 0x100
    //   mark 0x53540000 mask 0xffffffff
    let want = "7f000002000000000000000000000000000001000200320014000d007f0000010000000000000000000000000c00150000005453ffffffff";
    let got = sa_id(
        ip("127.0.0.2"),
        0x100,
        ip("127.0.0.1"),
        Some((0x5354_0000, u32::MAX)),
    );
    assert_eq!(hex_str(&got), want);
}

#[test]
fn sa_id_matches_iproute2_delete_and_get() {
    // ip xfrm state delete|get src 192.0.2.1 dst 192.0.2.2 proto esp spi 0xa0000001
    let want =
        "c0000202000000000000000000000000a00000010200320014000d00c0000201000000000000000000000000";
    let got = sa_id(ip("192.0.2.2"), 0xa000_0001, ip("192.0.2.1"), None);
    assert_eq!(hex_str(&got), want);
}

#[test]
fn policies_match_iproute2() {
    // ip xfrm policy update src 0.0.0.0/0 dst 10.2.0.0/24 dir out priority 8296
    //   tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 0x53540001 mode tunnel
    let out = "0a02000000000000000000000000000000000000000000000000000000000000000000000000000002001800000000000000000000000000ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000006820000000000000010000000000000044000500c0000202000000000000000000000000000000003200000002000000c00002010000000000000000000000000100545301000000ffffffffffffffffffffffff";
    let got = upd_policy(&PolicySpec {
        src: net("0.0.0.0/0"),
        dst: net("10.2.0.0/24"),
        dir: PolicyDir::Out,
        priority: 8296,
        tmpl: Tmpl {
            src: ip("192.0.2.1"),
            dst: ip("192.0.2.2"),
            reqid: 0x5354_0001,
        },
    });
    assert_eq!(hex_str(&got), out);
    // ip xfrm policy update src 10.2.0.0/24 dst 0.0.0.0/0 dir fwd priority 8296
    //   tmpl src 192.0.2.2 dst 192.0.2.1 proto esp reqid 0x53540001 mode tunnel
    let fwd = "000000000000000000000000000000000a020000000000000000000000000000000000000000000002000018000000000000000000000000ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000006820000000000000020000000000000044000500c0000201000000000000000000000000000000003200000002000000c00002020000000000000000000000000100545301000000ffffffffffffffffffffffff";
    let got = upd_policy(&PolicySpec {
        src: net("10.2.0.0/24"),
        dst: net("0.0.0.0/0"),
        dir: PolicyDir::Fwd,
        priority: 8296,
        tmpl: Tmpl {
            src: ip("192.0.2.2"),
            dst: ip("192.0.2.1"),
            reqid: 0x5354_0001,
        },
    });
    assert_eq!(hex_str(&got), fwd);
    // ip xfrm policy delete dir in index 0x1238
    let del = "00000000000000000000000000000000000000000000000000000000000000000000000000000000020000000000000000000000000000003812000000000000";
    assert_eq!(
        hex_str(&policy_id(libc::AF_INET as u16, 0x1238, PolicyDir::In)),
        del
    );
}

#[test]
fn struct_sizes_are_the_kernels() {
    let key = key20(&KEY);
    assert_eq!(algo_aead(&key).len(), ALGO_AEAD_LEN + 20);
    assert_eq!(encap_tmpl(1, 2).len(), ENCAP_TMPL_LEN);
    assert_eq!(replay_esn(1024).len(), REPLAY_ESN_LEN);
    assert_eq!(mark(1, 2).len(), 8);
    let t = Tmpl {
        src: ip("::1"),
        dst: ip("::2"),
        reqid: 9,
    };
    assert_eq!(user_tmpl(&t).len(), USER_TMPL_LEN);
    assert_eq!(
        socket_bypass(libc::AF_INET6 as u16, PolicyDir::Out).len(),
        USERPOLICY_INFO_LEN
    );
    assert_eq!(policy_id(2, 1, PolicyDir::In).len(), USERPOLICY_ID_LEN);
    // bmp_len rounds the window up to whole 32-bit words.
    assert_eq!(&replay_esn(33)[..4], &2u32.to_ne_bytes());
    // A 256-bit key: key length 288 bits (key and salt), ICV 128 bits.
    let k256 = SaKey::new(Cipher::Aes256Gcm16, &[7; 36]).unwrap();
    let a = algo_aead(&k256);
    assert_eq!(
        &a[64..72],
        &[288u32.to_ne_bytes(), 128u32.to_ne_bytes()].concat()[..]
    );
    assert_eq!(&a[72..], &[7; 36]);
}

#[test]
fn socket_bypass_allows_one_direction_of_one_family() {
    let b = socket_bypass(libc::AF_INET6 as u16, PolicyDir::Out);
    assert_eq!(rd_u16(&b, 40), libc::AF_INET6 as u16);
    assert!(b[..40].iter().all(|&x| x == 0), "any address");
    assert_eq!(b[160], PolicyDir::Out as u8);
    assert_eq!(b[161], XFRM_POLICY_ALLOW);
    assert!(b[56..88].iter().all(|&x| x == 0xff), "no byte/packet limit");
}

#[test]
fn state_decoder_reads_what_the_encoder_wrote_and_the_counters() {
    let key = key20(&KEY);
    let mut b = new_sa(&StateSpec {
        src: ip("2001:db8::1"),
        dst: ip("2001:db8::2"),
        spi: 0xdead_beef,
        reqid: 0x5354_0007,
        key: &key,
        esn: true,
        replay_window: 2048,
        encap: Some((4500, 4500)),
        mark: Some((0x10, 0xff)),
    });
    // The kernel's answer has counters where the request has zeros: curlft.bytes
    // and .packets at 160 and 168, stats.replay and .integrity_failed at 196 and 200,
    // and the ESN replay state (oseq, seq, oseq_hi, seq_hi at 4, 8, 12, 16).
    b[160..168].copy_from_slice(&123_456u64.to_ne_bytes());
    b[168..176].copy_from_slice(&789u64.to_ne_bytes());
    b[196..200].copy_from_slice(&3u32.to_ne_bytes());
    b[200..204].copy_from_slice(&4u32.to_ne_bytes());
    let esn_at = attrs(&b[USERSA_INFO_LEN..])
        .find(|(k, _)| *k == XFRMA_REPLAY_ESN_VAL)
        .map(|(_, p)| p.as_ptr() as usize - b.as_ptr() as usize)
        .unwrap();
    b[esn_at + 4..esn_at + 8].copy_from_slice(&5u32.to_ne_bytes());
    b[esn_at + 8..esn_at + 12].copy_from_slice(&6u32.to_ne_bytes());
    b[esn_at + 12..esn_at + 16].copy_from_slice(&1u32.to_ne_bytes());
    b[esn_at + 16..esn_at + 20].copy_from_slice(&2u32.to_ne_bytes());
    let s = parse_state(&b).unwrap();
    assert_eq!(
        s,
        StateInfo {
            src: ip("2001:db8::1"),
            dst: ip("2001:db8::2"),
            spi: 0xdead_beef,
            proto: IPPROTO_ESP,
            reqid: 0x5354_0007,
            esn: true,
            bytes: 123_456,
            packets: 789,
            replay_failures: 3,
            icv_failures: 4,
            oseq: (1 << 32) | 5,
            seq: (2 << 32) | 6,
            replay_window: 2048,
            mark: Some((0x10, 0xff)),
        }
    );
    assert_eq!(parse_state(&b[..USERSA_INFO_LEN - 1]), None);
}

#[test]
fn policy_decoder_reads_what_the_encoder_wrote() {
    let spec = PolicySpec {
        src: net("fd00:1::/64"),
        dst: net("::/0"),
        dir: PolicyDir::In,
        priority: 0x2040,
        tmpl: Tmpl {
            src: ip("192.0.2.2"),
            dst: ip("192.0.2.1"),
            reqid: 0x5354_0003,
        },
    };
    let mut b = upd_policy(&spec);
    b[156..160].copy_from_slice(&77u32.to_ne_bytes()); // the index the kernel gave it
    let p = parse_policy(&b).unwrap();
    assert_eq!(
        p,
        PolicyInfo {
            family: libc::AF_INET6 as u16,
            src: Some(net("fd00:1::/64")),
            dst: Some(net("::/0")),
            dir: 0,
            index: 77,
            priority: 0x2040,
            reqids: vec![0x5354_0003],
        }
    );
}

#[test]
fn attribute_walk_stops_at_malformed_lengths() {
    let mut b = Vec::new();
    attr(&mut b, 7, &[1, 2, 3]); // padded to 8
    attr(&mut b, 9, &[]);
    let got: Vec<_> = attrs(&b).collect();
    assert_eq!(got, vec![(7, &[1u8, 2, 3][..]), (9, &[][..])]);
    // A length beyond the buffer, and one below the header: nothing more is read.
    let bad = [0xff, 0x00, 0x01, 0x00, 0, 0, 0, 0];
    assert_eq!(attrs(&bad).count(), 0);
    let bad = [0x02, 0x00, 0x01, 0x00];
    assert_eq!(attrs(&bad).count(), 0);
}
