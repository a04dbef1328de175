//! This node's record and lease, and the view of every node.
//!
//! The record lives at `nodes/<node>`, put with the node's lease. At start the agent
//! grants a fresh lease and rewrites the record with it; an older lease of the same node
//! (a previous agent) simply expires, so a restart never makes other hosts drop their
//! routes to this one. The lease is refreshed every third of its TTL. When the store
//! says the lease is gone (it expired during a long outage, or was revoked) a new one is
//! granted and the record put again. Shutdown does not revoke the lease: other hosts
//! keep their routes until the TTL runs out, and a quick restart loses nothing.
//!
//! The record is rewritten whenever what it says changes ([`Registry::set_fabric_info`],
//! [`Registry::set_underlay`]); a write that fails is retried by the keep-alive loop.
//! Every write puts the same record at `node-records/<node>` without a lease, in the
//! same transaction: the last record, by which other hosts keep routing to this node
//! while its lease is expired (module docs of [`crate::node`]).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use strait_api::{BlockView, NodeRecord, NodeState, NodeView};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::underlay::Underlay;
use super::{
    last_record_key, last_records_prefix, node_key, node_of_key, node_of_last_record_key,
    nodes_prefix,
};
use crate::netlink::format_mac;
use crate::store::{KeyValue, LeaseId, Store, StoreError, Txn, TxnOp};

/// Shortest wait between attempts of the keep-alive loop after a failure.
const MIN_RETRY: Duration = Duration::from_millis(200);

/// How the registry runs.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// TTL of the node's lease (`--node-lease-ttl-secs`).
    pub lease_ttl: Duration,
}

/// What the fabric contributes to the record: the VTEP MAC (a function of the node
/// name, owned by the fabric) and the tunnel addresses (from IPAM, see
/// [`crate::ipam::tunnel`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FabricInfo {
    pub vtep_mac: Option<[u8; 6]>,
    pub tunnel_v4: Option<Ipv4Addr>,
    pub tunnel_v6: Option<Ipv6Addr>,
}

/// This node's registration.
pub struct Registry {
    store: Arc<dyn Store>,
    node: String,
    ttl: Duration,
    /// Serialises every write of the record and every change of the lease.
    state: Mutex<State>,
    lease: watch::Sender<Option<LeaseId>>,
}

struct State {
    record: NodeRecord,
    lease: Option<LeaseId>,
    /// Whether the store holds `record` under `lease`, as far as we know.
    written: bool,
}

