//! A pair of strongSwan charons (5.9, IKEv2 with a PSK) between the namespaces of a
//! [`super::Line`], with kernel-libipsec: strongSwan's own userspace ESP (a TUN
//! `ipsec0`, ESP in UDP 4500, routes in table 220), the baseline strait's userspace
//! datapath is measured against. `a` protects 10.97.1.0/24 (10.97.1.1 on `lo`), `b`
//! 10.97.2.0/24 (10.97.2.1).
//!
//! charon 5.9 hard-codes `/var/run/charon.pid`, so each runs in a mount namespace of
//! its own (`ip netns exec` makes one) with `/run` bind-mounted to a private
//! directory; its VICI socket is then reachable from outside in that directory. Both
//! are killed by PID on drop; configuration is written here at run time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::Line;
use crate::netns::Netns;
use crate::{process, wait_until};

pub const CHARON: &str = "/usr/lib/ipsec/charon";
pub const A_NET: &str = "10.97.1.0/24";
pub const A_INNER: &str = "10.97.1.1";
pub const B_NET: &str = "10.97.2.0/24";
pub const B_INNER: &str = "10.97.2.1";
/// Throwaway pre-shared key of the benchmark's own two charons.
const PSK: &str = "strait-bench-psk-not-a-secret-0123";

/// Whether charon (with the kernel-libipsec plugin) and swanctl are installed.
pub fn available() -> bool {
    Path::new(CHARON).exists()
        && Path::new("/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so").exists()
        // (`swanctl --version` asks a running daemon; look the binary up instead.)
        && Command::new("sh")
            .args(["-c", "command -v swanctl"])
            .output()
            .is_ok_and(|o| o.status.success())
}

/// One charon: its process and directory.
struct Charon {
    child: Option<Child>,
    dir: PathBuf,
}

impl Charon {
    fn vici(&self) -> String {
        format!("unix://{}", self.dir.join("run/charon.vici").display())
    }

    fn swanctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("swanctl")
            .args(args)
            .arg("--uri")
            .arg(self.vici())
            .output()
            .map_err(|e| format!("swanctl: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "swanctl {args:?}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            process::terminate(c, Duration::from_secs(3));
        }
    }
}

/// Two charons with an established CHILD_SA `net` (ESP proposal as given, e.g.
/// `aes128gcm16`) between 10.97.1.0/24 and 10.97.2.0/24.
pub struct Pair {
    a: Charon,
    b: Charon,
    _dir: tempfile::TempDir,
}

impl Pair {
    pub fn start(line: &Line, esp_proposal: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let a = start_one(&line.a, dir.path(), "a", "b", esp_proposal, (1, 2))?;
        let b = start_one(&line.b, dir.path(), "b", "a", esp_proposal, (2, 1))?;
        let pair = Self { a, b, _dir: dir };
        for c in [&pair.a, &pair.b] {
            let conf = c.dir.join("swanctl.conf");
            c.swanctl(&["--load-all", "--file", conf.to_str().unwrap_or_default()])?;
        }
        pair.a
            .swanctl(&["--initiate", "--child", "net", "--timeout", "10"])?;
        Ok(pair)
    }

    /// PIDs of both charons (for their CPU time).
    pub fn pids(&self) -> Vec<u32> {
        [self.a.pid(), self.b.pid()].into_iter().flatten().collect()
    }

    /// `swanctl --list-sas` of the initiator.
    pub fn list_sas(&self) -> String {
        self.a.swanctl(&["--list-sas"]).unwrap_or_else(|e| e)
    }
}

fn start_one(
    ns: &Netns,
    root: &Path,
    me: &str,
    them: &str,
    esp: &str,
    (mine, theirs): (u8, u8),
) -> Result<Charon, String> {
    let dir = root.join(me);
    ns.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("10.97.{mine}.1/32"),
        "dev",
        "lo",
    ]);
    let (outer_me, outer_them) = if me == "a" {
        (super::A_OUTER, super::B_OUTER)
    } else {
        (super::B_OUTER, super::A_OUTER)
    };
    let swanctl_conf = format!(
        "connections {{\n  site {{\n    version = 2\n    local_addrs = {outer_me}\n    \
         remote_addrs = {outer_them}\n    proposals = aes256-sha256-x25519\n    local {{\n      \
         auth = psk\n      id = {me}\n    }}\n    remote {{\n      auth = psk\n      id = {them}\n    \
         }}\n    children {{\n      net {{\n        local_ts = 10.97.{mine}.0/24\n        \
         remote_ts = 10.97.{theirs}.0/24\n        esp_proposals = {esp}\n        mode = tunnel\n      \
         }}\n    }}\n  }}\n}}\nsecrets {{\n  ike-site {{\n    id-a = a\n    id-b = b\n    \
         secret = \"{PSK}\"\n  }}\n}}\n"
    );
    spawn(ns, dir, &swanctl_conf)
}

