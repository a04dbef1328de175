//! What real runtimes sent to CNI plugins (podman 4.3 and containerd 1.6, CRI and
//! `ctr run --cni`; captured in tests/fixtures) is accepted by strait: every env and
//! stdin parses, the quirks come out right, and the binary answers each capture as it
//! should with no agent running.

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use common::{Capture, captures, queued, run};
use serde_json::Value;
use strait_cni::config::{self, PortMapping};
use strait_cni::env::{CniArgs, RawEnv, Verb};
use strait_cni::result::CniResult;
use strait_cni::version::{CniVersion, VersionInfo};

fn raw_env(c: &Capture) -> RawEnv {
    RawEnv::from_lookup(|k| c.env.get(k).cloned())
}

fn by_name<'a>(all: &'a [Capture], dir: &str, plugin_verb: &str) -> Vec<&'a Capture> {
    all.iter()
        .filter(|c| {
            let path = c.file.to_string_lossy();
            path.contains(dir) && path.ends_with(&format!("{plugin_verb}.txt"))
        })
        .collect()
}

#[test]
fn every_capture_parses() {
    let all = captures();
    let dir = tempfile::tempdir().unwrap();
    let mut seen = BTreeMap::<&str, usize>::new();
    for c in &all {
        let ctx = c.file.display();
        let env = raw_env(c);
        let verb = env.verb().unwrap_or_else(|e| panic!("{ctx}: {e}"));
        env.validate(verb).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        *seen.entry(verb.as_str()).or_default() += 1;

        if verb == Verb::Version {
            let input =
                config::version_probe(c.stdin.as_bytes()).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            let captured: Value = serde_json::from_str(&c.stdout).unwrap();
            assert_eq!(
                VersionInfo::for_input(input.as_deref()).cni_version,
                captured["cniVersion"],
                "{ctx}"
            );
            continue;
        }

        let conf = config::decode(c.stdin_for_strait(dir.path()).as_bytes())
            .and_then(|raw| raw.validate())
            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let attachment = env
            .attachment(verb)
            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(attachment.ifname, c.env["CNI_IFNAME"], "{ctx}");
        if let Some(prev) = &conf.prev_result {
            CniResult::from_prev(prev).unwrap_or_else(|e| panic!("{ctx}: prevResult: {e}"));
        }
        if verb == Verb::Add {
            let args = CniArgs::parse(env.args.as_deref().unwrap_or_default())
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            conf.add_options(&args)
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        }
    }
    assert_eq!(seen.get("ADD"), Some(&18), "{seen:?}");
    assert_eq!(seen.get("DEL"), Some(&22), "{seen:?}");
    assert_eq!(seen.get("VERSION"), Some(&28), "{seen:?}");
}

#[test]
fn podman_static_ip_and_mac_arrive_in_cni_args() {
    let all = captures();
    let add = by_name(&all, "static-ip-mac-portmap", "bridge-ADD");
    assert_eq!(add.len(), 1);
    let c = add[0];
    let dir = tempfile::tempdir().unwrap();
    let conf = config::decode(c.stdin_for_strait(dir.path()).as_bytes())
        .unwrap()
        .validate()
        .unwrap();
    let args = CniArgs::parse(&c.env["CNI_ARGS"]).unwrap();
    let opts = conf.add_options(&args).unwrap();
    assert_eq!(opts.ips, vec!["10.213.10.99".parse::<IpAddr>().unwrap()]);
    assert_eq!(opts.mac.as_deref(), Some("02:42:0a:d5:0a:63"));
    // Podman's K8S_POD_NAME is the container's name: shown, not a label.
    assert_eq!(opts.pod.as_deref(), Some("ra-spy2"));
    assert!(opts.labels.is_empty(), "{:?}", opts.labels);
    assert_eq!(opts.namespace, None);
    assert_eq!(conf.cni_version, CniVersion::V1_0_0);
}

#[test]
fn podman_and_containerd_port_mappings_both_parse() {
    let all = captures();
    let dir = tempfile::tempdir().unwrap();
    let mappings = |c: &Capture| {
        config::decode(c.stdin_for_strait(dir.path()).as_bytes())
            .unwrap()
            .validate()
            .unwrap()
            .add_options(&CniArgs::default())
            .unwrap()
            .port_mappings
    };
    let podman = by_name(&all, "static-ip-mac-portmap", "portmap-ADD");
    assert_eq!(
        mappings(podman[0]),
        vec![PortMapping {
            host_port: 18081,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: Some("127.0.0.1".parse().unwrap()),
            name: None,
        }]
    );
    // containerd capitalises the keys.
    let cri: Vec<_> = by_name(&all, "cni-containerd-cri", "portmap-ADD");
    assert!(cri[0].stdin.contains("\"HostPort\""), "{}", cri[0].stdin);
    assert_eq!(mappings(cri[0])[0].host_port, 18095);
}

