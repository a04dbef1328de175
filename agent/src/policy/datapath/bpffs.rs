//! The bpf filesystem the policy maps are pinned in. The agent's `--bpf-dir`
//! (default [`DEFAULT_BPF_DIR`]) must be on a bpffs; when it is under `/sys/fs/bpf`
//! and nothing is mounted there, the agent mounts one, as Cilium and Calico do.
//! [`PrivateBpffs`] is a bpffs instance of its own (each mount of bpffs is a
//! separate instance), for a loader that must not share its pins (the fast path
//! without policy) and for tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where the agent pins its policy maps by default.
pub const DEFAULT_BPF_DIR: &str = "/sys/fs/bpf/strait";
const SYS_FS_BPF: &str = "/sys/fs/bpf";

/// The filesystem type of the mount `path` is on, from `/proc/self/mounts`.
fn fs_type_of(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
            Some((point.to_string(), fstype.to_string()))
        })
        .filter(|(point, _)| path.starts_with(point))
        // The last of the longest: a later mount over the same point hides earlier ones.
        .max_by_key(|(point, _)| point.len())
        .map(|(_, fstype)| fstype)
}

fn mount_bpffs(at: &Path) -> Result<(), String> {
    let out = Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(at)
        .output()
        .map_err(|e| format!("running mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount -t bpf bpf {}: {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Makes `dir` a directory on a bpffs: mounts one at `/sys/fs/bpf` when `dir` is
/// below it and nothing is mounted there, then creates `dir`.
pub fn ensure_bpffs(dir: &Path) -> Result<(), String> {
    let on_bpf = |p: &Path| fs_type_of(p).as_deref() == Some("bpf");
    if !on_bpf(dir) {
        let sys = Path::new(SYS_FS_BPF);
        if dir.starts_with(sys) && !on_bpf(sys) {
            mount_bpffs(sys)?;
        }
        if !on_bpf(dir) {
            return Err(format!(
                "{} is not on a bpf filesystem (mount one: mount -t bpf bpf {SYS_FS_BPF})",
                dir.display()
            ));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))
}

/// A bpffs instance mounted on a fresh directory, unmounted and removed on drop
/// (pins in it go; maps and programs they held stay while something uses them).
#[derive(Debug)]
pub struct PrivateBpffs {
    dir: PathBuf,
}

impl PrivateBpffs {
    /// Mounts one below `parent` (which must exist), named `<tag>-<pid>-<n>`.
    pub fn new(parent: &Path, tag: &str) -> Result<Self, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        if let Err(e) = mount_bpffs(&dir) {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
        Ok(Self { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        // Lazy: a descriptor still open on a pin would make a plain umount fail.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
