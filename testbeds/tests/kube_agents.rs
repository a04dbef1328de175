//! strait's agents against a real Kubernetes API server: each scenario on a small
//! cluster of its own (two hosts, vxlan) whose agents run with `--kubeconfig` of the
//! `kube-system/strait` service account and the project's RBAC alone
//! (`ClusterOpts::kubernetes`). What a user does is done with `kubectl`; what strait
//! made of it is read with `netctl` on the agents, and with `kubectl` on the objects the
//! agents write (Nodes, Events).
//!
//! * the API server's Namespaces and NetworkPolicies show in `netctl policy list` of
//!   every agent with origin `kubernetes`, and `netctl` cannot change them;
//! * an object strait refuses is reported (store, `netctl kubernetes`, a Warning Event)
//!   and changes nothing else, its last good version staying;
//! * the watches resume after the API server is killed and restarted, and after the
//!   agents were down while objects changed;
//! * another agent takes over writing when the leader dies;
//! * every Node gets its network condition and strait's annotations;
//! * `--ipam kubernetes` gives addresses inside the Nodes' podCIDRs;
//! * an agent without the rights to a kind says so and networks all the same.
//!
//! Root, etcd and the kube binaries (`scripts/kube-build.sh`) needed. One cluster at a
//! time (a lock): a cluster with an API server is heavy. The machine may be shared and
//! slow: waits are generous, timings are printed, never asserted.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde_json::{Value, json};
use strait_api::kube::{KindView, KubeStatusView};
use strait_api::{ClientError, paths};
use strait_testbeds::cluster::{Cluster, ClusterOpts, Fabric, KubeBed, probe};
use strait_testbeds::kube::network_unavailable;
use strait_testbeds::wait_until;

/// How long anything the agents do in reaction to the API server may take: a round
/// of the cluster's objects runs on every change and at least every 10 s.
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);

/// How long a new writer may take after the leader's agent went: a killed leader's
/// key lives with its node lease (default TTL 15 s; its node's next agent takes it at
/// once), and a round runs every 10 s.
const TAKEOVER: Duration = Duration::from_secs(60);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn guards(test: &str) -> bool {
    strait_testbeds::require_root(test)
        && strait_testbeds::etcd::require_etcd(test)
        && strait_testbeds::kube::require_kube(test)
}

/// A cluster of `hosts` hosts on vxlan with the API server, after `tweak`.
fn kube_cluster(hosts: usize, tweak: impl FnOnce(&mut ClusterOpts)) -> Cluster {
    let mut opts = ClusterOpts::new(hosts, Fabric::Vxlan);
    opts.kubernetes = Some(KubeBed::default());
    tweak(&mut opts);
    let started = Instant::now();
    let cluster = Cluster::start(opts);
    println!(
        "cluster {} with its API server up in {:.1?}",
        cluster.prefix,
        started.elapsed()
    );
    cluster
}

// ---------------------------------------------------------------------------------
// The API server's side.

fn namespace(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    })
}

fn network_policy(ns: &str, name: &str, annotations: Option<Value>, spec: Value) -> Value {
    let mut meta = json!({"name": name, "namespace": ns});
    if let Some(a) = annotations {
        meta["annotations"] = a;
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta,
        "spec": spec,
    })
}

/// Ingress to `app=<to>` from `app=<from>` on TCP `port`.
fn allow_spec(to: &str, from: &str, port: u16) -> Value {
    json!({
        "podSelector": {"matchLabels": {"app": to}},
        "policyTypes": ["Ingress"],
        "ingress": [{
            "from": [{"podSelector": {"matchLabels": {"app": from}}}],
            "ports": [{"protocol": "TCP", "port": port}],
        }],
    })
}

/// Every pod of the namespace isolated for ingress, nothing allowed.
fn deny_ingress_spec() -> Value {
    json!({"podSelector": {}, "policyTypes": ["Ingress"]})
}

fn pod(ns: &str, name: &str, node: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "registry.invalid/main:1"}],
        },
    })
}

/// `kubectl apply` of `objects` (one List), as the cluster's admin.
fn kube_apply(cluster: &Cluster, objects: &[Value]) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string();
    strait_testbeds::netpol::kubectl(cluster, &["apply", "-f", "-"], &list)
        .unwrap_or_else(|e| panic!("{e}\n--- objects ---\n{list}"));
}

/// `kubectl ARGS` as the cluster's admin, which must succeed; its output.
fn kubectl(cluster: &Cluster, args: &[&str]) -> String {
    strait_testbeds::netpol::kubectl(cluster, args, "").unwrap_or_else(|e| panic!("{e}"))
}

/// `kubectl get ARGS -o json`, parsed.
fn kubectl_json(cluster: &Cluster, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = cluster.kube().kubectl(&all);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl {all:?}: {}{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("kubectl {all:?}: {e}: {text}"))
}

/// The store keys the API server's Namespaces and NetworkPolicies make, read from the
/// API server.
fn api_keys(cluster: &Cluster) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for ns in items(&kubectl_json(cluster, &["namespaces"])) {
        keys.insert(format!("namespaces/{}", str_at(ns, "/metadata/name")));
    }
    for np in items(&kubectl_json(cluster, &["networkpolicies", "-A"])) {
        keys.insert(format!(
            "policy/k8s/{}/{}",
            str_at(np, "/metadata/namespace"),
            str_at(np, "/metadata/name")
        ));
    }
    keys
}

