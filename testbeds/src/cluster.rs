//! A multi-host strait cluster in network namespaces: an underlay, N hosts each running
//! its own `straitd` against one etcd, and containers attached through the real
//! `strait` CNI binary.
//!
//! ```text
//!            ┌────────────── underlay ns (bridge br-a, etcd on 10.0.0.254) ──────────────┐
//!            │        [router ns: 10.0.0.253 / 10.0.1.253, only with two segments]        │
//!            └───┬────────────────────┬────────────────────┬───────────────────────────────┘
//!           eth0 │ 10.0.0.1      eth0 │ 10.0.0.2      eth0 │ 10.0.0.3 (or 10.0.1.3 on B)
//!         host h1 (straitd)     host h2 (straitd)     host h3 (straitd)
//!            │ strait<hash>          │                    │
//!         container c1           container c2         container c3
//! ```
//!
//! Each host's agent gets the flags of `docs/cluster.md` (`--etcd-endpoints`,
//! `--fabric`, `--underlay-iface eth0`, ...), its own socket, state dir and log.
//! [`ClusterStore::Embedded`] runs each agent on its own embedded store instead (no
//! cluster flags at all), which exercises the topology with an agent that has no
//! cluster support.
//!
//! Everything is removed on drop, also on panic: containers, agents (killed by PID),
//! host namespaces, etcd, router, underlay, temp dir; in that order. A failing test
//! prints the log of every `straitd` and of etcd.
//!
//! ```ignore
//! let mut c = Cluster::start(ClusterOpts::new(3, Fabric::Vxlan));
//! let a = c.add_container(0, "a");
//! let b = c.add_container(1, "b");
//! probe::wait_ping(&a.ns, b.v4.unwrap().into(), Duration::from_secs(30))?;
//! c.restart_agent(1);
//! ```

pub mod control;
pub mod probe;
pub mod routers;
pub mod underlay;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::agent::{Agent, AgentOpts};
use crate::cni::{CniCall, CniOutcome};
use crate::etcd::{Etcd, EtcdOpts};
use crate::netns::Netns;
use underlay::{Segment, Underlay};

pub use strait_api::FabricMode as Fabric;

/// Name of the VXLAN device of the vxlan fabric (docs/cluster.md).
pub const VXLAN_DEV: &str = "strait.vxlan";
/// Route protocol number strait tags its routes with.
pub const ROUTE_PROTO: &str = "83";
/// The file, in each agent's state dir, of its SA keys with `ipsec_key_log`.
pub const ESP_SA_LOG: &str = "esp_sa";
/// The CNI network name the containers are attached to.
pub const NETWORK: &str = "stnet";

/// Where the agents keep their state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterStore {
    /// One etcd in the underlay, shared by all agents (a real cluster).
    Etcd,
    /// Each agent on its own embedded store, with no cluster flags: hosts know nothing
    /// of each other. etcd still runs, so the topology is the same.
    Embedded,
}

/// How to build a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    pub hosts: usize,
    pub fabric: Fabric,
    pub store: ClusterStore,
    /// Address pools, the same on every host.
    pub pools: Vec<String>,
    /// Two L2 segments joined by a router: hosts `0..ceil(n/2)` on A, the rest on B.
    pub two_segments: bool,
    /// Two sites instead: the segments as above, each with a router of its own and the
    /// agents' `--site` (`site-a`, `site-b`), the routers joined by this dedicated line
    /// (underlay::Layout::TwoSites).
    pub sites: Option<underlay::Line>,
    /// MTU of every underlay link.
    pub underlay_mtu: u32,
    /// `--mtu` for the agents (None: the agent's own choice, which is what users get).
    pub container_mtu: Option<u32>,
    /// `--node-lease-ttl-secs` (None: the agent's default).
    pub node_lease_ttl_secs: Option<u64>,
    /// `--block-reclaim-grace-secs` (None: the agent's default).
    pub block_reclaim_grace_secs: Option<u64>,
    /// The prefix of every namespace and process name (None: a fresh
    /// [`crate::unique_prefix`]). `[A-Za-z0-9_-]`, at most 32 characters.
    pub name: Option<String>,
    /// Each agent writes its IPsec SA keys to `<state dir>/esp_sa` (Wireshark's
    /// `esp_sa` lines; `--ipsec-key-log`, tests only) so captures can be decrypted.
    pub ipsec_key_log: bool,
    /// More flags for every agent.
    pub agent_extra: Vec<String>,
    /// More flags for single agents, by host index (e.g. `--bgp-role rr` on two hosts).
    pub host_extra: Vec<(usize, Vec<String>)>,
    /// A real Kubernetes API server in the underlay beside etcd (see [`KubeBed`]).
    pub kubernetes: Option<KubeBed>,
}

