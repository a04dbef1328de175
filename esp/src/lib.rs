//! strait-esp: ESP (RFC 4303) security associations and strait's userspace datapath.
//!
//! * [`key`]: the ciphers (AES-GCM-16, RFC 4106) and key material that never prints.
//! * [`replay`]: the anti-replay window with extended sequence numbers.
//! * [`sa`]: sealing and opening ESP packets on outbound and inbound SAs.

pub mod key;
pub mod replay;
pub mod sa;

pub use key::{Cipher, KeyError, SaKey};
pub use sa::{InboundSa, OpenError, Opened, OutboundSa, SaStatus, SealError, Sealed};
