//! `netctl topology`: being written (issue 18, item 5).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use strait_api::Client;

use crate::Output;

pub fn run(_client: &Client, _out: Output, _file: Option<&Path>) -> Result<ExitCode> {
    anyhow::bail!("netctl topology is not built yet")
}
