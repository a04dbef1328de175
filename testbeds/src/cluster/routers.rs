//! External BGP routers of a bgp-fabric cluster: BIRD or FRR in a namespace of its own
//! on segment A of the underlay, as a ToR or an upstream router would be, peering by
//! eBGP with every node and registered as an external peer (`netctl bgp peer add`,
//! no `--node`: every node peers with it).
//!
//! Router `n` (1-based, in the order added) is the underlay peer `n`
//! (`10.0.0.(100+n)`, namespace `<prefix>p<n>`), AS `65000+n`, and originates
//! `10.255.n.0/24` and `fd00:255:n::/48` (blackholes), so the nodes have a route from
//! outside to show; it installs the nodes' blocks in its own kernel FIB. The cluster
//! owns the daemons: it reaps them when they exit ([`Router::exited`]) and stops them
//! (by PID) before the namespaces go.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::{Cluster, ClusterOpts, ClusterStore, Fabric};
use crate::peers::{BgpDaemon, Bird, Frr, Neighbor, PeerConfig};

/// AS of router `n` is this plus `n`.
pub const ROUTER_AS_BASE: u32 = 65000;
/// The nodes' AS when no `--bgp-asn` is given (docs/bgp.md).
pub const DEFAULT_NODE_ASN: u32 = 64512;

/// Which daemon a router runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouterKind {
    Bird,
    Frr,
}

impl RouterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouterKind::Bird => "bird",
            RouterKind::Frr => "frr",
        }
    }

    /// The binaries it needs, each with a harmless argument, and their Debian package.
    pub fn binaries(self) -> (&'static [(&'static str, &'static str)], &'static str) {
        match self {
            RouterKind::Bird => (&[("bird", "--version"), ("birdc", "--version")], "bird2"),
            RouterKind::Frr => (
                &[
                    ("/usr/lib/frr/bgpd", "--version"),
                    ("/usr/lib/frr/zebra", "--version"),
                    ("vtysh", "--version"),
                ],
                "frr",
            ),
        }
    }

    /// The binaries of [`RouterKind::binaries`] that do not run here.
    pub fn missing(self) -> Vec<&'static str> {
        self.binaries()
            .0
            .iter()
            .filter(|(b, a)| !crate::peers::installed(b, a))
            .map(|(b, _)| *b)
            .collect()
    }
}

enum Daemon {
    Bird(Bird),
    Frr(Frr),
}

/// One external router; see the module docs.
pub struct Router {
    /// `bird`, `frr`; `bird2`, `frr2`, … for a second of the same kind. Also its name
    /// as an external peer (`netctl bgp peer list`).
    pub name: String,
    pub kind: RouterKind,
    pub asn: u32,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    /// Its namespace (one of [`Cluster::peers`]).
    pub netns: String,
    pub originated: Vec<IpNet>,
    daemon: Daemon,
}

impl Router {
    /// The daemon's queries (session states, Loc-RIB).
    pub fn daemon(&self) -> &dyn BgpDaemon {
        match &self.daemon {
            Daemon::Bird(b) => b,
            Daemon::Frr(f) => f,
        }
    }

    /// Its processes: (PID, program name as in its command line).
    pub fn pids(&self) -> Vec<(u32, &'static str)> {
        match &self.daemon {
            Daemon::Bird(b) => vec![(b.pid(), "bird")],
            Daemon::Frr(f) => vec![(f.pid(), "bgpd"), (f.zebra_pid(), "zebra")],
        }
    }

    /// Its CLI, ready to take a command: `birdc -s SOCKET` or `vtysh --vty_socket DIR`
    /// (neither needs the namespace: they talk to a unix socket).
    pub fn cli(&self) -> Vec<String> {
        match &self.daemon {
            Daemon::Bird(b) => vec!["birdc".into(), "-s".into(), path(&b.socket)],
            Daemon::Frr(f) => vec!["vtysh".into(), "--vty_socket".into(), path(f.vty_dir())],
        }
    }

    /// The temp dir of its config, sockets and logs.
    pub fn runtime_dir(&self) -> PathBuf {
        match &self.daemon {
            Daemon::Bird(b) => b.socket.parent().unwrap_or(Path::new("/")).to_path_buf(),
            Daemon::Frr(f) => f.vty_dir().to_path_buf(),
        }
    }

    /// Whether a process of the daemon exited; reaps it, so it is no zombie.
    pub fn exited(&mut self) -> bool {
        match &mut self.daemon {
            Daemon::Bird(b) => b.exited(),
            Daemon::Frr(f) => f.exited(),
        }
    }