/// containerd's CRI sends the pod's namespace and name in CNI_ARGS: they become the
/// endpoint's namespace and pod. They are no labels (the pod's labels are not in
/// CNI_ARGS), and neither are the pod UID and infra container ID.
#[test]
fn containerd_cri_metadata_gives_namespace_and_pod() {
    let all = captures();
    let add = by_name(&all, "cni-containerd-cri", "bridge-ADD");
    assert_eq!(add.len(), 2);
    let mut pods = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    for c in add {
        let args = CniArgs::parse(&c.env["CNI_ARGS"]).unwrap();
        assert_eq!(args.namespace.as_deref(), Some("ra-ns"));
        let opts = config::decode(c.stdin_for_strait(dir.path()).as_bytes())
            .unwrap()
            .validate()
            .unwrap()
            .add_options(&args)
            .unwrap();
        assert_eq!(opts.namespace.as_deref(), Some("ra-ns"));
        assert!(opts.labels.is_empty(), "{:?}", opts.labels);
        pods.push(opts.pod.expect("K8S_POD_NAME"));
    }
    pods.sort();
    assert_eq!(pods, ["ra-pod1", "ra-pod2"]);
}

#[test]
fn containerd_second_del_has_no_netns() {
    let all = captures();
    let dels: Vec<_> = all
        .iter()
        .filter(|c| c.command() == "DEL" && c.env["CNI_NETNS"].is_empty())
        .collect();
    // CRI's RemovePodSandbox DELs and every `ctr run --cni` DEL.
    assert!(dels.len() >= 4, "{}", dels.len());
    for c in dels {
        let a = raw_env(c).attachment(Verb::Del).unwrap();
        assert_eq!(a.netns, None, "{}", c.file.display());
    }
}

#[test]
fn reference_plugin_results_round_trip() {
    // The bridge plugin's 1.0.0 results, read as a prevResult and printed again, come
    // out the same: chaining behind it loses nothing.
    let all = captures();
    let adds: Vec<_> = all
        .iter()
        .filter(|c| c.command() == "ADD" && c.file.to_string_lossy().ends_with("bridge-ADD.txt"))
        .collect();
    assert!(adds.len() >= 4);
    for c in adds {
        let captured: Value = serde_json::from_str(&c.stdout).unwrap();
        let parsed = CniResult::from_prev(&captured).unwrap();
        let again = serde_json::to_value(parsed.render(CniVersion::V1_0_0)).unwrap();
        assert_eq!(again, captured, "{}", c.file.display());
    }
}

#[test]
fn binary_answers_every_version_probe() {
    for c in captures().iter().filter(|c| c.command() == "VERSION") {
        let r = run(&c.env_pairs(), &c.stdin);
        assert_eq!(r.exit, 0, "{}: {r:#?}", c.file.display());
        let v = r.json();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert!(
            v["supportedVersions"]
                .as_array()
                .unwrap()
                .contains(&"1.0.0".into())
        );
    }
}

#[test]
fn binary_queues_every_captured_del_without_agent() {
    for c in captures().iter().filter(|c| c.command() == "DEL") {
        let dir = tempfile::tempdir().unwrap();
        common::agent_made_queue(dir.path());
        let r = run(&c.env_pairs(), &c.stdin_for_strait(dir.path()));
        r.expect_silent_success();
        let files = queued(dir.path());
        assert_eq!(files.len(), 1, "{}: {files:?}", c.file.display());
        let body: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        assert_eq!(body["container_id"], c.env["CNI_CONTAINERID"].as_str());
        let netns = &c.env["CNI_NETNS"];
        if netns.is_empty() {
            assert_eq!(body["netns"], Value::Null);
        } else {
            assert_eq!(body["netns"], netns.as_str());
        }
    }
}

#[test]
fn binary_says_try_again_to_every_captured_add_without_agent() {
    for c in captures().iter().filter(|c| c.command() == "ADD") {
        let dir = tempfile::tempdir().unwrap();
        let r = run(&c.env_pairs(), &c.stdin_for_strait(dir.path()));
        let err = r.expect_error(11);
        assert_eq!(err["cniVersion"], "1.0.0", "{}", c.file.display());
    }
}
