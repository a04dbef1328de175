//! Request and response bodies of the agent API. Field names are snake_case JSON.
//!
//! Errors from the agent carry a CNI error code (spec §"Error"), so the CNI plugin can
//! print them unchanged and netctl can show the same number an operator sees in runtime
//! logs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
pub use strait_policy::view::NamedPort;

/// CNI error codes the agent and the plugin use. 1–99 are the spec's own; 100+ are
/// strait's.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available (agent or store unreachable, pools exhausted).
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: the plugin is available but the data plane is degraded.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// A generic internal failure of the agent.
    pub const INTERNAL: u32 = 100;
    /// No free address in the pools (or in the requested pool).
    pub const POOL_EXHAUSTED: u32 = 101;
    /// The (containerID, ifname) attachment already exists.
    pub const DUPLICATE_ATTACHMENT: u32 = 102;
    /// A statically requested address is taken or outside every pool.
    pub const STATIC_IP_UNAVAILABLE: u32 = 103;
    /// The network namespace is unusable (missing, or the host's own).
    pub const BAD_NETNS: u32 = 104;
    /// CHECK found the attachment differs from what was set up.
    pub const CHECK_FAILED: u32 = 105;
    /// The store is unreachable.
    pub const STORE_UNAVAILABLE: u32 = 106;
    /// The request is for a part this agent does not run (e.g. `netctl bgp` on an
    /// agent whose fabric is not bgp).
    pub const NOT_CONFIGURED: u32 = 107;
    /// The object is another node's, and only that node's agent changes it (`netctl
    /// endpoint label` of an endpoint elsewhere): the message names the node.
    pub const OTHER_NODE: u32 = 108;
    /// A host port (runtimeConfig `portMappings`) another endpoint of the node, or
    /// a service's node port, holds: the message names the holder.
    pub const HOST_PORT_TAKEN: u32 = 109;
    /// The object mirrors one of the Kubernetes API server's, which owns it: change it
    /// with kubectl.
    pub const OWNED_BY_KUBERNETES: u32 = 110;
}

/// Error body returned by the agent with a non-2xx status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct ApiError {
    /// CNI error code (see [`code`]).
    pub code: u32,
    /// One-line human message.
    pub message: String,
    /// Longer context, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl ApiError {
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
}

/// Identity of one attachment: the CNI (containerID, ifname) pair, scoped to a network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

/// CNI ADD, as the plugin forwards it once it has validated env and config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddRequest {
    /// The network name from the CNI config (`name`).
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    /// Path of the container's network namespace (CNI_NETNS).
    pub netns: String,
    /// Statically requested addresses (`args.cni.ips`, runtimeConfig `ips`, `CNI_ARGS` `IP=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpAddr>,
    /// Requested MAC of the container interface (runtimeConfig `mac`, `CNI_ARGS` `MAC=`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// MTU from the CNI config; the agent's own MTU applies when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The endpoint's namespace (`CNI_ARGS` `K8S_POD_NAMESPACE`, else `args.cni.namespace`);
    /// absent means [`DEFAULT_NAMESPACE`](strait_policy::ir::DEFAULT_NAMESPACE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod's name (`CNI_ARGS` `K8S_POD_NAME`): shown, never matched by policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The endpoint's labels (`args.cni.labels`), what policy selectors match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Ports the endpoint declares by name (runtimeConfig `portMappings` with a `name`,
    /// `args.cni.ports`), for policies that name a port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub named_ports: Vec<NamedPort>,
    /// An older plugin's way of saying the runtime asked for host ports without
    /// saying which: a chained `portmap` serves them with DNAT, so the container's
    /// replies must pass the host's conntrack and the fast path leaves its veth alone
    /// (docs/datapath.md). This plugin sends `port_mappings` instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_ports: bool,
    /// The host ports to serve (runtimeConfig `portMappings`), checked and held for
    /// this endpoint by the agent and served by its services datapath.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<crate::HostPort>,
}

/// One interface in an ADD result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceInfo {
    pub name: String,
    pub mac: String,
    /// Set for the container-side interface: the netns path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// One address in an ADD result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpInfo {
    /// Address with the prefix length the container sees (/32 or /128: routes go via
    /// the link-local gateway, as Calico does).
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into [`AddResponse::interfaces`].
    pub interface: usize,
}

/// One route in an ADD result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInfo {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// The agent's answer to ADD: what the plugin turns into a versioned CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddResponse {
    /// Host-side veth first, then the container interface.
    pub interfaces: Vec<InterfaceInfo>,
    pub ips: Vec<IpInfo>,
    pub routes: Vec<RouteInfo>,
    pub mtu: u32,
}

/// CNI DEL. `netns` is empty for containerd's second DEL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelRequest {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    #[serde(default)]
    pub netns: Option<String>,
}

