//! Reclaiming the blocks of departed nodes, cluster-wide, by one elected agent.
//!
//! Blocks keep their affinity when their node dies (its record, bound to its lease,
//! is gone): a node that comes back finds its blocks and uses them again. Only once a
//! node has had no record for the grace period (`--block-reclaim-grace-secs`) are its
//! blocks freed for others: first its tunnel handle (`strait-tunnel.<node>`) is
//! released, then each block it is affine to is deleted — only if it holds no other
//! allocation. A block where any endpoint still holds an address is never touched:
//! that node may be partitioned rather than dead, and its containers keep running.
//!
//! # Leadership
//!
//! One agent at a time does this: the holder of `leader/ipam-reclaim`, put with its
//! node lease under a create-if-absent compare. Every round re-checks it (the key names
//! this node and carries its current lease); a lost lease takes the key with it, and
//! the next agent's create wins. Every write of a round is fenced twice in its own
//! transaction: the leader key still has the create revision this leader saw, and the
//! departed node still has no record. A leader that stalled and lost its key, or a
//! node that came back meanwhile, makes the write fail and change nothing.
//!
//! # Grace clock
//!
//! How long a node has been absent is measured by the leader, in memory, from the first
//! round that found it absent; a new leader starts its own clock. Store revisions would
//! not say when a record vanished once it is compacted, and wall clocks of different
//! hosts need not agree: waiting a grace period longer than strictly needed after a
//! leader change is the safe side.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::block::Block;
use super::{AllBlocks, Ipam, IpamError, TUNNEL_HANDLE_PREFIX, decode_handle, encode, keys, put};
use crate::node::{node_key, node_of_key, nodes_prefix};
use crate::store::{CmpOp, CmpTarget, Compare, LeaseId, PREFIX, Revision, Txn, TxnOp, TxnOpResult};

/// The election key.
pub fn leader_key() -> String {
    format!("{PREFIX}leader/ipam-reclaim")
}

/// How the reclaimer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReclaimConfig {
    /// How long a node must have had no record before its blocks are reclaimed.
    pub grace: Duration,
    /// Time between rounds.
    pub interval: Duration,
}

