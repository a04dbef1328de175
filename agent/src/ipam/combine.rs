//! Combining: the queues through which concurrent allocations (and releases) of this
//! node reach the store, the election of the task that runs a batch, and the checks
//! that let many callers' operations share one transaction.
//!
//! Why: the node's operations serialise on its blocks (every allocation rewrites the
//! block it allocates in, under compare-and-swap), and a store transaction costs an
//! fsync. One transaction per request makes a burst of N requests wait N fsyncs. Here a
//! request waits in a queue; whoever takes the node's lock drains the queue and runs
//! the whole batch as one transaction, so a burst costs a few fsyncs.
//!
//! How: [`Ipam::combined`] queues the request, then waits for either its answer or the
//! lock. With the lock it takes up to [`MAX_BATCH`] queued requests and hands them, with
//! the lock, to a task of their own: the batch finishes and every waiter gets its
//! answer even if the caller that started it is dropped. Requests that did not fit are
//! taken by the next waiter to get the lock. The answers are sent before the lock is
//! let go, so a waiter that gets the lock has either been answered or is still queued.
//!
//! Cancellation: a caller dropped while its request is queued is skipped when the
//! queue is drained (nothing is done for it). One dropped after its batch took it
//! cannot be told the outcome: if the batch commits, the allocation exists with nobody
//! to report it to. That is the same as a caller dropped while its own transaction is
//! in flight, and is covered the same way: the attach layer releases the handle on
//! every failed ADD, a runtime follows an ADD that did not answer with a DEL of the
//! same attachment (which releases the handle), and GC frees handles whose attachment
//! is gone.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex as SyncMutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedMutexGuard, oneshot};

use super::{Ipam, IpamError, NodeBlocks, keys};
use crate::store::{PREFIX, TxnOp};

/// Most requests one batch takes from its queue. Bounded so a batch's planning and its
/// transaction stay short next to the fsync they share.
pub(super) const MAX_BATCH: usize = 64;

/// Most operations one transaction carries; requests past it wait for the next
/// transaction of their batch. etcd refuses transactions of more than 128 operations
/// by default (`--max-txn-ops`).
pub(super) const MAX_TXN_OPS: usize = 128;

/// Requests waiting for a batch, each with where its answer goes.
pub(super) struct Queue<R, T> {
    waiting: SyncMutex<VecDeque<Waiter<R, T>>>,
}

struct Waiter<R, T> {
    req: R,
    reply: oneshot::Sender<Result<T, IpamError>>,
}

impl<R, T> Default for Queue<R, T> {
    fn default() -> Self {
        Self {
            waiting: SyncMutex::new(VecDeque::new()),
        }
    }
}

impl<R, T> Queue<R, T> {
    /// The queue; never held across an await, and every change to it is one push or
    /// pop, so a panic elsewhere cannot leave it half-changed.
    fn lock(&self) -> MutexGuard<'_, VecDeque<Waiter<R, T>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, req: R) -> oneshot::Receiver<Result<T, IpamError>> {
        let (reply, answer) = oneshot::channel();
        self.lock().push_back(Waiter { req, reply });
        answer
    }

    /// Up to `max` waiting requests, oldest first, leaving out those whose caller is
    /// gone.
    fn drain(&self, max: usize) -> Vec<Waiter<R, T>> {
        let mut queue = self.lock();
        let mut batch = Vec::new();
        while batch.len() < max {
            match queue.pop_front() {
                None => break,
                Some(w) if w.reply.is_closed() => {}
                Some(w) => batch.push(w),
            }
        }
        batch
    }
}

/// What a batch returns: an answer per request, in order, and the node's lock, which is
/// let go only after the answers are sent.
pub(super) type BatchOutput<T> = (Vec<Result<T, IpamError>>, OwnedMutexGuard<NodeBlocks>);

impl Ipam {
    /// Queues `req` and returns its answer, from a batch run by whichever waiter took
    /// the node's lock (possibly this one). `run` runs one batch: it gets the node's
    /// lock, a handle on this IPAM and the requests, and answers each request in
    /// order.
    pub(super) async fn combined<R, T, F, Fut>(
        &self,
        queue: &Arc<Queue<R, T>>,
        req: R,
        run: F,
    ) -> Result<T, IpamError>
    where
        R: Send + 'static,
        T: Send + 'static,
        F: Fn(Ipam, OwnedMutexGuard<NodeBlocks>, Vec<R>) -> Fut,
        Fut: Future<Output = BatchOutput<T>> + Send + 'static,
    {
        let mut answer = queue.push(req);
        loop {
            tokio::select! {
                // An answer wins over the lock: a waiter whose request is done must not
                // hold up the next batch.
                biased;
                got = &mut answer => {
                    return got.unwrap_or_else(|_| {
                        Err(IpamError::Interrupted(
                            "the batch carrying it ended without an answer".into(),
                        ))
                    });
                }
                cache = self.cache.clone().lock_owned() => {
                    let batch = queue.drain(MAX_BATCH);
                    if batch.is_empty() {
                        // Our request went in a batch that has answered it.
                        continue;
                    }
                    let (reqs, replies): (Vec<R>, Vec<_>) =
                        batch.into_iter().map(|w| (w.req, w.reply)).unzip();
                    let work = run(self.share(), cache, reqs);
                    tokio::spawn(async move {
                        let (answers, cache) = work.await;
                        for (reply, a) in replies.into_iter().zip(answers) {
                            // A caller gone meanwhile is the documented case above.
                            let _ = reply.send(a);
                        }
                        drop(cache);
                    });
                }
            }
        }
    }
}

