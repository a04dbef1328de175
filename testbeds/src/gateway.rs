//! A strait site and another vendor's IPsec gateway, for the gateway tests and
//! benchmarks: a cluster of site `dc` (some hosts started with `--ipsec-gateway`),
//! strongSwan's charon (kernel-libipsec) in an underlay peer namespace, and a LAN
//! `192.168.50.0/24` behind charon with one host, [`LAN_HOST`].
//!
//! The bed builds the namespaces and charon's configuration; each test declares the
//! external peer its own way (`netctl ipsec peer add`, a YAML document) and checks
//! what it needs through [`external`] (the peer as `netctl ipsec peers` shows it).
//!
//! [`GatewayBed::start_natted`] puts a NAT between the site and charon instead:
//!
//! ```text
//! hosts 10.0.0.N ── underlay ── nat ns 10.0.0.160 | 198.51.100.1 ── charon 198.51.100.2 ── LAN
//!                               (MASQUERADE, UDP ports rewritten; nothing new inbound)
//! ```
//!
//! [`GatewayBed::watch_leaks`] gives the hosts a plain route to the LAN through
//! charon and counts what arrives there from the container pool in clear, so a test
//! can show that a refused peer's traffic is dropped rather than sent unencrypted.

use std::time::Duration;

use strait_api::ipsec::{IpsecPeer, IpsecStatus};

use crate::cluster::{Cluster, ClusterHost, ClusterOpts, Fabric};
use crate::esp::strongswan::{self, ExternalGateway};
use crate::netns::Netns;
use crate::wait_until;

/// How long a gateway test waits for SAs, routes and failures.
pub const CONVERGE: Duration = Duration::from_secs(30);
/// How often it looks.
pub const POLL: Duration = Duration::from_millis(250);
/// The host on the LAN behind charon.
pub const LAN_HOST: &str = "192.168.50.10";
/// The LAN behind charon.
pub const LAN: &str = "192.168.50.0/24";
/// The pre-shared key both ends are given, unless a test says otherwise.
pub const PSK: &str = "strait-gateway-test-psk-0123456789";
/// The external peer's name, as the tests declare it (`netctl` shows `ext:onprem`).
pub const PEER: &str = "onprem";
/// The NAT router's address on the site's underlay ([`GatewayBed::start_natted`]).
pub const NAT_INSIDE: &str = "10.0.0.160";
/// The NAT router's public address: what charon sees the site's hosts as.
pub const NAT_PUBLIC: &str = "198.51.100.1";
/// charon's address in the natted bed, on the NAT's public side.
pub const NAT_CHARON: &str = "198.51.100.2";
/// The public network between the NAT and charon.
pub const PUBLIC_NET: &str = "198.51.100.0/24";
/// The site's container pool (IPv4), as charon's selectors name it.
pub const POOL: &str = "10.244.0.0/16";
/// The ports the NAT rewrites UDP source ports to (so charon never sees 500 or
/// 4500 as the site's port).
const NAT_PORTS: &str = "30000-30999";
/// iptables comments of the bed's counters.
const LEAK_RULE: &str = "strait-pool-in-clear";
const NAT_ESP_RULE: &str = "strait-nat-esp";
const NAT_4500_RULE: &str = "strait-nat-udp4500";

/// True when the test may run: root, etcd and charon with kernel-libipsec (a visible
/// SKIP line otherwise).
pub fn privileged(test: &str) -> bool {
    if !(crate::require_root(test) && crate::etcd::require_etcd(test)) {
        return false;
    }
    if !strongswan::available() {
        eprintln!("SKIP {test}: strongSwan's charon with kernel-libipsec is not installed");
        return false;
    }
    true
}

/// The bed: the cluster, charon's namespace (`cluster.peers()[0]`, on segment A) and
/// the LAN host's namespace behind it.
/// Which side of a [`GatewayBed::start_natted`] NAT is behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behind {
    /// The site: its gateway reaches charon through the NAT.
    Site,
    /// charon: it reaches the site's gateway through the NAT (a branch office
    /// dialing in; the site knows no address of it).
    Peer,
}

pub struct GatewayBed {
    pub cluster: Cluster,
    /// charon's address: on the underlay, or [`NAT_CHARON`] behind the NAT.
    pub gw_addr: String,
    /// The LAN host's namespace.
    pub lan: Netns,
    /// charon's namespace when it is not on the underlay (behind the NAT).
    public: Option<Netns>,
}

