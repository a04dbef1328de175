//! What the benchmark programs (`src/bin/strait-bench-*.rs`) share: iperf3 runs and
//! servers inside namespaces, the machine's busy CPU time, medians, and the fast
//! path's state line. Figures only: nothing here asserts anything about them.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::cluster::ClusterHost;
use crate::netns::Netns;

/// One iperf3 run's result.
pub struct IperfRun {
    pub gbits: f64,
    pub retransmits: u64,
    /// Octets the receiver got.
    pub bytes: u64,
    /// CPU time the whole machine spent busy (user, system, interrupts) per GB
    /// received: what the path costs, less noisy than the rate on a shared machine.
    pub cpu_ms_per_gb: Option<f64>,
}

/// `iperf3 -c` from `from` to `to` for `seconds`; the receiver's rate. `pin` puts the
/// client on CPU 0 and the server on CPU 1 (`-A 0,1`).
pub fn iperf(from: &Netns, to: IpAddr, seconds: u32, pin: bool) -> Result<IperfRun, String> {
    iperf_streams(from, to, seconds, pin, 1)
}

/// [`iperf`] with `streams` parallel TCP streams (`iperf3 -P`); the receivers' sum.
pub fn iperf_streams(
    from: &Netns,
    to: IpAddr,
    seconds: u32,
    pin: bool,
    streams: u32,
) -> Result<IperfRun, String> {
    iperf_run(to, None, seconds, pin, streams, |argv| from.exec(argv))
}

/// [`iperf`] to a server on `port` rather than iperf3's own (a node port, say).
pub fn iperf_port(
    from: &Netns,
    to: IpAddr,
    port: u16,
    seconds: u32,
    pin: bool,
) -> Result<IperfRun, String> {
    iperf_run(to, Some(port), seconds, pin, 1, |argv| from.exec(argv))
}

/// [`iperf`] with the client's process in `cgroup` (an agent's service cgroup: what
/// makes the socket balancer translate its connects, as a container's would be).
pub fn iperf_in_cgroup(
    cgroup: &Path,
    from: &Netns,
    to: IpAddr,
    seconds: u32,
    pin: bool,
) -> Result<IperfRun, String> {
    iperf_run(to, None, seconds, pin, 1, |argv| {
        command_in_cgroup(cgroup, from.name(), argv)
            .output()
            .expect("iperf3")
    })
}

/// `argv` run in namespace `ns`, its process in `cgroup` first: `ip netns exec`
/// mounts a /sys without the cgroup mounts, so a shell joins the cgroup before it.
pub fn command_in_cgroup(cgroup: &Path, ns: &str, argv: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec ip netns exec {ns} \"$@\"",
            cgroup.display(),
        ))
        .arg("sh")
        .args(argv);
    cmd
}

/// iperf3's client by `exec` (which runs argv where it must), its JSON read.
fn iperf_run(
    to: IpAddr,
    port: Option<u16>,
    seconds: u32,
    pin: bool,
    streams: u32,
    exec: impl Fn(&[&str]) -> std::process::Output,
) -> Result<IperfRun, String> {
    let mut last = String::new();
    let to = to.to_string();
    let seconds = seconds.to_string();
    let streams = streams.to_string();
    let port = port.map(|p| p.to_string());
    let mut argv = vec!["iperf3", "-c", to.as_str(), "-t", seconds.as_str(), "-J"];
    argv.extend(["-P", streams.as_str()]);
    if let Some(port) = &port {
        argv.extend(["-p", port.as_str()]);
    }
    if pin {
        argv.extend(["-A", "0,1"]);
    }
    // The server may still be binding on the first run: retry a refused connection.
    for _ in 0..5 {
        let busy_before = cpu_busy_ms();
        let out = exec(&argv);
        let busy = cpu_busy_ms()
            .zip(busy_before)
            .map(|(a, b)| a.saturating_sub(b));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            let bytes = v["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0);
            return Ok(IperfRun {
                gbits: bps / 1e9,
                retransmits: v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
                bytes: bytes as u64,
                cpu_ms_per_gb: busy
                    .filter(|_| bytes > 0.0)
                    .map(|ms| ms as f64 / (bytes / 1e9)),
            });
        }
        last = v["error"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned());
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(last)
}

/// Busy CPU time of the machine so far, milliseconds: user + nice + system + irq +
/// softirq from `/proc/stat` (in USER_HZ, 100 per second on Linux).
pub fn cpu_busy_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq
    let busy = cpu.first()? + cpu.get(1)? + cpu.get(2)? + cpu.get(5)? + cpu.get(6)?;
    Some(busy * 10)
}

/// CPU time (user + system, all threads) process `pid` has used so far, seconds,
/// from `/proc/<pid>/stat` (USER_HZ = 100).
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (which may hold spaces) in parentheses: state is field 3,
    // utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// The `p`th percentile of `v` (nearest rank); zero for no samples.
pub fn percentile(v: &[std::time::Duration], p: usize) -> std::time::Duration {
    let mut v = v.to_vec();
    v.sort();
    if v.is_empty() {
        return std::time::Duration::ZERO;
    }
    let idx = ((v.len() * p).div_ceil(100))
        .saturating_sub(1)
        .min(v.len() - 1);
    v[idx]
}

