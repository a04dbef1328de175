//! The Debian package and the Vagrant cluster's provisioning, on this machine (issue
//! 18, items 1 and 2). Root only.
//!
//! * The package: `scripts/build-deb.sh` builds it twice (two versions) from the
//!   debug binaries; `dpkg -i` puts every file in place with its mode, the unit passes
//!   `systemd-analyze verify`, the man pages render and the completions parse; the
//!   installed `straitd` runs as the unit runs it (its `ExecStart`, its capability
//!   bounding set through `setpriv`) in a namespace of the test's, a container is
//!   attached through `/opt/cni/bin/strait` and answers pings through an upgrade and a
//!   restart of the agent on the new binary, which adopts it; `dpkg -r` keeps the
//!   conffile, `dpkg -P` removes the rest, and the file tree is as it was before.
//!   The maintainer scripts run without systemd (there is none here).
//! * `vagrant validate` on the `Vagrantfile`, with its settings varied.
//! * The provisioning scripts of `deploy/vagrant/` (the ones the VMs run) against
//!   three namespace hosts on one etcd: `node.sh` installs the package and starts an
//!   agent on each, `check.sh` makes the probes and prints the cross-node table, which
//!   must be all `ok`, for the vxlan and the host-gw fabric (and, with no fabric,
//!   `fail` between nodes: the check does fail); `check.sh probe-down` removes the
//!   probes and their addresses.
//!
//! dpkg is global to the machine: the tests that install the package take [`DPKG`]
//! one at a time, and refuse to run on a machine where strait is installed (or its
//! `/etc/strait`, `/var/lib/strait` exist), so they never remove someone's install.
//! A guard purges the package on drop, also when the test panics; the agents and
//! responders they start are killed by PID, their namespaces deleted.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use strait_testbeds::agent::{test_bpffs, test_cgroup2};
use strait_testbeds::cluster::underlay::{Layout, Segment, Underlay};
use strait_testbeds::cni::CniCall;
use strait_testbeds::etcd::{Etcd, EtcdOpts, require_etcd};
use strait_testbeds::netns::Netns;
use strait_testbeds::repo_root;
use strait_testbeds::{require_root, unique_prefix, wait_until};

/// One dpkg user at a time in this binary (dpkg's lock is the machine's).
static DPKG: Mutex<()> = Mutex::new(());

const V1: &str = "0.1.0";
const V2: &str = "0.1.0+t1";
const UNIT: &str = "/lib/systemd/system/straitd.service";
const CONFIG: &str = "/etc/strait/straitd.toml";
const PLUGIN: &str = "/opt/cni/bin/strait";
/// Trees compared before install and after purge. dpkg's own database is left out
/// (its records of strait are checked with dpkg-query), and so are the data dirs of
/// runtimes other tests may run at the same time (containerd 1.6 and Podman keep
/// their CNI result cache in the global /var/lib/cni).
const SNAPSHOT_ROOTS: &[&str] = &["/usr", "/etc", "/opt", "/var/lib", "/lib/systemd"];
const SNAPSHOT_SKIP: &[&str] = &[
    "/var/lib/dpkg",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/containers",
    "/var/lib/apt",
    "/var/lib/cni",
];

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tool these tests need; a visible skip without it (a failure under
/// `STRAIT_REQUIRE_PRIVILEGED=1`).
fn require_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{missing:?} not installed (scripts/install-deps.sh)");
    if std::env::var("STRAIT_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: {why}, and STRAIT_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!("SKIP: {test}: {why}");
    false
}

/// The package's status, e.g. `install ok installed 0.1.0`; empty when dpkg knows
/// nothing of it.
fn dpkg_status() -> String {
    let out = run(Command::new("dpkg-query").args(["-W", "-f=${Status} ${Version}", "strait"]));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Takes the dpkg lock and checks the machine has no strait of its own, which the
/// tests' purge would remove.
fn dpkg_lock(test: &str) -> MutexGuard<'static, ()> {
    let guard = DPKG.lock().unwrap_or_else(|e| e.into_inner());
    let status = dpkg_status();
    assert!(
        status.is_empty() || status.starts_with("unknown") || status.contains("not-installed"),
        "{test}: the package strait is on this machine already ({status}); \
         this test installs and purges it, so it will not run here"
    );
    for dir in ["/etc/strait", "/var/lib/strait"] {
        assert!(
            !Path::new(dir).exists(),
            "{test}: {dir} exists (an install of strait not made by dpkg?); \
             the test's purge would remove it, so it will not run here"
        );
    }
    guard
}

/// The two packages, built once per test run from the binaries under test into the
/// target dir (so nothing is left in /tmp).
fn debs() -> &'static (PathBuf, PathBuf) {
    static DEBS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DEBS.get_or_init(|| {
        let bin_dir = strait_testbeds::bins::bin("straitd")
            .parent()
            .expect("bin dir")
            .to_path_buf();
        let profile = bin_dir
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|p| matches!(*p, "debug" | "release"))
            .unwrap_or_else(|| panic!("binaries in {}: not a cargo profile dir", bin_dir.display()))
            .to_string();
        let target = bin_dir.parent().expect("target dir").to_path_buf();
        let out = target.join("deploy-test-deb");
        let build = |version: &str| {
            let stdout = run_ok(
                Command::new(repo_root().join("scripts/build-deb.sh"))
                    .args(["--profile", &profile, "--version", version, "--out"])
                    .arg(&out)
                    .env("CARGO_TARGET_DIR", &target),
            );
            let deb = PathBuf::from(stdout.lines().last().expect("the .deb path").trim());
            assert_eq!(
                deb,
                out.join(format!("strait_{version}_amd64.deb")),
                "the last line is the package"
            );
            deb
        };
        (build(V1), build(V2))
    })
}

