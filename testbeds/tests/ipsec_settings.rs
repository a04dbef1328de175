//! Sites, node keys and the cluster's IPsec mode through the real `straitd` and
//! `netctl`: `--site` is in the node record and `netctl nodes`; the agent makes its
//! Ed25519 key on first start (0600, the same key after a restart, its public half in
//! the record) and refuses to start on a key file others could read; `netctl ipsec
//! mode` sets and shows the mode, and a bad one changes nothing.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use strait_testbeds::host::Host;
use strait_testbeds::require_root;

const POOLS: &[&str] = &["10.79.0.0/16"];
const KEY_FILE: &str = "ipsec/node-ed25519.p8";

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

/// This node's record as `netctl -o json nodes` shows it.
fn own_record(h: &Host) -> Value {
    let (ok, out, err) = netctl(h, &["-o", "json", "nodes"]);
    assert!(ok, "netctl nodes: {err}");
    let nodes: Vec<Value> = serde_json::from_str(&out).expect("nodes JSON");
    nodes
        .into_iter()
        .find(|n| n["name"] == "node1")
        .map(|n| n["record"].clone())
        .unwrap_or_else(|| panic!("no node1 in {out}"))
}

#[test]
fn the_site_and_the_public_key_are_in_the_record_and_the_key_survives_a_restart() {
    if !require_root("the_site_and_the_public_key_are_in_the_record_and_the_key_survives_a_restart")
    {
        return;
    }
    let mut h = Host::with_opts(|o| o.extra = vec!["--site".into(), "dc-1".into()], POOLS);
    let rec = own_record(&h);
    assert_eq!(rec["site"], "dc-1", "{rec}");
    let key = rec["ipsec"]["ed25519"]
        .as_str()
        .expect("a public key")
        .to_string();
    assert_eq!(key.len(), 64, "{rec}");
    let (ok, table, err) = netctl(&h, &["nodes"]);
    assert!(ok, "{err}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!((header[1], row[1]), ("SITE", "dc-1"), "{table}");

    let path = h.agent.state_dir.join(KEY_FILE);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
    let log = h.agent.log();
    let private = std::fs::read(&path).unwrap();
    // The PKCS#8 document ends with the seed and the public key; no 8 bytes of the
    // private part may appear in the log, hex or not.
    for w in private[16..48].windows(8) {
        let hex: String = w.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!log.contains(&hex), "private key bytes in the log");
    }

    h.agent.restart();
    assert_eq!(
        own_record(&h)["ipsec"]["ed25519"],
        key.as_str(),
        "same key after a restart"
    );
}

#[test]
fn a_key_file_others_can_read_stops_the_agent_with_a_clear_error() {
    if !require_root("a_key_file_others_can_read_stops_the_agent_with_a_clear_error") {
        return;
    }
    let mut h = Host::new(POOLS);
    h.agent.stop();
    let path = h.agent.state_dir.join(KEY_FILE);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let before = std::fs::read(&path).unwrap();
    h.agent.relaunch();
    strait_testbeds::wait::wait_until(
        "the agent exits: it must not run with a readable key",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || h.agent.exit_status().is_some(),
    )
    .unwrap();
    let log = h.agent.log();
    assert!(
        log.contains("lets others than its owner read") && log.contains("Remove the file"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the key file is left as it was"
    );

    // Removed as the error says: a new key, and the agent runs.
    std::fs::remove_file(&path).unwrap();
    h.agent.relaunch();
    h.agent.wait_ready(Duration::from_secs(30));
    let rec = own_record(&h);
    assert_eq!(rec["site"], "default", "{rec}");
}

#[test]
fn netctl_ipsec_mode_sets_and_shows_the_mode_and_refuses_a_bad_one() {
    if !require_root("netctl_ipsec_mode_sets_and_shows_the_mode_and_refuses_a_bad_one") {
        return;
    }
    let h = Host::new(POOLS);
    let (ok, out, err) = netctl(&h, &["ipsec", "mode"]);
    assert!(ok, "{err}");
    assert_eq!(out, "mode off (no node pair encrypts)\n");

    let (ok, out, err) = netctl(&h, &["ipsec", "mode", "cross-site"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "mode cross-site (node pairs of different sites encrypt)\n"
    );
    let (ok, out, err) = netctl(&h, &["-o", "json", "ipsec", "mode"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["mode"], "cross-site");

    // netctl refuses a wrong word before asking the agent.
    let (ok, _, err) = netctl(&h, &["ipsec", "mode", "on"]);
    assert!(!ok);
    assert!(err.contains("off, cross-site or all"), "{err}");
    // The agent refuses a body netctl would never send, and writes nothing.
    let client = h.agent.client();
    let bad = client.request(
        "PUT",
        strait_api::paths::IPSEC_SETTINGS,
        Some(br#"{"mode":"sometimes"}"#),
    );
    let err = bad.expect_err("an unknown mode is refused").to_string();
    assert!(
        err.contains("sometimes") || err.contains("unknown variant"),
        "{err}"
    );
    let (_, out, _) = netctl(&h, &["ipsec", "mode"]);
    assert!(out.starts_with("mode cross-site"), "{out}");
}
