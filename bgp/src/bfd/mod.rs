//! BFD, Bidirectional Forwarding Detection (RFC 5880), single hop over UDP (RFC 5881),
//! Asynchronous mode: tells a BGP session within a second that its peer is gone.
//!
//! `packet` is the wire codec, `session` the pure per-session state machine, `driver`
//! the tokio sockets and timers around it.

pub mod driver;
pub mod packet;
pub mod session;

pub use driver::{Bfd, BfdError, BfdState};
pub use packet::{ControlPacket, Diagnostic, PacketError, State};
pub use session::{Action, Session, SessionParams, StateChange};
