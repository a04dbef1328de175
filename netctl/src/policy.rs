//! `netctl policy …` and `netctl monitor`: network policy as an operator sees it.
//! Objects are named as kubectl names them (`NAME` and `NS/NAME` for NetworkPolicies,
//! `cluster/NAME` for ClusterPolicies, `namespace/NAME`) and turned into the agent's
//! keys here; everything else is rendering the agent's views.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use strait_api::policy::{
    DirectionView, EndpointPolicyView, FlowEvent, FlowPeer, PolicyObject, PolicyStatus, RuleView,
    TracePeer, TraceStep, TraceView,
};
use strait_api::policy_wire::{
    ApplyReport, MonitorFilter, MonitorLine, TraceRequest, TranslationEvent, VerdictFilter,
    parse_port_spec, verdict_of,
};
use strait_api::{Client, ClientError, paths};

use crate::table::Table;
use crate::{Output, objects, state_word};

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Apply NetworkPolicy, ClusterPolicy and Namespace documents (YAML or JSON, one
    /// or many): all of them or, if any is refused, none. Exit 1 on refusal.
    Apply {
        /// The file, or `-` for stdin.
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// One object as it was applied (YAML by default; `-o json`).
    Get {
        /// `NAME` (a NetworkPolicy in namespace default), `NS/NAME`, `cluster/NAME`,
        /// `namespace/NAME`.
        name: String,
    },
    /// Every policy and namespace object.
    List,
    /// Delete objects (named as for `get`). Exit 1 if one did not exist.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// One endpoint's effective rules per direction and its kernel map entries, each
    /// `ok`, `MISSING` or `STALE`. Exit 1 when anything differs.
    Show {
        #[arg(long)]
        endpoint: String,
    },
    /// The verdict for a new flow: which policies select each side, which rule
    /// decides, and whether the kernel's maps agree. Exit 1 when they differ.
    Trace(TraceArgs),
    /// The node's policy control plane: the store revision its maps reflect.
    Status {
        /// Wait until the maps reflect this store revision (what `apply -o json`
        /// answers as `revision`); exit 1 if not within `--timeout`.
        #[arg(long)]
        wait_revision: Option<i64>,
        /// Seconds to wait for `--wait-revision`.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// An endpoint id, labels `[NS/]k=v,...` or an address or CIDR.
    #[arg(long)]
    pub from: String,
    #[arg(long)]
    pub to: String,
    /// `80/tcp`, `53/udp`, `8/icmp` (type 8), `3:1/icmp` (type 3 code 1).
    #[arg(long, default_value = "80/tcp")]
    pub port: String,
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Only these verdicts: denied (dropped), allowed, audit (denied, passed in audit).
    #[arg(long)]
    pub verdict: Option<VerdictFilter>,
    /// Only flows of this endpoint (either side).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Only flows with a side in this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only flows with this port on either side (translations: the service's or
    /// the backend's port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Only the translations to this service (`NS/NAME`), no flow events.
    #[arg(long)]
    pub service: Option<String>,
    /// Flow events only, no service translations.
    #[arg(long, conflicts_with = "service")]
    pub no_translations: bool,
}

/// The agent's key of an object named as kubectl would name it.
pub fn object_key(name: &str) -> Result<String> {
    let parts: Vec<&str> = name.split('/').collect();
    let key = match parts.as_slice() {
        ["policy", ..] | ["namespaces", _] => name.to_string(),
        ["cluster", n] => format!("policy/cluster/{n}"),
        ["namespace" | "ns", n] => format!("namespaces/{n}"),
        [ns, n] => format!("policy/k8s/{ns}/{n}"),
        [n] => format!("policy/k8s/default/{n}"),
        _ => {
            bail!("{name:?}: name a policy as NAME, NAMESPACE/NAME, cluster/NAME or namespace/NAME")
        }
    };
    if key.split('/').any(str::is_empty) {
        bail!("{name:?}: a part of the name is empty");
    }
    Ok(key)
}

/// An object's name as `kubectl apply` prints it.
pub fn display_name(key: &str) -> String {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["policy", "k8s", _, n] => format!("networkpolicy.networking.k8s.io/{n}"),
        ["policy", "cluster", n] => format!("clusterpolicy.strait.io/{n}"),
        ["namespaces", n] => format!("namespace/{n}"),
        _ => key.to_string(),
    }
}

pub fn run(client: &Client, out: Output, cmd: PolicyCmd) -> Result<ExitCode> {
    match cmd {
        PolicyCmd::Apply { file } => {
            objects::apply(client, out, &file, paths::POLICIES, |r: &ApplyReport| {
                render_apply(r)
            })
        }
        PolicyCmd::Get { name } => {
            let o: PolicyObject = client.get(&paths::policy_object(&object_key(&name)?))?;
            match out {
                Output::Json => println!("{}", serde_json::to_string_pretty(&o.source)?),
                _ => print!("{}", serde_yaml_ng::to_string(&o.source)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::List => {
            let objects: Vec<PolicyObject> = client.get(paths::POLICIES)?;
            crate::emit(out, &objects, || render_list(&objects))?;
            Ok(ExitCode::SUCCESS)
        }
        PolicyCmd::Delete { names } => objects::delete(
            client,
            out,
            &names,
            object_key,
            paths::policy_object,
            display_name,
        ),
        PolicyCmd::Show { endpoint } => {
            let v: EndpointPolicyView = client.get(&paths::policy_endpoint(&endpoint))?;
            crate::emit(out, &v, || render_show(&v))?;
            Ok(exit_if(!v.in_sync))
        }
        PolicyCmd::Trace(args) => {
            let (protocol, port) = parse_port_spec(&args.port).map_err(anyhow::Error::msg)?;
            let req = TraceRequest {
                from: args.from,
                to: args.to,
                protocol,
                port,
            };
            let t: TraceView = client.post(paths::POLICY_TRACE, &req)?;
            crate::emit(out, &t, || render_trace(&t))?;
            Ok(exit_if(t.steps.iter().any(|s| s.differs)))
        }
        PolicyCmd::Status {
            wait_revision,
            timeout,
        } => status(client, out, wait_revision, timeout),
    }
}

fn exit_if(failed: bool) -> ExitCode {
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn render_apply(r: &ApplyReport) -> String {
    r.objects
        .iter()
        .map(|o| format!("{} {}\n", display_name(&o.key), o.change.as_str()))
        .collect()
}

fn status(
    client: &Client,
    out: Output,
    wait_revision: Option<i64>,
    timeout: f64,
) -> Result<ExitCode> {
    let Some(want) = wait_revision else {
        let s: PolicyStatus = client.get(paths::POLICY_STATUS)?;
        crate::emit(out, &s, || render_status(&s))?;
        return Ok(ExitCode::SUCCESS);
    };
    let t0 = Instant::now();
    let limit = Duration::try_from_secs_f64(timeout).context("--timeout")?;
    loop {
        let s: PolicyStatus = client.get(paths::POLICY_STATUS)?;
        if s.applied_revision >= want {
            crate::emit(out, &s, || {
                format!(
                    "revision {want} applied (maps at {}; waited {} ms)\n",
                    s.applied_revision,
                    t0.elapsed().as_millis()
                )
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        if t0.elapsed() >= limit {
            eprintln!(
                "netctl: revision {want} not applied within {timeout}s: the maps are at {}{}",
                s.applied_revision,
                s.last_error
                    .as_deref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            );
            return Ok(ExitCode::from(1));
        }
        // Polling a local socket: cheap, and fine-grained enough to measure latency.
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn render_status(s: &PolicyStatus) -> String {
    let mut t = Table::new(["FIELD", "VALUE"]);
    t.row(["mode", s.mode.as_str()]);
    t.row(["applied revision", &s.applied_revision.to_string()]);
    t.row(["endpoints enforced", &s.endpoints_enforced.to_string()]);
    t.row(["policies", &s.policies.to_string()]);
    t.row(["rules", &s.rules.to_string()]);
    t.row(["identities", &s.identities.to_string()]);
    t.row(["ipcache entries", &s.ipcache_entries.to_string()]);
    t.row(["last error", s.last_error.as_deref().unwrap_or("-")]);
    t.render()
}

/// How many rules a direction has in the normalized policy; `-` when the policy
/// leaves that direction alone.
fn rule_count(v: &serde_json::Value) -> String {
    match v.as_array() {
        Some(rules) => rules.len().to_string(),
        None => "-".into(),
    }
}

pub fn render_list(objects: &[PolicyObject]) -> String {
    let mut t = Table::new([
        "KIND",
        "NAMESPACE",
        "NAME",
        "ORDER",
        "AUDIT",
        "INGRESS",
        "EGRESS",
        "ORIGIN",
        "REVISION",
    ]);
    for o in objects {
        let parts: Vec<&str> = o.key.split('/').collect();
        let n = &o.normalized;
        let audit = if n["audit"] == true { "yes" } else { "no" };
        let origin = o.origin.as_str();
        let revision = o.revision.to_string();
        match parts.as_slice() {
            ["policy", "k8s", ns, name] => t.row([
                "NetworkPolicy",
                ns,
                name,
                "-",
                audit,
                &rule_count(&n["ingress"]),
                &rule_count(&n["egress"]),
                origin,
                &revision,
            ]),
            ["policy", "cluster", name] => t.row([
                "ClusterPolicy",
                "-",
                name,
                &n["tier"]["cluster"]["order"]
                    .as_f64()
                    .map_or_else(|| "-".into(), |o| o.to_string()),
                audit,
                &rule_count(&n["ingress"]),
                &rule_count(&n["egress"]),
                origin,
                &revision,
            ]),
            ["namespaces", name] => {
                t.row([
                    "Namespace",
                    "-",
                    name,
                    "-",
                    "-",
                    "-",
                    "-",
                    origin,
                    &revision,
                ]);
            }
            _ => t.row(["?", "-", &o.key, "-", "-", "-", "-", origin, &revision]),
        }
    }
    t.render()
}

fn labels_text(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn rule_text(r: &RuleView) -> String {
    let audit = if r.audit { " audit" } else { "" };
    format!(
        "{}#{} ({}{audit}, rule {})",
        r.policy, r.index, r.action, r.id
    )
}

fn render_direction(name: &str, d: &DirectionView) -> String {
    let mut s = match (d.isolated, d.default_audit) {
        (false, _) => format!("{name}: open (no policy selects it for {name})\n"),
        (true, false) => format!("{name}: isolated, default deny\n"),
        (true, true) => format!("{name}: isolated, default deny in audit (passes)\n"),
    };
    for r in &d.rules {
        s.push_str(&format!("  rule {}\n", rule_text(r)));
    }
    let mut t = Table::new(["  STATE", "PEER", "PROTO", "PORTS", "HOLDS"]);
    for e in &d.entries {
        t.row([
            &format!("  {}", state_word(e.state)),
            &e.peer,
            &e.protocol,
            &e.ports,
            &e.cell,
        ]);
    }
    s.push_str(&t.render());
    s
}

pub fn render_show(v: &EndpointPolicyView) -> String {
    let opt = |n: Option<u32>| n.map_or_else(|| "none".to_string(), |n| n.to_string());
    let mut s = format!(
        "endpoint {} on {}: namespace {}, labels {}\n",
        v.endpoint,
        v.node,
        v.namespace,
        labels_text(&v.labels)
    );
    s.push_str(&format!(
        "identity {} (kernel: {}), veth ifindex {}\n\n",
        opt(v.identity),
        opt(v.installed_identity),
        opt(v.ifindex)
    ));
    s.push_str(&render_direction("ingress", &v.ingress));
    s.push('\n');
    s.push_str(&render_direction("egress", &v.egress));
    let differing = [&v.ingress, &v.egress]
        .iter()
        .flat_map(|d| &d.entries)
        .filter(|e| e.state != strait_api::routes::EntryState::Ok)
        .count();
    s.push('\n');
    if v.in_sync {
        s.push_str("kernel maps: in sync\n");
    } else if differing == 0 {
        s.push_str("kernel maps: DIFFER (the identity)\n");
    } else {
        s.push_str(&format!("kernel maps: DIFFER ({differing} entries)\n"));
    }
    s
}

fn peer_text(p: &TracePeer) -> String {
    let mut s = p.spec.clone();
    let mut facts = Vec::new();
    if let Some(e) = &p.endpoint
        && e != &p.spec
    {
        facts.push(format!("endpoint {e}"));
    }
    if let Some(ns) = &p.namespace {
        facts.push(format!("namespace {ns}"));
    }
    if !p.labels.is_empty() {
        facts.push(labels_text(&p.labels));
    }
    facts.push(format!("identity {}", p.identity));
    if let Some(a) = p.address {
        facts.push(a.to_string());
    }
    if let Some(n) = &p.node {
        facts.push(format!("on {n}"));
    }
    s.push_str(&format!(" ({})", facts.join(", ")));
    s
}

fn verdict_word(allowed: bool, audit: bool) -> &'static str {
    match (allowed, audit) {
        (true, true) => "allowed (audit: a deny passed)",
        (true, false) => "allowed",
        (false, _) => "DENIED",
    }
}

fn step_text(s: &TraceStep) -> String {
    let whose = s.endpoint.as_deref().unwrap_or("(not an endpoint)");
    let mut out = format!("{} of {whose}:\n", s.direction);
    if s.selected_by.is_empty() {
        out.push_str("  selected by no policy\n");
    } else {
        out.push_str(&format!("  selected by {}\n", s.selected_by.join(", ")));
    }
    let decided = match &s.rule {
        Some(r) => format!("rule {}", rule_text(r)),
        None if s.selected_by.is_empty() => "default (not isolated)".into(),
        None => "default (isolated: nothing allows)".into(),
    };
    out.push_str(&format!(
        "  decided by {decided}: {}\n",
        verdict_word(s.allowed, s.audit)
    ));
    if let Some(l) = &s.log_rule {
        out.push_str(&format!("  logged by rule {}\n", rule_text(l)));
    }
    match &s.kernel {
        Some(k) => {
            let rule = k
                .rule
                .map_or_else(|| "default".into(), |r| format!("rule {r}"));
            let agree = if s.differs { "DIFFERS" } else { "agrees" };
            out.push_str(&format!(
                "  kernel maps: {} by {rule}: {agree}\n",
                verdict_word(k.allowed, k.audit)
            ));
        }
        None => out.push_str("  kernel maps: this node holds none for it\n"),
    }
    out
}

pub fn render_trace(t: &TraceView) -> String {
    let mut s = format!(
        "from {}\nto   {}\n{}/{}\n\n",
        peer_text(&t.from),
        peer_text(&t.to),
        t.port_text(),
        t.protocol
    );
    for step in &t.steps {
        s.push_str(&step_text(step));
    }
    s.push_str(&format!(
        "\nverdict: {}\n",
        if t.allowed { "allowed" } else { "DENIED" }
    ));
    let differ: Vec<&str> = t
        .steps
        .iter()
        .filter(|s| s.differs)
        .map(|s| s.direction.as_str())
        .collect();
    let read: usize = t.steps.iter().filter(|s| s.kernel.is_some()).count();
    if !differ.is_empty() {
        s.push_str(&format!(
            "the kernel's maps DIFFER from the store's policies ({})\n",
            differ.join(", ")
        ));
    } else if read > 0 {
        s.push_str("the kernel's maps agree with the store's policies\n");
    } else {
        s.push_str("no side is an endpoint on this node: the kernel's maps were not read\n");
    }
    s
}

/// The port as the user wrote it: `type:code` for ICMP.
trait PortText {
    fn port_text(&self) -> String;
}

impl PortText for TraceView {
    fn port_text(&self) -> String {
        if self.protocol.starts_with("icmp") {
            format!("{}:{}", self.port >> 8, self.port & 0xff)
        } else {
            self.port.to_string()
        }
    }
}

pub fn monitor(client: &Client, out: Output, args: MonitorArgs) -> Result<ExitCode> {
    if let Some(svc) = &args.service
        && svc.split('/').filter(|p| !p.is_empty()).count() != 2
    {
        anyhow::bail!("--service {svc:?}: name the service NS/NAME");
    }
    let mut filter = MonitorFilter {
        verdict: args.verdict,
        endpoint: args.endpoint,
        namespace: args.namespace,
        port: args.port,
        translations: !args.no_translations,
        service: args.service,
    };
    let path = format!("{}{}", paths::POLICY_MONITOR, filter.to_query());
    let lines = match client.stream_lines(&path) {
        // An agent older than translations refuses the parameter: flow events
        // only, then (a service filter has nothing to show without them).
        Err(ClientError::Api(e))
            if e.message.contains("unknown monitor parameter") && filter.service.is_none() =>
        {
            eprintln!("netctl: this agent does not report service translations; flow events only");
            filter.translations = false;
            client.stream_lines(&format!("{}{}", paths::POLICY_MONITOR, filter.to_query()))?
        }
        other => other?,
    };
    let mut stdout = std::io::stdout().lock();
    for line in lines {
        let line = line.context("reading the agent's stream")?;
        let shown = if out == Output::Json {
            line
        } else {
            match serde_json::from_str::<MonitorLine>(&line) {
                Ok(l) => render_line(&l),
                Err(e) => {
                    eprintln!("netctl: unreadable line from the agent ({e}): {line}");
                    continue;
                }
            }
        };
        // Each line as it comes (`| grep` sees it at once); a reader that went
        // away (`| head`) ends the monitor quietly.
        match writeln!(stdout, "{shown}").and_then(|()| stdout.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(e.into()),
        }
    }
    eprintln!("netctl: the agent ended the stream");
    Ok(ExitCode::from(1))
}

/// A flow's side; `with_port` is false for ICMP, whose "port" is its type and code.
fn flow_peer(p: &FlowPeer, with_port: bool) -> String {
    let addr = match p.address {
        a if !with_port => a.to_string(),
        std::net::IpAddr::V6(a) => format!("[{a}]:{}", p.port),
        a => format!("{a}:{}", p.port),
    };
    let mut who = Vec::new();
    if let Some(e) = &p.endpoint {
        who.push(e.clone());
    }
    who.push(format!("id {}", p.identity));
    if let Some(ns) = &p.namespace {
        who.push(ns.clone());
    }
    if !p.labels.is_empty() {
        who.push(labels_text(&p.labels));
    }
    format!("{addr} ({})", who.join(" "))
}

pub fn render_line(l: &MonitorLine) -> String {
    match l {
        MonitorLine::Lost { lost } => format!("-- {lost} events lost --"),
        MonitorLine::Event(e) => render_event(e),
        MonitorLine::Translation { xlate } => render_translation(xlate),
    }
}

/// `xlate tcp pid 4242 (curl) netns 4096 → 10.96.0.10:80 (shop/web http) =
/// 10.244.2.3:8080 [socket]`: who (a socket's process, a packet's source), the
/// service address it asked for, the backend it was given, and by which hook.
pub fn render_translation(t: &TranslationEvent) -> String {
    let who = match (t.client, t.pid) {
        (Some(c), _) => c.to_string(),
        (None, 0) => "?".into(),
        (None, pid) => {
            let mut w = format!("pid {pid}");
            if let Some(c) = &t.command {
                w.push_str(&format!(" ({c})"));
            }
            w.push_str(&format!(" netns {}", t.netns_cookie));
            w
        }
    };
    let service = match (&t.service, &t.port_name) {
        (Some(s), Some(p)) => format!(" ({s} {p})"),
        (Some(s), None) => format!(" ({s})"),
        (None, _) => String::new(),
    };
    format!(
        "{} {} xlate {} {who} \u{2192} {}{service} = {} [{}]",
        utc_time(t.time_ns),
        t.node,
        t.protocol,
        t.frontend,
        t.backend,
        t.via
    )
}

pub fn render_event(e: &FlowEvent) -> String {
    let verdict = match verdict_of(e) {
        VerdictFilter::Denied => "DENIED",
        VerdictFilter::Audit => "AUDIT",
        VerdictFilter::Allowed => "allowed",
    };
    let by = match &e.rule {
        Some(r) => rule_text(r),
        None => "default".into(),
    };
    let icmp = e.protocol.starts_with("icmp");
    let protocol = if icmp {
        format!(
            "{} type {} code {}",
            e.protocol,
            e.dst.port >> 8,
            e.dst.port & 0xff
        )
    } else {
        e.protocol.clone()
    };
    let mut s = format!(
        "{} {} {} {} -> {} {protocol} {verdict} by {by}",
        utc_time(e.time_ns),
        e.node,
        e.direction,
        flow_peer(&e.src, !icmp),
        flow_peer(&e.dst, !icmp),
    );
    if let Some(l) = &e.log_rule {
        s.push_str(&format!(" log {}", rule_text(l)));
    }
    s
}

/// `HH:MM:SS.mmm` UTC of a Unix time in nanoseconds, prefixed by the date
/// (`YYYY-MM-DD`): what a line needs to be matched against other logs.
fn utc_time(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let ms = (ns / 1_000_000) % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_api::policy::{ApplyOutcome, KernelVerdict, PolicyMode, TableEntry};
    use strait_api::policy_wire::{AppliedObject, Change};
    use strait_api::routes::EntryState;

    #[test]
    fn names_become_keys_as_kubectl_names_them() {
        let key = |n: &str| object_key(n).unwrap();
        assert_eq!(key("web"), "policy/k8s/default/web");
        assert_eq!(key("prod/web"), "policy/k8s/prod/web");
        assert_eq!(key("cluster/deny-db"), "policy/cluster/deny-db");
        assert_eq!(key("namespace/prod"), "namespaces/prod");
        assert_eq!(key("ns/prod"), "namespaces/prod");
        assert_eq!(key("policy/k8s/cluster/x"), "policy/k8s/cluster/x");
        assert!(object_key("a/b/c").is_err());
        assert!(object_key("prod/").is_err());
    }

    #[test]
    fn apply_prints_what_it_did_like_kubectl() {
        let r = ApplyReport {
            outcome: ApplyOutcome {
                revision: 12,
                keys: vec![],
            },
            objects: vec![
                AppliedObject {
                    key: "namespaces/prod".into(),
                    change: Change::Unchanged,
                },
                AppliedObject {
                    key: "policy/k8s/prod/web".into(),
                    change: Change::Created,
                },
                AppliedObject {
                    key: "policy/cluster/deny-db".into(),
                    change: Change::Configured,
                },
            ],
        };
        assert_eq!(
            render_apply(&r),
            "namespace/prod unchanged\n\
             networkpolicy.networking.k8s.io/web created\n\
             clusterpolicy.strait.io/deny-db configured\n"
        );
    }

    #[test]
    fn list_shows_kind_order_audit_and_rules_per_direction() {
        let objects = vec![
            PolicyObject {
                key: "policy/cluster/deny-db".into(),
                revision: 9,
                source: serde_json::json!({}),
                normalized: serde_json::json!({
                    "tier": {"cluster": {"order": 10.0}}, "audit": true,
                    "ingress": [{}, {}], "egress": null,
                }),
                origin: Default::default(),
            },
            PolicyObject {
                key: "policy/k8s/prod/web".into(),
                revision: 7,
                source: serde_json::json!({}),
                normalized: serde_json::json!({
                    "tier": "namespaced", "audit": false, "ingress": [], "egress": null,
                }),
                origin: strait_api::Origin::Kubernetes,
            },
            PolicyObject {
                key: "namespaces/prod".into(),
                revision: 3,
                source: serde_json::json!({}),
                normalized: serde_json::json!({"team": "a"}),
                origin: Default::default(),
            },
        ];
        let out = render_list(&objects);
        let lines: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines,
            [
                vec![
                    "KIND",
                    "NAMESPACE",
                    "NAME",
                    "ORDER",
                    "AUDIT",
                    "INGRESS",
                    "EGRESS",
                    "ORIGIN",
                    "REVISION"
                ],
                vec![
                    "ClusterPolicy",
                    "-",
                    "deny-db",
                    "10",
                    "yes",
                    "2",
                    "-",
                    "netctl",
                    "9"
                ],
                vec![
                    "NetworkPolicy",
                    "prod",
                    "web",
                    "-",
                    "no",
                    "0",
                    "-",
                    "kubernetes",
                    "7"
                ],
                vec!["Namespace", "-", "prod", "-", "-", "-", "-", "netctl", "3"],
            ]
        );
    }

    fn rule(policy: &str, action: &str) -> RuleView {
        RuleView {
            id: 3,
            policy: policy.into(),
            index: 0,
            action: action.into(),
            audit: false,
        }
    }

    #[test]
    fn show_marks_entries_and_says_when_the_kernel_differs() {
        let entry = |peer: &str, state| TableEntry {
            peer: peer.into(),
            protocol: "tcp".into(),
            ports: "80".into(),
            cell: "allow 3".into(),
            state,
        };
        let mut v = EndpointPolicyView {
            endpoint: "web".into(),
            node: "h1".into(),
            namespace: "prod".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            identity: Some(300),
            ifindex: Some(7),
            installed_identity: Some(300),
            in_sync: true,
            ingress: DirectionView {
                isolated: true,
                default_audit: false,
                rules: vec![rule("prod/allow-front", "allow")],
                entries: vec![entry("identity 301", EntryState::Ok)],
            },
            egress: DirectionView::default(),
        };
        let out = render_show(&v);
        assert!(out.contains("ingress: isolated, default deny"), "{out}");
        assert!(
            out.contains("rule prod/allow-front#0 (allow, rule 3)"),
            "{out}"
        );
        assert!(out.contains("egress: open"), "{out}");
        assert!(
            out.contains("ok     identity 301  tcp    80     allow 3"),
            "{out}"
        );
        assert!(out.ends_with("kernel maps: in sync\n"), "{out}");
        v.in_sync = false;
        v.ingress
            .entries
            .push(entry("identity 302", EntryState::Missing));
        v.ingress
            .entries
            .push(entry("identity 303", EntryState::Stale));
        let out = render_show(&v);
        assert!(out.contains("MISSING  identity 302"), "{out}");
        assert!(out.contains("STALE    identity 303"), "{out}");
        assert!(out.ends_with("kernel maps: DIFFER (2 entries)\n"), "{out}");
    }

    fn peer(spec: &str, endpoint: Option<&str>, identity: u32) -> TracePeer {
        TracePeer {
            spec: spec.into(),
            endpoint: endpoint.map(str::to_string),
            node: endpoint.map(|_| "h1".to_string()),
            namespace: endpoint.map(|_| "prod".to_string()),
            labels: Default::default(),
            identity,
            address: Some("10.0.0.5".parse().unwrap()),
        }
    }

    #[test]
    fn trace_names_the_deciding_rule_and_whether_the_kernel_agrees() {
        let step = |differs| TraceStep {
            direction: "ingress".into(),
            endpoint: Some("web".into()),
            selected_by: vec!["prod/deny".into(), "cluster/deny-db".into()],
            allowed: false,
            audit: false,
            rule: Some(rule("cluster/deny-db", "deny")),
            log_rule: None,
            kernel: Some(KernelVerdict {
                allowed: differs,
                audit: false,
                rule: if differs { None } else { Some(3) },
            }),
            differs,
        };
        let mut t = TraceView {
            from: peer("10.9.9.9", None, 2),
            to: peer("web", Some("web"), 300),
            protocol: "tcp".into(),
            port: 80,
            steps: vec![step(false)],
            allowed: false,
        };
        let out = render_trace(&t);
        assert!(
            out.contains("to   web (namespace prod, identity 300, 10.0.0.5, on h1)"),
            "{out}"
        );
        assert!(out.contains("80/tcp"), "{out}");
        assert!(
            out.contains("selected by prod/deny, cluster/deny-db"),
            "{out}"
        );
        assert!(
            out.contains("decided by rule cluster/deny-db#0 (deny, rule 3): DENIED"),
            "{out}"
        );
        assert!(
            out.contains("kernel maps: DENIED by rule 3: agrees"),
            "{out}"
        );
        assert!(out.contains("verdict: DENIED"), "{out}");
        assert!(
            out.contains("maps agree with the store's policies"),
            "{out}"
        );
        t.steps = vec![step(true)];
        let out = render_trace(&t);
        assert!(
            out.contains("kernel maps: allowed by default: DIFFERS"),
            "{out}"
        );
        assert!(
            out.contains("maps DIFFER from the store's policies (ingress)"),
            "{out}"
        );
    }

    #[test]
    fn monitor_lines_read_as_one_flow_each() {
        let p = |a: &str, port, ep: Option<&str>| FlowPeer {
            address: a.parse().unwrap(),
            port,
            identity: if ep.is_some() { 300 } else { 2 },
            endpoint: ep.map(str::to_string),
            namespace: ep.map(|_| "prod".to_string()),
            labels: if ep.is_some() {
                [("app".to_string(), "web".to_string())].into()
            } else {
                Default::default()
            },
        };
        let e = FlowEvent {
            time_ns: 1_733_491_872_123_456_789,
            node: "h1".into(),
            direction: "ingress".into(),
            endpoint: Some("web".into()),
            src: p("10.9.9.9", 40000, None),
            dst: p("10.0.0.5", 80, Some("web")),
            protocol: "tcp".into(),
            allowed: false,
            audit: false,
            rule: None,
            log_rule: None,
        };
        assert_eq!(
            render_line(&MonitorLine::Event(Box::new(e.clone()))),
            "2024-12-06T13:31:12.123Z h1 ingress 10.9.9.9:40000 (id 2) -> \
             10.0.0.5:80 (web id 300 prod app=web) tcp DENIED by default"
        );
        let audit = FlowEvent {
            allowed: true,
            audit: true,
            rule: Some(rule("cluster/deny-db", "deny")),
            ..e
        };
        assert!(
            render_event(&audit).ends_with("tcp AUDIT by cluster/deny-db#0 (deny, rule 3)"),
            "{}",
            render_event(&audit)
        );
        // ICMP's "port" is type << 8 | code: shown as such, not as a port.
        let ping = FlowEvent {
            src: p("10.9.9.9", 0, None),
            dst: p("10.0.0.5", 8 << 8, Some("web")),
            protocol: "icmp".into(),
            ..audit.clone()
        };
        assert!(
            render_event(&ping).contains(
                "10.9.9.9 (id 2) -> 10.0.0.5 (web id 300 prod app=web) icmp type 8 code 0 AUDIT"
            ),
            "{}",
            render_event(&ping)
        );
        assert_eq!(
            render_line(&MonitorLine::Lost { lost: 7 }),
            "-- 7 events lost --"
        );
    }

    #[test]
    fn translations_render_one_line_each() {
        let socket = TranslationEvent {
            time_ns: 1_733_491_872_123_456_789,
            node: "h1".into(),
            via: "socket".into(),
            protocol: "tcp".into(),
            client: None,
            pid: 4242,
            netns_cookie: 4096,
            cgroup_id: 7,
            command: Some("curl".into()),
            frontend: "10.96.0.10:80".parse().unwrap(),
            backend: "10.244.2.3:8080".parse().unwrap(),
            service: Some("shop/web".into()),
            port_name: Some("http".into()),
        };
        assert_eq!(
            render_line(&MonitorLine::Translation {
                xlate: Box::new(socket.clone())
            }),
            "2024-12-06T13:31:12.123Z h1 xlate tcp pid 4242 (curl) netns 4096 \u{2192} \
             10.96.0.10:80 (shop/web http) = 10.244.2.3:8080 [socket]"
        );
        // From outside: the packet's source; a frontend no longer planned has no name.
        let nat = TranslationEvent {
            via: "nat-snat".into(),
            protocol: "udp".into(),
            client: Some("[2001:db8::7]:5353".parse().unwrap()),
            pid: 0,
            netns_cookie: 0,
            cgroup_id: 0,
            command: None,
            frontend: "[2001:db8::1]:30053".parse().unwrap(),
            backend: "[fd00:244::3]:5353".parse().unwrap(),
            service: None,
            port_name: None,
            ..socket
        };
        assert!(
            render_translation(&nat).ends_with(
                "h1 xlate udp [2001:db8::7]:5353 \u{2192} [2001:db8::1]:30053 = \
                 [fd00:244::3]:5353 [nat-snat]"
            ),
            "{}",
            render_translation(&nat)
        );
    }

    #[test]
    fn status_shows_the_applied_revision() {
        let s = PolicyStatus {
            mode: PolicyMode::Audit,
            applied_revision: 42,
            ..Default::default()
        };
        let out = render_status(&s);
        assert!(out.contains("mode                audit"), "{out}");
        assert!(out.contains("applied revision    42"), "{out}");
    }

    fn parse(args: &[&str]) -> Result<crate::Cli, clap::Error> {
        use clap::Parser;
        crate::Cli::try_parse_from(std::iter::once("netctl").chain(args.iter().copied()))
    }

    #[test]
    fn policy_commands_parse() {
        let cli = parse(&["policy", "apply", "-f", "-"]).unwrap();
        assert!(matches!(
            cli.cmd,
            crate::Cmd::Policy { cmd: PolicyCmd::Apply { file } } if file == "-"
        ));
        let cli = parse(&["policy", "get", "prod/web", "-o", "yaml"]).unwrap();
        assert_eq!(cli.output, Output::Yaml);
        let cli = parse(&["policy", "delete", "a", "cluster/b"]).unwrap();
        assert!(matches!(
            cli.cmd,
            crate::Cmd::Policy { cmd: PolicyCmd::Delete { names } } if names == ["a", "cluster/b"]
        ));
        assert!(parse(&["policy", "delete"]).is_err(), "a name is required");
        assert!(
            parse(&["policy", "show"]).is_err(),
            "--endpoint is required"
        );
        let cli = parse(&[
            "policy",
            "trace",
            "--from",
            "team-a/app=web",
            "--to",
            "10.0.0.0/8",
            "--port",
            "53/udp",
        ])
        .unwrap();
        match cli.cmd {
            crate::Cmd::Policy {
                cmd: PolicyCmd::Trace(t),
            } => assert_eq!(
                (t.from.as_str(), t.to.as_str(), t.port.as_str()),
                ("team-a/app=web", "10.0.0.0/8", "53/udp")
            ),
            other => panic!("{other:?}"),
        }
        let cli = parse(&[
            "policy",
            "status",
            "--wait-revision",
            "42",
            "--timeout",
            "2",
        ])
        .unwrap();
        assert!(matches!(
            cli.cmd,
            crate::Cmd::Policy {
                cmd: PolicyCmd::Status {
                    wait_revision: Some(42),
                    ..
                }
            }
        ));
    }

    #[test]
    fn monitor_parses_its_filter() {
        let cli = parse(&[
            "monitor",
            "--verdict",
            "denied",
            "--port",
            "80",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.output, Output::Json);
        match cli.cmd {
            crate::Cmd::Monitor(m) => {
                assert_eq!(m.verdict, Some(VerdictFilter::Denied));
                assert_eq!(m.port, Some(80));
            }
            other => panic!("{other:?}"),
        }
        let err = parse(&["monitor", "--verdict", "dropped"]).unwrap_err();
        assert!(
            err.to_string().contains("denied, allowed or audit"),
            "{err}"
        );
    }

    #[test]
    fn utc_times_are_civil_dates() {
        assert_eq!(utc_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            utc_time(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
