//! The configuration keys, each defined once: a field of [`Keys`] is a `--flag`
//! (clap, kebab-case) and a key of the TOML file (serde, the field's snake_case name),
//! optional in both. [`Flags`] is the command line: the keys plus what only a command
//! line has (`--config`, the `--no-…` switches). [`Keys::over`] layers one source over
//! another; defaults and validation come after, in [`super::AgentConfig`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser};
use ipnet::IpNet;
use serde::Deserialize;
use strait_api::bgp::BgpRole;
use strait_api::policy::PolicyMode;
use strait_api::{FabricMode, FastPathMode};

/// Command-line flags of `straitd`.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "straitd", version, about = "strait's per-host agent")]
pub struct Flags {
    #[command(flatten)]
    pub keys: Keys,
    /// No BFD on node-to-node sessions.
    #[arg(long, overrides_with = "bgp_bfd")]
    pub no_bgp_bfd: bool,
    /// No node-to-node mesh: nodes peer only with external peers (a ToR) and, where
    /// there are any, with route reflectors.
    #[arg(long, overrides_with = "bgp_node_mesh")]
    pub no_bgp_node_mesh: bool,
    /// TOML file with the same keys as the flags (snake_case, `pools = [...]`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the completion script for this shell and exit (the package's).
    #[arg(long, hide = true, value_enum, value_name = "SHELL")]
    pub generate_completion: Option<clap_complete::Shell>,
    /// Write the man page `straitd.8` into this directory and exit (the package's).
    #[arg(long, hide = true, value_name = "DIR")]
    pub generate_manpage: Option<PathBuf>,
}

impl Flags {
    /// The keys the command line gives, its `--no-…` switches folded in (clap keeps
    /// only the last of `--x` and `--no-x`).
    pub fn into_keys(self) -> Keys {
        let mut keys = self.keys;
        if self.no_bgp_bfd {
            keys.bgp_bfd = Some(false);
        }
        if self.no_bgp_node_mesh {
            keys.bgp_node_mesh = Some(false);
        }
        keys
    }
}