impl Registry {
    /// A registry for `record.name`, not yet registered: [`Registry::spawn`] (or
    /// [`Registry::register`]) grants the lease and writes the record.
    pub fn new(store: Arc<dyn Store>, cfg: RegistryConfig, record: NodeRecord) -> Arc<Self> {
        let (lease, _) = watch::channel(None);
        Arc::new(Self {
            store,
            node: record.name.clone(),
            ttl: cfg.lease_ttl,
            state: Mutex::new(State {
                record,
                lease: None,
                written: false,
            }),
            lease,
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The cluster store the record lives in (the API's writes of cluster-wide
    /// settings, such as `bgp/peers/`, go to the same store).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The record as this agent means it (written or about to be).
    pub async fn record(&self) -> NodeRecord {
        self.state.lock().await.record.clone()
    }

    /// The lease the record is bound to now, if one is held.
    pub fn lease(&self) -> Option<LeaseId> {
        *self.lease.borrow()
    }

    /// Follows the lease: `None` while none is held (not yet registered, or lost and
    /// not yet replaced). What rides on the node's liveness (the reclaimer's
    /// leadership) uses this.
    pub fn subscribe_lease(&self) -> watch::Receiver<Option<LeaseId>> {
        self.lease.subscribe()
    }

    /// Sets the fabric's part of the record and rewrites it if that changed. The record
    /// is kept even if the write fails (the keep-alive loop writes it later); the error
    /// says why it is not in the store yet.
    pub async fn set_fabric_info(&self, info: FabricInfo) -> Result<(), StoreError> {
        self.change(|r| {
            r.vtep_mac = info.vtep_mac.as_ref().map(format_mac);
            r.tunnel_v4 = info.tunnel_v4;
            r.tunnel_v6 = info.tunnel_v6;
        })
        .await
    }

    /// Sets the underlay addresses and rewrites the record if they changed.
    pub async fn set_underlay(&self, underlay: &Underlay) -> Result<(), StoreError> {
        self.change(|r| {
            r.underlay_v4 = underlay.v4;
            r.underlay_v6 = underlay.v6;
        })
        .await
    }

    async fn change(&self, f: impl FnOnce(&mut NodeRecord)) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        let mut record = state.record.clone();
        f(&mut record);
        if record == state.record && state.written {
            return Ok(());
        }
        state.record = record;
        state.written = false;
        match state.lease {
            Some(lease) => self.write(&mut state, lease).await,
            // Not registered yet: registering writes it.
            None => Ok(()),
        }
    }

    /// Grants a fresh lease and writes the record with it.
    pub async fn register(&self) -> Result<LeaseId, StoreError> {
        let mut state = self.state.lock().await;
        self.register_locked(&mut state).await
    }

    async fn register_locked(&self, state: &mut State) -> Result<LeaseId, StoreError> {
        let lease = self.store.lease_grant(self.ttl).await?;
        state.lease = Some(lease);
        state.written = false;
        self.write(state, lease).await?;
        info!(node = %self.node, lease, ttl = ?self.ttl, "node registered");
        Ok(lease)
    }

    async fn write(&self, state: &mut State, lease: LeaseId) -> Result<(), StoreError> {
        let value = serde_json::to_vec(&state.record)
            .map_err(|e| StoreError::Backend(format!("encoding the node record: {e}")))?;
        // The live record (with the lease) and the last record (without), together.
        let txn = Txn::new().and_then([
            TxnOp::Put {
                key: node_key(&self.node),
                value: value.clone(),
                lease: Some(lease),
            },
            TxnOp::Put {
                key: last_record_key(&self.node),
                value,
                lease: None,
            },
        ]);
        match self.store.txn(txn).await {
            Ok(_) => {
                state.written = true;
                // Published only once the record is under it: holding this lease is
                // what "this node is alive" means to the rest of the cluster.
                self.lease.send_if_modified(|l| {
                    let changed = *l != Some(lease);
                    *l = Some(lease);
                    changed
                });
                Ok(())
            }
            Err(e @ StoreError::LeaseNotFound(_)) => {
                state.lease = None;
                self.lease.send_replace(None);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// One turn of the keep-alive loop: register if no lease is held, else refresh it
    /// (re-registering when the store says it is gone) and write the record if a
    /// change has not reached the store yet.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let mut state = self.state.lock().await;
        let Some(lease) = state.lease else {
            return self.register_locked(&mut state).await.map(|_| ());
        };
        match self.store.lease_keep_alive(lease).await {
            Ok(()) if state.written => Ok(()),
            Ok(()) => self.write(&mut state, lease).await,
            Err(StoreError::LeaseNotFound(_)) => {
                warn!(node = %self.node, lease, "node lease is gone; registering again");
                state.lease = None;
                self.lease.send_replace(None);
                self.register_locked(&mut state).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Runs the keep-alive loop in a task until the handle is dropped: a turn every
    /// third of the TTL, sooner after a failure. The first turn registers at once.
    pub fn spawn(self: &Arc<Self>) -> Keepalive {
        let registry = self.clone();
        let period = (self.ttl / 3).max(MIN_RETRY);
        let task = tokio::spawn(async move {
            let mut retry = MIN_RETRY;
            loop {
                // One turn may not outlast the period, or a hung store would eat the TTL.
                let wait = match tokio::time::timeout(period, registry.refresh()).await {
                    Ok(Ok(())) => {
                        retry = MIN_RETRY;
                        period
                    }
                    outcome => {
                        let error = match outcome {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no answer within {period:?}"),
                        };
                        warn!(node = %registry.node, %error, ?retry, "node lease refresh failed; retrying");
                        let wait = retry;
                        retry = (retry * 2).min(period);
                        wait
                    }
                };
                tokio::time::sleep(wait).await;
            }
        });
        Keepalive { task }
    }

    /// Every live node record in the store, by name. Records that do not parse are
    /// logged and left out.
    pub async fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let resp = self.store.range(&nodes_prefix()).await?;
        Ok(parse_records(&resp.kvs, node_of_key))
    }

    /// Every node's last record (live or not), by name.
    pub async fn last_records(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let resp = self.store.range(&last_records_prefix()).await?;
        Ok(parse_records(&resp.kvs, node_of_last_record_key))
    }
}

/// The records of `kvs` that parse and name the node their key names.
fn parse_records(kvs: &[KeyValue], node_of: impl Fn(&str) -> Option<&str>) -> Vec<NodeRecord> {
    let mut out = Vec::with_capacity(kvs.len());
    for kv in kvs {
        match serde_json::from_slice::<NodeRecord>(&kv.value) {
            Ok(r) if node_of(&kv.key) == Some(r.name.as_str()) => out.push(r),
            Ok(r) => {
                warn!(key = %kv.key, name = %r.name, "node record under another node's key")
            }
            Err(e) => warn!(key = %kv.key, error = %e, "unreadable node record"),
        }
    }
    out
}

/// The running keep-alive loop ([`Registry::spawn`]). Dropping it stops refreshing
/// without revoking the lease: the record stays until the TTL runs out.
#[derive(Debug)]
pub struct Keepalive {
    task: JoinHandle<()>,
}

impl Drop for Keepalive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The node list: every node with a live record (`ready`), every other node with a
/// last record (`lease expired`: other hosts still route to it), and every node some
/// block is affine to (`gone` when neither record exists).
pub fn node_views(
    live: Vec<NodeRecord>,
    last: Vec<NodeRecord>,
    blocks: &[BlockView],
) -> Vec<NodeView> {
    let view = |r: NodeRecord, state: NodeState| NodeView {
        name: r.name.clone(),
        alive: state == NodeState::Ready,
        record: Some(r),
        blocks: Vec::new(),
        state: Some(state),
    };
    let mut views: std::collections::BTreeMap<String, NodeView> = last
        .into_iter()
        .map(|r| (r.name.clone(), view(r, NodeState::LeaseExpired)))
        .collect();
    for r in live {
        views.insert(r.name.clone(), view(r, NodeState::Ready));
    }
    let mut affine: Vec<(&str, IpNet)> = blocks
        .iter()
        .filter_map(|b| Some((b.affinity.as_deref()?, b.cidr)))
        .collect();
    affine.sort();
    for (node, cidr) in affine {
        views
            .entry(node.to_string())
            .or_insert_with(|| NodeView {
                name: node.to_string(),
                alive: false,
                record: None,
                blocks: Vec::new(),
                state: Some(NodeState::Gone),
            })
            .blocks
            .push(cidr);
    }
    views.into_values().collect()
}

/// Asks the underlay of every node whose lease expired whether the host is there
/// ([`super::probe`]), all at once, and marks those that do not answer within
/// [`super::probe::PROBE_TIMEOUT`] `unreachable`. Routes are not touched: they follow
/// the blocks. When the agent cannot probe at all (no CAP_NET_RAW), the nodes stay
/// `lease expired`, and the log says why.
pub async fn mark_unreachable(nodes: &mut [NodeView]) {
    use super::probe::{PROBE_TIMEOUT, any_answers};
    let asks: Vec<(usize, tokio::task::JoinHandle<std::io::Result<bool>>)> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.state == Some(NodeState::LeaseExpired))
        .filter_map(|(i, n)| {
            let r = n.record.as_ref()?;
            let addrs: Vec<std::net::IpAddr> =
                [r.underlay_v4.map(Into::into), r.underlay_v6.map(Into::into)]
                    .into_iter()
                    .flatten()
                    .collect();
            (!addrs.is_empty()).then(|| (i, tokio::spawn(any_answers(addrs, PROBE_TIMEOUT))))
        })
        .collect();
    for (i, ask) in asks {
        match ask.await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => nodes[i].state = Some(NodeState::Unreachable),
            Ok(Err(e)) => {
                tracing::warn!(node = %nodes[i].name, error = %e, "cannot probe the node's underlay");
            }
            Err(e) => tracing::warn!(node = %nodes[i].name, error = %e, "underlay probe failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_api::FabricMode;

    fn record(name: &str) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            underlay_v4: Some("10.0.0.1".parse().unwrap()),
            underlay_v6: None,
            fabric: FabricMode::Vxlan,
            vtep_mac: None,
            vxlan_vni: Some(4096),
            vxlan_port: Some(4789),
            tunnel_v4: None,
            tunnel_v6: None,
            agent_version: "0.1.0".into(),
            started: 1,
            bgp: None,
            site: strait_api::ipsec::DEFAULT_SITE.into(),
            ipsec: None,
        }
    }

    fn block(cidr: &str, node: Option<&str>) -> BlockView {
        BlockView {
            cidr: cidr.parse().unwrap(),
            affinity: node.map(str::to_string),
            used: 0,
            size: 64,
            lent: vec![],
        }
    }

    #[test]
    fn views_join_records_and_affine_blocks() {
        let views = node_views(
            vec![record("h2"), record("h1")],
            vec![],
            &[
                block("10.0.0.64/26", Some("h1")),
                block("10.0.0.0/26", Some("h1")),
                block("10.0.0.128/26", Some("gone")),
                block("10.0.0.192/26", None),
            ],
        );
        let names: Vec<(&str, bool, usize)> = views
            .iter()
            .map(|v| (v.name.as_str(), v.alive, v.blocks.len()))
            .collect();
        assert_eq!(
            names,
            [("gone", false, 1), ("h1", true, 2), ("h2", true, 0)]
        );
        assert_eq!(
            views[1].blocks,
            vec![
                "10.0.0.0/26".parse::<IpNet>().unwrap(),
                "10.0.0.64/26".parse().unwrap()
            ]
        );
        assert!(views[0].record.is_none());
    }

    #[test]
    fn a_node_with_an_expired_lease_is_shown_by_its_last_record() {
        let mut old_h1 = record("h1");
        old_h1.started = 0;
        let views = node_views(
            vec![record("h1")],
            vec![old_h1, record("h2"), record("h3")],
            &[
                block("10.0.0.0/26", Some("h2")),
                block("10.0.0.64/26", Some("gone")),
            ],
        );
        let states: Vec<(&str, bool, Option<NodeState>, usize)> = views
            .iter()
            .map(|v| (v.name.as_str(), v.alive, v.state, v.blocks.len()))
            .collect();
        assert_eq!(
            states,
            [
                ("gone", false, Some(NodeState::Gone), 1),
                ("h1", true, Some(NodeState::Ready), 0),
                ("h2", false, Some(NodeState::LeaseExpired), 1),
                ("h3", false, Some(NodeState::LeaseExpired), 0),
            ]
        );
        // The live record wins over the last one; an expired node shows its last.
        assert_eq!(views[1].record.as_ref().map(|r| r.started), Some(1));
        assert_eq!(
            views[2].record.as_ref().map(|r| r.name.as_str()),
            Some("h2")
        );
    }
}