/// The keys written by the callers' operations planned into one transaction so far.
#[derive(Debug, Default)]
pub(super) struct Written {
    keys: BTreeSet<String>,
    prefixes: Vec<String>,
}

impl Written {
    /// Whether `ops` write a key written already. A store refuses a key written twice
    /// in one transaction (etcd does), and two callers writing one key must be ordered,
    /// so such a request waits for the next transaction.
    pub(super) fn clashes(&self, ops: &[TxnOp]) -> bool {
        ops.iter().any(|op| match op {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } => {
                self.keys.contains(key) || self.prefixes.iter().any(|p| key.starts_with(p))
            }
            TxnOp::DeletePrefix { prefix } => {
                self.keys.iter().any(|k| k.starts_with(prefix))
                    || self
                        .prefixes
                        .iter()
                        .any(|p| p.starts_with(prefix) || prefix.starts_with(p))
            }
            TxnOp::Get { .. } => false,
        })
    }

    pub(super) fn add(&mut self, ops: &[TxnOp]) {
        for op in ops {
            match op {
                TxnOp::Put { key, .. } | TxnOp::Delete { key } => {
                    self.keys.insert(key.clone());
                }
                TxnOp::DeletePrefix { prefix } => self.prefixes.push(prefix.clone()),
                TxnOp::Get { .. } => {}
            }
        }
    }
}

/// Checks a caller's operations before they join a shared transaction, where a bad one
/// would fail every request in it: keys under [`PREFIX`], none of IPAM's own, and no
/// key written twice.
pub(super) fn check_extra(ops: &[TxnOp]) -> Result<(), String> {
    let ipam = keys::ipam_prefix();
    let mut own = Written::default();
    for op in ops {
        match op {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } | TxnOp::Get { key } => {
                if key.len() <= PREFIX.len() || !key.starts_with(PREFIX) {
                    return Err(format!("key {key:?} is not under {PREFIX}"));
                }
                if key.starts_with(&ipam) {
                    return Err(format!("key {key:?} is one of IPAM's own"));
                }
            }
            TxnOp::DeletePrefix { prefix } => {
                if !prefix.starts_with(PREFIX) {
                    return Err(format!("prefix {prefix:?} is not under {PREFIX}"));
                }
                if prefix.starts_with(&ipam) || ipam.starts_with(prefix.as_str()) {
                    return Err(format!("prefix {prefix:?} covers IPAM's own keys"));
                }
            }
        }
        let one = std::slice::from_ref(op);
        if own.clashes(one) {
            return Err(format!("{op:?} writes a key written before"));
        }
        own.add(one);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> TxnOp {
        TxnOp::Put {
            key: key.into(),
            value: Vec::new(),
            lease: None,
        }
    }

    fn delete(key: &str) -> TxnOp {
        TxnOp::Delete { key: key.into() }
    }

    #[test]
    fn extra_ops_stay_out_of_ipam_keys() {
        assert!(check_extra(&[put("/strait/v1/endpoints/n/a"), delete("/strait/v1/x")]).is_ok());
        assert!(check_extra(&[put("/elsewhere")]).is_err());
        assert!(check_extra(&[put("/strait/v1/")]).is_err());
        assert!(check_extra(&[put("/strait/v1/ipam/handles/h")]).is_err());
        assert!(
            check_extra(&[TxnOp::DeletePrefix {
                prefix: "/strait/v1/".into()
            }])
            .is_err(),
            "would delete IPAM's keys"
        );
        assert!(
            check_extra(&[TxnOp::DeletePrefix {
                prefix: "/strait/v1/endpoints/n/".into()
            }])
            .is_ok()
        );
        assert!(check_extra(&[put("/strait/v1/a"), delete("/strait/v1/a")]).is_err());
    }

    #[test]
    fn written_keys_clash() {
        let mut w = Written::default();
        w.add(&[put("/strait/v1/endpoints/n/a")]);
        assert!(w.clashes(&[delete("/strait/v1/endpoints/n/a")]));
        assert!(!w.clashes(&[put("/strait/v1/endpoints/n/b")]));
        assert!(w.clashes(&[TxnOp::DeletePrefix {
            prefix: "/strait/v1/endpoints/".into()
        }]));
        w.add(&[TxnOp::DeletePrefix {
            prefix: "/strait/v1/x/".into(),
        }]);
        assert!(w.clashes(&[put("/strait/v1/x/1")]));
        assert!(!w.clashes(&[TxnOp::Get {
            key: "/strait/v1/endpoints/n/a".into()
        }]));
    }
}
