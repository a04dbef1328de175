//! The policy routes as a client sees them, on the control plane with the in-memory
//! dataplane and an embedded store: status codes and bodies, a refused apply that
//! writes nothing, and the monitor's stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use strait_api::code;
use strait_api::policy::{EndpointPolicyView, FlowEvent, PolicyMode, PolicyObject, TraceView};
use strait_api::policy_wire::{ApplyReport, Change, MonitorLine};
use strait_policy::compile::Mode;
use strait_policy::ir::Direction;

use super::super::tests::{body, with_store};
use super::super::{AgentFacts, AppState, Shared};
use crate::metrics::{Metrics, PolicyCounters, ReasonCount};
use crate::policy::dataplane::RawFlowEvent;
use crate::policy::fake::{FakeDataplane, FakeHost};
use crate::policy::reconcile::ReconcileConfig;
use crate::policy::store::PolicyStore;
use crate::policy::store::tests::{deny_ingress, policy_doc};
use crate::policy::{PolicyAgent, PolicyConfig};
use crate::store::{PREFIX, Store};

const WAIT: Duration = Duration::from_secs(10);

/// The datapath's counters, set by the test.
#[derive(Default)]
struct FakeCounters {
    lost: AtomicU64,
    denied: AtomicU64,
}

impl PolicyCounters for FakeCounters {
    fn by_reason(&self) -> Result<Vec<ReasonCount>, String> {
        Ok(vec![ReasonCount {
            reason: "denied_rule".into(),
            dropped: true,
            count: self.denied.load(Ordering::Relaxed),
        }])
    }

    fn events_lost(&self) -> Result<u64, String> {
        Ok(self.lost.load(Ordering::Relaxed))
    }
}

struct Bed {
    _dir: tempfile::TempDir,
    s: Shared,
    store: Arc<dyn Store>,
    agent: PolicyAgent,
    counters: Arc<FakeCounters>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// An endpoint record as attach writes it: `web` in namespace `prod`, app=web, on
/// this node (n1), its veth `strait1` with ifindex 7.
fn web_record() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "version": 1, "id": "web", "node": "n1", "network": "n", "container_id": "web",
        "ifname": "eth0", "netns": "/run/netns/x", "host_ifname": "strait1",
        "mac": "02:00:00:00:00:01", "host_mac": "02:00:00:00:00:02",
        "ips": ["10.0.0.5/32"], "mtu": 1500, "labels": {"app": "web"}, "handle": "web",
        "created": 1, "namespace": "prod",
    }))
    .expect("json")
}

async fn bed() -> Bed {
    let dir = tempfile::tempdir().expect("dir");
    let (s, store) = with_store(dir.path()).await;
    store
        .put(&format!("{PREFIX}endpoints/n1/web"), web_record(), None)
        .await
        .expect("record");
    let host = Arc::new(FakeHost::default());
    host.set_link("strait1", 7);
    let mut rc = ReconcileConfig::new("n1", Mode::Enforce);
    rc.retry = Duration::from_millis(50);
    let agent = PolicyAgent::with_reconcile(
        rc,
        PolicyConfig::new("n1", PolicyMode::Enforce),
        store.clone(),
        Arc::new(FakeDataplane::default()),
        host,
    );
    let (stop, rx) = tokio::sync::watch::channel(false);
    agent.spawn(rx);
    let counters = Arc::new(FakeCounters::default());
    s.set_policy(agent.clone());
    s.set_policy_counters(counters.clone());
    Bed {
        _dir: dir,
        s,
        store,
        agent,
        counters,
        stop,
    }
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let t0 = tokio::time::Instant::now();
    while !f().await {
        assert!(t0.elapsed() < WAIT, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn message(v: &serde_json::Value) -> String {
    v["message"].as_str().unwrap_or_default().to_string()
}

async fn apply(s: &Shared, text: &[u8]) -> (StatusCode, serde_json::Value) {
    body(
        super::apply(State(s.clone()), Bytes::copy_from_slice(text))
            .await
            .into_response(),
    )
    .await
}

async fn keys(s: &Shared) -> Vec<String> {
    let (status, v) = body(super::list(State(s.clone())).await.into_response()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let objects: Vec<PolicyObject> = serde_json::from_value(v).expect("objects");
    objects.into_iter().map(|o| o.key).collect()
}

fn namespace(name: &str, team: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"team": team}},
    })
}

