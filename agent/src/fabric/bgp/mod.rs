//! The BGP fabric (`--fabric bgp`, docs/bgp.md): this node runs strait-bgp's speaker,
//! announces its own IPAM blocks, and installs what it learns into the kernel.
//!
//! Over 600 lines: most of it is the fabric's one event loop (store watch, speaker
//! reconfiguration, FIB sync), which reads best in one place; its helpers live in
//! `peering`, `fib`, `status` and `external`.
//!
//! Two loops, so a slow store never holds up the kernel and the other way round:
//!
//! * the **peering loop** ([`BgpFabric::run`]) lists and watches `nodes/`,
//!   `ipam/blocks/` and `bgp/peers/` (the watch-and-debounce pattern of the other
//!   fabrics), derives the peers ([`peering`]) and the originated prefixes (the blocks
//!   affine to this node) and hands both to the speaker, which adds, removes and
//!   restarts sessions to match;
//! * the **FIB loop** consumes the speaker's [`FibEvent`]s with [`fib::FibSync`], which
//!   owns every proto-83 gateway route in this mode, and repairs the kernel every
//!   resync period.
//!
//! Start order matters for a restart without loss: FIB sync adopts the kernel's routes
//! first (nothing flushed), the own blocks are known before the speaker starts (a
//! block learned back from a peer never replaces its blackhole), and the speaker gets
//! its prefixes before its peers (End-of-RIB follows our table). On stop nothing is
//! withdrawn: the process ends, the peers see the connection drop without a
//! NOTIFICATION and, with graceful restart (RFC 4724), keep our routes until we are
//! back.
//!
//! The fabric's ordinary reconcile ([`super::Fabric`]) still runs in this mode: it
//! keeps the blackholes of the own blocks and removes an old `strait.vxlan`.

pub mod external;
pub mod fib;
pub mod peering;
pub mod status;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ipnet::IpNet;
use strait_api::bgp::{
    BgpPeerStatus, BgpRefusedRoute, BgpRibEntry, ExternalPeer, NodeBgp, PeerKind,
};
use strait_api::routes::Warning;
use strait_bgp::policy::{ImportPolicy, PrefixFilter, PrefixRule, Protected};
use strait_bgp::rib::AcceptAll;
use strait_bgp::speaker::{BfdParams, FibEvent, PeerSpec, Speaker, SpeakerConfig, SpeakerError};
use tokio::sync::{Mutex as AsyncMutex, mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, error, info, warn};

use super::FabricError;
use super::desired::ClusterView;
use super::runner::{delete_block, delete_node, lock, put_block, put_node, stopped, watch_message};
use crate::ipam::keys;
use crate::netlink::Netlink;
use crate::node::{Underlay, nodes_prefix};
use crate::store::{EventKind, KeyValue, PREFIX, Store};
use fib::{FibSync, LocalPrefixes};
use peering::{Peer, PeeringInput};

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `bgp/peers/`: the external peers (docs/bgp.md).
pub fn peers_prefix() -> String {
    format!("{PREFIX}bgp/peers/")
}

/// How the BGP fabric of this node runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpFabricConfig {
    pub node: String,
    /// What this node publishes in its record (AS, role, cluster and router ID, port).
    pub own: NodeBgp,
    pub underlay: Underlay,
    /// BFD on node-to-node sessions.
    pub bfd: bool,
    /// Full mesh among nodes when there is no route reflector (`--bgp-node-mesh`).
    pub node_mesh: bool,
    /// Restart time announced (RFC 4724); `None`: no graceful restart.
    pub graceful_restart: Option<Duration>,
    /// How often FIB sync compares with the kernel and repairs it (default 30 s).
    pub resync: Duration,
    /// How long store changes are collected before the speaker is reconfigured.
    pub debounce: Duration,
    /// This node's IPAM pools: external peers may not announce into them (docs/bgp.md
    /// "Import policy").
    pub pools: Vec<IpNet>,
}

