//! FRR 8.4: zebra (the kernel FIB) and bgpd, both in the foreground as user `frr`
//! (root is not in `frrvty`), with explicit pid, zserv and vty socket paths in the
//! instance's own dir and the TCP vty off (`-P 0`), so several instances run side by
//! side. `vtysh --vty_socket DIR` needs no `ip netns exec`; everything has `json`.
//! A neighbour with [`super::Neighbor::bfd`] adds bfdd (its control socket in the same
//! dir, `--bfdctl`), started between zebra and bgpd, and `neighbor X bfd`.

use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;

use super::{BgpDaemon, Family, PeerConfig, Route};
use crate::netns::Netns;

pub struct Frr {
    bgpd: Option<Child>,
    bfdd: Option<Child>,
    zebra: Option<Child>,
    bgpd_pid: u32,
    dir: tempfile::TempDir,
    config: PeerConfig,
}

impl Frr {
    /// zebra, then bgpd once zebra's zserv socket exists (bgpd would otherwise start
    /// without a FIB and retry).
    pub fn start(ns: &Netns, config: PeerConfig) -> io::Result<Frr> {
        let dir = super::runtime_dir("frr");
        let d = &dir.path().to_path_buf();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        let status = Command::new("chown").arg("frr:frr").arg(d).status()?;
        if !status.success() {
            return Err(io::Error::other("chown frr:frr of the FRR runtime dir"));
        }
        std::fs::write(d.join("zebra.conf"), "hostname zebra\n")?;
        std::fs::write(d.join("bgpd.conf"), render(&config, d))?;
        let zserv = d.join("zserv.api");
        let daemon = |name: &str, extra: &[&str]| -> io::Result<Child> {
            Command::new("ip")
                .args(["netns", "exec", ns.name()])
                .arg(format!("/usr/lib/frr/{name}"))
                .arg("-f")
                .arg(d.join(format!("{name}.conf")))
                .arg("-i")
                .arg(d.join(format!("{name}.pid")))
                .arg("-z")
                .arg(&zserv)
                .arg("--vty_socket")
                .arg(d)
                .args(["-u", "frr", "-g", "frr", "-P", "0"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(d.join(format!("{name}.stdout")))?)
                .stderr(std::fs::File::create(d.join(format!("{name}.stderr")))?)
                .spawn()
        };
        let zlog = format!("file:{}", d.join("zebra.log").display());
        let zebra = daemon("zebra", &["--log", &zlog])?;
        let mut frr = Frr {
            bgpd: None,
            bfdd: None,
            zebra: Some(zebra),
            bgpd_pid: 0,
            dir,
            config,
        };
        crate::wait_until(
            "zebra's zserv socket",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || zserv.exists(),
        )
        .map_err(|e| super::not_up(&frr, e))?;
        if frr.config.neighbors.iter().any(|n| n.bfd) {
            std::fs::write(d.join("bfdd.conf"), "hostname bfdd\n")?;
            let blog = format!("file:{}", d.join("bfdd.log").display());
            let ctl = d.join("bfdd.sock");
            let bfdd = daemon(
                "bfdd",
                &["--log", &blog, "--bfdctl", &ctl.to_string_lossy()],
            )?;
            frr.bfdd = Some(bfdd);
            crate::wait_until(
                "bfdd's control socket",
                Duration::from_secs(10),
                Duration::from_millis(20),
                || ctl.exists(),
            )
            .map_err(|e| super::not_up(&frr, e))?;
        }
        let port = frr.config.listen_port.to_string();
        let bgpd = daemon("bgpd", &["-p", &port])?;
        frr.bgpd_pid = bgpd.id();
        frr.bgpd = Some(bgpd);
        crate::wait_until(
            "bgpd's vty",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || frr.vtysh("show bgp summary json").is_ok(),
        )
        .map_err(|e| super::not_up(&frr, e))?;
        Ok(frr)
    }

    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// PID of zebra (which holds the FIB copy).
    pub fn zebra_pid(&self) -> u32 {
        self.zebra.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The dir of the vty sockets: `vtysh --vty_socket DIR` reaches this instance.
    pub fn vty_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether zebra, bgpd or bfdd exited (each reaped then, so none is left a zombie;
    /// for an owner that watches them, like `strait-testbed up`).
    pub fn exited(&mut self) -> bool {
        let mut any = false;
        for c in [&mut self.zebra, &mut self.bgpd, &mut self.bfdd]
            .into_iter()
            .flatten()
        {
            any |= !matches!(c.try_wait(), Ok(None));
        }
        any
    }

    /// `vtysh --vty_socket DIR -c CMD`, its output.
    pub fn vtysh(&self, cmd: &str) -> io::Result<String> {
        let out = Command::new("vtysh")
            .arg("--vty_socket")
            .arg(self.dir.path())
            .args(["-c", cmd])
            .stdin(Stdio::null())
            .output()?;
        let text = super::ok_stdout("vtysh", out)?;
        if text.contains("failed to connect") || text.contains("Exiting: failed") {
            return Err(io::Error::other(text));
        }
        Ok(text)
    }

    /// `vtysh -c CMD` parsed as JSON.
    pub fn vtysh_json(&self, cmd: &str) -> io::Result<Value> {
        let text = self.vtysh(cmd)?;
        serde_json::from_str(&text).map_err(|e| io::Error::other(format!("{cmd}: {e}: {text}")))
    }

    /// Prefixes received from `neighbor` in `family` (`pfxRcd` of the summary).
    pub fn received(&self, neighbor: IpAddr, family: Family) -> io::Result<u64> {
        let v = self.vtysh_json("show bgp summary json")?;
        Ok(v[afi_key(family)]["peers"][neighbor.to_string()]["pfxRcd"]
            .as_u64()
            .unwrap_or(0))
    }

    /// bfdd's state of the session with `peer` (`up`, `down`, `init`, `adm-down`;
    /// `show bfd peers json`), `None` when bfdd has no such session.
    pub fn bfd_status(&self, peer: IpAddr) -> io::Result<Option<String>> {
        let v = self.vtysh_json("show bfd peers json")?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .find(|s| s["peer"].as_str() == Some(&peer.to_string()))
            .and_then(|s| s["status"].as_str())
            .map(str::to_string))
    }

    /// The paths of one prefix that are marked stale (RFC 4724: kept for a
    /// restarting peer until its End-of-RIB), and the number of paths in all.
    pub fn stale_paths(&self, prefix: &str) -> io::Result<(usize, usize)> {
        let p: IpNet = prefix.parse().map_err(io::Error::other)?;
        let v = self.vtysh_json(&format!(
            "show bgp {} unicast {prefix} json",
            afi(Family::of_net(&p))
        ))?;
        let paths = v["paths"].as_array().cloned().unwrap_or_default();
        let stale = paths
            .iter()
            .filter(|p| p["stale"].as_bool().unwrap_or(false))
            .count();
        Ok((stale, paths.len()))
    }

    /// The paths for one prefix with every attribute (`show bgp … PREFIX json`).
    fn prefix_detail(&self, family: Family, prefix: &str) -> io::Result<Vec<Route>> {
        let v = self.vtysh_json(&format!("show bgp {} unicast {prefix} json", afi(family)))?;
        let p: IpNet = prefix.parse().map_err(io::Error::other)?;
        let mut out = vec![];
        for path in v["paths"].as_array().into_iter().flatten() {
            let next_hop = path["nexthops"]
                .as_array()
                .and_then(|n| n.first())
                .and_then(|n| n["ip"].as_str())
                .and_then(|s| s.parse::<IpAddr>().ok())
                .filter(|a| !a.is_unspecified());
            out.push(Route {
                prefix: p,
                next_hop,
                as_path: as_path(&path["aspath"]["string"]),
                originator_id: path["originatorId"].as_str().and_then(|s| s.parse().ok()),
                cluster_list: path["clusterList"]["list"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().and_then(|s| s.parse().ok()))
                    .collect(),
                local_pref: path["locPrf"].as_u64().map(|l| l as u32),
                best: path["bestpath"]["overall"].as_bool().unwrap_or(false),
            });
        }
        Ok(out)
    }
}

fn afi(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

fn afi_key(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4Unicast",
        Family::V6 => "ipv6Unicast",
    }
}

fn as_path(v: &Value) -> Vec<u32> {
    v.as_str()
        .unwrap_or("")
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|a| a.parse().ok())
        .collect()
}

impl BgpDaemon for Frr {
    fn kind(&self) -> &'static str {
        "frr"
    }