/// How a cluster runs with Kubernetes: `kube-apiserver` in the underlay namespace on
/// etcd's address, the project's RBAC (`deploy/kubernetes/rbac.yaml`) applied, a
/// `Node` per host, and every agent started with `--kubeconfig` holding a token of
/// the `kube-system/strait` service account: exactly the role's rights.
#[derive(Debug, Clone, Default)]
pub struct KubeBed {
    /// The Nodes' `spec.podCIDRs`, by host index (empty: none set), for
    /// `--ipam kubernetes`.
    pub pod_cidrs: Vec<Vec<String>>,
}

impl ClusterOpts {
    /// `hosts` hosts on one segment, dual-stack pools, etcd store, underlay MTU 1500.
    pub fn new(hosts: usize, fabric: Fabric) -> Self {
        Self {
            hosts,
            fabric,
            store: ClusterStore::Etcd,
            pools: vec!["10.244.0.0/16".into(), "fd00:244::/56".into()],
            two_segments: false,
            sites: None,
            underlay_mtu: 1500,
            container_mtu: None,
            node_lease_ttl_secs: None,
            block_reclaim_grace_secs: None,
            name: None,
            ipsec_key_log: false,
            agent_extra: vec![],
            host_extra: vec![],
            kubernetes: None,
        }
    }

    /// How the underlay joins the hosts.
    pub fn layout(&self) -> underlay::Layout {
        match (self.sites, self.two_segments) {
            (Some(line), _) => underlay::Layout::TwoSites(line),
            (None, true) => underlay::Layout::TwoSegments,
            (None, false) => underlay::Layout::OneSegment,
        }
    }

    /// The segment of host `i`.
    pub fn segment_of(&self, i: usize) -> Segment {
        if self.layout() != underlay::Layout::OneSegment && i >= self.hosts.div_ceil(2) {
            Segment::B
        } else {
            Segment::A
        }
    }
}

/// One host: its namespace, its agent, its underlay addresses.
pub struct ClusterHost {
    /// Node name, `h1`, `h2`, ...
    pub name: String,
    pub segment: Segment,
    pub underlay_v4: Ipv4Addr,
    pub underlay_v6: Ipv6Addr,
    // Drop order: the agent is killed before its namespace goes.
    pub agent: Agent,
    pub ns: Netns,
}

impl ClusterHost {
    /// Run a command in the host's namespace.
    pub fn exec(&self, argv: &[&str]) -> std::process::Output {
        self.ns.exec(argv)
    }

