//! `strait-testbed`: a multi-host strait cluster in network namespaces, to explore by
//! hand (the same [`Cluster`] the scenario tests use).
//!
//! `up` runs in the foreground: it builds the cluster, prints what exists, writes a
//! state file under `/run/strait-testbed/`, and waits; Ctrl-C (or SIGTERM, SIGHUP)
//! tears everything down. While it waits it reaps its agents, etcd and external BGP
//! routers (`--peer bird`) when they exit (no zombies) and serves fault drills on a
//! control socket beside the state file:
//! `stop`, `start` and `restart` of a host's agent or of etcd
//! ([`strait_testbeds::cluster::control`]), rewriting the state file after each. From
//! another shell, `status`, `exec`, the drills and `down` read the state file. `down`
//! asks a live `up` to tear down; if `up` died (SIGKILL, a crash) it removes what the
//! state file records itself: daemons by PID (checked to still be straitd, etcd, bird,
//! bgpd or zebra), namespaces by name, the temp dirs.

use std::net::IpAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use strait_testbeds::cluster::control::{self, Drill, Part, Verb};
use strait_testbeds::cluster::routers::RouterKind;
use strait_testbeds::cluster::{Cluster, ClusterOpts, ClusterStore, Fabric};

const STATE_DIR: &str = "/run/strait-testbed";
/// The cluster ID of the route reflectors when there are several: one cluster, as
/// docs/bgp.md advises (an identifier only, no host has it).
const RR_CLUSTER_ID: &str = "10.0.0.250";

