//! The Docker plugin: strait as dockerd's remote network driver and IPAM driver
//! (libnetwork's plugin protocol, [`strait_api::docker`]), served on its own socket
//! (`--docker-plugin`, `/run/docker/plugins/strait.sock`).
//!
//! It is the same agent, not a second data plane: a Docker endpoint is an ordinary
//! attachment with an endpoint record, built by the attacher's hand-over path
//! ([`crate::attach::handover`]), so IPAM, the fabric, policy, the fast path and
//! `netctl endpoints` treat Docker containers and CNI containers alike. What this
//! module owns is what Docker adds:
//!
//! * [`networks`]: Docker networks and IPAM pools kept in the store. dockerd never
//!   replays CreateNetwork or RequestPool after a plugin restarts, so everything it
//!   told us must outlive the agent.
//! * [`ipam`]: the IpamDriver calls, on strait's IPAM: pools are strait pools (or
//!   subnets inside them), addresses are reserved cluster-wide under `docker-ipam.`
//!   handles until Docker releases them.
//! * [`driver`]: the NetworkDriver calls: CreateEndpoint builds the veth with both
//!   ends on the host, Join answers the routed model (the address as Docker's IPAM
//!   gave it, the link-local gateway `169.254.1.1`/`fe80::1` on an on-link route, as
//!   CNI containers get), DeleteEndpoint removes it.
//! * [`ports`]: `-p` publishing, which a remote driver must do itself: a userspace
//!   proxy per mapping in the agent (no DNAT, so the fast path stays on).
//! * [`dockerd`]: asking dockerd for the names of networks and containers, which the
//!   protocol never carries.
//! * [`server`]: the HTTP side: decoding, `{"Err": …}` answers.

pub mod dockerd;
pub mod driver;
pub mod ipam;
pub mod networks;
pub mod ports;
pub mod server;

use std::path::PathBuf;
use std::sync::Arc;

use crate::attach::Attacher;
use crate::ipam::Ipam;
use crate::store::Store;

/// Where dockerd looks for plugins by name.
pub const DEFAULT_PLUGIN_SOCKET: &str = "/run/docker/plugins/strait.sock";
/// dockerd's API socket.
pub const DEFAULT_DOCKER_HOST: &str = "/var/run/docker.sock";

/// The plugin's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfig {
    pub socket: PathBuf,
    pub spec_file: Option<PathBuf>,
    pub docker_host: PathBuf,
}

/// Why a request was refused: the text goes to the Docker user as
/// `Error response from daemon: …`, so it says what to do, in Docker's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DockerError(pub String);

impl DockerError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

impl From<crate::attach::AttachError> for DockerError {
    fn from(e: crate::attach::AttachError) -> Self {
        Self(format!("strait: {e}"))
    }
}

impl From<crate::ipam::IpamError> for DockerError {
    fn from(e: crate::ipam::IpamError) -> Self {
        Self(format!("strait IPAM: {e}"))
    }
}

impl From<crate::store::StoreError> for DockerError {
    fn from(e: crate::store::StoreError) -> Self {
        Self(format!("strait store: {e}"))
    }
}

/// The plugin of one agent.
pub struct DockerPlugin {
    pub node: String,
    pub store: Arc<dyn Store>,
    pub attacher: Arc<Attacher>,
    pub ipam: Arc<Ipam>,
    pub networks: networks::Networks,
    pub ports: ports::Proxies,
    pub dockerd: dockerd::Dockerd,
}

impl DockerPlugin {
    pub fn new(cfg: &DockerConfig, attacher: Arc<Attacher>, store: Arc<dyn Store>) -> Arc<Self> {
        let node = attacher.config().node.clone();
        Arc::new(Self {
            networks: networks::Networks::new(store.clone(), node.clone()),
            ipam: attacher.ipam().clone(),
            node,
            store,
            attacher,
            ports: ports::Proxies::default(),
            dockerd: dockerd::Dockerd::new(cfg.docker_host.clone()),
        })
    }

    /// Puts back what must run while containers live: the port proxies of this node's
    /// Docker endpoints (they die with the agent).
    pub async fn restore(&self) {
        self.restore_ports().await;
    }
}