    /// The plugin config a runtime on this host would use.
    pub fn cni_config(&self) -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": NETWORK,
            "type": "strait",
            "socket": self.agent.socket,
            "stateDir": self.agent.state_dir,
        })
    }

    /// Routes strait's fabric owns here (protocol 83 with a gateway, or blackhole),
    /// IPv4 and IPv6. Host routes to local containers (no gateway) are left out: they
    /// belong to the attachment, not the fabric.
    pub fn fabric_routes(&self) -> Vec<KernelRoute> {
        let mut routes = vec![];
        for family in ["-4", "-6"] {
            let v = self
                .ns
                .ip_json(&[family, "route", "show", "proto", ROUTE_PROTO]);
            for r in v.as_array().into_iter().flatten() {
                let route = KernelRoute::from_json(r);
                if route.gateway.is_some()
                    || route.blackhole
                    || route.dev.as_deref() == Some(VXLAN_DEV)
                {
                    routes.push(route);
                }
            }
        }
        routes
    }

    /// Fabric routes (not blackholes) whose destination contains `ip`.
    pub fn routes_to(&self, ip: IpAddr) -> Vec<KernelRoute> {
        self.fabric_routes()
            .into_iter()
            .filter(|r| !r.blackhole && r.dst.is_some_and(|d| d.contains(&ip)))
            .collect()
    }

    /// The fabric's host routes (/32, /128) to `ip`: how other hosts reach an address
    /// borrowed from a block.
    pub fn host_routes_to(&self, ip: IpAddr) -> Vec<KernelRoute> {
        self.routes_to(ip)
            .into_iter()
            .filter(|r| r.dst.is_some_and(|d| d.prefix_len() == d.max_prefix_len()))
            .collect()
    }

    /// FDB entries of `strait.vxlan`: (MAC, remote VTEP).
    pub fn vxlan_fdb(&self) -> Vec<(String, Option<IpAddr>)> {
        let out = self
            .ns
            .exec(&["bridge", "-j", "fdb", "show", "dev", VXLAN_DEV]);
        if !out.status.success() {
            return vec![];
        }
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let mac = e["mac"].as_str()?.to_string();
                let dst = e["dst"].as_str().and_then(|d| d.parse().ok());
                Some((mac, dst))
            })
            .collect()
    }

    /// Neighbour entries of `strait.vxlan`: (address, MAC).
    pub fn vxlan_neighbours(&self) -> Vec<(IpAddr, String)> {
        let mut all = vec![];
        for family in ["-4", "-6"] {
            let out = self
                .ns
                .exec(&["ip", "-j", family, "neigh", "show", "dev", VXLAN_DEV]);
            if !out.status.success() {
                continue;
            }
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            all.extend(v.as_array().into_iter().flatten().filter_map(|n| {
                Some((
                    n["dst"].as_str()?.parse().ok()?,
                    n["lladdr"].as_str()?.to_string(),
                ))
            }));
        }
        all
    }

    /// `netctl -o json bgp peers` against this host's agent (every configured peer,
    /// Established or not; panics if the answer is not the peer list).
    pub fn bgp_peers(&self) -> Vec<strait_api::bgp::BgpPeerStatus> {
        let (_, out) = self.netctl(&["-o", "json", "bgp", "peers"]);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("netctl bgp peers on {}: {e}: {out}", self.name))
    }

    /// The agent's fast path as `/v1/status` reports it; panics when the agent has
    /// none loaded (`--fast-path off`, or a kernel that refused the programs).
    pub fn fast_path(&self) -> strait_api::FastPathStatus {
        let status: strait_api::AgentStatus = self
            .agent
            .client()
            .get(strait_api::paths::STATUS)
            .unwrap_or_else(|e| panic!("GET /v1/status on {}: {e}", self.name));
        status
            .fast_path
            .unwrap_or_else(|| panic!("{}: no fast path in the status", self.name))
    }

    /// `netctl <args>` against this host's agent: (success, stdout + stderr).
    pub fn netctl(&self, args: &[&str]) -> (bool, String) {
        let netctl = crate::bins::bin("netctl");
        let out = std::process::Command::new(netctl)
            .arg("--socket")
            .arg(&self.agent.socket)
            .args(args)
            .output()
            .expect("exec netctl");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

/// One route as the kernel shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    /// None for `default`.
    pub dst: Option<IpNet>,
    pub gateway: Option<IpAddr>,
    pub dev: Option<String>,
    pub blackhole: bool,
    pub onlink: bool,
}

impl KernelRoute {
    fn from_json(r: &Value) -> Self {
        let dst = r["dst"].as_str().and_then(|d| {
            d.parse::<IpNet>()
                .ok()
                .or_else(|| d.parse::<IpAddr>().ok().map(IpNet::from))
        });
        Self {
            dst,
            gateway: r["gateway"].as_str().and_then(|g| g.parse().ok()),
            dev: r["dev"].as_str().map(String::from),
            blackhole: r["type"].as_str() == Some("blackhole"),
            onlink: r["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "onlink")),
        }
    }
}

impl std::fmt::Display for KernelRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.blackhole {
            write!(f, "blackhole ")?;
        }
        match self.dst {
            Some(d) => write!(f, "{d}")?,
            None => write!(f, "default")?,
        }
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        if let Some(d) = &self.dev {
            write!(f, " dev {d}")?;
        }
        if self.onlink {
            write!(f, " onlink")?;
        }
        Ok(())
    }
}

/// A container: a fresh namespace attached on one host by `strait` CNI ADD.
pub struct Container {
    pub name: String,
    /// Index of its host.
    pub host: usize,
    pub id: String,
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
    /// MTU of its `eth0`.
    pub mtu: u32,
    pub ns: Netns,
}

