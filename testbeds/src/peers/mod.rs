//! Real BGP daemons as peers of strait's speaker: BIRD 2 ([`Bird`]), FRR bgpd + zebra
//! ([`Frr`]) and gobgpd ([`Gobgp`]), each started inside a test's [`Netns`] from one
//! small description ([`PeerConfig`]), with its runtime files (config, sockets, pid
//! files, logs) in a temp dir of its own. Stopped by PID on drop; their logs are
//! printed when the test is failing.
//!
//! Queries are the same for the three: session state per neighbour, the Loc-RIB with
//! the attributes a test checks (AS_PATH, next hop, ORIGINATOR_ID, CLUSTER_LIST), and a
//! cheap prefix count for benchmarks. The kernel FIB of a namespace is read with
//! [`fib_routes`] (details) or [`fib_count`] (a count, for 100 000 routes).
//! [`Lan`] puts several namespaces on one L2 segment (a bridge in a hub namespace).
//!
//! Set-up details and pitfalls of each daemon on Debian 12 are in its own module
//! ([`bird`], [`frr`], [`gobgp`]) and in docs/testing.md.

pub mod bird;
pub mod frr;
pub mod gobgp;
pub mod lan;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use ipnet::IpNet;

pub use bird::Bird;
pub use frr::Frr;
pub use gobgp::Gobgp;
pub use lan::Lan;

use crate::netns::Netns;
use crate::wait::WaitError;

/// One BGP router: identity, neighbours and what it originates.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub router_id: Ipv4Addr,
    pub asn: u32,
    /// RFC 4456 cluster ID, used when some neighbour is an `rr_client` (default: the
    /// router ID).
    pub cluster_id: Option<Ipv4Addr>,
    pub neighbors: Vec<Neighbor>,
    /// Prefixes this router originates (blackhole statics / `network` statements /
    /// `global rib add`), IPv4 and IPv6.
    pub originate: Vec<IpNet>,
    /// Next hop of the originated IPv6 prefixes (required when the session runs over
    /// IPv4, where the daemon has no IPv6 session address to take).
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Install the best BGP routes into the namespace's kernel FIB: BIRD's kernel
    /// protocol; FRR always does, through zebra; gobgpd never (its zebra client is
    /// broken with FRR 8.4, see PEERS.md).
    pub kernel_fib: bool,
    /// TCP port the daemon listens on.
    pub listen_port: u16,
    /// Hold time offered to every neighbour (keepalive a third of it).
    pub hold_time: u16,
}

impl PeerConfig {
    pub fn new(router_id: Ipv4Addr, asn: u32) -> Self {
        Self {
            router_id,
            asn,
            cluster_id: None,
            neighbors: vec![],
            originate: vec![],
            next_hop_v6: None,
            kernel_fib: true,
            listen_port: 179,
            hold_time: 9,
        }
    }

    pub fn neighbor(mut self, n: Neighbor) -> Self {
        self.neighbors.push(n);
        self
    }

    pub fn originate(mut self, prefixes: &[&str]) -> Self {
        self.originate
            .extend(prefixes.iter().map(|p| p.parse::<IpNet>().expect("prefix")));
        self
    }

    pub fn next_hop_v6(mut self, nh: Ipv6Addr) -> Self {
        self.next_hop_v6 = Some(nh);
        self
    }

    pub fn cluster_id(mut self, id: Ipv4Addr) -> Self {
        self.cluster_id = Some(id);
        self
    }

    pub fn kernel_fib(mut self, on: bool) -> Self {
        self.kernel_fib = on;
        self
    }

    pub fn listen_port(mut self, port: u16) -> Self {
        self.listen_port = port;
        self
    }

    fn v4(&self) -> impl Iterator<Item = &IpNet> {
        self.originate.iter().filter(|p| matches!(p, IpNet::V4(_)))
    }

    fn v6(&self) -> impl Iterator<Item = &IpNet> {
        self.originate.iter().filter(|p| matches!(p, IpNet::V6(_)))
    }
}

