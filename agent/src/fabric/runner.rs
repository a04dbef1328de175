//! The fabric's loop: list `nodes/`, `node-records/` (the last records, which keep a
//! node whose lease expired programmed while it owns blocks) and `ipam/blocks/`, watch
//! them from the listed revision, keep the cluster view current, and reconcile at start, after a burst of
//! relevant changes (debounced), every `resync`, and again with backoff after a failure.
//! A watch that ends or reports compaction makes it list again; nothing is ever
//! flushed, on errors or on stop.
//!
//! A follower that must act on a change before the fabric routes it ([`ViewFollower`],
//! IPsec's steering) is waited for: a host-gw route to a new block of an encrypted
//! peer that existed before that block's steering would send the first packets to it
//! in clear. The fabric publishes the view, waits until the follower says it applied
//! that very view, and only then reconciles; while it does not, the fabric retries
//! with backoff and changes nothing.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use strait_api::NodeRecord;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, error, info, warn};

use super::desired::ClusterView;
use super::reconcile::reconcile;
use super::{FabricConfig, FabricError, parse_mac};
use crate::fastpath::FabricDevice;
use crate::hostnet::HostNet;
use crate::ipam::{Block, keys};
use crate::netlink::Netlink;
use crate::node::{last_records_prefix, node_of_key, node_of_last_record_key, nodes_prefix};
use crate::store::{EventKind, KeyValue, Store, WatchMessage};
use strait_api::routes::{RouteReport, Warning};

/// First retry delay after a failure; doubled per further failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a reconciliation waits for the follower to apply the view it is about to
/// route, before it gives up for now and retries.
const FOLLOWER_WAIT: Duration = Duration::from_secs(5);

/// The fabric of one node: call [`Fabric::run`] on a task; keep a [`FabricHandle`]
/// (from [`Fabric::handle`]) for reports.
/// `K` is the host's kernel: the real one, or the fake in unit tests.
pub struct Fabric<K: HostNet = Netlink> {
    store: Arc<dyn Store>,
    handle: FabricHandle<K>,
    /// Told the fabric device after every reconciliation (it attaches there).
    fast_path: Option<crate::fastpath::FastPath>,
}

/// A cheap, cloneable handle on a running [`Fabric`]: what the API serves
/// `netctl routes` from.
#[derive(Clone)]
pub struct FabricHandle<K: HostNet = Netlink> {
    netlink: K,
    cfg: Arc<FabricConfig>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// The cluster as last read from the store.
    view: Mutex<Arc<ClusterView>>,
    /// The same, for followers (IPsec) that act on every change; `None` until the
    /// first listing, so that nobody acts on an empty cluster that is merely unread.
    views: watch::Sender<Option<Arc<ClusterView>>>,
    /// The last view the follower applied, and whether there is one to wait for.
    applied: watch::Sender<Option<Arc<ClusterView>>>,
    followed: std::sync::atomic::AtomicBool,
    status: Mutex<Status>,
    /// The fabric device (vxlan) as last reconciled, for what attaches to it.
    device: watch::Sender<Option<DeviceRef>>,
}

/// The fabric device by name and index: an index that changes is a new device
/// (deleted and made again), whose attachments are gone with the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRef {
    pub name: String,
    pub ifindex: u32,
}

/// The fabric's view of the cluster for a follower that acts on every change before
/// the fabric routes it (IPsec: the steering of a peer's new block comes before the
/// route to it). Taken with [`FabricHandle::follow_view`]; from then on every
/// reconciliation waits for [`ViewFollower::applied`] with the view it published.
pub struct ViewFollower {
    /// The cluster as the fabric reads it (node records, blocks); `None` until the
    /// first listing, so that nobody acts on an empty cluster that is merely unread.
    pub views: watch::Receiver<Option<Arc<ClusterView>>>,
    pub ack: ViewAck,
}

/// How a [`ViewFollower`] tells the fabric what it applied.
pub struct ViewAck {
    shared: Arc<Shared>,
}

