//! gobgpd 3.10: its gRPC API on the namespace's own loopback (127.0.0.1:50051 in every
//! namespace), so the `gobgp` CLI runs through `ip netns exec`. Originated prefixes are
//! added with `gobgp global rib add` once the API answers. No kernel FIB: gobgpd's
//! zebra client is broken against FRR 8.4 (osrg/gobgp#2681, see PEERS.md).

use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;

use super::{BgpDaemon, Family, PeerConfig, Route};
use crate::netns::Netns;

pub struct Gobgp {
    child: Option<Child>,
    pid: u32,
    dir: tempfile::TempDir,
    netns: String,
    config: PeerConfig,
}

impl Gobgp {
    pub fn start(ns: &Netns, config: PeerConfig) -> io::Result<Gobgp> {
        let dir = super::runtime_dir("gobgp");
        let conf = dir.path().join("gobgpd.toml");
        std::fs::write(&conf, render(&config))?;
        let log = std::fs::File::create(dir.path().join("gobgpd.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "gobgpd", "-f"])
            .arg(&conf)
            .args([
                "-t",
                "toml",
                "--api-hosts",
                "127.0.0.1:50051",
                "--pprof-disable",
                "-l",
                "info",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let g = Gobgp {
            pid: child.id(),
            child: Some(child),
            dir,
            netns: ns.name().to_string(),
            config,
        };
        crate::wait_until(
            "gobgpd's API",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || g.gobgp(&["global"]).is_ok(),
        )
        .map_err(|e| super::not_up(&g, e))?;
        for p in g.config.originate.clone() {
            g.add(&p)?;
        }
        Ok(g)
    }

    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// Originate `prefix` (IPv6 with the configured `next_hop_v6`).
    pub fn add(&self, prefix: &IpNet) -> io::Result<()> {
        let p = prefix.to_string();
        let nh = self.config.next_hop_v6.map(|a| a.to_string());
        let mut args = vec!["global", "rib", "add", "-a"];
        match prefix {
            IpNet::V4(_) => args.extend(["ipv4", &p]),
            IpNet::V6(_) => {
                args.extend(["ipv6", &p]);
                if let Some(nh) = &nh {
                    args.extend(["nexthop", nh]);
                }
            }
        }
        self.gobgp(&args).map(|_| ())
    }

    /// `ip netns exec NS gobgp args…`, its output.
    pub fn gobgp(&self, args: &[&str]) -> io::Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns, "gobgp"])
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        super::ok_stdout("gobgp", out)
    }

    fn gobgp_json(&self, args: &[&str]) -> io::Result<Value> {
        let text = self.gobgp(args)?;
        if text.trim().is_empty() || text.trim() == "null" {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| io::Error::other(format!("gobgp {args:?}: {e}")))
    }
}

fn afi(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

/// gobgp's `session_state` enum (apipb.PeerState.SessionState).
fn state_name(n: u64) -> &'static str {
    match n {
        2 => "Connect",
        3 => "Active",
        4 => "OpenSent",
        5 => "OpenConfirm",
        6 => "Established",
        _ => "Idle",
    }
}

fn route_of(prefix: IpNet, path: &Value) -> Route {
    let mut r = Route {
        prefix,
        next_hop: None,
        as_path: vec![],
        originator_id: None,
        cluster_list: vec![],
        local_pref: None,
        best: path["best"].as_bool().unwrap_or(false),
    };
    for a in path["attrs"].as_array().into_iter().flatten() {
        match a["type"].as_u64() {
            Some(2) => {
                r.as_path = a["as_paths"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|seg| seg["asns"].as_array().cloned().unwrap_or_default())
                    .filter_map(|n| n.as_u64().map(|n| n as u32))
                    .collect()
            }
            Some(3) | Some(14) => {
                if let Some(nh) = a["nexthop"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
                    r.next_hop = Some(nh).filter(|a| !a.is_unspecified());
                }
            }
            Some(5) => r.local_pref = a["value"].as_u64().map(|v| v as u32),
            Some(9) => r.originator_id = a["value"].as_str().and_then(|s| s.parse().ok()),
            Some(10) => {
                r.cluster_list = a["value"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c.as_str().and_then(|s| s.parse().ok()))
                    .collect()
            }
            _ => {}
        }
    }
    r
}

impl BgpDaemon for Gobgp {
    fn kind(&self) -> &'static str {
        "gobgp"
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    fn session_state(&self, neighbor: IpAddr) -> io::Result<String> {
        let v = self.gobgp_json(&["neighbor", "-j"])?;
        let want = neighbor.to_string();
        v.as_array()
            .into_iter()
            .flatten()
            .find(|n| n["conf"]["neighbor_address"].as_str() == Some(want.as_str()))
            .map(|n| state_name(n["state"]["session_state"].as_u64().unwrap_or(0)).to_string())
            .ok_or_else(|| io::Error::other(format!("no neighbour {neighbor} in gobgpd")))
    }

