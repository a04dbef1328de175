//! A private Kubernetes API server for tests: the real `kube-apiserver` on a free port of
//! 127.0.0.1, on a test's [`Etcd`] under a key prefix of its own, killed by PID on drop,
//! its log printed when the test is failing. Nothing else of Kubernetes runs: no
//! controller manager, no scheduler, no kubelet — objects are what the test writes.
//!
//! ```ignore
//! if !require_etcd("my_test") || !require_kube("my_test") { return; }
//! let etcd = Etcd::start();
//! let mut kube = KubeApi::start(&etcd);      // declared after etcd: dropped before it
//! kube.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n");
//! let names = kube.kubectl_ok(&["get", "namespaces", "-o", "name"]);
//! let agent_creds = kube.service_account_kubeconfig("kube-system", "strait");
//! kube.restart();                            // same URL and data: watches break
//! ```
//!
//! The binaries come from `scripts/kube-build.sh` (see [`kube_bin_dir`]); tests call
//! [`require_kube`] first, like [`require_etcd`](crate::etcd::require_etcd). No root is
//! needed.
//!
//! What the API server is set up with, and why:
//! * authentication: a static token for `admin` in `system:masters` (the test's own
//!   identity, [`KubeApi::admin_kubeconfig`]), and service-account tokens signed with an
//!   RSA key of the instance, so `TokenRequest` (`kubectl create token`) works and an
//!   agent can run with exactly a service account's rights
//!   ([`KubeApi::service_account_kubeconfig`]);
//! * authorization `Node,RBAC`, as in a production cluster, so missing RBAC rules show;
//! * admission: the default plugins except `ServiceAccount`, which refuses a pod whose
//!   namespace has no `default` service account — created by the controller manager,
//!   which does not run here. Pods are stored as written (no token volume is added).
//! * serving certificate: made by the API server in its cert dir with a CA of its own;
//!   the kubeconfigs trust that CA ([`KubeApi::ca_cert`]), so TLS is verified.
//!
//! etcd: Debian 12's etcd 3.4.23 serves it (create, list, watch, restarts). It lacks
//! one thing the API server asks of newer ones, progress notifications on request
//! (etcd ≥ 3.4.31 / 3.5.13), so the API server refuses *streaming lists* (watch with
//! `sendInitialEvents=true`, kube-rs's `InitialListStrategy::StreamingList`) with "the
//! required storage feature RequestWatchProgress is not enabled": clients list, then
//! watch (kube-rs's default). `$STRAIT_ETCD` can point the test's etcd at a newer one.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::etcd::Etcd;

/// The Kubernetes version `scripts/kube-build.sh` builds by default; its cache dir is
/// where [`kube_bin_dir`] looks without `$STRAIT_KUBE_BIN_DIR`. Keep in step with
/// `VERSION` in the script.
pub const DEFAULT_VERSION: &str = "v1.37.2";

/// The script's cache root when `$STRAIT_KUBE_CACHE` is not set.
const DEFAULT_CACHE: &str = "/var/cache/strait/kube";

/// How long [`KubeApi::start`] and [`KubeApi::restart`] wait for `/readyz`. Generous:
/// the API server is ready in a few seconds on an idle machine, but the test machines
/// are shared and slow, and several API servers may start at once.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`KubeApi::stop`] lets the API server shut down before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// Starts with a fresh port when the API server could not bind the one picked (another
/// process took it between our probe and its bind).
const PORT_ATTEMPTS: usize = 3;

/// The API server's port inside a namespace of the test's own ([`KubeOpts::netns`]):
/// nothing else there listens on it.
pub const NETNS_PORT: u16 = 6443;

/// The service ClusterIP range (`--service-cluster-ip-range`). Only a setting of the
/// API server here: it allocates Services' ClusterIPs from it, `.1` going to the
/// `kubernetes` Service.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

