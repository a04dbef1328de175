//! Agent configuration: command-line flags and an optional TOML file with the same keys.
//! Flags win over the file; the file wins over defaults.
//!
//! Over 600 lines with its unit tests (every key's precedence is tested); the
//! resolution itself is about 360 lines.
//!
//! Each key is defined once, in [`Keys`] (a flag and a file key alike). The
//! command line and the file each give a `Keys`, layered flag over file, and
//! [`AgentConfig`] is resolved from the result: defaults (the constants here and in
//! `bgp`) and validation, each in one place.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod bgp;
mod keys;

pub use bgp::{BgpSettings, DEFAULT_GRACEFUL_RESTART_SECS, MAX_GRACEFUL_RESTART_SECS};
pub use keys::{Flags, Keys};

use ipnet::IpNet;
use strait_api::FabricMode;

use crate::ipam::IpamConfig;
use crate::ipam::config::{DEFAULT_BLOCK_PREFIX_V4, DEFAULT_BLOCK_PREFIX_V6};

// Defaults when neither a flag nor the file sets a value (the block sizes are IPAM's,
// imported above; BGP's are `BgpSettings::default`).

/// Leaked reservations are released only after this long (Calico's leakGracePeriod).
pub const DEFAULT_GC_GRACE_SECS: u64 = 15 * 60;
/// Calico's default VNI for its VXLAN pools.
pub const DEFAULT_VXLAN_VNI: u32 = 4096;
/// The IANA VXLAN port (RFC 7348).
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
/// Liveness lease of the node record: a dead node's routes go after at most this long.
pub const DEFAULT_NODE_LEASE_TTL_SECS: u64 = 15;
/// Shortest lease TTL accepted: refreshed every third of it, a lease under 3 s leaves
/// less than a second per refresh, and etcd raises short TTLs to its minimum anyway.
pub const MIN_NODE_LEASE_TTL_SECS: u64 = 3;
/// How long a dead node keeps its blocks before the reclaimer frees the empty ones.
pub const DEFAULT_BLOCK_RECLAIM_GRACE_SECS: u64 = 15 * 60;
/// VNIs are 24 bits on the wire.
const MAX_VXLAN_VNI: u32 = (1 << 24) - 1;

/// Where a node's container addresses come from (`--ipam`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpamMode {
    /// Blocks of the pools, claimed by the node as it needs them.
    #[default]
    Strait,
    /// Only inside the Node's `spec.podCIDRs` (assigned by Kubernetes).
    Kubernetes,
}

impl std::str::FromStr for IpamMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strait" => Ok(IpamMode::Strait),
            "kubernetes" => Ok(IpamMode::Kubernetes),
            other => Err(format!("unknown IPAM mode {other:?}: strait or kubernetes")),
        }
    }
}

