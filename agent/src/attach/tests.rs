//! The attach rules of the module doc, as unit tests: the attacher on an embedded
//! store in a temporary directory and the in-memory fake kernel. No root needed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use strait_api::{AddRequest, Attachment, CheckRequest, DelRequest, GcRequest, IpamIssue, code};

use super::events::{EndpointEvent, EndpointSubscriber};
use super::{AttachError, Attacher, AttacherConfig};
use crate::endpoint::host_ifname;
use crate::hostnet::HostNet;
use crate::hostnet::fake::{FakeHost, HOST_NETNS};
use crate::ipam::{Ipam, IpamConfig};
use crate::store::embedded::EmbeddedStore;
use crate::store::{
    KeyValue, LeaseId, RangeResponse, Revision, Store, StoreError, Txn, TxnResponse, Watch,
};

const NET: &str = "net";
/// The owner mark of the attacher under test.
const OWNER: &str = "strait:00000000000000aa";

/// What a subscriber heard, as text.
#[derive(Default)]
struct Heard(Mutex<Vec<String>>);

impl EndpointSubscriber for Heard {
    fn endpoint_event(&self, event: &EndpointEvent<'_>) {
        let line = match event {
            EndpointEvent::Attached {
                endpoint,
                host_ifindex,
            } => format!("attached {} {host_ifindex}", endpoint.host_ifname),
            EndpointEvent::Detached { host_ifname } => format!("detached {host_ifname}"),
        };
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    }
}

impl Heard {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The embedded store, unreachable while `down` (as etcd is in an outage).
struct Outage {
    inner: Arc<dyn Store>,
    down: AtomicBool,
}

impl Outage {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::Acquire) {
            Err(StoreError::Unavailable("test: the store is down".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for Outage {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn range(&self, prefix: &str) -> Result<RangeResponse, StoreError> {
        self.check()?;
        self.inner.range(prefix).await
    }
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> Result<Revision, StoreError> {
        self.check()?;
        self.inner.put(key, value, lease).await
    }
    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.delete(key).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        self.check()?;
        self.inner.txn(txn).await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        self.check()?;
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.check()?;
        self.inner.lease_keep_alive(lease).await
    }
    async fn lease_revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.check()?;
        self.inner.lease_revoke(lease).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        self.check()?;
        self.inner.watch(prefix, from).await
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.check()?;
        self.inner.compact(revision).await
    }
    async fn revision(&self) -> Result<Revision, StoreError> {
        self.check()?;
        self.inner.revision().await
    }
}

struct Bed {
    dir: tempfile::TempDir,
    store: Arc<Outage>,
    host: FakeHost,
    attacher: Arc<Attacher<FakeHost>>,
    ipam: Arc<Ipam>,
    heard: Arc<Heard>,
}

async fn bed_with_grace(gc_grace: Duration) -> Bed {
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(Outage {
        inner: EmbeddedStore::open(&dir.path().join("store.redb"))
            .await
            .expect("store"),
        down: AtomicBool::new(false),
    });
    let ipam = Arc::new(
        Ipam::new(
            store.clone(),
            "n1".into(),
            IpamConfig::with_pools(vec![
                "10.9.0.0/24".parse().expect("pool"),
                "fd00:9::/120".parse().expect("pool"),
            ]),
        )
        .await
        .expect("ipam"),
    );
    let host = FakeHost::new();
    let attacher = Attacher::new(
        AttacherConfig {
            node: "n1".into(),
            mtu_less: Default::default(),
            mtu: 1450,
            gc_grace,
            owner: OWNER.into(),
            state_dir: Some(dir.path().to_path_buf()),
        },
        store.clone(),
        ipam.clone(),
        host.clone(),
    );
    let heard = Arc::new(Heard::default());
    attacher.subscribe(heard.clone());
    attacher.set_ready();
    Bed {
        dir,
        store,
        host,
        attacher,
        ipam,
        heard,
    }
}

async fn bed() -> Bed {
    bed_with_grace(Duration::from_secs(900)).await
}

impl Bed {
    /// A container with its own namespace, ready for ADD.
    fn container(&self, cid: &str) -> AddRequest {
        let netns = format!("/run/netns/{cid}");
        self.host.add_netns(&netns);
        AddRequest {
            network: NET.into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
            netns,
            ips: vec![],
            mac: None,
            mtu: None,
            namespace: None,
            pod: None,
            labels: Default::default(),
            named_ports: Vec::new(),
            host_ports: false,
            port_mappings: Vec::new(),
        }
    }

