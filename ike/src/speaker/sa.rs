//! The state one IKE SA keeps: its SPIs and keys, the two message-ID windows (our
//! requests and the peer's), the Child SAs it carries, its timers, and what it needs
//! for fragmentation (RFC 7383).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use crate::codec::{ExchangeType, Header, Identity, Payload, TrafficSelector};
use crate::crypto::CryptoError;
use crate::crypto::dh::KeyShare;
use crate::crypto::keys::IkeKeys;
use crate::crypto::sk::SkCipher;

use super::fragments::{Datagrams, Inbound};
use super::proposal::{EspSuite, IkeSuite};

/// Where an IKE SA is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IkeState {
    /// Initiator: IKE_SA_INIT sent.
    InitSent,
    /// Initiator: IKE_AUTH sent.
    AuthSent,
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH (half-open).
    InitDone,
    Established,
    /// Replaced by a rekeyed IKE SA, or by a new one after a reauthentication; waits
    /// for its Delete.
    Rekeyed,
    /// Our Delete is on its way.
    Deleting,
    /// Gone; removed from the speaker.
    Dead,
}

/// A Child SA the IKE SA carries.
#[derive(Debug, Clone)]
pub(crate) struct Child {
    pub spi_in: u32,
    pub spi_out: u32,
    pub suite: EspSuite,
    pub ts_local: Vec<TrafficSelector>,
    pub ts_remote: Vec<TrafficSelector>,
    pub established: Instant,
    pub rekey_at: Instant,
    pub expire_at: Instant,
    /// A rekey of it is in flight (ours).
    pub rekeying: bool,
    /// A newer Child SA replaces it; it only waits for its Delete.
    pub replaced: bool,
    /// Our Delete for it is queued or in flight.
    pub deleting: bool,
    /// The peer rekeyed it while our rekey was in flight: the nonces of the peer's
    /// exchange (its Ni, our Nr) and the SPI of the Child SA it made (RFC 7296 §2.8.1).
    pub collision: Option<(Vec<u8>, Vec<u8>, u32)>,
}

/// A request of ours waiting for its turn (the window is 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Intent {
    RekeyChild { spi_in: u32 },
    RekeyIke,
    DeleteChild { spis_in: Vec<u32> },
    DeleteIke,
    Dpd,
}

/// What a request in flight needs when its response comes.
#[derive(Debug)]
pub(crate) enum InFlight {
    Init,
    Auth {
        child_spi_in: u32,
    },
    RekeyChild {
        old_spi_in: u32,
        new_spi_in: u32,
        ni: Vec<u8>,
        share: Option<KeyShare>,
    },
    RekeyIke {
        new_spi: u64,
        ni: Vec<u8>,
        share: Option<KeyShare>,
    },
    DeleteChild {
        spis_in: Vec<u32>,
    },
    DeleteIke,
    Dpd,
}

#[derive(Debug)]
pub(crate) struct Pending {
    pub message_id: u32,
    pub bytes: Datagrams,
    pub retransmits: u32,
    pub next_send: Instant,
    pub what: InFlight,
}

/// The peer's IKE SA collision with our IKE rekey: its nonces and the SPI (ours) of
/// the IKE SA it created.
#[derive(Debug, Clone)]
pub(crate) struct IkeCollision {
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    pub new_local_spi: u64,
}

#[derive(Debug)]
pub(crate) struct IkeSa {
    pub local_spi: u64,
    pub remote_spi: u64,
    /// We were the original initiator (the I flag is ours).
    pub initiator: bool,
    pub peer: Option<Identity>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: IkeState,
    pub suite: Option<IkeSuite>,
    pub keys: Option<IkeKeys>,
    pub tx: Option<SkCipher>,
    pub rx: Option<SkCipher>,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    /// Our and the peer's IKE_SA_INIT message, for AUTH.
    pub init_local: Vec<u8>,
    pub init_remote: Vec<u8>,
    pub share: Option<KeyShare>,
    pub cookie: Option<Vec<u8>>,
    pub next_request_id: u32,
    pub pending: Option<Pending>,
    pub queue: VecDeque<Intent>,
    pub expected_request_id: u32,
    pub cached_response: Option<(u32, Datagrams)>,
    pub children: Vec<Child>,
    pub created: Instant,
    pub established: Option<Instant>,
    pub last_received: Instant,
    pub last_dpd: Option<Instant>,
    pub rekey_at: Option<Instant>,
    pub expire_at: Option<Instant>,
    /// When we reauthenticate it (a new IKE SA, then this one deleted: RFC 7296
    /// §2.8.3), if the configuration asks for it.
    pub reauth_at: Option<Instant>,
    /// This SA is our reauthentication of the IKE SA with that SPI (ours).
    pub reauth_of: Option<u64>,
    pub ike_rekeys: u32,
    pub child_rekeys: u32,
    pub nat: super::NatStatus,
    pub ike_collision: Option<IkeCollision>,
    /// A rekey replaced this IKE SA: its end is no news for the caller.
    pub superseded: bool,
    pub next_keepalive: Option<Instant>,
    /// Traffic selectors we offered in IKE_AUTH.
    pub offered_ts: (Vec<TrafficSelector>, Vec<TrafficSelector>),
    /// The peer reassembles fragments (it sent IKEV2_FRAGMENTATION_SUPPORTED): the
    /// longest message we send it whole.
    pub fragment_size: Option<usize>,
    /// The peer's fragmented messages being reassembled.
    pub inbound: Inbound,
}

