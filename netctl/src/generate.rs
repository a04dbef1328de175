//! `netctl completion SHELL` and `netctl manpages DIR`: shell completions and man
//! pages made from netctl's own clap definitions, so they can never disagree with
//! `--help`. The Debian package ships both (scripts/build-deb.sh).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::Cli;

/// The completion script for `shell` on stdout.
pub fn completion(shell: Shell) {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "netctl", &mut script);
    // A closed pipe (`| head`) is the reader's choice, not an error worth a panic.
    let _ = std::io::stdout().write_all(&script);
}

/// `netctl.8` and one `netctl-<sub>[-<sub>…].8` per subcommand, into `dir`. Returns
/// the files written.
pub fn manpages(dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = Vec::new();
    page(&cmd, "netctl", dir, &mut written)?;
    Ok(written)
}

fn page(cmd: &clap::Command, name: &str, dir: &Path, written: &mut Vec<String>) -> Result<()> {
    // A subcommand's page is titled with its full name (`netctl-ipam-show`), as git's
    // and podman's are, so `man netctl-ipam-show` finds it.
    let titled = cmd.clone().name(name.to_string());
    let file = format!("{name}.8");
    let mut out = Vec::new();
    clap_mangen::Man::new(titled)
        .section("8")
        .render(&mut out)
        .with_context(|| format!("rendering {file}"))?;
    std::fs::write(dir.join(&file), out)
        .with_context(|| format!("writing {}", dir.join(&file).display()))?;
    written.push(file);
    // clap's own `help` subcommand is `--help` again: no page of its own.
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        page(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
