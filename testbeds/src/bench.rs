//! What the benchmark programs (`src/bin/strait-bench-*.rs`) share: iperf3 runs and
//! servers inside namespaces, the machine's busy CPU time, medians, and the fast
//! path's state line. Figures only: nothing here asserts anything about them.

use std::net::IpAddr;
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
    let mut last = String::new();
    let to = to.to_string();
    let seconds = seconds.to_string();
    let streams = streams.to_string();
    let mut argv = vec!["iperf3", "-c", to.as_str(), "-t", seconds.as_str(), "-J"];
    argv.extend(["-P", streams.as_str()]);
    if pin {
        argv.extend(["-A", "0,1"]);
    }
    // The server may still be binding on the first run: retry a refused connection.
    for _ in 0..5 {
        let busy_before = cpu_busy_ms();
        let out = from.exec(&argv);
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

/// `iperf3 -s` in a namespace, killed by its PID on drop.
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
        Self(child)
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
