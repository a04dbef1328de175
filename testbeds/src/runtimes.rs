//! Real container runtimes driving `strait` against a test's agent: a private Podman
//! (CNI backend) and a private containerd (CRI plugin), each with its own config,
//! storage and CNI dirs in a temp dir, and a busybox image made from Debian's
//! busybox-static without a registry.
//!
//! The runtimes run on the real host and create the containers' network namespaces;
//! the agent runs in the test's "host" namespace ([`crate::host::Host`]), so the host
//! side of every veth lands there and the real host's network is not touched. Nothing
//! global is configured: no `/etc/cni/net.d`, no `/opt/cni/bin`, no `/etc/containers`.
//!
//! Cleanup on drop, also when the test panics: Podman removes the containers this
//! helper started (by name), containerd's pods are stopped and removed through CRI (so
//! the agent still sees the DELs), then containerd and any shim it left are killed by
//! PID, leftover mounts under the temp dir are unmounted and the dir is removed.
//!
//! [`scripts/lib-podman.sh`](../../scripts/lib-podman.sh) is the shell twin of the
//! Podman set-up; keep the two consistent.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bins::{bin, reference_plugins_dir};
use crate::host::Host;

/// Deadline for one runtime command; generous because two cores may be busy building.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(120);

/// The image both runtimes use (the name scripts/lib-podman.sh gives it too).
pub const BUSYBOX_IMAGE: &str = "localhost/strait-bb:latest";

/// True when every tool in `tools` (a program in PATH or an absolute path) exists.
///
/// Otherwise prints a visible SKIP line and returns false, or, under
/// `STRAIT_REQUIRE_PRIVILEGED=1` (CI), panics: CI must never pass a runtime test that
/// did not run. `scripts/install-deps.sh` installs all of them.
pub fn require_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{test}: missing {} (run scripts/install-deps.sh: podman, runc, containerd, \
         containernetworking-plugins, busybox-static)",
        missing.join(", ")
    );
    if std::env::var("STRAIT_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{msg}; STRAIT_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!("SKIP: {msg}");
    false
}

fn have(tool: &str) -> bool {
    if tool.starts_with('/') {
        return Path::new(tool).exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Run `cmd` to completion within `timeout`; a command that hangs is killed (by its
/// PID: it is ours) and the test fails saying which command it was.
pub fn run_with_timeout(cmd: Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    match try_run(cmd, timeout) {
        Ok(out) => out,
        Err(e) => panic!("{desc}: {e}"),
    }
}

/// [`run_with_timeout`] without panicking, for cleanup paths (drop may run while the
/// test is already unwinding).
pub fn try_run(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    // wait_with_output drains both pipes; a thread lets us wait for it with a deadline.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.map_err(|e| e.to_string()),
        Err(_) => {
            kill_pid(pid, nix::sys::signal::Signal::SIGKILL);
            Err(format!("did not finish within {timeout:?} (killed)"))
        }
    }
}

/// Like [`run_with_timeout`], panicking with stdout and stderr unless it succeeds;
/// returns stdout.
pub fn run_ok(cmd: Command) -> String {
    let desc = format!("{cmd:?}");
    let out = run_with_timeout(cmd, CMD_TIMEOUT);
    assert!(
        out.status.success(),
        "{desc} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn kill_pid(pid: u32, sig: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
    }
}

/// `dir/bb.tar`: a root filesystem with Debian's static busybox and its applets, the
/// same one scripts/lib-podman.sh imports.
pub fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("busybox missing: apt-get install busybox-static");
    let rootfs = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        fs::create_dir_all(rootfs.join(d)).expect("rootfs dir");
    }
    fs::copy(&busybox, rootfs.join("bin/busybox")).expect("copy busybox");
    // The installed binary lists the applets, not the fresh copy: a process another
    // test thread forks meanwhile inherits our write fd to the copy until it execs,
    // and exec'ing a file open for writing fails with ETXTBSY.
    let mut list = Command::new(&busybox);
    list.arg("--list");
    for applet in run_ok(list).lines().filter(|a| *a != "busybox") {
        // Symlinks, not copies: the image stays ~2 MB.
        let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").expect("passwd");
    fs::write(rootfs.join("etc/group"), "root:x:0:\n").expect("group");
    let tar = dir.join("bb.tar");
    let mut cmd = Command::new("tar");
    cmd.arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".");
    run_ok(cmd);
    let _ = fs::remove_dir_all(&rootfs);
    tar
}

