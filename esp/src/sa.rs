//! ESP security associations (RFC 4303) with AES-GCM (RFC 4106): sealing an inner
//! packet into an ESP packet on an [`OutboundSa`], and opening one on an
//! [`InboundSa`] with the anti-replay window.
//!
//! Wire format: SPI (4) | sequence number, low 32 bits (4) | IV (8) | ciphertext of
//! (payload | padding | pad length | next header) | ICV (16). The IV is the 64-bit
//! sequence number, unique per key, so no random source is needed per packet.
//!
//! Both SA halves are shared by several datapath workers: the outbound counter is an
//! atomic, the counters are atomics, and only the inbound replay window sits behind
//! a per-SA mutex held for a few instructions (never across the decryption).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead::{Aad, Tag};

use crate::key::{Aead, Cipher, ICV_LEN, IV_LEN, SaKey, aad};
use crate::replay::{DEFAULT_WINDOW, ReplayWindow, Verdict};

/// ESP header: SPI and sequence number.
pub const ESP_HEADER_LEN: usize = 8;
/// ESP header, IV, pad length, next header and ICV: everything but payload and padding.
pub const ESP_FIXED_OVERHEAD: usize = ESP_HEADER_LEN + IV_LEN + 2 + ICV_LEN;
/// Smallest valid ESP packet: no payload, two trailer octets padded to four.
pub const MIN_ESP_LEN: usize = ESP_HEADER_LEN + IV_LEN + 4 + ICV_LEN;

/// Next header values of tunnel mode (RFC 4303 §2.6).
pub const NEXT_HEADER_IPV4: u8 = 4;
pub const NEXT_HEADER_IPV6: u8 = 41;

/// Why a packet could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The sequence counter would wrap (RFC 4303 §3.3.3): the SA must be replaced.
    #[error("SA 0x{spi:08x}: sequence numbers exhausted, rekey needed")]
    RekeyNeeded { spi: u32 },
}

/// Why an inbound packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("malformed ESP packet: {0}")]
    Malformed(&'static str),
    #[error("ESP packet for SPI 0x{got:08x} given to SA 0x{expected:08x}")]
    Spi { expected: u32, got: u32 },
    #[error("replayed ESP sequence number {seq}")]
    Replay { seq: u64 },
    #[error("ESP integrity check failed")]
    Icv,
}

/// What sealing a packet produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    /// The sequence number used.
    pub seq: u64,
    /// The counter passed the soft limit: start a rekey now.
    pub near_limit: bool,
}

/// Per-direction counters, readable while the datapath runs.
#[derive(Debug, Default)]
pub struct Counters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    pub replay_failures: AtomicU64,
    pub icv_failures: AtomicU64,
    pub malformed: AtomicU64,
}

/// A snapshot of one SA for status output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaStatus {
    pub spi: u32,
    pub cipher: Cipher,
    pub esn: bool,
    pub packets: u64,
    pub bytes: u64,
    pub replay_failures: u64,
    pub icv_failures: u64,
    pub malformed: u64,
    /// Outbound: the last sequence number sent; inbound: the highest authenticated.
    pub seq: u64,
}

/// The sending half of an SA.
#[derive(Debug)]
pub struct OutboundSa {
    spi: u32,
    cipher: Cipher,
    esn: bool,
    aead: Aead,
    /// The next sequence number to send.
    next: AtomicU64,
    soft_limit: u64,
    counters: Counters,
}

impl OutboundSa {
    pub fn new(spi: u32, key: &SaKey, esn: bool) -> Self {
        let max = if esn { u64::MAX } else { u64::from(u32::MAX) };
        Self {
            spi,
            cipher: key.cipher(),
            esn,
            aead: Aead::new(key),
            next: AtomicU64::new(1),
            // Leave 1/16 of the space for the rekey to complete.
            soft_limit: max - max / 16,
            counters: Counters::default(),
        }
    }

    /// Start the counter at `next` (tests of the 2^32 crossing; never below 1).
    pub fn with_next_seq(self, next: u64) -> Self {
        self.next.store(next.max(1), Ordering::Relaxed);
        self
    }