impl Container {
    /// Its IPv4 address; panics when it has none.
    pub fn ip4(&self) -> IpAddr {
        IpAddr::V4(
            self.v4
                .unwrap_or_else(|| panic!("{} has no IPv4 address", self.name)),
        )
    }

    /// Its IPv6 address; panics when it has none.
    pub fn ip6(&self) -> IpAddr {
        IpAddr::V6(
            self.v6
                .unwrap_or_else(|| panic!("{} has no IPv6 address", self.name)),
        )
    }

    /// Its addresses, IPv4 first.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.v6.map(IpAddr::V6))
            .collect()
    }

    pub fn exec(&self, argv: &[&str]) -> std::process::Output {
        self.ns.exec(argv)
    }
}

/// A running cluster; see the module docs.
pub struct Cluster {
    pub prefix: String,
    pub opts: ClusterOpts,
    // Drop order matters: containers, then hosts (agents killed first), then etcd,
    // the routers' daemons, extra peers, the underlay, and last the directory holding
    // the logs.
    containers: Vec<Arc<Container>>,
    hosts: Vec<ClusterHost>,
    // Before etcd: an API server whose etcd is gone is slow to stop.
    kube: Option<crate::kube::KubeApi>,
    etcd: Etcd,
    routers: Vec<routers::Router>,
    peers: Vec<Netns>,
    underlay: Underlay,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Build the underlay, start etcd and one agent per host, and wait until every
    /// agent is ready. Panics (with every log) if anything fails.
    pub fn start(opts: ClusterOpts) -> Self {
        assert!(
            (1..=99).contains(&opts.hosts),
            "a cluster has 1 to 99 hosts, not {}",
            opts.hosts
        );
        crate::netns::reap_leftovers();
        let prefix = match &opts.name {
            Some(name) => {
                check_name(name).unwrap_or_else(|e| panic!("{e}"));
                name.clone()
            }
            None => crate::unique_prefix(),
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .expect("cluster temp dir");
        let underlay = Underlay::new(&prefix, opts.underlay_mtu, opts.layout());
        let etcd = Etcd::start_with(EtcdOpts {
            name: format!("{prefix}-etcd"),
            ip: underlay.etcd_ip(),
            netns: Some(underlay.ns.name().to_string()),
            extra: vec![],
        });
        let (kube, kubeconfig) = match &opts.kubernetes {
            Some(bed) => {
                let (api, kubeconfig) = start_kube(bed, &underlay, &etcd, opts.hosts);
                (Some(api), Some(kubeconfig))
            }
            None => (None, None),
        };
        let mut hosts = Vec::with_capacity(opts.hosts);
        for i in 0..opts.hosts {
            let name = format!("h{}", i + 1);
            let ns = Netns::new(format!("{prefix}{name}"));
            let seg = opts.segment_of(i);
            let (v4, v6) = underlay.attach(&ns, &name, seg, (i + 1) as u8);
            let agent_dir = dir.path().join(&name);
            std::fs::create_dir_all(&agent_dir).expect("agent dir");
            let mut aopts = agent_opts(&opts, i, &name, &etcd);
            if let Some(k) = &kubeconfig {
                aopts
                    .extra
                    .extend(["--kubeconfig".to_string(), k.display().to_string()]);
            }
            if opts.ipsec_key_log {
                let log = agent_dir.join("state").join(ESP_SA_LOG);
                aopts.extra.push("--ipsec-key-log".into());
                aopts.extra.push(log.display().to_string());
            }
            let agent = Agent::spawn(&ns, &agent_dir, aopts);
            hosts.push(ClusterHost {
                name,
                segment: seg,
                underlay_v4: v4,
                underlay_v6: v6,
                agent,
                ns,
            });
        }
        // Started together, waited for together: start-up overlaps.
        for h in &mut hosts {
            h.agent.wait_ready(Duration::from_secs(60));
        }
        Self {
            prefix,
            opts,
            containers: vec![],
            hosts,
            kube,
            etcd,
            routers: vec![],
            peers: vec![],
            underlay,
            dir,
        }
    }

    pub fn hosts(&self) -> &[ClusterHost] {
        &self.hosts
    }

    /// Host `i` (0-based; node name `h{i+1}`).
    pub fn host(&self, i: usize) -> &ClusterHost {
        &self.hosts[i]
    }

    pub fn underlay(&self) -> &Underlay {
        &self.underlay
    }

    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// The Kubernetes API server, with [`ClusterOpts::kubernetes`].
    pub fn kube(&self) -> &crate::kube::KubeApi {
        self.kube
            .as_ref()
            .expect("a cluster started with ClusterOpts::kubernetes")
    }

    pub fn kube_mut(&mut self) -> &mut crate::kube::KubeApi {
        self.kube
            .as_mut()
            .expect("a cluster started with ClusterOpts::kubernetes")
    }

    /// Directory holding every agent's dir (socket, state, `straitd.log`) and etcd's.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn containers(&self) -> &[Arc<Container>] {
        &self.containers
    }