    async fn handles(&self) -> Vec<String> {
        let mut h: Vec<String> = self
            .ipam
            .list_handles()
            .await
            .expect("handles")
            .into_iter()
            .map(|h| h.handle)
            .collect();
        h.sort();
        h
    }

    async fn records(&self) -> usize {
        self.attacher.endpoints().await.expect("records").len()
    }

    /// Waits for the link reaper to have deleted `name`.
    async fn link_gone(&self, name: &str) {
        for _ in 0..200 {
            if self.host.link(name).is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{name} still on the host: {:?}", self.host.link_names());
    }
}

fn del(cid: &str) -> DelRequest {
    DelRequest {
        network: NET.into(),
        container_id: cid.into(),
        ifname: "eth0".into(),
        netns: None,
    }
}

#[tokio::test]
async fn add_reserves_records_and_plumbs_and_del_releases_all_of_it() {
    let b = bed().await;
    let resp = b.attacher.add(b.container("c1")).await.expect("ADD");
    let link = host_ifname(NET, "c1", "eth0");
    assert_eq!(resp.ips.len(), 2, "one address per pool family: {resp:?}");
    assert_eq!(resp.mtu, 1450);
    assert_eq!(resp.interfaces[0].name, link);
    let on_host = b.host.link(&link).expect("veth built");
    let answered: Vec<_> = resp.ips.iter().map(|i| i.address.addr()).collect();
    assert_eq!(
        on_host.ips, answered,
        "the kernel has what the runtime is told"
    );
    assert_eq!(b.records().await, 1);
    assert_eq!(b.handles().await.len(), 1);
    assert_eq!(
        b.heard.lines(),
        vec![format!("attached {link} {}", on_host.index)]
    );

    b.attacher.del(del("c1")).await.expect("DEL");
    assert!(
        b.handles().await.is_empty(),
        "addresses released before DEL answers"
    );
    assert_eq!(b.records().await, 0, "record gone in the same transaction");
    b.link_gone(&link).await;
    assert_eq!(b.heard.lines().last(), Some(&format!("detached {link}")));
}

#[tokio::test]
async fn add_records_namespace_pod_labels_and_named_ports() {
    let b = bed().await;
    let mut req = b.container("c1");
    req.namespace = Some("ns1".into());
    req.pod = Some("p1".into());
    req.labels.insert("app".into(), "web".into());
    let http = strait_api::NamedPort {
        name: "http".into(),
        protocol: strait_policy::ir::Protocol::TCP,
        port: 8080,
    };
    // A repeat (one mapping per host address) is recorded once.
    req.named_ports = vec![http.clone(), http.clone()];
    b.attacher.add(req).await.expect("ADD");
    b.attacher.add(b.container("c2")).await.expect("ADD");

    let eps = b.attacher.endpoints().await.expect("endpoints");
    let ep = eps.iter().find(|e| e.container_id == "c1").expect("c1");
    assert_eq!(ep.namespace, "ns1");
    assert_eq!(ep.pod.as_deref(), Some("p1"));
    assert_eq!(ep.labels["app"], "web");
    assert_eq!(ep.named_ports, vec![http]);
    assert_eq!(ep.identity, None, "the policy control plane's to fill");
    let plain = eps.iter().find(|e| e.container_id == "c2").expect("c2");
    assert_eq!(plain.namespace, strait_policy::ir::DEFAULT_NAMESPACE);
    assert!(plain.pod.is_none() && plain.labels.is_empty() && plain.named_ports.is_empty());
}

#[tokio::test]
async fn a_failed_add_leaves_no_address_record_or_link() {
    let b = bed().await;
    b.host.fail_next_creates(1);
    let err = b
        .attacher
        .add(b.container("c1"))
        .await
        .expect_err("plumbing fails");
    assert!(matches!(err, AttachError::Endpoint(_)), "{err}");
    assert!(b.handles().await.is_empty(), "reservation undone");
    assert_eq!(b.records().await, 0, "record undone");
    assert!(b.host.link_names().is_empty(), "{:?}", b.host.link_names());
    assert!(
        b.heard.lines().is_empty(),
        "nobody told of an endpoint that never was"
    );
    assert_eq!(b.ipam.view().await.expect("view").pools[0].used, 0);
    // The same attachment can be added afterwards.
    b.attacher.add(b.container("c1")).await.expect("retry");
}

#[tokio::test]
async fn add_refuses_bad_requests_before_reserving_anything() {
    let b = bed().await;
    let mut missing = b.container("c1");
    missing.netns = "/run/netns/nobody".into();
    let mut host_ns = b.container("c2");
    host_ns.netns = HOST_NETNS.into();
    let mut multicast = b.container("c3");
    multicast.mac = Some("01:00:5e:00:00:01".into());
    let mut bad_name = b.container("c4");
    bad_name.ifname = "eth/0".into();
    let mut bad_label = b.container("c6");
    bad_label.labels.insert("bad key".into(), "x".into());
    let mut bad_namespace = b.container("c7");
    bad_namespace.namespace = Some("Not_A_Namespace".into());
    let mut bad_port = b.container("c8");
    bad_port.named_ports.push(strait_api::NamedPort {
        name: "http".into(),
        protocol: strait_policy::ir::Protocol::ICMP,
        port: 80,
    });
    for (req, want) in [
        (missing, "does not exist"),
        (host_ns, "host's own network namespace"),
        (multicast, "multicast"),
        (bad_name, "interface name"),
        (bad_label, "\"bad key\""),
        (bad_namespace, "\"Not_A_Namespace\""),
        (bad_port, "not TCP, UDP or SCTP"),
    ] {
        let err = b.attacher.add(req).await.expect_err("refused");
        assert!(err.to_string().contains(want), "{err}");
    }
    assert!(b.handles().await.is_empty());
    assert!(b.host.link_names().is_empty());

    b.attacher.add(b.container("c5")).await.expect("ADD");
    let again = b.attacher.add(b.container("c5")).await.expect_err("twice");
    assert!(matches!(again, AttachError::Duplicate(_)), "{again}");
    assert_eq!(b.handles().await.len(), 1, "the duplicate reserved nothing");
}

#[tokio::test]
async fn requests_before_ready_are_told_to_wait_but_del_is_served() {
    let b = bed().await;
    b.attacher.add(b.container("c1")).await.expect("ADD");
    b.attacher
        .starting
        .store(true, std::sync::atomic::Ordering::Release);
    let err = b
        .attacher
        .add(b.container("c2"))
        .await
        .expect_err("starting");
    assert!(matches!(err, AttachError::Starting), "{err}");
    let r = b.attacher.readiness().await;
    assert_eq!((r.ready, r.code), (false, code::NOT_AVAILABLE), "{r:?}");
    b.attacher.del(del("c1")).await.expect("DEL while starting");
    assert!(b.handles().await.is_empty());
}

#[tokio::test]
async fn del_always_releases_also_when_the_container_is_gone() {
    let b = bed().await;
    let req = b.container("c1");
    let netns = req.netns.clone();
    b.attacher.add(req).await.expect("ADD");
    // The container exited: its namespace and both veth ends are gone.
    b.host.remove_netns(std::path::Path::new(&netns));
    b.attacher.del(del("c1")).await.expect("DEL");
    assert!(b.handles().await.is_empty());
    assert_eq!(b.records().await, 0);
    // Nothing left to release is success too, as often as asked.
    b.attacher.del(del("c1")).await.expect("DEL again");
    b.attacher
        .del(del("never-added"))
        .await
        .expect("DEL of nothing");
}

/// Queues `cid`'s DEL as the plugin does, dated `age` seconds ago (negative: ahead).
fn queue_del(b: &Bed, cid: &str, age: i64) {
    let path = strait_api::queue::enqueue(b.dir.path(), &del(cid)).expect("enqueue");
    let now = SystemTime::now();
    let at = if age >= 0 {
        now - Duration::from_secs(age.unsigned_abs())
    } else {
        now + Duration::from_secs(age.unsigned_abs())
    };
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(at))
        .expect("date the queued file");
}

#[tokio::test]
async fn a_queued_del_older_than_the_attachment_it_names_is_dropped() {
    let b = bed().await;
    // The runtime reused the container ID: the queued DEL was for the previous one.
    queue_del(&b, "c1", 120);
    b.attacher.add(b.container("c1")).await.expect("ADD");
    // A DEL queued after this attachment was made, and one for an attachment the
    // agent never saw (already released).
    b.attacher.add(b.container("c2")).await.expect("ADD");
    queue_del(&b, "c2", -120);
    queue_del(&b, "c3", 0);
    let applied = b.attacher.apply_pending_releases(b.dir.path()).await;
    assert_eq!(applied, 2, "c2 and c3");
    assert_eq!(
        b.handles().await,
        vec![super::records::attachment_id(NET, "c1", "eth0")],
        "c1 kept, c2 released"
    );
    let left = strait_api::queue::pending(b.dir.path()).expect("queue");
    assert!(left.requests.is_empty(), "every entry consumed: {left:?}");
}

#[tokio::test]
async fn the_sweep_removes_stale_links_but_skips_operations_in_flight() {
    let b = bed().await;
    let stray = host_ifname(NET, "crashed", "eth0");
    b.host.add_stray_link(&stray);
    b.attacher.add(b.container("kept")).await.expect("ADD");

    // The sweep stops before it lists the links ...
    b.host.list_gate.close();
    let listing = b.host.list_gate.reached();
    let a = b.attacher.clone();
    let sweep = tokio::spawn(async move { a.sweep_stale_links().await });
    listing.await;
    // ... meanwhile an ADD records its endpoint and makes its link, not yet answered:
    // a link the sweep has no record of.
    b.host.create_gate.close();
    let creating = b.host.create_gate.reached();
    let a = b.attacher.clone();
    let req = b.container("busy");
    let adding = tokio::spawn(async move { a.add(req).await });
    creating.await;
    let busy = host_ifname(NET, "busy", "eth0");
    assert!(b.host.link(&busy).is_some());

    b.host.list_gate.open();
    let removed = sweep.await.expect("task").expect("sweep");
    assert_eq!(removed, vec![stray.clone()], "only the leftover");
    assert!(
        b.host.link(&busy).is_some(),
        "the ADD in flight keeps its link"
    );
    assert!(b.host.link(&host_ifname(NET, "kept", "eth0")).is_some());

    b.host.create_gate.open();
    adding.await.expect("task").expect("the held ADD completes");
    assert!(
        b.attacher
            .sweep_stale_links()
            .await
            .expect("sweep")
            .is_empty()
    );
}

#[tokio::test]
async fn an_add_after_a_del_waits_for_the_old_veth_and_reuses_the_name() {
    let b = bed().await;
    for _ in 0..3 {
        b.attacher.add(b.container("c1")).await.expect("ADD");
        b.attacher.del(del("c1")).await.expect("DEL");
    }
    b.attacher.add(b.container("c1")).await.expect("ADD");
    assert_eq!(b.host.link_names(), vec![host_ifname(NET, "c1", "eth0")]);
    // A leftover link of the same name with no record (a crash mid-ADD) is replaced.
    b.attacher.del(del("c1")).await.expect("DEL");
    b.link_gone(&host_ifname(NET, "c1", "eth0")).await;
    b.host.add_stray_link(&host_ifname(NET, "c1", "eth0"));
    b.attacher
        .add(b.container("c1"))
        .await
        .expect("ADD over a leftover");
}

#[tokio::test]
async fn check_compares_record_reservation_and_kernel() {
    let b = bed().await;
    let req = b.container("c1");
    let netns = req.netns.clone();
    let resp = b.attacher.add(req).await.expect("ADD");
    let check = |expected: Vec<ipnet::IpNet>| CheckRequest {
        network: NET.into(),
        container_id: "c1".into(),
        ifname: "eth0".into(),
        netns: netns.clone(),
        expected_ips: expected,
    };
    let ours: Vec<ipnet::IpNet> = resp.ips.iter().map(|i| i.address).collect();
    b.attacher
        .check(check(ours.clone()))
        .await
        .expect("as built");
    let other = vec!["10.9.0.200/32".parse().expect("net")];
    let err = b.attacher.check(check(other)).await.expect_err("not ours");
    assert!(err.to_string().contains("is not the endpoint's"), "{err}");
    // Someone deleted the veth behind the agent's back.
    b.host
        .delete_link(&host_ifname(NET, "c1", "eth0"))
        .await
        .expect("delete");
    let err = b.attacher.check(check(ours)).await.expect_err("link gone");
    assert!(matches!(err, AttachError::Check { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[tokio::test]
async fn cni_gc_releases_what_the_runtime_no_longer_lists() {
    let b = bed().await;
    for c in ["c1", "c2", "c3"] {
        b.attacher.add(b.container(c)).await.expect("ADD");
    }
    let resp = b
        .attacher
        .gc(GcRequest {
            network: NET.into(),
            valid_attachments: vec![Attachment {
                container_id: "c2".into(),
                ifname: "eth0".into(),
            }],
        })
        .await
        .expect("GC");
    let mut released: Vec<_> = resp
        .released
        .iter()
        .map(|a| a.container_id.as_str())
        .collect();
    released.sort();
    assert_eq!(released, ["c1", "c3"]);
    assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    assert_eq!(
        b.handles().await,
        vec![super::records::attachment_id(NET, "c2", "eth0")]
    );
}

#[tokio::test]
async fn the_leak_gc_releases_attachments_whose_container_is_gone() {
    let b = bed_with_grace(Duration::ZERO).await;
    let req = b.container("gone");
    let netns = req.netns.clone();
    b.attacher.add(req).await.expect("ADD");
    b.attacher.add(b.container("alive")).await.expect("ADD");
    assert_eq!(
        b.attacher.gc_leaks().await.expect("GC"),
        0,
        "nothing leaked yet"
    );

    b.host.remove_netns(std::path::Path::new(&netns));
    let report = b.attacher.ipam_check(Duration::ZERO).await.expect("check");
    let leaked: Vec<_> = report
        .issues
        .iter()
        .filter_map(|i| match i {
            IpamIssue::LeakedHandle { handle, .. } => Some(handle.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        leaked,
        vec![super::records::attachment_id(NET, "gone", "eth0")]
    );
    assert_eq!(b.attacher.gc_leaks().await.expect("GC"), 1);
    assert_eq!(
        b.handles().await,
        vec![super::records::attachment_id(NET, "alive", "eth0")]
    );
    assert_eq!(b.records().await, 1);
}

/// Issue 13: addresses Docker reserved through the IPAM driver API have no endpoint
/// record, and are held until Docker releases them: never a leak.
#[tokio::test]
async fn the_leak_gc_leaves_dockers_reservations_alone() {
    use crate::ipam::{AllocRequest, DOCKER_HANDLE_PREFIX};
    let b = bed_with_grace(Duration::ZERO).await;
    let docker = format!("{DOCKER_HANDLE_PREFIX}net1.10.9.0.1");
    for handle in [docker.clone(), "orphan".to_string()] {
        b.ipam
            .allocate(AllocRequest {
                handle,
                ..Default::default()
            })
            .await
            .expect("allocate");
    }
    let report = b.attacher.ipam_check(Duration::ZERO).await.expect("check");
    let leaked: Vec<_> = report
        .issues
        .iter()
        .filter_map(|i| match i {
            IpamIssue::LeakedHandle { handle, .. } => Some(handle.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(leaked, ["orphan"]);
    assert_eq!(b.attacher.gc_leaks().await.expect("GC"), 1);
    assert_eq!(b.handles().await, [docker]);
}

#[tokio::test]
async fn readiness_reports_forwarding_off_as_limited_connectivity() {
    let b = bed().await;
    assert!(b.attacher.readiness().await.ready);
    b.host.set_forwarding_off(true);
    let r = b.attacher.readiness().await;
    assert_eq!(
        (r.ready, r.code),
        (false, code::LIMITED_CONNECTIVITY),
        "{r:?}"
    );
    assert!(
        r.reasons.iter().any(|m| m.contains("forwarding is off")),
        "{r:?}"
    );
}

// ----- issue 19, item 1: one agent's sweep leaves another's links alone -----

#[tokio::test]
async fn the_sweep_removes_only_links_marked_as_its_own_or_unmarked() {
    let b = bed().await;
    b.attacher.add(b.container("kept")).await.expect("ADD");
    let kept = host_ifname(NET, "kept", "eth0");
    assert_eq!(
        b.host.link(&kept).and_then(|l| l.alias).as_deref(),
        Some(OWNER),
        "ADD marks the host end with the agent's owner"
    );
    // Another agent's container in the same namespace (another store), this agent's
    // own leftover of a crash, and an unmarked one made by an older strait.
    let theirs = host_ifname(NET, "theirs", "eth0");
    b.host
        .add_marked_stray_link(&theirs, Some("strait:00000000000000bb"));
    let ours = host_ifname(NET, "ours", "eth0");
    b.host.add_marked_stray_link(&ours, Some(OWNER));
    let legacy = host_ifname(NET, "legacy", "eth0");
    b.host.add_stray_link(&legacy);

    let mut removed = b.attacher.sweep_stale_links().await.expect("sweep");
    removed.sort();
    let mut want = vec![ours, legacy];
    want.sort();
    assert_eq!(removed, want);
    assert!(
        b.host.link(&theirs).is_some(),
        "another agent's link survives: {:?}",
        b.host.link_names()
    );
    assert!(b.host.link(&kept).is_some());
}

#[tokio::test]
async fn the_sweep_keeps_a_link_whose_add_completed_while_it_listed() {
    let b = bed().await;
    // The sweep stops where it lists the links ...
    b.host.list_gate.close();
    let listing = b.host.list_gate.reached();
    let a = b.attacher.clone();
    let sweep = tokio::spawn(async move { a.sweep_stale_links().await });
    listing.await;
    // ... and an ADD records its endpoint, makes its link and answers meanwhile: no
    // longer in flight. Records read before the listing would not know it.
    b.attacher.add(b.container("quick")).await.expect("ADD");
    b.host.list_gate.open();
    let removed = sweep.await.expect("task").expect("sweep");
    assert!(removed.is_empty(), "{removed:?}");
    assert!(b.host.link(&host_ifname(NET, "quick", "eth0")).is_some());
}

// ----- issue 19, item 8: a record whose interface is gone -----

#[tokio::test]
async fn a_retried_add_whose_interface_never_came_succeeds_and_leaks_nothing() {
    let b = bed().await;
    let before = b.ipam.view().await.expect("view").pools[0].used;
    let first = b.attacher.add(b.container("c1")).await.expect("ADD");
    // The agent died before answering, and the interface went (or was never built):
    // the record and its reservation are all that is left.
    let link = host_ifname(NET, "c1", "eth0");
    b.host.delete_link(&link).await.expect("delete");
    assert_eq!(b.records().await, 1);

    let again = b
        .attacher
        .add(b.container("c1"))
        .await
        .expect("retried ADD");
    assert!(b.host.link(&link).is_some(), "interface built");
    assert_eq!(b.records().await, 1);
    assert_eq!(b.handles().await.len(), 1, "one reservation, not two");
    assert_eq!(
        b.ipam.view().await.expect("view").pools[0].used,
        before + 1,
        "the first ADD's address was released: {first:?} then {again:?}"
    );
    // With the interface there, a second ADD is still a duplicate.
    let dup = b.attacher.add(b.container("c1")).await.expect_err("twice");
    assert!(matches!(dup, AttachError::Duplicate(_)), "{dup}");

    b.attacher.del(del("c1")).await.expect("DEL");
    assert_eq!(b.ipam.view().await.expect("view").pools[0].used, before);
}

#[tokio::test]
async fn at_start_records_without_an_interface_in_a_live_namespace_are_released() {
    let b = bed().await;
    for c in ["lost", "gone", "fine"] {
        b.attacher.add(b.container(c)).await.expect("ADD");
    }
    // "lost": its ADD never answered and its interface is gone; "gone": the container
    // exited (its namespace went with the interface), the leak GC's to judge.
    b.host
        .delete_link(&host_ifname(NET, "lost", "eth0"))
        .await
        .expect("delete");
    b.host.remove_netns(std::path::Path::new("/run/netns/gone"));

    let released = b
        .attacher
        .release_records_without_interface()
        .await
        .expect("reconcile");
    assert_eq!(
        released,
        vec![super::records::attachment_id(NET, "lost", "eth0")]
    );
    assert_eq!(
        b.handles().await,
        vec![
            super::records::attachment_id(NET, "fine", "eth0"),
            super::records::attachment_id(NET, "gone", "eth0"),
        ]
    );
    b.attacher
        .add(b.container("lost"))
        .await
        .expect("retried ADD");
}

// ----- issue 19, item 11: DEL while the store is unreachable -----

#[tokio::test]
async fn del_while_the_store_is_down_deletes_the_veth_queues_the_release_and_applies_it_later() {
    let b = bed().await;
    b.attacher.add(b.container("c1")).await.expect("ADD");
    let link = host_ifname(NET, "c1", "eth0");

    b.store.down.store(true, Ordering::Release);
    b.attacher.del(del("c1")).await.expect("DEL succeeds");
    b.link_gone(&link).await;
    let queued = strait_api::queue::pending(b.dir.path()).expect("queue");
    assert_eq!(queued.requests.len(), 1, "{queued:?}");
    assert_eq!(queued.requests[0].request.container_id, "c1");
    // Still down: the queue is kept through the retries.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        strait_api::queue::pending(b.dir.path())
            .expect("queue")
            .requests
            .len(),
        1
    );

    b.store.down.store(false, Ordering::Release);
    for _ in 0..200 {
        if b.handles().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        b.handles().await.is_empty(),
        "released once the store is back"
    );
    assert_eq!(b.records().await, 0);
    let left = strait_api::queue::pending(b.dir.path()).expect("queue");
    assert!(left.requests.is_empty(), "{left:?}");
}

#[tokio::test]
async fn an_add_after_a_del_queued_in_an_outage_releases_the_old_reservation_first() {
    let b = bed().await;
    b.attacher.add(b.container("c1")).await.expect("ADD");
    b.store.down.store(true, Ordering::Release);
    b.attacher.del(del("c1")).await.expect("DEL succeeds");
    let refused = b.attacher.add(b.container("c1")).await.expect_err("down");
    assert!(
        matches!(refused, AttachError::Record(_) | AttachError::Store(_)),
        "{refused}"
    );
    b.store.down.store(false, Ordering::Release);
    // The runtime's retry comes before the queue's: it gets a fresh attachment, and
    // the queued DEL goes without touching it.
    b.link_gone(&host_ifname(NET, "c1", "eth0")).await;
    b.attacher.add(b.container("c1")).await.expect("ADD again");
    assert!(
        strait_api::queue::pending(b.dir.path())
            .expect("queue")
            .requests
            .is_empty()
    );
    assert_eq!(b.handles().await.len(), 1);
    assert!(b.host.link(&host_ifname(NET, "c1", "eth0")).is_some());
}

/// Policy on the ADD path ([`super::enforcement`]): the policy control plane on the
/// in-memory dataplane.
mod enforcement {
    use super::*;
    use crate::policy::fake::FakeDataplane;
    use crate::policy::host::OnHost;
    use crate::policy::{PolicyAgent, PolicyConfig};

    /// The policy control plane, its loop running (ADD waits for its first pass).
    fn policy(
        b: &Bed,
    ) -> (
        PolicyAgent,
        Arc<FakeDataplane>,
        tokio::sync::watch::Sender<bool>,
    ) {
        let dp = Arc::new(FakeDataplane::default());
        let agent = PolicyAgent::new(
            PolicyConfig::new("n1", strait_api::policy::PolicyMode::Enforce),
            b.store.clone(),
            dp.clone(),
            Arc::new(OnHost(b.host.clone())),
        );
        b.attacher.set_enforcement(Arc::new(agent.clone()));
        b.attacher.subscribe(Arc::new(agent.clone()));
        let (stop, rx) = tokio::sync::watch::channel(false);
        agent.spawn(rx);
        (agent, dp, stop)
    }

    #[tokio::test]
    async fn add_answers_once_the_endpoints_policy_is_installed_and_del_removes_it() {
        let b = bed().await;
        let (_agent, dp, _stop) = policy(&b);
        let mut req = b.container("c1");
        req.labels = [("app".to_string(), "web".to_string())].into();
        b.attacher.add(req).await.expect("ADD");
        let link = host_ifname(NET, "c1", "eth0");
        let ifindex = b.host.link(&link).expect("veth").index;
        let record = b.attacher.endpoints().await.expect("records").remove(0);
        let identity = record.identity.expect("the record names its identity");
        let held = dp.lock().entries.get(&ifindex).cloned().expect("installed");
        assert_eq!(held.identity, identity);
        // No policy in the cluster: nothing to enforce, no programs (and no RCU
        // grace period on the ADD path).
        assert_eq!(dp.lock().attached.get(&ifindex), None);

        b.attacher.del(del("c1")).await.expect("DEL");
        assert!(dp.lock().entries.is_empty(), "DEL removed the entries");
    }

    #[tokio::test]
    async fn the_first_policy_puts_programs_on_every_endpoint_and_later_adds_attach_at_once() {
        let b = bed().await;
        let (agent, dp, _stop) = policy(&b);
        b.attacher.add(b.container("c1")).await.expect("ADD c1");
        let c1 = b
            .host
            .link(&host_ifname(NET, "c1", "eth0"))
            .expect("veth")
            .index;
        assert_eq!(dp.lock().attached.get(&c1), None);

        let deny = r#"{"apiVersion":"networking.k8s.io/v1","kind":"NetworkPolicy",
            "metadata":{"name":"deny","namespace":"default"},
            "spec":{"podSelector":{},"policyTypes":["Ingress"]}}"#;
        agent.apply(deny).await.expect("apply");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !dp.lock().attached.contains_key(&c1) {
            assert!(
                std::time::Instant::now() < deadline,
                "c1 never got the programs"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(agent.status().policies == 1);

        b.attacher.add(b.container("c2")).await.expect("ADD c2");
        let c2 = b
            .host
            .link(&host_ifname(NET, "c2", "eth0"))
            .expect("veth")
            .index;
        assert!(
            dp.lock().attached.contains_key(&c2),
            "attached before ADD answered"
        );
        assert!(dp.lock().entries[&c2].tables.ingress.isolated);
    }

    #[tokio::test]
    async fn an_add_whose_policy_cannot_be_installed_fails_and_leaves_nothing() {
        let b = bed().await;
        let (_agent, dp, _stop) = policy(&b);
        dp.lock().fail_install = true;
        let err = b.attacher.add(b.container("c1")).await.expect_err("ADD");
        assert!(matches!(err, AttachError::Policy(_)), "{err:?}");
        assert!(err.to_string().contains("full"), "{err}");
        assert_eq!(b.records().await, 0);
        assert!(b.handles().await.is_empty());
        b.link_gone(&host_ifname(NET, "c1", "eth0")).await;
        // The next ADD of it works.
        b.attacher.add(b.container("c1")).await.expect("ADD again");
    }
}