#[tokio::test]
async fn policy_routes_say_starting_until_the_control_plane_is_set() {
    let starting = Arc::new(AppState::new(
        AgentFacts {
            fabric_mode: strait_api::FabricMode::None,
            node: "n1".into(),
            store_description: "embedded".into(),
            state_dir: "/tmp".into(),
            pools: vec![],
        },
        Arc::new(Metrics::new()),
    ));
    let (status, v) = body(super::status(State(starting)).await.into_response()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["code"], code::TRY_AGAIN_LATER);

    let dir = tempfile::tempdir().expect("dir");
    let (s, _) = with_store(dir.path()).await;
    // The owners are there, the policy control plane not yet (start-up adopts
    // the kernel's maps first).
    s.set_phase("reconciling network policy");
    let (status, v) = body(super::list(State(s)).await.into_response()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(message(&v).contains("reconciling network policy"), "{v}");
}

#[tokio::test]
async fn apply_creates_configures_and_refuses_whole_then_get_and_delete() {
    let b = bed().await;
    let two = serde_json::json!([namespace("team-a", "a"), namespace("team-b", "b")]);
    let (status, v) = apply(&b.s, two.to_string().as_bytes()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let report: ApplyReport = serde_json::from_value(v).expect("report");
    assert_eq!(
        report.outcome.keys,
        ["namespaces/team-a", "namespaces/team-b"]
    );
    assert!(report.outcome.revision > 0);
    assert!(
        report.objects.iter().all(|o| o.change == Change::Created),
        "{report:?}"
    );

    // The same again is unchanged; a changed label is configured.
    let (_, v) = apply(&b.s, two.to_string().as_bytes()).await;
    let report: ApplyReport = serde_json::from_value(v).expect("report");
    assert!(report.objects.iter().all(|o| o.change == Change::Unchanged));
    let changed = serde_json::json!([namespace("team-a", "a2"), namespace("team-b", "b")]);
    let (_, v) = apply(&b.s, changed.to_string().as_bytes()).await;
    let report: ApplyReport = serde_json::from_value(v).expect("report");
    let changes: Vec<Change> = report.objects.iter().map(|o| o.change).collect();
    assert_eq!(changes, [Change::Configured, Change::Unchanged]);

    // A refused document refuses the whole apply, naming the field: the good
    // document before it is not written either, and the stored ones are untouched.
    let bad = serde_json::json!([
        namespace("team-c", "c"),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"labels": {}}},
    ]);
    let (status, v) = apply(&b.s, bad.to_string().as_bytes()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["code"], code::INVALID_CONFIG, "{v}");
    assert!(message(&v).contains("metadata.name"), "{v}");
    assert_eq!(keys(&b.s).await, ["namespaces/team-a", "namespaces/team-b"]);
    let (status, v) = apply(&b.s, b"\xff\xfe").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(message(&v).contains("UTF-8"), "{v}");

    // One object with its source; an absent one is 404.
    let get = |key: &str| {
        let (s, key) = (b.s.clone(), key.to_string());
        async move { body(super::get(State(s), UrlPath(key)).await.into_response()).await }
    };
    let (status, v) = get("namespaces/team-a").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let o: PolicyObject = serde_json::from_value(v).expect("object");
    assert_eq!(o.source, namespace("team-a", "a2"));
    let (status, v) = get("namespaces/team-z").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert!(message(&v).contains("namespaces/team-z"), "{v}");

    // Deleted once, 404 the second time; a key that names nothing is refused.
    let delete = |key: &str| {
        let (s, key) = (b.s.clone(), key.to_string());
        async move { body(super::delete(State(s), UrlPath(key)).await.into_response()).await }
    };
    let (status, v) = delete("namespaces/team-a").await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["key"], "namespaces/team-a");
    assert_eq!(keys(&b.s).await, ["namespaces/team-b"]);
    let (status, _) = delete("namespaces/team-a").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, v) = delete("policies/x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(message(&v).contains("not a policy or namespace key"), "{v}");
}