impl ViewAck {
    /// Says that `view` (as received from [`ViewFollower::views`]) is applied: the
    /// fabric may route it.
    pub fn applied(&self, view: &Arc<ClusterView>) {
        self.shared.applied.send_replace(Some(view.clone()));
    }
}

#[derive(Default, Clone)]
struct Status {
    reconciles: u64,
    /// Of those, the ones that failed.
    errors: u64,
    last_error: Option<String>,
}

impl<K: HostNet> Fabric<K> {
    /// A fabric for `cfg.node`, reading the store and programming the namespace of
    /// `netlink`.
    pub fn new(store: Arc<dyn Store>, netlink: K, cfg: FabricConfig) -> Self {
        Self {
            store,
            handle: FabricHandle {
                netlink,
                cfg: Arc::new(cfg),
                shared: Arc::default(),
            },
            fast_path: None,
        }
    }

    /// The fast path to attach to the fabric device (vxlan) once it exists.
    pub fn with_fast_path(mut self, fast_path: Option<crate::fastpath::FastPath>) -> Self {
        self.fast_path = fast_path;
        self
    }

    pub fn handle(&self) -> FabricHandle<K> {
        self.handle.clone()
    }

    /// What the kernel has beside what the fabric wants, read now (see
    /// [`FabricHandle::report`]).
    pub async fn report(&self) -> RouteReport {
        self.handle.report().await
    }

