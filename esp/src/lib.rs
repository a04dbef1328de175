//! strait-esp: ESP (RFC 4303) security associations and strait's userspace datapath.
//!
//! * [`key`]: the ciphers (AES-GCM-16, RFC 4106) and key material that never prints.
//! * [`replay`]: the anti-replay window with extended sequence numbers.
//! * [`sa`]: sealing and opening ESP packets on outbound and inbound SAs.
//! * [`encap`]: UDP encapsulation (RFC 3948): IKE, ESP and keepalives on port 4500.
//! * [`inner`]: tunnel-mode inner packets.
//! * [`keylog`]: the test-only Wireshark `esp_sa` key log.
//! * [`fuzzing`]: the fuzz targets' bodies.

pub mod encap;
#[doc(hidden)]
pub mod fuzzing;
pub mod inner;
pub mod key;
pub mod keylog;
pub mod replay;
pub mod sa;

pub use key::{Cipher, KeyError, SaKey};
pub use sa::{InboundSa, OpenError, Opened, OutboundSa, SaStatus, SealError, Sealed};
