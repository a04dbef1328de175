//! Traffic probes between namespaces: ping, full-MTU ping, a TCP echo, and a
//! continuous ping that counts loss. Every target is an address inside a namespace the
//! test made.
//!
//! The TCP echo is plain Rust: the listening and the connecting sockets are made on
//! threads that entered the server's and the client's namespaces (a socket stays in the
//! namespace it was made in), so no tool beyond `ping` has to exist in the image.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Netns;

/// One echo request, 1 s deadline.
pub fn ping(from: &Netns, to: IpAddr) -> bool {
    from.exec(&["ping", "-c1", "-W1", &to.to_string()])
        .status
        .success()
}

/// Ping until a reply comes or `timeout` passes (routes are programmed asynchronously,
/// by a reconcile loop reacting to the store). The error says what the last try saw.
pub fn wait_ping(from: &Netns, to: IpAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = from.exec(&["ping", "-c1", "-W1", &to.to_string()]);
        if out.status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} cannot ping {to} after {timeout:?}: {}{}",
                from.name(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A ping whose packet is exactly `mtu` bytes on the wire with Don't Fragment set
/// (`-M do`), so a path that cannot carry it fails instead of fragmenting: the
/// black-hole check. Three tries, as the first may wait for neighbour resolution.
pub fn ping_full_mtu(from: &Netns, to: IpAddr, mtu: u32) -> Result<(), String> {
    // ICMP echo header 8 bytes, plus the IP header: 20 (v4) or 40 (v6).
    let size = mtu - 8 - if to.is_ipv4() { 20 } else { 40 };
    let out = from.exec(&[
        "ping",
        "-c3",
        "-W1",
        "-M",
        "do",
        "-s",
        &size.to_string(),
        &to.to_string(),
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let received = parse_received(&text).unwrap_or(0);
    if out.status.success() && received > 0 {
        Ok(())
    } else {
        Err(format!(
            "{}: {mtu}-byte ping (-M do -s {size}) to {to} failed: {text}",
            from.name()
        ))
    }
}

/// Open a TCP connection from `from` to `to_ip` on a listener made in `to`, send a
/// message and check it comes back unchanged. Both ends time out after a few seconds.
pub fn tcp_echo(from: &Netns, to: &Netns, to_ip: IpAddr) -> Result<(), String> {
    let timeout = Duration::from_secs(5);
    let listener = to
        .run_in(move || TcpListener::bind(SocketAddr::new(to_ip, 0)))
        .map_err(|e| format!("listen on {to_ip} in {}: {e}", to.name()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("listener address: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let deadline = Instant::now() + timeout;
        let (mut conn, _) = loop {
            match listener.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no connection",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e),
            }
        };
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(timeout))?;
        let mut buf = [0u8; 256];
        let n = conn.read(&mut buf)?;
        conn.write_all(&buf[..n])
    });
    let message = format!("strait tcp echo {} -> {addr}", from.name());
    let sent = message.clone();
    let echoed = from
        .run_in(move || {
            let mut s = TcpStream::connect_timeout(&addr, timeout)?;
            s.set_read_timeout(Some(timeout))?;
            s.write_all(sent.as_bytes())?;
            let mut back = vec![0u8; sent.len()];
            s.read_exact(&mut back)?;
            Ok(back)
        })
        .map_err(|e| format!("TCP {} -> {addr}: {e}", from.name()));
    let served = server
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("server thread panicked")));
    let echoed = echoed?;
    served.map_err(|e| format!("TCP server {addr} in {}: {e}", to.name()))?;
    if echoed != message.as_bytes() {
        return Err(format!("TCP {addr}: echo differs from what was sent"));
    }
    Ok(())
}

/// What a continuous ping saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingStats {
    pub transmitted: u64,
    pub received: u64,
    /// The sequence numbers of the requests that got no answer: with the interval,
    /// when in the run the loss happened (what a failing test prints).
    pub unanswered: Vec<u32>,
}

impl PingStats {
    pub fn lost(&self) -> u64 {
        self.transmitted.saturating_sub(self.received)
    }
}