/// The resolved configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub node_name: String,
    /// The node's site (`--site`, default `default`).
    pub site: String,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub pools: Vec<IpNet>,
    /// Pools kept for their allocations but handing out no new address.
    pub disabled_pools: Vec<IpNet>,
    /// Where service virtual IPs come from, at most one per family.
    pub service_pools: Vec<IpNet>,
    /// Where the socket balancer attaches: `None` off, `Some(None)` the cgroup v2
    /// root (found at start), `Some(Some(dir))` that directory.
    pub service_cgroup: Option<Option<PathBuf>>,
    pub block_prefix_v4: u8,
    pub block_prefix_v6: u8,
    pub max_blocks_per_node: Option<u32>,
    pub strict_affinity: bool,
    /// None: detect at start.
    pub mtu: Option<u32>,
    pub metrics_addr: Option<SocketAddr>,
    pub gc_grace_secs: u64,
    /// Empty: the embedded store.
    pub etcd_endpoints: Vec<String>,
    pub fabric: FabricMode,
    /// None: the interface of the default route.
    pub underlay_iface: Option<String>,
    /// Empty: detected on `underlay_iface`. At most one per family.
    pub underlay_addrs: Vec<IpAddr>,
    pub vxlan_vni: u32,
    pub vxlan_port: u16,
    pub fast_path: strait_api::FastPathMode,
    pub policy_mode: strait_api::policy::PolicyMode,
    /// bpffs directory of policy's pinned maps and programs.
    pub bpf_dir: PathBuf,
    /// The root the network sysctls are read and written under (`<dir>/net/...`).
    pub proc_sys_dir: PathBuf,
    /// This node's CNI config and plugin directories as the agent sees them, for
    /// `netctl doctor`.
    pub cni: crate::doctor::CniDirs,
    /// The Docker plugin, when enabled (`--docker-plugin`).
    pub docker: Option<crate::docker::DockerConfig>,
    /// The Kubernetes API server to follow, when one is given.
    pub kube: Option<crate::kube::KubeSource>,
    /// Where this node's container addresses come from.
    pub ipam_mode: IpamMode,
    /// IPsec: the datapath and the SA lifetimes.
    pub ipsec: IpsecAgentConfig,
    pub node_lease_ttl_secs: u64,
    pub block_reclaim_grace_secs: u64,
    /// The bgp fabric's settings (defaults unless given; used with `--fabric bgp`).
    pub bgp: BgpSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl AgentConfig {
    /// Merge flags over the file named by `--config` (if any) over defaults.
    pub fn resolve(flags: Flags) -> Result<Self, ConfigError> {
        let file = match &flags.config {
            Some(path) => load_file(path)?,
            None => Keys::default(),
        };
        Self::merge(flags, file)
    }

    fn merge(flags: Flags, file: Keys) -> Result<Self, ConfigError> {
        Self::from_keys(flags.into_keys().over(file))
    }

    /// Defaults for the keys not given, and validation.
    fn from_keys(keys: Keys) -> Result<Self, ConfigError> {
        let cluster = ClusterSettings::from_keys(&keys)?;
        let bgp = BgpSettings::from_keys(&keys)?;
        let state_dir: PathBuf = keys
            .state_dir
            .clone()
            .unwrap_or_else(|| strait_api::DEFAULT_STATE_DIR.into());
        let ipsec = IpsecAgentConfig::from_keys(&keys, &state_dir)?;
        let node_name = match keys.node_name {
            Some(n) => n,
            None => hostname()?,
        };
        validate_node_name(&node_name)?;
        let site = keys.site.unwrap_or_else(strait_api::ipsec::default_site);
        strait_api::ipsec::validate_site(&site).map_err(ConfigError::Invalid)?;
        if keys.pools.is_empty() {
            return Err(ConfigError::Invalid(
                "no address pool: give --pool CIDR (repeatable) or `pools` in the config file"
                    .into(),
            ));
        }
        if let Some(m) = keys.mtu
            && !(576..=65535).contains(&m)
        {
            return Err(ConfigError::Invalid(format!(
                "mtu {m} out of range 576..=65535"
            )));
        }
        if let Some(dir) = &keys.proc_sys_dir
            && !dir.is_absolute()
        {
            // The agent's threads change namespace, never directory, but a relative root
            // would still depend on where it was started.
            return Err(ConfigError::Invalid(format!(
                "proc_sys_dir {} must be an absolute path",
                dir.display()
            )));
        }
        let cni = crate::doctor::CniDirs::new(
            keys.cni_conf_dir
                .unwrap_or_else(|| strait_api::doctor::DEFAULT_CNI_CONF_DIR.into()),
            keys.cni_bin_dir
                .as_deref()
                .unwrap_or(strait_api::doctor::DEFAULT_CNI_BIN_DIR),
        )
        .map_err(ConfigError::Invalid)?;
        let service_pools = if keys.service_pools.is_empty() {
            crate::services::pool::defaults_beside(&keys.pools, &keys.disabled_pools)
        } else {
            keys.service_pools
        };
        let cfg = Self {
            node_name,
            site,
            state_dir: state_dir.clone(),
            socket: keys
                .socket
                .unwrap_or_else(|| strait_api::DEFAULT_SOCKET.into()),
            pools: keys.pools,
            disabled_pools: keys.disabled_pools,
            service_pools,
            service_cgroup: match keys.service_cgroup {
                None => Some(None),
                Some(p) if p.as_os_str() == "none" => None,
                Some(p) => Some(Some(p)),
            },
            block_prefix_v4: keys.block_prefix_v4.unwrap_or(DEFAULT_BLOCK_PREFIX_V4),
            block_prefix_v6: keys.block_prefix_v6.unwrap_or(DEFAULT_BLOCK_PREFIX_V6),
            max_blocks_per_node: keys.max_blocks_per_node,
            strict_affinity: keys.strict_affinity.unwrap_or(false),
            mtu: keys.mtu,
            metrics_addr: keys.metrics_addr,
            gc_grace_secs: keys.gc_grace_secs.unwrap_or(DEFAULT_GC_GRACE_SECS),
            etcd_endpoints: cluster.etcd_endpoints,
            fabric: cluster.fabric,
            underlay_iface: cluster.underlay_iface,
            underlay_addrs: cluster.underlay_addrs,
            vxlan_vni: cluster.vxlan_vni,
            vxlan_port: cluster.vxlan_port,
            fast_path: keys.fast_path.unwrap_or_default(),
            policy_mode: keys.policy_mode.unwrap_or_default(),
            bpf_dir: keys
                .bpf_dir
                .unwrap_or_else(|| crate::policy::datapath::DEFAULT_BPF_DIR.into()),
            proc_sys_dir: keys
                .proc_sys_dir
                .unwrap_or_else(|| crate::netlink::DEFAULT_PROC_SYS.into()),
            cni,
            docker: keys
                .docker_plugin
                .unwrap_or(false)
                .then(|| crate::docker::DockerConfig {
                    socket: keys
                        .docker_plugin_socket
                        .unwrap_or_else(|| crate::docker::DEFAULT_PLUGIN_SOCKET.into()),
                    spec_file: keys.docker_spec_file,
                    docker_host: keys
                        .docker_host
                        .unwrap_or_else(|| crate::docker::DEFAULT_DOCKER_HOST.into()),
                }),
            kube: crate::kube::KubeSource::from_keys(
                keys.kubeconfig,
                keys.kubernetes_in_cluster.unwrap_or(false),
            )
            .map_err(ConfigError::Invalid)?,
            ipam_mode: keys.ipam.unwrap_or_default(),
            node_lease_ttl_secs: cluster.node_lease_ttl_secs,
            block_reclaim_grace_secs: cluster.block_reclaim_grace_secs,
            bgp,
            ipsec,
        };
        if cfg.ipam_mode == IpamMode::Kubernetes && cfg.kube.is_none() {
            return Err(ConfigError::Invalid(
                "--ipam kubernetes takes the node's podCIDRs from the API server: give \
                 --kubeconfig or --kubernetes-in-cluster"
                    .into(),
            ));
        }
        // The pools are checked here too, so a pool no container can use is refused
        // before the agent binds its socket or opens its store.
        cfg.ipam_config()
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        crate::services::pool::validate(&cfg.service_pools, &cfg.pools, &cfg.disabled_pools)
            .map_err(ConfigError::Invalid)?;
        Ok(cfg)
    }

    /// IPAM's part of the configuration.
    pub fn ipam_config(&self) -> IpamConfig {
        IpamConfig {
            pools: self.pools.clone(),
            disabled_pools: self.disabled_pools.clone(),
            block_prefix_v4: self.block_prefix_v4,
            block_prefix_v6: self.block_prefix_v6,
            max_blocks_per_node: self.max_blocks_per_node,
            strict_affinity: self.strict_affinity,
        }
    }

    /// Whether the agent runs on etcd (a cluster) rather than its embedded store.
    pub fn uses_etcd(&self) -> bool {
        !self.etcd_endpoints.is_empty()
    }

    /// What `netctl status` shows as the store: `etcd:<endpoints>` or
    /// `embedded:<file>` (the same words as `Store::describe`).
    pub fn store_description(&self) -> String {
        if self.uses_etcd() {
            format!("etcd:{}", self.etcd_endpoints.join(","))
        } else {
            format!("embedded:{}", self.store_path().display())
        }
    }

    /// Settings that are legal but probably not what the operator wants; the daemon
    /// logs each as a warning.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.fabric != FabricMode::None && !self.uses_etcd() {
            out.push(format!(
                "--fabric {} without --etcd-endpoints: the embedded store is this host's \
                 alone, so no other host will be seen",
                self.fabric
            ));
        }
        if self.fabric != FabricMode::Bgp && self.bgp != BgpSettings::default() {
            out.push(format!(
                "BGP settings given with --fabric {}: they apply only with --fabric bgp",
                self.fabric
            ));
        }
        out
    }

    /// Path of the embedded store's file.
    pub fn store_path(&self) -> PathBuf {
        self.state_dir.join("store.redb")
    }

    /// Directory where the CNI plugin queues DELs made while the agent was down.
    pub fn pending_release_dir(&self) -> PathBuf {
        self.state_dir.join(strait_api::PENDING_RELEASE_DIR)
    }
}