    /// Runs until `stop` turns true (or its sender is dropped). Leaves the kernel as it
    /// is on return: a restarted agent adopts it.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let cfg = self.handle.cfg.clone();
        info!(node = %cfg.node, mode = %cfg.mode, "fabric starting");
        let mut backoff = MIN_BACKOFF;
        let mut state = LoopState::default();
        loop {
            match self.session(&mut stop, &mut state).await {
                Ok(()) => break,
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "fabric: store session ended; listing again");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stopped(&mut stop) => break,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            // A session that got as far as a reconciliation resets the backoff.
            if state.reconciled_in_session {
                backoff = MIN_BACKOFF;
            }
        }
        info!(node = %cfg.node, "fabric stopped (kernel state left in place)");
    }

    /// One list-and-watch session. `Ok` means stop; `Err` means list again.
    async fn session(
        &self,
        stop: &mut watch::Receiver<bool>,
        state: &mut LoopState,
    ) -> Result<(), FabricError> {
        state.reconciled_in_session = false;
        let nodes_prefix = nodes_prefix();
        let last_prefix = last_records_prefix();
        let blocks_prefix = keys::blocks_prefix();
        let nodes = self.store.range(&nodes_prefix).await?;
        let last = self.store.range(&last_prefix).await?;
        let blocks = self.store.range(&blocks_prefix).await?;
        let mut view = ClusterView::default();
        for kv in &nodes.kvs {
            put_node(&mut view, kv);
        }
        for kv in &last.kvs {
            put_last_record(&mut view, kv);
        }
        for kv in &blocks.kvs {
            put_block(&mut view, kv);
        }
        let mut node_watch = self.store.watch(&nodes_prefix, nodes.revision + 1).await?;
        let mut last_watch = self.store.watch(&last_prefix, last.revision + 1).await?;
        let mut block_watch = self
            .store
            .watch(&blocks_prefix, blocks.revision + 1)
            .await?;
        debug!(
            nodes = view.nodes.len(),
            blocks = view.blocks.len(),
            "fabric: listed the cluster"
        );
        self.publish(&view);
        let mut due = Some(Instant::now());
        let cfg = self.handle.cfg.clone();
        loop {
            let deadline = due.unwrap_or_else(|| Instant::now() + cfg.resync);
            tokio::select! {
                _ = stopped(stop) => return Ok(()),
                message = node_watch.rx.recv() => {
                    let changed = watch_message(message, &nodes_prefix, |kind, kv| match kind {
                        EventKind::Put => put_node(&mut view, kv),
                        EventKind::Delete => delete_node(&mut view, &kv.key),
                    })?;
                    if changed {
                        due.get_or_insert_with(|| Instant::now() + cfg.debounce);
                    }
                }
                message = last_watch.rx.recv() => {
                    let changed = watch_message(message, &last_prefix, |kind, kv| match kind {
                        EventKind::Put => put_last_record(&mut view, kv),
                        EventKind::Delete => delete_last_record(&mut view, &kv.key),
                    })?;
                    if changed {
                        due.get_or_insert_with(|| Instant::now() + cfg.debounce);
                    }
                }
                message = block_watch.rx.recv() => {
                    let changed = watch_message(message, &blocks_prefix, |kind, kv| match kind {
                        EventKind::Put => put_block(&mut view, kv),
                        EventKind::Delete => delete_block(&mut view, &kv.key),
                    })?;
                    if changed {
                        due.get_or_insert_with(|| Instant::now() + cfg.debounce);
                    }
                }
                _ = sleep_until(deadline) => {
                    let published = self.publish(&view);
                    let applied = tokio::select! {
                        _ = stopped(stop) => return Ok(()),
                        applied = self.follower_applied(&published) => applied,
                    };
                    if !applied {
                        warn!(
                            waited = ?FOLLOWER_WAIT,
                            "fabric: IPsec has not steered the cluster's change yet; \
                             routing it waits, so that nothing leaves in clear"
                        );
                        let retry = state.retry;
                        state.retry = (state.retry * 2).min(MAX_BACKOFF);
                        due = Some(Instant::now() + retry);
                        continue;
                    }
                    due = match self.reconcile_once(state).await {
                        Ok(()) => {
                            state.retry = MIN_BACKOFF;
                            state.reconciled_in_session = true;
                            None
                        }
                        Err(()) => {
                            let retry = state.retry;
                            state.retry = (state.retry * 2).min(MAX_BACKOFF);
                            Some(Instant::now() + retry)
                        }
                    };
                }
            }
        }
    }

    fn publish(&self, view: &ClusterView) -> Arc<ClusterView> {
        let view = Arc::new(view.clone());
        *lock(&self.handle.shared.view) = view.clone();
        self.handle.shared.views.send_replace(Some(view.clone()));
        view
    }

    /// Whether the follower, if there is one, applied `published` (this very
    /// publication) within [`FOLLOWER_WAIT`].
    async fn follower_applied(&self, published: &Arc<ClusterView>) -> bool {
        let shared = &self.handle.shared;
        if !shared.followed.load(std::sync::atomic::Ordering::Acquire) {
            return true;
        }
        let mut applied = shared.applied.subscribe();
        let caught_up = applied.wait_for(|a| a.as_ref().is_some_and(|a| Arc::ptr_eq(a, published)));
        matches!(
            tokio::time::timeout(FOLLOWER_WAIT, caught_up).await,
            Ok(Ok(_))
        )
    }

    async fn reconcile_once(&self, state: &mut LoopState) -> Result<(), ()> {
        let h = &self.handle;
        let view = lock(&h.shared.view).clone();
        let started = Instant::now();
        let outcome = reconcile(&h.netlink, &h.cfg, &view, true).await;
        let mut status = lock(&h.shared.status);
        status.reconciles += 1;
        match outcome {
            Ok(done) => {
                status.last_error = None;
                drop(status);
                let device = done.report.device.as_ref().map(|d| DeviceRef {
                    name: d.name.clone(),
                    ifindex: d.ifindex,
                });
                h.shared.device.send_if_modified(|d| {
                    let changed = *d != device;
                    *d = device;
                    changed
                });
                if let Some(fp) = &self.fast_path {
                    // The device's own MAC is the source of what the programs send.
                    let dev = done.report.device.as_ref().and_then(|d| {
                        Some(FabricDevice {
                            name: d.name.clone(),
                            ifindex: d.ifindex,
                            mac: parse_mac(d.mac.as_deref()?)?,
                        })
                    });
                    if let Err(e) = fp.set_fabric(dev, &done.tunnels) {
                        warn!(error = %e, "fast path: fabric device");
                    }
                }
                if done.changes > 0 {
                    info!(changes = done.changes, took = ?started.elapsed(), "fabric reconciled");
                } else {
                    debug!(took = ?started.elapsed(), "fabric in sync");
                }
                if done.report.warnings != state.warnings {
                    for w in &done.report.warnings {
                        error!(warning = %w, "fabric cannot reach part of the cluster");
                    }
                    state.warnings = done.report.warnings;
                }
                Ok(())
            }
            Err(e) => {
                status.errors += 1;
                status.last_error = Some(e.to_string());
                drop(status);
                error!(error = %e, retry_in = ?state.retry, "fabric reconciliation failed");
                Err(())
            }
        }
    }
}

