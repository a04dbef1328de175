//! `netctl`: the operator's view of strait. Reads the agent's local API; tables by
//! default, `-o json` for scripts. Exit code 0 on success, 1 when the agent reports a
//! problem (e.g. `ipam check` found issues), 2 on usage or connection errors.

mod bgp;
mod docker;
mod doctor;
mod endpoints;
mod generate;
mod ipsec;
mod ipsec_peer;
mod kubernetes;
mod objects;
mod policy;
mod service;
mod table;
mod topology;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use strait_api::{
    AgentStatus, Client, Endpoint, FastPathMaps, FastPathStatus, IpamIssue, IpamReport, IpamView,
    NodeView, ReleaseRequest, ReleaseResponse, paths,
    routes::{EntryKind, EntryState, RouteReport},
};

use table::Table;

#[derive(Debug, Parser)]
#[command(name = "netctl", version, about = "Inspect and debug strait")]
struct Cli {
    /// The agent's unix socket.
    #[arg(long, global = true, env = "STRAIT_SOCKET", default_value = strait_api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Table,
    /// A table with nothing shortened (full container IDs).
    Wide,
    Json,
    Yaml,
    /// Graphviz DOT (`netctl topology` only).
    Dot,
    /// An SVG picture (`netctl topology` only).
    Svg,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The agent: node, store, readiness, pools.
    Status,
    /// Check everything a support engineer would: the agent, the store, this node's
    /// lease, forwarding, MTU (with a DF probe to each peer's tunnel address), the
    /// fabric and fast path against the kernel, BGP, IPAM, the DEL queue, clocks,
    /// conntrack, kernel features, CNI configs. Each check has a verdict and, when it
    /// fails, the fix. Exit 0 healthy, 1 warnings, 2 failures.
    Doctor(doctor::DoctorArgs),
    /// The cluster as a picture: nodes (site, fabric, health) and the links between
    /// them (VXLAN tunnels, BGP sessions, route reflectors, IPsec). A text tree by
    /// default; `-o dot` for Graphviz, `-o svg [FILE]` for a picture.
    Topology {
        /// Where to write the picture (`-o svg`/`-o dot`); standard output without.
        file: Option<PathBuf>,
    },
    /// Attachments on this node: namespace and labels (the pod with `-o wide`).
    Endpoints,
    /// One endpoint: show it in full, or change its labels.
    Endpoint {
        #[command(subcommand)]
        cmd: endpoints::EndpointCmd,
    },
    /// Nodes of the cluster and their STATE: `ready` (lease alive), `lease expired`
    /// (agent down or cut off from the store; other hosts keep routing to it until its
    /// blocks are reclaimed), `unreachable` (lease expired and its underlay does not
    /// answer ICMP echo), `gone` (only blocks left). GATEWAY `yes`: a gateway of its
    /// site to external IPsec peers (`straitd --ipsec-gateway`).
    Nodes,
    /// The routes, FDB and neighbour entries the fabric wants beside the kernel's:
    /// each `ok`, `missing` or `stale`, and the fabric's warnings. Exit 1 when
    /// anything differs or a warning stands.
    Routes,
    /// The eBPF fast path's maps as the kernel holds them: local endpoints by address,
    /// other nodes' blocks by VTEP; each `ok`, `missing` or `stale` against what the
    /// agent wants. Exit 1 when anything differs.
    Fastpath,
    /// Address management.
    Ipam {
        #[command(subcommand)]
        cmd: IpamCmd,
    },
    /// The BGP fabric (`--fabric bgp`): sessions and routes.
    Bgp {
        #[command(subcommand)]
        cmd: BgpCmd,
    },
    /// Network policy: apply, get, list and delete policies; an endpoint's rules
    /// beside its kernel maps; trace a flow; the node's applied revision.
    Policy {
        #[command(subcommand)]
        cmd: policy::PolicyCmd,
    },
    /// Services: apply Kubernetes Service and EndpointSlice documents, list services
    /// with their frontends and backends on this node, get, delete.
    Service {
        #[command(subcommand)]
        cmd: service::ServiceCmd,
    },
    /// The Docker plugin (`straitd --docker-plugin`): its networks.
    Docker {
        #[command(subcommand)]
        cmd: docker::DockerCmd,
    },
    /// A shell completion script on stdout: `netctl completion bash >
    /// /etc/bash_completion.d/netctl` (also zsh, fish, elvish, powershell).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write netctl's man pages (netctl.8, netctl-<command>.8) into DIR.
    #[command(hide = true)]
    Manpages { dir: PathBuf },
    /// The Kubernetes integration (`straitd --kubeconfig`): what it watches, whether
    /// this agent writes the cluster's objects, and the objects strait refused.
    #[command(alias = "k8s")]
    Kubernetes,
    /// IPsec between sites: the cluster's mode, this node's peers and SAs, rekeys.
    Ipsec {
        #[command(subcommand)]
        cmd: ipsec::IpsecCmd,
    },
    /// Live policy verdicts on this node, one line per flow (denials all, allowed
    /// flows once per connection); `-o json` for JSON lines. Runs until interrupted.
    Monitor(policy::MonitorArgs),
}

