//! Attachments: the lifecycle of one container interface as CNI drives it.
//!
//! This module orchestrates the other owners — [`crate::ipam`] for addresses, the
//! host's kernel through [`HostNet`] for the veth, [`records`] for the endpoint
//! record — and owns the rules that tie them together:
//!
//! * ADD allocates and records in one store transaction (the endpoint record rides in
//!   IPAM's), then plumbs; a failed plumbing releases the addresses and deletes the
//!   record in one transaction again, so a failed ADD leaves no address reserved, no
//!   record and no interface behind ([`add`]).
//! * DEL is best effort and always releases the addresses. It releases the IPs and
//!   the record before answering, and deletes the veth in the background: deleting a
//!   veth costs 20–35 ms of kernel time (RCU) that the runtime need not wait for. A
//!   later ADD of the same attachment waits for that deletion ([`del`], [`reaper`]).
//!   With the store unreachable, DEL deletes the veth, queues the release on disk and
//!   succeeds; the queue is retried until the store is back.
//! * A DEL the plugin queued on disk while the agent was down is applied at start,
//!   unless it is older than the attachment it names ([`pending`]).
//! * A record whose interface is gone while its container's namespace is still there
//!   (a crash between the record and the answer) is released at start, and a retried
//!   ADD of it starts afresh instead of answering "already exists" ([`reconcile`]).
//! * Operations on one attachment are serialised; different attachments run in
//!   parallel ([`locks`]).
//! * Links named `strait*` with no endpoint record and no operation in flight are
//!   stale (a crash mid-ADD, a killed agent) and are swept at start and periodically
//!   ([`sweep`]) — unless their alias carries another agent's owner mark ([`owner`]).
//!
//! An endpoint's labels change after ADD through [`labels`] (`netctl endpoint label`).
//!
//! One file per verb (`add`, `del`, `check`, `status`, `gc`) and per housekeeping job
//! (`leaks`: the operator's IPAM check and release and the agent's leak GC; `sweep`;
//! `pending`; `reaper`). Whoever else must follow endpoints (the fast path, later
//! policy) subscribes to [`events`] rather than being called from here.

mod add;
mod check;
mod del;
pub mod enforcement;
mod error;
pub mod events;
mod gc;
pub mod handover;
pub mod hostports;
pub mod labels;
mod leaks;
mod locks;
pub mod owner;
mod pending;
mod reaper;
mod reconcile;
pub mod records;
mod status;
mod sweep;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strait_api::Endpoint;

use crate::hostnet::HostNet;
use crate::ipam::Ipam;
use crate::netlink::Netlink;
use crate::store::Store;
use events::{EndpointEvent, EndpointSubscriber};
use locks::KeyedLocks;
use records::EndpointRecords;

pub use error::AttachError;

/// Static facts the attacher needs from the daemon.
#[derive(Debug, Clone)]
pub struct AttacherConfig {
    pub node: String,
    /// The containers' MTU (before IPsec's share, below).
    pub mtu: u32,
    /// How much less new containers get while IPsec encrypts (ESP's overhead); set
    /// by the IPsec engine as the cluster's mode changes.
    pub mtu_less: Arc<std::sync::atomic::AtomicU32>,
    pub gc_grace: Duration,
    /// This agent's owner mark ([`owner::owner_mark_of`]), written on every host end
    /// it makes; its sweep removes no link marked by another.
    pub owner: String,
    /// The state dir whose pending-release queue takes the DELs made while the store
    /// is unreachable; `None` (tests of other owners) fails such a DEL instead.
    pub state_dir: Option<PathBuf>,
}

