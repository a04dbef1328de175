//! A `straitd` under test: runs inside one of the test's namespaces (its "host"), with
//! its own socket, state dir and log file in a temp dir. Killed by PID on drop; its log
//! is printed if the test is failing, so a red test says what the agent saw.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strait_api::{Client, Readiness, paths};

use crate::bins::bin;

/// The bpf filesystem test agents pin their maps in. Not `/sys/fs/bpf`: `ip netns
/// exec` mounts a fresh sysfs over `/sys` for the agent, which hides a bpffs there
/// (the agent would mount a private one, gone with it, and a restarted agent would
/// find nothing to adopt). Mounted once, on first use; each agent removes its own
/// directory in it.
pub fn test_bpffs() -> PathBuf {
    static MOUNTED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MOUNTED
        .get_or_init(|| {
            let dir = PathBuf::from("/run/strait-test-bpffs");
            let mounted = || {
                std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
                    m.lines()
                        .any(|l| l.split_whitespace().nth(1) == Some("/run/strait-test-bpffs"))
                })
            };
            if !mounted() {
                let _ = std::fs::create_dir_all(&dir);
                let _ = Command::new("mount")
                    .args(["-t", "bpf", "strait-test-bpf"])
                    .arg(&dir)
                    .status();
            }
            dir
        })
        .clone()
}
use crate::netns::Netns;

/// The cgroup v2 hierarchy test agents attach their socket balancers in: each agent
/// gets a cgroup of its own there ([`Agent::service_cgroup`]), never the machine's
/// root, so an agent under test translates the connects of the processes a test puts
/// in its cgroup and no other. Mounted outside `/sys` for the reason
/// [`test_bpffs`] is (the same hierarchy, seen from a second mount point).
pub fn test_cgroup2() -> PathBuf {
    static MOUNTED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MOUNTED
        .get_or_init(|| {
            let dir = PathBuf::from("/run/strait-test-cgroup2");
            let mounted = || {
                std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
                    m.lines()
                        .any(|l| l.split_whitespace().nth(1) == Some("/run/strait-test-cgroup2"))
                })
            };
            if !mounted() {
                let _ = std::fs::create_dir_all(&dir);
                let _ = Command::new("mount")
                    .args(["-t", "cgroup2", "strait-test-cgroup2"])
                    .arg(&dir)
                    .status();
            }
            dir
        })
        .clone()
}

/// How to start an agent.
#[derive(Debug, Clone)]
pub struct AgentOpts {
    pub node: String,
    pub pools: Vec<String>,
    pub mtu: Option<u32>,
    pub extra: Vec<String>,
}

impl AgentOpts {
    pub fn new(node: &str, pools: &[&str]) -> Self {
        Self {
            node: node.into(),
            pools: pools.iter().map(|s| s.to_string()).collect(),
            mtu: None,
            extra: vec![],
        }
    }
}

/// A running (or stopped) agent.
pub struct Agent {
    child: Option<Child>,
    netns: String,
    opts: AgentOpts,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub log_path: PathBuf,
}

impl Agent {
    /// Start in `host` and wait until it is ready.
    pub fn start(host: &Netns, dir: &Path, opts: AgentOpts) -> Self {
        let mut a = Self::spawn(host, dir, opts);
        a.wait_ready(Duration::from_secs(30));
        a
    }

    /// Start without waiting (to observe start-up behaviour).
    pub fn spawn(host: &Netns, dir: &Path, opts: AgentOpts) -> Self {
        let mut a = Self {
            child: None,
            netns: host.name().to_string(),
            opts,
            dir: dir.to_path_buf(),
            socket: dir.join("strait.sock"),
            state_dir: dir.join("state"),
            log_path: dir.join("straitd.log"),
        };
        a.launch();
        a
    }