impl ReclaimConfig {
    /// A round a minute, as in docs/cluster.md.
    pub fn with_grace(grace: Duration) -> Self {
        Self {
            grace,
            interval: Duration::from_secs(60),
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Whether this agent led the round; nothing else is set when it did not.
    pub leader: bool,
    /// Departed nodes still within their grace period.
    pub waiting: Vec<String>,
    /// Tunnel handles released.
    pub released_tunnels: Vec<String>,
    /// Blocks whose affinity was removed (the block key deleted), with their node.
    pub reclaimed: Vec<(IpNet, String)>,
    /// Blocks of nodes past their grace that were left alone, and why.
    pub kept: Vec<(IpNet, String)>,
}

/// The reclaimer of one agent; only the elected one acts (see the module docs).
pub struct Reclaimer {
    ipam: Arc<Ipam>,
    lease: watch::Receiver<Option<LeaseId>>,
    cfg: ReclaimConfig,
    /// Departed nodes, and when this leader first found each without a record.
    absent_since: HashMap<String, Instant>,
}

/// The leader key as this agent holds it: writes are fenced on its create revision.
#[derive(Debug, Clone, Copy)]
struct Leadership {
    create_revision: Revision,
}

impl Leadership {
    fn fence(&self) -> Compare {
        Compare {
            key: leader_key(),
            op: CmpOp::Equal,
            target: CmpTarget::CreateRevision(self.create_revision),
        }
    }
}

impl Reclaimer {
    /// A reclaimer running for `ipam`'s node, campaigning with the lease `lease`
    /// follows (the node registry's: see `crate::node::Registry::subscribe_lease`).
    pub fn new(
        ipam: Arc<Ipam>,
        lease: watch::Receiver<Option<LeaseId>>,
        cfg: ReclaimConfig,
    ) -> Self {
        Self {
            ipam,
            lease,
            cfg,
            absent_since: HashMap::new(),
        }
    }

    /// Rounds every `interval` until `stop` turns true. Errors are logged; the next
    /// round starts afresh.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.round().await {
                Ok(r) if !r.reclaimed.is_empty() || !r.released_tunnels.is_empty() => {
                    info!(reclaimed = ?r.reclaimed, released = ?r.released_tunnels, "IPAM reclaim round");
                }
                Ok(r) => {
                    debug!(leader = r.leader, waiting = ?r.waiting, kept = ?r.kept, "IPAM reclaim round")
                }
                Err(e) => warn!(error = %e, "IPAM reclaim round failed"),
            }
        }
    }

    /// One round: campaign (or confirm leadership), then reclaim what is due.
    pub async fn round(&mut self) -> Result<RoundReport, IpamError> {
        let Some(leadership) = self.campaign().await? else {
            // A new leader starts its own clock (module docs).
            self.absent_since.clear();
            return Ok(RoundReport::default());
        };
        let mut report = RoundReport {
            leader: true,
            ..RoundReport::default()
        };

        let live: BTreeSet<String> = self
            .ipam
            .store
            .range(&nodes_prefix())
            .await?
            .kvs
            .iter()
            .filter_map(|kv| node_of_key(&kv.key).map(str::to_string))
            .collect();
        let mut all = self.ipam.read_blocks().await?;
        let tunnels = self
            .ipam
            .store
            .range(&keys::handle(TUNNEL_HANDLE_PREFIX))
            .await?;
        let tunnel_nodes: BTreeMap<String, crate::store::KeyValue> = tunnels
            .kvs
            .into_iter()
            .filter_map(|kv| {
                let node = keys::handle_id(&kv.key)?.strip_prefix(TUNNEL_HANDLE_PREFIX)?;
                Some((node.to_string(), kv))
            })
            .collect();

        // Nodes with something to reclaim and no record. This agent is alive by
        // definition, whatever the store says this instant.
        let departed: BTreeSet<String> = all
            .blocks
            .values()
            .filter_map(|b| b.affinity.clone())
            .chain(tunnel_nodes.keys().cloned())
            .filter(|n| !live.contains(n) && n != self.ipam.node())
            .collect();
        let now = Instant::now();
        self.absent_since.retain(|n, _| departed.contains(n));
        for n in &departed {
            self.absent_since.entry(n.clone()).or_insert(now);
        }

        for node in &departed {
            let absent_for = now.duration_since(self.absent_since[node]);
            if absent_for < self.cfg.grace {
                report.waiting.push(node.clone());
                continue;
            }
            if let Some(kv) = tunnel_nodes.get(node) {
                match self.release_tunnel(&leadership, node, kv, &mut all).await? {
                    Ok(()) => report
                        .released_tunnels
                        .push(keys::handle_id(&kv.key).unwrap_or_default().to_string()),
                    Err(why) => {
                        // The node's blocks wait for the next round: one of them may
                        // hold the tunnel address.
                        for b in all.blocks.values().filter(|b| b.is_affine_to(node)) {
                            report.kept.push((b.cidr, why.clone()));
                        }
                        continue;
                    }
                }
            }
            let affine: Vec<IpNet> = all
                .blocks
                .values()
                .filter(|b| b.is_affine_to(node))
                .map(|b| b.cidr)
                .collect();
            for cidr in affine {
                let block = &all.blocks[&cidr];
                if !block.allocations.is_empty() {
                    report.kept.push((
                        cidr,
                        format!("holds {} allocation(s)", block.allocations.len()),
                    ));
                    continue;
                }
                let rev = all.revs.get(&cidr).copied().unwrap_or(0);
                let txn = Txn::new()
                    .when([
                        leadership.fence(),
                        Compare::absent(node_key(node)),
                        Compare::mod_revision(keys::block(&cidr), rev),
                    ])
                    .and_then([TxnOp::Delete {
                        key: keys::block(&cidr),
                    }]);
                if self.ipam.store.txn(txn).await?.succeeded {
                    info!(block = %cidr, node = %node, "IPAM: reclaimed the empty block of a departed node");
                    report.reclaimed.push((cidr, node.clone()));
                } else {
                    report
                        .kept
                        .push((cidr, "changed under the reclaimer; next round".into()));
                }
            }
        }
        Ok(report)
    }

    /// Takes or confirms `leader/ipam-reclaim`. `None`: another agent leads, or this
    /// one holds no lease (it cannot prove it is alive, so it may not act).
    async fn campaign(&mut self) -> Result<Option<Leadership>, IpamError> {
        let Some(lease) = *self.lease.borrow_and_update() else {
            return Ok(None);
        };
        let key = leader_key();
        let me = self.ipam.node().as_bytes().to_vec();
        let txn = Txn::new()
            .when([Compare::absent(key.clone())])
            .and_then([TxnOp::Put {
                key: key.clone(),
                value: me.clone(),
                lease: Some(lease),
            }])
            .or_else([TxnOp::Get { key }]);
        let resp = match self.ipam.store.txn(txn).await {
            Ok(r) => r,
            // Our lease died: whoever registers next may lead.
            Err(crate::store::StoreError::LeaseNotFound(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if resp.succeeded {
            info!(node = %self.ipam.node(), "elected IPAM reclaimer");
            return Ok(Some(Leadership {
                create_revision: resp.revision,
            }));
        }
        match resp.results.into_iter().next() {
            Some(TxnOpResult::Get(Some(kv))) if kv.value == me && kv.lease == Some(lease) => {
                Ok(Some(Leadership {
                    create_revision: kv.create_revision,
                }))
            }
            _ => Ok(None),
        }
    }

    /// Releases a departed node's tunnel handle: frees its addresses in their blocks
    /// and deletes it, in one fenced transaction. `Ok(Err(why))` when it must wait
    /// (something changed, or the handle does not parse). Updates `all` with what it
    /// wrote.
    async fn release_tunnel(
        &self,
        leadership: &Leadership,
        node: &str,
        kv: &crate::store::KeyValue,
        all: &mut AllBlocks,
    ) -> Result<Result<(), String>, IpamError> {
        let handle = match decode_handle(kv) {
            Ok(h) => h,
            Err(e) => return Ok(Err(format!("tunnel handle unreadable: {e}"))),
        };
        let mut changed: BTreeMap<IpNet, Block> = BTreeMap::new();
        for ip in &handle.ips {
            let Some(cidr) = self
                .ipam
                .block_cidr_of(*ip)
                .filter(|c| all.blocks.contains_key(c))
                .or_else(|| all.blocks.keys().find(|c| c.contains(ip)).copied())
            else {
                continue;
            };
            let block = changed
                .entry(cidr)
                .or_insert_with(|| all.blocks[&cidr].clone());
            block.unassign(&[*ip], &handle.handle);
        }
        let mut compares = vec![
            leadership.fence(),
            Compare::absent(node_key(node)),
            Compare::mod_revision(kv.key.clone(), kv.mod_revision),
        ];
        let mut ops = vec![TxnOp::Delete {
            key: kv.key.clone(),
        }];
        for (cidr, block) in &changed {
            let key = keys::block(cidr);
            compares.push(Compare::mod_revision(
                key.clone(),
                all.revs.get(cidr).copied().unwrap_or(0),
            ));
            ops.push(put(key.clone(), encode(&key, block)?));
        }
        let resp = self
            .ipam
            .store
            .txn(Txn::new().when(compares).and_then(ops))
            .await?;
        if !resp.succeeded {
            return Ok(Err("tunnel handle or its block changed; next round".into()));
        }
        info!(handle = %handle.handle, ips = ?handle.ips, "IPAM: released the tunnel addresses of a departed node");
        for (cidr, block) in changed {
            all.revs.insert(cidr, resp.revision);
            all.blocks.insert(cidr, block);
        }
        Ok(Ok(()))
    }
}