/// Purges the package on drop (the test's end, or its panic).
struct Installed;

impl Installed {
    fn install(deb: &Path) -> Self {
        let guard = Self;
        run_ok(Command::new("dpkg").arg("-i").arg(deb));
        guard
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !dpkg_status().is_empty() {
            let _ = Command::new("dpkg").args(["-P", "strait"]).output();
        }
    }
}

/// Every path under the snapshot roots with its type, mode, owner and link target.
fn snapshot() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if SNAPSHOT_SKIP.iter().any(|s| path == Path::new(s)) {
                continue;
            }
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = md.file_type();
            let kind = if ft.is_symlink() {
                format!(
                    "-> {}",
                    std::fs::read_link(&path).unwrap_or_default().display()
                )
            } else if ft.is_dir() {
                "dir".into()
            } else {
                "file".into()
            };
            out.insert(format!(
                "{} {kind} {:o} {}:{}",
                path.display(),
                md.mode() & 0o7777,
                md.uid(),
                md.gid()
            ));
            if ft.is_dir() {
                walk(&path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    for root in SNAPSHOT_ROOTS {
        walk(Path::new(root), &mut out);
    }
    out
}

fn mode(path: &str) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .permissions()
        .mode()
        & 0o7777
}

fn assert_file(path: &str, want_mode: u32) {
    let md = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(md.is_file(), "{path} is a regular file");
    assert!(md.len() > 0, "{path} is not empty");
    assert_eq!(
        md.mode() & 0o7777,
        want_mode,
        "{path}: mode {:o}",
        md.mode() & 0o7777
    );
    assert_eq!((md.uid(), md.gid()), (0, 0), "{path} is root's");
}

/// Capability numbers (linux/capability.h) of the names a unit may list.
fn cap_bit(name: &str) -> u32 {
    match name {
        "CAP_CHOWN" => 0,
        "CAP_DAC_OVERRIDE" => 1,
        "CAP_DAC_READ_SEARCH" => 2,
        "CAP_FOWNER" => 3,
        "CAP_KILL" => 5,
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_ADMIN" => 12,
        "CAP_NET_RAW" => 13,
        "CAP_IPC_LOCK" => 14,
        "CAP_SYS_MODULE" => 16,
        "CAP_SYS_PTRACE" => 19,
        "CAP_SYS_ADMIN" => 21,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("{other}: add its number to cap_bit"),
    }
}

/// The installed unit, as the test runs the agent: ExecStart's argv and the
/// capability bounding set.
struct UnitRun {
    exec_start: Vec<String>,
    caps: Vec<String>,
    no_new_privs: bool,
}

impl UnitRun {
    fn read() -> Self {
        let unit = std::fs::read_to_string(UNIT).expect("the installed unit");
        let value = |key: &str| {
            unit.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(str::to_string)
        };
        let exec_start: Vec<String> = value("ExecStart")
            .expect("ExecStart")
            .split_whitespace()
            .map(String::from)
            .collect();
        let caps: Vec<String> = value("CapabilityBoundingSet")
            .expect("the unit limits its capabilities")
            .split_whitespace()
            .map(String::from)
            .collect();
        Self {
            exec_start,
            caps,
            no_new_privs: value("NoNewPrivileges").as_deref() == Some("yes"),
        }
    }

    /// `setpriv` with the unit's bounding set, then ExecStart with `config` instead of
    /// the unit's config file.
    fn argv(&self, config: &Path) -> Vec<String> {
        let bset: String = self
            .caps
            .iter()
            .map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect();
        let mut argv = vec![
            "setpriv".to_string(),
            format!("--bounding-set=-all{bset}"),
            "--inh-caps=-all".into(),
        ];
        if self.no_new_privs {
            argv.push("--no-new-privs".into());
        }
        argv.extend(self.exec_start.iter().map(|a| {
            if a == CONFIG {
                config.display().to_string()
            } else {
                a.clone()
            }
        }));
        argv
    }

    /// The bounding set as /proc/PID/status shows it (`CapBnd`).
    fn mask(&self) -> u64 {
        self.caps.iter().fold(0, |m, c| m | 1u64 << cap_bit(c))
    }
}

/// A capability set of /proc/PID/status (`CapBnd`, `CapEff`, ...).
fn proc_caps(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim();
    u64::from_str_radix(hex, 16).expect("hex caps")
}

/// The installed straitd run as the unit runs it, in a namespace of the test's, with
/// a `$NOTIFY_SOCKET` of the test's as systemd gives a `Type=notify` service. Killed
/// by PID on drop, its namespace lock, pins and cgroup removed.
struct UnitAgent {
    child: Option<Child>,
    argv: Vec<String>,
    netns: String,
    socket: PathBuf,
    log: PathBuf,
    notify_path: PathBuf,
    notify: std::os::unix::net::UnixDatagram,
}