impl BgpFabricConfig {
    pub fn new(node: impl Into<String>, own: NodeBgp, underlay: Underlay) -> Self {
        Self {
            node: node.into(),
            own,
            underlay,
            bfd: true,
            node_mesh: true,
            graceful_restart: Some(Duration::from_secs(120)),
            resync: Duration::from_secs(30),
            debounce: Duration::from_millis(75),
            pools: Vec::new(),
        }
    }

    /// The speaker's configuration: listening on the underlay addresses (all
    /// addresses when there is none), next hop self from them.
    pub fn speaker(&self) -> SpeakerConfig {
        let mut cfg = SpeakerConfig::new(self.own.asn, self.own.router_id);
        cfg.cluster_id = self.own.cluster_id;
        let mut listen: Vec<SocketAddr> = [
            self.underlay.v4.map(IpAddr::V4),
            self.underlay.v6.map(IpAddr::V6),
        ]
        .into_iter()
        .flatten()
        .map(|ip| SocketAddr::new(ip, self.own.port))
        .collect();
        if listen.is_empty() {
            listen.push(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), self.own.port));
        }
        cfg.listen = listen;
        cfg.graceful_restart = self.graceful_restart;
        cfg.local_v4 = self.underlay.v4;
        cfg.local_v6 = self.underlay.v6;
        cfg
    }
}

/// A stored prefix list in the speaker's terms.
fn prefix_filter(rules: &[strait_api::bgp::PrefixRule]) -> PrefixFilter {
    PrefixFilter::new(
        rules
            .iter()
            .map(|r| PrefixRule {
                permit: r.permit,
                prefix: r.prefix,
                ge: r.ge,
                le: r.le,
            })
            .collect(),
    )
}

/// The speaker's peer specification for a derived peer. An external peer protects
/// the cluster's address space ([`protected`]) but where its allow list says so.
fn peer_spec(peer: &Peer) -> PeerSpec {
    let o = &peer.options;
    let mut spec = PeerSpec::new(peer.address, peer.asn);
    spec.rr_client = peer.rr_client;
    spec.port = peer.port;
    spec.local = peer.local;
    spec.md5_key = peer.md5_key.as_ref().map(|k| k.as_bytes().to_vec());
    spec.bfd = peer.bfd.then(|| {
        let mut b = BfdParams::default();
        if let Some(ms) = o.bfd_interval_ms {
            b.desired_min_tx = Duration::from_millis(ms.into());
            b.required_min_rx = b.desired_min_tx;
        }
        if let Some(m) = o.bfd_multiplier {
            b.detect_mult = m;
        }
        b
    });
    spec.description = format!("{} {}", peer.kind, peer.name);
    spec.passive = o.passive;
    spec.max_prefixes = o.max_prefixes.map(|n| n as usize);
    spec.hold_time = o.hold_time;
    spec.connect_retry = o.connect_retry.map(|s| Duration::from_secs(s.into()));
    spec.graceful_restart = o.graceful_restart;
    spec.export = prefix_filter(&o.export);
    spec.import = ImportPolicy {
        protect: peer.kind == PeerKind::External,
        allow: o.allow.clone(),
        filter: prefix_filter(&o.import),
    };
    spec
}

/// What external peers may not announce into (docs/bgp.md "Import policy"): this
/// node's pools and every block of the cluster outside them (a node with other pools),
/// where only other nodes' prefixes are expected from outside: their blocks and the
/// host routes of addresses they borrowed, as a ToR relays them. Anything else there
/// (a /29 of a block, a block of this node, an unallocated part of a pool) would take
/// traffic from the fabric.
fn protected(node: &str, pools: &[IpNet], view: &ClusterView) -> Protected {
    let mut prefixes: Vec<IpNet> = pools.iter().map(IpNet::trunc).collect();
    prefixes.extend(
        view.blocks
            .keys()
            .filter(|b| !pools.iter().any(|p| p.contains(*b)))
            .copied(),
    );
    prefixes.sort();
    prefixes.dedup();
    let mut expected: std::collections::HashSet<IpNet> = view
        .blocks
        .iter()
        .filter(|(_, affinity)| affinity.as_deref().is_some_and(|a| a != node))
        .map(|(b, _)| *b)
        .collect();
    for lent in view.lent.values() {
        expected.extend(
            lent.iter()
                .filter(|(_, holder)| holder.as_str() != node)
                .map(|(ip, _)| IpNet::from(*ip)),
        );
    }
    Protected { prefixes, expected }
}