/// `ping -c count -i interval` running in the background (e.g. across an agent
/// restart). [`ContinuousPing::finish`] waits for it and returns the counts.
///
/// ping itself waits only two round trips for the last reply, so on a loaded machine
/// a late reply to the last request would count as lost. So ping sends a second's
/// worth of requests more, and only the first `count` requests are counted, by the
/// sequence numbers of their replies: each has had at least a second to be answered.
pub struct ContinuousPing {
    child: Option<Child>,
    what: String,
    count: u32,
}

impl ContinuousPing {
    /// Start pinging `to` from `from`: `count` requests, one every `interval` (below
    /// 200 ms needs root, which these tests have).
    pub fn start(from: &Netns, to: IpAddr, count: u32, interval: Duration) -> Self {
        let tail = (Duration::from_secs(1).as_millis() / interval.as_millis().max(1)) as u32 + 1;
        let interval = format!("{:.3}", interval.as_secs_f64());
        let child = Command::new("ip")
            .args(["netns", "exec", from.name(), "ping", "-n", "-W1"])
            .args(["-c", &(count + tail).to_string(), "-i", &interval])
            .arg(to.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ping");
        Self {
            child: Some(child),
            what: format!("{} -> {to}", from.name()),
            count,
        }
    }

    /// Wait for the last reply (or its timeout) and return the counts.
    pub fn finish(mut self) -> Result<PingStats, String> {
        let child = self.child.take().expect("finish once");
        let out = child
            .wait_with_output()
            .map_err(|e| format!("ping {}: {e}", self.what))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let transmitted = parse_count(&text, "packets transmitted");
        match transmitted {
            Some(transmitted) => {
                let transmitted = transmitted.min(u64::from(self.count));
                let seqs = answered(&text, self.count);
                Ok(PingStats {
                    transmitted,
                    received: seqs.len() as u64,
                    unanswered: (1..=transmitted as u32)
                        .filter(|s| !seqs.contains(s))
                        .collect(),
                })
            }
            _ => Err(format!(
                "ping {}: no summary: {text}{}",
                self.what,
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    }
}

impl Drop for ContinuousPing {
    fn drop(&mut self) {
        // Killed by our own child's PID when a test fails midway.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Which of the requests 1..=`count` were answered, by the `icmp_seq` of the reply
/// lines (duplicates counted once).
fn answered(text: &str, count: u32) -> std::collections::BTreeSet<u32> {
    let seqs: std::collections::BTreeSet<u32> = text
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("icmp_seq="))
                .and_then(|n| n.parse().ok())
        })
        .filter(|seq| (1..=count).contains(seq))
        .collect();
    seqs
}

/// `N received` from ping's summary line.
fn parse_received(text: &str) -> Option<u64> {
    parse_count(text, "received")
}

/// The number before `label` in ping's summary (`300 packets transmitted, 300
/// received, ...`).
fn parse_count(text: &str, label: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    line.split(',')
        .map(str::trim)
        .find(|part| part.ends_with(label))
        .and_then(|part| part.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_answered_requests_of_the_run_only() {
        let text = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\
                    64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.05 ms\n\
                    64 bytes from 10.0.0.2: icmp_seq=3 ttl=64 time=0.05 ms\n\
                    64 bytes from 10.0.0.2: icmp_seq=3 ttl=64 time=0.06 ms (DUP!)\n\
                    64 bytes from 10.0.0.2: icmp_seq=4 ttl=64 time=900 ms\n\
                    64 bytes from 10.0.0.2: icmp_seq=5 ttl=64 time=0.05 ms\n\
                    --- 10.0.0.2 ping statistics ---\n\
                    5 packets transmitted, 4 received, +1 duplicates, 20% packet loss\n";
        // Requests 1..=4 are the run; 5 is the tail. 2 was never answered.
        assert_eq!(answered(text, 4).len(), 3);
        assert_eq!(answered(text, 5).len(), 4);
    }

    #[test]
    fn reads_ping_summary() {
        let text = "--- 10.0.0.2 ping statistics ---\n\
                    300 packets transmitted, 297 received, 1% packet loss, time 6000ms\n";
        assert_eq!(parse_count(text, "packets transmitted"), Some(300));
        assert_eq!(parse_received(text), Some(297));
        let errors = "5 packets transmitted, 0 received, +5 errors, 100% packet loss\n";
        assert_eq!(parse_received(errors), Some(0));
        assert_eq!(
            parse_received("ping: connect: Network is unreachable"),
            None
        );
    }
}
