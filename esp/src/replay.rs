//! The anti-replay window of an inbound SA (RFC 4303 §3.4.3) with the inference of
//! the high 32 bits of an extended sequence number (RFC 4303 Appendix A2).
//!
//! The window is checked before decryption (cheap rejection of replays) and updated
//! only after the ICV verified, so a forged packet can never move it.

/// Smallest window strait accepts (the issue asks for at least 1024).
pub const MIN_WINDOW: u32 = 1024;
/// Default window size.
pub const DEFAULT_WINDOW: u32 = 2048;

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Already received.
    Duplicate,
    /// Left of the window.
    TooOld,
    /// Zero is never sent (the counter starts at 1).
    Zero,
}

/// A sliding window of `size` bits ending at `top`, the highest sequence number
/// authenticated so far.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    esn: bool,
    size: u64,
    top: u64,
    bits: Vec<u64>,
}

impl ReplayWindow {
    /// `size` is rounded up to a multiple of 64 and to at least [`MIN_WINDOW`].
    pub fn new(size: u32, esn: bool) -> Self {
        let size = u64::from(size.max(MIN_WINDOW)).div_ceil(64) * 64;
        Self {
            esn,
            size,
            top: 0,
            bits: vec![0; (size / 64) as usize],
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Highest sequence number accepted so far (0 before the first).
    pub fn top(&self) -> u64 {
        self.top
    }

    /// The full sequence number a packet carrying `low` stands for: `low` itself
    /// without ESN, with the high half guessed from the window (Appendix A2.2)
    /// with ESN. The guess is confirmed only by the ICV, which covers the high half.
    pub fn infer(&self, low: u32) -> u64 {
        if !self.esn {
            return u64::from(low);
        }
        let w = self.size;
        let th = self.top >> 32;
        let tl = self.top & 0xffff_ffff;
        let low = u64::from(low);
        let high = if tl >= w - 1 {
            // The window lies within one 2^32 subspace.
            if low >= tl - (w - 1) { th } else { th + 1 }
        } else {
            // The window spans two subspaces: its bottom is in the previous one.
            let bottom = (tl + (1 << 32) - (w - 1)) & 0xffff_ffff;
            if low >= bottom {
                th.saturating_sub(1)
            } else {
                th
            }
        };
        (high << 32) | low
    }

    /// Whether `seq` (a full sequence number) may be accepted.
    pub fn check(&self, seq: u64) -> Result<(), Verdict> {
        if seq == 0 {
            return Err(Verdict::Zero);
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= self.size {
            return Err(Verdict::TooOld);
        }
        if self.bit(seq) {
            Err(Verdict::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Check again and record `seq` (after its ICV verified).
    pub fn accept(&mut self, seq: u64) -> Result<(), Verdict> {
        self.check(seq)?;
        if seq > self.top {
            let advance = seq - self.top;
            if advance >= self.size {
                self.bits.iter_mut().for_each(|w| *w = 0);
            } else {
                for s in self.top + 1..seq {
                    self.clear(s);
                }
            }
            self.top = seq;
        }
        let (word, bit) = self.index(seq);
        self.bits[word] |= 1 << bit;
        Ok(())
    }

    fn index(&self, seq: u64) -> (usize, u32) {
        let i = seq % self.size;
        ((i / 64) as usize, (i % 64) as u32)
    }

    fn bit(&self, seq: u64) -> bool {
        let (word, bit) = self.index(seq);
        self.bits[word] & (1 << bit) != 0
    }

    fn clear(&mut self, seq: u64) {
        let (word, bit) = self.index(seq);
        self.bits[word] &= !(1 << bit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_at_least_the_minimum_and_a_multiple_of_64() {
        assert_eq!(ReplayWindow::new(10, false).size(), 1024);
        assert_eq!(ReplayWindow::new(2000, false).size(), 2048);
        assert_eq!(ReplayWindow::new(4096, true).size(), 4096);
    }

    #[test]
    fn duplicates_too_old_and_out_of_order() {
        let mut w = ReplayWindow::new(1024, false);
        assert_eq!(w.accept(0), Err(Verdict::Zero));
        w.accept(1).unwrap();
        assert_eq!(w.accept(1), Err(Verdict::Duplicate));
        w.accept(2000).unwrap();
        // In the window, out of order: accepted once.
        w.accept(1500).unwrap();
        assert_eq!(w.accept(1500), Err(Verdict::Duplicate));
        // The window's left edge: 2000 - 1023 is the oldest still inside.
        w.accept(2000 - 1023).unwrap();
        assert_eq!(w.check(2000 - 1024), Err(Verdict::TooOld));
        assert_eq!(w.check(1), Err(Verdict::TooOld));
        // A jump of more than the window clears everything.
        w.accept(2000 + 5000).unwrap();
        assert_eq!(w.check(2000), Err(Verdict::TooOld));
        w.accept(7000 - 1).unwrap();
        assert_eq!(w.top(), 7000);
    }

    #[test]
    fn bits_of_skipped_numbers_are_cleared_when_the_window_slides() {
        let mut w = ReplayWindow::new(1024, false);
        w.accept(5).unwrap();
        // 5 + 1024 maps to the same bit as 5; it must not look received.
        w.accept(5 + 1024 + 1).unwrap();
        w.accept(5 + 1024).unwrap();
    }

    #[test]
    fn esn_high_half_is_inferred_across_two_to_the_32() {
        let mut w = ReplayWindow::new(1024, true);
        let near = (1u64 << 32) - 10;
        w.accept(near).unwrap();
        // Low halves past the wrap belong to the next subspace...
        assert_eq!(w.infer(3), (1 << 32) + 3);
        // ...and ones just below the top to this one.
        assert_eq!(w.infer(0xffff_fff0), 0xffff_fff0);
        w.accept((1 << 32) + 3).unwrap();
        // Now the window spans both subspaces: a late packet from before the wrap.
        assert_eq!(w.infer(0xffff_fff8), 0xffff_fff8);
        w.accept(0xffff_fff8).unwrap();
        assert_eq!(w.accept(0xffff_fff8), Err(Verdict::Duplicate));
        assert_eq!(w.infer(4), (1 << 32) + 4);
    }

    #[test]
    fn esn_at_the_start_does_not_underflow() {
        let w = ReplayWindow::new(1024, true);
        assert_eq!(w.infer(1), 1);
        assert_eq!(w.infer(0xffff_ff00), 0xffff_ff00);
    }
}