    /// One line for [`Cluster::describe`].
    pub fn describe(&self) -> String {
        let pids: Vec<String> = self
            .pids()
            .iter()
            .map(|(pid, what)| format!("{what} pid {pid}"))
            .collect();
        let originated: Vec<String> = self.originated.iter().map(IpNet::to_string).collect();
        format!(
            "  {:<4} netns {:<16} underlay {} {}  AS {}  {}  originates {}  cli: {}  (logs in {})\n",
            self.name,
            self.netns,
            self.v4,
            self.v6,
            self.asn,
            pids.join(", "),
            originated.join(" "),
            self.cli().join(" "),
            self.runtime_dir().display(),
        )
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Node `i`'s AS: the last `--bgp-asn` among its flags (all agents', then its own, as
/// the agent reads them), else the default.
pub fn node_asn(opts: &ClusterOpts, i: usize) -> u32 {
    let own = opts
        .host_extra
        .iter()
        .filter(|(h, _)| *h == i)
        .flat_map(|(_, f)| f);
    let flags: Vec<&String> = opts.agent_extra.iter().chain(own).collect();
    let mut asn = DEFAULT_NODE_ASN;
    for (k, flag) in flags.iter().enumerate() {
        let value = match flag.strip_prefix("--bgp-asn") {
            Some("") => flags.get(k + 1).map(|v| v.as_str()),
            Some(rest) => rest.strip_prefix('='),
            None => None,
        };
        if let Some(n) = value.and_then(|v| v.parse().ok()) {
            asn = n;
        }
    }
    asn
}

impl Cluster {
    /// Start an external router of `kind` and register it with the nodes (see the
    /// module docs). Needs `--fabric bgp` on etcd and one segment (the router is a
    /// directly connected eBGP neighbour of every host). Errors with the daemon's log
    /// or netctl's answer; the cluster stays as it was then, bar an empty namespace.
    pub fn add_router(&mut self, kind: RouterKind) -> Result<&Router, String> {
        if self.opts.fabric != Fabric::Bgp || self.opts.store != ClusterStore::Etcd {
            return Err("an external BGP router needs --fabric bgp on etcd".into());
        }
        if self.opts.layout() != super::underlay::Layout::OneSegment {
            return Err(
                "an external BGP router needs one segment (hosts on segment B would be multihop eBGP neighbours)"
                    .into(),
            );
        }
        let missing = kind.missing();
        if !missing.is_empty() {
            return Err(format!(
                "{} needs {missing:?} (Debian package {})",
                kind.as_str(),
                kind.binaries().1
            ));
        }
        let n = u8::try_from(self.peers.len() + 1)
            .ok()
            .filter(|n| *n <= 100)
            .ok_or("too many underlay peers")?;
        let same_kind = self.routers.iter().filter(|r| r.kind == kind).count();
        let name = match same_kind {
            0 => kind.as_str().to_string(),
            k => format!("{}{}", kind.as_str(), k + 1),
        };
        let (_, v4, v6) = self.add_underlay_peer(n);
        let asn = ROUTER_AS_BASE + u32::from(n);
        let originated: Vec<IpNet> = vec![
            format!("10.255.{n}.0/24").parse().expect("prefix"),
            format!("fd00:255:{n}::/48").parse().expect("prefix"),
        ];
        let mut cfg = PeerConfig::new(v4, asn).kernel_fib(true).next_hop_v6(v6);
        cfg.originate = originated.clone();
        for (i, h) in self.hosts.iter().enumerate() {
            cfg = cfg.neighbor(Neighbor::new(
                IpAddr::V4(h.underlay_v4),
                node_asn(&self.opts, i),
            ));
        }
        let ns = self.peers.last().expect("just added");
        let daemon = match kind {
            RouterKind::Bird => Bird::start(ns, cfg).map(Daemon::Bird),
            RouterKind::Frr => Frr::start(ns, cfg).map(Daemon::Frr),
        }
        .map_err(|e| format!("starting {name}: {e}"))?;
        let router = Router {
            name,
            kind,
            asn,
            v4,
            v6,
            netns: ns.name().to_string(),
            originated,
            daemon,
        };
        // One store: added on one node, every node peers with it.
        let (ok, out) = self.hosts[0].netctl(&[
            "bgp",
            "peer",
            "add",
            &router.name,
            "--address",
            &v4.to_string(),
            "--asn",
            &asn.to_string(),
        ]);
        if !ok {
            return Err(format!("netctl bgp peer add {}: {out}", router.name));
        }
        self.routers.push(router);
        Ok(self.routers.last().expect("just pushed"))
    }

    /// The routers added by [`Cluster::add_router`].
    pub fn routers(&self) -> &[Router] {
        &self.routers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_asn_is_its_last_bgp_asn_flag() {
        let mut opts = ClusterOpts::new(2, Fabric::Bgp);
        assert_eq!(node_asn(&opts, 0), DEFAULT_NODE_ASN);
        opts.agent_extra = vec!["--no-bgp-bfd".into(), "--bgp-asn".into(), "65010".into()];
        assert_eq!(node_asn(&opts, 0), 65010);
        opts.host_extra
            .push((1, vec!["--bgp-asn=4200000001".into()]));
        assert_eq!(node_asn(&opts, 0), 65010);
        assert_eq!(node_asn(&opts, 1), 4_200_000_001);
    }
}
