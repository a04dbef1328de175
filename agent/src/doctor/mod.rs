//! `netctl doctor` and `netctl topology`, the agent's side: this node checks itself
//! ([`Doctor::check_node`]: every check with its verdict and fix, and its links to
//! other nodes), and answers the same for any node that asks through the store
//! ([`exchange`]: `netctl doctor --all-nodes`). Reads only: nothing here changes the
//! kernel or the store, but for the short-lived request and answer keys under
//! `doctor/`.
//!
//! Every check is bounded in time (the store by [`STORE_TIMEOUT`], the MTU probes by
//! theirs), so an unreachable etcd or a silent peer makes a slow verdict, never a
//! hung command.

pub mod cni;
pub mod exchange;
pub mod host;
pub mod links;
pub mod mtu;
pub mod state;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strait_api::FabricMode;
use strait_api::doctor::{Check, DoctorQuery, NodeHealth};

use crate::api::AppState;
use crate::netlink::Netlink;
use crate::node::Underlay;

/// The longest any one store read of a check may take.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the checks need beyond the agent's owners: the host's kernel handle and the
/// facts start-up found.
pub struct Doctor {
    pub netlink: Netlink,
    pub underlay: Underlay,
    pub socket: PathBuf,
    pub site: String,
    /// Checked unless a query names others.
    pub cni: CniDirs,
}

/// Where the runtimes of this node look for CNI network configs and plugins, as the
/// agent sees those directories (in a container, the node's mounted elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniDirs {
    pub conf: PathBuf,
    pub bins: Vec<PathBuf>,
}

impl CniDirs {
    /// `bins` is `:`-separated. Every directory must be absolute: a relative one would
    /// name whatever the agent's working directory holds.
    pub fn new(conf: PathBuf, bins: &str) -> Result<Self, String> {
        let bins = split_dirs(bins);
        if let Some(d) = std::iter::once(&conf)
            .chain(&bins)
            .find(|d| !d.is_absolute())
        {
            return Err(format!(
                "CNI directory {} must be an absolute path",
                d.display()
            ));
        }
        Ok(Self { conf, bins })
    }
}

/// A `:`-separated list of directories, as `PATH` and `CNI_PATH` are written.
fn split_dirs(dirs: &str) -> Vec<PathBuf> {
    dirs.split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect()
}

impl Doctor {
    pub fn new(
        netlink: Netlink,
        underlay: Underlay,
        socket: PathBuf,
        site: String,
        cni: CniDirs,
    ) -> Self {
        Self {
            netlink,
            underlay,
            socket,
            site,
            cni,
        }
    }