    fn pid(&self) -> u32 {
        self.bgpd_pid
    }

    fn session_state(&self, neighbor: IpAddr) -> io::Result<String> {
        let v = self.vtysh_json(&format!("show bgp neighbors {neighbor} json"))?;
        v[neighbor.to_string()]["bgpState"]
            .as_str()
            .map(|s| match s {
                "Connect" | "Active" | "OpenSent" | "OpenConfirm" | "Established" | "Idle" => {
                    s.to_string()
                }
                other => format!("Idle ({other})"),
            })
            .ok_or_else(|| io::Error::other(format!("no neighbour {neighbor} in FRR: {v}")))
    }

    fn routes(&self, family: Family) -> io::Result<Vec<Route>> {
        let v = self.vtysh_json(&format!("show bgp {} unicast json", afi(family)))?;
        let mut out = vec![];
        if let Some(m) = v["routes"].as_object() {
            for prefix in m.keys() {
                out.extend(self.prefix_detail(family, prefix)?);
            }
        }
        Ok(out)
    }

    fn prefix_count(&self, family: Family) -> io::Result<usize> {
        // Received from every neighbour plus our own: the summary is O(peers), unlike
        // the table dump.
        let v = self.vtysh_json("show bgp summary json")?;
        let received: u64 = v[afi_key(family)]["peers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, p)| p["pfxRcd"].as_u64().unwrap_or(0))
            .sum();
        let own = self
            .config
            .originate
            .iter()
            .filter(|p| Family::of_net(p) == family)
            .count();
        Ok(received as usize + own)
    }

    fn logs(&self) -> String {
        let d = self.dir.path();
        let mut s = String::new();
        for f in [
            "zebra.stderr",
            "zebra.log",
            "bfdd.stderr",
            "bfdd.log",
            "bgpd.stderr",
            "bgpd.stdout",
            "bgpd.log",
        ] {
            let _ = writeln!(s, "--- {f}\n{}", super::read_log(&d.join(f)));
        }
        s
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        super::print_logs_if_panicking(self);
        if let Some(c) = self.bgpd.take() {
            crate::process::terminate(c, Duration::from_secs(3));
        }
        if let Some(c) = self.bfdd.take() {
            crate::process::terminate(c, Duration::from_secs(3));
        }
        if let Some(c) = self.zebra.take() {
            crate::process::terminate(c, Duration::from_secs(3));
        }
    }
}

fn render(c: &PeerConfig, dir: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "frr defaults datacenter");
    let _ = writeln!(s, "hostname frr-{}", c.router_id);
    let _ = writeln!(
        s,
        "log file {} informational",
        dir.join("bgpd.log").display()
    );
    // Route-map changes (our nh6 at start-up too) otherwise wait 5 s before they apply.
    let _ = writeln!(s, "bgp route-map delay-timer 0");
    let _ = writeln!(s, "!");
    let _ = writeln!(s, "router bgp {}", c.asn);
    let _ = writeln!(s, " bgp router-id {}", c.router_id);
    if c.neighbors.iter().any(|n| n.rr_client) {
        let _ = writeln!(s, " bgp cluster-id {}", c.cluster_id.unwrap_or(c.router_id));
    }
    let _ = writeln!(s, " no bgp ebgp-requires-policy");
    let _ = writeln!(s, " no bgp network import-check");
    let _ = writeln!(s, " no bgp default ipv4-unicast");
    let keepalive = (c.hold_time / 3).max(1);
    for n in &c.neighbors {
        let a = n.address;
        let _ = writeln!(s, " neighbor {a} remote-as {}", n.asn);
        let _ = writeln!(s, " neighbor {a} timers {keepalive} {}", c.hold_time);
        let _ = writeln!(s, " neighbor {a} timers connect 1");
        if n.port != 179 {
            let _ = writeln!(s, " neighbor {a} port {}", n.port);
        }
        if let Some(k) = &n.md5 {
            let _ = writeln!(s, " neighbor {a} password {k}");
        }
        if n.passive {
            let _ = writeln!(s, " neighbor {a} passive");
        }
        if let Some(l) = n.local {
            let _ = writeln!(s, " neighbor {a} update-source {l}");
        }
        if n.bfd {
            let _ = writeln!(s, " neighbor {a} bfd");
        }
        if n.extended_next_hop {
            let _ = writeln!(s, " neighbor {a} capability extended-nexthop");
        }
        if let Some(hops) = n.multihop {
            let _ = writeln!(s, " neighbor {a} ebgp-multihop {hops}");
        }
    }
    for family in [Family::V4, Family::V6] {
        let _ = writeln!(s, " address-family {} unicast", afi(family));
        for p in c.originate.iter().filter(|p| Family::of_net(p) == family) {
            let _ = writeln!(s, "  network {p}");
        }
        for n in &c.neighbors {
            let _ = writeln!(s, "  neighbor {} activate", n.address);
            if n.rr_client {
                let _ = writeln!(s, "  neighbor {} route-reflector-client", n.address);
            }
            if family == Family::V6 && c.next_hop_v6.is_some() {
                let _ = writeln!(s, "  neighbor {} route-map nh6 out", n.address);
            }
        }
        let _ = writeln!(s, " exit-address-family");
    }
    if let Some(nh) = c.next_hop_v6 {
        let _ = writeln!(
            s,
            "!\nroute-map nh6 permit 10\n set ipv6 next-hop global {nh}"
        );
    }
    let _ = writeln!(s, "!");
    s
}