/// The median (the upper one of an even count); None for no values.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// The fast path's state and counters as `netctl status` prints them.
pub fn fast_path_line(host: &ClusterHost) -> String {
    let (_, out) = host.netctl(&["status"]);
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix("fast path"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// `iperf3 -s` in a namespace (listening once `start` returns), killed by its PID on
/// drop.
pub struct IperfServer(Child);

impl IperfServer {
    pub fn start(ns: &Netns, ip: IpAddr) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "iperf3", "-s", "-B"])
            .arg(ip.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn iperf3 -s");
        // Listening before a client is started: a client that comes first is refused
        // (a CI run of the rekey test met exactly that on a loaded machine).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let out = ns.exec(&["ss", "-Hltn", "sport = :5201"]);
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self(child)
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a run of [`connection_load`] measured.
#[derive(Debug, Clone, Copy)]
pub struct ConnLoad {
    /// Connections answered.
    pub done: u64,
    /// Connections that failed (refused, timed out, no answer).
    pub failed: u64,
    /// Answered connections per second, all workers together.
    pub per_sec: f64,
    /// Latency of one connection, connect to close, over all workers.
    pub p50: Duration,
    pub p99: Duration,
}

impl ConnLoad {
    /// As one JSON line, for a client that runs in another process.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "done": self.done,
            "failed": self.failed,
            "per_sec": self.per_sec,
            "p50_us": self.p50.as_micros() as u64,
            "p99_us": self.p99.as_micros() as u64,
        })
    }

    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            done: v["done"].as_u64()?,
            failed: v["failed"].as_u64()?,
            per_sec: v["per_sec"].as_f64()?,
            p50: Duration::from_micros(v["p50_us"].as_u64()?),
            p99: Duration::from_micros(v["p99_us"].as_u64()?),
        })
    }
}

/// `per_worker` connections one after the other from each of `workers` threads (the
/// i-th to `to[i % to.len()]`: a baseline spread over the backends), each one: connect, write one byte, read the one-byte answer, read to the end (the
/// server's reset, see [`serve_answers`]), close. Run in the client's namespace (and
/// cgroup) by the caller.
pub fn connection_load(to: &[std::net::SocketAddr], per_worker: u64, workers: u64) -> ConnLoad {
    use std::io::{Read, Write};
    assert!(!to.is_empty(), "connection_load to no address");
    let one = move |to: std::net::SocketAddr| -> std::io::Result<Duration> {
        let t0 = std::time::Instant::now();
        let mut s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(&[7])?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        // The end: the server's reset (or a FIN).
        let _ = s.read(&mut b);
        drop(s);
        Ok(t0.elapsed())
    };
    let t0 = std::time::Instant::now();
    let threads: Vec<_> = (0..workers)
        .map(|i| {
            let to = to[i as usize % to.len()];
            std::thread::spawn(move || {
                let (mut times, mut failed) = (Vec::new(), 0u64);
                for _ in 0..per_worker {
                    match one(to) {
                        Ok(t) => times.push(t),
                        Err(_) => failed += 1,
                    }
                }
                (times, failed)
            })
        })
        .collect();
    let (mut times, mut failed) = (Vec::new(), 0u64);
    for t in threads {
        let (t, f) = t.join().expect("client worker");
        times.extend(t);
        failed += f;
    }
    let secs = t0.elapsed().as_secs_f64();
    ConnLoad {
        done: times.len() as u64,
        failed,
        per_sec: times.len() as f64 / secs,
        p50: percentile(&times, 50),
        p99: percentile(&times, 99),
    }
}

/// Serves [`connection_load`]'s clients on `addrs` until killed: each connection's one
/// byte is answered and the connection reset, by `threads` threads per address
/// accepting on its listening socket. Prints `ready` once it listens on all.
///
/// A reset (SO_LINGER 0) rather than a FIN, so that no side keeps the connection in
/// TIME_WAIT: the client's next connection from the same port to the same backend
/// would meet it. Through a DNAT the client's initial sequence number is hashed over
/// the service's address, not the backend's, so the backend's TIME_WAIT refuses it
/// about half the time and the client waits a second for its SYN's retransmission:
/// a cost of port reuse at a rate no real client has, not of the balancing measured.
pub fn serve_answers(addrs: &[std::net::SocketAddr], threads: usize) -> ! {
    use std::io::{Read, Write};
    let listeners: Vec<std::net::TcpListener> = addrs
        .iter()
        .map(|addr| {
            std::net::TcpListener::bind(addr).unwrap_or_else(|e| {
                eprintln!("listen on {addr}: {e}");
                std::process::exit(1)
            })
        })
        .collect();
    println!("ready");
    let mut handles = vec![];
    for listener in &listeners {
        for _ in 0..threads {
            let listener = listener.try_clone().expect("listener");
            handles.push(std::thread::spawn(move || {
                for conn in listener.incoming() {
                    let Ok(mut conn) = conn else { continue };
                    let _ = conn.set_nodelay(true);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
                    let mut b = [0u8; 1];
                    if conn.read_exact(&mut b).is_ok() {
                        let _ = conn.write_all(&b);
                    }
                }
            }));
        }
    }
    for h in handles {
        let _ = h.join();
    }
    std::process::exit(0)
}

/// Set by SIGINT/SIGTERM once [`stop_on_signals`] ran.
static INTERRUPTED: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> =
    std::sync::OnceLock::new();

/// Makes SIGINT and SIGTERM ask the benchmark to stop at its next [`checkpoint`]
/// instead of killing it with its namespaces and daemons still up.
pub fn stop_on_signals() {
    let flag = INTERRUPTED.get_or_init(Default::default);
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone()).expect("signal handler");
    }
}

/// Between measurements: after a SIGINT or SIGTERM, unwinds (dropping, and so
/// removing, everything made).
pub fn checkpoint() {
    if INTERRUPTED
        .get()
        .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
    {
        panic!("interrupted: cleaning up");
    }
}
