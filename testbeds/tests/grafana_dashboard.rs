//! The Grafana dashboard (`deploy/grafana/strait.json`) against what strait's agents
//! really export. Grafana itself is not in Debian, so the dashboard is not loaded; it is
//! checked instead:
//!
//! * well-formed Grafana 10 JSON: unique panel ids, every panel on the Prometheus
//!   datasource input `${DS_PROMETHEUS}`, every target with an expression, the
//!   `instance` (node) variable;
//! * every metric name in every expression (identifiers before `{` or used bare) is
//!   one that real agents export on `--metrics-addr`: a two-host BGP cluster with a
//!   container on each host and traffic between them is scraped. prometheus-client
//!   leaves out a family that has no series yet, so a name the bed's scrape does not
//!   show (IPsec and service metrics: nothing encrypts or balances here) must at least
//!   be one the agent's source registers, and the test prints which names were only
//!   checked that way;
//! * every label in a selector or a `by (...)` exists on the metric's series in the
//!   scrape (`instance` and `job` are Prometheus's own);
//! * every expression parses with Prometheus's own `promtool` (as a recording rule of
//!   a rules file, `promtool check rules`), with Grafana's `$__rate_interval` and
//!   `$instance` put in;
//! * a misspelled metric name and a misspelled label are caught.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use strait_testbeds::cluster::probe;
use strait_testbeds::cluster::{Cluster, ClusterOpts, Fabric};
use strait_testbeds::repo_root;
use strait_testbeds::wait_until;

const METRICS_PORT: u16 = 9464;
const WAIT: Duration = Duration::from_secs(60);

fn dashboard() -> Value {
    let path = repo_root().join("deploy/grafana/strait.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// (panel title, expr) of every target.
fn exprs(d: &Value) -> Vec<(String, String)> {
    all_panels(d)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap_or("").to_string()))
        })
        .collect()
}

/// The structure Grafana needs; panics naming what is wrong.
fn check_structure(d: &Value) {
    assert!(
        d["title"].as_str().is_some_and(|t| !t.is_empty()),
        "a title"
    );
    assert!(d["uid"].as_str().is_some_and(|t| !t.is_empty()), "a uid");
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "a Grafana 10 schema version: {}",
        d["schemaVersion"]
    );
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "the datasource is an input: {inputs:?}"
    );
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    assert!(
        vars.iter()
            .any(|v| v["name"] == "instance" && v["type"] == "query"),
        "a node (instance) variable"
    );
    let mut ids = BTreeSet::new();
    for p in all_panels(d) {
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("a panel without id: {}", p["title"]));
        assert!(ids.insert(id), "panel id {id} is used twice");
        let g = &p["gridPos"];
        let (x, w) = (
            g["x"].as_u64().expect("gridPos.x"),
            g["w"].as_u64().expect("gridPos.w"),
        );
        assert!(x + w <= 24, "panel {id} fits the 24-column grid");
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {id} ({}) on the Prometheus input",
            p["title"]
        );
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {id} has targets"));
        assert!(!targets.is_empty(), "panel {id} has targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "panel {id} ({}): a target without expr",
                p["title"]
            );
            assert!(
                refs.insert(t["refId"].to_string()),
                "panel {id}: refIds unique"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// A small PromQL scanner: enough to find metric names and label names.

const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
];

/// Aggregation operators: `sum by (x) (...)` puts the grouping between the operator
/// and its parenthesis.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// What one expression uses.
#[derive(Debug, Default)]
struct Uses {
    /// Metric names (as written: with `_total`, `_bucket`, ...).
    metrics: BTreeSet<String>,
    /// Labels in selectors, per metric.
    selector_labels: BTreeMap<String, BTreeSet<String>>,
    /// Labels in by/without/on/ignoring/group_x lists.
    grouping_labels: BTreeSet<String>,
}