#[derive(Debug, Subcommand)]
enum BgpCmd {
    /// Configured peers: AS, kind, state, uptime, prefixes, BFD, last error. Exit 1
    /// when a peer is not Established.
    Peers,
    /// The Loc-RIB: every path per prefix, `*` best, `F` in the kernel's FIB.
    Rib {
        /// Only this prefix (e.g. 10.244.1.0/26).
        prefix: Option<ipnet::IpNet>,
        /// Instead, the routes peers announced that their import policy refused.
        #[arg(long, conflicts_with = "prefix")]
        refused: bool,
    },
    /// External peers (a ToR, a BIRD/FRR router) in the cluster store.
    Peer {
        #[command(subcommand)]
        cmd: PeerCmd,
    },
}

#[derive(Debug, Subcommand)]
enum PeerCmd {
    /// Add an external peer, or replace the one of that name.
    Add(bgp::PeerAddArgs),
    /// Remove an external peer: its sessions go down and its routes leave.
    Remove { name: String },
    /// The external peers (MD5 keys are not shown).
    List,
}

#[derive(Debug, Subcommand)]
enum IpamCmd {
    /// Pools, blocks, affinity and usage.
    Show,
    /// Find leaks and inconsistencies; `-o json > report.json` for `release`.
    Check {
        /// Only report leaks older than this many seconds (default: the agent's grace).
        #[arg(long)]
        grace_secs: Option<u64>,
    },
    /// Release what a report from `ipam check -o json` found (re-verified first).
    Release {
        #[arg(long)]
        from_report: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("netctl: {}", error_text(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, each said once: strait's errors already put
/// their cause in their own message (the OS error of "agent not reachable at …"),
/// and anyhow's `{:#}` would print it again.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn run(cli: Cli) -> Result<ExitCode> {
    let client = Client::new(&cli.socket);
    let out = cli.output;
    match cli.cmd {
        Cmd::Completion { shell } => {
            generate::completion(shell);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Manpages { dir } => {
            for file in generate::manpages(&dir)? {
                println!("{}", dir.join(file).display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Doctor(args) => doctor::run(&cli.socket, out, &args),
        Cmd::Topology { file } => topology::run(&client, out, file.as_deref()),
        Cmd::Status => {
            let s: AgentStatus = client.get(paths::STATUS)?;
            emit(out, &s, || render_status(&s))?;
            Ok(if s.readiness.ready {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Endpoints => {
            let eps: Vec<Endpoint> = client.get(paths::ENDPOINTS)?;
            emit(out, &eps, || {
                endpoints::render_endpoints(&eps, out == Output::Wide)
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Endpoint { cmd } => {
            endpoints::run(&client, out, cmd)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Nodes => {
            let nodes: Vec<NodeView> = client.get(paths::NODES)?;
            emit(out, &nodes, || render_nodes(&nodes))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Routes => {
            let r: RouteReport = client.get(paths::ROUTES)?;
            emit(out, &r, || render_routes(&r))?;
            Ok(if r.converged() && r.warnings.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Fastpath => {
            let m: FastPathMaps = client.get(paths::FAST_PATH)?;
            emit(out, &m, || render_fast_path_maps(&m))?;
            Ok(if m.in_sync() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Bgp { cmd } => match cmd {
            BgpCmd::Peers => {
                let peers = client.bgp_peers()?;
                emit(out, &peers, || bgp::render_peers(&peers))?;
                Ok(if bgp::all_established(&peers) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            BgpCmd::Rib { refused: true, .. } => {
                let rows = client.bgp_refused()?;
                emit(out, &rows, || bgp::render_refused(&rows))?;
                Ok(ExitCode::SUCCESS)
            }
            BgpCmd::Rib { prefix, .. } => {
                let rib = client.bgp_rib(prefix)?;
                emit(out, &rib, || bgp::render_rib(&rib))?;
                Ok(ExitCode::SUCCESS)
            }
            BgpCmd::Peer { cmd } => peer_cmd(&client, out, cmd),
        },
        Cmd::Policy { cmd } => policy::run(&client, out, cmd),
        Cmd::Service { cmd } => service::run(&client, out, cmd),
        Cmd::Docker { cmd } => {
            docker::run(&client, out, cmd)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Kubernetes => {
            kubernetes::run(&client, out)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ipsec { cmd } => Ok(if ipsec::run(&client, out, cmd)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }),
        Cmd::Monitor(args) => policy::monitor(&client, out, args),
        Cmd::Ipam { cmd } => match cmd {
            IpamCmd::Show => {
                let v: IpamView = client.get(paths::IPAM)?;
                emit(out, &v, || render_ipam(&v))?;
                Ok(ExitCode::SUCCESS)
            }
            IpamCmd::Check { grace_secs } => {
                let path = match grace_secs {
                    Some(g) => format!("{}?grace_secs={g}", paths::IPAM_CHECK),
                    None => paths::IPAM_CHECK.to_string(),
                };
                let r: IpamReport = client.get(&path)?;
                emit(out, &r, || render_report(&r))?;
                Ok(if r.issues.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            IpamCmd::Release { from_report } => {
                let text = std::fs::read(&from_report)
                    .with_context(|| format!("reading {}", from_report.display()))?;
                let report: IpamReport = serde_json::from_slice(&text).with_context(|| {
                    format!(
                        "{} is not a report from `netctl ipam check -o json`",
                        from_report.display()
                    )
                })?;
                let r: ReleaseResponse =
                    client.post(paths::IPAM_RELEASE, &ReleaseRequest { report })?;
                emit(out, &r, || {
                    let mut s = format!("released {}\n", r.released.len());
                    for h in &r.released {
                        s.push_str(&format!("  {h}\n"));
                    }
                    if !r.skipped.is_empty() {
                        s.push_str(&format!(
                            "skipped {} (changed since the report)\n",
                            r.skipped.len()
                        ));
                        for h in &r.skipped {
                            s.push_str(&format!("  {h}\n"));
                        }
                    }
                    s
                })?;
                Ok(ExitCode::SUCCESS)
            }
        },
    }
}

fn peer_cmd(client: &Client, out: Output, cmd: PeerCmd) -> Result<ExitCode> {
    match cmd {
        PeerCmd::Add(args) => {
            let peer = args.peer()?;
            let entry = client.bgp_put_external_peer(&args.name, &peer)?;
            emit(out, &entry, || {
                bgp::render_external_peers(std::slice::from_ref(&entry))
            })?;
        }
        PeerCmd::Remove { name } => {
            strait_api::bgp::validate_name("peer name", &name).map_err(anyhow::Error::msg)?;
            client.bgp_delete_external_peer(&name)?;
            if out != Output::Json {
                println!("external peer {name} removed");
            } else {
                println!("{{}}");
            }
        }
        PeerCmd::List => {
            let peers = client.bgp_external_peers()?;
            emit(out, &peers, || bgp::render_external_peers(&peers))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn emit<T: serde::Serialize>(
    out: Output,
    v: &T,
    table: impl FnOnce() -> String,
) -> Result<()> {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(v)?),
        Output::Table | Output::Wide => print!("{}", table()),
        Output::Dot | Output::Svg => {
            anyhow::bail!(
                "-o dot and -o svg draw `netctl topology`; this command prints table, wide, json or yaml"
            )
        }
    }
    Ok(())
}

fn render_status(s: &AgentStatus) -> String {
    let mut t = Table::new(["FIELD", "VALUE"]);
    t.row(["node", &s.node]);
    t.row(["version", &s.version]);
    t.row(["store", &s.store]);
    t.row(["state dir", &s.state_dir]);
    t.row(["uptime", &format!("{}s", s.uptime_secs)]);
    t.row(["mtu", &s.mtu.to_string()]);
    let endpoints = match s.endpoints {
        Some(n) => n.to_string(),
        None => "unknown (see ready)".into(),
    };
    t.row(["endpoints", &endpoints]);
    let pools: Vec<String> = s.pools.iter().map(|p| p.to_string()).collect();
    t.row(["pools", &pools.join(", ")]);
    let ready = if s.readiness.ready {
        "yes".to_string()
    } else {
        format!(
            "no (code {}): {}",
            s.readiness.code,
            s.readiness.reasons.join("; ")
        )
    };
    t.row(["ready", &ready]);
    t.row(["fast path", &render_fast_path(s.fast_path.as_ref())]);
    if let Some(ip) = &s.ipsec {
        let mut line = format!(
            "mode {}, datapath {}, {}/{} peers up",
            ip.mode, ip.datapath, ip.peers_up, ip.peers
        );
        if let Some(r) = &ip.reason {
            line.push_str(&format!(" ({r})"));
        }
        t.row(["ipsec", &line]);
    }
    t.render()
}

/// One line: whether container packets bypass the host's forwarding, where it is
/// attached, and how many packets took which way.
fn render_fast_path(fp: Option<&FastPathStatus>) -> String {
    let Some(fp) = fp else {
        return "off (not loaded)".into();
    };
    let state = if fp.active { "on" } else { "off" };
    let mut line = format!("{state} (mode {})", fp.mode);
    if let Some(r) = &fp.reason {
        line.push_str(&format!(": {r}"));
    }
    let attached = match &fp.fabric_device {
        Some(d) => format!(
            "{} endpoints + {d} ({} remote blocks)",
            fp.endpoints, fp.tunnels
        ),
        None => format!("{} endpoints", fp.endpoints),
    };
    line.push_str(&format!(
        "; attached to {attached}; packets to fabric {}, to endpoints {}, to the kernel {}",
        fp.to_fabric, fp.to_endpoint, fp.to_stack
    ));
    line
}

fn render_nodes(nodes: &[NodeView]) -> String {
    let mut t = Table::new([
        "NAME",
        "SITE",
        "GATEWAY",
        "UNDERLAY V4",
        "UNDERLAY V6",
        "FABRIC",
        "VTEP MAC",
        "TUNNEL",
        "VERSION",
        "BLOCKS",
        "STATE",
    ]);
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for n in nodes {
        let r = n.record.as_ref();
        let tunnel: Vec<String> = r
            .map(|r| {
                let v4 = r.tunnel_v4.map(|a| a.to_string());
                let v6 = r.tunnel_v6.map(|a| a.to_string());
                v4.into_iter().chain(v6).collect()
            })
            .unwrap_or_default();
        t.row([
            &n.name,
            &or_dash(r.map(|r| r.site.clone())),
            // `--ipsec-gateway`: the node connects its site to external IPsec peers.
            if r.and_then(|r| r.ipsec.as_ref()).is_some_and(|i| i.gateway) {
                "yes"
            } else {
                "-"
            },
            &or_dash(r.and_then(|r| r.underlay_v4).map(|a| a.to_string())),
            &or_dash(r.and_then(|r| r.underlay_v6).map(|a| a.to_string())),
            &or_dash(r.map(|r| r.fabric.to_string())),
            &or_dash(r.and_then(|r| r.vtep_mac.clone())),
            &or_dash((!tunnel.is_empty()).then(|| tunnel.join(","))),
            &or_dash(r.map(|r| r.agent_version.clone())),
            &n.blocks.len().to_string(),
            node_state(n),
        ]);
    }
    t.render()
}

/// `ready`, `lease expired` (the agent is down or cut off from the store; other hosts
/// keep their routes to it), `unreachable` (the same, and its underlay does not answer)
/// or `gone`; from an agent that does not say, `alive` or `dead`.
fn node_state(n: &NodeView) -> &'static str {
    match n.state {
        Some(state) => state.as_str(),
        None if n.alive => "alive",
        None => "dead",
    }
}

fn render_fast_path_maps(m: &FastPathMaps) -> String {
    let mut t = Table::new(["STATE", "MAP", "KEY", "VALUE"]);
    for (map, entries) in [("endpoints", &m.endpoints), ("tunnels", &m.tunnels)] {
        for e in entries {
            t.row([state_word(e.state), map, &e.key.to_string(), &e.value]);
        }
    }
    let all = m.endpoints.iter().chain(&m.tunnels);
    let n = |state| all.clone().filter(|e| e.state == state).count();
    format!(
        "{}{} ok, {} missing, {} stale\n",
        t.render(),
        n(EntryState::Ok),
        n(EntryState::Missing),
        n(EntryState::Stale)
    )
}

pub(crate) fn state_word(state: EntryState) -> &'static str {
    match state {
        EntryState::Ok => "ok",
        EntryState::Missing => "MISSING",
        EntryState::Stale => "STALE",
    }
}

fn render_routes(r: &RouteReport) -> String {
    let mut s = format!("node {}  fabric {}", r.node, r.mode);
    match &r.device {
        Some(d) => s.push_str(&format!(
            "  device {} (vni {}, port {}, local {}, mtu {}, {})\n",
            d.name,
            d.vni.map_or("-".into(), |v| v.to_string()),
            d.port.map_or("-".into(), |p| p.to_string()),
            d.local.map_or("-".into(), |a| a.to_string()),
            d.mtu,
            if d.up { "up" } else { "DOWN" }
        )),
        None => s.push('\n'),
    }
    if let Some(e) = &r.last_error {
        s.push_str(&format!("last reconcile failed: {e}\n"));
    }
    let mut t = Table::new(["STATE", "KIND", "NODE", "ENTRY"]);
    for e in &r.entries {
        let state = state_word(e.state);
        let kind = match e.kind {
            EntryKind::Route => "route",
            EntryKind::Fdb => "fdb",
            EntryKind::Neighbour => "neigh",
            EntryKind::Address => "address",
        };
        t.row([state, kind, e.node.as_deref().unwrap_or("-"), &e.entry]);
    }
    s.push_str(&t.render());
    for w in &r.warnings {
        s.push_str(&format!("warning: {w}\n"));
    }
    for o in &r.overrides {
        s.push_str(&format!(
            "OVERRIDDEN: block {} ({}): kernel route {}: {}\n",
            o.block,
            o.node.as_deref().unwrap_or("no node"),
            o.route,
            o.reason
        ));
    }
    s.push_str(&format!(
        "{} ok, {} missing, {} stale",
        r.count(EntryState::Ok),
        r.count(EntryState::Missing),
        r.count(EntryState::Stale)
    ));
    if !r.overrides.is_empty() {
        s.push_str(&format!(", {} overridden", r.overrides.len()));
    }
    s.push('\n');
    s
}

fn render_ipam(v: &IpamView) -> String {
    let mut t = Table::new([
        "POOL",
        "BLOCK SIZE",
        "USED",
        "SIZE",
        "USE %",
        "BLOCKS",
        "STATE",
    ]);
    for p in &v.pools {
        // Of what can be handed out: a full pool is 100 %, whatever its reserved edges.
        let of = if p.usable > 0 { p.usable } else { p.size };
        let pct = if of == 0 {
            0.0
        } else {
            p.used as f64 * 100.0 / of as f64
        };
        t.row([
            &p.cidr.to_string(),
            &format!("/{}", p.block_prefix),
            &count(p.used),
            &count(p.size),
            &format!("{pct:.2}"),
            &format!("{}/{}", p.blocks_claimed, count(p.blocks_total)),
            if p.disabled { "disabled" } else { "enabled" },
        ]);
    }
    // Blocks no pool covers: their pool was removed or shrunk (`ipam check` says so too).
    let pool_of = |b: &ipnet::IpNet| v.pools.iter().find(|p| p.cidr.contains(b));
    let outside: Vec<_> = v
        .blocks
        .iter()
        .filter(|b| pool_of(&b.cidr).is_none())
        .collect();
    if !outside.is_empty() {
        let used: u128 = outside.iter().map(|b| u128::from(b.used)).sum();
        t.row([
            "outside any pool",
            "-",
            &count(used),
            "-",
            "-",
            &outside.len().to_string(),
            "-",
        ]);
    }
    let mut b = Table::new(["BLOCK", "AFFINITY", "USED", "SIZE", "LENT TO", "POOL"]);
    for blk in &v.blocks {
        let pool = match pool_of(&blk.cidr) {
            Some(p) if p.disabled => format!("{} (disabled)", p.cidr),
            Some(p) => p.cidr.to_string(),
            None => "outside any pool".to_string(),
        };
        b.row([
            &blk.cidr.to_string(),
            blk.affinity.as_deref().unwrap_or("-"),
            &blk.used.to_string(),
            &blk.size.to_string(),
            &render_lent(&blk.lent),
            &pool,
        ]);
    }
    format!("{}\n{}", t.render(), b.render())
}

/// A block's borrowed addresses: `10.244.0.5 h1, 10.244.0.9 h3`, the first three and
/// how many more.
fn render_lent(lent: &[(std::net::IpAddr, String)]) -> String {
    if lent.is_empty() {
        return "-".into();
    }
    let mut shown: Vec<String> = lent
        .iter()
        .take(3)
        .map(|(ip, node)| format!("{ip} {node}"))
        .collect();
    if lent.len() > 3 {
        shown.push(format!("+{} more", lent.len() - 3));
    }
    shown.join(", ")
}

fn render_report(r: &IpamReport) -> String {
    if r.issues.is_empty() {
        return format!(
            "no issues (revision {}, grace {}s)\n",
            r.revision, r.grace_secs
        );
    }
    let mut t = Table::new(["KIND", "OBJECT", "DETAIL"]);
    for i in &r.issues {
        match i {
            IpamIssue::LeakedHandle {
                handle,
                ips,
                reason,
                age_secs,
            } => {
                let ips: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
                t.row([
                    "leaked-handle",
                    handle,
                    &format!("{} ({reason}, {age_secs}s old)", ips.join(",")),
                ]);
            }
            IpamIssue::OrphanAllocation { block, ip, handle } => {
                t.row([
                    "orphan-allocation",
                    &ip.to_string(),
                    &format!("block {block} names missing handle {handle}"),
                ]);
            }
            IpamIssue::MissingAllocation { handle, ip } => {
                t.row([
                    "missing-allocation",
                    handle,
                    &format!("{ip} not marked in its block"),
                ]);
            }
            IpamIssue::EndpointWithoutHandle { endpoint, handle } => {
                t.row([
                    "endpoint-without-handle",
                    endpoint,
                    &format!("handle {handle} missing"),
                ]);
            }
            IpamIssue::DuplicateIp { ip, handles } => {
                t.row(["duplicate-ip", &ip.to_string(), &handles.join(",")]);
            }
            IpamIssue::BlockOutsidePools {
                block,
                affinity,
                used,
            } => {
                t.row([
                    "outside-pools",
                    &block.to_string(),
                    &format!(
                        "outside any pool: {used} in use, node {}; drain it with \
                         --disabled-pool <its pool>",
                        affinity.as_deref().unwrap_or("-")
                    ),
                ]);
            }
        }
    }
    format!(
        "{}{} issue(s); save with `-o json > report.json`, then `netctl ipam release --from-report report.json`\n",
        t.render(),
        r.issues.len()
    )
}

/// A count as a number, or as a power of two once it is too long to read (IPv6).
fn count(n: u128) -> String {
    if n >= 1 << 40 && n.is_power_of_two() {
        format!("2^{}", n.trailing_zeros())
    } else {
        n.to_string()
    }
}

/// Each ID cut to `min` characters, or to one past the longest prefix it shares with
/// another ID (as git shortens hashes), never beyond the whole ID.
pub(crate) fn unique_prefixes(ids: &[&str], min: usize) -> Vec<String> {
    let common = |a: &str, b: &str| a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    ids.iter()
        .map(|id| {
            let shared = ids
                .iter()
                .filter(|other| *other != id)
                .map(|other| common(id, other))
                .max()
                .unwrap_or(0);
            id.chars().take(min.max(shared + 1)).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{
        EntryKind, EntryState, IpamIssue, IpamReport, RouteReport, count, render_nodes,
        render_routes,
    };
    use strait_api::{FabricMode, NodeRecord, NodeState, NodeView};

    #[test]
    fn endpoint_ids_are_shortened_only_as_far_as_they_stay_unique() {
        let ids = [
            "0123456789abcdef0000",
            "0123456789abcdef1111",
            "fedcba9876543210ffff",
            "short",
        ];
        assert_eq!(
            super::unique_prefixes(&ids, 12),
            [
                "0123456789abcdef0",
                "0123456789abcdef1",
                "fedcba987654",
                "short"
            ]
        );
        let ep = |id: &str| {
            strait_api::Endpoint {
            container_id: id.into(),
            ..serde_json::from_value(serde_json::json!({
                "id": "x", "node": "n", "network": "net", "container_id": "c",
                "ifname": "eth0", "netns": "/run/netns/x", "host_ifname": "strait0",
                "mac": "02:00:00:00:00:01", "host_mac": "02:00:00:00:00:02", "ips": [], "mtu": 1500, "handle": "x",
                "created": 0
            }))
            .expect("an endpoint")
        }
        };
        let eps = [ep(ids[0]), ep(ids[1])];
        let table = super::endpoints::render_endpoints(&eps, false);
        assert!(
            table.contains("0123456789abcdef0 ") && table.contains("0123456789abcdef1 "),
            "{table}"
        );
        let wide = super::endpoints::render_endpoints(&eps, true);
        assert!(wide.contains(ids[0]) && wide.contains(ids[1]), "{wide}");
    }

    #[test]
    fn an_os_error_is_printed_once() {
        let e = anyhow::Error::from(strait_api::ClientError::Unreachable {
            path: "/run/strait/strait.sock".into(),
            source: std::io::Error::from_raw_os_error(2),
        });
        let text = super::error_text(&e);
        assert_eq!(text.matches("os error 2").count(), 1, "{text}");
        assert!(text.contains("/run/strait/strait.sock"), "{text}");
        let wrapped = anyhow::anyhow!("disk on fire").context("reading report.json");
        assert_eq!(
            super::error_text(&wrapped),
            "reading report.json: disk on fire"
        );
    }

    #[test]
    fn use_percent_is_of_what_can_be_handed_out() {
        let pool = |cidr: &str, size: u128, usable: u128, used: u128| strait_api::PoolView {
            cidr: cidr.parse().unwrap(),
            block_prefix: 30,
            size,
            usable,
            used,
            blocks_claimed: 1,
            blocks_total: 1,
            disabled: false,
        };
        let view = |p| strait_api::IpamView {
            pools: vec![p],
            blocks: vec![],
        };
        // A /30: four addresses, two of them the pool's edges; both others taken.
        let full = super::render_ipam(&view(pool("10.9.0.0/30", 4, 2, 2)));
        assert!(full.contains("100.00"), "{full}");
        let half = super::render_ipam(&view(pool("10.9.0.0/30", 4, 2, 1)));
        assert!(half.contains("50.00"), "{half}");
        // An older agent sends no usable count: the size stands in.
        let old = super::render_ipam(&view(pool("10.9.0.0/30", 4, 0, 2)));
        assert!(old.contains("50.00"), "{old}");
    }

    #[test]
    fn ipam_show_marks_disabled_pools_and_blocks_outside_every_pool() {
        let pool = |cidr: &str, disabled| strait_api::PoolView {
            cidr: cidr.parse().unwrap(),
            block_prefix: 26,
            size: 256,
            usable: 254,
            used: 1,
            blocks_claimed: 1,
            blocks_total: 4,
            disabled,
        };
        let block = |cidr: &str, used| strait_api::BlockView {
            cidr: cidr.parse().unwrap(),
            affinity: Some("h1".into()),
            used,
            size: 64,
            lent: vec![],
        };
        let v = strait_api::IpamView {
            pools: vec![pool("10.2.0.0/24", false), pool("10.1.0.0/24", true)],
            blocks: vec![
                block("10.2.0.0/26", 1),
                block("10.1.0.0/26", 1),
                block("10.9.0.0/26", 3),
                block("10.9.0.64/26", 2),
            ],
        };
        let out = super::render_ipam(&v);
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0].last(), Some(&"STATE"), "{out}");
        assert_eq!(rows[1].first(), Some(&"10.2.0.0/24"));
        assert_eq!(rows[1].last(), Some(&"enabled"));
        assert_eq!(rows[2].last(), Some(&"disabled"));
        assert_eq!(
            rows[3],
            ["outside", "any", "pool", "-", "5", "-", "-", "2", "-"],
            "{out}"
        );
        assert!(out.contains("10.1.0.0/24 (disabled)"), "{out}");
        let outside = out.lines().filter(|l| l.starts_with("10.9.0.")).count();
        assert_eq!(outside, 2, "{out}");
        assert!(
            out.lines()
                .filter(|l| l.starts_with("10.9.0."))
                .all(|l| l.ends_with("outside any pool")),
            "{out}"
        );

        // Nothing outside: no such row.
        let v = strait_api::IpamView {
            pools: vec![pool("10.2.0.0/24", false)],
            blocks: vec![block("10.2.0.0/26", 1)],
        };
        assert!(!super::render_ipam(&v).contains("outside"));
    }

    #[test]
    fn ipam_check_reports_blocks_outside_every_pool() {
        let r = IpamReport {
            revision: 7,
            grace_secs: 0,
            issues: vec![IpamIssue::BlockOutsidePools {
                block: "10.9.0.0/26".parse().unwrap(),
                affinity: Some("h1".into()),
                used: 3,
            }],
        };
        let out = super::render_report(&r);
        assert!(!out.contains("no issues"), "{out}");
        assert!(
            out.contains("outside-pools  10.9.0.0/26")
                && out.contains("outside any pool: 3 in use, node h1"),
            "{out}"
        );
    }

    #[test]
    fn lent_addresses_show_with_their_holders_the_first_three() {
        let lent = |n: u8| -> Vec<(std::net::IpAddr, String)> {
            (1..=n)
                .map(|i| (format!("10.244.0.{i}").parse().unwrap(), format!("h{i}")))
                .collect()
        };
        assert_eq!(super::render_lent(&[]), "-");
        assert_eq!(super::render_lent(&lent(1)), "10.244.0.1 h1");
        assert_eq!(
            super::render_lent(&lent(5)),
            "10.244.0.1 h1, 10.244.0.2 h2, 10.244.0.3 h3, +2 more"
        );
    }

    #[test]
    fn routes_table_flags_differences_and_warnings() {
        use strait_api::routes::{ReportEntry, Warning};
        let entry = |kind, node: Option<&str>, text: &str, state| ReportEntry {
            kind,
            node: node.map(str::to_string),
            entry: text.into(),
            state,
        };
        let r = RouteReport {
            node: "h1".into(),
            mode: "host-gw".into(),
            entries: vec![
                entry(
                    EntryKind::Route,
                    Some("h2"),
                    "10.244.1.0/26 via 10.0.0.2 proto 83",
                    EntryState::Ok,
                ),
                entry(
                    EntryKind::Route,
                    Some("h3"),
                    "10.244.2.0/26 via 10.0.0.3 proto 83",
                    EntryState::Missing,
                ),
                entry(
                    EntryKind::Route,
                    None,
                    "10.9.0.0/26 via 10.0.0.9 proto 83",
                    EntryState::Stale,
                ),
            ],
            warnings: vec![Warning::node("h4", "not on a connected subnet".into())],
            ..Default::default()
        };
        let out = render_routes(&r);
        assert!(out.contains("MISSING  route  h3"), "{out}");
        assert!(out.contains("STALE    route  -"), "{out}");
        assert!(
            out.contains("warning: node h4: not on a connected subnet"),
            "{out}"
        );
        assert!(out.contains("1 ok, 1 missing, 1 stale"), "{out}");
        let mut overridden = r.clone();
        overridden.overrides = vec![strait_api::routes::RouteOverride {
            route: "10.244.2.0/29 via 10.0.0.253 dev eth0 proto 12".into(),
            block: "10.244.2.0/26".parse().expect("net"),
            node: Some("h2".into()),
            reason: "more specific than the block".into(),
        }];
        let out = render_routes(&overridden);
        assert!(
            out.contains("OVERRIDDEN: block 10.244.2.0/26 (h2): kernel route 10.244.2.0/29 via"),
            "{out}"
        );
        assert!(out.contains("1 stale, 1 overridden"), "{out}");
        assert!(!r.converged());
    }

    #[test]
    fn nodes_table_shows_live_and_dead_nodes() {
        let mut live = NodeView {
            name: "h1".into(),
            alive: true,
            record: Some(NodeRecord {
                name: "h1".into(),
                underlay_v4: Some("10.0.0.1".parse().unwrap()),
                underlay_v6: None,
                fabric: FabricMode::Vxlan,
                vtep_mac: Some("0e:12:34:56:78:9a".into()),
                vxlan_vni: Some(4096),
                vxlan_port: Some(4789),
                tunnel_v4: Some("10.244.0.1".parse().unwrap()),
                tunnel_v6: Some("fd00:244::1".parse().unwrap()),
                agent_version: "0.1.0".into(),
                started: 1,
                bgp: None,
                site: strait_api::ipsec::DEFAULT_SITE.into(),
                ipsec: None,
            }),
            blocks: vec!["10.244.0.0/26".parse().unwrap()],
            state: Some(NodeState::Ready),
        };
        let dead = NodeView {
            name: "h2".into(),
            alive: false,
            record: None,
            blocks: vec![
                "10.244.0.64/26".parse().unwrap(),
                "10.244.0.128/26".parse().unwrap(),
            ],
            state: Some(NodeState::Gone),
        };
        // A node whose agent is down: its last record, and the routes others keep.
        let mut expired = live.clone();
        expired.name = "h3".into();
        expired.alive = false;
        expired.state = Some(NodeState::LeaseExpired);
        let mut silent = expired.clone();
        silent.name = "h4".into();
        silent.state = Some(NodeState::Unreachable);
        if let Some(r) = silent.record.as_mut() {
            r.ipsec = Some(strait_api::ipsec::NodeIpsec {
                gateway: true,
                ..strait_api::ipsec::NodeIpsec::from_public_key(&[7; 32])
            });
        }
        let out = render_nodes(&[live.clone(), dead.clone(), expired, silent]);
        let lines: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0][0], "NAME");
        assert_eq!(
            lines[1],
            [
                "h1",
                "default",
                "-",
                "10.0.0.1",
                "-",
                "vxlan",
                "0e:12:34:56:78:9a",
                "10.244.0.1,fd00:244::1",
                "0.1.0",
                "1",
                "ready"
            ]
        );
        assert_eq!(
            lines[2],
            ["h2", "-", "-", "-", "-", "-", "-", "-", "-", "2", "gone"]
        );
        assert_eq!(lines[3][0], "h3");
        assert_eq!(lines[3][3], "10.0.0.1", "shown by its last record");
        assert_eq!(lines[3][10..], ["lease", "expired"]);
        assert_eq!(lines[4][10..], ["unreachable"]);
        assert_eq!(lines[4][2], "yes", "a gateway (--ipsec-gateway)");
        // An agent that does not send a state: alive or not.
        live.state = None;
        let mut old_dead = dead;
        old_dead.state = None;
        let out = render_nodes(&[live, old_dead]);
        let states: Vec<&str> = out
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().last())
            .collect();
        assert_eq!(states, ["alive", "dead"]);
    }

    #[test]
    fn counts_read_as_numbers_or_powers_of_two() {
        assert_eq!(count(65536), "65536");
        assert_eq!(count(1 << 80), "2^80");
        assert_eq!(count((1 << 80) + 1), "1208925819614629174706177");
    }
}
