//! `netctl endpoints`, `netctl endpoint get ID` and `netctl endpoint label ID
//! key=value … key-`: this node's attachments, one in full, and its labels changed
//! as kubectl changes a pod's.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use strait_api::labels::{LabelUpdate, format_labels};
use strait_api::{Client, Endpoint, NamedPort, endpoint_ref, paths};

use crate::table::Table;
use crate::{Output, emit};

/// The LABELS column's width in the table; `-o wide` and `-o json` show them whole.
const LABELS_WIDTH: usize = 40;

#[derive(Debug, Subcommand)]
pub enum EndpointCmd {
    /// One endpoint in full: namespace, pod, labels, named ports, identity.
    Get {
        /// An endpoint ID, a container ID, or a prefix of either that only one has.
        id: String,
    },
    /// Set (`key=value`) or remove (`key-`) labels, as `kubectl label` does.
    Label(LabelArgs),
}

#[derive(Debug, Args)]
pub struct LabelArgs {
    /// An endpoint ID, a container ID, or a prefix of either that only one has.
    id: String,
    /// `key=value` to set, `key-` to remove.
    #[arg(required = true)]
    labels: Vec<String>,
    /// Change labels that have another value already.
    #[arg(long)]
    overwrite: bool,
}

pub fn run(client: &Client, out: Output, cmd: EndpointCmd) -> Result<()> {
    match cmd {
        EndpointCmd::Get { id } => {
            let eps: Vec<Endpoint> = client.get(paths::ENDPOINTS)?;
            let ep = endpoint_ref::resolve(&id, &eps)?;
            emit(out, ep, || render_endpoint(ep))
        }
        EndpointCmd::Label(args) => {
            let update =
                LabelUpdate::from_args(&args.labels, args.overwrite).map_err(anyhow::Error::msg)?;
            // The ID goes into the path: only what endpoint and container IDs are made of.
            if args.id.is_empty()
                || !args
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            {
                bail!("{:?} is not an endpoint or container ID", args.id);
            }
            let ep: Endpoint = client.post(&paths::endpoint_labels(&args.id), &update)?;
            emit(out, &ep, || {
                format!(
                    "endpoint {} labeled: {}\n",
                    ep.id,
                    or_none(&format_labels(&ep.labels))
                )
            })
        }
    }
}

/// `wide`: full container IDs, the POD column and whole labels; otherwise container IDs
/// shortened to 12 characters, or more where two IDs share a longer prefix, so no two
/// rows look alike, and labels cut to [`LABELS_WIDTH`].
pub fn render_endpoints(eps: &[Endpoint], wide: bool) -> String {
    let ids: Vec<&str> = eps.iter().map(|e| e.container_id.as_str()).collect();
    let shown = if wide {
        ids.iter().map(|id| id.to_string()).collect()
    } else {
        crate::unique_prefixes(&ids, 12)
    };
    let mut t = if wide {
        Table::new([
            "CONTAINER",
            "IFNAME",
            "NAMESPACE",
            "POD",
            "NETWORK",
            "IPS",
            "HOST IFACE",
            "MAC",
            "NETNS",
            "LABELS",
        ])
    } else {
        Table::new([
            "CONTAINER",
            "IFNAME",
            "NAMESPACE",
            "NETWORK",
            "IPS",
            "HOST IFACE",
            "MAC",
            "NETNS",
            "LABELS",
        ])
    };
    for (e, id) in eps.iter().zip(&shown) {
        let ips: Vec<String> = e.ips.iter().map(|i| i.to_string()).collect();
        let labels = or_none(&format_labels(&e.labels));
        if wide {
            t.row([
                id.as_str(),
                &e.ifname,
                &e.namespace,
                e.pod.as_deref().unwrap_or("-"),
                &e.network,
                &ips.join(","),
                &e.host_ifname,
                &e.mac,
                &e.netns,
                &labels,
            ]);
        } else {
            t.row([
                id.as_str(),
                &e.ifname,
                &e.namespace,
                &e.network,
                &ips.join(","),
                &e.host_ifname,
                &e.mac,
                &e.netns,
                &truncate(&labels, LABELS_WIDTH),
            ]);
        }
    }
    t.render()
}

fn render_endpoint(e: &Endpoint) -> String {
    let mut t = Table::new(["FIELD", "VALUE"]);
    let ips: Vec<String> = e.ips.iter().map(|i| i.to_string()).collect();
    let ports: Vec<String> = e.named_ports.iter().map(named_port).collect();
    let identity = e
        .identity
        .map_or_else(|| "-".to_string(), |i| i.to_string());
    t.row(["id", &e.id]);
    t.row(["node", &e.node]);
    t.row(["namespace", &e.namespace]);
    t.row(["pod", e.pod.as_deref().unwrap_or("-")]);
    t.row(["labels", &or_none(&format_labels(&e.labels))]);
    t.row(["named ports", &or_none(&ports.join(","))]);
    t.row(["identity", &identity]);
    t.row(["container", &e.container_id]);
    t.row(["ifname", &e.ifname]);
    t.row(["network", &e.network]);
    t.row(["ips", &ips.join(",")]);
    t.row(["host iface", &e.host_ifname]);
    t.row(["mac", &e.mac]);
    t.row(["netns", &e.netns]);
    t.render()
}

/// `http=8080/tcp`.
fn named_port(p: &NamedPort) -> String {
    format!("{}={}/{}", p.name, p.port, p.protocol)
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.to_string()
    }
}

/// `s` cut to `width` characters, the last one `…` when cut.
fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut cut: String = s.chars().take(width - 1).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(cid: &str, labels: &[(&str, &str)]) -> Endpoint {
        serde_json::from_value(serde_json::json!({
            "id": format!("net.{cid}.eth0"), "node": "n", "network": "net",
            "container_id": cid, "ifname": "eth0", "netns": "/run/netns/x",
            "host_ifname": "strait0", "mac": "02:00:00:00:00:01",
            "host_mac": "02:00:00:00:00:02", "ips": [], "mtu": 1500, "handle": "x",
            "created": 0, "namespace": "shop", "pod": "web-0",
            "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>(),
            "named_ports": [{"name": "http", "protocol": 6, "port": 8080}],
            "identity": 7
        }))
        .expect("an endpoint")
    }

    #[test]
    fn the_table_shows_namespace_and_labels_cut_and_wide_shows_them_whole_with_the_pod() {
        let long = "x".repeat(50);
        let eps = [
            ep("c1", &[("app", "web"), ("tier", "front")]),
            ep("c2", &[("long", &long)]),
            ep("c3", &[]),
        ];
        let table = render_endpoints(&eps, false);
        let header = table.lines().next().unwrap();
        assert!(
            header.contains("NAMESPACE") && header.contains("LABELS"),
            "{table}"
        );
        assert!(!header.contains("POD"), "{table}");
        assert!(
            table.contains("shop") && table.contains("app=web,tier=front"),
            "{table}"
        );
        assert!(!table.contains(&long) && table.contains('…'), "{table}");
        assert!(table.contains("<none>"), "{table}");

        let wide = render_endpoints(&eps, true);
        assert!(wide.lines().next().unwrap().contains("POD"), "{wide}");
        assert!(
            wide.contains("web-0") && wide.contains(&format!("long={long}")),
            "{wide}"
        );
    }

    #[test]
    fn one_endpoint_shows_its_named_ports_and_identity() {
        let shown = render_endpoint(&ep("c1", &[("app", "web")]));
        for want in ["http=8080/tcp", "shop", "web-0", "app=web", "7"] {
            assert!(shown.contains(want), "{want}: {shown}");
        }
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
    }
}