impl GatewayBed {
    /// `hosts` host-gw hosts of site `dc`; those at the indices in `gateways` are
    /// started with `--ipsec-gateway`; `extra` flags go to every agent.
    pub fn start(hosts: usize, gateways: &[usize], lease_ttl: Option<u64>, extra: &[&str]) -> Self {
        let mut cluster = site(hosts, gateways, lease_ttl, extra);
        let prefix = cluster.prefix.clone();
        let (gw, gw4, _) = cluster.add_underlay_peer(50);
        let lan = lan_behind(gw, &prefix);
        Self {
            cluster,
            gw_addr: gw4.to_string(),
            lan,
            public: None,
        }
    }

    /// As [`GatewayBed::start`], with a NAT router (`cluster.peers()[0]`, on the
    /// underlay at [`NAT_INSIDE`], on [`PUBLIC_NET`] at [`NAT_PUBLIC`]) between the
    /// site and charon ([`NAT_CHARON`]), which masquerades what `behind` sends,
    /// rewriting UDP ports, and lets in only what answers it:
    /// - [`Behind::Site`]: the site is behind the NAT; every host gets a route to
    ///   [`PUBLIC_NET`] through the router, charon has no route to the underlay;
    /// - [`Behind::Peer`]: charon is behind it, its default route through the router;
    ///   the site sees charon's IKE and ESP come from [`NAT_INSIDE`] and mapped ports.
    pub fn start_natted(hosts: usize, gateways: &[usize], extra: &[&str], behind: Behind) -> Self {
        let mut cluster = site(hosts, gateways, None, extra);
        let prefix = cluster.prefix.clone();
        let (nat, nat4, _) = cluster.add_underlay_peer(60);
        assert_eq!(nat4.to_string(), NAT_INSIDE);
        let public = Netns::new(format!("{prefix}pub"));
        nat.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        nat.exec_ok(&[
            "ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wan1",
        ]);
        nat.exec_ok(&["ip", "link", "set", "wan1", "netns", public.name()]);
        nat.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{NAT_PUBLIC}/24"),
            "dev",
            "wan0",
        ]);
        nat.exec_ok(&["ip", "link", "set", "wan0", "up"]);
        public.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{NAT_CHARON}/24"),
            "dev",
            "wan1",
        ]);
        public.exec_ok(&["ip", "link", "set", "wan1", "up"]);
        // The NAT's outside: towards the public net, or towards the underlay.
        let outside = match behind {
            Behind::Site => "wan0",
            Behind::Peer => "eth0",
        };
        let ipt = |args: &[&str]| {
            let mut argv = vec!["iptables", "-w"];
            argv.extend_from_slice(args);
            nat.exec_ok(&argv);
        };
        // The site's side out, its UDP ports rewritten as a carrier's NAT would.
        ipt(&[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            outside,
            "-p",
            "udp",
            "-j",
            "MASQUERADE",
            "--to-ports",
            NAT_PORTS,
        ]);
        ipt(&[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            outside,
            "-j",
            "MASQUERADE",
        ]);
        // Nothing new comes in: only what answers the site's own traffic.
        ipt(&[
            "-A",
            "FORWARD",
            "-i",
            outside,
            "-m",
            "conntrack",
            "--ctstate",
            "ESTABLISHED,RELATED",
            "-j",
            "ACCEPT",
        ]);
        ipt(&["-A", "FORWARD", "-i", outside, "-j", "DROP"]);
        // What leaves: ESP bare (must be none) and in UDP 4500.
        ipt(&[
            "-I",
            "FORWARD",
            "-o",
            outside,
            "-p",
            "esp",
            "-m",
            "comment",
            "--comment",
            NAT_ESP_RULE,
        ]);
        ipt(&[
            "-I",
            "FORWARD",
            "-o",
            outside,
            "-p",
            "udp",
            "--dport",
            "4500",
            "-m",
            "comment",
            "--comment",
            NAT_4500_RULE,
        ]);
        match behind {
            Behind::Site => {
                for h in cluster.hosts() {
                    h.ns.exec_ok(&["ip", "route", "add", PUBLIC_NET, "via", NAT_INSIDE]);
                }
            }
            Behind::Peer => {
                public.exec_ok(&["ip", "route", "add", "default", "via", NAT_PUBLIC]);
            }
        }
        let lan = lan_behind(&public, &prefix);
        Self {
            cluster,
            gw_addr: NAT_CHARON.to_string(),
            lan,
            public: Some(public),
        }
    }

    /// Gives every host a plain route to the LAN through charon (on the underlay)
    /// and counts, in charon's namespace, packets from the container pool arriving
    /// on its underlay side: any is traffic that left a host in clear (ESP arrives
    /// from the hosts' own addresses). See [`GatewayBed::leaked`].
    pub fn watch_leaks(&self) {
        assert!(self.public.is_none(), "charon must be on the underlay");
        for h in self.cluster.hosts() {
            h.ns.exec_ok(&["ip", "route", "add", LAN, "via", &self.gw_addr]);
        }
        self.charon_ns().exec_ok(&[
            "iptables",
            "-w",
            "-t",
            "raw",
            "-I",
            "PREROUTING",
            "-i",
            "eth0",
            "-s",
            POOL,
            "-m",
            "comment",
            "--comment",
            LEAK_RULE,
        ]);
    }

    /// Packets from the container pool that reached charon in clear since
    /// [`GatewayBed::watch_leaks`].
    pub fn leaked(&self) -> u64 {
        rule_packets(self.charon_ns(), "raw", "PREROUTING", LEAK_RULE)
    }

    /// What the NAT router forwarded to the public side: (bare ESP packets, UDP
    /// 4500 packets).
    pub fn nat_counters(&self) -> (u64, u64) {
        let nat = &self.cluster.peers()[0];
        (
            rule_packets(nat, "filter", "FORWARD", NAT_ESP_RULE),
            rule_packets(nat, "filter", "FORWARD", NAT_4500_RULE),
        )
    }

    /// charon's namespace.
    pub fn charon_ns(&self) -> &Netns {
        self.public.as_ref().unwrap_or(&self.cluster.peers()[0])
    }

    /// charon's configuration with host 1 (index 0) as its peer: PSK, each side's
    /// address as its identity, the LAN behind charon and the cluster's IPv4 pool on
    /// strait's side; IKE on 500 (strait's gateway forces ESP into UDP 4500).
    /// `start` is the child's `start_action` (`none`, `trap`, `start`).
    pub fn swanctl_psk(&self, psk: &str, start: &str) -> String {
        let h1 = self.cluster.hosts()[0].underlay_v4;
        let me = &self.gw_addr;
        format!(
            "connections {{\n  strait {{\n    version = 2\n    local_addrs = {me}\n    \
             remote_addrs = {h1}\n    \
             proposals = aes256gcm16-prfsha384-x25519\n    local {{\n      auth = psk\n      \
             id = {me}\n    }}\n    remote {{\n      auth = psk\n      id = {h1}\n    }}\n    \
             children {{\n      lan {{\n        local_ts = {LAN}\n        \
             remote_ts = 10.244.0.0/16\n        esp_proposals = aes256gcm16-x25519\n        \
             mode = tunnel\n        start_action = {start}\n      }}\n    }}\n  }}\n}}\n\
             secrets {{\n  ike-strait {{\n    id-a = {me}\n    id-b = {h1}\n    \
             secret = \"{psk}\"\n  }}\n}}\n"
        )
    }

    /// Starts charon in its namespace with `conf` and the `files` it names.
    pub fn charon(
        &self,
        conf: &str,
        files: &[(&std::path::Path, &str)],
    ) -> Result<ExternalGateway, String> {
        ExternalGateway::start(self.charon_ns(), conf, files)
    }

    /// Declares the peer [`PEER`] through host 1's `netctl ipsec peer add`, the key on
    /// standard input, the LAN as its remote network; `extra` arguments appended.
    pub fn add_peer_psk(&self, psk: &str, extra: &[&str]) {
        let h1 = &self.cluster.hosts()[0];
        let mut args = vec![
            "ipsec",
            "peer",
            "add",
            PEER,
            "--site",
            "dc",
            "--address",
            &self.gw_addr,
            "--auth",
            "psk",
            "--psk-stdin",
            "--remote-net",
            LAN,
        ];
        args.extend_from_slice(extra);
        let mut child = std::process::Command::new(crate::bins::bin("netctl"))
            .arg("--socket")
            .arg(&h1.agent.socket)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("netctl");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{psk}\n").as_bytes())
            .expect("write the key");
        let out = child.wait_with_output().expect("netctl");
        assert!(
            out.status.success(),
            "netctl ipsec peer add: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes `doc` (YAML) to a file and applies it with host `i`'s `netctl ipsec
    /// peer apply -f`.
    pub fn apply_peer(&self, i: usize, doc: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("peer.yaml");
        std::fs::write(&file, doc).expect("write the peer document");
        let (ok, out) = self.cluster.hosts()[i].netctl(&[
            "ipsec",
            "peer",
            "apply",
            "-f",
            file.to_str().expect("utf-8 path"),
        ]);
        assert!(ok, "netctl ipsec peer apply: {out}");
    }
}

/// `netctl ipsec status` of host `h`.
pub fn status(h: &ClusterHost) -> IpsecStatus {
    h.agent.client().ipsec_status().expect("ipsec status")
}

/// The external peer [`PEER`] as host `h` shows it; `None` when `h` does not carry it.
pub fn external(h: &ClusterHost) -> Option<IpsecPeer> {
    let name = format!("ext:{PEER}");
    status(h).peers.into_iter().find(|p| p.name == name)
}

/// Waits until `h` carries the external peer with an established IKE SA and a Child
/// SA; a failure shows the peer and charon's log.
pub fn wait_carried(h: &ClusterHost, what: &str, limit: Duration, charon: &ExternalGateway) {
    wait_until(what, limit, POLL, || match external(h) {
        Some(p) if p.ike_state == "established" && !p.child_sas.is_empty() => Ok(()),
        other => Err(format!("{other:?}\n{}", charon.log())),
    })
    .unwrap();
}

/// Three pings from `from` to `to`, 0.2 s apart; true when any is answered.
pub fn ping(from: &Netns, to: &str) -> bool {
    from.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "1", to])
        .status
        .success()
}

