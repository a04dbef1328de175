//! Tunnel-mode inner packets: the few facts about an IPv4 or IPv6 packet the datapath
//! needs (its version and addresses) read without trusting its length fields beyond
//! the buffer, and the ESP next header that names it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::sa::{NEXT_HEADER_IPV4, NEXT_HEADER_IPV6};

/// The addresses of an inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inner {
    pub src: IpAddr,
    pub dst: IpAddr,
}

impl Inner {
    /// Parse the IP header at the start of `p`; `None` unless it is a whole IPv4 or
    /// IPv6 header.
    pub fn parse(p: &[u8]) -> Option<Self> {
        match p.first()? >> 4 {
            4 if p.len() >= 20 && usize::from(p[0] & 0x0f) * 4 >= 20 => Some(Self {
                src: IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&p[12..16]).ok()?)),
                dst: IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&p[16..20]).ok()?)),
            }),
            6 if p.len() >= 40 => Some(Self {
                src: IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?)),
                dst: IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).ok()?)),
            }),
            _ => None,
        }
    }

    /// The ESP next header for this packet in tunnel mode.
    pub fn next_header(&self) -> u8 {
        match self.src {
            IpAddr::V4(_) => NEXT_HEADER_IPV4,
            IpAddr::V6(_) => NEXT_HEADER_IPV6,
        }
    }
}

/// Whether a decrypted packet's version agrees with the next header it arrived with.
pub fn matches_next_header(p: &[u8], next_header: u8) -> bool {
    matches!(
        (p.first().map(|b| b >> 4), next_header),
        (Some(4), NEXT_HEADER_IPV4) | (Some(6), NEXT_HEADER_IPV6)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v4_and_v6_and_refuses_short_headers() {
        let mut v4 = vec![
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 1, 0, 0, 10, 1, 0, 1, 10, 2, 0, 1,
        ];
        let i = Inner::parse(&v4).unwrap();
        assert_eq!(i.dst, "10.2.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(i.next_header(), 4);
        v4[0] = 0x44;
        assert_eq!(Inner::parse(&v4), None, "IHL below 5");
        assert_eq!(Inner::parse(&v4[..19]), None);
        let mut v6 = vec![0x60; 40];
        v6[24..40].copy_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        let i = Inner::parse(&v6).unwrap();
        assert_eq!(i.dst, "fd00::2".parse::<IpAddr>().unwrap());
        assert_eq!(i.next_header(), 41);
        assert_eq!(Inner::parse(&v6[..39]), None);
        assert_eq!(Inner::parse(&[]), None);
        assert!(matches_next_header(&v6, 41) && !matches_next_header(&v6, 4));
    }
}
