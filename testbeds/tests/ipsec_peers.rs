//! External IPsec peers and gateway nodes through the real `straitd` and `netctl`, on
//! the embedded store and on etcd: `--ipsec-gateway` is in the node record and
//! `netctl nodes`; `netctl ipsec peer add|apply|list|get|delete` round-trip; bad
//! documents are refused with the reason and change nothing (one bad peer of a list
//! and none is written); a pre-shared key read from stdin is stored but never shown by
//! the API or netctl in any format, nor logged; a record written straight into the
//! store that is unusable is skipped with a log line while the agent keeps serving.
//!
//! Root needed; etcd for the etcd half.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use strait_api::Client;
use strait_testbeds::cluster::{Cluster, ClusterOpts, Fabric};
use strait_testbeds::host::Host;
use strait_testbeds::require_root;

const POOLS: &[&str] = &["10.78.0.0/16"];
/// The keys stored by the scenario: neither may show anywhere but in the store.
const KEY: &str = "correct horse battery staple";
const KEY2: &str = "tr0ub4dor&3-but-longer";

/// The agent's flags: a gateway of site `dc`.
fn gateway_flags() -> Vec<String> {
    vec!["--site".into(), "dc".into(), "--ipsec-gateway".into()]
}

/// `netctl --socket SOCKET ARGS` with `stdin` piped in: (success, stdout, stderr).
fn netctl(socket: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(strait_testbeds::bins::bin("netctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("exec netctl");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("netctl output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `netctl ARGS` that must succeed: its stdout.
fn ok(socket: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out, err) = netctl(socket, args, stdin);
    assert!(ok, "netctl {args:?}: {out}{err}");
    out
}

/// `netctl ARGS` that must fail: its stderr, which must say `reason`.
fn refused(socket: &Path, args: &[&str], stdin: Option<&str>, reason: &str) {
    let (ok, out, err) = netctl(socket, args, stdin);
    assert!(!ok, "netctl {args:?} should fail: {out}");
    assert!(
        err.contains(reason),
        "netctl {args:?}: {err} (want {reason:?})"
    );
}

/// The node is a gateway in `netctl nodes`, as a table and as JSON.
fn the_gateway_shows_in_nodes(socket: &Path, node: &str) {
    let table = ok(socket, &["nodes"], None);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let col = rows[0]
        .iter()
        .position(|h| *h == "GATEWAY")
        .unwrap_or_else(|| panic!("no GATEWAY column: {table}"));
    let row = rows
        .iter()
        .find(|r| r[0] == node)
        .unwrap_or_else(|| panic!("no {node}: {table}"));
    assert_eq!(row[col], "yes", "{table}");
    let nodes: Vec<Value> =
        serde_json::from_str(&ok(socket, &["-o", "json", "nodes"], None)).expect("nodes JSON");
    let rec = nodes
        .iter()
        .find(|n| n["name"] == node)
        .map(|n| &n["record"])
        .expect("own record");
    assert_eq!(rec["ipsec"]["gateway"], true, "{rec}");
    assert_eq!(rec["site"], "dc", "{rec}");
}

fn peer(name: &str, secret: &str) -> Value {
    json!({"name": name, "site": "dc", "address": "198.51.100.7",
           "auth": {"method": "psk", "secret": secret},
           "remote_networks": ["192.168.50.0/24"]})
}

/// What the API lists, as JSON: the "nothing changed" witness.
fn listed(client: &Client) -> Value {
    serde_json::to_value(client.ipsec_peers().expect("list peers")).unwrap()
}

/// The scenario both stores run: add (PSK from stdin, PSK file, certificates), show
/// in every format, refuse bad documents, apply, delete.
fn peers_round_trip(socket: &Path, client: &Client) {
    let add_onprem = [
        "ipsec",
        "peer",
        "add",
        "onprem",
        "--site",
        "dc",
        "--address",
        "198.51.100.7",
        "--auth",
        "psk",
        "--psk-stdin",
        "--remote-id",
        "fqdn:gw.onprem.example",
        "--remote-net",
        "192.168.50.0/24",
        "--remote-net",
        "10.8.0.0/16",
    ];
    let out = ok(socket, &add_onprem, Some(&format!("{KEY}\n")));
    assert!(out.contains("onprem") && !out.contains(KEY), "{out}");
    ok(
        socket,
        &[
            "ipsec",
            "peer",
            "add",
            "branch",
            "--site",
            "dc",
            "--initiate",
            "peer",
            "--auth",
            "psk",
            "--psk-file",
            "/etc/strait/branch.psk",
            "--remote-net",
            "172.16.0.0/12",
        ],
        None,
    );
    ok(
        socket,
        &[
            "ipsec",
            "peer",
            "add",
            "cloud",
            "--site",
            "dc",
            "--address",
            "203.0.113.9",
            "--initiate",
            "strait",
            "--auth",
            "cert",
            "--cert",
            "/etc/strait/gw.pem",
            "--key",
            "/etc/strait/gw.key",
            "--ca",
            "/etc/strait/ca.pem",
            "--remote-id",
            "dn:CN=vpn.cloud.example,O=Cloud",
            "--bgp-asn",
            "64600",
            "--bgp-address",
            "10.9.0.1",
            "--bgp-local-address",
            "169.254.100.1",
        ],
        None,
    );

    // Listed and shown, every format, never with the key.
    let table = ok(socket, &["ipsec", "peer", "list"], None);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "SITE",
            "ADDRESS",
            "INITIATE",
            "AUTH",
            "REMOTE-ID",
            "REMOTE-NETS",
            "BGP"
        ]
    );
    assert_eq!(
        rows[1..],
        [
            vec![
                "branch",
                "dc",
                "-",
                "peer",
                "psk-file",
                "-",
                "172.16.0.0/12",
                "-"
            ],
            vec![
                "cloud",
                "dc",
                "203.0.113.9",
                "strait",
                "cert",
                "dn:CN=vpn.cloud.example,O=Cloud",
                "-",
                "AS64600@10.9.0.1"
            ],
            vec![
                "onprem",
                "dc",
                "198.51.100.7",
                "both",
                "psk",
                "fqdn:gw.onprem.example",
                "192.168.50.0/24,10.8.0.0/16",
                "-"
            ],
        ]
    );
    for args in [
        &["ipsec", "peer", "list"][..],
        &["-o", "json", "ipsec", "peer", "list"],
        &["-o", "yaml", "ipsec", "peer", "list"],
        &["ipsec", "peer", "get", "onprem"],
        &["-o", "json", "ipsec", "peer", "get", "onprem"],
        &["-o", "yaml", "ipsec", "peer", "get", "onprem"],
        &["-o", "wide", "ipsec", "peer", "get", "onprem"],
    ] {
        let out = ok(socket, args, None);
        assert!(out.contains("onprem"), "{args:?}: {out}");
        assert!(!out.contains(KEY), "{args:?} shows the key: {out}");
    }
    let shown: Value = serde_json::from_str(&ok(
        socket,
        &["-o", "json", "ipsec", "peer", "get", "onprem"],
        None,
    ))
    .unwrap();
    assert_eq!(
        shown["auth"],
        json!({"method": "psk", "secret_file": null}),
        "{shown}"
    );
    assert_eq!(
        shown["remote_networks"],
        json!(["192.168.50.0/24", "10.8.0.0/16"])
    );
    let out = ok(socket, &["ipsec", "peer", "get", "onprem"], None);
    assert!(out.contains("key in the store (not shown)"), "{out}");
    let api = client.ipsec_peer("onprem").expect("GET one");
    assert!(!format!("{api:?}").contains(KEY));

    // Bad documents: refused with the reason, nothing changes.
    let before = listed(client);
    let put = |name: &str, body: &Value| {
        client
            .request(
                "PUT",
                &strait_api::paths::ipsec_peer(name),
                Some(body.to_string().as_bytes()),
            )
            .expect_err("refused")
            .to_string()
    };
    let e = put("other", &peer("onprem", KEY2));
    assert!(e.contains("the path names peer \"other\""), "{e}");
    let e = put("onprem", &peer("onprem", "short"));
    assert!(e.contains("at least 16"), "{e}");
    let mut unknown = peer("onprem", KEY2);
    unknown["colour"] = json!("blue");
    let e = put("onprem", &unknown);
    assert!(e.contains("unknown field"), "{e}");
    let mut no_nets = peer("onprem", KEY2);
    no_nets["remote_networks"] = json!([]);
    let e = put("onprem", &no_nets);
    assert!(e.contains("nothing would go through the tunnel"), "{e}");
    // A list with one bad peer: the agent writes none of it.
    let e = client
        .request(
            "POST",
            strait_api::paths::IPSEC_PEERS,
            Some(
                json!([peer("fresh", KEY2), peer("onprem", "short")])
                    .to_string()
                    .as_bytes(),
            ),
        )
        .expect_err("refused")
        .to_string();
    assert!(e.contains("at least 16"), "{e}");
    // And netctl: a short key from stdin, a bad entry in a file.
    let mut short_add = add_onprem;
    short_add[3] = "fresh";
    refused(socket, &short_add, Some("short\n"), "at least 16");
    refused(socket, &short_add, Some("\n"), "no pre-shared key on stdin");
    let one_bad = format!(
        "name: fresh\nsite: dc\nauth: {{method: psk, secret: \"{KEY2}\"}}\nremote_networks: [10.1.0.0/16]\n\
         ---\nname: onprem\nsite: dc\nauth: {{method: psk, secret_file: relative.psk}}\nremote_networks: [10.1.0.0/16]\n"
    );
    refused(
        socket,
        &["ipsec", "peer", "apply", "-f", "-"],
        Some(&one_bad),
        "absolute path",
    );
    refused(
        socket,
        &["ipsec", "peer", "get", "fresh"],
        None,
        "no external IPsec peer named \"fresh\"",
    );
    assert_eq!(listed(client), before, "nothing changed");

    // A good file: created and replaced together.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("peers.yaml");
    std::fs::write(
        &file,
        format!(
            "name: onprem\nsite: dc\naddress: 198.51.100.7\nauth: {{method: psk, secret: \"{KEY}\"}}\nremote_networks: [192.168.50.0/24]\n\
             ---\n- name: fresh\n  site: dc\n  auth: {{method: psk, secret: \"{KEY2}\"}}\n  initiate: peer\n  remote_networks: [10.1.0.0/16]\n"
        ),
    )
    .unwrap();
    let out = ok(
        socket,
        &["ipsec", "peer", "apply", "-f", file.to_str().unwrap()],
        None,
    );
    assert_eq!(
        out,
        "external IPsec peer onprem set\nexternal IPsec peer fresh set\n"
    );
    let shown = client.ipsec_peer("onprem").unwrap();
    assert_eq!(shown.remote_networks, ["192.168.50.0/24".parse().unwrap()]);
    let out = ok(socket, &["-o", "yaml", "ipsec", "peer", "list"], None);
    assert!(out.contains("fresh") && !out.contains(KEY2), "{out}");

    // Deleted once; the second time there is none.
    let out = ok(socket, &["ipsec", "peer", "delete", "cloud"], None);
    assert_eq!(out, "external IPsec peer cloud deleted\n");
    refused(
        socket,
        &["ipsec", "peer", "delete", "cloud"],
        None,
        "no external IPsec peer named \"cloud\"",
    );
    refused(
        socket,
        &["ipsec", "peer", "get", "cloud"],
        None,
        "no external IPsec peer named \"cloud\"",
    );
    let names: Vec<String> = client
        .ipsec_peers()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["branch", "fresh", "onprem"]);
}

