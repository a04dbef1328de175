//! Receive-side coalescing (GRO done here): consecutive decrypted TCP segments of one
//! flow are joined into one super-packet that goes to the TUN with a
//! `virtio_net_hdr` saying TCPv4/TCPv6 GSO, so the kernel's TCP stack takes one
//! 64 KiB packet per `write` instead of ~45 MTU-sized ones (the write and the stack's
//! per-packet work were most of the receiving worker's time).
//!
//! A segment joins the pending super-packet when it continues it exactly: same
//! addresses, ports, IP header (but length, id and checksum), same ACK number, window
//! and options, its sequence number where the last one ended, payload no longer than
//! the first's, and only ACK (and PSH) set. A shorter segment or a PSH ends the run.
//! Anything else (other protocols, flags, IP options or fragments, out of order) is
//! not taken: the caller flushes what is pending and writes it unchanged, so order
//! is kept.
//!
//! The super-packet's TCP checksum is left to the "device" (`F_NEEDS_CSUM`, the field
//! holding the pseudo-header sum, as the kernel's own TSO does); a run of one segment
//! is written exactly as it arrived. Pure byte work, tested without a TUN.

use super::gso::{VNET_HDR_LEN, VnetHdr, fold, sum_bytes};

const F_NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// The IP length field bounds a super-packet; stay a little under it.
const MAX_BYTES: usize = 65_000;

/// Where a coalescable TCP segment's parts are.
#[derive(Debug, Clone, Copy)]
struct Segment {
    v6: bool,
    /// Length of the IP header (20 or 40) and of both headers.
    ip_len: usize,
    headers: usize,
    seq: u32,
    payload: usize,
    psh: bool,
}

/// Parse `p` as a segment that may be coalesced: TCP over IPv4 without options or
/// fragmentation, or over IPv6 without extension headers; only ACK and PSH set;
/// carrying data. `None` for anything else.
fn segment(p: &[u8]) -> Option<Segment> {
    let (v6, ip_len, total) = match p.first()? >> 4 {
        4 => {
            let frag = u16::from_be_bytes([*p.get(6)?, *p.get(7)?]);
            // IHL 5, protocol TCP, not a fragment (MF clear, offset 0).
            if p[0] != 0x45 || p.get(9) != Some(&6) || frag & 0x3fff != 0 {
                return None;
            }
            (false, 20, usize::from(u16::from_be_bytes([p[2], p[3]])))
        }
        6 => {
            if p.get(6) != Some(&6) || p.len() < 40 {
                return None;
            }
            (true, 40, 40 + usize::from(u16::from_be_bytes([p[4], p[5]])))
        }
        _ => return None,
    };
    if total != p.len() || p.len() < ip_len + 20 {
        return None;
    }
    let tcp = &p[ip_len..];
    let tcp_len = usize::from(tcp[12] >> 4) * 4;
    let headers = ip_len + tcp_len;
    if tcp_len < 20 || p.len() <= headers || tcp[13] & !TCP_PSH != TCP_ACK {
        return None;
    }
    Some(Segment {
        v6,
        ip_len,
        headers,
        seq: u32::from_be_bytes(tcp[4..8].try_into().expect("4 octets")),
        payload: p.len() - headers,
        psh: tcp[13] & TCP_PSH != 0,
    })
}

/// Whether the headers of `a` and `b` (both parsed as `s`-shaped) belong to one run:
/// equal but for the IP length, id and checksum, the TCP sequence number, flags
/// (PSH) and checksum.
fn same_flow(s: &Segment, a: &[u8], b: &[u8]) -> bool {
    let ip_same = if s.v6 {
        // Version/class/flow label, next header, hop limit, addresses.
        a[..4] == b[..4] && a[6..40] == b[6..40]
    } else {
        // Version/IHL/TOS, flags/fragment, TTL, protocol, addresses.
        a[..2] == b[..2] && a[6..10] == b[6..10] && a[12..20] == b[12..20]
    };
    let (ta, tb) = (&a[s.ip_len..s.headers], &b[s.ip_len..s.headers]);
    // Ports; ACK number, data offset; window; options.
    ip_same
        && ta[..4] == tb[..4]
        && ta[8..13] == tb[8..13]
        && ta[14..16] == tb[14..16]
        && ta[20..] == tb[20..]
}