/// This node's prefixes: what it originates (its blocks, and a host route for each
/// address it borrowed from another node's block, more specific than that block) and
/// the host routes of its blocks' addresses other nodes borrowed (installed from
/// their holders' announcements, above the block's blackhole).
fn local_prefixes(node: &str, view: &ClusterView) -> LocalPrefixes {
    let mut local = LocalPrefixes::default();
    for (cidr, affinity) in &view.blocks {
        if affinity.as_deref() == Some(node) {
            local.own.push(*cidr);
        }
    }
    for (cidr, lent) in &view.lent {
        let lender = view.blocks.get(cidr).and_then(Option::as_deref);
        for (ip, holder) in lent {
            if holder == node {
                local.own.push(IpNet::from(*ip));
            } else if lender == Some(node) {
                local.lent.push(IpNet::from(*ip));
            }
        }
    }
    local
}

/// Reads `bgp/peers/<name>`; an unreadable one is logged and treated as absent.
fn put_external(peers: &mut BTreeMap<String, ExternalPeer>, kv: &KeyValue) -> bool {
    let Some(name) = kv
        .key
        .strip_prefix(&peers_prefix())
        .filter(|n| !n.is_empty())
    else {
        return false;
    };
    match serde_json::from_slice::<ExternalPeer>(&kv.value) {
        Ok(peer) => peers.insert(name.to_string(), peer.clone()) != Some(peer),
        Err(e) => {
            warn!(key = %kv.key, error = %e, "unreadable external BGP peer; ignored");
            peers.remove(name).is_some()
        }
    }
}

fn delete_external(peers: &mut BTreeMap<String, ExternalPeer>, key: &str) -> bool {
    key.strip_prefix(&peers_prefix())
        .is_some_and(|name| peers.remove(name).is_some())
}

/// The BGP fabric of one node: call [`BgpFabric::run`] on a task; keep a
/// [`BgpHandle`] for the API.
pub struct BgpFabric {
    store: Arc<dyn Store>,
    netlink: Netlink,
    cfg: Arc<BgpFabricConfig>,
    shared: Arc<Shared>,
}

/// What the API reads: the speaker (once started) and the peering it was given.
#[derive(Clone)]
pub struct BgpHandle {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    speaker: OnceLock<Arc<Speaker>>,
    /// FIB sync, once the fabric has adopted the kernel's routes: what it installed is
    /// what `netctl bgp rib` flags `F`.
    fib: OnceLock<Arc<AsyncMutex<FibSync>>>,
    peers: Mutex<Vec<Peer>>,
    warnings: Mutex<Vec<Warning>>,
    /// Why the last attempt to configure the speaker failed (a port already bound, no
    /// capability to bind 179), until one succeeds: readiness reports it, so a node
    /// whose speaker cannot listen is not called ready.
    failure: Mutex<Option<String>>,
}

