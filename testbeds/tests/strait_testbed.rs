//! The `strait-testbed` tool as a user drives it (root and etcd): `up` with a name and
//! an extra agent flag, the fault drills (`stop`, `start` of a host's agent and of
//! etcd), `status` after each and after an agent killed from outside, and `down`; the
//! bgp fabric with a route reflector and BIRD as an external peer (BIRD needed too).
//! One bed at a time (a lock): the machine is shared.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use strait_api::bgp::{BgpPeerStatus, PeerKind};
use strait_testbeds::cluster::underlay::{PEER_BASE, Segment};
use strait_testbeds::wait_until;

const BIN: &str = env!("CARGO_BIN_EXE_strait-testbed");
const STATE_DIR: &str = "/run/strait-testbed";
/// A cluster of two hosts comes up well within this, even on a busy machine.
const UP: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(200);
/// How long BGP sessions and routes may take to come up.
const CONVERGE: Duration = Duration::from_secs(60);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// `strait-testbed ARGS`: (success, stdout + stderr).
fn tb(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run strait-testbed");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `tb`, which must succeed.
fn tb_ok(args: &[&str]) -> String {
    let (ok, out) = tb(args);
    assert!(ok, "strait-testbed {args:?} failed: {out}");
    out
}

/// The `status` line of test bed `name`'s parts (the line after its summary).
fn status_of(name: &str) -> String {
    let out = tb_ok(&["status"]);
    let mut mine = false;
    for line in out.lines() {
        if line.starts_with(&format!("testbed {name}:")) {
            mine = true;
        }
        if mine && line.trim_start().starts_with("up pid") {
            return line.to_string();
        }
    }
    panic!("no status of {name} in:\n{out}")
}

/// A running `strait-testbed up`; torn down on drop (also on panic), its output
/// printed when the test fails.
struct Up {
    name: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Up {
    fn start(name: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("up.log");
        let file = std::fs::File::create(&log).expect("log");
        let child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .expect("spawn strait-testbed up");
        Self {
            name: name.into(),
            child,
            log,
            _dir: dir,
        }
    }

    fn state_file(&self) -> PathBuf {
        Path::new(STATE_DIR).join(format!("{}.json", self.name))
    }

    fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.state_file()).expect("state file");
        serde_json::from_str(&text).expect("state JSON")
    }

    fn agent_pid(&self, host: usize) -> Option<u32> {
        self.state()["hosts"][host]["agent_pid"]
            .as_u64()
            .map(|p| p as u32)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        // Also after `up` was killed: its daemons and namespaces are still there.
        if matches!(self.child.try_wait(), Ok(None)) || self.state_file().exists() {
            let _ = tb(&["down", "--name", &self.name]);
        }
        // Our own child, by PID, if `down` could not end it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- strait-testbed up -----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

#[test]
fn named_bed_with_agent_flags_fault_drills_status_and_down() {
    let _serial = serial();
    if !strait_testbeds::require_root("strait-testbed")
        || !strait_testbeds::etcd::require_etcd("strait-testbed")
    {
        return;
    }
    strait_testbeds::bins::bin("straitd");
    let name = strait_testbeds::unique_prefix();
    let mut up = Up::start(
        &name,
        &[
            "up",
            "empty",
            "--hosts",
            "2",
            "--name",
            &name,
            "--",
            "--block-reclaim-grace-secs",
            "7",
        ],
    );
    wait_until("the state file of up", UP, POLL, || {
        if let Ok(Some(status)) = up.child.try_wait() {
            panic!("strait-testbed up exited with {status}");
        }
        up.state_file().exists()
    })
    .unwrap();

    // --name names the namespaces; the extra flag reached every agent.
    for ns in [format!("{name}u"), format!("{name}h1"), format!("{name}h2")] {
        assert!(
            Path::new("/run/netns").join(&ns).exists(),
            "no namespace {ns}"
        );
    }
    for host in 0..2 {
        let pid = up.agent_pid(host).expect("agent PID");
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let i = args
            .iter()
            .position(|a| a == "--block-reclaim-grace-secs")
            .unwrap_or_else(|| panic!("h{} runs without the flag: {args:?}", host + 1));
        assert_eq!(args[i + 1], "7");
    }

    // The underlay bridge keeps its MAC as ports join (a host's ARP entry for etcd
    // stays right), even a port with a lower MAC than the bridge's.
    let bridge_mac = || {
        let out = Command::new("ip")
            .args(["-n", &format!("{name}u"), "-j", "link", "show", "br-a"])
            .output()
            .expect("ip link");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j");
        v[0]["address"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(bridge_mac(), Segment::A.bridge_mac());
    let ns = format!("{name}u");
    for argv in [
        vec![
            "link", "add", "stlow0", "type", "veth", "peer", "name", "stlow1",
        ],
        vec!["link", "set", "stlow0", "address", "02:00:00:00:00:01"],
        vec!["link", "set", "stlow0", "master", "br-a", "up"],
    ] {
        let ok = Command::new("ip")
            .args(["-n", &ns])
            .args(&argv)
            .status()
            .expect("ip")
            .success();
        assert!(ok, "ip {argv:?}");
    }
    assert_eq!(
        bridge_mac(),
        Segment::A.bridge_mac(),
        "a port changed the bridge's MAC"
    );

    let status = status_of(&name);
    assert!(status.contains("etcd running"), "{status}");
    assert!(
        status.contains("h1 running") && status.contains("h2 running"),
        "{status}"
    );

    // stop h1: down, and says it was stopped; start h1: running again, a new PID.
    let before = up.agent_pid(0);
    tb_ok(&["stop", "--name", &name, "h1"]);
    let status = status_of(&name);
    assert!(status.contains("h1 down (stopped)"), "{status}");
    assert!(status.contains("h2 running"), "{status}");
    assert!(
        before.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()),
        "reaped"
    );
    tb_ok(&["start", "--name", &name, "h1"]);
    let status = status_of(&name);
    assert!(status.contains("h1 running"), "{status}");
    assert_ne!(up.agent_pid(0), before);
    // Starting what runs is refused, and changes nothing.
    let (ok, out) = tb(&["start", "--name", &name, "h1"]);
    assert!(!ok && out.contains("runs already"), "{out}");
    let (ok, out) = tb(&["stop", "--name", &name, "h9"]);
    assert!(!ok && out.contains("no host h9"), "{out}");

    // An agent killed from outside is down, not a zombie counted as running.
    let h2 = up.agent_pid(1).expect("h2's PID");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h2 as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill h2's agent");
    wait_until(
        "status shows h2 down",
        Duration::from_secs(10),
        POLL,
        || {
            let status = status_of(&name);
            if status.contains("h2 down (exited)") {
                Ok(())
            } else {
                Err(status)
            }
        },
    )
    .unwrap();

    // etcd: stop, down; start, running.
    tb_ok(&["stop", "--name", &name, "etcd"]);
    let status = status_of(&name);
    assert!(status.contains("etcd down (stopped)"), "{status}");
    tb_ok(&["start", "--name", &name, "etcd"]);
    assert!(status_of(&name).contains("etcd running"));

    // down: up exits, and nothing of the bed is left.
    tb_ok(&["down", "--name", &name]);
    wait_until("up to exit", Duration::from_secs(60), POLL, || {
        matches!(up.child.try_wait(), Ok(Some(_)))
    })
    .unwrap();
    assert!(!up.state_file().exists());
    assert!(!Path::new(STATE_DIR).join(format!("{name}.sock")).exists());
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&name))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
}

/// The namespaces whose name starts with `name`.
fn namespaces_of(name: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(name))
        .collect()
}

