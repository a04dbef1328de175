//! Port ranges as the datapath's LPM trie holds them: a range of ports becomes the
//! fewest aligned power-of-two blocks (`value/prefix_len` over the port's 16 bits)
//! that cover it exactly, and [`EndpointTables::entry_count`] counts what a set of
//! tables costs in map entries once decomposed (the memory figure `netctl` and the
//! benchmarks print).

use crate::tables::{DirectionTables, EndpointTables};

/// The minimal cover of `first..=last` by aligned blocks, as `(value, prefix_len)`:
/// `value` has its low `16 - prefix_len` bits clear and the block holds the ports
/// `value ..= value | (2^(16 - prefix_len) - 1)`. Ascending, non-overlapping; empty
/// when `first > last`.
pub fn port_prefixes(first: u16, last: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    // u32 so that the block after 65535 does not wrap.
    let (mut start, end) = (u32::from(first), u32::from(last));
    while start <= end {
        // The largest block aligned at `start` (trailing zeros; 2^16 for port 0)...
        let mut size_log = if start == 0 {
            16
        } else {
            start.trailing_zeros().min(16)
        };
        // ...that does not run past `end`.
        while start + (1 << size_log) - 1 > end {
            size_log -= 1;
        }
        out.push((start as u16, 16 - size_log as u8));
        start += 1 << size_log;
    }
    out
}

impl DirectionTables {
    /// Map entries these tables take: one per CIDR class prefix, and one per port
    /// prefix of every segment of both the identity and the class map.
    pub fn entry_count(&self) -> usize {
        let segments = self
            .identities
            .values()
            .chain(self.classes.values())
            .flatten()
            .map(|s| port_prefixes(s.first, s.last).len())
            .sum::<usize>();
        self.cidrs.len() + segments
    }
}

impl EndpointTables {
    /// Map entries both directions take (after prefix decomposition, all maps).
    pub fn entry_count(&self) -> usize {
        self.ingress.entry_count() + self.egress.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expands a cover back to the ports it holds.
    fn ports_of(cover: &[(u16, u8)]) -> Vec<u32> {
        cover
            .iter()
            .flat_map(|&(v, len)| {
                let size = 1u32 << (16 - len);
                assert_eq!(u32::from(v) % size, 0, "{v}/{len} is not aligned");
                u32::from(v)..u32::from(v) + size
            })
            .collect()
    }

    #[test]
    fn single_ports_and_the_full_range() {
        assert_eq!(port_prefixes(80, 80), vec![(80, 16)]);
        assert_eq!(port_prefixes(0, u16::MAX), vec![(0, 0)]);
        assert_eq!(port_prefixes(u16::MAX, u16::MAX), vec![(u16::MAX, 16)]);
        assert_eq!(port_prefixes(0, 0), vec![(0, 16)]);
        assert!(port_prefixes(81, 80).is_empty());
    }

    #[test]
    fn known_ranges_take_the_fewest_blocks() {
        // 1024-65535: 1024/6, 2048/5, 4096/4, 8192/3, 16384/2, 32768/1.
        assert_eq!(
            port_prefixes(1024, u16::MAX),
            vec![
                (1024, 6),
                (2048, 5),
                (4096, 4),
                (8192, 3),
                (16384, 2),
                (32768, 1)
            ]
        );
        // 80-443: 80-95, 96-127, 128-255, 256-383, 384-415, 416-431, 432-439, 440-443.
        let cover = port_prefixes(80, 443);
        assert_eq!(
            cover,
            vec![
                (80, 12),
                (96, 11),
                (128, 9),
                (256, 9),
                (384, 11),
                (416, 12),
                (432, 13),
                (440, 14)
            ]
        );
        // The worst case for 16 bits is 30 blocks.
        assert_eq!(port_prefixes(1, u16::MAX - 1).len(), 30);
    }

    #[test]
    fn covers_are_exact_for_many_ranges() {
        let edges = [
            0u16, 1, 2, 3, 7, 8, 79, 80, 255, 256, 1023, 1024, 32767, 32768, 65534, 65535,
        ];
        for &a in &edges {
            for &b in &edges {
                let cover = port_prefixes(a, b);
                let expected: Vec<u32> = (u32::from(a)..=u32::from(b)).collect();
                assert_eq!(ports_of(&cover), expected, "{a}-{b}");
            }
        }
    }
}
