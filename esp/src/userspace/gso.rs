//! The kernel's offloads on the TUN device, done here: a packet read with a
//! `virtio_net_hdr` in front may be a GSO super-packet (TCP over IPv4/IPv6, or UDP
//! with USO) that this module cuts into wire-sized segments with their IP and L4
//! headers fixed up, or a single packet whose L4 checksum is left for the "device"
//! to complete (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).
//!
//! Everything here is pure and works on byte slices, so it is tested without a TUN.

/// Size of the legacy `virtio_net_hdr` the TUN device prepends (TUNSETVNETHDRSZ
/// default).
pub const VNET_HDR_LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

/// The parsed `virtio_net_hdr` (fields in the host's byte order, little endian on
/// every machine strait runs on; TUN uses native order for the legacy header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<Self> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    pub fn write(&self, b: &mut [u8]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }
}

/// Why a packet from the TUN could not be turned into segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    #[error("packet shorter than its headers")]
    Truncated,
    #[error("unsupported GSO type {0}")]
    Unsupported(u8),
    #[error("checksum offsets outside the packet")]
    BadChecksumOffsets,
}

/// Cut `packet` (what followed the vnet header) into segments, calling `emit` with
/// each finished one in two parts, headers and payload (the segment is their
/// concatenation; the payload is borrowed from `packet`, never copied here, so the
/// sealer's copy is the only one). `scratch` is reused for the headers.
pub fn segments(
    hdr: &VnetHdr,
    packet: &mut [u8],
    scratch: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8], &[u8]),
) -> Result<(), GsoError> {
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {
            if hdr.flags & F_NEEDS_CSUM != 0 {
                complete_checksum(packet, hdr.csum_start.into(), hdr.csum_offset.into())?;
            }
            emit(packet, &[]);
            Ok(())
        }
        t @ (GSO_TCPV4 | GSO_TCPV6 | GSO_UDP_L4) => split(t, hdr, packet, scratch, &mut emit),
        other => Err(GsoError::Unsupported(other)),
    }
}

/// Finish a partial checksum: the field holds the pseudo-header sum; the sum from
/// `start` to the end, complemented, goes into `start + offset`.
pub fn complete_checksum(p: &mut [u8], start: usize, offset: usize) -> Result<(), GsoError> {
    let field = start + offset;
    if field + 2 > p.len() {
        return Err(GsoError::BadChecksumOffsets);
    }
    let sum = fold(sum_bytes(0, &p[start..]));
    p[field..field + 2].copy_from_slice(&(!sum).to_be_bytes());
    Ok(())
}

