//! What crossed a wire: tcpdump captures in a test's namespace (stopped by PID), and
//! tshark reading them back, with the ESP keys an agent logged when IPsec tests ask
//! (`--ipsec-key-log`), as the independent oracle of strait's ESP.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process;
use crate::wait::wait_until;

/// tcpdump on `dev` in `ns`, writing a pcap file; stopped by PID.
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
}

impl Capture {
    /// Starts capturing whole packets on `dev` in namespace `ns` into `file`, and
    /// returns once tcpdump listens.
    pub fn start(ns: &str, dev: &str, file: &Path) -> Self {
        Self::start_with(ns, dev, file, 0)
    }

    /// The same, keeping the first `snaplen` octets of each packet (0: all of it);
    /// a short one keeps a capture under bulk traffic small.
    pub fn start_with(ns: &str, dev: &str, file: &Path, snaplen: u32) -> Self {
        let log = file.with_extension("log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "tcpdump",
                "-n",
                "-U",
                "--immediate-mode",
            ])
            .args(["-i", dev, "-s", &snaplen.to_string(), "-w"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("capture log"))
            .spawn()
            .expect("spawn tcpdump");
        wait_until(
            "tcpdump listening",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || std::fs::read_to_string(&log).is_ok_and(|s| s.contains("listening on")),
        )
        .unwrap();
        Self {
            child: Some(child),
            file: file.to_path_buf(),
        }
    }

    /// Stops tcpdump (after a moment for the last packets) and returns the file.
    pub fn stop(mut self) -> PathBuf {
        std::thread::sleep(Duration::from_millis(300));
        if let Some(c) = self.child.take() {
            process::terminate(c, Duration::from_secs(5));
        }
        self.file.clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            process::kill_now(c);
        }
    }
}

/// Whether tcpdump and tshark are installed (tests skip visibly without them).
pub fn tools_present(test: &str) -> bool {
    for tool in ["tcpdump", "tshark"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            eprintln!("SKIP {test}: {tool} is not installed (scripts/install-deps.sh installs it)");
            return false;
        }
    }
    true
}

/// tshark's fields of the packets of `pcap` matching display filter `filter`, one
/// row per packet, with ESP decryption by the `esp_sa` lines given (Wireshark's
/// UAT records, as `--ipsec-key-log` writes them).
pub fn tshark_fields(
    pcap: &Path,
    esp_sa: &[String],
    filter: &str,
    fields: &[&str],
) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-o", "esp.enable_encryption_decode:TRUE"])
        .args(["-o", "esp.enable_authentication_check:TRUE"]);
    for line in esp_sa {
        cmd.arg("-o").arg(format!("uat:esp_sa:{line}"));
    }
    cmd.arg("-r")
        .arg(pcap)
        .args(["-Y", filter, "-T", "fields", "-E", "separator=;"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(';').map(str::to_string).collect())
        .collect()
}

/// The `esp_sa` lines of a key log file (none when it does not exist yet).
pub fn esp_sa_lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}