#[derive(Debug, Parser)]
#[command(
    name = "strait-testbed",
    about = "A multi-host strait cluster in network namespaces"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build a test bed and keep it until Ctrl-C (or `strait-testbed down`).
    Up {
        /// What to put on the hosts.
        #[arg(value_enum, default_value_t = Scenario::Mesh)]
        scenario: Scenario,
        /// Number of hosts.
        #[arg(long, default_value_t = 3)]
        hosts: usize,
        /// The agents' fabric.
        #[arg(long, value_enum, default_value_t = FabricArg::Vxlan)]
        fabric: FabricArg,
        /// Add an IPv6 pool: containers get both families.
        #[arg(long)]
        v6: bool,
        /// Hosts on two L2 segments joined by a router (the second half on segment B).
        #[arg(long, conflicts_with = "sites")]
        two_segments: bool,
        /// `--sites 2`: two sites (the second half of the hosts on site B), each with a
        /// router, joined by a dedicated line (device `line` in site A's router); the
        /// agents get `--site site-a|site-b`.
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
        sites: Option<u8>,
        /// With `--sites 2`: the line's rate in Mbit/s (tbf on both ends).
        #[arg(long, requires = "sites")]
        line_rate_mbit: Option<u32>,
        /// Each agent on its own embedded store, without cluster flags (an agent built
        /// before cluster support; implies no fabric).
        #[arg(long)]
        embedded_store: bool,
        /// MTU of the underlay links.
        #[arg(long, default_value_t = 1500)]
        mtu: u32,
        /// With `--fabric bgp`: these hosts are route reflectors (`--bgp-role rr`), the
        /// others their clients (`--rr h1,h2` or `--rr h1 --rr h2`). Without: a full mesh.
        #[arg(long, value_name = "HOST", value_delimiter = ',')]
        rr: Vec<String>,
        /// With `--fabric bgp`: an external BGP router (BIRD or FRR) in its own namespace
        /// on the underlay, an eBGP peer of every node (repeatable: `--peer bird,frr`).
        #[arg(long, value_enum, value_delimiter = ',')]
        peer: Vec<PeerArg>,
        /// `--node-lease-ttl-secs` for the agents.
        #[arg(long)]
        node_lease_ttl_secs: Option<u64>,
        /// The test bed's name: the prefix of its namespaces and state file (default:
        /// a fresh one). 1 to 32 of A-Z a-z 0-9 - _.
        #[arg(long)]
        name: Option<String>,
        /// More flags for every agent, after `--` (`-- --block-reclaim-grace-secs 10`).
        #[arg(last = true)]
        agent_args: Vec<String>,
    },
    /// Stop a host's agent (SIGTERM; nothing is flushed) or etcd, and leave it stopped.
    Stop(PartArgs),
    /// Start a stopped agent or etcd again (same flags and state); waits until ready.
    Start(PartArgs),
    /// Stop and start a host's agent or etcd; waits until ready.
    Restart(PartArgs),
    /// Show the test beds that exist and whether their parts are alive.
    Status,
    /// Run a command in a host's or a container's namespace (`h1`, `c1`, `underlay`,
    /// `router`, `bird`, `frr`). In a host, `STRAIT_SOCKET` is set, so `netctl` talks to
    /// its agent; in a BGP router, `birdc` and `vtysh` talk to its daemon.
    Exec {
        /// Which test bed (its prefix), when there are several.
        #[arg(long)]
        name: Option<String>,
        /// `h1`..`hN`, a container name, `underlay`, `router`, or an external BGP router
        /// (`bird`, `frr`: `birdc`/`vtysh` as the command reach its CLI).
        target: String,
        /// The command, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Tear a test bed down (all of them with --all).
    Down {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

/// Which part of which test bed a drill acts on.
#[derive(Debug, Args)]
struct PartArgs {
    /// Which test bed (its name), when there are several.
    #[arg(long)]
    name: Option<String>,
    /// `h1`..`hN` (that host's agent) or `etcd`.
    part: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// One container per host: c1 on h1, c2 on h2, ...
    Mesh,
    /// Hosts and agents only.
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FabricArg {
    None,
    Vxlan,
    HostGw,
    Bgp,
}

impl From<FabricArg> for Fabric {
    fn from(f: FabricArg) -> Self {
        match f {
            FabricArg::None => Fabric::None,
            FabricArg::Vxlan => Fabric::Vxlan,
            FabricArg::HostGw => Fabric::HostGw,
            FabricArg::Bgp => Fabric::Bgp,
        }
    }
}

/// An external BGP router for `--peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PeerArg {
    /// BIRD 2.
    Bird,
    /// FRR (bgpd and zebra).
    Frr,
}

impl From<PeerArg> for RouterKind {
    fn from(p: PeerArg) -> Self {
        match p {
            PeerArg::Bird => RouterKind::Bird,
            PeerArg::Frr => RouterKind::Frr,
        }
    }
}

/// Checks `--rr` and `--peer` against the rest of `opts` before anything is built, and
/// gives the route reflectors their flags.
fn bgp_options(opts: &mut ClusterOpts, rr: &[String], peers: &[PeerArg]) -> Result<(), String> {
    if (!rr.is_empty() || !peers.is_empty()) && opts.fabric != Fabric::Bgp {
        return Err("--rr and --peer need --fabric bgp".into());
    }
    if !peers.is_empty() && opts.layout() != strait_testbeds::cluster::underlay::Layout::OneSegment
    {
        return Err(
            "--peer needs one segment: hosts on segment B would be multihop eBGP neighbours of the router"
                .into(),
        );
    }
    let mut rr_hosts = vec![];
    for name in rr {
        let i = name
            .strip_prefix('h')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=opts.hosts).contains(n))
            .ok_or_else(|| format!("--rr {name}: no such host (hosts are h1..h{})", opts.hosts))?;
        if !rr_hosts.contains(&(i - 1)) {
            rr_hosts.push(i - 1);
        }
    }
    for &i in &rr_hosts {
        let mut flags = vec!["--bgp-role".to_string(), "rr".to_string()];
        if rr_hosts.len() > 1 {
            flags.extend(["--bgp-cluster-id".to_string(), RR_CLUSTER_ID.to_string()]);
        }
        opts.host_extra.push((i, flags));
    }
    for &p in peers {
        let kind = RouterKind::from(p);
        let missing = kind.missing();
        if !missing.is_empty() {
            return Err(format!(
                "--peer {}: {missing:?} not installed (Debian package {})",
                kind.as_str(),
                kind.binaries().1
            ));
        }
    }
    Ok(())
}

