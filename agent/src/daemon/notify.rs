//! systemd's readiness protocol (`Type=notify`, sd_notify(3)) without libsystemd: one
//! datagram of `KEY=VALUE` lines to the socket `$NOTIFY_SOCKET` names. The packaged
//! unit waits for `READY=1`, so `systemctl start straitd` returns once CNI ADDs are
//! served, and units ordered after it (a runtime) start against a ready agent.
//! Without `$NOTIFY_SOCKET` (not under systemd) every call does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The agent answers CNI calls.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={status}\n"));
}

/// The agent is stopping; nothing is torn down (containers keep their network).
pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping; interfaces and routes stay for the next agent\n");
}

fn send(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let result = address(&path).and_then(|addr| {
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(message.as_bytes(), &addr).map(|_| ())
    });
    if let Err(e) = result {
        // Readiness that never arrives makes systemd time the start out: say why.
        tracing::warn!(socket = %path, error = %e, "notifying systemd");
    }
}

/// A path, or an abstract socket name written with a leading `@`.
fn address(path: &str) -> std::io::Result<SocketAddr> {
    match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_ready_to_the_socket_systemd_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let addr = address(path.to_str().unwrap()).unwrap();
        let socket = UnixDatagram::unbound().unwrap();
        socket.send_to_addr(b"READY=1\n", &addr).unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }

    #[test]
    fn abstract_names_start_with_an_at() {
        let addr = address("@strait-test-notify").unwrap();
        assert_eq!(addr.as_abstract_name(), Some(&b"strait-test-notify"[..]));
        assert!(
            address("/run/systemd/notify")
                .unwrap()
                .as_pathname()
                .is_some()
        );
    }
}