    /// Signal [`Sealed::near_limit`] from sequence number `soft_limit` on.
    pub fn with_soft_limit(mut self, soft_limit: u64) -> Self {
        self.soft_limit = soft_limit;
        self
    }

    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// Whether the counter passed the soft limit: the SA should be replaced.
    pub fn near_limit(&self) -> bool {
        self.next.load(Ordering::Relaxed) > self.soft_limit
    }

    fn max_seq(&self) -> u64 {
        if self.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        }
    }

    /// Take the next sequence number, refusing to wrap.
    fn take_seq(&self) -> Result<u64, SealError> {
        let max = self.max_seq();
        self.next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n <= max && n != 0).then(|| n.wrapping_add(1))
            })
            .map_err(|_| SealError::RekeyNeeded { spi: self.spi })
    }

    /// Length of the ESP packet that sealing `payload_len` octets makes.
    pub fn sealed_len(payload_len: usize) -> usize {
        ESP_HEADER_LEN + IV_LEN + padded(payload_len) + ICV_LEN
    }

    /// Append the ESP packet carrying `payload` (an inner packet of protocol
    /// `next_header`) to `out`.
    pub fn seal(
        &self,
        next_header: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Sealed, SealError> {
        self.seal_parts(next_header, payload, &[], out)
    }

    /// [`Self::seal`] of the payload `head` followed by `rest` (a segment's headers and
    /// its data, copied once, straight into `out`).
    pub fn seal_parts(
        &self,
        next_header: u8,
        head: &[u8],
        rest: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Sealed, SealError> {
        let payload_len = head.len() + rest.len();
        let seq = self.take_seq()?;
        let body_len = padded(payload_len);
        out.reserve(ESP_HEADER_LEN + IV_LEN + body_len + ICV_LEN);
        out.extend_from_slice(&self.spi.to_be_bytes());
        out.extend_from_slice(&(seq as u32).to_be_bytes());
        let iv = seq.to_be_bytes();
        out.extend_from_slice(&iv);
        let body = out.len();
        out.extend_from_slice(head);
        out.extend_from_slice(rest);
        let pad = body_len - payload_len - 2;
        out.extend((1..=pad as u8).chain([pad as u8, next_header]));
        let mut aad_buf = [0; 12];
        let aad = Aad::from(aad(self.spi, seq, self.esn, &mut aad_buf));
        let tag: Tag = self
            .aead
            .key
            .seal_in_place_separate_tag(self.aead.nonce(iv), aad, &mut out[body..])
            .expect("ESP packets are far below the GCM length limit");
        out.extend_from_slice(tag.as_ref());
        self.counters.packets.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(payload_len as u64, Ordering::Relaxed);
        Ok(Sealed {
            seq,
            near_limit: seq >= self.soft_limit,
        })
    }

    pub fn status(&self) -> SaStatus {
        let c = &self.counters;
        SaStatus {
            spi: self.spi,
            cipher: self.cipher,
            esn: self.esn,
            packets: c.packets.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            replay_failures: 0,
            icv_failures: 0,
            malformed: 0,
            seq: self.next.load(Ordering::Relaxed).saturating_sub(1),
        }
    }
}

/// Payload, padding and the two trailer octets, aligned to 4 (RFC 4303 §2.4).
fn padded(payload_len: usize) -> usize {
    (payload_len + 2).div_ceil(4) * 4
}

/// What opening an ESP packet produced: the inner packet is `packet[range]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub seq: u64,
    pub next_header: u8,
    pub payload: std::ops::Range<usize>,
}

/// The receiving half of an SA.
#[derive(Debug)]
pub struct InboundSa {
    spi: u32,
    cipher: Cipher,
    esn: bool,
    aead: Aead,
    window: Mutex<ReplayWindow>,
    highest: AtomicU64,
    counters: Counters,
}

impl InboundSa {
    /// `window` is the anti-replay window size in packets (at least 1024; see
    /// [`crate::replay`]).
    pub fn new(spi: u32, key: &SaKey, esn: bool, window: u32) -> Self {
        Self {
            spi,
            cipher: key.cipher(),
            esn,
            aead: Aead::new(key),
            window: Mutex::new(ReplayWindow::new(window, esn)),
            highest: AtomicU64::new(0),
            counters: Counters::default(),
        }
    }

