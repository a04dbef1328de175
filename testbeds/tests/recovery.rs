//! The agent recovering from a crash and from an etcd outage (issue 19, items 8 and
//! 11), against real `straitd`s and the real `strait` plugin in namespaces of the
//! test's own:
//!
//! * an ADD whose record was written but whose interface is gone (the agent killed
//!   between the two, simulated by deleting the veth while it is down) is released at
//!   start, and the runtime's retried ADD succeeds; the same when the interface goes
//!   while the agent runs; no address leaks;
//! * a DEL while etcd is down succeeds, deletes the veth and queues the release, which
//!   is applied once etcd is back.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use strait_api::{IpamView, paths};
use strait_testbeds::agent::{Agent, AgentOpts};
use strait_testbeds::cni::CniCall;
use strait_testbeds::etcd::{Etcd, EtcdOpts, require_etcd};
use strait_testbeds::host::Host;
use strait_testbeds::netns::{Netns, reap_leftovers};
use strait_testbeds::{require_root, unique_prefix, wait_until};

const POOLS: &[&str] = &["10.79.0.0/16", "fd00:79::/48"];

fn host_link(result: &serde_json::Value) -> String {
    result["interfaces"][0]["name"]
        .as_str()
        .expect("host interface in the result")
        .to_string()
}

#[test]
fn an_add_that_never_answered_is_released_at_start_and_its_retry_succeeds() {
    if !require_root("an_add_that_never_answered_is_released_at_start") {
        return;
    }
    let mut h = Host::new(POOLS);
    let before = h.used_addresses();

    // Crash between the record and the answer: the record is there, the interface
    // is not (deleted while the agent is down).
    let ns0 = h.container_ns();
    let r0 = h.add("lost0", &ns0);
    h.agent.kill();
    h.ns.exec_ok(&["ip", "link", "del", &host_link(&r0)]);
    h.agent.relaunch();
    h.agent.wait_ready(Duration::from_secs(30));
    assert!(
        h.endpoints().iter().all(|e| e.container_id != "lost0"),
        "the record without an interface is released at start: {:?}",
        h.endpoints()
    );
    assert_eq!(h.used_addresses(), before, "and its addresses with it");
    let retried = h.call("ADD", "lost0", &ns0).run();
    assert!(
        retried.ok(),
        "the runtime's retried ADD: {}",
        retried.stdout
    );

    // The interface goes while the agent runs: the retried ADD starts afresh too.
    let ns1 = h.container_ns();
    let r1 = h.add("lost1", &ns1);
    h.ns.exec_ok(&["ip", "link", "del", &host_link(&r1)]);
    let retried = h.call("ADD", "lost1", &ns1).run();
    assert!(
        retried.ok(),
        "ADD over a record without interface: {}",
        retried.stdout
    );
    assert_eq!(
        h.used_addresses(),
        before + 4,
        "two attachments, dual stack"
    );

    for (id, ns) in [("lost0", &ns0), ("lost1", &ns1)] {
        assert!(h.del(id, ns).ok());
    }
    assert_eq!(h.used_addresses(), before, "nothing leaked");
    assert!(h.wait_no_strait_links().is_empty());
}

#[test]
fn a_del_during_an_etcd_outage_succeeds_and_releases_once_etcd_is_back() {
    let name = "a_del_during_an_etcd_outage_succeeds";
    if !require_root(name) || !require_etcd(name) {
        return;
    }
    reap_leftovers();
    let prefix = unique_prefix();
    let host = Netns::new(format!("{prefix}h"));
    let container = Netns::new(format!("{prefix}c0"));
    let mut etcd = Etcd::start_with(EtcdOpts {
        netns: Some(host.name().to_string()),
        ..EtcdOpts::default()
    });
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir()
        .expect("temp dir");
    let mut opts = AgentOpts::new("node1", &["10.97.0.0/24"]);
    opts.extra = vec!["--etcd-endpoints".into(), etcd.client_url()];
    let agent = Agent::start(&host, dir.path(), opts);
    let config = json!({
        "cniVersion": "1.1.0", "name": "stnet", "type": "strait",
        "socket": agent.socket, "stateDir": agent.state_dir,
    });
    let call = |command: &str| {
        CniCall::new(command, config.clone())
            .container("out0", &container.path())
            .run()
    };
    let used = || -> Result<u128, String> {
        let view: IpamView = agent.client().get(paths::IPAM).map_err(|e| e.to_string())?;
        Ok(view.pools.iter().map(|p| p.used).sum())
    };
    let before = used().expect("IPAM view");
    let link = host_link(&call("ADD").expect_ok());
    assert_eq!(used(), Ok(before + 1));
    let queue: PathBuf = agent.state_dir.join(strait_api::PENDING_RELEASE_DIR);
    let queued = || {
        std::fs::read_dir(&queue)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .count()
            })
            .unwrap_or(0)
    };

    etcd.kill();
    let del = call("DEL");
    assert!(del.ok(), "DEL while etcd is down: {}", del.stdout);
    wait_until(
        "the veth to go",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || !host.links().contains(&link),
    )
    .unwrap();
    assert_eq!(queued(), 1, "the release waits in {}", queue.display());

    etcd.restart();
    wait_until(
        "the queued release to be applied",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || match used() {
            Ok(n) if n == before && queued() == 0 => Ok(()),
            other => Err(format!("used {other:?}, {} queued", queued())),
        },
    )
    .unwrap();
}
