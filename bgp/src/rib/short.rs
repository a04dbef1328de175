//! A list that is mostly one element long: a destination's candidate paths. One element
//! lives inline, as the Loc-RIB's value; any other length (none, or two and more) goes
//! to the heap behind one thin pointer. That pointer fits beside the inline element's
//! non-null niche, so a list of two-pointer elements is two pointers wide: at 100 000
//! prefixes the table's buckets are most of the RIB.

use std::ops::{Deref, DerefMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Short<T> {
    One(T),
    /// None, or two and more. Boxed on purpose: a thin pointer, where a `Vec` would
    /// make every destination 24 octets wider.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<T>>),
}

impl<T> Default for Short<T> {
    fn default() -> Self {
        Short::Many(Box::default())
    }
}

impl<T> Short<T> {
    pub(super) fn as_slice(&self) -> &[T] {
        match self {
            Short::One(t) => std::slice::from_ref(t),
            Short::Many(v) => v,
        }
    }

    pub(super) fn push(&mut self, item: T) {
        match self {
            Short::Many(v) if v.is_empty() => *self = Short::One(item),
            Short::Many(v) => v.push(item),
            Short::One(_) => {
                let Short::One(first) = std::mem::take(self) else {
                    unreachable!("matched One")
                };
                // Exactly two: most lists stop there; longer ones grow as usual, so
                // pushes stay amortised O(1).
                *self = Short::Many(Box::new(vec![first, item]));
            }
        }
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        match self {
            Short::Many(v) => {
                v.retain(keep);
                if v.len() == 1
                    && let Some(t) = v.pop()
                {
                    *self = Short::One(t);
                }
            }
            Short::One(t) => {
                if !keep(t) {
                    *self = Short::default();
                }
            }
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
        assert!(s.is_empty());
        s.push(6);
        assert!(matches!(s, Short::One(6)));
    }
}