    /// Every check of this node, and its links (only the links with `links_only`).
    pub async fn check_node(&self, s: &AppState, q: &DoctorQuery) -> NodeHealth {
        let mut checks = Vec::new();
        let mut links = Vec::new();
        let readiness = s.readiness().await;
        let owners = s.owners();
        let fabric = s.fabric_mode;
        let report = match owners {
            Some(o) => Some(o.fabric.report().await),
            None => None,
        };
        let bgp_peers = match owners.and_then(|o| o.bgp.as_ref()) {
            Some(b) => Some(b.peers().await),
            None => None,
        };
        let ipsec = match s.ipsec() {
            Ok(h) => h.status().await,
            Err(_) => None,
        };
        if let Some(r) = &report {
            links.extend(links::fabric(r));
        }
        if let Some(Ok(peers)) = &bgp_peers {
            links.extend(links::bgp(peers));
        }
        if let Some(st) = &ipsec {
            links.extend(links::ipsec(st));
        }
        // IPAM's view, read once: the node's block count and the pools' check.
        let view = match owners {
            Some(o) => tokio::time::timeout(STORE_TIMEOUT, o.attacher.ipam().view())
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        let blocks = view.as_ref().map_or(0, |v| {
            v.blocks
                .iter()
                .filter(|b| b.affinity.as_deref() == Some(s.node.as_str()))
                .count()
        });
        let health = |checks, links| NodeHealth {
            node: s.node.clone(),
            site: self.site.clone(),
            fabric: fabric.to_string(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            clock_ms: now_ms(),
            checks,
            links,
            blocks,
        };
        if q.links_only {
            return health(checks, links);
        }

        checks.push(state::agent(&readiness, &s.phase()));
        let mut records = None;
        match owners {
            Some(o) => {
                let store = o.registry.store();
                let started = Instant::now();
                let key = crate::node::node_key(&s.node);
                let read = tokio::time::timeout(STORE_TIMEOUT, store.get(&key)).await;
                let took = started.elapsed();
                let read = match read {
                    Ok(Ok(kv)) => Ok(kv),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {} s", STORE_TIMEOUT.as_secs())),
                };
                checks.push(state::store(
                    &store.describe(),
                    &read.as_ref().map(|_| Some(())).map_err(Clone::clone),
                    took,
                ));
                let record_lease = read
                    .as_ref()
                    .ok()
                    .map(|kv| kv.as_ref().and_then(|kv| kv.lease));
                checks.push(state::lease(&s.node, record_lease, o.registry.lease()));
                if read.is_ok()
                    && let Ok(Ok(nodes)) =
                        tokio::time::timeout(STORE_TIMEOUT, o.registry.nodes()).await
                {
                    checks.push(state::versions(&s.node, env!("CARGO_PKG_VERSION"), &nodes));
                    records = Some(nodes);
                } else {
                    checks.push(Check::skip("versions", "the store did not answer"));
                }
            }
            None => {
                checks.push(Check::skip("store", "the agent has not opened it yet"));
            }
        }
        let ipv6 = s.pools.iter().any(|p| matches!(p, ipnet::IpNet::V6(_)));
        // The network sysctls under the host connection's root (`--proc-sys-dir`).
        let proc_sys = self.netlink.proc_sys();
        checks.push(host::forwarding(proc_sys, ipv6));
        let mut devices: Vec<String> = self.underlay.iface.iter().cloned().collect();
        if let Some(d) = report.as_ref().and_then(|r| r.device.as_ref()) {
            devices.push(d.name.clone());
        }
        checks.push(host::rp_filter(proc_sys, fabric, &devices));
        if let Some(o) = owners {
            let container = o.attacher.config().container_mtu();
            let host_mtu = mtu::HostMtu {
                fabric,
                container,
                underlay: crate::daemon::underlay_mtu(&self.netlink, &self.underlay).await,
                underlay_iface: self.underlay.iface.clone(),
                ipv6_underlay: self.underlay.v4.is_none(),
                vxlan_device: report
                    .as_ref()
                    .and_then(|r| r.device.as_ref())
                    .map(|d| d.mtu),
            };
            checks.push(mtu::local(&host_mtu));
            checks.push(
                self.probe_paths(&s.node, fabric, container, records.as_deref())
                    .await,
            );
        }
        match &report {
            Some(r) if fabric != FabricMode::None => checks.push(state::fabric(r)),
            Some(_) => checks.push(Check::skip("fabric", "--fabric none: single host")),
            None => checks.push(Check::skip("fabric", "not started")),
        }
        checks.push(state::fast_path(
            s.fast_path().map(|fp| fp.maps().map_err(|e| e.to_string())),
        ));
        checks.push(state::bgp(bgp_peers));
        if let Some(o) = owners {
            let grace = o.attacher.config().gc_grace;
            let found =
                tokio::time::timeout(STORE_TIMEOUT, o.attacher.ipam_check(Duration::ZERO)).await;
            match (&view, found) {
                (Some(view), Ok(Ok(report))) => {
                    checks.extend(state::ipam(view, &report.issues, grace))
                }
                _ => checks.push(Check::skip("ipam", "the store did not answer")),
            }
        }
        checks.push(state::pending_dels(&s.state_dir));
        checks.push(Check::skip(
            "clock",
            "compared across nodes: netctl doctor --all-nodes",
        ));
        checks.push(host::conntrack(proc_sys));
        checks.push(host::kernel(
            &host::kernel_release(),
            &host::Features {
                ebpf: ebpf_state(s),
                vxlan_wanted: fabric == FabricMode::Vxlan,
                vxlan_device: report.as_ref().is_some_and(|r| r.device.is_some()),
                esp: ipsec.as_ref().and_then(|st| {
                    st.datapath.as_ref().map(|d| match &st.datapath_reason {
                        Some(r) => format!("{d} ({r})"),
                        None => d.clone(),
                    })
                }),
            },
        ));
        // The asker's directories when it named them, else this agent's own: another
        // node's agent may see its node's directories elsewhere.
        let conf_dir = q
            .cni_conf_dir
            .as_deref()
            .map_or(self.cni.conf.as_path(), Path::new);
        let bin_dirs = q
            .cni_bin_dir
            .as_deref()
            .map_or_else(|| self.cni.bins.clone(), split_dirs);
        checks.push(cni::check(conf_dir, &bin_dirs, &self.socket));
        health(checks, links)
    }

    /// The DF probe to every other live node of this fabric, all at once.
    async fn probe_paths(
        &self,
        me: &str,
        fabric: FabricMode,
        container: u32,
        records: Option<&[strait_api::NodeRecord]>,
    ) -> Check {
        let Some(records) = records else {
            return Check::skip("mtu-path", "the store did not answer: no peer list");
        };
        let asks: Vec<_> = records
            .iter()
            .filter(|n| n.name != me && n.fabric == fabric)
            .filter_map(|n| Some((n.name.clone(), mtu::probe_target(fabric, n)?)))
            .map(|(name, addr)| {
                let size = container as usize;
                (
                    name,
                    addr,
                    tokio::task::spawn_blocking(move || mtu::probe(addr, size)),
                )
            })
            .collect();
        let mut results = Vec::new();
        for (name, addr, ask) in asks {
            let r = ask
                .await
                .unwrap_or_else(|e| mtu::PathMtu::Error(e.to_string()));
            results.push((name, addr, r));
        }
        mtu::paths(container, &results)
    }
}

/// What of eBPF this agent has loaded.
fn ebpf_state(s: &AppState) -> Result<String, String> {
    let mut loaded = Vec::new();
    if let Some(fp) = s.fast_path() {
        let st = fp.status();
        loaded.push(if st.active {
            "fast path active".to_string()
        } else {
            format!(
                "fast path loaded, inactive ({})",
                st.reason.unwrap_or_default()
            )
        });
    }
    if s.policy().is_some() {
        loaded.push("policy datapath".into());
    }
    if s.services().is_ok() {
        loaded.push("service balancer".into());
    }
    if loaded.is_empty() {
        return Ok("no program loaded yet".into());
    }
    Ok(loaded.join(", "))
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
