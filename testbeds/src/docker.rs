//! A private Docker engine (Debian's `docker.io` dockerd) inside a test host's network
//! namespace, with `straitd` of that host as its `strait` network and IPAM driver.
//!
//! dockerd runs in the same network namespace as the host's agent: the plugin makes the
//! veth in its own namespace and dockerd moves one end into the container, so both must
//! share it. dockerd also gets a mount namespace of its own, in which a private
//! `<dir>/plugins` is bound over `/run/docker/plugins` (a directory dockerd hard-codes
//! for plugin discovery): every test's driver is called `strait`, the agent listens at
//! `<dir>/plugins/strait.sock`, and no test touches the real `/run/docker/plugins`.
//! Every mount in that namespace is made a slave of the host's, so nothing dockerd
//! mounts (overlays, the plugin dir) shows outside it and it all goes with dockerd and
//! its children; except the exec root, a shared mount of its own, so the containers'
//! netns files dockerd mounts there are seen by the agent, as on a real host.
//!
//! dockerd is entered into the namespace with `nsenter --net`, not `ip netns exec`:
//! the latter mounts a fresh sysfs over `/sys`, which hides `/sys/fs/cgroup` and leaves
//! runc no cgroups to put containers in.
//!
//! Everything else is private too: `-H`, `--data-root`, `--exec-root`, `--pidfile`, the
//! daemon config (which also moves the trust key out of `/etc/docker`), the CLI config
//! (`DOCKER_CONFIG`), and a cgroup parent named after the test. The busybox image
//! [`IMAGE`] is imported from a local tarball; no registry is ever asked
//! (`docker run --pull never`).
//!
//! Cleanup on drop, also when the test panics: every container is removed (`rm -f`,
//! while the agent still runs, so it sees Leave and DeleteEndpoint) and every user
//! network, dockerd is stopped by PID (SIGTERM, SIGKILL after a timeout), what it left
//! running (its containerd, shims and their containers, found by the temp dir in their
//! command line) is killed by PID, its iptables chains are removed when it had
//! `--iptables=true`, its cgroups and the temp dir go. A failing test prints the tail
//! of dockerd's log.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::agent::AgentOpts;
use crate::host::Host;
use crate::runtimes::{
    CMD_TIMEOUT, RuntimeDir, busybox_rootfs_tar, children_of, kill_pid, processes_naming, tail,
    try_run,
};

/// The busybox image every test container runs.
pub const IMAGE: &str = "strait-bb:latest";
/// dockerd and the CLI from Debian's `docker.io` (not a `docker` elsewhere in PATH).
pub const DOCKERD: &str = "/usr/sbin/dockerd";
pub const DOCKER: &str = "/usr/bin/docker";
/// What [`crate::runtimes::require_tools`] must find before a Docker test runs.
pub const DOCKER_TOOLS: &[&str] = &[DOCKERD, DOCKER, "nsenter", "unshare", "tar"];
/// The directory dockerd looks for plugin sockets in (hard-coded in dockerd).
const PLUGIN_DIR: &str = "/run/docker/plugins";

/// How to start dockerd.
#[derive(Debug, Clone, Default)]
pub struct DockerOpts {
    /// `--iptables=true` (default false). Its chains are removed on drop.
    pub iptables: bool,
}

/// A private dockerd; see the module docs.
pub struct DockerHost {
    pub prefix: String,
    /// dockerd's API socket (what `--docker-host` of the agent names).
    pub socket: PathBuf,
    /// Bound over `/run/docker/plugins` in dockerd's mount namespace.
    pub plugin_dir: PathBuf,
    /// Where the agent's plugin socket must be: `<plugin_dir>/strait.sock`.
    pub plugin_socket: PathBuf,
    pub log_path: PathBuf,
    opts: DockerOpts,
    netns: Option<String>,
    cgroup_parent: String,
    child: Option<Child>,
    // Last: removed after dockerd and everything it started are gone.
    dir: RuntimeDir,
}