impl UnitAgent {
    fn start(host: &Netns, argv: Vec<String>, dir: &Path) -> Self {
        let notify_path = dir.join("notify.sock");
        let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
        let mut a = Self {
            child: None,
            argv,
            netns: host.name().to_string(),
            socket: dir.join("strait.sock"),
            log: dir.join("straitd.log"),
            notify_path,
            notify,
        };
        a.launch();
        a
    }

    /// Waits for a notification holding `what` (`READY=1`), as systemd does for a
    /// `Type=notify` service; returns every message read until then.
    fn expect_notify(&self, what: &str) -> String {
        let mut seen = String::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 4096];
        while std::time::Instant::now() < deadline {
            self.notify
                .set_read_timeout(Some(Duration::from_secs(1)))
                .expect("timeout");
            if let Ok(n) = self.notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push_str(&msg);
                if msg.lines().any(|l| l == what) {
                    return seen;
                }
            }
        }
        panic!(
            "no {what} on $NOTIFY_SOCKET within 60 s (got {seen:?}):\n{}",
            self.log_text()
        );
    }

    fn launch(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(&self.argv)
            .env("STRAIT_LOG", "debug")
            .env("NOTIFY_SOCKET", &self.notify_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start straitd");
        self.child = Some(child);
        // Type=notify: systemd deems the service started on READY=1; the API answers
        // ready by then.
        self.expect_notify("READY=1");
        self.wait_ready();
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn netctl(&self, args: &[&str]) -> Output {
        run(Command::new("/usr/bin/netctl")
            .arg("--socket")
            .arg(&self.socket)
            .args(args))
    }

    fn wait_ready(&mut self) {
        let r = wait_until(
            "the packaged straitd to be ready",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                if let Some(c) = self.child.as_mut()
                    && let Ok(Some(status)) = c.try_wait()
                {
                    return Err(format!("exited with {status}"));
                }
                let out = self.netctl(&["status"]);
                if out.status.success() {
                    Ok(())
                } else {
                    Err(text(&out))
                }
            },
        );
        if let Err(e) = r {
            panic!("{e}\n{}", self.log_text());
        }
    }

    /// SIGTERM (the unit's stop: the agent says STOPPING=1), then start again.
    fn restart(&mut self) {
        if let Some(c) = self.child.take() {
            strait_testbeds::process::terminate(c, Duration::from_secs(30));
        }
        self.expect_notify("STOPPING=1");
        self.launch();
    }
}