/// The cluster settings (docs/cluster.md), resolved and validated apart from the rest.
struct ClusterSettings {
    etcd_endpoints: Vec<String>,
    fabric: FabricMode,
    underlay_iface: Option<String>,
    underlay_addrs: Vec<IpAddr>,
    vxlan_vni: u32,
    vxlan_port: u16,
    node_lease_ttl_secs: u64,
    block_reclaim_grace_secs: u64,
}

impl ClusterSettings {
    fn from_keys(keys: &Keys) -> Result<Self, ConfigError> {
        let etcd_endpoints: Vec<String> = keys
            .etcd_endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        for e in &etcd_endpoints {
            validate_endpoint(e)?;
        }
        let underlay_addrs = keys.underlay_addrs.clone();
        validate_underlay_addrs(&underlay_addrs)?;
        let underlay_iface = keys.underlay_iface.clone();
        if let Some(name) = &underlay_iface {
            validate_ifname(name)?;
        }
        let vxlan_vni = keys.vxlan_vni.unwrap_or(DEFAULT_VXLAN_VNI);
        if vxlan_vni > MAX_VXLAN_VNI {
            return Err(ConfigError::Invalid(format!(
                "vxlan_vni {vxlan_vni} does not fit in 24 bits (at most {MAX_VXLAN_VNI})"
            )));
        }
        let vxlan_port = keys.vxlan_port.unwrap_or(DEFAULT_VXLAN_PORT);
        if vxlan_port == 0 {
            return Err(ConfigError::Invalid(
                "vxlan_port 0: give the UDP port VXLAN uses (4789 by default)".into(),
            ));
        }
        let node_lease_ttl_secs = keys
            .node_lease_ttl_secs
            .unwrap_or(DEFAULT_NODE_LEASE_TTL_SECS);
        if node_lease_ttl_secs < MIN_NODE_LEASE_TTL_SECS {
            return Err(ConfigError::Invalid(format!(
                "node_lease_ttl_secs {node_lease_ttl_secs} is below the minimum of \
                 {MIN_NODE_LEASE_TTL_SECS}"
            )));
        }
        Ok(Self {
            etcd_endpoints,
            fabric: keys.fabric.unwrap_or_default(),
            underlay_iface,
            underlay_addrs,
            vxlan_vni,
            vxlan_port,
            node_lease_ttl_secs,
            block_reclaim_grace_secs: keys
                .block_reclaim_grace_secs
                .unwrap_or(DEFAULT_BLOCK_RECLAIM_GRACE_SECS),
        })
    }
}

/// An etcd endpoint is a URL the gRPC client can dial: `http(s)://host:port`.
fn validate_endpoint(e: &str) -> Result<(), ConfigError> {
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"));
    let ok = rest.is_some_and(|r| {
        let host_port = r.trim_end_matches('/');
        !host_port.is_empty()
            && !host_port.contains('/')
            && !host_port.contains(char::is_whitespace)
    });
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "etcd endpoint {e:?}: use http://host:port (or https://)"
        )))
    }
}

/// Explicit underlay addresses: at most one per family, and usable as a tunnel source.
fn validate_underlay_addrs(addrs: &[IpAddr]) -> Result<(), ConfigError> {
    for family_v4 in [true, false] {
        let n = addrs.iter().filter(|a| a.is_ipv4() == family_v4).count();
        if n > 1 {
            return Err(ConfigError::Invalid(format!(
                "{n} {} underlay addresses given: at most one per family",
                if family_v4 { "IPv4" } else { "IPv6" }
            )));
        }
    }
    if let Some(a) = addrs
        .iter()
        .find(|a| a.is_unspecified() || a.is_loopback() || a.is_multicast())
    {
        return Err(ConfigError::Invalid(format!(
            "underlay address {a}: not a unicast address another host can reach"
        )));
    }
    Ok(())
}

/// Linux interface names: 1 to 15 bytes, no '/', no whitespace, not "." or "..".
fn validate_ifname(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "underlay interface {name:?} is not a valid interface name"
        )))
    }
}

fn load_file(path: &Path) -> Result<Keys, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.into(),
        source,
    })
}

fn hostname() -> Result<String, ConfigError> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| ConfigError::Invalid(format!("no --node-name and no host name: {e}")))?;
    Ok(name.trim().to_string())
}

/// IPsec's part of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpsecAgentConfig {
    pub datapath: crate::ipsec::datapath::DatapathChoice,
    pub child_lifetime: Option<Duration>,
    pub ike_lifetime: Option<Duration>,
    pub child_bytes: Option<u64>,
    pub dpd: Option<Duration>,
    /// Reauthenticate IKE SAs this often (`--ipsec-reauth-secs`).
    pub reauth: Option<Duration>,
    /// Offer ESN on Child SAs.
    pub esn: bool,
    /// A gateway of its site (`--ipsec-gateway`), in the node record.
    pub gateway: bool,
    /// Test-only key log, checked to be inside a non-default state dir.
    pub key_log: Option<PathBuf>,
}

