//! The prefix encoding shared by UPDATE's NLRI and withdrawn routes and by the MP
//! attributes (RFC 4271 §4.3, RFC 4760 §5): a length in bits, then as many octets as
//! that length needs.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{EncodeError, Family, Reader};

/// Every prefix in `buf`. Bits past the prefix length are ignored (and cleared), as
/// RFC 4271 §4.3 says they are irrelevant.
pub(crate) fn decode(buf: &[u8], family: Family) -> Result<Vec<IpNet>, &'static str> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while let Some(len) = r.u8() {
        let max = match family {
            Family::Ipv4Unicast => 32,
            Family::Ipv6Unicast => 128,
        };
        if len > max {
            return Err("prefix length longer than the address");
        }
        let octets = r
            .take(usize::from(len).div_ceil(8))
            .ok_or("prefix overruns its field")?;
        let mut addr = [0u8; 16];
        addr[..octets.len()].copy_from_slice(octets);
        let net = match family {
            Family::Ipv4Unicast => {
                let a = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
                Ipv4Net::new(a, len).map(|n| IpNet::V4(n.trunc()))
            }
            Family::Ipv6Unicast => {
                Ipv6Net::new(Ipv6Addr::from(addr), len).map(|n| IpNet::V6(n.trunc()))
            }
        };
        out.push(net.map_err(|_| "prefix length longer than the address")?);
    }
    Ok(out)
}

pub(crate) fn encode(
    prefixes: &[IpNet],
    family: Family,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    for p in prefixes.iter().map(IpNet::trunc) {
        let octets = match (&p, family) {
            (IpNet::V4(n), Family::Ipv4Unicast) => n.addr().octets().to_vec(),
            (IpNet::V6(n), Family::Ipv6Unicast) => n.addr().octets().to_vec(),
            _ => return Err(EncodeError::WrongFamily { prefix: p }),
        };
        let len = p.prefix_len();
        out.push(len);
        out.extend_from_slice(&octets[..usize::from(len).div_ceil(8)]);
    }
    Ok(())
}
