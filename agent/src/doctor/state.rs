//! Checks of what the agent owns, each against the truth it can be compared with: the
//! store (reachable, how fast, this node's lease), the kernel (the fabric's routes, FDB
//! and neighbours, the fast path's maps), the BGP speaker's sessions, IPAM's
//! accounting and the DEL queue on disk. Each function turns one owner's report into
//! a verdict; the reports are the same `netctl routes`, `fastpath`, `bgp peers` and
//! `ipam check` show, so a finding can be followed up with those commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use strait_api::doctor::Check;
use strait_api::routes::{EntryState, RouteReport};
use strait_api::{FastPathMaps, IpamIssue, IpamView, NodeRecord, Readiness};

/// A store read slower than this makes every ADD slow.
const SLOW_STORE: Duration = Duration::from_millis(250);

pub fn agent(r: &Readiness, phase: &str) -> Check {
    if r.ready {
        return Check::ok("agent", "ready: serves CNI ADD, DEL and CHECK");
    }
    let why = if r.reasons.is_empty() {
        phase.to_string()
    } else {
        r.reasons.join("; ")
    };
    Check::fail(
        "agent",
        format!("not ready: {why}"),
        "ADDs are answered \"try again later\" until this clears; the other checks \
         say what it waits for (most often the store)",
    )
}

/// The store's answer to one read of this node's record, and how long it took.
pub fn store(describe: &str, read: &Result<Option<()>, String>, took: Duration) -> Check {
    match read {
        Err(e) => Check::fail(
            "store",
            format!("{describe} does not answer: {e}"),
            "start etcd or make it reachable from this host (--etcd-endpoints); running \
             containers keep working, new ones wait",
        ),
        Ok(_) if took > SLOW_STORE => Check::warn(
            "store",
            format!("{describe} answered in {} ms", took.as_millis()),
            "etcd is slow: check its disk (fsync latency) and its load; every ADD waits \
             for it",
        ),
        Ok(_) => Check::ok(
            "store",
            format!(
                "{describe} answered in {:.1} ms",
                took.as_secs_f64() * 1000.0
            ),
        ),
    }
}

/// This node's record in the store, bound to the agent's lease: what makes other
/// nodes route to it.
pub fn lease(node: &str, record_lease: Option<Option<i64>>, own: Option<i64>) -> Check {
    match (record_lease, own) {
        (None, _) => Check::skip("lease", "the store did not answer"),
        (Some(Some(l)), Some(o)) if l == o => {
            Check::ok("lease", format!("nodes/{node} is alive (lease {l:x})"))
        }
        (Some(Some(l)), _) => Check::fail(
            "lease",
            format!(
                "nodes/{node} is held by lease {l:x}, not this agent's: another agent \
                 registered under this node's name"
            ),
            "give every host its own --node-name; stop the other agent",
        ),
        (Some(None), _) => Check::fail(
            "lease",
            format!(
                "nodes/{node} is gone: the lease expired (the agent lost the store for \
                 longer than its TTL)"
            ),
            "the agent registers again once the store answers; if it stays gone, \
             restart straitd",
        ),
    }
}

/// Every other live node runs this agent's version.
pub fn versions(node: &str, mine: &str, nodes: &[NodeRecord]) -> Check {
    let other: Vec<String> = nodes
        .iter()
        .filter(|n| n.name != node && n.agent_version != mine)
        .map(|n| format!("{} runs {}", n.name, n.agent_version))
        .collect();
    if other.is_empty() {
        let run = if nodes.len() == 1 {
            "node runs"
        } else {
            "nodes run"
        };
        return Check::ok("versions", format!("{} {run} {mine}", nodes.len()));
    }
    Check::warn(
        "versions",
        format!("this node runs {mine}; {}", other.join(", ")),
        "finish the upgrade: one version on every node (`apt install strait`, or let \
         the DaemonSet roll)",
    )
}

