//! The API as a client sees it: status codes and bodies, before start-up has built
//! the owners and after, on an embedded store.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use strait_api::{FabricMode, code};

use super::bgp::{bgp_handle, delete_external_peer, external_peers, put_external_peer};
use super::{AgentFacts, AppState, Owners, Shared};
use crate::attach::{Attacher, AttacherConfig};
use crate::fabric::bgp::external::ExternalPeers;
use crate::fabric::bgp::peers_prefix;
use crate::metrics::Metrics;
use crate::node::{Registry, RegistryConfig, Underlay};
use crate::store::Store;

fn state(fabric_mode: FabricMode) -> AppState {
    let s = AppState::new(
        AgentFacts {
            fabric_mode,
            node: "n1".into(),
            store_description: "embedded:/tmp/x".into(),
            state_dir: "/tmp".into(),
            pools: vec![],
        },
        Arc::new(Metrics::new()),
    );
    s.set_phase("registering the node");
    s
}

#[test]
fn bgp_paths_say_why_there_is_no_speaker() {
    let e = bgp_handle(&state(FabricMode::Vxlan))
        .err()
        .expect("not bgp");
    assert_eq!(e.0.code, code::NOT_CONFIGURED);
    assert!(e.0.message.contains("fabric vxlan, not bgp"), "{e:?}");
    assert_eq!(e.into_response().status(), StatusCode::NOT_FOUND);
    let e = bgp_handle(&state(FabricMode::Bgp))
        .err()
        .expect("not started");
    assert_eq!(e.0.code, code::TRY_AGAIN_LATER);
    assert!(e.0.message.contains("registering the node"), "{e:?}");
    assert_eq!(e.into_response().status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// A state whose owners work on an embedded store in `dir` (the attacher on the real
/// netlink handle, which these tests never use).
pub(super) async fn with_store(dir: &Path) -> (Shared, Arc<dyn Store>) {
    let store: Arc<dyn Store> =
        crate::store::embedded::EmbeddedStore::open(&dir.join("store.redb"))
            .await
            .expect("store");
    let record = strait_api::NodeRecord {
        name: "n1".into(),
        fabric: FabricMode::Vxlan,
        agent_version: "test".into(),
        ..Default::default()
    };
    let registry = Registry::new(
        store.clone(),
        RegistryConfig {
            lease_ttl: Duration::from_secs(15),
        },
        record,
    );
    let ipam = Arc::new(
        crate::ipam::Ipam::new(
            store.clone(),
            "n1".into(),
            crate::ipam::IpamConfig::with_pools(vec!["10.9.0.0/24".parse().expect("pool")]),
        )
        .await
        .expect("ipam"),
    );
    let host = crate::netlink::Netlink::connect().expect("netlink socket");
    let fabric = crate::fabric::Fabric::new(
        store.clone(),
        host.clone(),
        crate::fabric::FabricConfig::new("n1", FabricMode::None, Underlay::default()),
    );
    let attacher = Attacher::new(
        AttacherConfig {
            node: "n1".into(),
            mtu_less: Default::default(),
            mtu: 1500,
            gc_grace: Duration::from_secs(900),
            owner: "strait:test".into(),
            state_dir: None,
        },
        store.clone(),
        ipam,
        host,
    );
    let s = Arc::new(state(FabricMode::Vxlan));
    s.set_owners(Owners {
        attacher,
        registry,
        fabric: fabric.handle(),
        bgp: None,
        peers: ExternalPeers::new(store.clone()),
        ipsec: crate::ipsec::IpsecSettingsStore::new(store.clone()),
        ipsec_peers: crate::ipsec::IpsecPeers::new(store.clone()),
    });
    (s, store)
}

pub(super) async fn body(r: Response) -> (StatusCode, serde_json::Value) {
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, serde_json::from_slice(&bytes).expect("json body"))
}

async fn stored(store: &Arc<dyn Store>) -> Vec<String> {
    let range = store.range(&peers_prefix()).await.expect("range");
    range.kvs.into_iter().map(|kv| kv.key).collect()
}

#[tokio::test]
async fn external_peers_are_checked_written_listed_and_removed() {
    let dir = tempfile::tempdir().expect("dir");
    // Before the store is open: try again later, whatever the fabric.
    let starting = Arc::new(state(FabricMode::Vxlan));
    let r = external_peers(State(starting)).await.into_response();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);

    let (s, store) = with_store(dir.path()).await;
    let put = |name: &str, json: &str| {
        let s = s.clone();
        let (name, json) = (name.to_string(), json.to_string());
        async move {
            put_external_peer(State(s), UrlPath(name), Bytes::from(json))
                .await
                .into_response()
        }
    };
    // Bad input: 400 with the reason, nothing written.
    for (name, json, reason) in [
        ("tor-a", r#"{"address":"10.0.0.253","asn":0}"#, "reserved"),
        (
            "tor a",
            r#"{"address":"10.0.0.253","asn":65000}"#,
            "not allowed",
        ),
        (
            "tor-a",
            r#"{"address":"10.0.0.253","asn":65000,"port":0}"#,
            "port 0",
        ),
        (
            "tor-a",
            r#"{"address":"10.0.0.253"}"#,
            "malformed request body",
        ),
    ] {
        let (status, v) = body(put(name, json).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name} {json}: {v}");
        let msg = v["msg"]
            .as_str()
            .or(v["message"].as_str())
            .unwrap_or_default();
        assert!(msg.contains(reason), "{name} {json}: {v}");
    }
    let long_key = format!(
        r#"{{"address":"10.0.0.253","asn":65000,"md5_key":"{}"}}"#,
        "k".repeat(81)
    );
    let (status, v) = body(put("tor-a", &long_key).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(stored(&store).await.is_empty(), "nothing written");

    // A good one is stored as ExternalPeer JSON and listed without its key.
    let (status, v) = body(
        put(
            "tor-a",
            r#"{"address":"10.0.0.253","asn":65000,"node":"h1","md5_key":"s3cret"}"#,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let kv = store
        .get(&format!("{}tor-a", peers_prefix()))
        .await
        .expect("get")
        .expect("stored");
    let peer: strait_api::bgp::ExternalPeer =
        serde_json::from_slice(&kv.value).expect("ExternalPeer");
    assert_eq!(peer.md5_key.as_deref(), Some("s3cret"));
    assert_eq!(peer.node.as_deref(), Some("h1"));
    let (status, v) = body(external_peers(State(s.clone())).await.into_response()).await;
    assert_eq!(status, StatusCode::OK);
    let rows: Vec<strait_api::bgp::ExternalPeerEntry> =
        serde_json::from_value(v.clone()).expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].name.as_str(), rows[0].asn, rows[0].md5),
        ("tor-a", 65000, true)
    );
    assert!(!v.to_string().contains("s3cret"), "{v}");

    // Removed once; the second time there is none.
    let del = |name: &str| {
        let s = s.clone();
        let name = name.to_string();
        async move {
            delete_external_peer(State(s), UrlPath(name))
                .await
                .into_response()
        }
    };
    assert_eq!(del("tor-a").await.status(), StatusCode::OK);
    assert!(stored(&store).await.is_empty());
    let (status, v) = body(del("tor-a").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert!(v.to_string().contains("no external BGP peer"), "{v}");
}

#[tokio::test]
async fn cni_calls_before_start_up_say_try_again_and_del_is_queued() {
    let dir = tempfile::tempdir().expect("dir");
    let mut s = state(FabricMode::None);
    s.state_dir = dir.path().to_path_buf();
    let s = Arc::new(s);
    let add = super::cni::add(
        State(s.clone()),
        Bytes::from(r#"{"network":"n","container_id":"c","ifname":"eth0","netns":"/x"}"#),
    )
    .await
    .into_response();
    let (status, v) = body(add).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["code"], code::TRY_AGAIN_LATER, "{v}");
    assert!(
        v.to_string()
            .contains("agent is starting: registering the node"),
        "{v}"
    );

    let del = super::cni::del(
        State(s.clone()),
        Bytes::from(r#"{"network":"n","container_id":"c","ifname":"eth0"}"#),
    )
    .await
    .into_response();
    assert_eq!(del.status(), StatusCode::OK);
    let q = strait_api::queue::pending(dir.path()).expect("queue");
    assert_eq!(q.requests.len(), 1, "DEL queued for start-up to apply");

    let bad = super::cni::add(State(s), Bytes::from("{"))
        .await
        .into_response();
    let (status, v) = body(bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["code"], code::DECODE_FAILURE, "{v}");
}

/// An endpoint record of `node` as attach writes it, straight into the store.
async fn put_endpoint(store: &Arc<dyn Store>, node: &str, cid: &str, labels: &[(&str, &str)]) {
    use crate::attach::records::{EndpointRecord, endpoint_key, schema};
    let id = format!("stnet.{cid}.eth0");
    let ep: strait_api::Endpoint = serde_json::from_value(serde_json::json!({
        "id": id, "node": node, "network": "stnet", "container_id": cid,
        "ifname": "eth0", "netns": "/run/netns/x", "host_ifname": "strait0",
        "mac": "02:00:00:00:00:01", "host_mac": "02:00:00:00:00:02",
        "ips": ["10.9.0.5/32"], "mtu": 1500, "handle": id, "created": 0,
        "namespace": "ns1", "pod": "p1",
        "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<std::collections::BTreeMap<_, _>>(),
    }))
    .expect("an endpoint");
    let record = EndpointRecord::try_from(ep).expect("a record");
    store
        .put(&endpoint_key(node, &id), schema::encode(&record), None)
        .await
        .expect("put");
}

/// The labels of `node`'s endpoint `cid` as the store has them.
async fn stored_labels(store: &Arc<dyn Store>, node: &str, cid: &str) -> serde_json::Value {
    let key = crate::attach::records::endpoint_key(node, &format!("stnet.{cid}.eth0"));
    let kv = store.get(&key).await.expect("get").expect("stored");
    let json: serde_json::Value = serde_json::from_slice(&kv.value).expect("json");
    json.get("labels").cloned().unwrap_or(serde_json::json!({}))
}

#[tokio::test]
async fn endpoint_labels_are_set_removed_overwritten_and_refused_whole() {
    use super::endpoints::label;
    let dir = tempfile::tempdir().expect("dir");
    let starting = Arc::new(state(FabricMode::Vxlan));
    let r = label(State(starting), UrlPath("x".into()), Bytes::from("{}"))
        .await
        .into_response();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);

    let (s, store) = with_store(dir.path()).await;
    put_endpoint(&store, "n1", "c0ffee01", &[("app", "web")]).await;
    put_endpoint(&store, "n2", "beef02", &[("app", "db")]).await;
    let post = |id: &str, body: serde_json::Value| {
        let s = s.clone();
        let id = id.to_string();
        async move {
            let r = label(State(s), UrlPath(id), Bytes::from(body.to_string())).await;
            self::body(r.into_response()).await
        }
    };
    use serde_json::json;

    // Set, by a prefix of the container ID (as `netctl endpoints` shows it).
    let (status, v) = post("c0ff", json!({"set": {"tier": "db"}})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["labels"], json!({"app": "web", "tier": "db"}), "{v}");
    assert_eq!(v["namespace"], "ns1", "the rest of the endpoint stays: {v}");
    assert_eq!(
        stored_labels(&store, "n1", "c0ffee01").await,
        json!({"app": "web", "tier": "db"})
    );

    // A changed value needs overwrite; refused, nothing changes.
    let (status, v) = post("stnet.c0ffee01.eth0", json!({"set": {"app": "api"}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["code"], code::INVALID_CONFIG, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("--overwrite"),
        "{v}"
    );
    let (status, v) = post(
        "c0ffee01",
        json!({"set": {"app": "api"}, "remove": ["tier"], "overwrite": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["labels"], json!({"app": "api"}), "{v}");

    // Bad labels: refused whole, naming the label, nothing changed.
    for (body, named) in [
        (json!({"set": {"ok": "1", "bad key": "x"}}), "bad key"),
        (json!({"set": {"app": "-x"}, "overwrite": true}), "app="),
        (
            json!({"set": {"a": "1"}, "remove": ["a"]}),
            "both set and removed",
        ),
        (json!({}), "no labels"),
    ] {
        let (status, v) = post("c0ffee01", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(named),
            "{body}: {v}"
        );
    }
    let (status, v) = post("c0ffee01", json!({"set": 5})).await;
    assert_eq!(
        (status, v["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(code::DECODE_FAILURE))
    );
    assert_eq!(
        stored_labels(&store, "n1", "c0ffee01").await,
        json!({"app": "api"})
    );

    // Another node's endpoint: refused naming that node; its record is untouched.
    let (status, v) = post("beef", json!({"set": {"tier": "x"}})).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{v}");
    assert_eq!(v["code"], code::OTHER_NODE, "{v}");
    assert!(v["message"].as_str().unwrap().contains("on node n2"), "{v}");
    assert_eq!(
        stored_labels(&store, "n2", "beef02").await,
        json!({"app": "db"})
    );

    // No such endpoint; an ID two endpoints share.
    let (status, v) = post("zzz", json!({"set": {"a": "b"}})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    let (status, v) = post("stnet", json!({"set": {"a": "b"}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("names 2 endpoints"),
        "{v}"
    );
}

#[tokio::test]
async fn external_ipsec_peers_are_checked_written_shown_without_their_key_and_removed() {
    use super::ipsec::{apply_peers, delete_peer, get_peer, list_peers, put_peer};
    const KEY: &str = "correct horse battery staple";
    let dir = tempfile::tempdir().expect("dir");
    let (s, store) = with_store(dir.path()).await;
    let peer = |name: &str, secret: &str| {
        serde_json::json!({"name": name, "site": "dc", "address": "198.51.100.7",
            "auth": {"method": "psk", "secret": secret},
            "remote_networks": ["192.168.50.0/24"]})
    };
    let put = |name: &str, json: serde_json::Value| {
        let s = s.clone();
        let name = name.to_string();
        async move {
            put_peer(State(s), UrlPath(name), Bytes::from(json.to_string()))
                .await
                .into_response()
        }
    };
    let prefix = crate::ipsec::peers::peers_prefix();
    let stored = async || store.range(&prefix).await.expect("range").kvs.len();

    // Bad input: 400 with the reason, nothing written.
    for (name, json, reason) in [
        (
            "other",
            peer("onprem", KEY),
            "the path names peer \"other\"",
        ),
        ("onprem", peer("onprem", "short"), "at least 16"),
        (
            "onprem",
            serde_json::json!({"name": "onprem"}),
            "malformed request body",
        ),
    ] {
        let (status, v) = body(put(name, json).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.contains(reason), "{v} (want {reason:?})");
    }
    let apply = |json: serde_json::Value| {
        let s = s.clone();
        async move {
            apply_peers(State(s), Bytes::from(json.to_string()))
                .await
                .into_response()
        }
    };
    let one_bad = serde_json::json!([peer("a", KEY), peer("b", "short")]);
    let (status, v) = body(apply(one_bad).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(stored().await, 0, "nothing written");

    // Good ones: stored with the key, shown without it.
    let (status, v) = body(put("onprem", peer("onprem", KEY)).await).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(!v.to_string().contains(KEY), "{v}");
    let (status, v) = body(apply(serde_json::json!([peer("a", KEY), peer("b", KEY)])).await).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(stored().await, 3);
    let (_, v) = body(list_peers(State(s.clone())).await.into_response()).await;
    assert_eq!(v.as_array().map(Vec::len), Some(3), "{v}");
    assert!(!v.to_string().contains(KEY), "{v}");
    let got = |name: &str| {
        let s = s.clone();
        let name = name.to_string();
        async move { get_peer(State(s), UrlPath(name)).await.into_response() }
    };
    let (status, v) = body(got("onprem").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v["auth"],
        serde_json::json!({"method": "psk", "secret_file": null})
    );

    let del = |name: &str| {
        let s = s.clone();
        let name = name.to_string();
        async move { delete_peer(State(s), UrlPath(name)).await.into_response() }
    };
    assert_eq!(del("onprem").await.status(), StatusCode::OK);
    assert_eq!(del("onprem").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(got("onprem").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(stored().await, 2);
}
