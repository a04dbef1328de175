//! Two ESP gateways for tests and benchmarks of `strait-esp`: namespaces `a` and `b`
//! joined by a veth "line" (192.0.2.1 ↔ 192.0.2.2, optionally shaped with `tbf`), and
//! strait's userspace datapath on both with static, matching SAs, protecting
//! 10.1.0.0/24 (behind `a`) and 10.2.0.0/24 (behind `b`, 10.2.0.1 on `b`'s TUN).
//! [`strongswan`] puts a pair of strongSwan charons (kernel-libipsec, its userspace
//! ESP) between the same two namespaces.
//!
//! Used by `esp/tests/userspace_privileged.rs` and `strait-bench-esp`; both own the
//! namespaces (deleted on drop) and drop the datapaths first.

pub mod strongswan;

use std::net::{IpAddr, SocketAddr};

use strait_esp::keylog::KeyLog;
use strait_esp::{Cipher, Datapath, PeerConfig, SaConfig, SaKey, Userspace, UserspaceConfig};

use crate::netns::Netns;

pub const A_OUTER: &str = "192.0.2.1";
pub const B_OUTER: &str = "192.0.2.2";
/// What `a` protects; `a` must own [`A_INNER`] before [`StraitPair::start`].
pub const A_NET: &str = "10.1.0.0/24";
pub const A_INNER: &str = "10.1.0.1";
/// What `b` protects; [`B_INNER`] sits on `b`'s TUN.
pub const B_NET: &str = "10.2.0.0/24";
pub const B_INNER: &str = "10.2.0.1";

/// Namespaces `{prefix}a` and `{prefix}b` (IPv6 off, forwarding on), joined by veth
/// `{prefix}ab` ↔ `{prefix}ba` with [`A_OUTER`] and [`B_OUTER`].
pub struct Line {
    pub a: Netns,
    pub b: Netns,
    pub veth_a: String,
    pub veth_b: String,
}

impl Line {
    pub fn new(prefix: &str) -> Self {
        let (a, b) = (
            Netns::new(format!("{prefix}a")),
            Netns::new(format!("{prefix}b")),
        );
        let (veth_a, veth_b) = (format!("{prefix}ab"), format!("{prefix}ba"));
        for ns in [&a, &b] {
            ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
            ns.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
            ns.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        }
        a.exec_ok(&[
            "ip",
            "link",
            "add",
            &veth_a,
            "type",
            "veth",
            "peer",
            "name",
            &veth_b,
            "netns",
            b.name(),
        ]);
        a.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{A_OUTER}/24"),
            "dev",
            &veth_a,
        ]);
        b.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{B_OUTER}/24"),
            "dev",
            &veth_b,
        ]);
        a.exec_ok(&["ip", "link", "set", &veth_a, "up"]);
        b.exec_ok(&["ip", "link", "set", &veth_b, "up"]);
        Self {
            a,
            b,
            veth_a,
            veth_b,
        }
    }

    /// Shape both ends to `mbit` with `tbf` (a bucket of ~2 ms, at least 64 KiB), or
    /// remove the shaping (`None`).
    pub fn shape(&self, mbit: Option<u32>) {
        for (ns, dev) in [(&self.a, &self.veth_a), (&self.b, &self.veth_b)] {
            let _ = ns.exec(&["tc", "qdisc", "del", "dev", dev, "root"]);
            if let Some(rate) = mbit {
                let burst = (u64::from(rate) * 1_000_000 / 8 / 500).max(64 * 1024);
                ns.exec_ok(&[
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    &format!("{rate}mbit"),
                    "burst",
                    &burst.to_string(),
                    "latency",
                    "20ms",
                ]);
            }
        }
    }
}

/// A fixed test key for `cipher`, different per `seed`.
pub fn key(cipher: Cipher, seed: u8) -> SaKey {
    let bytes: Vec<u8> = (0..cipher.keymat_len() as u8)
        .map(|i| i.wrapping_mul(7) ^ seed)
        .collect();
    SaKey::new(cipher, &bytes).expect("key length of the cipher")
}

/// An SA with a 2048-packet window. Wireshark 4.0's `esp_sa` table has no ESN column,
/// so SAs that tshark checks use 32-bit sequence numbers (`esn: false`).
pub fn sa(spi: u32, key: &SaKey, esn: bool) -> SaConfig {
    SaConfig {
        spi,
        key: key.clone(),
        esn,
        replay_window: 2048,
        // The userspace datapath speaks ESP in UDP only.
        udp_encap: true,
    }
}

