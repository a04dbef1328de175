//! The BGP speaker: sessions, BFD and the RIB wired together behind a declarative API
//! (docs/bgp.md, "The speaker's API"). One tokio task owns the [`Rib`]; each peer's
//! session and BFD run beside it and report to it.
//!
//! - [`Speaker::set_peers`] starts, stops and restarts sessions to match the list; a
//!   removed peer's routes leave the RIB at once.
//! - [`Speaker::set_originated`]: our prefixes, announced to every peer with next hop
//!   self — the session's local address for its family, [`SpeakerConfig::local_v4`] /
//!   [`SpeakerConfig::local_v6`] for the other family (a family without an address is
//!   not announced to internal peers). RFC 8950: the Extended Next Hop capability for
//!   IPv4 via IPv6 is offered ([`SpeakerConfig::extended_next_hop`]); where both sides
//!   offered it, IPv4 routes may carry IPv6 next hops (ours when we have no IPv4
//!   address), and where not, no such route is sent.
//! - UPDATEs to peers are grouped by shared attributes and packed up to 4096 bytes
//!   ([`pack`]); a burst of incoming UPDATEs is applied before anything is sent.
//! - Graceful restart (RFC 4724): announced with [`SpeakerConfig::graceful_restart`]
//!   (forwarding preserved, both families; the Restart State bit until converged when
//!   [`SpeakerConfig::restarted`]). As helper, a peer that negotiated it and
//!   whose connection was lost (no NOTIFICATION either way, not reset by us) keeps its
//!   routes, stale, until its End-of-RIB per family or its announced restart time. We
//!   send End-of-RIB after our table to peers that announced the capability; a
//!   restarting speaker should call [`Speaker::set_originated`] before
//!   [`Speaker::set_peers`] so End-of-RIB follows its routes. To restart, stop with
//!   [`Speaker::shutdown_for_restart`] (connections closed without NOTIFICATION) so
//!   peers keep our routes meanwhile; [`Speaker::shutdown`]'s Cease makes them drop
//!   them.
//! - BFD (RFC 5882): with [`PeerSpec::bfd`], a BFD session runs from the BGP session's
//!   local address while the session is Established. BFD going Down after it was Up
//!   resets the BGP session at once and its routes are withdrawn (not kept as stale:
//!   §4.3 leaves the choice, and a dead link is not a restarting peer); a BFD that never
//!   comes up does not hold the session back. AdminDown from the peer is ignored
//!   (§3.2).
//! - Import and export policy ([`crate::policy`]): a peer's announcements pass its
//!   [`PeerSpec::import`] before the RIB sees them (refused ones become withdrawals,
//!   are counted in [`PeerStatus::refused`] and listed by [`Speaker::refused`]); the
//!   best paths sent to it pass its [`PeerSpec::export`]. A changed peer policy is a
//!   changed spec: the session restarts and the peer's table is taken again. The
//!   protected address space ([`Speaker::set_protected`]) changes without restarts:
//!   refused routes are kept with their attributes and judged again.
//! - Max-prefix: the UPDATE past the limit (accepted routes, or refused ones) is refused, Cease/1 (RFC 4486) is sent and
//!   the routes are withdrawn; the session stays down for [`MAX_PREFIX_RESTART`], then
//!   starts again.
//!
//! The FIB stream ([`FibEvent`]) is a bounded channel. The owner never waits on it:
//! changes it cannot hand over yet are held (and coalesced to the latest per prefix
//! once many) and go in one event when the consumer catches up. [`FibEvent::Converged`]
//! comes exactly once, after the changes before it, when either
//! - every configured peer (at least one) has finished its first table since start:
//!   End-of-RIB for every negotiated family from a peer that announced graceful
//!   restart, or for one that did not, [`INITIAL_QUIET`] Established without an
//!   UPDATE; or
//! - [`SpeakerConfig::graceful_restart`] (or [`SpeakerConfig::converge_deadline`]
//!   without it) has passed since start, whatever the peers did — also with no peers.

mod config;
mod owner;
mod pack;
mod status;

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use config::{
    BfdParams, DEFAULT_CONNECT_RETRY, DEFAULT_CONVERGE_DEADLINE, DEFAULT_HOLD_TIME, FibEvent,
    PeerSpec, SpeakerConfig, SpeakerError,
};
pub use owner::{INITIAL_QUIET, MAX_PREFIX_RESTART};
pub use pack::pack;
pub use status::{PeerStatus, RefusedRoute, RibEntry, RibPath, state_name};

use crate::policy::WithExportFilters;
use crate::rib::{Policy, Rib, RibConfig};
use crate::session::Listener;
use owner::{Owner, Request};

/// How many [`FibEvent`]s may wait for the consumer; each carries a whole batch.
const FIB_QUEUE: usize = 64;

/// The running speaker. Dropping it is [`Speaker::shutdown`] without waiting.
pub struct Speaker {
    requests: mpsc::UnboundedSender<Request>,
    /// Kept so the task is not detached silently; it ends on Shutdown.
    _task: JoinHandle<()>,
}

