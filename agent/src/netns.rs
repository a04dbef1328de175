//! Network namespaces: handles on them, and the one safe way to run code inside one.
//!
//! This module owns every `setns(2)` in the agent. The rule it enforces: a tokio worker
//! or blocking-pool thread is never moved into another namespace, because such threads
//! run arbitrary tasks: one early return between "enter" and "leave back" would leave a
//! pooled thread (and every task later scheduled on it) in a container's namespace.
//! Namespace work runs instead on a thread that does nothing else:
//!
//! * [`NetNs::run`] uses a fresh OS thread that enters, does its job and exits; there is
//!   no "leave back", the thread simply dies.
//! * [`NetNs::run_async`] hands the job to the *namespace worker*, one long-lived thread
//!   that runs only such jobs, one at a time. Every job begins by entering its own
//!   namespace (and does not run if that fails), so no job ever runs where a previous
//!   one left the thread. After each job the worker goes back to the agent's namespace,
//!   so it pins no container's namespace between jobs; if it cannot, it exits and the
//!   next job starts a new worker. This saves a thread creation and exit per job, which
//!   a burst of CNI ADDs (one namespace socket each) pays a hundred times over.
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

    /// Like [`NetNs::run`] but runs `f` on the namespace worker (see the module docs)
    /// and awaits it instead of blocking, for use on the runtime. A panic in `f` is
    /// re-raised in the awaiting task.
    ///
    /// `f` must be short and must not block: jobs of all namespaces take turns on the
    /// one worker. Like any namespace job, it must not start threads (they would be born
    /// in the target namespace) nor change other per-thread state.
    pub async fn run_async<T, F>(&self, f: F) -> Result<T, NetnsError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ns = self.clone();
        // The result (or the panic) travels back through the channel.
        worker::submit(
            &self.path,
            Box::new(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    ns.enter_this_thread().map(|()| f())
                }));
                let _ = tx.send(outcome);
            }),
        )?;
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

/// What a path offered as a container's network namespace (`CNI_NETNS`) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A network namespace; `current` when it is the calling thread's own.
    Network { current: bool },
    /// Nothing at that path.
    Missing,
    /// Something that is not a usable network namespace, and why (a phrase that
    /// follows the path: "is a mnt namespace, not a network namespace").
    Unusable(String),
}

/// Looks at `path` as a container's network namespace: there at all, readable by the
/// agent, a namespace file, of the network type, the agent's own or not. Stats before
/// it opens, so a device or a FIFO named by mistake (or malice) is never opened.
pub fn probe(path: impl AsRef<Path>) -> Probe {
    let path = path.as_ref();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return unreadable(&e),
    };
    let nsfs = match std::fs::metadata(THREAD_SELF_NETNS) {
        Ok(m) => m,
        Err(e) => return Probe::Unusable(format!("cannot read the agent's own namespace: {e}")),
    };
    if meta.dev() != nsfs.dev() {
        return Probe::Unusable(
            "is not a namespace file (expected an nsfs file such as /proc/<pid>/ns/net or \
             a bind mount of one)"
                .into(),
        );
    }
    // Opening is what setns(2) will need: for /proc/<pid>/ns/* the kernel checks
    // ptrace access here, and says EACCES when denied.
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return unreadable(&e),
    };
    match namespace_type(file.as_fd()) {
        Ok(libc::CLONE_NEWNET) => {}
        Ok(other) => {
            return Probe::Unusable(format!(
                "is a {} namespace, not a network namespace",
                type_name(other)
            ));
        }
        Err(e) => return Probe::Unusable(format!("cannot tell its namespace type: {e}")),
    }
    match current_id() {
        Ok(id) => Probe::Network {
            current: (meta.dev(), meta.ino()) == id,
        },
        Err(e) => Probe::Unusable(e.to_string()),
    }
}

