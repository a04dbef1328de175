//! The `strait-testbed` tool as a user drives it (root and etcd): `up` with a name and
//! an extra agent flag, the fault drills (`stop`, `start` of a host's agent and of
//! etcd), `status` after each and after an agent killed from outside, and `down`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use strait_testbeds::cluster::underlay::Segment;
use strait_testbeds::wait_until;

const BIN: &str = env!("CARGO_BIN_EXE_strait-testbed");
const STATE_DIR: &str = "/run/strait-testbed";
/// A cluster of two hosts comes up well within this, even on a busy machine.
const UP: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(200);

/// `strait-testbed ARGS`: (success, stdout + stderr).
fn tb(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run strait-testbed");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `tb`, which must succeed.
fn tb_ok(args: &[&str]) -> String {
    let (ok, out) = tb(args);
    assert!(ok, "strait-testbed {args:?} failed: {out}");
    out
}

/// The `status` line of test bed `name`'s parts (the line after its summary).
fn status_of(name: &str) -> String {
    let out = tb_ok(&["status"]);
    let mut mine = false;
    for line in out.lines() {
        if line.starts_with(&format!("testbed {name}:")) {
            mine = true;
        }
        if mine && line.trim_start().starts_with("up pid") {
            return line.to_string();
        }
    }
    panic!("no status of {name} in:\n{out}")
}

/// A running `strait-testbed up`; torn down on drop (also on panic), its output
/// printed when the test fails.
struct Up {
    name: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Up {
    fn start(name: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("up.log");
        let file = std::fs::File::create(&log).expect("log");
        let child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .expect("spawn strait-testbed up");
        Self {
            name: name.into(),
            child,
            log,
            _dir: dir,
        }
    }

    fn state_file(&self) -> PathBuf {
        Path::new(STATE_DIR).join(format!("{}.json", self.name))
    }

    fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.state_file()).expect("state file");
        serde_json::from_str(&text).expect("state JSON")
    }

    fn agent_pid(&self, host: usize) -> Option<u32> {
        self.state()["hosts"][host]["agent_pid"]
            .as_u64()
            .map(|p| p as u32)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = tb(&["down", "--name", &self.name]);
        }
        // Our own child, by PID, if `down` could not end it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- strait-testbed up -----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

#[test]
fn named_bed_with_agent_flags_fault_drills_status_and_down() {
    if !strait_testbeds::require_root("strait-testbed")
        || !strait_testbeds::etcd::require_etcd("strait-testbed")
    {
        return;
    }
    strait_testbeds::bins::bin("straitd");
    let name = strait_testbeds::unique_prefix();
    let mut up = Up::start(
        &name,
        &[
            "up",
            "empty",
            "--hosts",
            "2",
            "--name",
            &name,
            "--",
            "--block-reclaim-grace-secs",
            "7",
        ],
    );
    wait_until("the state file of up", UP, POLL, || {
        if let Ok(Some(status)) = up.child.try_wait() {
            panic!("strait-testbed up exited with {status}");
        }
        up.state_file().exists()
    })
    .unwrap();

    // --name names the namespaces; the extra flag reached every agent.
    for ns in [format!("{name}u"), format!("{name}h1"), format!("{name}h2")] {
        assert!(
            Path::new("/run/netns").join(&ns).exists(),
            "no namespace {ns}"
        );
    }
    for host in 0..2 {
        let pid = up.agent_pid(host).expect("agent PID");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let i = args
            .iter()
            .position(|a| a == "--block-reclaim-grace-secs")
            .unwrap_or_else(|| panic!("h{} runs without the flag: {args:?}", host + 1));
        assert_eq!(args[i + 1], "7");
    }

    // The underlay bridge keeps its MAC as ports join (a host's ARP entry for etcd
    // stays right), even a port with a lower MAC than the bridge's.
    let bridge_mac = || {
        let out = Command::new("ip")
            .args(["-n", &format!("{name}u"), "-j", "link", "show", "br-a"])
            .output()
            .expect("ip link");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j");
        v[0]["address"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(bridge_mac(), Segment::A.bridge_mac());
    let ns = format!("{name}u");
    for argv in [
        vec![
            "link", "add", "stlow0", "type", "veth", "peer", "name", "stlow1",
        ],
        vec!["link", "set", "stlow0", "address", "02:00:00:00:00:01"],
        vec!["link", "set", "stlow0", "master", "br-a", "up"],
    ] {
        let ok = Command::new("ip")
            .args(["-n", &ns])
            .args(&argv)
            .status()
            .expect("ip")
            .success();
        assert!(ok, "ip {argv:?}");
    }
    assert_eq!(
        bridge_mac(),
        Segment::A.bridge_mac(),
        "a port changed the bridge's MAC"
    );

    let status = status_of(&name);
    assert!(status.contains("etcd running"), "{status}");
    assert!(
        status.contains("h1 running") && status.contains("h2 running"),
        "{status}"
    );

    // stop h1: down, and says it was stopped; start h1: running again, a new PID.
    let before = up.agent_pid(0);
    tb_ok(&["stop", "--name", &name, "h1"]);
    let status = status_of(&name);
    assert!(status.contains("h1 down (stopped)"), "{status}");
    assert!(status.contains("h2 running"), "{status}");
    assert!(
        before.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()),
        "reaped"
    );
    tb_ok(&["start", "--name", &name, "h1"]);
    let status = status_of(&name);
    assert!(status.contains("h1 running"), "{status}");
    assert_ne!(up.agent_pid(0), before);
    // Starting what runs is refused, and changes nothing.
    let (ok, out) = tb(&["start", "--name", &name, "h1"]);
    assert!(!ok && out.contains("runs already"), "{out}");
    let (ok, out) = tb(&["stop", "--name", &name, "h9"]);
    assert!(!ok && out.contains("no host h9"), "{out}");

    // An agent killed from outside is down, not a zombie counted as running.
    let h2 = up.agent_pid(1).expect("h2's PID");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h2 as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill h2's agent");
    wait_until(
        "status shows h2 down",
        Duration::from_secs(10),
        POLL,
        || {
            let status = status_of(&name);
            if status.contains("h2 down (exited)") {
                Ok(())
            } else {
                Err(status)
            }
        },
    )
    .unwrap();

    // etcd: stop, down; start, running.
    tb_ok(&["stop", "--name", &name, "etcd"]);
    let status = status_of(&name);
    assert!(status.contains("etcd down (stopped)"), "{status}");
    tb_ok(&["start", "--name", &name, "etcd"]);
    assert!(status_of(&name).contains("etcd running"));

    // down: up exits, and nothing of the bed is left.
    tb_ok(&["down", "--name", &name]);
    wait_until("up to exit", Duration::from_secs(60), POLL, || {
        matches!(up.child.try_wait(), Ok(Some(_)))
    })
    .unwrap();
    assert!(!up.state_file().exists());
    assert!(!Path::new(STATE_DIR).join(format!("{name}.sock")).exists());
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&name))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
}
