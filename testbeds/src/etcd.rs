//! A private etcd for tests: Debian's `etcd` (3.4) with its own data dir in a temp dir,
//! client and peer URLs on free ports, killed by PID on drop, its log printed when the
//! test is failing.
//!
//! ```ignore
//! if !strait_testbeds::etcd::require_etcd("my_test") { return; }
//! let mut etcd = Etcd::start();
//! let endpoints = etcd.endpoints();          // ["http://127.0.0.1:<port>"]
//! etcd.kill();                               // crash it (SIGKILL)
//! etcd.restart();                            // same data dir, same ports
//! ```
//!
//! Multi-host tests can put it on another address, or inside one of their namespaces
//! ([`EtcdOpts::ip`], [`EtcdOpts::netns`]); the readiness check and the port choice then
//! run inside that namespace too. Nothing here needs root unless a namespace is used.
//!
//! The binary is `$STRAIT_ETCD` if set, else `etcd` on `PATH`. Tests call
//! [`require_etcd`] first: without the binary they print a visible `SKIP` line, and
//! `STRAIT_REQUIRE_PRIVILEGED=1` (set by CI) turns that into a failure.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`Etcd::start`] and [`Etcd::restart`] wait for etcd to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts with a fresh pair of ports when etcd could not bind the ones picked (another
/// process took one between our probe and etcd's bind).
const PORT_ATTEMPTS: usize = 3;

/// Where and how to run etcd.
#[derive(Debug, Clone)]
pub struct EtcdOpts {
    /// Member name (`--name`), also the name in `--initial-cluster`.
    pub name: String,
    /// Address both URLs listen on and advertise.
    pub ip: IpAddr,
    /// Run inside this named network namespace (`ip netns exec`; needs root).
    pub netns: Option<String>,
    /// Extra command-line flags.
    pub extra: Vec<String>,
}

impl Default for EtcdOpts {
    fn default() -> Self {
        Self {
            name: "strait-test".into(),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            netns: None,
            extra: Vec::new(),
        }
    }
}

/// The etcd binary to use, if there is one.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STRAIT_ETCD") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
}