/// How [`StraitPair::start`] sets the datapaths up.
#[derive(Debug, Clone)]
pub struct StraitOpts {
    pub tun_a: String,
    pub tun_b: String,
    pub queues: usize,
    /// The UDP port both ends use (4500 unless another ESP stack needs it).
    pub port: u16,
    pub mtu: u32,
    /// Make the TUNs persistent (they outlive the datapaths).
    pub persist: bool,
}

/// strait's userspace datapath on both ends of a [`Line`], peers configured, routes
/// to the other side's network through the TUNs, no SA yet.
pub struct StraitPair {
    pub dp_a: Userspace,
    pub dp_b: Userspace,
    pub opts: StraitOpts,
}

impl StraitPair {
    pub fn start(line: &Line, opts: StraitOpts) -> Self {
        let start = |ns: &Netns, tun: &str| {
            let mut cfg = UserspaceConfig::new(tun);
            cfg.queues = opts.queues;
            cfg.mtu = Some(opts.mtu);
            cfg.persist = opts.persist;
            cfg.bind = SocketAddr::from(([0, 0, 0, 0], opts.port));
            ns.run_in(move || Userspace::start(cfg).map_err(std::io::Error::other))
                .expect("start the userspace datapath")
        };
        let dp_a = start(&line.a, &opts.tun_a);
        let dp_b = start(&line.b, &opts.tun_b);
        line.a.exec_ok(&[
            "ip",
            "route",
            "add",
            B_NET,
            "dev",
            &opts.tun_a,
            "src",
            A_INNER,
        ]);
        line.b.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{B_INNER}/32"),
            "dev",
            &opts.tun_b,
        ]);
        line.b.exec_ok(&[
            "ip",
            "route",
            "add",
            A_NET,
            "dev",
            &opts.tun_b,
            "src",
            B_INNER,
        ]);
        let peer = |local: &str, remote: &str, prefix: &str| PeerConfig {
            local: local.parse().expect("address"),
            remote: SocketAddr::new(remote.parse().expect("address"), opts.port),
            prefixes: vec![prefix.parse().expect("prefix")],
        };
        dp_a.add_peer("b", peer(A_OUTER, B_OUTER, B_NET))
            .expect("peer b");
        dp_b.add_peer("a", peer(B_OUTER, A_OUTER, A_NET))
            .expect("peer a");
        Self { dp_a, dp_b, opts }
    }

    /// Install the SA pair `spi_ab` (a → b) and `spi_ba` with keys made from `seed`:
    /// both inbound SAs first, then both outbound switches, as a rekey does, so no
    /// packet meets an SPI its receiver does not know yet. Logged to `keylog` if given.
    pub fn install(
        &self,
        cipher: Cipher,
        (spi_ab, spi_ba): (u32, u32),
        seed: u8,
        esn: bool,
        keylog: Option<&KeyLog>,
    ) {
        let (k_ab, k_ba) = (key(cipher, seed), key(cipher, seed ^ 0x33));
        if let Some(log) = keylog {
            let (a, b): (IpAddr, IpAddr) = (
                A_OUTER.parse().expect("address"),
                B_OUTER.parse().expect("address"),
            );
            log.record(a, b, spi_ab, &k_ab).expect("key log");
            log.record(b, a, spi_ba, &k_ba).expect("key log");
        }
        self.dp_b
            .install_inbound("a", sa(spi_ab, &k_ab, esn))
            .expect("inbound on b");
        self.dp_a
            .install_inbound("b", sa(spi_ba, &k_ba, esn))
            .expect("inbound on a");
        self.dp_a
            .install_outbound("b", sa(spi_ab, &k_ab, esn))
            .expect("outbound on a");
        self.dp_b
            .install_outbound("a", sa(spi_ba, &k_ba, esn))
            .expect("outbound on b");
    }

    /// Remove an SA pair installed earlier (after a rekey replaced it).
    pub fn remove(&self, (spi_ab, spi_ba): (u32, u32)) {
        use strait_esp::Direction::{Inbound, Outbound};
        let _ = self.dp_a.remove_sa("b", Outbound, spi_ab);
        let _ = self.dp_b.remove_sa("a", Outbound, spi_ba);
        let _ = self.dp_b.remove_sa("a", Inbound, spi_ab);
        let _ = self.dp_a.remove_sa("b", Inbound, spi_ba);
    }
}