fn items(list: &Value) -> &[Value] {
    list["items"].as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

// ---------------------------------------------------------------------------------
// The agents' side.

/// `netctl ARGS` against host `host`'s agent with `stdin`: (exit code, stdout, stderr).
fn netctl(cluster: &Cluster, host: usize, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(strait_testbeds::bins::bin("netctl"))
        .arg("--socket")
        .arg(&cluster.host(host).agent.socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("exec netctl");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("netctl stdin");
    }
    let out = child.wait_with_output().expect("netctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `netctl -o json ARGS` on host `host`, parsed; `Err` with what it said otherwise
/// (an agent restarting, say), for polls.
fn try_netctl_json(cluster: &Cluster, host: usize, args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let (code, out, err) = netctl(cluster, host, &all, "");
    if code != 0 {
        return Err(format!(
            "netctl {all:?} on h{}: exit {code}: {out}{err}",
            host + 1
        ));
    }
    serde_json::from_str(&out).map_err(|e| format!("netctl {all:?}: {e}: {out}"))
}

/// `netctl -o json policy list` on host `host`: the stored objects, as JSON (so that
/// an absent `origin` can be told from one that says `netctl`).
fn policy_list(cluster: &Cluster, host: usize) -> Result<Vec<Value>, String> {
    let v = try_netctl_json(cluster, host, &["policy", "list"])?;
    v.as_array()
        .cloned()
        .ok_or_else(|| format!("policy list is not a list: {v}"))
}

fn object<'a>(objects: &'a [Value], key: &str) -> Option<&'a Value> {
    objects.iter().find(|o| o["key"] == key)
}

/// An object's origin as the JSON says it: absent means netctl.
fn origin(o: &Value) -> &str {
    o.get("origin").and_then(Value::as_str).unwrap_or("netctl")
}

/// The keys of `objects` whose origin is kubernetes, sorted, duplicates kept.
fn kube_keys(objects: &[Value]) -> Vec<String> {
    let mut keys: Vec<String> = objects
        .iter()
        .filter(|o| origin(o) == "kubernetes")
        .map(|o| o["key"].as_str().unwrap_or("").to_string())
        .collect();
    keys.sort();
    keys
}

/// Polls host `host`'s `netctl policy list` until `check` passes; the time it took.
fn wait_store(
    cluster: &Cluster,
    host: usize,
    what: &str,
    timeout: Duration,
    check: impl Fn(&[Value]) -> Result<(), String>,
) -> Duration {
    wait_until(what, timeout, POLL, || check(&policy_list(cluster, host)?))
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.describe()))
}

/// `key` is stored with origin kubernetes.
fn has_kube(objects: &[Value], key: &str) -> Result<(), String> {
    match object(objects, key) {
        Some(o) if origin(o) == "kubernetes" => Ok(()),
        Some(o) => Err(format!("{key} has origin {}", origin(o))),
        None => Err(format!("no {key} among {:?}", keys(objects))),
    }
}

fn keys(objects: &[Value]) -> Vec<&str> {
    objects.iter().filter_map(|o| o["key"].as_str()).collect()
}

/// `netctl -o json kubernetes` on host `host`.
fn kube_status(cluster: &Cluster, host: usize) -> Result<KubeStatusView, String> {
    let v = try_netctl_json(cluster, host, &["kubernetes"])?;
    serde_json::from_value(v.clone()).map_err(|e| format!("netctl kubernetes: {e}: {v}"))
}

fn kind<'a>(view: &'a KubeStatusView, kind: &str) -> Option<&'a KindView> {
    view.kinds.iter().find(|k| k.kind == kind)
}

/// The hosts whose agent says it writes the cluster's objects (of `among`).
fn leaders(cluster: &Cluster, among: &[usize]) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for &i in among {
        if kube_status(cluster, i)?.leader {
            out.push(i);
        }
    }
    Ok(out)
}

/// POST the documents to host `host`'s agent as `netctl policy apply` does; the
/// agent's refusal code, if it refused.
fn api_apply_code(cluster: &Cluster, host: usize, docs: &str) -> Option<u32> {
    let client = cluster.host(host).agent.client();
    match client.request("POST", paths::POLICIES, Some(docs.as_bytes())) {
        Ok(_) => None,
        Err(ClientError::Api(e)) => Some(e.code),
        Err(e) => panic!("POST {}: {e}", paths::POLICIES),
    }
}

/// DELETE `key` on host `host`'s agent as `netctl policy delete` does; the refusal
/// code, if any.
fn api_delete_code(cluster: &Cluster, host: usize, key: &str) -> Option<u32> {
    let client = cluster.host(host).agent.client();
    match client.request("DELETE", &paths::policy_object(key), None) {
        Ok(_) => None,
        Err(ClientError::Api(e)) => Some(e.code),
        Err(e) => panic!("DELETE {key}: {e}"),
    }
}

/// A container on host `host` attached as pod `ns/name` (CNI args as containerd
/// sends them).
fn add_pod_container(
    cluster: &mut Cluster,
    host: usize,
    ns: &str,
    name: &str,
) -> std::sync::Arc<strait_testbeds::cluster::Container> {
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};\
         K8S_POD_INFRA_CONTAINER_ID={ns}-{name}"
    );
    cluster
        .try_add_container_args(host, name, &args, |_| {})
        .unwrap_or_else(|out| {
            panic!(
                "CNI ADD of pod {ns}/{name} on h{} failed (exit {}): {}{}",
                host + 1,
                out.code,
                out.stdout,
                out.stderr
            )
        })
}

// ---------------------------------------------------------------------------------
// 1. Origin in netctl; netctl cannot change the API server's objects.

