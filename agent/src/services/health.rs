//! Active health checks of service backends (`strait.io/health-check`): a TCP connect,
//! or an HTTP GET whose answer must be 2xx or 3xx, every interval. A backend that fails
//! `fall` checks in a row is held down, and comes back after `rise` passed ones; at the
//! default 500 ms with fall 2 it leaves the tables within about a second.
//!
//! Each node checks the backends of the frontends it serves and decides its own
//! tables by its own verdicts, as every instance of a load balancer tier does: no
//! store round trip between a failed check and the table change, and a backend only
//! one node cannot reach is left out by that node only. A backend starts up (trusted
//! until it fails), so a new service is served at once.
//!
//! A check is per service and backend address ([`CheckKey`]): it connects to the
//! backend's end of the service's first TCP port, and its verdict holds for every port
//! of that service on that address (a UDP port cannot be checked by a connect; the
//! parser refuses a check on a service without a TCP port).
//!
//! [`Checker`] owns one task per check; [`Checker::set`] starts and stops them as the
//! plan changes. The verdicts are published as the set of keys held down.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use strait_services::model::{CheckKind, HealthCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

/// A service (`ns/name`) and a backend address of it.
pub type CheckKey = (String, IpAddr);

/// One backend to check, as the plan asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub addr: SocketAddr,
    pub check: HealthCheck,
}

/// The checks running, and the backends held down.
pub struct Checker {
    tasks: BTreeMap<CheckKey, (Target, JoinHandle<()>)>,
    verdicts: watch::Sender<BTreeMap<CheckKey, bool>>,
}

impl Default for Checker {
    fn default() -> Self {
        Self::new()
    }
}

impl Checker {
    pub fn new() -> Self {
        Self {
            tasks: BTreeMap::new(),
            verdicts: watch::channel(BTreeMap::new()).0,
        }
    }

    /// Woken whenever a verdict changes.
    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<CheckKey, bool>> {
        self.verdicts.subscribe()
    }

    /// The backends (by key) held down now.
    pub fn down(&self) -> BTreeSet<CheckKey> {
        self.verdicts
            .borrow()
            .iter()
            .filter(|(_, up)| !**up)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Checks exactly `targets` (by backend key) from now on: new ones start (up),
    /// changed ones restart, gone ones stop and are forgotten.
    pub fn set(&mut self, targets: BTreeMap<CheckKey, Target>) {
        let gone: Vec<CheckKey> = self
            .tasks
            .iter()
            .filter(|(k, (t, _))| targets.get(*k) != Some(t))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &gone {
            if let Some((_, task)) = self.tasks.remove(key) {
                task.abort();
            }
        }
        if !gone.is_empty() {
            self.verdicts.send_if_modified(|v| {
                let before = v.len();
                v.retain(|k, _| targets.contains_key(k) && !gone.contains(k));
                v.len() != before
            });
        }
        for (key, target) in targets {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(run(key.clone(), target.clone(), self.verdicts.clone()));
            self.tasks.insert(key, (target, task));
        }
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for (_, (_, task)) in std::mem::take(&mut self.tasks) {
            task.abort();
        }
    }
}

async fn run(key: CheckKey, target: Target, verdicts: watch::Sender<BTreeMap<CheckKey, bool>>) {
    let shown = format!("{} {}", key.0, target.addr);
    let interval = Duration::from_millis(u64::from(target.check.interval_ms));
    let (mut failed, mut passed, mut up) = (0u8, 0u8, true);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = probe(target.addr, &target.check.kind, interval).await;
        match result {
            Ok(()) => {
                failed = 0;
                passed = passed.saturating_add(1);
                if !up && passed >= target.check.rise {
                    up = true;
                    info!(backend = %shown, "health check passes again: backend back in");
                }
            }
            Err(why) => {
                passed = 0;
                failed = failed.saturating_add(1);
                if up && failed >= target.check.fall {
                    up = false;
                    info!(backend = %shown, %why, "health check fails: backend held down");
                }
            }
        }
        verdicts.send_if_modified(|v| {
            let changed = v.get(&key) != Some(&up);
            v.insert(key.clone(), up);
            changed
        });
    }
}