impl IpsecAgentConfig {
    fn from_keys(keys: &Keys, state_dir: &std::path::Path) -> Result<Self, ConfigError> {
        let datapath = match &keys.ipsec_datapath {
            Some(s) => s.parse().map_err(ConfigError::Invalid)?,
            None => Default::default(),
        };
        let secs = |what: &str, v: Option<u64>, min: u64| match v {
            Some(s) if s < min => Err(ConfigError::Invalid(format!("{what} {s}: at least {min}"))),
            v => Ok(v.map(Duration::from_secs)),
        };
        if let Some(path) = &keys.ipsec_key_log {
            let default = std::path::Path::new(strait_api::DEFAULT_STATE_DIR);
            if state_dir == default
                || !path.starts_with(state_dir)
                || path
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(ConfigError::Invalid(format!(
                    "--ipsec-key-log {}: the SA key log is for tests only; it must be a file \
                     inside a --state-dir other than {}",
                    path.display(),
                    default.display()
                )));
            }
        }
        Ok(Self {
            datapath,
            child_lifetime: secs("ipsec child lifetime", keys.ipsec_child_lifetime_secs, 2)?,
            ike_lifetime: secs("ipsec IKE lifetime", keys.ipsec_ike_lifetime_secs, 2)?,
            child_bytes: keys.ipsec_child_bytes,
            dpd: secs("ipsec DPD interval", keys.ipsec_dpd_secs, 1)?,
            reauth: secs(
                "ipsec reauthentication interval",
                keys.ipsec_reauth_secs,
                60,
            )?,
            esn: keys.ipsec_esn.unwrap_or(true),
            gateway: keys.ipsec_gateway.unwrap_or(false),
            key_log: keys.ipsec_key_log.clone(),
        })
    }
}