pub fn fabric(r: &RouteReport) -> Check {
    let count = |s| r.entries.iter().filter(|e| e.state == s).count();
    let (ok, missing, stale) = (
        count(EntryState::Ok),
        count(EntryState::Missing),
        count(EntryState::Stale),
    );
    let history = format!(
        "{} reconciliation{}, {} failed",
        r.reconciles,
        plural(r.reconciles as usize),
        r.reconcile_errors
    );
    if missing + stale > 0 || !r.overrides.is_empty() {
        let first: Vec<String> = r
            .entries
            .iter()
            .filter(|e| e.state != EntryState::Ok)
            .take(3)
            .map(|e| {
                let state = if e.state == EntryState::Missing {
                    "missing"
                } else {
                    "stale"
                };
                format!("{state} {:?} {}", e.kind, e.entry).to_lowercase()
            })
            .chain(
                r.overrides
                    .iter()
                    .take(2)
                    .map(|o| format!("{} overrides {}", o.route, o.block)),
            )
            .collect();
        let mut fix = "the agent puts its entries back on its next reconciliation (at \
                       once on a store change, else within 30 s); if they stay, \
                       `netctl routes` and the agent's log say why"
            .to_string();
        if let Some(e) = &r.last_error {
            fix = format!("{fix}; last error: {e}");
        }
        return Check::fail(
            "fabric",
            format!(
                "{missing} missing, {stale} stale, {} overridden of {} entries ({}); {history}",
                r.overrides.len(),
                ok + missing,
                first.join("; ")
            ),
            fix,
        );
    }
    if let Some(w) = r.warnings.first() {
        return Check::warn(
            "fabric",
            format!(
                "{} warning{}: {w:?}",
                r.warnings.len(),
                plural(r.warnings.len())
            ),
            "`netctl routes` lists them; a node the fabric cannot reach needs an \
             underlay route or the vxlan fabric",
        );
    }
    Check::ok(
        "fabric",
        format!("{mode}: {ok} entries as wanted; {history}", mode = r.mode),
    )
}

pub fn fast_path(maps: Option<Result<FastPathMaps, String>>) -> Check {
    match maps {
        None => Check::skip("fast-path", "not loaded (--fast-path off, or not attached)"),
        Some(Err(e)) => Check::fail(
            "fast-path",
            format!("its maps cannot be read: {e}"),
            "restart straitd; it loads the programs again and adopts the maps",
        ),
        Some(Ok(m)) if m.in_sync() => Check::ok(
            "fast-path",
            format!(
                "{} endpoints and {} tunnels as wanted",
                m.endpoints.len(),
                m.tunnels.len()
            ),
        ),
        Some(Ok(m)) => {
            let bad = m
                .endpoints
                .iter()
                .chain(&m.tunnels)
                .filter(|e| e.state != EntryState::Ok)
                .count();
            Check::fail(
                "fast-path",
                format!("{bad} map entries differ from what the agent wants"),
                "`netctl fastpath` lists them; the agent rewrites them on its next \
                 reconciliation, and `--fast-path off` takes packets back to the kernel",
            )
        }
    }
}

pub fn bgp(peers: Option<Result<Vec<strait_api::bgp::BgpPeerStatus>, String>>) -> Check {
    let peers = match peers {
        None => return Check::skip("bgp", "not the bgp fabric"),
        Some(Err(e)) => {
            return Check::fail(
                "bgp",
                format!("the speaker does not answer: {e}"),
                "restart straitd",
            );
        }
        Some(Ok(p)) => p,
    };
    let down: Vec<String> = peers
        .iter()
        .filter(|p| !p.established())
        .map(|p| match &p.last_error {
            Some(e) => format!("{} {} ({e})", p.name, p.state),
            None => format!("{} {}", p.name, p.state),
        })
        .collect();
    if peers.is_empty() {
        return Check::warn(
            "bgp",
            "no BGP peer: this node learns no route to other nodes",
            "give it peers: the node mesh, a route reflector (--bgp-role rr on one node) \
             or a ToR under bgp/peers/",
        );
    }
    if !down.is_empty() {
        return Check::fail(
            "bgp",
            format!(
                "{} of {} sessions not Established: {}",
                down.len(),
                peers.len(),
                down.join(", ")
            ),
            "check TCP port 179 between the two ends and the peer's AS number; `netctl \
             bgp peer NAME` shows the session's last error",
        );
    }
    let prefixes: u64 = peers.iter().map(|p| p.prefixes_accepted).sum();
    Check::ok(
        "bgp",
        format!(
            "{} sessions Established, {prefixes} prefixes accepted",
            peers.len()
        ),
    )
}