#[tokio::test]
async fn show_trace_and_status_follow_the_applied_policy() {
    let b = bed().await;
    let rev = PolicyStore::new(b.store.clone())
        .apply(&[policy_doc(deny_ingress("prod", "deny", "web"))])
        .await
        .expect("apply");
    let s = b.s.clone();
    wait_for("the policy applied", async || {
        let (_, v) = body(super::status(State(s.clone())).await.into_response()).await;
        // Both: the loop's first load may report a revision past a policy it has
        // not read yet (it reads the prefixes one after another).
        v["applied_revision"].as_i64().unwrap_or(0) >= rev && v["policies"] == 1
    })
    .await;
    let (status, v) = body(super::status(State(b.s.clone())).await.into_response()).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["policies"].as_u64(), v["mode"].as_str()),
        (Some(1), Some("enforce"))
    );

    let show = |id: &str| {
        let (s, id) = (b.s.clone(), id.to_string());
        async move { body(super::show(State(s), UrlPath(id)).await.into_response()).await }
    };
    // In sync once the loop has written the endpoint's identity into its record.
    wait_for("the endpoint in sync", async || {
        let (status, v) = show("web").await;
        status == StatusCode::OK && v["in_sync"] == true
    })
    .await;
    let (_, v) = show("web").await;
    let view: EndpointPolicyView = serde_json::from_value(v).expect("view");
    assert!(view.ingress.isolated && !view.egress.isolated, "{view:?}");
    assert_eq!(
        view.ingress.rules.len(),
        0,
        "deny-all has no rules: {view:?}"
    );
    assert!(view.in_sync, "{view:?}");
    assert_eq!(view.ifindex, Some(7));
    let (status, v) = show("nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");

    let trace = |body_text: &str| {
        let (s, t) = (b.s.clone(), body_text.to_string());
        async move { body(super::trace(State(s), Bytes::from(t)).await.into_response()).await }
    };
    let (status, v) = trace(r#"{"from":"10.9.9.9","to":"web","protocol":6,"port":80}"#).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let t: TraceView = serde_json::from_value(v).expect("trace");
    assert!(!t.allowed, "{t:?}");
    let ingress = t
        .steps
        .iter()
        .find(|s| s.direction == "ingress")
        .expect("ingress step");
    assert_eq!(ingress.selected_by, ["prod/deny"], "{t:?}");
    assert!(!ingress.differs, "{t:?}");
    let (status, v) = trace(r#"{"from":"=","to":"web","protocol":6,"port":80}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    let (status, v) = trace(r#"{"from":"web"}"#).await;
    assert_eq!(
        (status, v["code"].as_u64()),
        (StatusCode::BAD_REQUEST, Some(code::DECODE_FAILURE as u64))
    );
}

fn denied_flow(allowed: bool, dst_port: u16) -> RawFlowEvent {
    RawFlowEvent {
        monotonic_ns: 1,
        ifindex: 7,
        direction: Direction::Ingress,
        src: "10.9.9.9".parse().expect("ip"),
        dst: "10.0.0.5".parse().expect("ip"),
        src_port: 40000,
        dst_port,
        protocol: 6,
        src_identity: 2,
        dst_identity: 0,
        allowed,
        audit: false,
        rule: None,
        log_rule: None,
    }
}

type Lines = futures::stream::BoxStream<'static, Result<Bytes, axum::Error>>;

async fn monitor(s: &Shared, query: &[(&str, &str)]) -> Response {
    let q = query
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    super::monitor(State(s.clone()), Query(q))
        .await
        .into_response()
}

fn lines(r: Response) -> Lines {
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[axum::http::header::CONTENT_TYPE],
        "application/x-ndjson"
    );
    r.into_body().into_data_stream().boxed()
}

