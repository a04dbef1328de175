//! Attachments: the lifecycle of one container interface as CNI drives it.
//!
//! This module orchestrates the other owners — [`crate::ipam`] for addresses,
//! [`crate::endpoint`] for the veth, [`records`] for the endpoint record — and owns
//! the rules that tie them together:
//!
//! * ADD allocates and records in one store transaction (the endpoint record rides in
//!   IPAM's), then plumbs; a failed plumbing releases the addresses and deletes the
//!   record in one transaction again, so a failed ADD leaves no address reserved, no
//!   record and no interface behind.
//! * DEL is best effort and always releases the addresses. It removes the host routes
//!   and releases the IPs before answering, and deletes the veth in the background:
//!   deleting a veth costs 20–35 ms of kernel time (RCU) that the runtime need not wait
//!   for. A later ADD of the same attachment waits for that deletion.
//! * Operations on one attachment are serialised; different attachments run in
//!   parallel.
//! * Links named `strait*` with no endpoint record and no operation in flight are
//!   stale (a crash mid-ADD, a killed agent) and are swept at start and periodically.

pub mod records;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strait_api::{
    AddRequest, AddResponse, ApiError, Attachment, CheckRequest, DelRequest, Endpoint, GcRequest,
    GcResponse, InterfaceInfo, IpInfo, IpamIssue, IpamReport, Readiness, ReleaseResponse,
    RouteInfo, code,
};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::endpoint::{self, VethSpec};
use crate::ipam::{AllocRequest, Ipam, IpamError};
use crate::netlink::{Netlink, format_mac};
use crate::netns;
use crate::store::{Store, StoreError};
use records::{EndpointRecords, RecordError, attachment_id};

/// Everything that can fail in an attachment operation, with the CNI code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("agent is starting; try again")]
    Starting,
    #[error("attachment {0} already exists (a second ADD for the same containerID and ifname)")]
    Duplicate(String),
    #[error("network namespace {path}: {reason}")]
    BadNetns { path: String, reason: String },
    #[error("no such attachment {0}")]
    Unknown(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("check failed for {id}: {reason}")]
    Check { id: String, reason: String },
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error("setting up the interface: {0}")]
    Endpoint(#[from] endpoint::EndpointError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AttachError {
    /// The CNI error code of this failure; the one place that decides it.
    pub fn to_api(&self) -> ApiError {
        let c = match self {
            AttachError::Starting => code::TRY_AGAIN_LATER,
            AttachError::Duplicate(_) => code::DUPLICATE_ATTACHMENT,
            AttachError::BadNetns { .. } => code::BAD_NETNS,
            AttachError::Unknown(_) => code::UNKNOWN_CONTAINER,
            AttachError::Invalid(_) => code::INVALID_ENV,
            AttachError::Check { .. } => code::CHECK_FAILED,
            AttachError::Ipam(e) => match e {
                IpamError::Exhausted { .. } => code::POOL_EXHAUSTED,
                IpamError::StaticUnavailable { .. } => code::STATIC_IP_UNAVAILABLE,
                IpamError::DuplicateHandle(_) => code::DUPLICATE_ATTACHMENT,
                IpamError::Store(StoreError::Unavailable(_)) => code::TRY_AGAIN_LATER,
                _ => code::INTERNAL,
            },
            AttachError::Store(StoreError::Unavailable(_))
            | AttachError::Record(RecordError::Store(StoreError::Unavailable(_))) => {
                code::TRY_AGAIN_LATER
            }
            AttachError::Endpoint(_) | AttachError::Record(_) | AttachError::Store(_) => {
                code::INTERNAL
            }
        };
        ApiError::new(c, self.to_string())
    }
}

/// Serialises operations per attachment id.
#[derive(Default)]
struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    async fn lock(&self, id: &str) -> KeyedGuard<'_> {
        let m = {
            let mut map = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(id.to_string()).or_default().clone()
        };
        let guard = m.clone().lock_owned().await;
        KeyedGuard {
            owner: self,
            id: id.to_string(),
            _guard: guard,
        }
    }
}

