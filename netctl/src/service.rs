//! `netctl service …`: services as an operator sees them. Objects are named as kubectl
//! names them (`NAME` and `NS/NAME` for services, `endpointslice/[NS/]NAME` for
//! slices) and turned into the agent's keys here; `list` renders the agent's view of
//! this node: per service its frontends, and per frontend its backends with
//! readiness, health and their share of the Maglev table.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use strait_api::services::{
    ServiceApplyReport, ServiceObject, ServiceTrace, ServiceTraceRequest, ServiceView,
};
use strait_api::{Client, paths};

use crate::table::Table;
use crate::{Output, objects};

#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Apply Service (v1) and EndpointSlice (discovery.k8s.io/v1) documents, YAML or
    /// JSON, one or many: all of them or, if any is refused, none. Prints the cluster
    /// IPs and node ports given. Exit 1 on refusal.
    Apply {
        /// The file, or `-` for stdin.
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// One object as it was applied (YAML by default; `-o json`), with the addresses
    /// and ports the agent gave it under `status`.
    Get {
        /// `NAME` (namespace default), `NS/NAME`, or `endpointslice/[NS/]NAME`.
        name: String,
    },
    /// Every service as this node serves it: frontends, backends, health, slots.
    List {
        /// Also every frontend and backend, not only the counts.
        #[arg(long, short = 'w')]
        wide: bool,
    },
    /// Where a connect from this node to a service address goes: every candidate
    /// backend, whether it takes new connections and why, and its share of the table.
    Trace {
        /// `10.96.0.10:80`, `[fd00:96::a]:80`; `/udp` after it for UDP.
        #[arg(long)]
        to: String,
    },
    /// Delete objects (named as for `get`). Exit 1 if one did not exist.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// The agent's key of an object named as kubectl would name it.
pub fn object_key(name: &str) -> Result<String> {
    let parts: Vec<&str> = name.split('/').collect();
    let key = match parts.as_slice() {
        ["services" | "endpointslices", _, _] => name.to_string(),
        ["endpointslice", ns, n] => format!("endpointslices/{ns}/{n}"),
        ["endpointslice" | "endpointslices", n] => format!("endpointslices/default/{n}"),
        ["service" | "svc", ns, n] => format!("services/{ns}/{n}"),
        ["service" | "svc", n] => format!("services/default/{n}"),
        [ns, n] => format!("services/{ns}/{n}"),
        [n] => format!("services/default/{n}"),
        _ => bail!("{name:?}: name a service NAME or NS/NAME, a slice endpointslice/[NS/]NAME"),
    };
    if key.split('/').any(str::is_empty) {
        bail!("{name:?}: a part of the name is empty");
    }
    Ok(key)
}

fn display_name(key: &str) -> String {
    match key.split('/').collect::<Vec<_>>().as_slice() {
        ["services", _, n] => format!("service/{n}"),
        ["endpointslices", _, n] => format!("endpointslice.discovery.k8s.io/{n}"),
        _ => key.to_string(),
    }
}

pub fn run(client: &Client, out: Output, cmd: ServiceCmd) -> Result<ExitCode> {
    match cmd {
        ServiceCmd::Apply { file } => objects::apply(
            client,
            out,
            &file,
            paths::SERVICES,
            |r: &ServiceApplyReport| render_apply(r),
        ),
        ServiceCmd::Get { name } => {
            let o: ServiceObject = client.get(&paths::service_object(&object_key(&name)?))?;
            let mut shown = o.source.clone();
            if o.key.starts_with("services/") {
                shown["status"] = serde_json::json!({
                    "clusterIPs": o.normalized["clusterIPs"],
                    "ports": o.normalized["ports"],
                });
            }
            // Who owns it: `kubectl` changes what the API server wrote, not `netctl`.
            if !o.origin.is_netctl() {
                shown["status"]["origin"] = serde_json::json!(o.origin);
            }
            match out {
                Output::Json => println!("{}", serde_json::to_string_pretty(&shown)?),
                _ => print!("{}", serde_yaml_ng::to_string(&shown)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCmd::List { wide } => {
            let views: Vec<ServiceView> = client.get(paths::SERVICES)?;
            crate::emit(out, &views, || render_list(&views, wide))?;
            Ok(ExitCode::SUCCESS)
        }
        ServiceCmd::Delete { names } => objects::delete(
            client,
            out,
            &names,
            object_key,
            paths::service_object,
            display_name,
        ),
        ServiceCmd::Trace { to } => {
            let req = ServiceTraceRequest { to };
            let body = serde_json::to_vec(&req)?;
            let t: ServiceTrace = match client.request("POST", paths::SERVICE_TRACE, Some(&body)) {
                Ok(b) => serde_json::from_slice(&b).context("the agent's answer to trace")?,
                Err(e) => return objects::refused(e),
            };
            crate::emit(out, &t, || render_trace(&t))?;
            Ok(if t.candidates.iter().any(|c| c.usable) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

pub fn render_apply(r: &ServiceApplyReport) -> String {
    let mut s = String::new();
    for o in &r.objects {
        s.push_str(&format!("{} {}", display_name(&o.key), o.change.as_str()));
        if !o.cluster_ips.is_empty() {
            let ips: Vec<String> = o.cluster_ips.iter().map(ToString::to_string).collect();
            s.push_str(&format!(" (cluster IP {}", ips.join(", ")));
            if !o.node_ports.is_empty() {
                let ports: Vec<String> = o.node_ports.iter().map(ToString::to_string).collect();
                s.push_str(&format!("; node port {}", ports.join(", ")));
            }
            s.push(')');
        }
        s.push('\n');
    }
    s
}

pub fn render_list(views: &[ServiceView], wide: bool) -> String {
    if views.is_empty() {
        return "no services\n".into();
    }
    if !wide {
        let mut t = Table::new([
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORTS",
            "BACKENDS",
            "STATE",
        ]);
        for v in views {
            let ips: Vec<String> = v.cluster_ips.iter().map(ToString::to_string).collect();
            let ext: Vec<String> = v.external_ips.iter().map(ToString::to_string).collect();
            let (usable, total) = v
                .frontends
                .iter()
                .filter(|f| !f.frontend.is_empty())
                .map(|f| {
                    (
                        f.backends.iter().filter(|b| b.usable).count(),
                        f.backends.len(),
                    )
                })
                .max()
                .unwrap_or((0, 0));
            let state = match v.frontends.iter().find_map(|f| f.error.as_deref()) {
                Some(e) => e.to_string(),
                None if v.frontends.iter().all(|f| f.installed) => "ok".to_string(),
                None => "pending".to_string(),
            };
            t.row([
                &v.name,
                &v.kind,
                &or_none(ips.join(",")),
                &or_none(ext.join(",")),
                &v.ports.join(","),
                &format!("{usable}/{total}"),
                &state,
            ]);
        }
        return t.render();
    }
    let mut t = Table::new([
        "SERVICE", "FRONTEND", "BACKEND", "NODE", "READY", "HEALTH", "SLOTS", "CONNS", "STATE",
    ]);
    for v in views {
        for f in &v.frontends {
            let state = match (&f.error, f.installed) {
                (Some(e), _) => e.clone(),
                (None, true) => "ok".into(),
                (None, false) => "pending".into(),
            };
            if f.backends.is_empty() {
                t.row([
                    &v.name,
                    &f.frontend,
                    "-",
                    "-",
                    "-",
                    "-",
                    "0",
                    "-",
                    &format!("{state} (no backend: refused)"),
                ]);
            }
            for b in &f.backends {
                let addr = match b.address {
                    std::net::IpAddr::V6(a) => format!("[{a}]:{}", b.port),
                    a => format!("{a}:{}", b.port),
                };
                t.row([
                    &v.name,
                    &f.frontend,
                    &addr,
                    b.node.as_deref().unwrap_or("-"),
                    if b.ready { "yes" } else { "no" },
                    match b.healthy {
                        None => "-",
                        Some(true) => "up",
                        Some(false) => "down",
                    },
                    &format!("{}/{}", b.slots, f.table_size),
                    &b.connections.to_string(),
                    &state,
                ]);
            }
        }
    }
    t.render()
}

pub fn render_trace(t: &ServiceTrace) -> String {
    let mut s = format!(
        "{} is {} port {} ({})\n",
        t.frontend,
        t.service,
        if t.port_name.is_empty() {
            "-"
        } else {
            &t.port_name
        },
        t.scope
    );
    match (&t.error, t.installed) {
        (Some(e), _) => s.push_str(&format!("datapath: NOT as planned: {e}\n")),
        (None, true) => s.push_str(&format!(
            "datapath: installed, table of {} slots\n",
            t.table_size
        )),
        (None, false) => s.push_str("datapath: not installed yet\n"),
    }
    s.push_str(&format!("choice: {}\n\n", t.choice));
    let mut table = Table::new(["BACKEND", "NODE", "FROM", "TAKES", "SLOTS", "WHY"]);
    for c in &t.candidates {
        table.row([
            &c.backend,
            c.node.as_deref().unwrap_or("-"),
            &c.origin,
            if c.usable { "yes" } else { "no" },
            &c.slots.to_string(),
            &c.why,
        ]);
    }
    if t.candidates.is_empty() {
        s.push_str("no candidate backend: nothing the selector matches, no EndpointSlice\n");
    } else {
        s.push_str(&table.render());
    }
    s
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wide_list_shows_each_backends_connections() {
        use strait_api::services::{BackendView, FrontendView};
        let backend = |addr: &str, connections| BackendView {
            address: addr.parse().unwrap(),
            port: 8080,
            node: Some("h1".into()),
            ready: true,
            healthy: None,
            usable: true,
            slots: 254,
            connections,
            origin: "h1/c".into(),
        };
        let views = [ServiceView {
            name: "shop/web".into(),
            kind: "ClusterIP".into(),
            cluster_ips: vec!["10.96.0.10".parse().unwrap()],
            external_ips: vec![],
            ports: vec!["80/TCP".into()],
            frontends: vec![FrontendView {
                frontend: "10.96.0.10:80/TCP".into(),
                scope: "ClusterIP".into(),
                backends: vec![backend("10.244.1.5", 1234), backend("fd00::5", 0)],
                table_size: 509,
                installed: true,
                error: None,
            }],
        }];
        let text = render_list(&views, true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("CONNS"), "{text}");
        let row = |addr: &str| {
            lines
                .iter()
                .find(|l| l.contains(addr))
                .unwrap_or_else(|| panic!("{addr} in {text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(row("10.244.1.5:8080")[7], "1234", "{text}");
        assert_eq!(row("[fd00::5]:8080")[7], "0", "{text}");
        // The JSON carries it, and an older agent's (without it) reads as 0.
        let json = serde_json::to_value(&views[0].frontends[0].backends[0]).unwrap();
        assert_eq!(json["connections"], 1234);
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("connections");
        let back: BackendView = serde_json::from_value(old).unwrap();
        assert_eq!(back.connections, 0);
    }

    #[test]
    fn names_become_keys_as_kubectl_names_them() {
        assert_eq!(object_key("web").unwrap(), "services/default/web");
        assert_eq!(object_key("shop/web").unwrap(), "services/shop/web");
        assert_eq!(object_key("svc/web").unwrap(), "services/default/web");
        assert_eq!(
            object_key("endpointslice/shop/web-1").unwrap(),
            "endpointslices/shop/web-1"
        );
        assert_eq!(object_key("services/a/b").unwrap(), "services/a/b");
        assert!(object_key("a/b/c/d").is_err());
        assert!(object_key("shop/").is_err());
    }
}
