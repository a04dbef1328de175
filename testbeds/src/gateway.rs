//! A strait site and another vendor's IPsec gateway, for the gateway tests and
//! benchmarks: a cluster of site `dc` (some hosts started with `--ipsec-gateway`),
//! strongSwan's charon (kernel-libipsec) in an underlay peer namespace, and a LAN
//! `192.168.50.0/24` behind charon with one host, [`LAN_HOST`].
//!
//! The bed builds the namespaces and charon's configuration; each test declares the
//! external peer its own way (`netctl ipsec peer add`, a YAML document) and checks
//! what it needs through [`external`] (the peer as `netctl ipsec peers` shows it).

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
pub struct GatewayBed {
    pub cluster: Cluster,
    /// charon's underlay address.
    pub gw_addr: String,
    /// The LAN host's namespace.
    pub lan: Netns,
}

impl GatewayBed {
    /// `hosts` host-gw hosts of site `dc`; those at the indices in `gateways` are
    /// started with `--ipsec-gateway`; `extra` flags go to every agent.
    pub fn start(hosts: usize, gateways: &[usize], lease_ttl: Option<u64>, extra: &[&str]) -> Self {
        let mut opts = ClusterOpts::new(hosts, Fabric::HostGw);
        opts.agent_extra = vec!["--site".into(), "dc".into()];
        opts.agent_extra.extend(extra.iter().map(|s| s.to_string()));
        opts.host_extra = gateways
            .iter()
            .map(|i| (*i, vec!["--ipsec-gateway".into()]))
            .collect();
        opts.node_lease_ttl_secs = lease_ttl;
        let mut cluster = Cluster::start(opts);
        let prefix = cluster.prefix.clone();
        let (gw, gw4, _) = cluster.add_underlay_peer(50);
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
        Self {
            cluster,
            gw_addr: gw4.to_string(),
            lan,
        }
    }

    /// charon's namespace.
    pub fn charon_ns(&self) -> &Netns {
        &self.cluster.peers()[0]
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
