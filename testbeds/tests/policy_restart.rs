//! Network policy across an agent's death (docs/policy.md): the programs and pinned
//! maps keep enforcing while the agent is down, a connection the policy allows keeps
//! flowing through the kill and the restart, and a policy applied while the agent is
//! down (or just before it is killed) is enforced once the next agent has caught up.
//!
//! Root and etcd needed.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use strait_testbeds::cluster::{Cluster, ClusterOpts, Container, Fabric};
use strait_testbeds::netpol;

const PORT: u16 = 8080;

fn privileged(test: &str) -> bool {
    strait_testbeds::require_root(test) && strait_testbeds::etcd::require_etcd(test)
}

fn pod(cluster: &mut Cluster, host: usize, name: &str, app: &str) -> Arc<Container> {
    cluster
        .try_add_container_with(host, name, |config| {
            config["args"] = json!({"cni": {"namespace": "shop",
                "labels": [{"key": "app", "value": app}]}});
        })
        .unwrap_or_else(|out| panic!("ADD {name}: {out:?}"))
}

/// A TCP echo server in `c` on PORT, serving every connection until the test ends.
fn serve(c: &Container) {
    let ip = c.ip4();
    let listener =
        c.ns.run_in(move || TcpListener::bind(SocketAddr::new(ip, PORT)))
            .expect("listen");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// A fresh connection from `from` to `to`:PORT that echoes one byte.
fn reaches(from: &Container, to: IpAddr) -> bool {
    from.ns
        .run_in(move || {
            let mut s =
                TcpStream::connect_timeout(&SocketAddr::new(to, PORT), Duration::from_millis(500))?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            s.write_all(b"x")?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            Ok::<_, std::io::Error>(())
        })
        .is_ok()
}

/// A connection opened once and used again and again.
struct LongLived(TcpStream);

impl LongLived {
    fn open(from: &Container, to: IpAddr) -> Self {
        let s = from
            .ns
            .run_in(move || {
                TcpStream::connect_timeout(&SocketAddr::new(to, PORT), Duration::from_secs(2))
            })
            .expect("long-lived connection");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        Self(s)
    }

    fn echoes(&mut self) -> bool {
        let mut b = [0u8; 1];
        self.0.write_all(b"y").is_ok() && self.0.read_exact(&mut b).is_ok()
    }
}

fn until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const ONLY_FRONTEND: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: frontend}}}]
    ports: [{port: 8080}]
";

const FRONTEND_AND_REPORTS: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchExpressions: [{key: app, operator: In, values: [frontend, reports]}]}}]
    ports: [{port: 8080}]
";

#[test]
fn enforcement_survives_the_agent_and_the_next_one_converges() {
    if !privileged("enforcement_survives_the_agent_and_the_next_one_converges") {
        return;
    }
    let mut cluster = Cluster::start(ClusterOpts::new(2, Fabric::Vxlan));
    let db = pod(&mut cluster, 1, "db", "db");
    let frontend = pod(&mut cluster, 0, "fe", "frontend");
    let reports = pod(&mut cluster, 0, "rep", "reports");
    serve(&db);
    let db_ip = db.ip4();
    until("everything open", Duration::from_secs(30), || {
        reaches(&frontend, db_ip) && reaches(&reports, db_ip)
    });

    netpol::apply(&cluster, ONLY_FRONTEND).expect("apply");
    until(
        "only the frontend reaches the db",
        Duration::from_secs(10),
        || reaches(&frontend, db_ip) && !reaches(&reports, db_ip),
    );
    let mut conn = LongLived::open(&frontend, db_ip);
    assert!(conn.echoes());

    // The db's agent dies: its programs and maps go on enforcing.
    cluster.kill_agent(1);
    assert!(conn.echoes(), "the allowed connection survives the kill");
    assert!(
        reaches(&frontend, db_ip),
        "new allowed connections still pass"
    );
    assert!(!reaches(&reports, db_ip), "the denied one stays denied");

    // A change while the agent is down waits for it; the next agent converges.
    netpol::apply(&cluster, FRONTEND_AND_REPORTS).expect("apply while down");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !reaches(&reports, db_ip),
        "nothing enforces what no agent installed"
    );
    cluster.start_agent(1);
    until(
        "the new agent enforces the change",
        Duration::from_secs(15),
        || reaches(&reports, db_ip),
    );
    assert!(conn.echoes(), "the allowed connection survives the restart");

    // Killed right after an apply returns (mid-update): the next agent converges.
    netpol::apply(&cluster, ONLY_FRONTEND).expect("apply");
    cluster.kill_agent(1);
    cluster.start_agent(1);
    until(
        "converged after a kill mid-update",
        Duration::from_secs(15),
        || !reaches(&reports, db_ip) && reaches(&frontend, db_ip),
    );
    assert!(conn.echoes(), "the allowed connection survives everything");
}