/// The pending super-packet of one receiving worker.
pub struct Coalescer {
    /// Vnet header room, then the first segment's headers, then every payload.
    buf: Vec<u8>,
    first: Option<Segment>,
    segments: usize,
    next_seq: u32,
    /// A short segment or PSH ended the run: nothing may follow.
    closed: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new()
    }
}

impl Coalescer {
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(VNET_HDR_LEN + MAX_BYTES + 2048),
            first: None,
            segments: 0,
            next_seq: 0,
            closed: false,
        }
    }

    /// Offer one decrypted inner packet. `true`: taken (copied into the pending
    /// super-packet, which `write` may have received first if `packet` could not
    /// join it). `false`: not coalescable; what was pending has been written, and
    /// the caller writes `packet` itself.
    pub fn push(&mut self, packet: &[u8], write: &mut impl FnMut(&[u8])) -> bool {
        let Some(s) = segment(packet) else {
            self.flush(write);
            return false;
        };
        if let Some(f) = &self.first {
            let joins = !self.closed
                && s.seq == self.next_seq
                && s.v6 == f.v6
                && s.headers == f.headers
                && s.payload <= f.payload
                && self.buf.len() + s.payload <= VNET_HDR_LEN + MAX_BYTES
                && same_flow(f, &self.buf[VNET_HDR_LEN..], packet);
            if joins {
                self.buf.extend_from_slice(&packet[s.headers..]);
                self.segments += 1;
                self.next_seq = s.seq.wrapping_add(s.payload as u32);
                if s.psh {
                    // The run's PSH goes onto the super-packet.
                    self.buf[VNET_HDR_LEN + f.ip_len + 13] |= TCP_PSH;
                }
                self.closed = s.psh || s.payload < f.payload;
                return true;
            }
            self.flush(write);
        }
        self.buf.clear();
        self.buf.resize(VNET_HDR_LEN, 0);
        self.buf.extend_from_slice(packet);
        self.first = Some(s);
        self.segments = 1;
        self.next_seq = s.seq.wrapping_add(s.payload as u32);
        self.closed = s.psh;
        true
    }

    /// Write what is pending (vnet header in front), if anything.
    pub fn flush(&mut self, write: &mut impl FnMut(&[u8])) {
        let Some(f) = self.first.take() else { return };
        let hdr = if self.segments == 1 {
            // As it arrived, checksum and all.
            VnetHdr::default()
        } else {
            self.finish_headers(&f)
        };
        hdr.write(&mut self.buf[..VNET_HDR_LEN]);
        write(&self.buf);
        self.buf.clear();
        self.segments = 0;
    }

    /// Fix the IP length (and IPv4 checksum) of the joined packet, leave the pseudo
    /// header sum in the TCP checksum, and say so in the vnet header.
    fn finish_headers(&mut self, f: &Segment) -> VnetHdr {
        let p = &mut self.buf[VNET_HDR_LEN..];
        let total = p.len();
        let l4_len = total - f.ip_len;
        if f.v6 {
            p[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        } else {
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[10..12].copy_from_slice(&[0, 0]);
            let c = !fold(sum_bytes(0, &p[..20]));
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let addrs = if f.v6 { &p[8..40] } else { &p[12..20] };
        let pseudo = fold(sum_bytes(0, addrs) + 6 + l4_len as u64);
        let field = f.ip_len + 16;
        p[field..field + 2].copy_from_slice(&pseudo.to_be_bytes());
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if f.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: f.headers as u16,
            gso_size: f.payload as u16,
            csum_start: f.ip_len as u16,
            csum_offset: 16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userspace::gso::complete_checksum;

    /// An IPv4 TCP segment with a correct checksum: seq, flags, payload octets from
    /// `fill`, a timestamp option.
    fn seg4(seq: u32, flags: u8, len: usize, fill: u8) -> Vec<u8> {
        let total = 20 + 32 + len;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&(seq as u16).to_be_bytes()); // ids differ
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 1, 0, 1]);
        p[16..20].copy_from_slice(&[10, 2, 0, 1]);
        let c = !fold(sum_bytes(0, &p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&777u32.to_be_bytes());
        t[12] = 8 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&512u16.to_be_bytes());
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        for (i, b) in t[32..].iter_mut().enumerate() {
            *b = fill.wrapping_add(i as u8);
        }
        set_tcp_checksum(&mut p, 20);
        p
    }

    fn set_tcp_checksum(p: &mut [u8], ip_len: usize) {
        p[ip_len + 16..ip_len + 18].copy_from_slice(&[0, 0]);
        let l4 = (p.len() - ip_len) as u64;
        let addrs = if ip_len == 40 { &p[8..40] } else { &p[12..20] };
        let seed = fold(sum_bytes(0, addrs) + 6 + l4);
        p[ip_len + 16..ip_len + 18].copy_from_slice(&seed.to_be_bytes());
        complete_checksum(p, ip_len, 16).unwrap();
    }

    fn run(packets: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<bool>) {
        let mut c = Coalescer::new();
        let mut out = Vec::new();
        let mut taken = Vec::new();
        for p in packets {
            let t = c.push(p, &mut |b| out.push(b.to_vec()));
            if !t {
                let mut own = vec![0u8; VNET_HDR_LEN];
                own.extend_from_slice(p);
                out.push(own);
            }
            taken.push(t);
        }
        c.flush(&mut |b| out.push(b.to_vec()));
        (out, taken)
    }

    #[test]
    fn consecutive_segments_become_one_super_packet_with_checksums_right() {
        let segs = [
            seg4(1000, TCP_ACK, 1000, 0),
            seg4(2000, TCP_ACK, 1000, 100),
            seg4(3000, TCP_ACK | TCP_PSH, 400, 200),
        ];
        let (out, taken) = run(&segs);
        assert_eq!(taken, [true, true, true]);
        assert_eq!(out.len(), 1);
        let hdr = VnetHdr::parse(&out[0]).unwrap();
        assert_eq!(
            hdr,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: 52,
                gso_size: 1000,
                csum_start: 20,
                csum_offset: 16,
            }
        );
        let mut p = out[0][VNET_HDR_LEN..].to_vec();
        assert_eq!(p.len(), 52 + 2400);
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        assert_eq!(fold(sum_bytes(0, &p[..20])), 0xffff, "IPv4 header checksum");
        assert_eq!(p[33] & TCP_PSH, TCP_PSH, "the last segment's PSH kept");
        let mut data = Vec::new();
        for s in &segs {
            data.extend_from_slice(&s[52..]);
        }
        assert_eq!(&p[52..], &data[..]);
        // What the "device" does with F_NEEDS_CSUM gives the right checksum over the
        // whole: the same as computing it from scratch.
        let mut reference = p.clone();
        set_tcp_checksum(&mut reference, 20);
        complete_checksum(&mut p, 20, 16).unwrap();
        assert_eq!(p[36..38], reference[36..38]);

        // Cut again by the TSO code (as the kernel would when forwarding), the
        // segments carry the same data with valid checksums.
        let mut again = Vec::new();
        let mut q = out[0][VNET_HDR_LEN..].to_vec();
        crate::userspace::gso::segments(&hdr, &mut q, &mut Vec::new(), |h, d| {
            again.push([h, d].concat())
        })
        .unwrap();
        assert_eq!(again.len(), 3);
        for (a, s) in again.iter().zip(&segs) {
            assert_eq!(a[52..], s[52..]);
            assert_eq!(a[24..28], s[24..28], "sequence numbers");
            let mut r = a.clone();
            set_tcp_checksum(&mut r, 20);
            assert_eq!(a[36..38], r[36..38], "TCP checksum of a re-cut segment");
        }
    }

    /// The IPv4 segment's TCP part behind an IPv6 header (2001:db8::1 → ::2).
    fn seg6(seq: u32, flags: u8, len: usize) -> Vec<u8> {
        let v4 = seg4(seq, flags, len, 7);
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((v4.len() - 20) as u16).to_be_bytes());
        p[6] = 6;
        p[7] = 64;
        p[8..10].copy_from_slice(&[0x20, 0x01]);
        p[10..12].copy_from_slice(&[0x0d, 0xb8]);
        p[23] = 1;
        p[24..26].copy_from_slice(&[0x20, 0x01]);
        p[26..28].copy_from_slice(&[0x0d, 0xb8]);
        p[39] = 2;
        p.extend_from_slice(&v4[20..]);
        set_tcp_checksum(&mut p, 40);
        p
    }

    #[test]
    fn ipv6_segments_are_joined_too() {
        let segs = [seg6(10, TCP_ACK, 1200), seg6(1210, TCP_ACK, 1200)];
        let (out, _) = run(&segs);
        assert_eq!(out.len(), 1);
        let hdr = VnetHdr::parse(&out[0]).unwrap();
        assert_eq!(
            (hdr.gso_type, hdr.gso_size, hdr.csum_start),
            (GSO_TCPV6, 1200, 40)
        );
        let mut p = out[0][VNET_HDR_LEN..].to_vec();
        assert_eq!(
            usize::from(u16::from_be_bytes([p[4], p[5]])),
            p.len() - 40,
            "payload length"
        );
        let mut reference = p.clone();
        set_tcp_checksum(&mut reference, 40);
        complete_checksum(&mut p, 40, 16).unwrap();
        assert_eq!(p[56..58], reference[56..58]);
    }

    #[test]
    fn a_single_segment_is_written_as_it_arrived() {
        let s = seg4(1, TCP_ACK, 100, 0);
        let (out, _) = run(std::slice::from_ref(&s));
        assert_eq!(out.len(), 1);
        assert_eq!(VnetHdr::parse(&out[0]), Some(VnetHdr::default()));
        assert_eq!(out[0][VNET_HDR_LEN..], s[..]);
    }

    #[test]
    fn out_of_order_segments_are_not_merged() {
        let segs = [
            seg4(1000, TCP_ACK, 1000, 0),
            seg4(3000, TCP_ACK, 1000, 0), // 2000 missing
            seg4(2000, TCP_ACK, 1000, 0),
        ];
        let (out, _) = run(&segs);
        assert_eq!(out.len(), 3);
        for (o, s) in out.iter().zip(&segs) {
            assert_eq!(o[VNET_HDR_LEN..], s[..], "written unchanged, in order");
        }
    }

    #[test]
    fn non_tcp_and_control_segments_are_not_merged_and_keep_their_place() {
        let mut udp = seg4(0, 0, 100, 0);
        udp[9] = 17;
        let segs = [
            seg4(1000, TCP_ACK, 1000, 0),
            udp.clone(),
            seg4(2000, TCP_ACK, 1000, 0),
            seg4(3000, TCP_ACK | 0x01, 1000, 0), // FIN
            seg4(4000, TCP_ACK, 0, 0),           // a pure ACK
        ];
        let (out, taken) = run(&segs);
        assert_eq!(taken, [true, false, true, false, false]);
        assert_eq!(out.len(), 5);
        for (o, s) in out.iter().zip(&segs) {
            assert_eq!(o[VNET_HDR_LEN..], s[..]);
        }
    }

    #[test]
    fn runs_end_at_a_short_segment_a_psh_or_another_flow() {
        let mut other = seg4(2000, TCP_ACK, 1000, 0);
        other[23] ^= 1; // another destination port
        let segs = [
            seg4(1000, TCP_ACK, 1000, 0),
            seg4(2000, TCP_ACK, 500, 0), // short: ends the run
            seg4(2500, TCP_ACK, 500, 0),
            seg4(3000, TCP_ACK | TCP_PSH, 500, 0), // joins, ends the run
            seg4(3500, TCP_ACK, 500, 0),
            other,
        ];
        let (out, taken) = run(&segs);
        assert!(taken.iter().all(|t| *t));
        let sizes: Vec<usize> = out.iter().map(|o| o.len() - VNET_HDR_LEN).collect();
        assert_eq!(sizes, [52 + 1500, 52 + 1000, 52 + 500, 52 + 1000]);
    }

    #[test]
    fn different_ack_or_window_are_not_merged() {
        let mut b = seg4(2000, TCP_ACK, 1000, 0);
        b[28..32].copy_from_slice(&778u32.to_be_bytes());
        let mut c = seg4(3000, TCP_ACK, 1000, 0);
        c[34..36].copy_from_slice(&513u16.to_be_bytes());
        let (out, _) = run(&[seg4(1000, TCP_ACK, 1000, 0), b, c]);
        assert_eq!(out.len(), 3);
    }
}
