//! Interop with BIRD 2 (Debian package `bird2`): our speaker in one namespace, BIRD in
//! another, eBGP between 4-octet AS numbers over IPv4 with IPv4 and IPv6 unicast. The
//! session comes up whichever side opens the connection (BIRD active and we passive,
//! then the other way round), and a prefix of each family crosses each way.
//! Needs root and `bird`; skips visibly without them unless STRAIT_REQUIRE_PRIVILEGED=1.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use strait_bgp::codec::{AfiSafi, Capability, Update};
use strait_bgp::fsm;
use strait_bgp::session::{SessionConfig, SessionEvent, SessionHandle, announce_v4, announce_v6};
mod common;

use common::{NsRuntime, VethPair};
use strait_testbeds::netns::Netns;

const A4: &str = "10.233.0.1";
const B4: &str = "10.233.0.2";
const A6: &str = "fd00:b9d::1";
const B6: &str = "fd00:b9d::2";
const AS_STRAIT: u32 = 4_200_000_001;
const AS_BIRD: u32 = 4_200_000_002;

/// BIRD in the foreground, stopped by its PID when dropped.
struct Bird {
    child: Option<Child>,
    socket: String,
}

impl Bird {
    fn start(ns: &Netns, dir: &std::path::Path, passive: bool, md5: Option<&str>) -> Bird {
        let conf = dir.join("bird.conf");
        let socket = dir.join("bird.ctl").display().to_string();
        std::fs::write(
            &conf,
            format!(
                r#"
router id {B4};
log stderr all;
protocol device {{ }}
protocol static s4 {{ ipv4; route 203.0.113.0/24 blackhole; }}
protocol static s6 {{ ipv6; route 2001:db8:bd::/48 blackhole; }}
protocol bgp strait {{
  local {B4} as {AS_BIRD};
  neighbor {A4} as {AS_STRAIT};
  passive {passive};
  {password}
  hold time 9; keepalive time 3; connect retry time 1; error wait time 1, 5;
  ipv4 {{ import all; export where source = RTS_STATIC; }};
  ipv6 {{ import all; export where source = RTS_STATIC; next hop address {B6}; }};
}}
"#,
                passive = if passive { "on" } else { "off" },
                password = md5
                    .map(|k| format!("password \"{k}\";"))
                    .unwrap_or_default(),
            ),
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "bird", "-f", "-c"])
            .arg(&conf)
            .args(["-s", &socket, "-P"])
            .arg(dir.join("bird.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bird");
        Bird {
            child: Some(child),
            socket,
        }
    }

