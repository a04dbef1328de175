//! The real `strait` binary, exec'd the way a runtime does: VERSION, every error path
//! that needs no agent, DEL queueing with the agent down, and how agent answers are
//! passed on (through a canned socket that only acknowledges or refuses).

mod common;

use common::{
    Canned, agent_made_queue, attachment_env, config, dying_agent, hung_agent, queued, run,
    socket_path,
};
use serde_json::{Value, json};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn version_echoes_input_and_lists_supported() {
    let r = run(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(r.exit, 0, "{r:#?}");
    assert_eq!(
        r.json(),
        json!({"cniVersion": "1.0.0",
               "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    let r = run(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(r.json()["cniVersion"], "1.1.0");
}

#[test]
fn a_person_asking_for_the_version_gets_it_in_words() {
    for flag in ["--version", "-V"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_strait"))
            .arg(flag)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run strait");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{flag}: {out:?}");
        assert!(
            text.starts_with(&format!("strait CNI plugin {}", env!("CARGO_PKG_VERSION"))),
            "{flag}: {text}"
        );
        assert!(text.contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"), "{text}");
        assert!(!text.contains("\"code\""), "not a CNI error: {text}");
    }
    // A runtime never passes arguments; with CNI_COMMAND unset it still gets the
    // spec's error, not the text.
    let r = run(&[], "");
    assert_ne!(r.exit, 0, "{r:#?}");
    assert!(r.stdout.contains("\"code\""), "{r:#?}");
}

#[test]
fn version_probe_like_podman() {
    // podman: empty container ID, "dummy" for the rest.
    let r = run(
        &[
            ("CNI_COMMAND", "VERSION"),
            ("CNI_CONTAINERID", ""),
            ("CNI_NETNS", "dummy"),
            ("CNI_IFNAME", "dummy"),
            ("CNI_PATH", "dummy"),
            ("CNI_ARGS", ""),
        ],
        r#"{"cniVersion":"1.0.0"}"#,
    );
    assert_eq!(r.exit, 0, "{r:#?}");
    assert_eq!(r.json()["cniVersion"], "1.0.0");
}

#[test]
fn missing_command_is_code_4() {
    let err = run(&[], "{}").expect_error(4);
    assert!(
        err["msg"].as_str().unwrap().contains("CNI_COMMAND"),
        "{err}"
    );
}

#[test]
fn unknown_command_is_code_4() {
    let err = run(&[("CNI_COMMAND", "FROB")], "{}").expect_error(4);
    assert!(err["msg"].as_str().unwrap().contains("FROB"), "{err}");
}

#[test]
fn missing_env_names_the_variables() {
    let d = tmp();
    let err = run(
        &[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")],
        &config(d.path(), "1.1.0").to_string(),
    )
    .expect_error(4);
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("CNI_NETNS") && msg.contains("CNI_IFNAME"),
        "{msg}"
    );
    assert_eq!(err["cniVersion"], "1.1.0");
    let err = run(
        &[("CNI_COMMAND", "DEL")],
        &config(d.path(), "0.4.0").to_string(),
    )
    .expect_error(4);
    assert_eq!(
        err["cniVersion"], "0.4.0",
        "answered in the config's version"
    );
}

#[test]
fn invalid_container_id_and_ifname_are_code_4() {
    let d = tmp();
    let conf = config(d.path(), "1.1.0").to_string();
    let mut env = attachment_env("ADD");
    env[1] = ("CNI_CONTAINERID", "-bad id");
    let err = run(&env, &conf).expect_error(4);
    assert!(
        err["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
        "{err}"
    );

    let mut env = attachment_env("ADD");
    env[3] = ("CNI_IFNAME", "averyveryverylongname");
    let err = run(&env, &conf).expect_error(4);
    assert!(err["msg"].as_str().unwrap().contains("CNI_IFNAME"), "{err}");
}

#[test]
fn unknown_cni_args_without_ignore_unknown_is_code_4() {
    let d = tmp();
    let mut env = attachment_env("ADD");
    env.push(("CNI_ARGS", "FOO=bar"));
    let err = run(&env, &config(d.path(), "1.1.0").to_string()).expect_error(4);
    assert!(err["msg"].as_str().unwrap().contains("CNI_ARGS"), "{err}");
}

#[test]
fn malformed_json_is_code_6() {
    run(&attachment_env("ADD"), "{\"cniVersion\": ").expect_error(6);
    run(&attachment_env("ADD"), "").expect_error(6);
    run(&[("CNI_COMMAND", "VERSION")], "{nope").expect_error(6);
}

#[test]
fn config_without_name_is_code_7() {
    let err = run(
        &attachment_env("ADD"),
        r#"{"cniVersion":"1.0.0","type":"strait"}"#,
    )
    .expect_error(7);
    assert!(err["msg"].as_str().unwrap().contains("name"), "{err}");
    // Errors are reported in the config's version when it is one we speak.
    assert_eq!(err["cniVersion"], "1.0.0");
    run(&attachment_env("ADD"), r#"{"name":"n","type":"strait"}"#).expect_error(7);
}

#[test]
fn unsupported_version_is_code_1() {
    for v in ["0.2.0", "0.1.0", "9.9.9"] {
        let conf = json!({"cniVersion": v, "name": "n", "type": "strait"}).to_string();
        let err = run(&attachment_env("ADD"), &conf).expect_error(1);
        assert_eq!(err["cniVersion"], "1.1.0", "{err}");
    }
}

#[test]
fn check_before_0_4_0_is_code_1() {
    let d = tmp();
    for v in ["0.3.0", "0.3.1"] {
        run(&attachment_env("CHECK"), &config(d.path(), v).to_string()).expect_error(1);
    }
}

#[test]
fn status_and_gc_before_1_1_0_are_code_1() {
    let d = tmp();
    for v in ["0.4.0", "1.0.0"] {
        let conf = config(d.path(), v).to_string();
        run(&[("CNI_COMMAND", "STATUS")], &conf).expect_error(1);
        run(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
            &conf,
        )
        .expect_error(1);
    }
}

#[test]
fn add_without_agent_is_code_11() {
    let d = tmp();
    let err = run(
        &attachment_env("ADD"),
        &config(d.path(), "1.1.0").to_string(),
    )
    .expect_error(11);
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("not running") && msg.contains("try again"),
        "{msg}"
    );
    assert!(queued(d.path()).is_empty());
}

#[test]
fn check_and_gc_without_agent_are_code_11() {
    let d = tmp();
    run(
        &attachment_env("CHECK"),
        &config(d.path(), "1.1.0").to_string(),
    )
    .expect_error(11);
    let mut conf = config(d.path(), "1.1.0");
    conf["cni.dev/valid-attachments"] = json!([]);
    run(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &conf.to_string(),
    )
    .expect_error(11);
}

#[test]
fn status_without_agent_is_code_50() {
    let d = tmp();
    run(
        &[("CNI_COMMAND", "STATUS")],
        &config(d.path(), "1.1.0").to_string(),
    )
    .expect_error(50);
}

#[test]
fn gc_without_attachment_list_is_code_7() {
    let d = tmp();
    run(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &config(d.path(), "1.1.0").to_string(),
    )
    .expect_error(7);
}

#[test]
fn del_without_agent_queues_the_release() {
    let d = tmp();
    agent_made_queue(d.path());
    let conf = config(d.path(), "1.0.0").to_string();
    let r = run(&attachment_env("DEL"), &conf);
    r.expect_silent_success();
    assert!(r.stderr.contains("queued"), "{r:#?}");

    let files = queued(d.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("testnet_c0ffee01_eth0.") && name.ends_with(".json"),
        "{name}"
    );
    let body: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"network": "testnet", "container_id": "c0ffee01", "ifname": "eth0",
               "netns": "/var/run/netns/strait-test"})
    );

    // Idempotent: a second DEL, now like containerd's (empty netns), rewrites the
    // same entry.
    let mut env = attachment_env("DEL");
    env[2] = ("CNI_NETNS", "");
    run(&env, &conf).expect_silent_success();
    let files = queued(d.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let body: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    assert_eq!(body["netns"], Value::Null);
}

#[test]
fn del_with_no_netns_and_no_prev_result_succeeds() {
    let d = tmp();
    agent_made_queue(d.path());
    run(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c0ffee01"),
            ("CNI_IFNAME", "eth0"),
        ],
        &config(d.path(), "1.1.0").to_string(),
    )
    .expect_silent_success();
    assert_eq!(queued(d.path()).len(), 1);
}

#[test]
fn del_that_cannot_queue_is_code_5() {
    let d = tmp();
    // The agent's state dir, as its locator names it, is a file: the queue directory
    // cannot be created under it.
    std::fs::write(common::state_dir(d.path()), b"").unwrap();
    strait_api::queue::write_locator(&socket_path(d.path()), &common::state_dir(d.path())).unwrap();
    run(
        &attachment_env("DEL"),
        &config(d.path(), "1.1.0").to_string(),
    )
    .expect_error(5);
}

#[test]
fn del_queues_where_the_agents_locator_says_not_where_the_config_says() {
    let d = tmp();
    // The agent ran with --state-dir elsewhere and left its locator by its socket;
    // the config still names the default-like state dir of its own.
    let agent_state = d.path().join("agent-state");
    strait_api::queue::write_locator(&socket_path(d.path()), &agent_state).unwrap();
    let r = run(
        &attachment_env("DEL"),
        &config(d.path(), "1.1.0").to_string(),
    );
    r.expect_silent_success();
    let in_agents: Vec<_> = std::fs::read_dir(agent_state.join("pending-release"))
        .expect("the agent's queue")
        .collect();
    assert_eq!(in_agents.len(), 1, "{r:#?}");
    assert!(
        queued(d.path()).is_empty(),
        "nothing in the config's stateDir"
    );
}

#[test]
fn del_with_no_queue_any_agent_drains_fails_instead_of_reporting_success() {
    let d = tmp();
    // No locator by the socket, and no agent ever made the configured queue.
    let err = run(
        &attachment_env("DEL"),
        &config(d.path(), "1.1.0").to_string(),
    )
    .expect_error(11);
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("no agent would apply") && msg.contains("pending-release"),
        "{msg}"
    );
    assert!(!common::state_dir(d.path()).exists(), "nothing written");
}

#[test]
fn a_hung_agent_costs_the_timeout_then_add_and_check_say_try_again_and_del_queues() {
    let d = tmp();
    agent_made_queue(d.path());
    hung_agent(&socket_path(d.path()));
    let conf = config(d.path(), "1.1.0").to_string();
    let with_timeout = |verb| {
        let mut env = attachment_env(verb);
        env.push(("STRAIT_CNI_TIMEOUT_MS", "300"));
        env
    };
    for verb in ["ADD", "CHECK"] {
        let err = run(&with_timeout(verb), &conf).expect_error(11);
        let msg = err["msg"].as_str().unwrap();
        assert!(msg.contains("did not answer"), "{verb}: {msg}");
    }
    let r = run(&with_timeout("DEL"), &conf);
    r.expect_silent_success();
    assert!(r.stderr.contains("queued"), "{r:#?}");
    assert_eq!(queued(d.path()).len(), 1, "{r:#?}");
    let mut status = vec![("CNI_COMMAND", "STATUS"), ("STRAIT_CNI_TIMEOUT_MS", "300")];
    run(&status, &conf).expect_error(50);
    status[1].1 = "soon";
    run(&status, &conf).expect_error(4);
}

#[test]
fn an_agent_that_dies_mid_answer_is_try_again_not_internal() {
    for partial in [&b""[..], b"HTTP/1.1 200 OK\r\nContent-Le"] {
        let d = tmp();
        dying_agent(&socket_path(d.path()), partial);
        let err = run(
            &attachment_env("ADD"),
            &config(d.path(), "1.1.0").to_string(),
        )
        .expect_error(11);
        let msg = err["msg"].as_str().unwrap();
        assert!(msg.contains("closed the connection"), "{msg}");
    }
}

#[test]
fn add_sends_the_request_and_passes_agent_codes_through() {
    let d = tmp();
    let agent = Canned::start(
        &socket_path(d.path()),
        503,
        r#"{"code":11,"message":"straitd is starting","details":"replaying the store"}"#,
    );
    let mut conf = config(d.path(), "1.0.0");
    conf["mtu"] = json!(1400);
    conf["runtimeConfig"] = json!({
        "ips": ["10.1.2.3/24"],
        "portMappings": [{"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp"}]
    });
    conf["args"] = json!({"cni": {"labels": [{"key": "app", "value": "web"}]}});
    let mut env = attachment_env("ADD");
    env.push((
        "CNI_ARGS",
        "IgnoreUnknown=1;K8S_POD_NAME=p1;K8S_POD_NAMESPACE=ns;MAC=02:42:0a:00:00:07;IP=10.1.2.4",
    ));
    let err = run(&env, &conf.to_string()).expect_error(11);
    assert_eq!(err["msg"], "straitd is starting");
    assert_eq!(err["details"], "replaying the store");
    assert_eq!(err["cniVersion"], "1.0.0");

    let (path, body) = agent.request();
    assert_eq!(path, "/v1/cni/add");
    assert_eq!(
        body,
        json!({
            "network": "testnet",
            "container_id": "c0ffee01",
            "ifname": "eth0",
            "netns": "/var/run/netns/strait-test",
            "ips": ["10.1.2.3", "10.1.2.4"],
            "mac": "02:42:0a:00:00:07",
            "mtu": 1400,
            // K8S_POD_NAMESPACE and K8S_POD_NAME are the namespace and pod, not labels.
            "namespace": "ns",
            "pod": "p1",
            "labels": {"app": "web"},
            // runtimeConfig.portMappings: the host ports the agent serves.
            "port_mappings": [{"host_port": 8080, "container_port": 80, "protocol": "tcp"}]
        })
    );
}

#[test]
fn del_reaching_the_agent_queues_nothing() {
    let d = tmp();
    let agent = Canned::start(&socket_path(d.path()), 200, "");
    let mut env = attachment_env("DEL");
    env[2] = ("CNI_NETNS", "");
    run(&env, &config(d.path(), "1.0.0").to_string()).expect_silent_success();
    let (path, body) = agent.request();
    assert_eq!(path, "/v1/cni/del");
    assert_eq!(
        body,
        json!({"network": "testnet", "container_id": "c0ffee01", "ifname": "eth0",
               "netns": null})
    );
    assert!(queued(d.path()).is_empty());
}

#[test]
fn del_error_from_agent_is_passed_on() {
    let d = tmp();
    let _agent = Canned::start(
        &socket_path(d.path()),
        500,
        r#"{"code":106,"message":"store unreachable"}"#,
    );
    let err = run(
        &attachment_env("DEL"),
        &config(d.path(), "1.1.0").to_string(),
    )
    .expect_error(106);
    assert_eq!(err["msg"], "store unreachable");
    assert!(queued(d.path()).is_empty());
}

#[test]
fn check_sends_our_addresses_from_prev_result() {
    let d = tmp();
    let agent = Canned::start(&socket_path(d.path()), 200, "");
    let mut conf = config(d.path(), "1.0.0");
    conf["prevResult"] = json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "strait0a1b2c3d", "mac": "ee:ee:ee:ee:ee:ee"},
            {"name": "eth0", "mac": "02:42:0a:00:00:05",
             "sandbox": "/var/run/netns/strait-test"}
        ],
        "ips": [
            {"interface": 1, "address": "10.244.0.5/32", "gateway": "169.254.1.1"},
            {"interface": 0, "address": "169.254.1.1/32"}
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
        "dns": {}
    });
    run(&attachment_env("CHECK"), &conf.to_string()).expect_silent_success();
    let (path, body) = agent.request();
    assert_eq!(path, "/v1/cni/check");
    assert_eq!(body["expected_ips"], json!(["10.244.0.5/32"]));
    assert_eq!(body["netns"], "/var/run/netns/strait-test");
}

