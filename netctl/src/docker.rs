//! `netctl docker networks`: the Docker networks strait serves, cluster-wide (each
//! Docker host's networks have their own IDs; one subnet on several hosts is one
//! network).

use anyhow::Result;
use clap::Subcommand;
use strait_api::docker::NetworkView;
use strait_api::{Client, paths};

use crate::table::Table;
use crate::{Output, emit};

#[derive(Debug, Subcommand)]
pub enum DockerCmd {
    /// Docker networks created with `-d strait`: name, node, subnets, IPAM, internal.
    Networks,
}

pub fn run(client: &Client, out: Output, cmd: DockerCmd) -> Result<()> {
    match cmd {
        DockerCmd::Networks => {
            let nets: Vec<NetworkView> = client.get(paths::DOCKER_NETWORKS)?;
            emit(out, &nets, || render_networks(&nets, out == Output::Wide))
        }
    }
}

pub fn render_networks(nets: &[NetworkView], wide: bool) -> String {
    let mut t = Table::new(["NAME", "ID", "NODE", "SUBNETS", "IPAM", "INTERNAL"]);
    for n in nets {
        let id = if wide {
            &n.id[..]
        } else {
            n.id.get(..12).unwrap_or(&n.id)
        };
        let subnets = if n.subnets.is_empty() {
            "-".to_string()
        } else {
            n.subnets.join(",")
        };
        t.row([
            n.name.as_deref().unwrap_or("-"),
            id,
            &n.node,
            &subnets,
            &n.ipam,
            if n.internal { "yes" } else { "no" },
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_network_with_a_short_id() {
        let nets = vec![NetworkView {
            id: "56e004d81e94aa06309a3d79ce58a0d68d7c773b91c770f6cecf2f0e2f272a65".into(),
            name: Some("web".into()),
            node: "node-a".into(),
            subnets: vec!["10.244.5.0/24".into()],
            ipam: "strait".into(),
            internal: false,
            created: 0,
        }];
        let out = render_networks(&nets, false);
        assert!(
            out.contains("web   56e004d81e94  node-a  10.244.5.0/24  strait  no"),
            "{out}"
        );
    }
}