struct KeyedGuard<'a> {
    owner: &'a KeyedLocks,
    id: String,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for KeyedGuard<'_> {
    fn drop(&mut self) {
        // Forget the lock once nobody else holds or waits for it, so the map does not
        // grow with every container ever seen. Two references remain at that point:
        // the map's and the one inside our own guard.
        let mut map = self.owner.locks.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&self.id).is_some_and(|m| Arc::strong_count(m) <= 2) {
            map.remove(&self.id);
        }
    }
}

/// Static facts the attacher needs from the daemon.
#[derive(Debug, Clone)]
pub struct AttacherConfig {
    pub node: String,
    pub mtu: u32,
    pub gc_grace: Duration,
}

/// Runs ADD/DEL/CHECK/STATUS/GC for this node.
pub struct Attacher {
    cfg: AttacherConfig,
    store: Arc<dyn Store>,
    ipam: Arc<Ipam>,
    host: Netlink,
    records: EndpointRecords,
    locks: KeyedLocks,
    starting: AtomicBool,
    /// Host-side links being created right now (not yet recorded): the sweep skips them.
    creating: Mutex<HashSet<String>>,
    /// Host-side links queued for deletion in the background; an ADD of the same
    /// name waits for its entry to be done.
    deleting: Arc<Mutex<HashMap<String, watch::Sender<bool>>>>,
    /// Queue of the link reaper task (see [`reap_links`]).
    reaper: tokio::sync::mpsc::UnboundedSender<String>,
    /// Interface setups in progress at once; see [`plumbing_slots`].
    plumbing: tokio::sync::Semaphore,
    /// The eBPF fast path, when the agent runs one: every endpoint's veth gets it.
    fast_path: std::sync::OnceLock<crate::fastpath::FastPath>,
}