/// One check, within `timeout`.
pub async fn probe(addr: SocketAddr, kind: &CheckKind, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let CheckKind::Http { path } = kind else {
            return Ok(());
        };
        let host = match addr {
            SocketAddr::V4(a) => a.to_string(),
            SocketAddr::V6(a) => a.to_string(),
        };
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: strait-health\r\nConnection: close\r\n\r\n"
        );
        s.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut head = [0u8; 64];
        let mut n = 0;
        while n < 12 {
            let got = s
                .read(&mut head[n..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if got == 0 {
                break;
            }
            n += got;
        }
        status_ok(&head[..n])
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// `HTTP/1.x 2xx` or `3xx`.
fn status_ok(head: &[u8]) -> Result<(), String> {
    let line = String::from_utf8_lossy(head);
    let code = line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP answer: {:?}",
                line.lines().next().unwrap_or("")
            )
        })?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn check(kind: CheckKind) -> HealthCheck {
        HealthCheck {
            kind,
            interval_ms: 100,
            fall: 2,
            rise: 2,
        }
    }

    /// An HTTP server on loopback answering every request with `status`.
    async fn http(status: &'static str) -> (SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut c, _)) = l.accept().await else {
                    return;
                };
                let mut buf = [0u8; 512];
                let _ = c.read(&mut buf).await;
                let _ = c
                    .write_all(format!("HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        (addr, task)
    }

    #[test]
    fn status_lines() {
        assert!(status_ok(b"HTTP/1.1 200 OK\r\n").is_ok());
        assert!(status_ok(b"HTTP/1.0 302 Found").is_ok());
        assert_eq!(
            status_ok(b"HTTP/1.1 503 Unavailable"),
            Err("HTTP 503".into())
        );
        assert!(status_ok(b"SSH-2.0-OpenSSH").is_err());
        assert!(status_ok(b"").is_err());
    }

    #[tokio::test]
    async fn probes_pass_and_fail_for_the_reasons_they_say() {
        let (ok, _a) = http("200 OK").await;
        let (bad, _b) = http("500 Oops").await;
        let t = Duration::from_secs(2);
        let http_kind = CheckKind::Http {
            path: "/healthz".into(),
        };
        assert_eq!(probe(ok, &http_kind, t).await, Ok(()));
        assert_eq!(probe(bad, &http_kind, t).await, Err("HTTP 500".into()));
        assert_eq!(
            probe(bad, &CheckKind::Tcp, t).await,
            Ok(()),
            "TCP only connects"
        );
        // A closed port: refused.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = probe(closed, &CheckKind::Tcp, t).await.unwrap_err();
        assert!(e.starts_with("connect:"), "{e}");
    }

    #[tokio::test]
    async fn a_backend_falls_after_failures_and_rises_after_passes() {
        let (addr, server) = http("200 OK").await;
        let mut c = Checker::new();
        let mut rx = c.subscribe();
        let key: CheckKey = ("shop/web".into(), addr.ip());
        c.set(BTreeMap::from([(
            key.clone(),
            Target {
                addr,
                check: check(CheckKind::Http { path: "/".into() }),
            },
        )]));
        rx.wait_for(|v| v.get(&key) == Some(&true)).await.unwrap();
        assert!(c.down().is_empty());
        server.abort();
        let _ = server.await;
        rx.wait_for(|v| v.get(&key) == Some(&false)).await.unwrap();
        assert_eq!(c.down(), BTreeSet::from([key.clone()]));
        // Listening again on the same port: it comes back.
        let l = TcpListener::bind(addr).await.unwrap();
        let _again = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.0 204 No Content\r\n\r\n").await;
            }
        });
        rx.wait_for(|v| v.get(&key) == Some(&true)).await.unwrap();
        // No longer wanted: forgotten.
        c.set(BTreeMap::new());
        assert!(c.subscribe().borrow().is_empty());
    }
}