fn scan(expr: &str) -> Uses {
    let b: Vec<char> = expr.chars().collect();
    let mut u = Uses::default();
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_ws = |mut j: usize| {
        while j < b.len() && b[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let mut last_metric: Option<String> = None;
    while i < b.len() {
        let c = b[i];
        if c == '"' || c == '\'' {
            // A string literal (a label value).
            i += 1;
            while i < b.len() && b[i] != c {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c == '[' {
            // A range or subquery: durations, Grafana's variables.
            while i < b.len() && b[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            // A selector: label names before their operators.
            i += 1;
            let metric = last_metric.take().unwrap_or_default();
            loop {
                i = skip_ws(i);
                if i >= b.len() || b[i] == '}' {
                    i += 1;
                    break;
                }
                let start = i;
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
                let label: String = b[start..i].iter().collect();
                if !label.is_empty() {
                    u.selector_labels
                        .entry(metric.clone())
                        .or_default()
                        .insert(label);
                }
                // Skip the operator and the value up to the next `,` or `}`.
                while i < b.len() && b[i] != ',' && b[i] != '}' {
                    if b[i] == '"' {
                        i += 1;
                        while i < b.len() && b[i] != '"' {
                            if b[i] == '\\' {
                                i += 1;
                            }
                            i += 1;
                        }
                    }
                    i += 1;
                }
                if i < b.len() && b[i] == ',' {
                    i += 1;
                }
            }
        } else if c == '$' {
            // A Grafana variable outside a string ($__rate_interval in a range is
            // skipped above).
            i += 1;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == '.' && i + 1 < b.len() && b[i + 1].is_ascii_digit()) {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                i += 1;
            }
        } else if ident_start(c) {
            let start = i;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            let next = skip_ws(i);
            let lower = word.to_lowercase();
            let grouping = matches!(
                lower.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            );
            if grouping && next < b.len() && b[next] == '(' {
                i = next + 1;
                while i < b.len() && b[i] != ')' {
                    let s = skip_ws(i);
                    let mut e = s;
                    while e < b.len() && ident_char(b[e]) {
                        e += 1;
                    }
                    if e > s {
                        u.grouping_labels.insert(b[s..e].iter().collect());
                    }
                    i = if e > s { e } else { s + 1 };
                    i = skip_ws(i);
                    if i < b.len() && b[i] == ',' {
                        i += 1;
                    }
                }
                i += 1;
            } else if next < b.len() && b[next] == '(' {
                // A function or an aggregation.
            } else if AGGREGATIONS.contains(&lower.as_str()) {
                // `sum by (...)` / `sum without (...)`: the grouping comes next.
            } else if !KEYWORDS.contains(&lower.as_str()) {
                u.metrics.insert(word.clone());
                last_metric = Some(word);
            }
        } else {
            i += 1;
        }
    }
    u
}

// ---------------------------------------------------------------------------------
// What agents export.

/// A scrape: family types (`# TYPE`) and the label names of each sample name's series.
#[derive(Debug, Default)]
struct Exported {
    families: BTreeMap<String, String>,
    series: BTreeMap<String, BTreeSet<String>>,
}

impl Exported {
    fn add_scrape(&mut self, text: &str) {
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut f = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (f.next(), f.next()) {
                    self.families.insert(name.to_string(), kind.to_string());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = line[..name_end].to_string();
            let labels = self.series.entry(name).or_default();
            if line[name_end..].starts_with('{') {
                let body = &line[name_end + 1..line.rfind('}').unwrap_or(line.len())];
                // name="value" pairs; values are quoted and may hold commas.
                let mut rest = body;
                while let Some(eq) = rest.find('=') {
                    labels.insert(rest[..eq].trim().trim_start_matches(',').trim().to_string());
                    let after = &rest[eq + 1..];
                    let Some(stripped) = after.strip_prefix('"') else {
                        break;
                    };
                    let mut end = 0;
                    let bytes = stripped.as_bytes();
                    while end < bytes.len() && bytes[end] != b'"' {
                        if bytes[end] == b'\\' {
                            end += 1;
                        }
                        end += 1;
                    }
                    rest = stripped.get(end + 1..).unwrap_or("");
                }
            }
        }
    }

    /// Whether the scrape shows `name`: a sample name with series, a family, or a
    /// family's sample name by its type's suffix (`_total` of a counter, `_bucket`,
    /// `_sum`, `_count` of a histogram).
    fn exports(&self, name: &str) -> bool {
        if self.series.contains_key(name) || self.families.contains_key(name) {
            return true;
        }
        for (suffix, kinds) in [
            ("_total", &["counter"][..]),
            ("_bucket", &["histogram"][..]),
            ("_sum", &["histogram", "summary"][..]),
            ("_count", &["histogram", "summary"][..]),
        ] {
            if let Some(base) = name.strip_suffix(suffix)
                && let Some(kind) = self.families.get(base)
                && kinds.contains(&kind.as_str())
            {
                return true;
            }
        }
        false
    }
}

/// Every metric family the agent's source registers (`strait_` + the name given to
/// `registry.register`): the fallback for families no series of which the bed made.
fn registered_in_source() -> BTreeSet<String> {
    let mut files = vec![repo_root().join("agent/src/metrics.rs")];
    if let Ok(dir) = std::fs::read_dir(repo_root().join("agent/src/metrics")) {
        files.extend(dir.flatten().map(|e| e.path()));
    }
    let mut names = BTreeSet::new();
    for f in files {
        let Ok(src) = std::fs::read_to_string(&f) else {
            continue;
        };
        for (at, _) in src.match_indices("register(") {
            let rest = &src[at + "register(".len()..];
            let rest = rest.trim_start();
            if let Some(q) = rest.strip_prefix('"')
                && let Some(end) = q.find('"')
            {
                names.insert(format!("strait_{}", &q[..end]));
            }
        }
    }
    names
}

/// Whether `name` (as an expression writes it) is a family the source registers.
fn in_source(name: &str, source: &BTreeSet<String>) -> bool {
    ["", "_total", "_bucket", "_sum", "_count"].iter().any(|s| {
        name.strip_suffix(s)
            .is_some_and(|base| source.contains(base))
    })
}

/// Everything wrong with the dashboard's expressions against `exported`, and the names
/// only the source vouches for.
fn check_exprs(
    d: &Value,
    exported: &Exported,
    source: &BTreeSet<String>,
) -> (Vec<String>, BTreeSet<String>) {
    let prometheus_labels = ["instance", "job"];
    let mut errors = Vec::new();
    let mut source_only = BTreeSet::new();
    for (title, expr) in exprs(d) {
        let u = scan(&expr);
        if u.metrics.is_empty() {
            errors.push(format!("{title}: no metric in {expr}"));
        }
        let mut with_series = Vec::new();
        for m in &u.metrics {
            if exported.exports(m) {
                if exported.series.contains_key(m) {
                    with_series.push(m.clone());
                }
            } else if in_source(m, source) {
                source_only.insert(m.clone());
            } else {
                errors.push(format!(
                    "{title}: {m} is not a metric strait exports ({expr})"
                ));
            }
        }
        for (m, labels) in &u.selector_labels {
            let Some(have) = exported.series.get(m) else {
                continue;
            };
            for l in labels {
                if !have.contains(l) && !prometheus_labels.contains(&l.as_str()) {
                    errors.push(format!("{title}: {m} has no label {l} (it has {have:?})"));
                }
            }
        }
        for l in &u.grouping_labels {
            if prometheus_labels.contains(&l.as_str()) {
                continue;
            }
            for m in &with_series {
                if !exported.series[m].contains(l) {
                    errors.push(format!(
                        "{title}: by/on ({l}) but {m} has no label {l} (it has {:?})",
                        exported.series[m]
                    ));
                }
            }
        }
    }
    (errors, source_only)
}

// ---------------------------------------------------------------------------------

fn promtool() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    })
}

/// Each expression as a recording rule, with Grafana's variables put in.
fn rules_file(d: &Value) -> String {
    let mut out = String::from("groups:\n  - name: strait-dashboard\n    rules:\n");
    for (n, (_, expr)) in exprs(d).into_iter().enumerate() {
        let e = expr
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        let quoted = serde_json::to_string(&e).expect("JSON string");
        out.push_str(&format!(
            "      - record: strait_dashboard:expr{n}\n        expr: {quoted}\n"
        ));
    }
    out
}

#[test]
fn grafana_dashboard_matches_the_agents_metrics() {
    let test = "grafana_dashboard_matches_the_agents_metrics";
    // The structure and the scanner first: they need nothing.
    let d = dashboard();
    check_structure(&d);
    let u = scan(
        r#"histogram_quantile(0.99, sum by (le, verb) (rate(strait_x_bucket{instance=~"$instance",a!="b,c"}[$__rate_interval]))) / on (pool) strait_y"#,
    );
    assert_eq!(
        u.metrics,
        BTreeSet::from(["strait_x_bucket".into(), "strait_y".into()])
    );
    assert_eq!(
        u.grouping_labels,
        BTreeSet::from(["le".into(), "verb".into(), "pool".into()])
    );
    assert_eq!(
        u.selector_labels["strait_x_bucket"],
        BTreeSet::from(["instance".into(), "a".into()])
    );

    if !strait_testbeds::require_root(test) || !strait_testbeds::etcd::require_etcd(test) {
        return;
    }
    let promtool = promtool();
    if promtool.is_none() && std::env::var("STRAIT_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: promtool missing (Debian package prometheus; scripts/install-deps.sh)");
    }

    // Real agents with series in most families: BGP sessions and prefixes, CNI calls,
    // endpoints, fast-path and policy counters from traffic.
    let mut opts = ClusterOpts::new(2, Fabric::Bgp);
    opts.agent_extra = vec!["--metrics-addr".into(), format!("127.0.0.1:{METRICS_PORT}")];
    let mut cluster = Cluster::start(opts);
    let a = cluster.add_container(0, "a");
    let b = cluster.add_container(1, "b");
    probe::wait_ping(&a.ns, b.ip4(), WAIT).expect("a -> b");
    probe::wait_ping(&b.ns, a.ip4(), WAIT).expect("b -> a");
    let scrape = |i: usize| -> String {
        let out = cluster.host(i).exec(&[
            "curl",
            "-sf",
            "--max-time",
            "10",
            &format!("http://127.0.0.1:{METRICS_PORT}/metrics"),
        ]);
        assert!(out.status.success(), "scrape h{}: {:?}", i + 1, out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The BGP gauges are set at scrape time from the sessions: wait for Established.
    wait_until(
        "BGP sessions Established in the metrics",
        WAIT,
        Duration::from_millis(500),
        || {
            let text = scrape(0);
            if text
                .lines()
                .any(|l| l.starts_with("strait_bgp_session_established{") && l.ends_with(" 1"))
            {
                Ok(())
            } else {
                Err(text
                    .lines()
                    .filter(|l| l.starts_with("strait_bgp"))
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut exported = Exported::default();
    exported.add_scrape(&scrape(0));
    exported.add_scrape(&scrape(1));
    println!(
        "{test}: the agents export {} families, {} with series",
        exported.families.len(),
        exported.series.len()
    );

    let source = registered_in_source();
    let (errors, source_only) = check_exprs(&d, &exported, &source);
    assert!(
        errors.is_empty(),
        "the dashboard's queries:\n{}",
        errors.join("\n")
    );
    let used: BTreeSet<String> = exprs(&d)
        .iter()
        .flat_map(|(_, e)| scan(e).metrics)
        .collect();
    println!(
        "{test}: {} queries use {} metric names; checked against the scrape: {}; \
         against the agent's source only (no series in this bed): {:?}",
        exprs(&d).len(),
        used.len(),
        used.len() - source_only.len(),
        source_only
    );
    // What the issue asks the dashboard to show is in it.
    for want in [
        "strait_cni_request_duration_seconds_bucket",
        "strait_ipam_pool_used_addresses",
        "strait_fabric_reconciles_total",
        "strait_bgp_session_established",
        "strait_bgp_prefixes_received",
        "strait_fastpath_packets_total",
    ] {
        assert!(used.contains(want), "the dashboard shows {want}");
        assert!(
            !source_only.contains(want),
            "{want} was checked against a real scrape"
        );
    }

    // Misspellings are caught.
    let mut bad = d.clone();
    let text = bad
        .to_string()
        .replacen("strait_endpoints{", "strait_endpoint{", 1);
    bad = serde_json::from_str(&text).expect("JSON");
    let (errors, _) = check_exprs(&bad, &exported, &source);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("strait_endpoint is not a metric")),
        "a misspelled metric is caught: {errors:?}"
    );
    let text = d.to_string().replacen("max by (pool)", "max by (pools)", 1);
    let (errors, _) = check_exprs(
        &serde_json::from_str(&text).expect("JSON"),
        &exported,
        &source,
    );
    assert!(
        errors.iter().any(|e| e.contains("no label pools")),
        "a misspelled label is caught: {errors:?}"
    );

    // Prometheus's own parser.
    if let Some(promtool) = promtool {
        let dir = tempfile::Builder::new()
            .prefix("strait-grafana-")
            .tempdir()
            .expect("temp dir");
        let rules = dir.path().join("dashboard.rules.yml");
        // `promtool check rules` over a rules file of these expressions.
        let check = |text: &str| {
            std::fs::write(&rules, text).expect("write rules");
            Command::new(&promtool)
                .args(["check", "rules"])
                .arg(&rules)
                .output()
                .expect("run promtool")
        };
        let out = check(&rules_file(&d));
        assert!(
            out.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "{test}: promtool: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
        // And it does catch a broken expression.
        let broken = rules_file(&d).replacen("sum by (", "sum by ((", 1);
        let out = check(&broken);
        assert!(
            !out.status.success(),
            "promtool refuses a broken expression"
        );
    } else {
        eprintln!("{test}: promtool not installed: expressions not parsed by Prometheus");
    }
    drop(cluster);
}
