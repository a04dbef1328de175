//! BIRD 2 (`bird`, `birdc`): one process in the foreground per instance, its own
//! control socket; `birdc` needs no `ip netns exec` (it talks to the socket). Text
//! output only in 2.0.12, parsed here.

use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ipnet::IpNet;

use super::{BgpDaemon, Family, PeerConfig, Route};
use crate::netns::Netns;

pub struct Bird {
    child: Option<Child>,
    pid: u32,
    dir: tempfile::TempDir,
    config: PeerConfig,
    pub socket: PathBuf,
}

impl Bird {
    /// Start `bird` in `ns` with `config`. Neighbour `i` is the protocol `n<i>`.
    pub fn start(ns: &Netns, config: PeerConfig) -> io::Result<Bird> {
        let dir = super::runtime_dir("bird");
        let socket = dir.path().join("bird.ctl");
        let conf = dir.path().join("bird.conf");
        std::fs::write(&conf, render(&config, &dir.path().join("bird.log")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(dir.path().join("bird.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("bird.stderr"))?)
            .spawn()?;
        let pid = child.id();
        let bird = Bird {
            child: Some(child),
            pid,
            dir,
            config,
            socket,
        };
        // Ready when the control socket answers.
        crate::wait_until(
            "bird control socket",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || bird.birdc(&["show", "status"]).is_ok(),
        )
        .map_err(|e| super::not_up(&bird, e))?;
        Ok(bird)
    }

    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// Whether `bird` exited (reaped then, so it leaves no zombie; for an owner that
    /// watches it, like `strait-testbed up`).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Replace what BIRD originates and reconfigure it in place (`birdc configure`):
    /// BIRD's static protocol is the fastest bulk originator we have.
    pub fn set_originated(&mut self, prefixes: Vec<IpNet>) -> io::Result<()> {
        self.config.originate = prefixes;
        let conf = self.dir.path().join("bird.conf");
        std::fs::write(
            &conf,
            render(&self.config, &self.dir.path().join("bird.log")),
        )?;
        let out = self.birdc(&["configure"])?;
        if out.contains("Reconfigured") || out.contains("Reconfiguration in progress") {
            Ok(())
        } else {
            Err(io::Error::other(format!("birdc configure: {out}")))
        }
    }

    /// `birdc -s SOCKET args…`, its output.
    pub fn birdc(&self, args: &[&str]) -> io::Result<String> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        let text = super::ok_stdout("birdc", out)?;
        if text.contains("Unable to connect") {
            return Err(io::Error::other(text));
        }
        Ok(text)
    }

    fn protocol_of(&self, neighbor: IpAddr) -> io::Result<String> {
        self.config
            .neighbors
            .iter()
            .position(|n| n.address == neighbor)
            .map(|i| format!("n{i}"))
            .ok_or_else(|| io::Error::other(format!("{neighbor} is not a neighbour of bird")))
    }
}

impl BgpDaemon for Bird {
    fn kind(&self) -> &'static str {
        "bird"
    }

    fn pid(&self) -> u32 {
        self.pid
    }

    fn session_state(&self, neighbor: IpAddr) -> io::Result<String> {
        let proto = self.protocol_of(neighbor)?;
        let out = self.birdc(&["show", "protocols", &proto])?;
        // "n0  BGP  ---  up  12:00:00.000  Established": Info is the 6th column on.
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(proto.as_str()))
            .ok_or_else(|| io::Error::other(format!("no protocol {proto}: {out}")))?;
        Ok(line.split_whitespace().nth(5).unwrap_or("Idle").to_string())
    }

    fn routes(&self, family: Family) -> io::Result<Vec<Route>> {
        let table = match family {
            Family::V4 => "master4",
            Family::V6 => "master6",
        };
        Ok(parse_show_route_all(
            &self.birdc(&["show", "route", "all", "table", table])?,
        ))
    }

    fn prefix_count(&self, family: Family) -> io::Result<usize> {
        let table = match family {
            Family::V4 => "master4",
            Family::V6 => "master6",
        };
        let out = self.birdc(&["show", "route", "count", "table", table])?;
        // "3 of 3 routes for 3 networks in table master4"
        out.lines()
            .find_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let i = w.iter().position(|x| *x == "networks")?;
                w.get(i.checked_sub(1)?)?.parse().ok()
            })
            .ok_or_else(|| io::Error::other(format!("show route count: {out}")))
    }

    fn logs(&self) -> String {
        format!(
            "{}{}",
            super::read_log(&self.dir.path().join("bird.stderr")),
            super::read_log(&self.dir.path().join("bird.log"))
        )
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        super::print_logs_if_panicking(self);
        if let Some(c) = self.child.take() {
            crate::process::terminate(c, Duration::from_secs(3));
        }
    }
}