/// The cluster of site `dc`: see [`GatewayBed::start`].
fn site(hosts: usize, gateways: &[usize], lease_ttl: Option<u64>, extra: &[&str]) -> Cluster {
    let mut opts = ClusterOpts::new(hosts, Fabric::HostGw);
    opts.agent_extra = vec!["--site".into(), "dc".into()];
    opts.agent_extra.extend(extra.iter().map(|s| s.to_string()));
    opts.host_extra = gateways
        .iter()
        .map(|i| (*i, vec!["--ipsec-gateway".into()]))
        .collect();
    opts.node_lease_ttl_secs = lease_ttl;
    Cluster::start(opts)
}

/// The LAN [`LAN`] behind `gw` (which forwards to it), with the host [`LAN_HOST`] in
/// a namespace of its own.
fn lan_behind(gw: &Netns, prefix: &str) -> Netns {
    let lan = Netns::new(format!("{prefix}lan"));
    gw.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    gw.exec_ok(&[
        "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ]);
    gw.exec_ok(&["ip", "link", "set", "lan1", "netns", lan.name()]);
    gw.exec_ok(&["ip", "addr", "add", "192.168.50.1/24", "dev", "lan0"]);
    gw.exec_ok(&["ip", "link", "set", "lan0", "up"]);
    lan.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{LAN_HOST}/24"),
        "dev",
        "lan1",
    ]);
    lan.exec_ok(&["ip", "link", "set", "lan1", "up"]);
    lan.exec_ok(&["ip", "route", "add", "default", "via", "192.168.50.1"]);
    lan
}