    /// With the default window of 2048.
    pub fn with_default_window(spi: u32, key: &SaKey, esn: bool) -> Self {
        Self::new(spi, key, esn, DEFAULT_WINDOW)
    }

    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// Decrypt `packet` (an ESP packet, from the SPI on) in place. On success the
    /// inner packet is `packet[opened.payload]`. Replays are refused before the
    /// decryption; the window moves only once the ICV verified.
    pub fn open(&self, packet: &mut [u8]) -> Result<Opened, OpenError> {
        let r = self.open_inner(packet);
        let c = &self.counters;
        match &r {
            Ok(o) => {
                c.packets.fetch_add(1, Ordering::Relaxed);
                c.bytes.fetch_add(o.payload.len() as u64, Ordering::Relaxed);
            }
            Err(OpenError::Replay { .. }) => {
                c.replay_failures.fetch_add(1, Ordering::Relaxed);
            }
            Err(OpenError::Icv) => {
                c.icv_failures.fetch_add(1, Ordering::Relaxed);
            }
            Err(OpenError::Malformed(_) | OpenError::Spi { .. }) => {
                c.malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReplayWindow> {
        // A panic elsewhere cannot leave the window half-updated: every update is
        // one call that does not panic. Keep using it.
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open_inner(&self, packet: &mut [u8]) -> Result<Opened, OpenError> {
        if packet.len() < MIN_ESP_LEN {
            return Err(OpenError::Malformed("shorter than the smallest ESP packet"));
        }
        let spi = u32::from_be_bytes(packet[..4].try_into().expect("4 octets"));
        if spi != self.spi {
            return Err(OpenError::Spi {
                expected: self.spi,
                got: spi,
            });
        }
        let low = u32::from_be_bytes(packet[4..8].try_into().expect("4 octets"));
        let seq = {
            let w = self.lock();
            let seq = w.infer(low);
            w.check(seq).map_err(|v| replay(v, seq))?;
            seq
        };
        let mut iv = [0; IV_LEN];
        iv.copy_from_slice(&packet[8..16]);
        let mut aad_buf = [0; 12];
        let aad = Aad::from(aad(self.spi, seq, self.esn, &mut aad_buf));
        let body = ESP_HEADER_LEN + IV_LEN;
        let plain_len = self
            .aead
            .key
            .open_in_place(self.aead.nonce(iv), aad, &mut packet[body..])
            .map_err(|_| OpenError::Icv)?
            .len();
        if plain_len % 4 != 0 {
            return Err(OpenError::Malformed("ciphertext not aligned to 4 octets"));
        }
        let trailer = body + plain_len - 2;
        let pad = usize::from(packet[trailer]);
        let next_header = packet[trailer + 1];
        if pad + 2 > plain_len {
            return Err(OpenError::Malformed("pad length beyond the payload"));
        }
        let payload_end = trailer - pad;
        if !packet[payload_end..trailer]
            .iter()
            .enumerate()
            .all(|(i, &b)| usize::from(b) == i + 1)
        {
            return Err(OpenError::Malformed("padding is not 1, 2, 3, ..."));
        }
        // Authenticated: now the window may move. Another worker may have taken the
        // same number meanwhile; the window says so.
        self.lock().accept(seq).map_err(|v| replay(v, seq))?;
        self.highest.fetch_max(seq, Ordering::Relaxed);
        Ok(Opened {
            seq,
            next_header,
            payload: body..payload_end,
        })
    }

    pub fn status(&self) -> SaStatus {
        let c = &self.counters;
        SaStatus {
            spi: self.spi,
            cipher: self.cipher,
            esn: self.esn,
            packets: c.packets.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            replay_failures: c.replay_failures.load(Ordering::Relaxed),
            icv_failures: c.icv_failures.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            seq: self.highest.load(Ordering::Relaxed),
        }
    }
}

fn replay(_: Verdict, seq: u64) -> OpenError {
    OpenError::Replay { seq }
}
