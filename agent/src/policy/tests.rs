//! The control plane against the in-memory dataplane and an embedded store: what
//! the reconcile loop installs, recompiles, removes and adopts, and how identities
//! follow labels.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strait_api::policy::PolicyMode;
use strait_policy::compile::{Compiler, Mode};
use strait_policy::ir::{
    Action, Direction, EndpointSelector, NamespaceScope, Peer, Policy, PolicyKey, Rule, Tier,
};
use strait_policy::selector::LabelSelector;
use strait_policy::tables::{DirectionTables, EndpointTables};
use strait_policy::view::{ClusterView, IdentityLabels, LocalEndpoint};

use super::dataplane::{Dataplane, Installed};
use super::fake::{Call, FakeDataplane, FakeHost};
use super::reconcile::ReconcileConfig;
use super::store::PolicyStore;
use super::store::tests::{deny_ingress, namespace_doc, policy_doc};
use super::{PolicyAgent, PolicyConfig};
use crate::store::embedded::EmbeddedStore;
use crate::store::{PREFIX, Store};

const WAIT: Duration = Duration::from_secs(10);

struct Bed {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    dp: Arc<FakeDataplane>,
    host: Arc<FakeHost>,
    agent: PolicyAgent,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn bed_with(
    dp: FakeDataplane,
    before_start: impl AsyncFnOnce(&Arc<dyn Store>, &FakeHost),
) -> Bed {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("s.redb"))
        .await
        .unwrap();
    let dp = Arc::new(dp);
    let host = Arc::new(FakeHost::default());
    before_start(&store, &host).await;
    let mut rc = ReconcileConfig::new("a", Mode::Enforce);
    rc.retry = Duration::from_millis(50);
    let agent = PolicyAgent::with_reconcile(
        rc,
        PolicyConfig::new("a", PolicyMode::Enforce),
        store.clone(),
        dp.clone(),
        host.clone(),
    );
    let (stop, rx) = tokio::sync::watch::channel(false);
    agent.spawn(rx);
    Bed {
        _dir: dir,
        store,
        dp,
        host,
        agent,
        stop,
    }
}

async fn bed(before_start: impl AsyncFnOnce(&Arc<dyn Store>, &FakeHost)) -> Bed {
    bed_with(FakeDataplane::default(), before_start).await
}

fn record_key(node: &str, id: &str) -> String {
    format!("{PREFIX}endpoints/{node}/{id}")
}