impl Speaker {
    /// Bind the listeners and start the owner task on the current tokio runtime
    /// (sockets, BFD's included, are opened in the network namespace of the threads
    /// that runtime runs on). Best-path changes come out of the returned receiver.
    pub async fn start(
        config: SpeakerConfig,
        policy: Box<dyn Policy>,
    ) -> Result<(Speaker, mpsc::Receiver<FibEvent>), SpeakerError> {
        if matches!(config.hold_time, 1 | 2) {
            return Err(SpeakerError::InvalidConfig(
                "hold time must be 0 or at least 3 s",
            ));
        }
        let mut listeners = Vec::new();
        for &addr in &config.listen {
            let l = Listener::bind(addr).map_err(|source| SpeakerError::Listen { addr, source })?;
            listeners.push(l);
        }
        let export_filters = Arc::default();
        let rib = Rib::new(
            RibConfig {
                local_asn: config.asn,
                router_id: config.router_id,
                cluster_id: config.cluster_id,
                multipath: config.multipath.max(1),
            },
            Box::new(WithExportFilters {
                inner: policy,
                filters: Arc::clone(&export_filters),
            }),
        );
        let (fib_tx, fib_rx) = mpsc::channel(FIB_QUEUE);
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let task = Owner::start(config, rib, listeners, fib_tx, requests_rx, export_filters);
        Ok((
            Speaker {
                requests,
                _task: task,
            },
            fib_rx,
        ))
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(make(tx))
            .map_err(|_| SpeakerError::Stopped)?;
        rx.await.map_err(|_| SpeakerError::Stopped)
    }

    /// Make the configured peers exactly `peers`: new ones start, missing ones stop
    /// (Cease) and their routes go, changed ones restart. An invalid list changes
    /// nothing; a peer that fails to register is reported and the rest still apply.
    pub async fn set_peers(&self, peers: Vec<PeerSpec>) -> Result<(), SpeakerError> {
        self.ask(|tx| Request::SetPeers(peers, tx)).await?
    }

    /// Make the prefixes we originate exactly `prefixes` (next hop self).
    pub async fn set_originated(&self, prefixes: Vec<IpNet>) -> Result<(), SpeakerError> {
        self.ask(|tx| Request::SetOriginated(prefixes, tx)).await
    }

    /// Every configured peer, by address; empty once stopped.
    pub async fn peers(&self) -> Vec<PeerStatus> {
        self.ask(Request::Peers).await.unwrap_or_default()
    }

    /// The Loc-RIB (or the entry for one prefix), by prefix; empty once stopped.
    pub async fn rib(&self, prefix: Option<IpNet>) -> Vec<RibEntry> {
        self.ask(|tx| Request::Rib(prefix, tx))
            .await
            .unwrap_or_default()
    }

    /// The address space peers whose [`PeerSpec::import`] protects may not announce
    /// into (see [`crate::policy::Protected`]). Applied at once to what they announced,
    /// no session restarts; set it before the peers so their first routes are judged
    /// by it.
    pub async fn set_protected(
        &self,
        protected: crate::policy::Protected,
    ) -> Result<(), SpeakerError> {
        self.ask(|tx| Request::SetProtected(protected, tx)).await
    }

    /// The routes the peers' import policies refused (of `peer`, or every peer), by
    /// peer and prefix; empty once stopped.
    pub async fn refused(&self, peer: Option<IpAddr>) -> Vec<RefusedRoute> {
        self.ask(|tx| Request::Refused(peer, tx))
            .await
            .unwrap_or_default()
    }

    /// Cease to every established peer, stop BFD, end the task. Routes in the kernel
    /// are the FIB sync's and stay.
    /// Takes `&self` so a shared (`Arc`) speaker can be stopped; afterwards every call
    /// fails with [`SpeakerError::Stopped`] or returns nothing.
    pub async fn shutdown(&self) {
        self.stop(false).await
    }

    /// End for a restart: every connection is closed without a NOTIFICATION, so peers
    /// that negotiated graceful restart keep our routes for our restart time (RFC 4724
    /// §4.2) and traffic keeps flowing until the next speaker sends End-of-RIB. BFD
    /// ends with AdminDown only once the peers have closed their side of the sessions
    /// (or after a few seconds): a peer whose BFD went down while the BGP session was
    /// still up would reset it and drop our routes (RFC 5882 §4.3). Peers without
    /// graceful restart drop our routes as on [`Speaker::shutdown`].
    pub async fn shutdown_for_restart(&self) {
        self.stop(true).await
    }

    /// Returns once the owner task has stopped every session (it replies last).
    async fn stop(&self, graceful: bool) {
        let _ = self
            .ask(|reply| Request::Shutdown { graceful, reply })
            .await;
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        // A no-op when already shut down: the task is gone and the send fails.
        let (reply, _) = oneshot::channel();
        let _ = self.requests.send(Request::Shutdown {
            graceful: false,
            reply,
        });
    }
}