/// The directory holding `kube-apiserver` and `kubectl`, if both are there:
/// `$STRAIT_KUBE_BIN_DIR` when set (`scripts/test.sh` sets it to the directory the
/// build script printed), else the build script's cache dir for [`DEFAULT_VERSION`]
/// (under `$STRAIT_KUBE_CACHE`, default `/var/cache/strait/kube`).
pub fn kube_bin_dir() -> Option<PathBuf> {
    let dir = bin_dir_candidate();
    let complete = ["kube-apiserver", "kubectl"]
        .iter()
        .all(|b| dir.join(b).is_file());
    complete.then_some(dir)
}

/// Where the binaries should be: the explicit dir is used as given (a wrong one must
/// not quietly fall back to another build).
fn bin_dir_candidate() -> PathBuf {
    if let Some(dir) = std::env::var_os("STRAIT_KUBE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("STRAIT_KUBE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE));
    cache.join(DEFAULT_VERSION).join("bin")
}

/// True when the test may go on; prints a visible skip line otherwise. Under
/// `STRAIT_REQUIRE_PRIVILEGED=1` missing binaries are a failure, so CI never counts a
/// skipped Kubernetes test as passed.
pub fn require_kube(test: &str) -> bool {
    if kube_bin_dir().is_some() {
        return true;
    }
    let why = format!(
        "kube-apiserver and kubectl not in {} (run scripts/kube-build.sh, or set \
         STRAIT_KUBE_BIN_DIR to the directory it prints)",
        bin_dir_candidate().display()
    );
    if std::env::var("STRAIT_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: {why}, and STRAIT_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!("SKIP: {test}: {why}");
    false
}

/// How to run the API server, beyond the etcd it stores into.
#[derive(Debug, Clone)]
pub struct KubeOpts {
    /// `--advertise-address`: the address the API server puts in the `kubernetes`
    /// Service's endpoints. A loopback address is refused there; the default, a
    /// documentation address (RFC 5737), keeps it from depending on this machine's
    /// interfaces. With [`KubeOpts::netns`], [`KubeOpts::ip`] is advertised instead.
    pub advertise_address: IpAddr,
    /// The address it serves on (default 127.0.0.1).
    pub ip: IpAddr,
    /// Run it inside this named network namespace (a cluster bed's underlay, where the
    /// hosts' agents reach it), on port [`NETNS_PORT`]; `kubectl` runs there too.
    /// Needs root.
    pub netns: Option<String>,
    /// Extra command-line flags (e.g. `--feature-gates=...`); later flags win.
    pub extra: Vec<String>,
}

impl Default for KubeOpts {
    fn default() -> Self {
        Self {
            advertise_address: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            netns: None,
            extra: Vec::new(),
        }
    }
}

/// A running (or stopped) private API server. Dropping it kills the process by PID and
/// removes its temp dir (the objects stay in etcd, under [`KubeApi::etcd_prefix`]).
pub struct KubeApi {
    child: Option<Child>,
    opts: KubeOpts,
    bin_dir: PathBuf,
    dir: tempfile::TempDir,
    etcd_endpoints: Vec<String>,
    etcd_prefix: String,
    port: u16,
    admin_token: String,
    admin_kubeconfig: PathBuf,
}

impl KubeApi {
    /// An API server on `etcd`, ready to serve. Declare it after the etcd (or drop it
    /// first): an API server whose etcd is gone takes a long time to stop. Panics (with
    /// its log) if it is not ready within [`READY_TIMEOUT`].
    pub fn start(etcd: &Etcd) -> Self {
        Self::start_with(etcd.endpoints(), KubeOpts::default())
    }

    /// An API server on any etcd (`http://` client URLs), with explicit options.
    pub fn start_with(etcd_endpoints: Vec<String>, opts: KubeOpts) -> Self {
        let bin_dir = kube_bin_dir().expect("kube binaries missing: call require_kube first");
        let dir = tempfile::Builder::new()
            .prefix("strait-kube-")
            .tempdir()
            .expect("kube-apiserver temp dir");
        // Unique among the API servers of this process and of others sharing the etcd:
        // each sees only the keys under its own prefix.
        static N: AtomicU32 = AtomicU32::new(0);
        let etcd_prefix = format!(
            "/strait-kube-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut kube = Self {
            child: None,
            opts,
            bin_dir,
            admin_kubeconfig: dir.path().join("admin.kubeconfig"),
            dir,
            etcd_endpoints,
            etcd_prefix,
            port: 0,
            admin_token: random_token(),
        };
        kube.write_credentials();
        for attempt in 1..=PORT_ATTEMPTS {
            kube.port = match kube.opts.netns {
                Some(_) => NETNS_PORT,
                None => free_port(),
            };
            // The kubeconfigs name the port, so they are written for each one tried.
            kube.write_kubeconfig(&kube.admin_kubeconfig, "admin", &kube.admin_token);
            kube.launch();
            match kube.wait_until_ready(READY_TIMEOUT) {
                Ok(()) => return kube,
                Err(why)
                    if attempt < PORT_ATTEMPTS && kube.log().contains("address already in use") =>
                {
                    eprintln!(
                        "kube-apiserver: port {} taken ({why}), picking another",
                        kube.port
                    );
                    kube.kill();
                }
                Err(why) => panic!("kube-apiserver did not start: {why}\n{}", kube.log_block()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `https://<ip>:<port>` (`https://127.0.0.1:<port>` by default).
    pub fn url(&self) -> String {
        format!(
            "https://{}",
            std::net::SocketAddr::new(self.opts.ip, self.port)
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The etcd key prefix (`--etcd-prefix`) this API server keeps its objects under.
    pub fn etcd_prefix(&self) -> &str {
        &self.etcd_prefix
    }

    /// A kubeconfig for `admin` (group `system:masters`: allowed everything), trusting
    /// the API server's CA.
    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// The admin's bearer token, for clients that take one directly.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The CA that signed the serving certificate (PEM): the API server makes both on
    /// its first start and keeps them across restarts.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// `kubectl` as admin. Whatever it returns: the caller checks.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_as(&self.admin_kubeconfig, args)
    }

    /// `kubectl` with another kubeconfig (e.g. a service account's).
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        self.kubectl_command(kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run kubectl: {e}"))
    }

    /// A `kubectl` command with `kubeconfig`, for runs the other helpers do not cover
    /// (a long-running `get --watch` with its output piped).
    pub fn kubectl_command(&self, kubeconfig: &Path) -> Command {
        let mut cmd = self.command(&self.bin_dir.join("kubectl"));
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            // Its discovery cache in the temp dir, not in $HOME: another API server may
            // have had this port before.
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            // Nothing of the user's environment: the kubeconfig says everything.
            .env_remove("KUBECONFIG");
        cmd
    }

    /// `kubectl` as admin that must succeed; its stdout. Panics with its stderr.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        check("kubectl", args, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Sets `node`'s `NetworkUnavailable` condition to `True` as someone else would
    /// (reason `SomeoneElse`): what an agent must put right. kubectl's stdout.
    pub fn mark_network_unavailable(&self, node: &str) -> String {
        let patch = serde_json::json!({"status": {"conditions": [{
            "type": "NetworkUnavailable",
            "status": "True",
            "reason": "SomeoneElse",
            "message": "set by the test",
        }]}})
        .to_string();
        self.kubectl_ok(&[
            "patch",
            "node",
            node,
            "--subresource=status",
            "--type=strategic",
            "-p",
            &patch,
        ])
    }

    /// `kubectl apply -f -` of `yaml` (one or more documents) as admin; its stdout
    /// (`namespace/x created`, ...). Panics with kubectl's stderr if it fails.
    pub fn apply(&self, yaml: &str) -> String {
        let mut child = self
            .kubectl_command(&self.admin_kubeconfig)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run kubectl: {e}"));
        // kubectl reads all of stdin before it writes anything, so writing first cannot
        // block on a full stdout pipe.
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(yaml.as_bytes())
            .expect("write the manifest to kubectl");
        let out = child.wait_with_output().expect("wait for kubectl");
        check("kubectl", &["apply", "-f", "-", "<<", yaml], &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A kubeconfig with the credentials of service account `namespace/name` (creating
    /// both if needed), from a token of the TokenRequest API valid for two hours. It has
    /// exactly the RBAC rights the test grants that account: none at first.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        // Applied, not created: the namespace may exist already (kube-system, or one
        // the test made), and applying an existing account changes nothing.
        self.apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n---\n\
             apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  \
             namespace: {namespace}\n"
        ));
        let token =
            self.kubectl_ok(&["create", "token", name, "-n", namespace, "--duration", "2h"]);
        let path = self
            .dir
            .path()
            .join(format!("sa-{namespace}-{name}.kubeconfig"));
        let user = format!("system:serviceaccount:{namespace}:{name}");
        self.write_kubeconfig(&path, &user, token.trim());
        path
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still alive (it may not be serving).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL and reap: the crash case. Clients see their connections reset.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.take() {
            crate::process::kill_now(c);
        }
    }

    /// SIGTERM, as a rolling update does, and wait for it to exit (SIGKILL after 15 s):
    /// the API server ends its watches and requests itself.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            crate::process::terminate(c, STOP_GRACE);
        }
    }

    /// Start again with the same port, etcd prefix, certificates and keys (stopping it
    /// first if it runs), and wait until it is ready. The objects are in etcd, so they
    /// are all still there; watches opened before are broken and must be re-opened.
    /// After [`KubeApi::kill`] this is a crash and restart.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
        if let Err(why) = self.wait_until_ready(READY_TIMEOUT) {
            panic!(
                "kube-apiserver did not come back: {why}\n{}",
                self.log_block()
            );
        }
    }

    /// Whether `/readyz` answers OK to the admin right now.
    pub fn ready(&self) -> bool {
        self.kubectl(&["get", "--raw", "/readyz", "--request-timeout=5s"])
            .status
            .success()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("kube-apiserver.log")
    }

    /// Everything the API server has logged so far (all runs of it).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_block(&self) -> String {
        format!(
            "----- kube-apiserver log ({}, etcd prefix {}) -----\n{}\n----- end of kube-apiserver log -----",
            self.log_path().display(),
            self.etcd_prefix,
            self.log()
        )
    }

    fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    fn tokens_file(&self) -> PathBuf {
        self.dir.path().join("tokens.csv")
    }

    fn service_account_key(&self) -> PathBuf {
        self.dir.path().join("service-account.key")
    }

    /// The admin token file and the service-account signing key, once per instance: a
    /// restart keeps both, so tokens issued before it stay valid, as in a real cluster.
    fn write_credentials(&self) {
        // token,user,uid,"groups"
        std::fs::write(
            self.tokens_file(),
            format!(
                "{},admin,strait-test-admin,\"system:masters\"\n",
                self.admin_token
            ),
        )
        .expect("write the token file");
        let out = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(self.service_account_key())
            .arg("2048")
            .output()
            .unwrap_or_else(|e| panic!("run openssl (for the service-account key): {e}"));
        check("openssl", &["genrsa"], &out);
    }

    /// A kubeconfig for `user` with a bearer token, trusting the API server's CA. The
    /// CA file is named, not inlined: the API server writes it only when it starts.
    fn write_kubeconfig(&self, path: &Path, user: &str, token: &str) {
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "strait-test",
                "cluster": {
                    "server": self.url(),
                    "certificate-authority": self.ca_cert(),
                },
            }],
            "users": [{ "name": user, "user": { "token": token } }],
            "contexts": [{
                "name": "strait-test",
                "context": { "cluster": "strait-test", "user": user },
            }],
            "current-context": "strait-test",
        });
        // JSON is YAML: kubectl and kube-rs read it as a kubeconfig.
        std::fs::write(path, config.to_string())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Whether [`KubeApi::ca_cert`] is there, writing it if the API server has made its
    /// certificates. It writes the serving certificate and the CA that signed it into
    /// one file, `apiserver.crt` (leaf first); the CA alone is what clients trust (some
    /// refuse a leaf among their roots).
    fn extract_ca(&self) -> bool {
        if self.ca_cert().exists() {
            return true;
        }
        let Ok(chain) = std::fs::read_to_string(self.cert_dir().join("apiserver.crt")) else {
            return false;
        };
        const END: &str = "-----END CERTIFICATE-----";
        let blocks: Vec<&str> = chain
            .split_inclusive(END)
            .map(str::trim)
            .filter(|b| b.starts_with("-----BEGIN CERTIFICATE-----") && b.ends_with(END))
            .collect();
        // Fewer than two: not written completely yet (the next poll reads it again).
        let [_leaf, ca] = blocks[..] else {
            return false;
        };
        // Written under another name and renamed: kubectl never reads half a file.
        let partial = self.dir.path().join("ca.crt.partial");
        std::fs::write(&partial, format!("{ca}\n"))
            .and_then(|()| std::fs::rename(&partial, self.ca_cert()))
            .unwrap_or_else(|e| panic!("write {}: {e}", self.ca_cert().display()));
        true
    }

    fn launch(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("kube-apiserver log file");
        let key = self.service_account_key();
        let binary = self.bin_dir.join("kube-apiserver");
        let advertise = match self.opts.netns {
            Some(_) => self.opts.ip,
            None => self.opts.advertise_address,
        };
        let mut cmd = self.command(&binary);
        cmd.arg(format!("--bind-address={}", self.opts.ip))
            .arg(format!("--secure-port={}", self.port))
            .arg(format!("--advertise-address={advertise}"))
            // It generates its own CA and serving certificate here on the first start,
            // and reuses them on later ones.
            .arg("--cert-dir")
            .arg(self.cert_dir())
            .arg(format!("--etcd-servers={}", self.etcd_endpoints.join(",")))
            .arg(format!("--etcd-prefix={}", self.etcd_prefix))
            .arg("--token-auth-file")
            .arg(self.tokens_file())
            .args(["--authorization-mode", "Node,RBAC"])
            // Its private key serves as the public one too: the API server takes the
            // public half from it.
            .arg("--service-account-key-file")
            .arg(&key)
            .arg("--service-account-signing-key-file")
            .arg(&key)
            .args([
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
            ])
            .args(["--service-cluster-ip-range", SERVICE_CIDR])
            // See the module doc: no controller manager makes `default` accounts.
            .args(["--disable-admission-plugins", "ServiceAccount"])
            .args(&self.opts.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup kube-apiserver log"))
            .stderr(log);
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display())),
        );
    }

    /// `program`, inside [`KubeOpts::netns`] when there is one (`ip netns exec` execs
    /// it: the child's PID is the program's).
    fn command(&self, program: &Path) -> Command {
        match &self.opts.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    fn wait_until_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Err(format!("kube-apiserver exited with {status}"));
            }
            if self.child.is_none() {
                return Err("kube-apiserver is not running".into());
            }
            // The CA exists once it has set up serving; before that kubectl could not
            // verify it anyway.
            if self.extract_ca() && self.ready() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("/readyz not OK after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_block());
        }
    }
}

/// A port free on 127.0.0.1 right now (bound to port 0, then released for the API
/// server to take).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// 32 hex digits from the kernel's random source: the admin token, so that another
/// process on the machine cannot guess its way into a test's API server.
fn random_token() -> String {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Panics with the command, its status and its stderr unless it succeeded.
fn check(program: &str, args: &[&str], out: &Output) {
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\nstderr: {}\nstdout: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The `NetworkUnavailable` condition of a Node as `kubectl get node -o json` shows it
/// (the condition an agent sets; see [`KubeApi::mark_network_unavailable`]), or `null`
/// when the Node has none.
pub fn network_unavailable(node: &serde_json::Value) -> serde_json::Value {
    node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "NetworkUnavailable"))
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}
