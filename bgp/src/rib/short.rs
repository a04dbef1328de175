//! A list that is mostly one element long: a destination's candidate paths. One element
//! lives inline, beside the Loc-RIB key; only a longer list goes to the heap. At 100 000
//! prefixes a `Vec` per list (24 octets, plus an allocation of at least 32 for a single
//! element) was most of the RIB.

use std::ops::{Deref, DerefMut};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) enum Short<T> {
    #[default]
    Empty,
    One(T),
    /// Two or more.
    Many(Vec<T>),
}

impl<T> Short<T> {
    pub(super) fn as_slice(&self) -> &[T] {
        match self {
            Short::Empty => &[],
            Short::One(t) => std::slice::from_ref(t),
            Short::Many(v) => v,
        }
    }

    pub(super) fn push(&mut self, item: T) {
        match std::mem::take(self) {
            Short::Empty => *self = Short::One(item),
            Short::One(first) => {
                // Exactly two: an RR's Adj-RIB-Outs are often just that; longer ones
                // grow as usual, so pushes stay amortised O(1).
                *self = Short::Many(vec![first, item]);
            }
            Short::Many(mut v) => {
                v.push(item);
                *self = Short::Many(v);
            }
        }
    }

    pub(super) fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        if let Short::Many(v) = self {
            v.retain(keep);
            self.settle();
        } else if let Short::One(t) = self {
            let mut keep = keep;
            if !keep(t) {
                *self = Short::Empty;
            }
        }
    }

    /// A `Many` that shrank to one element or none goes back inline.
    fn settle(&mut self) {
        if let Short::Many(v) = self
            && v.len() < 2
        {
            *self = match v.pop() {
                Some(t) => Short::One(t),
                None => Short::Empty,
            };
        }
    }
}

impl<T> Deref for Short<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T> DerefMut for Short<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Short::Empty => &mut [],
            Short::One(t) => std::slice::from_mut(t),
            Short::Many(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Short;

    #[test]
    fn grows_and_shrinks_between_inline_and_heap() {
        let mut s = Short::default();
        assert!(s.is_empty());
        s.push(1);
        assert!(matches!(s, Short::One(1)));
        s.push(2);
        s.push(3);
        assert_eq!(&s[..], &[1, 2, 3]);
        s.retain(|&x| x != 1);
        assert_eq!(&s[..], &[2, 3]);
        s.retain(|&x| x != 3);
        assert!(matches!(s, Short::One(2)));
        s[0] = 5;
        assert_eq!(s.first(), Some(&5));
        s.retain(|&x| x != 5);
        assert!(matches!(s, Short::Empty));
    }
}
