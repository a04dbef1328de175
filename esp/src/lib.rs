//! strait-esp: ESP (RFC 4303) security associations and strait's userspace datapath.
//!
//! * [`key`]: the ciphers (AES-GCM-16, RFC 4106) and key material that never prints.
//! * [`replay`]: the anti-replay window with extended sequence numbers.
//! * [`sa`]: sealing and opening ESP packets on outbound and inbound SAs.
//! * [`encap`]: UDP encapsulation (RFC 3948): IKE, ESP and keepalives on port 4500.
//! * [`inner`]: tunnel-mode inner packets.
//! * [`keylog`]: the test-only Wireshark `esp_sa` key log.
//! * [`fuzzing`]: the fuzz targets' bodies.
//! * [`mtu`]: the overhead of ESP in UDP and the inner MTU it leaves.
//! * [`datapath`]: the interface both ESP datapaths implement.
//! * [`userspace`]: strait's own datapath, TUN to UDP 4500.
//! * [`kernel`]: the kernel's XFRM datapath, where the kernel has ESP.

pub mod datapath;
pub mod encap;
#[doc(hidden)]
pub mod fuzzing;
pub mod inner;
pub mod kernel;
pub mod key;
pub mod keylog;
pub mod mtu;
pub mod replay;
pub mod sa;
pub mod userspace;

pub use datapath::{
    Datapath, DatapathError, Direction, Drops, IkeDatagram, PeerConfig, SaConfig, SaReport,
};
pub use kernel::{Xfrm, XfrmConfig};
pub use key::{Cipher, KeyError, SaKey};
pub use sa::{InboundSa, OpenError, Opened, OutboundSa, SaStatus, SealError, Sealed};
pub use userspace::{Userspace, UserspaceConfig};