/// A docker-archive (what `docker save` writes) holding one image: `rootfs_tar` as its
/// only layer, `image_ref` as its tag and `cmd` as its CMD. containerd imports this
/// with `ctr images import`; no registry and no Podman needed.
pub fn docker_archive(dir: &Path, rootfs_tar: &Path, image_ref: &str, cmd: &[&str]) -> PathBuf {
    let work = dir.join("docker-archive");
    fs::create_dir_all(&work).expect("archive dir");
    fs::copy(rootfs_tar, work.join("layer.tar")).expect("copy layer");
    // The config's diff_id must be the layer's digest: containerd checks it on unpack.
    let mut sum = Command::new("sha256sum");
    sum.arg(work.join("layer.tar"));
    let layer_digest = run_ok(sum)
        .split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Cmd": cmd, "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{layer_digest}")] },
    });
    fs::write(work.join("config.json"), config.to_string()).expect("config");
    let manifest = json!([{
        "Config": "config.json",
        "RepoTags": [image_ref],
        "Layers": ["layer.tar"],
    }]);
    fs::write(work.join("manifest.json"), manifest.to_string()).expect("manifest");
    let out = dir.join("image-docker-archive.tar");
    let mut tar = Command::new("tar");
    tar.arg("-C").arg(&work).arg("-cf").arg(&out).args([
        "manifest.json",
        "config.json",
        "layer.tar",
    ]);
    run_ok(tar);
    let _ = fs::remove_dir_all(&work);
    out
}

/// A conflist for `host`'s agent: `strait` first, then `portmap` (chaining: portmap
/// gets strait's result as prevResult; with no published port it leaves iptables
/// alone). cniVersion 1.0.0: Podman 4.3's libcni does not know 1.1.0.
pub fn conflist(host: &Host, network: &str) -> Value {
    conflist_for(&host.agent, network)
}

/// [`conflist`] for any agent (a cluster host's, say).
pub fn conflist_for(agent: &crate::agent::Agent, network: &str) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [
            {
                "type": "strait",
                "socket": agent.socket,
                "stateDir": agent.state_dir,
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    })
}

/// `dir` filled with a symlink to our `strait` binary and to the reference plugins
/// `names` (containerd's bin_dir must hold everything it execs, loopback included).
pub fn plugin_dir(dir: &Path, names: &[&str]) -> PathBuf {
    fs::create_dir_all(dir).expect("plugin dir");
    std::os::unix::fs::symlink(bin("strait"), dir.join("strait")).expect("link strait");
    let refs = reference_plugins_dir()
        .expect("reference CNI plugins missing: apt-get install containernetworking-plugins");
    for n in names {
        std::os::unix::fs::symlink(refs.join(n), dir.join(n)).expect("link plugin");
    }
    dir.to_path_buf()
}

/// Unmount whatever is still mounted under `dir` (deepest first, lazily: a runtime
/// killed mid-way may leave overlay and shm mounts behind), so the dir can go.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        // mountinfo escapes spaces as \040; our paths have none.
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .map(String::from)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in points {
        let _ = Command::new("umount").args(["-l", &p]).output();
    }
}

/// A temp dir that unmounts what is left under it before it is removed.
#[derive(Debug)]
pub struct RuntimeDir {
    dir: Option<tempfile::TempDir>,
}

