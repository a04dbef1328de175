//! strongSwan's charon (5.9, kernel-libipsec) as the other end of a real IKE exchange:
//! two test-made netns joined by a veth, charon in one with a swanctl configuration
//! the test writes, our speaker on real UDP sockets (500 and 4500) in the other.
//! charon logs the Child SA keys (`chd = 4`), so a test can check they are ours.
//! Used by interop_charon_gateway.rs; [`super::charon`] (common/charon.rs) is the
//! other tests' bed, written at the same time: the two are to become one.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strait_ike::speaker::{ChildSa, Event, Speaker};
use strait_testbeds::netns::Netns;
use strait_testbeds::{unique_prefix, wait_until};

pub const CHARON: &str = "/usr/lib/ipsec/charon";
pub const OURS: &str = "10.231.0.1";
pub const THEIRS: &str = "10.231.0.2";

/// Why the charon tests cannot run here, if they cannot.
pub fn tool_missing() -> Option<String> {
    if !Path::new(CHARON).exists() {
        return Some(format!("{CHARON} is not installed"));
    }
    // AES-GCM in charon comes from the openssl plugin (libstrongswan-standard-plugins).
    let plugin = "/usr/lib/ipsec/plugins/libstrongswan-openssl.so";
    if !Path::new(plugin).exists() {
        return Some(format!("{plugin} is not installed"));
    }
    for tool in ["swanctl", "openssl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

pub fn sh(argv: &[&str]) -> Vec<u8> {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Our netns and charon's, joined by a veth: we are [`OURS`], charon [`THEIRS`] and
/// also holds 10.231.2.1 (libipsec routes its protected net through its TUN device
/// from an address it holds).
pub struct Bed {
    pub ours: Netns,
    pub theirs: Netns,
}

impl Bed {
    pub fn new() -> Bed {
        let prefix = unique_prefix();
        let ours = Netns::new(format!("{prefix}s"));
        let theirs = Netns::new(format!("{prefix}c"));
        ours.exec_ok(&[
            "ip",
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            theirs.name(),
        ]);
        for (ns, addr) in [(&ours, OURS), (&theirs, THEIRS)] {
            ns.exec_ok(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        }
        theirs.exec_ok(&["ip", "addr", "add", "10.231.2.1/32", "dev", "lo"]);
        Bed { ours, theirs }
    }

    /// Our speaker on sockets bound in our netns.
    pub fn driver(&self, speaker: Speaker) -> Driver {
        let (s500, s4500) = self
            .ours
            .run_in(|| {
                let a = UdpSocket::bind(format!("{OURS}:500"))?;
                let b = UdpSocket::bind(format!("{OURS}:4500"))?;
                for s in [&a, &b] {
                    s.set_read_timeout(Some(Duration::from_millis(20)))?;
                }
                Ok((a, b))
            })
            .unwrap();
        Driver {
            speaker,
            s500,
            s4500,
            events: Vec::new(),
        }
    }
}

/// charon in a netns with its own /run (it hard-codes its pid file and VICI socket
/// there), stopped by PID on drop.
pub struct Charon {
    child: Option<Child>,
    pub dir: PathBuf,
}

impl Charon {
    /// Start charon in `ns` with `swanctl_conf` (and the files it names, which the
    /// caller puts under `dir`: private/, x509/, x509ca/) and load it.
    pub fn start(ns: &Netns, dir: &Path, swanctl_conf: &str) -> Charon {
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let conf = dir.join("strongswan.conf");
        std::fs::write(
            &conf,
            format!(
                "charon {{
  load_modular = no
  load = random nonce openssl aes sha1 sha2 hmac gcm kdf pem pkcs1 pkcs8 x509 pubkey curve25519 kernel-libipsec kernel-netlink socket-default vici
  install_routes = no
  # Reauthentication opens the new IKE SA before the old one goes (5.9's default is
  # break-before-make); only reauthentication tests notice.
  make_before_break = yes
  filelog {{
    test {{
      path = {log}
      default = 1
      ike = 2
      chd = 4
      cfg = 2
      flush_line = yes
      append = no
    }}
  }}
  syslog {{
    daemon {{
      default = -1
    }}
  }}
}}
",
                log = dir.join("charon.log").display()
            ),
        )
        .unwrap();
        std::fs::write(dir.join("swanctl.conf"), swanctl_conf).unwrap();
        let script = format!(
            "mount --bind {run} /run && exec setsid {CHARON}",
            run = dir.join("run").display()
        );
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "env"])
            .arg(format!("STRONGSWAN_CONF={}", conf.display()))
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("charon.stdout")).unwrap())
            .stderr(std::fs::File::create(dir.join("charon.stderr")).unwrap())
            .spawn()
            .unwrap();
        let charon = Charon {
            child: Some(child),
            dir: dir.to_path_buf(),
        };
        let vici = dir.join("run/charon.vici");
        wait_until(
            "charon's VICI socket",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || vici.exists(),
        )
        .unwrap();
        let conf = dir.join("swanctl.conf");
        let loaded = charon.swanctl(&["--load-all", "--file", conf.to_str().unwrap()]);
        std::fs::write(dir.join("swanctl.stdout"), loaded).unwrap();
        charon
    }

    pub fn vici(&self) -> String {
        format!("unix://{}/run/charon.vici", self.dir.display())
    }

    pub fn swanctl(&self, args: &[&str]) -> String {
        let out = self.swanctl_command(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "swanctl {args:?}: {text}");
        text
    }

    /// `swanctl args --uri …`, to run in the background (an `--initiate` that waits
    /// for our answers).
    pub fn swanctl_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("swanctl");
        c.args(args).args(["--uri", &self.vici()]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }

    /// Everything charon said, for a failure message.
    pub fn all_output(&self) -> String {
        [
            "swanctl.stdout",
            "charon.stdout",
            "charon.stderr",
            "charon.log",
        ]
        .iter()
        .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n---\n")
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            strait_testbeds::process::terminate(child, Duration::from_secs(3));
        }
    }
}

