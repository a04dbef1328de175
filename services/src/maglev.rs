//! Maglev consistent hashing (Eisenbud et al., NSDI 2016, §3.4): a lookup table of M
//! slots (M prime), each naming a backend, filled so that every backend holds M/N
//! slots (rounded up or down) and a backend that joins or leaves moves little more
//! than its own share of slots. A flow hashes to a slot; its backend is the slot's.
//!
//! Every node builds the same table from the same backends: the backends are keyed by
//! a name stable across nodes (address and port), sorted, and hashed with a hash
//! fixed here (FNV-1a, then a SplitMix64 finaliser) rather than the standard
//! library's, whose algorithm may change between releases. So a flow that reaches a
//! node port on one node and, after a failover, on another still finds its backend.

/// The table sizes strait uses: primes, each about twice the last. Maglev wants M well
/// above the number of backends (M ≥ 100·N keeps the imbalance under 1 %).
pub const TABLE_SIZES: &[u32] = &[251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521];

/// The smallest size of [`TABLE_SIZES`] at least 100 times `backends`, or the largest.
pub fn table_size(backends: usize) -> u32 {
    let want = (backends as u64).saturating_mul(100);
    TABLE_SIZES
        .iter()
        .copied()
        .find(|&m| u64::from(m) >= want)
        .unwrap_or(*TABLE_SIZES.last().expect("sizes"))
}

/// A filled table: `slots[i]` is an index into `backends`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The backends' keys, sorted: the order the slots index.
    pub backends: Vec<String>,
    pub slots: Vec<u32>,
}

impl Table {
    /// The backend of slot `slot`.
    pub fn backend(&self, slot: usize) -> Option<&str> {
        let i = *self.slots.get(slot)? as usize;
        self.backends.get(i).map(String::as_str)
    }

    /// How many slots each backend holds, in the order of [`Self::backends`].
    pub fn shares(&self) -> Vec<usize> {
        let mut shares = vec![0; self.backends.len()];
        for &s in &self.slots {
            shares[s as usize] += 1;
        }
        shares
    }
}

/// The table of `size` slots (a prime) for the backends keyed `keys` (duplicates count
/// once). No backends: no slots.
pub fn build(keys: &[String], size: u32) -> Table {
    let mut backends: Vec<String> = keys.to_vec();
    backends.sort();
    backends.dedup();
    let n = backends.len();
    if n == 0 || size == 0 {
        return Table {
            backends,
            slots: Vec::new(),
        };
    }
    let m = u64::from(size);
    // Each backend's preference list is offset, offset + skip, offset + 2·skip, …
    // (mod M): a permutation of the slots, since skip < M and M is prime.
    let prefs: Vec<(u64, u64)> = backends
        .iter()
        .map(|k| {
            let offset = hash(k.as_bytes(), 0x6d61_676c_6576_3031) % m;
            let skip = hash(k.as_bytes(), 0x6d61_676c_6576_3032) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; n];
    let mut slots = vec![u32::MAX; size as usize];
    let mut filled = 0usize;
    'fill: loop {
        for (i, &(offset, skip)) in prefs.iter().enumerate() {
            // The backend's next preferred slot that is still free.
            let mut c = (offset + next[i] * skip) % m;
            while slots[c as usize] != u32::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            slots[c as usize] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == size as usize {
                break 'fill;
            }
        }
    }
    Table { backends, slots }
}

/// The fraction of slots whose backend differs between two tables of the same size
/// (by key): what share of flows a change moves. Tables of different sizes: 1.
pub fn moved(before: &Table, after: &Table) -> f64 {
    if before.slots.len() != after.slots.len() || before.slots.is_empty() {
        return 1.0;
    }
    let changed = (0..before.slots.len())
        .filter(|&s| before.backend(s) != after.backend(s))
        .count();
    changed as f64 / before.slots.len() as f64
}

/// FNV-1a over `bytes` from `seed`, then SplitMix64's finaliser (FNV alone leaves the
/// low bits of short, similar keys correlated; the modulo reads exactly those).
fn hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("10.244.{}.{}:8080", i / 200, i % 200 + 2))
            .collect()
    }

    #[test]
    fn every_backend_holds_its_share_to_one_slot() {
        for n in [1, 2, 3, 7, 10, 50] {
            let size = table_size(n);
            let t = build(&keys(n), size);
            assert_eq!(t.slots.len(), size as usize);
            let floor = size as usize / n;
            for (i, share) in t.shares().into_iter().enumerate() {
                assert!(
                    share == floor || share == floor + 1,
                    "n={n}: backend {i} holds {share} of {size}"
                );
            }
        }
    }

    #[test]
    fn the_table_does_not_depend_on_the_order_backends_come_in() {
        let mut k = keys(9);
        let a = build(&k, 1021);
        k.reverse();
        k.push(k[0].clone());
        assert_eq!(build(&k, 1021), a);
    }

    #[test]
    fn a_backend_leaving_moves_about_its_own_share() {
        for n in [3, 5, 10, 20] {
            let all = keys(n);
            let size = table_size(n);
            let before = build(&all, size);
            let mut fewer = all.clone();
            fewer.remove(n / 2);
            let after = build(&fewer, size);
            let moved = moved(&before, &after);
            let ideal = 1.0 / n as f64;
            // The slots of the one that left must move; Maglev moves a few more.
            assert!(moved >= ideal * 0.99, "n={n}: {moved} < {ideal}");
            assert!(moved <= ideal * 1.5, "n={n}: {moved} moved, ideal {ideal}");
            // Flows on the backends that stayed mostly stay.
            let stayed = (0..before.slots.len())
                .filter(|&s| before.backend(s) != Some(&all[n / 2]))
                .filter(|&s| before.backend(s) == after.backend(s))
                .count();
            let kept = stayed as f64 / (before.slots.len() as f64 * (1.0 - ideal));
            assert!(
                kept > 0.95,
                "n={n}: only {kept} of the others' flows stayed"
            );
        }
    }

    #[test]
    fn no_backend_no_slot() {
        let t = build(&[], 251);
        assert!(t.slots.is_empty());
        assert_eq!(t.backend(0), None);
    }

    #[test]
    fn sizes_are_prime_and_grow_with_the_backends() {
        for &m in TABLE_SIZES {
            assert!((2..m).take_while(|d| d * d <= m).all(|d| m % d != 0), "{m}");
        }
        assert_eq!(table_size(0), 251);
        assert_eq!(table_size(3), 509);
        assert_eq!(table_size(100), 16381);
        assert_eq!(table_size(100_000), 65521);
    }
}