impl RuntimeDir {
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-rt-"))
            .tempdir()
            .expect("temp dir");
        Self { dir: Some(dir) }
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let Some(d) = self.dir.take() else {
            return;
        };
        // Runtimes finish asynchronously: conmon runs `podman container cleanup`
        // after a container dies, and that re-creates storage files (and the overlay
        // mount) under the dir while it is being deleted. Let such stragglers, all
        // started by this test's runtime, end first; kill them by PID if they hang.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let users = processes_naming(d.path());
            if users.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                for pid in users {
                    kill_pid(pid, nix::sys::signal::Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(100));
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let path = d.keep();
        for _ in 0..5 {
            unmount_under(&path);
            if fs::remove_dir_all(&path).is_ok() || !path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("warning: could not remove {}", path.display());
    }
}

/// PIDs (other than this process) whose command line names something under `dir`:
/// the runtime's helpers (conmon, shims, cleanup commands) carry their paths there.
pub(crate) fn processes_naming(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0)
                    .any(|a| String::from_utf8_lossy(a).contains(&needle))
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Podman
// ---------------------------------------------------------------------------------

/// A private Podman: config, storage, CNI config dir and plugin dir of its own, so the
/// host's Podman state and /etc are untouched. Podman commands get the private config
/// through `CONTAINERS_CONF` / `CONTAINERS_STORAGE_CONF` on each command (never through
/// the test process's environment, which parallel tests share).
pub struct Podman {
    pub conf: PathBuf,
    pub storage_conf: PathBuf,
    /// Podman's `network_config_dir`: one conflist per network.
    pub cni_conf_dir: PathBuf,
    /// Containers this helper started, removed on drop.
    containers: Mutex<Vec<String>>,
    // Last: removed after the containers are gone.
    dir: RuntimeDir,
}

impl Podman {
    /// Write the config (the settings scripts/lib-podman.sh writes) and import the
    /// busybox image as [`BUSYBOX_IMAGE`].
    pub fn new(prefix: &str) -> Self {
        let dir = RuntimeDir::new(prefix);
        let d = dir.path();
        for sub in ["cni-conf", "tmp", "root", "runroot"] {
            fs::create_dir_all(d.join(sub)).expect("podman dir");
        }
        let plugins = plugin_dir(&d.join("cni-bin"), &[]);
        let conf = d.join("containers.conf");
        let storage_conf = d.join("storage.conf");
        let cni_conf_dir = d.join("cni-conf");
        let refs = reference_plugins_dir()
            .expect("reference CNI plugins missing: apt-get install containernetworking-plugins");
        fs::write(
            &conf,
            format!(
                r#"[containers]
# No CAP_SYS_RESOURCE on some hosts: podman's default nofile/nproc would not be allowed.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
# crun refuses hybrid cgroup hierarchies; runc copes.
runtime = "runc"
tmp_dir = "{d}/tmp"
[network]
network_backend = "cni"
cni_plugin_dirs = ["{plugins}", "{refs}"]
network_config_dir = "{d}/cni-conf"
"#,
                d = d.display(),
                plugins = plugins.display(),
                refs = refs.display(),
            ),
        )
        .expect("containers.conf");
        fs::write(
            &storage_conf,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{d}/root\"\nrunroot = \"{d}/runroot\"\n",
                d = d.display()
            ),
        )
        .expect("storage.conf");
        let p = Self {
            conf,
            storage_conf,
            cni_conf_dir,
            containers: Mutex::new(vec![]),
            dir,
        };
        let tar = busybox_rootfs_tar(p.dir.path());
        p.ok(&["import", "-q", &tar.to_string_lossy(), BUSYBOX_IMAGE]);
        let _ = fs::remove_file(tar);
        p
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `podman` command with the private config.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf)
            .env("CONTAINERS_STORAGE_CONF", &self.storage_conf)
            .args(args);
        c
    }

    /// Run podman; its output.
    pub fn run(&self, args: &[&str]) -> Output {
        run_with_timeout(self.cmd(args), CMD_TIMEOUT)
    }

    /// Run podman, panic unless it succeeds; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        run_ok(self.cmd(args))
    }

    /// Make `conflist` a Podman network (Podman reads `network_config_dir` on every
    /// command; no `podman network create`).
    pub fn add_network(&self, conflist: &Value) {
        let name = conflist["name"].as_str().expect("conflist name");
        fs::write(
            self.cni_conf_dir.join(format!("{name}.conflist")),
            serde_json::to_vec_pretty(conflist).expect("conflist JSON"),
        )
        .expect("write conflist");
    }

    /// `podman run -d --name NAME <opts> busybox sleep`, remembered for cleanup before
    /// it runs (a failed run can still leave a created container).
    pub fn run_container(&self, name: &str, opts: &[&str]) -> Output {
        self.containers.lock().unwrap().push(name.to_string());
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[BUSYBOX_IMAGE, "sleep", "600"]);
        self.run(&args)
    }

    /// `podman inspect NAME`, the one object.
    pub fn inspect(&self, name: &str) -> Value {
        let text = self.ok(&["inspect", "--type", "container", name]);
        let v: Value = serde_json::from_str(&text).expect("podman inspect JSON");
        v[0].clone()
    }

    /// `podman rm -f -t0 NAMES`.
    pub fn rm(&self, names: &[&str]) -> Output {
        let mut args = vec!["rm", "-f", "-t0"];
        args.extend_from_slice(names);
        let out = self.run(&args);
        self.containers
            .lock()
            .unwrap()
            .retain(|c| !names.contains(&c.as_str()));
        out
    }

    /// Names of the containers Podman knows (all states).
    pub fn ps_names(&self) -> Vec<String> {
        self.ok(&["ps", "-a", "--format", "{{.Names}}"])
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.containers.lock().unwrap_or_else(|e| e.into_inner()));
        if !names.is_empty() {
            let mut c = self.cmd(&["rm", "-f", "-t0", "--ignore"]);
            c.args(&names);
            // Never panic in drop; a hung podman must not hang the test run either.
            let _ = try_run(c, CMD_TIMEOUT);
        }
        // Podman keeps its storage mounted (overlay home, layer mounts): unmount and
        // delete it all with the dir, after the containers are gone.
    }
}