/// The next line that is not a keep-alive.
async fn next_line(l: &mut Lines) -> MonitorLine {
    loop {
        let chunk = tokio::time::timeout(WAIT, l.next())
            .await
            .expect("a line in time")
            .expect("the stream goes on")
            .expect("bytes");
        let text = std::str::from_utf8(&chunk).expect("utf-8");
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text:?}"
        );
        if text.trim().is_empty() {
            continue;
        }
        return serde_json::from_str(text).expect("a monitor line");
    }
}

fn event(l: MonitorLine) -> FlowEvent {
    match l {
        MonitorLine::Event(e) => *e,
        other => panic!("an event, not {other:?}"),
    }
}

#[tokio::test]
async fn monitor_streams_events_one_per_line_with_losses() {
    let b = bed().await;
    let s = b.s.clone();
    wait_for("the endpoint enforced", async || {
        let (_, v) = body(super::status(State(s.clone())).await.into_response()).await;
        v["endpoints_enforced"].as_u64() == Some(1)
    })
    .await;
    let mut all = lines(monitor(&b.s, &[]).await);
    let mut denied = lines(monitor(&b.s, &[("verdict", "denied"), ("port", "80")]).await);
    b.agent.publish(&denied_flow(true, 80));
    b.agent.publish(&denied_flow(false, 80));
    b.agent.publish(&denied_flow(false, 81));

    let first = event(next_line(&mut all).await);
    let second = event(next_line(&mut all).await);
    assert!(first.allowed && !second.allowed, "{first:?} {second:?}");
    assert_eq!(second.node, "n1");
    assert_eq!(second.endpoint.as_deref(), Some("web"));
    assert_eq!(second.dst.endpoint.as_deref(), Some("web"));
    assert_eq!(second.dst.namespace.as_deref(), Some("prod"));
    assert_eq!((second.dst.port, second.protocol.as_str()), (80, "tcp"));
    // The filtered stream skips the allowed one and the other port.
    let only = event(next_line(&mut denied).await);
    assert!(!only.allowed && only.dst.port == 80, "{only:?}");

    // The kernel's ring buffer dropped 3: every monitor is told.
    b.counters.lost.store(3, Ordering::Relaxed);
    assert_eq!(next_line(&mut denied).await, MonitorLine::Lost { lost: 3 });
    // On the other stream the third event and the loss come in either order.
    let two = [next_line(&mut all).await, next_line(&mut all).await];
    assert!(two.contains(&MonitorLine::Lost { lost: 3 }), "{two:?}");
    assert!(
        two.iter()
            .any(|l| matches!(l, MonitorLine::Event(e) if e.dst.port == 81)),
        "{two:?}"
    );

    // The verdicts were counted per policy (here the default: no rule decided), the
    // datapath's drops by reason.
    b.counters.denied.store(42, Ordering::Relaxed);
    let s = b.s.clone();
    wait_for("the verdicts counted", async || {
        let text = s.metrics.encode();
        text.contains(
            r#"strait_policy_verdicts_total{policy="default",direction="ingress",verdict="allowed"} 1"#,
        )
    })
    .await;
    let r = super::super::views::metrics(State(b.s.clone())).await;
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .expect("metrics");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains(r#"strait_policy_drops_total{reason="denied_rule"} 42"#),
        "{text}"
    );
    assert!(text.contains("strait_policy_events_lost_total 3"), "{text}");

    // A client that reads nothing falls behind the broadcast: it is told how many
    // it lost, then gets what followed.
    let mut slow = lines(monitor(&b.s, &[]).await);
    for _ in 0..5000 {
        b.agent.publish(&denied_flow(false, 80));
    }
    match next_line(&mut slow).await {
        MonitorLine::Lost { lost } => assert!(lost > 0 && lost < 5000, "{lost}"),
        other => panic!("a loss first, not {other:?}"),
    }
    let _ = event(next_line(&mut slow).await);
}