impl Attacher {
    pub fn new(
        cfg: AttacherConfig,
        store: Arc<dyn Store>,
        ipam: Arc<Ipam>,
        host: Netlink,
    ) -> Arc<Self> {
        let records = EndpointRecords::new(store.clone(), cfg.node.clone());
        let deleting: Arc<Mutex<HashMap<String, watch::Sender<bool>>>> = Arc::default();
        let (reaper, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(reap_links(host.clone(), queue, deleting.clone()));
        Arc::new(Self {
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
            plumbing: tokio::sync::Semaphore::new(plumbing_slots()),
            fast_path: std::sync::OnceLock::new(),
        })
    }

    /// From now on every new endpoint's veth gets the fast path; call
    /// [`Attacher::adopt_fast_path`] for the existing ones.
    pub fn set_fast_path(&self, fast_path: crate::fastpath::FastPath) {
        let _ = self.fast_path.set(fast_path);
    }

    /// Attaches the fast path to every recorded endpoint's veth (at start: the
    /// previous agent's filters are replaced in place), but for those with host ports
    /// or in `shaped` (an `ingress` qdisc). Returns how many.
    pub async fn adopt_fast_path(&self, shaped: &HashSet<String>) -> Result<usize, AttachError> {
        let Some(fp) = self.fast_path.get() else {
            return Ok(0);
        };
        // One dump of strait's links rather than a lookup per endpoint.
        let links: HashMap<String, u32> = match self.host.strait_links().await {
            Ok(links) => links.into_iter().map(|l| (l.name, l.index)).collect(),
            Err(e) => {
                warn!(error = %e, "fast path: listing links");
                return Ok(0);
            }
        };
        let mut attached = 0;
        for ep in self.records.list().await? {
            if ep.host_ports || shaped.contains(&ep.host_ifname) {
                // portmap DNATs to it (its replies need the host's conntrack), or
                // bandwidth shapes it.
                continue;
            }
            if let Some(&index) = links.get(&ep.host_ifname) {
                let dest = match fast_path_endpoint(&ep) {
                    Ok(dest) => dest,
                    Err(e) => {
                        warn!(id = %ep.id, error = %e, "fast path: record left to the kernel");
                        continue;
                    }
                };
                match fp.attach_endpoint(&ep.host_ifname, index, dest) {
                    Ok(()) => attached += 1,
                    Err(e) => warn!(error = %e, "fast path"),
                }
            }
        }
        Ok(attached)
    }

    /// A new veth gets the fast path once it has settled, off the ADD path (see
    /// [`crate::fastpath::SETTLE`]); until then the kernel forwards for it.
    fn attach_fast_path(&self, ep: &Endpoint, created: &endpoint::VethCreated) {
        if let Some(fp) = self.fast_path.get() {
            match fast_path_endpoint(ep) {
                Ok(dest) => fp.queue_endpoint(&created.host_ifname, created.host_ifindex, dest),
                Err(e) => warn!(error = %e, "fast path: the endpoint uses the kernel's forwarding"),
            }
        }
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

    // ===== ADD =====

    pub async fn add(&self, req: AddRequest) -> Result<AddResponse, AttachError> {
        if self.is_starting() {
            return Err(AttachError::Starting);
        }
        validate(&req.network, &req.container_id, &req.ifname)?;
        // Checked before anything is reserved, so a bad MAC costs nothing to undo.
        if let Some(m) = &req.mac {
            parse_mac(m).map_err(AttachError::Invalid)?;
        }
        let id = attachment_id(&req.network, &req.container_id, &req.ifname);
        let _guard = self.locks.lock(&id).await;

        if self.records.get(&id).await?.is_some() {
            return Err(AttachError::Duplicate(id));
        }
        check_netns(&req.netns)?;

        let host_ifname = endpoint::host_ifname(&req.network, &req.container_id, &req.ifname);
        let container_mac = match &req.mac {
            Some(m) => parse_mac(m).map_err(AttachError::Invalid)?,
            None => endpoint::default_container_mac(&host_ifname),
        };
        let mtu = req.mtu.unwrap_or(self.cfg.mtu);
        // The record is complete but for the addresses, which IPAM picks: it is written
        // in the allocation's own transaction, so it exists exactly when they do.
        let ep = Endpoint {
            id: id.clone(),
            node: self.cfg.node.clone(),
            network: req.network.clone(),
            container_id: req.container_id.clone(),
            ifname: req.ifname.clone(),
            netns: req.netns.clone(),
            host_ifname: host_ifname.clone(),
            mac: format_mac(&container_mac),
            host_mac: format_mac(&endpoint::host_mac(&host_ifname)),
            ips: Vec::new(),
            mtu,
            labels: req.labels.clone(),
            handle: id.clone(),
            created: unix_now(),
            host_ports: req.host_ports,
        };
        let record_op = self.records.put_op(ep.clone());

        let t_start = std::time::Instant::now();
        let alloc = self
            .ipam
            .allocate(AllocRequest {
                handle: id.clone(),
                network: req.network.clone(),
                container_id: req.container_id.clone(),
                ifname: req.ifname.clone(),
                netns: req.netns.clone(),
                static_ips: req.ips.clone(),
                extra: Some(record_op),
            })
            .await?;
        let ipam_ms = t_start.elapsed().as_secs_f64() * 1e3;
        let ep = Endpoint {
            ips: alloc.ips.iter().map(|ip| host_net(*ip)).collect(),
            ..ep
        };

        let spec = VethSpec {
            host_ifname: host_ifname.clone(),
            container_ifname: req.ifname.clone(),
            netns: PathBuf::from(&req.netns),
            ips: alloc.ips.clone(),
            mtu,
            container_mac: Some(container_mac),
        };
        let t_plumb = std::time::Instant::now();
        match self.plumb(&spec).await {
            Ok(created) => {
                if !ep.host_ports {
                    self.attach_fast_path(&ep, &created);
                }
                info!(
                    %id, host_ifname, ips = ?alloc.ips, ipam_ms,
                    plumb_ms = t_plumb.elapsed().as_secs_f64() * 1e3,
                    "attached"
                );
                Ok(add_response(&ep, &created))
            }
            Err(e) => {
                // Undo the reservation and the record together; plumb already undid
                // the interface.
                let drop_record = vec![self.records.delete_op(&id)];
                if let Err(re) = self.ipam.release_with(&id, drop_record).await {
                    warn!(%id, error = %re, "releasing addresses after a failed ADD");
                }
                Err(e)
            }
        }
    }

    /// Builds the veth. A link of the same name with no record (the caller checked,
    /// under the attachment's lock) is a leftover of a crash mid-ADD: it is ours to
    /// remove, and the creation is tried once more.
    async fn plumb(&self, spec: &VethSpec) -> Result<endpoint::VethCreated, AttachError> {
        let name = &spec.host_ifname;
        self.wait_for_deletion(name).await;
        // Taken after the wait: an ADD that waits for its old veth holds no slot. (The
        // semaphore is never closed; if it were, building without a slot is harmless.)
        let _slot = self.plumbing.acquire().await.ok();
        self.creating_insert(name);
        let result = match endpoint::setup(&self.host, spec).await {
            Err(endpoint::EndpointError::HostLinkExists { .. }) => {
                warn!(link = %name, "removing a leftover link of the same name");
                match endpoint::delete_link(&self.host, name).await {
                    Ok(()) => endpoint::setup(&self.host, spec).await,
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        self.creating_remove(name);
        Ok(result?)
    }

    fn creating_insert(&self, name: &str) {
        lock(&self.creating).insert(name.to_string());
    }

    fn creating_remove(&self, name: &str) {
        lock(&self.creating).remove(name);
    }

    async fn wait_for_deletion(&self, host_ifname: &str) {
        let rx = lock(&self.deleting)
            .get(host_ifname)
            .map(|tx| tx.subscribe());
        if let Some(mut rx) = rx {
            // An error means the deleting task is gone; either way the deletion is over.
            let _ = rx.wait_for(|done| *done).await;
        }
    }

    // ===== DEL =====

    /// DEL: release everything of the attachment. Succeeds when there is nothing left
    /// to release.
    pub async fn del(&self, req: DelRequest) -> Result<(), AttachError> {
        validate(&req.network, &req.container_id, &req.ifname)?;
        let id = attachment_id(&req.network, &req.container_id, &req.ifname);
        let host_ifname = endpoint::host_ifname(&req.network, &req.container_id, &req.ifname);
        self.release_attachment(&id, &host_ifname).await
    }

    async fn release_attachment(&self, id: &str, host_ifname: &str) -> Result<(), AttachError> {
        let _guard = self.locks.lock(id).await;
        let t0 = std::time::Instant::now();
        let ep = self.records.get(id).await?;

        // The host routes stay until the veth goes (with them): an ADD that gets one of
        // these addresses meanwhile replaces its route. Removing them here would wait
        // for the kernel's rtnl lock behind the deletion of the previous veth.
        let link = ep
            .as_ref()
            .map(|e| e.host_ifname.clone())
            .unwrap_or_else(|| host_ifname.to_string());
        self.delete_link_in_background(link);

        // The record goes in the release's transaction (also when the reservation is
        // already gone).
        let drop_record = if ep.is_some() {
            vec![self.records.delete_op(id)]
        } else {
            Vec::new()
        };
        if let Err(e) = self.ipam.release_with(id, drop_record).await {
            warn!(%id, error = %e, "releasing addresses");
            return Err(e.into());
        }
        debug!(%id, took_ms = t0.elapsed().as_secs_f64() * 1e3, "released");
        Ok(())
    }

    fn delete_link_in_background(&self, name: String) {
        if let Some(fp) = self.fast_path.get() {
            fp.forget_endpoint(&name);
        }
        {
            let mut deleting = lock(&self.deleting);
            if deleting.contains_key(&name) {
                return;
            }
            deleting.insert(name.clone(), watch::channel(false).0);
        }
        if self.reaper.send(name.clone()).is_err() {
            // The reaper only stops with the runtime; the sweep will find the link.
            lock(&self.deleting).remove(&name);
        }
    }
}

/// How many ADDs build their interface at once: one per CPU, at most 8.
///
/// The rest wait their turn in arrival order (tokio's semaphore is fair). Almost all of
/// a setup is kernel work, most of it under the kernel's one rtnl lock, so more setups
/// in flight add no throughput; they only share the CPUs, and then every ADD of a
/// burst finishes near the end of it. First come, first served lets each finish soon
/// after it arrives. Measured with `scripts/bench-cni.sh` on 2 cores (100-way burst,
/// median of 5 runs each, interleaved, under load from other builds): ADD p50 214 →
/// 142 ms, p99 250 → 201 ms. A single slot did no better than none.
fn plumbing_slots() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// The link reaper: deletes queued host veths, in batches. DELs that arrive while a
/// deletion runs pile up in the queue and go together in the next batch, so a burst of
/// N DELs costs a few kernel grace periods rather than N.
async fn reap_links(
    host: Netlink,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<String>,
    deleting: Arc<Mutex<HashMap<String, watch::Sender<bool>>>>,
) {
    const MAX_BATCH: usize = 256;
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(name) => batch.push(name),
                Err(_) => break,
            }
        }
        if let Err(e) = endpoint::delete_links(&host, &batch).await {
            warn!(links = ?batch, error = %e, "deleting veths; the stale-link sweep retries");
        }
        let mut map = lock(&deleting);
        for name in &batch {
            if let Some(done) = map.remove(name) {
                let _ = done.send(true);
            }
        }
    }
}

/// The agent checks names itself rather than trusting its client: they become store
/// keys and interface names. The rules are the CNI spec's.
fn validate(network: &str, container_id: &str, ifname: &str) -> Result<(), AttachError> {
    validate_name("network name", network)?;
    validate_name("container ID", container_id)?;
    let bad_ifname = ifname.is_empty()
        || ifname.len() > 15
        || ifname == "."
        || ifname == ".."
        || ifname
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if bad_ifname {
        return Err(AttachError::Invalid(format!(
            "interface name {ifname:?}: 1-15 bytes, not . or .., no '/', ':' or whitespace"
        )));
    }
    Ok(())
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, as the CNI spec requires of network names and
/// container IDs.
fn validate_name(what: &str, name: &str) -> Result<(), AttachError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 253;
    if ok {
        Ok(())
    } else {
        Err(AttachError::Invalid(format!(
            "{what} {name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (at most 253)"
        )))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What keeps containers from talking even though ADD works.
fn dataplane_problems() -> Vec<String> {
    let mut problems = Vec::new();
    for (file, what) in [
        ("/proc/sys/net/ipv4/ip_forward", "IPv4 forwarding is off"),
        (
            "/proc/sys/net/ipv6/conf/all/forwarding",
            "IPv6 forwarding is off",
        ),
    ] {
        match std::fs::read_to_string(file) {
            Ok(v) if v.trim() == "1" => {}
            Ok(_) => problems.push(what.to_string()),
            // No IPv6 in this kernel or namespace: nothing to forward.
            Err(_) => {}
        }
    }
    problems
}

fn check_netns(path: &str) -> Result<(), AttachError> {
    let bad = |reason: String| AttachError::BadNetns {
        path: path.to_string(),
        reason,
    };
    if !Path::new(path).exists() {
        return Err(bad("does not exist".into()));
    }
    match netns::is_same_as_current(Path::new(path)) {
        Ok(true) => Err(bad("is the host's own network namespace".into())),
        Ok(false) => Ok(()),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// The record as the fast path's endpoint map lists it.
fn fast_path_endpoint(ep: &Endpoint) -> Result<crate::fastpath::Endpoint, String> {
    Ok(crate::fastpath::Endpoint {
        ips: ep.ips.iter().map(|n| n.addr()).collect(),
        mac: parse_mac(&ep.mac)?,
        host_mac: parse_mac(&ep.host_mac)?,
    })
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!("MAC {s:?} is not six hex pairs"));
    }
    for (i, p) in parts.iter().enumerate() {
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| format!("MAC {s:?} is not hex"))?;
    }
    if mac[0] & 1 == 1 {
        return Err(format!("MAC {s:?} is multicast"));
    }
    Ok(mac)
}

fn host_net(ip: IpAddr) -> ipnet::IpNet {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    ipnet::IpNet::new(ip, len).unwrap_or_else(|_| unreachable!("full-length prefix is valid"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn add_response(ep: &Endpoint, created: &endpoint::VethCreated) -> AddResponse {
    let interfaces = vec![
        InterfaceInfo {
            name: created.host_ifname.clone(),
            mac: created.host_mac.clone(),
            sandbox: None,
            mtu: Some(ep.mtu),
        },
        InterfaceInfo {
            name: ep.ifname.clone(),
            mac: created.container_mac.clone(),
            sandbox: Some(ep.netns.clone()),
            mtu: Some(ep.mtu),
        },
    ];
    let mut routes = Vec::new();
    let ips = ep
        .ips
        .iter()
        .map(|net| {
            let gw = if net.addr().is_ipv4() {
                IpAddr::V4(endpoint::GATEWAY_V4)
            } else {
                IpAddr::V6(endpoint::GATEWAY_V6)
            };
            let default: ipnet::IpNet = if gw.is_ipv4() {
                "0.0.0.0/0".parse().unwrap_or_else(|_| unreachable!())
            } else {
                "::/0".parse().unwrap_or_else(|_| unreachable!())
            };
            if !routes.iter().any(|r: &RouteInfo| r.dst == default) {
                routes.push(RouteInfo {
                    dst: default,
                    gw: Some(gw),
                });
            }
            IpInfo {
                address: *net,
                gateway: Some(gw),
                interface: 1,
            }
        })
        .collect();
    AddResponse {
        interfaces,
        ips,
        routes,
        mtu: ep.mtu,
    }
}

impl Attacher {
    // ===== CHECK =====

    /// CHECK: the attachment is as ADD left it: record, reservation, interface,
    /// addresses and routes.
    pub async fn check(&self, req: CheckRequest) -> Result<(), AttachError> {
        if self.is_starting() {
            return Err(AttachError::Starting);
        }
        validate(&req.network, &req.container_id, &req.ifname)?;
        let id = attachment_id(&req.network, &req.container_id, &req.ifname);
        let _guard = self.locks.lock(&id).await;
        let fail = |reason: String| AttachError::Check {
            id: id.clone(),
            reason,
        };
        let ep = self
            .records
            .get(&id)
            .await?
            .ok_or_else(|| fail("no endpoint record".into()))?;
        let handle = self
            .ipam
            .get_handle(&id)
            .await?
            .ok_or_else(|| fail("no IP reservation (IPAM handle missing)".into()))?;
        let recorded: BTreeSet<IpAddr> = ep.ips.iter().map(|n| n.addr()).collect();
        let reserved: BTreeSet<IpAddr> = handle.ips.iter().copied().collect();
        if recorded != reserved {
            return Err(fail(format!(
                "reservation {reserved:?} differs from the endpoint's addresses {recorded:?}"
            )));
        }
        for want in &req.expected_ips {
            if !recorded.contains(&want.addr()) {
                return Err(fail(format!(
                    "address {want} from the runtime's result is not the endpoint's"
                )));
            }
        }
        let spec = VethSpec {
            host_ifname: ep.host_ifname.clone(),
            container_ifname: ep.ifname.clone(),
            netns: PathBuf::from(&req.netns),
            ips: recorded.iter().copied().collect(),
            mtu: ep.mtu,
            container_mac: None,
        };
        endpoint::check(&self.host, &spec)
            .await
            .map_err(|e| fail(e.to_string()))
    }

    // ===== STATUS =====

    /// Readiness for `/readyz` and CNI STATUS: 50 when the agent cannot serve ADDs (still
    /// starting, store unreachable, pools exhausted), 51 when it serves but the data
    /// plane is degraded.
    pub async fn readiness(&self) -> Readiness {
        let mut reasons = Vec::new();
        let mut code = 0;
        if self.is_starting() {
            reasons.push("agent is starting".to_string());
            code = code::NOT_AVAILABLE;
        }
        match self.store.revision().await {
            Ok(_) => {
                if !self.ipam.has_free_address().await {
                    reasons.push("every address pool is exhausted".into());
                    code = code::NOT_AVAILABLE;
                }
            }
            Err(e) => {
                reasons.push(format!("store unreachable: {e}"));
                code = code::NOT_AVAILABLE;
            }
        }
        if code == 0 {
            for problem in dataplane_problems() {
                reasons.push(problem);
                code = code::LIMITED_CONNECTIVITY;
            }
        }
        Readiness {
            ready: code == 0,
            code,
            reasons,
        }
    }

    // ===== GC =====

    /// CNI GC: release every attachment of `network` on this node that the runtime no
    /// longer lists. Keeps going past failures and reports them.
    pub async fn gc(&self, req: GcRequest) -> Result<GcResponse, AttachError> {
        if self.is_starting() {
            return Err(AttachError::Starting);
        }
        validate_name("network name", &req.network)?;
        let valid: HashSet<String> = req
            .valid_attachments
            .iter()
            .map(|a| attachment_id(&req.network, &a.container_id, &a.ifname))
            .collect();
        let mut stale: BTreeMap<String, (Attachment, String)> = BTreeMap::new();
        for ep in self.records.list().await? {
            if ep.network == req.network && !valid.contains(&ep.id) {
                let host = ep.host_ifname.clone();
                stale.insert(
                    ep.id.clone(),
                    (
                        Attachment {
                            container_id: ep.container_id,
                            ifname: ep.ifname,
                        },
                        host,
                    ),
                );
            }
        }
        // Reservations without an endpoint record (a crash between IPAM and the record).
        for h in self.ipam.list_handles().await? {
            if h.node == self.cfg.node
                && h.network == req.network
                && !valid.contains(&h.handle)
                && !stale.contains_key(&h.handle)
            {
                let host = endpoint::host_ifname(&h.network, &h.container_id, &h.ifname);
                stale.insert(
                    h.handle.clone(),
                    (
                        Attachment {
                            container_id: h.container_id.clone(),
                            ifname: h.ifname.clone(),
                        },
                        host,
                    ),
                );
            }
        }
        let mut resp = GcResponse::default();
        for (id, (att, host)) in stale {
            match self.release_attachment(&id, &host).await {
                Ok(()) => resp.released.push(att),
                Err(e) => resp.errors.push(format!("{id}: {e}")),
            }
        }
        Ok(resp)
    }

    // ===== views and housekeeping =====

    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, AttachError> {
        Ok(self.records.list().await?)
    }

    /// The IPAM consistency report, plus endpoint records whose reservation is gone.
    pub async fn ipam_check(&self, grace: Duration) -> Result<IpamReport, AttachError> {
        let endpoints = self.records.list().await?;
        let links: HashSet<String> = endpoint::list_owned_links(&self.host)
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let by_id: HashMap<&str, &Endpoint> =
            endpoints.iter().map(|e| (e.id.as_str(), e)).collect();
        let node = self.cfg.node.clone();
        let alive = |h: &crate::ipam::Handle| -> Result<(), String> {
            if h.node != node {
                // Another node's attachment: only that node can judge it.
                return Ok(());
            }
            if h.handle.starts_with(crate::ipam::TUNNEL_HANDLE_PREFIX) {
                // This node's VXLAN device addresses: held as long as the node lives
                // (a dead node's go with its blocks, through the reclaimer).
                return Ok(());
            }
            let Some(ep) = by_id.get(h.handle.as_str()) else {
                return Err("no endpoint record".into());
            };
            if !links.contains(&ep.host_ifname) {
                return Err(format!("host interface {} is gone", ep.host_ifname));
            }
            if !Path::new(&ep.netns).exists() {
                return Err(format!("network namespace {} is gone", ep.netns));
            }
            Ok(())
        };
        let mut report = self.ipam.check(grace, &alive).await?;
        for ep in &endpoints {
            if self.ipam.get_handle(&ep.handle).await?.is_none() {
                report.issues.push(IpamIssue::EndpointWithoutHandle {
                    endpoint: ep.id.clone(),
                    handle: ep.handle.clone(),
                });
            }
        }
        Ok(report)
    }

    /// Release what a report found, re-verifying each finding first.
    pub async fn ipam_release(&self, report: &IpamReport) -> Result<ReleaseResponse, AttachError> {
        let mut resp = self.ipam.release_from_report(report).await?;
        // Endpoint records go with their released handles, and records whose handle
        // was already gone are removed with their interface.
        let released: HashSet<&str> = resp.released.iter().map(String::as_str).collect();
        let mut extra = Vec::new();
        for issue in &report.issues {
            let id = match issue {
                IpamIssue::LeakedHandle { handle, .. } if released.contains(handle.as_str()) => {
                    handle
                }
                IpamIssue::EndpointWithoutHandle { endpoint, .. } => endpoint,
                _ => continue,
            };
            let _guard = self.locks.lock(id).await;
            if let Some(ep) = self.records.get(id).await? {
                if matches!(issue, IpamIssue::EndpointWithoutHandle { .. })
                    && self.ipam.get_handle(&ep.handle).await?.is_some()
                {
                    resp.skipped.push(id.clone());
                    continue;
                }
                self.records.delete(id).await?;
                self.delete_link_in_background(ep.host_ifname.clone());
                if matches!(issue, IpamIssue::EndpointWithoutHandle { .. }) {
                    extra.push(id.clone());
                }
            }
        }
        resp.released.extend(extra);
        Ok(resp)
    }

    /// The agent's own leak GC: release reservations whose attachment has been gone for
    /// longer than the grace period. Returns how many it released.
    pub async fn gc_leaks(&self) -> Result<usize, AttachError> {
        let mut report = self.ipam_check(self.cfg.gc_grace).await?;
        // Only act on leaks; structural findings are for an operator to look at.
        report
            .issues
            .retain(|i| matches!(i, IpamIssue::LeakedHandle { .. }));
        if report.issues.is_empty() {
            return Ok(0);
        }
        let resp = self.ipam_release(&report).await?;
        if !resp.released.is_empty() {
            info!(released = ?resp.released, "GC released leaked reservations");
        }
        Ok(resp.released.len())
    }

    /// Delete `strait*` links that belong to no endpoint and no operation in flight.
    pub async fn sweep_stale_links(&self) -> Result<Vec<String>, AttachError> {
        let known: HashSet<String> = self
            .records
            .list()
            .await?
            .into_iter()
            .map(|e| e.host_ifname)
            .collect();
        let mut removed = Vec::new();
        for (name, _) in endpoint::list_owned_links(&self.host).await? {
            let busy =
                lock(&self.creating).contains(&name) || lock(&self.deleting).contains_key(&name);
            if known.contains(&name) || busy {
                continue;
            }
            // Re-check under nobody's lock is fine: an ADD inserts into `creating`
            // before it creates the link, so a link we see here without a record and
            // outside `creating` was not made by a live operation.
            match endpoint::delete_link(&self.host, &name).await {
                Ok(()) => removed.push(name),
                Err(e) => warn!(link = %name, error = %e, "removing stale link"),
            }
        }
        if !removed.is_empty() {
            info!(?removed, "removed stale links");
        }
        Ok(removed)
    }

    /// Apply DELs the CNI plugin queued on disk while the agent was down.
    pub async fn apply_pending_releases(&self, dir: &Path) -> usize {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "reading the pending-release queue");
                return 0;
            }
        };
        let mut applied = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let req: DelRequest = match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => r,
                Err(e) => {
                    // Keep it for an operator rather than silently dropping a release.
                    warn!(file = %path.display(), error = %e, "unreadable queued DEL; renamed to .bad");
                    let _ = std::fs::rename(&path, path.with_extension("bad"));
                    continue;
                }
            };
            // A DEL queued before the attachment was (re)created must not remove the
            // new one: the runtime may reuse a container ID and ifname.
            let queued_at = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            let id = attachment_id(&req.network, &req.container_id, &req.ifname);
            if let (Some(at), Ok(Some(ep))) = (queued_at, self.records.get(&id).await)
                && ep.created > at
            {
                info!(%id, "dropping a queued DEL older than the attachment it names");
                let _ = std::fs::remove_file(&path);
                continue;
            }
            match self.del(req).await {
                Ok(()) => {
                    let _ = std::fs::remove_file(&path);
                    applied += 1;
                }
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "applying queued DEL; will retry")
                }
            }
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_cni_rules() {
        assert!(validate("net", "abc123", "eth0").is_ok());
        assert!(validate("my-net.v1", "k8s_pod.1-x", "eth1").is_ok());
        for (n, c, i) in [
            ("", "c", "eth0"),
            ("../x", "c", "eth0"),
            ("n", "-c", "eth0"),
            ("n", "a/b", "eth0"),
            ("n", "c", ""),
            ("n", "c", "a23456789012345x"),
            ("n", "c", ".."),
            ("n", "c", "et h0"),
            ("n", "c", "eth:0"),
        ] {
            assert!(validate(n, c, i).is_err(), "{n:?} {c:?} {i:?} accepted");
        }
    }

    #[test]
    fn macs_must_be_unicast_hex() {
        assert_eq!(
            parse_mac("02:42:0a:00:00:01").unwrap(),
            [2, 0x42, 10, 0, 0, 1]
        );
        assert!(parse_mac("01:00:5e:00:00:01").is_err(), "multicast");
        assert!(parse_mac("02:42:0a:00:00").is_err());
        assert!(parse_mac("zz:42:0a:00:00:01").is_err());
    }
}
