//! What tunnel-mode ESP over UDP costs on the wire, and the inner MTU that leaves.

use crate::key::{ICV_LEN, IV_LEN};
use crate::sa::ESP_HEADER_LEN;

/// Octets added to an inner packet: outer IPv4 (20) or IPv6 (40) header, UDP (8),
/// ESP header (8), IV (8), at most 3 octets of padding, pad length and next header
/// (2), ICV (16). 65 over IPv4, 85 over IPv6.
pub fn overhead(outer_ipv6: bool) -> u32 {
    let ip = if outer_ipv6 { 40 } else { 20 };
    (ip + 8 + ESP_HEADER_LEN + IV_LEN + 3 + 2 + ICV_LEN) as u32
}

/// The largest inner packet whose ESP packet fits an underlay of `underlay_mtu`
/// exactly: the padding aligns payload and trailer to 4, so the worst case of
/// [`overhead`] need not be paid (1438 on a 1500 IPv4 underlay, not 1435: every
/// full-size segment carries 3 octets more).
pub fn inner_mtu(underlay_mtu: u32, outer_ipv6: bool) -> u32 {
    let ip = if outer_ipv6 { 40 } else { 20 };
    let fixed = (ip + 8 + ESP_HEADER_LEN + IV_LEN + ICV_LEN) as u32;
    // Room for payload + padding + the 2 trailer octets, in whole 4-octet words.
    let body = underlay_mtu.saturating_sub(fixed) / 4 * 4;
    body.saturating_sub(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutboundSa;

    #[test]
    fn the_largest_inner_packet_fills_the_underlay_exactly_or_less() {
        assert_eq!(overhead(false), 65);
        assert_eq!(overhead(true), 85);
        assert_eq!(inner_mtu(1500, false), 1438);
        assert_eq!(inner_mtu(1500, true), 1418);
        for underlay in [1280u32, 1500, 1501, 1502, 1503, 9000] {
            for v6 in [false, true] {
                let inner = inner_mtu(underlay, v6) as usize;
                let outer = if v6 { 40 } else { 20 } + 8 + OutboundSa::sealed_len(inner);
                assert!(outer <= underlay as usize, "{underlay} v6={v6}");
                let one_more = if v6 { 40 } else { 20 } + 8 + OutboundSa::sealed_len(inner + 1);
                assert!(
                    one_more > underlay as usize,
                    "{underlay} v6={v6}: not the largest"
                );
            }
        }
    }
}