/// CNI CHECK: verify the attachment is as ADD left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRequest {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    /// Addresses the runtime recorded from ADD (prevResult), if it sent them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_ips: Vec<IpNet>,
}

/// CNI STATUS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {
    pub network: String,
}

/// CNI GC: release every reservation of `network` not in `valid_attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRequest {
    pub network: String,
    pub valid_attachments: Vec<Attachment>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcResponse {
    /// Attachments whose addresses and interfaces were released.
    pub released: Vec<Attachment>,
    /// Failures the GC went past; it released everything else.
    pub errors: Vec<String>,
}

/// Readiness as `/readyz` and CNI STATUS see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    /// 0 when ready; otherwise the CNI STATUS code (50 or 51).
    pub code: u32,
    pub reasons: Vec<String>,
}

/// `netctl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub node: String,
    pub version: String,
    pub store: String,
    pub state_dir: String,
    pub uptime_secs: u64,
    pub mtu: u32,
    /// This node's endpoints; `None` while the agent cannot count them (starting, or
    /// its store unreachable: `readiness` says which).
    pub endpoints: Option<usize>,
    pub pools: Vec<IpNet>,
    pub readiness: Readiness,
    /// The eBPF forwarding fast path (docs/datapath.md); absent from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fast_path: Option<FastPathStatus>,
    /// IPsec: the cluster's mode, the datapath and its peers (docs/ipsec.md); absent
    /// from older agents and while the agent starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipsec: Option<IpsecSummary>,
}

/// `netctl status`'s IPsec line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpsecSummary {
    pub mode: crate::ipsec::IpsecMode,
    /// `userspace`, `kernel`, or `none` while nothing needs encryption.
    pub datapath: String,
    pub reason: Option<String>,
    pub peers: usize,
    /// Peers with an established IKE SA.
    pub peers_up: usize,
}

/// Whether container packets bypass the host's IP forwarding (`--fast-path`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FastPathMode {
    /// On, unless the host rewrites destinations (kube-proxy, portmap), whose replies
    /// need the host's conntrack.
    #[default]
    Auto,
    On,
    /// Nothing attached; a previous agent's programs are removed.
    Off,
}

impl FastPathMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FastPathMode::Auto => "auto",
            FastPathMode::On => "on",
            FastPathMode::Off => "off",
        }
    }
}

impl std::fmt::Display for FastPathMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FastPathMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(FastPathMode::Auto),
            "on" => Ok(FastPathMode::On),
            "off" => Ok(FastPathMode::Off),
            other => Err(format!(
                "unknown fast path mode {other:?}: use auto, on or off"
            )),
        }
    }
}

/// The fast path as `netctl status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastPathStatus {
    pub mode: FastPathMode,
    /// Whether packets take it now.
    pub active: bool,
    /// Why it is not active (or the mode's own reason), for the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The fabric device whose ingress it is attached to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fabric_device: Option<String>,
    /// Container veths it is attached to.
    pub endpoints: usize,
    /// Other nodes' blocks it sends straight into the fabric device (vxlan).
    #[serde(default)]
    pub tunnels: usize,
    /// Packets redirected to the fabric device, to a local container, and handed to
    /// the kernel's forwarding, since this agent loaded the programs.
    pub to_fabric: u64,
    pub to_endpoint: u64,
    pub to_stack: u64,
    /// Every counter of the programs by reason (`fwd_fabric`, `pass_ttl`, ...;
    /// docs/datapath.md), including the packets `to_stack` leaves out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_reason: BTreeMap<String, u64>,
}

/// `netctl fastpath`: the fast path's maps as the kernel holds them, each entry beside
/// what the agent wants there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastPathMaps {
    /// `strait_fp_endpoints`: local addresses → veth and MACs.
    pub endpoints: Vec<FastPathEntry>,
    /// `strait_fp_tunnels`: other nodes' blocks (and borrowed addresses) → VTEP MAC.
    pub tunnels: Vec<FastPathEntry>,
}

impl FastPathMaps {
    /// Whether every entry is as wanted.
    pub fn in_sync(&self) -> bool {
        self.endpoints
            .iter()
            .chain(&self.tunnels)
            .all(|e| e.state == crate::routes::EntryState::Ok)
    }
}

/// One map entry: `ok` (in the kernel as wanted), `missing` (wanted, absent or
/// different: `value` is what is wanted) or `stale` (in the kernel, not wanted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastPathEntry {
    /// An address (endpoints) or a block (tunnels).
    pub key: IpNet,
    /// `ifindex 7 mac 02:.. gateway ee:..` or `vtep 0e:..`.
    pub value: String,
    pub state: crate::routes::EntryState,
}

