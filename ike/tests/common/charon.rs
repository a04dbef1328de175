//! strongSwan's charon (5.9, kernel-libipsec, so ESP and therefore IKE go to UDP
//! 4500) as the other end of a real IKE exchange, the one bed of the interop tests:
//! charon in a test-made netns with a swanctl configuration the test writes (or
//! [`swanctl_raw_keys`] for Ed25519 raw public keys on both sides, RFC 7427/8420),
//! our speaker on real UDP sockets (500 and 4500) in another ([`Driver`]). The usual
//! line is [`Bed`]: the two netns joined by a veth; a test with another topology
//! (a NAT between) makes its own netns and uses [`Charon::start`] and [`sockets`].
//! charon logs the Child SA keys (`chd = 4`), so a test can check they are ours
//! ([`assert_keys_match`]). Skips are the tests' own ([`can_run`]).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strait_ike::auth::{Ed25519Signer, PeerAuth, RawKeyVerifier, ed25519_spki};
use strait_ike::codec::{ExchangeType, Identity, Message, Payload, TrafficSelector};
use strait_ike::crypto::prf::Prf;
use strait_ike::crypto::suite::{Cipher, Group};
use strait_ike::speaker::{ChildSa, Config, Event, Speaker};
use strait_testbeds::netns::Netns;
use strait_testbeds::{require_root, unique_prefix, wait_until};

pub const CHARON: &str = "/usr/lib/ipsec/charon";

/// Why charon cannot run here, if it cannot.
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