fn split(
    kind: u8,
    hdr: &VnetHdr,
    packet: &[u8],
    out: &mut Vec<u8>,
    emit: &mut impl FnMut(&[u8], &[u8]),
) -> Result<(), GsoError> {
    let version = packet.first().ok_or(GsoError::Truncated)? >> 4;
    let l4 = usize::from(hdr.csum_start);
    let min_ip = if version == 4 { 20 } else { 40 };
    if l4 < min_ip || packet.len() < l4 + 8 {
        return Err(GsoError::Truncated);
    }
    let l4_len = if kind == GSO_UDP_L4 {
        8
    } else {
        if packet.len() < l4 + 20 {
            return Err(GsoError::Truncated);
        }
        usize::from(packet[l4 + 12] >> 4) * 4
    };
    let headers = l4 + l4_len;
    if l4_len < 8 || packet.len() < headers {
        return Err(GsoError::Truncated);
    }
    let mss = usize::from(hdr.gso_size).max(1);
    let payload = &packet[headers..];
    let count = payload.len().div_ceil(mss).max(1);
    let seq0 = if kind == GSO_UDP_L4 {
        0
    } else {
        u32::from_be_bytes(packet[l4 + 4..l4 + 8].try_into().expect("4 octets"))
    };
    for i in 0..count {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let last = i + 1 == count;
        out.clear();
        out.extend_from_slice(&packet[..headers]);
        let seg = &mut out[..];
        let total = headers + chunk.len();
        if version == 4 {
            seg[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            let id = u16::from_be_bytes([seg[4], seg[5]]).wrapping_add(i as u16);
            seg[4..6].copy_from_slice(&id.to_be_bytes());
            seg[10..12].copy_from_slice(&[0, 0]);
            let ihl = usize::from(seg[0] & 0x0f) * 4;
            let c = !fold(sum_bytes(0, &seg[..ihl.min(l4)]));
            seg[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            seg[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        }
        let l4_total = total - l4;
        let csum_field = if kind == GSO_UDP_L4 {
            seg[l4 + 4..l4 + 6].copy_from_slice(&(l4_total as u16).to_be_bytes());
            l4 + 6
        } else {
            let seq = seq0.wrapping_add((i * mss) as u32);
            seg[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            let flags = &mut seg[l4 + 13];
            const FIN: u8 = 0x01;
            const PSH: u8 = 0x08;
            const CWR: u8 = 0x80;
            if !last {
                *flags &= !(FIN | PSH);
            }
            if i > 0 {
                *flags &= !CWR;
            }
            l4 + 16
        };
        seg[csum_field..csum_field + 2].copy_from_slice(&[0, 0]);
        let proto = if kind == GSO_UDP_L4 { 17 } else { 6 };
        let mut sum = pseudo_header(seg, version, proto, l4_total);
        // The headers are an even number of octets: the payload's words line up.
        sum = sum_bytes(sum, &seg[l4..]);
        sum = sum_bytes(sum, chunk);
        let mut c = !fold(sum);
        if kind == GSO_UDP_L4 && c == 0 {
            c = 0xffff;
        }
        seg[csum_field..csum_field + 2].copy_from_slice(&c.to_be_bytes());
        emit(seg, chunk);
    }
    Ok(())
}

fn pseudo_header(p: &[u8], version: u8, proto: u8, l4_len: usize) -> u64 {
    let addrs = if version == 4 { &p[12..20] } else { &p[8..40] };
    let mut sum = sum_bytes(0, addrs);
    sum += u64::from(proto);
    sum += l4_len as u64;
    sum
}

/// One's-complement sum of big-endian 16-bit words, accumulated wide and folded
/// later. The checksum of every segment of a 64 KiB super-packet is on the hot path,
/// so the bulk is summed as native-order 32-bit words (which the compiler
/// vectorises): a one's-complement sum does not depend on byte order (RFC 1071
/// §2(B)), so the folded native sum, read back in network order, is the same sum.
pub fn sum_bytes(sum: u64, b: &[u8]) -> u64 {
    let mut native = 0u64;
    let mut words = b.chunks_exact(4);
    for w in &mut words {
        native += u64::from(u32::from_ne_bytes(w.try_into().expect("4 octets")));
    }
    let mut sum = sum + u64::from(u16::from_be_bytes(fold(native).to_ne_bytes()));
    // The rest starts at an even offset: big-endian pairs, then a lone octet.
    let rest = words.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        sum += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Fold a wide sum into 16 bits.
pub fn fold(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_tcp(payload_len: usize, flags: u8) -> Vec<u8> {
        let total = 20 + 20 + payload_len;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&100u16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 1, 0, 1]);
        p[16..20].copy_from_slice(&[10, 2, 0, 1]);
        p[20..22].copy_from_slice(&1234u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[24..28].copy_from_slice(&1000u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = flags;
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = i as u8;
        }
        p
    }

    /// A valid checksum sums (with the pseudo header) to 0xffff.
    fn tcp_ok(seg: &[u8]) -> bool {
        let l4 = usize::from(seg[0] & 0xf) * 4;
        let sum = pseudo_header(seg, 4, 6, seg.len() - l4);
        fold(sum_bytes(sum, &seg[l4..])) == 0xffff
    }

    fn ip_ok(seg: &[u8]) -> bool {
        fold(sum_bytes(0, &seg[..20])) == 0xffff
    }

    #[test]
    fn tcp_v4_super_packet_is_cut_with_headers_fixed() {
        let mut p = ipv4_tcp(3000, 0x18 | 0x01); // PSH ACK FIN
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 40,
            gso_size: 1400,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut segs = Vec::new();
        segments(&hdr, &mut p, &mut Vec::new(), |h, d| {
            segs.push([h, d].concat())
        })
        .unwrap();
        assert_eq!(segs.len(), 3);
        let mut data = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), s.len());
            assert_eq!(u16::from_be_bytes([s[4], s[5]]), 100 + i as u16);
            assert_eq!(
                u32::from_be_bytes(s[24..28].try_into().unwrap()),
                1000 + 1400 * i as u32
            );
            assert!(ip_ok(s), "IP checksum of segment {i}");
            assert!(tcp_ok(s), "TCP checksum of segment {i}");
            let last = i == 2;
            assert_eq!(s[33] & 0x09 != 0, last, "PSH/FIN only on the last");
            data.extend_from_slice(&s[40..]);
        }
        assert_eq!(segs[2].len(), 40 + 200);
        assert_eq!(data, ipv4_tcp(3000, 0)[40..]);
    }

    #[test]
    fn needs_csum_is_completed_on_a_single_packet() {
        let mut p = ipv4_tcp(33, 0x10);
        // The kernel leaves the pseudo-header sum in the field.
        let seed = fold(pseudo_header(&p, 4, 6, 53));
        p[36..38].copy_from_slice(&seed.to_be_bytes());
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..Default::default()
        };
        let mut out = Vec::new();
        segments(&hdr, &mut p, &mut Vec::new(), |h, d| {
            out.push([h, d].concat())
        })
        .unwrap();
        assert_eq!(out.len(), 1);
        assert!(tcp_ok(&out[0]));
    }

    #[test]
    fn bad_offsets_and_types_are_errors_not_panics() {
        let mut p = ipv4_tcp(10, 0);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 60,
            csum_offset: 16,
            ..Default::default()
        };
        assert_eq!(
            segments(&hdr, &mut p, &mut Vec::new(), |_, _| {}),
            Err(GsoError::BadChecksumOffsets)
        );
        let hdr = VnetHdr {
            gso_type: 3,
            ..Default::default()
        };
        assert_eq!(
            segments(&hdr, &mut p, &mut Vec::new(), |_, _| {}),
            Err(GsoError::Unsupported(3))
        );
        let hdr = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 10,
            csum_start: 200,
            ..Default::default()
        };
        assert_eq!(
            segments(&hdr, &mut p, &mut Vec::new(), |_, _| {}),
            Err(GsoError::Truncated)
        );
    }

    /// The sum as RFC 1071 defines it, word by word.
    fn reference_sum(b: &[u8]) -> u16 {
        let mut sum = 0u64;
        for p in b.chunks(2) {
            sum += u64::from(u16::from_be_bytes([p[0], *p.get(1).unwrap_or(&0)]));
        }
        fold(sum)
    }

    #[test]
    fn the_fast_sum_equals_the_word_by_word_sum() {
        let data: Vec<u8> = (0..3000u32)
            .map(|i| (i * 7919 % 251) as u8 ^ 0xa5)
            .collect();
        for len in (0..40).chain([1399, 1400, 1401, 1402, 1403, 2999, 3000]) {
            for start in [0, 1, 2, 3] {
                let b = &data[start..start + len.min(data.len() - start)];
                assert_eq!(
                    fold(sum_bytes(0, b)),
                    reference_sum(b),
                    "len {len} at {start}"
                );
                assert_eq!(
                    fold(sum_bytes(0x1_2345, b)),
                    fold(u64::from(reference_sum(b)) + 0x1_2345),
                    "with a carried-in sum"
                );
            }
        }
        assert_eq!(fold(sum_bytes(0, &[0xff; 4096])), 0xffff);
    }

    #[test]
    fn vnet_header_round_trips() {
        let h = VnetHdr {
            flags: 1,
            gso_type: 4,
            hdr_len: 74,
            gso_size: 1428,
            csum_start: 54,
            csum_offset: 16,
        };
        let mut b = [0u8; VNET_HDR_LEN];
        h.write(&mut b);
        assert_eq!(VnetHdr::parse(&b), Some(h));
        assert_eq!(VnetHdr::parse(&b[..9]), None);
    }
}