#[tokio::test]
async fn monitor_refuses_a_bad_filter() {
    let b = bed().await;
    for (q, why) in [
        (("verdict", "dropped"), "unknown verdict"),
        (("port", "http"), "not a port number"),
        (("verdcit", "denied"), "unknown monitor parameter"),
    ] {
        let (status, v) = body(monitor(&b.s, &[q]).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q:?}: {v}");
        assert!(message(&v).contains(why), "{q:?}: {v}");
    }
}

/// The routes as `netctl` reaches them: the real router on a unix socket and
/// strait-api's blocking client, the monitor read line by line as chunks arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_the_policy_paths_and_streams_the_monitor() {
    let b = bed().await;
    let s = b.s.clone();
    wait_for("the endpoint enforced", async || {
        let (_, v) = body(super::status(State(s.clone())).await.into_response()).await;
        v["endpoints_enforced"].as_u64() == Some(1)
    })
    .await;
    let sock = b._dir.path().join("api.sock");
    let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(super::super::serve(listener, b.s.clone(), async {
        let _ = stop_rx.await;
    }));
    let client = strait_api::Client::new(&sock).with_timeout(WAIT);

    let c = client.clone();
    let (applied, got, show, missing) = tokio::task::spawn_blocking(move || {
        let body = serde_json::json!([namespace("team-a", "a")]).to_string();
        let applied: ApplyReport = serde_json::from_slice(
            &c.request("POST", strait_api::paths::POLICIES, Some(body.as_bytes()))
                .expect("apply"),
        )
        .expect("report");
        // The key's slashes reach the handler whole.
        let got: PolicyObject = c
            .get(&strait_api::paths::policy_object("namespaces/team-a"))
            .expect("get");
        let show = c.get::<EndpointPolicyView>(&strait_api::paths::policy_endpoint("web"));
        let missing = c.request(
            "DELETE",
            &strait_api::paths::policy_object("namespaces/nope"),
            None,
        );
        (applied, got, show, missing)
    })
    .await
    .expect("client");
    assert_eq!(applied.objects[0].change, Change::Created);
    assert_eq!(got.source, namespace("team-a", "a"));
    assert_eq!(show.expect("show").endpoint, "web");
    match missing {
        Err(strait_api::ClientError::Api(e)) => assert_eq!(e.code, code::NOT_CONFIGURED),
        other => panic!("a 404, not {other:?}"),
    }

    // The monitor: subscribed once the answer's head is back; two events published
    // after that arrive as two lines.
    let (tx, rx) = std::sync::mpsc::channel();
    let c = client.clone();
    let reader = std::thread::spawn(move || {
        let path = format!("{}?verdict=denied", strait_api::paths::POLICY_MONITOR);
        let lines = c.stream_lines(&path).expect("monitor");
        tx.send(None).expect("subscribed");
        for line in lines.take(2) {
            tx.send(Some(line.expect("line"))).expect("send");
        }
    });
    let first = tokio::task::spawn_blocking(move || {
        let subscribed = rx.recv_timeout(WAIT).expect("the head in time");
        (subscribed, rx)
    })
    .await
    .expect("wait");
    assert_eq!(first.0, None);
    let rx = first.1;
    b.agent.publish(&denied_flow(false, 80));
    b.agent.publish(&denied_flow(true, 80));
    b.agent.publish(&denied_flow(false, 81));
    let lines = tokio::task::spawn_blocking(move || {
        [(); 2].map(|()| rx.recv_timeout(WAIT).expect("a line").expect("an event"))
    })
    .await
    .expect("lines");
    let ports: Vec<u16> = lines
        .iter()
        .map(|l| match serde_json::from_str::<MonitorLine>(l).expect(l) {
            MonitorLine::Event(e) if !e.allowed => e.dst.port,
            other => panic!("a denied event, not {other:?}"),
        })
        .collect();
    assert_eq!(ports, [80, 81]);
    reader.join().expect("reader");
    let _ = stop_tx.send(());
    let _ = server.await;
}