/// One neighbour of a [`PeerConfig`]. Both address families (IPv4 and IPv6 unicast)
/// are enabled on every session.
#[derive(Debug, Clone)]
pub struct Neighbor {
    pub address: IpAddr,
    pub asn: u32,
    /// The neighbour is our route-reflector client.
    pub rr_client: bool,
    /// RFC 2385 TCP MD5 key.
    pub md5: Option<String>,
    /// The neighbour's TCP port (for our connections).
    pub port: u16,
    /// Never connect; wait for the neighbour.
    pub passive: bool,
    /// Source address of our connections.
    pub local: Option<IpAddr>,
    /// BFD (RFC 5880) on the session: FRR runs bfdd and ties the session to it
    /// (`neighbor X bfd`); the other daemons ignore it.
    pub bfd: bool,
    /// Offer RFC 8950 (IPv4 unicast with IPv6 next hops): BIRD's `extended next hop
    /// on` in the ipv4 channel, FRR's `neighbor X capability extended-nexthop`; gobgpd
    /// ignores it.
    pub extended_next_hop: bool,
    /// eBGP with a neighbour that is not on a shared link (FRR's `neighbor X
    /// ebgp-multihop N`): the most hops to it. FRR only; the others ignore it.
    pub multihop: Option<u8>,
}

impl Neighbor {
    pub fn new(address: IpAddr, asn: u32) -> Self {
        Self {
            address,
            asn,
            rr_client: false,
            md5: None,
            port: 179,
            passive: false,
            local: None,
            bfd: false,
            extended_next_hop: false,
            multihop: None,
        }
    }

    pub fn ebgp_multihop(mut self, hops: u8) -> Self {
        self.multihop = Some(hops);
        self
    }

    pub fn rr_client(mut self) -> Self {
        self.rr_client = true;
        self
    }

    pub fn md5(mut self, key: &str) -> Self {
        self.md5 = Some(key.into());
        self
    }

    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn passive(mut self) -> Self {
        self.passive = true;
        self
    }

    pub fn local(mut self, addr: IpAddr) -> Self {
        self.local = Some(addr);
        self
    }

    pub fn bfd(mut self) -> Self {
        self.bfd = true;
        self
    }

    pub fn extended_next_hop(mut self) -> Self {
        self.extended_next_hop = true;
        self
    }
}

/// A path in a daemon's Loc-RIB, with the attributes tests check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: IpNet,
    /// The BGP next hop (the global address for IPv6); `None` for a local route.
    pub next_hop: Option<IpAddr>,
    /// AS numbers of the AS_PATH, in order (sets flattened).
    pub as_path: Vec<u32>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    pub local_pref: Option<u32>,
    /// The daemon's best path for the prefix.
    pub best: bool,
}

/// IPv4 or IPv6 unicast: the daemons' address families are strait's own.
pub use strait_api::Family;

/// What the three daemons answer alike.
pub trait BgpDaemon {
    /// `bird`, `frr` or `gobgp`, for messages.
    fn kind(&self) -> &'static str;
    /// PID of the BGP process (bird, bgpd, gobgpd), e.g. for its RSS.
    fn pid(&self) -> u32;
    /// The session state towards `neighbor`, in RFC 4271 words (`Established`,
    /// `Active`, `Connect`, `OpenSent`, `OpenConfirm`, `Idle`).
    fn session_state(&self, neighbor: IpAddr) -> io::Result<String>;
    /// Every path of the family in the Loc-RIB (a few hundred at most: this is parsed).
    fn routes(&self, family: Family) -> io::Result<Vec<Route>>;
    /// Number of prefixes of the family in the Loc-RIB (cheap enough for 100 000).
    fn prefix_count(&self, family: Family) -> io::Result<usize>;
    /// Everything the daemon logged so far.
    fn logs(&self) -> String;

    fn established(&self, neighbor: IpAddr) -> bool {
        self.session_state(neighbor)
            .is_ok_and(|s| s == "Established")
    }

    /// The paths for `prefix` (empty when there is none).
    fn paths(&self, prefix: &str) -> io::Result<Vec<Route>> {
        let p: IpNet = prefix.parse().map_err(io::Error::other)?;
        Ok(self
            .routes(Family::of_net(&p))?
            .into_iter()
            .filter(|r| r.prefix == p)
            .collect())
    }
}