/// A record as attach writes it (version 2), with `labels` in namespace `ns`.
fn record(
    node: &str,
    id: &str,
    link: &str,
    ip: &str,
    ns: &str,
    labels: &[(&str, &str)],
) -> Vec<u8> {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
    serde_json::to_vec(&serde_json::json!({
        "version": 2, "id": id, "node": node, "network": "n", "container_id": id,
        "ifname": "eth0", "netns": "/run/netns/x", "host_ifname": link,
        "mac": "02:00:00:00:00:01", "host_mac": "02:00:00:00:00:02",
        "ips": [ip], "mtu": 1500, "labels": labels, "handle": id, "created": 1,
        "namespace": ns,
    }))
    .unwrap()
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = tokio::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if t0.elapsed() > WAIT {
            panic!("{what}: not within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn entry(dp: &FakeDataplane, ifindex: u32) -> Option<Installed> {
    dp.lock().entries.get(&ifindex).cloned()
}

/// What the compiler makes of `policies` for one endpoint, with `identities` known.
fn expected(
    policies: Vec<Policy>,
    namespaces: &[(&str, &[(&str, &str)])],
    identities: &BTreeMap<u32, IdentityLabels>,
    ep: LocalEndpoint,
) -> EndpointTables {
    let mut view = ClusterView {
        identities: identities.clone(),
        ..Default::default()
    };
    for (ns, labels) in namespaces {
        view.namespaces.insert(
            ns.to_string(),
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }
    for il in identities.values() {
        view.namespaces.entry(il.namespace.clone()).or_default();
    }
    Compiler::new(policies, Mode::Enforce).compile(&view, &ep)
}

fn local(identity: u32, ns: &str, labels: &[(&str, &str)]) -> LocalEndpoint {
    LocalEndpoint {
        identity,
        namespace: ns.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        named_ports: vec![],
    }
}

async fn identity_in_record(store: &Arc<dyn Store>, key: &str) -> Option<u32> {
    let kv = store.get(key).await.unwrap()?;
    super::endpoints::decode(key, &kv.value).unwrap().identity
}

#[tokio::test]
async fn an_applied_policy_is_installed_as_compiled_and_the_revision_reported() {
    let b = bed(async |store, host| {
        host.set_link("strait1", 7);
        let key = record_key("a", "web");
        store
            .put(
                &key,
                record(
                    "a",
                    "web",
                    "strait1",
                    "10.0.0.5/32",
                    "prod",
                    &[("app", "web")],
                ),
                None,
            )
            .await
            .unwrap();
    })
    .await;
    // The endpoint gets its identity (written into its record) and an open entry.
    let key = record_key("a", "web");
    let installed = wait_for("first install", || entry(&b.dp, 7)).await;
    assert!(!installed.tables.ingress.isolated);
    let id = installed.identity;
    let mut recorded = None;
    for _ in 0..200 {
        recorded = identity_in_record(&b.store, &key).await;
        if recorded.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        recorded,
        Some(id),
        "the record names the identity installed"
    );

    let policy = deny_ingress("prod", "deny", "web");
    let rev = PolicyStore::new(b.store.clone())
        .apply(&[policy_doc(policy.clone())])
        .await
        .unwrap();
    let identities: BTreeMap<u32, IdentityLabels> =
        [(id, super::identity::tests::il("prod", &[("app", "web")]))].into();
    let want = expected(
        vec![policy],
        &[],
        &identities,
        local(id, "prod", &[("app", "web")]),
    );
    assert!(want.ingress.isolated, "the policy isolates the endpoint");
    wait_for("the policy's tables", || {
        entry(&b.dp, 7).filter(|i| i.tables == super::datapath::canonical(&want))
    })
    .await;
    wait_for("applied revision", || {
        (b.agent.status().applied_revision >= rev).then_some(())
    })
    .await;
    let st = b.agent.status();
    assert_eq!((st.endpoints_enforced, st.policies), (1, 1));
    // The ipcache maps the endpoint's address to its identity.
    assert_eq!(
        b.dp.read_ipcache()
            .unwrap()
            .get(&"10.0.0.5/32".parse().unwrap()),
        Some(&id)
    );
    // Nothing changed: nothing installed again.
    let installs = b.dp.installs();
    PolicyStore::new(b.store.clone())
        .apply(&[namespace_doc("unrelated", &[])])
        .await
        .unwrap();
    let rev2 = b.store.revision().await.unwrap();
    wait_for("second revision applied", || {
        (b.agent.status().applied_revision >= rev2).then_some(())
    })
    .await;
    assert_eq!(
        b.dp.installs(),
        installs,
        "unchanged tables are not installed again"
    );
}

/// A policy in `prod` for app=web allowing ingress from namespaces labelled team=x.
fn from_team_x() -> Policy {
    Policy {
        key: PolicyKey::K8s {
            namespace: "prod".into(),
            name: "from-team-x".into(),
        },
        tier: Tier::Namespaced,
        audit: false,
        subject: EndpointSelector {
            namespaces: NamespaceScope::Only("prod".into()),
            pods: LabelSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                match_expressions: vec![],
            },
        },
        ingress: Some(vec![Rule {
            action: Action::Allow,
            peers: vec![Peer::Endpoints(EndpointSelector {
                namespaces: NamespaceScope::Selector(LabelSelector {
                    match_labels: [("team".to_string(), "x".to_string())].into(),
                    match_expressions: vec![],
                }),
                pods: LabelSelector::everything(),
            })],
            ports: vec![],
        }]),
        egress: None,
    }
}

fn allows_identity(t: &DirectionTables, id: u32) -> bool {
    t.identities.keys().any(|(i, _)| *i == id)
}

#[tokio::test]
async fn namespace_labels_changing_recompiles_the_endpoints() {
    let b = bed(async |store, host| {
        host.set_link("strait1", 7);
        store
            .put(
                &record_key("a", "web"),
                record(
                    "a",
                    "web",
                    "strait1",
                    "10.0.0.5/32",
                    "prod",
                    &[("app", "web")],
                ),
                None,
            )
            .await
            .unwrap();
        // A client on another node, already with its identity.
        let ids = super::identity::Identities::new(store.clone(), Duration::from_secs(300));
        let client = ids
            .resolve(&super::identity::tests::il("dev", &[("app", "cli")]))
            .await
            .unwrap();
        let mut rec: serde_json::Value = serde_json::from_slice(&record(
            "b",
            "cli",
            "strait9",
            "10.0.1.5/32",
            "dev",
            &[("app", "cli")],
        ))
        .unwrap();
        rec["identity"] = client.into();
        store
            .put(
                &record_key("b", "cli"),
                serde_json::to_vec(&rec).unwrap(),
                None,
            )
            .await
            .unwrap();
    })
    .await;
    let ps = PolicyStore::new(b.store.clone());
    ps.apply(&[policy_doc(from_team_x())]).await.unwrap();
    let client = super::identity::Identities::new(b.store.clone(), Duration::from_secs(300))
        .resolve(&super::identity::tests::il("dev", &[("app", "cli")]))
        .await
        .unwrap();
    let isolated = wait_for("isolated", || {
        entry(&b.dp, 7).filter(|i| i.tables.ingress.isolated)
    })
    .await;
    assert!(!allows_identity(&isolated.tables.ingress, client));
    ps.apply(&[namespace_doc("dev", &[("team", "x")])])
        .await
        .unwrap();
    wait_for("the client's namespace now matches", || {
        entry(&b.dp, 7).filter(|i| allows_identity(&i.tables.ingress, client))
    })
    .await;
    // And back.
    ps.delete("namespaces/dev").await.unwrap();
    wait_for("the client's namespace no longer matches", || {
        entry(&b.dp, 7)
            .filter(|i| i.tables.ingress.isolated && !allows_identity(&i.tables.ingress, client))
    })
    .await;
}

#[tokio::test]
async fn an_endpoint_that_is_gone_loses_its_entries() {
    let b = bed(async |store, host| {
        host.set_link("strait1", 7);
        host.set_link("strait2", 8);
        for (id, link, ip) in [
            ("one", "strait1", "10.0.0.5/32"),
            ("two", "strait2", "10.0.0.6/32"),
        ] {
            store
                .put(
                    &record_key("a", id),
                    record("a", id, link, ip, "default", &[]),
                    None,
                )
                .await
                .unwrap();
        }
    })
    .await;
    wait_for("both installed", || {
        (b.dp.lock().entries.len() == 2).then_some(())
    })
    .await;
    b.store.delete(&record_key("a", "two")).await.unwrap();
    b.host.drop_link("strait2");
    wait_for("the gone one removed", || {
        b.dp.lock().calls.contains(&Call::Remove(8)).then_some(())
    })
    .await;
    assert!(entry(&b.dp, 7).is_some() && entry(&b.dp, 8).is_none());
    // Its address leaves the ipcache.
    wait_for("ipcache without it", || {
        (!b.dp
            .lock()
            .ipcache
            .contains_key(&"10.0.0.6/32".parse().unwrap()))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_restarted_agent_installs_before_it_removes_anything() {
    let stale = Installed {
        identity: 999,
        generation: 4,
        tables: EndpointTables::default(),
    };
    let previous = FakeDataplane::holding([(7, stale.clone()), (9, stale)].into());
    let b = bed_with(previous, async |store, host| {
        host.set_link("strait1", 7);
        store
            .put(
                &record_key("a", "web"),
                record(
                    "a",
                    "web",
                    "strait1",
                    "10.0.0.5/32",
                    "default",
                    &[("app", "web")],
                ),
                None,
            )
            .await
            .unwrap();
        PolicyStore::new(store.clone())
            .apply(&[policy_doc(deny_ingress("default", "deny", "web"))])
            .await
            .unwrap();
    })
    .await;
    wait_for("the leftover removed", || {
        b.dp.lock().calls.contains(&Call::Remove(9)).then_some(())
    })
    .await;
    let calls = b.dp.lock().calls.clone();
    let install = calls
        .iter()
        .position(|c| matches!(c, Call::Install(7, _)))
        .expect("the surviving endpoint installed");
    let remove = calls.iter().position(|c| *c == Call::Remove(9)).unwrap();
    assert!(install < remove, "{calls:?}");
    assert!(
        !calls.contains(&Call::Remove(7)),
        "never without enforcement: {calls:?}"
    );
    let e = entry(&b.dp, 7).unwrap();
    assert!(e.tables.ingress.isolated && e.identity != 999);
}

#[tokio::test]
async fn a_label_change_gives_the_endpoint_a_new_identity() {
    let b = bed(async |store, host| {
        host.set_link("strait1", 7);
        store
            .put(
                &record_key("a", "web"),
                record(
                    "a",
                    "web",
                    "strait1",
                    "10.0.0.5/32",
                    "default",
                    &[("app", "web")],
                ),
                None,
            )
            .await
            .unwrap();
    })
    .await;
    let first = wait_for("installed", || entry(&b.dp, 7)).await.identity;
    let key = record_key("a", "web");
    // What `netctl endpoint label web app=db` does: the labels change in the record.
    let mut rec: serde_json::Value = loop {
        let kv = b.store.get(&key).await.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
        if v.get("identity").is_some() {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    rec["labels"] = serde_json::json!({"app": "db"});
    b.store
        .put(&key, serde_json::to_vec(&rec).unwrap(), None)
        .await
        .unwrap();
    let second = wait_for("a new identity installed", || {
        entry(&b.dp, 7)
            .map(|i| i.identity)
            .filter(|id| *id != first)
    })
    .await;
    let ids = super::identity::Identities::new(b.store.clone(), Duration::from_secs(300));
    assert_eq!(
        ids.resolve(&super::identity::tests::il("default", &[("app", "db")]))
            .await
            .unwrap(),
        second
    );
    let mut recorded = None;
    for _ in 0..400 {
        recorded = identity_in_record(&b.store, &key).await;
        if recorded == Some(second) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(recorded, Some(second), "the record was rewritten");
}

#[tokio::test]
async fn add_installs_before_the_loop_sees_the_record_and_del_removes() {
    let b = bed(async |_, _| {}).await;
    wait_for("first pass", || {
        (b.agent.status().last_error.is_none()).then_some(())
    })
    .await;
    let ep = strait_api::Endpoint {
        id: "web".into(),
        node: "a".into(),
        network: "n".into(),
        container_id: "web".into(),
        ifname: "eth0".into(),
        netns: "/run/netns/x".into(),
        host_ifname: "strait1".into(),
        mac: "02:00:00:00:00:01".into(),
        host_mac: "02:00:00:00:00:02".into(),
        ips: vec!["10.0.0.5/32".parse().unwrap()],
        mtu: 1500,
        labels: [("app".to_string(), "web".to_string())].into(),
        handle: "web".into(),
        created: 1,
        host_ports: false,
        port_mappings: Vec::new(),
        namespace: "default".into(),
        pod: None,
        named_ports: vec![],
        identity: None,
    };
    let id = b
        .agent
        .endpoint_identity("default", &ep.labels)
        .await
        .unwrap();
    b.host.set_link("strait1", 7);
    b.agent
        .enforce_new(&record_key("a", "web"), &ep, "default", vec![], id, 7)
        .await
        .unwrap();
    // No policy in the cluster: tables installed, no programs yet (see
    // `Enforced::attached`).
    assert_eq!(b.dp.lock().attached.get(&7), None);
    assert_eq!(entry(&b.dp, 7).map(|i| i.identity), Some(id));
    // Passes that do not know the record yet leave the entry alone.
    PolicyStore::new(b.store.clone())
        .apply(&[namespace_doc("x", &[])])
        .await
        .unwrap();
    let rev = b.store.revision().await.unwrap();
    wait_for("a pass", || {
        (b.agent.status().applied_revision >= rev).then_some(())
    })
    .await;
    assert!(
        entry(&b.dp, 7).is_some(),
        "the loop removed an endpoint ADD installed"
    );
    // DEL: the attacher's event removes the entries at once.
    use crate::attach::events::{EndpointEvent, EndpointSubscriber};
    b.agent.endpoint_event(&EndpointEvent::Detached {
        host_ifname: "strait1",
    });
    assert!(entry(&b.dp, 7).is_none());
}

#[tokio::test]
async fn show_compares_the_compiled_tables_with_the_kernel() {
    let b = bed(async |store, host| {
        host.set_link("strait1", 7);
        store
            .put(
                &record_key("a", "web"),
                record(
                    "a",
                    "web",
                    "strait1",
                    "10.0.0.5/32",
                    "prod",
                    &[("app", "web")],
                ),
                None,
            )
            .await
            .unwrap();
        PolicyStore::new(store.clone())
            .apply(&[policy_doc(deny_ingress("prod", "deny", "web"))])
            .await
            .unwrap();
    })
    .await;
    wait_for("isolated", || {
        entry(&b.dp, 7).filter(|i| i.tables.ingress.isolated)
    })
    .await;
    wait_for("record seen with identity", || {
        b.agent.show("web").ok().filter(|v| v.in_sync)
    })
    .await;
    // The kernel loses the isolation: show says so.
    b.dp.lock()
        .entries
        .get_mut(&7)
        .unwrap()
        .tables
        .ingress
        .isolated = false;
    let v = b.agent.show("web").unwrap();
    assert!(!v.in_sync);
    assert!(
        v.ingress
            .entries
            .iter()
            .any(|e| e.peer == "endpoint" && e.state == strait_api::policy::EntryState::Missing),
        "{:?}",
        v.ingress.entries
    );
    assert_eq!(v.ingress.rules.len(), 0, "deny-all has no rules");
    // A trace from anywhere into it is denied by the store and, now, allowed by the kernel.
    let t = b.agent.trace("10.9.9.9", "web", 6, 80).unwrap();
    let step = t.steps.iter().find(|s| s.direction == "ingress").unwrap();
    assert!(!step.allowed);
    assert_eq!(step.selected_by, vec!["prod/deny".to_string()]);
    assert!(step.kernel.as_ref().unwrap().allowed && step.differs);
    assert!(matches!(
        b.agent.show("nope"),
        Err(super::PolicyError::NoEndpoint(_))
    ));

    // A denial the datapath reports reaches `events()` subscribers, named.
    let mut events = b.agent.events();
    let id = v.identity.unwrap();
    b.agent.publish(&super::dataplane::RawFlowEvent {
        monotonic_ns: 1,
        ifindex: 7,
        direction: Direction::Ingress,
        src: "10.9.9.9".parse().unwrap(),
        dst: "10.0.0.5".parse().unwrap(),
        src_port: 40000,
        dst_port: 80,
        protocol: 6,
        src_identity: strait_policy::tables::IDENTITY_WORLD,
        dst_identity: id,
        allowed: false,
        audit: false,
        rule: None,
        log_rule: None,
    });
    let e = events.try_recv().expect("an event");
    assert_eq!(e.endpoint.as_deref(), Some("web"));
    assert_eq!(e.node, "a");
    assert_eq!(
        (e.direction.as_str(), e.protocol.as_str()),
        ("ingress", "tcp")
    );
    assert_eq!(e.dst.endpoint.as_deref(), Some("web"));
    assert_eq!(e.dst.namespace.as_deref(), Some("prod"));
    assert_eq!(e.dst.labels.get("app").map(String::as_str), Some("web"));
    assert!(e.src.endpoint.is_none() && !e.allowed);
}

#[tokio::test]
async fn a_refused_apply_writes_nothing() {
    let b = bed(async |_, _| {}).await;
    let before = b.store.revision().await.unwrap();
    let text = r#"[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ok"}},{"apiVersion":"v1","kind":"Namespace","metadata":{}}]"#;
    let err = b.agent.apply(text).await.unwrap_err();
    assert!(err.to_string().contains("metadata.name"), "{err}");
    assert!(b.agent.list().await.unwrap().is_empty());
    assert_eq!(b.store.revision().await.unwrap(), before);
    let out = b
        .agent
        .apply(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ok","labels":{"team":"x"}}}"#)
        .await
        .unwrap();
    assert_eq!(out.keys, vec!["namespaces/ok".to_string()]);
    let got = b.agent.get("namespaces/ok").await.unwrap().unwrap();
    assert_eq!(got.revision, out.revision);
    assert_eq!(got.normalized["team"], "x");
}
