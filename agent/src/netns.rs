//! Network namespaces: handles on them, and the one safe way to run code inside one.
//!
//! This module owns every `setns(2)` in the agent. The rule it enforces: namespace work
//! runs on a *fresh OS thread* that enters the namespace, does its job and exits. A
//! tokio worker or blocking-pool thread is never moved into another namespace, because
//! such threads are reused: one early return between "enter" and "leave back" would leave
//! a pooled thread (and every task later scheduled on it) in a container's namespace.
//! Here there is no "leave back": the thread simply dies, so no error path can leak it.
//!
//! Most netlink work needs no thread at all: a netlink socket stays bound to the
//! namespace it was created in, so [`crate::netlink::Netlink::open_in`] only uses a
//! thread to create the socket. Threads remain for what has no fd-based API (`/proc/sys`).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The calling thread's own network namespace. `/proc/self` would name the namespace of
/// the process's main thread, which is not the caller's once any thread has moved.
const THREAD_SELF_NETNS: &str = "/proc/thread-self/ns/net";

/// Errors of namespace handling; each names the namespace path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is not a namespace file (expected an nsfs file such as /proc/<pid>/ns/net or a bind mount of one)"
    )]
    NotANamespace { path: PathBuf },
    #[error("enter network namespace {path}: {source}")]
    Enter {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spawn a thread for network namespace {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the thread for network namespace {path} ended without a result")]
    ThreadLost { path: PathBuf },
}

/// An open network namespace: the fd keeps it alive and usable (also after the runtime
/// unmounts its path), and `(dev, inode)` identifies it.
///
/// Cloning is cheap and shares the fd.
#[derive(Debug, Clone)]
pub struct NetNs {
    file: Arc<File>,
    path: PathBuf,
    id: (u64, u64),
}

impl NetNs {
    /// Opens the namespace at `path` (e.g. a runtime's `CNI_NETNS`, `/run/netns/<name>`,
    /// `/proc/<pid>/ns/net`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetnsError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?;
        let meta = file.metadata().map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?;
        // Every namespace file lives on the one internal nsfs mount, so a different
        // device number means this is an ordinary file (a typo'd or stale path that
        // was never bind-mounted). setns() still rejects namespaces of other types.
        let nsfs_dev = std::fs::metadata(THREAD_SELF_NETNS)
            .map_err(|source| NetnsError::Open {
                path: PathBuf::from(THREAD_SELF_NETNS),
                source,
            })?
            .dev();
        if meta.dev() != nsfs_dev {
            return Err(NetnsError::NotANamespace { path });
        }
        Ok(Self {
            file: Arc::new(file),
            id: (meta.dev(), meta.ino()),
            path,
        })
    }

    /// The calling thread's network namespace.
    pub fn current_thread() -> Result<Self, NetnsError> {
        Self::open(THREAD_SELF_NETNS)
    }

    /// The path this handle was opened from (for messages; the fd is what counts).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether both handles name the same namespace.
    pub fn same_as(&self, other: &NetNs) -> bool {
        self.id == other.id
    }

    /// Whether this is the calling thread's namespace.
    pub fn is_current(&self) -> Result<bool, NetnsError> {
        Ok(self.id == current_id()?)
    }

    /// Runs `f` on a fresh OS thread inside this namespace and waits for it, blocking the
    /// caller (on the runtime, use [`NetNs::run_async`]). The thread exits when `f`
    /// returns. A panic in `f` is re-raised here.
    pub fn run<T, F>(&self, f: F) -> Result<T, NetnsError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let handle = self.spawn(f)?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Like [`NetNs::run`] but awaits the thread instead of blocking, for use on the
    /// runtime. A panic in `f` is re-raised in the awaiting task.
    pub async fn run_async<T, F>(&self, f: F) -> Result<T, NetnsError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ns = self.clone();
        // The result (or the panic) travels back through the channel; the thread itself
        // is detached and ends right after sending.
        spawn_named(&self.path, move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                ns.enter_this_thread().map(|()| f())
            }));
            let _ = tx.send(outcome);
        })?;
        match rx.await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // Not expected (both outcomes are sent), but not worth a panic either.
            Err(_) => Err(NetnsError::ThreadLost {
                path: self.path.clone(),
            }),
        }
    }

    fn spawn<T, F>(
        &self,
        f: F,
    ) -> Result<std::thread::JoinHandle<Result<T, NetnsError>>, NetnsError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let ns = self.clone();
        spawn_named(&self.path, move || ns.enter_this_thread().map(|()| f()))
    }

    /// Moves the calling thread into this namespace. Private: only ever called first thing
    /// on a thread this module just spawned and that exits afterwards.
    fn enter_this_thread(&self) -> Result<(), NetnsError> {
        setns_net(self.file.as_fd()).map_err(|source| NetnsError::Enter {
            path: self.path.clone(),
            source,
        })
    }
}

impl AsFd for NetNs {
    /// The namespace fd, e.g. for `IFLA_NET_NS_FD`. Valid as long as `self` lives.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Runs `f` on a fresh OS thread inside the namespace at `path`; see [`NetNs::run`].
pub fn run_in<T, F>(path: impl AsRef<Path>, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    NetNs::open(path)?.run(f)
}

/// Whether `path` names the calling thread's own network namespace. The agent uses it to
/// refuse a `CNI_NETNS` that points at the host: configuring "the container" there would
/// rewrite the host's addresses and default route.
pub fn is_same_as_current(path: impl AsRef<Path>) -> Result<bool, NetnsError> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    Ok((meta.dev(), meta.ino()) == current_id()?)
}

fn current_id() -> Result<(u64, u64), NetnsError> {
    let meta = std::fs::metadata(THREAD_SELF_NETNS).map_err(|source| NetnsError::Open {
        path: PathBuf::from(THREAD_SELF_NETNS),
        source,
    })?;
    Ok((meta.dev(), meta.ino()))
}

fn spawn_named<T, F>(path: &Path, f: F) -> Result<std::thread::JoinHandle<T>, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    std::thread::Builder::new()
        .name("strait-netns".into())
        .spawn(f)
        .map_err(|source| NetnsError::Spawn {
            path: path.to_path_buf(),
            source,
        })
}

/// `setns(fd, CLONE_NEWNET)` for the calling thread.
#[allow(unsafe_code)]
fn setns_net(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns(2) reads only its two integer arguments; `BorrowedFd` guarantees the
    // fd stays open for the duration of the call, and no memory of ours is touched.
    // CLONE_NEWNET makes the kernel refuse any fd that is not a network namespace.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_namespace_is_current() {
        let ns = NetNs::current_thread().expect("open own netns");
        assert!(ns.is_current().expect("compare"));
        assert!(is_same_as_current(THREAD_SELF_NETNS).expect("compare"));
        assert!(ns.same_as(&NetNs::open("/proc/self/ns/net").expect("open")));
    }

    #[test]
    fn ordinary_file_is_not_a_namespace() {
        let err = NetNs::open("/proc/self/status").expect_err("not a netns");
        assert!(matches!(err, NetnsError::NotANamespace { .. }), "{err}");
    }

    #[test]
    fn missing_path_is_an_open_error() {
        let err = NetNs::open("/nonexistent/strait-netns").expect_err("missing");
        assert!(matches!(err, NetnsError::Open { .. }), "{err}");
    }
}
