//! The network-policy truth-table harness, in the style of the Kubernetes e2e netpol
//! suite and cyclonus: a fixed model of namespaces and pods on a [`Cluster`], a
//! prober that tries every ordered pair of pods on every port, expectations written
//! by hand per case ([`Reachability`]), and a runner that applies a case's policy
//! documents, waits until the observed table matches the expected one, and cleans up.
//!
//! * **Model**: namespaces `x`, `y`, `z` (labels `ns=<name>`, applied as `v1 Namespace`
//!   documents; `kubernetes.io/metadata.name` is implied), pods `a`, `b`, `c` in each
//!   (label `pod=<name>`), spread round-robin over the hosts. Each pod declares the
//!   named ports `serve-80-tcp`, `serve-81-tcp`, `serve-80-udp`, `serve-81-udp` and
//!   serves TCP 80/81 (echo) and UDP 80/81 (echo) until the model is dropped.
//! * **Prober**: a bounded pool of threads, each entering the source pod's network
//!   namespace per probe, every family of a table in one round. While a table is
//!   polled for, a probe waits [`POLL_TIMEOUT`] (a path between namespaces of one
//!   machine answers in well under a millisecond); no cell counts as blocked before a
//!   probe with the full timeouts of 1 s ([`Patience::Full`]) says so, and a cell
//!   observed blocked where it should be reachable is tried once more at the verdict,
//!   to absorb noise. ICMP (echo) is
//!   probed with `ping` only in cases that ask for it. SCTP is not probed (said on
//!   stdout when the model starts): std has no SCTP sockets and the workspace denies
//!   `unsafe`.
//! * **Expectations** are the suite's own oracle, written from the Kubernetes
//!   semantics per case, never computed by strait's evaluator. As upstream's
//!   `AllowLoopback`, a pod always reaches itself (the packet never leaves it).
//!
//! Policy documents reach the cluster through one place, [`apply`] and [`delete`]
//! (`netctl policy apply -f -` / `netctl policy delete KEY` on host 0).

use std::collections::BTreeSet;
use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cluster::{Cluster, ClusterOpts, Container};

/// The namespaces of the model.
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
/// The pods of each namespace.
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// How long a policy change may take to be enforced on every host.
pub const ENFORCE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a fresh cluster may take until every pod reaches every other one.
pub const CONVERGE: Duration = Duration::from_secs(60);
/// TCP connect timeout of a probe whose answer is final ([`Patience::Full`]).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a probe whose answer is final waits for the echo (TCP and UDP).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// Connect and echo timeout of a probe while a table is polled for
/// ([`Patience::Poll`]).
pub const POLL_TIMEOUT: Duration = Duration::from_millis(250);
/// Pause between two polls of a table that does not match yet.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Probe threads unless `STRAIT_NETPOL_THREADS` says otherwise: most of them sleep in a
/// timeout when a case blocks much, so many are cheap; with as many threads as a
/// case has blocked cells in both families, a round waits out one timeout only.
pub const DEFAULT_THREADS: usize = 384;

/// The named ports every pod declares (`args.cni.ports`).
pub const NAMED_PORTS: [(&str, u16, &str); 4] = [
    ("serve-80-tcp", 80, "TCP"),
    ("serve-81-tcp", 81, "TCP"),
    ("serve-80-udp", 80, "UDP"),
    ("serve-81-udp", 81, "UDP"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
    Icmp,
}

/// What one column set of the table probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Port {
    Tcp(u16),
    Udp(u16),
    Sctp(u16),
    /// An echo request (ICMP or ICMPv6, by the family probed).
    Icmp,
}

pub const TCP80: Port = Port::Tcp(80);
pub const TCP81: Port = Port::Tcp(81);
pub const UDP80: Port = Port::Udp(80);
pub const UDP81: Port = Port::Udp(81);

/// The ports every case probes (the servers every pod runs).
pub const SERVED: [Port; 4] = [TCP80, TCP81, UDP80, UDP81];