/// True when the test may go on; prints a visible skip line otherwise. Under
/// `STRAIT_REQUIRE_PRIVILEGED=1` a missing etcd is a failure, so CI never counts a
/// skipped etcd test as passed.
pub fn require_etcd(test: &str) -> bool {
    if etcd_binary().is_some() {
        return true;
    }
    if std::env::var("STRAIT_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: etcd not installed, and STRAIT_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!("SKIP: {test}: etcd not installed (Debian package etcd-server)");
    false
}

/// A running (or stopped) private etcd. Dropping it kills the process by PID and
/// removes its data dir.
pub struct Etcd {
    child: Option<Child>,
    opts: EtcdOpts,
    binary: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    token: String,
}

impl Etcd {
    /// A fresh single-member etcd on 127.0.0.1, ready to serve. Panics (with etcd's log)
    /// if it does not come up within [`READY_TIMEOUT`].
    pub fn start() -> Self {
        Self::start_with(EtcdOpts::default())
    }

    /// [`Etcd::start`] with explicit options.
    pub fn start_with(opts: EtcdOpts) -> Self {
        let binary = etcd_binary().expect("etcd not installed: call require_etcd first");
        let dir = tempfile::Builder::new()
            .prefix("strait-etcd-")
            .tempdir()
            .expect("etcd temp dir");
        let token = format!(
            "strait-{}-{}",
            std::process::id(),
            dir.path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let mut etcd = Self {
            child: None,
            opts,
            binary,
            dir,
            client_port: 0,
            peer_port: 0,
            token,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            let (client, peer) = etcd.free_ports();
            etcd.client_port = client;
            etcd.peer_port = peer;
            etcd.launch();
            match etcd.wait_until_ready(READY_TIMEOUT) {
                Ok(()) => return etcd,
                Err(why)
                    if attempt < PORT_ATTEMPTS && etcd.log().contains("address already in use") =>
                {
                    eprintln!("etcd: ports {client}/{peer} taken ({why}), picking others");
                    etcd.kill();
                    // A member that never served has nothing worth keeping; a clean
                    // data dir lets the next attempt bootstrap with its new URLs.
                    let _ = std::fs::remove_dir_all(etcd.data_dir());
                }
                Err(why) => panic!("etcd did not start: {why}\n{}", etcd.log_block()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `http://<ip>:<client port>`.
    pub fn client_url(&self) -> String {
        url(self.opts.ip, self.client_port)
    }

    /// `http://<ip>:<peer port>`.
    pub fn peer_url(&self) -> String {
        url(self.opts.ip, self.peer_port)
    }

    /// The client URLs, as a store client takes them.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.client_url()]
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still alive (it may not be serving yet).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL and reap: the crash case. Data written so far stays in the data dir.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.take() {
            crate::process::kill_now(c);
        }
    }

    /// SIGTERM and wait for exit (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        // A frozen etcd would never see the SIGTERM.
        self.thaw();
        if let Some(c) = self.child.take() {
            crate::process::terminate(c, Duration::from_secs(10));
        }
    }

    /// SIGSTOP: etcd keeps its connections open but answers nothing (a hung member or
    /// a partition, as a client sees it). [`Etcd::thaw`] resumes it.
    ///
    /// Returns once every thread of etcd has stopped: a group stop reaches a busy
    /// thread only when it next enters the kernel, and a request sent before that
    /// could still be answered.
    pub fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
        let Some(pid) = self.pid() else { return };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !all_threads_stopped(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGCONT after [`Etcd::freeze`].
    pub fn thaw(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            crate::process::signal(c, signal);
        }
    }

    /// Start again on the same data dir and ports (stopping it first if it runs), and
    /// wait until it serves. Keys, revisions and leases survive, as in production.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
        if let Err(why) = self.wait_until_ready(READY_TIMEOUT) {
            panic!("etcd did not come back: {why}\n{}", self.log_block());
        }
    }

    /// Whether etcd answers `GET /health` with a healthy member right now.
    pub fn healthy(&self) -> bool {
        let addr = SocketAddr::new(self.opts.ip, self.client_port);
        in_netns(self.opts.netns.as_deref(), move || health(addr)).unwrap_or(false)
    }

    /// Everything etcd has logged so far (all runs of it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_block(&self) -> String {
        format!(
            "----- etcd log ({}) -----\n{}\n----- end of etcd log -----",
            self.log_path().display(),
            self.log()
        )
    }

    /// Two distinct ports free on `ip` in etcd's namespace: bound to port 0 together (so
    /// they differ), then released for etcd to take.
    fn free_ports(&self) -> (u16, u16) {
        let ip = self.opts.ip;
        in_netns(self.opts.netns.as_deref(), move || {
            let a = TcpListener::bind((ip, 0))?;
            let b = TcpListener::bind((ip, 0))?;
            Ok((a.local_addr()?.port(), b.local_addr()?.port()))
        })
        .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
    }

    fn launch(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd log file");
        let (client, peer) = (self.client_url(), self.peer_url());
        let mut cmd = match &self.opts.netns {
            Some(ns) => {
                // `ip netns exec` execs etcd in place: the child PID is etcd's.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        cmd.arg("--name")
            .arg(&self.opts.name)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            // The advertised peer URL must match the one in --initial-cluster, or a
            // member on a non-default peer port refuses to bootstrap.
            .args(["--initial-advertise-peer-urls", &peer])
            .arg("--initial-cluster")
            .arg(format!("{}={peer}", self.opts.name))
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .args(&self.opts.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup etcd log"))
            .stderr(log);
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display())),
        );
    }

    fn wait_until_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Err(format!("etcd exited with {status}"));
            }
            if self.healthy() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not healthy after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_block());
        }
    }
}

fn url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{port}"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
    }
}

/// `GET /health` over plain HTTP/1.1; healthy iff the body says `"health":"true"`.
fn health(addr: SocketAddr) -> std::io::Result<bool> {
    let timeout = Duration::from_millis(500);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body.replace(' ', "").contains("\"health\":\"true\""))
}

/// Run `f` in the named network namespace (on a fresh thread that enters it), or here.
fn in_netns<T, F>(netns: Option<&str>, f: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    let Some(ns) = netns else {
        return f();
    };
    let path = Path::new("/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = File::open(&path)?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(std::io::Error::from)?;
        f()
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("netns thread panicked")))
}

/// Whether every thread of `pid` is in the stopped state (`T` in `/proc/…/stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            // The state follows the command name, which is in parentheses.
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('T'))
            })
            .unwrap_or(false)
    })
}