fn render(c: &PeerConfig, log: &std::path::Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "router id {};", c.router_id);
    let _ = writeln!(s, "log \"{}\" all;", log.display());
    let _ = writeln!(s, "protocol device {{ }}");
    if c.kernel_fib {
        for (name, fam) in [("k4", "ipv4"), ("k6", "ipv6")] {
            let _ = writeln!(
                s,
                "protocol kernel {name} {{ {fam} {{ import none; export where source = RTS_BGP; }}; merge paths on; }}"
            );
        }
    }
    let _ = writeln!(s, "protocol static s4 {{ ipv4;");
    for p in c.v4() {
        let _ = writeln!(s, "  route {p} blackhole;");
    }
    let _ = writeln!(s, "}}\nprotocol static s6 {{ ipv6;");
    for p in c.v6() {
        let _ = writeln!(s, "  route {p} blackhole;");
    }
    let _ = writeln!(s, "}}");
    let keepalive = (c.hold_time / 3).max(1);
    for (i, n) in c.neighbors.iter().enumerate() {
        let local = n.local.map(|a| format!("{a} ")).unwrap_or_default();
        let _ = writeln!(s, "protocol bgp n{i} {{");
        let _ = writeln!(s, "  local {local}port {} as {};", c.listen_port, c.asn);
        let _ = writeln!(s, "  neighbor {} port {} as {};", n.address, n.port, n.asn);
        if n.asn == c.asn {
            // iBGP on a shared subnet: next hops are on-link, no IGP to resolve them.
            let _ = writeln!(s, "  direct;");
        }
        let _ = writeln!(s, "  passive {};", if n.passive { "on" } else { "off" });
        if let Some(k) = &n.md5 {
            let _ = writeln!(s, "  password \"{k}\";");
        }
        if n.rr_client {
            let _ = writeln!(s, "  rr client;");
            let _ = writeln!(
                s,
                "  rr cluster id {};",
                c.cluster_id.unwrap_or(c.router_id)
            );
        }
        let _ = writeln!(
            s,
            "  hold time {}; keepalive time {keepalive}; connect retry time 1; error wait time 1, 5;",
            c.hold_time
        );
        let enh = if n.extended_next_hop {
            " extended next hop on;"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  ipv4 {{ import all; export where source ~ [ RTS_STATIC, RTS_BGP ];{enh} }};"
        );
        let nh6 = c
            .next_hop_v6
            .map(|a| format!(" next hop address {a};"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  ipv6 {{ import all; export where source ~ [ RTS_STATIC, RTS_BGP ];{nh6} }};"
        );
        let _ = writeln!(s, "}}");
    }
    s
}

/// Parses `birdc show route all`: a route line starts with the prefix (or, for a
/// further path of the same prefix, with whitespace then the route type), attribute
/// lines start with a tab.
fn parse_show_route_all(text: &str) -> Vec<Route> {
    let mut routes: Vec<Route> = vec![];
    let mut current: Option<IpNet> = None;
    for line in text.lines() {
        if line.starts_with('\t') {
            let Some(r) = routes.last_mut() else {
                continue;
            };
            let l = line.trim();
            if let Some(v) = l.strip_prefix("BGP.as_path:") {
                r.as_path = v
                    .split_whitespace()
                    .filter_map(|a| a.parse().ok())
                    .collect();
            } else if let Some(v) = l.strip_prefix("BGP.next_hop:") {
                r.next_hop = v.split_whitespace().next().and_then(|a| a.parse().ok());
            } else if let Some(v) = l.strip_prefix("BGP.originator_id:") {
                r.originator_id = v.trim().parse().ok();
            } else if let Some(v) = l.strip_prefix("BGP.cluster_list:") {
                r.cluster_list = v
                    .split_whitespace()
                    .filter_map(|a| a.parse::<Ipv4Addr>().ok())
                    .collect();
            } else if let Some(v) = l.strip_prefix("BGP.local_pref:") {
                r.local_pref = v.trim().parse().ok();
            }
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        if !line.starts_with(char::is_whitespace) {
            match first.parse::<IpNet>() {
                Ok(p) => current = Some(p),
                Err(_) => {
                    current = None;
                    continue;
                }
            }
        }
        let Some(prefix) = current else {
            continue;
        };
        if !line.contains('[') {
            continue;
        }
        routes.push(Route {
            prefix,
            next_hop: None,
            as_path: vec![],
            originator_id: None,
            cluster_list: vec![],
            local_pref: None,
            best: line.contains("] * ") || line.contains("] *\t") || line.ends_with("] *"),
        });
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_birdc_show_route_all() {
        // A further path of the same prefix starts with spaces, attributes with a tab.
        let text = [
            "BIRD 2.0.12 ready.",
            "Table master4:",
            "10.250.4.0/26        unicast [n0 23:01:44.803] * (100) [i]",
            "\tvia 10.99.0.4 on eth0",
            "\tType: BGP univ",
            "\tBGP.origin: IGP",
            "\tBGP.as_path: 4200000001 65001",
            "\tBGP.next_hop: 10.99.0.4",
            "\tBGP.local_pref: 100",
            "\tBGP.originator_id: 10.99.0.9",
            "\tBGP.cluster_list: 10.99.0.1 10.99.0.2",
            "                     unicast [n1 23:01:45.000] (100) [i]",
            "\tvia 10.99.0.5 on eth0",
            "\tBGP.next_hop: 10.99.0.5",
            "10.250.1.0/26        blackhole [s4 22:39:21.268] * (200)",
            "\tType: static univ",
        ]
        .join("\n");
        let text = text.as_str();
        let r = parse_show_route_all(text);
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(r[0].prefix, "10.250.4.0/26".parse::<IpNet>().unwrap());
        assert!(r[0].best);
        assert_eq!(r[0].as_path, vec![4_200_000_001, 65001]);
        assert_eq!(r[0].originator_id, Some(Ipv4Addr::new(10, 99, 0, 9)));
        assert_eq!(
            r[0].cluster_list,
            vec![Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2)]
        );
        assert_eq!(r[0].local_pref, Some(100));
        assert_eq!(r[1].prefix, r[0].prefix);
        assert!(!r[1].best);
        assert_eq!(r[1].next_hop, Some("10.99.0.5".parse().unwrap()));
        assert_eq!(r[2].next_hop, None);
        assert!(r[2].best);
    }
}
