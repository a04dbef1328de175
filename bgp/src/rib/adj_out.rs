//! One destination's Adj-RIB-Out entries, by peer slot. A route reflector's common case
//! is a route sent to two clients (every client but the one it came from, with three
//! peers), so two entries live inline; more go to the heap. A `Vec` of pairs cost its
//! header plus a 48-octet allocation per prefix.

use std::sync::Arc;

use super::attrs::Attrs;

/// Slot 0 is never a peer's (slots start at 1): it marks a free inline entry.
const FREE: u32 = 0;

#[derive(Debug)]
pub(super) enum AdjOut {
    Inline([u32; 2], [Option<Arc<Attrs>>; 2]),
    /// Three or more.
    Heap(Vec<(u32, Arc<Attrs>)>),
}

impl Default for AdjOut {
    fn default() -> Self {
        AdjOut::Inline([FREE; 2], [None, None])
    }
}

/// Peer slots are dense and counted from 1; four billion peers do not happen.
fn key(slot: usize) -> u32 {
    u32::try_from(slot).expect("peer slot fits in 32 bits")
}

impl AdjOut {
    pub(super) fn get(&self, slot: usize) -> Option<&Arc<Attrs>> {
        let slot = key(slot);
        match self {
            AdjOut::Inline(slots, attrs) => slots
                .iter()
                .position(|&s| s == slot)
                .and_then(|i| attrs[i].as_ref()),
            AdjOut::Heap(v) => v.iter().find(|(s, _)| *s == slot).map(|(_, a)| a),
        }
    }

    /// Set `slot`'s entry; true if it had none.
    pub(super) fn set(&mut self, slot: usize, a: Arc<Attrs>) -> bool {
        let slot = key(slot);
        match self {
            AdjOut::Inline(slots, attrs) => {
                if let Some(i) = slots.iter().position(|&s| s == slot) {
                    attrs[i] = Some(a);
                    return false;
                }
                if let Some(i) = slots.iter().position(|&s| s == FREE) {
                    slots[i] = slot;
                    attrs[i] = Some(a);
                    return true;
                }
                let mut v = Vec::with_capacity(3);
                for (s, x) in slots.iter().zip(attrs.iter_mut()) {
                    if let Some(x) = x.take() {
                        v.push((*s, x));
                    }
                }
                v.push((slot, a));
                *self = AdjOut::Heap(v);
                true
            }
            AdjOut::Heap(v) => match v.iter_mut().find(|(s, _)| *s == slot) {
                Some(e) => {
                    e.1 = a;
                    false
                }
                None => {
                    v.push((slot, a));
                    true
                }
            },
        }
    }

    /// Drop `slot`'s entry; true if it had one.
    pub(super) fn remove(&mut self, slot: usize) -> bool {
        let slot = key(slot);
        match self {
            AdjOut::Inline(slots, attrs) => match slots.iter().position(|&s| s == slot) {
                Some(i) => {
                    slots[i] = FREE;
                    attrs[i] = None;
                    true
                }
                None => false,
            },
            AdjOut::Heap(v) => {
                let Some(i) = v.iter().position(|(s, _)| *s == slot) else {
                    return false;
                };
                v.swap_remove(i);
                if v.len() <= 2 {
                    let mut inline = AdjOut::default();
                    if let AdjOut::Inline(slots, attrs) = &mut inline {
                        for (i, (s, a)) in v.drain(..).enumerate() {
                            slots[i] = s;
                            attrs[i] = Some(a);
                        }
                    }
                    *self = inline;
                }
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::codec::NextHop;

    #[test]
    fn entries_move_between_inline_and_heap() {
        let a = |n: u8| Arc::new(Attrs::new(NextHop::V4(Ipv4Addr::new(10, 0, 0, n))));
        let mut o = AdjOut::default();
        assert!(o.get(1).is_none());
        assert!(o.set(1, a(1)));
        assert!(o.set(2, a(2)));
        assert!(!o.set(1, a(11)));
        assert!(matches!(o, AdjOut::Inline(..)));
        assert!(o.set(3, a(3)));
        assert!(o.set(4, a(4)));
        assert!(matches!(o, AdjOut::Heap(_)));
        assert_eq!(o.get(1), Some(&a(11)));
        assert!(o.remove(2));
        assert!(!o.remove(2));
        assert!(o.remove(4));
        assert!(matches!(o, AdjOut::Inline(..)));
        assert_eq!((o.get(1), o.get(3)), (Some(&a(11)), Some(&a(3))));
        assert!(o.get(2).is_none() && o.get(4).is_none());
        assert!(o.remove(1) && o.remove(3));
        assert!(o.get(3).is_none());
        assert!(o.set(5, a(5)));
        assert_eq!(o.get(5), Some(&a(5)));
    }
}