    /// The container named `name`.
    pub fn container(&self, name: &str) -> Arc<Container> {
        self.containers
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    /// A new container on host `host`: a fresh namespace attached by `strait` CNI ADD,
    /// run in the host's namespace as a runtime there would. Panics if ADD fails.
    pub fn add_container(&mut self, host: usize, name: &str) -> Arc<Container> {
        match self.try_add_container(host, name) {
            Ok(c) => c,
            Err(out) => panic!(
                "CNI ADD of {name} on {} failed (exit {}): {}{}",
                self.hosts[host].name, out.code, out.stdout, out.stderr
            ),
        }
    }

    /// [`Cluster::add_container`], returning the plugin's outcome when ADD fails (the
    /// namespace is removed again then).
    pub fn try_add_container(
        &mut self,
        host: usize,
        name: &str,
    ) -> Result<Arc<Container>, CniOutcome> {
        self.try_add_container_with(host, name, |_| {})
    }

    /// [`Cluster::add_container`] asking for address `ip` (runtimeConfig `ips`), an
    /// address of another host's block, say. Panics when the ADD fails.
    pub fn add_container_with_ip(&mut self, host: usize, name: &str, ip: IpAddr) -> Arc<Container> {
        self.try_add_container_with(host, name, |config| {
            config["runtimeConfig"] = json!({"ips": [ip.to_string()]});
        })
        .unwrap_or_else(|out| panic!("ADD of {name} on host {host} with {ip}: {out:?}"))
    }

    /// [`Cluster::try_add_container`] with the host's CNI config changed by `edit`
    /// first (a `runtimeConfig`, say).
    pub fn try_add_container_with(
        &mut self,
        host: usize,
        name: &str,
        edit: impl FnOnce(&mut Value),
    ) -> Result<Arc<Container>, CniOutcome> {
        self.try_add_container_args(host, name, "", edit)
    }

    /// [`Cluster::try_add_container_with`] with `CNI_ARGS` (`K8S_POD_NAMESPACE=…;…`,
    /// as containerd sends for a pod's sandbox).
    pub fn try_add_container_args(
        &mut self,
        host: usize,
        name: &str,
        cni_args: &str,
        edit: impl FnOnce(&mut Value),
    ) -> Result<Arc<Container>, CniOutcome> {
        assert!(
            self.containers.iter().all(|c| c.name != name),
            "container {name} exists already"
        );
        let h = &self.hosts[host];
        let ns = Netns::new(format!("{}c-{name}", self.prefix));
        let id = format!("{}-{}", self.prefix, name);
        let mut config = h.cni_config();
        edit(&mut config);
        let out = CniCall::new("ADD", config)
            .container(&id, &ns.path())
            .cni_args(cni_args)
            .in_netns(h.ns.name())
            .run();
        if !out.ok() {
            return Err(out);
        }
        let result = out.json();
        let v4 = crate::host::result_ip(&result, false).and_then(|a| a.parse().ok());
        let v6 = crate::host::result_ip(&result, true).and_then(|a| a.parse().ok());
        let link = ns.ip_json(&["link", "show", "eth0"]);
        let mtu = link[0]["mtu"].as_u64().unwrap_or(1500) as u32;
        let c = Arc::new(Container {
            name: name.to_string(),
            host,
            id,
            v4,
            v6,
            mtu,
            ns,
        });
        self.containers.push(c.clone());
        Ok(c)
    }

    /// CNI DEL of a container, and its namespace goes. Returns the plugin's outcome.
    pub fn remove_container(&mut self, name: &str) -> CniOutcome {
        let c = self.container(name);
        let out = CniCall::new("DEL", self.hosts[c.host].cni_config())
            .container(&c.id, &c.ns.path())
            .in_netns(self.hosts[c.host].ns.name())
            .run();
        self.containers.retain(|x| x.name != name);
        out
    }

    /// A namespace outside the cluster plugged into segment A like a host (peer `n`,
    /// address `10.0.0.(100+n)`), with no agent: for hand-made baselines.
    pub fn add_underlay_peer(&mut self, n: u8) -> (&Netns, Ipv4Addr, Ipv6Addr) {
        let ns = Netns::new(format!("{}p{n}", self.prefix));
        let (v4, v6) =
            self.underlay
                .attach(&ns, &format!("p{n}"), Segment::A, underlay::PEER_BASE + n);
        self.peers.push(ns);
        (self.peers.last().expect("just pushed"), v4, v6)
    }

    /// The namespaces made by [`Cluster::add_underlay_peer`].
    pub fn peers(&self) -> &[Netns] {
        &self.peers
    }

    /// SIGTERM host `i`'s agent and start it again (same flags, state and socket);
    /// wait until ready.
    pub fn restart_agent(&mut self, i: usize) {
        self.hosts[i].agent.restart();
    }

    /// As [`Cluster::restart_agent`], with `extra` flags for this start only (a later
    /// restart uses the original flags again).
    pub fn restart_agent_with(&mut self, i: usize, extra: &[&str]) {
        self.hosts[i].agent.restart_with(extra);
    }

    /// SIGTERM host `i`'s agent and leave it stopped. Its kernel state stays (nothing
    /// is flushed on shutdown); its node record lives until its lease expires.
    pub fn stop_agent(&mut self, i: usize) {
        self.hosts[i].agent.stop();
    }

    /// SIGTERM host `i`'s agent and start it again without waiting for readiness (for
    /// a test that watches it become ready, or not).
    pub fn relaunch_agent(&mut self, i: usize) {
        self.hosts[i].agent.relaunch();
    }

    /// Start a stopped agent of host `i` again and wait until ready.
    pub fn start_agent(&mut self, i: usize) {
        self.hosts[i].agent.restart();
    }

    /// SIGKILL host `i`'s agent (a crash: no Cease, no cleanup) and leave it stopped.
    pub fn kill_agent(&mut self, i: usize) {
        self.hosts[i].agent.kill();
    }

    /// Host `i` drops off the network without a word, as a host that loses power: its
    /// underlay port goes down, so nothing it sends or is sent arrives (no TCP reset,
    /// no Cease). Its agent keeps running. [`Cluster::reconnect_host`] undoes it.
    pub fn cut_host(&mut self, i: usize) {
        let port = self.hosts[i].name.clone();
        self.underlay
            .ns
            .exec_ok(&["ip", "link", "set", &port, "down"]);
    }

    /// Plug host `i` back in after [`Cluster::cut_host`].
    pub fn reconnect_host(&mut self, i: usize) {
        let port = self.hosts[i].name.clone();
        self.underlay
            .ns
            .exec_ok(&["ip", "link", "set", &port, "up"]);
    }

    /// SIGKILL etcd (the crash case); its data stays.
    pub fn kill_etcd(&mut self) {
        self.etcd.kill();
    }

    /// Start etcd again on the same data and address (stopping it first if it runs);
    /// wait until it serves.
    pub fn restart_etcd(&mut self) {
        self.etcd.restart();
    }

    /// Every namespace of the cluster, for teardown by name from another process.
    pub fn namespaces(&self) -> Vec<String> {
        self.netns().map(|ns| ns.name().to_string()).collect()
    }

    /// Every namespace of the cluster: containers', hosts', underlay peers', then the
    /// underlay's own.
    fn netns(&self) -> impl Iterator<Item = &Netns> {
        self.containers
            .iter()
            .map(|c| &c.ns)
            .chain(self.hosts.iter().map(|h| &h.ns))
            .chain(&self.peers)
            .chain(self.underlay.netns())
    }

    /// Where the kernel dropped packets anywhere in the cluster, for a test that lost
    /// one: every interface's RX and TX drop counts and every namespace's UDP error
    /// counts (receive buffer full, other input errors) that are not zero, by where.
    pub fn kernel_drops(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ns in self.netns() {
            let name = ns.name();
            let links = ns.ip_json(&["-s", "link", "show"]);
            for l in links.as_array().into_iter().flatten() {
                let dev = l["ifname"].as_str().unwrap_or("?");
                for dir in ["rx", "tx"] {
                    let n = l["stats64"][dir]["dropped"].as_u64().unwrap_or(0);
                    if n > 0 {
                        out.insert(format!("{name}/{dev} {dir} dropped"), n);
                    }
                }
            }
            let snmp = ns.exec_ok(&["cat", "/proc/net/snmp"]);
            for (field, n) in udp_errors(&snmp) {
                out.insert(format!("{name} UDP {field}"), n);
            }
        }
        out
    }

    /// A human summary: what exists and how to look at it.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let store = match self.opts.store {
            ClusterStore::Etcd => format!("etcd {}", self.etcd.client_url()),
            ClusterStore::Embedded => "embedded store per host".to_string(),
        };
        s.push_str(&format!(
            "testbed {}: {} hosts, fabric {}, {store}, underlay MTU {}{}\n",
            self.prefix,
            self.hosts.len(),
            self.opts.fabric,
            self.opts.underlay_mtu,
            match self.opts.layout() {
                underlay::Layout::OneSegment => "",
                underlay::Layout::TwoSegments => ", two segments joined by a router",
                underlay::Layout::TwoSites(_) => ", two sites joined by a dedicated line",
            }
        ));
        s.push_str(&format!(
            "  underlay netns {} (bridges, etcd pid {})\n",
            self.underlay.ns.name(),
            self.etcd.pid().map(|p| p.to_string()).unwrap_or("-".into())
        ));
        if let Some(r) = &self.underlay.router {
            s.push_str(&format!("  router   netns {}\n", r.name()));
        }
        if let Some(r) = &self.underlay.router_b {
            s.push_str(&format!("  router   netns {} (site B)\n", r.name()));
        }
        if let (Some((r, dev)), Some(line)) = (self.underlay.line(), self.opts.sites) {
            let rate = line
                .rate_mbit
                .map_or("unshaped".to_string(), |r| format!("{r} Mbit/s"));
            s.push_str(&format!(
                "  line     {dev} in {} ({rate}): capture with `ip netns exec {} tcpdump -ni {dev}`\n",
                r.name(),
                r.name()
            ));
        }
        if self.opts.fabric == Fabric::Bgp {
            s.push_str(&format!("  bgp: {}\n", self.bgp_topology()));
        }
        for h in &self.hosts {
            s.push_str(&format!(
                "  {:<4} netns {:<16} underlay {} {} ({:?})  straitd pid {}  socket {}  log {}\n",
                h.name,
                h.ns.name(),
                h.underlay_v4,
                h.underlay_v6,
                h.segment,
                h.agent.pid().map(|p| p.to_string()).unwrap_or("-".into()),
                h.agent.socket.display(),
                h.agent.log_path.display(),
            ));
        }
        if !self.containers.is_empty() {
            s.push_str(&format!(
                "  containers: CNI network {NETWORK}, ifname eth0, container ID <prefix>-<name>\n"
            ));
        }
        for c in &self.containers {
            let ips: Vec<String> = c.ips().iter().map(IpAddr::to_string).collect();
            s.push_str(&format!(
                "  {:<4} netns {:<16} on {}  {}  mtu {}  container ID {}\n",
                c.name,
                c.ns.name(),
                self.hosts[c.host].name,
                ips.join(" "),
                c.mtu,
                c.id
            ));
        }
        for r in &self.routers {
            s.push_str(&r.describe());
        }
        s.push_str(&format!("  etcd log {}\n", self.etcd.log_path().display()));
        s
    }

    /// Who peers with whom among the nodes, from their flags (docs/bgp.md).
    fn bgp_topology(&self) -> String {
        let flags = |i: usize| -> Vec<&str> {
            let own = self.opts.host_extra.iter().filter(move |(h, _)| *h == i);
            self.opts
                .agent_extra
                .iter()
                .chain(own.flat_map(|(_, f)| f))
                .map(String::as_str)
                .collect()
        };
        let rrs: Vec<&str> = self
            .hosts
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                let f = flags(*i);
                f.windows(2).any(|w| w == ["--bgp-role", "rr"]) || f.contains(&"--bgp-role=rr")
            })
            .map(|(_, h)| h.name.as_str())
            .collect();
        if !rrs.is_empty() {
            format!(
                "route reflectors {}, the other nodes their clients",
                rrs.join(" ")
            )
        } else if flags(0).contains(&"--no-bgp-node-mesh") {
            "no node-to-node mesh: external peers only".into()
        } else {
            "full mesh among the nodes".into()
        }
    }
}