/// What `up` records for the other subcommands.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    prefix: String,
    /// PID of the `up` process that owns the test bed.
    up_pid: u32,
    summary: String,
    dir: PathBuf,
    /// etcd's own temp dir (data and log).
    etcd_dir: Option<PathBuf>,
    etcd_pid: Option<u32>,
    etcd_url: String,
    hosts: Vec<HostState>,
    containers: Vec<ContainerState>,
    underlay_netns: String,
    router_netns: Option<String>,
    /// Every namespace, for teardown.
    namespaces: Vec<String>,
    /// Where `up` takes drills (`stop h1`, ...).
    #[serde(default)]
    control: Option<PathBuf>,
    /// External BGP routers (`--peer`).
    #[serde(default)]
    routers: Vec<RouterState>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RouterState {
    name: String,
    netns: String,
    /// Its processes: (PID, program name).
    pids: Vec<(u32, String)>,
    /// Its CLI with the socket option (`birdc -s SOCKET`).
    cli: Vec<String>,
    /// Its config, sockets and logs (a temp dir).
    dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct HostState {
    name: String,
    netns: String,
    agent_pid: Option<u32>,
    socket: PathBuf,
    log: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct ContainerState {
    name: String,
    host: String,
    netns: String,
    ips: Vec<IpAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !strait_testbeds::require_root("strait-testbed") {
        return ExitCode::from(2);
    }
    let result = match cli.cmd {
        Cmd::Up {
            scenario,
            hosts,
            fabric,
            v6,
            two_segments,
            sites,
            line_rate_mbit,
            embedded_store,
            mtu,
            rr,
            peer,
            node_lease_ttl_secs,
            name,
            agent_args,
        } => {
            if let Some(name) = &name
                && let Err(e) = strait_testbeds::cluster::check_name(name)
            {
                eprintln!("strait-testbed: {e}");
                return ExitCode::from(1);
            }
            let mut opts = ClusterOpts::new(hosts, fabric.into());
            opts.name = name;
            opts.agent_extra = agent_args;
            opts.pools = vec!["10.244.0.0/16".into()];
            if v6 {
                opts.pools.push("fd00:244::/56".into());
            }
            opts.two_segments = two_segments;
            if sites == Some(2) {
                opts.sites = Some(strait_testbeds::cluster::underlay::Line {
                    rate_mbit: line_rate_mbit,
                });
            }
            opts.underlay_mtu = mtu;
            opts.node_lease_ttl_secs = node_lease_ttl_secs;
            if embedded_store {
                opts.store = ClusterStore::Embedded;
                opts.fabric = Fabric::None;
            }
            if let Err(e) = bgp_options(&mut opts, &rr, &peer) {
                eprintln!("strait-testbed: {e}");
                return ExitCode::from(1);
            }
            up(opts, scenario, &peer)
        }
        Cmd::Status => status(),
        Cmd::Exec {
            name,
            target,
            command,
        } => exec(name.as_deref(), &target, &command),
        Cmd::Down { name, all } => down(name.as_deref(), all),
        Cmd::Stop(p) => drill(Verb::Stop, p),
        Cmd::Start(p) => drill(Verb::Start, p),
        Cmd::Restart(p) => drill(Verb::Restart, p),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("strait-testbed: {e}");
            ExitCode::from(1)
        }
    }
}

fn up(opts: ClusterOpts, scenario: Scenario, peers: &[PeerArg]) -> Result<ExitCode, String> {
    if !(1..=99).contains(&opts.hosts) {
        return Err(format!("--hosts must be 1 to 99, not {}", opts.hosts));
    }
    // etcd runs in the underlay also for embedded-store agents: same topology.
    if !strait_testbeds::etcd::require_etcd("strait-testbed") {
        return Ok(ExitCode::from(2));
    }
    // Registered before anything is built: a Ctrl-C during the build is kept and
    // answered (by tearing down) as soon as the build is done. A handler, not a blocked
    // mask, since children inherit the mask and straitd and etcd must see SIGTERM.
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|e| format!("signal handlers: {e}"))?;
    let mut cluster = Cluster::start(opts);
    for &p in peers {
        // An error drops the cluster: everything built so far goes.
        cluster.add_router(p.into())?;
    }
    if scenario == Scenario::Mesh {
        for i in 0..cluster.hosts().len() {
            cluster.add_container(i, &format!("c{}", i + 1));
        }
    }
    std::fs::create_dir_all(STATE_DIR).map_err(|e| format!("{STATE_DIR}: {e}"))?;
    let path = state_path(&cluster.prefix);
    let socket = Path::new(STATE_DIR).join(format!("{}.sock", cluster.prefix));
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    write_state(&cluster, &path, &socket)?;

    print!("{}", cluster.describe());
    let first = cluster.hosts()[0].name.clone();
    let mut fabric_hints = if cluster.opts.fabric == Fabric::Bgp {
        format!(
            "strait-testbed exec {first} -- netctl bgp peers   # its BGP sessions\n  \
             strait-testbed exec {first} -- netctl bgp rib      # and its Loc-RIB\n  "
        )
    } else {
        format!("strait-testbed exec {first} -- bridge fdb show dev strait.vxlan\n  ")
    };
    for r in cluster.routers() {
        let show = match r.kind {
            RouterKind::Bird => "birdc show protocols",
            RouterKind::Frr => "vtysh -c 'show bgp summary'",
        };
        fabric_hints.push_str(&format!(
            "strait-testbed exec {} -- {show}   # or: {} ...\n  ",
            r.name,
            r.cli().join(" ")
        ));
    }
    println!(
        "\nExplore from another shell:\n  \
         strait-testbed status\n  \
         strait-testbed exec {first} -- netctl status      # the agent of {first}\n  \
         strait-testbed exec {first} -- ip route            # its routes\n  \
         {fabric_hints}\
         strait-testbed exec c1 -- ping -c3 <address of c2>\n  \
         strait-testbed stop {first}                        # and start, restart; also etcd\n  \
         strait-testbed down                            # or Ctrl-C here\n\
         State file: {}\nRunning until Ctrl-C.",
        path.display()
    );
    let sig = serve(&mut cluster, &mut signals, listener, &path, &socket);
    println!("signal {sig}: tearing down {}", cluster.prefix);
    drop(cluster);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&socket);
    println!("removed");
    Ok(ExitCode::SUCCESS)
}

