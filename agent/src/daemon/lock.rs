//! One agent per host: the locks a `straitd` holds for its whole life, so that a
//! second one refuses to start instead of sweeping the first one's containers away.
//!
//! * the network namespace's: `/run/strait/netns-<inode of /proc/self/ns/net>.lock`
//!   (one agent per namespace, whatever its state dir and socket);
//! * the state dir's: `<state dir>/straitd.lock` (one agent per embedded store and
//!   pending-release queue, whatever namespace it runs in).
//!
//! `flock`s (`File::try_lock`), released by the kernel when the agent exits, however it exits; the files
//! stay (removing a lock file races with the next agent opening it). The holder
//! writes its PID into the file, so a refused agent can say who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Where the namespace locks live.
pub const LOCK_DIR: &str = "/run/strait";

/// The locks; held until dropped (the agent's exit).
pub struct AgentLocks {
    _files: Vec<File>,
}

/// Takes the namespace's lock, then the state dir's (which must exist); fails, naming the lock and its
/// holder, if another agent holds either.
pub fn acquire(state_dir: &Path) -> anyhow::Result<AgentLocks> {
    let netns = std::fs::metadata("/proc/self/ns/net")
        .context("reading this process's network namespace (/proc/self/ns/net)")?
        .ino();
    std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
    let ns = lock(&netns_lock_path(netns), "this network namespace")?;
    let dir = lock(&state_dir.join("straitd.lock"), "this state dir")?;
    Ok(AgentLocks {
        _files: vec![ns, dir],
    })
}

/// Locks `path` (created if missing) without waiting, and writes this PID into it.
fn lock(path: &Path, what: &str) -> anyhow::Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening the lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another straitd{} already runs for {what}: {} is locked. One agent per \
             host: stop the other agent, or run this one in another network namespace \
             with another state dir",
            holder(&mut file).map_or(String::new(), |pid| format!(" (PID {pid})")),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    write_pid(&mut file).with_context(|| format!("writing the PID into {}", path.display()))?;
    Ok(file)
}

fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())
}

/// The lock of the network namespace with inode `netns`.
fn netns_lock_path(netns: u64) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("netns-{netns}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("x.lock");
        let first = lock(&path, "the test").expect("first");
        let err = lock(&path, "the test").expect_err("second").to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(
            err.contains(&format!("PID {}", std::process::id())),
            "{err}"
        );
        drop(first);
        lock(&path, "the test").expect("free again once the holder is gone");
    }
}