/// The hex dump charon logs after `label` ("encryption initiator key"), the last one.
pub fn logged_key(log: &str, label: &str) -> Option<Vec<u8>> {
    let lines: Vec<&str> = log.lines().collect();
    let at = lines
        .iter()
        .rposition(|l| l.contains(&format!("{label} =>")))?;
    let len: usize = lines[at]
        .split("=>")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let mut out = Vec::new();
    for l in &lines[at + 1..] {
        // "10[CHD]    0: 10 EA 1D ...  ascii": an offset, then up to 16 bytes.
        let Some((offset, dump)) = l.split_once(": ") else {
            break;
        };
        if offset
            .split_whitespace()
            .last()
            .and_then(|o| o.parse::<usize>().ok())
            != Some(out.len())
        {
            break;
        }
        out.extend(
            dump.split_whitespace()
                .take(16)
                .map_while(|h| u8::from_str_radix(h, 16).ok()),
        );
        if out.len() >= len {
            break;
        }
    }
    out.truncate(len);
    (out.len() == len).then_some(out)
}

/// Our side: the speaker and its two sockets (500, and 4500 with the non-ESP marker).
pub struct Driver {
    pub speaker: Speaker,
    s500: UdpSocket,
    s4500: UdpSocket,
    /// Every event but Transmit, in order.
    pub events: Vec<Event>,
}

impl Driver {
    fn send(&self, local: SocketAddr, remote: SocketAddr, bytes: &[u8]) {
        if local.port() == 4500 {
            let mut framed = vec![0u8; 4];
            framed.extend_from_slice(bytes);
            self.s4500.send_to(&framed, remote).unwrap();
        } else {
            self.s500.send_to(bytes, remote).unwrap();
        }
    }

    /// Drive until `done` holds over the events so far, or `limit` passes.
    pub fn run_until(&mut self, limit: Duration, done: impl Fn(&[Event]) -> bool) -> bool {
        let end = Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        while Instant::now() < end {
            while let Some(e) = self.speaker.next_event() {
                match e {
                    Event::Transmit {
                        local,
                        remote,
                        bytes,
                    } => self.send(local, remote, &bytes),
                    other => self.events.push(other),
                }
            }
            if done(&self.events) {
                return true;
            }
            for (sock, marker) in [(&self.s500, false), (&self.s4500, true)] {
                let local = sock.local_addr().unwrap();
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let data = &buf[..n];
                    let ike = match (marker, data) {
                        (false, _) => Some(data),
                        (true, [0, 0, 0, 0, rest @ ..]) => Some(rest),
                        _ => None, // ESP or a keepalive: not ours
                    };
                    if let Some(ike) = ike {
                        self.speaker
                            .handle_datagram(local, from, ike, Instant::now());
                    }
                }
            }
            self.speaker.poll(Instant::now());
        }
        false
    }

    pub fn children(&self) -> Vec<&ChildSa> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::ChildSaUp(c) => Some(c),
                Event::ChildSaRekeyed { new, .. } => Some(new),
                _ => None,
            })
            .collect()
    }
}

/// The keys charon logged last are the ones of our newest Child SA: its "initiator"
/// keys protect what the exchange's initiator sends.
pub fn assert_keys_match(charon: &Charon, child: &ChildSa, we_initiated: bool) {
    let log = charon.log();
    let i = logged_key(&log, "encryption initiator key").expect("charon logged the keys");
    let r = logged_key(&log, "encryption responder key").expect("charon logged the keys");
    let (ours_i, ours_r) = if we_initiated {
        (&child.key_out, &child.key_in)
    } else {
        (&child.key_in, &child.key_out)
    };
    assert_eq!(ours_i.expose(), &i[..], "initiator-to-responder key");
    assert_eq!(ours_r.expose(), &r[..], "responder-to-initiator key");
}