/// Runs ADD/DEL/CHECK/STATUS/GC for this node, on the host kernel `K` (the real one
/// in the agent, [`crate::hostnet::fake::FakeHost`] in unit tests).
pub struct Attacher<K: HostNet = Netlink> {
    /// Itself, for the tasks it starts (the queue's retry).
    me: Weak<Self>,
    cfg: AttacherConfig,
    store: Arc<dyn Store>,
    ipam: Arc<Ipam>,
    host: K,
    records: EndpointRecords,
    locks: KeyedLocks,
    starting: AtomicBool,
    /// Host-side links being created right now (not yet recorded): the sweep skips them.
    creating: Mutex<HashSet<String>>,
    /// Host-side links queued for deletion in the background; an ADD of the same
    /// name waits for its entry to be done.
    deleting: reaper::Deleting,
    /// Queue of the link reaper task (see [`reaper`]).
    reaper: tokio::sync::mpsc::UnboundedSender<String>,
    /// Interface setups in progress at once; see [`add::plumbing_slots`].
    plumbing: tokio::sync::Semaphore,
    /// Who follows endpoints as they come and go.
    subscribers: RwLock<Vec<Arc<dyn EndpointSubscriber>>>,
    /// A task retries the pending-release queue (see [`pending`]).
    draining: AtomicBool,
    /// Policy, which ADD puts in place before it answers ([`enforcement`]).
    enforcement: std::sync::OnceLock<Arc<dyn enforcement::Enforcement>>,
    /// Held by an ADD with host ports from their check until its record is written
    /// ([`hostports`]).
    host_port_lock: tokio::sync::Mutex<()>,
    /// Where a pod's labels come from at ADD (the Kubernetes integration).
    pod_source: std::sync::OnceLock<Arc<dyn labels::PodSource>>,
}

impl AttacherConfig {
    /// The MTU a new container gets now: the fabric's, less what encryption costs.
    pub fn container_mtu(&self) -> u32 {
        let less = self.mtu_less.load(std::sync::atomic::Ordering::Relaxed);
        self.mtu.saturating_sub(less).max(576)
    }
}

impl<K: HostNet> Attacher<K> {
    /// The names of strait's endpoint links in the kernel now (leak check, start-up
    /// reconcile).
    async fn endpoint_link_names(&self) -> Result<HashSet<String>, AttachError> {
        Ok(self
            .host
            .endpoint_links()
            .await?
            .into_iter()
            .map(|l| l.name)
            .collect())
    }

    /// Must be called inside a tokio runtime: it starts the link reaper.
    pub fn new(cfg: AttacherConfig, store: Arc<dyn Store>, ipam: Arc<Ipam>, host: K) -> Arc<Self> {
        let records = EndpointRecords::new(store.clone(), cfg.node.clone());
        let deleting = reaper::Deleting::default();
        let (reaper, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(reaper::reap_links(host.clone(), queue, deleting.clone()));
        Arc::new_cyclic(|me| Self {
            me: me.clone(),
            cfg,
            store,
            ipam,
            host,
            records,
            locks: KeyedLocks::default(),
            starting: AtomicBool::new(true),
            creating: Mutex::default(),
            deleting,
            reaper,
            plumbing: tokio::sync::Semaphore::new(add::plumbing_slots()),
            subscribers: RwLock::default(),
            draining: AtomicBool::new(false),
            enforcement: std::sync::OnceLock::new(),
            host_port_lock: tokio::sync::Mutex::new(()),
            pod_source: std::sync::OnceLock::new(),
        })
    }

    /// From now on `subscriber` hears of every endpoint attached or detached. Endpoints
    /// that exist already are the subscriber's to adopt ([`Attacher::endpoints`]).
    pub fn subscribe(&self, subscriber: Arc<dyn EndpointSubscriber>) {
        self.subscribers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(subscriber);
    }

    fn publish(&self, event: &EndpointEvent<'_>) {
        for s in self
            .subscribers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            s.endpoint_event(event);
        }
    }

    /// From now on every ADD puts policy in place before it answers. Set once, at
    /// start, before the attacher is ready.
    pub fn set_enforcement(&self, enforcement: Arc<dyn enforcement::Enforcement>) {
        let _ = self.enforcement.set(enforcement);
    }

    /// From now on an ADD naming a pod takes that pod's labels from `source`. Set
    /// once, at start, before the attacher is ready.
    pub fn set_pod_source(&self, source: Arc<dyn labels::PodSource>) {
        let _ = self.pod_source.set(source);
    }

    pub fn config(&self) -> &AttacherConfig {
        &self.cfg
    }

    pub fn is_starting(&self) -> bool {
        self.starting.load(Ordering::Acquire)
    }

    /// Called once start-up work (sweep, pending releases) is done.
    pub fn set_ready(&self) {
        self.starting.store(false, Ordering::Release);
    }

    pub fn ipam(&self) -> &Arc<Ipam> {
        &self.ipam
    }

    /// Every endpoint recorded for this node.
    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, AttachError> {
        Ok(self.records.list().await?)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether host link `name` is being created or deleted right now.
fn in_flight<K: HostNet>(a: &Attacher<K>, name: &str) -> bool {
    lock(&a.creating).contains(name) || a.deleting.contains(name)
}