/// An attachment as the agent records it (`endpoints/<node>/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Stable id: derived from (network, containerID, ifname).
    pub id: String,
    pub node: String,
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    /// Host-side veth name (`strait` + hash).
    pub host_ifname: String,
    /// Container-side MAC.
    pub mac: String,
    /// Host-side veth MAC (the gateway the container ARPs for).
    pub host_mac: String,
    pub ips: Vec<IpNet>,
    pub mtu: u32,
    /// Policy's namespace of the endpoint; `default` when the runtime named none.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The pod's name, as the runtime gave it (`K8S_POD_NAME`).
    #[serde(default)]
    pub pod: Option<String>,
    /// The endpoint's labels: from the runtime at ADD, changed by `netctl endpoint label`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Ports the endpoint declares by name.
    #[serde(default)]
    pub named_ports: Vec<NamedPort>,
    /// The policy identity of (namespace, labels), once the policy control plane has
    /// allocated it.
    #[serde(default)]
    pub identity: Option<u32>,
    /// The IPAM handle holding the addresses.
    pub handle: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// An older plugin said the runtime asked for host ports without saying which
    /// (a chained `portmap` serves them): the fast path leaves this veth alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_ports: bool,
    /// The host ports strait serves for this endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<crate::HostPort>,
}

/// [`DEFAULT_NAMESPACE`](strait_policy::ir::DEFAULT_NAMESPACE), for serde.
pub fn default_namespace() -> String {
    strait_policy::ir::DEFAULT_NAMESPACE.to_string()
}

/// `netctl ipam show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamView {
    pub pools: Vec<PoolView>,
    pub blocks: Vec<BlockView>,
}

/// One pool of `netctl ipam show`. The `u128` counts go on the wire as decimal
/// strings (`"1208925819614629174706176"`): an IPv6 pool holds more than 2^64
/// addresses, and JSON tools read numbers as doubles and round them. A number is read
/// too, as older agents sent them (rounded where a double cannot hold it exactly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolView {
    pub cidr: IpNet,
    pub block_prefix: u8,
    /// Addresses in the pool.
    #[serde(with = "count")]
    pub size: u128,
    /// Addresses IPAM can hand out: `size` less the pool's reserved edge addresses.
    /// 0 from an agent older than this field (use `size` then).
    #[serde(default, with = "count")]
    pub usable: u128,
    /// Addresses allocated.
    #[serde(with = "count")]
    pub used: u128,
    /// Blocks claimed / blocks the pool can hold.
    pub blocks_claimed: u64,
    #[serde(with = "count")]
    pub blocks_total: u128,
    /// Hands out no new address; its allocations stay (`--disabled-pool`). `false`
    /// from an agent older than this field.
    #[serde(default)]
    pub disabled: bool,
}

/// `u128` counts as decimal strings, read from a string or a number (see [`PoolView`]).
mod count {
    use std::fmt;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(n: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(n)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        d.deserialize_any(Count)
    }

    struct Count;

    impl Visitor<'_> for Count {
        type Value = u128;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a count as a decimal string or a number")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u128, E> {
            v.parse()
                .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u128, E> {
            Ok(u128::from(v))
        }

        fn visit_u128<E: de::Error>(self, v: u128) -> Result<u128, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u128, E> {
            u128::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        // An older agent's count above 2^64: JSON parsers hand it over as a double.
        // Powers of two (sizes, block totals) are exact there.
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u128, E> {
            if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(128) {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(v as u128)
            } else {
                Err(E::invalid_value(de::Unexpected::Float(v), &self))
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockView {
    pub cidr: IpNet,
    pub affinity: Option<String>,
    pub used: u32,
    pub size: u32,
    /// Its addresses held by nodes other than its affinity (borrowed), and by which.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lent: Vec<(IpAddr, String)>,
}

/// One finding of `netctl ipam check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IpamIssue {
    /// A handle holds addresses but its attachment is gone (no endpoint, netns gone or
    /// host interface gone) for longer than the grace period.
    LeakedHandle {
        handle: String,
        ips: Vec<IpAddr>,
        reason: String,
        age_secs: u64,
    },
    /// A block marks an address allocated to a handle that does not exist.
    OrphanAllocation {
        block: IpNet,
        ip: IpAddr,
        handle: String,
    },
    /// A handle names an address its block does not mark as its own.
    MissingAllocation { handle: String, ip: IpAddr },
    /// An endpoint record whose handle is gone.
    EndpointWithoutHandle { endpoint: String, handle: String },
    /// The same address is allocated to two handles.
    DuplicateIp { ip: IpAddr, handles: Vec<String> },
    /// A block no configured pool covers: its pool was removed or shrunk. DEL still
    /// releases its addresses; to drain it, give its pool back as a disabled pool.
    BlockOutsidePools {
        block: IpNet,
        affinity: Option<String>,
        used: u32,
    },
}

/// `netctl ipam check -o json` writes this; `netctl ipam release --from-report` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamReport {
    /// Store revision the report was taken at; release refuses a report whose objects
    /// changed since.
    pub revision: i64,
    pub grace_secs: u64,
    pub issues: Vec<IpamIssue>,
}

/// Release what a report found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub report: IpamReport,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseResponse {
    pub released: Vec<String>,
    pub skipped: Vec<String>,
}

/// How a host reaches other hosts' containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FabricMode {
    /// No inter-host routing (one host, or routes made by someone else).
    #[default]
    None,
    /// An overlay: one `strait.vxlan` device per host.
    Vxlan,
    /// Direct routes via peers' underlay addresses (one L2 segment).
    HostGw,
    /// A routed L3 fabric: every host runs a BGP speaker (docs/bgp.md).
    Bgp,
}