/// IPAM: pools near exhaustion, and what `ipam check` finds (leaked reservations,
/// double allocations, orphans), the leaks counted as soon as their attachment is
/// gone, before the GC's grace period releases them.
pub fn ipam(view: &IpamView, issues: &[IpamIssue], grace: Duration) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut full = Vec::new();
    let mut near = Vec::new();
    for p in view.pools.iter().filter(|p| !p.disabled) {
        let usable = if p.usable == 0 { p.size } else { p.usable };
        if usable == 0 {
            continue;
        }
        let percent = p.used * 100 / usable;
        if percent >= 100 {
            full.push(format!("{} ({} of {usable})", p.cidr, p.used));
        } else if percent >= 90 {
            near.push(format!("{} {percent}% used", p.cidr));
        }
    }
    let add_pool = "add a pool (--pool CIDR on every node) or delete unused containers";
    checks.push(if !full.is_empty() {
        Check::fail("ipam-pools", format!("full: {}", full.join(", ")), add_pool)
    } else if !near.is_empty() {
        Check::warn(
            "ipam-pools",
            format!("near exhaustion: {}", near.join(", ")),
            add_pool,
        )
    } else {
        let used: u128 = view.pools.iter().map(|p| p.used).sum();
        Check::ok(
            "ipam-pools",
            format!(
                "{} pools, {used} addresses used, none above 90%",
                view.pools.len()
            ),
        )
    });
    let leaked: Vec<String> = issues
        .iter()
        .filter_map(|i| match i {
            IpamIssue::LeakedHandle {
                ips,
                reason,
                age_secs,
                ..
            } => Some(format!(
                "{} ({reason}, {age_secs} s{})",
                ips.iter()
                    .map(|ip| ip.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
                if *age_secs < grace.as_secs() {
                    format!("; the GC releases it in {} s", grace.as_secs() - age_secs)
                } else {
                    String::new()
                }
            )),
            _ => None,
        })
        .collect();
    let duplicate = issues
        .iter()
        .any(|i| matches!(i, IpamIssue::DuplicateIp { .. }));
    let others = issues.len() - leaked.len();
    let release =
        "`netctl ipam check -o json > r.json && netctl ipam release --from-report r.json`";
    checks.push(if duplicate {
        Check::fail(
            "ipam-leaks",
            format!(
                "an address is allocated twice; {} findings in all",
                issues.len()
            ),
            format!("`netctl ipam check` shows which; release the wrong one with {release}"),
        )
    } else if !leaked.is_empty() || others > 0 {
        Check::warn(
            "ipam-leaks",
            format!(
                "{} leaked address{} with no live container: {}{}",
                leaked.len(),
                if leaked.len() == 1 { "" } else { "es" },
                leaked.join(", "),
                if others > 0 {
                    format!("; {others} other findings")
                } else {
                    String::new()
                }
            ),
            format!("release them now with {release}, or let the GC do it after its grace"),
        )
    } else {
        Check::ok(
            "ipam-leaks",
            "every reservation belongs to a live container",
        )
    });
    checks
}