/// Every key of the agent's configuration, as one source (the flags, the file) gives
/// it: `None` or an empty list is "not given here". The doc comments are `--help`.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// This node's name in the cluster (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// This node's site (a data centre, a cloud region): with `netctl ipsec mode
    /// cross-site`, traffic between nodes of different sites is encrypted. Default
    /// `default`.
    #[arg(long)]
    pub site: Option<String>,
    /// This node is a gateway of its site: it connects the site to the external IPsec
    /// peers (`netctl ipsec peer`). Its node record says so (`netctl nodes`). Default
    /// false.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub ipsec_gateway: Option<bool>,
    /// Directory for the embedded store and the pending-release queue.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Unix socket of the local API (CNI plugin, netctl); created with mode 0600.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// An address pool (IPv4 or IPv6 CIDR); repeat for several pools / dual stack.
    #[arg(long = "pool")]
    #[serde(default)]
    pub pools: Vec<IpNet>,
    /// A pool that hands out no new address but keeps its allocations (Calico's
    /// `disabled: true`); repeatable. Drain a pool this way before removing it.
    #[arg(long = "disabled-pool")]
    #[serde(default)]
    pub disabled_pools: Vec<IpNet>,
    /// A pool of service virtual IPs (`netctl service apply` allocates from it and
    /// refuses cluster IPs outside it); repeatable, one per family at most. The same
    /// on every node. Default 10.96.0.0/12 and fd00:96::/108, each unless it overlaps
    /// an address pool.
    #[arg(long = "service-pool")]
    #[serde(default)]
    pub service_pools: Vec<IpNet>,
    /// The cgroup v2 directory whose processes (and those of the cgroups below it)
    /// reach services through the socket balancer: connects to a service address go
    /// straight to a backend. Default: the root of the cgroup v2 hierarchy (every
    /// process of the host and its containers); `none` turns it off.
    #[arg(long)]
    pub service_cgroup: Option<PathBuf>,
    /// Block size of IPv4 pools, as a prefix length.
    #[arg(long)]
    pub block_prefix_v4: Option<u8>,
    /// Block size of IPv6 pools, as a prefix length.
    #[arg(long)]
    pub block_prefix_v6: Option<u8>,
    /// Most blocks one node may hold with affinity, per family (file only).
    #[arg(skip)]
    pub max_blocks_per_node: Option<u32>,
    /// Never take addresses from another node's block (file only).
    #[arg(skip)]
    pub strict_affinity: Option<bool>,
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
    /// etcd v3 endpoints (`http://host:port`), comma-separated or repeated; without
    /// them the agent uses its embedded store (one host only).
    #[arg(long = "etcd-endpoints", value_delimiter = ',')]
    #[serde(default)]
    pub etcd_endpoints: Vec<String>,
    /// How this host reaches other hosts' containers: none, vxlan, host-gw or bgp.
    #[arg(long)]
    pub fabric: Option<FabricMode>,
    /// Interface the node's underlay addresses come from (default: the interface of
    /// the default route).
    #[arg(long)]
    pub underlay_iface: Option<String>,
    /// The node's underlay address, explicitly; repeat for IPv4 and IPv6.
    #[arg(long = "underlay-addr")]
    #[serde(default)]
    pub underlay_addrs: Vec<IpAddr>,
    /// VXLAN network identifier.
    #[arg(long)]
    pub vxlan_vni: Option<u32>,
    /// VXLAN UDP port.
    #[arg(long)]
    pub vxlan_port: Option<u16>,
    /// The eBPF forwarding fast path: auto (default: on unless this host DNATs:
    /// kube-proxy, portmap), on or off. See docs/datapath.md.
    #[arg(long)]
    pub fast_path: Option<FastPathMode>,
    /// Network policy: enforce (default) or audit (denies are recorded and counted,
    /// the packets pass). See docs/policy.md.
    #[arg(long)]
    pub policy_mode: Option<PolicyMode>,
    /// bpffs directory where policy's eBPF maps and programs are pinned, so they
    /// outlive the agent (default /sys/fs/bpf/strait).
    #[arg(long)]
    pub bpf_dir: Option<PathBuf>,
    /// Where the agent reads and writes the network sysctls (`<dir>/net/...`: forwarding,
    /// each pod veth's proxy_arp, what `netctl doctor` checks). Default /proc/sys; in a
    /// container whose /proc/sys is read-only, the host's /proc/sys/net mounted
    /// read-write at `<dir>/net` (the DaemonSet: /host/proc/sys). The namespace is
    /// always the opener's, whichever mount of procfs.
    #[arg(long)]
    pub proc_sys_dir: Option<PathBuf>,
    /// Where this node's runtimes look for CNI network configs, as the agent sees that
    /// directory: what `netctl doctor` checks (default /etc/cni/net.d; the DaemonSet
    /// mounts the node's at /host/etc/cni/net.d).
    #[arg(long)]
    pub cni_conf_dir: Option<PathBuf>,
    /// Where they look for CNI plugins, `:`-separated, as the agent sees them (default
    /// /opt/cni/bin:/usr/lib/cni).
    #[arg(long)]
    pub cni_bin_dir: Option<String>,
    /// Serve Docker's remote network and IPAM driver protocol (`docker network create
    /// -d strait`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub docker_plugin: Option<bool>,
    /// The Docker plugin's socket; dockerd finds plugins by name in
    /// /run/docker/plugins (default /run/docker/plugins/strait.sock).
    #[arg(long)]
    pub docker_plugin_socket: Option<PathBuf>,
    /// Also write a Docker plugin spec file here pointing at the socket (for a socket
    /// outside /run/docker/plugins, e.g. /etc/docker/plugins/strait.spec).
    #[arg(long)]
    pub docker_spec_file: Option<PathBuf>,
    /// dockerd's API socket, asked for the names of containers and networks
    /// (default /var/run/docker.sock).
    #[arg(long)]
    pub docker_host: Option<PathBuf>,
    /// Where this node's container addresses come from: `strait` (default: blocks of
    /// the pools, claimed as needed) or `kubernetes` (only inside the Node's
    /// `spec.podCIDRs`, which must lie in the pools; needs --kubeconfig or
    /// --kubernetes-in-cluster).
    #[arg(long)]
    pub ipam: Option<crate::config::IpamMode>,
    /// Watch this Kubernetes API server (a kubeconfig file): namespaces, network
    /// policies, this node's pods and its Node object. See docs/kubernetes.md.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Watch the API server of the cluster this agent runs in as a pod, with its
    /// service account's credentials (what the DaemonSet passes).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub kubernetes_in_cluster: Option<bool>,
    /// The ESP datapath: `auto` (the kernel's where it has ESP, else userspace),
    /// `kernel` or `userspace`.
    #[arg(long)]
    pub ipsec_datapath: Option<String>,
    /// Lifetime of a Child SA (ESP keys), seconds; it is rekeyed then (default 3600).
    #[arg(long)]
    pub ipsec_child_lifetime_secs: Option<u64>,
    /// Lifetime of an IKE SA, seconds (default 10800).
    #[arg(long)]
    pub ipsec_ike_lifetime_secs: Option<u64>,
    /// Rekey a Child SA once it carried this many bytes in one direction.
    #[arg(long)]
    pub ipsec_child_bytes: Option<u64>,
    /// Offer 64-bit extended sequence numbers on Child SAs (default true); `false`
    /// for peers or tools without ESN (strongSwan's userspace ESP, Wireshark 4.0).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub ipsec_esn: Option<bool>,
    /// Dead-peer detection after this many idle seconds (default 30).
    #[arg(long)]
    pub ipsec_dpd_secs: Option<u64>,
    /// Reauthenticate every IKE SA (RFC 7296 §2.8.3, make-before-break) this often
    /// (default: never; the peer may still do so on its schedule).
    #[arg(long)]
    pub ipsec_reauth_secs: Option<u64>,
    /// Tests only: write every SA's keys to this file as Wireshark `esp_sa` lines, so
    /// a capture can be decrypted. Refused unless the file is inside a --state-dir
    /// other than the default.
    #[arg(long, hide = true)]
    pub ipsec_key_log: Option<PathBuf>,
    /// TTL of the lease the node record is bound to, seconds.
    #[arg(long)]
    pub node_lease_ttl_secs: Option<u64>,
    /// How long a dead node keeps its address blocks before they are reclaimed, seconds.
    #[arg(long)]
    pub block_reclaim_grace_secs: Option<u64>,
    /// This node's AS (bgp fabric; 4-octet allowed). Default 64512.
    #[arg(long)]
    pub bgp_asn: Option<u32>,
    /// `client` (default) or `rr`: a route reflector for every client node.
    #[arg(long)]
    pub bgp_role: Option<BgpRole>,
    /// RFC 4456 cluster ID of a route reflector (IPv4); default: its router ID.
    #[arg(long)]
    pub bgp_cluster_id: Option<IpAddr>,
    /// BGP identifier (IPv4); default: the node's underlay IPv4 address.
    #[arg(long)]
    pub bgp_router_id: Option<IpAddr>,
    /// TCP port the speaker listens on and connects to. Default 179.
    #[arg(long)]
    pub bgp_port: Option<u16>,
    /// BFD on node-to-node sessions (the default).
    #[arg(
        long,
        num_args = 0,
        default_missing_value = "true",
        overrides_with = "no_bgp_bfd"
    )]
    pub bgp_bfd: Option<bool>,
    /// Sessions between all nodes when no node is a route reflector (the default).
    #[arg(
        long,
        num_args = 0,
        default_missing_value = "true",
        overrides_with = "no_bgp_node_mesh"
    )]
    pub bgp_node_mesh: Option<bool>,
    /// Graceful-restart time announced (RFC 4724), seconds; 0 turns it off. Default 120.
    #[arg(long)]
    pub bgp_graceful_restart_secs: Option<u64>,
}