/// Node names become store key segments: keep them to DNS-label-like characters.
fn validate_node_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "node name {name:?}: use letters, digits, '-', '.', '_' (at most 253)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut v = vec!["straitd"];
        v.extend_from_slice(args);
        Flags::parse_from(v)
    }

    #[test]
    fn flags_win_over_file() {
        let file: Keys = toml::from_str(
            r#"node_name = "from-file"
               pools = ["10.1.0.0/16"]
               mtu = 1400
               block_prefix_v4 = 24"#,
        )
        .unwrap();
        let cfg = AgentConfig::merge(
            flags(&[
                "--node-name",
                "n1",
                "--pool",
                "10.9.0.0/16",
                "--mtu",
                "1450",
            ]),
            file,
        )
        .unwrap();
        assert_eq!(cfg.node_name, "n1");
        assert_eq!(cfg.pools, vec!["10.9.0.0/16".parse::<IpNet>().unwrap()]);
        assert_eq!(cfg.mtu, Some(1450));
        assert_eq!(cfg.block_prefix_v4, 24, "file value used where no flag");
        assert_eq!(cfg.block_prefix_v6, DEFAULT_BLOCK_PREFIX_V6);
        assert_eq!(cfg.socket, PathBuf::from(strait_api::DEFAULT_SOCKET));
    }

    #[test]
    fn missing_pool_is_a_clear_error() {
        let err = AgentConfig::merge(flags(&["--node-name", "n1"]), Keys::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--pool"), "{err}");
    }

    #[test]
    fn pools_no_container_can_use_are_refused_at_once() {
        for pool in [
            "169.254.1.0/30",
            "fe80::/64",
            "127.0.0.0/24",
            "224.0.0.0/24",
        ] {
            let err = AgentConfig::merge(
                flags(&["--node-name", "n1", "--pool", pool]),
                Keys::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(&format!("pool {pool} overlaps")), "{err}");
        }
    }

    #[test]
    fn relative_cni_dirs_are_refused() {
        let err = with(&["--cni-conf-dir", "etc/cni/net.d"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("etc/cni/net.d must be an absolute path"),
            "{err}"
        );
        let err = with(&["--cni-bin-dir", "/opt/cni/bin:bin"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("bin must be an absolute path"), "{err}");
    }

    #[test]
    fn a_relative_proc_sys_dir_is_refused() {
        let err = with(&["--proc-sys-dir", "host/proc/sys"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("proc_sys_dir host/proc/sys must be an absolute path"),
            "{err}"
        );
    }

    #[test]
    fn disabled_pools_from_flags_or_the_file_as_one_set_with_the_pools() {
        let cfg = with(&[
            "--disabled-pool",
            "10.1.0.0/16",
            "--disabled-pool",
            "fd00:1::/64",
        ])
        .unwrap();
        assert_eq!(cfg.pools, vec!["10.0.0.0/16".parse::<IpNet>().unwrap()]);
        assert_eq!(
            cfg.disabled_pools,
            vec![
                "10.1.0.0/16".parse::<IpNet>().unwrap(),
                "fd00:1::/64".parse().unwrap()
            ]
        );
        assert_eq!(cfg.ipam_config().disabled_pools, cfg.disabled_pools);
        let file: Keys = toml::from_str(
            r#"pools = ["10.2.0.0/16"]
               disabled_pools = ["10.1.0.0/16"]"#,
        )
        .unwrap();
        let from_file = AgentConfig::merge(flags(&["--node-name", "n1"]), file.clone()).unwrap();
        assert_eq!(
            from_file.pools,
            vec!["10.2.0.0/16".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            from_file.disabled_pools,
            vec!["10.1.0.0/16".parse::<IpNet>().unwrap()]
        );
        // Flags that give pools give the whole set: the file's disabled pool is not
        // added to them behind the operator's back.
        let over = AgentConfig::merge(flags(&base()), file).unwrap();
        assert_eq!(over.pools, vec!["10.0.0.0/16".parse::<IpNet>().unwrap()]);
        assert!(over.disabled_pools.is_empty());
        // Disabled alone is not enough: something must hand out addresses.
        let err = AgentConfig::merge(
            flags(&["--node-name", "n1", "--disabled-pool", "10.1.0.0/16"]),
            Keys::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--pool"), "{err}");
        assert!(
            with(&["--disabled-pool", "10.0.0.0/24"])
                .unwrap_err()
                .to_string()
                .contains("overlap")
        );
    }

    #[test]
    fn unknown_file_key_is_rejected() {
        assert!(toml::from_str::<Keys>("poolz = []").is_err());
    }

    fn base() -> Vec<&'static str> {
        vec!["--node-name", "n1", "--pool", "10.0.0.0/16"]
    }

    fn with(extra: &[&'static str]) -> Result<AgentConfig, ConfigError> {
        let mut args = base();
        args.extend_from_slice(extra);
        AgentConfig::merge(flags(&args), Keys::default())
    }

    /// One key's precedence: its value with neither a flag nor the file, with the file
    /// alone, and with the flag over the file.
    struct Precedence {
        flag: &'static [&'static str],
        file: &'static str,
        get: fn(&AgentConfig) -> String,
        default: &'static str,
        from_file: &'static str,
        from_flag: &'static str,
    }

    /// Every key that is both a flag and a file key (`node_name` and `pools`, which
    /// `base` gives, have tests of their own).
    const PRECEDENCE: &[Precedence] = &[
        Precedence {
            flag: &["--state-dir", "/flag"],
            file: r#"state_dir = "/file""#,
            get: |c| c.state_dir.display().to_string(),
            default: strait_api::DEFAULT_STATE_DIR,
            from_file: "/file",
            from_flag: "/flag",
        },
        Precedence {
            flag: &["--socket", "/flag.sock"],
            file: r#"socket = "/file.sock""#,
            get: |c| c.socket.display().to_string(),
            default: strait_api::DEFAULT_SOCKET,
            from_file: "/file.sock",
            from_flag: "/flag.sock",
        },
        Precedence {
            flag: &["--block-prefix-v4", "24"],
            file: "block_prefix_v4 = 25",
            get: |c| c.block_prefix_v4.to_string(),
            default: "26",
            from_file: "25",
            from_flag: "24",
        },
        Precedence {
            flag: &["--block-prefix-v6", "120"],
            file: "block_prefix_v6 = 121",
            get: |c| c.block_prefix_v6.to_string(),
            default: "122",
            from_file: "121",
            from_flag: "120",
        },
        Precedence {
            flag: &["--mtu", "1450"],
            file: "mtu = 1400",
            get: |c| format!("{:?}", c.mtu),
            default: "None",
            from_file: "Some(1400)",
            from_flag: "Some(1450)",
        },
        Precedence {
            flag: &["--metrics-addr", "127.0.0.1:9200"],
            file: r#"metrics_addr = "127.0.0.1:9100""#,
            get: |c| format!("{:?}", c.metrics_addr),
            default: "None",
            from_file: "Some(127.0.0.1:9100)",
            from_flag: "Some(127.0.0.1:9200)",
        },
        Precedence {
            flag: &["--gc-grace-secs", "30"],
            file: "gc_grace_secs = 60",
            get: |c| c.gc_grace_secs.to_string(),
            default: "900",
            from_file: "60",
            from_flag: "30",
        },
        Precedence {
            flag: &["--etcd-endpoints", "http://flag:2379"],
            file: r#"etcd_endpoints = ["http://file:2379"]"#,
            get: |c| c.etcd_endpoints.join(","),
            default: "",
            from_file: "http://file:2379",
            from_flag: "http://flag:2379",
        },
        Precedence {
            flag: &["--fabric", "host-gw"],
            file: r#"fabric = "vxlan""#,
            get: |c| c.fabric.to_string(),
            default: "none",
            from_file: "vxlan",
            from_flag: "host-gw",
        },
        Precedence {
            flag: &["--underlay-iface", "eth1"],
            file: r#"underlay_iface = "eth0""#,
            get: |c| format!("{:?}", c.underlay_iface),
            default: "None",
            from_file: r#"Some("eth0")"#,
            from_flag: r#"Some("eth1")"#,
        },
        Precedence {
            flag: &["--underlay-addr", "10.0.0.1"],
            file: r#"underlay_addrs = ["10.0.0.2"]"#,
            get: |c| format!("{:?}", c.underlay_addrs),
            default: "[]",
            from_file: "[10.0.0.2]",
            from_flag: "[10.0.0.1]",
        },
        Precedence {
            flag: &["--vxlan-vni", "2"],
            file: "vxlan_vni = 1",
            get: |c| c.vxlan_vni.to_string(),
            default: "4096",
            from_file: "1",
            from_flag: "2",
        },
        Precedence {
            flag: &["--vxlan-port", "4791"],
            file: "vxlan_port = 4790",
            get: |c| c.vxlan_port.to_string(),
            default: "4789",
            from_file: "4790",
            from_flag: "4791",
        },
        Precedence {
            flag: &["--fast-path", "off"],
            file: r#"fast_path = "on""#,
            get: |c| format!("{:?}", c.fast_path),
            default: "Auto",
            from_file: "On",
            from_flag: "Off",
        },
        Precedence {
            flag: &["--policy-mode", "enforce"],
            file: r#"policy_mode = "audit""#,
            get: |c| c.policy_mode.to_string(),
            default: "enforce",
            from_file: "audit",
            from_flag: "enforce",
        },
        Precedence {
            flag: &["--bpf-dir", "/sys/fs/bpf/flag"],
            file: r#"bpf_dir = "/sys/fs/bpf/file""#,
            get: |c| c.bpf_dir.display().to_string(),
            default: "/sys/fs/bpf/strait",
            from_file: "/sys/fs/bpf/file",
            from_flag: "/sys/fs/bpf/flag",
        },
        Precedence {
            flag: &["--proc-sys-dir", "/flag/proc/sys"],
            file: r#"proc_sys_dir = "/host/proc/sys""#,
            get: |c| c.proc_sys_dir.display().to_string(),
            default: "/proc/sys",
            from_file: "/host/proc/sys",
            from_flag: "/flag/proc/sys",
        },
        Precedence {
            flag: &["--cni-conf-dir", "/flag/net.d"],
            file: r#"cni_conf_dir = "/host/etc/cni/net.d""#,
            get: |c| c.cni.conf.display().to_string(),
            default: "/etc/cni/net.d",
            from_file: "/host/etc/cni/net.d",
            from_flag: "/flag/net.d",
        },
        Precedence {
            flag: &["--cni-bin-dir", "/flag/bin"],
            file: r#"cni_bin_dir = "/host/opt/cni/bin:/host/usr/lib/cni""#,
            get: |c| format!("{:?}", c.cni.bins),
            default: r#"["/opt/cni/bin", "/usr/lib/cni"]"#,
            from_file: r#"["/host/opt/cni/bin", "/host/usr/lib/cni"]"#,
            from_flag: r#"["/flag/bin"]"#,
        },
        Precedence {
            flag: &["--ipsec-gateway", "false"],
            file: "ipsec_gateway = true",
            get: |c| c.ipsec.gateway.to_string(),
            default: "false",
            from_file: "true",
            from_flag: "false",
        },
        Precedence {
            flag: &["--node-lease-ttl-secs", "5"],
            file: "node_lease_ttl_secs = 30",
            get: |c| c.node_lease_ttl_secs.to_string(),
            default: "15",
            from_file: "30",
            from_flag: "5",
        },
        Precedence {
            flag: &["--block-reclaim-grace-secs", "5"],
            file: "block_reclaim_grace_secs = 60",
            get: |c| c.block_reclaim_grace_secs.to_string(),
            default: "900",
            from_file: "60",
            from_flag: "5",
        },
        Precedence {
            flag: &["--bgp-asn", "65002"],
            file: "bgp_asn = 65001",
            get: |c| c.bgp.asn.to_string(),
            default: "64512",
            from_file: "65001",
            from_flag: "65002",
        },
        Precedence {
            flag: &["--bgp-role", "client"],
            file: r#"bgp_role = "rr""#,
            get: |c| format!("{:?}", c.bgp.role),
            default: "Client",
            from_file: "Rr",
            from_flag: "Client",
        },
        Precedence {
            flag: &["--bgp-cluster-id", "10.0.0.101"],
            file: "bgp_role = \"rr\"\nbgp_cluster_id = \"10.0.0.100\"",
            get: |c| format!("{:?}", c.bgp.cluster_id),
            default: "None",
            from_file: "Some(10.0.0.100)",
            from_flag: "Some(10.0.0.101)",
        },
        Precedence {
            flag: &["--bgp-router-id", "10.0.0.2"],
            file: r#"bgp_router_id = "10.0.0.1""#,
            get: |c| format!("{:?}", c.bgp.router_id),
            default: "None",
            from_file: "Some(10.0.0.1)",
            from_flag: "Some(10.0.0.2)",
        },
        Precedence {
            flag: &["--bgp-port", "2179"],
            file: "bgp_port = 1179",
            get: |c| c.bgp.port.to_string(),
            default: "179",
            from_file: "1179",
            from_flag: "2179",
        },
        Precedence {
            flag: &["--bgp-bfd"],
            file: "bgp_bfd = false",
            get: |c| c.bgp.bfd.to_string(),
            default: "true",
            from_file: "false",
            from_flag: "true",
        },
        Precedence {
            flag: &["--no-bgp-bfd"],
            file: "bgp_bfd = true",
            get: |c| c.bgp.bfd.to_string(),
            default: "true",
            from_file: "true",
            from_flag: "false",
        },
        Precedence {
            flag: &["--bgp-node-mesh"],
            file: "bgp_node_mesh = false",
            get: |c| c.bgp.node_mesh.to_string(),
            default: "true",
            from_file: "false",
            from_flag: "true",
        },
        Precedence {
            flag: &["--no-bgp-node-mesh"],
            file: "bgp_node_mesh = true",
            get: |c| c.bgp.node_mesh.to_string(),
            default: "true",
            from_file: "true",
            from_flag: "false",
        },
        Precedence {
            flag: &["--bgp-graceful-restart-secs", "60"],
            file: "bgp_graceful_restart_secs = 30",
            get: |c| c.bgp.graceful_restart_secs.to_string(),
            default: "120",
            from_file: "30",
            from_flag: "60",
        },
    ];

    #[test]
    fn every_key_flag_over_file_over_default() {
        for case in PRECEDENCE {
            let key = case.file;
            let file: Keys = toml::from_str(key).unwrap_or_else(|e| panic!("{key}: {e}"));
            let neither = with(&[]).unwrap();
            assert_eq!((case.get)(&neither), case.default, "{key}: the default");
            let file_only = AgentConfig::merge(flags(&base()), file.clone())
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!((case.get)(&file_only), case.from_file, "{key}: the file");
            let args = [base(), case.flag.to_vec()].concat();
            let both = AgentConfig::merge(flags(&args), file)
                .unwrap_or_else(|e| panic!("{key} with {:?}: {e}", case.flag));
            assert_eq!(
                (case.get)(&both),
                case.from_flag,
                "{key}: {:?} wins over the file",
                case.flag
            );
        }
    }

    #[test]
    fn a_bare_ipsec_gateway_flag_makes_the_node_a_gateway() {
        assert!(with(&["--ipsec-gateway"]).unwrap().ipsec.gateway);
        assert!(!with(&[]).unwrap().ipsec.gateway);
    }

    #[test]
    fn reauthentication_is_off_unless_asked_and_never_more_often_than_a_minute() {
        assert_eq!(with(&[]).unwrap().ipsec.reauth, None);
        assert_eq!(
            with(&["--ipsec-reauth-secs", "3600"]).unwrap().ipsec.reauth,
            Some(Duration::from_secs(3600))
        );
        let e = with(&["--ipsec-reauth-secs", "5"]).unwrap_err().to_string();
        assert!(e.contains("at least 60"), "{e}");
    }

    #[test]
    fn node_name_and_pools_from_the_file_alone() {
        let file: Keys = toml::from_str(
            r#"node_name = "from-file"
               pools = ["10.1.0.0/16", "fd00:1::/48"]"#,
        )
        .unwrap();
        let cfg = AgentConfig::merge(flags(&[]), file).unwrap();
        assert_eq!(cfg.node_name, "from-file");
        assert_eq!(
            cfg.pools,
            vec![
                "10.1.0.0/16".parse::<IpNet>().unwrap(),
                "fd00:1::/48".parse().unwrap()
            ]
        );
    }

    #[test]
    fn file_only_keys_come_from_the_file_and_have_no_flag() {
        let cfg = with(&[]).unwrap();
        assert_eq!(
            (cfg.max_blocks_per_node, cfg.strict_affinity),
            (None, false)
        );
        let file: Keys = toml::from_str(
            r#"max_blocks_per_node = 8
               strict_affinity = true"#,
        )
        .unwrap();
        let cfg = AgentConfig::merge(flags(&base()), file).unwrap();
        assert_eq!(
            (cfg.max_blocks_per_node, cfg.strict_affinity),
            (Some(8), true)
        );
        for flag in ["--max-blocks-per-node", "--strict-affinity"] {
            assert!(
                Flags::try_parse_from(["straitd", flag, "1"]).is_err(),
                "{flag}"
            );
        }
    }

    #[test]
    fn command_line_only_spellings_are_not_file_keys() {
        for text in [
            r#"config = "/etc/strait.toml""#,
            "no_bgp_bfd = true",
            "no_bgp_node_mesh = true",
            r#"pool = ["10.0.0.0/16"]"#,
            r#"disabled_pool = ["10.0.0.0/16"]"#,
            r#"underlay_addr = ["10.0.0.1"]"#,
        ] {
            assert!(toml::from_str::<Keys>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn cluster_defaults_are_the_documented_ones() {
        let cfg = with(&[]).unwrap();
        assert!(cfg.etcd_endpoints.is_empty());
        assert!(!cfg.uses_etcd());
        assert_eq!(cfg.fabric, FabricMode::None);
        assert_eq!(cfg.underlay_iface, None);
        assert!(cfg.underlay_addrs.is_empty());
        assert_eq!(cfg.vxlan_vni, 4096);
        assert_eq!(cfg.vxlan_port, 4789);
        assert_eq!(cfg.node_lease_ttl_secs, 15);
        assert_eq!(cfg.block_reclaim_grace_secs, 900);
        assert!(cfg.store_description().starts_with("embedded:"));
        assert!(cfg.warnings().is_empty());
    }

    #[test]
    fn cluster_flags_parse() {
        let cfg = with(&[
            "--etcd-endpoints",
            "http://10.0.0.254:2379,http://10.0.0.253:2379",
            "--etcd-endpoints",
            "https://e3:2379",
            "--fabric",
            "vxlan",
            "--underlay-iface",
            "eth1",
            "--underlay-addr",
            "10.0.0.1",
            "--underlay-addr",
            "fd00::1",
            "--vxlan-vni",
            "77",
            "--vxlan-port",
            "8472",
            "--node-lease-ttl-secs",
            "3",
            "--block-reclaim-grace-secs",
            "5",
        ])
        .unwrap();
        assert_eq!(
            cfg.etcd_endpoints,
            [
                "http://10.0.0.254:2379",
                "http://10.0.0.253:2379",
                "https://e3:2379"
            ]
        );
        assert_eq!(
            cfg.store_description(),
            "etcd:http://10.0.0.254:2379,http://10.0.0.253:2379,https://e3:2379"
        );
        assert_eq!(cfg.fabric, FabricMode::Vxlan);
        assert_eq!(cfg.underlay_iface.as_deref(), Some("eth1"));
        assert_eq!(
            cfg.underlay_addrs,
            vec![
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
        assert_eq!((cfg.vxlan_vni, cfg.vxlan_port), (77, 8472));
        assert_eq!(cfg.node_lease_ttl_secs, 3);
        assert_eq!(cfg.block_reclaim_grace_secs, 5);
        assert!(cfg.warnings().is_empty());
        assert_eq!(
            with(&["--fabric", "host-gw"]).unwrap().fabric,
            FabricMode::HostGw
        );
    }

    #[test]
    fn cluster_keys_from_the_file() {
        let file: Keys = toml::from_str(
            r#"pools = ["10.1.0.0/16"]
               etcd_endpoints = ["http://127.0.0.1:2379"]
               fabric = "host-gw"
               underlay_iface = "eth0"
               underlay_addrs = ["192.168.1.5"]
               vxlan_vni = 1
               vxlan_port = 4790
               node_lease_ttl_secs = 30
               block_reclaim_grace_secs = 60"#,
        )
        .unwrap();
        let cfg = AgentConfig::merge(flags(&base()), file.clone()).unwrap();
        assert_eq!(cfg.etcd_endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(cfg.fabric, FabricMode::HostGw);
        assert_eq!(cfg.underlay_iface.as_deref(), Some("eth0"));
        assert_eq!(
            cfg.underlay_addrs,
            vec!["192.168.1.5".parse::<IpAddr>().unwrap()]
        );
        assert_eq!((cfg.vxlan_vni, cfg.vxlan_port), (1, 4790));
        assert_eq!(
            (cfg.node_lease_ttl_secs, cfg.block_reclaim_grace_secs),
            (30, 60)
        );
        // Flags still win.
        let cfg = AgentConfig::merge(
            flags(&["--node-name", "n1", "--fabric", "none", "--vxlan-vni", "9"]),
            file,
        )
        .unwrap();
        assert_eq!(cfg.fabric, FabricMode::None);
        assert_eq!(cfg.vxlan_vni, 9);
    }

    #[test]
    fn fast_path_mode_from_flag_and_file() {
        use strait_api::FastPathMode;
        assert_eq!(with(&[]).unwrap().fast_path, FastPathMode::Auto);
        assert_eq!(
            with(&["--fast-path", "off"]).unwrap().fast_path,
            FastPathMode::Off
        );
        let file: Keys = toml::from_str(r#"fast_path = "on""#).unwrap();
        let cfg = AgentConfig::merge(flags(&base()), file.clone()).unwrap();
        assert_eq!(cfg.fast_path, FastPathMode::On);
        let mut args = base();
        args.extend_from_slice(&["--fast-path", "off"]);
        let cfg = AgentConfig::merge(flags(&args), file).unwrap();
        assert_eq!(cfg.fast_path, FastPathMode::Off, "the flag wins");
        let bad = Flags::try_parse_from(["straitd", "--fast-path", "fast"]).unwrap_err();
        assert!(bad.to_string().contains("use auto, on or off"), "{bad}");
        assert!(toml::from_str::<Keys>(r#"fast_path = "yes""#).is_err());
    }

    #[test]
    fn bad_cluster_settings_are_clear_errors() {
        let err = |args: &[&'static str]| with(args).unwrap_err().to_string();
        assert!(err(&["--vxlan-vni", "16777216"]).contains("24 bits"));
        assert!(with(&["--vxlan-vni", "16777215"]).is_ok());
        assert!(err(&["--vxlan-port", "0"]).contains("vxlan_port 0"));
        assert!(err(&["--node-lease-ttl-secs", "2"]).contains("minimum of 3"));
        assert!(err(&["--etcd-endpoints", "10.0.0.1:2379"]).contains("http://host:port"));
        assert!(err(&["--etcd-endpoints", "http://"]).contains("http://host:port"));
        assert!(
            err(&["--underlay-addr", "10.0.0.1", "--underlay-addr", "10.0.0.2"])
                .contains("at most one per family")
        );
        assert!(err(&["--underlay-addr", "127.0.0.1"]).contains("unicast"));
        assert!(err(&["--underlay-iface", "a/b"]).contains("interface name"));
        assert!(err(&["--underlay-iface", "sixteen-chars-xx"]).contains("interface name"));
        // Unknown fabrics are refused by the parser itself.
        let mut args = vec!["straitd"];
        args.extend(base());
        args.extend(["--fabric", "gre"]);
        assert!(Flags::try_parse_from(args).is_err());
        assert!(toml::from_str::<Keys>(r#"fabric = "gre""#).is_err());
    }

    #[test]
    fn a_fabric_on_the_embedded_store_is_allowed_with_a_warning() {
        let cfg = with(&["--fabric", "vxlan"]).unwrap();
        let warnings = cfg.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("--etcd-endpoints"), "{warnings:?}");
    }

    #[test]
    fn bad_node_name_and_mtu_rejected() {
        assert!(
            AgentConfig::merge(
                flags(&["--node-name", "a/b", "--pool", "10.0.0.0/8"]),
                Keys::default()
            )
            .is_err()
        );
        assert!(
            AgentConfig::merge(
                flags(&["--node-name", "a", "--pool", "10.0.0.0/8", "--mtu", "100"]),
                Keys::default()
            )
            .is_err()
        );
    }

    #[test]
    fn bgp_defaults_are_the_documented_ones() {
        let cfg = with(&["--fabric", "bgp", "--etcd-endpoints", "http://e:2379"]).unwrap();
        assert_eq!(cfg.fabric, FabricMode::Bgp);
        assert_eq!(cfg.bgp.asn, 64512);
        assert_eq!(cfg.bgp.role, strait_api::bgp::BgpRole::Client);
        assert_eq!((cfg.bgp.cluster_id, cfg.bgp.router_id), (None, None));
        assert_eq!(cfg.bgp.port, 179);
        assert!(cfg.bgp.bfd);
        assert_eq!(cfg.bgp.graceful_restart_secs, 120);
        assert!(cfg.warnings().is_empty(), "{:?}", cfg.warnings());
    }

    #[test]
    fn bgp_flags_win_over_the_file() {
        let file: Keys = toml::from_str(
            r#"pools = ["10.1.0.0/16"]
               fabric = "bgp"
               bgp_asn = 65001
               bgp_role = "rr"
               bgp_cluster_id = "10.0.0.100"
               bgp_port = 1179
               bgp_bfd = false
               bgp_graceful_restart_secs = 30"#,
        )
        .unwrap();
        let cfg = AgentConfig::merge(
            flags(&[
                "--node-name",
                "n1",
                "--bgp-asn",
                "4200000001",
                "--bgp-router-id",
                "10.0.0.1",
            ]),
            file.clone(),
        )
        .unwrap();
        assert_eq!(cfg.bgp.asn, 4_200_000_001, "4-octet AS");
        assert_eq!(cfg.bgp.role, strait_api::bgp::BgpRole::Rr);
        assert_eq!(cfg.bgp.cluster_id, Some("10.0.0.100".parse().unwrap()));
        assert_eq!(cfg.bgp.router_id, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(cfg.bgp.port, 1179);
        assert!(!cfg.bgp.bfd);
        assert_eq!(cfg.bgp.graceful_restart_secs, 30);
        let cfg = AgentConfig::merge(flags(&["--node-name", "n1", "--bgp-bfd"]), file).unwrap();
        assert!(cfg.bgp.bfd, "--bgp-bfd wins over bgp_bfd = false");
        assert!(!with(&["--no-bgp-bfd"]).unwrap().bgp.bfd);
    }

    #[test]
    fn the_node_mesh_is_on_unless_turned_off() {
        assert!(with(&["--fabric", "bgp"]).unwrap().bgp.node_mesh);
        assert!(!with(&["--no-bgp-node-mesh"]).unwrap().bgp.node_mesh);
        let file: Keys = toml::from_str("bgp_node_mesh = false").unwrap();
        let cfg = AgentConfig::merge(flags(&base()), file.clone()).unwrap();
        assert!(!cfg.bgp.node_mesh);
        let cfg =
            AgentConfig::merge(flags(&[base(), vec!["--bgp-node-mesh"]].concat()), file).unwrap();
        assert!(
            cfg.bgp.node_mesh,
            "--bgp-node-mesh wins over bgp_node_mesh = false"
        );
    }

    #[test]
    fn bad_bgp_settings_are_clear_errors() {
        let err = |extra: &[&'static str]| with(extra).unwrap_err().to_string();
        assert!(err(&["--bgp-asn", "0"]).contains("reserved"));
        assert!(err(&["--bgp-asn", "23456"]).contains("reserved"));
        let e = err(&["--bgp-role", "rr", "--bgp-cluster-id", "fd00::1"]);
        assert!(e.contains("IPv4"), "{e}");
        let e = err(&["--bgp-cluster-id", "10.0.0.1"]);
        assert!(e.contains("--bgp-role rr"), "{e}");
        assert!(err(&["--bgp-router-id", "0.0.0.0"]).contains("IPv4"));
        assert!(err(&["--bgp-port", "0"]).contains("bgp_port"));
        assert!(err(&["--bgp-graceful-restart-secs", "5000"]).contains("4095"));
        assert!(Flags::try_parse_from(["straitd", "--bgp-role", "boss"]).is_err());
        assert!(toml::from_str::<Keys>("bgp_role = \"boss\"").is_err());
    }

    #[test]
    fn bgp_settings_without_the_bgp_fabric_are_a_warning() {
        let cfg = with(&["--bgp-asn", "65001"]).unwrap();
        assert!(
            cfg.warnings().iter().any(|w| w.contains("--fabric bgp")),
            "{:?}",
            cfg.warnings()
        );
        let cfg = with(&["--fabric", "bgp"]).unwrap();
        assert!(
            cfg.warnings()
                .iter()
                .any(|w| w.contains("--etcd-endpoints")),
            "like the other fabrics, bgp without etcd sees no other host"
        );
    }
}