/// Whether `name` can prefix a cluster's namespaces: `[A-Za-z0-9_-]`, 1 to 32
/// characters, and no namespace of that prefix exists (another cluster's).
/// The non-zero error counters of the `Udp:` lines of a `/proc/net/snmp`.
fn udp_errors(snmp: &str) -> Vec<(String, u64)> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return vec![];
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .filter(|(name, _)| name.ends_with("Errors"))
        .filter_map(|(name, v)| Some((name.to_string(), v.parse().ok()?)))
        .filter(|&(_, n)| n > 0)
        .collect()
}

pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 32
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "test bed name {name:?}: 1 to 32 of A-Z a-z 0-9 - _"
        ));
    }
    // The underlay namespace exists in every cluster.
    if std::path::Path::new("/run/netns")
        .join(format!("{name}u"))
        .exists()
    {
        return Err(format!(
            "test bed name {name:?} is taken: namespace {name}u exists"
        ));
    }
    Ok(())
}

/// The agent's flags for host `name` (docs/cluster.md).
/// The project's RBAC for the agent, as a DaemonSet would install it.
pub fn agent_rbac() -> String {
    let path = crate::repo_root().join("deploy/kubernetes/rbac.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The API server of a [`KubeBed`], its RBAC and Nodes, and the agents' kubeconfig.
fn start_kube(
    bed: &KubeBed,
    underlay: &Underlay,
    etcd: &Etcd,
    hosts: usize,
) -> (crate::kube::KubeApi, PathBuf) {
    let api = crate::kube::KubeApi::start_with(
        etcd.endpoints(),
        crate::kube::KubeOpts {
            ip: underlay.etcd_ip(),
            netns: Some(underlay.ns.name().to_string()),
            ..Default::default()
        },
    );
    api.apply(&agent_rbac());
    for i in 0..hosts {
        let cidrs = bed.pod_cidrs.get(i).cloned().unwrap_or_default();
        let spec = match cidrs.first() {
            Some(first) => format!(
                "spec:\n  podCIDR: {first}\n  podCIDRs: [{}]\n",
                cidrs.join(", ")
            ),
            None => String::new(),
        };
        api.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: h{}\n{spec}",
            i + 1
        ));
    }
    let kubeconfig = api.service_account_kubeconfig("kube-system", "strait");
    (api, kubeconfig)
}

