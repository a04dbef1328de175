//! The Kubernetes test bed itself (etcd and the kube binaries needed, no root): the API
//! server answers and stores the objects strait will watch; RBAC refuses a service
//! account until a role grants it; API servers sharing one etcd do not see each
//! other's objects; objects survive restarts, and a watch is broken by one.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use strait_testbeds::etcd::{Etcd, require_etcd};
use strait_testbeds::kube::{KubeApi, SERVICE_CIDR, require_kube};
use strait_testbeds::wait_until;

fn guards(test: &str) -> bool {
    require_etcd(test) && require_kube(test)
}

/// `kubectl get <what> -o json` as admin, parsed.
fn get_json(kube: &KubeApi, what: &[&str]) -> Value {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "json"]);
    let out = kube.kubectl_ok(&args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {args:?}: {e}: {out}"))
}

/// The names `kubectl get <what> -o name` lists (`namespace/default`, ...).
fn names(kube: &KubeApi, what: &[&str]) -> Vec<String> {
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend_from_slice(&["-o", "name"]);
    kube.kubectl_ok(&args).lines().map(str::to_owned).collect()
}

/// Everything strait's agent watches, as a user would write it.
const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {team: web}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: web-from-front
  namespace: shop
spec:
  podSelector:
    matchLabels: {app: web}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: {app: front}
    ports:
    - {protocol: TCP, port: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - {name: http, protocol: TCP, port: 80, targetPort: 8080}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: shop
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- {name: http, protocol: TCP, port: 8080}
endpoints:
- addresses: [10.244.1.5]
  conditions: {ready: true}
  nodeName: node-a
---
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels:
    kubernetes.io/hostname: node-a
spec:
  podCIDR: 10.244.1.0/24
  podCIDRs: [10.244.1.0/24]
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  labels: {app: web}
spec:
  nodeName: node-a
  containers:
  - {name: web, image: registry.invalid/web:1}
"#;

#[test]
fn the_api_server_stores_what_strait_watches() {
    if !guards("the_api_server_stores_what_strait_watches") {
        return;
    }
    let etcd = Etcd::start();
    let kube = KubeApi::start(&etcd);

    // Client and server come from the same build.
    let version = get_version(&kube);
    let client = version["clientVersion"]["gitVersion"]
        .as_str()
        .unwrap_or("");
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or("");
    assert!(server.starts_with("v1."), "server version {version}");
    assert_eq!(client, server, "{version}");

    // The kubeconfigs trust one certificate, a CA (not the serving certificate).
    let ca = std::fs::read_to_string(kube.ca_cert()).unwrap();
    assert_eq!(ca.matches("-----BEGIN CERTIFICATE-----").count(), 1, "{ca}");
    let constraints = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "basicConstraints", "-in"])
        .arg(kube.ca_cert())
        .output()
        .expect("run openssl");
    let constraints = String::from_utf8_lossy(&constraints.stdout);
    assert!(constraints.contains("CA:TRUE"), "{constraints}");

    let applied = kube.apply(SHOP);
    for object in [
        "namespace/shop created",
        "networkpolicy.networking.k8s.io/web-from-front created",
        "service/web created",
        "endpointslice.discovery.k8s.io/web-1 created",
        "node/node-a created",
        "pod/web-0 created",
    ] {
        assert!(applied.contains(object), "{object} not in: {applied}");
    }

    let ns = get_json(&kube, &["namespace", "shop"]);
    assert_eq!(ns["metadata"]["labels"]["team"], "web", "{ns}");

    let policy = get_json(&kube, &["networkpolicy", "-n", "shop", "web-from-front"]);
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app"], "web",
        "{policy}"
    );
    let rule = &policy["spec"]["ingress"][0];
    assert_eq!(
        rule["from"][0]["podSelector"]["matchLabels"]["app"], "front",
        "{policy}"
    );
    assert_eq!(rule["ports"][0]["port"], 8080, "{policy}");

    // The API server allocates ClusterIPs from the configured range; .1 is the
    // `kubernetes` Service's.
    let range: ipnet::Ipv4Net = SERVICE_CIDR.parse().unwrap();
    let service = get_json(&kube, &["service", "-n", "shop", "web"]);
    let ip: Ipv4Addr = service["spec"]["clusterIP"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no clusterIP: {service}"));
    assert!(range.contains(&ip), "{ip} not in {range}");
    let kubernetes = get_json(&kube, &["service", "-n", "default", "kubernetes"]);
    assert_eq!(
        kubernetes["spec"]["clusterIP"].as_str(),
        Some(range.hosts().next().unwrap().to_string().as_str()),
        "{kubernetes}"
    );
    assert_ne!(ip, range.hosts().next().unwrap());

    let slice = get_json(&kube, &["endpointslice", "-n", "shop", "web-1"]);
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"], "web",
        "{slice}"
    );
    assert_eq!(
        slice["endpoints"][0]["addresses"][0], "10.244.1.5",
        "{slice}"
    );
    assert_eq!(slice["endpoints"][0]["nodeName"], "node-a", "{slice}");

    let node = get_json(&kube, &["node", "node-a"]);
    assert_eq!(node["spec"]["podCIDR"], "10.244.1.0/24", "{node}");

    // Stored as written: no controller binds, schedules or runs it.
    let pod = get_json(&kube, &["pod", "-n", "shop", "web-0"]);
    assert_eq!(pod["spec"]["nodeName"], "node-a", "{pod}");
    assert_eq!(pod["status"]["phase"], "Pending", "{pod}");

    // Lists, by label as an agent's watch would select.
    assert_eq!(
        names(&kube, &["pods", "-A", "-l", "app=web"]),
        ["pod/web-0"],
        "pods by label"
    );
}

