//! The interface every ESP datapath implements (strait's userspace one in
//! [`crate::userspace`], the kernel's XFRM one in [`crate::kernel`]), so the IKE engine and the agent drive either the
//! same way: peers (their outer address and the inner prefixes routed to them),
//! inbound and outbound SAs, status, and the IKE datagrams that share UDP 4500.

use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::Receiver;

use ipnet::IpNet;

use crate::key::SaKey;
use crate::sa::SaStatus;

/// A peer: where its ESP goes and which inner prefixes are behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Our outer address towards it (the kernel datapath needs it for its states).
    pub local: IpAddr,
    /// Its outer address and UDP port (4500, or what NAT made of it).
    pub remote: SocketAddr,
    /// Inner prefixes routed to the peer; inbound inner sources must be inside them.
    pub prefixes: Vec<IpNet>,
}

/// One SA direction as negotiated. `Debug` redacts the key.
#[derive(Debug, Clone)]
pub struct SaConfig {
    pub spi: u32,
    pub key: SaKey,
    pub esn: bool,
    /// Anti-replay window (inbound only); at least 1024.
    pub replay_window: u32,
    /// ESP goes in UDP (RFC 3948) between port 4500 and the peer's port. The kernel
    /// datapath sends and expects plain ESP without it; the userspace one always
    /// encapsulates (it has no other way to send ESP), so a peer running it needs
    /// this set.
    pub udp_encap: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Status of one installed SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaReport {
    pub peer: String,
    pub direction: Direction,
    /// Outbound: the SA new packets use (the others are kept until removed).
    pub active: bool,
    /// Outbound: the sequence counter passed the soft limit; rekey now.
    pub near_limit: bool,
    pub status: SaStatus,
}

/// Packets the datapath dropped rather than send or deliver, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// Inner destination matches no peer's prefixes.
    pub no_route: u64,
    /// The peer has no outbound SA (yet, or any more).
    pub no_sa: u64,
    /// The outbound SA refused (sequence numbers exhausted).
    pub seal_failed: u64,
    /// Unreadable packet from the TUN (bad vnet header or IP header).
    pub tx_malformed: u64,
    /// sendmsg failed.
    pub send_errors: u64,
    /// ESP for an SPI we have no SA for.
    pub unknown_spi: u64,
    /// Decrypted inner packet whose source is outside the peer's prefixes, or whose
    /// version disagrees with its next header.
    pub inner_refused: u64,
    /// Writing a decrypted packet to the TUN failed.
    pub tun_errors: u64,
    /// IKE datagrams dropped because the receiver was not keeping up (or gone).
    pub ike_dropped: u64,
}

/// An IKE message received on the shared port, the non-ESP marker stripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeDatagram {
    pub from: SocketAddr,
    pub message: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("no peer {0:?}")]
    UnknownPeer(String),
    #[error("inbound SPI 0x{0:08x} is already installed")]
    DuplicateSpi(u32),
    #[error("no {direction:?} SA 0x{spi:08x} for peer {peer:?}")]
    UnknownSa {
        peer: String,
        direction: Direction,
        spi: u32,
    },
    /// The kernel lacks what the SA needs (ESP, the algorithm); names what is missing.
    #[error("the kernel has no {0}")]
    Unsupported(String),
    /// The kernel refused a request for another reason.
    #[error("kernel XFRM, {op}: {message}")]
    Kernel { op: &'static str, message: String },
    /// The request itself is wrong; nothing was changed.
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// An ESP datapath.
pub trait Datapath: Send + Sync {
    /// `userspace` or `kernel`, for `netctl status`.
    fn name(&self) -> &'static str;
    /// Add a peer, or change its address and prefixes (its SAs stay).
    fn add_peer(&self, peer: &str, config: PeerConfig) -> Result<(), DatapathError>;
    /// Remove a peer and all its SAs; its traffic is dropped from now on.
    fn remove_peer(&self, peer: &str) -> Result<(), DatapathError>;
    /// Install an inbound SA. Several may be live for one peer (during a rekey).
    fn install_inbound(&self, peer: &str, sa: SaConfig) -> Result<(), DatapathError>;
    /// Install an outbound SA and make it the one new packets use, in one step:
    /// packets in flight finish on the old one, none is lost or sent in clear.
    fn install_outbound(&self, peer: &str, sa: SaConfig) -> Result<(), DatapathError>;
    /// Install an outbound SA beside the one in use, without using it yet: it takes
    /// over when [`Datapath::activate_outbound`] names it, or when the SA in use is
    /// removed (the newest installed one takes over then). A peer with no outbound SA
    /// in use starts using it at once.
    fn add_outbound(&self, peer: &str, sa: SaConfig) -> Result<(), DatapathError>;
    /// Make the installed outbound SA `spi` the one new packets use.
    fn activate_outbound(&self, peer: &str, spi: u32) -> Result<(), DatapathError>;
    /// Remove one SA. Removing the outbound SA in use hands new packets to the newest
    /// outbound SA still installed for the peer, if any.
    fn remove_sa(&self, peer: &str, direction: Direction, spi: u32) -> Result<(), DatapathError>;
    /// Status and counters of every SA.
    fn sa_status(&self) -> Vec<SaReport>;
    /// What was dropped, by reason.
    fn drops(&self) -> Drops;
    /// Send an IKE message from the shared port (the marker is added here).
    fn send_ike(&self, to: SocketAddr, message: &[u8]) -> Result<(), DatapathError>;
    /// The IKE messages arriving on the shared port; `Some` once.
    fn take_ike_receiver(&self) -> Option<Receiver<IkeDatagram>>;
}