/// Root and charon are here; otherwise the test says `SKIP` (or fails, when
/// privileged tests are required).
pub fn can_run(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    if let Some(why) = tool_missing() {
        eprintln!("SKIP: {test}: {why}");
        return false;
    }
    true
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

pub fn charon_id() -> Identity {
    Identity::Fqdn("charon.test".into())
}

pub fn strait_id() -> Identity {
    Identity::Fqdn("strait.test".into())
}

pub fn ts(prefix: &str) -> TrafficSelector {
    TrafficSelector::prefix(prefix.parse().unwrap())
}

/// Our side as charon is given it: `local_id`, AES-GCM-256, SHA-256, Curve25519, and
/// the selectors (CIDRs).
pub fn config(local_id: Identity, local_ts: &[&str], remote_ts: &[&str]) -> Config {
    let mut config = Config::new(local_id);
    config.ike_ciphers = vec![Cipher::AesGcm16_256];
    config.prfs = vec![Prf::HmacSha256];
    config.groups = vec![Group::Curve25519];
    config.esp_ciphers = vec![Cipher::AesGcm16_256];
    config.local_ts = local_ts.iter().map(|s| ts(s)).collect();
    config.remote_ts = remote_ts.iter().map(|s| ts(s)).collect();
    config
}

/// Our netns and charon's, joined by a veth (`eth0` on both sides, a /24), and a
/// directory for charon's files. Dropped after the [`Charon`] and [`Driver`] made
/// on it (declare it first).
pub struct Bed {
    pub ours: Netns,
    pub theirs: Netns,
    pub dir: tempfile::TempDir,
    ours_addr: String,
}

impl Bed {
    /// We are `ours`, charon `theirs`; charon also holds the first address of each of
    /// its protected nets `held` (libipsec routes a protected net through its TUN
    /// device from an address it holds).
    pub fn new(ours: &str, theirs: &str, held: &[&str]) -> Bed {
        let prefix = unique_prefix();
        let bed = Bed {
            ours: Netns::new(format!("{prefix}s")),
            theirs: Netns::new(format!("{prefix}c")),
            dir: tempfile::tempdir().unwrap(),
            ours_addr: ours.to_string(),
        };
        bed.ours.exec_ok(&[
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
            bed.theirs.name(),
        ]);
        for (ns, addr) in [(&bed.ours, ours), (&bed.theirs, theirs)] {
            ns.exec_ok(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
        }
        for addr in held {
            bed.theirs
                .exec_ok(&["ip", "addr", "add", &format!("{addr}/32"), "dev", "lo"]);
        }
        bed
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// charon in its netns with `swanctl_conf`, files in the bed's directory.
    pub fn charon(&self, swanctl_conf: &str) -> Charon {
        Charon::start(&self.theirs, self.dir(), swanctl_conf, "")
    }

    /// Our speaker on sockets bound in our netns.
    pub fn driver(&self, speaker: Speaker) -> Driver {
        Driver::new(speaker, sockets(&self.ours, &self.ours_addr))
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
    /// caller puts under `dir`: private/, pubkey/, x509/, x509ca/), `settings` more
    /// lines of strongswan.conf's `charon` section, and load the configuration.
    pub fn start(ns: &Netns, dir: &Path, swanctl_conf: &str, settings: &str) -> Charon {
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let conf = dir.join("strongswan.conf");
        std::fs::write(
            &conf,
            format!(
                "charon {{
  load_modular = no
  load = random nonce openssl aes sha1 sha2 hmac gcm kdf pem pkcs1 pkcs8 x509 pubkey curve25519 kernel-libipsec kernel-netlink socket-default vici
  install_routes = no
{settings}
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

    /// `swanctl args --uri …`, to run in the background.
    pub fn swanctl_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("swanctl");
        c.args(args).args(["--uri", &self.vici()]);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    /// charon initiates the Child SA `net` (`swanctl --initiate`) while `driver`
    /// answers until `done` holds (asserted); what swanctl said once it ends.
    pub fn initiate(&self, driver: &mut Driver, done: impl Fn(&[Event]) -> bool) -> String {
        let mut initiate = self
            .swanctl_command(&["--initiate", "--child", "net", "--timeout", "15"])
            .spawn()
            .unwrap();
        let ok = driver.run_until(Duration::from_secs(20), done);
        // Our answers are out; let swanctl see the outcome.
        driver.run_until(Duration::from_secs(1), |_| false);
        let _ = initiate.kill();
        let out = initiate.wait_with_output().unwrap();
        assert!(ok, "{:?}\n{}", driver.events, self.all_output());
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
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

/// charon's side of a raw-key connection `strait`, child `net`.
pub struct RawKeyConf<'a> {
    /// charon's address, and the addresses it accepts strait from.
    pub local_addrs: &'a str,
    pub remote_addrs: &'a str,
    /// Comma-separated selectors of the Child SA, charon's side first.
    pub local_ts: &'a str,
    pub remote_ts: &'a str,
    /// More settings in the swanctl connection.
    pub connection_extra: &'a str,
}

/// A swanctl configuration for [`RawKeyConf`]: charon.test and strait.test by their
/// raw keys in pubkey/ (see [`raw_keys`]).
pub fn swanctl_raw_keys(c: &RawKeyConf) -> String {
    format!(
        "connections {{
  strait {{
    version = 2
    local_addrs = {local_addrs}
    remote_addrs = {remote_addrs}
    proposals = aes256gcm16-prfsha256-x25519
{connection_extra}
    local {{
      auth = pubkey
      pubkeys = charon.pem
      id = charon.test
    }}
    remote {{
      auth = pubkey
      pubkeys = strait.pem
      id = strait.test
    }}
    children {{
      net {{
        local_ts = {local_ts}
        remote_ts = {remote_ts}
        esp_proposals = aes256gcm16-x25519
        mode = tunnel
        start_action = none
      }}
    }}
  }}
}}
",
        local_addrs = c.local_addrs,
        remote_addrs = c.remote_addrs,
        connection_extra = c.connection_extra,
        local_ts = c.local_ts,
        remote_ts = c.remote_ts,
    )
}

/// Ed25519 keys for both sides, in swanctl's directories under `dir` (charon's
/// private/charon.pem and pubkey/charon.pem, ours as pubkey/strait.pem): our signer,
/// and a verifier that knows charon.test by charon's key.
pub fn raw_keys(dir: &Path) -> (Ed25519Signer, impl PeerAuth + 'static) {
    for sub in ["private", "pubkey"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let pkcs8 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let signer = Ed25519Signer::from_pkcs8(pkcs8.as_ref(), false).unwrap();
    let der = dir.join("strait.der");
    std::fs::write(&der, ed25519_spki(&signer.public_key())).unwrap();
    let ours = dir.join("pubkey/strait.pem");
    let (key, theirs) = (
        dir.join("private/charon.pem"),
        dir.join("pubkey/charon.pem"),
    );
    let (der, ours, key, theirs) = (
        der.to_str().unwrap(),
        ours.to_str().unwrap(),
        key.to_str().unwrap(),
        theirs.to_str().unwrap(),
    );
    sh(&[
        "openssl", "pkey", "-pubin", "-inform", "DER", "-in", der, "-out", ours,
    ]);
    sh(&["openssl", "genpkey", "-algorithm", "ed25519", "-out", key]);
    sh(&["openssl", "pkey", "-in", key, "-pubout", "-out", theirs]);
    let der = sh(&[
        "openssl", "pkey", "-pubin", "-in", theirs, "-outform", "DER",
    ]);
    let charon_key: [u8; 32] = der[der.len() - 32..].try_into().unwrap();
    let verifier =
        RawKeyVerifier::new(move |id: &Identity| (*id == charon_id()).then_some(charon_key));
    (signer, verifier)
}

/// UDP 500 and 4500 on `addr` inside `ns`.
pub fn sockets(ns: &Netns, addr: &str) -> (UdpSocket, UdpSocket) {
    let addr = addr.to_string();
    ns.run_in(move || {
        let a = UdpSocket::bind(format!("{addr}:500"))?;
        let b = UdpSocket::bind(format!("{addr}:4500"))?;
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_millis(20)))?;
        }
        Ok((a, b))
    })
    .unwrap()
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

/// One IKE datagram (or NAT keepalive) on our sockets, in either direction.
#[derive(Debug, Clone)]
pub struct Wire {
    pub sent: bool,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub bytes: Vec<u8>,
}

impl Wire {
    /// Exchange, response flag, and fragment number and total if it is an
    /// Encrypted Fragment.
    pub fn fragment(&self) -> Option<(ExchangeType, bool, u16, u16)> {
        let m = Message::decode(&self.bytes).ok()?;
        match m.payloads.last() {
            Some(Payload::EncryptedFragment(f)) => {
                Some((m.header.exchange, m.header.response, f.number, f.total))
            }
            _ => None,
        }
    }
}

/// Our side: the speaker and its two sockets (500, and 4500 with the non-ESP marker).
pub struct Driver {
    pub speaker: Speaker,
    pub s500: UdpSocket,
    pub s4500: UdpSocket,
    pub events: Vec<Event>,
    /// Every IKE datagram and keepalive sent and received, the marker stripped.
    pub wire: Vec<Wire>,
}

impl Driver {
    pub fn new(speaker: Speaker, (s500, s4500): (UdpSocket, UdpSocket)) -> Self {
        Driver {
            speaker,
            s500,
            s4500,
            events: Vec::new(),
            wire: Vec::new(),
        }
    }

    fn send(&mut self, local: SocketAddr, remote: SocketAddr, bytes: Vec<u8>) {
        // A NAT keepalive (one 0xff byte) goes without the non-ESP marker.
        if local.port() == 4500 && bytes != [0xff] {
            let mut framed = vec![0u8; 4];
            framed.extend_from_slice(&bytes);
            self.s4500.send_to(&framed, remote).unwrap();
        } else if local.port() == 4500 {
            self.s4500.send_to(&bytes, remote).unwrap();
        } else {
            self.s500.send_to(&bytes, remote).unwrap();
        }
        self.wire.push(Wire {
            sent: true,
            local,
            remote,
            bytes,
        });
    }

    /// Start an IKE SA with `peer` at `remote` (an address, port 500) from our port 500.
    pub fn connect(&mut self, peer: Identity, remote: &str) {
        let local = self.s500.local_addr().unwrap();
        let remote = format!("{remote}:500").parse().unwrap();
        self.speaker.connect(peer, local, remote, Instant::now());
    }

    /// The end of a good run: no IKE SA went down nor failed authentication so far;
    /// then we delete the IKE SA with `peer` and it goes down.
    pub fn close(&mut self, peer: &Identity) {
        assert!(
            self.events
                .iter()
                .all(|e| !matches!(e, Event::IkeSaDown { .. } | Event::AuthFailed { .. })),
            "{:?}",
            self.events
        );
        self.speaker.delete(peer, Instant::now());
        let down = self.run_until(Duration::from_secs(5), |e| {
            e.iter().any(|e| matches!(e, Event::IkeSaDown { .. }))
        });
        assert!(down, "{:?}", self.events);
    }

    /// The Child SAs so far, newest last.
    pub fn children(&self) -> Vec<&ChildSa> {
        children(&self.events)
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
                    } => self.send(local, remote, bytes),
                    other => self.events.push(other),
                }
            }
            if done(&self.events) {
                return true;
            }
            for marker in [false, true] {
                let sock = if marker { &self.s4500 } else { &self.s500 };
                let local = sock.local_addr().unwrap();
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let data = &buf[..n];
                    let ike = match (marker, data) {
                        (false, _) => Some(data),
                        (true, [0, 0, 0, 0, rest @ ..]) => Some(rest),
                        _ => None, // ESP or a keepalive: not ours
                    };
                    if let Some(ike) = ike {
                        self.wire.push(Wire {
                            sent: false,
                            local,
                            remote: from,
                            bytes: ike.to_vec(),
                        });
                        self.speaker
                            .handle_datagram(local, from, ike, Instant::now());
                    }
                }
            }
            self.speaker.poll(Instant::now());
        }
        false
    }
}

/// The Child SAs in `events` (up or rekeyed), newest last.
pub fn children(events: &[Event]) -> Vec<&ChildSa> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaUp(c) => Some(c),
            Event::ChildSaRekeyed { new, .. } => Some(new),
            _ => None,
        })
        .collect()
}

pub fn child_up(events: &[Event]) -> bool {
    !children(events).is_empty()
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
    assert_eq!(i.len(), 36, "AES-256 key and salt");
    assert_eq!(ours_i.expose(), &i[..], "initiator-to-responder key");
    assert_eq!(ours_r.expose(), &r[..], "responder-to-initiator key");
    assert!(
        log.contains(&format!("{:08x}_i", child.spi_out))
            || log.contains(&format!("{:08x}", child.spi_out)),
        "charon's inbound SPI is our outbound one"
    );
}
