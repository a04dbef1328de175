//! Frames for program tests: Ethernet with an IPv4 or IPv6 header and a payload, or
//! with anything else behind it (ARP), built byte by byte as they are on the wire,
//! and the offsets where a program rewrites them.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;

/// Offsets in a frame: destination and source MAC, and behind the Ethernet header
/// the IPv4 TTL and header checksum, the IPv6 hop limit.
pub const DST_MAC: std::ops::Range<usize> = 0..6;
pub const SRC_MAC: std::ops::Range<usize> = 6..12;
pub const IPV4_TTL: usize = ETH_HLEN + 8;
pub const IPV4_CHECK: std::ops::Range<usize> = ETH_HLEN + 10..ETH_HLEN + 12;
pub const IPV4_HEADER: std::ops::Range<usize> = ETH_HLEN..ETH_HLEN + 20;
pub const IPV6_HOP_LIMIT: usize = ETH_HLEN + 7;

/// An Ethernet frame: `dst`, `src`, `ethertype`, then `payload`.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A UDP-numbered IPv4 packet of `len` bytes in all (at least the 20-byte header)
/// with a valid header checksum; the payload is a counting pattern.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, len: usize) -> Vec<u8> {
    assert!(len >= 20, "an IPv4 packet has a 20-byte header");
    let total = u16::try_from(len).expect("an IPv4 packet is at most 64 KiB");
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34, 0x40, 0]); // id, don't fragment
    p.extend_from_slice(&[ttl, 17, 0, 0]); // ttl, UDP, checksum below
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let check = !ones_complement_sum(&p);
    p[10..12].copy_from_slice(&check.to_be_bytes());
    p.extend((0..len - 20).map(|i| i as u8));
    p
}

/// A UDP-numbered IPv6 packet with `payload_len` bytes behind its 40-byte header.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, payload_len: usize) -> Vec<u8> {
    let plen = u16::try_from(payload_len).expect("no jumbograms");
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&plen.to_be_bytes());
    p.extend_from_slice(&[17, hop_limit]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend((0..payload_len).map(|i| i as u8));
    p
}

/// IPPROTO_TCP and IPPROTO_UDP.
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// A TCP (20-byte header, `tcp_flags`, no options) or UDP segment behind an IPv4 or
/// IPv6 header (TTL 64), with `payload` and valid checksums: the IP packet.
pub fn transport(
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    proto: u8,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    use std::net::IpAddr;
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    if proto == TCP {
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]); // seq, ack
        l4.extend_from_slice(&[0x50, tcp_flags, 0xff, 0xff, 0, 0, 0, 0]); // offset, window
    } else {
        let len = u16::try_from(8 + payload.len()).expect("a small datagram");
        l4.extend_from_slice(&len.to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend_from_slice(payload);
    let mut ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = ipv4(s, d, 64, 20);
            p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            p[9] = proto;
            p[10..12].copy_from_slice(&[0, 0]);
            let check = !ones_complement_sum(&p);
            p[10..12].copy_from_slice(&check.to_be_bytes());
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = ipv6(s, d, 64, 0);
            p[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
            p[6] = proto;
            p
        }
        _ => panic!("one family"),
    };
    let check_at = if proto == TCP { 16 } else { 6 };
    let sum = !fold(pseudo_sum(&ip, proto, l4.len()) + u32::from(ones_complement_sum(&l4)));
    let sum = if sum == 0 && proto == UDP {
        0xffff
    } else {
        sum
    };
    l4[check_at..check_at + 2].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&l4);
    ip
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The pseudo header's sum of an IP packet whose header is `ip`'s first bytes.
fn pseudo_sum(ip: &[u8], proto: u8, l4_len: usize) -> u32 {
    let addrs = if ip[0] >> 4 == 4 {
        &ip[12..20]
    } else {
        &ip[8..40]
    };
    u32::from(ones_complement_sum(addrs)) + u32::from(proto) + l4_len as u32
}

/// Whether the TCP or UDP checksum of an IP packet (IPv4 without options or IPv6
/// without extension headers) is right.
pub fn transport_checksum_ok(ip: &[u8]) -> bool {
    let (proto, hlen) = if ip[0] >> 4 == 4 {
        (ip[9], 20)
    } else {
        (ip[6], 40)
    };
    let l4 = &ip[hlen..];
    fold(pseudo_sum(ip, proto, l4.len()) + u32::from(ones_complement_sum(l4))) == 0xffff
}

/// The 16-bit one's complement sum of `bytes` (RFC 1071), folded.
pub fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Whether an IPv4 header's checksum is right: the header sums to all ones.
pub fn ipv4_checksum_ok(header: &[u8]) -> bool {
    ones_complement_sum(header) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_headers_carry_a_valid_checksum() {
        let p = ipv4(
            "10.1.0.2".parse().unwrap(),
            "10.1.0.7".parse().unwrap(),
            64,
            84,
        );
        assert_eq!(p.len(), 84);
        assert!(ipv4_checksum_ok(&p[..20]));
        let mut bad = p.clone();
        bad[8] -= 1; // TTL without the checksum update
        assert!(!ipv4_checksum_ok(&bad[..20]));
        // A header from the wire (RFC 1071's example sums are the same arithmetic).
        let wire = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert!(ipv4_checksum_ok(&wire));
    }

    #[test]
    fn transport_segments_carry_valid_checksums() {
        for (src, dst) in [("10.0.0.101", "10.0.0.1"), ("fd00::101", "fd00::1")] {
            for proto in [TCP, UDP] {
                let p = transport(
                    src.parse().unwrap(),
                    dst.parse().unwrap(),
                    proto,
                    40000,
                    30080,
                    0x02,
                    b"hello",
                );
                assert!(transport_checksum_ok(&p), "{src} {proto}");
                let mut bad = p.clone();
                *bad.last_mut().unwrap() ^= 1;
                assert!(!transport_checksum_ok(&bad), "{src} {proto}");
                if src.contains('.') {
                    assert!(ipv4_checksum_ok(&p[..20]));
                }
            }
        }
    }

    #[test]
    fn frames_put_the_fields_at_the_offsets_checked() {
        let ip = ipv6("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap(), 9, 8);
        let f = ethernet([1; 6], [2; 6], ETH_P_IPV6, &ip);
        assert_eq!(f[DST_MAC], [1; 6]);
        assert_eq!(f[SRC_MAC], [2; 6]);
        assert_eq!(f[12..14], [0x86, 0xdd]);
        assert_eq!(f[IPV6_HOP_LIMIT], 9);
        assert_eq!(f.len(), ETH_HLEN + 40 + 8);
        let ip = ipv4(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            5,
            20,
        );
        let f = ethernet([1; 6], [2; 6], ETH_P_IP, &ip);
        assert_eq!(f[IPV4_TTL], 5);
        assert!(ipv4_checksum_ok(&f[IPV4_HEADER]));
    }
}