/// What `up` waits for.
enum Event {
    Signal(i32),
    Drill(Drill, UnixStream),
}

/// Until a signal comes: answer drills, and reap agents and etcd that exit. Returns
/// the signal.
fn serve(
    cluster: &mut Cluster,
    signals: &mut Signals,
    listener: UnixListener,
    path: &Path,
    socket: &Path,
) -> i32 {
    let (tx, rx) = mpsc::channel();
    let handle = signals.handle();
    let mut forever = signals.forever();
    std::thread::scope(|scope| {
        let signal_tx = tx.clone();
        scope.spawn(move || {
            let sig = forever.next().unwrap_or(SIGTERM);
            let _ = signal_tx.send(Event::Signal(sig));
        });
        // Detached: it blocks in accept() until the process exits.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                match control::read_request(&stream) {
                    Ok(d) => {
                        if tx.send(Event::Drill(d, stream)).is_err() {
                            return;
                        }
                    }
                    Err(e) => control::answer(stream, &Err(e)),
                }
            }
        });
        let mut exited = vec![];
        let sig = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Event::Signal(sig)) => break sig,
                Ok(Event::Drill(d, stream)) => {
                    println!("drill: {d}");
                    let result = cluster.drill(&d);
                    if let Err(e) = write_state(cluster, path, socket) {
                        eprintln!("strait-testbed: {e}");
                    }
                    println!("  {}", result.as_ref().unwrap_or_else(|e| e));
                    control::answer(stream, &result);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now = cluster.reap_exited();
                    if now != exited {
                        // The PID stays recorded; `status` sees it is gone.
                        if !now.is_empty() {
                            println!("exited: {} (see `strait-testbed status`)", now.join(" "));
                        }
                        exited = now;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break SIGTERM,
            }
        };
        handle.close();
        sig
    })
}

