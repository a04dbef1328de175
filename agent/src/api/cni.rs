//! The CNI plugin's verbs: ADD, DEL, CHECK, STATUS, GC, each timed into the metrics.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::Serialize;
use strait_api::{
    AddRequest, AddResponse, CheckRequest, DelRequest, GcRequest, GcResponse, Readiness,
    StatusRequest, code,
};

use super::error::{Failure, decode};
use super::{AppState, Shared};

/// Runs a verb, recording its latency and outcome.
async fn timed<T: Serialize>(
    s: &AppState,
    verb: &str,
    f: impl Future<Output = Result<T, Failure>>,
) -> Result<Json<T>, Failure> {
    let t0 = Instant::now();
    let res = f.await;
    s.metrics.observe(verb, res.is_ok(), t0.elapsed());
    res.map(Json)
}

pub(super) async fn add(
    State(s): State<Shared>,
    body: Bytes,
) -> Result<Json<AddResponse>, Failure> {
    let req: AddRequest = decode(&body)?;
    timed(&s, "add", async {
        Ok(s.ready_owners()?.attacher.add(req).await?)
    })
    .await
}

pub(super) async fn del(
    State(s): State<Shared>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, Failure> {
    let req: DelRequest = decode(&body)?;
    timed(&s, "del", async {
        match s.owners() {
            Some(o) => o.attacher.del(req).await?,
            // Before the store is open, DEL still succeeds: queued like the plugin
            // queues it when the agent is down, and applied once start-up gets there.
            None => {
                strait_api::queue::enqueue(&s.state_dir, &req)
                    .map_err(|e| Failure::new(code::IO_FAILURE, format!("queueing DEL: {e}")))?;
            }
        }
        Ok(serde_json::json!({}))
    })
    .await
}

pub(super) async fn check(
    State(s): State<Shared>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, Failure> {
    let req: CheckRequest = decode(&body)?;
    timed(&s, "check", async {
        s.ready_owners()?.attacher.check(req).await?;
        Ok(serde_json::json!({}))
    })
    .await
}

/// Answers with the readiness itself (not an error) whatever it says: the plugin
/// turns a not-ready one into the CNI STATUS error.
pub(super) async fn status(
    State(s): State<Shared>,
    body: Bytes,
) -> Result<Json<Readiness>, Failure> {
    decode::<StatusRequest>(&body)?;
    let t0 = Instant::now();
    let r = s.readiness().await;
    s.metrics.observe("status", r.ready, t0.elapsed());
    Ok(Json(r))
}

pub(super) async fn gc(State(s): State<Shared>, body: Bytes) -> Result<Json<GcResponse>, Failure> {
    let req: GcRequest = decode(&body)?;
    timed(&s, "gc", async {
        Ok(s.ready_owners()?.attacher.gc(req).await?)
    })
    .await
}