impl Drop for UnitAgent {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            strait_testbeds::process::kill_now(c);
        }
        remove_netns_lock(&self.netns);
        let _ = std::fs::remove_dir_all(test_bpffs().join(&self.netns));
        let _ = std::fs::remove_dir(test_cgroup2().join(&self.netns));
        if std::thread::panicking() {
            eprintln!(
                "----- packaged straitd log ({}) -----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// An agent leaves `/run/strait/netns-<inode>.lock` for the next one on its host;
/// the test that made the namespace removes it once no agent holds it.
fn remove_netns_lock(netns: &str) {
    let Ok(ns) = std::fs::metadata(format!("/run/netns/{netns}")) else {
        return;
    };
    let path = PathBuf::from(format!("/run/strait/netns-{}.lock", ns.ino()));
    if let Ok(file) = std::fs::File::open(&path)
        && file.try_lock().is_ok()
    {
        let _ = std::fs::remove_file(&path);
    }
}

/// `ip netns` namespace with an uplink: a veth pair inside it, the address
/// 192.0.2.10/24 and a default route, as a host has (the agent takes its underlay
/// from the default route; the test pings containers from that address).
fn host_with_uplink(name: String) -> Netns {
    let ns = Netns::new(name);
    ns.exec_ok(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    ns.exec_ok(&["ip", "link", "set", "eth0p", "up"]);
    ns.exec_ok(&["ip", "addr", "add", "192.0.2.10/24", "dev", "eth0"]);
    ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
    ns.exec_ok(&["ip", "route", "add", "default", "via", "192.0.2.1"]);
    ns
}

/// The installed default config with the keys the test gives its own values to
/// replaced: the rest (pools, metrics, ...) is the package's.
fn test_config(dir: &Path, host: &Netns, node: &str) -> PathBuf {
    let own = [
        ("node_name", format!("\"{node}\"")),
        ("state_dir", format!("\"{}\"", dir.join("state").display())),
        (
            "socket",
            format!("\"{}\"", dir.join("strait.sock").display()),
        ),
        (
            "bpf_dir",
            format!("\"{}\"", test_bpffs().join(host.name()).display()),
        ),
        (
            "service_cgroup",
            format!("\"{}\"", test_cgroup2().join(host.name()).display()),
        ),
    ];
    let _ = std::fs::create_dir_all(test_cgroup2().join(host.name()));
    let installed = std::fs::read_to_string(CONFIG).expect("the installed config");
    let mut kept: Vec<String> = installed
        .lines()
        .filter(|l| {
            let key = l.split('=').next().unwrap_or("").trim();
            !own.iter().any(|(k, _)| *k == key)
        })
        .map(String::from)
        .collect();
    kept.extend(own.iter().map(|(k, v)| format!("{k} = {v}")));
    let path = dir.join("straitd.toml");
    std::fs::write(&path, kept.join("\n") + "\n").expect("write the test config");
    path
}

/// The network config a runtime builds from the sample conflist for the strait
/// plugin, pointed at the test agent's socket.
fn cni_config(socket: &Path) -> Value {
    let conflist: Value = serde_json::from_str(
        &std::fs::read_to_string("/usr/share/strait/10-strait.conflist").expect("sample"),
    )
    .expect("the sample conflist is JSON");
    let mut conf = conflist["plugins"][0].clone();
    assert_eq!(conf["type"], "strait", "{conflist}");
    conf["cniVersion"] = conflist["cniVersion"].clone();
    conf["name"] = conflist["name"].clone();
    conf["socket"] = json!(socket);
    conf
}

fn ping_until(from: &Netns, ip: &str, what: &str) {
    wait_until(
        what,
        Duration::from_secs(30),
        Duration::from_millis(200),
        || from.ping(ip),
    )
    .unwrap();
}

fn check_installed_files() {
    for bin in ["/usr/bin/straitd", "/usr/bin/netctl", "/usr/lib/cni/strait"] {
        assert_file(bin, 0o755);
    }
    assert_eq!(
        std::fs::read_link(PLUGIN).expect("the plugin in /opt/cni/bin"),
        Path::new("/usr/lib/cni/strait"),
        "one plugin, found at both places"
    );
    assert_eq!(mode(PLUGIN), 0o755, "{PLUGIN} resolves to the executable");
    assert_file(CONFIG, 0o644);
    assert_file(UNIT, 0o644);
    assert_file("/usr/share/strait/10-strait.conflist", 0o644);
    assert_file("/usr/share/doc/strait/copyright", 0o644);
    for b in ["straitd", "netctl"] {
        assert_file(
            &format!("/usr/share/bash-completion/completions/{b}"),
            0o644,
        );
        assert_file(&format!("/usr/share/zsh/vendor-completions/_{b}"), 0o644);
        assert_file(
            &format!("/usr/share/fish/vendor_completions.d/{b}.fish"),
            0o644,
        );
        assert_file(&format!("/usr/share/man/man8/{b}.8.gz"), 0o644);
    }
    let state = std::fs::metadata("/var/lib/strait").expect("postinst made /var/lib/strait");
    assert!(state.is_dir());
    assert_eq!(
        mode("/var/lib/strait"),
        0o700,
        "the state dir is root's alone"
    );
    assert!(
        Path::new("/run/strait").is_dir(),
        "postinst made /run/strait"
    );
    let conffiles = run_ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "strait"]));
    assert!(
        conffiles.contains(CONFIG),
        "the config is a conffile: {conffiles}"
    );
}

fn check_unit_man_pages_and_completions() {
    let verify = run(Command::new("systemd-analyze").args(["verify", UNIT]));
    assert!(
        verify.status.success() && text(&verify).trim().is_empty(),
        "systemd-analyze verify {UNIT}: {}",
        text(&verify)
    );

    let pages: Vec<PathBuf> = std::fs::read_dir("/usr/share/man/man8")
        .expect("man8")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("straitd.") || n.starts_with("netctl"))
        })
        .collect();
    assert!(
        pages.iter().any(|p| p.ends_with("netctl-ipam-show.8.gz")),
        "a page per subcommand: {pages:?}"
    );
    // mandoc's lint: no errors (clap_mangen's style draws warnings only). mandoc
    // reads a compressed page only when it is the sole argument: each on its own.
    for page in &pages {
        let out = text(&run(Command::new("mandoc")
            .args(["-T", "lint", "-W", "error"])
            .arg(page)));
        assert!(out.is_empty(), "mandoc -T lint {}: {out}", page.display());
    }
    for (page, name) in [
        ("/usr/share/man/man8/straitd.8.gz", "straitd"),
        ("/usr/share/man/man8/netctl.8.gz", "netctl"),
    ] {
        let out = run(Command::new("man")
            .args(["--warnings", "-l", page])
            .env("MANWIDTH", "80"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "man -l {page}: {}",
            text(&out)
        );
        assert!(
            stdout.contains("NAME") && stdout.contains(name),
            "{page} renders: {stdout}"
        );
    }

    for b in ["straitd", "netctl"] {
        let file = format!("/usr/share/bash-completion/completions/{b}");
        run_ok(Command::new("bash").args(["-n", &file]));
        let registered =
            run_ok(Command::new("bash").args(["-c", &format!("source {file} && complete -p {b}")]));
        assert!(registered.contains(b), "{file} registers {b}: {registered}");
    }
}