/// The packet counter of the iptables rule commented `comment` in `ns`.
fn rule_packets(ns: &Netns, table: &str, chain: &str, comment: &str) -> u64 {
    let out = ns.exec_ok(&["iptables", "-w", "-t", table, "-L", chain, "-v", "-x", "-n"]);
    let tag = format!("/* {comment} */");
    out.lines()
        .find(|l| l.contains(&tag))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rule {comment} in {table} {chain}:\n{out}"))
}

/// Waits until `h` shows ESP counters for the external peer: packets both ways on
/// its active Child SA and in its totals (the engine reads the datapath's counters a
/// few times a second); returns the peer as then shown.
pub fn wait_counted(h: &ClusterHost) -> IpsecPeer {
    let mut seen = None;
    wait_until("the external peer's ESP counters", CONVERGE, POLL, || {
        let p = external(h).ok_or_else(|| "not carried".to_string())?;
        let counted = p.child_sas.iter().any(|c| {
            c.active
                && c.inbound.as_ref().is_some_and(|i| i.packets > 0)
                && c.outbound.as_ref().is_some_and(|o| o.packets > 0)
        });
        let t = &p.totals;
        let totals = t.packets_in > 0 && t.packets_out > 0 && t.bytes_in > 0 && t.bytes_out > 0;
        if counted && totals {
            seen = Some(p);
            Ok(())
        } else {
            Err(format!("{p:?}"))
        }
    })
    .unwrap();
    seen.expect("set when the wait ended")
}