    fn routes(&self, family: Family) -> io::Result<Vec<Route>> {
        let v = self.gobgp_json(&["global", "rib", "-a", afi(family), "-j"])?;
        let mut out = vec![];
        for (prefix, paths) in v.as_object().into_iter().flatten() {
            let Ok(p) = prefix.parse::<IpNet>() else {
                continue;
            };
            for path in paths.as_array().into_iter().flatten() {
                out.push(route_of(p, path));
            }
        }
        Ok(out)
    }

    fn prefix_count(&self, family: Family) -> io::Result<usize> {
        // "Table ipv4-unicast\nDestination: 3, Path: 3"
        let out = self.gobgp(&["global", "rib", "summary", "-a", afi(family)])?;
        out.split([',', '\n'])
            .find_map(|part| part.trim().strip_prefix("Destination:"))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("gobgp global rib summary: {out}")))
    }

    fn logs(&self) -> String {
        super::read_log(&self.dir.path().join("gobgpd.log"))
    }
}

impl Drop for Gobgp {
    fn drop(&mut self) {
        super::print_logs_if_panicking(self);
        if let Some(c) = self.child.take() {
            crate::process::terminate(c, Duration::from_secs(3));
        }
    }
}

fn render(c: &PeerConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "[global.config]");
    let _ = writeln!(s, "  as = {}", c.asn);
    let _ = writeln!(s, "  router-id = \"{}\"", c.router_id);
    let _ = writeln!(s, "  port = {}", c.listen_port);
    let keepalive = (c.hold_time / 3).max(1);
    for n in &c.neighbors {
        let _ = writeln!(s, "\n[[neighbors]]\n  [neighbors.config]");
        let _ = writeln!(s, "    neighbor-address = \"{}\"", n.address);
        let _ = writeln!(s, "    peer-as = {}", n.asn);
        if let Some(k) = &n.md5 {
            let _ = writeln!(s, "    auth-password = \"{k}\"");
        }
        let _ = writeln!(s, "  [neighbors.timers.config]");
        let _ = writeln!(s, "    connect-retry = 1");
        let _ = writeln!(s, "    hold-time = {}", c.hold_time);
        let _ = writeln!(s, "    keepalive-interval = {keepalive}");
        let _ = writeln!(s, "    idle-hold-time-after-reset = 1");
        let _ = writeln!(s, "  [neighbors.transport.config]");
        let _ = writeln!(s, "    passive-mode = {}", n.passive);
        let _ = writeln!(s, "    remote-port = {}", n.port);
        if let Some(l) = n.local {
            let _ = writeln!(s, "    local-address = \"{l}\"");
        }
        if n.rr_client {
            let _ = writeln!(s, "  [neighbors.route-reflector.config]");
            let _ = writeln!(s, "    route-reflector-client = true");
            let _ = writeln!(
                s,
                "    route-reflector-cluster-id = \"{}\"",
                c.cluster_id.unwrap_or(c.router_id)
            );
        }
        for fam in ["ipv4-unicast", "ipv6-unicast"] {
            let _ = writeln!(
                s,
                "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{fam}\""
            );
        }
    }
    s
}