#[test]
fn the_package_installs_runs_upgrades_and_purges_without_a_trace() {
    const TEST: &str = "deploy_package::install_upgrade_remove_purge";
    if !require_root(TEST)
        || !require_tools(
            TEST,
            &[
                "dpkg-deb",
                "systemd-analyze",
                "setpriv",
                "man",
                "mandoc",
                "strip",
            ],
        )
    {
        return;
    }
    strait_testbeds::netns::reap_leftovers();
    let _lock = dpkg_lock(TEST);
    let (deb1, deb2) = debs();
    let info = run_ok(Command::new("dpkg-deb").args(["-f"]).arg(deb1).args([
        "Package",
        "Version",
        "Architecture",
        "Depends",
        "Section",
    ]));
    for want in [
        "Package: strait",
        &format!("Version: {V1}"),
        "Architecture: amd64",
        "Section: net",
    ] {
        assert!(info.contains(want), "control has {want}: {info}");
    }
    for dep in ["libc6", "iproute2", "mount"] {
        assert!(info.contains(dep), "Depends names {dep}: {info}");
    }

    let before = snapshot();
    let installed = Installed::install(deb1);
    assert_eq!(dpkg_status(), format!("install ok installed {V1}"));
    check_installed_files();
    check_unit_man_pages_and_completions();

    // The installed agent, as the unit starts it, in a host namespace of the test's.
    let prefix = unique_prefix();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir()
        .expect("temp dir");
    let host = host_with_uplink(format!("{prefix}h"));
    let unit = UnitRun::read();
    let config = test_config(dir.path(), &host, "pkg1");
    let socket = dir.path().join("strait.sock");
    let mut agent = UnitAgent::start(&host, unit.argv(&config), dir.path());
    assert_eq!(
        proc_caps(agent.pid(), "CapBnd"),
        unit.mask(),
        "the agent runs with the unit's bounding set {:?}",
        unit.caps
    );
    assert_eq!(
        proc_caps(agent.pid(), "CapEff"),
        unit.mask(),
        "and uses all of it"
    );

    // A container attached by the packaged plugin, with the sample conflist's config.
    let container = Netns::new(format!("{prefix}c"));
    let add = CniCall::of_plugin(Path::new(PLUGIN), "ADD", cni_config(&socket))
        .container("pkg-c1", &container.path())
        .in_netns(host.name())
        .run()
        .expect_ok();
    let ip = strait_testbeds::host::result_ip(&add, false).expect("an IPv4 address");
    ping_until(&host, &ip, "the container answers the host");

    // Upgrade while it runs: no systemd here, so the running agent is left alone (on a
    // systemd host postinst restarts it); the container keeps answering.
    let old_pid = agent.pid();
    run_ok(Command::new("dpkg").arg("-i").arg(deb2));
    assert_eq!(dpkg_status(), format!("install ok installed {V2}"));
    let exe = std::fs::read_link(format!("/proc/{old_pid}/exe")).expect("the agent runs");
    assert_eq!(
        exe,
        Path::new("/usr/bin/straitd (deleted)"),
        "the running agent is the old binary, replaced on disk"
    );
    assert!(host.ping(&ip), "the container answers during the upgrade");

    // The restart the unit would do: the new binary adopts the container.
    agent.restart();
    assert_ne!(agent.pid(), old_pid);
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", agent.pid())).expect("exe"),
        Path::new("/usr/bin/straitd")
    );
    let eps = agent.netctl(&["-o", "json", "endpoints"]);
    assert!(eps.status.success(), "netctl endpoints: {}", text(&eps));
    let eps: Value = serde_json::from_slice(&eps.stdout).expect("endpoints JSON");
    assert!(
        eps.as_array()
            .is_some_and(|a| a.iter().any(|e| e["container_id"] == "pkg-c1")),
        "the new agent adopted the endpoint: {eps}"
    );
    ping_until(&host, &ip, "the container answers after the restart");

    CniCall::of_plugin(Path::new(PLUGIN), "DEL", cni_config(&socket))
        .container("pkg-c1", &container.path())
        .in_netns(host.name())
        .run()
        .expect_ok();
    drop(agent);
    drop(container);
    drop(host);

    // Remove: the programs go, the configuration and the state dir stay.
    run_ok(Command::new("dpkg").args(["-r", "strait"]));
    assert_eq!(dpkg_status(), format!("deinstall ok config-files {V2}"));
    for gone in [
        "/usr/bin/straitd",
        "/usr/bin/netctl",
        "/usr/lib/cni/strait",
        PLUGIN,
        UNIT,
        "/usr/share/man/man8/straitd.8.gz",
    ] {
        assert!(
            std::fs::symlink_metadata(gone).is_err(),
            "{gone} removed with the package"
        );
    }
    assert!(Path::new(CONFIG).is_file(), "dpkg -r keeps the conffile");
    assert!(
        Path::new("/var/lib/strait").is_dir(),
        "dpkg -r keeps the state"
    );

    // Purge: nothing of strait is left.
    run_ok(Command::new("dpkg").args(["-P", "strait"]));
    assert!(dpkg_status().is_empty() || dpkg_status().contains("not-installed"));
    for gone in ["/etc/strait", "/var/lib/strait", "/opt/cni"] {
        assert!(!Path::new(gone).exists(), "{gone} purged");
    }
    drop(installed);
    let after = snapshot();
    let added: Vec<_> = after.difference(&before).collect();
    let removed: Vec<_> = before.difference(&after).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "the file tree after purge differs from before install:\nadded: {added:#?}\nremoved: {removed:#?}"
    );
}

