//! The fuzz targets' bodies, run by `fuzz/` under libFuzzer and by
//! `tests/fuzz_smoke.rs` on every `cargo test`. Each panics on a finding: a panic in
//! the port-4500 demultiplexer, the inner-packet reader or the ESP opener, or a packet
//! that opens although nobody with the key sealed it.

use crate::encap::{Datagram, classify};
use crate::inner::Inner;
use crate::{Cipher, InboundSa, OpenError, SaKey};

/// The fixed SA the inbound body opens with; `fuzz_smoke.rs` seals its seeds with it.
pub const SPI: u32 = 0x0000_1001;

pub fn key() -> SaKey {
    SaKey::new(Cipher::Aes128Gcm16, &[0x42; 20]).expect("20 octets")
}

/// Any bytes as a UDP 4500 datagram into an inbound SA (with ESN, so the high-half
/// inference runs too): classify, open, and read the inner packet.
pub fn inbound(data: &[u8]) {
    let sa = InboundSa::with_default_window(SPI, &key(), true);
    if let Datagram::Esp(esp) = classify(data) {
        let mut p = esp.to_vec();
        match sa.open(&mut p) {
            Ok(o) => {
                let _ = Inner::parse(&p[o.payload.clone()]);
                // Opening the same bytes again must be a replay.
                let mut again = esp.to_vec();
                assert!(
                    matches!(sa.open(&mut again), Err(OpenError::Replay { .. })),
                    "a packet opened twice"
                );
            }
            Err(_) => assert_eq!(sa.status().seq, 0, "a refused packet moved the window"),
        }
    }
}
