//! One agent per host: the locks a `straitd` holds for its whole life, so that a
//! second one refuses to start instead of sweeping the first one's containers away.
//!
//! * the network namespace's: `/run/strait/netns-<inode of /proc/self/ns/net>.lock`
//!   (one agent per namespace, whatever its state dir and socket);
//! * the state dir's: `<state dir>/straitd.lock` (one agent per embedded store and
//!   pending-release queue, whatever namespace it runs in).
//!
//! `flock`s (`File::try_lock`), released by the kernel when the agent exits, however
//! it exits. The holder writes its PID into the file, so a refused agent can say who
//! holds it, and removes the file when it stops; the files of killed agents (of
//! namespaces long gone, often) are removed by the next agent to start on the host.
//! A lock counts only while its file is still the one at the path: an agent that
//! locked a file just removed by its previous holder starts over on the new one.

use std::fs::{File, OpenOptions};
use std::io::{Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Where the namespace locks live.
pub const LOCK_DIR: &str = "/run/strait";

/// The locks; held until dropped (the agent's exit), which removes their files.
pub struct AgentLocks {
    held: Vec<(PathBuf, File)>,
}

impl Drop for AgentLocks {
    fn drop(&mut self) {
        // Removed while still held: whoever opened it meanwhile and locks it after us
        // finds it is no longer the file at the path (`is_at`) and starts over.
        for (path, _file) in &self.held {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Takes the namespace's lock, then the state dir's (which must exist); fails, naming
/// the lock and its holder, if another agent holds either.
pub fn acquire(state_dir: &Path) -> anyhow::Result<AgentLocks> {
    let netns = std::fs::metadata("/proc/self/ns/net")
        .context("reading this process's network namespace (/proc/self/ns/net)")?
        .ino();
    std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
    reap_free_locks(Path::new(LOCK_DIR));
    let mut locks = AgentLocks { held: Vec::new() };
    for (path, what) in [
        (netns_lock_path(netns), "this network namespace"),
        (state_dir.join("straitd.lock"), "this state dir"),
    ] {
        let file = lock(&path, what)?;
        locks.held.push((path, file));
    }
    Ok(locks)
}

/// Locks `path` (created if missing) without waiting, and writes this PID into it.
fn lock(path: &Path, what: &str) -> anyhow::Result<File> {
    let mut busy = 0;
    loop {
        match lock_once(path)? {
            // The holder before may have removed the file between our open and our
            // lock: then what we hold is no one's lock, and the path's new file is the one.
            Some(file) if is_at(&file, path) => return Ok(file),
            Some(_) => {}
            // Another agent starting may be reaping this free file for an instant
            // (`reap_free_locks`); a running agent holds it for good.
            None if busy < 5 => {
                busy += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            None => bail!(
                "another straitd{} already runs for {what}: {} is locked. One agent per \
                 host: stop the other agent, or run this one in another network \
                 namespace with another state dir",
                holder(path).map_or(String::new(), |pid| format!(" (PID {pid})")),
                path.display()
            ),
        }
    }
}

/// The file at `path`, locked and holding this PID; `None` if someone holds it.
fn lock_once(path: &Path) -> anyhow::Result<Option<File>> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening the lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    write_pid(&mut file).with_context(|| format!("writing the PID into {}", path.display()))?;
    Ok(Some(file))
}

/// Whether `file` is (still) the file at `path`.
fn is_at(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(f), Ok(p)) => (f.dev(), f.ino()) == (p.dev(), p.ino()),
        _ => false,
    }
}

/// Removes the namespace locks no agent holds: left by killed agents.
fn reap_free_locks(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("netns-") && name.ends_with(".lock")) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = File::open(&path) else {
            continue;
        };
        // Held while removed, and only if it still is the file at the path.
        if file.try_lock().is_ok() && is_at(&file, &path) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn holder(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
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

    #[test]
    fn free_namespace_locks_are_reaped_and_held_ones_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let held_path = dir.path().join("netns-1.lock");
        let _held = lock(&held_path, "the test").expect("lock");
        let free = dir.path().join("netns-2.lock");
        std::fs::write(&free, "4242\n").expect("write");
        let other = dir.path().join("unrelated");
        std::fs::write(&other, "").expect("write");
        reap_free_locks(dir.path());
        assert!(held_path.exists() && other.exists());
        assert!(!free.exists());
    }

    #[test]
    fn the_locks_files_go_with_the_holder() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("x.lock");
        let locks = AgentLocks {
            held: vec![(path.clone(), lock(&path, "the test").expect("lock"))],
        };
        assert!(path.exists());
        drop(locks);
        assert!(!path.exists());
    }
}