impl DockerHost {
    /// The directories, config and the mount point; no daemon yet (the agent's flags
    /// name paths in here, and the agent must start first: see [`DockerBed`]).
    pub fn prepare(opts: DockerOpts) -> Self {
        let prefix = crate::unique_prefix();
        // A short temp dir: the exec root holds unix sockets (108-byte path limit).
        let dir = RuntimeDir::new(&format!("{prefix}dk"));
        let d = dir.path().to_path_buf();
        for sub in ["plugins", "root", "exec", "cli"] {
            fs::create_dir_all(d.join(sub)).expect("docker dir");
        }
        let config = serde_json::json!({ "deprecated-key-path": d.join("key.json") });
        fs::write(d.join("daemon.json"), config.to_string()).expect("daemon.json");
        plugin_dir_acquire();
        share_exec_root(&d.join("exec"));
        Self {
            socket: d.join("docker.sock"),
            plugin_dir: d.join("plugins"),
            plugin_socket: d.join("plugins").join("strait.sock"),
            log_path: d.join("dockerd.log"),
            cgroup_parent: format!("/{prefix}-docker"),
            prefix,
            opts,
            netns: None,
            child: None,
            dir,
        }
    }

    /// The agent flags that make it this dockerd's `strait` driver.
    pub fn agent_flags(&self) -> Vec<String> {
        vec![
            "--docker-plugin".into(),
            "--docker-plugin-socket".into(),
            self.plugin_socket.to_string_lossy().into_owned(),
            "--docker-host".into(),
            self.socket.to_string_lossy().into_owned(),
        ]
    }

