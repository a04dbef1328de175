//! `netctl doctor --all-nodes` through the store: the asking agent writes a request
//! under `doctor/requests/`, every agent (each watches that prefix) checks itself and
//! writes its [`NodeHealth`] under `doctor/answers/<request>/<node>`, and the asker
//! collects them until every live node answered or [`ANSWER_TIMEOUT`] passed. The
//! agents need no address of each other and no port beyond the store's: whatever can
//! reach etcd can be asked.
//!
//! The request and every answer hang on one lease the asker grants and revokes when
//! done, so nothing of an exchange outlives it, also when the asker dies midway (the
//! lease then expires).
//!
//! The asker also compares what only several nodes show: who did not answer, whose
//! version differs, and whose clock is off (each answer carries its node's clock when
//! it was written; the asker compares it with its own when it arrives, so the error
//! is the store's one-way delay).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strait_api::doctor::{Check, DoctorQuery, DoctorReport, NodeHealth};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::{Doctor, STORE_TIMEOUT, now_ms};
use crate::api::AppState;
use crate::store::{EventKind, LeaseId, PREFIX, Store, WatchMessage};

/// How long the asker waits for every node.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// The exchange's lease: longer than the wait, so the asker's revoke ends it.
const EXCHANGE_TTL: Duration = Duration::from_secs(60);
/// A clock further off than this (beyond the measurement's own error) is reported.
const CLOCK_SKEW: Duration = Duration::from_secs(2);

pub fn requests_prefix() -> String {
    format!("{PREFIX}doctor/requests/")
}

