//! `netctl ipsec`: the cluster's IPsec mode (which node pairs encrypt).

use anyhow::Result;
use clap::Subcommand;
use strait_api::Client;
use strait_api::ipsec::{IpsecMode, IpsecSettings};

use crate::{Output, emit};

#[derive(Debug, Subcommand)]
pub enum IpsecCmd {
    /// Show the cluster's IPsec mode, or set it: `off` (no pair encrypts),
    /// `cross-site` (every pair of nodes of different `--site`s), `all` (every pair).
    Mode {
        #[arg(value_parser = parse_mode)]
        mode: Option<IpsecMode>,
    },
}

fn parse_mode(s: &str) -> Result<IpsecMode, String> {
    s.parse()
}

pub fn run(client: &Client, out: Output, cmd: IpsecCmd) -> Result<()> {
    match cmd {
        IpsecCmd::Mode { mode: None } => {
            let s = client.ipsec_settings()?;
            emit(out, &s, || render_mode(&s))
        }
        IpsecCmd::Mode { mode: Some(mode) } => {
            let mut s = client.ipsec_settings()?;
            s.mode = mode;
            let s = client.put_ipsec_settings(&s)?;
            emit(out, &s, || render_mode(&s))
        }
    }
}

pub fn render_mode(s: &IpsecSettings) -> String {
    let what = match s.mode {
        IpsecMode::Off => "no node pair encrypts",
        IpsecMode::CrossSite => "node pairs of different sites encrypt",
        IpsecMode::All => "every node pair encrypts",
    };
    format!("mode {} ({what})\n", s.mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_line_says_what_it_means() {
        let s = IpsecSettings {
            mode: IpsecMode::CrossSite,
        };
        assert_eq!(
            render_mode(&s),
            "mode cross-site (node pairs of different sites encrypt)\n"
        );
    }

    #[test]
    fn a_wrong_mode_is_refused_before_any_request() {
        let err = parse_mode("on").unwrap_err();
        assert!(err.contains("off, cross-site or all"), "{err}");
    }
}