impl Keys {
    /// These keys over `lower`'s, key by key: a key given here wins, one not given here
    /// comes from `lower`. Every field is listed (no `..`), so a new key does not
    /// compile until it is layered too.
    pub fn over(self, lower: Keys) -> Keys {
        let pools_given = !self.pools.is_empty() || !self.disabled_pools.is_empty();
        Keys {
            node_name: self.node_name.or(lower.node_name),
            site: self.site.or(lower.site),
            ipsec_gateway: self.ipsec_gateway.or(lower.ipsec_gateway),
            state_dir: self.state_dir.or(lower.state_dir),
            socket: self.socket.or(lower.socket),
            // The pools are one list, enabled and disabled: a source that gives either
            // gives the whole set.
            pools: if pools_given { self.pools } else { lower.pools },
            disabled_pools: if pools_given {
                self.disabled_pools
            } else {
                lower.disabled_pools
            },
            service_pools: list_over(self.service_pools, lower.service_pools),
            service_cgroup: self.service_cgroup.or(lower.service_cgroup),
            block_prefix_v4: self.block_prefix_v4.or(lower.block_prefix_v4),
            block_prefix_v6: self.block_prefix_v6.or(lower.block_prefix_v6),
            max_blocks_per_node: self.max_blocks_per_node.or(lower.max_blocks_per_node),
            strict_affinity: self.strict_affinity.or(lower.strict_affinity),
            mtu: self.mtu.or(lower.mtu),
            metrics_addr: self.metrics_addr.or(lower.metrics_addr),
            gc_grace_secs: self.gc_grace_secs.or(lower.gc_grace_secs),
            etcd_endpoints: list_over(self.etcd_endpoints, lower.etcd_endpoints),
            fabric: self.fabric.or(lower.fabric),
            underlay_iface: self.underlay_iface.or(lower.underlay_iface),
            underlay_addrs: list_over(self.underlay_addrs, lower.underlay_addrs),
            vxlan_vni: self.vxlan_vni.or(lower.vxlan_vni),
            vxlan_port: self.vxlan_port.or(lower.vxlan_port),
            fast_path: self.fast_path.or(lower.fast_path),
            policy_mode: self.policy_mode.or(lower.policy_mode),
            bpf_dir: self.bpf_dir.or(lower.bpf_dir),
            proc_sys_dir: self.proc_sys_dir.or(lower.proc_sys_dir),
            cni_conf_dir: self.cni_conf_dir.or(lower.cni_conf_dir),
            cni_bin_dir: self.cni_bin_dir.or(lower.cni_bin_dir),
            docker_plugin: self.docker_plugin.or(lower.docker_plugin),
            docker_plugin_socket: self.docker_plugin_socket.or(lower.docker_plugin_socket),
            docker_spec_file: self.docker_spec_file.or(lower.docker_spec_file),
            docker_host: self.docker_host.or(lower.docker_host),
            ipam: self.ipam.or(lower.ipam),
            kubeconfig: self.kubeconfig.or(lower.kubeconfig),
            kubernetes_in_cluster: self.kubernetes_in_cluster.or(lower.kubernetes_in_cluster),
            ipsec_datapath: self.ipsec_datapath.or(lower.ipsec_datapath),
            ipsec_child_lifetime_secs: self
                .ipsec_child_lifetime_secs
                .or(lower.ipsec_child_lifetime_secs),
            ipsec_ike_lifetime_secs: self
                .ipsec_ike_lifetime_secs
                .or(lower.ipsec_ike_lifetime_secs),
            ipsec_child_bytes: self.ipsec_child_bytes.or(lower.ipsec_child_bytes),
            ipsec_dpd_secs: self.ipsec_dpd_secs.or(lower.ipsec_dpd_secs),
            ipsec_reauth_secs: self.ipsec_reauth_secs.or(lower.ipsec_reauth_secs),
            ipsec_esn: self.ipsec_esn.or(lower.ipsec_esn),
            ipsec_key_log: self.ipsec_key_log.or(lower.ipsec_key_log),
            node_lease_ttl_secs: self.node_lease_ttl_secs.or(lower.node_lease_ttl_secs),
            block_reclaim_grace_secs: self
                .block_reclaim_grace_secs
                .or(lower.block_reclaim_grace_secs),
            bgp_asn: self.bgp_asn.or(lower.bgp_asn),
            bgp_role: self.bgp_role.or(lower.bgp_role),
            bgp_cluster_id: self.bgp_cluster_id.or(lower.bgp_cluster_id),
            bgp_router_id: self.bgp_router_id.or(lower.bgp_router_id),
            bgp_port: self.bgp_port.or(lower.bgp_port),
            bgp_bfd: self.bgp_bfd.or(lower.bgp_bfd),
            bgp_node_mesh: self.bgp_node_mesh.or(lower.bgp_node_mesh),
            bgp_graceful_restart_secs: self
                .bgp_graceful_restart_secs
                .or(lower.bgp_graceful_restart_secs),
        }
    }
}

/// A list key is given whole or not at all: a non-empty list replaces `lower`'s.
fn list_over<T>(upper: Vec<T>, lower: Vec<T>) -> Vec<T> {
    if upper.is_empty() { lower } else { upper }
}