fn get_version(kube: &KubeApi) -> Value {
    let out = kube.kubectl_ok(&["version", "-o", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl version: {e}: {out}"))
}

#[test]
fn a_service_account_has_only_the_rights_rbac_grants() {
    if !guards("a_service_account_has_only_the_rights_rbac_grants") {
        return;
    }
    let etcd = Etcd::start();
    let kube = KubeApi::start(&etcd);
    let agent = kube.service_account_kubeconfig("strait-system", "agent");
    let user = "system:serviceaccount:strait-system:agent";

    // Its token is valid: it is who it says, just not allowed anything yet.
    let whoami = kube.kubectl_as(
        &agent,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert!(whoami.status.success(), "{whoami:?}");
    assert_eq!(String::from_utf8_lossy(&whoami.stdout), user);

    let refused = kube.kubectl_as(&agent, &["get", "pods", "-A"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "listing pods without a role: {refused:?}"
    );
    // 403 (Forbidden), not 401: authenticated, then refused by RBAC.
    assert!(
        stderr.contains("(Forbidden)")
            && stderr.contains(user)
            && stderr.contains("cannot list resource \"pods\""),
        "{stderr}"
    );

    kube.apply(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: strait-test-pod-lister}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: strait-test-pod-lister}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: strait-test-pod-lister}
subjects:
- {kind: ServiceAccount, namespace: strait-system, name: agent}
"#,
    );
    // The authorizer reads roles from its informers: the grant applies within moments.
    wait_until(
        "the service account may list pods",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            let out = kube.kubectl_as(&agent, &["get", "pods", "-A", "-o", "name"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    )
    .unwrap();

    // Exactly that: not other resources, not other verbs.
    for args in [
        &["get", "secrets", "-A"][..],
        &["get", "pod", "-n", "strait-system", "anything"][..],
    ] {
        let out = kube.kubectl_as(&agent, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("(Forbidden)"),
            "{args:?}: {out:?}"
        );
    }
}

#[test]
fn api_servers_sharing_an_etcd_are_apart() {
    if !guards("api_servers_sharing_an_etcd_are_apart") {
        return;
    }
    let etcd = Etcd::start();
    let a = KubeApi::start(&etcd);
    let b = KubeApi::start(&etcd);
    assert_ne!(a.etcd_prefix(), b.etcd_prefix());
    assert_ne!(a.url(), b.url());

    a.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: only-in-a}\n");
    a.apply("apiVersion: v1\nkind: Node\nmetadata: {name: node-of-a}\n");
    b.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: only-in-b}\n");

    let in_a = names(&a, &["namespaces"]);
    let in_b = names(&b, &["namespaces"]);
    assert!(in_a.contains(&"namespace/only-in-a".into()), "{in_a:?}");
    assert!(!in_a.contains(&"namespace/only-in-b".into()), "{in_a:?}");
    assert!(in_b.contains(&"namespace/only-in-b".into()), "{in_b:?}");
    assert!(!in_b.contains(&"namespace/only-in-a".into()), "{in_b:?}");
    assert_eq!(names(&a, &["nodes"]), ["node/node-of-a"]);
    assert!(names(&b, &["nodes"]).is_empty());

    // Each has its own credentials: a's admin token means nothing to b (b's kubeconfig,
    // a's token instead of b's).
    let cross = b.kubectl(&["--token", a.admin_token(), "get", "namespaces"]);
    let stderr = String::from_utf8_lossy(&cross.stderr);
    assert!(
        !cross.status.success() && stderr.contains("Unauthorized"),
        "a's token on b: {cross:?}"
    );
}

#[test]
fn objects_survive_restarts_and_watches_break() {
    if !guards("objects_survive_restarts_and_watches_break") {
        return;
    }
    let etcd = Etcd::start();
    let mut kube = KubeApi::start(&etcd);
    kube.apply(SHOP);
    let agent = kube.service_account_kubeconfig("strait-system", "agent");
    let url = kube.url();

    // A watch opened before the restart: it sees a change, then ends with the server.
    let mut watch = kube
        .kubectl_command(kube.admin_kubeconfig())
        .args(["get", "namespaces", "--watch-only", "-o", "name"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kubectl get --watch");
    let (lines, events) = mpsc::channel();
    let stdout = watch.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    // The watch may not be established yet when a namespace is created: create new
    // ones until one shows up.
    let mut seen = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in 0.. {
        assert!(Instant::now() < deadline, "the watch saw no new namespace");
        let name = format!("watched-{n}");
        kube.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"
        ));
        if let Ok(line) = events.recv_timeout(Duration::from_secs(2)) {
            assert!(line.starts_with("namespace/watched-"), "{line}");
            seen = true;
            break;
        }
    }
    assert!(seen);

    let before = kube.pid();
    kube.restart();
    assert_ne!(kube.pid(), before, "a new process");
    assert_eq!(kube.url(), url, "same address");
    // The watch's stream ended: its reader saw end of file.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match events.recv_timeout(Duration::from_millis(200)) {
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {
                assert!(Instant::now() < deadline, "the watch outlived the restart");
            }
        }
    }
    let _ = watch.wait();

    assert_survived(&kube);
    // Same signing key: tokens issued before the restart still authenticate.
    let whoami = kube.kubectl_as(
        &agent,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert!(
        whoami.status.success(),
        "old token after restart: {whoami:?}"
    );

    // A crash (SIGKILL) and a start on the same data.
    kube.kill();
    assert!(!kube.ready(), "killed, yet ready");
    kube.restart();
    assert_survived(&kube);
}

fn assert_survived(kube: &KubeApi) {
    let pods = names(kube, &["pods", "-n", "shop"]);
    assert_eq!(pods, ["pod/web-0"]);
    let policy = get_json(kube, &["networkpolicy", "-n", "shop", "web-from-front"]);
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app"], "web",
        "{policy}"
    );
    assert_eq!(names(kube, &["nodes"]), ["node/node-a"]);
    let slice = get_json(kube, &["endpointslice", "-n", "shop", "web-1"]);
    assert_eq!(
        slice["endpoints"][0]["addresses"][0], "10.244.1.5",
        "{slice}"
    );
}