    fn launch(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("agent log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(bin("straitd"))
            .arg("--node-name")
            .arg(&self.opts.node)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir);
        for p in &self.opts.pools {
            cmd.arg("--pool").arg(p);
        }
        if !self.opts.extra.iter().any(|a| a == "--bpf-dir") {
            cmd.arg("--bpf-dir").arg(self.bpf_dir());
        }
        if !self.opts.extra.iter().any(|a| a == "--service-cgroup") {
            let cgroup = self.service_cgroup();
            let _ = std::fs::create_dir_all(&cgroup);
            cmd.arg("--service-cgroup").arg(cgroup);
        }
        if let Some(m) = self.opts.mtu {
            cmd.arg("--mtu").arg(m.to_string());
        }
        cmd.args(&self.opts.extra)
            .env("STRAIT_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        // `ip netns exec` execs straitd in place, so the child PID is the agent's.
        self.child = Some(cmd.spawn().expect("spawn straitd"));
    }

    /// The agent's exit status once it has exited (it is reaped then); `None` while it
    /// runs, or when it was never started or already reaped.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn client(&self) -> Client {
        Client::new(&self.socket).with_timeout(Duration::from_secs(60))
    }

    /// Wait until `/readyz` answers ready; panic with the log after `timeout`.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("straitd exited with {status}:\n{}", self.log());
            }
            if let Ok(r) = self.client().get::<Readiness>(paths::READYZ)
                && r.ready
            {
                return;
            }
            if Instant::now() > deadline {
                panic!("straitd not ready after {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait for exit (graceful: nothing is flushed); SIGKILL after 15 s.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            crate::process::terminate(c, Duration::from_secs(15));
        }
    }

    /// SIGKILL: the crash case.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.take() {
            crate::process::kill_now(c);
        }
    }

    /// Where this agent pins its policy maps: its own directory on the tests' bpffs
    /// ([`test_bpffs`]), kept across restarts as `/sys/fs/bpf/strait` is on a host.
    pub fn bpf_dir(&self) -> PathBuf {
        test_bpffs().join(&self.netns)
    }

    /// The cgroup whose processes this agent's socket balancer serves: a test puts a
    /// client there (`echo PID > DIR/cgroup.procs`) to reach services as a container
    /// of this host would.
    pub fn service_cgroup(&self) -> PathBuf {
        test_cgroup2().join(&self.netns)
    }

    /// A killed agent leaves its namespace's lock file in `/run/strait` (the next agent
    /// on the host would remove it); the test that made the namespace removes it now,
    /// once no agent holds it, so a test run leaves nothing there.
    fn remove_netns_lock(&self) {
        use std::os::unix::fs::MetadataExt;
        let Ok(ns) = std::fs::metadata(format!("/run/netns/{}", self.netns)) else {
            return;
        };
        let path = PathBuf::from(format!("/run/strait/netns-{}.lock", ns.ino()));
        if let Ok(file) = std::fs::File::open(&path)
            && file.try_lock().is_ok()
        {
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Start again with the same options, socket and state; wait until ready.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
        self.wait_ready(Duration::from_secs(30));
    }

    /// Start again with `extra` flags added to the original ones (same socket and
    /// state); wait until ready.
    pub fn restart_with(&mut self, extra: &[&str]) {
        let saved = self.opts.extra.clone();
        self.opts.extra.extend(extra.iter().map(|s| s.to_string()));
        self.restart();
        self.opts.extra = saved;
    }

    /// Use `pools` instead of the pools given so far, from the next start on.
    pub fn set_pools(&mut self, pools: &[&str]) {
        self.opts.pools = pools.iter().map(|s| s.to_string()).collect();
    }

    /// Start again without waiting for readiness.
    pub fn relaunch(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        self.remove_netns_lock();
        // Its pinned maps (the programs went with the namespace's veths), and its
        // cgroup (the socket balancer's programs go with it; a process a test left
        // in it keeps it, and is the test's to end).
        let _ = std::fs::remove_dir_all(self.bpf_dir());
        let _ = std::fs::remove_dir(self.service_cgroup());
        if std::thread::panicking() {
            eprintln!(
                "----- straitd log ({}) -----\n{}\n----- end of log -----",
                self.log_path.display(),
                self.log()
            );
        }
    }
}
