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
//! How long a node has been absent is measured by each agent, in memory
//! ([`GraceClock`]): from the moment it saw the node's record deleted (its lease
//! expired: every agent watches `nodes/`), or, for a node already absent when the
//! agent started watching, from the first round that found it absent. Followers keep
//! their clock too, so a new leader goes on with the times it saw. Store revisions
//! would not say when a record vanished once it is compacted, and wall clocks of
//! different hosts need not agree: every clock starts at or after the real expiry, so
//! the grace is never cut short. A watch that ends clears the clock (it may have
//! missed a node coming back).
//!
//! Rounds run every [`round_interval`] of the grace (half of it, between 1 s and
//! 60 s), and one runs as soon as a grace ends: a dead node's blocks come back one
//! grace after its lease expired, not one grace after some later round.
//!
//! # Last records
//!
//! Other hosts keep routing to a node whose lease expired by its last record
//! (`node-records/<node>`, see [`crate::node`]). Once a departed node past its grace
//! holds nothing any more (no block affine to it, no tunnel handle, no borrowed
//! address), its last record is deleted in the same kind of fenced transaction, and
//! the cluster forgets it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::block::Block;
use super::{AllBlocks, Ipam, IpamError, TUNNEL_HANDLE_PREFIX, decode_handle, encode, keys, put};
use crate::node::leader::{self, Leadership};
use crate::node::{
    last_record_key, last_records_prefix, node_key, node_of_key, node_of_last_record_key,
    nodes_prefix,
};
use crate::store::{Compare, EventKind, LeaseId, Revision, Txn, TxnOp, Watch, WatchMessage};

/// The election's job name: the key is `leader/ipam-reclaim`.
pub const LEADER_JOB: &str = "ipam-reclaim";

/// The election key.
pub fn leader_key() -> String {
    crate::node::leader::leader_key(LEADER_JOB)
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
    /// Rounds every [`round_interval`] of `grace`.
    pub fn with_grace(grace: Duration) -> Self {
        Self {
            grace,
            interval: round_interval(grace),
        }
    }
}