/// `exec HOST -- netctl -o json bgp peers`: (exit status ok, the sessions).
fn bgp_peers(name: &str, host: &str) -> Result<(bool, Vec<BgpPeerStatus>), String> {
    let out = Command::new(BIN)
        .args(["exec", "--name", name, host, "--"])
        .args(["netctl", "-o", "json", "bgp", "peers"])
        .output()
        .expect("run strait-testbed exec");
    serde_json::from_slice(&out.stdout)
        .map(|p| (out.status.success(), p))
        .map_err(|e| {
            format!(
                "{e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// Root, etcd and BIRD: what a bgp bed with a BIRD peer needs (a visible skip else).
fn can_run_a_bird_bed(test: &str) -> bool {
    strait_testbeds::require_root(test)
        && strait_testbeds::etcd::require_etcd(test)
        && strait_testbeds::peers::require(
            test,
            &[("bird", "--version"), ("birdc", "--version")],
            "bird2",
        )
}

#[test]
fn bgp_bed_with_a_route_reflector_and_bird_peer() {
    let _serial = serial();
    let test = "bgp_bed_with_a_route_reflector_and_bird_peer";
    if !can_run_a_bird_bed(test) {
        return;
    }
    strait_testbeds::bins::bin("straitd");
    let name = strait_testbeds::unique_prefix();

    // Bad BGP options are refused before anything is built.
    for (args, why) in [
        (
            vec!["--fabric", "bgp", "--rr", "h3"],
            "--rr h3: no such host",
        ),
        (vec!["--rr", "h1"], "need --fabric bgp"),
        (vec!["--peer", "bird"], "need --fabric bgp"),
    ] {
        let mut argv = vec!["up", "--hosts", "2", "--name", &name];
        argv.extend(args);
        let (ok, out) = tb(&argv);
        assert!(!ok && out.contains(why), "{argv:?}: {out}");
        assert!(namespaces_of(&name).is_empty(), "{argv:?} built something");
    }

    let mut up = Up::start(
        &name,
        &[
            "up", "mesh", "--hosts", "2", "--fabric", "bgp", "--rr", "h1", "--peer", "bird",
            "--name", &name,
        ],
    );
    wait_until("the state file of up", UP, POLL, || {
        if let Ok(Some(status)) = up.child.try_wait() {
            panic!("strait-testbed up exited with {status}");
        }
        up.state_file().exists()
    })
    .unwrap();
    let bird = IpAddr::V4(Segment::A.v4(PEER_BASE + 1));
    let (h1, h2) = (IpAddr::V4(Segment::A.v4(1)), IpAddr::V4(Segment::A.v4(2)));

    // h1 reflects for h2 (no other node session), and both peer with BIRD: every
    // session Established, netctl exits 0.
    for (host, want) in [
        ("h2", [(h1, PeerKind::Rr), (bird, PeerKind::External)]),
        ("h1", [(h2, PeerKind::RrClient), (bird, PeerKind::External)]),
    ] {
        wait_until(&format!("{host}'s sessions"), CONVERGE, POLL, || {
            let (ok, peers) = bgp_peers(&name, host)?;
            let mut got: Vec<(IpAddr, PeerKind)> =
                peers.iter().map(|p| (p.address, p.kind)).collect();
            got.sort_by_key(|(a, _)| *a);
            if ok && got == want && peers.iter().all(|p| p.established()) {
                Ok(())
            } else {
                Err(format!(
                    "exit ok {ok}, want {want:?} Established: {peers:?}"
                ))
            }
        })
        .unwrap();
    }
    // BIRD's own CLI, through `exec bird`, sees both nodes Established.
    wait_until("BIRD's sessions", CONVERGE, POLL, || {
        let (ok, out) = tb(&[
            "exec",
            "--name",
            &name,
            "bird",
            "--",
            "birdc",
            "show",
            "protocols",
        ]);
        let established = out
            .lines()
            .filter(|l| l.starts_with('n') && l.contains("Established"))
            .count();
        if ok && established == 2 {
            Ok(())
        } else {
            Err(out)
        }
    })
    .unwrap();
    // BIRD's route reaches the nodes' FIBs, via BIRD.
    wait_until("h2's route from BIRD", CONVERGE, POLL, || {
        let (_, out) = tb(&[
            "exec",
            "--name",
            &name,
            "h2",
            "--",
            "ip",
            "route",
            "show",
            "10.255.1.0/24",
        ]);
        if out.contains(&format!("via {bird}")) {
            Ok(())
        } else {
            Err(out)
        }
    })
    .unwrap();

    // c1 on h1 reaches c2 on h2.
    let state = up.state();
    let c2 = state["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "c2" && c["host"] == "h2")
        .and_then(|c| c["ips"][0].as_str())
        .expect("c2 on h2 with an address")
        .to_string();
    wait_until("c1 -> c2", CONVERGE, POLL, || {
        tb(&[
            "exec", "--name", &name, "c1", "--", "ping", "-c1", "-W1", &c2,
        ])
        .0
    })
    .unwrap();

    let status = status_of(&name);
    assert!(
        status.contains("h1 running") && status.contains("h2 running"),
        "{status}"
    );
    assert!(status.contains("bird running"), "{status}");
    let (_, summary) = tb(&["status"]);
    assert!(summary.contains("route reflectors h1"), "{summary}");

    let (pids, dirs) = started(&state);
    assert_eq!(pids.len(), 4, "etcd, 2 agents, bird: {state}");
    assert_eq!(state["routers"][0]["name"], "bird");

    tb_ok(&["down", "--name", &name]);
    wait_until("up to exit", Duration::from_secs(60), POLL, || {
        matches!(up.child.try_wait(), Ok(Some(_)))
    })
    .unwrap();
    assert_nothing_left(&name, &pids, &dirs);
}

/// A `up` killed outright leaves its BGP router running; `down` stops it by PID and
/// removes the rest.
#[test]
fn down_after_up_was_killed_stops_the_bgp_router() {
    let _serial = serial();
    let test = "down_after_up_was_killed_stops_the_bgp_router";
    if !can_run_a_bird_bed(test) {
        return;
    }
    strait_testbeds::bins::bin("straitd");
    let name = strait_testbeds::unique_prefix();
    let mut up = Up::start(
        &name,
        &[
            "up", "empty", "--hosts", "1", "--fabric", "bgp", "--peer", "bird", "--name", &name,
        ],
    );
    wait_until("the state file of up", UP, POLL, || {
        if let Ok(Some(status)) = up.child.try_wait() {
            panic!("strait-testbed up exited with {status}");
        }
        up.state_file().exists()
    })
    .unwrap();
    let state = up.state();
    let (pids, dirs) = started(&state);
    assert_eq!(pids.len(), 3, "etcd, 1 agent, bird: {state}");

    // Our own child, by PID: its daemons stay behind.
    up.child.kill().expect("SIGKILL up");
    up.child.wait().expect("reap up");
    let status = status_of(&name);
    assert!(
        status.contains("GONE") && status.contains("bird running"),
        "{status}"
    );
    tb_ok(&["down", "--name", &name]);
    assert_nothing_left(&name, &pids, &dirs);
}

/// The PIDs (etcd, agents, routers' processes) and the routers' temp dirs a state file
/// records.
fn started(state: &serde_json::Value) -> (Vec<u32>, Vec<PathBuf>) {
    let pid = |v: &serde_json::Value| v.as_u64().map(|p| p as u32);
    let mut pids: Vec<u32> = pid(&state["etcd_pid"]).into_iter().collect();
    let mut dirs = vec![];
    for h in state["hosts"].as_array().expect("hosts") {
        pids.extend(pid(&h["agent_pid"]));
    }
    for r in state["routers"].as_array().expect("routers") {
        for p in r["pids"].as_array().expect("router pids") {
            pids.extend(pid(&p[0]));
        }
        let dir = PathBuf::from(r["dir"].as_str().expect("router dir"));
        assert!(dir.exists(), "{}", dir.display());
        dirs.push(dir);
    }
    (pids, dirs)
}

/// Whether `pid` runs: exists and is no zombie (an orphan waits for PID 1 to reap it).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
        st.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Nothing of bed `name` is left: state file, control socket, namespaces, links in
/// this namespace, the processes `up` started, any process naming the bed, the
/// routers' dirs.
fn assert_nothing_left(name: &str, pids: &[u32], dirs: &[PathBuf]) {
    assert!(!Path::new(STATE_DIR).join(format!("{name}.json")).exists());
    assert!(!Path::new(STATE_DIR).join(format!("{name}.sock")).exists());
    assert!(namespaces_of(name).is_empty(), "{:?}", namespaces_of(name));
    // Nor the agents' pinned maps and service cgroups.
    for dir in ["/run/strait-test-bpffs", "/run/strait-test-cgroup2"] {
        let left: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(name))
            .collect();
        assert!(left.is_empty(), "left in {dir}: {left:?}");
    }
    let out = Command::new("ip")
        .args(["-j", "link", "show"])
        .output()
        .expect("ip link");
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j link");
    let left: Vec<&str> = links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| n.starts_with(name))
        .collect();
    assert!(left.is_empty(), "links left: {left:?}");
    let alive: Vec<&u32> = pids.iter().filter(|p| running(**p)).collect();
    assert!(alive.is_empty(), "processes left: {alive:?}");
    let named: Vec<String> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(name))
        .collect();
    assert!(named.is_empty(), "processes naming the bed: {named:?}");
    for d in dirs {
        assert!(!d.exists(), "{} left", d.display());
    }
}