/// Neither key in the agent's log.
fn no_key_in(log: &str) {
    for key in [KEY, KEY2] {
        assert!(!log.contains(key), "a pre-shared key in the agent's log");
    }
    assert!(
        log.contains("external IPsec peer set"),
        "the writes are logged"
    );
}

#[test]
fn external_peers_round_trip_on_the_embedded_store_and_keys_never_show() {
    if !require_root("external_peers_round_trip_on_the_embedded_store_and_keys_never_show") {
        return;
    }
    let h = Host::with_opts(|o| o.extra = gateway_flags(), POOLS);
    the_gateway_shows_in_nodes(&h.agent.socket, "node1");
    peers_round_trip(&h.agent.socket, &h.agent.client());
    no_key_in(&h.agent.log());
}

/// `etcdctl` against the cluster's etcd, in the underlay namespace.
fn etcdctl(c: &Cluster, args: &[&str]) -> String {
    let url = c.etcd().client_url();
    let mut argv = vec!["etcdctl", "--endpoints", url.as_str()];
    argv.extend(args);
    let out = c.underlay().ns.exec(&argv);
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn external_peers_round_trip_on_etcd_and_an_unusable_record_is_skipped() {
    let test = "external_peers_round_trip_on_etcd_and_an_unusable_record_is_skipped";
    if !require_root(test) || !strait_testbeds::etcd::require_etcd(test) {
        return;
    }
    let mut opts = ClusterOpts::new(1, Fabric::None);
    opts.pools = POOLS.iter().map(|p| p.to_string()).collect();
    opts.agent_extra = gateway_flags();
    let c = Cluster::start(opts);
    let h = c.host(0);
    the_gateway_shows_in_nodes(&h.agent.socket, &h.name);
    peers_round_trip(&h.agent.socket, &h.agent.client());
    // The key read from stdin is in the store, where the gateways read it.
    let stored = etcdctl(
        &c,
        &["get", "/strait/v1/ipsec/peers/onprem", "--print-value-only"],
    );
    let stored: Value = serde_json::from_str(stored.trim()).expect("a JSON record");
    assert_eq!(stored["auth"]["secret"], KEY);

    // Written by hand: a key too short, a record that is no peer. Both skipped, each
    // with a log line; the rest is served as before.
    let weak_key = "tiny-secret";
    let weak = peer("weak", weak_key);
    etcdctl(
        &c,
        &["put", "/strait/v1/ipsec/peers/weak", &weak.to_string()],
    );
    etcdctl(&c, &["put", "/strait/v1/ipsec/peers/junk", "{not json"]);
    let out = ok(&h.agent.socket, &["ipsec", "peer", "list"], None);
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, ["branch", "fresh", "onprem"], "{out}");
    refused(
        &h.agent.socket,
        &["ipsec", "peer", "get", "weak"],
        None,
        "the stored record is unusable",
    );
    ok(&h.agent.socket, &["status"], None);
    let log = h.agent.log();
    for key in ["/strait/v1/ipsec/peers/weak", "/strait/v1/ipsec/peers/junk"] {
        assert!(
            log.lines().any(
                |l| l.contains("skipping an unusable external IPsec peer record")
                    && l.contains(key)
            ),
            "no log line for {key}"
        );
    }
    assert!(!log.contains(weak_key), "a stored key in the log");
    no_key_in(&log);
}
