//! Agent configuration: command-line flags and an optional TOML file with the same keys.
//! Flags win over the file; the file wins over defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use ipnet::IpNet;
use serde::Deserialize;

/// Defaults when neither a flag nor the file sets a value.
pub const DEFAULT_BLOCK_PREFIX_V4: u8 = 26;
pub const DEFAULT_BLOCK_PREFIX_V6: u8 = 122;
/// Leaked reservations are released only after this long (Calico's leakGracePeriod).
pub const DEFAULT_GC_GRACE_SECS: u64 = 15 * 60;

/// Command-line flags of `straitd`.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "straitd", version, about = "strait's per-host agent")]
pub struct Flags {
    /// This node's name in the cluster (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Directory for the embedded store and the pending-release queue.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Unix socket of the local API (CNI plugin, netctl); created with mode 0600.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// An address pool (IPv4 or IPv6 CIDR); repeat for several pools / dual stack.
    #[arg(long = "pool")]
    pub pools: Vec<IpNet>,
    /// Block size of IPv4 pools, as a prefix length.
    #[arg(long)]
    pub block_prefix_v4: Option<u8>,
    /// Block size of IPv6 pools, as a prefix length.
    #[arg(long)]
    pub block_prefix_v6: Option<u8>,
    /// Container interface MTU (default: the MTU of the interface with the default
    /// route, or 1500).
    #[arg(long)]
    pub mtu: Option<u32>,
    /// Serve Prometheus metrics on this TCP address (`/metrics`).
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Grace period before a leaked reservation is released by the agent's GC, seconds.
    #[arg(long)]
    pub gc_grace_secs: Option<u64>,
    /// TOML file with the same keys as the flags (snake_case, `pools = [...]`).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The TOML file. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub node_name: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub pools: Vec<IpNet>,
    pub block_prefix_v4: Option<u8>,
    pub block_prefix_v6: Option<u8>,
    pub max_blocks_per_node: Option<u32>,
    #[serde(default)]
    pub strict_affinity: bool,
    pub mtu: Option<u32>,
    pub metrics_addr: Option<SocketAddr>,
    pub gc_grace_secs: Option<u64>,
}

/// The resolved configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub node_name: String,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub pools: Vec<IpNet>,
    pub block_prefix_v4: u8,
    pub block_prefix_v6: u8,
    pub max_blocks_per_node: Option<u32>,
    pub strict_affinity: bool,
    /// None: detect at start.
    pub mtu: Option<u32>,
    pub metrics_addr: Option<SocketAddr>,
    pub gc_grace_secs: u64,
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
            None => FileConfig::default(),
        };
        Self::merge(flags, file)
    }

    fn merge(flags: Flags, file: FileConfig) -> Result<Self, ConfigError> {
        let node_name = match flags.node_name.or(file.node_name) {
            Some(n) => n,
            None => hostname()?,
        };
        validate_node_name(&node_name)?;
        let pools = if flags.pools.is_empty() {
            file.pools
        } else {
            flags.pools
        };
        if pools.is_empty() {
            return Err(ConfigError::Invalid(
                "no address pool: give --pool CIDR (repeatable) or `pools` in the config file"
                    .into(),
            ));
        }
        let mtu = flags.mtu.or(file.mtu);
        if let Some(m) = mtu
            && !(576..=65535).contains(&m)
        {
            return Err(ConfigError::Invalid(format!(
                "mtu {m} out of range 576..=65535"
            )));
        }
        Ok(Self {
            node_name,
            state_dir: flags
                .state_dir
                .or(file.state_dir)
                .unwrap_or_else(|| strait_api::DEFAULT_STATE_DIR.into()),
            socket: flags
                .socket
                .or(file.socket)
                .unwrap_or_else(|| strait_api::DEFAULT_SOCKET.into()),
            pools,
            block_prefix_v4: flags
                .block_prefix_v4
                .or(file.block_prefix_v4)
                .unwrap_or(DEFAULT_BLOCK_PREFIX_V4),
            block_prefix_v6: flags
                .block_prefix_v6
                .or(file.block_prefix_v6)
                .unwrap_or(DEFAULT_BLOCK_PREFIX_V6),
            max_blocks_per_node: file.max_blocks_per_node,
            strict_affinity: file.strict_affinity,
            mtu,
            metrics_addr: flags.metrics_addr.or(file.metrics_addr),
            gc_grace_secs: flags
                .gc_grace_secs
                .or(file.gc_grace_secs)
                .unwrap_or(DEFAULT_GC_GRACE_SECS),
        })
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

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
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
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut v = vec!["straitd"];
        v.extend_from_slice(args);
        Flags::parse_from(v)
    }

    #[test]
    fn flags_win_over_file() {
        let file: FileConfig = toml::from_str(
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
        let err = AgentConfig::merge(flags(&["--node-name", "n1"]), FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("--pool"), "{err}");
    }

    #[test]
    fn unknown_file_key_is_rejected() {
        assert!(toml::from_str::<FileConfig>("poolz = []").is_err());
    }

    #[test]
    fn bad_node_name_and_mtu_rejected() {
        assert!(
            AgentConfig::merge(
                flags(&["--node-name", "a/b", "--pool", "10.0.0.0/8"]),
                FileConfig::default()
            )
            .is_err()
        );
        assert!(
            AgentConfig::merge(
                flags(&["--node-name", "a", "--pool", "10.0.0.0/8", "--mtu", "100"]),
                FileConfig::default()
            )
            .is_err()
        );
    }
}