/// Writes the state file the other subcommands read (again after each drill: PIDs
/// change).
fn write_state(cluster: &Cluster, path: &Path, socket: &Path) -> Result<(), String> {
    let mut state = record(cluster);
    state.control = Some(socket.to_path_buf());
    let text = serde_json::to_string_pretty(&state).expect("state JSON");
    // Whole or not at all: `status` may read it meanwhile.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `stop|start|restart PART`: sent to the `up` that owns the test bed.
fn drill(verb: Verb, p: PartArgs) -> Result<ExitCode, String> {
    let s = load_one(p.name.as_deref())?;
    let socket = s
        .control
        .as_ref()
        .filter(|_| running(s.up_pid))
        .ok_or_else(|| format!("{}: its `up` is gone; only `down` works", s.prefix))?;
    let d = Drill {
        verb,
        part: Part::parse(&p.part),
    };
    let answer = control::send(socket, &d)?;
    println!("{answer}");
    Ok(ExitCode::SUCCESS)
}

fn record(cluster: &Cluster) -> State {
    State {
        prefix: cluster.prefix.clone(),
        up_pid: std::process::id(),
        summary: cluster.describe(),
        dir: cluster.dir(),
        etcd_dir: cluster.etcd().log_path().parent().map(Path::to_path_buf),
        etcd_pid: cluster.etcd().pid(),
        etcd_url: cluster.etcd().client_url(),
        hosts: cluster
            .hosts()
            .iter()
            .map(|h| HostState {
                name: h.name.clone(),
                netns: h.ns.name().to_string(),
                agent_pid: h.agent.pid(),
                socket: h.agent.socket.clone(),
                log: h.agent.log_path.clone(),
            })
            .collect(),
        containers: cluster
            .containers()
            .iter()
            .map(|c| ContainerState {
                name: c.name.clone(),
                host: cluster.host(c.host).name.clone(),
                netns: c.ns.name().to_string(),
                ips: c.ips(),
            })
            .collect(),
        underlay_netns: cluster.underlay().ns.name().to_string(),
        router_netns: cluster
            .underlay()
            .router
            .as_ref()
            .map(|r| r.name().to_string()),
        namespaces: cluster.namespaces(),
        control: None,
        routers: cluster
            .routers()
            .iter()
            .map(|r| RouterState {
                name: r.name.clone(),
                netns: r.netns.clone(),
                pids: r
                    .pids()
                    .into_iter()
                    .map(|(pid, what)| (pid, what.to_string()))
                    .collect(),
                cli: r.cli(),
                dir: r.runtime_dir(),
            })
            .collect(),
    }
}

fn state_path(prefix: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{prefix}.json"))
}

fn load_all() -> Vec<State> {
    let Ok(dir) = std::fs::read_dir(STATE_DIR) else {
        return vec![];
    };
    let mut all: Vec<State> = dir
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            serde_json::from_str(&text).ok()
        })
        .collect();
    all.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    all
}