// ---------------------------------------------------------------------------------
// containerd
// ---------------------------------------------------------------------------------

/// The sandbox image of the private containerd: busybox with `sleep` as its CMD.
pub const PAUSE_IMAGE: &str = "localhost/strait-pause:latest";

/// A private containerd with the CRI plugin: root, state, socket, config and the CNI
/// dirs in a temp dir; the CNI conf dir holds one conflist for the test's agent.
/// Driven through the `strait-cri` binary (Debian has no crictl).
pub struct Containerd {
    pub socket: PathBuf,
    cri_bin: PathBuf,
    pub log_path: PathBuf,
    pub cni_conf_dir: PathBuf,
    child: Option<Child>,
    /// Pod sandboxes started through [`Containerd::runp`], removed on drop.
    pods: Mutex<Vec<String>>,
    /// Pod netns paths seen, unmounted on drop if containerd left them.
    netns_seen: Mutex<Vec<String>>,
    // Last: removed after the process and the pods are gone.
    dir: RuntimeDir,
}

impl Containerd {
    /// Start containerd with `conflist` as its CNI config, import the sandbox image,
    /// and wait until CRI reports the runtime and the network ready.
    pub fn start(prefix: &str, conflist: &Value) -> Self {
        // Resolved first: a missing binary fails here, not in drop.
        let cri_bin = bin("strait-cri");
        let dir = RuntimeDir::new(prefix);
        let d = dir.path().to_path_buf();
        let bin_dir = plugin_dir(&d.join("cni-bin"), &["loopback", "portmap", "host-local"]);
        let cni_conf_dir = d.join("cni-conf");
        fs::create_dir_all(&cni_conf_dir).expect("cni conf dir");
        let name = conflist["name"].as_str().expect("conflist name");
        fs::write(
            cni_conf_dir.join(format!("10-{name}.conflist")),
            serde_json::to_vec_pretty(conflist).expect("conflist JSON"),
        )
        .expect("write conflist");
        let socket = d.join("containerd.sock");
        let config = d.join("config.toml");
        fs::write(
            &config,
            format!(
                r#"version = 2
root = "{d}/root"
state = "{d}/state"
# Snapshotters that cannot work here only add noise to the log.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{sock}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # root lacks CAP_SYS_RESOURCE: the sandbox's oom_score_adj -998 would fail runc.
  restrict_oom_score_adj = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_hugetlb_controller = true
  tolerate_missing_hugetlb_controller = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin_dir}"
    conf_dir = "{conf_dir}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"#,
                d = d.display(),
                sock = socket.display(),
                pause = PAUSE_IMAGE,
                bin_dir = bin_dir.display(),
                conf_dir = cni_conf_dir.display(),
            ),
        )
        .expect("containerd config");
        let log_path = d.join("containerd.log");
        let log = fs::File::create(&log_path).expect("containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let mut c = Self {
            socket,
            cri_bin,
            log_path,
            cni_conf_dir,
            child: Some(child),
            pods: Mutex::new(vec![]),
            netns_seen: Mutex::new(vec![]),
            dir,
        };
        c.wait_up(Duration::from_secs(60));
        let tar = busybox_rootfs_tar(c.dir.path());
        let archive = docker_archive(
            c.dir.path(),
            &tar,
            PAUSE_IMAGE,
            &["/bin/sleep", "2147483647"],
        );
        c.ctr_ok(&[
            "-n",
            "k8s.io",
            "images",
            "import",
            &archive.to_string_lossy(),
        ]);
        let _ = fs::remove_file(tar);
        let _ = fs::remove_file(archive);
        c.wait_network_ready(Duration::from_secs(30));
        c
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn wait_up(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("containerd exited with {status}:\n{}", self.log());
            }
            if self.socket.exists() && self.cri(&["version"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd not up after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// CRI Status until RuntimeReady and NetworkReady (containerd loads the CNI config
    /// asynchronously).
    fn wait_network_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.cri_json(&["status"]);
            let ready = |t: &str| {
                status["status"]["conditions"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|c| c["type"] == t && c["status"] == true))
            };
            if ready("RuntimeReady") && ready("NetworkReady") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd CRI not ready after {timeout:?}: {status:#}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `ctr --address SOCK ARGS`, panicking unless it succeeds.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(&self.socket).args(args);
        run_ok(c)
    }

    /// `strait-cri --socket SOCK ARGS`.
    pub fn cri(&self, args: &[&str]) -> Output {
        let mut c = Command::new(&self.cri_bin);
        c.arg("--socket").arg(&self.socket).args(args);
        run_with_timeout(c, CMD_TIMEOUT)
    }

    /// `strait-cri`, panicking (with containerd's log tail) unless it succeeds.
    pub fn cri_ok(&self, args: &[&str]) -> String {
        let out = self.cri(args);
        assert!(
            out.status.success(),
            "strait-cri {args:?} failed: {}{}\n----- containerd log (tail) -----\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 40)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn cri_json(&self, args: &[&str]) -> Value {
        let text = self.cri_ok(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("strait-cri {args:?}: {e}: {text}"))
    }

    /// RunPodSandbox; the sandbox id. Remembered for cleanup.
    pub fn runp(&self, name: &str, namespace: &str) -> String {
        let log_dir = self.dir().join("podlogs").join(name);
        let out = self.cri(&[
            "runp",
            name,
            "--namespace",
            namespace,
            "--log-dir",
            &log_dir.to_string_lossy(),
        ]);
        assert!(
            out.status.success(),
            "RunPodSandbox {name} failed: {}\n----- containerd log (tail) -----\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 40)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        self.pods.lock().unwrap().push(id.clone());
        // Note the netns now: if containerd dies before the pod is removed, drop
        // still knows which mount to take away.
        self.inspectp(&id);
        id
    }

    /// PodSandboxStatus (verbose), with containerd's info parsed.
    pub fn inspectp(&self, id: &str) -> Value {
        let v = self.cri_json(&["inspectp", id]);
        if let Some(p) = pod_netns(&v) {
            self.netns_seen.lock().unwrap().push(p);
        }
        v
    }

    /// Forget a pod removed by the test itself.
    pub fn forget_pod(&self, id: &str) {
        self.pods.lock().unwrap().retain(|p| p != id);
    }

    /// PIDs of the shims this containerd started (their command line names our
    /// socket), so leftovers can be killed by PID and nothing else is.
    fn our_shims(&self) -> Vec<u32> {
        let sock = self.socket.to_string_lossy().into_owned();
        let mut pids = vec![];
        let Ok(entries) = fs::read_dir("/proc") else {
            return pids;
        };
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.first().is_some_and(|a| a.contains("containerd-shim")) && args.contains(&sock) {
                pids.push(pid);
            }
        }
        pids
    }
}

/// The pod's network namespace path from a verbose PodSandboxStatus: the runtime spec
/// containerd made for the sandbox names it.
pub fn pod_netns(inspect: &Value) -> Option<String> {
    inspect["info"]["info"]["runtimeSpec"]["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .map(String::from)
}

/// The pod's addresses from PodSandboxStatus: the primary IP, then the additional ones.
pub fn pod_ips(inspect: &Value) -> Vec<String> {
    let net = &inspect["status"]["network"];
    let mut ips = vec![];
    if let Some(ip) = net["ip"].as_str().filter(|s| !s.is_empty()) {
        ips.push(ip.to_string());
    }
    if let Some(more) = net["additional_ips"].as_array() {
        ips.extend(
            more.iter()
                .filter_map(|i| i["ip"].as_str().map(String::from)),
        );
    }
    ips
}

pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Containerd {
    fn drop(&mut self) {
        use nix::sys::signal::Signal;
        // Pods first, through CRI, while containerd and the agent are up: containerd
        // then runs the CNI DELs and removes its netns mounts itself.
        let pods = std::mem::take(&mut *self.pods.lock().unwrap_or_else(|e| e.into_inner()));
        for id in &pods {
            for verb in ["stopp", "rmp"] {
                let mut c = Command::new(&self.cri_bin);
                c.arg("--socket").arg(&self.socket).args([verb, id]);
                let _ = try_run(c, CMD_TIMEOUT);
            }
        }
        if let Some(mut c) = self.child.take() {
            kill_pid(c.id(), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // Shims outlive containerd by design; any left (pods that could not be
        // removed) are ours: kill their children (the sandbox process) and them.
        let shims = self.our_shims();
        for &shim in &shims {
            for child in children_of(shim) {
                kill_pid(child, Signal::SIGKILL);
            }
            kill_pid(shim, Signal::SIGKILL);
        }
        if !shims.is_empty() {
            // Let the killed sandboxes leave their cgroups before those go.
            std::thread::sleep(Duration::from_millis(300));
        }
        // A pod that never saw its DEL keeps libcni's cached results, which
        // containerd 1.6 keeps in the global /var/lib/cni (not configurable in CRI).
        if let Ok(cached) = fs::read_dir("/var/lib/cni/results") {
            for f in cached.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if pods.iter().any(|id| name.contains(id.as_str())) {
                    let _ = fs::remove_file(f.path());
                }
            }
        }
        // A pod whose shim was killed keeps its (empty) cgroups: containerd puts
        // sandboxes under k8s.io/<id> when the pod names no cgroup parent.
        if let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") {
            for c in controllers.flatten() {
                for id in &pods {
                    let _ = fs::remove_dir(c.path().join("k8s.io").join(id));
                }
            }
        }
        for ns in self
            .netns_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if Path::new(ns).exists() {
                let _ = Command::new("umount").args(["-l", ns]).output();
                let _ = fs::remove_file(ns);
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "----- containerd log ({}) -----\n{}\n----- end of log -----",
                self.log_path.display(),
                tail(&self.log(), 200)
            );
        }
    }
}

/// PIDs whose parent is `pid`.
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("PPid:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u32>().ok())
                })
                == Some(pid)
        })
        .collect()
}