#[test]
fn kube_objects_show_in_netctl_with_their_origin() {
    let test = "kube_objects_show_in_netctl_with_their_origin";
    let _serial = serial();
    if !guards(test) {
        return;
    }
    let cluster = kube_cluster(2, |_| {});
    let np_key = "policy/k8s/shop/web-from-front";
    let ns_key = "namespaces/shop";

    let applied = Instant::now();
    kube_apply(
        &cluster,
        &[
            namespace("shop", json!({"team": "web", "tier": "front"})),
            network_policy(
                "shop",
                "web-from-front",
                None,
                allow_spec("web", "front", 8080),
            ),
        ],
    );
    // On host 2 too, whichever agent wrote them: the store is the cluster's.
    for host in [1, 0] {
        wait_store(
            &cluster,
            host,
            "the API's objects in the store",
            WAIT,
            |objs| {
                has_kube(objs, ns_key)?;
                has_kube(objs, np_key)?;
                let ns = object(objs, ns_key).expect("checked");
                // (The API server adds `kubernetes.io/metadata.name` itself.)
                if ns["normalized"]["team"] != "web" || ns["normalized"]["tier"] != "front" {
                    return Err(format!("namespace labels: {}", ns["normalized"]));
                }
                Ok(())
            },
        );
    }
    println!(
        "{test}: kubectl apply -> in netctl policy list on both hosts in {:.1?}",
        applied.elapsed()
    );
    let objs = policy_list(&cluster, 1).unwrap();
    let np = object(&objs, np_key).expect("stored");
    assert_eq!(np["origin"], "kubernetes", "{np}");
    assert_eq!(np["source"]["metadata"]["name"], "web-from-front", "{np}");
    assert!(
        np["source"]["metadata"]["annotations"]
            .get("kubectl.kubernetes.io/last-applied-configuration")
            .is_none(),
        "kubectl's bookkeeping is left out: {np}"
    );
    // The table says so too.
    let (code, table, err) = netctl(&cluster, 1, &["policy", "list"], "");
    assert_eq!(code, 0, "{table}{err}");
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.contains("web-from-front"))
        .unwrap_or_else(|| panic!("no row of web-from-front:\n{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..3],
        ["NetworkPolicy", "shop", "web-from-front"],
        "{table}"
    );
    assert_eq!(row[7], "kubernetes", "ORIGIN column:\n{table}");

    // netctl's own policy beside them: origin netctl, absent from the JSON.
    let own = network_policy("shop", "own", None, allow_spec("db", "web", 5432)).to_string();
    let (code, out, err) = netctl(&cluster, 0, &["policy", "apply", "-f", "-"], &own);
    assert_eq!(code, 0, "netctl policy apply of its own policy: {out}{err}");
    wait_store(
        &cluster,
        1,
        "netctl's own policy",
        WAIT,
        |objs| match object(objs, "policy/k8s/shop/own") {
            Some(o) if o.get("origin").is_none() => Ok(()),
            Some(o) => Err(format!("origin in the JSON: {o}")),
            None => Err("not stored".into()),
        },
    );

    // The API server's object cannot be replaced nor deleted with netctl; nothing of a
    // refused apply is written, also not a new object applied with it.
    let before = policy_list(&cluster, 0).unwrap();
    let clash = format!(
        "{}\n---\n{}",
        network_policy("shop", "extra", None, deny_ingress_spec()),
        network_policy("shop", "web-from-front", None, deny_ingress_spec())
    );
    for host in [0, 1] {
        let (code, out, err) = netctl(&cluster, host, &["policy", "apply", "-f", "-"], &clash);
        assert_eq!(
            code, 1,
            "netctl policy apply over the API's object: {out}{err}"
        );
        assert!(
            err.contains("comes from the Kubernetes API server"),
            "netctl says why: {err}"
        );
        assert_eq!(
            api_apply_code(&cluster, host, &clash),
            Some(strait_api::code::OWNED_BY_KUBERNETES),
            "the agent's refusal code"
        );
        let (code, out, err) = netctl(
            &cluster,
            host,
            &["policy", "delete", "shop/web-from-front"],
            "",
        );
        assert_eq!(
            code, 1,
            "netctl policy delete of the API's object: {out}{err}"
        );
        assert!(
            err.contains("comes from the Kubernetes API server"),
            "netctl says why: {err}"
        );
        assert_eq!(
            api_delete_code(&cluster, host, np_key),
            Some(strait_api::code::OWNED_BY_KUBERNETES)
        );
        assert_eq!(
            api_delete_code(&cluster, host, ns_key),
            Some(strait_api::code::OWNED_BY_KUBERNETES),
            "the API's namespace"
        );
    }
    let after = policy_list(&cluster, 0).unwrap();
    assert_eq!(
        before, after,
        "refused applies and deletes changed the store"
    );
    println!("{test}: netctl apply/delete of the API's objects refused with code 110");

    // Deleted with kubectl: gone from the store; netctl's own stays.
    let deleted = Instant::now();
    kubectl(
        &cluster,
        &["delete", "networkpolicy", "-n", "shop", "web-from-front"],
    );
    let took = wait_store(&cluster, 1, "the deleted policy gone", WAIT, |objs| {
        if object(objs, np_key).is_some() {
            return Err(format!("{np_key} still stored"));
        }
        let own = object(objs, "policy/k8s/shop/own").ok_or("netctl's own policy went")?;
        if origin(own) != "netctl" {
            return Err(format!("own policy: {own}"));
        }
        has_kube(objs, ns_key)
    });
    println!(
        "{test}: kubectl delete -> gone from the store in {took:.1?} (from the delete: {:.1?})",
        deleted.elapsed()
    );
}

// ---------------------------------------------------------------------------------
// 2. A refused object.