#[test]
fn vagrant_validates_the_vagrantfile() {
    const TEST: &str = "deploy_package::vagrant_validate";
    if !require_root(TEST) || !require_tools(TEST, &["vagrant"]) {
        return;
    }
    let home = tempfile::Builder::new()
        .prefix("strait-vagrant-")
        .tempdir()
        .expect("temp dir");
    let deb = home.path().join("strait_0.1.0_amd64.deb");
    std::fs::write(&deb, b"not really a package").expect("a stand-in .deb");
    let validate = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new("vagrant");
        cmd.arg("validate")
            .args(args)
            .current_dir(repo_root())
            .env("VAGRANT_CWD", repo_root())
            .env("VAGRANT_HOME", home.path().join("home"))
            .env("VAGRANT_DOTFILE_PATH", home.path().join("dot"))
            .env("VAGRANT_CHECKPOINT_DISABLE", "1");
        for v in [
            "STRAIT_NODES",
            "STRAIT_FABRIC",
            "STRAIT_DEB",
            "STRAIT_SYNC",
            "STRAIT_BOX",
            "STRAIT_SUBNET",
            "VAGRANT_DEFAULT_PROVIDER",
        ] {
            cmd.env_remove(v);
        }
        cmd.envs(env.iter().copied());
        let out = run(&mut cmd);
        (out.status.success(), text(&out))
    };
    // The defaults and each setting, provider blocks aside (`-p`): the default
    // synced folder of libvirt (NFS) needs an NFS server to count as usable.
    let deb_s = deb.display().to_string();
    for env in [
        vec![],
        vec![("STRAIT_NODES", "1")],
        vec![("STRAIT_NODES", "5"), ("STRAIT_FABRIC", "host-gw")],
        vec![("STRAIT_FABRIC", "bgp"), ("STRAIT_DEB", deb_s.as_str())],
    ] {
        let (ok, out) = validate(&env, &["--ignore-provider"]);
        assert!(
            ok && out.contains("validated successfully"),
            "{env:?}: {out}"
        );
    }
    // With the libvirt provider's own checks (vagrant-libvirt), on a synced folder
    // type usable with no libvirt daemon.
    let (ok, out) = validate(
        &[
            ("VAGRANT_DEFAULT_PROVIDER", "libvirt"),
            ("STRAIT_SYNC", "rsync"),
        ],
        &[],
    );
    assert!(
        ok && out.contains("validated successfully"),
        "libvirt: {out}"
    );
    // Bad settings are refused with the reason.
    for (env, says) in [
        (("STRAIT_FABRIC", "gre"), "STRAIT_FABRIC must be"),
        (("STRAIT_NODES", "0"), "STRAIT_NODES must be"),
        (("STRAIT_DEB", "/nonexistent/strait.deb"), "no such file"),
    ] {
        let (ok, out) = validate(&[env], &["--ignore-provider"]);
        assert!(!ok && out.contains(says), "{env:?}: {out}");
    }
}

/// A process the provisioning scripts started in the background (an agent, a
/// responder), killed by PID on drop when it is still the process recorded.
struct Started {
    pid: u32,
    what: &'static str,
}

impl Started {
    /// The process whose PID the script wrote to `path`, if it wrote one.
    fn from_pidfile(path: &Path, what: &'static str) -> Option<Self> {
        let pid = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
        Some(Self { pid, what })
    }

    /// Still the process recorded: an agent's exe, a responder's command line.
    fn alive(&self) -> bool {
        match self.what {
            "straitd" => std::fs::read_link(format!("/proc/{}/exe", self.pid))
                .is_ok_and(|e| e.to_string_lossy().starts_with("/usr/bin/straitd")),
            _ => std::fs::read(format!("/proc/{}/cmdline", self.pid))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("probe-up")),
        }
    }

    fn stop(&self, signal: nix::sys::signal::Signal) {
        if !self.alive() {
            return;
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), signal);
        let _ = wait_until(
            &format!("{} {} to exit", self.what, self.pid),
            Duration::from_secs(30),
            Duration::from_millis(50),
            || !self.alive(),
        );
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.stop(nix::sys::signal::Signal::SIGKILL);
    }
}

/// One namespace host of the provisioning bed.
struct NodeHost {
    name: String,
    dir: PathBuf,
    probe_ns: String,
    ns: Netns,
}

impl NodeHost {
    fn socket(&self) -> PathBuf {
        self.dir.join("strait.sock")
    }