impl<K: HostNet> FabricHandle<K> {
    /// Reads the kernel now and compares it with what the fabric wants from the
    /// cluster as last seen; changes nothing. A kernel read that fails is reported in
    /// `last_error`.
    pub async fn report(&self) -> RouteReport {
        let view = lock(&self.shared.view).clone();
        let status = lock(&self.shared.status).clone();
        let mut report = match reconcile(&self.netlink, &self.cfg, &view, false).await {
            Ok(done) => done.report,
            Err(e) => RouteReport {
                node: self.cfg.node.clone(),
                mode: self.cfg.mode.to_string(),
                last_error: Some(format!("reading the kernel: {e}")),
                ..Default::default()
            },
        };
        report.reconciles = status.reconciles;
        report.reconcile_errors = status.errors;
        if report.last_error.is_none() {
            report.last_error = status.last_error;
        }
        report
    }

    /// The cluster as the fabric reads it (node records, blocks), now and after every
    /// change: what IPsec derives its peers and their prefixes from. From this call on,
    /// the fabric routes a change only once the follower applied it.
    pub fn follow_view(&self) -> ViewFollower {
        self.shared
            .followed
            .store(true, std::sync::atomic::Ordering::Release);
        ViewFollower {
            views: self.shared.views.subscribe(),
            ack: ViewAck {
                shared: self.shared.clone(),
            },
        }
    }

    /// The fabric device (vxlan) as of the last reconciliation, and every change:
    /// `None` until it exists, and with fabrics that have none.
    pub fn device(&self) -> watch::Receiver<Option<DeviceRef>> {
        self.shared.device.subscribe()
    }

    /// Reconciliations completed (successfully or not) since the fabric started.
    pub fn reconciles(&self) -> u64 {
        lock(&self.shared.status).reconciles
    }

    pub fn config(&self) -> &FabricConfig {
        &self.cfg
    }
}

struct LoopState {
    retry: Duration,
    reconciled_in_session: bool,
    /// Warnings last logged, so an unchanged condition is logged once, not every 30 s.
    warnings: Vec<Warning>,
}

