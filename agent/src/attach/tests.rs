//! The attach rules of the module doc, as unit tests: the attacher on an embedded
//! store in a temporary directory and the in-memory fake kernel. No root needed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use strait_api::{AddRequest, Attachment, CheckRequest, DelRequest, GcRequest, IpamIssue, code};

use super::events::{EndpointEvent, EndpointSubscriber};
use super::{AttachError, Attacher, AttacherConfig};
use crate::endpoint::host_ifname;
use crate::hostnet::HostNet;
use crate::hostnet::fake::{FakeHost, HOST_NETNS};
use crate::ipam::{Ipam, IpamConfig};
use crate::store::Store;
use crate::store::embedded::EmbeddedStore;

const NET: &str = "net";

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

struct Bed {
    dir: tempfile::TempDir,
    host: FakeHost,
    attacher: Arc<Attacher<FakeHost>>,
    ipam: Arc<Ipam>,
    heard: Arc<Heard>,
}

async fn bed_with_grace(gc_grace: Duration) -> Bed {
    let dir = tempfile::tempdir().expect("dir");
    let store: Arc<dyn Store> = EmbeddedStore::open(&dir.path().join("store.redb"))
        .await
        .expect("store");
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
            mtu: 1450,
            gc_grace,
        },
        store,
        ipam.clone(),
        host.clone(),
    );
    let heard = Arc::new(Heard::default());
    attacher.subscribe(heard.clone());
    attacher.set_ready();
    Bed {
        dir,
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
            labels: Default::default(),
            host_ports: false,
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
    for (req, want) in [
        (missing, "does not exist"),
        (host_ns, "host's own network namespace"),
        (multicast, "multicast"),
        (bad_name, "interface name"),
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

    // The sweep reads the records, then stops before it lists the links ...
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
