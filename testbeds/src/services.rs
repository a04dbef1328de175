//! What the services scenarios share: backend servers in containers (a python3
//! script, [`ECHO_SERVER`] or a scenario's own, or any command; killed by PID on
//! drop), `netctl service apply` and `list` against host 0's agent, waiting for a
//! service's frontends to be installed, and the per-backend counts a client script
//! prints.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{Cluster, Container};
use crate::netns::Netns;
use crate::wait_until;

/// A backend server for [`BackendServer::start`]: TCP 8080 sends the backend's name
/// and a newline, then echoes lines until the client closes; UDP 5353 answers each
/// datagram with the name. Both families.
pub const ECHO_SERVER: &str = r#"
import socket, sys, threading
name = sys.argv[1].encode()
def conn(c):
    try:
        c.sendall(name + b"\n")
        f = c.makefile("rb")
        for line in f:
            c.sendall(line)
    except OSError:
        pass
    finally:
        c.close()
def tcp(fam, addr):
    s = socket.socket(fam)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, 8080)); s.listen(1024)
    while True:
        c, _ = s.accept()
        threading.Thread(target=conn, args=(c,), daemon=True).start()
def udp(fam, addr):
    u = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    u.bind((addr, 5353))
    while True:
        d, a = u.recvfrom(100); u.sendto(name, a)
for f, a in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    threading.Thread(target=tcp, args=(f, a), daemon=True).start()
    threading.Thread(target=udp, args=(f, a), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

const CONVERGE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);

/// `script` run by python3 in `c`'s namespace with the container's name as its
/// argument; it prints `ready` once it listens. Killed (by PID) on drop.
pub struct BackendServer(Child);

impl BackendServer {
    pub fn start(c: &Container, script: &str) -> Self {
        Self::start_command(c, &["python3", "-c", script, &c.name])
    }

    /// `argv` run in `c`'s namespace, which prints `ready` once it listens.
    pub fn start_command(c: &Container, argv: &[&str]) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", c.ns.name()])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("server ready");
        assert_eq!(line.trim(), "ready", "server in {}", c.name);
        Self(child)
    }
}

impl Drop for BackendServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `netctl service apply` of `text` on host 0: (success, output).
pub fn apply(c: &Cluster, text: &str) -> (bool, String) {
    let file = c.dir().join("svc.yaml");
    std::fs::write(&file, text).expect("write the documents");
    c.host(0)
        .netctl(&["service", "apply", "-f", file.to_str().expect("utf-8 path")])
}

/// Service `name` (`NS/NAME`) as host 0's `netctl service list -o json` shows it;
/// `Null` when it is not listed.
pub fn service(c: &Cluster, name: &str) -> Value {
    service_on(c, 0, name)
}

/// [`service`] as host `host`'s agent shows it.
pub fn service_on(c: &Cluster, host: usize, name: &str) -> Value {
    let (ok, out) = c.host(host).netctl(&["-o", "json", "service", "list"]);
    assert!(ok, "{out}");
    let all: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    all.as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// Waits until every frontend of `name` on host 0 (of `scope` only, when given) is
/// installed with `usable` usable backends.
pub fn wait_backends(c: &Cluster, name: &str, scope: Option<&str>, usable: usize) {
    wait_backends_on(c, 0, name, scope, usable)
}

/// [`wait_backends`] on host `host`.
pub fn wait_backends_on(c: &Cluster, host: usize, name: &str, scope: Option<&str>, usable: usize) {
    wait_until(
        &format!(
            "{name}'s frontends ({scope:?}) on {} installed with {usable} usable backends",
            c.host(host).name
        ),
        CONVERGE,
        POLL,
        || {
            let s = service_on(c, host, name);
            let frontends: Vec<Value> = s["frontends"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|f| scope.is_none_or(|scope| f["scope"] == scope))
                .collect();
            let ok = !frontends.is_empty()
                && frontends.iter().all(|f| {
                    f["installed"] == true
                        && f["backends"].as_array().is_some_and(|b| {
                            b.iter().filter(|b| b["usable"] == true).count() == usable
                        })
                });
            if ok { Ok(()) } else { Err(s.to_string()) }
        },
    )
    .unwrap();
}

/// The `counts` object of a client script's JSON: answers per backend name.
pub fn counts(v: &Value) -> BTreeMap<String, u64> {
    v["counts"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs python3 `script` with `args` in `ns` (an underlay peer, say: no socket
/// balancer there). The script's stdout, as JSON.
pub fn python_in(ns: &Netns, script: &str, args: &[&str]) -> Value {
    let mut argv = vec!["python3", "-c", script];
    argv.extend_from_slice(args);
    json_of(ns.name(), ns.exec(&argv))
}

/// What a python3 client in `ns` printed, as JSON; its stderr when it failed.
fn json_of(ns: &str, out: std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "python3 in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Runs python3 `script` with `args` in namespace `ns`, its process in `cgroup` first
/// (what makes the socket balancer see it: a container's processes are in a cgroup
/// below the agent's; see [`crate::bench::command_in_cgroup`]). The script's stdout,
/// as JSON.
pub fn python_in_cgroup(cgroup: &Path, ns: &str, script: &str, args: &[&str]) -> Value {
    let mut argv = vec!["python3", "-c", script];
    argv.extend_from_slice(args);
    let out = crate::bench::command_in_cgroup(cgroup, ns, &argv)
        .output()
        .expect("python3");
    json_of(ns, out)
}