impl Default for LoopState {
    fn default() -> Self {
        Self {
            retry: MIN_BACKOFF,
            reconciled_in_session: false,
            warnings: Vec::new(),
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these plain-data locks leaves the data usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender means nobody can stop us any more: treat it as a stop.
    let _ = stop.wait_for(|s| *s).await;
}

/// Applies one watch message to the view through `apply` (which says whether the
/// change matters to the fabric); an ended or compacted watch is an error: list again.
pub(super) fn watch_message(
    message: Option<WatchMessage>,
    prefix: &str,
    mut apply: impl FnMut(EventKind, &KeyValue) -> bool,
) -> Result<bool, FabricError> {
    match message {
        Some(WatchMessage::Events(events)) => {
            let mut changed = false;
            for e in &events {
                changed |= apply(e.kind, &e.kv);
            }
            Ok(changed)
        }
        Some(WatchMessage::Compacted { .. }) | None => {
            Err(FabricError::WatchEnded(prefix.to_string()))
        }
    }
}

/// Records a node; returns whether the view changed. An unreadable record is logged
/// and dropped (the node is then treated as absent).
pub(super) fn put_node(view: &mut ClusterView, kv: &KeyValue) -> bool {
    put_record(&mut view.nodes, node_of_key(&kv.key), kv)
}

pub(super) fn delete_node(view: &mut ClusterView, key: &str) -> bool {
    node_of_key(key).is_some_and(|name| view.nodes.remove(name).is_some())
}

/// Records a node's last record (`node-records/`); as [`put_node`].
pub(super) fn put_last_record(view: &mut ClusterView, kv: &KeyValue) -> bool {
    put_record(&mut view.last_records, node_of_last_record_key(&kv.key), kv)
}

pub(super) fn delete_last_record(view: &mut ClusterView, key: &str) -> bool {
    node_of_last_record_key(key).is_some_and(|name| view.last_records.remove(name).is_some())
}

fn put_record(
    records: &mut BTreeMap<String, NodeRecord>,
    name: Option<&str>,
    kv: &KeyValue,
) -> bool {
    let Some(name) = name else {
        return false;
    };
    match serde_json::from_slice::<NodeRecord>(&kv.value) {
        Ok(record) if record.name == name => {
            records.get(name) != Some(&record) && {
                records.insert(name.to_string(), record);
                true
            }
        }
        Ok(record) => {
            warn!(key = %kv.key, name = %record.name, "node record names another node; ignored");
            records.remove(name).is_some()
        }
        Err(e) => {
            warn!(key = %kv.key, error = %e, "unreadable node record; ignored");
            records.remove(name).is_some()
        }
    }
}

/// Records a block's affinity; returns whether it changed (allocations inside a block
/// change often and concern the fabric not at all).
pub(super) fn put_block(view: &mut ClusterView, kv: &KeyValue) -> bool {
    let Some(cidr) = keys::block_cidr(&kv.key) else {
        return false;
    };
    let block = serde_json::from_slice::<Block>(&kv.value)
        .map_err(|e| e.to_string())
        .and_then(|b| b.verify(&cidr).map(|()| b));
    match block {
        Ok(block) => {
            let lent = block.lent().map(|(ip, n)| (ip, n.to_string())).collect();
            let lent_changed = set_lent(view, cidr, lent);
            set_affinity(view, cidr, Some(block.affinity)) | lent_changed
        }
        Err(e) => {
            warn!(key = %kv.key, error = %e, "unreadable block; ignored");
            set_lent(view, cidr, BTreeMap::new()) | set_affinity(view, cidr, None)
        }
    }
}

pub(super) fn delete_block(view: &mut ClusterView, key: &str) -> bool {
    keys::block_cidr(key)
        .is_some_and(|cidr| set_lent(view, cidr, BTreeMap::new()) | set_affinity(view, cidr, None))
}

/// The block's borrowed addresses (empty: none, and the block is forgotten).
fn set_lent(view: &mut ClusterView, cidr: IpNet, lent: BTreeMap<IpAddr, String>) -> bool {
    if lent.is_empty() {
        view.lent.remove(&cidr).is_some()
    } else {
        view.lent.insert(cidr, lent.clone()) != Some(lent)
    }
}

/// `Some(affinity)` records the block, `None` forgets it.
fn set_affinity(view: &mut ClusterView, cidr: IpNet, affinity: Option<Option<String>>) -> bool {
    match affinity {
        Some(a) => view.blocks.insert(cidr, a.clone()) != Some(a),
        None => view.blocks.remove(&cidr).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: serde_json::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: serde_json::to_vec(&value).expect("json"),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: None,
        }
    }

    #[test]
    fn borrowed_addresses_of_a_block_are_tracked() {
        let mut view = ClusterView::default();
        let key = "/strait/v1/ipam/blocks/10.244.1.0-26";
        let block = |borrowed: serde_json::Value| {
            serde_json::json!({"cidr": "10.244.1.0/26", "affinity": "n1",
                "allocations": {"1": "h1", "2": "h2"}, "borrowed": borrowed,
                "next_ordinal": 0, "claimed": 0})
        };
        assert!(put_block(&mut view, &kv(key, block(serde_json::json!({})))));
        assert!(view.lent.is_empty());
        // n2 borrows .2; a stale entry for a free ordinal (.3) is not routed.
        assert!(put_block(
            &mut view,
            &kv(key, block(serde_json::json!({"2": "n2", "3": "n3"})))
        ));
        let cidr: IpNet = "10.244.1.0/26".parse().expect("net");
        let want: BTreeMap<IpAddr, String> =
            [("10.244.1.2".parse().expect("ip"), "n2".to_string())].into();
        assert_eq!(view.lent.get(&cidr), Some(&want));
        assert!(!put_block(
            &mut view,
            &kv(key, block(serde_json::json!({"2": "n2", "3": "n3"})))
        ));
        // Released: the host route goes.
        assert!(put_block(&mut view, &kv(key, block(serde_json::json!({})))));
        assert!(view.lent.is_empty());
        assert!(put_block(
            &mut view,
            &kv(key, block(serde_json::json!({"2": "n2"})))
        ));
        assert!(delete_block(&mut view, key));
        assert!(view.lent.is_empty() && view.blocks.is_empty());
    }

    #[test]
    fn only_affinity_and_borrowing_changes_of_blocks_matter() {
        let mut view = ClusterView::default();
        let key = "/strait/v1/ipam/blocks/10.244.1.0-26";
        let block = |allocations: serde_json::Value| {
            serde_json::json!({"cidr": "10.244.1.0/26", "affinity": "n1",
                "allocations": allocations, "next_ordinal": 0, "claimed": 0})
        };
        assert!(put_block(&mut view, &kv(key, block(serde_json::json!({})))));
        assert!(!put_block(
            &mut view,
            &kv(key, block(serde_json::json!({"1": "h"})))
        ));
        assert_eq!(
            view.blocks.get(&"10.244.1.0/26".parse().expect("net")),
            Some(&Some("n1".to_string()))
        );
        // A block under another block's key is refused.
        let other = "/strait/v1/ipam/blocks/10.244.2.0-26";
        assert!(!put_block(
            &mut view,
            &kv(other, block(serde_json::json!({})))
        ));
        assert!(delete_block(&mut view, key));
        assert!(view.blocks.is_empty());
    }

    #[test]
    fn node_records_must_name_their_key() {
        let mut view = ClusterView::default();
        let record = |name: &str| {
            serde_json::json!({"name": name, "underlay_v4": "10.0.0.2", "underlay_v6": null,
                "fabric": "vxlan", "agent_version": "0.1.0", "started": 1})
        };
        assert!(put_node(
            &mut view,
            &kv("/strait/v1/nodes/n2", record("n2"))
        ));
        assert!(!put_node(
            &mut view,
            &kv("/strait/v1/nodes/n2", record("n2"))
        ));
        assert!(put_node(
            &mut view,
            &kv("/strait/v1/nodes/n2", record("n3"))
        ));
        assert!(view.nodes.is_empty());
        assert!(!put_node(
            &mut view,
            &kv("/strait/v1/nodes/n4", serde_json::json!("garbage"))
        ));
        assert!(put_node(
            &mut view,
            &kv("/strait/v1/nodes/n4", record("n4"))
        ));
        assert!(delete_node(&mut view, "/strait/v1/nodes/n4"));
        // Last records are kept apart from the live ones, by the same rules.
        let last = "/strait/v1/node-records/n5";
        assert!(put_last_record(&mut view, &kv(last, record("n5"))));
        assert!(view.nodes.is_empty() && view.last_records.contains_key("n5"));
        assert!(!put_node(&mut view, &kv(last, record("n5"))));
        assert!(!delete_node(&mut view, last));
        assert!(delete_last_record(&mut view, last));
        assert!(view.last_records.is_empty());
    }
}