impl IkeSa {
    pub fn new(
        local_spi: u64,
        initiator: bool,
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
    ) -> Self {
        IkeSa {
            local_spi,
            remote_spi: 0,
            initiator,
            peer: None,
            local,
            remote,
            state: if initiator {
                IkeState::InitSent
            } else {
                IkeState::InitDone
            },
            suite: None,
            keys: None,
            tx: None,
            rx: None,
            ni: Vec::new(),
            nr: Vec::new(),
            init_local: Vec::new(),
            init_remote: Vec::new(),
            share: None,
            cookie: None,
            next_request_id: 0,
            pending: None,
            queue: VecDeque::new(),
            expected_request_id: 0,
            cached_response: None,
            children: Vec::new(),
            created: now,
            established: None,
            last_received: now,
            last_dpd: None,
            rekey_at: None,
            expire_at: None,
            reauth_at: None,
            reauth_of: None,
            ike_rekeys: 0,
            child_rekeys: 0,
            nat: super::NatStatus::default(),
            ike_collision: None,
            superseded: false,
            next_keepalive: None,
            offered_ts: (Vec::new(), Vec::new()),
            fragment_size: None,
            inbound: Inbound::default(),
        }
    }

    /// (SPIi, SPIr) as the header carries them.
    pub fn spis(&self) -> (u64, u64) {
        if self.initiator {
            (self.local_spi, self.remote_spi)
        } else {
            (self.remote_spi, self.local_spi)
        }
    }

    pub fn header(&self, exchange: ExchangeType, response: bool, message_id: u32) -> Header {
        let (spi_i, spi_r) = self.spis();
        Header {
            spi_i,
            spi_r,
            minor_version: 0,
            exchange,
            initiator: self.initiator,
            version: false,
            response,
            message_id,
        }
    }

    /// An encrypted message with `inner`: one datagram, or Encrypted Fragments when
    /// the peer reassembles and the whole would be longer than it takes (RFC 7383
    /// §2.5).
    pub fn seal(&mut self, header: &Header, inner: &[Payload]) -> Result<Datagrams, CryptoError> {
        let tx = self.tx.as_mut().ok_or(CryptoError::ShortEncrypted)?;
        let whole = tx.seal(header, &[], inner)?;
        match self.fragment_size {
            Some(max) if whole.len() > max && header.exchange != ExchangeType::IkeSaInit => {
                Ok(Datagrams(tx.seal_fragments(header, inner, max)?))
            }
            _ => Ok(whole.into()),
        }
    }

    pub fn child_by_in(&mut self, spi_in: u32) -> Option<&mut Child> {
        self.children.iter_mut().find(|c| c.spi_in == spi_in)
    }
}

/// RFC 7296 §2.8.1: of two SAs made at once for the same purpose, the one whose
/// exchange carried the lowest of the four nonces is redundant (and deleted by the side
/// that initiated that exchange). Whether ours, made with `ours`, is that one.
pub(crate) fn ours_is_redundant(ours: (&[u8], &[u8]), theirs: (&[u8], &[u8])) -> bool {
    ours.0.min(ours.1) < theirs.0.min(theirs.1)
}

#[cfg(test)]
mod tests {
    use super::ours_is_redundant;

    #[test]
    fn the_exchange_with_the_lowest_nonce_is_redundant() {
        let (n1, n2, n3, n4) = ([1u8; 16], [2u8; 16], [3u8; 16], [4u8; 16]);
        assert!(ours_is_redundant((&n3, &n1), (&n2, &n4)));
        assert!(!ours_is_redundant((&n2, &n4), (&n3, &n1)));
        assert!(!ours_is_redundant((&n4, &n3), (&n2, &n4)));
    }
}