/// DELs the plugin queued on disk while the agent or the store was away, and not
/// applied yet: their addresses are still taken. Files the agent could not read as a
/// DEL were set aside as `.bad` for an operator; they are named apart. (Read here
/// without `queue::pending`, which sets files aside: doctor changes nothing.)
pub fn pending_dels(state_dir: &Path) -> Check {
    let dir = strait_api::queue::dir(state_dir);
    let names: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(d) => d.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => {
            return Check::warn(
                "pending-dels",
                format!("cannot read {}: {e}", dir.display()),
                "the state dir must be root's, mode 0700",
            );
        }
    };
    let with = |ext: &str| {
        names
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .count()
    };
    let (queued, bad) = (with("json"), with("bad"));
    if bad > 0 {
        return Check::warn(
            "pending-dels",
            format!(
                "{bad} file{} in {} could not be read as a DEL and {} set aside (*.bad); \
                 {queued} DEL{} queued",
                plural(bad),
                dir.display(),
                if bad == 1 { "was" } else { "were" },
                plural(queued)
            ),
            "read them, then delete them: a DEL lost that way leaves its container's \
             address taken until `netctl doctor` shows it in ipam-leaks and it is released",
        );
    }
    if queued == 0 {
        return Check::ok("pending-dels", "no DEL waiting");
    }
    Check::warn(
        "pending-dels",
        format!(
            "{queued} DEL{} queued in {} not applied yet",
            plural(queued),
            dir.display()
        ),
        "they are applied while the agent runs and reaches the store; if they stay, the \
         agent's log says why",
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_api::doctor::Verdict;
    use strait_api::routes::{EntryKind, ReportEntry};

    #[test]
    fn pending_dels_counts_queued_dels_and_names_the_set_aside_apart() {
        let state = tempfile::tempdir().unwrap();
        assert_eq!(
            pending_dels(state.path()).verdict,
            Verdict::Ok,
            "no queue dir"
        );
        let dir = strait_api::queue::dir(state.path());
        std::fs::create_dir_all(&dir).unwrap();
        // A half-written file of the plugin's is not a DEL yet.
        std::fs::write(dir.join(".a.json.1.tmp"), "{").unwrap();
        assert_eq!(pending_dels(state.path()).verdict, Verdict::Ok);
        std::fs::write(dir.join("a.json"), "{}").unwrap();
        std::fs::write(dir.join("b.json"), "{}").unwrap();
        let c = pending_dels(state.path());
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(c.detail.starts_with("2 DELs queued"), "{c:?}");
        std::fs::write(dir.join("junk.bad"), "x").unwrap();
        let c = pending_dels(state.path());
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(
            c.detail.contains("1 file in") && c.detail.contains("2 DELs queued"),
            "{c:?}"
        );
        // Doctor only looks.
        assert!(dir.join("junk.bad").exists() && dir.join("a.json").exists());
    }

    #[test]
    fn a_missing_fdb_entry_fails_the_fabric_check() {
        let entry = |state| ReportEntry {
            kind: EntryKind::Fdb,
            node: Some("h2".into()),
            entry: "0e:00:00:00:00:02 dst 10.0.0.2".into(),
            state,
        };
        let ok = RouteReport {
            mode: "vxlan".into(),
            entries: vec![entry(EntryState::Ok)],
            reconciles: 4,
            ..Default::default()
        };
        assert_eq!(fabric(&ok).verdict, Verdict::Ok);
        let bad = RouteReport {
            entries: vec![entry(EntryState::Missing)],
            ..ok
        };
        let c = fabric(&bad);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.detail.contains("missing fdb 0e:00:00:00:00:02"), "{c:?}");
    }

    #[test]
    fn the_lease_must_be_this_agents() {
        assert_eq!(lease("h1", Some(Some(7)), Some(7)).verdict, Verdict::Ok);
        assert_eq!(lease("h1", Some(Some(8)), Some(7)).verdict, Verdict::Fail);
        assert_eq!(lease("h1", Some(None), Some(7)).verdict, Verdict::Fail);
        assert_eq!(lease("h1", None, Some(7)).verdict, Verdict::Skip);
    }

    #[test]
    fn an_unreachable_store_fails_and_a_slow_one_warns() {
        let ms = Duration::from_millis;
        assert_eq!(store("etcd", &Ok(Some(())), ms(3)).verdict, Verdict::Ok);
        assert_eq!(store("etcd", &Ok(Some(())), ms(900)).verdict, Verdict::Warn);
        assert_eq!(
            store("etcd", &Err("refused".into()), ms(1)).verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn a_leaked_address_warns_with_the_release_command() {
        let view = IpamView {
            pools: vec![],
            blocks: vec![],
        };
        let leak = IpamIssue::LeakedHandle {
            handle: "strait.c1.eth0".into(),
            ips: vec!["10.244.0.5".parse().unwrap()],
            reason: "netns gone".into(),
            age_secs: 10,
        };
        let checks = ipam(&view, &[leak], Duration::from_secs(900));
        let c = &checks[1];
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(
            c.detail
                .contains("10.244.0.5 (netns gone, 10 s; the GC releases it in 890 s)"),
            "{c:?}"
        );
        assert!(c.fix.as_ref().unwrap().contains("ipam release"));
        let clean = ipam(&view, &[], Duration::from_secs(900));
        assert_eq!(clean[1].verdict, Verdict::Ok);
    }

    #[test]
    fn version_skew_warns() {
        let rec = |name: &str, v: &str| NodeRecord {
            name: name.into(),
            underlay_v4: None,
            underlay_v6: None,
            fabric: strait_api::FabricMode::Vxlan,
            vtep_mac: None,
            vxlan_vni: None,
            vxlan_port: None,
            tunnel_v4: None,
            tunnel_v6: None,
            agent_version: v.into(),
            started: 0,
            bgp: None,
            site: "default".into(),
            ipsec: None,
        };
        let same = [rec("h1", "0.1.0"), rec("h2", "0.1.0")];
        assert_eq!(versions("h1", "0.1.0", &same).verdict, Verdict::Ok);
        let skew = [rec("h1", "0.1.0"), rec("h2", "0.0.9")];
        let c = versions("h1", "0.1.0", &skew);
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(c.detail.contains("h2 runs 0.0.9"));
    }
}