fn agent_opts(opts: &ClusterOpts, i: usize, name: &str, etcd: &Etcd) -> AgentOpts {
    let pools: Vec<&str> = opts.pools.iter().map(String::as_str).collect();
    let mut a = AgentOpts::new(name, &pools);
    a.mtu = opts.container_mtu;
    if opts.store == ClusterStore::Etcd {
        a.extra.extend([
            "--etcd-endpoints".to_string(),
            etcd.client_url(),
            "--fabric".to_string(),
            opts.fabric.as_str().to_string(),
            "--underlay-iface".to_string(),
            underlay::UNDERLAY_DEV.to_string(),
        ]);
        if let Some(ttl) = opts.node_lease_ttl_secs {
            a.extra
                .extend(["--node-lease-ttl-secs".to_string(), ttl.to_string()]);
        }
        if let Some(grace) = opts.block_reclaim_grace_secs {
            a.extra
                .extend(["--block-reclaim-grace-secs".to_string(), grace.to_string()]);
        }
    }
    if opts.sites.is_some() {
        let site = underlay::site_of(opts.segment_of(i));
        a.extra.extend(["--site".to_string(), site.to_string()]);
    }
    a.extra.extend(opts.agent_extra.iter().cloned());
    for (_, flags) in opts.host_extra.iter().filter(|(h, _)| *h == i) {
        a.extra.extend(flags.iter().cloned());
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_errors_are_the_non_zero_error_counters() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
            Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
            Udp: 145 3 0 150 7 0\n\
            UdpLite: InDatagrams InErrors\nUdpLite: 0 9\n";
        assert_eq!(udp_errors(snmp), vec![("RcvbufErrors".to_string(), 7)]);
        assert!(udp_errors("Ip: Forwarding\nIp: 1\n").is_empty());
    }
}
