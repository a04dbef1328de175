//! Test support shared by the privileged BGP and BFD tests: two namespaces joined by a
//! veth, a hub namespace with a veth to each of several leaves, a tokio runtime living
//! inside a namespace, a session (listener + session) or a whole speaker started on it,
//! and a view of a speaker's FIB stream.

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

/// A hub namespace joined to `n` leaf namespaces, one veth per leaf. Link `i` (from 1)
/// is `10.0.i.1/30` + `fd00:i::1/64` on the hub and `10.0.i.2/30` + `fd00:i::2/64` on
/// the leaf; every end is up, IPv6 without DAD, addresses kept when a link goes down.
pub struct Star {
    pub prefix: String,
    pub hub: Netns,
    pub leaves: Vec<Netns>,
    /// The hub's end of link `i` is `hub_ifs[i - 1]`.
    pub hub_ifs: Vec<String>,
}

impl Star {
    pub fn new(n: usize) -> Self {
        strait_testbeds::netns::reap_leftovers();
        let prefix = strait_testbeds::unique_prefix();
        let hub = Netns::new(format!("{prefix}h"));
        let mut leaves = Vec::new();
        let mut hub_ifs = Vec::new();
        for i in 1..=n {
            let leaf = Netns::new(format!("{prefix}l{i}"));
            let (h, l) = (format!("{prefix}h{i}"), format!("{prefix}l{i}"));
            hub.exec_ok(&[
                "ip",
                "link",
                "add",
                &h,
                "type",
                "veth",
                "peer",
                "name",
                &l,
                "netns",
                leaf.name(),
            ]);
            for (ns, dev, end) in [(&hub, &h, 1), (&leaf, &l, 2)] {
                let keep = format!("net.ipv6.conf.{dev}.keep_addr_on_down=1");
                ns.exec_ok(&["sysctl", "-qw", &keep]);
                ns.exec_ok(&[
                    "ip",
                    "addr",
                    "add",
                    &format!("10.0.{i}.{end}/30"),
                    "dev",
                    dev,
                ]);
                ns.exec_ok(&[
                    "ip",
                    "addr",
                    "add",
                    &format!("fd00:{i}::{end}/64"),
                    "dev",
                    dev,
                    "nodad",
                ]);
                ns.exec_ok(&["ip", "link", "set", dev, "up"]);
            }
            leaves.push(leaf);
            hub_ifs.push(h);
        }
        Self {
            prefix,
            hub,
            leaves,
            hub_ifs,
        }
    }

    /// The hub's IPv4 address on link `i`.
    pub fn hub_v4(i: usize) -> std::net::IpAddr {
        format!("10.0.{i}.1").parse().unwrap()
    }

    /// Leaf `i`'s IPv4 address.
    pub fn leaf_v4(i: usize) -> std::net::IpAddr {
        format!("10.0.{i}.2").parse().unwrap()
    }

    /// Leaf `i`'s IPv6 address.
    pub fn leaf_v6(i: usize) -> std::net::Ipv6Addr {
        format!("fd00:{i}::2").parse().unwrap()
    }
}

/// What a speaker's FIB stream has said so far: the next hops per prefix (a prefix
/// whose last change was empty is absent) and whether Converged came.
#[derive(Debug, Default, Clone)]
pub struct FibView {
    pub routes: std::collections::HashMap<ipnet::IpNet, Vec<strait_bgp::codec::NextHop>>,
    pub converged: bool,
    /// Every change in order, for tests that care what happened on the way.
    pub history: Vec<strait_bgp::rib::FibChange>,
}

impl FibView {
    pub fn apply(&mut self, ev: strait_bgp::speaker::FibEvent) {
        match ev {
            strait_bgp::speaker::FibEvent::Converged => {
                assert!(!self.converged, "Converged came twice");
                self.converged = true;
            }
            strait_bgp::speaker::FibEvent::Changes(cs) => {
                for c in cs {
                    if c.next_hops.is_empty() {
                        self.routes.remove(&c.prefix);
                    } else {
                        self.routes.insert(c.prefix, c.next_hops.clone());
                    }
                    self.history.push(c);
                }
            }
        }
    }
}

/// A speaker running in a namespace. The speaker goes first on drop (Cease to its
/// peers), then the runtime.
pub struct SpeakerNode {
    pub speaker: Option<strait_bgp::speaker::Speaker>,
    pub fib: tokio::sync::mpsc::Receiver<strait_bgp::speaker::FibEvent>,
    pub view: FibView,
    pub rt: Option<NsRuntime>,
}

/// Log to the test's output when RUST_LOG is set (e.g. `RUST_LOG=strait_bgp=debug`).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

impl SpeakerNode {
    pub fn start(ns: &Netns, config: strait_bgp::speaker::SpeakerConfig) -> Self {
        init_logs();
        let rt = NsRuntime::start(ns);
        // A speaker started where a `crash()`ed one listened: once in a CI run under
        // load the port was still taken at the first try, though the crashed runtime's
        // thread had been joined (cause not found; a process that dies frees it for
        // sure). Wait for it, bounded, and say so, rather than fail on the harness.
        let mut tries = 0;
        let (speaker, fib) = loop {
            let config = config.clone();
            let started = rt.run(async move {
                strait_bgp::speaker::Speaker::start(config, Box::new(strait_bgp::rib::AcceptAll))
                    .await
            });
            match started {
                Err(strait_bgp::speaker::SpeakerError::Listen { addr, source })
                    if source.kind() == std::io::ErrorKind::AddrInUse && tries < 50 =>
                {
                    tries += 1;
                    eprintln!("speaker start: {addr} still in use, retry {tries}");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                other => break other.expect("speaker starts"),
            }
        };
        Self {
            speaker: Some(speaker),
            fib,
            view: FibView::default(),
            rt: Some(rt),
        }
    }

    pub fn speaker(&self) -> &strait_bgp::speaker::Speaker {
        self.speaker.as_ref().expect("speaker running")
    }

    /// Read the FIB stream until `done` holds for the view; false when `limit` passed
    /// first (a bound for a failing test, not a measurement).
    pub async fn wait_fib(
        &mut self,
        limit: std::time::Duration,
        done: impl Fn(&FibView) -> bool,
    ) -> bool {
        let end = tokio::time::Instant::now() + limit;
        while !done(&self.view) {
            match tokio::time::timeout_at(end, self.fib.recv()).await {
                Ok(Some(ev)) => self.view.apply(ev),
                Ok(None) | Err(_) => return false,
            }
        }
        true
    }

    /// Poll the peer status until `done` holds for it.
    pub async fn wait_peers(
        &self,
        limit: std::time::Duration,
        done: impl Fn(&[strait_bgp::speaker::PeerStatus]) -> bool,
    ) -> Vec<strait_bgp::speaker::PeerStatus> {
        let end = tokio::time::Instant::now() + limit;
        loop {
            let peers = self.speaker().peers().await;
            if done(&peers) || tokio::time::Instant::now() >= end {
                return peers;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Kill the speaker as a crash would: its runtime stops, its sockets close, and no
    /// NOTIFICATION goes out.
    pub fn crash(&mut self) {
        self.rt.take();
        self.speaker.take();
    }
}

impl Drop for SpeakerNode {
    fn drop(&mut self) {
        if let (Some(speaker), Some(rt)) = (self.speaker.take(), self.rt.as_ref()) {
            rt.run(async move { speaker.shutdown().await });
        }
        self.rt.take();
    }
}