fn answers_prefix(id: &str) -> String {
    format!("{PREFIX}doctor/answers/{id}/")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Request {
    id: String,
    from: String,
    lease: LeaseId,
    query: DoctorQuery,
}

/// Ask every live node, this one included; the report lists every node's health and
/// the cluster's findings.
pub async fn ask_all(doctor: &Doctor, s: &AppState, q: &DoctorQuery) -> DoctorReport {
    let own = doctor.check_node(s, q).await;
    // This node's health alone, and why no other node could be asked.
    let alone = |own, detail: String, fix: &str| DoctorReport {
        nodes: vec![own],
        cluster: vec![Check::fail("nodes", detail, fix)],
    };
    let Some(o) = s.owners() else {
        return alone(
            own,
            "this agent has not opened the store yet: no other node can be asked".into(),
            "wait for it to be ready (the checks above say what it waits for)",
        );
    };
    let store = o.registry.store().clone();
    let Ok(Ok(nodes)) = tokio::time::timeout(STORE_TIMEOUT, o.registry.nodes()).await else {
        return alone(
            own,
            "the store does not answer: no other node can be asked".into(),
            "make etcd reachable (see the store check)",
        );
    };
    let expected: Vec<String> = nodes
        .iter()
        .map(|n| n.name.clone())
        .filter(|n| *n != s.node)
        .collect();
    let mut query = q.clone();
    query.all_nodes = false;
    let answers = match collect(&store, &s.node, query, &expected).await {
        Ok(a) => a,
        Err(e) => {
            return alone(
                own,
                format!("asking the other nodes through the store failed: {e}"),
                "make etcd reachable (see the store check)",
            );
        }
    };
    let mut report = DoctorReport {
        nodes: vec![own],
        cluster: vec![],
    };
    let mut offsets = Vec::new();
    for (node, (health, received_ms)) in answers {
        offsets.push((node, health.clock_ms as i64 - received_ms as i64));
        report.nodes.push(health);
    }
    report.nodes.sort_by(|a, b| a.node.cmp(&b.node));
    // Each node's "compare across nodes" placeholder: the cluster's clock check below
    // is that comparison.
    for n in &mut report.nodes {
        n.checks
            .retain(|c| !(c.name == "clock" && c.verdict == strait_api::doctor::Verdict::Skip));
    }
    let answered: Vec<&str> = report.nodes.iter().map(|n| n.node.as_str()).collect();
    report.cluster.push(missing(&expected, &answered));
    report.cluster.push(clocks(&offsets));
    report
}

/// Writes the request and waits for the answers: node → (health, our clock at its
/// arrival).
async fn collect(
    store: &Arc<dyn Store>,
    me: &str,
    query: DoctorQuery,
    expected: &[String],
) -> Result<BTreeMap<String, (NodeHealth, u64)>, String> {
    let lease = store
        .lease_grant(EXCHANGE_TTL)
        .await
        .map_err(|e| e.to_string())?;
    let id = format!("{me}-{}-{}", now_ms(), std::process::id());
    let request = Request {
        id: id.clone(),
        from: me.to_string(),
        lease,
        query,
    };
    let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    let result = async {
        // Watch before asking, from the revision before the request: no answer can
        // come before the watch sees it.
        let rev = store.revision().await.map_err(|e| e.to_string())?;
        let mut w = store
            .watch(&answers_prefix(&id), rev + 1)
            .await
            .map_err(|e| e.to_string())?;
        store
            .put(&format!("{}{id}", requests_prefix()), body, Some(lease))
            .await
            .map_err(|e| e.to_string())?;
        let mut answers = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        while expected.iter().any(|n| !answers.contains_key(n)) {
            let msg = match tokio::time::timeout_at(deadline, w.rx.recv()).await {
                Ok(Some(m)) => m,
                // Time is up, or the watch ended: report who answered.
                Ok(None) | Err(_) => break,
            };
            let WatchMessage::Events(events) = msg else {
                break;
            };
            let at = now_ms();
            for ev in events.into_iter().filter(|e| e.kind == EventKind::Put) {
                match serde_json::from_slice::<NodeHealth>(&ev.kv.value) {
                    Ok(h) => {
                        answers.insert(h.node.clone(), (h, at));
                    }
                    Err(e) => warn!(key = %ev.kv.key, error = %e, "doctor: unreadable answer"),
                }
            }
        }
        Ok(answers)
    }
    .await;
    // The request and every answer go with the lease.
    if let Err(e) = store.lease_revoke(lease).await {
        debug!(error = %e, "doctor: revoking the exchange's lease; it expires");
    }
    result
}

fn missing(expected: &[String], answered: &[&str]) -> Check {
    let silent: Vec<&str> = expected
        .iter()
        .map(String::as_str)
        .filter(|n| !answered.contains(n))
        .collect();
    if silent.is_empty() {
        return Check::ok(
            "nodes",
            format!("all {} live nodes answered", expected.len() + 1),
        );
    }
    Check::fail(
        "nodes",
        format!(
            "{} did not answer within {} s",
            silent.join(", "),
            ANSWER_TIMEOUT.as_secs()
        ),
        "their agents hold a lease but do not answer: look at their logs, or run \
         `netctl doctor` on them",
    )
}

/// Each node's clock against this one's (milliseconds, positive: ahead).
fn clocks(offsets: &[(String, i64)]) -> Check {
    let off: Vec<String> = offsets
        .iter()
        .filter(|(_, ms)| ms.unsigned_abs() > CLOCK_SKEW.as_millis() as u64)
        .map(|(n, ms)| {
            format!(
                "{n} is {:.1} s {}",
                ms.unsigned_abs() as f64 / 1000.0,
                if *ms > 0 { "ahead" } else { "behind" }
            )
        })
        .collect();
    if offsets.is_empty() {
        return Check::skip("clock", "no other node answered");
    }
    if off.is_empty() {
        let worst = offsets
            .iter()
            .map(|(_, ms)| ms.unsigned_abs())
            .max()
            .unwrap_or(0);
        return Check::ok(
            "clock",
            format!("every clock within {worst} ms of this node's"),
        );
    }
    Check::warn(
        "clock",
        off.join(", "),
        "run NTP (chrony or systemd-timesyncd) on every node: leases, certificates and \
         IPsec lifetimes assume one time",
    )
}

/// Answers the requests of other agents until `stop`. Started once the agent is
/// ready; a broken watch is opened again.
pub async fn answer(doctor: Arc<Doctor>, state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let Some(store) = state.owners().map(|o| o.registry.store().clone()) else {
        return;
    };
    let mut retry = Duration::from_millis(500);
    loop {
        let watched = async {
            let rev = store.revision().await?;
            store.watch(&requests_prefix(), rev + 1).await
        }
        .await;
        match watched {
            Ok(mut w) => {
                retry = Duration::from_millis(500);
                loop {
                    let msg = tokio::select! {
                        m = w.rx.recv() => m,
                        _ = stop.wait_for(|s| *s) => return,
                    };
                    let Some(WatchMessage::Events(events)) = msg else {
                        break;
                    };
                    for ev in events.into_iter().filter(|e| e.kind == EventKind::Put) {
                        let req: Request = match serde_json::from_slice(&ev.kv.value) {
                            Ok(r) => r,
                            Err(e) => {
                                warn!(key = %ev.kv.key, error = %e, "doctor: unreadable request");
                                continue;
                            }
                        };
                        if req.from == state.node {
                            continue;
                        }
                        let (doctor, state, store) = (doctor.clone(), state.clone(), store.clone());
                        tokio::spawn(async move {
                            let health = doctor.check_node(&state, &req.query).await;
                            let key = format!("{}{}", answers_prefix(&req.id), state.node);
                            let body = serde_json::to_vec(&health).unwrap_or_default();
                            if let Err(e) = store.put(&key, body, Some(req.lease)).await {
                                // The asker gave up and revoked the lease: nobody waits.
                                debug!(request = %req.id, error = %e, "doctor: answering");
                            }
                        });
                    }
                }
            }
            Err(e) => debug!(error = %e, "doctor: watching requests"),
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        retry = (retry * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_api::doctor::Verdict;

    #[test]
    fn silent_nodes_fail_and_off_clocks_warn() {
        let expected = vec!["h2".to_string(), "h3".to_string()];
        assert_eq!(missing(&expected, &["h1", "h2", "h3"]).verdict, Verdict::Ok);
        let c = missing(&expected, &["h1", "h2"]);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.detail.starts_with("h3 did not answer"), "{c:?}");
        assert_eq!(clocks(&[("h2".into(), 40)]).verdict, Verdict::Ok);
        let c = clocks(&[("h2".into(), 40), ("h3".into(), -5300)]);
        assert_eq!(c.verdict, Verdict::Warn);
        assert_eq!(c.detail, "h3 is 5.3 s behind");
    }
}