/// charon in `ns`, its files in `dir` (made here), configured by `swanctl_conf`
/// (not loaded yet); returns once its VICI socket is up.
fn spawn(ns: &Netns, dir: PathBuf, swanctl_conf: &str) -> Result<Charon, String> {
    std::fs::create_dir_all(dir.join("run")).map_err(|e| e.to_string())?;
    let log = dir.join("charon.log");
    // Retransmissions: 1 s, 1.5 s, 2.25 s, then give up (charon's default waits
    // about 165 s), so a dead peer is noticed while a test waits.
    // kernel-libipsec before kernel-netlink: it supplies the (userspace) IPsec
    // backend, kernel-netlink the addresses and routes (table 220).
    // Reauthentication opens the new IKE SA before deleting the old (5.9's default is
    // break-before-make, which drops traffic in between).
    let strongswan_conf = format!(
        "charon {{\n  load_modular = no\n  load = random nonce openssl aes sha1 sha2 hmac gcm kdf \
         pem pkcs1 pkcs8 x509 pubkey curve25519 kernel-libipsec kernel-netlink socket-default vici \
         updown\n  install_routes = yes\n  make_before_break = yes\n  retransmit_tries = 3\n  retransmit_timeout = 1.0\n  retransmit_base = 1.5\n  plugins {{\n    kernel-libipsec {{\n      \
         allow_peer_ts = no\n    }}\n  }}\n  filelog {{\n    bench {{\n      path = {}\n      \
         append = no\n      default = 1\n    }}\n  }}\n  syslog {{\n    daemon {{\n      \
         default = -1\n    }}\n  }}\n}}\n",
        log.display()
    );
    let conf = dir.join("strongswan.conf");
    std::fs::write(&conf, strongswan_conf).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("swanctl.conf"), swanctl_conf).map_err(|e| e.to_string())?;
    let stdout = std::fs::File::create(dir.join("charon.stdout")).map_err(|e| e.to_string())?;
    // `ip netns exec` execs sh, which execs charon: the child's PID is charon's.
    let child = Command::new("ip")
        .args(["netns", "exec", ns.name(), "env"])
        .arg(format!("STRONGSWAN_CONF={}", conf.display()))
        .args(["sh", "-c"])
        .arg(format!(
            "mount --bind {} /run && exec {CHARON}",
            dir.join("run").display()
        ))
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().map_err(|e| e.to_string())?)
        .stderr(stdout)
        .spawn()
        .map_err(|e| format!("spawn charon: {e}"))?;
    let charon = Charon {
        child: Some(child),
        dir,
    };
    let vici = charon.dir.join("run/charon.vici");
    wait_until(
        "charon's VICI socket",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || vici.exists(),
    )
    .map_err(|e| format!("{e} (see {})", log.display()))?;
    Ok(charon)
}

/// One charon as another vendor's site gateway: the external IPsec peer of strait's
/// gateway tests, in a namespace the test made, configured by the test's own
/// `swanctl.conf` text (connections and secrets), which is loaded at start.
pub struct ExternalGateway {
    charon: Charon,
    _dir: tempfile::TempDir,
}

impl ExternalGateway {
    /// `files` are copied into charon's swanctl directory first, as (source, path
    /// under it): `x509/NAME.crt`, `x509ca/CA.crt`, `private/NAME.key`.
    pub fn start(ns: &Netns, swanctl_conf: &str, files: &[(&Path, &str)]) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let charon = spawn(ns, dir.path().join("gw"), swanctl_conf)?;
        for (from, to) in files {
            let to = charon.dir.join(to);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::copy(from, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        }
        let conf = charon.dir.join("swanctl.conf");
        charon.swanctl(&["--load-all", "--file", conf.to_str().unwrap_or_default()])?;
        Ok(Self { charon, _dir: dir })
    }

    /// `swanctl ARGS` against this charon.
    pub fn swanctl(&self, args: &[&str]) -> Result<String, String> {
        self.charon.swanctl(args)
    }

    /// charon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.charon.dir.join("charon.log")).unwrap_or_default()
    }

    /// charon's PID (for the CPU time it spends; a benchmark reads it).
    pub fn pid(&self) -> Option<u32> {
        self.charon.pid()
    }
}