#[test]
fn check_failure_is_passed_on() {
    let d = tmp();
    let _agent = Canned::start(
        &socket_path(d.path()),
        409,
        r#"{"code":105,"message":"veth strait0a1b2c3d is gone"}"#,
    );
    run(
        &attachment_env("CHECK"),
        &config(d.path(), "0.4.0").to_string(),
    )
    .expect_error(105);
}

#[test]
fn status_ready_is_silent() {
    let d = tmp();
    let agent = Canned::start(
        &socket_path(d.path()),
        200,
        r#"{"ready":true,"code":0,"reasons":[]}"#,
    );
    run(
        &[("CNI_COMMAND", "STATUS")],
        &config(d.path(), "1.1.0").to_string(),
    )
    .expect_silent_success();
    let (path, body) = agent.request();
    assert_eq!(path, "/v1/cni/status");
    assert_eq!(body, json!({"network": "testnet"}));
}

#[test]
fn status_not_ready_uses_the_agents_code() {
    let d = tmp();
    let _agent = Canned::start(
        &socket_path(d.path()),
        200,
        r#"{"ready":false,"code":51,"reasons":["vxlan device missing"]}"#,
    );
    let err = run(
        &[("CNI_COMMAND", "STATUS")],
        &config(d.path(), "1.1.0").to_string(),
    )
    .expect_error(51);
    assert!(err["msg"].as_str().unwrap().contains("vxlan"), "{err}");
}

#[test]
fn gc_sends_valid_attachments_and_tolerates_item_errors() {
    let d = tmp();
    let agent = Canned::start(
        &socket_path(d.path()),
        200,
        r#"{"released":[{"container_id":"old","ifname":"eth0"}],
            "errors":["deleting veth strait99: busy"]}"#,
    );
    let mut conf = config(d.path(), "1.1.0");
    conf["cni.dev/attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
    let r = run(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &conf.to_string(),
    );
    r.expect_silent_success();
    assert!(r.stderr.contains("strait99: busy"), "{r:#?}");
    let (path, body) = agent.request();
    assert_eq!(path, "/v1/cni/gc");
    assert_eq!(
        body,
        json!({"network": "testnet",
               "valid_attachments": [{"container_id": "c1", "ifname": "eth0"}]})
    );
}