/// The logs of `daemons`, each under a line naming it: for a failure a test reports
/// after the daemons are gone (their drop prints the logs only while panicking).
pub fn logs(daemons: &[&dyn BgpDaemon]) -> String {
    daemons
        .iter()
        .map(|d| format!("----- {} (pid {}) -----\n{}", d.kind(), d.pid(), d.logs()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A daemon that did not come up in time, with its log: the caller's `?` drops (and
/// stops) the daemon before any test sees the error.
fn not_up(daemon: &dyn BgpDaemon, e: WaitError) -> io::Error {
    io::Error::other(format!("{e}\n{}", logs(&[daemon])))
}

/// A route in a namespace's kernel FIB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FibRoute {
    pub prefix: IpNet,
    /// Every gateway (several for a multipath route).
    pub gateways: Vec<IpAddr>,
    /// `bgp`, `bird`, `83`, ... as `ip route` prints it.
    pub protocol: String,
}

/// The namespace's main-table routes of `proto` (`bgp`, `bird`, a number), both
/// families. For a few hundred routes; use [`fib_count`] for more.
pub fn fib_routes(ns: &Netns, proto: &str) -> Vec<FibRoute> {
    let mut out = vec![];
    for fam in ["-4", "-6"] {
        let v = ns.ip_json(&[fam, "route", "show", "proto", proto]);
        for r in v.as_array().into_iter().flatten() {
            let Some(dst) = r["dst"].as_str() else {
                continue;
            };
            let prefix = match dst.parse::<IpNet>() {
                Ok(p) => p,
                Err(_) => match dst.parse::<IpAddr>() {
                    Ok(a) => IpNet::from(a),
                    Err(_) => continue,
                },
            };
            // `gateway`, or `via` {family, host} for one of the other family (an IPv4
            // route via an IPv6 next hop, `ip route … via inet6 X`).
            let gateway = |h: &serde_json::Value| -> Option<IpAddr> {
                h["gateway"]
                    .as_str()
                    .or_else(|| h["via"]["host"].as_str())
                    .and_then(|g| g.parse().ok())
            };
            let mut gateways: Vec<IpAddr> = gateway(r).into_iter().collect();
            for nh in r["nexthops"].as_array().into_iter().flatten() {
                gateways.extend(gateway(nh));
            }
            out.push(FibRoute {
                prefix,
                gateways,
                protocol: r["protocol"].as_str().unwrap_or(proto).to_string(),
            });
        }
    }
    out
}

/// How many main-table routes of `proto` the namespace has in `family`: one `ip route`
/// call, lines counted (fine for 100 000 routes).
pub fn fib_count(ns_name: &str, family: Family, proto: &str) -> io::Result<usize> {
    let fam = match family {
        Family::V4 => "-4",
        Family::V6 => "-6",
    };
    let out = Command::new("ip")
        .args(["-n", ns_name, fam, "route", "show", "proto", proto])
        .stderr(Stdio::piped())
        .output()?;
    let text = ok_stdout("ip route show", out)?;
    // Continuation lines of a multipath route start with whitespace.
    Ok(text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(char::is_whitespace))
        .count())
}

/// VmRSS and VmHWM of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// True when `binary` runs with `arg` (e.g. `--version`).
pub fn installed(binary: &str, arg: &str) -> bool {
    Command::new(binary)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// For privileged interop tests: root and the daemon's binaries, else a visible skip
/// (a failure under `STRAIT_REQUIRE_PRIVILEGED=1`). `bins`: (binary, a harmless
/// argument), `package`: the Debian package that has them.
pub fn require(test: &str, bins: &[(&str, &str)], package: &str) -> bool {
    if !crate::require_root(test) {
        return false;
    }
    let missing: Vec<&str> = bins
        .iter()
        .filter(|(b, a)| !installed(b, a))
        .map(|(b, _)| *b)
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("STRAIT_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!(
            "{test}: needs {missing:?} (Debian package {package}), and STRAIT_REQUIRE_PRIVILEGED=1 forbids skipping"
        );
    }
    eprintln!("SKIP: {test}: needs {missing:?} (Debian package {package})");
    false
}

fn ok_stdout(what: &str, out: Output) -> io::Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    }
}

/// The file's text, or a note that it could not be read.
fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()))
}

/// Printed by each daemon's drop while the test is failing.
fn print_logs_if_panicking(d: &dyn BgpDaemon) {
    if std::thread::panicking() {
        eprintln!(
            "===== {} (pid {}) log =====\n{}\n===== end of {} log =====",
            d.kind(),
            d.pid(),
            d.logs(),
            d.kind()
        );
    }
}

/// A temp dir for one daemon's runtime files (FRR opens it up for its `frr` user).
fn runtime_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("strait-{tag}-"))
        .tempdir()
        .expect("daemon runtime dir")
}
