//! What each peer was sent, without a per-prefix copy: the Adj-RIB-Out.
//!
//! After every RIB call, a peer that is up has been sent, for each prefix, the Loc-RIB
//! best path as export rules and policy rewrite it for that peer — the RIB sends the
//! difference whenever a best path changes. So the Adj-RIB-Out is derived rather than
//! stored: the rewrite of one (attributes, source session, family) for one peer slot is
//! computed once and kept here, shared by every prefix with that best path, and the
//! export policy (pure, and called again as needed) is applied per prefix. Only where
//! the policy returned something other than what it was given (rewrote or refused it)
//! is the outcome kept per prefix and peer, in `exceptions`.
//!
//! A row keeps its attributes and source alive, so their addresses, its key, cannot be
//! reused while it exists. Rows no route refers to any more are dropped in sweeps,
//! each once the table has doubled since the last.

use std::collections::HashMap;
use std::sync::Arc;

use ipnet::IpNet;

use super::attrs::Attrs;
use super::route::{Route, Source};
use crate::codec::Family;

/// The attributes' and the source's addresses, and the family (the next hop towards
/// eBGP peers depends on it).
type RowKey = (usize, usize, Family);

struct Row {
    attrs: Arc<Attrs>,
    source: Arc<Source>,
    /// By peer slot: `None` not computed, `Some(None)` not exported to that peer.
    per_slot: Vec<Option<Option<Arc<Attrs>>>>,
}

/// Sweep no sooner than at this many rows.
const MIN_SWEEP: usize = 64;

#[derive(Default)]
pub(super) struct ExportCache {
    rows: HashMap<RowKey, Row>,
    sweep_at: usize,
    /// Per prefix and peer slot, where export policy changed the outcome.
    exceptions: HashMap<(IpNet, u32), Option<Arc<Attrs>>>,
}

fn key(r: &Route, family: Family) -> RowKey {
    (
        Arc::as_ptr(&r.attrs) as usize,
        Arc::as_ptr(&r.source) as usize,
        family,
    )
}

/// Peer slots are small and dense; four billion peers do not happen.
fn slot_key(slot: usize) -> u32 {
    u32::try_from(slot).expect("peer slot fits in 32 bits")
}

impl ExportCache {
    /// `route` as export rules rewrite it for the peer in `slot`, before policy;
    /// `rules` computes it the first time.
    pub(super) fn rewritten(
        &mut self,
        route: &Route,
        family: Family,
        slot: usize,
        rules: impl FnOnce() -> Option<Attrs>,
    ) -> Option<Arc<Attrs>> {
        if self.rows.len() >= self.sweep_at {
            self.sweep();
        }
        let row = self.rows.entry(key(route, family)).or_insert_with(|| Row {
            attrs: Arc::clone(&route.attrs),
            source: Arc::clone(&route.source),
            per_slot: Vec::new(),
        });
        if row.per_slot.len() <= slot {
            row.per_slot.resize(slot + 1, None);
        }
        row.per_slot[slot]
            .get_or_insert_with(|| rules().map(Arc::new))
            .clone()
    }

    /// What [`ExportCache::rewritten`] computed, if it did.
    fn cached(&self, route: &Route, family: Family, slot: usize) -> Option<&Option<Arc<Attrs>>> {
        self.rows
            .get(&key(route, family))?
            .per_slot
            .get(slot)?
            .as_ref()
    }

    /// Record what the peer in `slot` is sent for `prefix`: `sent`, after policy, from
    /// `rewritten`, before it.
    pub(super) fn record(
        &mut self,
        prefix: &IpNet,
        slot: usize,
        rewritten: Option<&Arc<Attrs>>,
        sent: Option<&Arc<Attrs>>,
    ) {
        let unchanged = match (rewritten, sent) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        if unchanged {
            if !self.exceptions.is_empty() {
                self.exceptions.remove(&(*prefix, slot_key(slot)));
            }
        } else {
            self.exceptions
                .insert((*prefix, slot_key(slot)), sent.cloned());
        }
    }

    /// What the peer in `slot` was sent for `prefix` while `best` was the best path
    /// (the RIB calls [`ExportCache::rewritten`] and [`ExportCache::record`] for every
    /// peer that is up whenever the best path changes); `None` for nothing.
    pub(super) fn sent(
        &self,
        prefix: &IpNet,
        best: Option<&Route>,
        family: Family,
        slot: usize,
    ) -> Option<&Arc<Attrs>> {
        if let Some(e) = self.exceptions.get(&(*prefix, slot_key(slot))) {
            return e.as_ref();
        }
        self.cached(best?, family, slot)?.as_ref()
    }

    /// The peer in `slot` starts from nothing sent (its session ended, or a new one
    /// starts): its rewrites are computed again, for its new session's settings.
    pub(super) fn forget_slot(&mut self, slot: usize) {
        for row in self.rows.values_mut() {
            if let Some(s) = row.per_slot.get_mut(slot) {
                *s = None;
            }
        }
        let k = slot_key(slot);
        self.exceptions.retain(|(_, s), _| *s != k);
    }

    /// Drop the rows of routes the RIB no longer holds (their attributes or source
    /// are referenced by the row alone).
    fn sweep(&mut self) {
        self.rows
            .retain(|_, r| Arc::strong_count(&r.attrs) > 1 && Arc::strong_count(&r.source) > 1);
        self.sweep_at = (2 * self.rows.len()).max(MIN_SWEEP);
    }

    #[cfg(test)]
    pub(super) fn rows(&self) -> usize {
        self.rows.len()
    }
}