/// Time between rounds for a grace period: half of it, at least 1 s (a store read a
/// second is cheap) and at most a minute (a 15 minute grace needs no finer rounds).
pub fn round_interval(grace: Duration) -> Duration {
    (grace / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Since when each departed node has been absent, as this agent saw it (module docs).
/// Pure: every time comes in as an argument.
#[derive(Debug, Clone)]
pub struct GraceClock {
    grace: Duration,
    since: HashMap<String, Instant>,
}

impl GraceClock {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            since: HashMap::new(),
        }
    }

    /// `node`'s record was deleted at `now` (its lease expired): its grace starts now,
    /// unless it is running already.
    pub fn record_deleted(&mut self, node: &str, now: Instant) {
        self.since.entry(node.to_string()).or_insert(now);
    }

    /// `node`'s record is back: it has not departed.
    pub fn record_put(&mut self, node: &str) {
        self.since.remove(node);
    }

    /// A round found exactly `departed` without a record at `now`. Those not timed
    /// yet start now (when their lease expired is unknown: a late start is the safe
    /// side); nodes no longer departed are forgotten.
    pub fn listed(&mut self, departed: &BTreeSet<String>, now: Instant) {
        self.since.retain(|n, _| departed.contains(n));
        for n in departed {
            self.since.entry(n.clone()).or_insert(now);
        }
    }

    /// Whether `node`'s grace is over at `now`.
    pub fn due(&self, node: &str, now: Instant) -> bool {
        self.since
            .get(node)
            .is_some_and(|since| now.saturating_duration_since(*since) >= self.grace)
    }

    /// The first end of a grace later than `after` (a round then reclaims it).
    pub fn next_due_after(&self, after: Instant) -> Option<Instant> {
        self.since
            .values()
            .map(|since| *since + self.grace)
            .filter(|due| *due > after)
            .min()
    }

    /// Forgets every time (a watch that ended may have missed a node coming back).
    pub fn clear(&mut self) {
        self.since.clear();
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
    /// Departed nodes that held nothing any more: their last record was deleted.
    pub forgotten: Vec<String>,
}

/// The reclaimer of one agent; only the elected one acts (see the module docs).
pub struct Reclaimer {
    ipam: Arc<Ipam>,
    lease: watch::Receiver<Option<LeaseId>>,
    cfg: ReclaimConfig,
    clock: GraceClock,
    /// Whether a watch on `nodes/` feeds the clock ([`Reclaimer::run`]). Without one
    /// (rounds driven by hand) a follower's clock is cleared every round, as nothing
    /// would tell it that a node came back.
    watching: bool,
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
            clock: GraceClock::new(cfg.grace),
            cfg,
            watching: false,
        }
    }

    /// Rounds every `interval`, and as soon as a node's grace ends, until `stop`
    /// turns true; meanwhile the watch on `nodes/` feeds the grace clock. Errors are
    /// logged; the next round starts afresh.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut nodes: Option<Watch> = None;
        let mut last_round = Instant::now();
        loop {
            if nodes.is_none() {
                nodes = self.watch_nodes().await;
            }
            let wake = self
                .clock
                .next_due_after(last_round)
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                _ = tick.tick() => {}
                _ = async {
                    match wake {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
                message = async {
                    match nodes.as_mut() {
                        Some(w) => w.rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if !self.on_nodes_message(message) {
                        nodes = None;
                    }
                    continue;
                }
                _ = stop.wait_for(|s| *s) => return,
            }
            last_round = Instant::now();
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

    /// Starts watching `nodes/` from now; `None` (logged) when the store does not
    /// answer: the next turn tries again. The clock starts afresh either way.
    async fn watch_nodes(&mut self) -> Option<Watch> {
        self.clock.clear();
        self.watching = false;
        let prefix = nodes_prefix();
        let started = async {
            let listed = self.ipam.store.range(&prefix).await?;
            self.ipam.store.watch(&prefix, listed.revision + 1).await
        };
        match started.await {
            Ok(w) => {
                self.watching = true;
                Some(w)
            }
            Err(e) => {
                warn!(error = %e, "IPAM reclaimer: cannot watch node records; rounds go on without");
                None
            }
        }
    }

    /// Feeds the clock one message of the `nodes/` watch; `false` when the watch has
    /// ended (the clock is cleared then: it may have missed a node coming back).
    fn on_nodes_message(&mut self, message: Option<WatchMessage>) -> bool {
        match message {
            Some(WatchMessage::Events(events)) => {
                let now = Instant::now();
                for e in &events {
                    let Some(node) = node_of_key(&e.kv.key) else {
                        continue;
                    };
                    match e.kind {
                        EventKind::Delete => {
                            debug!(node, "node record deleted: its grace starts");
                            self.clock.record_deleted(node, now);
                        }
                        EventKind::Put => self.clock.record_put(node),
                    }
                }
                true
            }
            Some(WatchMessage::Compacted { .. }) | None => {
                self.clock.clear();
                self.watching = false;
                false
            }
        }
    }

    /// One round: campaign (or confirm leadership), then reclaim what is due.
    pub async fn round(&mut self) -> Result<RoundReport, IpamError> {
        let Some(leadership) = self.campaign().await? else {
            if !self.watching {
                // Nothing tells a follower without a watch that a node came back.
                self.clock.clear();
            }
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

        let last_records: BTreeMap<String, Revision> = self
            .ipam
            .store
            .range(&last_records_prefix())
            .await?
            .kvs
            .iter()
            .filter_map(|kv| {
                Some((
                    node_of_last_record_key(&kv.key)?.to_string(),
                    kv.mod_revision,
                ))
            })
            .collect();

        // Nodes with something to reclaim or forget and no record. This agent is alive
        // by definition, whatever the store says this instant.
        let departed: BTreeSet<String> = all
            .blocks
            .values()
            .filter_map(|b| b.affinity.clone())
            .chain(tunnel_nodes.keys().cloned())
            .chain(last_records.keys().cloned())
            .filter(|n| !live.contains(n) && n != self.ipam.node())
            .collect();
        let now = Instant::now();
        self.clock.listed(&departed, now);

        for node in &departed {
            if !self.clock.due(node, now) {
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
                    all.blocks.remove(&cidr);
                } else {
                    report
                        .kept
                        .push((cidr, "changed under the reclaimer; next round".into()));
                }
            }
            if let Some(rev) = last_records.get(node)
                && holds_nothing(&all, node)
                && self.forget(&leadership, node, *rev).await?
            {
                report.forgotten.push(node.clone());
            }
        }
        Ok(report)
    }

    /// Deletes a departed node's last record (other hosts then drop what they kept
    /// for it), fenced like every write of a round and on the record not having
    /// changed. `false` when a fence failed: the next round looks again.
    async fn forget(
        &self,
        leadership: &Leadership,
        node: &str,
        rev: Revision,
    ) -> Result<bool, IpamError> {
        let key = last_record_key(node);
        let txn = Txn::new()
            .when([
                leadership.fence(),
                Compare::absent(node_key(node)),
                Compare::mod_revision(key.clone(), rev),
            ])
            .and_then([TxnOp::Delete { key }]);
        let done = self.ipam.store.txn(txn).await?.succeeded;
        if done {
            info!(node = %node, "IPAM: a departed node holds nothing any more; its last record is deleted");
        }
        Ok(done)
    }

    /// Takes or confirms `leader/ipam-reclaim`. `None`: another agent leads, or this
    /// one holds no lease (it cannot prove it is alive, so it may not act).
    async fn campaign(&mut self) -> Result<Option<Leadership>, IpamError> {
        let lease = *self.lease.borrow_and_update();
        let led = leader::campaign(
            self.ipam.store.as_ref(),
            LEADER_JOB,
            self.ipam.node(),
            lease,
        )
        .await?;
        if led.is_some() {
            debug!(node = %self.ipam.node(), "IPAM reclaimer: leading");
        }
        Ok(led)
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

/// Whether `node` holds nothing in `all`: no block affine to it, no address borrowed
/// by it. (Its tunnel handle is gone once this is asked: released before, or absent.)
fn holds_nothing(all: &AllBlocks, node: &str) -> bool {
    all.blocks
        .values()
        .all(|b| !b.is_affine_to(node) && b.lent().all(|(_, holder)| holder != node))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn set(nodes: &[&str]) -> BTreeSet<String> {
        nodes.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_grace_starts_when_the_lease_expires_not_at_the_next_round() {
        let t0 = Instant::now();
        let mut clock = GraceClock::new(GRACE);
        // The record goes at t0; the first round to see it runs 4 s later.
        clock.record_deleted("h2", t0);
        clock.listed(&set(&["h2"]), t0 + secs(4));
        assert!(!clock.due("h2", t0 + secs(9)));
        assert!(
            clock.due("h2", t0 + GRACE),
            "due one grace after the expiry"
        );
        // A round is woken exactly then, and only once.
        assert_eq!(clock.next_due_after(t0 + secs(4)), Some(t0 + GRACE));
        assert_eq!(clock.next_due_after(t0 + GRACE), None, "no second wake-up");
    }

    #[test]
    fn an_absence_found_by_a_listing_starts_at_that_listing() {
        let t0 = Instant::now();
        let mut clock = GraceClock::new(GRACE);
        clock.listed(&set(&["old"]), t0 + secs(3));
        assert!(!clock.due("old", t0 + secs(12)));
        assert!(clock.due("old", t0 + secs(13)));
        // A later deletion event does not move a running clock back or forth.
        clock.record_deleted("old", t0 + secs(5));
        assert_eq!(clock.next_due_after(t0), Some(t0 + secs(13)));
    }

    #[test]
    fn a_node_that_comes_back_restarts_its_grace_when_it_leaves_again() {
        let t0 = Instant::now();
        let mut clock = GraceClock::new(GRACE);
        clock.record_deleted("h2", t0);
        clock.record_put("h2");
        assert!(!clock.due("h2", t0 + secs(60)), "back: not departed");
        clock.record_deleted("h2", t0 + secs(20));
        assert!(!clock.due("h2", t0 + secs(29)));
        assert!(clock.due("h2", t0 + secs(30)));
        // A listing without it (its blocks gone, nothing left) forgets it.
        clock.listed(&set(&[]), t0 + secs(31));
        assert!(!clock.due("h2", t0 + secs(60)));
        assert_eq!(clock.next_due_after(t0), None);
        // Cleared (a watch ended): every node starts again from the next listing.
        clock.record_deleted("h3", t0);
        clock.clear();
        clock.listed(&set(&["h3"]), t0 + secs(40));
        assert!(!clock.due("h3", t0 + secs(49)));
    }

    #[test]
    fn rounds_follow_the_grace() {
        assert_eq!(round_interval(secs(10)), secs(5));
        assert_eq!(round_interval(secs(900)), secs(60), "at most a minute");
        assert_eq!(round_interval(Duration::ZERO), secs(1), "at least a second");
        assert_eq!(ReclaimConfig::with_grace(secs(10)).interval, secs(5));
        // The worst case for a node found absent by a listing: one interval to find
        // it, the grace, and no further wait (a round is woken when the grace ends).
        let grace = secs(10);
        assert!(round_interval(grace) + grace < secs(121));
    }
}
