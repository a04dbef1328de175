//! Services from a real Kubernetes API server, balanced by strait in place of
//! kube-proxy: two hosts (VXLAN) whose agents follow the API server with the
//! project's RBAC role alone.
//!
//! - The `kubernetes` Service the API server makes for itself (10.96.0.1:443, its
//!   EndpointSlice naming the API server's address) takes a client on a host to the
//!   API server, as every in-cluster client relies on.
//! - A Service written with `kubectl`, selecting a pod by the labels the pod has in
//!   the API server, answers on its cluster IP from the other host; `netctl` shows it
//!   with origin `kubernetes` and refuses to delete it; `kubectl delete` removes it.
//!
//! Root, etcd and the kube binaries needed.

use std::time::Duration;

use serde_json::Value;
use strait_testbeds::cluster::{Cluster, ClusterOpts, Fabric};
use strait_testbeds::netpol::{kubectl, kubectl_apply};
use strait_testbeds::services::{BackendServer, ECHO_SERVER, python_in_cgroup, service_on};
use strait_testbeds::{require_root, wait_until};

const CONVERGE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);

/// Connects to `addr`:`port` (TCP) and reads one line; prints `{"ok": …, "line": …}`.
const CONNECT: &str = r#"
import json, socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    s.settimeout(10)
    line = b""
    if sys.argv[3] == "read":
        f = s.makefile("rb")
        line = f.readline()
    s.close()
    print(json.dumps({"ok": True, "line": line.decode().strip()}))
except OSError as e:
    print(json.dumps({"ok": False, "error": str(e)}))
"#;

fn guards(test: &str) -> bool {
    require_root(test)
        && strait_testbeds::etcd::require_etcd(test)
        && strait_testbeds::kube::require_kube(test)
}

/// Polls until `service` on host `host`'s agent has an installed frontend with a
/// usable backend.
fn wait_served(c: &Cluster, host: usize, service: &str) -> Value {
    let mut last = Value::Null;
    wait_until(
        &format!("{service} served on h{}", host + 1),
        CONVERGE,
        POLL,
        || {
            last = service_on(c, host, service);
            let served = last["frontends"].as_array().is_some_and(|f| {
                !f.is_empty()
                    && f.iter().all(|f| {
                        f["installed"] == true
                            && f["backends"]
                                .as_array()
                                .is_some_and(|b| b.iter().any(|b| b["usable"] == true))
                    })
            });
            if served {
                Ok(())
            } else {
                Err(last.to_string())
            }
        },
    )
    .unwrap();
    last
}

/// The origin `netctl service get KEY` shows on host 2 (in its `status`; absent:
/// netctl).
fn origin(c: &Cluster, key: &str) -> String {
    let (ok, out) = c.host(1).netctl(&["-o", "json", "service", "get", key]);
    assert!(ok, "netctl service get {key}: {out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["status"]["origin"]
        .as_str()
        .unwrap_or("netctl")
        .to_string()
}

#[test]
fn kube_services_are_balanced_from_the_api_server() {
    let test = "kube_services_are_balanced_from_the_api_server";
    if !guards(test) {
        return;
    }
    let mut opts = ClusterOpts::new(2, Fabric::Vxlan);
    opts.kubernetes = Some(Default::default());
    let mut c = Cluster::start(opts);
    let client = c.add_container(1, "client");
    let cgroup = c.host(1).agent.service_cgroup();

    // The API server's own Service, through strait, from h2 itself: the API server
    // runs in the underlay namespace, which has no route to the pods (in a real
    // cluster it runs on a node of the fabric).
    wait_served(&c, 1, "default/kubernetes");
    assert_eq!(origin(&c, "services/default/kubernetes"), "kubernetes");
    let host_ns = c.host(1).ns.name().to_string();
    let r = python_in_cgroup(&cgroup, &host_ns, CONNECT, &["10.96.0.1", "443", "-"]);
    assert_eq!(
        r["ok"],
        true,
        "10.96.0.1:443 from h2: {r}\n{}",
        c.describe()
    );

    // A Service of the user's, its backend a pod on h1 selected by its API labels.
    kubectl_apply(
        &c,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: shop, labels: {app: web}}\n\
         spec: {nodeName: h1, containers: [{name: web, image: busybox}]}\n",
    )
    .unwrap();
    let web = c
        .try_add_container_args(
            0,
            "web-0",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0",
            |_| {},
        )
        .unwrap_or_else(|o| panic!("ADD of web-0: {o:?}"));
    let _server = BackendServer::start(&web, ECHO_SERVER);
    kubectl_apply(
        &c,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
         spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}\n",
    )
    .unwrap();
    let svc = wait_served(&c, 1, "shop/web");
    assert_eq!(origin(&c, "services/shop/web"), "kubernetes");
    let ip = kubectl(
        &c,
        &[
            "get",
            "service",
            "-n",
            "shop",
            "web",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
        "",
    )
    .unwrap();
    assert_eq!(
        svc["cluster_ips"][0],
        ip.trim(),
        "strait keeps the API's cluster IP"
    );
    let r = python_in_cgroup(
        &cgroup,
        client.ns.name(),
        CONNECT,
        &[ip.trim(), "80", "read"],
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["line"], "web-0", "the answer comes from the pod: {r}");

    // netctl may not delete what the API server owns; kubectl may.
    let (ok, out) = c
        .host(1)
        .netctl(&["service", "delete", "services/shop/web"]);
    assert!(!ok && out.contains("Kubernetes API server"), "{out}");
    assert!(!service_on(&c, 1, "shop/web").is_null());
    kubectl(&c, &["delete", "service", "-n", "shop", "web"], "").unwrap();
    wait_until(
        "shop/web gone from the store",
        CONVERGE,
        POLL,
        || match service_on(&c, 1, "shop/web") {
            Value::Null => Ok(()),
            v => Err(v.to_string()),
        },
    )
    .unwrap();
}
