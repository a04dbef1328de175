//! The boundary between policy's control plane and its eBPF datapath: what the
//! control plane asks of the kernel, as a trait, so the control plane's logic is
//! unit-tested against an in-memory fake and runs against the real maps (the
//! `datapath` module) in the agent and in privileged tests.
//!
//! Endpoints are named by the ifindex of their veth's host end: that is the device
//! the programs run on and the key the programs find an endpoint's policy by.

use std::collections::BTreeMap;

use ipnet::IpNet;
use strait_policy::tables::EndpointTables;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the policy programs: {0}")]
    Load(String),
    #[error("attaching policy to {ifname}: {reason}")]
    Attach { ifname: String, reason: String },
    /// A map is full or refused an entry: what was installed before stays.
    #[error("policy map {map}: {reason}")]
    Map { map: &'static str, reason: String },
}

/// What the kernel holds for one endpoint, read back for `netctl policy show` and
/// `trace` (and to compare with what the store says it should hold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub identity: u32,
    /// Bumped with every install: conntrack entries made under an older generation
    /// are evaluated again on their next packet.
    pub generation: u32,
    pub tables: EndpointTables,
}

/// One verdict the datapath reported (`netctl monitor`), before the control plane
/// adds names (endpoint, labels, policy and rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFlowEvent {
    /// `CLOCK_MONOTONIC` nanoseconds (bpf_ktime_get_ns).
    pub monotonic_ns: u64,
    /// The endpoint's veth (host end) the verdict was made for.
    pub ifindex: u32,
    pub direction: strait_policy::ir::Direction,
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: u8,
    pub src_identity: u32,
    pub dst_identity: u32,
    pub allowed: bool,
    pub audit: bool,
    /// The deciding rule (`None`: the default of an isolated or open endpoint).
    pub rule: Option<u32>,
    pub log_rule: Option<u32>,
}

pub trait Dataplane: Send + Sync {
    /// Makes enforcement live on a new endpoint's veth; CNI ADD calls it before it
    /// answers. Until [`Dataplane::install`] the endpoint has no entry and is
    /// treated as not isolated.
    fn attach(&self, ifname: &str, ifindex: u32) -> Result<(), DataplaneError>;
    /// Whether strait's programs are on `ifname` (this agent's or a previous one's).
    fn is_attached(&self, ifname: &str) -> Result<bool, DataplaneError>;
    /// Installs an endpoint's identity and tables, replacing what it had in one
    /// step: no packet sees a mix of old and new.
    fn install(
        &self,
        ifindex: u32,
        identity: u32,
        tables: &EndpointTables,
    ) -> Result<(), DataplaneError>;
    /// Removes an endpoint's entries (its veth is gone or going).
    fn remove(&self, ifindex: u32) -> Result<(), DataplaneError>;
    /// The endpoints that have entries, by ifindex (adoption after a restart).
    fn installed(&self) -> Result<Vec<u32>, DataplaneError>;
    fn read_back(&self, ifindex: u32) -> Result<Option<Installed>, DataplaneError>;
    /// Makes the ipcache (address or prefix → identity, for every endpoint and node
    /// of the cluster) equal to `wanted`, entry by entry.
    fn sync_ipcache(&self, wanted: &BTreeMap<IpNet, u32>) -> Result<(), DataplaneError>;
    fn read_ipcache(&self) -> Result<BTreeMap<IpNet, u32>, DataplaneError>;
}