/// Errors of the BGP fabric's start.
#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    #[error("starting the BGP speaker: {0}")]
    Speaker(#[from] SpeakerError),
    #[error(transparent)]
    Fabric(#[from] FabricError),
}

impl BgpHandle {
    /// Every configured peer's session, or why there is none yet.
    pub async fn peers(&self) -> Result<Vec<BgpPeerStatus>, String> {
        let speaker = self.speaker()?;
        let status = speaker.peers().await;
        let peers = lock(&self.shared.peers).clone();
        Ok(status::peer_rows(status, &peers))
    }

    /// The Loc-RIB, every path (or those of `prefix`); `fib` says whether FIB sync
    /// installed the path's next hop, not only whether the RIB chose it.
    pub async fn rib(&self, prefix: Option<IpNet>) -> Result<Vec<BgpRibEntry>, String> {
        let speaker = self.speaker()?;
        let entries = speaker.rib(prefix).await;
        let fib = match self.shared.fib.get() {
            Some(f) => Some(f.lock().await),
            None => None,
        };
        Ok(status::rib_rows(entries, |prefix, gateway| {
            fib.as_ref()
                .is_some_and(|f| f.table().installed_via(prefix, gateway))
        }))
    }

    /// The routes the peers' import policies refused, by prefix.
    pub async fn refused(&self) -> Result<Vec<BgpRefusedRoute>, String> {
        let speaker = self.speaker()?;
        let refused = speaker.refused(None).await;
        let peers = lock(&self.shared.peers).clone();
        Ok(status::refused_rows(refused, &peers))
    }

    /// The agent is stopping to be restarted: close every session without a
    /// NOTIFICATION and, once the peers have closed their side, end BFD with
    /// AdminDown, so peers keep this node's routes for the graceful-restart time (RFC
    /// 4724) until the next agent is back (BFD first would make FRR reset the session
    /// and drop them). A no-op when the speaker never started.
    pub async fn shutdown_for_restart(&self) {
        if let Ok(speaker) = self.speaker() {
            speaker.shutdown_for_restart().await;
        }
    }

    /// Why some node or peer has no session (see [`peering`]).
    pub fn warnings(&self) -> Vec<Warning> {
        lock(&self.shared.warnings).clone()
    }

    /// Why the speaker could not be configured (or started) on the last attempt;
    /// `None` once an attempt succeeds. The fabric keeps retrying meanwhile.
    pub fn failure(&self) -> Option<String> {
        lock(&self.shared.failure).clone()
    }

    fn speaker(&self) -> Result<Arc<Speaker>, String> {
        self.shared.speaker.get().cloned().ok_or_else(|| {
            "the BGP speaker has not started yet (waiting for the store or for its \
             listening addresses)"
                .to_string()
        })
    }
}

/// The store inputs of the peering.
#[derive(Default)]
struct Inputs {
    view: ClusterView,
    external: BTreeMap<String, ExternalPeer>,
}

impl BgpFabric {
    pub fn new(store: Arc<dyn Store>, netlink: Netlink, cfg: BgpFabricConfig) -> Self {
        Self {
            store,
            netlink,
            cfg: Arc::new(cfg),
            shared: Arc::default(),
        }
    }

    pub fn handle(&self) -> BgpHandle {
        BgpHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs until `stop` turns true. Leaves the kernel's routes and the peers' view of
    /// this node as they are (see the module docs).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        info!(node = %self.cfg.node, asn = self.cfg.own.asn, role = %self.cfg.own.role,
              router_id = %self.cfg.own.router_id, "BGP fabric starting");
        let mut backoff = MIN_BACKOFF;
        // FIB sync adopts the kernel's routes before anything can change them.
        let fib = loop {
            match FibSync::start(self.netlink.clone()).await {
                Ok(fib) => break fib,
                Err(e) => {
                    error!(error = %e, retry_in = ?backoff, "FIB sync cannot read the kernel's routes");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stopped(&mut stop) => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let fib = Arc::new(AsyncMutex::new(fib));
        let _ = self.shared.fib.set(fib.clone());
        let mut run = Running {
            fib: Some(fib),
            local: watch::channel(LocalPrefixes::default()).0,
            fib_task: None,
        };
        let mut backoff = MIN_BACKOFF;
        loop {
            match self.session(&mut stop, &mut run).await {
                Ok(()) => break,
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "BGP fabric: store session ended; listing again");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stopped(&mut stop) => break,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if let Some(task) = run.fib_task.take() {
            task.abort();
        }
        info!(node = %self.cfg.node, "BGP fabric stopped (routes and sessions' routes left in place)");
    }

    /// One list-and-watch session of the store. `Ok` means stop.
    async fn session(
        &self,
        stop: &mut watch::Receiver<bool>,
        run: &mut Running,
    ) -> Result<(), BgpError> {
        let nodes_prefix = nodes_prefix();
        let blocks_prefix = keys::blocks_prefix();
        let peers_prefix = peers_prefix();
        let nodes = self
            .store
            .range(&nodes_prefix)
            .await
            .map_err(FabricError::from)?;
        let blocks = self
            .store
            .range(&blocks_prefix)
            .await
            .map_err(FabricError::from)?;
        let external = self
            .store
            .range(&peers_prefix)
            .await
            .map_err(FabricError::from)?;
        let mut inputs = Inputs::default();
        for kv in &nodes.kvs {
            put_node(&mut inputs.view, kv);
        }
        for kv in &blocks.kvs {
            put_block(&mut inputs.view, kv);
        }
        for kv in &external.kvs {
            put_external(&mut inputs.external, kv);
        }
        let watch_from = |r: &crate::store::RangeResponse| r.revision + 1;
        let mut node_watch = self
            .store
            .watch(&nodes_prefix, watch_from(&nodes))
            .await
            .map_err(FabricError::from)?;
        let mut block_watch = self
            .store
            .watch(&blocks_prefix, watch_from(&blocks))
            .await
            .map_err(FabricError::from)?;
        let mut peer_watch = self
            .store
            .watch(&peers_prefix, watch_from(&external))
            .await
            .map_err(FabricError::from)?;
        let mut due = Some(Instant::now());
        let mut retry = MIN_BACKOFF;
        loop {
            let deadline = due.unwrap_or_else(|| Instant::now() + self.cfg.resync);
            tokio::select! {
                _ = stopped(stop) => return Ok(()),
                message = node_watch.rx.recv() => {
                    let changed = watch_message(message, &nodes_prefix, |kind, kv| match kind {
                        EventKind::Put => put_node(&mut inputs.view, kv),
                        EventKind::Delete => delete_node(&mut inputs.view, &kv.key),
                    })?;
                    if changed {
                        due.get_or_insert_with(|| Instant::now() + self.cfg.debounce);
                    }
                }
                message = block_watch.rx.recv() => {
                    let changed = watch_message(message, &blocks_prefix, |kind, kv| match kind {
                        EventKind::Put => put_block(&mut inputs.view, kv),
                        EventKind::Delete => delete_block(&mut inputs.view, &kv.key),
                    })?;
                    if changed {
                        due.get_or_insert_with(|| Instant::now() + self.cfg.debounce);
                    }
                }
                message = peer_watch.rx.recv() => {
                    let changed = watch_message(message, &peers_prefix, |kind, kv| match kind {
                        EventKind::Put => put_external(&mut inputs.external, kv),
                        EventKind::Delete => delete_external(&mut inputs.external, &kv.key),
                    })?;
                    if changed {
                        due.get_or_insert_with(|| Instant::now() + self.cfg.debounce);
                    }
                }
                _ = sleep_until(deadline) => {
                    due = match self.configure(&inputs, run).await {
                        Ok(()) => {
                            *lock(&self.shared.failure) = None;
                            retry = MIN_BACKOFF;
                            None
                        }
                        Err(e) => {
                            error!(error = %e, retry_in = ?retry, "BGP fabric: configuring the speaker failed");
                            *lock(&self.shared.failure) =
                                Some(format!("BGP fabric: configuring the speaker failed: {e}"));
                            let at = Instant::now() + retry;
                            retry = (retry * 2).min(MAX_BACKOFF);
                            Some(at)
                        }
                    };
                }
            }
        }
    }

    /// Hands the current peering and prefixes to the speaker, starting it (and the FIB
    /// loop) the first time.
    async fn configure(&self, inputs: &Inputs, run: &mut Running) -> Result<(), BgpError> {
        let local = local_prefixes(&self.cfg.node, &inputs.view);
        let originated = local.own.clone();
        run.local.send_replace(local);
        let (peers, warnings) = peering::peers(&PeeringInput {
            node: &self.cfg.node,
            own: &self.cfg.own,
            underlay: &self.cfg.underlay,
            bfd: self.cfg.bfd,
            node_mesh: self.cfg.node_mesh,
            nodes: &inputs.view.nodes,
            external: &inputs.external,
        });
        if *lock(&self.shared.warnings) != warnings {
            for w in &warnings {
                warn!(warning = %w, "BGP fabric: no session");
            }
            *lock(&self.shared.warnings) = warnings;
        }
        let speaker = match self.shared.speaker.get() {
            Some(s) => s.clone(),
            None => {
                let mut speaker_cfg = self.cfg.speaker();
                // Routes a previous agent left in the kernel (FIB sync adopted them):
                // this speaker restarted (RFC 4724 R bit until it converged).
                speaker_cfg.restarted = match &run.fib {
                    Some(f) => f.lock().await.table().installed_len() > 0,
                    None => false,
                };
                let (speaker, events) = Speaker::start(speaker_cfg, Box::new(AcceptAll)).await?;
                let speaker = Arc::new(speaker);
                let _ = self.shared.speaker.set(speaker.clone());
                if let Some(fib) = run.fib.take() {
                    run.fib_task = Some(tokio::spawn(fib_loop(
                        fib,
                        events,
                        run.local.subscribe(),
                        self.cfg.resync,
                    )));
                }
                info!(listen = ?self.cfg.speaker().listen, "BGP speaker started");
                speaker
            }
        };
        // Prefixes before peers: a restarted speaker's End-of-RIB follows its table.
        speaker.set_originated(originated.clone()).await?;
        // The protected address space before the peers: their first routes are judged
        // by it. It changes with every block, without restarting a session.
        speaker
            .set_protected(protected(&self.cfg.node, &self.cfg.pools, &inputs.view))
            .await?;
        speaker
            .set_peers(peers.iter().map(peer_spec).collect())
            .await?;
        debug!(
            peers = peers.len(),
            originated = originated.len(),
            "BGP speaker configured"
        );
        *lock(&self.shared.peers) = peers;
        Ok(())
    }
}

/// What the peering loop keeps across store sessions.
struct Running {
    /// FIB sync until the FIB loop takes it.
    fib: Option<Arc<AsyncMutex<FibSync>>>,
    /// This node's prefixes, for FIB sync (never installed as learned routes, but
    /// for the addresses other nodes borrowed).
    local: watch::Sender<LocalPrefixes>,
    fib_task: Option<tokio::task::JoinHandle<()>>,
}

/// The FIB loop: the speaker's changes into the kernel, convergence purges, and a
/// periodic repair.
async fn fib_loop(
    fib: Arc<AsyncMutex<FibSync>>,
    mut events: mpsc::Receiver<FibEvent>,
    mut local: watch::Receiver<LocalPrefixes>,
    resync: Duration,
) {
    let initial = local.borrow_and_update().clone();
    fib.lock().await.set_local(&initial).await;
    let mut next_resync = Instant::now() + resync;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(FibEvent::Changes(changes)) => {
                    let n = changes.len();
                    let started = Instant::now();
                    let done = fib.lock().await.changes(changes).await;
                    debug!(changes = n, replaced = done.replaced, deleted = done.deleted,
                           failed = done.failed.len(), took = ?started.elapsed(), "FIB sync");
                }
                Some(FibEvent::Converged) => {
                    let mut fib = fib.lock().await;
                    let done = fib.converged().await;
                    info!(stale_deleted = done.deleted, installed = fib.table().installed_len(),
                          "BGP converged; stale routes purged");
                }
                None => {
                    info!("BGP speaker stopped; FIB sync ends (routes left in place)");
                    return;
                }
            },
            changed = local.changed() => {
                if changed.is_err() {
                    return;
                }
                let prefixes = local.borrow_and_update().clone();
                fib.lock().await.set_local(&prefixes).await;
            }
            _ = sleep_until(next_resync) => {
                let repaired = fib.lock().await.resync().await;
                match repaired {
                    Ok(done) if done.replaced + done.deleted > 0 => {
                        info!(replaced = done.replaced, deleted = done.deleted, "FIB sync repaired the kernel");
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "FIB sync cannot read the kernel's routes"),
                }
                next_resync = Instant::now() + resync;
            }
        }
    }
}

/// The router ID of a node: `--bgp-router-id`, else its underlay IPv4 address.
pub fn router_id(explicit: Option<Ipv4Addr>, underlay: &Underlay) -> Option<Ipv4Addr> {
    explicit.or(underlay.v4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_api::bgp::BgpRole;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: None,
        }
    }

    #[test]
    fn external_peers_are_read_by_name_and_bad_ones_dropped() {
        let mut peers = BTreeMap::new();
        let key = format!("{}tor1", peers_prefix());
        assert!(put_external(
            &mut peers,
            &kv(&key, r#"{"address":"10.1.0.254","asn":65001}"#)
        ));
        assert!(!put_external(
            &mut peers,
            &kv(&key, r#"{"address":"10.1.0.254","asn":65001}"#)
        ));
        assert!(put_external(&mut peers, &kv(&key, "garbage")));
        assert!(peers.is_empty());
        assert!(!put_external(&mut peers, &kv(&peers_prefix(), "{}")));
        assert!(!delete_external(&mut peers, &key));
    }

    #[test]
    fn speaker_listens_on_the_underlay_with_next_hop_self() {
        let own = NodeBgp {
            asn: 64512,
            role: BgpRole::Rr,
            cluster_id: Some(Ipv4Addr::new(10, 0, 0, 100)),
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            port: 1179,
        };
        let underlay = Underlay {
            iface: None,
            v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
            v6: Some("fd99::1".parse().expect("ip")),
        };
        let cfg = BgpFabricConfig::new("n1", own, underlay).speaker();
        assert_eq!(
            cfg.listen,
            [
                "10.0.0.1:1179".parse::<SocketAddr>().expect("addr"),
                "[fd99::1]:1179".parse().expect("addr")
            ]
        );
        assert_eq!(cfg.cluster_id, Some(Ipv4Addr::new(10, 0, 0, 100)));
        assert_eq!(cfg.local_v6, Some("fd99::1".parse().expect("ip")));
    }

    fn external(options: strait_api::bgp::PeerOptions) -> Peer {
        Peer {
            name: "tor-a".into(),
            kind: PeerKind::External,
            address: "10.0.0.253".parse().expect("ip"),
            port: 179,
            asn: 65000,
            rr_client: false,
            local: None,
            md5_key: None,
            bfd: true,
            options,
        }
    }

    #[test]
    fn an_external_peers_options_reach_its_speaker_spec() {
        let net = |s: &str| s.parse::<IpNet>().expect("net");
        let options = strait_api::bgp::PeerOptions {
            passive: true,
            max_prefixes: Some(50),
            hold_time: Some(30),
            connect_retry: Some(7),
            graceful_restart: false,
            bfd_interval_ms: Some(100),
            bfd_multiplier: Some(5),
            allow: vec![net("10.244.200.0/24")],
            import: vec!["permit 192.0.2.0/24 le 28".parse().expect("rule")],
            export: vec!["deny 10.244.1.0/26".parse().expect("rule")],
        };
        let spec = peer_spec(&external(options));
        let prot = Protected {
            prefixes: vec![net("10.244.0.0/16")],
            expected: [net("10.244.2.0/26")].into(),
        };
        assert!(spec.passive);
        assert_eq!(spec.max_prefixes, Some(50));
        assert_eq!(spec.hold_time, Some(30));
        assert_eq!(spec.connect_retry, Some(Duration::from_secs(7)));
        assert!(!spec.graceful_restart);
        let bfd = spec.bfd.expect("bfd");
        assert_eq!(bfd.desired_min_tx, Duration::from_millis(100));
        assert_eq!(bfd.required_min_rx, Duration::from_millis(100));
        assert_eq!(bfd.detect_mult, 5);
        assert!(spec.import.protect);
        assert_eq!(spec.import.allow, [net("10.244.200.0/24")]);
        assert!(spec.import.check(&prot, &net("192.0.2.16/28")).is_ok());
        assert!(spec.import.check(&prot, &net("198.51.100.0/24")).is_err());
        assert!(
            spec.import.check(&prot, &net("10.244.200.0/26")).is_err(),
            "allowed, then filtered"
        );
        assert!(!spec.export.permits(&net("10.244.1.0/26")));
        // Defaults: as before, but the cluster's address space protected.
        let spec = peer_spec(&external(Default::default()));
        assert!(!spec.passive && spec.graceful_restart && spec.max_prefixes.is_none());
        assert_eq!(spec.bfd, Some(BfdParams::default()));
        assert!(spec.import.check(&prot, &net("10.244.2.0/29")).is_err());
        assert!(spec.import.check(&prot, &net("10.244.2.0/26")).is_ok());
        assert!(spec.import.check(&prot, &net("192.0.2.0/24")).is_ok());
        // A node is never refused its blocks.
        let mut node = external(Default::default());
        node.kind = PeerKind::Node;
        assert!(peer_spec(&node).import.is_empty());
    }

    #[test]
    fn protected_is_the_pools_where_only_other_nodes_prefixes_are_expected() {
        let net = |s: &str| s.parse::<IpNet>().expect("net");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let mut view = ClusterView::default();
        view.blocks.insert(net("10.244.1.0/26"), Some("n1".into()));
        view.blocks.insert(net("10.244.2.0/26"), Some("n2".into()));
        view.blocks.insert(net("10.244.3.0/26"), None);
        view.blocks.insert(net("10.99.0.0/26"), Some("n9".into()));
        // n2 borrowed 10.244.1.6 of n1's block; n1 borrowed 10.244.2.5 of n2's.
        view.lent.insert(
            net("10.244.1.0/26"),
            [(ip("10.244.1.6"), "n2".to_string())].into(),
        );
        view.lent.insert(
            net("10.244.2.0/26"),
            [(ip("10.244.2.5"), "n1".to_string())].into(),
        );
        let got = protected("n1", &[net("10.244.0.0/16"), net("fd00:244::/48")], &view);
        assert_eq!(
            got.prefixes,
            [
                net("10.99.0.0/26"),
                net("10.244.0.0/16"),
                net("fd00:244::/48")
            ]
        );
        let mut expected: Vec<IpNet> = got.expected.into_iter().collect();
        expected.sort();
        assert_eq!(
            expected,
            [
                net("10.99.0.0/26"),
                net("10.244.1.6/32"),
                net("10.244.2.0/26")
            ],
            "other nodes' blocks and borrowed addresses; not n1's own, not unaffined"
        );
    }

    #[test]
    fn local_prefixes_are_own_blocks_own_borrowed_and_lent_out() {
        let net = |s: &str| s.parse::<IpNet>().expect("net");
        let mut view = ClusterView::default();
        view.blocks.insert(net("10.244.1.0/26"), Some("n1".into()));
        view.blocks.insert(net("10.244.2.0/26"), Some("n2".into()));
        view.blocks.insert(net("10.244.3.0/26"), None);
        // n1 borrowed .2.5; n2 borrowed .1.6; n3 borrowed .2.7 (nothing of n1's).
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        view.lent.insert(
            net("10.244.2.0/26"),
            [
                (ip("10.244.2.5"), "n1".into()),
                (ip("10.244.2.7"), "n3".into()),
            ]
            .into(),
        );
        view.lent.insert(
            net("10.244.1.0/26"),
            [(ip("10.244.1.6"), "n2".into())].into(),
        );
        let local = local_prefixes("n1", &view);
        assert_eq!(local.own, [net("10.244.1.0/26"), net("10.244.2.5/32")]);
        assert_eq!(local.lent, [net("10.244.1.6/32")]);
    }
}