    /// The knobs of deploy/vagrant/*.sh that put this host's files in its own dir.
    fn env(&self, shared: &Path) -> Vec<(String, String)> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        vec![
            ("STRAIT_NODE_NAME".into(), self.name.clone()),
            ("STRAIT_CONFIG".into(), d("straitd.toml")),
            ("STRAIT_STATE_DIR".into(), d("state")),
            ("STRAIT_SOCKET".into(), d("strait.sock")),
            ("STRAIT_PIDFILE".into(), d("straitd.pid")),
            ("STRAIT_LOG".into(), d("straitd.log")),
            ("STRAIT_RUN_DIR".into(), d("run")),
            ("STRAIT_START".into(), "background".into()),
            ("STRAIT_PROBE_NS".into(), self.probe_ns.clone()),
            ("STRAIT_SHARED".into(), shared.display().to_string()),
            (
                "STRAIT_CONFIG_EXTRA".into(),
                format!(
                    "bpf_dir = \"{}\"\nservice_cgroup = \"{}\"",
                    test_bpffs().join(self.ns.name()).display(),
                    test_cgroup2().join(self.ns.name()).display()
                ),
            ),
        ]
    }

    /// `deploy/vagrant/<script> args` with `env`, in the host's network namespace.
    ///
    /// node.sh goes through `ip netns exec` as every agent of the test beds does (a
    /// sysfs of the host's own). check.sh only enters the network namespace
    /// (`nsenter --net`): `ip netns exec` runs its command in a mount namespace of its
    /// own, which would keep the probe's `ip netns add` from the agent, while on a VM
    /// there is one mount namespace.
    fn script(&self, script: &str, args: &[&str], env: &[(String, String)]) -> Output {
        let mut cmd = if script == "node.sh" {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", self.ns.name()]);
            c
        } else {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", self.ns.path().display()));
            c
        };
        run(cmd
            .arg("bash")
            .arg(repo_root().join("deploy/vagrant").join(script))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("straitd.log")).unwrap_or_default()
    }
}

/// Addresses allocated in the cluster's pools (the tunnel addresses of the vxlan
/// fabric included), as `h`'s agent sees them.
fn used_addresses(h: &NodeHost) -> u128 {
    strait_api::Client::new(h.socket())
        .get::<strait_api::IpamView>(strait_api::paths::IPAM)
        .expect("GET ipam")
        .pools
        .iter()
        .map(|p| p.used)
        .sum()
}

