//! Stopping the daemons a test started — only ever by the PID of a child it spawned.

use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Sends `signal` to the child (ignored if it is already gone).
pub fn signal(child: &Child, signal: Signal) {
    let _ = kill(Pid::from_raw(child.id() as i32), signal);
}

/// SIGTERM, then wait up to `grace` for the child to exit; SIGKILL after that. Always
/// reaps it, so no zombie is left.
pub fn terminate(mut child: Child, grace: Duration) {
    // Reaped already: its PID may belong to another process by now.
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    signal(&child, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return kill_now(child),
        }
    }
}

/// SIGKILL and reap: the crash case.
pub fn kill_now(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}
