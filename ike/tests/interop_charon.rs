//! Interop with strongSwan's charon (5.9, kernel-libipsec, so ESP and therefore IKE go
//! to UDP 4500): charon in one test-made netns, our speaker on real UDP sockets in
//! another, Ed25519 raw public keys on both sides (RFC 7427/8420). The IKE SA and the
//! Child SA come up, and the Child SA keys charon logs (at `chd = 4`) are ours; then a
//! Child SA rekey with PFS and an IKE SA rekey, checked the same way. Skips visibly
//! without root or charon.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strait_ike::auth::{Ed25519Signer, RawKeyVerifier, ed25519_spki};
use strait_ike::codec::{Identity, TrafficSelector};
use strait_ike::crypto::prf::Prf;
use strait_ike::crypto::suite::{Cipher, Group};
use strait_ike::speaker::{ChildSa, Config, Event, Speaker};
use strait_testbeds::netns::Netns;
use strait_testbeds::{require_root, unique_prefix, wait_until};

const CHARON: &str = "/usr/lib/ipsec/charon";
const OURS: &str = "10.231.0.1";
const THEIRS: &str = "10.231.0.2";

fn tool_missing() -> Option<String> {
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

fn sh(argv: &[&str]) -> Vec<u8> {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// charon in `ns` with its own /run (it hard-codes its pid file and VICI socket
/// there), stopped by PID on drop.
struct Charon {
    child: Option<Child>,
    dir: PathBuf,
}

impl Charon {
    fn vici(&self) -> String {
        format!("unix://{}/run/charon.vici", self.dir.display())
    }

    fn swanctl(&self, args: &[&str]) -> String {
        let vici = self.vici();
        let mut argv = vec!["swanctl"];
        argv.extend_from_slice(args);
        argv.extend(["--uri", &vici]);
        let out = Command::new("swanctl").args(&argv[1..]).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{argv:?}: {text}");
        text
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("charon.log")).unwrap_or_default()
    }

    /// Everything charon said, for a failure message.
    fn all_output(&self) -> String {
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

fn start_charon(ns: &Netns, dir: &Path, strait_pem: &Path) -> Charon {
    std::fs::create_dir_all(dir.join("run")).unwrap();
    let conf = dir.join("strongswan.conf");
    std::fs::write(
        &conf,
        format!(
            "charon {{
  load_modular = no
  load = random nonce openssl aes sha1 sha2 hmac gcm kdf pem pkcs1 pkcs8 x509 pubkey curve25519 kernel-libipsec kernel-netlink socket-default vici
  install_routes = no
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
    // swanctl loads keys from private/ and pubkey/ beside its configuration file.
    for sub in ["private", "pubkey"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let key = dir.join("private/charon.pem");
    let public = dir.join("pubkey/charon.pem");
    std::fs::copy(strait_pem, dir.join("pubkey/strait.pem")).unwrap();
    sh(&[
        "openssl",
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        key.to_str().unwrap(),
    ]);
    sh(&[
        "openssl",
        "pkey",
        "-in",
        key.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    std::fs::write(
        dir.join("swanctl.conf"),
        format!(
            "connections {{
  strait {{
    version = 2
    local_addrs = {THEIRS}
    remote_addrs = {OURS}
    proposals = aes256gcm16-prfsha256-x25519
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
        local_ts = 10.231.2.0/24
        remote_ts = 10.231.1.0/24
        esp_proposals = aes256gcm16-x25519
        mode = tunnel
        start_action = none
      }}
    }}
  }}
}}
",
        ),
    )
    .unwrap();
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

/// The hex dump charon logs after `label` ("encryption initiator key"), the last one.
fn logged_key(log: &str, label: &str) -> Option<Vec<u8>> {
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
struct Driver {
    speaker: Speaker,
    s500: UdpSocket,
    s4500: UdpSocket,
    events: Vec<Event>,
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
    fn run_until(&mut self, limit: Duration, done: impl Fn(&[Event]) -> bool) -> bool {
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
}

fn children(events: &[Event]) -> Vec<&ChildSa> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaUp(c) => Some(c),
            Event::ChildSaRekeyed { new, .. } => Some(new),
            _ => None,
        })
        .collect()
}

/// The keys charon logged last are the ones of our newest Child SA: its "initiator"
/// keys protect what the exchange's initiator sends.
fn assert_keys_match(charon: &Charon, child: &ChildSa, we_initiated: bool) {
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

#[test]
fn charon_establishes_rekeys_and_agrees_on_the_keys() {
    if !require_root("charon_establishes_rekeys_and_agrees_on_the_keys") {
        return;
    }
    if let Some(why) = tool_missing() {
        eprintln!("SKIP: charon_establishes_rekeys_and_agrees_on_the_keys: {why}");
        return;
    }
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
    // libipsec routes charon's protected net through its TUN device from an address
    // it holds.
    theirs.exec_ok(&["ip", "addr", "add", "10.231.2.1/32", "dev", "lo"]);
    let dir = tempfile::tempdir().unwrap();

    // Our key: PKCS#8 for the speaker, its SubjectPublicKeyInfo as PEM for charon.
    let pkcs8 =
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let signer = Ed25519Signer::from_pkcs8(pkcs8.as_ref(), false).unwrap();
    let der = dir.path().join("strait.der");
    std::fs::write(&der, ed25519_spki(&signer.public_key())).unwrap();
    let strait_pem = dir.path().join("strait.pem");
    sh(&[
        "openssl",
        "pkey",
        "-pubin",
        "-inform",
        "DER",
        "-in",
        der.to_str().unwrap(),
        "-out",
        strait_pem.to_str().unwrap(),
    ]);

    let charon = start_charon(&theirs, dir.path(), &strait_pem);
    let charon_der = sh(&[
        "openssl",
        "pkey",
        "-pubin",
        "-in",
        dir.path().join("pubkey/charon.pem").to_str().unwrap(),
        "-outform",
        "DER",
    ]);
    let charon_key: [u8; 32] = charon_der[charon_der.len() - 32..].try_into().unwrap();

    let (s500, s4500) = ours
        .run_in(|| {
            let a = UdpSocket::bind(format!("{OURS}:500"))?;
            let b = UdpSocket::bind(format!("{OURS}:4500"))?;
            for s in [&a, &b] {
                s.set_read_timeout(Some(Duration::from_millis(20)))?;
            }
            Ok((a, b))
        })
        .unwrap();
    let ts = |s: &str| TrafficSelector::prefix(s.parse().unwrap());
    let mut config = Config::new(Identity::Fqdn("strait.test".into()));
    config.ike_ciphers = vec![Cipher::AesGcm16_256];
    config.prfs = vec![Prf::HmacSha256];
    config.groups = vec![Group::Curve25519];
    config.esp_ciphers = vec![Cipher::AesGcm16_256];
    config.local_ts = vec![ts("10.231.1.0/24")];
    config.remote_ts = vec![ts("10.231.2.0/24")];
    let verifier = RawKeyVerifier::new(move |id: &Identity| {
        (*id == Identity::Fqdn("charon.test".into())).then_some(charon_key)
    });
    let mut driver = Driver {
        speaker: Speaker::new(config, Box::new(signer), Box::new(verifier)),
        s500,
        s4500,
        events: Vec::new(),
    };
    let peer = Identity::Fqdn("charon.test".into());
    let (local, remote) = (
        format!("{OURS}:500").parse().unwrap(),
        format!("{THEIRS}:500").parse().unwrap(),
    );
    driver
        .speaker
        .connect(peer.clone(), local, remote, Instant::now());
    let up = driver.run_until(Duration::from_secs(15), |e| !children(e).is_empty());
    assert!(
        up,
        "no Child SA with charon: {:?}\n{}",
        driver.events,
        charon.all_output()
    );
    let child = children(&driver.events)[0].clone();
    assert_eq!(child.cipher, Cipher::AesGcm16_256);
    assert!(!child.esn, "libipsec has no ESN");
    assert!(child.udp_encap, "libipsec forces UDP encapsulation");
    assert_eq!(child.ts_local, vec![ts("10.231.1.0/24")]);
    assert_eq!(child.ts_remote, vec![ts("10.231.2.0/24")]);
    assert_keys_match(&charon, &child, true);
    let sas = charon.swanctl(&["--list-sas"]);
    assert!(
        sas.contains("ESTABLISHED") && sas.contains("INSTALLED"),
        "{sas}"
    );

    // A Child SA rekey with PFS (the proposal carries x25519), then an IKE SA rekey,
    // then a Child SA rekey on the new IKE SA: the keys still agree.
    driver.speaker.rekey_child(&peer, Instant::now());
    let rekeyed = driver.run_until(Duration::from_secs(10), |e| {
        e.iter().any(|e| matches!(e, Event::ChildSaRekeyed { .. }))
            && e.iter().any(|e| matches!(e, Event::ChildSaDeleted { .. }))
    });
    assert!(rekeyed, "{:?}\n{}", driver.events, charon.log());
    assert_keys_match(&charon, children(&driver.events).last().unwrap(), true);

    driver.speaker.rekey_ike(&peer, Instant::now());
    let ike_rekeyed = driver.run_until(Duration::from_secs(10), |e| {
        e.iter().any(|e| matches!(e, Event::IkeSaRekeyed { .. }))
    });
    assert!(ike_rekeyed, "{:?}\n{}", driver.events, charon.log());
    driver.run_until(Duration::from_secs(2), |_| false);
    assert_eq!(
        driver.speaker.status().len(),
        1,
        "{:?}",
        driver.speaker.status()
    );
    driver.speaker.rekey_child(&peer, Instant::now());
    let again = driver.run_until(Duration::from_secs(10), |e| {
        e.iter()
            .filter(|e| matches!(e, Event::ChildSaRekeyed { .. }))
            .count()
            == 2
    });
    assert!(again, "{:?}\n{}", driver.events, charon.log());
    assert_keys_match(&charon, children(&driver.events).last().unwrap(), true);
    assert!(
        driver
            .events
            .iter()
            .all(|e| !matches!(e, Event::IkeSaDown { .. } | Event::AuthFailed { .. }))
    );

    driver.speaker.delete(&peer, Instant::now());
    assert!(driver.run_until(Duration::from_secs(5), |e| {
        e.iter().any(|e| matches!(e, Event::IkeSaDown { .. }))
    }));
    drop(charon);
}