impl FabricMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FabricMode::None => "none",
            FabricMode::Vxlan => "vxlan",
            FabricMode::HostGw => "host-gw",
            FabricMode::Bgp => "bgp",
        }
    }
}

impl std::fmt::Display for FabricMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FabricMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(FabricMode::None),
            "vxlan" => Ok(FabricMode::Vxlan),
            "host-gw" => Ok(FabricMode::HostGw),
            "bgp" => Ok(FabricMode::Bgp),
            other => Err(format!(
                "unknown fabric {other:?}: use none, vxlan, host-gw or bgp"
            )),
        }
    }
}

/// A node of the cluster as it registers itself (`nodes/<node>`, bound to its lease).
/// See docs/cluster.md.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub underlay_v4: Option<std::net::Ipv4Addr>,
    pub underlay_v6: Option<std::net::Ipv6Addr>,
    pub fabric: FabricMode,
    /// MAC of the node's `strait.vxlan` device (vxlan fabric only).
    #[serde(default)]
    pub vtep_mac: Option<String>,
    #[serde(default)]
    pub vxlan_vni: Option<u32>,
    #[serde(default)]
    pub vxlan_port: Option<u16>,
    /// Addresses of the VXLAN device, from the node's own blocks.
    #[serde(default)]
    pub tunnel_v4: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    pub tunnel_v6: Option<std::net::Ipv6Addr>,
    pub agent_version: String,
    /// When this agent registered, seconds since the Unix epoch.
    pub started: u64,
    /// The node's BGP attributes (`--fabric bgp` only).
    #[serde(default)]
    pub bgp: Option<crate::bgp::NodeBgp>,
    /// The node's site (`--site`): which pairs encrypt under `ipsec mode cross-site`.
    #[serde(default = "crate::ipsec::default_site")]
    pub site: String,
    /// The node's IPsec identity; `None` from an agent older than IPsec.
    #[serde(default)]
    pub ipsec: Option<crate::ipsec::NodeIpsec>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6_pool() -> PoolView {
        PoolView {
            cidr: "fd00::/48".parse().unwrap(),
            block_prefix: 122,
            size: 1 << 80,
            usable: (1 << 80) - 1,
            used: 3,
            blocks_claimed: 1,
            blocks_total: 1 << 74,
            disabled: true,
        }
    }

    #[test]
    fn pool_counts_are_strings_no_json_tool_rounds() {
        let v = serde_json::to_value(v6_pool()).unwrap();
        assert_eq!(v["size"], "1208925819614629174706176");
        assert_eq!(v["usable"], "1208925819614629174706175");
        assert_eq!(v["used"], "3");
        assert_eq!(v["blocks_total"], "18889465931478580854784");
        assert_eq!(v["blocks_claimed"], 1);
        assert_eq!(v["disabled"], true);
        assert_eq!(serde_json::from_value::<PoolView>(v).unwrap(), v6_pool());
    }

    #[test]
    fn pool_counts_of_an_older_agent_are_numbers_and_still_read() {
        let old = r#"{"cidr":"fd00::/48","block_prefix":122,"size":1208925819614629174706176,
            "used":3,"blocks_claimed":1,"blocks_total":18889465931478580854784}"#;
        let p: PoolView = serde_json::from_str(old).unwrap();
        assert_eq!((p.size, p.used, p.blocks_total), (1 << 80, 3, 1 << 74));
        assert_eq!((p.usable, p.disabled), (0, false), "fields it did not send");
        assert!(
            serde_json::from_str::<PoolView>(&old.replace("\"used\":3", "\"used\":-3")).is_err()
        );
        assert!(
            serde_json::from_str::<PoolView>(&old.replace("\"used\":3", "\"used\":\"x\"")).is_err()
        );
    }
}
