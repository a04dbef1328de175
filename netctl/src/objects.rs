//! What `netctl policy` and `netctl service` share for the objects they keep in the
//! agent: applying a file of documents (or stdin), deleting by name, and how a
//! refusal by the agent reads. The agent checks and refuses; netctl only carries the
//! text and shows the answer.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use strait_api::policy_wire::DeleteOutcome;
use strait_api::{Client, ClientError};

use crate::Output;

/// A refusal by the agent is the user's to fix: its message and exit 1 (2 stays for
/// not reaching the agent at all).
pub fn refused(e: ClientError) -> Result<ExitCode> {
    match e {
        ClientError::Api(e) => {
            eprintln!("netctl: error: {}", e.message);
            Ok(ExitCode::from(1))
        }
        other => Err(other.into()),
    }
}

/// Sends `file` (`-`: stdin) to `path` and shows the agent's report: `R` as JSON or
/// YAML, else `render`'s text. All or nothing is the agent's to decide.
pub fn apply<R: DeserializeOwned + Serialize>(
    client: &Client,
    out: Output,
    file: &str,
    path: &str,
    render: impl FnOnce(&R) -> String,
) -> Result<ExitCode> {
    let text = if file == "-" {
        let mut s = Vec::new();
        std::io::stdin()
            .read_to_end(&mut s)
            .context("reading the documents from stdin")?;
        s
    } else {
        std::fs::read(file).with_context(|| format!("reading {file}"))?
    };
    let report: R = match client.request("POST", path, Some(&text)) {
        Ok(body) => serde_json::from_slice(&body).context("the agent's answer to apply")?,
        Err(e) => return refused(e),
    };
    crate::emit(out, &report, || render(&report))?;
    Ok(ExitCode::SUCCESS)
}

/// Deletes each of `names` (`key` makes its store key, `path` the API path of that),
/// going on past a refused one; exit 1 if any was refused.
pub fn delete(
    client: &Client,
    out: Output,
    names: &[String],
    key: impl Fn(&str) -> Result<String>,
    path: impl Fn(&str) -> String,
    display_name: impl Fn(&str) -> String,
) -> Result<ExitCode> {
    let mut failed = false;
    let mut done = Vec::new();
    for name in names {
        let key = key(name)?;
        match client.request("DELETE", &path(&key), None) {
            Ok(body) => {
                let d: DeleteOutcome =
                    serde_json::from_slice(&body).context("the agent's answer to delete")?;
                if out != Output::Json {
                    println!("{} deleted", display_name(&d.key));
                }
                done.push(d);
            }
            Err(ClientError::Api(e)) => {
                eprintln!("netctl: error: {}", e.message);
                failed = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