/// The provisioning bed: etcd in an underlay, namespace hosts, what the scripts
/// started. Drop order: responders and agents (by PID), probe namespaces, hosts,
/// etcd, underlay, the temp dir.
struct ProvisionBed {
    started: Vec<Started>,
    probes: Vec<String>,
    hosts: Vec<NodeHost>,
    etcd: Etcd,
    _underlay: Underlay,
    shared: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for ProvisionBed {
    fn drop(&mut self) {
        for s in &self.started {
            s.stop(nix::sys::signal::Signal::SIGKILL);
        }
        for p in &self.probes {
            let _ = Command::new("ip").args(["netns", "del", p]).output();
        }
        for h in &self.hosts {
            remove_netns_lock(h.ns.name());
            let _ = std::fs::remove_dir_all(test_bpffs().join(h.ns.name()));
            let _ = std::fs::remove_dir(test_cgroup2().join(h.ns.name()));
            if std::thread::panicking() {
                eprintln!("----- {} straitd log -----\n{}", h.name, h.log());
            }
        }
    }
}

fn provision_and_check(fabric: &str) {
    let test = format!("deploy_package::provisioning_{fabric}");
    if !require_root(&test)
        || !require_etcd(&test)
        || !require_tools(&test, &["dpkg-deb", "setpriv", "nsenter"])
    {
        return;
    }
    strait_testbeds::netns::reap_leftovers();
    let _lock = dpkg_lock(&test);
    let (deb, _) = debs();
    let installed = Installed;

    let prefix = unique_prefix();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .tempdir()
        .expect("temp dir");
    let shared = dir.path().join("shared");
    let underlay = Underlay::new(&prefix, 1500, Layout::OneSegment);
    let etcd = Etcd::start_with(EtcdOpts {
        name: format!("{prefix}-etcd"),
        ip: underlay.etcd_ip(),
        netns: Some(underlay.ns.name().to_string()),
        extra: vec![],
    });
    let mut hosts = vec![];
    for i in 1..=3u8 {
        let name = format!("h{i}");
        let ns = Netns::new(format!("{prefix}{name}"));
        underlay.attach(&ns, &name, Segment::A, i);
        let hdir = dir.path().join(&name);
        std::fs::create_dir_all(&hdir).expect("host dir");
        let _ = std::fs::create_dir_all(test_cgroup2().join(ns.name()));
        hosts.push(NodeHost {
            probe_ns: format!("{prefix}p{i}"),
            name,
            dir: hdir,
            ns,
        });
    }
    let mut bed = ProvisionBed {
        started: vec![],
        probes: hosts.iter().map(|h| h.probe_ns.clone()).collect(),
        hosts,
        etcd,
        _underlay: underlay,
        shared,
        _dir: dir,
    };

    // node.sh on each host, as each VM runs it.
    for (i, h) in bed.hosts.iter().enumerate() {
        let mut env = h.env(&bed.shared);
        env.extend([
            ("STRAIT_DEB".to_string(), deb.display().to_string()),
            ("STRAIT_ETCD_ENDPOINTS".into(), bed.etcd.client_url()),
            ("STRAIT_FABRIC".into(), fabric.into()),
            (
                "STRAIT_UNDERLAY_ADDR".into(),
                Segment::A.v4(i as u8 + 1).to_string(),
            ),
            ("STRAIT_POOLS".into(), "10.244.0.0/16".into()),
        ]);
        let out = h.script("node.sh", &[], &env);
        // Recorded before the verdict: a failed start still leaves a PID to kill.
        let started = Started::from_pidfile(&h.dir.join("straitd.pid"), "straitd");
        bed.started.extend(started);
        assert!(
            out.status.success(),
            "node.sh on {}: {}",
            h.name,
            text(&out)
        );
        assert!(
            bed.started
                .last()
                .is_some_and(|s| s.what == "straitd" && s.alive()),
            "node.sh left {}'s agent running",
            h.name
        );
    }
    assert_eq!(dpkg_status(), format!("install ok installed {V1}"));
    for (h, s) in bed.hosts.iter().zip(&bed.started) {
        assert_eq!(s.what, "straitd");
        let config = std::fs::read_to_string(h.dir.join("straitd.toml")).expect("config");
        let fabric_line = config.contains(&format!("fabric = \"{fabric}\""));
        assert!(
            fabric_line == (fabric != "none") && config.contains("underlay_iface = \"eth0\""),
            "node.sh wrote the node's config: {config}"
        );
        assert_eq!(
            proc_caps(s.pid, "CapBnd"),
            UnitRun::read().mask(),
            "node.sh without systemd gives the agent the unit's capabilities"
        );
    }

    // The probes, then the check on the last node.
    let used_before = used_addresses(&bed.hosts[0]);
    for h in &bed.hosts {
        let out = h.script("check.sh", &["probe-up"], &h.env(&bed.shared));
        let started = Started::from_pidfile(&h.dir.join("run/probe-responder.pid"), "responder");
        bed.started.extend(started);
        assert!(
            out.status.success(),
            "probe-up on {}: {}",
            h.name,
            text(&out)
        );
    }
    let last = bed.hosts.last().expect("hosts");
    let mut env = last.env(&bed.shared);
    env.push(("STRAIT_NODES".into(), "h1 h2 h3".into()));
    env.push(("STRAIT_CHECK_SECS".into(), "180".into()));
    let out = last.script("check.sh", &["check"], &env);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("cross-node check ({fabric}):\n{table}");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|l| l.starts_with('h'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "a row per node: {table}");
    let connected = fabric != "none";
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), 4, "{table}");
        for (j, cell) in row[1..].iter().enumerate() {
            // Without a fabric only a node's own probe answers.
            let want = if connected || i == j { "ok" } else { "fail" };
            assert_eq!(*cell, want, "{} -> h{}: {table}", row[0], j + 1);
        }
    }
    if connected {
        assert!(out.status.success(), "check: {}", text(&out));
        assert!(table.contains("all 9 pairs ok"), "{table}");
    } else {
        assert_eq!(out.status.code(), Some(1), "check fails: {}", text(&out));
        assert!(table.contains("6 pairs not ok"), "{table}");
    }

    // Teardown: the probes go, their addresses are released, the responders exit.
    for h in &bed.hosts {
        let out = h.script("check.sh", &["probe-down"], &h.env(&bed.shared));
        assert!(
            out.status.success(),
            "probe-down on {}: {}",
            h.name,
            text(&out)
        );
        assert!(
            !Path::new(&format!("/run/netns/{}", h.probe_ns)).exists(),
            "{}'s probe netns removed",
            h.name
        );
    }
    assert_eq!(
        used_addresses(&bed.hosts[0]),
        used_before,
        "the probes' addresses are released"
    );
    for h in &bed.hosts {
        let eps: Vec<strait_api::Endpoint> = strait_api::Client::new(h.socket())
            .get(strait_api::paths::ENDPOINTS)
            .expect("GET endpoints");
        assert!(eps.is_empty(), "{}: endpoints left: {eps:?}", h.name);
    }
    for s in bed.started.iter().filter(|s| s.what == "responder") {
        wait_until(
            "the responders to be stopped",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || !s.alive(),
        )
        .unwrap();
    }
    // The agents, stopped as systemd would (SIGTERM); nothing of theirs is left.
    for s in &bed.started {
        s.stop(nix::sys::signal::Signal::SIGTERM);
        assert!(!s.alive(), "{} {} stopped", s.what, s.pid);
    }
    for h in &bed.hosts {
        let veths: Vec<String> =
            h.ns.links()
                .into_iter()
                .filter(|l| l.starts_with("strait") && l != "strait.vxlan")
                .collect();
        assert!(
            veths.is_empty(),
            "{}: container veths left: {veths:?}",
            h.name
        );
    }
    let leftover: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| bed.probes.contains(n))
        .collect();
    assert!(leftover.is_empty(), "probe namespaces left: {leftover:?}");
    drop(bed);
    drop(installed);
    assert!(
        dpkg_status().is_empty() || dpkg_status().contains("not-installed"),
        "purged: {}",
        dpkg_status()
    );
}

#[test]
fn the_vagrant_provisioning_scripts_build_a_vxlan_cluster_of_namespace_hosts() {
    provision_and_check("vxlan");
}

#[test]
fn the_vagrant_provisioning_scripts_build_a_host_gw_cluster_of_namespace_hosts() {
    provision_and_check("host-gw");
}

/// The check is no rubber stamp: nodes with no fabric between them reach only their
/// own probe, and it says so.
#[test]
fn the_cross_node_check_reports_pairs_that_cannot_reach_each_other() {
    provision_and_check("none");
}
