//! `netctl doctor`: the agent's checks of this node (or, with `--all-nodes`, of every
//! node, asked through the store), each with its verdict and fix. The one check the
//! agent cannot make, whether it answers at all, is made here.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use strait_api::Client;
use strait_api::doctor::{Check, DoctorQuery, DoctorReport, NodeHealth, Verdict};
use strait_api::paths;

use crate::Output;
use crate::table::plural;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Ask every live node's agent (through the store), and compare their versions and
    /// clocks.
    #[arg(long)]
    all_nodes: bool,
    /// Where the runtimes look for CNI network configs, as the agents see it (default:
    /// each agent's own `--cni-conf-dir`, /etc/cni/net.d unless set).
    #[arg(long)]
    cni_conf_dir: Option<String>,
    /// Where they look for CNI plugins, `:`-separated (default: each agent's own
    /// `--cni-bin-dir`, /opt/cni/bin:/usr/lib/cni unless set).
    #[arg(long)]
    cni_bin_dir: Option<String>,
}

/// Long enough for every node's probes (each bounded by a few seconds) and the
/// exchange through the store (`netctl topology`'s call waits as long).
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(socket: &Path, out: Output, args: &DoctorArgs) -> Result<ExitCode> {
    let client = Client::new(socket).with_timeout(TIMEOUT);
    let query = DoctorQuery {
        all_nodes: args.all_nodes,
        links_only: false,
        cni_conf_dir: args.cni_conf_dir.clone(),
        cni_bin_dir: args.cni_bin_dir.clone(),
    };
    let path = format!("{}{}", paths::DOCTOR, query.to_query());
    let report = match client.get::<DoctorReport>(&path) {
        Ok(r) => r,
        Err(e) => unreachable_report(socket, &e.to_string()),
    };
    crate::emit(out, &report, || render(&report))?;
    Ok(ExitCode::from(report.worst().exit_code()))
}

/// The report when the agent does not answer: nothing else can be checked.
fn unreachable_report(socket: &Path, error: &str) -> DoctorReport {
    DoctorReport {
        nodes: vec![],
        cluster: vec![Check::fail(
            "agent",
            format!("no agent answers at {}: {error}", socket.display()),
            "start straitd (`systemctl start straitd`, or the strait DaemonSet's pod) \
             and see its log (`journalctl -u straitd`), or give netctl its --socket",
        )],
    }
}

pub fn render(report: &DoctorReport) -> String {
    let mut out = String::new();
    for node in &report.nodes {
        out.push_str(&heading(node));
        checks(&mut out, &node.checks);
    }
    if !report.cluster.is_empty() {
        out.push_str("cluster\n");
        checks(&mut out, &report.cluster);
    }
    let all = || {
        report
            .nodes
            .iter()
            .flat_map(|n| &n.checks)
            .chain(&report.cluster)
    };
    let count = |v| all().filter(|c| c.verdict == v).count();
    let (fails, warns) = (count(Verdict::Fail), count(Verdict::Warn));
    out.push_str(&match (fails, warns) {
        (0, 0) => "healthy\n".to_string(),
        _ => format!(
            "{fails} failure{}, {warns} warning{}\n",
            plural(fails),
            plural(warns)
        ),
    });
    out
}

fn heading(n: &NodeHealth) -> String {
    format!(
        "node {} (site {}, fabric {}, strait {})\n",
        n.node, n.site, n.fabric, n.agent_version
    )
}

fn checks(out: &mut String, checks: &[Check]) {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in checks {
        out.push_str(&format!(
            "  {:<4}  {:<width$}  {}\n",
            c.verdict.as_str(),
            c.name,
            c.detail
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("  {:<4}  {:<width$}  fix: {fix}\n", "", ""));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_verdicts_fixes_and_a_summary() {
        let report = DoctorReport {
            nodes: vec![NodeHealth {
                node: "h1".into(),
                site: "default".into(),
                fabric: "vxlan".into(),
                agent_version: "0.1.0".into(),
                clock_ms: 0,
                checks: vec![
                    Check::ok("ip-forwarding", "IPv4 and IPv6 forwarding on"),
                    Check::fail(
                        "mtu",
                        "h2's tunnel carries 1400 bytes",
                        "lower --mtu to 1350",
                    ),
                ],
                links: vec![],
                blocks: 1,
            }],
            cluster: vec![Check::warn("versions", "h3 runs 0.0.9", "upgrade h3")],
        };
        let text = render(&report);
        assert!(
            text.contains("node h1 (site default, fabric vxlan, strait 0.1.0)"),
            "{text}"
        );
        assert!(
            text.contains("  fail  mtu            h2's tunnel carries 1400 bytes"),
            "{text}"
        );
        assert!(text.contains("fix: lower --mtu to 1350"), "{text}");
        assert!(text.contains("cluster\n  warn  versions"), "{text}");
        assert!(text.ends_with("1 failure, 1 warning\n"), "{text}");
    }

    #[test]
    fn an_agent_that_does_not_answer_fails_with_its_fix() {
        let r = unreachable_report(Path::new("/run/strait/strait.sock"), "connection refused");
        assert_eq!(r.worst(), Verdict::Fail);
        assert!(render(&r).contains("systemctl start straitd"));
    }
}