    fn birdc(&self, args: &[&str]) -> String {
        let out = Command::new("birdc")
            .args(["-s", &self.socket])
            .args(args)
            .output()
            .expect("run birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Poll `birdc` until `pred` holds for its output, or panic after `limit`.
    fn wait_for(&self, args: &[&str], limit: Duration, pred: impl Fn(&str) -> bool) {
        let start = Instant::now();
        loop {
            let out = self.birdc(args);
            if pred(&out) {
                return;
            }
            if start.elapsed() > limit {
                panic!("birdc {args:?} never satisfied the test within {limit:?}:\n{out}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            strait_testbeds::process::terminate(c, Duration::from_secs(3));
        }
    }
}

fn bird_installed() -> bool {
    Command::new("bird")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn config(passive: bool) -> SessionConfig {
    let fsm = fsm::Config {
        local_asn: AS_STRAIT,
        peer_asn: AS_BIRD,
        bgp_id: A4.parse().unwrap(),
        hold_time: 9,
        connect_retry: Duration::from_secs(1),
        idle_hold: Duration::from_secs(1),
        passive,
        capabilities: vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::RouteRefresh,
        ],
    };
    let mut c = SessionConfig::new(fsm, B4.parse().unwrap());
    c.local = Some(A4.parse().unwrap());
    c
}

/// Every prefix announced in the UPDATEs seen until both wanted ones arrived.
fn wait_for_prefixes(
    rt: &tokio::runtime::Runtime,
    s: &mut SessionHandle,
    wanted: &[IpNet],
) -> Vec<Update> {
    let mut seen = Vec::new();
    let mut updates = Vec::new();
    rt.block_on(async {
        let limit = Duration::from_secs(20);
        while !wanted.iter().all(|w| seen.contains(w)) {
            match tokio::time::timeout(limit, s.next_event()).await {
                Ok(Some(SessionEvent::Update(u))) => {
                    seen.extend(u.nlri.iter().map(|n| IpNet::V4(*n)));
                    if let Some(m) = u.mp_reach() {
                        seen.extend_from_slice(&m.nlri);
                    }
                    updates.push(u);
                }
                Ok(Some(other)) => panic!("expected UPDATEs from BIRD, got {other:?}"),
                Ok(None) => panic!("session task ended"),
                Err(_) => panic!("BIRD's prefixes {wanted:?} not received, saw {seen:?}"),
            }
        }
    });
    updates
}

/// `md5`: the key of each side, ours first.
fn scenario(strait_passive: bool, md5: Option<(&str, &str)>) {
    let net = VethPair::new(A4, B4, A6, B6);
    net.up();
    let (a, b) = (&net.a, &net.b);
    let prefix = &net.prefix;
    for ns in [a, b] {
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
    }

    let dir = std::env::temp_dir().join(format!("{prefix}bird"));
    std::fs::create_dir_all(&dir).unwrap();
    let node = NsRuntime::start(a);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = config(strait_passive);
    cfg.md5_key = md5.map(|(ours, _)| ours.as_bytes().to_vec());
    let (_listener, mut session) =
        node.speaker(SocketAddr::new(A4.parse::<IpAddr>().unwrap(), 179), cfg);
    let bird = Bird::start(b, &dir, !strait_passive, md5.map(|(_, theirs)| theirs));

    if let Some((ours, theirs)) = md5
        && ours != theirs
    {
        // The kernel drops every unsigned-for-us segment: no connection, no OPEN.
        let up = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(8), session.next_event()).await
        });
        assert!(up.is_err(), "an event despite mismatched MD5 keys: {up:?}");
        assert!(
            !bird
                .birdc(&["show", "protocols", "strait"])
                .contains("Established")
        );
        drop(bird);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let negotiated = rt.block_on(async {
        match tokio::time::timeout(Duration::from_secs(30), session.next_event()).await {
            Ok(Some(SessionEvent::Up(n))) => n,
            other => panic!(
                "no session with BIRD: {other:?}, state {:?}",
                session.state()
            ),
        }
    });
    assert!(negotiated.codec.four_octet_as, "4-octet AS with BIRD");
    assert_eq!(negotiated.peer.asn(), AS_BIRD);
    bird.wait_for(
        &["show", "protocols", "strait"],
        Duration::from_secs(10),
        |o| o.contains("Established"),
    );

    // BIRD to us: its static routes, IPv4 as NLRI, IPv6 in MP_REACH_NLRI.
    let from_bird: [IpNet; 2] = [
        "203.0.113.0/24".parse().unwrap(),
        "2001:db8:bd::/48".parse().unwrap(),
    ];
    let updates = wait_for_prefixes(&rt, &mut session, &from_bird);
    assert!(
        updates
            .iter()
            .any(|u| u.nlri.iter().any(|n| IpNet::V4(*n) == from_bird[0]))
    );

    // Us to BIRD.
    let p4: Ipv4Net = "198.51.100.0/24".parse().unwrap();
    let p6: Ipv6Net = "2001:db8:5a::/48".parse().unwrap();
    rt.block_on(session.send_update(announce_v4(AS_STRAIT, true, A4.parse().unwrap(), &[p4])))
        .expect("announce IPv4");
    rt.block_on(session.send_update(announce_v6(AS_STRAIT, true, A6.parse().unwrap(), &[p6])))
        .expect("announce IPv6");
    let limit = Duration::from_secs(10);
    bird.wait_for(
        &["show", "route", "protocol", "strait", "all"],
        limit,
        |o| {
            o.contains("198.51.100.0/24")
                && o.contains("2001:db8:5a::/48")
                && o.contains(&AS_STRAIT.to_string())
        },
    );

    drop(session);
    drop(bird);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

fn require_bird(test: &str) -> bool {
    if !strait_testbeds::require_root(test) {
        return false;
    }
    if bird_installed() {
        return true;
    }
    if std::env::var("STRAIT_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!(
            "{test}: needs bird (Debian package bird2), and STRAIT_REQUIRE_PRIVILEGED=1 forbids skipping"
        );
    }
    eprintln!("SKIP: {test}: needs bird (Debian package bird2)");
    false
}

#[test]
fn bird_opens_the_session_and_routes_cross_both_ways() {
    if require_bird("bird_opens_the_session") {
        scenario(true, None);
    }
}

#[test]
fn strait_opens_the_session_to_bird_and_routes_cross_both_ways() {
    if require_bird("strait_opens_the_session_to_bird") {
        scenario(false, None);
    }
}

#[test]
fn md5_session_with_bird() {
    if require_bird("md5_session_with_bird") {
        // BIRD connects: the key is checked on our listening socket.
        scenario(true, Some(("strait-bird", "strait-bird")));
    }
}

#[test]
fn md5_mismatch_with_bird_gives_no_session() {
    if require_bird("md5_mismatch_with_bird_gives_no_session") {
        // We connect: our connecting socket signs with a key BIRD does not accept.
        scenario(false, Some(("strait-key", "bird-key")));
    }
}
