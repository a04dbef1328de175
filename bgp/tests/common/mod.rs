//! Test support shared by the privileged BGP and BFD tests: two namespaces joined by a
//! veth, a tokio runtime living inside a namespace, and a speaker (listener + session)
//! started on it.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use strait_bgp::session::{Listener, SessionConfig, SessionHandle};
use strait_testbeds::netns::Netns;
use tokio::sync::oneshot;

/// Namespaces `a` and `b` joined by the veth `va`–`vb`, with an IPv4 /30 and an IPv6
/// /64 (no DAD) on each end, both ends up.
pub struct VethPair {
    /// The test's unique name prefix, for anything else it creates.
    pub prefix: String,
    pub a: Netns,
    pub b: Netns,
    pub va: String,
    pub vb: String,
}

impl VethPair {
    /// Names come from the test's unique prefix; leftovers of dead test processes are
    /// reaped first.
    pub fn new(a4: &str, b4: &str, a6: &str, b6: &str) -> Self {
        strait_testbeds::netns::reap_leftovers();
        let prefix = strait_testbeds::unique_prefix();
        let a = Netns::new(format!("{prefix}a"));
        let b = Netns::new(format!("{prefix}b"));
        let (va, vb) = (format!("{prefix}a"), format!("{prefix}b"));
        a.exec_ok(&[
            "ip",
            "link",
            "add",
            &va,
            "type",
            "veth",
            "peer",
            "name",
            &vb,
            "netns",
            b.name(),
        ]);
        for (ns, dev, v4, v6) in [(&a, &va, a4, a6), (&b, &vb, b4, b6)] {
            ns.exec_ok(&["ip", "addr", "add", &format!("{v4}/30"), "dev", dev]);
            ns.exec_ok(&[
                "ip",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
        }
        Self {
            prefix,
            a,
            b,
            va,
            vb,
        }
    }

    /// Keep `va`'s IPv6 address when it goes down (Linux flushes it otherwise): a test
    /// that cuts the link must lose the link, not the configuration. Call before
    /// [`VethPair::up`].
    pub fn keep_addresses_on_down(&self) {
        let key = format!("net.ipv6.conf.{}.keep_addr_on_down=1", self.va);
        self.a.exec_ok(&["sysctl", "-qw", &key]);
    }

    /// Both ends up.
    pub fn up(&self) {
        self.a.exec_ok(&["ip", "link", "set", &self.va, "up"]);
        self.b.exec_ok(&["ip", "link", "set", &self.vb, "up"]);
    }
}

/// A current-thread tokio runtime on an OS thread that entered a namespace: every
/// socket its tasks open lives there. Dropping it stops the runtime and joins the
/// thread, so the sockets close before the namespace is deleted.
pub struct NsRuntime {
    handle: tokio::runtime::Handle,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NsRuntime {
    pub fn start(ns: &Netns) -> Self {
        let path = ns.path();
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            handle_tx.send(rt.handle().clone()).unwrap();
            let _ = rt.block_on(shutdown_rx);
        });
        Self {
            handle: handle_rx.recv().expect("namespace thread started"),
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// Run `f` on the namespace's runtime and wait for its result.
    pub fn run<T: Send + 'static>(&self, f: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = oneshot::channel();
        self.handle.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.blocking_recv().expect("namespace task finished")
    }

    /// A listener on `listen` and a session to `config.peer`, registered with it (with
    /// the session's MD5 key).
    pub fn speaker(&self, listen: SocketAddr, config: SessionConfig) -> (Listener, SessionHandle) {
        self.run(async move {
            let listener = Listener::bind(listen).expect("bind");
            let peer = config.peer;
            let key = config.md5_key.clone();
            let session = SessionHandle::spawn(config);
            listener
                .register(peer, key.as_deref(), session.incoming())
                .expect("register");
            (listener, session)
        })
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        self.shutdown.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