#[test]
fn kube_refused_object_is_reported_and_changes_nothing() {
    let test = "kube_refused_object_is_reported_and_changes_nothing";
    let _serial = serial();
    if !guards(test) {
        return;
    }
    let cluster = kube_cluster(2, |_| {});
    let key = "policy/k8s/lab/web";
    let good_spec = allow_spec("web", "front", 8080);

    kube_apply(
        &cluster,
        &[
            namespace("lab", json!({"team": "lab"})),
            network_policy("lab", "web", None, good_spec.clone()),
        ],
    );
    wait_store(&cluster, 1, "the good version stored", WAIT, |objs| {
        has_kube(objs, key)
    });

    // The bad version (the API server takes any annotation; strait reads this one
    // and knows only "true" and "false"), with another spec, and a new policy beside
    // it in the same apply.
    let applied = Instant::now();
    kube_apply(
        &cluster,
        &[
            network_policy(
                "lab",
                "web",
                Some(json!({"strait.io/audit": "perhaps"})),
                allow_spec("web", "front", 9090),
            ),
            network_policy("lab", "other", None, allow_spec("db", "web", 5432)),
        ],
    );
    let mut refusal = None;
    let took = wait_until("the refusal reported", WAIT, POLL, || {
        let view = kube_status(&cluster, 1)?;
        match view.refused.iter().find(|r| r.object == "lab/web") {
            Some(r) => {
                refusal = Some(r.clone());
                Ok(())
            }
            None => Err(format!("refused: {:?}", view.refused)),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let refusal = refusal.expect("found");
    println!(
        "{test}: refusal in netctl kubernetes {took:.1?} after kubectl apply: {} {}: {}",
        refusal.kind, refusal.object, refusal.reason
    );
    assert_eq!(refusal.kind, "NetworkPolicy");
    assert!(
        refusal.reason.contains("strait.io/audit"),
        "the reason names the annotation: {}",
        refusal.reason
    );
    let view = kube_status(&cluster, 0).unwrap();
    assert_eq!(
        view.refused.len(),
        1,
        "one refusal, seen from every agent: {:?}",
        view.refused
    );
    let (code, table, err) = netctl(&cluster, 0, &["kubernetes"], "");
    assert_eq!(code, 0, "{table}{err}");
    assert!(
        table.contains("lab/web") && table.contains("strait.io/audit"),
        "{table}"
    );

    // The other policy of that apply is applied; the refused one keeps its last
    // good version.
    wait_store(&cluster, 1, "the other policy applied", WAIT, |objs| {
        has_kube(objs, "policy/k8s/lab/other")
    });
    println!(
        "{test}: the policy applied beside it stored {:.1?} after kubectl apply",
        applied.elapsed()
    );
    let objs = policy_list(&cluster, 1).unwrap();
    let web = object(&objs, key).expect("the last good version stays");
    assert_eq!(origin(web), "kubernetes");
    assert!(
        web["source"]["metadata"]["annotations"]
            .get("strait.io/audit")
            .is_none(),
        "the stored source is the good version: {web}"
    );
    assert_eq!(
        web["source"]["spec"]["ingress"][0]["ports"][0]["port"], 8080,
        "the good version's spec: {web}"
    );

    // A Warning Event on the object (events.k8s.io events show in core `get events`).
    let mut seen = Value::Null;
    let took = wait_until("a NotApplied Event on lab/web", WAIT, POLL, || {
        let events = kubectl_json(&cluster, &["events", "-n", "lab"]);
        let found = items(&events).iter().find(|e| {
            e["reason"] == "NotApplied"
                && e["type"] == "Warning"
                && ["/involvedObject/name", "/regarding/name"]
                    .iter()
                    .any(|p| str_at(e, p) == "web")
        });
        match found {
            Some(e) => {
                seen = e.clone();
                Ok(())
            }
            None => Err(format!("events: {events}")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let regarding = if seen["involvedObject"].is_object() {
        &seen["involvedObject"]
    } else {
        &seen["regarding"]
    };
    println!(
        "{test}: Event (waited {took:.1?}): {} {} on {} {}/{}: {}",
        seen["type"],
        seen["reason"],
        regarding["kind"],
        regarding["namespace"],
        regarding["name"],
        if seen["message"].is_string() {
            &seen["message"]
        } else {
            &seen["note"]
        }
    );
    assert_eq!(regarding["kind"], "NetworkPolicy", "{seen}");
    assert_eq!(regarding["namespace"], "lab", "{seen}");
    let message = format!("{}{}", seen["message"], seen["note"]);
    assert!(message.contains("strait.io/audit"), "{seen}");

    // Fixed: the refusal goes, the new version is stored.
    let fixed = Instant::now();
    kube_apply(
        &cluster,
        &[network_policy(
            "lab",
            "web",
            Some(json!({"strait.io/audit": "true"})),
            allow_spec("web", "front", 9090),
        )],
    );
    wait_store(&cluster, 1, "the fixed version stored", WAIT, |objs| {
        let web = object(objs, key).ok_or("lab/web gone")?;
        if web["source"]["metadata"]["annotations"]["strait.io/audit"] != "true" {
            return Err(format!("not the fixed version: {web}"));
        }
        if web["normalized"]["audit"] != true {
            return Err(format!("not in audit mode: {}", web["normalized"]));
        }
        Ok(())
    });
    wait_until("the refusal cleared", WAIT, POLL, || {
        let view = kube_status(&cluster, 1)?;
        if view.refused.is_empty() {
            Ok(())
        } else {
            Err(format!("refused: {:?}", view.refused))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{test}: fixed -> stored and the refusal cleared in {:.1?}",
        fixed.elapsed()
    );
}

// ---------------------------------------------------------------------------------
// 3. The API server killed and restarted.

#[test]
fn kube_watch_resumes_after_api_server_restart() {
    let test = "kube_watch_resumes_after_api_server_restart";
    let _serial = serial();
    if !guards(test) {
        return;
    }
    let mut cluster = kube_cluster(2, |_| {});
    // The server pod alone in `resume`; the client in a namespace of its own.
    kube_apply(
        &cluster,
        &[
            namespace("resume", json!({"team": "server"})),
            namespace("resume-out", json!({"team": "client"})),
            pod("resume", "server", "h1", json!({"app": "server"})),
            pod("resume-out", "client", "h2", json!({"app": "client"})),
            // A: selects no pod of the bed.
            network_policy("resume", "a", None, allow_spec("nothing", "nobody", 80)),
        ],
    );
    let server = add_pod_container(&mut cluster, 0, "resume", "server");
    let client = add_pod_container(&mut cluster, 1, "resume-out", "client");
    wait_store(&cluster, 1, "policy A stored", WAIT, |objs| {
        has_kube(objs, "policy/k8s/resume/a")
    });
    wait_until(
        "client reaches server (TCP, no policy selects it)",
        WAIT,
        POLL,
        || probe::tcp_echo(&client.ns, &server.ns, server.ip4()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.describe()));

    let before: Vec<KindView> = (0..2)
        .map(|h| {
            kind(&kube_status(&cluster, h).unwrap(), "NetworkPolicy")
                .cloned()
                .expect("NetworkPolicy watched")
        })
        .collect();
    println!("{test}: NetworkPolicy watch before: {before:?}");

    let down = Instant::now();
    cluster.kube_mut().kill();
    std::thread::sleep(Duration::from_secs(2));
    cluster.kube_mut().restart();
    println!(
        "{test}: API server SIGKILLed, restarted, ready again after {:.1?}",
        down.elapsed()
    );

    let changed = Instant::now();
    kubectl(&cluster, &["delete", "networkpolicy", "-n", "resume", "a"]);
    kube_apply(
        &cluster,
        &[
            network_policy("resume", "b", None, deny_ingress_spec()),
            // C: selects no pod; two policies now, so a view still holding only A
            // counts otherwise than a fresh one.
            network_policy("resume", "c", None, allow_spec("nothing", "nobody", 81)),
        ],
    );
    let want = api_keys(&cluster);
    assert!(
        want.contains("policy/k8s/resume/b") && !want.contains("policy/k8s/resume/a"),
        "{want:?}"
    );
    for host in [1, 0] {
        let took = wait_store(
            &cluster,
            host,
            "the store follows the API after its restart",
            WAIT,
            |objs| {
                let have = kube_keys(objs);
                let unique: BTreeSet<String> = have.iter().cloned().collect();
                if unique.len() != have.len() {
                    return Err(format!("doubled: {have:?}"));
                }
                if unique != want {
                    return Err(format!("store {unique:?}, API {want:?}"));
                }
                Ok(())
            },
        );
        println!(
            "{test}: h{}: the store is the API's set ({} objects) {took:.1?} into the wait",
            host + 1,
            want.len()
        );
    }
    println!(
        "{test}: delete A + apply B -> store {:.1?}",
        changed.elapsed()
    );

    // The watch did break and come back on some agent, and every agent's view is the
    // API's again (two policies: a view still at A alone has one).
    let mut after = Vec::new();
    let took = wait_until(
        "every agent's NetworkPolicy view fresh, a watch broken and resumed",
        WAIT,
        POLL,
        || {
            after.clear();
            for h in 0..2 {
                let view = kube_status(&cluster, h)?;
                let k = kind(&view, "NetworkPolicy").cloned().ok_or("not watched")?;
                after.push((view.leader, k));
            }
            let fresh = after.iter().all(|(_, k)| k.synced && k.objects == 2);
            let broke = after.iter().any(|(_, k)| k.errors > 0 || k.lists >= 2);
            if fresh && broke {
                Ok(())
            } else {
                Err(format!("{after:?}"))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{test}: every agent's NetworkPolicy view fresh {took:.1?} after the store was \
         ({:.1?} after kubectl apply)",
        changed.elapsed()
    );
    for (h, (leader, k)) in after.iter().enumerate() {
        println!(
            "{test}: h{}{}: NetworkPolicy synced {} objects {} lists {} errors {} last error \
             {:?}",
            h + 1,
            if *leader { " (leader)" } else { "" },
            k.synced,
            k.objects,
            k.lists,
            k.errors,
            k.last_error
        );
    }
    // Still the API's set now that every view is fresh.
    wait_store(&cluster, 0, "the store still the API's set", WAIT, |objs| {
        let have: BTreeSet<String> = kube_keys(objs).into_iter().collect();
        if have == want {
            Ok(())
        } else {
            Err(format!("store {have:?}, API {want:?}"))
        }
    });

    // And B is enforced: the client no longer reaches the server; the other way still
    // works (the network is fine, only the policy blocks).
    let took = wait_until("B blocks client -> server", WAIT, POLL, || {
        probe::tcp_echo(&client.ns, &server.ns, server.ip4()).is_err()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.describe()));
    println!(
        "{test}: B enforced {took:.1?} into the wait ({:.1?} after kubectl apply)",
        changed.elapsed()
    );
    probe::tcp_echo(&server.ns, &client.ns, client.ip4())
        .unwrap_or_else(|e| panic!("server -> client should still work: {e}"));
}

// ---------------------------------------------------------------------------------
// 4. Every agent down while the API's objects change.

#[test]
fn kube_agent_down_while_objects_change() {
    let test = "kube_agent_down_while_objects_change";
    let _serial = serial();
    if !guards(test) {
        return;
    }
    let mut cluster = kube_cluster(2, |_| {});
    kube_apply(
        &cluster,
        &[
            namespace("drift", json!({"team": "a", "keep": "me"})),
            network_policy("drift", "p1", None, allow_spec("web", "front", 80)),
            network_policy("drift", "p2", None, allow_spec("db", "web", 5432)),
        ],
    );
    wait_store(&cluster, 1, "p1, p2 and drift stored", WAIT, |objs| {
        has_kube(objs, "policy/k8s/drift/p1")?;
        has_kube(objs, "policy/k8s/drift/p2")?;
        has_kube(objs, "namespaces/drift")
    });

    for h in 0..2 {
        cluster.stop_agent(h);
    }
    kubectl(&cluster, &["delete", "networkpolicy", "-n", "drift", "p1"]);
    kubectl(
        &cluster,
        &[
            "label",
            "namespace",
            "drift",
            "team=b",
            "keep-",
            "--overwrite",
        ],
    );
    kube_apply(
        &cluster,
        &[network_policy("drift", "p3", None, deny_ingress_spec())],
    );
    let started = Instant::now();
    for h in 0..2 {
        cluster.start_agent(h);
    }
    println!("{test}: agents back in {:.1?}", started.elapsed());
    let want = api_keys(&cluster);
    // The restarted agent of the old leader's node takes its key over at once (the
    // other one waits for it to go with its lease): the first round after the
    // watches' lists writes the difference.
    for host in [0, 1] {
        let took = wait_store(&cluster, host, "the store follows", TAKEOVER, |objs| {
            if object(objs, "policy/k8s/drift/p1").is_some() {
                return Err("p1 still stored".into());
            }
            has_kube(objs, "policy/k8s/drift/p2")?;
            has_kube(objs, "policy/k8s/drift/p3")?;
            let ns = object(objs, "namespaces/drift").ok_or("no namespaces/drift")?;
            let labels = &ns["normalized"];
            if labels.get("team") != Some(&json!("b")) || labels.get("keep").is_some() {
                return Err(format!("drift's labels: {labels}"));
            }
            let have: BTreeSet<String> = kube_keys(objs).into_iter().collect();
            if have != want {
                return Err(format!("store {have:?}, API {want:?}"));
            }
            Ok(())
        });
        println!(
            "{test}: h{}: store follows {took:.1?} into the wait ({:.1?} after the agents \
             were started)",
            host + 1,
            started.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------------
// 5. The leader dies.

#[test]
fn kube_leader_failover() {
    let test = "kube_leader_failover";
    let _serial = serial();
    if !guards(test) {
        return;
    }
    let mut cluster = kube_cluster(2, |o| o.node_lease_ttl_secs = Some(3));
    let mut leader = Vec::new();
    wait_until("exactly one leader", WAIT, POLL, || {
        leader = leaders(&cluster, &[0, 1])?;
        if leader.len() == 1 {
            Ok(())
        } else {
            Err(format!("leaders: {leader:?}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let old = leader[0];
    let other = 1 - old;
    println!("{test}: h{} writes the cluster's objects", old + 1);

    let killed = Instant::now();
    cluster.kill_agent(old);
    let took = wait_until("the other agent takes over", WAIT, POLL, || match leaders(
        &cluster,
        &[other],
    )? {
        l if l == [other] => Ok(()),
        _ => Err(format!("h{} does not say leader", other + 1)),
    })
    .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{test}: h{} leader {took:.1?} after h{} was SIGKILLed (lease TTL 3 s, resync 10 s)",
        other + 1,
        old + 1
    );

    kube_apply(
        &cluster,
        &[
            namespace("after", json!({"team": "x"})),
            network_policy("after", "failover", None, deny_ingress_spec()),
        ],
    );
    let took = wait_store(
        &cluster,
        other,
        "a new policy stored by the new leader",
        WAIT,
        |objs| {
            has_kube(objs, "policy/k8s/after/failover")?;
            has_kube(objs, "namespaces/after")
        },
    );
    println!(
        "{test}: kubectl apply -> store {took:.1?} with the new leader ({:.1?} since the kill)",
        killed.elapsed()
    );

    // The old one back: still one writer.
    cluster.start_agent(old);
    wait_until("one leader with both agents up", WAIT, POLL, || {
        let l = leaders(&cluster, &[0, 1])?;
        if l.len() == 1 {
            Ok(())
        } else {
            Err(format!("leaders: {l:?}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
}

// ---------------------------------------------------------------------------------
// 6. The Nodes.

#[test]
fn kube_nodes_conditions_and_annotations() {
    let test = "kube_nodes_conditions_and_annotations";
    let _serial = serial();
    if !guards(test) {
        return;
    }
    let cluster = kube_cluster(2, |_| {});
    for (i, host) in cluster.hosts().iter().enumerate() {
        let mut node = Value::Null;
        let took = wait_until(
            &format!("Node {}: condition and annotations", host.name),
            WAIT,
            POLL,
            || {
                node = kubectl_json(&cluster, &["node", &host.name]);
                let cond = network_unavailable(&node);
                if cond["status"] != "False" || cond["reason"] != "StraitIsUp" {
                    return Err(format!("NetworkUnavailable: {cond}"));
                }
                let ann = &node["metadata"]["annotations"];
                if ann["strait.io/underlay-ipv4"] != host.underlay_v4.to_string()
                    || ann["strait.io/fabric"] != "vxlan"
                {
                    return Err(format!("annotations: {ann}"));
                }
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.describe()));
        let ann = node["metadata"]["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let strait: Vec<String> = ann
            .iter()
            .filter(|(k, _)| k.starts_with("strait.io/"))
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
            .collect();
        let cond = network_unavailable(&node);
        println!(
            "{test}: {} (waited {took:.1?}): NetworkUnavailable={} reason={} message={}; {}",
            host.name,
            cond["status"],
            cond["reason"],
            cond["message"],
            strait.join(" ")
        );
        // What else is said must be true of the host.
        if let Some(v6) = ann.get("strait.io/underlay-ipv6") {
            assert_eq!(v6, &json!(host.underlay_v6.to_string()), "h{}", i + 1);
        }
        let vxlan_addrs: Vec<String> =
            host.ns
                .ip_json(&["addr", "show", strait_testbeds::cluster::VXLAN_DEV])[0]["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["local"].as_str().map(String::from))
                .collect();
        for family in ["ipv4", "ipv6"] {
            if let Some(ip) = ann.get(&format!("strait.io/tunnel-{family}")) {
                let ip = ip.as_str().unwrap_or("?");
                assert!(
                    vxlan_addrs.iter().any(|a| a == ip),
                    "{}'s tunnel-{family} annotation {ip} is an address of its {}: {:?}",
                    host.name,
                    strait_testbeds::cluster::VXLAN_DEV,
                    vxlan_addrs
                );
            }
        }
        if let Some(mac) = ann.get("strait.io/vtep-mac") {
            let link = host
                .ns
                .ip_json(&["link", "show", strait_testbeds::cluster::VXLAN_DEV]);
            assert_eq!(
                mac.as_str().map(str::to_lowercase),
                link[0]["address"].as_str().map(str::to_lowercase),
                "{}'s vtep-mac annotation is its {} MAC",
                host.name,
                strait_testbeds::cluster::VXLAN_DEV
            );
        }
    }

    // Someone removes an annotation and marks the network unavailable: the agent puts
    // both back (it follows its Node).
    let h1 = cluster.host(0);
    let changed = Instant::now();
    let out = kubectl(
        &cluster,
        &["annotate", "node", "h1", "strait.io/underlay-ipv4-"],
    );
    assert!(out.contains("annotated"), "{out}");
    let out = cluster.kube().mark_network_unavailable("h1");
    assert!(
        out.contains("patched") && !out.contains("no change"),
        "the condition was changed: {out}"
    );
    let took = wait_until("h1's Node put right again", WAIT, POLL, || {
        let node = kubectl_json(&cluster, &["node", "h1"]);
        let cond = network_unavailable(&node);
        let ann = &node["metadata"]["annotations"]["strait.io/underlay-ipv4"];
        if cond["status"] == "False"
            && cond["reason"] == "StraitIsUp"
            && *ann == h1.underlay_v4.to_string()
        {
            Ok(())
        } else {
            Err(format!("condition {cond}, underlay-ipv4 {ann}"))
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{test}: h1's Node changed by hand, put right in {took:.1?} ({:.1?} since the change)",
        changed.elapsed()
    );
}

// ---------------------------------------------------------------------------------
// 7. --ipam kubernetes.

#[test]
fn kube_ipam_from_pod_cidrs() {
    let test = "kube_ipam_from_pod_cidrs";
    let _serial = serial();
    if !guards(test) {
        return;
    }
    let cidrs = [
        ["10.244.1.0/24", "fd00:244:0:1::/64"],
        ["10.244.2.0/24", "fd00:244:0:2::/64"],
    ];
    let mut cluster = kube_cluster(2, |o| {
        o.kubernetes = Some(KubeBed {
            pod_cidrs: cidrs
                .iter()
                .map(|c| c.iter().map(|s| s.to_string()).collect())
                .collect(),
        });
        o.agent_extra = vec!["--ipam".into(), "kubernetes".into()];
    });
    let mut containers = Vec::new();
    for (h, host_cidrs) in cidrs.iter().enumerate() {
        let nets: Vec<IpNet> = host_cidrs.iter().map(|c| c.parse().unwrap()).collect();
        for n in 0..2 {
            let c = cluster.add_container(h, &format!("c{}{n}", h + 1));
            let ips = c.ips();
            println!(
                "{test}: {} on h{}: {}",
                c.name,
                h + 1,
                ips.iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            assert!(
                c.v4.is_some() && c.v6.is_some(),
                "{} has both families: {ips:?}",
                c.name
            );
            for ip in &ips {
                assert!(
                    nets.iter().any(|n| n.contains(ip)),
                    "{}'s {ip} is outside h{}'s podCIDRs {host_cidrs:?}",
                    c.name,
                    h + 1
                );
            }
            containers.push(c);
        }
    }
    let (a, b) = (&containers[0], &containers[2]);
    for (from, to) in [(a, b), (b, a)] {
        for ip in to.ips() {
            let started = Instant::now();
            probe::wait_ping(&from.ns, ip, WAIT)
                .unwrap_or_else(|e| panic!("{e}\n{}", cluster.describe()));
            println!(
                "{test}: {} -> {} {ip}: ping in {:.1?}",
                from.name,
                to.name,
                started.elapsed()
            );
            probe::tcp_echo(&from.ns, &to.ns, ip)
                .unwrap_or_else(|e| panic!("TCP {} -> {ip}: {e}", from.name));
        }
    }
    // Every block a node has affinity to lies inside that node's podCIDRs.
    let (code, out, err) = netctl(&cluster, 0, &["ipam", "show"], "");
    println!("{test}: netctl ipam show on h1 (exit {code}):\n{out}{err}");
    let view: strait_api::IpamView = serde_json::from_value(
        try_netctl_json(&cluster, 0, &["ipam", "show"]).unwrap_or_else(|e| panic!("{e}")),
    )
    .expect("netctl ipam show -o json");
    assert!(!view.blocks.is_empty(), "no blocks: {view:?}");
    for block in &view.blocks {
        let owner = block.affinity.as_deref().unwrap_or("-");
        let h: usize = owner
            .strip_prefix('h')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("block {} has affinity {owner}", block.cidr));
        let nets: Vec<IpNet> = cidrs[h - 1].iter().map(|c| c.parse().unwrap()).collect();
        assert!(
            nets.iter().any(|n| n.contains(&block.cidr)),
            "block {} of {owner} outside its podCIDRs {:?}",
            block.cidr,
            cidrs[h - 1]
        );
    }
}

// ---------------------------------------------------------------------------------
// 8. An agent whose role lacks a kind.

/// The project's RBAC (`deploy/kubernetes/rbac.yaml`) as objects, the ClusterRole's
/// NetworkPolicy rule left out when `without_network_policies`.
fn agent_rbac(without_network_policies: bool) -> Vec<Value> {
    let text = strait_testbeds::cluster::agent_rbac();
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let mut v: Value = serde::Deserialize::deserialize(doc).expect("rbac.yaml reads");
        if v.is_null() {
            continue;
        }
        if without_network_policies && v["kind"] == "ClusterRole" {
            let rules = v["rules"].as_array_mut().expect("the role's rules");
            let n = rules.len();
            rules.retain(|r| {
                !r["resources"]
                    .as_array()
                    .is_some_and(|res| res.iter().any(|x| x == "networkpolicies"))
            });
            assert_eq!(rules.len(), n - 1, "rbac.yaml has one NetworkPolicy rule");
        }
        out.push(v);
    }
    out
}

/// `kubectl auth can-i list networkpolicies` as the agents' service account.
fn agents_may_list_policies(cluster: &Cluster) -> String {
    let out = cluster.kube().kubectl(&[
        "auth",
        "can-i",
        "list",
        "networkpolicies.networking.k8s.io",
        "--all-namespaces",
        "--as",
        "system:serviceaccount:kube-system:strait",
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn kube_agent_without_rights_says_so() {
    let test = "kube_agent_without_rights_says_so";
    let _serial = serial();
    if !guards(test) {
        return;
    }
    let mut cluster = kube_cluster(2, |_| {});
    assert_eq!(agents_may_list_policies(&cluster), "yes");
    kube_apply(&cluster, &agent_rbac(true));
    wait_until(
        "the role no longer grants NetworkPolicies",
        WAIT,
        POLL,
        || agents_may_list_policies(&cluster) == "no",
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // A fresh start lists again (a running watch would go on until it ends).
    cluster.restart_agent(0);
    let mut np = None;
    let took = wait_until(
        "h1 reports the refused NetworkPolicy list",
        WAIT,
        POLL,
        || {
            let view = kube_status(&cluster, 0)?;
            let k = kind(&view, "NetworkPolicy").ok_or("NetworkPolicy not watched")?;
            np = Some(k.clone());
            let forbidden = k
                .last_error
                .as_deref()
                .is_some_and(|e| e.to_lowercase().contains("forbidden"));
            if k.errors > 0 && forbidden && !k.synced {
                Ok(())
            } else {
                Err(format!("{view:?}"))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let np = np.expect("seen");
    println!(
        "{test}: h1 NetworkPolicy (after {took:.1?}): errors {} last error {:?}",
        np.errors, np.last_error
    );
    let view = kube_status(&cluster, 0).unwrap();
    for k in &view.kinds {
        println!(
            "{test}: h1 {}: synced {} objects {} lists {} errors {}",
            k.kind, k.synced, k.objects, k.lists, k.errors
        );
    }
    let ns = kind(&view, "Namespace").expect("Namespace watched");
    assert!(ns.synced, "the kinds it may read are listed: {view:?}");
    let (code, table, err) = netctl(&cluster, 0, &["kubernetes"], "");
    assert_eq!(code, 0, "{table}{err}");
    assert!(table.to_lowercase().contains("forbidden"), "{table}");

    // The cluster's objects still reach the store: the agent that can read them all
    // writes them (after the old leader key's lease, if h1 held it before).
    assert!(
        !view.leader,
        "h1 cannot see the policies, so it does not write: {view:?}"
    );
    let applied = Instant::now();
    kube_apply(
        &cluster,
        &[
            namespace("norights", json!({"team": "x"})),
            network_policy("norights", "p", None, deny_ingress_spec()),
        ],
    );
    let took = wait_store(&cluster, 0, "h2 writes the new policy", TAKEOVER, |objs| {
        has_kube(objs, "policy/k8s/norights/p")
    });
    println!(
        "{test}: a policy applied meanwhile stored in {took:.1?} ({:.1?} after kubectl \
         apply); leaders: {:?}",
        applied.elapsed(),
        leaders(&cluster, &[0, 1]).map(|l| l.iter().map(|h| h + 1).collect::<Vec<_>>())
    );

    // Networking does not need the API server: ADD on that host, traffic across.
    let a = cluster.add_container(0, "a");
    let b = cluster.add_container(1, "b");
    for ip in b.ips() {
        probe::wait_ping(&a.ns, ip, WAIT).unwrap_or_else(|e| panic!("{e}\n{}", cluster.describe()));
    }
    probe::tcp_echo(&b.ns, &a.ns, a.ip4()).unwrap_or_else(|e| panic!("b -> a: {e}"));
    println!("{test}: CNI ADD on h1 and traffic to h2 work without the NetworkPolicy rights");

    // The right granted again: the watch's retries succeed.
    let granted = Instant::now();
    kube_apply(&cluster, &agent_rbac(false));
    wait_until(
        "h1 lists NetworkPolicies again",
        Duration::from_secs(90),
        POLL,
        || {
            let view = kube_status(&cluster, 0)?;
            match kind(&view, "NetworkPolicy") {
                Some(k) if k.synced => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "{test}: rights granted again -> h1 listed NetworkPolicies after {:.1?} (the \
         watch's backoff)",
        granted.elapsed()
    );
}