/// A path the agent could not stat or open: gone, or there but not the agent's to read
/// (which must not read as "does not exist": the container is alive).
fn unreadable(e: &io::Error) -> Probe {
    match e.kind() {
        io::ErrorKind::NotFound => Probe::Missing,
        io::ErrorKind::PermissionDenied => Probe::Unusable(format!(
            "exists but the agent may not open it (permission denied: {e}); a \
             /proc/<pid>/ns/net needs the agent to be allowed to ptrace that process"
        )),
        _ => Probe::Unusable(format!("cannot be opened: {e}")),
    }
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

/// The namespace worker behind [`NetNs::run_async`].
mod worker {
    use std::path::Path;
    use std::sync::Mutex;
    use std::sync::mpsc::{Receiver, Sender, channel};

    use super::{NetNs, NetnsError, spawn_named};

    /// A job: enters its namespace first thing, sends its own result.
    pub(super) type Job = Box<dyn FnOnce() + Send>;

    /// The queue of the running worker; `None` before the first job, or after the
    /// worker exited (it is started again on demand).
    static QUEUE: Mutex<Option<Sender<Job>>> = Mutex::new(None);

    /// Queues `job` for the worker, starting one if none runs.
    pub(super) fn submit(path: &Path, job: Job) -> Result<(), NetnsError> {
        let mut queue = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
        let job = match queue.as_ref() {
            Some(q) => match q.send(job) {
                Ok(()) => return Ok(()),
                // The worker exited (it could not go home): the job comes back to us.
                Err(unsent) => unsent.0,
            },
            None => job,
        };
        // The caller is never a thread inside another namespace (see the module docs),
        // so its namespace is the agent's: the worker's home.
        let home = NetNs::current_thread()?;
        let (tx, rx) = channel();
        spawn_named(path, move || work(&home, rx))?;
        // The receiver lives until the new worker exits, which it only does after
        // taking this job.
        let _ = tx.send(job);
        *queue = Some(tx);
        Ok(())
    }

    fn work(home: &NetNs, jobs: Receiver<Job>) {
        for job in jobs {
            job();
            if let Err(e) = home.enter_this_thread() {
                // Not expected. Exiting drops the queue; the next job starts a new
                // worker, born in the agent's namespace.
                tracing::warn!(error = %e, "namespace worker cannot return to the agent's namespace; exiting");
                return;
            }
        }
    }
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

/// The `CLONE_NEW*` type of the namespace `fd` refers to (ioctl NS_GET_NSTYPE, Linux
/// 4.11). Asked of the fd: a bind mount's path says nothing of its type.
#[allow(unsafe_code)]
fn namespace_type(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: NS_GET_NSTYPE takes no argument and returns the type as the result;
    // `BorrowedFd` keeps the fd open for the call, and no memory of ours is touched.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The name `/proc/<pid>/ns/` gives a namespace type.
fn type_name(kind: libc::c_int) -> String {
    match kind {
        libc::CLONE_NEWNS => "mnt".into(),
        libc::CLONE_NEWUTS => "uts".into(),
        libc::CLONE_NEWIPC => "ipc".into(),
        libc::CLONE_NEWUSER => "user".into(),
        libc::CLONE_NEWPID => "pid".into(),
        libc::CLONE_NEWCGROUP => "cgroup".into(),
        0x80 => "time".into(),
        other => format!("type {other:#x}"),
    }
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
    fn probe_tells_a_network_namespace_from_everything_else() {
        assert_eq!(probe(THREAD_SELF_NETNS), Probe::Network { current: true });
        assert_eq!(probe("/nonexistent/strait/ns"), Probe::Missing);
        let dir = tempfile::tempdir().expect("dir");
        let plain = dir.path().join("netns");
        std::fs::write(&plain, b"").expect("file");
        for not_ns in [plain.as_path(), dir.path(), Path::new("/dev/null")] {
            let Probe::Unusable(why) = probe(not_ns) else {
                panic!("{} taken for a namespace", not_ns.display());
            };
            assert!(why.contains("not a namespace file"), "{why}");
        }
        let Probe::Unusable(why) = probe("/proc/self/ns/mnt") else {
            panic!("a mount namespace taken for a network namespace");
        };
        assert_eq!(why, "is a mnt namespace, not a network namespace");
    }

    #[test]
    fn a_namespace_the_agent_may_not_open_is_not_reported_missing() {
        let denied = io::Error::from_raw_os_error(13);
        let Probe::Unusable(why) = unreadable(&denied) else {
            panic!("EACCES read as missing");
        };
        assert!(why.contains("permission denied"), "{why}");
        assert_eq!(unreadable(&io::Error::from_raw_os_error(2)), Probe::Missing);
    }

    #[tokio::test]
    async fn run_async_returns_the_result_and_re_raises_panics() {
        // The worker enters the namespace for every job: setns(2) needs CAP_SYS_ADMIN,
        // even into the namespace it is already in.
        if !strait_testbeds::require_root("run_async_returns_the_result_and_re_raises_panics") {
            return;
        }
        let own = NetNs::current_thread().expect("open own netns");
        for i in 0..3 {
            let got = own.run_async(move || i * 2).await.expect("run");
            assert_eq!(got, i * 2);
        }
        let ns = own.clone();
        let panicked = tokio::spawn(async move { ns.run_async(|| panic!("job panics")).await });
        assert!(panicked.await.expect_err("re-raised").is_panic());
        // The worker survives a panicking job.
        assert_eq!(own.run_async(|| 7).await.expect("run"), 7);
    }

    /// A namespace of its own, made by a thread that unshares and then exits; the
    /// handle keeps the namespace alive. `None` when not root (a visible skip, or a
    /// failure under `STRAIT_REQUIRE_PRIVILEGED=1`).
    #[allow(unsafe_code)]
    fn private_netns() -> Option<NetNs> {
        if !strait_testbeds::require_root("a private network namespace") {
            return None;
        }
        let made = std::thread::spawn(|| {
            // SAFETY: unshare(2) reads only its flag argument; it moves this thread,
            // which exits right after, into a new network namespace.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", io::Error::last_os_error());
            NetNs::current_thread().expect("open new netns")
        });
        Some(made.join().expect("thread"))
    }

    /// The namespace the thread named `strait-netns` is in, if there is one.
    fn worker_netns() -> Option<(u64, u64)> {
        std::fs::read_dir("/proc/self/task")
            .ok()?
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "strait-netns")
            })
            .find_map(|t| std::fs::metadata(t.path().join("ns/net")).ok())
            .map(|m| (m.dev(), m.ino()))
    }

    #[tokio::test]
    async fn run_async_enters_the_namespace_and_the_worker_goes_home() {
        let Some(other) = private_netns() else {
            return;
        };
        let own = NetNs::current_thread().expect("open own netns");
        assert!(!other.same_as(&own));
        let inside = other
            .run_async(|| NetNs::current_thread().map(|ns| ns.id))
            .await
            .expect("run")
            .expect("open");
        assert_eq!(inside, other.id);
        let back = own
            .run_async(|| NetNs::current_thread().map(|ns| ns.id))
            .await
            .expect("run")
            .expect("open");
        assert_eq!(back, own.id);
        // Between jobs the worker sits in the agent's namespace, pinning no other.
        other.run_async(|| ()).await.expect("run");
        let mut home = false;
        for _ in 0..200 {
            if worker_netns() == Some(own.id) {
                home = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(home, "the namespace worker stayed in the job's namespace");
    }

    #[test]
    fn missing_path_is_an_open_error() {
        let err = NetNs::open("/nonexistent/strait-netns").expect_err("missing");
        assert!(matches!(err, NetnsError::Open { .. }), "{err}");
    }
}
