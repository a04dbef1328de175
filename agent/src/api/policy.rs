//! Network policy's routes (`netctl policy …`, `netctl monitor`), which
//! [`crate::policy::PolicyAgent`] owns: apply, list, get and delete the stored
//! objects, one endpoint's rules beside its kernel maps, a trace, the control
//! plane's status, and the live stream of flow events as NDJSON.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use strait_api::code;
use strait_api::policy::{EndpointPolicyView, PolicyObject, PolicyStatus, TraceView};
use strait_api::policy_wire::{
    AppliedObject, ApplyReport, Change, DeleteOutcome, MonitorFilter, MonitorLine, TraceRequest,
};
use tokio::sync::broadcast;

use super::error::{Failure, decode};
use super::{AppState, Shared};
use crate::metrics::{Metrics, PolicyCounters};
use crate::policy::PolicyAgent;

#[cfg(test)]
mod tests;

/// With no event for this long the monitor sends a blank line: writing is how a
/// client that went away is noticed, so its subscription ends within this.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// How often the monitor reads the ring buffer's loss counter.
const LOSS_POLL: Duration = Duration::from_secs(1);

/// Counts every flow event into `strait_policy_verdicts_total` for as long as the
/// control plane runs (events a slow count missed are not counted: the broadcast's
/// buffer is thousands deep, and the count is cheap).
pub(super) fn spawn_verdict_counter(agent: &PolicyAgent, metrics: Arc<Metrics>) {
    let mut events = agent.events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(e) => metrics.count_policy_verdict(&e),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

/// At scrape time: the datapath's drop and loss counters into the metrics.
pub(super) fn refresh_metrics(s: &AppState) {
    let Some(counters) = s.policy_counters() else {
        return;
    };
    if let (Ok(reasons), Ok(lost)) = (counters.by_reason(), counters.events_lost()) {
        s.metrics.record_policy_counters(&reasons, lost);
    }
}

/// The control plane, or "try again later" with the start-up phase: every agent
/// runs one (it does not start without its datapath), set once it has adopted
/// what the kernel holds.
pub(super) fn policy(s: &AppState) -> Result<&PolicyAgent, Failure> {
    s.ready_owners()?;
    s.policy().ok_or_else(|| s.starting())
}

/// `netctl policy apply`: the raw body is the documents' text (YAML or JSON, one or
/// many). All are written in one transaction or none; the answer says per object
/// whether it was created, changed or already so.
pub(super) async fn apply(
    State(s): State<Shared>,
    body: Bytes,
) -> Result<Json<ApplyReport>, Failure> {
    let agent = policy(&s)?;
    let text = std::str::from_utf8(&body).map_err(|e| {
        Failure::new(
            code::DECODE_FAILURE,
            format!("the documents are not UTF-8 text: {e}"),
        )
    })?;
    // What existed before, to tell created from configured. Another apply between
    // this read and ours can only make the words wrong, never the write.
    let before: BTreeMap<String, serde_json::Value> = agent
        .list()
        .await?
        .into_iter()
        .map(|o| (o.key, o.source))
        .collect();
    let outcome = agent.apply(text).await?;
    let mut objects = Vec::with_capacity(outcome.keys.len());
    for key in &outcome.keys {
        let change = match before.get(key) {
            None => Change::Created,
            Some(old) => match agent.get(key).await? {
                Some(now) if &now.source == old => Change::Unchanged,
                _ => Change::Configured,
            },
        };
        objects.push(AppliedObject {
            key: key.clone(),
            change,
        });
    }
    Ok(Json(ApplyReport { outcome, objects }))
}

/// `netctl policy list`: every policy and namespace object, by key.
pub(super) async fn list(State(s): State<Shared>) -> Result<Json<Vec<PolicyObject>>, Failure> {
    Ok(Json(policy(&s)?.list().await?))
}

fn no_object(key: &str) -> Failure {
    Failure::new(
        code::NOT_CONFIGURED,
        format!("no policy object {key} (netctl policy list shows them)"),
    )
}

/// `netctl policy get`: one object with the document as it was applied.
pub(super) async fn get(
    State(s): State<Shared>,
    UrlPath(key): UrlPath<String>,
) -> Result<Json<PolicyObject>, Failure> {
    match policy(&s)?.get(&key).await? {
        Some(o) => Ok(Json(o)),
        None => Err(no_object(&key)),
    }
}

/// `netctl policy delete`: 404 when there is no such object.
pub(super) async fn delete(
    State(s): State<Shared>,
    UrlPath(key): UrlPath<String>,
) -> Result<Json<DeleteOutcome>, Failure> {
    match policy(&s)?.delete(&key).await? {
        (true, revision) => Ok(Json(DeleteOutcome { key, revision })),
        (false, _) => Err(no_object(&key)),
    }
}

/// `netctl policy show --endpoint ID`.
pub(super) async fn show(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<EndpointPolicyView>, Failure> {
    Ok(Json(policy(&s)?.show(&id)?))
}

/// `netctl policy trace`.
pub(super) async fn trace(
    State(s): State<Shared>,
    body: Bytes,
) -> Result<Json<TraceView>, Failure> {
    let agent = policy(&s)?;
    let req: TraceRequest = decode(&body)?;
    Ok(Json(agent.trace(
        &req.from,
        &req.to,
        req.protocol,
        req.port,
    )?))
}

/// `netctl policy status`: the store revision this node's maps reflect.
pub(super) async fn status(State(s): State<Shared>) -> Result<Json<PolicyStatus>, Failure> {
    Ok(Json(policy(&s)?.status()))
}

/// The monitor's query, checked: an unknown parameter or a bad value is refused
/// rather than ignored (a typo would otherwise show every event).
fn monitor_filter(q: &BTreeMap<String, String>) -> Result<MonitorFilter, Failure> {
    let bad = |m: String| Failure::new(code::DECODE_FAILURE, m);
    let mut f = MonitorFilter::default();
    for (k, v) in q {
        match k.as_str() {
            "verdict" => f.verdict = Some(v.parse().map_err(bad)?),
            "endpoint" => f.endpoint = Some(v.clone()),
            "namespace" => f.namespace = Some(v.clone()),
            "translations" => {
                f.translations = v
                    .parse()
                    .map_err(|_| bad(format!("translations {v:?} is not true or false")))?;
            }
            "service" => {
                if v.split('/').filter(|p| !p.is_empty()).count() != 2 {
                    return Err(bad(format!("service {v:?} is not NS/NAME")));
                }
                f.service = Some(v.clone());
            }
            "port" => {
                f.port = Some(
                    v.parse()
                        .map_err(|_| bad(format!("port {v:?} is not a port number")))?,
                );
            }
            other => {
                return Err(bad(format!(
                    "unknown monitor parameter {other:?} (verdict, endpoint, namespace, port, \
                     translations, service)"
                )));
            }
        }
    }
    Ok(f)
}

/// One NDJSON line.
fn line(l: &MonitorLine) -> Bytes {
    let mut v = serde_json::to_vec(l).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// The ring buffer's loss counter now (0 without a datapath).
fn events_lost(counters: Option<&Arc<dyn PolicyCounters>>) -> u64 {
    counters.and_then(|c| c.events_lost().ok()).unwrap_or(0)
}

/// What one monitor connection holds.
struct Watch {
    events: broadcast::Receiver<strait_api::policy::FlowEvent>,
    filter: MonitorFilter,
    counters: Option<Arc<dyn PolicyCounters>>,
    /// The kernel's loss counter as last told.
    lost_seen: u64,
    tick: tokio::time::Interval,
    quiet_since: tokio::time::Instant,
    /// The services datapath's translations, when the client asked for them.
    xlate: Option<(
        broadcast::Receiver<crate::services::datapath::Translation>,
        crate::services::ServicesAgent,
    )>,
}

/// The next translation, or never (none asked for, or no services datapath).
async fn next_translation(
    xlate: &mut Option<(
        broadcast::Receiver<crate::services::datapath::Translation>,
        crate::services::ServicesAgent,
    )>,
) -> Result<
    (
        crate::services::datapath::Translation,
        crate::services::ServicesAgent,
    ),
    u64,
> {
    let Some((rx, agent)) = xlate.as_mut() else {
        return std::future::pending().await;
    };
    match rx.recv().await {
        Ok(t) => Ok((t, agent.clone())),
        Err(broadcast::error::RecvError::Lagged(n)) => Err(n),
        Err(broadcast::error::RecvError::Closed) => {
            *xlate = None;
            std::future::pending().await
        }
    }
}

impl Watch {
    /// The next line to send; None when the control plane is gone.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            tokio::select! {
                got = self.events.recv() => {
                    let out = match got {
                        Ok(e) if self.filter.matches(&e) => line(&MonitorLine::Event(Box::new(e))),
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            line(&MonitorLine::Lost { lost: n })
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    };
                    self.quiet_since = tokio::time::Instant::now();
                    return Some(out);
                }
                got = next_translation(&mut self.xlate) => {
                    let out = match got {
                        Ok((t, agent)) => {
                            let e = agent.name_translation(&t);
                            if !self.filter.matches_translation(&e) {
                                continue;
                            }
                            line(&MonitorLine::Translation { xlate: Box::new(e) })
                        }
                        Err(n) => line(&MonitorLine::Lost { lost: n }),
                    };
                    self.quiet_since = tokio::time::Instant::now();
                    return Some(out);
                }
                _ = self.tick.tick() => {
                    let lost = events_lost(self.counters.as_ref());
                    if lost > self.lost_seen {
                        let n = lost - self.lost_seen;
                        self.lost_seen = lost;
                        self.quiet_since = tokio::time::Instant::now();
                        return Some(line(&MonitorLine::Lost { lost: n }));
                    }
                    // A reset counter (datapath reloaded) starts again from there.
                    self.lost_seen = lost;
                    if self.quiet_since.elapsed() >= KEEPALIVE {
                        self.quiet_since = tokio::time::Instant::now();
                        return Some(Bytes::from_static(b"\n"));
                    }
                }
            }
        }
    }
}

/// `netctl monitor`: flow events as they come, one JSON object per line, each sent
/// as its own chunk; `{"lost": N}` when this client's buffer overflowed or the
/// kernel's ring buffer dropped events; blank lines as keep-alives. Ends when the
/// client goes.
pub(super) async fn monitor(
    State(s): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Response, Failure> {
    let agent = policy(&s)?;
    let filter = monitor_filter(&q)?;
    let counters = s.policy_counters().cloned();
    let mut tick = tokio::time::interval(LOSS_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Subscribed only when asked for: the programs send translations only while
    // someone listens.
    let xlate = if filter.translations || filter.service.is_some() {
        s.services()
            .ok()
            .and_then(|svc| svc.translations().map(|rx| (rx, svc.clone())))
    } else {
        None
    };
    let watch = Watch {
        xlate,
        events: agent.events(),
        lost_seen: events_lost(counters.as_ref()),
        filter,
        counters,
        tick,
        quiet_since: tokio::time::Instant::now(),
    };
    let stream = futures::stream::unfold(watch, |mut w| async move {
        w.next()
            .await
            .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), w))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}
