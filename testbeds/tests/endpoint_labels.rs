//! An endpoint's namespace, pod, labels and named ports through the real `strait`
//! plugin, `straitd` and `netctl`: what CNI gives at ADD is what `netctl endpoints`
//! shows, `netctl endpoint label` changes it as kubectl would, and bad labels, at ADD
//! or later, change nothing.

use std::process::Command;

use serde_json::{Value, json};
use strait_testbeds::cni::CniCall;
use strait_testbeds::host::Host;
use strait_testbeds::require_root;

const POOLS: &[&str] = &["10.78.0.0/16", "fd00:78::/48"];

/// `netctl --socket <the agent's> ARGS`: (success, stdout, stderr).
fn netctl(h: &Host, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(strait_testbeds::bins::bin("netctl"))
        .arg("--socket")
        .arg(&h.agent.socket)
        .args(args)
        .output()
        .expect("exec netctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The endpoint of container `cid` as `netctl -o json endpoints` shows it.
fn shown(h: &Host, cid: &str) -> Value {
    let (ok, out, err) = netctl(h, &["-o", "json", "endpoints"]);
    assert!(ok, "netctl endpoints: {err}");
    let eps: Vec<Value> = serde_json::from_str(&out).expect("endpoints JSON");
    eps.into_iter()
        .find(|e| e["container_id"] == cid)
        .unwrap_or_else(|| panic!("no endpoint of {cid} in {out}"))
}

#[test]
fn namespace_pod_labels_and_named_ports_from_cni_and_netctl_label() {
    if !require_root("namespace_pod_labels_and_named_ports_from_cni_and_netctl_label") {
        return;
    }
    let mut h = Host::new(POOLS);

    // containerd's CNI_ARGS and the CNI convention's args.cni.labels and ports.
    let ns = h.container_ns();
    let mut cfg = h.config();
    cfg["args"] = json!({"cni": {
        "labels": [{"key": "app", "value": "web"},
                   {"key": "app.kubernetes.io/part-of", "value": "shop"}],
        "ports": [{"name": "http", "port": 8080}]
    }});
    CniCall::new("ADD", cfg)
        .container("lbl-web", &ns)
        .cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1;K8S_POD_UID=u1")
        .run()
        .expect_ok();
    let ep = shown(&h, "lbl-web");
    assert_eq!(ep["namespace"], "ns1", "{ep}");
    assert_eq!(ep["pod"], "p1", "{ep}");
    assert_eq!(
        ep["labels"],
        json!({"app": "web", "app.kubernetes.io/part-of": "shop"}),
        "args.cni.labels, and no K8S_* key: {ep}"
    );
    assert_eq!(ep["named_ports"][0]["name"], "http", "{ep}");
    assert_eq!(ep["named_ports"][0]["port"], 8080, "{ep}");

    // A container the runtime gave nothing: namespace default, no labels.
    let plain_ns = h.container_ns();
    h.add("lbl-plain", &plain_ns);
    let plain = shown(&h, "lbl-plain");
    assert_eq!(plain["namespace"], "default", "{plain}");
    assert_eq!(plain["labels"], json!({}), "{plain}");

    // The table shows namespace and labels; wide adds the pod; get shows the ports.
    let (ok, table, err) = netctl(&h, &["endpoints"]);
    assert!(ok, "{err}");
    assert!(
        table.contains("NAMESPACE") && table.contains("ns1"),
        "{table}"
    );
    assert!(table.contains("app=web"), "{table}");
    let (ok, wide, err) = netctl(&h, &["-o", "wide", "endpoints"]);
    assert!(ok && wide.contains("p1"), "{wide}{err}");
    let (ok, one, err) = netctl(&h, &["endpoint", "get", "lbl-web"]);
    assert!(ok && one.contains("http=8080/tcp"), "{one}{err}");

    // Label it (by a prefix of the container ID), as kubectl label does.
    let (ok, out, err) = netctl(&h, &["endpoint", "label", "lbl-w", "tier=db", "app-"]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        shown(&h, "lbl-web")["labels"],
        json!({"app.kubernetes.io/part-of": "shop", "tier": "db"})
    );
    // Changing a value needs --overwrite.
    let (ok, _, err) = netctl(&h, &["endpoint", "label", "lbl-web", "tier=cache"]);
    assert!(!ok && err.contains("--overwrite"), "{err}");
    let (ok, _, err) = netctl(
        &h,
        &["endpoint", "label", "lbl-web", "tier=cache", "--overwrite"],
    );
    assert!(ok, "{err}");
    assert_eq!(shown(&h, "lbl-web")["labels"]["tier"], "cache");

    // Bad labels change nothing: refused by netctl, and by the agent when asked
    // directly.
    // (Without the identity, which the policy control plane re-resolves after the
    // last change, in its own time.)
    let without_identity = |mut v: Value| {
        v.as_object_mut().map(|o| o.remove("identity"));
        v
    };
    let before = without_identity(shown(&h, "lbl-web"));
    let (ok, _, err) = netctl(&h, &["endpoint", "label", "lbl-web", "ok=1", "bad key=x"]);
    assert!(!ok && err.contains("bad key"), "{err}");
    let client = h.agent.client();
    let refused = client.request(
        "POST",
        &strait_api::paths::endpoint_labels("lbl-web"),
        Some(br#"{"set": {"ok": "1", "tier": "-x"}, "overwrite": true}"#),
    );
    match refused {
        Err(strait_api::ClientError::Api(e)) => {
            assert_eq!(e.code, 7, "{e}");
            assert!(e.message.contains("tier"), "{e}");
        }
        other => panic!("a bad label was accepted: {other:?}"),
    }
    assert_eq!(without_identity(shown(&h, "lbl-web")), before);
    let (ok, _, err) = netctl(&h, &["endpoint", "label", "nosuch", "a=b"]);
    assert!(!ok && err.contains("no such attachment"), "{err}");

    // A bad label at ADD: code 7 naming it, nothing created.
    let bad_ns = h.container_ns();
    let mut cfg = h.config();
    cfg["args"] = json!({"cni": {"labels": [{"key": "app", "value": "not ok"}]}});
    let used = h.used_addresses();
    let out = CniCall::new("ADD", cfg).container("lbl-bad", &bad_ns).run();
    assert_eq!(out.error_code(), 7, "{}", out.stdout);
    assert!(out.stdout.contains("app"), "{}", out.stdout);
    assert_eq!(h.endpoints().len(), 2);
    assert_eq!(h.used_addresses(), used);
    assert_eq!(h.strait_links().len(), 2);

    assert!(h.del("lbl-web", &ns).ok());
    assert!(h.del("lbl-plain", &plain_ns).ok());
}