/// The one test bed meant: by name, or the only one.
fn load_one(name: Option<&str>) -> Result<State, String> {
    let mut all = load_all();
    match name {
        Some(n) => all
            .into_iter()
            .find(|s| s.prefix == n)
            .ok_or_else(|| format!("no test bed {n} (see `strait-testbed status`)")),
        None if all.len() == 1 => Ok(all.remove(0)),
        None if all.is_empty() => Err("no test bed is up".into()),
        None => Err(format!(
            "{} test beds are up; say which with --name ({})",
            all.len(),
            all.iter()
                .map(|s| s.prefix.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Whether `pid` runs: it exists and is no zombie (an exited child nobody reaped yet).
fn alive(pid: Option<u32>) -> bool {
    pid.is_some_and(running)
}

/// A daemon's state as `status` prints it: `running`, `down (stopped)` (by `stop`, no
/// PID recorded), `down (exited)` (its PID is gone or a zombie).
fn state_word(pid: Option<u32>) -> &'static str {
    match pid {
        None => "down (stopped)",
        Some(p) if running(p) => "running",
        Some(_) => "down (exited)",
    }
}

fn status() -> Result<ExitCode, String> {
    let all = load_all();
    if all.is_empty() {
        println!("no test bed is up");
    }
    for s in &all {
        print!("{}", s.summary);
        let routers: String = s
            .routers
            .iter()
            .map(|r| {
                // One word for all its processes: FRR is down when zebra or bgpd is.
                let word = r
                    .pids
                    .iter()
                    .map(|(pid, _)| state_word(Some(*pid)))
                    .find(|w| *w != "running")
                    .unwrap_or("running");
                format!("; {} {word}", r.name)
            })
            .collect();
        println!(
            "  up pid {} {}; etcd {}; agents: {}{routers}",
            s.up_pid,
            if alive(Some(s.up_pid)) {
                "running"
            } else {
                "GONE (use `down` to clean up)"
            },
            state_word(s.etcd_pid),
            s.hosts
                .iter()
                .map(|h| format!("{} {}", h.name, state_word(h.agent_pid)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn exec(name: Option<&str>, target: &str, command: &[String]) -> Result<ExitCode, String> {
    let s = load_one(name)?;
    let mut socket = None;
    let mut command = command.to_vec();
    let netns = if let Some(h) = s.hosts.iter().find(|h| h.name == target) {
        socket = Some(h.socket.clone());
        h.netns.clone()
    } else if let Some(c) = s.containers.iter().find(|c| c.name == target) {
        c.netns.clone()
    } else if target == "underlay" {
        s.underlay_netns.clone()
    } else if target == "router" {
        s.router_netns
            .clone()
            .ok_or("this test bed has one segment and no router")?
    } else if let Some(r) = s.routers.iter().find(|r| r.name == target) {
        // Its CLI reaches this router's daemon, not a default socket.
        if let Some((program, options)) = r.cli.split_first()
            && command.first() == Some(program)
        {
            command.splice(1..1, options.iter().cloned());
        }
        r.netns.clone()
    } else {
        return Err(format!(
            "no host or container {target} in {} (hosts: {}; containers: {}{})",
            s.prefix,
            s.hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            s.containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            s.routers
                .iter()
                .map(|r| format!("; router {}", r.name))
                .collect::<String>()
        ));
    };
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &netns]).args(&command);
    if let Some(sock) = socket {
        cmd.env("STRAIT_SOCKET", sock);
    }
    // The workspace's binaries (netctl) by name, beside this one.
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", dir.display()));
    }
    let status = cmd.status().map_err(|e| format!("ip netns exec: {e}"))?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

fn down(name: Option<&str>, all: bool) -> Result<ExitCode, String> {
    let targets = if all {
        load_all()
    } else {
        vec![load_one(name)?]
    };
    let mut failures = vec![];
    for s in targets {
        if let Err(e) = down_one(&s) {
            failures.push(format!("{}: {e}", s.prefix));
        }
    }
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(failures.join("; "))
    }
}

fn down_one(s: &State) -> Result<(), String> {
    let path = state_path(&s.prefix);
    // A live `up` owns the test bed: ask it, and it tears down in order.
    if alive(Some(s.up_pid)) && is_ours(s.up_pid, "strait-testbed") {
        println!("{}: asking up (pid {}) to tear down", s.prefix, s.up_pid);
        signal(s.up_pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while alive(Some(s.up_pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if !alive(Some(s.up_pid)) && !path.exists() {
            println!("{}: removed", s.prefix);
            return Ok(());
        }
    }
    // `up` is gone: remove what it recorded. Keep going past failures, report all.
    println!("{}: up is gone, removing what it left", s.prefix);
    let mut problems = vec![];
    let mut killed = vec![];
    let pids = s
        .hosts
        .iter()
        .map(|h| (h.agent_pid, "straitd"))
        .chain(std::iter::once((s.etcd_pid, "etcd")))
        .chain(
            s.routers
                .iter()
                .flat_map(|r| r.pids.iter().map(|(pid, what)| (Some(*pid), what.as_str()))),
        );
    for (pid, what) in pids {
        if let Some(pid) = pid
            && alive(Some(pid))
            && is_ours(pid, what)
        {
            signal(pid, Signal::SIGKILL);
            killed.push(pid);
        }
    }
    // Dead, not dying: a daemon still writing would refill the dirs removed below.
    let deadline = Instant::now() + Duration::from_secs(10);
    while killed.iter().any(|&p| running(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for ns in &s.namespaces {
        if Path::new("/run/netns").join(ns).exists() {
            let out = Command::new("ip").args(["netns", "del", ns]).output();
            if !out.is_ok_and(|o| o.status.success()) {
                problems.push(format!("netns {ns} not deleted"));
            }
        }
    }
    // The agents' pinned policy maps, one directory per host namespace on the test
    // beds' bpffs (`testbeds::agent::test_bpffs`).
    for ns in &s.namespaces {
        let pins = Path::new("/run/strait-test-bpffs").join(ns);
        if pins.exists() && std::fs::remove_dir_all(&pins).is_err() {
            problems.push(format!("pinned maps {} not removed", pins.display()));
        }
        // And each agent's service cgroup (`testbeds::agent::Agent::service_cgroup`):
        // empty once its agent and clients are dead; its programs go with it.
        let cgroup = Path::new("/run/strait-test-cgroup2").join(ns);
        if cgroup.exists() && std::fs::remove_dir(&cgroup).is_err() {
            problems.push(format!("service cgroup {} not removed", cgroup.display()));
        }
    }
    // Only ever a temp dir: a corrupt state file must not make us delete elsewhere.
    let dirs = std::iter::once(&s.dir)
        .chain(s.etcd_dir.as_ref())
        .chain(s.routers.iter().map(|r| &r.dir));
    for dir in dirs {
        if dir.starts_with(std::env::temp_dir())
            && dir.exists()
            && let Err(e) = std::fs::remove_dir_all(dir)
        {
            problems.push(format!("{}: {e}", dir.display()));
        }
    }
    let _ = std::fs::remove_file(&path);
    if let Some(socket) = s.control.as_ref().filter(|p| p.starts_with(STATE_DIR)) {
        let _ = std::fs::remove_file(socket);
    }
    if problems.is_empty() {
        println!("{}: removed", s.prefix);
        Ok(())
    } else {
        Err(problems.join(", "))
    }
}

/// Whether `pid` exists and is not a zombie (a zombie holds no files any more).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            st.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// Whether `pid` still runs a program whose command line names `what` (a PID may have
/// been reused since the state file was written).
fn is_ours(pid: u32, what: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(what))
        .unwrap_or(false)
}

fn signal(pid: u32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rr_and_peer_are_checked_before_anything_is_built() {
        let rr = |names: &[&str]| -> Vec<String> { names.iter().map(|n| n.to_string()).collect() };
        let mut opts = ClusterOpts::new(3, Fabric::Bgp);
        bgp_options(&mut opts, &rr(&["h2"]), &[]).unwrap();
        assert_eq!(opts.host_extra, [(1, rr(&["--bgp-role", "rr"]))]);

        // Several RRs share a cluster ID; a host named twice is one RR.
        let mut opts = ClusterOpts::new(3, Fabric::Bgp);
        bgp_options(&mut opts, &rr(&["h1", "h3", "h1"]), &[]).unwrap();
        let flags = rr(&["--bgp-role", "rr", "--bgp-cluster-id", RR_CLUSTER_ID]);
        assert_eq!(opts.host_extra, [(0, flags.clone()), (2, flags)]);

        for bad in ["h4", "h0", "1", "rr"] {
            let mut opts = ClusterOpts::new(3, Fabric::Bgp);
            let err = bgp_options(&mut opts, &rr(&[bad]), &[]).unwrap_err();
            assert!(
                err.contains("no such host") && err.contains("h1..h3"),
                "{err}"
            );
            assert!(opts.host_extra.is_empty());
        }
        let mut opts = ClusterOpts::new(2, Fabric::Vxlan);
        let err = bgp_options(&mut opts, &[], &[PeerArg::Bird]).unwrap_err();
        assert!(err.contains("--fabric bgp"), "{err}");
        let err = bgp_options(&mut opts, &rr(&["h1"]), &[]).unwrap_err();
        assert!(err.contains("--fabric bgp"), "{err}");
        let mut opts = ClusterOpts::new(2, Fabric::Bgp);
        opts.two_segments = true;
        let err = bgp_options(&mut opts, &[], &[PeerArg::Frr]).unwrap_err();
        assert!(err.contains("one segment"), "{err}");
    }

    #[test]
    fn a_zombie_is_not_alive() {
        // `true` exits at once; unreaped, it stays a zombie with a /proc entry.
        let mut zombie = Command::new("true").spawn().expect("spawn true");
        let pid = zombie.id();
        strait_testbeds::wait_until(
            "true to exit",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
                    st.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
            },
        )
        .unwrap();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        assert!(!alive(Some(pid)), "a zombie is dead");
        assert_eq!(state_word(Some(pid)), "down (exited)");
        zombie.wait().expect("reap");
        assert!(!alive(Some(pid)));

        let mut sleeper = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        assert!(alive(Some(sleeper.id())));
        assert_eq!(state_word(Some(sleeper.id())), "running");
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        assert!(!alive(None));
        assert_eq!(state_word(None), "down (stopped)");
    }
}