    /// Start dockerd in network namespace `netns`, wait until it answers, and import
    /// [`IMAGE`].
    pub fn start(&mut self, netns: &str) {
        self.netns = Some(netns.to_string());
        self.launch();
        self.wait_up(Duration::from_secs(60));
        let tar = busybox_rootfs_tar(self.dir.path());
        self.docker_ok(&[
            "import",
            "--change",
            r#"CMD ["/bin/sh"]"#,
            &tar.to_string_lossy(),
            IMAGE,
        ]);
        let _ = fs::remove_file(tar);
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn launch(&mut self) {
        let netns = self.netns.clone().expect("start() names the namespace");
        let d = self.dir.path();
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("dockerd log");
        let dockerd = [
            DOCKERD.to_string(),
            format!("-H unix://{}", self.socket.display()),
            format!("--data-root {}", d.join("root").display()),
            format!("--exec-root {}", d.join("exec").display()),
            format!("--pidfile {}", d.join("docker.pid").display()),
            format!("--config-file {}", d.join("daemon.json").display()),
            "--storage-driver overlay2".into(),
            "--exec-opt native.cgroupdriver=cgroupfs".into(),
            format!("--cgroup-parent {}", self.cgroup_parent),
            "--bridge=none".into(),
            format!("--iptables={}", self.opts.iptables),
            // Containers that ignore SIGTERM (a shell as PID 1) must not hold up a
            // restart for the default 15 s.
            "--shutdown-timeout 2".into(),
            "--log-level debug".into(),
        ]
        .join(" ");
        // Every mount but the exec root becomes a slave: what dockerd mounts stays in
        // its namespace, except the containers' netns files (see share_exec_root).
        let exec_root = d.join("exec");
        let script = format!(
            "for m in $(cut -d' ' -f5 /proc/self/mountinfo); do \
               [ \"$m\" = {exec} ] || mount --make-slave \"$m\" 2>/dev/null; \
             done; \
             mount --bind {plugins} {PLUGIN_DIR} && exec {dockerd}",
            exec = exec_root.display(),
            plugins = self.plugin_dir.display(),
        );
        // nsenter, unshare and sh all exec: the child's PID is dockerd's.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{netns}"))
            .args(["--", "unshare", "-m", "--propagation", "unchanged", "--"])
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        self.child = Some(child);
    }

    fn wait_up(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("dockerd exited with {status}:\n{}", tail(&self.log(), 60));
            }
            if self.socket.exists() && self.docker(&["version"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd not up after {timeout:?}:\n{}",
                tail(&self.log(), 60)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The network namespace dockerd runs in, once started.
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// What a failing connectivity check should show: addresses, routes and
    /// neighbours in the containers `names` and in dockerd's (the host's) namespace.
    pub fn diagnose(&self, names: &[&str]) -> String {
        let mut s = String::new();
        for n in names {
            for argv in [
                &["ip", "addr"][..],
                &["ip", "route"],
                &["ip", "-6", "route"],
                &["ip", "neigh"],
            ] {
                let out = self.exec(n, argv);
                s.push_str(&format!(
                    "--- {n}: {} ---\n{}{}",
                    argv.join(" "),
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        if let Some(ns) = &self.netns {
            for argv in [
                &["ip", "-br", "addr"][..],
                &["ip", "route"],
                &["ip", "-6", "route"],
                &["ip", "neigh"],
                &[
                    "sysctl",
                    "net.ipv4.ip_forward",
                    "net.ipv6.conf.all.forwarding",
                ],
                &["iptables", "-w", "-S"],
            ] {
                let out = Command::new("ip")
                    .args(["netns", "exec", ns])
                    .args(argv)
                    .output();
                if let Ok(out) = out {
                    s.push_str(&format!(
                        "--- host {ns}: {} ---\n{}{}",
                        argv.join(" "),
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
        }
        s
    }

    /// dockerd's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGTERM dockerd, wait (SIGKILL after 30 s), start it again with the same
    /// directories and flags, and wait until it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
        self.wait_up(Duration::from_secs(60));
    }

    /// SIGTERM dockerd and wait for it (SIGKILL after 30 s). It stops its containers
    /// and its containerd on the way out.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            crate::process::terminate(c, Duration::from_secs(30));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last `n` lines of dockerd's log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log(), n)
    }

    /// A `docker` command against this dockerd only.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(DOCKER);
        c.env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("cli"))
            .args(args);
        c
    }

    /// Run `docker ARGS` (killed after [`CMD_TIMEOUT`]).
    pub fn docker(&self, args: &[&str]) -> Output {
        crate::runtimes::run_with_timeout(self.cmd(args), CMD_TIMEOUT)
    }

    /// Run `docker ARGS`; panic with its output and dockerd's log tail unless it
    /// succeeds. Its stdout, trimmed.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({}): {}{}\n----- dockerd log (tail) -----\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 40)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `docker run -d --pull never --name NAME OPTS strait-bb CMD...`.
    pub fn run(&self, name: &str, opts: &[&str], cmd: &[&str]) -> Output {
        let mut args = vec!["run", "-d", "--pull", "never", "--name", name];
        args.extend_from_slice(opts);
        args.push(IMAGE);
        args.extend_from_slice(cmd);
        self.docker(&args)
    }

    /// [`DockerHost::run`] that must succeed; the container ID.
    pub fn run_ok(&self, name: &str, opts: &[&str], cmd: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--pull", "never", "--name", name];
        args.extend_from_slice(opts);
        args.push(IMAGE);
        args.extend_from_slice(cmd);
        self.docker_ok(&args)
    }

    /// `docker exec NAME ARGV...`.
    pub fn exec(&self, name: &str, argv: &[&str]) -> Output {
        let mut args = vec!["exec", name];
        args.extend_from_slice(argv);
        self.docker(&args)
    }

    /// `docker inspect NAME`, the one object.
    pub fn inspect(&self, name: &str) -> Value {
        let text = self.docker_ok(&["inspect", name]);
        let v: Value = serde_json::from_str(&text).expect("docker inspect JSON");
        v[0].clone()
    }

    /// What `docker inspect` says about container `name` on network `network`
    /// (`IPAddress`, `GlobalIPv6Address`, `EndpointID`, `MacAddress`, ...).
    pub fn attachment(&self, name: &str, network: &str) -> Value {
        self.inspect(name)["NetworkSettings"]["Networks"][network].clone()
    }

    /// Docker's EndpointID of `name` on `network` (what the driver was given).
    pub fn endpoint_id(&self, name: &str, network: &str) -> String {
        let a = self.attachment(name, network);
        a["EndpointID"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| panic!("{name} has no endpoint on {network}: {a}"))
            .to_string()
    }

    /// The container's IPv4 address on `network`.
    pub fn ip(&self, name: &str, network: &str) -> String {
        let a = self.attachment(name, network);
        a["IPAddress"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| panic!("{name} has no IPv4 address on {network}: {a}"))
            .to_string()
    }

    /// IDs of every container this dockerd has (all states).
    pub fn container_ids(&self) -> Vec<String> {
        let out = self.docker(&["ps", "-aq", "--no-trunc"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }

    /// Remove every container and user network (drop does this too).
    pub fn remove_all(&self) {
        let ids = self.container_ids();
        if !ids.is_empty() {
            let mut c = self.cmd(&["rm", "-f"]);
            c.args(&ids);
            let _ = try_run(c, CMD_TIMEOUT);
        }
        if let Ok(out) = try_run(
            self.cmd(&["network", "ls", "-q", "--filter", "type=custom"]),
            CMD_TIMEOUT,
        ) {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = try_run(self.cmd(&["network", "rm", id]), CMD_TIMEOUT);
            }
        }
    }

    /// Delete the chains and jump rules dockerd's `--iptables=true` leaves in the
    /// namespace when it exits (it does not remove them itself).
    fn remove_iptables(&self, netns: &str) {
        for tool in ["iptables", "ip6tables"] {
            for table in ["filter", "nat"] {
                let run = |args: &[&str]| {
                    Command::new("ip")
                        .args(["netns", "exec", netns, tool, "-w", "-t", table])
                        .args(args)
                        .output()
                };
                let Ok(rules) = run(&["-S"]) else { continue };
                let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
                // Rules in built-in chains that jump to Docker's chains first, then
                // Docker's chains themselves (flushed, then deleted).
                for line in rules.lines().filter(|l| l.starts_with("-A ")) {
                    let mut words: Vec<&str> = line.split_whitespace().collect();
                    if words.get(1).is_some_and(|c| !c.starts_with("DOCKER"))
                        && words.iter().any(|w| w.starts_with("DOCKER"))
                    {
                        words[0] = "-D";
                        let _ = run(&words);
                    }
                }
                let chains: Vec<&str> = rules
                    .lines()
                    .filter_map(|l| l.strip_prefix("-N "))
                    .filter(|c| c.starts_with("DOCKER"))
                    .collect();
                for c in &chains {
                    let _ = run(&["-F", c]);
                }
                for c in &chains {
                    let _ = run(&["-X", c]);
                }
            }
        }
    }
}

/// Make `exec_root` a mount point of its own with shared propagation (a new peer
/// group), before the agent and dockerd start: the netns files dockerd bind-mounts
/// under `<exec_root>/netns` then show in the test's mount namespace and in the
/// agent's (a slave copy made by `ip netns exec`), as they would on a real host where
/// dockerd and straitd share one. Unmounted with the temp dir.
fn share_exec_root(exec_root: &Path) {
    let dir = exec_root.to_string_lossy();
    for args in [
        &["--bind", &*dir, &*dir][..],
        &["--make-private", &*dir][..],
        &["--make-shared", &*dir][..],
    ] {
        let out = Command::new("mount")
            .args(args)
            .output()
            .expect("exec mount");
        assert!(
            out.status.success(),
            "mount {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Who uses `/run/docker/plugins` in this process: the number of [`DockerHost`]s, and
/// the directories this process created for them (deepest first), removed when the
/// last one goes.
static PLUGIN_DIR_USERS: std::sync::Mutex<(usize, Vec<PathBuf>)> =
    std::sync::Mutex::new((0, Vec::new()));

/// `mkdir -p /run/docker/plugins` (dockerd needs the mount point), noting what was
/// created.
fn plugin_dir_acquire() {
    let mut users = PLUGIN_DIR_USERS.lock().unwrap_or_else(|e| e.into_inner());
    for p in [PLUGIN_DIR, "/run/docker"] {
        if !Path::new(p).exists() {
            users.1.push(PathBuf::from(p));
        }
    }
    fs::create_dir_all(PLUGIN_DIR).expect("mkdir /run/docker/plugins");
    users.0 += 1;
}

/// The last [`DockerHost`] of this process removes what this process created, if
/// empty and no other process's dockerd has its plugin dir mounted there (removing it
/// would take that mount away).
fn plugin_dir_release() {
    let mut users = PLUGIN_DIR_USERS.lock().unwrap_or_else(|e| e.into_inner());
    users.0 = users.0.saturating_sub(1);
    if users.0 == 0 && !users.1.is_empty() && !plugin_dir_in_use() {
        for d in std::mem::take(&mut users.1) {
            let _ = fs::remove_dir(d);
        }
    }
}

/// Whether a process other than this one has something mounted on
/// `/run/docker/plugins` (another test's dockerd): removing the directory would take
/// that mount away from it.
fn plugin_dir_in_use() -> bool {
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return true;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .any(|pid| {
            fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(PLUGIN_DIR)))
        })
}

impl Drop for DockerHost {
    fn drop(&mut self) {
        // Containers first, while dockerd and the agent are up: the driver then sees
        // Leave and DeleteEndpoint, and dockerd unmounts what it mounted.
        if self.child.is_some() {
            self.remove_all();
        }
        self.stop();
        // What dockerd left running (a killed dockerd leaves its containerd; a killed
        // containerd its shims): ours, since their command lines name our dir. A
        // shim's children are the containers' init processes.
        let left = processes_naming(self.dir.path());
        for &pid in &left {
            for child in children_of(pid) {
                if !left.contains(&child) {
                    kill_pid(child, Signal::SIGKILL);
                }
            }
            kill_pid(pid, Signal::SIGKILL);
        }
        if !left.is_empty() {
            std::thread::sleep(Duration::from_millis(300));
        }
        if self.opts.iptables
            && let Some(ns) = &self.netns
        {
            self.remove_iptables(ns);
        }
        // Containers' cgroups under our parent, then the parent, in every hierarchy.
        if let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") {
            let parent = self.cgroup_parent.trim_start_matches('/');
            for c in controllers.flatten() {
                let p = c.path().join(parent);
                if let Ok(kids) = fs::read_dir(&p) {
                    for k in kids.flatten().filter(|k| k.path().is_dir()) {
                        let _ = fs::remove_dir(k.path());
                    }
                }
                let _ = fs::remove_dir(&p);
            }
        }
        plugin_dir_release();
        if std::thread::panicking() {
            eprintln!(
                "----- dockerd log ({}) -----\n{}\n----- end of log -----",
                self.log_path.display(),
                tail(&self.log(), 150)
            );
        }
    }
}

/// The test host's own address (TEST-NET-1, inside the host's namespace only).
pub const HOST_ADDRESS: &str = "192.0.2.1/24";

/// A test host (a namespace with its `straitd`) and a private dockerd in it whose
/// `strait` driver is that agent.
pub struct DockerBed {
    // Drop order: dockerd (and the containers) go while the agent is still up; then
    // the host (agent killed, namespace deleted).
    pub docker: DockerHost,
    pub host: Host,
}

impl DockerBed {
    /// An agent on `pools` with the Docker plugin on, and dockerd (`--iptables=false`).
    pub fn new(pools: &[&str]) -> Self {
        Self::with(pools, DockerOpts::default(), |_| {})
    }

    /// [`DockerBed::new`] with dockerd options and more agent options.
    pub fn with(pools: &[&str], opts: DockerOpts, adjust: impl FnOnce(&mut AgentOpts)) -> Self {
        let mut docker = DockerHost::prepare(opts);
        let flags = docker.agent_flags();
        let host = Host::with_opts(
            |o| {
                o.extra.extend(flags);
                adjust(o);
            },
            pools,
        );
        // A host has an address of its own (here on a veth whose peer stays in the
        // namespace: this kernel has no dummy links; as a real host's NIC
        // has one): traffic the host itself sends to a container (the `-p` proxy's
        // connections) takes it as its source.
        for args in [
            &[
                "link", "add", "host0", "type", "veth", "peer", "name", "host0p",
            ][..],
            &["addr", "add", HOST_ADDRESS, "dev", "host0"],
            &["link", "set", "host0p", "up"],
            &["link", "set", "host0", "up"],
        ] {
            let out = Command::new("ip")
                .args(["-n", host.ns.name()])
                .args(args)
                .output()
                .expect("exec ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        docker.start(host.ns.name());
        Self { docker, host }
    }

    /// `netctl --socket <the agent's> ARGS`: (success, stdout, stderr).
    pub fn netctl(&self, args: &[&str]) -> (bool, String, String) {
        netctl(&self.host.agent.socket, args)
    }

    /// `netctl -o json ARGS`, parsed; panics unless it succeeds.
    pub fn netctl_json(&self, args: &[&str]) -> Value {
        netctl_json(&self.host.agent.socket, args)
    }
}

/// `netctl --socket SOCKET ARGS`: (success, stdout, stderr).
pub fn netctl(socket: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(crate::bins::bin("netctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("exec netctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `netctl -o json ARGS` against `socket`, parsed; panics unless it succeeds.
pub fn netctl_json(socket: &Path, args: &[&str]) -> Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let (ok, out, err) = netctl(socket, &all);
    assert!(ok, "netctl {args:?} failed: {out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("netctl {args:?}: {e}: {out}"))
}