impl Port {
    pub fn proto(self) -> Proto {
        match self {
            Port::Tcp(_) => Proto::Tcp,
            Port::Udp(_) => Proto::Udp,
            Port::Sctp(_) => Proto::Sctp,
            Port::Icmp => Proto::Icmp,
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Tcp(p) => write!(f, "TCP/{p}"),
            Port::Udp(p) => write!(f, "UDP/{p}"),
            Port::Sctp(p) => write!(f, "SCTP/{p}"),
            Port::Icmp => f.write_str("ICMP echo"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A pod of the model: `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodId {
    pub ns: String,
    pub pod: String,
}

impl PodId {
    pub fn new(ns: &str, pod: &str) -> Self {
        Self {
            ns: ns.into(),
            pod: pod.into(),
        }
    }
}

impl fmt::Display for PodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ns, self.pod)
    }
}

/// Which pods an expectation talks about: by namespace, by pod name, both or neither
/// (every pod), as upstream's `Peer`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerSel {
    pub ns: Option<String>,
    pub pod: Option<String>,
}

impl PeerSel {
    /// Every pod.
    pub fn any() -> Self {
        Self::default()
    }

    /// Every pod of namespace `ns`.
    pub fn ns(ns: &str) -> Self {
        Self {
            ns: Some(ns.into()),
            pod: None,
        }
    }

    /// Pod `ns/pod`.
    pub fn pod(ns: &str, pod: &str) -> Self {
        Self {
            ns: Some(ns.into()),
            pod: Some(pod.into()),
        }
    }

    /// The pods named `pod` in every namespace.
    pub fn named(pod: &str) -> Self {
        Self {
            ns: None,
            pod: Some(pod.into()),
        }
    }

    pub fn matches(&self, p: &PodId) -> bool {
        self.ns.as_ref().is_none_or(|n| *n == p.ns) && self.pod.as_ref().is_none_or(|n| *n == p.pod)
    }
}

/// Which columns an expectation sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    All,
    Port(Port),
    Proto(Proto),
}

impl On {
    fn matches(self, port: Port) -> bool {
        match self {
            On::All => true,
            On::Port(p) => p == port,
            On::Proto(p) => port.proto() == p,
        }
    }
}

impl From<Port> for On {
    fn from(p: Port) -> Self {
        On::Port(p)
    }
}

impl From<Proto> for On {
    fn from(p: Proto) -> Self {
        On::Proto(p)
    }
}

/// A truth table: for each port, whether each pod (row, from) reaches each pod
/// (column, to). Used for what a case expects and for what the prober saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachability {
    pods: Vec<PodId>,
    ports: Vec<Port>,
    /// `[port][from][to]`, flattened.
    cells: Vec<bool>,
}

impl Reachability {
    /// Every cell `all`.
    pub fn new(pods: &[PodId], ports: &[Port], all: bool) -> Self {
        Self {
            pods: pods.to_vec(),
            ports: ports.to_vec(),
            cells: vec![all; ports.len() * pods.len() * pods.len()],
        }
    }

    pub fn pods(&self) -> &[PodId] {
        &self.pods
    }

    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    fn index(&self, port: usize, from: usize, to: usize) -> usize {
        (port * self.pods.len() + from) * self.pods.len() + to
    }

    /// Whether `from` reaches `to` on `port` (indices into [`Reachability::pods`] and
    /// [`Reachability::ports`]).
    pub fn get(&self, port: usize, from: usize, to: usize) -> bool {
        self.cells[self.index(port, from, to)]
    }

    pub fn set(&mut self, port: usize, from: usize, to: usize, ok: bool) {
        let i = self.index(port, from, to);
        self.cells[i] = ok;
    }

    /// Every pod `from` selects reaches (or not) every pod `to` selects, on `on`.
    pub fn expect_peer(
        &mut self,
        from: PeerSel,
        to: PeerSel,
        on: impl Into<On>,
        ok: bool,
    ) -> &mut Self {
        let on = on.into();
        for port in 0..self.ports.len() {
            if !on.matches(self.ports[port]) {
                continue;
            }
            for f in 0..self.pods.len() {
                if !from.matches(&self.pods[f]) {
                    continue;
                }
                for t in 0..self.pods.len() {
                    if to.matches(&self.pods[t]) {
                        self.set(port, f, t, ok);
                    }
                }
            }
        }
        self
    }

    /// Everything into the pods `to` selects, on every port.
    pub fn expect_all_ingress(&mut self, to: PeerSel, ok: bool) -> &mut Self {
        self.expect_peer(PeerSel::any(), to, On::All, ok)
    }

    /// Everything out of the pods `from` selects, on every port.
    pub fn expect_all_egress(&mut self, from: PeerSel, ok: bool) -> &mut Self {
        self.expect_peer(from, PeerSel::any(), On::All, ok)
    }

    /// Every pod reaches itself (upstream's `AllowLoopback`): traffic to the pod's own
    /// address stays on its loopback and never meets policy.
    pub fn allow_loopback(&mut self) -> &mut Self {
        for port in 0..self.ports.len() {
            for p in 0..self.pods.len() {
                self.set(port, p, p, true);
            }
        }
        self
    }

    /// The cells where `observed` differs from `self`.
    pub fn mismatches(&self, observed: &Reachability, family: Family) -> Vec<Mismatch> {
        assert_eq!(self.pods, observed.pods, "tables of different pods");
        assert_eq!(self.ports, observed.ports, "tables of different ports");
        let mut out = vec![];
        for port in 0..self.ports.len() {
            for f in 0..self.pods.len() {
                for t in 0..self.pods.len() {
                    let want = self.get(port, f, t);
                    if observed.get(port, f, t) != want {
                        out.push(Mismatch {
                            from: self.pods[f].clone(),
                            to: self.pods[t].clone(),
                            port: self.ports[port],
                            family,
                            expected: want,
                        });
                    }
                }
            }
        }
        out
    }

    /// The expected table (`self`) beside the observed one for every port that has a
    /// mismatch: rows from, columns to, `.` reachable, `X` blocked, `*` after an
    /// observed cell that differs.
    pub fn render_beside(&self, observed: &Reachability, family: Family) -> String {
        let w = self
            .pods
            .iter()
            .map(|p| p.to_string().len())
            .max()
            .unwrap_or(3)
            + 1;
        let mut s = String::new();
        for port in 0..self.ports.len() {
            let differs = (0..self.pods.len()).any(|f| {
                (0..self.pods.len()).any(|t| self.get(port, f, t) != observed.get(port, f, t))
            });
            if !differs {
                continue;
            }
            s.push_str(&format!(
                "{} over {family}: expected (left), observed (right; * marks a mismatch)\n",
                self.ports[port]
            ));
            let header: String = self
                .pods
                .iter()
                .map(|p| format!("{:<w$}", p.to_string()))
                .collect();
            let line = format!("{:<w$}{header}  | {:<w$}{header}", "", "");
            s.push_str(line.trim_end());
            s.push('\n');
            for f in 0..self.pods.len() {
                let name = self.pods[f].to_string();
                let mut left = String::new();
                let mut right = String::new();
                for t in 0..self.pods.len() {
                    let e = self.get(port, f, t);
                    let o = observed.get(port, f, t);
                    left.push_str(&format!("{:<w$}", symbol(e)));
                    let mark = if e != o { "*" } else { "" };
                    right.push_str(&format!("{:<w$}", format!("{}{mark}", symbol(o))));
                }
                let line = format!("{name:<w$}{left}  | {name:<w$}{right}");
                s.push_str(line.trim_end());
                s.push('\n');
            }
        }
        s
    }
}

fn symbol(ok: bool) -> &'static str {
    if ok { "." } else { "X" }
}

/// One cell where the observed table differs from the expected one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub from: PodId,
    pub to: PodId,
    pub port: Port,
    pub family: Family,
    pub expected: bool,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (want, got) = if self.expected {
            ("reachable", "blocked")
        } else {
            ("blocked", "reachable")
        };
        write!(
            f,
            "{} -> {} {} {}: expected {want}, observed {got}",
            self.from, self.to, self.port, self.family
        )
    }
}

// ---------------------------------------------------------------------------------
// The model: pods with servers.

/// A pod of the model: its container and its servers.
pub struct ModelPod {
    pub id: PodId,
    pub container: Arc<Container>,
    // Dropped (servers stopped) before the container goes.
    servers: Servers,
}

impl ModelPod {
    pub fn ip(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::V4 => self.container.v4.map(IpAddr::V4),
            Family::V6 => self.container.v6.map(IpAddr::V6),
        }
    }

    /// Make every later echo of this pod's servers to `peer` (both families) wait
    /// `delay` first (zero: at once again), as a slow path would: what shows that a
    /// probe whose answer is final waits longer than one that polls.
    pub fn answer_late(&self, peer: &ModelPod, delay: Duration) {
        for family in [Family::V4, Family::V6] {
            if let Some(ip) = peer.ip(family) {
                self.servers.late.set(ip, delay);
            }
        }
    }
}

/// How pods, namespaces and policies reach strait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Labels and namespace through CNI `args`, documents through `netctl policy`.
    Netctl,
    /// Pods, Namespaces and NetworkPolicies are objects of the cluster's Kubernetes
    /// API server (`kubectl`); CNI ADD names the pod (`K8S_POD_NAMESPACE`,
    /// `K8S_POD_NAME`) and the agents take its labels and named ports from the API.
    Kubernetes,
}

/// Namespaces x, y, z and pods a, b, c in each on a cluster, all serving.
pub struct Model {
    pods: Vec<ModelPod>,
    families: Vec<Family>,
    control: Control,
}

impl Model {
    /// Make the nine pods, round-robin over the cluster's hosts, and start their
    /// servers. Prints which families are probed and that SCTP is not.
    pub fn build(cluster: &mut Cluster) -> Self {
        Self::build_with(cluster, Control::Netctl)
    }

    /// [`Model::build`] with pods and policies through `control`.
    pub fn build_with(cluster: &mut Cluster, control: Control) -> Self {
        let mut model = Self {
            pods: vec![],
            families: vec![],
            control,
        };
        if control == Control::Kubernetes {
            // A Pod is refused in a namespace that does not exist yet.
            let docs: Vec<String> = NAMESPACES
                .iter()
                .map(|ns| namespace(ns, &[("ns", ns)]).yaml)
                .collect();
            kubectl_apply(cluster, &docs.join("---\n")).unwrap_or_else(|e| panic!("{e}"));
        }
        let hosts = cluster.hosts().len();
        let mut i = 0;
        for ns in NAMESPACES {
            for pod in PODS {
                model
                    .add_pod(cluster, ns, pod, i % hosts)
                    .unwrap_or_else(|e| panic!("{e}"));
                i += 1;
            }
        }
        model.families = [Family::V4, Family::V6]
            .into_iter()
            .filter(|f| model.pods.iter().all(|p| p.ip(*f).is_some()))
            .collect();
        assert!(
            !model.families.is_empty(),
            "no address family every pod has"
        );
        println!(
            "netpol: {} pods on {hosts} host(s), probing {}",
            model.pods.len(),
            model
                .families
                .iter()
                .map(Family::to_string)
                .collect::<Vec<_>>()
                .join(" and ")
        );
        match sctp_in_kernel() {
            false => println!("netpol: SCTP not probed: this kernel has no SCTP"),
            true => println!(
                "netpol: SCTP not probed: the kernel has SCTP but the test bed has no SCTP \
                 client (std has none, and the workspace denies unsafe)"
            ),
        }
        model
    }

    /// Attach pod `ns/pod` on host `host` (labels, namespace and named ports through
    /// `args.cni`) and start its servers.
    pub fn add_pod(
        &mut self,
        cluster: &mut Cluster,
        ns: &str,
        pod: &str,
        host: usize,
    ) -> Result<(), String> {
        let id = PodId::new(ns, pod);
        let ports: Vec<_> = NAMED_PORTS
            .iter()
            .map(|(name, port, proto)| json!({"name": name, "port": port, "protocol": proto}))
            .collect();
        let added = match self.control {
            Control::Netctl => {
                cluster.try_add_container_with(host, &container_name(&id), |config| {
                    config["args"] = json!({"cni": {
                        "namespace": ns,
                        "labels": [{"key": "pod", "value": pod}],
                        "ports": ports,
                    }});
                })
            }
            Control::Kubernetes => {
                kubectl_apply(cluster, &pod_object(ns, pod, &cluster.host(host).name))?;
                let args = format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod};\
                     K8S_POD_INFRA_CONTAINER_ID={}",
                    container_name(&id)
                );
                cluster.try_add_container_args(host, &container_name(&id), &args, |_| {})
            }
        };
        let container = added.map_err(|out| {
            format!(
                "CNI ADD of pod {id} on host {host} failed (exit {}): {}{}",
                out.code, out.stdout, out.stderr
            )
        })?;
        let servers = Servers::start(&container)
            .map_err(|e| format!("servers of pod {id} in {}: {e}", container.ns.name()))?;
        self.pods.push(ModelPod {
            id,
            container,
            servers,
        });
        Ok(())
    }

    /// Stop pod `ns/pod`'s servers and detach it (CNI DEL).
    pub fn remove_pod(&mut self, cluster: &mut Cluster, id: &PodId) -> Result<(), String> {
        let i = self
            .pods
            .iter()
            .position(|p| p.id == *id)
            .ok_or_else(|| format!("no pod {id}"))?;
        drop(self.pods.remove(i));
        let out = cluster.remove_container(&container_name(id));
        if self.control == Control::Kubernetes {
            kubectl(
                cluster,
                &[
                    "delete",
                    "pod",
                    "-n",
                    &id.ns,
                    &id.pod,
                    "--grace-period=0",
                    "--force",
                ],
                "",
            )?;
        }
        if out.ok() {
            Ok(())
        } else {
            Err(format!("CNI DEL of pod {id}: {}{}", out.stdout, out.stderr))
        }
    }

    pub fn pods(&self) -> &[ModelPod] {
        &self.pods
    }

    pub fn pod(&self, ns: &str, pod: &str) -> &ModelPod {
        self.pods
            .iter()
            .find(|p| p.id.ns == ns && p.id.pod == pod)
            .unwrap_or_else(|| panic!("no pod {ns}/{pod} in the model"))
    }

    pub fn ids(&self) -> Vec<PodId> {
        self.pods.iter().map(|p| p.id.clone()).collect()
    }

    pub fn families(&self) -> &[Family] {
        &self.families
    }

    /// A table of the model's pods on `ports`, every cell `all`.
    pub fn reach(&self, ports: &[Port], all: bool) -> Reachability {
        Reachability::new(&self.ids(), ports, all)
    }
}

/// A Pod object of the model: label `pod`, the served ports by name, bound to `node`
/// (no scheduler or kubelet runs: the test's CNI ADD is its sandbox).
fn pod_object(ns: &str, pod: &str, node: &str) -> String {
    let ports: String = NAMED_PORTS
        .iter()
        .map(|(name, port, proto)| {
            format!("    - {{name: {name}, containerPort: {port}, protocol: {proto}}}\n")
        })
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: {ns}\n  labels:\n    \
         pod: {pod}\nspec:\n  nodeName: {node}\n  containers:\n  - name: serve\n    \
         image: busybox\n    ports:\n{ports}"
    )
}

fn container_name(id: &PodId) -> String {
    format!("{}-{}", id.ns, id.pod)
}

/// Whether the kernel has SCTP (loaded, built in, or as a module to load).
pub fn sctp_in_kernel() -> bool {
    if std::path::Path::new("/proc/sys/net/sctp").exists() {
        return true;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let dir = PathBuf::from("/lib/modules").join(release.trim());
    ["modules.builtin", "modules.dep"].iter().any(|f| {
        std::fs::read_to_string(dir.join(f))
            .is_ok_and(|s| s.lines().any(|l| l.contains("/sctp.ko")))
    })
}

// ---------------------------------------------------------------------------------
// Servers.

/// A pod's servers: TCP 80 and 81 (echo one read back) and UDP 80 and 81 (echo every
/// datagram), on sockets made inside the pod's namespace, served by one thread until
/// dropped. An echo to an address in `late` waits its delay first (none unless a test
/// makes the pod answer late, see [`ModelPod::answer_late`]).
struct Servers {
    stop: Arc<AtomicBool>,
    late: Arc<Late>,
    thread: Option<JoinHandle<()>>,
}

impl Servers {
    fn start(c: &Container) -> std::io::Result<Self> {
        let (tcp, udp) = c.ns.run_in(|| {
            let mut tcp = vec![];
            let mut udp = vec![];
            for port in [80u16, 81] {
                // One dual-stack socket where IPv6 exists, else IPv4 only.
                let v6: SocketAddr = (std::net::Ipv6Addr::UNSPECIFIED, port).into();
                let v4: SocketAddr = (std::net::Ipv4Addr::UNSPECIFIED, port).into();
                tcp.push(TcpListener::bind(v6).or_else(|_| TcpListener::bind(v4))?);
                udp.push(UdpSocket::bind(v6).or_else(|_| UdpSocket::bind(v4))?);
            }
            Ok((tcp, udp))
        })?;
        for l in &tcp {
            l.set_nonblocking(true)?;
        }
        for u in &udp {
            u.set_nonblocking(true)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let late = Arc::new(Late::default());
        let (flag, delays) = (stop.clone(), late.clone());
        let thread = std::thread::spawn(move || serve(&tcp, &udp, &flag, &delays));
        Ok(Self {
            stop,
            late,
            thread: Some(thread),
        })
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Poll the (non-blocking) sockets until `stop`; sleep briefly when idle. One
/// short-lived thread per TCP connection, so a stalled client holds up no other (and
/// per late UDP echo, so a late answer holds up no other datagram).
fn serve(tcp: &[TcpListener], udp: &[UdpSocket], stop: &AtomicBool, delays: &Late) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        for l in tcp {
            if let Ok((conn, from)) = l.accept() {
                busy = true;
                let late = delays.to(from.ip());
                std::thread::spawn(move || echo_once(conn, late));
            }
        }
        for u in udp {
            if let Ok((n, from)) = u.recv_from(&mut buf) {
                busy = true;
                let late = delays.to(from.ip());
                if late.is_zero() {
                    let _ = u.send_to(&buf[..n], from);
                } else if let Ok(u) = u.try_clone() {
                    let data = buf[..n].to_vec();
                    std::thread::spawn(move || {
                        std::thread::sleep(late);
                        let _ = u.send_to(&data, from);
                    });
                }
            }
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// How late a pod's servers answer each peer address (none: at once).
#[derive(Default)]
struct Late(Mutex<Vec<(IpAddr, Duration)>>);

impl Late {
    fn set(&self, peer: IpAddr, delay: Duration) {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|(ip, _)| *ip != peer);
        if !delay.is_zero() {
            all.push((peer, delay));
        }
    }

    fn to(&self, peer: IpAddr) -> Duration {
        // A dual-stack socket sees an IPv4 peer as ::ffff:a.b.c.d.
        let peer = peer.to_canonical();
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .find(|(ip, _)| *ip == peer)
            .map_or(Duration::ZERO, |(_, d)| *d)
    }
}

fn echo_once(mut conn: TcpStream, late: Duration) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(REPLY_TIMEOUT * 2));
    let mut buf = [0u8; 64];
    if let Ok(n) = conn.read(&mut buf)
        && n > 0
    {
        std::thread::sleep(late);
        let _ = conn.write_all(&buf[..n]);
    }
}

// ---------------------------------------------------------------------------------
// The prober.

/// Probes pairs of pods in parallel on a bounded pool of threads.
#[derive(Debug, Clone, Copy)]
pub struct Prober {
    pub threads: usize,
}

impl Default for Prober {
    fn default() -> Self {
        let threads = std::env::var("STRAIT_NETPOL_THREADS")
            .ok()
            .and_then(|t| t.parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_THREADS);
        Self { threads }
    }
}

/// How long a probe waits for an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// [`POLL_TIMEOUT`], while a table is polled for: a reachable cell answers well
    /// within it unless the machine is very busy, and then the poll goes round again.
    /// A cell seen blocked this way is never final.
    Poll,
    /// [`CONNECT_TIMEOUT`] and [`REPLY_TIMEOUT`]: what the table's verdict rests on.
    Full,
}

impl Patience {
    fn connect(self) -> Duration {
        match self {
            Patience::Poll => POLL_TIMEOUT,
            Patience::Full => CONNECT_TIMEOUT,
        }
    }

    fn reply(self) -> Duration {
        match self {
            Patience::Poll => POLL_TIMEOUT,
            Patience::Full => REPLY_TIMEOUT,
        }
    }
}

/// One probe: from pod `from` to pod `to` (indices into the model) on `port`, in the
/// `family`-th family of the round.
#[derive(Debug, Clone, Copy)]
struct Job {
    family: usize,
    from: usize,
    to: usize,
    port: usize,
}

impl Prober {
    /// Probe every ordered pair (self included) on every port of `expected`, in
    /// `family`, with [`Patience::Full`]. A cell observed blocked where `expected`
    /// says reachable is probed once more (noise only ever makes a probe fail, never
    /// succeed).
    pub fn observe(&self, model: &Model, family: Family, expected: &Reachability) -> Reachability {
        let families = [family];
        let mut observed = self.sweep(model, &families, expected, Patience::Full);
        self.reprobe(
            model,
            &families,
            expected,
            &mut observed,
            Patience::Full,
            |want, seen| want && !seen,
        );
        observed.pop().expect("one family")
    }

    /// Probe every cell of `expected` in each of `families`, all in one round: the
    /// observed table of each family, in order.
    fn sweep(
        &self,
        model: &Model,
        families: &[Family],
        expected: &Reachability,
        patience: Patience,
    ) -> Vec<Reachability> {
        assert_eq!(
            model.ids(),
            expected.pods,
            "the table is not of the model's pods"
        );
        let mut observed = vec![expected.clone(); families.len()];
        let n = model.pods.len();
        let ports = expected.ports.len();
        let jobs: Vec<Job> = (0..families.len())
            .flat_map(|family| {
                (0..ports).flat_map(move |port| {
                    (0..n).flat_map(move |from| {
                        (0..n).map(move |to| Job {
                            family,
                            from,
                            to,
                            port,
                        })
                    })
                })
            })
            .collect();
        let results = self.run(model, families, &expected.ports, &jobs, patience);
        for (job, ok) in jobs.iter().zip(results) {
            observed[job.family].set(job.port, job.from, job.to, ok);
        }
        observed
    }

    /// Probe again, with `patience`, the cells for which `which(expected, observed)`
    /// holds, in one round over all families, and record what they show now.
    fn reprobe(
        &self,
        model: &Model,
        families: &[Family],
        expected: &Reachability,
        observed: &mut [Reachability],
        patience: Patience,
        which: impl Fn(bool, bool) -> bool,
    ) {
        let mut jobs = vec![];
        for (family, seen) in observed.iter().enumerate() {
            for port in 0..expected.ports.len() {
                for from in 0..expected.pods.len() {
                    for to in 0..expected.pods.len() {
                        if which(expected.get(port, from, to), seen.get(port, from, to)) {
                            jobs.push(Job {
                                family,
                                from,
                                to,
                                port,
                            });
                        }
                    }
                }
            }
        }
        let results = self.run(model, families, &expected.ports, &jobs, patience);
        for (job, ok) in jobs.iter().zip(results) {
            observed[job.family].set(job.port, job.from, job.to, ok);
        }
    }

    fn run(
        &self,
        model: &Model,
        families: &[Family],
        ports: &[Port],
        jobs: &[Job],
        patience: Patience,
    ) -> Vec<bool> {
        let results = Mutex::new(vec![false; jobs.len()]);
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..self.threads.min(jobs.len()) {
                s.spawn(|| {
                    // The namespace this thread is in; it exits with the scope.
                    let mut here: Option<usize> = None;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        let from = &model.pods[job.from];
                        let ok = (here == Some(job.from) || enter(&from.container).is_ok()) && {
                            here = Some(job.from);
                            let to = model.pods[job.to]
                                .ip(families[job.family])
                                .expect("every pod has the family probed");
                            probe(to, ports[job.port], patience)
                        };
                        results.lock().unwrap_or_else(|p| p.into_inner())[i] = ok;
                    }
                });
            }
        });
        results.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

/// Move the calling thread into the container's network namespace.
fn enter(c: &Container) -> std::io::Result<()> {
    let file = std::fs::File::open(c.ns.path())?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// One probe from the calling thread's namespace: the echo came back.
fn probe(to: IpAddr, port: Port, patience: Patience) -> bool {
    match port {
        Port::Tcp(p) => probe_tcp(SocketAddr::new(to, p), patience).is_ok(),
        Port::Udp(p) => probe_udp(SocketAddr::new(to, p), patience).is_ok(),
        Port::Sctp(_) => false,
        // A child inherits the namespace of the thread that spawns it.
        Port::Icmp => Command::new("ping")
            .args(["-c1", "-W"])
            .arg(format!("{:.3}", patience.reply().as_secs_f64()))
            .arg(to.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
    }
}

fn probe_tcp(addr: SocketAddr, patience: Patience) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, patience.connect())?;
    s.set_read_timeout(Some(patience.reply()))?;
    s.set_write_timeout(Some(patience.reply()))?;
    s.write_all(b"netpol")?;
    let mut back = [0u8; 6];
    s.read_exact(&mut back)?;
    Ok(())
}

fn probe_udp(addr: SocketAddr, patience: Patience) -> std::io::Result<()> {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(local)?;
    // Connected: only the server's reply is received.
    s.connect(addr)?;
    s.set_read_timeout(Some(patience.reply()))?;
    s.send(b"netpol")?;
    let mut back = [0u8; 16];
    let n = s.recv(&mut back)?;
    if &back[..n] == b"netpol" {
        Ok(())
    } else {
        Err(std::io::Error::other("echo differs"))
    }
}

// ---------------------------------------------------------------------------------
// Policy documents and the CLI.

/// One document to apply: its YAML and, for a policy, the key `netctl policy delete`
/// takes (`NS/NAME` or `cluster/NAME`).
#[derive(Debug, Clone)]
pub struct Doc {
    pub key: Option<String>,
    pub yaml: String,
}

/// A Kubernetes `networking.k8s.io/v1` NetworkPolicy; `spec` is the YAML below
/// `spec:`, at any indentation (it is dedented).
pub fn network_policy(ns: &str, name: &str, spec: &str) -> Doc {
    Doc {
        key: Some(format!("{ns}/{name}")),
        yaml: format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{}",
            indent(&dedent(spec), 2)
        ),
    }
}

/// strait's cluster-wide policy (`strait.io/v1` `ClusterPolicy`); `spec` as for
/// [`network_policy`].
pub fn cluster_policy(name: &str, spec: &str) -> Doc {
    Doc {
        key: Some(format!("cluster/{name}")),
        yaml: format!(
            "apiVersion: strait.io/v1\nkind: ClusterPolicy\nmetadata:\n  name: {name}\nspec:\n{}",
            indent(&dedent(spec), 2)
        ),
    }
}

/// A `v1 Namespace` with labels (not deleted between cases).
pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Doc {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("    {k}: {v}\n"))
        .collect();
    Doc {
        key: None,
        yaml: format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n{labels}"
        ),
    }
}

/// Strip the common leading whitespace of the non-empty lines, and blank lines at
/// both ends.
pub fn dedent(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let margin = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let body: Vec<&str> = lines
        .iter()
        .map(|l| {
            if l.trim().is_empty() {
                ""
            } else {
                &l[margin..]
            }
        })
        .collect();
    let start = body
        .iter()
        .position(|l| !l.is_empty())
        .unwrap_or(body.len());
    let end = body
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(start, |e| e + 1);
    body[start..end].iter().map(|l| format!("{l}\n")).collect()
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("{:by$}{l}\n", "")
            }
        })
        .collect()
}

/// `netctl policy <args>` on host 0, with `stdin`: the one place the suite talks to
/// the policy CLI.
fn netctl_policy(cluster: &Cluster, args: &[&str], stdin: &str) -> Result<String, String> {
    let host = cluster.host(0);
    let mut cmd = Command::new(crate::bins::bin("netctl"));
    cmd.arg("--socket")
        .arg(&host.agent.socket)
        .arg("policy")
        .args(args);
    let what = format!("netctl policy {} on {}", args.join(" "), host.name);
    run_with_stdin(cmd, &what, stdin)
}

/// Runs `cmd` with `stdin`; its stdout and stderr, or an error naming `what` with
/// them when it fails.
fn run_with_stdin(mut cmd: Command, what: &str, stdin: &str) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: exec: {e}"))?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.as_bytes())
            .map_err(|e| format!("{what}: writing stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{what}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{what} failed ({}): {}", out.status, text.trim()))
    }
}

/// `netctl policy apply -f -` with `yaml` (one or many documents) on stdin.
pub fn apply(cluster: &Cluster, yaml: &str) -> Result<(), String> {
    netctl_policy(cluster, &["apply", "-f", "-"], yaml)
        .map(drop)
        .map_err(|e| format!("{e}\n--- documents ---\n{yaml}"))
}

/// `netctl policy delete KEY` (`NS/NAME` or `cluster/NAME`).
pub fn delete(cluster: &Cluster, key: &str) -> Result<(), String> {
    netctl_policy(cluster, &["delete", key], "").map(drop)
}

/// `kubectl <args>` as the cluster's admin with `stdin`, run where the API server is.
pub fn kubectl(cluster: &Cluster, args: &[&str], stdin: &str) -> Result<String, String> {
    let kube = cluster.kube();
    let mut cmd = kube.kubectl_command(kube.admin_kubeconfig());
    cmd.args(args);
    run_with_stdin(cmd, &format!("kubectl {}", args.join(" ")), stdin)
}

/// `kubectl apply -f -` with `yaml`'s documents, sent as JSON. kubectl reads YAML
/// 1.1, where the cases' `ns: y` would be a boolean; strait's parser, and the cases,
/// read YAML 1.2, where it is the string it means.
pub fn kubectl_apply(cluster: &Cluster, yaml: &str) -> Result<(), String> {
    let mut items = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| format!("the case's YAML does not read: {e}\n{yaml}"))?;
        if !v.is_null() {
            items.push(v);
        }
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    kubectl(cluster, &["apply", "-f", "-"], &list)
        .map(drop)
        .map_err(|e| format!("{e}\n--- documents ---\n{yaml}"))
}

/// Applies `yaml` through `control`.
pub fn apply_via(control: Control, cluster: &Cluster, yaml: &str) -> Result<(), String> {
    match control {
        Control::Netctl => apply(cluster, yaml),
        Control::Kubernetes => kubectl_apply(cluster, yaml),
    }
}

/// Deletes the policy `key` (`NS/NAME`, or `cluster/NAME` with netctl) through
/// `control`.
pub fn delete_via(control: Control, cluster: &Cluster, key: &str) -> Result<(), String> {
    match control {
        Control::Netctl => delete(cluster, key),
        Control::Kubernetes => {
            let (ns, name) = key
                .split_once('/')
                .filter(|(ns, _)| *ns != "cluster")
                .ok_or_else(|| {
                    format!("{key}: only NetworkPolicies are objects of the API server")
                })?;
            kubectl(cluster, &["delete", "networkpolicy", "-n", ns, name], "").map(drop)
        }
    }
}

// ---------------------------------------------------------------------------------
// Cases and the runner.

/// One case of the truth table: applies documents through its [`CaseCtx`] and states
/// what it expects.
#[derive(Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub run: fn(&mut CaseCtx) -> Result<(), String>,
}

/// What a case works with. Everything it applies and every pod it adds is undone by
/// the runner afterwards.
pub struct CaseCtx<'a> {
    pub cluster: &'a mut Cluster,
    pub model: &'a mut Model,
    prober: Prober,
    applied: BTreeSet<String>,
    added: Vec<PodId>,
    /// Labels set through the API server: (`pod` or `namespace`, its namespace, its
    /// name, the key), removed again after the case.
    labelled: Vec<(String, Option<String>, String, String)>,
}

impl CaseCtx<'_> {
    /// Apply `docs` in one `netctl policy apply` (as one multi-document stream).
    pub fn apply(&mut self, docs: &[Doc]) -> Result<(), String> {
        let yaml: Vec<&str> = docs.iter().map(|d| d.yaml.as_str()).collect();
        // Recorded first: a refused apply may still have stored something, which
        // the clean-up should remove.
        self.applied
            .extend(docs.iter().filter_map(|d| d.key.clone()));
        apply_via(self.model.control, self.cluster, &yaml.join("---\n"))
    }

    /// Delete one policy by its key.
    pub fn delete(&mut self, doc: &Doc) -> Result<(), String> {
        let key = doc
            .key
            .as_deref()
            .ok_or("a Namespace document is not deleted")?;
        delete_via(self.model.control, self.cluster, key)?;
        self.applied.remove(key);
        Ok(())
    }

    /// A new pod `ns/pod` on host `host`, serving like the others; removed after the
    /// case.
    pub fn add_pod(&mut self, ns: &str, pod: &str, host: usize) -> Result<(), String> {
        self.model.add_pod(self.cluster, ns, pod, host)?;
        self.added.push(PodId::new(ns, pod));
        Ok(())
    }

    /// `kubectl label <kind> [-n ns] <name> key=value --overwrite` (Kubernetes
    /// control only); the label is removed after the case.
    pub fn label(
        &mut self,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<(), String> {
        let pair = format!("{key}={value}");
        let mut args = vec!["label", kind, name, &pair, "--overwrite"];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        kubectl(self.cluster, &args, "")?;
        self.labelled.push((
            kind.to_string(),
            ns.map(String::from),
            name.to_string(),
            key.to_string(),
        ));
        Ok(())
    }

    /// Removes label `key` from `kind name` (as `kubectl label … key-`).
    pub fn unlabel(
        &mut self,
        kind: &str,
        ns: Option<&str>,
        name: &str,
        key: &str,
    ) -> Result<(), String> {
        unlabel(self.cluster, kind, ns, name, key)?;
        self.labelled
            .retain(|(k, n, m, l)| !(k == kind && n.as_deref() == ns && m == name && l == key));
        Ok(())
    }

    /// A table over the model's pods on the served ports, every cell `all`.
    pub fn reach(&self, all: bool) -> Reachability {
        self.model.reach(&SERVED, all)
    }

    /// As [`CaseCtx::reach`] with ICMP echo as one more column.
    pub fn reach_with_icmp(&self, all: bool) -> Reachability {
        let mut ports = SERVED.to_vec();
        ports.push(Port::Icmp);
        self.model.reach(&ports, all)
    }

    /// Pod `ns/pod`'s addresses as `ipBlock` CIDRs (/32, /128), one per family probed.
    pub fn host_cidrs(&self, ns: &str, pod: &str) -> Vec<String> {
        let p = self.model.pod(ns, pod);
        self.model
            .families()
            .iter()
            .filter_map(|f| p.ip(*f))
            .map(|ip| match ip {
                IpAddr::V4(a) => format!("{a}/32"),
                IpAddr::V6(a) => format!("{a}/128"),
            })
            .collect()
    }

    /// The "everything" CIDRs of the families probed.
    pub fn all_cidrs(&self) -> Vec<&'static str> {
        self.model
            .families()
            .iter()
            .map(|f| match f {
                Family::V4 => "0.0.0.0/0",
                Family::V6 => "::/0",
            })
            .collect()
    }

    /// Probe until the table matches `expected` (loopback always allowed) in every
    /// family, or [`ENFORCE_TIMEOUT`] passes; the error shows the last tables.
    pub fn expect(&self, expected: &Reachability) -> Result<Duration, String> {
        expect_within(&self.prober, self.model, expected, ENFORCE_TIMEOUT)
    }
}

/// Probe until the table matches `expected` (with loopback allowed) in every family
/// of the model, or `timeout` passes (at least one round).
///
/// Every family is probed in one round, with [`Patience::Poll`]. Once a round
/// matches, every cell it saw blocked is probed again with [`Patience::Full`], so a
/// cell a policy wrongly lets through cannot pass as blocked for answering late; the
/// table is met when that confirms it. At `timeout` the verdict is taken the same way,
/// and cells seen blocked where they should be reachable get one more full probe.
pub fn expect_within(
    prober: &Prober,
    model: &Model,
    expected: &Reachability,
    timeout: Duration,
) -> Result<Duration, String> {
    let mut expected = expected.clone();
    expected.allow_loopback();
    let families = model.families();
    let matches = |observed: &[Reachability]| {
        families
            .iter()
            .zip(observed)
            .all(|(f, o)| expected.mismatches(o, *f).is_empty())
    };
    let start = Instant::now();
    loop {
        let mut observed = prober.sweep(model, families, &expected, Patience::Poll);
        let polled_match = matches(&observed);
        let out_of_time = start.elapsed() >= timeout;
        if polled_match || out_of_time {
            prober.reprobe(
                model,
                families,
                &expected,
                &mut observed,
                Patience::Full,
                |_, seen| !seen,
            );
            if !polled_match {
                prober.reprobe(
                    model,
                    families,
                    &expected,
                    &mut observed,
                    Patience::Full,
                    |want, seen| want && !seen,
                );
            }
            if matches(&observed) {
                return Ok(start.elapsed());
            }
        }
        if out_of_time {
            return Err(report(&expected, families, &observed, start.elapsed()));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Every cell where `observed` (one table per family) differs from `expected`: the
/// tables beside each other, then the list.
fn report(
    expected: &Reachability,
    families: &[Family],
    observed: &[Reachability],
    took: Duration,
) -> String {
    const SHOWN: usize = 40;
    let mut tables = String::new();
    let mut mismatches = vec![];
    for (&family, o) in families.iter().zip(observed) {
        let m = expected.mismatches(o, family);
        if !m.is_empty() {
            tables.push_str(&expected.render_beside(o, family));
        }
        mismatches.extend(m);
    }
    let mut list: Vec<String> = mismatches
        .iter()
        .take(SHOWN)
        .map(|m| format!("  {m}"))
        .collect();
    if mismatches.len() > SHOWN {
        list.push(format!("  … and {} more", mismatches.len() - SHOWN));
    }
    format!(
        "{} cell(s) differ after {took:.1?}:\n{tables}mismatching pairs:\n{}",
        mismatches.len(),
        list.join("\n")
    )
}

/// Start a cluster and build the model on it.
pub fn start_bed(opts: ClusterOpts) -> (Cluster, Model) {
    let control = match opts.kubernetes {
        Some(_) => Control::Kubernetes,
        None => Control::Netctl,
    };
    let mut cluster = Cluster::start(opts);
    let model = Model::build_with(&mut cluster, control);
    (cluster, model)
}

/// Wait until every pod reaches every other one on the served ports (the fabric has
/// converged, no policy is in force).
pub fn expect_baseline(model: &Model, timeout: Duration) -> Result<Duration, String> {
    expect_within(
        &Prober::default(),
        model,
        &model.reach(&SERVED, true),
        timeout,
    )
}

/// Run `cases` on a fresh cluster built from `opts`: the namespaces' documents first,
/// then each case (`STRAIT_NETPOL_CASES=a,b` runs only those), cleaning up after
/// each (its policies deleted, its extra pods removed, full reachability back).
/// Panics at the end naming every case that failed, after running all of them.
pub fn run_suite(test: &str, opts: ClusterOpts, cases: &[Case]) {
    let only: Option<Vec<String>> = std::env::var("STRAIT_NETPOL_CASES").ok().map(|v| {
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    });
    if let Some(only) = &only
        && let Some(unknown) = only
            .iter()
            .find(|n| cases.iter().all(|c| c.name != n.as_str()))
    {
        panic!("STRAIT_NETPOL_CASES names no case {unknown:?}");
    }
    let (mut cluster, mut model) = start_bed(opts);
    println!("{test}: {}", cluster.describe());
    let namespaces: Vec<Doc> = NAMESPACES
        .iter()
        .map(|ns| namespace(ns, &[("ns", ns)]))
        .collect();
    let yaml: Vec<&str> = namespaces.iter().map(|d| d.yaml.as_str()).collect();
    apply_via(model.control, &cluster, &yaml.join("---\n"))
        .unwrap_or_else(|e| panic!("{test}: applying the namespaces: {e}"));
    let took = expect_baseline(&model, CONVERGE)
        .unwrap_or_else(|e| panic!("{test}: no full reachability before any policy: {e}"));
    println!("{test}: baseline reachable in {took:.1?}");

    let prober = Prober::default();
    let mut failed: Vec<(String, String)> = vec![];
    let mut ran = 0;
    for case in cases {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == case.name))
        {
            continue;
        }
        ran += 1;
        let start = Instant::now();
        let mut ctx = CaseCtx {
            cluster: &mut cluster,
            model: &mut model,
            prober,
            applied: BTreeSet::new(),
            added: vec![],
            labelled: vec![],
        };
        let result = (case.run)(&mut ctx);
        let cleanup = clean_up(&mut ctx);
        match (&result, &cleanup) {
            (Ok(()), Ok(())) => {
                println!("{test}: case {}: ok ({:.1?})", case.name, start.elapsed())
            }
            _ => {
                let mut why = String::new();
                if let Err(e) = &result {
                    why.push_str(e);
                }
                if let Err(e) = &cleanup {
                    why.push_str(&format!("\nclean-up after the case: {e}"));
                }
                println!(
                    "{test}: case {}: FAILED ({:.1?})\n{why}\n",
                    case.name,
                    start.elapsed()
                );
                failed.push((case.name.to_string(), why));
            }
        }
    }
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
        panic!(
            "{test}: {} of {ran} case(s) failed: {}\n(details above; rerun some with \
             STRAIT_NETPOL_CASES={})",
            failed.len(),
            names.join(", "),
            names.join(",")
        );
    }
    println!("{test}: all {ran} case(s) passed");
}

/// Undo a case: delete what it applied, remove the pods it added, and wait until
/// every pod reaches every other one again.
fn unlabel(
    cluster: &Cluster,
    kind: &str,
    ns: Option<&str>,
    name: &str,
    key: &str,
) -> Result<(), String> {
    let minus = format!("{key}-");
    let mut args = vec!["label", kind, name, &minus];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    kubectl(cluster, &args, "").map(drop)
}

fn clean_up(ctx: &mut CaseCtx) -> Result<(), String> {
    let mut errors = vec![];
    for (kind, ns, name, key) in std::mem::take(&mut ctx.labelled) {
        if let Err(e) = unlabel(ctx.cluster, &kind, ns.as_deref(), &name, &key) {
            errors.push(e);
        }
    }
    for key in std::mem::take(&mut ctx.applied) {
        if let Err(e) = delete_via(ctx.model.control, ctx.cluster, &key) {
            errors.push(e);
        }
    }
    for id in std::mem::take(&mut ctx.added) {
        if let Err(e) = ctx.model.remove_pod(ctx.cluster, &id) {
            errors.push(e);
        }
    }
    if let Err(e) = expect_within(&ctx.prober, ctx.model, &ctx.reach(true), ENFORCE_TIMEOUT) {
        errors.push(format!("reachability not restored: {e}"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}
