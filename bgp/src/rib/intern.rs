//! Path attributes interned: one `Arc` per distinct attribute set the RIB holds, so
//! routes that arrived in different UPDATEs with the same attributes share them —
//! one copy in memory, one export rewrite per peer (export.rs), and one group when
//! their announcements are packed into UPDATEs again.
//!
//! The table holds weak references, so it keeps nothing alive: an attribute set no
//! route uses any more is freed as usual, and its entry is dropped in a sweep once the
//! table has doubled since the last.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Weak};

use super::attrs::Attrs;

/// Sweep no sooner than at this many entries.
const MIN_SWEEP: usize = 64;

#[derive(Default)]
pub(super) struct Interner {
    /// By hash; equal hashes are compared in full.
    by_hash: HashMap<u64, Vec<Weak<Attrs>>>,
    /// Keyed per process, so a peer cannot aim its attributes at one bucket.
    hasher: RandomState,
    len: usize,
    sweep_at: usize,
}

impl Interner {
    /// The shared copy of `a`'s attributes: an equal set already held, or `a`.
    pub(super) fn intern(&mut self, a: Arc<Attrs>) -> Arc<Attrs> {
        let h = self.hash(&a);
        let same = self.by_hash.get(&h).and_then(|ws| {
            ws.iter()
                .filter_map(Weak::upgrade)
                .find(|held| Arc::ptr_eq(held, &a) || **held == *a)
        });
        if let Some(held) = same {
            return held;
        }
        if self.len >= self.sweep_at {
            self.sweep();
        }
        self.by_hash.entry(h).or_default().push(Arc::downgrade(&a));
        self.len += 1;
        a
    }

    /// Hashes the fields equality compares (all but the next hop's link-local part,
    /// which rarely tells sets apart).
    fn hash(&self, a: &Attrs) -> u64 {
        let mut h = self.hasher.build_hasher();
        (a.origin as u8).hash(&mut h);
        for s in &a.as_path.segments {
            (s.kind as u8).hash(&mut h);
            s.asns.hash(&mut h);
        }
        a.next_hop_addr().hash(&mut h);
        a.med.hash(&mut h);
        a.local_pref.hash(&mut h);
        a.atomic_aggregate.hash(&mut h);
        a.aggregator.hash(&mut h);
        a.communities.hash(&mut h);
        a.originator_id.hash(&mut h);
        a.cluster_list.hash(&mut h);
        for u in &a.unknown {
            (u.flags, u.code, &u.value).hash(&mut h);
        }
        h.finish()
    }

    fn sweep(&mut self) {
        self.by_hash.retain(|_, ws| {
            ws.retain(|w| w.strong_count() > 0);
            !ws.is_empty()
        });
        self.len = self.by_hash.values().map(Vec::len).sum();
        self.sweep_at = (2 * self.len).max(MIN_SWEEP);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::codec::NextHop;

    fn attrs(med: u32) -> Arc<Attrs> {
        let mut a = Attrs::new(NextHop::V4(Ipv4Addr::new(10, 0, 0, 1)));
        a.med = Some(med);
        Arc::new(a)
    }

    #[test]
    fn equal_sets_share_one_copy_and_unused_ones_are_swept() {
        let mut t = Interner::default();
        let a = t.intern(attrs(1));
        let b = t.intern(attrs(1));
        assert!(Arc::ptr_eq(&a, &b));
        let c = t.intern(attrs(2));
        assert!(!Arc::ptr_eq(&a, &c));
        drop((a, b, c));
        // Nothing held: the table does not keep them, and sweeps its entries.
        for med in 0..1000 {
            t.intern(attrs(med));
        }
        assert!(t.len() < 200, "{} entries", t.len());
        let held = t.intern(attrs(5000));
        assert!(Arc::ptr_eq(&held, &t.intern(attrs(5000))));
    }
}
